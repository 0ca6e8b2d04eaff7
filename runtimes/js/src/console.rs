//! `console.log/info/warn/error/debug`: records kept for the running call
//! and sent to the host as Log frames when it ends (a handler's logs go
//! out with its reply anyway). The buffer lives outside the script's heap,
//! so it has a budget of its own: past it, records are counted and dropped.

use corral_sdk::LogLevel;
use rquickjs::{Ctx, Function, Object, Value, function::Rest};
use std::cell::RefCell;
use std::rc::Rc;

/// Bytes of log text one call may buffer.
const BUDGET: usize = 256 * 1024;
/// Longest single record; longer ones are cut.
const MAX_RECORD: usize = 16 * 1024;

#[derive(Debug, Default)]
pub struct LogBuffer {
    records: Vec<(LogLevel, String)>,
    bytes: usize,
    dropped: u64,
}

impl LogBuffer {
    fn push(&mut self, level: LogLevel, mut text: String) {
        if text.len() > MAX_RECORD {
            let mut end = MAX_RECORD;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
            text.push_str(" [truncated]");
        }
        if self.bytes + text.len() > BUDGET {
            self.dropped += 1;
            return;
        }
        self.bytes += text.len();
        self.records.push((level, text));
    }

    /// Everything buffered, and a note of what was dropped; empties it.
    pub fn drain(&mut self) -> Vec<(LogLevel, String)> {
        let mut out = std::mem::take(&mut self.records);
        if self.dropped > 0 {
            out.push((
                LogLevel::Warn,
                format!(
                    "{} console records dropped: more than {BUDGET} bytes of logs in one call",
                    self.dropped
                ),
            ));
        }
        self.bytes = 0;
        self.dropped = 0;
        out
    }
}

pub type SharedLog = Rc<RefCell<LogBuffer>>;

/// Defines the global `console` object writing into `log`.
pub fn install<'js>(ctx: &Ctx<'js>, log: &SharedLog) -> rquickjs::Result<()> {
    let console = Object::new(ctx.clone())?;
    for (name, level) in [
        ("log", LogLevel::Info),
        ("info", LogLevel::Info),
        ("warn", LogLevel::Warn),
        ("error", LogLevel::Error),
        ("debug", LogLevel::Debug),
    ] {
        let log = Rc::clone(log);
        let f = Function::new(ctx.clone(), move |ctx: Ctx<'js>, args: Rest<Value<'js>>| {
            let text = args
                .0
                .iter()
                .map(|v| describe(&ctx, v))
                .collect::<Vec<_>>()
                .join(" ");
            log.borrow_mut().push(level, text);
        })?
        .with_name(name)?;
        console.set(name, f)?;
    }
    ctx.globals().set("console", console)?;
    Ok(())
}

/// How a console argument reads: strings as they are, errors as
/// "Name: message", objects as JSON when they have one, the rest as
/// `String(value)` does.
pub fn describe<'js>(ctx: &Ctx<'js>, value: &Value<'js>) -> String {
    if let Some(s) = value.as_string() {
        return s.to_string().unwrap_or_default();
    }
    if let Some(text) = error_text(value) {
        return text;
    }
    if value.is_object() && !value.is_function() {
        if let Ok(Some(json)) = ctx.json_stringify(value.clone()) {
            if let Ok(text) = json.to_string() {
                return text;
            }
        }
        // The stringify may have thrown (a cycle); that is not the
        // script's error to see.
        let _ = ctx.catch();
    }
    match value.clone().try_into_string() {
        Ok(s) => s.to_string().unwrap_or_default(),
        Err(v) => {
            let coerced: rquickjs::Result<rquickjs::Coerced<String>> = v.get();
            coerced.map(|c| c.0).unwrap_or_else(|_| {
                let _ = ctx.catch();
                format!("[{}]", v.type_name())
            })
        }
    }
}

/// "Name: message" for an Error object (its `name` and `message`).
pub fn error_text(value: &Value<'_>) -> Option<String> {
    let object = value.as_object()?;
    if !value.is_error() {
        return None;
    }
    let name: Option<String> = object.get("name").ok();
    let message: Option<String> = object.get("message").ok();
    Some(match (name, message) {
        (Some(n), Some(m)) if !m.is_empty() => format!("{n}: {m}"),
        (Some(n), _) => n,
        (None, Some(m)) => format!("Error: {m}"),
        (None, None) => "Error".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_buffer_keeps_to_its_budget_and_says_what_it_dropped() {
        let mut b = LogBuffer::default();
        for _ in 0..100 {
            b.push(LogLevel::Info, "x".repeat(MAX_RECORD * 2));
        }
        let out = b.drain();
        assert!(out.len() < 100);
        assert!(out[0].1.ends_with("[truncated]"));
        let (level, note) = out.last().expect("a note");
        assert_eq!(*level, LogLevel::Warn);
        assert!(note.contains("console records dropped"), "{note}");
        assert!(b.drain().is_empty(), "drained");
    }
}
