//! Limits: the manifest's asks (or the policy's defaults), clamped to the
//! caps (or this plugin's overrides of them) with a warning, never
//! refused. Then the cgroup limits built from them, once the kernel
//! features are known.

use super::features::Uses;
use super::{CompileError, Context, Recorder};
use corral_protocol::policy::ResourceLimits;
use corral_protocol::units::{ByteSize, CpuShare, HumanDuration};
use std::fmt::Display;

/// CFS bandwidth period used for CPU shares.
pub const CPU_PERIOD_US: u64 = 100_000;

/// The effective limits.
pub(super) struct Limits {
    pub memory: ByteSize,
    pub cpu: CpuShare,
    pub pids: u64,
    pub timeout: HumanDuration,
    pub open_files: u64,
    pub disk: ByteSize,
    pub instances: u32,
}

/// A limit: the manifest's ask or the policy default, clamped to the cap.
fn limit<T: PartialOrd + Copy + Display>(
    rec: &mut Recorder<'_>,
    cx: &Context<'_>,
    name: &str,
    asked: Option<T>,
    default: T,
    (cap, cap_key): (T, String),
) -> T {
    let manifest_key = format!("limits.{name}");
    let rule = format!("limits.{name}");
    match asked {
        Some(v) if v > cap => {
            rec.warnings.push(format!(
                "{manifest_key} = {v} asked for more than the cap {cap}; clamped ({})",
                cx.policy.cite(&cap_key)
            ));
            rec.cite_policy(&rule, cap, &cap_key);
            cap
        }
        Some(v) => {
            rec.cite_manifest(&rule, v, &manifest_key);
            v
        }
        None if default > cap => {
            rec.cite_policy(&rule, cap, &cap_key);
            cap
        }
        None => {
            rec.cite_policy(&rule, default, &format!("defaults.{name}"));
            default
        }
    }
}

/// Clamps every limit; `threads` (already granted) must fit in the pids
/// limit, since every thread is a task.
pub(super) fn clamp(
    cx: &Context<'_>,
    threads: u32,
    rec: &mut Recorder<'_>,
) -> Result<Limits, CompileError> {
    let asked = &cx.manifest.limits;
    let d = &cx.policy.defaults;
    let memory = limit(
        rec,
        cx,
        "memory",
        asked.memory,
        d.memory,
        cx.cap("memory", |c| c.memory, |o| o.memory),
    );
    let cpu = limit(
        rec,
        cx,
        "cpu",
        asked.cpu,
        d.cpu,
        cx.cap("cpu", |c| c.cpu, |o| o.cpu),
    );
    let pids = limit(
        rec,
        cx,
        "pids",
        asked.pids,
        d.pids,
        cx.cap("pids", |c| c.pids, |o| o.pids),
    );
    let timeout = limit(
        rec,
        cx,
        "timeout",
        asked.timeout,
        d.timeout,
        cx.cap("timeout", |c| c.timeout, |o| o.timeout),
    );
    let open_files = limit(
        rec,
        cx,
        "open_files",
        asked.open_files,
        d.open_files,
        cx.cap("open_files", |c| c.open_files, |o| o.open_files),
    );
    let disk = limit(
        rec,
        cx,
        "disk",
        asked.disk,
        d.disk,
        cx.cap("disk", |c| c.disk, |o| o.disk),
    );
    let instances = instances(cx, rec);
    if pids < u64::from(threads) {
        return Err(cx.manifest_error(
            "limits.pids",
            format!("the effective pids limit {pids} is below permissions.threads = {threads}"),
        ));
    }
    Ok(Limits {
        memory,
        cpu,
        pids,
        timeout,
        open_files,
        disk,
        instances,
    })
}

/// `plugin.instances`, clamped to the cap like a limit.
fn instances(cx: &Context<'_>, rec: &mut Recorder<'_>) -> u32 {
    let asked = cx.manifest.plugin.instances;
    let (cap, cap_key) = cx.cap("instances", |c| c.instances, |o| o.instances);
    if asked > cap {
        rec.warnings.push(format!(
            "plugin.instances = {asked} is above the cap {cap}; clamped ({})",
            cx.policy.cite(&cap_key)
        ));
        rec.cite_policy("instances", cap, &cap_key);
        cap
    } else {
        rec.cite_manifest("instances", asked, "plugin.instances");
        asked
    }
}

/// The cgroup limits, each only where its controller is in use.
pub(super) fn resources(
    cx: &Context<'_>,
    limits: &Limits,
    uses: &Uses,
    rec: &mut Recorder<'_>,
) -> ResourceLimits {
    let policy = cx.policy;
    let req = &policy.features;
    let resources = ResourceLimits {
        memory_max: uses.cgroup_memory.then_some(limits.memory.0),
        swap_max: uses.cgroup_swap.then_some(policy.sandbox.swap.0),
        pids_max: uses.cgroup_pids.then_some(limits.pids),
        cpu_quota_us: uses
            .cgroup_cpu
            .then_some(limits.cpu.quota_us(CPU_PERIOD_US)),
        cpu_period_us: CPU_PERIOD_US,
        memory_requirement: Some(req.cgroup_memory),
        swap_requirement: Some(req.cgroup_swap),
        pids_requirement: Some(req.cgroup_pids),
        cpu_requirement: Some(req.cgroup_cpu),
    };
    if uses.cgroup_swap {
        rec.cite_policy("cgroup.swap", policy.sandbox.swap, "sandbox.swap");
    }
    resources
}
