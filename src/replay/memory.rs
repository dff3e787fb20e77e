//! The in-memory replay store: one process's memory, bounded by `replay.max_entries`,
//! purged in the background. An entry is a 16-byte digest of (iss, jti) and a 4-byte expiry,
//! stored inline in the map: no allocation per entry.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::digest;
use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::{Freshness, ReplayError, ReplayStore, StoreFuture};

/// The key of an entry: the first 16 bytes of SHA-256 over (iss, jti).
///
/// 128 bits are enough. By chance: with n live entries the probability that any two
/// different (iss, jti) pairs share a key is at most n² / 2^129, about 1.5e-27 for
/// n = 10^6 (and 1.5e-23 for 10^8, far past any `max_entries`). On purpose: a collision
/// needs about 2^64 SHA-256 evaluations, and matching one given entry about 2^128; and the
/// tokens would have to be signed by a configured portal anyway, because the replay check
/// comes after the signature. And a collision fails safe: a fresh launch is refused as
/// `replayed`, a replay is never accepted.
type Key = [u8; 16];

/// The in-memory store: one process's memory, bounded by `max_entries`.
pub struct MemoryStore {
    /// Key -> the UNIX second until which the jti is kept (see `expiry`).
    entries: DashMap<Key, u32>,
    len: AtomicUsize,
    max_entries: usize,
    purge_now: Arc<Notify>,
}

/// How often expired entries are removed.
const PURGE_INTERVAL: Duration = Duration::from_secs(5);

/// An expiry in UNIX seconds as stored: u32 lasts until 2106; a later one is kept until then,
/// which only keeps it longer.
fn expiry(keep_until: u64) -> u32 {
    u32::try_from(keep_until).unwrap_or(u32::MAX)
}

impl MemoryStore {
    pub fn new(max_entries: usize) -> Arc<Self> {
        Arc::new(MemoryStore {
            entries: DashMap::new(),
            len: AtomicUsize::new(0),
            max_entries,
            purge_now: Arc::new(Notify::new()),
        })
    }

    /// The iss is length-prefixed, so no (iss, jti) split of the same bytes shares a key,
    /// whatever characters either holds.
    fn key(iss: &str, jti: &str) -> Key {
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(&(iss.len() as u64).to_be_bytes());
        ctx.update(iss.as_bytes());
        ctx.update(jti.as_bytes());
        let mut key = [0u8; 16];
        key.copy_from_slice(&ctx.finish().as_ref()[..16]);
        key
    }

    /// The synchronous check-and-insert behind the trait.
    pub fn check(
        &self,
        iss: &str,
        jti: &str,
        now: u64,
        keep_until: u64,
    ) -> Result<Freshness, ReplayError> {
        match self.entries.entry(Self::key(iss, jti)) {
            Entry::Occupied(mut entry) => {
                if u64::from(*entry.get()) > now {
                    Ok(Freshness::Replayed)
                } else {
                    // Expired but not purged yet: the slot is reused.
                    entry.insert(expiry(keep_until));
                    Ok(Freshness::Fresh)
                }
            }
            Entry::Vacant(entry) => {
                if self.len.fetch_add(1, Ordering::AcqRel) >= self.max_entries {
                    self.len.fetch_sub(1, Ordering::AcqRel);
                    self.purge_now.notify_one();
                    return Err(ReplayError::Full);
                }
                entry.insert(expiry(keep_until));
                Ok(Freshness::Fresh)
            }
        }
    }

    /// Remove every entry whose time has passed; returns how many went.
    pub fn purge(&self, now: u64) -> usize {
        let mut removed = 0;
        self.entries.retain(|_, until| {
            let keep = u64::from(*until) > now;
            if !keep {
                removed += 1;
            }
            keep
        });
        self.len.fetch_sub(removed, Ordering::AcqRel);
        removed
    }
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    /// The most entries it holds (`replay.max_entries`).
    pub fn capacity(&self) -> usize {
        self.max_entries
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Start the purge task; abort the handle to stop it.
    pub fn start_purging(self: &Arc<Self>) -> JoinHandle<()> {
        let store = Arc::downgrade(self);
        let purge_now = self.purge_now.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(PURGE_INTERVAL) => {}
                    _ = purge_now.notified() => {}
                }
                let Some(s) = store.upgrade() else { return };
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                let removed = s.purge(now);
                if removed > 0 {
                    tracing::debug!(removed, remaining = s.len(), "replay store purged");
                }
            }
        })
    }
}

impl ReplayStore for MemoryStore {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn check_and_insert<'a>(
        &'a self,
        iss: &'a str,
        jti: &'a str,
        now: u64,
        keep_until: u64,
    ) -> StoreFuture<'a, Result<Freshness, ReplayError>> {
        let result = self.check(iss, jti, now, keep_until);
        Box::pin(std::future::ready(result))
    }

    fn ping(&self) -> StoreFuture<'_, Result<(), ReplayError>> {
        Box::pin(std::future::ready(Ok(())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_use_is_a_replay_until_expiry() {
        let s = MemoryStore::new(10);
        assert_eq!(s.check("i", "j", 100, 200), Ok(Freshness::Fresh));
        assert_eq!(s.check("i", "j", 150, 200), Ok(Freshness::Replayed));
        assert_eq!(s.check("other", "j", 150, 200), Ok(Freshness::Fresh));
        assert_eq!(s.check("i", "j", 200, 300), Ok(Freshness::Fresh));
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn a_full_store_refuses_and_never_forgets() {
        let s = MemoryStore::new(2);
        assert_eq!(s.check("i", "a", 100, 200), Ok(Freshness::Fresh));
        assert_eq!(s.check("i", "b", 100, 300), Ok(Freshness::Fresh));
        assert_eq!(s.check("i", "c", 100, 300), Err(ReplayError::Full));
        assert_eq!(s.check("i", "a", 150, 200), Ok(Freshness::Replayed));
        assert_eq!(s.purge(250), 1);
        assert_eq!(s.check("i", "c", 250, 300), Ok(Freshness::Fresh));
        assert_eq!(s.check("i", "b", 250, 300), Ok(Freshness::Replayed));
    }

    #[test]
    fn concurrent_inserts_accept_exactly_one() {
        let s = MemoryStore::new(100);
        let fresh = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for _ in 0..16 {
                scope.spawn(|| {
                    if s.check("i", "same", 1, 100) == Ok(Freshness::Fresh) {
                        fresh.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
        });
        assert_eq!(fresh.into_inner(), 1);
    }

    #[test]
    fn keys_separate_iss_from_jti() {
        assert_eq!(MemoryStore::key("i", "j"), MemoryStore::key("i", "j"));
        assert_ne!(MemoryStore::key("ab", "c"), MemoryStore::key("a", "bc"));
        assert_ne!(MemoryStore::key("a b", "c"), MemoryStore::key("a", "b c"));
        assert_ne!(MemoryStore::key("", "ij"), MemoryStore::key("i", "j"));
        let s = MemoryStore::new(10);
        assert_eq!(s.check("ab", "cdefgh", 100, 200), Ok(Freshness::Fresh));
        assert_eq!(s.check("a", "bcdefgh", 100, 200), Ok(Freshness::Fresh));
    }

    #[test]
    fn expiries_past_2106_are_kept() {
        let s = MemoryStore::new(10);
        let far = u64::from(u32::MAX) + 10;
        assert_eq!(s.check("i", "j", 100, far), Ok(Freshness::Fresh));
        assert_eq!(s.check("i", "j", far - 100, far), Ok(Freshness::Replayed));
        assert_eq!(s.purge(1_000_000), 0);
    }
}
