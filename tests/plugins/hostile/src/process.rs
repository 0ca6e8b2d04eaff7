//! Process attacks: tracing and signalling others, bombs of processes,
//! threads, memory and fds, CPU spinning, and dying in the usual ways.
//!
//! Every bomb has a ceiling far above any sandbox limit but below what
//! would hurt the machine, so running this binary unconfined by mistake is
//! survivable; reaching the ceiling is reported as `ok: true` (the limit
//! did not hold).

use crate::attempt::Attempt;
use serde::Deserialize;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Deserialize)]
pub struct PidInput {
    pub pid: i32,
}

/// PTRACE_ATTACH, then PTRACE_SEIZE: both must fail.
pub fn ptrace(input: PidInput) -> Attempt {
    let pid = input.pid;
    let null = std::ptr::null_mut::<libc::c_void>();
    // SAFETY: ptrace with integer arguments and null pointers.
    let attach = unsafe { libc::ptrace(libc::PTRACE_ATTACH, pid, null, null) };
    let attach_result = result_of(attach);
    if attach == 0 {
        let mut status = 0;
        // SAFETY: waiting for the tracee we just stopped, then letting go.
        unsafe {
            libc::waitpid(pid, &mut status, libc::__WALL);
            libc::ptrace(libc::PTRACE_DETACH, pid, null, null);
        }
    }
    // SAFETY: as above.
    let seize = unsafe { libc::ptrace(libc::PTRACE_SEIZE, pid, null, null) };
    let seize_result = result_of(seize);
    if seize == 0 {
        // SAFETY: releasing the tracee.
        unsafe { libc::ptrace(libc::PTRACE_DETACH, pid, null, null) };
    }
    let attempted = format!("ptrace(PTRACE_ATTACH, {pid}); ptrace(PTRACE_SEIZE, {pid})");
    let detail = format!(
        "PTRACE_ATTACH: {}; PTRACE_SEIZE: {}",
        describe(&attach_result),
        describe(&seize_result)
    );
    match (attach_result, seize_result) {
        (Err(_), Err(e)) => Attempt::failed(attempted, &e).with_detail(detail),
        _ => Attempt::succeeded(attempted, detail),
    }
}

fn result_of(ret: libc::c_long) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn describe(result: &io::Result<()>) -> String {
    match result {
        Ok(()) => "succeeded".into(),
        Err(e) => e.to_string(),
    }
}

#[derive(Deserialize)]
pub struct KillInput {
    pub pid: i32,
    #[serde(default = "sigkill")]
    pub signal: i32,
}

fn sigkill() -> i32 {
    libc::SIGKILL
}

pub fn kill(input: KillInput) -> Attempt {
    // SAFETY: kill(2) takes plain integers.
    let ret = unsafe { libc::kill(input.pid, input.signal) };
    Attempt::from_ret(format!("kill({}, {})", input.pid, input.signal), ret.into())
}

/// kill(-1, SIGKILL): every process the plugin may signal, except itself.
/// Only the sandbox's own processes may be in reach.
pub fn kill_all() -> Attempt {
    // SAFETY: kill(2) takes plain integers.
    let ret = unsafe { libc::kill(-1, libc::SIGKILL) };
    Attempt::from_ret("kill(-1, SIGKILL)", ret.into())
}

#[derive(Deserialize, Default)]
pub struct BombInput {
    /// Ceiling: stop after this many (default differs per bomb).
    pub max: Option<u64>,
}

/// Forks in a loop; every child forks too, all sharing one counter so the
/// whole tree stops at the ceiling. The children then wait to be killed
/// with the sandbox.
pub fn fork_bomb(input: Option<BombInput>) -> Attempt {
    let max = input.unwrap_or_default().max.unwrap_or(256);
    let attempted = format!("fork() in a loop, children forking too, up to {max} processes");
    // SAFETY: an anonymous shared mapping the size of one counter.
    let shared = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            std::mem::size_of::<AtomicU64>(),
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if shared == libc::MAP_FAILED {
        return Attempt::failed(attempted, &io::Error::last_os_error());
    }
    // SAFETY: the mapping is zeroed, aligned to a page and lives for the
    // rest of the process (and of every child), so a 'static reference is
    // sound; AtomicU64 has the layout of a zeroed u64.
    let counter: &'static AtomicU64 = unsafe { &*shared.cast::<AtomicU64>() };
    let mut forked = 0u64;
    let mut failure = None;
    while counter.fetch_add(1, Ordering::SeqCst) < max {
        // SAFETY: this process has one thread here (the SDK starts none),
        // and the child only calls async-signal-safe functions.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            counter.fetch_sub(1, Ordering::SeqCst);
            failure = Some(io::Error::last_os_error());
            break;
        }
        if pid == 0 {
            keep_forking(counter, max);
        }
        forked += 1;
    }
    let total = counter.load(Ordering::SeqCst).min(max);
    match failure {
        Some(e) => Attempt::failed(attempted, &e)
            .with_detail(format!(
                "this process forked {forked} children ({total} in the tree) before: {e}"
            ))
            .with_value(forked),
        None => Attempt::succeeded(
            attempted,
            format!("forked {forked} children, {total} in the tree: nothing stopped it"),
        )
        .with_value(forked),
    }
}

/// A bomb child: fork while the tree is below the ceiling, retrying after
/// failures, then wait forever. Never returns to the serve loop.
fn keep_forking(counter: &AtomicU64, max: u64) -> ! {
    // The child must not hold the host's channel: it would keep the
    // channel open after the plugin dies.
    // SAFETY: closing an fd number; async-signal-safe.
    unsafe { libc::close(corral_protocol::message::CHANNEL_FD) };
    let pause = libc::timespec {
        tv_sec: 0,
        tv_nsec: 10_000_000,
    };
    loop {
        if counter.fetch_add(1, Ordering::SeqCst) >= max {
            counter.fetch_sub(1, Ordering::SeqCst);
            // SAFETY: async-signal-safe.
            unsafe { libc::pause() };
            continue;
        }
        // SAFETY: as in fork_bomb.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            counter.fetch_sub(1, Ordering::SeqCst);
            // SAFETY: async-signal-safe.
            unsafe { libc::nanosleep(&pause, std::ptr::null_mut()) };
        }
    }
}

/// Spawns parked threads until the kernel refuses.
pub fn thread_bomb(input: Option<BombInput>) -> Attempt {
    let max = input.unwrap_or_default().max.unwrap_or(1024);
    let attempted = format!("pthread_create in a loop, up to {max} threads");
    let mut spawned = 0u64;
    while spawned < max {
        let spawn = std::thread::Builder::new().stack_size(64 * 1024).spawn(|| {
            loop {
                std::thread::park();
            }
        });
        match spawn {
            Ok(_) => spawned += 1,
            Err(e) => {
                return Attempt::failed(attempted, &e)
                    .with_detail(format!("{spawned} threads started before: {e}"))
                    .with_value(spawned);
            }
        }
    }
    Attempt::succeeded(attempted, format!("{spawned} threads: nothing stopped it"))
        .with_value(spawned)
}

#[derive(Deserialize, Default)]
pub struct MemoryInput {
    /// Ceiling in MiB (default 4096).
    pub max_mib: Option<u64>,
}

/// Maps and touches 1 MiB at a time until the kernel refuses or the OOM
/// killer ends the process.
pub fn memory_bomb(input: Option<MemoryInput>) -> Attempt {
    const CHUNK: usize = 1 << 20;
    let max = input.unwrap_or_default().max_mib.unwrap_or(4096);
    let attempted = format!("mmap + touch 1MiB chunks, up to {max} MiB");
    let mut mapped = 0u64;
    while mapped < max {
        // SAFETY: a fresh private anonymous mapping.
        let chunk = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                CHUNK,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if chunk == libc::MAP_FAILED {
            let e = io::Error::last_os_error();
            return Attempt::failed(attempted, &e)
                .with_detail(format!("{mapped} MiB touched before: {e}"))
                .with_value(mapped << 20);
        }
        let bytes = chunk.cast::<u8>();
        for offset in (0..CHUNK).step_by(4096) {
            // SAFETY: within the mapping just created; volatile so the
            // pages are really faulted in.
            unsafe { bytes.add(offset).write_volatile(1) };
        }
        mapped += 1;
    }
    Attempt::succeeded(
        attempted,
        format!("{mapped} MiB touched: nothing stopped it"),
    )
    .with_value(mapped << 20)
}

#[derive(Deserialize, Default)]
pub struct SpinInput {
    /// Give up after this long (default 300 s); a working sandbox kills
    /// the plugin long before.
    pub seconds: Option<u64>,
}

/// Burns CPU and never looks at cancellation.
pub fn cpu_spin(input: Option<SpinInput>) -> Attempt {
    let seconds = input.unwrap_or_default().seconds.unwrap_or(300);
    let start = Instant::now();
    let mut x: u64 = 1;
    while start.elapsed() < Duration::from_secs(seconds) {
        for _ in 0..100_000 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    }
    Attempt::succeeded(
        format!("spin for {seconds} s ignoring cancel"),
        format!("spun {seconds} s: nothing stopped it"),
    )
}

/// dup() until EMFILE, then closes them all so the plugin goes on working.
pub fn fd_exhaust(input: Option<BombInput>) -> Attempt {
    let max = input.unwrap_or_default().max.unwrap_or(1 << 20);
    let attempted = format!("dup() in a loop, up to {max} fds");
    // Any open fd will do as the original; stderr almost always is.
    let original = [2, 1, 0, corral_protocol::message::CHANNEL_FD]
        .into_iter()
        // SAFETY: F_GETFD only asks whether the fd is open.
        .find(|fd| unsafe { libc::fcntl(*fd, libc::F_GETFD) } >= 0);
    let Some(original) = original else {
        return Attempt::failed(attempted, &io::Error::from_raw_os_error(libc::EBADF))
            .with_detail("no open fd to duplicate");
    };
    let mut opened = Vec::new();
    let mut failure = None;
    while (opened.len() as u64) < max {
        // SAFETY: duplicating an open fd.
        let fd = unsafe { libc::fcntl(original, libc::F_DUPFD_CLOEXEC, 0) };
        if fd < 0 {
            failure = Some(io::Error::last_os_error());
            break;
        }
        opened.push(fd);
    }
    for fd in &opened {
        // SAFETY: closing fds opened above.
        unsafe { libc::close(*fd) };
    }
    let count = opened.len() as u64;
    match failure {
        Some(e) => Attempt::failed(attempted, &e)
            .with_detail(format!("{count} fds opened before: {e}"))
            .with_value(count),
        None => Attempt::succeeded(attempted, format!("{count} fds: nothing stopped it"))
            .with_value(count),
    }
}

#[derive(Deserialize, Default)]
pub struct ExitInput {
    #[serde(default)]
    pub code: i32,
}

pub fn exit(input: Option<ExitInput>) -> ! {
    // SAFETY: ends the process at once, as a crashing plugin would.
    unsafe { libc::_exit(input.unwrap_or_default().code) }
}

/// abort(3). Outside a pid namespace the process dies by SIGABRT. As the
/// first process of its own pid namespace (as in corral's sandbox) the
/// kernel drops the SIGABRT it raises at itself, since a namespace's init
/// ignores signals it has no handler for; glibc's abort then executes
/// `hlt`, so the death shows as SIGSEGV.
pub fn abort() -> ! {
    std::process::abort()
}

/// A real invalid memory access (not a raised signal): a write to a page
/// mapped without access.
pub fn segfault() -> Attempt {
    // SAFETY: a fresh anonymous mapping with no access rights.
    let page = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if page == libc::MAP_FAILED {
        return Attempt::failed("mmap(PROT_NONE)", &io::Error::last_os_error());
    }
    // SAFETY: deliberately faulting: the page exists but is not writable,
    // so the write raises SIGSEGV and the process dies.
    unsafe { page.cast::<u8>().write_volatile(1) };
    Attempt::succeeded("write to a PROT_NONE page", "the write did not fault")
}
