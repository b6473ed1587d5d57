//! The HTTP server and the wiring from ingest to delivery.
//!
//! `POST /v1/events` takes one event or an array, writes them to the store,
//! waits for a group-committed flush, answers `202` with the ids, then hands
//! the events to the pipeline worker, whose jobs go to the deliverer. At
//! start, events whose pipeline did not complete and jobs not yet delivered
//! are resumed. On SIGTERM/SIGINT: stop taking requests, finish the pipeline
//! queue, let attempts in flight finish (up to the grace period), flush, exit.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::aggregate::{Aggregator, SystemClock};
use crate::config::Config;
use crate::deliver::{Deliverer, now_ms};
use crate::pipeline::Pipeline;
use crate::plugins::Registry;
use crate::store::{GroupCommit, SledStore, Store, StoredEvent};
use crate::worker::Worker;

#[derive(Clone)]
struct App {
    config: Arc<Config>,
    registry: Arc<Registry>,
    admin_token: Option<Arc<str>>,
    store: Arc<dyn Store>,
    commit: Arc<GroupCommit>,
    to_pipeline: mpsc::UnboundedSender<Vec<StoredEvent>>,
    max_body_bytes: usize,
}

/// A JSON error answer: `{"error": "..."}`.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": message.into() }))).into_response()
}

/// Opens the store, resumes unfinished work, and serves until `shutdown` resolves.
pub async fn run(
    config: Config,
    registry: Arc<Registry>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let config = Arc::new(config);
    std::fs::create_dir_all(&config.server.data_dir)?;
    let store: Arc<dyn Store> = Arc::new(SledStore::open_with_cache(
        &config.server.data_dir,
        config.server.cache_mib,
    )?);
    let commit = GroupCommit::start(store.clone());
    let deliverer = Deliverer::new(store.clone(), &config.subscriptions);
    let pipeline = Arc::new(Pipeline::new(registry.clone(), config.clone()));
    let aggregator = Arc::new(Aggregator::new(
        config.clone(),
        store.clone(),
        Arc::new(SystemClock),
    )?);

    let resumed_jobs = store.pending_jobs()?;
    let resumed_events = store.unprocessed_events()?;
    tracing::info!(
        jobs = resumed_jobs.len(),
        events = resumed_events.len(),
        "resuming unfinished work"
    );
    for job in resumed_jobs {
        deliverer.submit(job);
    }

    let (to_pipeline, from_ingest) = mpsc::unbounded_channel();
    if !resumed_events.is_empty() {
        let _ = to_pipeline.send(resumed_events);
    }
    let worker = tokio::spawn(Worker::new(pipeline, aggregator, store.clone()).run(
        from_ingest,
        deliverer.clone(),
        Duration::from_millis(config.aggregation.tick_ms),
    ));

    let app = App {
        config: config.clone(),
        registry,
        admin_token: config.server.admin_token.as_deref().map(Arc::from),
        store: store.clone(),
        commit,
        to_pipeline,
        max_body_bytes: config.server.max_body_bytes,
    };
    let router = Router::new()
        .route("/v1/events", post(ingest))
        .route("/v1/plugins", get(list_plugins))
        .route("/v1/event-types", get(list_event_types))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(app);
    let listener = tokio::net::TcpListener::bind(&config.server.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.server.listen))?;
    tracing::info!(listen = %listener.local_addr()?, "HTTP API listening");
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await?;

    // The router (and its pipeline sender) is gone: the worker drains and ends.
    tracing::info!("stopped taking requests; finishing the pipeline queue");
    let _ = worker.await;
    let grace = Duration::from_millis(config.server.shutdown_grace_ms);
    if !deliverer.shutdown(grace).await {
        tracing::warn!(
            grace_ms = grace.as_millis() as u64,
            "attempts still in flight at the deadline; they resume at next start"
        );
    }
    store.flush()?;
    tracing::info!("store flushed; bye");
    Ok(())
}

/// Checks the management API's bearer token.
fn authorize(app: &App, headers: &axum::http::HeaderMap) -> Result<(), Response> {
    let Some(expected) = &app.admin_token else {
        return Err(error(
            StatusCode::FORBIDDEN,
            "the management API is disabled: set server.admin_token or HOOKHOST_ADMIN_TOKEN",
        ));
    };
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        None => Err(error(
            StatusCode::UNAUTHORIZED,
            "missing `Authorization: Bearer <token>`",
        )),
        Some(token) if constant_time_eq(token.as_bytes(), expected.as_bytes()) => Ok(()),
        Some(_) => Err(error(StatusCode::FORBIDDEN, "wrong token")),
    }
}

/// Compares without an early exit, so timing does not reveal the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `GET /v1/plugins`: every plugin serving or refused, with its content
/// hash, roles, load time, call counts, mean latency and last load error.
async fn list_plugins(State(app): State<App>, headers: axum::http::HeaderMap) -> Response {
    if let Err(denied) = authorize(&app, &headers) {
        return denied;
    }
    axum::Json(json!({ "plugins": app.registry.status() })).into_response()
}

/// `GET /v1/event-types`: every type of the loaded catalogs, with its
/// catalog, description, tier, delivery mode and sample payload.
async fn list_event_types(State(app): State<App>, headers: axum::http::HeaderMap) -> Response {
    if let Err(denied) = authorize(&app, &headers) {
        return denied;
    }
    let types: Vec<Value> = app
        .config
        .catalogs
        .types()
        .map(|(catalog, t)| {
            let mut entry = serde_json::to_value(t).unwrap_or_default();
            entry["catalog"] = json!(catalog);
            entry
        })
        .collect();
    axum::Json(json!({ "strict": app.config.catalog.strict, "event_types": types })).into_response()
}

/// Under `catalog.strict`, why `event_type` is refused, if it is.
fn refused_type(config: &Config, event_type: &str) -> Option<String> {
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

async fn ingest(State(app): State<App>, request: Request<Body>) -> Response {
    let bytes = match axum::body::to_bytes(request.into_body(), app.max_body_bytes).await {
        Ok(b) => b,
        Err(_) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "request body is larger than the limit of {} bytes",
                    app.max_body_bytes
                ),
            );
        }
    };
    let value: Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("malformed JSON: {e}")),
    };
    let (items, single) = match value {
        Value::Array(items) => (items, false),
        other => (vec![other], true),
    };
    if items.is_empty() {
        return error(StatusCode::BAD_REQUEST, "the array holds no events");
    }
    let received_at_ms = now_ms();
    let mut events = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let parsed = crate::event::from_json(item).map_err(|e| e.to_string());
        let parsed = parsed.and_then(|e| match refused_type(&app.config, &e.event_type) {
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
            }),
            Err(e) if single => return error(StatusCode::UNPROCESSABLE_ENTITY, e),
            Err(e) => {
                return error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!("events[{i}]: {e}"),
                );
            }
        }
    }
    let ids: Vec<String> = events.iter().map(|e| e.id.clone()).collect();
    // An id already stored was accepted before: answer with it, store nothing.
    // sled reads and unflushed writes are in-memory work: no blocking hop.
    let mut seen = HashSet::with_capacity(events.len());
    let mut fresh: Vec<StoredEvent> = Vec::with_capacity(events.len());
    for e in events {
        match app.store.has_event(&e.id) {
            Ok(false) if seen.insert(e.id.clone()) => fresh.push(e),
            Ok(_) => {}
            Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        }
    }
    if let Err(e) = app.store.accept(&fresh) {
        return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
    }
    if let Err(e) = app.commit.durable().await {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("events not stored durably: {e}"),
        );
    }
    if !fresh.is_empty() {
        let _ = app.to_pipeline.send(fresh);
    }
    (
        StatusCode::ACCEPTED,
        axum::Json(json!({ "accepted": ids.len(), "ids": ids })),
    )
        .into_response()
}
