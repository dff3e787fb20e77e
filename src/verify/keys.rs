//! The per-issuer key cache. Each issuer has a background task that owns every fetch of
//! its JWKS: at start, on the interval the response's `Cache-Control: max-age` gives
//! (clamped to `[refresh_min, refresh_max]`), with backoff after failures, and when a
//! request meets an unknown kid (at most once per `unknown_kid_cooldown`). Readers take an
//! `Arc` snapshot and never wait on a fetch, except a request that asked for the refetch,
//! which waits for it at most `fetch_timeout`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{Notify, watch};
use tokio::task::{AbortHandle, JoinHandle};

use crate::config::{IssuerConfig, KeysConfig};
use crate::error::{Reason, Rejection};
use crate::jose::jwk::{Alg, JwksError, KeyProblem, ParsedJwks, VerifyKey, parse_jwks};
use crate::metrics::Metrics;

/// The largest JWKS document read.
const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// Why a fetch ran; the `trigger` label of `hti_guard_jwks_fetches_total`.
pub use crate::metrics::FetchTrigger as Trigger;

/// What one fetch of a JWKS URL brought.
#[derive(Debug)]
pub struct Fetched {
    pub status: u16,
    pub cache_control: Option<String>,
    pub max_age: Option<Duration>,
    pub jwks: ParsedJwks,
}

/// Why a fetch brought no key set. `Display` is the text the cache logs and `/readyz` shows.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// No response headers within `fetch_timeout`.
    #[error("timed out")]
    Timeout,
    /// No response: DNS, connection refused, TLS.
    #[error("{0}")]
    Unreachable(String),
    /// A response that does not hold a key set, with its status and Cache-Control.
    #[error("{problem}")]
    Response {
        status: u16,
        cache_control: Option<String>,
        problem: ResponseProblem,
    },
}

/// What was wrong with a response.
#[derive(Debug, thiserror::Error)]
pub enum ResponseProblem {
    /// A status other than 2xx (redirects are not followed).
    #[error("HTTP {0}")]
    Status(http::StatusCode),
    #[error("JWKS larger than {MAX_JWKS_BYTES} bytes")]
    TooLarge,
    /// Reading the body failed (e.g. it timed out).
    #[error("{0}")]
    Body(String),
    /// Not JSON, or no `keys` array.
    #[error(transparent)]
    Jwks(#[from] JwksError),
}

/// Fetch and parse a JWKS once. Used by the cache and by `hti-guard check`.
pub async fn fetch_jwks(client: &reqwest::Client, url: &str) -> Result<Fetched, FetchError> {
    let mut response = client
        .get(url)
        .header(
            http::header::ACCEPT,
            "application/json, application/jwk-set+json",
        )
        .send()
        .await
        .map_err(|e| {
            if e.is_timeout() {
                FetchError::Timeout
            } else {
                FetchError::Unreachable(describe_reqwest_error(&e))
            }
        })?;
    let status = response.status();
    let cache_control = response
        .headers()
        .get(http::header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let failed = |problem| FetchError::Response {
        status: status.as_u16(),
        cache_control: cache_control.clone(),
        problem,
    };
    if !status.is_success() {
        return Err(failed(ResponseProblem::Status(status)));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| failed(ResponseProblem::Body(describe_reqwest_error(&e))))?
    {
        if body.len() + chunk.len() > MAX_JWKS_BYTES {
            return Err(failed(ResponseProblem::TooLarge));
        }
        body.extend_from_slice(&chunk);
    }
    let jwks = parse_jwks(&body).map_err(|e| failed(e.into()))?;
    Ok(Fetched {
        status: status.as_u16(),
        max_age: cache_control.as_deref().and_then(max_age),
        cache_control,
        jwks,
    })
}

fn describe_reqwest_error(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_redirect() {
        "redirects are not followed".into()
    } else {
        let mut text = if e.is_connect() {
            "connection failed".to_string()
        } else {
            e.to_string()
        };
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        text
    }
}

/// `max-age` from a Cache-Control value; `no-cache`/`no-store` count as zero.
pub fn max_age(cache_control: &str) -> Option<Duration> {
    let mut result = None;
    for directive in cache_control.split(',') {
        let directive = directive.trim();
        let (name, value) = directive.split_once('=').unwrap_or((directive, ""));
        let name = name.trim().to_ascii_lowercase();
        match name.as_str() {
            "no-store" | "no-cache" => return Some(Duration::ZERO),
            "max-age" => {
                if let Ok(secs) = value.trim().trim_matches('"').parse::<u64>() {
                    result = Some(Duration::from_secs(secs));
                }
            }
            _ => {}
        }
    }
    result
}

/// How long until the next scheduled fetch, given what the last one said.
pub fn refresh_interval(max_age: Option<Duration>, cfg: &KeysConfig) -> Duration {
    max_age
        .unwrap_or(cfg.refresh_min)
        .clamp(cfg.refresh_min, cfg.refresh_max)
}

/// Retry delay after `failures` failed fetches in a row: 1s, 2s, 4s, ... up to refresh_min.
pub fn backoff(failures: u32, cfg: &KeysConfig) -> Duration {
    let exp = Duration::from_secs(1u64 << failures.saturating_sub(1).min(16));
    exp.min(cfg.refresh_min.max(Duration::from_secs(1)))
}

/// One snapshot of an issuer's keys.
#[derive(Debug, Default)]
struct KeyState {
    keys: HashMap<String, Vec<Arc<VerifyKey>>>,
    key_count: usize,
    /// When the keys above were fetched.
    last_success: Option<Instant>,
    /// Whether the latest fetch attempt succeeded.
    last_attempt_ok: bool,
    last_error: Option<String>,
    problems: Vec<KeyProblem>,
}

impl KeyState {
    /// The state after a successful fetch of `jwks`.
    fn fetched(jwks: ParsedJwks) -> Self {
        let key_count = jwks.keys.len();
        let mut keys: HashMap<String, Vec<Arc<VerifyKey>>> = HashMap::new();
        for key in jwks.keys {
            keys.entry(key.kid.clone()).or_default().push(Arc::new(key));
        }
        KeyState {
            keys,
            key_count,
            last_success: Some(Instant::now()),
            last_attempt_ok: true,
            last_error: None,
            problems: jwks.problems,
        }
    }
}

/// An issuer's key cache; `KeyCache` holds one per issuer.
pub struct IssuerKeys {
    iss: String,
    url: String,
    cfg: KeysConfig,
    state: RwLock<Arc<KeyState>>,
    /// Counts completed fetch attempts, so a waiting request knows when one has finished.
    generation: watch::Sender<u64>,
    refetch: Notify,
    fetching: AtomicBool,
    last_unknown_kid: Mutex<Option<Instant>>,
    /// The refresh task [`KeyCache::start`] spawned, so that a reload that drops this
    /// issuer stops it.
    task: Mutex<Option<AbortHandle>>,
}

/// Why a usable key could not be found (a `Rejection` reason).
fn unknown(kid: &str) -> Rejection {
    Rejection::new(
        Reason::UnknownKey,
        format!("no usable key with kid {kid:?}"),
    )
}

impl IssuerKeys {
    fn new(iss: &str, url: &str, cfg: &KeysConfig) -> Self {
        IssuerKeys {
            iss: iss.to_owned(),
            url: url.to_owned(),
            cfg: cfg.clone(),
            state: RwLock::new(Arc::new(KeyState::default())),
            generation: watch::Sender::new(0),
            refetch: Notify::new(),
            fetching: AtomicBool::new(false),
            last_unknown_kid: Mutex::new(None),
            task: Mutex::new(None),
        }
    }

    /// A cache for a key set outside `[[issuers]]` (the SHOF auth server's `jwks_uri`),
    /// named `label` in logs and metrics; [`IssuerKeys::spawn`] starts its task.
    pub fn standalone(label: &str, url: &str, cfg: &KeysConfig) -> Arc<IssuerKeys> {
        Arc::new(IssuerKeys::new(label, url, cfg))
    }

    /// Start the refresh task of this cache; abort the handle to stop it.
    pub fn spawn(
        self: &Arc<Self>,
        client: reqwest::Client,
        metrics: Arc<Metrics>,
    ) -> JoinHandle<()> {
        tokio::spawn(self.clone().run(client, metrics))
    }

    /// The key set URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn snapshot(&self) -> Arc<KeyState> {
        self.state.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn usable(&self, state: &KeyState, now: Instant) -> bool {
        match state.last_success {
            None => false,
            Some(at) => state.last_attempt_ok || now.duration_since(at) <= self.cfg.max_stale,
        }
    }

    /// Whether requests can be verified now: a usable, non-empty key set.
    pub fn ready(&self) -> Result<(), String> {
        let state = self.snapshot();
        if !self.usable(&state, Instant::now()) {
            return Err(match &state.last_error {
                Some(e) => format!("no usable keys ({e})"),
                None => "keys not fetched yet".into(),
            });
        }
        if state.key_count == 0 {
            return Err("the key set holds no usable key".into());
        }
        Ok(())
    }

    /// Find the key for `kid` that fits `alg`, refetching once (within the cooldown) when
    /// the kid is not known.
    pub async fn key_for(&self, kid: &str, alg: Alg) -> Result<Arc<VerifyKey>, Rejection> {
        let state = self.snapshot();
        if self.usable(&state, Instant::now())
            && let Some(found) = find(&state, kid, alg)
        {
            return Ok(found);
        }
        if state.keys.contains_key(kid) && self.usable(&state, Instant::now()) {
            // The kid is known but none of its keys may verify this alg: refetching will
            // not change that.
            return Err(Rejection::new(
                Reason::UnknownKey,
                format!("key {kid:?} does not fit {alg}"),
            ));
        }
        let seen = *self.generation.borrow();
        let claimed = self.claim_refetch();
        if claimed {
            self.refetch.notify_one();
        }
        if claimed || self.fetching.load(Ordering::Acquire) {
            let mut rx = self.generation.subscribe();
            let _ = tokio::time::timeout(self.cfg.fetch_timeout, rx.wait_for(|g| *g > seen)).await;
        }
        let state = self.snapshot();
        let usable = self.usable(&state, Instant::now());
        if usable && let Some(found) = find(&state, kid, alg) {
            return Ok(found);
        }
        if !usable || !state.last_attempt_ok {
            return Err(Rejection::new(
                Reason::KeysUnavailable,
                format!(
                    "kid {kid:?} unknown and the key set cannot be refreshed: {}",
                    state.last_error.as_deref().unwrap_or("not fetched yet")
                ),
            ));
        }
        Err(unknown(kid))
    }

    /// At most one unknown-kid refetch per cooldown.
    fn claim_refetch(&self) -> bool {
        let now = Instant::now();
        let mut last = self
            .last_unknown_kid
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match *last {
            Some(at) if now.duration_since(at) < self.cfg.unknown_kid_cooldown => false,
            _ => {
                *last = Some(now);
                true
            }
        }
    }

    /// Fetch once and install the result; returns the refresh interval the response asked for.
    async fn refresh(
        &self,
        client: &reqwest::Client,
        metrics: &Metrics,
        trigger: Trigger,
    ) -> Result<Option<Duration>, String> {
        self.fetching.store(true, Ordering::Release);
        let result = fetch_jwks(client, &self.url)
            .await
            .map_err(|e| e.to_string());
        self.fetching.store(false, Ordering::Release);
        let previous = self.snapshot();
        let (next, outcome) = match result {
            Ok(fetched) => {
                for problem in &fetched.jwks.problems {
                    tracing::warn!(issuer = %self.iss, %problem, "JWKS key skipped");
                }
                let state = KeyState::fetched(fetched.jwks);
                metrics.jwks_keys(&self.iss, state.key_count);
                metrics.jwks_success_now(&self.iss, unix_now());
                tracing::info!(issuer = %self.iss, keys = state.key_count, trigger = trigger.as_str(), "JWKS fetched");
                (state, Ok(fetched.max_age))
            }
            Err(error) => {
                tracing::warn!(issuer = %self.iss, %error, trigger = trigger.as_str(), "JWKS fetch failed");
                (
                    KeyState {
                        keys: previous.keys.clone(),
                        key_count: previous.key_count,
                        last_success: previous.last_success,
                        last_attempt_ok: false,
                        last_error: Some(error.clone()),
                        problems: previous.problems.clone(),
                    },
                    Err(error),
                )
            }
        };
        let result = match &outcome {
            Ok(_) => crate::metrics::FetchResult::Ok,
            Err(_) => crate::metrics::FetchResult::Error,
        };
        metrics.jwks_fetch(&self.iss, result, trigger);
        *self.state.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(next);
        self.generation.send_modify(|g| *g += 1);
        outcome
    }

    /// The refresh task: fetch at start, then on schedule or on request, until aborted.
    async fn run(self: Arc<Self>, client: reqwest::Client, metrics: Arc<Metrics>) {
        let mut trigger = Trigger::Startup;
        let mut failures = 0u32;
        loop {
            let delay = match self.refresh(&client, &metrics, trigger).await {
                Ok(max_age) => {
                    failures = 0;
                    refresh_interval(max_age, &self.cfg)
                }
                Err(_) => {
                    failures += 1;
                    backoff(failures, &self.cfg)
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(delay) => trigger = Trigger::Interval,
                _ = self.refetch.notified() => trigger = Trigger::UnknownKid,
            }
        }
    }
}

fn find(state: &KeyState, kid: &str, alg: Alg) -> Option<Arc<VerifyKey>> {
    state.keys.get(kid)?.iter().find(|k| k.fits(alg)).cloned()
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The key caches of all issuers, by `iss`.
pub struct KeyCache {
    issuers: HashMap<String, Arc<IssuerKeys>>,
}

impl KeyCache {
    /// One cache per issuer that has a `jwks_url` (introspected issuers have none).
    pub fn new(issuers: &[IssuerConfig], cfg: &KeysConfig) -> Self {
        KeyCache {
            issuers: issuers
                .iter()
                .filter_map(|i| {
                    let url = i.jwks_url.as_deref()?;
                    Some((i.iss.clone(), Arc::new(IssuerKeys::new(&i.iss, url, cfg))))
                })
                .collect(),
        }
    }

    /// The HTTP client for JWKS fetches: rustls, bounded by `fetch_timeout`, no redirects.
    pub fn http_client(cfg: &KeysConfig) -> Result<reqwest::Client, reqwest::Error> {
        super::http_client(cfg.fetch_timeout)
    }

    /// The cache for `issuers` after a reload: an issuer whose `iss`, `jwks_url` and
    /// `[keys]` settings are unchanged keeps its cache as it is (keys, clocks, refresh
    /// task), so that a reload neither refetches it nor loses its last good keys; one whose
    /// `[keys]` settings changed starts from its last good keys with a task of its own.
    pub fn reloaded(issuers: &[IssuerConfig], cfg: &KeysConfig, previous: &KeyCache) -> Self {
        let mut cache = KeyCache::new(issuers, cfg);
        for (iss, keys) in cache.issuers.iter_mut() {
            let Some(old) = previous.issuers.get(iss).filter(|o| o.url == keys.url) else {
                continue;
            };
            if old.cfg == *cfg {
                *keys = old.clone();
            } else {
                *keys.state.write().unwrap_or_else(|p| p.into_inner()) = old.snapshot();
            }
        }
        cache
    }

    /// Start a refresh task for each issuer that has none yet; abort the handles (or call
    /// [`KeyCache::stop_dropped`]) to stop them.
    pub fn start(&self, client: reqwest::Client, metrics: Arc<Metrics>) -> Vec<JoinHandle<()>> {
        let mut started = Vec::new();
        for keys in self.issuers.values() {
            let mut task = keys.task.lock().unwrap_or_else(|p| p.into_inner());
            if task.is_none() {
                let handle = tokio::spawn(keys.clone().run(client.clone(), metrics.clone()));
                *task = Some(handle.abort_handle());
                started.push(handle);
            }
        }
        started
    }

    /// Stop the refresh tasks of the issuers that `next` (this cache reloaded) does not keep.
    pub fn stop_dropped(&self, next: &KeyCache) {
        for (iss, keys) in &self.issuers {
            if next.issuers.get(iss).is_some_and(|n| Arc::ptr_eq(n, keys)) {
                continue;
            }
            if let Some(task) = keys.task.lock().unwrap_or_else(|p| p.into_inner()).take() {
                task.abort();
            }
        }
    }

    /// Install a key set for `iss` as if it had just been fetched (keys known in advance,
    /// benchmarks). Returns false when `iss` is not configured.
    pub fn install(&self, iss: &str, jwks: ParsedJwks) -> bool {
        let Some(keys) = self.issuers.get(iss) else {
            return false;
        };
        *keys.state.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(KeyState::fetched(jwks));
        keys.generation.send_modify(|g| *g += 1);
        true
    }

    pub fn issuer(&self, iss: &str) -> Option<&Arc<IssuerKeys>> {
        self.issuers.get(iss)
    }

    /// Every issuer's key set: usable, or why not (readiness, the dependency metric).
    pub fn states(&self) -> Vec<(String, Result<(), String>)> {
        let mut states: Vec<_> = self
            .issuers
            .values()
            .map(|k| (k.iss.clone(), k.ready()))
            .collect();
        states.sort();
        states
    }

    /// Issuers without a usable key set, with the reason.
    pub fn not_ready(&self) -> Vec<(String, String)> {
        let mut missing: Vec<(String, String)> = self
            .issuers
            .values()
            .filter_map(|k| k.ready().err().map(|e| (k.iss.clone(), e)))
            .collect();
        missing.sort();
        missing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> KeysConfig {
        KeysConfig::default()
    }

    #[test]
    fn max_age_is_read_from_cache_control() {
        assert_eq!(max_age("public, max-age=60"), Some(Duration::from_secs(60)));
        assert_eq!(max_age("Max-Age=\"10\""), Some(Duration::from_secs(10)));
        assert_eq!(max_age("no-store"), Some(Duration::ZERO));
        assert_eq!(max_age("public"), None);
        assert_eq!(max_age("max-age=soon"), None);
    }

    #[test]
    fn interval_is_clamped() {
        let c = cfg();
        assert_eq!(
            refresh_interval(Some(Duration::from_secs(5)), &c),
            c.refresh_min
        );
        assert_eq!(
            refresh_interval(Some(Duration::from_secs(600)), &c),
            Duration::from_secs(600)
        );
        assert_eq!(
            refresh_interval(Some(Duration::from_secs(86400)), &c),
            c.refresh_max
        );
        assert_eq!(refresh_interval(None, &c), c.refresh_min);
    }

    fn config(url_b: &str, refresh_min: &str) -> crate::config::Config {
        crate::config::Config::from_toml_str(&format!(
            r#"
            upstream = "http://127.0.0.1:9"
            [launch]
            audience = "module"
            [keys]
            refresh_min = "{refresh_min}"
            [[issuers]]
            iss = "https://a"
            jwks_url = "http://127.0.0.1:9/a"
            [[issuers]]
            iss = "https://b"
            jwks_url = "{url_b}"
            "#
        ))
        .unwrap()
    }

    /// A cache whose issuers both hold an (empty) key set.
    fn fetched(config: &crate::config::Config) -> KeyCache {
        let cache = KeyCache::new(&config.issuers, &config.keys);
        for iss in ["https://a", "https://b"] {
            assert!(cache.install(
                iss,
                ParsedJwks {
                    keys: vec![],
                    problems: vec![]
                }
            ));
        }
        cache
    }

    const FETCHED: &str = "the key set holds no usable key";

    #[test]
    fn a_reload_keeps_the_cache_of_each_unchanged_issuer() {
        let before = config("http://127.0.0.1:9/b", "30s");
        let cache = fetched(&before);
        let same =
            |next: &KeyCache, iss: &str| Arc::ptr_eq(&next.issuers[iss], &cache.issuers[iss]);

        let next = KeyCache::reloaded(&before.issuers, &before.keys, &cache);
        assert!(same(&next, "https://a") && same(&next, "https://b"));

        // Another key set URL: a new cache for that issuer, nothing fetched yet.
        let moved = config("http://127.0.0.1:9/b2", "30s");
        let next = KeyCache::reloaded(&moved.issuers, &moved.keys, &cache);
        assert!(same(&next, "https://a") && !same(&next, "https://b"));
        assert_eq!(
            next.not_ready()[1],
            ("https://b".into(), "keys not fetched yet".into())
        );

        // Other [keys] settings: new caches that start from the last good keys.
        let paced = config("http://127.0.0.1:9/b", "1m");
        let next = KeyCache::reloaded(&paced.issuers, &paced.keys, &cache);
        assert!(!same(&next, "https://a") && !same(&next, "https://b"));
        assert_eq!(
            next.issuers["https://a"].cfg.refresh_min,
            Duration::from_secs(60)
        );
        for (_, why) in next.not_ready() {
            assert_eq!(why, FETCHED);
        }
    }

    #[tokio::test]
    async fn a_reload_stops_the_refresh_tasks_of_the_caches_it_does_not_keep() {
        let before = config("http://127.0.0.1:9/b", "30s");
        let cache = KeyCache::new(&before.issuers, &before.keys);
        let client = KeyCache::http_client(&before.keys).unwrap();
        let metrics = Arc::new(Metrics::new());
        assert_eq!(cache.start(client.clone(), metrics.clone()).len(), 2);
        let moved = config("http://127.0.0.1:9/b2", "30s");
        let next = KeyCache::reloaded(&moved.issuers, &moved.keys, &cache);
        // Only the new cache needs a task.
        let started = next.start(client, metrics);
        assert_eq!(started.len(), 1);
        cache.stop_dropped(&next);
        let task = |c: &KeyCache, iss: &str| c.issuers[iss].task.lock().unwrap().clone();
        assert!(
            task(&cache, "https://b").is_none(),
            "the replaced cache's task stopped"
        );
        assert!(task(&next, "https://a").is_some_and(|t| !t.is_finished()));
        for handle in started {
            handle.abort();
        }
        next.stop_dropped(&KeyCache::new(&[], &moved.keys));
    }

    #[test]
    fn backoff_doubles_up_to_refresh_min() {
        let c = cfg();
        let got: Vec<u64> = (1..=7).map(|n| backoff(n, &c).as_secs()).collect();
        assert_eq!(got, vec![1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(backoff(1000, &c), c.refresh_min);
    }
}
