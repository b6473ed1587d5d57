//! One file per subcommand.

pub mod bench;
pub mod plugin;
pub mod receive;
pub mod replay;
pub mod serve;
pub mod verify;
