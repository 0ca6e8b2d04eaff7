//! One human line per lifecycle event: time, plugin, what happened.

use corral_protocol::api::{Event, EventRecord};
use std::time::{Duration, UNIX_EPOCH};

/// `2025-01-02T03:04:05.678Z  hello  ready  instance 0, pid 4242, ...`
pub fn event_line(record: &EventRecord) -> String {
    let time = humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(record.time_ms));
    let (what, details) = describe(&record.event);
    // Events about the stream itself (lagged) belong to no plugin.
    let plugin = match record.event.plugin() {
        "" => "-",
        name => name,
    };
    let line = format!("{time}  {plugin:<16} {what:<14} {details}");
    line.trim_end().to_string()
}

fn describe(event: &Event) -> (&'static str, String) {
    match event {
        Event::Loaded { version, .. } => ("loaded", format!("version {version}")),
        Event::Ready {
            instance,
            pid,
            start_ms,
            ..
        } => (
            "ready",
            format!("instance {instance}, pid {pid}, started in {start_ms:.1} ms"),
        ),
        Event::CallFailed {
            method,
            code,
            message,
            ..
        } => ("call failed", format!("{method}: {code}: {message}")),
        Event::Crashed {
            instance,
            code,
            message,
            ..
        } => ("crashed", format!("instance {instance}: {code}: {message}")),
        Event::Restarted {
            instance,
            attempt,
            delay_ms,
            ..
        } => (
            "restarted",
            format!("instance {instance}, attempt {attempt}, after {delay_ms} ms"),
        ),
        Event::SeccompViolation {
            instance,
            syscall,
            argument,
            killed,
            ..
        } => (
            "syscall refused",
            format!(
                "instance {instance}: {syscall}{}{}",
                argument
                    .as_deref()
                    .map(|a| format!(" ({a})"))
                    .unwrap_or_default(),
                if *killed {
                    "; killed"
                } else {
                    "; the call failed"
                }
            ),
        ),
        Event::Quarantined {
            failures,
            window_ms,
            ..
        } => (
            "quarantined",
            format!(
                "{failures} failures within {window_ms} ms; held down until `corral reload` or `corral load`"
            ),
        ),
        Event::Unloaded { .. } => ("unloaded", String::new()),
        Event::PolicyChanged { .. } => ("policy changed", String::new()),
        Event::ReloadFailed { code, message, .. } => (
            "reload failed",
            format!("{code}: {message} (the running version keeps serving)"),
        ),
        Event::Lagged { missed } => (
            "lagged",
            format!("{missed} events were dropped because this client fell behind"),
        ),
        Event::Plugin { topic, payload, .. } => ("event", format!("{topic}: {payload}")),
        Event::HookRan {
            hook,
            stage,
            outcome,
            ..
        } => ("hook", format!("{stage} {hook}: {outcome}")),
        Event::CallRetried {
            method,
            attempt,
            code,
            ..
        } => (
            "call retried",
            format!("{method}: retry {attempt} after {code}"),
        ),
        Event::SettingsChanged { .. } => ("settings changed", String::new()),
        Event::SourceUpdated {
            source_name,
            version,
            digest,
            ..
        } => (
            "source updated",
            format!("{version} from {source_name} ({digest})"),
        ),
        Event::SourceFailed {
            source_name,
            problem,
            message,
            ..
        } => (
            "source failed",
            format!("{source_name}: {problem}: {message}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(event: Event) -> EventRecord {
        EventRecord {
            seq: 1,
            time_ms: 1_700_000_000_123,
            event,
        }
    }

    #[test]
    fn lines_carry_time_plugin_kind_and_details() {
        let line = event_line(&record(Event::Ready {
            plugin: "hello".into(),
            instance: 0,
            pid: 4242,
            start_ms: 12.345,
        }));
        assert_eq!(
            line,
            "2023-11-14T22:13:20.123Z  hello            ready          instance 0, pid 4242, started in 12.3 ms"
        );
    }

    #[test]
    fn events_without_details_have_no_trailing_space() {
        let line = event_line(&record(Event::Unloaded {
            plugin: "hello".into(),
        }));
        assert!(line.ends_with("hello            unloaded"), "{line:?}");
    }

    #[test]
    fn lagging_is_reported_without_a_plugin() {
        let line = event_line(&record(Event::Lagged { missed: 7 }));
        assert!(
            line.ends_with("-                lagged         7 events were dropped because this client fell behind"),
            "{line}"
        );
    }

    #[test]
    fn failures_show_their_code_and_message() {
        let line = event_line(&record(Event::CallFailed {
            plugin: "hello".into(),
            method: "greet".into(),
            code: "timeout".into(),
            message: "the call ran longer than 10s".into(),
        }));
        assert!(
            line.ends_with("call failed    greet: timeout: the call ran longer than 10s"),
            "{line}"
        );
        let line = event_line(&record(Event::Plugin {
            plugin: "hello".into(),
            topic: "greeted".into(),
            payload: serde_json::json!({"name": "Ada"}),
        }));
        assert!(
            line.ends_with(r#"event          greeted: {"name":"Ada"}"#),
            "{line}"
        );
    }
}
