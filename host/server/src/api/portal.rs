//! The customer portal's API (`/v1/portal/...`, a portal token): what one
//! subscription's owner may see and do — their subscription, their
//! deliveries with attempts, re-sending one, the event types they receive.
//! A delivery of any other subscription is answered 404, as if it did not
//! exist. The operator makes a link with `POST /v1/subscriptions/{id}/portal`.

use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::blocking;
use super::deliveries::{self, DeliveryQuery, list};
use super::event_types;
use crate::answers::{EventTypes, PortalLink, PortalOverview, PortalSubscription, retiring_view};
use crate::app::App;
use crate::auth::PortalScope;
use crate::reply::error;

/// Longest a link may live, and how long it lives unless asked otherwise.
const MAX_TTL_S: u64 = 30 * 24 * 3600;
const DEFAULT_TTL_S: u64 = 24 * 3600;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct LinkRequest {
    /// Seconds until the link expires (1 ..= 30 days; default 24 h).
    expires_in_s: Option<u64>,
}

/// `POST /v1/subscriptions/{id}/portal` (admin): a portal link for one
/// subscription: `{path, token, expires_at}`. The token goes in the URL's
/// fragment, which browsers never send to a server or in a Referer.
pub(super) async fn create_link(
    State(app): State<App>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let request: LinkRequest = if body.is_empty() {
        LinkRequest::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("body: {e}")),
        }
    };
    let ttl = request.expires_in_s.unwrap_or(DEFAULT_TTL_S);
    if ttl == 0 || ttl > MAX_TTL_S {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("`expires_in_s` must be 1..={MAX_TTL_S} (30 days)"),
        );
    }
    if app.subscriptions.get(&id).is_none() {
        return error(
            StatusCode::NOT_FOUND,
            format!("no subscription with id {id}"),
        );
    }
    let expires_at_s = hookhost_core::clock::now_ms() / 1000 + ttl;
    let Some(token) = app.tokens.mint_portal(&id, expires_at_s) else {
        return error(StatusCode::FORBIDDEN, "the management API is disabled");
    };
    tracing::info!(subscription = %id.escape_debug(), expires_at_s, "portal link made");
    (
        StatusCode::CREATED,
        axum::Json(PortalLink {
            path: format!("/portal#{token}"),
            token,
            expires_at: rfc3339(expires_at_s),
        }),
    )
        .into_response()
}

fn rfc3339(unix_s: u64) -> String {
    hookhost_core::clock::rfc3339_seconds(unix_s.saturating_mul(1000))
}

/// The answer once a link's subscription was deleted.
fn subscription_gone() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "this link's subscription no longer exists",
    )
}

/// `GET /v1/portal`: the subscription the link is for — its endpoint, the
/// types it receives, whether it is enabled and its endpoint's health.
pub(super) async fn overview(
    State(app): State<App>,
    Extension(scope): Extension<PortalScope>,
) -> Response {
    let Some(sub) = app.subscriptions.get(&scope.subscription) else {
        return subscription_gone();
    };
    axum::Json(PortalOverview {
        subscription: PortalSubscription {
            endpoint: app.deliverer.endpoint_health(&sub.id),
            secrets_count: sub.secrets.len(),
            retiring_secrets: retiring_view(&sub.retiring_secrets),
            id: sub.id.clone(),
            url: sub.url.clone(),
            types: sub.types.clone(),
            enabled: sub.enabled,
        },
        expires_at: rfc3339(scope.expires_at_s),
    })
    .into_response()
}

/// `GET /v1/portal/deliveries?status=&type=&since=&until=&limit=`: this
/// subscription's deliveries only, whatever `subscription` says.
pub(super) async fn deliveries(
    State(app): State<App>,
    Extension(scope): Extension<PortalScope>,
    query: Result<Query<DeliveryQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Query(mut q) = match query {
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("query: {}", e.body_text())),
    };
    q.subscription = Some(scope.subscription);
    list(&app, q).await
}

/// A delivery of this subscription, or `None` (another's looks absent).
async fn own_delivery(
    app: &App,
    scope: &PortalScope,
    id: &str,
) -> Result<hookhost_core::model::Job, Response> {
    let store = app.store.clone();
    let lookup = id.to_string();
    let found = blocking(move || store.job(&lookup))
        .await
        .map_err(IntoResponse::into_response)?;
    match found {
        Ok(Some(job)) if job.subscription_id == scope.subscription => Ok(job),
        Ok(_) => Err(error(
            StatusCode::NOT_FOUND,
            format!("no delivery with id {}", id.escape_debug()),
        )),
        Err(e) => Err(error(StatusCode::SERVICE_UNAVAILABLE, e.to_string())),
    }
}

/// `GET /v1/portal/deliveries/{id}`: one of this subscription's deliveries.
pub(super) async fn delivery(
    State(app): State<App>,
    Extension(scope): Extension<PortalScope>,
    Path(id): Path<String>,
) -> Response {
    match own_delivery(&app, &scope, &id).await {
        Ok(job) => axum::Json(deliveries::detail(&app, &job)).into_response(),
        Err(answer) => answer,
    }
}

/// `POST /v1/portal/deliveries/{id}/resend`: as the admin re-send, for this
/// subscription's deliveries only.
pub(super) async fn resend(
    State(app): State<App>,
    Extension(scope): Extension<PortalScope>,
    Path(id): Path<String>,
) -> Response {
    if let Err(answer) = own_delivery(&app, &scope, &id).await {
        return answer;
    }
    deliveries::resend(&app, id).await
}

/// `GET /v1/portal/event-types`: the catalog types this subscription
/// receives, with descriptions and sample payloads.
pub(super) async fn event_types(
    State(app): State<App>,
    Extension(scope): Extension<PortalScope>,
) -> Response {
    let Some(sub) = app.subscriptions.get(&scope.subscription) else {
        return subscription_gone();
    };
    axum::Json(EventTypes {
        strict: None,
        event_types: event_types::entries(&app, |name| sub.wants(name)),
    })
    .into_response()
}

/// `POST /v1/portal/rotate-secret`: a new signing secret for the link's
/// subscription, shown once; the old one signs beside it for 24 h.
pub(super) async fn rotate_secret(
    State(app): State<App>,
    Extension(scope): Extension<PortalScope>,
) -> Response {
    super::subscriptions::rotate(&app, scope.subscription.clone()).await
}
