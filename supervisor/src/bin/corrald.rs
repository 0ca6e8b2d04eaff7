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
    println!("policy: ok ({})", policy_files(&config));
    for source in &config.sources {
        if !source.path.is_dir() {
            println!(
                "source {}: warning: not a directory; nothing is installed from it",
                source.path.display()
            );
        }
    }
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

/// The policy files the check read, as they are on disk: the built-in
/// policy always, then whichever of the operator's files exist.
fn policy_files(config: &Config) -> String {
    let mut read = vec!["the built-in default".to_string()];
    let mut missing = Vec::new();
    if config.policy.is_file() {
        read.push(config.policy.display().to_string());
    } else {
        missing.push(config.policy.display().to_string());
    }
    let drop_ins: Vec<String> = std::fs::read_dir(&config.policy_dir)
        .map(|d| {
            let mut names: Vec<String> = d
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .map(|p| p.display().to_string())
                .collect();
            names.sort();
            names
        })
        .unwrap_or_default();
    if drop_ins.is_empty() {
        missing.push(format!("{}/*.toml", config.policy_dir.display()));
    }
    read.extend(drop_ins);
    let mut text = read.join(", ");
    if !missing.is_empty() {
        text.push_str(&format!("; not present: {}", missing.join(", ")));
    }
    text
}

/// Raises the soft limit on open files to the hard one (every connection
/// and every plugin's channel is a descriptor; the default soft 1024
/// would cap both well below `max_connections`). Returns (before, after).
fn raise_open_files_limit() -> Option<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    let before = limit.rlim_cur;
    // A million is plenty, and bounds what plugins could inherit if a
    // policy set none.
    let wanted = limit.rlim_max.min(1 << 20);
    if wanted > before {
        let raised = libc::rlimit {
            rlim_cur: wanted,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads the struct it is given.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return Some((before, wanted));
        }
    }
    Some((before, before))
}

/// Sets the flag to false when dropped.
struct ClearOnDrop(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Drop for ClearOnDrop {
    fn drop(&mut self) {
        self.0.store(false, std::sync::atomic::Ordering::SeqCst);
    }
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
    if let Some((before, after)) = raise_open_files_limit() {
        let needed =
            (config.limits.max_connections + config.limits.health_connections) as u64 + 256;
        if after < needed {
            tracing::warn!(
                open_files = after,
                max_connections = config.limits.max_connections,
                "the open files limit is low for max_connections; raise LimitNOFILE"
            );
        } else if after != before {
            tracing::debug!(from = before, to = after, "raised the open files limit");
        }
    }
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
    // systemctl status shows what a slow start is doing.
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Status(
        "starting: loading the enabled plugins",
    )]);
    let daemon = match Daemon::start(config.clone(), config_path).await {
        Ok(d) => d,
        Err(e) => {
            server::unlink(&config.socket);
            return Err(e.into());
        }
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server_alive = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let server = tokio::spawn({
        let daemon = daemon.clone();
        let config = config.clone();
        // Cleared however the accept loop ends, a panic included.
        let alive = ClearOnDrop(server_alive.clone());
        async move {
            let _alive = alive;
            server::serve(daemon, listener, &config, stop_rx).await;
        }
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
        let serving = server_alive.clone();
        tokio::spawn(async move {
            // Ping at half the interval while the API is served; a daemon
            // whose runtime is stuck, or whose accept loop is gone, stops
            // pinging and systemd restarts it.
            let mut tick = tokio::time::interval(interval / 2);
            loop {
                tick.tick().await;
                if !daemon.is_draining() && serving.load(std::sync::atomic::Ordering::SeqCst) {
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
        let cli = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|d| d.join("corral")))
            .filter(|p| p.is_file());
        let corral = cli
            .as_ref()
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
        // Without these a bare `corral` is not found, or talks to the
        // system daemon's socket.
        let path = cli
            .as_ref()
            .and_then(|p| p.parent())
            .map(|dir| format!("PATH=\"{}:$PATH\" ", dir.display()))
            .unwrap_or_default();
        eprintln!("or, to use a bare `corral` in that terminal:");
        eprintln!("  export {path}CORRAL_SOCKET=\"{socket}\"");
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
    let _ = sd_notify::notify(&[
        sd_notify::NotifyState::Stopping,
        sd_notify::NotifyState::Status("stopping: draining calls in flight"),
    ]);
    daemon.shutdown().await;
    let _ = stop_tx.send(true);
    let _ = server.await;
    server::unlink(&config.socket);
    tracing::info!("stopped");
    Ok(())
}
