//! corrald: installed plugins, their lifecycle, and the operations the API
//! exposes. Administrative operations are serialised (one at a time);
//! calls are not, and never wait for an administrative operation.
//!
//! Replacing a loaded plugin (reload, a new version installed, a changed
//! package in a watched source, a policy change) starts the new instances
//! first, switches new calls to them, then lets calls in flight on the old
//! ones finish before stopping them: no call fails because of a swap.

pub mod access;
pub mod admission;
pub mod api;
pub mod conn_io;
pub mod files;
pub mod learning;
pub mod log_limit;
pub mod metrics;
pub mod server;
pub mod settings;
pub mod versions;
pub mod watch;

use crate::config::Config;
use crate::features::KernelFeatures;
use crate::host::PluginHost;
use crate::policy::Policy;
use crate::run::{compile_for, policy_error};
use crate::runtime::{Runtime, RuntimeOptions};
use crate::state::{InstalledPlugin, State};
use crate::store::{Eyes, Imported, PackageLimits, Store, StoredPackage};
use access::{Access, Need, Peer};
use corral_protocol::api::{
    CallRequest, CallResponse, ChildInfo, Event, Health, InstallResponse, PluginDetail,
    PluginFailure, PluginState, PluginSummary, ReloadReport, RemoveResponse,
};
use corral_protocol::error::{CorralError, ErrorKind};
use corral_protocol::policy::SandboxPolicy;
use futures::StreamExt;
use metrics::Metrics;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Policy(CorralError),
    #[error("{0}")]
    Runtime(#[from] crate::runtime::RuntimeError),
    #[error("{0}")]
    Store(CorralError),
    #[error("{0}")]
    State(#[from] crate::state::StateError),
    #[error("the API socket {path}: {source}")]
    Socket {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    CgroupBase(String),
}

/// Where the locks that say which cgroup base a live corrald uses live.
pub const CGROUP_LOCK_DIR: &str = "/run/corral/locks";

/// Takes the lock on `base` (an exclusive flock, held as long as the
/// returned file is open, released by the kernel when the process dies
/// however it dies). Only the holder may clean up under that base, so a
/// corrald never removes the cgroups of another live one.
fn lock_cgroup_base(base: &str) -> Result<std::fs::File, StartError> {
    let dir = Path::new(CGROUP_LOCK_DIR);
    let path = dir.join(format!("cgroup-{base}.lock"));
    let fail = |e: std::io::Error| {
        StartError::CgroupBase(format!(
            "locking the cgroup base {base} ({}): {e}",
            path.display()
        ))
    };
    std::fs::create_dir_all(dir).map_err(fail)?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(fail)?;
    // SAFETY: flock on a descriptor we own.
    let r = unsafe {
        libc::flock(
            std::os::fd::AsRawFd::as_raw_fd(&file),
            libc::LOCK_EX | libc::LOCK_NB,
        )
    };
    if r != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            return Err(StartError::CgroupBase(format!(
                "another corrald (pid {}) uses the cgroup base {base}; give this one another cgroup_base",
                holder.trim()
            )));
        }
        return Err(fail(e));
    }
    use std::io::Write;
    let _ = file.set_len(0);
    let _ = writeln!(&file, "{}", std::process::id());
    Ok(file)
}

/// What an install may do besides adding a new plugin.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InstallFlags {
    /// Load (and enable) the plugin once installed.
    pub load: bool,
    /// Swap out another package installed under the same name.
    pub replace: bool,
}

/// One installed plugin.
pub struct PluginEntry {
    pub name: String,
    pub package: StoredPackage,
    /// `source:<dir>`, `path:<path>` or `upload`.
    pub source: String,
    /// Where to re-read the package from on reload, if anywhere.
    pub origin: Option<PathBuf>,
    /// The policy compiled under the current operator policy, or why not.
    pub compiled: Result<Arc<SandboxPolicy>, CorralError>,
    host: Mutex<Option<Arc<PluginHost>>>,
    pub enabled: AtomicBool,
    /// Caps calls in flight; draining takes every permit.
    slots: Arc<Semaphore>,
    max_in_flight: u32,
    /// Why the last change picked up in its source folder was not
    /// swapped in, until a later one is.
    hot_reload_error: Mutex<Option<CorralError>>,
    /// Its effective settings (`crate::services::config`); `{}` when they
    /// do not validate (then `compiled` holds the error).
    pub settings: Arc<serde_json::Value>,
}

impl PluginEntry {
    pub fn host(&self) -> Option<Arc<PluginHost>> {
        self.host.lock().ok().and_then(|h| h.clone())
    }

    fn set_host(&self, host: Option<Arc<PluginHost>>) -> Option<Arc<PluginHost>> {
        match self.host.lock() {
            Ok(mut h) => std::mem::replace(&mut *h, host),
            Err(_) => None,
        }
    }

    fn state(&self) -> PluginState {
        self.host()
            .map(|h| h.state())
            .unwrap_or(PluginState::Installed)
    }
}

pub struct Daemon {
    config: RwLock<Config>,
    config_path: Option<PathBuf>,
    pub rt: Arc<Runtime>,
    policy: RwLock<Arc<Policy>>,
    store: Store,
    state: tokio::sync::Mutex<State>,
    plugins: RwLock<BTreeMap<String, Arc<PluginEntry>>>,
    ops: tokio::sync::Mutex<()>,
    draining: AtomicBool,
    started: Instant,
    pub metrics: Arc<Metrics>,
    access: RwLock<Access>,
    /// The S3 sources (`crate::sources`).
    pub sources: crate::sources::Sources,
    /// Plugins' key-value tables (the `kv` service), here for purges.
    pub storage: Arc<crate::services::storage::Storage>,
    /// Plugin settings set through the API (`crate::services::config`).
    settings: crate::services::config::Overlays,
    /// The host services' event bus, also reached by API clients.
    pub bus: Arc<crate::services::events::Bus>,
    /// Held for the daemon's life: its cgroup base is its own.
    _cgroup_lock: std::fs::File,
}

/// Empty cgroups the daemon keeps ready for the next start.
const CGROUP_POOL: usize = 4;

/// Plugins started at once when the daemon comes up.
const START_CONCURRENCY: usize = 8;

fn not_found(name: &str) -> CorralError {
    CorralError::new(
        ErrorKind::PluginNotFound {
            plugin: name.to_string(),
        },
        format!("no plugin named {name} is installed"),
    )
}

fn not_loaded(name: &str) -> CorralError {
    CorralError::new(
        ErrorKind::NotLoaded {
            plugin: name.to_string(),
        },
        format!("plugin {name} is installed but not loaded; load it with `corral load {name}`"),
    )
}

fn shutting_down() -> CorralError {
    CorralError::new(ErrorKind::ShuttingDown, "corrald is shutting down")
}

impl Daemon {
    /// Sets up the runtime, cleans up after an earlier run, installs what
    /// the sources hold and loads what is enabled.
    pub async fn start(
        config: Config,
        config_path: Option<PathBuf>,
    ) -> Result<Arc<Daemon>, StartError> {
        let policy = Policy::load(&config.policy, &config.policy_dir)
            .map_err(|e| StartError::Policy(policy_error(e)))?;
        // Before anything touches the cgroups: what is under the base is
        // provably ours (or left by a dead corrald) once the lock is held.
        let cgroup_lock = lock_cgroup_base(&config.cgroup_base)?;
        let metrics = Arc::new(Metrics::new());
        let rt = Runtime::new(RuntimeOptions {
            trampoline: None,
            uid_range: policy.sandbox.uid_range,
            share_empty_namespaces: policy.sandbox.share_empty_namespaces,
            cgroups: corral_cgroups::DetectOptions {
                base_name: config.cgroup_base.clone(),
                ..Default::default()
            },
            output_limit: Default::default(),
            observer: Some(metrics.clone()),
            cgroup_pool: CGROUP_POOL,
        })?;
        // v2 creates each child inside its cgroup; v1 moves it there.
        let moves_children = rt
            .cgroups
            .as_ref()
            .is_some_and(|d| d.version() == corral_cgroups::Version::V1);
        if moves_children && !rt.features.cgroup_favordynmods {
            tracing::info!(
                "no cgroup hierarchy is mounted with favordynmods: each plugin start waits for an RCU grace period to enter its cgroup (README, Fast starts)"
            );
        }
        let stale = rt.remove_stale_cgroups();
        if !stale.is_empty() {
            tracing::info!(count = stale.len(), cgroups = ?stale, "removed cgroups left by an earlier run");
        }
        let store = Store::open(
            &config.store_dir(),
            PackageLimits {
                max_bytes: config.limits.max_package_size.0,
                ..PackageLimits::default()
            },
        )
        .map_err(StartError::Store)?;
        let state = State::load(&config.state_dir)?;
        let settings = crate::services::config::Overlays::new(state.settings.clone());
        let access = Access::new(&config.admin_groups, &config.caller_groups);
        let sources = crate::sources::Sources::new(&config, &metrics).await;
        let storage = Arc::new(crate::services::storage::Storage::open(&config.state_dir));
        let buckets =
            Arc::new(crate::services::buckets::Buckets::new(config.services.s3.as_ref()).await);
        let bus = Arc::new(crate::services::events::Bus::new(Some(rt.events.clone())));
        metrics.register(|r| bus.register_metrics(r));
        let daemon = Arc::new(Daemon {
            config: RwLock::new(config),
            config_path,
            rt,
            policy: RwLock::new(Arc::new(policy)),
            store,
            state: tokio::sync::Mutex::new(state),
            plugins: RwLock::new(BTreeMap::new()),
            ops: tokio::sync::Mutex::new(()),
            draining: AtomicBool::new(false),
            started: Instant::now(),
            metrics,
            access: RwLock::new(access),
            sources,
            storage: storage.clone(),
            settings,
            bus: bus.clone(),
            _cgroup_lock: cgroup_lock,
        });
        // Before any plugin starts: its children take the broker at spawn.
        let _ = daemon
            .rt
            .broker
            .set(Arc::new(crate::services::HostServices {
                daemon: Arc::downgrade(&daemon),
                storage,
                buckets,
                events: bus,
            }));
        daemon.restore().await?;
        Ok(daemon)
    }

    fn config(&self) -> Config {
        self.config.read().map(|c| c.clone()).unwrap_or_default()
    }

    pub fn current_policy(&self) -> Arc<Policy> {
        self.policy
            .read()
            .map(|p| p.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    fn features(&self) -> &KernelFeatures {
        &self.rt.features
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Rebuilds the registry from the state file and the sources, then
    /// loads the enabled plugins.
    async fn restore(self: &Arc<Self>) -> Result<(), StartError> {
        let config = self.config();
        let mut state = self.state.lock().await;
        let mut entries: BTreeMap<String, Arc<PluginEntry>> = BTreeMap::new();
        for (name, installed) in &state.plugins {
            match self.store.get(&installed.digest) {
                Some(package) if package.manifest.name() == name => {
                    let origin = installed.source.strip_prefix("path:").map(PathBuf::from);
                    entries.insert(
                        name.clone(),
                        self.entry_for(
                            package,
                            installed.source.clone(),
                            origin,
                            installed.enabled,
                        ),
                    );
                }
                _ => {
                    tracing::warn!(plugin = %name, digest = %installed.digest, "installed package is missing from the store; dropping it")
                }
            }
        }
        for source in &config.sources {
            for dir in source_packages(&source.path) {
                match self.import(&dir, Eyes::Daemon).await {
                    Ok(Imported { package, .. }) => {
                        let name = package.manifest.name().to_string();
                        if state.removed.contains(&name) {
                            tracing::info!(plugin = %name, package = %dir.display(), "not installed from the source folder: it was removed through the API (install it through the API to bring it back)");
                            continue;
                        }
                        let previous = state.plugins.get(&name);
                        let enabled = previous.map(|p| p.enabled).unwrap_or(source.autoload);
                        let same = entries
                            .get(&name)
                            .is_some_and(|e| e.package.digest == package.digest);
                        if !same {
                            let source_label = format!("source:{}", source.path.display());
                            entries.insert(
                                name,
                                self.entry_for(package, source_label, Some(dir.clone()), enabled),
                            );
                        }
                    }
                    Err(e) => {
                        tracing::error!(package = %dir.display(), error = %e, "skipping an invalid package in a source folder")
                    }
                }
            }
        }
        state.plugins = entries
            .iter()
            .map(|(name, e)| (name.clone(), installed_record(e)))
            .collect();
        state.save(&config.state_dir)?;
        let mut keep: Vec<String> = entries.values().map(|e| e.package.digest.clone()).collect();
        keep.extend(versions::digests(&config.state_dir));
        let keep: Vec<&str> = keep.iter().map(String::as_str).collect();
        self.store.prune(&keep);
        let enabled: Vec<String> = entries
            .values()
            .filter(|e| e.enabled.load(Ordering::Relaxed))
            .map(|e| e.name.clone())
            .collect();
        *self.plugins.write().unwrap_or_else(|p| p.into_inner()) = entries;
        drop(state);
        let _ops = self.ops.lock().await;
        // Plugins without dependencies start side by side; the others one
        // at a time afterwards, so a shared dependency is started once.
        let (independent, dependent): (Vec<String>, Vec<String>) =
            enabled.into_iter().partition(|name| {
                self.entry(name)
                    .is_ok_and(|e| e.package.manifest.dependencies.is_empty())
            });
        let load = |name: String| async move {
            if let Err(e) = self.load_locked(&name, 0).await {
                tracing::error!(plugin = %name, error = %e, "cannot load an enabled plugin");
            }
        };
        futures::stream::iter(independent)
            .for_each_concurrent(START_CONCURRENCY, load)
            .await;
        for name in dependent {
            load(name).await;
        }
        Ok(())
    }

    fn entry_for(
        &self,
        package: StoredPackage,
        source: String,
        origin: Option<PathBuf>,
        enabled: bool,
    ) -> Arc<PluginEntry> {
        let compiled = self.compile_package(&package);
        self.entry_with(package, source, origin, enabled, compiled)
    }

    fn entry_with(
        &self,
        package: StoredPackage,
        source: String,
        origin: Option<PathBuf>,
        enabled: bool,
        compiled: Result<Arc<SandboxPolicy>, CorralError>,
    ) -> Arc<PluginEntry> {
        let max_in_flight = self.config().limits.max_in_flight_per_plugin;
        let (compiled, settings) = self.settle(&package, compiled);
        Arc::new(PluginEntry {
            name: package.manifest.name().to_string(),
            compiled,
            package,
            source,
            origin,
            host: Mutex::new(None),
            enabled: AtomicBool::new(enabled),
            slots: Arc::new(Semaphore::new(max_in_flight as usize)),
            max_in_flight,
            hot_reload_error: Mutex::new(None),
            settings,
        })
    }

    /// A package's effective settings under the current policy and the
    /// API's overlay; settings that do not validate keep the plugin from
    /// loading, like a policy that does not compile.
    fn settle(
        &self,
        package: &StoredPackage,
        compiled: Result<Arc<SandboxPolicy>, CorralError>,
    ) -> (
        Result<Arc<SandboxPolicy>, CorralError>,
        Arc<serde_json::Value>,
    ) {
        let overlay = self.settings.get(package.manifest.name());
        match self.settings_with(&package.manifest, overlay.as_ref()) {
            Ok(v) => (compiled, Arc::new(v)),
            Err(e) => (
                compiled.and(Err(e)),
                Arc::new(serde_json::Value::Object(Default::default())),
            ),
        }
    }

    fn compile_package(&self, package: &StoredPackage) -> Result<Arc<SandboxPolicy>, CorralError> {
        let policy = self.current_policy();
        let manifest_file = format!(
            "{} ({}/plugin.toml)",
            package.manifest.name(),
            package.dir.display()
        );
        compile_for(
            &package.manifest,
            &manifest_file,
            &package.dir,
            &policy,
            self.features(),
        )
        .map(Arc::new)
    }

    pub fn entry(&self, name: &str) -> Result<Arc<PluginEntry>, CorralError> {
        self.plugins
            .read()
            .ok()
            .and_then(|p| p.get(name).cloned())
            .ok_or_else(|| not_found(name))
    }

    fn entries(&self) -> Vec<Arc<PluginEntry>> {
        self.plugins
            .read()
            .map(|p| p.values().cloned().collect())
            .unwrap_or_default()
    }

    async fn persist(&self) {
        let config = self.config();
        let mut state = self.state.lock().await;
        state.plugins = self
            .entries()
            .iter()
            .map(|e| (e.name.clone(), installed_record(e)))
            .collect();
        state.settings = self.settings.snapshot();
        if let Err(e) = state.save(&config.state_dir) {
            tracing::error!(error = %e, "cannot save the daemon state");
        }
    }

    /// Whether the peer is an admin (for connection slots).
    pub fn is_admin(&self, peer: &Peer) -> bool {
        self.access.read().is_ok_and(|a| a.is_admin(peer))
    }

    /// Checks access, logging (rate-limited) and counting refusals with
    /// the peer's ids.
    pub fn authorize(&self, peer: &Peer, need: Need, what: &str) -> Result<(), CorralError> {
        let allowed = self
            .access
            .read()
            .map(|a| a.allows(peer, need))
            .unwrap_or(false);
        if allowed {
            return Ok(());
        }
        self.metrics.denied();
        if let Some(suppressed) = self.metrics.logs.admit("request_denied") {
            tracing::warn!(
                uid = peer.uid,
                gid = peer.gid,
                pid = peer.pid,
                operation = what,
                suppressed,
                "request denied"
            );
        }
        Err(CorralError::new(
            ErrorKind::PermissionDenied {
                permission: Some(what.to_string()),
            },
            format!(
                "uid {} may not {what}: it needs to be {}",
                peer.uid,
                match need {
                    Need::Admin => "root or in an admin group",
                    _ => "in a caller group",
                }
            ),
        ))
    }

    // ---- installation ----------------------------------------------

    /// Reads a package on a thread of its own (see [`crate::store::Eyes`]),
    /// never on the async runtime: health and calls go on meanwhile.
    async fn import(&self, path: &Path, eyes: Eyes) -> Result<Imported, CorralError> {
        let store = self.store.clone();
        let path = path.to_path_buf();
        tokio::task::spawn_blocking(move || store.import_path_as(&path, &eyes))
            .await
            .map_err(|e| CorralError::internal(format!("reading the package: {e}")))?
    }

    /// Installs a path, read with the requesting peer's permissions: only
    /// what the peer itself could read is installed.
    pub async fn install_path(
        &self,
        path: &Path,
        flags: InstallFlags,
        peer: &Peer,
    ) -> Result<(InstallResponse, bool), CorralError> {
        self.refuse_when_draining()?;
        let _ops = self.ops.lock().await;
        let imported = self.import(path, eyes_of(peer)).await?;
        let origin = imported.from_dir.then(|| path.to_path_buf());
        let name = imported.package.manifest.name().to_string();
        let result = self
            .install_locked(
                imported.package,
                format!("path:{}", path.display()),
                origin,
                flags,
            )
            .await;
        self.forget_removal(&name, &result).await;
        result
    }

    pub async fn install_upload(
        &self,
        archive: axum::body::Bytes,
        flags: InstallFlags,
    ) -> Result<(InstallResponse, bool), CorralError> {
        self.refuse_when_draining()?;
        let _ops = self.ops.lock().await;
        let store = self.store.clone();
        let package = tokio::task::spawn_blocking(move || store.import_tar_gz(&archive[..]))
            .await
            .map_err(|e| CorralError::internal(format!("reading the archive: {e}")))??;
        let name = package.manifest.name().to_string();
        let result = self
            .install_locked(package, "upload".into(), None, flags)
            .await;
        self.forget_removal(&name, &result).await;
        result
    }

    /// An install through the API brings back a name removed through it.
    async fn forget_removal<T>(&self, name: &str, result: &Result<T, CorralError>) {
        if result.is_err() {
            return;
        }
        let mut state = self.state.lock().await;
        if state.removed.remove(name)
            && let Err(e) = state.save(&self.config().state_dir)
        {
            tracing::error!(error = %e, "cannot save the daemon state");
        }
    }

    /// Installs a package a remote source fetched (`crate::sources`) or a
    /// `.zip` upload: `import` puts it in the store under the same lock as
    /// the install, so no prune runs in between.
    pub async fn install_fetched(
        &self,
        import: impl FnOnce(&Store) -> Result<StoredPackage, CorralError> + Send,
        source: String,
        flags: InstallFlags,
    ) -> Result<(InstallResponse, bool), CorralError> {
        self.refuse_when_draining()?;
        let _ops = self.ops.lock().await;
        let package = import(&self.store).inspect_err(|_| self.prune_store())?;
        self.install_locked(package, source, None, flags).await
    }

    /// Installs (or, when asked, replaces) a stored package. Returns
    /// whether it is new.
    async fn install_locked(
        &self,
        package: StoredPackage,
        source: String,
        origin: Option<PathBuf>,
        flags: InstallFlags,
    ) -> Result<(InstallResponse, bool), CorralError> {
        let InstallFlags { load, replace } = flags;
        let name = package.manifest.name().to_string();
        let version = package.manifest.plugin.version.to_string();
        let digest = package.digest.clone();
        let existing = self.entry(&name).ok();
        if let Some(old) = &existing
            && old.package.digest != digest
            && !replace
        {
            // Nothing refers to the copy just imported: drop it, so a
            // refused install leaves the store as it was.
            self.prune_store();
            let installed_version = old.package.manifest.plugin.version.to_string();
            return Err(CorralError::new(
                ErrorKind::AlreadyExists {
                    plugin: name.clone(),
                    installed_version: installed_version.clone(),
                    installed_digest: old.package.digest.clone(),
                },
                format!(
                    "another package is installed as {name} ({installed_version}, {}, from {}); install with replace to swap it for this one ({version}, {digest})",
                    old.package.digest, old.source
                ),
            ));
        }
        if let Some(old) = &existing
            && old.package.digest == digest
        {
            if load && old.host().is_none() {
                self.load_locked(&name, 0).await?;
            }
            return Ok((
                InstallResponse {
                    plugin: name.clone(),
                    version,
                    digest,
                    unchanged: true,
                    state: self.entry(&name)?.state(),
                },
                false,
            ));
        }
        let manifest_file = format!("{name} ({}/plugin.toml)", package.dir.display());
        if let Err(e) = self
            .refuse_cycle(&name, &package.manifest)
            .and_then(|()| crate::services::config::check_schema(&package.manifest, &manifest_file))
        {
            self.prune_store();
            return Err(e);
        }
        let was_loaded = existing.as_ref().is_some_and(|e| e.host().is_some());
        let enabled = load
            || existing
                .as_ref()
                .is_some_and(|e| e.enabled.load(Ordering::Relaxed));
        let entry = self.entry_for(package, source, origin, enabled);
        let is_new = existing.is_none();
        if was_loaded || load {
            self.swap_in(entry, existing).await?;
        } else {
            self.plugins
                .write()
                .map_err(|_| CorralError::internal("registry poisoned"))?
                .insert(name.clone(), entry);
        }
        self.persist().await;
        self.prune_store();
        tracing::info!(plugin = %name, %version, %digest, "installed");
        Ok((
            InstallResponse {
                plugin: name.clone(),
                version,
                digest,
                unchanged: false,
                state: self.entry(&name)?.state(),
            },
            is_new,
        ))
    }

    fn prune_store(&self) {
        let mut keep: Vec<String> = self
            .entries()
            .iter()
            .map(|e| e.package.digest.clone())
            .collect();
        keep.extend(versions::digests(&self.config().state_dir));
        let keep: Vec<&str> = keep.iter().map(String::as_str).collect();
        self.store.prune(&keep);
    }

    /// Removes the plugin; its stored data (key-value tables) stays
    /// unless `purge_data`.
    pub async fn remove(
        &self,
        name: &str,
        purge_data: bool,
    ) -> Result<RemoveResponse, CorralError> {
        self.refuse_when_draining()?;
        let _ops = self.ops.lock().await;
        let entry = self.entry(name)?;
        let dependents = self.dependents_of(name);
        if !dependents.is_empty() {
            return Err(CorralError::new(
                ErrorKind::DependencyMissing {
                    dependency: name.to_string(),
                    requirement: format!("required by {}", dependents.join(", ")),
                },
                format!(
                    "{name} cannot be removed: {} depend on it",
                    dependents.join(", ")
                ),
            ));
        }
        if let Some(host) = entry.set_host(None) {
            self.drain_and_stop(&entry, host).await;
            self.rt.events.publish(Event::Unloaded {
                plugin: name.to_string(),
            });
        }
        self.plugins
            .write()
            .map_err(|_| CorralError::internal("registry poisoned"))?
            .remove(name);
        // Its settings go with it.
        self.settings.set(name, None);
        if entry.source.starts_with("source:") {
            // The removal wins over the folder: remembered, so neither a
            // restart nor a change in the folder brings it back.
            self.state.lock().await.removed.insert(name.to_string());
        }
        self.persist().await;
        self.prune_store();
        tracing::info!(plugin = %name, "removed");
        let purged = if purge_data {
            let p = self.storage.purge(name).await?;
            Some(corral_protocol::api::PurgedData {
                tables: p.tables,
                bytes: p.bytes,
            })
        } else {
            None
        };
        Ok(RemoveResponse {
            removed: name.to_string(),
            purged,
        })
    }

    // ---- lifecycle ---------------------------------------------------

    pub async fn load(&self, name: &str) -> Result<PluginSummary, CorralError> {
        self.refuse_when_draining()?;
        let _ops = self.ops.lock().await;
        self.load_locked(name, 0).await?;
        self.persist().await;
        self.summary(name)
    }

    fn load_locked<'a>(
        &'a self,
        name: &'a str,
        depth: usize,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), CorralError>> + Send + 'a>>
    {
        Box::pin(async move {
            let entry = self.entry(name)?;
            if let Some(host) = entry.host() {
                if host.state() != PluginState::Quarantined {
                    entry.enabled.store(true, Ordering::Relaxed);
                    return Ok(());
                }
                // Loading a quarantined plugin is the operator's way to
                // say "try again".
                entry.set_host(None);
                host.stop(Duration::ZERO).await;
            }
            let policy = entry.compiled.clone()?;
            self.load_dependencies(&entry, depth).await?;
            let host = self.start_host(&entry, policy).await?;
            entry.set_host(Some(host));
            entry.enabled.store(true, Ordering::Relaxed);
            tracing::info!(plugin = %name, "loaded");
            Ok(())
        })
    }

    async fn load_dependencies(
        &self,
        entry: &PluginEntry,
        depth: usize,
    ) -> Result<(), CorralError> {
        if depth == 0 {
            self.refuse_cycle(&entry.name, &entry.package.manifest)?;
        }
        if depth > 16 {
            return Err(CorralError::new(
                ErrorKind::DependencyMissing {
                    dependency: entry.name.clone(),
                    requirement: "no cycle".into(),
                },
                format!("the dependencies of {} form a cycle", entry.name),
            ));
        }
        for (dep, req) in &entry.package.manifest.dependencies {
            let missing = || {
                CorralError::new(
                    ErrorKind::DependencyMissing {
                        dependency: dep.to_string(),
                        requirement: req.to_string(),
                    },
                    format!("{} needs {dep} {req}, which is not installed", entry.name),
                )
            };
            let dep_entry = self.entry(dep.as_str()).map_err(|_| missing())?;
            let have = &dep_entry.package.manifest.plugin.version;
            if !req.matches(have) {
                return Err(CorralError::new(
                    ErrorKind::DependencyMissing {
                        dependency: dep.to_string(),
                        requirement: req.to_string(),
                    },
                    format!(
                        "{} needs {dep} {req}, but {dep} {have} is installed",
                        entry.name
                    ),
                ));
            }
            if dep_entry.host().is_none() {
                self.load_locked(dep.as_str(), depth + 1).await?;
            }
        }
        Ok(())
    }

    /// A dependency cycle through `name` (its dependencies as `manifest`
    /// says, the others' as installed) is an error naming the cycle.
    fn refuse_cycle(
        &self,
        name: &str,
        manifest: &corral_protocol::manifest::Manifest,
    ) -> Result<(), CorralError> {
        let names = |m: &corral_protocol::manifest::Manifest| -> Vec<String> {
            m.dependencies
                .keys()
                .map(|d| d.as_str().to_string())
                .collect()
        };
        let deps_of = |n: &str| {
            if n == name {
                names(manifest)
            } else {
                self.entry(n)
                    .map(|e| names(&e.package.manifest))
                    .unwrap_or_default()
            }
        };
        match crate::deps::find_cycle(name, &deps_of) {
            None => Ok(()),
            Some(cycle) => Err(CorralError::new(
                ErrorKind::DependencyMissing {
                    dependency: cycle[0].clone(),
                    requirement: "no dependency cycle".into(),
                },
                format!(
                    "the dependencies of {name} form a cycle: {}",
                    crate::deps::describe(&cycle)
                ),
            )),
        }
    }

    fn dependents_of(&self, name: &str) -> Vec<String> {
        self.entries()
            .iter()
            .filter(|e| {
                e.package
                    .manifest
                    .dependencies
                    .keys()
                    .any(|d| d.as_str() == name)
            })
            .map(|e| e.name.clone())
            .collect()
    }

    pub async fn unload(&self, name: &str) -> Result<PluginSummary, CorralError> {
        self.unload_with(name, false).await
    }

    /// Unloads `name`; a plugin that loaded plugins need is refused unless
    /// `cascade`, which unloads those first (and what needs them).
    pub async fn unload_with(
        &self,
        name: &str,
        cascade: bool,
    ) -> Result<PluginSummary, CorralError> {
        self.refuse_when_draining()?;
        let _ops = self.ops.lock().await;
        self.unload_locked(name, cascade, &mut BTreeSet::new())
            .await?;
        self.persist().await;
        self.summary(name)
    }

    fn unload_locked<'a>(
        &'a self,
        name: &'a str,
        cascade: bool,
        done: &'a mut BTreeSet<String>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), CorralError>> + Send + 'a>>
    {
        Box::pin(async move {
            let entry = self.entry(name)?;
            if entry.host().is_none() {
                return Err(not_loaded(name));
            }
            done.insert(name.to_string());
            let needed_by: Vec<String> = self
                .dependents_of(name)
                .into_iter()
                .filter(|d| !done.contains(d) && self.entry(d).is_ok_and(|e| e.host().is_some()))
                .collect();
            if !needed_by.is_empty() && !cascade {
                return Err(CorralError::new(
                    ErrorKind::DependencyMissing {
                        dependency: name.to_string(),
                        requirement: format!("needed by {}", needed_by.join(", ")),
                    },
                    format!(
                        "{name} cannot be unloaded: {} (loaded) need it; unload them first, or unload with cascade",
                        needed_by.join(", ")
                    ),
                ));
            }
            for dependent in needed_by {
                self.unload_locked(&dependent, true, done).await?;
            }
            let host = entry.set_host(None).ok_or_else(|| not_loaded(name))?;
            entry.enabled.store(false, Ordering::Relaxed);
            self.drain_and_stop(&entry, host).await;
            self.rt.events.publish(Event::Unloaded {
                plugin: name.to_string(),
            });
            tracing::info!(plugin = %name, "unloaded");
            Ok(())
        })
    }

    /// Re-reads the package (when it came from a folder or path) and the
    /// policy, and swaps new instances in; lifts a quarantine; reloads the
    /// plugins that depend on it.
    pub async fn reload(&self, name: &str, peer: &Peer) -> Result<PluginSummary, CorralError> {
        self.refuse_when_draining()?;
        let _ops = self.ops.lock().await;
        self.reload_locked(name, &mut BTreeSet::new(), &eyes_of(peer))
            .await?;
        self.persist().await;
        self.summary(name)
    }

    /// `requester`: whose permissions re-read a package installed from a
    /// path (a source folder's are read with the daemon's).
    fn reload_locked<'a>(
        &'a self,
        name: &'a str,
        done: &'a mut BTreeSet<String>,
        requester: &'a Eyes,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), CorralError>> + Send + 'a>>
    {
        Box::pin(async move {
            if !done.insert(name.to_string()) {
                return Ok(());
            }
            let old = self.entry(name)?;
            let eyes = if old.source.starts_with("path:") {
                requester.clone()
            } else {
                Eyes::Daemon
            };
            // A folder that is gone leaves the stored copy to reload.
            let origin = old
                .origin
                .as_ref()
                .filter(|dir| std::fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir()));
            let package = match origin {
                Some(dir) => self.import(dir, eyes).await?.package,
                None => old.package.clone(),
            };
            if package.manifest.name() != name {
                return Err(CorralError::new(
                    ErrorKind::InvalidPackage {
                        reason: format!("the package now names itself {}", package.manifest.name()),
                    },
                    format!(
                        "{name}: the package at its origin is now called {}",
                        package.manifest.name()
                    ),
                ));
            }
            let entry = self.entry_for(package, old.source.clone(), old.origin.clone(), true);
            self.swap_in(entry, Some(old)).await?;
            self.prune_store();
            for dependent in self.dependents_of(name) {
                if self.entry(&dependent).is_ok_and(|e| e.host().is_some()) {
                    self.reload_locked(&dependent, done, requester).await?;
                }
            }
            Ok(())
        })
    }

    /// Announces the load, then starts the plugin's instances (each
    /// announces itself Ready); a failed start is announced as a crash of
    /// instance 0 with the typed cause.
    async fn start_host(
        &self,
        entry: &PluginEntry,
        policy: Arc<SandboxPolicy>,
    ) -> Result<Arc<PluginHost>, CorralError> {
        self.rt.events.publish(Event::Loaded {
            plugin: entry.name.clone(),
            version: entry.package.manifest.plugin.version.to_string(),
        });
        let settings = serde_json::to_vec(&*entry.settings)
            .map_err(|e| CorralError::internal(format!("encoding the settings: {e}")))?;
        PluginHost::start(self.rt.clone(), policy, settings)
            .await
            .inspect_err(|e| {
                self.rt.events.publish(Event::Crashed {
                    plugin: entry.name.clone(),
                    instance: 0,
                    code: e.code().to_string(),
                    message: e.message.clone(),
                });
            })
    }

    /// Starts `new`'s instances, points calls at them, then drains and
    /// stops `old`'s. On a start failure `old` keeps serving.
    async fn swap_in(
        &self,
        new: Arc<PluginEntry>,
        old: Option<Arc<PluginEntry>>,
    ) -> Result<(), CorralError> {
        let policy = new.compiled.clone()?;
        self.load_dependencies(&new, 0).await?;
        let host = self.start_host(&new, policy).await?;
        new.set_host(Some(host));
        new.enabled.store(true, Ordering::Relaxed);
        self.plugins
            .write()
            .map_err(|_| CorralError::internal("registry poisoned"))?
            .insert(new.name.clone(), new.clone());
        if let Some(old) = old
            && let Some(old_host) = old.set_host(None)
        {
            self.drain_and_stop(&old, old_host).await;
        }
        tracing::info!(plugin = %new.name, digest = %new.package.digest, "swapped in");
        Ok(())
    }

    /// Waits (up to the shutdown grace) for the calls in flight on `entry`
    /// to finish, then stops its host.
    async fn drain_and_stop(&self, entry: &PluginEntry, host: Arc<PluginHost>) {
        let grace = self.config().shutdown_grace();
        let all = entry.max_in_flight;
        if let Ok(Ok(permits)) = tokio::time::timeout(grace, entry.slots.acquire_many(all)).await {
            // Nothing in flight; keep the permits while stopping so no late
            // call slips in.
            host.stop(grace).await;
            drop(permits);
        } else {
            tracing::warn!(plugin = %entry.name, "calls still in flight after the grace period; stopping anyway");
            host.stop(Duration::from_millis(100)).await;
        }
    }

    fn refuse_when_draining(&self) -> Result<(), CorralError> {
        if self.is_draining() {
            return Err(shutting_down());
        }
        Ok(())
    }

    // ---- calls -------------------------------------------------------

    pub async fn call(
        &self,
        name: &str,
        request: CallRequest,
        peer: &Peer,
    ) -> Result<CallResponse, CorralError> {
        self.refuse_when_draining()?;
        // An empty method is the plugin's default_method (PluginHost::call).
        if request.method.len() > 256 {
            return Err(CorralError::invalid_input(
                "method must be at most 256 bytes",
            ));
        }
        let entry = self.entry(name)?;
        let allowed_callers = entry
            .compiled
            .as_ref()
            .ok()
            .and_then(|p| p.allowed_callers.clone());
        let may = self
            .access
            .read()
            .map(|a| a.may_call(peer, allowed_callers.as_deref()))
            .unwrap_or(false);
        if !may {
            self.metrics.denied();
            if let Some(suppressed) = self.metrics.logs.admit("call_denied") {
                tracing::warn!(
                    uid = peer.uid,
                    gid = peer.gid,
                    pid = peer.pid,
                    plugin = name,
                    suppressed,
                    "call denied by allowed_callers"
                );
            }
            return Err(CorralError::new(
                ErrorKind::PermissionDenied {
                    permission: Some(format!("call {name}")),
                },
                format!(
                    "uid {} is not among the allowed callers of {name}",
                    peer.uid
                ),
            ));
        }
        // Read again before refusing: a swap may have just replaced it.
        if entry.host().is_none() && self.entry(name)?.host().is_none() {
            return Err(not_loaded(name));
        }
        let started = Instant::now();
        // Hooks, then the call with its retries (each takes its own slot).
        let result = crate::services::hooks::call(self, name, request).await;
        self.count_call(name, &result, started);
        result
    }

    /// A call from a plugin to one of its dependencies (the `plugins`
    /// host service, which checked the caller's grant). The same path as
    /// an API call (hooks, retries, slots, metrics, events), but
    /// `allowed_callers` does not apply: it names API clients by uid, and
    /// the operator's grant to the calling plugin is what admits this call.
    pub async fn call_from_plugin(
        &self,
        name: &str,
        method: String,
        input: serde_json::Value,
        timeout: Option<Duration>,
    ) -> Result<CallResponse, CorralError> {
        self.refuse_when_draining()?;
        let started = Instant::now();
        let result = crate::services::hooks::call_with(self, name, method, input, timeout).await;
        self.count_call(name, &result, started);
        result
    }

    fn count_call<T>(&self, name: &str, result: &Result<T, CorralError>, started: Instant) {
        let outcome = match result {
            Ok(_) => "ok",
            Err(e) => e.code(),
        };
        self.metrics.call(name, outcome, started.elapsed());
    }

    /// One call to a loaded plugin, with no access check and no hooks:
    /// each attempt of an API or dependency call, and the calls hooks make.
    pub(crate) async fn call_direct(
        &self,
        name: &str,
        method: &str,
        input: Vec<u8>,
        timeout: Option<Duration>,
    ) -> Result<crate::child::CallOutput, CorralError> {
        // A swap (reload, settings change, hot reload) puts the new entry
        // in the registry before it takes the old one's host and drains
        // its slots: an entry read just before that has no host or no free
        // slot, and the registry's current one serves instead.
        let mut entry = self.entry(name)?;
        for attempt in 0..2 {
            let replaced = || {
                self.entry(name)
                    .is_ok_and(|current| !Arc::ptr_eq(&current, &entry))
            };
            let Some(host) = entry.host() else {
                if attempt == 0 && replaced() {
                    entry = self.entry(name)?;
                    continue;
                }
                return Err(not_loaded(name));
            };
            match entry.slots.clone().try_acquire_owned() {
                Ok(_permit) => return host.call(method, input, timeout).await,
                Err(_) if attempt == 0 && replaced() => entry = self.entry(name)?,
                Err(_) => {
                    return Err(CorralError::new(
                        ErrorKind::Overloaded {
                            limit: entry.max_in_flight,
                        },
                        format!(
                            "plugin {name} already has {} calls in flight",
                            entry.max_in_flight
                        ),
                    ));
                }
            }
        }
        Err(not_loaded(name))
    }

    // ---- reading -----------------------------------------------------

    fn summary_of(&self, entry: &PluginEntry) -> PluginSummary {
        let host = entry.host();
        let manifest = &entry.package.manifest;
        let (children, in_flight, memory, counters) = match &host {
            Some(h) => {
                let children = h.children();
                let memory = children
                    .iter()
                    .filter_map(|c| c.stats())
                    .map(|s| s.memory_current)
                    .sum();
                (
                    children.len(),
                    h.in_flight(),
                    memory,
                    (
                        h.counters.calls_ok.load(Ordering::Relaxed),
                        h.counters.calls_failed.load(Ordering::Relaxed),
                        h.counters.restarts.load(Ordering::Relaxed),
                    ),
                )
            }
            None => (0, 0, 0, (0, 0, 0)),
        };
        PluginSummary {
            name: entry.name.clone(),
            version: manifest.plugin.version.to_string(),
            description: manifest.plugin.description.clone(),
            state: entry.state(),
            enabled: entry.enabled.load(Ordering::Relaxed),
            instances: entry
                .compiled
                .as_ref()
                .map(|p| p.instances)
                .unwrap_or(manifest.plugin.instances),
            children,
            in_flight,
            calls_ok: counters.0,
            calls_failed: counters.1,
            restarts: counters.2,
            memory_bytes: memory,
        }
    }

    pub fn summary(&self, name: &str) -> Result<PluginSummary, CorralError> {
        let entry = self.entry(name)?;
        Ok(self.summary_of(&entry))
    }

    pub fn list(&self) -> Vec<PluginSummary> {
        self.entries().iter().map(|e| self.summary_of(e)).collect()
    }

    /// `GET /v1/plugins/{name}` as `peer` may see it: everything for an
    /// admin; for a caller, what it needs to use the plugin (summary,
    /// version, manifest, digest, the last failure) but not how the host
    /// runs it: no compiled policy (host paths, uids), no pids or uids of
    /// its processes, no host path of where it was installed from.
    pub fn detail_for(&self, name: &str, peer: &Peer) -> Result<PluginDetail, CorralError> {
        let mut detail = self.detail(name)?;
        if self.is_admin(peer) {
            return Ok(detail);
        }
        detail.policy = None;
        // Settings may hold secrets.
        detail.settings = None;
        if detail.policy_error.is_some() {
            detail.policy_error = Some(CorralError::new(
                ErrorKind::PermissionDenied {
                    permission: Some("read policies".into()),
                },
                format!(
                    "the plugin's policy does not compile; an admin can see why (`corral policy show {name}`)"
                ),
            ));
        }
        detail.processes.clear();
        detail.source = detail
            .source
            .split(':')
            .next()
            .unwrap_or_default()
            .to_string();
        Ok(detail)
    }

    pub fn detail(&self, name: &str) -> Result<PluginDetail, CorralError> {
        let entry = self.entry(name)?;
        let host = entry.host();
        let processes = host
            .as_ref()
            .map(|h| {
                h.children()
                    .iter()
                    .map(|c| {
                        let stats = c.stats().unwrap_or_default();
                        ChildInfo {
                            instance: c.instance(),
                            pid: c.pid(),
                            uid: c.uid(),
                            start_ms: c.start_duration().as_secs_f64() * 1000.0,
                            in_flight: c.in_flight(),
                            memory_bytes: stats.memory_current,
                            memory_peak_bytes: stats.memory_peak,
                            pids: stats.pids_current,
                            cpu_ms: stats.cpu_usage_us as f64 / 1000.0,
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(PluginDetail {
            summary: self.summary_of(&entry),
            source: entry.source.clone(),
            digest: entry.package.digest.clone(),
            manifest: entry.package.manifest.clone(),
            policy: entry.compiled.as_ref().ok().map(|p| (**p).clone()),
            policy_error: entry.compiled.as_ref().err().cloned(),
            settings: Some((*entry.settings).clone()),
            processes,
            last_error: entry
                .hot_reload_error
                .lock()
                .ok()
                .and_then(|e| e.clone())
                .or_else(|| host.and_then(|h| h.last_death()).map(|d| d.error)),
            learning: self.metrics.learners.is_learning(name),
            versions: self.versions_of(name),
        })
    }

    pub fn policy_of(&self, name: &str) -> Result<SandboxPolicy, CorralError> {
        let entry = self.entry(name)?;
        entry
            .compiled
            .as_ref()
            .map(|p| (**p).clone())
            .map_err(Clone::clone)
    }

    pub fn health(&self) -> Health {
        let entries = self.entries();
        Health {
            status: if self.is_draining() { "draining" } else { "ok" }.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            uptime_ms: self.started.elapsed().as_millis() as u64,
            plugins_installed: entries.len(),
            plugins_loaded: entries.iter().filter(|e| e.host().is_some()).count(),
            children_alive: entries
                .iter()
                .filter_map(|e| e.host())
                .map(|h| h.children().len())
                .sum(),
            cgroup: self
                .rt
                .cgroups
                .as_ref()
                .map(|d| d.version().to_string())
                .unwrap_or_else(|| "none".into()),
            landlock_abi: if self.rt.features.has("landlock") {
                self.rt.features.landlock_abi
            } else {
                0
            },
            features_unavailable: crate::features::FEATURE_NAMES
                .iter()
                .filter(|f| !self.rt.features.has(f))
                .map(|f| f.to_string())
                .collect(),
            cgroup_favordynmods: self.rt.cgroups.is_some() && self.rt.features.cgroup_favordynmods,
        }
    }

    /// Every installed plugin's state, children and memory, for the
    /// metrics gauges.
    pub fn gauges(&self) -> Vec<metrics::PluginGauges> {
        self.entries()
            .iter()
            .map(|e| {
                let state = serde_json::to_value(e.state())
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default();
                let children = e.host().map(|h| h.children()).unwrap_or_default();
                let memory = children
                    .iter()
                    .filter_map(|c| c.stats())
                    .map(|s| s.memory_current)
                    .sum();
                metrics::PluginGauges {
                    name: e.name.clone(),
                    state,
                    children: children.len(),
                    memory,
                }
            })
            .collect()
    }

    // ---- reconfiguration and shutdown ------------------------------------

    /// SIGHUP and `POST /v1/reload`: re-reads the configuration (what can
    /// change without a restart: access groups, limits) and the policy;
    /// plugins whose compiled policy changed are swapped, the others keep
    /// running. A file that does not load is the error and changes nothing.
    pub async fn reload_configuration(&self) -> Result<ReloadReport, CorralError> {
        let _ops = self.ops.lock().await;
        let mut report = ReloadReport::default();
        // Both files are read before anything is applied, so an error in
        // either leaves the running configuration and policy whole.
        let new_config = match &self.config_path {
            Some(path) => Some(Config::load(path, true)?),
            None => None,
        };
        let config = new_config.clone().unwrap_or_else(|| self.config());
        let policy = Policy::load(&config.policy, &config.policy_dir).map_err(policy_error)?;
        self.check_settings_under(&policy)?;
        if let Some(new) = new_config {
            let (new, restart_needed) = self.config().reloadable(new);
            for setting in restart_needed {
                tracing::warn!(setting, "changed; takes effect after a restart");
                report.restart_needed.push(setting.to_string());
            }
            if let Ok(mut a) = self.access.write() {
                *a = Access::new(&new.admin_groups, &new.caller_groups);
            }
            if let Ok(mut c) = self.config.write() {
                *c = new;
            }
        }
        if let Ok(mut p) = self.policy.write() {
            *p = Arc::new(policy);
        }
        for old in self.entries() {
            let recompiled = self.compile_package(&old.package);
            let (recompiled, settings) = self.settle(&old.package, recompiled);
            let changed = match (&recompiled, &old.compiled) {
                (Ok(a), Ok(b)) => a != b,
                (Err(a), Err(b)) => a != b,
                _ => true,
            } || settings != old.settings;
            if !changed {
                continue;
            }
            report.policy_changed.push(old.name.clone());
            self.rt.events.publish(Event::PolicyChanged {
                plugin: old.name.clone(),
            });
            let entry = self.entry_with(
                old.package.clone(),
                old.source.clone(),
                old.origin.clone(),
                old.enabled.load(Ordering::Relaxed),
                recompiled,
            );
            if old.host().is_some() {
                match &entry.compiled {
                    Ok(_) => {
                        if let Err(e) = self.swap_in(entry, Some(old.clone())).await {
                            tracing::error!(plugin = %old.name, error = %e, "the plugin does not start under the new policy; the old instances keep running");
                            report.not_swapped.push(PluginFailure {
                                plugin: old.name.clone(),
                                error: e,
                            });
                        }
                    }
                    Err(e) => {
                        tracing::error!(plugin = %old.name, error = %e, "the new policy no longer admits the plugin; unloading it");
                        report.unloaded.push(PluginFailure {
                            plugin: old.name.clone(),
                            error: e.clone(),
                        });
                        if let Some(host) = old.set_host(None) {
                            self.drain_and_stop(&old, host).await;
                        }
                        if let Ok(mut map) = self.plugins.write() {
                            map.insert(entry.name.clone(), entry);
                        }
                        self.rt.events.publish(Event::Unloaded {
                            plugin: old.name.clone(),
                        });
                    }
                }
            } else if let Ok(mut map) = self.plugins.write() {
                map.insert(entry.name.clone(), entry);
            }
        }
        tracing::info!(
            policy_changed = report.policy_changed.len(),
            "configuration and policy reloaded"
        );
        Ok(report)
    }

    /// SIGTERM: refuse new work, let calls in flight finish (up to the
    /// grace period), stop every child and remove their cgroups.
    pub async fn shutdown(&self) {
        self.draining.store(true, Ordering::SeqCst);
        let grace = self.config().shutdown_grace();
        let deadline = Instant::now() + grace;
        let entries = self.entries();
        while Instant::now() < deadline {
            let in_flight: usize = entries
                .iter()
                .filter_map(|e| e.host())
                .map(|h| h.in_flight())
                .sum();
            if in_flight == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let stops = entries
            .iter()
            .filter_map(|e| e.set_host(None))
            .map(|host| async move {
                host.stop(Duration::from_millis(500)).await;
            });
        futures::future::join_all(stops).await;
        self.rt.drain_cgroup_pool();
        // The base directory itself (in every v1 hierarchy) is ours too:
        // an empty one left behind is litter.
        if let Some(driver) = &self.rt.cgroups
            && let Err(e) = driver.remove_base()
        {
            tracing::warn!(error = %e, "cannot remove the cgroup base");
        }
        tracing::info!("all plugins stopped");
    }

    /// A package in a watched source appeared or changed: install it
    /// (again), which swaps it in when it is loaded and its contents
    /// differ, and loads a new one when its source has `autoload`. A
    /// package that does not install is reported where an operator looks
    /// (`corral info`'s last error, the events, the metrics), not only in
    /// the log.
    pub async fn source_changed(&self, dir: &Path) {
        if self.is_draining() {
            return;
        }
        let parent = dir.parent().map(Path::to_path_buf).unwrap_or_default();
        let autoload = self
            .config()
            .sources
            .iter()
            .find(|s| s.path == parent)
            .is_some_and(|s| s.autoload);
        let source = format!("source:{}", parent.display());
        let _ops = self.ops.lock().await;
        let package = match self.import(dir, Eyes::Daemon).await {
            Ok(imported) => imported.package,
            Err(e) => {
                let name = self.plugin_from(dir).unwrap_or_else(|| {
                    dir.file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default()
                });
                self.hot_reload_failed(&name, dir, e);
                return;
            }
        };
        let name = package.manifest.name().to_string();
        if self.state.lock().await.removed.contains(&name) {
            tracing::info!(plugin = %name, package = %dir.display(), "a package removed through the API changed in its source folder; not installed again (install it through the API to bring it back)");
            return;
        }
        let existing = self.entry(&name).ok();
        let load = match &existing {
            Some(e) => e.enabled.load(Ordering::Relaxed),
            None => autoload,
        };
        let flags = InstallFlags {
            load,
            // The source folder is the truth for what it holds.
            replace: true,
        };
        match self
            .install_locked(package, source, Some(dir.to_path_buf()), flags)
            .await
        {
            Ok((r, _)) if !r.unchanged => match (existing.is_some(), load) {
                (true, true) => {
                    tracing::info!(plugin = %name, digest = %r.digest, "hot reloaded: the changed package serves")
                }
                (true, false) => {
                    tracing::info!(plugin = %name, digest = %r.digest, "changed package installed; not loaded (unloaded by an operator)")
                }
                (false, true) => {
                    tracing::info!(plugin = %name, digest = %r.digest, "new package in a source folder installed and loaded")
                }
                (false, false) => {
                    tracing::info!(plugin = %name, digest = %r.digest, "new package in a source folder installed; not loaded (autoload is off for its source)")
                }
            },
            Ok(_) => {}
            Err(e) => self.hot_reload_failed(&name, dir, e),
        }
    }

    /// The installed plugin whose package lives in `dir`.
    fn plugin_from(&self, dir: &Path) -> Option<String> {
        self.entries()
            .into_iter()
            .find(|e| e.origin.as_deref() == Some(dir))
            .map(|e| e.name.clone())
    }

    fn hot_reload_failed(&self, plugin: &str, dir: &Path, error: CorralError) {
        tracing::error!(plugin = %plugin, package = %dir.display(), error = %error, "a changed package in a source folder was not swapped in; the running version keeps serving");
        self.metrics.hot_reload_failed(plugin);
        self.rt.events.publish(Event::ReloadFailed {
            plugin: plugin.to_string(),
            code: error.code().to_string(),
            message: error.message.clone(),
        });
        if let Ok(entry) = self.entry(plugin)
            && let Ok(mut slot) = entry.hot_reload_error.lock()
        {
            *slot = Some(error);
        }
    }
}

/// A peer's credentials, as the permissions a path install reads with.
fn eyes_of(peer: &Peer) -> Eyes {
    Eyes::Peer {
        uid: peer.uid,
        gid: peer.gid,
        groups: peer.groups.clone(),
    }
}

fn installed_record(e: &PluginEntry) -> InstalledPlugin {
    InstalledPlugin {
        version: e.package.manifest.plugin.version.to_string(),
        digest: e.package.digest.clone(),
        source: e.source.clone(),
        enabled: e.enabled.load(Ordering::Relaxed),
    }
}

/// Package directories directly under a source folder.
pub fn source_packages(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        tracing::warn!(source = %dir.display(), "cannot read the source folder");
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| corral_protocol::package_layout::is_package_dir(p))
        .collect();
    dirs.sort();
    dirs
}
