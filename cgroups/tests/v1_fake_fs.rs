//! The v1 driver against temporary directories shaped like v1
//! hierarchies: co-mounted controllers and kernels without swap
//! accounting, which this host does not have.

use std::fs;
use std::path::Path;

use corral_cgroups::{CgroupError, Limits, Plan, Resource, V1Plan, from_plan};

const MIB: u64 = 1 << 20;

fn make(dir: &Path, files: &[&str]) {
    fs::create_dir_all(dir).expect("mkdir");
    for file in files {
        let fresh = if *file == "cgroup.procs" { "" } else { "0\n" };
        fs::write(dir.join(file), fresh).expect("write");
    }
}

const MEMORY: &[&str] = &[
    "cgroup.procs",
    "memory.limit_in_bytes",
    "memory.usage_in_bytes",
    "memory.max_usage_in_bytes",
    "memory.oom_control",
];
const CPU_CPUACCT: &[&str] = &[
    "cgroup.procs",
    "cpu.cfs_quota_us",
    "cpu.cfs_period_us",
    "cpuacct.usage",
];

#[test]
fn co_mounted_cpu_and_cpuacct_share_a_directory_and_swap_needs_memsw() {
    let root = tempfile::tempdir().expect("tempdir");
    let memory = root.path().join("memory");
    let cpu = root.path().join("cpu,cpuacct");
    // Without swap accounting: no memory.memsw.* files.
    for dir in ["corral", "corral/p"] {
        make(&memory.join(dir), MEMORY);
        make(&cpu.join(dir), CPU_CPUACCT);
    }
    let plan = Plan::V1(V1Plan {
        memory: Some(memory.clone()),
        pids: None,
        cpu: Some(cpu.clone()),
        cpuacct: Some(cpu.clone()),
        freezer: None,
        base_name: "corral".to_string(),
    });
    let driver = from_plan(&plan).expect("driver");
    let features = driver.features();
    assert!(
        features.memory && !features.swap && !features.pids,
        "{features:?}"
    );
    assert!(features.cpu && features.cpu_usage, "{features:?}");
    let cgroup = driver.create("p").expect("create");
    assert_eq!(
        cgroup.dirs(),
        vec![memory.join("corral/p"), cpu.join("corral/p")]
    );

    match cgroup.apply(&Limits {
        memory_max: Some(64 * MIB),
        swap_max: Some(0),
        ..Limits::default()
    }) {
        Err(CgroupError::Unsupported {
            resource: Resource::Swap,
            missing,
        }) => assert!(missing.contains("memory.memsw.limit_in_bytes"), "{missing}"),
        other => panic!("expected Unsupported(swap), got {other:?}"),
    }
    cgroup
        .apply(&Limits {
            memory_max: Some(64 * MIB),
            cpu_quota_us: Some(30_000),
            ..Limits::default()
        })
        .expect("apply memory and cpu");
    let read = |p: &Path| fs::read_to_string(p).expect("read");
    assert_eq!(
        read(&memory.join("corral/p/memory.limit_in_bytes")),
        "67108864"
    );
    assert_eq!(read(&cpu.join("corral/p/cpu.cfs_quota_us")), "30000");
    assert_eq!(read(&cpu.join("corral/p/cpu.cfs_period_us")), "100000");

    fs::write(cpu.join("corral/p/cpuacct.usage"), "2500000000\n").expect("write");
    fs::write(
        memory.join("corral/p/memory.oom_control"),
        "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n",
    )
    .expect("write");
    let stats = cgroup.stats().expect("stats");
    assert_eq!(stats.cpu_usage_us, 2_500_000);
    assert_eq!(stats.oom_kills, 3);

    cgroup.attach(4242).expect("attach");
    for dir in cgroup.dirs() {
        assert_eq!(read(&dir.join("cgroup.procs")), "4242");
    }
}
