//! The daemon's learning mode over the API: `POST /v1/plugins/{name}/learn`
//! runs a loaded plugin's instances under the learning policy for a set
//! time, `GET /v1/plugins/{name}/learn` tells how it goes and, once it
//! ended, holds the drafted grants.

use serde::{Deserialize, Serialize};

/// The longest learning run the daemon starts: the plugin runs less
/// confined meanwhile, so it is short and bounded.
pub const MAX_LEARN_MS: u64 = 10 * 60 * 1000;

/// `POST /v1/plugins/{name}/learn`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LearnRequest {
    /// How long the plugin runs under the learning policy, 1 ms to
    /// [`MAX_LEARN_MS`].
    pub duration_ms: u64,
}

/// The state of a plugin's learning run (both routes answer it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LearnStatus {
    pub plugin: String,
    /// Whether its instances run under the learning policy now.
    pub learning: bool,
    /// Until the learning policy is replaced by the normal one, while
    /// learning.
    #[serde(default)]
    pub remaining_ms: u64,
    /// The draft of the last run that ended, if any.
    #[serde(default)]
    pub draft: Option<LearnDraft>,
}

/// What a learning run drafted: both fragments carry, on every line, why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LearnDraft {
    /// The `[permissions]` fragment for `plugin.toml`.
    pub manifest: String,
    /// The `[plugins.NAME]` fragment for the operator's policy.
    pub policy: String,
    /// The run needed nothing beyond what the plugin is granted.
    pub needed_nothing: bool,
    /// Needs past the record's bound, not drafted.
    pub not_recorded: u64,
    /// How the run ended: whether the normal policy serves again, and if
    /// not, why.
    pub restored: bool,
    #[serde(default)]
    pub restore_error: Option<crate::error::CorralError>,
}
