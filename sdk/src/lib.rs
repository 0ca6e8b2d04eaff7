//! Write a corral plugin in Rust.
//!
//! A plugin is a program that corral starts inside its sandbox and talks to
//! over a channel on fd 3. This crate speaks the protocol
//! (`protocol/PROTOCOL.md`): you register methods and call
//! [`Plugin::serve`]. It is synchronous, starts no threads and needs no
//! async runtime.
//!
//! # Five minutes
//!
//! `Cargo.toml`:
//!
//! ```toml
//! [package]
//! name = "greeter"
//! version = "0.1.0"
//! edition = "2024"
//!
//! [dependencies]
//! corral-sdk = "0.1"
//! serde = { version = "1", features = ["derive"] }
//! ```
//!
//! `src/main.rs`:
//!
//! ```no_run
//! use corral_sdk::{Context, Error, Plugin};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Deserialize)]
//! struct Greet {
//!     name: String,
//! }
//!
//! #[derive(Serialize)]
//! struct Greeting {
//!     greeting: String,
//! }
//!
//! fn main() {
//!     Plugin::new(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"))
//!         .json("greet", |ctx: &mut Context, input: Greet| {
//!             if input.name.is_empty() {
//!                 return Err(Error::new("empty_name", "say who to greet"));
//!             }
//!             ctx.info(format!("greeting {}", input.name));
//!             Ok(Greeting { greeting: format!("Hello, {}!", input.name) })
//!         })
//!         .raw("echo", |_ctx, input: &[u8]| Ok(input.to_vec()))
//!         .json("count", |ctx: &mut Context, up_to: u64| {
//!             let mut n = 0;
//!             // Long work checks for cancellation now and then.
//!             while n < up_to && !ctx.is_cancelled() {
//!                 n += 1;
//!             }
//!             Ok(n)
//!         })
//!         .serve()
//! }
//! ```
//!
//! `plugin.toml`, next to the binary in the package folder:
//!
//! ```toml
//! [plugin]
//! name = "greeter"
//! version = "0.1.0"
//! entry = "bin/greeter"
//!
//! [limits]
//! memory = "32MiB"
//! timeout = "5s"
//! ```
//!
//! Build a static binary (it starts faster in the sandbox and needs no
//! shared libraries inside it), put it at `bin/greeter` in the package
//! folder, and run one call:
//!
//! ```sh
//! RUSTFLAGS="-C target-feature=+crt-static" \
//!     cargo build --release --target x86_64-unknown-linux-gnu
//! mkdir -p pkg/bin && cp plugin.toml pkg/
//! cp target/x86_64-unknown-linux-gnu/release/greeter pkg/bin/
//! corral run pkg --method greet --input '{"name": "Ada"}'
//! ```
//!
//! # How calls run
//!
//! - Handlers run one at a time, inline on the thread that reads the
//!   channel, in arrival order. Calls that arrive while a handler runs
//!   wait; all replies ready at once go out in one write.
//! - A handler's [`Error`] becomes an error reply with its code and
//!   message. Input that does not decode is answered with `invalid_input`,
//!   a method nobody registered with `unknown_method` (unless a
//!   [`Plugin::fallback`] answers every other method), and a handler that
//!   panics with `panic`; the plugin keeps serving after all three. (This
//!   needs the default `panic = "unwind"`.)
//! - [`Context::is_cancelled`] turns true when the host cancels the call,
//!   the call's deadline passes, or the host shuts the plugin down. Long
//!   handlers should check it.
//! - Logs ([`Context::info`] and friends) and events ([`Context::emit`])
//!   travel over the channel. Stdout and stderr also reach the host's log,
//!   line by line, but carry no structure.
//! - [`Plugin::on_init`] runs between the host's Init and Ready, with the
//!   settings and limits, for plugins that must prepare before serving;
//!   its error fails the start.
//! - [`Plugin::serve`] exits 0 when the host sends Shutdown or closes the
//!   channel, and non-zero when the host breaks the protocol.
//! - An `io::Error` passed on with `?` becomes an error reply with code
//!   `io`, or `permission_denied` when the sandbox refused it (`EACCES`,
//!   `EPERM`). `std::io::Error` does not know its path: use [`fs`] (or
//!   [`fs::WithPath`] on any `io::Result`) and the reply names the path
//!   the sandbox refused, e.g. `read /etc/shadow: Permission denied`.
//!
//! # Host services
//!
//! A plugin can ask corrald for services over the same channel (protocol
//! version 2, PROTOCOL.md section 9): call a plugin it depends on,
//! publish and subscribe to events, keep key-value data, reach S3 buckets
//! and read its settings. Each is granted by the operator's policy; a
//! refusal comes back as a [`ServiceError`] with the API's code
//! (`permission_denied` and a `details.permission` such as
//! `kv.table secrets`), and passes on to the caller with `?`.
//!
//! ```no_run
//! use corral_sdk::{Context, Error, Event, Plugin};
//! use serde::Deserialize;
//! use serde_json::{Value, json};
//!
//! #[derive(Deserialize)]
//! struct Order {
//!     id: String,
//!     user: String,
//!     item: String,
//! }
//!
//! fn place(ctx: &mut Context, order: Order) -> Result<Value, Error> {
//!     // A dependency: listed in [dependencies] and granted by the policy.
//!     // It gets what is left of this call's deadline.
//!     let item = ctx.call_plugin("text-utils", "upper", &order.item)?;
//!     // Key-value data, in the plugin's own (prefixed) table.
//!     let user = ctx.kv_get("users", &order.user)?.unwrap_or(Value::Null);
//!     ctx.kv_put("orders", &order.id, &json!({ "item": item, "user": user }))?;
//!     // An event for every subscriber of orders.*.
//!     let published = ctx.publish("orders.created", &json!({ "id": order.id }))?;
//!     Ok(json!({ "item": item, "notified": published.delivered }))
//! }
//!
//! fn main() {
//!     Plugin::new(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"))
//!         .json("place", place)
//!         // Start-up requests: after Ready, before the first call.
//!         .on_ready(|ctx: &mut Context| Ok(ctx.subscribe("user:*")?))
//!         // Deliveries run one at a time between calls.
//!         .on_event(|ctx: &mut Context, event: &Event| {
//!             let user: Value = event.json()?;
//!             ctx.kv_put("users", &event.topic, &user)?;
//!             Ok(())
//!         })
//!         .serve()
//! }
//! ```
//!
//! Its `plugin.toml` asks for what it uses:
//!
//! ```toml
//! [plugin]
//! name = "orders"
//! version = "0.1.0"
//! entry = "bin/orders"
//!
//! [dependencies]
//! "text-utils" = "^1"
//!
//! [permissions.events]
//! publish = ["orders.*"]
//! subscribe = ["user:*"]
//!
//! [permissions.storage]
//! tables = ["users", "orders"]
//! ```
//!
//! and the operator's policy grants it (`corral policy show` lists each
//! grant and where it came from):
//!
//! ```toml
//! [plugins.orders.grant]
//! calls = ["text-utils"]
//! events_publish = ["orders.*"]
//! events_subscribe = ["user:*"]
//! tables = ["users", "orders"]
//! ```
//!
//! - [`Context::request`] is the general form (service, operation, JSON
//!   payload, JSON body); [`Context::call_plugin`], [`Context::publish`],
//!   [`Context::subscribe`], [`Context::kv_get`], [`Context::s3_put`],
//!   [`Context::settings`] and the others shape it for each operation.
//!   [`Context::send_request`] and [`Context::wait_response`] keep several
//!   requests in flight.
//! - While a handler waits for an answer, calls that arrive are queued,
//!   deliveries are kept for the event handler, Pings are answered, and a
//!   Cancel of the call ends the wait with `cancelled`.
//! - A request made in a handler carries its call's id, so the host
//!   bounds it by that call's deadline; the event handler's and
//!   [`Plugin::on_ready`]'s carry 0.
//! - When the host chose protocol version 1 (an older corral), nothing is
//!   sent and every request fails with `service_unavailable`; under
//!   `corral run`, which has no daemon, the host answers the same.

mod channel;
mod context;
mod error;
pub mod fs;
mod plugin;
mod services;
mod session;
pub mod testing;

pub use context::Context;
pub use corral_protocol::message::{InitLimits, LogLevel};
pub use error::{Error, ServeError, codes};
pub use plugin::{InitInfo, Plugin};
pub use services::{
    Event, KvPage, ListOptions, Published, RequestId, S3Entry, S3Object, S3Page, ServiceError,
};
pub use session::{EndReason, Served};

/// The protocol crate, for hosts in tests and for raw frame access.
pub use corral_protocol as protocol;
