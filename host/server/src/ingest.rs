//! `POST /v1/events`: reads the request (bounded), answers a repeated
//! `Idempotency-Key` from memory, parses the events and hands them to the
//! core's durable intake; `202` once they are durable.

use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hookhost_core::clock::now_ms;
use hookhost_core::intake::IntakeError;
use hookhost_core::intake::parse::{self, Parsed};
use hookhost_core::metrics::METRICS;
use hookhost_core::model::Remembered;

use crate::app::App;
use crate::body::read_bounded;
use crate::reply::error;

pub(crate) async fn ingest(State(app): State<App>, request: Request<Body>) -> Response {
    let answer = ingest_request(app, request).await;
    if answer.status().is_client_error() {
        METRICS.ingest_refused.fetch_add(1, Ordering::Relaxed);
    }
    answer
}

async fn ingest_request(app: App, request: Request<Body>) -> Response {
    // A full disk or a lost database: no acknowledgement can be durable.
    if let Some(why) = app.intake.unavailable() {
        return unavailable(IntakeError::Unavailable(why));
    }
    let key = match parse::idempotency_key(request.headers()) {
        Ok(k) => k,
        Err((status, message)) => return error(status, message),
    };
    let bytes = match read_bounded(
        request.into_body(),
        app.config.server.max_body_bytes,
        "server.max_body_bytes",
        Duration::from_millis(app.config.server.body_timeout_ms),
    )
    .await
    {
        Ok(bytes) => bytes,
        Err(refused) => return refused,
    };
    let received_at_ms = now_ms();
    // A key seen within the window gets the answer it got then; while its
    // first request runs, a second one is told to wait.
    let in_progress = match &key {
        None => None,
        Some(key) => {
            match app.intake.remembered(key.clone(), received_at_ms).await {
                Ok(Some(r)) => return replay(&r),
                Ok(None) => {}
                Err(e) => return unavailable(e),
            }
            match app.keys_in_progress.claim(key) {
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
    let Parsed { events, id_given } = match parse::parse_events(&app.config, &bytes, received_at_ms)
    {
        Ok(parsed) => parsed,
        Err((status, message)) => return error(status, message),
    };
    // At saturation the event waits here, before it is acknowledged, not
    // in a queue after (see `hookhost_core::backlog`).
    app.deliverer.backlog().admit().await;
    // From here on the request must not stop half-way (a client that hangs
    // up would leave ids claimed but never stored, and a retry of them would
    // be answered as accepted): the rest runs as its own task.
    let intake = app.intake.clone();
    let task = tokio::spawn(async move {
        let accepted = intake.accept(events, id_given, key, received_at_ms).await;
        drop(in_progress);
        accepted
    });
    match task.await {
        Ok(Ok(body)) => (
            StatusCode::ACCEPTED,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response(),
        Ok(Err(e)) => unavailable(e),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("ingest failed: {e}"),
        ),
    }
}

/// 503 with `Retry-After`: nothing was acknowledged, the client may retry.
fn unavailable(e: IntakeError) -> Response {
    let mut answer = error(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
    answer
        .headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    answer
}

/// The remembered answer to a repeated `Idempotency-Key`.
fn replay(r: &Remembered) -> Response {
    (
        StatusCode::from_u16(r.status).unwrap_or(StatusCode::ACCEPTED),
        [
            (header::CONTENT_TYPE, "application/json"),
            (HeaderName::from_static("idempotent-replayed"), "true"),
        ],
        r.body.clone(),
    )
        .into_response()
}
