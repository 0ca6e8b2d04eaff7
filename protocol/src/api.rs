//! Request and response bodies of the client API (HTTP/1.1 + JSON on the
//! daemon's Unix socket) and of `corral run --json`.

use serde::{Deserialize, Serialize};

/// `POST /v1/plugins/{name}/call`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallRequest {
    pub method: String,
    /// Any JSON value; the plugin receives it as UTF-8 JSON bytes.
    #[serde(default)]
    pub input: serde_json::Value,
    /// Shorter per-call timeout than the policy's, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// A successful call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallResponse {
    /// The plugin's reply: JSON when it replied with JSON, otherwise a
    /// string (see `output_encoding`).
    pub output: serde_json::Value,
    /// `"base64"` when the reply was not UTF-8 and `output` holds it
    /// base64-encoded; absent for JSON or UTF-8 text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_encoding: Option<String>,
    pub usage: Usage,
}

/// What one call cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    /// Wall time from dispatch to reply, milliseconds.
    pub wall_ms: f64,
    /// CPU time the plugin's cgroup used during the call, milliseconds.
    pub cpu_ms: f64,
    /// Highest memory charged to the plugin's cgroup so far, bytes.
    pub peak_memory_bytes: u64,
}

/// Lifecycle state of a plugin in the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PluginState {
    /// Installed, not loaded.
    Installed,
    /// Children starting.
    Starting,
    /// Serving calls.
    Ready,
    /// A child died and is being restarted with backoff.
    Restarting,
    /// Held down after a crash loop until an operator acts.
    Quarantined,
    /// Being unloaded.
    Stopping,
}

/// A lifecycle event, as `GET /v1/events` streams it (one JSON object per
/// line).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// The plugin was loaded (its policy compiled and children starting).
    Loaded {
        plugin: String,
        version: String,
    },
    /// A child finished its handshake and serves calls.
    Ready {
        plugin: String,
        instance: u32,
        pid: i32,
        start_ms: f64,
    },
    /// A call failed (any typed error, including the plugin's own).
    CallFailed {
        plugin: String,
        method: String,
        code: String,
        message: String,
    },
    /// A child died: `code` is the typed cause (memory_limit_exceeded,
    /// seccomp_violation, crashed, ...).
    Crashed {
        plugin: String,
        instance: u32,
        code: String,
        message: String,
    },
    /// A child is being restarted after `delay_ms`.
    Restarted {
        plugin: String,
        instance: u32,
        attempt: u32,
        delay_ms: u64,
    },
    /// Too many failures in the window: held down until an operator acts.
    Quarantined {
        plugin: String,
        failures: u32,
        window_ms: u64,
    },
    Unloaded {
        plugin: String,
    },
    /// The plugin's effective policy changed (policy reload).
    PolicyChanged {
        plugin: String,
    },
    /// An event the plugin itself emitted.
    Plugin {
        plugin: String,
        topic: String,
        payload: serde_json::Value,
    },
}

impl Event {
    pub fn plugin(&self) -> &str {
        match self {
            Event::Loaded { plugin, .. }
            | Event::Ready { plugin, .. }
            | Event::CallFailed { plugin, .. }
            | Event::Crashed { plugin, .. }
            | Event::Restarted { plugin, .. }
            | Event::Quarantined { plugin, .. }
            | Event::Unloaded { plugin }
            | Event::PolicyChanged { plugin }
            | Event::Plugin { plugin, .. } => plugin,
        }
    }
}

/// An event with its sequence number and time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    pub seq: u64,
    /// Milliseconds since the Unix epoch.
    pub time_ms: u64,
    #[serde(flatten)]
    pub event: Event,
}
