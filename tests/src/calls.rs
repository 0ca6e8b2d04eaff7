//! Calling plugins with JSON, and waiting for lifecycle events.

use crate::attempt::Attempt;
use corral_protocol::api::{Event, EventRecord};
use corral_protocol::error::CorralError;
use corral_supervisor::host::PluginHost;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;

fn encode(input: &Value) -> Vec<u8> {
    serde_json::to_vec(input).unwrap_or_else(|e| panic!("encoding the input {input}: {e}"))
}

fn decode(method: &str, output: &[u8]) -> Value {
    serde_json::from_slice(output).unwrap_or_else(|e| {
        panic!(
            "{method} replied with something that is not JSON ({e}): {}",
            String::from_utf8_lossy(output)
        )
    })
}

/// Calls `method` with JSON in and out, under the policy's timeout.
pub async fn call(host: &PluginHost, method: &str, input: Value) -> Result<Value, CorralError> {
    let out = host.call(method, encode(&input), None).await?;
    Ok(decode(method, &out.output))
}

/// Calls `method` with a timeout shorter than the policy's.
pub async fn call_within(
    host: &PluginHost,
    method: &str,
    input: Value,
    timeout: Duration,
) -> Result<Value, CorralError> {
    let out = host.call(method, encode(&input), Some(timeout)).await?;
    Ok(decode(method, &out.output))
}

/// Makes a hostile attack that the plugin survives to report.
#[track_caller]
pub fn attempt(
    host: &PluginHost,
    method: &str,
    input: Value,
) -> impl std::future::Future<Output = Attempt> {
    let caller = std::panic::Location::caller();
    let method = method.to_string();
    async move {
        match host.call(&method, encode(&input), None).await {
            Ok(out) => Attempt::from_output(&out.output),
            Err(e) => panic!(
                "{caller}: {method}({input}) should have been answered by the plugin, but the call failed: {e:?}"
            ),
        }
    }
}

/// Makes a call that must fail; returns its typed error.
#[track_caller]
pub fn expect_error(
    host: &PluginHost,
    method: &str,
    input: Value,
) -> impl std::future::Future<Output = CorralError> {
    let caller = std::panic::Location::caller();
    let method = method.to_string();
    async move {
        match host.call(&method, encode(&input), None).await {
            Ok(out) => panic!(
                "{caller}: {method}({input}) should have failed, but the plugin answered: {}",
                String::from_utf8_lossy(&out.output)
            ),
            Err(e) => e,
        }
    }
}

/// Waits up to `within` for an event `matches` accepts; `None` if none came.
pub async fn wait_for_event(
    events: &mut broadcast::Receiver<Arc<EventRecord>>,
    within: Duration,
    matches: impl Fn(&Event) -> bool,
) -> Option<Event> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Err(_) => return None,
            Ok(Ok(record)) if matches(&record.event) => return Some(record.event.clone()),
            Ok(Ok(_)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => {}
            Ok(Err(broadcast::error::RecvError::Closed)) => return None,
        }
    }
}

/// How long a test waits for a lifecycle event.
pub const EVENT_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The pid of a plugin's one live instance.
pub fn pid_of(host: &corral_supervisor::host::PluginHost) -> i32 {
    let children = host.children();
    assert_eq!(
        children.len(),
        1,
        "expected one live instance of {}",
        host.name()
    );
    children[0].pid()
}
