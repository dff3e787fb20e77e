//! HTI:jwe against an independent producer: tokens encrypted by Python jwcrypto
//! (`tests/jwe_encrypt.py`) to the module's published key decrypt to the inner JWS exactly.
//! Without jwcrypto that test says so and passes, except under CI (`CI` set), where it fails.
//! And a kid-less encrypted launch through the real guard holding two decryption keys.

mod common;

use std::process::{Command, Stdio};

use common::guard::toml_str;
use common::{Fixture, expect_echo, mint, needs, probe, temp_file};
use hti_guard::jose::Alg;
use hti_guard::jose::jwe::{DecryptionKeys, JweError, encrypt_with_header, is_jwe};
use hti_guard::jose::sign::SigningKey;
use serde_json::json;

/// Whether python3 can import jwcrypto. Missing: a failure under CI, a note and `false`
/// elsewhere.
fn jwcrypto_available() -> bool {
    let present = probe("python3", &["-c", "import jwcrypto"]);
    needs(
        (!present)
            .then(|| "python3 cannot import jwcrypto: python3 -m pip install jwcrypto".to_string()),
    )
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
                matches!(keys.decrypt(&to_other), Err(JweError::Decrypt)),
                "{alg} {enc}: encrypted to another key"
            );
        }
    }

    // Without a kid (as the GIDS and Koppeltaal PoC portals send), every key is tried: the
    // token for the second key decrypts, one for a stranger's key does not.
    let mut stranger = SigningKey::generate(Alg::RS256, 2048)?.public_jwk("s", None);
    stranger["use"] = json!("enc");
    for enc in ["A128CBC-HS256", "A256GCM"] {
        let kidless = jwcrypto_encrypt(other_jwk, "RSA-OAEP", enc, "", &jws);
        assert!(
            !String::from_utf8(mint_header(&kidless))
                .unwrap()
                .contains("kid")
        );
        assert_eq!(keys.decrypt(&kidless)?, jws, "kid-less {enc}");
        let lost = jwcrypto_encrypt(&stranger, "RSA-OAEP", enc, "", &jws);
        assert!(matches!(keys.decrypt(&lost), Err(JweError::Decrypt)));
    }

    // A kid the module does not hold: no key is tried.
    let unnamed = jwcrypto_encrypt(jwk, "RSA-OAEP", "A192GCM", "nobody", &jws);
    assert!(matches!(
        keys.decrypt(&unnamed),
        Err(JweError::UnknownKid(_))
    ));
    Ok(())
}

/// The decoded protected header of a compact token.
fn mint_header(token: &str) -> Vec<u8> {
    use base64::Engine;
    let header = token.split('.').next().unwrap();
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .unwrap()
}

/// A PKCS#8 PEM RSA key in a fresh temp file.
fn key_file(name: &str) -> (std::path::PathBuf, SigningKey) {
    let key = SigningKey::generate(Alg::RS256, 2048).unwrap();
    (temp_file(name, key.to_pem().unwrap()), key)
}

/// The portals seen omit `kid` in the JWE header: the guard tries each decryption key, and
/// the launch encrypted to the second one goes through; nothing else does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kidless_launch_is_decrypted_by_the_second_key() {
    let (first_file, _) = key_file("first.pem");
    let (second_file, second) = key_file("second.pem");
    let entries = format!(
        "[{{ file = {}, kid = \"enc-1\" }}, {{ file = {}, kid = \"enc-2\" }}]",
        toml_str(first_file.to_str().unwrap()),
        toml_str(second_file.to_str().unwrap()),
    );
    let fx = Fixture::start_with(|b| b.set("module.decryption_key_files", &entries)).await;
    // What the portal knows: the second key's public half, no kid.
    let public = second.public_jwk("", None);
    let header = json!({"alg": "RSA-OAEP", "enc": "A128CBC-HS256", "cty": "JWT"});
    let header = header.as_object().unwrap();

    let jws = fx.good_token();
    let jwe = encrypt_with_header(&public, header, jws.as_bytes()).unwrap();
    assert!(
        !String::from_utf8(mint_header(&jwe))
            .unwrap()
            .contains("kid")
    );
    let echo = expect_echo(fx.launch(&jwe).await).await;
    assert_eq!(
        echo.header("x-hti-jti"),
        mint::payload_of(&jws)["jti"].as_str()
    );

    // Kid-less, encrypted to a key the guard does not hold: every key fails alike.
    let stranger = SigningKey::generate(Alg::RS256, 2048)
        .unwrap()
        .public_jwk("", None);
    let lost = encrypt_with_header(&stranger, header, fx.good_token().as_bytes()).unwrap();
    fx.expect_refused(&lost, 401, "undecryptable").await;
    // Kid-less for the second key, its tag changed: undecryptable too.
    let fresh = encrypt_with_header(&public, header, fx.good_token().as_bytes()).unwrap();
    let mut parts: Vec<String> = fresh.split('.').map(str::to_string).collect();
    let tag = parts[4].clone();
    parts[4] = mint::b64(&mint::random_bytes(16));
    assert_ne!(parts[4], tag);
    fx.expect_refused(&parts.join("."), 401, "undecryptable")
        .await;
    // Naming the first key for a token made for the second: only the first is tried.
    let mut named = header.clone();
    named.insert("kid".into(), json!("enc-1"));
    let misnamed = encrypt_with_header(&public, &named, fx.good_token().as_bytes()).unwrap();
    fx.expect_refused(&misnamed, 401, "undecryptable").await;
    assert_eq!(fx.upstream.hits(), 1);
}
