//! Manifest + operator policy + kernel features → one [`SandboxPolicy`].
//!
//! Permissions are granted or refused (a refusal is a load error naming
//! the permission and how an operator would grant it); limits are asks,
//! clamped to the caps with a warning. Every decision is recorded as a
//! provenance line: rule, value, and the file and key it came from.

use super::seccomp::{SeccompPlan, SocketRule};
use super::{NetLevel, PermissionName, PluginRules, Policy};
use crate::features::KernelFeatures;
use corral_protocol::error::{CorralError, ErrorKind};
use corral_protocol::manifest::{HostPath, Manifest, NetPermission, Runtime};
use corral_protocol::message::{CHANNEL_FD, CHANNEL_FD_ENV};
use corral_protocol::policy::{
    Confinement, Credentials, FsAccess, FsRule, KeptPath, LandlockSpec, Mounts, NamespaceSource,
    Namespaces, Provenance, Remap, Requirement, ResourceLimits, RestartPolicy, Rlimit, RlimitSpec,
    SandboxPolicy, Timeouts, TmpfsSpec,
};
use corral_protocol::units::{ByteSize, CpuShare, HumanDuration};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Display;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Fds on which the trampoline finds pre-made namespaces to join.
pub const JOIN_NET_FD: i32 = 4;
pub const JOIN_IPC_FD: i32 = 5;
pub const JOIN_UTS_FD: i32 = 6;

/// System calls always allowed: the trampoline's last steps after the
/// filter is installed (chdir, execve) and its failure report (write,
/// exit_group).
pub const TRAMPOLINE_SYSCALLS: &[&str] =
    &["chdir", "close", "execve", "exit_group", "sendmsg", "write"];

/// CFS bandwidth period used for CPU shares.
pub const CPU_PERIOD_US: u64 = 100_000;

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

/// Collects provenance and warnings while compiling.
struct Recorder<'a> {
    policy: &'a Policy,
    manifest_file: &'a str,
    provenance: Vec<Provenance>,
    warnings: Vec<String>,
}

impl Recorder<'_> {
    fn cite_policy(&mut self, rule: &str, value: impl Display, key: &str) {
        self.provenance.push(Provenance {
            rule: rule.into(),
            value: value.to_string(),
            source: self.policy.cite(key),
        });
    }

    fn cite_manifest(&mut self, rule: &str, value: impl Display, key: &str) {
        self.provenance.push(Provenance {
            rule: rule.into(),
            value: value.to_string(),
            source: format!("{} ({key})", self.manifest_file),
        });
    }

    fn builtin(&mut self, rule: &str, value: impl Display, why: &str) {
        self.provenance.push(Provenance {
            rule: rule.into(),
            value: value.to_string(),
            source: format!("corral ({why})"),
        });
    }

    /// A kernel feature is missing: fail if required, else warn. Returns
    /// whether the feature can be used.
    fn feature(
        &mut self,
        features: &KernelFeatures,
        name: &str,
        requirement: Requirement,
    ) -> Result<bool, CompileError> {
        if features.has(name) {
            return Ok(true);
        }
        let key = format!("features.{name}");
        match requirement {
            Requirement::Required => Err(CompileError::FeatureUnavailable {
                feature: name.into(),
                source_key: self.policy.cite(&key),
            }),
            Requirement::BestEffort => {
                self.warnings.push(format!(
                    "the kernel lacks {name}; running without it as {} allows",
                    self.policy.cite(&key)
                ));
                Ok(false)
            }
        }
    }
}

/// A limit: the manifest's ask or the policy default, clamped to the cap.
fn limit<T: PartialOrd + Copy + Display>(
    rec: &mut Recorder<'_>,
    name: &str,
    asked: Option<T>,
    default: T,
    cap: T,
    cap_key: &str,
) -> T {
    let manifest_key = format!("limits.{name}");
    let rule = format!("limits.{name}");
    match asked {
        Some(v) if v > cap => {
            rec.warnings.push(format!(
                "{manifest_key} = {v} asked for more than the cap {cap}; clamped ({})",
                rec.policy.cite(cap_key)
            ));
            rec.cite_policy(&rule, cap, cap_key);
            cap
        }
        Some(v) => {
            rec.cite_manifest(&rule, v, &manifest_key);
            v
        }
        None if default > cap => {
            rec.cite_policy(&rule, cap, cap_key);
            cap
        }
        None => {
            rec.cite_policy(&rule, default, &format!("defaults.{name}"));
            default
        }
    }
}

fn denied(rules: Option<&PluginRules>, permission: PermissionName) -> bool {
    rules.is_some_and(|r| r.deny.contains(&permission))
}

/// Compiles one plugin's sandbox policy.
pub fn compile(input: &CompileInput<'_>) -> Result<SandboxPolicy, CompileError> {
    let CompileInput {
        manifest,
        manifest_file,
        package_dir,
        policy,
        features,
        engine,
    } = *input;
    let name = manifest.name();
    let rules = policy.plugin_rules(name);
    let rules_key = |k: &str| format!("plugins.{name}.{k}");
    let mut rec = Recorder {
        policy,
        manifest_file,
        provenance: Vec::new(),
        warnings: Vec::new(),
    };
    let manifest_error = |key: &str, reason: String| CompileError::Manifest {
        file: manifest_file.to_string(),
        key: key.to_string(),
        reason,
    };

    // The plugin itself.
    if !manifest.plugin.engine.matches(engine) {
        return Err(manifest_error(
            "plugin.engine",
            format!(
                "`{}` does not include this corrald ({engine})",
                manifest.plugin.engine
            ),
        ));
    }
    if manifest.plugin.runtime != Runtime::Native {
        return Err(manifest_error(
            "plugin.runtime",
            format!(
                "runtime `{}` has no adapter in this corrald; package a native executable",
                manifest.plugin.runtime
            ),
        ));
    }
    let package_dir = package_dir
        .canonicalize()
        .map_err(|e| manifest_error("(package)", format!("{}: {e}", package_dir.display())))?;
    // Inside the sandbox the scratch tmpfs covers its mount point; what
    // the plugin needs beneath it is bind-mounted back ("kept"), which
    // cannot work for the mount point itself.
    let scratch_path = policy.sandbox.scratch_path.as_path();
    if package_dir == scratch_path {
        return Err(manifest_error(
            "(package)",
            format!(
                "the package directory is the scratch mount point {}; move the package into a directory of its own",
                scratch_path.display()
            ),
        ));
    }
    let mut keep: Vec<KeptPath> = Vec::new();
    if package_dir.starts_with(scratch_path) {
        keep.push(KeptPath {
            path: package_dir.display().to_string(),
            writable: false,
        });
    }
    let entry = check_entry(&package_dir, manifest.plugin.entry.as_str())
        .map_err(|reason| manifest_error("plugin.entry", reason))?;
    let dynamic =
        elf_is_dynamic(&entry).map_err(|reason| manifest_error("plugin.entry", reason))?;
    rec.cite_manifest("entry", entry.display(), "plugin.entry");

    // Permissions: granted by [grantable] or this plugin's [plugins.<name>.grant],
    // never when denied.
    let grant = rules.map(|r| &r.grant);
    let remapped = Remapped(rules.map(|r| &r.remap));
    let how_to_grant = |what: &str| {
        format!(
            "an operator can grant it in a policy file with [plugins.{name}] grant = {{ {what} }}"
        )
    };
    let mut fs_rules = Vec::new();
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
            if denied(rules, perm) {
                return Err(CompileError::NotGranted {
                    permission,
                    reason: format!(
                        "denied for this plugin by {}",
                        policy.cite(&rules_key("deny"))
                    ),
                });
            }
            let via_grantable = grantable.iter().find(|p| path.is_within(p));
            let via_grant = granted.and_then(|g| g.iter().find(|p| path.is_within(p)));
            let source = match (via_grant, via_grantable) {
                (Some(p), _) => format!(
                    "{} grants {p}",
                    policy.cite(&rules_key(&format!("grant.{kind}")))
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
                            how_to_grant(&format!("{kind} = [\"{path}\"]"))
                        ),
                    });
                }
            };
            if path.as_path() == scratch_path {
                return Err(manifest_error(
                    &manifest_key,
                    format!(
                        "{path} is the scratch mount point, which the sandbox replaces with the plugin's private scratch space"
                    ),
                ));
            }
            let host_path = remapped.host_path_of(path);
            if !host_path.exists() {
                let reason = if host_path == path.as_path() {
                    format!("{path} does not exist on this host")
                } else {
                    format!(
                        "{path} is {} on this host (remapped), which does not exist",
                        host_path.display()
                    )
                };
                return Err(manifest_error(&manifest_key, reason));
            }
            rec.provenance.push(Provenance {
                rule: format!("landlock.fs {path}"),
                value: access.name().to_string(),
                source: format!("{manifest_file} ({manifest_key}); {source}"),
            });
            // A remapped path is mounted from its source instead.
            if path.as_path().starts_with(scratch_path) && !remapped.covers(path) {
                keep.push(KeptPath {
                    path: path.to_string(),
                    writable: access == FsAccess::ReadWrite,
                });
            }
            fs_rules.push(FsRule {
                path: path.to_string(),
                access,
            });
        }
    }

    let net_asked = &manifest.permissions.net;
    let net_level = match net_asked {
        NetPermission::None => NetLevel::None,
        NetPermission::Connect(_) => NetLevel::Connect,
        NetPermission::Host => NetLevel::Host,
    };
    if net_level > NetLevel::None {
        let permission = format!("permissions.net = {}", net_asked.level());
        if denied(rules, PermissionName::Net) {
            return Err(CompileError::NotGranted {
                permission,
                reason: format!(
                    "denied for this plugin by {}",
                    policy.cite(&rules_key("deny"))
                ),
            });
        }
        let granted_level = grant.and_then(|g| g.net);
        let source = if granted_level.is_some_and(|l| l >= net_level) {
            policy.cite(&rules_key("grant.net"))
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
                    how_to_grant(&format!("net = \"{net_level}\""))
                ),
            });
        };
        rec.provenance.push(Provenance {
            rule: "net".into(),
            value: net_level.to_string(),
            source: format!("{manifest_file} (permissions.net); granted by {source}"),
        });
    } else {
        rec.cite_manifest("net", "none", "permissions.net");
    }

    let exec = manifest.permissions.exec;
    if exec {
        let permission = "permissions.exec = true".to_string();
        if denied(rules, PermissionName::Exec) {
            return Err(CompileError::NotGranted {
                permission,
                reason: format!(
                    "denied for this plugin by {}",
                    policy.cite(&rules_key("deny"))
                ),
            });
        }
        let source = if grant.and_then(|g| g.exec) == Some(true) {
            policy.cite(&rules_key("grant.exec"))
        } else if policy.grantable.exec {
            policy.cite("grantable.exec")
        } else {
            return Err(CompileError::NotGranted {
                permission,
                reason: format!(
                    "the policy does not grant exec ({}); {}",
                    policy.cite("grantable.exec"),
                    how_to_grant("exec = true")
                ),
            });
        };
        rec.provenance.push(Provenance {
            rule: "exec".into(),
            value: "true".into(),
            source: format!("{manifest_file} (permissions.exec); granted by {source}"),
        });
    }

    // Caps, with this plugin's overrides.
    let overrides = rules.map(|r| &r.limits);
    let cap_key = |field: &str, overridden: bool| {
        if overridden {
            rules_key(&format!("limits.{field}"))
        } else {
            format!("caps.{field}")
        }
    };
    macro_rules! cap {
        ($field:ident) => {{
            let o = overrides.and_then(|o| o.$field);
            (
                o.unwrap_or(policy.caps.$field),
                cap_key(stringify!($field), o.is_some()),
            )
        }};
    }
    let (threads_cap, threads_cap_key) = cap!(threads);
    let threads = manifest.permissions.threads;
    if threads > threads_cap {
        return Err(CompileError::NotGranted {
            permission: format!("permissions.threads = {threads}"),
            reason: format!(
                "above the cap of {threads_cap} ({}); an operator can raise it with [plugins.{name}] limits = {{ threads = {threads} }}",
                policy.cite(&threads_cap_key)
            ),
        });
    }
    rec.cite_manifest("threads", threads, "permissions.threads");

    let asked = &manifest.limits;
    let d = &policy.defaults;
    let (c, k) = cap!(memory);
    let memory: ByteSize = limit(&mut rec, "memory", asked.memory, d.memory, c, &k);
    let (c, k) = cap!(cpu);
    let cpu: CpuShare = limit(&mut rec, "cpu", asked.cpu, d.cpu, c, &k);
    let (c, k) = cap!(pids);
    let pids: u64 = limit(&mut rec, "pids", asked.pids, d.pids, c, &k);
    let (c, k) = cap!(timeout);
    let timeout: HumanDuration = limit(&mut rec, "timeout", asked.timeout, d.timeout, c, &k);
    let (c, k) = cap!(open_files);
    let open_files: u64 = limit(
        &mut rec,
        "open_files",
        asked.open_files,
        d.open_files,
        c,
        &k,
    );
    let (c, k) = cap!(disk);
    let disk: ByteSize = limit(&mut rec, "disk", asked.disk, d.disk, c, &k);
    let (instances_cap, instances_key) = cap!(instances);
    let instances = if manifest.plugin.instances > instances_cap {
        rec.warnings.push(format!(
            "plugin.instances = {} is above the cap {instances_cap}; clamped ({})",
            manifest.plugin.instances,
            policy.cite(&instances_key)
        ));
        rec.cite_policy("instances", instances_cap, &instances_key);
        instances_cap
    } else {
        rec.cite_manifest("instances", manifest.plugin.instances, "plugin.instances");
        manifest.plugin.instances
    };
    if pids < u64::from(threads) {
        return Err(manifest_error(
            "limits.pids",
            format!("the effective pids limit {pids} is below permissions.threads = {threads}"),
        ));
    }

    // Kernel features, per the policy's requirements.
    let req = &policy.features;
    let use_cgroup_memory = rec.feature(features, "cgroup_memory", req.cgroup_memory)?;
    let use_cgroup_swap = rec.feature(features, "cgroup_swap", req.cgroup_swap)?;
    let use_cgroup_pids = rec.feature(features, "cgroup_pids", req.cgroup_pids)?;
    let use_cgroup_cpu = rec.feature(features, "cgroup_cpu", req.cgroup_cpu)?;
    let use_user_ns = policy.sandbox.user_namespace
        && rec.feature(features, "user_namespace", req.user_namespace)?;
    let use_landlock = rec.feature(features, "landlock", req.landlock)?;
    let use_landlock_net = net_level == NetLevel::Connect
        && rec.feature(features, "landlock_net", req.landlock_net)?;
    let use_landlock_scope = rec.feature(features, "landlock_scope", req.landlock_scope)?;
    let use_seccomp = rec.feature(features, "seccomp", req.seccomp)?;

    let resources = ResourceLimits {
        memory_max: use_cgroup_memory.then_some(memory.0),
        swap_max: use_cgroup_swap.then_some(policy.sandbox.swap.0),
        pids_max: use_cgroup_pids.then_some(pids),
        cpu_quota_us: use_cgroup_cpu.then_some(cpu.quota_us(CPU_PERIOD_US)),
        cpu_period_us: CPU_PERIOD_US,
        memory_requirement: Some(req.cgroup_memory),
        swap_requirement: Some(req.cgroup_swap),
        pids_requirement: Some(req.cgroup_pids),
        cpu_requirement: Some(req.cgroup_cpu),
    };
    if use_cgroup_swap {
        rec.cite_policy("cgroup.swap", policy.sandbox.swap, "sandbox.swap");
    }

    // Namespaces.
    let share = policy.sandbox.share_empty_namespaces;
    let empty = |fd: i32| {
        if share {
            NamespaceSource::Join { fd }
        } else {
            NamespaceSource::Fresh
        }
    };
    let namespaces = Namespaces {
        user: use_user_ns,
        pid: true,
        mount: true,
        net: if net_level == NetLevel::None {
            empty(JOIN_NET_FD)
        } else {
            NamespaceSource::Host
        },
        ipc: empty(JOIN_IPC_FD),
        uts: empty(JOIN_UTS_FD),
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
    rec.cite_policy("namespaces.user", use_user_ns, "sandbox.user_namespace");
    rec.builtin("namespaces.pid,mount", "new", "always");

    // Mounts and files.
    let scratch = policy.sandbox.scratch_path.to_string();
    let mounts = Mounts {
        proc: true,
        scratch: Some(TmpfsSpec {
            path: scratch.clone(),
            size_bytes: disk.0,
            inodes: (disk.0 / 8192).clamp(64, 1 << 20),
            keep: keep.clone(),
        }),
        remaps: remaps(
            remapped,
            &manifest.permissions.fs.write,
            policy,
            &rules_key("remap"),
            &mut rec,
        )?,
    };
    for k in &keep {
        rec.builtin(
            "scratch.keep",
            format!(
                "{} ({})",
                k.path,
                if k.writable {
                    "read-write"
                } else {
                    "read-only"
                }
            ),
            "beneath the scratch mount point, bind-mounted back",
        );
    }
    rec.cite_policy(
        "scratch",
        format!("{scratch} (tmpfs, {disk})"),
        "sandbox.scratch_path",
    );

    let credentials = Credentials {
        uid: policy.sandbox.uid_range.first,
        gid: policy.sandbox.uid_range.first,
    };
    rec.cite_policy(
        "credentials",
        format!(
            "a uid/gid of its own per instance from {}",
            policy.sandbox.uid_range
        ),
        "sandbox.uid_range",
    );

    let mut rlimits = vec![
        RlimitSpec {
            resource: Rlimit::Nofile,
            soft: open_files,
            hard: open_files,
        },
        RlimitSpec {
            resource: Rlimit::Core,
            soft: 0,
            hard: 0,
        },
        RlimitSpec {
            resource: Rlimit::Fsize,
            soft: disk.0,
            hard: disk.0,
        },
        RlimitSpec {
            resource: Rlimit::Memlock,
            soft: 0,
            hard: 0,
        },
        RlimitSpec {
            resource: Rlimit::Msgqueue,
            soft: 0,
            hard: 0,
        },
        RlimitSpec {
            resource: Rlimit::Rtprio,
            soft: 0,
            hard: 0,
        },
        RlimitSpec {
            resource: Rlimit::Nice,
            soft: 0,
            hard: 0,
        },
    ];
    if !use_cgroup_pids {
        // Without the pids controller, the per-uid process limit is the
        // fallback (each instance has a uid of its own).
        rlimits.push(RlimitSpec {
            resource: Rlimit::Nproc,
            soft: pids,
            hard: pids,
        });
    }
    rec.builtin(
        "rlimits",
        "NOFILE=open_files, FSIZE=disk, CORE/MEMLOCK/MSGQUEUE/RTPRIO/NICE=0",
        "always",
    );

    let landlock = if use_landlock {
        let mut fs = vec![
            FsRule {
                path: package_dir.display().to_string(),
                access: FsAccess::ReadExec,
            },
            FsRule {
                path: scratch.clone(),
                access: FsAccess::ReadWrite,
            },
        ];
        rec.builtin(
            "landlock.fs package",
            format!("{} read_exec", package_dir.display()),
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
        for path in existing(&native.read) {
            fs.push(FsRule {
                path,
                access: FsAccess::Read,
            });
        }
        rec.cite_policy(
            "landlock.fs runtime",
            native
                .read
                .iter()
                .map(|p| p.as_str())
                .collect::<Vec<_>>()
                .join(", ")
                + " read",
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
            native
                .read_write
                .iter()
                .map(|p| p.as_str())
                .collect::<Vec<_>>()
                .join(", ")
                + " read_write",
            "runtime.native.read_write",
        );
        if dynamic {
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
        fs.extend(fs_rules);
        let tcp_connect = use_landlock_net.then(|| match net_asked {
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
        Some(LandlockSpec {
            fs,
            tcp_bind: use_landlock_net.then(Vec::new),
            tcp_connect,
            scope_signals: use_landlock_scope,
            scope_abstract_unix: use_landlock_scope,
            fs_requirement: req.landlock,
            net_requirement: req.landlock_net,
            scope_requirement: req.landlock_scope,
        })
    } else {
        None
    };

    let seccomp = if use_seccomp {
        let groups = policy.groups();
        let mut sources: Vec<(String, &Vec<String>)> =
            vec![("seccomp.base".into(), &policy.seccomp.base)];
        if exec {
            sources.push(("seccomp.exec".into(), &policy.seccomp.exec));
        }
        if net_level > NetLevel::None {
            sources.push(("seccomp.network".into(), &policy.seccomp.network));
        }
        sources.push(("seccomp.allow".into(), &policy.seccomp.allow));
        if let Some(r) = rules {
            sources.push((rules_key("syscalls"), &r.syscalls));
        }
        // What the trampoline itself does after installing the filter: a
        // policy whose groups leave these out would kill every plugin at
        // its start instead of running it.
        let mut allowed: BTreeSet<String> =
            TRAMPOLINE_SYSCALLS.iter().map(|s| s.to_string()).collect();
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
            processes: exec,
            socket: match net_level {
                NetLevel::None => SocketRule::Deny,
                NetLevel::Connect => SocketRule::TcpOnly,
                NetLevel::Host => SocketRule::Any,
            },
            default_action: rules
                .and_then(|r| r.seccomp_action)
                .unwrap_or(policy.seccomp.default_action),
        };
        let action_key = match rules.and_then(|r| r.seccomp_action) {
            Some(_) => rules_key("seccomp_action"),
            None => "seccomp.default_action".to_string(),
        };
        rec.cite_policy(
            "seccomp.default_action",
            format!("{:?}", plan.default_action).to_lowercase(),
            &action_key,
        );
        Some(super::seccomp::build(&plan).map_err(CompileError::Seccomp)?)
    } else {
        None
    };

    let env = vec![
        (CHANNEL_FD_ENV.to_string(), CHANNEL_FD.to_string()),
        ("CORRAL_PLUGIN".to_string(), name.to_string()),
        (
            "CORRAL_PLUGIN_VERSION".to_string(),
            manifest.plugin.version.to_string(),
        ),
        ("CORRAL_SCRATCH".to_string(), scratch.clone()),
        ("HOME".to_string(), scratch.clone()),
        ("TMPDIR".to_string(), scratch),
        (
            "PATH".to_string(),
            "/usr/local/bin:/usr/bin:/bin".to_string(),
        ),
        ("LANG".to_string(), "C.UTF-8".to_string()),
    ];

    let timeouts = Timeouts {
        call: timeout.0,
        start: policy.timeouts.start.0,
        grace: policy.timeouts.grace.0,
        heartbeat: policy.timeouts.heartbeat.0,
    };
    rec.cite_policy("timeouts.start", policy.timeouts.start, "timeouts.start");
    let restart = RestartPolicy {
        backoff_initial: policy.restart.backoff_initial.0,
        backoff_max: policy.restart.backoff_max.0,
        jitter: policy.restart.jitter,
        crash_loop_failures: policy.restart.crash_loop_failures,
        crash_loop_window: policy.restart.crash_loop_window.0,
    };
    rec.cite_policy(
        "restart.crash_loop",
        format!(
            "{} failures in {}",
            restart.crash_loop_failures, policy.restart.crash_loop_window
        ),
        "restart.crash_loop_failures",
    );
    let allowed_callers = rules.and_then(|r| r.allowed_callers.clone());
    if let Some(callers) = &allowed_callers {
        rec.cite_policy(
            "allowed_callers",
            callers.join(", "),
            &rules_key("allowed_callers"),
        );
    }

    Ok(SandboxPolicy {
        plugin: name.to_string(),
        version: manifest.plugin.version.to_string(),
        confinement: Confinement {
            argv: vec![entry.display().to_string()],
            entry: entry.display().to_string(),
            env,
            workdir: package_dir.display().to_string(),
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
        max_frame: u32::try_from(policy.protocol.max_frame.0)
            .unwrap_or(corral_protocol::frame::HARD_MAX_FRAME),
        instances,
        allowed_callers,
        provenance: rec.provenance,
        warnings: rec.warnings,
    })
}

/// Resolves the entry inside the package and checks plugin uids can run it.
/// The operator's remaps for one plugin: target (as the plugin sees it)
/// to host source.
#[derive(Clone, Copy)]
struct Remapped<'a>(Option<&'a BTreeMap<HostPath, HostPath>>);

impl Remapped<'_> {
    /// The deepest remap whose target holds `path`.
    fn find(&self, path: &HostPath) -> Option<(&HostPath, &HostPath)> {
        self.0?
            .iter()
            .filter(|(target, _)| path.is_within(target))
            .max_by_key(|(target, _)| target.as_str().len())
    }

    fn covers(&self, path: &HostPath) -> bool {
        self.find(path).is_some()
    }

    /// Where `path`, as the plugin sees it, is on the host.
    fn host_path_of(&self, path: &HostPath) -> PathBuf {
        match self.find(path) {
            Some((target, source)) => match path.as_path().strip_prefix(target.as_path()) {
                Ok(rest) if !rest.as_os_str().is_empty() => source.as_path().join(rest),
                _ => source.as_path().to_path_buf(),
            },
            None => path.as_path().to_path_buf(),
        }
    }
}

/// The bind mounts for the remaps, parents first (the map is sorted, and
/// a parent sorts before its children). A source must exist; a target
/// outside the scratch space must exist as the same kind of file, since
/// nothing is created on the host. Writable when the plugin was granted
/// writing beneath the target.
fn remaps(
    remapped: Remapped<'_>,
    writes: &[HostPath],
    policy: &Policy,
    key: &str,
    rec: &mut Recorder<'_>,
) -> Result<Vec<Remap>, CompileError> {
    let Some(map) = remapped.0 else {
        return Ok(Vec::new());
    };
    let scratch = policy.sandbox.scratch_path.as_path();
    let mut out = Vec::with_capacity(map.len());
    for (target, source) in map {
        // The file that set this entry (tables merge key by key).
        let error = |reason: String| CompileError::Policy {
            file: policy.source_of(&format!("{key}.{target}")).to_string(),
            key: format!("{key}.\"{target}\""),
            reason,
        };
        let source_meta = std::fs::metadata(source.as_path())
            .map_err(|e| error(format!("the source {source}: {e}")))?;
        let in_scratch = target.as_path().starts_with(scratch) && target.as_path() != scratch;
        if !in_scratch {
            let target_meta = std::fs::metadata(target.as_path()).map_err(|e| {
                error(format!(
                    "the target {target}: {e}; a remap mounts over an existing path, or beneath the scratch path {} where its mount point is made",
                    scratch.display()
                ))
            })?;
            if target_meta.is_dir() != source_meta.is_dir() {
                return Err(error(format!(
                    "the target {target} and the source {source} must both be directories or both files"
                )));
            }
        }
        let writable = writes.iter().any(|w| w.is_within(target));
        let mode = if writable { "read-write" } else { "read-only" };
        rec.provenance.push(Provenance {
            rule: format!("mount {target}"),
            value: format!("{source} ({mode})"),
            source: format!(
                "{} ({key}.\"{target}\")",
                policy.source_of(&format!("{key}.{target}"))
            ),
        });
        out.push(Remap {
            source: source.to_string(),
            target: target.to_string(),
            writable,
        });
    }
    Ok(out)
}

fn check_entry(package_dir: &Path, entry: &str) -> Result<PathBuf, String> {
    let path = package_dir.join(entry);
    let resolved = path
        .canonicalize()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if !resolved.starts_with(package_dir) {
        return Err(format!(
            "{} resolves to {}, outside the package",
            path.display(),
            resolved.display()
        ));
    }
    let meta = std::fs::metadata(&resolved).map_err(|e| format!("{}: {e}", resolved.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", resolved.display()));
    }
    // Plugins run as unprivileged uids of their own: the entry and every
    // directory above it must be open to "others".
    if meta.permissions().mode() & 0o005 != 0o005 {
        return Err(format!(
            "{} is mode {:o}; plugins run as their own uid and need it readable and executable by others (chmod o+rx)",
            resolved.display(),
            meta.permissions().mode() & 0o7777
        ));
    }
    for dir in resolved.ancestors().skip(1) {
        let mode = std::fs::metadata(dir)
            .map(|m| m.permissions().mode())
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        if mode & 0o001 == 0 {
            return Err(format!(
                "directory {} is mode {:o}; plugins run as their own uid and cannot reach their entry through it (chmod o+x, or install the package into corral's store)",
                dir.display(),
                mode & 0o7777
            ));
        }
    }
    Ok(resolved)
}

/// True when the ELF executable asks for a program interpreter (is
/// dynamically linked).
fn elf_is_dynamic(path: &Path) -> Result<bool, String> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut header = [0u8; 64];
    let n = file
        .read(&mut header)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if n < 64 || &header[..4] != b"\x7fELF" {
        return Err(format!(
            "{} is not an ELF executable; runtime \"native\" runs compiled programs",
            path.display()
        ));
    }
    if header[4] != 2 || header[5] != 1 {
        return Err(format!(
            "{} is not a 64-bit little-endian ELF file",
            path.display()
        ));
    }
    let u16_at = |o: usize| u16::from_le_bytes([header[o], header[o + 1]]);
    let phoff = u64::from_le_bytes(header[32..40].try_into().map_err(|_| "bad ELF header")?);
    let phentsize = u64::from(u16_at(54));
    let phnum = u64::from(u16_at(56));
    if phentsize < 4 || phnum > 4096 {
        return Err(format!(
            "{} has a malformed program header table",
            path.display()
        ));
    }
    let mut table = vec![0u8; (phentsize * phnum) as usize];
    use std::io::{Seek, SeekFrom};
    file.seek(SeekFrom::Start(phoff))
        .and_then(|_| file.read_exact(&mut table))
        .map_err(|e| format!("{}: program headers: {e}", path.display()))?;
    const PT_INTERP: u32 = 3;
    Ok(table
        .chunks_exact(phentsize as usize)
        .any(|h| u32::from_le_bytes([h[0], h[1], h[2], h[3]]) == PT_INTERP))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::PolicyText;

    struct Fixture {
        _dir: tempfile::TempDir,
        package: PathBuf,
    }

    /// A package whose entry is a copy of a real ELF binary (dynamic).
    fn fixture() -> Fixture {
        let dir = tempfile::Builder::new()
            .prefix("corral-compile")
            .tempdir_in("/var/tmp")
            .expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let package = dir.path().join("pkg");
        std::fs::create_dir_all(package.join("bin")).expect("mkdir");
        std::fs::copy("/bin/true", package.join("bin/tool")).expect("copy");
        Fixture { _dir: dir, package }
    }

    fn manifest(extra: &str) -> Manifest {
        Manifest::parse(
            &format!(
                "[plugin]\nname = \"tool\"\nversion = \"1.0.0\"\nentry = \"bin/tool\"\n{extra}"
            ),
            "tool/plugin.toml",
        )
        .expect("manifest")
    }

    fn policy(layers: &[&str]) -> Policy {
        let layers: Vec<PolicyText> = layers
            .iter()
            .enumerate()
            .map(|(i, t)| PolicyText {
                name: format!("/etc/corral/policy.d/{i}.toml"),
                text: t.to_string(),
            })
            .collect();
        Policy::from_layers(&layers).expect("policy")
    }

    fn run(
        m: &Manifest,
        p: &Policy,
        f: &KernelFeatures,
        fx: &Fixture,
    ) -> Result<SandboxPolicy, CompileError> {
        compile(&CompileInput {
            manifest: m,
            manifest_file: "tool/plugin.toml",
            package_dir: &fx.package,
            policy: p,
            features: f,
            engine: &semver::Version::new(0, 1, 0),
        })
    }

    #[test]
    fn minimal_plugin_gets_defaults_and_full_confinement() {
        let fx = fixture();
        let sp = run(&manifest(""), &policy(&[]), &KernelFeatures::all(), &fx).expect("compile");
        assert_eq!(sp.resources.memory_max, Some(64 << 20));
        assert_eq!(sp.resources.swap_max, Some(0));
        assert_eq!(sp.resources.pids_max, Some(16));
        assert_eq!(sp.resources.cpu_quota_us, Some(100_000));
        assert_eq!(
            sp.confinement.namespaces.net,
            NamespaceSource::Join { fd: JOIN_NET_FD }
        );
        assert!(sp.confinement.namespaces.user);
        let ll = sp.confinement.landlock.as_ref().expect("landlock");
        assert!(ll.scope_signals && ll.scope_abstract_unix);
        assert!(
            ll.fs
                .iter()
                .any(|r| r.path == "/usr/lib" && r.access == FsAccess::ReadExec),
            "dynamic entry gets libraries"
        );
        assert!(ll.tcp_connect.is_none());
        let sc = sp.confinement.seccomp.as_ref().expect("seccomp");
        assert!(sc.allowed.contains(&"read".to_string()));
        assert!(
            !sc.allowed
                .iter()
                .any(|s| s == "socket" || s.starts_with("socket("))
        );
        assert!(
            sc.allowed
                .iter()
                .any(|s| s.starts_with("socketpair(AF_UNIX"))
        );
        assert!(sc.allowed.contains(&"clone(CLONE_THREAD)".to_string()));
        // A binary search, not a chain: short to install, quick to decide.
        assert!(
            sc.instructions.len() < 500,
            "{} instructions",
            sc.instructions.len()
        );
        assert!(sp.warnings.is_empty(), "{:?}", sp.warnings);
        let mem = sp
            .provenance
            .iter()
            .find(|p| p.rule == "limits.memory")
            .expect("provenance");
        assert!(mem.source.contains("defaults.memory"), "{mem:?}");
    }

    #[test]
    fn permissions_not_granted_are_named() {
        let fx = fixture();
        let p = policy(&[]);
        let f = KernelFeatures::all();
        let cases = [
            (
                "[permissions]\nnet = { connect = [\"tcp:443\"] }\n",
                "permissions.net = connect",
            ),
            ("[permissions]\nexec = true\n", "permissions.exec = true"),
            (
                "[permissions]\nfs.read = [\"/etc\"]\n",
                "permissions.fs.read \"/etc\"",
            ),
            (
                "[permissions]\nfs.write = [\"/tmp\"]\n",
                "permissions.fs.write \"/tmp\"",
            ),
            (
                "[permissions]\nthreads = 100\n[limits]\npids = 100\n",
                "permissions.threads = 100",
            ),
        ];
        for (extra, permission) in cases {
            match run(&manifest(extra), &p, &f, &fx) {
                Err(CompileError::NotGranted {
                    permission: got,
                    reason,
                }) => {
                    assert_eq!(got, permission);
                    assert!(reason.contains("built-in default policy"), "{reason}");
                }
                other => panic!("{extra}: expected NotGranted, got {other:?}"),
            }
        }
    }

    #[test]
    fn operator_grants_and_denials_apply() {
        let fx = fixture();
        let f = KernelFeatures::all();
        let m = manifest("[permissions]\nnet = { connect = [\"tcp:443\"] }\nexec = true\n");
        let granted = policy(&["[plugins.tool]\ngrant = { net = \"connect\", exec = true }\n"]);
        let sp = run(&m, &granted, &f, &fx).expect("granted");
        assert_eq!(sp.confinement.namespaces.net, NamespaceSource::Host);
        assert_eq!(
            sp.confinement
                .landlock
                .as_ref()
                .and_then(|l| l.tcp_connect.clone()),
            Some(vec![443])
        );
        let sc = sp.confinement.seccomp.as_ref().expect("seccomp");
        assert!(sc.allowed.contains(&"connect".to_string()));
        assert!(sc.allowed.contains(&"clone".to_string()));
        assert!(
            sc.allowed
                .contains(&"socket(AF_INET|AF_INET6, SOCK_STREAM, 0|IPPROTO_TCP)".to_string())
        );
        let net = sp
            .provenance
            .iter()
            .find(|p| p.rule == "net")
            .expect("net provenance");
        assert!(
            net.source
                .contains("/etc/corral/policy.d/0.toml (plugins.tool.grant.net)"),
            "{net:?}"
        );

        let denied = policy(&[
            "[grantable]\nnet = \"host\"\n",
            "[plugins.tool]\ndeny = [\"net\"]\n",
        ]);
        match run(&m, &denied, &f, &fx) {
            Err(CompileError::NotGranted { permission, reason }) => {
                assert_eq!(permission, "permissions.net = connect");
                assert!(reason.contains("plugins.tool.deny"), "{reason}");
            }
            other => panic!("expected denial, got {other:?}"),
        }
    }

    #[test]
    fn limits_are_clamped_to_caps_with_a_warning() {
        let fx = fixture();
        let m = manifest("[limits]\nmemory = \"8GiB\"\ntimeout = \"5s\"\n");
        let sp = run(&m, &policy(&[]), &KernelFeatures::all(), &fx).expect("compile");
        assert_eq!(sp.resources.memory_max, Some(1 << 30));
        assert_eq!(sp.timeouts.call, std::time::Duration::from_secs(5));
        assert!(
            sp.warnings
                .iter()
                .any(|w| w.contains("limits.memory = 8GiB")),
            "{:?}",
            sp.warnings
        );
        let raised = policy(&["[plugins.tool]\nlimits = { memory = \"16GiB\" }\n"]);
        let sp = run(&m, &raised, &KernelFeatures::all(), &fx).expect("compile");
        assert_eq!(sp.resources.memory_max, Some(8 << 30));
    }

    #[test]
    fn missing_features_follow_required_and_best_effort() {
        let fx = fixture();
        let m = manifest("");
        let p = policy(&[]);
        let mut f = KernelFeatures::all();
        f.mask("landlock");
        match run(&m, &p, &f, &fx) {
            Err(CompileError::FeatureUnavailable {
                feature,
                source_key,
            }) => {
                assert_eq!(feature, "landlock");
                assert!(source_key.contains("features.landlock"));
            }
            other => panic!("landlock is required: {other:?}"),
        }
        let mut f = KernelFeatures::all();
        f.mask("landlock_scope,cgroup_swap,cgroup_cpu");
        let sp = run(&m, &p, &f, &fx).expect("best effort features may be missing");
        let ll = sp.confinement.landlock.expect("landlock");
        assert!(!ll.scope_signals);
        assert_eq!(sp.resources.swap_max, None);
        assert_eq!(sp.resources.cpu_quota_us, None);
        assert_eq!(sp.warnings.len(), 3, "{:?}", sp.warnings);
        let mut f = KernelFeatures::all();
        f.mask("cgroup_pids");
        let relaxed = policy(&["[features]\ncgroup_pids = \"best_effort\"\n"]);
        let sp = run(&m, &relaxed, &f, &fx).expect("compile");
        assert!(
            sp.confinement
                .rlimits
                .iter()
                .any(|r| r.resource == Rlimit::Nproc && r.hard == 16),
            "NPROC falls back"
        );
    }

    #[test]
    fn entry_must_stay_in_the_package_and_be_reachable() {
        let fx = fixture();
        std::os::unix::fs::symlink("/bin/sh", fx.package.join("bin/escape")).expect("symlink");
        let m = Manifest::parse(
            "[plugin]\nname = \"tool\"\nversion = \"1.0.0\"\nentry = \"bin/escape\"\n",
            "p",
        )
        .expect("m");
        match run(&m, &policy(&[]), &KernelFeatures::all(), &fx) {
            Err(CompileError::Manifest { key, reason, .. }) => {
                assert_eq!(key, "plugin.entry");
                assert!(reason.contains("outside the package"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        std::fs::set_permissions(
            fx.package.join("bin/tool"),
            std::fs::Permissions::from_mode(0o750),
        )
        .expect("chmod");
        match run(&manifest(""), &policy(&[]), &KernelFeatures::all(), &fx) {
            Err(CompileError::Manifest { reason, .. }) => {
                assert!(reason.contains("chmod o+rx"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        std::fs::write(fx.package.join("bin/tool"), "#!/bin/sh\n").expect("write");
        std::fs::set_permissions(
            fx.package.join("bin/tool"),
            std::fs::Permissions::from_mode(0o755),
        )
        .expect("chmod");
        match run(&manifest(""), &policy(&[]), &KernelFeatures::all(), &fx) {
            Err(CompileError::Manifest { reason, .. }) => {
                assert!(reason.contains("not an ELF"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn packages_and_paths_under_the_scratch_mount_are_kept_visible() {
        let dir = tempfile::Builder::new()
            .prefix("corral-compile")
            .tempdir_in("/tmp")
            .expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let package = dir.path().join("pkg");
        std::fs::create_dir_all(package.join("bin")).expect("mkdir");
        std::fs::copy("/bin/true", package.join("bin/tool")).expect("copy");
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).expect("mkdir");
        let fx = Fixture { _dir: dir, package };
        let p = policy(&["[grantable]\nfs_write = [\"/tmp\"]\n"]);
        let m = manifest(&format!(
            "[permissions]\nfs.write = [\"{}\"]\n",
            data.display()
        ));
        let sp = run(&m, &p, &KernelFeatures::all(), &fx).expect("compile");
        let keep = &sp.confinement.mounts.scratch.expect("scratch").keep;
        let package_dir = fx.package.canonicalize().expect("canonical");
        assert!(
            keep.contains(&KeptPath {
                path: package_dir.display().to_string(),
                writable: false
            }),
            "{keep:?}"
        );
        assert!(
            keep.contains(&KeptPath {
                path: data.display().to_string(),
                writable: true
            }),
            "{keep:?}"
        );
        // The mount point itself cannot be kept.
        let p = policy(&["[grantable]\nfs_read = [\"/tmp\"]\n"]);
        match run(
            &manifest("[permissions]\nfs.read = [\"/tmp\"]\n"),
            &p,
            &KernelFeatures::all(),
            &fx,
        ) {
            Err(CompileError::Manifest { key, reason, .. }) => {
                assert_eq!(key, "permissions.fs.read");
                assert!(reason.contains("scratch mount point"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn engine_range_is_checked() {
        let fx = fixture();
        let m = Manifest::parse("[plugin]\nname = \"tool\"\nversion = \"1.0.0\"\nentry = \"bin/tool\"\nengine = \">=2\"\n", "p").expect("m");
        match run(&m, &policy(&[]), &KernelFeatures::all(), &fx) {
            Err(CompileError::Manifest { key, .. }) => assert_eq!(key, "plugin.engine"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn remaps_mount_host_paths_where_the_plugin_looks() {
        let fx = fixture();
        let root = fx.package.parent().expect("fixture root").to_path_buf();
        let data = root.join("tenant-a");
        std::fs::create_dir_all(data.join("in")).expect("mkdir");
        let covered = root.join("covered");
        std::fs::create_dir_all(&covered).expect("mkdir");
        let m = manifest(&format!(
            "[permissions.fs]\nread = [\"/tmp/data/in\"]\nwrite = [\"{}\"]\n",
            covered.display()
        ));
        let p = policy(&[&format!(
            "[plugins.tool]\ngrant = {{ fs_read = [\"/tmp/data\"], fs_write = [\"{covered}\"] }}\n\
             remap = {{ \"/tmp/data\" = \"{data}\", \"{covered}\" = \"{data}\" }}\n",
            covered = covered.display(),
            data = data.display()
        )]);
        let compiled = run(&m, &p, &KernelFeatures::all(), &fx).expect("compiles");
        let mounts = &compiled.confinement.mounts;
        let data = data.display().to_string();
        let covered = covered.display().to_string();
        let mut expected = vec![
            Remap {
                source: data.clone(),
                target: "/tmp/data".into(),
                writable: false,
            },
            Remap {
                source: data.clone(),
                target: covered.clone(),
                writable: true,
            },
        ];
        expected.sort_by(|a, b| a.target.cmp(&b.target));
        assert_eq!(mounts.remaps, expected);
        // Remapped paths beneath the scratch are not bound back from the host.
        let scratch = mounts.scratch.as_ref().expect("scratch");
        assert!(scratch.keep.is_empty(), "{:?}", scratch.keep);
        // Landlock rules name the paths as the plugin sees them.
        let fs = &compiled.confinement.landlock.as_ref().expect("landlock").fs;
        assert!(fs.iter().any(|r| r.path == "/tmp/data/in"), "{fs:?}");
        let line = compiled
            .provenance
            .iter()
            .find(|p| p.rule == "mount /tmp/data")
            .expect("provenance for the remap");
        assert!(line.value.contains("read-only"), "{line:?}");
        assert!(
            line.source.contains("/etc/corral/policy.d/0.toml") && line.source.contains("remap"),
            "{line:?}"
        );
    }

    #[test]
    fn a_remap_that_cannot_be_mounted_is_a_policy_error() {
        let fx = fixture();
        let root = fx.package.parent().expect("fixture root").to_path_buf();
        let m = manifest("");
        let missing_source =
            policy(&["[plugins.tool]\nremap = { \"/tmp/data\" = \"/nonexistent/corral\" }\n"]);
        match run(&m, &missing_source, &KernelFeatures::all(), &fx) {
            Err(CompileError::Policy { file, key, reason }) => {
                assert_eq!(file, "/etc/corral/policy.d/0.toml");
                assert_eq!(key, "plugins.tool.remap.\"/tmp/data\"");
                assert!(reason.contains("/nonexistent/corral"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        // Nothing is created on the host for a target outside the scratch.
        let target = root.join("no-such-mount-point");
        let missing_target = policy(&[&format!(
            "[plugins.tool]\nremap = {{ \"{}\" = \"{}\" }}\n",
            target.display(),
            root.display()
        )]);
        match run(&m, &missing_target, &KernelFeatures::all(), &fx) {
            Err(CompileError::Policy { reason, .. }) => {
                assert!(reason.contains("mounts over an existing path"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        assert!(!target.exists());
        // A directory cannot cover a file.
        let file_target = fx.package.join("bin/tool");
        let kinds = policy(&[&format!(
            "[plugins.tool]\nremap = {{ \"{}\" = \"{}\" }}\n",
            file_target.display(),
            root.display()
        )]);
        match run(&m, &kinds, &KernelFeatures::all(), &fx) {
            Err(e @ CompileError::Policy { .. }) => {
                assert_eq!(e.to_corral_error().code(), "invalid_policy");
                assert!(
                    e.to_string().contains("both be directories or both files"),
                    "{e}"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_remapped_path_is_checked_at_its_source() {
        let fx = fixture();
        let root = fx.package.parent().expect("fixture root").to_path_buf();
        let m = manifest("[permissions.fs]\nread = [\"/tmp/data/missing\"]\n");
        let p = policy(&[&format!(
            "[plugins.tool]\ngrant = {{ fs_read = [\"/tmp/data\"] }}\nremap = {{ \"/tmp/data\" = \"{}\" }}\n",
            root.display()
        )]);
        match run(&m, &p, &KernelFeatures::all(), &fx) {
            Err(CompileError::Manifest { reason, .. }) => {
                assert!(reason.contains("remapped"), "{reason}");
                assert!(
                    reason.contains(&root.join("missing").display().to_string()),
                    "{reason}"
                );
            }
            other => panic!("{other:?}"),
        }
    }
}
