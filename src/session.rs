//! Sessions after the launch: an accepted launch becomes a sealed cookie (AES-256-GCM, the
//! `cookie` crate's private jar), so that every later request of the visit carries the
//! verified identity as `X-HTI-*` headers, the way apps behind oauth2-proxy read
//! `X-Forwarded-User`. Absolute lifetime `session.ttl`, idle timeout `session.idle_timeout`
//! (renewed at most once a minute); tampered, expired or foreign cookies are no session.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cookie::{Cookie, CookieJar, Key};
use http::HeaderMap;
use http::header::{self, HeaderValue};
use serde::{Deserialize, Serialize};

use crate::config::{SameSite, SessionConfig, path};
use crate::error::{Reason, Rejection};
use crate::metrics::SessionEvent;
use crate::verify::{HtiClaims, VerifiedLaunch};

/// Browsers keep cookies up to about 4 KiB (name, value and attributes).
pub(crate) const MAX_COOKIE_BYTES: usize = 4096;
/// A session's idle clock is renewed at most this often.
const RENEW_EVERY: Duration = Duration::from_secs(60);

/// What a session cookie holds (sealed).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SessionData {
    /// The configured issuer (metrics label), if any.
    issuer: Option<String>,
    claims: HtiClaims,
    /// The verified claims JSON, base64url.
    claims_json: String,
    /// Created and last renewed, UNIX seconds.
    created: u64,
    renewed: u64,
    /// The deployment the session was made for (`session.binding`): another module that
    /// shares the secret refuses it. A cookie without it (older) is no session.
    binding: String,
}

/// The session a request carries.
#[derive(Debug)]
pub(crate) enum SessionState {
    /// Sessions are not enabled.
    Disabled,
    /// No session cookie.
    Missing,
    /// A cookie that is tampered, foreign, or from a key no longer accepted.
    Invalid,
    /// A session past its lifetime or idle timeout.
    Expired,
    /// A valid session; `renew` is the refreshed cookie to set, when due.
    Valid {
        launch: Box<VerifiedLaunch>,
        renew: Option<HeaderValue>,
    },
}

impl SessionState {
    /// What reading the cookie counts as in `hti_guard_sessions_total`, if anything.
    pub(crate) fn event(&self) -> Option<SessionEvent> {
        match self {
            SessionState::Invalid => Some(SessionEvent::Invalid),
            SessionState::Expired => Some(SessionEvent::Expired),
            SessionState::Valid { renew: Some(_), .. } => Some(SessionEvent::Renewed),
            SessionState::Valid { renew: None, .. }
            | SessionState::Missing
            | SessionState::Disabled => None,
        }
    }
}

/// The session mechanism.
pub(crate) struct Sessions {
    cfg: SessionConfig,
    key: Key,
    previous: Option<Key>,
}

fn unix(now: SystemTime) -> u64 {
    now.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Sessions {
    pub(crate) fn new(cfg: SessionConfig) -> Sessions {
        let key = match &cfg.secret {
            Some(secret) => Key::derive_from(secret),
            None => {
                tracing::warn!(
                    "session.secret is not set: sessions are sealed with a random key made at start; \
                     they will not survive a restart or reach another replica"
                );
                Key::generate()
            }
        };
        let previous = cfg.previous_secret.as_deref().map(Key::derive_from);
        Sessions { cfg, key, previous }
    }

    /// The sessions after a reload: without `session.secret`, the random key made at
    /// start is kept (a new one would end every session); with it, the new secret seals.
    pub(crate) fn reloaded(cfg: SessionConfig, previous: Option<&Sessions>) -> Sessions {
        match previous {
            Some(old) if cfg.secret.is_none() && old.cfg.secret.is_none() => {
                let previous = cfg.previous_secret.as_deref().map(Key::derive_from);
                let key = old.key.clone();
                Sessions { cfg, key, previous }
            }
            _ => Sessions::new(cfg),
        }
    }

    /// The logout path and whether it matches regardless of case, for the router.
    pub(crate) fn logout_route(&self) -> (String, bool) {
        (
            self.cfg.logout_path.clone(),
            self.cfg.case_insensitive_paths,
        )
    }

    /// Whether a request to `path` (normalised) needs a session (protected and not public).
    pub(crate) fn protects(&self, path: &str) -> bool {
        let fold = self.cfg.case_insensitive_paths;
        !self
            .cfg
            .public
            .iter()
            .any(|p| path::has_prefix(path, p, fold))
            && self
                .cfg
                .protected
                .iter()
                .any(|p| path::has_prefix(path, p, fold))
    }

    fn cookie(&self, value: String, max_age: Duration) -> Cookie<'static> {
        let same_site = match self.cfg.same_site {
            SameSite::Lax => cookie::SameSite::Lax,
            SameSite::Strict => cookie::SameSite::Strict,
            SameSite::None => cookie::SameSite::None,
        };
        Cookie::build((self.cfg.cookie_name.clone(), value))
            .http_only(true)
            .secure(self.cfg.secure || self.cfg.same_site == SameSite::None)
            .same_site(same_site)
            .path("/")
            .max_age(cookie::time::Duration::seconds(
                i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX),
            ))
            .build()
    }

    fn seal(&self, data: &SessionData) -> Option<String> {
        let plain = serde_json::to_string(data).ok()?;
        self.seal_as(&self.cfg.cookie_name, plain)
    }

    fn open(&self, sealed: &str) -> Option<SessionData> {
        serde_json::from_str(&self.open_as(&self.cfg.cookie_name, sealed)?).ok()
    }

    /// Seal `plain` as the value of cookie `name` (AES-256-GCM with the session key; the
    /// name is bound in, so a value does not open under another name).
    pub(crate) fn seal_as(&self, name: &str, plain: String) -> Option<String> {
        let mut jar = CookieJar::new();
        jar.private_mut(&self.key)
            .add(Cookie::new(name.to_owned(), plain));
        jar.get(name).map(|c| c.value().to_owned())
    }

    /// Open a value sealed by [`Sessions::seal_as`] under `name`, with the current key or
    /// the previous one.
    pub(crate) fn open_as(&self, name: &str, sealed: &str) -> Option<String> {
        for key in std::iter::once(&self.key).chain(self.previous.as_ref()) {
            let mut jar = CookieJar::new();
            jar.add_original(Cookie::new(name.to_owned(), sealed.to_owned()));
            if let Some(cookie) = jar.private(key).get(name) {
                return Some(cookie.value().to_owned());
            }
        }
        None
    }

    /// A short-lived helper cookie of the guard's own (a SHOF login): HttpOnly,
    /// SameSite=Lax (it must come back on the auth server's top-level redirect), Secure as
    /// `session.secure`, scoped to `path`; `max_age` zero clears it.
    pub(crate) fn helper_cookie(
        &self,
        name: &str,
        value: String,
        path: &str,
        max_age: Duration,
    ) -> Option<HeaderValue> {
        let text = Cookie::build((name.to_owned(), value))
            .http_only(true)
            .secure(self.cfg.secure)
            .same_site(cookie::SameSite::Lax)
            .path(path.to_owned())
            .max_age(cookie::time::Duration::seconds(
                i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX),
            ))
            .build()
            .to_string();
        (text.len() <= MAX_COOKIE_BYTES)
            .then(|| HeaderValue::from_str(&text).ok())
            .flatten()
    }

    /// The `Set-Cookie` value for `data`, refused when it would not fit in a browser.
    fn set_cookie(&self, data: &SessionData, now: u64) -> Result<HeaderValue, Rejection> {
        let sealed = self.seal(data).ok_or_else(|| {
            Rejection::internal(
                Reason::UpstreamUnavailable,
                "the session could not be sealed",
            )
        })?;
        let left = (data.created + self.cfg.ttl.as_secs()).saturating_sub(now);
        let text = self.cookie(sealed, Duration::from_secs(left)).to_string();
        if text.len() > MAX_COOKIE_BYTES {
            return Err(Rejection::new(
                Reason::SessionTooLarge,
                format!(
                    "the session cookie would take {} bytes; browsers keep {MAX_COOKIE_BYTES}",
                    text.len()
                ),
            ));
        }
        HeaderValue::from_str(&text).map_err(|_| {
            Rejection::internal(
                Reason::UpstreamUnavailable,
                "the session cookie is not a header value",
            )
        })
    }

    /// A session for an accepted launch: the cookie to set and where to send the browser.
    pub(crate) fn create(
        &self,
        launch: &VerifiedLaunch,
        now: SystemTime,
    ) -> Result<(HeaderValue, String), Rejection> {
        let now = unix(now);
        let data = SessionData {
            issuer: launch.issuer.clone(),
            claims: launch.claims.clone(),
            claims_json: URL_SAFE_NO_PAD.encode(&launch.claims_json),
            created: now,
            renewed: now,
            binding: self.cfg.binding.clone(),
        };
        Ok((
            self.set_cookie(&data, now)?,
            landing(&self.cfg.landing, &launch.claims),
        ))
    }

    /// The cookie that removes the session.
    pub(crate) fn clear_cookie(&self) -> HeaderValue {
        let text = self.cookie(String::new(), Duration::ZERO).to_string();
        HeaderValue::from_str(&text)
            .unwrap_or_else(|_| HeaderValue::from_static("hti_guard_session=; Max-Age=0; Path=/"))
    }

    /// Read the request's session and take the guard's cookie out of its `Cookie` header
    /// (other cookies stay), so that the upstream never sees it.
    /// Counts nothing: [`SessionState::event`] says what the proxy's `finish` counts.
    pub(crate) fn read(&self, headers: &mut HeaderMap, now: SystemTime) -> SessionState {
        let values = take_cookie(headers, &self.cfg.cookie_name);
        if values.is_empty() {
            return SessionState::Missing;
        }
        let Some(data) = values
            .iter()
            .filter_map(|v| self.open(v))
            .find(|data| data.binding == self.cfg.binding)
        else {
            return SessionState::Invalid;
        };
        let now = unix(now);
        let expired = now.saturating_sub(data.created) > self.cfg.ttl.as_secs()
            || now.saturating_sub(data.renewed) > self.cfg.idle_timeout.as_secs();
        if expired {
            return SessionState::Expired;
        }
        let renew = if now.saturating_sub(data.renewed) >= RENEW_EVERY.as_secs() {
            let fresh = SessionData {
                renewed: now,
                ..data.clone()
            };
            self.set_cookie(&fresh, now).ok()
        } else {
            None
        };
        let claims_json = URL_SAFE_NO_PAD
            .decode(&data.claims_json)
            .unwrap_or_default();
        SessionState::Valid {
            launch: Box::new(VerifiedLaunch {
                issuer: data.issuer,
                claims: data.claims,
                claims_json,
            }),
            renew,
        }
    }

    /// Where the browser goes after logout, if configured.
    pub(crate) fn logged_out(&self) -> Option<&str> {
        self.cfg.logged_out.as_deref()
    }

    pub(crate) fn cookie_name(&self) -> &str {
        &self.cfg.cookie_name
    }
}

/// Whether a request comes from another site, so that it may not end a session (a forged
/// logout): `Sec-Fetch-Site: cross-site`, or, from a browser that sends no fetch metadata,
/// an `Origin` whose host is not the request's own (or the opaque `null`). A same-site
/// link or form, and a request with neither header (a typed address, a bookmark), may.
pub(crate) fn is_cross_site(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        return site.as_bytes().eq_ignore_ascii_case(b"cross-site");
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return false;
    };
    let Ok(origin) = origin.to_str() else {
        return true;
    };
    let origin_host = origin
        .split_once("://")
        .map(|(_, rest)| rest.trim_end_matches('/'));
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    match (origin_host, host) {
        (Some(o), Some(h)) => !o.eq_ignore_ascii_case(h.trim()),
        _ => true,
    }
}

/// Take every value of cookie `name` out of the `Cookie` headers; keep the rest.
pub(crate) fn take_cookie(headers: &mut HeaderMap, name: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut kept = Vec::new();
    let mut touched = false;
    for value in headers.get_all(header::COOKIE) {
        // Bytes, not `to_str`: browsers send other cookies' UTF-8 as it is, and such a
        // header must neither hide the session nor carry it on to the upstream.
        let mut rest: Vec<&[u8]> = Vec::new();
        for pair in value.as_bytes().split(|&b| b == b';') {
            let pair = pair.trim_ascii();
            match pair.iter().position(|&b| b == b'=') {
                Some(at) if pair[..at].trim_ascii() == name.as_bytes() => {
                    let v = String::from_utf8_lossy(pair[at + 1..].trim_ascii());
                    found.push(v.trim_matches('"').to_owned());
                    touched = true;
                }
                _ if pair.is_empty() => {}
                _ => rest.push(pair),
            }
        }
        if !rest.is_empty()
            && let Ok(v) = HeaderValue::from_bytes(&rest.join(&b"; "[..]))
        {
            kept.push(v);
        }
    }
    if touched {
        headers.remove(header::COOKIE);
        for v in kept {
            headers.append(header::COOKIE, v);
        }
    }
    found
}

/// The id part of a reference or canonical URL: after the last '/', before any '|'.
fn id_of(reference: &str) -> &str {
    let reference = reference.split('|').next().unwrap_or(reference);
    reference.rsplit('/').next().unwrap_or(reference)
}

fn encode(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// Fill the landing template from the claims (values URL-encoded).
pub(crate) fn landing(template: &str, c: &HtiClaims) -> String {
    let patient = c
        .patient
        .as_deref()
        .or_else(|| c.sub.starts_with("Patient/").then_some(c.sub.as_str()))
        .map(id_of)
        .unwrap_or("");
    template
        .replace("{resource_id}", &encode(id_of(&c.resource)))
        .replace("{resource}", &encode(&c.resource))
        .replace("{patient_id}", &encode(patient))
        .replace(
            "{definition_id}",
            &encode(c.definition.as_deref().map(id_of).unwrap_or("")),
        )
        .replace("{intent}", &encode(c.intent.as_deref().unwrap_or("")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SessionConfig;

    fn cfg(secret: Option<Vec<u8>>) -> SessionConfig {
        SessionConfig {
            cookie_name: "hti_guard_session".into(),
            secure: true,
            same_site: SameSite::Lax,
            landing: "/task/{resource_id}?p={patient_id}&d={definition_id}".into(),
            protected: vec!["/".into()],
            public: vec!["/static/".into()],
            ttl: Duration::from_secs(3600),
            idle_timeout: Duration::from_secs(1200),
            secret,
            previous_secret: None,
            logout_path: "/hti-guard/logout".into(),
            logged_out: None,
            case_insensitive_paths: false,
            binding: "Device/1".into(),
        }
    }

    fn launch() -> VerifiedLaunch {
        VerifiedLaunch {
            issuer: Some("https://portal".into()),
            claims: HtiClaims {
                iss: "https://portal".into(),
                sub: "Practitioner/1".into(),
                resource: "Task/t-9".into(),
                patient: Some("Patient/p 2".into()),
                definition: Some("https://x.example/ActivityDefinition/ad-1|2.0".into()),
                intent: Some("plan".into()),
                jti: "0123456789abcdef0123".into(),
                exp: 2_000_000_300,
                iat: 2_000_000_000,
            },
            claims_json: br#"{"sub":"Practitioner/1"}"#.to_vec(),
        }
    }

    fn request_with(cookie_header: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(cookie_header).unwrap(),
        );
        h
    }

    fn value_of(set_cookie: &HeaderValue) -> String {
        let text = set_cookie.to_str().unwrap();
        text.split(';')
            .next()
            .unwrap()
            .split_once('=')
            .unwrap()
            .1
            .to_owned()
    }

    const T0: u64 = 2_000_000_000;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn a_session_round_trips_and_the_cookie_is_taken_out() {
        let s = Sessions::new(cfg(Some(vec![7; 32])));
        let (set, to) = s.create(&launch(), at(T0)).unwrap();
        assert_eq!(to, "/task/t-9?p=p+2&d=ad-1");
        let text = set.to_str().unwrap();
        for attr in [
            "HttpOnly",
            "Secure",
            "SameSite=Lax",
            "Path=/",
            "Max-Age=3600",
        ] {
            assert!(text.contains(attr), "{attr} in {text}");
        }
        let mut h = request_with(&format!("a=1; hti_guard_session={}; b=2", value_of(&set)));
        match s.read(&mut h, at(T0 + 10)) {
            SessionState::Valid { launch, renew } => {
                assert_eq!(launch.claims.sub, "Practitioner/1");
                assert!(renew.is_none());
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(h[header::COOKIE], "a=1; b=2");
    }

    #[test]
    fn a_cookie_header_with_utf8_still_gives_up_the_session() {
        // Found by fuzz/ (session_cookie): another cookie's raw UTF-8 made the header fail
        // `to_str`, so the session was neither read nor taken out before the upstream.
        let s = Sessions::new(cfg(Some(vec![7; 32])));
        let (set, _) = s.create(&launch(), at(T0)).unwrap();
        let text = format!("name=Ren\u{e9}e; hti_guard_session={}; x=1", value_of(&set));
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_bytes(text.as_bytes()).unwrap(),
        );
        assert!(matches!(
            s.read(&mut h, at(T0 + 10)),
            SessionState::Valid { .. }
        ));
        assert_eq!(
            h.get(header::COOKIE).unwrap().as_bytes(),
            "name=Ren\u{e9}e; x=1".as_bytes()
        );
    }

    #[test]
    fn tampered_foreign_and_old_sessions_are_no_session() {
        let s = Sessions::new(cfg(Some(vec![7; 32])));
        let other = Sessions::new(cfg(Some(vec![8; 32])));
        let (set, _) = s.create(&launch(), at(T0)).unwrap();
        let value = value_of(&set);
        let mut tampered = value.clone().into_bytes();
        tampered[10] ^= 1;
        let tampered = String::from_utf8(tampered).unwrap();
        let state = |sessions: &Sessions, v: &str, t: u64| {
            let mut h = request_with(&format!("hti_guard_session={v}"));
            sessions.read(&mut h, at(t))
        };
        assert!(matches!(state(&s, &tampered, T0), SessionState::Invalid));
        assert!(matches!(state(&other, &value, T0), SessionState::Invalid));
        assert!(
            matches!(state(&s, &value, T0 + 1201), SessionState::Expired),
            "idle"
        );
        assert!(matches!(state(&s, "garbage", T0), SessionState::Invalid));
        let mut none = HeaderMap::new();
        assert!(matches!(s.read(&mut none, at(T0)), SessionState::Missing));
    }

    #[test]
    fn renewal_keeps_a_session_alive_up_to_its_lifetime() {
        let s = Sessions::new(cfg(Some(vec![7; 32])));
        let (mut set, _) = s.create(&launch(), at(T0)).unwrap();
        let mut t = T0;
        while t < T0 + 3600 - 600 {
            t += 600;
            let mut h = request_with(&format!("hti_guard_session={}", value_of(&set)));
            match s.read(&mut h, at(t)) {
                SessionState::Valid {
                    renew: Some(fresh), ..
                } => set = fresh,
                other => panic!("at +{}: {other:?}", t - T0),
            }
        }
        let mut h = request_with(&format!("hti_guard_session={}", value_of(&set)));
        assert!(
            matches!(s.read(&mut h, at(T0 + 3601)), SessionState::Expired),
            "absolute"
        );
    }

    #[test]
    fn each_state_counts_as_its_event() {
        let s = Sessions::new(cfg(Some(vec![7; 32])));
        let (set, _) = s.create(&launch(), at(T0)).unwrap();
        let event = |cookie: &str, t: u64| {
            let mut h = request_with(&format!("hti_guard_session={cookie}"));
            s.read(&mut h, at(t)).event()
        };
        assert_eq!(event(&value_of(&set), T0 + 10), None);
        assert_eq!(
            event(&value_of(&set), T0 + 600),
            Some(SessionEvent::Renewed)
        );
        assert_eq!(
            event(&value_of(&set), T0 + 1201),
            Some(SessionEvent::Expired)
        );
        assert_eq!(event("garbage", T0), Some(SessionEvent::Invalid));
        assert_eq!(s.read(&mut HeaderMap::new(), at(T0)).event(), None);
    }

    #[test]
    fn a_previous_key_still_opens_sessions() {
        let old = Sessions::new(cfg(Some(vec![1; 32])));
        let mut rotated = cfg(Some(vec![2; 32]));
        rotated.previous_secret = Some(vec![1; 32]);
        let new = Sessions::new(rotated);
        let (set, _) = old.create(&launch(), at(T0)).unwrap();
        let mut h = request_with(&format!("hti_guard_session={}", value_of(&set)));
        assert!(matches!(
            new.read(&mut h, at(T0)),
            SessionState::Valid { .. }
        ));
    }

    #[test]
    fn a_session_too_large_for_a_cookie_is_refused() {
        let s = Sessions::new(cfg(Some(vec![7; 32])));
        let mut big = launch();
        big.claims_json = vec![b'x'; 4000];
        let err = s.create(&big, at(T0)).unwrap_err();
        assert_eq!(err.reason, Reason::SessionTooLarge);
    }

    #[test]
    fn public_prefixes_win_over_protected_ones() {
        let s = Sessions::new(cfg(Some(vec![7; 32])));
        assert!(s.protects("/task/1"));
        assert!(!s.protects("/static/app.css"));
    }

    #[test]
    fn a_session_of_another_deployment_is_no_session() {
        let secret = Some(vec![7u8; 32]);
        let a = Sessions::new(cfg(secret.clone()));
        let b = Sessions::new(SessionConfig {
            binding: "Device/2".into(),
            ..cfg(secret)
        });
        let (cookie, _) = a.create(&launch(), at(2_000_000_000)).unwrap();
        let header = format!("hti_guard_session={}", value_of(&cookie));
        let mut h = request_with(&header);
        assert!(matches!(
            a.read(&mut h, at(2_000_000_010)),
            SessionState::Valid { .. }
        ));
        let mut h = request_with(&header);
        assert!(matches!(
            b.read(&mut h, at(2_000_000_010)),
            SessionState::Invalid
        ));
    }

    #[test]
    fn logout_paths_and_prefixes_follow_the_case_setting() {
        let strict = Sessions::new(cfg(None));
        assert_eq!(
            strict.logout_route(),
            ("/hti-guard/logout".to_owned(), false)
        );
        assert!(strict.protects("/ADMIN"));
        assert!(!strict.protects("/static/x"));
        assert!(strict.protects("/STATIC/x"));
        let folding = Sessions::new(SessionConfig {
            case_insensitive_paths: true,
            ..cfg(None)
        });
        assert!(folding.logout_route().1);
        assert!(!folding.protects("/STATIC/x"));
    }

    #[test]
    fn cross_site_requests_are_told_apart() {
        let h = |pairs: &[(&str, &str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.append(
                    http::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                );
            }
            h
        };
        assert!(!is_cross_site(&h(&[])));
        assert!(!is_cross_site(&h(&[("sec-fetch-site", "same-origin")])));
        assert!(!is_cross_site(&h(&[("sec-fetch-site", "same-site")])));
        assert!(!is_cross_site(&h(&[("sec-fetch-site", "none")])));
        assert!(is_cross_site(&h(&[("sec-fetch-site", "cross-site")])));
        // Fetch metadata wins over Origin.
        assert!(is_cross_site(&h(&[
            ("sec-fetch-site", "cross-site"),
            ("origin", "https://app.example"),
            ("host", "app.example"),
        ])));
        assert!(!is_cross_site(&h(&[
            ("origin", "https://app.example"),
            ("host", "app.example"),
        ])));
        assert!(!is_cross_site(&h(&[
            ("origin", "http://127.0.0.1:8080"),
            ("host", "127.0.0.1:8080"),
        ])));
        assert!(is_cross_site(&h(&[
            ("origin", "https://evil.example"),
            ("host", "app.example"),
        ])));
        assert!(is_cross_site(&h(&[
            ("origin", "null"),
            ("host", "app.example")
        ])));
        assert!(is_cross_site(&h(&[("origin", "https://app.example")])));
    }
}
