//! Errors, split by lifetime: `StartupError` stops the guard before it serves; a
//! `Rejection` ends one request. One exhaustive match gives each reason its status, its
//! stable string (JSON body and metric label) and its log level; `respond::error` turns a
//! rejection into the response a person or a client sees. The ground of the crate: it
//! imports nothing of it.

use std::borrow::Cow;
use std::fmt;

use http::StatusCode;
use http::header::HeaderValue;

/// Errors that stop the guard before it serves.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("{key}: {message}")]
    Config { key: &'static str, message: String },
    #[error("cannot set up the HTTP client: {0}")]
    Client(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Why a request was not forwarded. The string forms are part of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    MissingToken,
    ConflictingTokens,
    MalformedToken,
    UnsupportedAlgorithm,
    UnknownIssuer,
    UnknownKey,
    BadSignature,
    Expired,
    IssuedInFuture,
    LifetimeTooLong,
    WrongAudience,
    MissingClaim,
    InvalidClaim,
    Replayed,
    KeysUnavailable,
    ReplayStoreUnavailable,
    UpstreamUnavailable,
    UpstreamTimeout,
    BodyTooLarge,
    MethodNotAllowed,
    IntrospectionInactive,
    IntrospectionUnavailable,
    Undecryptable,
    NoSession,
    SessionTooLarge,
    InvalidPath,
    CrossSiteRequest,
    RequestTimeout,
    Overloaded,
    UnknownFhirBase,
    LoginStateMismatch,
    LoginDenied,
    LoginFailed,
    LoginUnavailable,
    InvalidIdToken,
}

/// Who is at fault decides the log level: the client's is `info`, a dependency's `warn`,
/// ours `error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Client,
    Dependency,
    /// A bug of ours (a value we built that does not build, a state that cannot be): never
    /// a reason's own fault in the table below, only a [`Rejection::internal`]'s, so that
    /// it is counted as neither the client's nor a dependency's.
    Internal,
}

impl Reason {
    pub const ALL: [Reason; 35] = [
        Reason::MissingToken,
        Reason::ConflictingTokens,
        Reason::MalformedToken,
        Reason::UnsupportedAlgorithm,
        Reason::UnknownIssuer,
        Reason::UnknownKey,
        Reason::BadSignature,
        Reason::Expired,
        Reason::IssuedInFuture,
        Reason::LifetimeTooLong,
        Reason::WrongAudience,
        Reason::MissingClaim,
        Reason::InvalidClaim,
        Reason::Replayed,
        Reason::KeysUnavailable,
        Reason::ReplayStoreUnavailable,
        Reason::UpstreamUnavailable,
        Reason::UpstreamTimeout,
        Reason::BodyTooLarge,
        Reason::MethodNotAllowed,
        Reason::IntrospectionInactive,
        Reason::IntrospectionUnavailable,
        Reason::Undecryptable,
        Reason::NoSession,
        Reason::SessionTooLarge,
        Reason::InvalidPath,
        Reason::CrossSiteRequest,
        Reason::RequestTimeout,
        Reason::Overloaded,
        Reason::UnknownFhirBase,
        Reason::LoginStateMismatch,
        Reason::LoginDenied,
        Reason::LoginFailed,
        Reason::LoginUnavailable,
        Reason::InvalidIdToken,
    ];

    /// (stable string, status, fault, text for a person)
    fn describe(self) -> (&'static str, StatusCode, Fault, &'static str) {
        use Fault::*;
        use StatusCode as S;
        const TOKEN: &str =
            "The launch could not be verified. Please start the module again from your portal.";
        match self {
            Reason::MissingToken => (
                "missing_token",
                S::BAD_REQUEST,
                Client,
                "This address expects a launch from your portal, but no launch token was sent.",
            ),
            Reason::ConflictingTokens => (
                "conflicting_tokens",
                S::BAD_REQUEST,
                Client,
                "The launch carried two different tokens. Please start the module again from your portal.",
            ),
            Reason::MalformedToken => ("malformed_token", S::UNAUTHORIZED, Client, TOKEN),
            Reason::UnsupportedAlgorithm => {
                ("unsupported_algorithm", S::UNAUTHORIZED, Client, TOKEN)
            }
            Reason::UnknownIssuer => (
                "unknown_issuer",
                S::UNAUTHORIZED,
                Client,
                "The portal that sent this launch is not known to this module.",
            ),
            Reason::UnknownKey => ("unknown_key", S::UNAUTHORIZED, Client, TOKEN),
            Reason::BadSignature => ("bad_signature", S::UNAUTHORIZED, Client, TOKEN),
            Reason::Expired => (
                "expired",
                S::UNAUTHORIZED,
                Client,
                "The launch has expired. Please start the module again from your portal.",
            ),
            Reason::IssuedInFuture => (
                "issued_in_future",
                S::UNAUTHORIZED,
                Client,
                "The launch is not valid yet. Please check the clock and start the module again.",
            ),
            Reason::LifetimeTooLong => ("lifetime_too_long", S::UNAUTHORIZED, Client, TOKEN),
            Reason::WrongAudience => (
                "wrong_audience",
                S::UNAUTHORIZED,
                Client,
                "The launch was meant for another module.",
            ),
            Reason::MissingClaim => ("missing_claim", S::UNAUTHORIZED, Client, TOKEN),
            Reason::InvalidClaim => ("invalid_claim", S::UNAUTHORIZED, Client, TOKEN),
            Reason::Replayed => (
                "replayed",
                S::UNAUTHORIZED,
                Client,
                "This launch has already been used. Please start the module again from your portal.",
            ),
            Reason::KeysUnavailable => (
                "keys_unavailable",
                S::SERVICE_UNAVAILABLE,
                Dependency,
                "The launch cannot be verified right now. Please try again in a moment.",
            ),
            Reason::ReplayStoreUnavailable => (
                "replay_store_unavailable",
                S::SERVICE_UNAVAILABLE,
                Dependency,
                "The launch cannot be verified right now. Please try again in a moment.",
            ),
            Reason::UpstreamUnavailable => (
                "upstream_unavailable",
                S::BAD_GATEWAY,
                Dependency,
                "The module is not reachable right now. Please try again in a moment.",
            ),
            Reason::UpstreamTimeout => (
                "upstream_timeout",
                S::GATEWAY_TIMEOUT,
                Dependency,
                "The module did not answer in time. Please try again in a moment.",
            ),
            Reason::BodyTooLarge => (
                "body_too_large",
                S::PAYLOAD_TOO_LARGE,
                Client,
                "The launch request is too large.",
            ),
            Reason::MethodNotAllowed => (
                "method_not_allowed",
                S::METHOD_NOT_ALLOWED,
                Client,
                "This address only accepts launches from a portal.",
            ),
            Reason::IntrospectionInactive => {
                ("introspection_inactive", S::UNAUTHORIZED, Client, TOKEN)
            }
            Reason::IntrospectionUnavailable => (
                "introspection_unavailable",
                S::SERVICE_UNAVAILABLE,
                Dependency,
                "The launch cannot be verified right now. Please try again in a moment.",
            ),
            Reason::Undecryptable => ("undecryptable", S::UNAUTHORIZED, Client, TOKEN),
            Reason::NoSession => (
                "no_session",
                S::UNAUTHORIZED,
                Client,
                "Please start this module from your portal: open the task there and choose to start it.",
            ),
            Reason::SessionTooLarge => (
                "session_too_large",
                S::BAD_REQUEST,
                Client,
                "The launch carries more information than a session can hold. Please contact the module's provider.",
            ),
            Reason::InvalidPath => (
                "invalid_path",
                S::BAD_REQUEST,
                Client,
                "This address is not valid.",
            ),
            Reason::CrossSiteRequest => (
                "cross_site_request",
                S::FORBIDDEN,
                Client,
                "This action can only be started from the module itself.",
            ),
            Reason::RequestTimeout => (
                "request_timeout",
                S::REQUEST_TIMEOUT,
                Client,
                "The request was not sent completely in time. Please try again.",
            ),
            Reason::Overloaded => (
                "overloaded",
                S::SERVICE_UNAVAILABLE,
                Dependency,
                "The module is very busy right now. Please try again in a moment.",
            ),
            Reason::UnknownFhirBase => (
                "unknown_fhir_base",
                S::BAD_REQUEST,
                Client,
                "This launch comes from a domain this module does not know.",
            ),
            Reason::LoginStateMismatch => (
                "login_state_mismatch",
                S::BAD_REQUEST,
                Client,
                "This login was not started in this browser, or it took too long. Please start the module again from your portal.",
            ),
            Reason::LoginDenied => (
                "login_denied",
                S::UNAUTHORIZED,
                Client,
                "The login was refused. Please start the module again from your portal.",
            ),
            Reason::LoginFailed => (
                "login_failed",
                S::UNAUTHORIZED,
                Client,
                "The login could not be completed. Please start the module again from your portal.",
            ),
            Reason::LoginUnavailable => (
                "login_unavailable",
                S::SERVICE_UNAVAILABLE,
                Dependency,
                "The login service cannot be reached right now. Please try again in a moment.",
            ),
            Reason::InvalidIdToken => (
                "invalid_id_token",
                S::UNAUTHORIZED,
                Client,
                "The login could not be verified. Please start the module again from your portal.",
            ),
        }
    }

    /// The stable string used in JSON bodies and as the metric label.
    pub fn as_str(self) -> &'static str {
        self.describe().0
    }

    pub fn status(self) -> StatusCode {
        self.describe().1
    }

    pub fn fault(self) -> Fault {
        self.describe().2
    }

    /// A sentence for the person in front of the browser, without technical detail.
    pub fn message(self) -> &'static str {
        self.describe().3
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request that ends here: the reason, a detail for the log (never token content that
/// identifies a person), the configured issuer when one was recognised, and whose fault
/// it is (the reason's, unless it is a bug of ours).
#[derive(Debug, Clone)]
pub struct Rejection {
    pub reason: Reason,
    pub detail: Cow<'static, str>,
    pub issuer: Option<String>,
    fault: Fault,
}

impl Rejection {
    pub fn new(reason: Reason, detail: impl Into<Cow<'static, str>>) -> Self {
        Rejection {
            reason,
            detail: detail.into(),
            issuer: None,
            fault: reason.fault(),
        }
    }

    /// A bug of ours. The contract has no reason of its own for it: the request is
    /// answered with `reason`, a 5xx one the contract names, and logged as ours.
    pub fn internal(reason: Reason, detail: impl Into<Cow<'static, str>>) -> Self {
        debug_assert!(
            reason.status().is_server_error(),
            "{reason} for a bug of ours"
        );
        Rejection {
            fault: Fault::Internal,
            ..Rejection::new(reason, detail)
        }
    }

    /// Whose fault this is: the log level, and never the client's for a bug of ours.
    pub fn fault(&self) -> Fault {
        self.fault
    }

    pub fn with_issuer(mut self, issuer: &str) -> Self {
        self.issuer = Some(issuer.to_owned());
        self
    }

    /// Label with a configured issuer, or none (the metrics' `unknown`).
    pub fn with_issuer_label(mut self, issuer: Option<String>) -> Self {
        self.issuer = issuer;
        self
    }
}

impl From<Reason> for Rejection {
    fn from(reason: Reason) -> Self {
        Rejection::new(reason, "")
    }
}

/// How the client wants to read an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorFormat {
    Json,
    Html,
}

impl ErrorFormat {
    /// JSON when the client says it accepts `application/json`, HTML otherwise.
    pub(crate) fn from_accept(accept: Option<&HeaderValue>) -> Self {
        let wants_json = accept.and_then(|v| v.to_str().ok()).is_some_and(|v| {
            v.split(',').any(|part| {
                let media = part.split(';').next().unwrap_or("").trim();
                media.eq_ignore_ascii_case("application/json")
                    || (media.len() > 5 && media[media.len() - 5..].eq_ignore_ascii_case("+json"))
            })
        });
        if wants_json {
            ErrorFormat::Json
        } else {
            ErrorFormat::Html
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_contract() {
        for reason in Reason::ALL {
            let want = match reason {
                Reason::MissingToken
                | Reason::ConflictingTokens
                | Reason::SessionTooLarge
                | Reason::InvalidPath
                | Reason::UnknownFhirBase
                | Reason::LoginStateMismatch => 400,
                Reason::CrossSiteRequest => 403,
                Reason::KeysUnavailable
                | Reason::ReplayStoreUnavailable
                | Reason::IntrospectionUnavailable
                | Reason::LoginUnavailable
                | Reason::Overloaded => 503,
                Reason::RequestTimeout => 408,
                Reason::UpstreamUnavailable => 502,
                Reason::UpstreamTimeout => 504,
                Reason::BodyTooLarge => 413,
                Reason::MethodNotAllowed => 405,
                _ => 401,
            };
            assert_eq!(reason.status().as_u16(), want, "{reason}");
            assert_eq!(reason.fault() == Fault::Dependency, want >= 500, "{reason}");
        }
        let names: std::collections::HashSet<_> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(names.len(), Reason::ALL.len());
    }

    #[test]
    fn a_bug_of_ours_is_nobody_elses_fault() {
        let ours = Rejection::internal(Reason::UpstreamUnavailable, "a header we built");
        assert_eq!(ours.fault(), Fault::Internal);
        assert_eq!(ours.reason.status().as_u16(), 502);
        assert!(Reason::ALL.iter().all(|r| r.fault() != Fault::Internal));
        assert_eq!(
            Rejection::new(Reason::UpstreamUnavailable, "refused").fault(),
            Fault::Dependency
        );
        assert_eq!(Rejection::from(Reason::Expired).fault(), Fault::Client);
    }

    #[test]
    fn accept_header_chooses_the_format() {
        let f = |v: &str| ErrorFormat::from_accept(Some(&HeaderValue::from_str(v).unwrap()));
        assert_eq!(f("application/json"), ErrorFormat::Json);
        assert_eq!(f("text/html, application/json;q=0.9"), ErrorFormat::Json);
        assert_eq!(f("application/problem+json"), ErrorFormat::Json);
        assert_eq!(f("text/html,*/*"), ErrorFormat::Html);
        assert_eq!(ErrorFormat::from_accept(None), ErrorFormat::Html);
    }
}
