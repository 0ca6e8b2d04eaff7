//! Step `bootstrap`: a clean signal state, then the one frame the
//! supervisor sends.
//!
//! The spawner may have blocked every signal in the thread that cloned us
//! (so that no handler of the daemon runs in the vfork child), and the
//! Rust runtime ignores SIGPIPE and handles SIGSEGV/SIGBUS. A blocked mask
//! and ignored dispositions survive `execve`, so both are reset here, before
//! anything else, to what a freshly started program expects.

use crate::channel::Channel;
use crate::error::{SandboxError, Step};
use corral_protocol::{Bootstrap, FrameReader, frame};
use nix::errno::Errno;
use std::os::fd::RawFd;

/// Unblocks every signal and restores the default disposition of each.
pub fn reset_signals() -> Result<(), SandboxError> {
    // SAFETY: an all-zero sigset_t is a valid value; sigemptyset then
    // initialises it properly.
    let mut empty: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `empty` is a valid sigset_t to write to.
    unsafe { libc::sigemptyset(&mut empty) };
    // SAFETY: `empty` is initialised; the old mask is not wanted.
    let rc = unsafe { libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(SandboxError::sys(
            Step::Bootstrap,
            Errno::last(),
            "unblock all signals",
        ));
    }
    // The raw system call, not the C library's sigaction: glibc refuses to
    // touch the real-time signals it reserves for itself (32 and 33), yet
    // an ignored one would be inherited by the plugin all the same.
    let default = KernelSigaction::default();
    for signal in 1..=libc::SIGRTMAX() {
        if signal == libc::SIGKILL || signal == libc::SIGSTOP {
            continue;
        }
        // SAFETY: `default` is a valid kernel sigaction (SIG_DFL, no flags,
        // empty mask); the old action is not wanted.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                signal,
                &default as *const KernelSigaction,
                std::ptr::null_mut::<KernelSigaction>(),
                SIGSET_BYTES,
            )
        };
        if rc != 0 {
            return Err(SandboxError::sys(
                Step::Bootstrap,
                Errno::last(),
                format_args!("reset the disposition of signal {signal}"),
            ));
        }
    }
    Ok(())
}

/// Size of the kernel's signal set: 64 signals.
const SIGSET_BYTES: usize = 8;

/// The kernel's `struct sigaction` with handler SIG_DFL (0), no flags and
/// an empty mask. All zero, so the field order, which differs between
/// architectures, does not matter; its size covers the largest layout
/// (handler, flags, restorer, mask).
#[repr(C)]
#[derive(Default)]
struct KernelSigaction {
    fields: [u64; 4],
}

/// Reads the supervisor's [`Bootstrap`] frame from the channel.
pub fn read(channel: RawFd) -> Result<Bootstrap, SandboxError> {
    let mut reader = FrameReader::new(Channel(channel), frame::HANDSHAKE_MAX_FRAME);
    match reader.read::<Bootstrap>() {
        Ok(Some(bootstrap)) => Ok(bootstrap),
        Ok(None) => Err(SandboxError::new(
            Step::Bootstrap,
            format!("the channel (fd {channel}) closed before the bootstrap frame arrived"),
        )),
        Err(corral_protocol::FrameError::Io(e)) => Err(SandboxError::io(
            Step::Bootstrap,
            &e,
            format_args!("read the bootstrap frame from fd {channel}"),
        )),
        Err(e) => Err(SandboxError::new(
            Step::Bootstrap,
            format!("bad bootstrap frame on fd {channel}: {e}"),
        )),
    }
}
