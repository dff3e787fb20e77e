//! The Redis replay store, shared by every replica: one atomic `SET key 1 NX PX ttl` per
//! launch (with `replay.redis_wait_replicas`, followed by `WAIT n` in the same pipeline, so a
//! jti is only accepted once that many replicas hold it). The key is a configurable prefix
//! and the SHA-256 of (iss, jti), so its length is bounded whatever the token holds. Every
//! call has a timeout; an error or a timeout is `Unavailable` (the launch is refused, never
//! accepted unchecked). The primary is one URL (the connection manager reconnects by
//! itself), the master Sentinels name, or a Redis Cluster (see `redis_ha`).

use std::time::Duration;

use aws_lc_rs::digest::{SHA256, digest};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, FromRedisValue, Pipeline, RedisResult};

use super::redis_ha::{Cluster, Sentinel};
use super::{Freshness, ReplayError, ReplayStore, StoreFuture};
use crate::config::{RedisMode, ReplayConfig};

/// One command or a pipeline, run the same way on every kind of connection.
#[derive(Clone, Copy)]
pub(super) enum Request<'a> {
    Cmd(&'a Cmd),
    Pipe(&'a Pipeline),
}

impl Request<'_> {
    pub(super) async fn run<T: FromRedisValue>(
        self,
        connection: &mut (impl ConnectionLike + Send),
    ) -> RedisResult<T> {
        match self {
            Request::Cmd(cmd) => cmd.query_async(connection).await,
            Request::Pipe(pipe) => pipe.query_async(connection).await,
        }
    }
}

/// How the store reaches the primary that holds a key.
enum Backend {
    Single(ConnectionManager),
    Sentinel(Sentinel),
    Cluster(Cluster),
}

impl Backend {
    async fn run<T: FromRedisValue>(&self, request: Request<'_>) -> RedisResult<T> {
        match self {
            Backend::Single(manager) => request.run(&mut manager.clone()).await,
            Backend::Sentinel(sentinel) => sentinel.run(request).await,
            Backend::Cluster(cluster) => cluster.run(request).await,
        }
    }

    fn timed_out(&self) {
        if let Backend::Sentinel(sentinel) = self {
            sentinel.timed_out();
        }
    }
}

/// A replay store on Redis: one primary, Sentinel or Cluster.
pub struct RedisStore {
    backend: Backend,
    prefix: String,
    wait_replicas: u32,
    timeout: Duration,
}

impl RedisStore {
    /// Set up the client for `url` (`redis://` or `rediss://`, credentials in the URL), the
    /// single-primary store. The connection is made lazily, so the guard starts while Redis
    /// is down and reports it on `/readyz`.
    pub fn new(url: &str, prefix: &str, timeout: Duration) -> Result<RedisStore, String> {
        let client = redis::Client::open(url).map_err(|e| e.to_string())?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(100))
            .set_max_delay(Duration::from_secs(2));
        let connection =
            ConnectionManager::new_lazy_with_config(client, config).map_err(|e| e.to_string())?;
        Ok(RedisStore {
            backend: Backend::Single(connection),
            prefix: prefix.to_owned(),
            wait_replicas: 0,
            timeout,
        })
    }

    /// The store `[replay]` describes (its `store` being "redis"); every mode connects
    /// lazily.
    pub fn from_config(config: &ReplayConfig) -> Result<RedisStore, String> {
        let timeout = config.redis_timeout;
        let mut store = match &config.redis_mode {
            RedisMode::Single => RedisStore::new(
                config.redis_url.as_deref().unwrap_or_default(),
                &config.key_prefix,
                timeout,
            )?,
            RedisMode::Sentinel { master } => RedisStore {
                backend: Backend::Sentinel(Sentinel::new(&config.redis_nodes, master, timeout)?),
                prefix: config.key_prefix.clone(),
                wait_replicas: 0,
                timeout,
            },
            RedisMode::Cluster => RedisStore {
                backend: Backend::Cluster(Cluster::new(&config.redis_nodes, timeout)?),
                prefix: config.key_prefix.clone(),
                wait_replicas: 0,
                timeout,
            },
        };
        store.wait_replicas = config.redis_wait_replicas;
        Ok(store)
    }

    /// `prefix` + hex SHA-256 of `iss NUL jti`.
    pub fn key(&self, iss: &str, jti: &str) -> String {
        let mut input = Vec::with_capacity(iss.len() + 1 + jti.len());
        input.extend_from_slice(iss.as_bytes());
        input.push(0);
        input.extend_from_slice(jti.as_bytes());
        let hash = digest(&SHA256, &input);
        let mut key = String::with_capacity(self.prefix.len() + 64);
        key.push_str(&self.prefix);
        for byte in hash.as_ref() {
            key.push_str(&format!("{byte:02x}"));
        }
        key
    }

    async fn with_timeout<T>(
        &self,
        what: &str,
        call: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, ReplayError> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(ReplayError::Unavailable(format!("redis {what}: {e}"))),
            Err(_) => {
                self.backend.timed_out();
                Err(ReplayError::Unavailable(format!(
                    "redis {what}: no answer within {:?}",
                    self.timeout
                )))
            }
        }
    }
}

impl ReplayStore for RedisStore {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn check_and_insert<'a>(
        &'a self,
        iss: &'a str,
        jti: &'a str,
        now: u64,
        keep_until: u64,
    ) -> StoreFuture<'a, Result<Freshness, ReplayError>> {
        Box::pin(async move {
            let ttl_ms = keep_until.saturating_sub(now).max(1).saturating_mul(1000);
            let mut set = redis::cmd("SET");
            set.arg(self.key(iss, jti))
                .arg(1)
                .arg("NX")
                .arg("PX")
                .arg(ttl_ms);
            if self.wait_replicas == 0 {
                let answer: Option<String> = self
                    .with_timeout("SET", self.backend.run(Request::Cmd(&set)))
                    .await?;
                return Ok(match answer {
                    Some(_) => Freshness::Fresh,
                    None => Freshness::Replayed,
                });
            }
            // SET and WAIT on the same connection: WAIT counts the replicas that have every
            // write this connection made so far, the SET included. It waits half the call's
            // time, so that its count comes back before the call times out.
            let wait_ms = u64::try_from(self.timeout.as_millis() / 2)
                .unwrap_or(u64::MAX)
                .max(1);
            let mut pipe = redis::pipe();
            pipe.add_command(set)
                .cmd("WAIT")
                .arg(self.wait_replicas)
                .arg(wait_ms);
            let (answer, replicas): (Option<String>, u64) = self
                .with_timeout("SET+WAIT", self.backend.run(Request::Pipe(&pipe)))
                .await?;
            match answer {
                None => Ok(Freshness::Replayed),
                Some(_) if replicas >= u64::from(self.wait_replicas) => Ok(Freshness::Fresh),
                Some(_) => Err(ReplayError::Unavailable(format!(
                    "redis WAIT: the jti reached {replicas} of {} replicas",
                    self.wait_replicas
                ))),
            }
        })
    }

    fn ping(&self) -> StoreFuture<'_, Result<(), ReplayError>> {
        Box::pin(async move {
            let ping = redis::cmd("PING");
            let _: String = self
                .with_timeout("PING", self.backend.run(Request::Cmd(&ping)))
                .await?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keys_are_bounded_and_separate_issuers() {
        let store = RedisStore::new(
            "redis://127.0.0.1:1",
            "hti-guard:jti:",
            Duration::from_millis(50),
        )
        .unwrap();
        let a = store.key("https://portal", &"j".repeat(10_000));
        assert_eq!(a.len(), "hti-guard:jti:".len() + 64);
        assert_ne!(store.key("a", "bc"), store.key("ab", "c"));
    }

    #[tokio::test]
    async fn a_dead_server_is_unavailable_not_fresh() {
        let store =
            RedisStore::new("redis://127.0.0.1:1", "p:", Duration::from_millis(200)).unwrap();
        let result = store
            .check_and_insert("i", "0123456789abcdef", 100, 200)
            .await;
        assert!(
            matches!(result, Err(ReplayError::Unavailable(_))),
            "{result:?}"
        );
        assert!(store.ping().await.is_err());
    }

    /// A `[replay]` on Redis in `mode`, its nodes on a closed loopback port.
    fn dead(mode: RedisMode) -> ReplayConfig {
        ReplayConfig {
            store: crate::config::ReplayStoreKind::Redis,
            max_entries: 1,
            redis_mode: mode,
            redis_url: None,
            redis_nodes: vec!["redis://127.0.0.1:1".into(), "redis://127.0.0.1:2".into()],
            redis_wait_replicas: 1,
            redis_timeout: Duration::from_millis(200),
            key_prefix: "p:".into(),
        }
    }

    #[tokio::test]
    async fn dead_sentinels_and_a_dead_cluster_are_unavailable_not_fresh() {
        let sentinel = RedisMode::Sentinel {
            master: "mymaster".into(),
        };
        for mode in [sentinel, RedisMode::Cluster] {
            let store = RedisStore::from_config(&dead(mode.clone())).unwrap();
            for _ in 0..2 {
                let result = store
                    .check_and_insert("i", "0123456789abcdef", 100, 200)
                    .await;
                assert!(
                    matches!(result, Err(ReplayError::Unavailable(_))),
                    "{mode:?}: {result:?}"
                );
                assert!(store.ping().await.is_err(), "{mode:?}");
            }
        }
    }

    #[test]
    fn tls_and_credentials_of_the_nodes_are_accepted() {
        for mode in [
            RedisMode::Sentinel {
                master: "mymaster".into(),
            },
            RedisMode::Cluster,
        ] {
            let mut config = dead(mode.clone());
            config.redis_nodes = vec![
                "rediss://guard:pw@10.0.0.1:26379".into(),
                "rediss://guard:pw@10.0.0.2:26379".into(),
            ];
            assert!(RedisStore::from_config(&config).is_ok(), "{mode:?}");
        }
    }
}
