//! Hot reload: watches the plugins folder and brings the registry in line
//! with it. Events are debounced (a `cp` in progress produces a stream of
//! writes), then each touched `*.wasm` path is reconciled: loaded if present
//! and changed, removed if gone. Renames onto a name arrive as a create of
//! that name, so `mv` and build tools' atomic replaces work the same way.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use notify::event::{AccessKind, AccessMode, ModifyKind};
use notify::{EventKind, RecursiveMode};
use notify_debouncer_full::{DebounceEventResult, new_debouncer};

use super::registry::{Registry, plugin_name};

/// How long a file must stay unchanged after a failed load before the
/// failure is reported; a copy still in progress is given that long to finish.
const SETTLE: Duration = Duration::from_millis(150);

/// Keeps the folder watched while alive.
pub struct Watcher {
    _debouncer: notify_debouncer_full::Debouncer<
        notify::RecommendedWatcher,
        notify_debouncer_full::RecommendedCache,
    >,
    _thread: JoinHandle<()>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot watch plugin folder {dir}: {source}")]
pub struct WatchError {
    dir: PathBuf,
    source: notify::Error,
}

impl Watcher {
    pub fn start(
        registry: Arc<Registry>,
        dir: &Path,
        debounce: Duration,
    ) -> Result<Watcher, WatchError> {
        let (tx, rx) = mpsc::channel::<Vec<PathBuf>>();
        let watch_err = |source| WatchError {
            dir: dir.to_owned(),
            source,
        };
        let mut debouncer =
            new_debouncer(
                debounce,
                None,
                move |result: DebounceEventResult| match result {
                    Ok(events) => {
                        let paths: Vec<PathBuf> = events
                            .into_iter()
                            .filter(|e| changes_content(&e.event.kind))
                            .flat_map(|e| e.event.paths)
                            .collect();
                        if !paths.is_empty() {
                            let _ = tx.send(paths);
                        }
                    }
                    Err(errors) => {
                        for e in errors {
                            tracing::warn!(error = %e, "plugin folder watch error");
                        }
                    }
                },
            )
            .map_err(watch_err)?;
        debouncer
            .watch(dir, RecursiveMode::NonRecursive)
            .map_err(watch_err)?;
        let thread = std::thread::Builder::new()
            .name("hookhost-reload".into())
            .spawn(move || reload_loop(&registry, rx))
            .expect("spawning the reload thread");
        Ok(Watcher {
            _debouncer: debouncer,
            _thread: thread,
        })
    }
}

/// Reads of a file (ours included, when loading it) raise access events;
/// reacting to them would reload in a loop. Only writes, creates, renames and
/// removals matter.
fn changes_content(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        EventKind::Modify(ModifyKind::Metadata(_)) => false,
        _ => true,
    }
}

fn reload_loop(registry: &Registry, rx: mpsc::Receiver<Vec<PathBuf>>) {
    while let Ok(paths) = rx.recv() {
        let mut touched: BTreeSet<PathBuf> = paths
            .into_iter()
            .filter(|p| plugin_name(p).is_some())
            .collect();
        // Coalesce whatever else arrived meanwhile.
        while let Ok(more) = rx.try_recv() {
            touched.extend(more.into_iter().filter(|p| plugin_name(p).is_some()));
        }
        for path in touched {
            reconcile(registry, &path);
        }
    }
}

/// Loads or removes one plugin. A load that fails while the file is still
/// changing is not reported: the writer's next event brings it back here.
fn reconcile(registry: &Registry, path: &Path) {
    let before = stamp(path);
    if let Err(err) = registry.try_reload(path) {
        std::thread::sleep(SETTLE);
        if stamp(path) != before {
            tracing::debug!(file = %path.display(), error = %err, "plugin file still being written; waiting");
            return;
        }
        if let Some(name) = plugin_name(path) {
            registry.record_failure(name, &err);
        }
    }
}

fn stamp(path: &Path) -> Option<(u64, SystemTime)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.len(), meta.modified().ok()?))
}
