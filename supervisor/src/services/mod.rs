//! Services the host brokers for plugins (protocol version 2): a plugin
//! sends `Request {service, operation, payload}` on its channel and gets
//! one `Response`; events it subscribed to arrive as `Deliver`. The plugin
//! still has no network and no files beyond its grants: the host does the
//! work, under the grants compiled into its policy
//! ([`corral_protocol::services::ServiceGrants`]), and refuses anything
//! else with a typed error naming the permission.
//!
//! # The path of a request
//!
//! 1. The child's reader (`child::requests`) checks the request against
//!    the child's bounds (in flight, size, rate) and answers an excess at
//!    once with `overloaded`, `payload_too_large` or `rate_limited`, so a
//!    flood costs the host one small answer per frame and nothing queued.
//! 2. The [`Broker`] the daemon installed routes it by service, one module
//!    per service: [`calls`] (a dependency's method), [`events`] (the bus),
//!    [`storage`] (key-value tables), [`buckets`] (brokered S3), and
//!    [`config`] (the plugin's settings). Each checks the grant first, then
//!    the input, then acts.
//! 3. The answer goes back as `Response` with the request's id; an error
//!    carries the API's code, message and details.
//!
//! `corral run` has no daemon and so no broker: every request is answered
//! `service_unavailable`.

pub mod calls;
pub mod events;

use crate::child::ChildLink;
use corral_protocol::error::CorralError;
use corral_protocol::policy::SandboxPolicy;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

/// Who sent a request.
#[derive(Clone, Debug)]
pub struct Caller {
    pub plugin: String,
    pub instance: u32,
    /// Its compiled policy; `policy.services` holds its grants.
    pub policy: Arc<SandboxPolicy>,
    /// When the call this request serves must be answered; `None` when it
    /// serves no call.
    pub deadline: Option<Instant>,
    /// Dependency calls between the API call at the root of the chain
    /// and the call this request serves ([`calls::MAX_CALL_DEPTH`]).
    pub depth: u32,
    /// The child itself, for deliveries back to it.
    pub link: ChildLink,
}

/// What a service answers: UTF-8 JSON, or a typed error.
pub type ServiceFuture = Pin<Box<dyn Future<Output = Result<Vec<u8>, CorralError>> + Send>>;

/// Routes requests to the services. Installed once into the runtime by the
/// daemon.
pub trait Broker: Send + Sync + std::fmt::Debug {
    fn handle(
        &self,
        caller: Caller,
        service: String,
        operation: String,
        payload: Vec<u8>,
    ) -> ServiceFuture;

    /// The child is gone: release what it held (its subscriptions).
    fn child_gone(&self, _link: &ChildLink) {}
}

/// The daemon's broker: one field per service that keeps state, the
/// routing by service name, and the parsing every service shares.
pub struct HostServices {
    /// The daemon, for services that reach other plugins. Weak: the
    /// daemon owns the runtime that holds this broker.
    pub daemon: std::sync::Weak<crate::daemon::Daemon>,
    /// The event bus ([`events`]); the daemon holds it too, for clients.
    pub events: Arc<events::Bus>,
}

impl std::fmt::Debug for HostServices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostServices").finish_non_exhaustive()
    }
}

impl Broker for HostServices {
    fn handle(
        &self,
        caller: Caller,
        service: String,
        operation: String,
        payload: Vec<u8>,
    ) -> ServiceFuture {
        let error = match service.as_str() {
            "plugins" => {
                let daemon = self.daemon.clone();
                return Box::pin(async move {
                    calls::handle(daemon, caller, &operation, &payload).await
                });
            }
            "events" => {
                let result = self.events.handle(&caller, &operation, &payload);
                return Box::pin(async move { result });
            }
            "kv" | "s3" | "config" => CorralError::new(
                corral_protocol::error::ErrorKind::ServiceUnavailable {
                    service: service.clone(),
                },
                format!("the {service} service is not offered by this corrald"),
            ),
            _ => unknown_service(&service, &operation),
        };
        Box::pin(async move { Err(error) })
    }

    fn child_gone(&self, link: &ChildLink) {
        self.events.child_gone(link.id());
    }
}

/// The answer to a service name the host does not know.
pub fn unknown_service(service: &str, operation: &str) -> CorralError {
    CorralError::invalid_input(format!(
        "no host service {:?} (operation {:?}); the services are plugins, events, kv, s3 and config",
        clip(service),
        clip(operation)
    ))
}

/// The answer to an operation a service does not have.
pub fn unknown_operation(service: &str, operation: &str, known: &[&str]) -> CorralError {
    CorralError::invalid_input(format!(
        "the {service} service has no operation {:?}; it has {}",
        clip(operation),
        known.join(", ")
    ))
}

/// Parses a request's JSON payload into the operation's arguments; the
/// error names the operation and what is wrong.
pub fn parse<T: serde::de::DeserializeOwned>(
    service: &str,
    operation: &str,
    payload: &[u8],
) -> Result<T, CorralError> {
    serde_json::from_slice(payload)
        .map_err(|e| CorralError::invalid_input(format!("{service}.{operation}: bad payload: {e}")))
}

/// A JSON body for a response.
pub fn body(value: &impl serde::Serialize) -> Result<Vec<u8>, CorralError> {
    serde_json::to_vec(value)
        .map_err(|e| CorralError::internal(format!("encoding a service response: {e}")))
}

/// A plugin-chosen string cut to a length fit for a message.
pub fn clip(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
