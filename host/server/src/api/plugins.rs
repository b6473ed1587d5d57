//! `/v1/plugins`: what the plugin registry holds.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::app::App;

/// `GET /v1/plugins`: every plugin serving or refused, with its content
/// hash, roles, load time, call counts, mean latency and last load error.
pub(super) async fn list_plugins(State(app): State<App>) -> Response {
    axum::Json(json!({ "plugins": app.registry.status() })).into_response()
}
