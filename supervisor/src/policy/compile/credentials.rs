//! Credentials and rlimits: the uid and gid the plugin runs as (never 0),
//! and the per-process resource limits the trampoline lowers.

use super::features::Uses;
use super::limits::Limits;
use super::{Context, Recorder};
use corral_protocol::policy::{Credentials, Rlimit, RlimitSpec};

pub(super) fn credentials(cx: &Context<'_>, rec: &mut Recorder<'_>) -> Credentials {
    let range = &cx.policy.sandbox.uid_range;
    rec.cite_policy(
        "credentials",
        format!("a uid/gid of its own per instance from {range}"),
        "sandbox.uid_range",
    );
    Credentials {
        uid: range.first,
        gid: range.first,
    }
}

pub(super) fn rlimits(limits: &Limits, uses: &Uses, rec: &mut Recorder<'_>) -> Vec<RlimitSpec> {
    let fixed = |resource, value| RlimitSpec {
        resource,
        soft: value,
        hard: value,
    };
    let mut rlimits = vec![
        fixed(Rlimit::Nofile, limits.open_files),
        fixed(Rlimit::Core, 0),
        fixed(Rlimit::Fsize, limits.disk.0),
        fixed(Rlimit::Memlock, 0),
        fixed(Rlimit::Msgqueue, 0),
        fixed(Rlimit::Rtprio, 0),
        fixed(Rlimit::Nice, 0),
    ];
    if !uses.cgroup_pids {
        // Without the pids controller, the per-uid process limit is the
        // fallback (each instance has a uid of its own).
        rlimits.push(fixed(Rlimit::Nproc, limits.pids));
    }
    rec.builtin(
        "rlimits",
        "NOFILE=open_files, FSIZE=disk, CORE/MEMLOCK/MSGQUEUE/RTPRIO/NICE=0",
        "always",
    );
    rlimits
}
