//! Hooks (seed 003): the operator attaches methods of loaded plugins to
//! the life of every API call to the plugins they target.
//!
//! ```toml
//! [[hooks]]
//! stage = "on_submit"   # on_submit | on_result | on_error
//! plugin = "audit"      # the hook plugin, loaded
//! method = "check"
//! targets = ["*"]       # plugins whose calls it sees (patterns)
//! priority = 10         # higher runs first
//! timeout = "500ms"
//! on_failure = "fail"   # fail | skip
//! ```
//!
//! What a hook gets and may do:
//! - `on_submit` gets `{plugin, method, input}` before the call. An error
//!   answer rejects the call (`hook_rejected` naming the hook); an answer
//!   `{"input": ...}` replaces the input for the hooks after it and for
//!   the call; any other answer lets the call go on unchanged.
//! - `on_result` gets `{plugin, method, input, output}` after a
//!   successful call; `{"output": ...}` replaces the output, an error
//!   answer rejects the result (`hook_rejected`).
//! - `on_error` gets `{plugin, method, input, error}` after a failed call.
//!   It only observes: its answer never turns a failure into a success,
//!   so a crash or a limit can never be hidden from the caller.
//!
//! A hook that does not answer (timeout, crash, not loaded, overloaded)
//! fails the call with `hook_failed` when its rule is `fail`, and is
//! skipped when it is `skip`. Hooks see API calls and plugins' calls to
//! their dependencies alike. Hooks run in priority order (higher first,
//! then in policy order), each with its own timeout. A hook never runs on
//! calls to its own plugin, and calls made by hooks run no hooks, so no
//! hook can recurse. Every run is an event (`hook_ran`) and a count in
//! `corral_hook_runs_total{hook,stage,outcome}`.

use super::retry;
use crate::daemon::Daemon;
use corral_protocol::api::{CallRequest, CallResponse, Event};
use corral_protocol::error::{CorralError, ErrorKind};
use corral_protocol::services::pattern_matches;
use corral_protocol::units::HumanDuration;
use serde::Deserialize;
use serde_json::{Value, json};
use std::time::Duration;

/// Longest timeout a hook may have.
const MAX_HOOK_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    OnSubmit,
    OnResult,
    OnError,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::OnSubmit => "on_submit",
            Stage::OnResult => "on_result",
            Stage::OnError => "on_error",
        }
    }
}

/// What a hook that does not answer does to the call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// The call fails with `hook_failed`.
    #[default]
    Fail,
    /// The hook is skipped; the call goes on.
    Skip,
}

/// One `[[hooks]]` entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookRule {
    pub stage: Stage,
    pub plugin: String,
    pub method: String,
    #[serde(default = "every_plugin")]
    pub targets: Vec<String>,
    #[serde(default)]
    pub priority: i32,
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    #[serde(default)]
    pub on_failure: OnFailure,
}

fn every_plugin() -> Vec<String> {
    vec!["*".into()]
}

fn default_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(1))
}

impl HookRule {
    /// `<plugin>.<method>`, the hook's name in errors, events and metrics.
    pub fn name(&self) -> String {
        format!("{}.{}", self.plugin, self.method)
    }

    fn applies_to(&self, target: &str) -> bool {
        self.plugin != target && self.targets.iter().any(|p| pattern_matches(p, target))
    }
}

/// Checks `[[hooks]]` and the `[retry]` settings at policy load:
/// `(key, reason)` of the first value that is wrong.
pub fn validate(policy: &crate::policy::Policy) -> Result<(), (String, String)> {
    for (i, hook) in policy.hooks.iter().enumerate() {
        let key = |k: &str| format!("hooks[{i}].{k}");
        corral_protocol::manifest::validate_plugin_name(&hook.plugin)
            .map_err(|r| (key("plugin"), r))?;
        corral_protocol::manifest::MethodName::try_from(hook.method.clone())
            .map_err(|r| (key("method"), r))?;
        if hook.targets.is_empty() {
            return Err((
                key("targets"),
                "names no plugin; write [\"*\"] for every plugin".into(),
            ));
        }
        for target in &hook.targets {
            corral_protocol::services::valid_name(target, true).map_err(|r| (key("targets"), r))?;
        }
        if hook.timeout.0.is_zero() || hook.timeout.0 > MAX_HOOK_TIMEOUT {
            return Err((
                key("timeout"),
                format!("{} is outside 1ms to 60s", hook.timeout),
            ));
        }
    }
    policy
        .retry
        .check()
        .map_err(|(k, r)| (format!("retry.{k}"), r))?;
    for (name, rules) in &policy.plugins {
        if let Some(retry) = &rules.retry {
            retry
                .check()
                .map_err(|(k, r)| (format!("plugins.{name}.retry.{k}"), r))?;
        }
    }
    Ok(())
}

/// The hooks of `stage` that see calls to `target`, in the order they run.
fn hooks_for<'a>(hooks: &'a [HookRule], stage: Stage, target: &str) -> Vec<&'a HookRule> {
    let mut chosen: Vec<&HookRule> = hooks
        .iter()
        .filter(|h| h.stage == stage && h.applies_to(target))
        .collect();
    // Stable: equal priorities keep the policy's order.
    chosen.sort_by_key(|h| std::cmp::Reverse(h.priority));
    chosen
}

/// How one hook run went.
enum Ran {
    /// It answered; its answer.
    Answered(Value),
    /// It answered with an error: a rejection.
    Rejected(CorralError),
    /// It did not answer.
    Failed(CorralError),
}

/// A call through the API, with its hooks and retries.
pub async fn call(
    daemon: &Daemon,
    plugin: &str,
    request: CallRequest,
) -> Result<CallResponse, CorralError> {
    let timeout = request.timeout_ms.map(Duration::from_millis);
    call_with(daemon, plugin, request.method, request.input, timeout).await
}

/// A call with its hooks and retries: an API call, or a plugin's call to
/// a dependency (the hooks guard every way into a plugin, so a granted
/// dependency is no way around them). Only the calls hooks themselves
/// make skip this.
pub async fn call_with(
    daemon: &Daemon,
    plugin: &str,
    method: String,
    mut input: Value,
    timeout: Option<Duration>,
) -> Result<CallResponse, CorralError> {
    let policy = daemon.current_policy();
    for hook in hooks_for(&policy.hooks, Stage::OnSubmit, plugin) {
        let payload = json!({"plugin": plugin, "method": method, "input": input});
        match run(daemon, hook, plugin, payload).await? {
            Some(Value::Object(mut reply)) if reply.contains_key("input") => {
                input = reply.remove("input").unwrap_or(Value::Null);
                note(daemon, hook, plugin, "rewrote");
            }
            Some(_) => note(daemon, hook, plugin, "ok"),
            None => {}
        }
    }
    let bytes =
        serde_json::to_vec(&input).map_err(|e| CorralError::invalid_input(e.to_string()))?;
    let result = retry::call(daemon, plugin, &method, bytes, timeout, &policy).await;
    match result {
        Ok(out) => {
            let mut response = CallResponse::from_output(&out.output, out.usage);
            for hook in hooks_for(&policy.hooks, Stage::OnResult, plugin) {
                let payload = json!({
                    "plugin": plugin, "method": method, "input": input,
                    "output": response.output,
                });
                match run(daemon, hook, plugin, payload).await? {
                    Some(Value::Object(mut reply)) if reply.contains_key("output") => {
                        response.output = reply.remove("output").unwrap_or(Value::Null);
                        response.output_encoding = None;
                        note(daemon, hook, plugin, "rewrote");
                    }
                    Some(_) => note(daemon, hook, plugin, "ok"),
                    None => {}
                }
            }
            Ok(response)
        }
        Err(error) => {
            for hook in hooks_for(&policy.hooks, Stage::OnError, plugin) {
                let payload = json!({
                    "plugin": plugin, "method": method, "input": input,
                    "error": error,
                });
                // Observe only: the call's own error is what the caller gets.
                match call_hook(daemon, hook, payload).await {
                    Ran::Answered(_) => note(daemon, hook, plugin, "ok"),
                    Ran::Rejected(_) | Ran::Failed(_) => {
                        note(daemon, hook, plugin, "failed");
                    }
                }
            }
            Err(error)
        }
    }
}

/// Runs one `on_submit` or `on_result` hook: `Some(answer)`, `None` when
/// it failed and is skipped (already noted), or the error the call fails
/// with.
async fn run(
    daemon: &Daemon,
    hook: &HookRule,
    target: &str,
    payload: Value,
) -> Result<Option<Value>, CorralError> {
    match call_hook(daemon, hook, payload).await {
        Ran::Answered(v) => Ok(Some(v)),
        Ran::Rejected(e) => {
            note(daemon, hook, target, "rejected");
            Err(CorralError::new(
                ErrorKind::HookRejected {
                    hook: hook.name(),
                    stage: hook.stage.as_str().into(),
                },
                format!(
                    "the {} hook {} rejected the call to {target}: {}",
                    hook.stage.as_str(),
                    hook.name(),
                    e.message
                ),
            ))
        }
        Ran::Failed(e) if hook.on_failure == OnFailure::Skip => {
            tracing::warn!(plugin = %target, hook = %hook.name(), stage = hook.stage.as_str(), error = %e, "a hook failed and is skipped");
            note(daemon, hook, target, "skipped");
            Ok(None)
        }
        Ran::Failed(e) => {
            note(daemon, hook, target, "failed");
            Err(CorralError::new(
                ErrorKind::HookFailed {
                    hook: hook.name(),
                    stage: hook.stage.as_str().into(),
                    cause: e.code().into(),
                },
                format!(
                    "the {} hook {} failed ({}), so the call to {target} fails (its on_failure is fail): {}",
                    hook.stage.as_str(),
                    hook.name(),
                    e.code(),
                    e.message
                ),
            ))
        }
    }
}

async fn call_hook(daemon: &Daemon, hook: &HookRule, payload: Value) -> Ran {
    let input = match serde_json::to_vec(&payload) {
        Ok(b) => b,
        Err(e) => return Ran::Failed(CorralError::internal(e.to_string())),
    };
    match daemon
        .call_direct(&hook.plugin, &hook.method, input, Some(hook.timeout.0))
        .await
    {
        Ok(out) => Ran::Answered(CallResponse::from_output(&out.output, out.usage).output),
        Err(e) if matches!(e.kind, ErrorKind::PluginError { .. }) => Ran::Rejected(e),
        Err(e) => Ran::Failed(e),
    }
}

fn note(daemon: &Daemon, hook: &HookRule, target: &str, outcome: &str) {
    let name = hook.name();
    daemon.metrics.hook_ran(&name, hook.stage.as_str(), outcome);
    daemon.rt.events.publish(Event::HookRan {
        plugin: target.to_string(),
        hook: name,
        stage: hook.stage.as_str().into(),
        outcome: outcome.into(),
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Policy, PolicyText};

    fn policy(text: &str) -> Result<Policy, crate::policy::PolicyError> {
        Policy::from_layers(&[PolicyText {
            name: "test.toml".into(),
            text: text.into(),
        }])
    }

    #[test]
    fn hooks_run_by_priority_and_never_on_their_own_plugin() {
        let p = policy(
            r#"
[[hooks]]
stage = "on_submit"
plugin = "low"
method = "check"
priority = 1

[[hooks]]
stage = "on_submit"
plugin = "high"
method = "check"
priority = 10
targets = ["app*", "low"]

[[hooks]]
stage = "on_result"
plugin = "other"
method = "see"
"#,
        )
        .expect("valid hooks");
        let names = |target: &str| -> Vec<String> {
            hooks_for(&p.hooks, Stage::OnSubmit, target)
                .iter()
                .map(|h| h.name())
                .collect()
        };
        assert_eq!(names("app1"), ["high.check", "low.check"]);
        assert_eq!(names("low"), ["high.check"]);
        assert_eq!(names("high"), ["low.check"]);
        assert_eq!(names("zzz"), ["low.check"]);
        assert_eq!(hooks_for(&p.hooks, Stage::OnResult, "zzz").len(), 1);
        assert_eq!(p.hooks[0].on_failure, OnFailure::Fail);
        assert_eq!(p.hooks[0].timeout.0, Duration::from_secs(1));
    }

    #[test]
    fn a_bad_hook_is_an_invalid_policy_naming_the_key() {
        let cases = [
            (
                "stage = \"before\"\nplugin = \"a\"\nmethod = \"m\"",
                "hooks[0].stage",
            ),
            (
                "stage = \"on_submit\"\nplugin = \"a\"\nmethod = \"m\"\ntimeout = \"soon\"",
                "hooks[0].timeout",
            ),
            (
                "stage = \"on_submit\"\nplugin = \"a\"\nmethod = \"m\"\ntimeout = \"0s\"",
                "hooks[0].timeout",
            ),
            (
                "stage = \"on_submit\"\nplugin = \"a\"\nmethod = \"m\"\ncolour = 1",
                "hooks[0]",
            ),
            (
                "stage = \"on_submit\"\nplugin = \"A B\"\nmethod = \"m\"",
                "hooks[0].plugin",
            ),
            (
                "stage = \"on_submit\"\nplugin = \"a\"\nmethod = \"m\"\non_failure = \"retry\"",
                "hooks[0].on_failure",
            ),
            (
                "stage = \"on_submit\"\nplugin = \"a\"\nmethod = \"m\"\ntargets = []",
                "hooks[0].targets",
            ),
        ];
        for (body, key) in cases {
            let e = policy(&format!("[[hooks]]\n{body}\n")).expect_err(body);
            assert!(e.key.starts_with(key), "{body}: key {} is not {key}", e.key);
            assert_eq!(e.file, "test.toml", "{body}");
        }
        let e = policy("[retry]\nattempts = 99\n").expect_err("too many");
        assert_eq!(e.key, "retry.attempts");
        let e = policy("[plugins.a.retry]\nbackoff = \"9s\"\n").expect_err("backoff");
        assert_eq!(e.key, "plugins.a.retry.backoff");
        let e = policy("[retry]\ncolour = 1\n").expect_err("unknown key");
        assert!(e.key.starts_with("retry"), "{}", e.key);
    }
}
