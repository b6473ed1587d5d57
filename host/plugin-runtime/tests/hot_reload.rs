//! Hot reload under load: 4 tasks call plugin `x` in a loop while its file is
//! added, replaced by rename, replaced in place, and deleted.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use crate::util::{Host, bikeep_event, built_plugin, eventually};
use hookhost_plugin_runtime::PluginsConfig;
use hookhost_plugin_runtime::{CallError, Decision, Watcher};

/// What a call to `x` showed, as a small code the tasks publish.
const ABSENT: u8 = 0;
const FILTER: u8 = 1; // alarm-filter
const FILTER_TRANSFORM: u8 = 2; // v1-compat
const ROUTER: u8 = 3; // alarm-router

fn behaviour(d: &Decision) -> u8 {
    match (
        d.filter.is_some(),
        d.transform.is_some(),
        d.router.is_some(),
    ) {
        (true, false, false) => FILTER,
        (true, true, false) => FILTER_TRANSFORM,
        (false, false, true) => ROUTER,
        other => panic!("unexpected roles {other:?}"),
    }
}

/// Phases, set by the test before each file operation; a task may see "not
/// present" only before the add and once the delete has begun.
const BEFORE_ADD: u8 = 0;
const PRESENT: u8 = 1;
const DELETING: u8 = 2;

struct Shared {
    phase: AtomicU8,
    seen: AtomicU8,
    calls: AtomicU64,
    stop: AtomicBool,
    failures: std::sync::Mutex<Vec<String>>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reload_under_load_is_atomic_and_quick() {
    let host = Host::new(PluginsConfig::default());
    let dir = host.dir.path().to_owned();
    let _watcher = Watcher::start(host.registry.clone(), &dir, Duration::from_millis(50)).unwrap();
    let shared = Arc::new(Shared {
        phase: AtomicU8::new(BEFORE_ADD),
        seen: AtomicU8::new(ABSENT),
        calls: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        failures: Default::default(),
    });

    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let registry = host.registry.clone();
            let shared = shared.clone();
            tokio::spawn(async move {
                let event = bikeep_event("alarm-case-open");
                while !shared.stop.load(Ordering::Relaxed) {
                    let phase = shared.phase.load(Ordering::SeqCst);
                    let outcome = match registry.get("x") {
                        Ok(plugin) => {
                            let event = event.clone();
                            plugin.call_async(move |p| Ok(p.decide(&event, ""))).await
                        }
                        Err(e) => Err(e),
                    };
                    shared.calls.fetch_add(1, Ordering::Relaxed);
                    let failure = match outcome {
                        Ok(d) if d.has_error() => Some(format!("{d:?}")),
                        Ok(d) => {
                            shared.seen.store(behaviour(&d), Ordering::SeqCst);
                            None
                        }
                        Err(CallError::NotPresent(_)) if phase != PRESENT => {
                            shared.seen.store(ABSENT, Ordering::SeqCst);
                            None
                        }
                        Err(e) => Some(e.to_string()),
                    };
                    if let Some(f) = failure {
                        shared
                            .failures
                            .lock()
                            .unwrap()
                            .push(format!("phase {phase}: {f}"));
                    }
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();

    let x = dir.join("x.wasm");
    // Seen means seen: how long it took is printed, not asserted (the reload
    // latency is measured by the plugin benchmark, not here).
    let wait_for = |want: u8, what: &'static str| {
        let shared = shared.clone();
        async move {
            let took = eventually(what, || shared.seen.load(Ordering::SeqCst) == want).await;
            println!("{what}: new behaviour seen after {took:?}");
        }
    };
    tokio::time::sleep(Duration::from_millis(100)).await;

    // 1. Add: a plain copy into the folder.
    shared.phase.store(BEFORE_ADD, Ordering::SeqCst);
    std::fs::copy(built_plugin("alarm-filter"), &x).unwrap();
    wait_for(FILTER, "add").await;
    shared.phase.store(PRESENT, Ordering::SeqCst);

    // 2. Replace by atomic rename, as `mv` and build tools do.
    let tmp = dir.join(".x.wasm.partial");
    std::fs::copy(built_plugin("v1-compat"), &tmp).unwrap();
    std::fs::rename(&tmp, &x).unwrap();
    wait_for(FILTER_TRANSFORM, "replace by rename").await;

    // 3. Replace in place, written in slow chunks like a copy over a slow disk.
    let (src, dest) = (built_plugin("alarm-router"), x.clone());
    tokio::task::spawn_blocking(move || write_slowly(&src, &dest))
        .await
        .unwrap();
    wait_for(ROUTER, "replace in place").await;

    // 4. Delete.
    shared.phase.store(DELETING, Ordering::SeqCst);
    std::fs::remove_file(&x).unwrap();
    wait_for(ABSENT, "delete").await;

    shared.stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let failures = shared.failures.lock().unwrap();
    let calls = shared.calls.load(Ordering::Relaxed);
    println!("{calls} calls, {} failures", failures.len());
    assert!(
        calls > 1000,
        "the tasks kept calling throughout ({calls} calls)"
    );
    assert!(
        failures.is_empty(),
        "calls failed: {:?}",
        &failures[..failures.len().min(5)]
    );
    // The partially written file was never recorded as a broken plugin.
    assert!(
        host.registry
            .status()
            .iter()
            .all(|s| s.last_error.is_none())
    );
}

/// Overwrites `dest` with `src` in 4 chunks, 80 ms apart (longer than the
/// 50 ms debounce): the watcher sees partial files first and must neither
/// load them nor report them broken.
fn write_slowly(src: &Path, dest: &Path) {
    use std::io::Write;
    let bytes = std::fs::read(src).unwrap();
    let mut file = std::fs::File::create(dest).unwrap();
    for chunk in bytes.chunks(bytes.len().div_ceil(4)) {
        file.write_all(chunk).unwrap();
        file.flush().unwrap();
        std::thread::sleep(Duration::from_millis(80));
    }
}
