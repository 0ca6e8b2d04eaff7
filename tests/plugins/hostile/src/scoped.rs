//! Attacks that only Landlock's scopes and path rules answer: connecting to
//! an abstract Unix socket made outside the sandbox, and reading a path
//! through the SDK, whose error must name the path.

use crate::attempt::Attempt;
use serde::Deserialize;
use std::io;

#[derive(Deserialize)]
pub struct AbstractInput {
    /// The abstract name, without the leading NUL.
    pub name: String,
}

fn abstract_addr(name: &str) -> io::Result<(libc::sockaddr_un, libc::socklen_t)> {
    // SAFETY: sockaddr_un is plain old data.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = name.as_bytes();
    if bytes.len() + 1 >= addr.sun_path.len() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "name too long"));
    }
    for (d, s) in addr.sun_path[1..].iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + 1 + bytes.len();
    Ok((addr, len as libc::socklen_t))
}

fn unix_socket() -> io::Result<i32> {
    // SAFETY: socket(2) takes plain integers.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(fd)
    }
}

fn connect_to(name: &str) -> io::Result<()> {
    let (addr, len) = abstract_addr(name)?;
    let fd = unix_socket()?;
    // SAFETY: addr is valid for len bytes.
    let ret = unsafe { libc::connect(fd, (&raw const addr).cast(), len) };
    let result = if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    };
    // SAFETY: closing the socket opened above.
    unsafe { libc::close(fd) };
    result
}

/// `connect` to the abstract socket `name`.
pub fn connect_abstract(input: AbstractInput) -> Attempt {
    let attempted = format!("connect(AF_UNIX, \"\\0{}\")", input.name);
    match connect_to(&input.name) {
        Ok(()) => Attempt::succeeded(attempted, "connected"),
        Err(e) => Attempt::failed(attempted, &e),
    }
}

/// Listens on the abstract socket `name` itself, then connects to it: a
/// socket made inside the sandbox is in reach (the control).
pub fn own_abstract(input: AbstractInput) -> Attempt {
    let attempted = format!("bind + listen + connect(AF_UNIX, \"\\0{}\")", input.name);
    let result = (|| {
        let (addr, len) = abstract_addr(&input.name)?;
        let fd = unix_socket()?;
        // SAFETY: addr is valid for len bytes; fd is ours.
        let ok = unsafe {
            libc::bind(fd, (&raw const addr).cast(), len) == 0 && libc::listen(fd, 1) == 0
        };
        let result = if ok {
            connect_to(&input.name)
        } else {
            Err(io::Error::last_os_error())
        };
        // SAFETY: closing the listener.
        unsafe { libc::close(fd) };
        result
    })();
    match result {
        Ok(()) => Attempt::succeeded(attempted, "connected"),
        Err(e) => Attempt::failed(attempted, &e),
    }
}

#[derive(Deserialize)]
pub struct SdkReadInput {
    pub path: String,
}

/// Reads `path` through the SDK and passes its error on with `?`: the
/// reply the host gets must name the path.
pub fn sdk_read(input: SdkReadInput) -> Result<u64, corral_sdk::Error> {
    let bytes = corral_sdk::fs::read(&input.path)?;
    Ok(bytes.len() as u64)
}
