//! The seccomp step, run for real: a filter compiled the way the
//! supervisor compiles one (default action: kill the process) is in force
//! when the plugin runs, and a failure after it is installed is still
//! reported.

mod common;

use common::{Spawn, require_root, run, sh};
use corral_protocol::policy::{BpfInstruction, SeccompProgram};
use seccompiler::{BpfProgram, SeccompAction, SeccompFilter};
use std::collections::BTreeMap;
use std::os::fd::AsRawFd;

/// Compiles an allow-list; anything else kills the process.
fn allow_only(syscalls: &[i64]) -> SeccompProgram {
    let rules: BTreeMap<i64, Vec<seccompiler::SeccompRule>> =
        syscalls.iter().map(|&nr| (nr, Vec::new())).collect();
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::KillProcess,
        SeccompAction::Allow,
        std::env::consts::ARCH
            .try_into()
            .expect("seccompiler supports this architecture"),
    )
    .expect("a valid filter");
    let program: BpfProgram = filter.try_into().expect("compile the filter");
    SeccompProgram {
        instructions: program
            .iter()
            .map(|i| BpfInstruction {
                code: i.code,
                jt: i.jt,
                jf: i.jf,
                k: i.k,
            })
            .collect(),
        allowed: Vec::new(),
        notify: None,
    }
}

/// What a dynamically linked /bin/sh needs to start and run builtins,
/// plus what the trampoline calls after installing the filter. `umask` is
/// deliberately absent.
fn shell_syscalls() -> Vec<i64> {
    let mut list = vec![
        libc::SYS_read,
        libc::SYS_write,
        libc::SYS_openat,
        libc::SYS_close,
        libc::SYS_fstat,
        libc::SYS_newfstatat,
        libc::SYS_lseek,
        libc::SYS_mmap,
        libc::SYS_mprotect,
        libc::SYS_munmap,
        libc::SYS_brk,
        libc::SYS_rt_sigaction,
        libc::SYS_rt_sigprocmask,
        libc::SYS_rt_sigreturn,
        libc::SYS_ioctl,
        libc::SYS_pread64,
        libc::SYS_faccessat,
        libc::SYS_faccessat2,
        libc::SYS_execve,
        libc::SYS_exit,
        libc::SYS_exit_group,
        libc::SYS_getpid,
        libc::SYS_getppid,
        libc::SYS_getuid,
        libc::SYS_geteuid,
        libc::SYS_getgid,
        libc::SYS_getegid,
        libc::SYS_set_tid_address,
        libc::SYS_set_robust_list,
        libc::SYS_rseq,
        libc::SYS_prlimit64,
        libc::SYS_getrandom,
        libc::SYS_fcntl,
        libc::SYS_dup,
        libc::SYS_dup3,
        libc::SYS_chdir,
        libc::SYS_getcwd,
        libc::SYS_futex,
        libc::SYS_wait4,
        libc::SYS_clone,
    ];
    #[cfg(target_arch = "x86_64")]
    list.extend([
        libc::SYS_access,
        libc::SYS_arch_prctl,
        libc::SYS_stat,
        libc::SYS_dup2,
    ]);
    list
}

#[test]
fn a_forbidden_syscall_kills_the_plugin_with_sigsys() {
    require_root();
    let mut confinement = sh(
        "while IFS= read -r l; do case $l in Seccomp:*) echo \"seccomp=${l#Seccomp:}\";; esac; \
         done < /proc/self/status; echo before; umask 077; echo after",
    );
    confinement.seccomp = Some(allow_only(&shell_syscalls()));
    let out = run(Spawn::bootstrap(confinement));
    assert_eq!(
        out.signal(),
        Some(libc::SIGSYS),
        "expected death by SIGSYS; status {:#x}\nstdout:\n{}\nstderr:\n{}\nframes: {:?}",
        out.status,
        out.stdout,
        out.stderr,
        out.frames
    );
    assert_eq!(
        out.value("seccomp").trim(),
        "2",
        "the plugin runs in filter mode"
    );
    assert!(out.stdout.contains("before"), "{}", out.stdout);
    assert!(
        !out.stdout.contains("after"),
        "umask must not have returned:\n{}",
        out.stdout
    );
    assert!(out.frames.is_empty(), "{:?}", out.frames);
}

#[test]
fn the_same_filter_lets_allowed_work_finish() {
    require_root();
    // Proves the kill above came from umask, not from a missing entry.
    let mut confinement = sh("echo before; echo after");
    confinement.seccomp = Some(allow_only(&shell_syscalls()));
    let out = run(Spawn::bootstrap(confinement));
    out.assert_success();
    assert_eq!(out.stdout, "before\nafter\n");
}

#[test]
fn an_exec_failure_under_the_tightest_filter_is_still_reported() {
    require_root();
    // Only what the trampoline itself may use after installing the filter:
    // any other call (an allocation's brk or mmap included) would kill it
    // with SIGSYS instead of reporting.
    let mut confinement = sh("");
    confinement.entry = "/nonexistent/corral-plugin".into();
    confinement.seccomp = Some(allow_only(&[
        libc::SYS_chdir,
        libc::SYS_execve,
        libc::SYS_write,
        libc::SYS_exit_group,
    ]));
    let out = run(Spawn::bootstrap(confinement));
    let failure = out.failure();
    assert_eq!(failure.step, "exec");
    assert_eq!(failure.errno, libc::ENOENT);
    assert!(
        failure.message.contains("/nonexistent/corral-plugin"),
        "{}",
        failure.message
    );
}

#[test]
fn an_empty_program_is_a_seccomp_failure() {
    require_root();
    let mut confinement = sh("echo ran");
    confinement.seccomp = Some(SeccompProgram {
        instructions: Vec::new(),
        allowed: Vec::new(),
        notify: None,
    });
    let out = run(Spawn::bootstrap(confinement));
    let failure = out.failure();
    assert_eq!(failure.step, "seccomp");
    assert!(failure.message.contains("empty"), "{}", failure.message);
    assert!(out.stdout.is_empty(), "the plugin ran: {}", out.stdout);
}

/// Set in the process `a_filter_without_a_listener_falls_back_to_its_action`
/// starts: that process is the one confined.
const FALLBACK_CHILD: &str = "CORRAL_TEST_FALLBACK_CHILD";

/// Where the kernel will not make a listener (here: a filter above already
/// has one, so seccomp(2) answers EBUSY), the program's referrals become
/// its fallback: the marker says no listener came, and a refused call
/// kills the process with SIGSYS.
#[test]
fn a_filter_without_a_listener_falls_back_to_its_action() {
    use corral_protocol::policy::{SECCOMP_LISTENER_NONE, SeccompAction, SeccompNotify};
    use std::io::Read;
    use std::os::unix::process::ExitStatusExt;
    if std::env::var_os(FALLBACK_CHILD).is_some() {
        let ret = |k| BpfInstruction {
            code: 0x06,
            jt: 0,
            jf: 0,
            k,
        };
        // SAFETY: plain prctl; the process is this test's alone.
        unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
        // A first filter, allowing everything, that holds a listener.
        let mut allow = corral_sandbox::seccomp::to_sock_filters(&[ret(libc::SECCOMP_RET_ALLOW)])
            .expect("filter");
        let prog = libc::sock_fprog {
            len: 1,
            filter: allow.as_mut_ptr(),
        };
        // SAFETY: prog points at a live one-instruction program.
        let listener = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
                &prog as *const libc::sock_fprog,
            )
        };
        assert!(
            listener >= 0,
            "first listener: {}",
            std::io::Error::last_os_error()
        );
        // getppid is referred to the supervisor; everything else allowed.
        let program = SeccompProgram {
            instructions: vec![
                BpfInstruction {
                    code: 0x20,
                    jt: 0,
                    jf: 0,
                    k: 0,
                },
                BpfInstruction {
                    code: 0x15,
                    jt: 0,
                    jf: 1,
                    k: libc::SYS_getppid as u32,
                },
                ret(libc::SECCOMP_RET_USER_NOTIF),
                ret(libc::SECCOMP_RET_ALLOW),
            ],
            allowed: Vec::new(),
            notify: Some(SeccompNotify {
                action: SeccompAction::Kill,
                fallback: libc::SECCOMP_RET_KILL_PROCESS,
            }),
        };
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().expect("pair");
        corral_sandbox::seccomp::apply(Some(&program), ours.as_raw_fd()).expect("fallback");
        let mut marker = [0u8; 4];
        (&theirs).read_exact(&mut marker).expect("marker");
        println!("marker {:#x}", u32::from_le_bytes(marker));
        // SAFETY: getppid has no arguments; the filter refuses it.
        unsafe { libc::getppid() };
        println!("survived");
        std::process::exit(0);
    }
    let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "a_filter_without_a_listener_falls_back_to_its_action",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(FALLBACK_CHILD, "1")
        .output()
        .expect("run the confined copy");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("marker {SECCOMP_LISTENER_NONE:#x}")),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!stdout.contains("survived"), "{stdout}");
    assert_eq!(out.status.signal(), Some(libc::SIGSYS), "{:?}", out.status);
}
