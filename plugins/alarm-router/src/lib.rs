//! `alarm-router`: alarm-category routing.
//!
//! Config maps an alarm category to the destination tags its alarms go to:
//! `{"routes": {"security": ["security"], "technical": ["maintenance"]},
//!   "default": ["maintenance"]}`. Without config the mapping above is used.
//! An alarm whose category has no entry goes to `default` (nowhere if unset).
//! Non-alarm events are routed to nothing by this plugin, so other routers or
//! the subscriptions' own type matches decide where they go.

use std::collections::BTreeMap;

use hookhost_plugin::{Destinations, Event, Result, log};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Config {
    routes: BTreeMap<String, Vec<String>>,
    default: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        let route = |category: &str, tag: &str| (category.to_string(), vec![tag.to_string()]);
        Config {
            routes: BTreeMap::from([
                route("security", "security"),
                route("technical", "maintenance"),
            ]),
            default: Vec::new(),
        }
    }
}

#[derive(Deserialize)]
struct Alarm {
    alarm_category: Option<String>,
}

fn route(event: &Event, config: &Config) -> Result<Destinations> {
    let alarm: Alarm = event.data()?;
    match alarm
        .alarm_category
        .as_deref()
        .and_then(|c| config.routes.get(c))
    {
        Some(tags) => Ok(Destinations::tags(tags)),
        None => {
            let (category, default) = (&alarm.alarm_category, &config.default);
            log!(
                Warn,
                "alarm category {category:?} has no route; using default {default:?}"
            );
            Ok(Destinations::tags(default))
        }
    }
}

hookhost_plugin::router!(route, only: ["alarm"]);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn routes_by_category_with_the_default_for_the_rest() {
        let alarm = |category: &str| Event::new("alarm", json!({"alarm_category": category}));
        let config = Config::default();
        assert_eq!(
            route(&alarm("technical"), &config).unwrap().tags,
            ["maintenance"]
        );
        assert!(route(&alarm("other"), &config).unwrap().tags.is_empty());
        let config = Config {
            default: vec!["ops".into()],
            ..Config::default()
        };
        assert_eq!(route(&alarm("other"), &config).unwrap().tags, ["ops"]);
    }
}
