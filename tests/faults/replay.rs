//! The replay store failing: a real `redis-server` SIGKILLed and restarted on its port while a
//! bounded load of launches (fresh tokens and replays) runs, and the memory store full. The
//! upstream counts what it received per jti: none twice.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::common::mint::{self, Alg};
use crate::common::*;
use crate::support::*;

/// Load workers, and their pause between launches.
const WORKERS: usize = 4;
const PAUSE: Duration = Duration::from_millis(10);
/// Tokens every worker keeps resubmitting (each may be accepted once in all).
const POOL: usize = 24;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_under_load_accepts_no_jti_twice() {
    let Some(mut redis) = Redis::durable().await else {
        return;
    };
    let upstream = JtiCounter::start().await;
    let key = mint::shared_key(Alg::RS512);
    let jwks = JwksServer::start(&[key]).await;
    let iss = unique_issuer();
    let guard = GuardBuilder::new(&upstream.url())
        .issuer(&iss, &jwks.url())
        .set_str("replay.store", "redis")
        .set_str("replay.redis_url", &redis.url())
        .set_str("replay.redis_timeout", "250ms")
        .start()
        .await;
    let mint_token: Mint = {
        let iss = iss.clone();
        Arc::new(move || key.token(&mint::hti_claims(&iss, AUDIENCE)))
    };
    let pool: Arc<Vec<String>> = Arc::new((0..POOL).map(|_| mint_token()).collect());
    let client = client();

    // Each worker alternates a token of the shared pool and a fresh one, and records each
    // outcome with the token's jti.
    let load = LaunchLoad::start(
        &client,
        &guard.url("/launch"),
        &pool,
        &mint_token,
        WORKERS,
        PAUSE,
    );

    tokio::time::sleep(Duration::from_millis(800)).await;
    redis.kill().await;
    // Down: a fresh token is refused with 503, and reaches nothing.
    for _ in 0..5 {
        let response = guard.launch(&client, &mint_token()).await;
        expect_rejection(response, 503, "replay_store_unavailable").await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.run().await;
    // Back on the same port: the guard reconnects by itself.
    eventually(LIMIT, "launches accepted after Redis came back", || {
        let token = mint_token();
        let (client, guard) = (&client, &guard);
        async move { outcome(guard.launch(client, &token).await).await == "accepted" }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let outcomes = load.finish(LIMIT).await;
    // Nothing accepted twice, and nothing accepted that the client was not told of.
    let seen = upstream.seen();
    let counted = Outcomes::no_jti_twice(&outcomes, &seen, "single Redis");
    let (accepted, accepted_jtis) = (counted.accepted, counted.accepted_jtis);
    // The load's launches plus the accepted probe after the restart.
    assert_eq!(seen.values().sum::<usize>(), accepted + 1);

    // A pool token accepted before the kill is still known after the restart (the store
    // is durable), so it is replayed, not accepted again.
    let accepted_before = pool
        .iter()
        .find(|token| accepted_jtis.contains(&jti_of(token)))
        .expect("a pool token was accepted");
    let response = guard.launch(&client, accepted_before).await;
    expect_rejection(response, 401, "replayed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_memory_store_refuses_new_launches_never_forgets_a_live_jti_and_recovers() {
    let fx = Fixture::start_with(|b| {
        b.set("replay.max_entries", "3")
            .set_str("launch.clock_skew", "1s")
    })
    .await;
    let long = [fx.good_token(), fx.good_token()];
    let mut short = fx.claims();
    short["exp"] = json!(mint::now() + 2);
    let short = fx.token(&short);
    for token in long.iter().chain([&short]) {
        assert_eq!(outcome(fx.launch(token).await).await, "accepted");
    }

    // Full: a new token is refused, the live ones stay replays.
    fx.expect_refused(&fx.good_token(), 503, "replay_store_unavailable")
        .await;
    for token in &long {
        fx.expect_refused(token, 401, "replayed").await;
    }

    // Once the short token's exp + clock_skew has passed, its room is taken by a new launch.
    let mut refused = 0;
    let fresh = loop {
        let token = fx.good_token();
        match outcome(fx.launch(&token).await).await.as_str() {
            "accepted" => break token,
            "replay_store_unavailable" => refused += 1,
            other => panic!("unexpected {other}"),
        }
        assert!(refused < 200, "the expired entry was never removed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // The live jtis were not evicted to make that room; the store is full again.
    for token in long.iter().chain([&fresh]) {
        fx.expect_refused(token, 401, "replayed").await;
    }
    fx.expect_refused(&short, 401, "expired").await;
    fx.expect_refused(&fx.good_token(), 503, "replay_store_unavailable")
        .await;
    assert_eq!(
        fx.upstream.hits(),
        4,
        "each accepted launch once, nothing else"
    );
    assert!(
        metric(
            &fx.guard,
            "hti_guard_launches_total",
            &[("reason", "replay_store_unavailable")]
        )
        .await
            >= 2.0
    );
}
