//! The HTTP client deliveries go out on: hyper's pooled client, rustls for
//! HTTPS, and a resolver that refuses addresses the SSRF policy forbids.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::ssrf::{GuardedResolver, TargetPolicy};

pub(super) type HttpsClient =
    Client<hyper_rustls::HttpsConnector<HttpConnector<GuardedResolver>>, Full<Bytes>>;

pub(super) fn build(policy: Arc<TargetPolicy>, max_idle_per_host: usize) -> HttpsClient {
    let mut http = HttpConnector::new_with_resolver(GuardedResolver::new(policy));
    http.enforce_http(false); // the HTTPS wrapper checks the scheme
    // Without it a request written in two segments can wait for the
    // peer's delayed ACK.
    http.set_nodelay(true);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(max_idle_per_host)
        .build(https)
}

/// An error with its causes, on one line.
pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
