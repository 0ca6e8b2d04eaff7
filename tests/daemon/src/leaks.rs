//! What a daemon can leave behind, read from the kernel: processes in its
//! plugins' uid range, and leaf cgroups under its cgroup base (shared with
//! the other suites).

pub use corral_test_support::cgroups::*;
pub use corral_test_support::procs::*;
