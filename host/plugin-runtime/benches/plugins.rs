//! Plugin runtime benchmarks; method and figures in BENCHMARKS.md.
//!
//! - per-event cost of `alarm-filter` on a ~1 KB alarm event, for each
//!   isolation mode and instance allocator (median and p10/p90 of batches);
//! - compile time, load time from the compiled cache;
//! - time from a file written into the watched folder to the new version
//!   serving calls;
//! - the alarm filter in Rust, JavaScript and Python (`BENCH_ONLY=languages`).
//!
//! Run with `./dev bench` (release build). `BENCH_QUICK=1` shortens it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hookhost_plugin_runtime::{Allocator, Isolation, PluginsConfig};
use hookhost_plugin_runtime::{Plugin, Registry, Runtime, Watcher};
use sha2::{Digest, Sha256};

mod common;

fn quick() -> bool {
    std::env::var_os("BENCH_QUICK").is_some()
}

/// Percentiles of a sample, sorted in place.
fn pct(samples: &mut [f64], p: f64) -> f64 {
    samples.sort_by(|a, b| a.total_cmp(b));
    samples[((samples.len() - 1) as f64 * p).round() as usize]
}

fn row(label: &str, unit: &str, samples: &mut [f64]) {
    println!(
        "| {label} | {:.2} {unit} | {:.2} {unit} | {:.2} {unit} | {} |",
        pct(samples, 0.5),
        pct(samples, 0.1),
        pct(samples, 0.9),
        samples.len()
    );
}

fn load(file: &Path, isolation: Isolation, allocator: Allocator) -> Arc<Plugin> {
    let config = PluginsConfig {
        isolation,
        allocator,
        ..Default::default()
    };
    let registry = Registry::new(Runtime::new(&config).expect("runtime"));
    registry.reload(file).expect("load");
    registry.get("alarm-filter").expect("loaded")
}

fn per_event(file: &Path) {
    let event = common::alarm_1kb();
    let config = r#"{"categories": ["security"]}"#;
    let (batches, per_batch) = if quick() { (30, 200) } else { (300, 1000) };
    println!(
        "\n### Per-event cost, alarm-filter, {} B of event data\n",
        event.data.len()
    );
    println!("Each sample is the mean of a batch of {per_batch} calls; {batches} batches.\n");
    println!("| mode | median | p10 | p90 | batches |\n|---|---|---|---|---|");
    for (label, isolation, allocator) in [
        (
            "reuse, pooling allocator",
            Isolation::Reuse,
            Allocator::Pooling,
        ),
        (
            "fresh, pooling allocator",
            Isolation::Fresh,
            Allocator::Pooling,
        ),
        (
            "reuse, on-demand allocator",
            Isolation::Reuse,
            Allocator::OnDemand,
        ),
        (
            "fresh, on-demand allocator",
            Isolation::Fresh,
            Allocator::OnDemand,
        ),
    ] {
        let plugin = load(file, isolation, allocator);
        for _ in 0..per_batch {
            assert!(plugin.keep(&event, config).expect("call"));
        }
        let mut samples: Vec<f64> = (0..batches)
            .map(|_| {
                let start = Instant::now();
                for _ in 0..per_batch {
                    std::hint::black_box(plugin.keep(&event, config).expect("call"));
                }
                start.elapsed().as_secs_f64() * 1e6 / per_batch as f64
            })
            .collect();
        row(label, "µs", &mut samples);
    }
}

fn load_times(file: &Path) {
    let bytes = std::fs::read(file).expect("read plugin");
    let sha: [u8; 32] = Sha256::digest(&bytes).into();
    let runs = if quick() { 5 } else { 20 };
    println!(
        "\n### Loading alarm-filter ({} KB component)\n",
        bytes.len() / 1024
    );
    println!("| step | median | p10 | p90 | runs |\n|---|---|---|---|---|");
    let cache = tempfile::tempdir().expect("tempdir");
    let config = PluginsConfig {
        cache_dir: Some(cache.path().to_owned()),
        ..Default::default()
    };
    let runtime = Runtime::new(&config).expect("runtime");
    let mut compile = Vec::new();
    let mut cached = Vec::new();
    for _ in 0..runs {
        for entry in std::fs::read_dir(cache.path()).expect("cache dir") {
            std::fs::remove_file(entry.expect("entry").path()).expect("clear cache");
        }
        let start = Instant::now();
        let p = runtime
            .load("alarm-filter", file, &bytes, sha)
            .expect("compile");
        compile.push(start.elapsed().as_secs_f64() * 1e3);
        assert!(!p.load_info().from_cache);
        let start = Instant::now();
        let p = runtime
            .load("alarm-filter", file, &bytes, sha)
            .expect("cache load");
        cached.push(start.elapsed().as_secs_f64() * 1e3);
        assert!(p.load_info().from_cache);
    }
    row(
        "compile + check + pre-link + first instance",
        "ms",
        &mut compile,
    );
    row("same, from the compiled cache", "ms", &mut cached);
}

/// Writes alternating versions into a watched folder (by rename, as build
/// tools do) and times until a lookup returns the new version.
fn reload_latency(a: &Path, b: &Path) {
    let runs = if quick() { 5 } else { 20 };
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = tempfile::tempdir().expect("tempdir");
    println!("\n### File written → new version serving (watcher, 50 ms debounce)\n");
    println!("| case | median | p10 | p90 | runs |\n|---|---|---|---|---|");
    for (label, cache_dir) in [
        ("compile", None),
        ("from cache", Some(cache.path().to_owned())),
    ] {
        let config = PluginsConfig {
            dir: dir.path().to_owned(),
            cache_dir,
            ..Default::default()
        };
        let registry = Registry::new(Runtime::new(&config).expect("runtime"));
        let _watcher =
            Watcher::start(registry.clone(), dir.path(), Duration::from_millis(50)).expect("watch");
        let target = dir.path().join("x.wasm");
        let mut samples = Vec::new();
        for i in 0..runs {
            let src: &PathBuf = if i % 2 == 0 {
                &a.to_owned()
            } else {
                &b.to_owned()
            };
            let want: [u8; 32] = Sha256::digest(std::fs::read(src).expect("read")).into();
            let tmp = dir.path().join(".x.tmp");
            std::fs::copy(src, &tmp).expect("copy");
            let start = Instant::now();
            std::fs::rename(&tmp, &target).expect("rename");
            loop {
                if registry.get("x").is_ok_and(|p| p.sha256() == &want) {
                    break;
                }
                assert!(
                    start.elapsed() < Duration::from_secs(5),
                    "reload did not happen"
                );
                std::thread::sleep(Duration::from_micros(500));
            }
            samples.push(start.elapsed().as_secs_f64() * 1e3);
            // Let the watcher settle before the next write.
            std::thread::sleep(Duration::from_millis(100));
        }
        // From-cache runs after the first two (one per version) hit the cache.
        row(label, "ms", &mut samples);
    }
}

/// The alarm filter in each plugin language: component size, compile and
/// cache-load time, per-event cost in a reused instance, and a soak of
/// 100,000 calls in one instance at the default limits.
fn languages() {
    let plugins = [
        ("Rust (SDK)", common::built_plugin_named("alarm-filter")),
        (
            "JavaScript (QuickJS)",
            common::built_language_plugin("alarm-filter-js"),
        ),
        (
            "Python (componentize-py)",
            common::built_language_plugin("alarm-filter-py"),
        ),
    ];
    let event = common::alarm_1kb();
    let config = r#"{"categories": ["security"]}"#;
    let (batches, per_batch) = if quick() { (30, 200) } else { (300, 1000) };
    let (fresh_batches, fresh_per_batch) = if quick() { (5, 20) } else { (30, 100) };
    let soak_calls = if quick() { 10_000 } else { 100_000 };
    let runs = if quick() { 2 } else { 5 };
    println!("\n### The alarm filter per language\n");
    println!(
        "Per event: median (p10–p90) of {batches} batches of {per_batch} calls, reuse mode, \
         pooling allocator, {} B of event data. Compile and cache load: median of {runs} runs. \
         Fresh: median of {} batches of {} calls, a new instance each. \
         Soak: {soak_calls} more calls in the same instance at the default limits.\n",
        event.data.len(),
        fresh_batches,
        fresh_per_batch,
    );
    println!(
        "| plugin | size | compile | from cache | per event (reuse) | per event (fresh) | soak failures |\n|---|---|---|---|---|---|---|"
    );
    for (label, file) in plugins {
        let bytes = std::fs::read(&file).expect("read plugin");
        let sha: [u8; 32] = Sha256::digest(&bytes).into();
        let name = file
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("name")
            .to_owned();
        let cache = tempfile::tempdir().expect("tempdir");
        let runtime = Runtime::new(&PluginsConfig {
            cache_dir: Some(cache.path().to_owned()),
            ..Default::default()
        })
        .expect("runtime");
        let mut compile = Vec::new();
        let mut cached = Vec::new();
        for _ in 0..runs {
            for entry in std::fs::read_dir(cache.path()).expect("cache dir") {
                std::fs::remove_file(entry.expect("entry").path()).expect("clear cache");
            }
            let start = Instant::now();
            let p = runtime.load(&name, &file, &bytes, sha).expect("compile");
            compile.push(start.elapsed().as_secs_f64() * 1e3);
            assert!(!p.load_info().from_cache);
            let start = Instant::now();
            let p = runtime.load(&name, &file, &bytes, sha).expect("cache load");
            cached.push(start.elapsed().as_secs_f64() * 1e3);
            assert!(p.load_info().from_cache);
        }
        let plugin = runtime.load(&name, &file, &bytes, sha).expect("load");
        for _ in 0..per_batch {
            assert!(plugin.keep(&event, config).expect("call"));
        }
        let mut per_event: Vec<f64> = (0..batches)
            .map(|_| {
                let start = Instant::now();
                for _ in 0..per_batch {
                    std::hint::black_box(plugin.keep(&event, config).expect("call"));
                }
                start.elapsed().as_secs_f64() * 1e6 / per_batch as f64
            })
            .collect();
        let failures = (0..soak_calls)
            .filter(|_| !matches!(plugin.keep(&event, config), Ok(true)))
            .count();
        // A new instance per call: what `isolation = "fresh"` costs per language.
        let fresh = Runtime::new(&PluginsConfig {
            isolation: Isolation::Fresh,
            cache_dir: Some(cache.path().to_owned()),
            ..Default::default()
        })
        .expect("runtime")
        .load(&name, &file, &bytes, sha)
        .expect("load");
        let mut per_fresh_event: Vec<f64> = (0..fresh_batches)
            .map(|_| {
                let start = Instant::now();
                for _ in 0..fresh_per_batch {
                    std::hint::black_box(fresh.keep(&event, config).expect("call"));
                }
                start.elapsed().as_secs_f64() * 1e6 / fresh_per_batch as f64
            })
            .collect();
        println!(
            "| {label} | {} KB | {:.0} ms | {:.1} ms | {:.1} µs ({:.1}–{:.1}) | {:.0} µs | {failures} of {soak_calls} |",
            bytes.len() / 1024,
            pct(&mut compile, 0.5),
            pct(&mut cached, 0.5),
            pct(&mut per_event, 0.5),
            pct(&mut per_event, 0.1),
            pct(&mut per_event, 0.9),
            pct(&mut per_fresh_event, 0.5),
        );
    }
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is accepted.
    // BENCH_ONLY=languages runs the per-language table alone.
    if std::env::var("BENCH_ONLY").as_deref() == Ok("languages") {
        languages();
        return;
    }
    let filter = common::built_plugin_named("alarm-filter");
    let router = common::built_plugin_named("alarm-router");
    per_event(&filter);
    load_times(&filter);
    reload_latency(&filter, &router);
    languages();
}
