//! `/v1/stats/history`: the last hour of rates and gauges the dashboard's
//! overview charts (see `history`).

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::app::App;
use crate::history::{EVERY, Sample};

pub(super) async fn history(State(app): State<App>) -> Response {
    let points = app.history.points(Sample::now(&app.deliverer));
    axum::Json(json!({ "every_s": EVERY.as_secs(), "points": points })).into_response()
}
