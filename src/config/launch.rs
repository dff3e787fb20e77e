//! The launch and how its token is checked: `[launch]`, `[[issuers]]`, `[keys]` (the
//! issuers' JWKS cache) and `[replay]` (single use).

use std::time::Duration;

use http::Method;
use serde::Deserialize;

use super::parse::{
    header_safe, non_empty_list, normal_path, parse_duration, parse_http_url, parse_size, positive,
};
use super::{ConfigError, invalid};
use crate::jose::Alg;

/// One value or a list of them (`launch.audience`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawLaunch {
    paths: Vec<String>,
    audience: Option<OneOrMany>,
    token_fields: Vec<String>,
    methods: Vec<String>,
    max_lifetime: String,
    clock_skew: String,
    hti_versions: Vec<String>,
    max_body: String,
}

impl Default for RawLaunch {
    fn default() -> Self {
        Self {
            paths: vec!["/launch".into()],
            audience: None,
            token_fields: vec!["token".into(), "launch".into()],
            methods: vec!["POST".into()],
            max_lifetime: "5m".into(),
            clock_skew: "30s".into(),
            hti_versions: vec!["2.0".into()],
            max_body: "64KiB".into(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct LaunchConfig {
    pub paths: Vec<String>,
    pub audience: Vec<String>,
    pub token_fields: Vec<String>,
    pub methods: Vec<Method>,
    pub max_lifetime: Duration,
    pub clock_skew: Duration,
    pub hti_versions: Vec<String>,
    pub max_body: usize,
}

impl RawLaunch {
    pub(super) fn validate(self) -> Result<LaunchConfig, ConfigError> {
        non_empty_list("launch.paths", &self.paths)?;
        for p in &self.paths {
            if !p.starts_with('/') || p.contains('?') || p.contains('#') {
                return Err(invalid(
                    "launch.paths",
                    format!("{p:?} must be a path starting with '/' without query"),
                ));
            }
            normal_path("launch.paths", p)?;
        }
        let audience = match self.audience {
            None => {
                return Err(invalid(
                    "launch.audience",
                    "is required (the module's aud, e.g. \"Device/123\")",
                ));
            }
            Some(OneOrMany::One(a)) => vec![a],
            Some(OneOrMany::Many(list)) => list,
        };
        non_empty_list("launch.audience", &audience)?;
        non_empty_list("launch.token_fields", &self.token_fields)?;
        non_empty_list("launch.methods", &self.methods)?;
        let mut methods = Vec::new();
        for m in &self.methods {
            let method = match m.to_ascii_uppercase().as_str() {
                "POST" => Method::POST,
                "GET" => Method::GET,
                _ => {
                    return Err(invalid(
                        "launch.methods",
                        format!("{m:?} is not supported; use \"POST\" and/or \"GET\""),
                    ));
                }
            };
            if !methods.contains(&method) {
                methods.push(method);
            }
        }
        let max_lifetime = positive("launch.max_lifetime", &self.max_lifetime)?;
        let clock_skew = parse_duration("launch.clock_skew", &self.clock_skew)?;
        if clock_skew > Duration::from_secs(600) {
            return Err(invalid(
                "launch.clock_skew",
                "must be at most 10m (a larger leeway defeats expiry)",
            ));
        }
        non_empty_list("launch.hti_versions", &self.hti_versions)?;
        let max_body = parse_size("launch.max_body", &self.max_body)?;
        if max_body == 0 {
            return Err(invalid("launch.max_body", "must be larger than zero"));
        }
        Ok(LaunchConfig {
            paths: self.paths,
            audience,
            token_fields: self.token_fields,
            methods,
            max_lifetime,
            clock_skew,
            hti_versions: self.hti_versions,
            max_body,
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIssuer {
    iss: Option<String>,
    jwks_url: Option<String>,
    #[serde(default)]
    introspect: bool,
    algorithms: Option<Vec<String>>,
}

#[derive(Debug, Clone)]
pub struct IssuerConfig {
    pub iss: String,
    /// The portal's JWKS URL; `None` for an issuer verified by introspection.
    pub jwks_url: Option<String>,
    pub algorithms: Vec<Alg>,
}

impl IssuerConfig {
    /// Whether this issuer's tokens are verified by the domain's auth server.
    pub fn introspected(&self) -> bool {
        self.jwks_url.is_none()
    }
}

/// `[[issuers]]`; it may be empty only when `shof_enabled` (the auth server checks the
/// launch tokens then).
pub(super) fn validate_issuers(
    raw: Vec<RawIssuer>,
    shof_enabled: bool,
) -> Result<Vec<IssuerConfig>, ConfigError> {
    if raw.is_empty() && !shof_enabled {
        return Err(invalid(
            "issuers",
            "at least one [[issuers]] entry (iss and jwks_url) is required",
        ));
    }
    let mut out: Vec<IssuerConfig> = Vec::with_capacity(raw.len());
    for (i, r) in raw.into_iter().enumerate() {
        let key = |k: &str| format!("issuers[{i}].{k}");
        let iss = r
            .iss
            .filter(|s| !s.is_empty())
            .ok_or_else(|| invalid(key("iss"), "is required"))?;
        header_safe(&key("iss"), &iss)?;
        if out.iter().any(|o| o.iss == iss) {
            return Err(invalid(key("iss"), format!("{iss:?} is configured twice")));
        }
        let jwks_url = match (r.jwks_url, r.introspect) {
            (Some(url), false) => Some(parse_http_url(&key("jwks_url"), &url)?),
            (None, true) => None,
            (Some(_), true) => {
                return Err(invalid(
                    key("introspect"),
                    "an issuer has either a jwks_url or introspect = true, not both",
                ));
            }
            (None, false) => {
                return Err(invalid(
                    key("jwks_url"),
                    "is required (or introspect = true, to ask the domain's auth server)",
                ));
            }
        };
        let algorithms = match r.algorithms {
            None => Alg::ALL.to_vec(),
            Some(list) => {
                if list.is_empty() {
                    return Err(invalid(
                        key("algorithms"),
                        "must name at least one algorithm",
                    ));
                }
                let mut algs = Vec::new();
                for name in list {
                    let alg = Alg::from_name(&name).ok_or_else(|| {
                        invalid(
                            key("algorithms"),
                            format!(
                                "{name:?} is not accepted; HS* and none can never be listed, choose from {}",
                                Alg::ALL.iter().map(|a| a.name()).collect::<Vec<_>>().join(", ")
                            ),
                        )
                    })?;
                    if !algs.contains(&alg) {
                        algs.push(alg);
                    }
                }
                algs
            }
        };
        out.push(IssuerConfig {
            iss,
            jwks_url,
            algorithms,
        });
    }
    Ok(out)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawKeys {
    refresh_min: String,
    refresh_max: String,
    unknown_kid_cooldown: String,
    fetch_timeout: String,
    max_stale: String,
}

impl Default for RawKeys {
    fn default() -> Self {
        Self {
            refresh_min: "30s".into(),
            refresh_max: "1h".into(),
            unknown_kid_cooldown: "30s".into(),
            fetch_timeout: "5s".into(),
            max_stale: "24h".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeysConfig {
    pub refresh_min: Duration,
    pub refresh_max: Duration,
    pub unknown_kid_cooldown: Duration,
    pub fetch_timeout: Duration,
    pub max_stale: Duration,
}

impl Default for KeysConfig {
    fn default() -> Self {
        Self {
            refresh_min: Duration::from_secs(30),
            refresh_max: Duration::from_secs(3600),
            unknown_kid_cooldown: Duration::from_secs(30),
            fetch_timeout: Duration::from_secs(5),
            max_stale: Duration::from_secs(24 * 3600),
        }
    }
}

impl RawKeys {
    pub(super) fn validate(self) -> Result<KeysConfig, ConfigError> {
        let refresh_min = positive("keys.refresh_min", &self.refresh_min)?;
        let refresh_max = positive("keys.refresh_max", &self.refresh_max)?;
        if refresh_max < refresh_min {
            return Err(invalid(
                "keys.refresh_max",
                "must not be shorter than keys.refresh_min",
            ));
        }
        let keys = KeysConfig {
            refresh_min,
            refresh_max,
            unknown_kid_cooldown: parse_duration(
                "keys.unknown_kid_cooldown",
                &self.unknown_kid_cooldown,
            )?,
            fetch_timeout: positive("keys.fetch_timeout", &self.fetch_timeout)?,
            max_stale: positive("keys.max_stale", &self.max_stale)?,
        };
        Ok(keys)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawReplay {
    store: String,
    max_entries: u64,
    redis_mode: String,
    redis_url: Option<String>,
    redis_nodes: Vec<String>,
    sentinel_master: Option<String>,
    redis_wait_replicas: u32,
    redis_timeout: String,
    key_prefix: String,
}

impl Default for RawReplay {
    fn default() -> Self {
        Self {
            store: "memory".into(),
            max_entries: 1_000_000,
            redis_mode: "single".into(),
            redis_url: None,
            redis_nodes: Vec::new(),
            sentinel_master: None,
            redis_wait_replicas: 0,
            redis_timeout: "250ms".into(),
            key_prefix: "hti-guard:jti:".into(),
        }
    }
}

/// Where used jtis are remembered: this process, or a Redis server all replicas share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayStoreKind {
    Memory,
    Redis,
}

/// How the Redis store finds its primary: one URL, Sentinels that name the master, or the
/// seed nodes of a Redis Cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisMode {
    Single,
    /// The master's name as the Sentinels know it.
    Sentinel {
        master: String,
    },
    Cluster,
}

impl RedisMode {
    pub fn as_str(&self) -> &'static str {
        match self {
            RedisMode::Single => "single",
            RedisMode::Sentinel { .. } => "sentinel",
            RedisMode::Cluster => "cluster",
        }
    }
}

#[derive(Debug, Clone)]
pub struct ReplayConfig {
    pub store: ReplayStoreKind,
    /// Bound of the memory store.
    pub max_entries: usize,
    pub redis_mode: RedisMode,
    /// Required for the Redis store in "single" mode; may carry credentials.
    pub redis_url: Option<String>,
    /// The Sentinels ("sentinel") or seed nodes ("cluster"); may carry credentials.
    pub redis_nodes: Vec<String>,
    /// How many replicas must hold a new jti (`WAIT`) before the launch is accepted.
    pub redis_wait_replicas: u32,
    /// The most one Redis call may take.
    pub redis_timeout: Duration,
    /// Prefix of the Redis keys.
    pub key_prefix: String,
}

/// A `redis://` or `rediss://` URL redis-rs can use, parsed.
fn redis_url(key: &str, url: &str) -> Result<redis::ConnectionInfo, ConfigError> {
    if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
        return Err(invalid(key, "must start with redis:// or rediss:// (TLS)"));
    }
    redis::IntoConnectionInfo::into_connection_info(url)
        .map_err(|e| invalid(key, format!("not a usable Redis URL: {e}")))
}

/// The user, password and scheme of a node URL, which every node must share.
fn credentials(info: &redis::ConnectionInfo) -> (Option<&str>, Option<&str>, bool) {
    let settings = info.redis_settings();
    (
        settings.username(),
        settings.password(),
        matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. }),
    )
}

impl RawReplay {
    fn validate_mode(&self) -> Result<RedisMode, ConfigError> {
        let mode = match self.redis_mode.as_str() {
            "single" => RedisMode::Single,
            "sentinel" => match self.sentinel_master.as_deref() {
                Some(master) if !master.trim().is_empty() => RedisMode::Sentinel {
                    master: master.to_owned(),
                },
                _ => {
                    return Err(invalid(
                        "replay.sentinel_master",
                        "is required when replay.redis_mode = \"sentinel\" (the master's name \
                         as the Sentinels know it, e.g. \"mymaster\")",
                    ));
                }
            },
            "cluster" => RedisMode::Cluster,
            other => {
                return Err(invalid(
                    "replay.redis_mode",
                    format!("{other:?} is not a mode; use \"single\", \"sentinel\" or \"cluster\""),
                ));
            }
        };
        let named = self
            .sentinel_master
            .as_deref()
            .is_some_and(|m| !m.is_empty());
        if named && !matches!(mode, RedisMode::Sentinel { .. }) {
            return Err(invalid(
                "replay.sentinel_master",
                "is only for replay.redis_mode = \"sentinel\"",
            ));
        }
        Ok(mode)
    }

    /// The URLs of the chosen mode: `redis_url` for "single", `redis_nodes` otherwise.
    fn validate_urls(&self, mode: &RedisMode) -> Result<(), ConfigError> {
        if *mode == RedisMode::Single {
            if !self.redis_nodes.is_empty() {
                return Err(invalid(
                    "replay.redis_nodes",
                    "is only for replay.redis_mode = \"sentinel\" or \"cluster\"",
                ));
            }
            let Some(url) = &self.redis_url else {
                return Err(invalid(
                    "replay.redis_url",
                    "is required when replay.store = \"redis\"",
                ));
            };
            redis_url("replay.redis_url", url)?;
            return Ok(());
        }
        if self.redis_url.is_some() {
            return Err(invalid(
                "replay.redis_url",
                format!(
                    "is only for replay.redis_mode = \"single\"; with {:?} list the nodes in \
                     replay.redis_nodes",
                    mode.as_str()
                ),
            ));
        }
        if self.redis_nodes.is_empty() {
            return Err(invalid(
                "replay.redis_nodes",
                format!(
                    "is required when replay.redis_mode = {:?} (at least one redis:// URL)",
                    mode.as_str()
                ),
            ));
        }
        let mut first = None;
        for url in &self.redis_nodes {
            let info = redis_url("replay.redis_nodes", url)?;
            if *mode == RedisMode::Cluster && info.redis_settings().db() != 0 {
                return Err(invalid(
                    "replay.redis_nodes",
                    "Redis Cluster has only database 0; remove the /db from the URLs",
                ));
            }
            let first = first.get_or_insert_with(|| info.clone());
            if credentials(first) != credentials(&info) {
                return Err(invalid(
                    "replay.redis_nodes",
                    "every URL must have the same scheme, user and password",
                ));
            }
        }
        Ok(())
    }

    pub(super) fn validate(self) -> Result<ReplayConfig, ConfigError> {
        let mode = self.validate_mode()?;
        let store = match self.store.as_str() {
            "memory" => ReplayStoreKind::Memory,
            "redis" => {
                self.validate_urls(&mode)?;
                ReplayStoreKind::Redis
            }
            other => {
                return Err(invalid(
                    "replay.store",
                    format!("{other:?} is not a store; use \"memory\" or \"redis\""),
                ));
            }
        };
        let redis_timeout = positive("replay.redis_timeout", &self.redis_timeout)?;
        if self.redis_wait_replicas > 16 {
            return Err(invalid("replay.redis_wait_replicas", "must be 0 to 16"));
        }
        if self.key_prefix.is_empty() || self.key_prefix.len() > 128 {
            return Err(invalid("replay.key_prefix", "must be 1 to 128 characters"));
        }
        if self.max_entries == 0 {
            return Err(invalid("replay.max_entries", "must be at least 1"));
        }
        let max_entries = usize::try_from(self.max_entries)
            .map_err(|_| invalid("replay.max_entries", "is too large"))?;
        Ok(ReplayConfig {
            store,
            max_entries,
            redis_mode: mode,
            redis_url: self.redis_url,
            redis_nodes: self.redis_nodes,
            redis_wait_replicas: self.redis_wait_replicas,
            redis_timeout,
            key_prefix: self.key_prefix,
        })
    }
}
