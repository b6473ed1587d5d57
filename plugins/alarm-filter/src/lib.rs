//! `alarm-filter`: a per-customer alarm filter.
//!
//! Config: `{"categories": ["security"], "reasons": ["wire_cut"]}`, each list
//! optional. An `alarm` event is kept only if its `data.alarm_category` is in
//! `categories` (when given) and its `data.alarm_reason` is in `reasons` (when
//! given). Every other event type passes untouched.

wit_bindgen::generate!({ world: "filter-plugin", path: "../../wit" });

use exports::hookhost::plugin::filter::Guest;
use hookhost::plugin::types::Event;
use std::borrow::Cow;
use std::cell::RefCell;
use std::rc::Rc;

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
struct AlarmData<'a> {
    #[serde(borrow)]
    alarm_category: Option<Cow<'a, str>>,
    #[serde(borrow)]
    alarm_reason: Option<Cow<'a, str>>,
}

thread_local! {
    /// The last config seen and its parsed form: a subscription's config is
    /// the same text on every call, and a reused instance keeps this.
    static CONFIG: RefCell<Option<(String, Rc<Config>)>> = const { RefCell::new(None) };
}

fn parse_config(text: &str) -> Result<Rc<Config>, String> {
    CONFIG.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some((last, parsed)) = cache.as_ref()
            && last == text
        {
            return Ok(parsed.clone());
        }
        let parsed = Rc::new(if text.trim().is_empty() {
            Config::default()
        } else {
            serde_json::from_str(text).map_err(|e| format!("alarm-filter config: {e}"))?
        });
        *cache = Some((text.to_string(), parsed.clone()));
        Ok(parsed)
    })
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
        let config = parse_config(&config)?;
        let data: AlarmData = serde_json::from_str(&event.data)
            .map_err(|e| format!("alarm event data is not an object with alarm fields: {e}"))?;
        Ok(allows(&config.categories, data.alarm_category.as_deref())
            && allows(&config.reasons, data.alarm_reason.as_deref()))
    }
}

export!(AlarmFilter);
