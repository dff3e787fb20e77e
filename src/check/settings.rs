//! Every configuration key with its validated value and where it came from, secrets
//! masked; values written the way the configuration writes them.

use std::time::Duration;

use serde_json::{Value, json};

use super::{ConfigReport, Setting};
use crate::Config;
use crate::config::{
    AssertionAudience, IntrospectionEndpoints, Lang, ModuleKeyFile, Page, PagesConfig, SameSite,
    Source,
};
use crate::jose::Alg;

impl ConfigReport {
    pub(super) fn new(config: &Config) -> ConfigReport {
        let settings = settings(config);
        let order = settings.iter().map(|(key, _)| *key).collect();
        let values = settings
            .into_iter()
            .map(|(key, value)| {
                let (source, file, variable) = match config.source(key) {
                    Source::Default => ("default", None, None),
                    Source::File(path) => ("file", Some(path.display().to_string()), None),
                    Source::Env(name) => ("env", None, Some(name.clone())),
                    Source::Text => ("inline", None, None),
                };
                let setting = Setting {
                    text: value_text(key, &value),
                    source_text: config.source(key).to_string(),
                    value,
                    source,
                    file,
                    variable,
                };
                (key, setting)
            })
            .collect();
        ConfigReport {
            file: config.file.as_ref().map(|p| p.display().to_string()),
            values,
            order,
        }
    }
}

/// Every key of [`KEYS`] with its validated value, in the same order. Secrets are masked.
fn settings(config: &Config) -> Vec<(&'static str, Value)> {
    let list = |items: &[String]| json!(items);
    let launch = &config.launch;
    let keys = &config.keys;
    let timeouts = &config.timeouts;
    let tls = config.tls.as_ref();
    let module = &config.module;
    let introspection = config.introspection.as_ref();
    let session = config.session.as_ref();
    let shof = config.shof.as_ref();
    vec![
        ("listen", json!(config.listen.to_string())),
        (
            "upstream",
            json!(mask_secret(&config.upstream.url.to_string())),
        ),
        ("admin_listen", json!(config.admin_listen.to_string())),
        ("shutdown_grace", json!(duration(config.shutdown_grace))),
        ("workers", json!(config.workers)),
        (
            "trusted_proxies",
            json!(
                config
                    .trusted_proxies
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
            ),
        ),
        ("launch.paths", list(&launch.paths)),
        ("launch.audience", list(&launch.audience)),
        ("launch.token_fields", list(&launch.token_fields)),
        (
            "launch.methods",
            json!(
                launch
                    .methods
                    .iter()
                    .map(|m| m.as_str())
                    .collect::<Vec<_>>()
            ),
        ),
        ("launch.max_lifetime", json!(duration(launch.max_lifetime))),
        ("launch.clock_skew", json!(duration(launch.clock_skew))),
        ("launch.hti_versions", list(&launch.hti_versions)),
        ("launch.max_body", json!(size(launch.max_body))),
        (
            "issuers",
            Value::Array(
                config
                    .issuers
                    .iter()
                    .map(|i| {
                        json!({
                            "iss": i.iss,
                            "jwks_url": i.jwks_url.as_deref().map(mask_secret),
                            "introspect": i.introspected(),
                            "algorithms": algorithm_names(&i.algorithms),
                        })
                    })
                    .collect(),
            ),
        ),
        ("keys.refresh_min", json!(duration(keys.refresh_min))),
        ("keys.refresh_max", json!(duration(keys.refresh_max))),
        (
            "keys.unknown_kid_cooldown",
            json!(duration(keys.unknown_kid_cooldown)),
        ),
        ("keys.fetch_timeout", json!(duration(keys.fetch_timeout))),
        ("keys.max_stale", json!(duration(keys.max_stale))),
        (
            "replay.store",
            json!(match config.replay.store {
                crate::config::ReplayStoreKind::Memory => "memory",
                crate::config::ReplayStoreKind::Redis => "redis",
            }),
        ),
        ("replay.max_entries", json!(config.replay.max_entries)),
        (
            "replay.redis_mode",
            json!(config.replay.redis_mode.as_str()),
        ),
        (
            "replay.redis_url",
            json!(config.replay.redis_url.as_deref().map(mask_secret)),
        ),
        (
            "replay.redis_nodes",
            json!(
                config
                    .replay
                    .redis_nodes
                    .iter()
                    .map(|url| mask_secret(url))
                    .collect::<Vec<_>>()
            ),
        ),
        (
            "replay.sentinel_master",
            json!(match &config.replay.redis_mode {
                crate::config::RedisMode::Sentinel { master } => Some(master.as_str()),
                _ => None,
            }),
        ),
        (
            "replay.redis_wait_replicas",
            json!(config.replay.redis_wait_replicas),
        ),
        (
            "replay.redis_timeout",
            json!(duration(config.replay.redis_timeout)),
        ),
        ("replay.key_prefix", json!(config.replay.key_prefix)),
        (
            "timeouts.request_headers",
            json!(duration(timeouts.request_headers)),
        ),
        ("timeouts.idle", json!(duration(timeouts.idle))),
        (
            "timeouts.request_body",
            json!(duration(timeouts.request_body)),
        ),
        (
            "timeouts.upstream_connect",
            json!(duration(timeouts.upstream_connect)),
        ),
        (
            "timeouts.upstream_response",
            json!(duration(timeouts.upstream_response)),
        ),
        (
            "limits.max_connections",
            json!(config.limits.max_connections),
        ),
        (
            "limits.max_memory",
            json!(config.limits.max_memory.map(|m| size(m as usize))),
        ),
        (
            "tls.cert_file",
            json!(tls.map(|t| t.cert_file.display().to_string())),
        ),
        (
            "tls.key_file",
            json!(tls.map(|t| t.key_file.display().to_string())),
        ),
        ("reload.watch", json!(config.reload.watch)),
        (
            "reload.watch_interval",
            json!(duration(config.reload.watch_interval)),
        ),
        ("module.client_id", json!(module.client_id)),
        ("module.signing_key_files", key_files(&module.signing_keys)),
        ("module.generate", json!(module.generate)),
        (
            "module.decryption_key_files",
            key_files(&module.decryption_keys),
        ),
        ("module.jwks_path", json!(module.jwks_path)),
        ("module.jwks_max_age", json!(duration(module.jwks_max_age))),
        (
            "introspection.endpoint",
            json!(match introspection.map(|i| &i.endpoints) {
                Some(IntrospectionEndpoints::Configured { introspection, .. }) =>
                    Some(mask_secret(introspection)),
                _ => None,
            }),
        ),
        (
            "introspection.token_endpoint",
            json!(match introspection.map(|i| &i.endpoints) {
                Some(IntrospectionEndpoints::Configured { token, .. }) =>
                    token.as_deref().map(mask_secret),
                _ => None,
            }),
        ),
        (
            "introspection.fhir_base",
            json!(match introspection.map(|i| &i.endpoints) {
                Some(IntrospectionEndpoints::Discovered { fhir_base }) =>
                    Some(mask_secret(fhir_base)),
                _ => None,
            }),
        ),
        (
            "introspection.assertion_audience",
            json!(introspection.map(|i| match i.assertion_audience {
                AssertionAudience::TokenEndpoint => "token_endpoint",
                AssertionAudience::IntrospectionEndpoint => "introspection_endpoint",
            })),
        ),
        (
            "introspection.assertion_alg",
            json!(introspection.map(|i| i.assertion_alg.name())),
        ),
        (
            "introspection.all_issuers",
            json!(introspection.is_some_and(|i| i.all_issuers)),
        ),
        (
            "introspection.timeout",
            json!(introspection.map(|i| duration(i.timeout))),
        ),
        ("session.enabled", json!(session.is_some())),
        (
            "session.cookie_name",
            json!(session.map(|s| &s.cookie_name)),
        ),
        ("session.secure", json!(session.map(|s| s.secure))),
        (
            "session.same_site",
            json!(session.map(|s| match s.same_site {
                SameSite::Lax => "lax",
                SameSite::Strict => "strict",
                SameSite::None => "none",
            })),
        ),
        ("session.landing", json!(session.map(|s| &s.landing))),
        ("session.protected", json!(session.map(|s| &s.protected))),
        ("session.public", json!(session.map(|s| &s.public))),
        ("session.ttl", json!(session.map(|s| duration(s.ttl)))),
        (
            "session.idle_timeout",
            json!(session.map(|s| duration(s.idle_timeout))),
        ),
        (
            "session.secret",
            json!(
                session
                    .and_then(|s| s.secret.as_ref())
                    .map(|_| "(set, not shown)")
            ),
        ),
        (
            "session.secret_file",
            json!(source_file(config, "session.secret_file")),
        ),
        (
            "session.previous_secret",
            json!(
                session
                    .and_then(|s| s.previous_secret.as_ref())
                    .map(|_| "(set, not shown)")
            ),
        ),
        (
            "session.previous_secret_file",
            json!(source_file(config, "session.previous_secret_file")),
        ),
        (
            "session.logout_path",
            json!(session.map(|s| &s.logout_path)),
        ),
        (
            "session.logged_out",
            json!(session.and_then(|s| s.logged_out.as_ref())),
        ),
        (
            "session.case_insensitive_paths",
            json!(session.map(|s| s.case_insensitive_paths)),
        ),
        ("shof.enabled", json!(shof.is_some())),
        ("shof.fhir_base", json!(shof.map(|s| &s.fhir_base))),
        ("shof.redirect_uri", json!(shof.map(|s| &s.redirect_uri))),
        ("shof.scope", json!(shof.map(|s| &s.scope))),
        ("shof.timeout", json!(shof.map(|s| duration(s.timeout)))),
        ("shof.login_ttl", json!(shof.map(|s| duration(s.login_ttl)))),
        ("shof.nonce", json!(shof.is_some_and(|s| s.nonce))),
        (
            "readiness.startup_wait",
            json!(duration(config.readiness.startup_wait)),
        ),
        ("audit.format", json!(config.audit.format.as_str())),
        ("audit.observer", json!(config.audit.observer)),
        ("pages.portal_url", json!(config.pages.portal_url)),
        ("pages.dir", pages_dir(&config.pages)),
    ]
}

/// The template directory and the templates found there (the other pages are built in).
fn pages_dir(pages: &PagesConfig) -> Value {
    let Some(dir) = &pages.dir else {
        return Value::Null;
    };
    let found: Vec<String> = pages
        .templates
        .iter()
        .map(|(page, lang, _)| format!("{}.{}.html", page.as_str(), lang.as_str()))
        .collect();
    let what = match found.len() {
        0 => "no templates, every page built in".to_string(),
        n => format!(
            "{n} of {} templates: {}",
            Page::ALL.len() * Lang::ALL.len(),
            found.join(", ")
        ),
    };
    json!(format!("{} ({what})", dir.display()))
}

/// Secret files are not kept in the configuration; say whether one was configured.
fn source_file(config: &Config, key: &str) -> Option<&'static str> {
    (!matches!(config.source(key), Source::Default)).then_some("(set)")
}

/// Key files as `file (kid)`.
fn key_files<K>(files: &[ModuleKeyFile<K>]) -> Value {
    json!(
        files
            .iter()
            .map(|k| format!("{} (kid {})", k.file.display(), k.kid))
            .collect::<Vec<_>>()
    )
}

/// How a value reads in the text report: lists comma-separated; the issuers, which have a
/// section each, by their number.
fn value_text(key: &str, value: &Value) -> String {
    match value {
        Value::Null => "(not set)".to_string(),
        Value::String(s) => s.clone(),
        Value::Array(items) if key == "issuers" => match items.len() {
            1 => "1 issuer, below".to_string(),
            n => format!("{n} issuers, below"),
        },
        Value::Array(items) if items.is_empty() => "(none)".to_string(),
        Value::Array(items) => items
            .iter()
            .map(|item| value_text(key, item))
            .collect::<Vec<_>>()
            .join(", "),
        other => other.to_string(),
    }
}

pub(super) fn algorithm_names(algs: &[Alg]) -> Vec<&'static str> {
    algs.iter().map(|a| a.name()).collect()
}

/// A duration the way the configuration writes it: "30s", "5m", "24h", "500ms".
pub fn duration(d: Duration) -> String {
    let ms = d.as_millis();
    if !d.subsec_nanos().is_multiple_of(1_000_000) {
        humantime::format_duration(d).to_string()
    } else if ms == 0 {
        "0s".into()
    } else if ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// A size the way the configuration writes it: "64KiB", "1MiB", "1000".
pub fn size(bytes: usize) -> String {
    const KIB: usize = 1024;
    const MIB: usize = 1024 * 1024;
    if bytes > 0 && bytes.is_multiple_of(MIB) {
        format!("{}MiB", bytes / MIB)
    } else if bytes > 0 && bytes.is_multiple_of(KIB) {
        format!("{}KiB", bytes / KIB)
    } else {
        bytes.to_string()
    }
}

/// Hide the password of every URL in `text`: `redis://user:***@host:6379`.
pub fn mask_secret(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(found) = rest.find("://") {
        let (before, after) = rest.split_at(found + 3);
        out.push_str(before);
        let authority_end = after
            .find(|c: char| "/?#()<>\"' ".contains(c) || c.is_whitespace())
            .unwrap_or(after.len());
        let authority = &after[..authority_end];
        match authority
            .rfind('@')
            .and_then(|at| Some((at, authority[..at].find(':')?)))
        {
            Some((at, colon)) => {
                out.push_str(&authority[..colon]);
                out.push_str(":***");
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &after[authority_end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::KEYS;
    use crate::config::tests::MINIMAL;

    #[test]
    fn every_key_is_reported_in_order() {
        let config = Config::from_toml_str(MINIMAL).unwrap();
        let keys: Vec<&str> = settings(&config).into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, KEYS);
    }

    #[test]
    fn passwords_are_masked() {
        assert_eq!(
            mask_secret("redis://user:s3cret@redis:6379/0"),
            "redis://user:***@redis:6379/0"
        );
        assert_eq!(mask_secret("redis://:s3cret@redis"), "redis://:***@redis");
        assert_eq!(mask_secret("redis://redis:6379"), "redis://redis:6379");
        assert_eq!(
            mask_secret("https://host/path?a=b@c:d"),
            "https://host/path?a=b@c:d"
        );
        assert_eq!(
            mask_secret("error for url (https://u:p@h/jwks): refused; see http://a:b@c"),
            "error for url (https://u:***@h/jwks): refused; see http://a:***@c"
        );
        assert_eq!(mask_secret("no url: here"), "no url: here");
        let text = MINIMAL.replace(
            "https://portal.example/jwks",
            "https://u:pw@portal.example/jwks",
        );
        let config = Config::from_toml_str(&text).unwrap();
        let report = ConfigReport::new(&config);
        let shown = serde_json::to_string(&report).unwrap();
        assert!(!shown.contains("pw@"), "{shown}");
        assert!(shown.contains("u:***@portal.example"), "{shown}");
    }

    #[test]
    fn durations_and_sizes_read_like_the_configuration() {
        assert_eq!(duration(Duration::from_secs(30)), "30s");
        assert_eq!(duration(Duration::from_secs(300)), "5m");
        assert_eq!(duration(Duration::from_secs(86400)), "24h");
        assert_eq!(duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(duration(Duration::ZERO), "0s");
        assert_eq!(size(65536), "64KiB");
        assert_eq!(size(1 << 20), "1MiB");
        assert_eq!(size(1000), "1000");
    }
}
