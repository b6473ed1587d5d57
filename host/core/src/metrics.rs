//! Counters for `GET /metrics` (OpenMetrics text, encoded by `prometheus-client`).
//!
//! Process-wide atomics, bumped where things happen (ingest, pipeline,
//! delivery, windows); gauges that other parts already know (queue depth,
//! plugin statistics, reloads) are read when the page is rendered.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::process_stats::Process;

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
    /// Events this node's pipeline ran and whose outcome it stored.
    pub pipeline_events: AtomicU64,
    /// Events a standby left to the leader: their outcome touches window,
    /// outage or ordering state, which only the leader writes.
    pub pipeline_handed_over: AtomicU64,
    /// Open API connections.
    pub connections_open: AtomicI64,
    /// Idle API connections closed to make room at the connection cap.
    pub connections_shed: AtomicU64,
    /// API connections answered 503 at the cap (none idle to close).
    pub connections_refused: AtomicU64,
    /// Ingest requests that waited for the backlog to shrink and were let in.
    pub ingest_backlog_waits: AtomicU64,
    /// Those whose wait ran out (`server.ingest_wait_ms`) first.
    pub ingest_backlog_waits_out: AtomicU64,
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
            pipeline_events: AtomicU64::new(0),
            ingest_backlog_waits: AtomicU64::new(0),
            ingest_backlog_waits_out: AtomicU64::new(0),
            pipeline_handed_over: AtomicU64::new(0),
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
#[derive(Debug)]
pub struct Snapshot {
    /// Deliveries waiting for an attempt or in one.
    pub queue_depth: usize,
    /// Of those, deliveries waiting a second or more for their next attempt.
    pub waiting_for_later: usize,
    /// Subscriptions whose endpoint hookhost disabled.
    pub endpoints_disabled: usize,
    /// Acknowledged work not yet started ([`crate::backlog`]).
    pub ingest_backlog: usize,
    /// (name, calls, errors, mean call seconds) per serving plugin.
    pub plugins: Vec<(String, u64, u64, f64)>,
    /// Each plugin with a candidate in shadow, and how they compared.
    pub shadows: Vec<(String, hookhost_plugin_runtime::ShadowReport)>,
    pub plugin_loads: u64,
    pub plugin_refusals: u64,
}

/// The content type of [`render`]'s page.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The page, in the OpenMetrics text format (which Prometheus reads), by
/// `prometheus-client`: the process counters and `snapshot` encoded at
/// scrape time by one collector. Counter names get their `_total` there.
pub fn render(snapshot: Snapshot) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape(snapshot)));
    let mut out = String::with_capacity(4096);
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    out
}

#[derive(Debug)]
struct Scrape(Snapshot);

/// A counter family's samples: labels and value.
type Rows<'a, const N: usize> = Vec<([(&'static str, &'a str); N], u64)>;

fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> fmt::Result {
    enc.encode_descriptor(name, help, None, MetricType::Counter)?
        .encode_counter::<NoLabelSet, _, u64>(&v, None)
}

fn counters<const N: usize>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: Rows<'_, N>,
) -> fmt::Result {
    let mut family = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in &rows {
        family
            .encode_family(labels)?
            .encode_counter::<NoLabelSet, _, u64>(v, None)?;
    }
    Ok(())
}

fn gauge(enc: &mut DescriptorEncoder, name: &str, help: &str, v: i64) -> fmt::Result {
    enc.encode_descriptor(name, help, None, MetricType::Gauge)?
        .encode_gauge(&v)
}

/// The standard process metrics (names as Prometheus's own clients give
/// them), where `/proc` can be read.
fn process_gauges(enc: &mut DescriptorEncoder) -> fmt::Result {
    let me = Process::Current;
    if let Some(kib) = me.rss_kib() {
        gauge(
            enc,
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            (kib * 1024) as i64,
        )?;
    }
    if let Some(ms) = me.cpu_ms() {
        enc.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds.",
            None,
            MetricType::Counter,
        )?
        .encode_counter::<NoLabelSet, _, u64>(&(ms as f64 / 1000.0), None)?;
    }
    if let Some(n) = me.open_files() {
        gauge(
            enc,
            "process_open_fds",
            "Number of open file descriptors.",
            n as i64,
        )?;
    }
    Ok(())
}

impl Collector for Scrape {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let (m, snapshot) = (&METRICS, &self.0);
        let load = |a: &AtomicU64| a.load(Relaxed);
        counter(
            &mut enc,
            "hookhost_events_ingested",
            "Events accepted (durably stored) by POST /v1/events.",
            load(&m.events_ingested),
        )?;
        counter(
            &mut enc,
            "hookhost_ingest_refused",
            "Ingest requests refused (4xx).",
            load(&m.ingest_refused),
        )?;
        gauge(
            &mut enc,
            "hookhost_ingest_backlog",
            "Acknowledged work not yet started: events queued for the pipeline and new deliveries due and waiting for a slot of an endpoint that keeps pace. Ingest waits at server.ingest_backlog.",
            snapshot.ingest_backlog as i64,
        )?;
        counters(
            &mut enc,
            "hookhost_ingest_backlog_waits",
            "Ingest requests that waited for the backlog to shrink: let in, or on after server.ingest_wait_ms.",
            vec![
                ([("ended", "let_in")], load(&m.ingest_backlog_waits)),
                ([("ended", "waited_out")], load(&m.ingest_backlog_waits_out)),
            ],
        )?;
        gauge(
            &mut enc,
            "hookhost_endpoints_disabled",
            "Subscriptions whose endpoint hookhost disabled (410 Gone or failing for days); see GET /v1/subscriptions/{id}.",
            snapshot.endpoints_disabled as i64,
        )?;
        gauge(
            &mut enc,
            "hookhost_api_connections",
            "Open connections to the HTTP API.",
            m.connections_open.load(Relaxed),
        )?;
        counters(
            &mut enc,
            "hookhost_api_connections_dropped",
            "API connections dropped at server.max_connections: shed (idle, closed for a new one) or refused (503).",
            vec![
                ([("how", "shed")], load(&m.connections_shed)),
                ([("how", "refused")], load(&m.connections_refused)),
            ],
        )?;
        counters(
            &mut enc,
            "hookhost_deliveries",
            "Deliveries finished, by outcome.",
            vec![
                ([("outcome", "delivered")], load(&m.delivered)),
                ([("outcome", "dead")], load(&m.dead)),
                ([("outcome", "plugin_error")], load(&m.plugin_errors)),
            ],
        )?;
        counters(
            &mut enc,
            "hookhost_attempts",
            "Delivery attempts, by outcome (ok: 2xx; failed: 5xx, network error or timeout, retried; refused: other statuses).",
            vec![
                ([("outcome", "ok")], load(&m.attempts_ok)),
                ([("outcome", "failed")], load(&m.attempts_failed)),
                ([("outcome", "refused")], load(&m.attempts_refused)),
            ],
        )?;
        // Per bucket (the encoder adds them up), then what no bound held.
        let count = load(&m.latency_count);
        let mut buckets: Vec<(f64, u64)> = LATENCY_BUCKETS
            .iter()
            .zip(&m.latency_buckets)
            .map(|(bound, n)| (*bound, load(n)))
            .collect();
        let bounded: u64 = buckets.iter().map(|b| b.1).sum();
        buckets.push((f64::INFINITY, count.saturating_sub(bounded)));
        enc.encode_descriptor(
            "hookhost_attempt_duration_seconds",
            "Time from sending a delivery attempt to its answer or failure.",
            None,
            MetricType::Histogram,
        )?
        .encode_histogram::<NoLabelSet>(
            load(&m.latency_sum_us) as f64 / 1e6,
            count,
            &buckets,
            None,
        )?;
        gauge(
            &mut enc,
            "hookhost_delivery_queue_depth",
            "Deliveries waiting for an attempt or in one.",
            snapshot.queue_depth as i64,
        )?;
        gauge(
            &mut enc,
            "hookhost_delivery_waiting_later",
            "Of the queue depth, deliveries waiting a second or more for their next attempt.",
            snapshot.waiting_for_later as i64,
        )?;
        gauge(
            &mut enc,
            "hookhost_window_events",
            "Events waiting in open aggregation windows.",
            m.window_events.load(Relaxed).max(0),
        )?;
        counter(
            &mut enc,
            "hookhost_windows_closed",
            "Aggregation windows closed into a delivery.",
            load(&m.windows_closed),
        )?;
        counter(
            &mut enc,
            "hookhost_outages_confirmed",
            "connection_confirmed events emitted.",
            load(&m.outages_confirmed),
        )?;
        counter(
            &mut enc,
            "hookhost_pipeline_events",
            "Events this node's pipeline ran and stored the outcome of.",
            load(&m.pipeline_events),
        )?;
        counter(
            &mut enc,
            "hookhost_pipeline_handed_over",
            "Events this standby left to the leader (windows, outages or ordering).",
            load(&m.pipeline_handed_over),
        )?;
        counters(
            &mut enc,
            "hookhost_retention_removed",
            "Records removed by retention, by kind (see [retention]).",
            ["delivered", "dead_letters", "events"]
                .iter()
                .zip(&m.retention_removed)
                .map(|(kind, v)| ([("kind", *kind)], load(v)))
                .collect(),
        )?;
        process_gauges(&mut enc)?;
        if m.stored_counted.load(Relaxed) {
            let mut family = enc.encode_descriptor(
                "hookhost_stored_records",
                "Records in the store, by kind, as last counted (every retention.count_every).",
                None,
                MetricType::Gauge,
            )?;
            for (kind, v) in ["events", "deliveries", "pending", "dead_letters"]
                .iter()
                .zip(&m.stored)
            {
                family
                    .encode_family(&[("kind", *kind)])?
                    .encode_gauge(&load(v))?;
            }
            enc.encode_descriptor(
                "hookhost_store_bytes",
                "Bytes the store takes on disk, as last counted.",
                None,
                MetricType::Gauge,
            )?
            .encode_gauge(&load(&m.stored[4]))?;
        }
        let plugins = &snapshot.plugins;
        counters(
            &mut enc,
            "hookhost_plugin_calls",
            "Calls into each serving plugin version.",
            plugins
                .iter()
                .map(|(name, calls, _, _)| ([("plugin", name.as_str())], *calls))
                .collect(),
        )?;
        counters(
            &mut enc,
            "hookhost_plugin_errors",
            "Failed calls (trap, limit, plugin error) per serving plugin version.",
            plugins
                .iter()
                .map(|(name, _, errors, _)| ([("plugin", name.as_str())], *errors))
                .collect(),
        )?;
        counters(
            &mut enc,
            "hookhost_plugin_shadow",
            "Calls of a candidate version in shadow, by how its answer compared with the serving one.",
            snapshot
                .shadows
                .iter()
                .flat_map(|(name, report)| {
                    [
                        ("agreed", report.agreed),
                        ("disagreed", report.disagreed),
                        ("candidate_error", report.candidate_errors),
                    ]
                    .map(|(outcome, n)| ([("plugin", name.as_str()), ("outcome", outcome)], n))
                })
                .collect(),
        )?;
        let mut means = enc.encode_descriptor(
            "hookhost_plugin_call_mean_seconds",
            "Mean call time per serving plugin version.",
            None,
            MetricType::Gauge,
        )?;
        for (name, _, _, mean) in plugins {
            means
                .encode_family(&[("plugin", name.as_str())])?
                .encode_gauge(mean)?;
        }
        counters(
            &mut enc,
            "hookhost_plugin_reloads",
            "Plugin loads, by result.",
            vec![
                ([("result", "loaded")], snapshot.plugin_loads),
                ([("result", "refused")], snapshot.plugin_refusals),
            ],
        )
    }
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
    fn the_page_keeps_the_names_and_escapes_label_values() {
        let page = render(Snapshot {
            queue_depth: 3,
            ingest_backlog: 0,
            waiting_for_later: 2,
            endpoints_disabled: 0,
            plugins: vec![("a\"b\\c\nd".into(), 7, 1, 0.5)],
            shadows: Vec::new(),
            plugin_loads: 2,
            plugin_refusals: 0,
        });
        for line in [
            "hookhost_delivery_queue_depth 3",
            "hookhost_delivery_waiting_later 2",
            "hookhost_plugin_reloads_total{result=\"loaded\"} 2",
            "hookhost_plugin_calls_total{plugin=\"a\\\"b\\\\c\\nd\"} 7",
            "# TYPE hookhost_attempt_duration_seconds histogram",
            "# TYPE process_resident_memory_bytes gauge",
            "# TYPE process_cpu_seconds counter",
            "# TYPE process_open_fds gauge",
            "# EOF",
        ] {
            assert!(page.lines().any(|l| l == line), "{line:?} not in\n{page}");
        }
        assert!(
            page.lines()
                .any(|l| l.starts_with("hookhost_attempt_duration_seconds_bucket{le=\"+Inf\"} ")),
            "{page}"
        );
    }
}
