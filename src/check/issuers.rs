//! Each issuer's key set, fetched once through the guard's own code and judged key by key,
//! and the probe of the introspection endpoint (discovery, then one request).

use std::sync::Arc;
use std::time::Duration;

use super::settings::{algorithm_names, duration, mask_secret};
use super::{IntrospectionReport, IssuerReport, KeyReport, Problem, ShofReport};
use crate::Config;
use crate::config::{IntrospectionConfig, IssuerConfig, ShofConfig};
use crate::jose::Alg;
use crate::jose::jwk::{KeyProblem, KeyType, VerifyKey};
use crate::metrics::Metrics;
use crate::module_keys::ModuleKeys;
use crate::verify::introspect::Introspector;
use crate::verify::keys::{FetchError, Fetched, ResponseProblem, fetch_jwks, refresh_interval};
use crate::verify::smart;

/// Discovery and one introspection request with a probe token, through the guard's own
/// introspection client (so the verdict cannot disagree with it).
pub(super) async fn probe_introspection(
    config: &Config,
    cfg: &IntrospectionConfig,
) -> IntrospectionReport {
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
        Some(("discovery_unreachable" | "introspection_unreachable", message)) => {
            report.answered = false;
            report.not_answering = Some(message);
        }
        Some((kind, message)) => report.problem(Problem::new(kind, message)),
        None => {}
    }
    report
}

/// The SHOF auth server through the guard's own discovery and key set code: the
/// smart-configuration, then the key set its `jwks_uri` names. Nothing of a person is sent.
pub(super) async fn probe_shof(cfg: &ShofConfig) -> ShofReport {
    let mut report = ShofReport {
        discovery_url: smart::discovery_url(&cfg.fhir_base),
        usable: true,
        answered: true,
        ..ShofReport::default()
    };
    let client = match reqwest::Client::builder()
        .timeout(cfg.timeout)
        .connect_timeout(cfg.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(client) => client,
        Err(e) => {
            report.problem(Problem::new("client", e.to_string()));
            return report;
        }
    };
    let server = match smart::fetch(&client, &report.discovery_url).await {
        Ok((doc, _)) => crate::shof::auth_server_from(&doc, &cfg.fhir_base),
        Err(failure) if !failure.answered => {
            report.answered = false;
            report.not_answering = Some(format!("discovery: {}", failure.error));
            return report;
        }
        Err(failure) => Err(failure.error),
    };
    let server = match server {
        Ok(server) => server,
        Err(e) => {
            report.problem(Problem::new("discovery_failed", e));
            return report;
        }
    };
    report.authorization_endpoint = Some(server.authorization_endpoint);
    report.token_endpoint = Some(server.token_endpoint);
    report.jwks_uri = Some(server.jwks_uri.clone());
    report.issuer = Some(server.issuer);
    match fetch_jwks(&client, &server.jwks_uri).await {
        Ok(fetched) => {
            let usable = fetched
                .jwks
                .keys
                .iter()
                .filter(|k| Alg::ALL.iter().any(|a| k.fits(*a)))
                .count();
            report.keys = Some(usable);
            for problem in &fetched.jwks.problems {
                report.problems.push(Problem::skipped_key(problem));
            }
            if usable == 0 {
                report.problem(Problem::new(
                    "no_usable_key",
                    "the auth server's key set holds no key that can verify an id_token",
                ));
            }
        }
        Err(e @ (FetchError::Timeout | FetchError::Unreachable(_))) => {
            report.answered = false;
            report.not_answering = Some(format!("key set: {e}"));
        }
        Err(e) => report.problem(Problem::new("jwks_unreachable", e.to_string())),
    }
    report
}

impl ShofReport {
    fn problem(&mut self, problem: Problem) {
        self.problems.push(problem);
        self.usable = false;
    }
}

impl IntrospectionReport {
    fn problem(&mut self, problem: Problem) {
        self.problems.push(problem);
        self.usable = false;
    }
}

impl Problem {
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
}

/// The issuer's JWKS URL, or how it is verified instead.
fn jwks_url_text(issuer: &IssuerConfig) -> String {
    match &issuer.jwks_url {
        Some(url) => mask_secret(url),
        None => "(none: verified by token introspection)".into(),
    }
}

impl IssuerReport {
    pub(super) fn configured(issuer: &IssuerConfig) -> IssuerReport {
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

    pub(super) fn problem(&mut self, problem: Problem) {
        self.problems.push(problem);
        self.usable = Some(false);
    }

    /// Record one fetch: the response, each key, each problem, and the verdict.
    pub(super) fn fetched(
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
                    ResponseProblem::Jwks(crate::jose::jwk::JwksError::NotJson(cause)) => {
                        Problem::new(
                            "not_json",
                            format!("the response is not JSON ({cause}); is this the JWKS URL?"),
                        )
                    }
                    ResponseProblem::Jwks(crate::jose::jwk::JwksError::NoKeys) => Problem::new(
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
