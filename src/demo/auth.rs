//! The demo portal's second role in `--koppeltaal` mode: the domain's auth server. It
//! publishes a smart-configuration under its FHIR base and answers token introspection,
//! after checking the guard's client assertion against the key the guard publishes at its
//! module JWKS path (RFC 7523: iss = sub = client_id, aud = the token endpoint, a short
//! lifetime, a jti never seen before).
//!
//! With `--shof` it is also the SHOF login's auth server, as the reference Koppeltaal auth
//! server behaves: `/oauth2/authorize` verifies the launch token (the portal's own key),
//! burns its jti and shows a login page; logging in redirects to the registered
//! redirect_uri with a code; the token endpoint checks the client assertion, the PKCE S256
//! verifier and the single-use code, and answers an RS512 id_token signed with the auth
//! server's own key (served at `jwks_uri`) plus the launch token's context.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::jose::Alg;
use crate::jose::jwk::parse_jwks;
use crate::jose::jws::{self, Decoded};
use crate::jose::sign::{SigningKey, random_jti};

/// The client_id the demo domain knows the module by.
pub(super) const MODULE_CLIENT_ID: &str = "demo-module";
/// Where the demo guard publishes the module's keys.
pub(super) const MODULE_JWKS_PATH: &str = "/hti/module-keys";

/// The launch-token claims the token response carries as the launch context: the ones
/// the guard reads back.
use crate::shof::CONTEXT;

/// The auth server's state.
pub(super) struct AuthServer {
    pub base: String,
    guard_jwks_url: String,
    seen_assertions: Mutex<HashSet<String>>,
    /// With `--shof`: the login's state.
    shof: Option<Shof>,
}

/// The SHOF login's state: the auth server's own key, the registered callback, and the
/// logins and codes under way.
struct Shof {
    key: SigningKey,
    kid: String,
    redirect_uri: String,
    fhir_base: String,
    burned_launches: Mutex<HashSet<String>>,
    /// Login id (in the login page's form) -> the authorize request it answers.
    logins: Mutex<HashMap<String, Grant>>,
    /// Code -> the grant it stands for; removed when used.
    codes: Mutex<HashMap<String, Grant>>,
}

/// One authorization under way.
#[derive(Clone)]
struct Grant {
    state: String,
    code_challenge: String,
    scope: String,
    launch: Map<String, Value>,
    issued: i64,
}

/// The authorize endpoint's answer.
pub(super) enum Authorize {
    /// Show the login page: the login id for its form and the launch's person (`sub`).
    Login { login: String, sub: String },
    /// Refused, with the reason (shown on the auth server's own page, never redirected).
    Refused(String),
}

/// An OAuth error answer: the HTTP status, the `error` code and its description.
pub(super) type OauthError = (u16, &'static str, String);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn field<'f>(form: &'f [(String, String)], name: &str) -> Option<&'f str> {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl AuthServer {
    pub(super) fn new(portal_url: &str, guard_url: &str) -> AuthServer {
        AuthServer {
            base: portal_url.to_owned(),
            guard_jwks_url: format!("{guard_url}{MODULE_JWKS_PATH}"),
            seen_assertions: Mutex::new(HashSet::new()),
            shof: None,
        }
    }

    /// Play the SHOF login's auth server too: a fresh RS512 key for id_tokens, and the
    /// module's registered callback.
    pub(super) fn with_shof(mut self, redirect_uri: &str) -> Result<AuthServer, String> {
        let key = SigningKey::generate(Alg::RS512, 2048).map_err(|e| e.to_string())?;
        let kid = format!(
            "demo-auth-{}",
            &random_jti().map_err(|e| e.to_string())?[..8]
        );
        self.shof = Some(Shof {
            key,
            kid,
            redirect_uri: redirect_uri.to_owned(),
            fhir_base: format!("{}/fhir", self.base),
            burned_launches: Mutex::new(HashSet::new()),
            logins: Mutex::new(HashMap::new()),
            codes: Mutex::new(HashMap::new()),
        });
        Ok(self)
    }

    /// The JWKS of the id_token key (`--shof`).
    pub(super) fn jwks(&self) -> Option<Value> {
        self.shof
            .as_ref()
            .map(|s| s.key.jwks(&s.kid, Some(Alg::RS512)))
    }

    pub(super) fn token_endpoint(&self) -> String {
        format!("{}/oauth2/token", self.base)
    }

    /// The smart-configuration document.
    pub(super) fn smart_configuration(&self) -> Value {
        let mut config = json!({
            "issuer": self.base,
            "token_endpoint": self.token_endpoint(),
            "introspection_endpoint": format!("{}/oauth2/introspect", self.base),
            "jwks_uri": format!("{}/.well-known/jwks.json", self.base),
        });
        if self.shof.is_some() {
            config["authorization_endpoint"] = json!(format!("{}/oauth2/authorize", self.base));
            config["jwks_uri"] = json!(format!("{}/oauth2/jwks", self.base));
        }
        config
    }

    /// `/oauth2/authorize`: check the request and the launch token (signed by the portal's
    /// key, not expired, its jti not seen before, which it burns), and remember the login.
    pub(super) fn authorize(&self, query: &[(String, String)], portal_jwks: &str) -> Authorize {
        let Some(shof) = &self.shof else {
            return Authorize::Refused("this auth server has no login".into());
        };
        let q = |name: &str| field(query, name);
        if q("response_type") != Some("code") {
            return Authorize::Refused("response_type must be code".into());
        }
        if q("client_id") != Some(MODULE_CLIENT_ID) {
            return Authorize::Refused("unknown client_id".into());
        }
        if q("redirect_uri") != Some(shof.redirect_uri.as_str()) {
            return Authorize::Refused("redirect_uri is not the registered one".into());
        }
        if q("aud") != Some(shof.fhir_base.as_str()) {
            return Authorize::Refused("aud is not this domain's FHIR base".into());
        }
        if q("code_challenge_method") != Some("S256") {
            return Authorize::Refused("code_challenge_method must be S256".into());
        }
        let (Some(challenge), Some(state)) = (q("code_challenge"), q("state")) else {
            return Authorize::Refused("code_challenge and state are required".into());
        };
        let Some(launch) = q("launch").and_then(|t| active_claims(t, portal_jwks)) else {
            return Authorize::Refused("the launch token is not valid".into());
        };
        let Some(jti) = launch.get("jti").and_then(Value::as_str) else {
            return Authorize::Refused("the launch token has no jti".into());
        };
        if !lock(&shof.burned_launches).insert(jti.to_owned()) {
            return Authorize::Refused("the launch token was used before".into());
        }
        let login = match random_jti() {
            Ok(id) => id,
            Err(e) => return Authorize::Refused(e.to_string()),
        };
        let sub = launch
            .get("sub")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        lock(&shof.logins).insert(
            login.clone(),
            Grant {
                state: state.to_owned(),
                code_challenge: challenge.to_owned(),
                scope: q("scope").unwrap_or_default().to_owned(),
                launch,
                issued: now(),
            },
        );
        Authorize::Login { login, sub }
    }

    /// The login page's "log in": the redirect to the registered callback with a fresh code
    /// and the client's state, or why not.
    pub(super) fn log_in(&self, login: &str) -> Result<String, String> {
        let shof = self.shof.as_ref().ok_or("this auth server has no login")?;
        let grant = lock(&shof.logins)
            .remove(login)
            .ok_or("this login is unknown or done")?;
        let code = random_jti().map_err(|e| e.to_string())?;
        let location = format!(
            "{}?{}",
            shof.redirect_uri,
            form_urlencoded::Serializer::new(String::new())
                .append_pair("code", &code)
                .append_pair("state", &grant.state)
                .finish()
        );
        lock(&shof.codes).insert(code, grant);
        Ok(location)
    }

    /// `/oauth2/token` for an authorization code: the client assertion, the single-use
    /// code (at most 5 minutes old), the redirect_uri and the PKCE S256 verifier; then the
    /// token response with the id_token and the launch context.
    pub(super) async fn token(
        &self,
        client: &reqwest::Client,
        form: &[(String, String)],
    ) -> Result<Value, OauthError> {
        let shof = self
            .shof
            .as_ref()
            .ok_or((400, "unsupported_grant_type", String::new()))?;
        if field(form, "grant_type") != Some("authorization_code") {
            return Err((
                400,
                "unsupported_grant_type",
                "not authorization_code".into(),
            ));
        }
        self.check_assertion(client, form)
            .await
            .map_err(|why| (401, "invalid_client", why))?;
        if field(form, "client_id").is_some_and(|id| id != MODULE_CLIENT_ID) {
            return Err((
                401,
                "invalid_client",
                "client_id is not the assertion's".into(),
            ));
        }
        let grant = field(form, "code")
            .and_then(|code| lock(&shof.codes).remove(code))
            .ok_or((400, "invalid_grant", "unknown or used code".into()))?;
        if now() - grant.issued > 300 {
            return Err((400, "invalid_grant", "the code expired".into()));
        }
        if field(form, "redirect_uri") != Some(shof.redirect_uri.as_str()) {
            return Err((400, "invalid_grant", "redirect_uri does not match".into()));
        }
        let verifier = field(form, "code_verifier").unwrap_or_default();
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes());
        if verifier.is_empty() || URL_SAFE_NO_PAD.encode(digest.as_ref()) != grant.code_challenge {
            return Err((
                400,
                "invalid_grant",
                "the PKCE verifier does not match".into(),
            ));
        }
        let internal = |e: String| (500, "server_error", e);
        let iat = now();
        let id_token = json!({
            "iss": self.base,
            "aud": MODULE_CLIENT_ID,
            "azp": MODULE_CLIENT_ID,
            "sub": grant.launch.get("sub").cloned().unwrap_or(Value::Null),
            "iat": iat,
            "exp": iat + 300,
            "nonce": random_jti().map_err(|e| internal(e.to_string()))?,
        });
        let id_token = shof
            .key
            .sign_jws(Alg::RS512, &shof.kid, &id_token)
            .map_err(|e| internal(e.to_string()))?;
        let mut answer = json!({
            "access_token": "NOOP",
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": grant.scope,
            "id_token": id_token,
        });
        for name in CONTEXT {
            if let Some(value) = grant.launch.get(name) {
                answer[name] = value.clone();
            }
        }
        Ok(answer)
    }

    /// Check the guard's client assertion; the reason when it is refused.
    pub(super) async fn check_assertion(
        &self,
        client: &reqwest::Client,
        form: &[(String, String)],
    ) -> Result<(), String> {
        let field = |name: &str| field(form, name);
        if field("client_assertion_type")
            != Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
        {
            return Err("client_assertion_type is not jwt-bearer".into());
        }
        let assertion = field("client_assertion").ok_or("no client_assertion")?;
        let body = client
            .get(&self.guard_jwks_url)
            .send()
            .await
            .map_err(|e| format!("cannot fetch the module's JWKS: {e}"))?
            .bytes()
            .await
            .map_err(|e| format!("cannot read the module's JWKS: {e}"))?;
        let decoded = verified(assertion, &body).map_err(|e| format!("assertion: {e}"))?;
        let c = &decoded.claims;
        let text = |name: &str| c.get(name).and_then(Value::as_str);
        let number = |name: &str| c.get(name).and_then(Value::as_i64);
        if text("iss") != Some(MODULE_CLIENT_ID) || text("sub") != Some(MODULE_CLIENT_ID) {
            return Err("assertion iss/sub is not the module's client_id".into());
        }
        if text("aud") != Some(self.token_endpoint().as_str()) {
            return Err("assertion aud is not the token endpoint".into());
        }
        let (Some(iat), Some(exp)) = (number("iat"), number("exp")) else {
            return Err("assertion has no iat/exp".into());
        };
        if exp <= now() || exp - iat > 300 {
            return Err("assertion expired or lives longer than 5 minutes".into());
        }
        let jti = text("jti").ok_or("assertion has no jti")?;
        if !lock(&self.seen_assertions).insert(jti.to_owned()) {
            return Err("assertion jti used before".into());
        }
        Ok(())
    }

    /// The introspection answer for `token`, verified with the portal's own keys.
    pub(super) fn introspect(&self, token: &str, portal_jwks: &str) -> Value {
        match active_claims(token, portal_jwks) {
            Some(mut claims) => {
                claims.insert("active".into(), json!(true));
                Value::Object(claims)
            }
            None => json!({ "active": false }),
        }
    }
}

/// A token whose signature verifies with the key of `jwks` its header names.
fn verified<'t>(token: &'t str, jwks: &[u8]) -> Result<Decoded<'t>, String> {
    let decoded = jws::decode(token).map_err(|e| e.to_string())?;
    let jwks = parse_jwks(jwks).map_err(|e| format!("JWKS: {e}"))?;
    let kid = decoded.kid.as_deref().ok_or("the header has no kid")?;
    let key = jwks
        .keys
        .iter()
        .find(|k| k.kid == kid && k.fits(decoded.alg))
        .ok_or_else(|| format!("no key {kid:?} for {}", decoded.alg))?;
    if !key.verify(
        decoded.alg,
        decoded.signing_input.as_bytes(),
        decoded.signature,
    ) {
        return Err("the signature does not verify".into());
    }
    Ok(decoded)
}

/// The claims of a token signed with one of the portal's keys and not expired.
fn active_claims(token: &str, portal_jwks: &str) -> Option<Map<String, Value>> {
    let decoded = verified(token, portal_jwks.as_bytes()).ok()?;
    let exp = decoded.claims.get("exp").and_then(Value::as_i64)?;
    (exp > now()).then_some(decoded.claims)
}
