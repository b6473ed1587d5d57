//! `hookhost serve`: the server, with plugins hot-reloaded from their folder.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use hookhost_core::config::Config;
use hookhost_plugin_runtime::{Registry, Runtime, Watcher};

pub fn serve(config_file: Option<&Path>, plugins_dir: Option<PathBuf>) -> Result<ExitCode> {
    // Signals first: a SIGTERM during start-up must still mean a clean stop.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let (mut term, mut int) = {
        let _enter = rt.enter();
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::terminate())?,
            signal(SignalKind::interrupt())?,
        )
    };
    let mut config = match config_file {
        Some(file) => Config::load(file)?,
        None => Config::default(),
    };
    if let Some(dir) = plugins_dir {
        config.plugins.dir = dir;
    }
    let dir = std::fs::canonicalize(&config.plugins.dir)
        .with_context(|| format!("plugins folder {}", config.plugins.dir.display()))?;
    if !dir.is_dir() {
        bail!("plugins folder {} is not a folder", dir.display());
    }
    config.plugins.dir = dir.clone();
    let runtime = Runtime::new(&config.plugins)?;
    let registry = Registry::new(runtime);
    let results = registry
        .load_dir(&dir)
        .with_context(|| format!("reading plugins folder {}", dir.display()))?;
    let loaded = results.iter().filter(|r| r.is_ok()).count();
    tracing::info!(dir = %dir.display(), loaded, refused = results.len() - loaded, "plugins ready");
    let _watcher = if config.plugins.watch {
        Some(Watcher::start(
            registry.clone(),
            &dir,
            Duration::from_millis(config.plugins.reload_debounce_ms),
        )?)
    } else {
        None
    };
    tracing::info!(dir = %dir.display(), watching = config.plugins.watch, "plugins watched; Ctrl-C or SIGTERM stops hookhost");

    let shutdown = async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutdown requested");
    };
    rt.block_on(hookhost_server::serve(config, registry, shutdown))?;
    Ok(ExitCode::SUCCESS)
}
