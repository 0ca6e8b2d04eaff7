//! What a plugin's error reply becomes for the caller. Usually
//! `plugin_error`, carrying the plugin's own code. One code is a limit the
//! plugin's runtime enforced on corral's behalf: the embedded JavaScript
//! engine stops a call whose heap reaches its limit (set just under the
//! cgroup's) and replies `memory_limit_exceeded`, and the child lives on.
//! The caller gets the same typed error a kill at the cgroup limit gives,
//! with the cgroup's limit and peak, so it needs one branch, not two.

use corral_protocol::error::{CorralError, ErrorKind};
use corral_protocol::message::PluginError;

/// The reply code a runtime uses for a call stopped at its memory limit.
pub const MEMORY_LIMIT_EXCEEDED: &str = "memory_limit_exceeded";

/// The caller's error for `reply`; `memory_limit` and `peak` are the
/// plugin's cgroup figures.
pub fn error_of(reply: PluginError, memory_limit: Option<u64>, peak: u64) -> CorralError {
    let message = if reply.message.is_empty() {
        reply.code.clone()
    } else {
        reply.message
    };
    if reply.code == MEMORY_LIMIT_EXCEEDED {
        return CorralError::new(
            ErrorKind::MemoryLimitExceeded {
                limit_bytes: memory_limit.unwrap_or(0),
                peak_bytes: peak,
            },
            message,
        );
    }
    CorralError::new(
        ErrorKind::PluginError {
            plugin_code: reply.code,
        },
        message,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(code: &str, message: &str) -> PluginError {
        PluginError {
            code: code.into(),
            message: message.into(),
        }
    }

    #[test]
    fn a_runtimes_memory_limit_is_the_typed_error() {
        let e = error_of(
            reply("memory_limit_exceeded", "the heap is full"),
            Some(64 << 20),
            60 << 20,
        );
        assert_eq!(e.code(), "memory_limit_exceeded");
        assert_eq!(
            e.kind,
            ErrorKind::MemoryLimitExceeded {
                limit_bytes: 64 << 20,
                peak_bytes: 60 << 20
            }
        );
        assert_eq!(e.message, "the heap is full");
    }

    #[test]
    fn other_codes_stay_the_plugins_own() {
        let e = error_of(reply("bad_csv", ""), Some(1), 1);
        assert_eq!(e.code(), "plugin_error");
        assert_eq!(
            e.kind,
            ErrorKind::PluginError {
                plugin_code: "bad_csv".into()
            }
        );
        assert_eq!(e.message, "bad_csv", "an empty message is the code");
    }
}
