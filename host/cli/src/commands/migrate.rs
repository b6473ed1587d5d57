//! `hookhost migrate`: makes or upgrades the PostgreSQL schema `[store]`
//! names, then exits. `serve` does the same at start; this is for operators
//! who migrate as a deploy step, before any node runs the new version.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Result, bail};
use hookhost_core::config::{Config, StoreBackend};
use hookhost_core::store::postgres::{PgSettings, PgStore};

pub fn migrate(config_file: &Path) -> Result<ExitCode> {
    let config = Config::load(config_file)?;
    if config.store.backend != StoreBackend::Postgres {
        bail!(
            "{}: store.backend is not \"postgres\": the embedded sled store needs no migration",
            config_file.display()
        );
    }
    let store = PgStore::open(&PgSettings {
        pool_size: 1,
        ..config.store.postgres_settings()
    })?;
    let applied = store.applied_at_open();
    let version = store.schema_version()?;
    if applied.is_empty() {
        println!(
            "schema {} is at version {version}: nothing to do",
            config.store.schema
        );
    } else {
        println!(
            "schema {} migrated to version {version} (applied {applied:?})",
            config.store.schema
        );
    }
    Ok(ExitCode::SUCCESS)
}
