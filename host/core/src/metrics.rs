//! Counters for `GET /metrics` (Prometheus text format, version 0.0.4).
//!
//! Process-wide atomics, bumped where things happen (ingest, pipeline,
//! delivery, windows); gauges that other parts already know (queue depth,
//! plugin statistics, reloads) are read when the page is rendered.

use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};

/// Upper bounds (seconds) of the attempt-latency histogram's buckets.
const LATENCY_BUCKETS: [f64; 11] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

pub struct Metrics {
    pub events_ingested: AtomicU64,
    pub ingest_refused: AtomicU64,
    pub delivered: AtomicU64,
    pub dead: AtomicU64,
    pub plugin_errors: AtomicU64,
    pub attempts_ok: AtomicU64,
    pub attempts_failed: AtomicU64,
    pub attempts_refused: AtomicU64,
    latency_buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    latency_sum_us: AtomicU64,
    latency_count: AtomicU64,
    /// Events waiting in open windows.
    pub window_events: AtomicI64,
    pub windows_closed: AtomicU64,
    pub outages_confirmed: AtomicU64,
    /// Open API connections.
    pub connections_open: AtomicI64,
    /// Idle API connections closed to make room at the connection cap.
    pub connections_shed: AtomicU64,
    /// API connections answered 503 at the cap (none idle to close).
    pub connections_refused: AtomicU64,
    /// Records removed by retention: delivered, dead letters, events.
    pub retention_removed: [AtomicU64; 3],
    /// What is stored, as last counted (shown once `stored_counted`):
    /// events, deliveries, pending, dead letters, bytes on disk.
    pub stored: [AtomicU64; 5],
    pub stored_counted: AtomicBool,
}

pub static METRICS: Metrics = Metrics::new();

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub const fn new() -> Metrics {
        Metrics {
            events_ingested: AtomicU64::new(0),
            ingest_refused: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            dead: AtomicU64::new(0),
            plugin_errors: AtomicU64::new(0),
            attempts_ok: AtomicU64::new(0),
            attempts_failed: AtomicU64::new(0),
            attempts_refused: AtomicU64::new(0),
            latency_buckets: [const { AtomicU64::new(0) }; LATENCY_BUCKETS.len()],
            latency_sum_us: AtomicU64::new(0),
            latency_count: AtomicU64::new(0),
            window_events: AtomicI64::new(0),
            windows_closed: AtomicU64::new(0),
            outages_confirmed: AtomicU64::new(0),
            connections_open: AtomicI64::new(0),
            connections_shed: AtomicU64::new(0),
            connections_refused: AtomicU64::new(0),
            retention_removed: [const { AtomicU64::new(0) }; 3],
            stored: [const { AtomicU64::new(0) }; 5],
            stored_counted: AtomicBool::new(false),
        }
    }

    /// Attempt latencies observed so far: (sum in µs, count).
    pub fn attempt_latency_totals(&self) -> (u64, u64) {
        (
            self.latency_sum_us.load(Relaxed),
            self.latency_count.load(Relaxed),
        )
    }

    pub fn observe_attempt_latency(&self, seconds: f64) {
        for (bound, bucket) in LATENCY_BUCKETS.iter().zip(&self.latency_buckets) {
            if seconds <= *bound {
                bucket.fetch_add(1, Relaxed);
                break;
            }
        }
        self.latency_sum_us
            .fetch_add((seconds * 1e6) as u64, Relaxed);
        self.latency_count.fetch_add(1, Relaxed);
    }
}

/// What the page needs from outside this module.
pub struct Snapshot {
    /// Deliveries waiting for an attempt or in one.
    pub queue_depth: usize,
    /// Subscriptions whose endpoint hookhost disabled.
    pub endpoints_disabled: usize,
    /// (name, calls, errors, mean call seconds) per serving plugin.
    pub plugins: Vec<(String, u64, u64, f64)>,
    /// Each plugin with a candidate in shadow, and how they compared.
    pub shadows: Vec<(String, hookhost_plugin_runtime::ShadowReport)>,
    pub plugin_loads: u64,
    pub plugin_refusals: u64,
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Escapes a label value (backslash, quote, newline).
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

pub fn render(snapshot: &Snapshot) -> String {
    let m = &METRICS;
    let mut out = String::with_capacity(4096);
    family(
        &mut out,
        "hookhost_events_ingested_total",
        "counter",
        "Events accepted (durably stored) by POST /v1/events.",
    );
    let _ = writeln!(
        out,
        "hookhost_events_ingested_total {}",
        m.events_ingested.load(Relaxed)
    );
    family(
        &mut out,
        "hookhost_ingest_refused_total",
        "counter",
        "Ingest requests refused (4xx).",
    );
    let _ = writeln!(
        out,
        "hookhost_ingest_refused_total {}",
        m.ingest_refused.load(Relaxed)
    );

    family(
        &mut out,
        "hookhost_endpoints_disabled",
        "gauge",
        "Subscriptions whose endpoint hookhost disabled (410 Gone or failing for days); see GET /v1/subscriptions/{id}.",
    );
    let _ = writeln!(
        out,
        "hookhost_endpoints_disabled {}",
        snapshot.endpoints_disabled
    );
    family(
        &mut out,
        "hookhost_api_connections",
        "gauge",
        "Open connections to the HTTP API.",
    );
    let _ = writeln!(
        out,
        "hookhost_api_connections {}",
        m.connections_open.load(Relaxed)
    );
    family(
        &mut out,
        "hookhost_api_connections_dropped_total",
        "counter",
        "API connections dropped at server.max_connections: shed (idle, closed for a new one) or refused (503).",
    );
    for (how, v) in [
        ("shed", &m.connections_shed),
        ("refused", &m.connections_refused),
    ] {
        let _ = writeln!(
            out,
            "hookhost_api_connections_dropped_total{{how=\"{how}\"}} {}",
            v.load(Relaxed)
        );
    }

    family(
        &mut out,
        "hookhost_deliveries_total",
        "counter",
        "Deliveries finished, by outcome.",
    );
    for (outcome, v) in [
        ("delivered", &m.delivered),
        ("dead", &m.dead),
        ("plugin_error", &m.plugin_errors),
    ] {
        let _ = writeln!(
            out,
            "hookhost_deliveries_total{{outcome=\"{outcome}\"}} {}",
            v.load(Relaxed)
        );
    }
    family(
        &mut out,
        "hookhost_attempts_total",
        "counter",
        "Delivery attempts, by outcome (ok: 2xx; failed: 5xx, network error or timeout, retried; refused: other statuses).",
    );
    for (outcome, v) in [
        ("ok", &m.attempts_ok),
        ("failed", &m.attempts_failed),
        ("refused", &m.attempts_refused),
    ] {
        let _ = writeln!(
            out,
            "hookhost_attempts_total{{outcome=\"{outcome}\"}} {}",
            v.load(Relaxed)
        );
    }
    family(
        &mut out,
        "hookhost_attempt_duration_seconds",
        "histogram",
        "Time from sending a delivery attempt to its answer or failure.",
    );
    let mut cumulative = 0;
    for (bound, bucket) in LATENCY_BUCKETS.iter().zip(&m.latency_buckets) {
        cumulative += bucket.load(Relaxed);
        let _ = writeln!(
            out,
            "hookhost_attempt_duration_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
        );
    }
    let count = m.latency_count.load(Relaxed);
    let _ = writeln!(
        out,
        "hookhost_attempt_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
    );
    let _ = writeln!(
        out,
        "hookhost_attempt_duration_seconds_sum {}",
        m.latency_sum_us.load(Relaxed) as f64 / 1e6
    );
    let _ = writeln!(out, "hookhost_attempt_duration_seconds_count {count}");

    family(
        &mut out,
        "hookhost_delivery_queue_depth",
        "gauge",
        "Deliveries waiting for an attempt or in one.",
    );
    let _ = writeln!(
        out,
        "hookhost_delivery_queue_depth {}",
        snapshot.queue_depth
    );
    family(
        &mut out,
        "hookhost_window_events",
        "gauge",
        "Events waiting in open aggregation windows.",
    );
    let _ = writeln!(
        out,
        "hookhost_window_events {}",
        m.window_events.load(Relaxed).max(0)
    );
    family(
        &mut out,
        "hookhost_windows_closed_total",
        "counter",
        "Aggregation windows closed into a delivery.",
    );
    let _ = writeln!(
        out,
        "hookhost_windows_closed_total {}",
        m.windows_closed.load(Relaxed)
    );
    family(
        &mut out,
        "hookhost_outages_confirmed_total",
        "counter",
        "connection_confirmed events emitted.",
    );
    let _ = writeln!(
        out,
        "hookhost_outages_confirmed_total {}",
        m.outages_confirmed.load(Relaxed)
    );

    family(
        &mut out,
        "hookhost_retention_removed_total",
        "counter",
        "Records removed by retention, by kind (see [retention]).",
    );
    for (kind, v) in ["delivered", "dead_letters", "events"]
        .iter()
        .zip(&m.retention_removed)
    {
        let _ = writeln!(
            out,
            "hookhost_retention_removed_total{{kind=\"{kind}\"}} {}",
            v.load(Relaxed)
        );
    }
    if m.stored_counted.load(Relaxed) {
        family(
            &mut out,
            "hookhost_stored_records",
            "gauge",
            "Records in the store, by kind, as last counted (every retention.count_every).",
        );
        for (kind, v) in ["events", "deliveries", "pending", "dead_letters"]
            .iter()
            .zip(&m.stored)
        {
            let _ = writeln!(
                out,
                "hookhost_stored_records{{kind=\"{kind}\"}} {}",
                v.load(Relaxed)
            );
        }
        family(
            &mut out,
            "hookhost_store_bytes",
            "gauge",
            "Bytes the store takes on disk, as last counted.",
        );
        let _ = writeln!(out, "hookhost_store_bytes {}", m.stored[4].load(Relaxed));
    }

    family(
        &mut out,
        "hookhost_plugin_calls_total",
        "counter",
        "Calls into each serving plugin version.",
    );
    for (name, calls, _, _) in &snapshot.plugins {
        let _ = writeln!(
            out,
            "hookhost_plugin_calls_total{{plugin=\"{}\"}} {calls}",
            label(name)
        );
    }
    family(
        &mut out,
        "hookhost_plugin_errors_total",
        "counter",
        "Failed calls (trap, limit, plugin error) per serving plugin version.",
    );
    for (name, _, errors, _) in &snapshot.plugins {
        let _ = writeln!(
            out,
            "hookhost_plugin_errors_total{{plugin=\"{}\"}} {errors}",
            label(name)
        );
    }
    family(
        &mut out,
        "hookhost_plugin_shadow_total",
        "counter",
        "Calls of a candidate version in shadow, by how its answer compared with the serving one.",
    );
    for (name, report) in &snapshot.shadows {
        for (outcome, n) in [
            ("agreed", report.agreed),
            ("disagreed", report.disagreed),
            ("candidate_error", report.candidate_errors),
        ] {
            let _ = writeln!(
                out,
                "hookhost_plugin_shadow_total{{plugin=\"{}\",outcome=\"{outcome}\"}} {n}",
                label(name)
            );
        }
    }
    family(
        &mut out,
        "hookhost_plugin_call_mean_seconds",
        "gauge",
        "Mean call time per serving plugin version.",
    );
    for (name, _, _, mean) in &snapshot.plugins {
        let _ = writeln!(
            out,
            "hookhost_plugin_call_mean_seconds{{plugin=\"{}\"}} {mean}",
            label(name)
        );
    }
    family(
        &mut out,
        "hookhost_plugin_reloads_total",
        "counter",
        "Plugin loads, by result.",
    );
    let _ = writeln!(
        out,
        "hookhost_plugin_reloads_total{{result=\"loaded\"}} {}",
        snapshot.plugin_loads
    );
    let _ = writeln!(
        out,
        "hookhost_plugin_reloads_total{{result=\"refused\"}} {}",
        snapshot.plugin_refusals
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::new();
        m.observe_attempt_latency(0.003);
        m.observe_attempt_latency(0.2);
        m.observe_attempt_latency(9.0);
        let counts: Vec<u64> = m.latency_buckets.iter().map(|b| b.load(Relaxed)).collect();
        // 0.003 s in the 0.005 bucket, 0.2 s in 0.25, 9 s only in +Inf.
        assert_eq!(counts[2], 1);
        assert_eq!(counts[7], 1);
        assert_eq!(counts.iter().sum::<u64>(), 2);
        assert_eq!(m.latency_count.load(Relaxed), 3);
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
