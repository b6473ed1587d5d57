//! The ingest journal: an append-only log that makes accepted events durable
//! with one `fdatasync` shared by every request that arrived while the
//! previous one ran (group commit). The store takes the events afterwards,
//! from the pipeline worker, without anyone waiting on the store's own flush
//! (sled's flush stalls for tens of milliseconds several times a second).
//!
//! A segment is deleted once every event in it is in the store and the store
//! has been flushed since ([`Journal::checkpoint`]). At start, events left in
//! the journal that the store does not hold are run again; those it holds
//! were stored by a worker batch that also recorded their outcome.
//!
//! Files: `<journal dir>/<segment, 16 hex>.log`, each a run of frames
//! `[payload length: u32 LE][CRC-32 of payload: u32 LE][payload]`, one frame
//! per request. A payload is a run of entries: tag `1` an event (id, type,
//! timestamp, data: strings; received at: u64), tag `2` an `Idempotency-Key`
//! answer (key, body: strings; status: u16; at: u64). Strings are a u32 LE
//! length and UTF-8 bytes. Reading stops at the first torn or corrupt frame
//! of a segment: a crash can leave one only at the end of the segment then
//! being written, and no request that ended there was acknowledged.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

mod claims;
mod frame;
mod writer;

use frame::{encode_frame, read_segment};
use writer::Writer;

use crate::model::Remembered;
use crate::model::StoredEvent;
use crate::store::Store;

#[derive(Debug, Clone, thiserror::Error)]
#[error("journal: {0}")]
pub struct JournalError(pub String);

fn io_error(what: &str, path: &Path, e: std::io::Error) -> JournalError {
    JournalError(format!("{what} {}: {e}", path.display()))
}

/// A segment past this size is closed for a new one. Segments are not
/// closed on a timer: switching files means directory syncs, which on ext4
/// wait for other files' data and stalled acknowledgements by 100s of ms.
const SEGMENT_BYTES: u64 = 64 << 20;

/// What a journal held at start.
#[derive(Debug, Default)]
pub struct Recovered {
    pub events: Vec<StoredEvent>,
    /// The segment each event was read from.
    pub segments: Vec<u64>,
    pub answers: Vec<Remembered>,
    /// Frames that could not be read (a torn write at a crash).
    pub torn_frames: usize,
}

enum Command {
    Append {
        frame: Vec<u8>,
        events: u64,
        done: oneshot::Sender<Result<u64, JournalError>>,
    },
    /// Start a new segment if the current one holds anything.
    Rotate { done: oneshot::Sender<()> },
}

struct State {
    /// The segment being written.
    current: u64,
    current_bytes: u64,
    /// Closed segments, still on disk.
    sealed: BTreeSet<u64>,
    /// Events (and answers) appended to a segment and not yet in the store.
    outstanding: BTreeMap<u64, u64>,
    /// Ids of events claimed by a request or in the journal and not yet in
    /// the store: a second request with one is a duplicate.
    in_flight: HashSet<String>,
    /// A segment whose (empty) file was made ahead of time.
    prepared: Option<u64>,
}

pub struct Journal {
    dir: PathBuf,
    commands: std_mpsc::Sender<Command>,
    state: Arc<Mutex<State>>,
    /// Room for acknowledged events not yet through the pipeline: ingest
    /// waits for it, so a pipeline that falls behind slows acknowledgements
    /// instead of filling memory.
    backlog: tokio::sync::Semaphore,
    backlog_limit: usize,
}

/// A frame as [`Journal::append`] writes it (for tools and fuzzing).
pub fn encode(events: &[StoredEvent], answer: Option<&Remembered>) -> Vec<u8> {
    encode_frame(events, answer)
}

/// What recovery reads from a segment file's bytes (for tools and fuzzing).
pub fn decode(bytes: &[u8]) -> Recovered {
    let mut recovered = Recovered::default();
    read_segment(bytes, 0, &mut recovered);
    recovered
}

/// The segment numbers in `dir` and what they hold.
fn read_all(dir: &Path) -> Result<(BTreeSet<u64>, Recovered), JournalError> {
    let mut segments = BTreeSet::new();
    for entry in std::fs::read_dir(dir).map_err(|e| io_error("cannot read", dir, e))? {
        let entry = entry.map_err(|e| io_error("cannot read", dir, e))?;
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".log")) else {
            continue;
        };
        if let Ok(n) = u64::from_str_radix(stem, 16) {
            segments.insert(n);
        }
    }
    let mut recovered = Recovered::default();
    for &segment in &segments {
        let path = segment_path(dir, segment);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            // Retired by a checkpoint since the listing.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_error("cannot read", &path, e)),
        };
        read_segment(&bytes, segment, &mut recovered);
    }
    Ok((segments, recovered))
}

fn segment_path(dir: &Path, segment: u64) -> PathBuf {
    dir.join(format!("{segment:016x}.log"))
}

/// Makes a directory entry (a new or removed file) durable.
fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error("cannot sync directory", dir, e))
}

fn open_segment(dir: &Path, segment: u64) -> Result<File, JournalError> {
    let path = segment_path(dir, segment);
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| io_error("cannot open", &path, e))?;
    sync_dir(dir)?;
    Ok(file)
}

impl Journal {
    /// Opens the journal in `dir` (made if missing), reads what it holds, and
    /// starts a new segment for appends. The segments read stay on disk until
    /// a checkpoint finds their events in the store.
    pub fn open(
        dir: &Path,
        backlog_limit: usize,
    ) -> Result<(Arc<Journal>, Recovered), JournalError> {
        std::fs::create_dir_all(dir).map_err(|e| io_error("cannot create", dir, e))?;
        let (segments, recovered) = read_all(dir)?;
        let current = segments.last().map_or(1, |s| s + 1);
        let file = open_segment(dir, current)?;
        let state = Arc::new(Mutex::new(State {
            current,
            current_bytes: 0,
            sealed: segments.clone(),
            outstanding: BTreeMap::new(),
            in_flight: HashSet::new(),
            prepared: None,
        }));
        let (commands, rx) = std_mpsc::channel();
        let writer = Writer {
            dir: dir.to_path_buf(),
            file: Some(file),
            state: state.clone(),
        };
        std::thread::Builder::new()
            .name("journal".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| JournalError(format!("cannot start the journal writer: {e}")))?;
        let journal = Arc::new(Journal {
            dir: dir.to_path_buf(),
            commands,
            state,
            backlog: tokio::sync::Semaphore::new(backlog_limit),
            backlog_limit,
        });
        Ok((journal, recovered))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Everything the segments on disk hold now, as at start (a torn frame
    /// at the end of the segment being written is a request still writing).
    /// For running again what a failed store lost.
    pub fn read_back(&self) -> Result<Recovered, JournalError> {
        read_all(&self.dir).map(|(_, recovered)| recovered)
    }

    /// Writes and syncs an empty frame: whether the journal's disk takes
    /// writes again. The frame holds nothing; reading skips it.
    pub async fn probe(&self) -> Result<(), JournalError> {
        self.append(&[], None).await.map(|_| ())
    }

    /// Counts events read back from `segment` that are run again: the
    /// segment stays until they are in the store. Call before the first
    /// checkpoint.
    pub fn replaying(&self, segment: u64, events: u64) {
        *self.lock().outstanding.entry(segment).or_default() += events;
    }

    /// Waits for room for `events` more in the pipeline backlog; returns the
    /// room taken, to give back with [`Journal::stored`].
    pub async fn reserve(&self, events: usize) -> u32 {
        let n = events.min(self.backlog_limit) as u32;
        if let Ok(permits) = self.backlog.acquire_many(n).await {
            permits.forget();
        }
        n
    }

    /// Gives back room taken by [`Journal::reserve`] (a refused request).
    pub fn unreserve(&self, room: u32) {
        self.backlog.add_permits(room as usize);
    }

    /// Appends (claimed) events and an answer to remember, and returns once
    /// they are on disk, with the segment they are in.
    pub async fn append(
        &self,
        events: &[StoredEvent],
        answer: Option<&Remembered>,
    ) -> Result<u64, JournalError> {
        let frame = encode_frame(events, answer);
        let (done, result) = oneshot::channel();
        let command = Command::Append {
            frame,
            // An answer, too, keeps its segment until it is in the store.
            events: events.len() as u64 + u64::from(answer.is_some()),
            done,
        };
        self.commands
            .send(command)
            .map_err(|_| JournalError("the journal writer stopped".into()))?;
        result
            .await
            .map_err(|_| JournalError("the journal writer stopped".into()))?
    }

    /// The worker has stored these events (appended to `segment`, if they
    /// came through the journal): their ids are free and the segment may go.
    pub fn stored<'a>(&self, segment: Option<u64>, ids: impl IntoIterator<Item = &'a str>) {
        let mut state = self.lock();
        let mut n = 0;
        for id in ids {
            state.in_flight.remove(id);
            n += 1;
        }
        if let Some(segment) = segment
            && let Some(left) = state.outstanding.get_mut(&segment)
        {
            *left = left.saturating_sub(n);
        }
    }

    /// The answer appended to `segment` is in the store.
    pub fn answer_stored(&self, segment: u64) {
        if let Some(left) = self.lock().outstanding.get_mut(&segment) {
            *left = left.saturating_sub(1);
        }
    }

    /// Deletes every closed segment whose events are all in the store,
    /// after flushing the store; with `close_current`, first closes the
    /// segment being written if it holds anything (at shutdown: then nothing
    /// is left to read back). Also makes the next segment's file ahead of
    /// time, so that switching to it never waits on a directory sync.
    /// Returns how many segments went. Blocking.
    pub fn checkpoint(
        &self,
        store: &dyn Store,
        close_current: bool,
    ) -> Result<usize, JournalError> {
        if close_current {
            let (done, rotated) = oneshot::channel();
            if self.commands.send(Command::Rotate { done }).is_ok() {
                let _ = rotated.blocking_recv();
            }
        } else {
            self.prepare_next()?;
        }
        let retirable: Vec<u64> = {
            let state = self.lock();
            state
                .sealed
                .iter()
                .copied()
                .filter(|s| state.outstanding.get(s).is_none_or(|&n| n == 0))
                .collect()
        };
        if retirable.is_empty() {
            return Ok(0);
        }
        store
            .flush()
            .map_err(|e| JournalError(format!("checkpoint: {e}")))?;
        for &segment in &retirable {
            let path = segment_path(&self.dir, segment);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_error("cannot remove", &path, e)),
            }
            let mut state = self.lock();
            state.sealed.remove(&segment);
            state.outstanding.remove(&segment);
        }
        Ok(retirable.len())
    }

    /// Creates the file of the segment after the current one (durably in
    /// the directory), unless done already.
    fn prepare_next(&self) -> Result<(), JournalError> {
        let next = {
            let state = self.lock();
            let next = state.current + 1;
            if state.prepared == Some(next) {
                return Ok(());
            }
            next
        };
        let path = segment_path(&self.dir, next);
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| io_error("cannot create", &path, e))?;
        sync_dir(&self.dir)?;
        self.lock().prepared = Some(next);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sled::SledStore;

    fn event(id: &str) -> StoredEvent {
        StoredEvent {
            id: id.into(),
            event_type: "alarm".into(),
            timestamp: "2025-12-15T10:30:00Z".into(),
            data: r#"{"location_id":"L1","é":"✓"}"#.into(),
            received_at_ms: 42,
            errors: Vec::new(),
            plugin_decisions: Default::default(),
        }
    }

    fn files(dir: &Path) -> usize {
        std::fs::read_dir(dir).unwrap().count()
    }

    #[tokio::test]
    async fn appended_events_come_back_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let answer = Remembered {
            key: "k".into(),
            status: 202,
            body: "{}".into(),
            at_ms: 7,
        };
        {
            let (journal, recovered) = Journal::open(dir.path(), 1000).unwrap();
            assert!(recovered.events.is_empty());
            let (first, second) = ([event("a"), event("b")], [event("c")]);
            let a = journal.append(&first, None);
            let b = journal.append(&second, Some(&answer));
            let (a, b) = tokio::join!(a, b);
            assert_eq!((a.unwrap(), b.unwrap()), (1, 1));
        }
        let (_journal, recovered) = Journal::open(dir.path(), 1000).unwrap();
        let ids: Vec<_> = recovered.events.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c"]);
        assert_eq!(recovered.events[0], event("a"));
        assert_eq!(recovered.answers, [answer]);
        assert_eq!(recovered.torn_frames, 0);
    }

    #[tokio::test]
    async fn a_torn_tail_is_dropped_and_what_came_before_kept() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (journal, _) = Journal::open(dir.path(), 1000).unwrap();
            journal.append(&[event("a")], None).await.unwrap();
            journal.append(&[event("b")], None).await.unwrap();
        }
        // Cut the second frame short, as a crash mid-write would.
        let path = segment_path(dir.path(), 1);
        let len = std::fs::metadata(&path).unwrap().len();
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(len - 3).unwrap();
        let (_journal, recovered) = Journal::open(dir.path(), 1000).unwrap();
        let ids: Vec<_> = recovered.events.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["a"]);
        assert_eq!(recovered.torn_frames, 1);
    }

    #[tokio::test]
    async fn a_corrupt_frame_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (journal, _) = Journal::open(dir.path(), 1000).unwrap();
            journal.append(&[event("a")], None).await.unwrap();
        }
        let path = segment_path(dir.path(), 1);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
        let (_journal, recovered) = Journal::open(dir.path(), 1000).unwrap();
        assert!(recovered.events.is_empty());
        assert_eq!(recovered.torn_frames, 1);
    }

    /// Runs a checkpoint off the async threads, as the server does.
    async fn checkpoint(
        journal: &Arc<Journal>,
        store: &Arc<SledStore>,
        close_current: bool,
    ) -> usize {
        let (j, s) = (journal.clone(), store.clone());
        tokio::task::spawn_blocking(move || j.checkpoint(&*s, close_current))
            .await
            .unwrap()
            .unwrap()
    }

    #[tokio::test]
    async fn segments_go_only_once_their_events_are_stored() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SledStore::open(&dir.path().join("db")).unwrap());
        let journal_dir = dir.path().join("journal");
        let (journal, _) = Journal::open(&journal_dir, 1000).unwrap();
        assert_eq!(journal.claim(["a", "b"]), [true, true]);
        assert_eq!(journal.claim(["a", "c"]), [false, true]);
        journal.release(["c"]);
        let segment = journal
            .append(&[event("a"), event("b")], None)
            .await
            .unwrap();
        // Sealed, but two events are not in the store yet.
        assert_eq!(checkpoint(&journal, &store, true).await, 0);
        assert_eq!(files(&journal_dir), 2);
        journal.stored(Some(segment), ["a"]);
        assert_eq!(checkpoint(&journal, &store, true).await, 0);
        assert_eq!(journal.claim(["a", "b"]), [true, false]);
        journal.stored(Some(segment), ["b"]);
        assert_eq!(checkpoint(&journal, &store, true).await, 1);
        assert_eq!(files(&journal_dir), 1);
        // Nothing written since: no new segment is made.
        checkpoint(&journal, &store, true).await;
        assert_eq!(files(&journal_dir), 1);
    }

    #[tokio::test]
    async fn a_periodic_checkpoint_keeps_writing_the_same_segment_and_prepares_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SledStore::open(&dir.path().join("db")).unwrap());
        let journal_dir = dir.path().join("journal");
        let (journal, _) = Journal::open(&journal_dir, 1000).unwrap();
        assert_eq!(journal.append(&[event("a")], None).await.unwrap(), 1);
        let retired = checkpoint(&journal, &store, false).await;
        assert_eq!(retired, 0);
        assert!(
            segment_path(&journal_dir, 2).is_file(),
            "next segment prepared"
        );
        assert_eq!(journal.append(&[event("b")], None).await.unwrap(), 1);
    }

    #[tokio::test]
    async fn replayed_events_hold_each_their_own_segment() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SledStore::open(&dir.path().join("db")).unwrap());
        let journal_dir = dir.path().join("journal");
        {
            let (journal, _) = Journal::open(&journal_dir, 1000).unwrap();
            journal
                .append(&[event("a"), event("b")], None)
                .await
                .unwrap();
            checkpoint(&journal, &store, true).await; // closes segment 1 (kept: not stored)
            journal.append(&[event("c")], None).await.unwrap();
        }
        let (journal, recovered) = Journal::open(&journal_dir, 1000).unwrap();
        assert_eq!(recovered.segments, [1, 1, 2]);
        journal.replaying(1, 2);
        journal.replaying(2, 1);
        assert_eq!(checkpoint(&journal, &store, true).await, 0);
        journal.stored(Some(2), ["c"]);
        // Segment 2 may go; segment 1 still holds a and b.
        assert_eq!(checkpoint(&journal, &store, true).await, 1);
        assert!(segment_path(&journal_dir, 1).is_file());
        journal.stored(Some(1), ["a", "b"]);
        assert_eq!(checkpoint(&journal, &store, true).await, 1);
        assert!(!segment_path(&journal_dir, 1).exists());
    }

    #[tokio::test]
    async fn an_answer_keeps_its_segment_until_it_is_in_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SledStore::open(&dir.path().join("db")).unwrap());
        let (journal, _) = Journal::open(&dir.path().join("journal"), 1000).unwrap();
        let answer = Remembered {
            key: "k".into(),
            status: 202,
            body: "{}".into(),
            at_ms: 7,
        };
        // A request whose events were all duplicates: only its answer.
        let segment = journal.append(&[], Some(&answer)).await.unwrap();
        assert_eq!(checkpoint(&journal, &store, true).await, 0);
        journal.answer_stored(segment);
        assert_eq!(checkpoint(&journal, &store, true).await, 1);
    }

    #[tokio::test]
    async fn a_full_backlog_makes_ingest_wait_until_room_is_given_back() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, _) = Journal::open(dir.path(), 100).unwrap();
        assert_eq!(journal.reserve(60).await, 60);
        // 60 more do not fit in 100 until the first 60 are given back.
        let j = journal.clone();
        let waiting = tokio::spawn(async move { j.reserve(60).await });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!waiting.is_finished());
        journal.unreserve(60);
        assert_eq!(waiting.await.unwrap(), 60);
        // A request larger than the whole backlog takes all of it, no more.
        journal.unreserve(60);
        assert_eq!(journal.reserve(500).await, 100);
    }
}
