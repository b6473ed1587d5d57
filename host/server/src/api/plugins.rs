//! `/v1/plugins`: what the plugin registry holds.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hookhost_plugin_runtime::PromoteError;
use serde_json::json;

use super::blocking;
use crate::app::App;
use crate::reply::error;

/// `GET /v1/plugins`: every plugin serving or refused, with its content
/// hash, roles, load time, call counts, mean latency and last load error.
pub(super) async fn list_plugins(State(app): State<App>) -> Response {
    axum::Json(json!({ "plugins": app.registry.status() })).into_response()
}

/// `POST /v1/plugins/{name}/promote`: the candidate in shadow becomes the
/// serving version (its file renamed onto `NAME.wasm`, loaded, swapped in).
pub(super) async fn promote_plugin(State(app): State<App>, Path(name): Path<String>) -> Response {
    let registry = app.registry.clone();
    let promoting = name.clone();
    let promoted = match blocking(move || registry.promote(&promoting)).await {
        Ok(promoted) => promoted,
        Err(e) => return e.into_response(),
    };
    match promoted {
        Ok(plugin) => axum::Json(json!({ "promoted": plugin.info() })).into_response(),
        Err(e @ PromoteError::NoCandidate(_)) => error(StatusCode::NOT_FOUND, e.to_string()),
        Err(e @ PromoteError::Load(_)) => error(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
        Err(e @ PromoteError::Rename { .. }) => {
            error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
        }
    }
}
