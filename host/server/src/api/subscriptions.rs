//! `/v1/subscriptions`: list, read, create, replace, delete, enable and
//! disable subscriptions (config-file ones are read-only).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use hookhost_core::deliver::TestEventError;
use hookhost_core::model::Subscription;
use hookhost_core::subscriptions::{SubscriptionError, Subscriptions};

use crate::answers::{RotatedSecret, SubscriptionList, SubscriptionView, TestSent, retiring_view};
use crate::app::App;
use crate::reply::{ApiError, error};

use super::blocking;

/// A subscription as the API shows it, with its endpoint's health.
fn subscription_view(app: &App, sub: &Subscription) -> SubscriptionView {
    SubscriptionView::of(sub, app.deliverer.endpoint_health(&sub.id))
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
        Ok(Ok(Some(sub))) => (ok, axum::Json(subscription_view(app, &sub))).into_response(),
        Ok(Ok(None)) => StatusCode::NO_CONTENT.into_response(),
        Ok(Err(e)) => subscription_error(e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

fn parse_subscription(body: &[u8]) -> Result<Subscription, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("subscription: {e}")))
}

/// `GET /v1/subscriptions`: config-file ones (`"source": "config"`,
/// read-only) and API-made ones.
pub(super) async fn list_subscriptions(State(app): State<App>) -> Response {
    let subscriptions = app
        .subscriptions
        .current()
        .iter()
        .map(|s| subscription_view(&app, s))
        .collect();
    axum::Json(SubscriptionList { subscriptions }).into_response()
}

pub(super) async fn get_subscription(State(app): State<App>, Path(id): Path<String>) -> Response {
    match app.subscriptions.get(&id) {
        Some(sub) => axum::Json(subscription_view(&app, &sub)).into_response(),
        None => subscription_error(SubscriptionError::NotFound(id)),
    }
}

/// `POST /v1/subscriptions`: the same fields as `[[subscriptions]]` in the
/// config file, as JSON; checked the same way (endpoint address, tiers).
pub(super) async fn create_subscription(
    State(app): State<App>,
    body: axum::body::Bytes,
) -> Response {
    let sub = match parse_subscription(&body) {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    change(
        &app,
        move |subs| subs.create(sub).map(Some),
        StatusCode::CREATED,
    )
    .await
}

pub(super) async fn replace_subscription(
    State(app): State<App>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let sub = match parse_subscription(&body) {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    change(
        &app,
        move |subs| subs.replace(&id, sub).map(Some),
        StatusCode::OK,
    )
    .await
}

/// `PATCH /v1/subscriptions/{id}`: a JSON merge patch; fields not named
/// (the seed and secrets included) stay as they are.
pub(super) async fn patch_subscription(
    State(app): State<App>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let patch: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("subscription: {e}")),
    };
    change(
        &app,
        move |subs| subs.patch(&id, &patch).map(Some),
        StatusCode::OK,
    )
    .await
}

pub(super) async fn delete_subscription(
    State(app): State<App>,
    Path(id): Path<String>,
) -> Response {
    change(
        &app,
        move |subs| subs.delete(&id).map(|()| None),
        StatusCode::NO_CONTENT,
    )
    .await
}

/// `POST /v1/subscriptions/{id}/enable` (`ON`) and `.../disable`.
/// Enabling also enables an endpoint hookhost disabled (410 Gone, failing
/// for days) and sends its paused deliveries; that works for config-file
/// subscriptions too, whose own `enabled` stays the file's.
pub(super) async fn switch_subscription<const ON: bool>(
    State(app): State<App>,
    Path(id): Path<String>,
) -> Response {
    let deliverer = app.deliverer.clone();
    change(
        &app,
        move |subs| {
            let sub = subs
                .get(&id)
                .ok_or_else(|| SubscriptionError::NotFound(id.clone()))?;
            if ON {
                deliverer.enable_endpoint(&id)?;
                if sub.from_config {
                    return Ok(Some(sub));
                }
            }
            subs.set_enabled(&id, ON).map(Some)
        },
        StatusCode::OK,
    )
    .await
}

#[derive(serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "TestEvent")]
pub(super) struct TestEventBody {
    #[serde(rename = "type")]
    event_type: String,
    /// Absent: the catalog's sample for the type.
    #[serde(default)]
    data: Option<Value>,
}

/// `POST /v1/subscriptions/{id}/test`: sends a test event of a type (with
/// the catalog's sample, or the data given) to this subscription only,
/// through its plugins, at once (no window). 202 with the delivery; 200 with
/// `"sent": false` when its plugins drop the event.
pub(super) async fn send_test_event(
    State(app): State<App>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let test: TestEventBody = match serde_json::from_slice(&body) {
        Ok(t) => t,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("test event: {e}")),
    };
    let (deliverer, pipeline, config) = (
        app.deliverer.clone(),
        app.pipeline.clone(),
        app.config.clone(),
    );
    let sent = blocking(move || {
        deliverer.send_test(
            &config.catalogs,
            &id,
            &test.event_type,
            test.data.as_ref(),
            &|sub, event| pipeline.rerun(sub, event),
        )
    })
    .await;
    match sent {
        Err(e) => e.into_response(),
        Ok(Ok(Some(job))) => (
            StatusCode::ACCEPTED,
            axum::Json(TestSent {
                sent: true,
                delivery: Some(job.id),
                event_id: Some(job.event_id),
                event_type: Some(job.event_type),
                reason: None,
            }),
        )
            .into_response(),
        Ok(Ok(None)) => axum::Json(TestSent {
            sent: false,
            delivery: None,
            event_id: None,
            event_type: None,
            reason: Some("the subscription's plugins dropped the event".into()),
        })
        .into_response(),
        Ok(Err(e)) => {
            let status = match e {
                TestEventError::NoSubscription(_) => StatusCode::NOT_FOUND,
                TestEventError::Disabled(_) => StatusCode::CONFLICT,
                TestEventError::Invalid(_) | TestEventError::PluginFailed(_) => {
                    StatusCode::UNPROCESSABLE_ENTITY
                }
                TestEventError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            };
            error(status, e.to_string())
        }
    }
}

/// Rotates subscription `id`'s signing secret (the admin route's and the
/// portal's work): 200 with the new secret, shown this once, and until
/// when the old ones keep signing.
pub(super) async fn rotate(app: &App, id: String) -> Response {
    let (subscriptions, now_ms) = (app.subscriptions.clone(), app.deliverer.now_ms());
    let rotated = match blocking(move || subscriptions.rotate_secret(&id, now_ms)).await {
        Ok(rotated) => rotated,
        Err(e) => return e.into_response(),
    };
    match rotated {
        Ok((sub, secret)) => axum::Json(RotatedSecret {
            secret,
            retiring_secrets: retiring_view(&sub.retiring_secrets),
        })
        .into_response(),
        Err(e) => subscription_error(e),
    }
}

/// `POST /v1/subscriptions/{id}/rotate-secret`.
pub(super) async fn rotate_secret(State(app): State<App>, Path(id): Path<String>) -> Response {
    rotate(&app, id).await
}
