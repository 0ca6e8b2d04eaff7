//! The messages of the child protocol. `PROTOCOL.md` describes their bytes;
//! the variant order of each enum is part of the wire format (the variant
//! index is the `u32` tag), so new variants are only ever appended.

use serde::{Deserialize, Serialize};

/// First four bytes of every Hello: "CRRL".
pub const MAGIC: [u8; 4] = *b"CRRL";

/// Protocol versions this build speaks, newest last.
pub const SUPPORTED_VERSIONS: &[u16] = &[1, 2];

/// The first version with host services: `Request` from the plugin,
/// `Response` and `Deliver` from the host. A plugin that offers only
/// version 1 never receives either, and sending `Request` at version 1 is
/// a protocol violation.
pub const SERVICES_VERSION: u16 = 2;

/// The file descriptor on which a plugin finds its channel.
pub const CHANNEL_FD: i32 = 3;

/// Environment variable naming the channel fd, for runtimes that prefer to
/// look it up.
pub const CHANNEL_FD_ENV: &str = "CORRAL_CHANNEL_FD";

/// Picks the highest version both sides speak.
pub fn negotiate_version(offered: &[u16]) -> Option<u16> {
    offered
        .iter()
        .copied()
        .filter(|v| SUPPORTED_VERSIONS.contains(v))
        .max()
}

/// Messages from the host (supervisor) to the plugin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum HostMessage {
    /// Answer to Hello: the chosen version and the plugin's settings.
    Init(Init),
    /// Run `method` on `input`.
    Call(Call),
    /// The caller gave up on call `id`; the plugin should stop working on it
    /// and may still reply (the reply is dropped).
    Cancel { id: u64 },
    /// Liveness probe; answer with `Pong` carrying the same nonce.
    Ping { nonce: u64 },
    /// Finish in-flight calls within `grace_ms` and exit 0.
    Shutdown { grace_ms: u32 },
    /// Answer to the plugin's own `Ping`.
    Pong { nonce: u64 },
    /// Answer to the plugin's `Request` with the same id (version 2).
    Response(ServiceResponse),
    /// An event on a topic the plugin subscribed to (version 2).
    Deliver(Delivery),
}

/// Messages from the plugin to the host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PluginMessage {
    /// First frame of every plugin.
    Hello(Hello),
    /// Initialisation finished; calls may come.
    Ready,
    /// Result of call `id`.
    Reply(Reply),
    /// A structured log record.
    Log(LogRecord),
    /// An application event for subscribers.
    Event(PluginEvent),
    /// Answer to the host's `Ping`.
    Pong { nonce: u64 },
    /// The plugin's own liveness probe.
    Ping { nonce: u64 },
    /// Sent by the trampoline, never by plugin code: a confinement step
    /// failed and the plugin was not started.
    SandboxFailure(SandboxFailure),
    /// A request to a service the host brokers (version 2).
    Request(ServiceRequest),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// Always [`MAGIC`].
    pub magic: [u8; 4],
    /// Versions the plugin speaks.
    pub versions: Vec<u16>,
    /// Name from the plugin's own build; the host logs a warning when it
    /// differs from the manifest's (it does not refuse: one binary may
    /// serve several packages).
    pub name: String,
    /// Version from the plugin's own build.
    pub version: String,
    /// Largest frame the plugin accepts.
    pub max_frame: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Init {
    /// The version both sides now speak.
    pub version: u16,
    /// Largest frame either side may send from now on.
    pub max_frame: u32,
    /// The plugin's settings as UTF-8 JSON (`{}` when none).
    #[serde(with = "serde_bytes")]
    pub config: Vec<u8>,
    /// Limits the plugin runs under, for it to adapt to (informational;
    /// the sandbox enforces them regardless).
    pub limits: InitLimits,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitLimits {
    /// Memory limit in bytes, 0 when unlimited.
    pub memory_bytes: u64,
    /// Per-call timeout in milliseconds.
    pub call_timeout_ms: u64,
    /// Maximum tasks (threads and processes).
    pub pids: u64,
    /// Maximum open files.
    pub open_files: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Call {
    pub id: u64,
    pub method: String,
    #[serde(with = "serde_bytes")]
    pub input: Vec<u8>,
    /// Time the host will wait for the reply, in milliseconds.
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    pub id: u64,
    pub result: CallResult,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CallResult {
    Ok(#[serde(with = "serde_bytes")] Vec<u8>),
    Err(PluginError),
}

/// An error the plugin's handler returned (as opposed to one the sandbox
/// or supervisor detected).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginError {
    /// Short machine-readable code chosen by the plugin, e.g. `bad_csv`.
    pub code: String,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogRecord {
    pub level: LogLevel,
    pub message: String,
    pub fields: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginEvent {
    pub topic: String,
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
}

/// A confinement step the trampoline could not apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxFailure {
    /// The step's name, e.g. `landlock` or `seccomp`.
    pub step: String,
    /// The errno the kernel returned, 0 when not a system call failure.
    pub errno: i32,
    pub message: String,
}

/// A plugin's request to a host service. Ids are the plugin's own,
/// separate from call ids; the host answers each with one `Response`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceRequest {
    pub id: u64,
    /// The call this request serves (its deadline bounds the request), or
    /// 0 when it serves none (start-up, an event handler).
    pub call_id: u64,
    /// `plugins`, `events`, `kv`, `s3`, `config`.
    pub service: String,
    /// The operation of that service, e.g. `call` or `put`.
    pub operation: String,
    /// The operation's arguments, a UTF-8 JSON object.
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceResponse {
    pub id: u64,
    pub result: ServiceResult,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ServiceResult {
    /// The operation's result, UTF-8 JSON.
    Ok(#[serde(with = "serde_bytes")] Vec<u8>),
    Err(ServiceError),
}

/// Why a request failed: the same code, message and details the HTTP API
/// gives for the same condition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceError {
    /// An API error code: `permission_denied`, `plugin_not_found`, ...
    pub code: String,
    pub message: String,
    /// The API's whole error object as UTF-8 JSON (code, message and the
    /// code's details, such as `permission`).
    #[serde(with = "serde_bytes")]
    pub details: Vec<u8>,
}

/// An event delivered to a subscribed plugin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    /// The topic as the plugin names it (its name maps undone).
    pub topic: String,
    /// The publishing plugin, or `client` for an API publisher.
    pub from: String,
    /// UTF-8 JSON.
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_picks_highest_common_version() {
        assert_eq!(negotiate_version(&[1, 7]), Some(1));
        assert_eq!(negotiate_version(&[1, 2]), Some(2));
        assert_eq!(negotiate_version(&[3, 4]), None);
        assert_eq!(negotiate_version(&[]), None);
    }
}
