//! The pipeline: per accepted event, the global router plugins pick
//! destinations, then each subscription's type match and filter/transform
//! chain decide what it receives. Every surviving (event, subscription) pair
//! becomes a delivery [`Job`].
//!
//! A plugin with a candidate version in shadow (`NAME.next.wasm`) has the
//! candidate called on the same input after it; the candidate's answer is
//! only compared and counted, never used.
//!
//! Plugin calls here are synchronous (wasmtime); callers run [`Pipeline::run`]
//! on a blocking thread. A plugin error is recorded on the event and, for a
//! subscription's chain, on that subscription's job; it never stops the rest.

use std::collections::HashSet;
use std::sync::Arc;

use crate::config::Config;
use crate::model::{DroppedBy, Job, JobStatus, RoutedBy, StoredEvent};
use crate::model::{PluginStep, Subscription};
use crate::subscriptions::Subscriptions;
use hookhost_plugin_runtime::{CallError, Event, Registry};

/// What a subscription's chain made of an event.
enum Chained {
    /// Send it, with this (possibly rewritten) type and data.
    Keep(String, String),
    /// This filter dropped it.
    DroppedBy(String),
}

pub struct Pipeline {
    registry: Arc<Registry>,
    config: Arc<Config>,
    subscriptions: Arc<Subscriptions>,
}

pub use crate::model::job_id;

impl Pipeline {
    pub fn new(
        registry: Arc<Registry>,
        config: Arc<Config>,
        subscriptions: Arc<Subscriptions>,
    ) -> Pipeline {
        Pipeline {
            registry,
            config,
            subscriptions,
        }
    }

    /// Runs subscription `subscription_id`'s current plugin chain on `event`
    /// (a `plugin_error` delivery being re-sent): the type and data to send,
    /// or `None` if a filter drops it.
    pub fn rerun(
        &self,
        subscription_id: &str,
        event: &Event,
    ) -> Result<Option<(String, String)>, String> {
        let sub = self
            .subscriptions
            .get(subscription_id)
            .ok_or_else(|| format!("subscription {subscription_id} is no longer configured"))?;
        match self.chain(&sub, event) {
            Ok(Chained::Keep(event_type, data)) => Ok(Some((event_type, data))),
            Ok(Chained::DroppedBy(_)) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Runs the event through routers and subscriptions. Errors are appended
    /// to `event.errors`.
    pub fn run(&self, event: &mut StoredEvent, now_ms: u64) -> Vec<Job> {
        let plugin_event = Event {
            id: event.id.clone(),
            event_type: event.event_type.clone(),
            timestamp: event.timestamp.clone(),
            data: event.data.clone(),
        };
        let (routed_ids, routed_tags) = self.route(&plugin_event, event);
        let mut jobs = Vec::new();
        let subscriptions = self.subscriptions.current();
        for sub in subscriptions.iter() {
            // A public subscription never receives a partner type, even
            // through a wildcard.
            if !sub.enabled
                || !sub.wants(&event.event_type)
                || !self.config.catalogs.allows(sub.tier, &event.event_type)
            {
                continue;
            }
            if sub.route_only
                && !routed_ids.contains(sub.id.as_str())
                && !sub.tags.iter().any(|t| routed_tags.contains(t.as_str()))
            {
                continue;
            }
            let job = |event_type: String, data: String| Job {
                id: job_id(&event.id, event.received_at_ms, &sub.id),
                event_id: event.id.clone(),
                subscription_id: sub.id.clone(),
                event_type,
                data,
                status: JobStatus::Pending,
                attempts: Vec::new(),
                attempts_in_round: 0,
                next_attempt_at_ms: now_ms,
                created_at_ms: now_ms,
                error: None,
                merged_events: Vec::new(),
                order: None,
            };
            match self.chain(sub, &plugin_event) {
                Ok(Chained::Keep(event_type, data)) => {
                    let order = crate::subscriptions::order_slot(sub, &data);
                    jobs.push(Job {
                        order,
                        ..job(event_type, data)
                    })
                }
                Ok(Chained::DroppedBy(plugin)) => {
                    tracing::debug!(event_id = %event.id, subscription = %sub.id, plugin = %plugin, "dropped by a filter");
                    event.plugin_decisions.dropped.push(DroppedBy {
                        subscription: sub.id.clone(),
                        plugin,
                    });
                }
                Err(e) => {
                    let mut failed = job(event.event_type.clone(), event.data.clone());
                    tracing::warn!(event_id = %event.id, job_id = %failed.id, error = %e, "plugin failed");
                    event.errors.push(format!("subscription {}: {e}", sub.id));
                    failed.status = JobStatus::PluginError;
                    failed.error = Some(e.to_string());
                    jobs.push(failed);
                }
            }
        }
        jobs
    }

    /// The global routers' destinations; each router that named any is
    /// recorded on `stored`, each failure in its errors.
    fn route(&self, event: &Event, stored: &mut StoredEvent) -> (HashSet<String>, HashSet<String>) {
        let mut ids = HashSet::new();
        let mut tags = HashSet::new();
        for step in &self.config.routes {
            let routed = self
                .registry
                .get(&step.plugin)
                .and_then(|p| p.route(event, &step.config));
            if let Some(candidate) = self.registry.candidate(&step.plugin) {
                let shadow_routed = candidate.route(event, &step.config);
                candidate
                    .shadow()
                    .record(&event.id, "router", &routed, &shadow_routed);
            }
            match routed {
                Ok(d) => {
                    if !d.subscriptions.is_empty() || !d.tags.is_empty() {
                        stored.plugin_decisions.routed.push(RoutedBy {
                            plugin: step.plugin.clone(),
                            subscriptions: d.subscriptions.clone(),
                            tags: d.tags.clone(),
                        });
                    }
                    ids.extend(d.subscriptions);
                    tags.extend(d.tags);
                }
                Err(e) => {
                    tracing::warn!(event_id = %event.id, error = %e, "router failed");
                    stored.errors.push(format!("route {}: {e}", step.plugin));
                }
            }
        }
        (ids, tags)
    }

    /// The subscription's chain: the (possibly rewritten) type and data, or
    /// the filter that dropped the event.
    fn chain(&self, sub: &Subscription, event: &Event) -> Result<Chained, CallError> {
        // Type and data as the chain has shaped them so far; copied only
        // when a transform rewrites them.
        let mut current = std::borrow::Cow::Borrowed(event);
        for PluginStep { plugin, config } in &sub.plugins {
            let plugin = self.registry.get(plugin)?;
            if !plugin.is_filter() && !plugin.is_transform() {
                return Err(CallError::MissingRole {
                    plugin: plugin.name().to_string(),
                    role: "filter or transform",
                });
            }
            let candidate = self.registry.candidate(plugin.name());
            if plugin.is_filter() {
                let kept = plugin.keep(&current, config);
                if let Some(candidate) = &candidate {
                    let shadow_kept = candidate.keep(&current, config);
                    candidate
                        .shadow()
                        .record(&event.id, "filter", &kept, &shadow_kept);
                }
                if !kept? {
                    return Ok(Chained::DroppedBy(plugin.name().to_string()));
                }
            }
            if plugin.is_transform() {
                let rewrite = plugin.transform(&current, config);
                if let Some(candidate) = &candidate {
                    let shadow_rewrite = candidate.transform(&current, config);
                    candidate
                        .shadow()
                        .record(&event.id, "transform", &rewrite, &shadow_rewrite);
                }
                let rewrite = rewrite?;
                if let Some(t) = rewrite.event_type {
                    current.to_mut().event_type = t;
                }
                if let Some(d) = rewrite.data {
                    current.to_mut().data = d;
                }
            }
        }
        let current = current.into_owned();
        Ok(Chained::Keep(current.event_type, current.data))
    }
}
