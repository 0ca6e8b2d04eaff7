//! One test's runtime: plugins started the way the daemon starts them,
//! and the proof, at the end, that nothing was left behind.

use crate::env::{package_dir, test_env};
use crate::leaks::{Baseline, Leaks, cgroup_base_dirs, cgroup_leaves, child_processes};
use corral_protocol::api::EventRecord;
use corral_protocol::error::CorralError;
use corral_protocol::policy::SandboxPolicy;
use corral_supervisor::child::{Child, ChildSpec};
use corral_supervisor::host::PluginHost;
use corral_supervisor::package::Package;
use corral_supervisor::policy::{Policy, PolicyText};
use corral_supervisor::run;
use corral_supervisor::runtime::Runtime;
use std::cell::Cell;
use std::collections::BTreeSet;
use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;
use tokio::sync::broadcast;

/// How long [`Harness::finish`] waits for cleanup to complete before it
/// calls what is left a leak. Cleanup is asynchronous (the cgroup is
/// removed after the death is reported), but takes milliseconds.
pub const CLEANUP_WAIT: Duration = Duration::from_secs(10);

/// How long a plugin gets to exit after Shutdown when a test ends.
pub const SHUTDOWN_GRACE: Duration = Duration::from_millis(500);

/// uids per test runtime: enough for every plugin one test runs at once.
const UIDS_PER_HARNESS: u32 = 16;

/// Leak checks count fds and child processes of the whole process, so the
/// tests of one binary take turns, async runtime included (a runtime being
/// built or torn down by another test opens and closes fds).
static SERIAL: Mutex<()> = Mutex::new(());
static NEXT_HARNESS: AtomicU32 = AtomicU32::new(0);

thread_local! {
    static IN_RUN: Cell<bool> = const { Cell::new(false) };
}

/// Worker threads of each test's runtime: like the daemon, more than one,
/// so a busy task cannot hide a missing await.
pub const WORKER_THREADS: usize = 2;

/// Runs one test alone among the tests of its binary, on a runtime of its
/// own. Every test of the suites is `#[test] fn name() { run(async { .. }) }`.
pub fn run<F: Future<Output = ()>>(test: F) {
    // A test that failed while holding the lock poisons it; the next test
    // must still run (its own baseline makes it independent).
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    init_tracing();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKER_THREADS)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("building the test's async runtime: {e}"));
    struct Flag;
    impl Drop for Flag {
        fn drop(&mut self) {
            IN_RUN.with(|f| f.set(false));
        }
    }
    IN_RUN.with(|f| f.set(true));
    let _flag = Flag;
    runtime.block_on(test);
    runtime.shutdown_timeout(Duration::from_secs(5));
}

/// Logs to the test output when `RUST_LOG` asks for it.
pub fn init_tracing() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_default_env() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_test_writer()
                .try_init();
        }
    });
}

/// The policy layer every test runs under, below the test's own text.
fn base_layer(uids: (u32, u32)) -> PolicyText {
    PolicyText {
        name: "corral-tests base policy".into(),
        text: format!(
            r#"
# uids of this test alone, so leak checks find exactly its plugins.
[sandbox]
uid_range = "{}-{}"

# Quick restarts and cancellations keep the suite fast.
[restart]
backoff_initial = "20ms"
backoff_max = "1s"

[timeouts]
grace = "300ms"
"#,
            uids.0, uids.1
        ),
    }
}

pub struct Harness {
    rt: Arc<Runtime>,
    policy: Policy,
    /// The cgroup base directory name, unique to this harness.
    base: String,
    uids: (u32, u32),
    baseline: Baseline,
    hosts: Vec<Arc<PluginHost>>,
    children: Vec<Child>,
    finished: bool,
}

impl std::fmt::Debug for Harness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Harness")
            .field("base", &self.base)
            .field("uids", &self.uids)
            .finish()
    }
}

impl Default for Harness {
    fn default() -> Harness {
        Harness::new()
    }
}

impl Harness {
    /// The built-in policy (with the test base layer).
    pub fn new() -> Harness {
        Harness::with_policy("")
    }

    /// The built-in policy with `text` (operator policy TOML) on top.
    pub fn with_policy(text: &str) -> Harness {
        assert!(
            IN_RUN.with(Cell::get),
            "a Harness checks process-wide leaks: build it inside corral_tests::run(async {{ .. }})"
        );
        let env = test_env();
        let n = NEXT_HARNESS.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        // Unique per process and harness: uids above any real account,
        // below u32::MAX for every possible pid.
        let first = 10_000_000 + pid * 256 + (n % 16) * UIDS_PER_HARNESS;
        let uids = (first, first + UIDS_PER_HARNESS - 1);
        let mut layers = vec![base_layer(uids)];
        if !text.is_empty() {
            layers.push(PolicyText {
                name: "test policy".into(),
                text: text.to_string(),
            });
        }
        let policy = Policy::from_layers(&layers)
            .unwrap_or_else(|e| panic!("the test's policy does not load: {e}"));
        let base = format!("corral-test-{pid}-{n}");
        let mut options = run::runtime_options(&policy, Some(env.sandbox.clone()));
        options.cgroups.base_name = base.clone();
        let rt = Runtime::new(options).unwrap_or_else(|e| panic!("starting the runtime: {e}"));
        assert!(
            rt.cgroups.is_some(),
            "no usable cgroup hierarchy: the limit and leak checks need cgroup v1 (memory, pids, cpu, cpuacct, freezer) under /sys/fs/cgroup"
        );
        // After the runtime: its own fds (the shared namespaces) live as
        // long as the harness and are not what a test can leak.
        let baseline = Baseline::take();
        Harness {
            rt,
            policy,
            base,
            uids,
            baseline,
            hosts: Vec::new(),
            children: Vec::new(),
            finished: false,
        }
    }

    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.rt
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The cgroup base directory name (the same in every hierarchy).
    pub fn cgroup_base(&self) -> &str {
        &self.base
    }

    /// The uids this harness's plugins run as.
    pub fn uid_range(&self) -> (u32, u32) {
        self.uids
    }

    /// Lifecycle events from now on.
    pub fn events(&self) -> broadcast::Receiver<Arc<EventRecord>> {
        self.rt.events.subscribe()
    }

    /// Compiles the built package `package` under this harness's policy.
    pub fn compile(&self, package: &str) -> Result<SandboxPolicy, CorralError> {
        let package = Package::open(&package_dir(package))?;
        run::compile_package(&package, &self.policy, &self.rt)
    }

    /// Starts `package` as the daemon would (a PluginHost with restarts).
    pub async fn try_host(&mut self, package: &str) -> Result<Arc<PluginHost>, CorralError> {
        let policy = self.compile(package)?;
        self.try_host_with(policy).await
    }

    /// Starts a PluginHost for an already compiled (and maybe adjusted)
    /// policy.
    pub async fn try_host_with(
        &mut self,
        policy: SandboxPolicy,
    ) -> Result<Arc<PluginHost>, CorralError> {
        let host = PluginHost::start(self.rt.clone(), Arc::new(policy), b"{}".to_vec()).await?;
        self.hosts.push(host.clone());
        Ok(host)
    }

    /// [`Harness::try_host`], panicking with the start error.
    pub async fn host(&mut self, package: &str) -> Arc<PluginHost> {
        match self.try_host(package).await {
            Ok(host) => host,
            Err(e) => panic!("starting plugin {package}: {e:?}"),
        }
    }

    /// One bare child (no restarts), for tests of a single process.
    pub async fn child(&mut self, package: &str) -> Child {
        let policy = self
            .compile(package)
            .unwrap_or_else(|e| panic!("compiling {package}: {e:?}"));
        let spec = ChildSpec {
            plugin: policy.plugin.clone(),
            instance: 0,
            policy: Arc::new(policy),
            config: b"{}".to_vec(),
        };
        let child = Child::start(&self.rt, spec)
            .await
            .unwrap_or_else(|e| panic!("starting a child of {package}: {:?}", e.into_error()));
        self.children.push(child.clone());
        child
    }

    /// Pids of the live plugin processes this harness started.
    pub fn live_pids(&self) -> BTreeSet<i32> {
        self.hosts
            .iter()
            .flat_map(|h| h.children())
            .chain(self.children.iter().filter(|c| c.is_alive()).cloned())
            .map(|c| c.pid())
            .collect()
    }

    /// Leaf cgroup names under this harness's base (each once, whatever
    /// the number of hierarchies).
    pub fn cgroup_leaf_names(&self) -> BTreeSet<String> {
        cgroup_leaves(&self.base)
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect()
    }

    /// Mid-test leak check, after a death and restart: the only child
    /// processes and cgroups left are those of the live plugins (the dead
    /// ones were reaped and their cgroups removed).
    pub async fn assert_settled(&self) {
        let deadline = tokio::time::Instant::now() + CLEANUP_WAIT;
        loop {
            let live = self.live_pids();
            let children: BTreeSet<i32> = child_processes()
                .into_keys()
                .filter(|p| !self.baseline.children.contains(p))
                .collect();
            let cgroups = self.cgroup_leaf_names();
            if children == live && cgroups.len() == live.len() {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                let described: Vec<String> = child_processes()
                    .into_values()
                    .filter(|p| !self.baseline.children.contains(&p.pid))
                    .map(|p| p.to_string())
                    .collect();
                panic!(
                    "after {CLEANUP_WAIT:?}, more is left than the live plugins (pids {live:?}):\n  child processes: {described:?}\n  cgroups: {cgroups:?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops every plugin, then fails the test if anything the test made
    /// is left: an fd, a child process (zombies included), a process
    /// running as one of its uids, or a cgroup under its base. Removes the
    /// base directories.
    pub async fn finish(mut self) {
        for host in std::mem::take(&mut self.hosts) {
            host.stop(SHUTDOWN_GRACE).await;
        }
        for child in std::mem::take(&mut self.children) {
            child.shutdown(SHUTDOWN_GRACE).await;
        }
        let deadline = tokio::time::Instant::now() + CLEANUP_WAIT;
        let leaks = loop {
            let leaks = Leaks::find(&self.baseline, self.uids, &self.base);
            if leaks.is_empty() || tokio::time::Instant::now() >= deadline {
                break leaks;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        self.finished = true;
        self.remove_cgroups();
        assert!(
            leaks.is_empty(),
            "left behind after every plugin was stopped (waited {CLEANUP_WAIT:?}):\n{leaks}"
        );
        let bases: Vec<_> = cgroup_base_dirs(&self.base)
            .into_iter()
            .filter(|d| d.exists())
            .collect();
        assert!(
            bases.is_empty(),
            "the cgroup base directories could not be removed: {bases:?}"
        );
    }

    /// Removes whatever is under the base, then the base itself.
    fn remove_cgroups(&self) {
        let Some(driver) = &self.rt.cgroups else {
            return;
        };
        for name in driver.list().unwrap_or_default() {
            if let Err(e) = driver.remove_stale(&name) {
                eprintln!("cannot remove the leftover cgroup {name}: {e}");
            }
        }
        if let Err(e) = driver.remove_base() {
            eprintln!("cannot remove the cgroup base {}: {e}", driver.base());
        }
    }
}

impl Drop for Harness {
    /// A test that failed before `finish`: kill what it started so the
    /// next test and the machine start clean.
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let pids = self
            .hosts
            .iter()
            .flat_map(|h| h.children())
            .chain(self.children.iter().cloned())
            .map(|c| c.pid());
        for pid in pids {
            // SAFETY: kill(2) takes plain integers. The pid is our own
            // child's, not yet reaped (its monitor still holds its pidfd).
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        self.remove_cgroups();
    }
}
