//! Step `pdeathsig`: the plugin dies with the supervisor.
//!
//! The kernel clears the parent-death signal whenever credentials change,
//! so it is set after the uid change and the user namespace. It fires when
//! the thread that cloned us exits; if the supervisor is already gone by
//! now, it never will. `getppid()` cannot tell (it is 0 for pid 1 of a pid
//! namespace), but the channel can: a supervisor that exited has closed its
//! end, which shows as a hang-up on ours.

use crate::error::{SandboxError, Step};
use nix::errno::Errno;
use std::os::fd::RawFd;

pub fn apply(die_with_parent: bool, channel: RawFd) -> Result<(), SandboxError> {
    if !die_with_parent {
        return Ok(());
    }
    // SAFETY: PR_SET_PDEATHSIG takes a signal number, no pointers.
    let rc = unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    if rc != 0 {
        return Err(SandboxError::sys(
            Step::Pdeathsig,
            Errno::last(),
            "prctl(PR_SET_PDEATHSIG, SIGKILL)",
        ));
    }
    if peer_hung_up(channel)? {
        return Err(SandboxError::new(
            Step::Pdeathsig,
            "the supervisor closed the channel before the plugin started",
        ));
    }
    Ok(())
}

/// True when the other end of `channel` has been closed or shut down for
/// writing. Does not wait.
fn peer_hung_up(channel: RawFd) -> Result<bool, SandboxError> {
    let mut pfd = libc::pollfd {
        fd: channel,
        events: libc::POLLRDHUP,
        revents: 0,
    };
    loop {
        // SAFETY: `pfd` is one valid pollfd.
        let rc = unsafe { libc::poll(&mut pfd, 1, 0) };
        if rc >= 0 {
            break;
        }
        let err = Errno::last();
        if err != Errno::EINTR {
            return Err(SandboxError::sys(
                Step::Pdeathsig,
                err,
                format_args!("poll the channel fd {channel}"),
            ));
        }
    }
    Ok(pfd.revents & (libc::POLLHUP | libc::POLLRDHUP | libc::POLLERR | libc::POLLNVAL) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn hang_up_is_seen_only_after_the_peer_closes() {
        let (ours, theirs) = UnixStream::pair().expect("socketpair");
        assert!(!peer_hung_up(ours.as_raw_fd()).expect("poll"));
        drop(theirs);
        assert!(peer_hung_up(ours.as_raw_fd()).expect("poll"));
    }

    #[test]
    fn shutdown_for_writing_counts_as_hang_up() {
        let (ours, theirs) = UnixStream::pair().expect("socketpair");
        theirs
            .shutdown(std::net::Shutdown::Write)
            .expect("shutdown");
        assert!(peer_hung_up(ours.as_raw_fd()).expect("poll"));
    }
}
