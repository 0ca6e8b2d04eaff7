//! The smallest grants that would have let a learning run pass: a
//! `[permissions]` fragment for `plugin.toml` and a `[plugins.NAME]`
//! fragment for the operator's policy, each line with why.
//!
//! A need the compiled (normal) policy already meets is left out: reads
//! beneath a Landlock rule, writes beneath a writable one (the scratch
//! space among them), the entry's own exec. What remains becomes:
//! `fs.read` (paths read or executed), `fs.write` (paths written; for a
//! created file, its directory), `net` (`connect` with the TCP ports
//! reached, or `"host"` for a bind), `exec` (a process made, or another
//! program executed), and `syscalls` for refused calls none of these
//! explain.

use super::record::{Need, OpenAccess};
use corral_protocol::policy::{FsAccess, SandboxPolicy};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Calls a granted permission already brings (its syscall groups).
const EXPLAINED_BY_EXEC: &[&str] = &[
    "clone",
    "fork",
    "vfork",
    "execveat",
    "wait4",
    "waitid",
    "setsid",
    "setpgid",
    "pidfd_open",
    "pidfd_send_signal",
];
const EXPLAINED_BY_NET: &[&str] = &["socket", "connect", "bind", "listen", "accept", "accept4"];

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Draft {
    pub plugin: String,
    /// Path → why.
    pub fs_read: BTreeMap<PathBuf, String>,
    pub fs_write: BTreeMap<PathBuf, String>,
    /// TCP port → why.
    pub connect: BTreeMap<u16, String>,
    /// Why the host's network is needed (a bind), if it is.
    pub host_network: Option<String>,
    pub exec: Option<String>,
    /// System call → why.
    pub syscalls: BTreeMap<String, String>,
    /// Needs past the record's bound, not drafted.
    pub dropped: u64,
}

fn quoted(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn covered(sandbox: &SandboxPolicy, path: &Path, need: FsAccess) -> bool {
    let Some(landlock) = &sandbox.confinement.landlock else {
        return true;
    };
    landlock.fs.iter().any(|rule| {
        path.starts_with(&rule.path)
            && match need {
                FsAccess::Read => true,
                FsAccess::ReadExec => {
                    matches!(rule.access, FsAccess::ReadExec | FsAccess::ReadWrite)
                }
                FsAccess::ReadWrite => rule.access == FsAccess::ReadWrite,
            }
    })
}

/// Drops entries beneath another entry of the same map.
fn outermost(map: &mut BTreeMap<PathBuf, String>) {
    let keys: Vec<PathBuf> = map.keys().cloned().collect();
    for k in &keys {
        if keys.iter().any(|o| o != k && k.starts_with(o)) {
            map.remove(k);
        }
    }
}

fn times(n: u64) -> String {
    if n == 1 {
        "once".into()
    } else {
        format!("{n} times")
    }
}

/// Builds the draft for `plugin` from what its run needed.
pub fn build(
    plugin: &str,
    sandbox: &SandboxPolicy,
    needs: &BTreeMap<Need, u64>,
    dropped: u64,
) -> Draft {
    let mut d = Draft {
        plugin: plugin.to_string(),
        dropped,
        ..Draft::default()
    };
    let entry = PathBuf::from(&sandbox.confinement.entry);
    let mut refused: Vec<(&str, Option<&str>, u64)> = Vec::new();
    for (need, &n) in needs {
        match need {
            Need::Open { path, access } => match access {
                OpenAccess::Read if !covered(sandbox, path, FsAccess::Read) => {
                    d.fs_read
                        .entry(path.clone())
                        .or_insert_with(|| format!("read {}, {}", path.display(), times(n)));
                }
                OpenAccess::Write if !covered(sandbox, path, FsAccess::ReadWrite) => {
                    d.fs_write
                        .entry(path.clone())
                        .or_insert_with(|| format!("written, {}", times(n)));
                }
                OpenAccess::Create => {
                    let dir = path.parent().unwrap_or(path).to_path_buf();
                    if !covered(sandbox, &dir, FsAccess::ReadWrite) {
                        d.fs_write
                            .entry(dir)
                            .or_insert_with(|| format!("created {}", path.display()));
                    }
                }
                _ => {}
            },
            Need::Exec { path } => {
                if *path != entry {
                    d.exec
                        .get_or_insert_with(|| format!("executed {}", path.display()));
                    if !covered(sandbox, path, FsAccess::ReadExec) {
                        d.fs_read
                            .entry(path.clone())
                            .or_insert_with(|| format!("executed {}", path.display()));
                    }
                }
            }
            Need::Connect { address, port } => {
                d.connect
                    .entry(*port)
                    .or_insert_with(|| format!("connected to {address} port {port}"));
            }
            Need::Bind { port } => {
                d.host_network
                    .get_or_insert_with(|| format!("bound port {port}"));
            }
            Need::Syscall { name, argument } => {
                refused.push((name, argument.as_deref(), n));
            }
        }
    }
    for (name, argument, n) in refused {
        let shown = match argument {
            Some(a) => format!("{name}({a})"),
            None => name.to_string(),
        };
        if EXPLAINED_BY_EXEC.contains(&name) {
            d.exec
                .get_or_insert_with(|| format!("{shown} made a process"));
        } else if EXPLAINED_BY_NET.contains(&name)
            && (!d.connect.is_empty() || d.host_network.is_some())
        {
            // The network permission brings it.
        } else {
            d.syscalls
                .entry(name.to_string())
                .and_modify(|why| why.push_str(&format!("; {shown}")))
                .or_insert_with(|| format!("called {shown}, {}", times(n)));
        }
    }
    // Reads beneath a written directory are granted by the write.
    let written: Vec<PathBuf> = d.fs_write.keys().cloned().collect();
    d.fs_read
        .retain(|p, _| !written.iter().any(|w| p.starts_with(w)));
    outermost(&mut d.fs_read);
    outermost(&mut d.fs_write);
    d
}

impl Draft {
    /// Whether the run needed nothing beyond what it was granted.
    pub fn is_empty(&self) -> bool {
        self.fs_read.is_empty()
            && self.fs_write.is_empty()
            && self.connect.is_empty()
            && self.host_network.is_none()
            && self.exec.is_none()
            && self.syscalls.is_empty()
    }

    fn paths(out: &mut String, key: &str, map: &BTreeMap<PathBuf, String>) {
        if map.is_empty() {
            return;
        }
        let _ = writeln!(out, "{key} = [");
        for (path, why) in map {
            let _ = writeln!(out, "    {},  # {why}", quoted(&path.display().to_string()));
        }
        let _ = writeln!(out, "]");
    }

    /// The `[permissions]` fragment for `plugin.toml`.
    pub fn manifest_fragment(&self) -> String {
        let mut out = String::from("[permissions]\n");
        Self::paths(&mut out, "fs.read", &self.fs_read);
        Self::paths(&mut out, "fs.write", &self.fs_write);
        if let Some(why) = &self.host_network {
            let _ = writeln!(out, "net = \"host\"  # {why}");
        } else if !self.connect.is_empty() {
            let ports: Vec<String> = self
                .connect
                .keys()
                .map(|p| quoted(&format!("tcp:{p}")))
                .collect();
            let whys: Vec<&str> = self.connect.values().map(String::as_str).collect();
            let _ = writeln!(
                out,
                "net = {{ connect = [{}] }}  # {}",
                ports.join(", "),
                whys.join("; ")
            );
        }
        if let Some(why) = &self.exec {
            let _ = writeln!(out, "exec = true  # {why}");
        }
        out
    }

    /// The `[plugins.NAME]` fragment for the operator's policy: the grants
    /// the manifest fragment asks for, and the extra system calls.
    pub fn policy_fragment(&self) -> String {
        let mut out = format!("[plugins.{}]\n", self.plugin);
        let mut grant = String::new();
        let as_policy = |m: &BTreeMap<PathBuf, String>| -> BTreeMap<PathBuf, String> {
            m.iter()
                .map(|(p, why)| (p.clone(), format!("{why} (manifest fs)")))
                .collect()
        };
        Self::paths(&mut grant, "grant.fs_read", &as_policy(&self.fs_read));
        Self::paths(&mut grant, "grant.fs_write", &as_policy(&self.fs_write));
        if let Some(why) = &self.host_network {
            let _ = writeln!(grant, "grant.net = \"host\"  # {why}");
        } else if !self.connect.is_empty() {
            let _ = writeln!(
                grant,
                "grant.net = \"connect\"  # the manifest's net.connect ports"
            );
        }
        if self.exec.is_some() {
            let _ = writeln!(grant, "grant.exec = true  # the manifest's exec");
        }
        out.push_str(&grant);
        if !self.syscalls.is_empty() {
            let _ = writeln!(out, "syscalls = [");
            for (name, why) in &self.syscalls {
                let _ = writeln!(out, "    {},  # {why}", quoted(name));
            }
            let _ = writeln!(out, "]");
        }
        out
    }
}
