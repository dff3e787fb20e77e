//! Starts the guard in-process on ephemeral loopback ports, from a config built in TOML.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use hti_guard::Listeners;
use hti_guard::config::Config;
use reqwest::Client;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::host::wait_ok;
use super::jwks::JwksServer;
use super::mint::{self, Alg, SigningKey};
use super::upstream::{Echo, Upstream};

/// How long one request of the harness may take.
const LIMIT: Duration = Duration::from_secs(60);

/// The audience every test config accepts.
pub const AUDIENCE: &str = "Device/hti-guard-test";

/// Panics when `future` does not finish within `limit`.
pub async fn within<F: Future>(limit: Duration, what: &str, future: F) -> F::Output {
    match tokio::time::timeout(limit, future).await {
        Ok(output) => output,
        Err(_) => panic!("{what}: not done within {limit:?}"),
    }
}

/// A fresh issuer name, so that metric labels of concurrent tests do not mix.
pub fn unique_issuer() -> String {
    format!("https://portal-{}.example", mint::random_hex(4))
}

/// A module signing key (RS512, PKCS#8 PEM, made by the guard's own code) in a fresh temp
/// file, for `module.signing_key_files`.
pub fn module_key_file() -> std::path::PathBuf {
    let key =
        hti_guard::jose::sign::SigningKey::generate(hti_guard::jose::Alg::RS512, 2048).unwrap();
    super::host::temp_file("module.pem", key.to_pem().unwrap())
}

/// A TOML string literal.
pub fn toml_str(value: &str) -> String {
    serde_json::to_string(value).expect("quote string")
}

/// An issuer entry of the config.
#[derive(Clone, Debug)]
pub struct IssuerSpec {
    pub iss: String,
    /// Empty for an issuer verified by introspection.
    pub jwks_url: String,
    pub algorithms: Option<Vec<String>>,
}

/// Builds a config TOML text: fast key timings for tests, then the test's own settings.
#[derive(Clone, Debug)]
pub struct GuardBuilder {
    issuers: Vec<IssuerSpec>,
    /// section ("" for top level) -> key -> raw TOML value
    settings: BTreeMap<String, BTreeMap<String, String>>,
    wait_ready: bool,
}

impl GuardBuilder {
    pub fn new(upstream: &str) -> GuardBuilder {
        GuardBuilder {
            issuers: Vec::new(),
            settings: BTreeMap::new(),
            wait_ready: true,
        }
        .set_str("upstream", upstream)
        .set_str("listen", "127.0.0.1:0")
        .set_str("admin_listen", "127.0.0.1:0")
        .set_str("shutdown_grace", "5s")
        .set_str("launch.audience", AUDIENCE)
        .set_str("keys.refresh_min", "1s")
        .set_str("keys.refresh_max", "1h")
        .set_str("keys.unknown_kid_cooldown", "1s")
        .set_str("keys.fetch_timeout", "2s")
        .set_str("timeouts.upstream_connect", "2s")
        .set_str("timeouts.upstream_response", "20s")
    }

    pub fn issuer(mut self, iss: &str, jwks_url: &str) -> GuardBuilder {
        self.issuers.push(IssuerSpec {
            iss: iss.to_string(),
            jwks_url: jwks_url.to_string(),
            algorithms: None,
        });
        self
    }

    /// An issuer verified by token introspection (`introspect = true`).
    pub fn issuer_introspected(mut self, iss: &str) -> GuardBuilder {
        self.issuers.push(IssuerSpec {
            iss: iss.to_string(),
            jwks_url: String::new(),
            algorithms: None,
        });
        self
    }

    pub fn issuer_with_algorithms(
        mut self,
        iss: &str,
        jwks_url: &str,
        algorithms: &[&str],
    ) -> GuardBuilder {
        self.issuers.push(IssuerSpec {
            iss: iss.to_string(),
            jwks_url: jwks_url.to_string(),
            algorithms: Some(algorithms.iter().map(|alg| alg.to_string()).collect()),
        });
        self
    }

    /// Limits the last issuer added to these algorithms.
    pub fn algorithms(mut self, algorithms: &[&str]) -> GuardBuilder {
        let issuer = self.issuers.last_mut().expect("an issuer to limit");
        issuer.algorithms = Some(algorithms.iter().map(|alg| alg.to_string()).collect());
        self
    }

    /// Sets `key` (`section.name` or a top-level name) to a raw TOML value.
    pub fn set(mut self, key: &str, toml_value: &str) -> GuardBuilder {
        let (section, name) = key.rsplit_once('.').unwrap_or(("", key));
        self.settings
            .entry(section.to_string())
            .or_default()
            .insert(name.to_string(), toml_value.to_string());
        self
    }

    /// Sets `key` to a TOML string.
    pub fn set_str(self, key: &str, value: &str) -> GuardBuilder {
        self.set(key, &toml_str(value))
    }

    /// Removes a setting (e.g. one of the defaults above).
    pub fn unset(mut self, key: &str) -> GuardBuilder {
        let (section, name) = key.rsplit_once('.').unwrap_or(("", key));
        if let Some(entries) = self.settings.get_mut(section) {
            entries.remove(name);
        }
        self
    }

    /// Start without waiting for `/readyz` (only for `/healthz`).
    pub fn no_wait_ready(mut self) -> GuardBuilder {
        self.wait_ready = false;
        self
    }

    pub fn toml(&self) -> String {
        let mut text = String::new();
        if let Some(top) = self.settings.get("") {
            for (name, value) in top {
                text.push_str(&format!("{name} = {value}\n"));
            }
        }
        for (section, entries) in &self.settings {
            if section.is_empty() {
                continue;
            }
            text.push_str(&format!("\n[{section}]\n"));
            for (name, value) in entries {
                text.push_str(&format!("{name} = {value}\n"));
            }
        }
        for issuer in &self.issuers {
            text.push_str("\n[[issuers]]\n");
            text.push_str(&format!("iss = {}\n", toml_str(&issuer.iss)));
            if issuer.jwks_url.is_empty() {
                text.push_str("introspect = true\n");
            } else {
                text.push_str(&format!("jwks_url = {}\n", toml_str(&issuer.jwks_url)));
            }
            if let Some(algorithms) = &issuer.algorithms {
                let list: Vec<String> = algorithms.iter().map(|alg| toml_str(alg)).collect();
                text.push_str(&format!("algorithms = [{}]\n", list.join(", ")));
            }
        }
        text
    }

    /// Validates the config, binds both listeners on `127.0.0.1:0`, runs the guard and waits
    /// (at most 10 s) until `/readyz` answers 200 (or `/healthz`, see [`Self::no_wait_ready`]).
    pub async fn start(self) -> Guard {
        let public = TcpListener::bind("127.0.0.1:0").await.expect("bind public");
        self.start_on(public).await
    }

    /// As [`Self::start`], on a public listener the test bound before (so that the config
    /// can name the guard's own address, e.g. a callback URL).
    pub async fn start_on(self, public: TcpListener) -> Guard {
        let text = self.toml();
        let config = Config::from_toml_str(&text)
            .unwrap_or_else(|error| panic!("test config rejected: {error}\n---\n{text}"));
        let admin = TcpListener::bind("127.0.0.1:0").await.expect("bind admin");
        let public_addr = public.local_addr().expect("public addr");
        let admin_addr = admin.local_addr().expect("admin addr");
        let tls = self
            .settings
            .get("tls")
            .is_some_and(|tls| tls.contains_key("cert_file"));
        let (shutdown, signal) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            hti_guard::run(config, Listeners { public, admin }, async move {
                let _ = signal.await;
            })
            .await
            .map_err(|error| error.to_string())
        });
        let mut guard = Guard {
            public: public_addr,
            admin: admin_addr,
            scheme: if tls { "https" } else { "http" },
            shutdown: Some(shutdown),
            task: Some(task),
        };
        let path = if self.wait_ready {
            "/readyz"
        } else {
            "/healthz"
        };
        guard.wait_admin_ok(path, Duration::from_secs(10)).await;
        guard
    }
}

/// A running guard.
pub struct Guard {
    pub public: SocketAddr,
    pub admin: SocketAddr,
    pub scheme: &'static str,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), String>>>,
}

impl Guard {
    /// URL of `path` on the public listener.
    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{path}", self.scheme, self.public)
    }

    /// URL of `path` on the admin listener.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    async fn wait_admin_ok(&mut self, path: &str, limit: Duration) {
        let task = self.task.as_ref().expect("guard task");
        if !wait_ok(&self.admin_url(path), limit, || task.is_finished()).await {
            let result = self.task.take().expect("task").await;
            panic!("guard stopped before {path} was OK: {result:?}");
        }
    }

    /// GETs `path` on the admin listener (bounded).
    pub async fn admin_get(&self, path: &str) -> reqwest::Response {
        within(LIMIT, path, client().get(self.admin_url(path)).send())
            .await
            .unwrap_or_else(|error| panic!("GET {path}: {error}"))
    }

    /// The text of `/metrics`, which answers 200.
    pub async fn metrics(&self) -> String {
        let response = self.admin_get("/metrics").await;
        assert_eq!(response.status(), 200, "GET /metrics");
        response.text().await.expect("metrics text")
    }

    /// POSTs `token=<token>` to `/launch` with `Accept: application/json`.
    pub async fn launch(&self, client: &Client, token: &str) -> reqwest::Response {
        post_form(client, &self.url("/launch"), &[("token", token)]).await
    }

    /// Signals shutdown (drain) without waiting.
    pub fn begin_shutdown(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }

    /// Waits (bounded) until `run` returns, and gives its result.
    pub async fn join(&mut self, limit: Duration) -> Result<(), String> {
        let task = self.task.take().expect("guard already joined");
        within(limit, "guard run() returning", task)
            .await
            .expect("guard task panicked")
    }

    /// Signals shutdown and waits until `run` returns.
    pub async fn stop(mut self) -> Result<(), String> {
        self.begin_shutdown();
        self.join(Duration::from_secs(15)).await
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.begin_shutdown();
    }
}

/// A reqwest client for the tests: no redirects, no proxy, bounded.
pub fn client() -> Client {
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("build client")
}

/// POSTs a form to `url` with `Accept: application/json` (bounded).
pub async fn post_form(client: &Client, url: &str, fields: &[(&str, &str)]) -> reqwest::Response {
    let request = client
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("accept", "application/json")
        .body(form(fields))
        .send();
    within(LIMIT, "POST form", request)
        .await
        .unwrap_or_else(|error| panic!("POST {url}: {error}"))
}

/// `application/x-www-form-urlencoded` text for these fields.
pub fn form(fields: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields)
        .finish()
}

/// What a guard stands between: a mock upstream, and a fresh issuer whose keys `jwks` serves.
/// [`Fixture`] runs a guard between them in-process, [`super::Served`] as the binary.
pub struct Backends {
    pub upstream: Upstream,
    pub jwks: JwksServer,
    pub iss: String,
}

impl Backends {
    pub async fn start(jwks: JwksServer) -> Backends {
        Backends {
            upstream: Upstream::start().await,
            jwks,
            iss: unique_issuer(),
        }
    }

    /// A config for a guard in front of the upstream, trusting the issuer.
    pub fn builder(&self) -> GuardBuilder {
        GuardBuilder::new(&self.upstream.url()).issuer(&self.iss, &self.jwks.url())
    }
}

/// The usual test setup: a mock upstream, one issuer whose JWKS serves keys, and a guard in
/// front, ready.
pub struct Fixture {
    pub upstream: Upstream,
    pub jwks: JwksServer,
    /// The key [`Fixture::start`] publishes (the shared RS512 key); a fixture made
    /// [`Fixture::with_jwks`] serves the test's own key set, and the test signs with those.
    pub key: &'static SigningKey,
    pub iss: String,
    pub guard: Guard,
    pub client: Client,
}

impl Fixture {
    pub async fn start() -> Fixture {
        Fixture::start_with(|builder| builder).await
    }

    /// As [`Fixture::start`], with extra settings.
    pub async fn start_with(configure: impl FnOnce(GuardBuilder) -> GuardBuilder) -> Fixture {
        let jwks = JwksServer::start(&[mint::shared_key(Alg::RS512)]).await;
        Fixture::with_jwks(jwks, configure).await
    }

    /// A mock upstream, a fresh issuer whose keys `jwks` serves (set up as the test needs,
    /// before the guard starts), and a guard configured by `configure`, started (ready unless
    /// `configure` says [`GuardBuilder::no_wait_ready`]).
    pub async fn with_jwks(
        jwks: JwksServer,
        configure: impl FnOnce(GuardBuilder) -> GuardBuilder,
    ) -> Fixture {
        let backends = Backends::start(jwks).await;
        let guard = configure(backends.builder()).start().await;
        let Backends {
            upstream,
            jwks,
            iss,
        } = backends;
        Fixture {
            upstream,
            jwks,
            key: mint::shared_key(Alg::RS512),
            iss,
            guard,
            client: client(),
        }
    }

    /// Good HTI claims for this issuer, signed with `key`.
    pub fn token_by(&self, key: &SigningKey) -> String {
        key.token(&self.claims())
    }

    /// Good HTI claims for this issuer and the test audience.
    pub fn claims(&self) -> Value {
        mint::hti_claims(&self.iss, AUDIENCE)
    }

    /// `claims` signed with the issuer's key.
    pub fn token(&self, claims: &Value) -> String {
        self.key.token(claims)
    }

    /// A fresh good token.
    pub fn good_token(&self) -> String {
        self.token(&self.claims())
    }

    /// POSTs a form to `/launch` with `Accept: application/json`.
    pub async fn post_form(&self, fields: &[(&str, &str)]) -> reqwest::Response {
        post_form(&self.client, &self.guard.url("/launch"), fields).await
    }

    /// POSTs `token=<token>` to `/launch`.
    pub async fn launch(&self, token: &str) -> reqwest::Response {
        self.post_form(&[("token", token)]).await
    }

    /// Launches `token` and asserts the JSON rejection (see [`expect_rejection`]).
    pub async fn expect_refused(&self, token: &str, status: u16, reason: &str) -> Value {
        expect_rejection(self.launch(token).await, status, reason).await
    }
}

/// The reason of a JSON rejection, or "accepted" for a 200 (its body read).
pub async fn outcome(response: reqwest::Response) -> String {
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    if status == 200 {
        return "accepted".into();
    }
    let body: Value = serde_json::from_str(&text)
        .unwrap_or_else(|_| panic!("a JSON rejection, got {status}: {text}"));
    body["error"].as_str().unwrap_or("no reason").to_string()
}

/// Asserts a rejection in the JSON format: status, reason, a message and a reference equal to
/// the response's `X-Request-Id`. Gives the body.
pub async fn expect_rejection(response: reqwest::Response, status: u16, reason: &str) -> Value {
    let got_status = response.status().as_u16();
    let request_id = response
        .headers()
        .get("x-request-id")
        .and_then(|value| value.to_str().ok())
        .map(str::to_string);
    let text = response.text().await.expect("rejection body");
    assert_eq!(
        got_status, status,
        "expected {status} {reason}, got {got_status}: {text}"
    );
    let body: Value = serde_json::from_str(&text)
        .unwrap_or_else(|error| panic!("rejection body is not JSON ({error}): {text}"));
    assert_eq!(body["error"], reason, "reason in {text}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|message| !message.is_empty()),
        "message in {text}"
    );
    let reference = body["reference"].as_str().unwrap_or_default();
    assert!(!reference.is_empty(), "reference in {text}");
    assert_eq!(
        request_id.as_deref(),
        Some(reference),
        "X-Request-Id equals the reference"
    );
    body
}

/// Asserts a 200 from the echo upstream and gives what it received.
pub async fn expect_echo(response: reqwest::Response) -> Echo {
    let status = response.status();
    let text = response.text().await.expect("echo body");
    assert_eq!(
        status, 200,
        "expected the upstream's echo, got {status}: {text}"
    );
    serde_json::from_str(&text).unwrap_or_else(|error| panic!("not an echo ({error}): {text}"))
}
