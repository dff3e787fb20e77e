//! `hti-guard demo`: a whole HTI launch on one machine, in one process, on loopback only.
//! A demo portal (its own RS512 key and JWKS) mints launch tokens, the real guard verifies
//! them, and a demo module app shows what reached it.
//!
//! - `portal`: the launching side (sample launches, refusal cases, JWKS)
//! - `auth`: with `--koppeltaal` or `--shof`, the portal's second role as the domain's auth
//!   server (with `--shof` also the SHOF login: a login page and id_tokens)
//! - `module`: the upstream app, a few pages that show the trusted headers and claims; the
//!   guard keeps the person in a session after the launch, so each page has them
//! - `page`: the shared HTML frame

mod auth;
mod module;
mod page;
mod portal;

use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::jose::Alg;
use crate::jose::sign::SigningKey;
use crate::{Config, Listeners, server};

/// Options of `hti-guard demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// The guard's port; the portal takes PORT+1, the module app PORT+2 and the admin
    /// listener PORT+3. With 0, each part takes a free port.
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Koppeltaal mode: the guard verifies by token introspection at the portal's auth
    /// server, with the module's own keys, and accepts encrypted (JWE) launches.
    #[arg(long)]
    pub koppeltaal: bool,
    /// SHOF mode: launches become SHOF logins (SMART App Launch) at the portal's auth
    /// server, which shows a login page; the portal launches with `iss` and `launch` (GET).
    #[arg(long, conflicts_with = "koppeltaal")]
    pub shof: bool,
    /// The host name the portal's launch form uses for the guard. With `localhost`, the
    /// portal (127.0.0.1) and the guard (localhost) are different sites to a browser, as a
    /// real portal and module are; everything still listens on 127.0.0.1 only.
    #[arg(long, default_value = "127.0.0.1", value_parser = ["127.0.0.1", "localhost"])]
    pub guard_host: String,
}

/// The audience the demo guard accepts, and the module the portal launches.
pub const AUDIENCE: &str = "Device/demo-module";

/// Where each part of the demo listens.
#[derive(Debug, Clone)]
pub struct Addresses {
    pub guard: SocketAddr,
    pub portal: SocketAddr,
    pub module: SocketAddr,
    pub admin: SocketAddr,
    /// The guard's host name in browser-facing URLs (`--guard-host`).
    pub guard_host: String,
}

impl Addresses {
    pub fn portal_url(&self) -> String {
        format!("http://{}", self.portal)
    }
    /// The guard as the demo's own parts reach it (127.0.0.1).
    pub fn guard_url(&self) -> String {
        format!("http://{}", self.guard)
    }
    /// The guard as a browser reaches it: `--guard-host` and the guard's port.
    pub fn guard_browser_url(&self) -> String {
        format!("http://{}:{}", self.guard_host, self.guard.port())
    }
    pub fn module_url(&self) -> String {
        format!("http://{}", self.module)
    }
}

async fn bind(port: u16) -> std::io::Result<TcpListener> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await
}

/// Bind the four listeners: PORT..PORT+3, or four free ports for 0.
async fn bind_all(port: u16) -> Result<[TcpListener; 4], String> {
    let ports: [u16; 4] = if port == 0 {
        [0; 4]
    } else {
        let last = port
            .checked_add(3)
            .ok_or_else(|| format!("--port {port}: PORT+3 must be a port number"))?;
        [port, port + 1, port + 2, last]
    };
    let mut listeners = Vec::with_capacity(4);
    for p in ports {
        listeners.push(
            bind(p)
                .await
                .map_err(|e| format!("cannot listen on 127.0.0.1:{p}: {e}"))?,
        );
    }
    listeners
        .try_into()
        .map_err(|_| "four listeners".to_string())
}

/// Where the guard sends the browser after a launch: the module's page for the launched task.
pub const LANDING: &str = "/task/{resource_id}";

/// The guard's SHOF callback (`shof.redirect_uri`'s path) with `--shof`.
pub const CALLBACK_PATH: &str = "/hti-guard/callback";

/// The guard's SHOF callback as the browser reaches it: the registered redirect_uri.
fn redirect_uri(addrs: &Addresses) -> String {
    format!("{}{CALLBACK_PATH}", addrs.guard_browser_url())
}

/// Where the module's pages link to end the guard's session (the guard's default).
pub const LOGOUT_PATH: &str = "/hti-guard/logout";

/// The guard's configuration, in memory: trust the demo portal (its JWKS, or in Koppeltaal
/// mode its auth server), forward to the demo module, and keep the person in a session
/// after the launch (plain-http cookie: the demo is loopback only). `enc_key` is the
/// module's JWE key file. With `shof`, launches become SHOF logins at the portal's auth
/// server (GET launches too, as SMART EHR launches are), and no issuer is trusted directly.
fn guard_config(
    addrs: &Addresses,
    enc_key: Option<&std::path::Path>,
    shof: bool,
) -> Result<Config, String> {
    let portal_url = addrs.portal_url();
    let (issuer, koppeltaal) = match enc_key {
        None if shof => (
            String::new(),
            format!(
                r#"
                [module]
                client_id = "{client_id}"
                generate = true
                jwks_path = "{jwks_path}"
                [shof]
                enabled = true
                fhir_base = "{portal_url}/fhir"
                redirect_uri = "{redirect_uri}"
                "#,
                client_id = auth::MODULE_CLIENT_ID,
                jwks_path = auth::MODULE_JWKS_PATH,
                redirect_uri = redirect_uri(addrs),
            ),
        ),
        None => (
            format!("jwks_url = \"{portal_url}/.well-known/jwks.json\"\nalgorithms = [\"RS512\"]"),
            String::new(),
        ),
        Some(key) => (
            "introspect = true".to_string(),
            format!(
                r#"
                [module]
                client_id = "{client_id}"
                generate = true
                jwks_path = "{jwks_path}"
                decryption_key_files = [{{ file = {file}, kid = "demo-enc" }}]
                [introspection]
                fhir_base = "{portal_url}/fhir"
                "#,
                client_id = auth::MODULE_CLIENT_ID,
                jwks_path = auth::MODULE_JWKS_PATH,
                file =
                    serde_json::to_string(&key.display().to_string()).map_err(|e| e.to_string())?,
            ),
        ),
    };
    let issuers = if issuer.is_empty() {
        String::new()
    } else {
        format!("[[issuers]]\n        iss = \"{portal_url}\"\n        {issuer}")
    };
    let methods = if shof {
        r#"["GET", "POST"]"#
    } else {
        r#"["POST"]"#
    };
    let toml = format!(
        r#"
        listen = "{guard}"
        admin_listen = "{admin}"
        upstream = "http://{module}"
        shutdown_grace = "2s"
        [launch]
        audience = "{AUDIENCE}"
        methods = {methods}
        [session]
        enabled = true
        secure = false
        landing = "{LANDING}"
        logout_path = "{LOGOUT_PATH}"
        secret = "{secret}"
        [pages]
        portal_url = "{portal_url}/"
        {issuers}
        {koppeltaal}
        "#,
        secret = session_secret()?,
        guard = addrs.guard,
        admin = addrs.admin,
        module = addrs.module,
    );
    Config::from_toml_str(&toml).map_err(|e| format!("demo configuration: {e}"))
}

/// A fresh session key for this run (sessions end with the demo anyway), so the guard need
/// not warn that it made one up.
fn session_secret() -> Result<String, String> {
    use base64::Engine as _;
    let mut key = [0u8; 32];
    aws_lc_rs::rand::fill(&mut key).map_err(|_| "no randomness for a session key")?;
    Ok(base64::engine::general_purpose::STANDARD.encode(key))
}

/// The module's JWE key for Koppeltaal mode, in a private temp directory (removed on exit).
fn write_enc_key() -> Result<std::path::PathBuf, String> {
    let dir = std::env::temp_dir().join(format!("hti-guard-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let key = SigningKey::generate(Alg::RS256, 2048).map_err(|e| e.to_string())?;
    let path = dir.join("module-enc.pem");
    let pem = key.to_pem().map_err(|e| e.to_string())?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    use std::io::Write as _;
    options
        .open(&path)
        .and_then(|mut f| f.write_all(pem.as_bytes()))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

/// Run the demo until Ctrl-C.
pub async fn run(args: DemoArgs) -> ExitCode {
    crate::install_crypto_provider();
    init_demo_logging();
    let [guard, portal, module, admin] = match bind_all(args.port).await {
        Ok(listeners) => listeners,
        Err(e) => {
            eprintln!("hti-guard demo: {e}");
            return ExitCode::FAILURE;
        }
    };
    let local = |l: &TcpListener| l.local_addr().expect("bound listener has an address");
    let addrs = Addresses {
        guard: local(&guard),
        portal: local(&portal),
        module: local(&module),
        admin: local(&admin),
        guard_host: args.guard_host.clone(),
    };
    let enc_key = if args.koppeltaal {
        match write_enc_key() {
            Ok(path) => Some(path),
            Err(e) => {
                eprintln!("hti-guard demo: cannot write the module's key: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        None
    };
    let config = match guard_config(&addrs, enc_key.as_deref(), args.shof) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("hti-guard demo: {e}");
            return ExitCode::FAILURE;
        }
    };
    let key = match SigningKey::generate(Alg::RS512, 2048) {
        Ok(key) => key,
        Err(e) => {
            eprintln!("hti-guard demo: cannot make the portal's key: {e}");
            return ExitCode::FAILURE;
        }
    };
    let portal_state = match portal::Portal::new(key, &addrs, args.koppeltaal, args.shof) {
        Ok(state) => Arc::new(state),
        Err(e) => {
            eprintln!("hti-guard demo: {e}");
            return ExitCode::FAILURE;
        }
    };

    // Listen for Ctrl-C before saying the demo is up: a SIGINT that came before the guard
    // first waited for it would otherwise end the process without a clean stop.
    let interrupted = match interrupt() {
        Ok(interrupted) => interrupted,
        Err(e) => {
            eprintln!("hti-guard demo: cannot listen for Ctrl-C: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (stop, stop_rx) = watch::channel(false);
    let portal_task = tokio::spawn(server::serve_plain(
        portal,
        move |request| portal::handle(request, portal_state.clone()),
        stop_rx.clone(),
    ));
    let module_task = tokio::spawn(server::serve_plain(module, module::handle, stop_rx));

    println!("portal: {}/", addrs.portal_url());
    println!("guard: {}/launch", addrs.guard_browser_url());
    println!("module: {}/", addrs.module_url());
    println!("metrics: http://{}/metrics", addrs.admin);
    if args.koppeltaal || args.shof {
        println!(
            "auth server: {}/fhir/.well-known/smart-configuration",
            addrs.portal_url()
        );
    }
    if args.shof {
        println!(
            "Open the portal in a browser and launch the module (SHOF). The guard sends you to \
             the auth server's login page; log in (Jan Jansen's launch logs in as Jan Jansen) and you \
             land in the module app. Ctrl-C stops the demo."
        );
    } else {
        println!("Open the portal in a browser and launch the module. Ctrl-C stops the demo.");
    }

    let result = crate::run(
        config,
        Listeners {
            public: guard,
            admin,
        },
        interrupted,
    )
    .await;
    let _ = stop.send(true);
    let _ = tokio::join!(portal_task, module_task);
    if let Some(dir) = enc_key.as_deref().and_then(std::path::Path::parent) {
        let _ = std::fs::remove_dir_all(dir);
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hti-guard demo: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A future that completes on Ctrl-C (SIGINT), with the handler in place on return.
#[cfg(unix)]
fn interrupt() -> std::io::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    let mut signal = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    Ok(async move {
        signal.recv().await;
    })
}

#[cfg(not(unix))]
fn interrupt() -> std::io::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}

/// The guard's JSON log lines, on stderr so that stdout keeps the demo's own lines.
fn init_demo_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(false)
        .with_span_list(false)
        .with_writer(std::io::stderr)
        .try_init();
}
