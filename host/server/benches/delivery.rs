//! Delivery-core load benchmark (a load tool, not a timed test): durable
//! ingest throughput, end-to-end delivery throughput, and ingest-to-delivery
//! latency. Server, load generator and receiver run in this one process on
//! loopback, sharing the machine's cores as separate processes would.
//! Method and figures: BENCHMARKS.md. `BENCH_QUICK=1` shortens every phase;
//! `BENCH_DEBUG=1` prints failed posts and the slowest events.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::oneshot;

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// The load generator's client: pooled, `TCP_NODELAY` like the host's own.
fn load_client() -> HttpClient {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    Client::builder(TokioExecutor::new()).build(http)
}

/// `BENCH_ONLY=ingest,e2e,policies,latency` (any of them) runs only those phases.
fn phase(name: &str) -> bool {
    std::env::var("BENCH_ONLY").map_or(true, |only| only.split(',').any(|p| p == name))
}

fn quick() -> bool {
    std::env::var_os("BENCH_QUICK").is_some()
}

fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Counts deliveries and, from the `sent_us` field in each body, latency.
#[derive(Default)]
struct Sink {
    count: AtomicU64,
    /// (latency, event number)
    latencies_us: Mutex<Vec<(u64, u64)>>,
}

async fn start_receiver(sink: Arc<Sink>, epoch: Instant) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route(
        "/sink",
        axum::routing::post(move |body: Bytes| {
            let sink = sink.clone();
            async move {
                let now = epoch.elapsed().as_micros() as u64;
                if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body)
                    && let Some(sent) = v["sent_us"].as_u64()
                {
                    let n = v["n"].as_u64().unwrap_or(0);
                    sink.latencies_us
                        .lock()
                        .unwrap()
                        .push((now.saturating_sub(sent), n));
                }
                sink.count.fetch_add(1, Ordering::Relaxed);
                "ok"
            }
        }),
    );
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

struct Server {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    done: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

/// A server with `subscriptions` subscriptions to the receiver, each with
/// the TOML lines `extra` (ordering, a rate limit).
async fn start_server(subscriptions: usize, receiver: SocketAddr, extra: &str) -> Server {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("plugins")).unwrap();
    let addr = free_port();
    let mut text = format!(
        "[delivery]\nallowed_networks = [\"127.0.0.1\"]\n[server]\nlisten = \"{addr}\"\ndata_dir = \"db\"\n[plugins]\ndir = \"plugins\"\nwatch = false\n"
    );
    for i in 0..subscriptions {
        text.push_str(&format!(
            "[[subscriptions]]\nid = \"s{i}\"\nurl = \"http://{receiver}/sink\"\ntypes = [\"*\"]\nenvelope = \"plain\"\nmax_in_flight = 32\n{extra}"
        ));
    }
    let file = dir.path().join("hookhost.toml");
    std::fs::write(&file, text).unwrap();
    let config = hookhost_core::config::Config::load(&file).unwrap();
    let runtime = hookhost_plugin_runtime::Runtime::new(&config.plugins).unwrap();
    let registry = hookhost_plugin_runtime::Registry::new(runtime);
    let (stop, stopped) = oneshot::channel::<()>();
    let done = tokio::spawn(async move {
        hookhost_server::serve(config, registry, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    // Wait for the listener.
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Server {
        addr,
        stop,
        done,
        _dir: dir,
    }
}

impl Server {
    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.done.await;
        // The stopped server's sled database is torn down in the background
        // (its cache freed, ~0.4 s of CPU seen); let that pass before the
        // next phase measures anything.
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
}

async fn post(client: &HttpClient, addr: SocketAddr, body: String) -> bool {
    let req = hyper::Request::post(format!("http://{addr}/v1/events"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    match client.request(req).await {
        Ok(resp) => {
            let ok = resp.status() == 202;
            if !ok && std::env::var_os("BENCH_DEBUG").is_some() {
                eprintln!("status {}", resp.status());
            }
            let _ = resp.into_body().collect().await;
            ok
        }
        Err(e) => {
            if std::env::var_os("BENCH_DEBUG").is_some() {
                eprintln!("post failed: {e:?}");
            }
            false
        }
    }
}

/// Keys of the events (`data.k`), for the ordering phase.
const KEYS: u64 = 100;

fn event(i: u64, sent_us: u64) -> String {
    let k = i % KEYS;
    format!(
        r#"{{"type":"report","data":{{"n":{i},"k":"k{k}","sent_us":{sent_us},"report_type":"usage_summary"}}}}"#
    )
}

/// Posts `events` in batches of 100 and waits until `want` deliveries
/// arrived; returns deliveries per second.
async fn end_to_end(server: &Server, sink: &Sink, events: u64, want: u64) -> f64 {
    let client = load_client();
    let start = Instant::now();
    for chunk in (0..events).collect::<Vec<_>>().chunks(100) {
        let items: Vec<String> = chunk.iter().map(|&i| event(i, 0)).collect();
        assert!(post(&client, server.addr, format!("[{}]", items.join(","))).await);
    }
    while sink.count.load(Ordering::Relaxed) < want {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "deliveries stalled"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    want as f64 / start.elapsed().as_secs_f64()
}

/// `clients` tasks post for `secs`; returns events acknowledged per second.
async fn ingest_rate(addr: SocketAddr, clients: usize, batch: usize, secs: f64) -> f64 {
    let client = load_client();
    let acked = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let (client, acked) = (client.clone(), acked.clone());
            tokio::spawn(async move {
                let mut i = 0u64;
                while Instant::now() < deadline {
                    let body = if batch == 1 {
                        event(c as u64 * 1_000_000 + i, 0)
                    } else {
                        let items: Vec<String> = (0..batch as u64)
                            .map(|k| event(c as u64 * 1_000_000 + i + k, 0))
                            .collect();
                        format!("[{}]", items.join(","))
                    };
                    i += batch as u64;
                    if post(&client, addr, body).await {
                        acked.fetch_add(batch as u64, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    acked.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

fn pct(v: &mut [u64], p: f64) -> f64 {
    v.sort_unstable();
    v[((v.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let epoch = Instant::now();
    let secs = if quick() { 2.0 } else { 10.0 };

    println!("\n### Durable ingest (202 after the journal's sync), no subscriptions\n");
    println!("| load | events/s acknowledged |\n|---|---|");
    for (label, clients, batch) in [
        ("single events, 64 concurrent clients", 64, 1),
        ("batches of 100, 8 concurrent clients", 8, 100),
    ] {
        if !phase("ingest") {
            continue;
        }
        let sink = Arc::new(Sink::default());
        let recv = start_receiver(sink, epoch).await;
        let server = start_server(0, recv, "").await;
        let rate = ingest_rate(server.addr, clients, batch, secs).await;
        println!("| {label} | {rate:.0} |");
        server.stop().await;
    }

    println!("\n### End to end: acknowledged → delivered to a loopback receiver\n");
    println!("| subscriptions | events | deliveries | deliveries/s |\n|---|---|---|---|");
    for (subs, events) in [
        (1usize, if quick() { 5_000 } else { 20_000 }),
        (100, if quick() { 50 } else { 200 }),
    ] {
        if !phase("e2e") {
            continue;
        }
        let sink = Arc::new(Sink::default());
        let recv = start_receiver(sink.clone(), epoch).await;
        let server = start_server(subs, recv, "").await;
        let want = (events * subs) as u64;
        let rate = end_to_end(&server, &sink, events as u64, want).await;
        println!("| {subs} | {events} | {want} | {rate:.0} |");
        server.stop().await;
    }

    println!("\n### End to end with delivery policies: 1 subscription, {KEYS} keys\n");
    println!("| policy | events | deliveries/s |\n|---|---|---|");
    let events = if quick() { 5_000 } else { 20_000 };
    for (label, extra) in [
        ("none", ""),
        (
            "ordering = { key = \"/k\" }",
            "ordering = { key = \"/k\" }\n",
        ),
        (
            "rate_limit 1,000,000/s (never binds: the bucket's cost)",
            "rate_limit = { per_second = 1000000, burst = 1000 }\n",
        ),
        (
            "rate_limit 2,000/s, burst 1 (binds)",
            "rate_limit = { per_second = 2000, burst = 1 }\n",
        ),
    ] {
        if !phase("policies") {
            continue;
        }
        let sink = Arc::new(Sink::default());
        let recv = start_receiver(sink.clone(), epoch).await;
        let server = start_server(1, recv, extra).await;
        let rate = end_to_end(&server, &sink, events, events).await;
        println!("| {label} | {events} | {rate:.0} |");
        server.stop().await;
    }

    if !phase("latency") {
        return;
    }
    println!(
        "\n### Ingest-to-delivery latency at 1,000 events/s (single events, 1 subscription)\n"
    );
    let sink = Arc::new(Sink::default());
    let recv = start_receiver(sink.clone(), epoch).await;
    let server = start_server(1, recv, "").await;
    let client = load_client();
    let total = if quick() { 2_000 } else { 5_000 };
    let mut ticker = tokio::time::interval(Duration::from_millis(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut posts = Vec::with_capacity(total as usize);
    for i in 0..total {
        ticker.tick().await;
        let (client, addr) = (client.clone(), server.addr);
        let sent = epoch.elapsed().as_micros() as u64;
        posts.push(tokio::spawn(async move {
            let t0 = Instant::now();
            let ok = post(&client, addr, event(i, sent)).await;
            (ok, t0.elapsed().as_micros() as u64, i)
        }));
    }
    let mut acked = 0;
    let mut ack_us = Vec::with_capacity(posts.len());
    for p in posts {
        let (ok, us, i) = p.await.unwrap();
        acked += ok as u64;
        ack_us.push((us, i));
    }
    ack_us.sort_unstable();
    if std::env::var_os("BENCH_DEBUG").is_some() {
        for (us, n) in ack_us.iter().rev().take(10) {
            eprintln!("ack of event {n}: {:.2} ms", *us as f64 / 1000.0);
        }
    }
    let mut ack_us: Vec<u64> = ack_us.into_iter().map(|(us, _)| us).collect();
    // A post can fail on the client side (a pooled connection the server
    // closed); only acknowledged events are expected at the receiver.
    let failed_posts = total - acked;
    let start = Instant::now();
    while sink.count.load(Ordering::Relaxed) < acked {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "deliveries stalled at {} of {acked}",
            sink.count.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut worst = sink.latencies_us.lock().unwrap().clone();
    worst.sort_unstable();
    if std::env::var_os("BENCH_DEBUG").is_some() {
        for (us, n) in worst.iter().rev().take(30) {
            eprintln!("event {n}: {:.2} ms", *us as f64 / 1000.0);
        }
    }
    let mut lat: Vec<u64> = worst.iter().map(|(us, _)| *us).collect();
    println!(
        "| events sent | not acknowledged | ack p50 | ack p99 | delivery p50 | delivery p99 | delivery max |\n|---|---|---|---|---|---|---|"
    );
    let (a50, a99) = (pct(&mut ack_us, 0.5), pct(&mut ack_us, 0.99));
    let (p50, p99, max) = (pct(&mut lat, 0.5), pct(&mut lat, 0.99), pct(&mut lat, 1.0));
    println!(
        "| {total} | {failed_posts} | {a50:.2} ms | {a99:.2} ms | {p50:.2} ms | {p99:.2} ms | {max:.2} ms |"
    );
    server.stop().await;
}
