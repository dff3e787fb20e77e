//! The portal's auth server hanging: the introspection endpoint (Koppeltaal) and the SHOF
//! token endpoint. The launches or logins that wait on it get 503 after their timeout, with
//! nothing forwarded and no session; everything else is served while they wait; and the
//! next launch after the auth server recovers goes through.

use std::sync::Arc;

use crate::common::mint::{self, Alg};
use crate::common::*;
use crate::support::*;

const CLIENT_ID: &str = "module-client-faults";
const JWKS_PATH: &str = "/hti/module-keys";
const SESSION: &str = "hti_guard_session";
const JSON: &str = "application/json";
/// Launches or logins left waiting on the hanging endpoint at once.
const WAITING: usize = 4;

fn location(response: &reqwest::Response) -> String {
    let location = response.headers().get("location").expect("a Location");
    location.to_str().expect("ASCII Location").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_introspection_endpoint_refuses_its_launches_while_others_are_served() {
    let portal = SigningKey::generate(Alg::RS512);
    let auth = AuthServer::start(CLIENT_ID, vec![portal.jwk()]).await;
    let upstream = Upstream::start().await;
    let introspected = unique_issuer();
    let other_key = mint::shared_key(Alg::PS384);
    let other_jwks = JwksServer::start(&[other_key]).await;
    let other_iss = unique_issuer();
    let key_file = module_key_file();
    let guard = GuardBuilder::new(&upstream.url())
        .issuer_introspected(&introspected)
        .issuer(&other_iss, &other_jwks.url())
        .set_str("module.client_id", CLIENT_ID)
        .set(
            "module.signing_key_files",
            &format!("[{}]", toml_str(path_str(&key_file))),
        )
        .set_str("module.jwks_path", JWKS_PATH)
        .set_str("introspection.endpoint", &auth.introspection_endpoint())
        .set_str("introspection.token_endpoint", &auth.token_endpoint())
        .set_str("introspection.timeout", "3s")
        .start()
        .await;
    auth.set_guard_jwks_url(&guard.url(JWKS_PATH));
    let client = client();
    let token = || portal.token(&mint::hti_claims(&introspected, AUDIENCE));
    let launch = |token: String| {
        let (client, url) = (client.clone(), guard.url("/launch"));
        async move { post_form(&client, &url, &[("launch", &token)]).await }
    };
    assert_eq!(outcome(launch(token()).await).await, "accepted");

    auth.set_mode(AuthMode::Hang);
    let waiting: Vec<_> = (0..WAITING)
        .map(|_| tokio::spawn(launch(token())))
        .collect();
    // While they wait: the other issuer's launch and passthrough.
    let other = other_key.token(&mint::hti_claims(&other_iss, AUDIENCE));
    assert_eq!(outcome(launch(other).await).await, "accepted");
    expect_echo(get(&client, &guard.url("/page")).await).await;
    assert!(
        waiting.iter().all(|task| !task.is_finished()),
        "served while the introspections still waited"
    );
    for task in waiting {
        let response = within(LIMIT, "a waiting launch", task).await.unwrap();
        expect_rejection(response, 503, "introspection_unavailable").await;
    }
    assert_eq!(upstream.hits(), 3, "no waiting launch reached the upstream");
    assert_eq!(
        metric(
            &guard,
            "hti_guard_introspection_requests_total",
            &[("result", "error")]
        )
        .await,
        WAITING as f64
    );

    auth.set_mode(AuthMode::Verify);
    assert_eq!(outcome(launch(token()).await).await, "accepted");
    assert_eq!(upstream.hits(), 4);
}

/// A SHOF login up to the browser's return to the callback: gives the callback URL.
async fn to_callback(shof: &ShofFixture, browser: &Browser) -> String {
    let query = form(&[("iss", &shof.auth.fhir_base()), ("launch", &shof.token())]);
    let started = browser
        .get(&shof.guard.url(&format!("/launch?{query}")), JSON)
        .await;
    assert_eq!(started.status(), 302, "the launch redirects to authorize");
    let authorize = location(&started);
    let back = within(LIMIT, "authorize", client().get(&authorize).send())
        .await
        .expect("GET authorize");
    assert_eq!(back.status(), 302, "the auth server logs the person in");
    location(&back)
}

fn session_set(response: &reqwest::Response) -> bool {
    set_cookies(response)
        .iter()
        .any(|cookie| cookie.name == SESSION && !cookie.clears())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_shof_token_endpoint_refuses_its_logins_while_others_are_served() {
    let shof = ShofFixture::start_at("127.0.0.1", |b, _| b.set_str("shof.timeout", "3s")).await;
    shof.auth.set_token_mode(TokenMode::Hang);
    let mut waiting = Vec::new();
    for _ in 0..WAITING {
        let browser = Arc::new(Browser::new(&shof.guard.url("")));
        let back = to_callback(&shof, &browser).await;
        let task = {
            let browser = browser.clone();
            tokio::spawn(async move { browser.get(&back, JSON).await })
        };
        waiting.push(task);
    }
    // While they wait: another login starts, and the module's keys are served.
    let other = Browser::new(&shof.guard.url(""));
    to_callback(&shof, &other).await;
    let keys = get(&client(), &shof.guard.url(JWKS_PATH)).await;
    assert_eq!(keys.status(), 200);
    assert!(
        waiting.iter().all(|task| !task.is_finished()),
        "served while the token exchanges still waited"
    );
    for task in waiting {
        let response = within(LIMIT, "a waiting callback", task).await.unwrap();
        assert!(!session_set(&response), "no session without a token");
        expect_rejection(response, 503, "login_unavailable").await;
    }
    let logins = |result: &'static str, reason: &'static str| {
        let guard = &shof.guard;
        async move {
            metric(
                guard,
                "hti_guard_logins_total",
                &[("result", result), ("reason", reason)],
            )
            .await
        }
    };
    assert_eq!(
        logins("rejected", "login_unavailable").await,
        WAITING as f64
    );
    assert_eq!(logins("accepted", "none").await, 0.0);
    assert_eq!(
        shof.upstream.hits(),
        0,
        "nothing of a login reached the app"
    );

    // The token endpoint answers again: a new login ends in a session the app sees.
    shof.auth.set_token_mode(TokenMode::Answer);
    let browser = Browser::new(&shof.guard.url(""));
    let back = to_callback(&shof, &browser).await;
    let done = browser.get(&back, JSON).await;
    assert_eq!(done.status(), 303, "the login completes");
    assert!(session_set(&done));
    let echo = expect_echo(browser.get(&shof.guard.url(&location(&done)), JSON).await).await;
    assert_eq!(echo.header("x-hti-sub"), Some("Practitioner/123"));
    assert_eq!(shof.upstream.hits(), 1);
    assert_eq!(logins("accepted", "none").await, 1.0);
}
