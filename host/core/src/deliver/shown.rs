//! A delivery's request as people see it (the dashboard, the portal): what
//! an attempt sent, rebuilt from the delivery and its subscription, with
//! the signatures and the subscription's header values masked. Rebuilt,
//! not stored: each attempt keeps only a short digest of the URL and body
//! it sent ([`crate::model::Attempt::sent_sha256`]), which says whether
//! the rebuilt request is exactly that one (it is not if the subscription's
//! URL, envelope or seed changed since).

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::attempt::USER_AGENT;
use crate::model::{Attempt, Job, Subscription};
use crate::sign;

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct ShownRequest {
    pub method: &'static str,
    pub url: String,
    /// In the order sent; secrets masked.
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// Whether URL and body are exactly what the attempt sent; `None` when
    /// it was not attempted yet (or before attempts kept a digest).
    pub exact: Option<bool>,
}

/// A short digest of what an attempt sent: 16 hex digits of SHA-256.
pub fn sent_digest(url: &str, body: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(url.as_bytes());
    h.update(b"\n");
    h.update(body);
    hex::encode(&h.finalize()[..8])
}

/// The request of `attempt` (or, if none, of the next one) of `job` to
/// `sub`'s endpoint.
pub fn shown_request(
    sub: &Subscription,
    job: &Job,
    attempt: Option<&Attempt>,
    now_ms: u64,
) -> Result<ShownRequest, sign::SignError> {
    let body = sign::body(
        sub.envelope,
        &job.event_type,
        &job.data,
        sub.seed.as_deref(),
    )?;
    let at_ms = attempt.map_or(now_ms, |a| a.at_ms);
    let mut headers = vec![
        ("content-type".to_string(), "application/json".to_string()),
        ("user-agent".to_string(), USER_AGENT.to_string()),
        ("webhook-id".to_string(), job.id.clone()),
        ("webhook-timestamp".to_string(), (at_ms / 1000).to_string()),
    ];
    for name in sub.headers.keys() {
        headers.push((name.to_ascii_lowercase(), "(set)".to_string()));
    }
    let keys = sub.secrets.len()
        + sub
            .retiring_secrets
            .iter()
            .filter(|r| r.until_ms > at_ms)
            .count();
    if keys > 0 {
        headers.push((
            "webhook-signature".to_string(),
            vec!["v1,(masked)"; keys].join(" "),
        ));
    }
    let exact = attempt
        .and_then(|a| a.sent_sha256.as_deref())
        .map(|sent| sent == sent_digest(&sub.url, body.as_bytes()));
    Ok(ShownRequest {
        method: "POST",
        url: sub.url.clone(),
        headers,
        body,
        exact,
    })
}
