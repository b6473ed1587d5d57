//! `v1-compat`: turns version-2 bike-parking events into the version-1 form
//! for consumers still on v1 (see the seed's "Versioning" section).
//!
//! - As a **filter** it drops the event types version 1 never had
//!   (`connection_confirmed`, `parking_reminder`, `status`, `report`), which a
//!   v1 consumer cannot parse.
//! - As a **transform** it sets `data.type` to the version-1 name
//!   (`connection` → `connection_changed`, `alarm` → `alarm`) and removes the
//!   fields version 2 added (`location_status`, `alarm_category`).
//!
//! The canonical event type is left as is: the `bikeep-v1` envelope writes
//! no top-level type, and aggregation keys on the canonical name.
//! Config: none (an empty string or `{}`).

use hookhost_plugin::{Event, NoConfig, Result, Rewrite, bail};
use serde_json::Value;

/// Event types that exist in version 1, with the `data.type` they carried.
fn v1_name(event_type: &str) -> Option<Option<&'static str>> {
    match event_type {
        "connection" => Some(Some("connection_changed")),
        "alarm" => Some(Some("alarm")),
        "maintenance_log" => Some(None),
        _ => None,
    }
}

/// Fields added to existing events in version 2.
const V2_FIELDS: [&str; 2] = ["location_status", "alarm_category"];

fn keep(event: &Event, _: &NoConfig) -> Result<bool> {
    Ok(v1_name(&event.event_type).is_some())
}

fn transform(event: &Event, _: &NoConfig) -> Result<Rewrite> {
    let Some(data_type) = v1_name(&event.event_type) else {
        bail!(
            "event type {:?} does not exist in version 1",
            event.event_type
        );
    };
    let mut data = event.data_object()?;
    for field in V2_FIELDS {
        data.shift_remove(field);
    }
    if let Some(name) = data_type {
        match data.get_mut("type") {
            Some(value) => *value = Value::String(name.to_string()),
            // v1 consumers read `data.type` first: keep it first, as v1 sent it.
            None => {
                data.shift_insert(0, "type".to_string(), Value::String(name.to_string()));
            }
        }
    }
    Rewrite::unchanged().with_data(&data)
}

hookhost_plugin::filter!(keep);
hookhost_plugin::transform!(transform);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn connection_gets_its_v1_name_first_and_loses_v2_fields() {
        let event = Event::new(
            "connection",
            json!({"location_id": "L1", "location_status": "up"}),
        );
        let data = transform(&event, &NoConfig {}).unwrap().data.unwrap();
        assert_eq!(data, r#"{"type":"connection_changed","location_id":"L1"}"#);
        assert!(!keep(&Event::new("report", json!({})), &NoConfig {}).unwrap());
    }
}
