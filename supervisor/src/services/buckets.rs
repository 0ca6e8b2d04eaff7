//! The `s3` service: objects in the S3 buckets the policy grants a plugin,
//! read and written by corrald's own client (PROTOCOL.md section 9). The
//! plugin has no network and never sees a credential: it names a bucket
//! and a key, the host checks and maps them and does the request.
//!
//! A request goes through, in order:
//!
//! 1. the grant: the bucket must be in `policy.services.buckets`, else
//!    `permission_denied` naming `s3.bucket <name>`;
//! 2. the input: keys are 1 to 1024 bytes with no control characters and
//!    no empty, `.` or `..` segment (some S3-compatible stores map keys
//!    to paths), bodies are base64 and bounded by the request size;
//! 3. the names: the real bucket is `bucket_names.resolve(name)`. When the
//!    operator did not map that name, the plugin's keys live under
//!    `<plugin>/` in the real bucket, so plugins given the same bucket
//!    cannot see each other's objects; a mapped bucket is reached as is
//!    (that is how an operator shares one);
//! 4. the store, through the client built once from `[services.s3]` in
//!    corrald.toml (the same builder the package sources use).
//!
//! Without `[services.s3]` every request is `service_unavailable`. A store
//! that fails is `source_error` with source `s3` and a `problem`
//! (`unreachable`, `not_found`, `access_denied`, `no_such_bucket`,
//! `too_large`, `interrupted`, `other`), in the plugin's own names: the
//! SDK's detail (endpoint, real bucket, request ids) goes to the log only.
//! A `get` reads at most what fits in one response frame.

use super::{Caller, ServiceFuture, body, clip, parse, unknown_operation};
use crate::sources::s3::{Connection, S3, client, problem_of, source_error};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use corral_protocol::error::{CorralError, ErrorKind};
use corral_protocol::services::ServiceGrants;
use serde::Deserialize;

/// `[services.s3]` in corrald.toml: the store plugins' buckets live in.
///
/// ```toml
/// [services.s3]
/// endpoint = "http://127.0.0.1:9000"   # unset: AWS
/// region = "us-east-1"
/// path_style = true
/// access_key_id = "..."                # unset: the standard AWS chain
/// secret_access_key = "..."
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3ServiceConfig {
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default = "default_region")]
    pub region: String,
    #[serde(default)]
    pub path_style: bool,
    #[serde(default)]
    pub access_key_id: Option<String>,
    #[serde(default)]
    pub secret_access_key: Option<String>,
}

fn default_region() -> String {
    "us-east-1".into()
}

impl S3ServiceConfig {
    /// Checks the settings; the error names the key.
    pub fn check(&self) -> Result<(), (String, String)> {
        if self.region.trim().is_empty() {
            return Err(("services.s3.region".into(), "must not be empty".into()));
        }
        if self.access_key_id.is_some() != self.secret_access_key.is_some() {
            return Err((
                "services.s3.access_key_id".into(),
                "set both access_key_id and secret_access_key, or neither".into(),
            ));
        }
        if let Some(e) = &self.endpoint
            && !(e.starts_with("http://") || e.starts_with("https://"))
        {
            return Err((
                "services.s3.endpoint".into(),
                format!("`{e}` is not an http:// or https:// URL"),
            ));
        }
        Ok(())
    }
}

/// Longest key, in bytes (S3's own limit).
pub const MAX_KEY: usize = 1024;
/// Most objects one `list` returns.
pub const MAX_LIST: usize = 1000;
const DEFAULT_LIST: usize = 100;
/// Bytes a response needs besides the object's base64.
const RESPONSE_OVERHEAD: u64 = 4096;
const OPERATIONS: &[&str] = &["get", "put", "list", "delete"];
/// How errors name the store.
const SOURCE: &str = "s3";

#[derive(Debug, Clone)]
pub struct Buckets {
    client: Option<aws_sdk_s3::Client>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyArgs {
    bucket: String,
    key: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutArgs {
    bucket: String,
    key: String,
    body: String,
    #[serde(default)]
    content_type: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListArgs {
    bucket: String,
    #[serde(default)]
    prefix: String,
    #[serde(default)]
    after: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
}

/// A bucket and key prefix, checked and mapped.
#[derive(Debug)]
struct Place {
    /// The plugin's name for the bucket, for messages.
    name: String,
    s3: S3,
    /// `<plugin>/` for an unmapped bucket, else empty.
    key_prefix: String,
}

impl Buckets {
    pub async fn new(config: Option<&S3ServiceConfig>) -> Buckets {
        let client = match config {
            Some(c) => Some(
                client(&Connection {
                    endpoint: c.endpoint.as_deref(),
                    region: &c.region,
                    path_style: c.path_style,
                    access_key_id: c.access_key_id.as_deref(),
                    secret_access_key: c.secret_access_key.as_deref(),
                })
                .await,
            ),
            None => None,
        };
        Buckets { client }
    }

    pub fn handle(&self, caller: Caller, operation: String, payload: Vec<u8>) -> ServiceFuture {
        let client = self.client.clone();
        Box::pin(async move {
            let Some(client) = client else {
                return Err(CorralError::new(
                    ErrorKind::ServiceUnavailable {
                        service: "s3".into(),
                    },
                    "this corrald has no S3 store for plugins: an operator adds [services.s3] to corrald.toml",
                ));
            };
            let max_get =
                u64::from(caller.policy.max_frame).saturating_sub(RESPONSE_OVERHEAD) / 4 * 3;
            let grants = &caller.policy.services;
            let plugin = caller.plugin.as_str();
            match operation.as_str() {
                "get" => {
                    let a: KeyArgs = parse("s3", "get", &payload)?;
                    check_key("get", "key", &a.key, false)?;
                    let place = place(&client, plugin, grants, &a.bucket)?;
                    let object = place
                        .s3
                        .get_bytes(&format!("{}{}", place.key_prefix, a.key), max_get)
                        .await
                        .map_err(|e| store_error(plugin, "get", &place.name, &a.key, e))?;
                    body(&serde_json::json!({
                        "body": BASE64.encode(&object.bytes),
                        "size": object.bytes.len(),
                        "etag": object.etag,
                        "content_type": object.content_type,
                    }))
                }
                "put" => {
                    let a: PutArgs = parse("s3", "put", &payload)?;
                    check_key("put", "key", &a.key, false)?;
                    let content_type = a
                        .content_type
                        .unwrap_or_else(|| "application/octet-stream".into());
                    if content_type.is_empty()
                        || content_type.len() > 200
                        || !content_type.bytes().all(|b| (0x20..0x7f).contains(&b))
                    {
                        return Err(CorralError::invalid_input(
                            "s3.put: content_type must be 1 to 200 printable ASCII characters",
                        ));
                    }
                    let bytes = BASE64.decode(a.body.as_bytes()).map_err(|e| {
                        CorralError::invalid_input(format!("s3.put: body is not base64: {e}"))
                    })?;
                    let place = place(&client, plugin, grants, &a.bucket)?;
                    let etag = place
                        .s3
                        .put(
                            &format!("{}{}", place.key_prefix, a.key),
                            bytes,
                            &content_type,
                        )
                        .await
                        .map_err(|e| store_error(plugin, "put", &place.name, &a.key, e))?;
                    body(&serde_json::json!({ "etag": etag }))
                }
                "delete" => {
                    let a: KeyArgs = parse("s3", "delete", &payload)?;
                    check_key("delete", "key", &a.key, false)?;
                    let place = place(&client, plugin, grants, &a.bucket)?;
                    place
                        .s3
                        .delete(&format!("{}{}", place.key_prefix, a.key))
                        .await
                        .map_err(|e| store_error(plugin, "delete", &place.name, &a.key, e))?;
                    Ok(b"{}".to_vec())
                }
                "list" => list(&client, plugin, grants, &payload).await,
                other => Err(unknown_operation("s3", other, OPERATIONS)),
            }
        })
    }
}

async fn list(
    client: &aws_sdk_s3::Client,
    plugin: &str,
    grants: &ServiceGrants,
    payload: &[u8],
) -> Result<Vec<u8>, CorralError> {
    let a: ListArgs = parse("s3", "list", payload)?;
    check_key("list", "prefix", &a.prefix, true)?;
    if let Some(after) = &a.after {
        check_key("list", "after", after, true)?;
    }
    let limit = a.limit.unwrap_or(DEFAULT_LIST);
    if limit == 0 || limit > MAX_LIST {
        return Err(CorralError::invalid_input(format!(
            "s3.list: limit {limit} is not between 1 and {MAX_LIST}"
        )));
    }
    let place = place(client, plugin, grants, &a.bucket)?;
    let (objects, truncated) = place
        .s3
        .list_after(
            &format!("{}{}", place.key_prefix, a.prefix),
            a.after.map(|after| format!("{}{after}", place.key_prefix)),
            limit as i32,
        )
        .await
        .map_err(|e| store_error(plugin, "list", &place.name, &a.prefix, e))?;
    let objects: Vec<serde_json::Value> = objects
        .into_iter()
        .filter_map(|o| {
            let key = o.key.strip_prefix(place.key_prefix.as_str())?.to_string();
            Some(serde_json::json!({
                "key": key,
                "size": o.size,
                "etag": o.etag,
                "last_modified_ms": o.modified_ms,
            }))
        })
        .collect();
    let next = if truncated {
        objects
            .last()
            .and_then(|o| o["key"].as_str())
            .map(str::to_string)
    } else {
        None
    };
    body(&serde_json::json!({ "objects": objects, "next": next }))
}

/// Checks the grant and maps the bucket.
fn place(
    client: &aws_sdk_s3::Client,
    plugin: &str,
    grants: &ServiceGrants,
    bucket: &str,
) -> Result<Place, CorralError> {
    if !grants.buckets.iter().any(|b| b == bucket) {
        let bucket = clip(bucket);
        return Err(CorralError::new(
            ErrorKind::PermissionDenied {
                permission: Some(format!("s3.bucket {bucket}")),
            },
            format!(
                "plugin {plugin} may not use bucket {bucket:?}: list it in the manifest's \
                 [permissions.storage] buckets, and an operator grants it with \
                 `buckets = [\"{bucket}\"]` under [grantable] or [plugins.{plugin}.grant]"
            ),
        ));
    }
    let mapped = grants.bucket_names.map.contains_key(bucket);
    Ok(Place {
        name: bucket.to_string(),
        s3: S3::with_client(client.clone(), SOURCE, &grants.bucket_names.resolve(bucket)),
        key_prefix: if mapped {
            String::new()
        } else {
            format!("{plugin}/")
        },
    })
}

/// Keys (and list prefixes, which may be empty): at most 1024 bytes, no
/// control characters, no leading `/`, and no empty, `.` or `..`
/// segment, so no key can climb out of the plugin's prefix in a store
/// that maps keys to paths.
fn check_key(operation: &str, field: &str, key: &str, prefix: bool) -> Result<(), CorralError> {
    let bad = |why: &str| {
        CorralError::invalid_input(format!("s3.{operation}: {field} {:?} {why}", clip(key)))
    };
    if (key.is_empty() && !prefix) || key.len() > MAX_KEY {
        return Err(bad(&format!("must be 1 to {MAX_KEY} bytes")));
    }
    if key.chars().any(char::is_control) {
        return Err(bad("holds a control character"));
    }
    let segments: Vec<&str> = key.split('/').collect();
    // A prefix may end in `/` (a "folder"); its last segment is then empty.
    let checked = if prefix {
        &segments[..segments.len().saturating_sub(1)]
    } else {
        &segments[..]
    };
    if checked
        .iter()
        .any(|s| s.is_empty() || *s == "." || *s == "..")
        || (prefix && matches!(segments.last(), Some(&".") | Some(&"..")))
    {
        return Err(bad("has an empty, `.` or `..` segment"));
    }
    Ok(())
}

/// A store failure in the plugin's names; the detail goes to the log.
fn store_error(
    plugin: &str,
    operation: &str,
    bucket: &str,
    key: &str,
    e: CorralError,
) -> CorralError {
    let problem = problem_of(&e).to_string();
    tracing::warn!(plugin = %plugin, operation, bucket, key = clip(key), problem = %problem, error = %e.message, "s3 request failed");
    let reason = match problem.as_str() {
        "not_found" => "no such object",
        "unreachable" => "the S3 store is unreachable",
        "access_denied" => "the store refused corrald's credentials for this bucket",
        "no_such_bucket" => "the bucket does not exist in the store",
        "too_large" => "the object is larger than one response can carry",
        "interrupted" => "the connection to the store broke",
        _ => "the store refused the request",
    };
    source_error(
        SOURCE,
        &problem,
        format!("s3.{operation} {}/{}: {reason}", clip(bucket), clip(key)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_cannot_climb_out_of_the_prefix() {
        for key in ["a/b.txt", "x", "deep/er/k.json", "dots.in.name"] {
            assert!(check_key("get", "key", key, false).is_ok(), "{key}");
        }
        for key in [
            "",
            "../x",
            "a/../b",
            "./a",
            "/abs",
            "a//b",
            "a/",
            "..",
            "a\nb",
            &"k".repeat(1025),
        ] {
            let err = check_key("get", "key", key, false).expect_err("refused");
            assert_eq!(err.code(), "invalid_input", "{key:?}");
        }
        assert!(check_key("list", "prefix", "", true).is_ok());
        assert!(check_key("list", "prefix", "a/", true).is_ok());
        assert!(check_key("list", "prefix", "a/..", true).is_err());
        assert!(check_key("list", "prefix", "../", true).is_err());
    }

    #[test]
    fn unmapped_buckets_put_keys_under_the_plugin_and_mapped_ones_do_not() {
        let conf = aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .build();
        let client = aws_sdk_s3::Client::from_conf(conf);
        let grants = ServiceGrants {
            buckets: vec!["data".into(), "team".into()],
            bucket_names: corral_protocol::services::NameScope {
                prefix: "corral-".into(),
                map: [("team".to_string(), "team-data".to_string())].into(),
            },
            ..ServiceGrants::default()
        };
        let p = place(&client, "a", &grants, "data").expect("placed");
        assert_eq!(p.s3.bucket, "corral-data");
        assert_eq!(p.key_prefix, "a/");
        let p = place(&client, "a", &grants, "team").expect("placed");
        assert_eq!(p.s3.bucket, "team-data");
        assert_eq!(p.key_prefix, "");
        let err = place(&client, "a", &grants, "secrets").expect_err("refused");
        assert!(
            matches!(&err.kind, ErrorKind::PermissionDenied { permission: Some(p) } if p == "s3.bucket secrets"),
            "{err:?}"
        );
    }

    #[test]
    fn the_config_is_checked() {
        let mut c = S3ServiceConfig {
            endpoint: Some("127.0.0.1:9000".into()),
            region: "us-east-1".into(),
            path_style: true,
            access_key_id: None,
            secret_access_key: None,
        };
        assert_eq!(c.check().expect_err("refused").0, "services.s3.endpoint");
        c.endpoint = Some("http://127.0.0.1:9000".into());
        assert!(c.check().is_ok());
        c.access_key_id = Some("id".into());
        assert_eq!(
            c.check().expect_err("refused").0,
            "services.s3.access_key_id"
        );
    }
}
