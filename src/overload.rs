//! Staying up under a memory limit, as Envoy's overload manager does: a cheap periodic read
//! of the process's resident set size, and above 90 % of `limits.max_memory` the guard
//! refuses new requests (503 `overloaded`, `/readyz` not ready) instead of growing until
//! the kernel kills it. Reads `/proc` only; elsewhere there is no size to read. (The limits
//! the defaults of `[limits]` come from are read by `config`.)

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// How often the resident set size is read.
const EVERY: Duration = Duration::from_millis(250);
/// Refuse new work at or above this share of the limit (in percent) ...
const ENTER_PERCENT: u64 = 90;
/// ... and take it again below this one, so that the state does not flap.
const LEAVE_PERCENT: u64 = 85;

/// Whether the guard is over its memory limit; shared by the monitor, the listener and
/// `/readyz`.
#[derive(Debug)]
pub(crate) struct Overload {
    limit: u64,
    overloaded: AtomicBool,
    resident: AtomicU64,
}

impl Overload {
    /// A monitor for `limit` bytes; [`Overload::start`] begins reading.
    pub(crate) fn new(limit: u64) -> Arc<Overload> {
        Arc::new(Overload {
            limit,
            overloaded: AtomicBool::new(false),
            resident: AtomicU64::new(0),
        })
    }

    /// Whether new requests are refused now.
    pub(crate) fn is_overloaded(&self) -> bool {
        self.overloaded.load(Ordering::Relaxed)
    }

    /// Why the guard refuses work, for `/readyz`; `None` while it takes work.
    pub(crate) fn describe(&self) -> Option<String> {
        self.is_overloaded().then(|| {
            format!(
                "overloaded: resident memory {} MiB of limits.max_memory {} MiB",
                self.resident.load(Ordering::Relaxed) / (1024 * 1024),
                self.limit / (1024 * 1024),
            )
        })
    }

    /// Take in one reading of the resident set size (in bytes).
    pub(crate) fn observe(&self, resident: u64) {
        self.resident.store(resident, Ordering::Relaxed);
        let percent = resident.saturating_mul(100) / self.limit.max(1);
        let was = self.is_overloaded();
        let now = if was {
            percent >= LEAVE_PERCENT
        } else {
            percent >= ENTER_PERCENT
        };
        if now != was {
            self.overloaded.store(now, Ordering::Relaxed);
            let mib = resident / (1024 * 1024);
            let limit_mib = self.limit / (1024 * 1024);
            if now {
                tracing::warn!(
                    resident_mib = mib,
                    limit_mib,
                    "memory near limits.max_memory: refusing new requests"
                );
            } else {
                tracing::info!(
                    resident_mib = mib,
                    limit_mib,
                    "memory below limits.max_memory again: taking requests"
                );
            }
        }
    }

    /// Read the resident set size every 250 ms, on the current runtime, until aborted.
    pub(crate) fn start(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                match resident_bytes() {
                    Some(resident) => this.observe(resident),
                    None => {
                        tracing::warn!("cannot read /proc/self/status: memory limit not watched");
                        return;
                    }
                }
            }
        })
    }
}

/// The process's resident set size (`VmRSS` of `/proc/self/status`), in bytes.
pub(crate) fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status_kib(&status, "VmRSS:").map(|kib| kib * 1024)
}

/// A `NAME: <n> kB` line of `/proc/<pid>/status`.
fn status_kib(status: &str, name: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(name))?;
    line[name.len()..].split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_above_ninety_percent_and_takes_work_below_eighty_five() {
        let o = Overload::new(1000);
        o.observe(899);
        assert!(!o.is_overloaded() && o.describe().is_none());
        o.observe(900);
        assert!(o.is_overloaded());
        assert!(o.describe().unwrap().contains("limits.max_memory"));
        o.observe(860);
        assert!(o.is_overloaded(), "no flapping between 85 and 90 %");
        o.observe(849);
        assert!(!o.is_overloaded());
    }

    #[test]
    fn reads_proc_status() {
        let status = "Name:\thti-guard\nVmHWM:\t   9000 kB\nVmRSS:\t    8708 kB\n";
        assert_eq!(status_kib(status, "VmRSS:"), Some(8708));
        assert!(resident_bytes().is_some_and(|n| n > 0));
    }
}
