//! Configuration in two stages: the raw serde shape (TOML, then `HTI_GUARD_*` environment)
//! and the validated `Config` the rest of the guard uses. Every check runs once, here, and
//! names the key it is about. One file per section, each with its raw shape, validated type
//! and checks side by side; this one holds the top-level keys and the entry point. Keys
//! (the module's PEM files) are parsed once, here, and kept parsed. Besides the sections:
//! `parse` (shared value parsers), `path` (the request path grammar, shared with the
//! router) and `system` (the process limits some defaults come from). Config imports only
//! `jose` and `error` of the crate, so everything else can read it without a circle.

mod koppeltaal;
mod launch;
mod ops;
mod pages;
mod parse;
pub mod path;
mod serve;
mod session;
mod shof;
mod sources;
mod system;
#[cfg(test)]
pub(crate) mod tests;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Format, Toml};
use http::Uri;
use serde::Deserialize;

pub use koppeltaal::{
    AssertionAudience, IntrospectionConfig, IntrospectionEndpoints, ModuleConfig, ModuleKeyFile,
};
pub use launch::{
    IssuerConfig, KeysConfig, LaunchConfig, RedisMode, ReplayConfig, ReplayStoreKind,
};
pub use ops::{AuditConfig, AuditFormat, ReadinessConfig};
pub use pages::{Field, Lang, Page, PagesConfig, Part, Template};
pub use parse::{parse_duration, parse_size};
pub use serve::{Cidr, Limits, ReloadConfig, Timeouts, TlsConfig};
pub use session::{SameSite, SessionConfig};
pub use shof::ShofConfig;
pub use sources::{ENV_PREFIX, Source};

use koppeltaal::{RawIntrospection, RawModule};
use launch::{RawIssuer, RawKeys, RawLaunch, RawReplay, validate_issuers};
use ops::{RawAudit, RawReadiness};
use pages::RawPages;
use parse::parse_addr;
use serve::{RawLimits, RawReload, RawTimeouts, RawTls, parse_trusted_proxies};
use session::RawSession;
use shof::RawShof;
use sources::{describe_figment_error, env_provider, sources};

/// A configuration that cannot be used; the message names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
    #[error("{0}")]
    Parse(String),
    #[error("configuration file {path}: {message}")]
    File { path: PathBuf, message: String },
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default = "d_listen")]
    listen: String,
    upstream: Option<String>,
    #[serde(default = "d_admin_listen")]
    admin_listen: String,
    #[serde(default = "d_shutdown_grace")]
    shutdown_grace: String,
    workers: Option<i64>,
    #[serde(default)]
    trusted_proxies: Vec<String>,
    #[serde(default)]
    launch: RawLaunch,
    #[serde(default)]
    issuers: Vec<RawIssuer>,
    #[serde(default)]
    keys: RawKeys,
    #[serde(default)]
    replay: RawReplay,
    #[serde(default)]
    timeouts: RawTimeouts,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    tls: RawTls,
    #[serde(default)]
    module: RawModule,
    #[serde(default)]
    introspection: RawIntrospection,
    #[serde(default)]
    session: RawSession,
    #[serde(default)]
    shof: RawShof,
    #[serde(default)]
    readiness: RawReadiness,
    #[serde(default)]
    audit: RawAudit,
    #[serde(default)]
    reload: RawReload,
    #[serde(default)]
    pages: RawPages,
}

fn d_listen() -> String {
    "0.0.0.0:8080".into()
}
fn d_admin_listen() -> String {
    "0.0.0.0:9090".into()
}
/// The most worker threads `workers` may ask for.
const MAX_WORKERS: usize = 1024;

fn d_shutdown_grace() -> String {
    "20s".into()
}

/// Every configuration key, in the order `hti-guard check` reports them. `issuers` is one
/// key: the environment can only replace the whole list.
pub const KEYS: &[&str] = &[
    "listen",
    "upstream",
    "admin_listen",
    "shutdown_grace",
    "workers",
    "trusted_proxies",
    "launch.paths",
    "launch.audience",
    "launch.token_fields",
    "launch.methods",
    "launch.max_lifetime",
    "launch.clock_skew",
    "launch.hti_versions",
    "launch.max_body",
    "issuers",
    "keys.refresh_min",
    "keys.refresh_max",
    "keys.unknown_kid_cooldown",
    "keys.fetch_timeout",
    "keys.max_stale",
    "replay.store",
    "replay.max_entries",
    "replay.redis_mode",
    "replay.redis_url",
    "replay.redis_nodes",
    "replay.sentinel_master",
    "replay.redis_wait_replicas",
    "replay.redis_timeout",
    "replay.key_prefix",
    "timeouts.request_headers",
    "timeouts.idle",
    "timeouts.request_body",
    "timeouts.upstream_connect",
    "timeouts.upstream_response",
    "limits.max_connections",
    "limits.max_memory",
    "tls.cert_file",
    "tls.key_file",
    "reload.watch",
    "reload.watch_interval",
    "module.client_id",
    "module.signing_key_files",
    "module.generate",
    "module.decryption_key_files",
    "module.jwks_path",
    "module.jwks_max_age",
    "introspection.endpoint",
    "introspection.token_endpoint",
    "introspection.fhir_base",
    "introspection.assertion_audience",
    "introspection.assertion_alg",
    "introspection.all_issuers",
    "introspection.timeout",
    "session.enabled",
    "session.cookie_name",
    "session.secure",
    "session.same_site",
    "session.landing",
    "session.protected",
    "session.public",
    "session.ttl",
    "session.idle_timeout",
    "session.secret",
    "session.secret_file",
    "session.previous_secret",
    "session.previous_secret_file",
    "session.logout_path",
    "session.logged_out",
    "session.case_insensitive_paths",
    "shof.enabled",
    "shof.fhir_base",
    "shof.redirect_uri",
    "shof.scope",
    "shof.timeout",
    "shof.login_ttl",
    "shof.nonce",
    "readiness.startup_wait",
    "audit.format",
    "audit.observer",
    "pages.portal_url",
    "pages.dir",
];

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub upstream: UpstreamConfig,
    pub shutdown_grace: Duration,
    /// Worker threads of the public listener (`workers`, default: the CPUs available).
    pub workers: usize,
    /// Peers whose forwarding headers are kept and extended rather than replaced.
    pub trusted_proxies: Vec<Cidr>,
    pub launch: LaunchConfig,
    pub issuers: Vec<IssuerConfig>,
    pub keys: KeysConfig,
    pub replay: ReplayConfig,
    pub timeouts: Timeouts,
    pub limits: Limits,
    pub tls: Option<TlsConfig>,
    pub module: ModuleConfig,
    /// Present when any issuer is verified by introspection (or `all_issuers`).
    pub introspection: Option<IntrospectionConfig>,
    /// Present when `session.enabled`.
    pub session: Option<SessionConfig>,
    /// Present when `shof.enabled`: launches become SHOF logins.
    pub shof: Option<ShofConfig>,
    /// `[readiness]`: the startup gate of `/readyz`.
    pub readiness: ReadinessConfig,
    /// `[audit]`: how the audit trail is written.
    pub audit: AuditConfig,
    /// What else re-reads the configuration besides SIGHUP (`[reload]`).
    pub reload: ReloadConfig,
    /// `[pages]`: the portal link and the operator's templates of the guard's own pages.
    pub pages: PagesConfig,
    /// The configuration file that was read, if any.
    pub file: Option<PathBuf>,
    /// Where each of [`KEYS`] got its value (absent: default).
    pub sources: BTreeMap<String, Source>,
}

impl Config {
    /// Load `path` (when given), then overlay `HTI_GUARD_*` variables, then validate.
    /// A path that was asked for explicitly must exist.
    pub fn load(path: Option<&Path>, must_exist: bool) -> Result<Config, ConfigError> {
        let mut figment = Figment::new();
        let mut file = None;
        if let Some(path) = path {
            if path.exists() {
                figment = figment.merge(Toml::file_exact(path));
                file = Some(path.to_path_buf());
            } else if must_exist {
                return Err(ConfigError::File {
                    path: path.to_path_buf(),
                    message: "not found".into(),
                });
            }
        }
        figment = figment.merge(env_provider());
        let mut config = Self::from_figment(figment)?;
        config.file = file;
        Ok(config)
    }

    /// Parse TOML text (no environment overlay) and validate.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        Self::from_figment(Figment::from(Toml::string(text)))
    }

    fn from_figment(figment: Figment) -> Result<Config, ConfigError> {
        let raw: RawConfig = figment.extract().map_err(describe_figment_error)?;
        let mut config = raw.validate()?;
        config.sources = sources(&figment);
        Ok(config)
    }

    /// Where `key` (one of [`KEYS`]) got its value.
    pub fn source(&self, key: &str) -> &Source {
        self.sources.get(key).unwrap_or(&Source::Default)
    }
}

/// Where the module application lives.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// The base URL as configured.
    pub url: Uri,
    pub scheme: http::uri::Scheme,
    pub authority: http::uri::Authority,
    /// Path prefix without a trailing slash ("" for none).
    pub path_prefix: String,
}

fn parse_upstream(value: Option<&str>) -> Result<UpstreamConfig, ConfigError> {
    let key = "upstream";
    let value =
        value.ok_or_else(|| invalid(key, "is required (the module application's base URL)"))?;
    let url: Uri = value
        .parse()
        .map_err(|e| invalid(key, format!("invalid URL {value:?}: {e}")))?;
    let scheme = url
        .scheme()
        .cloned()
        .ok_or_else(|| invalid(key, format!("{value:?} needs http:// or https://")))?;
    if scheme != http::uri::Scheme::HTTP && scheme != http::uri::Scheme::HTTPS {
        return Err(invalid(
            key,
            format!("{value:?} must be http:// or https://"),
        ));
    }
    let authority = url
        .authority()
        .cloned()
        .ok_or_else(|| invalid(key, format!("{value:?} has no host")))?;
    if url.query().is_some() {
        return Err(invalid(key, "must not carry a query"));
    }
    let path_prefix = url.path().trim_end_matches('/').to_string();
    Ok(UpstreamConfig {
        url,
        scheme,
        authority,
        path_prefix,
    })
}

impl RawConfig {
    fn validate(self) -> Result<Config, ConfigError> {
        let listen = parse_addr("listen", &self.listen)?;
        let admin_listen = parse_addr("admin_listen", &self.admin_listen)?;
        if listen == admin_listen && listen.port() != 0 {
            return Err(invalid(
                "admin_listen",
                "must differ from listen (the admin endpoints are not public)",
            ));
        }
        let upstream = parse_upstream(self.upstream.as_deref())?;
        let shutdown_grace = parse_duration("shutdown_grace", &self.shutdown_grace)?;
        let workers = match self.workers {
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
            Some(n) if (1..=MAX_WORKERS as i64).contains(&n) => n as usize,
            Some(n) => {
                return Err(invalid(
                    "workers",
                    format!(
                        "{n} is out of range (1 to {MAX_WORKERS}, or leave it out for one per CPU)"
                    ),
                ));
            }
        };
        let trusted_proxies = parse_trusted_proxies(&self.trusted_proxies)?;
        let launch = self.launch.validate()?;
        let issuers = validate_issuers(self.issuers, self.shof.enabled())?;
        let keys = self.keys.validate()?;
        let replay = self.replay.validate()?;
        let timeouts = self.timeouts.validate()?;
        let limits = self.limits.validate(workers)?;
        let module = self.module.validate(&launch)?;
        let introspection = self.introspection.validate(&issuers, &module)?;
        let session = self.session.validate(&launch)?;
        let shof = self.shof.validate(
            &launch,
            &module,
            session.as_ref(),
            introspection.as_ref().map(|i| i.assertion_alg),
        )?;
        let tls = self.tls.validate()?;
        let readiness = self.readiness.validate()?;
        let audit = self.audit.validate()?;
        let reload = self.reload.validate()?;
        let pages = self.pages.validate()?;
        Ok(Config {
            listen,
            admin_listen,
            upstream,
            shutdown_grace,
            workers,
            trusted_proxies,
            launch,
            issuers,
            keys,
            replay,
            timeouts,
            limits,
            tls,
            module,
            introspection,
            session,
            shof,
            readiness,
            audit,
            reload,
            pages,
            file: None,
            sources: BTreeMap::new(),
        })
    }
}
