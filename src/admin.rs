//! The admin listener: `/healthz` (the process runs), `/readyz` (keys and replay store
//! usable, the SHOF auth server discovered, not draining) and `/metrics` (Prometheus text).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;

use crate::metrics::Metrics;
use crate::overload::Overload;
use crate::replay::ReplayStore;
use crate::shof::Shof;
use crate::verify::KeyCache;
use crate::verify::introspect::Introspector;

/// What readiness depends on.
pub(crate) struct Readiness {
    keys: Arc<KeyCache>,
    replay: Arc<dyn ReplayStore>,
    introspector: Option<Arc<Introspector>>,
    overload: Option<Arc<Overload>>,
    shof: Option<Arc<Shof>>,
    /// Shared with the readiness a reload makes.
    draining: Arc<AtomicBool>,
}

impl Readiness {
    pub(crate) fn new(
        keys: Arc<KeyCache>,
        replay: Arc<dyn ReplayStore>,
        introspector: Option<Arc<Introspector>>,
    ) -> Self {
        Readiness {
            keys,
            replay,
            introspector,
            overload: None,
            shof: None,
            draining: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The readiness of a reloaded configuration: its key cache, introspector and SHOF
    /// login; the replay store, the memory limit and draining stay.
    pub(crate) fn reloaded(
        &self,
        keys: Arc<KeyCache>,
        introspector: Option<Arc<Introspector>>,
        shof: Option<Arc<Shof>>,
    ) -> Self {
        Readiness {
            keys,
            replay: self.replay.clone(),
            introspector,
            overload: self.overload.clone(),
            shof,
            draining: self.draining.clone(),
        }
    }

    /// Not ready while the guard refuses work near its memory limit.
    pub(crate) fn with_overload(mut self, overload: Option<Arc<Overload>>) -> Self {
        self.overload = overload;
        self
    }

    /// Not ready before the SHOF auth server is first discovered.
    pub(crate) fn with_shof(mut self, shof: Option<Arc<Shof>>) -> Self {
        self.shof = shof;
        self
    }

    pub(crate) fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Everything that keeps the guard from verifying launches now, or nothing.
    pub(crate) async fn missing(&self) -> Vec<String> {
        let mut missing = Vec::new();
        if self.draining.load(Ordering::Acquire) {
            missing.push("shutting down".to_owned());
        }
        if let Some(why) = self.overload.as_ref().and_then(|o| o.describe()) {
            missing.push(why);
        }
        for (iss, why) in self.keys.not_ready() {
            missing.push(format!("issuer {iss}: {why}"));
        }
        if let Some(Err(e)) = self.introspector.as_ref().map(|i| i.ready()) {
            missing.push(e);
        }
        if let Some(Err(e)) = self.shof.as_ref().map(|s| s.ready()) {
            missing.push(e);
        }
        if let Err(e) = self.replay.ping().await {
            missing.push(format!("replay store ({}): {e}", self.replay.name()));
        }
        missing
    }
}

/// Answer one admin request.
pub(crate) async fn handle<B>(
    request: Request<B>,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "method not allowed\n".into(),
        );
    }
    match request.uri().path() {
        "/healthz" => text(StatusCode::OK, "text/plain", "ok\n".into()),
        "/readyz" => {
            let missing = readiness.missing().await;
            if missing.is_empty() {
                text(
                    StatusCode::OK,
                    "application/json",
                    r#"{"status":"ready"}"#.into(),
                )
            } else {
                let body = serde_json::json!({ "status": "not_ready", "missing": missing });
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "application/json",
                    body.to_string().into(),
                )
            }
        }
        "/metrics" => text(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.render().into(),
        ),
        _ => text(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}

fn text(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
