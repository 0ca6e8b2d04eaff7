//! Several versions of a plugin installed side by side, one of them
//! current (the one the registry holds, loaded or not).
//!
//! An install with `alongside` adds a version without touching the
//! current one; `POST /v1/plugins/{name}/load` with `{"version": V}` makes
//! V current and swaps it in the way reload does (new instances first, no
//! failed call), keeping the previous one alongside; `DELETE
//! /v1/plugins/{name}?version=V` removes one version, refusing the current
//! one and one a loaded dependent needs (`version_in_use`, naming which).
//!
//! The versions other than the current one are recorded in
//! `<state_dir>/versions.json` (digest and source of each), read and
//! written under the daemon's operations lock, and their packages stay in
//! the store: every prune keeps [`digests`].

use super::{Daemon, InstallFlags};
use corral_protocol::api::{InstallResponse, PluginState, PluginSummary, RemoveResponse};
use corral_protocol::error::{CorralError, ErrorKind};
use corral_protocol::manifest::Manifest;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

const FILE: &str = "versions.json";

/// A version kept alongside the current one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptVersion {
    pub digest: String,
    pub source: String,
}

/// Plugin name → version → what is kept.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptVersions {
    pub plugins: BTreeMap<String, BTreeMap<String, KeptVersion>>,
}

impl KeptVersions {
    /// The record in `state_dir`; a missing or unreadable file is empty
    /// (logged), so a damaged file never stops the daemon.
    pub fn load(state_dir: &Path) -> KeptVersions {
        let path = state_dir.join(FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::error!(file = %path.display(), error = %e, "the record of kept versions does not parse; keeping none");
                KeptVersions::default()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => KeptVersions::default(),
            Err(e) => {
                tracing::error!(file = %path.display(), error = %e, "cannot read the record of kept versions");
                KeptVersions::default()
            }
        }
    }

    /// Writes the record atomically.
    pub fn save(&self, state_dir: &Path) -> Result<(), CorralError> {
        let fail = |e: &dyn std::fmt::Display| {
            CorralError::internal(format!("saving {}: {e}", state_dir.join(FILE).display()))
        };
        std::fs::create_dir_all(state_dir).map_err(|e| fail(&e))?;
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| fail(&e))?;
        let mut tmp = tempfile::NamedTempFile::new_in(state_dir).map_err(|e| fail(&e))?;
        tmp.write_all(&bytes).map_err(|e| fail(&e))?;
        tmp.as_file().sync_all().map_err(|e| fail(&e))?;
        tmp.persist(state_dir.join(FILE))
            .map_err(|e| fail(&e.error))?;
        Ok(())
    }

    fn of(&self, plugin: &str) -> Option<&BTreeMap<String, KeptVersion>> {
        self.plugins.get(plugin)
    }

    fn insert(&mut self, plugin: &str, version: String, kept: KeptVersion) {
        self.plugins
            .entry(plugin.to_string())
            .or_default()
            .insert(version, kept);
    }

    fn take(&mut self, plugin: &str, version: &str) -> Option<KeptVersion> {
        let versions = self.plugins.get_mut(plugin)?;
        let kept = versions.remove(version);
        if versions.is_empty() {
            self.plugins.remove(plugin);
        }
        kept
    }
}

/// The digests of every kept version under `state_dir`: what a prune of
/// the store keeps besides the current packages.
pub fn digests(state_dir: &Path) -> Vec<String> {
    KeptVersions::load(state_dir)
        .plugins
        .values()
        .flat_map(|v| v.values().map(|k| k.digest.clone()))
        .collect()
}

fn no_such_version(plugin: &str, version: &str, installed: &[String]) -> CorralError {
    CorralError::invalid_input(format!(
        "version {version} of {plugin} is not installed (installed: {})",
        installed.join(", ")
    ))
}

impl Daemon {
    fn state_dir(&self) -> std::path::PathBuf {
        self.config().state_dir
    }

    /// Every installed version of `name`, the current one first, then the
    /// others by version.
    pub fn versions_of(&self, name: &str) -> Vec<corral_protocol::api::InstalledVersion> {
        let Ok(entry) = self.entry(name) else {
            return Vec::new();
        };
        let mut out = vec![corral_protocol::api::InstalledVersion {
            version: entry.package.manifest.plugin.version.to_string(),
            digest: entry.package.digest.clone(),
            current: true,
            loaded: entry.host().is_some(),
        }];
        if let Some(kept) = KeptVersions::load(&self.state_dir()).of(name) {
            let current = out[0].version.clone();
            out.extend(kept.iter().filter(|(version, _)| **version != current).map(
                |(version, k)| corral_protocol::api::InstalledVersion {
                    version: version.clone(),
                    digest: k.digest.clone(),
                    current: false,
                    loaded: false,
                },
            ));
        }
        out
    }

    /// Installs what `import` puts in the store beside the current version
    /// of its plugin (a plugin not installed yet is installed as usual,
    /// not loaded).
    pub async fn install_alongside(
        &self,
        import: impl FnOnce(&crate::store::Store) -> Result<crate::store::StoredPackage, CorralError>
        + Send,
        source: String,
    ) -> Result<(InstallResponse, bool), CorralError> {
        self.refuse_when_draining()?;
        let _ops = self.ops.lock().await;
        let package = import(&self.store).inspect_err(|_| self.prune_store())?;
        let name = package.manifest.name().to_string();
        let version = package.manifest.plugin.version.to_string();
        let Ok(current) = self.entry(&name) else {
            return self
                .install_locked(package, source, None, InstallFlags::default())
                .await;
        };
        let answer = |unchanged| InstallResponse {
            plugin: name.clone(),
            version: version.clone(),
            digest: package.digest.clone(),
            unchanged,
            state: PluginState::Installed,
        };
        if current.package.digest == package.digest {
            return Ok((
                InstallResponse {
                    state: current.state(),
                    ..answer(true)
                },
                false,
            ));
        }
        if current.package.manifest.plugin.version.to_string() == version {
            self.prune_store();
            return Err(CorralError::new(
                ErrorKind::AlreadyExists {
                    plugin: name.clone(),
                    installed_version: version.clone(),
                    installed_digest: current.package.digest.clone(),
                },
                format!(
                    "{name} {version} is already installed (and current) with other contents; install with replace to swap it"
                ),
            ));
        }
        let state_dir = self.state_dir();
        let mut kept = KeptVersions::load(&state_dir);
        let unchanged = kept
            .of(&name)
            .and_then(|v| v.get(&version))
            .is_some_and(|k| k.digest == package.digest);
        kept.insert(
            &name,
            version.clone(),
            KeptVersion {
                digest: package.digest.clone(),
                source,
            },
        );
        kept.save(&state_dir)?;
        self.prune_store();
        tracing::info!(plugin = %name, %version, digest = %package.digest, "installed alongside the current version");
        Ok((answer(unchanged), !unchanged))
    }

    /// `POST /v1/plugins/{name}/load` with a version: makes it current and
    /// loads it, swapping out the current one (kept alongside).
    pub async fn load_version(
        &self,
        name: &str,
        version: &str,
    ) -> Result<PluginSummary, CorralError> {
        self.refuse_when_draining()?;
        let _ops = self.ops.lock().await;
        let current = self.entry(name)?;
        let current_version = current.package.manifest.plugin.version.to_string();
        if current_version == version {
            self.load_locked(name, 0).await?;
            self.persist().await;
            return self.summary(name);
        }
        let state_dir = self.state_dir();
        let mut kept = KeptVersions::load(&state_dir);
        let installed: Vec<String> = self
            .versions_of(name)
            .into_iter()
            .map(|v| v.version)
            .collect();
        let chosen = kept
            .of(name)
            .and_then(|v| v.get(version))
            .cloned()
            .ok_or_else(|| no_such_version(name, version, &installed))?;
        let package = self.store.get(&chosen.digest).ok_or_else(|| {
            CorralError::internal(format!(
                "{name} {version} ({}) is missing from the store",
                chosen.digest
            ))
        })?;
        self.refuse_unmet_dependents(name, &package.manifest)?;
        let entry = self.entry_for(package, chosen.source.clone(), None, true);
        self.swap_in(entry, Some(current.clone())).await?;
        kept.take(name, version);
        kept.insert(
            name,
            current_version.clone(),
            KeptVersion {
                digest: current.package.digest.clone(),
                source: current.source.clone(),
            },
        );
        kept.save(&state_dir)?;
        self.persist().await;
        self.prune_store();
        tracing::info!(plugin = %name, from = %current_version, to = %version, "switched versions");
        self.summary(name)
    }

    /// A loaded plugin that needs `name` in a range `manifest`'s version
    /// does not meet stops a switch to it.
    fn refuse_unmet_dependents(&self, name: &str, manifest: &Manifest) -> Result<(), CorralError> {
        let version = &manifest.plugin.version;
        for dependent in self.entries() {
            if dependent.host().is_none() {
                continue;
            }
            for (dep, req) in &dependent.package.manifest.dependencies {
                if dep.as_str() == name && !req.matches(version) {
                    return Err(CorralError::new(
                        ErrorKind::DependencyMissing {
                            dependency: name.to_string(),
                            requirement: req.to_string(),
                        },
                        format!(
                            "{} (loaded) needs {name} {req}, which {version} does not meet",
                            dependent.name
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// `DELETE /v1/plugins/{name}?version=V`: removes one kept version.
    pub async fn remove_version(
        &self,
        name: &str,
        version: &str,
    ) -> Result<RemoveResponse, CorralError> {
        self.refuse_when_draining()?;
        let _ops = self.ops.lock().await;
        let current = self.entry(name)?;
        let current_version = current.package.manifest.plugin.version.to_string();
        if current_version == version {
            let loaded = current.host().is_some();
            let needed_by: Vec<String> = self
                .dependents_of(name)
                .into_iter()
                .filter(|d| self.entry(d).is_ok_and(|e| e.host().is_some()))
                .collect();
            let by = if needed_by.is_empty() {
                String::new()
            } else {
                format!(", needed by {} (loaded)", needed_by.join(", "))
            };
            return Err(CorralError::new(
                ErrorKind::VersionInUse {
                    plugin: name.to_string(),
                    version: version.to_string(),
                    needed_by,
                },
                format!(
                    "{name} {version} is the current version{}{by}: load another version first, or remove {name} with all its versions",
                    if loaded { " and loaded" } else { "" }
                ),
            ));
        }
        let state_dir = self.state_dir();
        let mut kept = KeptVersions::load(&state_dir);
        let installed: Vec<String> = self
            .versions_of(name)
            .into_iter()
            .map(|v| v.version)
            .collect();
        let Some(versions) = kept.of(name).filter(|v| v.contains_key(version)) else {
            return Err(no_such_version(name, version, &installed));
        };
        let removed_version = semver::Version::parse(version)
            .map_err(|e| CorralError::invalid_input(format!("version {version}: {e}")))?;
        // A loaded dependent needs it when it matches their requirement and
        // no other installed version does.
        let others: Vec<semver::Version> = std::iter::once(current_version.as_str())
            .chain(
                versions
                    .keys()
                    .map(String::as_str)
                    .filter(|v| *v != version),
            )
            .filter_map(|v| semver::Version::parse(v).ok())
            .collect();
        let needed_by: Vec<String> = self
            .entries()
            .iter()
            .filter(|d| d.host().is_some())
            .filter(|d| {
                d.package.manifest.dependencies.iter().any(|(dep, req)| {
                    dep.as_str() == name
                        && req.matches(&removed_version)
                        && !others.iter().any(|o| req.matches(o))
                })
            })
            .map(|d| d.name.clone())
            .collect();
        if !needed_by.is_empty() {
            return Err(CorralError::new(
                ErrorKind::VersionInUse {
                    plugin: name.to_string(),
                    version: version.to_string(),
                    needed_by: needed_by.clone(),
                },
                format!(
                    "{name} {version} cannot be removed: {} (loaded) need it",
                    needed_by.join(", ")
                ),
            ));
        }
        kept.take(name, version);
        kept.save(&state_dir)?;
        self.prune_store();
        tracing::info!(plugin = %name, %version, "removed one version");
        Ok(RemoveResponse {
            removed: format!("{name}@{version}"),
            purged: None,
        })
    }

    /// After `name` itself was removed: its kept versions go too.
    pub async fn forget_versions(&self, name: &str) {
        let _ops = self.ops.lock().await;
        let state_dir = self.state_dir();
        let mut kept = KeptVersions::load(&state_dir);
        if kept.plugins.remove(name).is_some() {
            if let Err(e) = kept.save(&state_dir) {
                tracing::error!(plugin = %name, error = %e, "cannot forget the kept versions");
            }
            self.prune_store();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_round_trips_and_empties() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(KeptVersions::load(dir.path()), KeptVersions::default());
        let mut kept = KeptVersions::default();
        let v = KeptVersion {
            digest: "ab".repeat(32),
            source: "upload".into(),
        };
        kept.insert("p", "1.0.0".into(), v.clone());
        kept.save(dir.path()).expect("save");
        assert_eq!(KeptVersions::load(dir.path()), kept);
        assert_eq!(digests(dir.path()), std::slice::from_ref(&v.digest));
        assert_eq!(kept.take("p", "1.0.0"), Some(v));
        assert!(kept.plugins.is_empty(), "no empty maps left");
        std::fs::write(dir.path().join(FILE), "not json").expect("write");
        assert_eq!(KeptVersions::load(dir.path()), KeptVersions::default());
    }
}
