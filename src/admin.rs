//! The admin listener: `/healthz` (the process runs), `/readyz` (what removing this pod
//! from the Service would fix: not draining, not overloaded, started; a shared dependency's
//! outage after startup is reported, not 503) and `/metrics` (Prometheus text).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

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

/// What readiness depends on. `/readyz` answers what removing this pod from the Service
/// would fix: its own state (draining, overloaded, still starting) makes it 503; a
/// dependency every replica shares (a portal's key set, the replay store, the auth server)
/// does so only while starting, within `readiness.startup_wait`, and after that startup gate
/// has opened it is reported in the body (`degraded`) and the metrics instead.
pub(crate) struct Readiness {
    keys: Arc<KeyCache>,
    replay: Arc<dyn ReplayStore>,
    introspector: Option<Arc<Introspector>>,
    overload: Option<Arc<Overload>>,
    shof: Option<Arc<Shof>>,
    /// Shared with the readiness a reload makes.
    draining: Arc<AtomicBool>,
    /// When the guard started, and how long the startup gate waits from then.
    started: Instant,
    startup_wait: Duration,
    /// Open once every dependency answered or the wait ran out; it never closes again, a
    /// reload included (shared with the readiness a reload makes).
    gate_open: Arc<AtomicBool>,
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
            started: Instant::now(),
            startup_wait: Duration::ZERO,
            gate_open: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The readiness of a reloaded configuration: its key cache, introspector and SHOF
    /// login; the replay store, the memory limit, draining and the startup gate stay.
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
            started: self.started,
            startup_wait: self.startup_wait,
            gate_open: self.gate_open.clone(),
        }
    }

    /// Not ready while the guard refuses work near its memory limit.
    pub(crate) fn with_overload(mut self, overload: Option<Arc<Overload>>) -> Self {
        self.overload = overload;
        self
    }

    /// Not ready before the SHOF auth server is first discovered (within the startup wait).
    pub(crate) fn with_shof(mut self, shof: Option<Arc<Shof>>) -> Self {
        self.shof = shof;
        self
    }

    /// Wait at most `wait` from now for every dependency's first success.
    pub(crate) fn with_startup_wait(mut self, wait: Duration) -> Self {
        self.started = Instant::now();
        self.startup_wait = wait;
        self
    }

    pub(crate) fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Every dependency, up or down: each issuer's key set, the replay store, introspection
    /// discovery and the SHOF auth server.
    async fn dependencies(&self) -> Vec<Dependency> {
        let mut deps: Vec<Dependency> = self
            .keys
            .states()
            .into_iter()
            .map(|(iss, state)| Dependency {
                name: ISSUER_KEYS,
                issuer: Some(iss),
                down: state.err(),
            })
            .collect();
        let replay = self.replay.ping().await;
        deps.push(Dependency {
            name: REPLAY_STORE,
            issuer: None,
            down: replay
                .err()
                .map(|e| format!("replay store ({}): {e}", self.replay.name())),
        });
        if let Some(i) = &self.introspector {
            deps.push(Dependency {
                name: INTROSPECTION,
                issuer: None,
                down: i.ready().err(),
            });
        }
        if let Some(s) = &self.shof {
            deps.push(Dependency {
                name: AUTH_SERVER,
                issuer: None,
                down: s.ready().err(),
            });
        }
        deps
    }

    /// The state `/readyz` and the metrics report. Opens the startup gate when every
    /// dependency is up or `startup_wait` has passed.
    pub(crate) async fn report(&self) -> Report {
        let dependencies = self.dependencies().await;
        let all_up = dependencies.iter().all(|d| d.down.is_none());
        let expired = self.started.elapsed() >= self.startup_wait;
        let open = self.gate_open.load(Ordering::Acquire) || all_up || expired;
        if open && !self.gate_open.swap(true, Ordering::AcqRel) {
            let awaited: Vec<&str> = dependencies
                .iter()
                .filter_map(|d| d.down.as_deref())
                .collect();
            if awaited.is_empty() {
                tracing::info!("ready: every dependency answered");
            } else {
                tracing::warn!(
                    wait = ?self.startup_wait,
                    degraded = ?awaited,
                    "ready after readiness.startup_wait with dependencies down: reported, not 503"
                );
            }
        }
        let mut missing = Vec::new();
        if self.draining.load(Ordering::Acquire) {
            missing.push("shutting down".to_owned());
        }
        if let Some(why) = self.overload.as_ref().and_then(|o| o.describe()) {
            missing.push(why);
        }
        if !open {
            for d in &dependencies {
                if let Some(down) = &d.down {
                    missing.push(format!("starting, awaiting {}", d.describe(down)));
                }
            }
        }
        Report {
            missing,
            dependencies,
        }
    }
}

/// The `dependency` label values of `hti_guard_dependency_up`.
const ISSUER_KEYS: &str = "issuer_keys";
const REPLAY_STORE: &str = "replay_store";
const INTROSPECTION: &str = "introspection";
const AUTH_SERVER: &str = "auth_server";

/// One dependency and, when it is down, why.
pub(crate) struct Dependency {
    name: &'static str,
    /// The issuer, for `issuer_keys`.
    issuer: Option<String>,
    down: Option<String>,
}

impl Dependency {
    fn describe(&self, down: &str) -> String {
        match &self.issuer {
            Some(iss) => format!("issuer {iss}: {down}"),
            None => down.to_owned(),
        }
    }

    fn json(&self, down: &str) -> serde_json::Value {
        let mut value = serde_json::json!({ "dependency": self.name, "detail": down });
        if let Some(iss) = &self.issuer {
            value["issuer"] = serde_json::json!(iss);
        }
        value
    }
}

/// What `/readyz` answers.
pub(crate) struct Report {
    /// Why this pod should not get traffic now (503); empty: ready.
    missing: Vec<String>,
    dependencies: Vec<Dependency>,
}

impl Report {
    pub(crate) fn is_ready(&self) -> bool {
        self.missing.is_empty()
    }

    /// The status and JSON body of `/readyz`.
    fn answer(&self) -> (StatusCode, serde_json::Value) {
        let degraded: Vec<serde_json::Value> = self
            .dependencies
            .iter()
            .filter_map(|d| d.down.as_deref().map(|down| d.json(down)))
            .collect();
        if !self.is_ready() {
            let mut body = serde_json::json!({ "status": "not_ready", "missing": self.missing });
            if !degraded.is_empty() {
                body["degraded"] = serde_json::json!(degraded);
            }
            (StatusCode::SERVICE_UNAVAILABLE, body)
        } else if degraded.is_empty() {
            (StatusCode::OK, serde_json::json!({ "status": "ready" }))
        } else {
            (
                StatusCode::OK,
                serde_json::json!({ "status": "degraded", "degraded": degraded }),
            )
        }
    }

    /// Set `hti_guard_ready` and `hti_guard_dependency_up`.
    fn record(&self, metrics: &Metrics) {
        metrics.set_ready(self.is_ready());
        for d in &self.dependencies {
            metrics.dependency_up(d.name, d.issuer.as_deref(), d.down.is_none());
        }
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
            let report = readiness.report().await;
            report.record(&metrics);
            let (status, body) = report.answer();
            text(status, "application/json", body.to_string().into())
        }
        "/metrics" => {
            // Computed on scrape: the gauges are as fresh as the scrape, at the cost of one
            // replay store ping.
            readiness.report().await.record(&metrics);
            text(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                metrics.render().into(),
            )
        }
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
