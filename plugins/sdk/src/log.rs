//! The one capability a plugin has: log lines, tagged by the host with the
//! plugin's name and the event's id.

/// How much a log line matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// Writes one log line through the host (to stderr when run natively, as in
/// `cargo test`, where there is no host).
pub fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    {
        use crate::bindings::filter::hookhost::plugin::log::{Level as Wit, log};
        let level = match level {
            Level::Trace => Wit::Trace,
            Level::Debug => Wit::Debug,
            Level::Info => Wit::Info,
            Level::Warn => Wit::Warn,
            Level::Error => Wit::Error,
        };
        log(level, message);
    }
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("{level:?}: {message}");
}

/// `log!(Warn, "category {category:?} has no route")`: formats and logs.
#[macro_export]
macro_rules! log {
    ($level:ident, $($arg:tt)*) => {
        $crate::log($crate::Level::$level, &::std::format!($($arg)*))
    };
}
