//! Host names and metadata: the system calls Landlock does not ask about
//! (stat, readlink, `utimensat`, `user.*` xattrs, inotify), datagrams to
//! path-named sockets, and the /proc files that describe the host's mount
//! table and cgroup tree. In a minimal root the host's paths cannot even
//! be named.

use crate::attempt::{Attempt, c_path, check};
use serde::Deserialize;
use std::io;

#[derive(Deserialize)]
pub struct MetadataInput {
    pub path: String,
    /// stat | readlink | utime | getxattr | setxattr | inotify
    pub op: String,
}

pub fn host_metadata(input: MetadataInput) -> Attempt {
    let attempted = format!("{}({:?})", input.op, input.path);
    let path = match c_path(&input.path) {
        Ok(p) => p,
        Err(e) => return Attempt::failed(attempted, &e),
    };
    let p = path.as_ptr();
    let name = c"user.corral";
    // SAFETY (each arm): `p` and `name` are valid C strings and every
    // buffer is valid for the length passed with it.
    let result: io::Result<i64> = match input.op.as_str() {
        "stat" => {
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            check(unsafe { libc::stat(p, &mut st) }.into()).map(|_| st.st_mtime)
        }
        "readlink" => {
            let mut buf = [0u8; 256];
            check(unsafe { libc::readlink(p, buf.as_mut_ptr().cast(), buf.len()) } as i64)
        }
        // UTIME_NOW needs only write access, not ownership.
        "utime" => check(unsafe { libc::utimensat(libc::AT_FDCWD, p, std::ptr::null(), 0) }.into()),
        "getxattr" => {
            let mut buf = [0u8; 256];
            check(
                unsafe { libc::getxattr(p, name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) }
                    as i64,
            )
        }
        "setxattr" => {
            let value = b"planted";
            check(
                unsafe { libc::setxattr(p, name.as_ptr(), value.as_ptr().cast(), value.len(), 0) }
                    .into(),
            )
        }
        "inotify" => (|| {
            let fd = check(unsafe { libc::inotify_init1(libc::IN_CLOEXEC) }.into())? as i32;
            let watched =
                check(unsafe { libc::inotify_add_watch(fd, p, libc::IN_ALL_EVENTS) }.into());
            unsafe { libc::close(fd) };
            watched
        })(),
        other => {
            return Attempt::failed(
                attempted,
                &io::Error::new(io::ErrorKind::InvalidInput, format!("unknown op {other}")),
            );
        }
    };
    match result {
        Ok(v) => Attempt::succeeded(attempted, format!("returned {v}")),
        Err(e) => Attempt::failed(attempted, &e),
    }
}

/// `sendto` from one end of a `socketpair(AF_UNIX, SOCK_DGRAM)` to a
/// path-named socket (syslog's /dev/log, journald, anything the plugin
/// could name): no `socket()` or `connect()` needed.
pub fn datagram_to_path(input: crate::fs::PathInput) -> Attempt {
    let attempted = format!("socketpair(AF_UNIX, SOCK_DGRAM) + sendto({:?})", input.path);
    let result = (|| -> io::Result<i64> {
        let mut fds = [0i32; 2];
        // SAFETY: fds is valid for two ints.
        check(
            unsafe {
                libc::socketpair(
                    libc::AF_UNIX,
                    libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                    0,
                    fds.as_mut_ptr(),
                )
            }
            .into(),
        )?;
        // SAFETY: an all-zero sockaddr_un is valid.
        let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
        let bytes = input.path.as_bytes();
        if bytes.len() >= addr.sun_path.len() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "path too long"));
        }
        for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
            *d = *s as libc::c_char;
        }
        let msg = b"<11>corral hostile plugin was here";
        // SAFETY: msg and addr are valid for the lengths given.
        let sent = unsafe {
            libc::sendto(
                fds[0],
                msg.as_ptr().cast(),
                msg.len(),
                0,
                (&addr as *const libc::sockaddr_un).cast(),
                std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
            )
        } as i64;
        let sent = check(sent);
        // SAFETY: closing the pair made above.
        unsafe {
            libc::close(fds[0]);
            libc::close(fds[1]);
        }
        sent
    })();
    match result {
        Ok(n) => Attempt::succeeded(attempted, format!("sent {n} bytes")).with_value(n as u64),
        Err(e) => Attempt::failed(attempted, &e),
    }
}

/// The whole of a (small) text file, for /proc/self/mountinfo and
/// /proc/self/cgroup: the test reads what the plugin sees.
pub fn read_text(input: crate::fs::PathInput) -> Attempt {
    let attempted = format!("read {:?}", input.path);
    match std::fs::read(&input.path) {
        Ok(bytes) => {
            let len = bytes.len().min(64 << 10);
            Attempt::succeeded(
                attempted,
                String::from_utf8_lossy(&bytes[..len]).into_owned(),
            )
            .with_value(bytes.len() as u64)
        }
        Err(e) => Attempt::failed(attempted, &e),
    }
}
