//! Shadow mode: a candidate version dropped in as `NAME.next.wasm` runs on
//! the live traffic beside the serving version; its disagreements are
//! counted and sampled but never change a delivery, until it is promoted.

use std::path::Path;

use hookhost_tests::http::{Receiver, get, post_events, request};
use hookhost_tests::{InProcess, PATIENCE, bikeep_sample, built_plugin, wait_until, write_config};
use serde_json::Value;

const ALARMS: [&str; 4] = [
    "alarm-case-open",
    "alarm-wire-cut",
    "alarm-low-voltage",
    "alarm-ups-power-lost",
];
const ADMIN: &str = "Authorization: Bearer t0ken";

fn post_alarms(api: std::net::SocketAddr) -> Vec<String> {
    let events: Vec<Value> = ALARMS
        .iter()
        .map(|name| {
            let mut event = bikeep_sample(name);
            // A fresh id each time: the second round is new traffic.
            event.as_object_mut().unwrap().remove("id");
            event
        })
        .collect();
    let answer = post_events(api, events);
    answer["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_str().unwrap().to_string())
        .collect()
}

fn plugin_row(api: std::net::SocketAddr, name: &str) -> Value {
    let (status, body) = get(api, "/v1/plugins", &[ADMIN]);
    assert_eq!(status, 200, "{body}");
    body["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("{name} not in {body}"))
}

fn sha256_of(file: &Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(file).unwrap()))
}

#[test]
fn a_disagreeing_candidate_is_counted_and_changes_nothing_until_promoted() {
    let receiver = Receiver::start();
    let root = tempfile::tempdir().unwrap();
    let config = write_config(
        root.path(),
        "",
        "admin_token = \"t0ken\"\n",
        &format!(
            "[[subscriptions]]\nid = \"customer\"\nurl = \"{}\"\ntypes = [\"alarm\"]\nseed = \"s\"\n\
             intervals = {{ \"*\" = \"direct\" }}\n\
             [[subscriptions.plugins]]\nplugin = \"alarm-filter\"\nconfig = {{ reasons = [\"wire_cut\"] }}\n",
            receiver.url("customer")
        ),
    );
    let plugins = root.path().join("plugins");
    std::fs::copy(
        built_plugin("alarm-filter"),
        plugins.join("alarm-filter.wasm"),
    )
    .unwrap();
    // The candidate keeps every alarm: it disagrees on the three that are
    // not wire cuts.
    let candidate = plugins.join("alarm-filter.next.wasm");
    std::fs::copy(built_plugin("misbehave"), &candidate).unwrap();
    let candidate_sha = sha256_of(&candidate);
    let server = InProcess::start(&config);
    let api = server.addr;

    let row = plugin_row(api, "alarm-filter");
    assert_eq!(row["candidate"]["sha256"], candidate_sha.as_str(), "{row}");
    assert!(plugin_row(api, "alarm-filter").get("serving").is_some());

    let first = post_alarms(api);
    let shadow = || plugin_row(api, "alarm-filter")["candidate"]["shadow"].clone();
    wait_until(PATIENCE, || shadow()["compared"] == 4)
        .unwrap_or_else(|| panic!("not compared on four alarms: {}", shadow()));
    let report = shadow();
    assert_eq!(
        (
            &report["agreed"],
            &report["disagreed"],
            &report["candidate_errors"]
        ),
        (&Value::from(1), &Value::from(3), &Value::from(0)),
        "{report}"
    );
    let samples = report["samples"].as_array().unwrap();
    assert_eq!(samples.len(), 3, "{report}");
    for sample in samples {
        assert_eq!(sample["role"], "filter");
        assert_eq!(
            (&sample["current"], &sample["candidate"]),
            (&"drop".into(), &"keep".into())
        );
        assert!(first.contains(&sample["event_id"].as_str().unwrap().to_string()));
    }
    assert!(
        !samples.iter().any(|s| s["event_id"] == first[1].as_str()),
        "the wire cut agreed"
    );
    let (_, metrics) = request(api, "GET", "/metrics", &[], b"");
    let metrics = metrics.as_str().unwrap_or_default();
    assert!(
        metrics.contains(
            "hookhost_plugin_shadow_total{plugin=\"alarm-filter\",outcome=\"disagreed\"} 3"
        ),
        "{metrics}"
    );

    // The serving version decided: only the wire cut went out, and the
    // others say which plugin dropped them.
    receiver.wait_count("customer", 1, PATIENCE);
    let dropped = |id: &str| {
        let (_, event) = get(api, &format!("/v1/events/{id}"), &[ADMIN]);
        event["plugin_decisions"]["dropped"].clone()
    };
    for id in [&first[0], &first[2], &first[3]] {
        assert_eq!(
            dropped(id),
            serde_json::json!([{"subscription": "customer", "plugin": "alarm-filter"}])
        );
    }

    // Promote: the candidate serves, its file is the plugin's file now.
    let (status, body) = request(
        api,
        "POST",
        "/v1/plugins/alarm-filter/promote",
        &[ADMIN],
        b"",
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["promoted"]["sha256"], candidate_sha.as_str());
    let row = plugin_row(api, "alarm-filter");
    assert_eq!(row["serving"]["sha256"], candidate_sha.as_str(), "{row}");
    assert!(row.get("candidate").is_none(), "{row}");
    assert!(!candidate.exists());
    assert_eq!(sha256_of(&plugins.join("alarm-filter.wasm")), candidate_sha);
    let (status, body) = request(
        api,
        "POST",
        "/v1/plugins/alarm-filter/promote",
        &[ADMIN],
        b"",
    );
    assert_eq!(status, 404, "{body}");

    // From now on its answers count: every alarm goes out.
    post_alarms(api);
    receiver.wait_count("customer", 5, PATIENCE);
    server.stop();
    assert_eq!(receiver.count("customer"), 5);
}
