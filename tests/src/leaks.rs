//! What a test can leave behind, read from the kernel: open fds of this
//! process, its child processes (live or zombie), processes running as
//! the test's plugin uids, and leaf cgroups under the test's base.
//!
//! fd counts and child processes are process-wide, so tests that check
//! them run one at a time ([`crate::harness::Harness`] holds a lock).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

pub use corral_test_support::cgroups::{CGROUP_ROOT, cgroup_base_dirs, cgroup_leaves};
pub use corral_test_support::procs::{
    ProcessInfo, child_processes, processes, processes_with_uids,
};

/// This process's open fds and what they point at (the fd used to list
/// them left out).
pub fn open_fds() -> BTreeMap<i32, String> {
    let dir = format!("/proc/{}/fd", std::process::id());
    let mut fds = BTreeMap::new();
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("listing {dir}: {e}"));
    for entry in entries.flatten() {
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let target = std::fs::read_link(entry.path())
            .map(|t| t.display().to_string())
            .unwrap_or_else(|e| format!("(readlink: {e})"));
        // The directory being listed, and an fd closed while listing.
        if target == dir || target.starts_with("(readlink") {
            continue;
        }
        fds.insert(fd, target);
    }
    fds
}

/// What a test started from, to compare the end with.
#[derive(Debug, Clone)]
pub struct Baseline {
    pub fds: BTreeMap<i32, String>,
    pub children: BTreeSet<i32>,
}

impl Baseline {
    pub fn take() -> Baseline {
        Baseline {
            fds: open_fds(),
            children: child_processes().into_keys().collect(),
        }
    }
}

/// What a test's resources look like now, against its baseline.
#[derive(Debug, Default)]
pub struct Leaks {
    pub new_fds: Vec<(i32, String)>,
    pub closed_fds: Vec<(i32, String)>,
    pub children: Vec<ProcessInfo>,
    pub uid_processes: Vec<ProcessInfo>,
    pub cgroups: Vec<PathBuf>,
}

impl Leaks {
    /// Compares now with `baseline` for a test whose plugins ran under
    /// `uids` and made cgroups under `cgroup_base`.
    pub fn find(baseline: &Baseline, uids: (u32, u32), cgroup_base: &str) -> Leaks {
        let fds = open_fds();
        Leaks {
            new_fds: fds
                .iter()
                .filter(|(fd, target)| baseline.fds.get(fd) != Some(target))
                .map(|(fd, t)| (*fd, t.clone()))
                .collect(),
            // An fd the test opened before the baseline and closed since
            // changes the count too; listed so the message explains it.
            closed_fds: baseline
                .fds
                .iter()
                .filter(|(fd, _)| !fds.contains_key(fd))
                .map(|(fd, t)| (*fd, t.clone()))
                .collect(),
            children: child_processes()
                .into_values()
                .filter(|p| !baseline.children.contains(&p.pid))
                .collect(),
            uid_processes: processes_with_uids(uids.0, uids.1),
            cgroups: cgroup_leaves(cgroup_base),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.new_fds.is_empty()
            && self.closed_fds.is_empty()
            && self.children.is_empty()
            && self.uid_processes.is_empty()
            && self.cgroups.is_empty()
    }
}

impl std::fmt::Display for Leaks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (fd, target) in &self.new_fds {
            writeln!(f, "  fd {fd} -> {target} is open and was not before")?;
        }
        for (fd, target) in &self.closed_fds {
            writeln!(
                f,
                "  fd {fd} -> {target} was open at the start and is closed now"
            )?;
        }
        for p in &self.children {
            writeln!(f, "  child process left: {p}")?;
        }
        for p in &self.uid_processes {
            writeln!(f, "  process running as a plugin uid: {p}")?;
        }
        for c in &self.cgroups {
            writeln!(f, "  cgroup left: {}", c.display())?;
        }
        Ok(())
    }
}
