//! Exit codes, so scripts can tell what went wrong without parsing text.
//! `corral --help` lists them ([`HELP`]); keep the two in step.

use crate::client::ClientError;
use corral_protocol::error::{CorralError, ErrorKind};

/// Success.
pub const OK: u8 = 0;
/// The call or plugin failed: a typed error from the plugin or its sandbox.
pub const PLUGIN_ERROR: u8 = 1;
/// The command line was wrong (clap uses 2 as well).
pub const USAGE: u8 = 2;
/// The daemon could not be reached, or the connection to it broke.
pub const UNREACHABLE: u8 = 3;
/// Bad input: a package, manifest, policy file or request that is invalid,
/// or a plugin that does not exist.
pub const INVALID: u8 = 4;
/// Refused: permission denied or feature missing.
pub const DENIED: u8 = 5;
/// The plugin cannot serve now but may later: not loaded, quarantined,
/// overloaded, or the daemon is shutting down.
pub const UNAVAILABLE: u8 = 6;
/// A defect in corral itself, or an answer from the daemon this client
/// does not understand.
pub const INTERNAL: u8 = 70;

/// The exit codes as `corral --help` shows them.
pub const HELP: &str = "\
Exit codes:
   0  success
   1  the call or plugin failed (a typed error from the plugin or its sandbox:
      plugin_error, timeout, crashed, memory_limit_exceeded, hook_rejected, ...)
   2  usage error (bad command line)
   3  the daemon is unreachable (no socket, nothing listening, no permission
      on the socket) or the connection to it broke
   4  invalid input, package, manifest, policy or configuration, no such
      plugin, or another package already installed under the name
   5  denied (permission_denied, feature_unavailable)
   6  unavailable for now (not_loaded, quarantined, overloaded, rate_limited,
      quota_exceeded, service_unavailable, shutting_down, source_error)
  70  internal error, or an answer from the daemon that corral does not understand";

/// The exit code for a typed error.
pub fn code_for(error: &CorralError) -> u8 {
    match error.kind {
        ErrorKind::InvalidManifest { .. }
        | ErrorKind::InvalidPolicy { .. }
        | ErrorKind::InvalidConfig { .. }
        | ErrorKind::InvalidPackage { .. }
        | ErrorKind::InvalidInput { .. }
        | ErrorKind::PayloadTooLarge { .. }
        | ErrorKind::DependencyMissing { .. }
        | ErrorKind::PluginNotFound { .. }
        | ErrorKind::AlreadyExists { .. }
        | ErrorKind::VersionInUse { .. } => INVALID,
        ErrorKind::PermissionDenied { .. } | ErrorKind::FeatureUnavailable { .. } => DENIED,
        ErrorKind::NotLoaded { .. }
        | ErrorKind::Quarantined { .. }
        | ErrorKind::Overloaded { .. }
        | ErrorKind::RateLimited { .. }
        | ErrorKind::QuotaExceeded { .. }
        | ErrorKind::ServiceUnavailable { .. }
        | ErrorKind::ShuttingDown
        | ErrorKind::SourceError { .. } => UNAVAILABLE,
        ErrorKind::Internal => INTERNAL,
        ErrorKind::Timeout { .. }
        | ErrorKind::MemoryLimitExceeded { .. }
        | ErrorKind::PidsLimitExceeded { .. }
        | ErrorKind::Crashed { .. }
        | ErrorKind::SeccompViolation { .. }
        | ErrorKind::ProtocolViolation { .. }
        | ErrorKind::SandboxSetupFailed { .. }
        | ErrorKind::PluginError { .. }
        | ErrorKind::HookRejected { .. }
        | ErrorKind::HookFailed { .. }
        | ErrorKind::StartTimeout { .. }
        | ErrorKind::Cancelled => PLUGIN_ERROR,
    }
}

/// The exit code for a failure talking to the daemon.
pub fn code_for_client(error: &ClientError) -> u8 {
    match error {
        ClientError::Unreachable { .. } | ClientError::Disconnected { .. } => UNREACHABLE,
        ClientError::Api(e) => code_for(e),
        ClientError::InvalidRequest(_) => INVALID,
        ClientError::Protocol(_) => INTERNAL,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(kind: ErrorKind) -> CorralError {
        CorralError::new(kind, "m")
    }

    #[test]
    fn typed_errors_map_to_their_documented_codes() {
        let plugin = || "p".to_string();
        let cases = [
            (
                ErrorKind::PluginError {
                    plugin_code: "x".into(),
                },
                PLUGIN_ERROR,
            ),
            (ErrorKind::Timeout { limit_ms: 1 }, PLUGIN_ERROR),
            (
                ErrorKind::Crashed {
                    signal: Some(11),
                    signal_name: None,
                    exit_code: None,
                },
                PLUGIN_ERROR,
            ),
            (
                ErrorKind::SeccompViolation {
                    syscall: None,
                    argument: None,
                },
                PLUGIN_ERROR,
            ),
            (ErrorKind::PluginNotFound { plugin: plugin() }, INVALID),
            (ErrorKind::InvalidInput { reason: "r".into() }, INVALID),
            (
                ErrorKind::InvalidManifest {
                    file: "f".into(),
                    key: "k".into(),
                    reason: "r".into(),
                },
                INVALID,
            ),
            (ErrorKind::PermissionDenied { permission: None }, DENIED),
            (
                ErrorKind::FeatureUnavailable {
                    feature: "landlock".into(),
                },
                DENIED,
            ),
            (ErrorKind::NotLoaded { plugin: plugin() }, UNAVAILABLE),
            (
                ErrorKind::Quarantined {
                    plugin: plugin(),
                    failures: 5,
                    window_ms: 1,
                },
                UNAVAILABLE,
            ),
            (ErrorKind::Overloaded { limit: 4 }, UNAVAILABLE),
            (ErrorKind::ShuttingDown, UNAVAILABLE),
            (ErrorKind::Internal, INTERNAL),
        ];
        for (kind, code) in cases {
            let name = kind.code();
            assert_eq!(code_for(&error(kind)), code, "{name}");
        }
    }

    #[test]
    fn client_failures_map_to_their_codes() {
        let unreachable = ClientError::Unreachable {
            socket: "/nowhere".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        };
        assert_eq!(code_for_client(&unreachable), UNREACHABLE);
        assert_eq!(
            code_for_client(&ClientError::Protocol("x".into())),
            INTERNAL
        );
        assert_eq!(
            code_for_client(&ClientError::InvalidRequest("x".into())),
            INVALID
        );
        let api = ClientError::Api(error(ErrorKind::PermissionDenied { permission: None }));
        assert_eq!(code_for_client(&api), DENIED);
    }

    #[test]
    fn the_help_text_lists_every_code() {
        for code in [
            OK,
            PLUGIN_ERROR,
            USAGE,
            UNREACHABLE,
            INVALID,
            DENIED,
            UNAVAILABLE,
            INTERNAL,
        ] {
            let line = format!("\n{code:>4}  ");
            assert!(
                HELP.contains(&line),
                "exit code {code} missing from the help text"
            );
        }
    }
}
