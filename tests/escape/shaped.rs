//! The filter's argument checks, attacked for real: each system call the
//! filter allows only with some arguments is made with the arguments it
//! must refuse, and fails inside the sandbox (killed by seccomp, or the
//! errno the check answers); a control with allowed arguments shows the
//! call itself works.

use super::*;
use std::os::unix::net::UnixDatagram;

/// Several deaths in a row must not quarantine the plugin.
const MANY_DEATHS: &str = "[restart]\ncrash_loop_failures = 50\n";

fn raw(name: &str, args: &[u64]) -> Value {
    json!({"name": name, "args": args})
}

/// `socket(AF_INET, SOCK_STREAM, IPPROTO_MPTCP)` with a TCP port granted:
/// Landlock's port rules cover TCP only, so the filter must refuse it; so
/// must raw, packet, netlink, vsock and crypto sockets, and a type with a
/// flag the kernel does not strip.
#[test]
fn a_tcp_grant_allows_tcp_sockets_only() {
    run(async {
        let mut h = Harness::with_policy(&format!("{NET_GRANT}{MANY_DEATHS}"));
        let mut events = h.events();
        let host = h.host("hostile-net").await;
        let inet = libc::AF_INET as u64;
        let stream = (libc::SOCK_STREAM | libc::SOCK_CLOEXEC) as u64;
        // Controls: TCP by protocol 0 and by IPPROTO_TCP.
        for protocol in [0, libc::IPPROTO_TCP as u64] {
            attempt(
                &host,
                "raw_syscall",
                raw("socket", &[inet, stream, protocol]),
            )
            .await
            .assert_succeeded();
        }
        let refused: [(i32, i32, i32); 7] = [
            (libc::AF_INET, libc::SOCK_STREAM, libc::IPPROTO_MPTCP),
            (libc::AF_INET6, libc::SOCK_STREAM, libc::IPPROTO_MPTCP),
            (libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_TCP),
            (libc::AF_INET, 10, 0), // SOCK_PACKET
            (libc::AF_PACKET, libc::SOCK_RAW, 0),
            (40, libc::SOCK_STREAM, 0), // AF_VSOCK
            (libc::AF_ALG, libc::SOCK_SEQPACKET, 0),
        ];
        for (family, ty, protocol) in refused {
            let input = raw("socket", &[family as u64, ty as u64, protocol as u64]);
            let err = assert_killed_by_seccomp(&host, &mut events, "raw_syscall", input).await;
            // The refused arguments are named.
            let ErrorKind::SeccompViolation {
                argument: Some(argument),
                ..
            } = &err.kind
            else {
                panic!("no argument named: {err:?}");
            };
            assert!(argument.starts_with("family="), "{argument}");
            if protocol == libc::IPPROTO_MPTCP {
                assert!(argument.contains("protocol=IPPROTO_MPTCP"), "{argument}");
            }
        }
        h.finish().await;
    });
}

/// A datagram socket pair could `sendto` any path-named host socket the
/// plugin can reach (here a world-writable one): the filter refuses the
/// pair, and nothing arrives. A stream pair still works.
#[test]
fn a_datagram_socketpair_cannot_reach_host_sockets() {
    run(async {
        let dir = open_dir();
        let path = dir.path().join("log.sock");
        let listener = UnixDatagram::bind(&path).expect("bind a host datagram socket");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777))
            .expect("chmod 0777");
        listener.set_nonblocking(true).expect("nonblocking");
        let mut h = Harness::new();
        let mut events = h.events();
        let host = h.host("hostile").await;
        attempt(&host, "socketpair", json!({"kind": "stream"}))
            .await
            .assert_succeeded();
        attempt(&host, "socketpair", json!({"kind": "seqpacket"}))
            .await
            .assert_succeeded();
        assert_killed_by_seccomp(
            &host,
            &mut events,
            "socketpair",
            json!({"kind": "dgram", "path": path}),
        )
        .await;
        let mut buf = [0u8; 256];
        assert!(
            listener.recv(&mut buf).is_err(),
            "a datagram from the sandbox reached {}",
            path.display()
        );
        h.finish().await;
    });
}

/// The channel is a socket made in the host's network namespace:
/// SIOCGIFCONF on it would list the host's interfaces. Only a short list
/// of requests passes; the rest get ENOTTY and the plugin lives on.
#[test]
fn ioctl_on_the_channel_cannot_read_the_host_network() {
    run(async {
        let mut h = Harness::new();
        let host = h.host("hostile").await;
        let before = pid_of(&host);
        attempt(&host, "fionread", Value::Null)
            .await
            .assert_succeeded();
        attempt(&host, "ifconf", Value::Null)
            .await
            .assert_denied(libc::ENOTTY);
        // SIOCGIFHWADDR (the MAC), SIOCGIFINDEX, TIOCSTI: all ENOTTY.
        for request in [0x8927u64, 0x8933, 0x5412] {
            attempt(&host, "raw_syscall", raw("ioctl", &[3, request, 0]))
                .await
                .assert_denied(libc::ENOTTY);
        }
        assert_eq!(pid_of(&host), before, "an ioctl killed the plugin");
        h.finish().await;
    });
}

/// prctl options that reach beyond the caller, a persona that makes every
/// readable mapping executable, executable anonymous memory, and memfds
/// that could become executable: each kills the plugin.
#[test]
fn prctl_personality_exec_memory_and_memfd_are_refused() {
    run(async {
        let mut h = Harness::with_policy(MANY_DEATHS);
        let mut events = h.events();
        let host = h.host("hostile").await;
        // Controls.
        attempt(
            &host,
            "raw_syscall",
            raw("prctl", &[libc::PR_GET_DUMPABLE as u64]),
        )
        .await
        .assert_succeeded();
        attempt(&host, "raw_syscall", raw("personality", &[0xFFFF_FFFF]))
            .await
            .assert_succeeded();
        let rw = (libc::PROT_READ | libc::PROT_WRITE) as u64;
        let anon = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;
        attempt(
            &host,
            "raw_syscall",
            raw("mmap", &[0, 4096, rw, anon, u64::MAX, 0]),
        )
        .await
        .assert_succeeded();
        let exec = (libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC) as u64;
        let attacks = [
            raw("prctl", &[libc::PR_SET_DUMPABLE as u64, 1]),
            raw("prctl", &[0x5961_6d61, u64::MAX]), // PR_SET_PTRACER, any
            raw("personality", &[0x0040_0000]),     // READ_IMPLIES_EXEC
            raw("mmap", &[0, 4096, exec, anon, u64::MAX, 0]),
            raw("mprotect", &[0, 4096, exec]),
            raw("memfd_create", &[0, libc::MFD_CLOEXEC as u64]),
            raw("memfd_create", &[0, 0x10]), // MFD_EXEC
        ];
        for input in attacks {
            assert_killed_by_seccomp(&host, &mut events, "raw_syscall", input).await;
        }
        h.finish().await;
    });
}

/// The one memfd the filter allows is sealed non-executable: a program
/// image copied into it cannot be run, and its mode cannot be changed.
#[test]
fn a_program_image_in_a_memfd_cannot_be_executed() {
    run(async {
        let mut h = Harness::new();
        let host = h.host("hostile").await;
        let before = pid_of(&host);
        let exec = attempt(&host, "memfd_exec", Value::Null).await;
        exec.assert_denied(libc::EACCES);
        assert!(
            exec.detail
                .contains("fchmod(0755): Operation not permitted"),
            "{}",
            exec.detail
        );
        assert_eq!(pid_of(&host), before);
        h.finish().await;
    });
}

/// System calls no policy can allow: listing them is a load error, and
/// the plugin that makes them is killed.
#[test]
fn never_allowed_system_calls_kill_and_cannot_be_granted() {
    run(async {
        for name in [
            "bpf",
            "keyctl",
            "userfaultfd",
            "perf_event_open",
            "io_uring_setup",
        ] {
            let h = Harness::with_policy(&format!("[seccomp]\nallow = [\"{name}\"]\n"));
            let err = h.compile("hostile").expect_err(name);
            assert!(err.to_string().contains("never allowed"), "{name}: {err}");
            h.finish().await;
        }
        let mut h = Harness::with_policy(MANY_DEATHS);
        let mut events = h.events();
        let host = h.host("hostile").await;
        for name in [
            "bpf",
            "keyctl",
            "userfaultfd",
            "perf_event_open",
            "io_uring_setup",
        ] {
            assert_killed_by_seccomp(&host, &mut events, "raw_syscall", raw(name, &[])).await;
        }
        h.finish().await;
    });
}

/// Under `seccomp_action = "errno"` a refused call fails with EPERM and
/// the plugin goes on; the refusal is still published, naming the call.
#[test]
fn errno_action_fails_the_call_and_the_plugin_goes_on() {
    run(async {
        let mut h = Harness::with_policy("[plugins.hostile]\nseccomp_action = \"errno\"\n");
        let mut events = h.events();
        let host = h.host("hostile").await;
        let before = pid_of(&host);
        attempt(&host, "ptrace", json!({"pid": std::process::id()}))
            .await
            .assert_denied(libc::EPERM);
        let mptcp = raw(
            "socket",
            &[
                libc::AF_INET as u64,
                libc::SOCK_STREAM as u64,
                libc::IPPROTO_MPTCP as u64,
            ],
        );
        attempt(&host, "raw_syscall", mptcp)
            .await
            .assert_denied(libc::EPERM);
        let name = host.name().to_string();
        for syscall in ["ptrace", "socket"] {
            let refused = wait_for_event(&mut events, EVENT_WAIT, |e| {
                matches!(e, Event::SeccompViolation { plugin, syscall: s, killed: false, .. }
                    if *plugin == name && s == syscall)
            })
            .await;
            assert!(refused.is_some(), "no SeccompViolation event for {syscall}");
        }
        assert_eq!(pid_of(&host), before, "the plugin was restarted");
        h.finish().await;
    });
}

/// A plugin looping on a refused call under the errno action: every call
/// fails, the plugin goes on, and the supervisor publishes (and logs) only
/// a bounded number of them, not one per call.
#[test]
fn a_plugin_looping_on_refused_calls_gets_bounded_reports() {
    run(async {
        let mut h = Harness::with_policy("[plugins.hostile]\nseccomp_action = \"errno\"\n");
        let mut events = h.events();
        let host = h.host("hostile").await;
        let before = pid_of(&host);
        let count = 900;
        let looped = attempt(
            &host,
            "refused_loop",
            json!({"name": "keyctl", "count": count}),
        )
        .await;
        looped.assert_denied(libc::EPERM);
        assert_eq!(looped.value(), count);
        let mut published = 0;
        while wait_for_event(
            &mut events,
            Duration::from_millis(300),
            |e| matches!(e, Event::SeccompViolation { syscall, .. } if syscall == "keyctl"),
        )
        .await
        .is_some()
        {
            published += 1;
        }
        assert!(published >= 1, "no refusal was published");
        assert!(
            published < count / 10,
            "{published} events for {count} refused calls: not limited"
        );
        assert_eq!(pid_of(&host), before);
        h.finish().await;
    });
}
