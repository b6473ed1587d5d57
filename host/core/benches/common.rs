//! Shared by the benches: the process's memory and a folder's size.

use hookhost_core::process_stats::Process;

/// Resident memory of this process (NaN where /proc cannot be read).
pub fn rss_mib() -> f64 {
    Process::Current
        .rss_kib()
        .map_or(f64::NAN, |kib| kib as f64 / 1024.0)
}

/// Bytes of the files under `path`.
pub fn dir_bytes(path: &std::path::Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(path).into_iter().flatten().flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        total += if meta.is_dir() {
            dir_bytes(&entry.path())
        } else {
            meta.len()
        };
    }
    total
}
