//! Exit codes, so scripts can tell what went wrong without parsing text.

use corral_protocol::error::{CorralError, ErrorKind};

/// Success.
pub const OK: u8 = 0;
/// The call or plugin failed: a typed error from the plugin or its sandbox.
pub const PLUGIN_ERROR: u8 = 1;
/// The command line was wrong (clap uses 2 as well).
pub const USAGE: u8 = 2;
/// The daemon could not be reached.
pub const UNREACHABLE: u8 = 3;
/// Bad input: a package, manifest, policy file or request that is invalid.
pub const INVALID: u8 = 4;
/// Refused: permission denied or feature missing.
pub const DENIED: u8 = 5;
/// A defect in corral itself.
pub const INTERNAL: u8 = 70;

/// The exit code for an error.
pub fn code_for(error: &CorralError) -> u8 {
    match error.kind {
        ErrorKind::InvalidManifest { .. }
        | ErrorKind::InvalidPolicy { .. }
        | ErrorKind::InvalidPackage { .. }
        | ErrorKind::InvalidInput { .. }
        | ErrorKind::DependencyMissing { .. }
        | ErrorKind::PluginNotFound { .. }
        | ErrorKind::AlreadyExists { .. } => INVALID,
        ErrorKind::PermissionDenied { .. } | ErrorKind::FeatureUnavailable { .. } => DENIED,
        ErrorKind::Internal => INTERNAL,
        _ => PLUGIN_ERROR,
    }
}
