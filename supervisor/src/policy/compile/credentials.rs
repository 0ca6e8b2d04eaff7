//! Credentials and rlimits: the uid and gid the plugin runs as (never 0),
//! and the per-process resource limits the trampoline lowers.

use super::features::Uses;
use super::limits::Limits;
use super::permissions::Grants;
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

pub(super) fn rlimits(
    limits: &Limits,
    grants: &Grants,
    uses: &Uses,
    rec: &mut Recorder<'_>,
) -> Vec<RlimitSpec> {
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
    rec.builtin(
        "rlimits",
        "NOFILE=open_files, FSIZE=disk, CORE/MEMLOCK/MSGQUEUE/RTPRIO/NICE=0",
        "always",
    );
    // RLIMIT_NPROC counts the tasks (threads included) of the plugin's
    // uid, which is its own per instance. Without exec the plugin is one
    // process, so its tasks are its threads: the limit is
    // `permissions.threads`, and a thread past it fails with EAGAIN.
    // With exec, the pids limit counts processes and threads together;
    // without the pids controller, the same rlimit is its fallback.
    if !grants.exec {
        rlimits.push(fixed(Rlimit::Nproc, u64::from(grants.threads)));
        rec.builtin(
            "rlimits.nproc",
            grants.threads,
            "permissions.threads: every thread is a task of the plugin's own uid, and exec is not granted",
        );
    } else if !uses.cgroup_pids {
        rlimits.push(fixed(Rlimit::Nproc, limits.pids));
        rec.builtin(
            "rlimits.nproc",
            limits.pids,
            "limits.pids, without the pids cgroup controller",
        );
    }
    rlimits
}
