//! Starts the real `corral-sandbox` binary the way the supervisor does: a
//! clone into new namespaces, the channel on fd 3, stdio on pipes, one
//! Bootstrap frame, then collects what came back.
//!
//! The clone is fork-style (no CLONE_VM) because a test process is
//! multi-threaded: the child only calls dup2 and execve before it becomes
//! the trampoline, which is safe after fork in a threaded process.

#![allow(dead_code)]

use corral_protocol::policy::{
    Confinement, Credentials, FsAccess, FsRule, LandlockSpec, Mounts, NamespaceSource, Namespaces,
    Requirement, TmpfsSpec,
};
use corral_protocol::{Bootstrap, FrameBuffer, PluginMessage, frame};
use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

pub const SANDBOX: &str = env!("CARGO_BIN_EXE_corral-sandbox");

/// The uid and gid plugins run as in these tests.
pub const PLUGIN_ID: u32 = 200_123;

/// Longest a sandboxed test program may run before it is killed.
const DEADLINE: Duration = Duration::from_secs(60);

/// These tests create namespaces, mount and change uid: they need root.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test starts the trampoline as the supervisor does, which needs root (euid 0); \
         it runs as euid {euid}: run `cargo test -p corral-sandbox` as root"
    );
}

/// What to start and how.
pub struct Spawn {
    /// Namespaces created by the clone, beyond what `bootstrap` implies.
    pub clone_flags: libc::c_int,
    /// Extra fds the child inherits: (fd in this process, fd number in the
    /// child), without close-on-exec.
    pub extra_fds: Vec<(RawFd, RawFd)>,
    /// Bytes written on the channel before the trampoline starts.
    pub input: Vec<u8>,
    /// Shut the channel down for writing after `input`, as a supervisor
    /// that went away would.
    pub hang_up: bool,
    /// Exec the trampoline with every signal blocked, as the supervisor's
    /// spawner thread does.
    pub block_signals: bool,
}

impl Spawn {
    /// The supervisor's way: the clone flags the confinement needs and one
    /// Bootstrap frame.
    pub fn bootstrap(confinement: Confinement) -> Spawn {
        let clone_flags = clone_flags(&confinement.namespaces);
        let bootstrap = Bootstrap {
            plugin: "test-plugin".into(),
            confinement,
        };
        Spawn {
            clone_flags,
            extra_fds: Vec::new(),
            input: frame::encode(&bootstrap).expect("encode the bootstrap frame"),
            hang_up: false,
            block_signals: true,
        }
    }
}

/// The namespaces the supervisor creates with clone for `ns`.
pub fn clone_flags(ns: &Namespaces) -> libc::c_int {
    let mut flags = 0;
    if ns.pid {
        flags |= libc::CLONE_NEWPID;
    }
    if ns.mount {
        flags |= libc::CLONE_NEWNS;
    }
    for (source, flag) in [
        (ns.net, libc::CLONE_NEWNET),
        (ns.ipc, libc::CLONE_NEWIPC),
        (ns.uts, libc::CLONE_NEWUTS),
    ] {
        if source == NamespaceSource::Fresh {
            flags |= flag;
        }
    }
    flags
}

#[derive(Debug)]
pub struct Outcome {
    /// Raw wait status.
    pub status: libc::c_int,
    pub stdout: String,
    pub stderr: String,
    /// Frames the trampoline (or the plugin) wrote on the channel.
    pub frames: Vec<PluginMessage>,
}

impl Outcome {
    pub fn exit_code(&self) -> Option<i32> {
        libc::WIFEXITED(self.status).then(|| libc::WEXITSTATUS(self.status))
    }

    pub fn signal(&self) -> Option<i32> {
        libc::WIFSIGNALED(self.status).then(|| libc::WTERMSIG(self.status))
    }

    /// Asserts the program ran to a zero exit.
    pub fn assert_success(&self) {
        assert_eq!(
            self.exit_code(),
            Some(0),
            "expected exit 0; got status {:#x}\nstdout:\n{}\nstderr:\n{}\nframes: {:?}",
            self.status,
            self.stdout,
            self.stderr,
            self.frames
        );
    }

    /// Values of `key=value` lines on stdout, in order.
    pub fn values(&self, key: &str) -> Vec<String> {
        let prefix = format!("{key}=");
        self.stdout
            .lines()
            .filter_map(|l| l.strip_prefix(&prefix))
            .map(str::to_owned)
            .collect()
    }

    /// The single value of `key`.
    pub fn value(&self, key: &str) -> String {
        let values = self.values(key);
        assert_eq!(
            values.len(),
            1,
            "expected one {key}= line\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        values[0].clone()
    }

    /// The `SandboxFailure` the trampoline reported, checking it exited 126
    /// without running the plugin.
    pub fn failure(&self) -> corral_protocol::message::SandboxFailure {
        assert_eq!(
            self.exit_code(),
            Some(126),
            "expected exit 126; got status {:#x}\nstdout:\n{}\nstderr:\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
        match self.frames.as_slice() {
            [PluginMessage::SandboxFailure(f)] => f.clone(),
            other => panic!(
                "expected exactly one SandboxFailure frame, got {other:?}\nstderr:\n{}",
                self.stderr
            ),
        }
    }
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: both fds were just created and are owned by no one else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// A close-on-exec copy of `fd` numbered 200 or more, out of the way of
/// every fd number the child sets up.
fn high_dup(fd: RawFd) -> OwnedFd {
    // SAFETY: F_DUPFD_CLOEXEC on a valid fd.
    let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 200) };
    assert!(
        dup >= 200,
        "dup fd {fd}: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: `dup` was just created.
    unsafe { OwnedFd::from_raw_fd(dup) }
}

fn read_all_in_thread(fd: OwnedFd) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = std::fs::File::from(fd).read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    })
}

/// Starts the trampoline, feeds it `spawn.input` and waits for it (and the
/// plugin it became) to end.
pub fn run(spawn: Spawn) -> Outcome {
    start(spawn).finish()
}

/// A trampoline (or the plugin it became) still running.
pub struct Running {
    pid: libc::pid_t,
    channel: UnixStream,
    stdout: std::fs::File,
    stdout_seen: Vec<u8>,
    stderr: std::thread::JoinHandle<String>,
    watchdog: Watchdog,
}

impl Running {
    /// Reads stdout until a line equal to `line` has arrived.
    pub fn wait_for_line(&mut self, line: &str) {
        let mut byte = [0u8; 1];
        loop {
            let complete = self.stdout_seen.ends_with(b"\n")
                && String::from_utf8_lossy(&self.stdout_seen)
                    .lines()
                    .any(|l| l == line);
            if complete {
                return;
            }
            match self.stdout.read(&mut byte) {
                Ok(1) => self.stdout_seen.push(byte[0]),
                Ok(_) => panic!(
                    "stdout ended before the line {line:?}; got:\n{}",
                    String::from_utf8_lossy(&self.stdout_seen)
                ),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => panic!("read stdout: {e}"),
            }
        }
    }

    /// Waits for the end and collects everything.
    pub fn finish(mut self) -> Outcome {
        let mut rest = Vec::new();
        let stdout = std::thread::spawn(move || {
            let _ = self.stdout.read_to_end(&mut rest);
            self.stdout_seen.extend(rest);
            String::from_utf8_lossy(&self.stdout_seen).into_owned()
        });
        self.channel
            .set_read_timeout(Some(DEADLINE))
            .expect("set a read timeout");
        let mut channel_bytes = Vec::new();
        let _ = self.channel.read_to_end(&mut channel_bytes);
        let status = self.watchdog.wait();

        let mut buffer = FrameBuffer::new(frame::HANDSHAKE_MAX_FRAME);
        buffer.extend(&channel_bytes);
        let mut frames = Vec::new();
        while let Some(message) = buffer
            .next_message::<PluginMessage>()
            .expect("the channel carries valid frames")
        {
            frames.push(message);
        }
        assert_eq!(
            buffer.pending(),
            0,
            "a partial frame was left on the channel"
        );
        Outcome {
            status,
            stdout: stdout.join().expect("stdout reader"),
            stderr: self.stderr.join().expect("stderr reader"),
            frames,
        }
    }
}

/// Starts the trampoline and feeds it `spawn.input`.
pub fn start(spawn: Spawn) -> Running {
    let (mut ours, theirs) = UnixStream::pair().expect("socketpair");
    std::io::Write::write_all(&mut ours, &spawn.input).expect("write the bootstrap");
    if spawn.hang_up {
        ours.shutdown(std::net::Shutdown::Write)
            .expect("shutdown the channel");
    }
    let (stdout_r, stdout_w) = pipe();
    let (stderr_r, stderr_w) = pipe();
    let dev_null = std::fs::File::open("/dev/null").expect("open /dev/null");

    // (source, target) pairs, sources all high so no dup2 clobbers one.
    let mut plan: Vec<(OwnedFd, RawFd)> = vec![
        (high_dup(dev_null.as_raw_fd()), 0),
        (high_dup(stdout_w.as_raw_fd()), 1),
        (high_dup(stderr_w.as_raw_fd()), 2),
        (high_dup(theirs.as_raw_fd()), 3),
    ];
    for &(fd, target) in &spawn.extra_fds {
        plan.push((high_dup(fd), target));
    }
    let pairs: Vec<(RawFd, RawFd)> = plan.iter().map(|(s, t)| (s.as_raw_fd(), *t)).collect();
    let path = CString::new(SANDBOX).expect("binary path");
    let argv = [path.as_ptr(), std::ptr::null()];
    let envp = [std::ptr::null::<libc::c_char>()];
    // SAFETY: an all-zero sigset_t is valid for sigfillset to initialise.
    let mut all_signals: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `all_signals` is valid to write.
    unsafe { libc::sigfillset(&mut all_signals) };

    // SAFETY: a fork-style clone (no CLONE_VM, no new stack). The child
    // runs only async-signal-safe calls (dup2, execve, _exit) on memory
    // prepared above.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            libc::c_long::from(spawn.clone_flags | libc::SIGCHLD),
            0 as libc::c_long,
            0 as libc::c_long,
            0 as libc::c_long,
            0 as libc::c_long,
        )
    };
    if pid == 0 {
        if spawn.block_signals {
            // SAFETY: sigprocmask is async-signal-safe; the set is valid.
            unsafe { libc::sigprocmask(libc::SIG_SETMASK, &all_signals, std::ptr::null_mut()) };
        }
        for &(source, target) in &pairs {
            // SAFETY: both are valid fd numbers; dup2 clears CLOEXEC on
            // the target.
            if unsafe { libc::dup2(source, target) } < 0 {
                // SAFETY: _exit is async-signal-safe.
                unsafe { libc::_exit(127) };
            }
        }
        // SAFETY: argv and envp are NULL-terminated arrays of valid strings.
        unsafe {
            libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr());
            libc::_exit(127);
        }
    }
    assert!(
        pid > 0,
        "clone with flags {:#x}: {}",
        spawn.clone_flags,
        std::io::Error::last_os_error()
    );
    let pid = pid as libc::pid_t;
    drop(plan);
    drop(theirs);
    drop(stdout_w);
    drop(stderr_w);

    Running {
        pid,
        channel: ours,
        stdout: std::fs::File::from(stdout_r),
        stdout_seen: Vec::new(),
        stderr: read_all_in_thread(stderr_r),
        watchdog: Watchdog::start(pid),
    }
}

/// Kills the child if it outlives [`DEADLINE`]; never kills a reaped pid,
/// because the child is only reaped after the watchdog has been stopped.
struct Watchdog {
    pid: libc::pid_t,
    state: Arc<(Mutex<bool>, Condvar)>,
    thread: std::thread::JoinHandle<()>,
}

impl Watchdog {
    fn start(pid: libc::pid_t) -> Watchdog {
        let state = Arc::new((Mutex::new(false), Condvar::new()));
        let shared = Arc::clone(&state);
        let thread = std::thread::spawn(move || {
            let (lock, cv) = &*shared;
            let done = lock.lock().expect("watchdog lock");
            let (done, _) = cv
                .wait_timeout_while(done, DEADLINE, |done| !*done)
                .expect("watchdog wait");
            if !*done {
                // SAFETY: the child is not reaped yet, so `pid` is still it.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        });
        Watchdog { pid, state, thread }
    }

    /// Waits for the child to end, stops the watchdog, then reaps it.
    fn wait(self) -> libc::c_int {
        // SAFETY: an all-zero siginfo_t is valid for waitid to fill.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        loop {
            // SAFETY: `info` is valid; WNOWAIT leaves the child unreaped.
            let rc = unsafe {
                libc::waitid(
                    libc::P_PID,
                    self.pid as libc::id_t,
                    &mut info,
                    libc::WEXITED | libc::WNOWAIT,
                )
            };
            if rc == 0 {
                break;
            }
            let err = std::io::Error::last_os_error();
            assert_eq!(err.kind(), std::io::ErrorKind::Interrupted, "waitid: {err}");
        }
        {
            let (lock, cv) = &*self.state;
            *lock.lock().expect("watchdog lock") = true;
            cv.notify_all();
        }
        self.thread.join().expect("watchdog thread");
        let mut status = 0;
        // SAFETY: `status` is valid to write.
        let rc = unsafe { libc::waitpid(self.pid, &mut status, 0) };
        assert_eq!(rc, self.pid, "waitpid: {}", std::io::Error::last_os_error());
        status
    }
}

/// The scratch directory the tests mount their tmpfs on. Overmounting it
/// happens only in the sandbox's own mount namespace.
pub const SCRATCH: &str = "/tmp";

/// Read+exec for the system's programs and libraries, read for the loader
/// cache and /proc, write for /dev/null and the scratch space.
pub fn system_rules() -> Vec<FsRule> {
    let mut rules = vec![FsRule {
        path: "/usr".into(),
        access: FsAccess::ReadExec,
    }];
    for dir in ["/bin", "/lib", "/lib64"] {
        if std::path::Path::new(dir).exists() {
            rules.push(FsRule {
                path: dir.into(),
                access: FsAccess::ReadExec,
            });
        }
    }
    // The loader's cache, where the host has one (a rule on a missing
    // path fails the landlock step).
    if std::path::Path::new("/etc/ld.so.cache").exists() {
        rules.push(FsRule {
            path: "/etc/ld.so.cache".into(),
            access: FsAccess::Read,
        });
    }
    rules.extend([
        FsRule {
            path: "/proc".into(),
            access: FsAccess::Read,
        },
        FsRule {
            path: "/dev/null".into(),
            access: FsAccess::ReadWrite,
        },
        FsRule {
            path: SCRATCH.into(),
            access: FsAccess::ReadWrite,
        },
    ]);
    rules
}

pub fn landlock(fs: Vec<FsRule>) -> LandlockSpec {
    LandlockSpec {
        fs,
        tcp_connect: None,
        tcp_bind: None,
        scope_signals: true,
        scope_abstract_unix: true,
        fs_requirement: Requirement::Required,
        net_requirement: Requirement::Required,
        scope_requirement: Requirement::Required,
    }
}

/// A full confinement running `sh -c script` as [`PLUGIN_ID`]: fresh
/// namespaces, /proc, a 8 MiB / 256-inode scratch tmpfs as the working
/// directory, Landlock on the system directories.
pub fn sh(script: &str) -> Confinement {
    Confinement {
        entry: "/bin/sh".into(),
        argv: vec!["sh".into(), "-c".into(), script.into()],
        env: vec![("PATH".into(), "/usr/bin:/bin".into())],
        workdir: SCRATCH.into(),
        namespaces: Namespaces {
            user: false,
            pid: true,
            mount: true,
            net: NamespaceSource::Fresh,
            ipc: NamespaceSource::Fresh,
            uts: NamespaceSource::Fresh,
            cgroup: false,
            memfd_noexec: false,
        },
        mounts: Mounts {
            proc: true,
            scratch: Some(TmpfsSpec {
                path: SCRATCH.into(),
                size_bytes: 8 << 20,
                inodes: 256,
                keep: Vec::new(),
            }),
            remaps: Vec::new(),
            root: None,
        },
        credentials: Credentials {
            uid: PLUGIN_ID,
            gid: PLUGIN_ID,
        },
        rlimits: Vec::new(),
        die_with_parent: true,
        landlock: Some(landlock(system_rules())),
        seccomp: None,
    }
}

/// Shell lines printing `Key=value` for each `Key:` line of
/// /proc/self/status the script is interested in, using builtins only.
pub const PRINT_STATUS: &str = r#"
while IFS= read -r line; do
  case "$line" in
    Uid:*|Gid:*|Groups:*|CapInh:*|CapPrm:*|CapEff:*|CapBnd:*|CapAmb:*|NoNewPrivs:*|Seccomp:*)
      key=${line%%:*}; set -- ${line#*:}; echo "$key=$*";;
  esac
done < /proc/self/status
"#;
