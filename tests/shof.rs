//! The SHOF login (CONTRACT.md "SHOF"), black-box over real sockets: a portal's launch becomes
//! a SMART EHR launch at the mock auth server (which verifies the launch token, burns its jti,
//! checks PKCE, the registered redirect_uri and the guard's client assertion like the
//! reference server), the callback exchanges the code, and the session carries the launch
//! context to the app. A cookie-keeping client that follows no redirect plays the browser, so
//! every hop is asserted; every failure mode ends without a session, with its reason counted,
//! and nothing of a login ever reaches the upstream. Also: configuration errors naming their
//! keys, `check` and readiness against the auth server, no secret of a login in the logs, and
//! the mock itself driven directly (it must refuse what the reference refuses).

mod common;

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::metrics;
use common::mint::{self, Alg as MintAlg};
use common::shof_fixture::{
    CALLBACK, CLIENT_ID, JWKS_PATH, SESSION_SECRET as SECRET, shof_builder,
};
use common::*;
use serde_json::Value;

const SESSION: &str = "hti_guard_session";
const JSON: &str = "application/json";
const HTML: &str = "text/html";
/// `shof.timeout` of these guards.
const TIMEOUT: Duration = Duration::from_secs(2);

type Shof = ShofFixture;

/// A login the guard started: its redirect to authorize and the login cookie it set.
struct Started {
    location: String,
    params: Vec<(String, String)>,
    cookie: SetCookie,
}

impl Started {
    fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

fn query_of(url: &str) -> Vec<(String, String)> {
    let query = url.split_once('?').map(|(_, q)| q).unwrap_or_default();
    form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect()
}

fn location(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get("location")
        .map(|value| value.to_str().expect("ASCII Location").to_string())
}

/// The session cookie `response` sets (not one it clears), if any.
fn session_set(response: &reqwest::Response) -> Option<SetCookie> {
    set_cookies(response)
        .into_iter()
        .find(|cookie| cookie.name == SESSION && !cookie.clears())
}

impl Shof {
    async fn start() -> Shof {
        ShofFixture::start_at("127.0.0.1", |builder, _| builder).await
    }

    fn browser(&self) -> Browser {
        Browser::new(&self.guard.url(""))
    }

    /// The portal's launch as the PoC module takes it: GET `/launch?iss=..&launch=..`.
    async fn launch(&self, browser: &Browser, iss: &str, token: &str) -> reqwest::Response {
        let query = form(&[("iss", iss), ("launch", token)]);
        browser
            .get(&self.guard.url(&format!("/launch?{query}")), JSON)
            .await
    }

    /// Asserts the launch response is the redirect to authorize with its login cookie.
    fn started(&self, response: &reqwest::Response) -> Started {
        assert_eq!(response.status(), 302, "the launch redirects to authorize");
        let location = location(response).expect("a Location");
        assert!(
            location.starts_with(&format!("{}?", self.auth.authorization_endpoint())),
            "{location}"
        );
        let cookie = set_cookies(response)
            .into_iter()
            .find(|cookie| cookie.path() == CALLBACK && !cookie.clears())
            .unwrap_or_else(|| {
                panic!(
                    "a login cookie scoped to {CALLBACK}: {:?}",
                    response.headers().get_all("set-cookie")
                )
            });
        assert!(session_set(response).is_none(), "no session yet");
        Started {
            params: query_of(&location),
            location,
            cookie,
        }
    }

    /// Launches `token` in `browser` and gives the started login.
    async fn start_login(&self, browser: &Browser, token: &str) -> Started {
        let response = self.launch(browser, &self.auth.fhir_base(), token).await;
        self.started(&response)
    }

    /// The browser at the auth server (which logs the person in at once): gives the URL it
    /// redirects to, on the guard's callback.
    async fn authorize(&self, started: &Started) -> String {
        let response = within(
            Duration::from_secs(30),
            "authorize",
            client().get(&started.location).send(),
        )
        .await
        .expect("GET authorize");
        let status = response.status();
        let back = location(&response);
        let page = response.text().await.unwrap_or_default();
        assert_eq!(status, 302, "authorize answered {status}: {page}");
        let back = back.expect("a Location from authorize");
        assert!(
            back.starts_with(&format!("{}?", self.redirect_uri)),
            "{back}"
        );
        back
    }

    /// A login started and approved in another browser (the attacker's): the callback URL
    /// the auth server sent it to, with its code and state.
    async fn foreign_callback(&self) -> String {
        let other = self.browser();
        let started = self.start_login(&other, &self.token()).await;
        self.authorize(&started).await
    }

    /// The browser back at the guard's callback.
    async fn callback(&self, browser: &Browser, url: &str) -> reqwest::Response {
        browser.get(url, JSON).await
    }

    /// A whole login: launch, authorize, callback; gives the callback's response.
    async fn login(&self, browser: &Browser, token: &str) -> reqwest::Response {
        let started = self.start_login(browser, token).await;
        let back = self.authorize(&started).await;
        let response = self.callback(browser, &back).await;
        self.assert_cleared(browser, &started);
        response
    }

    fn assert_cleared(&self, browser: &Browser, started: &Started) {
        assert!(
            browser
                .cookies()
                .iter()
                .all(|cookie| !(cookie.name == started.cookie.name && cookie.path() == CALLBACK)),
            "the login cookie {} is cleared by the callback",
            started.cookie.name
        );
    }

    async fn logins(&self, result: &str, reason: &str) -> f64 {
        metrics::value(
            &self.guard.metrics().await,
            "hti_guard_logins_total",
            &[("result", result), ("reason", reason)],
        )
    }

    /// Asserts a refused callback: no session cookie, the JSON rejection, counted once as
    /// rejected with `reason`, and nothing upstream.
    async fn expect_refused(&self, response: reqwest::Response, status: u16, reason: &str) {
        assert!(
            session_set(&response).is_none(),
            "no session on {reason}: {:?}",
            response.headers().get_all("set-cookie")
        );
        expect_rejection(response, status, reason).await;
        assert_eq!(
            self.logins("rejected", reason).await,
            1.0,
            "{reason} counted"
        );
        assert_eq!(self.logins("accepted", "none").await, 0.0);
        assert_eq!(
            self.upstream.hits(),
            0,
            "nothing of a login reaches the app"
        );
    }
}

/// The claims of `X-HTI-Claims`.
fn claims_header(echo: &Echo) -> Value {
    let value = echo.header("x-hti-claims").expect("X-HTI-Claims");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(value).expect("base64url")).expect("JSON")
}

/// Asserts a completed login and that the session carries the launch's person to the app.
async fn expect_session(shof: &Shof, browser: &Browser, response: reqwest::Response, token: &str) {
    let status = response.status();
    let landing = location(&response);
    let session = session_set(&response);
    let text = response.text().await.unwrap_or_default();
    assert_eq!(status, 303, "the callback ends the login: {text}");
    assert_eq!(landing.as_deref(), Some("/task/abc"));
    let session = session.expect("a session cookie");
    assert!(session.attribute("httponly").is_some(), "{}", session.raw);
    let hits = shof.upstream.hits();
    let echo = expect_echo(browser.get(&shof.guard.url("/task/abc"), JSON).await).await;
    assert_eq!(shof.upstream.hits(), hits + 1);
    let launch = mint::payload_of(token);
    assert_eq!(echo.header("x-hti-sub"), Some("Practitioner/123"));
    assert_eq!(echo.header("x-hti-resource"), Some("Task/abc"));
    assert_eq!(echo.header("x-hti-jti"), launch["jti"].as_str());
    let context = claims_header(&echo);
    for name in ["iss", "sub", "resource", "jti"] {
        assert_eq!(
            context[name], launch[name],
            "{name} of the context: {context}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launch_logs_in_at_the_auth_server_and_the_app_sees_the_person() {
    let shof = Shof::start().await;
    let browser = shof.browser();
    let token = shof.token();
    let response = shof.launch(&browser, &shof.auth.fhir_base(), &token).await;
    let started = shof.started(&response);

    // Every SMART parameter of the contract.
    assert_eq!(started.param("response_type"), Some("code"));
    assert_eq!(started.param("client_id"), Some(CLIENT_ID));
    assert_eq!(
        started.param("redirect_uri"),
        Some(shof.redirect_uri.as_str())
    );
    assert_eq!(started.param("launch"), Some(token.as_str()));
    assert_eq!(started.param("scope"), Some("launch openid fhirUser"));
    assert_eq!(
        started.param("aud"),
        Some(shof.auth.fhir_base().as_str()),
        "aud is fhir_base byte for byte"
    );
    assert_eq!(started.param("code_challenge_method"), Some("S256"));
    let challenge = started.param("code_challenge").expect("code_challenge");
    assert_eq!(challenge.len(), 43, "S256 of a verifier: {challenge}");
    assert!(
        URL_SAFE_NO_PAD
            .decode(challenge)
            .is_ok_and(|d| d.len() == 32)
    );
    let state = started.param("state").expect("state");
    let state_bits = URL_SAFE_NO_PAD
        .decode(state)
        .unwrap_or_else(|e| panic!("state {state} is not base64url: {e}"));
    assert!(state_bits.len() >= 16, "state has >= 128 bits: {state}");
    assert_eq!(
        started.param("nonce"),
        None,
        "no nonce while shof.nonce is off"
    );

    // The login cookie.
    let cookie = &started.cookie;
    assert!(cookie.attribute("httponly").is_some(), "{}", cookie.raw);
    assert!(
        cookie
            .attribute("samesite")
            .is_some_and(|v| v.eq_ignore_ascii_case("lax")),
        "{}",
        cookie.raw
    );
    assert_eq!(cookie.path(), CALLBACK, "{}", cookie.raw);
    assert!(!cookie.value.contains(state), "the login cookie is sealed");
    assert_eq!(shof.upstream.hits(), 0);

    // The auth server saw exactly what the redirect said, and accepted it.
    let back = shof.authorize(&started).await;
    let authorizes = shof.auth.authorizes();
    assert_eq!(authorizes.len(), 1);
    assert_eq!(authorizes[0].refused, None);
    assert_eq!(
        query_of(&back)
            .iter()
            .find(|(k, _)| k == "state")
            .map(|(_, v)| v.as_str()),
        Some(state)
    );

    let response = shof.callback(&browser, &back).await;
    shof.assert_cleared(&browser, &started);
    assert_eq!(shof.upstream.hits(), 0, "the callback is not forwarded");
    expect_session(&shof, &browser, response, &token).await;
    assert_eq!(shof.auth.token_requests(), 1);
    // Every field of the contract's token request (the mock checked their values).
    let sent = &shof.auth.token_forms()[0];
    for name in [
        "grant_type",
        "code",
        "redirect_uri",
        "code_verifier",
        "client_id",
        "client_assertion_type",
        "client_assertion",
    ] {
        assert!(sent.iter().any(|(k, _)| k == name), "{name} in {sent:?}");
    }
    assert!(
        shof.auth.token_failures().is_empty(),
        "{:?}",
        shof.auth.token_failures()
    );
    let text = shof.guard.metrics().await;
    assert_eq!(
        metrics::value(
            &text,
            "hti_guard_logins_total",
            &[("result", "accepted"), ("reason", "none")]
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        metrics::value(&text, "hti_guard_login_duration_seconds_count", &[]),
        1.0,
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_posted_launch_logs_in_as_well() {
    let shof = Shof::start().await;
    let browser = shof.browser();
    let token = shof.token();
    let fields = [("iss", shof.auth.fhir_base()), ("launch", token.clone())];
    let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let response = browser
        .post_form(&shof.guard.url("/launch"), &fields, JSON)
        .await;
    let started = shof.started(&response);
    assert_eq!(started.param("launch"), Some(token.as_str()));
    let back = shof.authorize(&started).await;
    let response = shof.callback(&browser, &back).await;
    expect_session(&shof, &browser, response, &token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launch_for_another_fhir_base_is_refused_without_a_redirect() {
    let shof = Shof::start().await;
    let browser = shof.browser();
    let base = shof.auth.fhir_base();
    for iss in [
        "https://evil.example/fhir".to_string(),
        format!("{base}/"),
        base.to_uppercase(),
        String::new(),
    ] {
        let response = shof.launch(&browser, &iss, &shof.token()).await;
        assert!(location(&response).is_none(), "no redirect for iss {iss:?}");
        assert!(set_cookies(&response).iter().all(SetCookie::clears));
        expect_rejection(response, 400, "unknown_fhir_base").await;
    }
    assert!(shof.auth.authorizes().is_empty());
    assert_eq!(shof.upstream.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launch_without_a_token_is_missing_token() {
    let shof = Shof::start().await;
    let browser = shof.browser();
    let query = form(&[("iss", &shof.auth.fhir_base())]);
    let response = browser
        .get(&shof.guard.url(&format!("/launch?{query}")), JSON)
        .await;
    assert!(location(&response).is_none());
    expect_rejection(response, 400, "missing_token").await;
    // Two different tokens are no token to hand on either.
    let (one, other) = (shof.token(), shof.token());
    let query = form(&[
        ("iss", &shof.auth.fhir_base()),
        ("token", &one),
        ("launch", &other),
    ]);
    let response = browser
        .get(&shof.guard.url(&format!("/launch?{query}")), JSON)
        .await;
    assert!(location(&response).is_none());
    expect_rejection(response, 400, "conflicting_tokens").await;
    assert!(shof.auth.authorizes().is_empty());
    assert_eq!(shof.upstream.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callback_path_is_never_forwarded() {
    let shof = Shof::start().await;
    let browser = shof.browser();
    let response = browser.get(&shof.guard.url(CALLBACK), JSON).await;
    expect_rejection(response, 400, "login_state_mismatch").await;
    // The path as sent, and forms of it that normalise to it.
    for path in [
        CALLBACK,
        "/hti-guard//callback",
        "/hti-guard/./callback",
        "/hti-guard/%63allback",
    ] {
        let url = shof.guard.url(&format!("{path}?code=c&state=s"));
        let response = browser.get(&url, JSON).await;
        assert_eq!(response.status(), 400, "{path}");
    }
    let response = browser
        .post_form(
            &shof.guard.url(CALLBACK),
            &[("code", "c"), ("state", "s")],
            JSON,
        )
        .await;
    assert!(
        response.status().is_client_error(),
        "POST: {}",
        response.status()
    );
    assert_eq!(
        shof.upstream.hits(),
        0,
        "the callback never reaches the app"
    );
    assert_eq!(shof.auth.token_requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_callback_is_a_state_mismatch() {
    let shof = Shof::start().await;
    let browser = shof.browser();
    let token = shof.token();
    let started = shof.start_login(&browser, &token).await;
    let back = shof.authorize(&started).await;
    let first = shof.callback(&browser, &back).await;
    assert_eq!(first.status(), 303);
    let sessions = shof.upstream.hits();
    // The same URL again: the login cookie is gone, so the state matches nothing.
    let second = shof.callback(&browser, &back).await;
    assert!(session_set(&second).is_none());
    expect_rejection(second, 400, "login_state_mismatch").await;
    assert_eq!(shof.auth.token_requests(), 1, "no second token request");
    assert_eq!(shof.logins("rejected", "login_state_mismatch").await, 1.0);
    assert_eq!(shof.upstream.hits(), sessions);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_in_a_browser_that_did_not_start_the_login_is_refused() {
    // Login CSRF: the attacker's own login, finished in the victim's browser.
    let shof = Shof::start().await;
    let back = shof.foreign_callback().await;
    let victim = shof.browser();
    let response = shof.callback(&victim, &back).await;
    shof.expect_refused(response, 400, "login_state_mismatch")
        .await;
    assert_eq!(shof.auth.token_requests(), 0, "no token request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_from_another_login_is_refused() {
    let shof = Shof::start().await;
    let other_back = shof.foreign_callback().await;
    let browser = shof.browser();
    shof.start_login(&browser, &shof.token()).await;
    let response = shof.callback(&browser, &other_back).await;
    shof.expect_refused(response, 400, "login_state_mismatch")
        .await;
    assert_eq!(shof.auth.token_requests(), 0, "no token request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_login_cookie_is_a_state_mismatch() {
    let shof = Shof::start().await;
    let browser = shof.browser();
    let started = shof.start_login(&browser, &shof.token()).await;
    let back = shof.authorize(&started).await;
    let mut cookie = started.cookie.clone();
    let mut bytes = cookie.value.into_bytes();
    let i = bytes.len() / 2;
    bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
    cookie.value = String::from_utf8(bytes).unwrap();
    browser.keep(cookie);
    let response = shof.callback(&browser, &back).await;
    shof.expect_refused(response, 400, "login_state_mismatch")
        .await;
    assert_eq!(shof.auth.token_requests(), 0, "no token request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_injected_code_is_refused_by_pkce() {
    // Another login's code with this browser's own state: the verifier does not fit.
    let shof = Shof::start().await;
    let other_back = shof.foreign_callback().await;
    let stolen_code = query_of(&other_back)
        .into_iter()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1;
    let browser = shof.browser();
    let started = shof.start_login(&browser, &shof.token()).await;
    let state = started.param("state").unwrap();
    let injected = format!(
        "{}?{}",
        shof.redirect_uri,
        form(&[("code", &stolen_code), ("state", state)])
    );
    let response = shof.callback(&browser, &injected).await;
    shof.assert_cleared(&browser, &started);
    shof.expect_refused(response, 401, "login_failed").await;
    assert_eq!(shof.auth.token_requests(), 1);
    let failures = shof.auth.token_failures();
    assert!(
        failures.len() == 1 && failures[0].contains("PKCE"),
        "{failures:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_from_the_auth_server_is_login_denied_and_its_markup_stays_out() {
    let shof = Shof::start().await;
    const MARKUP: &str = "<script>alert('pwned')</script><b>Nope</b>";
    shof.auth.deny_with(Some(MARKUP));
    let browser = shof.browser();
    let response = shof.login(&browser, &shof.token()).await;
    shof.expect_refused(response, 401, "login_denied").await;
    assert_eq!(shof.auth.token_requests(), 0, "no token request");

    // The page a person sees.
    let started = shof.start_login(&browser, &shof.token()).await;
    let back = shof.authorize(&started).await;
    assert!(back.contains("error=access_denied"), "{back}");
    let response = browser.get(&back, HTML).await;
    shof.assert_cleared(&browser, &started);
    assert_eq!(response.status(), 401);
    assert!(session_set(&response).is_none());
    let page = response.text().await.unwrap();
    for piece in ["<script", "alert(", "<b>Nope"] {
        assert!(!page.contains(piece), "{piece} in the page: {page}");
    }
    assert_eq!(shof.upstream.hits(), 0);
}

/// A whole login, with the mock auth server set by `knob`, ends in `status` `reason` after
/// one token request (see [`Shof::expect_refused`]).
async fn login_refused(knob: impl FnOnce(&AuthServer), status: u16, reason: &str) {
    let shof = Shof::start().await;
    knob(&shof.auth);
    let browser = shof.browser();
    let response = shof.login(&browser, &shof.token()).await;
    shof.expect_refused(response, status, reason).await;
    assert_eq!(shof.auth.token_requests(), 1);
}

/// One test per failure mode of the token answer: `name: knob => status reason;`.
macro_rules! refused_logins {
    ($($name:ident: $knob:expr => $status:literal $reason:literal;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            login_refused($knob, $status, $reason).await;
        }
    )*};
}

refused_logins! {
    an_id_token_with_a_bad_signature_is_invalid:
        |auth: &AuthServer| auth.set_id_token(IdToken::BadSignature) => 401 "invalid_id_token";
    an_id_token_for_another_client_is_invalid:
        |auth: &AuthServer| auth.set_id_token(IdToken::WrongAud) => 401 "invalid_id_token";
    an_id_token_from_another_issuer_is_invalid:
        |auth: &AuthServer| auth.set_id_token(IdToken::WrongIss) => 401 "invalid_id_token";
    an_expired_id_token_is_invalid:
        |auth: &AuthServer| auth.set_id_token(IdToken::Expired) => 401 "invalid_id_token";
    a_token_answer_without_an_id_token_is_invalid:
        |auth: &AuthServer| auth.set_id_token(IdToken::Missing) => 401 "invalid_id_token";
    an_unsigned_id_token_is_invalid:
        |auth: &AuthServer| auth.set_id_token(IdToken::Unsigned) => 401 "invalid_id_token";
    an_id_token_issued_in_the_future_is_invalid:
        |auth: &AuthServer| auth.set_id_token(IdToken::IssuedInFuture) => 401 "invalid_id_token";
    an_id_token_not_yet_valid_is_invalid:
        |auth: &AuthServer| auth.set_id_token(IdToken::NotYetValid) => 401 "invalid_id_token";
    a_token_answer_without_the_launch_resource_is_invalid:
        |auth: &AuthServer| auth.omit_from_answer("resource") => 401 "invalid_id_token";
    a_refusing_token_endpoint_is_login_failed:
        |auth: &AuthServer| auth.set_token_mode(TokenMode::Refuse) => 401 "login_failed";
    a_failing_token_endpoint_is_login_unavailable:
        |auth: &AuthServer| auth.set_token_mode(TokenMode::Fail) => 503 "login_unavailable";
    a_token_endpoint_that_breaks_off_is_login_unavailable:
        |auth: &AuthServer| auth.set_token_mode(TokenMode::BreakOff) => 503 "login_unavailable";
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_token_from_an_unknown_key_is_invalid_after_one_refetch() {
    let shof = Shof::start().await;
    let fetched = shof.auth.jwks_hits();
    assert!(
        fetched >= 1,
        "the auth server's keys are fetched before ready"
    );
    shof.auth.set_id_token(IdToken::UnknownKey);
    let browser = shof.browser();
    let response = shof.login(&browser, &shof.token()).await;
    shof.expect_refused(response, 401, "invalid_id_token").await;
    assert_eq!(
        shof.auth.jwks_hits(),
        fetched + 1,
        "one refetch for the unknown kid"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_token_for_several_audiences_including_the_client_is_accepted() {
    let shof = Shof::start().await;
    shof.auth.set_id_token(IdToken::AudienceList);
    let browser = shof.browser();
    let token = shof.token();
    let response = shof.login(&browser, &token).await;
    expect_session(&shof, &browser, response, &token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_sub_in_the_context_the_id_tokens_sub_is_the_person() {
    let shof = Shof::start().await;
    shof.auth.omit_from_answer("sub");
    let browser = shof.browser();
    let response = shof.login(&browser, &shof.token()).await;
    assert_eq!(response.status(), 303);
    let echo = expect_echo(browser.get(&shof.guard.url("/task/abc"), JSON).await).await;
    // The mock's id_token names the launch's person.
    assert_eq!(echo.header("x-hti-sub"), Some("Practitioner/123"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_lives_session_ttl_not_the_launch_tokens_exp() {
    let shof =
        ShofFixture::start_at("127.0.0.1", |b, _| b.set_str("launch.clock_skew", "1s")).await;
    let browser = shof.browser();
    let mut claims = mint::hti_claims(&shof.portal_iss, AUDIENCE);
    claims["exp"] = serde_json::json!(mint::now() + 3);
    let token = shof.portal.token(&claims);
    let response = shof.login(&browser, &token).await;
    assert_eq!(response.status(), 303);
    // Past the launch token's exp and the skew; session.ttl is an hour.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let echo = expect_echo(browser.get(&shof.guard.url("/task/abc"), JSON).await).await;
    assert_eq!(echo.header("x-hti-sub"), Some("Practitioner/123"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_auth_server_key_is_fetched_once_and_accepted() {
    // The reference server makes a new key at each start.
    let shof = Shof::start().await;
    let fetched = shof.auth.jwks_hits();
    shof.auth.rotate_key();
    let browser = shof.browser();
    let token = shof.token();
    let response = shof.login(&browser, &token).await;
    expect_session(&shof, &browser, response, &token).await;
    assert_eq!(shof.auth.jwks_hits(), fetched + 1, "refetched once");
    assert_eq!(shof.logins("accepted", "none").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_token_endpoint_is_login_unavailable_within_the_timeout() {
    let shof = Shof::start().await;
    shof.auth.set_token_mode(TokenMode::Hang);
    let browser = shof.browser();
    let started = shof.start_login(&browser, &shof.token()).await;
    let back = shof.authorize(&started).await;
    let began = Instant::now();
    let response = shof.callback(&browser, &back).await;
    let took = began.elapsed();
    shof.assert_cleared(&browser, &started);
    // The mock holds the answer for a minute; the guard gives up after shof.timeout.
    assert!(
        took < TIMEOUT + Duration::from_secs(8),
        "answered after {took:?}"
    );
    shof.expect_refused(response, 503, "login_unavailable")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launch_token_seen_before_is_replayed_after_the_exchange() {
    // The reference server forgets the jtis it burned when it restarts; the guard does not.
    let shof = Shof::start().await;
    let token = shof.token();
    let browser = shof.browser();
    let first = shof.login(&browser, &token).await;
    expect_session(&shof, &browser, first, &token).await;
    let hits = shof.upstream.hits();
    shof.auth.forget_jtis();
    let again = shof.browser();
    let response = shof.login(&again, &token).await;
    assert!(session_set(&response).is_none());
    expect_rejection(response, 401, "replayed").await;
    assert_eq!(
        shof.auth.token_requests(),
        2,
        "refused after a good exchange"
    );
    assert_eq!(shof.logins("rejected", "replayed").await, 1.0);
    assert_eq!(shof.logins("accepted", "none").await, 1.0);
    assert_eq!(shof.upstream.hits(), hits);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_logins_started_in_two_tabs_both_complete() {
    let shof = Shof::start().await;
    let browser = shof.browser();
    let (first_token, second_token) = (shof.token(), shof.token());
    let first = shof.start_login(&browser, &first_token).await;
    let second = shof.start_login(&browser, &second_token).await;
    assert_ne!(first.param("state"), second.param("state"));
    assert_ne!(
        first.param("code_challenge"),
        second.param("code_challenge")
    );
    let logins: Vec<String> = browser
        .cookies()
        .iter()
        .filter(|cookie| cookie.path() == CALLBACK)
        .map(|cookie| cookie.name.clone())
        .collect();
    assert_eq!(
        logins.len(),
        2,
        "one login cookie per started login: {logins:?}"
    );
    let first_back = shof.authorize(&first).await;
    let second_back = shof.authorize(&second).await;
    // The second tab finishes first.
    let response = shof.callback(&browser, &second_back).await;
    shof.assert_cleared(&browser, &second);
    expect_session(&shof, &browser, response, &second_token).await;
    let response = shof.callback(&browser, &first_back).await;
    shof.assert_cleared(&browser, &first);
    expect_session(&shof, &browser, response, &first_token).await;
    assert_eq!(shof.logins("accepted", "none").await, 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shof_configuration_errors_name_their_keys() {
    let key_file = module_key_file();
    let base = || {
        GuardBuilder::new("http://127.0.0.1:9")
            .set_str("module.client_id", CLIENT_ID)
            .set(
                "module.signing_key_files",
                &format!("[{}]", toml_str(key_file.to_str().unwrap())),
            )
            .set("session.enabled", "true")
            .set_str("session.secret", SECRET)
            .set("shof.enabled", "true")
            .set_str("shof.fhir_base", "https://fhir.example/fhir")
            .set_str(
                "shof.redirect_uri",
                "https://module.example/hti-guard/callback",
            )
    };
    // The base itself is valid (offline: nothing is fetched).
    let dir = TempDir::new();
    let config = dir.write("config.toml", base().toml());
    let finished = run(command(&[
        "check",
        "--offline",
        "--config",
        path_str(&config),
    ]))
    .await;
    finished.assert_ok();

    let cases: Vec<(&str, String)> = vec![
        ("session", base().unset("session.enabled").toml()),
        ("session", base().set("session.enabled", "false").toml()),
        (
            "shof.redirect_uri",
            base()
                .set_str(
                    "shof.redirect_uri",
                    "https://module.example/hti-guard/callback?from=kt",
                )
                .toml(),
        ),
        (
            "shof.redirect_uri",
            base()
                .set_str(
                    "shof.redirect_uri",
                    "https://module.example/hti-guard/callback#top",
                )
                .toml(),
        ),
        ("shof.fhir_base", base().unset("shof.fhir_base").toml()),
        (
            "shof.redirect_uri",
            base().unset("shof.redirect_uri").toml(),
        ),
        ("module", base().unset("module.client_id").toml()),
        (
            "shof.timeout",
            base().set_str("shof.timeout", "soon").toml(),
        ),
        ("shof.colour", base().set_str("shof.colour", "blue").toml()),
    ];
    for (key, text) in cases {
        let config = dir.write("config.toml", &text);
        let finished = run(command(&[
            "check",
            "--offline",
            "--config",
            path_str(&config),
        ]))
        .await;
        assert_eq!(
            finished.code(),
            Some(2),
            "{key}: {}\n---\n{text}",
            finished.output()
        );
        assert!(
            finished.stderr.contains(key),
            "the message names {key}: {}\n---\n{text}",
            finished.output()
        );
    }
}

/// The mock itself, driven as a module would (no guard): it refuses what the reference
/// auth server refuses, so that the tests above prove something.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mock_auth_server_refuses_what_the_reference_refuses() {
    let portal = mint::shared_key(MintAlg::RS512);
    let auth = AuthServer::start(CLIENT_ID, vec![portal.jwk()]).await;
    let redirect_uri = "https://module.example/hti-guard/callback";
    auth.set_redirect_uri(redirect_uri);
    let module = mint::shared_key(MintAlg::RS512);
    let weak_alg = mint::shared_key(MintAlg::RS256);
    let jwks = JwksServer::start(&[module, weak_alg]).await;
    auth.set_guard_jwks_url(&jwks.url());
    let http = client();
    let portal_iss = unique_issuer();

    let authorize = |token: &str, aud: &str, verifier: &str| {
        let query = form(&[
            ("response_type", "code"),
            ("client_id", CLIENT_ID),
            ("redirect_uri", redirect_uri),
            ("scope", "launch openid fhirUser"),
            ("aud", aud),
            ("state", "st-1"),
            ("code_challenge", &common::shof_auth::s256(verifier)),
            ("code_challenge_method", "S256"),
            ("launch", token),
        ]);
        format!("{}?{query}", auth.authorization_endpoint())
    };
    let code_of = |response: &reqwest::Response| {
        let back = location(response).expect("a redirect back");
        assert!(back.starts_with(redirect_uri), "{back}");
        let query = query_of(&back);
        assert!(query.contains(&("state".into(), "st-1".into())), "{back}");
        query
            .into_iter()
            .find(|(k, _)| k == "code")
            .expect("a code")
            .1
    };
    let assertion = |key: &SigningKey, aud: &str, iat: i64| {
        key.token(&serde_json::json!({
            "iss": CLIENT_ID, "sub": CLIENT_ID, "aud": aud,
            "iat": iat, "exp": iat + 60, "jti": mint::random_jti(),
        }))
    };
    let exchange = |code: String, verifier: String, assertion: String| {
        let http = http.clone();
        let url = auth.token_endpoint();
        async move {
            let body = form(&[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", redirect_uri),
                ("code_verifier", &verifier),
                ("client_id", CLIENT_ID),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", &assertion),
            ]);
            let response = http
                .post(url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    let token_url = auth.token_endpoint();
    let now = mint::now();

    // Authorize: aud byte for byte, a launch token it verifies, each jti once.
    let token = portal.token(&mint::hti_claims(&portal_iss, AUDIENCE));
    let verifier = mint::random_hex(32);
    let fhir_base = auth.fhir_base();
    let refused = http
        .get(authorize(&token, &format!("{fhir_base}/"), &verifier))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    let stranger = SigningKey::generate(MintAlg::RS512);
    let forged = stranger.token(&mint::hti_claims(&portal_iss, AUDIENCE));
    let refused = http
        .get(authorize(&forged, &fhir_base, &verifier))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    let response = http
        .get(authorize(&token, &fhir_base, &verifier))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 302);
    let code = code_of(&response);
    let again = http
        .get(authorize(&token, &fhir_base, &verifier))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 400, "the launch jti is burned");
    let refusals: Vec<Option<String>> = auth.authorizes().into_iter().map(|a| a.refused).collect();
    assert!(
        refusals[0].is_some() && refusals[1].is_some() && refusals[2].is_none(),
        "{refusals:?}"
    );

    // Token endpoint: the client assertion as the reference checks it.
    let bad = [
        assertion(weak_alg, &token_url, now),
        assertion(module, &auth.introspection_endpoint(), now),
        assertion(module, &token_url, now + 60),
        assertion(&stranger, &token_url, now),
    ];
    for bad in bad {
        let (status, body) = exchange(code.clone(), verifier.clone(), bad).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("invalid_client"))
        );
    }
    // PKCE: a wrong verifier is refused, and the code is spent.
    let (status, body) = exchange(
        code.clone(),
        mint::random_hex(32),
        assertion(module, &token_url, now),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    let (status, _) = exchange(code, verifier, assertion(module, &token_url, now)).await;
    assert_eq!(status, 500, "an unknown code");

    // A good exchange.
    let token = portal.token(&mint::hti_claims(&portal_iss, AUDIENCE));
    let verifier = mint::random_hex(32);
    let response = http
        .get(authorize(&token, &fhir_base, &verifier))
        .send()
        .await
        .unwrap();
    let code = code_of(&response);
    let (status, body) = exchange(code, verifier, assertion(module, &token_url, now)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["access_token"], "NOOP");
    let launch = mint::payload_of(&token);
    for name in ["iss", "sub", "resource", "aud", "exp", "jti"] {
        assert_eq!(body[name], launch[name], "{name}");
    }
    let id_token = body["id_token"].as_str().unwrap();
    let header = jsonwebtoken::decode_header(id_token).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::RS512);
    let keys: jsonwebtoken::jwk::JwkSet = http
        .get(auth.jwks_uri())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key =
        jsonwebtoken::DecodingKey::from_jwk(keys.find(&header.kid.unwrap()).unwrap()).unwrap();
    let mut validation = jsonwebtoken::Validation::new(header.alg);
    validation.set_audience(&[CLIENT_ID]);
    validation.set_issuer(&[auth.issuer()]);
    let claims = jsonwebtoken::decode::<Value>(id_token, &key, &validation)
        .unwrap()
        .claims;
    assert_eq!(claims["azp"], CLIENT_ID);
    assert_eq!(claims["sub"], launch["sub"]);
    assert!(claims["nonce"].as_str().is_some_and(|n| !n.is_empty()));
    assert_eq!(auth.token_requests(), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_nonce_on_the_id_token_must_carry_the_logins_nonce() {
    let shof = ShofFixture::start_at("127.0.0.1", |b, _| b.set("shof.nonce", "true")).await;
    let browser = shof.browser();
    let token = shof.token();
    let started = shof.start_login(&browser, &token).await;
    let nonce = started.param("nonce").expect("a nonce sent").to_string();
    assert!(nonce.len() >= 16, "{nonce}");
    shof.auth.set_echo_nonce(true);
    let back = shof.authorize(&started).await;
    let response = shof.callback(&browser, &back).await;
    expect_session(&shof, &browser, response, &token).await;
    // The reference server's own random nonce does not do.
    shof.auth.set_echo_nonce(false);
    let hits = shof.upstream.hits();
    let response = shof.login(&browser, &shof.token()).await;
    assert!(session_set(&response).is_none());
    expect_rejection(response, 401, "invalid_id_token").await;
    assert_eq!(shof.logins("rejected", "invalid_id_token").await, 1.0);
    assert_eq!(shof.upstream.hits(), hits);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_older_than_login_ttl_is_a_state_mismatch() {
    let shof = ShofFixture::start_at("127.0.0.1", |b, _| b.set_str("shof.login_ttl", "1s")).await;
    let browser = shof.browser();
    let started = shof.start_login(&browser, &shof.token()).await;
    let back = shof.authorize(&started).await;
    // The browser still sends the cookie (as a client that ignores Max-Age would): the
    // guard's own check of the sealed time must refuse it.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let response = shof.callback(&browser, &back).await;
    shof.expect_refused(response, 400, "login_state_mismatch")
        .await;
    assert_eq!(shof.auth.token_requests(), 0, "no token request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_in_a_browser_that_did_not_start_the_login_is_a_state_mismatch() {
    // The state is checked before anything else, the error parameter included.
    let shof = Shof::start().await;
    shof.auth.deny_with(Some("no"));
    let back = shof.foreign_callback().await;
    assert!(back.contains("error=access_denied"), "{back}");
    let response = shof.callback(&shof.browser(), &back).await;
    shof.expect_refused(response, 400, "login_state_mismatch")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_waits_for_the_first_discovery() {
    let upstream = Upstream::start().await;
    let auth = AuthServer::start(CLIENT_ID, Vec::new()).await;
    let fhir_base = format!("{}/fhir", closed_origin());
    let callback = format!("http://127.0.0.1:9{CALLBACK}");
    let guard = shof_builder(&auth, &upstream, &callback)
        .set_str("shof.fhir_base", &fhir_base)
        .set_str("shof.timeout", "500ms")
        .no_wait_ready()
        .start()
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let response = guard.admin_get("/readyz").await;
    assert_eq!(response.status(), 503);
    let body = response.text().await.unwrap();
    assert!(
        body.contains("starting, awaiting SHOF smart-configuration"),
        "{body}"
    );
    // And a launch cannot be sent anywhere: no redirect.
    let query = form(&[("iss", &fhir_base), ("launch", "x.y.z")]);
    let response = within(
        Duration::from_secs(30),
        "launch",
        client()
            .get(guard.url(&format!("/launch?{query}")))
            .header("accept", JSON)
            .send(),
    )
    .await
    .unwrap();
    assert_ne!(response.status(), 302);
    assert!(response.status().as_u16() >= 500, "{}", response.status());
    assert_eq!(upstream.hits(), 0);

    // Without the startup wait the same outage is reported, not 503: every replica shares it.
    let guard = shof_builder(&auth, &upstream, &callback)
        .set_str("shof.fhir_base", &fhir_base)
        .set_str("shof.timeout", "500ms")
        .set_str("readiness.startup_wait", "0s")
        .start()
        .await;
    let response = guard.admin_get("/readyz").await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "degraded", "{body}");
    let degraded = body["degraded"].as_array().unwrap();
    assert!(
        degraded.iter().any(|d| d["dependency"] == "auth_server"),
        "{body}"
    );
    let metrics = guard.metrics().await;
    assert!(
        metrics.contains("hti_guard_dependency_up{dependency=\"auth_server\",issuer=\"\"} 0"),
        "{metrics}"
    );
    assert_eq!(upstream.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_logs_no_token_code_state_or_cookie() {
    let portal = mint::shared_key(MintAlg::RS512);
    let auth = AuthServer::start(CLIENT_ID, vec![portal.jwk()]).await;
    let upstream = Upstream::start().await;
    let public: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let builder = shof_builder(&auth, &upstream, &format!("http://{public}{CALLBACK}"));
    let served = Served::start_at(builder, public, |config| {
        let mut serve = command(&["serve", "--config", config]);
        serve.env("RUST_LOG", "debug");
        serve
    })
    .await;
    auth.set_guard_jwks_url(&served.url(JWKS_PATH));

    let browser = Browser::new(&served.url(""));
    let token = portal.token(&mint::hti_claims(&unique_issuer(), AUDIENCE));
    let query = form(&[("iss", &auth.fhir_base()), ("launch", &token)]);
    let launched = browser
        .get(&served.url(&format!("/launch?{query}")), JSON)
        .await;
    assert_eq!(launched.status(), 302);
    let login_cookie = set_cookies(&launched)
        .into_iter()
        .find(|cookie| cookie.path() == CALLBACK)
        .expect("a login cookie");
    let authorize = location(&launched).unwrap();
    let approved = client().get(&authorize).send().await.unwrap();
    let callback = location(&approved).expect("back to the callback");
    let done = browser.get(&callback, JSON).await;
    assert_eq!(done.status(), 303);
    let session = session_set(&done).expect("a session");
    expect_echo(browser.get(&served.url("/task/abc"), JSON).await).await;
    // The same callback again: refused, and audited as a refused login.
    let again = browser.get(&callback, JSON).await;
    assert_eq!(again.status(), 400);
    // Stopped, not killed: the log writer's queue is written out on the way.
    served.signal("-TERM").await;
    let finished = served.finish().await;

    // One audit event per login decision: started, accepted (with the launch context),
    // refused (with its reason and no claims).
    let events = finished.audit_events();
    let kinds: Vec<(&str, &str)> = events
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap_or_default(),
                e["outcome"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("login_start", "accepted"),
            ("login_callback", "accepted"),
            ("login_callback", "rejected"),
        ],
        "{events:#?}"
    );
    assert_eq!(events[0]["status"], 302);
    assert_eq!(events[1]["status"], 303);
    assert_eq!(events[1]["sub"], "Practitioner/123", "{}", events[1]);
    assert_eq!(events[1]["resource"], "Task/abc", "{}", events[1]);
    assert!(events[1]["jti"].is_string(), "{}", events[1]);
    assert_eq!(events[2]["reason"], "login_state_mismatch");
    assert!(events[2].get("sub").is_none(), "{}", events[2]);
    for e in &events {
        assert_eq!(e["client_address"], "127.0.0.1", "{e}");
    }

    let sent = query_of(&authorize);
    let back = query_of(&callback);
    let param = |pairs: &[(String, String)], name: &str| {
        pairs.iter().find(|(k, _)| k == name).unwrap().1.clone()
    };
    let signature = token.rsplit('.').next().unwrap().to_string();
    let secrets = [
        ("the launch token's signature", signature),
        ("the code", param(&back, "code")),
        ("the state", param(&sent, "state")),
        ("the code challenge", param(&sent, "code_challenge")),
        ("the login cookie", login_cookie.value.clone()),
        ("the session cookie", session.value.clone()),
    ];
    assert!(!finished.stdout.is_empty(), "the guard logged: {finished}");
    for (what, secret) in secrets {
        assert!(secret.len() >= 16, "{what}: {secret}");
        assert!(
            !finished.stdout.contains(&secret) && !finished.stderr.contains(&secret),
            "{what} is in the log:\n{finished}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_fetches_the_auth_servers_configuration_and_keys() {
    let upstream = Upstream::start().await;
    let auth = AuthServer::start(CLIENT_ID, Vec::new()).await;
    let builder = shof_builder(
        &auth,
        &upstream,
        "https://module.example/hti-guard/callback",
    );
    let dir = TempDir::new();
    let config = dir.write("config.toml", builder.toml());
    let finished = run(command(&["check", "--config", path_str(&config)])).await;
    finished.assert_ok();
    assert!(auth.discoveries() >= 1, "{finished}");
    assert!(auth.jwks_hits() >= 1, "{finished}");
    assert!(
        finished.stdout.contains(&auth.authorization_endpoint()),
        "check says what it found: {finished}"
    );
    // An auth server that does not answer: a warning (issue 18), not a problem; exit 0.
    let dead = builder.set_str("shof.fhir_base", &format!("{}/fhir", closed_origin()));
    let config = dir.write("config.toml", dead.toml());
    let finished = run(command(&["check", "--config", path_str(&config)])).await;
    assert_eq!(finished.code(), Some(0), "{finished}");
    assert!(
        finished.stdout.contains("~ auth_server_not_answering:"),
        "{finished}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_assertion_is_signed_with_the_first_module_key() {
    let files = [module_key_file(), module_key_file()];
    let shof = ShofFixture::start_at("127.0.0.1", |b, _| {
        b.set(
            "module.signing_key_files",
            &format!(
                "[{{ file = {}, kid = \"first\" }}, {{ file = {}, kid = \"second\" }}]",
                toml_str(files[0].to_str().unwrap()),
                toml_str(files[1].to_str().unwrap())
            ),
        )
    })
    .await;
    let browser = shof.browser();
    let token = shof.token();
    let response = shof.login(&browser, &token).await;
    expect_session(&shof, &browser, response, &token).await;
    let sent = &shof.auth.token_forms()[0];
    let assertion = &sent
        .iter()
        .find(|(k, _)| k == "client_assertion")
        .unwrap()
        .1;
    let header = jsonwebtoken::decode_header(assertion).unwrap();
    assert_eq!(header.kid.as_deref(), Some("first"));
    let claims = mint::payload_of(assertion);
    assert_eq!(claims["iss"], CLIENT_ID);
    assert_eq!(claims["sub"], CLIENT_ID);
    assert_eq!(claims["aud"], shof.auth.token_endpoint());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fhir_base_with_a_trailing_slash_goes_out_byte_for_byte() {
    // The reference server compares aud exactly, the slash included.
    let shof = ShofFixture::start_at("127.0.0.1", |b, auth| {
        b.set_str("shof.fhir_base", &format!("{}/", auth.fhir_base()))
    })
    .await;
    let with_slash = format!("{}/", shof.auth.fhir_base());
    shof.auth.expect_aud(&with_slash);
    let browser = shof.browser();
    let token = shof.token();
    // The launch's iss must be the configured base, slash and all.
    let response = shof.launch(&browser, &shof.auth.fhir_base(), &token).await;
    expect_rejection(response, 400, "unknown_fhir_base").await;
    let response = shof.launch(&browser, &with_slash, &token).await;
    let started = shof.started(&response);
    assert_eq!(started.param("aud"), Some(with_slash.as_str()));
    let back = shof.authorize(&started).await;
    let response = shof.callback(&browser, &back).await;
    expect_session(&shof, &browser, response, &token).await;
}
