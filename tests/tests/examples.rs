//! The three example configurations (`examples/*/hookhost.toml`) run as
//! shipped, apart from ports and folders: the real binary serves each, the
//! example's events are replayed, and every delivery passes the checks its
//! envelope promises.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use hookhost_tests::http::Receiver;
use hookhost_tests::{
    Running, built_plugin, hookhost_bin, output_within, run_verifier, save_deliveries,
    workspace_root,
};

/// How long to wait for what should happen soon (see `PATIENCE`).
const WAIT: Duration = hookhost_tests::PATIENCE;

/// Copies example `name` into `root` with a free listen port, local folders
/// and its endpoints pointed at `receiver`; returns the config path.
fn stage(name: &str, root: &Path, receiver: &Receiver) -> String {
    let example = workspace_root().join("examples").join(name);
    let text = std::fs::read_to_string(example.join("hookhost.toml")).unwrap();
    let receiver_base = receiver.url("");
    let text: String = text
        .lines()
        .filter(|l| !l.starts_with("cache_dir"))
        .map(|l| {
            if l.starts_with("listen = ") {
                "listen = \"127.0.0.1:0\"".to_string()
            } else if l.starts_with("data_dir = ") {
                "data_dir = \"db\"".to_string()
            } else if l.starts_with("dir = ") {
                "dir = \"plugins\"".to_string()
            } else if let Some(rest) = l.strip_prefix("url = \"http://127.0.0.1:") {
                // Keep the path, change the port.
                let path = rest.split_once('/').map_or("", |(_, p)| p);
                format!("url = \"{receiver_base}{path}")
            } else {
                l.to_string()
            }
        })
        .map(|l| l + "\n")
        .collect();
    std::fs::copy(example.join("catalog.json"), root.join("catalog.json")).unwrap();
    std::fs::create_dir_all(root.join("plugins")).unwrap();
    let file = root.join("hookhost.toml");
    std::fs::write(&file, text).unwrap();
    file.display().to_string()
}

fn replay_events(name: &str, api: std::net::SocketAddr) -> usize {
    let dir = workspace_root().join("examples").join(name).join("events");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let out = output_within(
        Command::new(hookhost_bin())
            .arg("replay")
            .arg("--url")
            .arg(format!("http://{api}/v1/events"))
            .args(&files),
        WAIT,
    );
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    files.len()
}

/// Secret of the example's subscriptions (they share one).
fn secret_of(config: &str) -> String {
    let text = std::fs::read_to_string(config).unwrap();
    let start = text.find("whsec_").unwrap();
    text[start..].split('"').next().unwrap().to_string()
}

#[test]
fn billabear_example_delivers_plain_signed_events() {
    let receiver = Receiver::start();
    let root = tempfile::tempdir().unwrap();
    let config = stage("billabear", root.path(), &receiver);
    let mut server = Running::start(&["serve", "--config", &config]);
    let api = server.api_addr(WAIT);
    let sent = replay_events("billabear", api);
    assert_eq!(sent, 20);
    // Every event type has one subscription that wants it.
    let total = || receiver.count("crm") + receiver.count("finance");
    assert!(
        hookhost_tests::wait_until(WAIT, || total() >= 20).is_some(),
        "{}",
        total()
    );
    for body in receiver.bodies("crm") {
        let t = body["type"].as_str().unwrap();
        assert!(
            t.starts_with("customer_") || t.starts_with("subscription_") || t.starts_with("trial_")
        );
        assert!(body.get("hash").is_none(), "plain envelope: {body}");
    }
    assert!(server.terminate(WAIT).success());
    let dir = tempfile::tempdir().unwrap();
    for path in ["crm", "finance"] {
        let file = dir.path().join(format!("{path}.jsonl"));
        save_deliveries(&receiver, path, &file);
        run_verifier(
            "python3",
            "standard_webhooks_verify.py",
            &secret_of(&config),
            &file,
        );
    }
}

#[test]
fn biamo_example_delivers_its_live_events() {
    let receiver = Receiver::start();
    let root = tempfile::tempdir().unwrap();
    let config = stage("biamo", root.path(), &receiver);
    let mut server = Running::start(&["serve", "--config", &config]);
    let api = server.api_addr(WAIT);
    replay_events("biamo", api);
    receiver.wait_count("app", 1, WAIT);
    receiver.wait_count("ops", 1, WAIT);
    assert_eq!(receiver.bodies("app")[0]["type"], "device.battery_low");
    assert_eq!(receiver.bodies("ops")[0]["type"], "test.webhook");
    assert!(server.terminate(WAIT).success());
    let dir = tempfile::tempdir().unwrap();
    for path in ["app", "ops"] {
        let file = dir.path().join(format!("{path}.jsonl"));
        save_deliveries(&receiver, path, &file);
        run_verifier(
            "python3",
            "standard_webhooks_verify.py",
            &secret_of(&config),
            &file,
        );
    }
}

#[test]
fn bikeep_example_filters_routes_and_signs_as_configured() {
    let receiver = Receiver::start();
    let root = tempfile::tempdir().unwrap();
    let config = stage("bikeep", root.path(), &receiver);
    for plugin in ["alarm-filter", "alarm-router"] {
        std::fs::copy(
            built_plugin(plugin),
            root.path().join("plugins").join(format!("{plugin}.wasm")),
        )
        .unwrap();
    }
    // Windows as shipped would take minutes; direct delivery for the test.
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "[catalog]",
        "[aggregation.types.alarm]\ninterval = \"direct\"\n[catalog]",
    );
    std::fs::write(&config, text).unwrap();
    let mut server = Running::start(&["serve", "--config", &config]);
    let api = server.api_addr(WAIT);
    replay_events("bikeep", api);
    // acme: security alarms (case_open, wire_cut); bikeshop: wire_cut only;
    // maintenance desk: technical alarms (low_voltage, ups_power_lost), as
    // routed; partner: every alarm and the direct partner types.
    receiver.wait_count("acme", 2, WAIT);
    receiver.wait_count("bikeshop", 1, WAIT);
    receiver.wait_count("maintenance", 2, WAIT);
    receiver.wait_count("partner", 6, WAIT);
    std::thread::sleep(Duration::from_millis(300));
    let reasons = |path: &str| -> Vec<String> {
        let mut r: Vec<String> = receiver
            .bodies(path)
            .iter()
            .filter(|b| b["type"] == "alarm")
            .map(|b| b["data"]["alarm_reason"].as_str().unwrap().to_string())
            .collect();
        r.sort();
        r
    };
    assert_eq!(reasons("acme"), ["case_open", "wire_cut"]);
    assert_eq!(reasons("bikeshop"), ["wire_cut"]);
    assert_eq!(reasons("maintenance"), ["low_voltage", "ups_power_lost"]);
    let partner_types: std::collections::BTreeSet<String> = receiver
        .bodies("partner")
        .iter()
        .map(|b| b["type"].as_str().unwrap().to_string())
        .collect();
    assert!(partner_types.contains("report") && partner_types.contains("maintenance_log"));
    assert!(server.terminate(WAIT).success());
    let dir = tempfile::tempdir().unwrap();
    for path in ["acme", "bikeshop", "maintenance", "partner"] {
        let file = dir.path().join(format!("{path}.jsonl"));
        save_deliveries(&receiver, path, &file);
        run_verifier("python3", "bikeep_verify.py", "example-seed", &file);
        run_verifier(
            "python3",
            "standard_webhooks_verify.py",
            &secret_of(&config),
            &file,
        );
    }
}
