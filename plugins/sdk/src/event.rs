//! The event a plugin is called with.

use serde::Deserialize;

use crate::{Error, Result};

/// One webhook event, as the host passes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Stable id (the same across retries and restarts).
    pub id: String,
    /// Canonical event type, e.g. `alarm`.
    pub event_type: String,
    /// When it happened, RFC 3339 in UTC.
    pub timestamp: String,
    /// The `data` object as JSON text.
    pub data: String,
}

impl Event {
    /// An event for tests: `data` is any JSON value.
    pub fn new(event_type: &str, data: serde_json::Value) -> Self {
        Event {
            id: "evt_test".to_string(),
            event_type: event_type.to_string(),
            timestamp: "2025-01-01T00:00:00Z".to_string(),
            data: data.to_string(),
        }
    }

    /// Whether this event is of type `event_type`.
    pub fn is(&self, event_type: &str) -> bool {
        self.event_type == event_type
    }

    /// `data` read as `T`. `T` may borrow from the event (`&str`, `Cow`)
    /// and name only the fields it needs; the rest is skipped unparsed.
    pub fn data<'a, T: Deserialize<'a>>(&'a self) -> Result<T> {
        serde_json::from_str(&self.data).map_err(|e| {
            Error::new(format!(
                "{} event data does not have the expected form: {e}",
                self.event_type
            ))
        })
    }

    /// `data` as a JSON object, for plugins that edit it.
    pub fn data_object(&self) -> Result<serde_json::Map<String, serde_json::Value>> {
        self.data()
    }
}

macro_rules! from_world_event {
    ($($world:ident),*) => {$(
        impl From<crate::bindings::$world::hookhost::plugin::types::Event> for Event {
            fn from(event: crate::bindings::$world::hookhost::plugin::types::Event) -> Self {
                Event {
                    id: event.id,
                    event_type: event.event_type,
                    timestamp: event.timestamp,
                    data: event.data,
                }
            }
        }
    )*};
}

from_world_event!(filter, transform, router);

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    #[derive(Deserialize)]
    struct Alarm<'a> {
        #[serde(borrow)]
        alarm_category: Cow<'a, str>,
    }

    #[test]
    fn data_reads_borrowed_fields_and_names_the_type_when_it_cannot() {
        let event = Event::new(
            "alarm",
            serde_json::json!({"alarm_category": "security", "x": 1}),
        );
        let alarm: Alarm = event.data().unwrap();
        assert_eq!(alarm.alarm_category, "security");
        assert!(matches!(alarm.alarm_category, Cow::Borrowed(_)));

        let wrong = Event::new("alarm", serde_json::json!({"alarm_category": 7}));
        let error = wrong.data::<Alarm>().err().unwrap();
        assert!(
            error
                .message()
                .starts_with("alarm event data does not have the expected form"),
            "{error}"
        );
    }
}
