//! Emptying a cgroup: the bounded SIGKILL loop both drivers fall back to,
//! and the wait that follows `cgroup.kill`.
//!
//! Signalling pids read from `cgroup.procs` races with fork (a new child
//! appears after the read) and, in theory, with pid reuse (a listed process
//! exits and its pid is recycled before the signal). The drivers freeze
//! the cgroup first where they can, which closes both races: frozen tasks
//! neither fork nor exit. Without a freezer the loop below still converges
//! on fork races because it repeats until the list is empty.

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use crate::cgroupfs;
use crate::error::CgroupError;

/// How long `kill_all` waits for a cgroup to empty before giving up.
/// Generous: SIGKILL of a few hundred processes takes milliseconds, but an
/// emulated CPU or a task stuck in the kernel takes longer.
pub const KILL_TIMEOUT: Duration = Duration::from_secs(2);

/// Fails if the calling process is among `pids` of the cgroup at `dir`:
/// killing it would take the supervisor down, and the cgroup could never
/// become empty anyway.
pub(crate) fn refuse_self(dir: &Path, pids: &[u32]) -> Result<(), CgroupError> {
    let own = std::process::id();
    if pids.contains(&own) {
        return Err(CgroupError::ContainsSelf {
            path: dir.to_path_buf(),
            pid: own,
        });
    }
    Ok(())
}

/// Sends SIGKILL to every process in `pids`, which were read from `dir`.
pub(crate) fn sigkill_all(dir: &Path, pids: &[u32]) -> Result<(), CgroupError> {
    for &pid in pids {
        cgroupfs::sigkill(pid).map_err(|source| {
            CgroupError::io(format!("send SIGKILL to pid {pid} listed in"), dir, source)
        })?;
    }
    Ok(())
}

/// Repeats "read `cgroup.procs`, SIGKILL everything listed" until the
/// cgroup at `dir` is empty, or fails at `deadline`.
pub(crate) fn sigkill_until_empty(
    dir: &Path,
    started: Instant,
    deadline: Instant,
) -> Result<(), CgroupError> {
    poll_until_empty(dir, started, deadline, |pids| sigkill_all(dir, pids))
}

/// Waits, without signalling, until the cgroup at `dir` is empty (after a
/// `cgroup.kill`, the kernel does the signalling).
pub(crate) fn wait_until_empty(
    dir: &Path,
    started: Instant,
    deadline: Instant,
) -> Result<(), CgroupError> {
    poll_until_empty(dir, started, deadline, |_| Ok(()))
}

fn poll_until_empty(
    dir: &Path,
    started: Instant,
    deadline: Instant,
    mut on_remaining: impl FnMut(&[u32]) -> Result<(), CgroupError>,
) -> Result<(), CgroupError> {
    // Dying processes leave within microseconds on an idle machine; start
    // with short pauses and back off so a slow exit does not spin a core.
    let mut pause = Duration::from_micros(50);
    loop {
        let pids = cgroupfs::read_pids_or_empty(dir)?;
        if pids.is_empty() {
            return Ok(());
        }
        refuse_self(dir, &pids)?;
        if Instant::now() >= deadline {
            return Err(CgroupError::KillTimeout {
                path: dir.to_path_buf(),
                pids,
                waited: started.elapsed(),
            });
        }
        on_remaining(&pids)?;
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(10));
    }
}
