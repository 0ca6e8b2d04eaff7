//! The `corral` command line tool's shared pieces, and a client library for
//! corrald that other Rust programs can use ([`Client`]).

pub mod client;
pub mod exit;
pub mod render;
pub mod sources;

pub use client::{Client, ClientError, Endpoint, RawResponse};
