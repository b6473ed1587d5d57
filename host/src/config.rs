//! Configuration: the TOML file `hookhost serve --config FILE` reads.
//!
//! Every key has a default, so an empty file (or no file) is a valid config.
//! Errors name the file, the line and the key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub plugins: PluginsConfig,
}

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
            settings: BTreeMap::new(),
        }
    }
}

impl PluginsConfig {
    /// The settings every plugin gets unless overridden.
    pub fn defaults(&self) -> PluginSettings {
        PluginSettings {
            isolation: self.isolation,
            cpu_limit_ms: self.cpu_limit_ms,
            memory_limit_mib: self.memory_limit_mib,
            call_timeout_ms: self.call_timeout_ms,
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

    fn validate(&self) -> Result<(), String> {
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
}

impl Default for PluginSettings {
    fn default() -> Self {
        PluginSettings {
            isolation: Isolation::Reuse,
            cpu_limit_ms: 10,
            memory_limit_mib: 16,
            call_timeout_ms: 1000,
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
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}: {message}")]
    Invalid { file: PathBuf, message: String },
}

impl Config {
    /// Reads and checks a config file. Relative paths in it are taken
    /// relative to the file's folder, so a config works from any directory.
    pub fn load(file: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
            file: file.to_owned(),
            source,
        })?;
        let mut config = Config::parse(&text).map_err(|message| ConfigError::Invalid {
            file: file.to_owned(),
            message,
        })?;
        let base = file.parent().unwrap_or(Path::new("."));
        config.plugins.dir = base.join(&config.plugins.dir);
        if let Some(cache) = &mut config.plugins.cache_dir {
            *cache = base.join(&*cache);
        }
        Ok(config)
    }

    /// Parses config text; the error says where (line and column) and what.
    pub fn parse(text: &str) -> Result<Config, String> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let place = e.span().map(|span| {
                let line = text[..span.start].matches('\n').count() + 1;
                let column = span.start - text[..span.start].rfind('\n').map_or(0, |i| i + 1) + 1;
                format!("line {line}, column {column}: ")
            });
            format!("{}{}", place.unwrap_or_default(), e.message())
        })?;
        config.plugins.validate()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_has_documented_defaults() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.plugins.dir, PathBuf::from("plugins"));
        assert_eq!(c.plugins.isolation, Isolation::Reuse);
        assert_eq!(c.plugins.cpu_limit_ms, 10);
        assert_eq!(c.plugins.memory_limit_mib, 16);
        assert_eq!(c.plugins.allocator, Allocator::Pooling);
    }

    #[test]
    fn per_plugin_overrides_apply_over_defaults() {
        let c = Config::parse(
            "[plugins]\ncpu_limit_ms = 20\n[plugins.settings.alarm-filter]\nisolation = \"fresh\"\nmemory_limit_mib = 64\n",
        )
        .unwrap();
        let s = c.plugins.settings_for("alarm-filter");
        assert_eq!(s.isolation, Isolation::Fresh);
        assert_eq!(s.cpu_limit_ms, 20);
        assert_eq!(s.memory_limit_mib, 64);
        assert_eq!(c.plugins.settings_for("other").memory_limit_mib, 16);
        assert_eq!(c.plugins.max_memory_limit_mib(), 64);
    }

    #[test]
    fn unknown_key_is_reported_with_its_line() {
        let err = Config::parse("[plugins]\ndir = \"p\"\ncpu_limit = 5\n").unwrap_err();
        assert!(err.starts_with("line 3, column 1: "), "{err}");
        assert!(err.contains("cpu_limit"), "{err}");
    }

    #[test]
    fn bad_value_names_the_key() {
        let err = Config::parse("[plugins]\nisolation = \"shared\"\n").unwrap_err();
        assert!(err.starts_with("line 2"), "{err}");
        let err = Config::parse("[plugins]\ncpu_limit_ms = 0\n").unwrap_err();
        assert!(err.contains("plugins.cpu_limit_ms"), "{err}");
    }

    #[test]
    fn load_names_the_file_and_resolves_paths_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hookhost.toml");
        std::fs::write(&file, "[plugins]\ndir = \"p\"\ncache_dir = \"c\"\n").unwrap();
        let c = Config::load(&file).unwrap();
        assert_eq!(c.plugins.dir, dir.path().join("p"));
        assert_eq!(c.plugins.cache_dir, Some(dir.path().join("c")));
        std::fs::write(&file, "[plugins\n").unwrap();
        let err = Config::load(&file).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("{}: line 1", file.display())),
            "{err}"
        );
    }
}
