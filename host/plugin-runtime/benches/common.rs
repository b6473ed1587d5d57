//! Shared by the benches: the built example plugins and a ~1 KB alarm event.

use std::path::PathBuf;

use hookhost_plugin_runtime::Event;

pub fn built_plugin(crate_name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let path = target
        .join("wasm32-wasip2/release")
        .join(format!("{}.wasm", crate_name.replace('-', "_")));
    assert!(
        path.is_file(),
        "{} is missing: run `./dev bench`",
        path.display()
    );
    path
}

/// The seed's alarm payload with nine devices: about 1 KB of data.
pub fn alarm_1kb() -> Event {
    let devices: Vec<serde_json::Value> = (1..=9)
        .map(|n| {
            serde_json::json!({
                "device_id": format!("f1e2d3c4-b5a6-7890-abcd-ef123456789{n}"),
                "device_nr": n.to_string()
            })
        })
        .collect();
    let data = serde_json::json!({
        "type": "alarm",
        "location_id": "a1b2c3d4-e5f6-7890-abcd-ef1234567890",
        "location_name": "#1234 Office Building A",
        "location_address": "123 Main Street",
        "location_code": "#1234",
        "location_coordinates": {"latitude": 59.42776, "longitude": 24.81521},
        "location_status": "LAUNCHED",
        "alarm_reason": "wire_cut",
        "alarm_category": "security",
        "timestamp": "2025-12-15T10:35:00Z",
        "devices": devices
    });
    Event {
        id: "evt_bench".into(),
        event_type: "alarm".into(),
        timestamp: "2025-12-15T10:35:00Z".into(),
        data: data.to_string(),
    }
}

/// A copy of a built plugin under its plugin name (`NAME.wasm`), in a temp
/// folder that lives for the whole bench run.
pub fn built_plugin_named(crate_name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hookhost-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(format!("{crate_name}.wasm"));
    std::fs::copy(built_plugin(crate_name), &path).expect("copy plugin");
    path
}

/// A JavaScript or Python plugin built by `./dev bench` (`target/plugins/NAME.wasm`).
pub fn built_language_plugin(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let path = target.join("plugins").join(format!("{name}.wasm"));
    assert!(
        path.is_file(),
        "{} is missing: run `./dev bench`",
        path.display()
    );
    path
}
