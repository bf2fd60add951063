//! A token bucket per caller: `per_second` on average, bursts up to `burst`. Per replica:
//! with N dispatchers behind a load balancer a caller gets up to N times the rate.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use crate::config::RateLimitConfig;

pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl RateLimiter {
    /// None when the configuration turns limiting off.
    pub fn new(config: &RateLimitConfig) -> Option<Self> {
        (config.per_second > 0.0).then(|| Self {
            per_second: config.per_second,
            burst: f64::from(config.burst),
            state: Mutex::new((f64::from(config.burst), Instant::now())),
        })
    }

    /// Takes one token, or says how long until one is available.
    pub fn take(&self) -> Result<(), Duration> {
        self.take_at(Instant::now())
    }

    fn take_at(&self, now: Instant) -> Result<(), Duration> {
        // Never held across an await; a poisoned lock only means a panic elsewhere mid-update
        // of two plain numbers, which are still usable.
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (tokens, last) = *state;
        let elapsed = now.saturating_duration_since(last).as_secs_f64();
        let tokens = (tokens + elapsed * self.per_second).min(self.burst);
        if tokens >= 1.0 {
            *state = (tokens - 1.0, now);
            Ok(())
        } else {
            *state = (tokens, now);
            Err(Duration::from_secs_f64((1.0 - tokens) / self.per_second))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate() {
        let limiter = RateLimiter::new(&RateLimitConfig {
            per_second: 2.0,
            burst: 3,
        })
        .unwrap();
        let t0 = Instant::now();
        for _ in 0..3 {
            limiter.take_at(t0).unwrap();
        }
        let wait = limiter.take_at(t0).unwrap_err();
        assert!(wait > Duration::from_millis(400) && wait <= Duration::from_millis(500));
        limiter.take_at(t0 + Duration::from_millis(500)).unwrap();
        assert!(limiter.take_at(t0 + Duration::from_millis(500)).is_err());
        assert!(RateLimiter::new(&RateLimitConfig::default()).is_none());
    }
}
