//! When to restart a child that died, and when to stop trying.
//!
//! Delays grow exponentially from `backoff_initial` to `backoff_max`, with
//! random jitter so plugins that died together do not restart in lockstep.
//! A child that stayed up longer than `backoff_max` starts the count over.
//! `crash_loop_failures` failures within `crash_loop_window` quarantine the
//! plugin: it stays down until an operator reloads it.

use corral_protocol::policy::RestartPolicy;
use rand::Rng;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct RestartTracker {
    policy: RestartPolicy,
    consecutive: u32,
    failures: VecDeque<Instant>,
}

/// What to do after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Restart after this delay; `attempt` counts consecutive failures.
    Restart { delay: Duration, attempt: u32 },
    /// Too many failures in the window.
    Quarantine { failures: u32, window: Duration },
}

impl RestartTracker {
    pub fn new(policy: RestartPolicy) -> RestartTracker {
        RestartTracker {
            policy,
            consecutive: 0,
            failures: VecDeque::new(),
        }
    }

    /// Records a failure at `now`; `lived` is how long the child ran.
    pub fn failure(&mut self, now: Instant, lived: Duration) -> Decision {
        if lived > self.policy.backoff_max {
            self.consecutive = 0;
        }
        self.consecutive = self.consecutive.saturating_add(1);
        self.failures.push_back(now);
        let window = self.policy.crash_loop_window;
        while let Some(first) = self.failures.front() {
            if now.duration_since(*first) > window {
                self.failures.pop_front();
            } else {
                break;
            }
        }
        let in_window = self.failures.len() as u32;
        if in_window >= self.policy.crash_loop_failures {
            return Decision::Quarantine {
                failures: in_window,
                window,
            };
        }
        Decision::Restart {
            delay: self.delay(self.consecutive, rand::rng().random_range(-1.0..=1.0)),
            attempt: self.consecutive,
        }
    }

    /// The delay before attempt `n` (1-based); `unit` in [-1, 1] picks
    /// where in the jitter band it lands.
    pub fn delay(&self, n: u32, unit: f64) -> Duration {
        let base = self.policy.backoff_initial.as_secs_f64()
            * 2f64.powi(n.saturating_sub(1).min(30) as i32);
        let capped = base.min(self.policy.backoff_max.as_secs_f64());
        let jittered = capped * (1.0 + self.policy.jitter * unit.clamp(-1.0, 1.0));
        Duration::from_secs_f64(jittered.max(0.0))
    }

    /// Forgets the history (an operator reloaded the plugin).
    pub fn reset(&mut self) {
        self.consecutive = 0;
        self.failures.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RestartPolicy {
        RestartPolicy {
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(30),
            jitter: 0.2,
            crash_loop_failures: 5,
            crash_loop_window: Duration::from_secs(60),
        }
    }

    #[test]
    fn delays_double_up_to_the_cap_within_the_jitter_band() {
        let t = RestartTracker::new(policy());
        assert_eq!(t.delay(1, 0.0), Duration::from_millis(100));
        assert_eq!(t.delay(4, 0.0), Duration::from_millis(800));
        assert_eq!(t.delay(20, 0.0), Duration::from_secs(30));
        assert_eq!(t.delay(1, 1.0), Duration::from_millis(120));
        assert_eq!(t.delay(1, -1.0), Duration::from_millis(80));
    }

    #[test]
    fn crash_loop_quarantines_and_old_failures_expire() {
        let mut t = RestartTracker::new(policy());
        let start = Instant::now();
        for i in 0..4 {
            let d = t.failure(start + Duration::from_secs(i), Duration::from_millis(10));
            assert!(
                matches!(d, Decision::Restart { attempt, .. } if attempt == i as u32 + 1),
                "{d:?}"
            );
        }
        let d = t.failure(start + Duration::from_secs(4), Duration::from_millis(10));
        assert_eq!(
            d,
            Decision::Quarantine {
                failures: 5,
                window: Duration::from_secs(60)
            }
        );
        // Spread out, the same number of failures is fine.
        let mut t = RestartTracker::new(policy());
        for i in 0..10 {
            let d = t.failure(start + Duration::from_secs(i * 20), Duration::from_secs(1));
            assert!(matches!(d, Decision::Restart { .. }), "{i}: {d:?}");
        }
    }

    #[test]
    fn a_long_life_resets_the_backoff() {
        let mut t = RestartTracker::new(policy());
        let now = Instant::now();
        t.failure(now, Duration::from_millis(1));
        t.failure(now, Duration::from_millis(1));
        match t.failure(now, Duration::from_secs(120)) {
            Decision::Restart { attempt, .. } => assert_eq!(attempt, 1),
            other => panic!("{other:?}"),
        }
    }
}
