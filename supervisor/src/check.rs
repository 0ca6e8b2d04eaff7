//! `corrald --check`: reads what the daemon reads at start (its
//! configuration, the policy files, every package in the source folders)
//! and judges it without starting anything, the way `nginx -t` does, so an
//! operator can validate an edit before a reload or a restart applies it.
//!
//! Packages are checked as the daemon would run them: imported into a
//! throwaway store (which fixes their file modes the same way) and
//! compiled against the policy for this kernel.

use crate::config::Config;
use crate::daemon::source_packages;
use crate::features::{KernelFeatures, probe_cgroups};
use crate::policy::Policy;
use crate::run::{compile_for, policy_error};
use crate::store::{PackageLimits, Store};
use corral_protocol::error::CorralError;
use std::path::PathBuf;

/// One package of a source folder and what compiling it gave.
#[derive(Debug)]
pub struct PluginCheck {
    pub package: PathBuf,
    /// The plugin's name and version, once its manifest was read.
    pub plugin: Option<(String, String)>,
    /// The compiled policy's warnings, or why it would not load.
    pub outcome: Result<Vec<String>, CorralError>,
}

/// The verdict on a whole setup whose configuration and policy load.
#[derive(Debug)]
pub struct SetupCheck {
    pub plugins: Vec<PluginCheck>,
}

impl SetupCheck {
    pub fn failures(&self) -> usize {
        self.plugins.iter().filter(|p| p.outcome.is_err()).count()
    }
}

/// Checks the policy files `config` names and the packages of its source
/// folders. An error is the policy's (the configuration was read already);
/// a package that would not load is reported in the result.
pub fn check_setup(config: &Config) -> Result<SetupCheck, CorralError> {
    let policy = Policy::load(&config.policy, &config.policy_dir).map_err(policy_error)?;
    let features = KernelFeatures::detect(probe_cgroups());
    let scratch = tempfile::Builder::new()
        .prefix("corrald-check-")
        // Not /tmp: the sandbox's scratch space covers it, which would
        // make every package look like one kept beneath it.
        .tempdir_in("/var/tmp")
        .map_err(|e| CorralError::internal(format!("a scratch store for the check: {e}")))?;
    let store = Store::open(
        scratch.path(),
        PackageLimits {
            max_bytes: config.limits.max_package_size.0,
            ..PackageLimits::default()
        },
    )?;
    let mut plugins = Vec::new();
    for source in &config.sources {
        for dir in source_packages(&source.path) {
            let (plugin, outcome) = match store.import_path(&dir) {
                Ok(stored) => {
                    let name = stored.manifest.name().to_string();
                    let version = stored.manifest.plugin.version.to_string();
                    let manifest_file = dir.join("plugin.toml").display().to_string();
                    let outcome = compile_for(
                        &stored.manifest,
                        &manifest_file,
                        &stored.dir,
                        &policy,
                        &features,
                    )
                    .map(|compiled| compiled.warnings);
                    (Some((name, version)), outcome)
                }
                Err(e) => (None, Err(e)),
            };
            plugins.push(PluginCheck {
                package: dir,
                plugin,
                outcome,
            });
        }
    }
    Ok(SetupCheck { plugins })
}
