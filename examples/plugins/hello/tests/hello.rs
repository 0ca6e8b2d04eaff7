//! Runs the built `hello` binary with a channel on fd 3, as the sandbox
//! would (but unconfined), and calls every method.

use corral_protocol::frame::DEFAULT_MAX_FRAME;
use corral_protocol::message::{
    Call, CallResult, HostMessage, Init, InitLimits, LogLevel, PluginMessage,
};
use corral_sdk::testing::{Options, TestHost};
use serde_json::{Value, json};
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

const LIMITS: InitLimits = InitLimits {
    memory_bytes: 32 << 20,
    call_timeout_ms: 10_000,
    pids: 4,
    open_files: 32,
};

/// Starts `hello` unconfined with its channel on fd 3 and completes the
/// handshake.
fn start() -> TestHost {
    let mut p = TestHost::spawn(
        env!("CARGO_BIN_EXE_hello"),
        Options {
            read_timeout: Duration::from_secs(20),
            ..Options::default()
        },
    )
    .expect("spawn hello");
    let hello = p
        .handshake(Init {
            version: 1,
            max_frame: DEFAULT_MAX_FRAME,
            config: br#"{"colour":"blue"}"#.to_vec(),
            limits: LIMITS,
        })
        .expect("handshake");
    assert_eq!(hello.name, "hello", "must match plugin.toml");
    assert_eq!(hello.version, env!("CARGO_PKG_VERSION"));
    p
}

/// Calls a JSON method that must succeed.
fn call(p: &mut TestHost, method: &str, input: Value) -> Value {
    let bytes = serde_json::to_vec(&input).expect("json");
    match p.call(method, &bytes).expect("call") {
        CallResult::Ok(out) => serde_json::from_slice(&out).expect("json output"),
        CallResult::Err(e) => panic!("{method} failed: {e:?}"),
    }
}

#[test]
fn greet_echo_limits_whoami() {
    let mut p = start();
    assert_eq!(
        call(&mut p, "greet", json!({"name": "Ada"})),
        json!({"greeting": "Hello, Ada!"})
    );
    let blob: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    assert_eq!(p.call("echo", &blob).expect("call"), CallResult::Ok(blob));
    assert_eq!(
        call(&mut p, "limits", Value::Null),
        json!({
            "limits": {"memory_bytes": 32 << 20, "call_timeout_ms": 10_000, "pids": 4, "open_files": 32},
            "config": {"colour": "blue"}
        })
    );
    let me = call(&mut p, "whoami", Value::Null);
    assert_eq!(me["pid"], p.child().expect("child").id());
    // SAFETY: getuid cannot fail.
    assert_eq!(me["uid"], unsafe { libc::getuid() });
    assert!(me["hostname"].as_str().is_some_and(|h| !h.is_empty()));
    assert!(p.close().expect("close").success());
}

#[test]
fn greet_rejects_an_empty_name_and_fail_fails() {
    let mut p = start();
    match p.call("greet", br#"{"name":"  "}"#).expect("call") {
        CallResult::Err(e) => assert_eq!(e.code, "invalid_input"),
        other => panic!("expected an error, got {other:?}"),
    }
    match p.call("fail", b"").expect("call") {
        CallResult::Err(e) => assert_eq!(e.code, "requested_failure"),
        other => panic!("expected an error, got {other:?}"),
    }
    assert!(p.close().expect("close").success());
}

#[test]
fn log_sends_one_record_per_level_over_the_channel() {
    let mut p = start();
    assert_eq!(call(&mut p, "log", json!({"message": "hi"})), json!(5));
    let levels: Vec<LogLevel> = p
        .side
        .iter()
        .map(|m| match m {
            PluginMessage::Log(log) => {
                assert_eq!(log.message, "hi");
                assert_eq!(log.fields[0].0, "call_id");
                log.level
            }
            other => panic!("expected a log, got {other:?}"),
        })
        .collect();
    assert_eq!(
        levels,
        [
            LogLevel::Error,
            LogLevel::Warn,
            LogLevel::Info,
            LogLevel::Debug,
            LogLevel::Trace
        ]
    );
    assert!(p.close().expect("close").success());
}

#[test]
fn sleep_runs_to_the_end_or_stops_when_cancelled() {
    let mut p = start();
    let done = call(&mut p, "sleep", json!({"ms": 20}));
    assert_eq!(done["cancelled"], false);
    assert!(
        done["slept_ms"].as_u64().is_some_and(|ms| ms >= 20),
        "{done}"
    );

    p.send(&HostMessage::Call(Call {
        id: 100,
        method: "sleep".into(),
        input: br#"{"ms": 60000}"#.to_vec(),
        timeout_ms: 0,
    }))
    .expect("send");
    // The Pong can only come back while the handler runs (it answers
    // pings when it checks for cancellation), so the Cancel that follows
    // reaches a running handler.
    p.send(&HostMessage::Ping { nonce: 5 }).expect("send");
    assert_eq!(
        p.receive().expect("receive"),
        PluginMessage::Pong { nonce: 5 }
    );
    p.send(&HostMessage::Cancel { id: 100 }).expect("send");
    let reply = p.reply().expect("reply");
    assert_eq!(reply.id, 100);
    let CallResult::Ok(out) = reply.result else {
        panic!("expected success, got {:?}", reply.result)
    };
    let out: Value = serde_json::from_slice(&out).expect("json");
    assert_eq!(out["cancelled"], true);
    assert!(
        out["slept_ms"].as_u64().is_some_and(|ms| ms < 60_000),
        "{out}"
    );
    assert!(p.close().expect("close").success());
}

#[test]
fn shutdown_exits_zero() {
    let mut p = start();
    p.send(&HostMessage::Shutdown { grace_ms: 500 })
        .expect("send");
    let status = p.wait().expect("wait");
    assert!(status.success(), "{status:?}");
}

#[test]
fn a_garbled_host_frame_exits_non_zero() {
    let mut p = start();
    p.stream()
        .write_all(&[4, 0, 0, 0, 0xff, 0xff, 0xff, 0xff])
        .expect("write");
    let status = p.close().expect("close");
    assert_eq!(status.code(), Some(76), "{status:?}");
    assert_eq!(status.signal(), None);
}

#[test]
fn the_manifest_is_valid_and_matches_the_binary() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("plugin.toml");
    let manifest = corral_protocol::Manifest::load(&path).expect("plugin.toml parses");
    assert_eq!(manifest.name(), "hello");
    assert_eq!(
        manifest.plugin.version.to_string(),
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(manifest.plugin.entry.as_str(), "bin/hello");
    assert_eq!(
        manifest.permissions,
        corral_protocol::manifest::Permissions::default()
    );
}
