//! Learning mode in the daemon (`POST /v1/plugins/{name}/learn`): a loaded
//! plugin's instances are swapped for ones under
//! [`crate::learn::learning_policy`] for a set time, what they need is
//! recorded, then instances under the normal policy are swapped back and
//! the draft is kept for `GET /v1/plugins/{name}/learn`.
//!
//! Only an admin starts it through the API; nothing in a manifest or a
//! policy file can ask for it (the learning policy is derived here, never
//! compiled from one). While it runs, `GET /v1/plugins/{name}` says
//! `learning: true` and `corral policy show` says so too, since the
//! compiled policy shown is not the one the plugin runs under.
//!
//! The swaps are the ones reload does (new instances first, calls in
//! flight on the old ones drained), so calls keep working throughout. The
//! end of a run restores the normal policy only if the learning instances
//! are still the plugin's: a reload, an unload or a new version during the
//! run has already replaced them with normally confined ones.

use super::Daemon;
use crate::host::PluginHost;
use crate::learn::{LearnLog, Need};
use corral_protocol::error::CorralError;
use corral_protocol::learn::{LearnDraft, LearnStatus, MAX_LEARN_MS};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One plugin's learning run, in progress or ended.
struct Run {
    /// Tells this run from a later one of the same plugin, so the timer
    /// of a run ended early never ends the next.
    id: u64,
    log: Arc<LearnLog>,
    /// The learning instances, until the run ends.
    host: Option<Arc<PluginHost>>,
    until: Instant,
    /// Set once the run ended.
    draft: Option<LearnDraft>,
}

/// The learning runs of the daemon's plugins, by plugin name. Needs are
/// recorded only for a plugin whose run is in progress.
#[derive(Default)]
pub struct Learners {
    runs: Mutex<BTreeMap<String, Run>>,
    next_id: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Learners {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let runs = self.runs();
        f.debug_struct("Learners")
            .field("plugins", &runs.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Learners {
    fn runs(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Run>> {
        self.runs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A need reported by one of `plugin`'s children (the seccomp listener
    /// reports needs only for children under a learning policy).
    pub fn record(&self, plugin: &str, need: Need) {
        let log = self
            .runs()
            .get(plugin)
            .filter(|r| r.draft.is_none())
            .map(|r| r.log.clone());
        if let Some(log) = log {
            log.record(need);
        }
    }

    pub fn is_learning(&self, plugin: &str) -> bool {
        self.runs().get(plugin).is_some_and(|r| r.draft.is_none())
    }

    fn begin(&self, plugin: &str, until: Instant) -> u64 {
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.runs().insert(
            plugin.to_string(),
            Run {
                id,
                log: Arc::new(LearnLog::default()),
                host: None,
                until,
                draft: None,
            },
        );
        id
    }

    fn set_host(&self, plugin: &str, id: u64, host: Arc<PluginHost>) {
        if let Some(run) = self.runs().get_mut(plugin).filter(|r| r.id == id) {
            run.host = Some(host);
        }
    }

    /// The run in progress, if any.
    fn current(&self, plugin: &str) -> Option<u64> {
        self.runs()
            .get(plugin)
            .filter(|r| r.draft.is_none())
            .map(|r| r.id)
    }

    fn forget(&self, plugin: &str) {
        self.runs().remove(plugin);
    }

    /// Ends `plugin`'s run `id`: its record, which stops growing, and its
    /// learning instances. `None` when that run is not in progress.
    fn end(&self, plugin: &str, id: u64) -> Option<(Arc<LearnLog>, Option<Arc<PluginHost>>)> {
        self.runs()
            .get_mut(plugin)
            .filter(|r| r.draft.is_none() && r.id == id)
            .map(|r| (r.log.clone(), r.host.take()))
    }

    fn store(&self, plugin: &str, draft: LearnDraft) {
        if let Some(run) = self.runs().get_mut(plugin) {
            run.draft = Some(draft);
        }
    }

    pub fn status(&self, plugin: &str) -> LearnStatus {
        let runs = self.runs();
        let run = runs.get(plugin);
        LearnStatus {
            plugin: plugin.to_string(),
            learning: run.is_some_and(|r| r.draft.is_none()),
            remaining_ms: run
                .filter(|r| r.draft.is_none())
                .map(|r| {
                    r.until
                        .saturating_duration_since(Instant::now())
                        .as_millis() as u64
                })
                .unwrap_or(0),
            draft: run.and_then(|r| r.draft.clone()),
        }
    }
}

fn check_duration(duration_ms: u64) -> Result<Duration, CorralError> {
    if duration_ms == 0 || duration_ms > MAX_LEARN_MS {
        return Err(CorralError::invalid_input(format!(
            "duration_ms must be between 1 and {MAX_LEARN_MS} (10 minutes), not {duration_ms}"
        )));
    }
    Ok(Duration::from_millis(duration_ms))
}

impl Daemon {
    /// Starts a learning run of the loaded plugin `name` for `duration_ms`;
    /// it ends by itself (see the module docs).
    pub async fn learn_start(
        self: &Arc<Self>,
        name: &str,
        duration_ms: u64,
    ) -> Result<LearnStatus, CorralError> {
        self.refuse_when_draining()?;
        let duration = check_duration(duration_ms)?;
        let _ops = self.ops.lock().await;
        let entry = self.entry(name)?;
        if entry.host().is_none() {
            return Err(super::not_loaded(name));
        }
        let learners = &self.metrics.learners;
        if learners.is_learning(name) {
            return Err(CorralError::invalid_input(format!(
                "{name} is already learning (for {} ms more); wait for that run to end",
                learners.status(name).remaining_ms
            )));
        }
        let normal = entry.compiled.clone()?;
        let learning = Arc::new(crate::learn::learning_policy(&normal)?);
        // Recording starts before the instances do: their start-up counts.
        let id = learners.begin(name, Instant::now() + duration);
        let host = match PluginHost::start(self.rt.clone(), learning, b"{}".to_vec()).await {
            Ok(host) => host,
            Err(e) => {
                learners.forget(name);
                return Err(e);
            }
        };
        tracing::warn!(plugin = %name, duration_ms, "learning: refused system calls are let through and recorded until the run ends");
        learners.set_host(name, id, host.clone());
        if let Some(previous) = entry.set_host(Some(host)) {
            self.drain_and_stop(&entry, previous).await;
        }
        let daemon = Arc::downgrade(self);
        let plugin = name.to_string();
        tokio::spawn(async move {
            tokio::time::sleep(duration).await;
            if let Some(daemon) = daemon.upgrade() {
                let _ops = daemon.ops.lock().await;
                daemon.learn_end(&plugin, id).await;
            }
        });
        Ok(learners.status(name))
    }

    /// `DELETE /v1/plugins/{name}/learn`: ends the run in progress now.
    pub async fn learn_stop(&self, name: &str) -> Result<LearnStatus, CorralError> {
        let _ops = self.ops.lock().await;
        self.entry(name)?;
        let Some(id) = self.metrics.learners.current(name) else {
            return Err(CorralError::invalid_input(format!(
                "{name} is not learning"
            )));
        };
        self.learn_end(name, id).await;
        Ok(self.metrics.learners.status(name))
    }

    pub fn learn_status(&self, name: &str) -> Result<LearnStatus, CorralError> {
        self.entry(name)?;
        Ok(self.metrics.learners.status(name))
    }

    /// Ends `name`'s learning run `id` (the caller holds the ops lock):
    /// the normal policy serves again (when the learning instances still
    /// do), and the draft is kept.
    async fn learn_end(&self, name: &str, id: u64) {
        let Some((log, learning)) = self.metrics.learners.end(name, id) else {
            return;
        };
        let entry = self.entry(name).ok();
        let current = entry.as_ref().and_then(|e| e.host());
        let still_learning = match (&current, &learning) {
            (Some(current), Some(learning)) => Arc::ptr_eq(current, learning),
            _ => false,
        };
        let mut restore_error = None;
        if let Some(entry) = entry.as_ref().filter(|_| still_learning) {
            let normal = match entry.compiled.clone() {
                Ok(policy) => PluginHost::start(self.rt.clone(), policy, b"{}".to_vec()).await,
                Err(e) => Err(e),
            };
            // Whatever happens, the learning instances stop now.
            let replacement = match normal {
                Ok(host) => Some(host),
                Err(e) => {
                    tracing::error!(plugin = %name, error = %e, "the plugin does not start under its normal policy after learning; it is unloaded");
                    restore_error = Some(e);
                    None
                }
            };
            if let Some(previous) = entry.set_host(replacement) {
                self.drain_and_stop(entry, previous).await;
            }
        } else if let Some(learning) = learning {
            // Replaced during the run (a reload, an unload); make sure the
            // learning instances are gone.
            learning.stop(Duration::from_millis(100)).await;
        }
        let (needs, dropped) = log.snapshot();
        let sandbox = entry.as_ref().and_then(|e| e.compiled.clone().ok());
        let draft = match &sandbox {
            Some(sandbox) => crate::learn::draft::build(name, sandbox, &needs, dropped),
            None => crate::learn::Draft {
                plugin: name.to_string(),
                dropped,
                ..Default::default()
            },
        };
        tracing::info!(plugin = %name, restored = restore_error.is_none(), "learning run ended");
        self.metrics.learners.store(
            name,
            LearnDraft {
                manifest: draft.manifest_fragment(),
                policy: draft.policy_fragment(),
                needed_nothing: draft.is_empty(),
                not_recorded: draft.dropped,
                restored: restore_error.is_none(),
                restore_error,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn durations_are_bounded() {
        assert!(check_duration(0).is_err());
        assert!(check_duration(MAX_LEARN_MS + 1).is_err());
        assert_eq!(
            check_duration(30_000).ok(),
            Some(Duration::from_millis(30_000))
        );
    }

    #[test]
    fn needs_are_recorded_only_while_a_run_is_in_progress() {
        let learners = Learners::default();
        let need = Need::Open {
            path: PathBuf::from("/srv/data"),
            access: crate::learn::OpenAccess::Read,
        };
        learners.record("p", need.clone());
        assert!(!learners.is_learning("p"));
        let id = learners.begin("p", Instant::now() + Duration::from_secs(5));
        assert_eq!(learners.current("p"), Some(id));
        assert!(learners.status("p").learning);
        learners.record("p", need.clone());
        learners.record("other", need.clone());
        assert!(learners.end("p", id + 1).is_none(), "another run's timer");
        let (log, _) = learners.end("p", id).expect("a run in progress");
        assert_eq!(log.snapshot().0.get(&need), Some(&1));
        learners.store(
            "p",
            LearnDraft {
                manifest: String::new(),
                policy: String::new(),
                needed_nothing: true,
                not_recorded: 0,
                restored: true,
                restore_error: None,
            },
        );
        assert!(!learners.is_learning("p"));
        learners.record("p", need.clone());
        assert_eq!(
            log.snapshot().0.get(&need),
            Some(&1),
            "ended runs record nothing"
        );
        assert!(learners.status("p").draft.is_some());
        assert!(learners.status("other").draft.is_none());
    }
}
