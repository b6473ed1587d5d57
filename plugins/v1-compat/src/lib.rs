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

wit_bindgen::generate!({
    inline: "
        package hookhost:v1-compat;
        world v1-compat {
            include hookhost:plugin/filter-plugin@0.1.0;
            include hookhost:plugin/transform-plugin@0.1.0;
        }
    ",
    path: "../../wit",
    generate_all,
});

use exports::hookhost::plugin::filter::Guest as Filter;
use exports::hookhost::plugin::transform::{Guest as Transform, Rewrite};
use hookhost::plugin::types::Event;
use serde_json::{Map, Value};

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

struct V1Compat;

impl Filter for V1Compat {
    fn keep(event: Event, _config: String) -> Result<bool, String> {
        Ok(v1_name(&event.event_type).is_some())
    }
}

impl Transform for V1Compat {
    fn transform(event: Event, _config: String) -> Result<Rewrite, String> {
        let Some(data_type) = v1_name(&event.event_type) else {
            return Err(format!(
                "event type {:?} does not exist in version 1",
                event.event_type
            ));
        };
        let mut data: Map<String, Value> = serde_json::from_str(&event.data)
            .map_err(|e| format!("event data is not a JSON object: {e}"))?;
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
        let data = serde_json::to_string(&data).map_err(|e| e.to_string())?;
        Ok(Rewrite {
            event_type: None,
            data: Some(data),
        })
    }
}

export!(V1Compat);
