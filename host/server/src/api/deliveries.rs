//! `/v1/deliveries`, `/v1/dead-letters` and recovery: deliveries with their
//! attempts, re-sending one, re-sending a subscription's dead ones.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use hookhost_core::deliver::ResendError;
use hookhost_core::model::{Job, JobStatus};
use hookhost_core::store::JobQuery;

use super::blocking;
use crate::answers::{DeadLetters, Delivery, DeliveryDetail, DeliveryPage, Recovery, StillFailing};
use crate::app::App;
use crate::reply::{ApiError, error};

/// One delivery as its detail shows it: the delivery and the request its
/// last attempt sent (or the next one will), rebuilt with secrets masked,
/// with whether it is exactly what was sent (`deliver::shown_request`).
pub(super) fn detail(app: &App, job: &Job) -> DeliveryDetail {
    let request = app.subscriptions.get(&job.subscription_id).and_then(|sub| {
        hookhost_core::deliver::shown_request(
            &sub,
            job,
            job.attempts.last(),
            app.deliverer.now_ms(),
        )
        .ok()
    });
    DeliveryDetail {
        delivery: Delivery::of(job),
        request,
    }
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
    /// Continue after this cursor: a previous answer's `next`.
    after: Option<String>,
}

/// Index entries one listing examines at most: with a status or type
/// filter each costs a read of the delivery; without, only a key.
const MAX_EXAMINED_FILTERED: usize = 20_000;
const MAX_EXAMINED_KEYS: usize = 50_000;

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
    if let Some(cursor) = &q.after
        && !valid_cursor(cursor)
    {
        return error(
            StatusCode::BAD_REQUEST,
            "`after` is not a cursor from `next`",
        );
    }
    let store = app.store.clone();
    let page = blocking(move || {
        let wanted = |j: &Job| {
            status.is_none_or(|s| j.status == s)
                && q.event_type.as_ref().is_none_or(|t| &j.event_type == t)
        };
        let filtered = status.is_some() || q.event_type.is_some();
        store.list_jobs(&JobQuery {
            subscription: q.subscription.as_deref(),
            since_ms: since,
            until_ms: until,
            after: q.after.as_deref(),
            limit,
            wanted: if filtered { Some(&wanted) } else { None },
            max_examined: if filtered {
                MAX_EXAMINED_FILTERED
            } else {
                MAX_EXAMINED_KEYS
            },
        })
    })
    .await;
    let page = match page {
        Ok(Ok(page)) => page,
        Ok(Err(e)) => return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        Err(e) => return e.into_response(),
    };
    axum::Json(DeliveryPage {
        total: page.total,
        total_exact: page.total_exact,
        deliveries: page.jobs.iter().map(Delivery::of).collect(),
        next: page.next,
    })
    .into_response()
}

/// `<16 hex>/<id>`, as `list_jobs` makes them.
fn valid_cursor(cursor: &str) -> bool {
    cursor.len() > 17
        && cursor.as_bytes()[16] == b'/'
        && cursor[..16].bytes().all(|b| b.is_ascii_hexdigit())
}

pub(super) async fn get_delivery(State(app): State<App>, Path(id): Path<String>) -> Response {
    let store = app.store.clone();
    let lookup = id.clone();
    let found = match blocking(move || store.job(&lookup)).await {
        Ok(found) => found,
        Err(e) => return e.into_response(),
    };
    match found {
        Ok(Some(job)) => axum::Json(detail(&app, &job)).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no delivery with id {id}")),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

fn resend_error(e: ResendError) -> ApiError {
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
    resend(&app, id).await
}

/// Re-sends delivery `id` (the admin route's and the portal's work).
pub(super) async fn resend(app: &App, id: String) -> Response {
    let (deliverer, pipeline) = (app.deliverer.clone(), app.pipeline.clone());
    let resent =
        match blocking(move || deliverer.resend(&id, &|sub, event| pipeline.rerun(sub, event)))
            .await
        {
            Ok(resent) => resent,
            Err(e) => return e.into_response(),
        };
    match resent {
        Ok(job) => (StatusCode::ACCEPTED, axum::Json(Delivery::of(&job))).into_response(),
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
            axum::Json(DeadLetters {
                dead_letters: jobs.iter().map(Delivery::of).collect(),
            })
            .into_response()
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Recover")]
pub(super) struct RecoverBody {
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
        // The subscription's listing index from `since`, page by page.
        let failed_status = |j: &Job| matches!(j.status, JobStatus::Dead | JobStatus::PluginError);
        let mut failed = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = store
                .list_jobs(&JobQuery {
                    subscription: Some(&id),
                    since_ms: Some(since),
                    until_ms: None,
                    after: after.as_deref(),
                    limit: 1000,
                    wanted: Some(&failed_status),
                    max_examined: MAX_EXAMINED_FILTERED,
                })
                .map_err(unavailable)?;
            failed.extend(page.jobs);
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        let mut recovered = Recovered::default();
        let rechain = |sub: &str, event: &_| pipeline.rerun(sub, event);
        for job in &failed {
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
    let still_failing = recovered
        .still_failing
        .into_iter()
        .map(|(id, error)| StillFailing { id, error })
        .collect();
    (
        StatusCode::ACCEPTED,
        axum::Json(Recovery {
            resent: recovered.resent.len(),
            ids: recovered.resent,
            filtered: recovered.filtered,
            still_failing,
        }),
    )
        .into_response()
}
