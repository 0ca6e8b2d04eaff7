//! A plugin that drives host services on demand, for corral's service
//! suites: each method turns its input into requests to the host and
//! answers what came back, so a test can see every grant and refusal
//! exactly as a plugin sees it.
//!
//! Outcomes have one shape: `{"ok": body}` or `{"err": {"code",
//! "message", "details"}}`. The name it announces comes from
//! `CORRAL_PLUGIN` (the host sets it to the package's name), since the
//! tests copy this one binary into packages of their own.

use corral_sdk::{Context, Error, Event, Plugin, ServiceError};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Deliveries kept for `events`; beyond this they are counted only, so a
/// test that never asks cannot grow the plugin without bound.
const MAX_RECORDED: usize = 10_000;

/// Requests `flood` may send at once.
const MAX_FLOOD: u64 = 100_000;

#[derive(Deserialize)]
struct RequestInput {
    service: String,
    operation: String,
    #[serde(default = "empty_object")]
    payload: Value,
}

#[derive(Deserialize)]
struct FloodInput {
    count: u64,
    service: String,
    operation: String,
    #[serde(default = "empty_object")]
    payload: Value,
}

#[derive(Deserialize)]
struct CallInput {
    plugin: String,
    method: String,
    #[serde(default)]
    input: Value,
}

#[derive(Deserialize)]
struct SubscribeInput {
    pattern: String,
}

#[derive(Deserialize, Default)]
struct EventsInput {
    #[serde(default)]
    clear: bool,
}

#[derive(Deserialize)]
struct SleepInput {
    ms: u64,
}

fn empty_object() -> Value {
    Value::Object(Map::new())
}

/// The deliveries received so far.
#[derive(Default)]
struct Recorded {
    events: Vec<Value>,
    /// Deliveries over [`MAX_RECORDED`], not kept.
    overflow: u64,
}

impl Recorded {
    fn record(&mut self, event: &Event) {
        if self.events.len() >= MAX_RECORDED {
            self.overflow += 1;
            return;
        }
        let payload = serde_json::from_slice(&event.payload)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&event.payload).into()));
        self.events
            .push(json!({ "topic": event.topic, "from": event.from, "payload": payload }));
    }
}

fn outcome(result: Result<Value, ServiceError>) -> Value {
    match result {
        Ok(body) => json!({ "ok": body }),
        Err(e) => json!({ "err": { "code": e.code, "message": e.message, "details": e.details } }),
    }
}

/// Sends `count` requests before reading any answer, then reads them all;
/// answers how many ended with each code (`ok` for success).
fn flood(ctx: &mut Context<'_>, input: FloodInput) -> Result<Value, Error> {
    if input.count > MAX_FLOOD {
        return Err(Error::invalid_input(format!(
            "count {} is over {MAX_FLOOD}",
            input.count
        )));
    }
    let mut outcomes: BTreeMap<String, u64> = BTreeMap::new();
    let mut sent = Vec::new();
    for _ in 0..input.count {
        match ctx.send_request(&input.service, &input.operation, &input.payload) {
            Ok(id) => sent.push(id),
            Err(e) => *outcomes.entry(e.code).or_default() += 1,
        }
    }
    for id in sent {
        let code = match ctx.wait_response(id) {
            Ok(_) => "ok".to_string(),
            Err(e) => e.code,
        };
        *outcomes.entry(code).or_default() += 1;
    }
    Ok(json!(outcomes))
}

/// Sleeps `ms`, or less when the call is cancelled first.
fn sleep(ctx: &mut Context<'_>, input: SleepInput) -> Value {
    let start = Instant::now();
    let total = Duration::from_millis(input.ms);
    while start.elapsed() < total && !ctx.is_cancelled() {
        std::thread::sleep(Duration::from_millis(5).min(total - start.elapsed().min(total)));
    }
    json!({ "slept_ms": start.elapsed().as_millis() as u64 })
}

fn main() {
    let name = std::env::var("CORRAL_PLUGIN").unwrap_or_else(|_| "services-probe".to_string());
    let recorded: Rc<RefCell<Recorded>> = Rc::default();
    let on_event = recorded.clone();
    Plugin::new(name, env!("CARGO_PKG_VERSION"))
        .json("request", |ctx: &mut Context, input: RequestInput| {
            Ok(outcome(ctx.request(
                &input.service,
                &input.operation,
                &input.payload,
            )))
        })
        .json("subscribe", |ctx: &mut Context, input: SubscribeInput| {
            Ok(outcome(ctx.subscribe(&input.pattern).map(|()| json!({}))))
        })
        .json(
            "events",
            move |_ctx: &mut Context, input: Option<EventsInput>| {
                let mut recorded = recorded.borrow_mut();
                let events = if input.unwrap_or_default().clear {
                    recorded.overflow = 0;
                    std::mem::take(&mut recorded.events)
                } else {
                    recorded.events.clone()
                };
                Ok(events)
            },
        )
        .json("flood", flood)
        .json("call", |ctx: &mut Context, input: CallInput| {
            Ok(outcome(ctx.call_plugin(
                &input.plugin,
                &input.method,
                &input.input,
            )))
        })
        .json("echo", |_ctx: &mut Context, input: Value| Ok(input))
        .json("sleep", |ctx: &mut Context, input: SleepInput| {
            Ok(sleep(ctx, input))
        })
        .json(
            "crash",
            |_ctx: &mut Context, _: Value| -> Result<(), Error> { std::process::exit(3) },
        )
        .on_event(move |_ctx: &mut Context, event: &Event| {
            on_event.borrow_mut().record(event);
            Ok(())
        })
        .serve()
}
