//! Retries of idempotent methods. A plugin's manifest names the methods
//! that are safe to run twice (`[plugin] idempotent = ["get"]`, compiled
//! into `SandboxPolicy.idempotent`); a call to one of them that fails
//! because the child died (`crashed`) or ran out of time (`timeout`) is
//! tried again, up to the operator's `[retry] attempts`, waiting
//! `backoff` before the first retry and twice as long before each next
//! one, capped at `backoff_max`. Any other failure is the plugin's answer
//! and is never retried, nor is any method the manifest does not name:
//! running a non-idempotent method twice could do its work twice.
//!
//! The wait also gives a crashed child's restart time to happen; the
//! retry then waits for a ready child within the call's own deadline.

use corral_protocol::error::{CorralError, ErrorKind};
use corral_protocol::units::HumanDuration;
use serde::Deserialize;
use std::time::Duration;

/// Most extra attempts an operator may ask for.
pub const MAX_ATTEMPTS: u32 = 10;

/// `[retry]` and `[plugins.<name>.retry]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetrySettings {
    /// Extra attempts after the first; 0 turns retries off.
    pub attempts: u32,
    /// The wait before the first retry, doubled before each next one.
    pub backoff: HumanDuration,
    /// The longest wait.
    pub backoff_max: HumanDuration,
}

impl Default for RetrySettings {
    fn default() -> Self {
        RetrySettings {
            attempts: 0,
            backoff: HumanDuration(Duration::from_millis(50)),
            backoff_max: HumanDuration(Duration::from_secs(2)),
        }
    }
}

impl RetrySettings {
    /// `(key suffix, reason)` when a value is out of range.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.attempts > MAX_ATTEMPTS {
            return Err((
                "attempts",
                format!("{} is more than {MAX_ATTEMPTS}", self.attempts),
            ));
        }
        if self.backoff.0 > self.backoff_max.0 {
            return Err((
                "backoff",
                format!(
                    "{} is longer than backoff_max ({})",
                    self.backoff, self.backoff_max
                ),
            ));
        }
        if self.backoff_max.0 > Duration::from_secs(60) {
            return Err(("backoff_max", format!("{} is over 60s", self.backoff_max)));
        }
        Ok(())
    }

    /// The wait before retry number `retry` (1 for the first).
    pub fn delay(&self, retry: u32) -> Duration {
        let factor = 1u32 << retry.saturating_sub(1).min(16);
        self.backoff
            .0
            .saturating_mul(factor)
            .min(self.backoff_max.0)
    }
}

/// Calls `plugin` (no hooks), retrying as its policy allows; each retry
/// is an event (`call_retried`) and a count in
/// `corral_call_retries_total{plugin}`.
pub async fn call(
    daemon: &crate::daemon::Daemon,
    plugin: &str,
    method: &str,
    input: Vec<u8>,
    timeout: Option<Duration>,
    policy: &crate::policy::Policy,
) -> Result<crate::child::CallOutput, CorralError> {
    let idempotent = daemon
        .entry(plugin)?
        .compiled
        .as_ref()
        .is_ok_and(|p| is_idempotent(&p.idempotent, p.default_method.as_deref(), method));
    let settings = settings_for(policy, plugin);
    let attempts = if idempotent { settings.attempts } else { 0 };
    let mut retry = 0;
    loop {
        // The input is bounded by the API's body limit; a copy per
        // attempt keeps the original for the next one.
        match daemon
            .call_direct(plugin, method, input.clone(), timeout)
            .await
        {
            Err(e) if retry < attempts && retryable(&e) => {
                retry += 1;
                tracing::info!(plugin = %plugin, method = %method, retry, error = %e, "retrying an idempotent method");
                daemon.metrics.call_retried(plugin);
                daemon
                    .rt
                    .events
                    .publish(corral_protocol::api::Event::CallRetried {
                        plugin: plugin.to_string(),
                        method: method.to_string(),
                        attempt: retry,
                        code: e.code().to_string(),
                    });
                tokio::time::sleep(settings.delay(retry)).await;
            }
            result => return result,
        }
    }
}

/// Whether `error` may be retried: the call may not have run to its end
/// (the child died or was stopped at the deadline).
pub fn retryable(error: &CorralError) -> bool {
    matches!(
        error.kind,
        ErrorKind::Crashed { .. } | ErrorKind::Timeout { .. }
    )
}

/// The method a call names, with an empty name meaning the default.
pub fn is_idempotent(idempotent: &[String], default_method: Option<&str>, method: &str) -> bool {
    let method = if method.is_empty() {
        default_method.unwrap_or_default()
    } else {
        method
    };
    !method.is_empty() && idempotent.iter().any(|m| m == method)
}

/// The settings for `plugin`: its own override, else the policy's.
pub fn settings_for<'a>(policy: &'a crate::policy::Policy, plugin: &str) -> &'a RetrySettings {
    policy
        .plugins
        .get(plugin)
        .and_then(|r| r.retry.as_ref())
        .unwrap_or(&policy.retry)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let s = RetrySettings {
            attempts: 5,
            backoff: HumanDuration(Duration::from_millis(50)),
            backoff_max: HumanDuration(Duration::from_millis(150)),
        };
        assert_eq!(s.delay(1), Duration::from_millis(50));
        assert_eq!(s.delay(2), Duration::from_millis(100));
        assert_eq!(s.delay(3), Duration::from_millis(150));
        assert_eq!(s.delay(40), Duration::from_millis(150));
    }

    #[test]
    fn only_crashes_and_timeouts_of_named_methods_are_retried() {
        let crashed = CorralError::new(
            ErrorKind::Crashed {
                signal: Some(9),
                signal_name: None,
                exit_code: None,
            },
            "died",
        );
        let own = CorralError::new(
            ErrorKind::PluginError {
                plugin_code: "bad".into(),
            },
            "no",
        );
        assert!(retryable(&crashed));
        assert!(retryable(&CorralError::new(
            ErrorKind::Timeout { limit_ms: 1 },
            "slow"
        )));
        assert!(!retryable(&own));
        let idem = vec!["get".to_string()];
        assert!(is_idempotent(&idem, None, "get"));
        assert!(is_idempotent(&idem, Some("get"), ""));
        assert!(!is_idempotent(&idem, Some("put"), ""));
        assert!(!is_idempotent(&idem, None, "put"));
        assert!(!is_idempotent(&idem, None, ""));
    }

    #[test]
    fn out_of_range_settings_name_their_key() {
        let s = RetrySettings {
            attempts: 11,
            ..RetrySettings::default()
        };
        assert_eq!(s.check().map_err(|e| e.0), Err("attempts"));
        let s = RetrySettings {
            backoff: HumanDuration(Duration::from_secs(5)),
            ..RetrySettings::default()
        };
        assert_eq!(s.check().map_err(|e| e.0), Err("backoff"));
    }
}
