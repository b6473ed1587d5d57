//! Plugin upload over the management API: `PUT /v1/plugins/{name}` checks a
//! component, writes it into the plugins folder by atomic rename and swaps
//! it in (or, with `?candidate=true`, puts it in shadow); a refused upload
//! changes nothing; `DELETE` takes a plugin or a candidate away.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;

use hookhost_tests::http::{Receiver, get, post_events, request};
use hookhost_tests::{InProcess, PATIENCE, bikeep_sample, built_plugin, wait_until, write_config};
use serde_json::Value;

const ADMIN: &str = "Authorization: Bearer t0ken";

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn plugin_row(api: SocketAddr, name: &str) -> Option<Value> {
    let (status, body) = get(api, "/v1/plugins", &[ADMIN]);
    assert_eq!(status, 200, "{body}");
    body["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .cloned()
}

fn post_alarms(api: SocketAddr) {
    let events: Vec<Value> = ["alarm-case-open", "alarm-wire-cut", "alarm-low-voltage"]
        .iter()
        .map(|name| {
            let mut event = bikeep_sample(name);
            event.as_object_mut().unwrap().remove("id");
            event
        })
        .collect();
    post_events(api, events);
}

/// The status line's code for a request that declares a body but sends none.
fn declared_only(api: SocketAddr, path: &str, length: u64) -> String {
    let mut stream = TcpStream::connect(api).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    write!(
        stream,
        "PUT {path} HTTP/1.1\r\nHost: x\r\n{ADMIN}\r\nContent-Length: {length}\r\n\r\n"
    )
    .unwrap();
    let mut head = [0u8; 64];
    let n = stream.read(&mut head).unwrap();
    String::from_utf8_lossy(&head[..n])
        .split(' ')
        .nth(1)
        .unwrap_or_default()
        .to_string()
}

#[test]
fn an_uploaded_plugin_goes_live_a_bad_one_changes_nothing() {
    let receiver = Receiver::start();
    let root = tempfile::tempdir().unwrap();
    let config = write_config(
        root.path(),
        "",
        "admin_token = \"t0ken\"\n",
        &format!(
            "max_upload_mib = 1\n\
             [[subscriptions]]\nid = \"customer\"\nurl = \"{}\"\ntypes = [\"alarm\"]\nseed = \"s\"\n\
             intervals = {{ \"*\" = \"direct\" }}\n\
             [[subscriptions.plugins]]\nplugin = \"alarm-filter\"\nconfig = {{ reasons = [\"wire_cut\"] }}\n",
            receiver.url("customer")
        ),
    );
    let plugins = root.path().join("plugins");
    let server = InProcess::start(&config);
    let api = server.addr;
    assert!(plugin_row(api, "alarm-filter").is_none());

    // Refusals first: none of them writes a file or loads anything.
    let filter = std::fs::read(built_plugin("alarm-filter")).unwrap();
    let (status, body) = request(api, "PUT", "/v1/plugins/alarm-filter", &[], &filter);
    assert_eq!(status, 401, "{body}");
    let (status, body) = request(
        api,
        "PUT",
        "/v1/plugins/alarm-filter",
        &[ADMIN],
        b"not a component",
    );
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("not a WebAssembly component"),
        "{body}"
    );
    let (status, body) = request(api, "PUT", "/v1/plugins/alarm-filter", &[ADMIN], b"");
    assert_eq!(status, 400, "{body}");
    let (status, body) = request(api, "PUT", "/v1/plugins/alarm.filter", &[ADMIN], &filter);
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("not a plugin name")
    );
    let (status, body) = request(api, "PUT", "/v1/plugins/..%2Fescape", &[ADMIN], &filter);
    assert_eq!(status, 400, "{body}");
    let (status, body) = request(
        api,
        "PUT",
        "/v1/plugins/alarm-filter?candidate=maybe",
        &[ADMIN],
        &filter,
    );
    assert_eq!(status, 400, "{body}");
    // Over max_upload_mib (1 MiB): refused from the declared length alone.
    assert_eq!(
        declared_only(api, "/v1/plugins/alarm-filter", 2 << 20),
        "413"
    );
    assert_eq!(files_in(&plugins), Vec::<String>::new());
    assert!(plugin_row(api, "alarm-filter").is_none());

    // The upload: written as alarm-filter.wasm and serving when answered.
    let (status, body) = request(api, "PUT", "/v1/plugins/alarm-filter", &[ADMIN], &filter);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["file"], "alarm-filter.wasm");
    let sha = body["installed"]["sha256"].as_str().unwrap().to_string();
    assert_eq!(files_in(&plugins), ["alarm-filter.wasm"]);
    assert_eq!(
        std::fs::read(plugins.join("alarm-filter.wasm")).unwrap(),
        filter
    );
    let row = plugin_row(api, "alarm-filter").unwrap();
    assert_eq!(row["serving"]["sha256"], sha.as_str(), "{row}");
    post_alarms(api);
    receiver.wait_count("customer", 1, PATIENCE);

    // A candidate that keeps every alarm, uploaded into shadow: compared on
    // the next alarms, acted on never.
    let candidate = std::fs::read(built_plugin("misbehave")).unwrap();
    let (status, body) = request(
        api,
        "PUT",
        "/v1/plugins/alarm-filter?candidate=true",
        &[ADMIN],
        &candidate,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["file"], "alarm-filter.next.wasm");
    assert_eq!(
        files_in(&plugins),
        ["alarm-filter.next.wasm", "alarm-filter.wasm"]
    );
    post_alarms(api);
    let shadow = || plugin_row(api, "alarm-filter").unwrap()["candidate"]["shadow"].clone();
    wait_until(PATIENCE, || shadow()["compared"] == 3)
        .unwrap_or_else(|| panic!("not compared on three alarms: {}", shadow()));
    assert_eq!(shadow()["disagreed"], 2, "{}", shadow());
    receiver.wait_count("customer", 2, PATIENCE);

    // Ending the trial: the candidate's file and its shadow go.
    let (status, body) = request(
        api,
        "DELETE",
        "/v1/plugins/alarm-filter?candidate=true",
        &[ADMIN],
        b"",
    );
    assert_eq!(status, 204, "{body}");
    assert_eq!(files_in(&plugins), ["alarm-filter.wasm"]);
    let row = plugin_row(api, "alarm-filter").unwrap();
    assert!(row.get("candidate").is_none(), "{row}");
    assert_eq!(row["serving"]["sha256"], sha.as_str());
    let (status, body) = request(
        api,
        "DELETE",
        "/v1/plugins/alarm-filter?candidate=true",
        &[ADMIN],
        b"",
    );
    assert_eq!(status, 404, "{body}");

    server.stop();
    // Two wire cuts, one per round: the candidate's "keep" never went out.
    assert_eq!(receiver.count("customer"), 2);
}
