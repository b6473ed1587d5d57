//! The `hookhost` commands besides `serve`, run as their users would: the
//! real binary, on the real compiled components (`plugin`), a server it
//! starts (`bench`) or a stopped server's data folder (`compact`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use std::time::Duration;

use hookhost_tests::{built_plugin, hookhost_bin, output_within, workspace_root};
use serde_json::Value;

fn hookhost(args: &[&str]) -> Output {
    // The CLI caches compiled plugins under the user's cache folder; tests
    // keep theirs apart.
    let cache = std::env::temp_dir().join("hookhost-tests-plugin-cache");
    output_within(
        Command::new(hookhost_bin())
            .args(args)
            .env("HOOKHOST_PLUGIN_CACHE", cache),
        Duration::from_secs(60),
    )
}

fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Copies a built plugin to `dir/name.wasm` (the CLI names plugins by file stem).
fn named(dir: &Path, crate_name: &str, name: &str) -> PathBuf {
    let path = dir.join(format!("{name}.wasm"));
    std::fs::copy(built_plugin(crate_name), &path).unwrap();
    path
}

fn sample(name: &str) -> String {
    workspace_root()
        .join("examples/bikeep/events")
        .join(format!("{name}.json"))
        .display()
        .to_string()
}

#[test]
fn check_reports_the_roles() {
    let dir = tempfile::tempdir().unwrap();
    for (crate_name, roles) in [
        ("alarm-filter", vec!["filter"]),
        ("alarm-router", vec!["router"]),
        ("v1-compat", vec!["filter", "transform"]),
    ] {
        let file = named(dir.path(), crate_name, crate_name);
        let out = hookhost(&["plugin", "check", file.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report = json_of(&out);
        assert_eq!(report["plugin"], crate_name);
        assert_eq!(report["implements"], "hookhost:plugin@0.1.0");
        assert_eq!(report["roles"], serde_json::json!(roles));
    }
}

#[test]
fn check_refuses_bad_files_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"\x7fELF not wasm").unwrap();
    let wrong = named(dir.path(), "wrong-world", "wrong");
    for (file, reason) in [
        (&junk, "not a WebAssembly"),
        (&wrong, "does not implement the hookhost plugin contract"),
    ] {
        let out = hookhost(&["plugin", "check", file.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(file.to_str().unwrap()) && stderr.contains(reason),
            "{stderr}"
        );
    }
    let out = hookhost(&["plugin", "check", "/nonexistent/p.wasm"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/p.wasm"));
}

#[test]
fn run_prints_the_decision() {
    let dir = tempfile::tempdir().unwrap();
    let filter = named(dir.path(), "alarm-filter", "alarm-filter");
    let config = dir.path().join("only-wire-cut.json");
    std::fs::write(&config, r#"{"reasons": ["wire_cut"]}"#).unwrap();
    let run = |event: &str| {
        let out = hookhost(&[
            "plugin",
            "run",
            filter.to_str().unwrap(),
            "--event",
            &sample(event),
            "--config",
            config.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        json_of(&out)
    };
    assert_eq!(run("alarm-wire-cut")["filter"]["keep"], true);
    assert_eq!(run("alarm-case-open")["filter"]["keep"], false);
    assert_eq!(run("status")["filter"]["keep"], true);

    let v1 = named(dir.path(), "v1-compat", "v1-compat");
    let out = hookhost(&[
        "plugin",
        "run",
        v1.to_str().unwrap(),
        "--event",
        &sample("connection"),
    ]);
    assert!(out.status.success());
    let decision = json_of(&out);
    assert_eq!(decision["filter"]["keep"], true);
    assert_eq!(decision["transform"]["data"]["type"], "connection_changed");
    assert!(
        decision["transform"]["data"]
            .get("location_status")
            .is_none()
    );
}

#[test]
fn run_reports_plugin_failures_and_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let bad = named(dir.path(), "misbehave", "misbehave");
    let config = dir.path().join("loop.json");
    std::fs::write(&config, r#""loop""#).unwrap();
    let out = hookhost(&[
        "plugin",
        "run",
        bad.to_str().unwrap(),
        "--event",
        &sample("alarm-case-open"),
        "--config",
        config.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "a failed role exits 2");
    let decision = json_of(&out);
    let error = decision["filter"]["error"].as_str().unwrap();
    assert!(error.contains("exceeded its CPU limit"), "{decision}");

    let event = dir.path().join("event.json");
    std::fs::write(&event, r#"{"data": {"x": 1}}"#).unwrap();
    let out = hookhost(&[
        "plugin",
        "run",
        bad.to_str().unwrap(),
        "--event",
        event.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("event.json") && stderr.contains("`type` is missing"),
        "{stderr}"
    );

    std::fs::write(&event, "{not json").unwrap();
    let out = hookhost(&[
        "plugin",
        "run",
        bad.to_str().unwrap(),
        "--event",
        event.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not valid JSON"));
}

#[test]
fn test_runs_events_and_catalog_samples_and_fails_on_a_missed_expectation() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = named(dir.path(), "alarm-filter", "alarm-filter");
    let config = dir.path().join("config.json");
    std::fs::write(&config, r#"{"reasons": ["wire_cut"]}"#).unwrap();
    let events = dir.path().join("events");
    std::fs::create_dir(&events).unwrap();
    let with_expect = |name: &str, keep: bool| {
        let mut event: Value =
            serde_json::from_str(&std::fs::read_to_string(sample(name)).unwrap()).unwrap();
        event["expect"] = serde_json::json!({"filter": {"keep": keep}});
        std::fs::write(events.join(format!("{name}.json")), event.to_string()).unwrap();
    };
    with_expect("alarm-wire-cut", true);
    with_expect("alarm-case-open", false);
    let args = |extra: &[&str]| {
        let mut args = vec!["plugin", "test", plugin.to_str().unwrap()];
        args.extend(["--config", config.to_str().unwrap()]);
        args.extend(extra.iter().copied());
        args.iter().map(|a| a.to_string()).collect::<Vec<_>>()
    };
    let run = |args: Vec<String>| {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        hookhost(&refs)
    };

    let out = run(args(&["--events", events.to_str().unwrap()]));
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{table}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        table.contains("| alarm-wire-cut.json | filter: keep | pass |"),
        "{table}"
    );
    assert!(
        table.contains("| alarm-case-open.json | filter: drop | pass |"),
        "{table}"
    );

    // Every catalog sample, repeated in one warm instance: all the same answer.
    let catalog = workspace_root().join("examples/bikeep/catalog.json");
    let out = run(args(&[
        "--catalog",
        catalog.to_str().unwrap(),
        "--repeat",
        "50",
    ]));
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("| bikeep: alarm | filter: drop | ok |"));
    assert!(stderr.contains("0 differed from the first run"), "{stderr}");

    with_expect("alarm-low-voltage", true);
    let out = run(args(&["--events", events.to_str().unwrap()]));
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(1), "{table}");
    assert!(
        table.contains(r#"| alarm-low-voltage.json | filter: drop | FAIL: filter expected {"keep":true}, got {"keep":false} |"#),
        "{table}"
    );
}

/// Runs `hookhost bench ARGS`, which must succeed; its table.
fn bench(args: &[&str]) -> String {
    let out = output_within(
        Command::new(hookhost_bin()).arg("bench").args(args),
        hookhost_tests::PATIENCE * 2,
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// `hookhost bench` with 100 events from 2 clients per run, and `extra`.
fn small_bench(runs: usize, extra: &[&str]) -> String {
    let runs = runs.to_string();
    let mut args = vec!["--events", "100", "--clients", "2", "--runs", &runs];
    args.extend_from_slice(extra);
    bench(&args)
}

/// `hookhost bench` runs the server as a child process, loads it and reports
/// every acknowledged event delivered; with `--data` the second run starts
/// on the first one's data folder, which is kept; `--latency-log` holds a
/// row per delivery.
#[test]
fn bench_runs_the_server_apart_and_reports_every_event_delivered() {
    let data = tempfile::tempdir().unwrap();
    let folder = data.path().join("db");
    let latency_log = data.path().join("latencies.csv");
    let text = bench(&[
        "--events",
        "300",
        "--clients",
        "4",
        "--runs",
        "2",
        "--data",
        folder.to_str().unwrap(),
        "--latency-log",
        latency_log.to_str().unwrap(),
    ]);
    let rows: Vec<Vec<&str>> = text
        .lines()
        .filter(|l| l.starts_with("| 1 |") || l.starts_with("| 2 |"))
        .map(|l| l.split('|').map(str::trim).collect())
        .collect();
    assert_eq!(rows.len(), 2, "{text}");
    for row in &rows {
        // | run | deliveries/s | ingest/s | answer | latency | at last POST | delivered | RSS | CPU | machine CPU | load tool CPU |
        assert_eq!(row[7], "300", "{text}");
        assert!(row[2].parse::<f64>().unwrap() > 0.0, "{text}");
        assert!(row[8].ends_with("MiB") && row[8] != "0 MiB", "{text}");
        let machine_ms: f64 = row[10].trim_end_matches(" ms").parse().unwrap();
        assert!(
            machine_ms > 0.0,
            "the machine was busy during the run: {text}"
        );
        let load_tool_ms: f64 = row[11].trim_end_matches(" ms").parse().unwrap();
        assert!(
            load_tool_ms > 0.0 && load_tool_ms <= machine_ms,
            "the load tool's clients and receiver used CPU, within the machine's: {text}"
        );
    }
    assert!(folder.join("db").is_file(), "the data folder is kept");

    let log = std::fs::read_to_string(&latency_log).unwrap();
    let mut lines = log.lines();
    assert_eq!(lines.next(), Some("run,sent_ms,latency_ms"));
    let mut per_run = [Vec::new(), Vec::new()];
    for line in lines {
        let fields: Vec<&str> = line.split(',').collect();
        let run: usize = fields[0].parse().unwrap();
        let sent: f64 = fields[1].parse().unwrap();
        let latency: f64 = fields[2].parse().unwrap();
        assert!(latency >= 0.0, "{line}");
        per_run[run - 1].push(sent);
    }
    for sent in per_run {
        assert_eq!(sent.len(), 300, "a row per delivery");
        assert_eq!(sent[0], 0.0, "times count from the run's first send");
        assert!(sent.is_sorted(), "rows in the order events were sent");
    }
}

/// `hookhost bench --server-bin PATH` runs that binary as the server: here
/// a wrapper that leaves a mark, then runs the real one.
#[test]
fn bench_runs_the_server_binary_it_is_given() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let mark = dir.path().join("started");
    let wrapper = dir.path().join("other-build");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho \"$@\" >> '{}'\nexec '{}' \"$@\"\n",
            mark.display(),
            hookhost_bin().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let text = small_bench(1, &["--server-bin", wrapper.to_str().unwrap()]);
    let started = std::fs::read_to_string(&mark).unwrap_or_default();
    assert!(
        started.starts_with("serve --config "),
        "the given binary ran as the server: {started:?}"
    );
    assert!(text.lines().any(|l| l.starts_with("| 1 |")), "{text}");
}

/// `hookhost bench --postgres` runs each run on a fresh schema and drops it
/// once read: the database it is pointed at does not fill up with runs.
#[test]
fn bench_on_postgres_drops_each_runs_schema() {
    let pg = hookhost_tests::postgres::shared();
    let text = small_bench(2, &["--postgres", &pg.url()]);
    let rows = text
        .lines()
        .filter(|l| l.starts_with("| 1 |") || l.starts_with("| 2 |"))
        .count();
    assert_eq!(rows, 2, "{text}");
    assert_eq!(
        pg.psql("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'hookhost_bench_%'"),
        "0",
        "the runs' schemas are gone"
    );
}

/// `hookhost compact` copies a stopped server's sled folder into a new one
/// the server then runs on with every event still there; while the server
/// runs, the copy is refused (sled's lock) and says to stop it.
#[test]
fn compact_copies_a_stopped_servers_folder_and_refuses_a_running_one() {
    use hookhost_tests::Running;
    use hookhost_tests::http::{get, post_events};
    let root = tempfile::tempdir().unwrap();
    let config = hookhost_tests::write_config(
        root.path(),
        "",
        "admin_token = \"adm1n\"\n",
        "[store]\nbackend = \"sled\"\n",
    );
    let into = root.path().join("db.new");
    let compact = || {
        output_within(
            Command::new(hookhost_bin()).args([
                "compact",
                "--config",
                &config,
                "--into",
                into.to_str().unwrap(),
            ]),
            hookhost_tests::PATIENCE,
        )
    };
    let mut server = Running::start(&["serve", "--config", &config]);
    let api = server.api_addr(hookhost_tests::PATIENCE);
    let mut ids = Vec::new();
    for batch in 0..3 {
        let events = (0..100)
            .map(|i| serde_json::json!({"type": "report", "data": {"n": batch * 100 + i}}))
            .collect();
        let answer = post_events(api, events);
        ids.extend(
            answer["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|id| id.as_str().unwrap().to_string()),
        );
    }
    let refused = compact();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(stderr.contains("stop it first"), "{stderr}");
    assert!(server.terminate(hookhost_tests::PATIENCE).success());

    let out = compact();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("copied") && stdout.contains("db.new"),
        "{stdout}"
    );
    let db = root.path().join("db");
    std::fs::rename(&db, root.path().join("db.old")).unwrap();
    std::fs::rename(&into, &db).unwrap();

    let mut server = Running::start(&["serve", "--config", &config]);
    let api = server.api_addr(hookhost_tests::PATIENCE);
    for (n, id) in ids.iter().enumerate().step_by(37) {
        let (status, event) = get(
            api,
            &format!("/v1/events/{id}"),
            &["Authorization: Bearer adm1n"],
        );
        assert_eq!(status, 200, "{id}: {event}");
        assert_eq!(event["data"]["n"], n, "{event}");
    }
    assert!(server.terminate(hookhost_tests::PATIENCE).success());
}
