//! The operator's sections: `[readiness]` (how long `/readyz` waits for the dependencies at
//! startup) and `[audit]` (how the audit trail is written).

use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, invalid, parse::parse_duration};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawReadiness {
    #[serde(default = "d_startup_wait")]
    startup_wait: String,
}

impl Default for RawReadiness {
    fn default() -> Self {
        RawReadiness {
            startup_wait: d_startup_wait(),
        }
    }
}

fn d_startup_wait() -> String {
    "30s".into()
}

/// `[readiness]`, validated.
#[derive(Debug, Clone)]
pub struct ReadinessConfig {
    /// How long after start `/readyz` waits for every dependency's first success (key sets,
    /// replay store, discovery); zero: not at all. After that, a dependency outage is
    /// reported in the body and the metrics, not with a 503.
    pub startup_wait: Duration,
}

impl RawReadiness {
    pub(super) fn validate(self) -> Result<ReadinessConfig, ConfigError> {
        let startup_wait = parse_duration("readiness.startup_wait", &self.startup_wait)?;
        if startup_wait > Duration::from_secs(3600) {
            return Err(invalid(
                "readiness.startup_wait",
                "must be at most 1h (0s: do not wait for the dependencies)",
            ));
        }
        Ok(ReadinessConfig { startup_wait })
    }
}

/// How audit events are written: `fields` (flat fields of the log line) or `fhir` (the same
/// line also carries a FHIR R4 AuditEvent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuditFormat {
    #[default]
    Fields,
    Fhir,
}

impl AuditFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditFormat::Fields => "fields",
            AuditFormat::Fhir => "fhir",
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAudit {
    format: Option<String>,
    observer: Option<String>,
}

/// `[audit]`, validated.
#[derive(Debug, Clone, Default)]
pub struct AuditConfig {
    pub format: AuditFormat,
    /// The FHIR AuditEvent's `source.observer` identifier; `None`: the module's client id,
    /// else the host name.
    pub observer: Option<String>,
}

/// The longest `audit.observer`.
const MAX_OBSERVER: usize = 256;

impl RawAudit {
    pub(super) fn validate(self) -> Result<AuditConfig, ConfigError> {
        let format = match self.format.as_deref() {
            None | Some("fields") => AuditFormat::Fields,
            Some("fhir") => AuditFormat::Fhir,
            Some(other) => {
                return Err(invalid(
                    "audit.format",
                    format!("{other:?} is not one of \"fields\", \"fhir\""),
                ));
            }
        };
        let observer = match self.observer {
            Some(o) if o.trim().is_empty() => {
                return Err(invalid("audit.observer", "must not be empty"));
            }
            Some(o) if o.len() > MAX_OBSERVER || o.chars().any(char::is_control) => {
                return Err(invalid(
                    "audit.observer",
                    format!("must be at most {MAX_OBSERVER} bytes without control characters"),
                ));
            }
            other => other,
        };
        Ok(AuditConfig { format, observer })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_refusals() {
        let r = RawReadiness::default().validate().unwrap();
        assert_eq!(r.startup_wait, Duration::from_secs(30));
        let zero = RawReadiness {
            startup_wait: "0s".into(),
        };
        assert_eq!(zero.validate().unwrap().startup_wait, Duration::ZERO);
        let long = RawReadiness {
            startup_wait: "2h".into(),
        };
        assert!(
            long.validate()
                .unwrap_err()
                .to_string()
                .starts_with("readiness.startup_wait")
        );
        assert_eq!(
            RawAudit::default().validate().unwrap().format,
            AuditFormat::Fields
        );
        let bad = RawAudit {
            format: Some("xml".into()),
            observer: None,
        };
        assert_eq!(
            bad.validate().unwrap_err().to_string(),
            "audit.format: \"xml\" is not one of \"fields\", \"fhir\""
        );
        let empty = RawAudit {
            format: None,
            observer: Some(" ".into()),
        };
        assert!(empty.validate().is_err());
    }
}
