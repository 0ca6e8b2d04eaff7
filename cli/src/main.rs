//! `corral`: run, check and inspect plugins.

use clap::{Parser, Subcommand};
use corral::exit;
use corral::render;
use corral_protocol::error::CorralError;
use corral_supervisor::package::Package;
use corral_supervisor::run::{self, RunRequest};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "corral",
    version,
    about = "Run untrusted plugins in confined processes"
)]
struct Cli {
    /// More log output (-v: info, -vv: debug). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one confined call of a package, without a daemon.
    Run {
        /// The package directory (holding plugin.toml).
        package: PathBuf,
        /// Method to call.
        #[arg(short, long, default_value = "main")]
        method: String,
        /// Input as JSON.
        #[arg(short, long, conflicts_with = "input_file")]
        input: Option<String>,
        /// Read the input (JSON) from a file; `-` for stdin.
        #[arg(long)]
        input_file: Option<PathBuf>,
        /// An operator policy file applied on top of the built-in policy.
        #[arg(long)]
        policy: Option<PathBuf>,
        /// Print {"output", "usage"} or {"error"} as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Validate a package: its manifest, and whether the policy grants
    /// what it asks on this kernel.
    Check {
        package: PathBuf,
        #[arg(long)]
        policy: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Policy commands.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Print the compiled sandbox policy of a package and where every rule
    /// came from.
    Show {
        package: PathBuf,
        #[arg(long)]
        policy: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::INTERNAL);
        }
    };
    ExitCode::from(runtime.block_on(dispatch(cli.command)))
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

async fn dispatch(command: Command) -> u8 {
    match command {
        Command::Run {
            package,
            method,
            input,
            input_file,
            policy,
            json,
        } => cmd_run(package, method, input, input_file, policy, json).await,
        Command::Check {
            package,
            policy,
            json,
        } => cmd_check(package, policy, json),
        Command::Policy {
            command:
                PolicyCommand::Show {
                    package,
                    policy,
                    json,
                },
        } => cmd_policy_show(package, policy, json),
    }
}

fn fail(error: &CorralError, json: bool) -> u8 {
    if json {
        println!("{}", render::error_json(error));
    } else {
        eprintln!("{}", render::human_error(error));
    }
    exit::code_for(error)
}

/// The input as JSON bytes, checked to be JSON.
fn read_input(input: Option<String>, input_file: Option<PathBuf>) -> Result<Vec<u8>, CorralError> {
    let text = match (input, input_file) {
        (Some(text), _) => text,
        (None, Some(path)) if path.as_os_str() == "-" => {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
                .map_err(|e| CorralError::invalid_input(format!("reading stdin: {e}")))?;
            s
        }
        (None, Some(path)) => std::fs::read_to_string(&path)
            .map_err(|e| CorralError::invalid_input(format!("{}: {e}", path.display())))?,
        (None, None) => "null".to_string(),
    };
    serde_json::from_str::<serde_json::Value>(&text)
        .map_err(|e| CorralError::invalid_input(format!("the input is not JSON: {e}")))?;
    Ok(text.into_bytes())
}

async fn cmd_run(
    package: PathBuf,
    method: String,
    input: Option<String>,
    input_file: Option<PathBuf>,
    policy: Option<PathBuf>,
    json: bool,
) -> u8 {
    let input = match read_input(input, input_file) {
        Ok(i) => i,
        Err(e) => return fail(&e, json),
    };
    let result = run::run_once(RunRequest {
        package_dir: package,
        policy_file: policy,
        trampoline: None,
        method,
        input,
    })
    .await;
    match result {
        Ok(out) => {
            let response = render::call_response(&out.output, out.usage);
            if json {
                println!("{}", serde_json::to_string(&response).unwrap_or_default());
            } else {
                println!("{}", render::human_output(&response));
                tracing::info!("{}", render::usage_line(&response.usage));
            }
            exit::OK
        }
        Err(e) => fail(&e, json),
    }
}

/// Compiles the package for this kernel (probing it needs a runtime).
fn compile_here(
    package: &std::path::Path,
    policy: Option<&std::path::Path>,
) -> Result<(Package, corral_protocol::policy::SandboxPolicy), CorralError> {
    let policy = run::load_policy(policy)?;
    let package = Package::open(package)?;
    let features = corral_supervisor::features::KernelFeatures::detect(
        corral_supervisor::features::probe_cgroups(),
    );
    let compiled = corral_supervisor::policy::compile(&corral_supervisor::policy::CompileInput {
        manifest: &package.manifest,
        manifest_file: &package.manifest_file,
        package_dir: &package.dir,
        policy: &policy,
        features: &features,
        engine: &run::engine_version(),
    })
    .map_err(|e| e.to_corral_error())?;
    Ok((package, compiled))
}

fn cmd_check(package: PathBuf, policy: Option<PathBuf>, json: bool) -> u8 {
    match compile_here(&package, policy.as_deref()) {
        Ok((package, compiled)) => {
            if json {
                let v = serde_json::json!({
                    "ok": true,
                    "plugin": package.name(),
                    "version": package.manifest.plugin.version.to_string(),
                    "warnings": compiled.warnings,
                });
                println!("{v}");
            } else {
                println!(
                    "ok: {} {} ({})",
                    package.name(),
                    package.manifest.plugin.version,
                    package.manifest_file
                );
                for w in &compiled.warnings {
                    println!("warning: {w}");
                }
            }
            exit::OK
        }
        Err(e) => fail(&e, json),
    }
}

fn cmd_policy_show(package: PathBuf, policy: Option<PathBuf>, json: bool) -> u8 {
    match compile_here(&package, policy.as_deref()) {
        Ok((_, compiled)) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&compiled).unwrap_or_default()
                );
            } else {
                print!("{}", render::policy(&compiled));
            }
            exit::OK
        }
        Err(e) => fail(&e, json),
    }
}
