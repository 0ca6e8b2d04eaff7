//! v2 memory controller: `memory.max`, `memory.swap.max`,
//! `memory.oom.group`, and usage, peak and OOM kills.

use std::path::Path;

use crate::Limits;
use crate::cgroupfs;
use crate::error::{CgroupError, Resource};

const MAX: &str = "memory.max";
pub(super) const SWAP_MAX: &str = "memory.swap.max";
const OOM_GROUP: &str = "memory.oom.group";
const CURRENT: &str = "memory.current";
pub(super) const PEAK: &str = "memory.peak";
const EVENTS: &str = "memory.events";

pub(super) fn apply(dir: &Path, limits: &Limits) -> Result<(), CgroupError> {
    let max = dir.join(MAX);
    match limits.memory_max {
        Some(bytes) => cgroupfs::write_limit(Resource::Memory, &max, &bytes.to_string())?,
        None => cgroupfs::write_reset(&max, "max")?,
    }
    // One OOM kill takes the whole cgroup: a plugin that lost one of its
    // processes is in an unknown state, and the supervisor restarts it
    // anyway. Absent before 4.19; then only the largest task dies.
    cgroupfs::write_reset(&dir.join(OOM_GROUP), "1")?;
    let swap = dir.join(SWAP_MAX);
    match limits.swap_max {
        Some(bytes) => cgroupfs::write_limit(Resource::Swap, &swap, &bytes.to_string()),
        None => cgroupfs::write_reset(&swap, "max"),
    }
}

pub(super) struct MemoryStats {
    pub current: u64,
    /// None before 5.19, which has no `memory.peak`.
    pub peak: Option<u64>,
    pub oom_kills: u64,
}

pub(super) fn stats(dir: &Path) -> Result<MemoryStats, CgroupError> {
    let peak_path = dir.join(PEAK);
    let peak = match cgroupfs::read_optional(&peak_path)? {
        Some(content) => Some(cgroupfs::parse_u64(&peak_path, &content)?),
        None => None,
    };
    Ok(MemoryStats {
        current: cgroupfs::read_u64_or_zero(&dir.join(CURRENT))?,
        peak,
        oom_kills: cgroupfs::read_flat_keyed_or_zero(&dir.join(EVENTS), "oom_kill")?,
    })
}
