//! Step `seccomp`: install the syscall filter, last of all.
//!
//! The supervisor compiles the program once per policy; this step only
//! hands the instructions to the kernel. It runs after every other step
//! because the filter may forbid what they use (mount, setns, prctl,
//! landlock_*); after it, the trampoline makes only `sendmsg` and `close`
//! (handing the listener over), `chdir`, `execve` and, on failure, `write`
//! and `exit_group`. A single thread needs no TSYNC.
//!
//! A program with `notify` refers refused calls to the supervisor
//! (`SECCOMP_RET_USER_NOTIF`): it is installed with
//! `SECCOMP_FILTER_FLAG_NEW_LISTENER`, and the listener fd is sent on the
//! channel with `SCM_RIGHTS` behind a four-byte marker, then closed here,
//! so the plugin never holds it. Where the kernel refuses the flag, those
//! returns are rewritten to the program's fallback (kill or errno) and the
//! marker says no listener came.

use crate::error::{SandboxError, Step};
use corral_protocol::policy::{
    BpfInstruction, SECCOMP_LISTENER_ATTACHED, SECCOMP_LISTENER_NONE, SeccompProgram,
};
use nix::errno::Errno;
use std::os::fd::RawFd;

/// The kernel's limit on instructions in one filter (BPF_MAXINSNS).
pub const MAX_INSTRUCTIONS: usize = 4096;

/// The program as the kernel's `struct sock_filter` array.
pub fn to_sock_filters(
    instructions: &[BpfInstruction],
) -> Result<Vec<libc::sock_filter>, SandboxError> {
    if instructions.is_empty() {
        return Err(SandboxError::new(
            Step::Seccomp,
            "the seccomp program is empty; a policy without a filter says so with no program",
        ));
    }
    if instructions.len() > MAX_INSTRUCTIONS {
        return Err(SandboxError::new(
            Step::Seccomp,
            format!(
                "the seccomp program has {} instructions; the kernel accepts at most \
                 {MAX_INSTRUCTIONS}",
                instructions.len()
            ),
        ));
    }
    Ok(instructions
        .iter()
        .map(|i| libc::sock_filter {
            code: i.code,
            jt: i.jt,
            jf: i.jf,
            k: i.k,
        })
        .collect())
}

/// `seccomp(SECCOMP_SET_MODE_FILTER, flags, filters)`: the listener fd
/// with `SECCOMP_FILTER_FLAG_NEW_LISTENER`, else 0.
fn install(filters: &mut [libc::sock_filter], flags: libc::c_ulong) -> Result<i64, Errno> {
    let prog = libc::sock_fprog {
        // Bounded by MAX_INSTRUCTIONS (to_sock_filters).
        len: filters.len() as libc::c_ushort,
        filter: filters.as_mut_ptr(),
    };
    // SAFETY: `prog` points at `filters`, which outlives the call; the
    // kernel copies the program.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flags,
            &prog as *const libc::sock_fprog,
        )
    };
    if rc < 0 { Err(Errno::last()) } else { Ok(rc) }
}

/// Rewrites every `ret SECCOMP_RET_USER_NOTIF` to `ret fallback`.
pub fn without_notify(filters: &mut [libc::sock_filter], fallback: u32) {
    const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
    for f in filters.iter_mut() {
        if f.code == RET_K && f.k == libc::SECCOMP_RET_USER_NOTIF {
            f.k = fallback;
        }
    }
}

/// Sends the marker on `channel`, with `listener` as `SCM_RIGHTS` when
/// there is one. No allocation: the filter is already in force.
fn send_listener(channel: RawFd, listener: Option<RawFd>) -> Result<(), Errno> {
    let marker = match listener {
        Some(_) => SECCOMP_LISTENER_ATTACHED,
        None => SECCOMP_LISTENER_NONE,
    }
    .to_le_bytes();
    let mut iov = libc::iovec {
        iov_base: marker.as_ptr() as *mut libc::c_void,
        iov_len: marker.len(),
    };
    // Room for one cmsghdr and one int, aligned for cmsghdr.
    let mut control = [0u64; 4];
    // SAFETY: msghdr is plain old data; every field used is set below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if let Some(fd) = listener {
        // SAFETY: CMSG_SPACE/CMSG_LEN are pure arithmetic.
        let (space, len) = unsafe {
            (
                libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32),
                libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32),
            )
        };
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: the control buffer holds CMSG_SPACE(int) bytes (32 >= 24),
        // so the first header and its int payload lie inside it.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = len as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), fd);
        }
    }
    loop {
        // SAFETY: msg points at live buffers for the whole call.
        let n = unsafe { libc::sendmsg(channel, &msg, libc::MSG_NOSIGNAL) };
        if n == marker.len() as isize {
            return Ok(());
        }
        let errno = Errno::last();
        if n < 0 && errno == Errno::EINTR {
            continue;
        }
        // A unix stream socket takes four bytes whole or not at all.
        return Err(if n < 0 { errno } else { Errno::EIO });
    }
}

/// Installs `program` (no program: nothing to do). `channel` carries the
/// listener to the supervisor when the program refers calls to it.
pub fn apply(program: Option<&SeccompProgram>, channel: RawFd) -> Result<(), SandboxError> {
    let Some(program) = program else {
        return Ok(());
    };
    let mut filters = to_sock_filters(&program.instructions)?;
    let installed = |e: Errno| {
        SandboxError::sys(
            Step::Seccomp,
            e,
            format_args!(
                "install the seccomp filter ({} instructions)",
                program.instructions.len()
            ),
        )
    };
    let Some(notify) = program.notify else {
        install(&mut filters, 0).map_err(installed)?;
        return Ok(());
    };
    match install(&mut filters, libc::SECCOMP_FILTER_FLAG_NEW_LISTENER) {
        Ok(listener) => {
            let listener = listener as RawFd;
            let sent = send_listener(channel, Some(listener));
            // SAFETY: closing the listener this step created; the
            // supervisor holds its own copy now.
            unsafe { libc::close(listener) };
            sent.map_err(|e| {
                SandboxError::sys(
                    Step::Seccomp,
                    e,
                    "hand the seccomp listener to the supervisor",
                )
            })
        }
        // No listener here (an old kernel, or a filter above us that has
        // one): the program decides alone.
        Err(Errno::EINVAL | Errno::EBUSY) => {
            without_notify(&mut filters, notify.fallback);
            install(&mut filters, 0).map_err(installed)?;
            send_listener(channel, None).map_err(|e| {
                SandboxError::sys(Step::Seccomp, e, "tell the supervisor no listener exists")
            })
        }
        Err(e) => Err(installed(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instructions_map_field_by_field() {
        let filters = to_sock_filters(&[BpfInstruction {
            code: 0x06,
            jt: 1,
            jf: 2,
            k: 0x7fff_0000,
        }])
        .expect("valid");
        assert_eq!(filters.len(), 1);
        assert_eq!(
            (filters[0].code, filters[0].jt, filters[0].jf, filters[0].k),
            (0x06, 1, 2, 0x7fff_0000)
        );
    }

    #[test]
    fn without_notify_rewrites_only_user_notif_returns() {
        let ret = |k| libc::sock_filter {
            code: 0x06,
            jt: 0,
            jf: 0,
            k,
        };
        let mut filters = [
            ret(libc::SECCOMP_RET_USER_NOTIF),
            ret(libc::SECCOMP_RET_ALLOW),
            // A load whose operand happens to equal the value.
            libc::sock_filter {
                code: 0x20,
                jt: 0,
                jf: 0,
                k: libc::SECCOMP_RET_USER_NOTIF,
            },
        ];
        without_notify(&mut filters, libc::SECCOMP_RET_KILL_PROCESS);
        assert_eq!(filters[0].k, libc::SECCOMP_RET_KILL_PROCESS);
        assert_eq!(filters[1].k, libc::SECCOMP_RET_ALLOW);
        assert_eq!(filters[2].k, libc::SECCOMP_RET_USER_NOTIF);
    }

    #[test]
    fn empty_and_oversized_programs_are_refused() {
        let err = to_sock_filters(&[]).expect_err("empty");
        assert_eq!(err.step, Step::Seccomp);
        assert!(err.message.contains("empty"), "{}", err.message);
        let ret_allow = BpfInstruction {
            code: 0x06,
            jt: 0,
            jf: 0,
            k: 0x7fff_0000,
        };
        let err = to_sock_filters(&vec![ret_allow; MAX_INSTRUCTIONS + 1]).expect_err("too long");
        assert!(err.message.contains("4097"), "{}", err.message);
        assert!(to_sock_filters(&vec![ret_allow; MAX_INSTRUCTIONS]).is_ok());
    }
}
