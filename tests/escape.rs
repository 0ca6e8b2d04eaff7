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
    assert_killed_for(host, events, method, input, &syscall).await
}

/// [`assert_killed_by_seccomp`] for a method whose refused system call is
/// `syscall`.
async fn assert_killed_for(
    host: &PluginHost,
    events: &mut broadcast::Receiver<Arc<corral_protocol::api::EventRecord>>,
    method: &str,
    input: Value,
    syscall: &str,
) -> corral_protocol::error::CorralError {
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
        // The plugin's minimal root holds no /etc/shadow to name at all,
        // whether the host has one or not.
        attempt(&host, "read_file", json!({"path": "/etc/shadow"}))
            .await
            .assert_denied(libc::ENOENT);
        // A root-only file of the test's own, there and readable to root
        // on the host: only the sandbox says no.
        let dir = open_dir();
        let shadow = dir.path().join("shadow");
        std::fs::write(&shadow, "root:secret\n").expect("write");
        std::fs::set_permissions(&shadow, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        std::fs::File::open(&shadow).expect("root reads it on the host");
        attempt(&host, "read_file", json!({"path": shadow}))
            .await
            .assert_denied(libc::ENOENT);
        h.finish().await;
    });
}

#[test]
fn reading_outside_granted_paths_is_denied() {
    // In the minimal root the path does not exist; with the host's tree
    // shown (`minimal_root = false`) Landlock alone still refuses it.
    for (policy, errno) in [("", libc::ENOENT), (HOST_TREE, libc::EACCES)] {
        reading_outside_granted_paths_is_denied_with(policy, errno);
    }
}

/// A policy showing plugins the host's tree, for the Landlock layer alone.
const HOST_TREE: &str = "[sandbox]\nminimal_root = false\n";

fn reading_outside_granted_paths_is_denied_with(policy: &str, errno: i32) {
    run(async {
        let dir = open_dir();
        let secret = world_readable_file(dir.path(), "secret.txt", "not for plugins\n");
        let mut h = Harness::with_policy(policy);
        let host = h.host("hostile").await;
        let denied = attempt(&host, "read_file", json!({"path": secret})).await;
        denied.assert_denied(errno);
        assert!(
            !denied.detail.contains("not for plugins"),
            "{}",
            denied.detail
        );
        let listed = attempt(&host, "list_dir", json!({"path": dir.path()})).await;
        listed.assert_denied(errno);
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
            .assert_denied(libc::ENOENT);
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

/// The package directory of `hostile` as the plugin sees it.
fn hostile_package() -> PathBuf {
    corral_tests::package_dir("hostile")
        .canonicalize()
        .expect("the hostile package")
}

fn mtime(path: &Path) -> std::time::SystemTime {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .expect("mtime")
}

#[test]
fn host_paths_outside_the_root_cannot_be_named() {
    run(async {
        let dir = open_dir();
        let secret = world_readable_file(dir.path(), "secret.txt", "not for plugins\n");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink("/etc/hostname", &link).expect("symlink");
        let before = mtime(&secret);
        let mut h = Harness::new();
        let host = h.host("hostile").await;
        // Landlock asks about none of these; the minimal root has no such
        // path to name.
        for (op, path) in [
            ("stat", &secret),
            ("readlink", &link),
            ("utime", &secret),
            ("getxattr", &secret),
            ("inotify", &secret),
            ("stat", &dir.path().to_path_buf()),
            ("inotify", &dir.path().to_path_buf()),
        ] {
            attempt(&host, "host_metadata", json!({"op": op, "path": path}))
                .await
                .assert_denied(libc::ENOENT);
        }
        assert_eq!(mtime(&secret), before, "utimensat reached the host file");
        // Control: the same calls work on the plugin's own scratch.
        attempt(&host, "write_file", json!({"path": "/tmp/mine"}))
            .await
            .assert_succeeded();
        for op in ["stat", "utime", "inotify"] {
            attempt(
                &host,
                "host_metadata",
                json!({"op": op, "path": "/tmp/mine"}),
            )
            .await
            .assert_succeeded();
        }
        h.finish().await;
    });
}

#[test]
fn host_files_in_the_root_keep_their_metadata() {
    run(async {
        let manifest = hostile_package().join("plugin.toml");
        let before = mtime(&manifest);
        let mut h = Harness::new();
        let host = h.host("hostile").await;
        // Readable, so nameable: but every bind is read-only, and /dev
        // holds nodes of the sandbox's own. (setxattr is not in the
        // system call filter at all.)
        for path in [manifest.display().to_string(), "/dev/null".to_string()] {
            attempt(&host, "host_metadata", json!({"op": "utime", "path": path}))
                .await
                .assert_denied(libc::EROFS);
        }
        attempt(&host, "read_file", json!({"path": manifest}))
            .await
            .assert_succeeded();
        assert_eq!(mtime(&manifest), before, "utimensat reached the package");
        // Nothing but the granted paths: no /etc, /usr or /home to look at.
        for path in ["/etc", "/usr", "/home", "/var", "/sys", "/run"] {
            attempt(&host, "host_metadata", json!({"op": "stat", "path": path}))
                .await
                .assert_denied(libc::ENOENT);
        }
        h.finish().await;
    });
}

#[test]
fn datagrams_cannot_reach_host_sockets() {
    run(async {
        let dir = open_dir();
        let path = dir.path().join("log.sock");
        let receiver = std::os::unix::net::UnixDatagram::bind(&path).expect("bind a host socket");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        receiver.set_nonblocking(true).expect("nonblocking");
        let mut h = Harness::new();
        let mut events = h.events();
        let host = h.host("hostile").await;
        // The filter refuses a datagram socketpair outright; the minimal
        // root (which has no such path) stands behind it.
        assert_killed_for(
            &host,
            &mut events,
            "datagram_to_path",
            json!({"path": path}),
            "socketpair",
        )
        .await;
        let mut buf = [0u8; 256];
        let got = receiver.recv(&mut buf);
        assert!(
            matches!(&got, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "a datagram reached the host socket: {got:?}"
        );
        h.finish().await;
    });
}

#[test]
fn the_mount_table_and_cgroup_are_the_sandbox_own() {
    run(async {
        let mut h = Harness::new();
        let host = h.host("hostile").await;
        let mountinfo = attempt(&host, "read_text", json!({"path": "/proc/self/mountinfo"})).await;
        mountinfo.assert_succeeded();
        let package = hostile_package().display().to_string();
        let allowed = ["/", "/proc", "/tmp", package.as_str()];
        for line in mountinfo.detail.lines() {
            let point = line.split(' ').nth(4).unwrap_or_default();
            assert!(
                allowed.contains(&point),
                "the plugin sees mount point {point:?}: {line}"
            );
        }
        assert!(
            mountinfo.detail.lines().count() >= 3,
            "{}",
            mountinfo.detail
        );
        let cgroup = attempt(&host, "read_text", json!({"path": "/proc/self/cgroup"})).await;
        cgroup.assert_succeeded();
        for line in cgroup.detail.lines() {
            assert!(line.ends_with(":/"), "a host cgroup path shows: {line}");
        }
        h.finish().await;
    });
}

#[test]
fn code_from_memory_or_scratch_cannot_run() {
    run(async {
        let mut h = Harness::new();
        let mut events = h.events();
        let host = h.host("hostile").await;
        // A memfd that could ever be executable is refused by the filter.
        for input in [
            json!({"via": "memfd_execve"}),
            json!({"via": "memfd_execve", "mfd_exec": true}),
        ] {
            assert_killed_for(&host, &mut events, "exec_image", input, "memfd_create").await;
        }
        // execve is allowed (the trampoline needs it), so the plugin may
        // replace its own image: only with what it may execute. (execveat
        // needs `exec = true`; see the next test.)
        for input in [
            json!({"via": "memfd_execve", "noexec_seal": true}),
            json!({"via": "file", "path": "/tmp/image"}),
        ] {
            attempt(&host, "exec_image", input)
                .await
                .assert_denied(libc::EACCES);
        }
        // Still the same process, still serving.
        attempt(&host, "whoami", Value::Null)
            .await
            .assert_succeeded();
        h.finish().await;
    });
}

#[test]
fn with_exec_granted_only_package_files_run() {
    run(async {
        let mut h = Harness::with_policy("[plugins.hostile-exec]\ngrant = { exec = true }\n");
        let mut events = h.events();
        let host = h.host("hostile-exec").await;
        for input in [
            json!({"via": "memfd_execve", "fork": true}),
            json!({"via": "memfd_execveat", "mfd_exec": true, "fork": true}),
        ] {
            assert_killed_for(&host, &mut events, "exec_image", input, "memfd_create").await;
        }
        for input in [
            json!({"via": "memfd_execve", "noexec_seal": true, "fork": true}),
            json!({"via": "memfd_execveat", "noexec_seal": true, "fork": true}),
            json!({"via": "file", "path": "/tmp/image", "fork": true}),
        ] {
            attempt(&host, "exec_image", input)
                .await
                .assert_denied(libc::EACCES);
        }
        attempt(&host, "whoami", Value::Null)
            .await
            .assert_succeeded();
        h.finish().await;
    });
}
/// Landlock's scopes, and refused paths named in the SDK's errors.
#[path = "escape/scoped.rs"]
mod scoped;
