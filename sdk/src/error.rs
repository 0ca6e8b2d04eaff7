//! Errors: [`Error`] is what a handler returns (it becomes an error reply
//! the caller sees); [`ServeError`] is why the serve loop itself stopped.

use corral_protocol::FrameError;
use corral_protocol::message::PluginError;
use std::fmt;
use std::io;

/// Error codes the SDK itself puts in replies. Handlers choose their own
/// codes for their own failures.
pub mod codes {
    /// The input did not decode as the method's JSON input type.
    pub const INVALID_INPUT: &str = "invalid_input";
    /// No handler is registered under the called method.
    pub const UNKNOWN_METHOD: &str = "unknown_method";
    /// The handler panicked; the plugin goes on serving.
    pub const PANIC: &str = "panic";
    /// The call was cancelled before its handler started.
    pub const CANCELLED: &str = "cancelled";
    /// The reply would exceed the negotiated maximum frame.
    pub const REPLY_TOO_LARGE: &str = "reply_too_large";
    /// An event would exceed the negotiated maximum frame.
    pub const EVENT_TOO_LARGE: &str = "event_too_large";
    /// The call arrived after the host asked the plugin to shut down.
    pub const SHUTTING_DOWN: &str = "shutting_down";
    /// The plugin's settings do not decode as the type the handler asked for.
    pub const INVALID_CONFIG: &str = "invalid_config";
    /// The handler's output did not encode as JSON.
    pub const INVALID_OUTPUT: &str = "invalid_output";
    /// An I/O error the handler passed on with `?`.
    pub const IO: &str = "io";
    /// An I/O error that was a refusal (`EACCES`, `EPERM`): usually a path
    /// outside what the plugin's `[permissions]` were granted. With
    /// [`crate::fs`], the message names the path.
    pub const PERMISSION_DENIED: &str = "permission_denied";
    /// A host-service request the host cannot serve: at protocol version 1
    /// the SDK says so without sending it, and corral's own answer for a
    /// service it does not offer (under `corral run`, say) has this code.
    pub const SERVICE_UNAVAILABLE: &str = "service_unavailable";
    /// A host-service request does not fit in a frame; the host's own
    /// refusal of an oversized request has this code too.
    pub const PAYLOAD_TOO_LARGE: &str = "payload_too_large";
    /// The channel closed while a host-service request waited.
    pub const CHANNEL_CLOSED: &str = "channel_closed";
    /// The host's answer to a request is not the JSON the SDK expected.
    pub const INVALID_RESPONSE: &str = "invalid_response";
}

/// A handler's failure: a short machine-readable code and a message for
/// people. The caller receives both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    code: String,
    message: String,
}

impl Error {
    /// `code` is short and stable (`bad_csv`, `not_found`); `message`
    /// explains this occurrence.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Error {
        Error {
            code: code.into(),
            message: message.into(),
        }
    }

    /// The input was wrong: code [`codes::INVALID_INPUT`].
    pub fn invalid_input(message: impl Into<String>) -> Error {
        Error::new(codes::INVALID_INPUT, message)
    }

    pub fn code(&self) -> &str {
        &self.code
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for Error {}

impl From<Error> for PluginError {
    fn from(e: Error) -> PluginError {
        PluginError {
            code: e.code,
            message: e.message,
        }
    }
}

impl From<io::Error> for Error {
    /// The message is the error's, with the path where [`crate::fs`] (or
    /// [`crate::fs::WithPath`]) put it in; a refusal gets its own code and
    /// a hint at the sandbox.
    fn from(e: io::Error) -> Error {
        if crate::fs::is_refusal(&e) {
            let hint = if crate::fs::path_error(&e).is_some() {
                "the sandbox grants only the paths in the plugin's [permissions]"
            } else {
                "the sandbox grants only the paths in the plugin's [permissions]; \
                 corral_sdk::fs names the path in such errors"
            };
            return Error::new(codes::PERMISSION_DENIED, format!("{e} ({hint})"));
        }
        Error::new(codes::IO, e.to_string())
    }
}

/// Why [`Plugin::serve_fd`](crate::Plugin::serve_fd) stopped other than
/// by an orderly end.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("channel fd {fd} is not usable: {source}")]
    ChannelUnavailable { fd: i32, source: io::Error },
    #[error("environment variable {var}=`{value}` is not a file descriptor number")]
    BadChannelEnv { var: &'static str, value: String },
    #[error("channel i/o failed: {0}")]
    Io(io::Error),
    #[error("the host broke the protocol: {0}")]
    Protocol(FrameError),
    #[error("the host closed the channel in the middle of the handshake")]
    ClosedDuringHandshake,
    #[error("handshake failed: {0}")]
    Handshake(String),
    #[error("the plugin could not prepare itself: {0}")]
    Init(String),
    #[error("the host sent {0} after the handshake")]
    Unexpected(&'static str),
}

impl ServeError {
    /// The exit status `serve` ends the process with (sysexits.h values).
    pub fn exit_code(&self) -> i32 {
        match self {
            ServeError::ChannelUnavailable { .. } | ServeError::BadChannelEnv { .. } => 78, // EX_CONFIG
            ServeError::Io(_) => 74,   // EX_IOERR
            ServeError::Init(_) => 70, // EX_SOFTWARE
            ServeError::Protocol(_)
            | ServeError::ClosedDuringHandshake
            | ServeError::Handshake(_)
            | ServeError::Unexpected(_) => 76, // EX_PROTOCOL
        }
    }
}

impl From<FrameError> for ServeError {
    fn from(e: FrameError) -> ServeError {
        match e {
            FrameError::Io(io) => ServeError::Io(io),
            other => ServeError::Protocol(other),
        }
    }
}

impl From<io::Error> for ServeError {
    fn from(e: io::Error) -> ServeError {
        ServeError::Io(e)
    }
}
