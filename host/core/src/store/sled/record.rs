//! How events and jobs are written in sled: a format byte, then the fields
//! in postcard (varints, length-prefixed strings), without the id (the key
//! holds it) and without field names. The JSON these records were before
//! took about twice the bytes, and sled's cost grows with what it copies
//! (BENCHMARKS.md, "Compact records"). Records written as JSON by earlier
//! versions are still read: JSON starts with `{`, never with [`COMPACT`].
//!
//! The field order below, and `JobStatus`'s variant order, are the stored
//! format: new fields go at the end of a record with a new format byte.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::StoreError;
use crate::model::{Attempt, Job, JobStatus, OrderSlot, PluginDecisions, StoredEvent};

/// The first byte of a record in this format.
const COMPACT: u8 = 1;

fn corrupt(e: postcard::Error) -> StoreError {
    StoreError(format!("corrupt record: {e}"))
}

fn compact<T: Serialize>(record: &T) -> Result<Vec<u8>, StoreError> {
    postcard::to_extend(record, vec![COMPACT]).map_err(corrupt)
}

/// The rare parts of an event (plugin errors, plugin decisions), as JSON
/// inside the record: they nest types whose JSON form skips empty fields,
/// which postcard cannot read back.
#[derive(Serialize, Deserialize, Default)]
struct EventNotes {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    errors: Vec<String>,
    #[serde(default, skip_serializing_if = "PluginDecisions::is_empty")]
    plugin_decisions: PluginDecisions,
}

#[derive(Serialize, Deserialize)]
struct EventRecord<'a> {
    #[serde(borrow)]
    event_type: Cow<'a, str>,
    #[serde(borrow)]
    timestamp: Cow<'a, str>,
    #[serde(borrow)]
    data: Cow<'a, str>,
    received_at_ms: u64,
    /// [`EventNotes`] as JSON, when there are any.
    #[serde(borrow)]
    notes: Option<Cow<'a, str>>,
}

pub(super) fn encode_event(event: &StoredEvent) -> Result<Vec<u8>, StoreError> {
    let notes = if event.errors.is_empty() && event.plugin_decisions.is_empty() {
        None
    } else {
        Some(Cow::Owned(serde_json::to_string(&EventNotes {
            errors: event.errors.clone(),
            plugin_decisions: event.plugin_decisions.clone(),
        })?))
    };
    compact(&EventRecord {
        event_type: Cow::Borrowed(&event.event_type),
        timestamp: Cow::Borrowed(&event.timestamp),
        data: Cow::Borrowed(&event.data),
        received_at_ms: event.received_at_ms,
        notes,
    })
}

/// The event stored under `id`'s key.
pub(super) fn decode_event(id: &str, bytes: &[u8]) -> Result<StoredEvent, StoreError> {
    let Some(body) = bytes.strip_prefix(&[COMPACT]) else {
        return Ok(serde_json::from_slice(bytes)?);
    };
    let r: EventRecord<'_> = postcard::from_bytes(body).map_err(corrupt)?;
    let notes: EventNotes = match &r.notes {
        Some(json) => serde_json::from_str(json)?,
        None => EventNotes::default(),
    };
    Ok(StoredEvent {
        id: id.to_string(),
        event_type: r.event_type.into_owned(),
        timestamp: r.timestamp.into_owned(),
        data: r.data.into_owned(),
        received_at_ms: r.received_at_ms,
        errors: notes.errors,
        plugin_decisions: notes.plugin_decisions,
    })
}

/// [`Attempt`] without its JSON form's skipped fields.
#[derive(Serialize, Deserialize)]
struct AttemptRecord<'a> {
    at_ms: u64,
    status: Option<u16>,
    latency_ms: f64,
    #[serde(borrow)]
    error: Option<Cow<'a, str>>,
    #[serde(borrow)]
    sent_sha256: Option<Cow<'a, str>>,
}

/// Status first: the queue reads only that ([`job_status`]).
#[derive(Serialize, Deserialize)]
struct JobRecord<'a> {
    status: JobStatus,
    #[serde(borrow)]
    event_id: Cow<'a, str>,
    #[serde(borrow)]
    subscription_id: Cow<'a, str>,
    #[serde(borrow)]
    event_type: Cow<'a, str>,
    #[serde(borrow)]
    data: Cow<'a, str>,
    #[serde(borrow)]
    attempts: Vec<AttemptRecord<'a>>,
    attempts_in_round: u32,
    next_attempt_at_ms: u64,
    created_at_ms: u64,
    #[serde(borrow)]
    error: Option<Cow<'a, str>>,
    merged_events: Vec<String>,
    order: Option<OrderSlot>,
}

fn borrowed(s: &Option<String>) -> Option<Cow<'_, str>> {
    s.as_deref().map(Cow::Borrowed)
}

fn owned(s: Option<Cow<'_, str>>) -> Option<String> {
    s.map(Cow::into_owned)
}

pub(super) fn encode_job(job: &Job) -> Result<Vec<u8>, StoreError> {
    compact(&JobRecord {
        status: job.status,
        event_id: Cow::Borrowed(&job.event_id),
        subscription_id: Cow::Borrowed(&job.subscription_id),
        event_type: Cow::Borrowed(&job.event_type),
        data: Cow::Borrowed(&job.data),
        attempts: job
            .attempts
            .iter()
            .map(|a| AttemptRecord {
                at_ms: a.at_ms,
                status: a.status,
                latency_ms: a.latency_ms,
                error: borrowed(&a.error),
                sent_sha256: borrowed(&a.sent_sha256),
            })
            .collect(),
        attempts_in_round: job.attempts_in_round,
        next_attempt_at_ms: job.next_attempt_at_ms,
        created_at_ms: job.created_at_ms,
        error: borrowed(&job.error),
        merged_events: job.merged_events.clone(),
        order: job.order.clone(),
    })
}

/// The job stored under `id`'s key.
pub(super) fn decode_job(id: &str, bytes: &[u8]) -> Result<Job, StoreError> {
    let Some(body) = bytes.strip_prefix(&[COMPACT]) else {
        return Ok(serde_json::from_slice(bytes)?);
    };
    let r: JobRecord<'_> = postcard::from_bytes(body).map_err(corrupt)?;
    Ok(Job {
        id: id.to_string(),
        event_id: r.event_id.into_owned(),
        subscription_id: r.subscription_id.into_owned(),
        event_type: r.event_type.into_owned(),
        data: r.data.into_owned(),
        status: r.status,
        attempts: r
            .attempts
            .into_iter()
            .map(|a| Attempt {
                at_ms: a.at_ms,
                status: a.status,
                latency_ms: a.latency_ms,
                error: owned(a.error),
                sent_sha256: owned(a.sent_sha256),
            })
            .collect(),
        attempts_in_round: r.attempts_in_round,
        next_attempt_at_ms: r.next_attempt_at_ms,
        created_at_ms: r.created_at_ms,
        error: owned(r.error),
        merged_events: r.merged_events,
        order: r.order,
    })
}

/// A stored job's status, without building the rest of the job.
pub(super) fn job_status(bytes: &[u8]) -> Result<JobStatus, StoreError> {
    match bytes.strip_prefix(&[COMPACT]) {
        Some(body) => Ok(postcard::take_from_bytes::<JobStatus>(body)
            .map_err(corrupt)?
            .0),
        None => {
            #[derive(Deserialize)]
            struct StatusOnly {
                status: JobStatus,
            }
            Ok(serde_json::from_slice::<StatusOnly>(bytes)?.status)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DroppedBy, RoutedBy};

    fn busy_job() -> Job {
        let mut job = Job::for_test("msg_1", "evt_1", JobStatus::Dead);
        job.data = r#"{"b":1,"a":"ü"}"#.into();
        job.attempts = vec![
            Attempt {
                at_ms: 1_764_000_000_000,
                status: Some(500),
                latency_ms: 12.5,
                error: Some("HTTP 500".into()),
                sent_sha256: Some("00ff00ff00ff00ff".into()),
            },
            Attempt {
                at_ms: 1_764_000_001_000,
                status: None,
                latency_ms: 0.25,
                error: None,
                sent_sha256: None,
            },
        ];
        job.attempts_in_round = 2;
        job.next_attempt_at_ms = 77;
        job.error = Some("out of retries".into());
        job.merged_events = vec!["evt_1".into(), "evt_2".into()];
        job.order = Some(OrderSlot {
            key: "bike-7".into(),
            seq: 9,
        });
        job
    }

    #[test]
    fn a_job_reads_back_as_written_in_either_format() {
        let job = busy_job();
        let compact = encode_job(&job).unwrap();
        let json = serde_json::to_vec(&job).unwrap();
        assert_eq!(decode_job("msg_1", &compact).unwrap(), job);
        assert_eq!(decode_job("msg_1", &json).unwrap(), job);
        assert_eq!(job_status(&compact).unwrap(), JobStatus::Dead);
        assert_eq!(job_status(&json).unwrap(), JobStatus::Dead);
        assert!(
            compact.len() < json.len() / 2,
            "{} {}",
            compact.len(),
            json.len()
        );
    }

    #[test]
    fn an_event_reads_back_as_written_in_either_format() {
        let plain = StoredEvent::for_test("evt_1");
        let mut noted = plain.clone();
        noted.errors = vec!["plugin trapped".into()];
        noted.plugin_decisions.dropped.push(DroppedBy {
            subscription: "s".into(),
            plugin: "f".into(),
        });
        noted.plugin_decisions.routed.push(RoutedBy {
            plugin: "r".into(),
            subscriptions: vec!["s".into()],
            tags: Vec::new(),
        });
        for event in [plain, noted] {
            let compact = encode_event(&event).unwrap();
            let json = serde_json::to_vec(&event).unwrap();
            assert_eq!(decode_event("evt_1", &compact).unwrap(), event);
            assert_eq!(decode_event("evt_1", &json).unwrap(), event);
            assert!(compact.len() < json.len());
        }
    }

    #[test]
    fn a_damaged_record_is_an_error_not_a_panic() {
        let compact = encode_job(&busy_job()).unwrap();
        for cut in 1..compact.len() {
            assert!(
                decode_job("msg_1", &compact[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        assert!(job_status(&[COMPACT, 200]).is_err());
    }
}
