//! `hookhost compact`: copies the sled data folder `server.data_dir` names
//! into a new folder holding only its live records, for an operator to
//! swap in while the server is stopped (sled never gives removed records'
//! space back to the system).

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Result, bail};
use hookhost_core::config::{Config, StoreBackend};
use hookhost_core::store::sled::{SledSettings, compact as compact_folder};

pub fn compact(config_file: &Path, into: &Path) -> Result<ExitCode> {
    let config = Config::load(config_file)?;
    if config.store.backend != StoreBackend::Sled {
        bail!(
            "{}: store.backend is not \"sled\": on PostgreSQL, autovacuum makes removed rows' \
             space reusable and VACUUM FULL gives it back to the system",
            config_file.display()
        );
    }
    let from = &config.server.data_dir;
    let done = compact_folder(
        from,
        into,
        SledSettings {
            cache_mib: config.server.cache_mib,
            compress: config.server.compress_store,
        },
    )?;
    let mib = |bytes: u64| bytes as f64 / (1 << 20) as f64;
    println!(
        "copied {} records from {} ({:.1} MiB) into {} ({:.1} MiB)",
        done.records,
        from.display(),
        mib(done.bytes_before),
        into.display(),
        mib(done.bytes_after),
    );
    println!(
        "to use it, with the server stopped: mv {from} {from}.old && mv {into} {from}",
        from = from.display(),
        into = into.display(),
    );
    Ok(ExitCode::SUCCESS)
}
