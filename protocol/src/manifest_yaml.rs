//! Seed 002's `plugin.yaml`, mapped onto [`Manifest`]. Its keys:
//!
//! | `plugin.yaml` | becomes |
//! |---|---|
//! | `name`, `version`, `author`, `description`, `license` | the same in `[plugin]` |
//! | `entry_point` (or `entry`) | `plugin.entry`; `./` is allowed |
//! | `runtime` | `plugin.runtime`; when absent, from the entry: `.py` python, `.js`/`.mjs`/`.cjs` js |
//! | `min_engine_version`, `max_engine_version` | `plugin.engine = ">=min, <=max"` (versions of corrald) |
//! | `permissions: [network.http, network.socket, system.exec]` | `net = { connect = ["tcp:80", "tcp:443"] }`, `net = "host"`, `exec = true` |
//! | `permissions: {fs: ..., net: ..., exec: ..., threads: ...}` | corral's own `[permissions]`, as in `plugin.toml` |
//! | `configuration: {key: {type, description, required, default}}` | `[config]` as a JSON Schema object |
//! | `config_schema` | `[config]` as written (a JSON Schema) |
//! | `node_types` | nothing: the plugin's adapter lists its nodes itself |
//! | `default_method`, `limits`, `instances` | the same as in `plugin.toml` |
//!
//! What cannot be honoured is an error naming the key, never dropped:
//! `dependencies` (corral installs no Python packages; ship them in the
//! package), `filesystem.read`/`filesystem.write` without paths,
//! `gpu.access`, `memory.unlimited`, and any key not listed here.

use crate::manifest::{
    EntryPath, LimitRequests, Manifest, ManifestError, MethodName, NetEndpoint, NetPermission,
    Permissions, PluginName, PluginSection, Runtime,
};
use semver::{Version, VersionReq};
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SeedManifest {
    name: PluginName,
    version: Version,
    #[serde(default)]
    author: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    license: String,
    #[serde(default)]
    dependencies: Vec<String>,
    #[serde(default)]
    node_types: Vec<String>,
    #[serde(default)]
    permissions: Option<serde_norway::Value>,
    #[serde(alias = "entry")]
    entry_point: EntryPath,
    runtime: Option<Runtime>,
    min_engine_version: Option<Version>,
    max_engine_version: Option<Version>,
    configuration: Option<BTreeMap<String, ConfigParameter>>,
    config_schema: Option<serde_json::Value>,
    default_method: Option<MethodName>,
    #[serde(default)]
    limits: LimitRequests,
    instances: Option<u32>,
}

/// One entry of seed 002's `configuration`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigParameter {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    required: bool,
    #[serde(default)]
    default: Option<serde_json::Value>,
}

/// Parses `plugin.yaml` text; `file` names it in errors.
pub fn parse(text: &str, file: &str) -> Result<Manifest, ManifestError> {
    let err = |key: &str, reason: String| ManifestError {
        file: file.to_string(),
        key: key.to_string(),
        reason,
        line: None,
    };
    let seed: SeedManifest = serde_path_to_error::deserialize(
        serde_norway::Deserializer::from_str(text),
    )
    .map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        ManifestError {
            file: file.to_string(),
            key: if key == "." { "(document)".into() } else { key },
            reason: inner.to_string(),
            line: inner.location().map(|l| l.line()),
        }
    })?;
    if let Some(first) = seed.dependencies.first() {
        return Err(err(
            "dependencies",
            format!(
                "corral installs no packages for a plugin (`{first}`): ship them inside the package (for Python, next to the entry, where the entry's directory is on sys.path)"
            ),
        ));
    }
    let _listed_by_the_adapter = seed.node_types;
    let permissions = match seed.permissions {
        None => Permissions::default(),
        Some(value) => permissions(value, file)?,
    };
    let runtime = seed
        .runtime
        .unwrap_or_else(|| runtime_of(seed.entry_point.as_str()));
    let engine = engine_range(seed.min_engine_version, seed.max_engine_version)
        .map_err(|reason| err("min_engine_version", reason))?;
    let config = match (seed.configuration, seed.config_schema) {
        (Some(_), Some(_)) => {
            return Err(err(
                "config_schema",
                "give `configuration` or `config_schema`, not both".into(),
            ));
        }
        (Some(parameters), None) => Some(schema_of(parameters)),
        (None, schema) => schema,
    };
    let manifest = Manifest {
        plugin: PluginSection {
            name: seed.name,
            version: seed.version,
            description: seed.description,
            author: seed.author,
            license: seed.license,
            entry: seed.entry_point,
            runtime,
            default_method: seed.default_method,
            engine,
            instances: seed.instances.unwrap_or(1),
            idempotent: Vec::new(),
        },
        dependencies: BTreeMap::new(),
        permissions,
        limits: seed.limits,
        config,
    };
    manifest.check(file)?;
    Ok(manifest)
}

/// The runtime an entry's extension implies.
fn runtime_of(entry: &str) -> Runtime {
    let ext = std::path::Path::new(entry)
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("");
    match ext {
        "py" => Runtime::Python,
        "js" | "mjs" | "cjs" => Runtime::Js,
        _ => Runtime::Native,
    }
}

fn engine_range(min: Option<Version>, max: Option<Version>) -> Result<VersionReq, String> {
    let text = match (min, max) {
        (None, None) => return Ok(VersionReq::STAR),
        (Some(min), None) => format!(">={min}"),
        (None, Some(max)) => format!("<={max}"),
        (Some(min), Some(max)) => format!(">={min}, <={max}"),
    };
    VersionReq::parse(&text).map_err(|e| format!("`{text}`: {e}"))
}

/// Seed 002's permission list, or corral's own `permissions` mapping.
fn permissions(value: serde_norway::Value, file: &str) -> Result<Permissions, ManifestError> {
    let err = |key: String, reason: String| ManifestError {
        file: file.to_string(),
        key,
        reason,
        line: None,
    };
    let list = match value {
        serde_norway::Value::Sequence(list) => list,
        mapping @ serde_norway::Value::Mapping(_) => {
            return serde_path_to_error::deserialize(mapping).map_err(|e| {
                let path = e.path().to_string();
                err(
                    if path == "." {
                        "permissions".into()
                    } else {
                        format!("permissions.{path}")
                    },
                    e.into_inner().to_string(),
                )
            });
        }
        other => {
            return Err(err(
                "permissions".into(),
                format!(
                    "expected a list of permissions (network.http, ...) or corral's mapping {{fs, net, exec, threads}}, got {}",
                    kind_of(&other)
                ),
            ));
        }
    };
    let mut granted = Permissions::default();
    for (i, item) in list.iter().enumerate() {
        let key = format!("permissions[{i}]");
        let Some(name) = item.as_str() else {
            return Err(err(
                key,
                format!("expected a string, got {}", kind_of(item)),
            ));
        };
        match name {
            "network.http" => {
                granted.net = NetPermission::Connect(vec![
                    NetEndpoint { port: 80 },
                    NetEndpoint { port: 443 },
                ]);
            }
            "network.socket" => granted.net = NetPermission::Host,
            "system.exec" => granted.exec = true,
            "filesystem.read" | "filesystem.write" => {
                return Err(err(
                    key,
                    format!(
                        "`{name}` names no paths, and corral grants paths, not the filesystem: write permissions as a mapping, e.g. permissions: {{fs: {{read: [/usr/share/zoneinfo]}}}}"
                    ),
                ));
            }
            "gpu.access" => {
                return Err(err(key, "corral gives plugins no device access".into()));
            }
            "memory.unlimited" => {
                return Err(err(
                    key,
                    "corral always limits memory: ask for what the plugin needs with limits: {memory: 512MiB}".into(),
                ));
            }
            other => {
                return Err(err(
                    key,
                    format!(
                        "unknown permission `{other}`: plugin.yaml knows network.http, network.socket and system.exec"
                    ),
                ));
            }
        }
    }
    Ok(granted)
}

fn kind_of(value: &serde_norway::Value) -> &'static str {
    match value {
        serde_norway::Value::Null => "nothing",
        serde_norway::Value::Bool(_) => "a boolean",
        serde_norway::Value::Number(_) => "a number",
        serde_norway::Value::String(_) => "a string",
        serde_norway::Value::Sequence(_) => "a list",
        serde_norway::Value::Mapping(_) => "a mapping",
        serde_norway::Value::Tagged(_) => "a tagged value",
    }
}

/// Seed 002's `configuration` as the JSON Schema `[config]` holds.
fn schema_of(parameters: BTreeMap<String, ConfigParameter>) -> serde_json::Value {
    let mut properties = serde_json::Map::new();
    let mut required = Vec::new();
    for (name, p) in parameters {
        let mut property = serde_json::Map::new();
        property.insert("type".into(), p.kind.into());
        if let Some(d) = p.description {
            property.insert("description".into(), d.into());
        }
        if let Some(d) = p.default {
            property.insert("default".into(), d);
        }
        if p.required {
            required.push(serde_json::Value::from(name.clone()));
        }
        properties.insert(name, property.into());
    }
    serde_json::json!({
        "type": "object",
        "properties": properties,
        "required": required,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::units::ByteSize;

    /// Seed 002's example, less its pip dependencies (see
    /// `dependencies_are_refused`) and with filesystem access written the
    /// way corral grants it.
    const SEED: &str = r#"
# plugin.yaml
name: example_plugin
version: 1.0.0
author: Your Name
description: Example plugin for demonstration
license: MIT

node_types:
  - example_processor
  - example_transformer

permissions:
  - network.http

entry_point: ./example_plugin.py
min_engine_version: 0.1.0
max_engine_version: 2.0.0

configuration:
  api_key:
    type: string
    description: API key for external service
    required: false
  max_batch_size:
    type: integer
    description: Maximum batch size for processing
    default: 100
"#;

    fn error_of(text: &str) -> ManifestError {
        parse(text, "x/plugin.yaml").expect_err("must be rejected")
    }

    #[test]
    fn seed_002_example_maps_onto_the_manifest() {
        let m = parse(SEED, "plugin.yaml").expect("parse");
        assert_eq!(m.name(), "example_plugin");
        assert_eq!(m.plugin.version, Version::new(1, 0, 0));
        assert_eq!(m.plugin.author, "Your Name");
        assert_eq!(m.plugin.license, "MIT");
        assert_eq!(m.plugin.entry.as_str(), "./example_plugin.py");
        assert_eq!(m.plugin.runtime, Runtime::Python);
        assert!(m.plugin.engine.matches(&Version::new(0, 1, 0)));
        assert!(!m.plugin.engine.matches(&Version::new(2, 0, 1)));
        assert_eq!(
            m.permissions.net,
            NetPermission::Connect(vec![NetEndpoint { port: 80 }, NetEndpoint { port: 443 }])
        );
        assert!(!m.permissions.exec);
        let config = m.config.expect("config schema");
        assert_eq!(config["properties"]["max_batch_size"]["default"], 100);
        assert_eq!(config["properties"]["api_key"]["type"], "string");
        assert_eq!(config["required"], serde_json::json!([]));
    }

    #[test]
    fn corral_sections_work_in_yaml_too() {
        let m = parse(
            "name: js-tool\nversion: 0.2.0\nentry: index.js\ndefault_method: codeGeneration.generateCode\npermissions:\n  fs:\n    read: [/usr/share/zoneinfo]\n  threads: 2\nlimits:\n  memory: 32MiB\n",
            "plugin.yaml",
        )
        .expect("parse");
        assert_eq!(m.plugin.runtime, Runtime::Js);
        assert_eq!(m.permissions.threads, 2);
        assert_eq!(m.permissions.fs.read[0].as_str(), "/usr/share/zoneinfo");
        assert_eq!(m.limits.memory, Some(ByteSize(32 << 20)));
        assert_eq!(
            m.plugin.default_method.as_ref().map(MethodName::as_str),
            Some("codeGeneration.generateCode")
        );
    }

    #[test]
    fn what_corral_cannot_honour_is_an_error_naming_the_key() {
        let cases = [
            (
                SEED.replace("license: MIT", "license: MIT\nhomepage: x"),
                "homepage",
                "unknown field `homepage`",
            ),
            (
                SEED.replace(
                    "node_types:",
                    "dependencies:\n  - numpy>=1.20.0\nnode_types:",
                ),
                "dependencies",
                "installs no packages",
            ),
            (
                SEED.replace("- network.http", "- filesystem.read"),
                "permissions[0]",
                "names no paths",
            ),
            (
                SEED.replace("- network.http", "- gpu.access"),
                "permissions[0]",
                "no device access",
            ),
            (
                SEED.replace("- network.http", "- memory.unlimited"),
                "permissions[0]",
                "always limits memory",
            ),
            (
                SEED.replace("- network.http", "- network.http\n  - teleport"),
                "permissions[1]",
                "unknown permission `teleport`",
            ),
            (
                SEED.replace("version: 1.0.0", "version: one"),
                "version",
                "major version",
            ),
            (
                SEED.replace("name: example_plugin", "name: Example"),
                "name",
                "not a valid plugin name",
            ),
            (
                SEED.replace("./example_plugin.py", "../x.py"),
                "entry_point",
                "leaves the package",
            ),
            (
                SEED.replace("required: false", "required: false\n    secret: true"),
                "configuration.api_key.secret",
                "unknown field `secret`",
            ),
            (
                SEED.replace("  - network.http", "  fs: {read: [relative]}"),
                "permissions.fs.read[0]",
                "not absolute",
            ),
        ];
        for (text, key, reason) in cases {
            let e = error_of(&text);
            assert_eq!(e.file, "x/plugin.yaml");
            assert_eq!(e.key, key, "{e}");
            assert!(e.reason.contains(reason), "{e}");
        }
    }

    #[test]
    fn a_yaml_syntax_error_has_a_line() {
        let e = error_of("name: a\nversion: [\n");
        assert!(e.line.is_some(), "{e}");
    }
}
