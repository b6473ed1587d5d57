//! Plugins in JavaScript and Python, built by `./dev test` with the pinned
//! toolchains (componentize-qjs, componentize-py) on the SDKs in
//! `plugins/sdk-js` and `plugins/sdk-python`: the same alarm filter in three
//! languages decides the same, stays steady over 100,000 calls in one warm
//! instance, and reports guest exceptions with their message; and a plugin
//! made by `plugin new` in each language goes live in a running server.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use hookhost_tests::http::{Receiver, get, post};
use hookhost_tests::{
    PATIENCE, Running, built_language_plugin, built_plugin, hookhost_bin, output_within,
    wait_until, workspace_root, write_config,
};
use serde_json::Value;

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

#[test]
fn plugin_new_in_each_language_builds_and_filters_live_in_a_running_server() {
    let receiver = Receiver::start();
    let root = tempfile::tempdir().unwrap();
    let langs = ["rust", "js", "python"];
    let mut body = String::new();
    for lang in langs {
        body.push_str(&format!(
            "[[subscriptions]]\nid = \"{lang}-customer\"\nurl = \"{}\"\ntypes = [\"alarm\"]\n\
             seed = \"s\"\nintervals = {{ \"*\" = \"direct\" }}\n\
             [[subscriptions.plugins]]\nplugin = \"quiet-{lang}\"\n",
            receiver.url(lang)
        ));
    }
    let config = write_config(root.path(), "", "admin_token = \"t0ken\"\n", &body);
    let plugins = root.path().join("plugins");
    let mut server = Running::start(&["serve", "--config", &config]);
    let api = server.api_addr(PATIENCE);

    // As an author would: scaffold, build (which runs the project's test
    // events), install into the live plugins folder.
    let scaffold_target = workspace_root().join("target/scaffold");
    for lang in langs {
        let started = std::time::Instant::now();
        let name = format!("quiet-{lang}");
        let project = root.path().join(&name);
        let out = hookhost(&[
            "plugin",
            "new",
            &name,
            "--role",
            "filter",
            "--lang",
            lang,
            "--dir",
            project.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = output_within(
            Command::new(hookhost_bin())
                .args(["plugin", "build", project.to_str().unwrap(), "--install"])
                .arg(&plugins)
                // Rust: dependencies built once for every run of this test.
                .env("CARGO_TARGET_DIR", &scaffold_target)
                .env("HOOKHOST_PLUGIN_CACHE", root.path().join("cli-cache")),
            Duration::from_secs(900),
        );
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "{lang}: {stderr}");
        assert!(
            stderr.contains("2 events: all as expected"),
            "{lang}: {stderr}"
        );
        server.wait_for(&["plugin loaded", &name], PATIENCE * 2);
        eprintln!(
            "{lang}: plugin new → build → serving in {:?}",
            started.elapsed()
        );
    }

    // The template's own test events: one kept, one dropped.
    let event = |file: &str| {
        let path = root.path().join("quiet-rust/tests/events").join(file);
        let mut event: Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        event.as_object_mut().unwrap().remove("expect");
        event
    };
    let (status, answer) = post(
        api,
        "/v1/events",
        Value::Array(vec![event("dropped.json"), event("kept.json")])
            .to_string()
            .as_bytes(),
    );
    assert_eq!(status, 202, "{answer}");
    let dropped_id = answer["ids"][0].as_str().unwrap().to_string();
    for lang in langs {
        receiver.wait_count(lang, 1, PATIENCE);
    }
    // Each subscription's filter dropped the debug alarm, and the event says so.
    let path = format!("/v1/events/{dropped_id}");
    let dropped_by = || {
        let (_, event) = get(api, &path, &["Authorization: Bearer t0ken"]);
        event["plugin_decisions"]["dropped"].clone()
    };
    wait_until(PATIENCE, || {
        dropped_by().as_array().is_some_and(|d| d.len() == 3)
    })
    .unwrap_or_else(|| panic!("not dropped by three filters: {}", dropped_by()));
    let mut pairs: Vec<(String, String)> = dropped_by()
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["subscription"].as_str().unwrap().into(),
                d["plugin"].as_str().unwrap().into(),
            )
        })
        .collect();
    pairs.sort();
    let expected: Vec<(String, String)> = ["js", "python", "rust"]
        .iter()
        .map(|l| (format!("{l}-customer"), format!("quiet-{l}")))
        .collect();
    assert_eq!(pairs, expected);
    for lang in langs {
        let bodies = receiver.bodies(lang);
        assert_eq!(bodies.len(), 1, "{lang}: {bodies:?}");
        assert_eq!(bodies[0]["data"]["severity"], "critical", "{lang}");
    }
    server.terminate(PATIENCE);
}
