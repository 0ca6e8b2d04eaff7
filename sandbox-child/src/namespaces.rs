//! Step `namespaces`: check the namespaces the supervisor created at clone
//! time, and join the pre-made ones it handed over.
//!
//! A pid or mount namespace cannot be entered after the fact, so the
//! supervisor creates them with `clone`. This step refuses to go on when
//! they are missing: the next step mounts things, and mounting into the
//! host's mount namespace must never happen, whoever started us.
//!
//! "Not the host's" is checked against the process that started us (the
//! supervisor) and, where this process may look at it, against pid 1. This
//! early, `/proc` is still the procfs of the supervisor's pid namespace, so
//! both are found there by their pids in that namespace. The supervisor is
//! the reference that must be readable: a container may hide its init's
//! namespaces even from root, but the supervisor is ourselves a moment ago.

use crate::error::{SandboxError, Step};
use corral_protocol::policy::{NamespaceSource, Namespaces};
use nix::errno::Errno;
use nix::sched::CloneFlags;
use std::os::fd::RawFd;
use std::os::unix::fs::MetadataExt;

/// Hostname of a plugin with a fresh UTS namespace.
pub const HOSTNAME: &str = "corral";

/// The namespaces that can be joined, with their `/proc/<pid>/ns` names.
fn joinable(ns: &Namespaces) -> [(&'static str, NamespaceSource, CloneFlags); 3] {
    [
        ("net", ns.net, CloneFlags::CLONE_NEWNET),
        ("ipc", ns.ipc, CloneFlags::CLONE_NEWIPC),
        ("uts", ns.uts, CloneFlags::CLONE_NEWUTS),
    ]
}

/// The fds the `fds` step must keep open for this step, by namespace.
pub fn join_fds(ns: &Namespaces) -> Vec<(&'static str, RawFd)> {
    joinable(ns)
        .into_iter()
        .filter_map(|(name, source, _)| match source {
            NamespaceSource::Join { fd } => Some((name, fd)),
            _ => None,
        })
        .collect()
}

pub fn apply(ns: &Namespaces) -> Result<(), SandboxError> {
    if ns.pid {
        let pid = std::process::id();
        if pid != 1 {
            return Err(SandboxError::new(
                Step::Namespaces,
                format!(
                    "expected to be pid 1 of a new pid namespace, but this process is pid {pid}: \
                     the supervisor must clone the trampoline with CLONE_NEWPID"
                ),
            ));
        }
    }
    let references = References::find()?;
    if ns.mount {
        if let Some(owner) = references.sharing("mnt")? {
            return Err(SandboxError::new(
                Step::Namespaces,
                format!(
                    "this process is in the mount namespace of {owner}: refusing to mount \
                     anything into it (the supervisor must clone the trampoline with CLONE_NEWNS)"
                ),
            ));
        }
    }
    for (name, source, flag) in joinable(ns) {
        match source {
            NamespaceSource::Host => {}
            NamespaceSource::Fresh => {
                if let Some(owner) = references.sharing(name)? {
                    return Err(SandboxError::new(
                        Step::Namespaces,
                        format!(
                            "a fresh {name} namespace was asked for but this process is in the \
                             {name} namespace of {owner}"
                        ),
                    ));
                }
            }
            NamespaceSource::Join { fd } => {
                join(name, fd, flag)?;
                if let Some(owner) = references.sharing(name)? {
                    return Err(SandboxError::new(
                        Step::Namespaces,
                        format!("fd {fd} given for the {name} namespace is the one of {owner}"),
                    ));
                }
            }
        }
    }
    if ns.uts == NamespaceSource::Fresh {
        nix::unistd::sethostname(HOSTNAME).map_err(|e| {
            SandboxError::sys(Step::Namespaces, e, format_args!("set hostname {HOSTNAME}"))
        })?;
    }
    if ns.cgroup {
        // Rooted at the cgroup the supervisor put us in before it sent the
        // bootstrap: the plugin sees `/` there, not the host's tree.
        nix::sched::unshare(CloneFlags::CLONE_NEWCGROUP)
            .map_err(|e| SandboxError::sys(Step::Namespaces, e, "unshare a cgroup namespace"))?;
    }
    if ns.memfd_noexec {
        memfd_noexec()?;
    }
    Ok(())
}

/// The sysctl that makes every memfd of a pid namespace non-executable.
pub const MEMFD_NOEXEC: &str = "/proc/sys/vm/memfd_noexec";

/// `vm.memfd_noexec = 2` for our pid namespace: memfd_create refuses
/// MFD_EXEC and seals every memfd non-executable, so `execve` of
/// /proc/self/fd/N (or `execveat` of a memfd) cannot run code the plugin
/// wrote to memory. The sysctl acts on the writer's pid namespace, and a
/// child namespace cannot lower it. Needs CAP_SYS_ADMIN, so before the
/// credentials step.
fn memfd_noexec() -> Result<(), SandboxError> {
    std::fs::write(MEMFD_NOEXEC, b"2").map_err(|e| {
        SandboxError::io(
            Step::Namespaces,
            &e,
            format_args!("write 2 to {MEMFD_NOEXEC} (Linux 6.3 or later)"),
        )
    })?;
    let now = std::fs::read_to_string(MEMFD_NOEXEC)
        .map_err(|e| SandboxError::io(Step::Namespaces, &e, format_args!("read {MEMFD_NOEXEC}")))?;
    if now.trim() != "2" {
        return Err(SandboxError::new(
            Step::Namespaces,
            format!("{MEMFD_NOEXEC} reads {:?} after writing 2", now.trim()),
        ));
    }
    Ok(())
}

fn join(name: &str, fd: RawFd, flag: CloneFlags) -> Result<(), SandboxError> {
    // SAFETY: setns only reads the descriptor; the kernel checks that it
    // is a namespace of the kind asked for.
    let rc = unsafe { libc::setns(fd, flag.bits()) };
    if rc != 0 {
        return Err(SandboxError::sys(
            Step::Namespaces,
            Errno::last(),
            format_args!("join the {name} namespace open on fd {fd}"),
        ));
    }
    // The fd was the `fds` step's last exception: the plugin must not
    // inherit it.
    // SAFETY: the fd was handed to us for this step alone and is not used
    // again.
    unsafe { libc::close(fd) };
    Ok(())
}

/// The processes whose namespaces count as "the host's".
struct References {
    /// The supervisor, by its pid in the procfs on /proc.
    parent: u32,
}

impl References {
    fn find() -> Result<Self, SandboxError> {
        const STATUS: &str = "/proc/self/status";
        let status = std::fs::read_to_string(STATUS)
            .map_err(|e| SandboxError::io(Step::Namespaces, &e, format_args!("read {STATUS}")))?;
        match parent_pid(&status) {
            Some(parent) if parent > 0 => Ok(References { parent }),
            _ => Err(SandboxError::new(
                Step::Namespaces,
                format!(
                    "{STATUS} names no parent process: /proc is not the supervisor's procfs, so \
                     the namespaces cannot be checked"
                ),
            )),
        }
    }

    /// Which reference process, if any, shares this process's `name`
    /// namespace.
    fn sharing(&self, name: &str) -> Result<Option<String>, SandboxError> {
        let ours = namespace_id(&format!("/proc/self/ns/{name}"))?;
        let parent = namespace_id(&format!("/proc/{}/ns/{name}", self.parent))?;
        if ours == parent {
            return Ok(Some(format!("the supervisor (pid {})", self.parent)));
        }
        if self.parent != 1 {
            match namespace_id(&format!("/proc/1/ns/{name}")) {
                Ok(init) if init == ours => return Ok(Some("the host's init (pid 1)".into())),
                Ok(_) => {}
                // Hidden from us: the supervisor's answer stands.
                Err(e) if e.errno == libc::EACCES || e.errno == libc::EPERM => {}
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }
}

/// The `PPid:` field of a /proc/<pid>/status text.
pub(crate) fn parent_pid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("PPid:"))
        .and_then(|value| value.trim().parse().ok())
}

fn namespace_id(path: &str) -> Result<(u64, u64), SandboxError> {
    // stat follows the magic link to the namespace's nsfs inode: device and
    // inode number identify a namespace.
    let meta = std::fs::metadata(path).map_err(|e| {
        SandboxError::io(
            Step::Namespaces,
            &e,
            format_args!("identify the namespace of {path}"),
        )
    })?;
    Ok((meta.dev(), meta.ino()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn namespaces(net: NamespaceSource, ipc: NamespaceSource, uts: NamespaceSource) -> Namespaces {
        Namespaces {
            user: true,
            pid: true,
            mount: true,
            net,
            ipc,
            uts,
            cgroup: false,
            memfd_noexec: false,
        }
    }

    #[test]
    fn join_fds_lists_only_joined_namespaces() {
        let ns = namespaces(
            NamespaceSource::Join { fd: 7 },
            NamespaceSource::Fresh,
            NamespaceSource::Join { fd: 9 },
        );
        assert_eq!(join_fds(&ns), [("net", 7), ("uts", 9)]);
        let ns = namespaces(
            NamespaceSource::Host,
            NamespaceSource::Fresh,
            NamespaceSource::Fresh,
        );
        assert!(join_fds(&ns).is_empty());
    }

    #[test]
    fn parent_pid_is_read_from_status() {
        assert_eq!(
            parent_pid("Name:\tsh\nPid:\t9\nPPid:\t42\nUid:\t0\n"),
            Some(42)
        );
        assert_eq!(parent_pid("PPid:\t0\n"), Some(0));
        assert_eq!(parent_pid("Name:\tsh\n"), None);
        assert_eq!(parent_pid("PPid:\tx\n"), None);
    }

    #[test]
    fn this_test_process_shares_its_namespaces_with_itself() {
        // /proc/self and /proc/<own pid> must name the same namespace.
        let own = namespace_id(&format!("/proc/{}/ns/mnt", std::process::id()))
            .expect("read own mnt namespace");
        assert_eq!(
            namespace_id("/proc/self/ns/mnt").expect("read /proc/self/ns/mnt"),
            own
        );
    }
}
