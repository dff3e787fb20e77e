//! Signatures and keys: every algorithm, refused algorithms, key selection, and the per-issuer
//! key cache (rotation, unknown-kid refetch and its cooldown, stale keys, unavailable keys),
//! observed through a mock JWKS server that counts hits.

mod common;

use std::time::Duration;

use common::mint::{self, now};
use common::*;
use serde_json::{Value, json};

const LIMIT: Duration = Duration::from_secs(30);

/// A fixture whose JWKS serves these keys, with the default settings.
async fn serving(keys: &[&SigningKey]) -> Fixture {
    Fixture::with_jwks(JwksServer::start(keys).await, |b| b).await
}

/// A fixture whose JWKS serves this document, with the default settings.
async fn serving_document(document: Value) -> Fixture {
    Fixture::with_jwks(JwksServer::start_document(document).await, |b| b).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_algorithm_is_accepted() {
    let keys: Vec<&SigningKey> = Alg::ALL.iter().map(|alg| mint::shared_key(*alg)).collect();
    let fx = serving(&keys).await;
    for key in &keys {
        let response = fx.launch(&fx.token_by(key)).await;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        assert_eq!(status, 200, "{}: {text}", key.alg.name());
    }
    assert_eq!(fx.upstream.hits(), Alg::ALL.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_without_alg_and_use_are_usable() {
    let rsa = mint::shared_key(Alg::RS256);
    let ec = mint::shared_key(Alg::ES384);
    let fx = serving_document(json!({"keys": [rsa.jwk_bare(), ec.jwk_bare()]})).await;
    for key in [rsa, ec] {
        assert_eq!(
            outcome(fx.launch(&fx.token_by(key)).await).await,
            "accepted",
            "{}",
            key.alg.name()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_algorithm() {
    let fx = Fixture::start().await;
    let claims = fx.claims();
    let secret = fx.key.jwk()["n"].as_str().unwrap().as_bytes().to_vec();
    let cases = vec![
        (
            "none",
            mint::unsigned_token(&json!({"alg": "none", "kid": fx.key.kid}), &claims, b""),
        ),
        (
            "none without kid",
            mint::unsigned_token(&json!({"alg": "none"}), &claims, b""),
        ),
        (
            "None",
            mint::unsigned_token(&json!({"alg": "None", "kid": fx.key.kid}), &claims, b""),
        ),
        (
            "HS256",
            mint::hs_token("HS256", &fx.key.kid, &claims, &secret),
        ),
        (
            "HS384",
            mint::hs_token("HS384", &fx.key.kid, &claims, &secret),
        ),
        (
            "HS512",
            mint::hs_token("HS512", &fx.key.kid, &claims, b"a shared secret"),
        ),
        (
            "unknown alg",
            fx.key
                .token_with_header(&json!({"alg": "RS1024", "kid": fx.key.kid}), &claims),
        ),
        (
            "EdDSA",
            fx.key
                .token_with_header(&json!({"alg": "EdDSA", "kid": fx.key.kid}), &claims),
        ),
    ];
    for (name, token) in cases {
        let response = within(LIMIT, name, fx.launch(&token)).await;
        let status = response.status();
        let body: Value = response.json().await.expect("JSON rejection");
        assert_eq!(status, 401, "{name}: {body}");
        assert_eq!(body["error"], "unsupported_algorithm", "{name}: {body}");
    }
    assert_eq!(fx.upstream.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_algorithm_comes_before_issuer() {
    let fx = Fixture::start().await;
    let mut claims = fx.claims();
    claims["iss"] = json!("https://not-configured.example");
    let token = mint::hs_token("HS256", "any", &claims, b"secret");
    fx.expect_refused(&token, 401, "unsupported_algorithm")
        .await;
    assert_eq!(fx.upstream.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn algorithm_not_in_the_issuers_list() {
    let rsa = mint::shared_key(Alg::RS512);
    let ec = mint::shared_key(Alg::ES256);
    let jwks = JwksServer::start(&[rsa, ec]).await;
    let fx = Fixture::with_jwks(jwks, |b| b.algorithms(&["ES256"])).await;
    let response = fx.launch(&fx.token_by(rsa)).await;
    expect_rejection(response, 401, "unsupported_algorithm").await;
    assert_eq!(fx.upstream.hits(), 0);
    expect_echo(fx.launch(&fx.token_by(ec)).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_kid_is_malformed() {
    let fx = Fixture::start().await;
    let token = fx
        .key
        .token_with_header(&json!({"alg": "RS512", "typ": "JWT"}), &fx.claims());
    fx.expect_refused(&token, 401, "malformed_token").await;
    assert_eq!(fx.upstream.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typ_is_not_required() {
    let fx = Fixture::start().await;
    let token = fx
        .key
        .token_with_header(&json!({"alg": "RS512", "kid": fx.key.kid}), &fx.claims());
    expect_echo(within(LIMIT, "launch", fx.launch(&token)).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_key() {
    let fx = Fixture::start().await;
    let stranger = SigningKey::generate(Alg::RS512);
    let token = stranger.token(&fx.claims());
    fx.expect_refused(&token, 401, "unknown_key").await;
    assert_eq!(
        fx.jwks.hits(),
        2,
        "one startup fetch, one refetch for the unknown kid"
    );
    assert_eq!(fx.upstream.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_signature() {
    let fx = Fixture::start().await;
    let claims = fx.claims();
    let good = fx.token(&claims);

    // Signed by another RSA key under the published kid.
    let stranger = mint::shared_key(Alg::RS256);
    let forged = mint::compact(&fx.key.header(), &claims, |input| {
        stranger.sign_as(Alg::RS512, input)
    });
    // Claims changed after signing.
    let mut tampered_claims = claims.clone();
    tampered_claims["sub"] = json!("Practitioner/999");
    let signature = good.rsplit('.').next().unwrap();
    let tampered = format!(
        "{}.{}.{signature}",
        good.split('.').next().unwrap(),
        mint::b64_json(&tampered_claims)
    );
    // Signature bytes flipped.
    let mut sig_bytes =
        base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, signature)
            .unwrap();
    sig_bytes[10] ^= 0xff;
    let flipped = format!(
        "{}.{}",
        good.rsplit_once('.').unwrap().0,
        mint::b64(&sig_bytes)
    );
    // Signed with the right key but a different RSA padding than the header says.
    let wrong_padding = mint::compact(&fx.key.header(), &claims, |input| {
        fx.key.sign_as(Alg::PS512, input)
    });

    for (name, token) in [
        ("forged", forged),
        ("tampered", tampered),
        ("flipped", flipped),
        ("wrong padding", wrong_padding),
    ] {
        let response = within(LIMIT, name, fx.launch(&token)).await;
        let status = response.status();
        let body: Value = response.json().await.expect("JSON rejection");
        assert_eq!(status, 401, "{name}: {body}");
        assert_eq!(body["error"], "bad_signature", "{name}: {body}");
    }
    assert_eq!(fx.upstream.hits(), 0);
    // None of them burnt the jti.
    expect_echo(within(LIMIT, "good", fx.launch(&good)).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signature_is_checked_before_claims() {
    let fx = Fixture::start().await;
    let mut claims = fx.claims();
    claims["exp"] = json!(now() - 3600);
    claims["aud"] = json!("Device/other");
    let stranger = mint::shared_key(Alg::RS256);
    let forged = mint::compact(&fx.key.header(), &claims, |input| {
        stranger.sign_as(Alg::RS512, input)
    });
    fx.expect_refused(&forged, 401, "bad_signature").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ec_signature_of_other_curve_size_is_bad() {
    let fx_key = mint::shared_key(Alg::ES256);
    let fx = serving(&[fx_key]).await;
    // An ES256 token whose signature is 96 bytes (P-384 size) or DER-encoded-like garbage.
    let claims = fx.claims();
    let long = mint::compact(&fx_key.header(), &claims, |_| mint::random_bytes(96));
    let short = mint::compact(&fx_key.header(), &claims, |_| mint::random_bytes(10));
    for token in [long, short] {
        let reason = outcome(fx.launch(&token).await).await;
        assert!(
            reason == "bad_signature" || reason == "malformed_token",
            "wrong-size ECDSA signature: {reason}"
        );
    }
    assert_eq!(fx.upstream.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_that_do_not_fit_the_algorithm_are_never_used() {
    let rsa = SigningKey::generate(Alg::RS256);
    let p384 = SigningKey::generate(Alg::ES384);
    let enc = SigningKey::generate(Alg::RS512);
    let pinned = SigningKey::generate(Alg::RS384);
    let mut enc_jwk = enc.jwk();
    enc_jwk["use"] = json!("enc");
    let fx =
        serving_document(json!({"keys": [rsa.jwk(), p384.jwk(), enc_jwk, pinned.jwk()]})).await;
    let claims = || fx.claims();
    let cases = vec![
        // An EC token under an RSA key's kid.
        (
            "ES256 with RSA kid",
            mint::compact(
                &json!({"alg": "ES256", "kid": rsa.kid}),
                &claims(),
                |input| mint::shared_key(Alg::ES256).sign(input),
            ),
        ),
        // ES256 under a P-384 key's kid, signed by that key (as ES384 would be).
        (
            "ES256 with P-384 kid",
            mint::compact(
                &json!({"alg": "ES256", "kid": p384.kid}),
                &claims(),
                |input| p384.sign(input),
            ),
        ),
        // RSA under an EC key's kid.
        (
            "RS256 with EC kid",
            mint::compact(
                &json!({"alg": "RS256", "kid": p384.kid}),
                &claims(),
                |input| rsa.sign(input),
            ),
        ),
        // A correctly signed token whose key is published for encryption only.
        ("use enc", enc.token(&claims())),
        // A correctly signed RS512 token whose key is published with alg RS384.
        (
            "alg differs from the key's",
            mint::compact(
                &json!({"alg": "RS512", "kid": pinned.kid}),
                &claims(),
                |input| pinned.sign_as(Alg::RS512, input),
            ),
        ),
    ];
    for (name, token) in cases {
        let reason = outcome(fx.launch(&token).await).await;
        assert_eq!(reason, "unknown_key", "{name}");
    }
    assert_eq!(fx.upstream.hits(), 0);
    // The fitting use of each key works.
    for key in [&rsa, &p384, &pinned] {
        let reason = outcome(fx.launch(&fx.token_by(key)).await).await;
        assert_eq!(reason, "accepted", "{}", key.alg.name());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weak_rsa_keys_are_refused_at_load() {
    let good = mint::shared_key(Alg::RS512);
    let weak = mint::weak_rsa_jwk("weak-1024");
    let fx = serving_document(json!({"keys": [weak, good.jwk()]})).await;
    let token = mint::compact(
        &json!({"alg": "RS256", "kid": "weak-1024"}),
        &fx.claims(),
        |_| mint::random_bytes(128),
    );
    assert_eq!(outcome(fx.launch(&token).await).await, "unknown_key");
    assert_eq!(fx.upstream.hits(), 0);
    // The other key of the same set loaded.
    assert_eq!(
        outcome(fx.launch(&fx.token_by(good)).await).await,
        "accepted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_never_taken_from_the_token() {
    let fx = Fixture::start().await;
    let attacker_key = SigningKey::generate(Alg::RS512);
    let attacker = JwksServer::start(&[&attacker_key]).await;
    let header = json!({
        "alg": "RS512",
        "kid": attacker_key.kid,
        "jku": attacker.url(),
        "x5u": attacker.url(),
        "jwk": attacker_key.jwk(),
    });
    let token = attacker_key.token_with_header(&header, &fx.claims());
    fx.expect_refused(&token, 401, "unknown_key").await;

    // The same under the portal's own kid: the embedded key is not used either.
    let header = json!({
        "alg": "RS512",
        "kid": fx.key.kid,
        "jku": attacker.url(),
        "x5u": attacker.url(),
        "jwk": attacker_key.jwk(),
        "x5c": [mint::b64(&mint::random_bytes(300))],
    });
    let token = attacker_key.token_with_header(&header, &fx.claims());
    fx.expect_refused(&token, 401, "bad_signature").await;
    assert_eq!(fx.upstream.hits(), 0);

    // A genuine token carrying these headers is verified with the portal's key as usual.
    let header =
        json!({"alg": "RS512", "kid": fx.key.kid, "jku": attacker.url(), "x5u": attacker.url()});
    let token = fx.key.token_with_header(&header, &fx.claims());
    expect_echo(within(LIMIT, "genuine", fx.launch(&token)).await).await;
    assert_eq!(
        attacker.hits(),
        0,
        "nothing was fetched from a URL in a token"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_by_max_age_refresh() {
    let old = SigningKey::generate(Alg::RS512);
    let new = SigningKey::generate(Alg::ES256);
    let jwks = JwksServer::start(&[&old]).await;
    jwks.set_cache_control(Some("max-age=1"));
    let fx = Fixture::with_jwks(jwks, |b| {
        b.set_str("keys.refresh_min", "1s")
            .set_str("keys.unknown_kid_cooldown", "1h")
    })
    .await;
    assert_eq!(
        outcome(fx.launch(&fx.token_by(&old)).await).await,
        "accepted"
    );

    // Use up the one unknown-kid refetch of the cooldown, so only the interval can bring keys.
    let stranger = SigningKey::generate(Alg::ES384);
    assert_eq!(
        outcome(fx.launch(&fx.token_by(&stranger)).await).await,
        "unknown_key"
    );

    fx.jwks.set_keys(&[&new]);
    fx.jwks.wait_for_more_hits(1, Duration::from_secs(10)).await;
    // Allow the refreshed set to be swapped in.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        outcome(fx.launch(&fx.token_by(&new)).await).await,
        "accepted"
    );
    assert_eq!(
        outcome(fx.launch(&fx.token_by(&old)).await).await,
        "unknown_key"
    );
    assert_eq!(fx.upstream.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_by_unknown_kid() {
    let old = SigningKey::generate(Alg::RS256);
    let new = SigningKey::generate(Alg::RS256);
    let fx = serving(&[&old]).await;
    assert_eq!(
        outcome(fx.launch(&fx.token_by(&old)).await).await,
        "accepted"
    );
    assert_eq!(fx.jwks.hits(), 1);
    fx.jwks.set_keys(&[&old, &new]);
    assert_eq!(
        outcome(fx.launch(&fx.token_by(&new)).await).await,
        "accepted"
    );
    assert_eq!(
        fx.jwks.hits(),
        2,
        "the unknown kid caused exactly one refetch"
    );
    assert_eq!(
        outcome(fx.launch(&fx.token_by(&old)).await).await,
        "accepted"
    );
    assert_eq!(
        outcome(fx.launch(&fx.token_by(&new)).await).await,
        "accepted"
    );
    assert_eq!(fx.jwks.hits(), 2, "known kids cause no fetch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_age_is_clamped_to_refresh_max() {
    let key = SigningKey::generate(Alg::RS512);
    let jwks = JwksServer::start(&[&key]).await;
    jwks.set_cache_control(Some("public, max-age=86400"));
    let fx = Fixture::with_jwks(jwks, |b| {
        b.set_str("keys.refresh_min", "1s")
            .set_str("keys.refresh_max", "2s")
    })
    .await;
    fx.jwks.wait_for_hits(3, Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_age_is_clamped_to_refresh_min() {
    let key = SigningKey::generate(Alg::RS512);
    let jwks = JwksServer::start(&[&key]).await;
    jwks.set_cache_control(Some("max-age=0"));
    let fx = Fixture::with_jwks(jwks, |b| b.set_str("keys.refresh_min", "3s")).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        fx.jwks.hits(),
        1,
        "max-age=0 does not refetch before refresh_min"
    );
    fx.jwks.wait_for_hits(2, Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_kid_refetch_is_limited_by_the_cooldown() {
    let key = SigningKey::generate(Alg::RS512);
    let jwks = JwksServer::start(&[&key]).await;
    let fx = Fixture::with_jwks(jwks, |b| b.set_str("keys.unknown_kid_cooldown", "3s")).await;
    assert_eq!(fx.jwks.hits(), 1, "startup fetch");

    let stranger = SigningKey::generate(Alg::RS512);
    assert_eq!(
        outcome(fx.launch(&fx.token_by(&stranger)).await).await,
        "unknown_key"
    );
    assert_eq!(fx.jwks.hits(), 2, "first unknown kid: one refetch");

    for _ in 0..5 {
        let other = SigningKey::generate(Alg::ES256);
        assert_eq!(
            outcome(fx.launch(&fx.token_by(&other)).await).await,
            "unknown_key"
        );
    }
    assert_eq!(fx.jwks.hits(), 2, "within the cooldown: no further fetch");

    // A key published within the cooldown is not seen until it passes.
    let late = SigningKey::generate(Alg::RS512);
    fx.jwks.set_keys(&[&key, &late]);
    assert_eq!(
        outcome(fx.launch(&fx.token_by(&late)).await).await,
        "unknown_key"
    );
    assert_eq!(fx.jwks.hits(), 2);

    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(
        outcome(fx.launch(&fx.token_by(&late)).await).await,
        "accepted"
    );
    assert_eq!(fx.jwks.hits(), 3, "after the cooldown: one more refetch");
    assert_eq!(fx.upstream.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_unknown_kids_share_one_refetch() {
    let key = SigningKey::generate(Alg::RS512);
    let jwks = JwksServer::start(&[&key]).await;
    let fx = Fixture::with_jwks(jwks, |b| b.set_str("keys.unknown_kid_cooldown", "1h")).await;
    let new = SigningKey::generate(Alg::ES256);
    fx.jwks.set_keys(&[&key, &new]);
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let client = client();
        let url = fx.guard.url("/launch");
        let token = fx.token_by(&new);
        tasks.push(tokio::spawn(async move {
            let response = post_form(&client, &url, &[("token", &token)]).await;
            response.status().as_u16()
        }));
    }
    let mut accepted = 0;
    for task in tasks {
        if within(LIMIT, "launch", task).await.expect("task") == 200 {
            accepted += 1;
        }
    }
    assert_eq!(fx.jwks.hits(), 2, "one refetch for all of them");
    assert!(
        accepted >= 1,
        "the requests that waited for the refetch were accepted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_keys_stay_usable_while_the_jwks_is_down() {
    let key = SigningKey::generate(Alg::RS512);
    let jwks = JwksServer::start(&[&key]).await;
    jwks.set_cache_control(Some("max-age=1"));
    let fx = Fixture::with_jwks(jwks, |b| b.set_str("keys.max_stale", "1h")).await;
    assert_eq!(
        outcome(fx.launch(&fx.token_by(&key)).await).await,
        "accepted"
    );

    for mode in [Mode::Error500, Mode::Close, Mode::NotJson] {
        fx.jwks.set_mode(mode);
        fx.jwks.wait_for_more_hits(2, Duration::from_secs(15)).await;
        assert_eq!(
            outcome(fx.launch(&fx.token_by(&key)).await).await,
            "accepted",
            "stale keys while the JWKS answers {mode:?}"
        );
        let ready = fx.guard.admin_get("/readyz").await;
        assert_eq!(ready.status(), 200, "stale keys are usable keys ({mode:?})");
    }
    assert_eq!(fx.upstream.hits(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_kid_while_the_jwks_is_down_is_keys_unavailable() {
    let key = SigningKey::generate(Alg::RS512);
    let jwks = JwksServer::start(&[&key]).await;
    jwks.set_cache_control(Some("max-age=1"));
    let fx = Fixture::with_jwks(jwks, |b| b).await;
    fx.jwks.set_mode(Mode::Error500);
    fx.jwks.wait_for_more_hits(1, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stranger = SigningKey::generate(Alg::RS512);
    let response = fx.launch(&fx.token_by(&stranger)).await;
    expect_rejection(response, 503, "keys_unavailable").await;
    assert_eq!(fx.upstream.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_keys_expire_after_max_stale() {
    let key = SigningKey::generate(Alg::RS512);
    let jwks = JwksServer::start(&[&key]).await;
    jwks.set_cache_control(Some("max-age=1"));
    let fx = Fixture::with_jwks(jwks, |b| b.set_str("keys.max_stale", "2s")).await;
    fx.jwks.set_mode(Mode::Error500);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let response = fx.launch(&fx.token_by(&key)).await;
    expect_rejection(response, 503, "keys_unavailable").await;
    // The guard was ready: an outage every replica shares is reported, not a 503.
    let ready = fx.guard.admin_get("/readyz").await;
    assert_eq!(
        ready.status(),
        200,
        "keys gone after startup: still in service"
    );
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["status"], "degraded", "{body}");
    assert_eq!(body["degraded"][0]["dependency"], "issuer_keys", "{body}");
    assert_eq!(body["degraded"][0]["issuer"], fx.iss.as_str(), "{body}");
    let metrics = fx.guard.metrics().await;
    let down = format!(
        "hti_guard_dependency_up{{dependency=\"issuer_keys\",issuer=\"{}\"}} 0",
        fx.iss
    );
    assert!(metrics.contains(&down), "{metrics}");
    assert!(metrics.contains("hti_guard_ready 1"), "{metrics}");
    assert_eq!(fx.upstream.hits(), 0);

    // The JWKS comes back: keys and readiness return without a restart.
    fx.jwks.set_mode(Mode::Serve);
    fx.jwks.wait_for_more_hits(1, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let response = fx.launch(&fx.token_by(&key)).await;
    assert_eq!(outcome(response).await, "accepted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_unavailable_when_the_jwks_was_never_reachable() {
    let upstream = Upstream::start().await;
    let iss = unique_issuer();
    let guard = GuardBuilder::new(&upstream.url())
        .issuer(&iss, &closed_url())
        .no_wait_ready()
        .start()
        .await;
    let key = mint::shared_key(Alg::RS512);
    let response = guard
        .launch(&client(), &key.token(&mint::hti_claims(&iss, AUDIENCE)))
        .await;
    expect_rejection(response, 503, "keys_unavailable").await;
    assert_eq!(upstream.hits(), 0);

    let ready = guard.admin_get("/readyz").await;
    assert_eq!(ready.status(), 503);
    let text = ready.text().await.unwrap_or_default();
    let _: Value =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("readyz body is JSON: {text}"));
    assert!(
        text.contains(&iss),
        "readyz names the issuer without keys: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_jwks_at_startup_is_not_ready() {
    for mode in [Mode::Error500, Mode::Close, Mode::NotJson] {
        let key = mint::shared_key(Alg::RS512);
        let jwks = JwksServer::start(&[key]).await;
        jwks.set_mode(mode);
        let fx = Fixture::with_jwks(jwks, |b| b.no_wait_ready()).await;
        fx.jwks.wait_for_hits(1, Duration::from_secs(10)).await;
        let response = fx.launch(&fx.token_by(key)).await;
        expect_rejection(response, 503, "keys_unavailable").await;
        let ready = fx.guard.admin_get("/readyz").await;
        assert_eq!(ready.status(), 503, "{mode:?}");
        let body: Value = ready.json().await.unwrap();
        let missing = body["missing"][0].as_str().unwrap_or_default();
        assert!(
            missing.starts_with("starting, awaiting issuer ") && missing.contains(&fx.iss),
            "{body}"
        );
        let metrics = fx.guard.metrics().await;
        assert!(metrics.contains("hti_guard_ready 0"), "{metrics}");
        assert_eq!(fx.upstream.hits(), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_jwks_after_the_startup_wait_is_reported_not_503() {
    let key = mint::shared_key(Alg::RS512);
    let jwks = JwksServer::start(&[key]).await;
    jwks.set_mode(Mode::Error500);
    let fx = Fixture::with_jwks(jwks, |b| {
        b.set_str("readiness.startup_wait", "0s").no_wait_ready()
    })
    .await;
    let ready = wait_ok(
        &fx.guard.admin_url("/readyz"),
        Duration::from_secs(15),
        || false,
    )
    .await;
    assert!(ready, "startup_wait 0s: ready without the keys");
    fx.jwks.wait_for_hits(1, Duration::from_secs(10)).await;
    let body: Value = fx.guard.admin_get("/readyz").await.json().await.unwrap();
    assert_eq!(body["status"], "degraded", "{body}");
    assert_eq!(body["degraded"][0]["dependency"], "issuer_keys", "{body}");
    assert_eq!(body["degraded"][0]["issuer"], fx.iss.as_str(), "{body}");
    let response = fx.launch(&fx.token_by(key)).await;
    expect_rejection(response, 503, "keys_unavailable").await;
    assert_eq!(fx.upstream.hits(), 0);
    let metrics = fx.guard.metrics().await;
    assert!(metrics.contains("hti_guard_ready 1"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_that_comes_up_late_makes_the_guard_ready() {
    let key = mint::shared_key(Alg::ES512);
    let jwks = JwksServer::start(&[key]).await;
    jwks.set_mode(Mode::Error500);
    let fx = Fixture::with_jwks(jwks, |b| b.no_wait_ready()).await;
    fx.jwks.wait_for_hits(1, Duration::from_secs(10)).await;
    fx.jwks.set_mode(Mode::Serve);
    let ready = wait_ok(
        &fx.guard.admin_url("/readyz"),
        Duration::from_secs(15),
        || false,
    )
    .await;
    assert!(ready, "not ready after the JWKS came up");
    let response = fx.launch(&fx.token_by(key)).await;
    assert_eq!(outcome(response).await, "accepted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_issuers_failure_does_not_affect_another() {
    let good_key = mint::shared_key(Alg::RS384);
    let good_jwks = JwksServer::start(&[good_key]).await;
    let bad_key = mint::shared_key(Alg::PS256);
    let bad_jwks = JwksServer::start(&[bad_key]).await;
    bad_jwks.set_mode(Mode::Hang);
    let good_iss = unique_issuer();
    let fx = Fixture::with_jwks(bad_jwks, |b| {
        b.issuer(&good_iss, &good_jwks.url())
            .set_str("keys.fetch_timeout", "20s")
            .no_wait_ready()
    })
    .await;
    let bad_iss = &fx.iss;
    good_jwks.wait_for_hits(1, Duration::from_secs(10)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let token = good_key.token(&mint::hti_claims(&good_iss, AUDIENCE));
        // Well under the other issuer's 20 s fetch timeout.
        let response = within(
            Duration::from_secs(8),
            "launch for the healthy issuer",
            fx.launch(&token),
        )
        .await;
        let reason = outcome(response).await;
        if reason == "accepted" {
            break;
        }
        assert_eq!(reason, "keys_unavailable");
        assert!(
            tokio::time::Instant::now() < deadline,
            "healthy issuer never usable"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ready = fx.guard.admin_get("/readyz").await;
    let status = ready.status();
    let text = ready.text().await.unwrap_or_default();
    assert_eq!(status, 503, "{text}");
    assert!(
        text.contains(bad_iss),
        "readyz names the issuer without keys: {text}"
    );
}
