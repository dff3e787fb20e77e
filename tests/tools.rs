//! The key and token tools as a user runs them: `keygen`, `mint` and `jwks` with their error
//! cases; minted tokens verified by PyJWT (an independent library) and accepted, once, by a
//! real `hti-guard serve` that trusts the JWKS `keygen` wrote.

mod common;

use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::mint::payload_of;
use common::{
    Backends, Finished, JwksServer, Served, TempDir, client, command, expect_echo,
    expect_rejection, needs, path_str, post_form, probe, program,
};
use hti_guard::jose::Alg;
use hti_guard::jose::sign::SigningKey;
use serde_json::{Value, json};

const AUD: &str = "Device/module-1";
const ISS: &str = "https://portal.example";

async fn run_program(name: &str, args: &[&str]) -> Finished {
    common::run(program(name, args)).await
}

async fn run(args: &[&str]) -> Finished {
    common::run(command(args)).await
}

/// `keygen --alg ALG --kid KID --out DIR`; gives the key and JWKS paths.
async fn keygen(dir: &Path, alg: &str, kid: &str) -> (PathBuf, PathBuf) {
    let finished = run(&["keygen", "--alg", alg, "--kid", kid, "--out", path_str(dir)]).await;
    finished.assert_ok();
    let key = dir.join(format!("{kid}.key.pem"));
    let jwks = dir.join(format!("{kid}.jwks.json"));
    for path in [&key, &jwks] {
        assert!(
            finished.stdout.contains(path_str(path)),
            "keygen names {}: {}",
            path.display(),
            finished.output()
        );
    }
    (key, jwks)
}

/// `mint` arguments for a good launch, with `extra` options (NAME VALUE ...) replacing
/// the defaults (clap refuses a repeated option) or added.
fn mint_args<'a>(key: &'a Path, kid: &'a str, alg: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "mint",
        "--key",
        path_str(key),
        "--kid",
        kid,
        "--alg",
        alg,
        "--iss",
        ISS,
        "--aud",
        AUD,
        "--sub",
        "Practitioner/123",
        "--resource",
        "Task/5f68-a",
    ];
    for pair in extra.chunks(2) {
        let [name, value] = pair else {
            panic!("extra options come in pairs: {extra:?}")
        };
        match args.iter().position(|arg| arg == name) {
            Some(at) => args[at + 1] = value,
            None => args.extend([*name, *value]),
        }
    }
    args
}

/// `mint`: gives the token, after checking that it is the only line on stdout.
async fn mint(key: &Path, kid: &str, alg: &str, extra: &[&str]) -> String {
    let finished = run(&mint_args(key, kid, alg, extra)).await;
    finished.assert_ok();
    let token = finished.stdout.strip_suffix('\n').expect("a final newline");
    assert!(!token.contains('\n'), "one line: {}", finished.output());
    assert_eq!(token.matches('.').count(), 2, "{}", finished.output());
    token.to_string()
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keygen_writes_a_private_key_and_its_jwks_for_every_algorithm() {
    let temp = TempDir::new();
    // The directory is created when missing, parents included.
    let dir = temp.join("keys/portal");
    for alg in Alg::ALL {
        let kid = format!("portal-{}", alg.name().to_lowercase());
        let (key_path, jwks_path) = keygen(&dir, alg.name(), &kid).await;

        #[cfg(unix)]
        assert_eq!(mode(&key_path), 0o600, "{alg}: private key mode");
        let pem = std::fs::read(&key_path).unwrap();
        assert!(pem.starts_with(b"-----BEGIN PRIVATE KEY-----\n"), "{alg}");
        let key = SigningKey::from_pem(&pem).expect("keygen's key reads back");
        assert!(key.fits(alg), "{alg}");

        let jwks = read_json(&jwks_path);
        let keys = jwks["keys"].as_array().expect("keys");
        assert_eq!(keys.len(), 1, "{jwks}");
        let jwk = &keys[0];
        assert_eq!(jwk["kid"], kid.as_str());
        assert_eq!(jwk["alg"], alg.name());
        assert_eq!(jwk["use"], "sig");
        assert!(jwk.get("d").is_none(), "no private part: {jwk}");
        match alg.curve() {
            None => {
                assert_eq!(jwk["kty"], "RSA");
                assert_eq!(jwk["e"], "AQAB");
                let n = URL_SAFE_NO_PAD.decode(jwk["n"].as_str().unwrap()).unwrap();
                assert_eq!(n.len() * 8, 2048, "{alg}: default RSA size");
            }
            Some(curve) => {
                assert_eq!(jwk["kty"], "EC");
                assert_eq!(jwk["crv"], curve.name());
                assert!(jwk["x"].is_string() && jwk["y"].is_string(), "{jwk}");
            }
        }

        // `jwks` prints the same document from the private key.
        let mut args = vec!["jwks", "--key", path_str(&key_path), "--kid", kid.as_str()];
        args.extend(["--alg", alg.name()]);
        let printed = run(&args).await;
        printed.assert_ok();
        let printed: Value = serde_json::from_str(&printed.stdout).unwrap();
        assert_eq!(printed, jwks, "{alg}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keygen_makes_larger_rsa_keys_on_request() {
    let temp = TempDir::new();
    let dir = path_str(temp.path());
    run(&[
        "keygen", "--alg", "PS512", "--kid", "big", "--out", dir, "--bits", "3072",
    ])
    .await
    .assert_ok();
    let jwk = &read_json(&temp.join("big.jwks.json"))["keys"][0];
    let n = URL_SAFE_NO_PAD.decode(jwk["n"].as_str().unwrap()).unwrap();
    assert_eq!(n.len() * 8, 3072);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keygen_refuses_to_overwrite_a_key_unless_forced() {
    let temp = TempDir::new();
    let (key_path, _) = keygen(temp.path(), "RS512", "portal-1").await;
    let first = std::fs::read(&key_path).unwrap();

    let dir = path_str(temp.path());
    let args = [
        "keygen", "--alg", "ES256", "--kid", "portal-1", "--out", dir,
    ];
    run(&args)
        .await
        .assert_error(1, &["portal-1.key.pem", "already exists", "--force"]);
    assert_eq!(std::fs::read(&key_path).unwrap(), first, "key unchanged");

    let mut forced = args.to_vec();
    forced.push("--force");
    run(&forced).await.assert_ok();
    let second = std::fs::read(&key_path).unwrap();
    assert_ne!(second, first, "key replaced");
    assert!(SigningKey::from_pem(&second).unwrap().fits(Alg::ES256));
    #[cfg(unix)]
    assert_eq!(mode(&key_path), 0o600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keygen_refuses_bad_arguments() {
    let temp = TempDir::new();
    let out = temp.join("never");
    let out = path_str(&out);
    for alg in ["HS256", "HS512", "none", "EdDSA"] {
        run(&["keygen", "--alg", alg, "--kid", "k", "--out", out])
            .await
            .assert_error(2, &[alg, "RS256, RS384"]);
    }
    run(&["keygen", "--alg", "HS256", "--kid", "k", "--out", out])
        .await
        .assert_error(2, &["shared-secret"]);
    run(&["keygen", "--alg", "rs256", "--kid", "k", "--out", out])
        .await
        .assert_error(2, &["case-sensitive", "RS256"]);
    run(&[
        "keygen", "--alg", "RS256", "--kid", "k", "--out", out, "--bits", "1024",
    ])
    .await
    .assert_error(2, &["--bits 1024"]);
    run(&[
        "keygen", "--alg", "ES256", "--kid", "k", "--out", out, "--bits", "2048",
    ])
    .await
    .assert_error(2, &["--bits"]);
    run(&["keygen", "--alg", "RS256", "--kid", "../k", "--out", out])
        .await
        .assert_error(2, &["--kid"]);
    assert!(!Path::new(out).exists(), "nothing written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mint_prints_one_hti_token_and_warns_about_long_lifetimes() {
    let temp = TempDir::new();
    let (key, _) = keygen(temp.path(), "ES384", "e1").await;

    let finished = run(&mint_args(&key, "e1", "ES384", &[])).await;
    finished.assert_ok();
    assert!(finished.stderr.is_empty(), "{}", finished.output());
    let token = finished.stdout.trim_end();
    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["alg"], "ES384");
    assert_eq!(header["kid"], "e1");
    let claims = payload_of(token);
    assert_eq!(claims["iss"], ISS);
    assert_eq!(claims["aud"], AUD);
    assert_eq!(claims["sub"], "Practitioner/123");
    assert_eq!(claims["resource"], "Task/5f68-a");
    assert_eq!(claims["hti-version"], "2.0");
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        300
    );
    assert_eq!(claims["jti"].as_str().unwrap().len(), 32);
    assert!(claims.get("patient").is_none());

    let other = mint(&key, "e1", "ES384", &[]).await;
    assert_ne!(
        payload_of(&other)["jti"],
        claims["jti"],
        "a fresh jti each time"
    );

    let finished = run(&mint_args(
        &key,
        "e1",
        "ES384",
        &[
            "--lifetime",
            "15m",
            "--patient",
            "Patient/9",
            "--definition",
            "ActivityDefinition/ad-1",
            "--intent",
            "plan",
        ],
    ))
    .await;
    finished.assert_ok();
    assert!(
        finished.stderr.starts_with("hti-guard: warning:") && finished.stderr.contains("15m"),
        "{}",
        finished.output()
    );
    let claims = payload_of(finished.stdout.trim_end());
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        900
    );
    assert_eq!(claims["patient"], "Patient/9");
    assert_eq!(claims["definition"], "ActivityDefinition/ad-1");
    assert_eq!(claims["intent"], "plan");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mint_count_prints_that_many_tokens_with_their_own_jti() {
    let temp = TempDir::new();
    let (key, _) = keygen(temp.path(), "ES256", "c1").await;

    let finished = run(&mint_args(&key, "c1", "ES256", &["--count", "2501"])).await;
    finished.assert_ok();
    let tokens: Vec<&str> = finished.stdout.lines().collect();
    assert_eq!(tokens.len(), 2501, "{}", finished.stderr);
    let jtis: std::collections::HashSet<String> = tokens
        .iter()
        .map(|t| {
            assert_eq!(t.matches('.').count(), 2, "one whole token per line: {t}");
            payload_of(t)["jti"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(jtis.len(), 2501);

    run(&mint_args(&key, "c1", "ES256", &["--count", "0"]))
        .await
        .assert_error(2, &["--count"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mint_refuses_a_key_that_does_not_fit_the_algorithm() {
    let temp = TempDir::new();
    let (ec, _) = keygen(temp.path(), "ES256", "e1").await;
    let (rsa, _) = keygen(temp.path(), "RS256", "r1").await;
    for (key, alg, fits) in [
        (&ec, "RS256", "ES256"),
        (&ec, "ES384", "ES256"),
        (&ec, "ES512", "ES256"),
        (&rsa, "ES256", "PS512"),
    ] {
        run(&mint_args(key, "k", alg, &[]))
            .await
            .assert_error(2, &[alg, "does not fit", fits]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mint_refuses_what_the_guard_would_refuse() {
    let temp = TempDir::new();
    let (key, _) = keygen(temp.path(), "RS256", "r1").await;
    let cases: &[(&[&str], &str)] = &[
        (&["--sub", "123"], "--sub"),
        (&["--sub", "practitioner/1"], "--sub"),
        (&["--resource", "Task/"], "--resource"),
        (&["--resource", "Task/a b"], "--resource"),
        (&["--patient", "Task/1"], "--patient"),
        (&["--definition", "not a url"], "--definition"),
        (&["--intent", "whim"], "--intent"),
        (&["--lifetime", "forever"], "--lifetime"),
        (&["--lifetime", "0s"], "--lifetime"),
        (&["--iss", ""], "--iss"),
    ];
    for (extra, named) in cases {
        run(&mint_args(&key, "r1", "RS256", extra))
            .await
            .assert_error(2, &[named]);
    }
    for alg in ["HS256", "none"] {
        run(&mint_args(&key, "r1", alg, &[]))
            .await
            .assert_error(2, &["--alg", alg]);
    }
    // A key that cannot be read is exit 1.
    let missing = temp.join("missing.pem");
    run(&mint_args(&missing, "r1", "RS256", &[]))
        .await
        .assert_error(1, &["missing.pem"]);
    let not_a_key = temp.join("r1.jwks.json");
    run(&mint_args(&not_a_key, "r1", "RS256", &[]))
        .await
        .assert_error(1, &["r1.jwks.json", "PKCS#8"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_publishes_the_public_key() {
    let temp = TempDir::new();
    let (rsa, _) = keygen(temp.path(), "RS512", "r1").await;
    let (ec, _) = keygen(temp.path(), "ES384", "e1").await;

    let printed = run(&["jwks", "--key", path_str(&rsa), "--kid", "rotated"]).await;
    printed.assert_ok();
    assert!(
        printed.stdout.contains("\n  "),
        "pretty JSON: {}",
        printed.stdout
    );
    let jwk = serde_json::from_str::<Value>(&printed.stdout).unwrap()["keys"][0].clone();
    assert_eq!(jwk["kid"], "rotated");
    assert_eq!(jwk["kty"], "RSA");
    assert!(jwk.get("alg").is_none(), "RSA: alg only when asked: {jwk}");

    let printed = run(&[
        "jwks",
        "--key",
        path_str(&rsa),
        "--kid",
        "r1",
        "--alg",
        "PS256",
    ])
    .await;
    printed.assert_ok();
    assert_eq!(
        serde_json::from_str::<Value>(&printed.stdout).unwrap()["keys"][0]["alg"],
        "PS256"
    );

    let printed = run(&["jwks", "--key", path_str(&ec), "--kid", "e1"]).await;
    printed.assert_ok();
    let jwk = serde_json::from_str::<Value>(&printed.stdout).unwrap()["keys"][0].clone();
    assert_eq!(jwk["alg"], "ES384", "EC: alg from the curve");
    assert_eq!(jwk["crv"], "P-384");

    run(&[
        "jwks",
        "--key",
        path_str(&ec),
        "--kid",
        "e1",
        "--alg",
        "ES256",
    ])
    .await
    .assert_error(2, &["ES256", "does not fit", "ES384"]);
    run(&[
        "jwks",
        "--key",
        path_str(&ec),
        "--kid",
        "e1",
        "--alg",
        "HS256",
    ])
    .await
    .assert_error(2, &["HS256"]);
}

/// Whether PyJWT and cryptography can be imported. Missing: a failure under CI, a note and
/// `false` elsewhere.
fn pyjwt_available() -> bool {
    let present = probe("python3", &["-c", "import jwt, cryptography"]);
    needs((!present).then(|| {
        "python3 cannot import jwt and cryptography: python3 -m pip install pyjwt cryptography"
            .to_string()
    }))
}

fn pyjwt_script() -> String {
    format!("{}/tests/pyjwt_verify.py", env!("CARGO_MANIFEST_DIR"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minted_tokens_verify_in_pyjwt() {
    if !pyjwt_available() {
        return;
    }
    let script = pyjwt_script();
    let temp = TempDir::new();
    for alg in Alg::ALL {
        let kid = format!("py-{}", alg.name().to_lowercase());
        let (key, jwks) = keygen(temp.path(), alg.name(), &kid).await;
        let extra = [
            "--patient",
            "Patient/7",
            "--definition",
            "https://example.org/ActivityDefinition/ad|1.0",
            "--intent",
            "order",
            "--lifetime",
            "2m",
        ];
        let token = mint(&key, &kid, alg.name(), &extra).await;
        let token_file = temp.join(&format!("{kid}.token"));
        std::fs::write(&token_file, &token).unwrap();
        let args = [
            script.as_str(),
            path_str(&jwks),
            path_str(&token_file),
            "--alg",
            alg.name(),
            "--aud",
            AUD,
            "--iss",
            ISS,
            "--lifetime",
            "120",
            "--claim",
            "sub=Practitioner/123",
            "--claim",
            "resource=Task/5f68-a",
            "--claim",
            "patient=Patient/7",
            "--claim",
            "definition=https://example.org/ActivityDefinition/ad|1.0",
            "--claim",
            "intent=order",
        ];
        let verified = run_program("python3", &args).await;
        assert_eq!(verified.code(), Some(0), "{alg}: {}", verified.output());
        assert_eq!(verified.stdout.trim(), format!("ok {alg}"));

        // The check is real: a changed payload fails under PyJWT too.
        let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
        let mut claims = payload_of(&token);
        claims["sub"] = json!("Practitioner/666");
        parts[1] = URL_SAFE_NO_PAD.encode(claims.to_string());
        std::fs::write(&token_file, parts.join(".")).unwrap();
        let refused = run_program("python3", &args).await;
        assert_eq!(refused.code(), Some(1), "{alg}: {}", refused.output());
        assert!(
            refused.stderr.contains("InvalidSignatureError"),
            "{}",
            refused.output()
        );
    }
}

/// POSTs `token` with another form field to `/launch` of `served`.
async fn launch(served: &Served, token: &str) -> reqwest::Response {
    let fields = [("token", token), ("iss", "https://fhir.example")];
    post_form(&client(), &served.url("/launch"), &fields).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keygen_mint_and_serve_accept_the_launch_once() {
    let temp = TempDir::new();
    let keys_dir = temp.join("keys");
    let mut published = Vec::new();
    let mut minted = Vec::new();
    for alg in Alg::ALL {
        let kid = format!("kid-{}", alg.name().to_lowercase());
        let (key, jwks) = keygen(&keys_dir, alg.name(), &kid).await;
        published.extend(read_json(&jwks)["keys"].as_array().unwrap().clone());
        minted.push((alg, key, kid));
    }
    let jwks = JwksServer::start_document(json!({ "keys": published })).await;
    let backends = Backends::start(jwks).await;
    let served = Served::start(backends.builder().set_str("launch.audience", AUD), "warn").await;
    let (upstream, iss) = (&backends.upstream, &backends.iss);

    let mut first = None;
    for (alg, key, kid) in &minted {
        let args = [
            "mint",
            "--key",
            path_str(key),
            "--kid",
            kid,
            "--alg",
            alg.name(),
            "--iss",
            iss,
            "--aud",
            AUD,
            "--sub",
            "RelatedPerson/rp-1",
            "--resource",
            "Task/t-1",
            "--patient",
            "Patient/p-1",
            "--definition",
            "ActivityDefinition/ad-1",
            "--intent",
            "plan",
        ];
        let finished = run(&args).await;
        finished.assert_ok();
        let token = finished.stdout.trim_end().to_string();
        let claims = payload_of(&token);

        let echo = expect_echo(launch(&served, &token).await).await;
        assert_eq!(echo.path(), "/launch", "{alg}");
        assert_eq!(echo.header("x-hti-iss"), Some(iss.as_str()), "{alg}");
        assert_eq!(echo.header("x-hti-sub"), Some("RelatedPerson/rp-1"));
        assert_eq!(echo.header("x-hti-resource"), Some("Task/t-1"));
        assert_eq!(echo.header("x-hti-patient"), Some("Patient/p-1"));
        assert_eq!(
            echo.header("x-hti-definition"),
            Some("ActivityDefinition/ad-1")
        );
        assert_eq!(echo.header("x-hti-intent"), Some("plan"));
        assert_eq!(echo.header("x-hti-jti"), claims["jti"].as_str());
        let verified: Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(echo.header("x-hti-claims").expect("X-HTI-Claims"))
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            verified, claims,
            "{alg}: X-HTI-Claims is the minted claims set"
        );
        assert_eq!(
            echo.form(),
            vec![("iss".to_string(), "https://fhir.example".to_string())],
            "{alg}: the token field is removed, the others kept"
        );
        first.get_or_insert(token);
    }
    let hits = upstream.hits();

    // The same token again: refused, and nothing reaches the module.
    let replay = launch(&served, first.as_deref().unwrap()).await;
    expect_rejection(replay, 401, "replayed").await;

    // An over-long token is minted (with a warning) and refused.
    let (alg, key, kid) = &minted[2];
    let args = [
        "mint",
        "--key",
        path_str(key),
        "--kid",
        kid,
        "--alg",
        alg.name(),
        "--iss",
        iss,
        "--aud",
        AUD,
        "--sub",
        "Patient/p-1",
        "--resource",
        "Task/t-1",
        "--lifetime",
        "15m",
    ];
    let finished = run(&args).await;
    finished.assert_ok();
    assert!(finished.stderr.contains("warning"), "{}", finished.output());
    let long = launch(&served, finished.stdout.trim_end()).await;
    expect_rejection(long, 401, "lifetime_too_long").await;
    assert_eq!(
        upstream.hits(),
        hits,
        "no refused launch reached the module"
    );
    served.kill().await;
}
