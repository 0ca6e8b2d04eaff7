//! The plugin builder: methods by name, then [`Plugin::serve`].

use crate::channel::Channel;
use crate::context::Context;
use crate::error::{Error, ServeError, codes};
use crate::services::Event;
use crate::session::{Served, Session};
use corral_protocol::frame::{DEFAULT_MAX_FRAME, HARD_MAX_FRAME};
use corral_protocol::message::{CHANNEL_FD, CHANNEL_FD_ENV, InitLimits};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::os::fd::{FromRawFd, OwnedFd};

/// The smallest `max_frame` a host accepts in Hello.
const MIN_MAX_FRAME: u32 = 1024;

type RawHandler = Box<dyn FnMut(&mut Context<'_>, &[u8]) -> Result<Vec<u8>, Error>>;

/// Runs once between the host's Init and the plugin's Ready.
pub(crate) type InitHook = Box<dyn FnOnce(&InitInfo<'_>) -> Result<(), String>>;

/// Runs once after Ready, before the first call.
pub(crate) type ReadyHook = Box<dyn FnOnce(&mut Context<'_>) -> Result<(), Error>>;

/// Runs on each event delivered to the plugin.
pub(crate) type EventHandler = Box<dyn FnMut(&mut Context<'_>, &Event) -> Result<(), Error>>;

/// What the host sent in Init, for a plugin that prepares itself before
/// it reports Ready (see [`Plugin::on_init`]).
#[derive(Debug, Clone, Copy)]
pub struct InitInfo<'a> {
    /// The plugin's settings as UTF-8 JSON (`{}` when none).
    pub config: &'a [u8],
    /// The limits the plugin runs under.
    pub limits: InitLimits,
    /// The largest frame either side may send.
    pub max_frame: u32,
}

/// Handlers by method name, the one for every other name, and the one
/// for events.
#[derive(Default)]
pub(crate) struct Handlers {
    by_method: HashMap<String, RawHandler>,
    fallback: Option<RawHandler>,
    pub(crate) on_event: Option<EventHandler>,
}

impl Handlers {
    pub(crate) fn get_mut(&mut self, method: &str) -> Option<&mut RawHandler> {
        match self.by_method.get_mut(method) {
            Some(handler) => Some(handler),
            None => self.fallback.as_mut(),
        }
    }

    /// The registered methods, sorted, for "unknown method" errors.
    pub(crate) fn method_list(&self) -> String {
        let mut names: Vec<&str> = self.by_method.keys().map(String::as_str).collect();
        names.sort_unstable();
        if names.is_empty() {
            "no methods".to_string()
        } else {
            names.join(", ")
        }
    }
}

/// A plugin: a name, a version and its methods.
///
/// Handlers run one at a time on the thread that calls [`Plugin::serve`],
/// in the order the calls arrive.
pub struct Plugin {
    name: String,
    version: String,
    max_frame: u32,
    handlers: Handlers,
    init_hook: Option<InitHook>,
    ready_hook: Option<ReadyHook>,
}

impl Plugin {
    /// `name` and `version` are announced in the handshake; the host logs
    /// a warning when the name differs from the package manifest's. Pass
    /// `env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION")` unless the
    /// package name differs from the crate's.
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Plugin {
        Plugin {
            name: name.into(),
            version: version.into(),
            max_frame: DEFAULT_MAX_FRAME,
            handlers: Handlers::default(),
            init_hook: None,
            ready_hook: None,
        }
    }

    /// The largest frame this plugin accepts (announced in Hello; the host
    /// may choose less). Default: 4 MiB; kept between the 1 KiB the host
    /// requires and the protocol's 16 MiB ceiling.
    pub fn max_frame(mut self, bytes: u32) -> Plugin {
        self.max_frame = bytes.clamp(MIN_MAX_FRAME, HARD_MAX_FRAME);
        self
    }

    /// A method whose input and output are JSON. Input that does not
    /// decode as `I` is answered with `invalid_input` without calling the
    /// handler; an empty input decodes as JSON `null`, so a method taking
    /// `()` or an `Option` can be called with no input at all.
    pub fn json<I, O, F>(self, method: impl Into<String>, mut handler: F) -> Plugin
    where
        I: DeserializeOwned,
        O: Serialize,
        F: FnMut(&mut Context<'_>, I) -> Result<O, Error> + 'static,
    {
        self.raw(method, move |ctx, input| {
            let input: I = if input.is_empty() {
                serde_json::from_slice(b"null")
            } else {
                serde_json::from_slice(input)
            }
            .map_err(|e| {
                Error::new(
                    codes::INVALID_INPUT,
                    format!("input for `{}` is not valid: {e}", ctx.method()),
                )
            })?;
            let output = handler(ctx, input)?;
            serde_json::to_vec(&output)
                .map_err(|e| Error::new(codes::INVALID_OUTPUT, format!("output: {e}")))
        })
    }

    /// A method on raw bytes: the input as the caller sent it, the output
    /// as the caller receives it.
    pub fn raw<F>(mut self, method: impl Into<String>, handler: F) -> Plugin
    where
        F: FnMut(&mut Context<'_>, &[u8]) -> Result<Vec<u8>, Error> + 'static,
    {
        self.handlers
            .by_method
            .insert(method.into(), Box::new(handler));
        self
    }

    /// Answers every call whose method no other handler is registered
    /// under ([`Context::method`] says which), instead of the SDK's
    /// `unknown_method` reply. For plugins whose methods are only known
    /// at run time, such as a script runtime serving a script's methods.
    pub fn fallback<F>(mut self, handler: F) -> Plugin
    where
        F: FnMut(&mut Context<'_>, &[u8]) -> Result<Vec<u8>, Error> + 'static,
    {
        self.handlers.fallback = Some(Box::new(handler));
        self
    }

    /// Runs `hook` once the host's Init has arrived and before the plugin
    /// reports Ready: the place to prepare what needs the settings or the
    /// limits. An `Err` ends the start: no Ready is sent, the message goes
    /// to stderr (which the host logs) and [`Plugin::serve`] exits
    /// non-zero, so the host reports a failed start instead of a plugin
    /// that fails every call.
    pub fn on_init<F>(mut self, hook: F) -> Plugin
    where
        F: FnOnce(&InitInfo<'_>) -> Result<(), String> + 'static,
    {
        self.init_hook = Some(Box::new(hook));
        self
    }

    /// Runs `hook` once, after the plugin reported Ready and before the
    /// first call: the place for start-up work that needs host services
    /// (subscribing to topics, reading a table). Its context serves no
    /// call: requests made there carry call id 0. An `Err` ends the plugin
    /// as a failed start does for [`Plugin::on_init`].
    pub fn on_ready<F>(mut self, hook: F) -> Plugin
    where
        F: FnOnce(&mut Context<'_>) -> Result<(), Error> + 'static,
    {
        self.ready_hook = Some(Box::new(hook));
        self
    }

    /// Handles events from the topics the plugin subscribed to (see
    /// [`Context::subscribe`]). Deliveries are queued and run one at a
    /// time between calls, never inside another handler; those that
    /// arrive while a handler waits for a host service wait too. An
    /// `Err` or a panic is logged, since no caller waits for it. Without
    /// an event handler, deliveries are dropped.
    pub fn on_event<F>(mut self, handler: F) -> Plugin
    where
        F: FnMut(&mut Context<'_>, &Event) -> Result<(), Error> + 'static,
    {
        self.handlers.on_event = Some(Box::new(handler));
        self
    }

    /// Serves the host on the inherited channel and exits the process:
    /// status 0 after Shutdown or when the host closes the channel,
    /// non-zero (with the reason on stderr) when the channel is missing or
    /// the host broke the protocol.
    pub fn serve(self) -> ! {
        let code = match channel_fd_from_env().and_then(|fd| self.serve_fd(fd)) {
            Ok(_) => 0,
            Err(e) => {
                eprintln!("corral-sdk: {e}");
                e.exit_code()
            }
        };
        std::process::exit(code)
    }

    /// Serves the host on `fd` and returns when the session ends. For
    /// tests and for programs that do more after serving.
    pub fn serve_fd(mut self, fd: OwnedFd) -> Result<Served, ServeError> {
        let channel = Channel::new(fd).map_err(ServeError::Io)?;
        let mut session = Session::handshake(
            channel,
            &self.name,
            &self.version,
            self.max_frame,
            self.init_hook.take(),
        )?;
        if let Some(hook) = self.ready_hook.take() {
            session.run_ready_hook(hook)?;
        }
        session.run(&mut self.handlers)
    }
}

/// The channel fd: `CORRAL_CHANNEL_FD` if set, else fd 3, checked to be
/// open before it is owned.
fn channel_fd_from_env() -> Result<OwnedFd, ServeError> {
    let fd = match std::env::var(CHANNEL_FD_ENV) {
        Ok(value) => value
            .trim()
            .parse::<i32>()
            .ok()
            .filter(|fd| *fd >= 0)
            .ok_or(ServeError::BadChannelEnv {
                var: CHANNEL_FD_ENV,
                value,
            })?,
        Err(_) => CHANNEL_FD,
    };
    // SAFETY: F_GETFD only asks whether the descriptor is open.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(ServeError::ChannelUnavailable {
            fd,
            source: std::io::Error::last_os_error(),
        });
    }
    // SAFETY: the fd is open, and nothing else in this process owns it: it
    // was inherited for exactly this purpose.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
