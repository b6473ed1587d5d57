//! Copying a data folder into a new one that holds only its live records
//! (`hookhost compact`). sled reuses the space of removed records but never
//! gives it back, and a log written one record at a time holds several
//! times its live bytes (BENCHMARKS.md); records copied in batches into a
//! fresh log take the least space sled can give them.
//!
//! The copy is made with the server stopped (sled locks the folder, so a
//! running server makes the open fail) and never changes the source: the
//! operator swaps the folders once it has succeeded.

use std::path::Path;

use super::{Open, SledSettings, is_locked_elsewhere, written_compressed};
use crate::store::StoreError;

/// Records per write into the new folder: of one record, a thousand or all
/// of them per write, a thousand gave sled's smallest file (BENCHMARKS.md,
/// "Tried on the disk").
const BATCH: usize = 1_000;

/// What a compaction did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compacted {
    /// Records copied, over every tree.
    pub records: u64,
    /// Bytes of the source folder and of the new one, every file counted
    /// (the journal included when it lives in the folder).
    pub bytes_before: u64,
    pub bytes_after: u64,
}

/// Copies the store in `from` into `into` (absent or empty), keeping the
/// way `from` was written (compressed or not), and every file of `from`
/// that is not sled's own (the ingest journal) as it is. On an error `into`
/// may hold part of a copy, to be removed. Blocking.
pub fn compact(from: &Path, into: &Path, settings: SledSettings) -> Result<Compacted, StoreError> {
    if !from.join("conf").is_file() {
        return Err(StoreError(format!(
            "{}: not a data folder (no sled `conf` file in it)",
            from.display()
        )));
    }
    let absolute = |path: &Path| std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    if absolute(into).starts_with(absolute(from)) {
        return Err(StoreError(format!(
            "{}: inside the data folder it would copy; give a folder beside it",
            into.display()
        )));
    }
    if std::fs::read_dir(into).is_ok_and(|mut entries| entries.next().is_some()) {
        return Err(StoreError(format!(
            "{}: not empty; give a new folder to copy into",
            into.display()
        )));
    }
    let settings = SledSettings {
        compress: written_compressed(from).unwrap_or(settings.compress),
        ..settings
    };
    let source = Open::new(from, &settings).map_err(|e| {
        if is_locked_elsewhere(&e) {
            StoreError(format!(
                "{} (a running server holds its data folder: stop it first)",
                e.0
            ))
        } else {
            e
        }
    })?;
    let target = Open::new(into, &settings)?;
    let mut records = 0;
    for name in source.db.tree_names() {
        let (from_tree, into_tree) = (source.db.open_tree(&name)?, target.db.open_tree(&name)?);
        let mut batch = sled::Batch::default();
        let mut in_batch = 0;
        for entry in from_tree.iter() {
            let (key, value) = entry?;
            batch.insert(key, value);
            in_batch += 1;
            if in_batch == BATCH {
                into_tree.apply_batch(std::mem::take(&mut batch))?;
                records += in_batch as u64;
                in_batch = 0;
            }
        }
        into_tree.apply_batch(batch)?;
        records += in_batch as u64;
    }
    target.tree.flush_durably()?;
    drop((source, target));
    copy_other_files(from, into)?;
    Ok(Compacted {
        records,
        bytes_before: folder_bytes(from)?,
        bytes_after: folder_bytes(into)?,
    })
}

/// sled's own entries in its folder: what the copy above rewrote.
fn is_sleds(name: &str) -> bool {
    matches!(name, "conf" | "db" | "blobs") || name.starts_with("snap.")
}

/// Copies what else `from` holds (the journal's segments) into `into`,
/// synced, as the server would find it there.
fn copy_other_files(from: &Path, into: &Path) -> Result<(), StoreError> {
    let io = |path: &Path, e: std::io::Error| StoreError(format!("{}: {e}", path.display()));
    for entry in std::fs::read_dir(from).map_err(|e| io(from, e))? {
        let entry = entry.map_err(|e| io(from, e))?;
        let name = entry.file_name();
        if is_sleds(&name.to_string_lossy()) {
            continue;
        }
        copy_tree(&entry.path(), &into.join(&name)).map_err(|e| io(&entry.path(), e))?;
    }
    // The new folder's entries, and the folder in its parent, survive a
    // crash too.
    sync_dir(into).map_err(|e| io(into, e))?;
    match into.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(parent) => sync_dir(parent).map_err(|e| io(parent, e)),
        None => sync_dir(Path::new(".")).map_err(|e| io(into, e)),
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

fn copy_tree(from: &Path, into: &Path) -> std::io::Result<()> {
    if from.is_dir() {
        std::fs::create_dir_all(into)?;
        for entry in std::fs::read_dir(from)? {
            let entry = entry?;
            copy_tree(&entry.path(), &into.join(entry.file_name()))?;
        }
        sync_dir(into)
    } else {
        std::fs::copy(from, into)?;
        std::fs::File::open(into)?.sync_all()
    }
}

/// Bytes of every file under `dir`.
fn folder_bytes(dir: &Path) -> Result<u64, StoreError> {
    let io = |e: std::io::Error| StoreError(format!("{}: {e}", dir.display()));
    let mut total = 0;
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let meta = entry.metadata().map_err(io)?;
        total += if meta.is_dir() {
            folder_bytes(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Job, JobStatus, Processed, StoredEvent};
    use crate::store::sled::SledStore;
    use crate::store::sled::tests::once_unlocked;
    use crate::store::{DeliveryQueue, EventStore, Store};

    fn processed(i: usize) -> Processed {
        let id = format!("e{i:06}");
        let mut event = StoredEvent::for_test(&id);
        event.data = format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(200));
        let mut outcome = Processed::new(event);
        outcome
            .jobs
            .push(Job::for_test(&format!("j{i:06}"), &id, JobStatus::Pending));
        outcome
    }

    #[test]
    fn a_compacted_folder_holds_every_record_and_the_journal_in_less_space() {
        let root = tempfile::tempdir().unwrap();
        let (from, into) = (root.path().join("db"), root.path().join("db.new"));
        let store = SledStore::open(&from).unwrap();
        // One record per write, then most of them removed: the log keeps
        // their space.
        for i in 0..3_000 {
            store.complete_pipeline(&[processed(i)]).unwrap();
        }
        let instance = store.instance().unwrap();
        for i in 0..2_500 {
            instance.tree.remove(format!("e/e{i:06}")).unwrap();
        }
        store.flush().unwrap();
        store.close().unwrap();
        drop((instance, store));
        std::fs::create_dir_all(from.join("journal")).unwrap();
        std::fs::write(from.join("journal/0000000001.seg"), b"frames").unwrap();

        let done = once_unlocked(|| compact(&from, &into, SledSettings::default())).unwrap();
        assert!(done.bytes_after < done.bytes_before, "no smaller: {done:?}");
        assert_eq!(
            std::fs::read(into.join("journal/0000000001.seg")).unwrap(),
            b"frames"
        );
        // Into a folder that is not empty: refused, naming it.
        let again = compact(&from, &into, SledSettings::default()).unwrap_err();
        assert!(
            again.0.contains("db.new") && again.0.contains("not empty"),
            "{again}"
        );

        let copy = SledStore::open(&into).unwrap();
        assert!(copy.event("e002499").unwrap().is_none());
        let kept = copy.event("e002500").unwrap().unwrap();
        assert!(kept.data.starts_with("{\"n\":2500,"), "{}", kept.data);
        assert_eq!(copy.job("j000000").unwrap().unwrap().event_id, "e000000");
        assert_eq!(copy.pending_jobs().unwrap().len(), 3_000);
    }

    #[test]
    fn a_folder_without_a_store_or_a_target_inside_the_source_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let (from, into) = (root.path().join("db"), root.path().join("x"));
        let e = compact(&from, &into, SledSettings::default()).unwrap_err();
        assert!(e.0.contains("not a data folder"), "{e}");
        SledStore::open(&from).unwrap().close().unwrap();
        let e = compact(&from, &from.join("new"), SledSettings::default()).unwrap_err();
        assert!(e.0.contains("inside the data folder"), "{e}");
    }
}
