//! The shared replay store on a real `redis-server`, started by the tests on a free port:
//! two guards sharing it refuse a token replayed across them, 64 concurrent submissions over
//! both accept exactly one, a stopped Redis gives 503 and accepts nothing, and a Redis that
//! comes back is used again without a restart. Without `redis-server` on the PATH the
//! tests say so and pass, except under CI (`CI` set), where they fail.

mod common;

use std::time::Duration;

use common::*;

const LIMIT: Duration = Duration::from_secs(30);

/// Two guards on one upstream and one JWKS, sharing `redis`.
async fn two_guards(redis: &Redis) -> (Fixture, Guard) {
    let url = redis.url();
    let configure = move |builder: GuardBuilder| {
        builder
            .set_str("replay.store", "redis")
            .set_str("replay.redis_url", &url)
            .set_str("replay.redis_timeout", "250ms")
    };
    let first = Fixture::start_with(configure.clone()).await;
    let second =
        configure(GuardBuilder::new(&first.upstream.url()).issuer(&first.iss, &first.jwks.url()))
            .start()
            .await;
    (first, second)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_replayed_at_another_replica_is_refused() {
    let Some(redis) = Redis::start().await else {
        return;
    };
    let (a, b) = two_guards(&redis).await;
    let token = a.good_token();
    expect_echo(a.guard.launch(&a.client, &token).await).await;
    expect_rejection(b.launch(&a.client, &token).await, 401, "replayed").await;
    expect_rejection(a.guard.launch(&a.client, &token).await, 401, "replayed").await;
    assert_eq!(
        a.upstream.hits(),
        1,
        "only the first launch reached the upstream"
    );
    let metrics = a.guard.metrics().await;
    assert!(
        metrics.contains(r#"hti_guard_replay_checks_total{result="fresh",store="redis"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"hti_guard_replay_checks_total{result="replayed",store="redis"} 1"#)
    );
    assert!(metrics.contains("hti_guard_replay_check_duration_seconds_count{store=\"redis\"} 2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_submissions_over_two_replicas_accept_exactly_one() {
    let Some(redis) = Redis::start().await else {
        return;
    };
    let (a, b) = two_guards(&redis).await;
    let token = a.good_token();
    let mut tasks = Vec::new();
    for i in 0..64 {
        let client = a.client.clone();
        let url = if i % 2 == 0 {
            a.guard.url("/launch")
        } else {
            b.url("/launch")
        };
        let token = token.clone();
        tasks.push(tokio::spawn(async move {
            post_form(&client, &url, &[("token", &token)])
                .await
                .status()
                .as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(within(LIMIT, "launch", task).await.unwrap());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 401).count(),
        63,
        "{statuses:?}"
    );
    assert_eq!(a.upstream.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_refuses_with_503_and_back_accepts_again() {
    let Some(mut redis) = Redis::start().await else {
        return;
    };
    let (a, _b) = two_guards(&redis).await;
    redis.kill().await;

    let token = a.good_token();
    let response = a.guard.launch(&a.client, &token).await;
    expect_rejection(response, 503, "replay_store_unavailable").await;
    assert_eq!(a.upstream.hits(), 0, "nothing accepted unchecked");
    // Every replica shares the outage: /readyz stays 200 and names it (not 503), while
    // launches are refused.
    let ready = a.guard.admin_get("/readyz").await;
    assert_eq!(ready.status(), 200);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["status"], "degraded", "{body}");
    assert_eq!(body["degraded"][0]["dependency"], "replay_store", "{body}");
    let detail = body["degraded"][0]["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("replay store (redis)"), "{body}");
    let metrics = a.guard.metrics().await;
    assert!(
        metrics.contains("hti_guard_dependency_up{dependency=\"replay_store\",issuer=\"\"} 0"),
        "{metrics}"
    );

    redis.run().await;
    // The connection manager reconnects on its own; the same token was never accepted,
    // so it is still good.
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let response = a.guard.launch(&a.client, &token).await;
        if response.status() == 200 {
            break;
        }
        expect_rejection(response, 503, "replay_store_unavailable").await;
        assert!(
            tokio::time::Instant::now() < deadline,
            "Redis never used again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(a.upstream.hits(), 1);
    let ready = a.guard.admin_get("/readyz").await;
    assert_eq!(ready.status(), 200);
    assert_eq!(ready.text().await.unwrap(), r#"{"status":"ready"}"#);
}
