//! "Send a test event" to one subscription: an operator (the dashboard's
//! event types page) checks an endpoint with a catalog sample or their own
//! data. The event goes through that subscription's plugins only (no
//! routers, no other subscription) and is delivered at once, whatever the
//! type's aggregation window; it is stored like any event, so the delivery
//! shows in listings with its attempts.

use std::sync::Arc;

use serde_json::Value;

use super::{Deliverer, Rechain};
use crate::catalog::Catalogs;
use crate::model::{Job, JobStatus, Processed, StoredEvent};
use crate::store::StoreError;
use hookhost_plugin_runtime::Event;

#[derive(Debug, thiserror::Error)]
pub enum TestEventError {
    #[error("no subscription with id {0}")]
    NoSubscription(String),
    #[error("subscription {0} is disabled: enable it to send it a test event")]
    Disabled(String),
    #[error("{0}")]
    Invalid(String),
    #[error("the subscription's plugins failed on the test event: {0}")]
    PluginFailed(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Event ids of test events start with this (ingested ids may too; it is
/// a hint for people, not a rule the server relies on).
pub const TEST_EVENT_PREFIX: &str = "test_";

impl Deliverer {
    /// Sends a test event of `event_type` to subscription `subscription_id`:
    /// `data` (a JSON object) or else the catalog's sample for the type.
    /// Returns the delivery made, or `None` if the subscription's plugins
    /// dropped the event. The tier and type rules of ingest hold.
    pub fn send_test(
        self: &Arc<Self>,
        catalogs: &Catalogs,
        subscription_id: &str,
        event_type: &str,
        data: Option<&Value>,
        rechain: Rechain<'_>,
    ) -> Result<Option<Job>, TestEventError> {
        let sub = self
            .subscriptions
            .get(subscription_id)
            .ok_or_else(|| TestEventError::NoSubscription(subscription_id.into()))?;
        if !sub.enabled {
            return Err(TestEventError::Disabled(sub.id.clone()));
        }
        if !sub.wants(event_type) {
            return Err(TestEventError::Invalid(format!(
                "type: subscription {} does not receive {event_type:?} (its types: {})",
                sub.id,
                sub.types.join(", ")
            )));
        }
        if !catalogs.allows(sub.tier, event_type) {
            return Err(TestEventError::Invalid(format!(
                "type: {event_type:?} is a partner type and subscription {} is public",
                sub.id
            )));
        }
        let data = match data {
            Some(data) if data.is_object() => data.clone(),
            Some(_) => {
                return Err(TestEventError::Invalid(
                    "data: must be a JSON object".into(),
                ));
            }
            None => catalogs
                .get(event_type)
                .and_then(|(_, t)| t.sample.clone())
                .ok_or_else(|| {
                    TestEventError::Invalid(format!(
                        "data: no catalog has a sample of {event_type:?}: give the data"
                    ))
                })?,
        };
        let now = self.clock.now_ms();
        let event = StoredEvent {
            id: format!("{TEST_EVENT_PREFIX}{}", uuid::Uuid::now_v7().simple()),
            event_type: event_type.to_string(),
            timestamp: crate::clock::rfc3339_seconds(now),
            data: data.to_string(),
            received_at_ms: now,
            errors: Vec::new(),
            plugin_decisions: Default::default(),
        };
        let plugin_event = Event {
            id: event.id.clone(),
            event_type: event.event_type.clone(),
            timestamp: event.timestamp.clone(),
            data: event.data.clone(),
        };
        let Some((sent_type, sent_data)) =
            rechain(&sub.id, &plugin_event).map_err(TestEventError::PluginFailed)?
        else {
            return Ok(None);
        };
        let job = Job {
            id: crate::model::job_id(&event.id, event.received_at_ms, &sub.id),
            event_id: event.id.clone(),
            subscription_id: sub.id.clone(),
            order: crate::subscriptions::order_slot(&sub, &sent_data),
            event_type: sent_type,
            data: sent_data,
            status: JobStatus::Pending,
            attempts: Vec::new(),
            attempts_in_round: 0,
            next_attempt_at_ms: now,
            created_at_ms: now,
            error: None,
            merged_events: Vec::new(),
        };
        self.store.complete_pipeline(&[Processed {
            jobs: vec![job.clone()],
            ..Processed::new(event)
        }])?;
        tracing::info!(subscription = %sub.id, job_id = %job.id, "test event sent");
        // Like any new job: on a shared store, unless written as this
        // node's, it is free to claim, and only a holder's states count.
        self.take_new(job.clone());
        Ok(Some(job))
    }
}
