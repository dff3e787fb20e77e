//! Everything that is not a launch: passthrough, header hygiene, streaming, upgrades,
//! upstream failures, h2c, TLS and the request-header timeout.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::mint;
use common::upstream::{pattern, pattern_byte};
use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

const LIMIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_keeps_method_path_host_and_sets_forwarded_headers() {
    let fx = Fixture::start().await;
    let response = fx
        .client
        .put(fx.guard.url("/some/path?a=1&b=two%20words"))
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-custom", "value")
        .header("cookie", "session=abc")
        .header("authorization", "Bearer app-token")
        .body("raw body")
        .send();
    let response = within(LIMIT, "passthrough", response).await.expect("PUT");
    assert_eq!(
        response.headers().get("x-upstream").map(|v| v.as_bytes()),
        Some(&b"mock"[..]),
        "upstream response headers come back"
    );
    let echo = expect_echo(response).await;
    assert_eq!(echo.method, "PUT");
    assert_eq!(echo.uri, "/some/path?a=1&b=two%20words");
    assert_eq!(echo.body, "raw body");
    let authority = fx.guard.public.to_string();
    assert_eq!(
        echo.header("host"),
        Some(authority.as_str()),
        "original Host kept"
    );
    assert_eq!(echo.header("x-forwarded-host"), Some(authority.as_str()));
    assert_eq!(echo.header("x-forwarded-proto"), Some("http"));
    let forwarded_for = echo.header_all("x-forwarded-for").join(", ");
    let hops: Vec<&str> = forwarded_for.split(',').map(str::trim).collect();
    assert_eq!(
        hops,
        vec!["127.0.0.1"],
        "the client's X-Forwarded-For is replaced by the peer: {forwarded_for}"
    );
    assert_eq!(echo.header("x-custom"), Some("value"));
    assert_eq!(echo.header("cookie"), Some("session=abc"));
    assert_eq!(echo.header("authorization"), Some("Bearer app-token"));
    let request_id = echo.header("x-request-id").expect("X-Request-Id set");
    assert!(!request_id.is_empty());
    assert!(echo.hti_headers().is_empty());
}

/// The target sent upstream is origin-form: an absolute-form request line (as a forward
/// proxy's client sends) loses its scheme and authority, and the path of `upstream`'s URL
/// goes before every path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_target_is_origin_form_under_the_upstream_path() {
    let backends = Backends::start(JwksServer::start(&[mint::shared_key(Alg::RS512)]).await).await;
    let base = format!("{}/base/", backends.upstream.url());
    let prefixed = backends.builder().set_str("upstream", &base).start().await;
    let plain = backends.builder().start().await;
    let cases = [
        (&plain, "GET /a/b?q=1 HTTP/1.1", "/a/b?q=1"),
        (
            &plain,
            "GET http://elsewhere.example/a/b?q=1 HTTP/1.1",
            "/a/b?q=1",
        ),
        (&prefixed, "GET /a/b?q=1 HTTP/1.1", "/base/a/b?q=1"),
        (&prefixed, "GET / HTTP/1.1", "/base/"),
        (
            &prefixed,
            "GET http://elsewhere.example/a HTTP/1.1",
            "/base/a",
        ),
    ];
    for (guard, line, upstream_saw) in cases {
        let mut stream = tokio::net::TcpStream::connect(guard.public)
            .await
            .expect("connect");
        let head = format!("{line}\r\nHost: module.example\r\nConnection: close\r\n\r\n");
        stream.write_all(head.as_bytes()).await.expect("write");
        let mut answer = Vec::new();
        within(LIMIT, line, stream.read_to_end(&mut answer))
            .await
            .expect("read");
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 200"), "{line}: {answer}");
        let body = &answer[answer.find("\r\n\r\n").expect("a head") + 4..];
        let echo: common::upstream::Echo = serde_json::from_str(body)
            .unwrap_or_else(|e| panic!("{line}: not an echo ({e}): {body}"));
        assert_eq!(echo.uri, upstream_saw, "{line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_id_is_kept_when_sane_and_replaced_otherwise() {
    let fx = Fixture::start().await;
    let send = |id: String| {
        fx.client
            .get(fx.guard.url("/page"))
            .header("x-request-id", id)
            .send()
    };
    let echo = expect_echo(
        within(LIMIT, "sane", send("req-4f2a9c".into()))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(echo.header("x-request-id"), Some("req-4f2a9c"));

    let insane = "a".repeat(1024);
    let echo = expect_echo(within(LIMIT, "insane", send(insane.clone())).await.unwrap()).await;
    let replaced = echo.header("x-request-id").expect("X-Request-Id");
    assert!(
        !replaced.is_empty() && replaced != insane,
        "an overlong id is replaced"
    );

    let first = expect_echo(
        within(LIMIT, "a", fx.client.get(fx.guard.url("/a")).send())
            .await
            .unwrap(),
    )
    .await;
    let second = expect_echo(
        within(LIMIT, "b", fx.client.get(fx.guard.url("/b")).send())
            .await
            .unwrap(),
    )
    .await;
    assert_ne!(first.header("x-request-id"), second.header("x-request-id"));
    assert_eq!(echo.header_all("x-request-id").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_hti_headers_are_stripped_on_passthrough() {
    let fx = Fixture::start().await;
    let response = fx
        .client
        .post(fx.guard.url("/app/form"))
        .header("X-HTI-Sub", "Patient/evil")
        .header(
            "x-hti-claims",
            mint::b64_json(&json!({"sub": "Patient/evil"})),
        )
        .header("X_HTI_Iss", "https://evil.example")
        .header("x-hti_patient", "Patient/evil")
        .header("X_Hti-Resource", "Task/evil")
        .header("x-htis", "not reserved")
        .header("x-hti", "not reserved either")
        .body("a=b")
        .send();
    let echo = expect_echo(within(LIMIT, "passthrough", response).await.unwrap()).await;
    assert!(
        echo.hti_headers().is_empty(),
        "left: {:?}",
        echo.hti_headers()
    );
    assert_eq!(echo.header("x-htis"), Some("not reserved"));
    assert_eq!(echo.header("x-hti"), Some("not reserved either"));
    assert_eq!(echo.body, "a=b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_hti_headers_are_replaced_on_launches() {
    let fx = Fixture::start().await;
    let token = fx.good_token();
    let response = fx
        .client
        .post(fx.guard.url("/launch"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("X-HTI-Sub", "Patient/evil")
        .header("X-HTI-Patient", "Patient/evil")
        .header("X_HTI_Patient", "Patient/evil")
        .header("x-hti_definition", "https://evil.example/ad")
        .header(
            "X-HTI-Claims",
            mint::b64_json(&json!({"sub": "Patient/evil"})),
        )
        .body(form(&[("token", &token)]))
        .send();
    let echo = expect_echo(within(LIMIT, "launch", response).await.unwrap()).await;
    assert_eq!(echo.header_all("x-hti-sub"), vec!["Practitioner/123"]);
    assert_eq!(echo.header_all("x-hti-claims").len(), 1);
    assert_eq!(
        echo.header("x-hti-patient"),
        None,
        "not in the token: not set"
    );
    assert_eq!(echo.header("x-hti-definition"), None);
    for (name, value) in echo.hti_headers() {
        assert!(!name.contains('_'), "alias left: {name}: {value}");
        assert!(
            !value.contains("evil"),
            "spoofed value left: {name}: {value}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_are_removed_both_ways() {
    let fx = Fixture::start().await;
    let response = fx
        .client
        .get(fx.guard.url("/hop"))
        .header("connection", "x-custom-hop")
        .header("x-custom-hop", "secret")
        .header("keep-alive", "timeout=5")
        .header("proxy-connection", "keep-alive")
        .header("proxy-authorization", "Basic c2VjcmV0")
        .header("x-echo-hop", "1")
        .header("x-normal", "kept")
        .send();
    let response = within(LIMIT, "hop", response).await.unwrap();
    let headers = response.headers().clone();
    let echo = expect_echo(response).await;
    for name in [
        "x-custom-hop",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
    ] {
        assert_eq!(echo.header(name), None, "{name} reached the upstream");
    }
    for value in echo.header_all("connection") {
        assert!(!value.contains("x-custom-hop"), "connection: {value}");
    }
    assert_eq!(echo.header("x-normal"), Some("kept"));

    assert!(
        headers.get("x-resp-hop").is_none(),
        "response header named in Connection"
    );
    assert!(headers.get("keep-alive").is_none(), "response keep-alive");
    assert_eq!(
        headers.get("x-resp-normal").map(|v| v.as_bytes()),
        Some(&b"kept"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_chunked_upload_streams_through() {
    let fx = Fixture::start().await;
    const TOTAL: u64 = 50 * 1024 * 1024;
    const CHUNK: u64 = 256 * 1024;
    let chunks = futures_util::stream::iter(
        (0..TOTAL / CHUNK)
            .map(|i| Ok::<_, std::io::Error>(Bytes::from(pattern(i * CHUNK, CHUNK as usize)))),
    );
    let response = fx
        .client
        .post(fx.guard.url("/upload"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send();
    let echo = expect_echo(within(LIMIT, "50 MiB upload", response).await.unwrap()).await;
    assert_eq!(echo.bytes, TOTAL);
    assert!(echo.pattern_ok, "the body arrived unchanged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_with_content_length_streams_through() {
    let fx = Fixture::start().await;
    let body = pattern(0, 8 * 1024 * 1024);
    let response = fx.client.post(fx.guard.url("/upload")).body(body).send();
    let echo = expect_echo(within(LIMIT, "8 MiB upload", response).await.unwrap()).await;
    assert_eq!(echo.bytes, 8 * 1024 * 1024);
    assert!(echo.pattern_ok);
    assert_eq!(echo.header("content-length"), Some("8388608"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_download_streams_through() {
    let fx = Fixture::start().await;
    const TOTAL: u64 = 50 * 1024 * 1024;
    let response = within(
        LIMIT,
        "download head",
        fx.client
            .get(fx.guard.url(&format!("/download?bytes={TOTAL}")))
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    let mut stream = response.bytes_stream();
    let mut offset = 0u64;
    within(LIMIT, "50 MiB download", async {
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.expect("download chunk");
            for (i, byte) in chunk.iter().enumerate() {
                assert_eq!(
                    *byte,
                    pattern_byte(offset + i as u64),
                    "byte {}",
                    offset + i as u64
                );
            }
            offset += chunk.len() as u64;
        }
    })
    .await;
    assert_eq!(offset, TOTAL);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_are_not_buffered() {
    let fx = Fixture::start().await;
    let mut response = within(
        LIMIT,
        "hold head",
        fx.client.get(fx.guard.url("/hold")).send(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    let first = within(
        Duration::from_secs(10),
        "first chunk before the upstream finished",
        response.chunk(),
    )
    .await
    .expect("chunk")
    .expect("a first chunk");
    assert_eq!(&first[..], b"first\n");
    fx.upstream.release();
    let mut rest = Vec::new();
    while let Some(chunk) = within(Duration::from_secs(10), "rest", response.chunk())
        .await
        .expect("chunk")
    {
        rest.extend_from_slice(&chunk);
    }
    assert_eq!(rest, b"second\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_not_buffered() {
    let fx = Fixture::start().await;
    const FIRST: usize = 64 * 1024;
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let body = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|item| (item, receiver))
    });
    let request = fx
        .client
        .post(fx.guard.url("/upload"))
        .body(reqwest::Body::wrap_stream(body))
        .send();
    let pending = tokio::spawn(request);
    sender
        .send(Ok(Bytes::from(pattern(0, FIRST))))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while fx.upstream.upload_progress() < FIRST as u64 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the upstream did not see the first part while the client was still sending"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sender
        .send(Ok(Bytes::from(pattern(FIRST as u64, FIRST))))
        .await
        .unwrap();
    drop(sender);
    let response = within(LIMIT, "upload end", pending).await.unwrap().unwrap();
    let echo = expect_echo(response).await;
    assert_eq!(echo.bytes, 2 * FIRST as u64);
    assert!(echo.pattern_ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_passes_through() {
    let fx = Fixture::start().await;
    let url = format!("ws://{}/ws", fx.guard.public);
    let (mut socket, response) = within(LIMIT, "ws connect", tokio_tungstenite::connect_async(url))
        .await
        .expect("WebSocket handshake through the guard");
    assert_eq!(response.status(), 101);
    for text in ["hello", "through the guard"] {
        within(LIMIT, "ws send", socket.send(Message::text(text)))
            .await
            .unwrap();
        let echoed = within(LIMIT, "ws receive", socket.next())
            .await
            .expect("a message")
            .expect("no error");
        assert_eq!(echoed.to_text().unwrap(), text);
    }
    let binary = mint::random_bytes(70_000);
    within(
        LIMIT,
        "ws send",
        socket.send(Message::binary(binary.clone())),
    )
    .await
    .unwrap();
    let echoed = within(LIMIT, "ws receive", socket.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(echoed.into_data().to_vec(), binary);
    let _ = socket.close(None).await;
    assert_eq!(fx.upstream.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_unavailable() {
    let key = mint::shared_key(Alg::RS512);
    let jwks = JwksServer::start(&[key]).await;
    let iss = unique_issuer();
    let guard = GuardBuilder::new(&closed_origin())
        .issuer(&iss, &jwks.url())
        .start()
        .await;
    let client = client();
    let response = client
        .get(guard.url("/page"))
        .header("accept", "application/json")
        .send();
    expect_rejection(
        within(LIMIT, "passthrough", response).await.unwrap(),
        502,
        "upstream_unavailable",
    )
    .await;

    let response = client
        .get(guard.url("/page"))
        .header("accept", "text/html")
        .send();
    let response = within(LIMIT, "html", response).await.unwrap();
    assert_eq!(response.status(), 502);
    assert!(
        response
            .headers()
            .get("content-type")
            .is_some_and(|value| value.to_str().unwrap_or_default().starts_with("text/html"))
    );

    let token = key.token(&mint::hti_claims(&iss, AUDIENCE));
    let response = guard.launch(&client, &token).await;
    expect_rejection(response, 502, "upstream_unavailable").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_timeout() {
    let fx =
        Fixture::start_with(|builder| builder.set_str("timeouts.upstream_response", "500ms")).await;
    let response = fx
        .client
        .get(fx.guard.url("/slow?delay_ms=5000"))
        .header("accept", "application/json")
        .send();
    expect_rejection(
        within(LIMIT, "slow passthrough", response).await.unwrap(),
        504,
        "upstream_timeout",
    )
    .await;

    fx.upstream.set_delay(Duration::from_secs(5));
    let response = within(LIMIT, "slow launch", fx.launch(&fx.good_token())).await;
    expect_rejection(response, 504, "upstream_timeout").await;

    fx.upstream.set_delay(Duration::ZERO);
    let response = within(LIMIT, "fast", fx.client.get(fx.guard.url("/fast")).send())
        .await
        .unwrap();
    expect_echo(response).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_prior_knowledge_is_served() {
    let fx = Fixture::start().await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = within(
        LIMIT,
        "h2c passthrough",
        h2.get(fx.guard.url("/h2?x=1"))
            .header("x-hti-sub", "Patient/evil")
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    let echo = expect_echo(response).await;
    assert_eq!(echo.uri, "/h2?x=1");
    assert!(echo.hti_headers().is_empty());
    let authority = fx.guard.public.to_string();
    assert_eq!(echo.header("host"), Some(authority.as_str()));

    let token = fx.good_token();
    let response = h2
        .post(fx.guard.url("/launch"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[("token", &token)]))
        .send();
    let echo = expect_echo(within(LIMIT, "h2c launch", response).await.unwrap()).await;
    assert_eq!(echo.header("x-hti-sub"), Some("Practitioner/123"));
    assert!(echo.body.is_empty());
}

/// The HTTP/2 preface (RFC 9113, section 3.4) and an empty SETTINGS frame.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const EMPTY_SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2c_preface_sent_in_two_pieces_is_still_http2() {
    let fx = Fixture::start().await;
    let mut stream = tokio::net::TcpStream::connect(fx.guard.public)
        .await
        .unwrap();
    stream.set_nodelay(true).unwrap();
    stream.write_all(&PREFACE[..10]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    stream.write_all(&PREFACE[10..]).await.unwrap();
    stream.write_all(EMPTY_SETTINGS).await.unwrap();
    // The server's first frame is its SETTINGS, not an HTTP/1 answer.
    let mut frame = [0u8; 9];
    within(
        LIMIT,
        "the guard's first frame",
        stream.read_exact(&mut frame),
    )
    .await
    .unwrap();
    assert_eq!(frame[3], 4, "a SETTINGS frame, got {frame:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preface_that_never_ends_is_cut_off_at_the_header_timeout() {
    let answer = what_a_head_that_never_ends_gets(&PREFACE[..16]).await;
    assert!(answer.is_empty(), "closed without an answer, got {answer}");
}

/// Sends `first` to a guard whose `timeouts.request_headers` is 1 s, and nothing more:
/// what the guard wrote before it closed (asserted within 15 s, and nothing reached the
/// upstream).
async fn what_a_head_that_never_ends_gets(first: &[u8]) -> String {
    let fx = Fixture::start_with(|builder| builder.set_str("timeouts.request_headers", "1s")).await;
    let mut stream = tokio::net::TcpStream::connect(fx.guard.public)
        .await
        .unwrap();
    stream.write_all(first).await.unwrap();
    let mut answer = Vec::new();
    // Ends at the close; a reset instead of a close is as good, and keeps what was read.
    let _closed_or_reset = within(
        Duration::from_secs(15),
        "the guard closing a connection whose head never ends",
        stream.read_to_end(&mut answer),
    )
    .await;
    assert_eq!(fx.upstream.hits(), 0);
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_listener() {
    let dir = TempDir::new();
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    let cert_pem = certified.cert.pem();
    let cert_file = dir.write("cert.pem", &cert_pem);
    let key_file = dir.write("key.pem", certified.signing_key.serialize_pem());

    let upstream = Upstream::start().await;
    let key = mint::shared_key(Alg::ES384);
    let jwks = JwksServer::start(&[key]).await;
    let iss = unique_issuer();
    let guard = GuardBuilder::new(&upstream.url())
        .issuer(&iss, &jwks.url())
        .set_str("tls.cert_file", cert_file.to_str().unwrap())
        .set_str("tls.key_file", key_file.to_str().unwrap())
        .start()
        .await;
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap()])
        .resolve("localhost", guard.public)
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let base = format!("https://localhost:{}", guard.public.port());

    let response = within(
        LIMIT,
        "https passthrough",
        client.get(format!("{base}/secure")).send(),
    )
    .await
    .expect("HTTPS request to the guard");
    let echo = expect_echo(response).await;
    assert_eq!(echo.header("x-forwarded-proto"), Some("https"));
    assert_eq!(echo.uri, "/secure");

    let token = key.token(&mint::hti_claims(&iss, AUDIENCE));
    let response = client
        .post(format!("{base}/launch"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[("token", &token)]))
        .send();
    let echo = expect_echo(within(LIMIT, "https launch", response).await.unwrap()).await;
    assert_eq!(echo.header("x-hti-iss"), Some(iss.as_str()));

    // Plain HTTP on the TLS port gets no proxied answer.
    let plain = client
        .get(format!("http://localhost:{}/plain", guard.public.port()))
        .send();
    if let Ok(response) = within(LIMIT, "plain http", plain).await {
        assert_ne!(response.status(), 200);
    }
    assert_eq!(upstream.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_request_headers_are_cut_off() {
    let answer =
        what_a_head_that_never_ends_gets(b"GET /slowloris HTTP/1.1\r\nHost: guard\r\nX-Partial: ")
            .await;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "unexpected answer: {answer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_exact_launch_paths_are_launches() {
    let fx = Fixture::start().await;
    for path in ["/launch/", "/launch/more", "/launchx", "/LAUNCH"] {
        let response = fx
            .client
            .get(fx.guard.url(path))
            .header("accept", "application/json")
            .send();
        let echo = expect_echo(within(LIMIT, path, response).await.unwrap()).await;
        assert_eq!(echo.path(), path);
    }
    assert_eq!(fx.upstream.hits(), 4);
}

/// An upstream that counts the connections it accepts, answers `ok` to every request, and
/// with `close_idle` closes each connection that long after it was opened, without a
/// `Connection: close` (as a keep-alive timeout does).
struct CountingUpstream {
    url: String,
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl CountingUpstream {
    async fn start(close_idle: Option<Duration>) -> CountingUpstream {
        use std::sync::atomic::Ordering;
        let (listener, addr) = loopback("counting upstream").await;
        let url = format!("http://{addr}");
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = accepted.clone();
        let task = accept_each(listener, move |stream| {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_request| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(
                        http_body_util::Full::new(Bytes::from_static(b"ok")),
                    ))
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                match close_idle {
                    Some(after) => {
                        let _ = tokio::time::timeout(after, conn).await;
                    }
                    None => {
                        let _ = conn.await;
                    }
                }
            });
        });
        CountingUpstream {
            url,
            accepted,
            task,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for CountingUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A guard with one worker in front of `upstream`, and the JWKS it was started with.
async fn one_worker_before(upstream: &CountingUpstream) -> (Guard, JwksServer) {
    let jwks = JwksServer::start(&[mint::shared_key(Alg::RS512)]).await;
    let guard = GuardBuilder::new(&upstream.url)
        .issuer(&unique_issuer(), &jwks.url())
        .set("workers", "1")
        .start()
        .await;
    (guard, jwks)
}

async fn get_ok(client: &reqwest::Client, url: &str) {
    let response = within(LIMIT, "passthrough", client.get(url).send())
        .await
        .expect("response");
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.expect("body"), "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_are_reused() {
    let upstream = CountingUpstream::start(None).await;
    let (guard, _jwks) = one_worker_before(&upstream).await;
    let client = client();
    for _ in 0..20 {
        get_ok(&client, &guard.url("/page")).await;
    }
    // A new client connection each time: the worker's pool still serves them all.
    for _ in 0..5 {
        get_ok(&self::client(), &guard.url("/page")).await;
    }
    assert_eq!(
        upstream.accepted(),
        1,
        "one upstream connection for 25 requests"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_the_upstream_closed_are_not_used() {
    let upstream = CountingUpstream::start(Some(Duration::from_millis(100))).await;
    let (guard, _jwks) = one_worker_before(&upstream).await;
    let client = client();
    for _ in 0..4 {
        get_ok(&client, &guard.url("/page")).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(
        upstream.accepted(),
        4,
        "a new connection after each idle close"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_left_unread_does_not_leave_bytes_for_the_next() {
    let fx = Fixture::start_with(|b| b.set("workers", "1")).await;
    let response = within(
        LIMIT,
        "download head",
        fx.client
            .get(fx.guard.url("/download?bytes=20000000"))
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    let mut stream = response.bytes_stream();
    let first = within(LIMIT, "first chunk", stream.next())
        .await
        .expect("a chunk")
        .expect("chunk");
    assert_eq!(first[0], pattern_byte(0));
    drop(stream);
    // The next request on a fresh client gets its own, whole answer.
    for _ in 0..3 {
        let echo = expect_echo(
            within(LIMIT, "next", client().get(fx.guard.url("/after")).send())
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(echo.uri, "/after");
    }
}
