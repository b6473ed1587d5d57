//! Aggregation benchmark (a load tool, not a timed test): events/s through
//! the worker (pipeline without plugins → window placement → sled batch)
//! with 100,000 open groups, the memory it takes, and the cost of closing
//! them all at once. A simulated clock keeps every event in one window.
//! Method and figures: BENCHMARKS.md. `BENCH_QUICK=1` uses 10,000 groups;
//! `BENCH_CACHE_MIB=N` sets sled's page cache (default: the server's default).

use std::sync::Arc;
use std::time::{Duration, Instant};

use hookhost_core::clock::ManualClock;
use hookhost_core::config::Config;
use hookhost_core::model::StoredEvent;
use hookhost_core::node::Node;
use hookhost_core::store::sled::DEFAULT_CACHE_MIB;
use hookhost_core::worker::Worker;
use hookhost_plugin_runtime::{Registry, Runtime};

mod common;
use common::rss_mib;

fn dir_mib(path: &std::path::Path) -> f64 {
    common::dir_bytes(path) as f64 / 1048576.0
}

/// The seed's alarm (~560 bytes of data) at `location`.
fn alarm(n: u64, location: u64, received_at_ms: u64) -> StoredEvent {
    let data = serde_json::json!({
        "type": "alarm",
        "location_id": format!("loc-{location:06}"),
        "location_name": "#1234 Office Building A",
        "location_address": "123 Main Street",
        "location_code": "#1234",
        "location_coordinates": {"latitude": 59.42776, "longitude": 24.81521},
        "location_status": "LAUNCHED",
        "alarm_reason": "wire_cut",
        "alarm_category": "security",
        "timestamp": "2025-12-15T10:35:00Z",
        "devices": [{"device_id": format!("dev-{n}"), "device_nr": "1"}]
    });
    StoredEvent {
        id: format!("evt_{n:012}"),
        event_type: "alarm".into(),
        timestamp: "2025-12-15T10:35:00Z".into(),
        data: data.to_string(),
        received_at_ms,
        errors: Vec::new(),
        plugin_decisions: Default::default(),
    }
}

fn feed(worker: &Worker, from: u64, count: u64, groups: u64, at_ms: u64) -> f64 {
    let start = Instant::now();
    let mut n = from;
    while n < from + count {
        let batch: Vec<StoredEvent> = (n..(n + 1000).min(from + count))
            .map(|i| alarm(i, i % groups, at_ms))
            .collect();
        n += batch.len() as u64;
        let jobs = worker.process(batch);
        assert!(jobs.is_empty(), "alarms are windowed, not sent");
    }
    count as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let groups: u64 = if std::env::var_os("BENCH_QUICK").is_some() {
        10_000
    } else {
        100_000
    };
    let dir = tempfile::tempdir().unwrap();
    let config = Arc::new(
        Config::parse(
            r#"
[[subscriptions]]
id = "customer"
url = "http://hooks.example.com/"
types = ["*"]
seed = "s"
[aggregation.types.alarm]
interval = "1h"
"#,
        )
        .unwrap(),
    );
    let cache_mib: u64 = std::env::var("BENCH_CACHE_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CACHE_MIB);
    let mut config = config;
    let settings = Arc::make_mut(&mut config);
    settings.server.data_dir = dir.path().to_owned();
    settings.server.cache_mib = cache_mib;
    // Just after an hour boundary: every event falls in one window.
    let t0 = 1_765_796_400_000 + 1_000; // 2025-12-15T11:00:01Z
    let clock = Arc::new(ManualClock::new(t0));
    let registry = Registry::new(Runtime::new(&config.plugins).unwrap());
    let node = Node::open_with_clock(config, registry, clock.clone()).unwrap();
    let (worker, store) = (node.worker.clone(), node.store.clone());

    let rss_start = rss_mib();
    println!(
        "aggregation with {groups} open groups (one subscription, 1 h alarm window, sled cache {cache_mib} MiB)"
    );
    println!("  RSS at start: {rss_start:.0} MiB");
    let open_rate = feed(&worker, 0, groups, groups, t0);
    println!(
        "  opening {groups} groups (1 event each): {open_rate:.0} events/s; RSS {:.0} MiB",
        rss_mib()
    );
    let more = 2 * groups;
    let join_rate = feed(&worker, groups, more, groups, t0 + 10);
    println!(
        "  {more} more events into the open groups: {join_rate:.0} events/s; RSS {:.0} MiB",
        rss_mib()
    );
    store.flush().unwrap();
    println!("  sled on disk after flush: {:.0} MiB", dir_mib(dir.path()));

    clock.advance(Duration::from_secs(3600));
    let start = Instant::now();
    let jobs = worker.tick().unwrap();
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(jobs.len() as u64, groups, "one delivery per group");
    assert!(jobs.iter().all(|j| j.merged_events.len() == 3));
    println!(
        "  closing all {groups} windows ({} events merged): {secs:.2} s = {:.0} groups/s; RSS {:.0} MiB",
        3 * groups,
        groups as f64 / secs,
        rss_mib()
    );
}
