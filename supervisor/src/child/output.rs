//! A plugin's stdout and stderr, captured line by line into the daemon's
//! log with the plugin's name, never parsed. A flooding plugin is rate
//! limited: the pipe keeps being drained (so the plugin is not blocked on
//! a full pipe while holding a call), excess lines are counted and dropped,
//! and the count is logged once per second.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Longest line logged; longer lines are cut and marked.
pub const MAX_LINE: usize = 4096;

#[derive(Debug, Clone, Copy)]
pub struct RateLimit {
    /// Lines per second sustained.
    pub per_second: u32,
    /// Lines allowed in a burst.
    pub burst: u32,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit {
            per_second: 200,
            burst: 500,
        }
    }
}

/// Token bucket over lines (or log records).
#[derive(Debug)]
pub(crate) struct Bucket {
    limit: RateLimit,
    tokens: f64,
    last: Instant,
    dropped: u64,
    last_report: Instant,
}

impl Bucket {
    pub(crate) fn new(limit: RateLimit) -> Self {
        let now = Instant::now();
        Bucket {
            limit,
            tokens: f64::from(limit.burst),
            last: now,
            dropped: 0,
            last_report: now,
        }
    }

    pub(crate) fn admit(&mut self, now: Instant) -> bool {
        let elapsed = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * f64::from(self.limit.per_second))
            .min(f64::from(self.limit.burst));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            self.dropped += 1;
            false
        }
    }

    /// Every drop not yet reported, whenever asked (at the end).
    pub(crate) fn take_all(&mut self) -> u64 {
        std::mem::take(&mut self.dropped)
    }

    /// Lines dropped since the last report, once per second.
    pub(crate) fn take_report(&mut self, now: Instant) -> Option<u64> {
        if self.dropped > 0 && now.duration_since(self.last_report) >= Duration::from_secs(1) {
            self.last_report = now;
            return Some(std::mem::take(&mut self.dropped));
        }
        None
    }
}

/// Which stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// What was captured, for metrics and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CaptureStats {
    pub lines: u64,
    pub dropped: u64,
    pub bytes: u64,
}

/// Reads `reader` to its end, logging each line. `sink` receives every
/// admitted line (the daemon logs through tracing; tests collect).
pub async fn capture<R, F>(
    mut reader: R,
    stream: Stream,
    limit: RateLimit,
    dropped: Option<&AtomicU64>,
    mut sink: F,
) -> CaptureStats
where
    R: AsyncRead + Unpin,
    F: FnMut(Stream, &str),
{
    let mut bucket = Bucket::new(limit);
    let mut stats = CaptureStats::default();
    let mut line: Vec<u8> = Vec::with_capacity(256);
    let mut truncated = false;
    // Small: most plugins write little, and every child has two of these.
    let mut buf = vec![0u8; 2048];
    let mut emit = |line: &mut Vec<u8>,
                    truncated: &mut bool,
                    stats: &mut CaptureStats,
                    bucket: &mut Bucket| {
        let now = Instant::now();
        stats.lines += 1;
        if bucket.admit(now) {
            let mut text = String::from_utf8_lossy(line).into_owned();
            if *truncated {
                text.push_str(" [line truncated]");
            }
            sink(stream, &text);
        } else {
            stats.dropped += 1;
            if let Some(d) = dropped {
                d.fetch_add(1, Ordering::Relaxed);
            }
        }
        if let Some(n) = bucket.take_report(now) {
            sink(
                stream,
                &format!("[corral: dropped {n} lines over the rate limit]"),
            );
        }
        line.clear();
        *truncated = false;
    };
    loop {
        let n = match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        stats.bytes += n as u64;
        for &b in &buf[..n] {
            if b == b'\n' {
                emit(&mut line, &mut truncated, &mut stats, &mut bucket);
            } else if line.len() < MAX_LINE {
                line.push(b);
            } else {
                truncated = true;
            }
        }
    }
    if !line.is_empty() {
        emit(&mut line, &mut truncated, &mut stats, &mut bucket);
    }
    if bucket.dropped > 0 {
        sink(
            stream,
            &format!(
                "[corral: dropped {} lines over the rate limit]",
                bucket.dropped
            ),
        );
    }
    stats
}

/// Logs captured lines through tracing, tagged with the plugin.
pub fn log_line(plugin: &str, instance: u32, stream: Stream, line: &str) {
    match stream {
        Stream::Stdout => tracing::info!(plugin, instance, stream = stream.name(), "{line}"),
        Stream::Stderr => tracing::warn!(plugin, instance, stream = stream.name(), "{line}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_are_split_truncated_and_flushed_at_eof() {
        let long = "x".repeat(MAX_LINE + 10);
        let input = format!("one\ntwo\n{long}\nlast-no-newline");
        let mut seen = Vec::new();
        let stats = capture(
            input.as_bytes(),
            Stream::Stdout,
            RateLimit::default(),
            None,
            |_, l| seen.push(l.to_string()),
        )
        .await;
        assert_eq!(seen[0], "one");
        assert_eq!(seen[1], "two");
        assert!(seen[2].ends_with("[line truncated]"));
        assert_eq!(seen[2].len(), MAX_LINE + " [line truncated]".len());
        assert_eq!(seen[3], "last-no-newline");
        assert_eq!(stats.lines, 4);
        assert_eq!(stats.dropped, 0);
    }

    #[tokio::test]
    async fn a_flood_is_drained_but_rate_limited() {
        let input = "spam\n".repeat(100_000);
        let mut logged = 0u64;
        let mut reports = 0;
        let limit = RateLimit {
            per_second: 10,
            burst: 50,
        };
        let counted = AtomicU64::new(0);
        let stats = capture(
            input.as_bytes(),
            Stream::Stderr,
            limit,
            Some(&counted),
            |_, l| {
                if l.starts_with("[corral: dropped") {
                    reports += 1;
                } else {
                    logged += 1;
                }
            },
        )
        .await;
        assert_eq!(stats.lines, 100_000, "every byte was drained");
        assert!(logged <= 60, "logged {logged}");
        assert_eq!(stats.dropped + logged, 100_000);
        assert!(reports >= 1, "drops are reported");
        assert_eq!(counted.load(Ordering::Relaxed), stats.dropped);
    }
}
