//! One file per subcommand.

pub mod bench;
pub mod compact;
pub mod migrate;
pub mod plugin;
pub mod plugin_new;
pub mod plugin_test;
pub mod receive;
pub mod replay;
pub mod serve;
pub mod verify;
