//! HTI:jwe against an independent producer: tokens encrypted by Python jwcrypto
//! (`tests/jwe_encrypt.py`) to the module's published key decrypt to the inner JWS exactly.
//! Without jwcrypto the test says so and passes, except under CI (`CI` set), where it fails.

use std::process::{Command, Stdio};

use hti_guard::sign::SigningKey;
use hti_guard::verify::Alg;
use hti_guard::verify::jwe::{DecryptionKeys, JweError, is_jwe};

/// Whether python3 can import jwcrypto. Missing: a failure under CI, a note and `false`
/// elsewhere.
fn jwcrypto_available() -> bool {
    let probe = Command::new("python3")
        .args(["-c", "import jwcrypto"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if matches!(probe, Ok(status) if status.success()) {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI is set but python3 cannot import jwcrypto: python3 -m pip install jwcrypto"
    );
    eprintln!("skipped: python3 with jwcrypto not found (pip install jwcrypto)");
    false
}

/// The compact JWE jwcrypto makes, or a panic with its complaint.
fn jwcrypto_encrypt(jwk: &serde_json::Value, alg: &str, enc: &str, kid: &str, jws: &str) -> String {
    let script = format!("{}/tests/jwe_encrypt.py", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("python3")
        .args([script.as_str(), &jwk.to_string(), alg, enc, kid, jws])
        .stdin(Stdio::null())
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "jwe_encrypt.py {alg} {enc}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn jwcrypto_tokens_decrypt_to_the_inner_jws() -> Result<(), Box<dyn std::error::Error>> {
    if !jwcrypto_available() {
        return Ok(());
    }
    let kid = "module-enc-1";
    let pem = SigningKey::generate(Alg::RS256, 2048)?.to_pem()?;
    let other = SigningKey::generate(Alg::RS256, 2048)?.to_pem()?;
    let keys = DecryptionKeys::from_pems(&[
        (pem.into_bytes(), kid.to_string()),
        (other.into_bytes(), "other".to_string()),
    ])?;
    let jwks = keys.public_jwks();
    let jwk = jwks.iter().find(|k| k["kid"] == kid).unwrap();
    let other_jwk = jwks.iter().find(|k| k["kid"] == "other").unwrap();
    // A real signed launch as the inner JWS.
    let signer = SigningKey::generate(Alg::RS512, 2048)?;
    let claims = serde_json::json!({
        "iss": "portal", "aud": "Device/1", "sub": "Patient/1", "resource": "Task/1",
        "jti": "0123456789abcdef0123456789abcdef", "iat": 1_700_000_000, "exp": 1_700_000_300,
    });
    let jws = signer.sign_jws(Alg::RS512, "portal-key", &claims)?;

    for alg in ["RSA-OAEP", "RSA-OAEP-256"] {
        for enc in ["A128CBC-HS256", "A256CBC-HS512", "A128GCM", "A256GCM"] {
            let jwe = jwcrypto_encrypt(jwk, alg, enc, kid, &jws);
            assert!(is_jwe(&jwe), "{alg} {enc}: {jwe}");
            assert_eq!(keys.decrypt(&jwe)?, jws, "{alg} {enc}");

            // The same token naming the other key is not decrypted.
            let to_other = jwcrypto_encrypt(other_jwk, alg, enc, kid, &jws);
            assert!(
                matches!(keys.decrypt(&to_other), Err(JweError::Decrypt(_))),
                "{alg} {enc}: encrypted to another key"
            );
        }
    }

    // A kid the module does not hold: no key is tried.
    let unnamed = jwcrypto_encrypt(jwk, "RSA-OAEP", "A192GCM", "nobody", &jws);
    assert!(matches!(
        keys.decrypt(&unnamed),
        Err(JweError::UnknownKid(_))
    ));
    Ok(())
}
