//! Reloading the configuration without a restart. SIGHUP (through a [`ReloadHandle`]) and,
//! with `reload.watch`, a change of the configuration file's content ask for a reload; one
//! task reads the configuration again (the same file, environment overrides included), so
//! a burst of asks is one reload. An invalid configuration is refused and the old one
//! stays; the keys below that need a restart are logged and the rest applies. What a
//! reload builds and swaps is the wiring's (`lib.rs`); this module knows only `Config`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::config::{Config, ConfigError};
use crate::metrics::{Metrics, ReloadResult};

/// Reads the configuration again; the binary passes the path and environment it started
/// with.
type Load = Box<dyn Fn() -> Result<Config, ConfigError> + Send + Sync>;

/// Where a reload reads the configuration from, and the asks for one.
pub struct Reloader {
    load: Load,
    /// The file `reload.watch` polls.
    file: Option<PathBuf>,
    asked: Arc<Notify>,
}

/// Asks the guard to reload its configuration; cheap to clone.
#[derive(Clone)]
pub struct ReloadHandle {
    asked: Arc<Notify>,
}

impl ReloadHandle {
    /// Ask for a reload. Asks that come while one waits are one reload.
    pub fn reload(&self) {
        self.asked.notify_one();
    }
}

impl Reloader {
    /// A reloader that calls `load` for each reload; `file` is the configuration file that
    /// `reload.watch` polls (none: only asks reload).
    pub fn new(
        file: Option<PathBuf>,
        load: impl Fn() -> Result<Config, ConfigError> + Send + Sync + 'static,
    ) -> Reloader {
        Reloader {
            load: Box::new(load),
            file,
            asked: Arc::new(Notify::new()),
        }
    }

    /// A handle that asks this reloader for a reload.
    pub fn handle(&self) -> ReloadHandle {
        ReloadHandle {
            asked: self.asked.clone(),
        }
    }

    /// The file's content now (`None`: unreadable, or no file).
    fn content(&self) -> Option<Vec<u8>> {
        self.file.as_ref().and_then(|f| std::fs::read(f).ok())
    }
}

/// What makes one reload: an ask, or the file's content changed.
#[derive(Debug, Clone, Copy)]
enum Trigger {
    Signal,
    File,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Trigger::Signal => "signal",
            Trigger::File => "file",
        }
    }
}

/// The keys whose new value a reload cannot apply: the listeners, their threads, TLS and
/// limits, the upstream and its pool, the replay store (it holds the live `jti`s) and the
/// drain time are set up once, at start. Compared with the configuration the guard
/// started with, so that a key stays reported until a restart applies it.
pub(crate) fn restart_keys(running: &Config, new: &Config) -> Vec<&'static str> {
    let tls = |c: &Config| {
        c.tls
            .as_ref()
            .map(|t| (t.cert_file.clone(), t.key_file.clone()))
    };
    let shown = |v: &dyn std::fmt::Debug| format!("{v:?}");
    let mut keys = Vec::new();
    let mut differ = |key, changed: bool| {
        if changed {
            keys.push(key);
        }
    };
    differ("listen", running.listen != new.listen);
    differ("admin_listen", running.admin_listen != new.admin_listen);
    differ("workers", running.workers != new.workers);
    differ("tls", tls(running) != tls(new));
    differ("upstream", running.upstream.url != new.upstream.url);
    differ("timeouts", shown(&running.timeouts) != shown(&new.timeouts));
    differ("limits", shown(&running.limits) != shown(&new.limits));
    differ("replay", shown(&running.replay) != shown(&new.replay));
    differ(
        "shutdown_grace",
        running.shutdown_grace != new.shutdown_grace,
    );
    keys
}

/// Start serving reloads until the task is aborted: each ask, or each change of the file's
/// content while `reload.watch` is on, reads the configuration and passes it to `apply`
/// (which builds and swaps, or says why it cannot). `running` is the configuration the
/// guard started with.
pub(crate) fn start(
    reloader: Reloader,
    running: Config,
    metrics: Arc<Metrics>,
    apply: impl FnMut(Config) -> Result<(), String> + Send + 'static,
) -> JoinHandle<()> {
    let seen = reloader.content();
    if let Some(content) = &seen {
        metrics.config_file(hash(content));
    }
    tokio::spawn(serve(reloader, running, metrics, seen, apply))
}

async fn serve(
    reloader: Reloader,
    running: Config,
    metrics: Arc<Metrics>,
    mut seen: Option<Vec<u8>>,
    mut apply: impl FnMut(Config) -> Result<(), String>,
) {
    let mut watch = running.reload.clone();
    loop {
        let trigger = tokio::select! {
            _ = reloader.asked.notified() => Trigger::Signal,
            _ = tokio::time::sleep(watch.watch_interval), if watch.watch && reloader.file.is_some() => {
                let now = reloader.content();
                if now.is_none() || now == seen {
                    continue;
                }
                Trigger::File
            }
        };
        seen = reloader.content();
        let read = seen.as_deref().map(hash);
        let trigger = trigger.as_str();
        let outcome = (reloader.load)()
            .map_err(|e| e.to_string())
            .and_then(|config| {
                let restart = restart_keys(&running, &config);
                let reload = config.reload.clone();
                apply(config).map(|()| (restart, reload))
            });
        let result = match outcome {
            Ok((restart, reload)) => {
                watch = reload;
                if let Some(read) = read {
                    metrics.config_file(read);
                }
                if restart.is_empty() {
                    tracing::info!(trigger, "configuration reloaded");
                    ReloadResult::Ok
                } else {
                    tracing::warn!(
                        trigger,
                        restart = %restart.join(", "),
                        "configuration reloaded, but these keys keep their old value until a restart"
                    );
                    ReloadResult::Partial
                }
            }
            Err(error) => {
                tracing::error!(
                    trigger,
                    %error,
                    "configuration reload refused: the old configuration stays"
                );
                ReloadResult::Error
            }
        };
        metrics.config_loaded(Some(result), unix_now());
    }
}

/// FNV-1a: stable across builds and processes, so that replicas on the same file agree.
fn hash(content: &[u8]) -> u64 {
    content.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

pub(crate) fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
        upstream = "http://127.0.0.1:9"
        [launch]
        audience = "https://module"
        [[issuers]]
        iss = "https://portal"
        jwks_url = "http://127.0.0.1:9/jwks"
        # Set, so that its default (which follows `workers`) does not move with them.
        [limits]
        max_connections = 100
    "#;

    fn config(extra_top: &str, audience: &str) -> Config {
        let text = format!("{extra_top}\n{}", BASE.replace("https://module", audience));
        Config::from_toml_str(&text).unwrap()
    }

    #[test]
    fn the_file_hash_is_stable() {
        // FNV-1a's published test vectors.
        assert_eq!(hash(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(hash(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn only_keys_set_up_at_start_need_a_restart() {
        let running = config("", "https://module");
        assert!(restart_keys(&running, &config("", "https://other")).is_empty());
        let moved = config(
            "listen = \"127.0.0.1:1\"\nworkers = 3\nshutdown_grace = \"1s\"",
            "https://other",
        );
        let mut keys = restart_keys(&running, &moved);
        keys.sort();
        assert_eq!(keys, ["listen", "shutdown_grace", "workers"]);
    }
}
