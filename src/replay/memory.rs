//! The in-memory replay store: one process's memory, bounded by `replay.max_entries`,
//! purged in the background.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::{Freshness, ReplayError, ReplayStore, StoreFuture};

/// The in-memory store: one process's memory, bounded by `max_entries`.
pub struct MemoryStore {
    entries: DashMap<Box<str>, u64>,
    len: AtomicUsize,
    max_entries: usize,
    purge_now: Arc<Notify>,
}

/// How often expired entries are removed.
const PURGE_INTERVAL: Duration = Duration::from_secs(5);

impl MemoryStore {
    pub fn new(max_entries: usize) -> Arc<Self> {
        Arc::new(MemoryStore {
            entries: DashMap::new(),
            len: AtomicUsize::new(0),
            max_entries,
            purge_now: Arc::new(Notify::new()),
        })
    }

    /// The iss is configured and holds no space, so "iss jti" is unambiguous.
    fn key(iss: &str, jti: &str) -> Box<str> {
        let mut key = String::with_capacity(iss.len() + 1 + jti.len());
        key.push_str(iss);
        key.push(' ');
        key.push_str(jti);
        key.into_boxed_str()
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
                if *entry.get() > now {
                    Ok(Freshness::Replayed)
                } else {
                    // Expired but not purged yet: the slot is reused.
                    entry.insert(keep_until);
                    Ok(Freshness::Fresh)
                }
            }
            Entry::Vacant(entry) => {
                if self.len.fetch_add(1, Ordering::AcqRel) >= self.max_entries {
                    self.len.fetch_sub(1, Ordering::AcqRel);
                    self.purge_now.notify_one();
                    return Err(ReplayError::Full);
                }
                entry.insert(keep_until);
                Ok(Freshness::Fresh)
            }
        }
    }

    /// Remove every entry whose time has passed; returns how many went.
    pub fn purge(&self, now: u64) -> usize {
        let mut removed = 0;
        self.entries.retain(|_, until| {
            let keep = *until > now;
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
}
