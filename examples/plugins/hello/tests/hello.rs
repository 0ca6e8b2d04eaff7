//! Runs the built `hello` binary with a channel on fd 3, as the sandbox
//! would (but unconfined), and calls every method.

use corral_protocol::frame::{self, DEFAULT_MAX_FRAME, FrameReader};
use corral_protocol::message::{
    Call, CallResult, HostMessage, Init, InitLimits, LogLevel, PluginMessage, Reply,
};
use serde_json::{Value, json};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const LIMITS: InitLimits = InitLimits {
    memory_bytes: 32 << 20,
    call_timeout_ms: 10_000,
    pids: 4,
    open_files: 32,
};

struct Plugin {
    child: Child,
    stream: UnixStream,
    reader: FrameReader<UnixStream>,
    logs: Vec<PluginMessage>,
    next_id: u64,
}

impl Plugin {
    /// Starts `hello` with the plugin end of a socketpair as fd 3 and
    /// completes the handshake.
    fn start() -> Plugin {
        let (host, plugin) = UnixStream::pair().expect("socketpair");
        host.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("read timeout");
        let plugin_fd = plugin.as_raw_fd();
        let mut command = Command::new(env!("CARGO_BIN_EXE_hello"));
        command
            .env_clear()
            .env("CORRAL_CHANNEL_FD", "3")
            .stdin(Stdio::null());
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            command.pre_exec(move || {
                if plugin_fd == 3 {
                    // Already in place: just let it survive exec.
                    if libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                } else if libc::dup2(plugin_fd, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().expect("spawn hello");
        drop(plugin);
        let reader = FrameReader::new(host.try_clone().expect("clone"), DEFAULT_MAX_FRAME);
        let mut p = Plugin {
            child,
            stream: host,
            reader,
            logs: Vec::new(),
            next_id: 1,
        };
        match p.next() {
            PluginMessage::Hello(hello) => {
                assert_eq!(hello.name, "hello", "must match plugin.toml");
                assert_eq!(hello.version, env!("CARGO_PKG_VERSION"));
            }
            other => panic!("expected Hello, got {other:?}"),
        }
        p.send(&HostMessage::Init(Init {
            version: 1,
            max_frame: DEFAULT_MAX_FRAME,
            config: br#"{"colour":"blue"}"#.to_vec(),
            limits: LIMITS,
        }));
        assert_eq!(p.next(), PluginMessage::Ready);
        p
    }

    fn send(&mut self, message: &HostMessage) {
        let bytes = frame::encode(message).expect("encode");
        self.stream.write_all(&bytes).expect("write");
    }

    fn next(&mut self) -> PluginMessage {
        self.reader
            .read()
            .expect("read")
            .expect("plugin closed the channel")
    }

    fn reply(&mut self) -> Reply {
        loop {
            match self.next() {
                PluginMessage::Reply(r) => return r,
                other => self.logs.push(other),
            }
        }
    }

    fn call_raw(&mut self, method: &str, input: &[u8]) -> CallResult {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&HostMessage::Call(Call {
            id,
            method: method.into(),
            input: input.to_vec(),
            timeout_ms: 10_000,
        }));
        let reply = self.reply();
        assert_eq!(reply.id, id);
        reply.result
    }

    fn call(&mut self, method: &str, input: Value) -> Value {
        let bytes = serde_json::to_vec(&input).expect("json");
        match self.call_raw(method, &bytes) {
            CallResult::Ok(out) => serde_json::from_slice(&out).expect("json output"),
            CallResult::Err(e) => panic!("{method} failed: {e:?}"),
        }
    }

    /// Closes the channel and returns the exit status.
    fn close(mut self) -> std::process::ExitStatus {
        drop(self.stream);
        drop(self.reader);
        self.child.wait().expect("wait")
    }
}

#[test]
fn greet_echo_limits_whoami() {
    let mut p = Plugin::start();
    assert_eq!(
        p.call("greet", json!({"name": "Ada"})),
        json!({"greeting": "Hello, Ada!"})
    );
    let blob: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    assert_eq!(p.call_raw("echo", &blob), CallResult::Ok(blob));
    assert_eq!(
        p.call("limits", Value::Null),
        json!({
            "limits": {"memory_bytes": 32 << 20, "call_timeout_ms": 10_000, "pids": 4, "open_files": 32},
            "config": {"colour": "blue"}
        })
    );
    let me = p.call("whoami", Value::Null);
    assert_eq!(me["pid"], p.child.id());
    // SAFETY: getuid cannot fail.
    assert_eq!(me["uid"], unsafe { libc::getuid() });
    assert!(me["hostname"].as_str().is_some_and(|h| !h.is_empty()));
    assert!(p.close().success());
}

#[test]
fn greet_rejects_an_empty_name_and_fail_fails() {
    let mut p = Plugin::start();
    match p.call_raw("greet", br#"{"name":"  "}"#) {
        CallResult::Err(e) => assert_eq!(e.code, "invalid_input"),
        other => panic!("expected an error, got {other:?}"),
    }
    match p.call_raw("fail", b"") {
        CallResult::Err(e) => assert_eq!(e.code, "requested_failure"),
        other => panic!("expected an error, got {other:?}"),
    }
    assert!(p.close().success());
}

#[test]
fn log_sends_one_record_per_level_over_the_channel() {
    let mut p = Plugin::start();
    assert_eq!(p.call("log", json!({"message": "hi"})), json!(5));
    let levels: Vec<LogLevel> = p
        .logs
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
    assert!(p.close().success());
}

#[test]
fn sleep_runs_to_the_end_or_stops_when_cancelled() {
    let mut p = Plugin::start();
    let done = p.call("sleep", json!({"ms": 20}));
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
    }));
    // The Pong can only come back while the handler runs (it answers
    // pings when it checks for cancellation), so the Cancel that follows
    // reaches a running handler.
    p.send(&HostMessage::Ping { nonce: 5 });
    assert_eq!(p.next(), PluginMessage::Pong { nonce: 5 });
    p.send(&HostMessage::Cancel { id: 100 });
    let reply = p.reply();
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
    assert!(p.close().success());
}

#[test]
fn shutdown_exits_zero() {
    let mut p = Plugin::start();
    p.send(&HostMessage::Shutdown { grace_ms: 500 });
    let status = p.child.wait().expect("wait");
    assert!(status.success(), "{status:?}");
}

#[test]
fn a_garbled_host_frame_exits_non_zero() {
    let mut p = Plugin::start();
    p.stream
        .write_all(&[4, 0, 0, 0, 0xff, 0xff, 0xff, 0xff])
        .expect("write");
    let status = p.close();
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
