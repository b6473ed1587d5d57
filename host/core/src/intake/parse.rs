//! Reading an ingest request: the body (one event or an array) into events,
//! every problem named by field (and index, in an array), the catalog's
//! strict check, and the `Idempotency-Key` header. Pure: the HTTP handler in
//! `server` stores what this accepts.

use http::{HeaderMap, StatusCode};
use serde::Serialize;
use serde_json::Value;

use crate::config::Config;
use crate::model::StoredEvent;

/// How long an `Idempotency-Key` is remembered.
pub const IDEMPOTENCY_WINDOW_MS: u64 = 24 * 3_600_000;

/// A refused request: the status and the message for `{"error": ...}`.
pub type Refusal = (StatusCode, String);

/// The `Idempotency-Key` header, if present and well formed.
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, Refusal> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let bad = || {
        (
            StatusCode::BAD_REQUEST,
            "header `Idempotency-Key` must be 1 to 255 visible ASCII characters".to_string(),
        )
    };
    let key = value.to_str().map_err(|_| bad())?;
    if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad());
    }
    Ok(Some(key.to_string()))
}

/// Why `event_type` is refused, if it is: hookhost's own operational types
/// always (clients cannot forge them); under `catalog.strict`, types no
/// catalog lists as live.
pub fn refused_type(config: &Config, event_type: &str) -> Option<String> {
    if crate::operational::is_operational(event_type) {
        return Some(format!(
            "field `type`: {event_type:?} is reserved for hookhost's own operational events"
        ));
    }
    if !config.catalog.strict {
        return None;
    }
    match config.catalogs.get(event_type) {
        None => Some(format!(
            "field `type`: unknown event type {event_type:?} (not in any catalog)"
        )),
        Some((catalog, t)) if t.upcoming => Some(format!(
            "field `type`: event type {event_type:?} is announced in catalog {catalog:?} but not live yet"
        )),
        Some(_) => None,
    }
}

/// The `202` body: `{"accepted": n, "ids": [...]}`, ids in request order.
pub fn answer(events: &[StoredEvent]) -> String {
    serde_json::to_string(&IngestAnswer {
        accepted: events.len(),
        ids: events.iter().map(|e| e.id.clone()).collect(),
    })
    .unwrap_or_default()
}

/// What ingest reads, for `/openapi.json`: [`parse_events`] reads the
/// body by hand (to name every problem by field and index) and takes what
/// this says.
#[derive(serde::Deserialize, schemars::JsonSchema)]
pub struct IncomingEvent {
    /// Made by hookhost when absent; a seen id is answered again, not stored twice.
    pub id: Option<String>,
    #[serde(rename = "type")]
    pub event_type: String,
    /// RFC 3339; else `data.timestamp`, else the arrival time.
    pub timestamp: Option<String>,
    pub data: serde_json::Map<String, Value>,
}

/// One event or an array of them (all or none stored).
#[derive(serde::Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum IncomingEvents {
    One(IncomingEvent),
    Many(Vec<IncomingEvent>),
}

/// The `202` of ingest (and what a repeated `Idempotency-Key` gets again).
#[derive(Serialize, schemars::JsonSchema)]
pub struct IngestAnswer {
    /// Events in the request (new ones and ids seen before alike).
    pub accepted: usize,
    /// Their ids, in request order (made here where the client gave none).
    pub ids: Vec<String>,
}

/// A request's events, in order.
#[derive(Debug)]
pub struct Parsed {
    pub events: Vec<StoredEvent>,
    /// Per event: whether the client gave its id (else it is new, made here,
    /// and cannot have been seen before).
    pub id_given: Vec<bool>,
}

/// Reads the request body into events; the first problem refuses it whole.
pub fn parse_events(config: &Config, body: &[u8], received_at_ms: u64) -> Result<Parsed, Refusal> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| (StatusCode::BAD_REQUEST, format!("malformed JSON: {e}")))?;
    let (items, single) = match value {
        Value::Array(items) => (items, false),
        other => (vec![other], true),
    };
    if items.is_empty() {
        return Err((StatusCode::BAD_REQUEST, "the array holds no events".into()));
    }
    let mut events = Vec::with_capacity(items.len());
    let id_given = items.iter().map(|item| item.get("id").is_some()).collect();
    for (i, item) in items.iter().enumerate() {
        let parsed = crate::event_json::from_json(item)
            .map_err(|e| e.to_string())
            .and_then(|e| match refused_type(config, &e.event_type) {
                Some(reason) => Err(reason),
                None => Ok(e),
            });
        match parsed {
            Ok(e) => events.push(StoredEvent {
                id: e.id,
                event_type: e.event_type,
                timestamp: e.timestamp,
                data: e.data,
                received_at_ms,
                errors: Vec::new(),
                plugin_decisions: Default::default(),
            }),
            Err(e) if single => return Err((StatusCode::UNPROCESSABLE_ENTITY, e)),
            Err(e) => {
                return Err((
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!("events[{i}]: {e}"),
                ));
            }
        }
    }
    Ok(Parsed { events, id_given })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<Vec<StoredEvent>, Refusal> {
        parse_events(&Config::default(), body.as_bytes(), 0).map(|p| p.events)
    }

    #[test]
    fn bad_bodies_are_named() {
        assert_eq!(parse("{").unwrap_err().0, StatusCode::BAD_REQUEST);
        assert_eq!(parse("[]").unwrap_err().0, StatusCode::BAD_REQUEST);
        let (status, message) = parse(r#"[{"type": "a"}, {"data": {}}]"#).unwrap_err();
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(message, "events[1]: field `type` is missing");
        assert_eq!(parse(r#"{"type": "a"}"#).unwrap().len(), 1);
    }

    #[test]
    fn idempotency_keys_are_checked() {
        let mut headers = HeaderMap::new();
        assert_eq!(idempotency_key(&headers).unwrap(), None);
        headers.insert("idempotency-key", "order-42".parse().unwrap());
        assert_eq!(
            idempotency_key(&headers).unwrap().as_deref(),
            Some("order-42")
        );
        headers.insert("idempotency-key", "has space".parse().unwrap());
        assert_eq!(
            idempotency_key(&headers).unwrap_err().0,
            StatusCode::BAD_REQUEST
        );
    }
}
