//! The v2 driver against a real cgroup v2 hierarchy. The build hosts
//! mount cgroup v1, so these tests are ignored there and run by
//! `tests/vm/run.sh` in a QEMU guest whose init mounts cgroup2 and sets
//! CORRAL_TEST_CGROUP2_ROOT. Run them by hand on a v2 machine (as root) with
//! `CORRAL_TEST_CGROUP2_ROOT=/sys/fs/cgroup cargo test -p corral-cgroups
//! --test v2_real -- --ignored --test-threads=1`.

mod common;

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::scenarios::{self, MIB};
use common::{Behaviour, Exit, TestDriver, read_file, spawn, unique_base_name};
use corral_cgroups::{DetectOptions, Limits, Version, VersionChoice, detect};

const ROOT_VAR: &str = "CORRAL_TEST_CGROUP2_ROOT";

fn root() -> PathBuf {
    let root = std::env::var_os(ROOT_VAR).unwrap_or_else(|| {
        panic!("{ROOT_VAR} is not set: point it at a cgroup2 mount (tests/vm/run.sh does)")
    });
    let root = PathBuf::from(root);
    assert!(
        root.join("cgroup.controllers").is_file(),
        "{ROOT_VAR}={} is not a cgroup2 mount",
        root.display()
    );
    root
}

fn driver() -> TestDriver {
    let options = DetectOptions {
        version: VersionChoice::V2,
        base_name: unique_base_name(),
        v2_root_override: Some(root()),
    };
    let driver = detect(&options).expect("v2 driver");
    assert_eq!(driver.version(), Version::V2);
    TestDriver(driver)
}

#[test]
#[ignore = "needs a real cgroup v2 hierarchy; run by tests/vm/run.sh in a QEMU guest"]
fn features_of_a_modern_kernel() {
    let driver = driver();
    let features = driver.features();
    assert!(
        features.memory && features.swap && features.pids && features.cpu,
        "{features:?}"
    );
    assert!(
        features.cpu_usage && features.kill && features.memory_peak,
        "{features:?}"
    );
}

#[test]
#[ignore = "needs a real cgroup v2 hierarchy; run by tests/vm/run.sh in a QEMU guest"]
fn apply_writes_the_v2_files() {
    let driver = driver();
    let cgroup = driver.create("files").expect("create");
    let dir = cgroup.dirs().remove(0);
    cgroup
        .apply(&Limits {
            memory_max: Some(64 * MIB),
            swap_max: Some(0),
            pids_max: Some(20),
            cpu_quota_us: Some(25_000),
            cpu_period_us: 50_000,
        })
        .expect("apply");
    assert_eq!(read_file(&dir.join("memory.max")), (64 * MIB).to_string());
    assert_eq!(read_file(&dir.join("memory.swap.max")), "0");
    assert_eq!(read_file(&dir.join("memory.oom.group")), "1");
    assert_eq!(read_file(&dir.join("pids.max")), "20");
    assert_eq!(read_file(&dir.join("cpu.max")), "25000 50000");
    cgroup.apply(&Limits::default()).expect("lift");
    assert_eq!(read_file(&dir.join("memory.max")), "max");
    assert_eq!(read_file(&dir.join("pids.max")), "max");
    assert_eq!(read_file(&dir.join("cpu.max")), "max 100000");
    cgroup.remove().expect("remove");
}

#[test]
#[ignore = "needs a real cgroup v2 hierarchy; run by tests/vm/run.sh in a QEMU guest"]
fn memory_limit_holds() {
    scenarios::memory_limit_holds(&*driver(), 32 * MIB);
}

#[test]
#[ignore = "needs a real cgroup v2 hierarchy; run by tests/vm/run.sh in a QEMU guest"]
fn pids_limit_holds() {
    scenarios::pids_limit_holds(&*driver(), 16);
}

#[test]
#[ignore = "needs a real cgroup v2 hierarchy; run by tests/vm/run.sh in a QEMU guest"]
fn cpu_quota_throttles() {
    scenarios::cpu_quota_throttles(&*driver(), Duration::from_secs(2));
}

#[test]
#[ignore = "needs a real cgroup v2 hierarchy; run by tests/vm/run.sh in a QEMU guest"]
fn cgroup_kill_leaves_nothing() {
    let driver = driver();
    assert!(
        driver.features().kill,
        "this kernel should have cgroup.kill"
    );
    scenarios::kill_all_leaves_nothing(&*driver);
}

#[test]
#[ignore = "needs a real cgroup v2 hierarchy; run by tests/vm/run.sh in a QEMU guest"]
fn remove_leaves_no_directory() {
    scenarios::remove_leaves_no_directory(&*driver());
}

#[test]
#[ignore = "needs a real cgroup v2 hierarchy; run by tests/vm/run.sh in a QEMU guest"]
fn remove_stale_cleans_a_leftover() {
    scenarios::remove_stale_cleans_a_leftover(&*driver());
}

#[test]
#[ignore = "needs a real cgroup v2 hierarchy; run by tests/vm/run.sh in a QEMU guest"]
fn create_refuses_a_busy_leaf() {
    scenarios::create_refuses_a_busy_leaf(&*driver());
}

/// Puts the test process back where it started and removes the fake
/// service cgroup, also when the test panicked.
struct FakeService {
    root: PathBuf,
    dir: PathBuf,
}

impl Drop for FakeService {
    fn drop(&mut self) {
        if let Err(err) = fs::write(
            self.root.join("cgroup.procs"),
            std::process::id().to_string(),
        ) {
            eprintln!("cleanup: moving back to the root cgroup: {err}");
        }
        // Children first: leaves under the base, the base, the supervisor.
        let mut dirs = Vec::new();
        collect_dirs(&self.dir, &mut dirs);
        for dir in dirs.iter().rev() {
            if let Err(err) = fs::remove_dir(dir) {
                eprintln!("cleanup: removing {}: {err}", dir.display());
            }
        }
    }
}

fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    out.push(dir.to_path_buf());
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                collect_dirs(&entry.path(), out);
            }
        }
    }
}

fn own_cgroup() -> String {
    let content = fs::read_to_string("/proc/self/cgroup").expect("read /proc/self/cgroup");
    content
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .expect("a 0:: line")
        .to_string()
}

/// Like systemd's `Delegate=yes`: the daemon starts inside a cgroup of
/// its own that holds it. Enabling controllers there fails (EBUSY) until
/// the driver moves the daemon into `supervisor`; then limits work in the
/// leaves.
#[test]
#[ignore = "needs a real cgroup v2 hierarchy; run by tests/vm/run.sh in a QEMU guest"]
fn delegated_layout_moves_the_daemon_into_a_leaf() {
    let root = root();
    let service_name = unique_base_name();
    let service = FakeService {
        dir: root.join(&service_name),
        root: root.clone(),
    };
    fs::create_dir(&service.dir).expect("create the service cgroup");
    fs::write(
        service.dir.join("cgroup.procs"),
        std::process::id().to_string(),
    )
    .expect("move the test process into the service cgroup");
    assert_eq!(own_cgroup(), format!("/{service_name}"));

    // The rule the driver must work around.
    let err = fs::write(service.dir.join("cgroup.subtree_control"), "+memory")
        .expect_err("a populated cgroup cannot enable controllers for children");
    assert_eq!(err.raw_os_error(), Some(libc::EBUSY), "{err}");

    let options = DetectOptions {
        version: VersionChoice::V2,
        base_name: "corral".to_string(),
        v2_root_override: Some(root.clone()),
    };
    let driver = TestDriver(detect(&options).expect("prepare the delegated layout"));
    assert_eq!(own_cgroup(), format!("/{service_name}/supervisor"));
    assert_eq!(
        driver.base(),
        service.dir.join("corral").display().to_string()
    );
    let enabled = read_file(&service.dir.join("cgroup.subtree_control"));
    for controller in ["memory", "pids", "cpu"] {
        assert!(
            enabled.contains(controller),
            "{controller} not enabled: {enabled}"
        );
    }
    assert!(driver.features().memory && driver.features().pids && driver.features().cpu);

    // Limits hold in a leaf of the delegated subtree.
    let cgroup = driver.create("plugin").expect("create");
    cgroup
        .apply(&Limits {
            memory_max: Some(32 * MIB),
            swap_max: Some(0),
            ..Limits::default()
        })
        .expect("apply");
    let mut child = spawn(Behaviour::TouchMemory(128 * 1024 * 1024));
    cgroup.attach(child.pid()).expect("attach");
    child.start();
    assert_eq!(child.wait(), Exit::Signal(libc::SIGKILL));
    assert!(cgroup.stats().expect("stats").oom_kills >= 1);
    cgroup.remove().expect("remove");

    // A second detect from inside the leaf finds the same layout.
    let again = detect(&options).expect("detect again");
    assert_eq!(again.base(), driver.base());
    drop(again);
    drop(driver);
    match fs::metadata(service.dir.join("corral")) {
        Err(err) if err.kind() == ErrorKind::NotFound => {}
        other => panic!("the base should be gone after cleanup: {other:?}"),
    }
}
