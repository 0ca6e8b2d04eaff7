//! Host-service requests and event deliveries (protocol version 2), with
//! the SDK's own test host playing corrald over a socketpair.

use corral_protocol::message::{
    CallResult, HostMessage, Init, InitLimits, PluginMessage, ServiceError as WireError,
    ServiceResult,
};
use corral_sdk::testing::TestHost;
use corral_sdk::{Context, Error, Event, ListOptions, Plugin, ServeError, Served};
use serde_json::{Value, json};
use std::cell::RefCell;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Long enough that a test never passes by running out of it.
const PATIENCE: Duration = Duration::from_secs(20);

/// A service error as a JSON value a handler can return.
fn outcome(result: Result<Value, corral_sdk::ServiceError>) -> Value {
    match result {
        Ok(body) => json!({ "ok": body }),
        Err(e) => json!({ "err": { "code": e.code, "message": e.message, "details": e.details } }),
    }
}

fn services_plugin() -> Plugin {
    let events: Rc<RefCell<Vec<Value>>> = Rc::default();
    let seen = events.clone();
    Plugin::new("services-test", "0.1.0")
        .json("request", |ctx: &mut Context, input: Value| {
            let service = input["service"].as_str().unwrap_or_default().to_string();
            let operation = input["operation"].as_str().unwrap_or_default().to_string();
            Ok(outcome(ctx.request(
                &service,
                &operation,
                &input["payload"],
            )))
        })
        .json("kv_get", |ctx: &mut Context, key: String| {
            Ok(ctx.kv_get("users", &key)?)
        })
        .json("kv_list", |ctx: &mut Context, _: ()| {
            let options = ListOptions {
                prefix: Some("u".into()),
                limit: Some(2),
                ..ListOptions::default()
            };
            let page = ctx.kv_list("users", &options)?;
            Ok(json!({ "keys": page.keys, "next": page.next }))
        })
        .json("call", |ctx: &mut Context, _: ()| {
            Ok(ctx.call_plugin("text-utils", "upper", "abc")?)
        })
        .json("subscribe", |ctx: &mut Context, pattern: String| {
            ctx.subscribe(&pattern)?;
            Ok(())
        })
        .json("three_at_once", |ctx: &mut Context, _: ()| {
            let ids = [
                ctx.send_request("kv", "get", &json!({ "table": "t", "key": "a" }))?,
                ctx.send_request("kv", "get", &json!({ "table": "t", "key": "b" }))?,
                ctx.send_request("kv", "get", &json!({ "table": "t", "key": "c" }))?,
            ];
            let mut bodies = Vec::new();
            for id in ids {
                bodies.push(ctx.wait_response(id)?);
            }
            Ok(bodies)
        })
        .json("events", move |_ctx: &mut Context, _: ()| {
            Ok(std::mem::take(&mut *events.borrow_mut()))
        })
        .json("big_put", |ctx: &mut Context, bytes: usize| {
            let value = "x".repeat(bytes);
            Ok(outcome(ctx.request(
                "kv",
                "put",
                &json!({ "table": "t", "key": "k", "value": value }),
            )))
        })
        .raw("echo", |_ctx, input: &[u8]| Ok(input.to_vec()))
        .on_event(move |_ctx: &mut Context, event: &Event| {
            if event.topic == "bad" {
                return Err(Error::new("bad_event", "this topic always fails"));
            }
            let payload: Value = event.json()?;
            seen.borrow_mut()
                .push(json!({ "topic": event.topic, "from": event.from, "payload": payload }));
            Ok(())
        })
}

fn init(version: u16) -> Init {
    Init {
        version,
        max_frame: 1 << 20,
        config: b"{}".to_vec(),
        limits: InitLimits::default(),
    }
}

/// Serves `plugin` on one end of a socketpair and shakes hands at `version`.
fn start_plugin(
    plugin: fn() -> Plugin,
    version: u16,
) -> (TestHost, JoinHandle<Result<Served, ServeError>>) {
    let (host, child) = UnixStream::pair().expect("socketpair");
    host.set_read_timeout(Some(PATIENCE))
        .expect("set read timeout");
    let handle = std::thread::spawn(move || plugin().serve_fd(OwnedFd::from(child)));
    let mut host = TestHost::over(host, 1 << 20).expect("test host");
    let hello = host.handshake(init(version)).expect("handshake");
    assert!(hello.versions.contains(&2), "the SDK offers version 2");
    (host, handle)
}

fn start(version: u16) -> (TestHost, JoinHandle<Result<Served, ServeError>>) {
    start_plugin(services_plugin, version)
}

fn ok_json(result: CallResult) -> Value {
    match result {
        CallResult::Ok(bytes) => serde_json::from_slice(&bytes).expect("JSON output"),
        CallResult::Err(e) => panic!("expected success, got {e:?}"),
    }
}

fn reply_json(host: &mut TestHost, id: u64) -> Value {
    let reply = host.reply().expect("reply");
    assert_eq!(reply.id, id);
    ok_json(reply.result)
}

fn body(value: Value) -> ServiceResult {
    ServiceResult::Ok(serde_json::to_vec(&value).expect("encode"))
}

fn finish(host: TestHost, handle: JoinHandle<Result<Served, ServeError>>) -> Served {
    drop(host);
    handle
        .join()
        .expect("serve thread panicked")
        .expect("served cleanly")
}

#[test]
fn a_request_carries_its_call_id_and_returns_the_body() {
    let (mut host, handle) = start(2);
    let call = host.send_call("kv_get", br#""u1""#, 0).expect("call");
    let request = host.request().expect("request");
    assert_eq!(request.call_id, call);
    assert_eq!(
        (request.service.as_str(), request.operation.as_str()),
        ("kv", "get")
    );
    let payload: Value = serde_json::from_slice(&request.payload).expect("JSON payload");
    assert_eq!(payload, json!({ "table": "users", "key": "u1" }));
    host.respond(request.id, body(json!({ "value": { "n": 1 } })))
        .expect("respond");
    assert_eq!(reply_json(&mut host, call), json!({ "n": 1 }));

    // A second request gets a new id of the plugin's own sequence.
    let call = host.send_call("kv_get", br#""u2""#, 0).expect("call");
    let second = host.request().expect("request");
    assert_ne!(second.id, request.id);
    host.respond(second.id, body(json!({ "value": null })))
        .expect("respond");
    assert_eq!(reply_json(&mut host, call), Value::Null);
    finish(host, handle);
}

#[test]
fn a_service_error_keeps_its_code_message_and_details() {
    let (mut host, handle) = start(2);
    let input = json!({ "service": "kv", "operation": "get", "payload": { "table": "secrets", "key": "k" } });
    let call = host
        .send_call("request", input.to_string().as_bytes(), 0)
        .expect("call");
    let request = host.request().expect("request");
    let details =
        json!({ "code": "permission_denied", "message": "no", "permission": "kv.table secrets" });
    host.respond(
        request.id,
        ServiceResult::Err(WireError {
            code: "permission_denied".into(),
            message: "no".into(),
            details: details.to_string().into_bytes(),
        }),
    )
    .expect("respond");
    assert_eq!(
        reply_json(&mut host, call),
        json!({ "err": { "code": "permission_denied", "message": "no", "details": details } })
    );

    // Passed on with `?`, the caller sees the host's code.
    let call = host.send_call("call", b"null", 0).expect("call");
    let request = host.request().expect("request");
    assert_eq!(
        serde_json::from_slice::<Value>(&request.payload).expect("payload"),
        json!({ "plugin": "text-utils", "method": "upper", "input": "abc" })
    );
    host.respond(
        request.id,
        ServiceResult::Err(WireError {
            code: "crashed".into(),
            message: "text-utils died".into(),
            details: b"{}".to_vec(),
        }),
    )
    .expect("respond");
    let reply = host.reply().expect("reply");
    assert_eq!(reply.id, call);
    match reply.result {
        CallResult::Err(e) => assert_eq!(
            (e.code.as_str(), e.message.as_str()),
            ("crashed", "text-utils died")
        ),
        other => panic!("expected the dependency's error, got {other:?}"),
    }
    finish(host, handle);
}

#[test]
fn while_a_request_waits_calls_are_queued_and_pings_answered() {
    let (mut host, handle) = start(2);
    let first = host.send_call("call", b"null", 0).expect("call");
    let request = host.request().expect("request");
    let second = host.send_call("echo", b"second", 0).expect("call");
    host.send(&HostMessage::Ping { nonce: 77 }).expect("ping");
    assert_eq!(
        host.receive().expect("pong"),
        PluginMessage::Pong { nonce: 77 },
        "a Ping is answered while the handler waits for the host"
    );
    host.respond(request.id, body(json!({ "output": "ABC", "usage": {} })))
        .expect("respond");
    assert_eq!(reply_json(&mut host, first), json!("ABC"));
    let reply = host.reply().expect("second reply");
    assert_eq!(reply.id, second);
    assert_eq!(reply.result, CallResult::Ok(b"second".to_vec()));
    finish(host, handle);
}

#[test]
fn answers_in_another_order_reach_their_own_requests() {
    let (mut host, handle) = start(2);
    let call = host.send_call("three_at_once", b"null", 0).expect("call");
    let requests: Vec<_> = (0..3).map(|_| host.request().expect("request")).collect();
    for request in requests.iter().rev() {
        let key: Value = serde_json::from_slice(&request.payload).expect("payload");
        host.respond(request.id, body(json!({ "value": key["key"] })))
            .expect("respond");
    }
    assert_eq!(
        reply_json(&mut host, call),
        json!([{ "value": "a" }, { "value": "b" }, { "value": "c" }])
    );
    finish(host, handle);
}

#[test]
fn deliveries_during_a_request_are_kept_and_run_after_the_call() {
    let (mut host, handle) = start(2);
    let call = host
        .send_call("subscribe", br#""user:*""#, 0)
        .expect("call");
    let request = host.request().expect("request");
    assert_eq!(
        (request.service.as_str(), request.operation.as_str()),
        ("events", "subscribe")
    );
    host.deliver("user:1", "accounts", br#"{"n":1}"#)
        .expect("deliver");
    host.respond(request.id, body(json!({}))).expect("respond");
    assert_eq!(reply_json(&mut host, call), Value::Null);
    // Delivered while idle, then a call: they run in arrival order.
    host.deliver("user:2", "client", br#"{"n":2}"#)
        .expect("deliver");
    host.deliver("bad", "client", b"{}").expect("deliver");
    let events = host.send_call("events", b"null", 0).expect("call");
    assert_eq!(
        reply_json(&mut host, events),
        json!([
            { "topic": "user:1", "from": "accounts", "payload": { "n": 1 } },
            { "topic": "user:2", "from": "client", "payload": { "n": 2 } },
        ])
    );
    // The failing event handler was logged, and serving went on.
    let logged = host
        .side
        .iter()
        .any(|m| matches!(m, PluginMessage::Log(log) if log.message.contains("bad_event")));
    assert!(
        logged,
        "the event handler's error is logged: {:?}",
        host.side
    );
    finish(host, handle);
}

#[test]
fn a_cancel_ends_the_wait_and_the_late_answer_is_dropped() {
    let (mut host, handle) = start(2);
    let call = host.send_call("call", b"null", 0).expect("call");
    let request = host.request().expect("request");
    host.send(&HostMessage::Cancel { id: call })
        .expect("cancel");
    let reply = host.reply().expect("reply");
    assert_eq!(reply.id, call);
    match reply.result {
        CallResult::Err(e) => assert_eq!(e.code, "cancelled"),
        other => panic!("expected cancelled, got {other:?}"),
    }
    // The answer that comes later is not a protocol error.
    host.respond(request.id, body(json!({ "output": 1 })))
        .expect("respond");
    assert_eq!(
        host.call("echo", b"still here").expect("call"),
        CallResult::Ok(b"still here".to_vec())
    );
    finish(host, handle);
}

#[test]
fn a_response_to_no_request_ends_serving() {
    let (mut host, handle) = start(2);
    host.respond(99, body(json!({}))).expect("respond");
    drop(host);
    let result = handle.join().expect("serve thread panicked");
    assert!(
        matches!(result, Err(ServeError::Unexpected(what)) if what.contains("Response")),
        "{result:?}"
    );
}

#[test]
fn at_version_1_requests_fail_locally_and_nothing_is_sent() {
    let (mut host, handle) = start(1);
    let input = json!({ "service": "kv", "operation": "get", "payload": {} });
    let call = host
        .send_call("request", input.to_string().as_bytes(), 0)
        .expect("call");
    // The next frame is the reply: `reply` refuses a Request on the way.
    let answer = reply_json(&mut host, call);
    assert_eq!(answer["err"]["code"], "service_unavailable");
    let message = answer["err"]["message"].as_str().expect("message");
    assert!(message.contains("version 1"), "{message}");
    finish(host, handle);
}

#[test]
fn a_deliver_at_version_1_ends_serving() {
    let (mut host, handle) = start(1);
    host.deliver("t", "client", b"{}").expect("deliver");
    drop(host);
    let result = handle.join().expect("serve thread panicked");
    assert!(
        matches!(result, Err(ServeError::Unexpected(_))),
        "{result:?}"
    );
}

fn ready_plugin() -> Plugin {
    services_plugin().on_ready(|ctx: &mut Context| {
        ctx.subscribe("orders.*")?;
        let settings = ctx.settings()?;
        ctx.info(format!("settings {settings}"));
        Ok(())
    })
}

#[test]
fn start_up_requests_serve_no_call() {
    let (mut host, handle) = start_plugin(ready_plugin, 2);
    let subscribe = host.request().expect("subscribe");
    assert_eq!(subscribe.call_id, 0);
    assert_eq!(subscribe.operation, "subscribe");
    host.respond(subscribe.id, body(json!({})))
        .expect("respond");
    let settings = host.request().expect("settings");
    assert_eq!((settings.service.as_str(), settings.call_id), ("config", 0));
    host.respond(settings.id, body(json!({ "greeting": "hi" })))
        .expect("respond");
    let call = host.send_call("kv_list", b"null", 0).expect("call");
    let list = host.request().expect("list");
    assert_eq!(
        serde_json::from_slice::<Value>(&list.payload).expect("payload"),
        json!({ "table": "users", "prefix": "u", "limit": 2 })
    );
    host.respond(list.id, body(json!({ "keys": ["u1", "u2"], "next": "u2" })))
        .expect("respond");
    assert_eq!(
        reply_json(&mut host, call),
        json!({ "keys": ["u1", "u2"], "next": "u2" })
    );
    let logged = host.side.iter().any(
        |m| matches!(m, PluginMessage::Log(log) if log.message == r#"settings {"greeting":"hi"}"#),
    );
    assert!(logged, "{:?}", host.side);
    finish(host, handle);
}

#[test]
fn a_failing_start_up_hook_ends_the_plugin() {
    fn plugin() -> Plugin {
        services_plugin().on_ready(|ctx: &mut Context| Ok(ctx.subscribe("x")?))
    }
    let (mut host, handle) = start_plugin(plugin, 1);
    drop(host.stream().shutdown(std::net::Shutdown::Write));
    let result = handle.join().expect("serve thread panicked");
    match result {
        Err(ServeError::Init(message)) => {
            assert!(message.contains("service_unavailable"), "{message}")
        }
        other => panic!("expected a failed start, got {other:?}"),
    }
}

#[test]
fn deliveries_over_the_queue_bound_are_dropped_counted_and_serving_goes_on() {
    // The SDK keeps at most 4096 deliveries waiting for the event handler.
    const BOUND: usize = 4096;
    let (mut host, handle) = start(2);
    let call = host.send_call("subscribe", br#""t.*""#, 0).expect("call");
    let request = host.request().expect("request");
    for n in 0..BOUND + 5 {
        host.deliver("t.x", "client", format!("{n}").as_bytes())
            .expect("deliver");
    }
    host.respond(request.id, body(json!({}))).expect("respond");
    assert_eq!(reply_json(&mut host, call), Value::Null);
    let events = host.send_call("events", b"null", 0).expect("call");
    let kept = reply_json(&mut host, events);
    let kept = kept.as_array().expect("a list of events");
    assert_eq!(kept.len(), BOUND, "the queue held at its bound");
    assert_eq!(kept[0]["payload"], json!(0), "the oldest are kept");
    assert_eq!(kept[BOUND - 1]["payload"], json!(BOUND - 1));
    let logged = host.side.iter().any(|m| {
        matches!(m, PluginMessage::Log(log) if log.message.starts_with("dropped 5 event deliveries"))
    });
    assert!(logged, "the drop is logged with its count");
    assert_eq!(
        host.call("echo", b"next").expect("call"),
        CallResult::Ok(b"next".to_vec())
    );
    finish(host, handle);
}

#[test]
fn a_request_too_large_for_a_frame_fails_locally_and_the_next_is_sent() {
    let (mut host, handle) = start(2);
    // Init allowed frames of 1 MiB.
    let call = host.send_call("big_put", b"2000000", 0).expect("call");
    let answer = reply_json(&mut host, call);
    assert_eq!(answer["err"]["code"], "payload_too_large", "{answer}");
    let call = host.send_call("big_put", b"10", 0).expect("call");
    let request = host.request().expect("the small request is sent");
    assert_eq!(request.id, 1, "the refused request used no id");
    host.respond(request.id, body(json!({}))).expect("respond");
    assert_eq!(reply_json(&mut host, call), json!({ "ok": {} }));
    finish(host, handle);
}

#[test]
fn a_host_that_goes_away_while_a_request_waits_ends_serving() {
    let (mut host, handle) = start(2);
    host.send_call("call", b"null", 0).expect("call");
    host.request().expect("request");
    host.stream()
        .shutdown(std::net::Shutdown::Write)
        .expect("shutdown");
    let served = handle
        .join()
        .expect("serve thread panicked")
        .expect("an end of stream is an orderly end");
    assert_eq!(served.reason, corral_sdk::EndReason::Closed);
}
