//! Plugin settings. A manifest's `[config]` is a JSON Schema; the operator
//! gives the values in the policy (`[plugins.<name>] settings = {...}`) or
//! through the API (`PATCH /v1/plugins/{name}/config`, a JSON merge patch,
//! RFC 7396), and those win: they are an overlay kept in the daemon's
//! state, merged over the policy's values. The schema's `default`s fill
//! what neither gives, then the result is validated; a value that does
//! not fit is `invalid_config` naming the JSON pointer and the schema
//! keyword it breaks, and nothing changes. The effective settings reach
//! the plugin in `Init.config` and through the `config.get` operation.
//!
//! The schema itself is checked when the package is installed (against
//! its draft's meta-schema, by the `jsonschema` crate, which resolves no
//! remote `$ref`: it is built without network retrieval), so a bad one
//! is `invalid_manifest` naming `config`.

use super::{ServiceFuture, body, unknown_operation};
use corral_protocol::error::{CorralError, ErrorKind, SchemaViolation};
use corral_protocol::manifest::Manifest;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

/// Largest settings document, encoded, set through the API.
pub const MAX_SETTINGS_BYTES: usize = 256 * 1024;

/// Deepest nesting walked when defaults are applied.
const MAX_DEPTH: usize = 32;

/// Checks the manifest's `[config]` schema: `invalid_manifest` naming
/// `config` and what is wrong.
pub fn check_schema(manifest: &Manifest, file: &str) -> Result<(), CorralError> {
    let Some(schema) = &manifest.config else {
        return Ok(());
    };
    compile(schema).map(|_| ()).map_err(|reason| {
        CorralError::new(
            ErrorKind::InvalidManifest {
                file: file.to_string(),
                key: "config".into(),
                reason: reason.clone(),
            },
            format!("{file}: config: not a valid JSON Schema: {reason}"),
        )
    })
}

fn compile(schema: &Value) -> Result<jsonschema::Validator, String> {
    jsonschema::validator_for(schema).map_err(|e| {
        let at = e.instance_path().to_string();
        if at.is_empty() {
            e.to_string()
        } else {
            format!("at {at}: {e}")
        }
    })
}

/// The API's overlays, by plugin, mirrored into the daemon's state file.
#[derive(Debug, Default)]
pub struct Overlays(RwLock<BTreeMap<String, Value>>);

impl Overlays {
    pub fn new(saved: BTreeMap<String, Value>) -> Overlays {
        Overlays(RwLock::new(saved))
    }

    pub fn get(&self, plugin: &str) -> Option<Value> {
        self.0.read().ok().and_then(|m| m.get(plugin).cloned())
    }

    /// Sets (or with `None` drops) a plugin's overlay; returns the old.
    pub fn set(&self, plugin: &str, overlay: Option<Value>) -> Option<Value> {
        let mut map = self.0.write().unwrap_or_else(|p| p.into_inner());
        match overlay {
            Some(v) => map.insert(plugin.to_string(), v),
            None => map.remove(plugin),
        }
    }

    pub fn snapshot(&self) -> BTreeMap<String, Value> {
        self.0.read().map(|m| m.clone()).unwrap_or_default()
    }
}

/// Where each layer of a plugin's settings comes from, for errors.
pub struct Layers<'a> {
    pub plugin: &'a str,
    /// `[plugins.<name>] settings` and the policy file that set it.
    pub policy: Option<(&'a Value, String)>,
    /// What the API set.
    pub overlay: Option<&'a Value>,
}

/// The effective settings of a plugin: the policy's, the API's overlay
/// merged over them, the schema's defaults filled in, validated.
pub fn effective(manifest: &Manifest, layers: &Layers<'_>) -> Result<Value, CorralError> {
    let mut value = match &layers.policy {
        Some((v, _)) => (*v).clone(),
        None => Value::Object(Map::new()),
    };
    if let Some(overlay) = layers.overlay {
        json_patch::merge(&mut value, overlay);
    }
    let Some(schema) = &manifest.config else {
        return Ok(value);
    };
    apply_defaults(schema, &mut value, 0);
    let validator = compile(schema).map_err(|reason| {
        CorralError::new(
            ErrorKind::InvalidManifest {
                file: format!("{} (plugin.toml)", layers.plugin),
                key: "config".into(),
                reason: reason.clone(),
            },
            format!("config: not a valid JSON Schema: {reason}"),
        )
    })?;
    let Some(error) = validator.iter_errors(&value).next() else {
        return Ok(value);
    };
    let pointer = error.instance_path().to_string();
    let rule = error.kind().keyword().to_string();
    let reason = error.to_string();
    let key = format!("plugins.{}.settings", layers.plugin);
    let from_api = layers
        .overlay
        .is_some_and(|o| o.pointer(&pointer).is_some());
    let file = match (&layers.policy, from_api) {
        (_, true) => "settings set through the API".to_string(),
        (Some((_, file)), false) => file.clone(),
        (None, false) => "the schema's defaults (no settings given)".to_string(),
    };
    let shown = if pointer.is_empty() { "/" } else { &pointer };
    Err(CorralError::new(
        ErrorKind::InvalidConfig {
            file: file.clone(),
            key: key.clone(),
            reason: reason.clone(),
            schema: Some(Box::new(SchemaViolation {
                pointer: shown.to_string(),
                rule: rule.clone(),
            })),
        },
        format!(
            "the settings of {} do not fit its [config] schema: at {shown}, {reason} (rule {rule}; from {file}, {key})",
            layers.plugin
        ),
    ))
}

/// Fills `value` with the `default` of every property the schema's
/// `properties` give and `value` lacks, depth first into objects.
fn apply_defaults(schema: &Value, value: &mut Value, depth: usize) {
    if depth > MAX_DEPTH {
        return;
    }
    let (Some(props), Some(object)) = (
        schema.get("properties").and_then(Value::as_object),
        value.as_object_mut(),
    ) else {
        return;
    };
    for (name, sub) in props {
        if !object.contains_key(name)
            && let Some(default) = sub.get("default")
        {
            object.insert(name.clone(), default.clone());
        }
        if let Some(child) = object.get_mut(name) {
            apply_defaults(sub, child, depth + 1);
        }
    }
}

/// A merge patch from the API applied to a plugin's overlay: the new
/// overlay. `null` members remove what the API set (the policy's value,
/// if any, shows again).
pub fn patched_overlay(old: Option<&Value>, patch: &Value) -> Result<Value, CorralError> {
    if !patch.is_object() {
        return Err(CorralError::invalid_input(
            "a settings patch is a JSON object (RFC 7396 merge patch)",
        ));
    }
    let mut overlay = old.cloned().unwrap_or_else(|| Value::Object(Map::new()));
    json_patch::merge(&mut overlay, patch);
    let size = serde_json::to_vec(&overlay).map(|b| b.len()).unwrap_or(0);
    if size > MAX_SETTINGS_BYTES {
        return Err(CorralError::new(
            ErrorKind::PayloadTooLarge {
                limit_bytes: MAX_SETTINGS_BYTES as u64,
                size_bytes: size as u64,
            },
            format!("settings of {size} bytes are over the limit of {MAX_SETTINGS_BYTES}"),
        ));
    }
    Ok(overlay)
}

/// The `config` service: `get` answers the caller's current settings.
/// `plugin` is the caller's: a plugin reads its own settings only.
pub fn handle(
    daemon: &std::sync::Weak<crate::daemon::Daemon>,
    plugin: &str,
    operation: &str,
) -> ServiceFuture {
    let answer = match operation {
        "get" => match daemon.upgrade() {
            Some(d) => d.settings_of(plugin).and_then(|s: Arc<Value>| body(&*s)),
            None => Err(CorralError::new(
                ErrorKind::ShuttingDown,
                "corrald is shutting down",
            )),
        },
        other => Err(unknown_operation("config", other, &["get"])),
    };
    Box::pin(async move { answer })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn manifest(schema: Value) -> Manifest {
        let mut m = corral_protocol::package_layout::bare_manifest(
            corral_protocol::manifest::PluginName::try_from("p".to_string()).expect("name"),
        );
        m.config = Some(schema);
        m
    }

    fn schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "greeting": {"type": "string", "default": "hello"},
                "retries": {"type": "integer", "minimum": 0, "maximum": 5},
                "db": {"type": "object", "properties": {"port": {"type": "integer", "default": 5432}}, "default": {}}
            },
            "additionalProperties": false
        })
    }

    #[test]
    fn defaults_fill_what_no_layer_gives_and_the_api_wins() {
        let m = manifest(schema());
        let policy = json!({"greeting": "hi", "retries": 1});
        let overlay = json!({"retries": 3});
        let v = effective(
            &m,
            &Layers {
                plugin: "p",
                policy: Some((&policy, "policy.toml".into())),
                overlay: Some(&overlay),
            },
        )
        .expect("valid");
        assert_eq!(
            v,
            json!({"greeting": "hi", "retries": 3, "db": {"port": 5432}})
        );
    }

    #[test]
    fn a_value_that_breaks_the_schema_names_pointer_rule_and_source() {
        let m = manifest(schema());
        let policy = json!({"retries": 1});
        let overlay = json!({"retries": 9});
        let e = effective(
            &m,
            &Layers {
                plugin: "p",
                policy: Some((&policy, "policy.toml".into())),
                overlay: Some(&overlay),
            },
        )
        .expect_err("too many");
        match e.kind {
            ErrorKind::InvalidConfig {
                schema: Some(v),
                file,
                key,
                ..
            } => {
                assert_eq!(v.pointer, "/retries");
                assert_eq!(v.rule, "maximum");
                assert_eq!(file, "settings set through the API");
                assert_eq!(key, "plugins.p.settings");
            }
            other => panic!("not invalid_config: {other:?}"),
        }
        let policy = json!({"db": {"port": "x"}});
        let e = effective(
            &m,
            &Layers {
                plugin: "p",
                policy: Some((&policy, "policy.toml".into())),
                overlay: None,
            },
        )
        .expect_err("wrong type");
        assert!(
            matches!(&e.kind, ErrorKind::InvalidConfig { schema: Some(v), file, .. }
                if v.pointer == "/db/port" && v.rule == "type" && file == "policy.toml"),
            "{e:?}"
        );
        let policy = json!({"colour": 1});
        let e = effective(
            &m,
            &Layers {
                plugin: "p",
                policy: Some((&policy, "policy.toml".into())),
                overlay: None,
            },
        )
        .expect_err("unknown key");
        assert!(
            matches!(&e.kind, ErrorKind::InvalidConfig { schema: Some(v), .. } if v.rule == "additionalProperties"),
            "{e:?}"
        );
    }

    #[test]
    fn a_bad_schema_is_an_invalid_manifest_naming_config() {
        for bad in [
            json!({"type": "no-such-type"}),
            json!({"properties": {"a": {"minimum": "ten"}}}),
            json!({"$ref": "https://example.com/remote.json"}),
        ] {
            let e = check_schema(&manifest(bad.clone()), "p/plugin.toml").expect_err("bad schema");
            assert!(
                matches!(&e.kind, ErrorKind::InvalidManifest { key, .. } if key == "config"),
                "{bad}: {e:?}"
            );
        }
        check_schema(&manifest(schema()), "p/plugin.toml").expect("good schema");
    }

    #[test]
    fn get_is_the_only_operation_and_needs_a_daemon() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let gone = std::sync::Weak::new();
        let set = rt.block_on(handle(&gone, "p", "set"));
        assert!(
            matches!(set, Err(ref e) if e.code() == "invalid_input" && e.message.contains("get")),
            "{set:?}"
        );
        let get = rt.block_on(handle(&gone, "p", "get"));
        assert!(
            matches!(get, Err(ref e) if e.code() == "shutting_down"),
            "{get:?}"
        );
    }

    #[test]
    fn a_patch_merges_and_null_removes() {
        let old = json!({"a": 1, "b": {"c": 2}});
        let v = patched_overlay(Some(&old), &json!({"a": null, "b": {"d": 3}})).expect("patch");
        assert_eq!(v, json!({"b": {"c": 2, "d": 3}}));
        assert!(patched_overlay(None, &json!([1])).is_err());
        let big = json!({"x": "a".repeat(MAX_SETTINGS_BYTES)});
        assert!(matches!(
            patched_overlay(None, &big).map_err(|e| e.kind),
            Err(ErrorKind::PayloadTooLarge { .. })
        ));
    }
}
