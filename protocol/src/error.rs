//! Typed errors as clients see them. In JSON an error is
//! `{"error": {"code": "...", "message": "...", ...details}}`: the code
//! names the rule or limit that stopped the plugin and the details carry
//! the figures (limit, peak, signal, ...).

use serde::{Deserialize, Serialize};
use std::fmt;

/// Every error a client can get, with its details.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum ErrorKind {
    PluginNotFound {
        plugin: String,
    },
    NotLoaded {
        plugin: String,
    },
    /// Another package is installed under this name and the install did
    /// not ask to replace it.
    AlreadyExists {
        plugin: String,
        installed_version: String,
        installed_digest: String,
    },
    /// A version of a plugin cannot be removed: it is the one loaded, or
    /// the loaded plugins in `needed_by` need it.
    VersionInUse {
        plugin: String,
        version: String,
        #[serde(default)]
        needed_by: Vec<String>,
    },
    /// The call ran longer than its limit and was cancelled.
    Timeout {
        limit_ms: u64,
    },
    /// The kernel's OOM killer stopped the plugin at its cgroup limit, or
    /// the plugin's runtime stopped the call at its own limit just under
    /// it (the embedded JavaScript engine; the child lives on).
    MemoryLimitExceeded {
        limit_bytes: u64,
        peak_bytes: u64,
    },
    /// The plugin hit its task (process + thread) limit.
    PidsLimitExceeded {
        limit: u64,
    },
    /// The plugin died: by `signal`, or exiting with `exit_code`.
    Crashed {
        #[serde(skip_serializing_if = "Option::is_none", default)]
        signal: Option<i32>,
        #[serde(skip_serializing_if = "Option::is_none", default)]
        signal_name: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none", default)]
        exit_code: Option<i32>,
    },
    /// The plugin made a system call its policy does not allow and was
    /// killed by seccomp.
    SeccompViolation {
        /// The system call by name, e.g. `ptrace`; absent where the kernel
        /// could not hand the refused call to the supervisor.
        #[serde(skip_serializing_if = "Option::is_none", default)]
        syscall: Option<String>,
        /// The arguments the filter checked and refused, decoded, e.g.
        /// `family=AF_INET type=SOCK_STREAM protocol=IPPROTO_MPTCP`.
        #[serde(skip_serializing_if = "Option::is_none", default)]
        argument: Option<String>,
    },
    /// The manifest asks for something the policy does not grant, or the
    /// caller may not do this.
    PermissionDenied {
        #[serde(skip_serializing_if = "Option::is_none", default)]
        permission: Option<String>,
    },
    InvalidManifest {
        file: String,
        key: String,
        reason: String,
    },
    InvalidPolicy {
        file: String,
        key: String,
        reason: String,
    },
    InvalidPackage {
        reason: String,
    },
    InvalidInput {
        reason: String,
    },
    /// The plugin failed too often in a short window and is held down until
    /// an operator reloads it.
    Quarantined {
        plugin: String,
        failures: u32,
        window_ms: u64,
    },
    /// The plugin broke the wire protocol.
    ProtocolViolation {
        reason: String,
    },
    /// Too many calls in flight for this plugin.
    Overloaded {
        limit: u32,
    },
    /// The trampoline could not apply a confinement step.
    SandboxSetupFailed {
        step: String,
        errno: i32,
    },
    /// The kernel lacks a feature the policy marks `required`.
    FeatureUnavailable {
        feature: String,
    },
    /// The plugin's handler returned an error of its own.
    PluginError {
        plugin_code: String,
    },
    /// The plugin did not become ready within its start timeout.
    StartTimeout {
        limit_ms: u64,
    },
    /// A dependency is not installed or its version does not match.
    DependencyMissing {
        dependency: String,
        requirement: String,
    },
    /// The daemon's own configuration file does not load, or a plugin's
    /// settings do not fit the schema its manifest's `[config]` gives:
    /// then `pointer` is the JSON pointer of the offending value and
    /// `rule` the schema keyword it breaks (`type`, `minimum`, ...).
    InvalidConfig {
        file: String,
        key: String,
        reason: String,
        /// `pointer` and `rule`, at the top level in JSON. Boxed: an
        /// error stays small enough to return by value.
        #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
        schema: Option<Box<SchemaViolation>>,
    },
    /// An operator's `on_submit` or `on_result` hook refused the call
    /// (its method answered with an error).
    HookRejected {
        /// `<plugin>.<method>` of the hook.
        hook: String,
        stage: String,
    },
    /// A hook whose failure rule is `fail` did not answer (timed out,
    /// crashed, not loaded): the call fails with the hook's cause.
    HookFailed {
        hook: String,
        stage: String,
        cause: String,
    },
    /// A package source (an S3 bucket) failed: `problem` is one of
    /// `unreachable`, `access_denied`, `no_such_bucket`, `not_found`,
    /// `too_large`, `digest_mismatch`, `signature_missing`,
    /// `signature_invalid`, `interrupted`, `invalid_object`, `other`.
    SourceError {
        source_name: String,
        problem: String,
    },
    /// A plugin's requests to host services came faster than its policy
    /// allows.
    RateLimited {
        limit_per_second: u32,
    },
    /// A request or value is larger than its limit.
    PayloadTooLarge {
        limit_bytes: u64,
        size_bytes: u64,
    },
    /// Storing this would take the plugin past its storage quota.
    QuotaExceeded {
        quota_bytes: u64,
        used_bytes: u64,
    },
    /// A host service is not available here (`corral run` has no daemon;
    /// brokered S3 needs `[storage.s3]` in corrald.toml).
    ServiceUnavailable {
        service: String,
    },
    /// The call was cancelled (by the caller, an unload or a shutdown).
    Cancelled,
    /// The daemon is shutting down.
    ShuttingDown,
    Internal,
}

/// Where a value breaks a JSON Schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaViolation {
    /// JSON pointer of the value, `/` for the whole document.
    pub pointer: String,
    /// The schema keyword it breaks: `type`, `minimum`, `required`, ...
    pub rule: String,
}

impl ErrorKind {
    /// The wire code, e.g. `memory_limit_exceeded`.
    pub fn code(&self) -> &'static str {
        match self {
            ErrorKind::PluginNotFound { .. } => "plugin_not_found",
            ErrorKind::NotLoaded { .. } => "not_loaded",
            ErrorKind::AlreadyExists { .. } => "already_exists",
            ErrorKind::VersionInUse { .. } => "version_in_use",
            ErrorKind::Timeout { .. } => "timeout",
            ErrorKind::MemoryLimitExceeded { .. } => "memory_limit_exceeded",
            ErrorKind::PidsLimitExceeded { .. } => "pids_limit_exceeded",
            ErrorKind::Crashed { .. } => "crashed",
            ErrorKind::SeccompViolation { .. } => "seccomp_violation",
            ErrorKind::PermissionDenied { .. } => "permission_denied",
            ErrorKind::InvalidManifest { .. } => "invalid_manifest",
            ErrorKind::InvalidPolicy { .. } => "invalid_policy",
            ErrorKind::InvalidPackage { .. } => "invalid_package",
            ErrorKind::InvalidInput { .. } => "invalid_input",
            ErrorKind::Quarantined { .. } => "quarantined",
            ErrorKind::ProtocolViolation { .. } => "protocol_violation",
            ErrorKind::Overloaded { .. } => "overloaded",
            ErrorKind::SandboxSetupFailed { .. } => "sandbox_setup_failed",
            ErrorKind::FeatureUnavailable { .. } => "feature_unavailable",
            ErrorKind::PluginError { .. } => "plugin_error",
            ErrorKind::StartTimeout { .. } => "start_timeout",
            ErrorKind::DependencyMissing { .. } => "dependency_missing",
            ErrorKind::InvalidConfig { .. } => "invalid_config",
            ErrorKind::HookRejected { .. } => "hook_rejected",
            ErrorKind::HookFailed { .. } => "hook_failed",
            ErrorKind::SourceError { .. } => "source_error",
            ErrorKind::RateLimited { .. } => "rate_limited",
            ErrorKind::PayloadTooLarge { .. } => "payload_too_large",
            ErrorKind::QuotaExceeded { .. } => "quota_exceeded",
            ErrorKind::ServiceUnavailable { .. } => "service_unavailable",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::ShuttingDown => "shutting_down",
            ErrorKind::Internal => "internal",
        }
    }

    /// The HTTP status the API answers with.
    pub fn http_status(&self) -> u16 {
        match self {
            ErrorKind::PluginNotFound { .. } => 404,
            ErrorKind::NotLoaded { .. }
            | ErrorKind::AlreadyExists { .. }
            | ErrorKind::VersionInUse { .. } => 409,
            ErrorKind::Quarantined { .. } => 409,
            ErrorKind::Timeout { .. } | ErrorKind::StartTimeout { .. } => 504,
            ErrorKind::MemoryLimitExceeded { .. }
            | ErrorKind::PidsLimitExceeded { .. }
            | ErrorKind::Crashed { .. }
            | ErrorKind::SeccompViolation { .. }
            | ErrorKind::ProtocolViolation { .. }
            | ErrorKind::SandboxSetupFailed { .. } => 502,
            ErrorKind::PluginError { .. } | ErrorKind::HookRejected { .. } => 422,
            ErrorKind::HookFailed { .. } => 502,
            ErrorKind::PermissionDenied { .. } => 403,
            ErrorKind::InvalidManifest { .. }
            | ErrorKind::InvalidPolicy { .. }
            | ErrorKind::InvalidPackage { .. }
            | ErrorKind::InvalidInput { .. }
            | ErrorKind::InvalidConfig { .. }
            | ErrorKind::DependencyMissing { .. } => 400,
            ErrorKind::Overloaded { .. } | ErrorKind::RateLimited { .. } => 429,
            ErrorKind::PayloadTooLarge { .. } | ErrorKind::QuotaExceeded { .. } => 413,
            ErrorKind::ServiceUnavailable { .. } => 503,
            ErrorKind::FeatureUnavailable { .. } => 501,
            ErrorKind::SourceError { problem, .. } => match problem.as_str() {
                "not_found" => 404,
                "too_large" => 413,
                "digest_mismatch" | "signature_missing" | "signature_invalid"
                | "invalid_object" => 422,
                _ => 502,
            },
            ErrorKind::Cancelled => 499,
            ErrorKind::ShuttingDown => 503,
            ErrorKind::Internal => 500,
        }
    }

    /// True when the child that served the call is gone and must be
    /// restarted.
    pub fn kills_child(&self) -> bool {
        matches!(
            self,
            ErrorKind::Timeout { .. }
                | ErrorKind::MemoryLimitExceeded { .. }
                | ErrorKind::PidsLimitExceeded { .. }
                | ErrorKind::Crashed { .. }
                | ErrorKind::SeccompViolation { .. }
                | ErrorKind::ProtocolViolation { .. }
        )
    }
}

/// An error with a human message, as the API and CLI print it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub struct CorralError {
    #[serde(flatten)]
    pub kind: ErrorKind,
    pub message: String,
}

impl CorralError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        CorralError {
            kind,
            message: message.into(),
        }
    }

    pub fn code(&self) -> &'static str {
        self.kind.code()
    }

    pub fn internal(message: impl Into<String>) -> Self {
        CorralError::new(ErrorKind::Internal, message)
    }

    pub fn invalid_input(reason: impl Into<String>) -> Self {
        let reason = reason.into();
        CorralError::new(
            ErrorKind::InvalidInput {
                reason: reason.clone(),
            },
            reason,
        )
    }
}

impl fmt::Display for CorralError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.code(), self.message)
    }
}

/// The JSON body of every failed API request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: CorralError,
}

/// Human name of a signal number.
pub fn signal_name(signal: i32) -> String {
    let name = match signal {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        5 => "SIGTRAP",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        10 => "SIGUSR1",
        11 => "SIGSEGV",
        12 => "SIGUSR2",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        24 => "SIGXCPU",
        25 => "SIGXFSZ",
        31 => "SIGSYS",
        other => return format!("signal {other}"),
    };
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_config_carries_pointer_and_rule_only_when_known() {
        let with = CorralError::new(
            ErrorKind::InvalidConfig {
                file: "policy.toml".into(),
                key: "plugins.p.settings".into(),
                reason: "9 is greater than 5".into(),
                schema: Some(Box::new(SchemaViolation {
                    pointer: "/retries".into(),
                    rule: "maximum".into(),
                })),
            },
            "m",
        );
        let json = serde_json::to_value(&with).expect("json");
        assert_eq!(json["pointer"], "/retries");
        assert_eq!(json["rule"], "maximum");
        let back: CorralError = serde_json::from_value(json).expect("decodes");
        assert_eq!(back, with);
        let without = serde_json::json!({"code": "invalid_config", "message": "m",
            "file": "corrald.toml", "key": "limits", "reason": "r"});
        let e: CorralError = serde_json::from_value(without.clone()).expect("decodes");
        assert!(matches!(
            e.kind,
            ErrorKind::InvalidConfig { schema: None, .. }
        ));
        assert_eq!(serde_json::to_value(&e).expect("json"), without);
    }

    #[test]
    fn json_shape_is_code_message_and_details() {
        let e = CorralError::new(
            ErrorKind::MemoryLimitExceeded {
                limit_bytes: 64,
                peak_bytes: 64,
            },
            "killed at its memory limit",
        );
        let json = serde_json::to_value(ErrorBody { error: e.clone() }).expect("json");
        assert_eq!(
            json,
            serde_json::json!({"error": {
                "code": "memory_limit_exceeded",
                "message": "killed at its memory limit",
                "limit_bytes": 64,
                "peak_bytes": 64
            }})
        );
        let back: ErrorBody = serde_json::from_value(json).expect("decode");
        assert_eq!(back.error, e);
    }

    #[test]
    fn code_matches_serde_tag() {
        let kinds = [
            ErrorKind::Timeout { limit_ms: 1 },
            ErrorKind::Cancelled,
            ErrorKind::Crashed {
                signal: Some(11),
                signal_name: None,
                exit_code: None,
            },
            ErrorKind::SeccompViolation {
                syscall: Some("ptrace".into()),
                argument: None,
            },
        ];
        for kind in kinds {
            let json = serde_json::to_value(&kind).expect("json");
            assert_eq!(json["code"], kind.code());
        }
    }
}
