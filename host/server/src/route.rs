//! A route of the HTTP API: its method, path, access and documentation
//! with its handler, and the router built from a table of them. The router
//! enforces each route's access: a route cannot be served without its check.

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;

use crate::app::App;
use crate::auth::{Access, Tokens};

pub(crate) struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
    pub access: Access,
    /// Query parameters: (name, description).
    pub query: &'static [(&'static str, &'static str)],
    /// Whether it takes a JSON body.
    pub body: bool,
    /// Answers besides the 401/403 of its access: (status, description).
    pub responses: &'static [(u16, &'static str)],
    pub handler: MethodRouter<App>,
}

/// Builds the router: each route behind its access check (so no handler
/// checks a token itself), routes sharing a path merged.
pub(crate) fn router(routes: Vec<Route>, app: &App) -> Router<App> {
    let mut by_path: BTreeMap<&'static str, MethodRouter<App>> = BTreeMap::new();
    for r in routes {
        let handler = match r.access {
            Access::Open => r.handler,
            access => r.handler.route_layer(middleware::from_fn_with_state(
                (app.tokens.clone(), access),
                require_token,
            )),
        };
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

/// The access check in front of a route's handler.
async fn require_token(
    State((tokens, access)): State<(Tokens, Access)>,
    request: Request,
    next: Next,
) -> Response {
    match tokens.check(access, request.headers()) {
        Ok(()) => next.run(request).await,
        Err(refused) => refused.into_response(),
    }
}
