//! The route table of the whole HTTP API: ingest, operations and the
//! management API. The router and the OpenAPI document are both made from it.

use axum::routing::{get, post};

use crate::auth::Access;
use crate::route::{BodyLimit, Route, schema};
use crate::{api, ingest, ops, ui};

/// Every route of the HTTP API (see `openapi`).
pub(crate) fn all() -> Vec<Route> {
    let open = |method, path, summary, responses, handler| Route {
        method,
        path,
        summary,
        access: Access::Open,
        query: &[],
        body: None,
        answer: None,
        body_limit: BodyLimit::Server,
        responses,
        leader_only: false,
        handler,
    };
    let mut routes = vec![
        Route {
            access: Access::Ingest,
            body: Some(schema::<hookhost_core::intake::parse::IncomingEvents>),
            answer: Some(schema::<hookhost_core::intake::parse::IngestAnswer>),
            ..open(
                "POST",
                "/v1/events",
                "Ingest one event or an array (202 once durable); header Idempotency-Key optional",
                &[
                    (202, "accepted: {accepted, ids}"),
                    (400, "malformed JSON or Idempotency-Key"),
                    (409, "same Idempotency-Key in progress"),
                    (413, "body over server.max_body_bytes"),
                    (422, "invalid event, named by field and index"),
                ],
                post(ingest::ingest),
            )
        },
        open(
            "GET",
            "/healthz",
            "Liveness",
            &[(200, "ok")],
            get(|| async { "ok" }),
        ),
        Route {
            answer: Some(schema::<crate::answers::Readiness>),
            ..open(
                "GET",
                "/readyz",
                "Readiness: store answers, every configured plugin serving",
                &[(200, "ready"), (503, "not ready, with the problems")],
                get(ops::readyz),
            )
        },
        open(
            "GET",
            "/metrics",
            "Prometheus metrics",
            &[(200, "OpenMetrics text 1.0.0 (Prometheus reads it)")],
            get(ops::metrics),
        ),
        open(
            "GET",
            "/openapi.json",
            "This document",
            &[(200, "OpenAPI 3.1")],
            get(ops::openapi_json),
        ),
        open(
            "GET",
            "/ui",
            "The operator dashboard (its data comes from the management API, with the admin token)",
            &[(200, "HTML")],
            get(ui::index),
        ),
        open(
            "GET",
            "/portal",
            "The customer portal (its link carries a portal token in the fragment)",
            &[(200, "HTML")],
            get(ui::portal),
        ),
        open(
            "GET",
            "/ui/common.js",
            "Script shared by the dashboard and the portal",
            &[(200, "JavaScript")],
            get(ui::common_script),
        ),
        open(
            "GET",
            "/ui/portal.js",
            "The portal's script",
            &[(200, "JavaScript")],
            get(ui::portal_script),
        ),
        open(
            "GET",
            "/ui/app.js",
            "The dashboard's script",
            &[(200, "JavaScript")],
            get(ui::script),
        ),
        open(
            "GET",
            "/ui/vendor/uplot.js",
            "uPlot 1.6.32 (MIT), the overview's charts",
            &[(200, "JavaScript")],
            get(ui::uplot),
        ),
        open(
            "GET",
            "/ui/vendor/uplot.css",
            "uPlot's style sheet",
            &[(200, "CSS")],
            get(ui::uplot_style),
        ),
        open(
            "GET",
            "/ui/app.css",
            "The dashboard's style sheet",
            &[(200, "CSS")],
            get(ui::style),
        ),
    ];
    routes.extend(api::routes());
    routes
}
