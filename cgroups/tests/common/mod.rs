//! Helpers shared by the integration tests: child processes with a
//! chosen behaviour, unique base names, and cleanup.
//!
//! Children are made with fork(2) rather than by running a helper binary,
//! so the same test executable works on the host and in the QEMU guest.
//! The test harness is multi-threaded, so after fork the child only makes
//! async-signal-safe calls (read, write, mmap, fork, pause, _exit) and
//! never allocates.

#![allow(dead_code)]

pub mod scenarios;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use corral_cgroups::CgroupDriver;

/// A unique base name per test, so tests running in parallel (and
/// leftovers of an aborted run) never share cgroups.
pub fn unique_base_name() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "corral-test-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Owns a driver with a test base; on drop removes every leaf left under
/// it and the base itself, also when the test panicked.
#[derive(Debug)]
pub struct TestDriver(pub Box<dyn CgroupDriver>);

impl std::ops::Deref for TestDriver {
    type Target = dyn CgroupDriver;
    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}

impl Drop for TestDriver {
    fn drop(&mut self) {
        match self.0.list() {
            Ok(names) => {
                for name in names {
                    if let Err(err) = self.0.remove_stale(&name) {
                        eprintln!("cleanup: removing leftover cgroup {name}: {err}");
                    }
                }
            }
            Err(err) => eprintln!("cleanup: listing {}: {err}", self.0.base()),
        }
        if let Err(err) = self.0.remove_base() {
            eprintln!("cleanup: removing base {}: {err}", self.0.base());
        }
    }
}

/// What a forked child does once released with [`Child::start`].
#[derive(Clone, Copy, Debug)]
pub enum Behaviour {
    /// Sleeps until killed.
    Sleep,
    /// Maps and writes to this many bytes, then exits 0.
    TouchMemory(usize),
    /// Forks sleeping children until fork fails, reports how many it made
    /// and the errno, then sleeps until killed.
    ForkUntilRefused,
    /// Burns CPU until killed.
    Spin,
}

/// How a child ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

/// A forked child, blocked until [`Child::start`] so the test can put it
/// in a cgroup first.
#[derive(Debug)]
pub struct Child {
    pid: u32,
    go: Option<OwnedFd>,
    report: OwnedFd,
    exit: Option<Exit>,
}

/// What `ForkUntilRefused` reports: forks made, errno of the failing fork.
#[derive(Clone, Copy, Debug)]
pub struct ForkReport {
    pub forks: u64,
    pub errno: i32,
}

const CHILD_MAX_FORKS: u64 = 10_000;

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into the array we own.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: both fds were just created and are owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// Forks a child that waits for [`Child::start`], then does `behaviour`.
pub fn spawn(behaviour: Behaviour) -> Child {
    let (go_read, go_write) = pipe();
    let (report_read, report_write) = pipe();
    // SAFETY: the child only runs `child_main`, which makes
    // async-signal-safe calls and never returns.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        child_main(go_read.as_raw_fd(), report_write.as_raw_fd(), behaviour);
    }
    Child {
        pid: u32::try_from(pid).expect("fork returned a positive pid"),
        go: Some(go_write),
        report: report_read,
        exit: None,
    }
}

fn child_main(go: i32, report: i32, behaviour: Behaviour) -> ! {
    // SAFETY (whole function): only async-signal-safe libc calls on fds
    // and memory this process owns; it ends in _exit.
    unsafe {
        let mut byte = 0u8;
        if libc::read(go, (&raw mut byte).cast(), 1) != 1 {
            libc::_exit(2);
        }
        match behaviour {
            Behaviour::Sleep => loop {
                libc::pause();
            },
            Behaviour::TouchMemory(bytes) => {
                let memory = libc::mmap(
                    std::ptr::null_mut(),
                    bytes,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                    -1,
                    0,
                );
                if memory == libc::MAP_FAILED {
                    libc::_exit(3);
                }
                let base = memory.cast::<u8>();
                let mut offset = 0;
                while offset < bytes {
                    std::ptr::write_volatile(base.add(offset), 1);
                    offset += 4096;
                }
                libc::_exit(0);
            }
            Behaviour::ForkUntilRefused => {
                let mut forks: u64 = 0;
                let mut errno = 0;
                while forks < CHILD_MAX_FORKS {
                    let pid = libc::fork();
                    if pid == 0 {
                        loop {
                            libc::pause();
                        }
                    }
                    if pid < 0 {
                        errno = *libc::__errno_location();
                        break;
                    }
                    forks += 1;
                }
                let mut message = [0u8; 12];
                message[..8].copy_from_slice(&forks.to_le_bytes());
                message[8..].copy_from_slice(&errno.to_le_bytes());
                if libc::write(report, message.as_ptr().cast(), message.len()) != 12 {
                    libc::_exit(4);
                }
                loop {
                    libc::pause();
                }
            }
            Behaviour::Spin => loop {
                std::hint::spin_loop();
            },
        }
    }
}

impl Child {
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Releases the child to do its behaviour.
    pub fn start(&mut self) {
        let go = self.go.take().expect("start is called once");
        let byte = 1u8;
        // SAFETY: writes one byte from a local into a pipe fd we own.
        let rc = unsafe { libc::write(go.as_raw_fd(), (&raw const byte).cast(), 1) };
        assert_eq!(
            rc,
            1,
            "releasing child: {}",
            std::io::Error::last_os_error()
        );
    }

    /// Waits for the report of `ForkUntilRefused`.
    pub fn fork_report(&self, timeout: Duration) -> ForkReport {
        self.try_fork_report(timeout)
            .unwrap_or_else(|| panic!("no fork report from the child within {timeout:?}"))
    }

    /// The report of `ForkUntilRefused`, if it arrives within `timeout`.
    pub fn try_fork_report(&self, timeout: Duration) -> Option<ForkReport> {
        let mut poll = libc::pollfd {
            fd: self.report.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let millis = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: polls one pollfd we own.
        let ready = unsafe { libc::poll(&raw mut poll, 1, millis) };
        if ready == 0 {
            return None;
        }
        assert_eq!(ready, 1, "poll: {}", std::io::Error::last_os_error());
        let mut message = [0u8; 12];
        // SAFETY: reads into a local buffer of the given size.
        let n = unsafe { libc::read(self.report.as_raw_fd(), message.as_mut_ptr().cast(), 12) };
        assert_eq!(n, 12, "short fork report");
        Some(ForkReport {
            forks: u64::from_le_bytes(message[..8].try_into().expect("8 bytes")),
            errno: i32::from_le_bytes(message[8..].try_into().expect("4 bytes")),
        })
    }

    /// Waits for the child to end (it must, or the test hangs: callers
    /// only wait after the child was killed or is bound to exit).
    pub fn wait(&mut self) -> Exit {
        if let Some(exit) = self.exit {
            return exit;
        }
        let mut status = 0;
        let pid = libc::pid_t::try_from(self.pid).expect("pid fits pid_t");
        // SAFETY: waits for our own child, status is a local.
        let rc = unsafe { libc::waitpid(pid, &raw mut status, 0) };
        assert_eq!(rc, pid, "waitpid: {}", std::io::Error::last_os_error());
        let exit = if libc::WIFSIGNALED(status) {
            Exit::Signal(libc::WTERMSIG(status))
        } else {
            Exit::Code(libc::WEXITSTATUS(status))
        };
        self.exit = Some(exit);
        exit
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.exit.is_none() {
            if let Ok(pid) = libc::pid_t::try_from(self.pid) {
                // SAFETY: signals and reaps our own child.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                    libc::waitpid(pid, std::ptr::null_mut(), 0);
                }
            }
        }
    }
}

/// Reads a cgroupfs file of a test cgroup, trimmed.
pub fn read_file(path: &std::path::Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
        .trim()
        .to_string()
}
