//! Every way the trampoline refuses to start a plugin: the step's name on
//! the channel, exit status 126, and the plugin never ran.

mod common;

use common::{Spawn, require_root, run, sh};
use corral_protocol::policy::{FsAccess, FsRule, Remap};

#[test]
fn a_landlock_rule_on_a_missing_path_fails_step_landlock() {
    require_root();
    let mut confinement = sh("echo ran");
    let landlock = confinement.landlock.as_mut().expect("sh() sets Landlock");
    landlock.fs.push(FsRule {
        path: "/nonexistent/corral-rule".into(),
        access: FsAccess::Read,
    });
    let out = run(Spawn::bootstrap(confinement));
    let failure = out.failure();
    assert_eq!(failure.step, "landlock");
    assert_eq!(failure.errno, libc::ENOENT);
    assert!(
        failure.message.contains("/nonexistent/corral-rule"),
        "the message must name the path: {}",
        failure.message
    );
    assert!(out.stdout.is_empty(), "the plugin ran: {}", out.stdout);
}

#[test]
fn uid_zero_fails_step_credentials() {
    require_root();
    let mut confinement = sh("echo ran");
    confinement.credentials.uid = 0;
    let out = run(Spawn::bootstrap(confinement));
    let failure = out.failure();
    assert_eq!(failure.step, "credentials");
    assert!(failure.message.contains("uid 0"), "{}", failure.message);
    assert!(out.stdout.is_empty(), "the plugin ran: {}", out.stdout);
}

#[test]
fn gid_zero_fails_step_credentials() {
    require_root();
    let mut confinement = sh("echo ran");
    confinement.credentials.gid = 0;
    let out = run(Spawn::bootstrap(confinement));
    let failure = out.failure();
    assert_eq!(failure.step, "credentials");
    assert!(failure.message.contains("gid 0"), "{}", failure.message);
}

#[test]
fn a_garbled_bootstrap_exits_126_with_a_message_on_stderr() {
    require_root();
    let mut spawn = Spawn::bootstrap(sh("echo ran"));
    // A frame whose payload does not decode as a Bootstrap.
    spawn.input = vec![4, 0, 0, 0, 0xff, 0xff, 0xff, 0xff];
    let out = run(spawn);
    assert_eq!(out.exit_code(), Some(126), "status {:#x}", out.status);
    assert!(
        out.stderr.contains("bad bootstrap frame"),
        "stderr: {}",
        out.stderr
    );
    assert!(out.frames.is_empty(), "{:?}", out.frames);
    assert!(out.stdout.is_empty(), "the plugin ran: {}", out.stdout);
}

#[test]
fn an_oversized_bootstrap_frame_is_refused_before_it_is_read() {
    require_root();
    let mut spawn = Spawn::bootstrap(sh("echo ran"));
    spawn.input = (64u32 << 20).to_le_bytes().to_vec();
    spawn.hang_up = true;
    let out = run(spawn);
    assert_eq!(out.exit_code(), Some(126), "status {:#x}", out.status);
    assert!(out.stderr.contains("exceeds"), "stderr: {}", out.stderr);
}

#[test]
fn a_channel_closed_before_the_bootstrap_exits_126() {
    require_root();
    let mut spawn = Spawn::bootstrap(sh("echo ran"));
    spawn.input.clear();
    spawn.hang_up = true;
    let out = run(spawn);
    assert_eq!(out.exit_code(), Some(126), "status {:#x}", out.status);
    assert!(
        out.stderr.contains("closed before the bootstrap frame"),
        "stderr: {}",
        out.stderr
    );
    assert!(out.stdout.is_empty(), "the plugin ran: {}", out.stdout);
}

#[test]
fn a_supervisor_gone_before_exec_stops_the_start_at_pdeathsig() {
    require_root();
    // The frame arrives, then the supervisor's end is shut: the parent is
    // gone as far as the trampoline can tell, and the plugin must not start
    // without anyone to kill it.
    let mut spawn = Spawn::bootstrap(sh("echo ran"));
    spawn.hang_up = true;
    let out = run(spawn);
    let failure = out.failure();
    assert_eq!(failure.step, "pdeathsig");
    assert!(out.stdout.is_empty(), "the plugin ran: {}", out.stdout);
}

#[test]
fn without_die_with_parent_a_hang_up_does_not_stop_the_start() {
    require_root();
    let mut confinement = sh("echo ran");
    confinement.die_with_parent = false;
    let mut spawn = Spawn::bootstrap(confinement);
    spawn.hang_up = true;
    let out = run(spawn);
    out.assert_success();
    assert_eq!(out.stdout, "ran\n");
}

#[test]
fn mounts_without_a_private_mount_namespace_are_refused() {
    require_root();
    let mut confinement = sh("echo ran");
    confinement.namespaces.mount = false;
    let out = run(Spawn::bootstrap(confinement));
    let failure = out.failure();
    assert_eq!(failure.step, "mounts");
    assert!(
        failure.message.contains("no private mount namespace"),
        "{}",
        failure.message
    );
}

#[test]
fn a_missing_scratch_mount_point_fails_step_mounts() {
    require_root();
    let mut confinement = sh("echo ran");
    if let Some(scratch) = confinement.mounts.scratch.as_mut() {
        scratch.path = "/nonexistent/corral-scratch".into();
    }
    let out = run(Spawn::bootstrap(confinement));
    let failure = out.failure();
    assert_eq!(failure.step, "mounts");
    assert_eq!(failure.errno, libc::ENOENT);
    assert!(
        failure.message.contains("/nonexistent/corral-scratch"),
        "{}",
        failure.message
    );
}

#[test]
fn a_missing_working_directory_fails_step_exec() {
    require_root();
    let mut confinement = sh("echo ran");
    confinement.workdir = "/nonexistent/corral-workdir".into();
    let out = run(Spawn::bootstrap(confinement));
    let failure = out.failure();
    assert_eq!(failure.step, "exec");
    assert_eq!(failure.errno, libc::ENOENT);
    assert!(failure.message.contains("chdir"), "{}", failure.message);
}

#[test]
fn a_remap_onto_a_missing_host_path_fails_step_mounts_and_creates_nothing() {
    require_root();
    let target = format!("/var/tmp/corral-remap-missing-{}", std::process::id());
    let mut confinement = sh("echo ran");
    confinement.mounts.remaps = vec![Remap {
        source: "/usr/share".into(),
        target: target.clone(),
        writable: false,
    }];
    let out = run(Spawn::bootstrap(confinement));
    let failure = out.failure();
    assert_eq!(failure.step, "mounts");
    assert_eq!(failure.errno, libc::ENOENT);
    assert!(failure.message.contains(&target), "{}", failure.message);
    assert!(
        !std::path::Path::new(&target).exists(),
        "a mount point was made on the host"
    );
    assert!(out.stdout.is_empty(), "the plugin ran: {}", out.stdout);
}

#[test]
fn a_remap_of_a_file_onto_a_directory_fails_step_mounts() {
    require_root();
    // A file of the test's own, whatever the host holds.
    let file = std::path::PathBuf::from(format!(
        "/var/tmp/corral-sandbox-remap-file-{}",
        std::process::id()
    ));
    std::fs::write(&file, "a file\n").expect("write the source file");
    let mut confinement = sh("echo ran");
    confinement.mounts.remaps = vec![Remap {
        source: file.display().to_string(),
        target: "/usr/share".into(),
        writable: false,
    }];
    let out = run(Spawn::bootstrap(confinement));
    std::fs::remove_file(&file).expect("clean up");
    let failure = out.failure();
    assert_eq!(failure.step, "mounts");
    assert!(
        failure
            .message
            .contains("cannot mount a file on /usr/share"),
        "{}",
        failure.message
    );
    assert!(out.stdout.is_empty(), "the plugin ran: {}", out.stdout);
}
