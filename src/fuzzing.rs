//! Entry points for the fuzz targets in `fuzz/` (built only with `--cfg fuzzing`, which
//! `cargo fuzz` sets): thin wrappers that hand attacker bytes to the crate-private parsers
//! the guard runs on them, in the order the guard runs them, so that no target fuzzes a
//! copy. What is `pub` already (JWS, JWE, JWKS, the launch form, the configuration, the
//! verifier) the targets call directly.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderMap;
use http::header::{self, HeaderValue};
use serde_json::{Map, Value};

use crate::config::{SameSite, SessionConfig};
use crate::jose::{Alg, jws};
use crate::session::{SessionState, Sessions};
use crate::shof::{self, CallbackQuery, IdTokenRules};
use crate::verify::claims::{self, ClaimRules, HtiClaims, header_safe};
use crate::verify::{introspect, smart};

/// The session mechanism with a fixed secret, as a deployment configures it.
pub struct SessionFuzz {
    sessions: Sessions,
    name: String,
}

/// The session binding of [`SessionFuzz`] (`session.binding`).
pub const SESSION_BINDING: &str = "Device/fuzz";

impl Default for SessionFuzz {
    fn default() -> Self {
        let cfg = SessionConfig {
            cookie_name: "hti_guard_session".into(),
            secure: true,
            same_site: SameSite::Lax,
            landing: "/task/{resource_id}?p={patient_id}&d={definition_id}".into(),
            protected: vec!["/".into()],
            public: vec!["/static/".into()],
            ttl: Duration::from_secs(3600),
            idle_timeout: Duration::from_secs(1200),
            secret: Some(b"fuzzing-session-secret-0123456789abcdef".to_vec()),
            previous_secret: Some(b"fuzzing-previous-secret-0123456789abcdef".to_vec()),
            logout_path: "/hti-guard/logout".into(),
            logged_out: None,
            case_insensitive_paths: false,
            binding: SESSION_BINDING.into(),
        };
        SessionFuzz {
            name: cfg.cookie_name.clone(),
            sessions: Sessions::new(cfg),
        }
    }
}

/// What reading a request's session came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionOutcome {
    Missing,
    Invalid,
    Expired,
    Valid,
    Renewed,
}

impl SessionFuzz {
    pub fn cookie_name(&self) -> &str {
        &self.name
    }

    /// Seal `plain` as the session cookie's value, as the guard does for a session.
    pub fn seal(&self, plain: String) -> Option<String> {
        self.sessions.seal_as(&self.name, plain)
    }

    /// `Sessions::read` on a request whose `Cookie` headers are `cookies`, at `now`
    /// (UNIX seconds). Checks what the proxy relies on: the guard's cookie never stays in
    /// the headers the upstream gets, and a valid session's claims are header-safe.
    pub fn read(&self, cookies: &[HeaderValue], now: u64) -> SessionOutcome {
        let mut headers = HeaderMap::new();
        for value in cookies {
            headers.append(header::COOKIE, value.clone());
        }
        let state = self
            .sessions
            .read(&mut headers, UNIX_EPOCH + Duration::from_secs(now));
        // Byte by byte, not through `take_cookie` again: a header that is not visible
        // ASCII must not hide the cookie from the check either.
        for value in headers.get_all(header::COOKIE) {
            for pair in value.as_bytes().split(|&b| b == b';') {
                let name = pair.split(|&b| b == b'=').next().unwrap_or_default();
                assert!(
                    pair.len() == name.len() || name.trim_ascii() != self.name.as_bytes(),
                    "the session cookie is still in the request after read: {headers:?}"
                );
            }
        }
        match state {
            SessionState::Disabled => unreachable!("sessions are enabled"),
            SessionState::Missing => SessionOutcome::Missing,
            SessionState::Invalid => SessionOutcome::Invalid,
            SessionState::Expired => SessionOutcome::Expired,
            SessionState::Valid { launch, renew } => {
                // The proxy writes these into X-HTI-* headers.
                let _ = crate::headers::set_trusted(&mut headers, &launch);
                match renew {
                    Some(_) => SessionOutcome::Renewed,
                    None => SessionOutcome::Valid,
                }
            }
        }
    }
}

/// The rules [`introspection_answer`] holds claims to: `[launch]` defaults with audience
/// `Device/fuzz`.
pub fn default_rules() -> ClaimRules {
    ClaimRules {
        audience: vec!["Device/fuzz".into()],
        max_lifetime: Duration::from_secs(300),
        clock_skew: Duration::from_secs(30),
        hti_versions: vec!["2.0".into()],
    }
}

/// An introspection endpoint's answer `body` to a token whose own claims are
/// `token_claims`, at `now`: the answer parsed, `active` required, merged over the token's
/// claims, and the HTI claim rules on the result, as `Verifier::verify` does. The error is
/// the rejection's reason.
pub fn introspection_answer(
    body: &[u8],
    token_claims: &Map<String, Value>,
    now: i64,
    rules: &ClaimRules,
) -> Result<HtiClaims, &'static str> {
    let answer = introspect::parse_answer(body).map_err(|_| "introspection_unavailable")?;
    let merged = introspect::merge_answer(introspect::active(answer), token_claims)
        .map_err(|r| r.reason.as_str())?;
    let checked = claims::check(&merged, now, rules).map_err(|f| f.reason.as_str())?;
    // An answer never changes the token's issuer or jti (the replay key).
    assert_eq!(
        Some(&Value::String(checked.iss.clone())),
        token_claims.get("iss")
    );
    assert_eq!(
        Some(&Value::String(checked.jti.clone())),
        token_claims.get("jti")
    );
    Ok(checked)
}

/// The issuer and client a SHOF token response is judged against in
/// [`token_response`].
pub const SHOF_ISSUER: &str = "https://auth.example";
pub const SHOF_CLIENT_ID: &str = "module-fuzz";
pub const SHOF_NONCE: &str = "nonce-fuzz";

/// A SHOF token endpoint's response `body` at `now`: parsed, its id_token taken and
/// decoded, the id_token's claim rules (its signature is the key cache's, fuzzed with the
/// JWS and JWKS targets), then the launch context. The error says where it stopped.
pub fn token_response(body: &[u8], now: i64) -> Result<HtiClaims, String> {
    let response = shof::parse_token_response(body).map_err(|r| r.detail.into_owned())?;
    let id_token = shof::id_token_of(&response).map_err(|r| r.detail.into_owned())?;
    let decoded = jws::decode(id_token).map_err(|e| e.to_string())?;
    if !Alg::ALL.contains(&decoded.alg) || decoded.kid.is_none() {
        return Err("alg or kid".into());
    }
    shof::check_id_token(
        &decoded.claims,
        now,
        &IdTokenRules {
            issuer: SHOF_ISSUER,
            client_id: SHOF_CLIENT_ID,
            clock_skew: Duration::from_secs(30),
            nonce: Some(SHOF_NONCE),
        },
    )?;
    let (claims, json) = shof::launch_context(
        &response,
        decoded.claims.get("sub").and_then(Value::as_str),
        now,
        now.saturating_add(300),
    )?;
    // Everything that becomes an X-HTI-* header is header-safe and present.
    for value in [&claims.iss, &claims.sub, &claims.resource, &claims.jti] {
        assert!(!value.is_empty() && header_safe(value), "{value:?}");
    }
    for value in [&claims.patient, &claims.definition, &claims.intent]
        .into_iter()
        .flatten()
    {
        assert!(header_safe(value), "{value:?}");
    }
    let context: Value = serde_json::from_slice(&json).expect("the context is JSON");
    assert_eq!(context["sub"], Value::String(claims.sub.clone()));
    Ok(claims)
}

/// The SHOF callback's query as the guard reads it.
pub fn callback_query(query: &str) -> (Option<String>, Option<String>, Option<String>) {
    let q = CallbackQuery::parse(query);
    for value in [&q.state, &q.code, &q.error].into_iter().flatten() {
        assert!(!value.is_empty());
    }
    (q.state, q.code, q.error)
}

/// What a smart-configuration `body` yields for a FHIR base `fhir_base`: the introspection
/// endpoints (with and without a required token endpoint) and the SHOF auth server. Every
/// URL taken is https, or http on the FHIR base's origin.
pub fn smart_configuration(body: &[u8], fhir_base: &str) -> Result<usize, String> {
    let doc = smart::parse_document(body)?;
    let mut found = 0;
    let base = reqwest::Url::parse(fhir_base).map_err(|e| e.to_string())?;
    let judge = |url: &str| {
        let parsed = reqwest::Url::parse(url).expect("a taken endpoint parses");
        assert!(
            parsed.scheme() == "https"
                || (parsed.scheme() == "http" && parsed.origin() == base.origin()),
            "{url} taken for base {fhir_base}"
        );
    };
    for needs_token in [false, true] {
        if let Ok(endpoints) = introspect::endpoints_from(&doc, fhir_base, needs_token) {
            judge(&endpoints.introspection);
            if let Some(token) = &endpoints.token {
                judge(token);
            }
            assert!(!needs_token || endpoints.token.is_some());
            found += 1;
        }
    }
    if let Ok(server) = shof::auth_server_from(&doc, fhir_base) {
        judge(&server.authorization_endpoint);
        judge(&server.token_endpoint);
        judge(&server.jwks_uri);
        assert!(!server.issuer.is_empty());
        found += 1;
    }
    Ok(found)
}

/// A fixed clock for targets that take `now`: 2026-01-01T00:00:00Z.
pub const NOW: u64 = 1_767_225_600;

/// [`NOW`] as a `SystemTime`.
pub fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(NOW)
}
