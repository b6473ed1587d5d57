//! Which jobs are still to deliver, on sled: queue markers per write.
//!
//! `Q/<unique, 16 hex>/<count>` → the ids (a JSON array) of up to
//! [`MARKER_ENTRIES`] jobs that became pending in one write. One key per
//! write rather than one per job, because sled's cost is per key
//! (BENCHMARKS.md). A job that leaves the queue is not taken out of its
//! marker (that would be a read and a rewrite of a shared key per delivery):
//! its entry goes stale, and an entry counts only while its job's record
//! says pending. The sweep drops stale entries a few markers at a time,
//! paced by the jobs that leave the queue, so the markers hold about twice
//! the pending jobs' entries at most.
//!
//! Invariant: a job whose stored status is pending has an entry in some
//! marker. A write that makes a job pending from any other status (or
//! makes a new one) adds an entry in a new marker in the same batch. The
//! sweep drops only entries whose job it read as not pending, and rewrites
//! only the marker it read, so an entry added meanwhile is never lost.
//! A job may have two entries (a pipeline re-run, two writes racing): walks
//! yield it once.

use std::collections::HashSet;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Mutex, MutexGuard, TryLockError};

use super::{MARKER_ENTRIES, key};
use crate::model::JobStatus;
use crate::store::StoreError;

const PREFIX: &[u8] = b"Q/";
/// Past every `Q/` key (`0` follows `/`).
const END: &[u8] = b"Q0";

/// Marker entries the sweep may check per job that left the queue: two
/// checks per departure empty stale entries about as fast as they come
/// (stale ≈ pending ÷ (checks − 1) in steady state).
const CHECKS_PER_DEPARTURE: i64 = 2;

fn marker_key(unique: u64, count: usize) -> Vec<u8> {
    [marker_prefix(unique), count.to_string().into_bytes()].concat()
}

/// `Q/<16 hex>/<count>` → (unique, count): [`marker_key`]'s inverse.
fn parse_marker_key(k: &[u8]) -> Result<(u64, usize), StoreError> {
    let corrupt = || StoreError("corrupt queue marker".into());
    let (unique, count) = std::str::from_utf8(k.get(2..).ok_or_else(corrupt)?)
        .ok()
        .and_then(|rest| rest.split_once('/'))
        .ok_or_else(corrupt)?;
    let unique = u64::from_str_radix(unique, 16).map_err(|_| corrupt())?;
    let count = count.parse().map_err(|_| corrupt())?;
    Ok((unique, count))
}

/// Every queue marker from the marker prefix `from` on (empty: the
/// first), oldest first.
fn markers(tree: &sled::Tree, from: &[u8]) -> sled::Iter {
    let start = if from.is_empty() { PREFIX } else { from };
    tree.range(start.to_vec()..END.to_vec())
}

/// The key prefix of marker `unique` (`Q/<unique>/`), which the sweep keeps
/// when it rewrites the marker (the count after it may change).
fn marker_prefix(unique: u64) -> Vec<u8> {
    format!("Q/{unique:016x}/").into_bytes()
}

/// The record of job `id` if it is stored and pending.
fn pending_record(tree: &sled::Tree, id: &str) -> Result<Option<sled::IVec>, StoreError> {
    match tree.get(key(b'j', id))? {
        Some(record) if super::record::job_status(&record)? == JobStatus::Pending => {
            Ok(Some(record))
        }
        _ => Ok(None),
    }
}

/// Ids of the jobs one write makes pending.
#[derive(Default)]
pub(super) struct Queued(Vec<String>);

impl Queued {
    pub(super) fn push(&mut self, id: &str) {
        self.0.push(id.to_string());
    }

    pub(super) fn write(self, db: &sled::Db, batch: &mut sled::Batch) -> Result<(), StoreError> {
        for chunk in self.0.chunks(MARKER_ENTRIES) {
            batch.insert(
                marker_key(db.generate_id()?, chunk.len()),
                serde_json::to_vec(chunk)?,
            );
        }
        Ok(())
    }
}

/// Calls `each` with the id and record of every pending job, oldest marker
/// first from the marker prefix `from` on (empty: the first), each job
/// once, until it returns false; `skip` is asked before a job's record is
/// read. Returns the prefix of the marker it stopped in (`None`: it ran off
/// the end), so that a later walk can go on from there.
pub(super) fn each_pending(
    tree: &sled::Tree,
    from: &[u8],
    skip: &dyn Fn(&str) -> bool,
    mut each: impl FnMut(&str, &[u8]) -> Result<bool, StoreError>,
) -> Result<Option<Vec<u8>>, StoreError> {
    let mut seen = HashSet::new();
    for item in markers(tree, from) {
        let (k, ids) = item?;
        let ids: Vec<String> = serde_json::from_slice(&ids)?;
        for id in ids {
            if seen.contains(&id) || skip(&id) {
                continue;
            }
            let Some(record) = pending_record(tree, &id)? else {
                continue;
            };
            if !each(&id, &record)? {
                return Ok(Some(marker_prefix(parse_marker_key(&k)?.0)));
            }
            seen.insert(id);
        }
    }
    Ok(None)
}

/// Pending jobs, each counted once (reads every entry's job record).
pub(super) fn count_pending(tree: &sled::Tree) -> Result<usize, StoreError> {
    let mut n = 0;
    each_pending(tree, &[], &|_| false, |_, _| {
        n += 1;
        Ok(true)
    })?;
    Ok(n)
}

/// The markers' entries, stale ones included: at least the pending jobs,
/// from a key scan alone.
pub(super) fn count_entries(tree: &sled::Tree) -> Result<usize, StoreError> {
    let mut n = 0;
    for k in markers(tree, &[]).keys() {
        n += parse_marker_key(&k?)?.1;
    }
    Ok(n)
}

/// Moves earlier versions' `q/<job id>` markers, one per pending job, into
/// `Q/` markers; returns how many.
pub(super) fn adopt_single_markers(db: &sled::Db, tree: &sled::Tree) -> Result<usize, StoreError> {
    let mut moved = 0;
    loop {
        let (mut batch, mut queued) = (sled::Batch::default(), Queued::default());
        for k in tree.scan_prefix(b"q/").keys().take(10_000) {
            let k = k?;
            let id = std::str::from_utf8(&k[2..]).map_err(|e| StoreError(e.to_string()))?;
            queued.push(id);
            batch.remove(k);
        }
        if queued.0.is_empty() {
            return Ok(moved);
        }
        moved += queued.0.len();
        queued.write(db, &mut batch)?;
        tree.apply_batch(batch)?;
    }
}

/// The sweep of stale entries: where it goes on, and how many entries it
/// may check.
#[derive(Default)]
pub(super) struct Sweep {
    /// The first key of the next marker to check (`None`: the first one).
    from: Mutex<Option<Vec<u8>>>,
    budget: AtomicI64,
}

/// Held until the sweep's batch is applied: no other write sweeps the same
/// markers meanwhile.
pub(super) struct Sweeping<'a>(#[allow(dead_code)] MutexGuard<'a, Option<Vec<u8>>>);

impl Sweep {
    /// Allows checks for `departed` jobs that left the queue and sweeps as
    /// far as the allowance goes, into `batch`; `None` when another write is
    /// sweeping (the allowance waits for the next one).
    pub(super) fn run<'a>(
        &'a self,
        tree: &sled::Tree,
        departed: usize,
        batch: &mut sled::Batch,
    ) -> Result<Option<Sweeping<'a>>, StoreError> {
        let allowance = self
            .budget
            .fetch_add(departed as i64 * CHECKS_PER_DEPARTURE, Ordering::Relaxed)
            + departed as i64 * CHECKS_PER_DEPARTURE;
        if allowance <= 0 {
            return Ok(None);
        }
        let mut from = match self.from.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::WouldBlock) => return Ok(None),
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
        };
        let start = from.clone().unwrap_or_else(|| PREFIX.to_vec());
        let mut checked = 0i64;
        let mut stopped_at = None;
        for item in tree.range(start..END.to_vec()) {
            let (k, v) = item?;
            if checked >= allowance {
                stopped_at = Some(k.to_vec());
                break;
            }
            let (unique, _) = parse_marker_key(&k)?;
            let ids: Vec<String> = serde_json::from_slice(&v)?;
            checked += ids.len() as i64;
            let mut live: Vec<&String> = Vec::with_capacity(ids.len());
            for id in &ids {
                if pending_record(tree, id)?.is_some() && !live.contains(&id) {
                    live.push(id);
                }
            }
            if live.len() < ids.len() {
                batch.remove(k.clone());
                if !live.is_empty() {
                    // The same unique part: the rewritten marker keeps its
                    // place and is not met again in this round.
                    batch.insert(marker_key(unique, live.len()), serde_json::to_vec(&live)?);
                }
            }
        }
        // Ran off the end: the next round starts at the first marker, and
        // checks not needed are not saved up (a small queue is swept again
        // only as jobs leave it).
        if stopped_at.is_none() {
            self.budget.store(0, Ordering::Relaxed);
        } else {
            self.budget.fetch_sub(checked, Ordering::Relaxed);
        }
        *from = stopped_at;
        Ok(Some(Sweeping(from)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Job, Processed, StoredEvent};
    use crate::store::sled::SledStore;
    use crate::store::{DeliveryQueue, EventStore, QueuePosition};

    fn job(n: usize, status: JobStatus) -> Job {
        Job::for_test(&format!("job-{n:05}"), &format!("ev-{n:05}"), status)
    }

    fn processed(n: usize) -> Processed {
        Processed {
            event: StoredEvent::for_test(&format!("ev-{n:05}")),
            jobs: vec![job(n, JobStatus::Pending)],
            window_members: Vec::new(),
            outage: None,
        }
    }

    fn pending_ids(store: &SledStore) -> Vec<String> {
        let mut ids: Vec<String> = store
            .pending_jobs()
            .unwrap()
            .into_iter()
            .map(|j| j.id)
            .collect();
        ids.sort();
        ids
    }

    fn entry_ids(store: &SledStore) -> Vec<String> {
        let tree = &store.instance().unwrap().tree;
        let mut ids = Vec::new();
        for item in tree.scan_prefix(PREFIX).values() {
            ids.extend(serde_json::from_slice::<Vec<String>>(&item.unwrap()).unwrap());
        }
        ids
    }

    fn entries(store: &SledStore) -> usize {
        count_entries(&store.instance().unwrap().tree).unwrap()
    }

    #[test]
    fn a_marker_key_reads_back_as_written() {
        let k = marker_key(0x00ab_cdef_0123_4567, 128);
        assert_eq!(k, b"Q/00abcdef01234567/128");
        assert_eq!(parse_marker_key(&k).unwrap(), (0x00ab_cdef_0123_4567, 128));
        assert!(parse_marker_key(b"Q/nothex/3").is_err());
        assert!(parse_marker_key(b"Q/00abcdef01234567").is_err());
    }

    #[test]
    fn one_marker_per_write_and_stale_entries_are_swept_as_jobs_leave() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let all: Vec<Processed> = (0..600).map(processed).collect();
        store.complete_pipeline(&all).unwrap();
        // 600 pending jobs: five markers (128 entries at most), no key per job.
        let tree = &store.instance().unwrap().tree;
        assert_eq!(tree.scan_prefix(PREFIX).count(), 5);
        assert_eq!(entries(&store), 600);
        assert_eq!(store.pending_count().unwrap(), 600);

        // 500 delivered, 100 at a time: their entries go stale and the
        // sweep each write pays for removes them.
        for chunk in (0..500).collect::<Vec<_>>().chunks(100) {
            let delivered: Vec<Job> = chunk
                .iter()
                .map(|&n| job(n, JobStatus::Delivered))
                .collect();
            store.update_jobs(&delivered).unwrap();
        }
        let expected: Vec<String> = (500..600).map(|n| format!("job-{n:05}")).collect();
        assert_eq!(pending_ids(&store), expected);
        assert_eq!(store.pending_count().unwrap(), 100);
        let left = entries(&store);
        assert!(left < 600, "nothing swept: {left} entries");
        assert_eq!(count_pending(tree).unwrap(), 100);
    }

    #[test]
    fn in_a_steady_flow_stale_entries_stay_about_as_many_as_pending_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        // 100 pending: each round 10 new jobs arrive and the 10 oldest
        // are delivered.
        store
            .complete_pipeline(&(0..100).map(processed).collect::<Vec<_>>())
            .unwrap();
        let mut most = 0;
        for round in 0..300 {
            let (new, old) = (100 + round * 10, round * 10);
            store
                .complete_pipeline(&(new..new + 10).map(processed).collect::<Vec<_>>())
                .unwrap();
            let delivered: Vec<Job> = (old..old + 10)
                .map(|n| job(n, JobStatus::Delivered))
                .collect();
            store.update_jobs(&delivered).unwrap();
            assert_eq!(store.pending_count().unwrap(), 100);
            most = most.max(entries(&store));
        }
        // Without the sweep: 3,100 entries. Two checks per departure keep
        // the stale ones about as many as the pending ones.
        assert!(most <= 300, "{most} entries for 100 pending jobs");
        assert_eq!(pending_ids(&store).len(), 100);
    }

    #[test]
    fn a_job_back_in_the_queue_is_pending_again_after_its_entry_was_swept() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        store.complete_pipeline(&[processed(1)]).unwrap();
        store.update_jobs(&[job(1, JobStatus::Dead)]).unwrap();
        // Later departures sweep the first's stale entry.
        for n in 2..4 {
            store.complete_pipeline(&[processed(n)]).unwrap();
            store.update_jobs(&[job(n, JobStatus::Delivered)]).unwrap();
        }
        assert!(!entry_ids(&store).contains(&"job-00001".to_string()));
        assert!(pending_ids(&store).is_empty());
        assert_eq!(store.dead_letters().unwrap().len(), 1);

        // Replayed: pending again, out of the dead letters.
        store.update_jobs(&[job(1, JobStatus::Pending)]).unwrap();
        assert_eq!(pending_ids(&store), vec!["job-00001".to_string()]);
        assert!(store.dead_letters().unwrap().is_empty());
        // A retry (pending to pending) adds no second entry.
        let before = entry_ids(&store).len();
        store.update_jobs(&[job(1, JobStatus::Pending)]).unwrap();
        assert_eq!(entry_ids(&store).len(), before);
        assert_eq!(store.pending_count().unwrap(), 1);
        // The running totals agree with a count from scratch.
        let (kept, counted) = (store.totals().unwrap(), store.count_by_scan().unwrap());
        assert_eq!((kept.pending, kept.dead_letters), (1, 0));
        assert_eq!((counted.pending, counted.dead_letters), (1, 0));
    }

    #[test]
    fn a_job_written_twice_is_yielded_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        // A pipeline re-run after a crash writes the same job again.
        store.complete_pipeline(&[processed(7)]).unwrap();
        store.complete_pipeline(&[processed(7)]).unwrap();
        assert_eq!(entries(&store), 2);
        assert_eq!(pending_ids(&store), vec!["job-00007".to_string()]);
        let (loaded, next) = store
            .pending_jobs_from(&QueuePosition::default(), 5, &|_| false, &|_| true)
            .unwrap();
        assert_eq!((loaded.len(), next), (1, None));
        assert_eq!(count_pending(&store.instance().unwrap().tree).unwrap(), 1);
    }

    #[test]
    fn the_refill_stops_at_its_room_and_says_there_is_more() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        store
            .complete_pipeline(&(0..10).map(processed).collect::<Vec<_>>())
            .unwrap();
        let skip = |id: &str| id == "job-00000";
        let front = QueuePosition::default();
        let (loaded, next) = store
            .pending_jobs_from(&front, 4, &skip, &|_| true)
            .unwrap();
        let ids: Vec<&str> = loaded.iter().map(|j| j.id.as_str()).collect();
        assert_eq!(ids, ["job-00001", "job-00002", "job-00003", "job-00004"]);
        assert!(next.is_some());
        let (loaded, next) = store
            .pending_jobs_from(&front, 9, &skip, &|_| true)
            .unwrap();
        assert_eq!((loaded.len(), next), (9, None));
    }

    #[test]
    fn a_read_goes_on_from_the_marker_it_stopped_in() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        // Three writes: three markers of four entries.
        for write in 0..3 {
            let outcomes: Vec<Processed> = (write * 4..write * 4 + 4).map(processed).collect();
            store.complete_pipeline(&outcomes).unwrap();
        }
        let (first, next) = store
            .pending_jobs_from(&QueuePosition::default(), 5, &|_| false, &|_| true)
            .unwrap();
        let loaded: HashSet<String> = first.into_iter().map(|j| j.id).collect();
        assert_eq!(loaded.len(), 5);
        let next = next.expect("stopped at its max");
        // The front's jobs are delivered; the read from the position does
        // not go through them, and the marker it stopped in is read from
        // its first entry (the one loaded is skipped as in memory).
        store
            .update_jobs(
                &(0..4)
                    .map(|n| job(n, JobStatus::Delivered))
                    .collect::<Vec<_>>(),
            )
            .unwrap();
        let (rest, end) = store
            .pending_jobs_from(&next, 100, &|id| loaded.contains(id), &|_| true)
            .unwrap();
        let rest: Vec<String> = rest.into_iter().map(|j| j.id).collect();
        let expected: Vec<String> = (5..12).map(|n| format!("job-{n:05}")).collect();
        assert_eq!((rest, end), (expected, None));
    }

    #[test]
    fn a_markers_position_holds_whatever_count_the_sweep_leaves_it() {
        for unique in [0, 7, 0xff, u64::MAX - 1] {
            for count in [1, 9, 10, 99, 128] {
                let k = marker_key(unique, count);
                assert!(marker_prefix(unique) <= k, "{unique} {count}");
                assert!(k < marker_prefix(unique + 1), "{unique} {count}");
                assert_eq!(parse_marker_key(&k).unwrap(), (unique, count));
            }
        }
    }

    #[test]
    fn an_earlier_versions_single_markers_are_moved_at_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SledStore::open(dir.path()).unwrap();
            let tree = &store.instance().unwrap().tree;
            for n in 0..3 {
                let j = job(n, JobStatus::Pending);
                tree.insert(format!("j/{}", j.id), serde_json::to_vec(&j).unwrap())
                    .unwrap();
                tree.insert(format!("q/{}", j.id), &[][..]).unwrap();
            }
            store.instance().unwrap().db.flush().unwrap();
        }
        let store = SledStore::open(dir.path()).unwrap();
        let tree = &store.instance().unwrap().tree;
        assert_eq!(tree.scan_prefix(b"q/").count(), 0);
        assert_eq!(entries(&store), 3);
        assert_eq!(pending_ids(&store).len(), 3);
    }
}
