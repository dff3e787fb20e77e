//! What the stages of one request decided ([`Exchange`]), and how it is written out once:
//! the metrics, the log lines and the audit event.

use std::time::{Duration, Instant, SystemTime};

use http::header::HeaderValue;

use crate::audit::{AuditEvent, Auditor, Decision, Origin};
use crate::error::{ErrorFormat, Rejection};
use crate::headers;
use crate::launch::Route;
use crate::metrics::{Metrics, SessionEvent};
use crate::session::SessionState;
use crate::verify::HtiClaims;

/// What the stages of one request decided, for [`Proxy::finish`] to write out (or, when
/// the client went away first, for [`Held`]'s drop to settle).
pub(super) struct Exchange {
    /// Where a launch or login came from, for its audit event.
    pub(super) origin: Origin,
    pub(super) started: Instant,
    /// The request id: kept from the client when sane, else made here; visible ASCII.
    pub(super) reference: HeaderValue,
    pub(super) format: ErrorFormat,
    /// For the language of an error page, read only when there is one.
    pub(super) accept_language: Option<HeaderValue>,
    /// `None` while [`Proxy::receive`] has not let the request through.
    pub(super) route: Option<Route>,
    /// Reserved headers the client sent.
    pub(super) stripped: usize,
    /// The session cookie read in [`Proxy::receive`].
    pub(super) session: SessionState,
    /// A session created (launch) or ended (logout).
    pub(super) session_change: Option<SessionEvent>,
    pub(super) launch: Option<LaunchDecision>,
    pub(super) verify_time: Option<Duration>,
    /// A SHOF login's decision (its start or its callback).
    pub(super) login: Option<LoginDecision>,
    /// A login's token exchange and id_token check.
    pub(super) login_time: Option<Duration>,
    /// Further cookies to set on the response (a login cookie cleared).
    pub(super) cookies: Vec<HeaderValue>,
    pub(super) upstream_time: Option<Duration>,
    /// When the upstream answered: the request's end for its duration, so that it needs
    /// no second reading of the clock.
    pub(super) ended: Option<Instant>,
    /// The decisions are written once: by `finish`, or on drop when the client went away
    /// while the request was upstream.
    pub(super) settled: bool,
}

/// A SHOF login's decision.
pub(super) enum LoginDecision {
    /// The launch was sent on to the auth server.
    Started,
    /// The callback ended in a session: the launch context, for the audit event.
    Accepted { claims: Box<HtiClaims> },
    /// Refused: the request's rejection says why.
    Rejected,
}

/// A launch's decision.
pub(super) enum LaunchDecision {
    /// Verified: the configured issuer (the metric label) and, for the audit event, the
    /// verified claims.
    Accepted {
        issuer: Option<String>,
        claims: Box<HtiClaims>,
    },
    /// Refused: the request's rejection says why.
    Rejected,
}

impl Exchange {
    pub(super) fn new(headers: &http::HeaderMap) -> Self {
        let read = headers::Read::from(headers);
        Exchange {
            origin: Origin::default(),
            started: crate::wheel::now(),
            reference: read.request_id(),
            format: ErrorFormat::from_accept(read.accept.as_ref()),
            accept_language: read.accept_language,
            route: None,
            stripped: 0,
            session: SessionState::Missing,
            session_change: None,
            launch: None,
            verify_time: None,
            login: None,
            login_time: None,
            cookies: Vec::new(),
            upstream_time: None,
            ended: None,
            settled: false,
        }
    }

    /// The request id as text.
    pub(super) fn reference(&self) -> &str {
        // `headers::Read::request_id` keeps or makes visible ASCII only.
        self.reference.to_str().unwrap_or_default()
    }

    /// Count and log what was decided: the stripped headers, the session events, the
    /// verification time and an accepted launch or login (its audit event, with the
    /// response `status`; `None` when the client left first).
    pub(super) fn settle(&mut self, metrics: &Metrics, auditor: &Auditor, status: Option<u16>) {
        if std::mem::replace(&mut self.settled, true) {
            return;
        }
        if self.stripped > 0 {
            metrics.spoofed_stripped(self.stripped);
            tracing::debug!(
                reference = self.reference(),
                stripped = self.stripped,
                "reserved headers removed"
            );
        }
        for event in [self.session.event(), self.session_change]
            .into_iter()
            .flatten()
        {
            metrics.session(event);
        }
        if let Some(verify) = self.verify_time {
            metrics.observe_verify(verify.as_secs_f64());
        }
        if let Some(login) = self.login_time {
            metrics.observe_login(login.as_secs_f64());
        }
        match &self.login {
            Some(LoginDecision::Started) => {
                self.audit(auditor, Decision::LoginStart, None, None, status)
            }
            Some(LoginDecision::Accepted { claims }) => {
                metrics.login_accepted();
                self.audit(auditor, Decision::LoginCallback, Some(claims), None, status);
            }
            Some(LoginDecision::Rejected) | None => {}
        }
        if let Some(LaunchDecision::Accepted { issuer, claims }) = &self.launch {
            metrics.launch_accepted(issuer.as_deref());
            self.audit(auditor, Decision::Launch, Some(claims), None, status);
        }
    }

    /// Write one decision's audit event.
    pub(super) fn audit(
        &self,
        auditor: &Auditor,
        decision: Decision,
        claims: Option<&HtiClaims>,
        rejection: Option<&Rejection>,
        status: Option<u16>,
    ) {
        auditor.write(&AuditEvent {
            decision,
            time: SystemTime::now(),
            claims,
            rejection,
            status,
            request_id: self.reference(),
            origin: &self.origin,
        });
    }
}
