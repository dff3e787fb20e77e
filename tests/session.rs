//! Sessions after the launch, over real sockets: the launch becomes a 303 with a sealed
//! cookie, later requests carry the person as `X-HTI-*` headers, protected paths need a
//! session, tampered cookies count as none, logout ends it.

mod common;

use std::time::Duration;

use common::mint;
use common::*;
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(30);
const SECRET: &str = "c2Vzc2lvbi1zZWNyZXQtZm9yLXRoZS10ZXN0cy0wMTIzNDU2Nzg5"; // 40 bytes

async fn start() -> Fixture {
    Fixture::start_with(|b| {
        b.set("session.enabled", "true")
            .set_str("session.secret", SECRET)
            .set_str("session.landing", "/task/{resource_id}")
            .set("session.public", "[\"/static/\"]")
    })
    .await
}

/// The `name=value` of our cookie from a response's Set-Cookie.
fn session_cookie(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("hti_guard_session="))
        .map(|v| v.split(';').next().unwrap().to_string())
}

async fn get(fx: &Fixture, path: &str, cookie: Option<&str>) -> reqwest::Response {
    let mut request = fx
        .client
        .get(fx.guard.url(path))
        .header("accept", "application/json");
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    within(LIMIT, "GET", request.send()).await.unwrap()
}

async fn metrics(fx: &Fixture) -> String {
    fx.guard.metrics().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launch_becomes_a_session_the_app_sees_on_every_request() {
    let fx = start().await;
    let response = fx.launch(&fx.good_token()).await;
    assert_eq!(response.status(), 303);
    assert_eq!(response.headers()["location"], "/task/abc");
    let set = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_string();
    for attribute in ["HttpOnly", "Secure", "SameSite=Lax", "Path=/"] {
        assert!(set.contains(attribute), "{attribute} in {set}");
    }
    assert_eq!(
        fx.upstream.hits(),
        0,
        "the launch POST itself is not forwarded"
    );
    let cookie = session_cookie(&response).unwrap();

    // The landing page, a reload and another page all carry the person.
    for path in ["/task/abc", "/task/abc", "/task/abc/answers"] {
        let response = get(&fx, path, Some(&format!("theme=dark; {cookie}; lang=nl"))).await;
        let echo = expect_echo(response).await;
        assert_eq!(echo.header("x-hti-sub"), Some("Practitioner/123"), "{path}");
        assert_eq!(echo.header("x-hti-resource"), Some("Task/abc"));
        assert_eq!(echo.header("x-hti-iss"), Some(fx.iss.as_str()));
        assert!(echo.header("x-hti-claims").is_some());
        assert_eq!(
            echo.header("cookie"),
            Some("theme=dark; lang=nl"),
            "our cookie is not passed on"
        );
    }
    // Spoofed headers next to a valid session are replaced by the session's.
    let response = fx
        .client
        .get(fx.guard.url("/task/abc"))
        .header("cookie", &cookie)
        .header("x-hti-sub", "Patient/mallory")
        .send()
        .await
        .unwrap();
    assert_eq!(
        expect_echo(response).await.header_all("x-hti-sub"),
        vec!["Practitioner/123"]
    );
    assert!(
        metrics(&fx)
            .await
            .contains(r#"hti_guard_sessions_total{event="created"} 1"#)
    );
}

/// Browsers send other cookies' UTF-8 as raw bytes (found by fuzz/session_cookie: such a
/// header hid the session and carried it on to the app).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cookie_header_with_raw_utf8_keeps_the_session() {
    let fx = start().await;
    let cookie = session_cookie(&fx.launch(&fx.good_token()).await).unwrap();
    let text = format!("name=Ren\u{e9}e; {cookie}; lang=nl");
    let response = fx
        .client
        .get(fx.guard.url("/task/abc"))
        .header(
            "cookie",
            reqwest::header::HeaderValue::from_bytes(text.as_bytes()).unwrap(),
        )
        .send()
        .await
        .unwrap();
    let echo = expect_echo(response).await;
    assert_eq!(echo.header("x-hti-sub"), Some("Practitioner/123"));
    assert_eq!(
        echo.header("cookie"),
        Some("name=Ren\u{e9}e; lang=nl"),
        "our cookie is not passed on"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protected_paths_need_a_session_public_ones_do_not() {
    let fx = start().await;
    let body: Value = expect_rejection(get(&fx, "/task/abc", None).await, 401, "no_session").await;
    assert!(body["message"].as_str().unwrap().contains("portal"));
    let html = fx
        .client
        .get(fx.guard.url("/task/abc"))
        .send()
        .await
        .unwrap();
    assert_eq!(html.status(), 401);
    assert!(
        html.text()
            .await
            .unwrap()
            .contains("start this module from your portal")
    );
    assert_eq!(fx.upstream.hits(), 0);
    let echo = expect_echo(get(&fx, "/static/app.css", None).await).await;
    assert!(echo.header("x-hti-sub").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_and_foreign_cookies_are_no_session() {
    let fx = start().await;
    let response = fx.launch(&fx.good_token()).await;
    let cookie = session_cookie(&response).unwrap();
    let mut bytes = cookie.into_bytes();
    let i = bytes.len() - 5;
    bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(bytes).unwrap();
    let response = get(&fx, "/task/abc", Some(&tampered)).await;
    let clears = session_cookie(&response).unwrap();
    assert_eq!(clears, "hti_guard_session=", "the bad cookie is cleared");
    expect_rejection(response, 401, "no_session").await;
    expect_rejection(
        get(&fx, "/task/abc", Some("hti_guard_session=forged")).await,
        401,
        "no_session",
    )
    .await;
    assert_eq!(fx.upstream.hits(), 0);
    assert!(
        metrics(&fx)
            .await
            .contains(r#"hti_guard_sessions_total{event="invalid"} 2"#)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_launch_replaces_the_session_and_logout_ends_it() {
    let fx = start().await;
    let first = session_cookie(&fx.launch(&fx.good_token()).await).unwrap();
    let mut claims = fx.claims();
    claims["resource"] = serde_json::json!("Task/second");
    claims["sub"] = serde_json::json!("Patient/p-2");
    let response = within(
        LIMIT,
        "second launch",
        fx.client
            .post(fx.guard.url("/launch"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("cookie", &first)
            .body(form(&[("token", &fx.token(&claims))]))
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(response.headers()["location"], "/task/second");
    let second = session_cookie(&response).unwrap();
    let echo = expect_echo(get(&fx, "/task/second", Some(&second)).await).await;
    assert_eq!(echo.header("x-hti-sub"), Some("Patient/p-2"));

    let response = within(
        LIMIT,
        "logout",
        fx.client
            .get(fx.guard.url("/hti-guard/logout"))
            .header("cookie", &second)
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(session_cookie(&response).unwrap(), "hti_guard_session=");
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("You have been signed out")
    );
    assert!(
        metrics(&fx)
            .await
            .contains(r#"hti_guard_sessions_total{event="logout"} 1"#)
    );
    // A client that ignores the cleared cookie still has a valid sealed value until it
    // expires; the browser drops it. Without it, the path is closed again.
    expect_rejection(get(&fx, "/task/second", None).await, 401, "no_session").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_launch_does_not_touch_the_session() {
    let fx = start().await;
    let token = fx.good_token();
    let cookie = session_cookie(&fx.launch(&token).await).unwrap();
    fx.expect_refused(&token, 401, "replayed").await;
    // The earlier session still works: reloading the landing page is a GET with the cookie.
    let echo = expect_echo(get(&fx, "/task/abc", Some(&cookie)).await).await;
    assert_eq!(
        echo.header("x-hti-jti"),
        mint::payload_of(&token)["jti"].as_str()
    );
}
