//! v2 freezer (`cgroup.freeze`, 5.2+), used by `kill_all` only on kernels
//! without `cgroup.kill` (before 5.14): frozen tasks can neither fork nor
//! exit between our read of `cgroup.procs` and the SIGKILL.

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use crate::cgroupfs;
use crate::error::CgroupError;

const FREEZE: &str = "cgroup.freeze";
const EVENTS: &str = "cgroup.events";

/// Freezes and waits for `frozen 1` in `cgroup.events` until `deadline`.
/// Returns false when the kernel has no v2 freezer or the cgroup did not
/// settle in time; the caller kills anyway.
pub(super) fn freeze(dir: &Path, deadline: Instant) -> Result<bool, CgroupError> {
    let path = dir.join(FREEZE);
    if !path.exists() {
        return Ok(false);
    }
    cgroupfs::write(&path, "1")?;
    let events = dir.join(EVENTS);
    let mut pause = Duration::from_micros(50);
    loop {
        let content = cgroupfs::read(&events)?;
        if cgroupfs::parse_flat_keyed(&events, &content, "frozen")? == Some(1) {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(5));
    }
}

pub(super) fn thaw(dir: &Path) -> Result<(), CgroupError> {
    cgroupfs::write_reset(&dir.join(FREEZE), "0")
}
