//! What a test can leave behind, read from the kernel: open fds of this
//! process, its child processes (live or zombie), processes running as
//! the test's plugin uids, and leaf cgroups under the test's base.
//!
//! fd counts and child processes are process-wide, so tests that check
//! them run one at a time ([`crate::harness::Harness`] holds a lock).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The v1 hierarchies corral makes cgroups in.
pub const V1_CONTROLLERS: [&str; 5] = ["memory", "pids", "cpu", "cpuacct", "freezer"];
/// Where the v1 hierarchies are mounted on the machines corral tests on.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

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

/// One process as /proc shows it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ProcessInfo {
    pub pid: i32,
    pub ppid: i32,
    /// R, S, Z, ...
    pub state: char,
    pub comm: String,
    pub uid: Option<u32>,
}

impl std::fmt::Display for ProcessInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pid {} ({}) state {} ppid {} uid {}",
            self.pid,
            self.comm,
            self.state,
            self.ppid,
            self.uid
                .map(|u| u.to_string())
                .unwrap_or_else(|| "?".into())
        )
    }
}

fn process(pid: i32) -> Option<ProcessInfo> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_string();
    let mut rest = stat.get(close + 1..)?.split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    let uid = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
        });
    Some(ProcessInfo {
        pid,
        ppid,
        state,
        comm,
        uid,
    })
}

/// Every process on the machine (that is still there when read).
pub fn processes() -> Vec<ProcessInfo> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
        .filter_map(process)
        .collect()
}

/// Children of this process, zombies included.
pub fn child_processes() -> BTreeMap<i32, ProcessInfo> {
    let me = std::process::id() as i32;
    processes()
        .into_iter()
        .filter(|p| p.ppid == me)
        .map(|p| (p.pid, p))
        .collect()
}

/// Processes whose real uid is in `first..=last`.
pub fn processes_with_uids(first: u32, last: u32) -> Vec<ProcessInfo> {
    processes()
        .into_iter()
        .filter(|p| p.uid.is_some_and(|u| (first..=last).contains(&u)))
        .collect()
}

/// `<root>/<controller>/<base>` for each v1 hierarchy that is mounted.
pub fn cgroup_base_dirs(base: &str) -> Vec<PathBuf> {
    V1_CONTROLLERS
        .iter()
        .map(|c| Path::new(CGROUP_ROOT).join(c))
        .filter(|d| d.join("cgroup.procs").exists())
        .map(|d| d.join(base))
        .collect()
}

/// Leaf cgroups under `base`, in every hierarchy.
pub fn cgroup_leaves(base: &str) -> Vec<PathBuf> {
    let mut leaves = Vec::new();
    for dir in cgroup_base_dirs(base) {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                leaves.push(entry.path());
            }
        }
    }
    leaves.sort();
    leaves
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
