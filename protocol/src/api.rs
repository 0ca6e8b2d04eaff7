//! Request and response bodies of the client API (HTTP/1.1 + JSON on the
//! daemon's Unix socket) and of `corral run --json`.

use serde::{Deserialize, Serialize};

/// `POST /v1/plugins/{name}/call`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallRequest {
    /// The method; empty (or absent) for the plugin's `default_method`.
    #[serde(default)]
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

impl CallResponse {
    /// A plugin's reply as JSON: parsed when it is JSON, a string when it
    /// is other UTF-8 text, base64 (with `output_encoding`) otherwise.
    pub fn from_output(bytes: &[u8], usage: Usage) -> CallResponse {
        let (output, output_encoding) = match serde_json::from_slice::<serde_json::Value>(bytes) {
            Ok(v) => (v, None),
            Err(_) => match std::str::from_utf8(bytes) {
                Ok(s) => (serde_json::Value::String(s.to_string()), None),
                Err(_) => {
                    use base64::Engine;
                    (
                        serde_json::Value::String(
                            base64::engine::general_purpose::STANDARD.encode(bytes),
                        ),
                        Some("base64".to_string()),
                    )
                }
            },
        };
        CallResponse {
            output,
            output_encoding,
            usage,
        }
    }
}

/// What one call cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    /// Wall time from dispatch to reply, milliseconds.
    #[serde(serialize_with = "microsecond_ms")]
    pub wall_ms: f64,
    /// CPU time the plugin's cgroup used during the call, milliseconds.
    #[serde(serialize_with = "microsecond_ms")]
    pub cpu_ms: f64,
    /// Highest memory charged to the plugin's cgroup so far, bytes.
    pub peak_memory_bytes: u64,
}

/// Milliseconds written to the microsecond, the precision they are
/// measured with: `0.144`, not the float noise of `0.14358400000000002`.
fn microsecond_ms<S: serde::Serializer>(ms: &f64, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64((ms * 1000.0).round() / 1000.0)
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
    /// The plugin is being loaded: its policy compiled, its children
    /// starting (each then sends `Ready`, or the start fails as `Crashed`).
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
    /// The seccomp filter refused a system call: by name, with the checked
    /// arguments where a check refused it; `killed` when the plugin dies
    /// for it, else the call failed with the policy's errno. Limited per
    /// child and second, like the log lines.
    SeccompViolation {
        plugin: String,
        instance: u32,
        syscall: String,
        #[serde(skip_serializing_if = "Option::is_none", default)]
        argument: Option<String>,
        killed: bool,
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
    /// A changed package in a watched source folder could not be swapped
    /// in; the running version keeps serving. `plugin` is the installed
    /// plugin the folder holds, or the folder's name when none is.
    ReloadFailed {
        plugin: String,
        code: String,
        message: String,
    },
    /// This subscriber fell behind and `missed` events were dropped for it.
    Lagged {
        missed: u64,
    },
    /// A source (an S3 bucket) delivered a new version of a plugin, now
    /// installed (and swapped in when loaded).
    SourceUpdated {
        plugin: String,
        source_name: String,
        version: String,
        digest: String,
    },
    /// Polling or fetching from a source failed; `plugin` is empty when
    /// the whole source failed. Installed plugins keep running.
    SourceFailed {
        plugin: String,
        source_name: String,
        code: String,
        problem: String,
        message: String,
    },
    /// An operator's hook ran on a call to `plugin`: `hook` is
    /// `<plugin>.<method>` of the hook, `outcome` one of `ok`, `rewrote`,
    /// `rejected`, `failed` (the call failed for it) or `skipped` (it
    /// failed and its rule is `skip`).
    HookRan {
        plugin: String,
        hook: String,
        stage: String,
        outcome: String,
    },
    /// A call to an idempotent method failed with `code` (crashed,
    /// timeout) and is tried again: `attempt` is the retry's number.
    CallRetried {
        plugin: String,
        method: String,
        attempt: u32,
        code: String,
    },
    /// An operator changed the plugin's settings; new instances take them.
    SettingsChanged {
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
            | Event::SeccompViolation { plugin, .. }
            | Event::Quarantined { plugin, .. }
            | Event::Unloaded { plugin }
            | Event::PolicyChanged { plugin }
            | Event::SourceUpdated { plugin, .. }
            | Event::SourceFailed { plugin, .. }
            | Event::ReloadFailed { plugin, .. }
            | Event::HookRan { plugin, .. }
            | Event::CallRetried { plugin, .. }
            | Event::SettingsChanged { plugin }
            | Event::Plugin { plugin, .. } => plugin,
            Event::Lagged { .. } => "",
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

/// Default path of the daemon's socket.
pub const DEFAULT_SOCKET: &str = "/run/corral/corral.sock";
/// Environment variable naming the socket, for the CLI and clients.
pub const SOCKET_ENV: &str = "CORRAL_SOCKET";

/// `GET /v1/health`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    /// `"ok"`, or `"draining"` while shutting down.
    pub status: String,
    pub version: String,
    pub uptime_ms: u64,
    pub plugins_installed: usize,
    pub plugins_loaded: usize,
    pub children_alive: usize,
    /// `"v1"`, `"v2"` or `"none"`.
    pub cgroup: String,
    /// Landlock ABI in use (0: none, or masked).
    pub landlock_abi: u32,
    /// Kernel features corral cannot use here (missing, or masked with
    /// `CORRAL_MASK_FEATURES`), by their policy names (`landlock_net`, ...).
    /// The policy's `[features]` says whether each fails a load or warns.
    #[serde(default)]
    pub features_unavailable: Vec<String>,
    /// A cgroup hierarchy is mounted with `favordynmods`, so moving a
    /// child into its cgroup does not wait for an RCU grace period (README,
    /// "Fast starts"). Matters on v1 only: v2 creates children inside
    /// their cgroups. False with no cgroups.
    #[serde(default)]
    pub cgroup_favordynmods: bool,
}

/// One plugin in `GET /v1/plugins`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginSummary {
    pub name: String,
    pub version: String,
    #[serde(default)]
    pub description: String,
    pub state: PluginState,
    /// Loaded at daemon start and kept loaded.
    pub enabled: bool,
    /// Instances the policy allows.
    pub instances: u32,
    /// Children alive now.
    pub children: usize,
    pub in_flight: usize,
    pub calls_ok: u64,
    pub calls_failed: u64,
    pub restarts: u64,
    /// Memory charged to its cgroups now, bytes.
    pub memory_bytes: u64,
}

/// One running child in `GET /v1/plugins/{name}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChildInfo {
    pub instance: u32,
    /// Host pid of the sandbox's init (the plugin).
    pub pid: i32,
    pub uid: u32,
    pub start_ms: f64,
    pub in_flight: usize,
    pub memory_bytes: u64,
    pub memory_peak_bytes: u64,
    pub pids: u64,
    pub cpu_ms: f64,
}

/// `GET /v1/plugins/{name}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginDetail {
    #[serde(flatten)]
    pub summary: PluginSummary,
    /// Where the package came from (a source folder, a path, an upload).
    pub source: String,
    /// sha256 of the package contents, hex.
    pub digest: String,
    pub manifest: crate::manifest::Manifest,
    /// The compiled policy; `None` when it does not compile (see
    /// `policy_error`).
    pub policy: Option<crate::policy::SandboxPolicy>,
    pub policy_error: Option<crate::error::CorralError>,
    /// The children alive now (`children` in the summary is their count).
    pub processes: Vec<ChildInfo>,
    /// The most recent failure of any instance.
    pub last_error: Option<crate::error::CorralError>,
    /// The effective settings (validated against the manifest's
    /// `[config]`, defaults applied): shown to admins only, since
    /// settings may hold secrets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<serde_json::Value>,
    /// Its instances run under the learning policy (less confined) now:
    /// an operator started `corral learn --daemon`.
    #[serde(default)]
    pub learning: bool,
    /// Every installed version, the current one first (several can be
    /// installed side by side; one is current, loaded or not).
    #[serde(default)]
    pub versions: Vec<InstalledVersion>,
}

/// One installed version of a plugin, in `PluginDetail::versions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstalledVersion {
    pub version: String,
    pub digest: String,
    /// The one the registry holds (`summary.version`).
    pub current: bool,
    pub loaded: bool,
}

/// One file of an installed package (`GET /v1/plugins/{name}/files`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageFile {
    /// Relative to the package root, `/`-separated.
    pub path: String,
    pub size: u64,
    /// Last modification, milliseconds since the epoch.
    pub modified_ms: u64,
}

/// `GET /v1/plugins/{name}/files`: the regular files of the installed
/// package; `GET /v1/plugins/{name}/files/{path}` answers one's bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageFiles {
    pub plugin: String,
    pub version: String,
    pub digest: String,
    pub files: Vec<PackageFile>,
}

/// `POST /v1/plugins` with a JSON body: install from a path on the
/// daemon's host (a package directory or a `.tar.gz` of one). An upload
/// instead sends the `.tar.gz` itself as the body with
/// `Content-Type: application/gzip` (`?load=true&replace=true` for the
/// flags).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstallRequest {
    pub path: String,
    /// Load (and enable) the plugin once installed.
    #[serde(default)]
    pub load: bool,
    /// Replace another package installed under the same name (an upgrade,
    /// a downgrade or a rebuild). Without it such an install is refused
    /// with `already_exists`, so a name clash never swaps a running plugin
    /// by accident. Installing the identical package again is always fine.
    #[serde(default)]
    pub replace: bool,
}

/// Answer to an install.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstallResponse {
    pub plugin: String,
    pub version: String,
    pub digest: String,
    /// True when this exact package was already installed.
    pub unchanged: bool,
    pub state: PluginState,
}

/// Answer to `DELETE /v1/plugins/{name}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemoveResponse {
    pub removed: String,
    /// With `?purge_data=true`: the plugin's stored data that was removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purged: Option<PurgedData>,
}

/// A plugin's stored data removed with it: its key-value tables (real
/// names) and the bytes they held.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PurgedData {
    pub tables: Vec<String>,
    pub bytes: u64,
}

/// Answer to `POST /v1/reload` (what SIGHUP does, with the outcome
/// reported): the daemon's configuration and the policy files were re-read
/// and every plugin's policy recompiled. Plugins whose compiled policy did
/// not change are not touched.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ReloadReport {
    /// Plugins whose compiled policy changed and that now run (or, when
    /// not loaded, will start) under the new one.
    pub policy_changed: Vec<String>,
    /// Loaded plugins the new policy no longer admits: stopped, with why.
    pub unloaded: Vec<PluginFailure>,
    /// Loaded plugins that did not start under the new policy: their old
    /// instances keep serving under the old one.
    pub not_swapped: Vec<PluginFailure>,
    /// Settings that changed in the configuration file but take effect
    /// only when the daemon restarts.
    pub restart_needed: Vec<String>,
}

/// One plugin and the error that stopped something happening to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginFailure {
    pub plugin: String,
    pub error: crate::error::CorralError,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_times_are_written_to_the_microsecond() {
        let usage = Usage {
            wall_ms: 0.143_584_000_000_000_02,
            cpu_ms: 12.000_499,
            peak_memory_bytes: 540_672,
        };
        let json = serde_json::to_string(&usage).expect("json");
        assert_eq!(
            json,
            r#"{"wall_ms":0.144,"cpu_ms":12.0,"peak_memory_bytes":540672}"#
        );
    }

    #[test]
    fn plugin_detail_round_trips_through_json() {
        let manifest = crate::manifest::Manifest::parse(
            "[plugin]\nname = \"hello\"\nversion = \"0.1.0\"\nentry = \"bin/hello\"\n",
            "plugin.toml",
        )
        .expect("manifest");
        let detail = PluginDetail {
            summary: PluginSummary {
                name: "hello".into(),
                version: "0.1.0".into(),
                description: String::new(),
                state: PluginState::Ready,
                enabled: true,
                instances: 1,
                children: 1,
                in_flight: 0,
                calls_ok: 3,
                calls_failed: 0,
                restarts: 0,
                memory_bytes: 4096,
            },
            source: "upload".into(),
            digest: "ab".repeat(32),
            manifest,
            policy: None,
            policy_error: None,
            processes: vec![ChildInfo {
                instance: 0,
                pid: 42,
                uid: 200000,
                start_ms: 1.5,
                in_flight: 0,
                memory_bytes: 4096,
                memory_peak_bytes: 8192,
                pids: 1,
                cpu_ms: 0.1,
            }],
            last_error: None,
            settings: None,
            learning: false,
            versions: Vec::new(),
        };
        let json = serde_json::to_string(&detail).expect("encode");
        assert_eq!(json.matches("\"children\":").count(), 1, "{json}");
        assert_eq!(
            serde_json::from_str::<PluginDetail>(&json).expect("decode"),
            detail
        );
    }

    #[test]
    fn outputs_are_json_text_or_base64() {
        let u = Usage::default();
        assert_eq!(
            CallResponse::from_output(b"{\"a\":1}", u).output,
            serde_json::json!({"a": 1})
        );
        let text = CallResponse::from_output(b"plain text", u);
        assert_eq!(text.output, serde_json::json!("plain text"));
        assert_eq!(text.output_encoding, None);
        let bin = CallResponse::from_output(&[0xff, 0xfe, 0x00], u);
        assert_eq!(bin.output, serde_json::json!("//4A"));
        assert_eq!(bin.output_encoding.as_deref(), Some("base64"));
    }
}
