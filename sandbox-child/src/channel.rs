//! The trampoline's end of the channel (fd 3): reading the bootstrap frame
//! and reporting a failed step.
//!
//! The fd is borrowed, never owned: it must stay open across `execve` for
//! the plugin, so nothing here closes it.

use crate::error::SandboxError;
use corral_protocol::PluginMessage;
use corral_protocol::frame;
use std::fmt::Write as _;
use std::io;
use std::os::fd::RawFd;

/// Blocking reads and writes on a borrowed fd.
#[derive(Debug, Clone, Copy)]
pub struct Channel(pub RawFd);

impl io::Read for Channel {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: `buf` is valid for `buf.len()` writable bytes.
        let n = unsafe { libc::read(self.0, buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n.unsigned_abs())
    }
}

impl io::Write for Channel {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // SAFETY: `buf` is valid for `buf.len()` readable bytes.
        let n = unsafe { libc::write(self.0, buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n.unsigned_abs())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Longest failure message sent; longer ones are cut.
const MESSAGE_CAPACITY: usize = 2048;
/// Room for the frame: prefix, tag, step, errno, message and their lengths.
const FRAME_CAPACITY: usize = MESSAGE_CAPACITY + 256;

/// Memory for one `SandboxFailure` frame, reserved before seccomp is
/// installed. The filter may forbid `brk`/`mmap`; reporting a failed
/// `execve` must then still work with nothing but `write` and
/// `exit_group`, so the report never grows a buffer.
#[derive(Debug)]
pub struct FailureReport {
    step: String,
    message: String,
    frame: Vec<u8>,
}

impl FailureReport {
    pub fn reserve() -> Self {
        FailureReport {
            step: String::with_capacity(32),
            message: String::with_capacity(MESSAGE_CAPACITY),
            frame: Vec::with_capacity(FRAME_CAPACITY),
        }
    }

    /// Writes `error` as a `SandboxFailure` frame on `channel` and on
    /// stderr, then ends the process with status 126.
    pub fn send_and_exit(self, channel: RawFd, error: &SandboxError) -> ! {
        self.send_parts_and_exit(channel, error.step.name(), error.errno, &error.message)
    }

    /// Like [`FailureReport::send_and_exit`] for a failure described in
    /// parts, so that a caller after seccomp need not build a
    /// [`SandboxError`] (which allocates).
    pub fn send_parts_and_exit(
        mut self,
        channel: RawFd,
        step: &str,
        errno: i32,
        message: impl std::fmt::Display,
    ) -> ! {
        self.step.clear();
        push_bounded(&mut self.step, step);
        self.message.clear();
        // A message longer than the reserved room is cut, never grown.
        let _ = write!(
            Bounded {
                out: &mut self.message
            },
            "{message}"
        );
        // stderr goes to the supervisor's log capture; useful when the
        // channel itself is what broke.
        let _ = write_all(
            libc::STDERR_FILENO,
            b"corral-sandbox: confinement failed: step ",
        );
        let _ = write_all(libc::STDERR_FILENO, self.step.as_bytes());
        let _ = write_all(libc::STDERR_FILENO, b": ");
        let _ = write_all(libc::STDERR_FILENO, self.message.as_bytes());
        let _ = write_all(libc::STDERR_FILENO, b"\n");

        let failure = PluginMessage::SandboxFailure(corral_protocol::message::SandboxFailure {
            step: self.step,
            errno,
            message: self.message,
        });
        if frame::encode_into(&failure, &mut self.frame).is_ok() {
            let _ = write_all(channel, &self.frame);
        }
        exit_failure()
    }
}

/// The exit status of a trampoline that did not start the plugin.
pub const FAILURE_EXIT: i32 = 126;

/// Ends the process at once, without running destructors or atexit
/// handlers, which may call what seccomp forbids.
pub fn exit_failure() -> ! {
    // SAFETY: `_exit` has no preconditions.
    unsafe { libc::_exit(FAILURE_EXIT) }
}

/// Writes all of `bytes` with plain `write(2)`, retrying on EINTR.
fn write_all(fd: RawFd, mut bytes: &[u8]) -> Result<(), ()> {
    while !bytes.is_empty() {
        // SAFETY: `bytes` is valid for `bytes.len()` readable bytes.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if n < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(());
        }
        if n == 0 {
            return Err(());
        }
        bytes = &bytes[n.unsigned_abs().min(bytes.len())..];
    }
    Ok(())
}

/// Appends as much of `s` as fits in the string's capacity, cutting at a
/// character boundary.
fn push_bounded(out: &mut String, s: &str) {
    let room = out.capacity() - out.len();
    let mut end = s.len().min(room);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    out.push_str(&s[..end]);
}

/// A `fmt::Write` that never grows its string.
struct Bounded<'a> {
    out: &'a mut String,
}

impl std::fmt::Write for Bounded<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        push_bounded(self.out, s);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_writer_cuts_instead_of_growing() {
        let mut s = String::with_capacity(8);
        let cap = s.capacity();
        let long = "é".repeat(13);
        let _ = write!(Bounded { out: &mut s }, "{long}");
        assert_eq!(s.capacity(), cap, "the string must not reallocate");
        assert!(s.len() <= cap);
        assert!(s.chars().all(|c| c == 'é'));
    }

    #[test]
    fn frame_of_a_maximal_report_fits_the_reserved_buffer() {
        let failure = PluginMessage::SandboxFailure(corral_protocol::message::SandboxFailure {
            step: "user_namespace".repeat(2),
            errno: 1,
            message: "x".repeat(MESSAGE_CAPACITY),
        });
        let mut frame = Vec::with_capacity(FRAME_CAPACITY);
        frame::encode_into(&failure, &mut frame).expect("encode");
        assert!(frame.len() <= FRAME_CAPACITY, "{} bytes", frame.len());
    }
}
