//! `alarm-router`: alarm-category routing.
//!
//! Config maps an alarm category to the destination tags its alarms go to:
//! `{"routes": {"security": ["security"], "technical": ["maintenance"]},
//!   "default": ["maintenance"]}`. Without config the mapping above is used.
//! An alarm whose category has no entry goes to `default` (nowhere if unset).
//! Non-alarm events are routed to nothing by this plugin, so other routers or
//! the subscriptions' own type matches decide where they go.

wit_bindgen::generate!({ world: "router-plugin", path: "../../wit" });

use std::collections::BTreeMap;

use exports::hookhost::plugin::router::{Destinations, Guest};
use hookhost::plugin::log::{Level, log};
use hookhost::plugin::types::Event;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "default_routes")]
    routes: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    default: Vec<String>,
}

fn default_routes() -> BTreeMap<String, Vec<String>> {
    BTreeMap::from([
        ("security".to_string(), vec!["security".to_string()]),
        ("technical".to_string(), vec!["maintenance".to_string()]),
    ])
}

impl Default for Config {
    fn default() -> Self {
        Config {
            routes: default_routes(),
            default: Vec::new(),
        }
    }
}

#[derive(Deserialize)]
struct AlarmData {
    alarm_category: Option<String>,
}

struct AlarmRouter;

impl Guest for AlarmRouter {
    fn route(event: Event, config: String) -> Result<Destinations, String> {
        let none = Destinations {
            subscriptions: Vec::new(),
            tags: Vec::new(),
        };
        if event.event_type != "alarm" {
            return Ok(none);
        }
        let config: Config = if config.trim().is_empty() {
            Config::default()
        } else {
            serde_json::from_str(&config).map_err(|e| format!("alarm-router config: {e}"))?
        };
        let data: AlarmData = serde_json::from_str(&event.data)
            .map_err(|e| format!("alarm event data is not an object with alarm fields: {e}"))?;
        let tags = match data
            .alarm_category
            .as_deref()
            .and_then(|c| config.routes.get(c))
        {
            Some(tags) => tags.clone(),
            None => {
                log(
                    Level::Warn,
                    &format!(
                        "alarm category {:?} has no route; using default {:?}",
                        data.alarm_category, config.default
                    ),
                );
                config.default
            }
        };
        Ok(Destinations {
            subscriptions: Vec::new(),
            tags,
        })
    }
}

export!(AlarmRouter);
