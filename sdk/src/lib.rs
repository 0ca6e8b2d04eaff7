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
