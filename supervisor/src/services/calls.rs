//! `plugins.call` and `plugins.list`: a plugin calls a method of one of
//! its dependencies through the host.
//!
//! # Why each check is where it is
//!
//! - **Grant** first: only a plugin named in the caller's
//!   `policy.services.calls` (its manifest's `[dependencies]` that the
//!   operator granted) is reached; anything else is `permission_denied`
//!   naming `plugins.call <name>`, whether or not it is installed, so a
//!   plugin cannot probe what else is installed.
//! - **Deadline**: the call gets at most what is left of the call the
//!   request serves (`Caller.deadline`), and the dependency's own call
//!   timeout bounds it further (`PluginHost::call`), so a chain of calls
//!   can never outlive the API call at its root.
//! - **Depth**: cycles are refused when a plugin is installed and again
//!   when it is loaded (`Daemon::refuse_cycle`), but a dependency may be
//!   swapped for a version with other dependencies while its callers run.
//!   A chain deeper than [`MAX_CALL_DEPTH`] is refused at call time, so
//!   even then a loop ends at once with a typed error instead of holding
//!   a slot in every plugin along it until the deadline.
//! - The call itself goes through `Daemon::call_from_plugin`, the API's
//!   path (the operator's hooks and retry rule, in-flight slots, metrics,
//!   `call_failed` events), so a dependency call is no way around a hook.
//!   A dependency that dies answers the caller with its typed error
//!   (`crashed`, ...) from the child's death, never a hang.

use super::{Caller, body, parse, unknown_operation};
use crate::daemon::Daemon;
use corral_protocol::error::{CorralError, ErrorKind};
use serde::Deserialize;
use std::sync::Weak;
use std::time::{Duration, Instant};

/// Dependency calls in a chain from an API call before the next is
/// refused.
pub const MAX_CALL_DEPTH: u32 = 8;

tokio::task_local! {
    /// The depth of the dependency call the current task is making; the
    /// child records it with the call, and the callee's requests carry
    /// it on ([`Caller::depth`]).
    static CALL_DEPTH: u32;
}

/// The depth the call being made from this task is at: 0 for an API
/// call, n for the n-th dependency call of a chain.
pub fn current_depth() -> u32 {
    CALL_DEPTH.try_with(|d| *d).unwrap_or(0)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CallArgs {
    plugin: String,
    #[serde(default)]
    method: String,
    #[serde(default)]
    input: serde_json::Value,
    timeout_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListArgs {}

/// Answers one `plugins` request.
pub async fn handle(
    daemon: Weak<Daemon>,
    caller: Caller,
    operation: &str,
    payload: &[u8],
) -> Result<Vec<u8>, CorralError> {
    match operation {
        "call" => {
            let args: CallArgs = parse("plugins", "call", payload)?;
            call(daemon, &caller, args).await
        }
        "list" => {
            let _: ListArgs = parse("plugins", "list", payload)?;
            body(&serde_json::json!({ "plugins": caller.policy.services.calls }))
        }
        other => Err(unknown_operation("plugins", other, &["call", "list"])),
    }
}

async fn call(
    daemon: Weak<Daemon>,
    caller: &Caller,
    args: CallArgs,
) -> Result<Vec<u8>, CorralError> {
    if !caller.policy.services.calls.contains(&args.plugin) {
        return Err(not_granted(&caller.plugin, &args.plugin));
    }
    if args.method.len() > 256 {
        return Err(CorralError::invalid_input(
            "plugins.call: method must be at most 256 bytes",
        ));
    }
    if caller.depth >= MAX_CALL_DEPTH {
        return Err(CorralError::new(
            ErrorKind::DependencyMissing {
                dependency: args.plugin.clone(),
                requirement: format!("a chain of at most {MAX_CALL_DEPTH} dependency calls"),
            },
            format!(
                "{} calling {} would be dependency call {} of one chain; at most {MAX_CALL_DEPTH} are allowed (is there a dependency cycle?)",
                caller.plugin,
                args.plugin,
                caller.depth + 1
            ),
        ));
    }
    let timeout = bounded_timeout(args.timeout_ms, caller.deadline, Instant::now())?;
    let daemon = daemon
        .upgrade()
        .ok_or_else(|| CorralError::new(ErrorKind::ShuttingDown, "corrald is shutting down"))?;
    let call = CALL_DEPTH.scope(
        caller.depth + 1,
        daemon.call_from_plugin(&args.plugin, args.method, args.input, timeout),
    );
    // Hooks and retries each take their own time: the whole of it, not
    // only each attempt, ends with what is left of the caller's call.
    let response = match (caller.deadline, timeout) {
        (Some(deadline), Some(limit)) => tokio::time::timeout_at(deadline.into(), call)
            .await
            .map_err(|_| {
                CorralError::new(
                    ErrorKind::Timeout {
                        limit_ms: u64::try_from(limit.as_millis()).unwrap_or(u64::MAX),
                    },
                    format!(
                        "the call to {} (with its hooks and retries) ran past what was left of the call to {}",
                        args.plugin, caller.plugin
                    ),
                )
            })??,
        _ => call.await?,
    };
    body(&serde_json::json!({ "output": response.output, "usage": response.usage }))
}

/// The call's timeout: what the plugin asked for, cut to what is left of
/// the call its request serves. `None` leaves it to the dependency's own
/// limit; a deadline already passed is a timeout now.
fn bounded_timeout(
    asked_ms: Option<u64>,
    deadline: Option<Instant>,
    now: Instant,
) -> Result<Option<Duration>, CorralError> {
    let asked = asked_ms.map(Duration::from_millis);
    let Some(deadline) = deadline else {
        return Ok(asked);
    };
    let left = deadline.saturating_duration_since(now);
    if left.is_zero() {
        return Err(CorralError::new(
            ErrorKind::Timeout { limit_ms: 0 },
            "the call this request serves has no time left for a dependency call",
        ));
    }
    Ok(Some(asked.map_or(left, |a| a.min(left))))
}

fn not_granted(caller: &str, target: &str) -> CorralError {
    let target = super::clip(target);
    CorralError::new(
        ErrorKind::PermissionDenied {
            permission: Some(format!("plugins.call {target}")),
        },
        format!(
            "plugin {caller} may not call {target}: list it under [dependencies] in {caller}'s plugin.toml \
             and grant it in the policy ([plugins.{caller}.grant] calls = [\"{target}\"], or [grantable] calls = true)"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timeout_is_the_callers_remainder() {
        let now = Instant::now();
        let deadline = now + Duration::from_millis(300);
        assert_eq!(
            bounded_timeout(None, Some(deadline), now).ok().flatten(),
            Some(Duration::from_millis(300))
        );
        assert_eq!(
            bounded_timeout(Some(100), Some(deadline), now)
                .ok()
                .flatten(),
            Some(Duration::from_millis(100))
        );
        assert_eq!(
            bounded_timeout(Some(5000), Some(deadline), now)
                .ok()
                .flatten(),
            Some(Duration::from_millis(300))
        );
        assert_eq!(
            bounded_timeout(Some(5000), None, now).ok().flatten(),
            Some(Duration::from_millis(5000))
        );
        assert_eq!(bounded_timeout(None, None, now).ok().flatten(), None);
        let late = bounded_timeout(None, Some(now), now + Duration::from_millis(1));
        assert_eq!(late.map_err(|e| e.code()), Err("timeout"));
    }

    #[test]
    fn a_refusal_names_the_permission_and_the_grant() {
        let e = not_granted("app", "text-utils");
        assert_eq!(e.code(), "permission_denied");
        assert_eq!(
            e.kind,
            ErrorKind::PermissionDenied {
                permission: Some("plugins.call text-utils".into())
            }
        );
        assert!(e.message.contains("[dependencies]"), "{}", e.message);
        assert!(
            e.message.contains("calls = [\"text-utils\"]"),
            "{}",
            e.message
        );
    }

    #[tokio::test]
    async fn the_depth_travels_in_the_task() {
        assert_eq!(current_depth(), 0);
        let inner = CALL_DEPTH.scope(3, async { current_depth() }).await;
        assert_eq!(inner, 3);
    }
}
