//! Where the binaries and plugin packages under test are (shared with the
//! other suites).

pub use corral_test_support::env::*;
