//! The child's side of host services: its `Request` frames are admitted
//! or refused here, handed to the runtime's broker, and answered with a
//! `Response`; events for it are queued as `Deliver` frames.
//!
//! # Bounds
//!
//! A request holds an in-flight slot from the moment it is admitted until
//! the writer has taken its response off the outbox, so a plugin that
//! sends requests and never reads its channel holds at most
//! `requests.in_flight` responses in the host. Beyond that:
//!
//! - a request over `requests.max_bytes` is answered `payload_too_large`;
//! - one over the in-flight limit `overloaded`, and one over the rate
//!   (token bucket, `requests.per_second` sustained and as many at once)
//!   `rate_limited`. These refusals are small and need no slot, but a child
//!   that has more than [`MAX_UNWRITTEN_REFUSALS`] of them unread is not
//!   reading its channel and is killed as a protocol violation, as for
//!   Pongs ([`super::bounds`]);
//! - deliveries wait in the outbox up to `requests.event_queue` frames and
//!   [`MAX_QUEUED_DELIVERY_BYTES`]; past either, new ones are dropped and
//!   counted (a slow subscriber never slows a publisher).

use super::Shared;
use crate::services::{Broker, Caller, clip};
use corral_protocol::error::{CorralError, ErrorKind};
use corral_protocol::message::{
    Delivery, HostMessage, SERVICES_VERSION, ServiceError, ServiceRequest, ServiceResponse,
    ServiceResult,
};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

/// Refusals queued and not yet taken by the writer before the child is
/// killed for not reading its channel.
pub const MAX_UNWRITTEN_REFUSALS: u64 = 1024;

/// Bytes of `Deliver` frames a child may have waiting in its outbox.
pub const MAX_QUEUED_DELIVERY_BYTES: u64 = 8 << 20;

/// Per-child request and delivery accounting.
#[derive(Debug, Default)]
pub struct RequestState {
    /// Admitted requests whose response the writer has not taken yet.
    in_flight: AtomicU32,
    /// Responses to admitted requests queued since the writer's last take.
    unwritten_responses: AtomicU32,
    unwritten_refusals: AtomicU64,
    unwritten_deliveries: AtomicU64,
    unwritten_delivery_bytes: AtomicU64,
    bucket: Mutex<Option<(f64, Instant)>>,
    /// Requests answered, refused, and deliveries dropped, for metrics.
    pub counts: RequestCounts,
}

#[derive(Debug, Default)]
pub struct RequestCounts {
    pub handled: AtomicU64,
    pub refused: AtomicU64,
    pub deliveries: AtomicU64,
    pub deliveries_dropped: AtomicU64,
}

impl RequestState {
    /// The writer took the outbox: what was queued is the socket's now.
    pub(super) fn taken(&self) {
        let answered = self.unwritten_responses.swap(0, Ordering::AcqRel);
        self.in_flight.fetch_sub(answered, Ordering::AcqRel);
        self.unwritten_refusals.store(0, Ordering::Relaxed);
        self.unwritten_deliveries.store(0, Ordering::Relaxed);
        self.unwritten_delivery_bytes.store(0, Ordering::Relaxed);
    }

    /// One token from the bucket, refilled at `per_second`.
    fn take_token(&self, per_second: u32) -> bool {
        let rate = f64::from(per_second.max(1));
        let now = Instant::now();
        let mut bucket = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        let (tokens, last) = bucket.get_or_insert((rate, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * rate).min(rate);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// A weak handle on a running child, for services that answer it later
/// (event deliveries). It does not keep the child alive.
#[derive(Clone)]
pub struct ChildLink {
    shared: Weak<Shared>,
    plugin: Arc<str>,
    instance: u32,
    id: u64,
}

impl std::fmt::Debug for ChildLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildLink")
            .field("plugin", &self.plugin)
            .field("instance", &self.instance)
            .field("id", &self.id)
            .finish()
    }
}

/// What became of a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivered {
    Queued,
    /// The child's queue is full; the event was dropped and counted.
    Dropped,
    /// The child is gone, or speaks protocol version 1.
    Gone,
}

impl ChildLink {
    pub(super) fn new(shared: &Arc<Shared>) -> ChildLink {
        ChildLink {
            shared: Arc::downgrade(shared),
            plugin: Arc::from(shared.plugin.as_str()),
            instance: shared.instance,
            id: shared.link_id,
        }
    }

    pub fn plugin(&self) -> &str {
        &self.plugin
    }

    pub fn instance(&self) -> u32 {
        self.instance
    }

    /// Unique per child for the daemon's life.
    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn is_alive(&self) -> bool {
        self.shared.upgrade().is_some_and(|s| !s.is_dead())
    }

    /// Queues an event for the child, unless its queue is full.
    pub fn deliver(&self, delivery: Delivery) -> Delivered {
        let Some(shared) = self.shared.upgrade() else {
            return Delivered::Gone;
        };
        if shared.is_dead() || shared.version.load(Ordering::Relaxed) < SERVICES_VERSION {
            return Delivered::Gone;
        }
        let state = &shared.requests;
        let limit = u64::from(shared.policy.services.requests.event_queue.max(1));
        let size = (delivery.topic.len() + delivery.from.len() + delivery.payload.len()) as u64;
        let queued = state.unwritten_deliveries.load(Ordering::Relaxed);
        let bytes = state.unwritten_delivery_bytes.load(Ordering::Relaxed);
        if queued >= limit || bytes + size > MAX_QUEUED_DELIVERY_BYTES {
            state
                .counts
                .deliveries_dropped
                .fetch_add(1, Ordering::Relaxed);
            return Delivered::Dropped;
        }
        if shared.outbox.push(&HostMessage::Deliver(delivery)).is_err() {
            state
                .counts
                .deliveries_dropped
                .fetch_add(1, Ordering::Relaxed);
            return Delivered::Dropped;
        }
        state.unwritten_deliveries.fetch_add(1, Ordering::Relaxed);
        state
            .unwritten_delivery_bytes
            .fetch_add(size, Ordering::Relaxed);
        state.counts.deliveries.fetch_add(1, Ordering::Relaxed);
        Delivered::Queued
    }
}

/// Handles one `Request` frame. An `Err` is a protocol violation that
/// ends the child.
pub(super) fn request(shared: &Arc<Shared>, request: ServiceRequest) -> Result<(), String> {
    if shared.version.load(Ordering::Relaxed) < SERVICES_VERSION {
        return Err(format!(
            "sent a Request at protocol version 1 (host services need version {SERVICES_VERSION})"
        ));
    }
    let limits = shared.policy.services.requests;
    let state = &shared.requests;
    let refusal = if request.payload.len() as u64 > u64::from(limits.max_bytes) {
        Some(CorralError::new(
            ErrorKind::PayloadTooLarge {
                limit_bytes: u64::from(limits.max_bytes),
                size_bytes: request.payload.len() as u64,
            },
            format!(
                "a {}.{} request of {} bytes is over the limit of {} bytes",
                clip(&request.service),
                clip(&request.operation),
                request.payload.len(),
                limits.max_bytes
            ),
        ))
    } else if state.in_flight.load(Ordering::Acquire) >= limits.in_flight {
        Some(CorralError::new(
            ErrorKind::Overloaded {
                limit: limits.in_flight,
            },
            format!(
                "plugin {} already has {} requests to host services in flight",
                shared.plugin, limits.in_flight
            ),
        ))
    } else if !state.take_token(limits.per_second) {
        Some(CorralError::new(
            ErrorKind::RateLimited {
                limit_per_second: limits.per_second,
            },
            format!(
                "plugin {} sends more than {} requests to host services a second",
                shared.plugin, limits.per_second
            ),
        ))
    } else {
        None
    };
    if let Some(error) = refusal {
        state.counts.refused.fetch_add(1, Ordering::Relaxed);
        let unread = state.unwritten_refusals.fetch_add(1, Ordering::Relaxed);
        if unread >= MAX_UNWRITTEN_REFUSALS {
            return Err(format!(
                "sent more than {MAX_UNWRITTEN_REFUSALS} refused requests without reading the responses"
            ));
        }
        observe(shared, &request.service, error.code());
        return respond(shared, request.id, Err(error), false);
    }
    state.in_flight.fetch_add(1, Ordering::AcqRel);
    let Some(broker) = shared.broker.clone() else {
        let error = CorralError::new(
            ErrorKind::ServiceUnavailable {
                service: clip(&request.service).to_string(),
            },
            "host services need corrald; `corral run` offers none",
        );
        observe(shared, &request.service, error.code());
        return respond(shared, request.id, Err(error), true);
    };
    let caller = Caller {
        plugin: shared.plugin.clone(),
        instance: shared.instance,
        policy: shared.policy.clone(),
        deadline: shared.call_deadline(request.call_id),
        depth: shared.call_depth(request.call_id),
        link: ChildLink::new(shared),
    };
    let shared = shared.clone();
    tokio::spawn(async move {
        let service = request.service.clone();
        let result = dispatch(
            broker,
            caller,
            request.service,
            request.operation,
            request.payload,
        )
        .await;
        observe(
            &shared,
            &service,
            match &result {
                Ok(_) => "ok",
                Err(e) => e.code(),
            },
        );
        if respond(&shared, request.id, result, true).is_err() {
            shared.request_kill(super::exit::DeathCause::ProtocolViolation {
                reason: "a response could not be queued".into(),
            });
        }
    });
    Ok(())
}

async fn dispatch(
    broker: Arc<dyn Broker>,
    caller: Caller,
    service: String,
    operation: String,
    payload: Vec<u8>,
) -> Result<Vec<u8>, CorralError> {
    broker.handle(caller, service, operation, payload).await
}

/// Queues the response; an admitted request's slot is released when the
/// writer takes it.
fn respond(
    shared: &Shared,
    id: u64,
    result: Result<Vec<u8>, CorralError>,
    admitted: bool,
) -> Result<(), String> {
    let max = shared.max_frame.load(Ordering::Relaxed) as usize;
    let result = match result {
        // Variant 6, id, result variant, length: 24 bytes of framing.
        Ok(body) if body.len() + 24 > max => Err(CorralError::new(
            ErrorKind::PayloadTooLarge {
                limit_bytes: (max.saturating_sub(24)) as u64,
                size_bytes: body.len() as u64,
            },
            format!(
                "the answer is {} bytes, over the channel's frame limit",
                body.len()
            ),
        )),
        other => other,
    };
    let result = match result {
        Ok(body) => ServiceResult::Ok(body),
        Err(e) => ServiceResult::Err(service_error(&e)),
    };
    let pushed = shared
        .outbox
        .push(&HostMessage::Response(ServiceResponse { id, result }));
    if admitted {
        shared
            .requests
            .counts
            .handled
            .fetch_add(1, Ordering::Relaxed);
        shared
            .requests
            .unwritten_responses
            .fetch_add(1, Ordering::AcqRel);
    }
    pushed.map_err(|e| e.to_string())
}

/// The wire form of a typed error: its code, message and whole JSON body.
pub fn service_error(e: &CorralError) -> ServiceError {
    ServiceError {
        code: e.code().to_string(),
        message: e.message.clone(),
        details: serde_json::to_vec(e).unwrap_or_else(|_| b"{}".to_vec()),
    }
}

fn observe(shared: &Shared, service: &str, outcome: &str) {
    if let Some(observer) = &shared.observer {
        observer.service_request(&shared.plugin, known_service(service), outcome);
    }
}

/// The service name as a metric label: one of the known services, or
/// `unknown`, so a plugin cannot mint label values.
pub fn known_service(service: &str) -> &'static str {
    match service {
        "plugins" => "plugins",
        "events" => "events",
        "kv" => "kv",
        "s3" => "s3",
        "config" => "config",
        _ => "unknown",
    }
}
