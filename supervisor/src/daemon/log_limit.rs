//! Rate limits for log lines an outsider can cause (a denied request, a
//! refused connection, a failing `accept`): a few lines per kind and
//! window are written, the rest are counted, and the next line written
//! says how many were dropped (`suppressed`). The drops are also counted
//! in the metrics, so nothing disappears without a trace while no one can
//! flood the journal.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lines of one kind written per window.
pub const LINES_PER_WINDOW: u32 = 10;
/// The window.
pub const WINDOW: Duration = Duration::from_secs(10);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LineLabel {
    /// The kind of line (`request_denied`, `accept_failed`, ...).
    pub line: String,
}

#[derive(Debug)]
struct Window {
    started: Instant,
    written: u32,
    suppressed: u64,
}

#[derive(Debug, Default)]
pub struct LogLimiter {
    windows: Mutex<HashMap<&'static str, Window>>,
    dropped: Family<LineLabel, Counter>,
}

impl LogLimiter {
    pub fn new(dropped: Family<LineLabel, Counter>) -> LogLimiter {
        LogLimiter {
            windows: Mutex::new(HashMap::new()),
            dropped,
        }
    }

    /// Whether a line of kind `line` may be written now: `Some(n)` with
    /// the number of lines of that kind dropped since the last one
    /// written, `None` when this one is dropped (and counted).
    pub fn admit(&self, line: &'static str) -> Option<u64> {
        self.admit_at(line, Instant::now())
    }

    fn admit_at(&self, line: &'static str, now: Instant) -> Option<u64> {
        let Ok(mut windows) = self.windows.lock() else {
            return Some(0);
        };
        let window = windows.entry(line).or_insert(Window {
            started: now,
            written: 0,
            suppressed: 0,
        });
        if now.duration_since(window.started) >= WINDOW {
            window.started = now;
            window.written = 0;
        }
        if window.written < LINES_PER_WINDOW {
            window.written += 1;
            return Some(std::mem::take(&mut window.suppressed));
        }
        window.suppressed += 1;
        self.dropped
            .get_or_create(&LineLabel {
                line: line.to_string(),
            })
            .inc();
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_cut_and_the_next_window_says_how_much() {
        let family = Family::<LineLabel, Counter>::default();
        let limiter = LogLimiter::new(family.clone());
        let start = Instant::now();
        let written = (0..1000)
            .filter(|_| limiter.admit_at("request_denied", start).is_some())
            .count();
        assert_eq!(written, LINES_PER_WINDOW as usize);
        assert_eq!(
            family
                .get_or_create(&LineLabel {
                    line: "request_denied".into()
                })
                .get(),
            1000 - u64::from(LINES_PER_WINDOW)
        );
        // Another kind has its own allowance.
        assert_eq!(limiter.admit_at("accept_failed", start), Some(0));
        assert_eq!(
            limiter.admit_at("request_denied", start + WINDOW),
            Some(1000 - u64::from(LINES_PER_WINDOW))
        );
        assert_eq!(limiter.admit_at("request_denied", start + WINDOW), Some(0));
    }
}
