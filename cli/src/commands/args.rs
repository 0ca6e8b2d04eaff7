//! The command line: global options and one subcommand per operation.

use clap::{Parser, Subcommand};
use corral::exit;
use corral_protocol::api::{DEFAULT_SOCKET, SOCKET_ENV};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "corral",
    version,
    about = "Run untrusted plugins in confined processes",
    long_about = "Run untrusted plugins in confined processes.\n\n\
        `run`, `check` and `policy show DIR` work on a package directory \
        without a daemon; the other commands talk to corrald over its Unix \
        socket.",
    after_help = exit::HELP
)]
pub struct Cli {
    /// More log output (-v: info, -vv: debug). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// corrald's socket.
    #[arg(long, global = true, value_name = "PATH", env = SOCKET_ENV, default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Print JSON for scripts: the daemon's answers exactly as it sent them,
    /// and failures as {"error": {"code", "message", ...}} on stdout
    /// (codes daemon_unreachable, daemon_disconnected and bad_response
    /// when the daemon could not answer).
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one confined call of a package, without a daemon.
    Run {
        /// The package directory (holding plugin.toml).
        package: PathBuf,
        /// Method to call.
        #[arg(short, long, default_value = "main")]
        method: String,
        #[command(flatten)]
        input: InputArgs,
        /// An operator policy file applied on top of the built-in policy.
        #[arg(long, value_name = "FILE")]
        policy: Option<PathBuf>,
    },
    /// Run a package in learning mode and draft the permissions and policy
    /// it needs: what its filter would refuse is recorded and let through,
    /// and the paths, processes and ports it uses are recorded. Prints a
    /// `[permissions]` fragment and a policy fragment, every line with why.
    /// Runs the plugin less confined than usual: operators only, on code
    /// they chose to run.
    Learn {
        /// The package directory (holding plugin.toml).
        package: PathBuf,
        /// A method to call during the run; repeat for several calls (with
        /// no method, only the start is observed).
        #[arg(short, long = "method", value_name = "METHOD")]
        methods: Vec<String>,
        /// The JSON input of the method given at the same position
        /// (default: null).
        #[arg(short, long = "input", value_name = "JSON")]
        inputs: Vec<String>,
        /// An operator policy file applied on top of the built-in policy.
        #[arg(long, value_name = "FILE")]
        policy: Option<PathBuf>,
    },
    /// Validate a package: its manifest, and whether the policy grants
    /// what it asks on this kernel.
    Check {
        package: PathBuf,
        /// An operator policy file applied on top of the built-in policy.
        #[arg(long, value_name = "FILE")]
        policy: Option<PathBuf>,
    },
    /// Policy commands.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// List the installed plugins with their state and counters.
    #[command(visible_alias = "list")]
    Ls,
    /// Show one plugin: state, counters, source, policy in brief, children.
    Info {
        /// The plugin's name.
        name: String,
    },
    /// Load and enable a plugin; returns once it serves calls.
    Load {
        /// The plugin's name.
        name: String,
    },
    /// Disable a plugin and stop its children once in-flight calls finish.
    Unload {
        /// The plugin's name.
        name: String,
    },
    /// Re-read a plugin's package and policy and swap in new children
    /// (lifts a quarantine; dependents are reloaded too).
    Reload {
        /// The plugin's name.
        name: String,
    },
    /// Call a method of a loaded plugin and print its output.
    Call {
        /// The plugin's name.
        name: String,
        /// The method to call.
        method: String,
        #[command(flatten)]
        input: InputArgs,
        /// A call timeout shorter than the policy's, in milliseconds.
        #[arg(long, value_name = "MS")]
        timeout: Option<u64>,
    },
    /// Stream lifecycle events, one line each, until Ctrl-C (--json: the
    /// raw NDJSON lines).
    Events {
        /// Only this plugin's events.
        #[arg(long, value_name = "NAME")]
        plugin: Option<String>,
    },
    /// Install a package: a directory or .tar.gz the daemon reads itself,
    /// or (--upload) a .tar.gz sent to it.
    Install {
        /// A package directory or .tar.gz on this host (made absolute).
        #[arg(required_unless_present = "upload", conflicts_with = "upload")]
        path: Option<PathBuf>,
        /// Send this .tar.gz's bytes instead of a path.
        #[arg(long, value_name = "FILE.tar.gz")]
        upload: Option<PathBuf>,
        /// Load and enable the plugin once installed.
        #[arg(long)]
        load: bool,
        /// Replace another package installed under the same name (upgrade,
        /// downgrade or rebuild); without it that install is refused.
        #[arg(long)]
        replace: bool,
    },
    /// Remove a plugin (unloading it first).
    #[command(visible_alias = "remove")]
    Rm {
        /// The plugin's name.
        name: String,
    },
    /// The daemon's status: version, uptime, plugins, kernel features.
    Health,
    /// The daemon's metrics in Prometheus text format (text with --json too).
    Metrics,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Print the compiled sandbox policy and where every rule came from:
    /// of a package directory (compiled here), or of an installed plugin
    /// (asked from the daemon).
    Show {
        /// A package directory (compiled here when the path exists), or
        /// else the name of an installed plugin (asked from the daemon).
        #[arg(value_name = "PACKAGE_DIR | PLUGIN")]
        target: String,
        /// An operator policy file applied on top of the built-in policy
        /// (package directories only).
        #[arg(long, value_name = "FILE")]
        policy: Option<PathBuf>,
    },
    /// Make the daemon re-read its configuration and policy files (as
    /// SIGHUP does) and print what changed. A file with an error is
    /// reported and changes nothing.
    Reload,
}

/// A call's input, JSON, given inline or in a file.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct InputArgs {
    /// Input as JSON (default: null).
    #[arg(short, long, value_name = "JSON", conflicts_with = "input_file")]
    pub input: Option<String>,
    /// Read the input (JSON) from a file; `-` for stdin.
    #[arg(long, value_name = "FILE")]
    pub input_file: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("corral").chain(args.iter().copied()))
    }

    #[test]
    fn the_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_options_go_anywhere() {
        let cli = parse(&["ls", "--json", "--socket", "/tmp/s.sock"]).expect("parses");
        assert!(cli.json);
        assert_eq!(cli.socket, PathBuf::from("/tmp/s.sock"));
        assert!(matches!(cli.command, Command::Ls));
        let cli = parse(&["--json", "run", "pkg"]).expect("parses");
        assert!(cli.json);
    }

    #[test]
    fn call_takes_input_and_timeout() {
        let cli = parse(&[
            "call",
            "hello",
            "greet",
            "--input",
            r#"{"a":1}"#,
            "--timeout",
            "250",
        ])
        .expect("parses");
        match cli.command {
            Command::Call {
                name,
                method,
                input,
                timeout,
            } => {
                assert_eq!((name.as_str(), method.as_str()), ("hello", "greet"));
                assert_eq!(input.input.as_deref(), Some(r#"{"a":1}"#));
                assert_eq!(timeout, Some(250));
            }
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn bad_command_lines_are_usage_errors() {
        let cases: &[&[&str]] = &[
            &["call", "hello"],
            &["call", "hello", "m", "--input", "1", "--input-file", "f"],
            &["call", "hello", "m", "--timeout", "soon"],
            &["install"],
            &["install", "dir", "--upload", "x.tar.gz"],
            &["info"],
            &["nope"],
        ];
        for args in cases {
            let error = parse(args).expect_err(&format!("{args:?} must not parse"));
            assert_eq!(error.exit_code(), i32::from(exit::USAGE), "{args:?}");
        }
    }

    #[test]
    fn install_takes_a_path_or_an_upload() {
        let cli = parse(&["install", "--upload", "p.tar.gz", "--load"]).expect("parses");
        match cli.command {
            Command::Install {
                path,
                upload,
                load,
                replace,
            } => {
                assert_eq!(path, None);
                assert_eq!(upload, Some(PathBuf::from("p.tar.gz")));
                assert!(load);
                assert!(!replace);
            }
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn help_documents_the_exit_codes() {
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("Exit codes:"), "{help}");
        assert!(help.contains("daemon is unreachable"), "{help}");
    }
}
