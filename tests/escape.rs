//! The escape suite: a hostile plugin tries, for real, each thing a
//! confined plugin must not do. Every attempt must fail inside the
//! sandbox, with the exact errno the plugin saw or with the typed
//! `seccomp_violation` when the attempt got it killed, and wherever the
//! host can see the result (a file, another plugin, the supervisor
//! itself), the test looks there too. Every test ends with the leak check
//! of [`Harness::finish`].
//!
//! Where seccomp kills an attempt, a second run under a policy that allows
//! the system call shows the next layer (no capabilities, the user and pid
//! namespaces, Landlock) still stops it: defense in depth.

use corral_protocol::api::Event;
use corral_protocol::error::ErrorKind;
use corral_supervisor::host::PluginHost;
use corral_tests::{EVENT_WAIT, Harness, attempt, call, expect_error, pid_of, run, wait_for_event};
use serde_json::{Value, json};
use std::io::Read;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;

/// The port `hostile-net` asks to connect to (its plugin.toml).
const GRANTED_PORT: u16 = 47110;

/// Grants `hostile-net` its TCP port.
const NET_GRANT: &str = "[plugins.hostile-net]\ngrant = { net = \"connect\" }\n";

/// A directory under /var/tmp that any uid may enter, like the places a
/// plugin would look for other people's files. Removed on drop.
fn open_dir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("corral-escape-")
        .tempdir_in("/var/tmp")
        .expect("a directory in /var/tmp");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
        .expect("chmod 0777");
    dir
}

/// Writes a file readable by everyone: only the sandbox stands between a
/// plugin and its contents.
fn world_readable_file(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("write the file");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod 0644");
    path
}

/// Makes an attack that seccomp must answer by killing the plugin: the
/// call gets `seccomp_violation` naming the system call, the supervisor
/// publishes the refused call and the death with that code, and the next
/// call is served by a restarted child. The method names the system call
/// it attacks (`raw_syscall`: its input's `name`). Returns the call's error.
async fn assert_killed_by_seccomp(
    host: &PluginHost,
    events: &mut broadcast::Receiver<Arc<corral_protocol::api::EventRecord>>,
    method: &str,
    input: Value,
) -> corral_protocol::error::CorralError {
    let syscall = input
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or(method)
        .to_string();
    let syscall = syscall.as_str();
    let before = pid_of(host);
    let err = expect_error(host, method, input.clone()).await;
    let ErrorKind::SeccompViolation {
        syscall: Some(named),
        ..
    } = &err.kind
    else {
        panic!("{method}({input}): expected seccomp_violation naming `{syscall}`: {err:?}");
    };
    assert_eq!(named, syscall, "{method}({input}): {err:?}");
    assert!(
        err.message.contains(&format!("`{syscall}`")),
        "{}",
        err.message
    );
    let name = host.name().to_string();
    let refused = wait_for_event(events, EVENT_WAIT, |e| {
        matches!(e, Event::SeccompViolation { plugin, syscall: s, killed: true, .. } if *plugin == name && s == syscall)
    })
    .await;
    assert!(
        refused.is_some(),
        "{method}: no SeccompViolation event naming {syscall}"
    );
    let crashed = wait_for_event(events, EVENT_WAIT, |e| {
        matches!(e, Event::Crashed { plugin, code, .. } if *plugin == name && code == "seccomp_violation")
    })
    .await;
    assert!(
        crashed.is_some(),
        "{method}: no Crashed event with seccomp_violation"
    );
    let who = attempt(host, "whoami", Value::Null).await;
    who.assert_succeeded();
    assert_ne!(
        pid_of(host),
        before,
        "{method}: the next call should be served by a restarted child"
    );
    err
}

#[test]
fn reading_etc_shadow_is_denied() {
    run(async {
        let mut h = Harness::new();
        let host = h.host("hostile").await;
        // The file is there and readable, to root: only the sandbox says no.
        std::fs::File::open("/etc/shadow").expect("root reads /etc/shadow on the host");
        attempt(&host, "read_file", json!({"path": "/etc/shadow"}))
            .await
            .assert_denied(libc::EACCES);
        h.finish().await;
    });
}

#[test]
fn reading_outside_granted_paths_is_denied() {
    run(async {
        let dir = open_dir();
        let secret = world_readable_file(dir.path(), "secret.txt", "not for plugins\n");
        let mut h = Harness::new();
        let host = h.host("hostile").await;
        let denied = attempt(&host, "read_file", json!({"path": secret})).await;
        denied.assert_denied(libc::EACCES);
        assert!(
            !denied.detail.contains("not for plugins"),
            "{}",
            denied.detail
        );
        let listed = attempt(&host, "list_dir", json!({"path": dir.path()})).await;
        listed.assert_denied(libc::EACCES);
        // Control: its own package is readable, so reads work at all.
        let manifest = corral_tests::package_dir("hostile").join("plugin.toml");
        let own = attempt(&host, "read_file", json!({"path": manifest})).await;
        own.assert_succeeded();
        assert!(own.value() > 0);
        h.finish().await;
    });
}

#[test]
fn writing_outside_scratch_is_denied_and_scratch_is_private() {
    run(async {
        let dir = open_dir();
        let target = dir.path().join("planted.txt");
        let mut h = Harness::new();
        let host = h.host("hostile").await;
        attempt(&host, "write_file", json!({"path": target}))
            .await
            .assert_denied(libc::EACCES);
        assert!(
            !target.exists(),
            "the plugin created {} on the host",
            target.display()
        );
        // The world-writable directory is empty: nothing else got in either.
        assert_eq!(
            std::fs::read_dir(dir.path()).expect("list").count(),
            0,
            "the plugin left something in {}",
            dir.path().display()
        );

        // Its scratch space works, and is its own: not the host's /tmp.
        let name = format!("corral-escape-scratch-{}", std::process::id());
        let inside = format!("/tmp/{name}");
        let wrote = attempt(&host, "write_file", json!({"path": inside})).await;
        wrote.assert_succeeded();
        let read = attempt(&host, "read_file", json!({"path": inside})).await;
        read.assert_succeeded();
        assert_eq!(read.value(), wrote.value());
        assert!(
            !Path::new("/tmp").join(&name).exists(),
            "the scratch write reached the host's /tmp"
        );
        h.finish().await;
    });
}

#[test]
fn sockets_without_network_permission_kill_the_plugin() {
    run(async {
        let mut h = Harness::new();
        let mut events = h.events();
        let host = h.host("hostile").await;
        for domain in ["inet", "inet6", "netlink"] {
            assert_killed_by_seccomp(&host, &mut events, "socket", json!({"domain": domain})).await;
        }
        h.finish().await;
    });
}

/// Accepts one pending connection without blocking, if there is one.
fn accepted(listener: &TcpListener) -> bool {
    listener.set_nonblocking(true).expect("nonblocking");
    listener.accept().is_ok()
}

/// Binds `port` on loopback, retrying while another test holds it.
fn bind_loopback(port: u16) -> TcpListener {
    let mut last = None;
    for _ in 0..100 {
        match TcpListener::bind(("127.0.0.1", port)) {
            Ok(l) => return l,
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("cannot listen on 127.0.0.1:{port}, which hostile-net's manifest grants: {last:?}");
}

/// Defense in depth for the network: with `connect` to one port granted,
/// socket() works, but Landlock refuses every other port, and seccomp
/// still kills a non-TCP socket.
#[test]
fn granted_network_reaches_only_the_granted_port() {
    run(async {
        let mut h = Harness::with_policy(NET_GRANT);
        let policy = h.compile("hostile-net").expect("hostile-net compiles");
        let ports = policy
            .confinement
            .landlock
            .as_ref()
            .and_then(|l| l.tcp_connect.clone())
            .expect("Landlock TCP rules");
        assert_eq!(ports, [GRANTED_PORT], "hostile-net's manifest changed");
        let granted = bind_loopback(GRANTED_PORT);
        let other = TcpListener::bind(("127.0.0.1", 0)).expect("listen on a free port");
        let other_port = other.local_addr().expect("addr").port();
        let mut events = h.events();
        let host = h.try_host_with(policy).await.expect("hostile-net starts");

        attempt(&host, "socket", json!({"domain": "inet"}))
            .await
            .assert_succeeded();
        attempt(&host, "connect_tcp", json!({"port": other_port}))
            .await
            .assert_denied(libc::EACCES);
        assert!(
            !accepted(&other),
            "a connection reached port {other_port}, which was not granted"
        );
        // Control: the granted port is reachable, so it is Landlock that said no.
        attempt(&host, "connect_tcp", json!({"port": GRANTED_PORT}))
            .await
            .assert_succeeded();
        assert!(accepted(&granted), "the granted connection did not arrive");
        assert_killed_by_seccomp(&host, &mut events, "socket", json!({"domain": "unix"})).await;
        drop((granted, other));
        h.finish().await;
    });
}

#[test]
fn ptrace_of_the_supervisor_is_killed_by_seccomp() {
    run(async {
        let mut h = Harness::new();
        let mut events = h.events();
        let host = h.host("hostile").await;
        let supervisor = std::process::id();
        assert_killed_by_seccomp(&host, &mut events, "ptrace", json!({"pid": supervisor})).await;
        // The supervisor is not being traced.
        let status = std::fs::read_to_string("/proc/self/status").expect("status");
        assert!(
            status.lines().any(|l| l == "TracerPid:\t0"),
            "the test process has a tracer:\n{status}"
        );
        h.finish().await;
    });
}

#[test]
fn signals_cannot_reach_the_supervisor() {
    run(async {
        let mut h = Harness::new();
        let host = h.host("hostile").await;
        let before = pid_of(&host);
        let supervisor = std::process::id();
        for signal in [libc::SIGKILL, libc::SIGTERM, libc::SIGSTOP] {
            attempt(&host, "kill", json!({"pid": supervisor, "signal": signal}))
                .await
                .assert_denied(libc::ESRCH);
        }
        // Its parent (the supervisor, outside its pid namespace) is pid 0 to it.
        let who = attempt(&host, "whoami", Value::Null).await;
        assert!(who.detail.contains(" pid=1 ppid=0 "), "{}", who.detail);
        assert_eq!(
            pid_of(&host),
            before,
            "the plugin itself should be unharmed"
        );
        h.finish().await;
    });
}

/// Two plugins: A attacks B by pid (B's pid as the host sees it) and with
/// kill(-1); B goes on answering from the same process, and nothing died.
#[test]
fn a_plugin_cannot_signal_another_plugin_or_everyone() {
    run(async {
        let mut h = Harness::new();
        let mut events = h.events();
        let a = h.host("hostile").await;
        let b = h.host("hello").await;
        let b_pid = pid_of(&b);
        let a_pid = pid_of(&a);
        for signal in [libc::SIGKILL, libc::SIGSTOP] {
            attempt(&a, "kill", json!({"pid": b_pid, "signal": signal}))
                .await
                .assert_denied(libc::ESRCH);
        }
        // kill(-1) reaches every process the caller may signal: in its own pid
        // namespace that is nobody but itself, which kill(-1) skips.
        attempt(&a, "kill_all", Value::Null)
            .await
            .assert_denied(libc::ESRCH);
        let greeting = call(&b, "greet", json!({"name": "B"}))
            .await
            .expect("B answers after A's attacks");
        assert_eq!(greeting, json!({"greeting": "Hello, B!"}));
        assert_eq!(pid_of(&b), b_pid, "B was restarted: it died");
        assert_eq!(pid_of(&a), a_pid, "A was restarted: it died");
        let died = wait_for_event(&mut events, Duration::from_millis(200), |e| {
            matches!(e, Event::Crashed { .. })
        })
        .await;
        assert_eq!(died, None, "a plugin died");
        h.finish().await;
    });
}

#[test]
fn proc_lists_only_the_sandbox() {
    run(async {
        let mut h = Harness::new();
        let host = h.host("hostile").await;
        let pids = attempt(&host, "proc_pids", Value::Null).await;
        pids.assert_succeeded();
        assert_eq!(
            (pids.detail.as_str(), pids.value()),
            ("1", 1),
            "/proc inside shows more than the plugin itself"
        );
        let supervisor = format!("/proc/{}/status", std::process::id());
        attempt(&host, "read_file", json!({"path": supervisor}))
            .await
            .assert_denied(libc::ENOENT);
        let host_pid = pid_of(&host);
        attempt(
            &host,
            "read_file",
            json!({"path": format!("/proc/{host_pid}/environ")}),
        )
        .await
        .assert_denied(libc::ENOENT);
        h.finish().await;
    });
}

/// The host's mount table, to prove an attack changed nothing in it.
fn host_mounts() -> String {
    std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo")
}

#[test]
fn privileged_system_calls_kill_the_plugin() {
    run(async {
        // Five deaths in a row must not quarantine it.
        let mut h = Harness::with_policy("[restart]\ncrash_loop_failures = 50\n");
        let mut events = h.events();
        let host = h.host("hostile").await;
        let mounts = host_mounts();
        let attacks = [
            ("mount", json!({"target": "/tmp"})),
            ("unshare", Value::Null),
            ("setuid", json!({"uid": 0})),
            ("chroot", json!({"path": "/tmp"})),
            ("init_module", Value::Null),
        ];
        for (method, input) in attacks {
            assert_killed_by_seccomp(&host, &mut events, method, input).await;
        }
        assert_eq!(host_mounts(), mounts, "the host's mount table changed");
        h.finish().await;
    });
}

/// Defense in depth: with seccomp letting them through, the kernel still
/// refuses each privileged call, for lack of capabilities (mount, chroot),
/// because uid 0 does not exist in the plugin's user namespace (setuid),
/// or because the target is outside its pid namespace (ptrace).
#[test]
fn privileged_system_calls_fail_without_seccomp_too() {
    run(async {
        let mut h = Harness::with_policy(
            "[seccomp]\nallow = [\"mount\", \"umount2\", \"chroot\", \"setuid\", \"ptrace\", \"init_module\"]\n",
        );
        let host = h.host("hostile").await;
        let before = pid_of(&host);
        let mounts = host_mounts();
        attempt(&host, "mount", json!({"target": "/tmp"}))
            .await
            .assert_denied(libc::EPERM);
        attempt(&host, "chroot", json!({"path": "/tmp"}))
            .await
            .assert_denied(libc::EPERM);
        let setuid = attempt(&host, "setuid", json!({"uid": 0})).await;
        setuid.assert_denied(libc::EINVAL);
        assert!(setuid.detail.contains("uid is now "), "{}", setuid.detail);
        assert!(!setuid.detail.contains("uid is now 0"), "{}", setuid.detail);
        attempt(&host, "ptrace", json!({"pid": std::process::id()}))
            .await
            .assert_denied(libc::ESRCH);
        // Without CAP_SYS_MODULE: EPERM; on a kernel built without module
        // support the call does not exist at all (ENOSYS). Either way no module.
        let module = attempt(&host, "init_module", Value::Null).await;
        assert!(
            !module.ok && matches!(module.errno, Some(libc::EPERM) | Some(libc::ENOSYS)),
            "init_module: {module:?}"
        );
        assert_eq!(host_mounts(), mounts, "the host's mount table changed");
        assert_eq!(pid_of(&host), before, "nothing here should kill the plugin");
        h.finish().await;
    });
}

/// Defense in depth for new namespaces: if seccomp let `unshare` through,
/// the plugin must still not get a user namespace (with a full capability
/// set in it, over kernel code written for root).
#[test]
fn unshare_fails_without_seccomp_too() {
    run(async {
        let mut h = Harness::with_policy("[seccomp]\nallow = [\"unshare\"]\n");
        let host = h.host("hostile").await;
        for flags in [json!(["user"]), json!(["mount"]), json!(["net"])] {
            let tried = attempt(&host, "unshare", json!({"flags": flags})).await;
            assert!(
                !tried.ok && matches!(tried.errno, Some(libc::EPERM) | Some(libc::ENOSPC)),
                "ESCAPE (defense in depth): with seccomp allowing it, `{}` {}: only the seccomp filter stops a plugin from creating namespaces",
                tried.attempted,
                if tried.ok {
                    "succeeded".to_string()
                } else {
                    format!("failed with {:?}", tried.errno)
                }
            );
        }
        h.finish().await;
    });
}

/// An fd the supervisor process holds without close-on-exec is not
/// inherited by the plugin.
#[test]
fn fds_leaked_by_the_supervisor_are_not_inherited() {
    run(async {
        const LEAKED_FD: i32 = 200;
        let dir = open_dir();
        let secret = world_readable_file(dir.path(), "leaked.txt", "held open by the supervisor\n");
        let mut h = Harness::new();
        // Opened without O_CLOEXEC, and moved to a number nothing else uses;
        // dup2 leaves the copy without close-on-exec too.
        let file = std::fs::File::open(&secret).expect("open");
        // SAFETY: dup2 onto a number this process does not use.
        let fd = unsafe { libc::dup2(file.as_raw_fd(), LEAKED_FD) };
        assert_eq!(fd, LEAKED_FD, "dup2: {}", std::io::Error::last_os_error());
        // SAFETY: LEAKED_FD was just created by dup2 and is owned by nobody.
        let leaked = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: F_GETFD reads the flags of an open fd.
        let flags = unsafe { libc::fcntl(leaked.as_raw_fd(), libc::F_GETFD) };
        assert_eq!(
            flags & libc::FD_CLOEXEC,
            0,
            "the leaked fd must be inheritable"
        );

        let host = h.host("hostile").await;
        let fds = attempt(&host, "fds", Value::Null).await;
        fds.assert_succeeded();
        let entries: Vec<&str> = fds.detail.split(' ').collect();
        // stdin (/dev/null), the stdout and stderr pipes, the channel.
        assert_eq!(fds.value(), 4, "{}", fds.detail);
        assert!(
            entries.len() == 4
                && entries[0] == "0=/dev/null"
                && entries[1].starts_with("1=pipe:")
                && entries[2].starts_with("2=pipe:")
                && entries[3].starts_with("3=socket:"),
            "{}",
            fds.detail
        );
        assert!(!fds.detail.contains("leaked.txt"), "{}", fds.detail);
        attempt(
            &host,
            "read_file",
            json!({"path": format!("/proc/self/fd/{LEAKED_FD}")}),
        )
        .await
        .assert_denied(libc::ENOENT);
        // The supervisor's copy is untouched.
        let mut contents = String::new();
        std::fs::File::from(leaked.try_clone().expect("dup"))
            .read_to_string(&mut contents)
            .expect("read the leaked fd");
        assert_eq!(contents, "held open by the supervisor\n");
        drop((leaked, file));
        h.finish().await;
    });
}

#[test]
fn raising_a_hard_rlimit_fails() {
    run(async {
        let mut h = Harness::new();
        let host = h.host("hostile").await;
        for resource in ["nofile", "fsize", "core", "memlock"] {
            let raised = attempt(&host, "raise_rlimit", json!({"resource": resource})).await;
            raised.assert_denied(libc::EPERM);
        }
        h.finish().await;
    });
}

/// The argument checks of the filter.
#[path = "escape/shaped.rs"]
mod shaped;

/// Landlock's scopes, and refused paths named in the SDK's errors.
#[path = "escape/scoped.rs"]
mod scoped;
