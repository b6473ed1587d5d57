//! Events as clients (and plugin authors, for `hookhost plugin run`) write
//! them: `{"type": "...", "data": {...}}` with optional `id` and `timestamp`.
//! The bike-parking seed's delivered envelope (`{"type", "data", "version",
//! "hash"}`) reads the same way, so a sample copied from its docs works too.

use std::time::SystemTime;

use serde_json::{Map, Value};

use hookhost_plugin_runtime::Event;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("an event must be a JSON object")]
    NotAnObject,
    #[error("field `type` is missing")]
    MissingType,
    #[error("field `type` must be a non-empty string")]
    BadType,
    #[error("field `data` must be a JSON object")]
    BadData,
    #[error("field `{0}` must be a non-empty string")]
    BadField(&'static str),
    #[error("field `timestamp` is not an RFC 3339 time: {0}")]
    BadTimestamp(String),
}

/// Reads one event. Without `id` a fresh one is made; without `timestamp`,
/// `data.timestamp` is used if it is a string, else the current time.
pub fn from_json(value: &Value) -> Result<Event, EventError> {
    let object = value.as_object().ok_or(EventError::NotAnObject)?;
    let event_type = match object.get("type") {
        None => return Err(EventError::MissingType),
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(_) => return Err(EventError::BadType),
    };
    let data = match object.get("data") {
        None => Map::new(),
        Some(Value::Object(map)) => map.clone(),
        Some(_) => return Err(EventError::BadData),
    };
    let id = match object.get("id") {
        None => new_event_id(),
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(_) => return Err(EventError::BadField("id")),
    };
    let timestamp = match object.get("timestamp").or_else(|| data.get("timestamp")) {
        None => now_rfc3339(),
        Some(Value::String(s)) => {
            crate::clock::parse_rfc3339_ms(s).map_err(EventError::BadTimestamp)?;
            s.clone()
        }
        Some(_) => return Err(EventError::BadField("timestamp")),
    };
    let data = serde_json::to_string(&data).map_err(|_| EventError::BadData)?;
    Ok(Event {
        id,
        event_type,
        timestamp,
        data,
    })
}

/// A new, time-ordered event id (`evt_` + UUIDv7).
pub fn new_event_id() -> String {
    format!("evt_{}", uuid::Uuid::now_v7().simple())
}

pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn seed_envelope_reads_as_an_event() {
        let e = from_json(&json!({
            "type": "alarm",
            "data": {"type": "alarm", "alarm_category": "security", "timestamp": "2025-12-15T10:35:00Z"},
            "version": 2,
            "hash": "a1b2"
        }))
        .unwrap();
        assert_eq!(e.event_type, "alarm");
        assert_eq!(e.timestamp, "2025-12-15T10:35:00Z");
        assert!(e.id.starts_with("evt_"));
        // Key order is kept as written (serde_json preserve_order).
        assert_eq!(
            e.data,
            r#"{"type":"alarm","alarm_category":"security","timestamp":"2025-12-15T10:35:00Z"}"#
        );
    }

    #[test]
    fn bad_events_name_the_field() {
        assert_eq!(from_json(&json!([1])).unwrap_err(), EventError::NotAnObject);
        assert_eq!(
            from_json(&json!({"data": {}})).unwrap_err(),
            EventError::MissingType
        );
        assert_eq!(
            from_json(&json!({"type": 3})).unwrap_err(),
            EventError::BadType
        );
        assert_eq!(
            from_json(&json!({"type": "a", "data": [1]})).unwrap_err(),
            EventError::BadData
        );
        assert_eq!(
            from_json(&json!({"type": "a", "id": 7})).unwrap_err(),
            EventError::BadField("id")
        );
        assert!(matches!(
            from_json(&json!({"type": "a", "timestamp": "yesterday"})),
            Err(EventError::BadTimestamp(_))
        ));
    }
}
