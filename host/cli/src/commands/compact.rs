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
    println!(
        "copied {} records from {} ({}) into {} ({})",
        done.records,
        from.display(),
        size(done.bytes_before),
        into.display(),
        size(done.bytes_after),
    );
    println!(
        "to use it, with the server stopped: mv {from} {from}.old && mv {into} {from}",
        from = from.display(),
        into = into.display(),
    );
    Ok(ExitCode::SUCCESS)
}

/// `bytes` in the largest binary unit that keeps a whole number before the
/// point.
fn size(bytes: u64) -> String {
    let mut value = bytes as f64;
    for unit in ["B", "KiB", "MiB"] {
        if value < 1024.0 {
            return format!("{value:.1} {unit}");
        }
        value /= 1024.0;
    }
    format!("{value:.1} GiB")
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_read_in_their_unit() {
        assert_eq!(super::size(13_330), "13.0 KiB");
        assert_eq!(super::size(715_972_643), "682.8 MiB");
        assert_eq!(super::size(3 << 30), "3.0 GiB");
        assert_eq!(super::size(12), "12.0 B");
    }
}
