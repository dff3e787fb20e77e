//! Where configuration comes from: the TOML file, then `HTI_GUARD_*` variables (figment
//! providers), and for each key, which of them set it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use figment::providers::Env;
use figment::{Figment, Provider};

use super::{ConfigError, KEYS};

/// The prefix of the environment variables that set configuration keys.
pub const ENV_PREFIX: &str = "HTI_GUARD_";

/// Where a configuration value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Set nowhere: the built-in default (or unset, for an optional key).
    Default,
    /// The configuration file.
    File(PathBuf),
    /// An environment variable, by its name.
    Env(String),
    /// TOML text handed over in code (`Config::from_toml_str`: tests, the demo).
    Text,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::File(path) => write!(f, "file {}", path.display()),
            Source::Env(name) => write!(f, "env {name}"),
            Source::Text => f.write_str("inline TOML"),
        }
    }
}

/// Whether an `HTI_GUARD_*` variable (lowercased, prefix removed) is not configuration:
/// `HTI_GUARD_CONFIG` names the file, Kubernetes injects service links such as
/// `HTI_GUARD_SERVICE_HOST` and `HTI_GUARD_PORT_8080_TCP` for a Service named hti-guard,
/// and cargo puts build.rs's `HTI_GUARD_GIT_REV` into the environment of `cargo run` and
/// `cargo test`.
pub(super) fn env_not_config(key: &str) -> bool {
    key == "config"
        || key == "git_rev"
        || key == "port"
        || key.starts_with("port_")
        || key == "service_host"
        || key.starts_with("service_port")
}

pub(super) fn env_provider() -> Env {
    Env::prefixed(ENV_PREFIX)
        .filter(|key| !env_not_config(&key.as_str().to_ascii_lowercase()))
        .split("__")
}

/// The source of every key that some provider set. Figment tags each value with the
/// provider it came from; a key no provider set takes its serde default.
pub(super) fn sources(figment: &Figment) -> BTreeMap<String, Source> {
    let env_name = env_provider().metadata().name;
    let mut sources = BTreeMap::new();
    for key in KEYS {
        let Some(metadata) = figment.find_metadata(key) else {
            continue;
        };
        let source = match &metadata.source {
            Some(figment::Source::File(path)) => Source::File(path.clone()),
            _ if metadata.name == env_name => Source::Env(env_variable(key)),
            _ => Source::Text,
        };
        sources.insert(key.to_string(), source);
    }
    sources
}

/// The name of the environment variable that set `key`, as it is spelled in the
/// environment (figment matches names without regard to case).
fn env_variable(key: &str) -> String {
    let wanted = format!("{ENV_PREFIX}{}", key.replace('.', "__")).to_ascii_uppercase();
    std::env::vars_os()
        .filter_map(|(name, _)| name.into_string().ok())
        .find(|name| name.trim().eq_ignore_ascii_case(&wanted))
        .unwrap_or(wanted)
}

/// Figment errors name the key in their path; put it first, the way our own errors read.
pub(super) fn describe_figment_error(err: figment::Error) -> ConfigError {
    let mut messages = Vec::new();
    for e in err {
        let key = e.path.join(".");
        let source = match &e.metadata {
            Some(md) => match &md.source {
                Some(src) => format!(" (from {src})"),
                None => format!(" (from {})", md.name),
            },
            None => String::new(),
        };
        let kind = e.kind.to_string();
        let key = match &e.kind {
            // serde names the field, figment's path names its parent.
            figment::error::Kind::UnknownField(field, _) => join_key(&key, field),
            figment::error::Kind::MissingField(field) => join_key(&key, field),
            _ => key,
        };
        if key.is_empty() {
            messages.push(format!("{kind}{source}"));
        } else {
            messages.push(format!("{key}: {kind}{source}"));
        }
    }
    ConfigError::Parse(messages.join("; "))
}

fn join_key(parent: &str, field: &str) -> String {
    if parent.is_empty() || parent.ends_with(field) {
        if parent.is_empty() {
            field.to_string()
        } else {
            parent.to_string()
        }
    } else {
        format!("{parent}.{field}")
    }
}
