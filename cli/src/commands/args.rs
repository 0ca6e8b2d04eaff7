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
    ///
    /// With --daemon, NAME is an installed, loaded plugin: corrald swaps
    /// its instances for learning ones for --for, records what they need
    /// while clients call it, then restores the normal policy and prints
    /// the draft.
    Learn {
        /// The package directory (holding plugin.toml), or with --daemon
        /// the installed plugin's name.
        package: PathBuf,
        /// Learn from the plugin loaded in corrald, not from a package
        /// directory.
        #[arg(long)]
        daemon: bool,
        /// With --daemon: how long it runs under the learning policy (at
        /// most 10m).
        #[arg(long = "for", value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
        duration: std::time::Duration,
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
    /// Show a plugin's effective settings, or change them (validated
    /// against its manifest's [config] schema; the plugin's instances are
    /// swapped for new ones that take them, with no failed call).
    Config {
        /// The plugin's name.
        name: String,
        /// Set one setting: KEY=VALUE, where VALUE is JSON or else a
        /// string; a dotted KEY reaches into objects (db.port=5432).
        /// Repeatable.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// A JSON merge patch (RFC 7396) from FILE, or - for stdin; null
        /// removes what the API set.
        #[arg(long, value_name = "FILE|-", conflicts_with = "set")]
        patch: Option<PathBuf>,
    },
    /// Load and enable a plugin; returns once it serves calls.
    Load {
        /// The plugin's name.
        name: String,
        /// Load this installed version instead, swapping out the current
        /// one (which stays installed alongside).
        #[arg(long, value_name = "VERSION")]
        version: Option<String>,
    },
    /// Disable a plugin and stop its children once in-flight calls finish.
    /// A plugin that loaded plugins depend on is refused unless --cascade.
    Unload {
        /// The plugin's name.
        name: String,
        /// Unload the plugins that need it first.
        #[arg(long)]
        cascade: bool,
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
        /// Install PATH beside the installed version of the same plugin,
        /// which stays current (switch with `corral load NAME --version`).
        #[arg(long, conflicts_with_all = ["upload", "load", "replace"])]
        alongside: bool,
    },
    /// List an installed package's files, or print one of them (its
    /// bytes, as stored) with PATH.
    Files {
        /// The plugin's name.
        name: String,
        /// A file inside the package, e.g. `index.js` or `bin/hello`.
        path: Option<String>,
    },
    /// Remove a plugin (unloading it first) with all its versions, or
    /// with NAME@VERSION one version installed alongside (the current one
    /// and one a loaded plugin needs are refused).
    #[command(visible_alias = "remove")]
    Rm {
        /// The plugin's name, or NAME@VERSION.
        name: String,
        /// Also remove the plugin's stored data (its key-value tables);
        /// without it the data stays for a later install.
        #[arg(long)]
        purge_data: bool,
    },
    /// Pack a package directory as <name>-<version>.tar.gz with its .sha256
    /// (and .minisig with --key), checked by the rules an install applies.
    Pack {
        /// The package directory (holding plugin.toml).
        dir: PathBuf,
        /// Where to write the files.
        #[arg(long, value_name = "DIR", default_value = ".")]
        out: PathBuf,
        /// A minisign secret key to sign with (its password, if any, in
        /// CORRAL_SIGNING_PASSWORD).
        #[arg(long, value_name = "FILE")]
        key: Option<PathBuf>,
    },
    /// Sign a file (a packed package) with a minisign secret key: writes
    /// FILE.minisig (the key's password, if any, in CORRAL_SIGNING_PASSWORD).
    Sign {
        file: PathBuf,
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
    },
    /// Make a minisign key pair for signing packages: DIR/corral.key (secret;
    /// encrypted when CORRAL_SIGNING_PASSWORD is set) and DIR/corral.pub.
    Keygen {
        #[arg(value_name = "DIR", default_value = ".")]
        dir: PathBuf,
    },
    /// Upload a packed package (or pack a directory and upload it) to an S3
    /// source, with the AWS credentials of this machine (the standard chain)
    /// or those in the configuration; corrald is not needed.
    Publish {
        /// A <name>-<version>.tar.gz from `corral pack` (its .sha256 and
        /// .minisig beside it), or a package directory.
        package: PathBuf,
        #[command(flatten)]
        target: PublishTarget,
        /// A minisign secret key to sign with when packing a directory.
        #[arg(long, value_name = "FILE")]
        key: Option<PathBuf>,
    },
    /// Browse and install from the S3 sources corrald follows.
    Source {
        #[command(subcommand)]
        command: SourceCommand,
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

/// Where `corral publish` uploads: a source of corrald.toml, or a bucket
/// named here (flags override the file's settings).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct PublishTarget {
    /// A source named in the configuration file.
    #[arg(long, value_name = "NAME")]
    pub source: Option<String>,
    /// The configuration file holding the source.
    #[arg(long, value_name = "FILE", default_value = "/etc/corral/corrald.toml")]
    pub config: PathBuf,
    #[arg(long)]
    pub bucket: Option<String>,
    /// The bucket's base path.
    #[arg(long)]
    pub prefix: Option<String>,
    /// An S3-compatible endpoint URL (unset: AWS).
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    #[arg(long)]
    pub region: Option<String>,
    /// Path-style addressing (MinIO and most self-hosted stores).
    #[arg(long)]
    pub path_style: bool,
}

#[derive(Debug, Subcommand)]
pub enum SourceCommand {
    /// Each source and how its polling goes; with a SOURCE, the plugins it
    /// holds (a page at a time).
    Ls {
        source: Option<String>,
        #[arg(long)]
        limit: Option<u32>,
        /// The `next` of the previous page.
        #[arg(long)]
        after: Option<String>,
    },
    /// A plugin's versions in a source: size, last modified, etag, sha256.
    Show { source: String, name: String },
    /// A version's manifest.
    Manifest {
        source: String,
        name: String,
        /// `latest`, a version or a semver range.
        #[arg(long)]
        version: Option<String>,
    },
    /// A version's files.
    Files {
        source: String,
        name: String,
        #[arg(long)]
        version: Option<String>,
    },
    /// Install a plugin from a source at `latest`, a version or a range;
    /// the source follows that afterwards (a pin).
    Install {
        source: String,
        name: String,
        #[arg(long)]
        version: Option<String>,
        #[arg(long)]
        load: bool,
        /// Replace a plugin of that name installed from elsewhere.
        #[arg(long)]
        replace: bool,
    },
    /// Poll a source now.
    Poll { source: String },
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
                alongside,
            } => {
                assert!(!alongside);
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
