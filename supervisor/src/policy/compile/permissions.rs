//! Permissions: what the manifest asks for (`fs.read`, `fs.write`, `net`,
//! `exec`, `threads`) is granted by the policy's `[grantable]` or this
//! plugin's `[plugins.<name>] grant`, never when denied there. A refusal
//! is a load error naming the permission and how an operator would grant
//! it. Decided before limits and kernel features, so that what the plugin
//! may do is settled before how much of it.

use super::{CompileError, Context, Recorder};
use crate::policy::{NetLevel, PermissionName};
use corral_protocol::manifest::{HostPath, NetPermission};
use corral_protocol::policy::FsAccess;

/// A granted filesystem path, as the plugin sees it.
pub(super) struct GrantedPath {
    pub path: HostPath,
    pub access: FsAccess,
}

/// Everything granted, for the mechanisms that enforce it.
pub(super) struct Grants {
    /// In manifest order: reads, then writes.
    pub fs: Vec<GrantedPath>,
    pub net_level: NetLevel,
    pub exec: bool,
    pub threads: u32,
}

pub(super) fn grant(cx: &Context<'_>, rec: &mut Recorder<'_>) -> Result<Grants, CompileError> {
    let fs = filesystem(cx, rec)?;
    let net_level = network(cx, rec)?;
    let exec = exec(cx, rec)?;
    let threads = threads(cx, rec)?;
    Ok(Grants {
        fs,
        net_level,
        exec,
        threads,
    })
}

pub(super) fn denied_by_policy(cx: &Context<'_>, permission: String) -> CompileError {
    CompileError::NotGranted {
        permission,
        reason: format!(
            "denied for this plugin by {}",
            cx.policy.cite(&cx.rules_key("deny"))
        ),
    }
}

/// `fs.read` and `fs.write`: each path must lie within a grantable or
/// granted path, exist on the host (at its remapped source when
/// remapped), and not be the scratch mount point.
fn filesystem(cx: &Context<'_>, rec: &mut Recorder<'_>) -> Result<Vec<GrantedPath>, CompileError> {
    let policy = cx.policy;
    let manifest = cx.manifest;
    let grant = cx.rules.map(|r| &r.grant);
    let scratch_path = policy.sandbox.scratch_path.as_path();
    let mut out = Vec::new();
    for (kind, paths, grantable, granted, perm, access) in [
        (
            "fs_read",
            &manifest.permissions.fs.read,
            &policy.grantable.fs_read,
            grant.map(|g| &g.fs_read),
            PermissionName::FsRead,
            FsAccess::Read,
        ),
        (
            "fs_write",
            &manifest.permissions.fs.write,
            &policy.grantable.fs_write,
            grant.map(|g| &g.fs_write),
            PermissionName::FsWrite,
            FsAccess::ReadWrite,
        ),
    ] {
        let manifest_key = format!("permissions.fs.{}", &kind[3..]);
        for path in paths {
            let permission = format!("{manifest_key} \"{path}\"");
            if cx.denied(perm) {
                return Err(denied_by_policy(cx, permission));
            }
            let via_grantable = grantable.iter().find(|p| path.is_within(p));
            let via_grant = granted.and_then(|g| g.iter().find(|p| path.is_within(p)));
            let source = match (via_grant, via_grantable) {
                (Some(p), _) => format!(
                    "{} grants {p}",
                    policy.cite(&cx.rules_key(&format!("grant.{kind}")))
                ),
                (None, Some(p)) => {
                    format!("{} grants {p}", policy.cite(&format!("grantable.{kind}")))
                }
                (None, None) => {
                    return Err(CompileError::NotGranted {
                        permission,
                        reason: format!(
                            "not under any path in grantable.{kind} ({}); {}",
                            policy.cite(&format!("grantable.{kind}")),
                            cx.how_to_grant(&format!("{kind} = [\"{path}\"]"))
                        ),
                    });
                }
            };
            if path.as_path() == scratch_path {
                return Err(cx.manifest_error(
                    &manifest_key,
                    format!(
                        "{path} is the scratch mount point, which the sandbox replaces with the plugin's private scratch space"
                    ),
                ));
            }
            let host_path = cx.remapped.host_path_of(path);
            if !host_path.exists() {
                let reason = if host_path == path.as_path() {
                    format!("{path} does not exist on this host")
                } else {
                    format!(
                        "{path} is {} on this host (remapped), which does not exist",
                        host_path.display()
                    )
                };
                return Err(cx.manifest_error(&manifest_key, reason));
            }
            rec.cite(
                format!("landlock.fs {path}"),
                access.name(),
                format!("{} ({manifest_key}); {source}", cx.manifest_file),
            );
            out.push(GrantedPath {
                path: path.clone(),
                access,
            });
        }
    }
    Ok(out)
}

/// `net`: none, connect (to the listed TCP ports) or the host's network.
fn network(cx: &Context<'_>, rec: &mut Recorder<'_>) -> Result<NetLevel, CompileError> {
    let policy = cx.policy;
    let net_asked = &cx.manifest.permissions.net;
    let net_level = match net_asked {
        NetPermission::None => NetLevel::None,
        NetPermission::Connect(_) => NetLevel::Connect,
        NetPermission::Host => NetLevel::Host,
    };
    if net_level == NetLevel::None {
        rec.cite_manifest("net", "none", "permissions.net");
        return Ok(net_level);
    }
    let permission = format!("permissions.net = {}", net_asked.level());
    if cx.denied(PermissionName::Net) {
        return Err(denied_by_policy(cx, permission));
    }
    let granted_level = cx.rules.and_then(|r| r.grant.net);
    let source = if granted_level.is_some_and(|l| l >= net_level) {
        policy.cite(&cx.rules_key("grant.net"))
    } else if policy.grantable.net >= net_level {
        policy.cite("grantable.net")
    } else {
        return Err(CompileError::NotGranted {
            permission,
            reason: format!(
                "the policy grants at most net = \"{}\" ({}); {}",
                granted_level
                    .unwrap_or(policy.grantable.net)
                    .max(policy.grantable.net),
                policy.cite("grantable.net"),
                cx.how_to_grant(&format!("net = \"{net_level}\""))
            ),
        });
    };
    rec.cite(
        "net",
        net_level,
        format!(
            "{} (permissions.net); granted by {source}",
            cx.manifest_file
        ),
    );
    Ok(net_level)
}

/// `exec`: may start subprocesses.
fn exec(cx: &Context<'_>, rec: &mut Recorder<'_>) -> Result<bool, CompileError> {
    if !cx.manifest.permissions.exec {
        return Ok(false);
    }
    let policy = cx.policy;
    let permission = "permissions.exec = true".to_string();
    if cx.denied(PermissionName::Exec) {
        return Err(denied_by_policy(cx, permission));
    }
    let source = if cx.rules.and_then(|r| r.grant.exec) == Some(true) {
        policy.cite(&cx.rules_key("grant.exec"))
    } else if policy.grantable.exec {
        policy.cite("grantable.exec")
    } else {
        return Err(CompileError::NotGranted {
            permission,
            reason: format!(
                "the policy does not grant exec ({}); {}",
                policy.cite("grantable.exec"),
                cx.how_to_grant("exec = true")
            ),
        });
    };
    rec.cite(
        "exec",
        "true",
        format!(
            "{} (permissions.exec); granted by {source}",
            cx.manifest_file
        ),
    );
    Ok(true)
}

/// `threads`: up to the cap (or this plugin's override of it).
fn threads(cx: &Context<'_>, rec: &mut Recorder<'_>) -> Result<u32, CompileError> {
    let (threads_cap, threads_cap_key) = cx.cap("threads", |c| c.threads, |o| o.threads);
    let threads = cx.manifest.permissions.threads;
    if threads > threads_cap {
        return Err(CompileError::NotGranted {
            permission: format!("permissions.threads = {threads}"),
            reason: format!(
                "above the cap of {threads_cap} ({}); an operator can raise it with [plugins.{}] limits = {{ threads = {threads} }}",
                cx.policy.cite(&threads_cap_key),
                cx.name
            ),
        });
    }
    rec.cite_manifest("threads", threads, "permissions.threads");
    Ok(threads)
}
