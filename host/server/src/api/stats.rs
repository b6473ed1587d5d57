//! `/v1/stats/history`: the last hour of rates and gauges the dashboard's
//! overview charts (see `history`).

use crate::answers::History;
use crate::app::App;
use crate::history::{EVERY, Sample};
use axum::extract::State;
use axum::response::{IntoResponse, Response};

pub(super) async fn history(State(app): State<App>) -> Response {
    let points = app.history.points(Sample::now(&app.deliverer));
    axum::Json(History {
        every_s: EVERY.as_secs(),
        points,
    })
    .into_response()
}
