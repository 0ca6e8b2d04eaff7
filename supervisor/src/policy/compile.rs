//! Manifest + operator policy + kernel features → one [`SandboxPolicy`].
//!
//! Permissions are granted or refused (a refusal is a load error naming
//! the permission and how an operator would grant it); limits are asks,
//! clamped to the caps with a warning. Every decision is recorded as a
//! provenance line: rule, value, and the file and key it came from.
//!
//! # The mechanisms, in order
//!
//! One module per mechanism, named like the trampoline's step that
//! enforces it where there is one (`sandbox-child/src/lib.rs`). Each reads
//! the shared [`Context`], writes its own provenance lines, and returns its
//! part of the policy. The first error ends the compile, so the order is
//! also the order in which an operator meets the errors; `policy show`
//! prints the provenance in this order.
//!
//! 1. [`entry`]: the engine range, the runtime, the package directory and
//!    the entry. First, since every later mechanism names the package and
//!    whether the entry is dynamic decides the loader rules.
//! 2. [`permissions`]: `fs.read`, `fs.write`, `net`, `exec`, `threads`,
//!    granted or refused. What the plugin may do is settled before how
//!    much of it.
//! 3. [`limits`]: memory, cpu, pids, timeout, open files, disk and
//!    instances, clamped to the caps; the pids limit must hold the
//!    granted threads.
//! 4. [`features`]: which kernel features to use, failing on a required
//!    one that is missing. After permissions (Landlock's network rules
//!    matter only with `net = "connect"`), before every mechanism that
//!    relies on a feature.
//! 5. [`limits::resources`]: the cgroup limits, where the controllers are
//!    in use.
//! 6. [`namespaces`]: pid and mount always, user by policy, network empty
//!    unless granted, IPC and UTS empty.
//! 7. [`mounts`]: /proc, the scratch tmpfs, paths kept beneath it, and the
//!    operator's remaps (checked on the host here, so that a bad remap is
//!    a policy error and not a failed start).
//! 8. [`credentials`]: the plugin's uid and gid, then the rlimits.
//! 9. [`landlock`]: filesystem rules, TCP ports, scopes.
//! 10. [`syscall_filter`]: the seccomp allow-list and its BPF program.
//! 11. [`environment`]: the variables the plugin starts with.
//! 12. [`lifecycle`]: timeouts, restart policy, allowed callers.
//! 13. [`services`]: the host services granted (calls to dependencies,
//!     event topics, tables, buckets), their name maps and request
//!     bounds. Last: nothing in the sandbox depends on them; the host
//!     enforces them on each request.

mod credentials;
mod entry;
mod environment;
mod features;
mod landlock;
mod lifecycle;
mod limits;
mod mounts;
mod namespaces;
mod permissions;
mod provenance;
mod services;
mod syscall_filter;
#[cfg(test)]
mod tests;

pub(crate) use entry::{elf_is_dynamic, resolve_in_package};
pub use limits::CPU_PERIOD_US;
pub use namespaces::{JOIN_IPC_FD, JOIN_NET_FD, JOIN_UTS_FD};
pub use syscall_filter::TRAMPOLINE_SYSCALLS;

use super::{CapOverrides, Caps, PermissionName, PluginRules, Policy};
use crate::features::KernelFeatures;
use corral_protocol::error::{CorralError, ErrorKind};
use corral_protocol::manifest::Manifest;
use corral_protocol::policy::{Confinement, SandboxPolicy};
use mounts::Remapped;
use provenance::Recorder;
use std::path::Path;

pub struct CompileInput<'a> {
    pub manifest: &'a Manifest,
    /// How to name the manifest in provenance and errors.
    pub manifest_file: &'a str,
    /// The package directory the entry lives in.
    pub package_dir: &'a Path,
    pub policy: &'a Policy,
    pub features: &'a KernelFeatures,
    /// This corrald's version, matched against `plugin.engine`.
    pub engine: &'a semver::Version,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    #[error("{permission} is not granted: {reason}")]
    NotGranted { permission: String, reason: String },
    #[error("the kernel lacks {feature}, which the policy requires ({source_key})")]
    FeatureUnavailable { feature: String, source_key: String },
    #[error("{file}: {key}: {reason}")]
    Manifest {
        file: String,
        key: String,
        reason: String,
    },
    #[error("{file}: {key}: {reason}")]
    Policy {
        file: String,
        key: String,
        reason: String,
    },
    #[error("cannot build the seccomp program: {0}")]
    Seccomp(String),
}

impl CompileError {
    pub fn to_corral_error(&self) -> CorralError {
        let message = self.to_string();
        let kind = match self {
            CompileError::NotGranted { permission, .. } => ErrorKind::PermissionDenied {
                permission: Some(permission.clone()),
            },
            CompileError::FeatureUnavailable { feature, .. } => ErrorKind::FeatureUnavailable {
                feature: feature.clone(),
            },
            CompileError::Manifest { file, key, reason } => ErrorKind::InvalidManifest {
                file: file.clone(),
                key: key.clone(),
                reason: reason.clone(),
            },
            CompileError::Policy { file, key, reason } => ErrorKind::InvalidPolicy {
                file: file.clone(),
                key: key.clone(),
                reason: reason.clone(),
            },
            CompileError::Seccomp(_) => ErrorKind::Internal,
        };
        CorralError::new(kind, message)
    }
}

/// What every mechanism reads: the manifest, the policy, and this
/// plugin's rules in it.
pub(super) struct Context<'a> {
    manifest: &'a Manifest,
    manifest_file: &'a str,
    policy: &'a Policy,
    name: &'a str,
    rules: Option<&'a PluginRules>,
    remapped: Remapped<'a>,
}

impl Context<'_> {
    /// A key in this plugin's `[plugins.<name>]` table.
    fn rules_key(&self, key: &str) -> String {
        format!("plugins.{}.{key}", self.name)
    }

    fn manifest_error(&self, key: &str, reason: String) -> CompileError {
        CompileError::Manifest {
            file: self.manifest_file.to_string(),
            key: key.to_string(),
            reason,
        }
    }

    fn denied(&self, permission: PermissionName) -> bool {
        self.rules.is_some_and(|r| r.deny.contains(&permission))
    }

    fn how_to_grant(&self, what: &str) -> String {
        format!(
            "an operator can grant it in a policy file with [plugins.{}] grant = {{ {what} }}",
            self.name
        )
    }

    /// A cap with this plugin's override of it, and the key it came from.
    fn cap<T: Copy>(
        &self,
        field: &str,
        cap: impl Fn(&Caps) -> T,
        over: impl Fn(&CapOverrides) -> Option<T>,
    ) -> (T, String) {
        match self.rules.and_then(|r| over(&r.limits)) {
            Some(v) => (v, self.rules_key(&format!("limits.{field}"))),
            None => (cap(&self.policy.caps), format!("caps.{field}")),
        }
    }
}

/// Compiles one plugin's sandbox policy, one mechanism after the other in
/// the order the module documentation gives.
pub fn compile(input: &CompileInput<'_>) -> Result<SandboxPolicy, CompileError> {
    let name = input.manifest.name();
    let rules = input.policy.plugin_rules(name);
    let cx = Context {
        manifest: input.manifest,
        manifest_file: input.manifest_file,
        policy: input.policy,
        name,
        rules,
        remapped: Remapped(rules.map(|r| &r.remap)),
    };
    let mut rec = Recorder::new(&cx);

    let package = entry::resolve(&cx, input.package_dir, input.engine, &mut rec)?;
    let grants = permissions::grant(&cx, &mut rec)?;
    let limits = limits::clamp(&cx, grants.threads, &mut rec)?;
    let uses = features::select(&cx, input.features, grants.net_level, &mut rec)?;
    let resources = limits::resources(&cx, &limits, &uses, &mut rec);
    let namespaces = namespaces::plan(&cx, grants.net_level, &uses, &mut rec);
    let mounts = mounts::plan(&cx, &package, &grants.fs, &limits, &mut rec)?;
    let credentials = credentials::credentials(&cx, &mut rec);
    let rlimits = credentials::rlimits(&limits, &grants, &uses, &mut rec);
    let landlock = landlock::plan(&cx, &package, &grants.fs, &uses, &mut rec);
    let seccomp = syscall_filter::plan(&cx, &package, &grants, &uses, &mut rec)?;
    let env = environment::plan(&cx);
    let timeouts = lifecycle::timeouts(&cx, &limits, &mut rec);
    let restart = lifecycle::restart(&cx, &mut rec);
    let allowed_callers = lifecycle::allowed_callers(&cx, &mut rec);
    let services = services::grant(&cx, &mut rec)?;

    let entry = package.entry.display().to_string();
    let mut compiled = SandboxPolicy {
        plugin: name.to_string(),
        version: input.manifest.plugin.version.to_string(),
        confinement: Confinement {
            argv: vec![entry.clone()],
            entry,
            env,
            workdir: package.dir.display().to_string(),
            namespaces,
            mounts,
            credentials,
            rlimits,
            die_with_parent: true,
            landlock,
            seccomp,
        },
        resources,
        timeouts,
        restart,
        max_frame: u32::try_from(input.policy.protocol.max_frame.0)
            .unwrap_or(corral_protocol::frame::HARD_MAX_FRAME),
        instances: limits.instances,
        allowed_callers,
        default_method: None,
        services,
        idempotent: input
            .manifest
            .plugin
            .idempotent
            .iter()
            .map(|m| m.as_str().to_string())
            .collect(),
        provenance: rec.provenance,
        warnings: rec.warnings,
    };
    // Last: a script plugin's interpreter becomes the program, with its
    // grants; and the manifest's default method, for every runtime.
    crate::policy::runtimes::finish(package.script, input.manifest, input.policy, &mut compiled);
    Ok(compiled)
}
