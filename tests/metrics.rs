//! The Prometheus metrics, checked as deltas after known traffic. One test in this binary, so
//! no other test's traffic mixes into the unlabelled counters.

mod common;

use std::time::Duration;

use common::metrics::{has, parse, value};
use common::mint::{self, now};
use common::*;
use serde_json::json;

const LIMIT: Duration = Duration::from_secs(30);

async fn scrape(fx: &Fixture) -> String {
    fx.guard.metrics().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_launches_fetches_replays_and_requests() {
    let fx = Fixture::start().await;
    let before = scrape(&fx).await;
    let iss = fx.iss.as_str();

    // JWKS: the startup fetch.
    assert_eq!(
        value(
            &before,
            "hti_guard_jwks_fetches_total",
            &[("issuer", iss), ("result", "ok"), ("trigger", "startup")]
        ),
        1.0,
        "{before}"
    );
    assert_eq!(
        value(&before, "hti_guard_jwks_keys", &[("issuer", iss)]),
        1.0
    );
    let last_success = value(
        &before,
        "hti_guard_jwks_last_success_timestamp_seconds",
        &[("issuer", iss)],
    );
    assert!(
        (last_success - now() as f64).abs() < 120.0,
        "last success {last_success}"
    );

    // Two accepted launches, one replay, one expired, one unknown issuer, one unknown kid.
    let token = fx.good_token();
    expect_echo(within(LIMIT, "launch", fx.launch(&token)).await).await;
    expect_echo(within(LIMIT, "launch", fx.launch(&fx.good_token())).await).await;
    fx.expect_refused(&token, 401, "replayed").await;
    let mut expired = fx.claims();
    expired["iat"] = json!(now() - 400);
    expired["exp"] = json!(now() - 100);
    fx.expect_refused(&fx.token(&expired), 401, "expired").await;
    let mut foreign = fx.claims();
    foreign["iss"] = json!("https://not-configured.example");
    fx.expect_refused(&fx.token(&foreign), 401, "unknown_issuer")
        .await;
    let stranger = SigningKey::generate(Alg::ES256);
    expect_rejection(
        within(LIMIT, "stranger", fx.launch(&stranger.token(&fx.claims()))).await,
        401,
        "unknown_key",
    )
    .await;
    // Spoofed headers on a passthrough request: three reserved names.
    let response = fx
        .client
        .get(fx.guard.url("/page"))
        .header("x-hti-sub", "Patient/evil")
        .header("X_HTI_Iss", "evil")
        .header("x-hti-claims", "e30")
        .send();
    expect_echo(within(LIMIT, "spoofed", response).await.unwrap()).await;

    let after = scrape(&fx).await;
    let delta = |name: &str, labels: &[(&str, &str)]| {
        value(&after, name, labels) - value(&before, name, labels)
    };

    let launches = "hti_guard_launches_total";
    assert_eq!(
        delta(
            launches,
            &[("issuer", iss), ("result", "accepted"), ("reason", "none")]
        ),
        2.0,
        "{after}"
    );
    assert_eq!(
        delta(
            launches,
            &[
                ("issuer", iss),
                ("result", "rejected"),
                ("reason", "replayed")
            ]
        ),
        1.0
    );
    assert_eq!(
        delta(
            launches,
            &[
                ("issuer", iss),
                ("result", "rejected"),
                ("reason", "expired")
            ]
        ),
        1.0
    );
    assert_eq!(
        delta(
            launches,
            &[
                ("issuer", iss),
                ("result", "rejected"),
                ("reason", "unknown_key")
            ]
        ),
        1.0
    );
    assert_eq!(
        delta(
            launches,
            &[
                ("issuer", "unknown"),
                ("result", "rejected"),
                ("reason", "unknown_issuer")
            ]
        ),
        1.0
    );
    assert_eq!(delta(launches, &[]), 6.0, "six launches in all");

    assert_eq!(
        delta(
            "hti_guard_jwks_fetches_total",
            &[
                ("issuer", iss),
                ("result", "ok"),
                ("trigger", "unknown_kid")
            ]
        ),
        1.0
    );
    assert_eq!(
        delta(
            "hti_guard_replay_checks_total",
            &[("store", "memory"), ("result", "fresh")]
        ),
        2.0
    );
    assert_eq!(
        delta(
            "hti_guard_replay_checks_total",
            &[("store", "memory"), ("result", "replayed")]
        ),
        1.0
    );
    assert_eq!(delta("hti_guard_spoofed_headers_stripped_total", &[]), 3.0);
    assert_eq!(delta("hti_guard_requests_total", &[("code", "200")]), 3.0);
    assert_eq!(delta("hti_guard_requests_total", &[("code", "401")]), 4.0);
    assert!(delta("hti_guard_launch_verify_duration_seconds_count", &[]) >= 5.0);
    assert!(delta("hti_guard_request_duration_seconds_count", &[]) >= 7.0);
    assert_eq!(delta("hti_guard_upstream_duration_seconds_count", &[]), 3.0);
    for name in [
        "hti_guard_launch_verify_duration_seconds_bucket",
        "hti_guard_request_duration_seconds_bucket",
        "hti_guard_upstream_duration_seconds_bucket",
    ] {
        assert!(has(&after, name), "{name} missing");
    }
    // Verify and replay latencies can be told apart from 10 µs, requests from 100 µs.
    for (name, smallest) in [
        ("hti_guard_launch_verify_duration_seconds_bucket", "0.00001"),
        ("hti_guard_replay_check_duration_seconds_bucket", "0.00001"),
        ("hti_guard_login_duration_seconds_bucket", "0.00001"),
        ("hti_guard_request_duration_seconds_bucket", "0.0001"),
        ("hti_guard_upstream_duration_seconds_bucket", "0.0001"),
    ] {
        let bounds: Vec<f64> = parse(&after)
            .into_iter()
            .filter(|s| s.name == name)
            .map(|s| s.labels["le"].parse().unwrap())
            .collect();
        let least = bounds.iter().copied().fold(f64::INFINITY, f64::min);
        assert_eq!(
            least,
            smallest.parse::<f64>().unwrap(),
            "{name}: {bounds:?}"
        );
    }

    // The memory store's fill, read at the scrape: the two accepted jtis are held (the
    // replay, the expired and the unknown ones added none), of replay.max_entries.
    assert_eq!(delta("hti_guard_replay_entries", &[]), 2.0, "{after}");
    assert_eq!(value(&after, "hti_guard_replay_capacity", &[]), 1_000_000.0);

    // Which build runs, and the process around it.
    let build = parse(&after)
        .into_iter()
        .find(|s| s.name == "hti_guard_build_info")
        .expect("hti_guard_build_info");
    assert_eq!(build.value, 1.0);
    assert_eq!(build.labels["version"], env!("CARGO_PKG_VERSION"));
    assert!(!build.labels["revision"].is_empty(), "{:?}", build.labels);
    for name in [
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_threads",
    ] {
        assert!(value(&after, name, &[]) >= 1.0, "{name}: {after}");
    }
    assert!(has(&after, "process_cpu_seconds_total"), "{after}");
    let started = value(&after, "process_start_time_seconds", &[]);
    assert!(
        (started - now() as f64).abs() < 3600.0,
        "the guard started {started}, now is {}",
        now()
    );

    // No per-person value ever becomes a label.
    let claims = mint::payload_of(&token);
    for secret in [
        token.as_str(),
        claims["jti"].as_str().unwrap(),
        "Practitioner/123",
        "Task/abc",
        "Patient/evil",
    ] {
        assert!(!after.contains(secret), "{secret} appears in the metrics");
    }

    // A failing JWKS is counted as an error with the interval trigger.
    fx.jwks.set_cache_control(Some("max-age=1"));
    let stranger = SigningKey::generate(Alg::ES256);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // Refetch (cooldown passed) to pick up the short max-age.
    expect_rejection(
        within(LIMIT, "stranger", fx.launch(&stranger.token(&fx.claims()))).await,
        401,
        "unknown_key",
    )
    .await;
    fx.jwks.set_mode(Mode::Error500);
    fx.jwks.wait_for_more_hits(1, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let failing = scrape(&fx).await;
    assert!(
        value(
            &failing,
            "hti_guard_jwks_fetches_total",
            &[
                ("issuer", iss),
                ("result", "error"),
                ("trigger", "interval")
            ]
        ) >= 1.0,
        "{failing}"
    );
}
