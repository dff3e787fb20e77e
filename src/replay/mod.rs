//! Single use of `jti`: the `ReplayStore` trait, the in-memory store (one process) and the
//! Redis store (shared by replicas). An entry is kept until the token's
//! `exp + clock_skew`; check-and-insert is atomic; a store that cannot answer, or is full,
//! refuses launches instead of accepting one unchecked or forgetting a live jti.

mod memory;
mod redis;
mod redis_ha;

pub use memory::MemoryStore;
pub use redis::RedisStore;

use std::future::Future;
use std::pin::Pin;

/// A boxed future, so that stores can be chosen at run time.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Whether a jti was new.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    Fresh,
    Replayed,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ReplayError {
    #[error("the replay store is full")]
    Full,
    #[error("{0}")]
    Unavailable(String),
}

/// Remembers (iss, jti) pairs until they expire.
pub trait ReplayStore: Send + Sync {
    /// The `store` label of the metrics.
    fn name(&self) -> &'static str;

    /// Atomically record (iss, jti) until `keep_until` (UNIX seconds), or say it was seen.
    fn check_and_insert<'a>(
        &'a self,
        iss: &'a str,
        jti: &'a str,
        now: u64,
        keep_until: u64,
    ) -> StoreFuture<'a, Result<Freshness, ReplayError>>;

    /// Whether the store answers (readiness).
    fn ping(&self) -> StoreFuture<'_, Result<(), ReplayError>>;
}
