//! Aggregation windows and the derived outage event, as in the bike-parking
//! seed's "Delivery Characteristics".
//!
//! **Windows.** A subscription receives an *aggregated* type (the seed's
//! table by default: alarm 1 min, connection 5 min, …) not at once but as one
//! merged delivery per window and group. Windows are aligned to wall-clock
//! boundaries (multiples of the interval since the Unix epoch, UTC); an event
//! belongs to the window its arrival falls in. Within a window, the events
//! of one subscription and one type sharing a group key (`data.location_id`
//! by default) become one delivery at the window's end: scalar fields come
//! from the event with the latest `timestamp`, array fields merge by rule
//! (`devices` united by `device_id`, `parking_details` concatenated).
//! Aggregation sees the event as the subscription's plugins left it.
//!
//! Window members live in the store (`w/…`, ordered by window end), never in
//! memory, so open groups cost disk, not RAM; closing scans the due prefix in
//! bounded chunks. The time through which windows were closed is stored with
//! each close, and an event is never placed in a window that already closed
//! (after a pipeline lag or a restart it joins the next one), so a window's
//! delivery id is never reused.
//!
//! **Outages.** For the tracked type (`connection`), the latest state per
//! location is stored. The producer's event `timestamp` (any RFC 3339 time,
//! offsets applied) orders the state, since delivery order is not event
//! order: an older event is ignored. hookhost's own clock bounds it: an
//! event stamped more than `max_future_skew` (5 min) after its arrival is
//! delivered but moves no state, so one bad clock cannot freeze a location.
//! When
//! a location goes offline a timer is set to `after` (2 h) from the time
//! hookhost learned of it; if the location is still offline when it ends, one
//! `connection_confirmed` event is emitted (once per outage, never on
//! recovery) and flows through the pipeline like an ingested event.
//!
//! Time comes from a [`Clock`], so tests can run hours in microseconds.

use crate::clock::Clock;
use crate::clock::{parse_rfc3339_ms, rfc3339_seconds};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::config::{Config, TypeSettings};
use crate::metrics::METRICS;
use crate::model::{
    Job, JobStatus, OutageState, OutageUpdate, Processed, StoredEvent, WindowMember,
};
use crate::model::{MergeRule, Mode};
use crate::store::{Store, StoreError};
use crate::subscriptions::Subscriptions;

/// Members closed per store batch: bounds memory when many groups end at once.
const CLOSE_CHUNK: usize = 10_000;

pub struct Aggregator {
    config: Arc<Config>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    /// Windows ending at or before this are closed; nothing joins them.
    closed_through_ms: AtomicU64,
    subscriptions: Arc<Subscriptions>,
    /// Settings of every type configured or in the seed's table, resolved
    /// once: placing an event must not rebuild them.
    types: HashMap<String, TypeSettings>,
    /// Settings of any other type.
    other_types: TypeSettings,
}

/// End of the window of length `interval_ms` that `t_ms` falls in.
pub fn window_end(t_ms: u64, interval_ms: u64) -> u64 {
    (t_ms / interval_ms + 1) * interval_ms
}

/// The value at `pointer` in `data`, as group text: a string as is, other
/// values as JSON; missing is `None`.
fn group_text(data: &Value, pointer: &str) -> Option<String> {
    match data.pointer(pointer)? {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// Orders event timestamps by the instant they name (offsets applied);
/// unparsable ones compare as text.
fn timestamp_order(a: &str, b: &str) -> std::cmp::Ordering {
    match (parse_rfc3339_ms(a), parse_rfc3339_ms(b)) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        _ => a.cmp(b),
    }
}

/// Whether `timestamp` lies further ahead of `now_ms` than `skew` allows.
fn too_far_ahead(timestamp: &str, now_ms: u64, skew: std::time::Duration) -> bool {
    parse_rfc3339_ms(timestamp)
        .is_ok_and(|t| t > (now_ms as i64).saturating_add(skew.as_millis() as i64))
}

impl Aggregator {
    pub fn new(
        config: Arc<Config>,
        subscriptions: Arc<Subscriptions>,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
    ) -> Result<Aggregator, StoreError> {
        let closed_through = store.closed_through()?;
        // Events already waiting (a re-run after a crash may count some twice).
        METRICS
            .window_events
            .store(store.window_member_count()? as i64, Ordering::Relaxed);
        let aggregation = &config.aggregation;
        let types = aggregation
            .named_types()
            .into_iter()
            .map(|t| {
                let settings = aggregation.for_type(&t);
                (t, settings)
            })
            .collect();
        // No configured or seed type has an empty name: this is the fallback.
        let other_types = aggregation.for_type("");
        Ok(Aggregator {
            types,
            other_types,
            config,
            store,
            clock,
            closed_through_ms: AtomicU64::new(closed_through),
            subscriptions,
        })
    }

    /// Reads where windows are closed through again (a node taking the
    /// lead: the previous leader closed windows since this one opened).
    /// Windows were closed through `closed_through_ms` (as a shared store
    /// read it): a standby places its later events after it.
    pub fn closed_through_at_least(&self, closed_through_ms: u64) {
        self.closed_through_ms
            .fetch_max(closed_through_ms, Ordering::SeqCst);
    }

    pub fn reload(&self) -> Result<(), StoreError> {
        let closed_through = self.store.closed_through()?;
        self.closed_through_ms
            .fetch_max(closed_through, Ordering::SeqCst);
        METRICS
            .window_events
            .store(self.store.window_member_count()? as i64, Ordering::Relaxed);
        Ok(())
    }

    fn settings(&self, event_type: &str) -> &TypeSettings {
        self.types.get(event_type).unwrap_or(&self.other_types)
    }

    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// Splits the pipeline's jobs for `event`: pending jobs whose
    /// subscription aggregates this type become window members.
    pub fn place(&self, event: StoredEvent, jobs: Vec<Job>) -> Processed {
        let mut out = Processed::new(event);
        let event = &out.event;
        let mut direct = Vec::new();
        let mut members = Vec::new();
        let settings = self.settings(&event.event_type);
        let earliest = event
            .received_at_ms
            .max(self.closed_through_ms.load(Ordering::SeqCst));
        let subscriptions = self.subscriptions.current();
        for job in jobs {
            let sub = subscriptions.get(&job.subscription_id);
            let mode = sub
                .and_then(|s| s.mode_override(&event.event_type))
                .unwrap_or(settings.mode);
            let interval = match mode {
                Mode::Every(d) if job.status == JobStatus::Pending => d.as_millis() as u64,
                _ => {
                    direct.push(job);
                    continue;
                }
            };
            let group = if settings.group_by.is_empty() {
                String::new()
            } else {
                serde_json::from_str::<Value>(&job.data)
                    .ok()
                    .and_then(|d| group_text(&d, &settings.group_by))
                    .unwrap_or_default()
            };
            members.push(WindowMember {
                window_end_ms: window_end(earliest, interval),
                subscription_id: job.subscription_id,
                window_type: event.event_type.clone(),
                group,
                event_id: event.id.clone(),
                timestamp: event.timestamp.clone(),
                received_at_ms: event.received_at_ms,
                event_type: job.event_type,
                data: job.data,
            });
        }
        out.jobs = direct;
        out.window_members = members;
        out
    }

    /// Whether `event` is of the type whose outages are tracked.
    pub fn tracks_outage(&self, event: &StoredEvent) -> bool {
        let cfg = &self.config.aggregation.outage;
        cfg.enabled && event.event_type == cfg.event_type
    }

    /// The new connection state of the event's location, if the event is
    /// the tracked type and not older than the state known. `pending` holds
    /// states decided earlier in the same, not yet written, batch.
    pub fn track_outage(
        &self,
        event: &StoredEvent,
        pending: &HashMap<String, OutageState>,
    ) -> Result<Option<OutageUpdate>, StoreError> {
        let cfg = &self.config.aggregation.outage;
        if !self.tracks_outage(event) {
            return Ok(None);
        }
        let Ok(data) = serde_json::from_str::<Value>(&event.data) else {
            return Ok(None);
        };
        let Some(location) = group_text(&data, &cfg.group_by) else {
            return Ok(None);
        };
        let offline = data.get("connection").and_then(Value::as_str) == Some("offline");
        // A producer clock far ahead (or a typo like year 9999) would order
        // every later real event as older: such an event is delivered but
        // does not move the state.
        if too_far_ahead(&event.timestamp, event.received_at_ms, cfg.max_future_skew) {
            tracing::warn!(
                event_id = %event.id,
                location = %location,
                timestamp = %event.timestamp,
                "timestamp is further in the future than aggregation.outage.max_future_skew; the outage state is not moved by it"
            );
            return Ok(None);
        }
        let previous = match pending.get(&location) {
            Some(p) => Some(p.clone()),
            None => self.store.outage(&location)?,
        };
        if let Some(p) = &previous
            // A stored time that far ahead came from before that check: it
            // orders nothing.
            && !too_far_ahead(&p.last_timestamp, event.received_at_ms, cfg.max_future_skew)
            && timestamp_order(&event.timestamp, &p.last_timestamp).is_lt()
        {
            return Ok(None); // delivery order is not event order
        }
        let old_deadline = previous.as_ref().and_then(|p| p.deadline_ms);
        let state = match previous {
            Some(p) if offline && p.offline => {
                // Same outage: keep its clock; list every device seen offline.
                let devices = MergeRule::Union {
                    key: "device_id".into(),
                };
                let merged = merge_values(
                    &[parse_object(&p.data), parse_object(&event.data)],
                    &BTreeMap::from([("devices".to_string(), devices)]),
                );
                OutageState {
                    last_timestamp: event.timestamp.clone(),
                    data: Value::Object(merged).to_string(),
                    ..p
                }
            }
            _ if offline => OutageState {
                location,
                offline: true,
                last_timestamp: event.timestamp.clone(),
                since_ms: event.received_at_ms,
                deadline_ms: Some(event.received_at_ms + cfg.after.as_millis() as u64),
                confirmed: false,
                data: event.data.clone(),
            },
            _ => OutageState {
                location,
                offline: false,
                last_timestamp: event.timestamp.clone(),
                since_ms: 0,
                deadline_ms: None,
                confirmed: false,
                data: String::new(),
            },
        };
        Ok(Some((state, old_deadline)))
    }

    /// Outages whose timer ended: the derived event of each, with the
    /// location's state marked confirmed (to be stored with the event).
    pub fn due_confirmations(&self) -> Result<Vec<(StoredEvent, OutageUpdate)>, StoreError> {
        let cfg = &self.config.aggregation.outage;
        let now = self.clock.now_ms();
        let mut out = Vec::new();
        for state in self.store.due_outages(now)? {
            let Some(deadline) = state
                .deadline_ms
                .filter(|_| state.offline && !state.confirmed)
            else {
                continue;
            };
            let at = rfc3339_seconds(deadline);
            let mut data = parse_object(&state.data);
            // The seed's connection_confirmed has no v1 `data.type`.
            data.shift_remove("type"); // keeps the other fields in order
            data.insert("connection".into(), Value::String("offline".into()));
            data.insert("timestamp".into(), Value::String(at.clone()));
            let mut h = Sha256::new();
            h.update(state.location.as_bytes());
            h.update([0]);
            h.update(state.since_ms.to_be_bytes());
            let event = StoredEvent {
                id: format!("evt_confirmed_{}", &hex::encode(h.finalize())[..24]),
                event_type: cfg.confirmed_type.clone(),
                timestamp: at,
                data: Value::Object(data).to_string(),
                received_at_ms: now,
                errors: Vec::new(),
                plugin_decisions: Default::default(),
            };
            tracing::info!(event_id = %event.id, location = %state.location, "outage confirmed");
            METRICS.outages_confirmed.fetch_add(1, Ordering::Relaxed);
            let confirmed = OutageState {
                confirmed: true,
                ..state
            };
            out.push((event, (confirmed, Some(deadline))));
        }
        Ok(out)
    }

    /// Closes every window that has ended: one merged job per group, stored
    /// in place of the members. Returns the jobs to deliver.
    pub fn close_due(&self) -> Result<Vec<Job>, StoreError> {
        let now = self.clock.now_ms();
        let mut ready = Vec::new();
        let merge = |members: &[WindowMember]| {
            members
                .chunk_by(|a, b| {
                    a.window_end_ms == b.window_end_ms
                        && a.group == b.group
                        && a.window_type == b.window_type
                        && a.subscription_id == b.subscription_id
                })
                .map(|group| self.merged_job(group, now))
                .collect()
        };
        loop {
            let closed = self.store.close_due_windows(now, CLOSE_CHUNK, &merge)?;
            if closed.members == 0 {
                break;
            }
            METRICS
                .window_events
                .fetch_sub(closed.members as i64, Ordering::Relaxed);
            METRICS
                .windows_closed
                .fetch_add(closed.jobs.len() as u64, Ordering::Relaxed);
            tracing::debug!(
                windows = closed.jobs.len(),
                events = closed.members,
                "windows closed"
            );
            ready.extend(closed.jobs);
            if closed.members < CLOSE_CHUNK {
                break;
            }
        }
        self.closed_through_ms.fetch_max(now, Ordering::SeqCst);
        Ok(ready)
    }

    fn merged_job(&self, group: &[WindowMember], now: u64) -> Job {
        let mut members: Vec<&WindowMember> = group.iter().collect();
        members.sort_by(|a, b| {
            timestamp_order(&a.timestamp, &b.timestamp)
                .then(a.received_at_ms.cmp(&b.received_at_ms))
                .then(a.event_id.cmp(&b.event_id))
        });
        let latest = members[members.len() - 1];
        let rules = &self.settings(&latest.window_type).merge;
        let data = if members.len() == 1 {
            latest.data.clone()
        } else {
            let objects: Vec<Map<String, Value>> =
                members.iter().map(|m| parse_object(&m.data)).collect();
            Value::Object(merge_values(&objects, rules)).to_string()
        };
        // Its place in the key's order is where its window closed.
        let order = self
            .subscriptions
            .get(&latest.subscription_id)
            .and_then(|sub| crate::subscriptions::order_slot(&sub, &data));
        Job {
            id: format!("msg_{}", latest.group_hash()),
            event_id: latest.event_id.clone(),
            subscription_id: latest.subscription_id.clone(),
            event_type: latest.event_type.clone(),
            data,
            status: JobStatus::Pending,
            attempts: Vec::new(),
            attempts_in_round: 0,
            next_attempt_at_ms: now,
            created_at_ms: now,
            error: None,
            merged_events: members.iter().map(|m| m.event_id.clone()).collect(),
            order,
        }
    }
}

fn parse_object(text: &str) -> Map<String, Value> {
    match serde_json::from_str(text) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    }
}

/// Merges event data, oldest first: the newest object's fields, with each
/// field named in `rules` built from every object's array by its rule.
pub fn merge_values(
    oldest_first: &[Map<String, Value>],
    rules: &BTreeMap<String, MergeRule>,
) -> Map<String, Value> {
    let Some(mut merged) = oldest_first.last().cloned() else {
        return Map::new();
    };
    for (field, rule) in rules {
        let arrays = oldest_first
            .iter()
            .filter_map(|o| o.get(field).and_then(Value::as_array));
        let combined: Vec<Value> = match rule {
            MergeRule::Latest => continue,
            MergeRule::Concat => arrays.flatten().cloned().collect(),
            MergeRule::Union { key } => {
                let mut out: Vec<Value> = Vec::new();
                let mut index: HashMap<String, usize> = HashMap::new();
                for element in arrays.flatten() {
                    match element.get(key) {
                        Some(k) => {
                            let k = k.to_string();
                            match index.get(&k) {
                                Some(&i) => out[i] = element.clone(), // newer wins
                                None => {
                                    index.insert(k, out.len());
                                    out.push(element.clone());
                                }
                            }
                        }
                        None if !out.contains(element) => out.push(element.clone()),
                        None => {}
                    }
                }
                out
            }
        };
        if oldest_first
            .iter()
            .any(|o| o.get(field).is_some_and(Value::is_array))
        {
            merged.insert(field.clone(), Value::Array(combined));
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn windows_align_to_wall_clock_boundaries() {
        let minute = 60_000;
        assert_eq!(window_end(0, minute), minute);
        assert_eq!(window_end(59_999, minute), minute);
        assert_eq!(window_end(60_000, minute), 2 * minute);
        // A day's window ends at midnight UTC.
        let day = 86_400_000;
        let t = 1_765_795_800_000; // 2025-12-15T10:50:00Z
        assert_eq!(rfc3339_seconds(window_end(t, day)), "2025-12-16T00:00:00Z");
    }

    #[test]
    fn merge_keeps_newest_scalars_and_unites_devices() {
        let rules = crate::config::AggregationConfig::default()
            .for_type("connection")
            .merge;
        let merged = merge_values(
            &[
                obj(json!({"location_id": "L", "connection": "online",
                    "devices": [{"device_id": "a", "device_nr": "1"}]})),
                obj(json!({"location_id": "L", "connection": "offline",
                    "devices": [{"device_id": "b", "device_nr": "2"}, {"device_id": "a", "device_nr": "1b"}]})),
                obj(json!({"location_id": "L", "connection": "online",
                    "devices": [{"device_id": "c", "device_nr": "3"}]})),
            ],
            &rules,
        );
        assert_eq!(
            Value::Object(merged),
            json!({"location_id": "L", "connection": "online", "devices": [
                {"device_id": "a", "device_nr": "1b"},
                {"device_id": "b", "device_nr": "2"},
                {"device_id": "c", "device_nr": "3"}
            ]})
        );
    }

    #[test]
    fn merge_concatenates_parking_details_oldest_first() {
        let rules = crate::config::AggregationConfig::default()
            .for_type("parking_reminder")
            .merge;
        let merged = merge_values(
            &[
                obj(json!({"parking_details": [{"user_id": "u1"}], "timestamp": "1"})),
                obj(
                    json!({"parking_details": [{"user_id": "u2"}, {"user_id": "u1"}], "timestamp": "2"}),
                ),
            ],
            &rules,
        );
        assert_eq!(
            merged["parking_details"],
            json!([{"user_id": "u1"}, {"user_id": "u2"}, {"user_id": "u1"}])
        );
        assert_eq!(merged["timestamp"], "2");
    }

    #[test]
    fn timestamps_order_by_time_not_text() {
        assert!(timestamp_order("2025-12-15T10:30:00Z", "2025-12-15T10:30:00.5Z").is_lt());
        assert!(timestamp_order("2025-12-15T11:00:00Z", "2025-12-15T10:59:59.999Z").is_gt());
    }
}
