//! What a daemon can leave behind, read from the kernel: processes in its
//! plugins' uid range, processes whose parent it is, and leaf cgroups
//! under its cgroup base (in every mounted hierarchy, v1 and v2).

use std::path::{Path, PathBuf};

pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// One process as /proc shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessInfo {
    pub pid: i32,
    pub ppid: i32,
    /// R, S, Z, ...
    pub state: char,
    pub comm: String,
    pub uid: Option<u32>,
}

impl ProcessInfo {
    /// A zombie runs no code and holds nothing but its pid; whether it is
    /// reaped is up to whoever inherited it (pid 1 here), not corrald.
    pub fn is_zombie(&self) -> bool {
        self.state == 'Z' || self.state == 'X'
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

/// Live (not zombie) processes whose real uid is in `first..=last`.
pub fn live_processes_with_uids(first: u32, last: u32) -> Vec<ProcessInfo> {
    processes()
        .into_iter()
        .filter(|p| p.uid.is_some_and(|u| (first..=last).contains(&u)) && !p.is_zombie())
        .collect()
}

/// Whether `pid` is a running (not zombie) process.
pub fn is_alive(pid: i32) -> bool {
    process(pid).is_some_and(|p| !p.is_zombie())
}

/// `<hierarchy>/<base>` for every mounted hierarchy that has it.
pub fn cgroup_base_dirs(base: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(CGROUP_ROOT) else {
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path().join(base))
        .filter(|d| d.is_dir())
        .collect();
    dirs.sort();
    dirs
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

/// Leaf names (without the hierarchy), deduplicated.
pub fn cgroup_leaf_names(base: &str) -> Vec<String> {
    let mut names: Vec<String> = cgroup_leaves(base)
        .iter()
        .filter_map(|p| p.file_name().and_then(|n| n.to_str()).map(str::to_string))
        .collect();
    names.sort();
    names.dedup();
    names
}

/// SIGKILLs every live process in the uid range (cleanup after a failed
/// test).
pub fn kill_uid_range(first: u32, last: u32) {
    for p in live_processes_with_uids(first, last) {
        // SAFETY: kill has no memory effects; the pid may be gone already.
        unsafe { libc::kill(p.pid, libc::SIGKILL) };
    }
}

/// Kills what is in each leaf, removes the leaves and the base (cleanup
/// after a test, passing or not).
pub fn remove_cgroup_base(base: &str) {
    for leaf in cgroup_leaves(base) {
        kill_cgroup(&leaf);
    }
    for _ in 0..50 {
        let leaves = cgroup_leaves(base);
        let mut left = false;
        for leaf in &leaves {
            left |= std::fs::remove_dir(leaf).is_err();
        }
        if !left {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    for dir in cgroup_base_dirs(base) {
        let _ = std::fs::remove_dir(dir);
    }
}

fn kill_cgroup(leaf: &Path) {
    let Ok(procs) = std::fs::read_to_string(leaf.join("cgroup.procs")) else {
        return;
    };
    for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}
