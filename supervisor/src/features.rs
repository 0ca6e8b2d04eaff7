//! What the running kernel offers: Landlock ABI, seccomp, user namespaces
//! and cgroup controllers. The policy compiler compares these with the
//! policy's `[features]` requirements.
//!
//! `CORRAL_MASK_FEATURES=landlock_net,cgroup_swap` makes corral treat the
//! named features as missing. It exists so the `required` / `best_effort`
//! behaviour can be exercised (and rehearsed by operators) on a kernel that
//! has everything.

use serde::Serialize;
use std::collections::BTreeSet;

/// The sysctl the trampoline sets to 2 in the plugin's pid namespace.
pub const MEMFD_NOEXEC_SYSCTL: &str = "/proc/sys/vm/memfd_noexec";

/// Environment variable listing features to treat as missing.
pub const MASK_ENV: &str = "CORRAL_MASK_FEATURES";

/// Names accepted in [`MASK_ENV`] and in the policy's `[features]` table.
pub const FEATURE_NAMES: &[&str] = &[
    "landlock",
    "landlock_net",
    "landlock_scope",
    "seccomp",
    "user_namespace",
    "cgroup_memory",
    "cgroup_swap",
    "cgroup_pids",
    "cgroup_cpu",
    "memfd_noexec",
];

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CgroupFeatures {
    pub memory: bool,
    pub swap: bool,
    pub pids: bool,
    pub cpu: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KernelFeatures {
    /// 0 when Landlock is unavailable.
    pub landlock_abi: u32,
    pub seccomp: bool,
    pub user_namespaces: bool,
    /// `vm.memfd_noexec` exists (per pid namespace since Linux 6.3).
    pub memfd_noexec: bool,
    pub cgroup: CgroupFeatures,
    /// A cgroup hierarchy is mounted with `favordynmods`: moving a process
    /// into a cgroup then takes the kernel's threadgroup lock without first
    /// waiting for an RCU grace period. Without it, each child moved into
    /// its cgroup (v1; v2 creates it inside) waits for one (~12 ms on a
    /// quiet 2-CPU host), most of an isolated start
    /// ([`corral_cgroups::favors_dynamic_changes`]).
    pub cgroup_favordynmods: bool,
    /// Features masked by [`MASK_ENV`].
    pub masked: BTreeSet<String>,
}

impl KernelFeatures {
    /// Probes the kernel. `cgroup` comes from the cgroup driver in use.
    pub fn detect(cgroup: CgroupFeatures) -> KernelFeatures {
        let mut features = KernelFeatures {
            landlock_abi: landlock_abi(),
            seccomp: seccomp_available(),
            user_namespaces: user_namespaces_available(),
            memfd_noexec: std::path::Path::new(MEMFD_NOEXEC_SYSCTL).exists(),
            cgroup,
            cgroup_favordynmods: std::fs::read_to_string("/proc/self/mountinfo")
                .is_ok_and(|m| corral_cgroups::favors_dynamic_changes(&m)),
            masked: BTreeSet::new(),
        };
        if let Ok(mask) = std::env::var(MASK_ENV) {
            features.mask(&mask);
        }
        features
    }

    /// Everything present: for compiling policies to show or test, off the
    /// machine that will run them.
    pub fn all() -> KernelFeatures {
        KernelFeatures {
            landlock_abi: 7,
            seccomp: true,
            user_namespaces: true,
            memfd_noexec: true,
            cgroup: CgroupFeatures {
                memory: true,
                swap: true,
                pids: true,
                cpu: true,
            },
            cgroup_favordynmods: true,
            masked: BTreeSet::new(),
        }
    }

    /// Treats the comma-separated features as missing. Unknown names are
    /// logged and ignored, so a typo cannot silently mask nothing unnoticed.
    pub fn mask(&mut self, list: &str) {
        for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if !FEATURE_NAMES.contains(&name) {
                tracing::warn!(
                    feature = name,
                    "unknown feature in {MASK_ENV}; known: {}",
                    FEATURE_NAMES.join(", ")
                );
                continue;
            }
            self.masked.insert(name.to_string());
        }
    }

    /// Whether `feature` (one of [`FEATURE_NAMES`]) is usable.
    pub fn has(&self, feature: &str) -> bool {
        if self.masked.contains(feature) {
            return false;
        }
        match feature {
            "landlock" => self.landlock_abi >= 1,
            "landlock_net" => self.landlock_abi >= 4,
            "landlock_scope" => self.landlock_abi >= 6,
            "seccomp" => self.seccomp,
            "user_namespace" => self.user_namespaces,
            "cgroup_memory" => self.cgroup.memory,
            "cgroup_swap" => self.cgroup.swap,
            "cgroup_pids" => self.cgroup.pids,
            "cgroup_cpu" => self.cgroup.cpu,
            "memfd_noexec" => self.memfd_noexec,
            _ => false,
        }
    }
}

/// What the cgroup hierarchy would offer, without creating or moving
/// anything (for `corral check` and `policy show`; the daemon asks its
/// prepared driver instead).
pub fn probe_cgroups() -> CgroupFeatures {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let Ok(plan) =
        corral_cgroups::plan(&mountinfo, &own, &corral_cgroups::DetectOptions::default())
    else {
        return CgroupFeatures::default();
    };
    let has = |dir: &Option<std::path::PathBuf>, file: &str| {
        dir.as_ref().is_some_and(|d| d.join(file).exists())
    };
    match plan {
        corral_cgroups::Plan::V1(v1) => CgroupFeatures {
            memory: has(&v1.memory, "memory.limit_in_bytes"),
            swap: has(&v1.memory, "memory.memsw.limit_in_bytes"),
            pids: has(&v1.pids, "pids.max") || v1.pids.is_some(),
            cpu: has(&v1.cpu, "cpu.cfs_quota_us"),
        },
        corral_cgroups::Plan::V2(v2) => {
            // Controllers available to our subtree.
            let controllers =
                std::fs::read_to_string(v2.own.join("cgroup.controllers")).unwrap_or_default();
            let listed = |c: &str| controllers.split_whitespace().any(|x| x == c);
            CgroupFeatures {
                memory: listed("memory"),
                // memory.swap.max appears in every non-root cgroup when the
                // kernel accounts swap; our own cgroup is non-root when
                // delegated, and the base is non-root once created.
                swap: listed("memory")
                    && (v2.own.join("memory.swap.max").exists()
                        || v2.base.join("memory.swap.max").exists()),
                pids: listed("pids"),
                cpu: listed("cpu"),
            }
        }
    }
}

fn landlock_abi() -> u32 {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: with a null attribute and size 0 this only queries the ABI.
    let abi = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    u32::try_from(abi).unwrap_or(0)
}

fn seccomp_available() -> bool {
    // SAFETY: PR_GET_SECCOMP takes no pointer arguments.
    let mode = unsafe { libc::prctl(libc::PR_GET_SECCOMP, 0, 0, 0, 0) };
    mode >= 0 && std::path::Path::new("/proc/sys/kernel/seccomp/actions_avail").exists()
}

fn user_namespaces_available() -> bool {
    std::fs::read_to_string("/proc/sys/user/max_user_namespaces")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .is_some_and(|n| n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_kernel_has_what_corral_relies_on() {
        let f = KernelFeatures::detect(CgroupFeatures::default());
        assert!(
            f.landlock_abi >= 1,
            "Landlock is not enabled on this kernel"
        );
        assert!(f.seccomp);
        assert!(f.user_namespaces);
    }

    #[test]
    fn masking_hides_features() {
        let mut f = KernelFeatures::all();
        assert!(f.has("landlock_net"));
        f.mask("landlock_net, cgroup_swap,bogus");
        assert!(!f.has("landlock_net"));
        assert!(!f.has("cgroup_swap"));
        assert!(f.has("landlock"));
        assert_eq!(f.masked.len(), 2);
    }
}
