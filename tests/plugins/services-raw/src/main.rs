//! A test plugin that speaks protocol version 2 by hand (PROTOCOL.md
//! section 9), one frame at a time on blocking reads, so the daemon's
//! tests can drive host services without depending on an SDK.
//!
//! Methods (input and output JSON):
//! - `request {service, operation, payload}`: sends one Request (serving
//!   this call) and returns `{"ok": body}` or `{"err": {code, message,
//!   details}}`, with `elapsed_us`, the round trip as the plugin saw it
//!   (for the benchmarks);
//! - `subscribe {pattern}`: `events.subscribe`, answered like `request`;
//! - `events`: the deliveries received so far, `[{topic, from, payload}]`;
//! - `timeout`: the `timeout_ms` the host gave this call;
//! - `echo`: its input; `crash`: exits at once with status 3;
//! - `block {ms}`: sleeps without reading its channel (a subscriber that
//!   does not keep up);
//! - `flood {count}`: sends `count` `plugins.list` requests without
//!   waiting, and returns how many it sent.

use corral_protocol::frame::{self, FrameBuffer};
use corral_protocol::message::{
    CallResult, Hello, HostMessage, MAGIC, PluginMessage, Reply, ServiceRequest, ServiceResult,
};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::FromRawFd;

struct Plugin {
    channel: File,
    inbox: FrameBuffer,
    /// Calls that arrived while waiting for a Response.
    queued: VecDeque<corral_protocol::message::Call>,
    deliveries: Vec<Value>,
    next_request: u64,
}

fn main() {
    // SAFETY: the host hands the channel over on fd 3 and nothing else
    // in this process owns it.
    let channel = unsafe { File::from_raw_fd(corral_protocol::message::CHANNEL_FD) };
    let mut plugin = Plugin {
        channel,
        inbox: FrameBuffer::new(frame::HANDSHAKE_MAX_FRAME),
        queued: VecDeque::new(),
        deliveries: Vec::new(),
        next_request: 1,
    };
    if let Err(e) = plugin.serve() {
        eprintln!("services-raw: {e}");
        std::process::exit(2);
    }
}

impl Plugin {
    fn send(&mut self, message: &PluginMessage) -> Result<(), String> {
        let bytes = frame::encode(message).map_err(|e| e.to_string())?;
        self.channel.write_all(&bytes).map_err(|e| e.to_string())
    }

    /// The next message from the host; `None` at end of stream.
    fn receive(&mut self) -> Result<Option<HostMessage>, String> {
        loop {
            if let Some(payload) = self.inbox.next_payload().map_err(|e| e.to_string())? {
                return frame::decode_payload(payload)
                    .map(Some)
                    .map_err(|e| e.to_string());
            }
            let spare = self.inbox.spare(frame::READ_CHUNK);
            let n = self.channel.read(spare).map_err(|e| e.to_string())?;
            if n == 0 {
                return Ok(None);
            }
            self.inbox.commit(n);
        }
    }

    fn serve(&mut self) -> Result<(), String> {
        self.send(&PluginMessage::Hello(Hello {
            magic: MAGIC,
            versions: vec![2],
            name: "services-raw".into(),
            version: "0.1.0".into(),
            max_frame: frame::DEFAULT_MAX_FRAME,
        }))?;
        match self.receive()? {
            Some(HostMessage::Init(init)) => self.inbox.set_max_frame(init.max_frame),
            other => return Err(format!("expected Init, got {other:?}")),
        }
        self.send(&PluginMessage::Ready)?;
        loop {
            let call = match self.queued.pop_front() {
                Some(call) => call,
                None => match self.receive()? {
                    None => return Ok(()),
                    Some(HostMessage::Call(call)) => call,
                    Some(other) => {
                        self.other(other)?;
                        continue;
                    }
                },
            };
            let output = self.call(&call)?;
            let result = match output {
                Ok(value) => CallResult::Ok(value.to_string().into_bytes()),
                Err(message) => CallResult::Err(corral_protocol::message::PluginError {
                    code: "bad_input".into(),
                    message,
                }),
            };
            self.send(&PluginMessage::Reply(Reply {
                id: call.id,
                result,
            }))?;
        }
    }

    /// Anything but a Call or the awaited Response.
    fn other(&mut self, message: HostMessage) -> Result<(), String> {
        match message {
            HostMessage::Ping { nonce } => self.send(&PluginMessage::Pong { nonce }),
            HostMessage::Shutdown { .. } => std::process::exit(0),
            HostMessage::Deliver(d) => {
                self.deliveries.push(json!({
                    "topic": d.topic,
                    "from": d.from,
                    "payload": serde_json::from_slice::<Value>(&d.payload).unwrap_or(Value::Null),
                }));
                Ok(())
            }
            HostMessage::Call(call) => {
                self.queued.push_back(call);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn call(
        &mut self,
        call: &corral_protocol::message::Call,
    ) -> Result<Result<Value, String>, String> {
        let input: Value = serde_json::from_slice(&call.input).unwrap_or(Value::Null);
        Ok(Ok(match call.method.as_str() {
            "request" => self.request(
                call.id,
                input["service"].as_str().unwrap_or(""),
                input["operation"].as_str().unwrap_or(""),
                &input["payload"],
            )?,
            "subscribe" => self.request(
                call.id,
                "events",
                "subscribe",
                &json!({"pattern": input["pattern"]}),
            )?,
            "events" => Value::Array(self.deliveries.clone()),
            "timeout" => json!({"timeout_ms": call.timeout_ms}),
            "echo" => input,
            "crash" => std::process::exit(3),
            "block" => {
                let ms = input["ms"].as_u64().unwrap_or(1000);
                std::thread::sleep(std::time::Duration::from_millis(ms));
                json!({"slept_ms": ms})
            }
            "flood" => {
                let count = input["count"].as_u64().unwrap_or(0);
                for _ in 0..count {
                    let id = self.next_request;
                    self.next_request += 1;
                    self.send(&PluginMessage::Request(ServiceRequest {
                        id,
                        call_id: 0,
                        service: "plugins".into(),
                        operation: "list".into(),
                        payload: b"{}".to_vec(),
                    }))?;
                }
                json!({"sent": count})
            }
            other => return Ok(Err(format!("no method {other:?}"))),
        }))
    }

    /// Sends one Request and waits for its Response, keeping what else
    /// arrives meanwhile.
    fn request(
        &mut self,
        call_id: u64,
        service: &str,
        operation: &str,
        payload: &Value,
    ) -> Result<Value, String> {
        let id = self.next_request;
        self.next_request += 1;
        // A payload that is a string is sent as it is (malformed JSON on
        // purpose); anything else as JSON.
        let payload = match payload {
            Value::String(raw) => raw.clone().into_bytes(),
            other => other.to_string().into_bytes(),
        };
        let started = std::time::Instant::now();
        self.send(&PluginMessage::Request(ServiceRequest {
            id,
            call_id,
            service: service.into(),
            operation: operation.into(),
            payload,
        }))?;
        loop {
            match self.receive()? {
                None => return Err("the host closed the channel".into()),
                Some(HostMessage::Response(r)) if r.id == id => {
                    let elapsed_us = started.elapsed().as_micros() as u64;
                    let mut answer = match r.result {
                        ServiceResult::Ok(body) => json!({
                            "ok": serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null)
                        }),
                        ServiceResult::Err(e) => json!({"err": {
                            "code": e.code,
                            "message": e.message,
                            "details": serde_json::from_slice::<Value>(&e.details).unwrap_or(Value::Null),
                        }}),
                    };
                    answer["elapsed_us"] = json!(elapsed_us);
                    return Ok(answer);
                }
                Some(HostMessage::Response(_)) => {}
                Some(other) => self.other(other)?,
            }
        }
    }
}
