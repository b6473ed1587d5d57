//! Helpers shared by the runtime's tests: where the compiled plugins are,
//! seed sample events, a registry over a temporary plugins folder, and one
//! wait helper.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hookhost_plugin_runtime::{Event, PluginsConfig, Registry, Runtime};

/// How long a test waits for something that should happen "soon" before it
/// fails. Generous on purpose: CI shares 2 cores with other jobs, and a wait
/// that returns early costs nothing. Latency belongs in the benchmarks.
pub const PATIENCE: Duration = Duration::from_secs(60);

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("host/plugin-runtime sits two levels below the workspace root")
        .to_owned()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// The compiled component of plugin crate `crate_name` (e.g. `alarm-filter`).
pub fn built_plugin(crate_name: &str) -> PathBuf {
    let path = target_dir()
        .join("wasm32-wasip2/release")
        .join(format!("{}.wasm", crate_name.replace('-', "_")));
    assert!(
        path.is_file(),
        "{} is missing: run `./dev test`, which builds the plugins first",
        path.display()
    );
    path
}

/// A sample event from `examples/bikeep/events/` (copied from the seed), as
/// the host hands it to a plugin.
pub fn bikeep_event(name: &str) -> Event {
    static NEXT_ID: AtomicU64 = AtomicU64::new(1);
    let path = workspace_root()
        .join("examples/bikeep/events")
        .join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let sample: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let data = &sample["data"];
    Event {
        id: format!("evt_test_{}", NEXT_ID.fetch_add(1, Ordering::Relaxed)),
        event_type: sample["type"]
            .as_str()
            .expect("sample has a type")
            .to_owned(),
        timestamp: data["timestamp"]
            .as_str()
            .unwrap_or("2025-01-01T00:00:00Z")
            .to_owned(),
        data: data.to_string(),
    }
}

/// A plugins folder in a temp dir and a registry over it.
pub struct Host {
    pub dir: tempfile::TempDir,
    pub registry: Arc<Registry>,
}

impl Host {
    pub fn new(config: PluginsConfig) -> Host {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = PluginsConfig {
            dir: dir.path().to_owned(),
            ..config
        };
        let runtime = Runtime::new(&config).expect("runtime");
        Host {
            dir,
            registry: Registry::new(runtime),
        }
    }

    /// Copies plugin crate `crate_name`'s component in as `name.wasm` and loads it.
    pub fn install(&self, crate_name: &str, name: &str) -> PathBuf {
        let dest = self.dir.path().join(format!("{name}.wasm"));
        std::fs::copy(built_plugin(crate_name), &dest).expect("copy plugin");
        self.registry
            .reload(&dest)
            .unwrap_or_else(|e| panic!("loading {name}: {e}"));
        dest
    }
}

/// Waits (asynchronously) until `check` holds; panics naming `what` after
/// [`PATIENCE`]. Returns how long it took, for the test's output only.
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < PATIENCE,
            "{what}: not seen within {PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    start.elapsed()
}
