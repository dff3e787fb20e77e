//! Clients that hold or break connections: 2,000 slowloris connections, clients that abort
//! their upload or launch mid-body, and the guard binary at `ulimit -n 256` swamped with
//! connections: with its default `limits.max_connections` (also with 16 workers and every
//! connection holding an upstream one), and with the limit lifted so that it really runs
//! out of descriptors.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::mint::{self, Alg};
use crate::common::upstream::pattern;
use crate::common::*;
use crate::support::*;

/// Slowloris connections held at once.
const SLOWLORIS: usize = 2_000;

/// The soft open-files limit of this process (`Max open files` in /proc/self/limits).
fn nofile() -> (u64, u64) {
    let limits = std::fs::read_to_string("/proc/self/limits").expect("/proc/self/limits");
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .expect("Max open files");
    let numbers: Vec<u64> = line
        .split_whitespace()
        .filter_map(|word| word.parse().ok())
        .collect();
    (numbers[0], numbers[1])
}

/// Raises this process's soft open-files limit to `want` (with prlimit(1)), so that the
/// in-process guard and the test's own sockets fit; false (with a note) when it cannot.
fn raise_nofile(want: u64) -> bool {
    let (soft, hard) = nofile();
    if soft >= want {
        return true;
    }
    let missing = if hard < want {
        Some(format!("open-files hard limit {hard} is below {want}"))
    } else if !probe(
        "prlimit",
        &[
            "--pid",
            &std::process::id().to_string(),
            &format!("--nofile={want}:"),
        ],
    ) {
        Some("prlimit (util-linux) could not raise the open-files limit".to_string())
    } else {
        None
    };
    needs(missing)
}

/// Sends `request` on an open HTTP/1.1 connection and reads one Content-Length response:
/// gives its status and body.
async fn exchange(stream: &mut TcpStream, request: &str) -> (u16, String) {
    stream.write_all(request.as_bytes()).await.unwrap();
    read_response(stream).await
}

async fn read_response(stream: &mut TcpStream) -> (u16, String) {
    read_http1_response(stream).await
}

fn get_request(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: guard.test\r\nAccept: application/json\r\n\r\n")
}

fn launch_request(token: &str) -> String {
    let body = form(&[("token", token)]);
    format!(
        "POST /launch HTTP/1.1\r\nHost: guard.test\r\nAccept: application/json\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// The rejection reason of a JSON body, or "accepted" for a 200.
fn reason(status: u16, body: &str) -> String {
    if status == 200 {
        return "accepted".into();
    }
    let json: serde_json::Value = serde_json::from_str(body)
        .unwrap_or_else(|_| panic!("a JSON rejection, got {status}: {body}"));
    json["error"].as_str().unwrap_or_default().to_string()
}

async fn open_connections(guard: &Guard) -> f64 {
    metric(guard, "hti_guard_open_connections", &[]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_slowloris_connections_while_launches_are_served() {
    // Their 2,000 sockets and the guard's 2,000 live in this process.
    if !raise_nofile(8 * 1024) {
        return;
    }
    // Headers may take a minute here, so that every slowloris connection is still held.
    let fx = Fixture::start_with(|b| b.set_str("timeouts.request_headers", "60s")).await;
    let mut loris = Vec::with_capacity(SLOWLORIS);
    for _ in 0..SLOWLORIS {
        let mut stream = TcpStream::connect(fx.guard.public).await.unwrap();
        stream
            .write_all(b"GET /slow HTTP/1.1\r\nHost: guard.test\r\nX-Slow: a")
            .await
            .unwrap();
        loris.push(stream);
    }
    let guard = &fx.guard;
    eventually(
        LIMIT,
        "the guard holding every slowloris connection",
        || async { open_connections(guard).await >= SLOWLORIS as f64 },
    )
    .await;

    let client = client();
    for n in 0..10 {
        expect_echo(guard.launch(&client, &fx.good_token()).await).await;
        expect_echo(get(&client, &guard.url(&format!("/page/{n}"))).await).await;
    }
    assert_eq!(
        fx.upstream.hits(),
        20,
        "only the served requests reached the upstream"
    );
    // They were held throughout: none was answered or closed.
    let mut byte = [0u8; 1];
    for stream in loris.iter_mut().step_by(97) {
        let read = tokio::time::timeout(Duration::from_millis(1), stream.read(&mut byte)).await;
        assert!(read.is_err(), "a slowloris connection got an answer");
    }
    drop(client);
    drop(loris);
    eventually(LIMIT, "every connection gone", || async {
        open_connections(guard).await == 0.0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_aborting_mid_body_leak_no_connection_and_reach_nothing_whole() {
    // Two connections at most: a connection slot kept by an aborted client would show.
    let fx = Fixture::start_with(|b| b.set("limits.max_connections", "2")).await;
    let guard = &fx.guard;
    const DECLARED: usize = 1_000_000;
    for _ in 0..3 {
        // An upload streamed upstream, half sent, then the socket closed.
        // The progress of an earlier round's upload stays until the next one starts: this
        // round's is under way once the upstream has counted its request and got bytes.
        let before = fx.upstream.hits();
        let mut stream = TcpStream::connect(guard.public).await.unwrap();
        let head = format!(
            "POST /upload HTTP/1.1\r\nHost: guard.test\r\nContent-Length: {DECLARED}\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(&pattern(0, DECLARED / 2)).await.unwrap();
        let upstream = &fx.upstream;
        eventually(LIMIT, "the upload under way upstream", || async {
            upstream.hits() > before && upstream.upload_progress() > 0
        })
        .await;
        drop(stream);

        // A launch whose body breaks off: nothing of it reaches the upstream.
        let hits = fx.upstream.hits();
        let mut stream = TcpStream::connect(guard.public).await.unwrap();
        let request = launch_request(&fx.good_token());
        stream
            .write_all(&request.as_bytes()[..request.len() - 200])
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(stream);
        assert_eq!(fx.upstream.hits(), hits, "a broken-off launch went nowhere");
    }
    eventually(LIMIT, "the aborted connections gone", || async {
        open_connections(guard).await == 0.0
    })
    .await;
    assert!(
        fx.upstream.upload_progress() < DECLARED as u64,
        "the upstream never got a whole upload"
    );

    // Both connection slots are free: two kept-alive clients are served side by side.
    let mut first = TcpStream::connect(guard.public).await.unwrap();
    let mut second = TcpStream::connect(guard.public).await.unwrap();
    for stream in [&mut first, &mut second] {
        let (status, _) = within(LIMIT, "a request", exchange(stream, &get_request("/x"))).await;
        assert_eq!(status, 200);
    }
    let (status, body) = within(
        LIMIT,
        "a launch",
        exchange(&mut first, &launch_request(&fx.good_token())),
    )
    .await;
    assert_eq!(reason(status, &body), "accepted");
    // And a whole upload goes through.
    let length = 200_000;
    let head =
        format!("POST /upload HTTP/1.1\r\nHost: guard.test\r\nContent-Length: {length}\r\n\r\n");
    second.write_all(head.as_bytes()).await.unwrap();
    second.write_all(&pattern(0, length)).await.unwrap();
    let (status, body) = within(LIMIT, "the upload", read_response(&mut second)).await;
    assert_eq!(status, 200);
    let echo: Echo = serde_json::from_str(&body).unwrap();
    assert_eq!((echo.bytes, echo.pattern_ok), (length as u64, true));
}

/// The guard binary with an open-files limit of `nofile` through the shell's ulimit.
fn shell_with_nofile(nofile: u32, config: &str) -> tokio::process::Command {
    let script = format!("ulimit -n {nofile} && exec \"$0\" serve --config \"$1\"");
    let mut command = program("sh", &["-c", &script, BIN, config]);
    command.env("RUST_LOG", "info");
    command
}

/// A guard binary with one worker at `ulimit -n 256` (with `settings`), its issuer's JWKS about to rotate
/// to a second key, and one established connection.
async fn at_256(
    settings: &[(&str, &str)],
) -> (Served, Backends, SigningKey, SigningKey, TcpStream) {
    let first = SigningKey::generate(Alg::RS512);
    let backends = Backends::start(JwksServer::start(&[&first]).await).await;
    let builder = settings
        .iter()
        .fold(backends.builder().set("workers", "1"), |b, (key, value)| {
            b.set(key, value)
        });
    let served = Served::start_with(builder, |config| shell_with_nofile(256, config)).await;
    let mut established = TcpStream::connect(served.public).await.unwrap();
    let (status, _) = exchange(&mut established, &get_request("/a")).await;
    assert_eq!(status, 200);
    let second = SigningKey::generate(Alg::RS512);
    backends.jwks.set_keys(&[&first, &second]);
    (served, backends, first, second, established)
}

/// `hti_guard_open_connections` of the binary.
async fn served_open(served: &Served) -> f64 {
    let text = get(&client(), &served.admin_url("/metrics")).await;
    let text = text.text().await.unwrap();
    crate::common::metrics::value(&text, "hti_guard_open_connections", &[])
}

/// `count` connections that send nothing.
async fn hogs(served: &Served, count: usize) -> Vec<TcpStream> {
    let mut hogs = Vec::with_capacity(count);
    for _ in 0..count {
        hogs.push(TcpStream::connect(served.public).await.unwrap());
    }
    hogs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_ulimit_256_the_default_connection_limit_keeps_descriptors_for_the_work() {
    let (served, backends, _first, second, mut established) = at_256(&[]).await;
    // 200 connections: the default limit takes (256 - 64 - 4) / 2 = 94, the rest wait in the
    // listen backlog (511).
    let hogs = hogs(&served, 200).await;
    let mut waiting = TcpStream::connect(served.public).await.unwrap();
    waiting
        .write_all(get_request("/waiting").as_bytes())
        .await
        .unwrap();
    eventually(LIMIT, "the guard at its connection limit", || async {
        served_open(&served).await == 94.0
    })
    .await;

    // The established connection's launch signed with the new key: the unknown-kid
    // refetch has a descriptor, and so has the upstream request.
    let token = second.token(&mint::hti_claims(&backends.iss, AUDIENCE));
    let (status, body) = within(
        LIMIT,
        "a launch at the limit",
        exchange(&mut established, &launch_request(&token)),
    )
    .await;
    assert_eq!(reason(status, &body), "accepted", "{body}");
    assert_eq!(served_open(&served).await, 94.0, "no more than the limit");

    drop(hogs);
    let (status, _) = within(LIMIT, "the waiting connection", read_response(&mut waiting)).await;
    assert_eq!(status, 200);
    let stdout = served.kill().await.stdout;
    assert!(
        !stdout.contains("accept failed"),
        "never out of descriptors:\n{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_descriptors_at_ulimit_256_launches_fail_closed_and_recover() {
    // The limit lifted: 300 connections take every descriptor.
    let (served, backends, first, second, mut established) =
        at_256(&[("limits.max_connections", "10000")]).await;
    let hogs = hogs(&served, 300).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The key set cannot be fetched without a descriptor: a launch signed with the new key
    // is refused with 503, not accepted unverified; one with the known key goes through.
    let token = second.token(&mint::hti_claims(&backends.iss, AUDIENCE));
    let (status, body) = within(
        LIMIT,
        "a launch out of descriptors",
        exchange(&mut established, &launch_request(&token)),
    )
    .await;
    assert_eq!(reason(status, &body), "keys_unavailable", "{body}");
    let known = first.token(&mint::hti_claims(&backends.iss, AUDIENCE));
    let (status, body) = exchange(&mut established, &launch_request(&known)).await;
    assert_eq!(reason(status, &body), "accepted", "{body}");
    assert_eq!(
        backends.upstream.hits(),
        2,
        "the first GET and the known key's launch"
    );

    // Descriptors free up: new connections are served and the new key is fetched.
    drop(hogs);
    eventually(
        LIMIT,
        "the new key usable once descriptors are back",
        || {
            let token = second.token(&mint::hti_claims(&backends.iss, AUDIENCE));
            let public = served.public;
            async move {
                let mut fresh = TcpStream::connect(public).await.unwrap();
                let (status, body) = exchange(&mut fresh, &launch_request(&token)).await;
                match reason(status, &body).as_str() {
                    "accepted" => true,
                    "keys_unavailable" => false,
                    other => panic!("unexpected {other}: {body}"),
                }
            }
        },
    )
    .await;
    assert_eq!(backends.upstream.hits(), 3);
    let stdout = served.kill().await.stdout;
    assert!(
        stdout.contains("accept failed"),
        "the guard did run out of descriptors:\n{stdout}"
    );
}

/// Reads a response head; gives its status, or `None` when the connection ends first.
async fn head_status(stream: &mut TcpStream) -> Option<u16> {
    read_head(stream).await?.get(9..12)?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_ulimit_256_the_default_limit_leaves_each_worker_its_descriptors() {
    // 16 workers hold 4 descriptors each (their runtimes): the default limit leaves them
    // room, so that every connection it takes can open its upstream connection too:
    // (256 - 64 - 4 x 16) / 2 = 64.
    let backends = Backends::start(JwksServer::start(&[mint::shared_key(Alg::RS512)]).await).await;
    let builder = backends.builder().set("workers", "16");
    let served = Served::start_with(builder, |config| shell_with_nofile(256, config)).await;

    // 110 connections, each asking for a response the upstream holds open: each connection
    // the guard takes holds an upstream connection of its own.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut held = Vec::new();
    for _ in 0..110 {
        let mut stream = TcpStream::connect(served.public).await.unwrap();
        stream
            .write_all(get_request("/hold").as_bytes())
            .await
            .unwrap();
        let tx = tx.clone();
        held.push(tokio::spawn(async move {
            let _ = tx.send(head_status(&mut stream).await);
            std::future::pending::<()>().await;
            drop(stream);
        }));
    }
    let mut statuses = Vec::new();
    while statuses.len() < 64 {
        statuses.push(within(LIMIT, "a held response", rx.recv()).await.unwrap());
    }
    // Every connection taken has its answer: the limit is reached.
    eventually(LIMIT, "every taken connection answered", || {
        while let Ok(status) = rx.try_recv() {
            statuses.push(status);
        }
        let (served, answered) = (&served, statuses.len());
        async move { served_open(served).await == answered as f64 }
    })
    .await;
    assert!(
        statuses.iter().all(|status| *status == Some(200)),
        "each held request got its upstream connection: {statuses:?}"
    );
    assert_eq!(statuses.len(), 64, "the default limit");
    assert_eq!(backends.upstream.hits(), 64);
    for task in held {
        task.abort();
    }
    let stdout = served.kill().await.stdout;
    assert!(
        !stdout.contains("accept failed"),
        "never out of descriptors:\n{stdout}"
    );
}
