//! Named system call groups (`policies/syscalls.toml`, built in) and the
//! resolution of names to system call numbers of the running architecture.

use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;
use syscalls::Sysno;

/// The built-in groups file.
pub const BUILTIN_GROUPS: &str = include_str!("../../../policies/syscalls.toml");

/// System calls whose arguments the compiler shapes from permissions; they
/// may not be listed by name (listing them would bypass the shaping).
pub const SHAPED: &[&str] = &["clone", "clone3", "socket"];

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyscallGroups {
    groups: BTreeMap<String, Vec<String>>,
    builtin: BTreeSet<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupsFile {
    groups: BTreeMap<String, Vec<String>>,
}

impl SyscallGroups {
    /// The built-in groups. They are checked by this crate's tests, so a
    /// failure here is a build defect, reported as an empty set plus a
    /// logged error rather than a panic.
    pub fn builtin() -> SyscallGroups {
        match toml::from_str::<GroupsFile>(BUILTIN_GROUPS) {
            Ok(file) => SyscallGroups {
                builtin: file.groups.keys().cloned().collect(),
                groups: file.groups,
            },
            Err(e) => {
                tracing::error!(error = %e, "built-in syscall groups do not parse");
                SyscallGroups::default()
            }
        }
    }

    /// Adds an operator group. Its members must resolve.
    pub fn add(&mut self, name: &str, members: &[String]) -> Result<(), String> {
        if !name.starts_with('@') || name.len() < 2 {
            return Err(format!("group name `{name}` must start with '@'"));
        }
        if self.builtin.contains(name) {
            return Err(format!(
                "`{name}` is a built-in group and cannot be redefined"
            ));
        }
        self.groups.insert(name.to_string(), members.to_vec());
        for member in members {
            if member == name {
                return Err(format!("group `{name}` includes itself"));
            }
            if let Err(e) = self.resolve(member) {
                self.groups.remove(name);
                return Err(e);
            }
        }
        Ok(())
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.groups.keys().map(String::as_str)
    }

    /// Expands a group or system call name to system call names.
    pub fn resolve(&self, name: &str) -> Result<Vec<String>, String> {
        let mut out = BTreeSet::new();
        self.expand(name, &mut out, 0)?;
        Ok(out.into_iter().collect())
    }

    fn expand(&self, name: &str, out: &mut BTreeSet<String>, depth: usize) -> Result<(), String> {
        if depth > 8 {
            return Err(format!("syscall groups nest too deeply at `{name}`"));
        }
        if name.starts_with('@') {
            let members = self
                .groups
                .get(name)
                .ok_or_else(|| format!("unknown syscall group `{name}`"))?;
            for member in members {
                self.expand(member, out, depth + 1)?;
            }
            return Ok(());
        }
        if SHAPED.contains(&name) {
            return Err(format!(
                "`{name}` cannot be listed: corral shapes it from the plugin's permissions"
            ));
        }
        sysno(name)?;
        out.insert(name.to_string());
        Ok(())
    }
}

/// The number of a system call on this architecture.
pub fn sysno(name: &str) -> Result<Sysno, String> {
    Sysno::from_str(name).map_err(|_| {
        format!(
            "unknown system call `{name}` (not a system call on {})",
            std::env::consts::ARCH
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_group_resolves() {
        let groups = SyscallGroups::builtin();
        assert!(groups.names().count() >= 10);
        for name in groups.names() {
            let members = groups
                .resolve(name)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(!members.is_empty(), "{name} is empty");
        }
    }

    #[test]
    fn unknown_names_and_shaped_calls_are_rejected() {
        let groups = SyscallGroups::builtin();
        assert!(groups.resolve("read").is_ok());
        assert!(
            groups
                .resolve("frobnicate")
                .expect_err("unknown")
                .contains("unknown system call")
        );
        assert!(
            groups
                .resolve("@frob")
                .expect_err("unknown")
                .contains("unknown syscall group")
        );
        assert!(
            groups
                .resolve("clone")
                .expect_err("shaped")
                .contains("shapes it")
        );
    }

    #[test]
    fn dangerous_calls_are_not_in_the_base_groups() {
        let groups = SyscallGroups::builtin();
        let base = [
            "@default",
            "@basic-io",
            "@file-system",
            "@io-event",
            "@ipc",
            "@signal",
            "@timer",
        ];
        let mut allowed = BTreeSet::new();
        for g in base {
            allowed.extend(groups.resolve(g).expect("group"));
        }
        for forbidden in [
            "mount",
            "umount2",
            "unshare",
            "setns",
            "ptrace",
            "setuid",
            "setresuid",
            "chroot",
            "pivot_root",
            "init_module",
            "finit_module",
            "bpf",
            "kexec_load",
            "fork",
            "vfork",
            "connect",
            "bind",
            "perf_event_open",
            "userfaultfd",
            "process_vm_readv",
        ] {
            assert!(
                !allowed.contains(forbidden),
                "{forbidden} is in the base groups"
            );
        }
    }
}
