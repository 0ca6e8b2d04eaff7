//! Step `user_namespace`: a user namespace that maps only the plugin's own
//! uid and gid.
//!
//! It comes after `credentials` because an unprivileged process may map
//! exactly its own euid/egid into a namespace it creates; the mounts before
//! it needed root of the initial user namespace. Inside, every other id is
//! unmapped (files owned by them show as nobody) and the namespace's
//! "root" does not exist, so nothing can become it.
//!
//! Creating the namespace grants a full capability set inside it; that set
//! is thrown away again here (bounding set, securebits, capset), so the
//! plugin starts with none, in either namespace. The namespace may have no
//! user namespaces below it (`user.max_user_namespaces = 0`).

use crate::caps;
use crate::error::{SandboxError, Step};
use corral_protocol::policy::{Credentials, Namespaces};
use nix::errno::Errno;
use nix::sched::{CloneFlags, unshare};

/// Never grant capabilities for uid 0, never fix up capabilities on uid
/// changes, never raise ambient ones; and lock all three so the plugin
/// cannot undo them.
pub const SECUREBITS: libc::c_int = libc::SECBIT_NOROOT
    | libc::SECBIT_NOROOT_LOCKED
    | libc::SECBIT_NO_SETUID_FIXUP
    | libc::SECBIT_NO_SETUID_FIXUP_LOCKED
    | libc::SECBIT_NO_CAP_AMBIENT_RAISE
    | libc::SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED;

pub fn apply(ns: &Namespaces, creds: &Credentials) -> Result<(), SandboxError> {
    if !ns.user {
        return Ok(());
    }
    // After setresuid away from root the process is not dumpable, which
    // makes /proc/self/* root-owned: the maps below could not be written.
    prctl(libc::PR_SET_DUMPABLE, 1, "make the process dumpable")?;
    unshare(CloneFlags::CLONE_NEWUSER)
        .map_err(|e| SandboxError::sys(Step::UserNamespace, e, "unshare(CLONE_NEWUSER)"))?;
    // An unprivileged gid_map needs setgroups denied first; it also keeps
    // the plugin from dropping groups to get around a "group may not" rule.
    write_proc("/proc/self/setgroups", "deny")?;
    write_proc("/proc/self/uid_map", &id_map(creds.uid))?;
    write_proc("/proc/self/gid_map", &id_map(creds.gid))?;
    // Creating a user namespace needs no privilege, so seccomp alone would
    // stand between the plugin and a nested one (and the capabilities it
    // brings) where a policy allows unshare or clone flags. This sysctl
    // belongs to the namespace just made and caps the user namespaces that
    // may be created below it: none.
    write_proc("/proc/sys/user/max_user_namespaces", "0")?;

    let last_cap = caps::last_cap(Step::UserNamespace)?;
    caps::drop_bounding_set(Step::UserNamespace, last_cap)?;
    prctl(
        libc::PR_SET_SECUREBITS,
        SECUREBITS as libc::c_ulong,
        "set and lock the securebits",
    )?;
    caps::clear_ambient(Step::UserNamespace)?;
    caps::clear_all(Step::UserNamespace)?;
    caps::verify_empty(Step::UserNamespace)
}

/// One line mapping `id` to itself.
pub(crate) fn id_map(id: u32) -> String {
    format!("{id} {id} 1\n")
}

fn write_proc(path: &str, contents: &str) -> Result<(), SandboxError> {
    // These files accept exactly one write(2); std::fs::write issues one
    // for contents this short.
    std::fs::write(path, contents).map_err(|e| {
        SandboxError::io(
            Step::UserNamespace,
            &e,
            format_args!("write {:?} to {path}", contents.trim_end()),
        )
    })
}

fn prctl(option: libc::c_int, arg: libc::c_ulong, what: &str) -> Result<(), SandboxError> {
    // SAFETY: the options used here take plain integers, no pointers.
    let rc = unsafe {
        libc::prctl(
            option,
            arg,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    if rc != 0 {
        return Err(SandboxError::sys(Step::UserNamespace, Errno::last(), what));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_map_maps_one_id_to_itself() {
        assert_eq!(id_map(200_000), "200000 200000 1\n");
    }

    #[test]
    fn securebits_lock_what_they_set() {
        // Each *_LOCKED bit sits one above its bit.
        for bit in [
            libc::SECBIT_NOROOT,
            libc::SECBIT_NO_SETUID_FIXUP,
            libc::SECBIT_NO_CAP_AMBIENT_RAISE,
        ] {
            assert_ne!(SECUREBITS & bit, 0);
            assert_ne!(SECUREBITS & (bit << 1), 0, "{bit:#x} must be locked");
        }
        assert_eq!(
            SECUREBITS & libc::SECBIT_KEEP_CAPS,
            0,
            "keep-caps would keep capabilities across uid changes"
        );
    }
}
