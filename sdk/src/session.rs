//! The serve loop: the handshake, then reading frames in large chunks,
//! running handlers inline, and writing every pending frame with one write.
//!
//! Handlers run on the thread that reads the channel, so one call in flight
//! costs one read and one write and no thread hop. While a handler runs, it
//! can look at the channel through [`Context::is_cancelled`]; whatever that
//! finds is dispatched here exactly as the main loop would: Calls are queued
//! for later, Cancels mark the running call, Pings are answered.
//!
//! At protocol version 2 a handler may also ask the host for a service
//! ([`Session::send_request`], [`Session::wait_response`]). Waiting for the
//! Response reads the channel through the same dispatch: Calls that arrive
//! meanwhile are queued, and so are Deliveries, for the event handler:
//! calls and events run in the order they arrived, one at a time, never
//! one inside another.

use crate::channel::{Channel, is_peer_gone};
use crate::context::Context;
use crate::error::{Error, ServeError, codes};
use crate::plugin::{EventHandler, Handlers, InitHook, InitInfo, ReadyHook};
use crate::services::{Event, ServiceError};
use corral_protocol::frame::{self, FrameBuffer, HANDSHAKE_MAX_FRAME, LENGTH_PREFIX};
use corral_protocol::message::{
    Call, CallResult, Delivery, Hello, HostMessage, InitLimits, LogLevel, LogRecord, MAGIC,
    PluginEvent, PluginMessage, Reply, SERVICES_VERSION, SUPPORTED_VERSIONS, ServiceRequest,
    ServiceResult,
};
use std::collections::{HashMap, VecDeque};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

// Bytes asked of the channel per read: small, so an idle plugin's buffers
// stay small (they are charged to its memory limit); a batch larger than
// this just takes a few reads.
use corral_protocol::frame::READ_CHUNK;

/// Pending output beyond this is written even while more calls wait, so a
/// long batch does not hold replies back or grow without bound.
const FLUSH_THRESHOLD: usize = 256 * 1024;

/// `is_cancelled` looks at the channel at most this often; between looks
/// it costs a clock read.
const POLL_INTERVAL: Duration = Duration::from_millis(1);

/// Error messages longer than this are cut so that an error reply always
/// fits in a frame.
const MAX_ERROR_MESSAGE: usize = 16 * 1024;

/// Deliveries kept for the event handler; beyond this the newest are
/// dropped (and counted), so a host that floods events while a long
/// handler runs cannot grow the plugin without bound. The host queues at
/// most 1024 of its own, so this is only reached by a misbehaving host.
const MAX_QUEUED_DELIVERIES: usize = 4096;

/// How the serve loop ended, when it ended in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The host sent Shutdown and every call before it was answered.
    Shutdown,
    /// The host closed the channel.
    Closed,
}

/// What a finished serve loop did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Served {
    pub reason: EndReason,
    /// Calls answered (including error replies).
    pub calls: u64,
    /// Write system calls made on the channel (batches of frames).
    pub writes: u64,
}

/// A request sent to the host and not yet answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Awaited {
    /// Someone will ask for the answer.
    Wanted,
    /// The asker gave up (its call was cancelled); the answer is dropped.
    Abandoned,
}

/// Work read from the channel and not yet run, in arrival order.
#[derive(Debug)]
enum Inbound {
    Call(Pending),
    Event(Delivery),
}

/// A call read from the channel and not yet run.
#[derive(Debug)]
struct Pending {
    call: Call,
    received: Instant,
}

/// The call whose handler is running.
#[derive(Debug)]
pub(crate) struct Current {
    pub(crate) id: u64,
    pub(crate) cancelled: bool,
}

#[derive(Debug)]
pub(crate) struct Session {
    channel: Channel,
    inbox: FrameBuffer,
    outbox: Vec<u8>,
    queue: VecDeque<Inbound>,
    /// Largest payload either side may send, from Init.
    max_frame: u32,
    pub(crate) limits: InitLimits,
    pub(crate) config: Vec<u8>,
    pub(crate) current: Option<Current>,
    /// Set by Shutdown: when the grace period ends.
    shutdown_deadline: Option<Instant>,
    /// The host closed the channel.
    closed: bool,
    /// A failure met where it could not be returned (inside a handler's
    /// `is_cancelled` or `log`); the loop returns it once the handler ends.
    failure: Option<ServeError>,
    last_poll: Option<Instant>,
    calls: u64,
    writes: u64,
    /// The protocol version the host chose in Init.
    version: u16,
    /// The id of the next Request (the plugin's own sequence).
    next_request: u64,
    /// Requests sent and not yet answered.
    awaited: HashMap<u64, Awaited>,
    /// Responses read but not yet asked for.
    answered: HashMap<u64, ServiceResult>,
    /// Deliveries in `queue`.
    queued_events: usize,
    /// Deliveries dropped over [`MAX_QUEUED_DELIVERIES`] since last logged.
    dropped_deliveries: u64,
}

impl Session {
    /// Sends Hello, waits for Init, sends Ready.
    pub(crate) fn handshake(
        channel: Channel,
        name: &str,
        version: &str,
        max_frame: u32,
        init_hook: Option<InitHook>,
    ) -> Result<Session, ServeError> {
        let hello = PluginMessage::Hello(Hello {
            magic: MAGIC,
            versions: SUPPORTED_VERSIONS.to_vec(),
            name: name.to_string(),
            version: version.to_string(),
            max_frame,
        });
        channel.write_all(&frame::encode(&hello)?)?;

        let mut inbox = FrameBuffer::new(HANDSHAKE_MAX_FRAME);
        let init = loop {
            if let Some(message) = inbox.next_message::<HostMessage>()? {
                break match message {
                    HostMessage::Init(init) => init,
                    other => {
                        return Err(ServeError::Handshake(format!(
                            "expected Init as the host's first message, got {}",
                            host_message_name(&other)
                        )));
                    }
                };
            }
            let n = channel.read(inbox.spare(READ_CHUNK))?;
            if n == 0 {
                return Err(ServeError::ClosedDuringHandshake);
            }
            inbox.commit(n);
        };
        if !SUPPORTED_VERSIONS.contains(&init.version) {
            return Err(ServeError::Handshake(format!(
                "the host chose protocol version {} but this plugin speaks {SUPPORTED_VERSIONS:?}",
                init.version
            )));
        }
        // PROTOCOL.md: the host sends min(its limit, Hello.max_frame), at
        // least 1024; anything else means the peer is not a corral host.
        if init.max_frame < 1024 || init.max_frame > max_frame {
            return Err(ServeError::Handshake(format!(
                "the host's maximum frame of {} bytes is outside 1024..={max_frame} (this plugin's Hello)",
                init.max_frame
            )));
        }
        inbox.set_max_frame(init.max_frame);
        if let Some(hook) = init_hook {
            hook(&InitInfo {
                config: &init.config,
                limits: init.limits,
                max_frame: init.max_frame,
            })
            .map_err(ServeError::Init)?;
        }
        let mut session = Session {
            channel,
            inbox,
            outbox: Vec::new(),
            queue: VecDeque::new(),
            max_frame: init.max_frame.min(frame::HARD_MAX_FRAME),
            limits: init.limits,
            config: init.config,
            current: None,
            shutdown_deadline: None,
            closed: false,
            failure: None,
            last_poll: None,
            calls: 0,
            // The Hello above.
            writes: 1,
            version: init.version,
            next_request: 1,
            awaited: HashMap::new(),
            answered: HashMap::new(),
            queued_events: 0,
            dropped_deliveries: 0,
        };
        session.push(&PluginMessage::Ready)?;
        session.flush()?;
        Ok(session)
    }

    /// Runs the plugin's start-up hook after Ready and before the first
    /// call, with a context that serves no call (requests carry call id 0).
    /// The host takes Requests only once the plugin is ready, which is why
    /// this hook, not the init hook, is the place for start-up requests.
    pub(crate) fn run_ready_hook(&mut self, hook: ReadyHook) -> Result<(), ServeError> {
        let mut ctx = Context::new(self, 0, "", None);
        let outcome = catch_unwind(AssertUnwindSafe(|| hook(&mut ctx)));
        if let Some(failure) = self.failure.take() {
            return Err(failure);
        }
        match outcome {
            Ok(Ok(())) => self.flush(),
            Ok(Err(e)) => Err(ServeError::Init(e.to_string())),
            Err(payload) => Err(ServeError::Init(panic_message(payload.as_ref()))),
        }
    }

    /// Serves calls until Shutdown, end of stream or a protocol error.
    pub(crate) fn run(&mut self, handlers: &mut Handlers) -> Result<Served, ServeError> {
        loop {
            // Everything already buffered is dispatched before any handler
            // runs, so a batch of calls yields one batch of replies.
            self.drain_inbox()?;
            while let Some(inbound) = self.queue.pop_front() {
                match inbound {
                    Inbound::Call(pending) => self.handle(pending, handlers),
                    Inbound::Event(delivery) => {
                        self.queued_events -= 1;
                        self.log_dropped_deliveries();
                        // Without an event handler a delivery is dropped;
                        // after Shutdown, events are no longer run.
                        if let (Some(handler), None) =
                            (handlers.on_event.as_mut(), self.shutdown_deadline)
                        {
                            self.handle_event(delivery, handler);
                        }
                    }
                }
                if let Some(failure) = self.failure.take() {
                    return Err(failure);
                }
                if self.closed {
                    return Ok(self.served(EndReason::Closed));
                }
                if self.outbox.len() >= FLUSH_THRESHOLD {
                    self.flush()?;
                }
            }
            if self.closed {
                return Ok(self.served(EndReason::Closed));
            }
            if self.shutdown_deadline.is_some() {
                self.flush()?;
                return Ok(self.served(EndReason::Shutdown));
            }
            self.flush()?;
            if self.closed {
                return Ok(self.served(EndReason::Closed));
            }
            let n = self.channel.read(self.inbox.spare(READ_CHUNK))?;
            if n == 0 {
                if self.inbox.pending() > 0 {
                    return Err(ServeError::Protocol(frame::FrameError::Truncated));
                }
                return Ok(self.served(EndReason::Closed));
            }
            self.inbox.commit(n);
        }
    }

    fn served(&self, reason: EndReason) -> Served {
        Served {
            reason,
            calls: self.calls,
            writes: self.writes,
        }
    }

    fn drain_inbox(&mut self) -> Result<(), ServeError> {
        self.dispatch_buffered(Instant::now());
        match self.failure.take() {
            Some(failure) => Err(failure),
            None => Ok(()),
        }
    }

    /// Dispatches every whole frame already read. A frame that does not
    /// decode, or a message the host must not send, is recorded as the
    /// session's failure (see [`Session::fail`]).
    fn dispatch_buffered(&mut self, now: Instant) {
        while self.failure.is_none() {
            match self.inbox.next_message::<HostMessage>() {
                Ok(Some(message)) => {
                    if let Err(e) = self.dispatch(message, now) {
                        self.fail(e);
                    }
                }
                Ok(None) => break,
                Err(e) => self.fail(e.into()),
            }
        }
    }

    fn dispatch(&mut self, message: HostMessage, now: Instant) -> Result<(), ServeError> {
        match message {
            HostMessage::Call(call) => {
                if self.shutdown_deadline.is_some() {
                    self.push_reply(
                        call.id,
                        Err(Error::new(
                            codes::SHUTTING_DOWN,
                            "the plugin is shutting down and takes no new calls",
                        )),
                    );
                } else {
                    self.queue.push_back(Inbound::Call(Pending {
                        call,
                        received: now,
                    }));
                }
            }
            HostMessage::Cancel { id } => {
                if let Some(current) = self.current.as_mut().filter(|c| c.id == id) {
                    current.cancelled = true;
                } else if let Some(at) = self
                    .queue
                    .iter()
                    .position(|p| matches!(p, Inbound::Call(p) if p.call.id == id))
                {
                    // Not started yet: answer at once and never run it. The
                    // host drops the reply, but every Call still gets one.
                    self.queue.remove(at);
                    self.push_reply(
                        id,
                        Err(Error::new(
                            codes::CANCELLED,
                            "cancelled before the handler started",
                        )),
                    );
                }
                // A Cancel for a call already answered crossed its reply on
                // the wire; nothing to do.
            }
            HostMessage::Ping { nonce } => self.push(&PluginMessage::Pong { nonce })?,
            HostMessage::Shutdown { grace_ms } => {
                let deadline = now + Duration::from_millis(u64::from(grace_ms));
                self.shutdown_deadline = Some(match self.shutdown_deadline {
                    Some(earlier) => earlier.min(deadline),
                    None => deadline,
                });
            }
            // The SDK never pings the host, so a Pong answers nothing; it
            // is harmless and ignored.
            HostMessage::Pong { .. } => {}
            HostMessage::Init(_) => return Err(ServeError::Unexpected("a second Init")),
            HostMessage::Response(response) => match self.awaited.remove(&response.id) {
                Some(Awaited::Wanted) => {
                    self.answered.insert(response.id, response.result);
                }
                Some(Awaited::Abandoned) => {}
                None => return Err(ServeError::Unexpected("a Response to no request")),
            },
            HostMessage::Deliver(delivery) => {
                if self.version < SERVICES_VERSION {
                    return Err(ServeError::Unexpected("a Deliver at protocol version 1"));
                }
                if self.queued_events >= MAX_QUEUED_DELIVERIES {
                    self.dropped_deliveries += 1;
                } else {
                    self.queued_events += 1;
                    self.queue.push_back(Inbound::Event(delivery));
                }
            }
        }
        Ok(())
    }

    /// Runs the event handler on one delivery, outside any call. Its error
    /// or panic is logged: there is no caller to answer.
    fn handle_event(&mut self, delivery: Delivery, handler: &mut EventHandler) {
        let event = Event::from(delivery);
        let mut ctx = Context::new(self, 0, "", None);
        let outcome = catch_unwind(AssertUnwindSafe(|| handler(&mut ctx, &event)));
        let failure = match outcome {
            Ok(Ok(())) => return,
            Ok(Err(e)) => e.to_string(),
            Err(payload) => panic_message(payload.as_ref()),
        };
        self.push_log(
            LogLevel::Warn,
            format!(
                "the event handler failed on topic {}: {failure}",
                event.topic
            ),
            Vec::new(),
        );
    }

    fn log_dropped_deliveries(&mut self) {
        if self.dropped_deliveries > 0 {
            let n = std::mem::take(&mut self.dropped_deliveries);
            self.push_log(
                LogLevel::Warn,
                format!("dropped {n} event deliveries: more than {MAX_QUEUED_DELIVERIES} waited for the event handler"),
                Vec::new(),
            );
        }
    }

    /// Sends a Request on behalf of call `call_id` (0: none) and returns
    /// its id without waiting. At protocol version 1 nothing is sent.
    pub(crate) fn send_request(
        &mut self,
        call_id: u64,
        service: &str,
        operation: &str,
        payload: Vec<u8>,
    ) -> Result<u64, ServiceError> {
        if self.version < SERVICES_VERSION {
            return Err(ServiceError::local(
                codes::SERVICE_UNAVAILABLE,
                format!(
                    "the host chose protocol version {}, which has no host services \
                     (they need version {SERVICES_VERSION}); the {service}.{operation} request was not sent",
                    self.version
                ),
            ));
        }
        if self.closed || self.failure.is_some() {
            return Err(ServiceError::local(
                codes::CHANNEL_CLOSED,
                "the channel to the host is closed",
            ));
        }
        let id = self.next_request;
        let request = PluginMessage::Request(ServiceRequest {
            id,
            call_id,
            service: service.to_string(),
            operation: operation.to_string(),
            payload,
        });
        if let Err(e) = self.push(&request) {
            return Err(ServiceError::local(
                codes::PAYLOAD_TOO_LARGE,
                format!("the {service}.{operation} request does not fit in a frame: {e}"),
            ));
        }
        self.next_request += 1;
        self.awaited.insert(id, Awaited::Wanted);
        // A request is waited for: it goes out now, not with a batch.
        if let Err(e) = self.flush() {
            self.fail(e);
        }
        Ok(id)
    }

    /// Reads the channel until the Response to request `id` arrives,
    /// dispatching everything else on the way. Gives up (and drops the
    /// answer when it comes) once the call it serves is cancelled.
    pub(crate) fn wait_response(&mut self, id: u64) -> Result<ServiceResult, ServiceError> {
        loop {
            if let Some(result) = self.answered.remove(&id) {
                return Ok(result);
            }
            if self.awaited.get(&id) != Some(&Awaited::Wanted) {
                return Err(ServiceError::local(
                    codes::INVALID_INPUT,
                    format!("request {id} was not sent or its answer was already taken"),
                ));
            }
            if self.current.as_ref().is_some_and(|c| c.cancelled) {
                self.awaited.insert(id, Awaited::Abandoned);
                return Err(ServiceError::local(
                    codes::CANCELLED,
                    "the call was cancelled while it waited for the host",
                ));
            }
            if let Some(failure) = &self.failure {
                // The failure stays recorded: the serve loop ends with it
                // once the handler returns.
                return Err(ServiceError::local(
                    codes::CHANNEL_CLOSED,
                    format!("the session with the host failed while the request waited: {failure}"),
                ));
            }
            if self.closed {
                return Err(ServiceError::local(
                    codes::CHANNEL_CLOSED,
                    "the channel to the host closed before the answer came",
                ));
            }
            if let Err(e) = self.flush() {
                self.fail(e);
                continue;
            }
            match self.channel.read(self.inbox.spare(READ_CHUNK)) {
                Ok(0) => self.closed = true,
                Ok(n) => {
                    self.inbox.commit(n);
                    self.dispatch_buffered(Instant::now());
                }
                Err(e) => self.fail(ServeError::Io(e)),
            }
        }
    }

    fn handle(&mut self, pending: Pending, handlers: &mut Handlers) {
        let Pending { call, received } = pending;
        let result = match handlers.get_mut(call.method.as_str()) {
            None => Err(Error::new(
                codes::UNKNOWN_METHOD,
                format!(
                    "this plugin has no method `{}`; it serves: {}",
                    call.method,
                    handlers.method_list()
                ),
            )),
            Some(handler) => {
                let deadline = (call.timeout_ms > 0)
                    .then(|| received.checked_add(Duration::from_millis(call.timeout_ms)))
                    .flatten();
                self.current = Some(Current {
                    id: call.id,
                    cancelled: false,
                });
                let mut ctx = Context::new(self, call.id, &call.method, deadline);
                let outcome = catch_unwind(AssertUnwindSafe(|| handler(&mut ctx, &call.input)));
                self.current = None;
                outcome.unwrap_or_else(|payload| {
                    Err(Error::new(codes::PANIC, panic_message(payload.as_ref())))
                })
            }
        };
        self.push_reply(call.id, result);
    }

    /// Appends the reply for `id`; a reply too large for a frame becomes an
    /// error reply saying so.
    fn push_reply(&mut self, id: u64, result: Result<Vec<u8>, Error>) {
        self.calls += 1;
        let result = match result {
            Ok(output) if output.len() > self.max_payload_room() => Err(Error::new(
                codes::REPLY_TOO_LARGE,
                format!(
                    "the output is {} bytes but the maximum frame is {} bytes",
                    output.len(),
                    self.max_frame
                ),
            )),
            Ok(output) => Ok(output),
            Err(e) => Err(e),
        };
        let result = match result {
            Ok(output) => CallResult::Ok(output),
            Err(e) => CallResult::Err(truncate_error(e).into()),
        };
        let message = PluginMessage::Reply(Reply { id, result });
        if self.push(&message).is_err() {
            // Only a code or message of absurd size gets here.
            let fallback = PluginMessage::Reply(Reply {
                id,
                result: CallResult::Err(
                    Error::new(
                        codes::REPLY_TOO_LARGE,
                        "the error reply does not fit in a frame",
                    )
                    .into(),
                ),
            });
            if let Err(e) = self.push(&fallback) {
                self.fail(e);
            }
        }
    }

    /// Payload bytes a reply's output may use: the frame maximum less the
    /// reply's own header (tag, id, result tag, length).
    fn max_payload_room(&self) -> usize {
        (self.max_frame as usize).saturating_sub(4 + 8 + 4 + 8)
    }

    /// Encodes `message` onto the outbox, refusing frames over the maximum.
    fn push(&mut self, message: &PluginMessage) -> Result<(), ServeError> {
        let start = self.outbox.len();
        frame::encode_into(message, &mut self.outbox)?;
        let payload = self.outbox.len() - start - LENGTH_PREFIX;
        if payload > self.max_frame as usize {
            self.outbox.truncate(start);
            return Err(ServeError::Protocol(frame::FrameError::TooLarge {
                len: payload as u64,
                max: self.max_frame,
            }));
        }
        Ok(())
    }

    /// Writes every pending frame with one write. A host that has gone
    /// away ends the session like end of stream.
    pub(crate) fn flush(&mut self) -> Result<(), ServeError> {
        if self.outbox.is_empty() {
            return Ok(());
        }
        let result = self.channel.write_all(&self.outbox);
        self.outbox.clear();
        self.writes += 1;
        match result {
            Ok(()) => Ok(()),
            Err(e) if is_peer_gone(&e) => {
                self.closed = true;
                Ok(())
            }
            Err(e) => Err(ServeError::Io(e)),
        }
    }

    /// Output written during a handler goes out at once when nothing else
    /// waits to be answered (a lone call's logs appear as they happen), and
    /// with the batch's replies otherwise.
    fn flush_if_idle(&mut self) {
        if self.queue.is_empty() || self.outbox.len() >= FLUSH_THRESHOLD {
            if let Err(e) = self.flush() {
                self.fail(e);
            }
        }
    }

    fn fail(&mut self, e: ServeError) {
        if self.failure.is_none() {
            self.failure = Some(e);
        }
        if let Some(current) = self.current.as_mut() {
            current.cancelled = true;
        }
    }

    /// Whether the running call should stop: cancelled by the host, past
    /// its deadline, past the shutdown grace, or the channel is gone.
    pub(crate) fn check_cancelled(&mut self, deadline: Option<Instant>) -> bool {
        if self.current.as_ref().is_some_and(|c| c.cancelled) {
            return true;
        }
        let now = Instant::now();
        let due = self
            .last_poll
            .is_none_or(|last| now.duration_since(last) >= POLL_INTERVAL);
        if due {
            self.last_poll = Some(now);
            self.poll_channel(now);
        }
        let expired =
            deadline.is_some_and(|d| now >= d) || self.shutdown_deadline.is_some_and(|d| now >= d);
        let current = self.current.as_mut();
        match current {
            Some(c) => {
                c.cancelled |= expired || self.closed;
                c.cancelled
            }
            None => expired || self.closed,
        }
    }

    /// Reads whatever the host has sent without blocking and dispatches
    /// it, then writes what that produced (Pongs, Cancel replies).
    fn poll_channel(&mut self, now: Instant) {
        if self.closed || self.failure.is_some() {
            return;
        }
        loop {
            match self.channel.try_read(self.inbox.spare(READ_CHUNK)) {
                Ok(None) => break,
                Ok(Some(0)) => {
                    self.closed = true;
                    break;
                }
                Ok(Some(n)) => self.inbox.commit(n),
                Err(e) => {
                    self.fail(ServeError::Io(e));
                    return;
                }
            }
        }
        self.dispatch_buffered(now);
        if self.failure.is_some() {
            return;
        }
        if let Err(e) = self.flush() {
            self.fail(e);
        }
    }

    pub(crate) fn push_log(
        &mut self,
        level: LogLevel,
        message: String,
        fields: Vec<(String, String)>,
    ) {
        let record = PluginMessage::Log(LogRecord {
            level,
            message,
            fields,
        });
        if self.push(&record).is_err() {
            // A record too large for a frame is cut, not lost: the start of
            // a message usually says what happened.
            let PluginMessage::Log(record) = record else {
                return;
            };
            let keep = (self.max_frame as usize / 2).min(record.message.len());
            let mut cut = truncate_str(&record.message, keep).to_string();
            cut.push_str(" [truncated]");
            let short = PluginMessage::Log(LogRecord {
                level: record.level,
                message: cut,
                fields: Vec::new(),
            });
            if let Err(e) = self.push(&short) {
                self.fail(e);
                return;
            }
        }
        self.flush_if_idle();
    }

    pub(crate) fn push_event(&mut self, topic: String, payload: Vec<u8>) -> Result<(), Error> {
        let event = PluginMessage::Event(PluginEvent { topic, payload });
        if let Err(e) = self.push(&event) {
            return Err(Error::new(codes::EVENT_TOO_LARGE, e.to_string()));
        }
        self.flush_if_idle();
        Ok(())
    }
}

fn truncate_error(e: Error) -> Error {
    if e.code().len() <= MAX_ERROR_MESSAGE && e.message().len() <= MAX_ERROR_MESSAGE {
        return e;
    }
    Error::new(
        truncate_str(e.code(), 256),
        format!(
            "{} [truncated]",
            truncate_str(e.message(), MAX_ERROR_MESSAGE)
        ),
    )
}

/// The longest prefix of `s` of at most `max` bytes that ends on a
/// character boundary.
fn truncate_str(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    let text = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(a panic payload that is not a string)");
    format!("the handler panicked: {text}")
}

fn host_message_name(message: &HostMessage) -> &'static str {
    match message {
        HostMessage::Init(_) => "Init",
        HostMessage::Call(_) => "Call",
        HostMessage::Cancel { .. } => "Cancel",
        HostMessage::Ping { .. } => "Ping",
        HostMessage::Shutdown { .. } => "Shutdown",
        HostMessage::Pong { .. } => "Pong",
        HostMessage::Response(_) => "Response",
        HostMessage::Deliver(_) => "Deliver",
    }
}
