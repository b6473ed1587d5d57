//! The management API (admin token): plugins, event types, deliveries with
//! their attempts, dead letters, re-sending and recovering deliveries.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use serde::Deserialize;
use serde_json::{Value, json};

use std::sync::Arc;

use crate::config::Subscription;
use crate::deliver::ResendError;
use crate::openapi::{Access, Route};
use crate::server::{App, authorize, error};
use crate::store::{Job, JobStatus};
use crate::subscriptions::{SubscriptionError, Subscriptions};

/// The management API's routes, documented.
pub(crate) fn routes() -> Vec<Route> {
    use Access::Admin;
    let route = |method, path, summary, handler| Route {
        method,
        path,
        summary,
        access: Admin,
        query: &[],
        body: false,
        responses: &[(200, "OK")],
        handler,
    };
    vec![
        route(
            "GET",
            "/v1/plugins",
            "Plugins serving or refused, with load and call statistics",
            get(list_plugins),
        ),
        route(
            "GET",
            "/v1/event-types",
            "Event types of the loaded catalogs",
            get(list_event_types),
        ),
        Route {
            query: &[
                ("status", "pending, delivered, dead or plugin_error"),
                ("subscription", "subscription id"),
                ("type", "event type"),
                ("since", "created at or after (RFC 3339)"),
                ("until", "created before (RFC 3339)"),
                ("limit", "1..=1000, default 100"),
            ],
            responses: &[
                (200, "deliveries, newest first, with attempts"),
                (400, "bad query parameter"),
            ],
            ..route(
                "GET",
                "/v1/deliveries",
                "List deliveries with their attempts",
                get(list_deliveries),
            )
        },
        Route {
            responses: &[(200, "the delivery"), (404, "no such delivery")],
            ..route(
                "GET",
                "/v1/deliveries/{id}",
                "One delivery with its attempts",
                get(get_delivery),
            )
        },
        Route {
            responses: &[
                (202, "queued again"),
                (404, "no such delivery"),
                (409, "pending, or its subscription is gone"),
            ],
            ..route(
                "POST",
                "/v1/deliveries/{id}/resend",
                "Re-send a dead or delivered delivery (same webhook-id)",
                post(resend_delivery),
            )
        },
        route(
            "GET",
            "/v1/dead-letters",
            "Deliveries out of retries or refused",
            get(dead_letters),
        ),
        Route {
            body: true,
            responses: &[
                (202, "re-sent"),
                (400, "bad body"),
                (404, "no such subscription"),
            ],
            ..route(
                "POST",
                "/v1/subscriptions/{id}/recover",
                "Re-send a subscription's dead deliveries since a time",
                post(recover),
            )
        },
        route(
            "GET",
            "/v1/subscriptions",
            "Every subscription (config file and API)",
            get(list_subscriptions),
        ),
        Route {
            body: true,
            responses: &[
                (201, "created"),
                (400, "malformed JSON or unknown field"),
                (409, "id taken"),
                (422, "invalid field, partner type or refused endpoint"),
            ],
            ..route(
                "POST",
                "/v1/subscriptions",
                "Create a subscription",
                post(create_subscription),
            )
        },
        Route {
            responses: &[(200, "the subscription"), (404, "no such subscription")],
            ..route(
                "GET",
                "/v1/subscriptions/{id}",
                "One subscription",
                get(get_subscription),
            )
        },
        Route {
            body: true,
            responses: &[
                (200, "replaced"),
                (404, "no such subscription"),
                (409, "from the config file"),
                (422, "invalid"),
            ],
            ..route(
                "PUT",
                "/v1/subscriptions/{id}",
                "Replace a subscription made over the API",
                put(replace_subscription),
            )
        },
        Route {
            responses: &[
                (204, "deleted"),
                (404, "no such subscription"),
                (409, "from the config file"),
            ],
            ..route(
                "DELETE",
                "/v1/subscriptions/{id}",
                "Delete a subscription made over the API",
                delete(delete_subscription),
            )
        },
        Route {
            responses: &[
                (200, "enabled"),
                (404, "no such subscription"),
                (409, "from the config file"),
            ],
            ..route(
                "POST",
                "/v1/subscriptions/{id}/enable",
                "Enable a subscription",
                post(switch_subscription::<true>),
            )
        },
        Route {
            responses: &[
                (200, "disabled"),
                (404, "no such subscription"),
                (409, "from the config file"),
            ],
            ..route(
                "POST",
                "/v1/subscriptions/{id}/disable",
                "Disable a subscription (no new deliveries)",
                post(switch_subscription::<false>),
            )
        },
    ]
}

/// A subscription as the API shows it: secrets are never shown, only
/// whether a seed is set and how many signing secrets there are.
fn subscription_view(sub: &Subscription) -> Value {
    let mut v = serde_json::to_value(sub).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.remove("seed");
        o.remove("secrets");
        o.insert("seed_set".into(), json!(sub.seed.is_some()));
        o.insert("secrets_count".into(), json!(sub.secrets.len()));
        o.insert(
            "source".into(),
            json!(if sub.from_config { "config" } else { "api" }),
        );
    }
    v
}

fn subscription_error(e: SubscriptionError) -> Response {
    let status = match e {
        SubscriptionError::NotFound(_) => StatusCode::NOT_FOUND,
        SubscriptionError::Exists(_) | SubscriptionError::ReadOnly(_) => StatusCode::CONFLICT,
        SubscriptionError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
        SubscriptionError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    error(status, e.to_string())
}

/// Runs a change (it writes and flushes the store) off the async workers.
async fn change(
    app: &App,
    f: impl FnOnce(&Subscriptions) -> Result<Option<Arc<Subscription>>, SubscriptionError>
    + Send
    + 'static,
    ok: StatusCode,
) -> Response {
    let subscriptions = app.subscriptions.clone();
    match tokio::task::spawn_blocking(move || f(&subscriptions)).await {
        Ok(Ok(Some(sub))) => (ok, axum::Json(subscription_view(&sub))).into_response(),
        Ok(Ok(None)) => StatusCode::NO_CONTENT.into_response(),
        Ok(Err(e)) => subscription_error(e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

fn parse_subscription(body: &[u8]) -> Result<Subscription, Response> {
    serde_json::from_slice(body)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("subscription: {e}")))
}

/// `GET /v1/subscriptions`: config-file ones (`"source": "config"`,
/// read-only) and API-made ones.
async fn list_subscriptions(State(app): State<App>, headers: HeaderMap) -> Response {
    if let Err(denied) = authorize(&app, &headers) {
        return denied;
    }
    let all: Vec<Value> = app
        .subscriptions
        .current()
        .iter()
        .map(|s| subscription_view(s))
        .collect();
    axum::Json(json!({ "subscriptions": all })).into_response()
}

async fn get_subscription(
    State(app): State<App>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(denied) = authorize(&app, &headers) {
        return denied;
    }
    match app.subscriptions.get(&id) {
        Some(sub) => axum::Json(subscription_view(&sub)).into_response(),
        None => subscription_error(SubscriptionError::NotFound(id)),
    }
}

/// `POST /v1/subscriptions`: the same fields as `[[subscriptions]]` in the
/// config file, as JSON; checked the same way (endpoint address, tiers).
async fn create_subscription(
    State(app): State<App>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Err(denied) = authorize(&app, &headers) {
        return denied;
    }
    let sub = match parse_subscription(&body) {
        Ok(s) => s,
        Err(r) => return r,
    };
    change(
        &app,
        move |subs| subs.create(sub).map(Some),
        StatusCode::CREATED,
    )
    .await
}

async fn replace_subscription(
    State(app): State<App>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    if let Err(denied) = authorize(&app, &headers) {
        return denied;
    }
    let sub = match parse_subscription(&body) {
        Ok(s) => s,
        Err(r) => return r,
    };
    change(
        &app,
        move |subs| subs.replace(&id, sub).map(Some),
        StatusCode::OK,
    )
    .await
}

async fn delete_subscription(
    State(app): State<App>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(denied) = authorize(&app, &headers) {
        return denied;
    }
    change(
        &app,
        move |subs| subs.delete(&id).map(|()| None),
        StatusCode::NO_CONTENT,
    )
    .await
}

/// `POST /v1/subscriptions/{id}/enable` (`ON`) and `.../disable`.
async fn switch_subscription<const ON: bool>(
    State(app): State<App>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(denied) = authorize(&app, &headers) {
        return denied;
    }
    change(
        &app,
        move |subs| subs.set_enabled(&id, ON).map(Some),
        StatusCode::OK,
    )
    .await
}

/// `GET /v1/plugins`: every plugin serving or refused, with its content
/// hash, roles, load time, call counts, mean latency and last load error.
async fn list_plugins(State(app): State<App>, headers: axum::http::HeaderMap) -> Response {
    if let Err(denied) = authorize(&app, &headers) {
        return denied;
    }
    axum::Json(json!({ "plugins": app.registry.status() })).into_response()
}

/// `GET /v1/event-types`: every type of the loaded catalogs, with its
/// catalog, description, tier, delivery mode and sample payload.
async fn list_event_types(State(app): State<App>, headers: axum::http::HeaderMap) -> Response {
    if let Err(denied) = authorize(&app, &headers) {
        return denied;
    }
    let types: Vec<Value> = app
        .config
        .catalogs
        .types()
        .map(|(catalog, t)| {
            let mut entry = serde_json::to_value(t).unwrap_or_default();
            entry["catalog"] = json!(catalog);
            entry
        })
        .collect();
    axum::Json(json!({ "strict": app.config.catalog.strict, "event_types": types })).into_response()
}

/// A delivery as the API shows it: the job, with `data` as JSON.
fn view(job: &Job) -> Value {
    let mut v = serde_json::to_value(job).unwrap_or_default();
    if let Ok(data) = serde_json::from_str::<Value>(&job.data) {
        v["data"] = data;
    }
    v
}

fn rfc3339_ms(param: &str, text: &str) -> Result<u64, Response> {
    humantime::parse_rfc3339_weak(text)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as u64)
        .ok_or_else(|| {
            error(
                StatusCode::BAD_REQUEST,
                format!("`{param}`: {text:?} is not an RFC 3339 time"),
            )
        })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeliveryQuery {
    status: Option<String>,
    subscription: Option<String>,
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
async fn list_deliveries(
    State(app): State<App>,
    headers: HeaderMap,
    query: Result<Query<DeliveryQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if let Err(denied) = authorize(&app, &headers) {
        return denied;
    }
    let Query(q) = match query {
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("query: {}", e.body_text())),
    };
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
                "`status` must be pending, delivered, dead or plugin_error",
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
        Err(r) => return r,
    };
    let until = match q
        .until
        .as_deref()
        .map(|t| rfc3339_ms("until", t))
        .transpose()
    {
        Ok(v) => v,
        Err(r) => return r,
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

async fn get_delivery(
    State(app): State<App>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(denied) = authorize(&app, &headers) {
        return denied;
    }
    match app.store.job(&id) {
        Ok(Some(job)) => axum::Json(view(&job)).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no delivery with id {id}")),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

fn resend_error(e: ResendError) -> Response {
    let status = match e {
        ResendError::NotFound(_) => StatusCode::NOT_FOUND,
        ResendError::NotResendable(..) | ResendError::NoSubscription(..) => StatusCode::CONFLICT,
        ResendError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    error(status, e.to_string())
}

/// `POST /v1/deliveries/{id}/resend`: a dead or delivered delivery gets a new
/// round of attempts, under the same `webhook-id`.
async fn resend_delivery(
    State(app): State<App>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(denied) = authorize(&app, &headers) {
        return denied;
    }
    match app.deliverer.resend(&id) {
        Ok(job) => (StatusCode::ACCEPTED, axum::Json(view(&job))).into_response(),
        Err(e) => resend_error(e),
    }
}

/// `GET /v1/dead-letters`: deliveries out of retries or refused.
async fn dead_letters(State(app): State<App>, headers: HeaderMap) -> Response {
    if let Err(denied) = authorize(&app, &headers) {
        return denied;
    }
    match app.store.dead_letters() {
        Ok(mut jobs) => {
            jobs.sort_by(|a, b| b.created_at_ms.cmp(&a.created_at_ms));
            let shown: Vec<Value> = jobs.iter().map(view).collect();
            axum::Json(json!({ "dead_letters": shown })).into_response()
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecoverBody {
    /// Re-send the subscription's dead deliveries created at or after this.
    since: String,
}

/// `POST /v1/subscriptions/{id}/recover {"since": RFC 3339}`: re-sends every
/// dead delivery of the subscription created since then (after an outage of
/// the customer's endpoint, say).
async fn recover(
    State(app): State<App>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    if let Err(denied) = authorize(&app, &headers) {
        return denied;
    }
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
        Err(r) => return r,
    };
    let dead = match app.store.dead_letters() {
        Ok(d) => d,
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    let mut ids = Vec::new();
    for job in dead
        .iter()
        .filter(|j| j.subscription_id == id && j.created_at_ms >= since)
    {
        match app.deliverer.resend(&job.id) {
            Ok(_) => ids.push(job.id.clone()),
            Err(e) => return resend_error(e),
        }
    }
    (
        StatusCode::ACCEPTED,
        axum::Json(json!({ "resent": ids.len(), "ids": ids })),
    )
        .into_response()
}
