//! Summaries of repeated measurements: medians and tail percentiles, the
//! figures the tables print. Medians because a noisy machine adds a long
//! upper tail that would drag a mean around.

use std::time::Duration;

/// Percentiles of one set of samples, in microseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Summary {
    pub n: usize,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub min: f64,
}

impl Summary {
    pub fn of_durations(samples: &[Duration]) -> Summary {
        let mut us: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e6).collect();
        Summary::of(&mut us)
    }

    /// Nearest-rank percentiles; an empty set is all zeros (`n == 0`).
    pub fn of(samples: &mut [f64]) -> Summary {
        if samples.is_empty() {
            return Summary::default();
        }
        samples.sort_by(f64::total_cmp);
        let rank = |p: f64| {
            let i = ((p / 100.0) * samples.len() as f64).ceil() as usize;
            samples[i.clamp(1, samples.len()) - 1]
        };
        Summary {
            n: samples.len(),
            p50: rank(50.0),
            p90: rank(90.0),
            p99: rank(99.0),
            min: samples[0],
        }
    }
}

/// A duration in microseconds, printed with a unit that keeps 3 figures.
pub fn fmt_us(us: f64) -> String {
    if us >= 10_000.0 {
        format!("{:.1} ms", us / 1000.0)
    } else if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else if us >= 100.0 {
        format!("{us:.0} µs")
    } else {
        format!("{us:.1} µs")
    }
}

/// A byte count in KiB (or MiB when large).
pub fn fmt_bytes(bytes: f64) -> String {
    if bytes.abs() >= 10.0 * 1024.0 * 1024.0 {
        format!("{:.1} MiB", bytes / (1024.0 * 1024.0))
    } else {
        format!("{:.1} KiB", bytes / 1024.0)
    }
}

/// A rate, e.g. calls per second.
pub fn fmt_rate(per_second: f64) -> String {
    if per_second >= 1e6 {
        format!("{:.2} M/s", per_second / 1e6)
    } else if per_second >= 1e3 {
        format!("{:.1} k/s", per_second / 1e3)
    } else {
        format!("{per_second:.0} /s")
    }
}

pub fn fmt_ratio(r: f64) -> String {
    if r.is_finite() {
        format!("{r:.2}×")
    } else {
        "n/a".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        let s = Summary::of(&mut v);
        assert_eq!(s.n, 100);
        assert_eq!(s.p50, 50.0);
        assert_eq!(s.p90, 90.0);
        assert_eq!(s.p99, 99.0);
        assert_eq!(s.min, 1.0);
    }

    #[test]
    fn unsorted_and_tiny_sets() {
        let mut v = vec![3.0, 1.0, 2.0];
        let s = Summary::of(&mut v);
        assert_eq!(s.p50, 2.0);
        assert_eq!(s.p99, 3.0);
        let mut one = vec![7.0];
        assert_eq!(Summary::of(&mut one).p50, 7.0);
        assert_eq!(Summary::of(&mut []).n, 0);
    }

    #[test]
    fn units() {
        assert_eq!(fmt_us(12.34), "12.3 µs");
        assert_eq!(fmt_us(1234.0), "1.23 ms");
        assert_eq!(fmt_bytes(2048.0), "2.0 KiB");
        assert_eq!(fmt_rate(2_500_000.0), "2.50 M/s");
        assert_eq!(fmt_ratio(1.5), "1.50×");
    }
}
