//! Operational events: hookhost's own events about its deliveries, as
//! ordinary events of a built-in catalog (`hookhost.*`), so that an operator
//! subscribes an endpoint of their own to them and gets them signed,
//! retried and filterable like any other. They are `partner` types and a
//! wildcard (`*`) never matches them: only a subscription that names
//! `hookhost.` types explicitly receives them. Clients cannot post them.
//! None is emitted about the delivery of an operational event (no loops).

use serde_json::{Value, json};

use crate::catalog::Catalog;
use crate::clock::rfc3339_seconds;
use crate::model::{OPERATIONAL_PREFIX, StoredEvent};

pub const DELIVERY_EXHAUSTED: &str = "hookhost.delivery.exhausted";
pub const DELIVERY_FAILING: &str = "hookhost.delivery.failing";
pub const SUBSCRIPTION_DISABLED: &str = "hookhost.subscription.disabled";
pub const SUBSCRIPTION_RECOVERED: &str = "hookhost.subscription.recovered";
pub const PLUGIN_REFUSED: &str = "hookhost.plugin.refused";

pub fn is_operational(event_type: &str) -> bool {
    event_type.starts_with(OPERATIONAL_PREFIX)
}

/// The built-in catalog of operational event types.
pub fn catalog() -> Catalog {
    let sample_delivery = json!({
        "delivery_id": "msg_5f0c1a...", "subscription_id": "acme", "event_id": "evt_01...",
        "event_type": "alarm", "attempts": 4, "last_status": 503,
        "last_error": null, "timestamp": "2025-12-15T10:30:00Z"
    });
    let sample_subscription = json!({
        "subscription_id": "acme", "reason": "the endpoint answered 410 Gone",
        "timestamp": "2025-12-15T10:30:00Z"
    });
    let kind = |name: &str, description: &str, sample: &Value| {
        json!({"name": name, "description": description, "tier": "partner",
               "delivery": "direct", "sample": sample})
    };
    serde_json::from_value(json!({
        "name": "hookhost",
        "description": "hookhost's own operational events (subscribe with types = [\"hookhost.*\"], tier = \"partner\")",
        "event_types": [
            kind(DELIVERY_EXHAUSTED, "A delivery went to the dead letters: out of retries, or refused by the endpoint.", &sample_delivery),
            kind(DELIVERY_FAILING, "A delivery has failed delivery.failing_after_attempts times in a row and is still retried.", &sample_delivery),
            kind(SUBSCRIPTION_DISABLED, "hookhost disabled a subscription's endpoint (410 Gone, or only failures for days); its deliveries wait.", &sample_subscription),
            kind(SUBSCRIPTION_RECOVERED, "A disabled endpoint was enabled again; its waiting deliveries are sent.", &sample_subscription),
            kind(PLUGIN_REFUSED, "A plugin file dropped into the plugins folder was refused; the earlier version (if any) keeps serving.", &json!({
                "plugin": "alarm-filter", "error": "not a WebAssembly component",
                "previous_version_serving": true, "timestamp": "2025-12-15T10:30:00Z"
            })),
        ]
    }))
    .expect("the built-in catalog is well-formed")
}

/// An operational event of `event_type`; `key` makes its id (the same
/// happening twice, e.g. after a crash, is one event).
pub fn event(event_type: &str, key: &str, at_ms: u64, mut data: Value) -> StoredEvent {
    let timestamp = rfc3339_seconds(at_ms);
    if let Some(o) = data.as_object_mut() {
        o.insert("timestamp".into(), json!(timestamp));
    }
    let kind = event_type
        .trim_start_matches(OPERATIONAL_PREFIX)
        .replace('.', "_");
    StoredEvent {
        id: format!("evt_hookhost_{kind}_{key}"),
        event_type: event_type.to_string(),
        timestamp,
        data: data.to_string(),
        received_at_ms: at_ms,
        errors: Vec::new(),
        plugin_decisions: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_catalog_lists_partner_types_only() {
        let c = catalog();
        assert_eq!(c.event_types.len(), 5);
        assert!(
            c.event_types
                .iter()
                .all(|t| t.tier == crate::model::Tier::Partner)
        );
        assert!(c.event_types.iter().all(|t| is_operational(&t.name)));
    }
}
