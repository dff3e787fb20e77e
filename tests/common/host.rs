//! What the tests take from the machine: temp directories and config files in them, loopback
//! ports, and waiting until a server answers `/readyz`.

use std::io::Write;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::guard::client;
use super::mint::random_hex;

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        let dir = std::env::temp_dir().join(format!("hti-guard-test-{}", random_hex(6)));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// Writes `contents` to `name` in this directory and gives its path.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.join(name);
        std::fs::write(&path, contents).expect("write temp file");
        path
    }

    /// Leaves the directory in place and gives its path.
    pub fn keep(self) -> PathBuf {
        let dir = std::mem::ManuallyDrop::new(self);
        dir.0.clone()
    }
}

/// Writes `contents` to `name` in a fresh temp directory that stays (for a file a guard may
/// read at any time while the test runs), and gives its path.
pub fn temp_file(name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
    let dir = TempDir::new();
    let path = dir.write(name, contents);
    dir.keep();
    path
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A config file in its own temp directory, removed on drop.
pub struct ConfigFile {
    pub dir: TempDir,
    path: PathBuf,
}

impl ConfigFile {
    pub fn new(text: &str) -> ConfigFile {
        let dir = TempDir::new();
        let path = dir.write("guard.toml", text);
        ConfigFile { dir, path }
    }

    pub fn path(&self) -> &str {
        path_str(&self.path)
    }
}

/// A path as the `&str` a command line takes.
pub fn path_str(path: &Path) -> &str {
    path.to_str().expect("UTF-8 temp path")
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .expect("bind a free port")
        .local_addr()
        .expect("local addr")
        .port()
}

/// `http://127.0.0.1:PORT` where nothing listens.
pub fn closed_origin() -> String {
    format!("http://127.0.0.1:{}", free_port())
}

/// A JWKS URL where nothing listens.
pub fn closed_url() -> String {
    format!("{}/jwks", closed_origin())
}

/// Whether `program args...` runs and exits 0: a probe for a tool a test may need.
pub fn probe(program: &str, args: &[&str]) -> bool {
    std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Whether a test has what it needs outside Rust: `missing` says what is not there (and how
/// to get it). Missing is a failure under CI (`CI` set), elsewhere a note, and the test
/// passes without running.
pub fn needs(missing: Option<String>) -> bool {
    let Some(what) = missing else {
        return true;
    };
    assert!(
        std::env::var_os("CI").is_none(),
        "the test cannot run, and CI is set: {what}"
    );
    eprintln!("note: skipping: {what}");
    false
}

/// A listener on an ephemeral loopback port, for the mock `what`.
pub async fn loopback(what: &str) -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|error| panic!("bind {what}: {error}"));
    let addr = listener.local_addr().expect("local addr");
    (listener, addr)
}

/// Accepts connections on `listener` until the task is aborted, handing each to `serve`
/// (which spawns what it needs).
pub fn accept_each(
    listener: TcpListener,
    mut serve: impl FnMut(TcpStream) + Send + 'static,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            if let Ok((stream, _)) = listener.accept().await {
                serve(stream);
            }
        }
    })
}

/// Polls `url` until it answers 200. Gives `false` as soon as `gone` says the server has
/// stopped; panics with the last answer after `limit`.
pub async fn wait_ok(url: &str, limit: Duration, mut gone: impl FnMut() -> bool) -> bool {
    let client = client();
    let deadline = tokio::time::Instant::now() + limit;
    let mut last;
    loop {
        if gone() {
            return false;
        }
        match client.get(url).timeout(Duration::from_secs(2)).send().await {
            Ok(response) if response.status() == 200 => return true,
            Ok(response) => {
                last = format!(
                    "{} {}",
                    response.status(),
                    response.text().await.unwrap_or_default()
                )
            }
            Err(error) => last = error.to_string(),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{url} not 200 within {limit:?}; last: {last}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads one HTTP/1.1 response from `stream`, byte by byte up to the end of its head (so
/// nothing of a next response is taken), then its Content-Length body: its status and body.
pub async fn read_http1_response(stream: &mut TcpStream) -> (u16, String) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = stream.read(&mut byte).await.unwrap();
        assert_eq!(n, 1, "connection closed in the response head: {head:?}");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    let status = head[9..12].parse().unwrap();
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .map_or(0, |value| value.trim().parse().unwrap());
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await.unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Polls `check` every 50 ms until it holds; panics with `what` after `limit`.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits, at most `limit`, for `child` (signalled to stop before) to exit, by polling `try_wait`
/// (`waitpid` with `WNOHANG`), so that a missed SIGCHLD or pidfd wake-up cannot hang a test.
pub async fn reap(
    child: &mut tokio::process::Child,
    what: &str,
    limit: Duration,
) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what} did not exit within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A bound on a whole test that does not rely on its runtime: if the test is still running
/// after the limit, a thread of its own prints the stage it was in and ends the test binary
/// with a failure, rather than leaving CI to time out with nothing said.
pub struct Watchdog {
    stage: std::sync::Arc<std::sync::Mutex<String>>,
    _alive: std::sync::mpsc::Sender<()>,
}

impl Watchdog {
    pub fn new(test: &'static str, limit: Duration) -> Watchdog {
        let stage = std::sync::Arc::new(std::sync::Mutex::new("starting".to_string()));
        let (alive, dropped) = std::sync::mpsc::channel::<()>();
        let seen = stage.clone();
        std::thread::spawn(move || {
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = dropped.recv_timeout(limit) {
                let stage = seen.lock().map(|s| s.clone()).unwrap_or_default();
                // Straight to the process's stderr: the test harness captures `eprintln!`
                // (in this thread too) and would drop it at the exit.
                let _ = writeln!(
                    std::io::stderr(),
                    "{test}: still running after {limit:?}, at: {stage}"
                );
                std::process::exit(101);
            }
        });
        Watchdog {
            stage,
            _alive: alive,
        }
    }

    /// Names the stage the test is in now.
    pub fn stage(&self, stage: &str) {
        if let Ok(mut current) = self.stage.lock() {
            *current = stage.to_string();
        }
    }
}
