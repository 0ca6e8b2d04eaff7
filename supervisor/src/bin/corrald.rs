//! corrald: the corral daemon.
//!
//! Signals: SIGTERM/SIGINT drain and stop (exit 0); SIGHUP re-reads the
//! configuration and policy. Under systemd (Type=notify) it reports READY
//! once the enabled plugins are loaded and pings the watchdog.

use anyhow::{Context, Result};
use clap::Parser;
use corral_supervisor::config::{Config, DEFAULT_CONFIG};
use corral_supervisor::daemon::{Daemon, server, watch};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use tokio::signal::unix::{SignalKind, signal};

#[derive(Parser)]
#[command(
    name = "corrald",
    version,
    about = "corral's daemon: runs plugins in confined processes and serves them on a Unix socket"
)]
struct Args {
    /// Configuration file.
    #[arg(short, long, env = "CORRAL_CONFIG")]
    config: Option<PathBuf>,
    /// Development mode: socket, state and cgroups under --dev-dir, the
    /// built-in policy, plugins from --plugins, loaded at once.
    #[arg(long)]
    dev: bool,
    /// Folder of plugin packages to serve in development mode.
    #[arg(long, requires = "dev")]
    plugins: Option<PathBuf>,
    /// Where development mode keeps its socket and state.
    #[arg(long, default_value = ".corral-dev", requires = "dev")]
    dev_dir: PathBuf,
    /// Listen on this socket instead of the configured one.
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Check the configuration, the policy files and every package in the
    /// source folders, print the verdict and exit: 0 all good, 1 the
    /// configuration or policy is invalid, 2 a package would not load.
    #[arg(long, conflicts_with = "dev")]
    check: bool,
    /// More log output (-v: debug, -vv: trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.check {
        return check(args.config);
    }
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("corrald: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `--check`: the verdict on stdout, one line per package.
fn check(config: Option<PathBuf>) -> ExitCode {
    let explicit = config.is_some();
    let path = config.unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
    let config = match Config::load(&path, explicit) {
        Ok(config) => config,
        Err(e) => {
            println!("configuration: invalid: {e}");
            return ExitCode::from(1);
        }
    };
    println!("configuration: ok ({})", path.display());
    let verdict = match corral_supervisor::check::check_setup(&config) {
        Ok(verdict) => verdict,
        Err(e) => {
            println!("policy: invalid: {e}");
            return ExitCode::from(1);
        }
    };
    println!(
        "policy: ok ({} and {}/*.toml)",
        config.policy.display(),
        config.policy_dir.display()
    );
    for p in &verdict.plugins {
        let what = match &p.plugin {
            Some((name, version)) => format!("{name} {version}"),
            None => "(unreadable)".to_string(),
        };
        match &p.outcome {
            Ok(warnings) => {
                println!("plugin {what}: ok ({})", p.package.display());
                for w in warnings {
                    println!("  warning: {w}");
                }
            }
            Err(e) => println!(
                "plugin {what}: would not load ({}): {e}",
                p.package.display()
            ),
        }
    }
    if verdict.failures() > 0 {
        println!(
            "{} of {} packages would not load",
            verdict.failures(),
            verdict.plugins.len()
        );
        return ExitCode::from(2);
    }
    ExitCode::SUCCESS
}

fn init_logging(verbose: u8, format: &str) {
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // journald adds its own timestamps.
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if format == "json" {
        builder.json().init();
    } else if journal {
        builder.without_time().init();
    } else {
        builder.init();
    }
}

fn run(args: Args) -> Result<()> {
    let (mut config, config_path) = if args.dev {
        let dir = std::path::absolute(&args.dev_dir).context("resolving --dev-dir")?;
        let plugins = args
            .plugins
            .as_deref()
            .map(std::path::absolute)
            .transpose()
            .context("resolving --plugins")?;
        (Config::dev(&dir, plugins.as_deref()), None)
    } else {
        let explicit = args.config.is_some();
        let path = args.config.unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
        (Config::load(&path, explicit)?, Some(path))
    };
    if let Some(socket) = args.socket {
        config.socket = std::path::absolute(socket).context("resolving --socket")?;
    }
    init_logging(args.verbose, &config.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("corrald")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(config, config_path, args.dev))
}

async fn serve(config: Config, config_path: Option<PathBuf>, dev: bool) -> Result<()> {
    // Handlers first: a signal that arrives while plugins load (or right
    // after READY) waits for the loop below instead of killing the daemon
    // with nothing cleaned up.
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut hangup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    // Bind next: clients that connect while plugins load wait in the
    // backlog instead of finding no socket.
    let listener = server::bind(&config)?;
    let daemon = match Daemon::start(config.clone(), config_path).await {
        Ok(d) => d,
        Err(e) => {
            server::unlink(&config.socket);
            return Err(e.into());
        }
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server = tokio::spawn({
        let daemon = daemon.clone();
        let config = config.clone();
        async move { server::serve(daemon, listener, &config, stop_rx).await }
    });
    corral_supervisor::sources::follow::spawn(daemon.clone());
    let watched: Vec<PathBuf> = config
        .sources
        .iter()
        .filter(|s| s.watch && s.path.is_dir())
        .map(|s| s.path.clone())
        .collect();
    let _watcher = if watched.is_empty() {
        None
    } else {
        match watch::watch(daemon.clone(), watched.clone()) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the source folders; hot reload is off");
                None
            }
        }
    };

    let health = daemon.health();
    let status = format!(
        "serving {} plugins on {}",
        health.plugins_loaded,
        config.socket.display()
    );
    let _ = sd_notify::notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(&status),
    ]);
    if let Some(interval) = sd_notify::watchdog_enabled() {
        let daemon = daemon.clone();
        tokio::spawn(async move {
            // Ping at half the interval; a daemon whose runtime is stuck
            // stops pinging and systemd restarts it.
            let mut tick = tokio::time::interval(interval / 2);
            loop {
                tick.tick().await;
                if !daemon.is_draining() {
                    let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                }
            }
        });
    }
    tracing::info!(
        socket = %config.socket.display(),
        plugins = health.plugins_loaded,
        cgroup = %health.cgroup,
        landlock_abi = health.landlock_abi,
        "corrald ready"
    );
    if dev {
        let socket = config.socket.display();
        // The CLI sits next to corrald in a cargo build.
        let corral = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|d| d.join("corral")))
            .filter(|p| p.is_file())
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "corral".into());
        eprintln!(
            "\ncorrald (development mode) is serving {} plugins on {socket}",
            health.plugins_loaded
        );
        eprintln!("try, in another terminal:");
        eprintln!("  {corral} --socket {socket} ls");
        eprintln!(
            "  {corral} --socket {socket} call hello greet --input '{{\"name\": \"world\"}}'"
        );
        eprintln!(
            "  curl --unix-socket {socket} http://corral/v1/plugins/hello/call -d '{{\"method\": \"greet\", \"input\": {{\"name\": \"world\"}}}}'"
        );
        eprintln!("Ctrl-C stops it.\n");
    }

    loop {
        tokio::select! {
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
            _ = hangup.recv() => {
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Reloading]);
                if let Err(e) = daemon.reload_configuration().await {
                    tracing::error!(error = %e, "the reload failed; the running configuration and policy stay");
                }
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
            }
        }
    }
    tracing::info!("stopping: draining calls in flight");
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    daemon.shutdown().await;
    let _ = stop_tx.send(true);
    let _ = server.await;
    server::unlink(&config.socket);
    tracing::info!("stopped");
    Ok(())
}
