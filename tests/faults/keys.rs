//! A portal's JWKS endpoint failing: hanging past `keys.fetch_timeout`, answering garbage or
//! 500 until `keys.max_stale` runs out, and answering 10 MB. Each time only that issuer's
//! launches are affected, nothing signed by a key the guard never took is accepted, and the
//! other issuer and passthrough go on.

use serde_json::json;

use crate::common::mint::{self, Alg};
use crate::common::*;
use crate::support::*;

/// A fixture whose issuer serves `key` with `max-age=1` (refreshed every second), beside a
/// second issuer (its iss and key returned) whose JWKS stays healthy.
async fn two_issuers(
    key: &SigningKey,
    configure: impl FnOnce(GuardBuilder) -> GuardBuilder,
) -> (Fixture, String, &'static SigningKey, JwksServer) {
    let jwks = JwksServer::start(&[key]).await;
    jwks.set_cache_control(Some("max-age=1"));
    let other_key = mint::shared_key(Alg::ES256);
    let other_jwks = JwksServer::start(&[other_key]).await;
    let other_iss = unique_issuer();
    let fx = Fixture::with_jwks(jwks, |b| configure(b.issuer(&other_iss, &other_jwks.url()))).await;
    (fx, other_iss, other_key, other_jwks)
}

/// The other issuer's launch is accepted and a passthrough request answered.
async fn others_are_served(fx: &Fixture, other_iss: &str, other_key: &SigningKey) {
    let token = other_key.token(&mint::hti_claims(other_iss, AUDIENCE));
    assert_eq!(outcome(fx.launch(&token).await).await, "accepted");
    expect_echo(get(&fx.client, &fx.guard.url("/page")).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_jwks_refuses_unknown_keys_after_fetch_timeout_and_nothing_else_waits() {
    let key = SigningKey::generate(Alg::RS512);
    let (fx, other_iss, other_key, _other) = two_issuers(&key, |b| {
        b.set_str("keys.fetch_timeout", "1s")
            .set_str("keys.max_stale", "1h")
    })
    .await;
    assert_eq!(
        outcome(fx.launch(&fx.token_by(&key)).await).await,
        "accepted"
    );

    fx.jwks.set_mode(Mode::Hang);
    // Two hanging fetches: the first has timed out.
    fx.jwks.wait_for_more_hits(2, LIMIT).await;

    // A token of a key the guard never saw waits for the (hanging) refetch at most
    // fetch_timeout, and is refused.
    let stranger = SigningKey::generate(Alg::RS512);
    let client = fx.client.clone();
    let url = fx.guard.url("/launch");
    let token = fx.token_by(&stranger);
    let pending = tokio::spawn(async move { post_form(&client, &url, &[("token", &token)]).await });

    // Meanwhile: the last good keys, the other issuer and passthrough.
    assert_eq!(
        outcome(fx.launch(&fx.token_by(&key)).await).await,
        "accepted",
        "the last good keys while the JWKS hangs"
    );
    others_are_served(&fx, &other_iss, other_key).await;

    let refused = within(LIMIT, "the unknown kid's launch", pending)
        .await
        .expect("launch task");
    expect_rejection(refused, 503, "keys_unavailable").await;
    assert_eq!(
        fx.upstream.hits(),
        4,
        "the stranger's token reached nothing"
    );
    assert!(
        metric(
            &fx.guard,
            "hti_guard_jwks_fetches_total",
            &[("issuer", &fx.iss), ("result", "error")]
        )
        .await
            >= 2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_or_500_from_the_jwks_keeps_the_last_good_keys_until_max_stale() {
    let key = SigningKey::generate(Alg::RS512);
    let (fx, other_iss, other_key, _other) =
        two_issuers(&key, |b| b.set_str("keys.max_stale", "8s")).await;
    assert_eq!(
        outcome(fx.launch(&fx.token_by(&key)).await).await,
        "accepted"
    );
    let mut accepted = 1;

    // A document with a key the guard must never take: it comes with each kind of garbage.
    let rotated = SigningKey::generate(Alg::RS512);
    let garbage = [
        ("500", Mode::Error500, json!({})),
        ("html", Mode::NotJson, json!({})),
        (
            "keys not an array",
            Mode::Serve,
            json!({"keys": rotated.jwk()}),
        ),
        ("an array", Mode::Serve, json!([rotated.jwk()])),
    ];
    for (what, mode, document) in garbage {
        fx.jwks.set_document(document);
        fx.jwks.set_mode(mode);
        fx.jwks.wait_for_more_hits(1, LIMIT).await;
        assert_eq!(
            outcome(fx.launch(&fx.token_by(&key)).await).await,
            "accepted",
            "the last good keys while the JWKS answers {what}"
        );
        accepted += 1;
        let response = fx.launch(&fx.token_by(&rotated)).await;
        expect_rejection(response, 503, "keys_unavailable").await;
    }
    others_are_served(&fx, &other_iss, other_key).await;
    accepted += 2;

    // Past max_stale the issuer's launches get 503; the other issuer does not notice.
    let mut launches = 0;
    let fx = &fx;
    eventually(LIMIT, "stale keys given up after max_stale", || {
        launches += 1;
        let token = fx.token_by(&key);
        async move {
            let response = fx.launch(&token).await;
            match outcome(response).await.as_str() {
                "accepted" => false,
                "keys_unavailable" => true,
                other => panic!("unexpected {other}"),
            }
        }
    })
    .await;
    accepted += launches - 1;
    others_are_served(fx, &other_iss, other_key).await;
    accepted += 2;
    assert_eq!(
        fx.upstream.hits(),
        accepted,
        "refused launches reached nothing"
    );

    // A good answer again: the issuer is back without a restart.
    fx.jwks.set_keys(&[&key]);
    fx.jwks.set_mode(Mode::Serve);
    eventually(LIMIT, "keys back after the JWKS recovered", || {
        let token = fx.token_by(&key);
        async move { outcome(fx.launch(&token).await).await == "accepted" }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ten_megabyte_jwks_is_refused_with_the_guards_memory_bounded() {
    let key = SigningKey::generate(Alg::RS512);
    let jwks = JwksServer::start(&[&key]).await;
    jwks.set_cache_control(Some("max-age=1"));
    let other_key = mint::shared_key(Alg::ES384);
    let other_jwks = JwksServer::start(&[other_key]).await;
    let other_iss = unique_issuer();
    let backends = Backends::start(jwks).await;
    let builder = backends
        .builder()
        .issuer(&other_iss, &other_jwks.url())
        .set_str("keys.max_stale", "1h");
    let served = Served::start(builder, "warn").await;
    let client = client();
    let launch = |token: String| {
        let client = client.clone();
        let url = served.url("/launch");
        async move { outcome(post_form(&client, &url, &[("token", &token)]).await).await }
    };
    let token = |key: &SigningKey| key.token(&mint::hti_claims(&backends.iss, AUDIENCE));
    for _ in 0..20 {
        assert_eq!(launch(token(&key)).await, "accepted");
    }
    let (_, before) = memory_kib(served.pid());

    // The same keys and a new one, padded to 10 MB: valid JSON the guard would take if it
    // read it all.
    let rotated = SigningKey::generate(Alg::RS512);
    let padding = "x".repeat(10 * 1024 * 1024);
    backends
        .jwks
        .set_document(json!({"keys": [key.jwk(), rotated.jwk()], "padding": padding}));
    backends.jwks.wait_for_more_hits(4, LIMIT).await;
    let (rss, after) = memory_kib(served.pid());
    eprintln!("guard VmHWM {before} KiB -> {after} KiB (VmRSS {rss} KiB)");
    // Reading one such document whole would take 10 MiB at least; the guard stops at 1 MiB.
    assert!(
        after < before + 6 * 1024,
        "peak memory grew from {before} KiB to {after} KiB"
    );

    assert_eq!(launch(token(&key)).await, "accepted", "the last good keys");
    assert_eq!(
        launch(token(&rotated)).await,
        "keys_unavailable",
        "a key only the oversized set holds"
    );
    let other = other_key.token(&mint::hti_claims(&other_iss, AUDIENCE));
    assert_eq!(launch(other).await, "accepted");
    let passthrough = get(&client, &served.url("/page")).await;
    expect_echo(passthrough).await;
    assert_eq!(backends.upstream.hits(), 23);

    let metrics = get(&client, &served.admin_url("/metrics"))
        .await
        .text()
        .await
        .unwrap();
    let failed = crate::common::metrics::value(
        &metrics,
        "hti_guard_jwks_fetches_total",
        &[("issuer", &backends.iss), ("result", "error")],
    );
    assert!(failed >= 4.0, "{failed} failed fetches");
    eprintln!("{failed} refused fetches of 10 MB");
    drop(served);
}
