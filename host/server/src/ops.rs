//! Operations routes: liveness, readiness, Prometheus metrics and the
//! OpenAPI document.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::answers::Readiness;
use crate::app::App;

pub(crate) async fn openapi_json(State(app): State<App>) -> Response {
    axum::Json(Value::clone(&app.openapi)).into_response()
}

/// `GET /readyz`: 200 when the store and the journal take writes, the store
/// answers and every plugin the config names is serving; 503 naming what is
/// missing otherwise.
pub(crate) async fn readyz(State(app): State<App>) -> Response {
    let mut problems = Vec::new();
    if let Some(why) = app.intake.unavailable() {
        problems.push(why);
    }
    // The probe reads the store: off the async threads.
    let store = app.store.clone();
    match tokio::task::spawn_blocking(move || store.has_event("readyz-probe")).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => problems.push(format!("store: {e}")),
        Err(e) => problems.push(format!("store: {e}")),
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
    let status = if problems.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let answer = Readiness {
        leading: app.membership.leads(),
        ready: problems.is_empty(),
        problems,
    };
    (status, axum::Json(answer)).into_response()
}

/// `GET /metrics`: Prometheus text format. Counts only: no ids, no payloads.
pub(crate) async fn metrics(State(app): State<App>) -> Response {
    let status = app.registry.status();
    let shadows = status
        .iter()
        .filter_map(|s| {
            s.candidate
                .as_ref()
                .map(|c| (s.name.clone(), c.shadow.clone()))
        })
        .collect();
    let plugins = status
        .into_iter()
        .filter_map(|s| {
            s.serving
                .map(|i| (s.name, i.calls, i.errors, i.mean_call_us / 1e6))
        })
        .collect();
    let (plugin_loads, plugin_refusals) = app.registry.load_counts();
    let page = hookhost_core::metrics::render(hookhost_core::metrics::Snapshot {
        queue_depth: app.deliverer.queued(),
        waiting_for_later: app.deliverer.waiting_for_later(),
        endpoints_disabled: app.deliverer.disabled_endpoints(),
        ingest_backlog: app.deliverer.backlog().count(),
        plugins,
        shadows,
        plugin_loads,
        plugin_refusals,
    });
    (
        [(header::CONTENT_TYPE, hookhost_core::metrics::CONTENT_TYPE)],
        page,
    )
        .into_response()
}
