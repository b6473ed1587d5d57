//! `[plugins]` settings: where plugins live and how each is sandboxed. They
//! live here, not in the host's config module, so this crate depends on no
//! other hookhost crate; the host's config embeds them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// `[plugins]`: where plugins live and how they are sandboxed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PluginsConfig {
    /// Folder watched for `*.wasm` components; a plugin's name is its file stem.
    pub dir: PathBuf,
    /// Where compiled components are cached, keyed by content hash. Unset: no cache.
    pub cache_dir: Option<PathBuf>,
    /// Watch `dir` and reload on change.
    pub watch: bool,
    /// Quiet period before a changed file is loaded (lets `cp` finish).
    pub reload_debounce_ms: u64,
    /// Instance allocation: `pooling` (pre-reserved slots) or `on-demand` (mmap per instance).
    pub allocator: Allocator,
    /// Instance slots in the pool: bounds concurrent and warm instances of all plugins.
    pub max_instances: u32,
    /// Defaults for every plugin (see [`PluginSettings`]).
    pub isolation: Isolation,
    pub cpu_limit_ms: u64,
    pub memory_limit_mib: u64,
    pub call_timeout_ms: u64,
    /// Plugin log lines below this level are dropped at the host.
    pub log_level: LogLevel,
    /// Largest component `PUT /v1/plugins/{name}` takes (a Python plugin is ~18 MiB).
    pub max_upload_mib: u64,
    /// Per-plugin overrides: `[plugins.settings.alarm-filter]`.
    pub settings: BTreeMap<String, PluginOverride>,
}

impl Default for PluginsConfig {
    fn default() -> Self {
        PluginsConfig {
            dir: PathBuf::from("plugins"),
            cache_dir: None,
            watch: true,
            reload_debounce_ms: 50,
            allocator: Allocator::Pooling,
            max_instances: 1000,
            isolation: PluginSettings::default().isolation,
            cpu_limit_ms: PluginSettings::default().cpu_limit_ms,
            memory_limit_mib: PluginSettings::default().memory_limit_mib,
            call_timeout_ms: PluginSettings::default().call_timeout_ms,
            log_level: PluginSettings::default().log_level,
            max_upload_mib: 64,
            settings: BTreeMap::new(),
        }
    }
}

impl PluginsConfig {
    /// `max_upload_mib` in bytes.
    pub fn max_upload_bytes(&self) -> usize {
        usize::try_from(self.max_upload_mib << 20).unwrap_or(usize::MAX)
    }

    /// The settings every plugin gets unless overridden.
    pub fn defaults(&self) -> PluginSettings {
        PluginSettings {
            isolation: self.isolation,
            cpu_limit_ms: self.cpu_limit_ms,
            memory_limit_mib: self.memory_limit_mib,
            call_timeout_ms: self.call_timeout_ms,
            log_level: self.log_level,
        }
    }

    /// The settings that apply to plugin `name`: its overrides over the defaults.
    pub fn settings_for(&self, name: &str) -> PluginSettings {
        let mut settings = self.defaults();
        if let Some(o) = self.settings.get(name) {
            if let Some(v) = o.isolation {
                settings.isolation = v;
            }
            if let Some(v) = o.cpu_limit_ms {
                settings.cpu_limit_ms = v;
            }
            if let Some(v) = o.memory_limit_mib {
                settings.memory_limit_mib = v;
            }
            if let Some(v) = o.call_timeout_ms {
                settings.call_timeout_ms = v;
            }
            if let Some(v) = o.log_level {
                settings.log_level = v;
            }
        }
        settings
    }

    /// The largest memory limit any plugin may have: sizes the instance pool.
    pub fn max_memory_limit_mib(&self) -> u64 {
        self.settings
            .values()
            .filter_map(|o| o.memory_limit_mib)
            .chain([self.memory_limit_mib])
            .max()
            .unwrap_or(self.memory_limit_mib)
    }

    /// Checks limits and pool size; the message names the offending key.
    pub fn validate(&self) -> Result<(), String> {
        let check = |key: &str, s: &PluginSettings| -> Result<(), String> {
            if s.cpu_limit_ms == 0 {
                return Err(format!("{key}cpu_limit_ms must be at least 1"));
            }
            if s.memory_limit_mib == 0 || s.memory_limit_mib > 4096 {
                return Err(format!("{key}memory_limit_mib must be between 1 and 4096"));
            }
            if s.call_timeout_ms < s.cpu_limit_ms {
                return Err(format!(
                    "{key}call_timeout_ms must be at least cpu_limit_ms"
                ));
            }
            Ok(())
        };
        check("plugins.", &self.defaults())?;
        for name in self.settings.keys() {
            check(
                &format!("plugins.settings.{name}."),
                &self.settings_for(name),
            )?;
        }
        if self.max_instances == 0 {
            return Err("plugins.max_instances must be at least 1".into());
        }
        if self.max_upload_mib == 0 || self.max_upload_mib > 1024 {
            return Err("plugins.max_upload_mib must be between 1 and 1024".into());
        }
        Ok(())
    }
}

/// How each plugin call gets its WebAssembly instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Isolation {
    /// A fresh instance per call: no state survives between events.
    Fresh,
    /// Instances are kept warm and reused for later calls; any trap or limit
    /// hit discards the instance.
    Reuse,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Allocator {
    Pooling,
    OnDemand,
}

/// Sandbox settings of one plugin.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginSettings {
    pub isolation: Isolation,
    /// CPU time one call may use in guest code (epoch deadline).
    pub cpu_limit_ms: u64,
    /// Linear memory one instance may grow to.
    pub memory_limit_mib: u64,
    /// Wall-clock bound on a call from async code, host calls and queueing included.
    pub call_timeout_ms: u64,
    /// The least level of the plugin's own log lines that reach the log.
    pub log_level: LogLevel,
}

/// A plugin's log lines at or above this level are written; `off` drops all.
/// Default `warn`: a plugin's `info` lines are opt-in per plugin, so a
/// chatty plugin cannot flood a server's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
    Off,
}

impl Default for PluginSettings {
    fn default() -> Self {
        PluginSettings {
            isolation: Isolation::Reuse,
            cpu_limit_ms: 10,
            memory_limit_mib: 16,
            call_timeout_ms: 1000,
            log_level: LogLevel::Warn,
        }
    }
}

impl PluginSettings {
    pub fn cpu_limit(&self) -> Duration {
        Duration::from_millis(self.cpu_limit_ms)
    }
    pub fn memory_limit_bytes(&self) -> usize {
        (self.memory_limit_mib as usize) << 20
    }
    pub fn call_timeout(&self) -> Duration {
        Duration::from_millis(self.call_timeout_ms)
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginOverride {
    pub isolation: Option<Isolation>,
    pub cpu_limit_ms: Option<u64>,
    pub memory_limit_mib: Option<u64>,
    pub call_timeout_ms: Option<u64>,
    pub log_level: Option<LogLevel>,
}
