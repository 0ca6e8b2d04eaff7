//! v1 memory controller: `memory.limit_in_bytes`, swap as
//! `memory.memsw.limit_in_bytes` (memory + swap, present only when the
//! kernel accounts swap), peak, usage and OOM kills.

use std::path::Path;

use crate::Limits;
use crate::cgroupfs;
use crate::error::{CgroupError, Resource};

pub(super) const LIMIT: &str = "memory.limit_in_bytes";
pub(super) const MEMSW_LIMIT: &str = "memory.memsw.limit_in_bytes";
const USAGE: &str = "memory.usage_in_bytes";
const MAX_USAGE: &str = "memory.max_usage_in_bytes";
const OOM_CONTROL: &str = "memory.oom_control";

/// v1 spells "unlimited" as -1 on write.
const UNLIMITED: &str = "-1";

pub(super) fn apply(dir: Option<&Path>, limits: &Limits) -> Result<(), CgroupError> {
    let memsw_total = match (limits.memory_max, limits.swap_max) {
        (_, None) => None,
        (Some(memory), Some(swap)) => Some(memory.checked_add(swap).ok_or_else(|| {
            CgroupError::InvalidLimits(format!(
                "memory_max {memory} + swap_max {swap} overflows a 64-bit byte count"
            ))
        })?),
        (None, Some(_)) => {
            return Err(CgroupError::InvalidLimits(
                "swap_max needs memory_max on cgroup v1, which limits memory+swap together"
                    .to_string(),
            ));
        }
    };
    let Some(dir) = dir else {
        return match (limits.memory_max, memsw_total) {
            (None, None) => Ok(()),
            (Some(_), _) => Err(super::unmounted(Resource::Memory)),
            (None, Some(_)) => Err(super::unmounted(Resource::Swap)),
        };
    };
    let memsw = dir.join(MEMSW_LIMIT);
    let memsw_exists = memsw.exists();
    if memsw_total.is_some() && !memsw_exists {
        return Err(cgroupfs::unsupported_file(Resource::Swap, &memsw));
    }
    // The kernel keeps memory.limit <= memsw.limit at every step and
    // answers EINVAL otherwise; lifting memsw first makes any order of
    // old and new values valid.
    if memsw_exists {
        cgroupfs::write(&memsw, UNLIMITED)?;
    }
    let memory = limits
        .memory_max
        .map_or_else(|| UNLIMITED.to_string(), |bytes| bytes.to_string());
    cgroupfs::write_limit(Resource::Memory, &dir.join(LIMIT), &memory)?;
    if let Some(total) = memsw_total {
        cgroupfs::write(&memsw, &total.to_string())?;
    }
    Ok(())
}

pub(super) struct MemoryStats {
    pub current: u64,
    pub peak: u64,
    pub oom_kills: u64,
}

pub(super) fn stats(dir: &Path) -> Result<MemoryStats, CgroupError> {
    Ok(MemoryStats {
        current: cgroupfs::read_u64_or_zero(&dir.join(USAGE))?,
        peak: cgroupfs::read_u64_or_zero(&dir.join(MAX_USAGE))?,
        // `oom_kill` appeared in 4.13; older kernels only say `under_oom`.
        oom_kills: cgroupfs::read_flat_keyed_or_zero(&dir.join(OOM_CONTROL), "oom_kill")?,
    })
}
