//! Bearer tokens: the admin token for the management API, the ingest token
//! (when set) for `POST /v1/events`. Comparisons take the same time whatever
//! the token given.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::http::{HeaderMap, StatusCode, header};
use hookhost_core::metrics::METRICS;
use hookhost_core::sign::constant_time_eq;

use crate::reply::ApiError;

/// Who may call a route.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Access {
    Open,
    /// `server.ingest_token`, when one is set.
    Ingest,
    /// `server.admin_token`.
    Admin,
}

#[derive(Clone, Default)]
pub(crate) struct Tokens {
    pub(crate) admin: Option<Arc<str>>,
    pub(crate) ingest: Option<Arc<str>>,
}

impl Tokens {
    /// Whether `headers` carry the token `access` needs; the refusal otherwise.
    pub(crate) fn check(&self, access: Access, headers: &HeaderMap) -> Result<(), ApiError> {
        let checked = match access {
            Access::Open => Ok(()),
            Access::Admin => match &self.admin {
                None => Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "the management API is disabled: set server.admin_token or HOOKHOST_ADMIN_TOKEN",
                )),
                Some(expected) => {
                    check_token(headers, expected, self.ingest.as_deref(), "admin", "ingest")
                }
            },
            Access::Ingest => match &self.ingest {
                None => Ok(()),
                Some(expected) => {
                    check_token(headers, expected, self.admin.as_deref(), "ingest", "admin")
                }
            },
        };
        if checked.is_err() && access == Access::Ingest {
            METRICS.ingest_refused.fetch_add(1, Ordering::Relaxed);
        }
        checked
    }
}

/// 401 without a bearer token, 403 with another one (saying so when it is
/// the token of the other kind).
fn check_token(
    headers: &HeaderMap,
    expected: &str,
    other: Option<&str>,
    kind: &str,
    other_kind: &str,
) -> Result<(), ApiError> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            format!("missing `Authorization: Bearer <{kind} token>`"),
        )),
        Some(token) if constant_time_eq(token.as_bytes(), expected.as_bytes()) => Ok(()),
        Some(token) if other.is_some_and(|o| constant_time_eq(token.as_bytes(), o.as_bytes())) => {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!("this is the {other_kind} token; this endpoint needs the {kind} token"),
            ))
        }
        Some(_) => Err(ApiError::new(StatusCode::FORBIDDEN, "wrong token")),
    }
}
