//! The demo portal's second role in `--koppeltaal` mode: the domain's auth server. It
//! publishes a smart-configuration under its FHIR base and answers token introspection,
//! after checking the guard's client assertion against the key the guard publishes at its
//! module JWKS path (RFC 7523: iss = sub = client_id, aud = the token endpoint, a short
//! lifetime, a jti never seen before).

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

use crate::jose::jwk::parse_jwks;
use crate::jose::jws::{self, Decoded};

/// The client_id the demo domain knows the module by.
pub(super) const MODULE_CLIENT_ID: &str = "demo-module";
/// Where the demo guard publishes the module's keys.
pub(super) const MODULE_JWKS_PATH: &str = "/hti/module-keys";

/// The auth server's state.
pub(super) struct AuthServer {
    pub base: String,
    guard_jwks_url: String,
    seen_assertions: Mutex<HashSet<String>>,
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
        }
    }

    pub(super) fn token_endpoint(&self) -> String {
        format!("{}/oauth2/token", self.base)
    }

    /// The smart-configuration document.
    pub(super) fn smart_configuration(&self) -> Value {
        json!({
            "issuer": self.base,
            "token_endpoint": self.token_endpoint(),
            "introspection_endpoint": format!("{}/oauth2/introspect", self.base),
            "jwks_uri": format!("{}/.well-known/jwks.json", self.base),
        })
    }

    /// Check the guard's client assertion; the reason when it is refused.
    pub(super) async fn check_assertion(
        &self,
        client: &reqwest::Client,
        form: &[(String, String)],
    ) -> Result<(), String> {
        let field = |name: &str| {
            form.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
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
        if !self
            .seen_assertions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(jti.to_owned())
        {
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
