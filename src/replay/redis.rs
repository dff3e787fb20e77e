//! The Redis replay store, shared by every replica: one atomic `SET key 1 NX PX ttl` per
//! launch. The key is a configurable prefix and the SHA-256 of (iss, jti), so its length is
//! bounded whatever the token holds. Every call has a timeout; an error or a timeout is
//! `Unavailable` (the launch is refused, never accepted unchecked). The connection manager
//! reconnects by itself.

use std::time::Duration;

use aws_lc_rs::digest::{SHA256, digest};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{Freshness, ReplayError, ReplayStore, StoreFuture};

/// A replay store on a Redis server (single primary; see README on Cluster).
pub struct RedisStore {
    connection: ConnectionManager,
    prefix: String,
    timeout: Duration,
}

impl RedisStore {
    /// Set up the client for `url` (`redis://` or `rediss://`, credentials in the URL). The
    /// connection is made lazily, so the guard starts while Redis is down and reports it
    /// on `/readyz`.
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
            connection,
            prefix: prefix.to_owned(),
            timeout,
        })
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
            Err(_) => Err(ReplayError::Unavailable(format!(
                "redis {what}: no answer within {:?}",
                self.timeout
            ))),
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
            let mut connection = self.connection.clone();
            let set: Option<String> = self
                .with_timeout(
                    "SET",
                    redis::cmd("SET")
                        .arg(self.key(iss, jti))
                        .arg(1)
                        .arg("NX")
                        .arg("PX")
                        .arg(ttl_ms)
                        .query_async(&mut connection),
                )
                .await?;
            Ok(match set {
                Some(_) => Freshness::Fresh,
                None => Freshness::Replayed,
            })
        })
    }

    fn ping(&self) -> StoreFuture<'_, Result<(), ReplayError>> {
        Box::pin(async move {
            let mut connection = self.connection.clone();
            let _: String = self
                .with_timeout("PING", redis::cmd("PING").query_async(&mut connection))
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
}
