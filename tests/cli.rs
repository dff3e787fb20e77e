//! The binary: `serve` and `check`, configuration errors (exit 2, naming the key, before any
//! port is bound), environment overrides, JSON logs, and the drain on SIGTERM / SIGINT.

mod common;

use std::net::TcpListener as StdListener;
use std::path::Path;
use std::time::Duration;

use common::mint;
use common::*;
use serde_json::Value;
use tokio::process::Command;

const LIMIT: Duration = Duration::from_secs(30);

/// `hti-guard args...` logging at `info`.
fn guard_command(args: &[&str]) -> Command {
    let mut command = command(args);
    command.env("RUST_LOG", "info");
    command
}

/// `hti-guard ARGS... --config CONFIG` run to its end, logging at `info`.
async fn run_with_config(args: &[&str], config: &Path) -> Finished {
    let mut command = guard_command(args);
    command.args(["--config", path_str(config)]);
    run(command).await
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
    let dir = TempDir::new();
    let config = dir.write("config.toml", &text);
    let finished = run_with_config(&["serve"], &config).await;
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
    let dir = TempDir::new();
    let config = dir.write("config.toml", &text);
    let finished = run_with_config(&["serve"], &config).await;
    assert_eq!(finished.status.code(), Some(1), "{}", finished.output());
    assert!(finished.stderr.contains("listen"), "{}", finished.output());
    // The error line is queued for the logging thread just before main returns.
    assert_eq!(
        log_messages(&finished.stdout),
        ["cannot start"],
        "{}",
        finished.output()
    );
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
    let dir = TempDir::new();
    for (key, text) in cases {
        let config = dir.write("config.toml", &text);
        let finished = run_with_config(&["check", "--offline"], &config).await;
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_overrides_the_file() {
    let dir = TempDir::new();
    let good = valid_config(
        "http://127.0.0.1:9",
        "https://portal.example",
        "http://127.0.0.1:9/jwks",
    );
    let config = dir.write("config.toml", good.clone().unset("launch.audience").toml());
    let path = config.to_str().unwrap();

    // The file lacks the audience; the environment supplies it.
    let mut with_env = guard_command(&["check", "--offline", "--config", path]);
    with_env.env("HTI_GUARD_LAUNCH__AUDIENCE", "Device/from-env");
    let finished = run(with_env).await;
    assert_eq!(finished.status.code(), Some(0), "{}", finished.output());

    // A bad value from the environment is named like one from the file.
    let mut bad_env = guard_command(&["check", "--offline", "--config", path]);
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
    let bad = dir.write(
        "config.toml",
        good.set_str("keys.max_stale", "a while").toml(),
    );
    let mut from_env = guard_command(&["check", "--offline"]);
    from_env.env("HTI_GUARD_CONFIG", bad.to_str().unwrap());
    let finished = run(from_env).await;
    assert_eq!(finished.status.code(), Some(2), "{}", finished.output());
    assert!(
        finished.output().contains("keys.max_stale"),
        "{}",
        finished.output()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_fetches_every_key_set() {
    let key = mint::shared_key(Alg::RS512);
    let jwks = JwksServer::start(&[key]).await;
    let iss = unique_issuer();
    let dead_iss = unique_issuer();
    let closed = closed_url();
    let dir = TempDir::new();

    let good = dir.write(
        "config.toml",
        valid_config("http://127.0.0.1:9", &iss, &jwks.url()).toml(),
    );
    let finished = run_with_config(&["check"], &good).await;
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
    let broken = dir.write("broken.toml", &text);
    let finished = run_with_config(&["check"], &broken).await;
    assert_eq!(finished.status.code(), Some(1), "{}", finished.output());
    assert!(
        finished.output().contains(&dead_iss),
        "{}",
        finished.output()
    );

    let offline_hits = jwks.hits();
    let finished = run_with_config(&["check", "--offline"], &broken).await;
    assert_eq!(finished.status.code(), Some(0), "{}", finished.output());
    assert_eq!(jwks.hits(), offline_hits, "--offline fetches nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_then_exits_zero() {
    let key = mint::shared_key(Alg::RS512);
    let backends = Backends::start(JwksServer::start(&[key]).await).await;
    let served = Served::start(backends.builder(), "debug").await;
    let upstream = &backends.upstream;
    let client = client();

    // A launch and a request with a cookie, so the logs have had the chance to leak them.
    let token = key.token(&mint::hti_claims(&backends.iss, AUDIENCE));
    let response = client
        .post(served.url("/launch"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("cookie", "session=cookie-value-7c1e")
        .body(form(&[
            ("token", &token),
            ("iss", "https://fhir.example/r4"),
        ]))
        .send();
    expect_echo(within(LIMIT, "launch", response).await.unwrap()).await;
    let rejected = post_form(&client, &served.url("/launch"), &[("token", &token)]).await;
    expect_rejection(rejected, 401, "replayed").await;

    let hits = upstream.hits();
    let url = served.url("/slow?delay_ms=2000");
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_exits_zero() {
    let key = mint::shared_key(Alg::ES256);
    let backends = Backends::start(JwksServer::start(&[key]).await).await;
    let served = Served::start(backends.builder(), "info").await;
    let response = within(LIMIT, "request", client().get(served.url("/x")).send())
        .await
        .unwrap();
    expect_echo(response).await;
    served.signal("-INT").await;
    let finished = served.finish().await;
    assert_eq!(finished.status.code(), Some(0), "{}", finished.output());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn annotated_example_config_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml");
    let finished = run_with_config(&["check", "--offline"], &path).await;
    assert_eq!(finished.status.code(), Some(0), "{}", finished.output());
}

/// `--version`: the crate's version and the git revision build.rs found (the short HEAD of
/// this checkout, `-dirty` when tracked files differed; `unknown` without git).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_names_the_git_revision() {
    let finished = run(command(&["--version"])).await;
    finished.assert_ok();
    let line = finished.stdout.trim_end();
    let prefix = format!("hti-guard {} (", env!("CARGO_PKG_VERSION"));
    let rev = line
        .strip_prefix(&prefix)
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("{line:?} is not {prefix}REV)"));
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8(o.stdout).unwrap().trim().to_owned());
    match head {
        Some(head) => assert!(
            rev == head || rev == format!("{head}-dirty"),
            "{rev:?} is HEAD {head}"
        ),
        None => assert_eq!(rev, "unknown"),
    }
}
