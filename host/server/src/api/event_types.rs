//! `/v1/event-types`: the loaded catalogs.

use crate::answers::{EventTypeEntry, EventTypes};
use crate::app::App;
use axum::extract::State;
use axum::response::{IntoResponse, Response};

/// `GET /v1/event-types`: every type of the loaded catalogs, with its
/// catalog, description, tier, delivery mode and sample payload.
pub(super) async fn list_event_types(State(app): State<App>) -> Response {
    axum::Json(EventTypes {
        strict: Some(app.config.catalog.strict),
        event_types: entries(&app, |_| true),
    })
    .into_response()
}

/// The catalogs' types that `wanted` accepts, each with its catalog's name.
pub(super) fn entries(app: &App, wanted: impl Fn(&str) -> bool) -> Vec<EventTypeEntry> {
    app.config
        .catalogs
        .types()
        .filter(|(_, t)| wanted(&t.name))
        .map(|(catalog, t)| EventTypeEntry {
            catalog: catalog.to_string(),
            event_type: t.clone(),
        })
        .collect()
}
