//! Landlock: the filesystem rules (the package read+exec, the scratch
//! read-write, the native runtime's paths, the loader and libraries for a
//! dynamic entry, then the granted paths), the TCP port rules for
//! `net = "connect"`, and the signal and abstract-socket scopes.

use super::entry::Package;
use super::features::Uses;
use super::permissions::GrantedPath;
use super::{Context, Recorder};
use corral_protocol::manifest::{HostPath, NetPermission};
use corral_protocol::policy::{FsAccess, FsRule, LandlockSpec};

pub(super) fn plan(
    cx: &Context<'_>,
    package: &Package,
    granted: &[GrantedPath],
    uses: &Uses,
    rec: &mut Recorder<'_>,
) -> Option<LandlockSpec> {
    if !uses.landlock {
        return None;
    }
    let policy = cx.policy;
    let scratch = policy.sandbox.scratch_path.to_string();
    let mut fs = vec![
        FsRule {
            path: package.dir.display().to_string(),
            access: FsAccess::ReadExec,
        },
        FsRule {
            path: scratch.clone(),
            access: FsAccess::ReadWrite,
        },
    ];
    rec.builtin(
        "landlock.fs package",
        format!("{} read_exec", package.dir.display()),
        "the plugin's own package",
    );
    rec.builtin(
        "landlock.fs scratch",
        format!("{scratch} read_write"),
        "the plugin's scratch",
    );
    let native = &policy.runtime.native;
    let existing = |paths: &[HostPath]| -> Vec<String> {
        paths
            .iter()
            .filter(|p| p.as_path().exists())
            .map(|p| p.to_string())
            .collect()
    };
    let listed = |paths: &[HostPath], access: &str| {
        paths
            .iter()
            .map(|p| p.as_str())
            .collect::<Vec<_>>()
            .join(", ")
            + " "
            + access
    };
    for path in existing(&native.read) {
        fs.push(FsRule {
            path,
            access: FsAccess::Read,
        });
    }
    rec.cite_policy(
        "landlock.fs runtime",
        listed(&native.read, "read"),
        "runtime.native.read",
    );
    for path in existing(&native.read_write) {
        fs.push(FsRule {
            path,
            access: FsAccess::ReadWrite,
        });
    }
    rec.cite_policy(
        "landlock.fs runtime",
        listed(&native.read_write, "read_write"),
        "runtime.native.read_write",
    );
    if package.dynamic {
        for path in existing(&native.dynamic_libraries) {
            fs.push(FsRule {
                path,
                access: FsAccess::ReadExec,
            });
        }
        rec.cite_policy(
            "landlock.fs libraries",
            "read_exec (dynamically linked entry)",
            "runtime.native.dynamic_libraries",
        );
    }
    fs.extend(granted.iter().map(|g| FsRule {
        path: g.path.to_string(),
        access: g.access,
    }));
    let tcp_connect = uses
        .landlock_net
        .then(|| match &cx.manifest.permissions.net {
            NetPermission::Connect(endpoints) => endpoints.iter().map(|e| e.port).collect(),
            _ => Vec::new(),
        });
    if let Some(ports) = &tcp_connect {
        rec.cite_manifest(
            "landlock.tcp_connect",
            format!("{ports:?}"),
            "permissions.net.connect",
        );
    }
    let req = &policy.features;
    Some(LandlockSpec {
        fs,
        tcp_bind: uses.landlock_net.then(Vec::new),
        tcp_connect,
        scope_signals: uses.landlock_scope,
        scope_abstract_unix: uses.landlock_scope,
        fs_requirement: req.landlock,
        net_requirement: req.landlock_net,
        scope_requirement: req.landlock_scope,
    })
}
