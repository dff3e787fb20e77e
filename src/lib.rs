//! hti-guard: a reverse proxy that verifies HTI launches for an unchanged module app.
//!
//! The modules, in the order a request flows through them:
//! - `server`: accept loops (public and admin listeners, TLS, graceful drain, connection
//!   limit, HTTP/1 and HTTP/2 limits)
//! - `timed`: the idle, request body and slow-reader timeouts hyper does not have
//! - `wheel`: the coarse per-worker timers every timeout runs on (hyper's included)
//! - `overload`: refuse new requests near the memory limit
//! - `proxy`: the stage order for one request; the only module that knows it
//! - `launch`: is this a launch (or the SHOF callback), and which token does it carry
//! - `shof`: the SMART HTI on FHIR login (authorize redirect, callback, token exchange,
//!   id_token), when `[shof]` is on
//! - `verify`: token -> verified launch, the HTI policy (`keys` the per-issuer JWKS cache,
//!   `smart` SMART discovery, `introspect` Koppeltaal introspection, `claims` the HTI
//!   claim rules)
//! - `module_keys`: the module's own signing and decryption keys, and their JWKS
//! - `replay`: single use of `jti` (the `ReplayStore` trait and the memory store)
//! - `headers`: reserved, hop-by-hop, forwarding and trusted headers
//! - `upstream`: the pooled client to the module application
//! - `respond`: every response the guard makes itself (errors, 303, logout, module JWKS);
//!   `pages` the words (English, Dutch by `Accept-Language`) and frame of its pages, or the
//!   operator's templates (`[pages]`)
//! - `audit`: one audit event per launch and login decision (log target
//!   `hti_guard::audit`; optionally a FHIR R4 AuditEvent)
//! - `metrics`, `admin`: Prometheus metrics, `/healthz`, `/readyz`, `/metrics`
//! - `reload`: SIGHUP and `reload.watch` re-read the configuration; what a reload cannot
//!   apply without a restart. Here in `lib.rs`, a `Policy` is what it rebuilds and swaps
//! - `config`: raw and validated configuration, the module's keys parsed at load, and
//!   `config::path`, the request path normalisation config and the router share
//! - `jose`: JOSE formats and keys, no policy (`jwk` algorithms and public keys, `jws`
//!   compact decoding, `jwe` decryption on aws-lc-rs, `sign` signing keys); imports only
//!   itself
//! - `error`: rejection reasons and statuses, the ground (imports nothing of the crate)
//!
//! Around the guard: `check` (the configuration and key report), `tools` (`keygen`, `mint`,
//! `jwks`, and the HTI launch a token says) and `demo` (portal, guard and module app in one
//! process).

#![forbid(unsafe_code)]
// Items are `pub(crate)` unless the binary, the tests or the benches need them: a `pub`
// that nothing outside can reach is a warning (and CI denies warnings).
#![warn(unreachable_pub)]

pub(crate) mod admin;
pub(crate) mod audit;
pub mod check;
pub mod config;
pub mod demo;
pub(crate) mod error;
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing;
pub mod headers;
pub mod jose;
pub mod launch;
pub mod metrics;
pub(crate) mod module_keys;
pub(crate) mod overload;
pub(crate) mod pages;
pub(crate) mod proxy;
pub mod reload;
pub mod replay;
pub(crate) mod respond;
pub(crate) mod server;
pub(crate) mod session;
pub(crate) mod shof;
pub(crate) mod timed;
pub mod tools;
pub(crate) mod upstream;
pub mod verify;
pub(crate) mod wheel;

use std::future::Future;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::AbortHandle;

pub use config::{Config, ConfigError};
pub use error::StartupError;
pub use reload::{ReloadHandle, Reloader};

use crate::admin::Readiness;
use crate::config::{RedisMode, ReplayStoreKind};
use crate::metrics::Metrics;
use crate::module_keys::ModuleKeys;
use crate::proxy::Proxy;
use crate::replay::{MemoryStore, RedisStore, ReplayStore};
use crate::server::{Live, PublicOptions};
use crate::session::Sessions;
use crate::shof::Shof;
use crate::upstream::Upstream;
use crate::verify::introspect::Introspector;
use crate::verify::{KeyCache, Verifier};

/// The bound listeners the guard serves on.
pub struct Listeners {
    pub public: TcpListener,
    pub admin: TcpListener,
}

/// Install the process-wide rustls crypto provider (aws-lc-rs); harmless when repeated.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// Run the guard on already-bound listeners until `shutdown` completes, then drain
/// in-flight requests for at most `shutdown_grace`.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartupError> {
    run_with_reload(config, listeners, shutdown, None).await
}

/// What stays for the life of the process, whatever a reload brings.
struct Shared {
    metrics: Arc<Metrics>,
    replay: Arc<dyn ReplayStore>,
    upstream: Upstream,
}

/// Everything built from the sections a reload may change: the proxy (issuers, launch
/// rules, module keys, sessions, SHOF, trusted proxies) and what readiness reads. Replaced
/// whole; the parts whose configuration did not change are carried over.
struct Policy {
    config: Config,
    module: Arc<ModuleKeys>,
    proxy: Proxy,
    keys: Arc<KeyCache>,
    introspector: Option<Arc<Introspector>>,
    shof: Option<Arc<Shof>>,
    /// The introspector's and the SHOF login's background tasks (each issuer's key cache
    /// holds its own).
    introspector_task: Option<AbortHandle>,
    shof_task: Option<AbortHandle>,
}

impl Policy {
    /// Build from `config`, keeping what `previous` has that `config` leaves as it was:
    /// each unchanged issuer's key cache, the introspector and the SHOF login when their
    /// sections are unchanged, the random session key. Nothing here waits on the network.
    fn build(
        config: Config,
        shared: &Shared,
        mut previous: Option<&mut Policy>,
    ) -> Result<Policy, StartupError> {
        let metrics = &shared.metrics;
        let keys = Arc::new(match previous.as_deref() {
            Some(old) => KeyCache::reloaded(&config.issuers, &config.keys, &old.keys),
            None => KeyCache::new(&config.issuers, &config.keys),
        });
        let client =
            KeyCache::http_client(&config.keys).map_err(|e| StartupError::Client(e.to_string()))?;
        let assertion_alg = match (&config.introspection, &config.shof) {
            (Some(i), _) => i.assertion_alg,
            (None, Some(s)) => s.assertion_alg,
            (None, None) => jose::Alg::RS512,
        };
        // A part is kept when what it was built from shows the same.
        let unchanged = |old: &Option<&mut Policy>, of: fn(&Config) -> String| {
            old.as_deref().is_some_and(|o| of(&o.config) == of(&config))
        };
        // A key made at start (`module.generate`) stays: a new one would not be the one the
        // auth server has fetched. Key files are read again.
        let module_of = |c: &Config| format!("{:?} {:?} {:?}", c.module, c.introspection, c.shof);
        let module = match &previous {
            Some(old) if config.module.generate && unchanged(&previous, module_of) => {
                old.module.clone()
            }
            _ => Arc::new(ModuleKeys::load(&config.module, assertion_alg)?),
        };
        let introspection_of =
            |c: &Config| format!("{:?} {:?} {:?}", c.introspection, c.keys, c.module);
        let shof_of =
            |c: &Config| format!("{:?} {:?} {:?} {:?}", c.shof, c.launch, c.keys, c.module);
        let keep_introspector = unchanged(&previous, introspection_of);
        let keep_shof = unchanged(&previous, shof_of);
        // Only the launch rules or the module's keys changed: the discovery stays.
        let keep_discovery = unchanged(&previous, |c| format!("{:?} {:?}", c.shof, c.keys));
        let introspector = match (&config.introspection, &previous) {
            (Some(_), Some(old)) if keep_introspector => old.introspector.clone(),
            (Some(cfg), _) => Some(Arc::new(
                Introspector::new(
                    cfg.clone(),
                    config.keys.clone(),
                    module.clone(),
                    metrics.clone(),
                )
                .map_err(StartupError::Client)?,
            )),
            (None, _) => None,
        };
        let shof = match (
            &config.shof,
            previous.as_deref().and_then(|o| o.shof.as_ref()),
        ) {
            (Some(_), Some(old)) if keep_shof => Some(old.clone()),
            (Some(_), Some(old)) if keep_discovery => Some(Arc::new(
                old.with_rules(config.launch.clone(), module.clone()),
            )),
            (Some(cfg), _) => Some(Arc::new(
                Shof::new(
                    cfg.clone(),
                    config.launch.clone(),
                    &config.keys,
                    module.clone(),
                    shared.replay.clone(),
                    metrics.clone(),
                )
                .map_err(StartupError::Client)?,
            )),
            (None, _) => None,
        };

        // Nothing below fails: tasks start, and the kept parts' tasks move over.
        for issuer in &config.issuers {
            metrics.init_issuer(&issuer.iss);
        }
        drop(keys.start(client, metrics.clone()));
        let introspector_task = match previous.as_deref_mut() {
            Some(old) if keep_introspector => old.introspector_task.take(),
            _ => introspector
                .as_ref()
                .and_then(|i| i.start())
                .map(|t| t.abort_handle()),
        };
        let shof_task = match previous.as_deref_mut() {
            Some(old) if keep_shof || keep_discovery => old.shof_task.take(),
            _ => shof.as_ref().map(|s| s.start().abort_handle()),
        };
        let mut verifier = Verifier::new(
            &config,
            keys.clone(),
            shared.replay.clone(),
            metrics.clone(),
        )
        .with_module(module.clone());
        if let Some(introspector) = &introspector {
            verifier = verifier.with_introspector(introspector.clone());
        }
        let old_sessions = previous
            .as_deref()
            .and_then(|o| o.proxy.sessions.as_deref());
        let sessions = (config.session.clone()).map(|cfg| Sessions::reloaded(cfg, old_sessions));
        let proxy_module = module.clone();
        let proxy = Proxy::new(
            module,
            sessions,
            config.launch.clone(),
            verifier,
            shared.upstream.clone(),
            metrics.clone(),
        )
        .with_shof(shof.clone())
        .with_trusted_proxies(config.trusted_proxies.clone())
        .with_audit(audit::Auditor::new(
            &config.audit,
            config.module.client_id.as_deref(),
        ))
        .with_pages(config.pages.clone());
        Ok(Policy {
            config,
            module: proxy_module,
            proxy,
            keys,
            introspector,
            shof,
            introspector_task,
            shof_task,
        })
    }

    /// Stop the background tasks `next` did not take over (`None`: all of them).
    fn retire(mut self, next: Option<&Policy>) {
        let none = KeyCache::new(&[], &self.config.keys);
        self.keys.stop_dropped(next.map_or(&none, |n| &n.keys));
        for task in [self.introspector_task.take(), self.shof_task.take()]
            .into_iter()
            .flatten()
        {
            task.abort();
        }
    }
}

/// [`run`], reloading the configuration when `reloader` is asked to (or, with
/// `reload.watch`, when the file changes): a valid new configuration applies to new
/// requests without dropping a connection; an invalid one is refused, the old one stays.
pub async fn run_with_reload(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
    reloader: Option<Reloader>,
) -> Result<(), StartupError> {
    install_crypto_provider();
    let metrics = Arc::new(Metrics::new());
    let mut background = Vec::new();
    let replay: Arc<dyn ReplayStore> = match config.replay.store {
        ReplayStoreKind::Memory => {
            let store = MemoryStore::new(config.replay.max_entries);
            background.push(store.start_purging());
            let fill = Arc::downgrade(&store);
            metrics.replay_fill(move || fill.upgrade().map(|s| (s.len(), s.capacity())));
            store
        }
        ReplayStoreKind::Redis => {
            let store = RedisStore::from_config(&config.replay).map_err(|message| {
                StartupError::Config {
                    key: match config.replay.redis_mode {
                        RedisMode::Single => "replay.redis_url",
                        _ => "replay.redis_nodes",
                    },
                    message,
                }
            })?;
            Arc::new(store)
        }
    };
    let upstream = Upstream::new(&config.upstream, &config.timeouts)?;
    let shared = Shared {
        metrics: metrics.clone(),
        replay: replay.clone(),
        upstream,
    };
    let policy = Policy::build(config.clone(), &shared, None)?;
    metrics.config_loaded(None, reload::unix_now());
    let workers = server::Workers::start(config.workers).map_err(StartupError::Io)?;
    let live = Arc::new(Live::new(&policy.proxy, workers.len()));
    let overload = config.limits.max_memory.map(overload::Overload::new);
    if let Some(overload) = &overload {
        background.push(overload.start());
    }
    let readiness = Arc::new(ArcSwap::from_pointee(
        Readiness::new(policy.keys.clone(), replay, policy.introspector.clone())
            .with_overload(overload.clone())
            .with_shof(policy.shof.clone())
            .with_startup_wait(config.readiness.startup_wait),
    ));
    let policy = Arc::new(Mutex::new(Some(policy)));
    if let Some(reloader) = reloader {
        let (policy, live, readiness) = (policy.clone(), live.clone(), readiness.clone());
        let apply = move |config: Config| {
            let mut current = policy.lock().unwrap_or_else(|p| p.into_inner());
            let Some(old) = current.as_mut() else {
                return Err("shutting down".to_owned());
            };
            let next = Policy::build(config, &shared, Some(old)).map_err(|e| e.to_string())?;
            live.replace(&next.proxy);
            readiness.store(Arc::new(readiness.load().reloaded(
                next.keys.clone(),
                next.introspector.clone(),
                next.shof.clone(),
            )));
            if let Some(old) = current.replace(next) {
                old.retire(current.as_ref());
            }
            Ok(())
        };
        background.push(reload::start(
            reloader,
            config.clone(),
            metrics.clone(),
            apply,
        ));
    }

    let public_addr = listeners.public.local_addr()?;
    let admin_addr = listeners.admin.local_addr()?;
    let (stop_public, stop_public_rx) = watch::channel(false);
    let (stop_admin, stop_admin_rx) = watch::channel(false);
    let options = PublicOptions {
        tls: config
            .tls
            .as_ref()
            .map(|t| tokio_rustls::TlsAcceptor::from(t.server_config.clone())),
        header_timeout: config.timeouts.request_headers,
        idle_timeout: config.timeouts.idle,
        grace: config.shutdown_grace,
        max_connections: config.limits.max_connections,
        overload,
        metrics: metrics.clone(),
    };
    let public = tokio::spawn(async move {
        server::serve_public(listeners.public, live, &workers, options, stop_public_rx).await;
        workers.stop().await;
    });
    let admin = {
        let metrics = metrics.clone();
        let readiness = readiness.clone();
        tokio::spawn(server::serve_plain(
            listeners.admin,
            move |request| admin::handle(request, metrics.clone(), readiness.load_full()),
            stop_admin_rx,
        ))
    };
    tracing::info!(
        listen = %public_addr,
        admin = %admin_addr,
        upstream = %config.upstream.url,
        tls = config.tls.is_some(),
        issuers = config.issuers.len(),
        workers = config.workers,
        max_connections = config.limits.max_connections,
        max_memory = config.limits.max_memory,
        "hti-guard started"
    );

    shutdown.await;
    tracing::info!(grace = ?config.shutdown_grace, "shutting down: draining in-flight requests");
    readiness.load().start_draining();
    let _ = stop_public.send(true);
    let _ = public.await;
    let _ = stop_admin.send(true);
    let _ = admin.await;
    for task in background {
        task.abort();
    }
    let last = policy.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(last) = last {
        last.retire(None);
    }
    metrics.set_down();
    tracing::info!("hti-guard stopped");
    Ok(())
}
