//! Step `fds`: the plugin inherits exactly stdin, stdout, stderr and the
//! channel.
//!
//! Whatever else the supervisor had open without `O_CLOEXEC` (sockets,
//! other plugins' channels, files) would otherwise leak into the sandbox.
//! The namespace fds to join are kept until the `namespaces` step has used
//! them, and closed there.

use crate::error::{SandboxError, Step};
use nix::errno::Errno;
use std::os::fd::RawFd;

/// Closes every fd but 0, 1, 2, `channel` and `join_fds`, and makes sure
/// 0-2 are open.
pub fn apply(channel: RawFd, join_fds: &[(&'static str, RawFd)]) -> Result<(), SandboxError> {
    let mut keep = vec![0, 1, 2, channel];
    for &(namespace, fd) in join_fds {
        if keep.contains(&fd) {
            return Err(SandboxError::new(
                Step::Fds,
                format!(
                    "fd {fd} given for joining the {namespace} namespace is stdio, the channel \
                     or another namespace's fd"
                ),
            ));
        }
        if !is_open(fd) {
            return Err(SandboxError::new(
                Step::Fds,
                format!("fd {fd} given for joining the {namespace} namespace is not open"),
            ));
        }
        keep.push(fd);
    }
    if channel <= 2 || !is_open(channel) {
        return Err(SandboxError::new(
            Step::Fds,
            format!("the channel fd {channel} is not open or is a stdio fd"),
        ));
    }
    for (first, last) in ranges_to_close(&keep) {
        close_range(first, last)?;
    }
    for fd in 0..=2 {
        if !is_open(fd) {
            open_dev_null_at(fd)?;
        }
    }
    Ok(())
}

/// The inclusive ranges of fds that are not in `keep`, up to the largest
/// possible fd.
pub(crate) fn ranges_to_close(keep: &[RawFd]) -> Vec<(u32, u32)> {
    let mut keep: Vec<u32> = keep
        .iter()
        .filter_map(|&fd| u32::try_from(fd).ok())
        .collect();
    keep.sort_unstable();
    keep.dedup();
    let mut ranges = Vec::new();
    let mut next: u32 = 0;
    for fd in keep {
        if fd > next {
            ranges.push((next, fd - 1));
        }
        next = fd.saturating_add(1);
    }
    ranges.push((next, u32::MAX));
    ranges
}

fn close_range(first: u32, last: u32) -> Result<(), SandboxError> {
    // SAFETY: close_range only closes descriptors; none of the ones closed
    // here is owned by Rust code still running (the runtime holds none and
    // nothing has been opened yet).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            libc::c_uint::from(first),
            libc::c_uint::from(last),
            0 as libc::c_uint,
        )
    };
    if rc != 0 {
        return Err(SandboxError::sys(
            Step::Fds,
            Errno::last(),
            format_args!("close_range({first}, {last})"),
        ));
    }
    Ok(())
}

fn is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD only reads the descriptor's flags.
    unsafe { libc::fcntl(fd, libc::F_GETFD) != -1 }
}

fn open_dev_null_at(target: RawFd) -> Result<(), SandboxError> {
    // SAFETY: the path is a valid NUL-terminated string.
    let fd = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) };
    if fd < 0 {
        return Err(SandboxError::sys(
            Step::Fds,
            Errno::last(),
            format_args!("open /dev/null for fd {target}"),
        ));
    }
    if fd != target {
        // SAFETY: both are valid descriptors; `fd` is ours to close.
        let rc = unsafe { libc::dup2(fd, target) };
        let err = Errno::last();
        // SAFETY: `fd` was opened above and is not used again.
        unsafe { libc::close(fd) };
        if rc < 0 {
            return Err(SandboxError::sys(
                Step::Fds,
                err,
                format_args!("dup /dev/null onto fd {target}"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_skip_kept_fds() {
        assert_eq!(
            ranges_to_close(&[0, 1, 2, 3]),
            [(4, u32::MAX)],
            "only what follows the channel"
        );
        assert_eq!(
            ranges_to_close(&[3, 0, 2, 1, 10, 7]),
            [(4, 6), (8, 9), (11, u32::MAX)]
        );
        assert_eq!(ranges_to_close(&[0, 1, 2, 3, 4]), [(5, u32::MAX)]);
        assert_eq!(ranges_to_close(&[1, 3]), [(0, 0), (2, 2), (4, u32::MAX)]);
    }
}
