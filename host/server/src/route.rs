//! A route of the HTTP API: its method, path, access and documentation
//! with its handler, and the router built from a table of them. The router
//! enforces each route's access: a route cannot be served without its check.

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;

use crate::app::App;
use crate::auth::{Access, Tokens};
use crate::reply::error;

pub(crate) struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
    pub access: Access,
    /// Query parameters: (name, description).
    pub query: &'static [(&'static str, &'static str)],
    /// The JSON body it takes, described from its Rust type.
    pub body: Option<SchemaFn>,
    /// The JSON body of its success answers (the 2xx of `responses` but
    /// 204), from the type the handler serializes.
    pub answer: Option<SchemaFn>,
    /// What bounds its body.
    pub body_limit: BodyLimit,
    /// Served by the leading node only (it runs delivery and holds the live
    /// subscriptions); a standby answers 503 naming the leader.
    pub leader_only: bool,
    /// Answers besides the 401/403 of its access: (status, description).
    pub responses: &'static [(u16, &'static str)],
    pub handler: MethodRouter<App>,
}

/// A body's JSON Schema, as a reference into the document's components
/// (the generator collects what it refers to).
pub(crate) type SchemaFn = fn(&mut schemars::SchemaGenerator) -> schemars::Schema;

/// [`SchemaFn`] of `T`.
pub(crate) fn schema<T: schemars::JsonSchema>(
    generator: &mut schemars::SchemaGenerator,
) -> schemars::Schema {
    generator.subschema_for::<T>()
}

/// How large a route's request body may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyLimit {
    /// JSON: `server.max_body_bytes`.
    Server,
    /// A plugin component (`application/wasm`): `plugins.max_upload_mib`.
    PluginUpload,
}

impl BodyLimit {
    pub(crate) fn bytes(self, app: &App) -> (usize, &'static str) {
        match self {
            BodyLimit::Server => (app.config.server.max_body_bytes, "server.max_body_bytes"),
            BodyLimit::PluginUpload => (
                app.config.plugins.max_upload_bytes(),
                "plugins.max_upload_mib",
            ),
        }
    }
}

/// Builds the router: each route behind its access check (so no handler
/// checks a token itself), routes sharing a path merged, every body bounded
/// by its route's limit (a declared `Content-Length` over it gets 413 before
/// any of the body is read).
pub(crate) fn router(routes: Vec<Route>, app: &App) -> Router<App> {
    let mut by_path: BTreeMap<&'static str, MethodRouter<App>> = BTreeMap::new();
    for r in routes {
        let limit = r.body_limit.bytes(app);
        let handler = match r.access {
            Access::Open => r.handler,
            access => r.handler.route_layer(middleware::from_fn_with_state(
                (app.tokens.clone(), access),
                require_token,
            )),
        };
        // After the token check (layers run outside in): a standby names
        // the leader only to callers with the token.
        let handler = if r.leader_only {
            handler.route_layer(middleware::from_fn_with_state(
                app.membership.clone(),
                require_leader,
            ))
        } else {
            handler
        }
        .layer(DefaultBodyLimit::max(limit.0))
        .layer(middleware::from_fn_with_state(
            limit,
            refuse_declared_oversize,
        ));
        let merged = match by_path.remove(r.path) {
            Some(existing) => existing.merge(handler),
            None => handler,
        };
        by_path.insert(r.path, merged);
    }
    by_path
        .into_iter()
        .fold(Router::new(), |router, (path, handler)| {
            router.route(path, handler)
        })
}

/// 413 at once for a request whose `Content-Length` is over the limit,
/// instead of waiting for a body that may never come.
async fn refuse_declared_oversize(
    State((max_body, key)): State<(usize, &'static str)>,
    request: Request,
    next: Next,
) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(length) if length > max_body as u64 => {
            let mut refused = error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "Content-Length {length} is larger than the limit of {max_body} bytes ({key})"
                ),
            );
            // The unread body makes the connection unusable for another request.
            refused.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
            refused
        }
        _ => next.run(request).await,
    }
}

/// 503 on a node that does not lead, naming the one that does.
async fn require_leader(
    State(membership): State<std::sync::Arc<hookhost_core::cluster::Membership>>,
    request: Request,
    next: Next,
) -> Response {
    if membership.leads() {
        return next.run(request).await;
    }
    let leader = membership.leader_address().map_or(
        "not known yet (a node takes the lead within cluster.takeover_ms)".into(),
        |a| a.to_string(),
    );
    let mut refused = error(
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "this node stands by: the management API is served by the leading node, {leader} \
             (GET /v1/cluster lists the nodes)"
        ),
    );
    refused
        .headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    refused
}

/// The access check in front of a route's handler. A portal route's
/// handler gets the token's [`PortalScope`](crate::auth::PortalScope) as a
/// request extension: the one subscription it may show.
async fn require_token(
    State((tokens, access)): State<(Tokens, Access)>,
    mut request: Request,
    next: Next,
) -> Response {
    if access == Access::Portal {
        return match tokens.check_portal(request.headers(), hookhost_core::clock::now_ms() / 1000) {
            Ok(scope) => {
                request.extensions_mut().insert(scope);
                next.run(request).await
            }
            Err(refused) => refused.into_response(),
        };
    }
    match tokens.check(access, request.headers()) {
        Ok(()) => next.run(request).await,
        Err(refused) => refused.into_response(),
    }
}
