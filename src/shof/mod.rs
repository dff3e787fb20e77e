//! The SMART HTI on FHIR login (SHOF, Koppeltaal): the guard hands the launch token to the
//! domain's auth server inside a SMART App Launch and lets it log the person in. A launch
//! becomes a 302 to the discovered `authorization_endpoint` (state, PKCE S256, the token as
//! `launch`) with a sealed login cookie scoped to the callback; the callback matches the
//! state to that cookie before anything else, redeems the code with the module's client
//! assertion, checks the id_token against the auth server's key set (the key cache of
//! `verify::keys`) and the launch context through the replay store. The proxy turns the
//! result into a session. Decisions with time passed in are pure functions, tested below.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Response, StatusCode};
use http_body_util::Full;
use reqwest::Url;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::task::JoinHandle;

use crate::config::{KeysConfig, LaunchConfig, ShofConfig};
use crate::error::{Reason, Rejection};
use crate::jose::Alg;
use crate::jose::jws;
use crate::launch;
use crate::metrics::Metrics;
use crate::module_keys::ModuleKeys;
use crate::replay::ReplayStore;
use crate::respond::Made;
use crate::session::{Sessions, take_cookie};
use crate::verify::claims::header_safe;
use crate::verify::introspect::ASSERTION_TYPE;
use crate::verify::keys::IssuerKeys;
use crate::verify::smart::{self, Discovered};
use crate::verify::{HtiClaims, VerifiedLaunch};

/// Every login cookie's name starts so; the rest is derived from its state.
pub(crate) const LOGIN_COOKIE_PREFIX: &str = "hti_guard_login_";
/// The largest token response read.
const MAX_TOKEN_RESPONSE_BYTES: usize = 64 * 1024;
/// The launch context members a token response carries, copied from the launch token.
pub(crate) const CONTEXT: [&str; 9] = [
    "iss",
    "sub",
    "resource",
    "definition",
    "patient",
    "intent",
    "aud",
    "exp",
    "jti",
];

/// What the smart-configuration says of the auth server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AuthServer {
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
    pub issuer: String,
}

/// The auth server a smart-configuration document names; every URL https or on the FHIR
/// base's origin (`smart::endpoint`), `issuer` a non-empty string.
pub(crate) fn auth_server_from(doc: &Value, fhir_base: &str) -> Result<AuthServer, String> {
    let url = |name: &str| -> Result<String, String> {
        smart::endpoint(doc, name, fhir_base)?.ok_or_else(|| format!("no {name}"))
    };
    let issuer = match doc.get("issuer") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        None | Some(Value::Null) => return Err("no issuer".into()),
        Some(_) => return Err("issuer is not a string".into()),
    };
    Ok(AuthServer {
        authorization_endpoint: url("authorization_endpoint")?,
        token_endpoint: url("token_endpoint")?,
        jwks_uri: url("jwks_uri")?,
        issuer,
    })
}

/// What a login cookie holds (sealed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct LoginData {
    state: String,
    verifier: String,
    nonce: Option<String>,
    /// UNIX seconds after which the login is over.
    exp: u64,
}

/// `n` random bytes, base64url without padding.
fn random(n: usize) -> Result<String, Rejection> {
    let mut bytes = vec![0u8; n];
    SystemRandom::new().fill(&mut bytes).map_err(|_| {
        Rejection::internal(Reason::LoginUnavailable, "no random bytes for a login")
    })?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// The PKCE S256 challenge of `verifier` (RFC 7636 4.2).
pub(crate) fn code_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(digest(&SHA256, verifier.as_bytes()))
}

/// The name of the login cookie of `state`: one per started login, so that two tabs each
/// find their own.
pub(crate) fn login_cookie_name(state: &str) -> String {
    let hash = digest(&SHA256, state.as_bytes());
    format!(
        "{LOGIN_COOKIE_PREFIX}{}",
        URL_SAFE_NO_PAD.encode(&hash.as_ref()[..12])
    )
}

fn unix(now: SystemTime) -> u64 {
    now.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// The first value of `name` in a urlencoded form or query.
fn param(form: &[u8], name: &str) -> Option<String> {
    form_urlencoded::parse(form)
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.into_owned())
}

/// The parameters of one authorization request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Authorize<'a> {
    pub client_id: &'a str,
    pub redirect_uri: &'a str,
    pub launch: &'a str,
    pub scope: &'a str,
    pub state: &'a str,
    pub aud: &'a str,
    pub code_challenge: &'a str,
    pub nonce: Option<&'a str>,
}

/// The authorization URL: `endpoint` with the SMART parameters appended to any query it
/// already has, each form-encoded.
pub(crate) fn authorize_url(endpoint: &str, p: &Authorize<'_>) -> Result<String, String> {
    let mut url = Url::parse(endpoint).map_err(|e| format!("authorization_endpoint: {e}"))?;
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("response_type", "code")
            .append_pair("client_id", p.client_id)
            .append_pair("redirect_uri", p.redirect_uri)
            .append_pair("launch", p.launch)
            .append_pair("scope", p.scope)
            .append_pair("state", p.state)
            .append_pair("aud", p.aud)
            .append_pair("code_challenge", p.code_challenge)
            .append_pair("code_challenge_method", "S256");
        if let Some(nonce) = p.nonce {
            q.append_pair("nonce", nonce);
        }
    }
    Ok(url.into())
}

/// The checks of an id_token's claims at `now` (UNIX seconds), after its signature.
pub(crate) struct IdTokenRules<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    pub clock_skew: Duration,
    /// The nonce sent, when `shof.nonce`.
    pub nonce: Option<&'a str>,
}

fn number(claims: &Map<String, Value>, name: &str) -> Result<Option<i64>, String> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_i64()
            .or_else(|| v.as_f64().map(|f| f as i64))
            .map(Some)
            .ok_or_else(|| format!("{name} is not a number")),
    }
}

/// `iss` the discovered issuer, `aud` naming the client, `exp` and `iat` present and, with
/// `nbf`, honoured within the clock skew, and the nonce when one was sent.
pub(crate) fn check_id_token(
    claims: &Map<String, Value>,
    now: i64,
    rules: &IdTokenRules<'_>,
) -> Result<(), String> {
    if claims.get("iss").and_then(Value::as_str) != Some(rules.issuer) {
        return Err("iss is not the auth server's issuer".into());
    }
    let aud_ok = match claims.get("aud") {
        Some(Value::String(a)) => a == rules.client_id,
        Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(rules.client_id)),
        _ => false,
    };
    if !aud_ok {
        return Err("aud does not name module.client_id".into());
    }
    let skew = secs(rules.clock_skew);
    let exp = number(claims, "exp")?.ok_or("exp is missing")?;
    let iat = number(claims, "iat")?.ok_or("iat is missing")?;
    if now >= exp.saturating_add(skew) {
        return Err(format!("expired: exp {exp}, now {now}"));
    }
    if iat > now.saturating_add(skew) {
        return Err(format!("iat {iat} is after now {now}"));
    }
    if let Some(nbf) = number(claims, "nbf")?
        && nbf > now.saturating_add(skew)
    {
        return Err(format!("nbf {nbf} is after now {now}"));
    }
    if let Some(nonce) = rules.nonce
        && claims.get("nonce").and_then(Value::as_str) != Some(nonce)
    {
        return Err("nonce is not the one sent".into());
    }
    Ok(())
}

/// The launch context of a token response as the session's claims, and the context as
/// JSON (`X-HTI-Claims`). `resource`, `iss` and `jti` are required; `sub` is the context's,
/// else the id_token's. Every value that becomes a header must be header-safe. The
/// context's `exp` (the launch token's) is kept when present, else `default_exp`.
pub(crate) fn launch_context(
    response: &Map<String, Value>,
    id_sub: Option<&str>,
    now: i64,
    default_exp: i64,
) -> Result<(HtiClaims, Vec<u8>), String> {
    let text = |name: &str| -> Result<Option<String>, String> {
        match response.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) if header_safe(s) => Ok(Some(s.clone())),
            Some(Value::String(_)) => Err(format!(
                "{name} holds characters a header cannot carry as they are"
            )),
            Some(_) => Err(format!("{name} is not a string")),
        }
    };
    let resource = text("resource")?.ok_or("the token response carries no resource")?;
    let iss = text("iss")?.ok_or("the token response carries no iss")?;
    let jti = text("jti")?.ok_or("the token response carries no jti")?;
    let sub = match text("sub")? {
        Some(sub) => sub,
        None => match id_sub {
            Some(s) if !s.is_empty() && header_safe(s) => s.to_owned(),
            _ => return Err("neither the context nor the id_token names a sub".into()),
        },
    };
    let mut context = Map::new();
    for name in CONTEXT {
        if let Some(value) = response.get(name).filter(|v| !v.is_null()) {
            context.insert(name.to_owned(), value.clone());
        }
    }
    context.insert("sub".into(), Value::String(sub.clone()));
    let claims = HtiClaims {
        exp: number(response, "exp")?.unwrap_or(default_exp),
        iat: number(response, "iat")?.unwrap_or(now),
        iss,
        sub,
        resource,
        patient: text("patient")?,
        definition: text("definition")?,
        intent: text("intent")?,
        jti,
    };
    let json = serde_json::to_vec(&Value::Object(context)).map_err(|e| e.to_string())?;
    Ok((claims, json))
}

/// The callback's query, the parts the guard reads.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct CallbackQuery {
    pub state: Option<String>,
    pub code: Option<String>,
    pub error: Option<String>,
}

impl CallbackQuery {
    pub(crate) fn parse(query: &str) -> CallbackQuery {
        let q = query.as_bytes();
        let nonempty = |v: Option<String>| v.filter(|v| !v.is_empty());
        CallbackQuery {
            state: nonempty(param(q, "state")),
            code: nonempty(param(q, "code")),
            error: nonempty(param(q, "error")),
        }
    }
}

/// An auth server's `error` code, when it is a plain code worth a log line; its text never
/// goes anywhere.
fn error_code(error: &str) -> &str {
    if (1..=64).contains(&error.len())
        && error
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        error
    } else {
        "(not a plain code)"
    }
}

fn state_mismatch(detail: &'static str) -> Rejection {
    Rejection::new(Reason::LoginStateMismatch, detail)
}

fn invalid_id_token(detail: impl Into<String>) -> Rejection {
    Rejection::new(Reason::InvalidIdToken, detail.into())
}

fn unavailable(detail: impl Into<String>) -> Rejection {
    Rejection::new(Reason::LoginUnavailable, detail.into())
}

/// What a callback came to: the login cookie to clear (whatever the outcome), the time of
/// the exchange and id_token check (when there was one), and the launch it vouched for.
pub(crate) struct Callback {
    pub clear: Option<HeaderValue>,
    pub exchange_time: Option<Duration>,
    pub result: Result<VerifiedLaunch, Rejection>,
}

/// The auth server's key set cache, swapped when discovery names another `jwks_uri`; its
/// task ends with the last holder.
#[derive(Default)]
struct JwksSlot {
    current: Mutex<Option<(Arc<IssuerKeys>, JoinHandle<()>)>>,
}

impl JwksSlot {
    fn keys(&self) -> Option<Arc<IssuerKeys>> {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|(k, _)| k.clone())
    }
}

impl Drop for JwksSlot {
    fn drop(&mut self) {
        if let Some((_, task)) = self
            .current
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            task.abort();
        }
    }
}

/// The SHOF login.
pub(crate) struct Shof {
    cfg: ShofConfig,
    launch: LaunchConfig,
    keys_cfg: KeysConfig,
    module: Arc<ModuleKeys>,
    client: reqwest::Client,
    server: Arc<Discovered<AuthServer>>,
    jwks: Arc<JwksSlot>,
    replay: Arc<dyn ReplayStore>,
    metrics: Arc<Metrics>,
}

impl Shof {
    /// `keys_cfg` paces discovery and the auth server's key set like the issuers' (each
    /// request bounded by `shof.timeout`).
    pub(crate) fn new(
        cfg: ShofConfig,
        launch: LaunchConfig,
        keys_cfg: &KeysConfig,
        module: Arc<ModuleKeys>,
        replay: Arc<dyn ReplayStore>,
        metrics: Arc<Metrics>,
    ) -> Result<Shof, String> {
        let client = crate::verify::http_client(cfg.timeout).map_err(|e| e.to_string())?;
        let keys_cfg = KeysConfig {
            fetch_timeout: cfg.timeout,
            ..keys_cfg.clone()
        };
        Ok(Shof {
            cfg,
            launch,
            keys_cfg,
            module,
            client,
            server: Arc::new(Discovered::new(None)),
            jwks: Arc::new(JwksSlot::default()),
            replay,
            metrics,
        })
    }

    /// This login with other launch rules and module keys, sharing the discovery (and its
    /// task) and the auth server's key set: for a reload that leaves `[shof]` and `[keys]`
    /// as they were.
    pub(crate) fn with_rules(&self, launch: LaunchConfig, module: Arc<ModuleKeys>) -> Shof {
        Shof {
            cfg: self.cfg.clone(),
            launch,
            keys_cfg: self.keys_cfg.clone(),
            module,
            client: self.client.clone(),
            server: self.server.clone(),
            jwks: self.jwks.clone(),
            replay: self.replay.clone(),
            metrics: self.metrics.clone(),
        }
    }

    /// The path the guard serves as the callback.
    pub(crate) fn callback_path(&self) -> &str {
        &self.cfg.callback_path
    }

    /// Start discovery; each newly named `jwks_uri` gets a key cache of its own. Abort the
    /// handle to stop.
    pub(crate) fn start(&self) -> JoinHandle<()> {
        let fhir_base = self.cfg.fhir_base.clone();
        let slot = self.jwks.clone();
        let client = self.client.clone();
        let metrics = self.metrics.clone();
        let keys_cfg = self.keys_cfg.clone();
        self.server.start(
            self.client.clone(),
            smart::discovery_url(&self.cfg.fhir_base),
            self.keys_cfg.clone(),
            move |doc| auth_server_from(doc, &fhir_base),
            move |server: &AuthServer| {
                tracing::info!(
                    authorization = %server.authorization_endpoint,
                    token = %server.token_endpoint,
                    jwks_uri = %server.jwks_uri,
                    issuer = %server.issuer,
                    "SHOF auth server discovered"
                );
                let mut current = slot.current.lock().unwrap_or_else(|p| p.into_inner());
                if current
                    .as_ref()
                    .is_some_and(|(k, _)| k.url() == server.jwks_uri)
                {
                    return;
                }
                let keys = IssuerKeys::standalone(&server.issuer, &server.jwks_uri, &keys_cfg);
                let task = keys.spawn(client.clone(), metrics.clone());
                if let Some((_, old)) = current.replace((keys, task)) {
                    old.abort();
                }
            },
        )
    }

    /// Whether logins can start (readiness): the first discovery has succeeded.
    pub(crate) fn ready(&self) -> Result<(), String> {
        match self.server.current() {
            Some(_) => Ok(()),
            None => Err(match self.server.last_error() {
                Some(e) => format!("SHOF smart-configuration not discovered ({e})"),
                None => "SHOF smart-configuration not discovered yet".into(),
            }),
        }
    }

    /// A launch becomes a login: `form` is the launch's query (GET) or body (POST). The
    /// `iss` parameter must be the FHIR base, byte for byte, and a token field must carry
    /// the launch token, which the auth server verifies. Answers the 302 to the
    /// authorization endpoint with the login cookie.
    pub(crate) fn begin(
        &self,
        form: &[u8],
        sessions: &Sessions,
        now: SystemTime,
    ) -> Result<Made, Rejection> {
        if param(form, "iss").as_deref() != Some(self.cfg.fhir_base.as_str()) {
            return Err(Rejection::new(
                Reason::UnknownFhirBase,
                "the iss parameter is not shof.fhir_base",
            ));
        }
        let token = launch::extract(form, &self.launch.token_fields)?.token;
        let server = self
            .server
            .current()
            .ok_or_else(|| unavailable("the auth server is not discovered yet"))?;
        let login = LoginData {
            state: random(32)?,
            verifier: random(32)?,
            nonce: if self.cfg.nonce {
                Some(random(32)?)
            } else {
                None
            },
            exp: unix(now).saturating_add(self.cfg.login_ttl.as_secs()),
        };
        let challenge = code_challenge(&login.verifier);
        let location = authorize_url(
            &server.authorization_endpoint,
            &Authorize {
                client_id: &self.cfg.client_id,
                redirect_uri: &self.cfg.redirect_uri,
                launch: &token,
                scope: &self.cfg.scope,
                state: &login.state,
                aud: &self.cfg.fhir_base,
                code_challenge: &challenge,
                nonce: login.nonce.as_deref(),
            },
        )
        .map_err(unavailable)?;
        let name = login_cookie_name(&login.state);
        let sealed = serde_json::to_string(&login)
            .ok()
            .and_then(|plain| sessions.seal_as(&name, plain))
            .ok_or_else(|| {
                Rejection::internal(Reason::LoginUnavailable, "the login could not be sealed")
            })?;
        let cookie = sessions
            .helper_cookie(&name, sealed, &self.cfg.callback_path, self.cfg.login_ttl)
            .ok_or_else(|| {
                Rejection::internal(Reason::LoginUnavailable, "the login cookie is not a header")
            })?;
        let location = HeaderValue::from_str(&location).map_err(|_| {
            Rejection::internal(
                Reason::LoginUnavailable,
                "the authorize URL is not a header",
            )
        })?;
        let mut response = Response::new(Full::new(Bytes::new()));
        *response.status_mut() = StatusCode::FOUND;
        let headers = response.headers_mut();
        headers.insert(header::LOCATION, location);
        headers.insert(header::SET_COOKIE, cookie);
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        Ok(response)
    }

    /// The callback (a GET on the callback path): `query` is its query, `headers` its
    /// request headers (the login cookie is taken out of them).
    pub(crate) async fn callback(
        &self,
        query: &str,
        headers: &mut HeaderMap,
        sessions: &Sessions,
        now: SystemTime,
    ) -> Callback {
        let query = CallbackQuery::parse(query);
        let mut outcome = Callback {
            clear: None,
            exchange_time: None,
            result: Err(state_mismatch("the callback carries no state")),
        };
        let Some(state) = query.state.as_deref() else {
            return outcome;
        };
        let name = login_cookie_name(state);
        outcome.clear = sessions.helper_cookie(
            &name,
            String::new(),
            &self.cfg.callback_path,
            Duration::ZERO,
        );
        let login = match open_login(
            &take_cookie(headers, &name),
            &name,
            state,
            sessions,
            unix(now),
        ) {
            Ok(login) => login,
            Err(rejection) => {
                outcome.result = Err(rejection);
                return outcome;
            }
        };
        if let Some(error) = &query.error {
            outcome.result = Err(Rejection::new(
                Reason::LoginDenied,
                format!("the auth server answered error {}", error_code(error)),
            ));
            return outcome;
        }
        let Some(code) = query.code.as_deref() else {
            outcome.result = Err(Rejection::new(
                Reason::LoginFailed,
                "the callback carries neither code nor error",
            ));
            return outcome;
        };
        let started = Instant::now();
        let redeemed = self.redeem(code, &login, now).await;
        outcome.exchange_time = Some(started.elapsed());
        outcome.result = match redeemed {
            Ok((claims, claims_json)) => self.single_use(claims, claims_json, now).await,
            Err(rejection) => Err(rejection),
        };
        outcome
    }

    /// Exchange the code, check the id_token, and read the launch context.
    async fn redeem(
        &self,
        code: &str,
        login: &LoginData,
        now: SystemTime,
    ) -> Result<(HtiClaims, Vec<u8>), Rejection> {
        let server = self
            .server
            .current()
            .ok_or_else(|| unavailable("the auth server is not discovered"))?;
        let response = self.token_request(&server, code, &login.verifier).await?;
        let id_token = id_token_of(&response)?;
        let now_secs = i64::try_from(unix(now)).unwrap_or(i64::MAX);
        let id_claims = self
            .verify_id_token(&server, id_token, now_secs, login.nonce.as_deref())
            .await?;
        let default_exp = now_secs.saturating_add(secs(self.cfg.login_ttl));
        launch_context(
            &response,
            id_claims.get("sub").and_then(Value::as_str),
            now_secs,
            default_exp,
        )
        .map_err(invalid_id_token)
    }

    /// POST the code with the verifier and a client assertion to the token endpoint.
    async fn token_request(
        &self,
        server: &AuthServer,
        code: &str,
        verifier: &str,
    ) -> Result<Map<String, Value>, Rejection> {
        let assertion = self
            .module
            .client_assertion(
                &self.cfg.client_id,
                &server.token_endpoint,
                self.cfg.assertion_alg,
            )
            .map_err(|e| {
                Rejection::internal(
                    Reason::LoginUnavailable,
                    format!("cannot sign the client assertion: {e}"),
                )
            })?;
        let body = form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "authorization_code")
            .append_pair("code", code)
            .append_pair("redirect_uri", &self.cfg.redirect_uri)
            .append_pair("code_verifier", verifier)
            .append_pair("client_id", &self.cfg.client_id)
            .append_pair("client_assertion_type", ASSERTION_TYPE)
            .append_pair("client_assertion", &assertion)
            .finish();
        let mut response = self
            .client
            .post(&server.token_endpoint)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ACCEPT, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| {
                unavailable(if e.is_timeout() {
                    "the token endpoint did not answer in time".to_string()
                } else {
                    "the token endpoint cannot be reached".to_string()
                })
            })?;
        let status = response.status();
        if status.is_client_error() {
            if status == reqwest::StatusCode::UNAUTHORIZED {
                tracing::warn!(
                    endpoint = %server.token_endpoint,
                    client_id = %self.cfg.client_id,
                    "the token endpoint answered 401: check module.client_id and the module's JWKS at module.jwks_path"
                );
            }
            return Err(Rejection::new(
                Reason::LoginFailed,
                format!("the token endpoint answered {status}"),
            ));
        }
        if !status.is_success() {
            return Err(unavailable(format!("the token endpoint answered {status}")));
        }
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > MAX_TOKEN_RESPONSE_BYTES {
                        return Err(invalid_id_token(format!(
                            "the token response is larger than {MAX_TOKEN_RESPONSE_BYTES} bytes"
                        )));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => {
                    return Err(unavailable(if e.is_timeout() {
                        "the token response did not arrive in time"
                    } else {
                        "the token response broke off"
                    }));
                }
            }
        }
        parse_token_response(&body)
    }

    /// The id_token's signature by a key of the auth server's key set (refetched once for
    /// an unknown kid), then its claims.
    async fn verify_id_token(
        &self,
        server: &AuthServer,
        id_token: &str,
        now: i64,
        nonce: Option<&str>,
    ) -> Result<Map<String, Value>, Rejection> {
        let decoded = jws::decode(id_token).map_err(|e| invalid_id_token(e.to_string()))?;
        // The issuers' allow-list: asymmetric only (`jws::decode` refuses none and HS*).
        if !Alg::ALL.contains(&decoded.alg) {
            return Err(invalid_id_token(format!(
                "alg {} is not accepted",
                decoded.alg
            )));
        }
        let kid = decoded
            .kid
            .as_deref()
            .ok_or_else(|| invalid_id_token("the id_token header has no kid"))?;
        let keys = self
            .jwks
            .keys()
            .filter(|k| k.url() == server.jwks_uri)
            .ok_or_else(|| unavailable("the auth server's key set is not known yet"))?;
        let key = keys
            .key_for(kid, decoded.alg)
            .await
            .map_err(|r| match r.reason {
                Reason::KeysUnavailable => unavailable(format!("id_token key: {}", r.detail)),
                _ => invalid_id_token(format!("id_token key: {}", r.detail)),
            })?;
        if !key.verify(
            decoded.alg,
            decoded.signing_input.as_bytes(),
            decoded.signature,
        ) {
            return Err(invalid_id_token("the id_token signature does not verify"));
        }
        check_id_token(
            &decoded.claims,
            now,
            &IdTokenRules {
                issuer: &server.issuer,
                client_id: &self.cfg.client_id,
                clock_skew: self.launch.clock_skew,
                nonce,
            },
        )
        .map_err(|e| invalid_id_token(format!("id_token: {e}")))?;
        Ok(decoded.claims)
    }

    /// The context's (iss, jti) through the replay store, like an HTI launch; kept at
    /// least a login's time, so that a code redeemed twice is refused.
    async fn single_use(
        &self,
        claims: HtiClaims,
        claims_json: Vec<u8>,
        now: SystemTime,
    ) -> Result<VerifiedLaunch, Rejection> {
        let now = unix(now);
        let keep_until = u64::try_from(claims.exp)
            .unwrap_or(0)
            .max(now.saturating_add(self.cfg.login_ttl.as_secs()))
            .saturating_add(self.launch.clock_skew.as_secs());
        crate::verify::single_use(
            &*self.replay,
            &self.metrics,
            (&claims.iss, &claims.jti),
            (now, keep_until),
            "the launch context's jti was seen before",
        )
        .await?;
        Ok(VerifiedLaunch {
            issuer: None,
            claims,
            claims_json,
        })
    }
}

/// A token endpoint's 2xx body: a JSON object.
pub(crate) fn parse_token_response(body: &[u8]) -> Result<Map<String, Value>, Rejection> {
    match serde_json::from_slice(body) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(invalid_id_token("the token response is not a JSON object")),
    }
}

/// The token response's id_token: a non-empty string.
pub(crate) fn id_token_of(response: &Map<String, Value>) -> Result<&str, Rejection> {
    match response.get("id_token") {
        Some(Value::String(t)) if !t.is_empty() => Ok(t.as_str()),
        _ => Err(invalid_id_token("the token response carries no id_token")),
    }
}

/// The login of `state` from the values of its cookie: one that opens under its name,
/// names this state and has not expired.
fn open_login(
    values: &[String],
    name: &str,
    state: &str,
    sessions: &Sessions,
    now: u64,
) -> Result<LoginData, Rejection> {
    if values.is_empty() {
        return Err(state_mismatch(
            "no login cookie for this state in this browser",
        ));
    }
    let login = values
        .iter()
        .filter_map(|v| sessions.open_as(name, v))
        .filter_map(|plain| serde_json::from_str::<LoginData>(&plain).ok())
        .find(|login| login.state == state)
        .ok_or_else(|| state_mismatch("the login cookie does not open or names another state"))?;
    if now >= login.exp {
        return Err(state_mismatch("the login has expired (shof.login_ttl)"));
    }
    Ok(login)
}

#[cfg(test)]
mod tests;
