//! Step `no_new_privs`: no execve can ever grant privileges again (setuid
//! bits and file capabilities are ignored). It is also what lets an
//! unprivileged process install Landlock rules and a seccomp filter, the
//! two steps after it.

use crate::error::{SandboxError, Step};
use nix::errno::Errno;

pub fn apply() -> Result<(), SandboxError> {
    // SAFETY: PR_SET_NO_NEW_PRIVS takes plain integers.
    let rc = unsafe {
        libc::prctl(
            libc::PR_SET_NO_NEW_PRIVS,
            1 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    if rc != 0 {
        return Err(SandboxError::sys(
            Step::NoNewPrivs,
            Errno::last(),
            "prctl(PR_SET_NO_NEW_PRIVS, 1)",
        ));
    }
    Ok(())
}
