//! The proxy's unit tests: what `finish` and `settle` write, once.

use super::*;
use std::time::Duration;

use crate::verify::HtiClaims;

static AUDITOR: std::sync::LazyLock<Auditor> = std::sync::LazyLock::new(Auditor::default);

fn claims() -> HtiClaims {
    HtiClaims {
        iss: "https://portal".into(),
        sub: "Patient/p1".into(),
        resource: "Task/t1".into(),
        patient: None,
        definition: None,
        intent: None,
        jti: "j-1".into(),
        exp: 0,
        iat: 0,
    }
}

fn accepted() -> Exchange {
    let mut exchange = Exchange::new(&http::HeaderMap::new());
    exchange.stripped = 2;
    exchange.session_change = Some(SessionEvent::Created);
    exchange.launch = Some(LaunchDecision::Accepted {
        issuer: Some("https://portal".into()),
        claims: Box::new(claims()),
    });
    exchange
}

fn rendered(metrics: &Metrics) -> String {
    String::from_utf8(metrics.render()).unwrap()
}

const ACCEPTED: &str =
    "hti_guard_launches_total{issuer=\"https://portal\",reason=\"none\",result=\"accepted\"} 1";

#[test]
fn decisions_are_written_once() {
    let metrics = Metrics::new();
    let mut exchange = accepted();
    exchange.settle(&metrics, &AUDITOR, Some(200));
    exchange.settle(&metrics, &AUDITOR, Some(200));
    // What `Held`'s drop does: nothing more once settled.
    exchange.settle(&metrics, &AUDITOR, None);
    let text = rendered(&metrics);
    assert!(text.contains(ACCEPTED), "{text}");
    assert!(text.contains("hti_guard_sessions_total{event=\"created\"} 1"));
    assert!(text.contains("hti_guard_spoofed_headers_stripped_total 2"));
}

#[test]
fn a_launch_accepted_before_the_client_left_is_still_counted() {
    let metrics = Metrics::new();
    // What `Held`'s drop does when the client left before `finish`.
    accepted().settle(&metrics, &AUDITOR, None);
    let text = rendered(&metrics);
    assert!(text.contains(ACCEPTED), "{text}");
    // The request itself was never answered.
    assert!(!text.contains("hti_guard_requests_total{"), "{text}");
}

#[test]
fn a_login_is_counted_once_with_its_exchange_time() {
    let metrics = Metrics::new();
    let mut exchange = Exchange::new(&http::HeaderMap::new());
    exchange.login = Some(LoginDecision::Accepted {
        claims: Box::new(claims()),
    });
    exchange.login_time = Some(Duration::from_millis(20));
    exchange.settle(&metrics, &AUDITOR, Some(200));
    exchange.settle(&metrics, &AUDITOR, None);
    let text = rendered(&metrics);
    assert!(
        text.contains("hti_guard_logins_total{reason=\"none\",result=\"accepted\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("hti_guard_login_duration_seconds_count 1"),
        "{text}"
    );
    // A login that only started is no login counted yet.
    let metrics = Metrics::new();
    let mut exchange = Exchange::new(&http::HeaderMap::new());
    exchange.login = Some(LoginDecision::Started);
    exchange.settle(&metrics, &AUDITOR, None);
    assert!(!rendered(&metrics).contains("hti_guard_logins_total{"));
}
