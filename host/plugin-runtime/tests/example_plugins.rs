//! The example plugins' behaviour, through the host's runtime, on payloads
//! copied from the bike-parking seed. Every check runs in both isolation modes.

use crate::util::{Host, bikeep_event};
use hookhost_plugin_runtime::Event;
use hookhost_plugin_runtime::{Isolation, PluginsConfig};
use serde_json::{Value, json};

fn hosts() -> Vec<Host> {
    [Isolation::Reuse, Isolation::Fresh]
        .into_iter()
        .map(|isolation| {
            let host = Host::new(PluginsConfig {
                isolation,
                ..Default::default()
            });
            host.install("alarm-filter", "alarm-filter");
            host.install("alarm-router", "alarm-router");
            host.install("v1-compat", "v1-compat");
            host
        })
        .collect()
}

fn keep(host: &Host, event: &Event, config: Value) -> bool {
    let config = if config.is_null() {
        String::new()
    } else {
        config.to_string()
    };
    host.registry
        .get("alarm-filter")
        .unwrap()
        .keep(event, &config)
        .unwrap()
}

#[test]
fn alarm_filter_by_category() {
    for host in hosts() {
        let security = json!({"categories": ["security"]});
        assert!(keep(
            &host,
            &bikeep_event("alarm-case-open"),
            security.clone()
        ));
        assert!(keep(
            &host,
            &bikeep_event("alarm-wire-cut"),
            security.clone()
        ));
        assert!(!keep(
            &host,
            &bikeep_event("alarm-low-voltage"),
            security.clone()
        ));
        assert!(!keep(
            &host,
            &bikeep_event("alarm-ups-power-lost"),
            security
        ));
        let technical = json!({"categories": ["technical"]});
        assert!(keep(
            &host,
            &bikeep_event("alarm-low-voltage"),
            technical.clone()
        ));
        assert!(!keep(&host, &bikeep_event("alarm-case-open"), technical));
    }
}

#[test]
fn alarm_filter_by_reason_and_both() {
    for host in hosts() {
        let wire_cut = json!({"reasons": ["wire_cut"]});
        assert!(keep(
            &host,
            &bikeep_event("alarm-wire-cut"),
            wire_cut.clone()
        ));
        assert!(!keep(&host, &bikeep_event("alarm-case-open"), wire_cut));
        // Both lists must match.
        let both = json!({"categories": ["technical"], "reasons": ["wire_cut", "low_voltage"]});
        assert!(keep(
            &host,
            &bikeep_event("alarm-low-voltage"),
            both.clone()
        ));
        assert!(!keep(&host, &bikeep_event("alarm-wire-cut"), both));
        // No config, or empty lists object: every alarm passes.
        assert!(keep(&host, &bikeep_event("alarm-case-open"), Value::Null));
        assert!(keep(&host, &bikeep_event("alarm-low-voltage"), json!({})));
        // An empty list keeps nothing.
        assert!(!keep(
            &host,
            &bikeep_event("alarm-case-open"),
            json!({"reasons": []})
        ));
    }
}

#[test]
fn alarm_filter_passes_other_types_untouched() {
    for host in hosts() {
        let only_wire_cut = json!({"reasons": ["wire_cut"]});
        for sample in [
            "connection",
            "connection_confirmed",
            "status",
            "parking_reminder",
            "report",
        ] {
            assert!(
                keep(&host, &bikeep_event(sample), only_wire_cut.clone()),
                "{sample}"
            );
        }
    }
}

#[test]
fn alarm_filter_reports_bad_config_as_an_error() {
    for host in hosts() {
        let plugin = host.registry.get("alarm-filter").unwrap();
        let err = plugin
            .keep(
                &bikeep_event("alarm-case-open"),
                r#"{"category": "security"}"#,
            )
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`alarm-filter`") && err.contains("config: unknown field `category`"),
            "{err}"
        );
        // The instance is fine afterwards.
        assert!(plugin.keep(&bikeep_event("alarm-case-open"), "").unwrap());
    }
}

#[test]
fn alarm_router_routes_by_category() {
    for host in hosts() {
        let router = host.registry.get("alarm-router").unwrap();
        let tags =
            |sample: &str, config: &str| router.route(&bikeep_event(sample), config).unwrap().tags;
        assert_eq!(tags("alarm-case-open", ""), ["security"]);
        assert_eq!(tags("alarm-wire-cut", ""), ["security"]);
        assert_eq!(tags("alarm-low-voltage", ""), ["maintenance"]);
        let custom = json!({
            "routes": {"security": ["security", "night-shift"], "technical": ["field-ops"]},
            "default": ["triage"]
        })
        .to_string();
        assert_eq!(
            tags("alarm-case-open", &custom),
            ["security", "night-shift"]
        );
        assert_eq!(tags("alarm-ups-power-lost", &custom), ["field-ops"]);
        let mut unknown = bikeep_event("alarm-case-open");
        unknown.data = unknown.data.replace("\"security\"", "\"vandalism\"");
        assert_eq!(router.route(&unknown, &custom).unwrap().tags, ["triage"]);
        // Non-alarm events get no destinations from this router.
        let none = router.route(&bikeep_event("connection"), "").unwrap();
        assert!(none.tags.is_empty() && none.subscriptions.is_empty());
    }
}

#[test]
fn v1_compat_rewrites_connection_and_alarm() {
    for host in hosts() {
        let v1 = host.registry.get("v1-compat").unwrap();
        let connection = bikeep_event("connection");
        assert!(v1.keep(&connection, "").unwrap());
        let rewrite = v1.transform(&connection, "").unwrap();
        assert_eq!(rewrite.event_type, None, "the canonical type stays");
        let data: serde_json::Map<String, Value> =
            serde_json::from_str(rewrite.data.as_deref().unwrap()).unwrap();
        assert_eq!(data["type"], "connection_changed");
        assert!(!data.contains_key("location_status"));
        // Everything else is kept, in the original order.
        let original: serde_json::Map<String, Value> =
            serde_json::from_str(&connection.data).unwrap();
        let expected: Vec<&String> = original
            .keys()
            .filter(|k| *k != "location_status")
            .collect();
        assert_eq!(data.keys().collect::<Vec<_>>(), expected);
        assert_eq!(data["devices"], original["devices"]);

        let alarm = v1.transform(&bikeep_event("alarm-wire-cut"), "").unwrap();
        let data: Value = serde_json::from_str(alarm.data.as_deref().unwrap()).unwrap();
        assert_eq!(data["type"], "alarm");
        assert_eq!(data["alarm_reason"], "wire_cut");
        assert!(data.get("alarm_category").is_none() && data.get("location_status").is_none());

        let log = v1.transform(&bikeep_event("maintenance_log"), "").unwrap();
        let data: Value = serde_json::from_str(log.data.as_deref().unwrap()).unwrap();
        assert!(data.get("location_status").is_none() && data.get("type").is_none());
        assert_eq!(data["action"], "created");
    }
}

#[test]
fn v1_compat_drops_types_version_1_never_had() {
    for host in hosts() {
        let v1 = host.registry.get("v1-compat").unwrap();
        for sample in [
            "connection_confirmed",
            "parking_reminder",
            "status",
            "report",
        ] {
            let event = bikeep_event(sample);
            assert!(!v1.keep(&event, "").unwrap(), "{sample} should be dropped");
            let err = v1.transform(&event, "").unwrap_err().to_string();
            assert!(err.contains("does not exist in version 1"), "{err}");
        }
        for sample in ["connection", "alarm-case-open", "maintenance_log"] {
            assert!(
                v1.keep(&bikeep_event(sample), "").unwrap(),
                "{sample} should be kept"
            );
        }
    }
}
