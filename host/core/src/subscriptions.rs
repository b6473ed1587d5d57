//! The live set of subscriptions: those of the config file (read-only) and
//! those made over the management API (kept in the store). Readers take a
//! snapshot (`current`), so a change never shows half-applied; changes are
//! serialised and written to the store before they are published.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::config::Config;
use crate::model::Subscription;
use crate::store::{Store, StoreError};

/// How long a rotated-out signing secret keeps signing.
pub const ROTATION_OVERLAP_MS: u64 = 24 * 3600 * 1000;

/// RFC 7386 JSON merge patch: objects merge key by key, `null` removes a
/// key, anything else replaces.
fn merge_patch(target: &mut serde_json::Value, patch: &serde_json::Value) {
    use serde_json::Value;
    let Value::Object(changes) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Default::default());
    }
    if let Value::Object(fields) = target {
        for (key, value) in changes {
            if value.is_null() {
                fields.remove(key);
            } else {
                merge_patch(fields.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

/// One snapshot of every subscription, in order (config file first).
#[derive(Default)]
pub struct SubscriptionSet {
    list: Vec<Arc<Subscription>>,
    index: HashMap<String, usize>,
}

impl SubscriptionSet {
    fn new(list: Vec<Arc<Subscription>>) -> SubscriptionSet {
        let index = list
            .iter()
            .enumerate()
            .map(|(i, s)| (s.id.clone(), i))
            .collect();
        SubscriptionSet { list, index }
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Subscription>> {
        self.list.iter()
    }

    pub fn get(&self, id: &str) -> Option<&Arc<Subscription>> {
        self.index.get(id).map(|&i| &self.list[i])
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SubscriptionError {
    #[error("no subscription with id {0:?}")]
    NotFound(String),
    #[error("a subscription with id {0:?} exists already")]
    Exists(String),
    #[error("subscription {0:?} is defined in the config file; change it there")]
    ReadOnly(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub struct Subscriptions {
    current: ArcSwap<SubscriptionSet>,
    config: Arc<Config>,
    store: Option<Arc<dyn Store>>,
    change: Mutex<()>,
}

impl Subscriptions {
    /// The config file's subscriptions only (no store: nothing can change).
    pub fn from_config(config: Arc<Config>) -> Arc<Subscriptions> {
        let list = config.subscriptions.iter().cloned().map(Arc::new).collect();
        Arc::new(Subscriptions {
            current: ArcSwap::from_pointee(SubscriptionSet::new(list)),
            config,
            store: None,
            change: Mutex::new(()),
        })
    }

    /// The config file's subscriptions and the stored ones. A stored one
    /// whose id the config file now uses is shadowed (and logged).
    pub fn open(
        config: Arc<Config>,
        store: Arc<dyn Store>,
    ) -> Result<Arc<Subscriptions>, StoreError> {
        let list = Subscriptions::read(&config, &*store)?;
        Ok(Arc::new(Subscriptions {
            current: ArcSwap::from_pointee(SubscriptionSet::new(list)),
            config,
            store: Some(store),
            change: Mutex::new(()),
        }))
    }

    fn read(config: &Config, store: &dyn Store) -> Result<Vec<Arc<Subscription>>, StoreError> {
        let mut list: Vec<Arc<Subscription>> =
            config.subscriptions.iter().cloned().map(Arc::new).collect();
        for mut sub in store.stored_subscriptions()? {
            if list.iter().any(|s| s.id == sub.id) {
                tracing::warn!(subscription = %sub.id, "a subscription made over the API has the id of one in the config file; the config file's wins");
                continue;
            }
            sub.from_config = false;
            list.push(Arc::new(sub));
        }
        Ok(list)
    }

    /// Reads the stored subscriptions again (a node taking the lead, or
    /// delivering beside the leader: the leader may have changed them).
    /// An unchanged list is kept as it is, so what delivery built per
    /// subscription (in-flight limits, rate buckets) stays.
    pub fn reload(&self) -> Result<(), StoreError> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        let _change = self.change.lock().unwrap_or_else(|p| p.into_inner());
        let list = Subscriptions::read(&self.config, &**store)?;
        let unchanged = {
            let current = self.current.load();
            current.list.len() == list.len() && current.list.iter().zip(&list).all(|(a, b)| a == b)
        };
        if !unchanged {
            self.current.store(Arc::new(SubscriptionSet::new(list)));
        }
        Ok(())
    }

    pub fn current(&self) -> arc_swap::Guard<Arc<SubscriptionSet>> {
        self.current.load()
    }

    pub fn get(&self, id: &str) -> Option<Arc<Subscription>> {
        self.current.load().get(id).cloned()
    }

    fn store(&self) -> Result<&Arc<dyn Store>, SubscriptionError> {
        self.store
            .as_ref()
            .ok_or_else(|| SubscriptionError::Invalid("subscriptions are read-only here".into()))
    }

    /// Applies `edit` to a copy of the list and publishes it.
    fn publish(&self, edit: impl FnOnce(&mut Vec<Arc<Subscription>>)) {
        let mut list = self.current.load().list.clone();
        edit(&mut list);
        self.current.store(Arc::new(SubscriptionSet::new(list)));
    }

    pub fn create(&self, mut sub: Subscription) -> Result<Arc<Subscription>, SubscriptionError> {
        self.config
            .check_subscription(&sub)
            .map_err(SubscriptionError::Invalid)?;
        let _change = self.change.lock().unwrap_or_else(|p| p.into_inner());
        if self.get(&sub.id).is_some() {
            return Err(SubscriptionError::Exists(sub.id));
        }
        sub.from_config = false;
        self.store()?.put_subscription(&sub)?;
        let sub = Arc::new(sub);
        self.publish(|list| list.push(sub.clone()));
        tracing::info!(subscription = %sub.id, "subscription created");
        Ok(sub)
    }

    /// Writes the changed subscription `id` and publishes it in its place.
    /// The caller holds the change lock.
    fn store_in_place(
        &self,
        id: &str,
        sub: Subscription,
    ) -> Result<Arc<Subscription>, SubscriptionError> {
        self.store()?.put_subscription(&sub)?;
        let sub = Arc::new(sub);
        self.publish(|list| {
            if let Some(slot) = list.iter_mut().find(|s| s.id == id) {
                *slot = sub.clone();
            }
        });
        Ok(sub)
    }

    /// The API-made subscription `id`, for a change.
    fn changeable(&self, id: &str) -> Result<Arc<Subscription>, SubscriptionError> {
        match self.get(id) {
            None => Err(SubscriptionError::NotFound(id.into())),
            Some(s) if s.from_config => Err(SubscriptionError::ReadOnly(id.into())),
            Some(s) => Ok(s),
        }
    }

    pub fn replace(
        &self,
        id: &str,
        mut sub: Subscription,
    ) -> Result<Arc<Subscription>, SubscriptionError> {
        self.changeable(id)?; // "read-only" or "not found" before any field error
        if sub.id != id {
            return Err(SubscriptionError::Invalid(format!(
                "subscription.id {:?} differs from the id in the path {id:?}",
                sub.id
            )));
        }
        self.config
            .check_subscription(&sub)
            .map_err(SubscriptionError::Invalid)?;
        let _change = self.change.lock().unwrap_or_else(|p| p.into_inner());
        self.changeable(id)?;
        sub.from_config = false;
        let sub = self.store_in_place(id, sub)?;
        tracing::info!(subscription = %id, "subscription replaced");
        Ok(sub)
    }

    /// Changes the fields `patch` names (a JSON merge patch, RFC 7386: a
    /// field given replaces the stored one, `null` removes it, the rest is
    /// kept — seed and secrets too, which the API never shows). Checked as
    /// a new subscription is; read, check and write under the change lock.
    pub fn patch(
        &self,
        id: &str,
        patch: &serde_json::Value,
    ) -> Result<Arc<Subscription>, SubscriptionError> {
        if !patch.is_object() {
            return Err(SubscriptionError::Invalid(
                "subscription: a patch is a JSON object of the fields to change".into(),
            ));
        }
        if let Some(new_id) = patch.get("id")
            && new_id.as_str() != Some(id)
        {
            return Err(SubscriptionError::Invalid(format!(
                "subscription.id cannot change (it is {id:?} in the path)"
            )));
        }
        let _change = self.change.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.changeable(id)?;
        let mut merged = serde_json::to_value(&*current)
            .map_err(|e| SubscriptionError::Invalid(format!("subscription: {e}")))?;
        merge_patch(&mut merged, patch);
        let mut sub: Subscription = serde_json::from_value(merged)
            .map_err(|e| SubscriptionError::Invalid(format!("subscription: {e}")))?;
        self.config
            .check_subscription(&sub)
            .map_err(SubscriptionError::Invalid)?;
        sub.from_config = false;
        let sub = self.store_in_place(id, sub)?;
        tracing::info!(subscription = %id, "subscription changed");
        Ok(sub)
    }

    /// Replaces the subscription's signing secrets by a new random one;
    /// the old ones keep signing beside it for [`ROTATION_OVERLAP_MS`] from
    /// `now_ms` (receivers switch over meanwhile). Returns the new secret:
    /// the only time it is shown.
    pub fn rotate_secret(
        &self,
        id: &str,
        now_ms: u64,
    ) -> Result<(Arc<Subscription>, String), SubscriptionError> {
        let mut random = [0u8; 32];
        getrandom::fill(&mut random)
            .map_err(|e| SubscriptionError::Invalid(format!("no randomness for a secret: {e}")))?;
        let secret = crate::sign::whsec_secret(&random);
        let _change = self.change.lock().unwrap_or_else(|p| p.into_inner());
        let mut sub = Subscription::clone(&*self.changeable(id)?);
        let until_ms = now_ms + ROTATION_OVERLAP_MS;
        sub.retiring_secrets.retain(|r| r.until_ms > now_ms);
        for old in std::mem::take(&mut sub.secrets) {
            sub.retiring_secrets.push(crate::model::RetiringSecret {
                secret: old,
                until_ms,
            });
        }
        // The oldest go first if rotations come quicker than they retire.
        let excess = sub.retiring_secrets.len().saturating_sub(4);
        sub.retiring_secrets.drain(..excess);
        sub.secrets = vec![secret.clone()];
        self.config
            .check_subscription(&sub)
            .map_err(SubscriptionError::Invalid)?;
        let sub = self.store_in_place(id, sub)?;
        tracing::info!(subscription = %id, "signing secret rotated");
        Ok((sub, secret))
    }

    pub fn set_enabled(
        &self,
        id: &str,
        enabled: bool,
    ) -> Result<Arc<Subscription>, SubscriptionError> {
        let _change = self.change.lock().unwrap_or_else(|p| p.into_inner());
        let mut sub = Subscription::clone(&*self.changeable(id)?);
        sub.enabled = enabled;
        let sub = self.store_in_place(id, sub)?;
        tracing::info!(subscription = %id, enabled, "subscription switched");
        Ok(sub)
    }

    pub fn delete(&self, id: &str) -> Result<(), SubscriptionError> {
        let _change = self.change.lock().unwrap_or_else(|p| p.into_inner());
        self.changeable(id)?;
        self.store()?.delete_subscription(id)?;
        self.publish(|list| list.retain(|s| s.id != id));
        tracing::info!(subscription = %id, "subscription deleted");
        Ok(())
    }
}

/// A new delivery's place in its key's order, if `sub` orders deliveries
/// and `data` (as its plugins left it) has the key.
pub fn order_slot(sub: &Subscription, data: &str) -> Option<crate::model::OrderSlot> {
    let key = sub.ordering.as_ref()?.key_of(data)?;
    Some(crate::model::OrderSlot {
        key,
        seq: crate::clock::next_sequence(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_merge_patch_replaces_named_fields_removes_nulls_and_keeps_the_rest() {
        let mut target = serde_json::json!({
            "url": "http://a/", "secrets": ["s"], "retry": {"max_retries": 3, "backoff": "fixed"}
        });
        merge_patch(
            &mut target,
            &serde_json::json!({"url": "http://b/", "retry": {"max_retries": 5}, "secrets": null}),
        );
        assert_eq!(
            target,
            serde_json::json!({"url": "http://b/", "retry": {"max_retries": 5, "backoff": "fixed"}})
        );
    }
}
