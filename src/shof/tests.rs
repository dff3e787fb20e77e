//! Unit tests of the SHOF login's pure parts.

use super::*;
use crate::config::{SameSite, SessionConfig};
use serde_json::json;

fn sessions() -> Sessions {
    Sessions::new(SessionConfig {
        cookie_name: "hti_guard_session".into(),
        secure: false,
        same_site: SameSite::Lax,
        landing: "/".into(),
        protected: vec!["/".into()],
        public: vec![],
        ttl: Duration::from_secs(3600),
        idle_timeout: Duration::from_secs(1200),
        secret: Some(vec![7u8; 32]),
        previous_secret: None,
        logout_path: "/hti-guard/logout".into(),
        logged_out: None,
        case_insensitive_paths: false,
        binding: "Device/1".into(),
    })
}

#[test]
fn the_pkce_challenge_is_rfc_7636s() {
    // RFC 7636 appendix B.
    assert_eq!(
        code_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
        "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    );
}

#[test]
fn the_authorize_url_carries_every_parameter_encoded() {
    let p = Authorize {
        client_id: "module 1",
        redirect_uri: "https://module.example/cb",
        launch: "a.b.c",
        scope: "launch openid fhirUser",
        state: "s-1",
        aud: "https://fhir.example/fhir/",
        code_challenge: "ch",
        nonce: None,
    };
    let url = authorize_url("https://auth.example/oauth2/authorize", &p).unwrap();
    let (base, query) = url.split_once('?').unwrap();
    assert_eq!(base, "https://auth.example/oauth2/authorize");
    let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let want = [
        ("response_type", "code"),
        ("client_id", "module 1"),
        ("redirect_uri", "https://module.example/cb"),
        ("launch", "a.b.c"),
        ("scope", "launch openid fhirUser"),
        ("state", "s-1"),
        ("aud", "https://fhir.example/fhir/"),
        ("code_challenge", "ch"),
        ("code_challenge_method", "S256"),
    ];
    let got: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    assert_eq!(got, want);
    assert!(
        query.contains("aud=https%3A%2F%2Ffhir.example%2Ffhir%2F"),
        "{query}"
    );
    // An endpoint with a query of its own keeps it; the nonce goes along when asked.
    let with_nonce = Authorize {
        nonce: Some("n-1"),
        ..p
    };
    let url = authorize_url("https://auth.example/authorize?tenant=a", &with_nonce).unwrap();
    assert!(
        url.starts_with("https://auth.example/authorize?tenant=a&response_type=code&"),
        "{url}"
    );
    assert!(url.ends_with("&nonce=n-1"), "{url}");
}

#[test]
fn login_cookies_are_one_per_state_and_seal_their_login() {
    let s = sessions();
    let a = login_cookie_name("state-a");
    assert!(a.starts_with(LOGIN_COOKIE_PREFIX));
    assert_ne!(a, login_cookie_name("state-b"));
    assert_eq!(a, login_cookie_name("state-a"));
    let login = LoginData {
        state: "state-a".into(),
        verifier: "v".into(),
        nonce: None,
        exp: 1000,
    };
    let sealed = s
        .seal_as(&a, serde_json::to_string(&login).unwrap())
        .unwrap();
    let one = vec![sealed.clone()];
    assert!(!sealed.contains("state-a"));
    assert_eq!(open_login(&one, &a, "state-a", &s, 999).unwrap(), login);
    // Expired, another state, another cookie's name, nothing, tampered.
    let reason = |r: Result<LoginData, Rejection>| r.unwrap_err().reason;
    assert_eq!(
        reason(open_login(&one, &a, "state-a", &s, 1000)),
        Reason::LoginStateMismatch
    );
    assert_eq!(
        reason(open_login(&one, &a, "state-b", &s, 10)),
        Reason::LoginStateMismatch
    );
    let b = login_cookie_name("state-b");
    assert_eq!(
        reason(open_login(&one, &b, "state-a", &s, 10)),
        Reason::LoginStateMismatch
    );
    assert_eq!(
        reason(open_login(&[], &a, "state-a", &s, 10)),
        Reason::LoginStateMismatch
    );
    let mut tampered = sealed.into_bytes();
    tampered[5] ^= 1;
    let tampered = String::from_utf8(tampered).unwrap();
    assert_eq!(
        reason(open_login(&[tampered], &a, "state-a", &s, 10)),
        Reason::LoginStateMismatch
    );
}

#[test]
fn the_login_cookie_is_scoped_and_cleared_on_its_path() {
    let s = sessions();
    let set = s
        .helper_cookie(
            "hti_guard_login_x",
            "v".into(),
            "/cb",
            Duration::from_secs(600),
        )
        .unwrap();
    let set = set.to_str().unwrap();
    for part in [
        "hti_guard_login_x=v",
        "HttpOnly",
        "SameSite=Lax",
        "Path=/cb",
        "Max-Age=600",
    ] {
        assert!(set.contains(part), "{set}");
    }
    assert!(!set.contains("Secure"), "{set}");
    let clear = s
        .helper_cookie("hti_guard_login_x", String::new(), "/cb", Duration::ZERO)
        .unwrap();
    let clear = clear.to_str().unwrap();
    assert!(
        clear.contains("Max-Age=0") && clear.contains("Path=/cb"),
        "{clear}"
    );
}

#[test]
fn the_callback_query_reads_state_code_and_error() {
    let q = CallbackQuery::parse("code=c%2B1&state=s&error=");
    assert_eq!(
        q,
        CallbackQuery {
            state: Some("s".into()),
            code: Some("c+1".into()),
            error: None,
        }
    );
    assert_eq!(error_code("access_denied"), "access_denied");
    assert_eq!(error_code("<script>"), "(not a plain code)");
}

fn id_claims(now: i64) -> Map<String, Value> {
    json!({
        "iss": "https://auth.example",
        "aud": "module-1",
        "sub": "Patient/1",
        "exp": now + 300,
        "iat": now,
        "nonce": "their-own",
    })
    .as_object()
    .unwrap()
    .clone()
}

#[test]
fn id_token_claims_are_checked_at_the_time_given() {
    let now = 2_000_000_000;
    let rules = IdTokenRules {
        issuer: "https://auth.example",
        client_id: "module-1",
        clock_skew: Duration::from_secs(30),
        nonce: None,
    };
    assert!(check_id_token(&id_claims(now), now, &rules).is_ok());
    let mut c = id_claims(now);
    c.insert("aud".into(), json!(["other", "module-1"]));
    assert!(check_id_token(&c, now, &rules).is_ok());
    // Just inside the skew either way.
    assert!(check_id_token(&id_claims(now), now + 329, &rules).is_ok());
    assert!(check_id_token(&id_claims(now), now + 330, &rules).is_err());
    assert!(check_id_token(&id_claims(now + 30), now, &rules).is_ok());
    assert!(check_id_token(&id_claims(now + 31), now, &rules).is_err());
    for (name, value) in [
        ("iss", json!("https://elsewhere.example")),
        ("aud", json!("module-2")),
        ("aud", json!(["module-2"])),
        ("exp", Value::Null),
        ("iat", json!("soon")),
        ("nbf", json!(now + 60)),
    ] {
        let mut c = id_claims(now);
        c.insert(name.into(), value.clone());
        assert!(check_id_token(&c, now, &rules).is_err(), "{name}: {value}");
    }
    // The nonce counts only when one was sent.
    let with_nonce = IdTokenRules {
        nonce: Some("ours"),
        ..rules
    };
    assert!(check_id_token(&id_claims(now), now, &with_nonce).is_err());
    let mut c = id_claims(now);
    c.insert("nonce".into(), json!("ours"));
    assert!(check_id_token(&c, now, &with_nonce).is_ok());
}

#[test]
fn the_launch_context_becomes_the_sessions_claims() {
    let response = json!({
        "access_token": "NOOP",
        "id_token": "x.y.z",
        "iss": "portal-1",
        "sub": "Practitioner/7",
        "resource": "Task/9",
        "definition": "ActivityDefinition/3",
        "intent": "plan",
        "aud": "Device/1",
        "exp": 2_000_000_300,
        "jti": "jti-0123456789abcdef",
    });
    let map = response.as_object().unwrap();
    let (claims, json) = launch_context(map, Some("Patient/1"), 2_000_000_000, 1).unwrap();
    assert_eq!(claims.sub, "Practitioner/7");
    assert_eq!(claims.resource, "Task/9");
    assert_eq!(claims.exp, 2_000_000_300);
    assert_eq!(claims.iat, 2_000_000_000);
    let json: Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(json["jti"], "jti-0123456789abcdef");
    assert!(json.get("access_token").is_none() && json.get("id_token").is_none());
    // Without a context sub, the id_token's.
    let mut no_sub = map.clone();
    no_sub.remove("sub");
    let (claims, json) = launch_context(&no_sub, Some("Patient/1"), 0, 99).unwrap();
    assert_eq!(claims.sub, "Patient/1");
    assert_eq!(
        serde_json::from_slice::<Value>(&json).unwrap()["sub"],
        "Patient/1"
    );
    // Without resource, iss or jti; with a value a header cannot carry.
    for name in ["resource", "iss", "jti"] {
        let mut m = map.clone();
        m.remove(name);
        assert!(launch_context(&m, None, 0, 0).is_err(), "{name}");
    }
    let mut m = map.clone();
    m.insert("resource".into(), json!("Task/9\r\nX-Evil: 1"));
    assert!(launch_context(&m, None, 0, 0).is_err());
}

#[test]
fn the_auth_server_is_read_from_the_smart_configuration() {
    let base = "http://auth.internal:8080/fhir/";
    let doc = json!({
        "issuer": "http://auth.internal:8080",
        "authorization_endpoint": "http://auth.internal:8080/oauth2/authorize",
        "token_endpoint": "http://auth.internal:8080/oauth2/token",
        "jwks_uri": "http://auth.internal:8080/.well-known/jwks.json",
    });
    let server = auth_server_from(&doc, base).unwrap();
    assert_eq!(
        server.token_endpoint,
        "http://auth.internal:8080/oauth2/token"
    );
    for missing in [
        "issuer",
        "authorization_endpoint",
        "token_endpoint",
        "jwks_uri",
    ] {
        let mut d = doc.clone();
        d.as_object_mut().unwrap().remove(missing);
        assert!(auth_server_from(&d, base).is_err(), "{missing}");
    }
    let mut d = doc.clone();
    d["token_endpoint"] = json!("http://elsewhere.example/token");
    assert!(auth_server_from(&d, base).is_err());
}
