//! The retry policy: which results are retried and how long to wait.

use std::time::SystemTime;

use crate::model::{Backoff, Envelope, Subscription};

/// How one attempt ended.
#[derive(Debug, PartialEq)]
pub(super) enum Outcome {
    Delivered,
    /// With the wait the endpoint asked for (`Retry-After`), if any.
    Retry {
        after_ms: Option<u64>,
    },
    Refused,
}

impl Outcome {
    /// What an HTTP answer means: any 2xx is delivered, a status the
    /// subscription retries is retried (honouring `Retry-After`), anything
    /// else (4xx, 3xx: redirects are not followed) is refused.
    pub(super) fn of_answer(
        sub: &Subscription,
        status: http::StatusCode,
        retry_after: Option<&http::HeaderValue>,
        now: SystemTime,
    ) -> Outcome {
        if status.is_success() {
            Outcome::Delivered
        } else if retried(sub, status.as_u16()) {
            Outcome::Retry {
                after_ms: retry_after
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| retry_after_ms(v, now)),
            }
        } else {
            Outcome::Refused
        }
    }
}

/// Whether `status` is retried for `sub`.
fn retried(sub: &Subscription, status: u16) -> bool {
    match &sub.retry.retry_statuses {
        Some(list) => list.iter().any(|m| m.matches(status)),
        // The bike-parking seed retries 5xx (and network errors) only.
        None if matches!(sub.envelope, Envelope::BikeepV2 | Envelope::BikeepV1) => {
            status / 100 == 5
        }
        None => status / 100 == 5 || status == 429 || status == 408,
    }
}

/// A `Retry-After` value as a wait: delay-seconds or an HTTP date.
pub(super) fn retry_after_ms(value: &str, now: SystemTime) -> Option<u64> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(seconds.saturating_mul(1000));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).map_or(0, |d| d.as_millis() as u64))
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
    use crate::model::StatusMatch;

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
    fn retried_statuses_follow_the_envelope_default_or_the_list() {
        let mut s = sub(RetryPolicy::default());
        s.envelope = Envelope::Plain;
        assert!([500, 503, 429, 408].iter().all(|&c| retried(&s, c)));
        assert!(![400, 404, 410, 301].iter().any(|&c| retried(&s, c)));
        s.envelope = Envelope::BikeepV2;
        assert!(
            retried(&s, 503) && !retried(&s, 429),
            "the seed retries 5xx only"
        );
        s.retry.retry_statuses = Some(vec![
            StatusMatch::Status(429),
            StatusMatch::Class("4xx".into()),
        ]);
        assert!(retried(&s, 429) && retried(&s, 404) && !retried(&s, 503));
    }

    #[test]
    fn retry_after_is_read_as_seconds_or_an_http_date() {
        let now = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_765_794_600);
        assert_eq!(retry_after_ms("30", now), Some(30_000));
        assert_eq!(retry_after_ms(" 0 ", now), Some(0));
        let later = httpdate::fmt_http_date(now + std::time::Duration::from_secs(90));
        assert_eq!(retry_after_ms(&later, now), Some(90_000));
        let past = httpdate::fmt_http_date(now - std::time::Duration::from_secs(90));
        assert_eq!(retry_after_ms(&past, now), Some(0));
        assert_eq!(retry_after_ms("soon", now), None);
        let mut s = sub(RetryPolicy::default());
        s.envelope = Envelope::Plain;
        let header = http::HeaderValue::from_static("2");
        assert_eq!(
            Outcome::of_answer(&s, http::StatusCode::TOO_MANY_REQUESTS, Some(&header), now),
            Outcome::Retry {
                after_ms: Some(2000)
            }
        );
        assert_eq!(
            Outcome::of_answer(&s, http::StatusCode::GONE, Some(&header), now),
            Outcome::Refused
        );
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
