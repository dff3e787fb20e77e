//! Koppeltaal mode: issuers verified by token introspection against a mock auth server that
//! really checks the guard's client assertion (fetched from the guard's own JWKS path), the
//! module's JWKS, discovery, and every new reason, with nothing forwarded on rejection.

mod common;

use std::time::Duration;

use common::mint::{self, Alg as MintAlg};
use common::*;
use serde_json::{Value, json};

const LIMIT: Duration = Duration::from_secs(30);
const CLIENT_ID: &str = "module-client-42";
const JWKS_PATH: &str = "/hti/module-keys";

struct Kt {
    auth: AuthServer,
    upstream: Upstream,
    portal: SigningKey,
    iss: String,
    guard: Guard,
    client: reqwest::Client,
}

impl Kt {
    async fn start(configure: impl FnOnce(GuardBuilder, &AuthServer) -> GuardBuilder) -> Kt {
        let portal = SigningKey::generate(MintAlg::RS512);
        let auth = AuthServer::start(CLIENT_ID, vec![portal.jwk()]).await;
        let upstream = Upstream::start().await;
        let iss = unique_issuer();
        let key_file = module_key_file();
        let builder = GuardBuilder::new(&upstream.url())
            .issuer_introspected(&iss)
            .set_str("module.client_id", CLIENT_ID)
            .set(
                "module.signing_key_files",
                &format!("[{}]", toml_str(key_file.to_str().unwrap())),
            )
            .set_str("module.jwks_path", JWKS_PATH)
            .set_str("introspection.timeout", "500ms");
        let builder = configure(builder, &auth);
        let guard = builder.start().await;
        auth.set_guard_jwks_url(&guard.url(JWKS_PATH));
        Kt {
            auth,
            upstream,
            portal,
            iss,
            guard,
            client: client(),
        }
    }

    /// The endpoints configured directly.
    async fn configured() -> Kt {
        Kt::start(|b, auth| {
            b.set_str("introspection.endpoint", &auth.introspection_endpoint())
                .set_str("introspection.token_endpoint", &auth.token_endpoint())
        })
        .await
    }

    fn token(&self) -> String {
        self.portal.token(&mint::hti_claims(&self.iss, AUDIENCE))
    }

    async fn launch(&self, token: &str) -> reqwest::Response {
        let fields = [("launch", token), ("iss", "https://fhir.example/fhir")];
        post_form(&self.client, &self.guard.url("/launch"), &fields).await
    }

    async fn metrics(&self) -> String {
        self.guard.metrics().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_active_token_is_forwarded_with_its_claims() {
    let kt = Kt::configured().await;
    let token = kt.token();
    let echo = expect_echo(kt.launch(&token).await).await;
    assert_eq!(echo.header("x-hti-iss"), Some(kt.iss.as_str()));
    assert_eq!(echo.header("x-hti-sub"), Some("Practitioner/123"));
    assert_eq!(
        echo.header("x-hti-jti"),
        mint::payload_of(&token)["jti"].as_str()
    );
    assert_eq!(kt.auth.introspections(), 1);
    assert!(
        kt.auth.assertion_failures().is_empty(),
        "{:?}",
        kt.auth.assertion_failures()
    );
    // The guard's own single-use check still applies after the auth server said active.
    expect_rejection(kt.launch(&token).await, 401, "replayed").await;
    assert_eq!(kt.upstream.hits(), 1);
    let metrics = kt.metrics().await;
    assert!(
        metrics.contains(r#"hti_guard_introspection_requests_total{result="active"} 2"#),
        "{metrics}"
    );
    assert!(metrics.contains("hti_guard_introspection_duration_seconds_count 2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_module_jwks_is_served_at_its_path() {
    let kt = Kt::configured().await;
    let response = kt.client.get(kt.guard.url(JWKS_PATH)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let cache = response.headers()["cache-control"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(cache.contains("max-age=300"), "{cache}");
    let jwks: Value = response.json().await.unwrap();
    let key = &jwks["keys"][0];
    assert_eq!(key["use"], "sig");
    assert_eq!(key["alg"], "RS512");
    assert_eq!(key["kty"], "RSA");
    assert_eq!(
        key["kid"].as_str().unwrap().len(),
        43,
        "the RFC 7638 thumbprint"
    );
    assert_eq!(kt.upstream.hits(), 0, "served by the guard, not the app");
    // No fixed well-known path: others go to the app.
    kt.client
        .get(kt.guard.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(kt.upstream.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_are_discovered_from_the_fhir_base() {
    let kt = Kt::start(|b, auth| b.set_str("introspection.fhir_base", &auth.fhir_base())).await;
    assert!(kt.auth.discoveries() >= 1);
    expect_echo(kt.launch(&kt.token()).await).await;
    assert!(
        kt.auth.assertion_failures().is_empty(),
        "{:?}",
        kt.auth.assertion_failures()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inactive_token_is_introspection_inactive() {
    let kt = Kt::configured().await;
    // Signed by a key the auth server does not know: it answers active false.
    let stranger = SigningKey::generate(MintAlg::RS512);
    let token = stranger.token(&mint::hti_claims(&kt.iss, AUDIENCE));
    expect_rejection(kt.launch(&token).await, 401, "introspection_inactive").await;
    kt.auth.set_mode(AuthMode::Inactive);
    expect_rejection(kt.launch(&kt.token()).await, 401, "introspection_inactive").await;
    assert_eq!(kt.upstream.hits(), 0);
    assert!(
        kt.metrics()
            .await
            .contains(r#"hti_guard_introspection_requests_total{result="inactive"} 2"#)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_auth_server_is_introspection_unavailable() {
    let kt = Kt::configured().await;
    for mode in [AuthMode::Error500, AuthMode::NotJson, AuthMode::Hang] {
        kt.auth.set_mode(mode);
        expect_rejection(
            kt.launch(&kt.token()).await,
            503,
            "introspection_unavailable",
        )
        .await;
    }
    assert_eq!(kt.upstream.hits(), 0);
    assert!(
        kt.metrics()
            .await
            .contains(r#"hti_guard_introspection_requests_total{result="error"} 3"#)
    );
    // And back: a fresh token is accepted again.
    kt.auth.set_mode(AuthMode::Verify);
    expect_echo(kt.launch(&kt.token()).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_client_assertion_is_introspection_unavailable() {
    // The auth server expects the token endpoint as audience; send it the introspection
    // endpoint instead.
    let kt = Kt::start(|b, auth| {
        b.set_str("introspection.endpoint", &auth.introspection_endpoint())
            .set_str("introspection.assertion_audience", "introspection_endpoint")
    })
    .await;
    expect_rejection(
        kt.launch(&kt.token()).await,
        503,
        "introspection_unavailable",
    )
    .await;
    assert_eq!(kt.upstream.hits(), 0);
    let failures = kt.auth.assertion_failures();
    assert_eq!(failures.len(), 1);
    assert!(
        failures[0].contains("aud") || failures[0].to_lowercase().contains("audience"),
        "{failures:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_issuers_are_not_introspected_unless_all_issuers() {
    let kt = Kt::configured().await;
    let other = kt.portal.token(&mint::hti_claims(
        "https://another-portal.example",
        AUDIENCE,
    ));
    expect_rejection(kt.launch(&other).await, 401, "unknown_issuer").await;
    assert_eq!(
        kt.auth.introspections(),
        0,
        "no call out for an unknown issuer"
    );

    let kt = Kt::start(|b, auth| {
        b.set_str("introspection.endpoint", &auth.introspection_endpoint())
            .set_str("introspection.token_endpoint", &auth.token_endpoint())
            .set("introspection.all_issuers", "true")
    })
    .await;
    let other = kt.portal.token(&mint::hti_claims(
        "https://another-portal.example",
        AUDIENCE,
    ));
    let echo = expect_echo(kt.launch(&other).await).await;
    assert_eq!(
        echo.header("x-hti-iss"),
        Some("https://another-portal.example")
    );
    let metrics = kt.metrics().await;
    assert!(
        metrics.contains(
            r#"hti_guard_launches_total{issuer="unknown",reason="none",result="accepted"} 1"#
        ),
        "a portal the guard does not know is labelled unknown: {metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn introspected_claims_still_meet_the_hti_rules() {
    let kt = Kt::configured().await;
    kt.auth.override_claim("aud", json!("Device/someone-else"));
    expect_rejection(kt.launch(&kt.token()).await, 401, "wrong_audience").await;
    kt.auth.override_claim("aud", json!(AUDIENCE));
    kt.auth.override_claim("exp", json!(mint::now() + 3600));
    expect_rejection(kt.launch(&kt.token()).await, 401, "lifetime_too_long").await;
    kt.auth.override_claim("exp", json!(mint::now() + 200));
    kt.auth.override_claim("sub", json!("not-a-reference"));
    expect_rejection(kt.launch(&kt.token()).await, 401, "invalid_claim").await;
    assert_eq!(kt.upstream.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn none_and_hmac_are_refused_before_any_call() {
    let kt = Kt::configured().await;
    let claims = mint::hti_claims(&kt.iss, AUDIENCE);
    let none = mint::unsigned_token(&json!({"alg": "none"}), &claims, b"");
    expect_rejection(kt.launch(&none).await, 401, "unsupported_algorithm").await;
    let hs = mint::hs_token("HS256", "k", &claims, b"secret");
    expect_rejection(kt.launch(&hs).await, 401, "unsupported_algorithm").await;
    assert_eq!(kt.auth.introspections(), 0);
    assert_eq!(kt.upstream.hits(), 0);
}

/// A module decryption key (RSA, PKCS#8 PEM) in a temp file, as a TOML key-file entry.
fn decryption_key_entry(kid: &str) -> String {
    let path = module_key_file();
    format!(
        "[{{ file = {}, kid = {} }}]",
        toml_str(path.to_str().unwrap()),
        toml_str(kid)
    )
}

/// The module's published encryption key, as a portal would fetch it.
async fn published_enc_key(client: &reqwest::Client, guard: &Guard) -> Value {
    let jwks: Value = client
        .get(guard.url(JWKS_PATH))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["use"] == "enc")
        .cloned()
        .expect("an encryption key in the module's JWKS")
}

fn encrypt(jwk: &Value, kid: &str, enc: &str, jws: &str) -> String {
    hti_guard::jose::jwe::encrypt_for(jwk, kid, "RSA-OAEP", enc, jws).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_launches_work_with_jwks_issuers() {
    let fx = Fixture::start_with(|b| {
        b.set(
            "module.decryption_key_files",
            &decryption_key_entry("enc-1"),
        )
        .set_str("module.jwks_path", JWKS_PATH)
    })
    .await;
    let jwk = published_enc_key(&fx.client, &fx.guard).await;
    assert_eq!(jwk["kid"], "enc-1");
    assert_eq!(jwk["alg"], "RSA-OAEP");
    for enc in ["A128CBC-HS256", "A256CBC-HS512", "A128GCM", "A256GCM"] {
        let jws = fx.good_token();
        let echo = expect_echo(fx.launch(&encrypt(&jwk, "enc-1", enc, &jws)).await).await;
        assert_eq!(
            echo.header("x-hti-jti"),
            mint::payload_of(&jws)["jti"].as_str(),
            "{enc}"
        );
    }
    let jws = fx.good_token();
    // A kid the module does not have, and a tampered ciphertext: undecryptable.
    fx.expect_refused(
        &encrypt(&jwk, "enc-2", "A128GCM", &jws),
        401,
        "undecryptable",
    )
    .await;
    let good = encrypt(&jwk, "enc-1", "A128GCM", &jws);
    let mut parts: Vec<String> = good.split('.').map(str::to_string).collect();
    parts[3] = mint::b64(&mint::random_bytes(parts[3].len() * 3 / 4));
    fx.expect_refused(&parts.join("."), 401, "undecryptable")
        .await;
    // The jti was not burnt by the failed attempts.
    expect_echo(fx.launch(&good).await).await;
    assert_eq!(fx.upstream.hits(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_launches_without_a_decryption_key_are_undecryptable() {
    let fx = Fixture::start().await;
    let other =
        hti_guard::jose::sign::SigningKey::generate(hti_guard::jose::Alg::RS256, 2048).unwrap();
    let mut jwk = other.public_jwk("x", None);
    jwk["use"] = json!("enc");
    let token = encrypt(&jwk, "x", "A256GCM", &fx.good_token());
    fx.expect_refused(&token, 401, "undecryptable").await;
    assert_eq!(fx.upstream.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_launches_work_with_introspection() {
    let kt = Kt::start(|b, auth| {
        b.set_str("introspection.endpoint", &auth.introspection_endpoint())
            .set_str("introspection.token_endpoint", &auth.token_endpoint())
            .set(
                "module.decryption_key_files",
                &decryption_key_entry("enc-kt"),
            )
    })
    .await;
    let jwk = published_enc_key(&kt.client, &kt.guard).await;
    let jws = kt.token();
    let echo = expect_echo(
        kt.launch(&encrypt(&jwk, "enc-kt", "A128CBC-HS256", &jws))
            .await,
    )
    .await;
    assert_eq!(
        echo.header("x-hti-jti"),
        mint::payload_of(&jws)["jti"].as_str()
    );
    assert_eq!(
        kt.auth.introspections(),
        1,
        "the auth server saw the inner token"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_the_guard_refuses_is_never_sent_to_the_auth_server() {
    let kt = Kt::configured().await;
    let now = mint::now();
    let mut wrong_aud = mint::hti_claims(&kt.iss, "Device/someone-else");
    let mut expired = mint::hti_claims(&kt.iss, AUDIENCE);
    expired["iat"] = json!(now - 400);
    expired["exp"] = json!(now - 100);
    let mut no_resource = mint::hti_claims(&kt.iss, AUDIENCE);
    no_resource.as_object_mut().unwrap().remove("resource");
    let mut short_jti = mint::hti_claims(&kt.iss, AUDIENCE);
    short_jti["jti"] = json!("short");
    let mut old_version = mint::hti_claims(&kt.iss, AUDIENCE);
    old_version["hti-version"] = json!("1.1");
    let mut long_lived = mint::hti_claims(&kt.iss, AUDIENCE);
    long_lived["exp"] = json!(now + 900);
    wrong_aud["sub"] = json!("Patient/1");
    for (claims, reason) in [
        (&wrong_aud, "wrong_audience"),
        (&expired, "expired"),
        (&no_resource, "missing_claim"),
        (&short_jti, "invalid_claim"),
        (&old_version, "invalid_claim"),
        (&long_lived, "lifetime_too_long"),
    ] {
        expect_rejection(kt.launch(&kt.portal.token(claims)).await, 401, reason).await;
    }
    assert_eq!(
        kt.auth.introspections(),
        0,
        "the auth server never heard of a token the guard refuses"
    );
    assert_eq!(kt.upstream.hits(), 0);
    // A good one still goes there, once.
    expect_echo(kt.launch(&kt.token()).await).await;
    assert_eq!(kt.auth.introspections(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_all_issuers_a_refused_token_is_not_sent_either() {
    let kt = Kt::start(|b, auth| {
        b.set_str("introspection.endpoint", &auth.introspection_endpoint())
            .set_str("introspection.token_endpoint", &auth.token_endpoint())
            .set("introspection.all_issuers", "true")
    })
    .await;
    let mut claims = mint::hti_claims("https://another-portal.example", "Device/other");
    expect_rejection(
        kt.launch(&kt.portal.token(&claims)).await,
        401,
        "wrong_audience",
    )
    .await;
    // An issuer no configuration vouched for, with a line break: refused, not asked about.
    claims["aud"] = json!(AUDIENCE);
    claims["iss"] = json!("https://another-portal.example\r\nX-HTI-Sub: Patient/1");
    expect_rejection(
        kt.launch(&kt.portal.token(&claims)).await,
        401,
        "invalid_claim",
    )
    .await;
    assert_eq!(kt.auth.introspections(), 0);
    assert_eq!(kt.upstream.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_naming_another_iss_or_jti_is_refused() {
    let kt = Kt::configured().await;
    let unsafe_iss = format!("{}\nX-HTI-Sub: Patient/1", kt.iss);
    let cases = [
        ("iss", json!(unsafe_iss)),
        ("iss", json!("https://another-portal.example")),
        ("iss", json!(format!("{} ", kt.iss))),
        ("jti", json!(mint::random_jti())),
    ];
    for (name, value) in cases {
        kt.auth.override_claim(name, value.clone());
        expect_rejection(kt.launch(&kt.token()).await, 401, "invalid_claim").await;
        kt.auth.override_claim(name, Value::Null);
        // Null is a value too: an answer with `"iss": null` is not the token's either.
        expect_rejection(kt.launch(&kt.token()).await, 401, "invalid_claim").await;
        let mut token_claims = mint::hti_claims(&kt.iss, AUDIENCE);
        // Back to an answer that repeats the token's own value.
        token_claims[name] = match name {
            "iss" => json!(kt.iss),
            _ => token_claims["jti"].clone(),
        };
        kt.auth.override_claim(name, token_claims[name].clone());
        expect_echo(kt.launch(&kt.portal.token(&token_claims)).await).await;
    }
    assert_eq!(kt.upstream.hits(), 4, "only the four good launches");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_answers_other_claims_must_be_header_safe_too() {
    let kt = Kt::configured().await;
    for (name, value) in [
        (
            "definition",
            json!("https://x.example/ActivityDefinition/1\r\nX: y"),
        ),
        ("patient", json!("Patient/1\n")),
        ("intent", json!("plan\u{0}")),
    ] {
        kt.auth.override_claim(name, value);
        expect_rejection(kt.launch(&kt.token()).await, 401, "invalid_claim").await;
        kt.auth.override_claim(name, json!(null));
    }
    assert_eq!(kt.upstream.hits(), 0);
    assert_eq!(kt.auth.introspections(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_assertion_is_issued_a_few_seconds_back() {
    let kt = Kt::configured().await;
    let before = mint::now();
    expect_echo(kt.launch(&kt.token()).await).await;
    let after = mint::now();
    let assertions = kt.auth.assertions();
    assert_eq!(assertions.len(), 1);
    let iat = assertions[0]["iat"].as_i64().expect("iat");
    let exp = assertions[0]["exp"].as_i64().expect("exp");
    assert!(
        iat <= before - 4 && iat >= before - 30,
        "iat {iat} lies a few seconds before {before}"
    );
    assert!(exp > after && exp <= before + 300, "exp {exp}");
    assert!(exp - iat <= 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovered_endpoints_over_http_on_another_origin_are_not_used() {
    // Another server on another loopback port, plain http: it would get the token and a
    // client assertion if the guard followed the document.
    let elsewhere = AuthServer::start(CLIENT_ID, Vec::new()).await;
    let kt = Kt::start(|b, auth| {
        auth.set_discovery_document(json!({
            "issuer": auth.base(),
            "introspection_endpoint": elsewhere.introspection_endpoint(),
            "token_endpoint": auth.token_endpoint(),
        }));
        b.set_str("introspection.fhir_base", &auth.fhir_base())
            .no_wait_ready()
    })
    .await;
    let readyz = kt.client.get(kt.guard.admin_url("/readyz"));
    let deadline = tokio::time::Instant::now() + LIMIT;
    let body = loop {
        let response = readyz.try_clone().unwrap().send().await.unwrap();
        let status = response.status();
        let body = response.text().await.unwrap();
        if kt.auth.discoveries() >= 1 && body.contains("plain http") {
            assert_eq!(status, 503, "{body}");
            break body;
        }
        assert!(tokio::time::Instant::now() < deadline, "readyz: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(body.contains("introspection_endpoint"), "{body}");
    assert!(body.contains("starting, awaiting"), "{body}");
    expect_rejection(
        kt.launch(&kt.token()).await,
        503,
        "introspection_unavailable",
    )
    .await;
    assert_eq!(
        elsewhere.introspections(),
        0,
        "the other origin heard nothing"
    );
    assert_eq!(kt.auth.introspections(), 0);
    assert_eq!(kt.upstream.hits(), 0);
}
