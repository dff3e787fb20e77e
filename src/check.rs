//! `hti-guard check`: report the configuration that was loaded (every key, its value and
//! where the value came from), then fetch every issuer's key set once and report what the
//! guard would make of it, with each problem marked. Text for people, `--json` for machines.
//! The verdict comes from the guard's own fetch and JWK code, so it cannot disagree with it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use serde::Serialize;
use serde_json::{Value, json};

use crate::Config;
use crate::config::{
    AssertionAudience, IntrospectionConfig, IntrospectionEndpoints, IssuerConfig, ModuleKeyFile,
    SameSite, Source,
};
use crate::metrics::Metrics;
use crate::module_keys::ModuleKeys;
use crate::verify::Alg;
use crate::verify::introspect::Introspector;
use crate::verify::jwk::{KeyProblem, KeyType, VerifyKey};
use crate::verify::keys::{
    FetchError, Fetched, KeyCache, ResponseProblem, fetch_jwks, refresh_interval,
};

/// Options of `hti-guard check`.
#[derive(Debug, Args)]
pub struct CheckOptions {
    /// Validate only; fetch nothing.
    #[arg(long)]
    pub offline: bool,
    /// Print one JSON document instead of the text report.
    #[arg(long)]
    pub json: bool,
}

/// Print the report; exit 0 when everything checked is usable, 1 otherwise.
pub async fn run(config: Config, options: CheckOptions) -> ExitCode {
    crate::install_crypto_provider();
    let report = match check(&config, options.offline).await {
        Ok(report) => report,
        Err(message) => {
            eprintln!("hti-guard: {message}");
            return ExitCode::FAILURE;
        }
    };
    if options.json {
        match serde_json::to_string_pretty(&report) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("hti-guard: cannot write the report: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        print!("{}", report.text());
    }
    if report.usable {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Build the report: the configuration, then (unless `offline`) one fetch per issuer, all
/// issuers at once. Fails only when no HTTP client can be built.
pub async fn check(config: &Config, offline: bool) -> Result<Report, String> {
    let mut issuers: Vec<IssuerReport> = config
        .issuers
        .iter()
        .map(IssuerReport::configured)
        .collect();
    if !offline {
        let client = KeyCache::http_client(&config.keys)
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let fetches: Vec<_> = config
            .issuers
            .iter()
            .map(|issuer| {
                let client = client.clone();
                let url = issuer.jwks_url.clone()?;
                Some(tokio::spawn(async move { fetch_jwks(&client, &url).await }))
            })
            .collect();
        for ((report, issuer), fetch) in issuers.iter_mut().zip(&config.issuers).zip(fetches) {
            // Introspected issuers have no key set of their own to fetch.
            let Some(fetch) = fetch else {
                report.usable = Some(true);
                continue;
            };
            match fetch.await {
                Ok(result) => report.fetched(issuer, config, result),
                Err(e) => report.problem(Problem::new("unreachable", format!("fetch failed: {e}"))),
            }
        }
    }
    let introspection = match (&config.introspection, offline) {
        (Some(cfg), false) => Some(probe_introspection(config, cfg).await),
        _ => None,
    };
    let problems = issuers.iter().map(|i| i.problems.len()).sum::<usize>()
        + introspection.as_ref().map_or(0, |i| i.problems.len());
    let usable = issuers.iter().all(|i| i.usable != Some(false))
        && introspection.as_ref().is_none_or(|i| i.usable);
    Ok(Report {
        config: ConfigReport::new(config),
        offline,
        issuers,
        introspection,
        problems,
        usable,
    })
}

/// Discovery and one introspection request with a probe token, through the guard's own
/// introspection client (so the verdict cannot disagree with it).
async fn probe_introspection(config: &Config, cfg: &IntrospectionConfig) -> IntrospectionReport {
    let mut report = IntrospectionReport::default();
    let module = match ModuleKeys::load(&config.module, cfg.assertion_alg) {
        Ok(module) => Arc::new(module),
        Err(e) => {
            report.problem(Problem::new("no_module_key", e.to_string()));
            return report;
        }
    };
    let introspector = match Introspector::new(
        cfg.clone(),
        config.keys.clone(),
        module,
        Arc::new(Metrics::new()),
    ) {
        Ok(introspector) => introspector,
        Err(e) => {
            report.problem(Problem::new("client", e));
            return report;
        }
    };
    let probe = introspector.probe().await;
    report.discovery_url = probe.discovery_url;
    report.introspection_endpoint = probe.introspection_endpoint;
    report.token_endpoint = probe.token_endpoint;
    report.answer = probe.answer;
    match probe.problem {
        // A key made for this check is not the one the running guard publishes, so the
        // auth server cannot accept its assertion: that the endpoint answered is all we learn.
        Some(("assertion_refused", _)) if config.module.generate => {
            report.answer = Some(
                "refused the client assertion, as expected with module.generate (this \
                 check's key is not the running guard's): the endpoint answers"
                    .into(),
            );
        }
        Some((kind, message)) => report.problem(Problem::new(kind, message)),
        None => {}
    }
    report
}

/// What `check` found; serialized as is for `--json`.
#[derive(Debug, Serialize)]
pub struct Report {
    pub config: ConfigReport,
    /// Whether key sets were left unfetched (`--offline`).
    pub offline: bool,
    pub issuers: Vec<IssuerReport>,
    /// What discovery and a probe of the introspection endpoint found (not with `--offline`,
    /// and only when `[introspection]` is configured).
    pub introspection: Option<IntrospectionReport>,
    /// Problems found, over all issuers and introspection.
    pub problems: usize,
    /// Every issuer is usable (with `offline`: the configuration is valid).
    pub usable: bool,
}

/// The configuration as loaded.
#[derive(Debug, Serialize)]
pub struct ConfigReport {
    /// The file that was read, if any.
    pub file: Option<String>,
    /// Every key: its value and where the value came from.
    pub values: BTreeMap<&'static str, Setting>,
    /// The keys in report order (not serialized; `values` is keyed by name).
    #[serde(skip)]
    order: Vec<&'static str>,
}

/// One configuration key.
#[derive(Debug, Serialize)]
pub struct Setting {
    pub value: Value,
    /// "default", "file", "env" or "inline".
    pub source: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variable: Option<String>,
    /// The value as the text report shows it.
    #[serde(skip)]
    text: String,
    #[serde(skip)]
    source_text: String,
}

/// One issuer: what is configured and what its JWKS URL gave.
#[derive(Debug, Serialize)]
pub struct IssuerReport {
    pub iss: String,
    pub jwks_url: String,
    pub algorithms: Vec<&'static str>,
    /// Whether a key set was fetched and parsed.
    pub fetched: bool,
    pub status: Option<u16>,
    pub cache_control: Option<String>,
    pub max_age_seconds: Option<u64>,
    /// When the guard would fetch again: max-age clamped to [keys.refresh_min, keys.refresh_max].
    pub refresh_seconds: Option<f64>,
    pub keys: Vec<KeyReport>,
    pub problems: Vec<Problem>,
    /// At least one key can verify a launch (`null` with `--offline`).
    pub usable: Option<bool>,
    #[serde(skip)]
    refresh_text: Option<String>,
}

/// The auth server as the guard would use it.
#[derive(Debug, Serialize)]
pub struct IntrospectionReport {
    /// The smart-configuration fetched (when the endpoints come from `introspection.fhir_base`).
    pub discovery_url: Option<String>,
    pub introspection_endpoint: Option<String>,
    pub token_endpoint: Option<String>,
    /// How the introspection endpoint answered a probe token (not a JWT, so never active).
    pub answer: Option<String>,
    pub problems: Vec<Problem>,
    /// Launches can be introspected.
    pub usable: bool,
}

impl Default for IntrospectionReport {
    fn default() -> Self {
        IntrospectionReport {
            discovery_url: None,
            introspection_endpoint: None,
            token_endpoint: None,
            answer: None,
            problems: Vec::new(),
            usable: true,
        }
    }
}

impl IntrospectionReport {
    fn problem(&mut self, problem: Problem) {
        self.problems.push(problem);
        self.usable = false;
    }
}

/// A key the guard loaded.
#[derive(Debug, Serialize)]
pub struct KeyReport {
    pub kid: String,
    pub kty: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bits: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub curve: Option<&'static str>,
    pub alg: Option<&'static str>,
    #[serde(rename = "use")]
    pub key_use: Option<String>,
    /// The issuer's algorithms this key can verify; empty: the key is never used.
    pub verifies: Vec<&'static str>,
}

/// Something that keeps a key or an issuer from being used.
#[derive(Debug, Serialize)]
pub struct Problem {
    /// A stable name: `unreachable`, `http_status`, `too_large`, `bad_body`, `not_json`,
    /// `no_keys`, `no_usable_key`, `no_accepted_algorithm`, or a JWK problem kind such as
    /// `weak_rsa_key`, `not_for_signing`, `no_kid`, `duplicate_kid`, `unsupported_curve`.
    pub kind: &'static str,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kty: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    #[serde(rename = "use", skip_serializing_if = "Option::is_none")]
    pub key_use: Option<String>,
    /// Whether the problem is about one key (the text report names it).
    #[serde(skip)]
    about_key: bool,
}

impl Problem {
    fn new(kind: &'static str, message: impl Into<String>) -> Problem {
        Problem {
            kind,
            message: message.into(),
            kid: None,
            kty: None,
            alg: None,
            key_use: None,
            about_key: false,
        }
    }

    fn skipped_key(problem: &KeyProblem) -> Problem {
        Problem {
            kind: problem.kind.as_str(),
            message: problem.problem.clone(),
            kid: problem.kid.clone(),
            kty: problem.kty.clone(),
            alg: problem.alg.clone(),
            key_use: problem.key_use.clone(),
            about_key: true,
        }
    }

    /// `! key "k2" (RSA, alg RS256, use sig): RSA key of 1024 bits is too weak ...`
    fn text(&self) -> String {
        if !self.about_key {
            return format!("! {}", self.message);
        }
        let who = match &self.kid {
            Some(kid) => format!("key {kid:?}"),
            None => "key without kid".to_string(),
        };
        let mut said = Vec::new();
        if let Some(kty) = &self.kty {
            said.push(kty.clone());
        }
        if let Some(alg) = &self.alg {
            said.push(format!("alg {alg}"));
        }
        if let Some(key_use) = &self.key_use {
            said.push(format!("use {key_use}"));
        }
        if said.is_empty() {
            format!("! {who}: {}", self.message)
        } else {
            format!("! {who} ({}): {}", said.join(", "), self.message)
        }
    }
}

impl ConfigReport {
    fn new(config: &Config) -> ConfigReport {
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
    vec![
        ("listen", json!(config.listen.to_string())),
        (
            "upstream",
            json!(mask_secret(&config.upstream.url.to_string())),
        ),
        ("admin_listen", json!(config.admin_listen.to_string())),
        ("shutdown_grace", json!(duration(config.shutdown_grace))),
        ("workers", json!(config.workers)),
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
            "replay.redis_url",
            json!(config.replay.redis_url.as_deref().map(mask_secret)),
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
    ]
}

/// Secret files are not kept in the configuration; say whether one was configured.
fn source_file(config: &Config, key: &str) -> Option<&'static str> {
    (!matches!(config.source(key), Source::Default)).then_some("(set)")
}

/// Key files as `file (kid)`.
fn key_files(files: &[ModuleKeyFile]) -> Value {
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

/// The issuer's JWKS URL, or how it is verified instead.
fn jwks_url_text(issuer: &IssuerConfig) -> String {
    match &issuer.jwks_url {
        Some(url) => mask_secret(url),
        None => "(none: verified by token introspection)".into(),
    }
}

fn algorithm_names(algs: &[Alg]) -> Vec<&'static str> {
    algs.iter().map(|a| a.name()).collect()
}

impl IssuerReport {
    fn configured(issuer: &IssuerConfig) -> IssuerReport {
        IssuerReport {
            iss: issuer.iss.clone(),
            jwks_url: jwks_url_text(issuer),
            algorithms: algorithm_names(&issuer.algorithms),
            fetched: false,
            status: None,
            cache_control: None,
            max_age_seconds: None,
            refresh_seconds: None,
            keys: Vec::new(),
            problems: Vec::new(),
            usable: None,
            refresh_text: None,
        }
    }

    fn problem(&mut self, problem: Problem) {
        self.problems.push(problem);
        self.usable = Some(false);
    }

    /// Record one fetch: the response, each key, each problem, and the verdict.
    fn fetched(
        &mut self,
        issuer: &IssuerConfig,
        config: &Config,
        result: Result<Fetched, FetchError>,
    ) {
        // Error texts may quote the URL; never print its password.
        let unmask = |text: String| mask_secret(&text);
        let fetched = match result {
            Ok(fetched) => fetched,
            Err(FetchError::Timeout) => {
                let message = format!(
                    "unreachable: no response within {} (keys.fetch_timeout)",
                    duration(config.keys.fetch_timeout)
                );
                return self.problem(Problem::new("unreachable", message));
            }
            Err(FetchError::Unreachable(cause)) => {
                let message = unmask(format!("unreachable: {cause}"));
                return self.problem(Problem::new("unreachable", message));
            }
            Err(FetchError::Response {
                status,
                cache_control,
                problem,
            }) => {
                self.status = Some(status);
                self.cache_control = cache_control;
                let problem = match problem {
                    ResponseProblem::Status(code) if code.is_redirection() => Problem::new(
                        "http_status",
                        format!("HTTP {code}: redirects are not followed; configure the final URL"),
                    ),
                    ResponseProblem::Status(code) => Problem::new(
                        "http_status",
                        format!("HTTP {code}: the JWKS URL must answer 200 with the key set"),
                    ),
                    ResponseProblem::TooLarge => {
                        Problem::new("too_large", ResponseProblem::TooLarge.to_string())
                    }
                    ResponseProblem::Body(cause) => Problem::new(
                        "bad_body",
                        unmask(format!("reading the response failed: {cause}")),
                    ),
                    ResponseProblem::Jwks(crate::verify::jwk::JwksError::NotJson(cause)) => {
                        Problem::new(
                            "not_json",
                            format!("the response is not JSON ({cause}); is this the JWKS URL?"),
                        )
                    }
                    ResponseProblem::Jwks(crate::verify::jwk::JwksError::NoKeys) => Problem::new(
                        "no_keys",
                        "the response has no \"keys\" array: not a JWKS document",
                    ),
                };
                return self.problem(problem);
            }
        };
        self.fetched = true;
        self.status = Some(fetched.status);
        self.cache_control = fetched.cache_control;
        self.max_age_seconds = fetched.max_age.map(|d| d.as_secs());
        let refresh = refresh_interval(fetched.max_age, &config.keys);
        self.refresh_seconds = Some(refresh.as_secs_f64());
        self.refresh_text = Some(refresh_text(fetched.max_age, refresh, config));
        for key in &fetched.jwks.keys {
            let report = KeyReport::new(key, &issuer.algorithms);
            if report.verifies.is_empty() {
                let mut problem = Problem::new(
                    "no_accepted_algorithm",
                    format!(
                        "fits none of this issuer's algorithms ({}); it is never used",
                        self.algorithms.join(" ")
                    ),
                );
                problem.kid = Some(key.kid.clone());
                problem.kty = Some(report.kty.to_string());
                problem.alg = report.alg.map(str::to_string);
                problem.about_key = true;
                self.problems.push(problem);
            }
            self.keys.push(report);
        }
        for problem in &fetched.jwks.problems {
            self.problems.push(Problem::skipped_key(problem));
        }
        let usable = self.keys.iter().any(|k| !k.verifies.is_empty());
        if !usable {
            self.problems.push(Problem::new(
                "no_usable_key",
                "no usable key: every launch from this issuer would be refused",
            ));
        }
        self.usable = Some(usable);
    }
}

/// "1h (max-age 1d, lowered to keys.refresh_max)".
fn refresh_text(max_age: Option<Duration>, refresh: Duration, config: &Config) -> String {
    let every = duration(refresh);
    match max_age {
        None => format!("every {every} (no max-age: keys.refresh_min)"),
        Some(age) if age < config.keys.refresh_min => format!(
            "every {every} (max-age {}, raised to keys.refresh_min)",
            duration(age)
        ),
        Some(age) if age > config.keys.refresh_max => format!(
            "every {every} (max-age {}, lowered to keys.refresh_max)",
            duration(age)
        ),
        Some(_) => format!("every {every} (max-age)"),
    }
}

impl KeyReport {
    fn new(key: &VerifyKey, accepted: &[Alg]) -> KeyReport {
        let (kty, bits, curve) = match key.key_type {
            KeyType::Rsa { bits } => ("RSA", Some(bits), None),
            KeyType::Ec(curve) => ("EC", None, Some(curve.name())),
        };
        KeyReport {
            kid: key.kid.clone(),
            kty,
            bits,
            curve,
            alg: key.alg.map(Alg::name),
            key_use: key.key_use.clone(),
            verifies: accepted
                .iter()
                .filter(|alg| key.fits(**alg))
                .map(|alg| alg.name())
                .collect(),
        }
    }
}

impl Report {
    /// The report for people: aligned columns, problems marked with `!`, a verdict last.
    pub fn text(&self) -> String {
        let mut out = String::new();
        match &self.config.file {
            Some(file) => writeln!(out, "configuration (file {file})"),
            None => writeln!(
                out,
                "configuration (no file read: environment and defaults)"
            ),
        }
        .ok();
        let rows: Vec<[&str; 3]> = self
            .config
            .order
            .iter()
            .filter_map(|key| {
                let s = self.config.values.get(key)?;
                Some([*key, s.text.as_str(), s.source_text.as_str()])
            })
            .collect();
        table(&mut out, "  ", &rows, 40);

        for issuer in &self.issuers {
            let verdict = match issuer.usable {
                Some(true) => "  (usable)",
                Some(false) => "  (NOT usable)",
                None => "",
            };
            writeln!(out, "\nissuer {}{verdict}", issuer.iss).ok();
            let mut rows: Vec<[String; 2]> = vec![
                ["jwks_url".into(), issuer.jwks_url.clone()],
                ["algorithms".into(), issuer.algorithms.join(" ")],
            ];
            if self.offline {
                rows.push(["keys".into(), "not fetched (--offline)".into()]);
            } else {
                let status = issuer.status.map_or("(no response)".to_string(), |s| {
                    http::StatusCode::from_u16(s).map_or(s.to_string(), |c| c.to_string())
                });
                rows.push(["status".into(), status]);
                if issuer.status.is_some() {
                    let cache = issuer.cache_control.as_deref().unwrap_or("(none)");
                    rows.push(["cache-control".into(), cache.to_string()]);
                }
                if let Some(refresh) = &issuer.refresh_text {
                    rows.push(["refresh".into(), refresh.clone()]);
                }
                if issuer.fetched {
                    let usable = issuer
                        .keys
                        .iter()
                        .filter(|k| !k.verifies.is_empty())
                        .count();
                    let skipped = issuer.problems.iter().filter(|p| p.about_key).count();
                    rows.push([
                        "keys".into(),
                        format!("{usable} usable, {skipped} with problems"),
                    ]);
                }
            }
            for [label, value] in &rows {
                // One width for every issuer, so that the sections line up.
                writeln!(out, "  {label:<13}  {value}").ok();
            }
            if !issuer.keys.is_empty() {
                let mut keys: Vec<[String; 6]> = vec![[
                    "kid".into(),
                    "kty".into(),
                    "size".into(),
                    "alg".into(),
                    "use".into(),
                    "verifies".into(),
                ]];
                for key in &issuer.keys {
                    keys.push([
                        key.kid.clone(),
                        key.kty.into(),
                        match (key.bits, key.curve) {
                            (Some(bits), _) => bits.to_string(),
                            (None, Some(curve)) => curve.into(),
                            (None, None) => "-".into(),
                        },
                        key.alg.unwrap_or("-").into(),
                        key.key_use.clone().unwrap_or_else(|| "-".into()),
                        if key.verifies.is_empty() {
                            "(nothing)".into()
                        } else {
                            key.verifies.join(" ")
                        },
                    ]);
                }
                let keys: Vec<[&str; 6]> = keys
                    .iter()
                    .map(|row| std::array::from_fn(|i| row[i].as_str()))
                    .collect();
                table(&mut out, "    ", &keys, 0);
            }
            for problem in &issuer.problems {
                writeln!(out, "  {}", problem.text()).ok();
            }
        }

        if let Some(i) = &self.introspection {
            let verdict = if i.usable { "usable" } else { "NOT usable" };
            writeln!(out, "\nintrospection  ({verdict})").ok();
            let none = "(none)".to_string();
            let mut rows: Vec<[&str; 2]> = Vec::new();
            if let Some(url) = &i.discovery_url {
                rows.push(["discovery", url]);
            }
            rows.push([
                "endpoint",
                i.introspection_endpoint.as_ref().unwrap_or(&none),
            ]);
            rows.push(["token_endpoint", i.token_endpoint.as_ref().unwrap_or(&none)]);
            if let Some(answer) = &i.answer {
                rows.push(["answer", answer]);
            }
            for [label, value] in &rows {
                writeln!(out, "  {label:<13}  {value}").ok();
            }
            for problem in &i.problems {
                writeln!(out, "  {}", problem.text()).ok();
            }
        }

        let verdict = match (self.usable, self.offline, self.problems) {
            (true, true, _) => "configuration valid (--offline: key sets not fetched)".into(),
            (true, false, 0) => "usable".to_string(),
            (true, false, n) => format!("usable ({n} {}, see above)", plural(n)),
            (false, _, n) => format!("NOT usable ({n} {})", plural(n)),
        };
        writeln!(out, "\nresult: {verdict}").ok();
        out
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "problem" } else { "problems" }
}

/// Write rows with columns padded to the widest cell (at most `cap` wide when `cap` > 0;
/// a longer cell pushes the rest of its row only). The last column is not padded.
fn table<const N: usize>(out: &mut String, indent: &str, rows: &[[&str; N]], cap: usize) {
    let mut widths = [0usize; N];
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            let len = cell.chars().count();
            widths[i] = widths[i].max(if cap > 0 { len.min(cap) } else { len });
        }
    }
    for row in rows {
        let mut line = indent.to_string();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == N {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<width$}  ", width = widths[i]);
            }
        }
        writeln!(out, "{}", line.trim_end()).ok();
    }
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

    #[tokio::test]
    async fn offline_report_is_valid_without_fetching() {
        let config = Config::from_toml_str(MINIMAL).unwrap();
        let report = check(&config, true).await.unwrap();
        assert!(report.usable && report.offline);
        assert_eq!(report.issuers[0].usable, None);
        let text = report.text();
        assert!(text.contains("not fetched (--offline)"), "{text}");
        assert!(text.contains("launch.audience"), "{text}");
        assert!(text.ends_with("result: configuration valid (--offline: key sets not fetched)\n"));
    }
}
