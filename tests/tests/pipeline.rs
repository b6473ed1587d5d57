//! The pipeline through a real server (in-process): router plugins pick subscriptions,
//! each subscription's filter/transform chain shapes what it receives, and a
//! failing plugin is recorded on that event's job without stopping others.

use std::time::Duration;

use hookhost_core::model::JobStatus;
use hookhost_core::store::sled::SledStore;
use hookhost_core::store::{DeliveryQueue, EventStore};
use hookhost_tests::http::{Receiver, post_events};
use hookhost_tests::{InProcess, bikeep_sample, built_plugin};
use serde_json::Value;

/// How long to wait for what should happen soon (see `PATIENCE`).
const WAIT: Duration = hookhost_tests::PATIENCE;

#[test]
fn plugins_route_filter_and_transform_deliveries() {
    let receiver = Receiver::start();
    let root = tempfile::tempdir().unwrap();
    let plugins = root.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    for (crate_name, name) in [
        ("alarm-filter", "alarm-filter"),
        ("alarm-router", "alarm-router"),
        ("v1-compat", "v1-compat"),
        ("misbehave", "misbehave"),
    ] {
        std::fs::copy(
            built_plugin(crate_name),
            plugins.join(format!("{name}.wasm")),
        )
        .unwrap();
    }
    let url = |p: &str| receiver.url(p);
    let config = root.path().join("hookhost.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[delivery]
allowed_networks = ["127.0.0.1"]
[server]
listen = "127.0.0.1:0"
data_dir = "db"
[plugins]
dir = "plugins"

[[routes]]
plugin = "alarm-router"

# Direct delivery throughout: windows have their own tests (aggregation.rs).
# The security desk gets alarms only when the router sends them its way.
[[subscriptions]]
id = "security-desk"
url = "{}"
types = ["alarm"]
tags = ["security"]
route_only = true
seed = "s"
intervals = {{ "*" = "direct" }}

# A customer who asked for wire_cut alarms only, plus every connection change.
[[subscriptions]]
id = "only-wire-cut"
url = "{}"
types = ["alarm", "connection"]
seed = "s"
intervals = {{ "*" = "direct" }}
[[subscriptions.plugins]]
plugin = "alarm-filter"
config = {{ reasons = ["wire_cut"] }}

# A consumer still on version 1.
[[subscriptions]]
id = "legacy"
url = "{}"
types = ["*"]
seed = "s"
intervals = {{ "*" = "direct" }}
envelope = "bikeep-v1"
[[subscriptions.plugins]]
plugin = "v1-compat"

# A subscription whose plugin runs away: its jobs fail, nobody else's.
[[subscriptions]]
id = "broken"
url = "{}"
types = ["alarm"]
seed = "s"
intervals = {{ "*" = "direct" }}
[[subscriptions.plugins]]
plugin = "misbehave"
config = "loop"
"#,
            url("security"),
            url("wire-cut"),
            url("legacy"),
            url("broken")
        ),
    )
    .unwrap();
    // Not a test of the process: the server runs in this one.
    let server = InProcess::start(config.to_str().unwrap());
    let api = server.addr;
    let samples = [
        "alarm-case-open",
        "alarm-wire-cut",
        "alarm-low-voltage",
        "connection",
        "status",
    ];
    let events: Vec<Value> = samples.iter().map(|s| bikeep_sample(s)).collect();
    let answer = post_events(api, events);
    let ids: Vec<String> = answer["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().into())
        .collect();

    receiver.wait_count("security", 2, WAIT); // case_open + wire_cut (security category)
    receiver.wait_count("wire-cut", 2, WAIT); // the wire_cut alarm + the connection
    receiver.wait_count("legacy", 4, WAIT); // alarms and connection; status has no v1 form
    std::thread::sleep(Duration::from_millis(500));
    server.stop();

    let security = receiver.bodies("security");
    assert_eq!(security.len(), 2);
    assert!(
        security
            .iter()
            .all(|b| b["data"]["alarm_category"] == "security")
    );
    let wire_cut = receiver.bodies("wire-cut");
    assert_eq!(wire_cut.len(), 2);
    assert!(
        wire_cut
            .iter()
            .any(|b| b["data"]["alarm_reason"] == "wire_cut")
    );
    assert!(wire_cut.iter().any(|b| b["type"] == "connection"));
    let legacy = receiver.bodies("legacy");
    assert_eq!(legacy.len(), 4);
    assert!(legacy.iter().all(|b| b["version"] == 1
        && b["data"].get("location_status").is_none()
        && b["data"].get("alarm_category").is_none()));
    assert_eq!(receiver.count("broken"), 0);

    let store = SledStore::open(&root.path().join("db")).unwrap();
    let broken: Vec<_> = store
        .jobs()
        .unwrap()
        .into_iter()
        .filter(|j| j.subscription_id == "broken")
        .collect();
    assert_eq!(broken.len(), 3, "one job per alarm");
    for job in &broken {
        assert_eq!(job.status, JobStatus::PluginError);
        assert!(
            job.error.as_deref().unwrap().contains("CPU limit"),
            "{job:?}"
        );
        let event = store.event(&job.event_id).unwrap().unwrap();
        assert!(
            event
                .errors
                .iter()
                .any(|e| e.contains("broken") && e.contains("CPU limit")),
            "{event:?}"
        );
    }
    // The status event matched only `legacy`, whose v1-compat filter dropped
    // it: no job at all, and the event says which plugin dropped it.
    let status_event = &ids[4];
    assert!(
        store
            .jobs()
            .unwrap()
            .iter()
            .all(|j| &j.event_id != status_event)
    );
    let decisions = |id: &str| {
        let event = store.event(id).unwrap().unwrap();
        serde_json::to_value(&event.plugin_decisions).unwrap()
    };
    assert_eq!(
        decisions(status_event),
        serde_json::json!({"dropped": [{"subscription": "legacy", "plugin": "v1-compat"}]})
    );
    // The low-voltage alarm: routed to maintenance, dropped by the customer's filter.
    assert_eq!(
        decisions(&ids[2]),
        serde_json::json!({
            "dropped": [{"subscription": "only-wire-cut", "plugin": "alarm-filter"}],
            "routed": [{"plugin": "alarm-router", "tags": ["maintenance"]}],
        })
    );
}
