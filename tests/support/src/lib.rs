//! What corral's test suites (`tests/`, `tests/daemon/`) share: where
//! `cargo xtask test` put the binaries and plugin packages, and what the
//! kernel says a test left behind (processes, cgroups).

pub mod cgroups;
pub mod env;
pub mod procs;
