//! The binary: `serve` and `check`, configuration errors (exit 2, naming the key, before any
//! port is bound), environment overrides, JSON logs, and the drain on SIGTERM / SIGINT.

mod common;

use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use common::mint;
use common::*;
use serde_json::Value;
use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

const BIN: &str = env!("CARGO_BIN_EXE_hti-guard");
const LIMIT: Duration = Duration::from_secs(30);

/// A fresh directory under the system temp dir.
fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hti-guard-cli-{}", mint::random_hex(6)));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A loopback port that was free a moment ago.
fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A command for the binary with a clean `HTI_GUARD_*` environment.
fn command(args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command.args(args);
    for (key, _) in std::env::vars() {
        if key.starts_with("HTI_GUARD_") {
            command.env_remove(key);
        }
    }
    command
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

struct Finished {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Finished {
    fn output(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

/// Runs the command to its end (bounded).
async fn run(mut command: Command) -> Finished {
    let output = within(LIMIT, "hti-guard to exit", command.output())
        .await
        .expect("run hti-guard");
    Finished {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// The `fields.message` of each stdout line, checking that every line is a JSON object.
fn log_messages(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let parsed: Value = serde_json::from_str(line)
                .unwrap_or_else(|_| panic!("stdout line is not JSON: {line}"));
            assert!(
                parsed.is_object(),
                "stdout line is not a JSON object: {line}"
            );
            parsed["fields"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

/// A running `serve` with its output collected in the background.
struct Served {
    child: Child,
    stdout: JoinHandle<String>,
    stderr: JoinHandle<String>,
    public: String,
    admin: String,
}

fn collect(mut pipe: impl tokio::io::AsyncRead + Unpin + Send + 'static) -> JoinHandle<String> {
    tokio::spawn(async move {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes).await;
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

impl Served {
    async fn start(builder: GuardBuilder, rust_log: &str) -> (Served, PathBuf) {
        let (public_port, admin_port) = (free_port(), free_port());
        let text = builder
            .set_str("listen", &format!("127.0.0.1:{public_port}"))
            .set_str("admin_listen", &format!("127.0.0.1:{admin_port}"))
            .toml();
        let dir = temp_dir();
        let config = write_config(&dir, &text);
        let mut command = command(&["serve", "--config", config.to_str().unwrap()]);
        command.env("RUST_LOG", rust_log);
        let mut child = command.spawn().expect("spawn hti-guard serve");
        let stdout = collect(child.stdout.take().unwrap());
        let stderr = collect(child.stderr.take().unwrap());
        let mut served = Served {
            child,
            stdout,
            stderr,
            public: format!("http://127.0.0.1:{public_port}"),
            admin: format!("http://127.0.0.1:{admin_port}"),
        };
        served.wait_ready().await;
        (served, dir)
    }

    async fn wait_ready(&mut self) {
        let client = client();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("hti-guard exited early with {status}");
            }
            if let Ok(response) = client
                .get(format!("{}/readyz", self.admin))
                .timeout(Duration::from_secs(2))
                .send()
                .await
                && response.status() == 200
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "hti-guard not ready in 15 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("child pid").to_string();
        let status = Command::new("kill")
            .args([signal, &pid])
            .status()
            .await
            .expect("run kill");
        assert!(status.success());
    }

    /// Waits for the exit and gives (status, stdout, stderr).
    async fn finish(mut self) -> Finished {
        let status = within(
            Duration::from_secs(20),
            "hti-guard to exit after the signal",
            self.child.wait(),
        )
        .await
        .expect("wait");
        let stdout = within(LIMIT, "stdout", self.stdout).await.unwrap();
        let stderr = within(LIMIT, "stderr", self.stderr).await.unwrap();
        Finished {
            status,
            stdout,
            stderr,
        }
    }
}

fn valid_config(upstream: &str, iss: &str, jwks_url: &str) -> GuardBuilder {
    GuardBuilder::new(upstream).issuer(iss, jwks_url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_error_names_the_key_and_binds_nothing() {
    // The configured ports are held here: a guard that bound before validating would fail
    // with an address-in-use error instead of naming the key.
    let public = StdListener::bind("127.0.0.1:0").unwrap();
    let admin = StdListener::bind("127.0.0.1:0").unwrap();
    public.set_nonblocking(true).unwrap();
    admin.set_nonblocking(true).unwrap();
    let text = valid_config(
        "http://127.0.0.1:9",
        "https://portal.example",
        "http://127.0.0.1:9/jwks",
    )
    .set_str("listen", &public.local_addr().unwrap().to_string())
    .set_str("admin_listen", &admin.local_addr().unwrap().to_string())
    .set_str("launch.max_lifetime", "forever")
    .toml();
    let dir = temp_dir();
    let config = write_config(&dir, &text);
    let finished = run(command(&["serve", "--config", config.to_str().unwrap()])).await;
    assert_eq!(finished.status.code(), Some(2), "{}", finished.output());
    assert!(
        finished.output().contains("launch.max_lifetime"),
        "the message names the key: {}",
        finished.output()
    );
    assert!(
        !finished.output().to_lowercase().contains("address in use"),
        "{}",
        finished.output()
    );
    assert!(
        public.accept().is_err() && admin.accept().is_err(),
        "nothing connected"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_in_use_is_logged_before_the_exit() {
    let taken = StdListener::bind("127.0.0.1:0").unwrap();
    let text = valid_config(
        "http://127.0.0.1:9",
        "https://portal.example",
        "http://127.0.0.1:9/jwks",
    )
    .set_str("listen", &taken.local_addr().unwrap().to_string())
    .set_str("admin_listen", &format!("127.0.0.1:{}", free_port()))
    .toml();
    let dir = temp_dir();
    let config = write_config(&dir, &text);
    let finished = run(command(&["serve", "--config", config.to_str().unwrap()])).await;
    assert_eq!(finished.status.code(), Some(1), "{}", finished.output());
    assert!(finished.stderr.contains("listen"), "{}", finished.output());
    // The error line is queued for the logging thread just before main returns.
    assert_eq!(
        log_messages(&finished.stdout),
        ["cannot start"],
        "{}",
        finished.output()
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_errors_name_their_keys() {
    let base = || {
        valid_config(
            "http://127.0.0.1:9",
            "https://portal.example",
            "http://127.0.0.1:9/jwks",
        )
    };
    let cases: Vec<(&str, String)> = vec![
        (
            "launch.bogus_key",
            base().set("launch.bogus_key", "1").toml(),
        ),
        ("colour", base().set_str("colour", "blue").toml()),
        ("upstream", base().unset("upstream").toml()),
        (
            "upstream",
            base().set_str("upstream", "ftp://127.0.0.1/").toml(),
        ),
        ("launch.audience", base().unset("launch.audience").toml()),
        (
            "keys.refresh_min",
            base().set_str("keys.refresh_min", "soon").toml(),
        ),
        (
            "timeouts.upstream_response",
            base().set("timeouts.upstream_response", "30").toml(),
        ),
        (
            "launch.methods",
            base().set("launch.methods", r#"["POST", "BREW"]"#).toml(),
        ),
        (
            "replay.store",
            base().set_str("replay.store", "floppy").toml(),
        ),
        ("listen", base().set_str("listen", "not an address").toml()),
        (
            "algorithms",
            base().toml().replace(
                "jwks_url =",
                "algorithms = [\"RS256\", \"HS256\"]\njwks_url =",
            ),
        ),
        (
            "algorithms",
            base()
                .toml()
                .replace("jwks_url =", "algorithms = [\"none\"]\njwks_url ="),
        ),
    ];
    let dir = temp_dir();
    for (key, text) in cases {
        let config = write_config(&dir, &text);
        let finished = run(command(&[
            "check",
            "--offline",
            "--config",
            config.to_str().unwrap(),
        ]))
        .await;
        assert_eq!(
            finished.status.code(),
            Some(2),
            "{key}: {}\n---\n{text}",
            finished.output()
        );
        assert!(
            finished.output().contains(key),
            "the message names {key}: {}\n---\n{text}",
            finished.output()
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_overrides_the_file() {
    let dir = temp_dir();
    let good = valid_config(
        "http://127.0.0.1:9",
        "https://portal.example",
        "http://127.0.0.1:9/jwks",
    );
    let config = write_config(&dir, &good.clone().unset("launch.audience").toml());
    let path = config.to_str().unwrap();

    // The file lacks the audience; the environment supplies it.
    let mut with_env = command(&["check", "--offline", "--config", path]);
    with_env.env("HTI_GUARD_LAUNCH__AUDIENCE", "Device/from-env");
    let finished = run(with_env).await;
    assert_eq!(finished.status.code(), Some(0), "{}", finished.output());

    // A bad value from the environment is named like one from the file.
    let mut bad_env = command(&["check", "--offline", "--config", path]);
    bad_env
        .env("HTI_GUARD_LAUNCH__AUDIENCE", "Device/from-env")
        .env("HTI_GUARD_LAUNCH__MAX_LIFETIME", "forever");
    let finished = run(bad_env).await;
    assert_eq!(finished.status.code(), Some(2), "{}", finished.output());
    assert!(
        finished.output().contains("launch.max_lifetime"),
        "{}",
        finished.output()
    );

    // HTI_GUARD_CONFIG names the file when --config is absent.
    let bad = write_config(&dir, &good.set_str("keys.max_stale", "a while").toml());
    let mut from_env = command(&["check", "--offline"]);
    from_env.env("HTI_GUARD_CONFIG", bad.to_str().unwrap());
    let finished = run(from_env).await;
    assert_eq!(finished.status.code(), Some(2), "{}", finished.output());
    assert!(
        finished.output().contains("keys.max_stale"),
        "{}",
        finished.output()
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_fetches_every_key_set() {
    let key = mint::shared_key(Alg::RS512);
    let jwks = JwksServer::start(&[key]).await;
    let iss = unique_issuer();
    let dead_iss = unique_issuer();
    let closed = format!("http://127.0.0.1:{}/jwks", free_port());
    let dir = temp_dir();

    let good = write_config(
        &dir,
        &valid_config("http://127.0.0.1:9", &iss, &jwks.url()).toml(),
    );
    let finished = run(command(&["check", "--config", good.to_str().unwrap()])).await;
    assert_eq!(finished.status.code(), Some(0), "{}", finished.output());
    assert!(
        finished.output().contains(&iss),
        "check prints what it found: {}",
        finished.output()
    );
    assert_eq!(jwks.hits(), 1);

    let text = valid_config("http://127.0.0.1:9", &iss, &jwks.url())
        .issuer(&dead_iss, &closed)
        .toml();
    let broken = dir.join("broken.toml");
    std::fs::write(&broken, &text).unwrap();
    let finished = run(command(&["check", "--config", broken.to_str().unwrap()])).await;
    assert_eq!(finished.status.code(), Some(1), "{}", finished.output());
    assert!(
        finished.output().contains(&dead_iss),
        "{}",
        finished.output()
    );

    let offline_hits = jwks.hits();
    let finished = run(command(&[
        "check",
        "--offline",
        "--config",
        broken.to_str().unwrap(),
    ]))
    .await;
    assert_eq!(finished.status.code(), Some(0), "{}", finished.output());
    assert_eq!(jwks.hits(), offline_hits, "--offline fetches nothing");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_then_exits_zero() {
    let upstream = Upstream::start().await;
    let key = mint::shared_key(Alg::RS512);
    let jwks = JwksServer::start(&[key]).await;
    let iss = unique_issuer();
    let (served, dir) =
        Served::start(valid_config(&upstream.url(), &iss, &jwks.url()), "debug").await;
    let client = client();

    // A launch and a request with a cookie, so the logs have had the chance to leak them.
    let token = key.token(&mint::hti_claims(&iss, AUDIENCE));
    let response = client
        .post(format!("{}/launch", served.public))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("cookie", "session=cookie-value-7c1e")
        .body(form(&[
            ("token", &token),
            ("iss", "https://fhir.example/r4"),
        ]))
        .send();
    expect_echo(within(LIMIT, "launch", response).await.unwrap()).await;
    let rejected = client
        .post(format!("{}/launch", served.public))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("accept", "application/json")
        .body(form(&[("token", &token)]))
        .send();
    expect_rejection(
        within(LIMIT, "replay", rejected).await.unwrap(),
        401,
        "replayed",
    )
    .await;

    let hits = upstream.hits();
    let url = format!("{}/slow?delay_ms=2000", served.public);
    let slow_client = client.clone();
    let in_flight = tokio::spawn(async move { slow_client.get(url).send().await });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while upstream.hits() == hits {
        assert!(
            tokio::time::Instant::now() < deadline,
            "slow request never reached the upstream"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    served.signal("-TERM").await;

    let response = within(LIMIT, "in-flight request", in_flight)
        .await
        .unwrap()
        .expect("the in-flight request completes during the drain");
    let echo = expect_echo(response).await;
    assert_eq!(echo.path(), "/slow");

    let finished = served.finish().await;
    assert_eq!(finished.status.code(), Some(0), "{}", finished.output());
    let messages = log_messages(&finished.stdout);
    assert!(!messages.is_empty(), "the guard logged something");
    assert!(
        messages.iter().any(|m| m == "launch accepted"),
        "{messages:?}"
    );
    // Lines are written by a logging thread: the last one, logged just before exit, is
    // there only if the queue is written out at exit.
    assert_eq!(
        messages.last().map(String::as_str),
        Some("hti-guard stopped")
    );
    let output = finished.output();
    assert!(!output.contains(&token), "a token was logged");
    assert!(
        !output.contains(token.split('.').nth(2).unwrap()),
        "a token signature was logged"
    );
    assert!(!output.contains("cookie-value-7c1e"), "a cookie was logged");
    assert!(
        !output.contains("fhir.example%2Fr4"),
        "a form body was logged"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_exits_zero() {
    let upstream = Upstream::start().await;
    let key = mint::shared_key(Alg::ES256);
    let jwks = JwksServer::start(&[key]).await;
    let iss = unique_issuer();
    let (served, dir) =
        Served::start(valid_config(&upstream.url(), &iss, &jwks.url()), "info").await;
    let response = within(
        LIMIT,
        "request",
        client().get(format!("{}/x", served.public)).send(),
    )
    .await
    .unwrap();
    expect_echo(response).await;
    served.signal("-INT").await;
    let finished = served.finish().await;
    assert_eq!(finished.status.code(), Some(0), "{}", finished.output());
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn annotated_example_config_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml");
    let finished = run(command(&[
        "check",
        "--offline",
        "--config",
        path.to_str().unwrap(),
    ]))
    .await;
    assert_eq!(finished.status.code(), Some(0), "{}", finished.output());
}
