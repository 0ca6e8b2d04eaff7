//! Floods of frames the host answers or logs: Pings it must answer with
//! Pongs the plugin never reads, and `Log` records by the hundred
//! thousand. Frames are written raw on the channel (the SDK would never
//! send them like this), while the SDK is not reading it.

use crate::attempt::Attempt;
use crate::channel::{channel_fd, write_all};
use corral_protocol::frame;
use corral_protocol::message::{LogLevel, LogRecord, PluginMessage};
use serde::Deserialize;
use std::io;

#[derive(Deserialize, Default)]
pub struct FloodInput {
    /// Frames to send.
    pub count: Option<u64>,
}

/// Writes `count` frames made by `make`, in batches of 1024.
fn flood(count: u64, make: impl Fn(u64) -> PluginMessage) -> io::Result<u64> {
    let fd = channel_fd();
    let mut batch = Vec::with_capacity(64 << 10);
    let mut sent = 0u64;
    while sent < count {
        batch.clear();
        let end = (sent + 1024).min(count);
        for i in sent..end {
            frame::encode_into(&make(i), &mut batch).map_err(io::Error::other)?;
        }
        write_all(fd, &batch)?;
        sent = end;
    }
    Ok(sent)
}

/// Pings the host `count` times (default 1,000,000) and never reads the
/// Pongs.
pub fn ping_flood(input: Option<FloodInput>) -> Attempt {
    let count = input.unwrap_or_default().count.unwrap_or(1_000_000);
    let attempted = format!("{count} Pings, Pongs never read");
    match flood(count, |nonce| PluginMessage::Ping { nonce }) {
        Ok(n) => Attempt::succeeded(attempted, format!("sent {n} Pings")).with_value(n),
        Err(e) => Attempt::failed(attempted, &e),
    }
}

/// Sends `count` error-level `Log` records (default 200,000).
pub fn log_flood(input: Option<FloodInput>) -> Attempt {
    let count = input.unwrap_or_default().count.unwrap_or(200_000);
    let attempted = format!("{count} Log records");
    let record = |i: u64| {
        PluginMessage::Log(LogRecord {
            level: LogLevel::Error,
            message: format!("hostile log record {i} {}", "x".repeat(200)),
            fields: vec![("n".into(), i.to_string())],
        })
    };
    match flood(count, record) {
        Ok(n) => Attempt::succeeded(attempted, format!("sent {n} Log records")).with_value(n),
        Err(e) => Attempt::failed(attempted, &e),
    }
}
