//! Filesystem attacks: reading and writing where Landlock should say no,
//! filling the scratch space, and looking at fds and /proc.

use crate::attempt::{Attempt, c_path, check};
use serde::Deserialize;
use std::io;

#[derive(Deserialize)]
pub struct PathInput {
    pub path: String,
}

pub fn read_file(input: PathInput) -> Attempt {
    let attempted = format!("open({:?}, O_RDONLY) + read", input.path);
    let result = (|| -> io::Result<Vec<u8>> {
        let path = c_path(&input.path)?;
        // SAFETY: a valid C string.
        let fd =
            check(unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) }.into())?
                as i32;
        let mut buf = vec![0u8; 4096];
        // SAFETY: buf is valid for its length; fd is ours.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        let read = check(n as i64);
        // SAFETY: closing the fd opened above.
        unsafe { libc::close(fd) };
        buf.truncate(read? as usize);
        Ok(buf)
    })();
    match result {
        Ok(bytes) => {
            let preview: String = String::from_utf8_lossy(&bytes).chars().take(120).collect();
            Attempt::succeeded(
                attempted,
                format!("read {} bytes: {preview:?}", bytes.len()),
            )
            .with_value(bytes.len() as u64)
        }
        Err(e) => Attempt::failed(attempted, &e),
    }
}

pub fn write_file(input: PathInput) -> Attempt {
    let attempted = format!("open({:?}, O_WRONLY|O_CREAT|O_TRUNC) + write", input.path);
    let result = (|| -> io::Result<usize> {
        let path = c_path(&input.path)?;
        // SAFETY: a valid C string.
        let fd = check(
            unsafe {
                libc::open(
                    path.as_ptr(),
                    libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC,
                    0o644,
                )
            }
            .into(),
        )? as i32;
        let text = b"written by corral's hostile plugin\n";
        // SAFETY: text is valid for its length.
        let n = unsafe { libc::write(fd, text.as_ptr().cast(), text.len()) };
        let written = check(n as i64);
        // SAFETY: closing the fd opened above.
        unsafe { libc::close(fd) };
        Ok(written? as usize)
    })();
    match result {
        Ok(n) => Attempt::succeeded(attempted, format!("wrote {n} bytes")).with_value(n as u64),
        Err(e) => Attempt::failed(attempted, &e),
    }
}

pub fn list_dir(input: PathInput) -> Attempt {
    let attempted = format!("opendir({:?}) + getdents64", input.path);
    match names_in(&input.path) {
        Ok(names) => Attempt::succeeded(attempted, names.join(" ")).with_value(names.len() as u64),
        Err(e) => Attempt::failed(attempted, &e),
    }
}

fn names_in(path: &str) -> io::Result<Vec<String>> {
    let mut names = std::fs::read_dir(path)?
        .map(|entry| entry.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<io::Result<Vec<_>>>()?;
    names.sort();
    Ok(names)
}

/// The processes visible in /proc. Inside a pid namespace: only the
/// plugin's own.
pub fn proc_pids() -> Attempt {
    let attempted = "opendir(\"/proc\"): numeric entries";
    match names_in("/proc") {
        Ok(names) => {
            let mut pids: Vec<u32> = names.iter().filter_map(|n| n.parse().ok()).collect();
            pids.sort_unstable();
            let list: Vec<String> = pids.iter().map(u32::to_string).collect();
            Attempt::succeeded(attempted, list.join(" ")).with_value(pids.len() as u64)
        }
        Err(e) => Attempt::failed(attempted, &e),
    }
}

/// Every open fd and what it points at: the sandbox should leave only
/// stdio and the channel.
pub fn fds() -> Attempt {
    let attempted = "opendir(\"/proc/self/fd\") + readlink";
    match names_in("/proc/self/fd") {
        Ok(names) => {
            let mut fds: Vec<u32> = names.iter().filter_map(|n| n.parse().ok()).collect();
            fds.sort_unstable();
            // The directory handle of the listing itself is gone by now
            // (ENOENT): it is ours, not inherited, so it is left out.
            let described: Vec<String> = fds
                .iter()
                .filter_map(
                    |fd| match std::fs::read_link(format!("/proc/self/fd/{fd}")) {
                        Ok(target) => Some(format!("{fd}={}", target.display())),
                        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                        Err(e) => Some(format!("{fd}=(readlink: {e})")),
                    },
                )
                .collect();
            Attempt::succeeded(attempted, described.join(" ")).with_value(described.len() as u64)
        }
        Err(e) => Attempt::failed(attempted, &e),
    }
}

#[derive(Deserialize, Default)]
pub struct DiskFillInput {
    /// Where to write; default `$CORRAL_SCRATCH/fill` (or `/tmp/fill`).
    pub path: Option<String>,
    /// Stop after this many bytes even if nothing stopped us.
    pub max_bytes: Option<u64>,
    /// Leave the file behind (default: remove it so the plugin stays usable).
    #[serde(default)]
    pub keep: bool,
}

/// Writes until the filesystem or RLIMIT_FSIZE says no.
pub fn disk_fill(input: Option<DiskFillInput>) -> Attempt {
    let input = input.unwrap_or_default();
    let path = input.path.unwrap_or_else(|| {
        let dir = std::env::var("CORRAL_SCRATCH").unwrap_or_else(|_| "/tmp".into());
        format!("{dir}/fill")
    });
    let max = input.max_bytes.unwrap_or(8 << 30);
    let attempted = format!("write 64KiB chunks to {path:?} until ENOSPC/EFBIG");
    // RLIMIT_FSIZE is enforced with SIGXFSZ, which would end the process;
    // ignoring it turns the limit into the EFBIG this attack reports.
    // SAFETY: setting a signal disposition to SIG_IGN.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    let cpath = match c_path(&path) {
        Ok(p) => p,
        Err(e) => return Attempt::failed(attempted, &e),
    };
    // SAFETY: a valid C string.
    let fd = unsafe {
        libc::open(
            cpath.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC,
            0o600,
        )
    };
    if fd < 0 {
        return Attempt::failed(attempted, &io::Error::last_os_error());
    }
    let chunk = vec![0x5a_u8; 64 * 1024];
    let mut written: u64 = 0;
    let outcome = loop {
        if written >= max {
            break None;
        }
        // SAFETY: chunk is valid for its length.
        let n = unsafe { libc::write(fd, chunk.as_ptr().cast(), chunk.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            break Some(e);
        }
        if n == 0 {
            break None;
        }
        written += n as u64;
    };
    // SAFETY: closing the fd opened above.
    unsafe { libc::close(fd) };
    if !input.keep {
        // SAFETY: a valid C string.
        unsafe { libc::unlink(cpath.as_ptr()) };
    }
    match outcome {
        Some(e) => Attempt::failed(attempted, &e)
            .with_detail(format!("stopped after {written} bytes: {e}"))
            .with_value(written),
        None => Attempt::succeeded(
            attempted,
            format!("wrote {written} bytes, nothing stopped it"),
        )
        .with_value(written),
    }
}
