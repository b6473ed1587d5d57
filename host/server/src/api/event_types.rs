//! `/v1/event-types`: the loaded catalogs.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::app::App;

/// `GET /v1/event-types`: every type of the loaded catalogs, with its
/// catalog, description, tier, delivery mode and sample payload.
pub(super) async fn list_event_types(State(app): State<App>) -> Response {
    let types = entries(&app, |_| true);
    axum::Json(json!({ "strict": app.config.catalog.strict, "event_types": types })).into_response()
}

/// The catalogs' types that `wanted` accepts, each with its catalog's name.
pub(super) fn entries(app: &App, wanted: impl Fn(&str) -> bool) -> Vec<Value> {
    app.config
        .catalogs
        .types()
        .filter(|(_, t)| wanted(&t.name))
        .map(|(catalog, t)| {
            let mut entry = serde_json::to_value(t).unwrap_or_default();
            entry["catalog"] = json!(catalog);
            entry
        })
        .collect()
}
