//! Token introspection (Koppeltaal TOP-KT-021, RFC 7662): the domain's auth server vouches
//! for a token. The guard authenticates with a client assertion signed by the module's own
//! key (RFC 7523, private_key_jwt). The endpoints are configured, or discovered from the
//! FHIR base's `/.well-known/smart-configuration` and refreshed like key sets.

use std::sync::Arc;
use std::time::Instant;

use serde_json::{Map, Value};
use tokio::task::JoinHandle;

use crate::config::{AssertionAudience, IntrospectionConfig, IntrospectionEndpoints, KeysConfig};
use crate::error::{Reason, Rejection};
use crate::metrics::{IntrospectionOutcome, Metrics};
use crate::module_keys::ModuleKeys;
use crate::verify::smart::{self, Discovered, Failure, read_limited};

pub(crate) const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Where to introspect, and the audience of the client assertion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    pub introspection: String,
    pub token: Option<String>,
}

/// The endpoints a smart-configuration document names. Each must be https, or share
/// `fhir_base`'s origin (scheme, host and port): the guard sends the token and a client
/// assertion there, so a document (or whoever can change it) must not be able to point them
/// at a plain-http host elsewhere.
pub fn endpoints_from(
    doc: &Value,
    fhir_base: &str,
    needs_token: bool,
) -> Result<Endpoints, String> {
    let url_member = |name: &str| smart::endpoint(doc, name, fhir_base);
    let introspection = url_member("introspection_endpoint")?.ok_or("no introspection_endpoint")?;
    let token = url_member("token_endpoint")?;
    if token.is_none() && needs_token {
        return Err("no token_endpoint (the client assertion's audience)".into());
    }
    Ok(Endpoints {
        introspection,
        token,
    })
}

/// RFC 7662 response members that describe the token rather than being its claims.
const META: [&str; 5] = ["active", "scope", "client_id", "username", "token_type"];

/// The introspection client.
pub struct Introspector {
    cfg: IntrospectionConfig,
    keys_cfg: KeysConfig,
    module: Arc<ModuleKeys>,
    client: reqwest::Client,
    endpoints: Arc<Discovered<Endpoints>>,
    metrics: Arc<Metrics>,
}

fn unavailable(detail: impl Into<String>) -> Rejection {
    Rejection::new(Reason::IntrospectionUnavailable, detail.into())
}

impl Introspector {
    pub fn new(
        cfg: IntrospectionConfig,
        keys_cfg: KeysConfig,
        module: Arc<ModuleKeys>,
        metrics: Arc<Metrics>,
    ) -> Result<Introspector, String> {
        let client = super::http_client(cfg.timeout).map_err(|e| e.to_string())?;
        let endpoints = match &cfg.endpoints {
            IntrospectionEndpoints::Configured {
                introspection,
                token,
            } => Some(Endpoints {
                introspection: introspection.clone(),
                token: token.clone(),
            }),
            IntrospectionEndpoints::Discovered { .. } => None,
        };
        Ok(Introspector {
            cfg,
            keys_cfg,
            module,
            client,
            endpoints: Arc::new(Discovered::new(endpoints)),
            metrics,
        })
    }

    /// Whether `iss`es that are not configured go to the auth server too.
    pub fn all_issuers(&self) -> bool {
        self.cfg.all_issuers
    }

    fn current(&self) -> Option<Arc<Endpoints>> {
        self.endpoints.current()
    }

    /// Whether the endpoints are known (readiness).
    pub fn ready(&self) -> Result<(), String> {
        match self.current() {
            Some(_) => Ok(()),
            None => Err(match self.endpoints.last_error() {
                Some(e) => format!("introspection endpoint not discovered ({e})"),
                None => "introspection endpoint not discovered yet".into(),
            }),
        }
    }

    /// The smart-configuration URL, when the endpoints are discovered.
    fn discovery_url(&self) -> Option<(&str, String)> {
        let IntrospectionEndpoints::Discovered { fhir_base } = &self.cfg.endpoints else {
            return None;
        };
        Some((fhir_base, smart::discovery_url(fhir_base)))
    }

    /// Start discovery (when the endpoints come from `fhir_base`); abort the handle to stop.
    pub fn start(self: &Arc<Self>) -> Option<JoinHandle<()>> {
        let (fhir_base, url) = self.discovery_url()?;
        let fhir_base = fhir_base.to_owned();
        let needs_token = self.cfg.assertion_audience == AssertionAudience::TokenEndpoint;
        Some(self.endpoints.start(
            self.client.clone(),
            url,
            self.keys_cfg.clone(),
            move |doc| endpoints_from(doc, &fhir_base, needs_token),
            |endpoints: &Endpoints| {
                tracing::info!(
                    introspection = %endpoints.introspection,
                    token = endpoints.token.as_deref().unwrap_or("-"),
                    "introspection endpoints discovered"
                )
            },
        ))
    }

    /// Fetch the smart-configuration once.
    async fn discover(&self, fhir_base: &str, url: &str) -> Result<Endpoints, Failure> {
        let (doc, _) = smart::fetch(&self.client, url).await?;
        let needs_token = self.cfg.assertion_audience == AssertionAudience::TokenEndpoint;
        endpoints_from(&doc, fhir_base, needs_token).map_err(|error| Failure {
            error,
            answered: true,
        })
    }

    /// Ask the auth server about `token`. Only `"active": true` counts; the answer's claims
    /// (over the token's own, which the server has just vouched for) are returned for the
    /// HTI claim rules.
    pub async fn introspect(
        &self,
        token: &str,
        token_claims: &Map<String, Value>,
    ) -> Result<Map<String, Value>, Rejection> {
        let started = Instant::now();
        let result = self.request(token).await;
        let label = match &result {
            Ok(Some(_)) => IntrospectionOutcome::Active,
            Ok(None) => IntrospectionOutcome::Inactive,
            Err(_) => IntrospectionOutcome::Error,
        };
        self.metrics
            .introspection(label, started.elapsed().as_secs_f64());
        merge_answer(result?, token_claims)
    }

    /// One introspection request: `Some(answer)` when active, `None` when not.
    async fn request(&self, token: &str) -> Result<Option<Map<String, Value>>, Rejection> {
        let endpoints = self
            .current()
            .ok_or_else(|| unavailable("the introspection endpoint is not known yet"))?;
        match self
            .exchange(&endpoints, token)
            .await
            .map_err(unavailable)?
        {
            Exchange::Refused(status) => {
                tracing::error!(
                    %status,
                    endpoint = %endpoints.introspection,
                    client_id = %self.cfg.client_id,
                    "the auth server refused our client assertion: check module.client_id, the module's JWKS at module.jwks_path, and introspection.assertion_audience"
                );
                Err(unavailable(format!(
                    "our client assertion was refused ({status})"
                )))
            }
            Exchange::Answer(answer) => Ok(active(answer)),
        }
    }

    /// POST `token` with a fresh client assertion to the introspection endpoint.
    async fn exchange(&self, endpoints: &Endpoints, token: &str) -> Result<Exchange, String> {
        let audience = match self.cfg.assertion_audience {
            AssertionAudience::TokenEndpoint => endpoints
                .token
                .as_deref()
                .unwrap_or(&endpoints.introspection),
            AssertionAudience::IntrospectionEndpoint => &endpoints.introspection,
        };
        let assertion = self
            .module
            .client_assertion(&self.cfg.client_id, audience, self.cfg.assertion_alg)
            .map_err(|e| format!("cannot sign the client assertion: {e}"))?;
        let body = form_urlencoded::Serializer::new(String::new())
            .append_pair("token", token)
            .append_pair("client_assertion_type", ASSERTION_TYPE)
            .append_pair("client_assertion", &assertion)
            .finish();
        let response = self
            .client
            .post(&endpoints.introspection)
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(http::header::ACCEPT, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    "introspection timed out".to_string()
                } else {
                    format!("introspection request failed: {e}")
                }
            })?;
        let status = response.status();
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::BAD_REQUEST
        {
            return Ok(Exchange::Refused(status));
        }
        if !status.is_success() {
            return Err(format!("introspection answered {status}"));
        }
        let body = read_limited(response).await?;
        parse_answer(&body).map(Exchange::Answer)
    }

    /// For `hti-guard check`: discover the endpoints (when they come from `fhir_base`), then
    /// introspect a token that no auth server can find active, with a real client assertion,
    /// through the same code a launch uses. `{"active": false}` back means the endpoint
    /// answers and accepts the module's assertion; nothing of a person is sent.
    pub async fn probe(&self) -> Probe {
        let mut probe = Probe::default();
        let endpoints = match self.discovery_url() {
            Some((fhir_base, url)) => {
                probe.discovery_url = Some(url.clone());
                match self.discover(fhir_base, &url).await {
                    Ok(endpoints) => endpoints,
                    Err(Failure { error, answered }) => {
                        let kind = if answered {
                            "discovery_failed"
                        } else {
                            "discovery_unreachable"
                        };
                        probe.problem = Some((kind, error));
                        return probe;
                    }
                }
            }
            None => match self.current() {
                Some(endpoints) => (*endpoints).clone(),
                None => {
                    probe.problem = Some(("discovery_failed", "no endpoint configured".into()));
                    return probe;
                }
            },
        };
        probe.introspection_endpoint = Some(endpoints.introspection.clone());
        probe.token_endpoint = endpoints.token.clone();
        probe.problem = match self.exchange(&endpoints, PROBE_TOKEN).await {
            Ok(Exchange::Answer(answer)) => match answer.get("active") {
                Some(Value::Bool(false)) => {
                    probe.answer = Some("active: false (the client assertion was accepted)".into());
                    None
                }
                other => Some((
                    "unexpected_answer",
                    format!("a probe token that cannot be valid got \"active\": {other:?}"),
                )),
            },
            Ok(Exchange::Refused(status)) => Some((
                "assertion_refused",
                format!(
                    "the auth server refused the client assertion ({status}): check \
                     module.client_id, the module's JWKS at module.jwks_path (served by the \
                     running guard), and introspection.assertion_audience"
                ),
            )),
            // A 4xx is an answer (a wrong endpoint); no connection, a timeout or a 5xx is not.
            Err(error) if error.starts_with("introspection answered 4") => {
                Some(("introspection_failed", error))
            }
            Err(error) => Some(("introspection_unreachable", error)),
        };
        probe
    }
}

/// The token `check` introspects: not a JWT, so no auth server can find it active.
const PROBE_TOKEN: &str = "hti-guard-check-probe";

/// An introspection endpoint's 200 body: a JSON object.
pub(crate) fn parse_answer(body: &[u8]) -> Result<Map<String, Value>, String> {
    match serde_json::from_slice(body) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err("introspection answer is not a JSON object".into()),
    }
}

/// The answer when it says `"active": true`; only that counts.
pub(crate) fn active(answer: Map<String, Value>) -> Option<Map<String, Value>> {
    match answer.get("active") {
        Some(Value::Bool(true)) => Some(answer),
        _ => None,
    }
}

/// The claims the HTI rules judge for an introspected token: the token's own, overlaid
/// with an active `answer`'s (its RFC 7662 members left out); `inactive` when there is no
/// active answer, `invalid_claim` when the answer names another `iss` or `jti`.
pub(crate) fn merge_answer(
    answer: Option<Map<String, Value>>,
    token_claims: &Map<String, Value>,
) -> Result<Map<String, Value>, Rejection> {
    let Some(answer) = answer else {
        return Err(Rejection::new(
            Reason::IntrospectionInactive,
            "the auth server says the token is not active",
        ));
    };
    // The answer describes this token: one that names another issuer or jti would put a
    // portal in `X-HTI-Iss` that did not sign it, or dodge the replay check, which is keyed
    // on the token's own `iss` and `jti`.
    for name in ["iss", "jti"] {
        if let Some(said) = answer.get(name)
            && token_claims.get(name) != Some(said)
        {
            return Err(Rejection::new(
                Reason::InvalidClaim,
                format!("the introspection answer's {name} is not the token's"),
            ));
        }
    }
    let mut claims = token_claims.clone();
    for (name, value) in answer {
        if !META.contains(&name.as_str()) {
            claims.insert(name, value);
        }
    }
    Ok(claims)
}

/// How the introspection endpoint answered a request.
enum Exchange {
    /// 401 or 400: the auth server refused our client assertion.
    Refused(reqwest::StatusCode),
    /// 200 with a JSON object.
    Answer(Map<String, Value>),
}

/// What `hti-guard check` found at the auth server.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Probe {
    /// The smart-configuration fetched, when the endpoints are discovered.
    pub discovery_url: Option<String>,
    pub introspection_endpoint: Option<String>,
    pub token_endpoint: Option<String>,
    /// What the introspection endpoint said to the probe, when all went well.
    pub answer: Option<String>,
    /// What went wrong: a stable kind (`discovery_failed`, `introspection_unreachable`,
    /// `assertion_refused`, `unexpected_answer`) and a message.
    pub problem: Option<(&'static str, String)>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn endpoints(base: &str, introspection: &str, token: &str) -> Result<Endpoints, String> {
        let doc = json!({"introspection_endpoint": introspection, "token_endpoint": token});
        endpoints_from(&doc, base, true)
    }

    #[test]
    fn discovered_endpoints_are_https_or_on_the_base_origin() {
        let base = "http://auth.internal:8080/fhir";
        for (introspection, token) in [
            (
                "http://auth.internal:8080/oauth2/introspect",
                "http://auth.internal:8080/t",
            ),
            (
                "https://elsewhere.example/introspect",
                "https://elsewhere.example/token",
            ),
            (
                "https://auth.internal:8080/i",
                "http://auth.internal:8080/t",
            ),
        ] {
            assert!(
                endpoints(base, introspection, token).is_ok(),
                "{introspection}"
            );
        }
        for (introspection, token) in [
            ("http://auth.internal:8081/i", "http://auth.internal:8080/t"),
            (
                "http://other.internal:8080/i",
                "http://auth.internal:8080/t",
            ),
            ("http://auth.internal:8080/i", "http://127.0.0.1:8080/t"),
            ("ftp://auth.internal:8080/i", "http://auth.internal:8080/t"),
            ("//auth.internal:8080/i", "http://auth.internal:8080/t"),
        ] {
            assert!(
                endpoints(base, introspection, token).is_err(),
                "{introspection} {token}"
            );
        }
        // The default port is the same origin, spelled or not.
        assert!(
            endpoints(
                "https://a.example/fhir",
                "https://a.example:443/i",
                "https://a.example/t"
            )
            .is_ok()
        );
        assert!(
            endpoints(
                "http://a.example/fhir",
                "http://a.example:80/i",
                "http://a.example/t"
            )
            .is_ok()
        );
        // An https base does not let a plain-http endpoint through, even on its host.
        assert!(
            endpoints(
                "https://a.example/fhir",
                "http://a.example/i",
                "https://a.example/t"
            )
            .is_err()
        );
    }

    #[test]
    fn a_missing_endpoint_is_named() {
        let base = "https://a.example/fhir";
        let doc = json!({"token_endpoint": "https://a.example/t"});
        assert_eq!(
            endpoints_from(&doc, base, true).unwrap_err(),
            "no introspection_endpoint"
        );
        let doc = json!({"introspection_endpoint": "https://a.example/i"});
        assert!(endpoints_from(&doc, base, true).is_err());
        assert!(endpoints_from(&doc, base, false).is_ok());
        let doc = json!({"introspection_endpoint": 5});
        assert!(endpoints_from(&doc, base, false).is_err());
    }
}
