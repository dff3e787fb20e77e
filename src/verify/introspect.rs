//! Token introspection (Koppeltaal TOP-KT-021, RFC 7662): the domain's auth server vouches
//! for a token. The guard authenticates with a client assertion signed by the module's own
//! key (RFC 7523, private_key_jwt). The endpoints are configured, or discovered from the
//! FHIR base's `/.well-known/smart-configuration` and refreshed like key sets.

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use tokio::task::JoinHandle;

use crate::config::{AssertionAudience, IntrospectionConfig, IntrospectionEndpoints, KeysConfig};
use crate::error::{Reason, Rejection};
use crate::metrics::Metrics;
use crate::module::ModuleKeys;
use crate::verify::keys::{backoff, max_age, refresh_interval};

const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// The largest introspection or discovery response read.
const MAX_RESPONSE_BYTES: usize = 256 * 1024;

/// Where to introspect, and the audience of the client assertion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    pub introspection: String,
    pub token: Option<String>,
}

/// RFC 7662 response members that describe the token rather than being its claims.
const META: [&str; 5] = ["active", "scope", "client_id", "username", "token_type"];

/// The introspection client.
pub struct Introspector {
    cfg: IntrospectionConfig,
    keys_cfg: KeysConfig,
    module: Arc<ModuleKeys>,
    client: reqwest::Client,
    endpoints: RwLock<Option<Arc<Endpoints>>>,
    last_error: Mutex<Option<String>>,
    metrics: Arc<Metrics>,
}

fn unavailable(detail: impl Into<String>) -> Rejection {
    Rejection::new(Reason::IntrospectionUnavailable, detail.into())
}

async fn read_limited(mut response: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(format!("response larger than {MAX_RESPONSE_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

impl Introspector {
    pub fn new(
        cfg: IntrospectionConfig,
        keys_cfg: KeysConfig,
        module: Arc<ModuleKeys>,
        metrics: Arc<Metrics>,
    ) -> Result<Introspector, String> {
        let client = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("hti-guard/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| e.to_string())?;
        let endpoints = match &cfg.endpoints {
            IntrospectionEndpoints::Configured {
                introspection,
                token,
            } => Some(Arc::new(Endpoints {
                introspection: introspection.clone(),
                token: token.clone(),
            })),
            IntrospectionEndpoints::Discovered { .. } => None,
        };
        Ok(Introspector {
            cfg,
            keys_cfg,
            module,
            client,
            endpoints: RwLock::new(endpoints),
            last_error: Mutex::new(None),
            metrics,
        })
    }

    /// Whether `iss`es that are not configured go to the auth server too.
    pub fn all_issuers(&self) -> bool {
        self.cfg.all_issuers
    }

    fn current(&self) -> Option<Arc<Endpoints>> {
        self.endpoints
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether the endpoints are known (readiness).
    pub fn ready(&self) -> Result<(), String> {
        match self.current() {
            Some(_) => Ok(()),
            None => Err(
                match &*self.last_error.lock().unwrap_or_else(|p| p.into_inner()) {
                    Some(e) => format!("introspection endpoint not discovered ({e})"),
                    None => "introspection endpoint not discovered yet".into(),
                },
            ),
        }
    }

    /// Start discovery (when the endpoints come from `fhir_base`); abort the handle to stop.
    pub fn start(self: &Arc<Self>) -> Option<JoinHandle<()>> {
        let IntrospectionEndpoints::Discovered { fhir_base } = &self.cfg.endpoints else {
            return None;
        };
        let url = format!(
            "{}/.well-known/smart-configuration",
            fhir_base.trim_end_matches('/')
        );
        let this = self.clone();
        Some(tokio::spawn(async move {
            let mut failures = 0u32;
            loop {
                let delay = match this.discover(&url).await {
                    Ok((endpoints, max_age)) => {
                        failures = 0;
                        if this.current().as_deref() != Some(&endpoints) {
                            tracing::info!(
                                introspection = %endpoints.introspection,
                                token = endpoints.token.as_deref().unwrap_or("-"),
                                "introspection endpoints discovered"
                            );
                        }
                        *this.endpoints.write().unwrap_or_else(|p| p.into_inner()) =
                            Some(Arc::new(endpoints));
                        *this.last_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
                        refresh_interval(max_age, &this.keys_cfg)
                    }
                    Err(error) => {
                        failures += 1;
                        tracing::warn!(%url, %error, "smart-configuration discovery failed");
                        *this.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(error);
                        backoff(failures, &this.keys_cfg)
                    }
                };
                tokio::time::sleep(delay).await;
            }
        }))
    }

    /// Fetch the smart-configuration once.
    async fn discover(&self, url: &str) -> Result<(Endpoints, Option<Duration>), String> {
        let response = self
            .client
            .get(url)
            .header(http::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    "timed out".to_string()
                } else {
                    e.to_string()
                }
            })?;
        if !response.status().is_success() {
            return Err(format!("HTTP {}", response.status()));
        }
        let cache = response
            .headers()
            .get(http::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .and_then(max_age);
        let body = read_limited(response).await?;
        let doc: Value = serde_json::from_slice(&body).map_err(|e| format!("not JSON: {e}"))?;
        let url_member = |name: &str| -> Result<Option<String>, String> {
            match doc.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(u)) if u.starts_with("https://") || u.starts_with("http://") => {
                    Ok(Some(u.clone()))
                }
                Some(_) => Err(format!("{name} is not an http(s) URL")),
            }
        };
        let introspection =
            url_member("introspection_endpoint")?.ok_or("no introspection_endpoint")?;
        let token = url_member("token_endpoint")?;
        if token.is_none() && self.cfg.assertion_audience == AssertionAudience::TokenEndpoint {
            return Err("no token_endpoint (the client assertion's audience)".into());
        }
        Ok((
            Endpoints {
                introspection,
                token,
            },
            cache,
        ))
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
            Ok(Some(_)) => "active",
            Ok(None) => "inactive",
            Err(_) => "error",
        };
        self.metrics
            .introspection(label, started.elapsed().as_secs_f64());
        match result? {
            None => Err(Rejection::new(
                Reason::IntrospectionInactive,
                "the auth server says the token is not active",
            )),
            Some(answer) => {
                let mut claims = token_claims.clone();
                for (name, value) in answer {
                    if !META.contains(&name.as_str()) {
                        claims.insert(name, value);
                    }
                }
                Ok(claims)
            }
        }
    }

    /// One introspection request: `Some(answer)` when active, `None` when not.
    async fn request(&self, token: &str) -> Result<Option<Map<String, Value>>, Rejection> {
        let endpoints = self
            .current()
            .ok_or_else(|| unavailable("the introspection endpoint is not known yet"))?;
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
            .map_err(|e| unavailable(format!("cannot sign the client assertion: {e}")))?;
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
                unavailable(if e.is_timeout() {
                    "introspection timed out".to_string()
                } else {
                    format!("introspection request failed: {e}")
                })
            })?;
        let status = response.status();
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::BAD_REQUEST
        {
            tracing::error!(
                %status,
                endpoint = %endpoints.introspection,
                client_id = %self.cfg.client_id,
                "the auth server refused our client assertion: check module.client_id, the module's JWKS at module.jwks_path, and introspection.assertion_audience"
            );
            return Err(unavailable(format!(
                "our client assertion was refused ({status})"
            )));
        }
        if !status.is_success() {
            return Err(unavailable(format!("introspection answered {status}")));
        }
        let body = read_limited(response).await.map_err(unavailable)?;
        let answer: Map<String, Value> = match serde_json::from_slice(&body) {
            Ok(Value::Object(map)) => map,
            _ => return Err(unavailable("introspection answer is not a JSON object")),
        };
        Ok(match answer.get("active") {
            Some(Value::Bool(true)) => Some(answer),
            _ => None,
        })
    }
}
