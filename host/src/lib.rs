//! hookhost: a self-hosted webhook delivery server whose routing is
//! scriptable with WebAssembly component plugins.
//!
//! # Layout
//! - [`config`]: the TOML configuration and its defaults.
//! - [`plugins`]: the plugin runtime (wasmtime), the live registry and hot reload.
//! - [`event`]: reading an event from JSON as clients and plugin authors write it.

pub mod config;
pub mod event;
pub mod plugins;
