//! `/v1/plugins`: what the plugin registry holds.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use hookhost_plugin_runtime::{InstallError, PromoteError};
use serde::Deserialize;

use super::blocking;
use crate::answers::{Installed, PluginList, Promoted, Tried};
use crate::app::App;
use crate::body::read_bounded;
use crate::reply::error;

/// `GET /v1/plugins`: every plugin serving or refused, with its content
/// hash, roles, load time, call counts, mean latency and last load error.
pub(super) async fn list_plugins(State(app): State<App>) -> Response {
    axum::Json(PluginList {
        plugins: app.registry.status(),
    })
    .into_response()
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
        Ok(plugin) => axum::Json(Promoted {
            promoted: plugin.info(),
        })
        .into_response(),
        Err(e @ PromoteError::NoCandidate(_)) => error(StatusCode::NOT_FOUND, e.to_string()),
        Err(e @ PromoteError::Load(_)) => error(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
        Err(e @ PromoteError::Rename { .. }) => {
            error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Target {
    #[serde(default)]
    candidate: bool,
}

/// `PUT /v1/plugins/{name}`: the body is a component; it is compiled and
/// checked, then written into the plugins folder as `NAME.wasm` (or
/// `NAME.next.wasm` with `?candidate=true`) by atomic rename and swapped in.
/// A refused upload changes nothing.
pub(super) async fn upload_plugin(
    State(app): State<App>,
    Path(name): Path<String>,
    target: Result<Query<Target>, axum::extract::rejection::QueryRejection>,
    request: Request<Body>,
) -> Response {
    let Ok(Query(target)) = target else {
        return error(
            StatusCode::BAD_REQUEST,
            "the only query parameter is candidate=true|false",
        );
    };
    let bytes = match read_bounded(
        request.into_body(),
        app.config.plugins.max_upload_bytes(),
        "plugins.max_upload_mib",
        Duration::from_millis(app.config.server.body_timeout_ms),
    )
    .await
    {
        Ok(bytes) => bytes,
        Err(refused) => return refused,
    };
    if bytes.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "the body must be the plugin's .wasm bytes (it is empty)",
        );
    }
    let registry = app.registry.clone();
    let dir = app.config.plugins.dir.clone();
    let installing = name.clone();
    let membership = app.membership.clone();
    // Installed here first (compiled and checked): only a plugin that loads
    // is shared with the other nodes.
    let installed = match blocking(move || {
        registry
            .install(&dir, &installing, &bytes, target.candidate)
            .map(|plugin| {
                let shared = membership.share_plugin(&installing, target.candidate, Some(&bytes));
                (plugin, shared)
            })
    })
    .await
    {
        Ok(installed) => installed,
        Err(e) => return e.into_response(),
    };
    match installed {
        Ok((_, Err(e))) => {
            let mut answer = error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "installed on this node but not shared with the other nodes ({e}); upload it again"
                ),
            );
            answer.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
            answer
        }
        Ok((plugin, Ok(()))) => {
            tracing::info!(plugin = %name.escape_debug(), candidate = target.candidate, "plugin uploaded");
            axum::Json(Installed {
                installed: plugin.info(),
                file: plugin
                    .file()
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned()),
                candidate: target.candidate,
            })
            .into_response()
        }
        Err(e) => install_error(e),
    }
}

/// `DELETE /v1/plugins/{name}`: removes the file (or the candidate's) and
/// stops serving it.
pub(super) async fn delete_plugin(
    State(app): State<App>,
    Path(name): Path<String>,
    target: Result<Query<Target>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(target)) = target else {
        return error(
            StatusCode::BAD_REQUEST,
            "the only query parameter is candidate=true|false",
        );
    };
    let registry = app.registry.clone();
    let dir = app.config.plugins.dir.clone();
    let removing = name.clone();
    let membership = app.membership.clone();
    let removed = match blocking(move || {
        registry
            .uninstall(&dir, &removing, target.candidate)
            .map(|removed| {
                // Other nodes may have it even when this one did not.
                let shared = membership.share_plugin(&removing, target.candidate, None);
                (removed, shared)
            })
    })
    .await
    {
        Ok(removed) => removed,
        Err(e) => return e.into_response(),
    };
    match removed {
        Ok((_, Err(e))) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("removed on this node but not from the other nodes ({e}); delete it again"),
        ),
        Ok((true, Ok(()))) => StatusCode::NO_CONTENT.into_response(),
        Ok((false, Ok(()))) => error(
            StatusCode::NOT_FOUND,
            format!("no plugin file for `{}`", name.escape_debug()),
        ),
        Err(e) => install_error(e),
    }
}

fn install_error(e: InstallError) -> Response {
    match &e {
        InstallError::BadName(_) => error(StatusCode::BAD_REQUEST, e.to_string()),
        InstallError::Load(_) => error(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
        InstallError::Write { source, .. } if source.kind() == std::io::ErrorKind::StorageFull => {
            let mut answer = error(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
            answer.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("30"),
            );
            answer
        }
        InstallError::Write { .. } => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "PluginTrial")]
pub(super) struct Trial {
    /// `{"type": ..., "data": {...}}`, optional `id` and `timestamp`.
    event: serde_json::Value,
    /// The plugin's config, any JSON; none (`null`) is `""` to the plugin.
    #[serde(default)]
    config: serde_json::Value,
}

/// `POST /v1/plugins/{name}/try`: what the serving version decides about an
/// event with a config, every exported role — `hookhost plugin run` over
/// HTTP. Nothing is stored or delivered; the call counts in the plugin's
/// statistics like any other.
pub(super) async fn try_plugin(
    State(app): State<App>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let trial: Trial = match serde_json::from_slice(&body) {
        Ok(trial) => trial,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("body: {e}")),
    };
    let event = match hookhost_core::event_json::from_json(&trial.event) {
        Ok(event) => event,
        Err(e) => return error(StatusCode::UNPROCESSABLE_ENTITY, format!("event: {e}")),
    };
    let config = if trial.config.is_null() {
        String::new()
    } else {
        trial.config.to_string()
    };
    let plugin = match app.registry.get(&name) {
        Ok(plugin) => plugin,
        Err(e) => return error(StatusCode::NOT_FOUND, e.to_string()),
    };
    match blocking(move || plugin.decide(&event, &config)).await {
        Ok(decision) => axum::Json(Tried { decision }).into_response(),
        Err(e) => e.into_response(),
    }
}
