//! Namespaces: always a new pid and mount namespace; a user namespace
//! when the policy asks and the kernel has it; an empty network namespace
//! unless the network is granted; empty IPC and UTS namespaces, shared by
//! all plugins (pre-made, joined by fd) or fresh per plugin.

use super::features::Uses;
use super::{Context, Recorder};
use crate::policy::NetLevel;
use corral_protocol::policy::{NamespaceSource, Namespaces};

/// Fds on which the trampoline finds pre-made namespaces to join.
pub const JOIN_NET_FD: i32 = 4;
pub const JOIN_IPC_FD: i32 = 5;
pub const JOIN_UTS_FD: i32 = 6;

pub(super) fn plan(
    cx: &Context<'_>,
    net_level: NetLevel,
    uses: &Uses,
    rec: &mut Recorder<'_>,
) -> Namespaces {
    let share = cx.policy.sandbox.share_empty_namespaces;
    let empty = |fd: i32| {
        if share {
            NamespaceSource::Join { fd }
        } else {
            NamespaceSource::Fresh
        }
    };
    let namespaces = Namespaces {
        user: uses.user_namespace,
        pid: true,
        mount: true,
        net: if net_level == NetLevel::None {
            empty(JOIN_NET_FD)
        } else {
            NamespaceSource::Host
        },
        ipc: empty(JOIN_IPC_FD),
        uts: empty(JOIN_UTS_FD),
        cgroup: true,
        memfd_noexec: uses.memfd_noexec,
    };
    rec.cite_policy(
        "namespaces.net",
        match namespaces.net {
            NamespaceSource::Host => "host (network granted)",
            NamespaceSource::Fresh => "new, empty",
            NamespaceSource::Join { .. } => "shared, empty",
        },
        "sandbox.share_empty_namespaces",
    );
    rec.cite_policy(
        "namespaces.user",
        uses.user_namespace,
        "sandbox.user_namespace",
    );
    rec.builtin("namespaces.pid,mount", "new", "always");
    rec.builtin(
        "namespaces.cgroup",
        "new",
        "always: /proc/self/cgroup shows / and not the host's cgroup tree",
    );
    if uses.memfd_noexec {
        rec.builtin(
            "vm.memfd_noexec",
            "2 (no memfd is ever executable)",
            "always: nothing writable is executable",
        );
    }
    namespaces
}
