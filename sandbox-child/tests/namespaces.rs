//! The namespace checks and joins, run for real.

mod common;

use common::{PLUGIN_ID, PRINT_STATUS, Spawn, require_root, run, sh};
use corral_protocol::policy::NamespaceSource;
use std::os::fd::{AsRawFd, OwnedFd};

#[test]
fn outside_a_new_pid_namespace_the_start_is_refused() {
    require_root();
    let mut spawn = Spawn::bootstrap(sh("echo ran"));
    spawn.clone_flags = 0;
    let out = run(spawn);
    let failure = out.failure();
    assert_eq!(failure.step, "namespaces");
    assert!(
        failure
            .message
            .contains("expected to be pid 1 of a new pid namespace"),
        "{}",
        failure.message
    );
    assert!(out.stdout.is_empty(), "the plugin ran: {}", out.stdout);
}

#[test]
fn in_the_host_mount_namespace_nothing_is_mounted() {
    require_root();
    let mut spawn = Spawn::bootstrap(sh("echo ran"));
    spawn.clone_flags &= !libc::CLONE_NEWNS;
    let host_mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
    let out = run(spawn);
    let failure = out.failure();
    assert_eq!(failure.step, "namespaces");
    assert!(
        failure.message.contains("refusing to mount"),
        "{}",
        failure.message
    );
    let after = std::fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
    assert_eq!(
        host_mounts.lines().count(),
        after.lines().count(),
        "the host's mount table changed"
    );
}

#[test]
fn a_fresh_namespace_that_was_not_created_is_refused() {
    require_root();
    let mut spawn = Spawn::bootstrap(sh("echo ran"));
    spawn.clone_flags &= !libc::CLONE_NEWNET;
    let out = run(spawn);
    let failure = out.failure();
    assert_eq!(failure.step, "namespaces");
    assert!(
        failure.message.contains("fresh net namespace"),
        "{}",
        failure.message
    );
}

#[test]
fn a_fresh_uts_namespace_is_named_corral() {
    require_root();
    let out = run(Spawn::bootstrap(sh(
        "read -r name < /proc/sys/kernel/hostname; echo hostname=$name",
    )));
    out.assert_success();
    assert_eq!(out.value("hostname"), "corral");
}

#[test]
fn the_user_namespace_maps_only_the_plugin_ids() {
    require_root();
    let mut confinement = sh(&format!(
        r#"{PRINT_STATUS}
for f in uid_map gid_map setgroups; do
  while read -r line; do set -- $line; echo "$f=$*"; done < /proc/self/$f
done
"#
    ));
    confinement.namespaces.user = true;
    let out = run(Spawn::bootstrap(confinement));
    out.assert_success();
    let id = PLUGIN_ID;
    assert_eq!(out.value("uid_map"), format!("{id} {id} 1"));
    assert_eq!(out.value("gid_map"), format!("{id} {id} 1"));
    assert_eq!(out.value("setgroups"), "deny");
    assert_eq!(out.value("Uid"), format!("{id} {id} {id} {id}"));
    for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(out.value(set), "0000000000000000", "{set}");
    }
}

#[test]
fn the_user_namespace_is_not_the_host_one() {
    require_root();
    let host = std::fs::read_link("/proc/self/ns/user").expect("read own user namespace");
    let mut confinement = sh("echo user=$(readlink /proc/self/ns/user)");
    confinement.namespaces.user = true;
    let out = run(Spawn::bootstrap(confinement));
    out.assert_success();
    let inside = out.value("user");
    assert!(inside.starts_with("user:["), "{inside}");
    assert_ne!(std::path::Path::new(&inside), host.as_path());
}

/// A new, empty network namespace, held open by the returned fd only.
fn make_net_namespace() -> OwnedFd {
    std::thread::spawn(|| {
        // Only this short-lived thread moves; the test process stays put.
        // SAFETY: unshare(CLONE_NEWNET) affects the calling thread only.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(
            rc,
            0,
            "unshare(CLONE_NEWNET): {}",
            std::io::Error::last_os_error()
        );
        OwnedFd::from(std::fs::File::open("/proc/thread-self/ns/net").expect("open the netns"))
    })
    .join()
    .expect("netns thread")
}

#[test]
fn a_joined_net_namespace_is_entered_and_its_fd_closed() {
    require_root();
    let netns = make_net_namespace();
    let expected = {
        let path = format!("/proc/self/fd/{}", netns.as_raw_fd());
        std::fs::read_link(path).expect("read the netns link")
    };
    let mut confinement = sh("echo net=$(readlink /proc/self/ns/net); \
         for f in /proc/self/fd/*; do echo fd=${f#/proc/self/fd/}; done");
    confinement.namespaces.net = NamespaceSource::Join { fd: 10 };
    let mut spawn = Spawn::bootstrap(confinement);
    spawn.extra_fds.push((netns.as_raw_fd(), 10));
    assert_eq!(
        spawn.clone_flags & libc::CLONE_NEWNET,
        0,
        "a joined namespace is not created by clone"
    );
    let out = run(spawn);
    out.assert_success();
    assert_eq!(
        std::path::Path::new(&out.value("net")),
        expected.as_path(),
        "the plugin is in the namespace it was given"
    );
    assert!(
        !out.values("fd").contains(&"10".to_string()),
        "the namespace fd leaked into the plugin: {:?}",
        out.values("fd")
    );
}

#[test]
fn joining_the_supervisor_own_namespace_is_refused() {
    require_root();
    let own = std::fs::File::open("/proc/self/ns/net").expect("open own netns");
    let mut confinement = sh("echo ran");
    confinement.namespaces.net = NamespaceSource::Join { fd: 10 };
    let mut spawn = Spawn::bootstrap(confinement);
    spawn.extra_fds.push((own.as_raw_fd(), 10));
    let out = run(spawn);
    let failure = out.failure();
    assert_eq!(failure.step, "namespaces");
    assert!(
        failure.message.contains("supervisor"),
        "{}",
        failure.message
    );
}

#[test]
fn a_namespace_fd_of_the_wrong_kind_is_refused() {
    require_root();
    let netns = make_net_namespace();
    let mut confinement = sh("echo ran");
    // A net namespace offered as the UTS one.
    confinement.namespaces.uts = NamespaceSource::Join { fd: 10 };
    let mut spawn = Spawn::bootstrap(confinement);
    spawn.extra_fds.push((netns.as_raw_fd(), 10));
    let out = run(spawn);
    let failure = out.failure();
    assert_eq!(failure.step, "namespaces");
    assert_eq!(failure.errno, libc::EINVAL);
    assert!(failure.message.contains("uts"), "{}", failure.message);
}

#[test]
fn a_namespace_fd_that_is_not_open_fails_step_fds() {
    require_root();
    let mut confinement = sh("echo ran");
    confinement.namespaces.ipc = NamespaceSource::Join { fd: 77 };
    let out = run(Spawn::bootstrap(confinement));
    let failure = out.failure();
    assert_eq!(failure.step, "fds");
    assert!(failure.message.contains("77"), "{}", failure.message);
}
