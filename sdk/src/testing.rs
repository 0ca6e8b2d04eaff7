//! Testing a plugin outside the sandbox: run its built binary with the
//! channel on fd 3 (as corral does, but unconfined) and play the host.
//!
//! ```no_run
//! use corral_sdk::protocol::message::{CallResult, Init, InitLimits};
//! use corral_sdk::testing::{Options, TestHost};
//!
//! // In an integration test of the plugin's crate, the binary is at
//! // env!("CARGO_BIN_EXE_<name>").
//! let mut host = TestHost::spawn("target/release/hello", Options::default()).expect("spawn");
//! let hello = host
//!     .handshake(Init { version: 1, max_frame: 1 << 20, config: b"{}".to_vec(), limits: InitLimits::default() })
//!     .expect("handshake");
//! assert_eq!(hello.name, "hello");
//! let out = host.call("greet", br#"{"name":"Ada"}"#).expect("call");
//! assert!(matches!(out, CallResult::Ok(_)));
//! assert!(host.close().expect("exit").success());
//! ```
//!
//! Log and Event messages that arrive while a reply is awaited are kept in
//! [`TestHost::side`].
//!
//! A plugin's host-service requests (protocol version 2) are played by
//! hand too: [`TestHost::request`] reads the next Request,
//! [`TestHost::respond`] answers it, [`TestHost::deliver`] sends an event.

use corral_protocol::frame::{self, DEFAULT_MAX_FRAME, FrameError, FrameReader};
use corral_protocol::message::{
    Call, CallResult, Delivery, Hello, HostMessage, Init, PluginMessage, Reply, ServiceRequest,
    ServiceResponse, ServiceResult,
};
use std::ffi::OsStr;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum TestHostError {
    #[error("spawning the plugin: {0}")]
    Spawn(std::io::Error),
    #[error("the channel: {0}")]
    Frame(#[from] FrameError),
    #[error("the plugin closed the channel")]
    Closed,
    #[error("expected {expected}, got {got:?}")]
    Unexpected {
        expected: &'static str,
        got: Box<PluginMessage>,
    },
    #[error("the reply answers call {got}, not {expected}")]
    WrongId { expected: u64, got: u64 },
    #[error("waiting for the plugin: {0}")]
    Wait(std::io::Error),
}

/// How to start the plugin.
#[derive(Debug, Clone)]
pub struct Options {
    /// Arguments after the program (a script runtime's entry file, say).
    pub args: Vec<std::ffi::OsString>,
    /// Its environment (cleared otherwise; `CORRAL_CHANNEL_FD=3` is added).
    pub env: Vec<(String, String)>,
    /// `(resource, soft = hard)` set in the child before exec, to stand in
    /// for the sandbox's limits.
    pub rlimits: Vec<(libc::__rlimit_resource_t, u64)>,
    /// Pipe its stdout (see [`TestHost::child`]) instead of discarding it.
    pub capture_stdout: bool,
    /// Largest frame accepted from the plugin.
    pub max_frame: u32,
    /// How long a read from the plugin may block.
    pub read_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            args: Vec::new(),
            env: Vec::new(),
            rlimits: Vec::new(),
            capture_stdout: false,
            max_frame: DEFAULT_MAX_FRAME,
            read_timeout: Duration::from_secs(30),
        }
    }
}

/// The host's end of one plugin's channel.
#[derive(Debug)]
pub struct TestHost {
    child: Option<Child>,
    stream: UnixStream,
    reader: FrameReader<UnixStream>,
    next_id: u64,
    /// Logs and events received while a reply was awaited.
    pub side: Vec<PluginMessage>,
}

impl TestHost {
    /// Runs `program` with the plugin end of a socketpair on fd 3.
    pub fn spawn(program: impl AsRef<OsStr>, options: Options) -> Result<TestHost, TestHostError> {
        let (host, plugin) = UnixStream::pair().map_err(TestHostError::Spawn)?;
        host.set_read_timeout(Some(options.read_timeout))
            .map_err(TestHostError::Spawn)?;
        let plugin_fd = plugin.as_raw_fd();
        let mut command = Command::new(program);
        command
            .args(&options.args)
            .env_clear()
            .envs(options.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env(corral_protocol::message::CHANNEL_FD_ENV, "3")
            .stdin(Stdio::null())
            .stdout(if options.capture_stdout {
                Stdio::piped()
            } else {
                Stdio::null()
            });
        let rlimits = options.rlimits.clone();
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
                for (resource, value) in &rlimits {
                    let limit = libc::rlimit {
                        rlim_cur: *value,
                        rlim_max: *value,
                    };
                    if libc::setrlimit(*resource, &limit) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let child = command.spawn().map_err(TestHostError::Spawn)?;
        drop(plugin);
        let mut host = TestHost::over(host, options.max_frame).map_err(TestHostError::Spawn)?;
        host.child = Some(child);
        Ok(host)
    }

    /// Plays the host on a stream whose other end a plugin serves (a
    /// socketpair in the same process, for instance).
    pub fn over(stream: UnixStream, max_frame: u32) -> std::io::Result<TestHost> {
        Ok(TestHost {
            child: None,
            reader: FrameReader::new(stream.try_clone()?, max_frame),
            stream,
            next_id: 1,
            side: Vec::new(),
        })
    }

    /// The plugin process, when [`TestHost::spawn`] started one.
    pub fn child(&mut self) -> Option<&mut Child> {
        self.child.as_mut()
    }

    /// The raw stream, for writing bytes that are not frames.
    pub fn stream(&mut self) -> &mut UnixStream {
        &mut self.stream
    }

    /// The frame reader, for reading frames the typed calls would reject.
    pub fn reader(&mut self) -> &mut FrameReader<UnixStream> {
        &mut self.reader
    }

    pub fn send(&mut self, message: &HostMessage) -> Result<(), TestHostError> {
        let bytes = frame::encode(message)?;
        self.stream.write_all(&bytes).map_err(FrameError::from)?;
        Ok(())
    }

    /// The next message from the plugin.
    pub fn receive(&mut self) -> Result<PluginMessage, TestHostError> {
        self.reader.read()?.ok_or(TestHostError::Closed)
    }

    /// Reads Hello, sends `init`, waits for Ready; returns the Hello.
    pub fn handshake(&mut self, init: Init) -> Result<Hello, TestHostError> {
        let hello = match self.receive()? {
            PluginMessage::Hello(hello) => hello,
            other => {
                return Err(TestHostError::Unexpected {
                    expected: "Hello",
                    got: Box::new(other),
                });
            }
        };
        let max_frame = init.max_frame;
        self.send(&HostMessage::Init(init))?;
        self.reader.set_max_frame(max_frame);
        loop {
            match self.receive()? {
                PluginMessage::Ready => return Ok(hello),
                log @ PluginMessage::Log(_) => self.side.push(log),
                other => {
                    return Err(TestHostError::Unexpected {
                        expected: "Ready",
                        got: Box::new(other),
                    });
                }
            }
        }
    }

    /// Sends a call without waiting; returns its id.
    pub fn send_call(
        &mut self,
        method: &str,
        input: &[u8],
        timeout_ms: u64,
    ) -> Result<u64, TestHostError> {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&HostMessage::Call(Call {
            id,
            method: method.into(),
            input: input.to_vec(),
            timeout_ms,
        }))?;
        Ok(id)
    }

    /// The next reply, keeping logs and events aside.
    pub fn reply(&mut self) -> Result<Reply, TestHostError> {
        loop {
            match self.receive()? {
                PluginMessage::Reply(reply) => return Ok(reply),
                other @ (PluginMessage::Log(_) | PluginMessage::Event(_)) => self.side.push(other),
                other => {
                    return Err(TestHostError::Unexpected {
                        expected: "Reply",
                        got: Box::new(other),
                    });
                }
            }
        }
    }

    /// The next host-service Request, keeping logs and events aside.
    pub fn request(&mut self) -> Result<ServiceRequest, TestHostError> {
        loop {
            match self.receive()? {
                PluginMessage::Request(request) => return Ok(request),
                other @ (PluginMessage::Log(_) | PluginMessage::Event(_)) => self.side.push(other),
                other => {
                    return Err(TestHostError::Unexpected {
                        expected: "Request",
                        got: Box::new(other),
                    });
                }
            }
        }
    }

    /// Answers request `id`.
    pub fn respond(&mut self, id: u64, result: ServiceResult) -> Result<(), TestHostError> {
        self.send(&HostMessage::Response(ServiceResponse { id, result }))
    }

    /// Delivers an event as if `from` had published it on `topic`.
    pub fn deliver(
        &mut self,
        topic: &str,
        from: &str,
        payload: &[u8],
    ) -> Result<(), TestHostError> {
        self.send(&HostMessage::Deliver(Delivery {
            topic: topic.into(),
            from: from.into(),
            payload: payload.to_vec(),
        }))
    }

    /// Calls `method` and waits for its result.
    pub fn call(&mut self, method: &str, input: &[u8]) -> Result<CallResult, TestHostError> {
        let id = self.send_call(method, input, 0)?;
        let reply = self.reply()?;
        if reply.id != id {
            return Err(TestHostError::WrongId {
                expected: id,
                got: reply.id,
            });
        }
        Ok(reply.result)
    }

    /// Closes the channel (every clone of it) and waits for the plugin.
    pub fn close(mut self) -> Result<ExitStatus, TestHostError> {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        self.wait_child()
    }

    /// Waits for the plugin to end on its own.
    pub fn wait(mut self) -> Result<ExitStatus, TestHostError> {
        self.wait_child()
    }

    fn wait_child(&mut self) -> Result<ExitStatus, TestHostError> {
        let mut child = self
            .child
            .take()
            .ok_or_else(|| TestHostError::Wait(std::io::Error::other("no plugin process")))?;
        child.wait().map_err(TestHostError::Wait)
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        // A test that failed half-way must not leave the plugin running.
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
