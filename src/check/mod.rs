//! `hti-guard check`: report the configuration that was loaded (every key, its value and
//! where the value came from), then fetch every issuer's key set once and report what the
//! guard would make of it, with each problem marked. Text for people, `--json` for machines.
//! The verdict comes from the guard's own fetch and JWK code, so it cannot disagree with it.
//!
//! This file holds the entry point, the order of the steps and the report's shape;
//! `settings` lists every key, `issuers` fetches and judges each issuer's keys and probes
//! introspection and the SHOF auth server, `text` renders the report for people.

mod issuers;
mod settings;
mod text;
mod warnings;

use std::collections::BTreeMap;
use std::process::ExitCode;

use clap::Args;
use serde::Serialize;
use serde_json::Value;

use crate::Config;
use crate::verify::keys::{KeyCache, fetch_jwks};

pub use settings::{duration, mask_secret, size};
pub use warnings::{REPLICAS_ENV, Warning};

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

/// Print the report; exit 0 when everything checked is usable (warnings or not), 1 otherwise.
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
        (Some(cfg), false) => Some(issuers::probe_introspection(config, cfg).await),
        _ => None,
    };
    let shof = match (&config.shof, offline) {
        (Some(cfg), false) => Some(issuers::probe_shof(cfg).await),
        _ => None,
    };
    let replicas = std::env::var(REPLICAS_ENV).ok();
    let mut warnings = warnings::configured(config, replicas.as_deref());
    if let Some(message) = introspection.as_ref().and_then(|i| i.not_answering.clone()) {
        warnings.push(Warning::new(
            "introspection_not_answering",
            format!(
                "the introspection endpoint does not answer now ({message}): launches \
                 of introspected issuers will be refused until it does"
            ),
        ));
    }
    if let Some(message) = shof.as_ref().and_then(|s| s.not_answering.clone()) {
        warnings.push(Warning::new(
            "auth_server_not_answering",
            format!(
                "the SHOF auth server does not answer now ({message}): logins will be \
                 refused until it does"
            ),
        ));
    }
    let problems = issuers.iter().map(|i| i.problems.len()).sum::<usize>()
        + introspection.as_ref().map_or(0, |i| i.problems.len())
        + shof.as_ref().map_or(0, |s| s.problems.len());
    let usable = issuers.iter().all(|i| i.usable != Some(false))
        && introspection.as_ref().is_none_or(|i| i.usable)
        && shof.as_ref().is_none_or(|s| s.usable);
    Ok(Report {
        config: ConfigReport::new(config),
        offline,
        issuers,
        introspection,
        shof,
        problems,
        warnings,
        usable,
    })
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
    /// What the SHOF auth server's discovery and key set gave (not with `--offline`, and
    /// only with `shof.enabled`).
    pub shof: Option<ShofReport>,
    /// Problems found, over all issuers, introspection and the SHOF auth server.
    pub problems: usize,
    /// What will bite later (a secret that is random per process, a placeholder issuer,
    /// the memory store on several replicas, an endpoint that does not answer); they
    /// never change the exit code.
    pub warnings: Vec<Warning>,
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
    /// Nothing found wrong (an endpoint that does not answer is a warning instead).
    pub usable: bool,
    /// Discovery and the endpoint answered (false: see the warning).
    pub answered: bool,
    #[serde(skip)]
    not_answering: Option<String>,
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
            answered: true,
            not_answering: None,
        }
    }
}

/// The SHOF auth server as the guard would use it.
#[derive(Debug, Default, Serialize)]
pub struct ShofReport {
    /// The smart-configuration fetched.
    pub discovery_url: String,
    pub authorization_endpoint: Option<String>,
    pub token_endpoint: Option<String>,
    pub jwks_uri: Option<String>,
    pub issuer: Option<String>,
    /// Usable keys in the auth server's key set (id_token signatures).
    pub keys: Option<usize>,
    pub problems: Vec<Problem>,
    /// Nothing found wrong (a server that does not answer is a warning instead).
    pub usable: bool,
    /// Discovery and the key set answered (false: see the warning).
    pub answered: bool,
    #[serde(skip)]
    not_answering: Option<String>,
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::MINIMAL;

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
