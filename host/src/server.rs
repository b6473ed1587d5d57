//! The HTTP server and the wiring from ingest to delivery.
//!
//! `POST /v1/events` takes one event or an array, appends them to the
//! journal, answers `202` with the ids once the journal's group-committed
//! sync holds them, then hands the events to the pipeline worker, which
//! stores them with their outcome; its jobs go to the deliverer. At start,
//! events left in the journal that the store does not hold, and jobs not yet
//! delivered, are resumed. On SIGTERM/SIGINT: stop taking requests, finish the pipeline
//! queue, let attempts in flight finish (up to the grace period), flush, exit.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

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
use crate::ingest;
use crate::journal::Journal;
use crate::metrics::METRICS;
use crate::openapi::{self, Access, Route};
use crate::pipeline::Pipeline;
use crate::sign::constant_time_eq;
use crate::store::{SledStore, Store, StoredEvent};
use crate::subscriptions::Subscriptions;
use crate::worker::{Accepted, Worker};
use hookhost_plugin_runtime::Registry;
use std::sync::atomic::Ordering;

#[derive(Clone)]
pub(crate) struct App {
    pub(crate) config: Arc<Config>,
    pub(crate) registry: Arc<Registry>,
    admin_token: Option<Arc<str>>,
    ingest_token: Option<Arc<str>>,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) deliverer: Arc<Deliverer>,
    pub(crate) subscriptions: Arc<Subscriptions>,
    openapi: Arc<Value>,
    journal: Arc<Journal>,
    to_pipeline: mpsc::UnboundedSender<Accepted>,
    max_body_bytes: usize,
    /// `Idempotency-Key`s whose first request is still running.
    keys_in_progress: Arc<std::sync::Mutex<HashSet<String>>>,
}

/// A JSON error answer: `{"error": "..."}`.
pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> Response {
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
    let (journal, recovered) = Journal::open(
        &config.server.data_dir.join("journal"),
        config.server.pipeline_backlog,
    )?;
    let subscriptions = Subscriptions::open(config.clone(), store.clone())?;
    let deliverer = Deliverer::new(store.clone(), &config, subscriptions.clone());
    let pipeline = Arc::new(Pipeline::new(
        registry.clone(),
        config.clone(),
        subscriptions.clone(),
    ));
    let aggregator = Arc::new(Aggregator::new(
        config.clone(),
        subscriptions.clone(),
        store.clone(),
        Arc::new(SystemClock),
    )?);

    // Expired Idempotency-Keys are ignored when read; this keeps them from
    // piling up.
    let pruning = store.clone();
    let prune_task = tokio::spawn(async move {
        let mut hourly = tokio::time::interval(Duration::from_secs(3600));
        loop {
            hourly.tick().await;
            let store = pruning.clone();
            let before = now_ms().saturating_sub(ingest::IDEMPOTENCY_WINDOW_MS);
            match tokio::task::spawn_blocking(move || store.forget_answers(before)).await {
                Ok(Ok(n)) if n > 0 => tracing::info!(n, "expired Idempotency-Keys removed"),
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot remove expired Idempotency-Keys"),
                _ => {}
            }
        }
    });
    let resumed_jobs = store.pending_count()?;
    let resumed_events = recover_journal(&journal, recovered, &*store)?;
    tracing::info!(
        jobs = resumed_jobs,
        events = resumed_events.iter().map(|b| b.events.len()).sum::<usize>(),
        "resuming unfinished work"
    );
    // Pending jobs load from the store as room allows (`max_jobs_in_memory`).
    deliverer.resume();

    let (to_pipeline, from_ingest) = mpsc::unbounded_channel();
    for batch in resumed_events {
        let _ = to_pipeline.send(batch);
    }
    let worker = tokio::spawn(Worker::new(pipeline, aggregator, store.clone()).run(
        from_ingest,
        deliverer.clone(),
        journal.clone(),
        Duration::from_millis(config.aggregation.tick_ms),
    ));
    let checkpoints = tokio::spawn(checkpoint_every(
        journal.clone(),
        store.clone(),
        Duration::from_millis(config.server.checkpoint_ms),
    ));

    let app = App {
        config: config.clone(),
        registry,
        admin_token: config.server.admin_token.as_deref().map(Arc::from),
        ingest_token: config.server.ingest_token.as_deref().map(Arc::from),
        store: store.clone(),
        deliverer: deliverer.clone(),
        subscriptions: subscriptions.clone(),
        openapi: Arc::default(),
        journal: journal.clone(),
        to_pipeline,
        max_body_bytes: config.server.max_body_bytes,
        keys_in_progress: Arc::default(),
    };
    let routes = all_routes();
    let app = App {
        openapi: Arc::new(openapi::document(&routes)),
        ..app
    };
    let router = openapi::router(routes).with_state(app);
    let listener = tokio::net::TcpListener::bind(&config.server.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.server.listen))?;
    let local = listener.local_addr()?;
    if config.server.ingest_token.is_none() && !local.ip().is_loopback() {
        tracing::warn!(listen = %local, "ingest is open to the network: set server.ingest_token");
    }
    tracing::info!(listen = %local, "HTTP API listening");
    // Answers go out at once, not after the client's delayed ACK.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
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
    checkpoints.abort();
    prune_task.abort();
    store.flush()?;
    // Everything the worker stored is flushed: the journal can go.
    let (j, s) = (journal.clone(), store.clone());
    match tokio::task::spawn_blocking(move || j.checkpoint(&*s, true)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "journal left in place; it is read at next start"),
        Err(e) => tracing::warn!(error = %e, "journal left in place; it is read at next start"),
    }
    tracing::info!("store flushed; bye");
    Ok(())
}

/// Events the journal holds that the store does not: the ones whose worker
/// batch did not land before a crash. Their `Idempotency-Key` answers are
/// restored first.
fn recover_journal(
    journal: &Journal,
    recovered: crate::journal::Recovered,
    store: &dyn Store,
) -> anyhow::Result<Vec<Accepted>> {
    if recovered.torn_frames > 0 {
        tracing::warn!(
            frames = recovered.torn_frames,
            "journal: a torn frame at the end of a segment was dropped (its request was never acknowledged)"
        );
    }
    for answer in &recovered.answers {
        if store.remembered(&answer.key)?.is_none() {
            store.remember(answer)?;
        }
    }
    let new = claim_unseen(journal, store, &recovered.events, std::iter::repeat(true))?;
    // One batch per segment read: each segment stays until its own events
    // are in the store.
    let mut batches: Vec<Accepted> = Vec::new();
    for ((event, new), segment) in recovered
        .events
        .into_iter()
        .zip(new)
        .zip(recovered.segments)
    {
        if !new {
            continue; // in the store already, or twice in the journal
        }
        match batches.last_mut() {
            Some(batch) if batch.segment == Some(segment) => batch.events.push(event),
            _ => batches.push(Accepted {
                events: vec![event],
                segment: Some(segment),
                room: 0,
            }),
        }
    }
    for batch in &batches {
        if let Some(segment) = batch.segment {
            journal.replaying(segment, batch.events.len() as u64);
        }
    }
    Ok(batches)
}

/// Claims the ids of `events` and tells, per event, whether it is new: not
/// claimed already (in flight, or earlier in `events`) and not in the store.
/// Claims come first, then the store: the worker stores an event before it
/// releases the claim. Where `look_up` says false (an id made here) the
/// store is not asked. On a store error every claim made here is released.
fn claim_unseen(
    journal: &Journal,
    store: &dyn Store,
    events: &[StoredEvent],
    look_up: impl Iterator<Item = bool>,
) -> Result<Vec<bool>, crate::store::StoreError> {
    let mut new = journal.claim(events.iter().map(|e| e.id.as_str()));
    for (i, (event, look_up)) in events.iter().zip(look_up).enumerate() {
        if !new[i] || !look_up {
            continue;
        }
        match store.has_event(&event.id) {
            Ok(false) => {}
            Ok(true) => {
                journal.release([event.id.as_str()]);
                new[i] = false;
            }
            Err(e) => {
                let claimed = events.iter().zip(&new).filter(|(_, n)| **n);
                journal.release(claimed.map(|(e, _)| e.id.as_str()));
                return Err(e);
            }
        }
    }
    Ok(new)
}

/// Retires journal segments whose events are all in the store.
async fn checkpoint_every(journal: Arc<Journal>, store: Arc<dyn Store>, every: Duration) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let (j, s) = (journal.clone(), store.clone());
        match tokio::task::spawn_blocking(move || j.checkpoint(&*s, false)).await {
            Ok(Ok(n)) if n > 0 => tracing::debug!(segments = n, "journal checkpoint"),
            Ok(Err(e)) => tracing::warn!(error = %e, "journal checkpoint failed; retried"),
            _ => {}
        }
    }
}

/// Checks the management API's bearer token.
pub(crate) fn authorize(app: &App, headers: &axum::http::HeaderMap) -> Result<(), Response> {
    let Some(expected) = &app.admin_token else {
        return Err(error(
            StatusCode::FORBIDDEN,
            "the management API is disabled: set server.admin_token or HOOKHOST_ADMIN_TOKEN",
        ));
    };
    check_token(
        headers,
        expected,
        app.ingest_token.as_deref(),
        "admin",
        "ingest",
    )
}

/// Checks ingest's bearer token, if one is configured.
fn authorize_ingest(app: &App, headers: &axum::http::HeaderMap) -> Result<(), Response> {
    match &app.ingest_token {
        None => Ok(()),
        Some(expected) => check_token(
            headers,
            expected,
            app.admin_token.as_deref(),
            "ingest",
            "admin",
        ),
    }
}

/// 401 without a bearer token, 403 with another one (saying so when it is
/// the token of the other kind).
fn check_token(
    headers: &axum::http::HeaderMap,
    expected: &str,
    other: Option<&str>,
    kind: &str,
    other_kind: &str,
) -> Result<(), Response> {
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        None => Err(error(
            StatusCode::UNAUTHORIZED,
            format!("missing `Authorization: Bearer <{kind} token>`"),
        )),
        Some(token) if constant_time_eq(token.as_bytes(), expected.as_bytes()) => Ok(()),
        Some(token) if other.is_some_and(|o| constant_time_eq(token.as_bytes(), o.as_bytes())) => {
            Err(error(
                StatusCode::FORBIDDEN,
                format!("this is the {other_kind} token; this endpoint needs the {kind} token"),
            ))
        }
        Some(_) => Err(error(StatusCode::FORBIDDEN, "wrong token")),
    }
}

/// Every route of the HTTP API (see `openapi`).
fn all_routes() -> Vec<Route> {
    let open = |method, path, summary, responses, handler| Route {
        method,
        path,
        summary,
        access: Access::Open,
        query: &[],
        body: false,
        responses,
        handler,
    };
    let mut routes = vec![
        Route {
            access: Access::Ingest,
            body: true,
            ..open(
                "POST",
                "/v1/events",
                "Ingest one event or an array (202 once durable); header Idempotency-Key optional",
                &[
                    (202, "accepted: {accepted, ids}"),
                    (400, "malformed JSON or Idempotency-Key"),
                    (409, "same Idempotency-Key in progress"),
                    (413, "body over server.max_body_bytes"),
                    (422, "invalid event, named by field and index"),
                ],
                post(ingest),
            )
        },
        open(
            "GET",
            "/healthz",
            "Liveness",
            &[(200, "ok")],
            get(|| async { "ok" }),
        ),
        open(
            "GET",
            "/readyz",
            "Readiness: store answers, every configured plugin serving",
            &[(200, "ready"), (503, "not ready, with the problems")],
            get(readyz),
        ),
        open(
            "GET",
            "/metrics",
            "Prometheus metrics",
            &[(200, "text format 0.0.4")],
            get(metrics),
        ),
        open(
            "GET",
            "/openapi.json",
            "This document",
            &[(200, "OpenAPI 3.1")],
            get(openapi_json),
        ),
    ];
    routes.extend(crate::api::routes());
    routes
}

async fn openapi_json(State(app): State<App>) -> Response {
    axum::Json(Value::clone(&app.openapi)).into_response()
}

/// `GET /readyz`: 200 when the store answers and every plugin the config
/// names is serving; 503 naming what is missing otherwise.
async fn readyz(State(app): State<App>) -> Response {
    let mut problems = Vec::new();
    if let Err(e) = app.store.has_event("readyz-probe") {
        problems.push(format!("store: {e}"));
    }
    let serving = app.registry.names();
    let named = app
        .config
        .routes
        .iter()
        .map(|step| step.plugin.clone())
        .chain(
            app.subscriptions
                .current()
                .iter()
                .flat_map(|s| s.plugins.iter().map(|p| p.plugin.clone()))
                .collect::<Vec<_>>(),
        );
    let mut missing: Vec<String> = named.filter(|p| !serving.contains(p)).collect();
    missing.sort_unstable();
    missing.dedup();
    for plugin in missing {
        problems.push(format!(
            "plugin {plugin:?} is named in the config but not serving"
        ));
    }
    if problems.is_empty() {
        axum::Json(json!({ "ready": true })).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({ "ready": false, "problems": problems })),
        )
            .into_response()
    }
}

/// `GET /metrics`: Prometheus text format. Counts only: no ids, no payloads.
async fn metrics(State(app): State<App>) -> Response {
    let plugins = app
        .registry
        .status()
        .into_iter()
        .filter_map(|s| {
            s.serving
                .map(|i| (s.name, i.calls, i.errors, i.mean_call_us / 1e6))
        })
        .collect();
    let (plugin_loads, plugin_refusals) = app.registry.load_counts();
    let page = crate::metrics::render(&crate::metrics::Snapshot {
        queue_depth: app.deliverer.queued(),
        plugins,
        plugin_loads,
        plugin_refusals,
    });
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        page,
    )
        .into_response()
}

async fn ingest(State(app): State<App>, request: Request<Body>) -> Response {
    let answer = ingest_request(app, request).await;
    if answer.status().is_client_error() {
        METRICS.ingest_refused.fetch_add(1, Ordering::Relaxed);
    }
    answer
}

async fn ingest_request(app: App, request: Request<Body>) -> Response {
    if let Err(denied) = authorize_ingest(&app, request.headers()) {
        return denied;
    }
    let key = match ingest::idempotency_key(request.headers()) {
        Ok(k) => k,
        Err((status, message)) => return error(status, message),
    };
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
    let received_at_ms = now_ms();
    // A key seen within the window gets the answer it got then; while its
    // first request runs, a second one is told to wait.
    let _in_progress = match &key {
        None => None,
        Some(key) => {
            match app.store.remembered(key) {
                Ok(Some(r)) if received_at_ms < r.at_ms + ingest::IDEMPOTENCY_WINDOW_MS => {
                    return replay(&r);
                }
                Ok(_) => {}
                Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
            }
            match InProgress::claim(&app.keys_in_progress, key) {
                Some(guard) => Some(guard),
                None => {
                    return error(
                        StatusCode::CONFLICT,
                        format!("a request with Idempotency-Key {key:?} is still in progress"),
                    );
                }
            }
        }
    };
    let ingest::Parsed { events, id_given } =
        match ingest::parse_events(&app.config, &bytes, received_at_ms) {
            Ok(parsed) => parsed,
            Err((status, message)) => return error(status, message),
        };
    // From here on the request must not stop half-way (a client that hangs
    // up would leave ids claimed but never stored, and a retry of them would
    // be answered as accepted): the rest runs as its own task.
    let task = tokio::spawn(accept_events(
        app,
        events,
        id_given,
        key,
        received_at_ms,
        _in_progress,
    ));
    match task.await {
        Ok(answer) => answer,
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("ingest failed: {e}"),
        ),
    }
}

/// Claims the events' ids, journals what is new, and queues it for the
/// pipeline; answers `202`.
async fn accept_events(
    app: App,
    events: Vec<StoredEvent>,
    id_given: Vec<bool>,
    key: Option<String>,
    received_at_ms: u64,
    _in_progress: Option<InProgress>,
) -> Response {
    let answer = ingest::answer(&events);
    // An id accepted before (in the journal or in the store) is answered
    // with, and stored nothing for; an id made here is new.
    let new = match claim_unseen(&app.journal, &*app.store, &events, id_given.into_iter()) {
        Ok(new) => new,
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    let fresh: Vec<StoredEvent> = events
        .into_iter()
        .zip(new)
        .filter_map(|(event, new)| new.then_some(event))
        .collect();
    // The key's answer goes in the same journal frame as the events: both or
    // neither.
    let remembered = key.map(|key| ingest::Remembered {
        key,
        status: StatusCode::ACCEPTED.as_u16(),
        body: answer.clone(),
        at_ms: received_at_ms,
    });
    if !fresh.is_empty() || remembered.is_some() {
        let room = app.journal.reserve(fresh.len()).await;
        let segment = match app.journal.append(&fresh, remembered.as_ref()).await {
            Ok(segment) => segment,
            Err(e) => {
                app.journal.unreserve(room);
                app.journal.release(fresh.iter().map(|e| e.id.as_str()));
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("events not stored durably: {e}"),
                );
            }
        };
        if let Some(r) = &remembered {
            match app.store.remember(r) {
                Ok(()) => app.journal.answer_stored(segment),
                // The journal keeps it (and its segment); restored at next start.
                Err(e) => tracing::warn!(error = %e, "cannot store an Idempotency-Key answer"),
            }
        }
        METRICS
            .events_ingested
            .fetch_add(fresh.len() as u64, Ordering::Relaxed);
        if !fresh.is_empty() {
            let _ = app.to_pipeline.send(Accepted {
                events: fresh,
                segment: Some(segment),
                room,
            });
        }
    }
    (
        StatusCode::ACCEPTED,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        answer,
    )
        .into_response()
}

/// The remembered answer to a repeated `Idempotency-Key`.
fn replay(r: &ingest::Remembered) -> Response {
    (
        StatusCode::from_u16(r.status).unwrap_or(StatusCode::ACCEPTED),
        [
            (axum::http::header::CONTENT_TYPE, "application/json"),
            (
                axum::http::HeaderName::from_static("idempotent-replayed"),
                "true",
            ),
        ],
        r.body.clone(),
    )
        .into_response()
}

/// Marks an `Idempotency-Key` as in progress until dropped.
struct InProgress {
    keys: Arc<std::sync::Mutex<HashSet<String>>>,
    key: String,
}

impl InProgress {
    fn claim(keys: &Arc<std::sync::Mutex<HashSet<String>>>, key: &str) -> Option<InProgress> {
        let mut set = keys.lock().unwrap_or_else(|p| p.into_inner());
        set.insert(key.to_string()).then(|| InProgress {
            keys: keys.clone(),
            key: key.to_string(),
        })
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        let mut set = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        set.remove(&self.key);
    }
}
