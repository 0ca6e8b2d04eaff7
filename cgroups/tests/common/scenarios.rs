//! Limit scenarios run against a real hierarchy, the same for v1 (on the
//! build host) and v2 (in the QEMU guest). Each one proves that a limit
//! held, not merely that a file was written.

use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use corral_cgroups::{Cgroup, CgroupDriver, CgroupError, Limits};

use super::{Behaviour, Exit, spawn};

pub const MIB: u64 = 1 << 20;

/// A child touching four times `limit` bytes is OOM-killed inside its
/// cgroup, the kill is counted, and usage peaked near, never above, the
/// limit.
pub fn memory_limit_holds(driver: &dyn CgroupDriver, limit: u64) {
    let cgroup = driver.create("memory-hog").expect("create cgroup");
    cgroup
        .apply(&Limits {
            memory_max: Some(limit),
            swap_max: Some(0),
            ..Limits::default()
        })
        .expect("apply memory limit");
    let mut child = spawn(Behaviour::TouchMemory(
        usize::try_from(limit * 4).expect("fits usize"),
    ));
    cgroup.attach(child.pid()).expect("attach child");
    child.start();
    assert_eq!(
        child.wait(),
        Exit::Signal(libc::SIGKILL),
        "a child touching 4x the memory limit must be OOM-killed"
    );
    let stats = cgroup.stats().expect("stats");
    assert!(stats.oom_kills >= 1, "OOM kill not counted: {stats:?}");
    assert!(
        stats.memory_peak >= limit / 10 * 9,
        "peak {} is not near the limit {limit}: {stats:?}",
        stats.memory_peak
    );
    assert!(
        stats.memory_peak <= limit,
        "peak {} exceeded the limit {limit}",
        stats.memory_peak
    );
    cgroup.remove().expect("remove");
}

/// A child forking until refused stops at exactly `limit` tasks with
/// EAGAIN, the refusal is counted, and the count never exceeds the limit.
pub fn pids_limit_holds(driver: &dyn CgroupDriver, limit: u64) {
    let cgroup = driver.create("fork-bomb").expect("create cgroup");
    cgroup
        .apply(&Limits {
            pids_max: Some(limit),
            ..Limits::default()
        })
        .expect("apply pids limit");
    let mut child = spawn(Behaviour::ForkUntilRefused);
    cgroup.attach(child.pid()).expect("attach child");
    child.start();
    let deadline = Instant::now() + Duration::from_secs(60);
    let report = loop {
        let current = cgroup.stats().expect("stats").pids_current;
        assert!(
            current <= limit,
            "pids.current {current} above the limit {limit}"
        );
        if let Some(report) = child.try_fork_report(Duration::from_millis(5)) {
            break report;
        }
        assert!(
            Instant::now() < deadline,
            "the forking child never reported"
        );
    };
    assert_eq!(
        report.errno,
        libc::EAGAIN,
        "fork must fail with EAGAIN: {report:?}"
    );
    assert_eq!(
        report.forks + 1,
        limit,
        "the child and its children must fill the limit exactly: {report:?}"
    );
    let stats = cgroup.stats().expect("stats");
    assert_eq!(stats.pids_current, limit, "{stats:?}");
    assert!(
        stats.pids_limit_hits >= 1,
        "refused fork not counted: {stats:?}"
    );
    cgroup.kill_all().expect("kill_all");
    assert_eq!(child.wait(), Exit::Signal(libc::SIGKILL));
    cgroup.remove().expect("remove");
}

/// A spinning child under a 10% quota uses far less CPU over `window`
/// than an unthrottled spinner running at the same time. Margins are wide:
/// machines are noisy and the guest CPU is emulated.
pub fn cpu_quota_throttles(driver: &dyn CgroupDriver, window: Duration) {
    let throttled = driver.create("cpu-throttled").expect("create cgroup");
    throttled
        .apply(&Limits {
            cpu_quota_us: Some(10_000),
            cpu_period_us: 100_000,
            ..Limits::default()
        })
        .expect("apply cpu quota");
    let free = driver.create("cpu-free").expect("create cgroup");
    free.apply(&Limits::default()).expect("apply no limits");
    let mut spinners = Vec::new();
    for cgroup in [&throttled, &free] {
        let mut child = spawn(Behaviour::Spin);
        cgroup.attach(child.pid()).expect("attach child");
        child.start();
        spinners.push(child);
    }
    thread::sleep(Duration::from_millis(300));
    let usage = |cgroup: &dyn Cgroup| cgroup.stats().expect("stats").cpu_usage_us;
    let started = Instant::now();
    let (throttled_0, free_0) = (usage(&*throttled), usage(&*free));
    thread::sleep(window);
    let (throttled_1, free_1) = (usage(&*throttled), usage(&*free));
    let wall_us = u64::try_from(started.elapsed().as_micros()).expect("fits u64");
    let throttled_used = throttled_1 - throttled_0;
    let free_used = free_1 - free_0;
    eprintln!("cpu over {wall_us} us: throttled {throttled_used} us, unthrottled {free_used} us");
    assert!(
        throttled_used * 100 <= wall_us * 35,
        "a 10% quota let the spinner use {throttled_used} us of {wall_us} us"
    );
    assert!(
        free_used >= throttled_used * 2,
        "the unthrottled spinner ({free_used} us) should far outrun the throttled one \
         ({throttled_used} us)"
    );
    for cgroup in [&throttled, &free] {
        cgroup.kill_all().expect("kill_all");
    }
    for mut child in spinners {
        assert_eq!(child.wait(), Exit::Signal(libc::SIGKILL));
    }
    throttled.remove().expect("remove");
    free.remove().expect("remove");
}

/// `kill_all` kills every process, including ones forked inside, and
/// leaves `cgroup.procs` empty.
pub fn kill_all_leaves_nothing(driver: &dyn CgroupDriver) {
    let cgroup = driver.create("kill-all").expect("create cgroup");
    cgroup
        .apply(&Limits {
            pids_max: Some(24),
            ..Limits::default()
        })
        .expect("apply pids limit");
    let mut children: Vec<_> = (0..3).map(|_| spawn(Behaviour::Sleep)).collect();
    children.push(spawn(Behaviour::ForkUntilRefused));
    for child in &mut children {
        cgroup.attach(child.pid()).expect("attach child");
        child.start();
    }
    let forker = children.last().expect("four children");
    let report = forker.fork_report(Duration::from_secs(60));
    let procs = cgroup.procs().expect("procs");
    assert_eq!(
        procs.len() as u64,
        3 + 1 + report.forks,
        "every child and grandchild must be inside: {procs:?}"
    );
    cgroup.kill_all().expect("kill_all");
    assert_eq!(cgroup.procs().expect("procs"), Vec::<u32>::new());
    for child in &mut children {
        assert_eq!(child.wait(), Exit::Signal(libc::SIGKILL));
    }
    cgroup.remove().expect("remove");
}

/// `remove` kills what is inside and leaves no directory in any
/// hierarchy; a second `remove` is fine.
pub fn remove_leaves_no_directory(driver: &dyn CgroupDriver) {
    let cgroup = driver.create("removed").expect("create cgroup");
    let dirs = cgroup.dirs();
    assert!(!dirs.is_empty());
    for dir in &dirs {
        assert!(dir.is_dir(), "{} should exist", dir.display());
    }
    let mut child = spawn(Behaviour::Sleep);
    cgroup.attach(child.pid()).expect("attach child");
    child.start();
    cgroup.remove().expect("remove");
    assert_eq!(child.wait(), Exit::Signal(libc::SIGKILL));
    assert_gone(&dirs);
    cgroup.remove().expect("a second remove is a no-op");
}

/// A cgroup left behind with a live process (a daemon crash) shows up in
/// `list` and `remove_stale` kills the process and removes it.
pub fn remove_stale_cleans_a_leftover(driver: &dyn CgroupDriver) {
    let mut child = spawn(Behaviour::Sleep);
    let dirs = {
        let cgroup = driver.create("stale").expect("create cgroup");
        cgroup.attach(child.pid()).expect("attach child");
        child.start();
        cgroup.dirs()
        // The handle is dropped here, as if the daemon had crashed.
    };
    let names = driver.list().expect("list");
    assert!(names.contains(&"stale".to_string()), "{names:?}");
    driver.remove_stale("stale").expect("remove_stale");
    assert_eq!(child.wait(), Exit::Signal(libc::SIGKILL));
    assert_gone(&dirs);
    let names = driver.list().expect("list");
    assert!(!names.contains(&"stale".to_string()), "{names:?}");
}

/// `create` refuses a name whose cgroup still holds processes.
pub fn create_refuses_a_busy_leaf(driver: &dyn CgroupDriver) {
    let cgroup = driver.create("busy").expect("create cgroup");
    let mut child = spawn(Behaviour::Sleep);
    cgroup.attach(child.pid()).expect("attach child");
    child.start();
    match driver.create("busy") {
        Err(CgroupError::InUse { pids, .. }) => assert_eq!(pids, vec![child.pid()]),
        other => panic!("expected InUse, got {other:?}"),
    }
    cgroup.remove().expect("remove");
    assert_eq!(child.wait(), Exit::Signal(libc::SIGKILL));
}

pub fn assert_gone(dirs: &[PathBuf]) {
    for dir in dirs {
        assert!(!dir.exists(), "{} should be gone", dir.display());
    }
}
