//! corral's supervisor: compiles plugin policies, spawns confined children
//! through the `corral-sandbox` trampoline, drives them over the child
//! protocol and keeps them running. Used by `corral run` and by `corrald`.

pub mod check;
pub mod child;
pub mod config;
pub mod daemon;
pub mod deps;
pub mod events;
pub mod features;
pub mod host;
pub mod learn;
pub mod namespaces;
pub mod package;
pub mod policy;
pub mod restart;
pub mod run;
pub mod runtime;
pub mod services;
pub mod sources;
pub mod spawn;
pub mod state;
pub mod store;
pub mod uids;
pub mod unzip;
