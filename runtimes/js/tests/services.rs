//! corral-js's host services (PROTOCOL.md section 9) outside the sandbox:
//! the binary driven by `corral_sdk::testing::TestHost`, which answers the
//! script's requests and delivers events.

use corral_protocol::frame::DEFAULT_MAX_FRAME;
use corral_protocol::message::{
    CallResult, HostMessage, Init, InitLimits, PluginMessage, ServiceError, ServiceRequest,
    ServiceResult,
};
use corral_sdk::testing::{Options, TestHost};
use serde_json::{Value, json};
use std::time::Duration;

const LIMITS: InitLimits = InitLimits {
    memory_bytes: 64 << 20,
    call_timeout_ms: 5_000,
    pids: 4,
    open_files: 64,
};

const PLUGIN: &str = r#"
class Services {
  constructor(settings, corral) {
    this.corral = corral;
    this.seen = [];
    // Made before the plugin is ready: it goes out right after Ready.
    corral.subscribe("boot:*", (payload, d) => { this.seen.push([d.topic, d.from, payload]); });
  }
  async call(input) {
    return await this.corral.callPlugin(input.plugin, input.method, input.input, { timeoutMs: 50 });
  }
  async everything() {
    const c = this.corral;
    return {
      plugins: await c.listPlugins(),
      get: await c.kv.get("users", "u1"),
      put: await c.kv.put("users", "u1", { n: 1 }),
      list: await c.kv.list("users", { prefix: "u" }),
      s3get: Array.from((await c.s3.get("data", "a")).body),
      etag: await c.s3.put("data", "a", "hi", { contentType: "text/plain" }),
      settings: await c.settings(),
    };
  }
  async typed() {
    try {
      await this.corral.kv.put("secrets", "k", 1);
    } catch (e) {
      return [e.name, e.code, e.permission, e instanceof this.corral.errors.PermissionDeniedError];
    }
    return "no error";
  }
  uncaught() { return this.corral.kv.get("secrets", "k"); }
  fireAndForget() { this.corral.eventBus.emit("data:done", { ok: true }); return "sent"; }
  seenEvents() { return this.seen; }
}
module.exports = Services;
"#;

fn start(version: u16) -> (tempfile::TempDir, TestHost) {
    start_source(PLUGIN, version)
}

fn start_source(source: &str, version: u16) -> (tempfile::TempDir, TestHost) {
    let dir = tempfile::tempdir().expect("tempdir");
    let entry = dir.path().join("index.js");
    std::fs::write(&entry, source).expect("write");
    let mut host = TestHost::spawn(
        env!("CARGO_BIN_EXE_corral-js"),
        Options {
            args: vec![entry.clone().into()],
            read_timeout: Duration::from_secs(30),
            ..Options::default()
        },
    )
    .expect("spawn corral-js");
    let hello = host
        .handshake(Init {
            version,
            max_frame: DEFAULT_MAX_FRAME,
            config: b"{}".to_vec(),
            limits: LIMITS,
        })
        .expect("handshake");
    assert_eq!(hello.versions, vec![1, 2], "corral-js offers host services");
    (dir, host)
}

fn request(host: &mut TestHost) -> (ServiceRequest, Value) {
    let request = host.request().expect("a request");
    let payload = serde_json::from_slice(&request.payload).expect("payload is JSON");
    (request, payload)
}

fn ok_body(host: &mut TestHost, id: u64, body: Value) {
    host.respond(id, ServiceResult::Ok(body.to_string().into_bytes()))
        .expect("respond");
}

fn refuse(host: &mut TestHost, id: u64, code: &str, details: Value) {
    host.respond(
        id,
        ServiceResult::Err(ServiceError {
            code: code.into(),
            message: format!("refused: {code}"),
            details: details.to_string().into_bytes(),
        }),
    )
    .expect("respond");
}

fn output(reply: CallResult) -> Value {
    match reply {
        CallResult::Ok(bytes) => serde_json::from_slice(&bytes).expect("JSON output"),
        CallResult::Err(e) => panic!("failed: {}: {}", e.code, e.message),
    }
}

/// Answers the subscription the constructor made, at start.
fn ready(host: &mut TestHost) {
    let (sub, payload) = request(host);
    assert_eq!(
        (sub.service.as_str(), sub.operation.as_str(), sub.call_id),
        ("events", "subscribe", 0)
    );
    assert_eq!(payload, json!({"pattern": "boot:*"}));
    ok_body(host, sub.id, json!({}));
}

#[test]
fn a_dependency_call_carries_the_call_id_and_resolves_to_the_output() {
    let (_dir, mut host) = start(2);
    ready(&mut host);
    let id = host
        .send_call(
            "call",
            br#"{"plugin":"dep","method":"upper","input":"a"}"#,
            5_000,
        )
        .expect("call");
    let (req, payload) = request(&mut host);
    assert_eq!(
        (req.call_id, req.service.as_str(), req.operation.as_str()),
        (id, "plugins", "call")
    );
    assert_eq!(
        payload,
        json!({"plugin": "dep", "method": "upper", "input": "a", "timeout_ms": 50})
    );
    // A Ping while the script waits is answered at once.
    host.send(&HostMessage::Ping { nonce: 9 }).expect("ping");
    assert!(matches!(
        host.receive().expect("pong"),
        PluginMessage::Pong { nonce: 9 }
    ));
    ok_body(&mut host, req.id, json!({"output": "A"}));
    let reply = host.reply().expect("reply");
    assert_eq!(reply.id, id);
    assert_eq!(output(reply.result), json!("A"));
}

#[test]
fn every_operation_sends_its_payload_and_resolves_to_its_body() {
    let (_dir, mut host) = start(2);
    ready(&mut host);
    let id = host.send_call("everything", b"null", 5_000).expect("call");
    let steps = [
        ("plugins", "list", json!({}), json!({"plugins": ["dep"]})),
        (
            "kv",
            "get",
            json!({"table": "users", "key": "u1"}),
            json!({"value": null}),
        ),
        (
            "kv",
            "put",
            json!({"table": "users", "key": "u1", "value": {"n": 1}}),
            json!({}),
        ),
        (
            "kv",
            "list",
            json!({"table": "users", "prefix": "u"}),
            json!({"keys": ["u1"], "next": null}),
        ),
        (
            "s3",
            "get",
            json!({"bucket": "data", "key": "a"}),
            json!({"body": "AGhp", "size": 3, "etag": "e"}),
        ),
        (
            "s3",
            "put",
            json!({"bucket": "data", "key": "a", "body": "aGk=", "content_type": "text/plain"}),
            json!({"etag": "e2"}),
        ),
        ("config", "get", json!({}), json!({"greeting": "hi"})),
    ];
    for (service, operation, expected, body) in steps {
        let (req, payload) = request(&mut host);
        assert_eq!(
            (req.service.as_str(), req.operation.as_str(), req.call_id),
            (service, operation, id)
        );
        assert_eq!(payload, expected);
        ok_body(&mut host, req.id, body);
    }
    let reply = host.reply().expect("reply");
    assert_eq!(
        output(reply.result),
        json!({"plugins": ["dep"], "get": null, "list": {"keys": ["u1"], "next": null},
               "s3get": [0, 104, 105], "etag": "e2", "settings": {"greeting": "hi"}})
    );
}

#[test]
fn errors_are_typed_and_an_uncaught_one_answers_with_its_code() {
    let (_dir, mut host) = start(2);
    ready(&mut host);
    host.send_call("typed", b"null", 5_000).expect("call");
    let (req, _) = request(&mut host);
    refuse(
        &mut host,
        req.id,
        "permission_denied",
        json!({"code": "permission_denied", "permission": "kv.table secrets"}),
    );
    assert_eq!(
        output(host.reply().expect("reply").result),
        json!([
            "PermissionDeniedError",
            "permission_denied",
            "kv.table secrets",
            true
        ])
    );
    host.send_call("uncaught", b"null", 5_000).expect("call");
    let (req, _) = request(&mut host);
    refuse(
        &mut host,
        req.id,
        "service_unavailable",
        json!({"service": "kv"}),
    );
    match host.reply().expect("reply").result {
        CallResult::Err(e) => assert_eq!(
            (e.code.as_str(), e.message.as_str()),
            ("service_unavailable", "refused: service_unavailable")
        ),
        CallResult::Ok(_) => panic!("expected an error"),
    }
}

#[test]
fn a_request_nobody_awaits_is_answered_before_the_reply_and_deliveries_reach_handlers() {
    let (_dir, mut host) = start(2);
    ready(&mut host);
    let id = host
        .send_call("fireAndForget", b"null", 5_000)
        .expect("call");
    let (req, payload) = request(&mut host);
    assert_eq!(
        payload,
        json!({"topic": "data:done", "payload": {"ok": true}})
    );
    refuse(&mut host, req.id, "permission_denied", json!({}));
    let reply = host.reply().expect("reply");
    assert_eq!((reply.id, output(reply.result)), (id, json!("sent")));
    host.deliver("boot:now", "accounts", br#"{"n":1}"#)
        .expect("deliver");
    host.deliver("elsewhere", "accounts", b"2")
        .expect("deliver");
    assert_eq!(
        output(host.call("seenEvents", b"null").expect("call")),
        json!([["boot:now", "accounts", {"n": 1}]])
    );
}

#[test]
fn at_version_1_requests_are_service_unavailable_and_never_sent() {
    let (_dir, mut host) = start(1);
    match host.call("uncaught", b"null").expect("call") {
        CallResult::Err(e) => assert_eq!(e.code, "service_unavailable", "{}", e.message),
        CallResult::Ok(_) => panic!("expected service_unavailable"),
    }
    assert_eq!(
        output(host.call("seenEvents", b"null").expect("call")),
        json!([])
    );
}

#[test]
fn a_cancel_while_the_script_waits_ends_the_wait_and_the_next_call_works() {
    let (_dir, mut host) = start(2);
    ready(&mut host);
    let id = host
        .send_call("call", br#"{"plugin":"dep","method":"slow"}"#, 5_000)
        .expect("call");
    let (req, _) = request(&mut host);
    host.send(&HostMessage::Cancel { id }).expect("cancel");
    let reply = host.reply().expect("reply");
    assert_eq!(reply.id, id);
    match reply.result {
        CallResult::Err(e) => assert_eq!(e.code, "cancelled", "{}", e.message),
        CallResult::Ok(_) => panic!("a cancelled call answered"),
    }
    // The answer that comes late is dropped; the child goes on.
    ok_body(&mut host, req.id, json!({"output": "late"}));
    assert_eq!(
        output(host.call("seenEvents", b"null").expect("call")),
        json!([])
    );
}

const SEED_001: &str = r#"
export default class MyPlugin {
  async initialize(context) {
    this.context = context;
    this.other = context.getDependency("other-plugin");
    this.received = [];
    context.eventBus.on("user:*", (data) => { this.received.push(data); });
  }
  async execute(input) {
    const upper = await this.other.upper({ text: input });
    this.context.eventBus.emit("data:processed", { input });
    return `Processed: ${upper}`;
  }
  receivedEvents() { return this.received; }
}
"#;

#[test]
fn seed_001s_initialize_event_bus_and_get_dependency_work() {
    let (_dir, mut host) = start_source(SEED_001, 2);
    let (on, payload) = request(&mut host);
    assert_eq!((on.operation.as_str(), on.call_id), ("subscribe", 0));
    assert_eq!(payload, json!({"pattern": "user:*"}));
    ok_body(&mut host, on.id, json!({}));
    let id = host.send_call("execute", br#""abc""#, 5_000).expect("call");
    let (dep, payload) = request(&mut host);
    assert_eq!(dep.call_id, id);
    assert_eq!(
        payload,
        json!({"plugin": "other-plugin", "method": "upper", "input": {"text": "abc"}})
    );
    ok_body(&mut host, dep.id, json!({"output": "ABC"}));
    let (emit, payload) = request(&mut host);
    assert_eq!(
        payload,
        json!({"topic": "data:processed", "payload": {"input": "abc"}})
    );
    ok_body(&mut host, emit.id, json!({"delivered": 1, "dropped": 0}));
    assert_eq!(
        output(host.reply().expect("reply").result),
        json!("Processed: ABC")
    );
    host.deliver("user:created", "client", br#"{"id":7}"#)
        .expect("deliver");
    assert_eq!(
        output(host.call("receivedEvents", b"null").expect("call")),
        json!([{"id": 7}])
    );
}

/// What the shared services.js does the same in both runtimes, seen from
/// this engine (runtimes/node/test/shared_services.test.js has the rest).
const SHARED: &str = r#"
class Shared {
  constructor(settings, corral) { this.corral = corral; }
  async notJson() {
    try {
      await this.corral.publish("t", 10n);
    } catch (e) {
      return [e.name, e.code, e instanceof this.corral.errors.InvalidInputError];
    }
    return "sent";
  }
  notBytes() {
    try {
      this.corral.s3.put("b", "k", 42);
    } catch (e) {
      return e.name;
    }
    return "no throw";
  }
  shape() {
    const c = this.corral;
    const dep = c.getDependency("text-utils");
    return {
      frozen: [c, c.kv, c.s3, c.eventBus, c.errors].every((o) => Object.isFrozen(o)),
      then: typeof dep.then,
      toJSON: typeof dep.toJSON,
      metadata: dep.metadata,
    };
  }
  async listen() {
    await this.corral.subscribe("boom", () => { throw new TypeError("bad handler"); });
    return "listening";
  }
  alive() { return "alive"; }
}
module.exports = Shared;
"#;

#[test]
fn the_shared_services_refuse_bad_payloads_and_log_failing_handlers() {
    let (_dir, mut host) = start_source(SHARED, 2);
    // A payload JSON cannot hold fails in the script: no request goes out,
    // so the next message is the reply.
    assert_eq!(
        output(host.call("notJson", b"null").expect("call")),
        json!(["InvalidInputError", "invalid_input", true])
    );
    assert_eq!(
        output(host.call("notBytes", b"null").expect("call")),
        json!("TypeError")
    );
    assert_eq!(
        output(host.call("shape", b"null").expect("call")),
        json!({"frozen": true, "then": "undefined", "toJSON": "undefined",
               "metadata": {"name": "text-utils"}})
    );
    let id = host.send_call("listen", b"null", 5_000).expect("call");
    let (sub, payload) = request(&mut host);
    assert_eq!(payload, json!({"pattern": "boom"}));
    ok_body(&mut host, sub.id, json!({}));
    let reply = host.reply().expect("reply");
    assert_eq!((reply.id, output(reply.result)), (id, json!("listening")));
    host.deliver("boom", "client", b"1").expect("deliver");
    // The handler's failure is logged and the plugin goes on.
    assert_eq!(
        output(host.call("alive", b"null").expect("call")),
        json!("alive")
    );
    let logged = host.side.iter().any(|m| {
        matches!(m, PluginMessage::Log(l)
            if l.message == r#"the handler of "boom" threw TypeError: bad handler"#)
    });
    assert!(logged, "{:?}", host.side);
}
