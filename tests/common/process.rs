//! The `hti-guard` binary as a user runs it: one-shot commands (`check`, `keygen`, ...),
//! `serve` on free ports until ready, and `demo` with the addresses it prints.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

use super::guard::{GuardBuilder, within};
use super::host::{ConfigFile, free_port, reap, wait_ok};

/// The guard binary Cargo built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_hti-guard");

/// How long a command, a start or an exit may take.
const LIMIT: Duration = Duration::from_secs(60);

/// `program args...` with no `HTI_GUARD_*` variables of ours, no stdin, output piped, killed
/// on drop.
pub fn program(program: &str, args: &[&str]) -> Command {
    let mut command = Command::new(program);
    command.args(args);
    for (key, _) in std::env::vars() {
        if key.starts_with("HTI_GUARD_") {
            command.env_remove(key);
        }
    }
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// `hti-guard args...`, as [`program`].
pub fn command(args: &[&str]) -> Command {
    program(BIN, args)
}

/// A command that ran to its end.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Exit code, stdout and stderr in one text, for searching and for failure messages.
    pub fn output(&self) -> String {
        self.to_string()
    }

    /// Stdout as one JSON document.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}):\n{self}"))
    }

    /// The stdout line that starts with `key` (after the indentation).
    pub fn line(&self, key: &str) -> &str {
        self.stdout
            .lines()
            .find(|line| line.trim_start().starts_with(&format!("{key} ")))
            .unwrap_or_else(|| panic!("no line for {key}:\n{self}"))
    }

    /// The audit events the guard logged: the `fields` of each stdout JSON line on the
    /// target `hti_guard::audit`, in order.
    pub fn audit_events(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|line| line["target"] == "hti_guard::audit")
            .map(|line| line["fields"].clone())
            .collect()
    }

    pub fn has(&self, text: &str) -> bool {
        self.stdout.contains(text)
    }

    pub fn assert_ok(&self) -> &Finished {
        assert_eq!(self.code(), Some(0), "{self}");
        self
    }

    /// Asserts exit `code`, nothing on stdout, and one `hti-guard: ` message holding
    /// every one of `words`.
    pub fn assert_error(&self, code: i32, words: &[&str]) {
        assert_eq!(self.code(), Some(code), "{self}");
        assert!(self.stdout.is_empty(), "{self}");
        assert!(self.stderr.starts_with("hti-guard: "), "{self}");
        assert!(!self.stderr.contains("panicked"), "{self}");
        for word in words {
            assert!(self.stderr.contains(word), "{word:?} in {self}");
        }
    }
}

impl fmt::Display for Finished {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.code(),
            self.stdout,
            self.stderr
        )
    }
}

/// Runs `command` to its end (bounded) and gives what it wrote.
pub async fn run(mut command: Command) -> Finished {
    let output = within(LIMIT, "the command to exit", command.output())
        .await
        .expect("run the command");
    Finished {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn collect(mut pipe: impl tokio::io::AsyncRead + Unpin + Send + 'static) -> JoinHandle<String> {
    tokio::spawn(async move {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes).await;
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// `hti-guard serve` on two free loopback ports, its output collected in the background;
/// killed on drop.
pub struct Served {
    child: Child,
    stdout: JoinHandle<String>,
    stderr: JoinHandle<String>,
    pub public: SocketAddr,
    pub admin: SocketAddr,
    _config: ConfigFile,
}

impl Served {
    /// Writes the config, runs `hti-guard serve --config FILE` with `RUST_LOG=rust_log` and
    /// waits until `/readyz` answers 200.
    pub async fn start(builder: GuardBuilder, rust_log: &str) -> Served {
        Served::start_with(builder, |config| {
            let mut command = command(&["serve", "--config", config]);
            command.env("RUST_LOG", rust_log);
            command
        })
        .await
    }

    /// As [`Served::start`], with the command made by `make` from the config file's path.
    pub async fn start_with(builder: GuardBuilder, make: impl FnOnce(&str) -> Command) -> Served {
        let public: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        Served::start_at(builder, public, make).await
    }

    /// As [`Served::start_with`], with the public listener on `public` (a free port the
    /// config already names, e.g. in a callback URL).
    pub async fn start_at(
        builder: GuardBuilder,
        public: SocketAddr,
        make: impl FnOnce(&str) -> Command,
    ) -> Served {
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let text = builder
            .set_str("listen", &public.to_string())
            .set_str("admin_listen", &admin.to_string())
            .toml();
        let config = ConfigFile::new(&text);
        let mut child = make(config.path()).spawn().expect("spawn hti-guard serve");
        let stdout = collect(child.stdout.take().expect("piped stdout"));
        let stderr = collect(child.stderr.take().expect("piped stderr"));
        let mut served = Served {
            child,
            stdout,
            stderr,
            public,
            admin,
            _config: config,
        };
        let child = &mut served.child;
        let ready = wait_ok(&format!("http://{admin}/readyz"), LIMIT, || {
            child.try_wait().expect("try_wait").is_some()
        })
        .await;
        if !ready {
            let finished = served.finish().await;
            panic!("hti-guard serve exited before it was ready:\n{finished}");
        }
        served
    }

    /// URL of `path` on the public listener.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.public)
    }

    /// URL of `path` on the admin listener.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// The process id of what was spawned (the guard itself unless `make` wrapped it).
    pub fn pid(&self) -> u32 {
        self.child.id().expect("child pid")
    }

    /// Sends `signal` (`-TERM`, `-INT`) with kill(1).
    pub async fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("child pid").to_string();
        let status = Command::new("kill")
            .args([signal, &pid])
            .status()
            .await
            .expect("run kill");
        assert!(status.success());
    }

    /// Waits for the exit and gives what it wrote.
    pub async fn finish(mut self) -> Finished {
        let status = reap(&mut self.child, "hti-guard serve", LIMIT).await;
        let stdout = within(LIMIT, "stdout", &mut self.stdout).await.unwrap();
        let stderr = within(LIMIT, "stderr", &mut self.stderr).await.unwrap();
        Finished {
            status,
            stdout,
            stderr,
        }
    }

    /// Kills it and gives what it wrote.
    pub async fn kill(mut self) -> Finished {
        let _ = self.child.start_kill();
        self.finish().await
    }
}

/// `hti-guard demo --port 0 args...`, ready, with the `part: url` lines it printed first;
/// killed on drop.
pub struct DemoRun {
    pub child: Child,
    pub urls: HashMap<String, String>,
    /// The parts in the order they were printed.
    pub order: Vec<String>,
}

impl DemoRun {
    /// Starts the demo, reads `parts` lines of addresses and waits until its guard's
    /// `/readyz` (beside the printed `metrics` URL) answers 200.
    pub async fn start(args: &[&str], parts: usize) -> DemoRun {
        let mut child = command(&["demo", "--port", "0"])
            .args(args)
            .env("RUST_LOG", "warn")
            .stderr(Stdio::null())
            .spawn()
            .expect("start hti-guard demo");
        let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let mut urls = HashMap::new();
        let mut order = Vec::new();
        while urls.len() < parts {
            let line = within(LIMIT, "demo output", lines.next_line())
                .await
                .unwrap()
                .expect("the demo printed where its parts are");
            if let Some((part, url)) = line.split_once(": ") {
                order.push(part.to_string());
                urls.insert(part.to_string(), url.to_string());
            }
        }
        let readyz = urls["metrics"].replace("/metrics", "/readyz");
        let ready = wait_ok(&readyz, LIMIT, || {
            child.try_wait().expect("try_wait").is_some()
        })
        .await;
        assert!(ready, "the demo exited before its guard was ready");
        DemoRun { child, urls, order }
    }
}
