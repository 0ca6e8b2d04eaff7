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
use corral_cgroups::{Cgroup, CgroupDriver, CgroupError, DetectOptions};
use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

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
    /// The seccomp filter refused `syscall`; the plugin is being killed
    /// for it, or the call failed with an errno (`killed` false).
    fn seccomp_refused(&self, _plugin: &str, _syscall: &str, _killed: bool) {}
    /// Learning mode recorded something the plugin needed.
    fn learned(&self, _plugin: &str, _need: crate::learn::Need) {}
    /// A host-service request was answered: `service` is a known service
    /// name or `unknown`; `outcome` is `ok` or an error code.
    fn service_request(&self, _plugin: &str, _service: &str, _outcome: &str) {}
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
    /// Empty cgroups kept ready so a start does not wait for mkdir in
    /// every hierarchy (0: none; a one-shot `corral run` wants none).
    pub cgroup_pool: usize,
}

/// Pre-made, empty cgroups. Each is used once: a cgroup that held a plugin
/// keeps the kernel's OOM count and peak, which the next one's death
/// classification would misread.
#[derive(Debug)]
struct CgroupPool {
    idle: Mutex<Vec<Box<dyn Cgroup>>>,
    target: usize,
    refilling: AtomicBool,
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
    /// Log records and output lines dropped over the rate limit, per
    /// plugin, for the metrics.
    pub drops: crate::child::bounds::DropCounters,
    /// Routes host-service requests; set once by the daemon, absent for
    /// `corral run`.
    pub broker: std::sync::OnceLock<Arc<dyn crate::services::Broker>>,
    generation: AtomicU64,
    pool: CgroupPool,
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
            drops: Default::default(),
            broker: std::sync::OnceLock::new(),
            observer: options.observer,
            generation: AtomicU64::new(0),
            pool: CgroupPool {
                idle: Mutex::new(Vec::new()),
                target: options.cgroup_pool,
                refilling: AtomicBool::new(false),
            },
        }))
    }

    /// A number unique within this runtime, for cgroup names.
    pub fn next_generation(&self) -> u64 {
        self.generation.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// A fresh cgroup for a child: a pre-made one when the pool has one,
    /// else made now under `name`. The pool is refilled in the background.
    pub fn fresh_cgroup(
        self: &Arc<Self>,
        name: &str,
    ) -> Result<Option<Arc<dyn Cgroup>>, CgroupError> {
        let Some(driver) = &self.cgroups else {
            return Ok(None);
        };
        let pooled = self.pool.idle.lock().ok().and_then(|mut idle| idle.pop());
        self.refill_pool();
        match pooled {
            Some(cg) => Ok(Some(Arc::from(cg))),
            None => driver.create(name).map(|cg| Some(Arc::from(cg))),
        }
    }

    fn refill_pool(self: &Arc<Self>) {
        if self.pool.target == 0 || self.pool.refilling.swap(true, Ordering::AcqRel) {
            return;
        }
        let rt = self.clone();
        let refill = move || {
            while let Some(driver) = &rt.cgroups {
                let have = rt.pool.idle.lock().map(|i| i.len()).unwrap_or(usize::MAX);
                if have >= rt.pool.target {
                    break;
                }
                let name = format!("pool.{}.{}", std::process::id(), rt.next_generation());
                match driver.create(&name) {
                    Ok(cg) => {
                        if let Ok(mut idle) = rt.pool.idle.lock() {
                            idle.push(cg);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot pre-make a cgroup; creating them on demand");
                        break;
                    }
                }
            }
            rt.pool.refilling.store(false, Ordering::Release);
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn_blocking(refill);
            }
            Err(_) => self.pool.refilling.store(false, Ordering::Release),
        }
    }

    /// Removes the pre-made cgroups nobody took (at shutdown).
    pub fn drain_cgroup_pool(&self) {
        let idle: Vec<Box<dyn Cgroup>> = self
            .pool
            .idle
            .lock()
            .map(|mut i| std::mem::take(&mut *i))
            .unwrap_or_default();
        for cg in idle {
            if let Err(e) = cg.remove() {
                tracing::warn!(cgroup = cg.name(), error = %e, "cannot remove a pre-made cgroup");
            }
        }
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

impl Drop for Runtime {
    fn drop(&mut self) {
        self.drain_cgroup_pool();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime(base: &str, pool: usize) -> Arc<Runtime> {
        Runtime::new(RuntimeOptions {
            // Never exec'd here.
            trampoline: Some(PathBuf::from("/bin/true")),
            uid_range: UidRange {
                first: 400_000,
                last: 400_100,
            },
            share_empty_namespaces: false,
            cgroups: DetectOptions {
                base_name: base.to_string(),
                ..Default::default()
            },
            output_limit: RateLimit::default(),
            observer: None,
            cgroup_pool: pool,
        })
        .expect("runtime")
    }

    fn leaves(base: &str) -> Vec<String> {
        let dir = Path::new("/sys/fs/cgroup/memory").join(base);
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.path().is_dir())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    #[tokio::test]
    async fn the_cgroup_pool_refills_in_the_background_and_leaves_nothing() {
        let base = format!("corral-pool-test-{}", std::process::id());
        let rt = runtime(&base, 2);
        // The first start finds the pool empty and makes its own.
        let first = rt.fresh_cgroup("first").expect("create").expect("a cgroup");
        assert_eq!(first.name(), "first");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while rt.pool.idle.lock().map(|i| i.len()).unwrap_or(0) < 2 {
            assert!(
                std::time::Instant::now() < deadline,
                "the pool was not refilled"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        // The next start takes a pre-made one.
        let second = rt.fresh_cgroup("second").expect("take").expect("a cgroup");
        assert!(second.name().starts_with("pool."), "{}", second.name());
        first.remove().expect("remove");
        second.remove().expect("remove");
        // Let the refill triggered by the take finish, then drop the runtime.
        while rt.pool.refilling.load(Ordering::Acquire) {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(leaves(&base).len(), 2, "only the pool's own");
        drop(rt);
        assert!(leaves(&base).is_empty(), "left behind: {:?}", leaves(&base));
        for hierarchy in ["memory", "pids", "cpu", "cpuacct", "freezer"] {
            let _ = std::fs::remove_dir(Path::new("/sys/fs/cgroup").join(hierarchy).join(&base));
        }
    }
}
