//! Host services (protocol version 2): what a handler asks of the host
//! through [`Context::request`], and typed helpers for each operation of
//! PROTOCOL.md section 9.
//!
//! The helpers only shape the JSON payloads and decode the bodies; the
//! request itself, its id and the reading of the answer live in the
//! session, shared by every helper.

use crate::context::Context;
use crate::error::{Error, codes};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use corral_protocol::message::{self, Delivery};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::fmt;

/// A request sent with [`Context::send_request`], to pass to
/// [`Context::wait_response`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestId(pub(crate) u64);

impl RequestId {
    /// The id the Request frame carried.
    pub fn get(self) -> u64 {
        self.0
    }
}

/// Why a host-service request failed: the host's error code and message
/// (the same the HTTP API gives for the same condition) and its whole
/// error object in `details` (e.g. `"permission": "kv.table secrets"`).
/// Failures the SDK found itself (version 1, a closed channel) carry the
/// codes in [`codes`](crate::codes) and `details` with code and message.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceError {
    pub code: String,
    pub message: String,
    pub details: Value,
}

impl ServiceError {
    pub(crate) fn local(code: &str, message: impl Into<String>) -> ServiceError {
        let message = message.into();
        ServiceError {
            details: json!({ "code": code, "message": message }),
            code: code.to_string(),
            message,
        }
    }
}

impl fmt::Display for ServiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ServiceError {}

impl From<message::ServiceError> for ServiceError {
    fn from(e: message::ServiceError) -> ServiceError {
        // Details the host sent that are not JSON are kept as text rather
        // than lost.
        let details = serde_json::from_slice(&e.details)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&e.details).into_owned()));
        ServiceError {
            code: e.code,
            message: e.message,
            details,
        }
    }
}

/// A handler passes a service's failure on with `?`: the caller sees the
/// same code and message.
impl From<ServiceError> for Error {
    fn from(e: ServiceError) -> Error {
        Error::new(e.code, e.message)
    }
}

/// An event delivered from a topic the plugin subscribed to.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The topic as the plugin names it.
    pub topic: String,
    /// The publishing plugin, or `client` for a publisher on the API.
    pub from: String,
    /// The payload, UTF-8 JSON.
    pub payload: Vec<u8>,
}

impl Event {
    /// The payload decoded from its JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.payload).map_err(|e| {
            Error::invalid_input(format!("event on topic {}: payload: {e}", self.topic))
        })
    }
}

impl From<Delivery> for Event {
    fn from(d: Delivery) -> Event {
        Event {
            topic: d.topic,
            from: d.from,
            payload: d.payload,
        }
    }
}

/// What `events.publish` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct Published {
    /// Subscribers whose queue took the event.
    pub delivered: u64,
    /// Subscribers whose queue was full.
    pub dropped: u64,
}

/// Paging of `kv.list` and `s3.list`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ListOptions {
    /// Only names starting with this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Only names after this one (the previous page's `next`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// At most this many (the host caps it at 1000).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// A page of `kv.list`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct KvPage {
    pub keys: Vec<String>,
    /// Pass as [`ListOptions::after`] for the next page; `None` at the end.
    pub next: Option<String>,
}

/// An object read with `s3.get`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Object {
    pub body: Vec<u8>,
    pub etag: String,
    pub content_type: Option<String>,
}

/// One entry of `s3.list`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct S3Entry {
    pub key: String,
    pub size: u64,
    pub etag: String,
    pub last_modified_ms: u64,
}

/// A page of `s3.list`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct S3Page {
    pub objects: Vec<S3Entry>,
    pub next: Option<String>,
}

#[derive(Deserialize)]
struct S3GetBody {
    body: String,
    #[serde(default)]
    etag: String,
    #[serde(default)]
    content_type: Option<String>,
}

/// Decodes an operation's body into the type the helper returns.
fn decode<T: DeserializeOwned>(what: &str, body: Value) -> Result<T, ServiceError> {
    serde_json::from_value(body).map_err(|e| {
        ServiceError::local(
            codes::INVALID_RESPONSE,
            format!("the host's answer to {what} is not what it should be: {e}"),
        )
    })
}

/// One boolean field of a body, `false` when absent.
fn flag(body: &Value, field: &str) -> bool {
    body.get(field).and_then(Value::as_bool).unwrap_or(false)
}

/// Typed helpers over [`Context::request`], one per operation.
impl Context<'_> {
    /// Calls `method` of `plugin`, a dependency the policy lets this
    /// plugin call, and returns its output. The call is bounded by what is
    /// left of the current call's deadline; the dependency's errors come
    /// back with their codes (`timeout`, `crashed`, ...).
    pub fn call_plugin<I: Serialize + ?Sized>(
        &mut self,
        plugin: &str,
        method: &str,
        input: &I,
    ) -> Result<Value, ServiceError> {
        let body = self.request(
            "plugins",
            "call",
            &json!({ "plugin": plugin, "method": method, "input": input }),
        )?;
        match body {
            Value::Object(mut fields) => Ok(fields.remove("output").unwrap_or(Value::Null)),
            other => decode("plugins.call", other),
        }
    }

    /// The dependencies this plugin may call.
    pub fn dependencies(&mut self) -> Result<Vec<String>, ServiceError> {
        #[derive(Deserialize)]
        struct List {
            plugins: Vec<String>,
        }
        let body = self.request("plugins", "list", &json!({}))?;
        decode::<List>("plugins.list", body).map(|l| l.plugins)
    }

    /// Publishes `payload` (any JSON) on `topic`, for the plugins and
    /// clients subscribed to it.
    pub fn publish<P: Serialize + ?Sized>(
        &mut self,
        topic: &str,
        payload: &P,
    ) -> Result<Published, ServiceError> {
        let body = self.request(
            "events",
            "publish",
            &json!({ "topic": topic, "payload": payload }),
        )?;
        decode("events.publish", body)
    }

    /// Subscribes to the topics matching `pattern` (`*` matches any run
    /// of characters); their events reach [`Plugin::on_event`](crate::Plugin::on_event).
    pub fn subscribe(&mut self, pattern: &str) -> Result<(), ServiceError> {
        self.request("events", "subscribe", &json!({ "pattern": pattern }))
            .map(drop)
    }

    /// Ends a subscription; `true` when there was one.
    pub fn unsubscribe(&mut self, pattern: &str) -> Result<bool, ServiceError> {
        let body = self.request("events", "unsubscribe", &json!({ "pattern": pattern }))?;
        Ok(flag(&body, "removed"))
    }

    /// The value under `key` in `table`, `None` when there is none.
    pub fn kv_get(&mut self, table: &str, key: &str) -> Result<Option<Value>, ServiceError> {
        let body = self.request("kv", "get", &json!({ "table": table, "key": key }))?;
        Ok(match body.get("value") {
            None | Some(Value::Null) => None,
            Some(value) => Some(value.clone()),
        })
    }

    /// Stores `value` (any JSON) under `key` in `table`.
    pub fn kv_put<V: Serialize + ?Sized>(
        &mut self,
        table: &str,
        key: &str,
        value: &V,
    ) -> Result<(), ServiceError> {
        self.request(
            "kv",
            "put",
            &json!({ "table": table, "key": key, "value": value }),
        )
        .map(drop)
    }

    /// Removes `key` from `table`; `true` when it was there.
    pub fn kv_delete(&mut self, table: &str, key: &str) -> Result<bool, ServiceError> {
        let body = self.request("kv", "delete", &json!({ "table": table, "key": key }))?;
        Ok(flag(&body, "deleted"))
    }

    /// A page of `table`'s keys in byte order.
    pub fn kv_list(&mut self, table: &str, options: &ListOptions) -> Result<KvPage, ServiceError> {
        let body = self.request("kv", "list", &with_table("table", table, options))?;
        decode("kv.list", body)
    }

    /// The object `key` of `bucket`.
    pub fn s3_get(&mut self, bucket: &str, key: &str) -> Result<S3Object, ServiceError> {
        let body = self.request("s3", "get", &json!({ "bucket": bucket, "key": key }))?;
        let got: S3GetBody = decode("s3.get", body)?;
        let bytes = BASE64.decode(got.body.as_bytes()).map_err(|e| {
            ServiceError::local(
                codes::INVALID_RESPONSE,
                format!("the body of s3 object {key} is not base64: {e}"),
            )
        })?;
        Ok(S3Object {
            body: bytes,
            etag: got.etag,
            content_type: got.content_type,
        })
    }

    /// Stores `body` as object `key` of `bucket`; returns its etag.
    pub fn s3_put(
        &mut self,
        bucket: &str,
        key: &str,
        body: &[u8],
        content_type: Option<&str>,
    ) -> Result<String, ServiceError> {
        let mut payload = json!({ "bucket": bucket, "key": key, "body": BASE64.encode(body) });
        if let (Some(content_type), Value::Object(fields)) = (content_type, &mut payload) {
            fields.insert("content_type".into(), content_type.into());
        }
        let body = self.request("s3", "put", &payload)?;
        Ok(body
            .get("etag")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string())
    }

    /// A page of `bucket`'s objects.
    pub fn s3_list(&mut self, bucket: &str, options: &ListOptions) -> Result<S3Page, ServiceError> {
        let body = self.request("s3", "list", &with_table("bucket", bucket, options))?;
        decode("s3.list", body)
    }

    /// Removes object `key` of `bucket`.
    pub fn s3_delete(&mut self, bucket: &str, key: &str) -> Result<(), ServiceError> {
        self.request("s3", "delete", &json!({ "bucket": bucket, "key": key }))
            .map(drop)
    }

    /// The plugin's current settings, as the host has them now (Init
    /// carried them at start; [`Context::config`] reads that copy).
    pub fn settings(&mut self) -> Result<Value, ServiceError> {
        self.request("config", "get", &json!({}))
    }
}

/// `options` as a JSON object with `field: name` added.
fn with_table(field: &str, name: &str, options: &ListOptions) -> Value {
    let mut payload = serde_json::to_value(options).unwrap_or_else(|_| json!({}));
    if let Value::Object(fields) = &mut payload {
        fields.insert(field.into(), name.into());
    }
    payload
}
