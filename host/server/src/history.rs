//! The last hour of the server's counters, for the dashboard's overview
//! charts: a sample every 10 s kept in memory (360 of them), turned into
//! per-second rates between samples. Nothing is stored; a restarted
//! server starts a new hour. The counters are the ones `/metrics` shows.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use hookhost_core::deliver::Deliverer;
use hookhost_core::metrics::METRICS;
use serde::Serialize;

/// Time between samples.
pub(crate) const EVERY: Duration = Duration::from_secs(10);
/// Samples kept: one hour.
const KEEP: usize = 360;

/// The counters at one moment.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sample {
    at_ms: u64,
    events_in: u64,
    delivered: u64,
    failed_attempts: u64,
    dead: u64,
    latency_sum_us: u64,
    latency_count: u64,
    queue_depth: usize,
    window_events: i64,
}

impl Sample {
    pub(crate) fn now(deliverer: &Deliverer) -> Sample {
        let (latency_sum_us, latency_count) = METRICS.attempt_latency_totals();
        Sample {
            at_ms: hookhost_core::clock::now_ms(),
            events_in: METRICS.events_ingested.load(Relaxed),
            delivered: METRICS.delivered.load(Relaxed),
            failed_attempts: METRICS.attempts_failed.load(Relaxed)
                + METRICS.attempts_refused.load(Relaxed),
            dead: METRICS.dead.load(Relaxed),
            latency_sum_us,
            latency_count,
            queue_depth: deliverer.queued(),
            window_events: METRICS.window_events.load(Relaxed),
        }
    }
}

/// One point of the charts: rates over the interval that ends at `at_ms`,
/// gauges at `at_ms`.
#[derive(Debug, Serialize, PartialEq, schemars::JsonSchema)]
pub(crate) struct Point {
    pub(crate) at_ms: u64,
    pub(crate) events_in_per_s: f64,
    pub(crate) delivered_per_s: f64,
    pub(crate) failed_attempts_per_s: f64,
    pub(crate) dead_per_s: f64,
    /// Mean latency of the attempts in the interval; `None` if there were none.
    pub(crate) mean_attempt_ms: Option<f64>,
    pub(crate) queue_depth: usize,
    pub(crate) window_events: i64,
}

fn point(from: &Sample, to: &Sample) -> Point {
    let seconds = (to.at_ms.saturating_sub(from.at_ms) as f64 / 1e3).max(1e-3);
    let rate = |a: u64, b: u64| b.saturating_sub(a) as f64 / seconds;
    let attempts = to.latency_count.saturating_sub(from.latency_count);
    Point {
        at_ms: to.at_ms,
        events_in_per_s: rate(from.events_in, to.events_in),
        delivered_per_s: rate(from.delivered, to.delivered),
        failed_attempts_per_s: rate(from.failed_attempts, to.failed_attempts),
        dead_per_s: rate(from.dead, to.dead),
        mean_attempt_ms: (attempts > 0).then(|| {
            to.latency_sum_us.saturating_sub(from.latency_sum_us) as f64 / attempts as f64 / 1e3
        }),
        queue_depth: to.queue_depth,
        window_events: to.window_events,
    }
}

#[derive(Default)]
pub(crate) struct History {
    samples: Mutex<VecDeque<Sample>>,
}

impl History {
    pub(crate) fn record(&self, sample: Sample) {
        let mut samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        if samples.len() == KEEP {
            samples.pop_front();
        }
        samples.push_back(sample);
    }

    /// The points between kept samples, then one from the last sample to
    /// `now` (so the page is current between samples).
    pub(crate) fn points(&self, now: Sample) -> Vec<Point> {
        let samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<Point> = samples
            .iter()
            .zip(samples.iter().skip(1))
            .map(|(a, b)| point(a, b))
            .collect();
        if let Some(last) = samples.back()
            && now.at_ms > last.at_ms
        {
            out.push(point(last, &now));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at_ms: u64, events_in: u64, latency: (u64, u64)) -> Sample {
        Sample {
            at_ms,
            events_in,
            delivered: events_in / 2,
            failed_attempts: 0,
            dead: 0,
            latency_sum_us: latency.0,
            latency_count: latency.1,
            queue_depth: 3,
            window_events: 1,
        }
    }

    #[test]
    fn points_are_rates_between_samples_and_the_last_runs_to_now() {
        let history = History::default();
        history.record(sample(0, 0, (0, 0)));
        history.record(sample(10_000, 100, (40_000, 4)));
        let points = history.points(sample(15_000, 150, (40_000, 4)));
        assert_eq!(points.len(), 2);
        assert_eq!(points[0].events_in_per_s, 10.0);
        assert_eq!(points[0].delivered_per_s, 5.0);
        assert_eq!(points[0].mean_attempt_ms, Some(10.0));
        assert_eq!((points[1].at_ms, points[1].events_in_per_s), (15_000, 10.0));
        assert_eq!(
            points[1].mean_attempt_ms, None,
            "no attempts in the interval"
        );
    }

    #[test]
    fn an_hour_is_kept() {
        let history = History::default();
        for i in 0..(KEEP as u64 + 10) {
            history.record(sample(i * 10_000, i, (0, 0)));
        }
        assert_eq!(history.points(sample(0, 0, (0, 0))).len(), KEEP - 1);
    }
}
