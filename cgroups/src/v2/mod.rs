//! cgroup v2: one unified hierarchy.
//!
//! Two kernel rules shape this driver:
//! - a controller works in a cgroup only if its parent lists it in
//!   `cgroup.subtree_control`, so controllers are enabled on the way down
//!   (our own cgroup, then the base);
//! - a non-root cgroup that holds processes cannot enable controllers for
//!   its children ("no internal processes", EBUSY). Under systemd's
//!   `Delegate=yes` the daemon's own cgroup holds the daemon, so
//!   [`V2Driver::prepare`] first moves it into a `supervisor` leaf.

mod cpu;
mod freezer;
mod memory;
mod pids;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::cgroupfs;
use crate::detect::V2Plan;
use crate::error::CgroupError;
use crate::kill::{self, KILL_TIMEOUT};
use crate::name::validate_name;
use crate::{Cgroup, CgroupDriver, Features, Limits, Stats, Version};

/// Controllers corral enables for its cgroups, in the order written.
const CONTROLLERS: [&str; 3] = ["memory", "pids", "cpu"];

const CONTROLLERS_FILE: &str = "cgroup.controllers";
const SUBTREE_CONTROL: &str = "cgroup.subtree_control";
const KILL_FILE: &str = "cgroup.kill";
const EVENTS_FILE: &str = "cgroup.events";
/// Present in every cgroup except the real root: tells a cgroup
/// namespace's root (which holds processes and obeys the no-internal-
/// processes rule) from the hierarchy's root (which is exempt).
const TYPE_FILE: &str = "cgroup.type";

/// How often `prepare` moves processes out and retries enabling
/// controllers when a process slipped in (fork) in between.
const VACATE_ATTEMPTS: u32 = 5;

/// How long `kill_all` waits for `frozen 1` before it kills anyway.
const FREEZE_TIMEOUT: Duration = Duration::from_millis(500);

/// How long `remove_base` retries an EBUSY base.
const BASE_REMOVE_TIMEOUT: Duration = Duration::from_millis(200);

/// The v2 driver: leaves under one base directory.
#[derive(Debug)]
pub struct V2Driver {
    base: PathBuf,
    features: Features,
}

impl V2Driver {
    /// Makes the hierarchy usable, then creates the base:
    ///
    /// 1. If our cgroup is not the hierarchy's root (a delegated
    ///    `/system.slice/corrald.service`, or the root of a cgroup
    ///    namespace), move every process in it, the daemon included, into
    ///    `<own>/supervisor`.
    /// 2. Enable `+memory +pids +cpu` (those the kernel offers) in
    ///    `<own>/cgroup.subtree_control`.
    /// 3. Create `<own>/<base_name>` and enable them there too, so every
    ///    leaf gets the controllers.
    ///
    /// Idempotent: a second call finds the daemon in the leaf and the
    /// controllers on.
    pub fn prepare(plan: &V2Plan) -> Result<V2Driver, CgroupError> {
        let vacate = plan.delegated || plan.own.join(TYPE_FILE).exists();
        if vacate {
            let leaf = plan.supervisor_leaf();
            let mut attempt = 1;
            loop {
                move_all_processes(&plan.own, &leaf)?;
                match enable_controllers(&plan.own) {
                    Ok(()) => break,
                    Err(err)
                        if err.raw_os_error() == Some(libc::EBUSY) && attempt < VACATE_ATTEMPTS =>
                    {
                        attempt += 1;
                    }
                    Err(err) => return Err(err),
                }
            }
            tracing::debug!(leaf = %leaf.display(), "moved the supervisor into its own leaf");
        } else {
            enable_controllers(&plan.own)?;
        }
        cgroupfs::mkdir(&plan.base)?;
        enable_controllers(&plan.base)?;
        let enabled =
            cgroupfs::parse_controller_list(&cgroupfs::read(&plan.base.join(SUBTREE_CONTROL))?);
        let on = |controller: &str| enabled.iter().any(|c| c == controller);
        let base = &plan.base;
        let features = Features {
            memory: on("memory"),
            swap: on("memory") && base.join(memory::SWAP_MAX).exists(),
            pids: on("pids"),
            cpu: on("cpu"),
            cpu_usage: base.join(cpu::STAT).exists(),
            kill: base.join(KILL_FILE).exists(),
            memory_peak: on("memory") && base.join(memory::PEAK).exists(),
        };
        tracing::debug!(base = %base.display(), ?features, "cgroup v2 driver ready");
        Ok(V2Driver {
            base: plan.base.clone(),
            features,
        })
    }

    fn leaf(&self, name: &str) -> V2Cgroup {
        V2Cgroup {
            name: name.to_string(),
            dir: self.base.join(name),
            peak_seen: AtomicU64::new(0),
        }
    }
}

/// Moves every process of the cgroup `from` into `to` (created if
/// needed). Processes that exit meanwhile are skipped.
fn move_all_processes(from: &Path, to: &Path) -> Result<(), CgroupError> {
    cgroupfs::mkdir(to)?;
    for pid in cgroupfs::read_pids(from)? {
        match cgroupfs::attach(to, pid) {
            Err(err) if err.raw_os_error() == Some(libc::ESRCH) => {}
            other => other?,
        }
    }
    Ok(())
}

/// Enables corral's controllers in `dir/cgroup.subtree_control`, those
/// `dir/cgroup.controllers` offers. Writes nothing when they are already
/// on, so a populated root or an already prepared cgroup is left alone.
fn enable_controllers(dir: &Path) -> Result<(), CgroupError> {
    let available = cgroupfs::parse_controller_list(&cgroupfs::read(&dir.join(CONTROLLERS_FILE))?);
    let control = dir.join(SUBTREE_CONTROL);
    let enabled = cgroupfs::parse_controller_list(&cgroupfs::read(&control)?);
    let wanted: Vec<&str> = CONTROLLERS
        .into_iter()
        .filter(|c| available.iter().any(|a| a == c))
        .collect();
    let missing: Vec<&str> = CONTROLLERS
        .into_iter()
        .filter(|c| !wanted.contains(c))
        .collect();
    if !missing.is_empty() {
        tracing::warn!(dir = %dir.display(), ?missing, "cgroup v2 controllers not available");
    }
    if wanted.iter().all(|c| enabled.iter().any(|e| e == c)) {
        return Ok(());
    }
    let value = wanted
        .iter()
        .map(|c| format!("+{c}"))
        .collect::<Vec<_>>()
        .join(" ");
    cgroupfs::write(&control, &value)
}

/// Waits for `populated 0` in `cgroup.events`. A killed process leaves
/// `cgroup.procs` as soon as it starts exiting; the cgroup counts as
/// populated until the exit is through, which is when "dead" is true.
fn wait_unpopulated(dir: &Path, started: Instant, deadline: Instant) -> Result<(), CgroupError> {
    let events = dir.join(EVENTS_FILE);
    let mut pause = Duration::from_micros(20);
    loop {
        let Some(content) = cgroupfs::read_optional(&events)? else {
            // Gone, or a kernel before 4.x: cgroup.procs was the best we had.
            return Ok(());
        };
        if cgroupfs::parse_flat_keyed(&events, &content, "populated")? != Some(1) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(CgroupError::KillTimeout {
                path: dir.to_path_buf(),
                pids: cgroupfs::read_pids_or_empty(dir)?,
                waited: started.elapsed(),
            });
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(5));
    }
}

impl CgroupDriver for V2Driver {
    fn version(&self) -> Version {
        Version::V2
    }

    fn features(&self) -> Features {
        self.features
    }

    fn base(&self) -> String {
        self.base.display().to_string()
    }

    fn create(&self, name: &str) -> Result<Box<dyn Cgroup>, CgroupError> {
        validate_name(name)?;
        let cgroup = self.leaf(name);
        if !cgroupfs::mkdir(&cgroup.dir)? {
            let pids = cgroupfs::read_pids(&cgroup.dir)?;
            if !pids.is_empty() {
                return Err(CgroupError::InUse {
                    path: cgroup.dir,
                    pids,
                });
            }
        }
        tracing::debug!(dir = %cgroup.dir.display(), "created cgroup");
        Ok(Box::new(cgroup))
    }

    fn list(&self) -> Result<Vec<String>, CgroupError> {
        let mut names = cgroupfs::subdirectories(&self.base)?;
        names.retain(|name| {
            let valid = validate_name(name).is_ok();
            if !valid {
                tracing::warn!(base = %self.base.display(), name, "ignoring a foreign cgroup under the base");
            }
            valid
        });
        Ok(names)
    }

    fn remove_stale(&self, name: &str) -> Result<(), CgroupError> {
        validate_name(name)?;
        self.leaf(name).remove()
    }

    fn remove_base(&self) -> Result<(), CgroupError> {
        cgroupfs::rmdir(&self.base, Instant::now() + BASE_REMOVE_TIMEOUT)
    }
}

/// One v2 cgroup: a directory under the base.
#[derive(Debug)]
pub struct V2Cgroup {
    name: String,
    dir: PathBuf,
    /// Highest `memory.current` seen by `stats`, the peak on kernels
    /// without `memory.peak`.
    peak_seen: AtomicU64,
}

impl Cgroup for V2Cgroup {
    fn name(&self) -> &str {
        &self.name
    }

    fn apply(&self, limits: &Limits) -> Result<(), CgroupError> {
        memory::apply(&self.dir, limits)?;
        pids::apply(&self.dir, limits.pids_max)?;
        cpu::apply(&self.dir, limits)
    }

    fn attach(&self, pid: u32) -> Result<(), CgroupError> {
        cgroupfs::attach(&self.dir, pid)
    }

    fn spawn_dir(&self) -> Option<&Path> {
        Some(&self.dir)
    }

    fn procs(&self) -> Result<Vec<u32>, CgroupError> {
        cgroupfs::read_pids(&self.dir)
    }

    fn usage_probe(&self) -> crate::UsageProbe {
        crate::UsageProbe::v2(&self.dir)
    }

    fn stats(&self) -> Result<Stats, CgroupError> {
        let memory = memory::stats(&self.dir)?;
        let seen = self
            .peak_seen
            .fetch_max(memory.current, Ordering::Relaxed)
            .max(memory.current);
        let (pids_current, pids_limit_hits) = pids::stats(&self.dir)?;
        Ok(Stats {
            memory_current: memory.current,
            memory_peak: memory.peak.unwrap_or(seen),
            oom_kills: memory.oom_kills,
            pids_current,
            pids_limit_hits,
            cpu_usage_us: cpu::usage_us(&self.dir)?,
        })
    }

    fn kill_all(&self) -> Result<(), CgroupError> {
        let started = Instant::now();
        let deadline = started + KILL_TIMEOUT;
        let pids = cgroupfs::read_pids_or_empty(&self.dir)?;
        if pids.is_empty() {
            return Ok(());
        }
        kill::refuse_self(&self.dir, &pids)?;
        match cgroupfs::write(&self.dir.join(KILL_FILE), "1") {
            Ok(()) => {
                kill::wait_until_empty(&self.dir, started, deadline)?;
                return wait_unpopulated(&self.dir, started, deadline);
            }
            Err(CgroupError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(err),
        }
        // Before 5.14: freeze if we can, signal, thaw, repeat until empty.
        freezer::freeze(&self.dir, (started + FREEZE_TIMEOUT).min(deadline))?;
        let killed = cgroupfs::read_pids_or_empty(&self.dir)
            .and_then(|pids| kill::sigkill_all(&self.dir, &pids));
        let thawed = freezer::thaw(&self.dir);
        killed?;
        thawed?;
        kill::sigkill_until_empty(&self.dir, started, deadline)?;
        wait_unpopulated(&self.dir, started, deadline)
    }

    fn remove(&self) -> Result<(), CgroupError> {
        self.kill_all()?;
        cgroupfs::rmdir(&self.dir, Instant::now() + KILL_TIMEOUT)?;
        tracing::debug!(dir = %self.dir.display(), "removed cgroup");
        Ok(())
    }

    fn dirs(&self) -> Vec<PathBuf> {
        vec![self.dir.clone()]
    }
}
