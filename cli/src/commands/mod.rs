//! The subcommands: parsing ([`args`]), the daemon-free ones ([`local`]),
//! the ones corrald answers ([`daemon`]) and how results are printed
//! ([`output`]).

pub mod args;
mod daemon;
mod local;
mod output;
mod sources;

use args::{Command, PolicyCommand};
use corral::Client;
use corral_protocol::api::DEFAULT_SOCKET;
use corral_protocol::manifest::validate_plugin_name;
use std::path::{Path, PathBuf};

/// Runs one command; returns the exit code.
pub async fn dispatch(command: Command, socket: PathBuf, json: bool) -> u8 {
    // CORRAL_SOCKET= (set but empty) means the default, as for Client::from_env.
    let socket = if socket.as_os_str().is_empty() {
        PathBuf::from(DEFAULT_SOCKET)
    } else {
        socket
    };
    let client = Client::new(socket);
    match command {
        Command::Run {
            package,
            method,
            input,
            policy,
        } => local::run(package, method, input, policy, json).await,
        Command::Learn {
            package,
            daemon: true,
            duration,
            methods,
            inputs,
            policy,
        } => {
            if !methods.is_empty() || !inputs.is_empty() || policy.is_some() {
                return output::usage(
                    "--method, --input and --policy apply to a package directory; with --daemon, \
                     call the plugin as usual while it learns",
                );
            }
            daemon::learn(
                &client,
                package.to_string_lossy().into_owned(),
                duration,
                json,
            )
            .await
        }
        Command::Learn {
            package,
            daemon: false,
            methods,
            inputs,
            policy,
            ..
        } => local::learn(package, methods, inputs, policy, json).await,
        Command::Check { package, policy } => local::check(package, policy, json),
        Command::Policy {
            command: PolicyCommand::Show { target, policy },
        } => match policy_target(&target) {
            PolicyTarget::Package => local::policy_show(Path::new(&target), policy, json),
            PolicyTarget::Installed if policy.is_some() => output::usage(&format!(
                "--policy applies to a package directory, and `{target}` is not one here; \
                 the daemon compiles an installed plugin's policy with its own policy files"
            )),
            PolicyTarget::Installed => daemon::policy(&client, target, json).await,
        },
        Command::Policy {
            command: PolicyCommand::Reload,
        } => daemon::reload_configuration(&client, json).await,
        Command::Ls => daemon::ls(&client, json).await,
        Command::Info { name } => daemon::info(&client, name, json).await,
        Command::Config { name, set, patch } => {
            daemon::config(&client, name, set, patch, json).await
        }
        Command::Load {
            name,
            version: None,
        } => daemon::lifecycle(&client, corral::Endpoint::Load { name }, json).await,
        Command::Load {
            name,
            version: Some(version),
        } => {
            let endpoint = corral::Endpoint::LoadVersion { name, version };
            daemon::lifecycle(&client, endpoint, json).await
        }
        Command::Unload { name, cascade } => {
            let endpoint = if cascade {
                corral::Endpoint::UnloadCascade { name }
            } else {
                corral::Endpoint::Unload { name }
            };
            daemon::lifecycle(&client, endpoint, json).await
        }
        Command::Reload { name } => {
            daemon::lifecycle(&client, corral::Endpoint::Reload { name }, json).await
        }
        Command::Call {
            name,
            method,
            input,
            timeout,
        } => daemon::call(&client, name, method, input, timeout, json).await,
        Command::Events { plugin } => daemon::events(&client, plugin, json).await,
        Command::Install {
            path,
            alongside: true,
            ..
        } => match path {
            Some(path) => daemon::install_alongside(&client, path, json).await,
            None => output::usage("--alongside installs a PATH"),
        },
        Command::Install {
            path,
            upload,
            load,
            replace,
            alongside: false,
        } => {
            let options = corral::client::InstallOptions { load, replace };
            daemon::install(&client, path, upload, options, json).await
        }
        Command::Files { name, path } => daemon::files(&client, name, path, json).await,
        Command::Rm { name, purge_data } => daemon::rm(&client, name, purge_data, json).await,
        Command::Pack { dir, out, key } => sources::pack(&dir, &out, key.as_deref(), json),
        Command::Keygen { dir } => sources::keygen(&dir, json),
        Command::Sign { file, key } => sources::sign_file(&file, &key, json),
        Command::Publish {
            package,
            target,
            key,
        } => sources::publish(&package, &target, key.as_deref(), json).await,
        Command::Source { command } => sources::source(&client, command, json).await,
        Command::Health => daemon::health(&client, json).await,
        Command::Metrics => daemon::metrics(&client, json).await,
    }
}

#[derive(Debug, PartialEq, Eq)]
enum PolicyTarget {
    /// Compile the package directory here.
    Package,
    /// Ask the daemon for the installed plugin's policy.
    Installed,
}

/// A path that exists is a package directory; otherwise a valid plugin
/// name is an installed plugin, and anything else is a package directory
/// that is missing (so the error says so).
fn policy_target(target: &str) -> PolicyTarget {
    if Path::new(target).exists() || validate_plugin_name(target).is_err() {
        PolicyTarget::Package
    } else {
        PolicyTarget::Installed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_show_tells_directories_from_plugin_names() {
        let dir = tempfile::tempdir().expect("tempdir");
        let existing = dir.path().join("hello");
        std::fs::create_dir(&existing).expect("mkdir");
        let existing = existing.to_str().expect("utf-8 temp path");
        assert_eq!(policy_target(existing), PolicyTarget::Package);
        assert_eq!(policy_target("./missing-dir/"), PolicyTarget::Package);
        assert_eq!(policy_target("Not A Name"), PolicyTarget::Package);
        assert_eq!(
            policy_target("surely-not-a-directory-here"),
            PolicyTarget::Installed
        );
    }
}
