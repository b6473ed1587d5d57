//! Bearer tokens: the admin token for the management API, the ingest token
//! (when set) for `POST /v1/events`. Comparisons take the same time whatever
//! the token given.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::http::{HeaderMap, StatusCode, header};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use hookhost_core::metrics::METRICS;
use hookhost_core::sign::constant_time_eq;
use sha2::Sha256;

use crate::reply::ApiError;

/// Who may call a route.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Access {
    Open,
    /// `server.ingest_token`, when one is set.
    Ingest,
    /// `server.admin_token`.
    Admin,
    /// A customer's portal link: one subscription, until it expires.
    Portal,
}

#[derive(Clone, Default)]
pub(crate) struct Tokens {
    pub(crate) admin: Option<Arc<str>>,
    pub(crate) ingest: Option<Arc<str>>,
}

/// What a portal token grants: one subscription.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PortalScope {
    pub(crate) subscription: String,
    pub(crate) expires_at_s: u64,
}

/// Portal tokens are `hhp_<payload>.<mac>` (base64url): the payload names
/// the subscription and the expiry, the MAC is HMAC-SHA256 under a key
/// derived from the admin token — nothing to store, and changing the admin
/// token revokes every link.
const PORTAL_PREFIX: &str = "hhp_";

fn portal_key(admin: &str) -> Hmac<Sha256> {
    let mut derive = Hmac::<Sha256>::new_from_slice(admin.as_bytes()).expect("any key length");
    derive.update(b"hookhost portal links v1");
    let key = derive.finalize().into_bytes();
    Hmac::<Sha256>::new_from_slice(&key).expect("any key length")
}

impl Tokens {
    /// A portal token for `subscription`, valid until `expires_at_s` (Unix
    /// seconds); `None` when the management API (and so the key) is off.
    pub(crate) fn mint_portal(&self, subscription: &str, expires_at_s: u64) -> Option<String> {
        let admin = self.admin.as_deref()?;
        let payload = URL_SAFE_NO_PAD.encode(format!("{subscription}.{expires_at_s}"));
        let mut mac = portal_key(admin);
        mac.update(payload.as_bytes());
        let mac = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        Some(format!("{PORTAL_PREFIX}{payload}.{mac}"))
    }

    /// The scope of the portal token in `headers`, checked against the key
    /// and the clock: 401 when it is missing, forged or expired.
    pub(crate) fn check_portal(
        &self,
        headers: &HeaderMap,
        now_s: u64,
    ) -> Result<PortalScope, ApiError> {
        let refused = |why: &str| ApiError::new(StatusCode::UNAUTHORIZED, why.to_string());
        let Some(admin) = self.admin.as_deref() else {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "portal links are off: the management API is disabled (no server.admin_token)",
            ));
        };
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| refused("missing `Authorization: Bearer <portal token>`"))?;
        let (payload, mac) = token
            .strip_prefix(PORTAL_PREFIX)
            .and_then(|t| t.split_once('.'))
            .ok_or_else(|| refused("not a portal token"))?;
        let mac = URL_SAFE_NO_PAD
            .decode(mac)
            .map_err(|_| refused("not a portal token"))?;
        let mut expected = portal_key(admin);
        expected.update(payload.as_bytes());
        // verify_slice compares in constant time.
        expected
            .verify_slice(&mac)
            .map_err(|_| refused("this portal link is not valid (revoked or altered)"))?;
        let payload = URL_SAFE_NO_PAD
            .decode(payload)
            .ok()
            .and_then(|p| String::from_utf8(p).ok())
            .ok_or_else(|| refused("not a portal token"))?;
        let (subscription, expires) = payload
            .rsplit_once('.')
            .ok_or_else(|| refused("not a portal token"))?;
        let expires_at_s: u64 = expires.parse().map_err(|_| refused("not a portal token"))?;
        if now_s >= expires_at_s {
            return Err(refused("this portal link has expired: ask for a new one"));
        }
        Ok(PortalScope {
            subscription: subscription.to_string(),
            expires_at_s,
        })
    }

    /// Whether `headers` carry the token `access` needs; the refusal otherwise.
    pub(crate) fn check(&self, access: Access, headers: &HeaderMap) -> Result<(), ApiError> {
        let checked = match access {
            Access::Open => Ok(()),
            Access::Portal => self
                .check_portal(headers, hookhost_core::clock::now_ms() / 1000)
                .map(|_| ()),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(admin: &str) -> Tokens {
        Tokens {
            admin: Some(Arc::from(admin)),
            ingest: None,
        }
    }

    fn bearer(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            format!("Bearer {token}").parse().unwrap(),
        );
        headers
    }

    #[test]
    fn a_portal_token_names_its_subscription_until_it_expires() {
        let t = tokens("admin-1");
        let token = t.mint_portal("customer.eu", 1_000).unwrap();
        let scope = t.check_portal(&bearer(&token), 999).unwrap();
        assert_eq!(scope.subscription, "customer.eu");
        assert_eq!(scope.expires_at_s, 1_000);
        let expired = t.check_portal(&bearer(&token), 1_000).unwrap_err();
        assert_eq!(expired.status, StatusCode::UNAUTHORIZED);
        assert!(expired.message.contains("expired"), "{}", expired.message);
    }

    #[test]
    fn altered_foreign_or_missing_portal_tokens_are_refused() {
        let t = tokens("admin-1");
        let token = t.mint_portal("customer", 10_000).unwrap();
        // Another admin token's key: every link is revoked.
        assert!(tokens("admin-2").check_portal(&bearer(&token), 1).is_err());
        // The payload swapped for another subscription's, MAC kept.
        let other = t.mint_portal("other", 10_000).unwrap();
        let (_, mac) = token.split_once('.').unwrap();
        let (payload, _) = other.split_once('.').unwrap();
        let forged = format!("{payload}.{mac}");
        assert!(t.check_portal(&bearer(&forged), 1).is_err());
        for bad in ["", "hhp_", "hhp_x.y", "admin-1"] {
            assert!(t.check_portal(&bearer(bad), 1).is_err(), "{bad:?}");
        }
        assert_eq!(
            t.check_portal(&HeaderMap::new(), 1).unwrap_err().status,
            StatusCode::UNAUTHORIZED
        );
        // No admin token: no key, no links.
        assert!(Tokens::default().mint_portal("customer", 10).is_none());
    }
}
