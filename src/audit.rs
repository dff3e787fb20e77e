//! The audit trail: one event per launch and login decision, on the log target
//! `hti_guard::audit`, written through the same JSON log writer as every other line (one
//! line per event, flat fields, so a shipper can route on `target`). With
//! `audit.format = "fhir"` the line also carries the event as a FHIR R4 AuditEvent (the
//! Koppeltaal `KT2AuditEvent` profile) in the field `fhir_audit_event`.
//!
//! Never a token, a cookie or an Authorization header: the event is built from verified
//! claims, the rejection's reason and our own detail text, the peer address and a cleaned
//! User-Agent. A rejected launch's claims are unknown (an unverified token is not evidence),
//! so only the configured issuer it matched is named.

use std::net::IpAddr;
use std::time::SystemTime;

use http::HeaderMap;
use http::header;
use serde_json::{Value, json};

use crate::config::{AuditConfig, AuditFormat, Cidr};
use crate::error::{Fault, Rejection};
use crate::verify::HtiClaims;

/// The tracing target of the audit events.
pub(crate) const TARGET: &str = "hti_guard::audit";

/// The longest User-Agent kept, in characters.
const MAX_USER_AGENT: usize = 256;

/// Which decision an event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// An HTI launch verified by the guard.
    Launch,
    /// A SHOF launch sent on to the auth server (or refused before that).
    LoginStart,
    /// The SHOF callback: the auth server's answer became a session (or did not).
    LoginCallback,
}

impl Decision {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Decision::Launch => "launch",
            Decision::LoginStart => "login_start",
            Decision::LoginCallback => "login_callback",
        }
    }
}

/// Where a request came from, read once when it arrives.
#[derive(Debug, Clone, Default)]
pub(crate) struct Origin {
    /// The peer's address.
    client: Option<IpAddr>,
    /// With `trusted_proxies`: the first address of `X-Forwarded-For`, read from the right,
    /// that is not a trusted proxy.
    forwarded_for: Option<IpAddr>,
    /// Control characters removed, at most [`MAX_USER_AGENT`] characters.
    user_agent: Option<String>,
}

impl Origin {
    pub(crate) fn read(headers: &HeaderMap, peer: IpAddr, trusted: &[Cidr]) -> Origin {
        let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
        let forwarded_for = if is_trusted(peer) {
            headers
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .filter_map(|a| a.trim().parse::<IpAddr>().ok())
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .find(|ip| !is_trusted(*ip))
        } else {
            None
        };
        let user_agent = headers
            .get(header::USER_AGENT)
            .map(|v| clean(&String::from_utf8_lossy(v.as_bytes())))
            .filter(|ua| !ua.is_empty());
        Origin {
            client: Some(peer),
            forwarded_for,
            user_agent,
        }
    }
}

/// `text` without control characters, at most [`MAX_USER_AGENT`] characters.
fn clean(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_control())
        .take(MAX_USER_AGENT)
        .collect()
}

/// One decision, as the proxy knows it.
pub(crate) struct AuditEvent<'a> {
    pub(crate) decision: Decision,
    pub(crate) time: SystemTime,
    /// The verified claims of an accepted decision; `None` when refused.
    pub(crate) claims: Option<&'a HtiClaims>,
    /// Why it was refused; `None` when accepted.
    pub(crate) rejection: Option<&'a Rejection>,
    /// The response status; `None` when the client left before it.
    pub(crate) status: Option<u16>,
    /// The request id (`X-Request-Id`), the reference of an error response.
    pub(crate) request_id: &'a str,
    pub(crate) origin: &'a Origin,
}

impl AuditEvent<'_> {
    fn accepted(&self) -> bool {
        self.rejection.is_none()
    }

    /// The issuer: the verified `iss`, or for a refusal the configured issuer it matched.
    fn issuer(&self) -> Option<&str> {
        match (self.claims, self.rejection) {
            (Some(c), _) => Some(c.iss.as_str()),
            (None, Some(r)) => r.issuer.as_deref(),
            (None, None) => None,
        }
    }
}

/// Writes audit events in the configured format.
#[derive(Debug, Clone)]
pub(crate) struct Auditor {
    format: AuditFormat,
    /// The FHIR `source.observer` identifier.
    observer: String,
}

impl Default for Auditor {
    fn default() -> Self {
        Auditor::new(&AuditConfig::default(), None)
    }
}

impl Auditor {
    /// `client_id`: the module's, the observer when `audit.observer` is not set (else the
    /// host name).
    pub(crate) fn new(config: &AuditConfig, client_id: Option<&str>) -> Auditor {
        let observer = config
            .observer
            .clone()
            .or_else(|| client_id.map(str::to_owned))
            .or_else(host_name)
            .unwrap_or_else(|| "hti-guard".to_owned());
        Auditor {
            format: config.format,
            observer,
        }
    }

    /// Write one event: one line on [`TARGET`], at `info`, or for a refusal at the level of
    /// its fault (a dependency's `warn`, ours `error`).
    pub(crate) fn write(&self, event: &AuditEvent<'_>) {
        let time = humantime::format_rfc3339_millis(event.time).to_string();
        let fhir = (self.format == AuditFormat::Fhir).then(|| self.fhir(event, &time).to_string());
        let claims = event.claims;
        let claim = |f: fn(&HtiClaims) -> Option<&str>| claims.and_then(f);
        let fault = event.rejection.map(Rejection::fault);
        let message = match (event.decision, event.accepted()) {
            (Decision::Launch, true) => "launch accepted",
            (Decision::Launch, false) => "launch rejected",
            (Decision::LoginStart, true) => "login started at the auth server",
            (Decision::LoginStart, false) => "login refused before the auth server",
            (Decision::LoginCallback, true) => "login accepted",
            (Decision::LoginCallback, false) => "login rejected",
        };
        macro_rules! emit {
            ($level:ident) => {
                tracing::$level!(
                    target: TARGET,
                    time = %time,
                    kind = event.decision.as_str(),
                    outcome = if event.accepted() { "accepted" } else { "rejected" },
                    reason = event.rejection.map(|r| r.reason.as_str()),
                    status = event.status,
                    issuer = event.issuer(),
                    sub = claim(|c| Some(&c.sub)),
                    resource = claim(|c| Some(&c.resource)),
                    patient = claim(|c| c.patient.as_deref()),
                    definition = claim(|c| c.definition.as_deref()),
                    intent = claim(|c| c.intent.as_deref()),
                    jti = claim(|c| Some(&c.jti)),
                    request_id = event.request_id,
                    client_address = event.origin.client.map(tracing::field::display),
                    forwarded_for = event.origin.forwarded_for.map(tracing::field::display),
                    user_agent = event.origin.user_agent.as_deref(),
                    detail = event.rejection.map(|r| r.detail.as_ref()),
                    fhir_audit_event = fhir.as_deref(),
                    "{}",
                    message
                )
            };
        }
        match fault {
            None | Some(Fault::Client) => emit!(info),
            Some(Fault::Dependency) => emit!(warn),
            Some(Fault::Internal) => emit!(error),
        }
    }

    /// The event as a FHIR R4 AuditEvent of the Koppeltaal profile: a launch is DCM 110100
    /// Application Activity / 110120 Application Start, a SHOF login 110114 User
    /// Authentication / 110122 Login; trace-id = jti, request-id = the request id.
    pub(crate) fn fhir(&self, event: &AuditEvent<'_>, recorded: &str) -> Value {
        let (kind, sub_kind, user_role) = match event.decision {
            Decision::Launch => (
                dcm("110100", "Application Activity"),
                dcm("110120", "Application Start"),
                dcm("110151", "Application Launcher"),
            ),
            Decision::LoginStart | Decision::LoginCallback => (
                dcm("110114", "User Authentication"),
                dcm("110122", "Login"),
                dcm("110153", "Source Role ID"),
            ),
        };
        let outcome = match event.rejection.map(Rejection::fault) {
            None => "0",
            Some(Fault::Client) => "4",
            Some(Fault::Dependency | Fault::Internal) => "8",
        };
        let outcome_desc = match event.rejection {
            None => format!("{}: accepted", event.decision.as_str()),
            Some(r) => format!(
                "{}: rejected ({})",
                event.decision.as_str(),
                r.reason.as_str()
            ),
        };
        let claims = event.claims;
        let mut user = json!({
            "type": { "coding": [user_role] },
            "who": match claims {
                Some(c) => json!({ "reference": c.sub }),
                None => json!({ "display": "unverified" }),
            },
            "requestor": true,
        });
        let address = event.origin.forwarded_for.or(event.origin.client);
        if let Some(address) = address {
            user["network"] = json!({ "address": address.to_string(), "type": "2" });
        }
        let module = json!({
            "type": { "coding": [dcm("110152", "Destination Role ID")] },
            "who": { "identifier": { "value": self.observer }, "type": "Device" },
            "requestor": false,
        });
        let mut entity = Vec::new();
        if let Some(patient) = claims.and_then(|c| c.patient.as_deref()) {
            entity.push(json!({
                "what": { "reference": patient, "type": "Patient" },
                "type": resource_type("Patient"),
                "role": object_role("1", "Patient"),
            }));
        }
        if let Some(c) = claims {
            entity.push(json!({
                "what": { "reference": c.resource, "type": "Task" },
                "type": resource_type("Task"),
                "role": object_role("4", "Domain Resource"),
            }));
        }
        if entity.is_empty() {
            entity.push(json!({
                "what": { "display": format!("{} request {}", event.decision.as_str(), event.request_id) },
            }));
        }
        let mut extension = Vec::new();
        if let Some(jti) = claims.map(|c| c.jti.as_str()).filter(|j| is_fhir_id(j)) {
            extension.push(json!({
                "url": "http://koppeltaal.nl/fhir/StructureDefinition/trace-id",
                "valueId": jti,
            }));
        }
        if is_fhir_id(event.request_id) {
            extension.push(json!({
                "url": "http://koppeltaal.nl/fhir/StructureDefinition/request-id",
                "valueId": event.request_id,
            }));
        }
        let mut audit = json!({
            "resourceType": "AuditEvent",
            "meta": { "profile": ["http://koppeltaal.nl/fhir/StructureDefinition/KT2AuditEvent"] },
            "type": kind,
            "subtype": [sub_kind],
            "action": "E",
            "recorded": recorded,
            "outcome": outcome,
            "outcomeDesc": outcome_desc,
            "agent": [user, module],
            "source": {
                "observer": { "identifier": { "value": self.observer }, "type": "Device" },
                "type": [{
                    "system": "http://terminology.hl7.org/CodeSystem/security-source-type",
                    "code": "4",
                    "display": "Application Server",
                }],
            },
            "entity": entity,
        });
        if !extension.is_empty() {
            audit["extension"] = json!(extension);
        }
        audit
    }
}

fn dcm(code: &str, display: &str) -> Value {
    json!({ "system": "http://dicom.nema.org/resources/ontology/DCM", "code": code, "display": display })
}

fn resource_type(name: &str) -> Value {
    json!({ "system": "http://hl7.org/fhir/resource-types", "code": name, "display": name })
}

fn object_role(code: &str, display: &str) -> Value {
    json!({
        "system": "http://terminology.hl7.org/CodeSystem/object-role",
        "code": code,
        "display": display,
    })
}

/// A FHIR `id`: 1 to 64 of `A-Z a-z 0-9 - .`.
fn is_fhir_id(value: &str) -> bool {
    (1..=64).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// The host name (Kubernetes: the pod's name), when it can be read.
fn host_name() -> Option<String> {
    let name = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())?;
    let name = clean(name.trim());
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Reason;
    use http::HeaderValue;

    fn claims() -> HtiClaims {
        HtiClaims {
            iss: "https://portal".into(),
            sub: "Patient/p1".into(),
            resource: "Task/t1".into(),
            patient: Some("Patient/p1".into()),
            definition: Some("ActivityDefinition/a1".into()),
            intent: Some("plan".into()),
            jti: "0123456789abcdef-jti".into(),
            exp: 0,
            iat: 0,
        }
    }

    #[test]
    fn origin_keeps_the_forwarded_client_of_a_trusted_peer_only() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_static("203.0.113.9, 198.51.100.7, 10.0.0.5"),
        );
        headers.insert(
            header::USER_AGENT,
            HeaderValue::from_bytes(b"Mozilla/5.0 (evil)\tua").unwrap(),
        );
        let config = crate::Config::from_toml_str(&format!(
            "trusted_proxies = [\"10.0.0.0/8\"]\n{}",
            crate::config::tests::MINIMAL
        ))
        .unwrap();
        let trusted = config.trusted_proxies;
        let from_proxy = Origin::read(&headers, "10.0.0.1".parse().unwrap(), &trusted);
        assert_eq!(
            from_proxy.forwarded_for,
            Some("198.51.100.7".parse().unwrap())
        );
        assert_eq!(
            from_proxy.user_agent.as_deref(),
            Some("Mozilla/5.0 (evil)ua")
        );
        let direct = Origin::read(&headers, "192.0.2.1".parse().unwrap(), &trusted);
        assert_eq!(direct.forwarded_for, None);
        assert_eq!(direct.client, Some("192.0.2.1".parse().unwrap()));
        headers.insert(
            header::USER_AGENT,
            HeaderValue::from_str(&"x".repeat(1000)).unwrap(),
        );
        let long = Origin::read(&headers, "192.0.2.1".parse().unwrap(), &trusted);
        assert_eq!(long.user_agent.map(|u| u.len()), Some(MAX_USER_AGENT));
    }

    #[test]
    fn fhir_events_carry_the_profile_outcome_and_trace_id() {
        let auditor = Auditor::new(
            &AuditConfig {
                format: AuditFormat::Fhir,
                observer: None,
            },
            Some("module-a"),
        );
        let origin = Origin::read(&HeaderMap::new(), "192.0.2.1".parse().unwrap(), &[]);
        let claims = claims();
        let accepted = AuditEvent {
            decision: Decision::Launch,
            time: SystemTime::UNIX_EPOCH,
            claims: Some(&claims),
            rejection: None,
            status: Some(200),
            request_id: "req-1",
            origin: &origin,
        };
        let v = auditor.fhir(&accepted, "1970-01-01T00:00:00.000Z");
        assert_eq!(v["resourceType"], "AuditEvent");
        assert_eq!(v["type"]["code"], "110100");
        assert_eq!(v["subtype"][0]["code"], "110120");
        assert_eq!(v["outcome"], "0");
        assert_eq!(v["agent"][0]["who"]["reference"], "Patient/p1");
        assert_eq!(v["agent"][1]["requestor"], false);
        assert_eq!(v["source"]["observer"]["identifier"]["value"], "module-a");
        assert_eq!(v["extension"][0]["valueId"], "0123456789abcdef-jti");
        assert_eq!(v["extension"][1]["valueId"], "req-1");
        assert_eq!(v["entity"][0]["what"]["reference"], "Patient/p1");
        assert_eq!(v["entity"][1]["what"]["reference"], "Task/t1");

        let dependency = Rejection::new(Reason::KeysUnavailable, "jwks down");
        let client = Rejection::new(Reason::BadSignature, "bad");
        for (rejection, code) in [(&dependency, "8"), (&client, "4")] {
            let refused = AuditEvent {
                decision: Decision::LoginCallback,
                claims: None,
                rejection: Some(rejection),
                ..accepted
            };
            let v = auditor.fhir(&refused, "1970-01-01T00:00:00.000Z");
            assert_eq!(v["outcome"], code);
            assert_eq!(v["type"]["code"], "110114");
            assert_eq!(v["agent"][0]["who"]["display"], "unverified");
            assert_eq!(v["agent"][0]["network"]["address"], "192.0.2.1");
            assert_eq!(
                v["extension"][0]["url"],
                "http://koppeltaal.nl/fhir/StructureDefinition/request-id"
            );
            assert!(v["entity"][0]["what"]["display"].is_string());
        }
        assert!(!is_fhir_id("has space"));
        assert!(!is_fhir_id(&"a".repeat(65)));
    }
}
