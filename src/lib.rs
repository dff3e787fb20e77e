//! hti-guard: a reverse proxy that verifies HTI launches for an unchanged module app.
//!
//! The modules, in the order a request flows through them:
//! - `server`: accept loops (public and admin listeners, TLS, graceful drain, connection
//!   limit, HTTP/1 and HTTP/2 limits)
//! - `timed`: the idle, request body and slow-reader timeouts hyper does not have
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
//! - `respond`: every response the guard makes itself (errors, 303, logout, module JWKS)
//! - `metrics`, `admin`: Prometheus metrics, `/healthz`, `/readyz`, `/metrics`
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
pub(crate) mod proxy;
pub mod replay;
pub(crate) mod respond;
pub(crate) mod server;
pub(crate) mod session;
pub(crate) mod shof;
pub(crate) mod timed;
pub mod tools;
pub(crate) mod upstream;
pub mod verify;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

pub use config::{Config, ConfigError};
pub use error::StartupError;

use crate::admin::Readiness;
use crate::config::ReplayStoreKind;
use crate::metrics::Metrics;
use crate::module_keys::ModuleKeys;
use crate::proxy::Proxy;
use crate::replay::{MemoryStore, RedisStore, ReplayStore};
use crate::server::PublicOptions;
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
    install_crypto_provider();
    let metrics = Arc::new(Metrics::new());
    for issuer in &config.issuers {
        metrics.init_issuer(&issuer.iss);
    }
    let mut background = Vec::new();
    let replay: Arc<dyn ReplayStore> = match config.replay.store {
        ReplayStoreKind::Memory => {
            let store = MemoryStore::new(config.replay.max_entries);
            background.push(store.start_purging());
            store
        }
        ReplayStoreKind::Redis => {
            let url = config.replay.redis_url.as_deref().unwrap_or_default();
            let store =
                RedisStore::new(url, &config.replay.key_prefix, config.replay.redis_timeout)
                    .map_err(|message| StartupError::Config {
                        key: "replay.redis_url",
                        message,
                    })?;
            Arc::new(store)
        }
    };
    let keys = Arc::new(KeyCache::new(&config.issuers, &config.keys));
    let client =
        KeyCache::http_client(&config.keys).map_err(|e| StartupError::Client(e.to_string()))?;
    let upstream = Upstream::new(&config.upstream, &config.timeouts)?;
    background.extend(keys.start(client, metrics.clone()));

    let mut verifier = Verifier::new(&config, keys.clone(), replay.clone(), metrics.clone());
    let assertion_alg = match (&config.introspection, &config.shof) {
        (Some(i), _) => i.assertion_alg,
        (None, Some(s)) => s.assertion_alg,
        (None, None) => jose::Alg::RS512,
    };
    let module = Arc::new(ModuleKeys::load(&config.module, assertion_alg)?);
    verifier = verifier.with_module(module.clone());
    let introspector = match &config.introspection {
        Some(cfg) => {
            let introspector = Arc::new(
                Introspector::new(
                    cfg.clone(),
                    config.keys.clone(),
                    module.clone(),
                    metrics.clone(),
                )
                .map_err(StartupError::Client)?,
            );
            background.extend(introspector.start());
            verifier = verifier.with_introspector(introspector.clone());
            Some(introspector)
        }
        None => None,
    };
    let shof = match &config.shof {
        Some(cfg) => {
            let shof = Arc::new(
                shof::Shof::new(
                    cfg.clone(),
                    config.launch.clone(),
                    &config.keys,
                    module.clone(),
                    replay.clone(),
                    metrics.clone(),
                )
                .map_err(StartupError::Client)?,
            );
            background.push(shof.start());
            Some(shof)
        }
        None => None,
    };
    let sessions = config.session.clone().map(session::Sessions::new);
    let proxy = Proxy::new(
        module,
        sessions,
        config.launch.clone(),
        verifier,
        upstream,
        metrics.clone(),
    )
    .with_shof(shof.clone())
    .with_trusted_proxies(config.trusted_proxies.clone());
    let workers = server::Workers::start(config.workers).map_err(StartupError::Io)?;
    let overload = config.limits.max_memory.map(overload::Overload::new);
    if let Some(overload) = &overload {
        background.push(overload.start());
    }
    let readiness = Arc::new(
        Readiness::new(keys, replay, introspector)
            .with_overload(overload.clone())
            .with_shof(shof),
    );

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
        server::serve_public(listeners.public, &proxy, &workers, options, stop_public_rx).await;
        workers.stop().await;
    });
    let admin = {
        let metrics = metrics.clone();
        let readiness = readiness.clone();
        tokio::spawn(server::serve_plain(
            listeners.admin,
            move |request| admin::handle(request, metrics.clone(), readiness.clone()),
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
    readiness.start_draining();
    let _ = stop_public.send(true);
    let _ = public.await;
    let _ = stop_admin.send(true);
    let _ = admin.await;
    for task in background {
        task.abort();
    }
    metrics.set_down();
    tracing::info!("hti-guard stopped");
    Ok(())
}
