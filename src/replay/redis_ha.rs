//! The Redis store's two highly available shapes, both redis-rs's own clients:
//! - **Sentinel**: [`redis::sentinel::SentinelClient`] asks the Sentinels for the master of
//!   `replay.sentinel_master` (and checks its `ROLE`); the master connection is kept until a
//!   call on it fails or times out, then forgotten, so the next call asks the Sentinels again
//!   and reaches the promoted replica after a failover (a demoted master answers `READONLY`,
//!   an error like any other).
//! - **Cluster**: one [`redis::cluster_async::ClusterConnection`], which routes each key to
//!   its slot's master, follows `MOVED` and `ASK` and refreshes the slot map by itself; it is
//!   made on the first call (so the guard starts while the cluster is down) and remade only
//!   if making it failed.
//!
//! A failed lookup is an error of the call; nothing here retries beyond what redis-rs does
//! inside the caller's timeout.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::cluster::{ClusterClient, ClusterClientBuilder, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    AsyncConnectionConfig, ConnectionAddr, FromRedisValue, IntoConnectionInfo, RedisResult, TlsMode,
};

use super::redis::Request;

/// A connection made on first use and shared by clones until it is forgotten; the
/// generation makes sure a failed call forgets only the connection it used.
struct Cached<C> {
    current: Mutex<Option<(u64, C)>>,
    generation: AtomicU64,
}

impl<C: Clone> Cached<C> {
    fn new() -> Cached<C> {
        Cached {
            current: Mutex::new(None),
            generation: AtomicU64::new(0),
        }
    }

    fn get(&self) -> Option<(u64, C)> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set(&self, connection: C) -> (u64, C) {
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let entry = (generation, connection);
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(entry.clone());
        entry
    }

    /// Forget the connection of `generation` (`None`: whichever is current).
    fn forget(&self, generation: Option<u64>) {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if generation.is_none() || current.as_ref().map(|(g, _)| *g) == generation {
            *current = None;
        }
    }
}

/// The master of a Sentinel-monitored set, looked up again after any failure.
pub(super) struct Sentinel {
    client: tokio::sync::Mutex<SentinelClient>,
    master: Cached<MultiplexedConnection>,
    config: AsyncConnectionConfig,
}

impl Sentinel {
    /// `nodes` are the Sentinels; the user and password of the first one are used for the
    /// Sentinels and the master alike, its TLS and database number for the master.
    pub(super) fn new(
        nodes: &[String],
        master: &str,
        timeout: Duration,
    ) -> Result<Sentinel, String> {
        let infos = nodes
            .iter()
            .map(|url| url.as_str().into_connection_info())
            .collect::<RedisResult<Vec<_>>>()
            .map_err(|e| e.to_string())?;
        let first = infos.first().ok_or("no Sentinel given")?.clone();
        let settings = first.redis_settings();
        // The Sentinels' addresses carry their TLS (rediss://) themselves; the master is
        // reached the same way as the first one.
        let tls = match first.addr() {
            ConnectionAddr::TcpTls { insecure: true, .. } => Some(TlsMode::Insecure),
            ConnectionAddr::TcpTls { .. } => Some(TlsMode::Secure),
            _ => None,
        };
        let mut builder = SentinelClientBuilder::new(
            infos.iter().map(|info| info.addr().clone()),
            master,
            SentinelServerType::Master,
        )
        .map_err(|e| e.to_string())?
        .set_client_to_redis_db(settings.db());
        if let Some(mode) = tls {
            builder = builder.set_client_to_redis_tls_mode(mode);
        }
        if let Some(user) = settings.username() {
            builder = builder
                .set_client_to_redis_username(user)
                .set_client_to_sentinel_username(user);
        }
        if let Some(password) = settings.password() {
            builder = builder
                .set_client_to_redis_password(password)
                .set_client_to_sentinel_password(password);
        }
        let client = builder.build().map_err(|e| e.to_string())?;
        Ok(Sentinel {
            client: tokio::sync::Mutex::new(client),
            master: Cached::new(),
            config: AsyncConnectionConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(timeout)),
        })
    }

    /// The master's connection: the kept one, or a new one from the Sentinels' answer.
    async fn connection(&self) -> RedisResult<(u64, MultiplexedConnection)> {
        if let Some(kept) = self.master.get() {
            return Ok(kept);
        }
        let mut client = self.client.lock().await;
        // Another call may have connected while this one waited for the lock.
        if let Some(kept) = self.master.get() {
            return Ok(kept);
        }
        let connection = client
            .get_async_connection_with_config(&self.config)
            .await?;
        Ok(self.master.set(connection))
    }

    /// Run `request` on the master; any failure forgets the connection.
    pub(super) async fn run<T: FromRedisValue>(&self, request: Request<'_>) -> RedisResult<T> {
        let (generation, mut connection) = self.connection().await?;
        let result = request.run(&mut connection).await;
        if result.is_err() {
            self.master.forget(Some(generation));
        }
        result
    }

    /// The caller's timeout ran out: ask the Sentinels again next time.
    pub(super) fn timed_out(&self) {
        self.master.forget(None);
    }
}

/// A Redis Cluster, reached through its seed nodes.
pub(super) struct Cluster {
    client: ClusterClient,
    connection: Cached<ClusterConnection>,
    connecting: tokio::sync::Mutex<()>,
    config: ClusterConfig,
}

impl Cluster {
    pub(super) fn new(nodes: &[String], timeout: Duration) -> Result<Cluster, String> {
        let client = ClusterClientBuilder::new(nodes.iter().map(String::as_str))
            .retries(2)
            .min_retry_wait(10)
            .max_retry_wait(100)
            .connection_timeout(timeout)
            .response_timeout(timeout)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Cluster {
            client,
            connection: Cached::new(),
            connecting: tokio::sync::Mutex::new(()),
            config: ClusterConfig::new()
                .set_connection_timeout(timeout)
                .set_response_timeout(timeout),
        })
    }

    async fn connection(&self) -> RedisResult<ClusterConnection> {
        if let Some((_, kept)) = self.connection.get() {
            return Ok(kept);
        }
        let _connecting = self.connecting.lock().await;
        if let Some((_, kept)) = self.connection.get() {
            return Ok(kept);
        }
        let connection = self
            .client
            .get_async_connection_with_config(self.config.clone())
            .await?;
        Ok(self.connection.set(connection).1)
    }

    /// Run `request` on the node its key belongs to: redis-rs routes it by its key (a
    /// pipeline by its first keyed command, so `SET` and `WAIT` share a connection) and
    /// refreshes its slot map when a node answers `MOVED`.
    pub(super) async fn run<T: FromRedisValue>(&self, request: Request<'_>) -> RedisResult<T> {
        let mut connection = self.connection().await?;
        request.run(&mut connection).await
    }
}
