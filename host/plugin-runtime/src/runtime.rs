//! The wasmtime engine, narrowed to what hookhost needs: engine settings,
//! the instance pool, the epoch ticker that enforces CPU limits, the linker
//! with the host's imports, and compiling (or loading from cache) a component.
//! The rest of the crate never touches wasmtime's knobs directly.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use wasmtime::PoolingAllocationConfig;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config as EngineConfig, Enabled, Engine, InstanceAllocationStrategy};

use super::bindings::{self, FullPlugin};
use super::epoch::EpochTicker;
use super::error::{LoadError, error_text};
use super::plugin::{CallState, Plugin, Roles};
use crate::settings::{Allocator, PluginsConfig};

/// What `wasi:random/insecure-seed` returns: constant, so not randomness.
const FIXED_SEED: (u64, u64) = (0x686f_6f6b_686f_7374, 0x7365_6564_0000_0001);

/// Shared by every plugin: one engine, one linker, one ticker, one cache.
pub struct Runtime {
    engine: Engine,
    linker: Linker<CallState>,
    cache: Option<CompiledCache>,
    config: PluginsConfig,
    ticker: Arc<EpochTicker>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot start the plugin runtime: {0}")]
pub struct RuntimeError(String);

impl Runtime {
    pub fn new(config: &PluginsConfig) -> Result<Arc<Runtime>, RuntimeError> {
        let err = |e: wasmtime::Error| RuntimeError(error_text(&e));
        let mut engine_config = EngineConfig::new();
        engine_config.epoch_interruption(true);
        // Plugins do not need stack traces of guest frames; skip the bookkeeping.
        engine_config.wasm_backtrace_max_frames(None);
        if config.allocator == Allocator::Pooling {
            let max_memory = (config.max_memory_limit_mib() as usize) << 20;
            let mut pool = PoolingAllocationConfig::new();
            pool.total_component_instances(config.max_instances)
                // A Rust guest has a handful of core instances; other toolchains more.
                .total_core_instances(config.max_instances.saturating_mul(4))
                .total_memories(config.max_instances.saturating_mul(2))
                .total_tables(config.max_instances.saturating_mul(2))
                .max_memory_size(max_memory)
                // Reset a used slot with memset instead of madvise: a recycled
                // instance then starts without page faults (measured in BENCHMARKS.md).
                .linear_memory_keep_resident(1 << 20)
                .table_keep_resident(64 << 10)
                .pagemap_scan(Enabled::Auto);
            engine_config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        }
        let engine = Engine::new(&engine_config).map_err(err)?;
        let mut linker = Linker::new(&engine);
        FullPlugin::add_to_linker::<CallState, HasSelf<CallState>>(&mut linker, |s| s)
            .map_err(err)?;
        let cache = match &config.cache_dir {
            Some(dir) => Some(
                CompiledCache::open(dir, &engine)
                    .map_err(|e| RuntimeError(format!("plugin cache {}: {e}", dir.display())))?,
            ),
            None => None,
        };
        let ticker = Arc::new(EpochTicker::start(engine.clone()));
        Ok(Arc::new(Runtime {
            engine,
            linker,
            cache,
            config: config.clone(),
            ticker,
        }))
    }

    pub fn config(&self) -> &PluginsConfig {
        &self.config
    }

    /// Compiles (or loads from the cache) `bytes` (SHA-256 `sha256`), read from `file`, checks it
    /// implements the contract, and pre-links it as plugin `name`.
    pub fn load(
        self: &Arc<Self>,
        name: &str,
        file: &Path,
        bytes: &[u8],
        sha256: [u8; 32],
    ) -> Result<Plugin, LoadError> {
        let started = Instant::now();
        let (component, from_cache) = self.compile(file, bytes, &sha256)?;
        let compile_time = started.elapsed();

        let ty = component.component_type();
        let mut linker = self.linker.clone();
        for (import, _) in ty.imports(&self.engine) {
            if !import.starts_with(bindings::HOST_IMPORT_PREFIX)
                && !import.starts_with(bindings::WASI_IMPORT_PREFIX)
            {
                return Err(LoadError::UnknownImport {
                    file: file.to_owned(),
                    import: import.to_string(),
                });
            }
        }
        for (import, _) in ty.imports(&self.engine) {
            // Rust's std HashMap (serde_json's ordered maps use one) asks for a
            // seed at creation. A fixed seed keeps them working without
            // granting randomness; see wit/README.md.
            if import.starts_with("wasi:random/insecure-seed@") {
                linker
                    .instance(import)
                    .and_then(|mut i| {
                        i.func_wrap("insecure-seed", |_, ()| Ok(((FIXED_SEED.0, FIXED_SEED.1),)))
                    })
                    .map_err(|e| LoadError::Instantiate {
                        file: file.to_owned(),
                        reason: error_text(&e),
                    })?;
            }
        }
        // A std guest imports more WASI (stdio, env, exit) though it never
        // needs it: such calls trap, nothing is granted. See wit/README.md.
        linker
            .define_unknown_imports_as_traps(&component)
            .map_err(|e| LoadError::Instantiate {
                file: file.to_owned(),
                reason: error_text(&e),
            })?;
        let pre = linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::Instantiate {
                file: file.to_owned(),
                reason: error_text(&e),
            })?;

        let exports: Vec<String> = ty
            .exports(&self.engine)
            .map(|(n, _)| n.to_string())
            .collect();
        let has = |name: &str| exports.iter().any(|e| e == name);
        let contract = |role: &str, e: wasmtime::Error| LoadError::Contract {
            file: file.to_owned(),
            reason: format!("its {role} export: {}", error_text(&e)),
        };
        let roles = Roles {
            filter: if has(bindings::FILTER_EXPORT) {
                Some(bindings::FilterIndices::new(&pre).map_err(|e| contract("filter", e))?)
            } else {
                None
            },
            transform: if has(bindings::TRANSFORM_EXPORT) {
                Some(bindings::TransformIndices::new(&pre).map_err(|e| contract("transform", e))?)
            } else {
                None
            },
            router: if has(bindings::ROUTER_EXPORT) {
                Some(bindings::RouterIndices::new(&pre).map_err(|e| contract("router", e))?)
            } else {
                None
            },
        };
        if roles.is_empty() {
            return Err(LoadError::NoRole {
                file: file.to_owned(),
                exports: if exports.is_empty() {
                    "nothing".into()
                } else {
                    exports.join(", ")
                },
            });
        }
        let settings = self.config.settings_for(name);
        let plugin = Plugin::new(
            self.ticker.clone(),
            name,
            file,
            sha256,
            roles,
            pre,
            settings,
            super::plugin::LoadInfo {
                compile_time,
                from_cache,
            },
        );
        // Instantiate once now so type mismatches and start-up traps refuse the
        // file here, not on the first event. The instance is kept warm.
        plugin.prewarm().map_err(|reason| LoadError::Contract {
            file: file.to_owned(),
            reason,
        })?;
        Ok(plugin)
    }

    fn compile(
        &self,
        file: &Path,
        bytes: &[u8],
        sha256: &[u8; 32],
    ) -> Result<(Component, bool), LoadError> {
        if let Some(cache) = &self.cache
            && let Some(component) = cache.get(&self.engine, sha256)
        {
            return Ok((component, true));
        }
        if has_core_module_header(bytes) {
            return Err(LoadError::NotComponent {
                file: file.to_owned(),
                reason: "it is a core WebAssembly module; build it as a component \
                         (target wasm32-wasip2, or `wasm-tools component new`)"
                    .into(),
            });
        }
        if !bytes.starts_with(b"\0asm") {
            return Err(LoadError::NotComponent {
                file: file.to_owned(),
                reason: "not a WebAssembly binary (it does not start with the `\\0asm` magic)"
                    .into(),
            });
        }
        let component =
            Component::new(&self.engine, bytes).map_err(|e| LoadError::NotComponent {
                file: file.to_owned(),
                reason: error_text(&e),
            })?;
        if let Some(cache) = &self.cache {
            cache.put(&component, sha256);
        }
        Ok((component, false))
    }
}

/// A core module starts with the same magic as a component but a different
/// version/layer field; telling them apart gives a far better message.
fn has_core_module_header(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && bytes[0..4] == *b"\0asm" && bytes[4..8] == [1, 0, 0, 0]
}

/// Compiled components on disk, keyed by the wasm's SHA-256 and the engine's
/// compatibility hash, so a restart (or the same file under another name)
/// does not recompile. Only files this cache wrote are ever deserialized.
struct CompiledCache {
    dir: PathBuf,
    engine_key: String,
}

impl CompiledCache {
    fn open(dir: &Path, engine: &Engine) -> std::io::Result<CompiledCache> {
        std::fs::create_dir_all(dir)?;
        let mut h = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        Ok(CompiledCache {
            dir: dir.to_owned(),
            engine_key: format!("{:016x}", h.finish()),
        })
    }

    fn path(&self, sha256: &[u8; 32]) -> PathBuf {
        self.dir
            .join(format!("{}-{}.cwasm", hex::encode(sha256), self.engine_key))
    }

    fn get(&self, engine: &Engine, sha256: &[u8; 32]) -> Option<Component> {
        let path = self.path(sha256);
        // Read into memory rather than mmap the file: a cache file truncated
        // by someone else while mapped would kill the process with SIGBUS.
        let bytes = std::fs::read(&path).ok()?;
        // SAFETY: the file was written by `put` below for this engine
        // configuration (its name carries the engine's compatibility hash), in
        // a folder the operator gave to hookhost alone.
        match unsafe { Component::deserialize(engine, &bytes) } {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %error_text(&e), "discarding unreadable compiled plugin");
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    fn put(&self, component: &Component, sha256: &[u8; 32]) {
        let path = self.path(sha256);
        let result = component
            .serialize()
            .map_err(|e| error_text(&e))
            .and_then(|bytes| {
                // Write then rename: a crash never leaves a torn cache file.
                let tmp = path.with_extension(format!("tmp{}", std::process::id()));
                std::fs::write(&tmp, bytes)
                    .and_then(|_| std::fs::rename(&tmp, &path))
                    .map_err(|e| e.to_string())
            });
        if let Err(e) = result {
            tracing::warn!(file = %path.display(), error = %e, "cannot write compiled plugin cache");
        }
    }
}
