//! The Prometheus registry and typed helpers, so that label sets stay as the contract names
//! them. No label ever holds a token, `sub`, `jti` or another per-person value.

mod striped;

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use std::sync::OnceLock;

use crate::error::Reason;

use striped::StripedHistogram;

/// The `event` label of `hti_guard_sessions_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEvent {
    Created,
    Renewed,
    Expired,
    Invalid,
    Logout,
}

impl SessionEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionEvent::Created => "created",
            SessionEvent::Renewed => "renewed",
            SessionEvent::Expired => "expired",
            SessionEvent::Invalid => "invalid",
            SessionEvent::Logout => "logout",
        }
    }
}

/// The `result` label of `hti_guard_launches_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LaunchResult {
    Accepted,
    Rejected,
}

impl LaunchResult {
    pub fn as_str(self) -> &'static str {
        match self {
            LaunchResult::Accepted => "accepted",
            LaunchResult::Rejected => "rejected",
        }
    }
}

/// Why a JWKS fetch ran; the `trigger` label of `hti_guard_jwks_fetches_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchTrigger {
    Startup,
    Interval,
    UnknownKid,
}

impl FetchTrigger {
    pub fn as_str(self) -> &'static str {
        match self {
            FetchTrigger::Startup => "startup",
            FetchTrigger::Interval => "interval",
            FetchTrigger::UnknownKid => "unknown_kid",
        }
    }
}

/// The `result` label of `hti_guard_jwks_fetches_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchResult {
    Ok,
    Error,
}

impl FetchResult {
    pub fn as_str(self) -> &'static str {
        match self {
            FetchResult::Ok => "ok",
            FetchResult::Error => "error",
        }
    }
}

/// The `result` label of `hti_guard_replay_checks_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayOutcome {
    Fresh,
    Replayed,
    Error,
}

impl ReplayOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            ReplayOutcome::Fresh => "fresh",
            ReplayOutcome::Replayed => "replayed",
            ReplayOutcome::Error => "error",
        }
    }
}

/// The `result` label of `hti_guard_introspection_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntrospectionOutcome {
    Active,
    Inactive,
    Error,
}

impl IntrospectionOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            IntrospectionOutcome::Active => "active",
            IntrospectionOutcome::Inactive => "inactive",
            IntrospectionOutcome::Error => "error",
        }
    }
}

/// The `result` label of `hti_guard_config_reloads_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadResult {
    /// The new configuration applies in full.
    Ok,
    /// It applies, except keys that need a restart (logged at warn).
    Partial,
    /// Refused: the old configuration stays.
    Error,
}

impl ReloadResult {
    pub fn as_str(self) -> &'static str {
        match self {
            ReloadResult::Ok => "ok",
            ReloadResult::Partial => "partial",
            ReloadResult::Error => "error",
        }
    }
}

/// The `reason` label of `hti_guard_launches_total` for an accepted launch.
const NO_REASON: &str = "none";

/// The `issuer` label when no configured issuer was recognised.
const UNKNOWN_ISSUER: &str = "unknown";

/// Every metric the guard exports.
pub struct Metrics {
    registry: Registry,
    launches: IntCounterVec,
    launch_verify: Histogram,
    jwks_fetches: IntCounterVec,
    jwks_keys: IntGaugeVec,
    jwks_last_success: GaugeVec,
    replay_checks: IntCounterVec,
    replay_duration: HistogramVec,
    requests: IntCounterVec,
    /// `requests` by status (100 to 999), looked up once per status: a request then costs
    /// one atomic add, not a label hash and lock.
    requests_by_status: Box<[OnceLock<IntCounter>]>,
    request_duration: StripedHistogram,
    upstream_duration: StripedHistogram,
    spoofed: IntCounter,
    introspections: IntCounterVec,
    sessions: IntCounterVec,
    introspection_duration: Histogram,
    logins: IntCounterVec,
    login_duration: Histogram,
    refused: IntCounterVec,
    open_connections: IntGauge,
    dependency_up: IntGaugeVec,
    ready: IntGauge,
    up: Gauge,
    config_reloads: IntCounterVec,
    config_last_success: Gauge,
    config_last_ok: IntGauge,
    config_hash: Gauge,
    /// Set by [`Metrics::replay_fill`] (memory store only); read at each scrape.
    replay_fill: OnceLock<FillReader>,
    replay_entries: IntGauge,
    replay_capacity: IntGauge,
}

/// Requests, the upstream and introspection: from 100 µs (a refusal the guard answers
/// itself, a loopback upstream) to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Verify, replay check and login: from 10 µs (a verify takes 20-86 µs, a memory replay
/// check about 1 µs) to 10 s (a key fetch or token exchange that waits for its timeout).
const FINE_BUCKETS: &[f64] = &[
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The git revision the binary was built from (set by build.rs), or "unknown".
const REVISION: &str = match option_env!("HTI_GUARD_GIT_REV") {
    Some(rev) if !rev.is_empty() => rev,
    _ => "unknown",
};

/// Reads the memory replay store's (entries, capacity); `None` once it is gone.
type FillReader = Box<dyn Fn() -> Option<(usize, usize)> + Send + Sync>;

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let launches = IntCounterVec::new(
            Opts::new(
                "hti_guard_launches_total",
                "Launches received, by issuer, result and reason.",
            ),
            &["issuer", "result", "reason"],
        )
        .expect("valid metric");
        let launch_verify = Histogram::with_opts(
            HistogramOpts::new(
                "hti_guard_launch_verify_duration_seconds",
                "Time to verify a launch token (keys, signature, claims, replay).",
            )
            .buckets(FINE_BUCKETS.to_vec()),
        )
        .expect("valid metric");
        let logins = IntCounterVec::new(
            Opts::new(
                "hti_guard_logins_total",
                "SHOF logins, by result and reason.",
            ),
            &["result", "reason"],
        )
        .expect("valid metric");
        let login_duration = Histogram::with_opts(
            HistogramOpts::new(
                "hti_guard_login_duration_seconds",
                "Time of a SHOF login's token exchange and id_token check.",
            )
            .buckets(FINE_BUCKETS.to_vec()),
        )
        .expect("valid metric");
        let jwks_fetches = IntCounterVec::new(
            Opts::new(
                "hti_guard_jwks_fetches_total",
                "JWKS fetches, by issuer, result and trigger.",
            ),
            &["issuer", "result", "trigger"],
        )
        .expect("valid metric");
        let jwks_keys = IntGaugeVec::new(
            Opts::new(
                "hti_guard_jwks_keys",
                "Usable keys in the issuer's current key set.",
            ),
            &["issuer"],
        )
        .expect("valid metric");
        let jwks_last_success = GaugeVec::new(
            Opts::new(
                "hti_guard_jwks_last_success_timestamp_seconds",
                "UNIX time of the issuer's last successful JWKS fetch.",
            ),
            &["issuer"],
        )
        .expect("valid metric");
        let replay_checks = IntCounterVec::new(
            Opts::new(
                "hti_guard_replay_checks_total",
                "Single-use checks, by store and result.",
            ),
            &["store", "result"],
        )
        .expect("valid metric");
        let replay_duration = HistogramVec::new(
            HistogramOpts::new(
                "hti_guard_replay_check_duration_seconds",
                "Time of one single-use check, by store.",
            )
            .buckets(FINE_BUCKETS.to_vec()),
            &["store"],
        )
        .expect("valid metric");
        let requests = IntCounterVec::new(
            Opts::new(
                "hti_guard_requests_total",
                "Requests answered on the public listener, by status.",
            ),
            &["code"],
        )
        .expect("valid metric");
        let request_duration = StripedHistogram::new(
            "hti_guard_request_duration_seconds",
            "Time from request to response headers on the public listener.",
        );
        let upstream_duration = StripedHistogram::new(
            "hti_guard_upstream_duration_seconds",
            "Time the upstream took to send response headers.",
        );
        let spoofed = IntCounter::new(
            "hti_guard_spoofed_headers_stripped_total",
            "Reserved x-hti-* headers removed from incoming requests.",
        )
        .expect("valid metric");
        let introspections = IntCounterVec::new(
            Opts::new(
                "hti_guard_introspection_requests_total",
                "Token introspection requests, by result (active, inactive, error).",
            ),
            &["result"],
        )
        .expect("valid metric");
        let introspection_duration = Histogram::with_opts(
            HistogramOpts::new(
                "hti_guard_introspection_duration_seconds",
                "Time of one token introspection request.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )
        .expect("valid metric");
        let sessions = IntCounterVec::new(
            Opts::new(
                "hti_guard_sessions_total",
                "Session events: created, renewed, expired, invalid, logout.",
            ),
            &["event"],
        )
        .expect("valid metric");
        let refused = IntCounterVec::new(
            Opts::new(
                "hti_guard_refused_total",
                "Requests refused before routing, by reason (overloaded).",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let open_connections = IntGauge::new(
            "hti_guard_open_connections",
            "Client connections open on the public listener (at most limits.max_connections).",
        )
        .expect("valid metric");
        let dependency_up = IntGaugeVec::new(
            Opts::new(
                "hti_guard_dependency_up",
                "1 while a dependency answers (issuer_keys per issuer, replay_store, \
                 introspection, auth_server), else 0; updated on /readyz and on scrape.",
            ),
            &["dependency", "issuer"],
        )
        .expect("valid metric");
        let ready = IntGauge::new(
            "hti_guard_ready",
            "1 while /readyz answers 200 (a degraded dependency included), else 0.",
        )
        .expect("valid metric");
        let up = Gauge::new("hti_guard_up", "1 while the guard runs.").expect("valid metric");
        up.set(1.0);
        let config_reloads = IntCounterVec::new(
            Opts::new(
                "hti_guard_config_reloads_total",
                "Configuration reloads (SIGHUP, reload.watch), by result: ok, partial, error.",
            ),
            &["result"],
        )
        .expect("valid metric");
        // Every result from 0, so that a first reload shows as an increase.
        for result in [ReloadResult::Ok, ReloadResult::Partial, ReloadResult::Error] {
            config_reloads.with_label_values(&[result.as_str()]);
        }
        let config_last_success = Gauge::new(
            "hti_guard_config_last_reload_success_timestamp_seconds",
            "When the configuration in use was loaded (at start or by a reload), Unix time.",
        )
        .expect("valid metric");
        let config_last_ok = IntGauge::new(
            "hti_guard_config_last_reload_successful",
            "1 when the last reload attempt applied (ok or partial), 0 when it was refused.",
        )
        .expect("valid metric");
        config_last_ok.set(1);
        let config_hash = Gauge::new(
            "hti_guard_config_hash",
            "A 48-bit hash of the configuration file in use, to tell replicas on another file.",
        )
        .expect("valid metric");
        let build_info = IntGaugeVec::new(
            Opts::new(
                "hti_guard_build_info",
                "Always 1; the labels say which build runs (crate version, git revision).",
            ),
            &["version", "revision"],
        )
        .expect("valid metric");
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), REVISION])
            .set(1);
        // Every result from 0, so that the first introspection shows as an increase.
        for result in [
            IntrospectionOutcome::Active,
            IntrospectionOutcome::Inactive,
            IntrospectionOutcome::Error,
        ] {
            introspections.with_label_values(&[result.as_str()]);
        }
        let replay_entries = IntGauge::new(
            "hti_guard_replay_entries",
            "Entries held by the memory replay store (read at scrape; memory store only).",
        )
        .expect("valid metric");
        let replay_capacity = IntGauge::new(
            "hti_guard_replay_capacity",
            "Entries the memory replay store may hold (replay.max_entries; memory store only).",
        )
        .expect("valid metric");
        // CPU seconds, resident memory, open and maximum fds, start time, threads: the
        // standard `process_*` names, read from /proc at each scrape.
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("metric registered once");
        for c in [
            Box::new(launches.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(build_info),
            Box::new(launch_verify.clone()),
            Box::new(logins.clone()),
            Box::new(login_duration.clone()),
            Box::new(jwks_fetches.clone()),
            Box::new(jwks_keys.clone()),
            Box::new(jwks_last_success.clone()),
            Box::new(replay_checks.clone()),
            Box::new(replay_duration.clone()),
            Box::new(requests.clone()),
            Box::new(request_duration.clone()),
            Box::new(upstream_duration.clone()),
            Box::new(spoofed.clone()),
            Box::new(introspections.clone()),
            Box::new(introspection_duration.clone()),
            Box::new(sessions.clone()),
            Box::new(refused.clone()),
            Box::new(open_connections.clone()),
            Box::new(dependency_up.clone()),
            Box::new(ready.clone()),
            Box::new(up.clone()),
            Box::new(config_reloads.clone()),
            Box::new(config_last_success.clone()),
            Box::new(config_last_ok.clone()),
            Box::new(config_hash.clone()),
        ] {
            registry.register(c).expect("metric registered once");
        }
        Metrics {
            registry,
            launches,
            launch_verify,
            jwks_fetches,
            jwks_keys,
            jwks_last_success,
            replay_checks,
            replay_duration,
            requests,
            requests_by_status: (100..1000).map(|_| OnceLock::new()).collect(),
            request_duration,
            upstream_duration,
            spoofed,
            introspections,
            introspection_duration,
            logins,
            login_duration,
            sessions,
            refused,
            open_connections,
            dependency_up,
            ready,
            up,
            config_reloads,
            config_last_success,
            config_last_ok,
            config_hash,
            replay_fill: OnceLock::new(),
            replay_entries,
            replay_capacity,
        }
    }

    /// Export the memory replay store's fill, `read` at each scrape (entries, capacity),
    /// so that "full" can be alerted before it happens. Only the first call counts.
    pub fn replay_fill(&self, read: impl Fn() -> Option<(usize, usize)> + Send + Sync + 'static) {
        if self.replay_fill.set(Box::new(read)).is_ok() {
            for gauge in [&self.replay_entries, &self.replay_capacity] {
                self.registry
                    .register(Box::new(gauge.clone()))
                    .expect("metric registered once");
            }
        }
    }

    /// Make the per-issuer series visible at zero before the first event.
    pub fn init_issuer(&self, issuer: &str) {
        self.launches
            .with_label_values(&[issuer, LaunchResult::Accepted.as_str(), NO_REASON]);
        self.jwks_keys.with_label_values(&[issuer]);
    }

    /// `issuer` is a configured iss, or `None` ("unknown") for a portal the auth server
    /// vouched for under `introspection.all_issuers`.
    pub fn launch_accepted(&self, issuer: Option<&str>) {
        self.launches
            .with_label_values(&[
                issuer.unwrap_or(UNKNOWN_ISSUER),
                LaunchResult::Accepted.as_str(),
                NO_REASON,
            ])
            .inc();
    }

    /// `issuer` is a configured iss, or `None` ("unknown") when none was recognised.
    pub fn launch_rejected(&self, issuer: Option<&str>, reason: Reason) {
        self.launches
            .with_label_values(&[
                issuer.unwrap_or(UNKNOWN_ISSUER),
                LaunchResult::Rejected.as_str(),
                reason.as_str(),
            ])
            .inc();
    }

    /// A SHOF login that ended in a session.
    pub fn login_accepted(&self) {
        self.logins
            .with_label_values(&[LaunchResult::Accepted.as_str(), NO_REASON])
            .inc();
    }

    /// A SHOF login (its start or its callback) refused for `reason`.
    pub fn login_rejected(&self, reason: Reason) {
        self.logins
            .with_label_values(&[LaunchResult::Rejected.as_str(), reason.as_str()])
            .inc();
    }

    /// The token exchange and id_token check of one login.
    pub fn observe_login(&self, seconds: f64) {
        self.login_duration.observe(seconds);
    }

    pub fn observe_verify(&self, seconds: f64) {
        self.launch_verify.observe(seconds);
    }

    pub fn jwks_fetch(&self, issuer: &str, result: FetchResult, trigger: FetchTrigger) {
        self.jwks_fetches
            .with_label_values(&[issuer, result.as_str(), trigger.as_str()])
            .inc();
    }

    pub fn jwks_keys(&self, issuer: &str, count: usize) {
        self.jwks_keys
            .with_label_values(&[issuer])
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    pub fn jwks_success_now(&self, issuer: &str, unix_seconds: f64) {
        self.jwks_last_success
            .with_label_values(&[issuer])
            .set(unix_seconds);
    }

    /// `store` is the store's name (`memory`, `redis`; a bench's own store has its own).
    pub fn replay_check(&self, store: &str, result: ReplayOutcome, seconds: f64) {
        self.replay_checks
            .with_label_values(&[store, result.as_str()])
            .inc();
        self.replay_duration
            .with_label_values(&[store])
            .observe(seconds);
    }

    pub fn request(&self, status: u16, seconds: f64) {
        let by_label = || self.requests.with_label_values(&[&status.to_string()]);
        match self
            .requests_by_status
            .get(usize::from(status).wrapping_sub(100))
        {
            Some(slot) => slot.get_or_init(by_label).inc(),
            None => by_label().inc(),
        }
        self.request_duration.observe(seconds);
    }

    pub fn observe_upstream(&self, seconds: f64) {
        self.upstream_duration.observe(seconds);
    }

    pub fn spoofed_stripped(&self, count: usize) {
        self.spoofed.inc_by(count as u64);
    }

    pub fn introspection(&self, result: IntrospectionOutcome, seconds: f64) {
        self.introspections
            .with_label_values(&[result.as_str()])
            .inc();
        self.introspection_duration.observe(seconds);
    }

    /// Count a session event.
    pub fn session(&self, event: SessionEvent) {
        self.sessions.with_label_values(&[event.as_str()]).inc();
    }

    /// A request refused before routing (`overloaded`).
    pub fn refused(&self, reason: Reason) {
        self.refused.with_label_values(&[reason.as_str()]).inc();
    }

    /// A client connection opened (`1`) or closed (`-1`) on the public listener.
    pub fn connections(&self, change: i64) {
        self.open_connections.add(change);
    }

    /// Whether `dependency` (for `issuer_keys`: of `issuer`; "" otherwise) answers.
    pub fn dependency_up(&self, dependency: &str, issuer: Option<&str>, up: bool) {
        self.dependency_up
            .with_label_values(&[dependency, issuer.unwrap_or("")])
            .set(i64::from(up));
    }

    /// Whether `/readyz` answers 200.
    pub fn set_ready(&self, ready: bool) {
        self.ready.set(i64::from(ready));
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        if let Some(read) = self.replay_fill.get()
            && let Some((entries, capacity)) = read()
        {
            let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
            self.replay_entries.set(gauge(entries));
            self.replay_capacity.set(gauge(capacity));
        }
        let mut out = Vec::new();
        let encoder = TextEncoder::new();
        if let Err(e) = encoder.encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "metrics could not be encoded");
        }
        out
    }

    /// A configuration loaded: at start (`None`) or by a reload, at `unix_seconds`.
    pub fn config_loaded(&self, result: Option<ReloadResult>, unix_seconds: f64) {
        if let Some(result) = result {
            self.config_reloads
                .with_label_values(&[result.as_str()])
                .inc();
            if result == ReloadResult::Error {
                self.config_last_ok.set(0);
                return;
            }
        }
        self.config_last_ok.set(1);
        self.config_last_success.set(unix_seconds);
    }

    /// The configuration file in use, as a hash (48 bits: exact in a float).
    pub fn config_file(&self, hash: u64) {
        self.config_hash.set((hash & 0xffff_ffff_ffff) as f64);
    }

    pub fn set_down(&self) {
        self.up.set(0.0);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn typed_labels_keep_the_contract_strings() {
        let strings = [
            LaunchResult::Accepted.as_str(),
            LaunchResult::Rejected.as_str(),
            FetchResult::Ok.as_str(),
            FetchResult::Error.as_str(),
            FetchTrigger::Startup.as_str(),
            FetchTrigger::Interval.as_str(),
            FetchTrigger::UnknownKid.as_str(),
            ReplayOutcome::Fresh.as_str(),
            ReplayOutcome::Replayed.as_str(),
            ReplayOutcome::Error.as_str(),
            IntrospectionOutcome::Active.as_str(),
            IntrospectionOutcome::Inactive.as_str(),
            IntrospectionOutcome::Error.as_str(),
            ReloadResult::Ok.as_str(),
            ReloadResult::Partial.as_str(),
            ReloadResult::Error.as_str(),
        ];
        assert_eq!(
            strings,
            [
                "accepted",
                "rejected",
                "ok",
                "error",
                "startup",
                "interval",
                "unknown_kid",
                "fresh",
                "replayed",
                "error",
                "active",
                "inactive",
                "error",
                "ok",
                "partial",
                "error",
            ]
        );
    }

    #[test]
    fn contract_metrics_are_exported() {
        let m = Metrics::new();
        m.init_issuer("https://portal");
        m.launch_rejected(None, Reason::MissingToken);
        m.jwks_fetch("https://portal", FetchResult::Ok, FetchTrigger::Startup);
        m.jwks_keys("https://portal", 2);
        m.jwks_success_now("https://portal", 1.0);
        m.replay_check("memory", ReplayOutcome::Fresh, 0.0001);
        m.request(200, 0.001);
        m.observe_verify(0.001);
        m.observe_upstream(0.001);
        m.spoofed_stripped(2);
        m.login_accepted();
        m.login_rejected(Reason::LoginStateMismatch);
        m.observe_login(0.01);
        m.dependency_up("issuer_keys", Some("https://portal"), false);
        m.dependency_up("replay_store", None, true);
        m.set_ready(true);
        let text = String::from_utf8(m.render()).unwrap();
        for name in [
            "hti_guard_launches_total{issuer=\"unknown\",reason=\"missing_token\",result=\"rejected\"} 1",
            "hti_guard_launch_verify_duration_seconds_bucket",
            "hti_guard_jwks_fetches_total{issuer=\"https://portal\",result=\"ok\",trigger=\"startup\"} 1",
            "hti_guard_jwks_keys{issuer=\"https://portal\"} 2",
            "hti_guard_jwks_last_success_timestamp_seconds",
            "hti_guard_replay_checks_total{result=\"fresh\",store=\"memory\"} 1",
            "hti_guard_replay_check_duration_seconds_count{store=\"memory\"} 1",
            "hti_guard_requests_total{code=\"200\"} 1",
            "hti_guard_request_duration_seconds_bucket",
            "hti_guard_upstream_duration_seconds_bucket",
            "hti_guard_spoofed_headers_stripped_total 2",
            "hti_guard_logins_total{reason=\"none\",result=\"accepted\"} 1",
            "hti_guard_logins_total{reason=\"login_state_mismatch\",result=\"rejected\"} 1",
            "hti_guard_login_duration_seconds_bucket",
            "hti_guard_dependency_up{dependency=\"issuer_keys\",issuer=\"https://portal\"} 0",
            "hti_guard_dependency_up{dependency=\"replay_store\",issuer=\"\"} 1",
            "hti_guard_ready 1",
            "hti_guard_launch_verify_duration_seconds_bucket{le=\"0.00001\"} 0",
            "hti_guard_launch_verify_duration_seconds_bucket{le=\"0.0025\"} 1",
            "hti_guard_replay_check_duration_seconds_bucket{store=\"memory\",le=\"0.0001\"} 1",
            "hti_guard_login_duration_seconds_bucket{le=\"0.00001\"} 0",
            "hti_guard_request_duration_seconds_bucket{le=\"0.0001\"} 0",
            "hti_guard_introspection_requests_total{result=\"active\"} 0",
            "hti_guard_build_info{revision=\"",
            "process_resident_memory_bytes ",
            "process_open_fds ",
        ] {
            assert!(text.contains(name), "missing {name}\n{text}");
        }
        assert!(text.contains(&format!("version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"))));
    }

    #[test]
    fn replay_fill_is_read_at_scrape_and_only_once_set() {
        let m = Metrics::new();
        let text = String::from_utf8(m.render()).unwrap();
        assert!(!text.contains("hti_guard_replay_entries"), "{text}");
        let entries = Arc::new(AtomicUsize::new(3));
        let seen = entries.clone();
        m.replay_fill(move || Some((seen.load(Ordering::Relaxed), 10)));
        m.replay_fill(|| Some((99, 99)));
        let text = String::from_utf8(m.render()).unwrap();
        assert!(text.contains("hti_guard_replay_entries 3\n"), "{text}");
        assert!(text.contains("hti_guard_replay_capacity 10\n"), "{text}");
        entries.store(7, Ordering::Relaxed);
        let text = String::from_utf8(m.render()).unwrap();
        assert!(text.contains("hti_guard_replay_entries 7\n"), "{text}");
    }
}
