//! The baselines: the kernel primitives corral is measured against, with
//! nothing of corral's in between. A process is started with
//! `posix_spawn` (glibc's is a vfork-style clone, the fastest way to start
//! a process from a large parent) with the channel on fd 3, and the
//! handshake is run with blocking reads and writes.

use anyhow::{Context, Result, bail};
use corral_protocol::frame::{FrameReader, HANDSHAKE_MAX_FRAME, write_frame};
use corral_protocol::message::{
    CHANNEL_FD, Call, CallResult, HostMessage, Init, InitLimits, PluginMessage, negotiate_version,
};
use std::ffi::CString;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// An executable with its argument vector and (complete) environment.
#[derive(Debug, Clone)]
pub struct Program {
    pub path: CString,
    pub argv: Vec<CString>,
    pub env: Vec<CString>,
}

impl Program {
    pub fn new(path: &Path, args: &[&str]) -> Result<Program> {
        let path_c = CString::new(path.as_os_str().as_encoded_bytes())
            .with_context(|| format!("{} contains a NUL byte", path.display()))?;
        let mut argv = vec![path_c.clone()];
        for a in args {
            argv.push(CString::new(*a).with_context(|| format!("argument {a:?}"))?);
        }
        Ok(Program {
            path: path_c,
            argv,
            env: Vec::new(),
        })
    }

    /// The same program with `args` after the existing ones.
    pub fn with_args(&self, args: &[String]) -> Result<Program> {
        let mut p = self.clone();
        for a in args {
            p.argv
                .push(CString::new(a.as_str()).with_context(|| format!("argument {a:?}"))?);
        }
        Ok(p)
    }
}

/// Starts `program` with stdin and stdout on /dev/null, stderr inherited
/// (or on /dev/null when `quiet`), and `channel` (if any) on fd 3.
pub fn spawn(
    program: &Program,
    channel: Option<BorrowedFd<'_>>,
    quiet: bool,
) -> Result<libc::pid_t> {
    // The source must not already be fd 3 (dup2 onto itself would keep
    // close-on-exec), so move it out of the way first.
    let high = match channel {
        Some(fd) => {
            // SAFETY: fcntl on a borrowed, open fd; the result is ours.
            let new = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 10) };
            if new < 0 {
                return Err(std::io::Error::last_os_error()).context("duplicating the channel");
            }
            // SAFETY: just created, owned by nobody else.
            Some(unsafe { OwnedFd::from_raw_fd(new) })
        }
        None => None,
    };
    let argv: Vec<*mut libc::c_char> = program
        .argv
        .iter()
        .map(|a| a.as_ptr() as *mut libc::c_char)
        .chain(std::iter::once(std::ptr::null_mut()))
        .collect();
    let envp: Vec<*mut libc::c_char> = program
        .env
        .iter()
        .map(|a| a.as_ptr() as *mut libc::c_char)
        .chain(std::iter::once(std::ptr::null_mut()))
        .collect();
    let devnull = c"/dev/null";
    let mut pid: libc::pid_t = 0;
    // SAFETY: the file actions object is initialised before use and
    // destroyed after; every pointer handed to posix_spawn (path, argv,
    // envp, /dev/null) outlives the call.
    let rc = unsafe {
        let mut actions: libc::posix_spawn_file_actions_t = std::mem::zeroed();
        libc::posix_spawn_file_actions_init(&mut actions);
        libc::posix_spawn_file_actions_addopen(
            &mut actions,
            0,
            devnull.as_ptr(),
            libc::O_RDONLY,
            0,
        );
        libc::posix_spawn_file_actions_addopen(
            &mut actions,
            1,
            devnull.as_ptr(),
            libc::O_WRONLY,
            0,
        );
        if quiet {
            libc::posix_spawn_file_actions_addopen(
                &mut actions,
                2,
                devnull.as_ptr(),
                libc::O_WRONLY,
                0,
            );
        }
        if let Some(fd) = &high {
            libc::posix_spawn_file_actions_adddup2(&mut actions, fd.as_raw_fd(), CHANNEL_FD);
        }
        let rc = libc::posix_spawn(
            &mut pid,
            program.path.as_ptr(),
            &actions,
            std::ptr::null(),
            argv.as_ptr(),
            envp.as_ptr(),
        );
        libc::posix_spawn_file_actions_destroy(&mut actions);
        rc
    };
    if rc != 0 {
        return Err(std::io::Error::from_raw_os_error(rc))
            .with_context(|| format!("posix_spawn {}", program.path.to_string_lossy()));
    }
    Ok(pid)
}

/// Waits up to `grace` for `pid` to exit, then kills it; returns the wait
/// status.
pub fn reap(pid: libc::pid_t, grace: Duration) -> i32 {
    let deadline = Instant::now() + grace;
    let mut status = 0;
    loop {
        // SAFETY: waiting for our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid || r < 0 {
            return status;
        }
        if Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    // SAFETY: signalling and waiting for our own child.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, &mut status, 0);
    }
    status
}

/// The plugin side of the handshake, host's part: read Hello, send Init,
/// read Ready, as the supervisor does, with plain blocking I/O.
pub fn handshake(channel: &UnixStream) -> Result<()> {
    let mut reader = FrameReader::new(channel, HANDSHAKE_MAX_FRAME);
    let hello = loop {
        match reader.read::<PluginMessage>()? {
            Some(PluginMessage::Hello(hello)) => break hello,
            Some(PluginMessage::Log(_)) => continue,
            Some(other) => bail!("expected Hello, got {other:?}"),
            None => bail!("the plugin closed the channel before Hello"),
        }
    };
    // The version the host would choose: a plugin may start differently
    // at each (version 2 has host services to set up).
    let Some(version) = negotiate_version(&hello.versions) else {
        bail!("no common protocol version in {:?}", hello.versions);
    };
    let init = HostMessage::Init(Init {
        version,
        max_frame: hello.max_frame.min(4 << 20),
        config: b"{}".to_vec(),
        limits: InitLimits::default(),
    });
    let mut writer = channel;
    write_frame(&mut writer, &init)?;
    loop {
        match reader.read::<PluginMessage>()? {
            Some(PluginMessage::Ready) => return Ok(()),
            Some(PluginMessage::Log(_)) => continue,
            Some(other) => bail!("expected Ready, got {other:?}"),
            None => bail!("the plugin closed the channel before Ready"),
        }
    }
}

/// Sequential calls of `method` on a bare channel after its handshake,
/// with plain blocking I/O: the round trip of each.
pub fn calls(channel: &UnixStream, method: &str, input: &[u8], n: usize) -> Result<Vec<Duration>> {
    let mut reader = FrameReader::new(channel, 4 << 20);
    let mut writer = channel;
    let mut out = Vec::with_capacity(n);
    for id in 1..=n as u64 {
        let call = HostMessage::Call(Call {
            id,
            method: method.into(),
            input: input.to_vec(),
            timeout_ms: 5_000,
        });
        let t = Instant::now();
        write_frame(&mut writer, &call)?;
        loop {
            match reader.read::<PluginMessage>()? {
                Some(PluginMessage::Reply(reply)) if reply.id == id => match reply.result {
                    CallResult::Ok(_) => break,
                    CallResult::Err(e) => bail!("call {id} failed: {e:?}"),
                },
                Some(PluginMessage::Log(_)) => continue,
                Some(other) => bail!("expected the Reply to call {id}, got {other:?}"),
                None => bail!("the plugin closed the channel during call {id}"),
            }
        }
        out.push(t.elapsed());
    }
    Ok(out)
}

/// Spawns `program` with a fresh channel and runs the handshake; returns
/// the time from just before the spawn to Ready, the pid and our end.
pub fn start_to_ready(program: &Program) -> Result<(Duration, libc::pid_t, UnixStream)> {
    let (ours, theirs) = UnixStream::pair().context("socketpair")?;
    let t = Instant::now();
    let pid = spawn(program, Some(std::os::fd::AsFd::as_fd(&theirs)), false)?;
    drop(theirs);
    let result = handshake(&ours);
    let elapsed = t.elapsed();
    if let Err(e) = result {
        drop(ours);
        let status = reap(pid, Duration::from_secs(1));
        return Err(e.context(format!(
            "handshake with {} (wait status {status:#x})",
            program.path.to_string_lossy()
        )));
    }
    Ok((elapsed, pid, ours))
}

/// Pins the calling thread to one CPU.
pub fn pin_to_cpu(cpu: usize) -> Result<()> {
    // SAFETY: a zeroed cpu_set_t is the empty set; CPU_SET and
    // sched_setaffinity(0) act on this thread only.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context(format!("pinning to CPU {cpu}"));
    }
    Ok(())
}

/// Resident set size of `pid` (`self` for this process), bytes.
pub fn rss_bytes(pid: &str) -> Option<u64> {
    status_field(pid, "VmRSS:")
}

fn status_field(pid: &str, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kib| kib * 1024)
}

/// Heap bytes in use by this process's allocator (glibc: every arena plus
/// mmapped chunks).
pub fn heap_in_use() -> u64 {
    // SAFETY: mallinfo2 only reads the allocator's statistics.
    let info = unsafe { libc::mallinfo2() };
    (info.uordblks + info.hblkhd) as u64
}
