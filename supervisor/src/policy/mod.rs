//! The operator's policy: built-in defaults, then `/etc/corral/policy.toml`,
//! then `policy.d/*.toml` in name order. Every file is validated as it is
//! applied, so an error names the file that introduced it; every effective
//! value remembers the file and key it came from, so `corral policy show`
//! can say why a thing is allowed or denied.

pub mod compile;
pub mod runtimes;
pub mod seccomp;
pub mod seccomp_args;
pub mod syscalls;

use corral_protocol::manifest::{HostPath, ResourceName, TopicPattern, parse_toml};
use corral_protocol::policy::Requirement;
use corral_protocol::units::{ByteSize, CpuShare, HumanDuration};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

pub use compile::{CompileError, CompileInput, compile};
pub use syscalls::SyscallGroups;

/// The built-in policy every other file is applied on top of.
pub const BUILTIN_POLICY: &str = include_str!("../../../policies/default.toml");
/// Name used for values that come from [`BUILTIN_POLICY`].
pub const BUILTIN_SOURCE: &str = "built-in default policy";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}{}: {key}: {reason}", line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct PolicyError {
    pub file: String,
    pub key: String,
    pub reason: String,
    pub line: Option<usize>,
}

impl PolicyError {
    fn new(file: impl Into<String>, key: impl Into<String>, reason: impl Into<String>) -> Self {
        PolicyError {
            file: file.into(),
            key: key.into(),
            reason: reason.into(),
            line: None,
        }
    }
}

/// The effective operator policy.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub defaults: LimitSet,
    pub caps: Caps,
    pub grantable: Grantable,
    pub sandbox: SandboxSettings,
    pub features: FeatureRequirements,
    pub seccomp: SeccompSettings,
    pub runtime: Runtimes,
    pub restart: RestartSettings,
    pub timeouts: TimeoutSettings,
    pub protocol: ProtocolSettings,
    pub services: ServiceSettings,
    /// Groups operators add to the built-in ones.
    #[serde(default)]
    pub syscall_groups: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub plugins: BTreeMap<String, PluginRules>,
    /// Dotted key → the file that set it last.
    #[serde(skip)]
    sources: BTreeMap<String, String>,
    /// Built-in groups plus `syscall_groups`, resolved.
    #[serde(skip)]
    groups: SyscallGroups,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSet {
    pub memory: ByteSize,
    pub cpu: CpuShare,
    pub pids: u64,
    pub timeout: HumanDuration,
    pub open_files: u64,
    pub disk: ByteSize,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Caps {
    pub memory: ByteSize,
    pub cpu: CpuShare,
    pub pids: u64,
    pub timeout: HumanDuration,
    pub open_files: u64,
    pub disk: ByteSize,
    pub threads: u32,
    pub instances: u32,
}

/// Per-plugin overrides of the caps.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapOverrides {
    pub memory: Option<ByteSize>,
    pub cpu: Option<CpuShare>,
    pub pids: Option<u64>,
    pub timeout: Option<HumanDuration>,
    pub open_files: Option<u64>,
    pub disk: Option<ByteSize>,
    pub threads: Option<u32>,
    pub instances: Option<u32>,
}

/// Network permission levels, ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetLevel {
    None,
    Connect,
    Host,
}

impl fmt::Display for NetLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NetLevel::None => "none",
            NetLevel::Connect => "connect",
            NetLevel::Host => "host",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grantable {
    pub fs_read: Vec<HostPath>,
    pub fs_write: Vec<HostPath>,
    pub net: NetLevel,
    pub exec: bool,
    /// Calls to the plugins a manifest's `[dependencies]` lists.
    pub calls: bool,
    pub events_publish: Vec<TopicPattern>,
    pub events_subscribe: Vec<TopicPattern>,
    /// Tables of the plugin's own, whatever their names.
    pub tables: bool,
    pub buckets: Vec<ResourceName>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    #[serde(default)]
    pub fs_read: Vec<HostPath>,
    #[serde(default)]
    pub fs_write: Vec<HostPath>,
    pub net: Option<NetLevel>,
    pub exec: Option<bool>,
    #[serde(default)]
    pub calls: Vec<String>,
    #[serde(default)]
    pub events_publish: Vec<TopicPattern>,
    #[serde(default)]
    pub events_subscribe: Vec<TopicPattern>,
    #[serde(default)]
    pub tables: Vec<ResourceName>,
    #[serde(default)]
    pub buckets: Vec<ResourceName>,
}

/// Permissions that can be denied outright for one plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PermissionName {
    FsRead,
    FsWrite,
    Net,
    Exec,
    Calls,
    EventsPublish,
    EventsSubscribe,
    Tables,
    Buckets,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginRules {
    #[serde(default)]
    pub grant: Grant,
    #[serde(default)]
    pub deny: Vec<PermissionName>,
    #[serde(default)]
    pub limits: CapOverrides,
    pub allowed_callers: Option<Vec<String>>,
    #[serde(default)]
    pub syscalls: Vec<String>,
    /// This plugin's answer to a refused system call, in place of
    /// `seccomp.default_action`.
    pub seccomp_action: Option<ViolationAction>,
    /// Paths as the plugin sees them → the host paths shown there (bind
    /// mounts in its mount namespace). Grants name the plugin's paths.
    #[serde(default)]
    pub remap: BTreeMap<HostPath, HostPath>,
    /// How its topic, table and bucket names become real ones.
    #[serde(default)]
    pub names: NameRules,
    /// Its overrides of `[services]`.
    #[serde(default)]
    pub services: ServiceOverrides,
}

/// `[plugins.<name>.names]`: prefixes and exact maps (seed 001's
/// `topicNameMap`, `tableNameMap`, `bucketNameMap`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NameRules {
    pub topic_prefix: Option<String>,
    pub table_prefix: Option<String>,
    pub bucket_prefix: Option<String>,
    #[serde(default)]
    pub topics: BTreeMap<ResourceName, ResourceName>,
    #[serde(default)]
    pub tables: BTreeMap<ResourceName, ResourceName>,
    #[serde(default)]
    pub buckets: BTreeMap<ResourceName, ResourceName>,
}

/// `[services]`: bounds on what each plugin may ask of host services.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSettings {
    pub storage_quota: ByteSize,
    pub request_in_flight: u32,
    pub request_max_bytes: ByteSize,
    pub request_rate: u32,
    pub event_queue: u32,
}

/// `[plugins.<name>.services]`: one plugin's overrides of `[services]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceOverrides {
    pub storage_quota: Option<ByteSize>,
    pub request_in_flight: Option<u32>,
    pub request_max_bytes: Option<ByteSize>,
    pub request_rate: Option<u32>,
    pub event_queue: Option<u32>,
}

/// `"200000-265535"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UidRange {
    pub first: u32,
    pub last: u32,
}

impl UidRange {
    pub fn len(&self) -> u32 {
        self.last - self.first + 1
    }

    pub fn is_empty(&self) -> bool {
        false
    }
}

impl<'de> Deserialize<'de> for UidRange {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let err = || {
            serde::de::Error::custom(format!(
                "`{text}` is not a uid range: write FIRST-LAST, e.g. 200000-265535, above 0"
            ))
        };
        let (a, b) = text.split_once('-').ok_or_else(err)?;
        let first: u32 = a.trim().parse().map_err(|_| err())?;
        let last: u32 = b.trim().parse().map_err(|_| err())?;
        if first == 0 || last < first || last == u32::MAX {
            return Err(err());
        }
        Ok(UidRange { first, last })
    }
}

impl fmt::Display for UidRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxSettings {
    pub uid_range: UidRange,
    pub user_namespace: bool,
    pub scratch_path: HostPath,
    pub share_empty_namespaces: bool,
    pub swap: ByteSize,
    /// The plugin's `/` holds only what its policy grants (a tmpfs with
    /// bind mounts, pivoted into); false shows it the host's tree, with
    /// Landlock alone ruling access.
    pub minimal_root: bool,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureRequirements {
    pub landlock: Requirement,
    pub landlock_net: Requirement,
    pub landlock_scope: Requirement,
    pub seccomp: Requirement,
    pub user_namespace: Requirement,
    pub cgroup_memory: Requirement,
    pub cgroup_swap: Requirement,
    pub cgroup_pids: Requirement,
    pub cgroup_cpu: Requirement,
    pub memfd_noexec: Requirement,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ViolationAction {
    /// Kill the plugin; the death is `seccomp_violation` naming the call.
    Kill,
    /// Fail the call with EPERM, log and count it, and go on.
    Errno,
    /// Fail the call with ENOSYS (as if the kernel lacked it), log and
    /// count it, and go on.
    Enosys,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeccompSettings {
    pub default_action: ViolationAction,
    pub base: Vec<String>,
    pub exec: Vec<String>,
    pub network: Vec<String>,
    pub allow: Vec<String>,
    pub deny: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Runtimes {
    pub native: NativeRuntime,
    pub js: ScriptRuntime,
    pub node: ScriptRuntime,
    pub python: ScriptRuntime,
}

/// A script runtime's profile (see [`runtimes`]): the interpreter corral
/// execs with the plugin's entry, and what it needs.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptRuntime {
    /// Absolute path of the interpreter; `""` for corral's own (js).
    pub program: String,
    /// Arguments before the bootstrap and the entry.
    #[serde(default)]
    pub args: Vec<String>,
    /// corral's bootstrap script for the interpreter; `""` for the one
    /// shipped with corral.
    #[serde(default)]
    pub bootstrap: String,
    /// Files and directories the interpreter reads (missing ones are
    /// skipped).
    #[serde(default)]
    pub read: Vec<HostPath>,
    /// What the interpreter maps executable besides its program: compiled
    /// extension modules (Python's lib-dynload). Read-only, never writable.
    #[serde(default)]
    pub read_exec: Vec<HostPath>,
    /// System calls or groups the interpreter needs beyond `seccomp.base`.
    #[serde(default)]
    pub syscalls: Vec<String>,
    /// Threads the interpreter starts itself; the plugin's task limit is
    /// at least this plus one.
    pub threads: u32,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NativeRuntime {
    pub dynamic_libraries: Vec<HostPath>,
    pub read: Vec<HostPath>,
    pub read_write: Vec<HostPath>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestartSettings {
    pub backoff_initial: HumanDuration,
    pub backoff_max: HumanDuration,
    pub jitter: f64,
    pub crash_loop_failures: u32,
    pub crash_loop_window: HumanDuration,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutSettings {
    pub start: HumanDuration,
    pub grace: HumanDuration,
    pub heartbeat: HumanDuration,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProtocolSettings {
    pub max_frame: ByteSize,
}

/// One policy file to apply: its name for messages and its text.
#[derive(Debug, Clone)]
pub struct PolicyText {
    pub name: String,
    pub text: String,
}

impl Policy {
    /// The built-in policy alone.
    pub fn builtin() -> Result<Policy, PolicyError> {
        Policy::from_layers(&[])
    }

    /// The built-in policy with `layers` applied in order.
    pub fn from_layers(layers: &[PolicyText]) -> Result<Policy, PolicyError> {
        let mut merged = parse_table(BUILTIN_POLICY, BUILTIN_SOURCE)?;
        let mut sources = BTreeMap::new();
        record_sources(&merged, "", BUILTIN_SOURCE, &mut sources);
        // The built-in file must be complete on its own.
        let mut policy = typed(&merged, BUILTIN_SOURCE)?;
        for layer in layers {
            let table = parse_table(&layer.text, &layer.name)?;
            let mut candidate = merged.clone();
            merge_table(&mut candidate, table, "", &layer.name, &mut sources);
            policy = typed(&candidate, &layer.name)?;
            merged = candidate;
        }
        policy.sources = sources;
        policy.validate()?;
        Ok(policy)
    }

    /// Reads `main` (when it exists) and `dropin_dir/*.toml` (name order).
    /// A missing main file is not an error: the built-in policy applies.
    pub fn load(main: &Path, dropin_dir: &Path) -> Result<Policy, PolicyError> {
        let mut layers = Vec::new();
        if main.exists() {
            layers.push(read_text(main)?);
        }
        if dropin_dir.is_dir() {
            let entries = std::fs::read_dir(dropin_dir).map_err(|e| {
                PolicyError::new(
                    dropin_dir.display().to_string(),
                    "(directory)",
                    e.to_string(),
                )
            })?;
            let mut files: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .collect();
            files.sort();
            for file in files {
                layers.push(read_text(&file)?);
            }
        }
        Policy::from_layers(&layers)
    }

    /// The file that set `key` (dotted), if any.
    pub fn source_of(&self, key: &str) -> &str {
        self.sources
            .get(key)
            .map(String::as_str)
            .unwrap_or(BUILTIN_SOURCE)
    }

    /// `"<file>: <key>"` for provenance lines.
    pub fn cite(&self, key: &str) -> String {
        format!("{} ({key})", self.source_of(key))
    }

    pub fn groups(&self) -> &SyscallGroups {
        &self.groups
    }

    pub fn plugin_rules(&self, plugin: &str) -> Option<&PluginRules> {
        self.plugins.get(plugin)
    }

    /// Checks across keys, each error naming the file that set the key.
    fn validate(&mut self) -> Result<(), PolicyError> {
        let err = |policy: &Policy, key: &str, reason: String| {
            PolicyError::new(policy.source_of(key), key, reason)
        };
        for name in self.plugins.keys() {
            if let Err(reason) = corral_protocol::manifest::validate_plugin_name(name) {
                return Err(err(self, &format!("plugins.{name}"), reason));
            }
        }
        if !(0.0..=1.0).contains(&self.restart.jitter) {
            return Err(err(
                self,
                "restart.jitter",
                format!("{} is outside 0.0 to 1.0", self.restart.jitter),
            ));
        }
        if self.restart.crash_loop_failures == 0 {
            return Err(err(
                self,
                "restart.crash_loop_failures",
                "must be at least 1".into(),
            ));
        }
        let max_frame = self.protocol.max_frame.0;
        if !(4096..=u64::from(corral_protocol::frame::HARD_MAX_FRAME)).contains(&max_frame) {
            return Err(err(
                self,
                "protocol.max_frame",
                format!(
                    "{} is outside 4KiB to {}",
                    self.protocol.max_frame,
                    ByteSize(u64::from(corral_protocol::frame::HARD_MAX_FRAME))
                ),
            ));
        }
        if self.caps.threads == 0 || self.caps.instances == 0 {
            return Err(err(
                self,
                "caps",
                "threads and instances must be at least 1".into(),
            ));
        }
        let mut groups = SyscallGroups::builtin();
        for (name, members) in &self.syscall_groups {
            let key = format!("syscall_groups.{name}");
            groups
                .add(name, members)
                .map_err(|reason| err(self, &key, reason))?;
        }
        let mut lists: Vec<(String, &Vec<String>)> = vec![
            ("seccomp.base".into(), &self.seccomp.base),
            ("seccomp.exec".into(), &self.seccomp.exec),
            ("seccomp.network".into(), &self.seccomp.network),
            ("seccomp.allow".into(), &self.seccomp.allow),
            ("seccomp.deny".into(), &self.seccomp.deny),
        ];
        for (name, profile) in [
            ("js", &self.runtime.js),
            ("node", &self.runtime.node),
            ("python", &self.runtime.python),
        ] {
            lists.push((format!("runtime.{name}.syscalls"), &profile.syscalls));
        }
        if let Err((key, reason)) = runtimes::validate(self) {
            return Err(err(self, &key, reason));
        }
        if let Err((key, reason)) = self.validate_services() {
            return Err(err(self, &key, reason));
        }
        for (name, rules) in &self.plugins {
            lists.push((format!("plugins.{name}.syscalls"), &rules.syscalls));
            for target in rules.remap.keys() {
                if let Err(reason) = remap_target_allowed(target, &self.sandbox.scratch_path) {
                    return Err(PolicyError::new(
                        self.source_of(&format!("plugins.{name}.remap.{target}")),
                        format!("plugins.{name}.remap.\"{target}\""),
                        reason,
                    ));
                }
            }
        }
        for (key, names) in lists {
            for name in names {
                groups
                    .resolve(name)
                    .map_err(|reason| err(self, &key, reason))?;
            }
        }
        self.groups = groups;
        Ok(())
    }
}

impl Policy {
    /// `[services]` bounds and every plugin's overrides, prefixes and
    /// call grants: `(key, reason)` of the first that is out of range.
    fn validate_services(&self) -> Result<(), (String, String)> {
        let check = |key: String,
                     in_flight: Option<u32>,
                     max_bytes: Option<ByteSize>,
                     rate: Option<u32>,
                     queue: Option<u32>|
         -> Result<(), (String, String)> {
            let hard = u64::from(corral_protocol::frame::HARD_MAX_FRAME);
            if let Some(n) = in_flight.filter(|n| !(1..=4096).contains(n)) {
                return Err((
                    format!("{key}.request_in_flight"),
                    format!("{n} is outside 1 to 4096"),
                ));
            }
            if let Some(b) = max_bytes.filter(|b| !(1024..=hard).contains(&b.0)) {
                return Err((
                    format!("{key}.request_max_bytes"),
                    format!("{b} is outside 1KiB to {}", ByteSize(hard)),
                ));
            }
            if let Some(n) = rate.filter(|n| !(1..=1_000_000).contains(n)) {
                return Err((
                    format!("{key}.request_rate"),
                    format!("{n} is outside 1 to 1000000"),
                ));
            }
            if let Some(n) = queue.filter(|n| !(1..=65536).contains(n)) {
                return Err((
                    format!("{key}.event_queue"),
                    format!("{n} is outside 1 to 65536"),
                ));
            }
            Ok(())
        };
        let s = &self.services;
        check(
            "services".into(),
            Some(s.request_in_flight),
            Some(s.request_max_bytes),
            Some(s.request_rate),
            Some(s.event_queue),
        )?;
        for (name, rules) in &self.plugins {
            let o = &rules.services;
            check(
                format!("plugins.{name}.services"),
                o.request_in_flight,
                o.request_max_bytes,
                o.request_rate,
                o.event_queue,
            )?;
            let n = &rules.names;
            for (which, prefix) in [
                ("topic_prefix", &n.topic_prefix),
                ("table_prefix", &n.table_prefix),
                ("bucket_prefix", &n.bucket_prefix),
            ] {
                if let Some(p) = prefix.as_deref().filter(|p| !p.is_empty()) {
                    corral_protocol::services::valid_name(p, false)
                        .map_err(|r| (format!("plugins.{name}.names.{which}"), r))?;
                }
            }
            for callee in &rules.grant.calls {
                corral_protocol::manifest::validate_plugin_name(callee)
                    .map_err(|r| (format!("plugins.{name}.grant.calls"), r))?;
            }
        }
        Ok(())
    }
}

/// Where a remap may not mount: over the whole tree, over /proc (the
/// sandbox's own), or over the scratch mount point or one of its parents
/// (which would hide the plugin's scratch space).
fn remap_target_allowed(target: &HostPath, scratch: &HostPath) -> Result<(), String> {
    if target.as_str() == "/" {
        return Err("a remap cannot cover /".into());
    }
    if target.as_path().starts_with("/proc") {
        return Err("/proc is the sandbox's own and cannot be remapped".into());
    }
    if scratch.is_within(target) {
        return Err(format!(
            "it would hide the scratch mount point {scratch}; remap a path beneath it instead"
        ));
    }
    Ok(())
}

fn read_text(path: &Path) -> Result<PolicyText, PolicyError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| PolicyError::new(&name, "(document)", format!("cannot read: {e}")))?;
    Ok(PolicyText { name, text })
}

fn parse_table(text: &str, file: &str) -> Result<toml::Table, PolicyError> {
    parse_toml::<toml::Table>(text, file).map_err(|e| PolicyError {
        file: e.file,
        key: e.key,
        reason: e.reason,
        line: e.line,
    })
}

fn typed(table: &toml::Table, file: &str) -> Result<Policy, PolicyError> {
    let value = toml::Value::Table(table.clone());
    serde_path_to_error_deserialize(value)
        .map_err(|(key, reason)| PolicyError::new(file, key, reason))
}

fn serde_path_to_error_deserialize(value: toml::Value) -> Result<Policy, (String, String)> {
    let mut track = serde_path_to_error::Track::new();
    let de = serde_path_to_error::Deserializer::new(value, &mut track);
    Policy::deserialize(de).map_err(|e: toml::de::Error| {
        let path = track.path().to_string();
        (
            if path == "." {
                "(document)".into()
            } else {
                path
            },
            e.message().trim().to_string(),
        )
    })
}

/// Deep-merges `layer` into `base`: tables merge key by key, everything
/// else (including arrays) is replaced. Records the file of every leaf set.
fn merge_table(
    base: &mut toml::Table,
    layer: toml::Table,
    prefix: &str,
    file: &str,
    sources: &mut BTreeMap<String, String>,
) {
    for (key, value) in layer {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(existing)), toml::Value::Table(incoming)) => {
                merge_table(existing, incoming, &path, file, sources);
            }
            (_, value) => {
                if let toml::Value::Table(t) = &value {
                    record_sources(t, &path, file, sources);
                }
                sources.insert(path, file.to_string());
                base.insert(key, value);
            }
        }
    }
}

fn record_sources(
    table: &toml::Table,
    prefix: &str,
    file: &str,
    out: &mut BTreeMap<String, String>,
) {
    for (key, value) in table {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        if let toml::Value::Table(t) = value {
            record_sources(t, &path, file, out);
        }
        out.insert(path, file.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(name: &str, text: &str) -> PolicyText {
        PolicyText {
            name: name.into(),
            text: text.into(),
        }
    }

    #[test]
    fn builtin_policy_is_complete_and_valid() {
        let p = Policy::builtin().expect("builtin");
        assert_eq!(p.defaults.memory, ByteSize(64 << 20));
        assert_eq!(p.features.landlock, Requirement::Required);
        assert_eq!(p.source_of("caps.memory"), BUILTIN_SOURCE);
    }

    #[test]
    fn layers_override_and_record_their_file() {
        let p = Policy::from_layers(&[
            layer("/etc/corral/policy.toml", "[caps]\nmemory = \"2GiB\"\n"),
            layer(
                "/etc/corral/policy.d/10-csv.toml",
                "[plugins.csv]\ngrant = { net = \"connect\" }\n",
            ),
            layer(
                "/etc/corral/policy.d/20-csv.toml",
                "[plugins.csv]\ndeny = [\"exec\"]\n",
            ),
        ])
        .expect("policy");
        assert_eq!(p.caps.memory, ByteSize(2 << 30));
        assert_eq!(p.caps.pids, 256, "untouched keys keep the built-in value");
        assert_eq!(p.source_of("caps.memory"), "/etc/corral/policy.toml");
        let csv = p.plugin_rules("csv").expect("rules");
        assert_eq!(csv.grant.net, Some(NetLevel::Connect), "merged key by key");
        assert_eq!(csv.deny, vec![PermissionName::Exec]);
        assert_eq!(
            p.source_of("plugins.csv.deny"),
            "/etc/corral/policy.d/20-csv.toml"
        );
    }

    #[test]
    fn errors_name_file_key_and_reason() {
        let cases = [
            (
                "[caps]\nmemroy = \"1GiB\"\n",
                "caps.memroy",
                "unknown field",
            ),
            ("[caps]\nmemory = \"lots\"\n", "caps.memory", "not a size"),
            (
                "[features]\nlandlock = \"maybe\"\n",
                "features.landlock",
                "unknown variant",
            ),
            (
                "[seccomp]\nallow = [\"frobnicate\"]\n",
                "seccomp.allow",
                "unknown system call `frobnicate`",
            ),
            (
                "[seccomp]\nbase = [\"@nope\"]\n",
                "seccomp.base",
                "unknown syscall group `@nope`",
            ),
            (
                "[sandbox]\nuid_range = \"0-10\"\n",
                "sandbox.uid_range",
                "not a uid range",
            ),
            (
                "[plugins.x]\ndeny = [\"sudo\"]\n",
                "plugins.x.deny[0]",
                "unknown variant",
            ),
            ("[plugins.X]\n", "plugins.X", "not a valid plugin name"),
            ("[restart]\njitter = 3.0\n", "restart.jitter", "outside"),
            (
                "[syscall_groups]\n\"@default\" = [\"read\"]\n",
                "syscall_groups.@default",
                "built-in",
            ),
            ("[[caps]]\n", "caps[0]", "invalid type"),
        ];
        for (text, key, reason) in cases {
            let e = Policy::from_layers(&[layer("/etc/corral/policy.d/50-x.toml", text)])
                .expect_err(text);
            assert_eq!(e.file, "/etc/corral/policy.d/50-x.toml", "{e}");
            assert_eq!(e.key, key, "{e}");
            assert!(e.reason.contains(reason), "{e}");
        }
    }

    #[test]
    fn syntax_errors_have_lines() {
        let e = Policy::from_layers(&[layer("p.toml", "[caps]\nmemory = \n")]).expect_err("bad");
        assert_eq!(e.file, "p.toml");
        assert_eq!(e.line, Some(2));
    }

    #[test]
    fn operator_groups_are_usable() {
        let p = Policy::from_layers(&[layer(
            "p.toml",
            "[syscall_groups]\n\"@mine\" = [\"fsync\", \"@sync\"]\n[seccomp]\nallow = [\"@mine\"]\n",
        )])
        .expect("policy");
        assert!(
            p.groups()
                .resolve("@mine")
                .expect("group")
                .contains(&"msync".to_string())
        );
    }

    #[test]
    fn remaps_may_not_cover_the_root_proc_or_the_scratch() {
        for (target, what) in [
            ("/", "cannot cover /"),
            ("/proc", "/proc"),
            ("/proc/self", "/proc"),
        ] {
            let text = format!("[plugins.x]\nremap = {{ \"{target}\" = \"/srv\" }}\n");
            let e = Policy::from_layers(&[PolicyText {
                name: "/etc/corral/policy.toml".into(),
                text,
            }])
            .expect_err(target);
            assert_eq!(e.file, "/etc/corral/policy.toml");
            assert_eq!(e.key, format!("plugins.x.remap.\"{target}\""));
            assert!(e.reason.contains(what), "{target}: {}", e.reason);
        }
        // A parent of the scratch mount point (/tmp by default) would hide it.
        let e = Policy::from_layers(&[PolicyText {
            name: "/etc/corral/policy.toml".into(),
            text: "[sandbox]\nscratch_path = \"/tmp/s\"\n[plugins.x]\nremap = { \"/tmp\" = \"/srv\" }\n".into(),
        }])
        .expect_err("covers the scratch");
        assert!(
            e.reason.contains("scratch mount point /tmp/s"),
            "{}",
            e.reason
        );
        // Relative paths are refused by the type.
        let e = Policy::from_layers(&[PolicyText {
            name: "/etc/corral/policy.toml".into(),
            text: "[plugins.x]\nremap = { \"data\" = \"/srv\" }\n".into(),
        }])
        .expect_err("relative");
        assert!(e.reason.contains("not absolute"), "{}", e.reason);
    }
}
