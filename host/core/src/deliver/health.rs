//! Endpoint health: per subscription, the current run of failed attempts
//! and the last success; an endpoint that answers `410 Gone`, or has only
//! failed for `health.disable_after_ms` (at least `health.min_failures`
//! attempts), is disabled by hookhost. Its deliveries then wait as `paused`
//! (or are dropped, per subscription) until it is enabled again.
//!
//! Kept in memory and stored on every change between healthy, failing and
//! disabled (not per attempt): a restart keeps a run's start and a disabled
//! endpoint stays disabled.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::model::{Disabled, EndpointHealth, Subscription};
use crate::store::{Store, StoreError};

#[derive(Default)]
pub(super) struct Health {
    records: Mutex<HashMap<String, EndpointHealth>>,
}

/// What an attempt changed that must be stored.
pub(super) struct Change {
    pub(super) subscription: String,
    pub(super) health: EndpointHealth,
    /// Set when this attempt disabled the endpoint.
    pub(super) disabled: Option<String>,
}

impl Health {
    pub(super) fn load(store: &dyn Store) -> Health {
        let records = match store.endpoint_health() {
            Ok(records) => records.into_iter().collect::<HashMap<_, _>>(),
            Err(e) => {
                tracing::error!(error = %e, "cannot read endpoint health; starting from none");
                HashMap::new()
            }
        };
        Health {
            records: Mutex::new(records),
        }
    }

    /// Reads every record again (a node taking the lead).
    pub(super) fn reload(&self, store: &dyn Store) -> Result<(), crate::store::StoreError> {
        let records = store.endpoint_health()?.into_iter().collect();
        *self.lock() = records;
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, EndpointHealth>> {
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn get(&self, subscription: &str) -> EndpointHealth {
        self.lock().get(subscription).cloned().unwrap_or_default()
    }

    pub(super) fn disabled_count(&self) -> usize {
        self.lock()
            .values()
            .filter(|h| h.disabled.is_some())
            .count()
    }

    pub(super) fn disabled(&self, subscription: &str) -> Option<Disabled> {
        self.lock()
            .get(subscription)
            .and_then(|h| h.disabled.clone())
    }

    /// Counts one attempt's result; returns what is to be stored, if its
    /// state changed (started or ended failing, got disabled).
    pub(super) fn record(
        &self,
        sub: &Subscription,
        succeeded: bool,
        status: Option<u16>,
        now_ms: u64,
    ) -> Option<Change> {
        let mut records = self.lock();
        let health = records.entry(sub.id.clone()).or_default();
        if health.disabled.is_some() {
            return None; // attempts already under way when it was disabled
        }
        let mut changed = false;
        let mut disabled = None;
        if succeeded {
            changed = health.failing_since_ms.is_some();
            health.failing_since_ms = None;
            health.failures = 0;
            health.last_success_ms = Some(now_ms);
        } else {
            health.failures += 1;
            let since = *health.failing_since_ms.get_or_insert_with(|| {
                changed = true;
                now_ms
            });
            let policy = &sub.health;
            if status == Some(410) && policy.disable_on_gone {
                disabled = Some("the endpoint answered 410 Gone".to_string());
            } else if health.failures >= policy.min_failures
                && now_ms.saturating_sub(since) >= policy.disable_after_ms
            {
                disabled = Some(format!(
                    "{} failed attempts since {} and none succeeded",
                    health.failures,
                    crate::clock::rfc3339_seconds(since)
                ));
            }
        }
        if let Some(reason) = &disabled {
            health.disabled = Some(Disabled {
                at_ms: now_ms,
                reason: reason.clone(),
            });
            changed = true;
        }
        changed.then(|| Change {
            subscription: sub.id.clone(),
            health: health.clone(),
            disabled,
        })
    }

    /// Enables the endpoint again (a clean slate); stores it. Returns
    /// whether it was disabled.
    pub(super) fn enable(&self, store: &dyn Store, subscription: &str) -> Result<bool, StoreError> {
        let mut records = self.lock();
        let health = records.entry(subscription.to_string()).or_default();
        let was = health.disabled.is_some();
        let enabled = EndpointHealth {
            last_success_ms: health.last_success_ms,
            ..EndpointHealth::default()
        };
        store.put_endpoint_health(subscription, &enabled)?;
        *health = enabled;
        Ok(was)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn sub(extra: &str) -> Subscription {
        let mut c = Config::parse(&format!(
            "[[subscriptions]]\nid = \"a\"\nurl = \"http://x\"\ntypes = [\"*\"]\nenvelope = \"plain\"\n{extra}"
        ))
        .unwrap();
        c.subscriptions.remove(0)
    }

    #[test]
    fn a_410_disables_at_once() {
        let health = Health::default();
        let s = sub("");
        assert!(
            health.record(&s, false, Some(503), 1_000).is_some(),
            "run starts"
        );
        let change = health.record(&s, false, Some(410), 2_000).unwrap();
        assert_eq!(
            change.disabled.as_deref(),
            Some("the endpoint answered 410 Gone")
        );
        assert!(health.disabled("a").is_some());
    }

    #[test]
    fn only_failures_for_the_period_and_enough_of_them_disable() {
        let health = Health::default();
        let s = sub("[subscriptions.health]\ndisable_after_ms = 10000\nmin_failures = 3\n");
        assert!(health.record(&s, false, Some(500), 0).is_some());
        assert!(
            health.record(&s, false, None, 20_000).is_none(),
            "2 failures only"
        );
        // A success ends the run: the period starts again.
        assert!(health.record(&s, true, Some(200), 20_500).is_some());
        for t in [21_000, 22_000, 23_000] {
            health.record(&s, false, Some(500), t);
        }
        assert!(
            health.disabled("a").is_none(),
            "3 failures, but within 10 s"
        );
        let change = health.record(&s, false, Some(500), 31_000).unwrap();
        assert!(change.disabled.unwrap().contains("4 failed attempts"));
        assert_eq!(health.get("a").last_success_ms, Some(20_500));
    }
}
