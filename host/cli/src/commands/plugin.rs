//! `hookhost plugin check|run`: load one plugin file, or run it on one event.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use hookhost_plugin_runtime::{LogLevel, Plugin, PluginsConfig, Runtime, plugin_name};
use sha2::{Digest, Sha256};

/// Where the CLI keeps compiled plugins between runs: a JavaScript or
/// Python component takes seconds to compile, a cached one milliseconds.
/// `HOOKHOST_PLUGIN_CACHE`, else `$XDG_CACHE_HOME/hookhost/plugins`, else
/// `~/.cache/hookhost/plugins`.
fn cli_cache_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("HOOKHOST_PLUGIN_CACHE") {
        return Some(PathBuf::from(dir));
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("hookhost").join("plugins"))
}

/// Loads one file outside any server, for the CLI's plugin commands.
pub fn load_single(file: &Path, use_cache: bool) -> Result<Plugin> {
    let Some(name) = plugin_name(file) else {
        bail!("{}: a plugin file must be named NAME.wasm", file.display());
    };
    let bytes = std::fs::read(file).with_context(|| format!("{}: cannot read", file.display()))?;
    let sha256 = Sha256::digest(&bytes).into();
    let config = PluginsConfig {
        cache_dir: if use_cache { cli_cache_dir() } else { None },
        // An author running a plugin by hand wants every line it logs.
        log_level: LogLevel::Trace,
        ..PluginsConfig::default()
    };
    let runtime = Runtime::new(&config)?;
    Ok(runtime.load(name, file, &bytes, sha256)?)
}

pub fn plugin_check(file: &Path) -> Result<ExitCode> {
    // Always compiled: `check` reports what compiling this file costs.
    let plugin = load_single(file, false)?;
    let report = serde_json::json!({
        "file": file,
        "plugin": plugin.name(),
        "implements": "hookhost:plugin@0.1.0",
        "roles": plugin.roles(),
        "sha256": hex::encode(plugin.sha256()),
        "compile_ms": plugin.load_info().compile_time.as_secs_f64() * 1e3,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(ExitCode::SUCCESS)
}

pub fn plugin_run(file: &Path, event_file: &Path, config_file: Option<&Path>) -> Result<ExitCode> {
    let event_text = std::fs::read_to_string(event_file)
        .with_context(|| format!("{}: cannot read", event_file.display()))?;
    let event_json: serde_json::Value = serde_json::from_str(&event_text)
        .with_context(|| format!("{}: not valid JSON", event_file.display()))?;
    let event = hookhost_core::event_json::from_json(&event_json)
        .with_context(|| format!("{}: not an event", event_file.display()))?;
    let config = read_config(config_file)?;
    let decision = load_single(file, true)?.decide(&event, &config);
    println!("{}", serde_json::to_string_pretty(&decision)?);
    Ok(if decision.has_error() {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

/// A plugin config file's text, checked to be JSON; `""` when none.
pub fn read_config(config_file: Option<&Path>) -> Result<String> {
    let Some(path) = config_file else {
        return Ok(String::new());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    serde_json::from_str::<serde::de::IgnoredAny>(&text)
        .with_context(|| format!("{}: not valid JSON", path.display()))?;
    Ok(text)
}
