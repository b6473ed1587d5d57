//! Accepting API connections: HTTP/1 over hyper with a bound on how long a
//! request head may take (slow headers and idle keep-alives alike), a cap on
//! open connections, and graceful shutdown.
//!
//! At the cap, the longest-idle connection (no request in progress: idle
//! keep-alives, clients still sending a head) is closed to make room, so a
//! flood of idle sockets cannot lock out `/healthz` or ingest. Only when
//! every connection is in a request does a new one get a 503.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use hookhost_core::metrics::METRICS;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_service::Service;

/// Largest default connection cap, whatever the file limit.
const DEFAULT_MAX_CONNECTIONS: u64 = 16_384;

/// Refused connections being answered their 503 at once, at most.
const MAX_REFUSING: usize = 64;

pub(crate) struct Limits {
    pub header_timeout: Duration,
    pub max_connections: usize,
}

/// The connection cap when the config sets none: half the file limit (the
/// rest is for the store, the journal and outgoing deliveries).
pub(crate) fn default_max_connections() -> usize {
    let files = file_limit().map_or(1024, |(soft, _)| soft);
    (files / 2).clamp(16, DEFAULT_MAX_CONNECTIONS) as usize
}

/// Raises the soft limit on open files to the hard limit; returns the limit
/// in force afterwards.
pub(crate) fn raise_file_limit() -> Option<u64> {
    let (soft, hard) = file_limit()?;
    if soft < hard {
        let raised = libc::rlimit {
            rlim_cur: hard,
            rlim_max: hard,
        };
        // SAFETY: setrlimit reads the struct we pass; no memory is shared.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return Some(hard);
        }
    }
    Some(soft)
}

fn file_limit() -> Option<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0)
        .then_some((limit.rlim_cur, limit.rlim_max))
}

/// One open connection as the cap sees it.
struct Connection {
    requests_in_progress: Arc<AtomicUsize>,
    close: CancellationToken,
}

#[derive(Default)]
struct Open {
    next_id: u64,
    /// By id, so the first idle one found is the longest-open idle one.
    connections: BTreeMap<u64, Connection>,
}

impl Open {
    /// Makes room for one more connection: true if there is room or an idle
    /// connection was told to close.
    fn admit(&mut self, max: usize) -> bool {
        if self.connections.len() < max {
            return true;
        }
        let idle = self.connections.values().find(|c| {
            c.requests_in_progress.load(Ordering::Acquire) == 0 && !c.close.is_cancelled()
        });
        match idle {
            Some(c) => {
                c.close.cancel();
                METRICS.connections_shed.fetch_add(1, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }
}

/// Serves `router` on `listener` until `shutdown` resolves; then lets the
/// requests in progress finish and closes every connection.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let open = Arc::new(Mutex::new(Open::default()));
    let tasks = TaskTracker::new();
    let stopping = CancellationToken::new();
    let refusing = Arc::new(AtomicUsize::new(0));
    let mut last_accept_error: Option<Instant> = None;
    tokio::pin!(shutdown);
    loop {
        let tcp = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    // Out of files, most likely: say so (once a second at
                    // most) and give closing connections a moment.
                    if last_accept_error.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                        tracing::warn!(error = %e, "cannot accept an API connection");
                        last_accept_error = Some(Instant::now());
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let admitted = lock(&open).admit(limits.max_connections);
        if !admitted {
            METRICS.connections_refused.fetch_add(1, Ordering::Relaxed);
            // Answered one by one up to a bound; past it (a flood while every
            // connection is busy) closed at once, so refusals hold few files.
            if refusing.load(Ordering::Relaxed) < MAX_REFUSING {
                refusing.fetch_add(1, Ordering::Relaxed);
                let refusing = refusing.clone();
                tasks.spawn(async move {
                    refuse(tcp).await;
                    refusing.fetch_sub(1, Ordering::Relaxed);
                });
            }
            continue;
        }
        let requests_in_progress = Arc::new(AtomicUsize::new(0));
        let close = CancellationToken::new();
        let id = {
            let mut open = lock(&open);
            let id = open.next_id;
            open.next_id += 1;
            open.connections.insert(
                id,
                Connection {
                    requests_in_progress: requests_in_progress.clone(),
                    close: close.clone(),
                },
            );
            id
        };
        METRICS.connections_open.fetch_add(1, Ordering::Relaxed);
        let service = counted(router.clone(), requests_in_progress);
        let mut http = http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout);
        let connection = http.serve_connection(TokioIo::new(tcp), service);
        let (open, stopping) = (open.clone(), stopping.clone());
        tasks.spawn(async move {
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                // Dropping the connection closes its socket; it had no
                // request in progress.
                () = close.cancelled() => {}
                () = stopping.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
            lock(&open).connections.remove(&id);
            METRICS.connections_open.fetch_sub(1, Ordering::Relaxed);
        });
    }
    stopping.cancel();
    tasks.close();
    tasks.wait().await;
}

fn lock(open: &Mutex<Open>) -> std::sync::MutexGuard<'_, Open> {
    open.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The router as a hyper service that counts its connection's requests in
/// progress (a connection with none may be shed at the cap).
fn counted(
    router: Router,
    requests_in_progress: Arc<AtomicUsize>,
) -> impl hyper::service::Service<
    http::Request<Incoming>,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future = impl Future<Output = Result<axum::response::Response, std::convert::Infallible>> + Send,
> + Clone {
    hyper::service::service_fn(move |request: http::Request<Incoming>| {
        let mut router = router.clone();
        let in_progress = InProgress::start(requests_in_progress.clone());
        async move {
            let answer = router.call(request.map(axum::body::Body::new)).await;
            drop(in_progress);
            answer
        }
    })
}

/// Counts one request in progress while it lives.
struct InProgress(Arc<AtomicUsize>);

impl InProgress {
    fn start(counter: Arc<AtomicUsize>) -> InProgress {
        counter.fetch_add(1, Ordering::AcqRel);
        InProgress(counter)
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The answer at the cap when no connection is idle.
async fn refuse(tcp: TcpStream) {
    const BODY: &str = r#"{"error": "every connection is in a request (server.max_connections)"}"#;
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    // Read the request head first (bounded): closing a socket with unread
    // input resets it, and a reset can destroy the answer before the client
    // reads it.
    let mut head = Vec::new();
    let read_head = async {
        let mut buf = [0u8; 1024];
        while head.len() < 8 * 1024
            && !head.windows(4).any(|w| w == b"\r\n\r\n")
            && tcp.readable().await.is_ok()
        {
            match tcp.try_read(&mut buf) {
                Ok(0) => return,
                Ok(n) => head.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), read_head).await;
    let write = async {
        let mut left = answer.as_bytes();
        while !left.is_empty() && tcp.writable().await.is_ok() {
            match tcp.try_write(left) {
                Ok(n) => left = &left[n..],
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_sheds_the_longest_idle_connection_and_refuses_when_none_is_idle() {
        let mut open = Open::default();
        let busy = Arc::new(AtomicUsize::new(1));
        let idle = Arc::new(AtomicUsize::new(0));
        let mut closes = Vec::new();
        for (id, counter) in [(0, &busy), (1, &idle), (2, &idle)] {
            let close = CancellationToken::new();
            closes.push(close.clone());
            open.connections.insert(
                id,
                Connection {
                    requests_in_progress: counter.clone(),
                    close,
                },
            );
        }
        assert!(open.admit(4), "room below the cap");
        assert!(closes.iter().all(|c| !c.is_cancelled()));
        assert!(open.admit(3));
        assert!(!closes[0].is_cancelled(), "a connection in a request stays");
        assert!(closes[1].is_cancelled(), "the longest idle one goes first");
        assert!(!closes[2].is_cancelled());
        assert!(open.admit(3));
        assert!(closes[2].is_cancelled());
        assert!(!open.admit(3), "none idle left: refused");
    }
}
