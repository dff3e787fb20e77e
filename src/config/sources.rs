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
/// `HTI_GUARD_CONFIG` names the file, `HTI_GUARD_REPLICAS` tells `check` how many replicas
/// run, Kubernetes injects service links such as `HTI_GUARD_SERVICE_HOST` and
/// `HTI_GUARD_PORT_8080_TCP` for a Service named hti-guard, and cargo puts build.rs's
/// `HTI_GUARD_GIT_REV` into the environment of `cargo run` and `cargo test`.
pub(super) fn env_not_config(key: &str) -> bool {
    key == "config"
        || key == "replicas"
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
/// An unknown key gets the nearest known one, spelled as its source spells it.
pub(super) fn describe_figment_error(err: figment::Error) -> ConfigError {
    let env_name = env_provider().metadata().name;
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
        let mut kind = e.kind.to_string();
        if let figment::error::Kind::UnknownField(field, expected) = &e.kind
            && let Some(known) = nearest_key(&key, field, expected)
        {
            let from_env = e.metadata.as_ref().is_some_and(|md| md.name == env_name);
            if from_env {
                let variable = format!("{ENV_PREFIX}{}", known.replace('.', "__"));
                kind.push_str(&format!(
                    "; did you mean `{known}` ({})?",
                    variable.to_ascii_uppercase()
                ));
            } else {
                kind.push_str(&format!("; did you mean `{known}`?"));
            }
        }
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

/// The known key nearest to the unknown `field` at `path`: a sibling serde expected,
/// or any of [`KEYS`] (so that `HTI_GUARD_LAUNCH_AUDIENCE`, one underscore short, still
/// finds `launch.audience`). `None` when nothing is close.
pub(super) fn nearest_key(path: &str, field: &str, expected: &[&str]) -> Option<String> {
    // Figment's path may end with the field itself.
    let parent = match path.strip_suffix(field) {
        Some(parent) if parent.is_empty() || parent.ends_with('.') => parent.trim_end_matches('.'),
        _ => path,
    };
    let field = field.to_ascii_lowercase();
    let flat = |key: &str| key.replace('.', "_");
    let full = flat(&join_key(parent, &field));
    let siblings = expected
        .iter()
        .map(|e| (distance(&field, e), join_key(parent, e)));
    let anywhere = KEYS
        .iter()
        .map(|k| (distance(&full, &flat(k)), k.to_string()));
    let (best, key) = siblings.chain(anywhere).min_by_key(|(d, _)| *d)?;
    // One edit in a short name, up to three in a long one.
    (best <= (field.len() / 4).clamp(1, 3)).then_some(key)
}

/// Edits (insert, delete, replace, swap two neighbours) from `a` to `b`.
fn distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut rows = vec![(0..=b.len()).collect::<Vec<_>>()];
    for i in 1..=a.len() {
        let mut row = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            let replace = rows[i - 1][j - 1] + usize::from(a[i - 1] != b[j - 1]);
            row[j] = replace.min(rows[i - 1][j] + 1).min(row[j - 1] + 1);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                row[j] = row[j].min(rows[i - 2][j - 2] + 1);
            }
        }
        rows.push(row);
    }
    rows[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn near_misses_find_the_known_key() {
        assert_eq!(distance("audience", "audience"), 0);
        assert_eq!(distance("audeince", "audience"), 1);
        assert_eq!(distance("audiense", "audience"), 1);
        assert_eq!(distance("", "abc"), 3);
        let launch = &["paths", "audience", "token_fields", "methods"];
        assert_eq!(
            nearest_key("launch", "audiense", launch).as_deref(),
            Some("launch.audience")
        );
        assert_eq!(
            nearest_key("", "launch_audience", &["listen", "launch"]).as_deref(),
            Some("launch.audience")
        );
        assert_eq!(
            nearest_key("", "upstrem", &["listen", "upstream"]).as_deref(),
            Some("upstream")
        );
        assert_eq!(
            nearest_key("launch.audiense", "audiense", launch).as_deref(),
            Some("launch.audience")
        );
        assert_eq!(nearest_key("launch", "colour", launch), None);
    }
}
