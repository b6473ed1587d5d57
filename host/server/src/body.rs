//! Reading a request body from a client that may be slow or lie: bounded in
//! bytes and in time, each refusal a 4xx naming the limit.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::StatusCode;
use axum::response::Response;

use crate::reply::error;

/// Reads at most `limit` bytes (the config key `limit_key` sets it) within
/// `patience`: 413 over the limit, 408 too slow, 400 when the body broke off.
pub(crate) async fn read_bounded(
    body: Body,
    limit: usize,
    limit_key: &str,
    patience: Duration,
) -> Result<Bytes, Response> {
    match tokio::time::timeout(patience, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) if is_over_limit(&e) => Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body is larger than the limit of {limit} bytes ({limit_key})"),
        )),
        Ok(Err(_)) => Err(error(StatusCode::BAD_REQUEST, "the request body broke off")),
        Err(_) => Err(error(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request body did not arrive within {} ms (server.body_timeout_ms)",
                patience.as_millis()
            ),
        )),
    }
}

fn is_over_limit(e: &axum::Error) -> bool {
    std::error::Error::source(e).is_some_and(|inner| inner.is::<http_body_util::LengthLimitError>())
}
