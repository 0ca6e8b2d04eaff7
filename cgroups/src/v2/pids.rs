//! v2 pids controller: `pids.max`, `pids.current`, and the count of
//! refused forks in `pids.events`.

use std::path::Path;

use crate::cgroupfs;
use crate::error::{CgroupError, Resource};

const MAX: &str = "pids.max";
const CURRENT: &str = "pids.current";
const EVENTS: &str = "pids.events";

pub(super) fn apply(dir: &Path, max: Option<u64>) -> Result<(), CgroupError> {
    let path = dir.join(MAX);
    match max {
        Some(n) => cgroupfs::write_limit(Resource::Pids, &path, &n.to_string()),
        None => cgroupfs::write_reset(&path, "max"),
    }
}

/// `(current, limit hits)`.
pub(super) fn stats(dir: &Path) -> Result<(u64, u64), CgroupError> {
    Ok((
        cgroupfs::read_u64_or_zero(&dir.join(CURRENT))?,
        cgroupfs::read_flat_keyed_or_zero(&dir.join(EVENTS), "max")?,
    ))
}
