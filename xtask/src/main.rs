//! `cargo xtask`: builds corral, packages the example and test plugins,
//! and runs the daemon or the whole test suite.
//!
//! Plugins are built as static executables (`+crt-static` for the host
//! target, `cc -static` for plugins written in C): a static plugin starts
//! faster (no dynamic loader, 0.5-0.7 ms less per exec) and needs no
//! library paths in its Landlock rules.

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Build corral and package every plugin under target/corral-packages.
    Package {
        #[arg(long)]
        release: bool,
    },
    /// Build (release), package the examples, and run corrald --dev on
    /// them in the foreground.
    Dev {
        /// Extra arguments for corrald.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The whole test suite: unit and integration tests, the cgroup v2
    /// tests in a QEMU guest, and a short fuzzing pass.
    Test {
        /// Skip the QEMU cgroup v2 guest.
        #[arg(long)]
        no_vm: bool,
        /// Skip the fuzzing pass.
        #[arg(long)]
        no_fuzz: bool,
        /// Arguments passed to `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run the benchmarks and print their tables.
    Bench {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let root = workspace_root()?;
    std::env::set_current_dir(&root)?;
    match cli.command {
        Task::Package { release } => {
            let built = package(&root, release)?;
            println!("packages in {}", built.packages.display());
            println!("static trampoline {}", built.sandbox.display());
            println!("static JavaScript runtime {}", built.js.display());
        }
        Task::Dev { args } => dev(&root, &args)?,
        Task::Test {
            no_vm,
            no_fuzz,
            args,
        } => test(&root, !no_vm, !no_fuzz, &args)?,
        Task::Bench { args } => bench(&root, &args)?,
    }
    Ok(())
}

fn workspace_root() -> Result<PathBuf> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map(Path::to_path_buf)
        .context("xtask lives one level below the workspace root")
}

fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
}

fn host_triple() -> Result<String> {
    let out = Command::new("rustc")
        .arg("-vV")
        .output()
        .context("running rustc -vV")?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(str::to_string)
        .context("rustc -vV printed no host triple")
}

fn cargo(args: &[&str]) -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.args(args);
    c
}

fn run(mut cmd: Command) -> Result<()> {
    eprintln!("+ {cmd:?}");
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

/// A plugin package source: what builds the binary and the manifests that
/// package it.
struct PluginSource {
    build: PluginBuild,
    manifests: Vec<PathBuf>,
    /// Under examples/plugins (served by `xtask dev`), not tests/plugins.
    example: bool,
}

enum PluginBuild {
    /// A workspace crate, built by cargo.
    Crate(String),
    /// A directory of C files without a Cargo.toml, built by `cc`.
    C(Vec<PathBuf>),
    /// A script plugin (`index.js`, `plugin.py`, ...): the directory is
    /// the package, copied as it is; a runtime corral ships runs it.
    Script(PathBuf),
}

#[derive(serde::Deserialize)]
struct CrateManifest {
    package: CratePackage,
}

#[derive(serde::Deserialize)]
struct CratePackage {
    name: String,
}

#[derive(serde::Deserialize)]
struct PluginManifest {
    plugin: PluginSection,
}

#[derive(serde::Deserialize)]
struct PluginSection {
    name: String,
    entry: String,
}

/// Crates under examples/plugins and tests/plugins with a plugin.toml, or
/// packages/<variant>/plugin.toml for several packages of one binary;
/// directories there with a plugin.toml and `*.c` files but no Cargo.toml;
/// and script plugins: a directory with a manifest (plugin.toml or
/// plugin.yaml) naming a script runtime, or holding only `index.js`.
fn plugin_sources(root: &Path) -> Result<Vec<PluginSource>> {
    let mut sources = Vec::new();
    for parent in ["examples/plugins", "tests/plugins"] {
        let Ok(entries) = std::fs::read_dir(root.join(parent)) else {
            continue;
        };
        let mut dirs: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        dirs.sort();
        for dir in dirs {
            let cargo_toml = dir.join("Cargo.toml");
            if !cargo_toml.exists() && is_script_plugin(&dir)? {
                sources.push(PluginSource {
                    build: PluginBuild::Script(dir.clone()),
                    manifests: Vec::new(),
                    example: parent == "examples/plugins",
                });
                continue;
            }
            if !cargo_toml.exists() {
                let c_files = c_files(&dir)?;
                if dir.join("plugin.toml").exists() && !c_files.is_empty() {
                    sources.push(PluginSource {
                        build: PluginBuild::C(c_files),
                        manifests: vec![dir.join("plugin.toml")],
                        example: parent == "examples/plugins",
                    });
                }
                continue;
            }
            let text = std::fs::read_to_string(&cargo_toml)?;
            let krate: CrateManifest =
                toml::from_str(&text).with_context(|| format!("{}", cargo_toml.display()))?;
            let mut manifests = Vec::new();
            if dir.join("plugin.toml").exists() {
                manifests.push(dir.join("plugin.toml"));
            }
            if let Ok(variants) = std::fs::read_dir(dir.join("packages")) {
                let mut v: Vec<PathBuf> = variants
                    .filter_map(|e| e.ok().map(|e| e.path().join("plugin.toml")))
                    .filter(|p| p.exists())
                    .collect();
                v.sort();
                manifests.extend(v);
            }
            if !manifests.is_empty() {
                sources.push(PluginSource {
                    build: PluginBuild::Crate(krate.package.name),
                    manifests,
                    example: parent == "examples/plugins",
                });
            }
        }
    }
    Ok(sources)
}

/// A directory whose package runs on a script runtime.
fn is_script_plugin(dir: &Path) -> Result<bool> {
    match corral_protocol::package_layout::load(dir) {
        Ok((manifest, _)) => Ok(manifest.plugin.runtime.is_script()),
        Err(e) if corral_protocol::package_layout::is_package_dir(dir) => {
            bail!("{e}")
        }
        Err(_) => Ok(false),
    }
}

/// Copies a script plugin's directory: regular files and directories,
/// readable by the plugin uids, nothing executable.
fn copy_script_package(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    set_mode(to, 0o755)?;
    let mut entries: Vec<_> = std::fs::read_dir(from)?.filter_map(|e| e.ok()).collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') || name == "node_modules" {
            continue;
        }
        let kind = entry.file_type()?;
        let dest = to.join(&name);
        if kind.is_dir() {
            copy_script_package(&entry.path(), &dest)?;
        } else if kind.is_file() {
            std::fs::copy(entry.path(), &dest)
                .with_context(|| format!("copying {}", entry.path().display()))?;
            set_mode(&dest, 0o644)?;
        }
    }
    Ok(())
}

/// The `*.c` files directly in `dir`, sorted so the build is reproducible.
fn c_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|ext| ext == "c") && p.is_file())
        .collect();
    files.sort();
    Ok(files)
}

fn read_plugin_manifest(path: &Path) -> Result<PluginManifest> {
    let text = std::fs::read_to_string(path)?;
    toml::from_str(&text).with_context(|| format!("{}", path.display()))
}

/// The binary's file name: the last component of the manifest's entry.
fn entry_file_name(manifest: &PluginManifest) -> Result<&std::ffi::OsStr> {
    Path::new(&manifest.plugin.entry)
        .file_name()
        .with_context(|| format!("entry {:?} has no file name", manifest.plugin.entry))
}

/// Where the example plugins alone are packaged (served by `xtask dev`).
const EXAMPLES_DIR: &str = "corral-examples";

/// How C plugins are compiled: warnings are errors, and static like the
/// Rust plugins.
const C_FLAGS: &[&str] = &["-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", "-static"];

/// Builds the binaries and the plugin packages; returns the packages dir.
/// What `package` built, for the tasks that run it.
struct Built {
    packages: PathBuf,
    /// The static trampoline.
    sandbox: PathBuf,
    /// The static embedded JavaScript runtime.
    js: PathBuf,
    /// Where `corral` and `corrald` are.
    bin_dir: PathBuf,
}

impl Built {
    /// Points a command at the built binaries and packages.
    fn env(&self, cmd: &mut Command) {
        cmd.env("CORRAL_TEST_PACKAGES", &self.packages);
        cmd.env("CORRAL_SANDBOX", &self.sandbox);
        cmd.env("CORRAL_JS", &self.js);
        cmd.env("CORRAL_BIN_DIR", &self.bin_dir);
    }
}

fn package(root: &Path, release: bool) -> Result<Built> {
    // The CLI, the trampoline and the daemon.
    let mut host = cargo(&[
        "build",
        "--bins",
        "-p",
        "corral",
        "-p",
        "corral-sandbox",
        "-p",
        "corral-supervisor",
    ]);
    if release {
        host.arg("--release");
    }
    run(host)?;

    let sources = plugin_sources(root)?;
    let triple = host_triple()?;
    let plugin_profile = if release { "plugin" } else { "plugin-test" };
    // The plugins, the trampoline again and the embedded JavaScript
    // runtime: static executables start faster (no dynamic loader; ~0.3 ms
    // a start for the trampoline) and need no libraries in the sandbox.
    let mut plugins = cargo(&[
        "build",
        "--target",
        &triple,
        "--profile",
        plugin_profile,
        "-p",
        "corral-sandbox",
        "-p",
        "corral-js",
    ]);
    for s in &sources {
        if let PluginBuild::Crate(name) = &s.build {
            plugins.args(["-p", name]);
        }
    }
    // With an explicit --target these flags apply to what is built for
    // it only, not to build scripts or proc macros.
    plugins.env("RUSTFLAGS", "-C target-feature=+crt-static");
    run(plugins)?;

    let target = target_dir(root);
    let crate_bin_dir = target.join(&triple).join(plugin_profile);
    let c_bin_dir = target.join("c-plugins");
    for source in &sources {
        let PluginBuild::C(c_files) = &source.build else {
            continue;
        };
        std::fs::create_dir_all(&c_bin_dir)?;
        for manifest_path in &source.manifests {
            let manifest = read_plugin_manifest(manifest_path)?;
            let output = c_bin_dir.join(entry_file_name(&manifest)?);
            let mut cc = Command::new("cc");
            cc.args(C_FLAGS).arg("-o").arg(output).args(c_files);
            run(cc)?;
        }
    }
    let out = target.join("corral-packages");
    // The examples are what a running `cargo xtask dev` (a release build)
    // watches: only a release packaging rewrites them, so a debug build for
    // the tests never swaps a debug binary under the dev daemon.
    let examples = release.then(|| target.join(EXAMPLES_DIR));
    for dir in std::iter::once(&out).chain(examples.as_ref()) {
        if dir.exists() {
            std::fs::remove_dir_all(dir)?;
        }
    }
    for source in &sources {
        let bin_dir = match &source.build {
            PluginBuild::Crate(_) => &crate_bin_dir,
            PluginBuild::C(_) => &c_bin_dir,
            PluginBuild::Script(dir) => {
                let (manifest, _) = corral_protocol::package_layout::load(dir)?;
                copy_script_package(dir, &out.join(manifest.name()))?;
                if let (true, Some(examples)) = (source.example, &examples) {
                    copy_script_package(dir, &examples.join(manifest.name()))?;
                }
                continue;
            }
        };
        for manifest_path in &source.manifests {
            let manifest = read_plugin_manifest(manifest_path)?;
            let binary = bin_dir.join(entry_file_name(&manifest)?);
            let dest = out.join(&manifest.plugin.name);
            let entry = dest.join(&manifest.plugin.entry);
            std::fs::create_dir_all(entry.parent().context("entry has a parent")?)?;
            std::fs::copy(manifest_path, dest.join("plugin.toml"))?;
            std::fs::copy(&binary, &entry)
                .with_context(|| format!("copying {}", binary.display()))?;
            set_mode(&dest, 0o755)?;
            set_mode(&entry, 0o755)?;
            set_mode(&dest.join("plugin.toml"), 0o644)?;
            if let (true, Some(examples)) = (source.example, &examples) {
                // The examples alone, for `cargo xtask dev`.
                let copy = examples.join(&manifest.plugin.name);
                std::fs::create_dir_all(
                    copy.join(&manifest.plugin.entry)
                        .parent()
                        .context("entry has a parent")?,
                )?;
                std::fs::copy(dest.join("plugin.toml"), copy.join("plugin.toml"))?;
                std::fs::copy(&entry, copy.join(&manifest.plugin.entry))?;
                set_mode(&copy, 0o755)?;
            }
        }
    }
    // Plugins run as their own unprivileged uids: every directory down to
    // the packages must be open to them.
    for dir in out.ancestors() {
        if dir == Path::new("/") {
            break;
        }
        let mode = std::fs::metadata(dir)?.permissions();
        use std::os::unix::fs::PermissionsExt;
        if mode.mode() & 0o001 == 0 {
            eprintln!(
                "note: {} is not searchable by others (mode {:o}); sandboxed plugins will not reach packages below it",
                dir.display(),
                mode.mode() & 0o7777
            );
        }
    }
    compile_python_runtime(root)?;
    let host_profile = if release { "release" } else { "debug" };
    Ok(Built {
        packages: out,
        sandbox: crate_bin_dir.join("corral-sandbox"),
        js: crate_bin_dir.join("corral-js"),
        bin_dir: target.join(host_profile),
    })
}

/// The Python runtime is read-only in the sandbox and python3 runs with
/// -B there: without bytecode written here, every start would compile the
/// `corral` package again.
fn compile_python_runtime(root: &Path) -> Result<()> {
    let mut compile = Command::new("python3");
    compile
        .args(["-m", "compileall", "-q"])
        .arg(root.join("runtimes/python/corral"));
    run(compile)
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn dev(root: &Path, args: &[String]) -> Result<()> {
    let built = package(root, true)?;
    let packages = target_dir(root).join(EXAMPLES_DIR);
    let corrald = built.bin_dir.join("corrald");
    if !corrald.exists() {
        bail!("{} was not built", corrald.display());
    }
    install_example_policy(root)?;
    let mut cmd = Command::new(corrald);
    cmd.env("CORRAL_SANDBOX", &built.sandbox);
    cmd.env("CORRAL_JS", &built.js);
    cmd.env("CORRAL_RUNTIMES", root.join("runtimes"));
    cmd.arg("--dev").arg("--plugins").arg(&packages).args(args);
    run(cmd)
}

/// The examples' grants (host services: topics, tables, hooks) as the
/// dev daemon's policy drop-ins, refreshed at every start so edits to
/// `examples/policy.d` apply; other files in `.corral-dev/policy.d` stay.
fn install_example_policy(root: &Path) -> Result<()> {
    let from = root.join("examples/policy.d");
    let Ok(entries) = std::fs::read_dir(&from) else {
        return Ok(());
    };
    let to = root.join(".corral-dev/policy.d");
    std::fs::create_dir_all(&to).with_context(|| format!("creating {}", to.display()))?;
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_some_and(|x| x == "toml")
            && let Some(name) = path.file_name()
        {
            std::fs::copy(&path, to.join(name))
                .with_context(|| format!("copying {}", path.display()))?;
        }
    }
    Ok(())
}

fn test(root: &Path, vm: bool, fuzz: bool, args: &[String]) -> Result<()> {
    let built = package(root, false)?;
    // The S3 tests start moto's server; the Python suites need pytest.
    ensure_python_tools()?;
    // Every failing binary reported in one run, not just the first.
    let mut tests = cargo(&["test", "--workspace", "--no-fail-fast"]);
    tests.args(args);
    built.env(&mut tests);
    run(tests)?;
    // The CLI's end-to-end run of a real confined call needs the packages
    // and the trampoline, which only this task provides.
    let mut confined = cargo(&[
        "test",
        "-p",
        "corral",
        "--test",
        "local_commands",
        "--",
        "--ignored",
    ]);
    built.env(&mut confined);
    run(confined)?;
    // The C plugin is no crate: its script drives it through `corral run`.
    let mut c_echo = Command::new(root.join("examples/plugins/c-echo/test.sh"));
    built.env(&mut c_echo);
    run(c_echo)?;
    script_suites(root, &built)?;
    if vm {
        ensure_vm_tools(root)?;
        run(Command::new(root.join("tests/vm/run.sh")))?;
    }
    if fuzz && root.join("protocol/fuzz/run.sh").exists() {
        ensure_cargo_fuzz()?;
        run(Command::new(root.join("protocol/fuzz/run.sh")))?;
    }
    Ok(())
}

/// The suites of the runtimes and client libraries in JavaScript and
/// Python: the runtimes against fake hosts, the clients against a real
/// corrald started from the built binaries.
fn script_suites(root: &Path, built: &Built) -> Result<()> {
    let runtimes = root.join("runtimes");
    // The test files only: the folder also holds the fixtures they run.
    let node_tests = root.join("runtimes/node/test");
    let mut test_files: Vec<PathBuf> = std::fs::read_dir(&node_tests)
        .with_context(|| format!("reading {}", node_tests.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".test.js"))
        .collect();
    test_files.sort();
    let mut node_runtime = Command::new("node");
    node_runtime.arg("--test").args(&test_files);
    run(node_runtime)?;
    let mut python_runtime = Command::new("python3");
    python_runtime
        .args(["-m", "pytest", "-q"])
        .arg(root.join("runtimes/python"));
    run(python_runtime)?;

    let js_client = root.join("clients/js");
    let mut npm_ci = Command::new("npm");
    npm_ci
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(&js_client);
    run(npm_ci)?;
    let mut npm_test = Command::new("npm");
    npm_test.arg("test").current_dir(&js_client);
    built.env(&mut npm_test);
    npm_test.env("CORRAL_RUNTIMES", &runtimes);
    run(npm_test)?;

    let mut python_client = Command::new("python3");
    python_client
        .args(["-m", "pytest", "-q"])
        .arg(root.join("clients/python"));
    built.env(&mut python_client);
    python_client.env("CORRAL_RUNTIMES", &runtimes);
    run(python_client)
}

/// pytest for the Python suites and moto's S3 server for the S3 tests,
/// from PyPI when missing, so the one test command works on a fresh
/// machine.
fn ensure_python_tools() -> Result<()> {
    let has = |module: &str| {
        Command::new("python3")
            .args(["-c", &format!("import {module}")])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if has("pytest") && has("moto.server") {
        return Ok(());
    }
    eprintln!("installing pytest and moto's S3 server from PyPI");
    let mut pip = Command::new("python3");
    pip.args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "pytest",
        "moto[server]",
    ]);
    run(pip)
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// QEMU, busybox and cpio for the cgroup v2 guest: installed from apt when
/// missing, so the one test command works on a fresh machine.
fn ensure_vm_tools(root: &Path) -> Result<()> {
    if ["qemu-system-x86_64", "busybox", "cpio"]
        .iter()
        .all(|p| on_path(p))
    {
        return Ok(());
    }
    eprintln!("installing the QEMU guest's packages (tests/vm/install-deps.sh)");
    run(Command::new(root.join("tests/vm/install-deps.sh")))
}

/// cargo-fuzz for the short fuzzing pass: installed from crates.io when
/// missing.
fn ensure_cargo_fuzz() -> Result<()> {
    let installed = cargo(&["fuzz", "--version"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if installed {
        return Ok(());
    }
    eprintln!("installing cargo-fuzz");
    run(cargo(&["install", "--locked", "cargo-fuzz"]))
}

fn bench(root: &Path, args: &[String]) -> Result<()> {
    let built = package(root, true)?;
    let mut cmd = cargo(&["run", "--release", "-p", "corral-benches", "--"]);
    cmd.args(args);
    built.env(&mut cmd);
    run(cmd)
}
