//! The retry policy: which results are retried and how long to wait.

use std::time::SystemTime;

use crate::model::{Backoff, Subscription};

/// How one attempt ended.
pub(super) enum Outcome {
    Delivered,
    Retry,
    Refused,
}

impl Outcome {
    /// What an HTTP answer means: any 2xx is delivered, 5xx is retried,
    /// anything else (4xx, 3xx: redirects are not followed) is refused.
    pub(super) fn of_status(status: http::StatusCode) -> Outcome {
        if status.is_success() {
            Outcome::Delivered
        } else if status.is_server_error() {
            Outcome::Retry
        } else {
            Outcome::Refused
        }
    }
}

/// Wait before retry number `retry` (1-based).
pub(super) fn backoff_ms(sub: &Subscription, retry: u32) -> u64 {
    let policy = &sub.retry;
    match policy.backoff {
        Backoff::Fixed => policy.backoff_ms,
        Backoff::Exponential => {
            let base = policy
                .backoff_ms
                .saturating_mul(1u64 << (retry - 1).min(40))
                .min(policy.max_backoff_ms);
            // ±25 % jitter so retries of many jobs do not arrive in lockstep.
            let noise = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos() as u64);
            let span = base / 2;
            if span == 0 {
                base
            } else {
                base - base / 4 + noise % span
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::model::RetryPolicy;

    fn sub(retry: RetryPolicy) -> Subscription {
        let mut c = Config::parse(
            "[[subscriptions]]\nid = \"a\"\nurl = \"http://x\"\ntypes = [\"*\"]\nenvelope = \"plain\"\n",
        )
        .unwrap();
        let mut s = c.subscriptions.remove(0);
        s.retry = retry;
        s
    }

    #[test]
    fn fixed_backoff_is_the_configured_wait() {
        let s = sub(RetryPolicy::default());
        assert_eq!(
            (1..=3).map(|r| backoff_ms(&s, r)).collect::<Vec<_>>(),
            [100, 100, 100]
        );
    }

    #[test]
    fn exponential_backoff_doubles_with_jitter_and_a_cap() {
        let s = sub(RetryPolicy {
            backoff: Backoff::Exponential,
            backoff_ms: 1000,
            max_backoff_ms: 10_000,
            ..RetryPolicy::default()
        });
        for (retry, base) in [
            (1u32, 1000u64),
            (2, 2000),
            (3, 4000),
            (4, 8000),
            (5, 10_000),
            (30, 10_000),
        ] {
            for _ in 0..20 {
                let wait = backoff_ms(&s, retry);
                assert!(
                    wait >= base * 3 / 4 && wait < base * 5 / 4,
                    "retry {retry}: {wait} vs {base}"
                );
            }
        }
    }
}
