//! PROTOCOL.md claims a plugin can be written in C from the page alone and
//! shows one. This test takes that C program out of the page, compiles it
//! with the system C compiler the way the page says (static, as corral's
//! packaging builds C plugins) and drives it through a whole session and
//! the edge cases the page asks a plugin to handle, so the claim stays
//! true.

use corral_protocol::frame::{self, FrameError, FrameReader, HANDSHAKE_MAX_FRAME};
use corral_protocol::message::{
    Call, CallResult, Delivery, HostMessage, Init, InitLimits, MAGIC, PluginMessage, Reply,
    ServiceResponse, ServiceResult,
};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

const DOC: &str = include_str!("../PROTOCOL.md");

/// The one ```c block of PROTOCOL.md.
fn c_source() -> &'static str {
    let start = DOC.find("```c\n").expect("PROTOCOL.md has a ```c block") + "```c\n".len();
    let len = DOC[start..].find("```").expect("the ```c block ends");
    &DOC[start..start + len]
}

/// Compiles the C plugin once per test run.
fn binary() -> &'static Path {
    static BINARY: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, path) = BINARY.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let source = dir.path().join("c-echo.c");
        std::fs::write(&source, c_source()).expect("write the C source");
        let binary = dir.path().join("c-echo");
        let compiler = std::env::var("CC").unwrap_or_else(|_| "cc".into());
        let output = Command::new(&compiler)
            .args(["-std=c99", "-Wall", "-Wextra", "-O2", "-static", "-o"])
            .arg(&binary)
            .arg(&source)
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "this test needs a C compiler to build the plugin in PROTOCOL.md: \
                     running `{compiler}` failed: {e} (install gcc and libc6-dev, or set CC)"
                )
            });
        assert!(
            output.status.success(),
            "the C plugin of PROTOCOL.md does not compile (a static build needs the C \
             library's static archive, libc.a from libc6-dev):\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let warnings = String::from_utf8_lossy(&output.stderr);
        assert!(
            !warnings.contains("warning"),
            "the C plugin of PROTOCOL.md compiles with warnings:\n{warnings}"
        );
        (dir, binary)
    });
    path
}

/// The plugin process, killed and reaped if a test ends without waiting
/// for it, so a failing test leaves no process behind.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct CPlugin {
    child: Running,
    stream: UnixStream,
    reader: FrameReader<UnixStream>,
}

impl CPlugin {
    /// Starts the plugin with the channel on fd 3 and checks its Hello.
    fn start() -> CPlugin {
        let (host, plugin) = UnixStream::pair().expect("socketpair");
        host.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("read timeout");
        let plugin_fd = plugin.as_raw_fd();
        let mut command = Command::new(binary());
        command.env_clear().stdin(Stdio::null());
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            command.pre_exec(move || {
                let ok = if plugin_fd == 3 {
                    libc::fcntl(3, libc::F_SETFD, 0) >= 0
                } else {
                    libc::dup2(plugin_fd, 3) >= 0
                };
                if ok {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        let child = command.spawn().expect("start the C plugin");
        drop(plugin);
        let reader = FrameReader::new(host.try_clone().expect("clone"), HANDSHAKE_MAX_FRAME);
        let mut p = CPlugin {
            child: Running(child),
            stream: host,
            reader,
        };
        match p.next() {
            PluginMessage::Hello(hello) => {
                assert_eq!(hello.magic, MAGIC);
                assert_eq!(hello.versions, [1, 2]);
                assert_eq!(hello.name, "c-echo");
                assert_eq!(hello.version, "0.1.0");
                assert_eq!(hello.max_frame, 1 << 20);
            }
            other => panic!("expected Hello, got {other:?}"),
        }
        p
    }

    fn init(&mut self, max_frame: u32) {
        self.init_version(1, max_frame);
    }

    fn init_version(&mut self, version: u16, max_frame: u32) {
        self.send(&HostMessage::Init(Init {
            version,
            max_frame,
            config: br#"{"unused":true}"#.to_vec(),
            limits: InitLimits {
                memory_bytes: 1 << 24,
                call_timeout_ms: 1_000,
                pids: 1,
                open_files: 8,
            },
        }));
        self.reader.set_max_frame(max_frame);
        assert_eq!(self.next(), PluginMessage::Ready);
    }

    fn send(&mut self, message: &HostMessage) {
        let bytes = frame::encode(message).expect("encode");
        self.stream.write_all(&bytes).expect("write");
    }

    fn next(&mut self) -> PluginMessage {
        self.reader
            .read()
            .expect("a valid frame from the C plugin")
            .expect("the C plugin closed the channel")
    }

    fn call(&mut self, id: u64, method: &str, input: &[u8]) -> Reply {
        self.send(&HostMessage::Call(Call {
            id,
            method: method.into(),
            input: input.to_vec(),
            timeout_ms: 1_000,
        }));
        match self.next() {
            PluginMessage::Reply(reply) => reply,
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    fn wait(mut self) -> ExitStatus {
        self.child.0.wait().expect("wait")
    }

    fn close(mut self) -> ExitStatus {
        self.stream
            .shutdown(std::net::Shutdown::Both)
            .expect("shutdown");
        self.child.0.wait().expect("wait")
    }

    /// Blocks until the plugin has written something the host has not
    /// read yet.
    fn wait_until_readable(&self) {
        let mut pfd = libc::pollfd {
            fd: self.stream.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        let ready = unsafe { libc::poll(&mut pfd, 1, 20_000) };
        assert_eq!(ready, 1, "the C plugin wrote nothing within 20 s");
    }

    /// Closes every host end of the channel at once, unread bytes and all,
    /// and waits for the plugin.
    fn hang_up(self) -> ExitStatus {
        let CPlugin {
            mut child,
            stream,
            reader,
        } = self;
        drop(stream);
        drop(reader);
        child.0.wait().expect("wait")
    }
}

/// A Call frame built by hand, so that the method can be any bytes, valid
/// UTF-8 or not.
fn raw_call(id: u64, method: &[u8], input: &[u8]) -> Vec<u8> {
    let mut payload = 1u32.to_le_bytes().to_vec();
    payload.extend_from_slice(&id.to_le_bytes());
    payload.extend_from_slice(&(method.len() as u64).to_le_bytes());
    payload.extend_from_slice(method);
    payload.extend_from_slice(&(input.len() as u64).to_le_bytes());
    payload.extend_from_slice(input);
    payload.extend_from_slice(&1_000u64.to_le_bytes());
    let mut bytes = (payload.len() as u32).to_le_bytes().to_vec();
    bytes.extend_from_slice(&payload);
    bytes
}

#[test]
fn the_c_plugin_serves_a_whole_session() {
    let mut p = CPlugin::start();
    p.init(64 * 1024);

    let reply = p.call(1, "echo", b"hello from the host");
    assert_eq!(reply.id, 1);
    assert_eq!(
        reply.result,
        CallResult::Ok(b"hello from the host".to_vec())
    );

    let reply = p.call(2, "frobnicate", b"");
    assert_eq!(reply.id, 2);
    match reply.result {
        CallResult::Err(e) => assert_eq!(e.code, "unknown_method"),
        other => panic!("expected unknown_method, got {other:?}"),
    }

    p.send(&HostMessage::Ping { nonce: 77 });
    assert_eq!(p.next(), PluginMessage::Pong { nonce: 77 });

    // Cancel and Pong are accepted silently; the next call still works.
    p.send(&HostMessage::Cancel { id: 1 });
    p.send(&HostMessage::Pong { nonce: 1 });
    // Close to the negotiated 64 KiB, in one frame each way.
    let big: Vec<u8> = (0..=255).cycle().take(64 * 1024 - 100).collect();
    let reply = p.call(4, "echo", &big);
    assert_eq!(reply.id, 4);
    assert!(
        reply.result == CallResult::Ok(big),
        "the echo of 65436 bytes differs from its input"
    );

    p.send(&HostMessage::Shutdown { grace_ms: 1_000 });
    assert_eq!(p.reader.read::<PluginMessage>().expect("clean close"), None);
    assert_eq!(p.wait().code(), Some(0));
}

/// At version 2 the plugin skips deliveries and keeps serving; a Response
/// to a request it never sent, or a delivery at version 1, is the host
/// breaking the protocol.
#[test]
fn the_c_plugin_speaks_version_2_without_requests() {
    let deliver = HostMessage::Deliver(Delivery {
        topic: "user:1".into(),
        from: "accounts".into(),
        payload: br#"{"n":1}"#.to_vec(),
    });
    let mut p = CPlugin::start();
    p.init_version(2, 64 * 1024);
    p.send(&deliver);
    let reply = p.call(1, "echo", b"after a delivery");
    assert_eq!(reply.result, CallResult::Ok(b"after a delivery".to_vec()));
    p.send(&HostMessage::Response(ServiceResponse {
        id: 1,
        result: ServiceResult::Ok(b"{}".to_vec()),
    }));
    assert_eq!(p.wait().code(), Some(76));

    let mut p = CPlugin::start();
    p.init_version(1, 64 * 1024);
    p.send(&deliver);
    assert_eq!(p.wait().code(), Some(76));
}

#[test]
fn the_c_plugin_exits_zero_at_end_of_stream() {
    let mut p = CPlugin::start();
    p.init(1 << 20);
    assert_eq!(p.close().code(), Some(0));
}

#[test]
fn the_c_plugin_rejects_bad_frames() {
    // A frame longer than the negotiated maximum.
    let mut p = CPlugin::start();
    p.init(1024);
    p.stream.write_all(&2048u32.to_le_bytes()).expect("write");
    assert_eq!(p.wait().code(), Some(76));

    // A message index that does not exist.
    let mut p = CPlugin::start();
    p.init(1024);
    p.stream
        .write_all(&[4, 0, 0, 0, 9, 0, 0, 0])
        .expect("write");
    assert_eq!(p.wait().code(), Some(76));

    // A Call whose method length runs past the payload.
    let mut p = CPlugin::start();
    p.init(1024);
    let mut payload = 1u32.to_le_bytes().to_vec();
    payload.extend_from_slice(&1u64.to_le_bytes());
    payload.extend_from_slice(&1000u64.to_le_bytes());
    let mut bytes = (payload.len() as u32).to_le_bytes().to_vec();
    bytes.extend_from_slice(&payload);
    p.stream.write_all(&bytes).expect("write");
    assert_eq!(p.wait().code(), Some(76));

    // End of stream in the middle of a frame.
    let mut p = CPlugin::start();
    p.init(1024);
    p.stream.write_all(&[12, 0, 0, 0, 3, 0]).expect("write");
    assert_eq!(p.close().code(), Some(76));
}

#[test]
fn the_c_plugin_refuses_a_version_it_did_not_offer() {
    let mut p = CPlugin::start();
    p.send(&HostMessage::Init(Init {
        version: 3,
        max_frame: 1024,
        config: b"{}".to_vec(),
        limits: InitLimits::default(),
    }));
    assert!(matches!(
        p.reader.read::<PluginMessage>(),
        Ok(None) | Err(FrameError::Io(_))
    ));
    assert_eq!(p.wait().code(), Some(76));
}

#[test]
fn the_c_plugin_refuses_a_max_frame_outside_what_it_offered() {
    // Above its Hello.max_frame of 1 MiB, and below the 1024 the host
    // guarantees: both are the host breaking the protocol.
    for max_frame in [(1 << 20) + 1, 1023] {
        let mut p = CPlugin::start();
        p.send(&HostMessage::Init(Init {
            version: 1,
            max_frame,
            config: b"{}".to_vec(),
            limits: InitLimits::default(),
        }));
        assert!(
            matches!(
                p.reader.read::<PluginMessage>(),
                Ok(None) | Err(FrameError::Io(_))
            ),
            "Init.max_frame {max_frame}: the plugin must write nothing more"
        );
        assert_eq!(p.wait().code(), Some(76), "Init.max_frame {max_frame}");
    }
}

#[test]
fn the_c_plugin_accepts_every_valid_utf8_method_name() {
    let mut p = CPlugin::start();
    p.init(4096);
    // Two-, three- and four-byte characters, and the highest code point.
    for (id, method) in [
        (1, "é"),
        (2, "€uro"),
        (3, "😀"),
        (4, "\u{10FFFF}"),
        (5, "\u{FFFD}"),
    ] {
        assert_eq!(
            raw_call(id, method.as_bytes(), b""),
            frame::encode(&HostMessage::Call(Call {
                id,
                method: method.into(),
                input: vec![],
                timeout_ms: 1_000,
            }))
            .expect("encode"),
            "raw_call builds the frame the encoder builds"
        );
        p.stream
            .write_all(&raw_call(id, method.as_bytes(), b""))
            .expect("write");
        match p.next() {
            PluginMessage::Reply(Reply {
                id: got,
                result: CallResult::Err(e),
            }) => {
                assert_eq!(got, id);
                assert_eq!(e.code, "unknown_method", "method {method:?}");
            }
            other => panic!("method {method:?}: expected unknown_method, got {other:?}"),
        }
    }
    assert_eq!(p.close().code(), Some(0));
}

#[test]
fn the_c_plugin_rejects_method_names_that_are_not_utf8() {
    let invalid: [(&str, &[u8]); 8] = [
        ("a lone continuation byte", &[0x80]),
        ("an overlong '/'", &[0xc0, 0xaf]),
        ("an overlong NUL in three bytes", &[0xe0, 0x80, 0x80]),
        ("a surrogate, U+D800", &[0xed, 0xa0, 0x80]),
        ("above U+10FFFF", &[0xf4, 0x90, 0x80, 0x80]),
        ("a character cut short", &[b'e', b'c', 0xe2, 0x82]),
        ("a byte that never occurs", &[0xff]),
        ("a five-byte form", &[0xf8, 0x88, 0x80, 0x80, 0x80]),
    ];
    for (what, method) in invalid {
        let mut p = CPlugin::start();
        p.init(4096);
        p.stream
            .write_all(&raw_call(1, method, b"x"))
            .expect("write");
        assert!(
            matches!(
                p.reader.read::<PluginMessage>(),
                Ok(None) | Err(FrameError::Io(_))
            ),
            "{what}: the plugin must not reply"
        );
        assert_eq!(p.wait().code(), Some(76), "{what}");
    }
}

#[test]
fn the_c_plugin_exits_zero_when_its_write_finds_the_host_gone() {
    // The host asks for a Pong and shuts the channel before the plugin
    // writes it: the write fails with EPIPE, which must not kill the
    // plugin with SIGPIPE.
    let mut p = CPlugin::start();
    p.init(4096);
    p.send(&HostMessage::Ping { nonce: 5 });
    let status = p.close();
    assert_eq!(
        status.code(),
        Some(0),
        "expected exit status 0, got {status:?}"
    );
}

#[test]
fn the_c_plugin_exits_zero_when_its_read_finds_the_connection_reset() {
    // The host closes the channel with the plugin's Pong still unread, so
    // the plugin's next read fails with ECONNRESET instead of returning 0.
    let mut p = CPlugin::start();
    p.init(4096);
    p.send(&HostMessage::Ping { nonce: 6 });
    p.wait_until_readable();
    let status = p.hang_up();
    assert_eq!(
        status.code(),
        Some(0),
        "expected exit status 0, got {status:?}"
    );
}
