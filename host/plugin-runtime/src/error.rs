use std::path::PathBuf;

/// Why a plugin file was refused. The previous version, if any, keeps serving.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LoadError {
    #[error("{file}: cannot read: {reason}")]
    Read { file: PathBuf, reason: String },
    #[error("{file}: not a WebAssembly component: {reason}")]
    NotComponent { file: PathBuf, reason: String },
    #[error(
        "{file}: does not implement the hookhost plugin contract: it exports none of \
         hookhost:plugin/{{filter,transform,router}}@0.1.0 (it exports: {exports})"
    )]
    NoRole { file: PathBuf, exports: String },
    #[error("{file}: does not match the hookhost plugin contract: {reason}")]
    Contract { file: PathBuf, reason: String },
    #[error("{file}: imports `{import}`, which hookhost does not provide")]
    UnknownImport { file: PathBuf, import: String },
    #[error("{file}: cannot be instantiated: {reason}")]
    Instantiate { file: PathBuf, reason: String },
}

/// Why one plugin call failed. It affects that event only.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("plugin `{0}` is not present")]
    NotPresent(String),
    #[error("plugin `{plugin}` does not export the {role} role")]
    MissingRole { plugin: String, role: &'static str },
    #[error("plugin `{plugin}` exceeded its CPU limit of {limit_ms} ms")]
    CpuLimit { plugin: String, limit_ms: u64 },
    #[error("plugin `{plugin}` exceeded its memory limit of {limit_mib} MiB")]
    MemoryLimit { plugin: String, limit_mib: u64 },
    #[error("plugin `{plugin}` trapped: {detail}")]
    Trap { plugin: String, detail: String },
    #[error("plugin `{plugin}` did not answer within {timeout_ms} ms")]
    Timeout { plugin: String, timeout_ms: u64 },
    #[error("plugin `{plugin}` failed: {message}")]
    Plugin { plugin: String, message: String },
    #[error("plugin `{plugin}` returned invalid output: {detail}")]
    InvalidOutput { plugin: String, detail: String },
    #[error("plugin `{plugin}` could not get an instance: {detail}")]
    Instantiate { plugin: String, detail: String },
}

/// wasmtime errors carry context chains; show all of it on one line.
pub(crate) fn error_text(e: &wasmtime::Error) -> String {
    let mut text = String::new();
    for (i, cause) in e.chain().enumerate() {
        if i > 0 {
            text.push_str(": ");
        }
        text.push_str(&cause.to_string());
    }
    text
}
