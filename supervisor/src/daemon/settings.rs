//! Plugin settings as the daemon keeps them: the policy's, the API's
//! overlay (persisted in the state file), validated against the
//! manifest's schema (`crate::services::config`). A change swaps in new
//! instances of that plugin alone, the way a hot reload does: start the
//! new ones with the new settings, switch calls to them, drain the old.

use super::Daemon;
use crate::policy::Policy;
use crate::services::config::{self, Layers};
use corral_protocol::api::Event;
use corral_protocol::error::CorralError;
use corral_protocol::manifest::Manifest;
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::Ordering;

impl Daemon {
    /// A plugin's effective settings under the current policy with
    /// `overlay` (the API's) over them.
    pub(super) fn settings_with(
        &self,
        manifest: &Manifest,
        overlay: Option<&Value>,
    ) -> Result<Value, CorralError> {
        settings_under(&self.current_policy(), manifest, overlay)
    }

    /// Before a new policy is applied: every installed plugin's settings
    /// under it, so a policy that gives one a value that does not fit is
    /// refused whole (`invalid_config`) and changes nothing.
    pub(super) fn check_settings_under(&self, policy: &Policy) -> Result<(), CorralError> {
        for entry in self.entries() {
            let overlay = self.settings.get(&entry.name);
            settings_under(policy, &entry.package.manifest, overlay.as_ref())?;
        }
        Ok(())
    }

    /// The settings a plugin's instances run with.
    pub fn settings_of(&self, name: &str) -> Result<Arc<Value>, CorralError> {
        Ok(self.entry(name)?.settings.clone())
    }

    /// `PATCH /v1/plugins/{name}/config`: merges `patch` (RFC 7396) into
    /// what the API set, validates the result and, when the effective
    /// settings change, swaps in new instances of the plugin. Returns the
    /// effective settings. Invalid settings are the error and change
    /// nothing.
    pub async fn patch_settings(&self, name: &str, patch: Value) -> Result<Value, CorralError> {
        self.refuse_when_draining()?;
        let _ops = self.ops.lock().await;
        let old = self.entry(name)?;
        let overlay = config::patched_overlay(self.settings.get(name).as_ref(), &patch)?;
        let settings = self.settings_with(&old.package.manifest, Some(&overlay))?;
        let keep = if overlay.as_object().is_some_and(|o| o.is_empty()) {
            None
        } else {
            Some(overlay)
        };
        let previous = self.settings.set(name, keep);
        if settings != *old.settings || old.compiled.is_err() {
            let compiled = self.compile_package(&old.package);
            let entry = self.entry_with(
                old.package.clone(),
                old.source.clone(),
                old.origin.clone(),
                old.enabled.load(Ordering::Relaxed),
                compiled,
            );
            let swapped = if old.host().is_some() {
                self.swap_in(entry, Some(old.clone())).await
            } else {
                self.plugins
                    .write()
                    .map_err(|_| CorralError::internal("registry poisoned"))
                    .map(|mut map| {
                        map.insert(name.to_string(), entry);
                    })
            };
            if let Err(e) = swapped {
                self.settings.set(name, previous);
                return Err(e);
            }
            self.rt.events.publish(Event::SettingsChanged {
                plugin: name.to_string(),
            });
            tracing::info!(plugin = %name, "settings changed");
        }
        self.persist().await;
        Ok(settings)
    }
}

/// A plugin's effective settings under `policy` with `overlay` (the
/// API's) over them.
fn settings_under(
    policy: &Policy,
    manifest: &Manifest,
    overlay: Option<&Value>,
) -> Result<Value, CorralError> {
    let name = manifest.name();
    let key = format!("plugins.{name}.settings");
    let from_policy = policy
        .plugins
        .get(name)
        .and_then(|r| r.settings.as_ref())
        .map(|v| (v, policy.source_of(&key).to_string()));
    config::effective(
        manifest,
        &Layers {
            plugin: name,
            policy: from_policy,
            overlay,
        },
    )
}
