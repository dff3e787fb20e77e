//! What works today but will bite later: a warning never changes the exit code. Read from
//! the configuration (and `HTI_GUARD_REPLICAS`), and from the probes of the introspection
//! endpoint and the SHOF auth server when they do not answer.

use serde::Serialize;

use crate::Config;
use crate::config::ReplayStoreKind;

/// The environment variable that tells `check` how many replicas will run (the chart can
/// set it); it is not a configuration key.
pub const REPLICAS_ENV: &str = "HTI_GUARD_REPLICAS";

/// Hosts of the example configuration's placeholder issuers (config.toml, the chart's
/// values.yaml and the README): a configuration that still names one was not finished.
const PLACEHOLDER_HOSTS: &[&str] = &["portal.example.org", "other-portal.example.org"];

/// Something to fix before it bites; `check` still exits 0 for it.
#[derive(Debug, Serialize)]
pub struct Warning {
    /// A stable name: `session_secret_random`, `placeholder_issuer`,
    /// `memory_store_replicas`, `introspection_not_answering`, `auth_server_not_answering`.
    pub kind: &'static str,
    pub message: String,
}

impl Warning {
    pub(super) fn new(kind: &'static str, message: impl Into<String>) -> Warning {
        Warning {
            kind,
            message: message.into(),
        }
    }
}

/// The warnings the configuration alone gives; `replicas` is `HTI_GUARD_REPLICAS` as set.
pub(super) fn configured(config: &Config, replicas: Option<&str>) -> Vec<Warning> {
    let mut warnings = Vec::new();
    if let Some(session) = &config.session
        && session.secret.is_none()
    {
        warnings.push(Warning::new(
            "session_secret_random",
            "session.enabled without session.secret or session.secret_file: each process \
             seals cookies with a random key of its own, so sessions end at every restart \
             and are not shared between replicas",
        ));
    }
    for issuer in &config.issuers {
        let placeholder = [Some(issuer.iss.as_str()), issuer.jwks_url.as_deref()]
            .into_iter()
            .flatten()
            .find(|url| host(url).is_some_and(|h| PLACEHOLDER_HOSTS.contains(&h)));
        if let Some(url) = placeholder {
            warnings.push(Warning::new(
                "placeholder_issuer",
                format!(
                    "issuer {:?} names the example's placeholder ({url}): replace it with \
                     your portal's iss and jwks_url",
                    issuer.iss
                ),
            ));
        }
    }
    if matches!(config.replay.store, ReplayStoreKind::Memory) {
        match replicas.map(|r| r.trim().parse::<u32>()) {
            Some(Ok(n)) if n > 1 => warnings.push(Warning::new(
                "memory_store_replicas",
                format!(
                    "replay.store = \"memory\" with {REPLICAS_ENV}={n}: each replica \
                     remembers only its own launches, so a token can be used once per \
                     replica; use replay.store = \"redis\""
                ),
            )),
            Some(Err(_)) => warnings.push(Warning::new(
                "memory_store_replicas",
                format!("{REPLICAS_ENV} is not a number of replicas: {replicas:?}"),
            )),
            _ => {}
        }
    }
    warnings
}

/// The host of an absolute URL; `None` for anything else.
fn host(url: &str) -> Option<&str> {
    let (_, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = host_port.split(':').next()?;
    (!host.is_empty()).then_some(host)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::MINIMAL;

    fn kinds(text: &str, replicas: Option<&str>) -> Vec<&'static str> {
        let config = Config::from_toml_str(text).unwrap();
        configured(&config, replicas)
            .into_iter()
            .map(|w| w.kind)
            .collect()
    }

    #[test]
    fn each_warning_and_only_when_it_applies() {
        assert!(kinds(MINIMAL, None).is_empty());
        assert!(kinds(MINIMAL, Some("1")).is_empty());
        assert_eq!(kinds(MINIMAL, Some("3")), ["memory_store_replicas"]);
        assert_eq!(kinds(MINIMAL, Some("three")), ["memory_store_replicas"]);
        let placeholder = MINIMAL.replace("portal.example/jwks", "portal.example.org/jwks");
        assert_eq!(kinds(&placeholder, None), ["placeholder_issuer"]);
        let sessions = format!("{MINIMAL}\n[session]\nenabled = true\n");
        assert_eq!(kinds(&sessions, None), ["session_secret_random"]);
        let secret = format!(
            "{sessions}secret = \"c2Vzc2lvbi1zZWNyZXQtZm9yLXRoZS10ZXN0cy0wMTIzNDU2Nzg5\"\n"
        );
        assert!(kinds(&secret, None).is_empty());
    }

    #[test]
    fn hosts_are_read_from_urls() {
        assert_eq!(
            host("https://portal.example.org"),
            Some("portal.example.org")
        );
        assert_eq!(
            host("https://u:p@portal.example.org:8443/jwks?x"),
            Some("portal.example.org")
        );
        assert_eq!(host("portal.example.org"), None);
        assert_eq!(host("https:///path"), None);
    }
}
