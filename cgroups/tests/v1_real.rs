//! The v1 driver against the real cgroup v1 hierarchies of this host
//! (the build machines mount memory, pids, cpu, cpuacct and freezer as
//! v1). Needs root. cgroup v2 is tested for real by `tests/vm/run.sh`.

mod common;

use std::time::Duration;

use common::scenarios::{self, MIB};
use common::{TestDriver, read_file, unique_base_name};
use corral_cgroups::{
    CgroupError, DetectOptions, Limits, Plan, Resource, Version, VersionChoice, from_plan, plan,
};

fn options() -> DetectOptions {
    DetectOptions {
        version: VersionChoice::V1,
        base_name: unique_base_name(),
        v2_root_override: None,
    }
}

fn need_v1(err: CgroupError) -> ! {
    panic!(
        "these tests need root and cgroup v1 controllers (memory, pids, cpu, cpuacct, \
         freezer) mounted, as on the build hosts; cgroup v2 is tested by tests/vm/run.sh: {err}"
    )
}

fn driver() -> TestDriver {
    let driver = corral_cgroups::detect(&options()).unwrap_or_else(|e| need_v1(e));
    assert_eq!(driver.version(), Version::V1);
    TestDriver(driver)
}

#[test]
fn features_of_this_host() {
    let driver = driver();
    let features = driver.features();
    assert!(
        features.memory && features.swap && features.pids,
        "{features:?}"
    );
    assert!(
        features.cpu && features.cpu_usage && features.memory_peak,
        "{features:?}"
    );
    assert!(!features.kill, "v1 has no cgroup.kill: {features:?}");
}

#[test]
fn apply_writes_the_v1_files() {
    let driver = driver();
    let cgroup = driver.create("files").expect("create");
    let dir_of = |controller: &str| {
        cgroup
            .dirs()
            .into_iter()
            .find(|d| d.to_string_lossy().contains(&format!("/{controller}/")))
            .unwrap_or_else(|| panic!("no {controller} directory in {:?}", cgroup.dirs()))
    };
    cgroup
        .apply(&Limits {
            memory_max: Some(64 * MIB),
            swap_max: Some(16 * MIB),
            pids_max: Some(20),
            cpu_quota_us: Some(25_000),
            cpu_period_us: 50_000,
        })
        .expect("apply");
    let memory = dir_of("memory");
    assert_eq!(
        read_file(&memory.join("memory.limit_in_bytes")),
        (64 * MIB).to_string()
    );
    assert_eq!(
        read_file(&memory.join("memory.memsw.limit_in_bytes")),
        (80 * MIB).to_string()
    );
    assert_eq!(read_file(&dir_of("pids").join("pids.max")), "20");
    let cpu = dir_of("cpu");
    assert_eq!(read_file(&cpu.join("cpu.cfs_quota_us")), "25000");
    assert_eq!(read_file(&cpu.join("cpu.cfs_period_us")), "50000");

    // Lowering memory below the old memory+swap total and then lifting
    // everything must both work (the kernel orders memory <= memsw).
    cgroup
        .apply(&Limits {
            memory_max: Some(32 * MIB),
            swap_max: Some(0),
            ..Limits::default()
        })
        .expect("apply lower limits");
    assert_eq!(
        read_file(&memory.join("memory.memsw.limit_in_bytes")),
        (32 * MIB).to_string()
    );
    cgroup.apply(&Limits::default()).expect("lift limits");
    assert_eq!(read_file(&dir_of("pids").join("pids.max")), "max");
    assert_eq!(read_file(&cpu.join("cpu.cfs_quota_us")), "-1");
    let unlimited: u64 = read_file(&memory.join("memory.limit_in_bytes"))
        .parse()
        .expect("a number");
    assert!(unlimited > 1 << 60, "memory limit not lifted: {unlimited}");
    cgroup.remove().expect("remove");
}

#[test]
fn memory_limit_holds() {
    scenarios::memory_limit_holds(&*driver(), 64 * MIB);
}

#[test]
fn pids_limit_holds() {
    scenarios::pids_limit_holds(&*driver(), 16);
}

#[test]
fn cpu_quota_throttles() {
    scenarios::cpu_quota_throttles(&*driver(), Duration::from_secs(1));
}

#[test]
fn kill_all_leaves_nothing() {
    scenarios::kill_all_leaves_nothing(&*driver());
}

#[test]
fn remove_leaves_no_directory_in_any_hierarchy() {
    let driver = driver();
    scenarios::remove_leaves_no_directory(&*driver);
}

#[test]
fn remove_stale_cleans_a_leftover() {
    scenarios::remove_stale_cleans_a_leftover(&*driver());
}

#[test]
fn create_refuses_a_busy_leaf() {
    scenarios::create_refuses_a_busy_leaf(&*driver());
}

#[test]
fn a_missing_hierarchy_makes_its_limit_unsupported() {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
    let own = std::fs::read_to_string("/proc/self/cgroup").expect("read /proc/self/cgroup");
    let Plan::V1(mut v1) = plan(&mountinfo, &own, &options()).unwrap_or_else(|e| need_v1(e)) else {
        panic!("expected a v1 plan");
    };
    v1.pids = None;
    let driver = TestDriver(from_plan(&Plan::V1(v1)).expect("driver without pids"));
    assert!(!driver.features().pids);
    let cgroup = driver.create("no-pids").expect("create");
    match cgroup.apply(&Limits {
        pids_max: Some(8),
        ..Limits::default()
    }) {
        Err(CgroupError::Unsupported {
            resource: Resource::Pids,
            missing,
        }) => assert!(missing.contains("pids"), "{missing}"),
        other => panic!("expected Unsupported(pids), got {other:?}"),
    }
    let best_effort = Limits {
        memory_max: Some(64 * MIB),
        pids_max: Some(8),
        ..Limits::default()
    }
    .without(Resource::Pids);
    cgroup.apply(&best_effort).expect("apply without pids");
    match cgroup.apply(&Limits {
        swap_max: Some(MIB),
        ..Limits::default()
    }) {
        Err(CgroupError::InvalidLimits(reason)) => {
            assert!(reason.contains("memory_max"), "{reason}")
        }
        other => panic!("swap without memory must be rejected on v1, got {other:?}"),
    }
    cgroup.remove().expect("remove");
}
