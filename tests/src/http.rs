//! Real HTTP over loopback for the end-to-end tests: a webhook receiver whose
//! answers each test scripts, and a plain HTTP/1.1 client for the ingest API.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;

/// How the receiver answers on one path.
#[derive(Clone, Debug)]
pub enum Answer {
    /// Always this status.
    Status(u16),
    /// These statuses in turn, then `then` forever.
    Sequence(Vec<u16>, u16),
    /// Wait, then answer the status.
    Slow(Duration, u16),
    /// These (status, `Retry-After` value) answers in turn, then `then`.
    RetryAfter(Vec<(u16, String)>, u16),
    /// `status` for about `percent` % of requests, picked by a fixed
    /// pseudo-random sequence (the same in every run), else 200.
    Flaky { percent: u64, status: u16 },
}

/// One request the receiver got.
#[derive(Clone, Debug)]
pub struct Received {
    /// Wall-clock arrival, ms since the Unix epoch.
    pub at_ms: u64,
    pub path: String,
    pub headers: BTreeMap<String, String>,
    pub body: String,
    /// The status answered.
    pub status: u16,
}

#[derive(Default)]
struct Shared {
    answers: Mutex<HashMap<String, (Answer, usize)>>,
    got: Mutex<Vec<Received>>,
    in_flight: std::sync::atomic::AtomicUsize,
    max_in_flight: std::sync::atomic::AtomicUsize,
}

/// A webhook receiver on 127.0.0.1, on its own runtime thread.
pub struct Receiver {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn receive(
    State(shared): State<Arc<Shared>>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, HeaderMap) {
    let mut answer_headers = HeaderMap::new();
    let answer = {
        let mut answers = shared.answers.lock().unwrap();
        match answers.get_mut(&path) {
            Some((answer, n)) => {
                *n += 1;
                match answer {
                    Answer::Status(s) => (None, *s),
                    Answer::Sequence(seq, then) => {
                        (None, seq.get(*n - 1).copied().unwrap_or(*then))
                    }
                    Answer::Slow(d, s) => (Some(*d), *s),
                    Answer::RetryAfter(seq, then) => match seq.get(*n - 1) {
                        Some((status, after)) => {
                            if let Ok(v) = after.parse() {
                                answer_headers.insert(axum::http::header::RETRY_AFTER, v);
                            }
                            (None, *status)
                        }
                        None => (None, *then),
                    },
                    Answer::Flaky { percent, status } => {
                        // splitmix64 of the request number
                        let mut z = (*n as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
                        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                        z ^= z >> 31;
                        (None, if z % 100 < *percent { *status } else { 200 })
                    }
                }
            }
            None => (None, 200),
        }
    };
    shared.got.lock().unwrap().push(Received {
        at_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64,
        path: path.clone(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string()))
            .collect(),
        body: String::from_utf8_lossy(&body).into_owned(),
        status: answer.1,
    });
    use std::sync::atomic::Ordering::SeqCst;
    let now = shared.in_flight.fetch_add(1, SeqCst) + 1;
    shared.max_in_flight.fetch_max(now, SeqCst);
    if let Some(d) = answer.0 {
        tokio::time::sleep(d).await;
    }
    shared.in_flight.fetch_sub(1, SeqCst);
    (StatusCode::from_u16(answer.1).unwrap(), answer_headers)
}

impl Receiver {
    pub fn start() -> Receiver {
        let shared = Arc::new(Shared::default());
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let state = shared.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                let app = axum::Router::new()
                    .route("/{*path}", axum::routing::post(receive))
                    .with_state(state);
                axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stop_rx.await;
                    })
                    .await
                    .unwrap();
            });
        });
        let addr = addr_rx.recv().unwrap();
        Receiver {
            addr,
            shared,
            _stop: stop_tx,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{path}", self.addr)
    }

    pub fn script(&self, path: &str, answer: Answer) {
        self.shared
            .answers
            .lock()
            .unwrap()
            .insert(path.to_string(), (answer, 0));
    }

    pub fn received(&self) -> Vec<Received> {
        self.shared.got.lock().unwrap().clone()
    }

    /// The most requests this receiver had in progress at once.
    pub fn max_in_flight(&self) -> usize {
        self.shared
            .max_in_flight
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The JSON bodies received on `path`, in arrival order.
    pub fn bodies(&self, path: &str) -> Vec<Value> {
        self.shared
            .got
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == path)
            .map(|r| serde_json::from_str(&r.body).expect("a JSON body"))
            .collect()
    }

    /// The distinct `webhook-id`s of every request received.
    pub fn webhook_ids(&self) -> std::collections::BTreeSet<String> {
        self.received()
            .iter()
            .map(|r| r.headers["webhook-id"].clone())
            .collect()
    }

    pub fn count(&self, path: &str) -> usize {
        self.shared
            .got
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == path)
            .count()
    }

    /// Waits until `path` has had `n` requests; panics after `limit`.
    pub fn wait_count(&self, path: &str, n: usize, limit: Duration) {
        let start = Instant::now();
        while self.count(path) < n {
            assert!(
                start.elapsed() < limit,
                "{path}: {} of {n} requests after {limit:?}",
                self.count(path)
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// POSTs `body` to `http://addr{path}` and returns the status and JSON answer.
pub fn post(addr: SocketAddr, path: &str, body: &[u8]) -> (u16, Value) {
    request(addr, "POST", path, &[], body)
}

/// POSTs `events` to `/v1/events` as one array; they must be accepted
/// (202). Returns the answer (`ids`, …).
pub fn post_events(addr: SocketAddr, events: Vec<Value>) -> Value {
    let (status, answer) = post(
        addr,
        "/v1/events",
        Value::Array(events).to_string().as_bytes(),
    );
    assert_eq!(status, 202, "{answer}");
    answer
}

/// GETs `http://addr{path}` with extra header lines (`"Name: value"`).
pub fn get(addr: SocketAddr, path: &str, headers: &[&str]) -> (u16, Value) {
    request(addr, "GET", path, headers, b"")
}

/// The samples of the server's `/metrics` page by name (labels included,
/// e.g. `hookhost_deliveries_total{outcome="delivered"}`). Panics unless
/// the page is there and every sample's value is a number.
pub fn metrics(addr: SocketAddr) -> BTreeMap<String, f64> {
    let (status, page) = get(addr, "/metrics", &[]);
    assert_eq!(status, 200, "/metrics: {page}");
    parse_metrics(page.as_str().expect("/metrics is text"))
}

/// The samples of a Prometheus text page by name (comments skipped).
fn parse_metrics(page: &str) -> BTreeMap<String, f64> {
    page.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (name, value) = l
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("a sample without a value: {l}"));
            let value = value
                .parse()
                .unwrap_or_else(|_| panic!("a sample whose value is not a number: {l}"));
            (name.to_string(), value)
        })
        .collect()
}

/// One HTTP/1.1 request on a fresh connection; returns the status and the
/// answer parsed as JSON (or as a JSON string if it is not JSON).
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[&str],
    body: &[u8],
) -> (u16, Value) {
    let (status, _, json) = request_with_headers(addr, method, path, headers, body);
    (status, json)
}

/// As [`request`], also returning the answer's headers (names lowercased).
pub fn request_with_headers(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[&str],
    body: &[u8],
) -> (u16, BTreeMap<String, String>, Value) {
    exchange(addr, method, path, headers, body).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// POSTs like [`post`], to a server that may be gone (killed): `None` when
/// it could not be reached or did not answer whole.
pub fn try_post(addr: SocketAddr, path: &str, body: &[u8]) -> Option<(u16, Value)> {
    exchange(addr, "POST", path, &[], body)
        .ok()
        .map(|(status, _, json)| (status, json))
}

/// GETs like [`get`], from a server that may be gone.
pub fn try_get(addr: SocketAddr, path: &str) -> Option<(u16, Value)> {
    exchange(addr, "GET", path, &[], b"")
        .ok()
        .map(|(status, _, json)| (status, json))
}

fn exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[&str],
    body: &[u8],
) -> Result<(u16, BTreeMap<String, String>, Value), String> {
    let mut stream =
        TcpStream::connect(addr).map_err(|e| format!("connect to hookhost at {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .map_err(|e| e.to_string())?;
    // The server may answer (413) before reading a large body; ignore a reset.
    let _ = stream.write_all(body);
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response);
    let status: u16 = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no HTTP status in {text:?}"))?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let answer_headers = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let json = serde_json::from_str(body).unwrap_or(Value::String(body.to_string()));
    Ok((status, answer_headers, json))
}
