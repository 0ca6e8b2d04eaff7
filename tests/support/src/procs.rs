//! Processes as /proc shows them, for finding what a test left running.

use std::collections::BTreeMap;

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

impl ProcessInfo {
    /// A zombie runs no code and holds nothing but its pid.
    pub fn is_zombie(&self) -> bool {
        self.state == 'Z' || self.state == 'X'
    }
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

/// The process `pid`, if it is still there.
pub fn process(pid: i32) -> Option<ProcessInfo> {
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

/// Processes whose real uid is in `first..=last`, zombies included.
pub fn processes_with_uids(first: u32, last: u32) -> Vec<ProcessInfo> {
    processes()
        .into_iter()
        .filter(|p| p.uid.is_some_and(|u| (first..=last).contains(&u)))
        .collect()
}

/// Live (not zombie) processes whose real uid is in `first..=last`.
pub fn live_processes_with_uids(first: u32, last: u32) -> Vec<ProcessInfo> {
    processes_with_uids(first, last)
        .into_iter()
        .filter(|p| !p.is_zombie())
        .collect()
}

/// Whether `pid` is a running (not zombie) process.
pub fn is_alive(pid: i32) -> bool {
    process(pid).is_some_and(|p| !p.is_zombie())
}

/// SIGKILLs every live process in the uid range (cleanup after a failed
/// test).
pub fn kill_uid_range(first: u32, last: u32) {
    for p in live_processes_with_uids(first, last) {
        // SAFETY: kill has no memory effects; the pid may be gone already.
        unsafe { libc::kill(p.pid, libc::SIGKILL) };
    }
}
