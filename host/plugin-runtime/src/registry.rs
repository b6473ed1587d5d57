//! The live set of plugins. Names map to the current version of each plugin
//! in an atomically swapped map: a lookup takes an `Arc` to one version, so a
//! call in flight finishes on the version it started with while new calls
//! see the new one, and no call ever sees a half-loaded plugin.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::error::{CallError, LoadError};
use super::plugin::{Plugin, PluginInfo};
use super::runtime::Runtime;
use crate::shadow::{CANDIDATE_SUFFIX, ShadowReport};

type PluginMap = BTreeMap<Arc<str>, Arc<Plugin>>;

pub struct Registry {
    runtime: Arc<Runtime>,
    live: ArcSwap<PluginMap>,
    /// Candidate versions (`NAME.next.wasm`) by the name they would replace:
    /// called beside the serving version, never acted on.
    candidates: ArcSwap<PluginMap>,
    /// Last load failure per plugin name (cleared by a successful load).
    errors: Mutex<BTreeMap<String, LoadFailure>>,
    /// Serialises changes so two reloads cannot lose each other's update.
    change: Mutex<()>,
    loads: AtomicU64,
    refusals: AtomicU64,
    /// Told of every refused load (the host turns it into an event).
    on_refused: std::sync::OnceLock<RefusalHook>,
}

/// Called with the plugin's name, the failure, and whether an earlier
/// version keeps serving.
pub type RefusalHook = Box<dyn Fn(&str, &LoadFailure, bool) + Send + Sync>;

/// A refused load, kept for the API.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct LoadFailure {
    pub error: String,
    pub at_unix_ms: u64,
}

/// What a reload did.
#[derive(Debug)]
pub enum Reloaded {
    Loaded(Arc<Plugin>),
    /// Same bytes as the version already serving.
    Unchanged,
    Removed,
    /// The file is gone and no plugin of that name was loaded.
    Absent,
}

/// One row of the plugin listing: the serving version (if any), the last
/// refused load (if any) and the candidate in shadow (if any).
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct PluginStatus {
    pub name: String,
    pub serving: Option<PluginInfo>,
    pub last_error: Option<LoadFailure>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub candidate: Option<CandidateStatus>,
}

/// A candidate version and how its answers compared so far.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct CandidateStatus {
    #[serde(flatten)]
    pub info: PluginInfo,
    pub shadow: ShadowReport,
}

/// Why a candidate could not be promoted.
#[derive(Debug, thiserror::Error)]
pub enum PromoteError {
    #[error("plugin `{0}` has no candidate (drop NAME.next.wasm into the plugins folder)")]
    NoCandidate(String),
    #[error("cannot rename {from} to {to}: {reason}")]
    Rename {
        from: PathBuf,
        to: PathBuf,
        reason: String,
    },
    #[error(transparent)]
    Load(#[from] LoadError),
}

/// Why an uploaded plugin was not installed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error(
        "`{0}` is not a plugin name: 1 to 64 ASCII letters, digits, `-` or `_`, starting with a letter or digit"
    )]
    BadName(String),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("cannot write {file}: {source}")]
    Write {
        file: PathBuf,
        source: std::io::Error,
    },
}

/// Names an upload may take: no dots (so neither `.next` nor a path) and
/// nothing a shell or URL would have to escape.
fn check_upload_name(name: &str) -> Result<(), InstallError> {
    let ok = (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(InstallError::BadName(name.escape_debug().to_string()))
    }
}

/// Writes `bytes` to `file` by way of a hidden temporary file in the same
/// folder: synced, renamed over `file`, the folder synced. A failed write
/// leaves no temporary file behind.
fn write_atomically(dir: &Path, file: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    static UPLOADS: AtomicU64 = AtomicU64::new(0);
    let name = file
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("plugin");
    let temp = dir.join(format!(
        ".{name}.{}-{}.tmp",
        std::process::id(),
        UPLOADS.fetch_add(1, Ordering::Relaxed)
    ));
    let written = (|| {
        let mut out = std::fs::File::create(&temp)?;
        out.write_all(bytes)?;
        out.sync_all()?;
        std::fs::rename(&temp, file)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written?;
    std::fs::File::open(dir)?.sync_all()
}

/// A plugin's name is its file's stem; only `*.wasm` files are plugins.
pub fn plugin_name(path: &Path) -> Option<&str> {
    if path.extension()? != "wasm" {
        return None;
    }
    let stem = path.file_stem()?.to_str()?;
    (!stem.is_empty() && !stem.starts_with('.')).then_some(stem)
}

impl Registry {
    pub fn new(runtime: Arc<Runtime>) -> Arc<Registry> {
        Arc::new(Registry {
            runtime,
            live: ArcSwap::from_pointee(PluginMap::new()),
            candidates: ArcSwap::from_pointee(PluginMap::new()),
            errors: Mutex::new(BTreeMap::new()),
            change: Mutex::new(()),
            loads: AtomicU64::new(0),
            refusals: AtomicU64::new(0),
            on_refused: std::sync::OnceLock::new(),
        })
    }

    /// Tells `hook` of every refused load from now on (set once).
    pub fn on_refused(&self, hook: impl Fn(&str, &LoadFailure, bool) + Send + Sync + 'static) {
        let _ = self.on_refused.set(Box::new(hook));
    }

    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// The serving version of `name`.
    pub fn get(&self, name: &str) -> Result<Arc<Plugin>, CallError> {
        self.live
            .load()
            .get(name)
            .cloned()
            .ok_or_else(|| CallError::NotPresent(name.to_string()))
    }

    /// The candidate version of `name` in shadow, if one is loaded.
    pub fn candidate(&self, name: &str) -> Option<Arc<Plugin>> {
        self.candidates.load().get(name).cloned()
    }

    /// Makes `name`'s candidate the serving version: its file is renamed
    /// onto `NAME.wasm` (so a restart serves it too) and loaded; the map
    /// swap is atomic, calls in flight finish on the old version.
    pub fn promote(&self, name: &str) -> Result<Arc<Plugin>, PromoteError> {
        let candidate = self
            .candidate(name)
            .ok_or_else(|| PromoteError::NoCandidate(name.to_string()))?;
        let from = candidate.file().to_owned();
        let to = from.with_file_name(format!("{name}.wasm"));
        std::fs::rename(&from, &to).map_err(|e| PromoteError::Rename {
            from: from.clone(),
            to: to.clone(),
            reason: e.to_string(),
        })?;
        let promoted = match self.reload(&to)? {
            Reloaded::Loaded(plugin) => plugin,
            // Same bytes as what served: nothing changes but the file.
            _ => self
                .get(name)
                .map_err(|_| PromoteError::NoCandidate(name.to_string()))?,
        };
        // The candidate's file is gone: this retires it.
        self.reload(&from)?;
        tracing::info!(plugin = name, sha256 = %hex::encode(&promoted.sha256()[..8]), "candidate promoted");
        Ok(promoted)
    }

    /// The map a file's plugin lives in, and its key there.
    fn slot<'a>(&self, name: &'a str) -> (&ArcSwap<PluginMap>, &'a str) {
        match name.strip_suffix(CANDIDATE_SUFFIX) {
            Some(base) if !base.is_empty() => (&self.candidates, base),
            _ => (&self.live, name),
        }
    }

    /// Versions loaded, and loads refused, since start.
    pub fn load_counts(&self) -> (u64, u64) {
        (
            self.loads.load(Ordering::Relaxed),
            self.refusals.load(Ordering::Relaxed),
        )
    }

    pub fn names(&self) -> Vec<String> {
        self.live.load().keys().map(|k| k.to_string()).collect()
    }

    /// Every plugin that is serving or whose last load failed.
    pub fn status(&self) -> Vec<PluginStatus> {
        let live = self.live.load();
        let candidates = self.candidates.load();
        let errors = self.lock_errors().clone();
        let mut names: Vec<&str> = live.keys().map(|k| &**k).collect();
        names.extend(candidates.keys().map(|k| &**k));
        names.extend(errors.keys().map(|k| k.as_str()));
        names.sort_unstable();
        names.dedup();
        names
            .into_iter()
            .map(|name| PluginStatus {
                name: name.to_string(),
                serving: live.get(name).map(|p| p.info()),
                last_error: errors.get(name).cloned(),
                candidate: candidates.get(name).map(|c| CandidateStatus {
                    info: c.info(),
                    shadow: c.shadow().report(),
                }),
            })
            .collect()
    }

    /// Loads every `*.wasm` in `dir`. Refused files are logged and recorded;
    /// they do not stop the others.
    pub fn load_dir(&self, dir: &Path) -> std::io::Result<Vec<Result<Arc<Plugin>, LoadError>>> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| plugin_name(p).is_some() && p.is_file())
            .collect();
        files.sort();
        Ok(files
            .iter()
            .map(|file| match self.reload(file) {
                Ok(Reloaded::Loaded(p)) => Ok(p),
                Ok(_) => Err(LoadError::Read {
                    file: file.clone(),
                    reason: "vanished while loading".into(),
                }),
                Err(e) => Err(e),
            })
            .collect())
    }

    /// Brings plugin `file` in line with the file system: loads it if it
    /// exists and differs from the serving version, removes it if it is gone.
    /// On a refused load the serving version (if any) stays and the failure
    /// is recorded for [`Registry::status`].
    pub fn reload(&self, file: &Path) -> Result<Reloaded, LoadError> {
        self.try_reload(file).inspect_err(|err| {
            if let Some(name) = plugin_name(file) {
                self.record_failure(name, err);
            }
        })
    }

    /// [`Registry::reload`] without recording a failure: for callers that
    /// first check whether the file was still being written.
    pub fn try_reload(&self, file: &Path) -> Result<Reloaded, LoadError> {
        let Some(name) = plugin_name(file) else {
            return Err(LoadError::Read {
                file: file.to_owned(),
                reason: "a plugin file must be named NAME.wasm".into(),
            });
        };
        let _change = self.change.lock().unwrap_or_else(|p| p.into_inner());
        let bytes = match std::fs::read(file) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(self.remove_locked(name));
            }
            Err(e) => {
                return Err(LoadError::Read {
                    file: file.to_owned(),
                    reason: e.to_string(),
                });
            }
        };
        let sha256: [u8; 32] = Sha256::digest(&bytes).into();
        let (slot, key) = self.slot(name);
        if let Some(current) = slot.load().get(key)
            && current.sha256() == &sha256
        {
            // The file is back to what is serving: an earlier refusal is moot.
            self.lock_errors().remove(name);
            return Ok(Reloaded::Unchanged);
        }
        let plugin = Arc::new(self.runtime.load(name, file, &bytes, sha256)?);
        self.publish_locked(name, plugin.clone());
        Ok(Reloaded::Loaded(plugin))
    }

    /// Makes `plugin` the version of `name` (serving, or the candidate for a
    /// `NAME.next` name). The caller holds `change`.
    fn publish_locked(&self, name: &str, plugin: Arc<Plugin>) {
        let (slot, key) = self.slot(name);
        let mut map = PluginMap::clone(&slot.load());
        map.insert(key.into(), plugin.clone());
        slot.store(Arc::new(map));
        self.lock_errors().remove(name);
        self.loads.fetch_add(1, Ordering::Relaxed);
        let load = plugin.load_info();
        tracing::info!(
            plugin = name,
            file = %plugin.file().display(),
            sha256 = %hex::encode(&plugin.sha256()[..8]),
            roles = ?plugin.roles(),
            load_ms = load.compile_time.as_secs_f64() * 1e3,
            from_cache = load.from_cache,
            "plugin loaded"
        );
    }

    /// Installs uploaded component bytes as plugin `name` in folder `dir`
    /// (`NAME.wasm`, or `NAME.next.wasm` as a candidate in shadow). The bytes
    /// are compiled and checked first, so a refused upload touches neither
    /// the folder nor what serves; then they are written to a hidden file,
    /// synced and renamed into place (the watcher never sees half a file),
    /// and the version is swapped in without waiting for the watcher.
    pub fn install(
        &self,
        dir: &Path,
        name: &str,
        bytes: &[u8],
        as_candidate: bool,
    ) -> Result<Arc<Plugin>, InstallError> {
        check_upload_name(name)?;
        let stem = if as_candidate {
            format!("{name}{CANDIDATE_SUFFIX}")
        } else {
            name.to_string()
        };
        let file = dir.join(format!("{stem}.wasm"));
        let sha256: [u8; 32] = Sha256::digest(bytes).into();
        // Compiling can take seconds (a Python plugin): not under `change`.
        let plugin = Arc::new(self.runtime.load(&stem, &file, bytes, sha256)?);
        let _change = self.change.lock().unwrap_or_else(|p| p.into_inner());
        write_atomically(dir, &file, bytes).map_err(|e| InstallError::Write {
            file: file.clone(),
            source: e,
        })?;
        let (slot, key) = self.slot(&stem);
        if let Some(current) = slot.load().get(key)
            && current.sha256() == &sha256
        {
            self.lock_errors().remove(&stem);
            return Ok(current.clone());
        }
        self.publish_locked(&stem, plugin.clone());
        Ok(plugin)
    }

    /// Removes plugin `name`'s file from `dir` (or its candidate's) and stops
    /// serving it. `Ok(false)` when there was no such file.
    pub fn uninstall(&self, dir: &Path, name: &str, candidate: bool) -> Result<bool, InstallError> {
        check_upload_name(name)?;
        let stem = if candidate {
            format!("{name}{CANDIDATE_SUFFIX}")
        } else {
            name.to_string()
        };
        let file = dir.join(format!("{stem}.wasm"));
        let _change = self.change.lock().unwrap_or_else(|p| p.into_inner());
        match std::fs::remove_file(&file) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.remove_locked(&stem);
                return Ok(false);
            }
            Err(e) => return Err(InstallError::Write { file, source: e }),
        }
        self.remove_locked(&stem);
        Ok(true)
    }

    /// Stops serving `name` (calls in flight finish on it).
    pub fn remove(&self, name: &str) -> Reloaded {
        let _change = self.change.lock().unwrap_or_else(|p| p.into_inner());
        self.remove_locked(name)
    }

    fn remove_locked(&self, name: &str) -> Reloaded {
        self.lock_errors().remove(name);
        let (slot, key) = self.slot(name);
        let current = slot.load();
        if !current.contains_key(key) {
            return Reloaded::Absent;
        }
        let mut map = PluginMap::clone(&current);
        map.remove(key);
        slot.store(Arc::new(map));
        tracing::info!(plugin = name, "plugin removed");
        Reloaded::Removed
    }

    pub(crate) fn record_failure(&self, name: &str, err: &LoadError) {
        let (slot, key) = self.slot(name);
        let serving = slot.load().contains_key(key);
        self.refusals.fetch_add(1, Ordering::Relaxed);
        tracing::error!(plugin = name, error = %err, previous_version_serving = serving, "plugin refused");
        let at_unix_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let failure = LoadFailure {
            error: err.to_string(),
            at_unix_ms,
        };
        if let Some(hook) = self.on_refused.get() {
            hook(name, &failure, serving);
        }
        self.lock_errors().insert(name.to_string(), failure);
    }

    fn lock_errors(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, LoadFailure>> {
        self.errors.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_names_cannot_leave_the_folder_or_pose_as_a_candidate() {
        for good in ["alarm-filter", "a", "v1_compat", "X9"] {
            assert!(check_upload_name(good).is_ok(), "{good}");
        }
        let too_long = "a".repeat(65);
        for bad in [
            "",
            "../x",
            "a/b",
            "alarm.next",
            ".hidden",
            "-flag",
            "caf\u{e9}",
            "a b",
            too_long.as_str(),
        ] {
            assert!(
                matches!(check_upload_name(bad), Err(InstallError::BadName(_))),
                "{bad:?}"
            );
        }
    }
}
