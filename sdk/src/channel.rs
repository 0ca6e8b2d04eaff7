//! Raw reads and writes on the channel fd.
//!
//! The SDK talks to the host through one inherited file descriptor with
//! plain system calls, no runtime: that keeps one call in flight at the cost
//! of one `read` and one `write`, and lets a handler peek at the channel
//! without blocking (`recv` with `MSG_DONTWAIT`) to see a Cancel while it
//! runs. The host hands over a `SOCK_STREAM` socket; a pipe-like fd also
//! works (tests, odd runtimes), through `poll` instead of `MSG_DONTWAIT`.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

#[derive(Debug)]
pub(crate) struct Channel {
    fd: OwnedFd,
    /// Sockets get `recv`/`send` with per-call flags; other fds get
    /// `read`/`write` and `poll`.
    socket: bool,
}

impl Channel {
    pub(crate) fn new(fd: OwnedFd) -> io::Result<Channel> {
        let raw = fd.as_raw_fd();
        // SAFETY: `stat` is plain old data that fstat fills in; the fd is
        // owned by us and open.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        if unsafe { libc::fstat(raw, &mut st) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // A subprocess the plugin spawns must not inherit the host channel:
        // it could forge replies.
        // SAFETY: fcntl on an fd we own.
        let flags = unsafe { libc::fcntl(raw, libc::F_GETFD) };
        if flags < 0 || unsafe { libc::fcntl(raw, libc::F_SETFD, flags | libc::FD_CLOEXEC) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Channel {
            fd,
            socket: st.st_mode & libc::S_IFMT == libc::S_IFSOCK,
        })
    }

    fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Blocks until some bytes arrive; `Ok(0)` is end of stream.
    pub(crate) fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            // SAFETY: `buf` is valid for `buf.len()` writable bytes.
            let n = unsafe { libc::read(self.raw(), buf.as_mut_ptr().cast(), buf.len()) };
            if n >= 0 {
                return Ok(n as usize);
            }
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::Interrupted => continue,
                // Someone made the fd non-blocking; wait the blocking way.
                io::ErrorKind::WouldBlock => {
                    self.wait(libc::POLLIN, -1)?;
                }
                // The host closed with bytes of ours unread: it is gone,
                // which is an end of stream, not a fault of ours.
                _ if err.raw_os_error() == Some(libc::ECONNRESET) => return Ok(0),
                _ => return Err(err),
            }
        }
    }

    /// Reads what is already there without waiting: `Ok(None)` when
    /// nothing is, `Ok(Some(0))` at end of stream.
    pub(crate) fn try_read(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        loop {
            let n = if self.socket {
                // SAFETY: `buf` is valid for `buf.len()` writable bytes.
                unsafe {
                    libc::recv(
                        self.raw(),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        libc::MSG_DONTWAIT,
                    )
                }
            } else {
                if !self.wait(libc::POLLIN, 0)? {
                    return Ok(None);
                }
                // SAFETY: as above.
                unsafe { libc::read(self.raw(), buf.as_mut_ptr().cast(), buf.len()) }
            };
            if n >= 0 {
                return Ok(Some(n as usize));
            }
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => return Ok(None),
                _ if err.raw_os_error() == Some(libc::ECONNRESET) => return Ok(Some(0)),
                _ => return Err(err),
            }
        }
    }

    /// Writes every byte, however many system calls that takes.
    pub(crate) fn write_all(&self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            let n = if self.socket {
                // MSG_NOSIGNAL: a closed host must be an EPIPE error we can
                // report, not a SIGPIPE that kills the plugin silently.
                // SAFETY: `buf` is valid for `buf.len()` readable bytes.
                unsafe {
                    libc::send(
                        self.raw(),
                        buf.as_ptr().cast(),
                        buf.len(),
                        libc::MSG_NOSIGNAL,
                    )
                }
            } else {
                // SAFETY: as above.
                unsafe { libc::write(self.raw(), buf.as_ptr().cast(), buf.len()) }
            };
            if n >= 0 {
                buf = &buf[n as usize..];
                continue;
            }
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => {
                    self.wait(libc::POLLOUT, -1)?;
                }
                _ => return Err(err),
            }
        }
        Ok(())
    }

    /// Polls for `events`; returns whether the fd is ready (or hung up, so
    /// that the following read sees the end of stream).
    fn wait(&self, events: libc::c_short, timeout_ms: libc::c_int) -> io::Result<bool> {
        let mut pfd = libc::pollfd {
            fd: self.raw(),
            events,
            revents: 0,
        };
        loop {
            // SAFETY: one valid pollfd.
            let n = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
            if n >= 0 {
                return Ok(n > 0);
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }
}

/// True for the errors a write gets when the host has gone away; the
/// plugin then ends as it would on end of stream.
pub(crate) fn is_peer_gone(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EPIPE) | Some(libc::ECONNRESET)
    )
}
