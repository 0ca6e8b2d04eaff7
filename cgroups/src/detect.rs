//! Deciding which hierarchy to use and where corral's base lives, from the
//! text of `/proc/self/mountinfo` and `/proc/self/cgroup`. Pure, so every
//! host layout can be unit-tested from a copy of those two files.

use std::path::{Path, PathBuf};

use crate::error::CgroupError;
use crate::name::validate_name;
use crate::{DetectOptions, Version, VersionChoice};

/// The leaf a v2 daemon moves itself into inside a delegated cgroup, so
/// that its own cgroup holds no processes and may enable controllers for
/// its children (the "no internal processes" rule).
pub(crate) const SUPERVISOR_LEAF: &str = "supervisor";

/// The v1 controllers corral uses.
const V1_CONTROLLERS: [&str; 5] = ["memory", "pids", "cpu", "cpuacct", "freezer"];

/// What [`plan`] decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    V1(V1Plan),
    V2(V2Plan),
}

impl Plan {
    pub fn version(&self) -> Version {
        match self {
            Plan::V1(_) => Version::V1,
            Plan::V2(_) => Version::V2,
        }
    }
}

/// Mount points of the v1 hierarchies (None: not mounted). Co-mounted
/// controllers (`cpu,cpuacct`) share one mount point.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct V1Plan {
    pub memory: Option<PathBuf>,
    pub pids: Option<PathBuf>,
    pub cpu: Option<PathBuf>,
    pub cpuacct: Option<PathBuf>,
    pub freezer: Option<PathBuf>,
    /// The base is `<mount>/<base_name>` in each hierarchy.
    pub base_name: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct V2Plan {
    /// Where the cgroup2 hierarchy is mounted.
    pub mount: PathBuf,
    /// The directory of our own cgroup (from `0::<path>`), or, if we are
    /// already in its `supervisor` leaf, of the cgroup above that.
    pub own: PathBuf,
    /// True when `own` is below the top of the hierarchy we see (e.g.
    /// `/system.slice/corrald.service` with `Delegate=yes`): the daemon
    /// must move into `<own>/supervisor` before it may enable controllers
    /// in `<own>`.
    pub delegated: bool,
    /// `<own>/<base_name>`: the parent of every leaf.
    pub base: PathBuf,
}

impl V2Plan {
    pub fn supervisor_leaf(&self) -> PathBuf {
        self.own.join(SUPERVISOR_LEAF)
    }
}

/// One line of mountinfo, the fields we need.
#[derive(Debug)]
struct Mount {
    /// The path inside the filesystem that is mounted (field 4).
    root: String,
    mount_point: PathBuf,
    fstype: String,
    super_options: Vec<String>,
}

/// Decides version, mount points and base. See [`V2Plan`] for the
/// delegated layout.
pub fn plan(
    mountinfo: &str,
    proc_self_cgroup: &str,
    options: &DetectOptions,
) -> Result<Plan, CgroupError> {
    validate_name(&options.base_name)?;
    if options.base_name == SUPERVISOR_LEAF {
        return Err(CgroupError::InvalidName {
            name: options.base_name.clone(),
            reason: "it is the name of the leaf the v2 supervisor moves itself into",
        });
    }
    let mounts = parse_mountinfo(mountinfo)?;
    let v1 = v1_plan(&mounts, &options.base_name);
    let version = match options.version {
        VersionChoice::V1 => Version::V1,
        VersionChoice::V2 => Version::V2,
        VersionChoice::Auto if options.v2_root_override.is_some() => Version::V2,
        VersionChoice::Auto if v1.is_some() => Version::V1,
        VersionChoice::Auto => Version::V2,
    };
    match version {
        Version::V1 => v1.map(Plan::V1).ok_or_else(|| {
            CgroupError::Detect(format!(
                "no cgroup v1 hierarchy of {} is mounted (see /proc/self/mountinfo)",
                V1_CONTROLLERS.join(", ")
            ))
        }),
        Version::V2 => v2_plan(&mounts, proc_self_cgroup, options).map(Plan::V2),
    }
}

fn v1_plan(mounts: &[Mount], base_name: &str) -> Option<V1Plan> {
    // A hierarchy can be mounted more than once (bind mounts, containers);
    // the first mount of its whole tree wins, else the first mount at all.
    let find = |controller: &str| {
        let mut candidates = mounts
            .iter()
            .filter(|m| m.fstype == "cgroup" && m.super_options.iter().any(|o| o == controller));
        let first = candidates.next()?;
        let whole = std::iter::once(first)
            .chain(candidates)
            .find(|m| m.root == "/")
            .unwrap_or(first);
        Some(whole.mount_point.clone())
    };
    let plan = V1Plan {
        memory: find("memory"),
        pids: find("pids"),
        cpu: find("cpu"),
        cpuacct: find("cpuacct"),
        freezer: find("freezer"),
        base_name: base_name.to_string(),
    };
    let any = plan.memory.is_some()
        || plan.pids.is_some()
        || plan.cpu.is_some()
        || plan.cpuacct.is_some()
        || plan.freezer.is_some();
    any.then_some(plan)
}

fn v2_plan(
    mounts: &[Mount],
    proc_self_cgroup: &str,
    options: &DetectOptions,
) -> Result<V2Plan, CgroupError> {
    let (mount, mount_root) = match &options.v2_root_override {
        Some(root) => (root.clone(), "/".to_string()),
        None => {
            let mut cgroup2 = mounts.iter().filter(|m| m.fstype == "cgroup2");
            let first = cgroup2.next().ok_or_else(|| {
                CgroupError::Detect("no cgroup2 filesystem is mounted".to_string())
            })?;
            let chosen = std::iter::once(first)
                .chain(cgroup2)
                .find(|m| m.mount_point == Path::new("/sys/fs/cgroup"))
                .unwrap_or(first);
            (chosen.mount_point.clone(), chosen.root.clone())
        }
    };
    let own_path = v2_own_path(proc_self_cgroup)?;
    let relative = strip_mount_root(&own_path, &mount_root)?;
    let mut components: Vec<&str> = relative.split('/').filter(|c| !c.is_empty()).collect();
    for component in &components {
        if *component == "." || *component == ".." {
            return Err(CgroupError::Detect(format!(
                "our cgroup {own_path:?} in /proc/self/cgroup is outside the visible hierarchy"
            )));
        }
    }
    // Already prepared by an earlier `detect` in this process: the cgroup
    // we own is the one above the supervisor leaf.
    if components.last() == Some(&SUPERVISOR_LEAF) {
        components.pop();
    }
    let own = components.iter().fold(mount.clone(), |dir, c| dir.join(c));
    let base = own.join(&options.base_name);
    Ok(V2Plan {
        mount,
        delegated: !components.is_empty(),
        own,
        base,
    })
}

/// The path of the `0::<path>` line (the v2 hierarchy).
fn v2_own_path(proc_self_cgroup: &str) -> Result<String, CgroupError> {
    for line in proc_self_cgroup.lines() {
        let mut fields = line.splitn(3, ':');
        if let (Some("0"), Some(""), Some(path)) = (fields.next(), fields.next(), fields.next()) {
            if !path.starts_with('/') {
                return Err(CgroupError::Detect(format!(
                    "/proc/self/cgroup line {line:?} does not hold an absolute path"
                )));
            }
            return Ok(path.to_string());
        }
    }
    Err(CgroupError::Detect(
        "/proc/self/cgroup has no \"0::<path>\" line for the cgroup v2 hierarchy".to_string(),
    ))
}

/// `/proc/self/cgroup` paths are relative to the hierarchy's root; a mount
/// of a subtree (field 4 of mountinfo, e.g. `/docker/<id>` in a container
/// without a cgroup namespace) shows that subtree at its mount point.
fn strip_mount_root<'a>(own: &'a str, mount_root: &str) -> Result<&'a str, CgroupError> {
    if mount_root == "/" {
        return Ok(own);
    }
    let root = mount_root.trim_end_matches('/');
    match own.strip_prefix(root) {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => Ok(rest),
        _ => Err(CgroupError::Detect(format!(
            "our cgroup {own:?} is outside {root:?}, the part of the hierarchy that is mounted"
        ))),
    }
}

/// Whether any cgroup or cgroup2 mount in `mountinfo` carries the
/// `favordynmods` option (from the mount, or the kernel's
/// `CONFIG_CGROUP_FAVOR_DYNMODS` / `cgroup_favordynmods=` default).
///
/// The kernel's threadgroup lock is one for all hierarchies: while any of
/// them favours dynamic changes, a write to `cgroup.procs` (a
/// [`crate::Cgroup::attach`]) no longer waits for an RCU grace period
/// before taking it, at the price of slightly dearer forks and exits
/// host-wide. Unreadable mountinfo counts as no.
pub fn favors_dynamic_changes(mountinfo: &str) -> bool {
    parse_mountinfo(mountinfo).is_ok_and(|mounts| {
        mounts.iter().any(|m| {
            matches!(m.fstype.as_str(), "cgroup" | "cgroup2")
                && m.super_options.iter().any(|o| o == "favordynmods")
        })
    })
}

fn parse_mountinfo(text: &str) -> Result<Vec<Mount>, CgroupError> {
    let mut mounts = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let malformed = |what: &str| {
            CgroupError::Detect(format!(
                "malformed /proc/self/mountinfo line {}: {what}: {line:?}",
                index + 1
            ))
        };
        let fields: Vec<&str> = line.split(' ').collect();
        // id parent major:minor root mount-point options [optional...] - fstype source super
        let separator = fields
            .iter()
            .skip(6)
            .position(|f| *f == "-")
            .map(|p| p + 6)
            .ok_or_else(|| malformed("no \" - \" separator"))?;
        let after = &fields[separator + 1..];
        if after.len() < 3 {
            return Err(malformed("fewer than 3 fields after the separator"));
        }
        mounts.push(Mount {
            root: unescape(fields[3]),
            mount_point: PathBuf::from(unescape(fields[4])),
            fstype: after[0].to_string(),
            super_options: after[2].split(',').map(str::to_string).collect(),
        });
    }
    Ok(mounts)
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            let digits = &bytes[i + 1..i + 4];
            if digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let value = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                if let Ok(byte) = u8::try_from(value) {
                    out.push(byte);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This build host: v1 controllers each on their own mount, systemd's
    /// named hierarchy, and an empty cgroup2 at /sys/fs/cgroup/unified.
    const HOST_MOUNTINFO: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
23 27 0:22 / /sys rw,relatime - sysfs sysfs rw
24 27 0:6 / /dev rw,relatime - devtmpfs devtmpfs rw,size=12334464k,nr_inodes=3083616,mode=755
25 24 0:23 / /dev/shm rw,relatime - tmpfs tmpfs rw,size=24683656k
26 24 0:24 / /dev/pts rw,relatime - devpts devpts rw,mode=600,ptmxmode=000
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard,resv_strict,resuid=65534,resgid=65534
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const HOST_PROC_SELF_CGROUP: &str = "\
9:name=systemd:/
8:pids:/
7:blkio:/
6:freezer:/
5:devices:/
4:memory:/process_api/b820760aa5c4e5b02cfe6d46d574caad
3:cpuset:/
2:cpuacct:/
1:cpu:/
0::/
";

    /// A systemd v1 host of the Ubuntu 18.04 / CentOS 7 kind: cpu and
    /// cpuacct co-mounted, optional fields present, hybrid unified mount.
    const COMOUNTED_MOUNTINFO: &str = "\
25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
30 0 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
34 25 0:28 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
35 34 0:29 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
36 34 0:30 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd
39 34 0:33 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,cpu,cpuacct
40 34 0:34 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,memory
41 34 0:35 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:17 - cgroup cgroup rw,pids
42 34 0:36 / /sys/fs/cgroup/freezer rw,nosuid,nodev,noexec,relatime shared:18 - cgroup cgroup rw,freezer
";
    const COMOUNTED_PROC_SELF_CGROUP: &str = "\
12:pids:/system.slice/corrald.service
5:memory:/system.slice/corrald.service
4:cpu,cpuacct:/system.slice/corrald.service
3:freezer:/
1:name=systemd:/system.slice/corrald.service
0::/system.slice/corrald.service
";

    /// A pure v2 host (Debian 12, Fedora): one cgroup2 mount.
    const V2_MOUNTINFO: &str = "\
22 28 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
28 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw,errors=remount-ro
26 22 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    fn options(base: &str) -> DetectOptions {
        DetectOptions {
            base_name: base.to_string(),
            ..DetectOptions::default()
        }
    }

    fn v1(plan: Result<Plan, CgroupError>) -> V1Plan {
        match plan.expect("plan should succeed") {
            Plan::V1(plan) => plan,
            other => panic!("expected a v1 plan, got {other:?}"),
        }
    }

    fn v2(plan: Result<Plan, CgroupError>) -> V2Plan {
        match plan.expect("plan should succeed") {
            Plan::V2(plan) => plan,
            other => panic!("expected a v2 plan, got {other:?}"),
        }
    }

    #[test]
    fn favordynmods_is_read_from_cgroup_mounts_only() {
        let v1 = "35 24 0:30 / /sys/fs/cgroup/cpu rw,relatime shared:13 - cgroup cgroup rw,cpu\n";
        let v2_fast = "40 24 0:35 / /sys/fs/cgroup rw shared:9 - cgroup2 cgroup2 rw,nsdelegate,favordynmods,memory_recursiveprot\n";
        let other = "41 24 0:36 / /mnt rw - tmpfs favordynmods rw,favordynmods\n";
        assert!(!favors_dynamic_changes(v1));
        assert!(favors_dynamic_changes(&format!("{v1}{v2_fast}")));
        // Only the super options of a cgroup mount count.
        assert!(!favors_dynamic_changes(other));
        assert!(!favors_dynamic_changes("garbage without a separator\n"));
    }

    #[test]
    fn this_host_is_v1_despite_the_empty_unified_mount() {
        let plan = v1(plan(
            HOST_MOUNTINFO,
            HOST_PROC_SELF_CGROUP,
            &options("corral"),
        ));
        assert_eq!(
            plan,
            V1Plan {
                memory: Some("/sys/fs/cgroup/memory".into()),
                pids: Some("/sys/fs/cgroup/pids".into()),
                cpu: Some("/sys/fs/cgroup/cpu".into()),
                cpuacct: Some("/sys/fs/cgroup/cpuacct".into()),
                freezer: Some("/sys/fs/cgroup/freezer".into()),
                base_name: "corral".into(),
            }
        );
    }

    #[test]
    fn co_mounted_cpu_and_cpuacct_share_one_hierarchy() {
        let plan = v1(plan(
            COMOUNTED_MOUNTINFO,
            COMOUNTED_PROC_SELF_CGROUP,
            &options("corral"),
        ));
        let cpu: PathBuf = "/sys/fs/cgroup/cpu,cpuacct".into();
        assert_eq!(plan.cpu.as_ref(), Some(&cpu));
        assert_eq!(plan.cpuacct.as_ref(), Some(&cpu));
        assert_eq!(plan.memory, Some("/sys/fs/cgroup/memory".into()));
        assert_eq!(plan.freezer, Some("/sys/fs/cgroup/freezer".into()));
    }

    #[test]
    fn hybrid_host_can_be_forced_to_its_unified_mount() {
        let opts = DetectOptions {
            version: VersionChoice::V2,
            ..options("corral")
        };
        let plan = v2(plan(HOST_MOUNTINFO, HOST_PROC_SELF_CGROUP, &opts));
        assert_eq!(plan.mount, PathBuf::from("/sys/fs/cgroup/unified"));
        assert_eq!(plan.base, PathBuf::from("/sys/fs/cgroup/unified/corral"));
        assert!(!plan.delegated);
    }

    #[test]
    fn pure_v2_in_the_root_cgroup_uses_a_base_under_the_mount() {
        let plan = v2(plan(V2_MOUNTINFO, "0::/\n", &options("corral")));
        assert_eq!(
            plan,
            V2Plan {
                mount: "/sys/fs/cgroup".into(),
                own: "/sys/fs/cgroup".into(),
                delegated: false,
                base: "/sys/fs/cgroup/corral".into(),
            }
        );
    }

    #[test]
    fn pure_v2_under_systemd_delegation_uses_our_own_cgroup() {
        let plan = v2(plan(
            V2_MOUNTINFO,
            "0::/system.slice/corrald.service\n",
            &options("corral"),
        ));
        assert_eq!(
            plan.own,
            PathBuf::from("/sys/fs/cgroup/system.slice/corrald.service")
        );
        assert!(plan.delegated);
        assert_eq!(
            plan.base,
            PathBuf::from("/sys/fs/cgroup/system.slice/corrald.service/corral")
        );
        assert_eq!(
            plan.supervisor_leaf(),
            PathBuf::from("/sys/fs/cgroup/system.slice/corrald.service/supervisor")
        );
    }

    #[test]
    fn already_in_the_supervisor_leaf_plans_the_same_layout() {
        let before = v2(plan(
            V2_MOUNTINFO,
            "0::/system.slice/corrald.service\n",
            &options("corral"),
        ));
        let after = v2(plan(
            V2_MOUNTINFO,
            "0::/system.slice/corrald.service/supervisor\n",
            &options("corral"),
        ));
        assert_eq!(before, after);
    }

    #[test]
    fn v2_subtree_mount_is_resolved_against_its_root() {
        let mountinfo = "\
1 0 0:40 /docker/abc /sys/fs/cgroup rw - cgroup2 cgroup2 rw
";
        let plan = v2(plan(mountinfo, "0::/docker/abc\n", &options("corral")));
        assert_eq!(plan.own, PathBuf::from("/sys/fs/cgroup"));
        assert!(!plan.delegated);
        let plan = v2(super::plan(
            mountinfo,
            "0::/docker/abc/inner\n",
            &options("corral"),
        ));
        assert_eq!(plan.own, PathBuf::from("/sys/fs/cgroup/inner"));
        assert!(plan.delegated);
        let err = super::plan(mountinfo, "0::/docker/abcdef\n", &options("corral"))
            .expect_err("a cgroup outside the mounted subtree must be rejected");
        assert!(err.to_string().contains("outside"), "{err}");
    }

    #[test]
    fn override_roots_v2_anywhere() {
        let opts = DetectOptions {
            v2_root_override: Some("/tmp/fake".into()),
            ..options("corral-test")
        };
        // Override wins over the v1 mounts of this host.
        let plan = v2(plan(HOST_MOUNTINFO, "0::/a/b\n", &opts));
        assert_eq!(plan.mount, PathBuf::from("/tmp/fake"));
        assert_eq!(plan.own, PathBuf::from("/tmp/fake/a/b"));
        assert_eq!(plan.base, PathBuf::from("/tmp/fake/a/b/corral-test"));
        assert!(plan.delegated);
    }

    #[test]
    fn forcing_v1_on_a_pure_v2_host_fails_with_the_reason() {
        let opts = DetectOptions {
            version: VersionChoice::V1,
            ..options("corral")
        };
        let err = plan(V2_MOUNTINFO, "0::/\n", &opts).expect_err("no v1 hierarchies");
        assert!(err.to_string().contains("no cgroup v1 hierarchy"), "{err}");
    }

    #[test]
    fn no_cgroup_mounts_at_all_fails() {
        let mountinfo = "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n";
        let err = plan(mountinfo, "0::/\n", &options("corral")).expect_err("nothing mounted");
        assert!(err.to_string().contains("no cgroup2 filesystem"), "{err}");
    }

    #[test]
    fn missing_v2_line_in_proc_self_cgroup_fails() {
        let err =
            plan(V2_MOUNTINFO, "1:name=systemd:/\n", &options("corral")).expect_err("no 0:: line");
        assert!(err.to_string().contains("0::"), "{err}");
    }

    #[test]
    fn escaped_path_components_are_rejected() {
        let err = plan(V2_MOUNTINFO, "0::/../../x\n", &options("corral"))
            .expect_err("a path out of the hierarchy");
        assert!(err.to_string().contains("outside"), "{err}");
    }

    #[test]
    fn bad_base_names_are_rejected() {
        for name in ["", "../x", "a/b", "cgroup.procs", "supervisor"] {
            let err = plan(V2_MOUNTINFO, "0::/\n", &options(name))
                .expect_err("bad base name must be rejected");
            assert!(
                matches!(err, CgroupError::InvalidName { .. }),
                "{name}: {err}"
            );
        }
    }

    #[test]
    fn malformed_mountinfo_names_the_line() {
        let err = plan("1 2 3\n", "0::/\n", &options("corral")).expect_err("malformed");
        assert!(err.to_string().contains("line 1"), "{err}");
    }

    #[test]
    fn octal_escapes_in_mount_points_are_decoded() {
        let mountinfo = "1 0 0:40 / /mnt/my\\040cgroups rw - cgroup2 cgroup2 rw\n";
        let plan = v2(plan(mountinfo, "0::/\n", &options("corral")));
        assert_eq!(plan.mount, PathBuf::from("/mnt/my cgroups"));
        assert_eq!(unescape("a\\134b\\011c"), "a\\b\tc");
        assert_eq!(unescape("trailing\\04"), "trailing\\04");
    }
}
