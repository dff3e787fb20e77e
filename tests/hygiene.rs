//! What an attacker found and what must now hold, over real sockets with raw bytes (an HTTP
//! client library would clean up the very paths and headers under test): only websocket
//! upgrades pass, every alias of a reserved header goes, a client's `Connection:` list cannot
//! remove a header the guard set, forwarding headers are the guard's own (kept and extended
//! only from a `trusted_proxies` peer), and paths are
//! normalised before the session rules and the launch paths are matched.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::mint;
use common::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const LIMIT: Duration = Duration::from_secs(30);
const SECRET: &str = "c2Vzc2lvbi1zZWNyZXQtZm9yLXRoZS10ZXN0cy0wMTIzNDU2Nzg5"; // 40 bytes

/// A response read off a raw connection.
#[derive(Debug)]
struct Raw {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {} {}",
                self.head,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The upstream's echo: what reached the app.
    fn echo(&self) -> Echo {
        assert_eq!(self.status, 200, "expected an echo: {self:?}");
        serde_json::from_slice(&self.body).expect("echo JSON")
    }

    fn reason(&self) -> String {
        self.json()["error"].as_str().unwrap_or_default().to_owned()
    }
}

/// Decode a chunked body (enough for the responses under test).
fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(end) = body.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size = std::str::from_utf8(&body[..end])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next()?.trim(), 16).ok())
            .unwrap_or(0);
        if size == 0 || body.len() < end + 2 + size {
            return out;
        }
        out.extend_from_slice(&body[end + 2..end + 2 + size]);
        body = &body[(end + 4 + size).min(body.len())..];
    }
}

/// Send `request` (its head must end with `Connection: close` or the guard must close) and
/// read the whole response.
async fn raw(addr: SocketAddr, request: &[u8]) -> Raw {
    within(LIMIT, "raw request", async {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream.write_all(request).await.expect("write");
        let mut bytes = Vec::new();
        stream.read_to_end(&mut bytes).await.expect("read");
        let split = bytes
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("no head in {:?}", String::from_utf8_lossy(&bytes)));
        let head = String::from_utf8_lossy(&bytes[..split]).into_owned();
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status");
        let rest = &bytes[split + 4..];
        let body = if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(rest)
        } else {
            rest.to_vec()
        };
        Raw { status, head, body }
    })
    .await
}

/// An HTTP/1.1 request: `start` (method and target), `Host`, `Accept: application/json`,
/// the `extra` header lines, then `body`.
fn request(start: &str, host: SocketAddr, extra: &[&str], body: &str) -> Vec<u8> {
    let mut text = format!("{start} HTTP/1.1\r\nHost: {host}\r\nAccept: application/json\r\n");
    for line in extra {
        text.push_str(line);
        text.push_str("\r\n");
    }
    text.push_str("\r\n");
    text.push_str(body);
    text.into_bytes()
}

/// A GET with `extra` header lines and `Connection: close`.
fn get(target: &str, host: SocketAddr, extra: &[&str]) -> Vec<u8> {
    let mut lines = vec!["Connection: close"];
    lines.extend_from_slice(extra);
    request(&format!("GET {target}"), host, &lines, "")
}

/// A launch POST with `extra` header lines.
fn launch_post(path: &str, host: SocketAddr, token: &str, extra: &[&str]) -> Vec<u8> {
    let body = form(&[("token", token)]);
    let length = format!("Content-Length: {}", body.len());
    let mut lines = vec![
        "Content-Type: application/x-www-form-urlencoded",
        length.as_str(),
    ];
    lines.extend_from_slice(extra);
    request(&format!("POST {path}"), host, &lines, &body)
}

/// An upstream that answers every request with `101 Switching Protocols` to what the
/// request's `Upgrade` asked for (as an h2c-capable server such as hypercorn does), or
/// with an echo of the header names when it asked for nothing. Counts requests.
async fn upgrading_upstream(
    always_101: bool,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let (listener, addr) = loopback("upgrading upstream").await;
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = hits.clone();
    accept_each(listener, move |mut stream| {
        let hits = counted.clone();
        tokio::spawn(async move {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            hits.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
            let upgrade = head
                .lines()
                .find_map(|l| l.strip_prefix("upgrade:").map(|v| v.trim().to_owned()));
            let response = match (upgrade, always_101) {
                (Some(to), _) => format!(
                    "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: {to}\r\n\r\n"
                ),
                (None, true) => "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n".to_owned(),
                (None, false) => {
                    let names: Vec<&str> = head
                        .lines()
                        .skip(1)
                        .filter_map(|l| l.split_once(':').map(|(n, _)| n.trim()))
                        .collect();
                    let body = serde_json::json!({ "names": names }).to_string();
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    )
                }
            };
            let _ = stream.write_all(response.as_bytes()).await;
            // After a 101, an h2c server would speak HTTP/2 here: send its preface-ish bytes.
            let _ = stream
                .write_all(b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
                .await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        });
    });
    (format!("http://{addr}"), hits)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2c_upgrade_never_opens_a_tunnel() {
    let (upstream, hits) = upgrading_upstream(false).await;
    let jwks = JwksServer::start(&[mint::shared_key(Alg::RS512)]).await;
    let guard = GuardBuilder::new(&upstream)
        .issuer(&unique_issuer(), &jwks.url())
        .set("session.enabled", "true")
        .set_str("session.secret", SECRET)
        .set("session.protected", "[\"/app/\"]")
        .set("session.public", "[\"/app/public/\"]")
        .start()
        .await;
    for path in ["/anything", "/app/public/x"] {
        let response = raw(
            guard.public,
            &get(
                path,
                guard.public,
                &[
                    "Connection: Upgrade, HTTP2-Settings",
                    "Upgrade: h2c",
                    "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA",
                ],
            ),
        )
        .await;
        assert_eq!(response.status, 200, "{path}: {response:?}");
        let names = response.json()["names"].clone();
        let names: Vec<String> = serde_json::from_value(names).unwrap();
        for gone in ["upgrade", "http2-settings"] {
            assert!(
                !names.iter().any(|n| n == gone),
                "{path}: {gone} reached the upstream: {names:?}"
            );
        }
    }
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_101_the_client_did_not_ask_for_is_a_502() {
    let (upstream, hits) = upgrading_upstream(true).await;
    let jwks = JwksServer::start(&[mint::shared_key(Alg::RS512)]).await;
    let guard = GuardBuilder::new(&upstream)
        .issuer(&unique_issuer(), &jwks.url())
        .start()
        .await;
    // Asked for h2c (dropped by the guard), and nothing at all: the upstream switches anyway.
    for extra in [&["Connection: Upgrade", "Upgrade: h2c"][..], &[][..]] {
        let response = raw(guard.public, &get("/x", guard.public, extra)).await;
        assert_eq!(response.status, 502, "{response:?}");
        assert_eq!(response.reason(), "upstream_unavailable");
    }
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dotted_aliases_of_reserved_headers_are_stripped() {
    let fx = Fixture::start().await;
    let response = raw(
        fx.guard.public,
        &get(
            "/page",
            fx.guard.public,
            &[
                "X.HTI.Sub: Patient/evil",
                "x-hti.claims: e30",
                "X_HTI.Iss: https://evil.example",
                "x.hti-resource: Task/evil",
            ],
        ),
    )
    .await;
    let echo = response.echo();
    let reserved: Vec<_> = echo
        .headers
        .iter()
        .filter(|(n, _)| {
            n.to_ascii_lowercase()
                .replace(['_', '.'], "-")
                .starts_with("x-hti-")
        })
        .collect();
    assert!(reserved.is_empty(), "{reserved:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_list_cannot_remove_the_trusted_headers() {
    let fx = Fixture::start().await;
    let token = fx.good_token();
    let response = raw(
        fx.guard.public,
        &launch_post(
            "/launch",
            fx.guard.public,
            &token,
            &["Connection: close, X-HTI-Sub, X-HTI-Claims, X-HTI-Iss, X-Request-Id, X-Forwarded-For"],
        ),
    )
    .await;
    let echo = response.echo();
    assert_eq!(echo.header("x-hti-sub"), Some("Practitioner/123"));
    assert!(echo.header("x-hti-claims").is_some());
    assert!(echo.header("x-hti-iss").is_some());
    assert!(echo.header("x-request-id").is_some());
    assert_eq!(echo.header("x-forwarded-for"), Some("127.0.0.1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_list_cannot_remove_the_session_headers() {
    let fx = Fixture::start_with(|b| {
        b.set("session.enabled", "true")
            .set_str("session.secret", SECRET)
    })
    .await;
    let cookie = session(&fx).await;
    let response = raw(
        fx.guard.public,
        &get(
            "/task",
            fx.guard.public,
            &[
                &format!("Cookie: {cookie}"),
                "Connection: X-HTI-Sub, X-HTI-Claims",
            ],
        ),
    )
    .await;
    let echo = response.echo();
    assert_eq!(echo.header("x-hti-sub"), Some("Practitioner/123"));
    assert!(echo.header("x-hti-claims").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_are_the_guards_own() {
    let fx = Fixture::start().await;
    let response = raw(
        fx.guard.public,
        &get(
            "/page",
            fx.guard.public,
            &[
                "X-Forwarded-For: 203.0.113.9",
                "X_Forwarded_For: 203.0.113.10",
                "X-Forwarded-Host: evil.example",
                "X-Forwarded-Proto: https",
                "Forwarded: for=203.0.113.11;proto=https;host=evil.example",
                "X-Real-IP: 203.0.113.12",
                "X-Original-URL: /admin",
                "X-Rewrite-URL: /admin",
                "X-Forwarded-Prefix: /evil",
            ],
        ),
    )
    .await;
    let echo = response.echo();
    assert_eq!(echo.header_all("x-forwarded-for"), vec!["127.0.0.1"]);
    assert_eq!(echo.header("x-forwarded-proto"), Some("http"));
    let own = fx.guard.public.to_string();
    assert_eq!(echo.header("x-forwarded-host"), Some(own.as_str()));
    for gone in [
        "forwarded",
        "x-real-ip",
        "x-original-url",
        "x-rewrite-url",
        "x-forwarded-prefix",
        "x_forwarded_for",
    ] {
        assert_eq!(echo.header(gone), None, "{gone} reached the app");
    }
}

/// What a client (or a proxy in front) sends as forwarding headers in the tests below.
const FORWARDING: &[&str] = &[
    "X-Forwarded-For: 203.0.113.9, 198.51.100.7",
    "X-Forwarded-Host: portal.example",
    "X-Forwarded-Proto: https",
    "Forwarded: for=203.0.113.9;proto=https;host=portal.example",
    "X-Real-IP: 203.0.113.12",
    "X-Original-URL: /admin",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_of_an_untrusted_peer_are_replaced() {
    // Proxies are trusted, but not this peer (127.0.0.1).
    let fx =
        Fixture::start_with(|b| b.set("trusted_proxies", r#"["10.0.0.0/8", "fd00::/8"]"#)).await;
    let response = raw(fx.guard.public, &get("/page", fx.guard.public, FORWARDING)).await;
    let echo = response.echo();
    assert_eq!(echo.header_all("x-forwarded-for"), vec!["127.0.0.1"]);
    assert_eq!(echo.header("x-forwarded-proto"), Some("http"));
    let own = fx.guard.public.to_string();
    assert_eq!(echo.header("x-forwarded-host"), Some(own.as_str()));
    for gone in ["forwarded", "x-real-ip", "x-original-url"] {
        assert_eq!(echo.header(gone), None, "{gone} reached the app");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxy_chain_is_kept_and_extended() {
    let fx = Fixture::start_with(|b| b.set("trusted_proxies", r#"["127.0.0.0/8"]"#)).await;
    let response = raw(fx.guard.public, &get("/page", fx.guard.public, FORWARDING)).await;
    let echo = response.echo();
    assert_eq!(
        echo.header_all("x-forwarded-for"),
        vec!["203.0.113.9, 198.51.100.7, 127.0.0.1"]
    );
    assert_eq!(echo.header("x-forwarded-proto"), Some("https"));
    assert_eq!(echo.header("x-forwarded-host"), Some("portal.example"));
    assert_eq!(
        echo.header("forwarded"),
        Some("for=203.0.113.9;proto=https;host=portal.example")
    );
    for gone in ["x-real-ip", "x-original-url"] {
        assert_eq!(echo.header(gone), None, "{gone} reached the app");
    }

    // A trusted peer that sent none: set from what the guard saw.
    let response = raw(fx.guard.public, &get("/page", fx.guard.public, &[])).await;
    let echo = response.echo();
    assert_eq!(echo.header_all("x-forwarded-for"), vec!["127.0.0.1"]);
    assert_eq!(echo.header("x-forwarded-proto"), Some("http"));
    let own = fx.guard.public.to_string();
    assert_eq!(echo.header("x-forwarded-host"), Some(own.as_str()));
}

/// Launch with a good token and give the session cookie's `name=value`.
async fn session(fx: &Fixture) -> String {
    let launched = fx.launch(&fx.good_token()).await;
    assert_eq!(launched.status(), 303);
    launched.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned()
}

/// A guard whose sessions protect `/admin` and `/tasks/` and leave `/static/` public.
async fn gated(case_insensitive: bool) -> Fixture {
    Fixture::start_with(|b| {
        b.set("session.enabled", "true")
            .set_str("session.secret", SECRET)
            .set("session.protected", "[\"/admin\", \"/tasks/\"]")
            .set("session.public", "[\"/static/\"]")
            .set(
                "session.case_insensitive_paths",
                if case_insensitive { "true" } else { "false" },
            )
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_are_normalised_before_the_session_rules() {
    let fx = gated(false).await;
    let host = fx.guard.public;
    let absolute = format!("http://{host}/static/../admin");
    for target in [
        "/static/../tasks/1",
        "/static/%2e%2e/tasks/1",
        "/static/%2E%2E/tasks/1",
        "/static/.%2e/admin",
        "/%61dmin",
        "//admin",
        "/./admin",
        "/x/../admin",
        "/static//../admin",
        absolute.as_str(),
    ] {
        let response = raw(host, &get(target, host, &[])).await;
        assert_eq!(response.status, 401, "{target}: {response:?}");
        assert_eq!(response.reason(), "no_session", "{target}");
    }
    for target in [
        "/static%2f..%2fadmin",
        "/static/..%2Fadmin",
        "/static/..%5cadmin",
        "/static/..;/admin",
        "/static/%2e%2e;x/admin",
        "/a%zz",
    ] {
        let response = raw(host, &get(target, host, &[])).await;
        assert_eq!(response.status, 400, "{target}: {response:?}");
        assert_eq!(response.reason(), "invalid_path", "{target}");
    }
    let connect = request(&format!("CONNECT {host}"), host, &["Connection: close"], "");
    let response = raw(host, &connect).await;
    assert_eq!(response.status, 405, "{response:?}");
    assert_eq!(response.reason(), "method_not_allowed");
    assert!(
        response
            .header("allow")
            .is_some_and(|a| !a.contains("CONNECT")),
        "{response:?}"
    );
    assert_eq!(fx.upstream.hits(), 0, "nothing reached the app");

    // Public paths pass, normalised, and the app sees the normalised path.
    let response = raw(host, &get("/static/./css//site.css?v=1", host, &[])).await;
    assert_eq!(response.echo().uri, "/static/css/site.css?v=1");
    let response = raw(host, &get("/%73tatic/a%20b", host, &[])).await;
    assert_eq!(response.echo().uri, "/static/a%20b");
    // Case-sensitive by default: /ADMIN is another path, and goes on as such.
    let response = raw(host, &get("/ADMIN", host, &[])).await;
    assert_eq!(response.echo().uri, "/ADMIN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_insensitive_apps_get_case_insensitive_rules() {
    let fx = gated(true).await;
    let host = fx.guard.public;
    for target in ["/ADMIN", "/Admin/users", "/TASKS/1", "/sTatic/../ADMIN"] {
        let response = raw(host, &get(target, host, &[])).await;
        assert_eq!(response.status, 401, "{target}: {response:?}");
        assert_eq!(response.reason(), "no_session", "{target}");
    }
    assert_eq!(fx.upstream.hits(), 0);
    let response = raw(host, &get("/STATIC/x.css", host, &[])).await;
    assert_eq!(response.echo().uri, "/STATIC/x.css");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_reaches_the_normalised_path() {
    let fx = gated(false).await;
    let cookie = session(&fx).await;
    let host = fx.guard.public;
    let response = raw(
        host,
        &get("/static/../tasks/1", host, &[&format!("Cookie: {cookie}")]),
    )
    .await;
    let echo = response.echo();
    assert_eq!(echo.uri, "/tasks/1");
    assert_eq!(echo.header("x-hti-sub"), Some("Practitioner/123"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launch_paths_are_matched_after_normalising() {
    let fx = Fixture::start().await;
    let host = fx.guard.public;
    for path in ["//launch", "/x/../launch", "/%6caunch"] {
        // A token that fails: a launch path must verify it, never pass it through.
        let response = raw(
            host,
            &launch_post(path, host, "not-a-token", &["Connection: close"]),
        )
        .await;
        assert_eq!(response.status, 401, "{path}: {response:?}");
        assert_eq!(response.reason(), "malformed_token", "{path}");
    }
    assert_eq!(fx.upstream.hits(), 0);
    let response = raw(
        host,
        &launch_post("/./launch", host, &fx.good_token(), &["Connection: close"]),
    )
    .await;
    let echo = response.echo();
    assert_eq!(echo.uri, "/launch");
    assert_eq!(echo.header("x-hti-sub"), Some("Practitioner/123"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cookie_of_another_deployment_is_refused() {
    let fx = gated(false).await;
    let cookie = session(&fx).await;
    // Module B: the same secret and issuer, another audience.
    let other = GuardBuilder::new(&fx.upstream.url())
        .issuer(&fx.iss, &fx.jwks.url())
        .set_str("launch.audience", "Device/module-b")
        .set("session.enabled", "true")
        .set_str("session.secret", SECRET)
        .set("session.protected", "[\"/admin\", \"/tasks/\"]")
        .start()
        .await;
    let response = raw(
        other.public,
        &get("/tasks/1", other.public, &[&format!("Cookie: {cookie}")]),
    )
    .await;
    assert_eq!(response.status, 401, "{response:?}");
    assert_eq!(response.reason(), "no_session");
    assert_eq!(fx.upstream.hits(), 0);
    // Module A still takes it.
    let host = fx.guard.public;
    let response = raw(
        host,
        &get("/tasks/1", host, &[&format!("Cookie: {cookie}")]),
    )
    .await;
    assert_eq!(
        response.echo().header("x-hti-sub"),
        Some("Practitioner/123")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cross_site_request_cannot_log_out() {
    let fx = gated(false).await;
    let cookie = session(&fx).await;
    let host = fx.guard.public;
    let with_cookie = format!("Cookie: {cookie}");
    let logout = |extra: &[&str]| {
        let mut lines = vec![
            with_cookie.as_str(),
            "Connection: close",
            "Content-Length: 0",
        ];
        lines.extend_from_slice(extra);
        request("POST /hti-guard/logout", host, &lines, "")
    };
    let evil_origin = "Origin: https://evil.example".to_owned();
    for extra in [
        vec!["Sec-Fetch-Site: cross-site"],
        vec![evil_origin.as_str()],
        vec!["Origin: null"],
    ] {
        let response = raw(host, &logout(&extra)).await;
        assert_eq!(response.status, 403, "{extra:?}: {response:?}");
        assert_eq!(response.reason(), "cross_site_request");
        assert!(
            response
                .header("set-cookie")
                .is_none_or(|c| !c.starts_with("hti_guard_session=;")),
            "{response:?}"
        );
    }
    // The session is still there.
    let response = raw(host, &get("/tasks/1", host, &[&with_cookie])).await;
    assert_eq!(
        response.echo().header("x-hti-sub"),
        Some("Practitioner/123")
    );
    // Same-origin, same-site and header-less logouts work.
    let own_origin = format!("Origin: http://{host}");
    for extra in [
        vec!["Sec-Fetch-Site: same-origin"],
        vec!["Sec-Fetch-Site: same-site"],
        vec![own_origin.as_str()],
        vec![],
    ] {
        let response = raw(host, &logout(&extra)).await;
        assert_eq!(response.status, 200, "{extra:?}: {response:?}");
        assert!(
            response
                .header("set-cookie")
                .is_some_and(|c| c.starts_with("hti_guard_session=;")),
            "{response:?}"
        );
    }
}
