//! Write hookhost plugins as plain Rust functions.
//!
//! A plugin is one function per role it plays, plus a macro naming it:
//!
//! ```ignore
//! use hookhost_plugin::{Event, Result};
//! use serde::Deserialize;
//!
//! #[derive(Deserialize, Default)]
//! #[serde(deny_unknown_fields)]
//! struct Config { min_voltage: Option<f64> }
//!
//! #[derive(Deserialize)]
//! struct Report { voltage: f64 }
//!
//! fn keep(event: &Event, config: &Config) -> Result<bool> {
//!     let report: Report = event.data()?;
//!     Ok(report.voltage >= config.min_voltage.unwrap_or(3.3))
//! }
//!
//! hookhost_plugin::filter!(keep, only: ["report"]);
//! ```
//!
//! The SDK does what every plugin would otherwise repeat: the WIT bindings
//! and the export shell, the config parsed once per distinct text and cached
//! (empty text means `Config::default()`), typed access to `data`, errors as
//! [`Result`], and [`log!`]. `only: [...]` lets other event types through
//! without calling the function (kept, unchanged, routed nowhere).
//!
//! Build with `cargo build --release --target wasm32-wasip2`; the component
//! is `target/wasm32-wasip2/release/<crate_name>.wasm`, served as `NAME.wasm`
//! where NAME is the plugin's name. Plugin functions are ordinary Rust, so
//! `cargo test` on the host tests them; [`log!`] prints to stderr there.

#[doc(hidden)]
pub mod bindings;
mod config;
mod event;
mod log;
mod roles;

pub use config::NoConfig;
pub use event::Event;
pub use log::{Level, log};
pub use roles::{Destinations, Rewrite};

// The macros expand in the plugin's crate and name these through `$crate`.
#[doc(hidden)]
pub use roles::__private;

/// A plugin error: the host records its text on the event's delivery and does
/// not deliver that event through this plugin's step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(String);

impl Error {
    pub fn new(message: impl std::fmt::Display) -> Self {
        Error(message.to_string())
    }

    pub fn message(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl From<String> for Error {
    fn from(message: String) -> Self {
        Error(message)
    }
}

impl From<&str> for Error {
    fn from(message: &str) -> Self {
        Error(message.to_string())
    }
}

impl From<serde_json::Error> for Error {
    fn from(error: serde_json::Error) -> Self {
        Error(error.to_string())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Returns early with an [`Error`] made from a format string.
#[macro_export]
macro_rules! bail {
    ($($arg:tt)*) => {
        return ::core::result::Result::Err($crate::Error::new(::core::format_args!($($arg)*)))
    };
}
