//! A subscription's rate limit: a token bucket. Each attempt takes a token;
//! one that finds none waits for its turn. Turns are handed out in order
//! (the count may go below zero), so waiting attempts never race each
//! other, and other subscriptions never wait on this one.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::model::RateLimit;

pub(super) struct TokenBucket {
    per_second: f64,
    burst: f64,
    /// Tokens at `at` (negative: turns already promised).
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    pub(super) fn new(limit: &RateLimit) -> TokenBucket {
        let burst = f64::from(limit.burst);
        TokenBucket {
            per_second: limit.per_second,
            burst,
            state: Mutex::new((burst, Instant::now())),
        }
    }

    /// Takes a turn; returns how long to wait before using it.
    pub(super) fn take(&self, now: Instant) -> Duration {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (tokens, at) = *state;
        let refilled = (tokens + now.saturating_duration_since(at).as_secs_f64() * self.per_second)
            .min(self.burst);
        let left = refilled - 1.0;
        *state = (left, now);
        if left >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-left / self.per_second)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turns_are_spaced_by_the_rate_after_the_burst() {
        let bucket = TokenBucket::new(&RateLimit {
            per_second: 10.0,
            burst: 2,
        });
        let t0 = Instant::now();
        let waits: Vec<u128> = (0..5).map(|_| bucket.take(t0).as_millis()).collect();
        assert_eq!(waits, [0, 0, 100, 200, 300]);
        // 0.8 s later the promised turns (up to 0.3 s) are used and the
        // bucket is full again: a burst of two, then spacing.
        let later = t0 + Duration::from_millis(800);
        let waits: Vec<u128> = (0..3).map(|_| bucket.take(later).as_millis()).collect();
        assert_eq!(waits, [0, 0, 100]);
    }
}
