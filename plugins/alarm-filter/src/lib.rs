//! `alarm-filter`: a per-customer alarm filter.
//!
//! Config: `{"categories": ["security"], "reasons": ["wire_cut"]}`, each list
//! optional. An `alarm` event is kept only if its `data.alarm_category` is in
//! `categories` (when given) and its `data.alarm_reason` is in `reasons` (when
//! given). Every other event type passes untouched.

wit_bindgen::generate!({ world: "filter-plugin", path: "../../wit" });

use exports::hookhost::plugin::filter::Guest;
use hookhost::plugin::types::Event;
use serde::Deserialize;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Config {
    categories: Option<Vec<String>>,
    reasons: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct AlarmData {
    alarm_category: Option<String>,
    alarm_reason: Option<String>,
}

fn allows(list: &Option<Vec<String>>, value: Option<&str>) -> bool {
    match list {
        None => true,
        Some(allowed) => value.is_some_and(|v| allowed.iter().any(|a| a == v)),
    }
}

struct AlarmFilter;

impl Guest for AlarmFilter {
    fn keep(event: Event, config: String) -> Result<bool, String> {
        if event.event_type != "alarm" {
            return Ok(true);
        }
        let config: Config = if config.trim().is_empty() {
            Config::default()
        } else {
            serde_json::from_str(&config).map_err(|e| format!("alarm-filter config: {e}"))?
        };
        let data: AlarmData = serde_json::from_str(&event.data)
            .map_err(|e| format!("alarm event data is not an object with alarm fields: {e}"))?;
        Ok(allows(&config.categories, data.alarm_category.as_deref())
            && allows(&config.reasons, data.alarm_reason.as_deref()))
    }
}

export!(AlarmFilter);
