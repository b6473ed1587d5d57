//! The three roles a plugin can play, and the macros that export a plain
//! function as one of them.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Event, Result, config};

/// What a transform changes; `None` leaves that part as it was.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Rewrite {
    pub event_type: Option<String>,
    /// New `data` as JSON text (the host checks it parses).
    pub data: Option<String>,
}

impl Rewrite {
    /// Changes nothing.
    pub fn unchanged() -> Self {
        Rewrite::default()
    }

    /// Renames the event type.
    pub fn with_type(mut self, event_type: impl Into<String>) -> Self {
        self.event_type = Some(event_type.into());
        self
    }

    /// Replaces `data` with `data` serialized.
    pub fn with_data<T: Serialize + ?Sized>(mut self, data: &T) -> Result<Self> {
        self.data = Some(serde_json::to_string(data)?);
        Ok(self)
    }
}

/// Where a router sends an event: subscription ids and subscription tags.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Destinations {
    pub subscriptions: Vec<String>,
    pub tags: Vec<String>,
}

impl Destinations {
    /// Routed nowhere by this plugin (other routers and the subscriptions'
    /// own type matches still decide).
    pub fn none() -> Self {
        Destinations::default()
    }

    /// Every subscription carrying one of `tags`.
    pub fn tags<S: Into<String>>(tags: impl IntoIterator<Item = S>) -> Self {
        Destinations {
            subscriptions: Vec::new(),
            tags: tags.into_iter().map(Into::into).collect(),
        }
    }

    /// The subscriptions with these ids.
    pub fn subscriptions<S: Into<String>>(ids: impl IntoIterator<Item = S>) -> Self {
        Destinations {
            subscriptions: ids.into_iter().map(Into::into).collect(),
            tags: Vec::new(),
        }
    }
}

/// What the export macros call: config from cache, the `only` types, and the
/// WIT's `result<_, string>` shape.
#[doc(hidden)]
pub mod __private {
    use super::*;
    use crate::bindings::{router, transform};

    fn applies(only: &[&str], event: &Event) -> bool {
        only.is_empty() || only.contains(&event.event_type.as_str())
    }

    pub fn keep<C, F>(
        keep: F,
        only: &[&str],
        event: Event,
        config: &str,
    ) -> std::result::Result<bool, String>
    where
        C: DeserializeOwned + Default + 'static,
        F: Fn(&Event, &C) -> Result<bool>,
    {
        if !applies(only, &event) {
            return Ok(true);
        }
        let config = config::parsed::<C>(config).map_err(|e| e.0)?;
        keep(&event, &config).map_err(|e| e.0)
    }

    pub fn transform<C, F>(
        transform: F,
        only: &[&str],
        event: Event,
        config: &str,
    ) -> std::result::Result<transform::exports::hookhost::plugin::transform::Rewrite, String>
    where
        C: DeserializeOwned + Default + 'static,
        F: Fn(&Event, &C) -> Result<Rewrite>,
    {
        let rewrite = if applies(only, &event) {
            let config = config::parsed::<C>(config).map_err(|e| e.0)?;
            transform(&event, &config).map_err(|e| e.0)?
        } else {
            Rewrite::unchanged()
        };
        Ok(transform::exports::hookhost::plugin::transform::Rewrite {
            event_type: rewrite.event_type,
            data: rewrite.data,
        })
    }

    pub fn route<C, F>(
        route: F,
        only: &[&str],
        event: Event,
        config: &str,
    ) -> std::result::Result<router::exports::hookhost::plugin::router::Destinations, String>
    where
        C: DeserializeOwned + Default + 'static,
        F: Fn(&Event, &C) -> Result<Destinations>,
    {
        let destinations = if applies(only, &event) {
            let config = config::parsed::<C>(config).map_err(|e| e.0)?;
            route(&event, &config).map_err(|e| e.0)?
        } else {
            Destinations::none()
        };
        Ok(router::exports::hookhost::plugin::router::Destinations {
            subscriptions: destinations.subscriptions,
            tags: destinations.tags,
        })
    }
}

/// Exports `fn(&Event, &Config) -> Result<bool>` as the plugin's filter
/// (`true` keeps the event). `only: ["alarm", ...]` keeps other types
/// without calling it.
#[macro_export]
macro_rules! filter {
    ($keep:path $(, only: [$($only:expr),* $(,)?])? $(,)?) => {
        struct __HookhostFilter;
        impl $crate::bindings::filter::exports::hookhost::plugin::filter::Guest for __HookhostFilter {
            fn keep(
                event: $crate::bindings::filter::hookhost::plugin::types::Event,
                config: ::std::string::String,
            ) -> ::core::result::Result<bool, ::std::string::String> {
                $crate::__private::keep($keep, &[$($($only),*)?], event.into(), &config)
            }
        }
        $crate::__export_filter_plugin_impl!(__HookhostFilter with_types_in $crate::bindings::filter);
    };
}

/// Exports `fn(&Event, &Config) -> Result<Rewrite>` as the plugin's
/// transform. `only: [...]` leaves other types unchanged without calling it.
#[macro_export]
macro_rules! transform {
    ($transform:path $(, only: [$($only:expr),* $(,)?])? $(,)?) => {
        struct __HookhostTransform;
        impl $crate::bindings::transform::exports::hookhost::plugin::transform::Guest for __HookhostTransform {
            fn transform(
                event: $crate::bindings::transform::hookhost::plugin::types::Event,
                config: ::std::string::String,
            ) -> ::core::result::Result<
                $crate::bindings::transform::exports::hookhost::plugin::transform::Rewrite,
                ::std::string::String,
            > {
                $crate::__private::transform($transform, &[$($($only),*)?], event.into(), &config)
            }
        }
        $crate::__export_transform_plugin_impl!(__HookhostTransform with_types_in $crate::bindings::transform);
    };
}

/// Exports `fn(&Event, &Config) -> Result<Destinations>` as the plugin's
/// router. `only: [...]` routes other types nowhere without calling it.
#[macro_export]
macro_rules! router {
    ($route:path $(, only: [$($only:expr),* $(,)?])? $(,)?) => {
        struct __HookhostRouter;
        impl $crate::bindings::router::exports::hookhost::plugin::router::Guest for __HookhostRouter {
            fn route(
                event: $crate::bindings::router::hookhost::plugin::types::Event,
                config: ::std::string::String,
            ) -> ::core::result::Result<
                $crate::bindings::router::exports::hookhost::plugin::router::Destinations,
                ::std::string::String,
            > {
                $crate::__private::route($route, &[$($($only),*)?], event.into(), &config)
            }
        }
        $crate::__export_router_plugin_impl!(__HookhostRouter with_types_in $crate::bindings::router);
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NoConfig;

    fn is_loud(event: &Event, _: &NoConfig) -> Result<bool> {
        Ok(event.data.contains("loud"))
    }

    #[test]
    fn only_lets_other_types_through_without_calling_the_function() {
        let quiet_report = Event::new("report", serde_json::json!({}));
        let quiet_alarm = Event::new("alarm", serde_json::json!({}));
        assert_eq!(
            __private::keep(is_loud, &["alarm"], quiet_report, ""),
            Ok(true)
        );
        assert_eq!(
            __private::keep(is_loud, &["alarm"], quiet_alarm.clone(), ""),
            Ok(false)
        );
        assert_eq!(__private::keep(is_loud, &[], quiet_alarm, ""), Ok(false));
    }

    #[test]
    fn a_bad_config_is_the_call_s_error() {
        let event = Event::new("alarm", serde_json::json!({}));
        let error = __private::keep(is_loud, &[], event, r#"{"x": 1}"#).unwrap_err();
        assert!(error.starts_with("config: unknown field `x`"), "{error}");
    }

    #[test]
    fn rewrite_and_destinations_build_what_the_host_reads() {
        let rewrite = Rewrite::unchanged()
            .with_type("alarm.v1")
            .with_data(&serde_json::json!({"a": 1}))
            .unwrap();
        assert_eq!(rewrite.event_type.as_deref(), Some("alarm.v1"));
        assert_eq!(rewrite.data.as_deref(), Some(r#"{"a":1}"#));
        assert_eq!(Destinations::tags(["security"]).tags, vec!["security"]);
        assert!(Destinations::none().subscriptions.is_empty());
    }
}
