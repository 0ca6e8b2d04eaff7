//! The seccomp plan: the allowed system calls (the trampoline's last
//! calls, the base set, `exec` and `network` groups when granted, the
//! policy's extra allows and this plugin's own), less the denied ones,
//! with the argument rules for processes and sockets. The BPF program
//! itself is built by [`crate::policy::seccomp`].

use super::entry::Package;
use super::features::Uses;
use super::permissions::Grants;
use super::{CompileError, Context, Recorder};
use crate::policy::NetLevel;
use crate::policy::seccomp::{SeccompPlan, SocketRule};
use corral_protocol::policy::SeccompProgram;
use std::collections::BTreeSet;

/// System calls always allowed: the trampoline's last steps after the
/// filter is installed (chdir, execve) and its failure report (write,
/// exit_group).
pub const TRAMPOLINE_SYSCALLS: &[&str] =
    &["chdir", "close", "execve", "exit_group", "sendmsg", "write"];

pub(super) fn plan(
    cx: &Context<'_>,
    package: &Package,
    grants: &Grants,
    uses: &Uses,
    rec: &mut Recorder<'_>,
) -> Result<Option<SeccompProgram>, CompileError> {
    if !uses.seccomp {
        return Ok(None);
    }
    let policy = cx.policy;
    let groups = policy.groups();
    let mut sources: Vec<(String, &Vec<String>)> =
        vec![("seccomp.base".into(), &policy.seccomp.base)];
    if grants.exec {
        sources.push(("seccomp.exec".into(), &policy.seccomp.exec));
    }
    if grants.net_level > NetLevel::None {
        sources.push(("seccomp.network".into(), &policy.seccomp.network));
    }
    sources.push(("seccomp.allow".into(), &policy.seccomp.allow));
    if let Some(launch) = &package.script {
        sources.push((launch.syscalls.0.clone(), &launch.syscalls.1));
    }
    if let Some(r) = cx.rules {
        sources.push((cx.rules_key("syscalls"), &r.syscalls));
    }
    // What the trampoline itself does after installing the filter: a
    // policy whose groups leave these out would kill every plugin at
    // its start instead of running it.
    let mut allowed: BTreeSet<String> = TRAMPOLINE_SYSCALLS.iter().map(|s| s.to_string()).collect();
    rec.builtin(
        "seccomp.allow",
        TRAMPOLINE_SYSCALLS.join(" "),
        "the sandbox execs the plugin after installing the filter",
    );
    for (key, names) in &sources {
        if names.is_empty() {
            continue;
        }
        for n in names.iter() {
            allowed.extend(groups.resolve(n).map_err(CompileError::Seccomp)?);
        }
        rec.cite_policy("seccomp.allow", names.join(" "), key);
    }
    for n in &policy.seccomp.deny {
        for s in groups.resolve(n).map_err(CompileError::Seccomp)? {
            if !TRAMPOLINE_SYSCALLS.contains(&s.as_str()) {
                allowed.remove(&s);
            }
        }
    }
    if !policy.seccomp.deny.is_empty() {
        rec.cite_policy(
            "seccomp.deny",
            policy.seccomp.deny.join(" "),
            "seccomp.deny",
        );
    }
    let plan = SeccompPlan {
        allowed,
        processes: grants.exec,
        socket: match grants.net_level {
            NetLevel::None => SocketRule::Deny,
            NetLevel::Connect => SocketRule::TcpOnly,
            NetLevel::Host => SocketRule::Any,
        },
        default_action: cx
            .rules
            .and_then(|r| r.seccomp_action)
            .unwrap_or(policy.seccomp.default_action),
    };
    match cx.rules.and_then(|r| r.seccomp_action) {
        Some(action) => rec.cite_policy(
            "seccomp.default_action",
            format!("{action:?}").to_lowercase(),
            &cx.rules_key("seccomp_action"),
        ),
        None => rec.cite_policy(
            "seccomp.default_action",
            format!("{:?}", policy.seccomp.default_action).to_lowercase(),
            "seccomp.default_action",
        ),
    }
    crate::policy::seccomp::build(&plan)
        .map(Some)
        .map_err(CompileError::Seccomp)
}
