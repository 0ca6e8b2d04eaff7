//! Support for corral's integration tests: the escape suite
//! (`escape.rs`), the limits (`limits.rs`) and the runtime and CLI
//! (`runtime.rs`).
//!
//! The tests run real plugins in real sandboxes, so they need what
//! `cargo xtask test` prepares: the plugin packages (`CORRAL_TEST_PACKAGES`),
//! the trampoline (`CORRAL_SANDBOX`) and the `corral` binary
//! (`CORRAL_BIN_DIR`). Without them every test fails and says so; none is
//! skipped.
//!
//! Each test builds a [`Harness`]: a runtime of its own (its own cgroup
//! base and uid range, so leak checks count only what the test made),
//! plugins started under the built-in policy plus the test's policy text,
//! and [`Harness::finish`], which stops everything and proves nothing was
//! left behind.

pub mod attempt;
pub mod calls;
pub mod cli;
pub mod env;
pub mod harness;
pub mod leaks;

pub use attempt::{Attempt, errno_name};
pub use calls::{EVENT_WAIT, attempt, call, call_within, expect_error, pid_of, wait_for_event};
pub use env::{TestEnv, package_dir, test_env};
pub use harness::{Harness, run};
