//! what a Rust plugin links to serve calls
