//! Code from memory or from a writable place: a new program image built by
//! the plugin, run with `execve` of /proc/self/fd/N or `execveat` of a
//! memfd, or written to its scratch space and run from there. The image is
//! a minimal static ELF that exits with [`IMAGE_STATUS`], so a run that
//! got through is seen as that status; a sandbox that holds makes the exec
//! itself fail.

use crate::attempt::{Attempt, check};
use serde::Deserialize;
use std::ffi::CString;
use std::io;

/// What the built image exits with when it runs.
pub const IMAGE_STATUS: i32 = 42;

#[derive(Deserialize, Default)]
pub struct ExecInput {
    /// "memfd_execve" (execve of /proc/self/fd/N), "memfd_execveat"
    /// (execveat(fd, "", AT_EMPTY_PATH)), or "file" (write `path`, chmod
    /// it 0755 and execve it).
    pub via: String,
    /// For "file".
    #[serde(default)]
    pub path: Option<String>,
    /// Ask memfd_create for an executable memfd (MFD_EXEC).
    #[serde(default)]
    pub mfd_exec: bool,
    /// Ask memfd_create for a memfd sealed non-executable
    /// (MFD_NOEXEC_SEAL), the only kind the filter lets a plugin make.
    #[serde(default)]
    pub noexec_seal: bool,
    /// Exec in a forked child and report its fate (needs `exec = true`);
    /// otherwise this process execs, and a success ends the plugin with
    /// [`IMAGE_STATUS`].
    #[serde(default)]
    pub fork: bool,
}

/// A static ELF for this machine that calls exit(IMAGE_STATUS).
fn image() -> Vec<u8> {
    #[cfg(target_arch = "x86_64")]
    let (machine, code): (u16, &[u8]) = (
        0x3e,
        // mov edi, 42; mov eax, 60 (exit); syscall
        &[0xbf, 42, 0, 0, 0, 0xb8, 60, 0, 0, 0, 0x0f, 0x05],
    );
    #[cfg(target_arch = "aarch64")]
    let (machine, code): (u16, &[u8]) = (
        183,
        // mov x0, #42; mov x8, #93 (exit); svc #0
        &[
            0x40, 0x05, 0x80, 0xd2, 0xa8, 0x0b, 0x80, 0xd2, 0x01, 0x00, 0x00, 0xd4,
        ],
    );
    const BASE: u64 = 0x40_0000;
    const HEADERS: u64 = 64 + 56;
    let total = HEADERS + code.len() as u64;
    let mut e = Vec::with_capacity(total as usize);
    e.extend_from_slice(b"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00");
    e.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    e.extend_from_slice(&machine.to_le_bytes());
    e.extend_from_slice(&1u32.to_le_bytes());
    e.extend_from_slice(&(BASE + HEADERS).to_le_bytes()); // entry
    e.extend_from_slice(&64u64.to_le_bytes()); // phoff
    e.extend_from_slice(&0u64.to_le_bytes()); // shoff
    e.extend_from_slice(&0u32.to_le_bytes()); // flags
    for v in [64u16, 56, 1, 64, 0, 0] {
        e.extend_from_slice(&v.to_le_bytes());
    }
    e.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    e.extend_from_slice(&5u32.to_le_bytes()); // R + X
    e.extend_from_slice(&0u64.to_le_bytes()); // offset
    e.extend_from_slice(&BASE.to_le_bytes());
    e.extend_from_slice(&BASE.to_le_bytes());
    e.extend_from_slice(&total.to_le_bytes());
    e.extend_from_slice(&total.to_le_bytes());
    e.extend_from_slice(&0x1000u64.to_le_bytes());
    e.extend_from_slice(code);
    e
}

fn write_all(fd: i32, bytes: &[u8]) -> io::Result<()> {
    // SAFETY: bytes is valid for its length.
    let n = check(unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) } as i64)?;
    if n as usize != bytes.len() {
        return Err(io::Error::new(io::ErrorKind::WriteZero, "short write"));
    }
    Ok(())
}

/// How the image will be exec'd, prepared before any fork.
enum Target {
    Path(CString),
    Fd(i32),
}

fn prepare(input: &ExecInput) -> io::Result<Target> {
    let elf = image();
    match input.via.as_str() {
        "memfd_execve" | "memfd_execveat" => {
            const MFD_EXEC: libc::c_uint = 0x10;
            const MFD_NOEXEC_SEAL: libc::c_uint = 0x8;
            let mut flags = if input.mfd_exec { MFD_EXEC } else { 0 };
            if input.noexec_seal {
                flags |= MFD_NOEXEC_SEAL;
            }
            // SAFETY: a valid C string; no pointer is kept.
            let fd = check(unsafe { libc::memfd_create(c"image".as_ptr(), flags) }.into())? as i32;
            write_all(fd, &elf)?;
            // Try to make it executable; the sandbox may refuse this too.
            // SAFETY: fd is ours.
            unsafe { libc::fchmod(fd, 0o755) };
            if input.via == "memfd_execve" {
                Ok(Target::Path(CString::new(format!("/proc/self/fd/{fd}"))?))
            } else {
                Ok(Target::Fd(fd))
            }
        }
        "file" => {
            let path = input.path.clone().unwrap_or_else(|| "/tmp/image".into());
            std::fs::write(&path, &elf)?;
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
            Ok(Target::Path(CString::new(path)?))
        }
        other => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("unknown via {other}"),
        )),
    }
}

/// execve / execveat; returns only on failure, with errno.
fn exec(target: &Target) -> i32 {
    let argv: [*const libc::c_char; 2] = [c"image".as_ptr(), std::ptr::null()];
    let envp: [*const libc::c_char; 1] = [std::ptr::null()];
    // SAFETY: argv and envp are NULL-terminated arrays of valid C strings.
    unsafe {
        match target {
            Target::Path(p) => libc::execve(p.as_ptr(), argv.as_ptr(), envp.as_ptr()),
            Target::Fd(fd) => libc::syscall(
                libc::SYS_execveat,
                *fd,
                c"".as_ptr(),
                argv.as_ptr(),
                envp.as_ptr(),
                libc::AT_EMPTY_PATH,
            ) as i32,
        };
    }
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

pub fn exec_image(input: ExecInput) -> Attempt {
    let attempted = format!(
        "{} of a built image{}{}",
        input.via,
        if input.mfd_exec { " (MFD_EXEC)" } else { "" },
        if input.fork { " in a forked child" } else { "" }
    );
    let target = match prepare(&input) {
        Ok(t) => t,
        Err(e) => return Attempt::failed(format!("{attempted}: prepare"), &e),
    };
    if !input.fork {
        let errno = exec(&target);
        return Attempt::failed(attempted, &io::Error::from_raw_os_error(errno));
    }
    // SAFETY: one thread here; the child calls only exec and _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Attempt::failed(format!("{attempted}: fork"), &io::Error::last_os_error());
    }
    if pid == 0 {
        let errno = exec(&target);
        // SAFETY: leaving the forked child without running destructors.
        unsafe { libc::_exit(100 + errno.min(100)) };
    }
    let mut status = 0;
    // SAFETY: status is valid; pid is our child.
    if unsafe { libc::waitpid(pid, &mut status, 0) } < 0 {
        return Attempt::failed(format!("{attempted}: waitpid"), &io::Error::last_os_error());
    }
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    if code == IMAGE_STATUS {
        Attempt::succeeded(attempted, "the built image ran and exited 42")
    } else if code >= 100 {
        Attempt::failed(attempted, &io::Error::from_raw_os_error(code - 100))
    } else {
        Attempt::failed(
            attempted,
            &io::Error::other(format!("the child ended with wait status {status:#x}")),
        )
    }
}
