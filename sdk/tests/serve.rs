//! Drives `Plugin::serve_fd` over a socketpair, playing the host by hand:
//! no sandbox, no supervisor, just the bytes of the protocol.

use corral_protocol::frame::{self, DEFAULT_MAX_FRAME, FrameReader};
use corral_protocol::message::{
    Call, CallResult, HostMessage, Init, InitLimits, LogLevel, MAGIC, PluginMessage, Reply,
    SUPPORTED_VERSIONS,
};
use corral_sdk::{Context, EndReason, Error, Plugin, ServeError, Served, codes};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

#[derive(Deserialize)]
struct Greet {
    name: String,
}

#[derive(Serialize)]
struct Greeting {
    greeting: String,
}

/// Long enough that a test never passes by running out of it.
const PATIENCE: Duration = Duration::from_secs(20);

fn test_plugin() -> Plugin {
    Plugin::new("test-plugin", "1.2.3")
        .json("greet", |_ctx: &mut Context, input: Greet| {
            Ok(Greeting {
                greeting: format!("Hello, {}!", input.name),
            })
        })
        .raw("echo", |_ctx, input: &[u8]| Ok(input.to_vec()))
        .json("text", |_ctx: &mut Context, len: usize| Ok("x".repeat(len)))
        .json("wait_for_cancel", |ctx: &mut Context, _: ()| {
            // Tells the host the handler is running, so a Cancel it sends
            // next reaches a running handler, not a queued call.
            ctx.info("started");
            let start = Instant::now();
            while !ctx.is_cancelled() {
                if start.elapsed() > PATIENCE {
                    return Ok(false);
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Ok(true)
        })
        .json("panic", |_ctx: &mut Context, _: ()| -> Result<(), Error> {
            panic!("deliberate test panic")
        })
        .json("fail", |_ctx: &mut Context, _: ()| -> Result<(), Error> {
            Err(Error::new("no_luck", "this method always fails"))
        })
        .json("settings", |ctx: &mut Context, _: ()| {
            let config: serde_json::Value = ctx.config()?;
            let limits = ctx.limits();
            Ok(serde_json::json!({
                "config": config,
                "memory_bytes": limits.memory_bytes,
                "pids": limits.pids,
            }))
        })
        .json("chatter", |ctx: &mut Context, _: ()| {
            ctx.log_fields(LogLevel::Warn, "careful", &[("key", "value")]);
            ctx.emit("progress", b"half".to_vec())?;
            Ok(ctx.call_id())
        })
}

/// The host's end of the channel.
struct Host {
    stream: UnixStream,
    reader: FrameReader<UnixStream>,
    /// Logs and events seen while waiting for replies.
    side: Vec<PluginMessage>,
}

impl Host {
    fn send(&mut self, message: &HostMessage) {
        self.send_all(std::slice::from_ref(message));
    }

    /// All messages in one write, as a batching host would.
    fn send_all(&mut self, messages: &[HostMessage]) {
        let mut bytes = Vec::new();
        for m in messages {
            frame::encode_into(m, &mut bytes).expect("encode host message");
        }
        self.stream.write_all(&bytes).expect("write to plugin");
    }

    fn next(&mut self) -> PluginMessage {
        self.reader
            .read::<PluginMessage>()
            .expect("read from plugin")
            .expect("plugin closed the channel")
    }

    /// The next reply, keeping logs and events aside.
    fn reply(&mut self) -> Reply {
        loop {
            match self.next() {
                PluginMessage::Reply(r) => return r,
                other @ (PluginMessage::Log(_) | PluginMessage::Event(_)) => self.side.push(other),
                other => panic!("expected a reply, got {other:?}"),
            }
        }
    }

    fn call(&mut self, id: u64, method: &str, input: &[u8]) -> CallResult {
        self.send(&call(id, method, input));
        let reply = self.reply();
        assert_eq!(reply.id, id);
        reply.result
    }

    /// Waits for the Info log the `wait_for_cancel` handler sends first.
    fn wait_started(&mut self) {
        match self.next() {
            PluginMessage::Log(log) => assert_eq!(log.message, "started"),
            other => panic!("expected the start log, got {other:?}"),
        }
    }
}

fn call(id: u64, method: &str, input: &[u8]) -> HostMessage {
    HostMessage::Call(Call {
        id,
        method: method.into(),
        input: input.to_vec(),
        timeout_ms: 0,
    })
}

fn init(max_frame: u32) -> HostMessage {
    HostMessage::Init(Init {
        version: 1,
        max_frame,
        config: br#"{"greeting":"hi"}"#.to_vec(),
        limits: InitLimits {
            memory_bytes: 64 << 20,
            call_timeout_ms: 2_000,
            pids: 8,
            open_files: 32,
        },
    })
}

/// Starts `plugin` on one end of a socketpair; returns the other end, not
/// yet past the handshake.
fn spawn(plugin: fn() -> Plugin) -> (Host, JoinHandle<Result<Served, ServeError>>) {
    let (host, child) = UnixStream::pair().expect("socketpair");
    host.set_read_timeout(Some(PATIENCE))
        .expect("set read timeout");
    let reader = FrameReader::new(host.try_clone().expect("clone"), DEFAULT_MAX_FRAME);
    let handle = std::thread::spawn(move || plugin().serve_fd(OwnedFd::from(child)));
    (
        Host {
            stream: host,
            reader,
            side: Vec::new(),
        },
        handle,
    )
}

/// Starts the test plugin and completes the handshake.
fn start_with(max_frame: u32) -> (Host, JoinHandle<Result<Served, ServeError>>) {
    let (mut host, handle) = spawn(test_plugin);
    match host.next() {
        PluginMessage::Hello(_) => {}
        other => panic!("expected Hello, got {other:?}"),
    }
    host.send(&init(max_frame));
    assert_eq!(host.next(), PluginMessage::Ready);
    (host, handle)
}

fn start() -> (Host, JoinHandle<Result<Served, ServeError>>) {
    start_with(DEFAULT_MAX_FRAME)
}

fn finish(
    host: Host,
    handle: JoinHandle<Result<Served, ServeError>>,
) -> Result<Served, ServeError> {
    drop(host);
    handle.join().expect("serve thread panicked")
}

fn ok(result: CallResult) -> Vec<u8> {
    match result {
        CallResult::Ok(bytes) => bytes,
        CallResult::Err(e) => panic!("expected success, got {e:?}"),
    }
}

fn err_code(result: CallResult) -> (String, String) {
    match result {
        CallResult::Err(e) => (e.code, e.message),
        CallResult::Ok(bytes) => panic!(
            "expected an error, got {:?}",
            String::from_utf8_lossy(&bytes)
        ),
    }
}

#[test]
fn handshake_announces_the_plugin_and_waits_for_init() {
    let (mut host, handle) = spawn(test_plugin);
    match host.next() {
        PluginMessage::Hello(hello) => {
            assert_eq!(hello.magic, MAGIC);
            assert_eq!(hello.versions, SUPPORTED_VERSIONS);
            assert_eq!(hello.name, "test-plugin");
            assert_eq!(hello.version, "1.2.3");
            assert_eq!(hello.max_frame, DEFAULT_MAX_FRAME);
        }
        other => panic!("expected Hello, got {other:?}"),
    }
    host.send(&init(DEFAULT_MAX_FRAME));
    assert_eq!(host.next(), PluginMessage::Ready);
    let served = finish(host, handle).expect("clean end");
    assert_eq!(served.reason, EndReason::Closed);
}

#[test]
fn unsupported_version_fails_the_handshake() {
    let (mut host, handle) = spawn(test_plugin);
    host.next();
    let HostMessage::Init(mut bad) = init(DEFAULT_MAX_FRAME) else {
        unreachable!()
    };
    bad.version = 99;
    host.send(&HostMessage::Init(bad));
    match finish(host, handle) {
        Err(ServeError::Handshake(reason)) => assert!(reason.contains("99"), "{reason}"),
        other => panic!("expected a handshake error, got {other:?}"),
    }
}

#[test]
fn an_init_max_frame_outside_what_hello_offered_fails_the_handshake() {
    for too_big_or_small in [1, 1023] {
        let (mut host, handle) = spawn(test_plugin);
        let offered = match host.next() {
            PluginMessage::Hello(hello) => hello.max_frame,
            other => panic!("expected Hello, got {other:?}"),
        };
        let max_frame = if too_big_or_small == 1 {
            offered + 1
        } else {
            1023
        };
        host.send(&init(max_frame));
        match finish(host, handle) {
            Err(e @ ServeError::Handshake(_)) => {
                assert_eq!(e.exit_code(), 76);
                assert!(e.to_string().contains(&max_frame.to_string()), "{e}");
            }
            other => panic!("expected a handshake error for {max_frame}, got {other:?}"),
        }
    }
}

#[test]
fn a_call_before_init_fails_the_handshake() {
    let (mut host, handle) = spawn(test_plugin);
    host.next();
    host.send(&call(1, "echo", b"x"));
    match finish(host, handle) {
        Err(e @ ServeError::Handshake(_)) => assert_eq!(e.exit_code(), 76),
        other => panic!("expected a handshake error, got {other:?}"),
    }
}

#[test]
fn json_and_raw_calls_are_answered() {
    let (mut host, handle) = start();
    let out = ok(host.call(1, "greet", br#"{"name":"Ada"}"#));
    assert_eq!(out, br#"{"greeting":"Hello, Ada!"}"#);
    let blob: Vec<u8> = (0..=255).collect();
    assert_eq!(ok(host.call(2, "echo", &blob)), blob);
    assert_eq!(ok(host.call(3, "echo", b"")), b"");
    let served = finish(host, handle).expect("clean end");
    assert_eq!(served.calls, 3);
}

#[test]
fn handler_errors_and_sdk_errors_carry_their_codes() {
    let (mut host, handle) = start();
    let (code, message) = err_code(host.call(1, "fail", b""));
    assert_eq!(
        (code.as_str(), message.as_str()),
        ("no_luck", "this method always fails")
    );

    let (code, message) = err_code(host.call(2, "nope", b""));
    assert_eq!(code, codes::UNKNOWN_METHOD);
    assert!(
        message.contains("`nope`") && message.contains("greet"),
        "{message}"
    );

    let (code, message) = err_code(host.call(3, "greet", b"{not json"));
    assert_eq!(code, codes::INVALID_INPUT);
    assert!(message.contains("greet"), "{message}");

    let (code, _) = err_code(host.call(4, "greet", br#"{"nom":"Ada"}"#));
    assert_eq!(code, codes::INVALID_INPUT);

    // The plugin still works after all of that.
    assert_eq!(ok(host.call(5, "echo", b"still here")), b"still here");
    finish(host, handle).expect("clean end");
}

#[test]
fn a_panicking_handler_becomes_an_error_reply_and_serving_goes_on() {
    let (mut host, handle) = start();
    let (code, message) = err_code(host.call(1, "panic", b""));
    assert_eq!(code, codes::PANIC);
    assert!(message.contains("deliberate test panic"), "{message}");
    let out = ok(host.call(2, "greet", br#"{"name":"again"}"#));
    assert_eq!(out, br#"{"greeting":"Hello, again!"}"#);
    finish(host, handle).expect("clean end");
}

#[test]
fn cancel_is_visible_to_a_running_handler() {
    let (mut host, handle) = start();
    host.send(&call(7, "wait_for_cancel", b""));
    host.wait_started();
    host.send(&HostMessage::Cancel { id: 7 });
    let reply = host.reply();
    assert_eq!(reply.id, 7);
    assert_eq!(
        ok(reply.result),
        b"true",
        "the handler must have seen the cancel"
    );
    finish(host, handle).expect("clean end");
}

#[test]
fn the_deadline_cancels_a_running_handler() {
    let (mut host, handle) = start();
    host.send(&HostMessage::Call(Call {
        id: 1,
        method: "wait_for_cancel".into(),
        input: Vec::new(),
        timeout_ms: 50,
    }));
    host.wait_started();
    let reply = host.reply();
    assert_eq!(ok(reply.result), b"true");
    finish(host, handle).expect("clean end");
}

#[test]
fn while_a_handler_runs_pings_are_answered_and_calls_queued() {
    let (mut host, handle) = start();
    host.send(&call(1, "wait_for_cancel", b""));
    host.wait_started();
    // A queued call, a ping, and a cancel of the queued call: the ping and
    // the cancel are answered while call 1 still runs.
    host.send_all(&[
        call(2, "echo", b"two"),
        call(3, "echo", b"three"),
        HostMessage::Ping { nonce: 0xfeed },
        HostMessage::Cancel { id: 3 },
    ]);
    assert_eq!(host.next(), PluginMessage::Pong { nonce: 0xfeed });
    let cancelled = host.reply();
    assert_eq!(cancelled.id, 3);
    assert_eq!(err_code(cancelled.result).0, codes::CANCELLED);
    host.send(&HostMessage::Cancel { id: 1 });
    let first = host.reply();
    assert_eq!((first.id, ok(first.result)), (1, b"true".to_vec()));
    let second = host.reply();
    assert_eq!((second.id, ok(second.result)), (2, b"two".to_vec()));
    finish(host, handle).expect("clean end");
}

#[test]
fn ping_is_answered_with_its_nonce() {
    let (mut host, handle) = start();
    host.send(&HostMessage::Ping {
        nonce: u64::MAX - 1,
    });
    assert_eq!(
        host.next(),
        PluginMessage::Pong {
            nonce: u64::MAX - 1
        }
    );
    finish(host, handle).expect("clean end");
}

#[test]
fn shutdown_answers_earlier_calls_refuses_later_ones_and_ends() {
    let (mut host, handle) = start();
    host.send_all(&[
        call(1, "echo", b"before"),
        HostMessage::Shutdown { grace_ms: 1_000 },
        call(2, "echo", b"after"),
    ]);
    let mut replies = [host.reply(), host.reply()];
    replies.sort_by_key(|r| r.id);
    assert_eq!(ok(replies[0].result.clone()), b"before");
    assert_eq!(err_code(replies[1].result.clone()).0, codes::SHUTTING_DOWN);
    // The plugin ends on its own, without the host closing the channel.
    let served = handle.join().expect("serve thread").expect("clean end");
    assert_eq!(served.reason, EndReason::Shutdown);
    assert_eq!(host.reader.read::<PluginMessage>().expect("read"), None);
}

#[test]
fn end_of_stream_ends_serving_cleanly() {
    let (mut host, handle) = start();
    assert_eq!(ok(host.call(1, "echo", b"x")), b"x");
    let served = finish(host, handle).expect("clean end");
    assert_eq!(served.reason, EndReason::Closed);
    assert_eq!(served.calls, 1);
}

#[test]
fn a_host_closing_with_our_bytes_unread_is_an_end_of_stream() {
    // Closing a Unix stream socket with unread data makes the peer's next
    // read fail with ECONNRESET: the host is gone, nothing went wrong here.
    let (mut host, handle) = start();
    host.send(&HostMessage::Ping { nonce: 7 });
    std::thread::sleep(std::time::Duration::from_millis(100));
    let served = finish(host, handle).expect("a clean end");
    assert_eq!(served.reason, EndReason::Closed);
}

#[test]
fn end_of_stream_mid_frame_is_a_protocol_error() {
    let (mut host, handle) = start();
    let bytes = frame::encode(&call(1, "echo", b"partial")).expect("encode");
    host.stream
        .write_all(&bytes[..bytes.len() - 2])
        .expect("write");
    match finish(host, handle) {
        Err(ServeError::Protocol(frame::FrameError::Truncated)) => {}
        other => panic!("expected truncation, got {other:?}"),
    }
}

#[test]
fn sixty_four_calls_in_one_write_get_sixty_four_replies_in_one_write() {
    let (mut host, handle) = start();
    let calls: Vec<HostMessage> = (0..64u64)
        .map(|id| call(id, "echo", &id.to_le_bytes()))
        .collect();
    host.send_all(&calls);
    let mut seen = Vec::new();
    for _ in 0..64 {
        let reply = host.reply();
        assert_eq!(ok(reply.result), reply.id.to_le_bytes());
        seen.push(reply.id);
    }
    assert_eq!(seen, (0..64).collect::<Vec<_>>(), "replies in call order");
    let served = finish(host, handle).expect("clean end");
    assert_eq!(served.calls, 64);
    // Hello, Ready, then every reply together.
    assert_eq!(served.writes, 3, "replies must be batched into one write");
}

#[test]
fn config_and_limits_come_from_init() {
    let (mut host, handle) = start();
    let out: serde_json::Value =
        serde_json::from_slice(&ok(host.call(1, "settings", b""))).expect("json");
    assert_eq!(out["config"]["greeting"], "hi");
    assert_eq!(out["memory_bytes"], 64 << 20);
    assert_eq!(out["pids"], 8);
    finish(host, handle).expect("clean end");
}

#[test]
fn logs_and_events_travel_over_the_channel() {
    let (mut host, handle) = start();
    assert_eq!(ok(host.call(9, "chatter", b"")), b"9");
    assert_eq!(host.side.len(), 2, "{:?}", host.side);
    match &host.side[0] {
        PluginMessage::Log(log) => {
            assert_eq!(log.level, LogLevel::Warn);
            assert_eq!(log.message, "careful");
            assert_eq!(log.fields, [("key".to_string(), "value".to_string())]);
        }
        other => panic!("expected a log, got {other:?}"),
    }
    match &host.side[1] {
        PluginMessage::Event(event) => {
            assert_eq!(event.topic, "progress");
            assert_eq!(event.payload, b"half");
        }
        other => panic!("expected an event, got {other:?}"),
    }
    finish(host, handle).expect("clean end");
}

#[test]
fn a_reply_over_the_negotiated_frame_becomes_an_error() {
    let (mut host, handle) = start_with(1024);
    // Small input, output over the limit: `"` + 2000 x + `"`.
    let (code, message) = err_code(host.call(1, "text", b"2000"));
    assert_eq!(code, codes::REPLY_TOO_LARGE);
    assert!(message.contains("2002"), "{message}");
    assert_eq!(ok(host.call(2, "text", b"3")), br#""xxx""#);
    finish(host, handle).expect("clean end");
}

#[test]
fn an_oversized_frame_from_the_host_ends_serving() {
    let (mut host, handle) = start_with(1024);
    host.stream
        .write_all(&5000u32.to_le_bytes())
        .expect("write");
    match finish(host, handle) {
        Err(ServeError::Protocol(frame::FrameError::TooLarge {
            len: 5000,
            max: 1024,
        })) => {}
        other => panic!("expected TooLarge, got {other:?}"),
    }
}

#[test]
fn a_garbled_frame_from_the_host_ends_serving() {
    let (mut host, handle) = start();
    // A well-formed length around a message tag that does not exist.
    let mut bytes = 4u32.to_le_bytes().to_vec();
    bytes.extend_from_slice(&200u32.to_le_bytes());
    host.stream.write_all(&bytes).expect("write");
    match finish(host, handle) {
        Err(e @ ServeError::Protocol(frame::FrameError::Decode(_))) => {
            assert_eq!(e.exit_code(), 76)
        }
        other => panic!("expected a decode error, got {other:?}"),
    }
}

#[test]
fn a_second_init_is_a_protocol_error() {
    let (mut host, handle) = start();
    host.send(&init(DEFAULT_MAX_FRAME));
    match finish(host, handle) {
        Err(ServeError::Unexpected(what)) => assert!(what.contains("Init")),
        other => panic!("expected Unexpected, got {other:?}"),
    }
}

#[test]
fn max_frame_is_kept_within_what_a_host_accepts() {
    fn tiny() -> Plugin {
        Plugin::new("tiny", "0.0.1").max_frame(10)
    }
    fn huge() -> Plugin {
        Plugin::new("huge", "0.0.1").max_frame(u32::MAX)
    }
    for (plugin, expected) in [
        (tiny as fn() -> Plugin, 1024),
        (huge, frame::HARD_MAX_FRAME),
    ] {
        let (mut host, handle) = spawn(plugin);
        match host.next() {
            PluginMessage::Hello(hello) => assert_eq!(hello.max_frame, expected),
            other => panic!("expected Hello, got {other:?}"),
        }
        match finish(host, handle) {
            Err(ServeError::ClosedDuringHandshake) => {}
            other => panic!("expected a closed handshake, got {other:?}"),
        }
    }
}

/// A plugin whose methods are only known once it has its settings: the
/// init hook reads them, the fallback serves any method they name.
fn dynamic_plugin() -> Plugin {
    use std::cell::RefCell;
    use std::rc::Rc;
    let known: Rc<RefCell<Vec<String>>> = Rc::default();
    let for_init = Rc::clone(&known);
    Plugin::new("dynamic", "1.0.0")
        .on_init(move |init| {
            let config: serde_json::Value =
                serde_json::from_slice(init.config).map_err(|e| e.to_string())?;
            if init.limits.memory_bytes == 0 {
                return Err("expected a memory limit".into());
            }
            let greeting = config["greeting"].as_str().ok_or("no greeting")?;
            for_init.borrow_mut().push(greeting.to_string());
            Ok(())
        })
        .raw("echo", |_ctx, input: &[u8]| Ok(input.to_vec()))
        .fallback(move |ctx: &mut Context, _input: &[u8]| {
            if known.borrow().iter().any(|m| m == ctx.method()) {
                Ok(format!("served {}", ctx.method()).into_bytes())
            } else {
                Err(Error::new(codes::UNKNOWN_METHOD, ctx.method().to_string()))
            }
        })
}

#[test]
fn the_init_hook_sees_the_settings_and_the_fallback_serves_other_methods() {
    let (mut host, handle) = spawn(dynamic_plugin);
    assert!(matches!(host.next(), PluginMessage::Hello(_)));
    host.send(&init(DEFAULT_MAX_FRAME));
    assert_eq!(host.next(), PluginMessage::Ready);
    assert_eq!(ok(host.call(1, "echo", b"x")), b"x", "named handlers first");
    assert_eq!(ok(host.call(2, "hi", b"")), b"served hi");
    let (code, message) = err_code(host.call(3, "other", b""));
    assert_eq!(
        (code.as_str(), message.as_str()),
        (codes::UNKNOWN_METHOD, "other")
    );
    assert!(finish(host, handle).is_ok());
}

#[test]
fn an_init_hook_error_ends_the_start_without_ready() {
    let (mut host, handle) = spawn(dynamic_plugin);
    assert!(matches!(host.next(), PluginMessage::Hello(_)));
    host.send(&HostMessage::Init(Init {
        version: 1,
        max_frame: DEFAULT_MAX_FRAME,
        config: b"{}".to_vec(),
        limits: InitLimits {
            memory_bytes: 1 << 20,
            ..InitLimits::default()
        },
    }));
    let result = handle.join().expect("serve thread panicked");
    let Err(e) = result else {
        panic!("the start should have failed: {result:?}");
    };
    assert!(
        matches!(&e, ServeError::Init(m) if m == "no greeting"),
        "{e}"
    );
    assert_eq!(e.exit_code(), 70);
    // Nothing but Hello was sent: the channel ends without Ready.
    assert!(host.reader.read::<PluginMessage>().expect("read").is_none());
}
