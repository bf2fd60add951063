//! Exponential backoff with jitter, the one way longshore waits before trying again: a
//! redelivery's delay, a failed pull, JetStream not ready at start, a sweep that failed.
//!
//! The delay before attempt `n` is a random point in the upper half of
//! `min(base * 2^(n-1), max)`: it grows, stays bounded, and replicas failing together
//! spread out instead of retrying in step.

use std::time::Duration;

/// A backoff policy: where it starts and where it stops growing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Backoff {
    pub const fn new(base: Duration, max: Duration) -> Self {
        Self { base, max }
    }

    /// The delay before attempt `attempt` (1-based: the first retry is attempt 1).
    pub fn delay(&self, attempt: u64) -> Duration {
        let exponent = attempt.saturating_sub(1).min(31) as u32;
        let ceiling = self
            .base
            .checked_mul(1u32 << exponent)
            .unwrap_or(self.max)
            .min(self.max);
        let half = ceiling / 2;
        half + half.mul_f64(rand::random::<f64>())
    }

    /// A retry loop's state: each [`Retries::next_delay`] is longer, until a success
    /// [`Retries::reset`]s it.
    pub fn retries(self) -> Retries {
        Retries {
            backoff: self,
            failures: 0,
        }
    }
}

/// The failures of a retry loop so far.
#[derive(Clone, Debug)]
pub struct Retries {
    backoff: Backoff,
    failures: u64,
}

impl Retries {
    /// Counts a failure and returns how long to wait before trying again.
    pub fn next_delay(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        self.backoff.delay(self.failures)
    }

    /// After a success: the next failure waits the shortest delay again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// Failures since the last success.
    pub fn failures(&self) -> u64 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));

    #[test]
    fn delays_grow_within_their_bounds_with_jitter() {
        for attempt in 1..=40u64 {
            let ceiling = (B.base * 2u32.saturating_pow((attempt - 1).min(31) as u32)).min(B.max);
            for _ in 0..20 {
                let d = B.delay(attempt);
                assert!(d >= ceiling / 2 && d <= ceiling, "{attempt}: {d:?}");
            }
        }
        assert!(B.delay(1) <= Duration::from_millis(100));
        assert!(B.delay(u64::MAX) >= Duration::from_secs(5));
        let spread: std::collections::BTreeSet<Duration> = (0..20).map(|_| B.delay(5)).collect();
        assert!(spread.len() > 1, "jittered: {spread:?}");
    }

    #[test]
    fn retries_grow_until_reset() {
        let mut r = B.retries();
        let first = r.next_delay();
        assert!(first <= Duration::from_millis(100));
        for _ in 0..5 {
            r.next_delay();
        }
        assert_eq!(r.failures(), 6);
        assert!(r.next_delay() >= Duration::from_millis(3200));
        r.reset();
        assert!(r.next_delay() <= Duration::from_millis(100));
    }
}
