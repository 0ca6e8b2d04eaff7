//! Where the binaries and plugin packages under test are. `cargo xtask
//! test` builds them and says where in environment variables; without them
//! every test fails with a message naming what is missing (none is
//! skipped).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The packages directory (`$CARGO_TARGET_DIR/corral-packages`).
pub const PACKAGES_ENV: &str = "CORRAL_TEST_PACKAGES";
/// The `corral-sandbox` trampoline.
pub const SANDBOX_ENV: &str = "CORRAL_SANDBOX";
/// The directory holding `corral` and `corrald`.
pub const BIN_DIR_ENV: &str = "CORRAL_BIN_DIR";

const HOW: &str = "run the suite with `cargo xtask test` (it builds corral, corrald, the \
    trampoline and the plugin packages, and sets CORRAL_TEST_PACKAGES, CORRAL_SANDBOX and \
    CORRAL_BIN_DIR)";

#[derive(Debug, Clone)]
pub struct TestEnv {
    pub packages: PathBuf,
    pub sandbox: PathBuf,
    pub bin_dir: PathBuf,
}

impl TestEnv {
    /// The `corral` CLI under test.
    pub fn corral(&self) -> PathBuf {
        self.binary("corral")
    }

    /// The `corrald` daemon under test.
    pub fn corrald(&self) -> PathBuf {
        self.binary("corrald")
    }

    fn binary(&self, name: &str) -> PathBuf {
        let path = self.bin_dir.join(name);
        assert!(
            path.is_file(),
            "{} does not exist ({BIN_DIR_ENV}={}): {HOW}",
            path.display(),
            self.bin_dir.display()
        );
        path
    }

    /// The built package of plugin `name`.
    pub fn package(&self, name: &str) -> PathBuf {
        let dir = self.packages.join(name);
        // plugin.toml, seed 002's plugin.yaml, or seed 000's bare index.js.
        let layout = ["plugin.toml", "plugin.yaml", "index.js"];
        assert!(
            layout.iter().any(|f| dir.join(f).is_file()),
            "package {name} is missing from {} ({PACKAGES_ENV}): {HOW}",
            self.packages.display()
        );
        dir
    }
}

fn required(var: &str, what: &str, check: fn(&Path) -> bool) -> PathBuf {
    let value = std::env::var_os(var)
        .unwrap_or_else(|| panic!("{var} is not set, so the tests cannot find {what}: {HOW}"));
    let path = PathBuf::from(value);
    assert!(
        check(&path),
        "{var}={} does not point at {what}: {HOW}",
        path.display()
    );
    path
}

/// The environment `cargo xtask test` sets; panics naming what is missing.
pub fn test_env() -> &'static TestEnv {
    static ENV: OnceLock<TestEnv> = OnceLock::new();
    ENV.get_or_init(|| TestEnv {
        packages: required(PACKAGES_ENV, "the plugin packages", Path::is_dir),
        sandbox: required(SANDBOX_ENV, "the corral-sandbox trampoline", Path::is_file),
        bin_dir: required(
            BIN_DIR_ENV,
            "the directory of corral and corrald",
            Path::is_dir,
        ),
    })
}

/// The package directory of plugin `name`; panics if it was not built.
pub fn package_dir(name: &str) -> PathBuf {
    test_env().package(name)
}
