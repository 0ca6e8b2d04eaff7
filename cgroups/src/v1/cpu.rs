//! v1 cpu (CFS bandwidth: `cpu.cfs_period_us`, `cpu.cfs_quota_us`) and
//! cpuacct (`cpuacct.usage`, nanoseconds) controllers.

use std::path::Path;

use crate::Limits;
use crate::cgroupfs;
use crate::error::{CgroupError, Resource};

pub(super) const QUOTA: &str = "cpu.cfs_quota_us";
const PERIOD: &str = "cpu.cfs_period_us";
pub(super) const USAGE: &str = "cpuacct.usage";

pub(super) fn apply(dir: Option<&Path>, limits: &Limits) -> Result<(), CgroupError> {
    let bandwidth = limits.cpu_bandwidth()?;
    let Some(dir) = dir else {
        return match bandwidth {
            None => Ok(()),
            Some(_) => Err(super::unmounted(Resource::Cpu)),
        };
    };
    match bandwidth {
        Some((quota, period)) => {
            cgroupfs::write_limit(Resource::Cpu, &dir.join(PERIOD), &period.to_string())?;
            cgroupfs::write_limit(Resource::Cpu, &dir.join(QUOTA), &quota.to_string())
        }
        None => cgroupfs::write_limit(Resource::Cpu, &dir.join(QUOTA), "-1"),
    }
}

/// CPU time used, microseconds.
pub(super) fn usage_us(cpuacct_dir: &Path) -> Result<u64, CgroupError> {
    Ok(cgroupfs::read_u64_or_zero(&cpuacct_dir.join(USAGE))? / 1_000)
}
