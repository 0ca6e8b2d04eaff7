//! v2 cpu controller: bandwidth in `cpu.max` (`"<quota> <period>"`, or
//! `"max <period>"` for no limit) and usage from `cpu.stat`, which exists
//! in every non-root cgroup even without the cpu controller.

use std::path::Path;

use crate::Limits;
use crate::cgroupfs;
use crate::error::{CgroupError, Resource};

const MAX: &str = "cpu.max";
pub(super) const STAT: &str = "cpu.stat";

pub(super) fn apply(dir: &Path, limits: &Limits) -> Result<(), CgroupError> {
    let path = dir.join(MAX);
    match limits.cpu_bandwidth()? {
        Some((quota, period)) => {
            cgroupfs::write_limit(Resource::Cpu, &path, &format!("{quota} {period}"))
        }
        None => cgroupfs::write_reset(&path, &format!("max {}", limits.cpu_period()?)),
    }
}

/// CPU time used, microseconds.
pub(super) fn usage_us(dir: &Path) -> Result<u64, CgroupError> {
    cgroupfs::read_flat_keyed_or_zero(&dir.join(STAT), "usage_usec")
}
