//! What a handler sees of the call it serves and of the plugin around it.

use crate::error::{Error, codes};
use crate::session::Session;
use corral_protocol::message::{InitLimits, LogLevel};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::time::{Duration, Instant};

/// The running call: its id, deadline and cancellation, and the channel
/// back to the host for logs and events.
pub struct Context<'s> {
    session: &'s mut Session,
    id: u64,
    method: &'s str,
    deadline: Option<Instant>,
}

impl<'s> Context<'s> {
    pub(crate) fn new(
        session: &'s mut Session,
        id: u64,
        method: &'s str,
        deadline: Option<Instant>,
    ) -> Context<'s> {
        Context {
            session,
            id,
            method,
            deadline,
        }
    }

    /// The host's id of this call.
    pub fn call_id(&self) -> u64 {
        self.id
    }

    /// The method being called.
    pub fn method(&self) -> &str {
        self.method
    }

    /// When the host stops waiting for the reply; `None` when the call has
    /// no timeout.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Time left before the deadline (zero once it has passed).
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// True once the handler should stop: the host cancelled the call, the
    /// deadline passed, a shutdown's grace period ran out, or the host went
    /// away. Cheap enough for a tight loop: the channel is looked at (one
    /// non-blocking read) at most once a millisecond. A reply sent after
    /// cancellation is dropped by the host, so return whatever is at hand.
    pub fn is_cancelled(&mut self) -> bool {
        self.session.check_cancelled(self.deadline)
    }

    /// The limits the plugin runs under, as the host announced them.
    pub fn limits(&self) -> InitLimits {
        self.session.limits
    }

    /// The plugin's settings decoded from their JSON; an error reply
    /// `invalid_config` when they do not fit `T`.
    pub fn config<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.session.config)
            .map_err(|e| Error::new(codes::INVALID_CONFIG, format!("the plugin's settings: {e}")))
    }

    /// The plugin's settings as the host sent them (UTF-8 JSON).
    pub fn config_bytes(&self) -> &[u8] {
        &self.session.config
    }

    /// Sends a log record to the host. It goes over the channel, not to
    /// stderr, and arrives tagged with the plugin.
    pub fn log(&mut self, level: LogLevel, message: impl Into<String>) {
        self.session.push_log(level, message.into(), Vec::new());
    }

    /// A log record with structured fields.
    pub fn log_fields(
        &mut self,
        level: LogLevel,
        message: impl Into<String>,
        fields: &[(&str, &str)],
    ) {
        let fields = fields
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect();
        self.session.push_log(level, message.into(), fields);
    }

    pub fn error(&mut self, message: impl Into<String>) {
        self.log(LogLevel::Error, message);
    }

    pub fn warn(&mut self, message: impl Into<String>) {
        self.log(LogLevel::Warn, message);
    }

    pub fn info(&mut self, message: impl Into<String>) {
        self.log(LogLevel::Info, message);
    }

    pub fn debug(&mut self, message: impl Into<String>) {
        self.log(LogLevel::Debug, message);
    }

    /// Publishes an application event to the host's subscribers. Fails only
    /// when the event does not fit in a frame.
    pub fn emit(
        &mut self,
        topic: impl Into<String>,
        payload: impl Into<Vec<u8>>,
    ) -> Result<(), Error> {
        self.session.push_event(topic.into(), payload.into())
    }

    /// [`Context::emit`] with a JSON payload.
    pub fn emit_json<T: Serialize>(
        &mut self,
        topic: impl Into<String>,
        payload: &T,
    ) -> Result<(), Error> {
        let bytes = serde_json::to_vec(payload)
            .map_err(|e| Error::new(codes::INVALID_OUTPUT, format!("event payload: {e}")))?;
        self.emit(topic, bytes)
    }
}
