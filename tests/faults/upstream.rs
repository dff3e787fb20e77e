//! The module application failing: refusing connections, resetting or cutting a response
//! mid-body, stalling a body, answering its headers late, trickling a body. The client
//! always gets an answer or a broken-off body (never a hang on the guard's side), and
//! afterwards every request gets its own answer from the one-worker pool: a broken or
//! timed-out connection is never reused.

use futures_util::StreamExt;

use crate::common::mint::{self, Alg};
use crate::common::*;
use crate::support::*;

/// A guard with one worker (one upstream pool) in front of `upstream`, with `timeouts.
/// upstream_response` of `response_timeout`; its issuer and JWKS.
async fn one_worker(upstream: &str, response_timeout: &str) -> (Guard, String, JwksServer) {
    let jwks = JwksServer::start(&[mint::shared_key(Alg::RS512)]).await;
    let iss = unique_issuer();
    let guard = GuardBuilder::new(upstream)
        .issuer(&iss, &jwks.url())
        .set("workers", "1")
        .set_str("timeouts.upstream_response", response_timeout)
        .start()
        .await;
    (guard, iss, jwks)
}

/// GET `path` through the guard: asserts the scripted upstream's own answer for it.
async fn ok(guard: &Guard, path: &str) {
    let response = get(&client(), &guard.url(path)).await;
    assert_eq!(response.status(), 200, "{path}");
    let body = within(LIMIT, "body", response.text()).await.unwrap();
    assert_eq!(
        body,
        format!("ok {path}"),
        "the answer to {path}, not another's"
    );
}

/// A launch of a fresh token: asserts it reached the scripted upstream.
async fn launch_ok(guard: &Guard, iss: &str) {
    let token = mint::shared_key(Alg::RS512).token(&mint::hti_claims(iss, AUDIENCE));
    let response = guard.launch(&client(), &token).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "ok /launch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_refuses_and_then_listens_is_used_without_a_restart() {
    let origin = closed_origin();
    let (guard, iss, _jwks) = one_worker(&origin, "5s").await;
    let client = client();
    let response = get(&client, &guard.url("/page")).await;
    expect_rejection(response, 502, "upstream_unavailable").await;
    let token = mint::shared_key(Alg::RS512).token(&mint::hti_claims(&iss, AUDIENCE));
    expect_rejection(
        guard.launch(&client, &token).await,
        502,
        "upstream_unavailable",
    )
    .await;
    // The refused launch is not accepted later: its jti was spent on the failed attempt.
    let addr = origin.trim_start_matches("http://").parse().unwrap();
    let upstream = Scripted::start_on(addr).await;
    expect_rejection(guard.launch(&client, &token).await, 401, "replayed").await;
    ok(&guard, "/page").await;
    launch_ok(&guard, &iss).await;
    assert_eq!(
        upstream.accepted(),
        1,
        "one pooled connection once it listens"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_broken_off_mid_body_reaches_the_client_broken_and_poisons_nothing() {
    let upstream = Scripted::start().await;
    let (guard, iss, _jwks) = one_worker(&upstream.url(), "5s").await;
    ok(&guard, "/first").await;
    let mut connections = upstream.accepted();
    for path in ["/reset", "/cut"] {
        let response = get(&client(), &guard.url(path)).await;
        assert_eq!(response.status(), 200, "{path}: the head had come");
        let body = within(LIMIT, "the broken body", response.bytes()).await;
        assert!(
            body.is_err(),
            "{path}: the client sees the body break off, not a short body as if whole"
        );
        // The next requests get their own answers, on a new connection.
        ok(&guard, "/after").await;
        launch_ok(&guard, &iss).await;
        assert_eq!(
            upstream.accepted(),
            connections + 1,
            "{path}: one new connection"
        );
        connections += 1;
    }

    // A body that stalls: the client gives up; that connection is not used again.
    let response = get(&client(), &guard.url("/stall")).await;
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let first = within(LIMIT, "the stalled body's first bytes", body.next()).await;
    assert!(first.is_some_and(|chunk| chunk.is_ok()));
    drop(body);
    for _ in 0..3 {
        ok(&guard, "/after-stall").await;
    }
    assert_eq!(upstream.accepted(), connections + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_upstream_headers_get_504_and_the_late_answer_reaches_no_one() {
    let upstream = Scripted::start().await;
    let (guard, iss, _jwks) = one_worker(&upstream.url(), "1s").await;
    ok(&guard, "/first").await;
    let response = within(LIMIT, "the 504", async {
        get(&client(), &guard.url("/late")).await
    })
    .await;
    expect_rejection(response, 504, "upstream_timeout").await;
    ok(&guard, "/right-after").await;
    // The late answer has been written to its connection by now: it reaches no request.
    tokio::time::sleep(LATE).await;
    for _ in 0..3 {
        ok(&guard, "/later").await;
    }
    launch_ok(&guard, &iss).await;
    assert_eq!(
        upstream.accepted(),
        2,
        "the timed-out connection was not reused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_body_streams_through_longer_than_upstream_response() {
    let upstream = Scripted::start().await;
    // The body takes TRICKLE.0 * TRICKLE.1 (2.4 s): longer than the 1 s for the headers.
    let (guard, _iss, _jwks) = one_worker(&upstream.url(), "1s").await;
    let response = get(&client(), &guard.url("/trickle")).await;
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let mut received = Vec::new();
    let mut reads = 0;
    while let Some(chunk) = within(LIMIT, "a trickled chunk", body.next()).await {
        received.extend_from_slice(&chunk.expect("the slow body is not cut"));
        reads += 1;
    }
    let expected: String = (0..TRICKLE.0).map(|n| format!("chunk {n}\n")).collect();
    assert_eq!(String::from_utf8(received).unwrap(), expected);
    assert!(reads > 1, "passed on as it came, not buffered");
    ok(&guard, "/after").await;
    assert_eq!(
        upstream.accepted(),
        1,
        "the connection went back to the pool"
    );
}
