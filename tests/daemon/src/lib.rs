//! Support for corrald's end-to-end tests: the real daemon binary started
//! as a child process with a configuration of its own ([`Setup`],
//! [`Daemon`]), an HTTP/1.1 client for its Unix socket ([`Client`]),
//! requests from other uids ([`peer`]), package archives ([`tarball`]),
//! and what a daemon leaves behind, read from the kernel ([`leaks`]).
//!
//! The tests need what `cargo xtask test` builds and names in the
//! environment: `CORRAL_BIN_DIR` (corrald), `CORRAL_SANDBOX` (the
//! trampoline) and `CORRAL_TEST_PACKAGES` (hello, hostile, ...). Without
//! them every test fails saying what is missing; none is skipped.
//!
//! Every daemon gets its own directory under /var/tmp, socket, state,
//! policy, cgroup base (`corral-dt-<pid>-<n>`) and plugin uid range, so
//! tests run in parallel and leak checks are exact.

pub mod client;
pub mod daemon;
pub mod env;
pub mod leaks;
pub mod peer;
pub mod raw;
pub mod setup;
pub mod tarball;

pub use client::{Client, EventStream, Request, Response};
pub use daemon::{Daemon, SETTLE_WAIT};
pub use env::test_env;
pub use setup::Setup;

use std::time::{Duration, Instant};

/// How long a test waits for an event that follows something it did.
pub const EVENT_WAIT: Duration = Duration::from_secs(15);

/// Polls `check` until it returns `Some`, or panics with `what` after
/// `within`.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
