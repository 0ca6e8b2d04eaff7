//! One daemon's world on disk: a directory under /var/tmp with its
//! configuration, socket, state, policy and source folder, and the names
//! it uses in the kernel (a cgroup base and a uid range of its own, so
//! parallel daemons never touch each other's cgroups or plugin processes
//! and leak checks count exactly what this daemon made).
//!
//! /var/tmp and not /tmp: the sandbox mounts each plugin's scratch tmpfs
//! over /tmp, and corrald refuses packages below it.

use crate::env::test_env;
use crate::leaks;
use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// uids each daemon's plugins may use: more than any test runs at once
/// (the 200-plugin test included).
pub const UIDS_PER_DAEMON: u32 = 1024;
/// Where test uid ranges start: far above the built-in policy's range and
/// above the uids the access tests connect as.
const UID_BASE: u32 = 3_000_000;

/// The directory, configuration and kernel names of one daemon (or of a
/// daemon started several times, for restart tests).
pub struct Setup {
    dir: tempfile::TempDir,
    pub id: String,
    pub cgroup_base: String,
    pub uid_first: u32,
    pub uid_last: u32,
    pub socket_mode: String,
    pub admin_groups: Vec<String>,
    pub caller_groups: Vec<String>,
    /// `key = value` lines of the `[limits]` table, TOML values as text.
    pub limits: Vec<(String, String)>,
    pub shutdown_grace: String,
    /// `autoload` and `watch` of the source folder.
    pub load_sources: bool,
    pub watch_sources: bool,
    /// Extra environment for corrald (`CORRAL_MASK_FEATURES`, say).
    pub env: Vec<(String, String)>,
    /// corrald's open files limit (soft and hard), when a test sets one.
    pub open_files: Option<u64>,
    /// TOML appended to corrald.toml (tables such as `[[s3_sources]]`).
    pub extra_config: String,
}

impl Default for Setup {
    fn default() -> Self {
        Setup::new()
    }
}

impl Setup {
    pub fn new() -> Setup {
        // Fail early, before any directory exists, when the environment
        // is not there.
        let _ = test_env();
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let id = format!("{pid}-{n}");
        let dir = tempfile::Builder::new()
            .prefix(&format!("corral-dt-{id}-"))
            .tempdir_in("/var/tmp")
            .expect("a directory in /var/tmp");
        // Plugins run as other uids and reach their packages in the store
        // below this directory; peers of other uids reach the socket.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod 0755 the test directory");
        let slot = (pid % 4096) * 64 + n % 64;
        let uid_first = UID_BASE + slot * UIDS_PER_DAEMON;
        let setup = Setup {
            dir,
            cgroup_base: format!("corral-dt-{id}"),
            id,
            uid_first,
            uid_last: uid_first + UIDS_PER_DAEMON - 1,
            socket_mode: "0660".into(),
            admin_groups: Vec::new(),
            caller_groups: Vec::new(),
            limits: Vec::new(),
            shutdown_grace: "5s".into(),
            load_sources: true,
            watch_sources: true,
            env: Vec::new(),
            open_files: None,
            extra_config: String::new(),
        };
        for sub in ["sources", "policy.d", "state"] {
            std::fs::create_dir_all(setup.root().join(sub)).expect("create the test layout");
        }
        setup.set_policy("");
        setup
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn socket(&self) -> PathBuf {
        self.root().join("corral.sock")
    }

    pub fn sources(&self) -> PathBuf {
        self.root().join("sources")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.root().join("state")
    }

    pub fn config_path(&self) -> PathBuf {
        self.root().join("corrald.toml")
    }

    pub fn policy_path(&self) -> PathBuf {
        self.root().join("policy.toml")
    }

    pub fn log_path(&self) -> PathBuf {
        self.root().join("corrald.log")
    }

    /// Sets `key=value` in corrald's environment.
    pub fn daemon_env(mut self, key: &str, value: &str) -> Setup {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    pub fn limit(mut self, key: &str, value: &str) -> Setup {
        self.limits.push((key.to_string(), value.to_string()));
        self
    }

    /// The operator policy file (layered over the built-in default; the
    /// uid range lives in a drop-in so tests never need to repeat it).
    pub fn set_policy(&self, text: &str) {
        std::fs::write(self.policy_path(), text).expect("write policy.toml");
        std::fs::write(
            self.root().join("policy.d/00-test-uids.toml"),
            format!(
                "# this daemon's own uids, apart from every other test's\n[sandbox]\nuid_range = \"{}-{}\"\n",
                self.uid_first, self.uid_last
            ),
        )
        .expect("write the uid drop-in");
    }

    pub fn with_policy(self, text: &str) -> Setup {
        self.set_policy(text);
        self
    }

    /// Writes `corrald.toml` from the settings; [`crate::Daemon::start`]
    /// calls it, so settings changed before a (re)start apply.
    pub fn write_config(&self) {
        let list = |items: &[String]| {
            items
                .iter()
                .map(|i| format!("{i:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut text = String::new();
        let _ = writeln!(
            text,
            "# written by corral-daemon-tests for daemon {}",
            self.id
        );
        let _ = writeln!(text, "socket = {:?}", self.socket().display().to_string());
        let _ = writeln!(text, "socket_mode = {:?}", self.socket_mode);
        let _ = writeln!(text, "socket_group = \"root\"");
        let _ = writeln!(
            text,
            "state_dir = {:?}",
            self.state_dir().display().to_string()
        );
        let _ = writeln!(
            text,
            "policy = {:?}",
            self.policy_path().display().to_string()
        );
        let _ = writeln!(
            text,
            "policy_dir = {:?}",
            self.root().join("policy.d").display().to_string()
        );
        let _ = writeln!(text, "admin_groups = [{}]", list(&self.admin_groups));
        let _ = writeln!(text, "caller_groups = [{}]", list(&self.caller_groups));
        let _ = writeln!(text, "cgroup_base = {:?}", self.cgroup_base);
        let _ = writeln!(text, "shutdown_grace = {:?}", self.shutdown_grace);
        let _ = writeln!(text, "\n[[sources]]");
        let _ = writeln!(text, "path = {:?}", self.sources().display().to_string());
        // `load` is the older name of `autoload`, still accepted.
        let _ = writeln!(text, "load = {}", self.load_sources);
        let _ = writeln!(text, "watch = {}", self.watch_sources);
        let _ = writeln!(text, "\n[limits]");
        for (key, value) in &self.limits {
            let _ = writeln!(text, "{key} = {value}");
        }
        let _ = writeln!(text, "\n{}", self.extra_config);
        std::fs::write(self.config_path(), text).expect("write corrald.toml");
    }

    /// Copies built package `package` into the source folder.
    pub fn package(self, package: &str) -> Setup {
        self.add_package(package, package);
        self
    }

    /// Copies built package `package` into the source folder as `name`.
    pub fn package_as(self, package: &str, name: &str) -> Setup {
        self.add_package(package, name);
        self
    }

    pub fn add_package(&self, package: &str, name: &str) -> PathBuf {
        let dest = self.sources().join(name);
        copy_package(&test_env().package(package), &dest, name);
        dest
    }

    /// A renamed copy of a built package somewhere outside the sources
    /// (for installs from a path).
    pub fn package_copy(&self, package: &str, name: &str, dir: &str) -> PathBuf {
        let dest = self.root().join(dir).join(name);
        copy_package(&test_env().package(package), &dest, name);
        dest
    }
}

impl Drop for Setup {
    /// Whatever a failed test left: processes in this daemon's uid range
    /// and cgroups under its base. A passing test has already proven there
    /// are none.
    fn drop(&mut self) {
        leaks::kill_uid_range(self.uid_first, self.uid_last);
        leaks::remove_cgroup_base(&self.cgroup_base);
    }
}

/// Copies a package directory and renames the plugin in its manifest.
pub fn copy_package(from: &Path, to: &Path, name: &str) {
    copy_tree(from, to);
    set_manifest_key(&to.join("plugin.toml"), "name", name);
}

/// Recursive copy keeping file modes.
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap_or_else(|e| panic!("creating {}: {e}", to.display()));
    let mode = std::fs::metadata(from)
        .unwrap_or_else(|e| panic!("{}: {e}", from.display()))
        .permissions();
    std::fs::set_permissions(to, mode).unwrap_or_else(|e| panic!("chmod {}: {e}", to.display()));
    let entries = std::fs::read_dir(from).unwrap_or_else(|e| panic!("{}: {e}", from.display()));
    for entry in entries {
        let entry = entry.unwrap_or_else(|e| panic!("listing {}: {e}", from.display()));
        let target = to.join(entry.file_name());
        let kind = entry
            .file_type()
            .unwrap_or_else(|e| panic!("{}: {e}", entry.path().display()));
        if kind.is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap_or_else(|e| {
                panic!(
                    "copying {} to {}: {e}",
                    entry.path().display(),
                    target.display()
                )
            });
        }
    }
}

/// Sets `key = "value"` in the `[plugin]` table of a manifest (the first
/// line assigning `key`).
pub fn set_manifest_key(manifest: &Path, key: &str, value: &str) {
    let text = std::fs::read_to_string(manifest)
        .unwrap_or_else(|e| panic!("reading {}: {e}", manifest.display()));
    let mut done = false;
    let mut out = String::new();
    let mut in_plugin = false;
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with('[') {
            in_plugin = trimmed.starts_with("[plugin]");
        }
        let assigns = trimmed
            .strip_prefix(key)
            .is_some_and(|rest| rest.trim_start().starts_with('='));
        if in_plugin && !done && assigns {
            let _ = writeln!(out, "{key} = {value:?}");
            done = true;
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    assert!(
        done,
        "{} has no `{key} = ...` in [plugin]",
        manifest.display()
    );
    std::fs::write(manifest, out).unwrap_or_else(|e| panic!("writing {}: {e}", manifest.display()));
}
