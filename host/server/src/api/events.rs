//! `/v1/events/{id}`: an accepted event as stored (kept for
//! `retention.events`).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::blocking;
use crate::app::App;
use crate::reply::error;

/// `GET /v1/events/{id}`: the event with `data` as JSON.
pub(super) async fn get_event(State(app): State<App>, Path(id): Path<String>) -> Response {
    let store = app.store.clone();
    let lookup = id.clone();
    let found = match blocking(move || store.event(&lookup)).await {
        Ok(found) => found,
        Err(e) => return e.into_response(),
    };
    match found {
        Ok(Some(event)) => axum::Json(crate::answers::Event::of(&event)).into_response(),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            format!(
                "no event with id {id} (never accepted, still in the pipeline, or past retention.events)"
            ),
        ),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}
