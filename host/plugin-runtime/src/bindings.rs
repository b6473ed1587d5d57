//! Host-side bindings generated from `wit/plugin.wit`.
//!
//! The host binds the `full-plugin` world only to get typed accessors for
//! each role; a plugin exports any subset of roles, so the world's own
//! `instantiate` (which requires all of them) is never used.

wasmtime::component::bindgen!({
    world: "full-plugin",
    path: "../../wit",
});

pub use self::exports::hookhost::plugin::filter::{Guest as Filter, GuestIndices as FilterIndices};
pub use self::exports::hookhost::plugin::router::{
    Destinations, Guest as Router, GuestIndices as RouterIndices,
};
pub use self::exports::hookhost::plugin::transform::{
    Guest as Transform, GuestIndices as TransformIndices, Rewrite,
};
pub use self::hookhost::plugin::log::Level;
pub use self::hookhost::plugin::types::Event;

/// Export names of the roles, as they appear in a component.
pub const FILTER_EXPORT: &str = "hookhost:plugin/filter@0.1.0";
pub const TRANSFORM_EXPORT: &str = "hookhost:plugin/transform@0.1.0";
pub const ROUTER_EXPORT: &str = "hookhost:plugin/router@0.1.0";
/// Imports the host provides; WASI imports are linked as traps (see wit/README.md).
pub const HOST_IMPORT_PREFIX: &str = "hookhost:plugin/";
pub const WASI_IMPORT_PREFIX: &str = "wasi:";
