//! Plugins in JavaScript and Python, built by `./dev test` with the pinned
//! toolchains (componentize-qjs, componentize-py) on the SDKs in
//! `plugins/sdk-js` and `plugins/sdk-python`: the same alarm filter in three
//! languages decides the same, stays steady over 100,000 calls in one warm
//! instance, and reports guest exceptions with their message.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use hookhost_tests::{
    built_language_plugin, built_plugin, hookhost_bin, output_within, workspace_root,
};

fn hookhost(args: &[&str]) -> Output {
    let cache = std::env::temp_dir().join("hookhost-tests-plugin-cache");
    output_within(
        Command::new(hookhost_bin())
            .args(args)
            .env("HOOKHOST_PLUGIN_CACHE", cache),
        // A Python component compiles in ~6 s alone; far longer on a busy machine.
        Duration::from_secs(300),
    )
}

/// Copies `file` to `dir/name.wasm`: the plugin's name is its file stem.
fn named(dir: &Path, file: &Path, name: &str) -> String {
    let path = dir.join(format!("{name}.wasm"));
    std::fs::copy(file, &path).unwrap();
    path.display().to_string()
}

/// The decision column of `plugin test`'s table, per event.
fn decisions(table: &str) -> Vec<(String, String)> {
    table
        .lines()
        .skip(2)
        .filter_map(|line| {
            let cells: Vec<&str> = line.trim_matches('|').split(" | ").collect();
            (cells.len() == 3).then(|| (cells[0].trim().to_string(), cells[1].to_string()))
        })
        .collect()
}

#[test]
fn one_alarm_filter_in_rust_javascript_and_python_decides_alike_over_100_000_calls() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.json");
    std::fs::write(
        &config,
        r#"{"categories": ["security"], "reasons": ["wire_cut", "case_open"]}"#,
    )
    .unwrap();
    let events = workspace_root().join("examples/bikeep/events");
    let plugins = [
        named(dir.path(), &built_plugin("alarm-filter"), "alarm-filter"),
        named(
            dir.path(),
            &built_language_plugin("alarm-filter-js"),
            "alarm-filter-js",
        ),
        named(
            dir.path(),
            &built_language_plugin("alarm-filter-py"),
            "alarm-filter-py",
        ),
    ];
    let mut tables = Vec::new();
    for plugin in &plugins {
        // 10 sample events × 10,000 in one warm (reused) instance at the
        // default limits: every call must give the first run's answer.
        let out = hookhost(&[
            "plugin",
            "test",
            plugin,
            "--events",
            events.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
            "--repeat",
            "10000",
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "{plugin}: {stderr}");
        assert!(
            stderr.contains("99990 more calls, 0 differed"),
            "{plugin}: {stderr}"
        );
        tables.push(decisions(&String::from_utf8_lossy(&out.stdout)));
    }
    assert_eq!(tables[0].len(), 10, "{:?}", tables[0]);
    let kept: Vec<&str> = tables[0]
        .iter()
        .filter(|(_, d)| d == "filter: keep")
        .map(|(e, _)| e.as_str())
        .collect();
    assert!(kept.contains(&"alarm-wire-cut.json") && !kept.contains(&"alarm-low-voltage.json"));
    assert_eq!(tables[1], tables[0], "JavaScript differs from Rust");
    assert_eq!(tables[2], tables[0], "Python differs from Rust");
}

#[test]
fn a_guest_exception_is_the_event_s_plugin_error_with_its_message() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.json");
    std::fs::write(&config, r#"{"reasons": "wire_cut"}"#).unwrap();
    let event = workspace_root().join("examples/bikeep/events/alarm-wire-cut.json");
    for name in ["alarm-filter-js", "alarm-filter-py"] {
        let plugin = named(dir.path(), &built_language_plugin(name), name);
        let args = ["plugin", "run", &plugin, "--event", event.to_str().unwrap()];
        let out = hookhost(&[&args[..], &["--config", config.to_str().unwrap()]].concat());
        assert_eq!(out.status.code(), Some(2), "{name}");
        let decision: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            decision["filter"]["error"],
            format!("plugin `{name}` failed: TypeError: config: reasons must be a list of strings"),
            "{name}"
        );
    }
}
