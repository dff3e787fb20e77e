//! The admin listener (`/healthz`, `/readyz`, `/metrics`) and the in-process drain on shutdown.

mod common;

use std::time::Duration;

use common::*;

const LIMIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics_endpoints() {
    let fx = Fixture::start().await;
    let get = |path: &str| fx.client.get(fx.guard.admin_url(path)).send();

    let health = within(LIMIT, "healthz", get("/healthz")).await.unwrap();
    assert_eq!(health.status(), 200);
    let ready = within(LIMIT, "readyz", get("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(ready.text().await.unwrap(), r#"{"status":"ready"}"#);

    let metrics = within(LIMIT, "metrics", get("/metrics")).await.unwrap();
    assert_eq!(metrics.status(), 200);
    let content_type = metrics
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let text = metrics.text().await.unwrap();
    assert!(
        text.contains("# TYPE hti_guard_"),
        "Prometheus text: {text}"
    );
    for series in [
        "hti_guard_ready 1".to_owned(),
        "hti_guard_dependency_up{dependency=\"replay_store\",issuer=\"\"} 1".to_owned(),
        format!(
            "hti_guard_dependency_up{{dependency=\"issuer_keys\",issuer=\"{}\"}} 1",
            fx.iss
        ),
    ] {
        assert!(text.contains(&series), "{series} in {text}");
    }

    let missing = within(LIMIT, "unknown", get("/nothing-here"))
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(
        fx.upstream.hits(),
        0,
        "admin requests never reach the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_paths_on_the_public_listener_are_the_upstreams() {
    let fx = Fixture::start().await;
    for path in ["/metrics", "/healthz", "/readyz"] {
        let response = within(LIMIT, path, fx.client.get(fx.guard.url(path)).send())
            .await
            .unwrap();
        let echo = expect_echo(response).await;
        assert_eq!(echo.path(), path);
    }
    assert_eq!(fx.upstream.hits(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_in_flight_requests() {
    let mut fx = Fixture::start().await;
    let client = client();
    let url = fx.guard.url("/slow?delay_ms=2000");
    let in_flight = tokio::spawn(async move { client.get(url).send().await });
    // Wait until the request is at the upstream.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while fx.upstream.hits() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "request never reached the upstream"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    fx.guard.begin_shutdown();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let ready = within(
        LIMIT,
        "readyz while draining",
        fx.client.get(fx.guard.admin_url("/readyz")).send(),
    )
    .await;
    if let Ok(ready) = ready {
        assert_eq!(ready.status(), 503, "not ready while draining");
    }

    let response = within(LIMIT, "in-flight request", in_flight)
        .await
        .unwrap()
        .expect("the in-flight request completes");
    let echo = expect_echo(response).await;
    assert_eq!(echo.path(), "/slow");
    let result = fx.guard.join(Duration::from_secs(15)).await;
    assert_eq!(result, Ok(()), "run() returns Ok after draining");

    let after = fx
        .client
        .get(fx.guard.url("/after"))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(after.is_err(), "no new requests after shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_with_nothing_in_flight_returns_promptly() {
    let fx = Fixture::start().await;
    let guard = fx.guard;
    let result = within(Duration::from_secs(10), "stop", guard.stop()).await;
    assert_eq!(result, Ok(()));
}
