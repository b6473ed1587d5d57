//! The sled store's own cost per delivery (a load tool, not a timed test):
//! what the pipeline writes per event (`complete_pipeline`, chunks of 512)
//! and what the job-state writer writes when the delivery succeeds
//! (`update_jobs`, chunks of 256), on one thread with nothing else running,
//! so the figure is the store's CPU, not the machine's contention. Prints
//! µs of CPU and of wall time per event for each phase, the data folder's
//! size and the process's RSS. Method and figures: BENCHMARKS.md.
//! `BENCH_EVENTS=N` (default 100,000); `BENCH_CACHE_MIB=N` sets sled's page
//! cache (default: the server's default); `BENCH_COMPRESS=1` compresses
//! the log (`server.compress_store`).

use std::time::Instant;

use hookhost_core::model::{Attempt, Job, JobStatus, Processed, StoredEvent, job_id};
use hookhost_core::process_stats::Process;
use hookhost_core::store::sled::{DEFAULT_CACHE_MIB, SledSettings, SledStore};
use hookhost_core::store::{DeliveryQueue, EventStore, Store};

mod common;
use common::{dir_bytes, rss_mib};

/// CPU time of this process (user + system), in µs.
fn cpu_us() -> u64 {
    Process::Current.cpu_ms().unwrap_or(0) * 1000
}

/// An event as `hookhost bench` sends it: ~200 bytes of padding.
fn event(n: u64, at_ms: u64) -> StoredEvent {
    let data = serde_json::json!({ "n": n, "sent_us": at_ms * 1000, "pad": "x".repeat(200) });
    StoredEvent {
        id: format!("evt_{n:012}"),
        event_type: "bench".into(),
        timestamp: "2026-12-03T00:00:00Z".into(),
        data: data.to_string(),
        received_at_ms: at_ms,
        errors: Vec::new(),
        plugin_decisions: Default::default(),
    }
}

fn job_for(event: &StoredEvent) -> Job {
    Job {
        id: job_id(&event.id, event.received_at_ms, "bench"),
        event_id: event.id.clone(),
        subscription_id: "bench".into(),
        event_type: event.event_type.clone(),
        data: event.data.clone(),
        status: JobStatus::Pending,
        attempts: Vec::new(),
        attempts_in_round: 0,
        next_attempt_at_ms: event.received_at_ms,
        created_at_ms: event.received_at_ms,
        error: None,
        merged_events: Vec::new(),
        order: None,
    }
}

struct Phase {
    cpu_us: u64,
    wall_us: u64,
}

fn timed(f: impl FnOnce()) -> Phase {
    let (cpu, wall) = (cpu_us(), Instant::now());
    f();
    Phase {
        cpu_us: cpu_us() - cpu,
        wall_us: wall.elapsed().as_micros() as u64,
    }
}

fn main() {
    let events: u64 = std::env::var("BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let cache_mib: u64 = std::env::var("BENCH_CACHE_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CACHE_MIB);
    // BENCH_COMPRESS=1: the log zstd-compressed.
    let compress = std::env::var("BENCH_COMPRESS").is_ok_and(|v| v == "1");
    let settings = SledSettings {
        cache_mib,
        compress,
    };
    let store = SledStore::open_with(dir.path(), settings).expect("open sled");
    let start_ms = 1_800_000_000_000;

    let all: Vec<StoredEvent> = (0..events).map(|n| event(n, start_ms + n / 10)).collect();
    let mut jobs: Vec<Job> = all.iter().map(job_for).collect();
    let pipeline = timed(|| {
        for chunk in all.chunks(512) {
            let processed: Vec<Processed> = chunk
                .iter()
                .map(|e| {
                    let mut p = Processed::new(e.clone());
                    p.jobs.push(job_for(e));
                    p
                })
                .collect();
            store.complete_pipeline(&processed).expect("pipeline write");
        }
    });
    for job in &mut jobs {
        job.status = JobStatus::Delivered;
        job.attempts.push(Attempt {
            at_ms: job.created_at_ms + 3,
            status: Some(204),
            latency_ms: 0.4,
            error: None,
            sent_sha256: Some("0123456789abcdef".into()),
        });
        job.attempts_in_round = 1;
    }
    let delivered = timed(|| {
        for chunk in jobs.chunks(256) {
            store.update_jobs(chunk).expect("state write");
        }
    });
    let flushed = timed(|| store.flush().expect("flush"));
    let json_bytes: u64 = all.iter().map(|e| e.data.len() as u64).sum();
    let per = |us: u64| us as f64 / events as f64;
    println!(
        "{events} events, one delivery each, sled store (cache {cache_mib} MiB, compressed: {compress}), one thread"
    );
    println!("| phase | CPU µs per event | wall µs per event |");
    println!("|---|---|---|");
    for (name, p) in [
        ("pipeline outcome (`complete_pipeline`)", &pipeline),
        ("delivered state (`update_jobs`)", &delivered),
        ("flush", &flushed),
    ] {
        println!("| {name} | {:.1} | {:.1} |", per(p.cpu_us), per(p.wall_us));
    }
    println!(
        "data folder {:.1} MiB ({:.1}× the events' data), RSS {:.0} MiB",
        dir_bytes(dir.path()) as f64 / 1048576.0,
        dir_bytes(dir.path()) as f64 / json_bytes as f64,
        rss_mib()
    );
}
