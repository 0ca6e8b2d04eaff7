//! Attacks through the system calls the filter allows only with some
//! arguments: a raw system call with chosen scalar arguments (MPTCP and raw
//! sockets, prctl options, personas, executable memory, memfd flags, the
//! calls never allowed), the host's interfaces through `ioctl` on the
//! channel, a datagram socket pair writing to a host socket, and running a
//! program image from a memfd.

use crate::attempt::{Attempt, c_path};
use serde::Deserialize;
use std::io;

#[derive(Deserialize)]
pub struct RawInput {
    /// A system call name from the table below.
    pub name: String,
    /// Up to six scalar arguments; missing ones are 0.
    #[serde(default)]
    pub args: Vec<u64>,
}

const NUMBERS: &[(&str, libc::c_long)] = &[
    ("socket", libc::SYS_socket),
    ("socketpair", libc::SYS_socketpair),
    ("ioctl", libc::SYS_ioctl),
    ("prctl", libc::SYS_prctl),
    ("personality", libc::SYS_personality),
    ("mmap", libc::SYS_mmap),
    ("mprotect", libc::SYS_mprotect),
    ("memfd_create", libc::SYS_memfd_create),
    ("bpf", libc::SYS_bpf),
    ("keyctl", libc::SYS_keyctl),
    ("userfaultfd", libc::SYS_userfaultfd),
    ("perf_event_open", libc::SYS_perf_event_open),
    ("io_uring_setup", libc::SYS_io_uring_setup),
    ("clone", libc::SYS_clone),
    ("sync", libc::SYS_sync),
];

/// Makes one system call with the given scalar arguments. Pointer
/// arguments are whatever number the caller passes (0 is NULL); the
/// calls here either take none that matter before the filter decides, or
/// fail cleanly on NULL. A returned fd is closed and a mapping unmapped.
pub fn raw(input: RawInput) -> Result<Attempt, corral_sdk::Error> {
    let nr = NUMBERS
        .iter()
        .find(|(n, _)| *n == input.name)
        .map(|(_, nr)| *nr)
        .ok_or_else(|| {
            corral_sdk::Error::invalid_input(format!("unknown system call `{}`", input.name))
        })?;
    if input.args.len() > 6 {
        return Err(corral_sdk::Error::invalid_input("at most six arguments"));
    }
    let mut a = [0u64; 6];
    a[..input.args.len()].copy_from_slice(&input.args);
    let attempted = format!("{}({:?})", input.name, &input.args);
    if input.name == "memfd_create" {
        // The name argument must be a string.
        // SAFETY: a valid C string and integer flags.
        let ret = unsafe { libc::syscall(nr, c"hostile".as_ptr(), a[1]) };
        let attempt = Attempt::from_ret(attempted, ret);
        if ret >= 0 {
            // SAFETY: closing the fd just created.
            unsafe { libc::close(ret as i32) };
        }
        return Ok(attempt);
    }
    // SAFETY: a raw system call; every pointer argument is what the test
    // passed (usually NULL), which the kernel checks.
    let ret = unsafe { libc::syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]) };
    let attempt = Attempt::from_ret(attempted, ret);
    if ret >= 0 {
        match input.name.as_str() {
            "socket" | "memfd_create" | "userfaultfd" | "perf_event_open" | "io_uring_setup"
            | "bpf" => {
                // SAFETY: closing the fd just created.
                unsafe { libc::close(ret as i32) };
            }
            "mmap" => {
                // SAFETY: unmapping the mapping just made, of the length asked.
                unsafe { libc::munmap(ret as *mut libc::c_void, a[1] as usize) };
            }
            _ => {}
        }
    }
    Ok(attempt.with_value(ret.max(0) as u64))
}

/// `ioctl(3, SIOCGIFCONF)` on the channel, a socket made in the host's
/// network namespace: succeeding would list the host's interfaces.
pub fn ifconf() -> Attempt {
    let mut buf = [0u8; 4096];
    let mut ifc = libc::ifconf {
        ifc_len: buf.len() as libc::c_int,
        ifc_ifcu: libc::__c_anonymous_ifc_ifcu {
            ifcu_buf: buf.as_mut_ptr().cast(),
        },
    };
    // SAFETY: ifc points at a buffer of the length it says.
    let ret = unsafe { libc::ioctl(3, libc::SIOCGIFCONF as _, &mut ifc) };
    let attempted = "ioctl(3, SIOCGIFCONF)";
    if ret < 0 {
        return Attempt::failed(attempted, &io::Error::last_os_error());
    }
    let len = usize::try_from(ifc.ifc_len).unwrap_or(0).min(buf.len());
    let size = std::mem::size_of::<libc::ifreq>();
    let names: Vec<String> = buf[..len]
        .chunks(size)
        .map(|r| {
            let n = r.iter().take(16).position(|&b| b == 0).unwrap_or(16);
            String::from_utf8_lossy(&r[..n]).into_owned()
        })
        .collect();
    Attempt::succeeded(attempted, format!("interfaces: {}", names.join(", ")))
        .with_value(names.len() as u64)
}

/// `ioctl(3, FIONREAD)`: a request on the allow-list, as a control.
pub fn fionread() -> Attempt {
    let mut n: libc::c_int = 0;
    // SAFETY: n is a valid int for the kernel to fill.
    let ret = unsafe { libc::ioctl(3, libc::FIONREAD as _, &mut n) };
    Attempt::from_ret("ioctl(3, FIONREAD)", ret.into()).with_value(n.max(0) as u64)
}

#[derive(Deserialize)]
pub struct PairInput {
    /// `stream`, `seqpacket` or `dgram`.
    pub kind: String,
    /// For `dgram`: a path-named datagram socket to write to.
    pub path: Option<String>,
}

/// `socketpair(AF_UNIX, kind)`, then for a datagram pair `sendto` the path.
pub fn socketpair(input: PairInput) -> Result<Attempt, corral_sdk::Error> {
    let ty = match input.kind.as_str() {
        "stream" => libc::SOCK_STREAM,
        "seqpacket" => libc::SOCK_SEQPACKET,
        "dgram" => libc::SOCK_DGRAM,
        other => {
            return Err(corral_sdk::Error::invalid_input(format!(
                "kind `{other}`: use stream, seqpacket or dgram"
            )));
        }
    };
    let mut fds = [0; 2];
    // SAFETY: fds has room for the two new fds.
    let ret =
        unsafe { libc::socketpair(libc::AF_UNIX, ty | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr()) };
    let attempted = format!("socketpair(AF_UNIX, {})", input.kind);
    if ret < 0 {
        return Ok(Attempt::failed(attempted, &io::Error::last_os_error()));
    }
    let result = match &input.path {
        Some(path) => send_to_path(fds[0], path).map(|()| format!("sent a datagram to {path}")),
        None => Ok("made the pair".to_string()),
    };
    // SAFETY: closing both fds made above.
    unsafe {
        libc::close(fds[0]);
        libc::close(fds[1]);
    }
    Ok(match result {
        Ok(detail) => Attempt::succeeded(attempted, detail),
        Err(e) => Attempt::failed(format!("{attempted} + sendto"), &e),
    })
}

fn send_to_path(fd: i32, path: &str) -> io::Result<()> {
    // SAFETY: sockaddr_un is plain old data.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_bytes();
    if bytes.len() >= addr.sun_path.len() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "path too long"));
    }
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    let msg = b"<11>hostile: a datagram from the sandbox";
    // SAFETY: msg and addr are valid for the lengths given.
    let ret = unsafe {
        libc::sendto(
            fd,
            msg.as_ptr().cast(),
            msg.len(),
            0,
            (&raw const addr).cast(),
            std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The smallest x86-64 program: `exit(0)` (an ELF header, one loadable
/// segment, three instructions). Should the exec succeed, the plugin
/// simply exits and the call fails with `crashed`. Elsewhere a script
/// stands in: the execute permission is checked before either runs.
fn tiny_program() -> Vec<u8> {
    if !cfg!(target_arch = "x86_64") {
        return b"#!/bin/sh\nexit 0\n".to_vec();
    }
    let base: u64 = 0x40_0000;
    let code: [u8; 12] = [
        0xbf, 0, 0, 0, 0, // mov edi, 0
        0xb8, 60, 0, 0, 0, // mov eax, 60 (exit)
        0x0f, 0x05, // syscall
    ];
    let entry = base + 64 + 56;
    let total = (64 + 56 + code.len()) as u64;
    let mut elf = Vec::with_capacity(total as usize);
    elf.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0]);
    elf.extend_from_slice(&[0; 8]);
    elf.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    elf.extend_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    elf.extend_from_slice(&1u32.to_le_bytes());
    elf.extend_from_slice(&entry.to_le_bytes());
    elf.extend_from_slice(&64u64.to_le_bytes()); // program headers
    elf.extend_from_slice(&0u64.to_le_bytes()); // no section headers
    elf.extend_from_slice(&0u32.to_le_bytes());
    for half in [64u16, 56, 1, 64, 0, 0] {
        elf.extend_from_slice(&half.to_le_bytes());
    }
    elf.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    elf.extend_from_slice(&5u32.to_le_bytes()); // R+X
    elf.extend_from_slice(&0u64.to_le_bytes());
    elf.extend_from_slice(&base.to_le_bytes());
    elf.extend_from_slice(&base.to_le_bytes());
    elf.extend_from_slice(&total.to_le_bytes());
    elf.extend_from_slice(&total.to_le_bytes());
    elf.extend_from_slice(&0x1000u64.to_le_bytes());
    elf.extend_from_slice(&code);
    elf
}

/// Copies a program into a memfd made with MFD_NOEXEC_SEAL (the
/// only kind the filter allows) and execs `/proc/self/fd/N`: a program
/// image from writable memory. Returns only if the exec failed.
pub fn memfd_exec() -> Attempt {
    let attempted = "memfd_create(MFD_NOEXEC_SEAL) + execve(/proc/self/fd/N)";
    let image = tiny_program();
    // MFD_NOEXEC_SEAL: 0x8.
    // SAFETY: a valid C string and integer flags.
    let fd = unsafe { libc::syscall(libc::SYS_memfd_create, c"image".as_ptr(), 0x8u32) };
    if fd < 0 {
        return Attempt::failed(attempted, &io::Error::last_os_error());
    }
    let fd = fd as i32;
    // SAFETY: the memfd was just created and is ours; ManuallyDrop keeps
    // it open for the exec below.
    let mut file = std::mem::ManuallyDrop::new(unsafe {
        <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd)
    });
    if let Err(e) = std::io::Write::write_all(&mut *file, &image) {
        return Attempt::failed("write the image", &e);
    }
    // A seal on the mode: try to add execute bits anyway.
    // SAFETY: fchmod on our own fd.
    let chmod = unsafe { libc::fchmod(fd, 0o755) };
    let chmod_err = io::Error::last_os_error();
    let path = match c_path(&format!("/proc/self/fd/{fd}")) {
        Ok(p) => p,
        Err(e) => return Attempt::failed(attempted, &e),
    };
    let argv = [c"hostile".as_ptr(), std::ptr::null()];
    let envp = [std::ptr::null()];
    // SAFETY: valid NUL-terminated argv and envp arrays.
    unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    let err = io::Error::last_os_error();
    // SAFETY: closing the memfd.
    unsafe { libc::close(fd) };
    Attempt::failed(attempted, &err).with_detail(format!(
        "execve: {err}; fchmod(0755): {}",
        if chmod == 0 {
            "succeeded".to_string()
        } else {
            chmod_err.to_string()
        }
    ))
}

#[derive(Deserialize)]
pub struct LoopInput {
    /// A system call name from the table above, made with no arguments.
    pub name: String,
    pub count: u64,
}

/// Makes the same refused call `count` times (under an errno policy each
/// fails and the plugin goes on): the supervisor's work for it must stay
/// bounded. `value` is how many failed with EPERM.
pub fn refused_loop(input: LoopInput) -> Result<Attempt, corral_sdk::Error> {
    let nr = NUMBERS
        .iter()
        .find(|(n, _)| *n == input.name)
        .map(|(_, nr)| *nr)
        .ok_or_else(|| {
            corral_sdk::Error::invalid_input(format!("unknown system call `{}`", input.name))
        })?;
    let mut eperm = 0u64;
    for _ in 0..input.count.min(100_000) {
        // SAFETY: a raw system call with zero arguments.
        let ret = unsafe { libc::syscall(nr, 0, 0, 0, 0, 0, 0) };
        if ret < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EPERM) {
            eperm += 1;
        }
    }
    let attempted = format!("{} x{}", input.name, input.count);
    Ok(if eperm == input.count {
        Attempt::failed(attempted, &io::Error::from_raw_os_error(libc::EPERM)).with_value(eperm)
    } else {
        Attempt::succeeded(
            attempted,
            format!("{eperm} of {} failed with EPERM", input.count),
        )
        .with_value(eperm)
    })
}
