//! cgroup v1 and v2 drivers behind one trait.
//!
//! corral puts every plugin instance in a cgroup of its own to cap its
//! memory (and swap), number of tasks and CPU time, to read what it used,
//! and to kill it together with everything it forked. This crate drives
//! cgroupfs directly (it is files) instead of going through a library
//! that hard-wires the v2 root to `/sys/fs/cgroup`: the daemon must work
//! inside a systemd-delegated subtree and the tests must be able to root a
//! driver at a temporary directory.
//!
//! Start with [`detect`], which reads `/proc/self/mountinfo` and
//! `/proc/self/cgroup`, decides (with the pure [`plan`]) which hierarchy
//! to use and where, and prepares it (see [`V2Driver::prepare`] for what
//! that means under systemd's `Delegate=yes`). Then [`CgroupDriver::create`]
//! makes one leaf per plugin instance.
//!
//! Layout, v1: `<mount of each controller>/<base_name>/<leaf>` in each of
//! the memory, pids, cpu, cpuacct and freezer hierarchies.
//! Layout, v2: `<base>/<leaf>`, where base is `<mount>/<base_name>` when
//! we run in the root cgroup, and `<own cgroup>/<base_name>` inside a
//! delegated subtree, with the daemon itself moved to
//! `<own cgroup>/supervisor`.

mod cgroupfs;
mod detect;
mod error;
mod kill;
mod name;
mod usage;
pub mod v1;
pub mod v2;

use std::fmt;
use std::path::PathBuf;

pub use detect::{Plan, V1Plan, V2Plan, favors_dynamic_changes, plan};
pub use error::{CgroupError, Resource};
pub use kill::KILL_TIMEOUT;
pub use name::validate_name;
pub use usage::{Usage, UsageProbe};
pub use v1::V1Driver;
pub use v2::V2Driver;

/// Default name of the directory under which corral makes its cgroups.
pub const DEFAULT_BASE_NAME: &str = "corral";

/// CFS period used when a quota is given with `cpu_period_us == 0`; the
/// kernel's own default.
pub const DEFAULT_CPU_PERIOD_US: u64 = 100_000;

/// Which cgroup hierarchy a driver uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Version {
    V1,
    V2,
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Version::V1 => "v1",
            Version::V2 => "v2",
        })
    }
}

/// Which hierarchy [`detect`] should pick.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum VersionChoice {
    /// v1 when any of corral's controllers is mounted as v1 (including
    /// systemd's "hybrid" layout, whose v2 mount then has no controllers),
    /// otherwise v2.
    #[default]
    Auto,
    V1,
    V2,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DetectOptions {
    pub version: VersionChoice,
    /// Directory name under which corral's cgroups live (validated like a
    /// leaf name).
    pub base_name: String,
    /// Use this directory as the cgroup v2 mount instead of the one in
    /// mountinfo (implies v2 under [`VersionChoice::Auto`]). Lets tests
    /// root the v2 driver at a temporary directory, or at a hierarchy
    /// mounted somewhere unusual.
    pub v2_root_override: Option<PathBuf>,
}

impl Default for DetectOptions {
    fn default() -> Self {
        DetectOptions {
            version: VersionChoice::Auto,
            base_name: DEFAULT_BASE_NAME.to_string(),
            v2_root_override: None,
        }
    }
}

/// Limits for one cgroup. `None` means unlimited; [`Cgroup::apply`] sets
/// every field, so applying `Limits::default()` lifts all limits.
#[derive(Default, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of memory (RAM) the cgroup may use.
    pub memory_max: Option<u64>,
    /// Bytes of swap on top of `memory_max`; `Some(0)` forbids swapping.
    /// On v1, where swap is limited as memory+swap, it needs `memory_max`.
    pub swap_max: Option<u64>,
    /// Tasks (processes and threads) alive at once.
    pub pids_max: Option<u64>,
    /// CPU time per period, microseconds.
    pub cpu_quota_us: Option<u64>,
    /// CFS period, microseconds; 0 means [`DEFAULT_CPU_PERIOD_US`].
    pub cpu_period_us: u64,
}

impl Limits {
    /// The same limits with `resource` unlimited: what a caller applies
    /// after [`CgroupError::Unsupported`] for a `best_effort` resource.
    pub fn without(mut self, resource: Resource) -> Limits {
        match resource {
            Resource::Memory => self.memory_max = None,
            Resource::Swap => self.swap_max = None,
            Resource::Pids => self.pids_max = None,
            Resource::Cpu => self.cpu_quota_us = None,
        }
        self
    }

    /// The CFS period to use, checked against what the kernel accepts.
    pub(crate) fn cpu_period(&self) -> Result<u64, CgroupError> {
        let period = if self.cpu_period_us == 0 {
            DEFAULT_CPU_PERIOD_US
        } else {
            self.cpu_period_us
        };
        if !(1_000..=1_000_000).contains(&period) {
            return Err(CgroupError::InvalidLimits(format!(
                "cpu_period_us {period} is outside 1000..=1000000"
            )));
        }
        Ok(period)
    }

    /// `(quota, period)` ready for the kernel, checked against the ranges
    /// the kernel accepts (period 1 ms to 1 s, quota at least 1 ms), so a
    /// bad policy fails with a message instead of a bare EINVAL.
    pub(crate) fn cpu_bandwidth(&self) -> Result<Option<(u64, u64)>, CgroupError> {
        let period = self.cpu_period()?;
        let Some(quota) = self.cpu_quota_us else {
            return Ok(None);
        };
        if quota < 1_000 {
            return Err(CgroupError::InvalidLimits(format!(
                "cpu_quota_us {quota} is below the kernel's minimum of 1000"
            )));
        }
        Ok(Some((quota, period)))
    }
}

/// What a cgroup used. Counters of a controller that is not available
/// read as 0; check [`CgroupDriver::features`] to tell "zero" from
/// "unknown".
#[derive(Default, Clone, Copy, Debug)]
pub struct Stats {
    pub memory_current: u64,
    /// Highest `memory_current`. v1 and v2 ≥ 5.19 report the kernel's
    /// peak; older v2 kernels report the highest value seen by `stats`.
    pub memory_peak: u64,
    /// Processes killed by the OOM killer inside this cgroup.
    pub oom_kills: u64,
    pub pids_current: u64,
    /// Forks refused because of `pids_max`.
    pub pids_limit_hits: u64,
    /// CPU time used, microseconds.
    pub cpu_usage_us: u64,
}

/// What the kernel offers here, known once the driver is set up.
#[derive(Default, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Features {
    pub memory: bool,
    pub swap: bool,
    pub pids: bool,
    pub cpu: bool,
    pub cpu_usage: bool,
    /// `cgroup.kill` (v2, Linux 5.14+): the kernel kills a whole cgroup
    /// atomically. Without it `kill_all` freezes and signals in a loop.
    pub kill: bool,
    /// The kernel tracks peak memory (v1; v2 with `memory.peak`, 5.19+).
    pub memory_peak: bool,
}

impl Features {
    /// Whether limits on `resource` can be applied.
    pub fn supports(&self, resource: Resource) -> bool {
        match resource {
            Resource::Memory => self.memory,
            Resource::Swap => self.swap,
            Resource::Pids => self.pids,
            Resource::Cpu => self.cpu,
        }
    }
}

/// One prepared hierarchy (v1 or v2) and the base directory corral owns in
/// it.
pub trait CgroupDriver: Send + Sync + fmt::Debug {
    fn version(&self) -> Version;
    fn features(&self) -> Features;
    /// The base directory (or directories, v1), for logs.
    fn base(&self) -> String;
    /// Creates the leaf `name` under the base ([`validate_name`] rules). An
    /// existing empty leaf (left by a crash) is reused; one that still
    /// holds processes is [`CgroupError::InUse`].
    fn create(&self, name: &str) -> Result<Box<dyn Cgroup>, CgroupError>;
    /// Leaf names present under the base, e.g. stale ones after a crash.
    fn list(&self) -> Result<Vec<String>, CgroupError>;
    /// Kills whatever is inside the leaf `name` and removes it.
    fn remove_stale(&self, name: &str) -> Result<(), CgroupError>;
    /// Removes the base directories; fails while leaves remain.
    fn remove_base(&self) -> Result<(), CgroupError>;
}

/// One leaf cgroup. Dropping the handle leaves the cgroup in place (the
/// owner decides when it goes, with [`Cgroup::remove`]).
pub trait Cgroup: Send + Sync + fmt::Debug {
    fn name(&self) -> &str;
    /// Sets every limit in `limits` (None lifts it). Resources are set in
    /// the order memory, swap, pids, cpu; the first one whose controller
    /// or interface file is missing stops with
    /// [`CgroupError::Unsupported`] naming it, and applying again (with
    /// [`Limits::without`] for a best-effort resource) is always safe.
    fn apply(&self, limits: &Limits) -> Result<(), CgroupError>;
    /// Moves the process `pid` (all its threads) into this cgroup.
    ///
    /// A write to `cgroup.procs` takes the kernel's threadgroup lock for
    /// writing, which first waits for an RCU grace period unless a
    /// hierarchy is mounted with `favordynmods` (~10 ms on a quiet 2-CPU
    /// host): where [`Cgroup::spawn_dir`] offers one, starting the process
    /// inside the cgroup avoids both the wait and the move.
    fn attach(&self, pid: u32) -> Result<(), CgroupError>;
    /// The directory a process can be created in directly, with
    /// `clone3(CLONE_INTO_CGROUP)` and a descriptor of it: v2 only (a v1
    /// cgroup is one directory per hierarchy).
    fn spawn_dir(&self) -> Option<&std::path::Path>;
    /// Processes (thread-group ids) inside.
    fn procs(&self) -> Result<Vec<u32>, CgroupError>;
    fn stats(&self) -> Result<Stats, CgroupError>;
    /// Kills every process inside; when it returns Ok the cgroup is empty.
    /// Waits at most [`KILL_TIMEOUT`], then fails with
    /// [`CgroupError::KillTimeout`]. Refuses ([`CgroupError::ContainsSelf`])
    /// if the calling process is inside.
    fn kill_all(&self) -> Result<(), CgroupError>;
    /// `kill_all`, then removes the directory in every hierarchy.
    /// Idempotent: a cgroup that is already gone is fine.
    fn remove(&self) -> Result<(), CgroupError>;
    /// Files held open for reading CPU time and peak memory cheaply, once
    /// per batch of call replies.
    fn usage_probe(&self) -> UsageProbe;
    /// The cgroup's directory in each hierarchy (one on v2). For placing a
    /// process from its own side (write `0` to `cgroup.procs`) or for
    /// `clone3(CLONE_INTO_CGROUP)` with a directory fd on v2.
    fn dirs(&self) -> Vec<PathBuf>;
}

/// Reads `/proc/self/mountinfo` and `/proc/self/cgroup`, decides with
/// [`plan`], and sets the hierarchy up with [`from_plan`].
///
/// On v2 this may move the calling process (see [`V2Driver::prepare`]), so
/// call it once, early, in the daemon.
pub fn detect(options: &DetectOptions) -> Result<Box<dyn CgroupDriver>, CgroupError> {
    let read = |path: &str| {
        std::fs::read_to_string(path).map_err(|source| CgroupError::io("read", path, source))
    };
    let mountinfo = read("/proc/self/mountinfo")?;
    let proc_self_cgroup = read("/proc/self/cgroup")?;
    let plan = plan(&mountinfo, &proc_self_cgroup, options)?;
    tracing::debug!(?plan, "cgroup plan");
    from_plan(&plan)
}

/// Sets up the driver a [`Plan`] describes: creates the base directories
/// and, on v2, enables controllers on the way down (and moves the process
/// out of a delegated cgroup first).
pub fn from_plan(plan: &Plan) -> Result<Box<dyn CgroupDriver>, CgroupError> {
    Ok(match plan {
        Plan::V1(plan) => Box::new(V1Driver::new(plan)?),
        Plan::V2(plan) => Box::new(V2Driver::prepare(plan)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_bandwidth_defaults_the_period_and_checks_ranges() {
        let limits = Limits {
            cpu_quota_us: Some(50_000),
            ..Limits::default()
        };
        assert_eq!(limits.cpu_bandwidth().ok(), Some(Some((50_000, 100_000))));
        let limits = Limits {
            cpu_quota_us: Some(500),
            cpu_period_us: 10_000,
            ..Limits::default()
        };
        let err = limits.cpu_bandwidth().expect_err("quota below 1 ms");
        assert!(err.to_string().contains("cpu_quota_us 500"), "{err}");
        let limits = Limits {
            cpu_quota_us: Some(5_000),
            cpu_period_us: 2_000_000,
            ..Limits::default()
        };
        let err = limits.cpu_bandwidth().expect_err("period above 1 s");
        assert!(err.to_string().contains("cpu_period_us 2000000"), "{err}");
        assert_eq!(Limits::default().cpu_bandwidth().ok(), Some(None));
    }

    #[test]
    fn without_lifts_only_the_named_resource() {
        let limits = Limits {
            memory_max: Some(1),
            swap_max: Some(2),
            pids_max: Some(3),
            cpu_quota_us: Some(4),
            cpu_period_us: 5,
        };
        assert_eq!(limits.without(Resource::Swap).swap_max, None);
        assert_eq!(limits.without(Resource::Swap).memory_max, Some(1));
        assert_eq!(limits.without(Resource::Memory).memory_max, None);
        assert_eq!(limits.without(Resource::Pids).pids_max, None);
        assert_eq!(limits.without(Resource::Cpu).cpu_quota_us, None);
        assert_eq!(limits.without(Resource::Cpu).cpu_period_us, 5);
    }
}
