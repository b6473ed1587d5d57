//! Aggregation windows and derived outage events end to end: the real
//! binary, a real receiver, windows of seconds instead of minutes (the
//! intervals are configuration; hour-long clocks are simulated in the unit
//! tests of `host/src/worker.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hookhost_tests::http::{Receiver, post, request};
use hookhost_tests::{Running, bikeep_sample, built_plugin, run_verifier, save_deliveries};
use serde_json::{Value, json};

/// How long to wait for what should happen soon (see `PATIENCE`).
const WAIT: Duration = hookhost_tests::PATIENCE;
const SEED: &str = "window-seed";

fn write_config(root: &Path, url: &str, aggregation: &str) -> String {
    hookhost_tests::write_config(
        root,
        "",
        "shutdown_grace_ms = 3000\n",
        &format!(
            "[[subscriptions]]\nid = \"sink\"\nurl = \"{url}\"\ntypes = [\"*\"]\nseed = \"{SEED}\"\n{aggregation}\n"
        ),
    )
}

use hookhost_tests::seed_event as event;

fn device(id: &str) -> Value {
    json!({"device_id": id, "device_nr": id})
}

fn device_ids(body: &Value) -> Vec<String> {
    body["data"]["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["device_id"].as_str().unwrap().to_string())
        .collect()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Sleeps until just after the next multiple of `window` (wall clock), so a
/// test's posts fall early in one window rather than across two.
fn wait_for_window_start(window: Duration) {
    let w = window.as_millis() as u64;
    let left = w - now_ms() % w;
    std::thread::sleep(Duration::from_millis(left + 50));
}

fn post_events(api: std::net::SocketAddr, events: &[Value]) {
    let (status, answer) = post(
        api,
        "/v1/events",
        Value::Array(events.to_vec()).to_string().as_bytes(),
    );
    assert_eq!(status, 202, "{answer}");
}

#[test]
fn bursts_become_one_delivery_per_location_and_window() {
    let receiver = Receiver::start();
    let root = tempfile::tempdir().unwrap();
    // A second customer wants security alarms only: its filter runs before
    // aggregation, so its merged deliveries hold only what the filter kept.
    std::fs::create_dir_all(root.path().join("plugins")).unwrap();
    std::fs::copy(
        built_plugin("alarm-filter"),
        root.path().join("plugins/alarm-filter.wasm"),
    )
    .unwrap();
    let config = write_config(
        root.path(),
        &receiver.url("sink"),
        &format!(
            "[aggregation.types.connection]\ninterval = \"2s\"\n[aggregation.types.alarm]\ninterval = \"2s\"\n\
             [[subscriptions]]\nid = \"security-only\"\nurl = \"{}\"\ntypes = [\"alarm\"]\nseed = \"{SEED}\"\n\
             [[subscriptions.plugins]]\nplugin = \"alarm-filter\"\nconfig = {{ categories = [\"security\"] }}\n",
            receiver.url("security-only")
        ),
    );
    let mut server = Running::start(&["serve", "--config", &config]);
    let api = server.api_addr(WAIT);

    // 50 flapping connection events over 3 locations; the final state per
    // location is that of its event with the latest timestamp.
    let mut connections = Vec::new();
    let mut expected: BTreeMap<String, (String, BTreeSet<String>)> = BTreeMap::new();
    for i in 0..50 {
        let location = format!("loc-{}", i % 3);
        let state = if i % 2 == 0 { "offline" } else { "online" };
        let dev = format!("{location}-dev-{}", i % 4);
        connections.push(event(
            "connection",
            &location,
            json!({
                "connection": state,
                "timestamp": format!("2025-12-15T10:30:{i:02}Z"),
                "devices": [device(&dev)],
            }),
        ));
        let entry = expected.entry(location).or_default();
        entry.0 = state.to_string();
        entry.1.insert(dev);
    }
    // Sent newest first: the final state is chosen by timestamp, not arrival.
    connections.reverse();
    // 1,000 alarms over 10 locations, every other one technical, and direct
    // types alongside.
    let alarms: Vec<Value> = (0..1000)
        .map(|i| {
            event(
                if i % 2 == 0 {
                    "alarm-wire-cut"
                } else {
                    "alarm-low-voltage"
                },
                &format!("alarm-loc-{}", (i / 2) % 10),
                json!({"devices": [device(&format!("alarm-dev-{i}"))]}),
            )
        })
        .collect();
    let direct = [bikeep_sample("report"), bikeep_sample("maintenance_log")];

    wait_for_window_start(Duration::from_secs(2));
    post_events(api, &connections);
    post_events(api, &alarms);
    post_events(api, &direct);

    // 2 direct + 3 connection windows + 10 alarm windows, and nothing more.
    receiver.wait_count("sink", 15, WAIT);
    std::thread::sleep(Duration::from_millis(2500));
    let bodies = receiver.bodies("sink");
    let of_type = |t: &str| -> Vec<&Value> { bodies.iter().filter(|b| b["type"] == t).collect() };
    assert_eq!(bodies.len(), 15, "{bodies:#?}");
    assert_eq!(of_type("report").len(), 1);
    assert_eq!(of_type("maintenance_log").len(), 1);

    let connection = of_type("connection");
    assert_eq!(connection.len(), 3);
    for body in connection {
        let location = body["data"]["location_id"].as_str().unwrap();
        let (state, devices) = &expected[location];
        assert_eq!(body["data"]["connection"], state.as_str(), "{location}");
        let got: BTreeSet<String> = device_ids(body).into_iter().collect();
        assert_eq!(&got, devices, "{location}");
        assert_eq!(body["data"]["type"], "connection_changed");
    }

    let alarm = of_type("alarm");
    assert_eq!(alarm.len(), 10);
    let mut all_devices = BTreeSet::new();
    for body in &alarm {
        let ids = device_ids(body);
        assert_eq!(ids.len(), 100, "each location had 100 alarms");
        all_devices.extend(ids);
    }
    assert_eq!(all_devices.len(), 1000);

    receiver.wait_count("security-only", 10, WAIT);
    let filtered = receiver.bodies("security-only");
    assert_eq!(filtered.len(), 10, "{filtered:#?}");
    let mut kept = BTreeSet::new();
    for body in &filtered {
        assert_eq!(body["data"]["alarm_category"], "security");
        let ids = device_ids(body);
        assert_eq!(ids.len(), 50, "only the security half was merged");
        kept.extend(ids);
    }
    // Exactly the wire_cut alarms (even numbers) survived the filter.
    let expected: BTreeSet<String> = (0..1000)
        .step_by(2)
        .map(|i| format!("alarm-dev-{i}"))
        .collect();
    assert_eq!(kept, expected);

    // Merged deliveries carry a hash the seed's own verifiers accept.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sink.jsonl");
    save_deliveries(&receiver, "sink", &file);
    run_verifier("python3", "bikeep_verify.py", SEED, &file);
    run_verifier("node", "bikeep_verify.js", SEED, &file);
    let status = server.terminate(WAIT);
    assert!(status.success());
}

#[test]
fn direct_types_are_not_held_back_by_open_windows() {
    let receiver = Receiver::start();
    let root = tempfile::tempdir().unwrap();
    // The seed's defaults: alarms wait for their 1-minute window.
    let config = write_config(root.path(), &receiver.url("sink"), "");
    let mut server = Running::start(&["serve", "--config", &config]);
    let api = server.api_addr(WAIT);
    post_events(
        api,
        &[
            bikeep_sample("alarm-wire-cut"),
            bikeep_sample("report"),
            bikeep_sample("maintenance_log"),
        ],
    );
    receiver.wait_count("sink", 2, WAIT);
    let types: BTreeSet<String> = receiver
        .bodies("sink")
        .iter()
        .map(|b| b["type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        types,
        BTreeSet::from(["report".into(), "maintenance_log".into()])
    );
    // The alarm waits in its window, and the metrics say so.
    let (status, page) = request(api, "GET", "/metrics", &[], b"");
    assert_eq!(status, 200);
    assert!(
        page.as_str()
            .unwrap()
            .lines()
            .any(|l| l == "hookhost_window_events 1"),
        "{page}"
    );
    let status = server.terminate(WAIT);
    assert!(status.success());
}

#[test]
fn kill9_mid_window_still_delivers_the_window_whole() {
    let receiver = Receiver::start();
    let root = tempfile::tempdir().unwrap();
    let window = Duration::from_secs(4);
    let config = write_config(
        root.path(),
        &receiver.url("sink"),
        "[aggregation.types.alarm]\ninterval = \"4s\"\n",
    );
    let alarms = |location: &str| -> Vec<Value> {
        (0..20)
            .map(|i| {
                event(
                    "alarm-case-open",
                    location,
                    json!({"devices": [device(&format!("{location}-{i}"))]}),
                )
            })
            .collect()
    };

    // Window 1: the host dies mid-window and is back before the window ends.
    let mut server = Running::start(&["serve", "--config", &config]);
    let api = server.api_addr(WAIT);
    wait_for_window_start(window);
    for chunk in alarms("back-in-time").chunks(5) {
        post_events(api, chunk);
    }
    server.kill9();
    assert_eq!(receiver.count("sink"), 0, "window delivered before its end");
    let mut server = Running::start(&["serve", "--config", &config]);
    let api = server.api_addr(WAIT);
    receiver.wait_count("sink", 1, WAIT);
    let body = &receiver.bodies("sink")[0];
    assert_eq!(body["data"]["location_id"], "back-in-time");
    assert_eq!(device_ids(body).len(), 20, "{body}");

    // Window 2: the host is down when the window ends; it delivers at start.
    wait_for_window_start(window);
    for chunk in alarms("down-at-close").chunks(5) {
        post_events(api, chunk);
    }
    server.kill9();
    std::thread::sleep(window);
    let mut server = Running::start(&["serve", "--config", &config]);
    server.api_addr(WAIT);
    receiver.wait_count("sink", 2, WAIT);
    std::thread::sleep(Duration::from_millis(500));
    let bodies = receiver.bodies("sink");
    assert_eq!(bodies.len(), 2, "{bodies:#?}");
    assert_eq!(bodies[1]["data"]["location_id"], "down-at-close");
    assert_eq!(device_ids(&bodies[1]).len(), 20);
    let status = server.terminate(WAIT);
    assert!(status.success());
}

#[test]
fn outage_is_confirmed_once_and_recovery_is_not_announced() {
    let receiver = Receiver::start();
    let root = tempfile::tempdir().unwrap();
    let config = write_config(
        root.path(),
        &receiver.url("sink"),
        "intervals = { \"*\" = \"direct\" }\n[aggregation.outage]\nafter = \"1s\"\n",
    );
    let mut server = Running::start(&["serve", "--config", &config]);
    let api = server.api_addr(WAIT);
    let stamp = |offset_s: u64| hookhost_core::clock::rfc3339_seconds(now_ms() + offset_s * 1000);
    let down = |location: &str, state: &str, t: String| {
        event(
            "connection",
            location,
            json!({"connection": state, "timestamp": t}),
        )
    };
    post_events(
        api,
        &[
            down("stays-down", "offline", stamp(0)),
            down("flaps", "offline", stamp(0)),
        ],
    );
    post_events(api, &[down("flaps", "online", stamp(1))]);
    // 3 connection events, then the one confirmation.
    receiver.wait_count("sink", 4, WAIT);
    std::thread::sleep(Duration::from_millis(2000));
    let bodies = receiver.bodies("sink");
    let confirmed: Vec<&Value> = bodies
        .iter()
        .filter(|b| b["type"] == "connection_confirmed")
        .collect();
    assert_eq!(bodies.len(), 4, "{bodies:#?}");
    assert_eq!(confirmed.len(), 1);
    let data = confirmed[0]["data"].as_object().unwrap();
    assert_eq!(data["location_id"], "stays-down");
    assert_eq!(data["connection"], "offline");
    // The seed's payload shape, field for field and in its order.
    let keys: Vec<&str> = data.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "location_id",
            "location_name",
            "location_address",
            "location_code",
            "location_coordinates",
            "location_status",
            "connection",
            "timestamp",
            "devices"
        ]
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sink.jsonl");
    save_deliveries(&receiver, "sink", &file);
    run_verifier("python3", "bikeep_verify.py", SEED, &file);
    let status = server.terminate(WAIT);
    assert!(status.success());
}
