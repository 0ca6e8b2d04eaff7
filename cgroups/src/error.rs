//! The one error type of the crate. Every variant names the operation and
//! the exact cgroupfs path, because "permission denied" alone is useless
//! when a daemon touches dozens of files across several hierarchies.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// A resource limit the caller asked for, as named in [`crate::Limits`].
///
/// [`CgroupError::Unsupported`] carries one so the caller can decide from
/// its policy (`required` or `best_effort`) whether to fail or to drop the
/// limit (see [`crate::Limits::without`]) and apply again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Resource {
    Memory,
    Swap,
    Pids,
    Cpu,
}

impl Resource {
    /// The kernel controller that enforces this resource.
    pub fn controller(self) -> &'static str {
        match self {
            Resource::Memory | Resource::Swap => "memory",
            Resource::Pids => "pids",
            Resource::Cpu => "cpu",
        }
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Resource::Memory => "memory",
            Resource::Swap => "swap",
            Resource::Pids => "pids",
            Resource::Cpu => "cpu",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// A file or directory operation on cgroupfs failed.
    #[error("cgroup: cannot {op} {}: {source}", path.display())]
    Io {
        /// What was being done, e.g. `write "max" to`.
        op: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// A limit was asked for but the controller, or the interface file of
    /// the feature, does not exist here.
    #[error(
        "cgroup: the {resource} limit is not supported here ({} controller): {missing}",
        resource.controller()
    )]
    Unsupported {
        resource: Resource,
        /// What is missing: `<path> does not exist`, or the hierarchy.
        missing: String,
    },

    /// A cgroupfs file held something the kernel documents differently.
    #[error("cgroup: cannot parse {}: {reason} (content {content:?})", path.display())]
    Parse {
        path: PathBuf,
        content: String,
        reason: String,
    },

    /// A cgroup (or base) name that could escape or collide in cgroupfs.
    #[error("cgroup: invalid cgroup name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },

    /// Limits that no kernel would accept, caught before any write.
    #[error("cgroup: invalid limits: {0}")]
    InvalidLimits(String),

    /// No usable hierarchy, or /proc/self/{mountinfo,cgroup} made no sense.
    #[error("cgroup: detection failed: {0}")]
    Detect(String),

    /// Processes survived `kill_all` for longer than the bounded wait.
    #[error(
        "cgroup: {} still holds processes after {waited:?} of SIGKILL (listed: {pids:?})",
        path.display()
    )]
    KillTimeout {
        path: PathBuf,
        pids: Vec<u32>,
        waited: Duration,
    },

    /// `kill_all` was asked to empty a cgroup the calling process is in.
    #[error(
        "cgroup: refusing to kill {}: the calling process {pid} is inside it",
        path.display()
    )]
    ContainsSelf { path: PathBuf, pid: u32 },

    /// `create` found a directory of that name that still holds processes.
    #[error("cgroup: {} already exists and holds processes {pids:?}", path.display())]
    InUse { path: PathBuf, pids: Vec<u32> },
}

impl CgroupError {
    pub(crate) fn io(op: impl Into<String>, path: impl Into<PathBuf>, source: io::Error) -> Self {
        CgroupError::Io {
            op: op.into(),
            path: path.into(),
            source,
        }
    }

    /// True for [`CgroupError::Unsupported`], the error a caller may
    /// tolerate under a `best_effort` policy.
    pub fn is_unsupported(&self) -> bool {
        matches!(self, CgroupError::Unsupported { .. })
    }

    /// The raw OS error behind an [`CgroupError::Io`], if any.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            CgroupError::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}
