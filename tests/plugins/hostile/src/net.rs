//! Network attacks: opening sockets and connecting where the manifest
//! grants nothing (or only one TCP port).

use crate::attempt::Attempt;
use serde::Deserialize;
use std::io;
use std::net::{IpAddr, SocketAddr};

#[derive(Deserialize)]
pub struct SocketInput {
    /// `inet`, `inet6`, `unix` or `netlink`.
    pub domain: String,
}

pub fn socket(input: SocketInput) -> Result<Attempt, corral_sdk::Error> {
    let (domain, kind, protocol, name) = match input.domain.as_str() {
        "inet" => (libc::AF_INET, libc::SOCK_STREAM, 0, "AF_INET, SOCK_STREAM"),
        "inet6" => (
            libc::AF_INET6,
            libc::SOCK_STREAM,
            0,
            "AF_INET6, SOCK_STREAM",
        ),
        "unix" => (libc::AF_UNIX, libc::SOCK_STREAM, 0, "AF_UNIX, SOCK_STREAM"),
        "netlink" => (
            libc::AF_NETLINK,
            libc::SOCK_RAW,
            libc::NETLINK_ROUTE,
            "AF_NETLINK, SOCK_RAW, NETLINK_ROUTE",
        ),
        other => {
            return Err(corral_sdk::Error::invalid_input(format!(
                "domain `{other}`: use inet, inet6, unix or netlink"
            )));
        }
    };
    // SAFETY: socket(2) takes plain integers.
    let fd = unsafe { libc::socket(domain, kind | libc::SOCK_CLOEXEC, protocol) };
    let attempt = Attempt::from_ret(format!("socket({name})"), fd.into());
    if fd >= 0 {
        // SAFETY: closing the socket opened above.
        unsafe { libc::close(fd) };
    }
    Ok(attempt)
}

#[derive(Deserialize)]
pub struct ConnectInput {
    #[serde(default = "loopback")]
    pub host: String,
    pub port: u16,
}

fn loopback() -> String {
    "127.0.0.1".into()
}

/// A TCP connect with a bounded wait, so an address nobody answers ends
/// the attempt instead of the call.
pub fn connect_tcp(input: ConnectInput) -> Result<Attempt, corral_sdk::Error> {
    let ip: IpAddr = input.host.parse().map_err(|_| {
        corral_sdk::Error::invalid_input(format!("host `{}` is not an IP address", input.host))
    })?;
    let addr = SocketAddr::new(ip, input.port);
    let attempted = format!("socket + connect(tcp {addr})");
    Ok(match connect(addr) {
        Ok(()) => Attempt::succeeded(attempted, "connected"),
        Err(e) => Attempt::failed(attempted, &e),
    })
}

fn connect(addr: SocketAddr) -> io::Result<()> {
    let domain = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: socket(2) takes plain integers.
    let fd = unsafe {
        libc::socket(
            domain,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let result = connect_fd(fd, addr);
    // SAFETY: closing the socket opened above.
    unsafe { libc::close(fd) };
    result
}

fn connect_fd(fd: i32, addr: SocketAddr) -> io::Result<()> {
    // SAFETY: sockaddr_storage is plain old data; we fill the variant that
    // matches the address family and pass its true length.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is large enough for sockaddr_in.
            unsafe { std::ptr::write((&raw mut storage).cast(), sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: v6.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                },
                sin6_scope_id: v6.scope_id(),
            };
            // SAFETY: sockaddr_storage is large enough for sockaddr_in6.
            unsafe { std::ptr::write((&raw mut storage).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    // SAFETY: storage holds a valid address of `len` bytes.
    let ret = unsafe { libc::connect(fd, (&raw const storage).cast(), len as libc::socklen_t) };
    if ret == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::EINPROGRESS) {
        return Err(err);
    }
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let ready = unsafe { libc::poll(&mut pfd, 1, 1_500) };
    if ready < 0 {
        return Err(io::Error::last_os_error());
    }
    if ready == 0 {
        return Err(io::Error::from_raw_os_error(libc::ETIMEDOUT));
    }
    let mut so_error: libc::c_int = 0;
    let mut optlen = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: so_error and optlen are valid for writing.
    let ret = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&raw mut so_error).cast(),
            &mut optlen,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    if so_error != 0 {
        return Err(io::Error::from_raw_os_error(so_error));
    }
    Ok(())
}
