//! v1 pids controller: `pids.max`, `pids.current`, and the count of
//! refused forks in `pids.events`.

use std::path::Path;

use crate::cgroupfs;
use crate::error::{CgroupError, Resource};

const MAX: &str = "pids.max";
const CURRENT: &str = "pids.current";
const EVENTS: &str = "pids.events";

pub(super) fn apply(dir: Option<&Path>, max: Option<u64>) -> Result<(), CgroupError> {
    let Some(dir) = dir else {
        return match max {
            None => Ok(()),
            Some(_) => Err(super::unmounted(Resource::Pids)),
        };
    };
    let value = max.map_or_else(|| "max".to_string(), |n| n.to_string());
    cgroupfs::write_limit(Resource::Pids, &dir.join(MAX), &value)
}

/// `(current, limit hits)`.
pub(super) fn stats(dir: &Path) -> Result<(u64, u64), CgroupError> {
    Ok((
        cgroupfs::read_u64_or_zero(&dir.join(CURRENT))?,
        cgroupfs::read_flat_keyed_or_zero(&dir.join(EVENTS), "max")?,
    ))
}
