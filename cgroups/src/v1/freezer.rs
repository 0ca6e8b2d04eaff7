//! v1 freezer: stop every task of the cgroup before signalling, so none
//! can fork a new child or exit (and free its pid) between our read of
//! `cgroup.procs` and the SIGKILL.

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use crate::cgroupfs;
use crate::error::CgroupError;

const STATE: &str = "freezer.state";

/// Asks the kernel to freeze the cgroup at `dir` and waits until it
/// reports `FROZEN`. Returns false if that did not happen by `deadline`
/// (a task in uninterruptible sleep keeps the cgroup `FREEZING`); the
/// caller kills anyway, frozen or not.
pub(super) fn freeze(dir: &Path, deadline: Instant) -> Result<bool, CgroupError> {
    let path = dir.join(STATE);
    cgroupfs::write(&path, "FROZEN")?;
    let mut pause = Duration::from_micros(50);
    loop {
        if cgroupfs::read(&path)?.trim() == "FROZEN" {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            tracing::debug!(path = %path.display(), "cgroup did not reach FROZEN in time");
            return Ok(false);
        }
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(5));
    }
}

/// Thaws the cgroup: killed tasks only die once they run again.
pub(super) fn thaw(dir: &Path) -> Result<(), CgroupError> {
    cgroupfs::write(&dir.join(STATE), "THAWED")
}
