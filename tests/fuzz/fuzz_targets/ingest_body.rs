//! `POST /v1/events` bodies: any bytes give events or a 4xx, never a panic;
//! accepted events carry JSON-object data and an RFC 3339 timestamp.
#![no_main]

use std::sync::LazyLock;

use hookhost_core::config::Config;
use hookhost_core::intake::parse::parse_events;
use libfuzzer_sys::fuzz_target;

static CONFIG: LazyLock<Config> = LazyLock::new(Config::default);

fuzz_target!(|body: &[u8]| {
    if let Ok(parsed) = parse_events(&CONFIG, body, 1_765_794_600_000) {
        assert_eq!(parsed.events.len(), parsed.id_given.len());
        for event in &parsed.events {
            let data: serde_json::Value = serde_json::from_str(&event.data).expect("data is JSON");
            assert!(data.is_object());
            assert!(!event.id.is_empty() && !event.event_type.is_empty());
            hookhost_core::clock::parse_rfc3339_ms(&event.timestamp).expect("timestamp parses");
        }
    }
});
