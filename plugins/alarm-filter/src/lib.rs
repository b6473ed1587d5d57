//! `alarm-filter`: a per-customer alarm filter.
//!
//! Config: `{"categories": ["security"], "reasons": ["wire_cut"]}`, each list
//! optional. An `alarm` event is kept only if its `data.alarm_category` is in
//! `categories` (when given) and its `data.alarm_reason` is in `reasons` (when
//! given). Every other event type passes untouched.

use std::borrow::Cow;

use hookhost_plugin::{Event, Result};
use serde::Deserialize;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Config {
    categories: Option<Vec<String>>,
    reasons: Option<Vec<String>>,
}

/// Only the two fields the filter reads; the rest of `data` is skipped.
/// Borrowed unless the JSON string has escapes: no allocation per event.
#[derive(Deserialize)]
struct Alarm<'a> {
    #[serde(borrow)]
    alarm_category: Option<Cow<'a, str>>,
    #[serde(borrow)]
    alarm_reason: Option<Cow<'a, str>>,
}

fn allows(list: &Option<Vec<String>>, value: Option<&str>) -> bool {
    match list {
        None => true,
        Some(allowed) => value.is_some_and(|v| allowed.iter().any(|a| a == v)),
    }
}

fn keep(event: &Event, config: &Config) -> Result<bool> {
    let alarm: Alarm = event.data()?;
    Ok(allows(&config.categories, alarm.alarm_category.as_deref())
        && allows(&config.reasons, alarm.alarm_reason.as_deref()))
}

hookhost_plugin::filter!(keep, only: ["alarm"]);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keeps_only_the_configured_categories_and_reasons() {
        let config = Config {
            categories: Some(vec!["security".into()]),
            reasons: Some(vec!["wire_cut".into()]),
        };
        let alarm = |category: &str, reason: &str| {
            Event::new(
                "alarm",
                json!({"alarm_category": category, "alarm_reason": reason}),
            )
        };
        assert!(keep(&alarm("security", "wire_cut"), &config).unwrap());
        assert!(!keep(&alarm("security", "tamper"), &config).unwrap());
        assert!(!keep(&alarm("technical", "wire_cut"), &config).unwrap());
        assert!(keep(&alarm("technical", "tamper"), &Config::default()).unwrap());
    }
}
