//! Event catalogs end to end: the shipped catalogs of the three seeds, tiers,
//! strict ingest and `GET /v1/event-types`, on the real binary.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use hookhost_tests::http::{Receiver, get, post};
use hookhost_tests::{Running, bikeep_sample, output_within, workspace_root};
use serde_json::{Value, json};

/// How long to wait for what should happen soon (see `PATIENCE`).
const WAIT: Duration = hookhost_tests::PATIENCE;

fn catalog(name: &str) -> String {
    workspace_root()
        .join("examples")
        .join(name)
        .join("catalog.json")
        .display()
        .to_string()
}

fn write_config(root: &Path, body: &str) -> String {
    hookhost_tests::write_config(root, "", "admin_token = \"adm1n\"\n", body)
}

fn subscription(id: &str, url: &str, tier: &str, types: &str) -> String {
    format!(
        "[[subscriptions]]\nid = \"{id}\"\nurl = \"{url}\"\ntypes = {types}\ntier = \"{tier}\"\n\
         seed = \"s\"\nintervals = {{ \"*\" = \"direct\" }}\n"
    )
}

#[test]
fn public_subscriptions_never_receive_partner_types() {
    let receiver = Receiver::start();
    let root = tempfile::tempdir().unwrap();
    let config = write_config(
        root.path(),
        &format!(
            "[catalog]\nfiles = [\"{}\"]\n{}{}",
            catalog("bikeep"),
            subscription("public", &receiver.url("public"), "public", "[\"*\"]"),
            subscription("partner", &receiver.url("partner"), "partner", "[\"*\"]"),
        ),
    );
    let mut server = Running::start(&["serve", "--config", &config]);
    let api = server.api_addr(WAIT);
    let samples: Vec<Value> = [
        "connection",
        "connection_confirmed",
        "alarm-wire-cut",
        "parking_reminder",
        "status",
        "report",
        "maintenance_log",
    ]
    .iter()
    .map(|s| bikeep_sample(s))
    .collect();
    let (status, answer) = post(
        api,
        "/v1/events",
        Value::Array(samples).to_string().as_bytes(),
    );
    assert_eq!(status, 202, "{answer}");
    receiver.wait_count("partner", 7, WAIT);
    receiver.wait_count("public", 4, WAIT);
    // A partner type would have gone out with the others; give it time anyway.
    std::thread::sleep(Duration::from_millis(500));
    let types = |path: &str| -> BTreeSet<String> {
        receiver
            .bodies(path)
            .iter()
            .map(|b| b["type"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(receiver.count("public"), 4);
    assert_eq!(
        types("public"),
        BTreeSet::from(
            [
                "alarm",
                "connection",
                "connection_confirmed",
                "parking_reminder"
            ]
            .map(String::from)
        )
    );
    assert_eq!(types("partner").len(), 7);
    assert!(server.terminate(WAIT).success());
}

#[test]
fn a_public_subscription_naming_a_partner_type_stops_the_server() {
    let root = tempfile::tempdir().unwrap();
    let config = write_config(
        root.path(),
        &format!(
            "[catalog]\nfiles = [\"{}\"]\n{}",
            catalog("bikeep"),
            subscription(
                "acme",
                "http://127.0.0.1:9/x",
                "public",
                "[\"alarm\", \"report\"]"
            ),
        ),
    );
    let out = output_within(
        Command::new(hookhost_tests::hookhost_bin()).args(["serve", "--config", &config]),
        WAIT,
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("hookhost.toml")
            && stderr.contains("subscriptions[0]")
            && stderr.contains("\"report\" is a partner type"),
        "{stderr}"
    );
}

#[test]
fn a_broken_catalog_stops_the_server_naming_file_and_line() {
    let root = tempfile::tempdir().unwrap();
    let bad = root.path().join("catalog.json");
    std::fs::write(
        &bad,
        "{\"name\": \"x\",\n \"event_types\": [{\"name\": 5}]}",
    )
    .unwrap();
    let config = write_config(root.path(), "[catalog]\nfiles = [\"catalog.json\"]\n");
    let out = output_within(
        Command::new(hookhost_tests::hookhost_bin()).args(["serve", "--config", &config]),
        WAIT,
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("catalog.json: line 2"), "{stderr}");
}

#[test]
fn strict_catalog_refuses_unknown_and_upcoming_types_whole_requests() {
    let receiver = Receiver::start();
    let root = tempfile::tempdir().unwrap();
    let config = write_config(
        root.path(),
        &format!(
            "[catalog]\nfiles = [\"{}\"]\nstrict = true\n{}",
            catalog("biamo"),
            subscription("app", &receiver.url("app"), "public", "[\"*\"]"),
        ),
    );
    let mut server = Running::start(&["serve", "--config", &config]);
    let api = server.api_addr(WAIT);

    let (status, body) = post(api, "/v1/events", br#"{"type": "nope.type", "data": {}}"#);
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("unknown event type \"nope.type\""),
        "{body}"
    );
    // One bad event refuses the whole request: the good one is not stored.
    let (status, body) = post(
        api,
        "/v1/events",
        json!([
            {"id": "evt_first", "type": "device.connected", "data": {"device": "p1"}},
            {"type": "device.discovered", "data": {}}
        ])
        .to_string()
        .as_bytes(),
    );
    assert_eq!(status, 422, "{body}");
    let message = body["error"].as_str().unwrap();
    assert!(
        message.starts_with("events[1]: ") && message.contains("not live yet"),
        "{body}"
    );
    let (status, body) = post(
        api,
        "/v1/events",
        br#"{"id": "evt_second", "type": "device.battery_low", "data": {"level": 5}}"#,
    );
    assert_eq!(status, 202, "{body}");
    receiver.wait_count("app", 1, WAIT);
    std::thread::sleep(Duration::from_millis(300));
    let bodies = receiver.bodies("app");
    assert_eq!(bodies.len(), 1, "{bodies:#?}");
    assert_eq!(bodies[0]["type"], "device.battery_low");
    assert!(server.terminate(WAIT).success());
}

#[test]
fn event_types_lists_every_catalog_type_to_the_admin() {
    let root = tempfile::tempdir().unwrap();
    let config = write_config(
        root.path(),
        &format!(
            "[catalog]\nfiles = [\"{}\", \"{}\", \"{}\"]\n",
            catalog("bikeep"),
            catalog("billabear"),
            catalog("biamo")
        ),
    );
    let mut server = Running::start(&["serve", "--config", &config]);
    let api = server.api_addr(WAIT);
    let (status, body) = get(api, "/v1/event-types", &[]);
    assert_eq!(status, 401, "{body}");
    let (status, body) = get(api, "/v1/event-types", &["Authorization: Bearer wrong"]);
    assert_eq!(status, 403, "{body}");
    let (status, body) = get(api, "/v1/event-types", &["Authorization: Bearer adm1n"]);
    assert_eq!(status, 200, "{body}");
    let types = body["event_types"].as_array().unwrap();
    // The three seeds' catalogs and hookhost's own (operational events).
    assert_eq!(types.len(), 7 + 20 + 51 + 5);
    assert_eq!(
        types
            .iter()
            .find(|t| t["name"] == "hookhost.delivery.exhausted")
            .unwrap()["tier"],
        "partner"
    );
    let by_name = |n: &str| types.iter().find(|t| t["name"] == n).unwrap();
    let alarm = by_name("alarm");
    assert_eq!(alarm["catalog"], "bikeep");
    assert_eq!(alarm["tier"], "public");
    assert_eq!(alarm["delivery"], "1m");
    assert_eq!(alarm["sample"]["alarm_category"], "security");
    assert_eq!(by_name("maintenance_log")["tier"], "partner");
    assert_eq!(by_name("payment_received")["sample"]["amount"], 1000);
    assert_eq!(by_name("device.discovered")["upcoming"], true);
    assert!(by_name("device.connected").get("upcoming").is_none());
    assert!(server.terminate(WAIT).success());
}
