//! Listing deliveries in a large store (a measurement, not a timed test):
//! fills a sled store with 1,000,000 deliveries (`BENCH_QUICK=1`: 100,000)
//! over 100 subscriptions (`BENCH_SUBSCRIPTIONS=N` for another number),
//! serves it, and times `GET /v1/deliveries` — the
//! requests the dashboard and the portal make — over real HTTP.
//! `BENCH_POSTGRES='<connection string>'`: the same on a fresh PostgreSQL
//! schema instead. Method and figures: BENCHMARKS.md ("Listing deliveries").

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use hookhost_core::model::{Attempt, Job, JobStatus, Processed, StoredEvent};
use hookhost_core::store::Store;
use hookhost_core::store::postgres::{PgSettings, PgStore};
use hookhost_core::store::sled::SledStore;
use tokio::sync::oneshot;

const TOKEN: &str = "listing-bench-token";
/// Subscriptions the deliveries are spread over (`BENCH_SUBSCRIPTIONS`):
/// a listing of all of them merges one index range per subscription.
fn subscriptions() -> u64 {
    std::env::var("BENCH_SUBSCRIPTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100)
        .max(1)
}

fn quick() -> bool {
    std::env::var_os("BENCH_QUICK").is_some()
}

/// Delivery `i`: subscription `s{i % subscriptions}`, one in ten an
/// `alarm`, one in a hundred dead, created 10 ms apart, ~300 bytes of data.
fn job(i: u64, subscriptions: u64, base_ms: u64) -> Job {
    Job {
        id: format!("msg_{i:016x}"),
        event_id: format!("evt_{i:016x}"),
        subscription_id: format!("s{}", i % subscriptions),
        event_type: if i.is_multiple_of(10) {
            "alarm"
        } else {
            "report"
        }
        .into(),
        data: format!(
            r#"{{"location_id":"a1b2c3d4-e5f6-7890-abcd-{i:012x}","voltage":3.7,"temperature":21.5,"occupied":true,"slots":[1,2,3,4,5,6,7,8],"note":"{}"}}"#,
            "x".repeat(120)
        ),
        status: if i.is_multiple_of(100) {
            JobStatus::Dead
        } else {
            JobStatus::Delivered
        },
        attempts: vec![Attempt {
            at_ms: base_ms + i * 10 + 5,
            status: Some(if i.is_multiple_of(100) { 410 } else { 200 }),
            latency_ms: 3.2,
            error: None,
            sent_sha256: None,
        }],
        attempts_in_round: 1,
        next_attempt_at_ms: 0,
        created_at_ms: base_ms + i * 10,
        error: None,
        merged_events: Vec::new(),
        order: None,
    }
}

/// One request on a fresh connection; the status and the body's length.
fn get(addr: SocketAddr, path: &str) -> (u16, usize) {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let text = String::from_utf8_lossy(&answer);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, answer.len())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: u64 = if quick() { 100_000 } else { 1_000_000 };
    let subscriptions = subscriptions();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let base_ms = 1_767_225_600_000; // 2026-01-01T00:00:00Z
    let started = Instant::now();
    let postgres = std::env::var("BENCH_POSTGRES").ok();
    let schema = format!("listing_bench_{}", std::process::id());
    let size = {
        let store: Box<dyn Store> = match &postgres {
            Some(url) => Box::new(
                PgStore::open(&PgSettings {
                    url: url.clone(),
                    schema: schema.clone(),
                    pool_size: 2,
                    tls_ca_file: None,
                })
                .unwrap(),
            ),
            None => Box::new(SledStore::open(&db).unwrap()),
        };
        // A store this version made: indexed from its first start, nothing
        // older to index later (see the one-off figure below).
        store.index_for_listing().unwrap();
        // As the pipeline stores them: each delivery with its event.
        let mut batch = Vec::with_capacity(10_000);
        for i in 0..n {
            let job = job(i, subscriptions, base_ms);
            batch.push(Processed {
                jobs: vec![job],
                ..Processed::new(StoredEvent {
                    id: format!("evt_{i:016x}"),
                    event_type: "report".into(),
                    timestamp: "2026-01-01T00:00:00Z".into(),
                    data: "{}".into(),
                    received_at_ms: base_ms + i * 10,
                    errors: Vec::new(),
                    plugin_decisions: Default::default(),
                })
            });
            if batch.len() == 10_000 {
                store.complete_pipeline(&batch).unwrap();
                batch.clear();
            }
        }
        store.complete_pipeline(&batch).unwrap();
        store.flush().unwrap();
        store.stats().unwrap().bytes
    };
    let fill = started.elapsed();

    println!(
        "## Listing {n} deliveries over {subscriptions} subscriptions\n\nstore filled in {:.1} s, {:.0} MB on disk\n",
        fill.as_secs_f64(),
        size as f64 / 1e6
    );

    std::fs::create_dir(dir.path().join("plugins")).unwrap();
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let file = dir.path().join("hookhost.toml");
    std::fs::write(
        &file,
        format!(
            "[server]\nlisten = \"{addr}\"\ndata_dir = \"db\"\nadmin_token = \"{TOKEN}\"\n\
             [plugins]\ndir = \"plugins\"\nwatch = false\n[retention]\nenabled = false\n{}",
            match &postgres {
                Some(url) => format!(
                    "[store]\nbackend = \"postgres\"\nurl = {url:?}\nschema = \"{schema}\"\n"
                ),
                None => String::new(),
            }
        ),
    )
    .unwrap();
    let config = hookhost_core::config::Config::load(&file).unwrap();
    let runtime = hookhost_plugin_runtime::Runtime::new(&config.plugins).unwrap();
    let registry = hookhost_plugin_runtime::Registry::new(runtime);
    let (stop, stopped) = oneshot::channel::<()>();
    let open_started = Instant::now();
    let done = tokio::spawn(async move {
        hookhost_server::serve(config, registry, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!(
        "server answering {:.1} s after start\n",
        open_started.elapsed().as_secs_f64()
    );

    // The newest page once a second for the first 40 s: does anything the
    // server does after start (sled's cache filling, counts) show?
    let mut probe = Vec::new();
    for _ in 0..40 {
        let t = Instant::now();
        tokio::task::spawn_blocking(move || get(addr, "/v1/deliveries?limit=100"))
            .await
            .unwrap();
        probe.push(t.elapsed().as_secs_f64() * 1e3);
        tokio::time::sleep(Duration::from_secs(1).saturating_sub(t.elapsed())).await;
    }
    println!(
        "newest page once a second after start (ms): {}\n",
        probe
            .iter()
            .map(|ms| format!("{ms:.0}"))
            .collect::<Vec<_>>()
            .join(" ")
    );

    let middle = hookhost_core::clock::rfc3339_seconds(base_ms + n * 5);
    let minute_later = hookhost_core::clock::rfc3339_seconds(base_ms + n * 5 + 60_000);
    let (_, first_page) = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        write!(s, "GET /v1/deliveries?limit=100 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n").unwrap();
        let mut a = String::new();
        s.read_to_string(&mut a).unwrap();
        let body = a.split("\r\n\r\n").nth(1).unwrap_or_default().to_string();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        (0, v["next"].as_str().unwrap_or_default().to_string())
    })
    .await
    .unwrap();
    let queries = [
        (
            "newest 100, no filter",
            "/v1/deliveries?limit=100".to_string(),
        ),
        (
            "the next page (after the cursor)",
            format!("/v1/deliveries?limit=100&after={first_page}"),
        ),
        (
            "one subscription (1 %)",
            "/v1/deliveries?subscription=s42&limit=100".to_string(),
        ),
        (
            "status=dead (1 %)",
            "/v1/deliveries?status=dead&limit=100".to_string(),
        ),
        (
            "type=alarm (10 %)",
            "/v1/deliveries?type=alarm&limit=100".to_string(),
        ),
        (
            "a minute in the middle",
            format!("/v1/deliveries?since={middle}&until={minute_later}&limit=100"),
        ),
        (
            "one subscription, status=dead (no match: scan budget)",
            "/v1/deliveries?subscription=s42&status=dead&limit=100".to_string(),
        ),
        (
            "type=nosuch (no match: scan budget)",
            "/v1/deliveries?type=nosuch&limit=100".to_string(),
        ),
    ];
    println!("| request | answer | median | slowest (of 5) |\n|---|---|---|---|");
    for (label, path) in queries {
        let mut times = Vec::new();
        let mut status = (0, 0);
        for _ in 0..5 {
            let p = path.clone();
            let t = Instant::now();
            status = tokio::task::spawn_blocking(move || get(addr, &p))
                .await
                .unwrap();
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        times.sort_by(|a, b| a.total_cmp(b));
        println!(
            "| {label} | {} ({} KB) | {:.1} ms | {:.1} ms |",
            status.0,
            status.1 / 1024,
            times[2],
            times[4]
        );
    }
    let _ = stop.send(());
    let _ = done.await;
}
