//! A mock Koppeltaal auth server: `/.well-known/smart-configuration` under a FHIR base, an
//! introspection endpoint that really checks the guard's client assertion (signature with a
//! key fetched from the guard's JWKS path, `iss` = `sub` = client_id, `aud`, lifetime at most
//! 5 minutes, `jti` never seen before) before it says whether a token is active, and the SHOF
//! login (authorize, token endpoint, its own JWKS: see [`super::shof_auth`]). Tokens are
//! active when they verify against the portal keys the server knows.

use std::collections::HashSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value, json};
use tokio::task::JoinHandle;

use super::host::{accept_each, loopback};
use super::shof_auth::{self, AuthorizeRequest, IdToken, Shof, TokenMode};
use super::upstream::read_body;

/// How the introspection endpoint answers (after checking the assertion).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMode {
    /// active when the token verifies with a known portal key, else inactive.
    Verify,
    /// always `{"active": false}`.
    Inactive,
    /// 500.
    Error500,
    /// 200 with a body that is not JSON.
    NotJson,
    /// never answers.
    Hang,
}

pub(super) struct State {
    pub(super) client_id: String,
    guard_jwks_url: Mutex<String>,
    portal_keys: Mutex<Vec<Value>>,
    mode: Mutex<AuthMode>,
    /// Overrides of the claims returned for an active token.
    claim_overrides: Mutex<Map<String, Value>>,
    seen_jtis: Mutex<HashSet<String>>,
    introspections: AtomicUsize,
    assertion_failures: Mutex<Vec<String>>,
    /// The claims of every client assertion received (before any check).
    assertions: Mutex<Vec<Map<String, Value>>>,
    /// Served instead of the usual smart-configuration, when set.
    discovery_document: Mutex<Option<Value>>,
    discoveries: AtomicUsize,
    pub(super) shof: Shof,
}

/// The mock auth server.
pub struct AuthServer {
    addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl AuthServer {
    /// A server that expects assertions from `client_id`, signed with a key published at
    /// `guard_jwks_url` (settable later, once the guard runs).
    pub async fn start(client_id: &str, portal_keys: Vec<Value>) -> AuthServer {
        let (listener, addr) = loopback("auth server").await;
        let state = Arc::new(State {
            client_id: client_id.to_string(),
            guard_jwks_url: Mutex::new(String::new()),
            portal_keys: Mutex::new(portal_keys),
            mode: Mutex::new(AuthMode::Verify),
            claim_overrides: Mutex::new(Map::new()),
            seen_jtis: Mutex::new(HashSet::new()),
            introspections: AtomicUsize::new(0),
            assertion_failures: Mutex::new(Vec::new()),
            assertions: Mutex::new(Vec::new()),
            discovery_document: Mutex::new(None),
            discoveries: AtomicUsize::new(0),
            shof: Shof::new(),
        });
        let accept_state = state.clone();
        let task = accept_each(listener, move |stream| {
            let state = accept_state.clone();
            let service = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(req, state, addr).await) }
            });
            tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
        });
        AuthServer { addr, state, task }
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }
    pub fn fhir_base(&self) -> String {
        format!("{}/fhir", self.base())
    }
    pub fn introspection_endpoint(&self) -> String {
        format!("{}/oauth2/introspect", self.base())
    }
    pub fn token_endpoint(&self) -> String {
        format!("{}/oauth2/token", self.base())
    }
    pub fn set_guard_jwks_url(&self, url: &str) {
        *self.state.guard_jwks_url.lock().unwrap() = url.to_string();
    }
    pub fn set_mode(&self, mode: AuthMode) {
        *self.state.mode.lock().unwrap() = mode;
    }
    pub fn override_claim(&self, name: &str, value: Value) {
        self.state
            .claim_overrides
            .lock()
            .unwrap()
            .insert(name.to_string(), value);
    }
    /// Introspection requests received (whatever came of them).
    pub fn introspections(&self) -> usize {
        self.state.introspections.load(Ordering::SeqCst)
    }
    pub fn discoveries(&self) -> usize {
        self.state.discoveries.load(Ordering::SeqCst)
    }
    /// The claims of the client assertions received, in order.
    pub fn assertions(&self) -> Vec<Map<String, Value>> {
        self.state.assertions.lock().unwrap().clone()
    }
    /// Serve `document` as the smart-configuration from now on.
    pub fn set_discovery_document(&self, document: Value) {
        *self.state.discovery_document.lock().unwrap() = Some(document);
    }
    /// Why client assertions were refused, in order.
    pub fn assertion_failures(&self) -> Vec<String> {
        self.state.assertion_failures.lock().unwrap().clone()
    }

    /// The `issuer` of the smart-configuration (and of the id_tokens).
    pub fn issuer(&self) -> String {
        self.base()
    }
    pub fn authorization_endpoint(&self) -> String {
        format!("{}/oauth2/authorize", self.base())
    }
    pub fn jwks_uri(&self) -> String {
        format!("{}/.well-known/jwks.json", self.base())
    }
    /// The module's registered redirect_uri (authorize refuses any other).
    pub fn set_redirect_uri(&self, uri: &str) {
        self.state.shof.set_redirect_uri(uri);
    }
    /// The `aud` authorize requires from now on (default [`Self::fhir_base`], exactly).
    pub fn expect_aud(&self, aud: &str) {
        self.state.shof.set_aud(aud);
    }
    /// The `aud` a launch token must have (default [`super::AUDIENCE`]).
    pub fn set_launch_audience(&self, aud: &str) {
        self.state.shof.set_launch_audience(aud);
    }
    /// Authorize answers `error=access_denied&error_description=<description>` (after its
    /// checks) instead of a code; `None`: codes again.
    pub fn deny_with(&self, description: Option<&str>) {
        self.state.shof.set_deny(description);
    }
    pub fn set_token_mode(&self, mode: TokenMode) {
        self.state.shof.set_token_mode(mode);
    }
    pub fn set_id_token(&self, kind: IdToken) {
        self.state.shof.set_id_token(kind);
    }
    /// Token answers without `field` (of the launch context, or any other) from now on.
    pub fn omit_from_answer(&self, field: &str) {
        self.state.shof.omit(field);
    }
    /// The id_token carries the authorize request's `nonce` (when it had one) instead of a
    /// random one of the server's own (what the reference server does).
    pub fn set_echo_nonce(&self, echo: bool) {
        self.state.shof.set_echo_nonce(echo);
    }
    /// Forgets the launch jtis authorize burned, as the reference server does on a restart.
    pub fn forget_jtis(&self) {
        self.state.shof.forget_jtis();
    }
    /// A new signing key (new kid) that replaces the published one, as the reference server
    /// does on a restart.
    pub fn rotate_key(&self) {
        self.state.shof.rotate_key();
    }
    /// Every authorize request received, in order.
    pub fn authorizes(&self) -> Vec<AuthorizeRequest> {
        self.state.shof.authorizes()
    }
    /// Token requests received (whatever came of them).
    pub fn token_requests(&self) -> usize {
        self.state.shof.token_requests()
    }
    /// The form fields of every token request, in order.
    pub fn token_forms(&self) -> Vec<Vec<(String, String)>> {
        self.state.shof.token_forms()
    }
    /// Why token requests were refused by the checks, in order.
    pub fn token_failures(&self) -> Vec<String> {
        self.state.shof.token_failures()
    }
    /// Fetches of the server's own JWKS (`jwks_uri`).
    pub fn jwks_hits(&self) -> usize {
        self.state.shof.jwks_hits()
    }
}

impl Drop for AuthServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub(super) fn json_response(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    response
}

async fn handle(
    req: Request<Incoming>,
    state: Arc<State>,
    addr: SocketAddr,
) -> Response<Full<Bytes>> {
    let base = format!("http://{addr}");
    match (req.method().as_str(), req.uri().path()) {
        // Also under a base written with a trailing slash, as a client may join it.
        (
            "GET",
            "/fhir/.well-known/smart-configuration" | "/fhir//.well-known/smart-configuration",
        ) => {
            state.discoveries.fetch_add(1, Ordering::SeqCst);
            let document = state.discovery_document.lock().unwrap().clone();
            let mut response = json_response(
                StatusCode::OK,
                &document.unwrap_or_else(|| {
                    json!({
                        "issuer": base,
                        "authorization_endpoint": format!("{base}/oauth2/authorize"),
                        "introspection_endpoint": format!("{base}/oauth2/introspect"),
                        "token_endpoint": format!("{base}/oauth2/token"),
                        "jwks_uri": format!("{base}/.well-known/jwks.json"),
                    })
                }),
            );
            response
                .headers_mut()
                .insert("cache-control", "max-age=60".parse().unwrap());
            response
        }
        ("POST", "/oauth2/introspect") => {
            state.introspections.fetch_add(1, Ordering::SeqCst);
            let body = read_body(req).await;
            let form: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
            let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
            if let Some(claims) = field("client_assertion").and_then(|a| unverified_claims(&a)) {
                state.assertions.lock().unwrap().push(claims);
            }
            if let Err(why) = check_assertion(
                &state,
                field("client_assertion_type"),
                field("client_assertion"),
                &format!("{base}/oauth2/token"),
                &[Algorithm::RS512, Algorithm::ES256, Algorithm::PS256],
                false,
            )
            .await
            {
                state.assertion_failures.lock().unwrap().push(why.clone());
                return json_response(
                    StatusCode::UNAUTHORIZED,
                    &json!({"error": "invalid_client", "error_description": why}),
                );
            }
            let mode = *state.mode.lock().unwrap();
            match mode {
                AuthMode::Hang => {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    json_response(StatusCode::OK, &json!({"active": false}))
                }
                AuthMode::Error500 => {
                    json_response(StatusCode::INTERNAL_SERVER_ERROR, &json!({"error": "boom"}))
                }
                AuthMode::NotJson => {
                    let mut r =
                        Response::new(Full::new(Bytes::from_static(b"<html>maintenance</html>")));
                    r.headers_mut()
                        .insert("content-type", "text/html".parse().unwrap());
                    r
                }
                AuthMode::Inactive => json_response(StatusCode::OK, &json!({"active": false})),
                AuthMode::Verify => {
                    let token = field("token").unwrap_or_default();
                    match verify_portal_token(&state, &token, None) {
                        Some(mut claims) => {
                            for (k, v) in state.claim_overrides.lock().unwrap().iter() {
                                claims.insert(k.clone(), v.clone());
                            }
                            claims.insert("active".into(), json!(true));
                            json_response(StatusCode::OK, &Value::Object(claims))
                        }
                        None => json_response(StatusCode::OK, &json!({"active": false})),
                    }
                }
            }
        }
        ("GET", "/oauth2/authorize") => {
            let query = req.uri().query().unwrap_or_default().to_string();
            let aud = state.shof.aud().unwrap_or_else(|| format!("{base}/fhir"));
            shof_auth::authorize(&state, &query, &aud)
        }
        ("POST", "/oauth2/token") => {
            let body = read_body(req).await;
            shof_auth::token(&state, &body, &base).await
        }
        ("GET", "/.well-known/jwks.json") => shof_auth::jwks(&state),
        _ => json_response(StatusCode::NOT_FOUND, &json!({"error": "not found"})),
    }
}

/// The payload of a compact JWS, unverified.
fn unverified_claims(token: &str) -> Option<Map<String, Value>> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Does the HTI token verify with one of the portal keys (and have `audience`, when given)?
/// Its claims if so.
pub(super) fn verify_portal_token(
    state: &State,
    token: &str,
    audience: Option<&str>,
) -> Option<Map<String, Value>> {
    let header = jsonwebtoken::decode_header(token).ok()?;
    let kid = header.kid?;
    let keys = state.portal_keys.lock().unwrap().clone();
    let jwk: Jwk =
        serde_json::from_value(keys.into_iter().find(|k| k["kid"] == kid.as_str())?).ok()?;
    let key = DecodingKey::from_jwk(&jwk).ok()?;
    let mut validation = Validation::new(header.alg);
    match audience {
        Some(aud) => validation.set_audience(&[aud]),
        None => validation.validate_aud = false,
    }
    validation.set_required_spec_claims(&["exp"]);
    jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation)
        .ok()
        .map(|d| d.claims)
}

/// RFC 7523 checks of the guard's client assertion: `aud` exactly `audience`, an alg among
/// `algorithms`, and with `strict_iat` no `iat` in the future (the reference token endpoint
/// allows no leeway).
pub(super) async fn check_assertion(
    state: &State,
    kind: Option<String>,
    assertion: Option<String>,
    audience: &str,
    algorithms: &[Algorithm],
    strict_iat: bool,
) -> Result<(), String> {
    if kind.as_deref() != Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer") {
        return Err(format!("client_assertion_type is {kind:?}"));
    }
    let assertion = assertion.ok_or("no client_assertion")?;
    let header = jsonwebtoken::decode_header(&assertion).map_err(|e| format!("header: {e}"))?;
    let kid = header.kid.ok_or("assertion header has no kid")?;
    let url = state.guard_jwks_url.lock().unwrap().clone();
    let jwks: JwkSet = reqwest::get(&url)
        .await
        .map_err(|e| format!("guard JWKS {url}: {e}"))?
        .json()
        .await
        .map_err(|e| format!("guard JWKS not JSON: {e}"))?;
    let jwk = jwks
        .find(&kid)
        .ok_or_else(|| format!("kid {kid} not in the guard's JWKS"))?;
    let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("jwk: {e}"))?;
    if !algorithms.contains(&header.alg) {
        return Err(format!("unexpected assertion alg {:?}", header.alg));
    }
    let mut validation = Validation::new(header.alg);
    validation.set_audience(&[audience]);
    validation.set_issuer(&[state.client_id.as_str()]);
    validation.sub = Some(state.client_id.clone());
    validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
    let claims = jsonwebtoken::decode::<Map<String, Value>>(&assertion, &key, &validation)
        .map_err(|e| format!("assertion: {e}"))?
        .claims;
    let iat = claims.get("iat").and_then(Value::as_i64).ok_or("no iat")?;
    let exp = claims.get("exp").and_then(Value::as_i64).ok_or("no exp")?;
    if exp - iat > 300 {
        return Err(format!("assertion lives {}s", exp - iat));
    }
    if strict_iat && iat > super::mint::now() {
        return Err(format!("assertion iat {iat} is in the future"));
    }
    let jti = claims
        .get("jti")
        .and_then(Value::as_str)
        .ok_or("no jti")?
        .to_string();
    if !state.seen_jtis.lock().unwrap().insert(jti.clone()) {
        return Err(format!("assertion jti {jti} used twice"));
    }
    Ok(())
}
