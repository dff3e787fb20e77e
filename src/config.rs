//! Configuration in two stages: the raw serde shape (TOML, then `HTI_GUARD_*` environment)
//! and the validated `Config` the rest of the guard uses. Every check runs once, here, and
//! names the key it is about.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Toml};
use figment::{Figment, Provider};
use http::{Method, Uri};
use serde::Deserialize;

use crate::sign::SigningKey;
use crate::verify::Alg;

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

/// One value or a list of them (`launch.audience`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
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
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawSession {
    enabled: bool,
    cookie_name: String,
    secure: bool,
    same_site: String,
    landing: String,
    protected: Vec<String>,
    public: Vec<String>,
    ttl: String,
    idle_timeout: String,
    secret: Option<String>,
    secret_file: Option<PathBuf>,
    previous_secret: Option<String>,
    previous_secret_file: Option<PathBuf>,
    logout_path: String,
    logged_out: Option<String>,
    case_insensitive_paths: bool,
}

impl Default for RawSession {
    fn default() -> Self {
        Self {
            enabled: false,
            cookie_name: "hti_guard_session".into(),
            secure: true,
            same_site: "lax".into(),
            landing: "/".into(),
            protected: vec!["/".into()],
            public: Vec::new(),
            ttl: "1h".into(),
            idle_timeout: "20m".into(),
            secret: None,
            secret_file: None,
            previous_secret: None,
            previous_secret_file: None,
            logout_path: "/hti-guard/logout".into(),
            logged_out: None,
            case_insensitive_paths: false,
        }
    }
}

/// A key file, as a path or as `{ file = "...", kid = "..." }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum RawKeyFile {
    Path(PathBuf),
    Entry(RawKeyFileEntry),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKeyFileEntry {
    file: PathBuf,
    kid: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawModule {
    client_id: Option<String>,
    signing_key_files: Vec<RawKeyFile>,
    generate: bool,
    decryption_key_files: Vec<RawKeyFile>,
    jwks_path: Option<String>,
    jwks_max_age: String,
}

impl Default for RawModule {
    fn default() -> Self {
        Self {
            client_id: None,
            signing_key_files: Vec::new(),
            generate: false,
            decryption_key_files: Vec::new(),
            jwks_path: None,
            jwks_max_age: "5m".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawIntrospection {
    endpoint: Option<String>,
    token_endpoint: Option<String>,
    fhir_base: Option<String>,
    assertion_audience: String,
    assertion_alg: String,
    all_issuers: bool,
    timeout: String,
}

impl Default for RawIntrospection {
    fn default() -> Self {
        Self {
            endpoint: None,
            token_endpoint: None,
            fhir_base: None,
            assertion_audience: "token_endpoint".into(),
            assertion_alg: "RS512".into(),
            all_issuers: false,
            timeout: "5s".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLaunch {
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIssuer {
    iss: Option<String>,
    jwks_url: Option<String>,
    #[serde(default)]
    introspect: bool,
    algorithms: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawKeys {
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawReplay {
    store: String,
    max_entries: u64,
    redis_url: Option<String>,
    redis_timeout: String,
    key_prefix: String,
}

impl Default for RawReplay {
    fn default() -> Self {
        Self {
            store: "memory".into(),
            max_entries: 1_000_000,
            redis_url: None,
            redis_timeout: "250ms".into(),
            key_prefix: "hti-guard:jti:".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawTimeouts {
    request_headers: String,
    idle: String,
    request_body: String,
    upstream_connect: String,
    upstream_response: String,
}

impl Default for RawTimeouts {
    fn default() -> Self {
        Self {
            request_headers: "10s".into(),
            // nginx's keepalive_timeout and send_timeout, Envoy's idle_timeout order.
            idle: "60s".into(),
            // nginx's client_body_timeout is 60 s; a launch form is small, so half that.
            request_body: "30s".into(),
            upstream_connect: "2s".into(),
            upstream_response: "60s".into(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLimits {
    max_connections: Option<i64>,
    max_memory: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
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
    "replay.redis_url",
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
];

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

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub upstream: UpstreamConfig,
    pub shutdown_grace: Duration,
    /// Worker threads of the public listener (`workers`, default: the CPUs available).
    pub workers: usize,
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
    /// The configuration file that was read, if any.
    pub file: Option<PathBuf>,
    /// Where each of [`KEYS`] got its value (absent: default).
    pub sources: BTreeMap<String, Source>,
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

/// The `SameSite` attribute of the session cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    Lax,
    Strict,
    None,
}

/// Sessions after the launch (`[session]`).
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub cookie_name: String,
    pub secure: bool,
    pub same_site: SameSite,
    pub landing: String,
    pub protected: Vec<String>,
    pub public: Vec<String>,
    pub ttl: Duration,
    pub idle_timeout: Duration,
    /// The sealing key material (decoded, at least 32 bytes); `None`: make one at start.
    pub secret: Option<Vec<u8>>,
    /// A previous key still accepted for reading, during a rotation.
    pub previous_secret: Option<Vec<u8>>,
    pub logout_path: String,
    pub logged_out: Option<String>,
    /// Match `protected`, `public` and `logout_path` without regard to ASCII case, for apps
    /// that route that way (Express, ASP.NET).
    pub case_insensitive_paths: bool,
    /// What a session is bound to: the launch audience, so that a cookie made for another
    /// deployment sharing the secret is refused.
    pub binding: String,
}

/// One of the module's own keys, loaded at startup.
#[derive(Debug, Clone)]
pub struct ModuleKeyFile {
    pub file: PathBuf,
    pub pem: Vec<u8>,
    /// The configured kid, or the key's RFC 7638 thumbprint.
    pub kid: String,
}

/// The module's own identity and keys (`[module]`).
#[derive(Debug, Clone)]
pub struct ModuleConfig {
    pub client_id: Option<String>,
    /// Signing keys; the first signs client assertions, the others stay published.
    pub signing_keys: Vec<ModuleKeyFile>,
    /// Make a signing key at start (lives as long as the process).
    pub generate: bool,
    pub decryption_keys: Vec<ModuleKeyFile>,
    /// Where the public listener serves the module's JWKS; not served when `None`.
    pub jwks_path: Option<String>,
    pub jwks_max_age: Duration,
}

/// Where the introspection endpoint is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntrospectionEndpoints {
    Configured {
        introspection: String,
        token: Option<String>,
    },
    Discovered {
        fhir_base: String,
    },
}

/// Which URL a client assertion names as its audience.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssertionAudience {
    TokenEndpoint,
    IntrospectionEndpoint,
}

/// Token introspection (`[introspection]`, Koppeltaal TOP-KT-021).
#[derive(Debug, Clone)]
pub struct IntrospectionConfig {
    pub endpoints: IntrospectionEndpoints,
    pub assertion_audience: AssertionAudience,
    pub assertion_alg: Alg,
    pub all_issuers: bool,
    pub timeout: Duration,
    pub client_id: String,
}

#[derive(Debug, Clone)]
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

/// Where used jtis are remembered: this process, or a Redis server all replicas share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayStoreKind {
    Memory,
    Redis,
}

#[derive(Debug, Clone)]
pub struct ReplayConfig {
    pub store: ReplayStoreKind,
    /// Bound of the memory store.
    pub max_entries: usize,
    /// Required for the Redis store; may carry credentials.
    pub redis_url: Option<String>,
    /// The most one Redis call may take.
    pub redis_timeout: Duration,
    /// Prefix of the Redis keys.
    pub key_prefix: String,
}

#[derive(Debug, Clone)]
pub struct Timeouts {
    pub request_headers: Duration,
    /// A connection with no request in progress, and a write to a client that reads
    /// nothing, end after this.
    pub idle: Duration,
    /// A request body that sends nothing for this long ends its request.
    pub request_body: Duration,
    pub upstream_connect: Duration,
    pub upstream_response: Duration,
}

/// Bounds on what the guard takes on (`[limits]`).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Open client connections on the public listener; the accept loop waits beyond it.
    pub max_connections: usize,
    /// Above 90 % of this resident set size new requests get 503 `overloaded`; `None`: no
    /// limit.
    pub max_memory: Option<u64>,
}

/// The most `limits.max_connections` may be.
const MAX_CONNECTIONS: i64 = 1_000_000;
/// The default `limits.max_connections` when the open-files limit does not lower it.
const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// File descriptors kept for everything but client connections (listeners, runtimes, key
/// fetches, Redis, logs).
const RESERVED_FDS: u64 = 64;

/// The default `limits.max_connections`: 10 000, or fewer when the open-files limit
/// (`RLIMIT_NOFILE`) cannot hold them: each client connection may hold an upstream
/// connection too, so half of what is left after a reserve.
fn default_max_connections(open_files: Option<u64>) -> usize {
    match open_files {
        Some(n) => {
            let fit = n.saturating_sub(RESERVED_FDS) / 2;
            (fit.clamp(1, DEFAULT_MAX_CONNECTIONS as u64)) as usize
        }
        None => DEFAULT_MAX_CONNECTIONS,
    }
}

#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// The certificate chain and key, loaded and checked at startup (ALPN h2, http/1.1).
    pub server_config: std::sync::Arc<rustls::ServerConfig>,
}

/// Whether an `HTI_GUARD_*` variable (lowercased, prefix removed) is not configuration:
/// `HTI_GUARD_CONFIG` names the file, and Kubernetes injects service links such as
/// `HTI_GUARD_SERVICE_HOST` and `HTI_GUARD_PORT_8080_TCP` for a Service named hti-guard.
fn env_not_config(key: &str) -> bool {
    key == "config"
        || key == "port"
        || key.starts_with("port_")
        || key == "service_host"
        || key.starts_with("service_port")
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

fn env_provider() -> Env {
    Env::prefixed(ENV_PREFIX)
        .filter(|key| !env_not_config(&key.as_str().to_ascii_lowercase()))
        .split("__")
}

/// The source of every key that some provider set. Figment tags each value with the
/// provider it came from; a key no provider set takes its serde default.
fn sources(figment: &Figment) -> BTreeMap<String, Source> {
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
fn describe_figment_error(err: figment::Error) -> ConfigError {
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

/// Parse a humantime duration such as "30s", "5m", "500ms".
pub fn parse_duration(key: &str, value: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(value.trim()).map_err(|e| {
        invalid(
            key,
            format!("invalid duration {value:?} ({e}); use e.g. \"30s\""),
        )
    })
}

/// Parse a size such as "64KiB", "1MiB", "65536".
pub fn parse_size(key: &str, value: &str) -> Result<usize, ConfigError> {
    let v = value.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (digits, unit) = v.split_at(split);
    let n: usize = digits
        .parse()
        .map_err(|_| invalid(key, format!("invalid size {value:?}; use e.g. \"64KiB\"")))?;
    let mult: usize = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" | "k" | "KB" | "kB" => 1024,
        "MiB" | "M" | "MB" => 1024 * 1024,
        "GiB" | "G" | "GB" => 1024 * 1024 * 1024,
        _ => {
            return Err(invalid(
                key,
                format!("invalid size unit in {value:?}; use B, KiB, MiB or GiB"),
            ));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| invalid(key, format!("size {value:?} is too large")))
}

fn parse_addr(key: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|_| {
        invalid(
            key,
            format!("invalid listen address {value:?}; use host:port, e.g. \"0.0.0.0:8080\""),
        )
    })
}

fn non_empty_list(key: &str, list: &[String]) -> Result<(), ConfigError> {
    if list.is_empty() {
        return Err(invalid(key, "must name at least one value"));
    }
    if list.iter().any(|s| s.trim().is_empty()) {
        return Err(invalid(key, "values must not be empty"));
    }
    Ok(())
}

/// A value that will be sent as a header must be visible ASCII.
fn header_safe(key: &str, value: &str) -> Result<(), ConfigError> {
    if value.bytes().all(|b| (0x21..0x7f).contains(&b)) {
        Ok(())
    } else {
        Err(invalid(
            key,
            format!("{value:?} must be printable ASCII without spaces"),
        ))
    }
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

fn parse_http_url(key: &str, value: &str) -> Result<String, ConfigError> {
    let uri: Uri = value
        .parse()
        .map_err(|e| invalid(key, format!("invalid URL {value:?}: {e}")))?;
    match uri.scheme_str() {
        Some("http") | Some("https") if uri.host().is_some() => Ok(value.to_string()),
        _ => Err(invalid(
            key,
            format!("{value:?} must be an http:// or https:// URL"),
        )),
    }
}

/// An absolute `https://` URL with a host.
fn https_url(key: &str, value: &str) -> Result<(), ConfigError> {
    let uri: Uri = value
        .parse()
        .map_err(|e| invalid(key, format!("invalid URL {value:?}: {e}")))?;
    match uri.scheme_str() {
        Some("https") if uri.host().is_some_and(|h| !h.is_empty()) => Ok(()),
        _ => Err(invalid(
            key,
            format!("{value:?} must be a path on this site or an https:// URL"),
        )),
    }
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
        let launch = self.launch.validate()?;
        let issuers = validate_issuers(self.issuers)?;
        let keys = self.keys.validate()?;
        let replay = self.replay.validate()?;
        let timeouts = Timeouts {
            request_headers: positive("timeouts.request_headers", &self.timeouts.request_headers)?,
            upstream_connect: positive(
                "timeouts.upstream_connect",
                &self.timeouts.upstream_connect,
            )?,
            idle: positive("timeouts.idle", &self.timeouts.idle)?,
            request_body: positive("timeouts.request_body", &self.timeouts.request_body)?,
            upstream_response: positive(
                "timeouts.upstream_response",
                &self.timeouts.upstream_response,
            )?,
        };
        let limits = self.limits.validate()?;
        let module = self.module.validate(&launch)?;
        let introspection = self.introspection.validate(&issuers, &module)?;
        let session = self.session.validate(&launch)?;
        let tls = match (self.tls.cert_file, self.tls.key_file) {
            (None, None) => None,
            (Some(cert_file), Some(key_file)) => Some(load_tls(cert_file, key_file)?),
            (Some(_), None) => {
                return Err(invalid(
                    "tls.key_file",
                    "is required when tls.cert_file is set",
                ));
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "tls.cert_file",
                    "is required when tls.key_file is set",
                ));
            }
        };
        Ok(Config {
            listen,
            admin_listen,
            upstream,
            shutdown_grace,
            workers,
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
            file: None,
            sources: BTreeMap::new(),
        })
    }
}

fn load_tls(cert_file: PathBuf, key_file: PathBuf) -> Result<TlsConfig, ConfigError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_file)
        .and_then(|iter| iter.collect())
        .map_err(|e| invalid("tls.cert_file", format!("{}: {e}", cert_file.display())))?;
    if certs.is_empty() {
        return Err(invalid(
            "tls.cert_file",
            format!("{}: no certificate found", cert_file.display()),
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&key_file)
        .map_err(|e| invalid("tls.key_file", format!("{}: {e}", key_file.display())))?;
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut server_config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid("tls.cert_file", e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| invalid("tls.key_file", format!("does not match tls.cert_file: {e}")))?;
    server_config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsConfig {
        cert_file,
        key_file,
        server_config: std::sync::Arc::new(server_config),
    })
}

impl RawLimits {
    fn validate(self) -> Result<Limits, ConfigError> {
        let max_connections = match self.max_connections {
            None => default_max_connections(crate::overload::open_files_limit()),
            Some(n) if (1..=MAX_CONNECTIONS).contains(&n) => n as usize,
            Some(n) => {
                return Err(invalid(
                    "limits.max_connections",
                    format!("{n} is out of range (1 to {MAX_CONNECTIONS})"),
                ));
            }
        };
        let max_memory = match self.max_memory.as_deref().map(str::trim) {
            None => crate::overload::cgroup_memory_max(),
            Some("off") => None,
            Some(value) => {
                let bytes = parse_size("limits.max_memory", value)?;
                if bytes == 0 {
                    return Err(invalid(
                        "limits.max_memory",
                        "must be larger than zero (or \"off\")",
                    ));
                }
                Some(bytes as u64)
            }
        };
        Ok(Limits {
            max_connections,
            max_memory,
        })
    }
}

fn positive(key: &str, value: &str) -> Result<Duration, ConfigError> {
    let d = parse_duration(key, value)?;
    if d.is_zero() {
        return Err(invalid(key, "must be longer than zero"));
    }
    Ok(d)
}

impl RawLaunch {
    fn validate(self) -> Result<LaunchConfig, ConfigError> {
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

fn validate_issuers(raw: Vec<RawIssuer>) -> Result<Vec<IssuerConfig>, ConfigError> {
    if raw.is_empty() {
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

/// Read the key files of `key`, with each key's kid (configured, or its thumbprint).
fn load_key_files(
    key: &str,
    files: Vec<RawKeyFile>,
    needs: impl Fn(&SigningKey) -> Result<(), String>,
) -> Result<Vec<ModuleKeyFile>, ConfigError> {
    let mut out: Vec<ModuleKeyFile> = Vec::with_capacity(files.len());
    for (i, entry) in files.into_iter().enumerate() {
        let (file, kid) = match entry {
            RawKeyFile::Path(file) => (file, None),
            RawKeyFile::Entry(e) => (e.file, e.kid),
        };
        let at = format!("{key}[{i}]");
        let pem =
            std::fs::read(&file).map_err(|e| invalid(&at, format!("{}: {e}", file.display())))?;
        let parsed = SigningKey::from_pem(&pem)
            .map_err(|e| invalid(&at, format!("{}: {e}", file.display())))?;
        needs(&parsed).map_err(|e| invalid(&at, format!("{}: {e}", file.display())))?;
        let kid = match kid {
            Some(kid) if kid.is_empty() => return Err(invalid(&at, "kid must not be empty")),
            Some(kid) => kid,
            None => parsed.thumbprint(),
        };
        if out.iter().any(|k| k.kid == kid) {
            return Err(invalid(&at, format!("kid {kid:?} is used twice")));
        }
        out.push(ModuleKeyFile { file, pem, kid });
    }
    Ok(out)
}

/// The public half of a loaded key (kty and n, e or crv, x, y): two files hold the same key
/// when these are equal, whatever their names or PEM layout.
fn public_material(file: &ModuleKeyFile) -> Option<serde_json::Value> {
    let mut jwk = SigningKey::from_pem(&file.pem).ok()?.public_jwk("", None);
    let map = jwk.as_object_mut()?;
    map.remove("kid");
    map.remove("use");
    Some(jwk)
}

/// A key either signs (client assertions) or decrypts (HTI:jwe), never both: one key for two
/// purposes lets an answer of one protocol be read as the other (RFC 7517 4.2, `use`).
fn refuse_shared_keys(
    signing: &[ModuleKeyFile],
    decryption: &[ModuleKeyFile],
) -> Result<(), ConfigError> {
    let signing: Vec<Option<serde_json::Value>> = signing.iter().map(public_material).collect();
    for (i, file) in decryption.iter().enumerate() {
        let Some(material) = public_material(file) else {
            continue;
        };
        if let Some(j) = signing.iter().position(|s| s.as_ref() == Some(&material)) {
            return Err(invalid(
                format!("module.decryption_key_files[{i}]"),
                format!(
                    "{} is the same key as module.signing_key_files[{j}]; a key may sign or \
                     decrypt, not both: give each purpose its own key",
                    file.file.display()
                ),
            ));
        }
    }
    Ok(())
}

impl RawModule {
    fn validate(self, launch: &LaunchConfig) -> Result<ModuleConfig, ConfigError> {
        if let Some(id) = &self.client_id {
            if id.is_empty() {
                return Err(invalid("module.client_id", "must not be empty"));
            }
            header_safe("module.client_id", id)?;
        }
        let signing_keys =
            load_key_files("module.signing_key_files", self.signing_key_files, |_| {
                Ok(())
            })?;
        if self.generate && !signing_keys.is_empty() {
            return Err(invalid(
                "module.generate",
                "cannot be combined with module.signing_key_files",
            ));
        }
        let decryption_keys = load_key_files(
            "module.decryption_key_files",
            self.decryption_key_files,
            |k| {
                if k.fits(Alg::RS256) {
                    Ok(())
                } else {
                    Err("JWE decryption keys must be RSA keys (RSA-OAEP)".into())
                }
            },
        )?;
        refuse_shared_keys(&signing_keys, &decryption_keys)?;
        if let Some(path) = &self.jwks_path {
            if !path.starts_with('/') || path.contains('?') || path.contains('#') {
                return Err(invalid(
                    "module.jwks_path",
                    format!("{path:?} must be a path starting with '/' without query"),
                ));
            }
            normal_path("module.jwks_path", path)?;
            if launch.paths.contains(path) {
                return Err(invalid(
                    "module.jwks_path",
                    "must differ from every launch path",
                ));
            }
        }
        Ok(ModuleConfig {
            client_id: self.client_id,
            signing_keys,
            generate: self.generate,
            decryption_keys,
            jwks_path: self.jwks_path,
            jwks_max_age: parse_duration("module.jwks_max_age", &self.jwks_max_age)?,
        })
    }
}

impl RawIntrospection {
    fn validate(
        self,
        issuers: &[IssuerConfig],
        module: &ModuleConfig,
    ) -> Result<Option<IntrospectionConfig>, ConfigError> {
        let used = self.all_issuers || issuers.iter().any(IssuerConfig::introspected);
        let configured = self.endpoint.is_some() || self.fhir_base.is_some();
        if !used {
            if configured {
                return Err(invalid(
                    "introspection",
                    "is configured but no issuer has introspect = true (and all_issuers is false)",
                ));
            }
            return Ok(None);
        }
        let assertion_audience = match self.assertion_audience.as_str() {
            "token_endpoint" => AssertionAudience::TokenEndpoint,
            "introspection_endpoint" => AssertionAudience::IntrospectionEndpoint,
            other => {
                return Err(invalid(
                    "introspection.assertion_audience",
                    format!("{other:?}: use \"token_endpoint\" or \"introspection_endpoint\""),
                ));
            }
        };
        let endpoints = match (self.endpoint, self.fhir_base) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "introspection.fhir_base",
                    "set either introspection.endpoint or introspection.fhir_base (discovery), not both",
                ));
            }
            (Some(endpoint), None) => {
                let introspection = parse_http_url("introspection.endpoint", &endpoint)?;
                let token = self
                    .token_endpoint
                    .map(|t| parse_http_url("introspection.token_endpoint", &t))
                    .transpose()?;
                if token.is_none() && assertion_audience == AssertionAudience::TokenEndpoint {
                    return Err(invalid(
                        "introspection.token_endpoint",
                        "is required when the client assertion's audience is the token endpoint (introspection.assertion_audience)",
                    ));
                }
                IntrospectionEndpoints::Configured {
                    introspection,
                    token,
                }
            }
            (None, Some(fhir_base)) => {
                if self.token_endpoint.is_some() {
                    return Err(invalid(
                        "introspection.token_endpoint",
                        "is discovered from introspection.fhir_base; set it only with introspection.endpoint",
                    ));
                }
                IntrospectionEndpoints::Discovered {
                    fhir_base: parse_http_url("introspection.fhir_base", &fhir_base)?,
                }
            }
            (None, None) => {
                return Err(invalid(
                    "introspection.endpoint",
                    "is required (or introspection.fhir_base, to discover it) when an issuer has introspect = true",
                ));
            }
        };
        let client_id = module.client_id.clone().ok_or_else(|| {
            invalid(
                "module.client_id",
                "is required for introspection (the module's client_id in the domain)",
            )
        })?;
        let assertion_alg = Alg::from_name(&self.assertion_alg).ok_or_else(|| {
            invalid(
                "introspection.assertion_alg",
                format!(
                    "{:?} is not a supported signature algorithm",
                    self.assertion_alg
                ),
            )
        })?;
        match module.signing_keys.first() {
            Some(first) => {
                let key = SigningKey::from_pem(&first.pem)
                    .map_err(|e| invalid("module.signing_key_files[0]", e.to_string()))?;
                if !key.fits(assertion_alg) {
                    return Err(invalid(
                        "introspection.assertion_alg",
                        format!(
                            "{assertion_alg} does not fit the first signing key ({})",
                            key.describe()
                        ),
                    ));
                }
            }
            None if module.generate => {}
            None => {
                return Err(invalid(
                    "module.signing_key_files",
                    "a signing key is required for introspection client assertions (or module.generate = true)",
                ));
            }
        }
        Ok(Some(IntrospectionConfig {
            endpoints,
            assertion_audience,
            assertion_alg,
            all_issuers: self.all_issuers,
            timeout: positive("introspection.timeout", &self.timeout)?,
            client_id,
        }))
    }
}

/// A base64 secret of at least 32 bytes, from the value or from a file.
fn session_secret(
    key: &str,
    file_key: &str,
    value: Option<String>,
    file: Option<PathBuf>,
) -> Result<Option<Vec<u8>>, ConfigError> {
    use base64::Engine;
    let (text, at) = match (value, file) {
        (None, None) => return Ok(None),
        (Some(_), Some(_)) => {
            return Err(invalid(
                file_key,
                format!("set {key} or {file_key}, not both"),
            ));
        }
        (Some(text), None) => (text, key),
        (None, Some(path)) => (
            std::fs::read_to_string(&path)
                .map_err(|e| invalid(file_key, format!("{}: {e}", path.display())))?,
            file_key,
        ),
    };
    let text = text.trim();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .or_else(|_| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text.trim_end_matches('='))
        })
        .map_err(|_| invalid(at, "must be base64 (e.g. from `openssl rand -base64 32`)"))?;
    if bytes.len() < 32 {
        return Err(invalid(
            at,
            format!("holds {} bytes; at least 32 are required", bytes.len()),
        ));
    }
    Ok(Some(bytes))
}

fn path_prefixes(key: &str, list: &[String]) -> Result<(), ConfigError> {
    for p in list {
        normal_path(key, p)?;
    }
    Ok(())
}

/// A path as requests are matched: starting with '/', in normal form (requests are
/// normalised before matching, so a path that is not would never match).
fn normal_path(key: &str, p: &str) -> Result<(), ConfigError> {
    if !p.starts_with('/') {
        return Err(invalid(key, format!("{p:?} must start with '/'")));
    }
    match crate::path::normalize(p) {
        Ok(normal) if normal == p => Ok(()),
        Ok(normal) => Err(invalid(
            key,
            format!("{p:?} is not in normal form (requests are matched as {normal:?})"),
        )),
        Err(e) => Err(invalid(key, format!("{p:?}: {}", e.detail()))),
    }
}

/// A same-origin path for a redirect: starts with one '/', and neither `//` nor `/\` (which
/// browsers read as another host), no control bytes or spaces.
fn same_origin_path(key: &str, p: &str) -> Result<(), ConfigError> {
    let b = p.as_bytes();
    if b.first() != Some(&b'/') || matches!(b.get(1), Some(b'/' | b'\\')) {
        return Err(invalid(
            key,
            format!("{p:?} must be a path on this site: starting with one '/', not '//' or '/\\'"),
        ));
    }
    if b.iter().any(|&c| c <= b' ' || c == 0x7f || c == b'\\') {
        return Err(invalid(
            key,
            format!("{p:?} holds a space, a control byte or a backslash"),
        ));
    }
    Ok(())
}

impl RawSession {
    fn validate(self, launch: &LaunchConfig) -> Result<Option<SessionConfig>, ConfigError> {
        let secret = session_secret(
            "session.secret",
            "session.secret_file",
            self.secret,
            self.secret_file,
        )?;
        let previous_secret = session_secret(
            "session.previous_secret",
            "session.previous_secret_file",
            self.previous_secret,
            self.previous_secret_file,
        )?;
        if !self.enabled {
            return Ok(None);
        }
        if self.cookie_name.is_empty()
            || !self
                .cookie_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        {
            return Err(invalid(
                "session.cookie_name",
                "must be letters, digits, '_', '-' or '.'",
            ));
        }
        let same_site = match self.same_site.to_ascii_lowercase().as_str() {
            "lax" => SameSite::Lax,
            "strict" => SameSite::Strict,
            "none" => SameSite::None,
            other => {
                return Err(invalid(
                    "session.same_site",
                    format!("{other:?}: use \"lax\", \"strict\" or \"none\""),
                ));
            }
        };
        if same_site == SameSite::None && !self.secure {
            return Err(invalid(
                "session.secure",
                "must be true with session.same_site = \"none\" (browsers drop such cookies otherwise)",
            ));
        }
        same_origin_path("session.landing", &self.landing)?;
        path_prefixes("session.protected", &self.protected)?;
        path_prefixes("session.public", &self.public)?;
        normal_path("session.logout_path", &self.logout_path)?;
        if launch
            .paths
            .iter()
            .any(|p| crate::path::same(p, &self.logout_path, self.case_insensitive_paths))
        {
            return Err(invalid("session.logout_path", "must not be a launch path"));
        }
        if let Some(to) = &self.logged_out {
            if to.starts_with('/') {
                same_origin_path("session.logged_out", to)?;
            } else {
                https_url("session.logged_out", to)?;
            }
        }
        let ttl = positive("session.ttl", &self.ttl)?;
        let idle_timeout = positive("session.idle_timeout", &self.idle_timeout)?;
        Ok(Some(SessionConfig {
            cookie_name: self.cookie_name,
            secure: self.secure,
            same_site,
            landing: self.landing,
            protected: self.protected,
            public: self.public,
            ttl,
            idle_timeout,
            secret,
            previous_secret,
            logout_path: self.logout_path,
            logged_out: self.logged_out,
            case_insensitive_paths: self.case_insensitive_paths,
            binding: launch.audience.join(" "),
        }))
    }
}

impl RawKeys {
    fn validate(self) -> Result<KeysConfig, ConfigError> {
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

impl RawReplay {
    fn validate(self) -> Result<ReplayConfig, ConfigError> {
        let store = match self.store.as_str() {
            "memory" => ReplayStoreKind::Memory,
            "redis" => {
                match &self.redis_url {
                    None => {
                        return Err(invalid(
                            "replay.redis_url",
                            "is required when replay.store = \"redis\"",
                        ));
                    }
                    Some(url) if !(url.starts_with("redis://") || url.starts_with("rediss://")) => {
                        return Err(invalid(
                            "replay.redis_url",
                            "must start with redis:// or rediss:// (TLS)",
                        ));
                    }
                    Some(url) => {
                        redis::Client::open(url.as_str()).map_err(|e| {
                            invalid("replay.redis_url", format!("not a usable Redis URL: {e}"))
                        })?;
                    }
                }
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
            redis_url: self.redis_url,
            redis_timeout,
            key_prefix: self.key_prefix,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The smallest valid configuration, for unit tests.
    pub(crate) const MINIMAL: &str = r#"
        upstream = "http://127.0.0.1:3000"
        [launch]
        audience = "Device/1"
        [[issuers]]
        iss = "https://portal.example"
        jwks_url = "https://portal.example/jwks"
    "#;

    #[test]
    fn minimal_config_gets_contract_defaults() {
        let c = Config::from_toml_str(MINIMAL).unwrap();
        assert_eq!(c.listen, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(c.admin_listen, "0.0.0.0:9090".parse().unwrap());
        assert_eq!(c.launch.paths, vec!["/launch"]);
        assert_eq!(c.launch.token_fields, vec!["token", "launch"]);
        assert_eq!(c.launch.methods, vec![Method::POST]);
        assert_eq!(c.launch.max_lifetime, Duration::from_secs(300));
        assert_eq!(c.launch.clock_skew, Duration::from_secs(30));
        assert_eq!(c.launch.max_body, 64 * 1024);
        assert_eq!(c.issuers[0].algorithms.len(), 9);
        assert_eq!(c.replay.max_entries, 1_000_000);
        assert_eq!(c.keys.refresh_max, Duration::from_secs(3600));
        assert_eq!(c.shutdown_grace, Duration::from_secs(20));
        assert_eq!(
            c.workers,
            std::thread::available_parallelism().map_or(1, |n| n.get())
        );
        assert!(c.tls.is_none());
        let four = Config::from_toml_str(&format!("workers = 4\n{MINIMAL}")).unwrap();
        assert_eq!(four.workers, 4);
    }

    fn err(text: &str) -> String {
        Config::from_toml_str(text).unwrap_err().to_string()
    }

    #[test]
    fn redirects_stay_on_this_site_and_paths_are_normal() {
        let session = |extra: &str| format!("{MINIMAL}\n[session]\nenabled = true\n{extra}");
        for (extra, key) in [
            ("landing = \"//evil.example/x\"", "session.landing"),
            ("landing = \"/\\\\evil.example\"", "session.landing"),
            ("landing = \"https://evil.example/\"", "session.landing"),
            ("landing = \"evil\"", "session.landing"),
            ("landing = \"/a b\"", "session.landing"),
            ("logged_out = \"//evil.example\"", "session.logged_out"),
            ("logged_out = \"/\\\\evil.example\"", "session.logged_out"),
            (
                "logged_out = \"http://portal.example/\"",
                "session.logged_out",
            ),
            ("logged_out = \"javascript:alert(1)\"", "session.logged_out"),
            ("logged_out = \"https://\"", "session.logged_out"),
            ("protected = [\"/a/../b\"]", "session.protected"),
            ("public = [\"//static/\"]", "session.public"),
            ("logout_path = \"/%6cogout\"", "session.logout_path"),
            (
                "logout_path = \"/LAUNCH\"\ncase_insensitive_paths = true",
                "session.logout_path",
            ),
        ] {
            let e = err(&session(extra));
            assert!(e.starts_with(key), "{extra}: {e}");
        }
        let ok = Config::from_toml_str(&session(
            "landing = \"/task/{resource_id}?p={patient_id}\"\nlogged_out = \"https://portal.example/home\"\ncase_insensitive_paths = true",
        ))
        .unwrap();
        let s = ok.session.unwrap();
        assert!(s.case_insensitive_paths);
        assert_eq!(s.binding, "Device/1");
        let ok = Config::from_toml_str(&session("logged_out = \"/bye\"")).unwrap();
        assert_eq!(ok.session.unwrap().logged_out.as_deref(), Some("/bye"));
        let e = err(&MINIMAL.replace("[launch]", "[launch]\npaths = [\"/a//launch\"]"));
        assert!(e.starts_with("launch.paths"), "{e}");
    }

    #[test]
    fn staying_up_defaults_and_limits() {
        let c = Config::from_toml_str(MINIMAL).unwrap();
        assert_eq!(c.timeouts.idle, Duration::from_secs(60));
        assert_eq!(c.timeouts.request_body, Duration::from_secs(30));
        assert_eq!(
            c.limits.max_connections,
            default_max_connections(crate::overload::open_files_limit())
        );
        assert_eq!(c.limits.max_memory, crate::overload::cgroup_memory_max());
        // The open-files limit lowers the default: half of what the reserve leaves.
        assert_eq!(default_max_connections(None), 10_000);
        assert_eq!(default_max_connections(Some(1024)), 480);
        assert_eq!(default_max_connections(Some(1_048_576)), 10_000);
        assert_eq!(default_max_connections(Some(16)), 1);
        let set = Config::from_toml_str(&format!(
            "{MINIMAL}\n[limits]\nmax_connections = 2\nmax_memory = \"1GiB\"\n\
             [timeouts]\nidle = \"5s\"\nrequest_body = \"2s\""
        ))
        .unwrap();
        assert_eq!(set.limits.max_connections, 2);
        assert_eq!(set.limits.max_memory, Some(1 << 30));
        assert_eq!(set.timeouts.idle, Duration::from_secs(5));
        assert_eq!(set.timeouts.request_body, Duration::from_secs(2));
        let off = Config::from_toml_str(&format!("{MINIMAL}\n[limits]\nmax_memory = \"off\""));
        assert_eq!(off.unwrap().limits.max_memory, None);
        for (text, key) in [
            ("[limits]\nmax_connections = 0", "limits.max_connections"),
            (
                "[limits]\nmax_connections = 2000000",
                "limits.max_connections",
            ),
            ("[limits]\nmax_memory = \"0\"", "limits.max_memory"),
            ("[limits]\nmax_memory = \"lots\"", "limits.max_memory"),
            ("[limits]\nmax_memory = \"1TiB\"", "limits.max_memory"),
            ("[limits]\nmax_files = 1", "limits.max_files"),
            ("[timeouts]\nidle = \"0s\"", "timeouts.idle"),
            (
                "[timeouts]\nrequest_body = \"never\"",
                "timeouts.request_body",
            ),
        ] {
            let message = err(&format!("{MINIMAL}\n{text}"));
            assert!(message.contains(key), "{key} not named in: {message}");
        }
    }

    #[test]
    fn errors_name_their_key() {
        let cases = [
            (
                format!("{MINIMAL}\n[keys]\nrefresh_min = \"soon\""),
                "keys.refresh_min",
            ),
            (format!("workers = 0\n{MINIMAL}"), "workers"),
            (format!("workers = 5000\n{MINIMAL}"), "workers"),
            (MINIMAL.replace("Device/1", ""), "launch.audience"),
            (
                MINIMAL.replace("https://portal.example/jwks", "ftp://x"),
                "issuers[0].jwks_url",
            ),
            (
                format!("{MINIMAL}\n[replay]\nstore = \"disk\""),
                "replay.store",
            ),
            (
                format!("{MINIMAL}\n[replay]\nstore = \"redis\""),
                "replay.redis_url",
            ),
            (
                format!("{MINIMAL}\n[replay]\nstore = \"redis\"\nredis_url = \"http://x\""),
                "replay.redis_url",
            ),
            (
                format!("{MINIMAL}\n[replay]\nredis_timeout = \"never\""),
                "replay.redis_timeout",
            ),
            (
                MINIMAL.replace("upstream = \"http://127.0.0.1:3000\"", ""),
                "upstream",
            ),
            (
                format!("{MINIMAL}\nalgorithms = [\"HS256\"]"),
                "issuers[0].algorithms",
            ),
            (
                format!("{MINIMAL}\nalgorithms = [\"none\"]"),
                "issuers[0].algorithms",
            ),
            (format!("{MINIMAL}\n[launch2]\nx = 1"), "launch2"),
            (
                MINIMAL.replace("[launch]", "[launch]\nmax_body = \"lots\""),
                "launch.max_body",
            ),
            (
                MINIMAL.replace("[launch]", "[launch]\nmethods = [\"PUT\"]"),
                "launch.methods",
            ),
            (
                MINIMAL.replace("[launch]", "[launch]\nbogus = 1"),
                "launch.bogus",
            ),
            (
                format!("{MINIMAL}\n[tls]\ncert_file = \"c.pem\""),
                "tls.key_file",
            ),
        ];
        for (text, key) in cases {
            let message = err(&text);
            assert!(message.contains(key), "{key} not named in: {message}");
        }
    }

    #[test]
    fn service_links_and_the_file_variable_are_not_configuration() {
        for key in [
            "config",
            "port",
            "port_8080_tcp_addr",
            "service_host",
            "service_port_http",
        ] {
            assert!(env_not_config(key), "{key}");
        }
        for key in ["listen", "launch__audience", "portal", "services"] {
            assert!(!env_not_config(key), "{key}");
        }
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("k", "64KiB").unwrap(), 65536);
        assert_eq!(parse_size("k", "1MiB").unwrap(), 1 << 20);
        assert_eq!(parse_size("k", "100").unwrap(), 100);
        assert_eq!(parse_size("k", "1GiB").unwrap(), 1 << 30);
        assert!(parse_size("k", "1TiB").is_err());
        assert_eq!(
            parse_duration("k", "500ms").unwrap(),
            Duration::from_millis(500)
        );
        assert!(parse_duration("k", "30").is_err());
    }

    #[test]
    fn keys_name_every_field() {
        let sections = [
            "launch",
            "keys",
            "replay",
            "timeouts",
            "limits",
            "tls",
            "module",
            "introspection",
            "session",
        ];
        let mut fields = std::collections::BTreeSet::new();
        for section in std::iter::once("").chain(sections) {
            let text = match section {
                "" => "bogus_key = 1".to_string(),
                s => format!("[{s}]\nbogus_key = 1"),
            };
            let error = Figment::from(Toml::string(&text))
                .extract::<RawConfig>()
                .unwrap_err();
            let expected = error
                .into_iter()
                .find_map(|e| match e.kind {
                    figment::error::Kind::UnknownField(_, expected) => Some(expected),
                    _ => None,
                })
                .unwrap_or_else(|| panic!("no unknown-field error for [{section}]"));
            for field in expected {
                match section {
                    "" if sections.contains(field) => {}
                    "" => {
                        fields.insert(field.to_string());
                    }
                    s => {
                        fields.insert(format!("{s}.{field}"));
                    }
                }
            }
        }
        let keys: std::collections::BTreeSet<String> = KEYS.iter().map(|k| k.to_string()).collect();
        assert_eq!(fields, keys);
    }

    #[test]
    fn a_key_may_not_both_sign_and_decrypt() {
        let dir = std::env::temp_dir().join(format!("hti-guard-shared-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let write = |name: &str, key: &SigningKey| {
            let path = dir.join(name);
            std::fs::write(&path, key.to_pem().unwrap()).unwrap();
            toml_quote(path.to_str().unwrap())
        };
        let shared = SigningKey::generate(Alg::RS256, 2048).unwrap();
        let other = SigningKey::generate(Alg::RS256, 2048).unwrap();
        let enc = SigningKey::generate(Alg::RS256, 2048).unwrap();
        // The same key under two file names: the material decides, not the name.
        let (sign, other, copy, enc) = (
            write("sign.pem", &other),
            write("shared.pem", &shared),
            write("copy-of-shared.pem", &shared),
            write("enc.pem", &enc),
        );
        let config = |decrypt: &str| {
            Config::from_toml_str(&format!(
                "{MINIMAL}\n[module]\nsigning_key_files = [{sign}, {other}]\n\
                 decryption_key_files = [{{ file = {enc}, kid = \"e1\" }}, \
                 {{ file = {decrypt}, kid = \"e2\" }}]\n"
            ))
        };
        let err = config(&copy).unwrap_err();
        let _ = config(&enc).expect("distinct keys are fine");
        let _ = std::fs::remove_dir_all(&dir);
        match err {
            ConfigError::Invalid { key, message } => {
                assert_eq!(key, "module.decryption_key_files[1]");
                assert!(message.contains("module.signing_key_files[1]"), "{message}");
                assert!(message.contains("copy-of-shared.pem"), "{message}");
                assert!(!message.contains("PRIVATE"), "{message}");
            }
            other => panic!("{other}"),
        }
    }

    fn toml_quote(value: &str) -> String {
        serde_json::to_string(value).unwrap()
    }

    #[test]
    fn sources_name_the_file_and_default_the_rest() {
        let c = Config::from_toml_str(MINIMAL).unwrap();
        assert_eq!(c.source("upstream"), &Source::Text);
        assert_eq!(c.source("launch.audience"), &Source::Text);
        assert_eq!(c.source("issuers"), &Source::Text);
        assert_eq!(c.source("launch.paths"), &Source::Default);
        assert_eq!(c.source("replay.redis_url"), &Source::Default);

        let dir = std::env::temp_dir().join(format!("hti-guard-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sources.toml");
        std::fs::write(&path, format!("{MINIMAL}\n[keys]\nmax_stale = \"2h\"")).unwrap();
        let loaded = Config::load(Some(&path), true);
        let _ = std::fs::remove_dir_all(&dir);
        let c = loaded.unwrap();
        assert_eq!(c.file.as_deref(), Some(path.as_path()));
        assert_eq!(c.source("keys.max_stale"), &Source::File(path.clone()));
        assert_eq!(c.source("keys.refresh_min"), &Source::Default);
        assert_eq!(
            Source::File(path.clone()).to_string(),
            format!("file {}", path.display())
        );
        assert_eq!(
            Source::Env("HTI_GUARD_LISTEN".into()).to_string(),
            "env HTI_GUARD_LISTEN"
        );
    }

    #[test]
    fn audience_may_be_a_list_and_upstream_a_prefix() {
        let text = MINIMAL
            .replace("\"Device/1\"", "[\"Device/1\", \"Device/2\"]")
            .replace("127.0.0.1:3000", "app:3000/base/");
        let c = Config::from_toml_str(&text).unwrap();
        assert_eq!(c.launch.audience, vec!["Device/1", "Device/2"]);
        assert_eq!(c.upstream.path_prefix, "/base");
    }
}
