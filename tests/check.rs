//! `hti-guard check`, run as a binary against mock JWKS servers: the keys and the problems
//! it reports, where each configuration value came from, `--json`, `--offline`, exit codes.

mod common;

use std::path::PathBuf;

use common::mint::{self, b64};
use common::*;
use serde_json::{Value, json};

fn config(jwks_url: &str) -> GuardBuilder {
    GuardBuilder::new("http://127.0.0.1:9").issuer(&unique_issuer(), jwks_url)
}

/// Runs `hti-guard check --config FILE ARGS...` with a clean `HTI_GUARD_*` environment plus
/// `env`, bounded in time.
async fn check(file: &ConfigFile, args: &[&str], env: &[(&str, &str)]) -> Finished {
    let mut command = command(&["check", "--config", file.path()]);
    command.args(args).envs(env.iter().copied());
    run(command).await
}

fn problem_kinds(issuer: &Value) -> Vec<&str> {
    issuer["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["kind"].as_str().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_key_set_is_listed_and_usable() {
    let rsa = mint::shared_key(mint::Alg::RS512);
    let ec = mint::shared_key(mint::Alg::ES256);
    let jwks = JwksServer::start(&[rsa, ec]).await;
    jwks.set_cache_control(Some("public, max-age=600"));
    let file = ConfigFile::new(&config(&jwks.url()).toml());

    let text = check(&file, &[], &[]).await;
    assert_eq!(text.code(), Some(0), "{text}");
    assert!(text.line("jwks_url").contains(&jwks.url()), "{text}");
    assert!(text.line("status").contains("200 OK"), "{text}");
    assert!(
        text.line("cache-control").contains("public, max-age=600"),
        "{text}"
    );
    assert!(
        text.line("refresh").contains("every 10m (max-age)"),
        "{text}"
    );
    let rsa_line = text.line(&rsa.kid);
    for cell in ["RSA", "2048", "RS512", "sig"] {
        assert!(
            rsa_line.contains(cell),
            "{cell} missing: {rsa_line}\n{text}"
        );
    }
    let ec_line = text.line(&ec.kid);
    for cell in ["EC", "P-256", "ES256", "sig"] {
        assert!(ec_line.contains(cell), "{cell} missing: {ec_line}\n{text}");
    }
    assert!(!text.has("! "), "no problem is marked: {text}");
    assert!(text.stdout.ends_with("result: usable\n"), "{text}");

    let report = check(&file, &["--json"], &[]).await;
    assert_eq!(report.code(), Some(0), "{report}");
    let report = report.json();
    assert_eq!(report["usable"], json!(true));
    assert_eq!(report["problems"], json!(0));
    let issuer = &report["issuers"][0];
    assert_eq!(issuer["status"], json!(200));
    assert_eq!(issuer["cache_control"], json!("public, max-age=600"));
    assert_eq!(issuer["max_age_seconds"], json!(600));
    assert_eq!(issuer["refresh_seconds"], json!(600.0));
    assert_eq!(issuer["usable"], json!(true));
    assert_eq!(
        issuer["keys"],
        json!([
            {"kid": rsa.kid, "kty": "RSA", "bits": 2048, "alg": "RS512", "use": "sig",
             "verifies": ["RS512"]},
            {"kid": ec.kid, "kty": "EC", "curve": "P-256", "alg": "ES256", "use": "sig",
             "verifies": ["ES256"]},
        ])
    );
    assert_eq!(jwks.hits(), 2, "one fetch per run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_refresh_interval_is_clamped() {
    let jwks = JwksServer::start(&[mint::shared_key(mint::Alg::ES384)]).await;
    jwks.set_cache_control(Some("max-age=5"));
    let file = ConfigFile::new(
        &config(&jwks.url())
            .set_str("keys.refresh_min", "30s")
            .toml(),
    );
    let text = check(&file, &[], &[]).await;
    assert_eq!(text.code(), Some(0), "{text}");
    assert!(
        text.line("refresh")
            .contains("every 30s (max-age 5s, raised to keys.refresh_min)"),
        "{text}"
    );
    jwks.set_cache_control(None);
    let text = check(&file, &[], &[]).await;
    assert!(text.line("cache-control").contains("(none)"), "{text}");
    assert!(text.line("refresh").contains("every 30s"), "{text}");
}

/// A public EC JWK on a curve the guard does not support.
fn secp256k1_jwk(kid: &str) -> Value {
    let coordinate = b64(&[7u8; 32]);
    json!({"kid": kid, "kty": "EC", "crv": "secp256k1", "x": coordinate, "y": coordinate})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_key_set_lists_every_problem() {
    let good = mint::SigningKey::with_kid(mint::Alg::PS256, "enc-key");
    let mut encryption = good.jwk();
    encryption["use"] = json!("enc");
    let mut no_kid = mint::shared_key(mint::Alg::ES384).jwk();
    no_kid.as_object_mut().unwrap().remove("kid");
    let mut wrong_alg = mint::shared_key(mint::Alg::ES512).jwk();
    wrong_alg["kid"] = json!("wrong-alg");
    wrong_alg["alg"] = json!("RS256");
    let document = json!({"keys": [
        mint::weak_rsa_jwk("weak"),
        encryption,
        no_kid,
        secp256k1_jwk("k1-curve"),
        {"kid": "symmetric", "kty": "oct", "k": "c2VjcmV0"},
        wrong_alg,
    ]});
    let jwks = JwksServer::start_document(document).await;
    let file = ConfigFile::new(&config(&jwks.url()).toml());

    let text = check(&file, &[], &[]).await;
    assert_eq!(text.code(), Some(1), "{text}");
    for expected in [
        r#"! key "weak" (RSA, alg RS256, use sig): RSA key of 1024 bits is too weak"#,
        r#"! key "enc-key" (RSA, alg PS256, use enc): "use" is "enc", not "sig""#,
        r#"! key without kid (EC, alg ES384, use sig): no "kid""#,
        r#"! key "k1-curve" (EC): unsupported curve "secp256k1""#,
        r#"! key "symmetric" (oct): unsupported key type "oct""#,
        r#"! key "wrong-alg" (EC, alg RS256, use sig): "alg" RS256 does not fit a EC P-521 key"#,
        "! no usable key",
    ] {
        assert!(text.has(expected), "missing {expected:?}:\n{text}");
    }
    assert!(
        text.line("keys").contains("0 usable, 6 with problems"),
        "{text}"
    );
    assert!(
        text.stdout.ends_with("result: NOT usable (7 problems)\n"),
        "{text}"
    );

    let report = check(&file, &["--json"], &[]).await;
    assert_eq!(report.code(), Some(1), "{report}");
    let report = report.json();
    assert_eq!(report["usable"], json!(false));
    let issuer = &report["issuers"][0];
    assert_eq!(issuer["usable"], json!(false));
    assert_eq!(issuer["keys"], json!([]));
    assert_eq!(
        problem_kinds(issuer),
        [
            "weak_rsa_key",
            "not_for_signing",
            "no_kid",
            "unsupported_curve",
            "unsupported_kty",
            "alg_mismatch",
            "no_usable_key"
        ]
    );
    assert_eq!(issuer["problems"][0]["kid"], json!("weak"));
    assert_eq!(issuer["problems"][1]["use"], json!("enc"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_kid_is_a_problem_but_the_first_key_is_used() {
    let first = mint::SigningKey::with_kid(mint::Alg::RS256, "same");
    let second = mint::SigningKey::with_kid(mint::Alg::RS256, "same");
    let jwks = JwksServer::start(&[&first, &second]).await;
    let file = ConfigFile::new(&config(&jwks.url()).toml());
    let text = check(&file, &[], &[]).await;
    assert_eq!(text.code(), Some(0), "{text}");
    assert!(
        text.has(r#"! key "same" (RSA, alg RS256, use sig): duplicate kid"#),
        "{text}"
    );
    assert!(
        text.line("keys").contains("1 usable, 1 with problems"),
        "{text}"
    );
    assert!(
        text.stdout
            .ends_with("result: usable (1 problem, see above)\n"),
        "{text}"
    );
    let report = check(&file, &["--json"], &[]).await.json();
    assert_eq!(problem_kinds(&report["issuers"][0]), ["duplicate_kid"]);
    assert_eq!(report["usable"], json!(true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_for_no_accepted_algorithm_is_never_used() {
    let key = mint::shared_key(mint::Alg::ES256);
    let jwks = JwksServer::start(&[key]).await;
    let text = GuardBuilder::new("http://127.0.0.1:9")
        .issuer_with_algorithms(&unique_issuer(), &jwks.url(), &["RS256", "ES384"])
        .toml();
    let file = ConfigFile::new(&text);
    let text = check(&file, &[], &[]).await;
    assert_eq!(text.code(), Some(1), "{text}");
    assert!(
        text.has("fits none of this issuer's algorithms (RS256 ES384)"),
        "{text}"
    );
    assert!(text.line(&key.kid).contains("(nothing)"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_key_set_is_not_usable() {
    let url = closed_url();
    let file = ConfigFile::new(&config(&url).toml());
    let text = check(&file, &[], &[]).await;
    assert_eq!(text.code(), Some(1), "{text}");
    assert!(text.line("status").contains("(no response)"), "{text}");
    let problem = text.line("!");
    assert!(
        problem.contains("unreachable: connection failed") && problem.contains("refused"),
        "the cause is named: {text}"
    );
    assert!(
        text.stdout.ends_with("result: NOT usable (1 problem)\n"),
        "{text}"
    );
    let report = check(&file, &["--json"], &[]).await;
    assert_eq!(report.code(), Some(1), "{report}");
    let issuer = &report.json()["issuers"][0];
    assert_eq!(problem_kinds(issuer), ["unreachable"]);
    assert_eq!(issuer["status"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_set_that_does_not_answer_times_out() {
    let jwks = JwksServer::start(&[]).await;
    jwks.set_mode(Mode::Hang);
    let file = ConfigFile::new(
        &config(&jwks.url())
            .set_str("keys.fetch_timeout", "500ms")
            .toml(),
    );
    let text = check(&file, &[], &[]).await;
    assert_eq!(text.code(), Some(1), "{text}");
    assert!(
        text.has("! unreachable: no response within 500ms (keys.fetch_timeout)"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_error_or_a_page_that_is_not_json_is_not_usable() {
    let jwks = JwksServer::start(&[mint::shared_key(mint::Alg::RS256)]).await;
    let file = ConfigFile::new(&config(&jwks.url()).toml());

    jwks.set_mode(Mode::NotJson);
    let text = check(&file, &[], &[]).await;
    assert_eq!(text.code(), Some(1), "{text}");
    assert!(text.line("status").contains("200 OK"), "{text}");
    assert!(text.has("! the response is not JSON"), "{text}");
    let report = check(&file, &["--json"], &[]).await.json();
    assert_eq!(problem_kinds(&report["issuers"][0]), ["not_json"]);

    jwks.set_mode(Mode::Serve);
    jwks.set_document(json!({"keyz": []}));
    let text = check(&file, &[], &[]).await;
    assert_eq!(text.code(), Some(1), "{text}");
    assert!(text.has(r#"! the response has no "keys" array"#), "{text}");

    jwks.set_mode(Mode::Error500);
    let text = check(&file, &[], &[]).await;
    assert_eq!(text.code(), Some(1), "{text}");
    assert!(
        text.line("status").contains("500 Internal Server Error"),
        "{text}"
    );
    assert!(text.has("! HTTP 500 Internal Server Error"), "{text}");
    let report = check(&file, &["--json"], &[]).await.json();
    assert_eq!(report["issuers"][0]["status"], json!(500));
    assert_eq!(problem_kinds(&report["issuers"][0]), ["http_status"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_value_names_its_source() {
    let jwks = JwksServer::start(&[mint::shared_key(mint::Alg::RS256)]).await;
    let text = config(&jwks.url())
        .set_str("keys.max_stale", "2h")
        .set_str("replay.redis_url", "redis://guard:hunter2@127.0.0.1:6379")
        .toml();
    let file = ConfigFile::new(&text);
    let env = [("HTI_GUARD_LAUNCH__AUDIENCE", "Device/from-env")];

    let text = check(&file, &["--offline"], &env).await;
    assert_eq!(text.code(), Some(0), "{text}");
    let from_file = format!("file {}", file.path());
    assert!(text.has(&format!("configuration ({from_file})")), "{text}");
    let line = text.line("keys.max_stale");
    assert!(line.contains("2h") && line.ends_with(&from_file), "{line}");
    let line = text.line("launch.audience");
    assert!(
        line.contains("Device/from-env") && line.ends_with("env HTI_GUARD_LAUNCH__AUDIENCE"),
        "{line}"
    );
    let line = text.line("replay.max_entries");
    assert!(
        line.contains("1000000") && line.ends_with("default"),
        "{line}"
    );
    let line = text.line("issuers");
    assert!(line.ends_with(&from_file), "{line}");
    let line = text.line("replay.redis_url");
    assert!(line.contains("redis://guard:***@127.0.0.1:6379"), "{line}");
    assert!(!text.has("hunter2"), "a password is printed: {text}");

    let report = check(&file, &["--offline", "--json"], &env).await;
    assert_eq!(report.code(), Some(0), "{report}");
    assert!(!report.stdout.contains("hunter2"), "{report}");
    let report = report.json();
    let values = &report["config"]["values"];
    assert_eq!(report["config"]["file"], json!(file.path()));
    assert_eq!(
        values["keys.max_stale"],
        json!({"value": "2h", "source": "file", "file": file.path()})
    );
    assert_eq!(
        values["launch.audience"],
        json!({"value": ["Device/from-env"], "source": "env",
               "variable": "HTI_GUARD_LAUNCH__AUDIENCE"})
    );
    assert_eq!(
        values["replay.max_entries"],
        json!({"value": 1_000_000, "source": "default"})
    );
    assert_eq!(values["issuers"]["source"], json!("file"));
    assert_eq!(values["issuers"]["value"][0]["jwks_url"], json!(jwks.url()));
    assert_eq!(
        values["tls.cert_file"],
        json!({"value": null, "source": "default"})
    );
    assert_eq!(jwks.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_fetches_nothing() {
    let jwks = JwksServer::start(&[mint::shared_key(mint::Alg::RS256)]).await;
    let dead = closed_url();
    let text = config(&jwks.url()).issuer(&unique_issuer(), &dead).toml();
    let file = ConfigFile::new(&text);

    let text = check(&file, &["--offline"], &[]).await;
    assert_eq!(text.code(), Some(0), "{text}");
    assert!(text.has("not fetched (--offline)"), "{text}");
    assert!(!text.has("! "), "{text}");
    assert!(
        text.stdout
            .ends_with("result: configuration valid (--offline: key sets not fetched)\n"),
        "{text}"
    );
    let report = check(&file, &["--offline", "--json"], &[]).await;
    assert_eq!(report.code(), Some(0), "{report}");
    let report = report.json();
    assert_eq!(report["offline"], json!(true));
    assert_eq!(report["usable"], json!(true));
    assert_eq!(report["issuers"][1]["fetched"], json!(false));
    assert_eq!(report["issuers"][1]["usable"], Value::Null);
    assert_eq!(jwks.hits(), 0, "--offline fetches nothing");

    // Without --offline the dead issuer makes the whole set unusable.
    let report = check(&file, &["--json"], &[]).await;
    assert_eq!(report.code(), Some(1), "{report}");
    let report = report.json();
    assert_eq!(report["issuers"][0]["usable"], json!(true));
    assert_eq!(report["issuers"][1]["usable"], json!(false));
    assert_eq!(jwks.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configuration_error_exits_2_and_prints_no_report() {
    let file = ConfigFile::new(
        &config("http://127.0.0.1:9/jwks")
            .set_str("keys.refresh_min", "soon")
            .toml(),
    );
    let finished = check(&file, &["--json"], &[]).await;
    assert_eq!(finished.code(), Some(2), "{finished}");
    assert!(finished.stdout.is_empty(), "{finished}");
    assert!(finished.stderr.contains("keys.refresh_min"), "{finished}");
}

/// A module signing key (PEM in `dir`) and its JWKS served where a mock auth server can
/// fetch it, as the running guard would serve it.
async fn module_key(dir: &TempDir) -> (PathBuf, JwksServer) {
    let key =
        hti_guard::jose::sign::SigningKey::generate(hti_guard::jose::Alg::RS512, 2048).unwrap();
    let path = dir.write("module.pem", key.to_pem().unwrap());
    let jwks =
        JwksServer::start_document(key.jwks(&key.thumbprint(), Some(hti_guard::jose::Alg::RS512)))
            .await;
    (path, jwks)
}

fn introspection_config(client_id: &str, key: &std::path::Path, fhir_base: &str) -> String {
    GuardBuilder::new("http://127.0.0.1:9")
        .issuer_introspected(&unique_issuer())
        .set_str("module.client_id", client_id)
        .set(
            "module.signing_key_files",
            &format!("[{}]", toml_str(key.to_str().unwrap())),
        )
        .set_str("introspection.fhir_base", fhir_base)
        .set_str("introspection.timeout", "2s")
        .toml()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_probes_discovery_and_the_introspection_endpoint() {
    let keys = TempDir::new();
    let (key, module_jwks) = module_key(&keys).await;
    let auth = AuthServer::start("module-7", Vec::new()).await;
    auth.set_guard_jwks_url(&module_jwks.url());

    let file = ConfigFile::new(&introspection_config("module-7", &key, &auth.fhir_base()));
    let text = check(&file, &[], &[]).await;
    assert_eq!(text.code(), Some(0), "{text}");
    assert!(text.has("introspection  (usable)"), "{text}");
    assert!(
        text.line("discovery").contains(&format!(
            "{}/.well-known/smart-configuration",
            auth.fhir_base()
        )),
        "{text}"
    );
    assert!(
        text.line("endpoint")
            .contains(&auth.introspection_endpoint()),
        "{text}"
    );
    assert!(text.line("answer").contains("active: false"), "{text}");
    assert_eq!(auth.discoveries(), 1);
    assert_eq!(auth.introspections(), 1);
    assert!(
        auth.assertion_failures().is_empty(),
        "{:?}",
        auth.assertion_failures()
    );

    // A client id the auth server does not expect: the assertion is refused, exit 1.
    let file = ConfigFile::new(&introspection_config(
        "someone-else",
        &key,
        &auth.fhir_base(),
    ));
    let json = check(&file, &["--json"], &[]).await;
    assert_eq!(json.code(), Some(1), "{json}");
    let report = json.json();
    assert_eq!(report["introspection"]["usable"], false);
    assert_eq!(
        report["introspection"]["problems"][0]["kind"],
        "assertion_refused"
    );
    assert_eq!(auth.introspections(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_refuses_discovered_endpoints_over_http_elsewhere() {
    let keys = TempDir::new();
    let (key, module_jwks) = module_key(&keys).await;
    let auth = AuthServer::start("module-7", Vec::new()).await;
    let elsewhere = AuthServer::start("module-7", Vec::new()).await;
    auth.set_guard_jwks_url(&module_jwks.url());
    elsewhere.set_guard_jwks_url(&module_jwks.url());
    auth.set_discovery_document(json!({
        "introspection_endpoint": elsewhere.introspection_endpoint(),
        "token_endpoint": elsewhere.token_endpoint(),
    }));
    let file = ConfigFile::new(&introspection_config("module-7", &key, &auth.fhir_base()));
    let text = check(&file, &[], &[]).await;
    assert_eq!(text.code(), Some(1), "{text}");
    assert!(text.has("introspection  (NOT usable)"), "{text}");
    assert!(text.has("plain http on another origin"), "{text}");
    assert_eq!(elsewhere.introspections(), 0);

    // A discovery document that is not JSON: an answer, but a wrong one, so a problem.
    auth.set_discovery_document(json!("not an object"));
    let json = check(&file, &["--json"], &[]).await;
    assert_eq!(json.code(), Some(1), "{json}");
    assert_eq!(
        json.json()["introspection"]["problems"][0]["kind"],
        "discovery_failed"
    );
    assert_eq!(json.json()["warnings"], json!([]));
}

/// Environment variables for one run of `check`.
type Env = Vec<(&'static str, &'static str)>;

fn warning_kinds(report: &Value) -> Vec<&str> {
    report["warnings"]
        .as_array()
        .expect("a warnings list")
        .iter()
        .map(|w| w["kind"].as_str().unwrap())
        .collect()
}

/// Discovery that does not answer, then an introspection endpoint that answers 500: each is
/// a warning, named, and the exit code stays 0; nothing is called a problem.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_introspection_endpoint_that_does_not_answer_is_a_warning() {
    let keys = TempDir::new();
    let (key, module_jwks) = module_key(&keys).await;
    let closed = closed_origin();
    let file = ConfigFile::new(&introspection_config("module-7", &key, &closed));
    let json = check(&file, &["--json"], &[]).await;
    assert_eq!(json.code(), Some(0), "{json}");
    let report = json.json();
    assert_eq!(warning_kinds(&report), ["introspection_not_answering"]);
    assert_eq!(report["introspection"]["answered"], json!(false));
    assert_eq!(report["introspection"]["problems"], json!([]));
    assert_eq!(report["problems"], json!(0));

    // Discovery answers, the introspection endpoint fails with 500: not an answer either.
    let auth = AuthServer::start("module-7", Vec::new()).await;
    auth.set_guard_jwks_url(&module_jwks.url());
    auth.set_mode(AuthMode::Error500);
    let file = ConfigFile::new(&introspection_config("module-7", &key, &auth.fhir_base()));
    let text = check(&file, &[], &[]).await;
    assert_eq!(text.code(), Some(0), "{text}");
    assert!(
        text.has("introspection  (did not answer: see the warnings)"),
        "{text}"
    );
    assert!(
        text.has("  ~ introspection_not_answering: the introspection endpoint does not answer"),
        "{text}"
    );
    assert!(text.stdout.ends_with("; 1 warning\n"), "{text}");
    assert!(!text.has("! "), "no problem is marked: {text}");
    assert_eq!((auth.discoveries(), auth.introspections()), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_check_does_not_probe_introspection() {
    let keys = TempDir::new();
    let (key, _module_jwks) = module_key(&keys).await;
    let auth = AuthServer::start("module-7", Vec::new()).await;
    let file = ConfigFile::new(&introspection_config("module-7", &key, &auth.fhir_base()));
    let json = check(&file, &["--offline", "--json"], &[]).await;
    assert_eq!(json.code(), Some(0), "{json}");
    assert_eq!(json.json()["introspection"], Value::Null);
    assert_eq!(auth.discoveries() + auth.introspections(), 0);
}

/// A configuration the guard starts with, in text and JSON: each warning when it applies,
/// none when it does not, and the exit code 0 throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_warns_about_what_bites_later() {
    const SECRET: &str = "c2Vzc2lvbi1zZWNyZXQtZm9yLXRoZS10ZXN0cy0wMTIzNDU2Nzg5";
    let clean = config("http://127.0.0.1:9/jwks");
    let sessions = clean.clone().set("session.enabled", "true");
    let placeholder = GuardBuilder::new("http://127.0.0.1:9").issuer(
        "https://portal.example.org",
        "https://portal.example.org/.well-known/jwks.json",
    );
    let cases: Vec<(&str, GuardBuilder, Env, Vec<&str>)> = vec![
        ("nothing to warn about", clean.clone(), vec![], vec![]),
        (
            "sessions with a secret",
            sessions.clone().set_str("session.secret", SECRET),
            vec![],
            vec![],
        ),
        (
            "sessions without a secret",
            sessions.clone(),
            vec![],
            vec!["session_secret_random"],
        ),
        (
            "the example's issuer",
            placeholder,
            vec![],
            vec!["placeholder_issuer"],
        ),
        (
            "one replica",
            clean.clone(),
            vec![("HTI_GUARD_REPLICAS", "1")],
            vec![],
        ),
        (
            "three replicas on the memory store",
            clean.clone(),
            vec![("HTI_GUARD_REPLICAS", "3")],
            vec!["memory_store_replicas"],
        ),
        (
            "three replicas on Redis",
            clean
                .clone()
                .set_str("replay.store", "redis")
                .set_str("replay.redis_url", "redis://127.0.0.1:9"),
            vec![("HTI_GUARD_REPLICAS", "3")],
            vec![],
        ),
        (
            "all at once",
            sessions.clone(),
            vec![("HTI_GUARD_REPLICAS", "2")],
            vec!["session_secret_random", "memory_store_replicas"],
        ),
    ];
    for (case, builder, env, expected) in cases {
        let file = ConfigFile::new(&builder.toml());
        let json = check(&file, &["--offline", "--json"], &env).await;
        assert_eq!(json.code(), Some(0), "{case}: {json}");
        assert_eq!(warning_kinds(&json.json()), expected, "{case}: {json}");
        let text = check(&file, &["--offline"], &env).await;
        assert_eq!(text.code(), Some(0), "{case}: {text}");
        for kind in &expected {
            assert!(text.has(&format!("  ~ {kind}: ")), "{case}: {text}");
        }
        let ending = match expected.len() {
            0 => "key sets not fetched)\n".to_string(),
            1 => "; 1 warning\n".to_string(),
            n => format!("; {n} warnings\n"),
        };
        assert!(text.stdout.ends_with(&ending), "{case}: {text}");
        assert_eq!(
            text.has("warnings (they do not"),
            !expected.is_empty(),
            "{case}"
        );
    }
}

/// An unknown key names the nearest known one, as the file or the environment spells it;
/// nothing close, no guess.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_keys_get_a_did_you_mean() {
    let good = config("http://127.0.0.1:9/jwks");
    let cases: Vec<(GuardBuilder, Env, &str)> = vec![
        (
            good.clone().set_str("launch.audiense", "Device/2"),
            vec![],
            "launch.audiense: unknown field",
        ),
        (
            good.clone().set_str("keys.refresh_mni", "1m"),
            vec![],
            "did you mean `keys.refresh_min`?",
        ),
        (
            good.clone(),
            vec![("HTI_GUARD_LAUNCH__MAX_LIFETME", "5m")],
            "did you mean `launch.max_lifetime` (HTI_GUARD_LAUNCH__MAX_LIFETIME)?",
        ),
        (
            good.clone(),
            vec![("HTI_GUARD_SESSION_ENABLED", "true")],
            "did you mean `session.enabled` (HTI_GUARD_SESSION__ENABLED)?",
        ),
    ];
    for (builder, env, expected) in cases {
        let file = ConfigFile::new(&builder.toml());
        let finished = check(&file, &["--offline"], &env).await;
        assert_eq!(finished.code(), Some(2), "{finished}");
        assert!(finished.stderr.contains(expected), "{expected}: {finished}");
        assert!(finished.stdout.is_empty(), "{finished}");
    }
    let file = ConfigFile::new(&good.clone().set_str("launch.audiense", "Device/2").toml());
    let finished = check(&file, &["--offline"], &[]).await;
    assert!(
        finished.stderr.contains("did you mean `launch.audience`?"),
        "{finished}"
    );
    let file = ConfigFile::new(&good.set_str("launch.colour", "blue").toml());
    let finished = check(&file, &["--offline"], &[]).await;
    assert_eq!(finished.code(), Some(2), "{finished}");
    assert!(finished.stderr.contains("launch.colour"), "{finished}");
    assert!(!finished.stderr.contains("did you mean"), "{finished}");
}

/// A SHOF auth server that does not answer: a warning, exit 0; with `--offline`, nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shof_auth_server_that_does_not_answer_is_a_warning() {
    let keys = TempDir::new();
    let (key, _module_jwks) = module_key(&keys).await;
    let text = GuardBuilder::new("http://127.0.0.1:9")
        .set_str("module.client_id", "module-7")
        .set(
            "module.signing_key_files",
            &format!("[{}]", toml_str(key.to_str().unwrap())),
        )
        .set("session.enabled", "true")
        .set_str(
            "session.secret",
            "c2Vzc2lvbi1zZWNyZXQtZm9yLXRoZS10ZXN0cy0wMTIzNDU2Nzg5",
        )
        .set("shof.enabled", "true")
        .set_str("shof.fhir_base", &format!("{}/fhir", closed_origin()))
        .set_str(
            "shof.redirect_uri",
            "https://module.example/hti-guard/callback",
        )
        .set_str("shof.timeout", "2s")
        .toml();
    let file = ConfigFile::new(&text);
    let json = check(&file, &["--json"], &[]).await;
    assert_eq!(json.code(), Some(0), "{json}");
    let report = json.json();
    assert_eq!(warning_kinds(&report), ["auth_server_not_answering"]);
    assert_eq!(report["shof"]["answered"], json!(false));
    assert_eq!(report["shof"]["problems"], json!([]));
    let text = check(&file, &[], &[]).await;
    assert!(
        text.has("shof auth server  (did not answer: see the warnings)"),
        "{text}"
    );
    assert!(
        text.has("  ~ auth_server_not_answering: the SHOF auth server does not answer"),
        "{text}"
    );
    let offline = check(&file, &["--offline", "--json"], &[]).await;
    assert_eq!(offline.code(), Some(0), "{offline}");
    assert_eq!(warning_kinds(&offline.json()), Vec::<&str>::new());
}
