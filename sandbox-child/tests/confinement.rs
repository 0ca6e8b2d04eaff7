//! The trampoline, run for real: what a plugin sees from inside the
//! sandbox. Each test starts `corral-sandbox` as the supervisor would and
//! runs a shell script as the plugin; the script prints what it observed
//! and the test asserts on it.

mod common;

use common::{PLUGIN_ID, PRINT_STATUS, SCRATCH, Spawn, require_root, run, sh};
use corral_protocol::policy::{FsAccess, FsRule, Remap, Rlimit, RlimitSpec};
use std::os::unix::fs::PermissionsExt;

const NO_CAPS: &str = "0000000000000000";

#[test]
fn plugin_runs_as_its_uid_and_gid_with_no_capabilities() {
    require_root();
    let out = run(Spawn::bootstrap(sh(PRINT_STATUS)));
    out.assert_success();
    let id = PLUGIN_ID.to_string();
    assert_eq!(out.value("Uid"), format!("{id} {id} {id} {id}"));
    assert_eq!(out.value("Gid"), format!("{id} {id} {id} {id}"));
    assert_eq!(out.value("Groups"), "", "no supplementary groups");
    for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(out.value(set), NO_CAPS, "{set}");
    }
    assert_eq!(out.value("NoNewPrivs"), "1");
    assert_eq!(out.value("Seccomp"), "0", "no program was given");
}

#[test]
fn the_plugin_starts_with_no_signal_blocked_or_ignored() {
    require_root();
    // The trampoline was exec'd with every signal blocked, and this test
    // process (like any Rust program) ignores SIGPIPE, which children
    // inherit: both must be undone before the plugin runs.
    let out = run(Spawn::bootstrap(sh(r#"
while IFS= read -r line; do
  case "$line" in SigBlk:*|SigIgn:*) key=${line%%:*}; set -- ${line#*:}; echo "$key=$*";; esac
done < /proc/self/status
"#)));
    out.assert_success();
    assert_eq!(out.value("SigBlk"), NO_CAPS, "blocked signals");
    assert_eq!(out.value("SigIgn"), NO_CAPS, "ignored signals");
}

#[test]
fn proc_lists_only_the_sandbox_own_processes() {
    require_root();
    let out = run(Spawn::bootstrap(sh(
        "for p in /proc/[0-9]*; do echo pid=${p#/proc/}; done",
    )));
    out.assert_success();
    // The shell is the trampoline's pid, 1, and alone in its namespace.
    assert_eq!(out.values("pid"), ["1"]);
}

#[test]
fn files_outside_the_rules_cannot_be_read() {
    require_root();
    // Files of the test's own, whatever the host holds: a world-readable
    // one that only Landlock can refuse, and one granted by a rule. Each
    // ends in a newline, so `read -r` succeeds wherever reading does.
    let dir = world_readable_dir("read");
    let secret = dir.join("secret.txt");
    let granted = dir.join("granted.txt");
    for (path, text) in [(&secret, "not for plugins\n"), (&granted, "granted\n")] {
        std::fs::write(path, text).expect("write a test file");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    }
    let mut confinement = sh(&format!(
        r#"
if read -r line < {secret}; then echo "secret=readable"; else echo "secret=denied"; fi
if read -r line < {granted}; then echo "granted=$line"; else echo granted=denied; fi
"#,
        secret = secret.display(),
        granted = granted.display()
    ));
    confinement
        .landlock
        .as_mut()
        .expect("landlock")
        .fs
        .push(FsRule {
            path: granted.display().to_string(),
            access: FsAccess::Read,
        });
    let out = run(Spawn::bootstrap(confinement));
    std::fs::remove_dir_all(&dir).expect("clean up");
    out.assert_success();
    assert_eq!(out.value("secret"), "denied");
    assert_eq!(
        out.value("granted"),
        "granted",
        "a granted file stays readable"
    );
    assert!(
        out.stderr.contains("secret.txt: Permission denied"),
        "expected EACCES for the secret:\n{}",
        out.stderr
    );
}

/// A fresh directory under /var/tmp that any uid may enter.
fn world_readable_dir(name: &str) -> std::path::PathBuf {
    let dir = std::path::PathBuf::from(format!(
        "/var/tmp/corral-sandbox-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

#[test]
fn writes_land_only_in_the_scratch_space() {
    require_root();
    // /var/tmp is world-writable on the host: only Landlock can refuse it.
    let outside = format!("/var/tmp/corral-sandbox-test-{}", std::process::id());
    let out = run(Spawn::bootstrap(sh(&format!(
        r#"
if echo escaped > {outside}; then echo outside=written; else echo outside=denied; fi
if echo kept > {SCRATCH}/note && read -r back < {SCRATCH}/note; then echo scratch=$back; fi
while IFS= read -r line; do
  case "$line" in *" {SCRATCH} "*" - "*) echo "mount=${{line#* - }}";; esac
done < /proc/self/mountinfo
"#
    ))));
    out.assert_success();
    assert_eq!(out.value("outside"), "denied");
    assert!(
        !std::path::Path::new(&outside).exists(),
        "{outside} was created on the host"
    );
    assert_eq!(out.value("scratch"), "kept");
    let mount = out.value("mount");
    let id = PLUGIN_ID;
    for option in [
        "tmpfs ",
        "size=8192k",
        "nr_inodes=256",
        "mode=700",
        &format!("uid={id}"),
        &format!("gid={id}"),
    ] {
        assert!(mount.contains(option), "{option} missing in {mount}");
    }
}

#[test]
fn programs_written_to_the_scratch_space_cannot_be_executed() {
    require_root();
    let out = run(Spawn::bootstrap(sh(&format!(
        r#"
cp /usr/bin/true {SCRATCH}/copied && echo copied=yes
if {SCRATCH}/copied; then echo exec=allowed; else echo exec=denied; fi
if /usr/bin/true; then echo system_exec=allowed; fi
"#
    ))));
    out.assert_success();
    assert_eq!(out.value("copied"), "yes");
    assert_eq!(out.value("exec"), "denied");
    assert_eq!(
        out.value("system_exec"),
        "allowed",
        "read_exec paths still run"
    );
    assert!(
        out.stderr.contains("Permission denied"),
        "expected EACCES:\n{}",
        out.stderr
    );
}

#[test]
fn scratch_inode_limit_holds() {
    require_root();
    let out = run(Spawn::bootstrap(sh(&format!(
        r#"
i=0
while [ $i -lt 1000 ]; do printf '' 2>/dev/null > {SCRATCH}/f$i || break; i=$((i+1)); done
echo created=$i
"#
    ))));
    out.assert_success();
    let created: u32 = out.value("created").parse().expect("a count");
    assert!(
        created < 256,
        "created {created} files in a tmpfs limited to 256 inodes"
    );
    assert!(
        created > 100,
        "only {created} files: the limit is too tight"
    );
}

#[test]
fn inherited_fds_are_closed() {
    require_root();
    // An fd the supervisor left open without close-on-exec, at a number
    // the plugin would notice.
    let dir = world_readable_dir("fds");
    let leaked_path = dir.join("leaked");
    std::fs::write(&leaked_path, "held open\n").expect("write the file to leak");
    let leaked = std::fs::File::open(&leaked_path).expect("open a file to leak");
    std::fs::remove_dir_all(&dir).expect("clean up");
    let mut spawn = Spawn::bootstrap(sh(
        "for f in /proc/self/fd/*; do echo fd=${f#/proc/self/fd/}; done",
    ));
    spawn
        .extra_fds
        .push((std::os::fd::AsRawFd::as_raw_fd(&leaked), 57));
    let out = run(spawn);
    out.assert_success();
    let fds: Vec<u32> = out
        .values("fd")
        .iter()
        .map(|f| f.parse().expect("an fd number"))
        .collect();
    assert!(!fds.contains(&57), "fd 57 leaked into the sandbox: {fds:?}");
    for fd in 0..=3 {
        assert!(fds.contains(&fd), "fd {fd} missing: {fds:?}");
    }
    // Besides 0-3, only the directory the shell is listing may be open.
    assert!(
        fds.len() <= 5 && fds.iter().all(|&fd| fd < 10),
        "unexpected fds: {fds:?}"
    );
}

#[test]
fn rlimits_hold_and_cannot_be_raised() {
    require_root();
    let mut confinement = sh(r#"
echo soft=$(ulimit -S -n)
echo hard=$(ulimit -H -n)
echo fsize=$(ulimit -H -f)
if (ulimit -H -n 129) 2>/dev/null; then echo raise_hard=allowed; else echo raise_hard=denied; fi
if (ulimit -S -n 128) 2>/dev/null; then echo raise_soft_to_hard=allowed; else echo raise_soft_to_hard=denied; fi
"#);
    confinement.rlimits = vec![
        RlimitSpec {
            resource: Rlimit::Nofile,
            soft: 64,
            hard: 128,
        },
        RlimitSpec {
            resource: Rlimit::Fsize,
            soft: 1 << 20,
            hard: 1 << 20,
        },
    ];
    let out = run(Spawn::bootstrap(confinement));
    out.assert_success();
    assert_eq!(out.value("soft"), "64");
    assert_eq!(out.value("hard"), "128");
    // dash reports RLIMIT_FSIZE in 512-byte blocks.
    assert_eq!(out.value("fsize"), "2048");
    assert_eq!(out.value("raise_hard"), "denied");
    assert_eq!(
        out.value("raise_soft_to_hard"),
        "allowed",
        "the soft limit may move up to the hard one"
    );
}

#[test]
fn file_size_limit_stops_a_large_write() {
    require_root();
    let mut confinement = sh(&format!(
        "yes | head -c 300000 > {SCRATCH}/big; echo status=$?; \
         set -- $(wc -c < {SCRATCH}/big); echo size=$1"
    ));
    confinement.rlimits = vec![RlimitSpec {
        resource: Rlimit::Fsize,
        soft: 100_000,
        hard: 100_000,
    }];
    let out = run(Spawn::bootstrap(confinement));
    out.assert_success();
    assert_ne!(out.value("status"), "0", "the write must fail");
    assert_eq!(out.value("size"), "100000", "the file stops at the limit");
}

/// Starts the sandbox from a thread that ends once the plugin is running,
/// as a supervisor's spawning thread would if it died.
fn start_from_a_thread_that_ends(confinement: corral_protocol::Confinement) -> common::Running {
    std::thread::spawn(move || {
        let mut running = common::start(Spawn::bootstrap(confinement));
        running.wait_for_line("started");
        running
    })
    .join()
    .expect("spawning thread")
}

#[test]
fn the_plugin_dies_with_its_parent() {
    require_root();
    let out = start_from_a_thread_that_ends(sh("echo started; sleep 30; echo survived")).finish();
    assert_eq!(
        out.signal(),
        Some(libc::SIGKILL),
        "status {:#x}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        out.stdout,
        out.stderr
    );
    assert!(!out.stdout.contains("survived"), "{}", out.stdout);
}

#[test]
fn without_die_with_parent_the_plugin_outlives_its_parent() {
    require_root();
    let mut confinement = sh("echo started; sleep 1; echo survived");
    confinement.die_with_parent = false;
    let out = start_from_a_thread_that_ends(confinement).finish();
    out.assert_success();
    assert!(out.stdout.contains("survived"), "{}", out.stdout);
}

/// A host directory for a remap test, removed at the end.
struct HostDir(std::path::PathBuf);

impl HostDir {
    fn new(name: &str, mode: u32, files: &[(&str, &str)]) -> HostDir {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::path::PathBuf::from(format!(
            "/var/tmp/corral-remap-{}-{name}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        for (file, text) in files {
            std::fs::write(dir.join(file), text).expect("write");
        }
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).expect("chmod");
        HostDir(dir)
    }

    fn path(&self) -> String {
        self.0.display().to_string()
    }
}

impl Drop for HostDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn remaps_show_host_directories_at_other_paths() {
    require_root();
    let source = HostDir::new("source", 0o755, &[("data.txt", "from-source\n")]);
    let shared = HostDir::new("shared", 0o777, &[]);
    // An existing host directory whose own contents the remap hides.
    let covered = HostDir::new("covered", 0o755, &[("original.txt", "original")]);
    let mut confinement = sh(&format!(
        r#"
if read -r line < {SCRATCH}/data/data.txt; then echo scratch_read=$line; fi
if echo x > {SCRATCH}/data/new.txt; then echo scratch_write=ok; else echo scratch_write=denied; fi
for f in {covered}/*; do echo covered_entry=${{f##*/}}; done
if echo through > {covered}/written.txt; then echo covered_write=ok; else echo covered_write=denied; fi
"#,
        covered = covered.path()
    ));
    confinement.mounts.remaps = vec![
        Remap {
            source: source.path(),
            target: format!("{SCRATCH}/data"),
            writable: false,
        },
        Remap {
            source: shared.path(),
            target: covered.path(),
            writable: true,
        },
    ];
    confinement
        .landlock
        .as_mut()
        .expect("sh() sets Landlock")
        .fs
        .push(FsRule {
            path: covered.path(),
            access: FsAccess::ReadWrite,
        });
    let out = run(Spawn::bootstrap(confinement));
    out.assert_success();
    // Beneath the scratch: the source, read-only although the scratch
    // space itself is writable.
    assert_eq!(out.value("scratch_read"), "from-source");
    assert_eq!(out.value("scratch_write"), "denied");
    assert!(
        out.stderr.contains("Read-only file system"),
        "{}",
        out.stderr
    );
    assert!(!source.0.join("new.txt").exists());
    // Over an existing host directory: the source's contents instead of
    // its own, writable because granted, the write landing in the source.
    assert_eq!(out.values("covered_entry"), ["*"], "shared starts empty");
    assert_eq!(out.value("covered_write"), "ok");
    assert_eq!(
        std::fs::read_to_string(shared.0.join("written.txt")).expect("written through"),
        "through\n"
    );
    assert!(
        !covered.0.join("written.txt").exists(),
        "the host's own directory was written"
    );
    assert!(covered.0.join("original.txt").exists());
}

/// The minimal root: only the listed host paths, device nodes of its own,
/// a fresh /proc and the scratch; `/` read-only; the host's tree gone.
#[test]
fn a_minimal_root_holds_only_the_listed_paths() {
    use corral_protocol::policy::{MinimalRoot, RootPath};
    require_root();
    // A host file the root does not list, whatever else the host holds.
    let hidden = HostDir::new("hidden", 0o755, &[("there.txt", "on the host\n")]);
    let mut confinement = sh(&format!(
        r#"
for p in {hidden} /etc/passwd /var /home /usr/bin/sh /dev/null /proc/self /tmp; do
  if [ -e "$p" ]; then echo "seen=$p"; fi
done
if echo x > /tmp/w; then echo scratch_write=ok; fi
if (echo x > /new) 2>/dev/null; then echo root_write=ok; else echo root_write=denied; fi
if echo x > /dev/null; then echo devnull=ok; fi
while IFS= read -r line; do echo "cgroup=$line"; done < /proc/self/cgroup
"#,
        hidden = hidden.path()
    ));
    let mut paths: Vec<RootPath> = ["/usr", "/bin", "/lib", "/lib64", "/etc/ld.so.cache"]
        .iter()
        .filter(|p| std::path::Path::new(p).exists())
        .map(|p| RootPath {
            path: p.to_string(),
            writable: false,
            exec: true,
        })
        .collect();
    paths.push(RootPath {
        path: "/dev/null".into(),
        writable: true,
        exec: false,
    });
    confinement.mounts.root = Some(MinimalRoot { paths });
    confinement.namespaces.cgroup = true;
    let out = run(Spawn::bootstrap(confinement));
    out.assert_success();
    let mut seen = out.values("seen");
    seen.sort();
    assert_eq!(
        seen,
        ["/dev/null", "/proc/self", "/tmp", "/usr/bin/sh"],
        "{}",
        out.stderr
    );
    assert_eq!(out.value("scratch_write"), "ok");
    assert_eq!(out.value("root_write"), "denied", "/ must be read-only");
    assert_eq!(out.value("devnull"), "ok");
    for line in out.values("cgroup") {
        assert!(line.ends_with(":/"), "the host's cgroup path shows: {line}");
    }
}
