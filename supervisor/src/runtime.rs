//! What every child start shares: the spawner thread, the trampoline, the
//! pre-made empty namespaces, the cgroup driver, the uid pool, the kernel's
//! features and the event bus. One per `corral run` or daemon.

use crate::child::output::RateLimit;
use crate::events::EventBus;
use crate::features::{CgroupFeatures, KernelFeatures};
use crate::namespaces::EmptyNamespaces;
use crate::policy::UidRange;
use crate::spawn::Spawner;
use crate::uids::UidAllocator;
use corral_cgroups::{CgroupDriver, DetectOptions};
use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Name of the trampoline binary.
pub const TRAMPOLINE: &str = "corral-sandbox";
/// Environment variable overriding where the trampoline is.
pub const TRAMPOLINE_ENV: &str = "CORRAL_SANDBOX";

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(
        "cannot find the {TRAMPOLINE} trampoline: looked at {looked}; set {TRAMPOLINE_ENV} to its path"
    )]
    TrampolineMissing { looked: String },
    #[error("starting the spawner: {0}")]
    Spawner(#[from] crate::spawn::SpawnError),
    #[error("creating the shared empty namespaces: {0}")]
    Namespaces(std::io::Error),
    #[error("setting up cgroups: {0}")]
    Cgroups(#[from] corral_cgroups::CgroupError),
}

/// Told about deaths and restarts as they happen (metrics), without the
/// loss a lagging event subscriber could suffer.
pub trait LifecycleObserver: Send + Sync + std::fmt::Debug {
    /// A child died; `cause` is the typed label (e.g. `memory_limit_exceeded`).
    fn child_died(&self, plugin: &str, cause: &str);
    /// A child was restarted successfully.
    fn child_restarted(&self, plugin: &str);
}

#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// The trampoline; found next to the current executable (or via
    /// [`TRAMPOLINE_ENV`]) when `None`.
    pub trampoline: Option<PathBuf>,
    pub uid_range: UidRange,
    /// Create the shared empty namespaces (policy `share_empty_namespaces`).
    pub share_empty_namespaces: bool,
    pub cgroups: DetectOptions,
    pub output_limit: RateLimit,
    pub observer: Option<Arc<dyn LifecycleObserver>>,
}

#[derive(Debug)]
pub struct Runtime {
    pub spawner: Spawner,
    pub trampoline: CString,
    pub namespaces: Option<EmptyNamespaces>,
    pub cgroups: Option<Arc<dyn CgroupDriver>>,
    pub uids: UidAllocator,
    pub features: KernelFeatures,
    pub events: EventBus,
    pub output_limit: RateLimit,
    pub observer: Option<Arc<dyn LifecycleObserver>>,
    generation: AtomicU64,
}

impl Runtime {
    pub fn new(options: RuntimeOptions) -> Result<Arc<Runtime>, RuntimeError> {
        let trampoline = find_trampoline(options.trampoline.as_deref())?;
        let cgroups: Option<Arc<dyn CgroupDriver>> = match corral_cgroups::detect(&options.cgroups)
        {
            Ok(driver) => Some(Arc::from(driver)),
            Err(e) => {
                // Whether running without cgroups is acceptable is the
                // policy's call (features.cgroup_*), made per plugin.
                tracing::warn!(error = %e, "no usable cgroup hierarchy; cgroup limits are unavailable");
                None
            }
        };
        let cgroup_features = cgroups
            .as_ref()
            .map(|d| {
                let f = d.features();
                CgroupFeatures {
                    memory: f.memory,
                    swap: f.swap,
                    pids: f.pids,
                    cpu: f.cpu,
                }
            })
            .unwrap_or_default();
        let namespaces = if options.share_empty_namespaces {
            Some(EmptyNamespaces::create().map_err(RuntimeError::Namespaces)?)
        } else {
            None
        };
        Ok(Arc::new(Runtime {
            spawner: Spawner::start()?,
            trampoline: CString::new(trampoline.as_os_str().as_encoded_bytes()).map_err(|_| {
                RuntimeError::TrampolineMissing {
                    looked: trampoline.display().to_string(),
                }
            })?,
            namespaces,
            cgroups,
            uids: match UidAllocator::shared(
                options.uid_range,
                std::path::Path::new(crate::uids::UID_LOCK_FILE),
            ) {
                Ok(uids) => uids,
                Err(e) => {
                    tracing::warn!(error = %e, file = crate::uids::UID_LOCK_FILE,
                        "cannot open the uid lock file; uids are unique within this process only");
                    UidAllocator::new(options.uid_range)
                }
            },
            features: KernelFeatures::detect(cgroup_features),
            events: EventBus::default(),
            output_limit: options.output_limit,
            observer: options.observer,
            generation: AtomicU64::new(0),
        }))
    }

    /// A number unique within this runtime, for cgroup names.
    pub fn next_generation(&self) -> u64 {
        self.generation.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Removes cgroups left by an earlier run that died without cleaning
    /// up (kill -9, power loss); returns their names.
    pub fn remove_stale_cgroups(&self) -> Vec<String> {
        let Some(driver) = &self.cgroups else {
            return Vec::new();
        };
        let names = match driver.list() {
            Ok(names) => names,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list cgroups to clean up");
                return Vec::new();
            }
        };
        let mut removed = Vec::new();
        for name in names {
            match driver.remove_stale(&name) {
                Ok(()) => removed.push(name),
                Err(e) => tracing::warn!(cgroup = %name, error = %e, "cannot remove stale cgroup"),
            }
        }
        removed
    }
}

/// `explicit`, else `$CORRAL_SANDBOX`, else next to the running binary (and
/// one directory up, for test binaries in `target/*/deps`), else
/// `/usr/libexec/corral/corral-sandbox`, else on PATH.
pub fn find_trampoline(explicit: Option<&Path>) -> Result<PathBuf, RuntimeError> {
    let mut looked = Vec::new();
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(p) = explicit {
        candidates.push(p.to_path_buf());
    } else {
        if let Some(p) = std::env::var_os(TRAMPOLINE_ENV) {
            candidates.push(PathBuf::from(p));
        }
        if let Ok(exe) = std::env::current_exe()
            && let Some(dir) = exe.parent()
        {
            candidates.push(dir.join(TRAMPOLINE));
            if let Some(up) = dir.parent() {
                candidates.push(up.join(TRAMPOLINE));
            }
        }
        candidates.push(PathBuf::from("/usr/libexec/corral").join(TRAMPOLINE));
        if let Some(path) = std::env::var_os("PATH") {
            candidates.extend(std::env::split_paths(&path).map(|d| d.join(TRAMPOLINE)));
        }
    }
    for candidate in candidates {
        if candidate.is_file() {
            return candidate
                .canonicalize()
                .map_err(|_| RuntimeError::TrampolineMissing {
                    looked: candidate.display().to_string(),
                });
        }
        looked.push(candidate.display().to_string());
    }
    Err(RuntimeError::TrampolineMissing {
        looked: looked.join(", "),
    })
}
