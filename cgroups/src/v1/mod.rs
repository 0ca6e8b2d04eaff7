//! cgroup v1: one directory per controller hierarchy.
//!
//! A v1 cgroup is a set of same-named directories, one in each hierarchy
//! (memory, pids, cpu, cpuacct, freezer; cpu and cpuacct are often
//! co-mounted and then share a directory). A process is attached by
//! writing its pid into each; its children inherit all of them.

mod cpu;
mod freezer;
mod memory;
mod pids;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::cgroupfs;
use crate::detect::V1Plan;
use crate::error::{CgroupError, Resource};
use crate::kill::{self, KILL_TIMEOUT};
use crate::name::validate_name;
use crate::{Cgroup, CgroupDriver, Features, Limits, Stats, Version};

/// How long `kill_all` waits for `FROZEN` before it kills anyway.
const FREEZE_TIMEOUT: Duration = Duration::from_millis(500);

/// How long `remove_base` retries an EBUSY base (a leaf whose last task
/// is still exiting).
const BASE_REMOVE_TIMEOUT: Duration = Duration::from_millis(200);

pub(crate) fn unmounted(resource: Resource) -> CgroupError {
    CgroupError::Unsupported {
        resource,
        missing: format!(
            "no cgroup v1 {} hierarchy is mounted",
            match resource {
                Resource::Memory | Resource::Swap => "memory",
                Resource::Pids => "pids",
                Resource::Cpu => "cpu",
            }
        ),
    }
}

/// The same relative directory in each hierarchy (None: not mounted).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Hierarchies {
    memory: Option<PathBuf>,
    pids: Option<PathBuf>,
    cpu: Option<PathBuf>,
    cpuacct: Option<PathBuf>,
    freezer: Option<PathBuf>,
}

impl Hierarchies {
    fn map(&self, f: impl Fn(&Path) -> PathBuf) -> Hierarchies {
        Hierarchies {
            memory: self.memory.as_deref().map(&f),
            pids: self.pids.as_deref().map(&f),
            cpu: self.cpu.as_deref().map(&f),
            cpuacct: self.cpuacct.as_deref().map(&f),
            freezer: self.freezer.as_deref().map(&f),
        }
    }

    /// Each directory once (co-mounted controllers share one), memory
    /// first so a process is charged from the start, freezer last.
    fn distinct(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = Vec::with_capacity(5);
        for dir in [
            &self.memory,
            &self.pids,
            &self.cpu,
            &self.cpuacct,
            &self.freezer,
        ]
        .into_iter()
        .flatten()
        {
            if !dirs.contains(dir) {
                dirs.push(dir.clone());
            }
        }
        dirs
    }
}

/// The v1 driver: a base directory `<mount>/<base_name>` in every
/// hierarchy corral uses.
#[derive(Debug)]
pub struct V1Driver {
    base: Hierarchies,
    base_dirs: Vec<PathBuf>,
    features: Features,
}

impl V1Driver {
    /// Creates the base directory in each mounted hierarchy.
    pub fn new(plan: &V1Plan) -> Result<V1Driver, CgroupError> {
        validate_name(&plan.base_name)?;
        let mounts = Hierarchies {
            memory: plan.memory.clone(),
            pids: plan.pids.clone(),
            cpu: plan.cpu.clone(),
            cpuacct: plan.cpuacct.clone(),
            freezer: plan.freezer.clone(),
        };
        let base = mounts.map(|mount| mount.join(&plan.base_name));
        let base_dirs = base.distinct();
        if base_dirs.is_empty() {
            return Err(CgroupError::Detect(
                "the v1 plan names no hierarchy to use".to_string(),
            ));
        }
        for dir in &base_dirs {
            cgroupfs::mkdir(dir)?;
            inherit_cpuset(dir)?;
        }
        let features = Features {
            memory: base.memory.is_some(),
            swap: base
                .memory
                .as_ref()
                .is_some_and(|dir| dir.join(memory::MEMSW_LIMIT).exists()),
            pids: base.pids.is_some(),
            cpu: base
                .cpu
                .as_ref()
                .is_some_and(|dir| dir.join(cpu::QUOTA).exists()),
            cpu_usage: base
                .cpuacct
                .as_ref()
                .is_some_and(|dir| dir.join(cpu::USAGE).exists()),
            kill: false,
            memory_peak: base.memory.is_some(),
        };
        tracing::debug!(base = ?base_dirs, ?features, "cgroup v1 driver ready");
        Ok(V1Driver {
            base,
            base_dirs,
            features,
        })
    }

    fn leaf(&self, name: &str) -> V1Cgroup {
        let dirs = self.base.map(|base| base.join(name));
        V1Cgroup {
            name: name.to_string(),
            all: dirs.distinct(),
            dirs,
        }
    }
}

impl CgroupDriver for V1Driver {
    fn version(&self) -> Version {
        Version::V1
    }

    fn features(&self) -> Features {
        self.features
    }

    fn base(&self) -> String {
        self.base_dirs
            .iter()
            .map(|dir| dir.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn create(&self, name: &str) -> Result<Box<dyn Cgroup>, CgroupError> {
        validate_name(name)?;
        let cgroup = self.leaf(name);
        let mut created = Vec::new();
        let result = (|| {
            for dir in &cgroup.all {
                if cgroupfs::mkdir(dir)? {
                    created.push(dir.clone());
                    inherit_cpuset(dir)?;
                } else {
                    let pids = cgroupfs::read_pids(dir)?;
                    if !pids.is_empty() {
                        return Err(CgroupError::InUse {
                            path: dir.clone(),
                            pids,
                        });
                    }
                }
            }
            Ok(())
        })();
        if let Err(err) = result {
            // Leave nothing half-made behind; the error is the first one.
            let deadline = Instant::now();
            for dir in created.iter().rev() {
                if let Err(cleanup) = cgroupfs::rmdir(dir, deadline) {
                    tracing::warn!(%cleanup, "cleaning up a half-created cgroup");
                }
            }
            return Err(err);
        }
        tracing::debug!(dirs = ?cgroup.all, "created cgroup");
        Ok(Box::new(cgroup))
    }

    fn list(&self) -> Result<Vec<String>, CgroupError> {
        let mut names = Vec::new();
        for dir in &self.base_dirs {
            for name in cgroupfs::subdirectories(dir)? {
                if validate_name(&name).is_err() {
                    tracing::warn!(dir = %dir.display(), name, "ignoring a foreign cgroup under the base");
                } else if !names.contains(&name) {
                    names.push(name);
                }
            }
        }
        names.sort();
        Ok(names)
    }

    fn remove_stale(&self, name: &str) -> Result<(), CgroupError> {
        validate_name(name)?;
        self.leaf(name).remove()
    }

    fn remove_base(&self) -> Result<(), CgroupError> {
        let deadline = Instant::now() + BASE_REMOVE_TIMEOUT;
        for dir in &self.base_dirs {
            cgroupfs::rmdir(dir, deadline)?;
        }
        Ok(())
    }
}

/// One v1 cgroup: the leaf directory in each hierarchy.
#[derive(Debug)]
pub struct V1Cgroup {
    name: String,
    dirs: Hierarchies,
    /// `dirs`, each once.
    all: Vec<PathBuf>,
}

impl V1Cgroup {
    /// The directory whose `cgroup.procs` speaks for the cgroup: the
    /// freezer's, because that is the one `kill_all` freezes.
    fn primary(&self) -> &Path {
        self.dirs
            .freezer
            .as_deref()
            .or_else(|| self.all.first().map(PathBuf::as_path))
            .unwrap_or(Path::new("/"))
    }
}

impl Cgroup for V1Cgroup {
    fn name(&self) -> &str {
        &self.name
    }

    fn apply(&self, limits: &Limits) -> Result<(), CgroupError> {
        memory::apply(self.dirs.memory.as_deref(), limits)?;
        pids::apply(self.dirs.pids.as_deref(), limits.pids_max)?;
        cpu::apply(self.dirs.cpu.as_deref(), limits)
    }

    fn attach(&self, pid: u32) -> Result<(), CgroupError> {
        for dir in &self.all {
            cgroupfs::attach(dir, pid)?;
        }
        Ok(())
    }

    fn spawn_dir(&self) -> Option<&Path> {
        None
    }

    fn procs(&self) -> Result<Vec<u32>, CgroupError> {
        cgroupfs::read_pids(self.primary())
    }

    fn usage_probe(&self) -> crate::UsageProbe {
        crate::UsageProbe::v1(self.dirs.cpuacct.as_deref(), self.dirs.memory.as_deref())
    }

    fn stats(&self) -> Result<Stats, CgroupError> {
        let mut stats = Stats::default();
        if let Some(dir) = &self.dirs.memory {
            let memory = memory::stats(dir)?;
            stats.memory_current = memory.current;
            stats.memory_peak = memory.peak;
            stats.oom_kills = memory.oom_kills;
        }
        if let Some(dir) = &self.dirs.pids {
            (stats.pids_current, stats.pids_limit_hits) = pids::stats(dir)?;
        }
        if let Some(dir) = &self.dirs.cpuacct {
            stats.cpu_usage_us = cpu::usage_us(dir)?;
        }
        Ok(stats)
    }

    fn kill_all(&self) -> Result<(), CgroupError> {
        let started = Instant::now();
        let deadline = started + KILL_TIMEOUT;
        if let Some(freezer_dir) = &self.dirs.freezer {
            let pids = cgroupfs::read_pids_or_empty(freezer_dir)?;
            if !pids.is_empty() {
                // Before freezing: freezing ourselves would hang us.
                kill::refuse_self(freezer_dir, &pids)?;
                freezer::freeze(freezer_dir, (started + FREEZE_TIMEOUT).min(deadline))?;
                let killed = cgroupfs::read_pids_or_empty(freezer_dir)
                    .and_then(|pids| kill::sigkill_all(freezer_dir, &pids));
                // Thaw even if signalling failed: a frozen cgroup never
                // empties, and SIGKILL only takes effect once tasks run.
                let thawed = freezer::thaw(freezer_dir);
                killed?;
                thawed?;
            }
        }
        // Catch anything the freezer pass missed (no freezer hierarchy, a
        // fork before the freeze took hold, a process moved between
        // hierarchies) in every hierarchy.
        for dir in &self.all {
            kill::sigkill_until_empty(dir, started, deadline)?;
        }
        Ok(())
    }

    fn remove(&self) -> Result<(), CgroupError> {
        self.kill_all()?;
        let deadline = Instant::now() + KILL_TIMEOUT;
        for dir in &self.all {
            cgroupfs::rmdir(dir, deadline)?;
        }
        tracing::debug!(dirs = ?self.all, "removed cgroup");
        Ok(())
    }

    fn dirs(&self) -> Vec<PathBuf> {
        self.all.clone()
    }
}

/// A new cpuset cgroup starts with no CPUs and no memory nodes, and
/// refuses tasks until given some; when cpuset is co-mounted with a
/// controller corral uses, copy the parent's.
fn inherit_cpuset(dir: &Path) -> Result<(), CgroupError> {
    for file in ["cpuset.cpus", "cpuset.mems"] {
        let path = dir.join(file);
        let Some(current) = cgroupfs::read_optional(&path)? else {
            continue;
        };
        if !current.trim().is_empty() {
            continue;
        }
        let Some(parent) = dir.parent() else {
            continue;
        };
        let inherited = cgroupfs::read(&parent.join(file))?;
        cgroupfs::write(&path, inherited.trim())?;
    }
    Ok(())
}
