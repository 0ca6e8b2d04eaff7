//! What a plugin needed, recorded from the seccomp listener while it runs
//! in learning mode: every call the filter would refuse, and every path
//! opened or executed and address connected or bound (those calls are
//! referred to the supervisor in learning mode only).
//!
//! Paths and addresses are read from the calling thread's memory
//! (`/proc/PID/mem`) while it waits in the call. The thread could change
//! them before the kernel reads them again; that can only mislead the
//! record, never the sandbox, and learning runs only what an operator
//! chose to run.

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// How many distinct needs of each kind are kept; past it they are counted.
pub const MAX_RECORDS: usize = 4096;

/// One thing the plugin did that the draft may have to grant.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Need {
    /// A call the filter refuses: by name, with its checked arguments.
    Syscall {
        name: String,
        argument: Option<String>,
    },
    /// `open`/`openat`/`openat2`/`creat` of a path.
    Open { path: PathBuf, access: OpenAccess },
    /// `execve`/`execveat` of a path.
    Exec { path: PathBuf },
    /// `connect` to a TCP/UDP port (IPv4 or IPv6).
    Connect { address: String, port: u16 },
    /// `bind` to a port.
    Bind { port: u16 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum OpenAccess {
    Read,
    Write,
    /// O_CREAT: a new entry in the parent directory.
    Create,
}

/// Everything recorded in one learning run, each need with how often.
#[derive(Debug, Default)]
pub struct LearnLog {
    needs: Mutex<(BTreeMap<Need, u64>, u64)>,
}

impl crate::runtime::LifecycleObserver for LearnLog {
    fn child_died(&self, _plugin: &str, _cause: &str) {}
    fn child_restarted(&self, _plugin: &str) {}
    fn learned(&self, _plugin: &str, need: Need) {
        self.record(need);
    }
}

impl LearnLog {
    pub fn record(&self, need: Need) {
        let mut guard = self.needs.lock().unwrap_or_else(|p| p.into_inner());
        let (needs, overflow) = &mut *guard;
        if let Some(count) = needs.get_mut(&need) {
            *count += 1;
        } else if needs.len() < MAX_RECORDS {
            needs.insert(need, 1);
        } else {
            *overflow += 1;
        }
    }

    /// The needs with their counts, and how many were not kept.
    pub fn snapshot(&self) -> (BTreeMap<Need, u64>, u64) {
        self.needs.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// A string of at most `PATH_MAX` bytes at `addr` in `pid`'s memory.
fn read_c_string(pid: u32, addr: u64) -> Option<String> {
    let mem = std::fs::File::open(format!("/proc/{pid}/mem")).ok()?;
    let mut buf = vec![0u8; 4096];
    let n = mem.read_at(&mut buf, addr).ok()?;
    let end = buf[..n].iter().position(|&b| b == 0)?;
    Some(String::from_utf8_lossy(&buf[..end]).into_owned())
}

fn read_bytes(pid: u32, addr: u64, len: usize) -> Option<Vec<u8>> {
    let mem = std::fs::File::open(format!("/proc/{pid}/mem")).ok()?;
    let mut buf = vec![0u8; len];
    mem.read_exact_at(&mut buf, addr).ok()?;
    Some(buf)
}

/// `path` made absolute against `dirfd` of `pid` (AT_FDCWD: its cwd).
fn absolute(pid: u32, dirfd: i64, path: &str) -> PathBuf {
    let path = Path::new(path);
    if path.is_absolute() {
        return path.to_path_buf();
    }
    let base = if dirfd as i32 == libc::AT_FDCWD {
        format!("/proc/{pid}/cwd")
    } else {
        format!("/proc/{pid}/fd/{}", dirfd as i32)
    };
    match std::fs::read_link(base) {
        Ok(dir) => dir.join(path),
        Err(_) => path.to_path_buf(),
    }
}

fn access_of(flags: u64) -> OpenAccess {
    let flags = flags as i32;
    if flags & libc::O_CREAT != 0 {
        OpenAccess::Create
    } else if flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0 {
        OpenAccess::Write
    } else {
        OpenAccess::Read
    }
}

/// An IPv4 or IPv6 socket address at `addr` (`len` bytes) in `pid`'s memory.
fn socket_address(pid: u32, addr: u64, len: u64) -> Option<(String, u16)> {
    let len = usize::try_from(len).ok()?.min(128);
    let raw = read_bytes(pid, addr, len)?;
    let family = u16::from_ne_bytes([*raw.first()?, *raw.get(1)?]);
    let port = u16::from_be_bytes([*raw.get(2)?, *raw.get(3)?]);
    match i32::from(family) {
        libc::AF_INET => {
            let ip = std::net::Ipv4Addr::new(*raw.get(4)?, raw[5], raw[6], raw[7]);
            Some((ip.to_string(), port))
        }
        libc::AF_INET6 => {
            let octets: [u8; 16] = raw.get(8..24)?.try_into().ok()?;
            Some((std::net::Ipv6Addr::from(octets).to_string(), port))
        }
        _ => None,
    }
}

/// What a call referred in learning mode asks for: the path or address of
/// the calls referred for them, else the call itself (one the filter
/// refuses).
pub fn needs_of(pid: u32, syscall: &str, argument: Option<String>, args: &[u64; 6]) -> Vec<Need> {
    let mut out = Vec::new();
    match syscall {
        "open" | "creat" => {
            if let Some(p) = read_c_string(pid, args[0]) {
                let flags = if syscall == "creat" {
                    libc::O_CREAT as u64
                } else {
                    args[1]
                };
                out.push(Need::Open {
                    path: absolute(pid, i64::from(libc::AT_FDCWD), &p),
                    access: access_of(flags),
                });
            }
        }
        "openat" | "openat2" => {
            if let Some(p) = read_c_string(pid, args[1]) {
                let flags = if syscall == "openat2" {
                    // struct open_how starts with the u64 flags.
                    read_bytes(pid, args[2], 8)
                        .and_then(|b| b.try_into().ok())
                        .map(u64::from_ne_bytes)
                        .unwrap_or(0)
                } else {
                    args[2]
                };
                out.push(Need::Open {
                    path: absolute(pid, args[0] as i64, &p),
                    access: access_of(flags),
                });
            }
        }
        "execve" => {
            if let Some(p) = read_c_string(pid, args[0]) {
                out.push(Need::Exec {
                    path: absolute(pid, i64::from(libc::AT_FDCWD), &p),
                });
            }
        }
        "execveat" => {
            if let Some(p) = read_c_string(pid, args[1]) {
                out.push(Need::Exec {
                    path: absolute(pid, args[0] as i64, &p),
                });
            }
        }
        "connect" => {
            if let Some((address, port)) = socket_address(pid, args[1], args[2]) {
                out.push(Need::Connect { address, port });
            }
        }
        "bind" => {
            if let Some((_, port)) = socket_address(pid, args[1], args[2]) {
                out.push(Need::Bind { port });
            }
        }
        _ => out.push(Need::Syscall {
            name: syscall.to_string(),
            argument,
        }),
    }
    out
}
