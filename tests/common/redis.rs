//! Real `redis-server` processes on loopback ports for the replay-store tests: a plain or a
//! durable server, a replica, a Sentinel, a Redis Cluster node; each can be SIGKILLed and
//! restarted on its port and data directory, and is stopped on drop. `redis-cli` runs
//! commands against them. Without `redis-server` on the PATH, [`redis_installed`] says so
//! (a failure under CI).

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use super::host::{TempDir, eventually, free_port, needs, path_str, probe, reap};

/// The bound on a server coming up.
const UP: Duration = Duration::from_secs(30);

/// Whether `redis-server` (and so `redis-cli`) is here; a note, or a failure under CI.
pub fn redis_installed() -> bool {
    let installed = probe("redis-server", &["--version"]);
    needs(
        (!installed)
            .then(|| "redis-server is not installed (apt-get install redis-server)".to_string()),
    )
}

/// One `redis-server` process with its port, data directory and command line.
pub struct Redis {
    pub port: u16,
    dir: TempDir,
    /// A config file written into `dir` first (Sentinel needs one it can rewrite).
    config: Option<String>,
    args: Vec<String>,
    /// `requirepass` (and `masterauth`), used by [`Redis::cli`] and the PING wait too.
    password: Option<String>,
    child: Option<Child>,
}

impl Redis {
    /// A server without persistence, or `None` when redis-server is not installed.
    pub async fn start() -> Option<Redis> {
        Self::start_with(&[]).await
    }

    /// A server whose every write is on disk before it answers (`appendfsync always`), so
    /// that a SIGKILL loses nothing it confirmed.
    pub async fn durable() -> Option<Redis> {
        Self::start_with(&["--appendonly", "yes", "--appendfsync", "always"]).await
    }

    /// A server with these extra arguments.
    pub async fn start_with(args: &[&str]) -> Option<Redis> {
        if !redis_installed() {
            return None;
        }
        let mut redis = Redis::new(None, args);
        redis.run().await;
        Some(redis)
    }

    /// A server not yet started (see [`Redis::run`]); `config`: the text of its config file.
    pub fn new(config: Option<String>, args: &[&str]) -> Redis {
        Redis {
            port: free_port(),
            dir: TempDir::new(),
            config,
            args: args.iter().map(|a| a.to_string()).collect(),
            password: None,
            child: None,
        }
    }

    /// The same, with a password: clients, replicas and Sentinels must give it.
    pub fn password(mut self, password: &str) -> Redis {
        self.args.extend(["--requirepass".into(), password.into()]);
        if !self.args.iter().any(|a| a == "--sentinel") {
            self.args.extend(["--masterauth".into(), password.into()]);
        }
        self.password = Some(password.into());
        self
    }

    /// A replica of the server on `master` (see [`Redis::password`] for its `masterauth`).
    pub fn replica_of(master: u16) -> Redis {
        Redis::new(None, &["--replicaof", "127.0.0.1", &master.to_string()])
    }

    /// A Sentinel watching the master `name` on `master` (quorum 2, down after 1 s), which
    /// gives `auth_pass` to the master and replicas.
    pub fn sentinel(name: &str, master: u16, auth_pass: Option<&str>) -> Redis {
        let mut config = format!(
            "sentinel monitor {name} 127.0.0.1 {master} 2\n\
             sentinel down-after-milliseconds {name} 1000\n\
             sentinel failover-timeout {name} 3000\n\
             sentinel parallel-syncs {name} 1\n"
        );
        if let Some(pass) = auth_pass {
            config.push_str(&format!("sentinel auth-pass {name} {pass}\n"));
        }
        Redis::new(Some(config), &["--sentinel"])
    }

    /// A node of a Redis Cluster (not yet joined), its bus on a free port of its own (the
    /// default, port + 10000, may be out of range).
    pub fn cluster_node() -> Redis {
        Redis::new(
            None,
            &[
                "--cluster-enabled",
                "yes",
                "--cluster-port",
                &free_port().to_string(),
                "--cluster-node-timeout",
                "1000",
                "--cluster-config-file",
                "nodes.conf",
            ],
        )
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// (Re)starts it on its port and data directory; waits until it answers PING.
    pub async fn run(&mut self) {
        let mut command = Command::new("redis-server");
        if let Some(text) = &self.config
            && !self.dir.join("redis.conf").exists()
        {
            self.dir.write("redis.conf", text);
        }
        if self.config.is_some() {
            command.arg(self.dir.join("redis.conf"));
        }
        command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--dir", path_str(self.dir.path())])
            .args(&self.args);
        if !self.args.iter().any(|a| a == "--appendonly") {
            command.args(["--appendonly", "no"]);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let (port, password) = (self.port, self.password.as_deref());
        eventually(UP, "redis-server answering PING", || ping(port, password)).await;
    }

    /// SIGKILL, and waits (bounded) for the exit.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.start_kill().expect("SIGKILL redis-server");
            reap(&mut child, "redis-server", UP).await;
        }
    }

    /// `redis-cli -p PORT [-a PASSWORD] args...`: its standard output, trimmed.
    pub async fn cli(&self, args: &[&str]) -> String {
        match &self.password {
            Some(password) => {
                let mut with = vec!["--no-auth-warning", "-a", password.as_str()];
                with.extend(args);
                cli(self.port, &with).await
            }
            None => cli(self.port, args).await,
        }
    }
}

/// Whether the server on `port` answers `PING` with `PONG` (after `AUTH password`).
pub async fn ping(port: u16, password: Option<&str>) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    let (mut request, mut expect) = (String::new(), String::new());
    if let Some(password) = password {
        request.push_str(&format!("AUTH {password}\r\n"));
        expect.push_str("+OK\r\n");
    }
    request.push_str("PING\r\n");
    expect.push_str("+PONG\r\n");
    let mut answer = vec![0u8; expect.len()];
    stream.write_all(request.as_bytes()).await.is_ok()
        && stream.read_exact(&mut answer).await.is_ok()
        && answer == expect.as_bytes()
}

/// `redis-cli -p port args...`, bounded: its standard output, trimmed.
pub async fn cli(port: u16, args: &[&str]) -> String {
    let output = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(UP, output)
        .await
        .expect("redis-cli within 30 s")
        .expect("run redis-cli");
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}
