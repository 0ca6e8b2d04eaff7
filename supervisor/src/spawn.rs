//! Starting the trampoline without forking the daemon.
//!
//! The daemon is large and multi-threaded: `fork` would copy its page
//! tables (~12 ms at 256 MiB) and run code in a copy of a process whose
//! locks other threads may hold. Instead a dedicated spawner thread does a
//! vfork-style `clone(CLONE_VM | CLONE_VFORK)` into the new pid and mount
//! namespaces (and, where the policy wants fresh ones, net/ipc/uts), and the
//! child only calls `dup2` and `execve` before the trampoline takes over.
//!
//! Where the cgroup is a v2 one, the child is created inside it with
//! `clone3(CLONE_INTO_CGROUP)`: moving it in afterwards (a write to
//! `cgroup.procs`) takes the kernel's threadgroup lock for writing, which
//! first waits for an RCU grace period, most of an isolated start on a
//! host without `favordynmods`. A kernel that refuses clone3 gets the plain
//! clone, and the caller moves the child.
//!
//! The thread is dedicated for two reasons: all signals stay blocked in it,
//! so no signal handler can run in the child while it shares the daemon's
//! memory; and `PR_SET_PDEATHSIG`, which the trampoline sets, fires when the
//! parent *thread* exits, so the parent thread must live as long as the
//! daemon (a tokio blocking thread would die after ten idle seconds and take
//! every plugin with it).

use std::ffi::{CString, c_void};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::mpsc;
use std::thread;

/// What to start.
pub struct SpawnRequest {
    /// Path of the executable (the trampoline).
    pub program: CString,
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
    /// `CLONE_NEW*` flags for the child.
    pub namespaces: libc::c_int,
    /// `(source, target)`: the child sees `source` as fd `target`. Targets
    /// must be below [`FD_FLOOR`]; everything else is closed on exec.
    pub fds: Vec<(OwnedFd, RawFd)>,
    /// A v2 cgroup directory (any open descriptor, `O_PATH` will do) to
    /// create the child in; see [`Spawned::in_cgroup`].
    pub cgroup: Option<OwnedFd>,
}

/// A started child.
#[derive(Debug)]
pub struct Spawned {
    pub pid: libc::pid_t,
    /// Refers to the child race-free: readable once it has exited.
    pub pidfd: OwnedFd,
    /// The child was created in [`SpawnRequest::cgroup`]; false when none
    /// was asked for or the kernel refused, and the caller must move it.
    pub in_cgroup: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("clone failed: {0}")]
    Clone(std::io::Error),
    #[error("exec of {program} failed: {error}")]
    Exec {
        program: String,
        error: std::io::Error,
    },
    #[error("preparing the child's file descriptors: {0}")]
    Fds(std::io::Error),
    #[error("the spawner thread is gone")]
    SpawnerGone,
    #[error("starting the spawner thread: {0}")]
    Thread(std::io::Error),
}

/// Source fds are moved to at least this number before the clone, so a
/// source can never collide with another entry's target.
pub const FD_FLOOR: RawFd = 16;

type Job = (
    SpawnRequest,
    tokio::sync::oneshot::Sender<Result<Spawned, SpawnError>>,
);

/// Handle to the spawner thread.
#[derive(Clone, Debug)]
pub struct Spawner {
    jobs: mpsc::Sender<Job>,
}

impl Spawner {
    /// Starts the spawner thread. It lives until every handle is dropped.
    pub fn start() -> Result<Spawner, SpawnError> {
        let (tx, rx) = mpsc::channel::<Job>();
        thread::Builder::new()
            .name("corral-spawner".into())
            .spawn(move || {
                block_all_signals();
                let mut stack = vec![0u8; 64 * 1024];
                while let Ok((request, reply)) = rx.recv() {
                    let _ = reply.send(spawn_now(request, &mut stack));
                }
            })
            .map_err(SpawnError::Thread)?;
        Ok(Spawner { jobs: tx })
    }

    /// Starts a child; completes once it has exec'd the program.
    pub async fn spawn(&self, request: SpawnRequest) -> Result<Spawned, SpawnError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.jobs
            .send((request, tx))
            .map_err(|_| SpawnError::SpawnerGone)?;
        rx.await.map_err(|_| SpawnError::SpawnerGone)?
    }
}

fn block_all_signals() {
    // SAFETY: sigset manipulation on a local set; pthread_sigmask affects
    // only this thread.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, std::ptr::null_mut());
    }
}

/// Everything the child needs, prepared by the parent: the child may not
/// allocate (it shares the parent's heap and allocator locks).
#[repr(C)]
struct ChildArgs {
    program: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    fds: *const (RawFd, RawFd),
    nfds: usize,
    /// The child writes its errno here if exec fails; the parent reads it
    /// after the vfork-style clone returns (memory is shared).
    errno: *mut libc::c_int,
}

extern "C" fn child_main(arg: *mut c_void) -> libc::c_int {
    // SAFETY: `arg` points at the parent's ChildArgs, alive until exec
    // (the parent is suspended by CLONE_VFORK). Only async-signal-safe
    // calls follow.
    unsafe {
        let args = &*(arg as *const ChildArgs);
        for i in 0..args.nfds {
            let (source, target) = *args.fds.add(i);
            // dup2 onto a different number clears FD_CLOEXEC on the target.
            if libc::dup2(source, target) < 0 {
                *args.errno = *libc::__errno_location();
                libc::_exit(127);
            }
        }
        // Hand over exactly the fds asked for: anything inherited without
        // close-on-exec (a jobserver pipe, a library's fd) stops here.
        for fd in 0..FD_FLOOR {
            let wanted = (0..args.nfds).any(|i| (*args.fds.add(i)).1 == fd);
            if !wanted {
                libc::close(fd);
            }
        }
        libc::syscall(
            libc::SYS_close_range,
            FD_FLOOR as libc::c_uint,
            libc::c_uint::MAX,
            0,
        );
        libc::execve(args.program, args.argv, args.envp);
        *args.errno = *libc::__errno_location();
        libc::_exit(127)
    }
}

fn spawn_now(request: SpawnRequest, stack: &mut [u8]) -> Result<Spawned, SpawnError> {
    // Move every source above FD_FLOOR (close-on-exec), so no dup2 target
    // can clobber a source still to be duplicated.
    let mut high: Vec<OwnedFd> = Vec::with_capacity(request.fds.len());
    let mut pairs: Vec<(RawFd, RawFd)> = Vec::with_capacity(request.fds.len());
    for (source, target) in &request.fds {
        // SAFETY: fcntl on an fd we own; the result is a new fd we own.
        let fd = unsafe { libc::fcntl(source.as_raw_fd(), libc::F_DUPFD_CLOEXEC, FD_FLOOR) };
        if fd < 0 {
            return Err(SpawnError::Fds(std::io::Error::last_os_error()));
        }
        // SAFETY: fd was just returned by fcntl and is owned by nobody else.
        high.push(unsafe { OwnedFd::from_raw_fd(fd) });
        pairs.push((fd, *target));
    }
    let argv: Vec<*const libc::c_char> = request
        .argv
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let envp: Vec<*const libc::c_char> = request
        .envp
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let mut child_errno: libc::c_int = 0;
    let args = ChildArgs {
        program: request.program.as_ptr(),
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        fds: pairs.as_ptr(),
        nfds: pairs.len(),
        errno: &mut child_errno,
    };
    let mut pidfd: libc::c_int = -1;
    // The stack grows down; start at the top, 16-byte aligned.
    let base = stack.as_mut_ptr() as usize;
    let top = (base + stack.len()) & !0xF;
    let flags = libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD | request.namespaces;
    let args_ptr = &args as *const ChildArgs as *mut c_void;
    let into_cgroup = request.cgroup.as_ref().and_then(|dir| {
        let mut clone_args = CloneArgs {
            flags: (flags as u64) | CLONE_INTO_CGROUP,
            pidfd: &mut pidfd as *mut libc::c_int as u64,
            exit_signal: libc::SIGCHLD as u64,
            stack: base as u64,
            stack_size: (top - base) as u64,
            cgroup: dir.as_raw_fd() as u64,
            ..CloneArgs::default()
        };
        // SAFETY: as for clone below; the kernel starts the child on
        // [base, top) and writes the pidfd to `pidfd`.
        let pid = unsafe { clone3_running(&mut clone_args, child_main, args_ptr) };
        // Refused (no clone3, an older struct, a cgroup it will not
        // take): no child exists; the plain clone follows.
        (pid > 0).then_some(pid as libc::pid_t)
    });
    let in_cgroup = into_cgroup.is_some();
    let pid = match into_cgroup {
        Some(pid) => pid,
        // SAFETY: child_main only reads `args` (alive until the child execs
        // or exits, the parent being suspended until then) and makes
        // async-signal-safe calls; all signals are blocked in this thread,
        // so no handler runs on the shared stack. CLONE_PIDFD writes the
        // pidfd to `pidfd` (the parent_tid argument).
        None => unsafe {
            libc::clone(
                child_main,
                top as *mut c_void,
                flags | libc::SIGCHLD,
                args_ptr,
                &mut pidfd as *mut libc::c_int,
            )
        },
    };
    if pid < 0 {
        return Err(SpawnError::Clone(std::io::Error::last_os_error()));
    }
    // SAFETY: the kernel stored a new pidfd (O_CLOEXEC) for the child.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    drop(high);
    // The child has exec'd or exited by now (CLONE_VFORK). Reading the
    // errno it may have written is ordered after its exit/exec.
    let errno = unsafe { std::ptr::read_volatile(&child_errno) };
    if errno != 0 {
        reap(pid);
        return Err(SpawnError::Exec {
            program: request.program.to_string_lossy().into_owned(),
            error: std::io::Error::from_raw_os_error(errno),
        });
    }
    Ok(Spawned {
        pid,
        pidfd,
        in_cgroup,
    })
}

/// `CLONE_INTO_CGROUP` (Linux 5.7), not in the libc crate's flags.
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// `struct clone_args` up to `cgroup` (version 2, 88 bytes).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// `clone3(args)`, the child running `f(arg)` on the stack `args` gives it
/// and exiting with its result. Returns the child's pid, or `-errno`.
///
/// By hand because glibc exports no clone3 wrapper: with `CLONE_VM` the
/// child must never return into the parent's frames, so the syscall and
/// the call on the new stack are one piece of assembly, as in libc's own
/// `clone`.
///
/// # Safety
/// `args` must describe a valid stack the child may use until it execs or
/// exits, and `f` must never unwind.
#[cfg(target_arch = "x86_64")]
unsafe fn clone3_running(
    args: &mut CloneArgs,
    f: extern "C" fn(*mut c_void) -> libc::c_int,
    arg: *mut c_void,
) -> libc::c_long {
    let ret: libc::c_long;
    // SAFETY: the caller's contract; the parent's registers other than
    // rax, rcx and r11 are untouched, and the child leaves by exit.
    unsafe {
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            // The child: its stack pointer is the top of the new stack.
            "mov rdi, r13",
            "call r12",
            "mov edi, eax",
            "mov eax, {exit}",
            "syscall",
            "ud2",
            "2:",
            exit = const libc::SYS_exit,
            inlateout("rax") libc::SYS_clone3 => ret,
            in("rdi") args as *mut CloneArgs,
            in("rsi") std::mem::size_of::<CloneArgs>(),
            in("r12") f,
            in("r13") arg,
            lateout("rcx") _,
            lateout("r11") _,
        );
    }
    ret
}

/// Elsewhere the plain clone serves, and the caller moves the child.
#[cfg(not(target_arch = "x86_64"))]
unsafe fn clone3_running(
    _args: &mut CloneArgs,
    _f: extern "C" fn(*mut c_void) -> libc::c_int,
    _arg: *mut c_void,
) -> libc::c_long {
    -(libc::ENOSYS as libc::c_long)
}

fn reap(pid: libc::pid_t) {
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe {
        libc::waitpid(pid, &mut status, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn cstr(s: &str) -> CString {
        CString::new(s).expect("no NUL")
    }

    fn pipe() -> (OwnedFd, OwnedFd) {
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills two fds we then own.
        let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
        assert_eq!(r, 0);
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
    }

    fn wait(spawned: &Spawned) -> i32 {
        let mut status = 0;
        // SAFETY: our child.
        unsafe { libc::waitpid(spawned.pid, &mut status, 0) };
        status
    }

    #[tokio::test]
    async fn child_is_pid_one_in_new_namespaces_with_the_fds_asked_for() {
        let spawner = Spawner::start().expect("spawner");
        let (read, write) = pipe();
        let spawned = spawner
            .spawn(SpawnRequest {
                program: cstr("/bin/sh"),
                argv: vec![
                    cstr("sh"),
                    cstr("-c"),
                    cstr("echo pid=$$ >&7; ls /proc/self/fd >&7"),
                ],
                envp: vec![cstr("PATH=/bin:/usr/bin")],
                namespaces: libc::CLONE_NEWPID | libc::CLONE_NEWNS,
                fds: vec![(write, 7)],
                cgroup: None,
            })
            .await
            .expect("spawn");
        let status = wait(&spawned);
        assert_eq!(status, 0);
        let mut out = String::new();
        std::fs::File::from(read)
            .read_to_string(&mut out)
            .expect("read");
        assert!(out.starts_with("pid=1\n"), "{out}");
        // The pipe at 7, ls's stdout redirected to it (1) and the
        // directory fd ls opens (the lowest free number, 0): nothing
        // inherited.
        let fds: Vec<&str> = out.lines().skip(1).collect();
        assert_eq!(fds, ["0", "1", "7"], "{out}");
    }

    /// A cgroup v2 mount of this host (the unified one of a v1 host will
    /// do: any v2 cgroup can take processes), if any.
    fn cgroup2_mount() -> Option<std::path::PathBuf> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
        mountinfo.lines().find_map(|line| {
            let (head, tail) = line.split_once(" - ")?;
            (tail.split_whitespace().next() == Some("cgroup2"))
                .then(|| head.split_whitespace().nth(4).map(std::path::PathBuf::from))?
        })
    }

    #[tokio::test]
    async fn a_child_is_created_inside_a_v2_cgroup_when_one_is_given() {
        let Some(mount) = cgroup2_mount() else {
            eprintln!("no cgroup2 mount here: CLONE_INTO_CGROUP is not exercised");
            return;
        };
        let name = format!("corral-spawn-test-{}", std::process::id());
        let dir = mount.join(&name);
        std::fs::create_dir(&dir).expect("mkdir the test cgroup");
        let fd = std::fs::File::open(&dir).expect("open the test cgroup");
        let spawner = Spawner::start().expect("spawner");
        let (read, write) = pipe();
        let spawned = spawner
            .spawn(SpawnRequest {
                program: cstr("/bin/sh"),
                argv: vec![cstr("sh"), cstr("-c"), cstr("cat /proc/self/cgroup >&7")],
                envp: vec![cstr("PATH=/bin:/usr/bin")],
                namespaces: libc::CLONE_NEWPID | libc::CLONE_NEWNS,
                fds: vec![(write, 7)],
                cgroup: Some(fd.into()),
            })
            .await
            .expect("spawn");
        let status = wait(&spawned);
        let mut out = String::new();
        std::fs::File::from(read)
            .read_to_string(&mut out)
            .expect("read");
        let _ = std::fs::remove_dir(&dir);
        assert_eq!(status, 0);
        assert!(spawned.in_cgroup, "the kernel refused CLONE_INTO_CGROUP");
        // Created there, never moved: its v2 line names the cgroup.
        assert!(out.lines().any(|l| l == format!("0::/{name}")), "{out}");
    }

    #[tokio::test]
    async fn exec_failure_is_reported_with_errno() {
        let spawner = Spawner::start().expect("spawner");
        let err = spawner
            .spawn(SpawnRequest {
                program: cstr("/nonexistent/trampoline"),
                argv: vec![cstr("x")],
                envp: vec![],
                namespaces: 0,
                fds: vec![],
                cgroup: None,
            })
            .await
            .expect_err("must fail");
        match err {
            SpawnError::Exec { error, .. } => assert_eq!(error.raw_os_error(), Some(libc::ENOENT)),
            other => panic!("{other:?}"),
        }
    }
}
