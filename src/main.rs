//! The command line: parse arguments, load and validate the configuration (exit 2 before
//! any port is bound), start JSON logging, bind, and hand over to
//! `hti_guard::run_with_reload`, which SIGHUP asks to re-read the configuration.

use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use hti_guard::{Config, ConfigError, Listeners, Reloader, check, demo, tools};
use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};

/// `--version`: the crate's version and the git revision it was built from (build.rs).
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("HTI_GUARD_GIT_REV"),
    ")"
);

#[derive(Parser)]
#[command(
    name = "hti-guard",
    version = VERSION,
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
    /// Validate the configuration and fetch every issuer's keys once; print a report.
    Check {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        options: check::CheckOptions,
    },
    /// Run a demo portal, the guard and a demo module app on loopback.
    Demo(demo::DemoArgs),
    /// Generate a signing key (PKCS#8 PEM) and its public JWKS.
    Keygen(tools::KeygenArgs),
    /// Print a signed HTI 2.0 launch token.
    Mint(tools::MintArgs),
    /// Print the public JWKS of a private key.
    Jwks(tools::JwksArgs),
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
    let (arg, check_options) = match cli.command {
        Command::Serve(arg) => (arg, None),
        Command::Check { config, options } => (config, Some(options)),
        Command::Demo(args) => return with_runtime(|| demo::run(args)),
        Command::Keygen(args) => return tools::keygen(&args),
        Command::Mint(args) => return tools::mint(&args),
        Command::Jwks(args) => return tools::jwks(&args),
    };
    let (path, explicit) = source(&arg);
    let config = match Config::load(Some(&path), explicit).map_err(|e| e.to_string()) {
        Ok(config) => config,
        Err(message) => {
            eprintln!("hti-guard: configuration error: {message}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match check_options {
        None => {
            // Held until main returns, after the runtime is gone, so that every line queued
            // (the last ones on an error path too) is written before the process exits.
            let _log = init_logging();
            let reloader = reloader(&config, path, explicit);
            with_runtime(|| serve(config, reloader))
        }
        Some(options) => with_runtime(|| check::run(config, options)),
    }
}

/// Run `task` on a multi-threaded tokio runtime.
fn with_runtime<F: std::future::Future<Output = ExitCode>>(task: impl FnOnce() -> F) -> ExitCode {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(task()),
        Err(e) => {
            eprintln!("hti-guard: cannot start the runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The configuration file, and whether it was asked for (then it must exist).
fn source(arg: &ConfigArg) -> (PathBuf, bool) {
    match &arg.config {
        Some(path) => (path.clone(), true),
        None => (PathBuf::from("config.toml"), false),
    }
}

/// A reload reads what the guard started from: the same file, the environment again.
fn reloader(config: &Config, path: PathBuf, explicit: bool) -> Reloader {
    let load =
        move || -> Result<Config, ConfigError> { Config::load(Some(Path::new(&path)), explicit) };
    Reloader::new(config.file.clone(), load)
}

/// How much of a burst of log lines goes out in one write(2): a Linux pipe's capacity.
const LOG_BATCH_BYTES: usize = 64 * 1024;

/// Lines the log queue holds before a request that logs waits for the writer thread. The
/// queue's slots are allocated and touched up front: tracing-appender's default of 128 000
/// cost 4 MiB of resident memory at idle; 8 192 lines are half a second of launches at full
/// speed, far more than the writer thread falls behind by.
const LOG_QUEUE_LINES: usize = 8192;

/// JSON lines on stdout, written by a thread of their own, so that a request formats its
/// line and queues it but never waits on stdout. Dropping the guard writes what is queued.
fn init_logging() -> WorkerGuard {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Not lossy: a full queue makes the logging request wait rather than drop an audit line.
    // The worker drains the queue and then flushes, so the BufWriter turns the lines queued
    // in the meantime into one write, and a lone line still goes out at once.
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(LOG_QUEUE_LINES)
        .thread_name("hti-guard-log")
        .finish(BufWriter::with_capacity(LOG_BATCH_BYTES, std::io::stdout()));
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(false)
        .with_span_list(false)
        .with_writer(writer)
        .init();
    guard
}

/// The listen backlog of both listeners: nginx's default on Linux (the kernel caps it at
/// `net.core.somaxconn`, 4096 by default).
const LISTEN_BACKLOG: u32 = 511;

async fn serve(config: Config, reloader: Reloader) -> ExitCode {
    let bind = |key: &str, addr: std::net::SocketAddr| {
        let socket = match addr {
            std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
            std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
        };
        // SO_REUSEADDR as std sets it (a restart binds while old connections linger in
        // TIME_WAIT); nginx's backlog rather than std's 128, so that a burst beyond
        // limits.max_connections waits in the kernel instead of in SYN retries.
        socket
            .and_then(|s| s.set_reuseaddr(true).map(|()| s))
            .and_then(|s| s.bind(addr).map(|()| s))
            .and_then(|s| s.listen(LISTEN_BACKLOG))
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
    let shutdown = shutdown_signal();
    let reloader = reload_on_hangup(reloader);
    match hti_guard::run_with_reload(config, listeners, shutdown, Some(reloader)).await {
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

/// SIGHUP asks for a reload. Installed before the guard starts, like the shutdown signals,
/// so that an early SIGHUP does not end the process.
fn reload_on_hangup(reloader: Reloader) -> Reloader {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let handle = reloader.handle();
        match signal(SignalKind::hangup()) {
            Ok(mut hangup) => {
                tokio::spawn(async move {
                    while hangup.recv().await.is_some() {
                        handle.reload();
                    }
                });
            }
            Err(e) => tracing::warn!(error = %e, "SIGHUP cannot be caught: no reload on SIGHUP"),
        }
        reloader
    }
    #[cfg(not(unix))]
    reloader
}

/// SIGTERM or SIGINT. The handlers are installed now, before the guard starts, so that a
/// signal that comes early still drains instead of killing the process.
fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate());
        let interrupt = signal(SignalKind::interrupt());
        async move {
            match (term, interrupt) {
                (Ok(mut term), Ok(mut interrupt)) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = interrupt.recv() => {}
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async move {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
