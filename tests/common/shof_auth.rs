//! The SHOF half of the mock auth server ([`super::AuthServer`]), as the reference
//! Koppeltaal-2.0-Authentication-Service does it: `/oauth2/authorize` verifies the launch token
//! and burns its jti, then (standing in for the IdP login) redirects to the registered
//! redirect_uri with a code; the token endpoint checks the code (single-use, bound to
//! client_id, redirect_uri and the PKCE challenge) and the client assertion (fetched from the
//! guard's JWKS, RS384/ES384/RS512, no leeway on `iat`), and answers `access_token: "NOOP"`,
//! an RS512 id_token with a random nonce of its own, and the launch context. Knobs for every
//! failure mode the guard must handle.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lc_rs::digest::{SHA256, digest};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode};
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value, json};

use super::authserver::{State, check_assertion, json_response, verify_portal_token};
use super::guard::AUDIENCE;
use super::mint::{self, Alg, SigningKey};

/// The algorithms the reference token endpoint accepts for a client assertion.
const ASSERTION_ALGORITHMS: [Algorithm; 3] = [Algorithm::RS384, Algorithm::ES384, Algorithm::RS512];

/// How the token endpoint answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenMode {
    /// Checks everything, answers 200 (or the error the checks give).
    Answer,
    /// 400 `invalid_grant`, whatever came.
    Refuse,
    /// 500.
    Fail,
    /// Never answers (held for a minute).
    Hang,
    /// Starts a 200 answer and breaks the connection off inside its body.
    BreakOff,
}

/// What the id_token of a 200 answer looks like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdToken {
    Good,
    /// A good token with one signature byte changed.
    BadSignature,
    /// `aud` another client.
    WrongAud,
    /// `iss` another server.
    WrongIss,
    /// `exp` ten minutes ago.
    Expired,
    /// No `id_token` in the answer.
    Missing,
    /// Signed with a key that the JWKS never publishes (a kid unknown to the guard).
    UnknownKey,
    /// `alg: none` with the current kid and no signature.
    Unsigned,
    /// `iat` ten minutes ahead (and `exp` after it).
    IssuedInFuture,
    /// `nbf` ten minutes ahead.
    NotYetValid,
    /// A good token whose `aud` is a list holding the client and another.
    AudienceList,
}

/// One request to `/oauth2/authorize`, as received.
#[derive(Clone, Debug)]
pub struct AuthorizeRequest {
    pub params: Vec<(String, String)>,
    /// Why it was refused (an error page), if it was.
    pub refused: Option<String>,
}

impl AuthorizeRequest {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// What a code stands for.
struct Grant {
    client_id: String,
    redirect_uri: String,
    challenge: String,
    scope: String,
    /// The `nonce` parameter of authorize, if any.
    nonce: Option<String>,
    launch: Map<String, Value>,
}

struct Keys {
    signing: Arc<SigningKey>,
    published: Vec<Arc<SigningKey>>,
}

/// The SHOF state of the mock.
pub(super) struct Shof {
    redirect_uri: Mutex<String>,
    /// The `aud` authorize requires, when not the FHIR base.
    aud: Mutex<Option<String>>,
    launch_audience: Mutex<String>,
    deny: Mutex<Option<String>>,
    token_mode: Mutex<TokenMode>,
    id_token: Mutex<IdToken>,
    /// Fields left out of the token answer.
    omitted: Mutex<Vec<String>>,
    echo_nonce: AtomicBool,
    burned: Mutex<HashSet<String>>,
    codes: Mutex<HashMap<String, Grant>>,
    authorizes: Mutex<Vec<AuthorizeRequest>>,
    token_requests: AtomicUsize,
    token_forms: Mutex<Vec<Vec<(String, String)>>>,
    token_failures: Mutex<Vec<String>>,
    keys: Mutex<Option<Keys>>,
    jwks_hits: AtomicUsize,
}

impl Shof {
    pub(super) fn new() -> Shof {
        Shof {
            redirect_uri: Mutex::new(String::new()),
            aud: Mutex::new(None),
            launch_audience: Mutex::new(AUDIENCE.to_string()),
            deny: Mutex::new(None),
            token_mode: Mutex::new(TokenMode::Answer),
            id_token: Mutex::new(IdToken::Good),
            omitted: Mutex::new(Vec::new()),
            echo_nonce: AtomicBool::new(false),
            burned: Mutex::new(HashSet::new()),
            codes: Mutex::new(HashMap::new()),
            authorizes: Mutex::new(Vec::new()),
            token_requests: AtomicUsize::new(0),
            token_forms: Mutex::new(Vec::new()),
            token_failures: Mutex::new(Vec::new()),
            keys: Mutex::new(None),
            jwks_hits: AtomicUsize::new(0),
        }
    }

    /// The server's signing key and the published ones, made on first use (RSA generation
    /// is slow, and an introspection test never needs them).
    fn with_keys<T>(&self, f: impl FnOnce(&mut Keys) -> T) -> T {
        let mut keys = self.keys.lock().unwrap();
        let keys = keys.get_or_insert_with(|| {
            let key = Arc::new(SigningKey::generate(Alg::RS512));
            Keys {
                signing: key.clone(),
                published: vec![key],
            }
        });
        f(keys)
    }

    pub(super) fn set_redirect_uri(&self, uri: &str) {
        *self.redirect_uri.lock().unwrap() = uri.to_string();
    }
    pub(super) fn set_aud(&self, aud: &str) {
        *self.aud.lock().unwrap() = Some(aud.to_string());
    }
    pub(super) fn aud(&self) -> Option<String> {
        self.aud.lock().unwrap().clone()
    }
    pub(super) fn set_launch_audience(&self, aud: &str) {
        *self.launch_audience.lock().unwrap() = aud.to_string();
    }
    pub(super) fn set_deny(&self, description: Option<&str>) {
        *self.deny.lock().unwrap() = description.map(str::to_string);
    }
    pub(super) fn set_token_mode(&self, mode: TokenMode) {
        *self.token_mode.lock().unwrap() = mode;
    }
    pub(super) fn set_id_token(&self, kind: IdToken) {
        *self.id_token.lock().unwrap() = kind;
    }
    pub(super) fn omit(&self, field: &str) {
        self.omitted.lock().unwrap().push(field.to_string());
    }
    pub(super) fn set_echo_nonce(&self, echo: bool) {
        self.echo_nonce.store(echo, Ordering::SeqCst);
    }
    pub(super) fn forget_jtis(&self) {
        self.burned.lock().unwrap().clear();
    }
    pub(super) fn rotate_key(&self) {
        let key = Arc::new(SigningKey::generate(Alg::RS512));
        self.with_keys(|keys| {
            keys.signing = key.clone();
            keys.published = vec![key];
        });
    }
    pub(super) fn authorizes(&self) -> Vec<AuthorizeRequest> {
        self.authorizes.lock().unwrap().clone()
    }
    pub(super) fn token_requests(&self) -> usize {
        self.token_requests.load(Ordering::SeqCst)
    }
    pub(super) fn token_forms(&self) -> Vec<Vec<(String, String)>> {
        self.token_forms.lock().unwrap().clone()
    }
    pub(super) fn token_failures(&self) -> Vec<String> {
        self.token_failures.lock().unwrap().clone()
    }
    pub(super) fn jwks_hits(&self) -> usize {
        self.jwks_hits.load(Ordering::SeqCst)
    }
}

fn page(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(format!(
        "<!doctype html><title>Auth server</title><p>{text}</p>"
    ))));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert("content-type", "text/html".parse().unwrap());
    response
}

fn redirect(location: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::FOUND;
    response.headers_mut().insert(
        "location",
        location.parse().expect("a header-safe Location"),
    );
    response
}

/// `base64url(SHA-256(verifier))`, the S256 code challenge.
pub fn s256(verifier: &str) -> String {
    mint::b64(digest(&SHA256, verifier.as_bytes()).as_ref())
}

fn pairs(text: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(text).into_owned().collect()
}

fn field<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

/// `GET /oauth2/authorize`.
pub(super) fn authorize(state: &State, query: &str, fhir_base: &str) -> Response<Full<Bytes>> {
    let params = pairs(query.as_bytes());
    let outcome = check_authorize(state, &params, fhir_base);
    state
        .shof
        .authorizes
        .lock()
        .unwrap()
        .push(AuthorizeRequest {
            params: params.clone(),
            refused: outcome.as_ref().err().cloned(),
        });
    let (redirect_uri, grant) = match outcome {
        Ok(ok) => ok,
        Err(why) => return page(StatusCode::BAD_REQUEST, &format!("Refused: {why}")),
    };
    let mut back = form_urlencoded::Serializer::new(String::new());
    let deny = state.shof.deny.lock().unwrap().clone();
    match deny {
        Some(description) => {
            back.append_pair("error", "access_denied");
            back.append_pair("error_description", &description);
        }
        None => {
            let code = mint::random_hex(16);
            state.shof.codes.lock().unwrap().insert(code.clone(), grant);
            back.append_pair("code", &code);
        }
    }
    if let Some(st) = field(&params, "state") {
        back.append_pair("state", st);
    }
    redirect(&format!("{redirect_uri}?{}", back.finish()))
}

fn check_authorize(
    state: &State,
    params: &[(String, String)],
    fhir_base: &str,
) -> Result<(String, Grant), String> {
    let get = |name: &str| field(params, name).ok_or_else(|| format!("no {name}"));
    if get("response_type")? != "code" {
        return Err("response_type is not code".into());
    }
    let client_id = get("client_id")?;
    if client_id != state.client_id {
        return Err(format!("unknown client_id {client_id}"));
    }
    let redirect_uri = get("redirect_uri")?;
    if redirect_uri != *state.shof.redirect_uri.lock().unwrap() {
        return Err(format!(
            "redirect_uri {redirect_uri} is not the registered one"
        ));
    }
    let scope = get("scope")?;
    let scopes: Vec<&str> = scope.split(' ').collect();
    if !scopes.contains(&"launch") || !scopes.contains(&"openid") {
        return Err(format!("scope {scope:?} lacks launch or openid"));
    }
    let aud = get("aud")?;
    if aud != fhir_base {
        return Err(format!("aud {aud:?} is not {fhir_base:?}"));
    }
    if get("code_challenge_method")? != "S256" {
        return Err("code_challenge_method is not S256".into());
    }
    let challenge = get("code_challenge")?;
    if challenge.len() != 43 {
        return Err(format!(
            "code_challenge {challenge:?} is not an S256 challenge"
        ));
    }
    get("state")?;
    let launch = get("launch")?;
    let audience = state.shof.launch_audience.lock().unwrap().clone();
    let claims = verify_portal_token(state, launch, Some(&audience))
        .ok_or("the launch token does not verify")?;
    let jti = claims
        .get("jti")
        .and_then(Value::as_str)
        .ok_or("the launch token has no jti")?;
    if !state.shof.burned.lock().unwrap().insert(jti.to_string()) {
        return Err(format!("launch jti {jti} already used"));
    }
    Ok((
        redirect_uri.to_string(),
        Grant {
            client_id: client_id.to_string(),
            redirect_uri: redirect_uri.to_string(),
            challenge: challenge.to_string(),
            scope: scope.to_string(),
            nonce: field(params, "nonce").map(str::to_string),
            launch: claims,
        },
    ))
}

/// `POST /oauth2/token`.
pub(super) async fn token(state: &State, body: &[u8], base: &str) -> Response<Full<Bytes>> {
    state.shof.token_requests.fetch_add(1, Ordering::SeqCst);
    state.shof.token_forms.lock().unwrap().push(pairs(body));
    let mode = *state.shof.token_mode.lock().unwrap();
    match mode {
        TokenMode::Answer => {}
        TokenMode::Refuse => {
            return json_response(
                StatusCode::BAD_REQUEST,
                &json!({"error": "invalid_grant", "error_description": "refused (knob)"}),
            );
        }
        TokenMode::Fail => {
            return json_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                &json!({"error": "server_error"}),
            );
        }
        TokenMode::Hang => {
            tokio::time::sleep(Duration::from_secs(60)).await;
            return json_response(StatusCode::INTERNAL_SERVER_ERROR, &json!({}));
        }
        TokenMode::BreakOff => {
            // A Content-Length the body never reaches: hyper closes the connection.
            let mut response = json_response(StatusCode::OK, &json!({"access_token": "NO"}));
            response
                .headers_mut()
                .insert("content-length", "4096".parse().unwrap());
            return response;
        }
    }
    let form = pairs(body);
    match exchange(state, &form, base).await {
        Ok(answer) => json_response(StatusCode::OK, &answer),
        Err((status, error, why)) => {
            state.shof.token_failures.lock().unwrap().push(why.clone());
            json_response(status, &json!({"error": error, "error_description": why}))
        }
    }
}

type Refusal = (StatusCode, &'static str, String);

async fn exchange(state: &State, form: &[(String, String)], base: &str) -> Result<Value, Refusal> {
    let invalid_grant = |why: String| (StatusCode::BAD_REQUEST, "invalid_grant", why);
    if field(form, "grant_type") != Some("authorization_code") {
        return Err((
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            format!("grant_type {:?}", field(form, "grant_type")),
        ));
    }
    check_assertion(
        state,
        field(form, "client_assertion_type").map(str::to_string),
        field(form, "client_assertion").map(str::to_string),
        &format!("{base}/oauth2/token"),
        &ASSERTION_ALGORITHMS,
        true,
    )
    .await
    .map_err(|why| (StatusCode::UNAUTHORIZED, "invalid_client", why))?;
    let code = field(form, "code").unwrap_or_default();
    // Single use: a code is gone once presented. An unknown code is a 500, as the reference
    // server answers it.
    let Some(grant) = state.shof.codes.lock().unwrap().remove(code) else {
        return Err((
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            format!("unknown code {code:?}"),
        ));
    };
    if let Some(client_id) = field(form, "client_id")
        && client_id != grant.client_id
    {
        return Err(invalid_grant(format!(
            "client_id {client_id} is not the code's"
        )));
    }
    if field(form, "redirect_uri") != Some(grant.redirect_uri.as_str()) {
        return Err(invalid_grant(format!(
            "redirect_uri {:?} is not the code's",
            field(form, "redirect_uri")
        )));
    }
    let verifier = field(form, "code_verifier").unwrap_or_default();
    if s256(verifier) != grant.challenge {
        return Err(invalid_grant(
            "PKCE: S256(code_verifier) does not match".into(),
        ));
    }
    Ok(answer(state, &grant, base))
}

fn answer(state: &State, grant: &Grant, base: &str) -> Value {
    let now = mint::now();
    let sub = grant.launch.get("sub").cloned().unwrap_or(Value::Null);
    let mut claims = json!({
        "iss": base,
        "aud": grant.client_id,
        "azp": grant.client_id,
        "sub": sub,
        "iat": now,
        "exp": now + 300,
        "nonce": mint::random_hex(16),
    });
    if state.shof.echo_nonce.load(Ordering::SeqCst)
        && let Some(nonce) = &grant.nonce
    {
        claims["nonce"] = json!(nonce);
    }
    let kind = *state.shof.id_token.lock().unwrap();
    match kind {
        IdToken::WrongAud => claims["aud"] = json!("another-client"),
        IdToken::WrongIss => claims["iss"] = json!("https://other-auth.example"),
        IdToken::Expired => {
            claims["iat"] = json!(now - 1200);
            claims["exp"] = json!(now - 600);
        }
        IdToken::IssuedInFuture => {
            claims["iat"] = json!(now + 600);
            claims["exp"] = json!(now + 900);
        }
        IdToken::NotYetValid => claims["nbf"] = json!(now + 600),
        IdToken::AudienceList => claims["aud"] = json!(["another-client", grant.client_id]),
        IdToken::Good | IdToken::BadSignature | IdToken::Missing | IdToken::UnknownKey => {}
        IdToken::Unsigned => {}
    }
    let id_token = match kind {
        IdToken::UnknownKey => SigningKey::generate(Alg::RS512).token(&claims),
        IdToken::Unsigned => state.shof.with_keys(|keys| {
            let header = json!({"alg": "none", "kid": keys.signing.kid, "typ": "JWT"});
            mint::unsigned_token(&header, &claims, b"")
        }),
        _ => state.shof.with_keys(|keys| keys.signing.token(&claims)),
    };
    let id_token = if kind == IdToken::BadSignature {
        let (input, signature) = id_token.rsplit_once('.').unwrap();
        let flipped = if signature.starts_with('A') { "B" } else { "A" };
        format!("{input}.{flipped}{}", &signature[1..])
    } else {
        id_token
    };
    let mut answer = json!({
        "access_token": "NOOP",
        "token_type": "Bearer",
        "expires_in": 300,
        "scope": grant.scope,
    });
    if kind != IdToken::Missing {
        answer["id_token"] = json!(id_token);
    }
    for name in [
        "iss",
        "sub",
        "resource",
        "definition",
        "patient",
        "intent",
        "aud",
        "exp",
        "jti",
    ] {
        if let Some(value) = grant.launch.get(name) {
            answer[name] = value.clone();
        }
    }
    for field in state.shof.omitted.lock().unwrap().iter() {
        answer.as_object_mut().unwrap().remove(field);
    }
    answer
}

/// `GET /.well-known/jwks.json`: the server's published keys.
pub(super) fn jwks(state: &State) -> Response<Full<Bytes>> {
    state.shof.jwks_hits.fetch_add(1, Ordering::SeqCst);
    let keys: Vec<Value> = state
        .shof
        .with_keys(|keys| keys.published.iter().map(|key| key.jwk()).collect());
    let mut response = json_response(StatusCode::OK, &json!({ "keys": keys }));
    response
        .headers_mut()
        .insert("cache-control", "max-age=3600".parse().unwrap());
    response
}
