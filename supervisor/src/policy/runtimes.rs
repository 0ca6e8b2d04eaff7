//! Script runtimes: how a plugin whose entry is a script (`runtime = "js"`,
//! `"node"`, `"python"`) is started, and what its interpreter may touch.
//!
//! The entry of a script plugin is data, not a program: the trampoline
//! execs the runtime's interpreter with the entry as its last argument
//! (`protocol`'s runtime contract), and the package is granted read-only
//! instead of read-and-execute. What the interpreter needs is expressed as
//! the same kind of grants the compiler makes for a native plugin's loader
//! and libraries: its program (read and execute), its own files (read),
//! the dynamic libraries when it is dynamically linked, a named syscall
//! group, and the threads it starts.
//!
//! | runtime | program | argv |
//! |---|---|---|
//! | `js` | corral's `corral-js`, found like the trampoline | `corral-js ENTRY` |
//! | `node` | the host's node (`runtime.node.program`) | `node ARGS... bootstrap.js ENTRY` |
//! | `python` | the host's python3 (`runtime.python.program`) | `python3 -I -B corral_bootstrap.py ENTRY` |
//!
//! The compiler calls [`prepare`] before it builds the rules, adds the
//! syscalls of [`ScriptLaunch::syscalls`] to the seccomp allow-list, and
//! calls [`finish`] on the compiled policy (which also carries the
//! manifest's `default_method`, for every runtime).

use super::compile::CompileError;
use super::{Policy, ScriptRuntime};
use corral_protocol::manifest::{HostPath, Manifest, Runtime};
use corral_protocol::policy::{FsAccess, FsRule, Provenance, SandboxPolicy};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The embedded JavaScript runtime's binary.
pub const JS_PROGRAM: &str = "corral-js";
/// Environment variable naming the `corral-js` binary (dev and tests).
pub const JS_PROGRAM_ENV: &str = "CORRAL_JS";
/// Environment variable naming the directory holding corral's runtime
/// scripts (`node/bootstrap.js`, `python/corral_bootstrap.py`).
pub const RUNTIMES_DIR_ENV: &str = "CORRAL_RUNTIMES";
/// Where an installed corral keeps its runtime scripts.
pub const INSTALLED_RUNTIMES_DIR: &str = "/usr/share/corral/runtimes";
/// Where an installed corral keeps its helper binaries.
pub const LIBEXEC_DIR: &str = "/usr/libexec/corral";

/// How one script plugin is started, before it is merged into the policy.
#[derive(Debug, Clone)]
pub struct ScriptLaunch {
    pub runtime: Runtime,
    /// What the trampoline execs: the interpreter, resolved.
    pub program: PathBuf,
    pub argv: Vec<String>,
    /// The script the interpreter runs, resolved inside the package.
    pub entry: PathBuf,
    /// The interpreter is dynamically linked (it needs the libraries).
    pub dynamic: bool,
    /// Paths the interpreter needs, with why.
    pub grants: Vec<(FsRule, String)>,
    /// Its syscall groups, and the policy key they come from.
    pub syscalls: (String, Vec<String>),
    /// Tasks the interpreter starts on its own (threads).
    pub threads: u32,
    profile_key: String,
}

fn profile(policy: &Policy, runtime: Runtime) -> Option<&ScriptRuntime> {
    match runtime {
        Runtime::Native => None,
        Runtime::Js => Some(&policy.runtime.js),
        Runtime::Node => Some(&policy.runtime.node),
        Runtime::Python => Some(&policy.runtime.python),
    }
}

/// The launch of a script plugin; `None` for a native one (the compiler
/// execs its entry itself).
pub fn prepare(
    manifest: &Manifest,
    manifest_file: &str,
    package_dir: &Path,
    policy: &Policy,
) -> Result<Option<ScriptLaunch>, CompileError> {
    let runtime = manifest.plugin.runtime;
    let Some(profile) = profile(policy, runtime) else {
        return Ok(None);
    };
    let key = format!("runtime.{runtime}");
    let policy_error = |field: &str, reason: String| CompileError::Policy {
        file: policy.source_of(&format!("{key}.{field}")).to_string(),
        key: format!("{key}.{field}"),
        reason,
    };
    let entry = script_entry(package_dir, manifest.plugin.entry.as_str()).map_err(|reason| {
        CompileError::Manifest {
            file: manifest_file.to_string(),
            key: "plugin.entry".into(),
            reason,
        }
    })?;
    let program = match (runtime, profile.program.as_str()) {
        (Runtime::Js, "") => find_shipped(JS_PROGRAM, JS_PROGRAM_ENV),
        (_, "") => Err(format!("runtime `{runtime}` needs the path of its program")),
        (_, path) => Path::new(path)
            .canonicalize()
            .map_err(|e| format!("{path}: {e}")),
    }
    .and_then(|p| runnable_by_others(&p).map(|()| p))
    .map_err(|reason| policy_error("program", reason))?;
    let dynamic = super::compile::elf_is_dynamic(&program)
        .map_err(|reason| policy_error("program", reason))?;

    let mut argv = vec![program.display().to_string()];
    argv.extend(profile.args.iter().cloned());
    let mut grants = vec![(
        FsRule {
            path: program.display().to_string(),
            access: FsAccess::ReadExec,
        },
        format!("the {runtime} runtime's program"),
    )];
    if let Some(script) = bootstrap_of(runtime) {
        let bootstrap = match profile.bootstrap.as_str() {
            "" => find_runtime_script(script),
            path => Path::new(path)
                .canonicalize()
                .map_err(|e| format!("{path}: {e}")),
        }
        .and_then(|p| readable_by_others(&p).map(|()| p))
        .map_err(|reason| policy_error("bootstrap", reason))?;
        // The bootstrap's directory holds what it imports (node's
        // services.js, the Python SDK): granted whole, and checked here so
        // that a bootstrap copied without them is refused now, not at start.
        let dir = bootstrap.parent().unwrap_or(Path::new("/")).to_path_buf();
        for companion in companions_of(runtime) {
            readable_by_others(&dir.join(companion)).map_err(|reason| {
                policy_error(
                    "bootstrap",
                    format!("{reason} (the bootstrap imports {companion} from its directory)"),
                )
            })?;
        }
        argv.push(bootstrap.display().to_string());
        grants.push((
            FsRule {
                path: dir.display().to_string(),
                access: FsAccess::Read,
            },
            format!("corral's {runtime} bootstrap"),
        ));
    }
    argv.push(entry.display().to_string());
    for (paths, access, field) in [
        (&profile.read, FsAccess::Read, "read"),
        (&profile.read_exec, FsAccess::ReadExec, "read_exec"),
    ] {
        for path in paths.iter().filter(|p| p.as_path().exists()) {
            grants.push((
                FsRule {
                    path: path.to_string(),
                    access,
                },
                format!(
                    "{} ({key}.{field})",
                    policy.source_of(&format!("{key}.{field}"))
                ),
            ));
        }
    }
    Ok(Some(ScriptLaunch {
        runtime,
        program,
        argv,
        entry,
        dynamic,
        grants,
        syscalls: (format!("{key}.syscalls"), profile.syscalls.clone()),
        threads: profile.threads,
        profile_key: key,
    }))
}

/// corral's script that adapts a runtime to the child protocol, relative
/// to the runtimes directory.
fn bootstrap_of(runtime: Runtime) -> Option<&'static str> {
    match runtime {
        Runtime::Node => Some("node/bootstrap.js"),
        Runtime::Python => Some("python/corral_bootstrap.py"),
        Runtime::Native | Runtime::Js => None,
    }
}

/// Files the bootstrap imports from its own directory, relative to it.
fn companions_of(runtime: Runtime) -> &'static [&'static str] {
    match runtime {
        // The `corral` object, shared with corral-js.
        Runtime::Node => &["services.js"],
        // The SDK package the bootstrap starts.
        Runtime::Python => &["corral/__init__.py", "corral/entry.py"],
        Runtime::Native | Runtime::Js => &[],
    }
}

/// The last step of compiling any plugin: the manifest's default method,
/// and for a script plugin its launch.
pub fn finish(
    script: Option<ScriptLaunch>,
    manifest: &Manifest,
    policy: &Policy,
    out: &mut SandboxPolicy,
) {
    if let Some(method) = &manifest.plugin.default_method {
        out.default_method = Some(method.as_str().to_string());
        out.provenance.push(Provenance {
            rule: "default_method".into(),
            value: method.as_str().to_string(),
            source: "the manifest (plugin.default_method)".into(),
        });
    }
    if let Some(launch) = script {
        launch.finish(policy, out);
    }
}

impl ScriptLaunch {
    /// Merges the launch into the compiled policy: the program and argv,
    /// the environment the runtime contract promises, the interpreter's
    /// grants, the package as data, and tasks for the interpreter's
    /// threads.
    fn finish(self, policy: &Policy, out: &mut SandboxPolicy) {
        let cite = |rule: &str, value: String, source: String| Provenance {
            rule: rule.into(),
            value,
            source,
        };
        let mut lines = vec![cite(
            "runtime",
            format!("{} runs {}", self.program.display(), self.entry.display()),
            policy.cite(&format!("{}.program", self.profile_key)),
        )];
        out.confinement.entry = self.program.display().to_string();
        out.confinement.argv = self.argv;
        out.confinement
            .env
            .push(("CORRAL_PLUGIN_NAME".to_string(), out.plugin.clone()));
        if let Some(landlock) = out.confinement.landlock.as_mut() {
            // The package is the script's data: nothing in it is executed.
            let package = out.confinement.workdir.clone();
            for rule in landlock.fs.iter_mut().filter(|r| r.path == package) {
                rule.access = FsAccess::Read;
            }
            lines.push(cite(
                "landlock.fs package",
                format!("{package} read"),
                "corral (a script plugin's package is data)".into(),
            ));
            for (rule, why) in self.grants {
                lines.push(cite(
                    &format!("landlock.fs {}", rule.path),
                    rule.access.name().to_string(),
                    why,
                ));
                landlock.fs.push(rule);
            }
        }
        // The interpreter's own threads come on top of those the plugin
        // was granted (RLIMIT_NPROC counts the tasks of its uid).
        if let Some(nproc) = out
            .confinement
            .rlimits
            .iter_mut()
            .find(|r| r.resource == corral_protocol::policy::Rlimit::Nproc)
        {
            nproc.soft = nproc.soft.saturating_add(u64::from(self.threads));
            nproc.hard = nproc.hard.saturating_add(u64::from(self.threads));
            lines.push(cite(
                "rlimits.nproc",
                nproc.hard.to_string(),
                format!(
                    "raised by the runtime's {} threads ({})",
                    self.threads,
                    policy.cite(&format!("{}.threads", self.profile_key))
                ),
            ));
        }
        if let Some(pids) = out.resources.pids_max
            && pids < u64::from(self.threads) + 1
        {
            let raised = u64::from(self.threads) + 1;
            out.resources.pids_max = Some(raised);
            lines.push(cite(
                "limits.pids",
                raised.to_string(),
                format!(
                    "raised for the runtime's {} threads ({})",
                    self.threads,
                    policy.cite(&format!("{}.threads", self.profile_key))
                ),
            ));
        }
        out.provenance.extend(lines);
    }
}

/// The script entry inside the package: a regular file plugin uids can
/// read, through directories they can search.
fn script_entry(package_dir: &Path, entry: &str) -> Result<PathBuf, String> {
    let resolved = super::compile::resolve_in_package(package_dir, entry)?;
    readable_by_others(&resolved)?;
    Ok(resolved)
}

/// Plugins run as uids of their own: `path` must be a regular file others
/// may read, below directories others may search.
fn readable_by_others(path: &Path) -> Result<(), String> {
    open_to_others(path, 0o004, "readable (chmod o+r)")
}

/// As [`readable_by_others`], and executable by others.
fn runnable_by_others(path: &Path) -> Result<(), String> {
    open_to_others(path, 0o005, "readable and executable (chmod o+rx)")
}

fn open_to_others(path: &Path, bits: u32, what: &str) -> Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    let mode = meta.permissions().mode();
    if mode & bits != bits {
        return Err(format!(
            "{} is mode {:o}; plugins run as their own uid and need it {what}",
            path.display(),
            mode & 0o7777
        ));
    }
    for dir in path.ancestors().skip(1) {
        let mode = std::fs::metadata(dir)
            .map(|m| m.permissions().mode())
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        if mode & 0o001 == 0 {
            return Err(format!(
                "directory {} is mode {:o}; plugins run as their own uid and cannot reach {} through it (chmod o+x)",
                dir.display(),
                mode & 0o7777,
                path.display()
            ));
        }
    }
    Ok(())
}

/// A binary corral ships: `$ENV`, next to the running binary (or one
/// directory up, for test binaries in `target/*/deps`),
/// [`LIBEXEC_DIR`], then PATH.
fn find_shipped(name: &str, env: &str) -> Result<PathBuf, String> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(p) = std::env::var_os(env) {
        candidates.push(PathBuf::from(p));
    }
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        candidates.push(dir.join(name));
        if let Some(up) = dir.parent() {
            candidates.push(up.join(name));
        }
    }
    candidates.push(Path::new(LIBEXEC_DIR).join(name));
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join(name)));
    }
    first_file(&candidates).ok_or_else(|| {
        format!(
            "cannot find {name}: looked at {}; set {env} or the program's path",
            list(&candidates)
        )
    })
}

/// One of corral's runtime scripts: `$CORRAL_RUNTIMES/<rel>`,
/// `<bin>/../share/corral/runtimes/<rel>`, [`INSTALLED_RUNTIMES_DIR`],
/// then the source tree this corral was built from (dev and tests).
fn find_runtime_script(rel: &str) -> Result<PathBuf, String> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(dir) = std::env::var_os(RUNTIMES_DIR_ENV) {
        candidates.push(PathBuf::from(dir).join(rel));
    }
    if let Ok(exe) = std::env::current_exe()
        && let Some(prefix) = exe.parent().and_then(Path::parent)
    {
        candidates.push(prefix.join("share/corral/runtimes").join(rel));
    }
    candidates.push(Path::new(INSTALLED_RUNTIMES_DIR).join(rel));
    candidates.push(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../runtimes")
            .join(rel),
    );
    first_file(&candidates).ok_or_else(|| {
        format!(
            "cannot find corral's {rel}: looked at {}; set {RUNTIMES_DIR_ENV} to the directory holding it, or the bootstrap's path",
            list(&candidates)
        )
    })
}

fn first_file(candidates: &[PathBuf]) -> Option<PathBuf> {
    candidates
        .iter()
        .find(|c| c.is_file())
        .and_then(|c| c.canonicalize().ok())
}

fn list(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Checks a policy's runtime profiles: each program is absolute (or empty
/// for `js`, meaning corral's own).
pub fn validate(policy: &Policy) -> Result<(), (String, String)> {
    for runtime in [Runtime::Js, Runtime::Node, Runtime::Python] {
        let Some(p) = profile(policy, runtime) else {
            continue;
        };
        let key = format!("runtime.{runtime}");
        for (field, value) in [("program", &p.program), ("bootstrap", &p.bootstrap)] {
            if !value.is_empty() && HostPath::try_from(value.clone()).is_err() {
                return Err((
                    format!("{key}.{field}"),
                    format!("`{value}` is not an absolute path (\"\" means corral's own)"),
                ));
            }
        }
        if runtime != Runtime::Js && p.program.is_empty() {
            return Err((
                format!("{key}.program"),
                "the host's interpreter must be named by its absolute path".into(),
            ));
        }
        if p.threads == 0 {
            return Err((format!("{key}.threads"), "must be at least 1".into()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::KernelFeatures;
    use crate::policy::{CompileInput, PolicyText, compile};
    use corral_protocol::manifest::Manifest;

    struct Fixture {
        dir: tempfile::TempDir,
        package: PathBuf,
    }

    impl Fixture {
        /// A package holding `index.js` and `main.py`, and a stand-in
        /// bootstrap for node and python with the files each imports (the
        /// real ones ship with their runtimes; only their paths matter to
        /// the compiler).
        fn new() -> Fixture {
            let dir = tempfile::Builder::new()
                .prefix("corral-runtimes")
                .tempdir_in("/var/tmp")
                .expect("tempdir");
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
                .expect("chmod");
            let package = dir.path().join("pkg");
            std::fs::create_dir_all(&package).expect("mkdir");
            for (file, text) in [
                ("index.js", "module.exports = class {};"),
                ("main.py", "import corral\n"),
            ] {
                std::fs::write(package.join(file), text).expect("write");
                std::fs::set_permissions(
                    package.join(file),
                    std::fs::Permissions::from_mode(0o644),
                )
                .expect("chmod");
            }
            for rel in [
                "runtimes/node/bootstrap.js",
                "runtimes/node/services.js",
                "runtimes/python/corral_bootstrap.py",
                "runtimes/python/corral/__init__.py",
                "runtimes/python/corral/entry.py",
            ] {
                let path = dir.path().join(rel);
                std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
                std::fs::write(&path, "").expect("write");
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))
                    .expect("chmod");
            }
            Fixture { dir, package }
        }

        fn bootstrap(&self, rel: &str) -> String {
            self.dir
                .path()
                .join("runtimes")
                .join(rel)
                .display()
                .to_string()
        }

        /// A policy whose runtimes are stand-ins: /bin/true as every
        /// program (a real, dynamically linked ELF), the bootstraps above.
        fn policy(&self, extra: &str) -> Policy {
            let text = format!(
                "[runtime.js]\nprogram = \"/bin/true\"\n[runtime.node]\nprogram = \"/bin/true\"\nbootstrap = \"{}\"\n[runtime.python]\nprogram = \"/bin/true\"\nbootstrap = \"{}\"\n",
                self.bootstrap("node/bootstrap.js"),
                self.bootstrap("python/corral_bootstrap.py"),
            );
            Policy::from_layers(&[
                PolicyText {
                    name: "/etc/corral/policy.d/runtimes.toml".into(),
                    text,
                },
                PolicyText {
                    name: "/etc/corral/policy.d/test.toml".into(),
                    text: extra.into(),
                },
            ])
            .expect("policy")
        }

        fn compile(
            &self,
            manifest: &Manifest,
            policy: &Policy,
        ) -> Result<SandboxPolicy, CompileError> {
            compile(&CompileInput {
                manifest,
                manifest_file: "pkg/plugin.toml",
                package_dir: &self.package,
                policy,
                features: &KernelFeatures::all(),
                engine: &semver::Version::new(0, 1, 0),
            })
        }
    }

    fn manifest(runtime: &str, entry: &str, extra: &str) -> Manifest {
        Manifest::parse(
            &format!(
                "[plugin]\nname = \"script\"\nversion = \"1.0.0\"\nentry = \"{entry}\"\nruntime = \"{runtime}\"\n{extra}"
            ),
            "pkg/plugin.toml",
        )
        .expect("manifest")
    }

    fn rule<'a>(sp: &'a SandboxPolicy, path: &str) -> Option<&'a FsRule> {
        sp.confinement
            .landlock
            .as_ref()
            .expect("landlock")
            .fs
            .iter()
            .find(|r| r.path == path)
    }

    #[test]
    fn a_js_plugin_runs_its_entry_as_data_under_the_engine() {
        let fx = Fixture::new();
        let sp = fx
            .compile(&manifest("js", "index.js", ""), &fx.policy(""))
            .expect("compile");
        let package = fx.package.canonicalize().expect("canonical");
        let entry = package.join("index.js").display().to_string();
        assert_eq!(sp.confinement.entry, "/usr/bin/true");
        assert_eq!(
            sp.confinement.argv,
            vec!["/usr/bin/true".to_string(), entry]
        );
        assert_eq!(
            rule(&sp, &package.display().to_string()).map(|r| r.access),
            Some(FsAccess::Read),
            "the package is read-only data"
        );
        assert_eq!(
            rule(&sp, "/usr/bin/true").map(|r| r.access),
            Some(FsAccess::ReadExec),
            "the program is executable"
        );
        assert_eq!(
            rule(&sp, "/usr/lib").map(|r| r.access),
            Some(FsAccess::ReadExec),
            "a dynamically linked program gets its libraries"
        );
        assert!(
            sp.confinement
                .env
                .contains(&("CORRAL_PLUGIN_NAME".to_string(), "script".to_string()))
        );
        assert!(sp.provenance.iter().any(|p| p.rule == "runtime"));
        assert_eq!(sp.default_method, None);
        let with_default = fx
            .compile(
                &manifest(
                    "js",
                    "index.js",
                    "default_method = \"codeGeneration.generateCode\"\n",
                ),
                &fx.policy(""),
            )
            .expect("compile");
        assert_eq!(
            with_default.default_method.as_deref(),
            Some("codeGeneration.generateCode")
        );
    }

    #[test]
    fn node_gets_its_flags_bootstrap_syscalls_and_threads() {
        let fx = Fixture::new();
        let sp = fx
            .compile(
                &manifest("node", "index.js", "[limits]\npids = 4\n"),
                &fx.policy(""),
            )
            .expect("compile");
        let bootstrap = fx.bootstrap("node/bootstrap.js");
        let argv = &sp.confinement.argv;
        assert_eq!(argv[1], "--jitless");
        assert_eq!(argv[argv.len() - 2], bootstrap);
        assert!(argv[argv.len() - 1].ends_with("/pkg/index.js"));
        assert_eq!(
            rule(
                &sp,
                &fx.dir.path().join("runtimes/node").display().to_string()
            )
            .map(|r| r.access),
            Some(FsAccess::Read),
            "the bootstrap's directory is readable"
        );
        let seccomp = sp.confinement.seccomp.as_ref().expect("seccomp");
        assert!(seccomp.allowed.contains(&"pkey_alloc".to_string()));
        assert!(seccomp.allowed.contains(&"capget".to_string()));
        assert_eq!(
            sp.resources.pids_max,
            Some(13),
            "raised from the manifest's 4 for node's 12 threads"
        );
        // A native plugin gets none of node's syscalls.
        std::fs::copy("/bin/true", fx.package.join("tool")).expect("copy");
        let native = fx
            .compile(&manifest("native", "tool", ""), &fx.policy(""))
            .expect("native");
        let seccomp = native.confinement.seccomp.as_ref().expect("seccomp");
        assert!(!seccomp.allowed.contains(&"pkey_alloc".to_string()));
        assert_eq!(native.confinement.argv.len(), 1);
    }

    #[test]
    fn python_is_started_isolated_with_its_bootstrap() {
        let fx = Fixture::new();
        let sp = fx
            .compile(&manifest("python", "main.py", ""), &fx.policy(""))
            .expect("compile");
        let argv = &sp.confinement.argv;
        assert_eq!(&argv[1..3], &["-I".to_string(), "-B".to_string()]);
        assert_eq!(argv[3], fx.bootstrap("python/corral_bootstrap.py"));
        assert!(argv[4].ends_with("/pkg/main.py"));
    }

    #[test]
    fn what_a_runtime_lacks_is_a_load_error_naming_it() {
        let fx = Fixture::new();
        let missing = fx
            .compile(
                &manifest("node", "index.js", ""),
                &fx.policy("[runtime.node]\nbootstrap = \"/nonexistent/bootstrap.js\"\n"),
            )
            .expect_err("no bootstrap");
        assert!(
            matches!(&missing, CompileError::Policy { key, .. } if key == "runtime.node.bootstrap"),
            "{missing}"
        );
        let no_program = fx
            .compile(
                &manifest("python", "main.py", ""),
                &fx.policy("[runtime.python]\nprogram = \"/nonexistent/python3\"\n"),
            )
            .expect_err("no program");
        assert!(
            matches!(&no_program, CompileError::Policy { key, .. } if key == "runtime.python.program"),
            "{no_program}"
        );
        // A bootstrap without what it imports beside it would fail only
        // once started: refused here, naming the file.
        for (runtime, entry, companion) in [
            ("node", "index.js", "runtimes/node/services.js"),
            ("python", "main.py", "runtimes/python/corral/entry.py"),
        ] {
            let path = fx.dir.path().join(companion);
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
            let unreadable = fx
                .compile(&manifest(runtime, entry, ""), &fx.policy(""))
                .expect_err("an unreadable companion");
            std::fs::remove_file(&path).expect("remove");
            let missing = fx
                .compile(&manifest(runtime, entry, ""), &fx.policy(""))
                .expect_err("a missing companion");
            for err in [&unreadable, &missing] {
                assert!(
                    matches!(err, CompileError::Policy { key, reason, .. }
                        if *key == format!("runtime.{runtime}.bootstrap")
                            && reason.contains(companion)),
                    "{err}"
                );
            }
            assert!(unreadable.to_string().contains("chmod o+r"), "{unreadable}");
        }
        let script = fx.package.join("index.js");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let not_elf = fx
            .compile(
                &manifest("js", "index.js", ""),
                &fx.policy(&format!(
                    "[runtime.js]\nprogram = \"{}\"\n",
                    fx.package.join("index.js").display()
                )),
            )
            .expect_err("a script is no program");
        assert!(not_elf.to_string().contains("not an ELF"), "{not_elf}");
    }

    #[test]
    fn a_script_entry_must_be_in_the_package_and_readable_by_plugins() {
        let fx = Fixture::new();
        let policy = fx.policy("");
        let err = |m: Manifest| fx.compile(&m, &policy).expect_err("refused");
        let e = err(manifest("js", "missing.js", ""));
        assert!(
            matches!(&e, CompileError::Manifest { key, .. } if key == "plugin.entry"),
            "{e}"
        );
        std::fs::write(fx.dir.path().join("outside.js"), "").expect("write");
        std::os::unix::fs::symlink(fx.dir.path().join("outside.js"), fx.package.join("link.js"))
            .expect("symlink");
        let e = err(manifest("js", "link.js", ""));
        assert!(e.to_string().contains("outside the package"), "{e}");
        std::fs::set_permissions(
            fx.package.join("index.js"),
            std::fs::Permissions::from_mode(0o600),
        )
        .expect("chmod");
        let e = err(manifest("js", "index.js", ""));
        assert!(e.to_string().contains("chmod o+r"), "{e}");
    }

    #[test]
    fn runtime_profiles_are_checked_with_the_policy() {
        for (text, key, reason) in [
            (
                "[runtime.node]\nprogram = \"node\"\n",
                "runtime.node.program",
                "not an absolute path",
            ),
            (
                "[runtime.python]\nprogram = \"\"\n",
                "runtime.python.program",
                "absolute path",
            ),
            (
                "[runtime.node]\nsyscalls = [\"@nope\"]\n",
                "runtime.node.syscalls",
                "unknown syscall group",
            ),
            (
                "[runtime.js]\nthreads = 0\n",
                "runtime.js.threads",
                "at least 1",
            ),
            (
                "[runtime.ruby]\nprogram = \"/usr/bin/ruby\"\n",
                "runtime.ruby",
                "unknown field",
            ),
        ] {
            let e = Policy::from_layers(&[PolicyText {
                name: "/etc/corral/policy.toml".into(),
                text: text.into(),
            }])
            .expect_err(text);
            assert_eq!(e.key, key, "{e}");
            assert!(e.reason.contains(reason), "{e}");
            assert_eq!(e.file, "/etc/corral/policy.toml");
        }
    }
}
