//! Reloading the configuration of the running binary: SIGHUP (and `reload.watch`, a file
//! swapped the way a Kubernetes ConfigMap mount swaps it) applies a new audience, issuer or
//! session key to new requests without dropping a connection; an invalid configuration is
//! refused and the old one keeps working; a key that needs a restart is reported.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::metrics::value;
use common::mint;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

const LIMIT: Duration = Duration::from_secs(60);
const OTHER_AUDIENCE: &str = "Device/hti-guard-reloaded";
const RELOADS: &str = "hti_guard_config_reloads_total";

/// A configuration directory laid out as a Kubernetes ConfigMap volume: `guard.toml` ->
/// `..data/guard.toml`, `..data` -> `..<generation>`; an update writes a new generation
/// and renames a new `..data` link over the old one, in one step.
struct Mounted {
    dir: TempDir,
    generation: usize,
}

impl Mounted {
    fn new(text: &str) -> Mounted {
        let dir = TempDir::new();
        std::os::unix::fs::symlink("..data/guard.toml", dir.join("guard.toml")).unwrap();
        let mut mounted = Mounted { dir, generation: 0 };
        mounted.update(text);
        mounted
    }

    fn path(&self) -> PathBuf {
        self.dir.join("guard.toml")
    }

    fn text(&self) -> String {
        std::fs::read_to_string(self.path()).unwrap()
    }

    fn update(&mut self, text: &str) {
        self.generation += 1;
        let name = format!("..{}", self.generation);
        std::fs::create_dir(self.dir.join(&name)).unwrap();
        std::fs::write(self.dir.join(&name).join("guard.toml"), text).unwrap();
        let link = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&name, &link).unwrap();
        std::fs::rename(&link, self.dir.join("..data")).unwrap();
    }

    /// The current text with `from` replaced by `to` (which must be there).
    fn replace(&mut self, from: &str, to: &str) {
        let text = self.text();
        assert!(text.contains(from), "{from:?} in\n{text}");
        self.update(&text.replacen(from, to, 1));
    }
}

/// `hti-guard serve` on the mounted configuration `builder` makes, ready.
async fn serve(builder: GuardBuilder) -> (Served, Mounted) {
    let public = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    serve_at(builder, public).await
}

/// As [`serve`], listening on `public`.
async fn serve_at(builder: GuardBuilder, public: std::net::SocketAddr) -> (Served, Mounted) {
    let mut mounted = None;
    let served = Served::start_at(builder, public, |generated| {
        let text = std::fs::read_to_string(generated).unwrap();
        let mount = Mounted::new(&text);
        let mut command = command(&["serve", "--config", path_str(&mount.path())]);
        command.env("RUST_LOG", "info");
        mounted = Some(mount);
        command
    })
    .await;
    (served, mounted.unwrap())
}

async fn metrics(served: &Served) -> String {
    let response = within(
        LIMIT,
        "metrics",
        client().get(served.admin_url("/metrics")).send(),
    )
    .await
    .unwrap();
    response.text().await.unwrap()
}

/// Waits until `hti_guard_config_reloads_total{result}` reaches `count`.
async fn wait_reloads(served: &Served, result: &str, count: f64) -> String {
    within(LIMIT, "the reload to be counted", async {
        loop {
            let text = metrics(served).await;
            if value(&text, RELOADS, &[("result", result)]) >= count {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

/// SIGTERM, then everything it logged.
async fn stop(served: Served) -> Finished {
    served.signal("-TERM").await;
    let finished = served.finish().await;
    assert_eq!(finished.code(), Some(0), "{finished}");
    finished
}

/// The log line (JSON) whose message is `message`.
fn logged(finished: &Finished, message: &str) -> serde_json::Value {
    finished
        .stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|line| line["fields"]["message"] == message)
        .unwrap_or_else(|| panic!("no log line {message:?}:\n{finished}"))
}

/// POSTs a launch with a token for `aud` from `iss`; the status.
async fn launch(served: &Served, key: &SigningKey, iss: &str, aud: &str) -> u16 {
    let token = key.token(&mint::hti_claims(iss, aud));
    let response = post_form(&client(), &served.url("/launch"), &[("token", &token)]).await;
    response.status().as_u16()
}

/// One kept-alive connection sending launches, alternately for the old and the new
/// audience, until `stop`; each answer recorded with whether the reload was known to be
/// done when the request was sent.
async fn load(
    served_at: std::net::SocketAddr,
    iss: String,
    reloaded: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> Result<Vec<(bool, &'static str, u16)>, String> {
    let stream = tokio::net::TcpStream::connect(served_at)
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    let driver = tokio::spawn(connection);
    let key = mint::shared_key(Alg::RS512);
    let mut answers = Vec::new();
    let mut n = 0usize;
    while !stop.load(Ordering::Acquire) {
        n += 1;
        let aud = if n.is_multiple_of(2) {
            AUDIENCE
        } else {
            OTHER_AUDIENCE
        };
        let after = reloaded.load(Ordering::Acquire);
        let body = form(&[("token", &key.token(&mint::hti_claims(&iss, aud)))]);
        let request = http::Request::post("/launch")
            .header("host", served_at.to_string())
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        sender
            .ready()
            .await
            .map_err(|e| format!("request {n}: {e}"))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("request {n}: {e}"))?;
        let status = response.status().as_u16();
        response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body {n}: {e}"))?;
        answers.push((after, aud, status));
    }
    drop(sender);
    let _ = driver.await;
    Ok(answers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sighup_changes_the_audience_under_load_without_dropping_a_connection() {
    let backends = Backends::start(JwksServer::start(&[mint::shared_key(Alg::RS512)]).await).await;
    let (served, mut mounted) = serve(backends.builder().set("workers", "2")).await;
    let reloaded = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            tokio::spawn(load(
                served.public,
                backends.iss.clone(),
                reloaded.clone(),
                stop.clone(),
            ))
        })
        .collect();
    // Some launches on the old configuration first.
    let before = within(LIMIT, "launches before the reload", async {
        while backends.upstream.hits() < 20 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    before.await;
    mounted.replace(
        &format!("audience = {}", toml_str(AUDIENCE)),
        &format!("audience = {}", toml_str(OTHER_AUDIENCE)),
    );
    served.signal("-HUP").await;
    wait_reloads(&served, "ok", 1.0).await;
    reloaded.store(true, Ordering::Release);
    let hits = backends.upstream.hits();
    within(LIMIT, "launches after the reload", async {
        while backends.upstream.hits() < hits + 20 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    stop.store(true, Ordering::Release);

    let mut answers = Vec::new();
    for task in tasks {
        let got = within(LIMIT, "the load to end", task).await.unwrap();
        answers.extend(got.expect("no connection error, no dropped connection"));
    }
    let (mut old, mut new) = (0, 0);
    for (after, aud, status) in &answers {
        match (aud == &AUDIENCE, status) {
            (true, 200) => {
                assert!(!after, "the old audience accepted after the reload");
                old += 1;
            }
            (false, 200) => new += 1,
            (_, 401) => {}
            _ => panic!("a launch answered {status}: {answers:?}"),
        }
    }
    let before_reload = answers.iter().filter(|(after, ..)| !after);
    assert!(
        before_reload
            .clone()
            .any(|(_, aud, s)| *aud == AUDIENCE && *s == 200),
        "the old audience was accepted before the reload"
    );
    for (_, aud, status) in answers.iter().filter(|(after, ..)| *after) {
        let expected = if *aud == OTHER_AUDIENCE { 200 } else { 401 };
        assert_eq!(*status, expected, "after the reload, {aud}");
    }
    assert!(old > 0 && new > 0, "{old} old, {new} new");
    // Every accepted launch and nothing else reached the upstream.
    assert_eq!(backends.upstream.hits(), old + new);
    let text = metrics(&served).await;
    assert_eq!(value(&text, RELOADS, &[("result", "error")]), 0.0);
    stop_and_check(served, "configuration reloaded").await;
}

async fn stop_and_check(served: Served, message: &str) -> Finished {
    let finished = stop(served).await;
    logged(&finished, message);
    finished
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_configuration_is_refused_and_the_old_one_stays() {
    let backends = Backends::start(JwksServer::start(&[mint::shared_key(Alg::RS512)]).await).await;
    let (served, mut mounted) = serve(backends.builder()).await;
    let key = mint::shared_key(Alg::RS512);
    assert_eq!(launch(&served, key, &backends.iss, AUDIENCE).await, 200);
    let good = mounted.text();
    mounted.update(&format!(
        "{}\n[reload]\nwatch_interval = \"soon\"\n",
        good.replacen(AUDIENCE, OTHER_AUDIENCE, 1)
    ));
    served.signal("-HUP").await;
    let text = wait_reloads(&served, "error", 1.0).await;
    assert_eq!(
        value(&text, "hti_guard_config_last_reload_successful", &[]),
        1.0 - 1.0
    );
    assert_eq!(value(&text, RELOADS, &[("result", "ok")]), 0.0);
    // The old audience still, not the new one.
    assert_eq!(launch(&served, key, &backends.iss, AUDIENCE).await, 200);
    assert_eq!(
        launch(&served, key, &backends.iss, OTHER_AUDIENCE).await,
        401
    );
    assert_eq!(backends.upstream.hits(), 2);
    // Fixed, it applies.
    mounted.update(&good.replacen(AUDIENCE, OTHER_AUDIENCE, 1));
    served.signal("-HUP").await;
    let text = wait_reloads(&served, "ok", 1.0).await;
    assert_eq!(
        value(&text, "hti_guard_config_last_reload_successful", &[]),
        1.0
    );
    assert_eq!(
        launch(&served, key, &backends.iss, OTHER_AUDIENCE).await,
        200
    );
    let finished = stop(served).await;
    let refused = logged(
        &finished,
        "configuration reload refused: the old configuration stays",
    );
    assert_eq!(refused["level"], "ERROR", "{refused}");
    let error = refused["fields"]["error"].as_str().unwrap();
    assert!(error.contains("reload.watch_interval"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_listen_needs_a_restart_and_the_rest_applies() {
    let backends = Backends::start(JwksServer::start(&[mint::shared_key(Alg::RS512)]).await).await;
    let (served, mut mounted) = serve(backends.builder()).await;
    let key = mint::shared_key(Alg::RS512);
    let listen = format!("listen = {}", toml_str(&served.public.to_string()));
    let moved = format!("listen = \"127.0.0.1:{}\"", free_port());
    mounted.replace(&listen, &moved);
    mounted.replace(
        &format!("audience = {}", toml_str(AUDIENCE)),
        &format!("audience = {}", toml_str(OTHER_AUDIENCE)),
    );
    served.signal("-HUP").await;
    wait_reloads(&served, "partial", 1.0).await;
    // Still on the old address, with the new audience.
    assert_eq!(
        launch(&served, key, &backends.iss, OTHER_AUDIENCE).await,
        200
    );
    assert_eq!(launch(&served, key, &backends.iss, AUDIENCE).await, 401);
    let finished = stop(served).await;
    let warned = logged(
        &finished,
        "configuration reloaded, but these keys keep their old value until a restart",
    );
    assert_eq!(warned["level"], "WARN");
    assert_eq!(warned["fields"]["restart"], "listen", "{warned}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_issuer_added_by_a_reload_is_usable_and_the_others_keep_their_keys() {
    let backends = Backends::start(JwksServer::start(&[mint::shared_key(Alg::RS512)]).await).await;
    // Keys refreshed hourly: the only fetch of the first issuer's keys is the one at start.
    let builder = backends
        .builder()
        .set_str("keys.refresh_min", "1h")
        .set_str("keys.unknown_kid_cooldown", "1h");
    let (served, mut mounted) = serve(builder).await;
    let key = mint::shared_key(Alg::RS512);
    assert_eq!(backends.jwks.hits(), 1);
    let second_key = SigningKey::generate(Alg::ES256);
    let second = JwksServer::start(&[&second_key]).await;
    let second_iss = unique_issuer();
    assert_eq!(
        launch(&served, &second_key, &second_iss, AUDIENCE).await,
        401
    );
    let text = mounted.text();
    mounted.update(&format!(
        "{text}\n[[issuers]]\niss = {}\njwks_url = {}\n",
        toml_str(&second_iss),
        toml_str(&second.url())
    ));
    served.signal("-HUP").await;
    wait_reloads(&served, "ok", 1.0).await;
    let accepted = within(LIMIT, "the new issuer's keys", async {
        loop {
            match launch(&served, &second_key, &second_iss, AUDIENCE).await {
                200 => return,
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    });
    accepted.await;
    assert!(second.hits() >= 1);
    assert_eq!(launch(&served, key, &backends.iss, AUDIENCE).await, 200);
    assert_eq!(
        backends.jwks.hits(),
        1,
        "the unchanged issuer's keys were kept, not refetched"
    );
    stop(served).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_watch_picks_up_a_swapped_configmap_without_a_signal() {
    let backends = Backends::start(JwksServer::start(&[mint::shared_key(Alg::RS512)]).await).await;
    let builder = backends
        .builder()
        .set("reload.watch", "true")
        .set_str("reload.watch_interval", "100ms");
    let (served, mut mounted) = serve(builder).await;
    let key = mint::shared_key(Alg::RS512);
    assert_eq!(
        launch(&served, key, &backends.iss, OTHER_AUDIENCE).await,
        401
    );
    let file_hash = |text: &str| value(text, "hti_guard_config_hash", &[]);
    let before = file_hash(&metrics(&served).await);
    mounted.replace(
        &format!("audience = {}", toml_str(AUDIENCE)),
        &format!("audience = {}", toml_str(OTHER_AUDIENCE)),
    );
    let after = file_hash(&wait_reloads(&served, "ok", 1.0).await);
    assert!(
        before > 0.0 && after > 0.0 && before != after,
        "{before} {after}"
    );
    assert_eq!(
        launch(&served, key, &backends.iss, OTHER_AUDIENCE).await,
        200
    );
    assert_eq!(launch(&served, key, &backends.iss, AUDIENCE).await, 401);
    // An unchanged file is no reload.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let text = metrics(&served).await;
    assert_eq!(value(&text, RELOADS, &[]), 1.0);
    stop(served).await;
}

const SECRET_A: &str = "c2Vzc2lvbi1zZWNyZXQtZm9yLXRoZS10ZXN0cy0wMTIzNDU2Nzg5";
const SECRET_B: &str = "YW5vdGhlci1zZXNzaW9uLXNlY3JldC1mb3ItdGhlLXRlc3RzLTk4NzY1";

/// The landing page with `cookie`: the `X-HTI-Sub` the upstream saw, or the status.
async fn with_session(served: &Served, cookie: &str) -> Result<String, u16> {
    let response = client()
        .get(served.url("/task/abc"))
        .header("cookie", cookie)
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    match response.status().as_u16() {
        200 => Ok(expect_echo(response)
            .await
            .header("x-hti-sub")
            .unwrap_or_default()
            .to_owned()),
        status => Err(status),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_key_rotated_by_reload_keeps_sessions_while_the_old_key_is_previous() {
    let backends = Backends::start(JwksServer::start(&[mint::shared_key(Alg::RS512)]).await).await;
    let builder = backends
        .builder()
        .set("session.enabled", "true")
        .set("session.secure", "false")
        .set_str("session.secret", SECRET_A)
        .set_str("session.landing", "/task/{resource_id}");
    let (served, mut mounted) = serve(builder).await;
    let key = mint::shared_key(Alg::RS512);
    let token = key.token(&mint::hti_claims(&backends.iss, AUDIENCE));
    let response = post_form(&client(), &served.url("/launch"), &[("token", &token)]).await;
    assert_eq!(response.status(), 303);
    let cookie = set_cookies(&response)
        .into_iter()
        .find(|c| c.name == "hti_guard_session")
        .map(|c| format!("{}={}", c.name, c.value))
        .expect("a session cookie");
    assert_eq!(
        with_session(&served, &cookie).await.as_deref(),
        Ok("Practitioner/123")
    );

    // The new key seals, the old one still opens.
    let secret_a = format!("secret = {}", toml_str(SECRET_A));
    mounted.replace(
        &secret_a,
        &format!(
            "secret = {}\nprevious_secret = {}",
            toml_str(SECRET_B),
            toml_str(SECRET_A)
        ),
    );
    served.signal("-HUP").await;
    wait_reloads(&served, "ok", 1.0).await;
    assert_eq!(
        with_session(&served, &cookie).await.as_deref(),
        Ok("Practitioner/123")
    );

    // The old key retired: its sessions end, and nothing reaches the upstream without one.
    mounted.replace(&format!("previous_secret = {}", toml_str(SECRET_A)), "");
    served.signal("-HUP").await;
    wait_reloads(&served, "ok", 2.0).await;
    let hits = backends.upstream.hits();
    assert_eq!(with_session(&served, &cookie).await, Err(401));
    assert_eq!(backends.upstream.hits(), hits);
    stop(served).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shof_login_started_before_a_reload_of_the_launch_rules_ends_after_it() {
    use common::shof_fixture::{CALLBACK, CLIENT_ID, JWKS_PATH, shof_builder};
    let portal = mint::shared_key(Alg::RS512);
    let auth = AuthServer::start(CLIENT_ID, vec![portal.jwk()]).await;
    let upstream = Upstream::start().await;
    let public: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    // Discovery refreshed hourly: any further discovery would be the reload's.
    let builder = shof_builder(&auth, &upstream, &format!("http://{public}{CALLBACK}"))
        .set_str("keys.refresh_min", "1h")
        .set_str("launch.clock_skew", "30s");
    let (served, mut mounted) = serve_at(builder, public).await;
    auth.set_guard_jwks_url(&served.url(JWKS_PATH));
    let discoveries = auth.discoveries();

    let browser = Browser::new(&served.url(""));
    let token = portal.token(&mint::hti_claims(&unique_issuer(), AUDIENCE));
    let query = form(&[("iss", &auth.fhir_base()), ("launch", &token)]);
    let json = "application/json";
    let launched = browser
        .get(&served.url(&format!("/launch?{query}")), json)
        .await;
    assert_eq!(launched.status(), 302);

    mounted.replace("clock_skew = \"30s\"", "clock_skew = \"45s\"");
    served.signal("-HUP").await;
    wait_reloads(&served, "ok", 1.0).await;
    let ready = client()
        .get(served.admin_url("/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200, "still ready: the discovery was kept");

    let location = |r: &reqwest::Response| r.headers()["location"].to_str().unwrap().to_owned();
    let approved = client().get(location(&launched)).send().await.unwrap();
    let done = browser.get(&location(&approved), json).await;
    assert_eq!(done.status(), 303, "the login ends in a session");
    expect_echo(browser.get(&served.url("/task/abc"), json).await).await;
    assert_eq!(auth.discoveries(), discoveries, "no new discovery");
    stop(served).await;
}
