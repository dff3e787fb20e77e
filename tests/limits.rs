//! Staying up: idle connections (also ones that never send a byte) closed, stalled request
//! bodies ended, a client that reads nothing cut off (also an HTTP/2 client that withholds
//! flow-control credit, but not a response whose upstream is quiet), at most
//! `limits.max_connections` open connections while established ones go on, new requests
//! refused near `limits.max_memory`, and an accept loop that survives running out of file
//! descriptors. Timeouts are short
//! here; each is asserted only to fire within a generous bound.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::metrics;
use common::*;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const LIMIT: Duration = Duration::from_secs(20);

/// A guard with these extra settings (raw TOML values) in front of a mock upstream.
async fn limited(settings: &[(&str, &str)]) -> Fixture {
    Fixture::start_with(|builder| {
        settings
            .iter()
            .fold(builder, |builder, (key, value)| builder.set(key, value))
    })
    .await
}

/// Reads until the peer closes (Ok(bytes read)) or the connection breaks (Err).
async fn read_to_close(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut all = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf).await? {
            0 => return Ok(all),
            n => all.extend_from_slice(&buf[..n]),
        }
    }
}

/// Sends a GET on an open HTTP/1.1 connection and reads one response with a
/// Content-Length body; gives the status.
async fn get_on(stream: &mut TcpStream, path: &str) -> u16 {
    let request = format!("GET {path} HTTP/1.1\r\nHost: guard.test\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    read_response(stream).await
}

/// Reads one HTTP/1.1 response (Content-Length bodies only) and gives its status.
async fn read_response(stream: &mut TcpStream) -> u16 {
    read_http1_response(stream).await.0
}

async fn metric(guard: &Guard, name: &str, labels: &[(&str, &str)]) -> f64 {
    metrics::value(&guard.metrics().await, name, labels)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_never_sends_a_byte_is_closed_after_the_idle_timeout() {
    let fx = limited(&[("timeouts.idle", "\"1s\"")]).await;
    let guard = &fx.guard;
    let mut silent = TcpStream::connect(guard.public).await.unwrap();
    let read = within(
        LIMIT,
        "the idle connection to close",
        read_to_close(&mut silent),
    )
    .await;
    assert!(read.is_ok_and(|bytes| bytes.is_empty()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_alive_connection_is_closed_after_the_idle_timeout_but_not_while_busy() {
    // hyper's header timeout also ends an HTTP/1 connection waiting for its next request:
    // long here, so that only the idle timeout can close it within the bound.
    let fx = limited(&[
        ("timeouts.idle", "\"1s\""),
        ("timeouts.request_headers", "\"60s\""),
    ])
    .await;
    let guard = &fx.guard;
    let mut stream = TcpStream::connect(guard.public).await.unwrap();
    // A response that takes three idle timeouts to come: the connection is busy, not idle.
    let status = within(
        LIMIT,
        "slow response",
        get_on(&mut stream, "/x?delay_ms=3000"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(get_on(&mut stream, "/again").await, 200, "kept alive");
    let read = within(
        LIMIT,
        "the idle connection to close",
        read_to_close(&mut stream),
    )
    .await;
    assert!(read.is_ok_and(|bytes| bytes.is_empty()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http2_connection_is_closed() {
    let fx = limited(&[("timeouts.idle", "\"1s\"")]).await;
    let guard = &fx.guard;
    let mut stream = TcpStream::connect(guard.public).await.unwrap();
    // The h2c preface and an empty SETTINGS frame, then nothing: no stream is ever opened.
    stream
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let read = within(
        LIMIT,
        "the idle h2 connection to close",
        read_to_close(&mut stream),
    )
    .await;
    let bytes = read.expect("a clean close");
    // The guard's SETTINGS, then a GOAWAY (frame type 7) before the close.
    assert!(
        frames(&bytes).contains(&7),
        "a GOAWAY before closing: {bytes:?}"
    );
}

/// The frame types in a run of HTTP/2 frames.
fn frames(mut bytes: &[u8]) -> Vec<u8> {
    let mut types = Vec::new();
    while bytes.len() >= 9 {
        let len = u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]) as usize;
        types.push(bytes[3]);
        bytes = &bytes[(9 + len).min(bytes.len())..];
    }
    types
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_launch_body_gets_408() {
    let fx = limited(&[("timeouts.request_body", "\"1s\"")]).await;
    let (upstream, guard) = (&fx.upstream, &fx.guard);
    let mut stream = TcpStream::connect(guard.public).await.unwrap();
    stream
        .write_all(
            b"POST /launch HTTP/1.1\r\nHost: guard.test\r\nAccept: application/json\r\n\
              Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\ntoken=abc",
        )
        .await
        .unwrap();
    let status = within(LIMIT, "the 408", read_response(&mut stream)).await;
    assert_eq!(status, 408);
    assert_eq!(upstream.hits(), 0, "nothing reached the upstream");
    assert_eq!(
        metric(
            guard,
            "hti_guard_launches_total",
            &[("reason", "request_timeout")]
        )
        .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_upload_aborts_the_upstream_request() {
    let fx = limited(&[("timeouts.request_body", "\"1s\"")]).await;
    let (upstream, guard) = (&fx.upstream, &fx.guard);
    let mut stream = TcpStream::connect(guard.public).await.unwrap();
    let head = "POST /upload HTTP/1.1\r\nHost: guard.test\r\nContent-Length: 100000\r\n\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
        .write_all(&common::upstream::pattern(0, 1000))
        .await
        .unwrap();
    let status = within(LIMIT, "the 408", read_response(&mut stream)).await;
    assert_eq!(status, 408);
    assert!(upstream.hits() >= 1, "the upload had begun upstream");
    assert!(upstream.upload_progress() < 100_000, "and was cut short");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_reads_nothing_is_cut_off() {
    let fx = limited(&[("timeouts.idle", "\"1s\"")]).await;
    let guard = &fx.guard;
    let mut stream = TcpStream::connect(guard.public).await.unwrap();
    // 64 MiB is far more than the socket buffers on both sides hold.
    let total = 64 * 1024 * 1024;
    let request = format!("GET /download?bytes={total} HTTP/1.1\r\nHost: guard.test\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    // The guard's writes now wait on a client that reads nothing: after the idle timeout
    // the guard gives the connection up.
    let deadline = tokio::time::Instant::now() + LIMIT;
    tokio::time::sleep(Duration::from_secs(1)).await;
    while metric(guard, "hti_guard_open_connections", &[]).await > 0.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the connection of a client that reads nothing stayed open"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let read = within(LIMIT, "the rest", read_to_close(&mut stream)).await;
    assert!(read.map_or(true, |bytes| bytes.len() < total), "cut short");
}

/// An h2c (prior knowledge) client connection to the guard with a 1 KiB stream window:
/// the client grants more only as a response body is read.
async fn h2_client(
    guard: &Guard,
) -> (
    hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
    tokio::task::JoinHandle<hyper::Result<()>>,
) {
    let stream = TcpStream::connect(guard.public).await.unwrap();
    let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(1024)
        .initial_connection_window_size(65535)
        .handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
        .await
        .unwrap();
    (sender, tokio::spawn(conn))
}

fn h2_get(path: &str) -> hyper::Request<Empty<Bytes>> {
    hyper::Request::get(format!("http://guard.test{path}"))
        .body(Empty::new())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_client_that_withholds_flow_control_credit_is_cut_off() {
    let fx = limited(&[("timeouts.idle", "\"1s\"")]).await;
    let guard = &fx.guard;
    let (mut sender, conn) = h2_client(guard).await;
    // The guard's clock for this stream starts after the request was sent.
    let begun = tokio::time::Instant::now();
    let response = within(
        LIMIT,
        "the response head",
        sender.send_request(h2_get("/download?bytes=10000000")),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    // The body is held and never read: the client sends no WINDOW_UPDATE, so the guard has
    // data to send and no credit to send it with.
    let mut body = response.into_body();
    let ended = within(
        Duration::from_secs(15),
        "the guard to close the connection of a client that withholds credit",
        conn,
    )
    .await;
    assert!(ended.is_ok(), "the connection task did not panic");
    assert!(
        begun.elapsed() >= Duration::from_millis(990),
        "not before the idle timeout: {:?}",
        begun.elapsed()
    );
    assert_eq!(metric(guard, "hti_guard_open_connections", &[]).await, 0.0);
    let read = within(LIMIT, "the held body", async {
        let mut got = 0;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => got += frame.data_ref().map_or(0, |d| d.len()),
                Err(_) => return Err(got),
            }
        }
        Ok(got)
    })
    .await;
    assert!(read.is_err(), "the held body was cut short: {read:?}");
    assert!(
        sender.send_request(h2_get("/after")).await.is_err(),
        "the connection is gone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_response_whose_upstream_is_quiet_longer_than_idle_is_not_cut() {
    let fx = limited(&[("timeouts.idle", "\"1s\"")]).await;
    let (upstream, guard) = (&fx.upstream, &fx.guard);
    let (mut sender, _conn) = h2_client(guard).await;

    // A quiet upstream mid-body (server-sent events): the first line, three idle timeouts of
    // nothing, then the rest. The client reads everything.
    let response = within(
        LIMIT,
        "the /hold head",
        sender.send_request(h2_get("/hold")),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let first = within(LIMIT, "the first line", body.frame()).await;
    let first = first
        .expect("a frame")
        .expect("no error")
        .into_data()
        .unwrap();
    assert_eq!(&first[..], b"first\n");
    tokio::time::sleep(Duration::from_secs(3)).await;
    upstream.release();
    let rest = within(LIMIT, "the rest", body.collect())
        .await
        .expect("not cut");
    assert_eq!(&rest.to_bytes()[..], b"second\n");

    // A response head that takes three idle timeouts, then a large body through the small
    // window, read as it comes, on the same connection.
    let response = within(
        LIMIT,
        "the slow head",
        sender.send_request(h2_get("/download?bytes=1000000&delay_ms=3000")),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    let all = within(LIMIT, "the download", response.into_body().collect())
        .await
        .expect("not cut");
    assert_eq!(all.to_bytes().len(), 1_000_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_max_connections_new_ones_wait_while_established_ones_are_served() {
    let fx = limited(&[("limits.max_connections", "2")]).await;
    let guard = &fx.guard;
    let mut first = TcpStream::connect(guard.public).await.unwrap();
    let mut second = TcpStream::connect(guard.public).await.unwrap();
    assert_eq!(within(LIMIT, "first", get_on(&mut first, "/1")).await, 200);
    assert_eq!(
        within(LIMIT, "second", get_on(&mut second, "/2")).await,
        200
    );

    // The kernel completes the third connection (backlog), but the guard does not take it.
    let mut third = TcpStream::connect(guard.public).await.unwrap();
    third
        .write_all(b"GET /3 HTTP/1.1\r\nHost: guard.test\r\n\r\n")
        .await
        .unwrap();
    let mut byte = [0u8; 1];
    let waited = tokio::time::timeout(Duration::from_millis(1500), third.read(&mut byte)).await;
    assert!(
        waited.is_err(),
        "the third connection was served beyond the limit"
    );
    assert_eq!(metric(guard, "hti_guard_open_connections", &[]).await, 2.0);

    // Established traffic goes on.
    assert_eq!(
        within(LIMIT, "first again", get_on(&mut first, "/1b")).await,
        200
    );
    assert_eq!(
        within(LIMIT, "second again", get_on(&mut second, "/2b")).await,
        200
    );

    // One closes: the third is served.
    drop(first);
    assert_eq!(within(LIMIT, "third", read_response(&mut third)).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn near_the_memory_limit_new_requests_get_503_overloaded() {
    // Any running guard is above 90 % of 1 MiB.
    let fx = Fixture::start_with(|b| b.set_str("limits.max_memory", "1MiB").no_wait_ready()).await;
    let (upstream, guard, client) = (&fx.upstream, &fx.guard, &fx.client);
    let deadline = tokio::time::Instant::now() + LIMIT;
    let response = loop {
        let response = client
            .get(guard.url("/x"))
            .header("accept", "application/json")
            .send()
            .await
            .unwrap();
        if response.status() == 503 {
            break response;
        }
        assert!(tokio::time::Instant::now() < deadline, "never refused");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        response.headers().get("connection").unwrap(),
        "close",
        "HTTP/1 clients let go of their connection"
    );
    expect_rejection(response, 503, "overloaded").await;
    let ready = client.get(guard.admin_url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let body = ready.text().await.unwrap();
    assert!(body.contains("overloaded"), "{body}");
    assert!(body.contains("limits.max_memory"), "{body}");
    assert!(
        metric(
            guard,
            "hti_guard_refused_total",
            &[("reason", "overloaded")]
        )
        .await
            >= 1.0
    );
    assert_eq!(upstream.hits(), 0, "nothing reached the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_a_roomy_memory_limit_requests_are_served() {
    let fx = limited(&[("limits.max_memory", "\"4GiB\"")]).await;
    let guard = &fx.guard;
    // Let the monitor read a few times.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let response = client().get(guard.url("/x")).send().await.unwrap();
    expect_echo(response).await;
}

/// The guard binary, run with an open-files limit of `nofile` through the shell's ulimit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_file_descriptors_the_accept_loop_neither_stalls_nor_gives_up() {
    let backends = Backends::start(JwksServer::start(&[mint::shared_key(Alg::RS512)]).await).await;
    let builder = backends
        .builder()
        .set("workers", "1")
        // The limit must not keep the guard from running out.
        .set("limits.max_connections", "10000");
    let served = Served::start_with(builder, |config| shell_with_nofile(64, config)).await;
    let public = served.public;

    // An established connection, with its upstream connection pooled.
    let mut established = TcpStream::connect(&public).await.unwrap();
    assert_eq!(
        within(LIMIT, "first", get_on(&mut established, "/a")).await,
        200
    );

    // Use up the guard's descriptors: 80 silent connections (the kernel completes them all).
    let mut hogs = Vec::new();
    for _ in 0..80 {
        hogs.push(TcpStream::connect(&public).await.unwrap());
    }
    // A new connection now waits in the backlog; the established one is still served.
    let mut waiting = TcpStream::connect(&public).await.unwrap();
    waiting
        .write_all(b"GET /b HTTP/1.1\r\nHost: guard.test\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        within(
            LIMIT,
            "established while out of fds",
            get_on(&mut established, "/c")
        )
        .await,
        200
    );

    // Descriptors free up: the waiting connection is served.
    drop(hogs);
    assert_eq!(
        within(LIMIT, "the waiting one", read_response(&mut waiting)).await,
        200
    );

    let stdout = served.kill().await.stdout;
    let failures = stdout.matches("accept failed").count();
    assert!(
        failures >= 1,
        "the guard did run out of descriptors:\n{stdout}"
    );
    // Logged at most once a second, not once per retry.
    assert!(failures <= 30, "{failures} accept failure lines");
}

fn shell_with_nofile(nofile: u32, config: &str) -> tokio::process::Command {
    let script = format!("ulimit -n {nofile} && exec \"$0\" serve --config \"$1\"");
    let mut command = program("sh", &["-c", &script, BIN, config]);
    command.env("RUST_LOG", "info");
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_admin_connection_is_closed_after_its_header_timeout() {
    let fx = Fixture::start().await;
    let mut stream = TcpStream::connect(fx.guard.admin).await.unwrap();
    let mut byte = [0u8; 1];
    // The admin listener's bound on a request's head is 10 s.
    let read = within(
        Duration::from_secs(20),
        "the admin listener closing a connection that sends nothing",
        stream.read(&mut byte),
    )
    .await;
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
}
