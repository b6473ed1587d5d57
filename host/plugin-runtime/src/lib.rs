//! hookhost's plugin runtime: WebAssembly components that filter, transform
//! and route events, run by wasmtime in a sandbox.
//!
//! This crate depends on no other hookhost crate: it knows plugins, their
//! limits and their files, not subscriptions, stores or HTTP.
//!
//! - [`Runtime`]: the wasmtime engine, instance pool, CPU ticker, linker and
//!   compiled cache; the only place that configures wasmtime.
//! - [`Plugin`]: one loaded version of a plugin and its calls
//!   (`keep`, `transform`, `route`), each in a sandboxed instance.
//! - [`Registry`]: the live name → version map, swapped atomically on reload,
//!   and the candidates (`NAME.next.wasm`) run in shadow beside them.
//! - [`Watcher`]: hot reload from the plugins folder.
//! - [`PluginsConfig`]: the `[plugins]` settings (folder, pool, limits).

mod bindings;
mod epoch;
mod error;
mod plugin;
mod registry;
mod runtime;
mod settings;
mod shadow;
mod watch;

pub use bindings::{Destinations, Event, Rewrite};
pub use epoch::EPOCH_TICK;
pub use error::{CallError, LoadError};
pub use plugin::{Decision, Keep, LOG_TARGET, LoadInfo, Plugin, PluginInfo, RewriteOut, RouteOut};
pub use registry::{
    CandidateStatus, InstallError, LoadFailure, PluginStatus, PromoteError, Registry, Reloaded,
    plugin_name,
};
pub use runtime::{Runtime, RuntimeError};
pub use settings::{Allocator, Isolation, LogLevel, PluginOverride, PluginSettings, PluginsConfig};
pub use shadow::{Answer, CANDIDATE_SUFFIX, ShadowReport, ShadowSample, ShadowStats};
pub use watch::{WatchError, Watcher};
