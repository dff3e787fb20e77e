//! The command line: parse arguments, load and validate the configuration (exit 2 before
//! any port is bound), start JSON logging, bind, and hand over to `hti_guard::run`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use hti_guard::verify::keys::{KeyCache, fetch_jwks};
use hti_guard::{Config, Listeners};

#[derive(Parser)]
#[command(
    name = "hti-guard",
    version,
    about = "Verifies HTI launches in front of a module application"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the guard.
    Serve(ConfigArg),
    /// Validate the configuration and fetch every issuer's keys once.
    Check {
        #[command(flatten)]
        config: ConfigArg,
        /// Validate only; fetch nothing.
        #[arg(long)]
        offline: bool,
    },
}

#[derive(Args)]
struct ConfigArg {
    /// The configuration file [default: $HTI_GUARD_CONFIG, then ./config.toml]
    #[arg(long, value_name = "FILE", env = "HTI_GUARD_CONFIG")]
    config: Option<PathBuf>,
}

/// Exit status for a configuration error.
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (arg, offline) = match &cli.command {
        Command::Serve(arg) => (arg, None),
        Command::Check { config, offline } => (config, Some(*offline)),
    };
    let config = match load(arg) {
        Ok(config) => config,
        Err(message) => {
            eprintln!("hti-guard: configuration error: {message}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hti-guard: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match offline {
        None => {
            init_logging();
            runtime.block_on(serve(config))
        }
        Some(offline) => runtime.block_on(check(&config, offline)),
    }
}

fn load(arg: &ConfigArg) -> Result<Config, String> {
    let (path, explicit) = match &arg.config {
        Some(path) => (path.clone(), true),
        None => (PathBuf::from("config.toml"), false),
    };
    Config::load(Some(Path::new(&path)), explicit).map_err(|e| e.to_string())
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(false)
        .with_span_list(false)
        .with_writer(std::io::stdout)
        .init();
}

async fn serve(config: Config) -> ExitCode {
    let bind = |key: &str, addr| {
        std::net::TcpListener::bind(addr)
            .and_then(|l| l.set_nonblocking(true).map(|_| l))
            .and_then(tokio::net::TcpListener::from_std)
            .map_err(|e| format!("{key}: cannot listen on {addr}: {e}"))
    };
    let listeners = match (
        bind("listen", config.listen),
        bind("admin_listen", config.admin_listen),
    ) {
        (Ok(public), Ok(admin)) => Listeners { public, admin },
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(error = %e, "cannot start");
            eprintln!("hti-guard: {e}");
            return ExitCode::FAILURE;
        }
    };
    match hti_guard::run(config, listeners, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            eprintln!("hti-guard: {e}");
            ExitCode::from(match e {
                hti_guard::StartupError::Config { .. } => EXIT_CONFIG,
                _ => 1,
            })
        }
    }
}

/// SIGTERM or SIGINT.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}

/// Print what the configuration holds and what each issuer's JWKS gives.
async fn check(config: &Config, offline: bool) -> ExitCode {
    hti_guard::install_crypto_provider();
    println!("configuration: ok");
    println!("  listen        {}", config.listen);
    println!("  admin_listen  {}", config.admin_listen);
    println!("  upstream      {}", config.upstream.url);
    println!("  launch.paths  {}", config.launch.paths.join(", "));
    println!("  audience      {}", config.launch.audience.join(", "));
    println!(
        "  tls           {}",
        if config.tls.is_some() { "on" } else { "off" }
    );
    let mut usable = true;
    let client = match KeyCache::http_client(&config.keys) {
        Ok(c) => c,
        Err(e) => {
            println!("cannot build the HTTP client: {e}");
            return ExitCode::FAILURE;
        }
    };
    for issuer in &config.issuers {
        println!("issuer {}", issuer.iss);
        println!("  jwks_url    {}", issuer.jwks_url);
        let algs: Vec<&str> = issuer.algorithms.iter().map(|a| a.name()).collect();
        println!("  algorithms  {}", algs.join(" "));
        if offline {
            continue;
        }
        match fetch_jwks(&client, &issuer.jwks_url).await {
            Ok(fetched) => {
                println!("  status      {}", fetched.status);
                println!(
                    "  cache       {}",
                    fetched
                        .cache_control
                        .as_deref()
                        .unwrap_or("(no Cache-Control)")
                );
                for key in &fetched.jwks.keys {
                    let alg = key.alg.map(|a| a.name()).unwrap_or("any fitting");
                    println!("  key         {} ({}, alg {alg})", key.kid, key.describe());
                }
                for problem in &fetched.jwks.problems {
                    println!("  problem     {problem}");
                }
                if fetched.jwks.keys.is_empty() {
                    println!("  problem     no usable key");
                    usable = false;
                }
            }
            Err(e) => {
                println!("  problem     fetch failed: {e}");
                usable = false;
            }
        }
    }
    if usable {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
