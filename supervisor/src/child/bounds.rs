//! What a hostile child can make the supervisor hold, and the bound on
//! each. Every per-child queue that grows with what the child sends, not
//! with what the host asked of it, is bounded here:
//!
//! - **Pongs.** A Ping is answered with a Pong queued in the outbox. A
//!   child that pings but never reads its channel would grow the outbox
//!   without end; more than [`MAX_UNWRITTEN_PONGS`] Pongs queued and not
//!   yet handed to the socket is a protocol violation, and the child is
//!   killed with that typed error (an operator would rather see it named
//!   than have it stall until a call times out). The memory held is then
//!   at most that many Pong frames.
//! - **Log records.** `Log` frames pass the same token bucket as the
//!   plugin's stdout and stderr lines ([`super::output::RateLimit`]):
//!   records over the rate are dropped and counted, a "[corral: dropped
//!   N log records over the rate limit]" line is logged at most once a
//!   second and when the child dies, and the counts are kept per plugin
//!   in [`DropCounters`] for the metrics.
//! - **Output lines.** stdout and stderr are drained and rate limited in
//!   [`super::output`]; their drops are counted here too.
//!
//! Frames themselves are bounded by the negotiated maximum frame size,
//! and calls by the callers (the host only sends what it was asked).

use super::output::{Bucket, RateLimit};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Pongs queued and not yet taken by the writer before the child is
/// killed for not reading its channel.
pub const MAX_UNWRITTEN_PONGS: u64 = 1024;

/// Dropped records of one plugin, all instances together, for metrics.
#[derive(Debug, Default)]
pub struct PluginDrops {
    /// `Log` frames dropped over the rate limit.
    pub log_records: AtomicU64,
    /// stdout and stderr lines dropped over the rate limit.
    pub output_lines: AtomicU64,
}

/// Dropped records per plugin, shared by every child of a runtime.
#[derive(Debug, Default, Clone)]
pub struct DropCounters {
    by_plugin: Arc<Mutex<HashMap<String, Arc<PluginDrops>>>>,
}

impl DropCounters {
    /// The counters of `plugin`, made on first use.
    pub fn of(&self, plugin: &str) -> Arc<PluginDrops> {
        let mut map = self.by_plugin.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(plugin.to_string()).or_default().clone()
    }

    /// `(plugin, log records dropped, output lines dropped)` for each
    /// plugin that has a child or had one.
    pub fn snapshot(&self) -> Vec<(String, u64, u64)> {
        let map = self.by_plugin.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<_> = map
            .iter()
            .map(|(name, d)| {
                (
                    name.clone(),
                    d.log_records.load(Ordering::Relaxed),
                    d.output_lines.load(Ordering::Relaxed),
                )
            })
            .collect();
        out.sort();
        out
    }
}

/// The rate limit on one child's `Log` frames.
#[derive(Debug)]
pub struct LogLimiter {
    bucket: Mutex<Bucket>,
    drops: Arc<PluginDrops>,
    /// Dropped by this child, for its report at death.
    dropped: AtomicU64,
}

/// What to do with one `Log` record.
#[derive(Debug, PartialEq, Eq)]
pub enum LogVerdict {
    /// Log it, after reporting this many earlier drops (0: none to report).
    Log { report_first: u64 },
    /// Drop it (counted); report this many drops now (0: not yet).
    Drop { report: u64 },
}

impl LogLimiter {
    pub fn new(limit: RateLimit, drops: Arc<PluginDrops>) -> Self {
        LogLimiter {
            bucket: Mutex::new(Bucket::new(limit)),
            drops,
            dropped: AtomicU64::new(0),
        }
    }

    pub fn judge(&self, now: Instant) -> LogVerdict {
        let mut bucket = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        let admitted = bucket.admit(now);
        if !admitted {
            self.drops.log_records.fetch_add(1, Ordering::Relaxed);
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        let report = bucket.take_report(now).unwrap_or(0);
        if admitted {
            LogVerdict::Log {
                report_first: report,
            }
        } else {
            LogVerdict::Drop { report }
        }
    }

    /// Drops not yet reported in a line, taken for the report at death.
    pub fn take_unreported(&self) -> u64 {
        let mut bucket = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        bucket.take_all()
    }

    /// Every record this child had dropped.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// The line that reports dropped log records.
pub fn dropped_line(n: u64) -> String {
    format!("[corral: dropped {n} log records over the rate limit]")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_log_flood_is_capped_counted_and_reported() {
        let counters = DropCounters::default();
        let limiter = LogLimiter::new(
            RateLimit {
                per_second: 10,
                burst: 50,
            },
            counters.of("p"),
        );
        let start = Instant::now();
        let (mut logged, mut reported) = (0u64, 0u64);
        // 100,000 records over two seconds.
        for i in 0..100_000u64 {
            let now = start + Duration::from_micros(i * 20);
            match limiter.judge(now) {
                LogVerdict::Log { report_first } => {
                    logged += 1;
                    reported += report_first;
                }
                LogVerdict::Drop { report } => reported += report,
            }
        }
        reported += limiter.take_unreported();
        assert!(logged <= 50 + 2 * 10 + 1, "logged {logged}");
        assert_eq!(logged + limiter.dropped(), 100_000);
        assert_eq!(reported, limiter.dropped(), "every drop is reported once");
        assert_eq!(
            counters.snapshot(),
            vec![("p".into(), limiter.dropped(), 0)]
        );
    }
}
