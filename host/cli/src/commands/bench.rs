//! `hookhost bench`: a load tool that runs hookhost as a separate process.
//!
//! Per run it starts `hookhost serve` (this same binary) on a data folder
//! with one `plain` subscription signed with a `whsec_` secret, a receiver
//! on one thread of this process (answers 204, counts, and times each
//! delivery from the `sent_us` its event carries), and N clients posting
//! events (closed loop, or paced with `--rate`). It prints one Markdown row
//! per run: deliveries/s end to end, ingest/s, ingest-answer and
//! ingest-to-delivery percentiles, how many were delivered when the last
//! POST returned, the server's RSS and CPU per delivery (from /proc), and
//! the whole machine's busy CPU per delivery (the server with its database,
//! the load tool and the kernel), and the load tool's own CPU per delivery
//! (this process: clients and receiver), so that what the machine spent
//! besides the server and the load tool (a database, the kernel) shows.
//! `--data DIR` keeps the data folder across runs (and after), so a run can
//! start on the history of the ones before. `--nodes N` (with `--postgres`)
//! runs N servers on one schema; RSS and CPU are then the nodes' sums.
//! `--latency-log FILE` writes every delivery's latency by send time (CSV).
//! `--server-bin PATH` runs another build as the server (A/B of two builds).
//! `--svix-server PATH` runs svix-server instead, the peer the issues measure
//! against, under the same clients and receiver (see `svix.rs`).

mod svix;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use bytes::Bytes;
use hookhost_core::process_stats::{self, Process};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::ExitCode;

#[derive(clap::Args)]
pub struct BenchOptions {
    /// Concurrent clients.
    #[arg(long, default_value_t = 32)]
    pub clients: usize,
    /// Events per run.
    #[arg(long, default_value_t = 20_000)]
    pub events: u64,
    /// Events per request (1: single events).
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Bytes of padding in each event's data (about the payload size).
    #[arg(long, default_value_t = 200)]
    pub payload_bytes: usize,
    /// Pace the clients at this many events/s in all (open loop), their
    /// posts spread evenly over time; unset: each client posts again as
    /// soon as answered.
    #[arg(long)]
    pub rate: Option<u64>,
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Keep the server's data folder here across runs (a run then starts on
    /// the history of those before); unset: a fresh one per run.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Extra TOML lines for the subscription, e.g.
    /// 'ordering = { key = "/n" }'.
    #[arg(long = "subscription", default_value = "")]
    pub subscription_extra: String,
    /// Extra TOML lines for the server's `[server]` section, e.g.
    /// 'ingest_backlog = 256'.
    #[arg(long = "server", default_value = "")]
    pub server_extra: String,
    /// Put the server's store on this PostgreSQL (a connection string);
    /// each run gets a fresh schema, dropped after it (one schema for all,
    /// kept, with `--data`).
    #[arg(long)]
    pub postgres: Option<String>,
    /// Run this many nodes on the PostgreSQL schema (`--postgres`), the
    /// clients spread over them round-robin: a cluster on one machine.
    #[arg(long, default_value_t = 1)]
    pub nodes: usize,
    /// Write every delivery's send time and latency here (CSV: run, ms
    /// since the run's first send, latency in ms), to see when the slow
    /// ones happened, not only how many there were.
    #[arg(long)]
    pub latency_log: Option<PathBuf>,
    /// Run this `hookhost` binary as the server instead of this one: two
    /// builds (say, before and after a change) under the same load tool.
    #[arg(long)]
    pub server_bin: Option<PathBuf>,
    /// Run this svix-server binary as the server instead of hookhost, on
    /// the `--postgres` database (a `postgres://` URL), with its in-memory
    /// queue and cache: the same load and receiver against the peer.
    #[arg(long, conflicts_with = "server_bin")]
    pub svix_server: Option<PathBuf>,
}

/// The receiving endpoint's signing secret (Standard Webhooks form, which
/// hookhost and svix both take).
const BENCH_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// How long the deliveries may take after the last POST before the run is
/// called stalled.
const DRAIN_LIMIT: Duration = Duration::from_secs(300);

#[derive(Default)]
struct Sink {
    delivered: AtomicU64,
    /// Per delivery: when it was sent and how long it took to arrive.
    sent_and_latency_us: Mutex<Vec<(u64, u64)>>,
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// The receiver: one thread, its own runtime. Returns its address.
fn start_receiver(sink: Arc<Sink>) -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    std::thread::Builder::new()
        .name("bench-receiver".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => return eprintln!("receiver runtime: {e}"),
            };
            runtime.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                    return;
                };
                let app = axum::Router::new().route(
                    "/bench",
                    axum::routing::post(move |body: Bytes| {
                        let sink = sink.clone();
                        async move {
                            let now = now_us();
                            if let Some(sent) = sent_us(&body) {
                                sink.sent_and_latency_us
                                    .lock()
                                    .unwrap_or_else(|p| p.into_inner())
                                    .push((sent, now.saturating_sub(sent)));
                            }
                            sink.delivered.fetch_add(1, Ordering::Relaxed);
                            axum::http::StatusCode::NO_CONTENT
                        }
                    }),
                );
                let _ = axum::serve(listener, app).await;
            });
        })?;
    Ok(addr)
}

/// The send time the clients wrote into the data (`"sent_us":N`), found
/// in the delivered body without parsing all of it: the receiver shares
/// the machine with the server it measures, so it does as little as it can.
fn sent_us(body: &[u8]) -> Option<u64> {
    const FIELD: &[u8] = b"\"sent_us\":";
    let at = body.windows(FIELD.len()).position(|w| w == FIELD)? + FIELD.len();
    let digits = body[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&body[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

fn free_port() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// Where and how a client posts events to a server under test.
#[derive(Clone)]
struct IngestRoute {
    uri: String,
    authorization: Option<String>,
    envelope: Envelope,
}

/// The JSON around one event's data.
#[derive(Clone, Copy)]
enum Envelope {
    /// `{"type": …, "data": …}`, one or an array of them per request.
    Hookhost,
    /// svix's `{"eventType": …, "payload": …}`, one per request.
    Svix,
}

impl IngestRoute {
    fn hookhost(api: SocketAddr) -> IngestRoute {
        IngestRoute {
            uri: format!("http://{api}/v1/events"),
            authorization: None,
            envelope: Envelope::Hookhost,
        }
    }

    /// The request body for these events' data.
    fn body(&self, data: &[String]) -> String {
        let wrapped = data.iter().map(|d| match self.envelope {
            Envelope::Hookhost => format!(r#"{{"type":"bench","data":{d}}}"#),
            Envelope::Svix => format!(r#"{{"eventType":"bench","payload":{d}}}"#),
        });
        match data.len() {
            1 => wrapped.collect(),
            _ => format!("[{}]", wrapped.collect::<Vec<_>>().join(",")),
        }
    }
}

/// The server under test, a child process; stopped with SIGTERM on drop.
struct Server {
    child: Child,
    route: IngestRoute,
}

impl Server {
    fn start(
        binary: &Path,
        run_dir: &Path,
        data: &Path,
        receiver: SocketAddr,
        server_extra: &str,
        extra: &str,
    ) -> anyhow::Result<Server> {
        let api = free_port()?;
        std::fs::create_dir_all(run_dir.join("plugins"))?;
        let config = run_dir.join("hookhost.toml");
        std::fs::write(
            &config,
            format!(
                "[delivery]\nallowed_networks = [\"127.0.0.1\"]\n\
                 [server]\nlisten = \"{api}\"\ndata_dir = \"{}\"\n{server_extra}\n\
                 [plugins]\ndir = \"plugins\"\nwatch = false\n\
                 [[subscriptions]]\nid = \"bench\"\nurl = \"http://{receiver}/bench\"\ntypes = [\"*\"]\n\
                 envelope = \"plain\"\nsecrets = [\"{BENCH_SECRET}\"]\n{extra}\n",
                data.display()
            ),
        )?;
        let mut command = Command::new(binary);
        command.args(["serve", "--config"]).arg(&config);
        Server::spawn(command, api, run_dir, IngestRoute::hookhost(api))
    }

    /// Starts `command` (its stderr into `run_dir/server.log`) and waits
    /// until it listens on `api`.
    fn spawn(
        mut command: Command,
        api: SocketAddr,
        run_dir: &Path,
        route: IngestRoute,
    ) -> anyhow::Result<Server> {
        let log = std::fs::File::create(run_dir.join("server.log"))?;
        let child = command
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {:?}", command.get_program()))?;
        let mut server = Server { child, route };
        let started = Instant::now();
        while std::net::TcpStream::connect(api).is_err() {
            if let Some(status) = server.child.try_wait()? {
                anyhow::bail!(
                    "the server exited ({status}); see {}",
                    run_dir.join("server.log").display()
                );
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(60),
                "the server did not listen within 60 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then wait (it flushes and exits).
    fn stop(mut self) -> anyhow::Result<()> {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn percentile_ms(sorted_us: &[u64], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return f64::NAN;
    }
    sorted_us[((sorted_us.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0
}

struct RunResult {
    deliveries_per_s: f64,
    ingest_per_s: f64,
    answer_p50_ms: f64,
    answer_p99_ms: f64,
    delivery_p50_ms: f64,
    delivery_p99_ms: f64,
    delivered_at_last_post: u64,
    delivered: u64,
    refused: u64,
    rss_mib: f64,
    cpu_ms_per_delivery: f64,
    machine_cpu_ms_per_delivery: f64,
    load_tool_cpu_ms_per_delivery: f64,
}

/// POSTs the JSON `body` to `uri`: the answer's status and body (empty if
/// it could not be read).
async fn post_json(
    client: &Client<HttpConnector, Full<Bytes>>,
    uri: &str,
    authorization: Option<&str>,
    body: String,
) -> anyhow::Result<(hyper::StatusCode, Bytes)> {
    let mut request = hyper::Request::post(uri).header("content-type", "application/json");
    if let Some(authorization) = authorization {
        request = request.header("authorization", authorization);
    }
    let answer = client
        .request(request.body(Full::new(Bytes::from(body)))?)
        .await?;
    let status = answer.status();
    let text = answer
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    Ok((status, text))
}

/// Posts events on `route`: whether they were accepted.
async fn post(
    client: &Client<HttpConnector, Full<Bytes>>,
    route: &IngestRoute,
    body: String,
) -> bool {
    let answer = post_json(client, &route.uri, route.authorization.as_deref(), body).await;
    // Both hookhost and svix answer 202 Accepted.
    matches!(answer, Ok((status, _)) if status == 202)
}

async fn load(options: &BenchOptions, routes: &[IngestRoute], sink: &Sink) -> RunResult {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(http);
    let next = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let pad = "x".repeat(options.payload_bytes);
    let started = Instant::now();
    let per_client_interval = options.rate.map(|rate| {
        Duration::from_secs_f64(options.clients as f64 * options.batch as f64 / rate.max(1) as f64)
    });
    let tasks: Vec<_> = (0..options.clients)
        .map(|i| {
            let (client, next, refused, pad) =
                (client.clone(), next.clone(), refused.clone(), pad.clone());
            let route = routes[i % routes.len()].clone();
            let (total, batch, clients) = (options.events, options.batch as u64, options.clients);
            tokio::spawn(async move {
                let mut answers_us = Vec::new();
                // Client i starts i/N of an interval after the first: paced
                // clients then post evenly spread over time, where clients
                // started together would post in bursts of N.
                let mut ticker = per_client_interval.map(|every| {
                    let offset = every.mul_f64(i as f64 / clients as f64);
                    tokio::time::interval_at(tokio::time::Instant::now() + offset, every)
                });
                loop {
                    if let Some(t) = &mut ticker {
                        t.tick().await;
                    }
                    let first = next.fetch_add(batch, Ordering::Relaxed);
                    if first >= total {
                        break;
                    }
                    let last = (first + batch).min(total);
                    let data: Vec<String> = (first..last)
                        .map(|n| format!(r#"{{"n":{n},"sent_us":{},"pad":"{pad}"}}"#, now_us()))
                        .collect();
                    let t0 = Instant::now();
                    if post(&client, &route, route.body(&data)).await {
                        answers_us.push(t0.elapsed().as_micros() as u64);
                    } else {
                        refused.fetch_add(last - first, Ordering::Relaxed);
                    }
                }
                answers_us
            })
        })
        .collect();
    let mut answers_us = Vec::new();
    for task in tasks {
        if let Ok(mut mine) = task.await {
            answers_us.append(&mut mine);
        }
    }
    let ingest_secs = started.elapsed().as_secs_f64();
    let delivered_at_last_post = sink.delivered.load(Ordering::Relaxed);
    let refused = refused.load(Ordering::Relaxed);
    let expected = options.events - refused;
    while sink.delivered.load(Ordering::Relaxed) < expected
        && started.elapsed() < DRAIN_LIMIT + Duration::from_secs_f64(ingest_secs)
    {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let total_secs = started.elapsed().as_secs_f64();
    let delivered = sink.delivered.load(Ordering::Relaxed);
    answers_us.sort_unstable();
    let mut latencies: Vec<u64> = sink
        .sent_and_latency_us
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|&(_, latency)| latency)
        .collect();
    latencies.sort_unstable();
    RunResult {
        deliveries_per_s: delivered as f64 / total_secs,
        ingest_per_s: expected as f64 / ingest_secs,
        answer_p50_ms: percentile_ms(&answers_us, 0.5),
        answer_p99_ms: percentile_ms(&answers_us, 0.99),
        delivery_p50_ms: percentile_ms(&latencies, 0.5),
        delivery_p99_ms: percentile_ms(&latencies, 0.99),
        delivered_at_last_post,
        delivered,
        refused,
        rss_mib: 0.0,
        cpu_ms_per_delivery: 0.0,
        machine_cpu_ms_per_delivery: 0.0,
        load_tool_cpu_ms_per_delivery: 0.0,
    }
}

pub fn bench(options: BenchOptions) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        options.clients > 0 && options.batch > 0 && options.runs > 0 && options.nodes > 0,
        "--clients, --batch, --runs and --nodes must be at least 1"
    );
    anyhow::ensure!(
        options.nodes == 1 || options.postgres.is_some(),
        "--nodes needs --postgres: nodes share a PostgreSQL schema"
    );
    if options.svix_server.is_some() {
        anyhow::ensure!(
            options.batch == 1 && options.nodes == 1 && options.data.is_none(),
            "--svix-server takes single events (svix has no batch ingest) on one node, without --data"
        );
        anyhow::ensure!(
            options.postgres.as_deref().is_some_and(
                |url| url.starts_with("postgres://") || url.starts_with("postgresql://")
            ),
            "--svix-server needs --postgres as a postgres:// URL (svix's store)"
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let scratch = tempfile_dir()?;
    let shape = match options.rate {
        Some(rate) => format!("paced at {rate} events/s"),
        None => "closed loop".into(),
    };
    println!(
        "hookhost bench: {} events, {} clients, {} per request, {shape}, ~{} B of padding per event, {} run(s){}{}\n",
        options.events,
        options.clients,
        options.batch,
        options.payload_bytes,
        options.runs,
        options
            .data
            .as_ref()
            .map_or(String::new(), |d| format!(", data kept in {}", d.display())),
        match (&options.postgres, options.nodes) {
            _ if options.svix_server.is_some() => ", svix-server on PostgreSQL".into(),
            (None, _) => String::new(),
            (Some(_), 1) => ", store on PostgreSQL".into(),
            (Some(_), n) => format!(", {n} nodes on one PostgreSQL schema"),
        }
    );
    println!(
        "| run | deliveries/s | ingest events/s | ingest answer p50 / p99 | ingest → delivery p50 / p99 | delivered at last POST | delivered | RSS at end | CPU per delivery | machine CPU per delivery | load tool CPU per delivery |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let mut all_delivered = true;
    let mut latency_log = match &options.latency_log {
        Some(path) => {
            let mut file = std::io::BufWriter::new(
                std::fs::File::create(path).with_context(|| format!("{}", path.display()))?,
            );
            writeln!(file, "run,sent_ms,latency_ms")?;
            Some(file)
        }
        None => None,
    };
    let binary = match &options.server_bin {
        Some(path) => path.clone(),
        None => std::env::current_exe()?,
    };
    for run in 1..=options.runs {
        let run_dir = scratch.join(format!("run{run}"));
        std::fs::create_dir_all(&run_dir)?;
        let data = options.data.clone().unwrap_or_else(|| run_dir.join("db"));
        let sink = Arc::new(Sink::default());
        let receiver = start_receiver(sink.clone())?;
        let mut extra = options.subscription_extra.clone();
        if let Some(url) = &options.postgres {
            let schema = match options.data {
                Some(_) => "hookhost_bench".to_string(),
                None => bench_schema(run),
            };
            extra.push_str(&format!(
                "\n[store]\nbackend = \"postgres\"\nurl = {}\nschema = \"{schema}\"\n",
                toml_string(url)
            ));
        }
        let mut servers = Vec::with_capacity(options.nodes);
        if let (Some(svix), Some(url)) = (&options.svix_server, &options.postgres) {
            servers.push(runtime.block_on(svix::start(svix, &run_dir, url, receiver, run))?);
        } else {
            for node in 0..options.nodes {
                let (dir, data) = match options.nodes {
                    1 => (run_dir.clone(), data.clone()),
                    _ => (
                        run_dir.join(format!("node{node}")),
                        data.join(format!("node{node}")),
                    ),
                };
                servers.push(Server::start(
                    &binary,
                    &dir,
                    &data,
                    receiver,
                    &options.server_extra,
                    &extra,
                )?);
            }
        }
        let pids: Vec<u32> = servers.iter().map(Server::pid).collect();
        let routes: Vec<IngestRoute> = servers.iter().map(|s| s.route.clone()).collect();
        // The servers' sum of one reading (0 for one that cannot be read).
        let total = |read: fn(Process) -> Option<u64>| -> u64 {
            pids.iter().filter_map(|&pid| read(Process::Pid(pid))).sum()
        };
        let cpu_before = total(Process::cpu_ms);
        let machine_before = process_stats::machine_busy_ms().unwrap_or(0);
        let load_tool_before = Process::Current.cpu_ms().unwrap_or(0);
        let mut result = runtime.block_on(load(&options, &routes, &sink));
        result.rss_mib = total(Process::rss_kib) as f64 / 1024.0;
        let cpu_after = total(Process::cpu_ms);
        let machine_after = process_stats::machine_busy_ms().unwrap_or(0);
        let load_tool_after = Process::Current.cpu_ms().unwrap_or(0);
        let per_delivery = |ms: u64| ms as f64 / result.delivered.max(1) as f64;
        result.cpu_ms_per_delivery = per_delivery(cpu_after.saturating_sub(cpu_before));
        result.machine_cpu_ms_per_delivery =
            per_delivery(machine_after.saturating_sub(machine_before));
        result.load_tool_cpu_ms_per_delivery =
            per_delivery(load_tool_after.saturating_sub(load_tool_before));
        for server in servers {
            server.stop()?;
        }
        if let (Some(url), None, None) = (&options.postgres, &options.data, &options.svix_server) {
            // A fresh schema per run: dropped once read, so that runs do not
            // pile up events in the database they were pointed at.
            drop_schema(url, bench_schema(run))?;
        }
        if let Some(file) = &mut latency_log {
            write_latencies(file, run, &sink)?;
        }
        let expected = options.events - result.refused;
        all_delivered &= result.delivered >= expected;
        println!(
            "| {run} | {:.0} | {:.0} | {:.2} / {:.2} ms | {:.1} / {:.1} ms | {} of {expected} | {}{} | {:.0} MiB | {:.3} ms | {:.3} ms | {:.3} ms |",
            result.deliveries_per_s,
            result.ingest_per_s,
            result.answer_p50_ms,
            result.answer_p99_ms,
            result.delivery_p50_ms,
            result.delivery_p99_ms,
            result.delivered_at_last_post,
            result.delivered,
            if result.refused > 0 {
                format!(" ({} refused)", result.refused)
            } else {
                String::new()
            },
            result.rss_mib,
            result.cpu_ms_per_delivery,
            result.machine_cpu_ms_per_delivery,
            result.load_tool_cpu_ms_per_delivery,
        );
    }
    let _ = std::fs::remove_dir_all(&scratch);
    if !all_delivered {
        eprintln!("not every acknowledged event was delivered");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// The schema of run `run` when it starts on a fresh one.
fn bench_schema(run: usize) -> String {
    format!("hookhost_bench_{}_{run}", std::process::id())
}

fn drop_schema(url: &str, schema: String) -> anyhow::Result<()> {
    let store = hookhost_core::store::postgres::PgStore::open(
        &hookhost_core::store::postgres::PgSettings {
            url: url.to_string(),
            schema,
            pool_size: 1,
            tls_ca_file: None,
        },
    )?;
    Ok(store.drop_schema()?)
}

/// One run's deliveries as CSV rows, in the order they were sent.
fn write_latencies(out: &mut impl Write, run: usize, sink: &Sink) -> std::io::Result<()> {
    let mut rows = sink
        .sent_and_latency_us
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    rows.sort_unstable();
    let first = rows.first().map_or(0, |&(sent, _)| sent);
    for (sent, latency) in rows {
        writeln!(
            out,
            "{run},{:.3},{:.3}",
            (sent - first) as f64 / 1000.0,
            latency as f64 / 1000.0
        )?;
    }
    out.flush()
}

/// `text` as a TOML basic string.
fn toml_string(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_default()
}

/// A scratch folder under the system's temporary folder.
fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("hookhost-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_receiver_reads_the_send_time_from_a_delivered_body() {
        let body = br#"{"type":"report","data":{"n":7,"sent_us":1765000000123456,"pad":"xx"}}"#;
        assert_eq!(sent_us(body), Some(1_765_000_000_123_456));
        assert_eq!(sent_us(br#"{"n":7,"pad":"xx"}"#), None);
        assert_eq!(sent_us(br#"{"sent_us":"soon"}"#), None);
    }

    #[test]
    fn bodies_wrap_the_data_in_each_servers_envelope() {
        let data = [r#"{"n":1}"#.to_string(), r#"{"n":2}"#.to_string()];
        let hookhost = IngestRoute::hookhost(SocketAddr::from(([127, 0, 0, 1], 1)));
        assert_eq!(
            hookhost.body(&data[..1]),
            r#"{"type":"bench","data":{"n":1}}"#
        );
        assert_eq!(
            hookhost.body(&data),
            r#"[{"type":"bench","data":{"n":1}},{"type":"bench","data":{"n":2}}]"#
        );
        let svix = IngestRoute {
            envelope: Envelope::Svix,
            ..hookhost
        };
        let body: serde_json::Value = serde_json::from_str(&svix.body(&data[..1])).unwrap();
        assert_eq!(
            body,
            serde_json::json!({ "eventType": "bench", "payload": { "n": 1 } })
        );
    }
}
