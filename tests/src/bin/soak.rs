//! Soak: the real `hookhost` binary under steady ingest for a long time,
//! delivering to a flaky receiver (every 20th answer a 503, every 20th a
//! slow 200), with the server's resident memory and open files sampled
//! every 10 s. Memory and file descriptors must be flat after warm-up.
//!
//! `cargo run --release -p hookhost-tests --bin soak -- [MINUTES] [EVENTS/S] [OUT DIR] [CACHE MIB] [RETENTION] [COUNT EVERY]`
//! (defaults 10, 200, target/soak, 32, the server's defaults). RETENTION
//! (e.g. `2m`; `default`: the server's) sets every `[retention]` period,
//! with a pass every 10 s, so a short run reaches the steady state of a
//! long one. COUNT EVERY (e.g. `4m`) sets `retention.count_every`, when the
//! stored records are counted. Writes `soak.csv`
//! and `soak.svg` to the folder and exits non-zero when memory or files
//! grew after warm-up, or when an acknowledged event was not delivered by
//! the end. The store's size on disk (data folder without the journal) is
//! sampled too. With `SOAK_KEEP_DATA` set, the data folder is kept and
//! its path printed.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use hookhost_core::process_stats::Process;
use hookhost_tests::http::post;
use hookhost_tests::{PATIENCE, Running};
use serde_json::{Value, json};

const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// Samples before this are warm-up (caches filling, pools growing).
const WARM_UP: Duration = Duration::from_secs(180);
/// The server's store cache (`server.cache_mib`) during the soak, unless
/// given.
const DEFAULT_CACHE_MIB: u64 = 32;
/// Growth of resident memory after warm-up that still counts as flat.
const RSS_SLACK: f64 = 0.15;

#[derive(Default)]
struct Flaky {
    answered: AtomicU64,
    /// Distinct webhook-ids answered 2xx.
    delivered: Mutex<HashSet<String>>,
}

/// Every 20th request 503, every 20th (offset) a 200 after 200 ms.
async fn flaky(
    axum::extract::State(state): axum::extract::State<Arc<Flaky>>,
    headers: HeaderMap,
    _body: axum::body::Bytes,
) -> StatusCode {
    let n = state.answered.fetch_add(1, Ordering::Relaxed);
    match n % 20 {
        0 => return StatusCode::SERVICE_UNAVAILABLE,
        10 => tokio::time::sleep(Duration::from_millis(200)).await,
        _ => {}
    }
    if let Some(id) = headers.get("webhook-id").and_then(|v| v.to_str().ok()) {
        state
            .delivered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_string());
    }
    StatusCode::NO_CONTENT
}

fn start_receiver(state: Arc<Flaky>) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let _ = tx.send(listener.local_addr().expect("addr"));
            let app = axum::Router::new()
                .route("/hook", axum::routing::post(flaky))
                .with_state(state);
            let _ = axum::serve(listener, app).await;
        });
    });
    rx.recv().expect("receiver address")
}

struct Sample {
    at_s: f64,
    rss_kib: u64,
    fds: usize,
    /// Bytes of the store's files in the data folder (not the journal,
    /// whose 64 MiB segments come and go).
    disk_bytes: u64,
    acknowledged: u64,
    delivered: usize,
}

/// Bytes of the files under `dir`, but its `journal` folder.
fn folder_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .flatten()
            .filter(|e| e.file_name() != "journal")
            .map(|e| match e.metadata() {
                Ok(m) if m.is_dir() => folder_bytes(&e.path()),
                Ok(m) => m.len(),
                Err(_) => 0,
            })
            .sum()
    })
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let minutes: f64 = args.first().map_or(Ok(10.0), |a| a.parse())?;
    let rate: u64 = args.get(1).map_or(Ok(200), |a| a.parse())?;
    let out = PathBuf::from(args.get(2).map_or("target/soak", String::as_str));
    let cache_mib: u64 = args.get(3).map_or(Ok(DEFAULT_CACHE_MIB), |a| a.parse())?;
    let mut retention = match args.get(4).filter(|p| *p != "default") {
        Some(period) => format!(
            "[retention]\ndelivered = \"{period}\"\ndead_letters = \"{period}\"\n\
             events = \"{period}\"\nevery = \"10s\"\n"
        ),
        None => "[retention]\n".to_string(),
    };
    if let Some(count_every) = args.get(5) {
        retention.push_str(&format!("count_every = \"{count_every}\"\n"));
    }
    std::fs::create_dir_all(&out)?;
    let run_for = Duration::from_secs_f64(minutes * 60.0);

    let receiver = Arc::new(Flaky::default());
    let addr = start_receiver(receiver.clone());
    let root = tempfile::tempdir()?;
    // A small store cache: it fills during warm-up, so what grows after it
    // is not the cache (which is bounded by `cache_mib` anyway).
    let config = hookhost_tests::write_config(
        root.path(),
        "",
        &format!("cache_mib = {cache_mib}\n"),
        &format!(
            "[[subscriptions]]\nid = \"flaky\"\nurl = \"http://{addr}/hook\"\ntypes = [\"*\"]\nenvelope = \"plain\"\n\
             secrets = [\"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"]\n\
             intervals = {{ \"*\" = \"direct\" }}\n[subscriptions.retry]\nmax_retries = 5\n{retention}"
        ),
    );
    let mut server = Running::start(&["serve", "--config", &config]);
    let api = server.api_addr(PATIENCE);
    let pid = server.pid();
    eprintln!("soak: {minutes} min at {rate} events/s, server pid {pid}, receiver {addr}");

    // Batches of 10 at a steady pace.
    let acknowledged = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ingest = {
        let (acknowledged, refused, stop) = (acknowledged.clone(), refused.clone(), stop.clone());
        std::thread::spawn(move || {
            let every = Duration::from_secs_f64(10.0 / rate as f64);
            let started = Instant::now();
            let mut batch = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let events: Vec<Value> = (0..10)
                    .map(|i| json!({"type": "report", "data": {"batch": batch, "i": i, "pad": "x".repeat(200)}}))
                    .collect();
                let (status, _) = post(
                    api,
                    "/v1/events",
                    Value::Array(events).to_string().as_bytes(),
                );
                if status == 202 {
                    acknowledged.fetch_add(10, Ordering::Relaxed);
                } else {
                    refused.fetch_add(1, Ordering::Relaxed);
                }
                batch += 1;
                let due = started + every * batch as u32;
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
            }
        })
    };

    let started = Instant::now();
    let mut samples = Vec::new();
    let sample = |samples: &mut Vec<Sample>| {
        let s = Sample {
            at_s: started.elapsed().as_secs_f64(),
            rss_kib: Process::Pid(pid).rss_kib().unwrap_or(0),
            fds: Process::Pid(pid).open_files().unwrap_or(0),
            disk_bytes: folder_bytes(&root.path().join("db")),
            acknowledged: acknowledged.load(Ordering::Relaxed),
            delivered: receiver.delivered.lock().map_or(0, |d| d.len()),
        };
        eprintln!(
            "soak: {:>5.0} s  rss {:>7} KiB  fds {:>4}  disk {:>6} KiB  acknowledged {:>7}  delivered {:>7}",
            s.at_s,
            s.rss_kib,
            s.fds,
            s.disk_bytes / 1024,
            s.acknowledged,
            s.delivered
        );
        samples.push(s);
    };
    sample(&mut samples);
    while started.elapsed() < run_for {
        std::thread::sleep(SAMPLE_EVERY.min(run_for.saturating_sub(started.elapsed())));
        sample(&mut samples);
    }
    stop.store(true, Ordering::Relaxed);
    let _ = ingest.join();
    // Everything acknowledged must arrive (retries included).
    let total = acknowledged.load(Ordering::Relaxed) as usize;
    let drained = Instant::now();
    while receiver.delivered.lock().map_or(0, |d| d.len()) < total && drained.elapsed() < PATIENCE {
        std::thread::sleep(Duration::from_millis(200));
    }
    let delivered = receiver.delivered.lock().map_or(0, |d| d.len());
    let status = server.terminate(PATIENCE);
    if std::env::var_os("SOAK_KEEP_DATA").is_some() {
        // To compact or inspect the store after the run.
        println!("data folder kept: {}", root.keep().join("db").display());
    }

    write_csv(&out.join("soak.csv"), &samples)?;
    write_svg(&out.join("soak.svg"), &samples, rate, cache_mib)?;
    let after: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.at_s >= WARM_UP.as_secs_f64())
        .collect();
    let (first, last) = (after.first(), after.last());
    let rss_growth = match (first, last) {
        (Some(a), Some(b)) if a.rss_kib > 0 => b.rss_kib as f64 / a.rss_kib as f64 - 1.0,
        _ => 0.0,
    };
    let rss_max = after.iter().map(|s| s.rss_kib).max().unwrap_or(0);
    let fds: Vec<usize> = after.iter().map(|s| s.fds).collect();
    let (fd_min, fd_max) = (
        fds.iter().copied().min().unwrap_or(0),
        fds.iter().copied().max().unwrap_or(0),
    );
    println!(
        "soak: {minutes} min, {rate} events/s offered; acknowledged {total}, refused requests {}, \
         delivered {delivered}; after warm-up: RSS {} → {} KiB (max {rss_max}, growth {:+.1} %), \
         open files {fd_min}..{fd_max}; server exit {status}",
        refused.load(Ordering::Relaxed),
        first.map_or(0, |s| s.rss_kib),
        last.map_or(0, |s| s.rss_kib),
        rss_growth * 100.0,
    );
    let mut failed = Vec::new();
    if delivered < total {
        failed.push(format!(
            "{} acknowledged events not delivered",
            total - delivered
        ));
    }
    if rss_growth > RSS_SLACK {
        failed.push(format!(
            "RSS grew {:.1} % after warm-up",
            rss_growth * 100.0
        ));
    }
    if fd_max > fd_min + 16 {
        failed.push(format!(
            "open files ranged {fd_min}..{fd_max} after warm-up"
        ));
    }
    if !status.success() {
        failed.push(format!("server exit status {status}"));
    }
    anyhow::ensure!(failed.is_empty(), "soak failed: {}", failed.join("; "));
    Ok(())
}

fn write_csv(path: &Path, samples: &[Sample]) -> std::io::Result<()> {
    let mut text = String::from("seconds,rss_kib,open_files,store_kib,acknowledged,delivered\n");
    for s in samples {
        text.push_str(&format!(
            "{:.0},{},{},{},{},{}\n",
            s.at_s,
            s.rss_kib,
            s.fds,
            s.disk_bytes / 1024,
            s.acknowledged,
            s.delivered
        ));
    }
    std::fs::write(path, text)
}

/// Three panels over time: resident memory (MiB), open files, data folder (MiB).
fn write_svg(path: &Path, samples: &[Sample], rate: u64, cache_mib: u64) -> std::io::Result<()> {
    let (w, h, pad) = (720.0, 180.0, 48.0);
    let t_max = samples.last().map_or(1.0, |s| s.at_s.max(1.0));
    let panel = |y0: f64, title: &str, values: Vec<f64>, colour: &str| -> String {
        let v_max = values.iter().copied().fold(1.0, f64::max) * 1.1;
        let points: Vec<String> = samples
            .iter()
            .zip(&values)
            .map(|(s, v)| {
                format!(
                    "{:.1},{:.1}",
                    pad + s.at_s / t_max * (w - 2.0 * pad),
                    y0 + h - v / v_max * (h - 20.0)
                )
            })
            .collect();
        let warm = pad + WARM_UP.as_secs_f64().min(t_max) / t_max * (w - 2.0 * pad);
        format!(
            "<text x=\"{pad}\" y=\"{:.0}\" font-size=\"13\">{title} (max {:.0})</text>\
             <line x1=\"{pad}\" y1=\"{:.0}\" x2=\"{:.0}\" y2=\"{:.0}\" stroke=\"#999\"/>\
             <line x1=\"{warm:.1}\" y1=\"{:.0}\" x2=\"{warm:.1}\" y2=\"{:.0}\" stroke=\"#ccc\" stroke-dasharray=\"4\"/>\
             <text x=\"{:.1}\" y=\"{:.0}\" font-size=\"10\" fill=\"#888\">warm-up ends</text>\
             <polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>",
            y0 + 14.0,
            v_max / 1.1,
            y0 + h,
            w - pad,
            y0 + h,
            y0 + 20.0,
            y0 + h,
            warm + 4.0,
            y0 + 30.0,
            points.join(" ")
        )
    };
    let rss = samples.iter().map(|s| s.rss_kib as f64 / 1024.0).collect();
    let fds = samples.iter().map(|s| s.fds as f64).collect();
    let disk = samples
        .iter()
        .map(|s| s.disk_bytes as f64 / (1024.0 * 1024.0))
        .collect();
    let svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{:.0}\" font-family=\"sans-serif\">\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\
         <text x=\"{pad}\" y=\"18\" font-size=\"14\" font-weight=\"bold\">hookhost soak: {rate} events/s, flaky receiver, {:.0} min, cache_mib = {cache_mib}</text>\
         {}{}{}\
         <text x=\"{:.0}\" y=\"{:.0}\" font-size=\"11\" text-anchor=\"end\">seconds → {t_max:.0}</text></svg>\n",
        3.0 * h + 90.0,
        t_max / 60.0,
        panel(24.0, "resident memory, MiB", rss, "#2b6cb0"),
        panel(h + 44.0, "open files", fds, "#c05621"),
        panel(
            2.0 * h + 64.0,
            "store on disk (without the journal), MiB",
            disk,
            "#2f855a"
        ),
        w - pad,
        3.0 * h + 82.0,
    );
    std::fs::write(path, svg)
}
