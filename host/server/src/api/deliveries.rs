//! `/v1/deliveries`, `/v1/dead-letters` and recovery: deliveries with their
//! attempts, re-sending one, re-sending a subscription's dead ones.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use hookhost_core::deliver::ResendError;
use hookhost_core::model::{Job, JobStatus};

use super::blocking;
use crate::app::App;
use crate::reply::{ApiError, error};

/// A delivery as the API shows it: the job, with `data` as JSON.
pub(super) fn view(job: &Job) -> Value {
    let mut v = serde_json::to_value(job).unwrap_or_default();
    if let Ok(data) = serde_json::from_str::<Value>(&job.data) {
        v["data"] = data;
    }
    v
}

fn rfc3339_ms(param: &str, text: &str) -> Result<u64, ApiError> {
    hookhost_core::clock::parse_rfc3339_ms(text)
        .map(|ms| ms.max(0) as u64)
        .map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("`{param}`: {text:?} is not an RFC 3339 time"),
            )
        })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DeliveryQuery {
    status: Option<String>,
    pub(super) subscription: Option<String>,
    #[serde(rename = "type")]
    event_type: Option<String>,
    /// Created at or after (RFC 3339).
    since: Option<String>,
    /// Created before (RFC 3339).
    until: Option<String>,
    limit: Option<usize>,
}

/// `GET /v1/deliveries?status=&subscription=&type=&since=&until=&limit=`:
/// newest first, with every attempt.
pub(super) async fn list_deliveries(
    State(app): State<App>,
    query: Result<Query<DeliveryQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Query(q) = match query {
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("query: {}", e.body_text())),
    };
    list(&app, q).await
}

/// Deliveries matching `q`, newest first (the admin list and a portal's).
pub(super) async fn list(app: &App, q: DeliveryQuery) -> Response {
    let status = match q
        .status
        .as_deref()
        .map(|s| serde_json::from_value::<JobStatus>(json!(s)))
    {
        None => None,
        Some(Ok(s)) => Some(s),
        Some(Err(_)) => {
            return error(
                StatusCode::BAD_REQUEST,
                "`status` must be pending, delivered, dead, plugin_error, filtered or paused",
            );
        }
    };
    let since = match q
        .since
        .as_deref()
        .map(|t| rfc3339_ms("since", t))
        .transpose()
    {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    let until = match q
        .until
        .as_deref()
        .map(|t| rfc3339_ms("until", t))
        .transpose()
    {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > 1000 {
        return error(StatusCode::BAD_REQUEST, "`limit` must be 1..=1000");
    }
    let store = app.store.clone();
    let jobs = match tokio::task::spawn_blocking(move || store.jobs()).await {
        Ok(Ok(jobs)) => jobs,
        Ok(Err(e)) => return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let mut matching: Vec<&Job> = jobs
        .iter()
        .filter(|j| status.is_none_or(|s| j.status == s))
        .filter(|j| {
            q.subscription
                .as_ref()
                .is_none_or(|s| &j.subscription_id == s)
        })
        .filter(|j| q.event_type.as_ref().is_none_or(|t| &j.event_type == t))
        .filter(|j| since.is_none_or(|t| j.created_at_ms >= t))
        .filter(|j| until.is_none_or(|t| j.created_at_ms < t))
        .collect();
    matching.sort_by(|a, b| b.created_at_ms.cmp(&a.created_at_ms).then(a.id.cmp(&b.id)));
    let total = matching.len();
    let shown: Vec<Value> = matching.into_iter().take(limit).map(view).collect();
    axum::Json(json!({ "total": total, "deliveries": shown })).into_response()
}

pub(super) async fn get_delivery(State(app): State<App>, Path(id): Path<String>) -> Response {
    let store = app.store.clone();
    let lookup = id.clone();
    let found = match blocking(move || store.job(&lookup)).await {
        Ok(found) => found,
        Err(e) => return e.into_response(),
    };
    match found {
        Ok(Some(job)) => axum::Json(view(&job)).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no delivery with id {id}")),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

pub(super) fn resend_error(e: ResendError) -> ApiError {
    let status = match e {
        ResendError::NotFound(_) => StatusCode::NOT_FOUND,
        ResendError::NotResendable(..)
        | ResendError::NoSubscription(..)
        | ResendError::PluginStillFails(..) => StatusCode::CONFLICT,
        ResendError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    ApiError::new(status, e.to_string())
}

/// `POST /v1/deliveries/{id}/resend`: a dead or delivered delivery gets a new
/// round of attempts, under the same `webhook-id`; a `plugin_error` one is
/// first run through the subscription's current plugins.
pub(super) async fn resend_delivery(State(app): State<App>, Path(id): Path<String>) -> Response {
    let (deliverer, pipeline) = (app.deliverer.clone(), app.pipeline.clone());
    let resent =
        match blocking(move || deliverer.resend(&id, &|sub, event| pipeline.rerun(sub, event)))
            .await
        {
            Ok(resent) => resent,
            Err(e) => return e.into_response(),
        };
    match resent {
        Ok(job) => (StatusCode::ACCEPTED, axum::Json(view(&job))).into_response(),
        Err(e) => resend_error(e).into_response(),
    }
}

/// `GET /v1/dead-letters`: deliveries out of retries or refused.
pub(super) async fn dead_letters(State(app): State<App>) -> Response {
    let store = app.store.clone();
    let dead = match blocking(move || store.dead_letters()).await {
        Ok(dead) => dead,
        Err(e) => return e.into_response(),
    };
    match dead {
        Ok(mut jobs) => {
            jobs.sort_by_key(|j| std::cmp::Reverse(j.created_at_ms));
            let shown: Vec<Value> = jobs.iter().map(view).collect();
            axum::Json(json!({ "dead_letters": shown })).into_response()
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecoverBody {
    /// Re-send the subscription's failed deliveries created at or after this.
    since: String,
}

/// What a recovery did.
#[derive(Default)]
struct Recovered {
    resent: Vec<String>,
    /// `plugin_error` deliveries the plugins now drop.
    filtered: Vec<String>,
    /// `plugin_error` deliveries whose plugins fail again: (id, error).
    still_failing: Vec<(String, String)>,
}

/// `POST /v1/subscriptions/{id}/recover {"since": RFC 3339}`: re-sends every
/// dead delivery of the subscription created since then (after an outage of
/// the customer's endpoint, say), and re-runs every `plugin_error` one
/// through the subscription's current plugins (after a plugin was fixed).
pub(super) async fn recover(
    State(app): State<App>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    if app.subscriptions.get(&id).is_none() {
        return error(
            StatusCode::NOT_FOUND,
            format!("no subscription with id {id}"),
        );
    }
    let request: RecoverBody = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("body: {e}")),
    };
    let since = match rfc3339_ms("since", &request.since) {
        Ok(t) => t,
        Err(r) => return r.into_response(),
    };
    let (store, deliverer, pipeline) = (
        app.store.clone(),
        app.deliverer.clone(),
        app.pipeline.clone(),
    );
    let recovered = blocking(move || -> Result<Recovered, ApiError> {
        let unavailable = |e: hookhost_core::store::StoreError| {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
        };
        // Dead letters have an index; plugin errors are found by a scan
        // (recovery is rare).
        let mut failed = store.dead_letters().map_err(unavailable)?;
        failed.extend(
            store
                .jobs()
                .map_err(unavailable)?
                .into_iter()
                .filter(|j| j.status == JobStatus::PluginError),
        );
        let mut recovered = Recovered::default();
        let rechain = |sub: &str, event: &_| pipeline.rerun(sub, event);
        for job in failed
            .iter()
            .filter(|j| j.subscription_id == id && j.created_at_ms >= since)
        {
            match deliverer.resend(&job.id, &rechain) {
                Ok(j) if j.status == JobStatus::Filtered => recovered.filtered.push(j.id),
                Ok(j) => recovered.resent.push(j.id),
                Err(ResendError::PluginStillFails(id, e)) => {
                    recovered.still_failing.push((id, e));
                }
                Err(e) => return Err(resend_error(e)),
            }
        }
        Ok(recovered)
    })
    .await;
    let recovered = match recovered {
        Ok(Ok(r)) => r,
        Ok(Err(refused)) => return refused.into_response(),
        Err(e) => return e.into_response(),
    };
    let still_failing: Vec<Value> = recovered
        .still_failing
        .iter()
        .map(|(id, error)| json!({ "id": id, "error": error }))
        .collect();
    (
        StatusCode::ACCEPTED,
        axum::Json(json!({
            "resent": recovered.resent.len(),
            "ids": recovered.resent,
            "filtered": recovered.filtered,
            "still_failing": still_failing,
        })),
    )
        .into_response()
}
