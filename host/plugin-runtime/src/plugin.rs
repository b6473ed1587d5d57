//! One loaded version of a plugin, and how it is called.
//!
//! A [`Plugin`] holds the pre-linked component (`InstancePre`) and, in
//! `reuse` isolation, a small pool of warm instances. Each call takes an
//! instance (warm or fresh), arms the CPU deadline, calls, and returns the
//! instance to the pool only if the call did not trap: wasmtime instances
//! that trapped must not be entered again.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use wasmtime::component::{Instance, InstancePre};
use wasmtime::{ResourceLimiter, Store, Trap};

use super::bindings::{
    self, Destinations, Event, Filter, FilterIndices, Level, Rewrite, Router, RouterIndices,
    Transform, TransformIndices,
};
use super::epoch::{EPOCH_TICK, EpochTicker, Overrun};
use super::error::CallError;
use super::error::error_text;
use crate::settings::{Isolation, LogLevel, PluginSettings};
use crate::shadow::ShadowStats;

/// Warm instances kept per plugin; more concurrent calls than this
/// instantiate fresh ones and drop them afterwards.
const MAX_WARM: usize = 16;
/// `tracing` target of plugins' own log lines, to filter them apart.
pub const LOG_TARGET: &str = "hookhost::plugin_log";
/// Longest log line a plugin may write; longer ones are cut.
const MAX_LOG_LINE: usize = 4096;

/// Which roles a plugin exports, with the export indices resolved at load.
pub(crate) struct Roles {
    pub filter: Option<FilterIndices>,
    pub transform: Option<TransformIndices>,
    pub router: Option<RouterIndices>,
}

impl Roles {
    pub fn is_empty(&self) -> bool {
        self.filter.is_none() && self.transform.is_none() && self.router.is_none()
    }
    pub fn names(&self) -> Vec<&'static str> {
        let mut names = Vec::new();
        if self.filter.is_some() {
            names.push("filter");
        }
        if self.transform.is_some() {
            names.push("transform");
        }
        if self.router.is_some() {
            names.push("router");
        }
        names
    }
}

/// What one store carries: who is calling (for log tags) and its limits.
pub struct CallState {
    plugin: Arc<str>,
    event_id: String,
    log_level: LogLevel,
    pub(crate) limiter: MemoryLimiter,
    /// Whether a passed deadline is the guest computing or the host busy.
    overrun: Overrun,
}

/// Caps linear memory and remembers that the cap was hit, so the resulting
/// trap is reported as a memory limit rather than a generic trap.
pub(crate) struct MemoryLimiter {
    limit: usize,
    hit: bool,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            self.hit = true;
            // An error (rather than `false`) traps at once instead of letting the
            // guest's allocator abort with a less telling message.
            wasmtime::bail!("memory limit of {} bytes reached", self.limit);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

impl bindings::hookhost::plugin::log::Host for CallState {
    fn log(&mut self, level: Level, message: String) {
        let wanted = match level {
            Level::Trace => LogLevel::Trace,
            Level::Debug => LogLevel::Debug,
            Level::Info => LogLevel::Info,
            Level::Warn => LogLevel::Warn,
            Level::Error => LogLevel::Error,
        };
        if wanted < self.log_level {
            return;
        }
        let mut message = message;
        if message.len() > MAX_LOG_LINE {
            let mut cut = MAX_LOG_LINE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        let (plugin, event_id) = (&*self.plugin, self.event_id.as_str());
        match level {
            Level::Trace => tracing::trace!(target: LOG_TARGET, plugin, event_id, "{message}"),
            Level::Debug => tracing::debug!(target: LOG_TARGET, plugin, event_id, "{message}"),
            Level::Info => tracing::info!(target: LOG_TARGET, plugin, event_id, "{message}"),
            Level::Warn => tracing::warn!(target: LOG_TARGET, plugin, event_id, "{message}"),
            Level::Error => tracing::error!(target: LOG_TARGET, plugin, event_id, "{message}"),
        }
    }
}

impl bindings::hookhost::plugin::types::Host for CallState {}

/// An instance with its role exports looked up.
struct WarmInstance {
    store: Store<CallState>,
    filter: Option<Filter>,
    transform: Option<Transform>,
    router: Option<Router>,
}

/// How the plugin came to be loaded.
#[derive(Debug, Clone, Copy)]
pub struct LoadInfo {
    /// Compile (or cache load) time.
    pub compile_time: Duration,
    pub from_cache: bool,
}

/// Counters of one plugin version, read by the API and metrics.
#[derive(Debug, Default)]
struct Stats {
    calls: AtomicU64,
    errors: AtomicU64,
    busy_ns: AtomicU64,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.name)
            .field("sha256", &hex::encode(self.sha256))
            .field("roles", &self.roles.names())
            .finish_non_exhaustive()
    }
}

/// One loaded, pre-linked version of a plugin.
pub struct Plugin {
    /// The engine's epoch ticker, kept alive while this plugin can be
    /// called and told of each call: without ticks a CPU deadline would
    /// never arrive.
    ticker: Arc<EpochTicker>,
    name: Arc<str>,
    file: PathBuf,
    sha256: [u8; 32],
    roles: Roles,
    pre: InstancePre<CallState>,
    settings: PluginSettings,
    epoch_ticks: u64,
    load: LoadInfo,
    loaded_at: SystemTime,
    warm: Mutex<Vec<WarmInstance>>,
    stats: Stats,
    /// Used when this version is a candidate (`NAME.next.wasm`).
    shadow: ShadowStats,
}

/// A snapshot of a plugin for listings.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct PluginInfo {
    pub name: String,
    pub file: PathBuf,
    pub sha256: String,
    pub roles: Vec<&'static str>,
    pub isolation: &'static str,
    pub loaded_at_unix_ms: u64,
    pub load_ms: f64,
    pub from_cache: bool,
    pub calls: u64,
    pub errors: u64,
    pub mean_call_us: f64,
}

/// Everything a plugin decided about one event, role by role (for the CLI
/// and for callers that want all roles at once). A role's entry is its
/// answer, or `{"error": "..."}`.
#[derive(Debug, Clone, Serialize, PartialEq, schemars::JsonSchema)]
pub struct Decision {
    pub plugin: String,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "outcome")]
    #[schemars(with = "Option<Outcome<Keep>>")]
    pub filter: Option<Result<Keep, String>>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "outcome")]
    #[schemars(with = "Option<Outcome<RewriteOut>>")]
    pub transform: Option<Result<RewriteOut, String>>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "outcome")]
    #[schemars(with = "Option<Outcome<RouteOut>>")]
    pub router: Option<Result<RouteOut, String>>,
}

/// A role's answer or its error, as [`Decision`] shows it (its schema).
#[derive(schemars::JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)] // only described, never built: `outcome` writes it
enum Outcome<T> {
    Answer(T),
    Failed { error: String },
}

fn outcome<T: Serialize, S: serde::Serializer>(
    value: &Option<Result<T, String>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    struct Failed<'a> {
        error: &'a str,
    }
    match value {
        Some(Ok(answer)) => answer.serialize(serializer),
        Some(Err(error)) => Failed { error }.serialize(serializer),
        None => serializer.serialize_none(),
    }
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, schemars::JsonSchema)]
pub struct Keep {
    pub keep: bool,
}

#[derive(Debug, Clone, Serialize, PartialEq, schemars::JsonSchema)]
pub struct RewriteOut {
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, PartialEq, schemars::JsonSchema)]
pub struct RouteOut {
    pub subscriptions: Vec<String>,
    pub tags: Vec<String>,
}

impl Decision {
    pub fn has_error(&self) -> bool {
        matches!(self.filter, Some(Err(_)))
            || matches!(self.transform, Some(Err(_)))
            || matches!(self.router, Some(Err(_)))
    }
}

impl Plugin {
    // Called from one place (`Runtime::load`), which has each part at hand.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        ticker: Arc<EpochTicker>,
        name: &str,
        file: &Path,
        sha256: [u8; 32],
        roles: Roles,
        pre: InstancePre<CallState>,
        settings: PluginSettings,
        load: LoadInfo,
    ) -> Plugin {
        let epoch_ticks = ticks_for(settings.cpu_limit());
        Plugin {
            ticker,
            name: name.into(),
            file: file.to_owned(),
            sha256,
            roles,
            pre,
            settings,
            epoch_ticks,
            load,
            loaded_at: SystemTime::now(),
            warm: Mutex::new(Vec::new()),
            stats: Stats::default(),
            shadow: ShadowStats::default(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn sha256(&self) -> &[u8; 32] {
        &self.sha256
    }
    pub fn roles(&self) -> Vec<&'static str> {
        self.roles.names()
    }
    pub fn is_filter(&self) -> bool {
        self.roles.filter.is_some()
    }
    pub fn is_transform(&self) -> bool {
        self.roles.transform.is_some()
    }
    pub fn is_router(&self) -> bool {
        self.roles.router.is_some()
    }
    pub fn file(&self) -> &Path {
        &self.file
    }
    /// How this version, as a candidate, compared with the serving one.
    pub fn shadow(&self) -> &ShadowStats {
        &self.shadow
    }
    pub fn settings(&self) -> &PluginSettings {
        &self.settings
    }
    pub fn load_info(&self) -> LoadInfo {
        self.load
    }

    pub fn info(&self) -> PluginInfo {
        let calls = self.stats.calls.load(Ordering::Relaxed);
        let busy = self.stats.busy_ns.load(Ordering::Relaxed);
        PluginInfo {
            name: self.name.to_string(),
            file: self.file.clone(),
            sha256: hex::encode(self.sha256),
            roles: self.roles(),
            isolation: match self.settings.isolation {
                Isolation::Fresh => "fresh",
                Isolation::Reuse => "reuse",
            },
            loaded_at_unix_ms: self
                .loaded_at
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            load_ms: self.load.compile_time.as_secs_f64() * 1e3,
            from_cache: self.load.from_cache,
            calls,
            errors: self.stats.errors.load(Ordering::Relaxed),
            mean_call_us: if calls == 0 {
                0.0
            } else {
                busy as f64 / calls as f64 / 1e3
            },
        }
    }

    /// Filter role: keep (`true`) or drop (`false`) the event.
    pub fn keep(&self, event: &Event, config: &str) -> Result<bool, CallError> {
        let answer = self.call("filter", &event.id, |live| {
            let f = live.filter.as_ref().ok_or(Missing)?;
            Ok(f.call_keep(&mut live.store, event, config)?)
        })?;
        answer.map_err(|message| self.plugin_error(message))
    }

    /// Transform role: the changes to the event's type and data. A returned
    /// `data` is checked to be a JSON object.
    pub fn transform(&self, event: &Event, config: &str) -> Result<Rewrite, CallError> {
        let answer = self.call("transform", &event.id, |live| {
            let t = live.transform.as_ref().ok_or(Missing)?;
            Ok(t.call_transform(&mut live.store, event, config)?)
        })?;
        let rewrite = answer.map_err(|message| self.plugin_error(message))?;
        if let Some(data) = &rewrite.data {
            let parsed: Result<serde_json::Map<String, serde_json::Value>, _> =
                serde_json::from_str(data);
            if let Err(e) = parsed {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                return Err(CallError::InvalidOutput {
                    plugin: self.name.to_string(),
                    detail: format!("data is not a JSON object: {e}"),
                });
            }
        }
        if rewrite.event_type.as_deref() == Some("") {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
            return Err(CallError::InvalidOutput {
                plugin: self.name.to_string(),
                detail: "event type is empty".into(),
            });
        }
        Ok(rewrite)
    }

    /// Router role: the subscriptions and tags the event goes to.
    pub fn route(&self, event: &Event, config: &str) -> Result<Destinations, CallError> {
        let answer = self.call("router", &event.id, |live| {
            let r = live.router.as_ref().ok_or(Missing)?;
            Ok(r.call_route(&mut live.store, event, config)?)
        })?;
        answer.map_err(|message| self.plugin_error(message))
    }

    /// Runs every role the plugin exports on the event, independently.
    pub fn decide(&self, event: &Event, config: &str) -> Decision {
        let text = |e: CallError| e.to_string();
        Decision {
            plugin: self.name.to_string(),
            filter: self.roles.filter.is_some().then(|| {
                self.keep(event, config)
                    .map(|keep| Keep { keep })
                    .map_err(text)
            }),
            transform: self.roles.transform.is_some().then(|| {
                self.transform(event, config)
                    .map_err(text)
                    .map(|r| RewriteOut {
                        event_type: r.event_type,
                        // Checked to parse in `transform`.
                        data: r.data.and_then(|d| serde_json::from_str(&d).ok()),
                    })
            }),
            router: self.roles.router.is_some().then(|| {
                self.route(event, config).map_err(text).map(|d| RouteOut {
                    subscriptions: d.subscriptions,
                    tags: d.tags,
                })
            }),
        }
    }

    /// Calls the plugin on a blocking thread, bounded by its call timeout:
    /// epochs stop guest code, the timeout also bounds queueing and host work.
    pub async fn call_async<R, F>(self: &Arc<Self>, f: F) -> Result<R, CallError>
    where
        R: Send + 'static,
        F: FnOnce(&Plugin) -> Result<R, CallError> + Send + 'static,
    {
        let plugin = self.clone();
        let timeout = self.settings.call_timeout();
        let task = tokio::task::spawn_blocking(move || f(&plugin));
        match tokio::time::timeout(timeout, task).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(CallError::Trap {
                plugin: self.name.to_string(),
                detail: format!("host task failed: {join}"),
            }),
            Err(_) => {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                Err(CallError::Timeout {
                    plugin: self.name.to_string(),
                    timeout_ms: timeout.as_millis() as u64,
                })
            }
        }
    }

    /// Instantiates once, so a broken component is refused at load time, and
    /// keeps the instance warm for the first call.
    pub(crate) fn prewarm(&self) -> Result<(), String> {
        // The epoch deadline counts wall-clock ticks: on a busy host a
        // start-up that needs 1 ms of CPU can span more than the CPU limit.
        // This one-off check gets the call timeout instead, so a good file is
        // not refused because the machine was loaded at that moment; a start
        // function that spins is still refused.
        let ticks = ticks_for(self.settings.call_timeout());
        let _busy = self.ticker.busy();
        let live = self.instantiate("", ticks).map_err(|e| e.to_string())?;
        if self.settings.isolation == Isolation::Reuse {
            self.lock_warm().push(live);
        }
        Ok(())
    }

    fn instantiate(&self, event_id: &str, deadline_ticks: u64) -> Result<WarmInstance, CallError> {
        let runtime_err = |e: wasmtime::Error| CallError::Instantiate {
            plugin: self.name.to_string(),
            detail: error_text(&e),
        };
        let state = CallState {
            plugin: self.name.clone(),
            event_id: event_id.to_owned(),
            log_level: self.settings.log_level,
            limiter: MemoryLimiter {
                limit: self.settings.memory_limit_bytes(),
                hit: false,
            },
            overrun: Overrun::default(),
        };
        let mut store = self.runtime_store(state);
        store.set_epoch_deadline(deadline_ticks);
        let instance: Instance = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| self.classify(&store, e))?;
        let filter = self
            .roles
            .filter
            .as_ref()
            .map(|i| i.load(&mut store, &instance))
            .transpose();
        let transform = self
            .roles
            .transform
            .as_ref()
            .map(|i| i.load(&mut store, &instance))
            .transpose();
        let router = self
            .roles
            .router
            .as_ref()
            .map(|i| i.load(&mut store, &instance))
            .transpose();
        Ok(WarmInstance {
            filter: filter.map_err(runtime_err)?,
            transform: transform.map_err(runtime_err)?,
            router: router.map_err(runtime_err)?,
            store,
        })
    }

    fn runtime_store(&self, state: CallState) -> Store<CallState> {
        let engine = self.pre.engine();
        let mut store = Store::new(engine, state);
        store.limiter(|s| &mut s.limiter);
        store.epoch_deadline_callback(|mut store| store.data_mut().overrun.on_deadline());
        store
    }

    fn lock_warm(&self) -> std::sync::MutexGuard<'_, Vec<WarmInstance>> {
        // A panic while holding this lock cannot leave the Vec inconsistent.
        self.warm.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes an instance, runs `f` under the CPU deadline, and recycles the
    /// instance only if the call returned normally.
    fn call<R>(
        &self,
        role: &'static str,
        event_id: &str,
        f: impl FnOnce(&mut WarmInstance) -> Result<R, CallFail>,
    ) -> Result<R, CallError> {
        let started = Instant::now();
        let _busy = self.ticker.busy();
        let warm = match self.settings.isolation {
            Isolation::Reuse => self.lock_warm().pop(),
            Isolation::Fresh => None,
        };
        let result = (|| {
            let mut live = match warm {
                Some(live) => live,
                None => self.instantiate(event_id, self.epoch_ticks)?,
            };
            let state = live.store.data_mut();
            state.event_id.clear();
            state.event_id.push_str(event_id);
            state.overrun.reset();
            live.store.set_epoch_deadline(self.epoch_ticks);
            match f(&mut live) {
                Ok(r) => {
                    if self.settings.isolation == Isolation::Reuse {
                        let mut pool = self.lock_warm();
                        if pool.len() < MAX_WARM {
                            pool.push(live);
                        }
                    }
                    Ok(r)
                }
                Err(CallFail::Missing) => Err(CallError::MissingRole {
                    plugin: self.name.to_string(),
                    role,
                }),
                // The instance is dropped here: after a trap it must not run again.
                Err(CallFail::Wasm(e)) => Err(self.classify(&live.store, e)),
            }
        })();
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        self.stats
            .busy_ns
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        if result.is_err() {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    fn plugin_error(&self, message: String) -> CallError {
        self.stats.errors.fetch_add(1, Ordering::Relaxed);
        CallError::Plugin {
            plugin: self.name.to_string(),
            message,
        }
    }

    fn classify(&self, store: &Store<CallState>, e: wasmtime::Error) -> CallError {
        let plugin = self.name.to_string();
        if store.data().limiter.hit {
            return CallError::MemoryLimit {
                plugin,
                limit_mib: self.settings.memory_limit_mib,
            };
        }
        if let Some(Trap::Interrupt) = e.downcast_ref::<Trap>() {
            return CallError::CpuLimit {
                plugin,
                limit_ms: self.settings.cpu_limit_ms,
            };
        }
        let mut detail = error_text(&e);
        if detail.contains("unknown import") && detail.contains("wasi:") {
            // With panic=abort a Rust guest's panic message goes to stderr,
            // which is not granted; say so instead of only naming the import.
            detail.push_str(
                " (plugins get no WASI capabilities; a Rust panic ends this way, \
                 since it tries to print to stderr)",
            );
        } else if detail.contains("unreachable") {
            // What each toolchain's uncaught failure looks like from here.
            detail.push_str(
                " (the guest gave up: a Rust panic, a JavaScript `throw` of an Error \
                 or an uncaught Python exception ends this way; return an error instead \
                 — the hookhost SDKs do that for you, with the message)",
            );
        }
        CallError::Trap { plugin, detail }
    }
}

/// How a call closure fails: a wasm error, or the role is not exported.
enum CallFail {
    Missing,
    Wasm(wasmtime::Error),
}

struct Missing;

impl From<Missing> for CallFail {
    fn from(_: Missing) -> CallFail {
        CallFail::Missing
    }
}

impl From<wasmtime::Error> for CallFail {
    fn from(e: wasmtime::Error) -> CallFail {
        CallFail::Wasm(e)
    }
}

/// Epoch ticks in `limit` (at least one).
fn ticks_for(limit: std::time::Duration) -> u64 {
    let tick = EPOCH_TICK.as_micros().max(1) as u64;
    (limit.as_micros() as u64).div_ceil(tick).max(1)
}
