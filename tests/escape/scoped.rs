//! Landlock's scopes, each attacked where nothing else stands in the way:
//! an abstract Unix socket of the host reached by a plugin whose filter
//! allows local sockets (the host's network), and a signal to a process of
//! the plugin's own uid inside its own pid namespace that is not in its
//! Landlock domain. And a refused path names itself in the SDK's error.

use super::*;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener};
use std::os::unix::process::CommandExt;

const HOST_GRANT: &str = "[plugins.hostile-host]\ngrant = { net = \"host\" }\n";

#[test]
fn abstract_unix_sockets_of_the_host_are_out_of_reach() {
    run(async {
        let name = format!("corral-escape-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).expect("abstract name");
        let listener = UnixListener::bind_addr(&addr).expect("listen on an abstract socket");
        listener.set_nonblocking(true).expect("nonblocking");
        let mut h = Harness::with_policy(HOST_GRANT);
        let policy = h.compile("hostile-host").expect("hostile-host compiles");
        let landlock = policy.confinement.landlock.as_ref().expect("landlock");
        assert!(
            landlock.scope_abstract_unix,
            "the policy scopes abstract sockets"
        );
        let host = h.try_host_with(policy).await.expect("hostile-host starts");
        // Control: the filter lets a local stream socket through, and one
        // made inside the sandbox is reachable.
        attempt(
            &host,
            "own_abstract",
            json!({"name": format!("{name}-own")}),
        )
        .await
        .assert_succeeded();
        attempt(&host, "connect_abstract", json!({"name": name}))
            .await
            .assert_denied(libc::EPERM);
        assert!(
            listener.accept().is_err(),
            "a connection from the sandbox reached the host's abstract socket"
        );
        h.finish().await;
    });
}

/// The kuid a process runs as, from /proc.
fn uid_of(pid: i32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("Uid line")
}

/// Starts a process that sleeps inside the pid namespace of `plugin_pid`
/// as `uid`, outside the plugin's Landlock domain and cgroup; the kernel
/// kills it when the plugin (pid 1 there) ends.
fn sleeper_in_pid_namespace_of(plugin_pid: i32, uid: u32) {
    let ns = std::fs::File::open(format!("/proc/{plugin_pid}/ns/pid")).expect("pid namespace");
    let ns_fd = ns.as_raw_fd();
    let program = corral_tests::package_dir("hostile").join("bin/hostile");
    let mut cmd = std::process::Command::new(program);
    // `hostile-silent` sleeps forever.
    cmd.env_clear().env("CORRAL_PLUGIN", "hostile-silent");
    // SAFETY: only async-signal-safe calls between fork and exec: setns
    // makes the next child a member of the namespace, fork makes it, the
    // parent leaves at once, and the child drops to the plugin's uid.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(ns_fd, libc::CLONE_NEWPID) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            match libc::fork() {
                -1 => Err(std::io::Error::last_os_error()),
                0 => {
                    if libc::setgid(uid) != 0 || libc::setuid(uid) != 0 {
                        libc::_exit(1);
                    }
                    Ok(())
                }
                _ => libc::_exit(0),
            }
        });
    }
    let mut child = cmd.spawn().expect("spawn the sleeper");
    let status = child.wait().expect("the intermediate process");
    assert!(
        status.success(),
        "could not enter the pid namespace: {status}"
    );
    drop(ns);
}

/// Kills and reaps the sleeper, which its intermediate's exit left to this
/// process: nothing else waits for it, and a zombie would count as a leak.
fn reap_sleeper(plugin_pid: i32, uid: u32) {
    let me = std::process::id().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.split_whitespace().next().unwrap_or_default().to_string())
        };
        if pid != plugin_pid
            && field("PPid:").as_deref() == Some(me.as_str())
            && field("Uid:") == Some(uid.to_string())
        {
            // SAFETY: a pid this process is the parent of.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
        }
    }
}

/// Pids other than the plugin's own (1) in its /proc.
async fn others(host: &PluginHost) -> Vec<String> {
    let pids = attempt(host, "proc_pids", Value::Null).await;
    pids.assert_succeeded();
    pids.detail
        .split_whitespace()
        .filter(|p| *p != "1")
        .map(str::to_string)
        .collect()
}

#[test]
fn signals_to_processes_outside_the_landlock_domain_fail() {
    run(async {
        let mut h = Harness::new();
        let host = h.host("hostile").await;
        let plugin_pid = pid_of(&host);
        let uid = uid_of(plugin_pid);
        assert_ne!(uid, 0);
        sleeper_in_pid_namespace_of(plugin_pid, uid);
        // The sleeper is in reach by every other measure: the same pid
        // namespace, the same uid.
        let mut found = Vec::new();
        for _ in 0..50 {
            found = others(&host).await;
            if !found.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            found.len(),
            1,
            "expected the sleeper in the plugin's /proc: {found:?}"
        );
        let pid: i32 = found[0].parse().expect("pid");
        for signal in [libc::SIGKILL, libc::SIGTERM, 0] {
            attempt(&host, "kill", json!({"pid": pid, "signal": signal}))
                .await
                .assert_denied(libc::EPERM);
        }
        let status = attempt(
            &host,
            "read_file",
            json!({"path": format!("/proc/{pid}/status")}),
        )
        .await;
        status.assert_succeeded();
        assert!(
            !status.detail.contains("zombie"),
            "the sleeper died: {}",
            status.detail
        );
        reap_sleeper(plugin_pid, uid);
        h.finish().await;
    });
}

/// A read the sandbox refuses, passed on with `?` through the SDK's fs
/// functions: the caller's error names the path.
#[test]
fn a_refused_path_is_named_in_the_sdk_error() {
    run(async {
        // A path that exists where the plugin looks, so that Landlock (not
        // the minimal root, where it would be missing) refuses it.
        let dir = open_dir();
        let secret = world_readable_file(dir.path(), "secret.txt", "not for plugins\n");
        let mut h = Harness::with_policy("[sandbox]\nminimal_root = false\n");
        let host = h.host("hostile").await;
        let err = expect_error(&host, "sdk_read", json!({"path": secret})).await;
        assert_eq!(
            err.kind,
            ErrorKind::PluginError {
                plugin_code: "permission_denied".into()
            },
            "{err:?}"
        );
        assert!(
            err.message
                .contains(&format!("read {}: Permission denied", secret.display())),
            "{}",
            err.message
        );
        h.finish().await;
    });
}
