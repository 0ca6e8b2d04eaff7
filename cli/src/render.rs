//! Turning results into what a person (or, with `--json`, a script) reads.

pub mod events;
pub mod status;
pub mod table;

pub use events::event_line;
pub use status::{
    health, installed, plugin_detail, plugins_table, reloaded, removed, summary_line,
};

use corral_protocol::api::{CallResponse, Usage};
use corral_protocol::error::{CorralError, ErrorBody};
use corral_protocol::policy::SandboxPolicy;
use std::fmt::Write;

/// A plugin's reply as the API encodes it (JSON, text, or base64), so
/// `corral run` prints what `corral call` would.
pub fn call_response(bytes: &[u8], usage: Usage) -> CallResponse {
    CallResponse::from_output(bytes, usage)
}

/// Human form of a reply: pretty JSON, or the text itself.
pub fn human_output(response: &CallResponse) -> String {
    match (&response.output, &response.output_encoding) {
        (serde_json::Value::String(s), None) => s.clone(),
        (v, _) => serde_json::to_string_pretty(v).unwrap_or_default(),
    }
}

pub fn usage_line(u: &Usage) -> String {
    format!(
        "wall {:.2} ms, cpu {:.2} ms, peak memory {}",
        u.wall_ms,
        u.cpu_ms,
        human_bytes(u.peak_memory_bytes)
    )
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

pub fn error_json(error: &CorralError) -> String {
    serde_json::to_string(&ErrorBody {
        error: error.clone(),
    })
    .unwrap_or_default()
}

/// `error: <code>: <message>` plus the details, one per line.
pub fn human_error(error: &CorralError) -> String {
    let mut out = format!("error: {}: {}", error.code(), error.message);
    if let Ok(serde_json::Value::Object(map)) = serde_json::to_value(&error.kind) {
        for (k, v) in map {
            if k == "code" {
                continue;
            }
            let _ = write!(
                out,
                "\n  {k}: {}",
                v.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string())
            );
        }
    }
    out
}

/// The compiled policy as a table of rules with their sources, then the
/// sets that are too long for a table cell.
pub fn policy(p: &SandboxPolicy) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "sandbox policy for {} {}\n", p.plugin, p.version);
    let width = p
        .provenance
        .iter()
        .map(|r| r.rule.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let vwidth = p
        .provenance
        .iter()
        .map(|r| r.value.len())
        .max()
        .unwrap_or(5)
        .clamp(5, 48);
    let _ = writeln!(out, "{:width$}  {:vwidth$}  SOURCE", "RULE", "VALUE");
    for r in &p.provenance {
        let _ = writeln!(out, "{:width$}  {:vwidth$}  {}", r.rule, r.value, r.source);
    }
    if let Some(ll) = &p.confinement.landlock {
        let _ = writeln!(out, "\nlandlock filesystem rules (everything else denied):");
        for rule in &ll.fs {
            let _ = writeln!(out, "  {:<10} {}", rule.access.name(), rule.path);
        }
        if let Some(ports) = &ll.tcp_connect {
            let _ = writeln!(out, "  tcp connect only to ports {ports:?}");
        }
        let _ = writeln!(
            out,
            "  scoped: signals {}, abstract unix sockets {}",
            yes(ll.scope_signals),
            yes(ll.scope_abstract_unix)
        );
    } else {
        let _ = writeln!(out, "\nlandlock: off");
    }
    match &p.confinement.seccomp {
        Some(sc) => {
            let _ = writeln!(
                out,
                "\nseccomp allow-list ({} system calls, {} BPF instructions):",
                sc.allowed.len(),
                sc.instructions.len()
            );
            let mut line = String::from(" ");
            for name in &sc.allowed {
                if line.len() + name.len() > 78 {
                    let _ = writeln!(out, "{line}");
                    line = String::from(" ");
                }
                line.push(' ');
                line.push_str(name);
            }
            let _ = writeln!(out, "{line}");
        }
        None => {
            let _ = writeln!(out, "\nseccomp: off");
        }
    }
    let r = &p.resources;
    let _ = writeln!(
        out,
        "\ncgroup: memory {}, swap {}, pids {}, cpu {}",
        r.memory_max
            .map(human_bytes)
            .unwrap_or_else(|| "unlimited".into()),
        r.swap_max
            .map(human_bytes)
            .unwrap_or_else(|| "unlimited".into()),
        r.pids_max
            .map(|n| n.to_string())
            .unwrap_or_else(|| "unlimited".into()),
        r.cpu_quota_us
            .map(|q| format!("{}% of one CPU", q * 100 / r.cpu_period_us.max(1)))
            .unwrap_or_else(|| "unlimited".into()),
    );
    if !p.warnings.is_empty() {
        let _ = writeln!(out, "\nwarnings:");
        for w in &p.warnings {
            let _ = writeln!(out, "  - {w}");
        }
    }
    out
}

fn yes(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_are_json_text_or_base64() {
        let usage = Usage::default();
        let json = call_response(b"{\"a\":1}", usage);
        assert_eq!(json.output, serde_json::json!({"a": 1}));
        assert_eq!(human_output(&json), "{\n  \"a\": 1\n}");
        let text = call_response(b"plain text", usage);
        assert_eq!(text.output, serde_json::json!("plain text"));
        assert_eq!(human_output(&text), "plain text");
        let binary = call_response(&[0xff, 0xfe, 0x00], usage);
        assert_eq!(binary.output, serde_json::json!("//4A"));
        assert_eq!(binary.output_encoding.as_deref(), Some("base64"));
        assert_eq!(human_output(&binary), "\"//4A\"");
    }

    #[test]
    fn errors_print_code_message_and_details() {
        let error = CorralError::new(
            corral_protocol::error::ErrorKind::Timeout { limit_ms: 250 },
            "the call ran longer than 250ms",
        );
        assert_eq!(
            human_error(&error),
            "error: timeout: the call ran longer than 250ms\n  limit_ms: 250"
        );
        assert_eq!(
            error_json(&error),
            r#"{"error":{"code":"timeout","limit_ms":250,"message":"the call ran longer than 250ms"}}"#
        );
    }

    #[test]
    fn byte_sizes_use_binary_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(32 << 20), "32.0 MiB");
    }
}
