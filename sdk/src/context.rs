//! What a handler sees of the call it serves and of the plugin around it.

use crate::error::{Error, codes};
use crate::services::{RequestId, ServiceError};
use crate::session::Session;
use corral_protocol::message::{InitLimits, LogLevel, ServiceResult};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::time::{Duration, Instant};

/// The running call: its id, deadline and cancellation, and the channel
/// back to the host for logs, events and host-service requests. The event
/// handler and the [`Plugin::on_ready`](crate::Plugin::on_ready) hook get
/// one too, serving no call: its call id is 0 and it has no deadline.
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

    /// Asks the host for `operation` of `service` (PROTOCOL.md section 9
    /// lists them) and waits for the answer, the operation's JSON body.
    /// The typed helpers ([`Context::call_plugin`], [`Context::kv_get`],
    /// ...) are built on this. While it waits, calls that arrive are
    /// queued, deliveries are kept for the event handler, Pings are
    /// answered; a Cancel of this call ends the wait with `cancelled`.
    pub fn request<T: Serialize + ?Sized>(
        &mut self,
        service: &str,
        operation: &str,
        payload: &T,
    ) -> Result<serde_json::Value, ServiceError> {
        let id = self.send_request(service, operation, payload)?;
        self.wait_response(id)
    }

    /// Sends a request without waiting for its answer; collect it later
    /// with [`Context::wait_response`]. For several requests in flight at
    /// once. At protocol version 1 nothing is sent and the error is
    /// `service_unavailable`.
    pub fn send_request<T: Serialize + ?Sized>(
        &mut self,
        service: &str,
        operation: &str,
        payload: &T,
    ) -> Result<RequestId, ServiceError> {
        let payload = serde_json::to_vec(payload).map_err(|e| {
            ServiceError::local(
                codes::INVALID_INPUT,
                format!("the {service}.{operation} payload does not encode as JSON: {e}"),
            )
        })?;
        self.session
            .send_request(self.id, service, operation, payload)
            .map(RequestId)
    }

    /// Waits for the answer to a request sent with
    /// [`Context::send_request`]; answers that arrive in another order are
    /// kept until asked for.
    pub fn wait_response(&mut self, id: RequestId) -> Result<serde_json::Value, ServiceError> {
        match self.session.wait_response(id.0)? {
            ServiceResult::Ok(body) => serde_json::from_slice(&body).map_err(|e| {
                ServiceError::local(
                    codes::INVALID_RESPONSE,
                    format!("the host's answer is not JSON: {e}"),
                )
            }),
            ServiceResult::Err(e) => Err(ServiceError::from(e)),
        }
    }
}
