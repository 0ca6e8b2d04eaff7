//! The v2 driver against a temporary directory shaped like cgroupfs
//! (`v2_root_override`). The kernel is not involved: these tests check
//! which files the driver writes, with what, in which directory, and how
//! it reads realistic file contents. tests/vm/run.sh runs the driver
//! against a real v2 hierarchy.

use std::fs;
use std::path::{Path, PathBuf};

use corral_cgroups::{
    CgroupDriver, CgroupError, DetectOptions, Limits, Plan, Resource, Version, from_plan, plan,
};
use tempfile::TempDir;

const MIB: u64 = 1 << 20;
const BASE: &str = "corral-fake";
const MOUNTINFO: &str = "26 22 0:23 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";

/// Files the kernel puts in a non-root cgroup with memory, pids and cpu
/// enabled by its parent, with the contents of a fresh cgroup.
const NON_ROOT_FILES: &[(&str, &str)] = &[
    ("cgroup.procs", ""),
    ("cgroup.type", "domain\n"),
    ("cgroup.kill", ""),
    ("cgroup.freeze", "0\n"),
    ("cgroup.events", "populated 0\nfrozen 0\n"),
    ("cgroup.controllers", "cpu memory pids\n"),
    ("cgroup.subtree_control", ""),
    ("memory.max", "max\n"),
    ("memory.swap.max", "max\n"),
    ("memory.oom.group", "0\n"),
    ("memory.current", "0\n"),
    ("memory.peak", "0\n"),
    (
        "memory.events",
        "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n",
    ),
    ("pids.max", "max\n"),
    ("pids.current", "0\n"),
    ("pids.events", "max 0\n"),
    ("cpu.max", "max 100000\n"),
    (
        "cpu.stat",
        "usage_usec 0\nuser_usec 0\nsystem_usec 0\nnr_periods 0\nnr_throttled 0\nthrottled_usec 0\n",
    ),
];

/// The hierarchy root: no cgroup.type, no controller interface files.
const ROOT_FILES: &[(&str, &str)] = &[
    ("cgroup.procs", "1\n"),
    (
        "cgroup.controllers",
        "cpuset cpu io memory hugetlb pids rdma misc\n",
    ),
    ("cgroup.subtree_control", ""),
];

fn make_cgroup(dir: &Path, files: &[(&str, &str)], without: &[&str]) {
    fs::create_dir_all(dir).expect("create fake cgroup dir");
    for (name, content) in files {
        if !without.contains(name) {
            fs::write(dir.join(name), content).expect("write fake cgroup file");
        }
    }
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn set(path: &Path, content: &str) {
    fs::write(path, content).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

struct Fake {
    root: TempDir,
}

impl Fake {
    /// A root with the base and leaf `names` already "created by the
    /// kernel" (a temp dir does not populate a new directory by itself).
    fn new(own: &str, leaves: &[&str], without: &[&str]) -> Fake {
        let root = tempfile::tempdir().expect("tempdir");
        make_cgroup(root.path(), ROOT_FILES, &[]);
        let own_dir = root.path().join(own.trim_start_matches('/'));
        if own_dir != root.path() {
            make_cgroup(&own_dir, NON_ROOT_FILES, &[]);
        }
        make_cgroup(&own_dir.join(BASE), NON_ROOT_FILES, without);
        for leaf in leaves {
            make_cgroup(&own_dir.join(BASE).join(leaf), NON_ROOT_FILES, without);
        }
        Fake { root }
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.root.path().join(relative)
    }

    fn plan(&self, proc_self_cgroup: &str) -> Plan {
        let options = DetectOptions {
            base_name: BASE.to_string(),
            v2_root_override: Some(self.root.path().to_path_buf()),
            ..DetectOptions::default()
        };
        plan(MOUNTINFO, proc_self_cgroup, &options).expect("plan")
    }

    fn driver(&self, proc_self_cgroup: &str) -> Box<dyn CgroupDriver> {
        from_plan(&self.plan(proc_self_cgroup)).expect("prepare driver")
    }
}

#[test]
fn root_layout_enables_controllers_on_the_way_down() {
    let fake = Fake::new("/", &[], &[]);
    let driver = fake.driver("0::/\n");
    assert_eq!(driver.version(), Version::V2);
    assert_eq!(driver.base(), fake.path(BASE).display().to_string());
    assert_eq!(
        read(&fake.path("cgroup.subtree_control")),
        "+memory +pids +cpu"
    );
    assert_eq!(
        read(&fake.path(&format!("{BASE}/cgroup.subtree_control"))),
        "+memory +pids +cpu"
    );
    let features = driver.features();
    assert!(
        features.memory && features.swap && features.pids && features.cpu,
        "{features:?}"
    );
    assert!(
        features.cpu_usage && features.kill && features.memory_peak,
        "{features:?}"
    );
    // The root needs no vacating: it is exempt from the no-internal-
    // processes rule, and nothing was moved.
    assert!(!fake.path("supervisor").exists());
}

#[test]
fn controllers_already_enabled_are_not_written_again() {
    let fake = Fake::new("/", &[], &[]);
    // As the kernel prints them; a write would fail with EBUSY on a real
    // populated non-root cgroup.
    set(&fake.path("cgroup.subtree_control"), "cpu memory pids\n");
    fake.driver("0::/\n");
    assert_eq!(
        read(&fake.path("cgroup.subtree_control")),
        "cpu memory pids\n"
    );
}

#[test]
fn only_offered_controllers_are_enabled() {
    let fake = Fake::new("/", &[], &["memory.max", "memory.swap.max", "memory.peak"]);
    set(&fake.path("cgroup.controllers"), "cpu io pids\n");
    set(
        &fake.path(&format!("{BASE}/cgroup.controllers")),
        "cpu pids\n",
    );
    let driver = fake.driver("0::/\n");
    assert_eq!(read(&fake.path("cgroup.subtree_control")), "+pids +cpu");
    let features = driver.features();
    assert!(
        !features.memory && !features.swap && !features.memory_peak,
        "{features:?}"
    );
    assert!(features.pids && features.cpu, "{features:?}");
}

#[test]
fn apply_writes_every_limit_and_lifts_them_again() {
    let fake = Fake::new("/", &["plugin-a"], &[]);
    let driver = fake.driver("0::/\n");
    let cgroup = driver.create("plugin-a").expect("create");
    let leaf = |file: &str| fake.path(&format!("{BASE}/plugin-a/{file}"));
    cgroup
        .apply(&Limits {
            memory_max: Some(64 * MIB),
            swap_max: Some(0),
            pids_max: Some(16),
            cpu_quota_us: Some(50_000),
            cpu_period_us: 100_000,
        })
        .expect("apply");
    assert_eq!(read(&leaf("memory.max")), "67108864");
    assert_eq!(read(&leaf("memory.swap.max")), "0");
    assert_eq!(read(&leaf("memory.oom.group")), "1");
    assert_eq!(read(&leaf("pids.max")), "16");
    assert_eq!(read(&leaf("cpu.max")), "50000 100000");

    cgroup
        .apply(&Limits {
            cpu_quota_us: Some(20_000),
            ..Limits::default()
        })
        .expect("apply with the default period");
    assert_eq!(read(&leaf("cpu.max")), "20000 100000");

    cgroup.apply(&Limits::default()).expect("lift");
    assert_eq!(read(&leaf("memory.max")), "max");
    assert_eq!(read(&leaf("memory.swap.max")), "max");
    assert_eq!(read(&leaf("pids.max")), "max");
    assert_eq!(read(&leaf("cpu.max")), "max 100000");

    let err = cgroup
        .apply(&Limits {
            cpu_quota_us: Some(10),
            ..Limits::default()
        })
        .expect_err("a 10 us quota must be refused before any write");
    assert!(matches!(err, CgroupError::InvalidLimits(_)), "{err}");
}

#[test]
fn attach_writes_the_pid_to_cgroup_procs() {
    let fake = Fake::new("/", &["plugin-a"], &[]);
    let driver = fake.driver("0::/\n");
    let cgroup = driver.create("plugin-a").expect("create");
    // Our own pid: the file is inert here, and kill_all must refuse it.
    let own = std::process::id();
    cgroup.attach(own).expect("attach");
    assert_eq!(
        read(&fake.path(&format!("{BASE}/plugin-a/cgroup.procs"))),
        own.to_string()
    );
    assert_eq!(cgroup.procs().expect("procs"), vec![own]);
    match cgroup.kill_all() {
        Err(CgroupError::ContainsSelf { pid, .. }) => assert_eq!(pid, own),
        other => panic!("kill_all must refuse to kill the caller, got {other:?}"),
    }
    assert_eq!(
        read(&fake.path(&format!("{BASE}/plugin-a/cgroup.kill"))),
        "",
        "nothing killed"
    );
    assert_eq!(cgroup.dirs(), vec![fake.path(&format!("{BASE}/plugin-a"))]);
}

#[test]
fn stats_parse_realistic_contents() {
    let fake = Fake::new("/", &["plugin-a"], &[]);
    let driver = fake.driver("0::/\n");
    let cgroup = driver.create("plugin-a").expect("create");
    let leaf = |file: &str| fake.path(&format!("{BASE}/plugin-a/{file}"));
    set(&leaf("memory.current"), "1048576\n");
    set(&leaf("memory.peak"), "67104768\n");
    set(
        &leaf("memory.events"),
        "low 0\nhigh 0\nmax 1204\noom 3\noom_kill 2\noom_group_kill 1\n",
    );
    set(&leaf("pids.current"), "3\n");
    set(&leaf("pids.events"), "max 7\n");
    set(
        &leaf("cpu.stat"),
        "usage_usec 1234567\nuser_usec 1000000\nsystem_usec 234567\ncore_sched.force_idle_usec 0\n\
         nr_periods 10\nnr_throttled 4\nthrottled_usec 5000\nnr_bursts 0\nburst_usec 0\n",
    );
    let stats = cgroup.stats().expect("stats");
    assert_eq!(stats.memory_current, 1_048_576);
    assert_eq!(stats.memory_peak, 67_104_768);
    assert_eq!(stats.oom_kills, 2);
    assert_eq!(stats.pids_current, 3);
    assert_eq!(stats.pids_limit_hits, 7);
    assert_eq!(stats.cpu_usage_us, 1_234_567);

    set(&leaf("pids.events"), "max many\n");
    let err = cgroup.stats().expect_err("garbage in pids.events");
    assert!(err.to_string().contains("pids.events"), "{err}");
}

#[test]
fn peak_falls_back_to_the_highest_usage_seen() {
    let fake = Fake::new("/", &["plugin-a"], &["memory.peak"]);
    let driver = fake.driver("0::/\n");
    assert!(!driver.features().memory_peak);
    let cgroup = driver.create("plugin-a").expect("create");
    let current = fake.path(&format!("{BASE}/plugin-a/memory.current"));
    set(&current, "5000\n");
    assert_eq!(cgroup.stats().expect("stats").memory_peak, 5000);
    set(&current, "1000\n");
    let stats = cgroup.stats().expect("stats");
    assert_eq!((stats.memory_current, stats.memory_peak), (1000, 5000));
}

#[test]
fn missing_interface_files_are_unsupported() {
    for (file, resource) in [
        ("memory.max", Resource::Memory),
        ("memory.swap.max", Resource::Swap),
        ("pids.max", Resource::Pids),
        ("cpu.max", Resource::Cpu),
    ] {
        let fake = Fake::new("/", &["plugin-a"], &[file]);
        let driver = fake.driver("0::/\n");
        let cgroup = driver.create("plugin-a").expect("create");
        let limits = Limits {
            memory_max: Some(64 * MIB),
            swap_max: Some(0),
            pids_max: Some(16),
            cpu_quota_us: Some(50_000),
            cpu_period_us: 100_000,
        };
        match cgroup.apply(&limits) {
            Err(CgroupError::Unsupported {
                resource: r,
                missing,
            }) => {
                assert_eq!(r, resource);
                assert!(missing.contains(file), "{missing}");
            }
            other => panic!("missing {file}: expected Unsupported, got {other:?}"),
        }
        // Best effort: without that resource the rest applies, and an
        // unlimited value for a missing file is not an error.
        cgroup
            .apply(&limits.without(resource))
            .expect("apply without the missing resource");
    }
}

#[test]
fn delegation_moves_us_into_the_supervisor_leaf() {
    let own = "system.slice/corrald.service";
    let fake = Fake::new(own, &[], &[]);
    let own_dir = fake.path(own);
    // systemd's slice above the service, with controllers delegated.
    make_cgroup(&fake.path("system.slice"), NON_ROOT_FILES, &[]);
    set(
        &fake.path("system.slice/cgroup.subtree_control"),
        "cpu memory pids\n",
    );
    let pid = std::process::id().to_string();
    set(&own_dir.join("cgroup.procs"), &format!("{pid}\n"));
    // The kernel would create these files on mkdir.
    make_cgroup(&own_dir.join("supervisor"), NON_ROOT_FILES, &[]);
    let driver = fake.driver(&format!("0::/{own}\n"));
    assert_eq!(read(&own_dir.join("supervisor/cgroup.procs")), pid);
    assert_eq!(
        read(&own_dir.join("cgroup.subtree_control")),
        "+memory +pids +cpu"
    );
    assert_eq!(
        read(&own_dir.join(BASE).join("cgroup.subtree_control")),
        "+memory +pids +cpu"
    );
    assert_eq!(driver.base(), own_dir.join(BASE).display().to_string());
    // The parent of a delegated cgroup belongs to systemd: untouched.
    assert_eq!(
        read(&fake.path("system.slice/cgroup.subtree_control")),
        "cpu memory pids\n"
    );

    // Running again from inside the leaf gives the same layout.
    let again = fake.driver(&format!("0::/{own}/supervisor\n"));
    assert_eq!(again.base(), driver.base());
}

#[test]
fn a_cgroup_namespace_root_is_vacated_too() {
    // Inside a cgroup namespace our cgroup shows as "/", but it is not the
    // real root (it has cgroup.type) and must obey the rule.
    let fake = Fake::new("/", &[], &[]);
    set(&fake.path("cgroup.type"), "domain\n");
    let pid = std::process::id().to_string();
    set(&fake.path("cgroup.procs"), &format!("{pid}\n"));
    make_cgroup(&fake.path("supervisor"), NON_ROOT_FILES, &[]);
    fake.driver("0::/\n");
    assert_eq!(read(&fake.path("supervisor/cgroup.procs")), pid);
}

#[test]
fn list_and_remove_stale() {
    let fake = Fake::new("/", &[], &[]);
    let driver = fake.driver("0::/\n");
    for name in ["old-a", "old-b", "Not.Ours"] {
        fs::create_dir(fake.path(&format!("{BASE}/{name}"))).expect("mkdir");
    }
    assert_eq!(driver.list().expect("list"), ["old-a", "old-b"]);
    driver.remove_stale("old-a").expect("remove_stale");
    assert!(!fake.path(&format!("{BASE}/old-a")).exists());
    assert_eq!(driver.list().expect("list"), ["old-b"]);
    driver
        .remove_stale("old-a")
        .expect("removing a gone cgroup is fine");
}

#[test]
fn create_refuses_bad_names_and_busy_leaves() {
    let fake = Fake::new("/", &["busy"], &[]);
    let driver = fake.driver("0::/\n");
    for name in ["", "..", "../escape", "a/b", "cgroup.procs", "UPPER"] {
        match driver.create(name) {
            Err(CgroupError::InvalidName { .. }) => {}
            other => panic!("{name:?} must be an invalid name, got {other:?}"),
        }
        assert!(matches!(
            driver.remove_stale(name),
            Err(CgroupError::InvalidName { .. })
        ));
    }
    set(&fake.path(&format!("{BASE}/busy/cgroup.procs")), "4242\n");
    match driver.create("busy") {
        Err(CgroupError::InUse { pids, path }) => {
            assert_eq!(pids, vec![4242]);
            assert_eq!(path, fake.path(&format!("{BASE}/busy")));
        }
        other => panic!("expected InUse, got {other:?}"),
    }
}

#[test]
fn errors_name_the_file() {
    let fake = Fake::new("/", &[], &[]);
    fs::remove_file(fake.path("cgroup.controllers")).expect("rm");
    let err = from_plan(&fake.plan("0::/\n")).expect_err("no cgroup.controllers");
    let text = err.to_string();
    assert!(
        text.contains(&fake.path("cgroup.controllers").display().to_string()),
        "{text}"
    );
}
