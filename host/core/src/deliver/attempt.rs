//! One attempt: the signed request, its timeout, and what the answer means.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full, Limited};

use super::client::error_chain;
use super::retry::Outcome;
use super::{Deliverer, Endpoint};
use crate::metrics::METRICS;
use crate::model::Attempt;
use crate::sign;

/// Who sends: the `user-agent` of every attempt.
pub(super) const USER_AGENT: &str = concat!("hookhost/", env!("CARGO_PKG_VERSION"));

/// The most of an endpoint's answer body that is read. Receivers answer
/// with a status; what they write after it is never used.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

impl Deliverer {
    pub(super) async fn attempt(
        &self,
        endpoint: &Endpoint,
        job_id: &str,
        body: Bytes,
    ) -> (Attempt, Outcome) {
        let at_ms = self.clock.now_ms();
        let timestamp = at_ms / 1000;
        let sent_sha256 = Some(super::shown::sent_digest(&endpoint.sub.url, &body));
        let mut request = Request::post(endpoint.uri.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::USER_AGENT, USER_AGENT)
            .header("webhook-id", job_id)
            .header("webhook-timestamp", timestamp);
        for (name, value) in &endpoint.headers {
            request = request.header(name, value);
        }
        // A rotated-out key signs beside the new one until its time.
        let with_retiring: Vec<Vec<u8>>;
        let keys = if endpoint.retiring.iter().any(|(_, until)| *until > at_ms) {
            with_retiring = endpoint
                .keys
                .iter()
                .cloned()
                .chain(
                    endpoint
                        .retiring
                        .iter()
                        .filter(|(_, until)| *until > at_ms)
                        .map(|(key, _)| key.clone()),
                )
                .collect();
            &with_retiring
        } else {
            &endpoint.keys
        };
        if !keys.is_empty() {
            let body_text = std::str::from_utf8(&body).unwrap_or_default();
            request = request.header(
                "webhook-signature",
                sign::standard_signature(keys, job_id, timestamp, body_text),
            );
        }
        let request = match request.body(Full::new(body)) {
            Ok(r) => r,
            Err(e) => {
                let attempt = Attempt {
                    at_ms,
                    status: None,
                    latency_ms: 0.0,
                    error: Some(e.to_string()),
                    sent_sha256,
                };
                return (attempt, Outcome::Refused);
            }
        };
        let started = Instant::now();
        let timeout = Duration::from_millis(endpoint.sub.retry.timeout_ms);
        let result = tokio::time::timeout(timeout, async {
            let response = self.client.request(request).await?;
            let status = response.status();
            let retry_after = response.headers().get(http::header::RETRY_AFTER).cloned();
            // Read the body so the connection can be reused, but no more than
            // MAX_ANSWER_BYTES: an endpoint that streams without end must not
            // fill our memory. Past the bound the body is dropped unread,
            // which closes that connection instead of reusing it.
            let _ = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await;
            Ok::<_, hyper_util::client::legacy::Error>((status, retry_after))
        })
        .await;
        let latency_ms = started.elapsed().as_secs_f64() * 1e3;
        let (status, error, outcome) = match result {
            Ok(Ok((s, retry_after))) => (
                Some(s.as_u16()),
                None,
                Outcome::of_answer(&endpoint.sub, s, retry_after.as_ref(), SystemTime::now()),
            ),
            Ok(Err(e)) => (
                None,
                Some(error_chain(&e)),
                Outcome::Retry { after_ms: None },
            ),
            Err(_) => (
                None,
                Some(format!("timed out after {} ms", timeout.as_millis())),
                Outcome::Retry { after_ms: None },
            ),
        };
        tracing::debug!(status, error = error.as_deref(), latency_ms, "attempt");
        METRICS.observe_attempt_latency(latency_ms / 1e3);
        match outcome {
            Outcome::Delivered => &METRICS.attempts_ok,
            Outcome::Retry { .. } => &METRICS.attempts_failed,
            Outcome::Refused => &METRICS.attempts_refused,
        }
        .fetch_add(1, Ordering::Relaxed);
        (
            Attempt {
                at_ms,
                status,
                latency_ms,
                error,
                sent_sha256,
            },
            outcome,
        )
    }
}
