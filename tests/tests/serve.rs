//! `hookhost serve`, the real binary: loads the plugins folder, reloads on
//! change, reuses compiled plugins after a restart, stops cleanly on SIGTERM.

use std::time::Duration;

use hookhost_tests::http::get;
use hookhost_tests::{Running, built_plugin};

const WAIT: Duration = Duration::from_secs(20);

#[test]
fn serves_watches_and_restarts_from_the_cache() {
    let root = tempfile::tempdir().unwrap();
    let plugins = root.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    std::fs::copy(
        built_plugin("alarm-filter"),
        plugins.join("alarm-filter.wasm"),
    )
    .unwrap();
    std::fs::copy(built_plugin("v1-compat"), plugins.join("v1-compat.wasm")).unwrap();
    std::fs::write(plugins.join("broken.wasm"), b"nope").unwrap();
    let config = root.path().join("hookhost.toml");
    std::fs::write(
        &config,
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_token = \"t0ken\"\n[plugins]\ndir = \"plugins\"\ncache_dir = \"cache\"\n",
    )
    .unwrap();
    let config = config.to_str().unwrap();

    let mut server = Running::start(&["serve", "--config", config]);
    server.wait_for(&["plugins ready", "loaded=2", "refused=1"], WAIT);
    assert!(
        server
            .log
            .iter()
            .any(|l| l.contains("plugin refused") && l.contains("broken.wasm"))
    );
    let api = server.api_addr(WAIT);

    // Drop a new plugin in: it is loaded without a restart.
    let tmp = plugins.join(".alarm-router.wasm.tmp");
    std::fs::copy(built_plugin("alarm-router"), &tmp).unwrap();
    std::fs::rename(&tmp, plugins.join("alarm-router.wasm")).unwrap();
    server.wait_for(&["plugin loaded", "alarm-router", "router"], WAIT);

    // A broken file is refused once, not over and over (reading a file must
    // not count as a change to it).
    std::fs::write(plugins.join("junk.wasm"), b"junk").unwrap();
    server.wait_for(&["plugin refused", "junk.wasm"], WAIT);
    let later = server.collect_for(Duration::from_millis(800));
    assert!(
        !later.iter().any(|l| l.contains("junk.wasm")),
        "refused again: {later:?}"
    );

    // The management API shows what serves and what was refused, and why.
    let (status, body) = get(api, "/v1/plugins", &[]);
    assert_eq!(status, 401, "{body}");
    let (status, body) = get(api, "/v1/plugins", &["Authorization: Bearer nope"]);
    assert_eq!(status, 403, "{body}");
    let (status, body) = get(api, "/v1/plugins", &["Authorization: Bearer t0ken"]);
    assert_eq!(status, 200, "{body}");
    let listed = body["plugins"].as_array().unwrap();
    let row = |name: &str| {
        listed
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{name} in {body}"))
    };
    assert_eq!(
        row("alarm-router")["serving"]["roles"],
        serde_json::json!(["router"])
    );
    assert_eq!(
        row("alarm-filter")["serving"]["sha256"]
            .as_str()
            .unwrap()
            .len(),
        64
    );
    assert!(row("junk")["serving"].is_null());
    assert!(
        row("junk")["last_error"]["error"]
            .as_str()
            .unwrap()
            .contains("junk.wasm")
    );

    std::fs::remove_file(plugins.join("alarm-router.wasm")).unwrap();
    server.wait_for(&["plugin removed", "alarm-router"], WAIT);

    let status = server.terminate(WAIT);
    assert!(status.success(), "exit status {status}");

    // Restart: the compiled cache spares the compile.
    let mut server = Running::start(&["serve", "--config", config]);
    let line = server.wait_for(&["plugin loaded", "alarm-filter"], WAIT);
    assert!(line.contains("from_cache=true"), "{line}");
    server.wait_for(&["plugins ready", "loaded=2"], WAIT);
    server.wait_for(&["HTTP API listening"], WAIT);
    assert!(server.terminate(WAIT).success());
}

#[test]
fn bad_config_names_the_file_and_line() {
    let root = tempfile::tempdir().unwrap();
    let config = root.path().join("bad.toml");
    std::fs::write(&config, "[plugins]\ndir = \".\"\ncpu_limit_ms = \"fast\"\n").unwrap();
    let out = hookhost_tests::output_within(
        std::process::Command::new(hookhost_tests::hookhost_bin()).args([
            "serve",
            "--config",
            config.to_str().unwrap(),
        ]),
        WAIT,
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad.toml: line 3"), "{stderr}");
}

#[test]
fn log_format_json_writes_one_json_object_per_line_with_fields() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("plugins")).unwrap();
    std::fs::write(root.path().join("plugins/broken.wasm"), b"nope").unwrap();
    let config = root.path().join("hookhost.toml");
    std::fs::write(
        &config,
        "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"db\"\n[plugins]\ndir = \"plugins\"\n",
    )
    .unwrap();
    let mut server = Running::start(&[
        "--log-format",
        "json",
        "serve",
        "--config",
        config.to_str().unwrap(),
    ]);
    let line = server.wait_for(&["HTTP API listening"], WAIT);
    let listening: serde_json::Value = serde_json::from_str(&line).expect("a JSON log line");
    assert_eq!(listening["level"], "INFO");
    assert_eq!(listening["message"], "HTTP API listening");
    assert!(
        listening["listen"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    let refused = server
        .log
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("every line is JSON"))
        .find(|v| v["message"] == "plugin refused")
        .expect("the refused plugin is logged");
    assert_eq!(refused["plugin"], "broken");
    assert!(server.terminate(WAIT).success());
}

#[test]
fn a_plugin_s_log_lines_below_its_log_level_are_dropped() {
    let root = tempfile::tempdir().unwrap();
    let plugins = root.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    for name in ["quiet-router", "alarm-router"] {
        std::fs::copy(
            built_plugin("alarm-router"),
            plugins.join(format!("{name}.wasm")),
        )
        .unwrap();
    }
    // Both routers warn about an alarm category without a route; the quiet
    // one only lets errors through. It runs first, so by the time the other
    // one's warning is read, the quiet one's would have been written.
    let config = root.path().join("hookhost.toml");
    std::fs::write(
        &config,
        "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"db\"\n[plugins]\ndir = \"plugins\"\n\
         [plugins.settings.quiet-router]\nlog_level = \"error\"\n\
         [[routes]]\nplugin = \"quiet-router\"\nconfig = { routes = {} }\n\
         [[routes]]\nplugin = \"alarm-router\"\nconfig = { routes = {} }\n",
    )
    .unwrap();
    let mut server = Running::start(&["serve", "--config", config.to_str().unwrap()]);
    let api = server.api_addr(WAIT);
    let alarm = hookhost_tests::bikeep_sample("alarm-wire-cut");
    let (status, body) =
        hookhost_tests::http::post(api, "/v1/events", alarm.to_string().as_bytes());
    assert_eq!(status, 202, "{body}");
    server.wait_for(&["has no route", "alarm-router"], WAIT);
    assert!(
        !server
            .log
            .iter()
            .any(|l| l.contains("quiet-router") && l.contains("has no route")),
        "{:#?}",
        server.log
    );
    server.terminate(WAIT);
}
