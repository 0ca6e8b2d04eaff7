//! Kernel features: which ones this plugin's confinement uses. A missing
//! feature fails the load when the policy marks it `required` and is a
//! warning when `best_effort`. Decided after permissions (Landlock's
//! network rules matter only for a plugin granted `net = "connect"`) and
//! before any mechanism that relies on a feature.

use super::{CompileError, Context, Recorder};
use crate::features::KernelFeatures;
use crate::policy::NetLevel;

/// The features in use.
pub(super) struct Uses {
    pub cgroup_memory: bool,
    pub cgroup_swap: bool,
    pub cgroup_pids: bool,
    pub cgroup_cpu: bool,
    pub user_namespace: bool,
    pub landlock: bool,
    pub landlock_net: bool,
    pub landlock_scope: bool,
    pub seccomp: bool,
    pub memfd_noexec: bool,
}

pub(super) fn select(
    cx: &Context<'_>,
    features: &KernelFeatures,
    net_level: NetLevel,
    rec: &mut Recorder<'_>,
) -> Result<Uses, CompileError> {
    let req = &cx.policy.features;
    Ok(Uses {
        cgroup_memory: rec.feature(features, "cgroup_memory", req.cgroup_memory)?,
        cgroup_swap: rec.feature(features, "cgroup_swap", req.cgroup_swap)?,
        cgroup_pids: rec.feature(features, "cgroup_pids", req.cgroup_pids)?,
        cgroup_cpu: rec.feature(features, "cgroup_cpu", req.cgroup_cpu)?,
        user_namespace: cx.policy.sandbox.user_namespace
            && rec.feature(features, "user_namespace", req.user_namespace)?,
        landlock: rec.feature(features, "landlock", req.landlock)?,
        landlock_net: net_level == NetLevel::Connect
            && rec.feature(features, "landlock_net", req.landlock_net)?,
        landlock_scope: rec.feature(features, "landlock_scope", req.landlock_scope)?,
        seccomp: rec.feature(features, "seccomp", req.seccomp)?,
        memfd_noexec: rec.feature(features, "memfd_noexec", req.memfd_noexec)?,
    })
}
