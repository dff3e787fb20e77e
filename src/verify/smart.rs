//! SMART discovery, in one place for introspection and the SHOF login: fetch
//! `{fhir_base}/.well-known/smart-configuration` (bounded, no redirects), judge the URLs it
//! names, and keep the result fresh the way key sets are kept (the response's
//! `Cache-Control: max-age` clamped to `keys.refresh_min`/`refresh_max`, backoff after
//! failures). Readers take an `Arc` snapshot and never wait on a fetch.

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use reqwest::Url;
use serde_json::Value;
use tokio::task::JoinHandle;

use crate::config::KeysConfig;
use crate::verify::keys::{backoff, max_age, refresh_interval};

/// The largest discovery (or token, or introspection) response read.
pub const MAX_RESPONSE_BYTES: usize = 256 * 1024;

/// The smart-configuration URL of a FHIR base.
pub fn discovery_url(fhir_base: &str) -> String {
    format!(
        "{}/.well-known/smart-configuration",
        fhir_base.trim_end_matches('/')
    )
}

/// A failed discovery: why, and whether the server answered with a document (one the guard
/// refuses) rather than not at all.
#[derive(Debug)]
pub struct Failure {
    pub error: String,
    pub answered: bool,
}

/// Read a response body of at most [`MAX_RESPONSE_BYTES`].
pub async fn read_limited(mut response: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(format!("response larger than {MAX_RESPONSE_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Fetch a smart-configuration once: the JSON document and the max-age it asked for.
pub async fn fetch(
    client: &reqwest::Client,
    url: &str,
) -> Result<(Value, Option<Duration>), Failure> {
    let failed = |error: String| Failure {
        error,
        answered: false,
    };
    let response = client
        .get(url)
        .header(http::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| {
            failed(if e.is_timeout() {
                "timed out".to_string()
            } else {
                e.to_string()
            })
        })?;
    if !response.status().is_success() {
        return Err(failed(format!("HTTP {}", response.status())));
    }
    let cache = response
        .headers()
        .get(http::header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
        .and_then(max_age);
    let body = read_limited(response).await.map_err(failed)?;
    let doc = parse_document(&body).map_err(failed)?;
    Ok((doc, cache))
}

/// A smart-configuration body as JSON (any JSON: the readers judge its members).
pub(crate) fn parse_document(body: &[u8]) -> Result<Value, String> {
    serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))
}

/// A URL member `name` of a smart-configuration document, when present. It must be https,
/// or share `fhir_base`'s origin (scheme, host and port): the guard sends tokens and client
/// assertions there, so a document (or whoever can change it) must not be able to point
/// them at a plain-http host elsewhere.
pub fn endpoint(doc: &Value, name: &str, fhir_base: &str) -> Result<Option<String>, String> {
    let base = Url::parse(fhir_base).map_err(|e| format!("fhir_base: {e}"))?;
    let text = match doc.get(name) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(u)) => u,
        Some(_) => return Err(format!("{name} is not a URL")),
    };
    let url = Url::parse(text).map_err(|_| format!("{name} is not a URL"))?;
    match url.scheme() {
        "https" => Ok(Some(text.clone())),
        "http" if url.origin() == base.origin() => Ok(Some(text.clone())),
        "http" => Err(format!(
            "{name} {text} is plain http on another origin than the FHIR base: not used"
        )),
        _ => Err(format!("{name} is not an http(s) URL")),
    }
}

/// What a discovery found, kept fresh by a background task.
pub struct Discovered<T> {
    current: RwLock<Option<Arc<T>>>,
    last_error: Mutex<Option<String>>,
}

impl<T: PartialEq + Send + Sync + 'static> Discovered<T> {
    /// Known from the start (`Some`: configured, never fetched) or to be discovered.
    pub fn new(initial: Option<T>) -> Self {
        Discovered {
            current: RwLock::new(initial.map(Arc::new)),
            last_error: Mutex::new(None),
        }
    }

    /// The latest good result, if any.
    pub fn current(&self) -> Option<Arc<T>> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Why the latest attempt failed, while it has.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Fetch `url` now and then on schedule, `judge` each document, and install what it
    /// accepts; `on_change` hears of every new result. Abort the handle to stop.
    pub fn start(
        self: &Arc<Self>,
        client: reqwest::Client,
        url: String,
        keys_cfg: KeysConfig,
        judge: impl Fn(&Value) -> Result<T, String> + Send + Sync + 'static,
        on_change: impl Fn(&T) + Send + Sync + 'static,
    ) -> JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut failures = 0u32;
            loop {
                let found = match fetch(&client, &url).await {
                    Ok((doc, cache)) => {
                        judge(&doc)
                            .map(|found| (found, cache))
                            .map_err(|error| Failure {
                                error,
                                answered: true,
                            })
                    }
                    Err(failure) => Err(failure),
                };
                let delay = match found {
                    Ok((found, cache)) => {
                        failures = 0;
                        if this.current().as_deref() != Some(&found) {
                            on_change(&found);
                        }
                        *this.current.write().unwrap_or_else(|p| p.into_inner()) =
                            Some(Arc::new(found));
                        *this.last_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
                        refresh_interval(cache, &keys_cfg)
                    }
                    Err(Failure { error, answered }) => {
                        failures += 1;
                        tracing::warn!(%url, %error, "smart-configuration discovery failed");
                        // A server that answers with a document the guard refuses (say, one
                        // now naming a plain-http host elsewhere) stops what it named before
                        // from being used; one that does not answer does not.
                        if answered {
                            *this.current.write().unwrap_or_else(|p| p.into_inner()) = None;
                        }
                        *this.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(error);
                        backoff(failures, &keys_cfg)
                    }
                };
                tokio::time::sleep(delay).await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_discovery_url_has_one_slash() {
        assert_eq!(
            discovery_url("https://fhir.example/fhir/"),
            "https://fhir.example/fhir/.well-known/smart-configuration"
        );
        assert_eq!(
            discovery_url("https://fhir.example/fhir"),
            "https://fhir.example/fhir/.well-known/smart-configuration"
        );
    }

    #[test]
    fn endpoints_are_https_or_on_the_base_origin() {
        let base = "http://auth.internal:8080/fhir";
        let doc = json!({
            "a": "http://auth.internal:8080/t",
            "b": "https://elsewhere.example/t",
            "c": "http://elsewhere.example/t",
            "d": 5,
        });
        assert!(endpoint(&doc, "a", base).unwrap().is_some());
        assert!(endpoint(&doc, "b", base).unwrap().is_some());
        assert!(endpoint(&doc, "c", base).is_err());
        assert!(endpoint(&doc, "d", base).is_err());
        assert_eq!(endpoint(&doc, "e", base).unwrap(), None);
    }
}
