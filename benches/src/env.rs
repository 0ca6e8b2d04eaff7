//! Where the binaries under test are: `cargo xtask bench` builds them and
//! passes their paths in the environment, as it does for the tests.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, Clone)]
pub struct Env {
    /// Packaged plugins (`hello/plugin.toml`, `hello/bin/hello`, ...).
    pub packages: PathBuf,
    /// The trampoline as packaged (release build).
    pub trampoline: PathBuf,
    /// Where `corrald` is.
    pub bin_dir: PathBuf,
    /// The cargo target directory.
    pub target_dir: PathBuf,
    /// This binary, for the helper modes.
    pub self_exe: PathBuf,
    /// A statically linked build of the trampoline, for the breakdown.
    pub static_trampoline: Option<PathBuf>,
    /// A dynamically linked build of hello, for the breakdown.
    pub dynamic_hello: Option<PathBuf>,
}

fn required(var: &str, what: &str) -> Result<PathBuf> {
    let value = std::env::var_os(var).with_context(|| {
        format!("{var} is not set: it names {what}; run the benchmarks with `cargo xtask bench`")
    })?;
    let path = PathBuf::from(value);
    if !path.exists() {
        bail!(
            "{var}={} does not exist ({what}); build it first (`cargo xtask package --release`, and `cargo build --release -p corral-sandbox` for the trampoline)",
            path.display()
        );
    }
    Ok(path)
}

impl Env {
    pub fn from_environment() -> Result<Env> {
        let packages = required("CORRAL_TEST_PACKAGES", "the packaged plugins")?;
        let trampoline = required("CORRAL_SANDBOX", "the corral-sandbox trampoline")?;
        let bin_dir = required("CORRAL_BIN_DIR", "the directory holding corrald")?;
        let target_dir = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .or_else(|| bin_dir.parent().map(Path::to_path_buf))
            .context("cannot tell the cargo target directory")?;
        Env {
            packages,
            trampoline,
            bin_dir,
            target_dir,
            self_exe: std::env::current_exe().context("locating this binary")?,
            static_trampoline: None,
            dynamic_hello: None,
        }
        .checked()
    }

    fn checked(self) -> Result<Env> {
        let hello = self.hello_package();
        if !hello.join("plugin.toml").is_file() || !self.hello_binary().is_file() {
            bail!(
                "{} is not a packaged hello plugin; run `cargo xtask package --release`",
                hello.display()
            );
        }
        Ok(self)
    }

    pub fn hello_package(&self) -> PathBuf {
        self.packages.join("hello")
    }

    /// The packaged (static) hello binary.
    pub fn hello_binary(&self) -> PathBuf {
        self.hello_package().join("bin/hello")
    }

    pub fn corrald(&self) -> PathBuf {
        self.bin_dir.join("corrald")
    }

    /// Builds the two variants the cold-start breakdown compares against:
    /// a static trampoline (the plugin profile with `+crt-static`, as
    /// plugins are built) and a dynamically linked hello (a plain release
    /// build). A failure leaves the variant out, with the reason printed.
    pub fn build_variants(&mut self) {
        let triple = match host_triple() {
            Ok(t) => t,
            Err(e) => {
                eprintln!("note: not building the breakdown variants: {e:#}");
                return;
            }
        };
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        // The workspace root: this crate's parent.
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap_or(Path::new("."));
        let mut trampoline = Command::new(&cargo);
        trampoline
            .current_dir(workspace)
            .args(["build", "--target", &triple, "--profile", "plugin"])
            .args(["-p", "corral-sandbox"])
            .env("CARGO_TARGET_DIR", &self.target_dir)
            .env("RUSTFLAGS", "-C target-feature=+crt-static");
        if run_quietly(trampoline, "a static corral-sandbox") {
            let path = self
                .target_dir
                .join(&triple)
                .join("plugin")
                .join("corral-sandbox");
            self.static_trampoline = path.is_file().then_some(path);
        }
        let mut hello = Command::new(&cargo);
        hello
            .current_dir(workspace)
            .args(["build", "--release", "-p", "corral-example-hello"])
            .env("CARGO_TARGET_DIR", &self.target_dir)
            .env_remove("RUSTFLAGS");
        if run_quietly(hello, "a dynamically linked hello") {
            let path = self.target_dir.join("release").join("hello");
            self.dynamic_hello = path.is_file().then_some(path);
        }
    }
}

fn run_quietly(mut cmd: Command, what: &str) -> bool {
    eprintln!("building {what}: {cmd:?}");
    match cmd.output() {
        Ok(out) if out.status.success() => true,
        Ok(out) => {
            eprintln!(
                "note: building {what} failed; the breakdown leaves it out:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            false
        }
        Err(e) => {
            eprintln!("note: cannot run cargo to build {what}: {e}");
            false
        }
    }
}

fn host_triple() -> Result<String> {
    let out = Command::new("rustc")
        .arg("-vV")
        .output()
        .context("running rustc -vV")?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(str::to_string)
        .context("rustc -vV printed no host triple")
}
