//! `plugin.toml`: what a plugin is and what it asks for. Parsing rejects
//! unknown keys and bad values with the file, the dotted key and the reason.
//! Seed 002's `plugin.yaml` ([`crate::manifest_yaml`]) and seed 000's bare
//! `index.js` folder ([`crate::package_layout`]) map onto the same model.

use crate::units::{ByteSize, CpuShare, HumanDuration};
use semver::{Version, VersionReq};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Component, Path};

/// File name of the manifest inside a package.
pub const MANIFEST_FILE: &str = "plugin.toml";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}{}: {key}: {reason}", line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct ManifestError {
    pub file: String,
    /// Dotted key path, e.g. `limits.memory`; `(document)` for syntax errors.
    pub key: String,
    pub reason: String,
    /// 1-based line of the offending value when known.
    pub line: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub plugin: PluginSection,
    #[serde(default)]
    pub dependencies: BTreeMap<PluginName, VersionReq>,
    #[serde(default)]
    pub permissions: Permissions,
    #[serde(default)]
    pub limits: LimitRequests,
    /// JSON schema of the plugin's settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginSection {
    pub name: PluginName,
    pub version: Version,
    #[serde(default)]
    pub description: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub author: String,
    /// An SPDX expression, as the author wrote it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub license: String,
    pub entry: EntryPath,
    #[serde(default)]
    pub runtime: Runtime,
    /// The method a call that names none is served by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_method: Option<MethodName>,
    /// Range of corrald versions the plugin works with.
    #[serde(default = "any_engine")]
    pub engine: VersionReq,
    /// Children to keep running (a small pool); capped by policy.
    #[serde(default = "one")]
    pub instances: u32,
}

fn any_engine() -> VersionReq {
    VersionReq::STAR
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    /// A compiled executable: the entry is exec'd.
    #[default]
    Native,
    /// corral's embedded JavaScript engine (`corral-js`) runs the entry.
    Js,
    /// The host's Node.js runs the entry through corral's bootstrap.
    Node,
    /// The host's python3 runs the entry through corral's bootstrap.
    Python,
}

impl Runtime {
    /// True when the entry is a script another program runs.
    pub fn is_script(self) -> bool {
        self != Runtime::Native
    }
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Runtime::Native => "native",
            Runtime::Js => "js",
            Runtime::Node => "node",
            Runtime::Python => "python",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Permissions {
    #[serde(default)]
    pub fs: FsPermissions,
    #[serde(default)]
    pub net: NetPermission,
    /// May spawn subprocesses.
    #[serde(default)]
    pub exec: bool,
    /// Threads the plugin may run (including its main thread).
    #[serde(default = "one")]
    pub threads: u32,
    /// Event-bus topics (a host service).
    #[serde(default, skip_serializing_if = "EventPermissions::is_empty")]
    pub events: EventPermissions,
    /// Key-value tables and S3 buckets the host keeps for it (host
    /// services).
    #[serde(default, skip_serializing_if = "StoragePermissions::is_empty")]
    pub storage: StoragePermissions,
}

impl Default for Permissions {
    fn default() -> Self {
        Permissions {
            fs: FsPermissions::default(),
            net: NetPermission::None,
            exec: false,
            threads: 1,
            events: EventPermissions::default(),
            storage: StoragePermissions::default(),
        }
    }
}

/// `[permissions.events]`: topic patterns, in the plugin's own names.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventPermissions {
    #[serde(default)]
    pub publish: Vec<TopicPattern>,
    #[serde(default)]
    pub subscribe: Vec<TopicPattern>,
}

impl EventPermissions {
    pub fn is_empty(&self) -> bool {
        self.publish.is_empty() && self.subscribe.is_empty()
    }
}

/// `[permissions.storage]`: tables and buckets, in the plugin's own names.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoragePermissions {
    #[serde(default)]
    pub tables: Vec<ResourceName>,
    #[serde(default)]
    pub buckets: Vec<ResourceName>,
}

impl StoragePermissions {
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty() && self.buckets.is_empty()
    }
}

/// A topic or a topic pattern (`*` matches any run of characters).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TopicPattern(String);

impl TryFrom<String> for TopicPattern {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        crate::services::valid_name(&s, true)?;
        Ok(TopicPattern(s))
    }
}

impl From<TopicPattern> for String {
    fn from(p: TopicPattern) -> String {
        p.0
    }
}

impl TopicPattern {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TopicPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A table or bucket name (no wildcards).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ResourceName(String);

impl TryFrom<String> for ResourceName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        crate::services::valid_name(&s, false)?;
        Ok(ResourceName(s))
    }
}

impl From<ResourceName> for String {
    fn from(p: ResourceName) -> String {
        p.0
    }
}

impl ResourceName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ResourceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FsPermissions {
    #[serde(default)]
    pub read: Vec<HostPath>,
    #[serde(default)]
    pub write: Vec<HostPath>,
}

/// Network access: `"none"`, `"host"`, or `{ connect = ["tcp:443"] }`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum NetPermission {
    #[default]
    None,
    Connect(Vec<NetEndpoint>),
    Host,
}

impl NetPermission {
    /// The permission's level, used to compare against what policy grants.
    pub fn level(&self) -> &'static str {
        match self {
            NetPermission::None => "none",
            NetPermission::Connect(_) => "connect",
            NetPermission::Host => "host",
        }
    }
}

impl Serialize for NetPermission {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match self {
            NetPermission::None => s.serialize_str("none"),
            NetPermission::Host => s.serialize_str("host"),
            NetPermission::Connect(endpoints) => {
                let mut map = s.serialize_map(Some(1))?;
                map.serialize_entry("connect", endpoints)?;
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for NetPermission {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = NetPermission;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"none\", \"host\" or { connect = [\"tcp:PORT\", ...] }")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<NetPermission, E> {
                match v {
                    "none" => Ok(NetPermission::None),
                    "host" => Ok(NetPermission::Host),
                    other => Err(E::custom(format!(
                        "`{other}` is not a network permission: use \"none\", \"host\" or {{ connect = [\"tcp:PORT\"] }}"
                    ))),
                }
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<NetPermission, A::Error> {
                let mut connect: Option<Vec<NetEndpoint>> = None;
                while let Some(key) = map.next_key::<String>()? {
                    if key != "connect" {
                        return Err(serde::de::Error::unknown_field(&key, &["connect"]));
                    }
                    if connect.is_some() {
                        return Err(serde::de::Error::duplicate_field("connect"));
                    }
                    connect = Some(map.next_value()?);
                }
                let connect = connect.ok_or_else(|| serde::de::Error::missing_field("connect"))?;
                Ok(NetPermission::Connect(connect))
            }
        }
        d.deserialize_any(V)
    }
}

/// `tcp:PORT`: an outbound TCP port the plugin may connect to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NetEndpoint {
    pub port: u16,
}

impl TryFrom<String> for NetEndpoint {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let port = s.strip_prefix("tcp:").ok_or_else(|| {
            format!("`{s}` is not an endpoint: write tcp:PORT (only TCP ports can be confined)")
        })?;
        match port.parse::<u16>() {
            Ok(p) if p > 0 => Ok(NetEndpoint { port: p }),
            _ => Err(format!("`{s}`: `{port}` is not a TCP port (1-65535)")),
        }
    }
}

impl From<NetEndpoint> for String {
    fn from(e: NetEndpoint) -> String {
        format!("tcp:{}", e.port)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitRequests {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<ByteSize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuShare>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_files: Option<u64>,
    /// Size of the private scratch space.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<ByteSize>,
}

/// A plugin name: `[a-z0-9][a-z0-9_-]{0,63}`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PluginName(String);

impl PluginName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

pub fn validate_plugin_name(s: &str) -> Result<(), String> {
    let bytes = s.as_bytes();
    let first_ok = bytes
        .first()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let rest_ok = bytes
        .iter()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_' || *b == b'-');
    if !first_ok || !rest_ok || bytes.len() > 64 {
        return Err(format!(
            "`{s}` is not a valid plugin name: use 1 to 64 of a-z, 0-9, '_' and '-', starting with a letter or digit"
        ));
    }
    Ok(())
}

impl TryFrom<String> for PluginName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        validate_plugin_name(&s)?;
        Ok(PluginName(s))
    }
}

impl std::str::FromStr for PluginName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        PluginName::try_from(s.to_string())
    }
}

impl From<PluginName> for String {
    fn from(n: PluginName) -> String {
        n.0
    }
}

impl fmt::Display for PluginName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::borrow::Borrow<str> for PluginName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// A method name as calls name it: `greet`, `codeGeneration.generateCode`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MethodName(String);

impl MethodName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for MethodName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let ok = !s.is_empty()
            && s.len() <= 256
            && !s.chars().any(|c| c.is_control() || c.is_whitespace());
        if !ok {
            return Err(format!(
                "`{s}` is not a method name: 1 to 256 characters, no spaces or control characters"
            ));
        }
        Ok(MethodName(s))
    }
}

impl From<MethodName> for String {
    fn from(m: MethodName) -> String {
        m.0
    }
}

/// A path inside the package: relative, no `..`, no empty components.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EntryPath(String);

impl EntryPath {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for EntryPath {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if s.is_empty() || s.contains('\0') {
            return Err("the entry must be a non-empty path inside the package".into());
        }
        let path = Path::new(&s);
        for component in path.components() {
            match component {
                Component::Normal(_) | Component::CurDir => {}
                Component::ParentDir => {
                    return Err(format!("`{s}` leaves the package: '..' is not allowed"));
                }
                Component::RootDir | Component::Prefix(_) => {
                    return Err(format!(
                        "`{s}` is absolute: the entry must be inside the package"
                    ));
                }
            }
        }
        Ok(EntryPath(s))
    }
}

impl From<EntryPath> for String {
    fn from(p: EntryPath) -> String {
        p.0
    }
}

/// An absolute host path without `..` components.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HostPath(String);

impl HostPath {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn as_path(&self) -> &Path {
        Path::new(&self.0)
    }

    /// True when `self` is `other` or lies beneath it.
    pub fn is_within(&self, other: &HostPath) -> bool {
        self.as_path().starts_with(other.as_path())
    }
}

impl TryFrom<String> for HostPath {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if s.contains('\0') {
            return Err("a path may not contain NUL".into());
        }
        let path = Path::new(&s);
        if !path.is_absolute() {
            return Err(format!("`{s}` is not absolute"));
        }
        if path.components().any(|c| c == Component::ParentDir) {
            return Err(format!("`{s}` contains '..'"));
        }
        // Normalise "/a//b/./" to "/a/b" so prefix checks are exact.
        let normal: std::path::PathBuf = path.components().collect();
        Ok(HostPath(normal.to_string_lossy().into_owned()))
    }
}

impl std::str::FromStr for HostPath {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        HostPath::try_from(s.to_string())
    }
}

impl From<HostPath> for String {
    fn from(p: HostPath) -> String {
        p.0
    }
}

impl fmt::Display for HostPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Parses TOML text into `T`, turning serde errors into errors that name
/// the file, the dotted key and the reason. Shared by manifests and policy
/// files so both report alike.
pub fn parse_toml<T: serde::de::DeserializeOwned>(
    text: &str,
    file: &str,
) -> Result<T, ManifestError> {
    let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
    let deserializer = toml::Deserializer::parse(text).map_err(|e| ManifestError {
        file: file.to_string(),
        key: "(document)".into(),
        reason: e.message().trim().to_string(),
        line: e.span().map(|s| line_of(s.start)),
    })?;
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        ManifestError {
            file: file.to_string(),
            key: if key == "." { "(document)".into() } else { key },
            reason: inner.message().trim().to_string(),
            line: inner.span().map(|s| line_of(s.start)),
        }
    })
}

impl Manifest {
    /// Parses manifest text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Manifest, ManifestError> {
        let manifest: Manifest = parse_toml(text, file)?;
        manifest.check(file)?;
        Ok(manifest)
    }

    /// Reads and parses a manifest file: `plugin.yaml` (or `.yml`) as
    /// seed 002's manifest, anything else as `plugin.toml`.
    pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ManifestError {
            file: file.clone(),
            key: "(document)".into(),
            reason: format!("cannot read: {e}"),
            line: None,
        })?;
        if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            return crate::manifest_yaml::parse(&text, &file);
        }
        Manifest::parse(&text, &file)
    }

    pub fn name(&self) -> &str {
        self.plugin.name.as_str()
    }

    /// Checks that span several keys, after each key parsed on its own.
    pub(crate) fn check(&self, file: &str) -> Result<(), ManifestError> {
        let err = |key: &str, reason: String| ManifestError {
            file: file.to_string(),
            key: key.to_string(),
            reason,
            line: None,
        };
        if self.plugin.instances == 0 {
            return Err(err("plugin.instances", "must be at least 1".into()));
        }
        if self.permissions.threads == 0 {
            return Err(err("permissions.threads", "must be at least 1".into()));
        }
        if self.dependencies.contains_key(self.name()) {
            return Err(err(
                &format!("dependencies.{}", self.name()),
                "a plugin cannot depend on itself".into(),
            ));
        }
        if let Some(pids) = self.limits.pids
            && pids < u64::from(self.permissions.threads)
        {
            return Err(err(
                "limits.pids",
                format!(
                    "{pids} is below permissions.threads = {}: every thread counts as a task",
                    self.permissions.threads
                ),
            ));
        }
        for (key, value) in [
            ("limits.pids", self.limits.pids),
            ("limits.open_files", self.limits.open_files),
        ] {
            if value == Some(0) {
                return Err(err(key, "must be at least 1".into()));
            }
        }
        if self.limits.memory.is_some_and(|m| m.0 < (1 << 20)) {
            return Err(err("limits.memory", "must be at least 1MiB".into()));
        }
        if let Some(t) = self.limits.timeout
            && t.0.is_zero()
        {
            return Err(err("limits.timeout", "must be longer than 0s".into()));
        }
        if let NetPermission::Connect(endpoints) = &self.permissions.net
            && endpoints.is_empty()
        {
            return Err(err(
                "permissions.net.connect",
                "is empty: use net = \"none\" for no network".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
[plugin]
name = "csv-summary"
version = "1.2.0"
description = "summarises CSV"
entry = "bin/csv-summary"
runtime = "native"
engine = ">=0.1"
author = "Ada"
license = "MIT"
default_method = "summarise.all"

[dependencies]
"text-utils" = "^1"

[permissions]
fs.read  = ["/usr/share/zoneinfo"]
fs.write = []
net = { connect = ["tcp:443"] }
exec = false
threads = 4

[limits]
memory = "128MiB"
cpu = "50%"
pids = 16
timeout = "30s"
open_files = 64
"#;

    #[test]
    fn full_manifest_parses() {
        let m = Manifest::parse(FULL, "plugin.toml").expect("parse");
        assert_eq!(m.name(), "csv-summary");
        assert_eq!(m.permissions.threads, 4);
        assert_eq!(
            m.permissions.net,
            NetPermission::Connect(vec![NetEndpoint { port: 443 }])
        );
        assert_eq!(m.limits.memory, Some(ByteSize(128 << 20)));
        assert_eq!(m.limits.cpu, Some(CpuShare(5_000)));
        assert_eq!(m.plugin.instances, 1);
        assert_eq!(m.plugin.author, "Ada");
        assert_eq!(m.plugin.license, "MIT");
        assert_eq!(
            m.plugin.default_method.as_ref().map(MethodName::as_str),
            Some("summarise.all")
        );
    }

    #[test]
    fn every_runtime_is_a_word() {
        for (word, runtime) in [
            ("native", Runtime::Native),
            ("js", Runtime::Js),
            ("node", Runtime::Node),
            ("python", Runtime::Python),
        ] {
            let m = Manifest::parse(&FULL.replace("\"native\"", &format!("\"{word}\"")), "p")
                .expect(word);
            assert_eq!(m.plugin.runtime, runtime);
            assert_eq!(runtime.to_string(), word);
            assert_eq!(runtime.is_script(), word != "native");
        }
    }

    fn error_of(text: &str) -> ManifestError {
        Manifest::parse(text, "x/plugin.toml").expect_err("must be rejected")
    }

    #[test]
    fn unknown_key_names_file_key_and_reason() {
        let e = error_of(&FULL.replace("threads = 4", "threads = 4\nsudo = true"));
        assert_eq!(e.file, "x/plugin.toml");
        assert_eq!(e.key, "permissions.sudo");
        assert!(e.reason.contains("unknown field `sudo`"), "{e}");
        assert!(e.line.is_some());
        assert!(e.to_string().starts_with("x/plugin.toml:"), "{e}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            (
                FULL.replace("csv-summary\"\nversion", "CSV\"\nversion"),
                "plugin.name",
            ),
            (FULL.replace("1.2.0", "one"), "plugin.version"),
            (
                FULL.replace("bin/csv-summary", "../../bin/sh"),
                "plugin.entry",
            ),
            (FULL.replace("bin/csv-summary", "/bin/sh"), "plugin.entry"),
            (
                FULL.replace("\"/usr/share/zoneinfo\"", "\"share\""),
                "permissions.fs.read[0]",
            ),
            (
                FULL.replace("tcp:443", "udp:53"),
                "permissions.net.connect[0]",
            ),
            (FULL.replace("\"128MiB\"", "\"lots\""), "limits.memory"),
            (FULL.replace("\"50%\"", "\"half\""), "limits.cpu"),
            (FULL.replace("\"30s\"", "\"soon\""), "limits.timeout"),
            (FULL.replace("pids = 16", "pids = 2"), "limits.pids"),
            (
                FULL.replace("runtime = \"native\"", "runtime = \"cobol\""),
                "plugin.runtime",
            ),
            (
                FULL.replace("\"^1\"", "\"banana\""),
                "dependencies.text-utils",
            ),
            (
                FULL.replace("\"summarise.all\"", "\"two words\""),
                "plugin.default_method",
            ),
            (
                FULL.replace("author = \"Ada\"", "author = 3"),
                "plugin.author",
            ),
        ];
        for (text, key) in cases {
            let e = error_of(&text);
            assert_eq!(e.key, key, "{e}");
            assert!(!e.reason.is_empty());
        }
    }

    #[test]
    fn syntax_error_has_a_line() {
        let e = error_of("[plugin]\nname = \n");
        assert_eq!(e.key, "(document)");
        assert_eq!(e.line, Some(2));
    }

    #[test]
    fn minimal_manifest_defaults_to_nothing_granted() {
        let m = Manifest::parse(
            "[plugin]\nname = \"a\"\nversion = \"0.1.0\"\nentry = \"a\"\n",
            "p",
        )
        .expect("parse");
        assert_eq!(m.permissions, Permissions::default());
        assert_eq!(m.limits, LimitRequests::default());
    }

    #[test]
    fn host_paths_are_normalised() {
        let p: HostPath = "/usr//share/./zoneinfo/".parse().expect("parse");
        assert_eq!(p.as_str(), "/usr/share/zoneinfo");
        assert!(p.is_within(&"/usr/share".parse().expect("parse")));
        assert!(!p.is_within(&"/usr/sh".parse().expect("parse")));
    }
}
