//! corral's shared vocabulary: the child wire protocol (frames and
//! messages), the plugin manifest, the compiled sandbox policy, the error
//! codes and the client API bodies.
//!
//! This crate does no I/O beyond framing on readers and writers.

#[cfg(feature = "manifest")]
pub mod api;
pub mod error;
pub mod frame;
pub mod learn;
#[cfg(feature = "manifest")]
pub mod manifest;
#[cfg(feature = "manifest")]
pub mod manifest_yaml;
pub mod message;
#[cfg(feature = "manifest")]
pub mod package_layout;
pub mod policy;
pub mod services;
#[cfg(feature = "manifest")]
pub mod sources;
#[cfg(feature = "manifest")]
pub mod units;

pub use error::{CorralError, ErrorBody, ErrorKind};
pub use frame::{FrameBuffer, FrameError, FrameReader};
#[cfg(feature = "manifest")]
pub use manifest::{Manifest, ManifestError};
pub use message::{HostMessage, PluginMessage};
pub use policy::{Confinement, SandboxPolicy};

/// Sent by the supervisor to the trampoline as the first frame on the
/// channel: what to confine and what to run.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Bootstrap {
    pub plugin: String,
    pub confinement: Confinement,
}
