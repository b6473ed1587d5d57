//! Crash safety: 10,000 events acknowledged, `kill -9` of the host while it
//! delivers them, restart on the same data: every acknowledged event reaches
//! the receiver at least once. And a `kill -9` right after the
//! acknowledgements, while the events are held by the intake only (the
//! journal; on PostgreSQL, rows marked as not through the pipeline). With
//! `HOOKHOST_TEST_STORE=postgres` both run on PostgreSQL.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use hookhost_tests::http::{Answer, Receiver, post_events};
use hookhost_tests::{Running, built_plugin};
use serde_json::json;

/// How long to wait for what should happen soon (see `PATIENCE`).
const WAIT: Duration = hookhost_tests::PATIENCE;

/// Posts `batches` arrays of 100 `report` events; returns the acknowledged ids.
fn post_reports(api: std::net::SocketAddr, batches: usize) -> Vec<String> {
    let mut acknowledged = Vec::with_capacity(batches * 100);
    for batch in 0..batches {
        let events: Vec<_> = (0..100)
            .map(|i| json!({"type": "report", "data": {"n": batch * 100 + i}}))
            .collect();
        let answer = post_events(api, events);
        for id in answer["ids"].as_array().unwrap() {
            acknowledged.push(id.as_str().unwrap().to_string());
        }
    }
    acknowledged
}

#[test]
fn kill_9_during_delivery_loses_no_acknowledged_event() {
    let receiver = Receiver::start();
    // A slow-ish endpoint with few connections keeps delivery going long
    // enough to be interrupted.
    receiver.script("sink", Answer::Slow(Duration::from_millis(5), 200));
    let root = tempfile::tempdir().unwrap();
    let config = hookhost_tests::write_config(
        root.path(),
        "",
        "",
        &format!(
            "[[subscriptions]]\nid = \"sink\"\nurl = \"{}\"\ntypes = [\"*\"]\nenvelope = \"plain\"\nmax_in_flight = 4\n",
            receiver.url("sink")
        ),
    );
    let config = config.as_str();

    let mut server = Running::start(&["serve", "--config", config]);
    let api = server.api_addr(WAIT);
    let acknowledged = post_reports(api, 100);
    assert_eq!(acknowledged.len(), 10_000);
    receiver.wait_count("sink", 1_000, WAIT);
    server.kill9();
    let before_crash = receiver.count("sink");
    assert!(
        before_crash < 10_000,
        "the crash came after every delivery ({before_crash}); nothing was tested"
    );

    let mut server = Running::start(&["serve", "--config", config]);
    server.api_addr(WAIT);
    let expected: HashSet<String> = acknowledged
        .iter()
        .map(|id| hookhost_tests::delivery_id(id, "sink"))
        .collect();
    let start = Instant::now();
    let seen = loop {
        let seen: HashMap<String, usize> =
            receiver.received().iter().fold(HashMap::new(), |mut m, r| {
                *m.entry(r.headers["webhook-id"].clone()).or_default() += 1;
                m
            });
        if expected.iter().all(|id| seen.contains_key(id)) {
            break seen;
        }
        let missing = expected.iter().filter(|id| !seen.contains_key(*id)).count();
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "{missing} acknowledged events never arrived"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(server.terminate(WAIT).success());
    let total: usize = seen.values().sum();
    let duplicates = total - expected.len();
    assert!(
        seen.keys().all(|id| expected.contains(id)),
        "a delivery nobody sent arrived"
    );
    println!(
        "crash test: {before_crash} deliveries before kill -9; after restart all 10000 events \
         arrived; {total} requests in all, {duplicates} duplicates"
    );
}

/// Acknowledged events that the pipeline has not stored yet are held only
/// by the intake (the journal, or their rows on PostgreSQL); a slow plugin
/// keeps the pipeline behind so the kill comes then. After the restart
/// those events run and arrive.
#[test]
fn kill_9_before_the_pipeline_stored_acknowledged_events_runs_them_after_restart() {
    let receiver = Receiver::start();
    let root = tempfile::tempdir().unwrap();
    let config = hookhost_tests::write_config(
        root.path(),
        "",
        "",
        &format!(
            "cpu_limit_ms = 2000\ncall_timeout_ms = 5000\n\
             [[subscriptions]]\nid = \"sink\"\nurl = \"{}\"\ntypes = [\"*\"]\nenvelope = \"plain\"\n\
             [[subscriptions.plugins]]\nplugin = \"misbehave\"\nconfig = \"spin:5000000\"\n",
            receiver.url("sink")
        ),
    );
    std::fs::copy(
        built_plugin("misbehave"),
        root.path().join("plugins/misbehave.wasm"),
    )
    .unwrap();
    let config = config.as_str();

    let mut server = Running::start(&["serve", "--config", config]);
    let api = server.api_addr(WAIT);
    let acknowledged = post_reports(api, 3);
    server.kill9();
    let before_crash = receiver.count("sink");

    let mut server = Running::start(&["serve", "--config", config]);
    let line = server.wait_for(&["resuming unfinished work"], WAIT);
    let replayed: usize = line
        .split("events=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no event count in {line:?}"));
    assert!(
        replayed > 0,
        "the pipeline had stored every event before the kill ({before_crash} delivered); \
         the intake was not needed: {line}"
    );
    let expected: HashSet<String> = acknowledged
        .iter()
        .map(|id| hookhost_tests::delivery_id(id, "sink"))
        .collect();
    let start = Instant::now();
    loop {
        let seen: HashSet<String> = receiver
            .received()
            .iter()
            .map(|r| r.headers["webhook-id"].clone())
            .collect();
        let missing = expected.iter().filter(|id| !seen.contains(*id)).count();
        if missing == 0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{missing} acknowledged events never arrived ({replayed} run again after the restart)"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(server.terminate(WAIT).success());
    println!(
        "intake crash test: 300 acknowledged, {before_crash} delivered before kill -9, \
         {replayed} run again after the restart, all 300 arrived"
    );
}
