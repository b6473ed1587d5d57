//! Misbehaving plugins: each fault is contained to its own call or file, and
//! the host keeps serving other plugins (and the faulty plugin's next call).

use crate::util::{Host, bikeep_event};
use hookhost_plugin_runtime::{CallError, LoadError};
use hookhost_plugin_runtime::{Isolation, PluginsConfig};

fn host(isolation: Isolation) -> Host {
    let host = Host::new(PluginsConfig {
        isolation,
        ..Default::default()
    });
    host.install("alarm-filter", "alarm-filter");
    host.install("misbehave", "misbehave");
    host
}

/// The other plugin, and the faulty one on a good call, still answer.
fn assert_still_serving(host: &Host) {
    let event = bikeep_event("alarm-case-open");
    let filter = host.registry.get("alarm-filter").unwrap();
    assert!(
        filter
            .keep(&event, r#"{"categories":["security"]}"#)
            .unwrap()
    );
    assert!(
        host.registry
            .get("misbehave")
            .unwrap()
            .keep(&event, "ok")
            .unwrap()
    );
}

fn misbehave(host: &Host, mode: &str) -> CallError {
    let plugin = host.registry.get("misbehave").unwrap();
    plugin
        .keep(&bikeep_event("alarm-case-open"), mode)
        .unwrap_err()
}

#[test]
fn endless_loop_is_stopped_by_the_cpu_limit() {
    for isolation in [Isolation::Reuse, Isolation::Fresh] {
        let host = host(isolation);
        let err = misbehave(&host, "loop");
        assert!(
            matches!(err, CallError::CpuLimit { limit_ms: 10, .. }),
            "{isolation:?}: {err}"
        );
        assert_still_serving(&host);
    }
}

#[test]
fn unbounded_allocation_is_stopped_by_the_memory_limit() {
    for isolation in [Isolation::Reuse, Isolation::Fresh] {
        let host = host(isolation);
        let err = misbehave(&host, "hog");
        assert!(
            matches!(err, CallError::MemoryLimit { limit_mib: 16, .. }),
            "{isolation:?}: {err}"
        );
        assert_still_serving(&host);
    }
}

#[test]
fn trap_and_panic_fail_only_that_call() {
    for isolation in [Isolation::Reuse, Isolation::Fresh] {
        let host = host(isolation);
        let err = misbehave(&host, "trap");
        assert!(
            matches!(&err, CallError::Trap { detail, .. } if detail.contains("unreachable")),
            "{err}"
        );
        assert_still_serving(&host);
        let err = misbehave(&host, "panic");
        assert!(
            matches!(&err, CallError::Trap { detail, .. } if detail.contains("panic")),
            "{err}"
        );
        assert_still_serving(&host);
    }
}

#[test]
fn per_plugin_limits_apply() {
    let mut config = PluginsConfig::default();
    config.settings.insert(
        "misbehave".into(),
        hookhost_plugin_runtime::PluginOverride {
            cpu_limit_ms: Some(30),
            memory_limit_mib: Some(40),
            ..Default::default()
        },
    );
    let host = Host::new(config);
    host.install("misbehave", "misbehave");
    assert!(matches!(
        misbehave(&host, "loop"),
        CallError::CpuLimit { limit_ms: 30, .. }
    ));
    assert!(matches!(
        misbehave(&host, "hog"),
        CallError::MemoryLimit { limit_mib: 40, .. }
    ));
}

#[test]
fn concurrent_runaway_calls_do_not_stick_workers() {
    let host = host(Isolation::Reuse);
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    for _ in 0..5 {
                        assert!(matches!(
                            misbehave(&host, "loop"),
                            CallError::CpuLimit { .. }
                        ));
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
    });
    assert_still_serving(&host);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_calls_are_bounded_too() {
    let host = host(Isolation::Reuse);
    let plugin = host.registry.get("misbehave").unwrap();
    let event = bikeep_event("alarm-case-open");
    let err = plugin
        .call_async(move |p| p.keep(&event, "loop"))
        .await
        .unwrap_err();
    assert!(matches!(err, CallError::CpuLimit { .. }), "{err}");
}

fn refused(host: &Host, name: &str, bytes: &[u8]) -> LoadError {
    let path = host.dir.path().join(format!("{name}.wasm"));
    std::fs::write(&path, bytes).unwrap();
    let err = host.registry.reload(&path).unwrap_err();
    let status = host.registry.status();
    let row = status
        .iter()
        .find(|s| s.name == name)
        .expect("refused plugin is listed");
    assert!(row.serving.is_none());
    let recorded = &row.last_error.as_ref().expect("error is recorded").error;
    assert!(
        recorded.contains(&format!("{name}.wasm")),
        "error names the file: {recorded}"
    );
    err
}

#[test]
fn random_bytes_are_refused_with_a_clear_error() {
    let host = host(Isolation::Reuse);
    // Deterministic "random" bytes (xorshift), so a failure reproduces.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let noise: Vec<u8> = (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let err = refused(&host, "noise", &noise);
    assert!(matches!(err, LoadError::NotComponent { .. }), "{err}");
    // Right magic, garbage after it.
    let mut bad = b"\0asm\x0d\x00\x01\x00".to_vec();
    bad.extend_from_slice(&noise[..100]);
    let err = refused(&host, "garbled", &bad);
    assert!(matches!(err, LoadError::NotComponent { .. }), "{err}");
    assert_still_serving(&host);
}

#[test]
fn core_module_is_refused_with_a_hint() {
    let host = host(Isolation::Reuse);
    let err = refused(&host, "core", b"\0asm\x01\x00\x00\x00");
    assert!(err.to_string().contains("core WebAssembly module"), "{err}");
    assert_still_serving(&host);
}

#[test]
fn component_with_the_wrong_interface_is_refused() {
    let host = host(Isolation::Reuse);
    let bytes = std::fs::read(crate::util::built_plugin("wrong-world")).unwrap();
    let err = refused(&host, "wrong", &bytes);
    assert!(matches!(err, LoadError::NoRole { .. }), "{err}");
    assert!(err.to_string().contains("other:thing/greeter"), "{err}");
    assert_still_serving(&host);
}

#[test]
fn a_broken_replacement_leaves_the_old_version_serving() {
    let host = host(Isolation::Reuse);
    let path = host.dir.path().join("alarm-filter.wasm");
    let before = host
        .registry
        .get("alarm-filter")
        .unwrap()
        .sha256()
        .to_owned();
    std::fs::write(&path, b"not wasm at all").unwrap();
    assert!(host.registry.reload(&path).is_err());
    let serving = host.registry.get("alarm-filter").unwrap();
    assert_eq!(serving.sha256(), &before);
    let row = host
        .registry
        .status()
        .into_iter()
        .find(|s| s.name == "alarm-filter")
        .unwrap();
    assert!(row.serving.is_some() && row.last_error.is_some());
    assert_still_serving(&host);
    // Putting a good file back clears the error.
    std::fs::copy(crate::util::built_plugin("alarm-filter"), &path).unwrap();
    host.registry.reload(&path).unwrap();
    let row = host
        .registry
        .status()
        .into_iter()
        .find(|s| s.name == "alarm-filter")
        .unwrap();
    assert!(row.last_error.is_none());
}

#[test]
fn compiled_cache_spares_a_recompile_after_restart() {
    let cache = tempfile::tempdir().unwrap();
    let config = PluginsConfig {
        cache_dir: Some(cache.path().to_owned()),
        ..Default::default()
    };
    let first = Host::new(config.clone());
    first.install("alarm-filter", "alarm-filter");
    assert!(
        !first
            .registry
            .get("alarm-filter")
            .unwrap()
            .load_info()
            .from_cache
    );
    drop(first);
    let second = Host::new(config);
    second.install("alarm-filter", "alarm-filter");
    let plugin = second.registry.get("alarm-filter").unwrap();
    assert!(plugin.load_info().from_cache);
    assert!(plugin.keep(&bikeep_event("alarm-case-open"), "").unwrap());
    // A cache file corrupted while the host runs (mapped or not) does not
    // hurt the serving version; a later start discards it and recompiles.
    for entry in std::fs::read_dir(cache.path()).unwrap() {
        std::fs::write(entry.unwrap().path(), b"garbage").unwrap();
    }
    let third = Host::new(PluginsConfig {
        cache_dir: Some(cache.path().to_owned()),
        ..Default::default()
    });
    third.install("alarm-filter", "alarm-filter");
    assert!(
        !third
            .registry
            .get("alarm-filter")
            .unwrap()
            .load_info()
            .from_cache
    );
}
