//! The operator dashboard at `/ui` and the customer portal at `/portal`:
//! static files embedded in the binary (no build step, no Node.js to build
//! hookhost). The pages hold no data of their own: the dashboard asks the
//! management API with the admin token the operator types in, kept in the
//! tab's `sessionStorage`, never in a URL; the portal asks the portal API
//! with its link's token.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("../ui/index.html");
const PORTAL: &str = include_str!("../ui/portal.html");
const COMMON: &str = include_str!("../ui/common.js");
const SCRIPT: &str = include_str!("../ui/app.js");
const PORTAL_SCRIPT: &str = include_str!("../ui/portal.js");
const STYLE: &str = include_str!("../ui/app.css");
/// uPlot 1.6.32 (MIT, `ui/vendor/uPlot.LICENSE`), as npm ships it: the
/// overview's charts.
const UPLOT: &str = include_str!("../ui/vendor/uPlot.iife.min.js");
const UPLOT_STYLE: &str = include_str!("../ui/vendor/uPlot.min.css");

/// Only this origin's own script and style run; nothing may frame the page.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                      connect-src 'self'; img-src 'self' data:; form-action 'self'; \
                      base-uri 'none'; frame-ancestors 'none'";

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut answer = body.into_response();
    let headers = answer.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    answer
}

pub(crate) async fn index() -> Response {
    asset(INDEX, "text/html; charset=utf-8")
}

pub(crate) async fn portal() -> Response {
    asset(PORTAL, "text/html; charset=utf-8")
}

pub(crate) async fn common_script() -> Response {
    asset(COMMON, "text/javascript; charset=utf-8")
}

pub(crate) async fn portal_script() -> Response {
    asset(PORTAL_SCRIPT, "text/javascript; charset=utf-8")
}

pub(crate) async fn script() -> Response {
    asset(SCRIPT, "text/javascript; charset=utf-8")
}

pub(crate) async fn style() -> Response {
    asset(STYLE, "text/css; charset=utf-8")
}

pub(crate) async fn uplot() -> Response {
    asset(UPLOT, "text/javascript; charset=utf-8")
}

pub(crate) async fn uplot_style() -> Response {
    asset(UPLOT_STYLE, "text/css; charset=utf-8")
}
