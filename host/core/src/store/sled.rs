//! The embedded default store, on sled: every storage seam in one sled tree.
//!
//! Writes are not flushed one by one (see the contracts in `store`): until
//! the next flush the intake's journal holds the events durably.
//!
//! Layout (one sled tree, so a batch spanning kinds is atomic):
//! - `e/<event id>` → event (a compact record, `sled/record.rs`; JSON in
//!   stores written before it, still read)
//! - `j/<job id>`   → delivery job with its attempts (likewise)
//! - `Q/<unique, 16 hex>/<count>` → queue marker: ids of jobs that became
//!   pending in one write, an entry counting while its job is pending
//!   (`sled/queue.rs`; earlier versions wrote `q/<job id>`: moved at open)
//! - `d/<job id>`   → marker: job in the dead letters
//! - `w/<window end, 16 hex>/<group hash>/<event id>` → an event waiting in
//!   an aggregation window (ordered by end, so closing scans a prefix)
//! - `s/<subscription id>` → a subscription made over the management API
//! - `h/<subscription id>` → its endpoint's health (failure run, disabled)
//! - `i/<idempotency key>` → the answer given to it (kept 24 h)
//! - `m/closed_through` → the time up to which windows have been closed
//! - `o/<location>` → latest connection state of a location (outage tracking)
//! - `t/<deadline, 16 hex>/<location>` → marker: outage timer
//! - `R/<kind>/<oldest, 16 hex>/<unique, 16 hex>/<count>` → retention's
//!   index by time: the ids and times of the settled deliveries (`d`:
//!   delivered or filtered, `x`: dead letters) or events (`e`, by arrival)
//!   of one write, `count` of them, the oldest at `oldest`. One marker per
//!   write rather than per record: sled's cost is per key (BENCHMARKS.md).
//!   Retention takes a marker's due entries and writes what is not due yet
//!   back under its new oldest time.
//!   A job that settles again is in a newer marker; its entry in the old
//!   one is stale and dropped when retention reaches it.
//! - `r/<kind>/<time, 16 hex>/<id>` → the same for one record: written by
//!   earlier versions and by the one-time index of a store made before it
//! - `m/retention_indexed` → set once records older than the index are in it
//! - `n/<subscription>/<created, 16 hex>/<job id>` → marker: the listing
//!   index of deliveries by creation, newest last (subscription ids have no
//!   `/`); a listing of every subscription's merges theirs;
//!   `m/listing_indexed` once older jobs are in it (earlier versions also
//!   wrote `l/<created>/<job id>` for that listing: removed at start)
//! - `m/tally` → the running totals (`store::tally`), saved at a clean
//!   close and removed when taken back at open

mod compact;
mod queue;
mod record;

pub use compact::{Compacted, compact};

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;

use serde::{Deserialize, Serialize};

use super::tally::{Counts, Tally};
use super::{
    DeliveryQueue, EventStore, Expired, Expiring, IdempotencyStore, JobPage, JobQuery,
    QueuePosition, RetentionStore, Store, StoreError, StoreStats, SubscriptionStore, WindowStore,
};
use crate::model::{
    EndpointHealth, Job, JobStatus, OutageState, Processed, Remembered, StoredEvent, WindowMember,
};

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError(e.to_string())
    }
}

/// sled's own default is 1 GiB; open windows and queues need far less to run
/// at full speed. sled holds about twice its setting while ingest is fast
/// (its accounting undercounts), so 48 rather than 256: with a million
/// deliveries pending the server stays under 300 MB during their ingest.
/// Deliveries/s on an empty store stay within the spread, and are 5–6 %
/// lower on a million-record one (BENCHMARKS.md, "Memory while a million
/// deliveries are ingested").
pub const DEFAULT_CACHE_MIB: u64 = 48;

/// How the sled files are opened (`[server]`'s `cache_mib` and
/// `compress_store`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SledSettings {
    /// sled's page cache: what bounds the memory open windows and queued
    /// jobs take (the rest stays on disk).
    pub cache_mib: u64,
    /// Whether a new data folder's log is zstd-compressed: a quarter of the
    /// disk, but more memory while ingest is fast and a longer backlog at
    /// saturation (BENCHMARKS.md), hence off by default. A folder keeps the
    /// way it was first written.
    pub compress: bool,
}

impl Default for SledSettings {
    fn default() -> Self {
        SledSettings {
            cache_mib: DEFAULT_CACHE_MIB,
            compress: false,
        }
    }
}

/// zstd's fastest level: higher ones took more CPU per write and saved no
/// space on hookhost's records (BENCHMARKS.md).
const COMPRESSION_LEVEL: i32 = 1;

/// Whether the data folder `dir` was first written compressed, from the
/// settings sled keeps in its `conf` file (`None`: a new folder). sled
/// refuses to open a folder with the other setting.
fn written_compressed(dir: &Path) -> Option<bool> {
    let conf = std::fs::read(dir.join("conf")).ok()?;
    String::from_utf8_lossy(&conf).lines().find_map(|line| {
        line.strip_prefix("use_compression: ")
            .and_then(|value| value.trim().parse().ok())
    })
}

/// The store stays usable across a failed disk: sled stops writing for
/// good after an I/O error (disk full), so [`Store::recover`] opens the
/// files again in place of the failed instance.
pub struct SledStore {
    dir: PathBuf,
    settings: SledSettings,
    /// `None` while a failed instance is being replaced.
    current: ArcSwapOption<Open>,
    reopening: Mutex<()>,
    tally: Tally,
    queue_sweep: queue::Sweep,
}

struct Open {
    db: sled::Db,
    tree: sled::Tree,
}

/// Where the tally is saved at a clean close (`m/tally`).
const TALLY_KEY: &[u8] = b"m/tally";

/// The id in a record's key `<kind>/<id>` (see [`key`]).
fn record_id(k: &[u8]) -> Result<&str, StoreError> {
    k.get(2..)
        .and_then(|id| std::str::from_utf8(id).ok())
        .ok_or_else(|| StoreError("corrupt record key".into()))
}

fn key(kind: u8, id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(id.len() + 2);
    k.push(kind);
    k.push(b'/');
    k.extend_from_slice(id.as_bytes());
    k
}

fn window_key(m: &WindowMember) -> Vec<u8> {
    format!(
        "w/{:016x}/{}/{}",
        m.window_end_ms,
        m.group_hash(),
        m.event_id
    )
    .into_bytes()
}

fn retention_code(what: Expiring) -> u8 {
    match what {
        Expiring::Delivered => b'd',
        Expiring::DeadLetters => b'x',
        Expiring::Events => b'e',
    }
}

fn retention_key(what: Expiring, at_ms: u64, id: &str) -> Vec<u8> {
    format!("r/{}/{at_ms:016x}/{id}", retention_code(what) as char).into_bytes()
}

/// `r/<c>/<16 hex>/<id>` → (time, id).
fn parse_retention_key(k: &[u8]) -> Result<(u64, &str), StoreError> {
    let corrupt = || StoreError("corrupt retention marker".into());
    let hex = k.get(4..20).ok_or_else(corrupt)?;
    let at = u64::from_str_radix(std::str::from_utf8(hex).map_err(|_| corrupt())?, 16)
        .map_err(|_| corrupt())?;
    let id = std::str::from_utf8(k.get(21..).ok_or_else(corrupt)?).map_err(|_| corrupt())?;
    Ok((at, id))
}

/// Puts a settled job under retention (nothing for pending or paused ones):
/// one per-record marker, for the one-time index of an old store.
fn index_job(batch: &mut sled::Batch, job: &Job) {
    if let Some(what) = Expiring::of(job.status) {
        batch.insert(retention_key(what, job.settled_at_ms(), &job.id), &[][..]);
    }
}

/// Most entries in one retention marker: keeps its value a small sled
/// value (~10 KB), not one of sled's separately stored large blobs.
const MARKER_ENTRIES: usize = 128;

fn marker_key(what: Expiring, oldest_ms: u64, unique: u64, count: usize) -> Vec<u8> {
    format!(
        "R/{}/{oldest_ms:016x}/{unique:016x}/{count}",
        retention_code(what) as char
    )
    .into_bytes()
}

/// `R/<c>/<16 hex>/<16 hex>/<count>` → (oldest, unique, count).
fn parse_marker_key(k: &[u8]) -> Result<(u64, u64, usize), StoreError> {
    let corrupt = || StoreError("corrupt retention marker".into());
    let text = std::str::from_utf8(k.get(4..).ok_or_else(corrupt)?).map_err(|_| corrupt())?;
    let mut parts = text.splitn(3, '/');
    let mut hex = || u64::from_str_radix(parts.next().unwrap_or_default(), 16);
    let (oldest, unique) = (hex().map_err(|_| corrupt())?, hex().map_err(|_| corrupt())?);
    let count = parts
        .next()
        .and_then(|c| c.parse().ok())
        .ok_or_else(corrupt)?;
    Ok((oldest, unique, count))
}

/// An entry of a retention marker: a record's id and the time it is aged
/// from (arrival for events, [`Job::settled_at_ms`] for jobs).
type MarkerEntry = (String, u64);

/// What one write puts under retention, gathered into one marker per kind.
#[derive(Default)]
struct Expirable {
    by_kind: [Vec<MarkerEntry>; 3],
}

impl Expirable {
    fn slot(what: Expiring) -> usize {
        match what {
            Expiring::Delivered => 0,
            Expiring::DeadLetters => 1,
            Expiring::Events => 2,
        }
    }

    fn event(&mut self, event: &StoredEvent) {
        self.by_kind[Self::slot(Expiring::Events)].push((event.id.clone(), event.received_at_ms));
    }

    /// A settled job (nothing for pending or paused ones).
    fn job(&mut self, job: &Job) {
        if let Some(what) = Expiring::of(job.status) {
            self.by_kind[Self::slot(what)].push((job.id.clone(), job.settled_at_ms()));
        }
    }

    fn write(self, db: &sled::Db, batch: &mut sled::Batch) -> Result<(), StoreError> {
        for (what, entries) in Expiring::ALL
            .into_iter()
            .map(|what| (what, Self::slot(what)))
        {
            for chunk in self.by_kind[entries].chunks(MARKER_ENTRIES) {
                let oldest = chunk.iter().map(|e| e.1).min().unwrap_or_default();
                batch.insert(
                    marker_key(what, oldest, db.generate_id()?, chunk.len()),
                    serde_json::to_vec(chunk)?,
                );
            }
        }
        Ok(())
    }
}

/// One counted write: its batch, the retention markers it adds and what it
/// changes in the tally.
#[derive(Default)]
struct Write {
    batch: sled::Batch,
    expirable: Expirable,
    queued: queue::Queued,
    change: Counts,
}

impl Write {
    /// A new job with its queue entry and index entries: the listing
    /// keys go in here, where jobs are made, and never again (a job's
    /// creation time and subscription do not change), so state updates
    /// stay one write. Counted as new without a lookup: job ids derive from
    /// their event's, and the intake runs only events the store lacks (a
    /// lookup per record here cost a third of the latency at saturation,
    /// BENCHMARKS.md). Window closes and outage confirmations repeat only
    /// after an unclean stop, when the tally is counted afresh anyway.
    fn new_job(&mut self, job: &Job) -> Result<(), StoreError> {
        let pending = job.status == JobStatus::Pending;
        self.change.deliveries += 1;
        self.change.pending += pending as i64;
        self.batch
            .insert(key(b'j', &job.id), record::encode_job(job)?);
        if pending {
            self.queued.push(&job.id);
        }
        self.expirable.job(job);
        self.batch.insert(listing_key(job), &[][..]);
        Ok(())
    }

    /// One new event's pipeline outcome (see [`Write::new_job`]).
    fn processed(&mut self, out: &Processed) -> Result<(), StoreError> {
        let event = &out.event;
        self.change.events += 1;
        self.batch
            .insert(key(b'e', &event.id), record::encode_event(event)?);
        self.expirable.event(event);
        for job in &out.jobs {
            self.new_job(job)?;
        }
        for m in &out.window_members {
            self.batch.insert(window_key(m), encode_member(m)?);
        }
        if let Some((state, old_deadline)) = &out.outage {
            if let Some(d) = old_deadline {
                self.batch.remove(timer_key(*d, &state.location));
            }
            if let Some(d) = state.deadline_ms
                && !state.confirmed
            {
                self.batch.insert(timer_key(d, &state.location), &[][..]);
            }
            self.batch
                .insert(key(b'o', &state.location), serde_json::to_vec(state)?);
        }
        Ok(())
    }
}

fn listing_key(job: &Job) -> Vec<u8> {
    let (at, id, sub) = (job.created_at_ms, &job.id, &job.subscription_id);
    format!("n/{sub}/{at:016x}/{id}").into_bytes()
}

/// The listing prefix `n/<subscription>/` of every subscription that has
/// deliveries: one seek per subscription, past all of its keys.
fn listed_subscriptions(tree: &sled::Tree) -> Result<Vec<Vec<u8>>, StoreError> {
    let corrupt = || StoreError("corrupt listing marker".into());
    let mut prefixes = Vec::new();
    let mut from = b"n/".to_vec();
    // `0` follows `/`: `n0` is past every `n/` key, `n/<sub>0` past the sub's.
    while let Some(item) = tree.range(from.clone()..b"n0".to_vec()).keys().next() {
        let k = item?;
        let slash = k
            .iter()
            .skip(2)
            .position(|&b| b == b'/')
            .ok_or_else(corrupt)?
            + 2;
        let prefix = k[..=slash].to_vec();
        from = prefix.clone();
        *from.last_mut().unwrap_or(&mut 0) = b'0';
        prefixes.push(prefix);
    }
    Ok(prefixes)
}

/// Listing keys under several prefixes, each a `range`, merged newest
/// first; yields their `<16 hex>/<id>` tails (a tail orders as its key).
struct NewestFirst {
    sources: Vec<(usize, std::iter::Rev<sled::Iter>)>,
    heads: std::collections::BinaryHeap<(Vec<u8>, usize)>,
}

impl NewestFirst {
    fn new(sources: Vec<(usize, std::iter::Rev<sled::Iter>)>) -> Result<NewestFirst, StoreError> {
        let mut merged = NewestFirst {
            heads: std::collections::BinaryHeap::with_capacity(sources.len()),
            sources,
        };
        for source in 0..merged.sources.len() {
            merged.advance(source)?;
        }
        Ok(merged)
    }

    fn advance(&mut self, source: usize) -> Result<(), StoreError> {
        let (prefix_len, keys) = &mut self.sources[source];
        if let Some(item) = keys.next() {
            let (k, _) = item?;
            let tail = k.get(*prefix_len..).unwrap_or_default().to_vec();
            self.heads.push((tail, source));
        }
        Ok(())
    }
}

impl Iterator for NewestFirst {
    type Item = Result<Vec<u8>, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        let (tail, source) = self.heads.pop()?;
        Some(self.advance(source).map(|()| tail))
    }
}

/// A listing key's `<16 hex>/<id>` tail: the cursor.
fn listing_tail(tail: &[u8]) -> Result<(u64, &str), StoreError> {
    let corrupt = || StoreError("corrupt listing marker".into());
    let at = std::str::from_utf8(tail.get(..16).ok_or_else(corrupt)?).map_err(|_| corrupt())?;
    let at = u64::from_str_radix(at, 16).map_err(|_| corrupt())?;
    let id = std::str::from_utf8(tail.get(17..).ok_or_else(corrupt)?).map_err(|_| corrupt())?;
    Ok((at, id))
}

/// A member's stored form: its fields as a JSON line, then its data as is
/// (data is JSON text already; embedding it as a JSON string would escape
/// every quote).
fn encode_member(m: &WindowMember) -> Result<Vec<u8>, StoreError> {
    let mut out = serde_json::to_vec(&MemberHeader {
        window_end_ms: m.window_end_ms,
        subscription_id: Cow::Borrowed(&m.subscription_id),
        window_type: Cow::Borrowed(&m.window_type),
        group: Cow::Borrowed(&m.group),
        event_id: Cow::Borrowed(&m.event_id),
        timestamp: Cow::Borrowed(&m.timestamp),
        received_at_ms: m.received_at_ms,
        event_type: Cow::Borrowed(&m.event_type),
    })?;
    out.push(b'\n');
    out.extend_from_slice(m.data.as_bytes());
    Ok(out)
}

fn decode_member(bytes: &[u8]) -> Result<WindowMember, StoreError> {
    let split = bytes
        .iter()
        .position(|&b| b == b'\n')
        .ok_or_else(|| StoreError("corrupt window member: no header".into()))?;
    let h: MemberHeader<'_> = serde_json::from_slice(&bytes[..split])?;
    let data = std::str::from_utf8(&bytes[split + 1..])
        .map_err(|e| StoreError(format!("corrupt window member: {e}")))?;
    Ok(WindowMember {
        window_end_ms: h.window_end_ms,
        subscription_id: h.subscription_id.into_owned(),
        window_type: h.window_type.into_owned(),
        group: h.group.into_owned(),
        event_id: h.event_id.into_owned(),
        timestamp: h.timestamp.into_owned(),
        received_at_ms: h.received_at_ms,
        event_type: h.event_type.into_owned(),
        data: data.to_string(),
    })
}

/// A member's fields but its data; borrowed where the JSON allows.
#[derive(Serialize, Deserialize)]
struct MemberHeader<'a> {
    window_end_ms: u64,
    #[serde(borrow)]
    subscription_id: Cow<'a, str>,
    #[serde(borrow)]
    window_type: Cow<'a, str>,
    #[serde(borrow)]
    group: Cow<'a, str>,
    #[serde(borrow)]
    event_id: Cow<'a, str>,
    #[serde(borrow)]
    timestamp: Cow<'a, str>,
    received_at_ms: u64,
    #[serde(borrow)]
    event_type: Cow<'a, str>,
}

fn timer_key(deadline_ms: u64, location: &str) -> Vec<u8> {
    format!("t/{deadline_ms:016x}/{location}").into_bytes()
}

impl Open {
    fn new(dir: &Path, settings: &SledSettings) -> Result<Open, StoreError> {
        let compress = match written_compressed(dir) {
            Some(written) => {
                if written != settings.compress {
                    tracing::info!(
                        compressed = written,
                        "the data folder keeps the compression it was first written with"
                    );
                }
                written
            }
            None => settings.compress,
        };
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(settings.cache_mib << 20)
            // Group commit flushes on demand; the background flush is a backstop.
            .flush_every_ms(Some(1000))
            .mode(sled::Mode::HighThroughput)
            .use_compression(compress)
            .compression_factor(COMPRESSION_LEVEL)
            .open()
            .map_err(|e| StoreError(format!("{}: {e}", dir.display())))?;
        give_back_freed_memory();
        let tree = db.open_tree("hookhost")?;
        Ok(Open { db, tree })
    }
}

/// Whether `e` is sled refusing to open a folder whose file lock another
/// store holds (a running server, or one whose io threads are still
/// closing). sled says so only in its message.
fn is_locked_elsewhere(e: &StoreError) -> bool {
    e.0.contains("could not acquire lock")
}

/// sled's open reads its whole page-table snapshot into memory and frees it
/// again: ~350 MB of small allocations for a 10-million-record store, which
/// glibc would keep in the process (RSS 842 MB after such an open, 470 MB
/// of it live). Handing it back to the system once costs a few ms. (The
/// `hookhost` binary allocates through jemalloc, whose decay hands it back
/// by itself; this is for programs on glibc's malloc, such as the tests.)
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn give_back_freed_memory() {
    // SAFETY: malloc_trim only releases free heap memory; it takes the
    // allocator's own locks and may run while other threads allocate.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn give_back_freed_memory() {}

impl SledStore {
    /// Opens with the default [`SledSettings`].
    pub fn open(dir: &Path) -> Result<SledStore, StoreError> {
        SledStore::open_with(dir, SledSettings::default())
    }

    pub fn open_with(dir: &Path, settings: SledSettings) -> Result<SledStore, StoreError> {
        let open = Open::new(dir, &settings)?;
        let moved = queue::adopt_single_markers(&open.db, &open.tree)?;
        if moved > 0 {
            tracing::info!(
                jobs = moved,
                "queue markers of an earlier version moved into batched ones"
            );
        }
        let tally = Tally::default();
        if let Some(saved) = open.tree.remove(TALLY_KEY)? {
            // Removed before any write: a crash from now on must not find
            // totals that miss what was written after them.
            open.db.flush()?;
            if let Some(counts) = Counts::decode(&saved) {
                tally.set(counts);
                tracing::info!("stored-record totals taken back from the last clean stop");
            }
        } else if open.tree.is_empty() {
            tally.set(Counts::default());
        }
        if tally.get().is_none() {
            tracing::info!(
                "the store was not closed cleanly: its records are counted by a key scan at the first count"
            );
        }
        Ok(SledStore {
            dir: dir.to_owned(),
            settings,
            current: ArcSwapOption::from_pointee(open),
            reopening: Mutex::new(()),
            tally,
            queue_sweep: queue::Sweep::default(),
        })
    }

    /// The instance in use.
    fn instance(&self) -> Result<Arc<Open>, StoreError> {
        self.current
            .load_full()
            .ok_or_else(|| StoreError("the store is being reopened after a failure".into()))
    }

    /// Applies a counted write: its retention markers, then its batch,
    /// then its change to the tally.
    fn commit(&self, open: &Open, write: Write) -> Result<(), StoreError> {
        let Write {
            mut batch,
            expirable,
            queued,
            change,
        } = write;
        expirable.write(&open.db, &mut batch)?;
        queued.write(&open.db, &mut batch)?;
        self.apply_counted(open, batch, change)
    }

    /// The change is added only once the batch is applied, and no save or
    /// recount of the tally runs in between (see `store::tally`).
    fn apply_counted(
        &self,
        open: &Open,
        mut batch: sled::Batch,
        change: Counts,
    ) -> Result<(), StoreError> {
        let _writing = self.tally.writing();
        if self.tally.saved() {
            batch.remove(TALLY_KEY);
        }
        open.tree.apply_batch(batch)?;
        self.tally.add(change);
        Ok(())
    }

    /// The totals: the tally, or a count by key scans when it is not known
    /// (once after a store was not closed cleanly).
    fn totals(&self) -> Result<Counts, StoreError> {
        if let Some(counts) = self.tally.get() {
            return Ok(counts);
        }
        let _no_counted_writes = self.tally.exclusive();
        if let Some(counts) = self.tally.get() {
            return Ok(counts);
        }
        let counts = self.count_by_scan()?;
        self.tally.set(counts);
        Ok(counts)
    }

    /// Counts index keys, which have no values, rather than the records:
    /// a scan of `e/` and `j/` reads every stored body (3 GB for a million
    /// deliveries), evicts the cache and stalled listings for seconds.
    /// Every event is in one retention marker (`r/e/`, or counted in the
    /// key of an `R/e/`; twice after a pipeline re-run until retention
    /// reaches it), every job has one listing key (`n/`), both written and
    /// removed with their record. Pending jobs are the exception: a queue
    /// entry counts only while its job's record says pending, so those
    /// records (and no others) are read.
    fn count_by_scan(&self) -> Result<Counts, StoreError> {
        let mut events = self.count_prefix(b"r/e/")? as i64;
        for k in self.instance()?.tree.scan_prefix(b"R/e/").keys() {
            events += parse_marker_key(&k?)?.2 as i64;
        }
        Ok(Counts {
            events,
            deliveries: self.count_prefix(b"n/")? as i64,
            pending: queue::count_pending(&self.instance()?.tree)? as i64,
            dead_letters: self.count_prefix(b"d/")? as i64,
        })
    }

    /// Keys under `prefix` (a key scan, values not read).
    fn count_prefix(&self, prefix: &[u8]) -> Result<usize, StoreError> {
        let mut n = 0;
        for item in self.instance()?.tree.scan_prefix(prefix).keys() {
            item?;
            n += 1;
        }
        Ok(n)
    }

    /// The jobs that markers `<marker>/<job id>` point to.
    fn marked_jobs(&self, marker: u8) -> Result<Vec<Job>, StoreError> {
        let mut out = Vec::new();
        let open = self.instance()?;
        for item in open.tree.scan_prefix([marker, b'/']) {
            let (k, _) = item?;
            let id = record_id(&k)?;
            if let Some(v) = open.tree.get(key(b'j', id))? {
                out.push(record::decode_job(id, &v)?);
            }
        }
        Ok(out)
    }
}

impl EventStore for SledStore {
    fn complete_pipeline(&self, processed: &[Processed]) -> Result<(), StoreError> {
        let open = self.instance()?;
        let mut write = Write::default();
        for out in processed {
            write.processed(out)?;
        }
        self.commit(&open, write)
    }

    fn event(&self, id: &str) -> Result<Option<StoredEvent>, StoreError> {
        self.instance()?
            .tree
            .get(key(b'e', id))?
            .map(|v| record::decode_event(id, &v))
            .transpose()
    }

    fn has_event(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.instance()?.tree.contains_key(key(b'e', id))?)
    }
}

impl DeliveryQueue for SledStore {
    /// A state change must know the state it leaves (for the tally and
    /// the markers): the stored record's status, or an earlier one of
    /// `jobs`. A job leaving the queue keeps its stale queue entry (see
    /// `sled/queue.rs`); the sweep it pays for runs in the same batch.
    fn update_jobs(&self, jobs: &[Job]) -> Result<(), StoreError> {
        let open = self.instance()?;
        let mut write = Write::default();
        let mut earlier: std::collections::HashMap<&str, JobStatus> = Default::default();
        let mut departed = 0;
        for job in jobs {
            let was = match earlier.get(job.id.as_str()) {
                Some(status) => Some(*status),
                None => open
                    .tree
                    .get(key(b'j', &job.id))?
                    .map(|bytes| record::job_status(&bytes))
                    .transpose()?,
            };
            earlier.insert(&job.id, job.status);
            let was_pending = was == Some(JobStatus::Pending);
            let was_dead = was == Some(JobStatus::Dead);
            let (pending, dead) = (
                job.status == JobStatus::Pending,
                job.status == JobStatus::Dead,
            );
            write.change.pending += pending as i64 - was_pending as i64;
            write.change.dead_letters += dead as i64 - was_dead as i64;
            departed += (was_pending && !pending) as usize;
            write
                .batch
                .insert(key(b'j', &job.id), record::encode_job(job)?);
            write.expirable.job(job);
            if pending && !was_pending {
                write.queued.push(&job.id);
            }
            if dead && !was_dead {
                write.batch.insert(key(b'd', &job.id), &[][..]);
            } else if was_dead && !dead {
                write.batch.remove(key(b'd', &job.id));
            }
        }
        let _sweeping = self
            .queue_sweep
            .run(&open.tree, departed, &mut write.batch)?;
        self.commit(&open, write)
    }

    fn job(&self, id: &str) -> Result<Option<Job>, StoreError> {
        self.instance()?
            .tree
            .get(key(b'j', id))?
            .map(|v| record::decode_job(id, &v))
            .transpose()
    }

    fn pending_jobs(&self) -> Result<Vec<Job>, StoreError> {
        let mut out = Vec::new();
        queue::each_pending(&self.instance()?.tree, &[], &|_| false, |id, bytes| {
            out.push(record::decode_job(id, bytes)?);
            Ok(true)
        })?;
        Ok(out)
    }

    /// The position is a queue marker's key prefix (`Q/<unique>/`): the
    /// marker the last read stopped in is read again from its first entry.
    fn pending_jobs_from(
        &self,
        from: &QueuePosition,
        max: usize,
        skip: &dyn Fn(&str) -> bool,
        wanted: &dyn Fn(&Job) -> bool,
    ) -> Result<(Vec<Job>, Option<QueuePosition>), StoreError> {
        let mut out = Vec::new();
        let stopped = queue::each_pending(&self.instance()?.tree, &from.0, skip, |id, bytes| {
            if out.len() == max {
                return Ok(false);
            }
            let job = record::decode_job(id, bytes)?;
            if wanted(&job) {
                out.push(job);
            }
            Ok(true)
        })?;
        Ok((out, stopped.map(QueuePosition)))
    }

    /// The tally's; before it is known, the queue markers' entries from a
    /// key scan (called at start, where reading every entry's job would
    /// hold up delivery): an upper bound, stale entries included.
    fn pending_count(&self) -> Result<usize, StoreError> {
        match self.tally.get() {
            Some(counts) => Ok(counts.pending.max(0) as usize),
            None => queue::count_entries(&self.instance()?.tree),
        }
    }

    fn dead_letters(&self) -> Result<Vec<Job>, StoreError> {
        self.marked_jobs(b'd')
    }

    fn jobs(&self) -> Result<Vec<Job>, StoreError> {
        let mut out = Vec::new();
        for item in self.instance()?.tree.scan_prefix(b"j/") {
            let (k, v) = item?;
            out.push(record::decode_job(record_id(&k)?, &v)?);
        }
        Ok(out)
    }

    fn list_jobs(&self, q: &JobQuery<'_>) -> Result<JobPage, StoreError> {
        let open = self.instance()?;
        let prefixes = match q.subscription {
            Some(sub) => vec![format!("n/{sub}/").into_bytes()],
            None => listed_subscriptions(&open.tree)?,
        };
        let mut page = JobPage {
            total_exact: true,
            ..JobPage::default()
        };
        let mut sources = Vec::with_capacity(prefixes.len());
        for prefix in prefixes {
            let bound = |tail: &[u8]| [&prefix[..], tail].concat();
            let low = q.since_ms.map_or_else(
                || prefix.clone(),
                |ms| bound(format!("{ms:016x}").as_bytes()),
            );
            let mut high = match q.until_ms {
                Some(ms) => bound(format!("{ms:016x}").as_bytes()),
                // Just past every key under the prefix (it ends in `/`).
                None => {
                    let mut k = prefix.clone();
                    if let Some(slash) = k.last_mut() {
                        *slash += 1;
                    }
                    k
                }
            };
            if let Some(cursor) = q.after {
                high = high.min(bound(cursor.as_bytes()));
            }
            if low < high {
                sources.push((prefix.len(), open.tree.range(low..high).rev()));
            }
        }
        // Nothing when `since` is after `until`, or a cursor before `since`.
        let merged = NewestFirst::new(sources)?;
        let mut last_shown: Option<Vec<u8>> = None;
        let mut last_examined: Option<Vec<u8>> = None;
        for (examined, item) in merged.enumerate() {
            if examined == q.max_examined {
                page.total_exact = false;
                break;
            }
            let k = item?;
            last_examined = Some(k.to_vec());
            let counting_only = page.jobs.len() == q.limit;
            if counting_only && q.wanted.is_none() {
                page.total += 1;
                continue;
            }
            let (_, id) = listing_tail(&k)?;
            let Some(bytes) = open.tree.get(key(b'j', id))? else {
                continue; // removed by retention between the two reads
            };
            let job = record::decode_job(id, &bytes)?;
            if q.wanted.is_some_and(|wanted| !wanted(&job)) {
                continue;
            }
            page.total += 1;
            if !counting_only {
                page.jobs.push(job);
                last_shown = Some(k.to_vec());
            }
        }
        // A full page continues after its last job; a page cut short by
        // the scan budget continues after the last entry it examined.
        let resume = if page.jobs.len() == q.limit {
            last_shown
        } else {
            last_examined
        };
        if page.total > page.jobs.len() || !page.total_exact {
            page.next = resume
                .map(|k| listing_tail(&k).map(|(at, id)| format!("{at:016x}/{id}")))
                .transpose()?;
        }
        Ok(page)
    }

    fn index_for_listing(&self) -> Result<usize, StoreError> {
        let open = self.instance()?;
        // Earlier versions' `l/` keys: the listing of all subscriptions now
        // merges theirs, and `l/` was one more write per delivery.
        loop {
            let mut batch = sled::Batch::default();
            let mut stale = 0;
            for k in open.tree.scan_prefix(b"l/").keys().take(10_000) {
                batch.remove(k?);
                stale += 1;
            }
            if stale == 0 {
                break;
            }
            open.tree.apply_batch(batch)?;
        }
        let flag = key(b'm', "listing_indexed");
        if open.tree.contains_key(&flag)? {
            return Ok(0);
        }
        let (mut n, mut batch) = (0, sled::Batch::default());
        for item in open.tree.scan_prefix(b"j/") {
            let (k, v) = item?;
            let job = record::decode_job(record_id(&k)?, &v)?;
            batch.insert(listing_key(&job), &[][..]);
            n += 1;
            if n % 10_000 == 0 {
                open.tree.apply_batch(std::mem::take(&mut batch))?;
            }
        }
        batch.insert(flag, &[][..]);
        open.tree.apply_batch(batch)?;
        open.db.flush()?;
        Ok(n)
    }
}

impl WindowStore for SledStore {
    fn due_window_members(
        &self,
        up_to_ms: u64,
        max_members: usize,
    ) -> Result<Vec<WindowMember>, StoreError> {
        // Keys sort by window end: everything below `w/<up_to + 1>` is due.
        let end = format!("w/{:016x}", up_to_ms.saturating_add(1));
        let mut out: Vec<WindowMember> = Vec::new();
        let mut last_group: Option<Vec<u8>> = None;
        for item in self
            .instance()?
            .tree
            .range(b"w/".to_vec()..end.into_bytes())
        {
            let (k, v) = item?;
            // `w/<16 hex>/<32 hex>/`: the group is the key's first 52 bytes.
            let group = k.get(..52).unwrap_or(&k).to_vec();
            if out.len() >= max_members && last_group.as_ref() != Some(&group) {
                break;
            }
            last_group = Some(group);
            out.push(decode_member(&v)?);
        }
        Ok(out)
    }

    fn close_windows(
        &self,
        members: &[WindowMember],
        jobs: &[Job],
        closed_through_ms: u64,
    ) -> Result<(), StoreError> {
        let open = self.instance()?;
        let mut write = Write::default();
        for m in members {
            write.batch.remove(window_key(m));
        }
        for job in jobs {
            write.new_job(job)?;
        }
        write.batch.insert(
            key(b'm', "closed_through"),
            &closed_through_ms.to_be_bytes()[..],
        );
        self.commit(&open, write)
    }

    fn window_member_count(&self) -> Result<usize, StoreError> {
        self.count_prefix(b"w/")
    }

    fn closed_through(&self) -> Result<u64, StoreError> {
        Ok(self
            .instance()?
            .tree
            .get(key(b'm', "closed_through"))?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map_or(0, u64::from_be_bytes))
    }

    fn outage(&self, location: &str) -> Result<Option<OutageState>, StoreError> {
        Ok(self
            .instance()?
            .tree
            .get(key(b'o', location))?
            .map(|v| serde_json::from_slice(&v))
            .transpose()?)
    }

    fn due_outages(&self, up_to_ms: u64) -> Result<Vec<OutageState>, StoreError> {
        let end = format!("t/{:016x}", up_to_ms.saturating_add(1));
        let mut out = Vec::new();
        for item in self
            .instance()?
            .tree
            .range(b"t/".to_vec()..end.into_bytes())
        {
            let (k, _) = item?;
            // `t/<16 hex>/<location>`
            let location = std::str::from_utf8(k.get(19..).unwrap_or_default())
                .map_err(|e| StoreError(e.to_string()))?;
            if let Some(state) = self.outage(location)? {
                out.push(state);
            }
        }
        Ok(out)
    }
}

impl SubscriptionStore for SledStore {
    fn stored_subscriptions(&self) -> Result<Vec<crate::model::Subscription>, StoreError> {
        let mut out = Vec::new();
        for item in self.instance()?.tree.scan_prefix(b"s/") {
            out.push(serde_json::from_slice(&item?.1)?);
        }
        Ok(out)
    }

    fn put_subscription(&self, sub: &crate::model::Subscription) -> Result<(), StoreError> {
        self.instance()?
            .tree
            .insert(key(b's', &sub.id), serde_json::to_vec(sub)?)?;
        // A management change is acknowledged only once durable.
        self.instance()?.db.flush()?;
        Ok(())
    }

    fn delete_subscription(&self, id: &str) -> Result<(), StoreError> {
        self.instance()?.tree.remove(key(b's', id))?;
        self.instance()?.db.flush()?;
        Ok(())
    }

    fn endpoint_health(&self) -> Result<Vec<(String, EndpointHealth)>, StoreError> {
        let mut out = Vec::new();
        for item in self.instance()?.tree.scan_prefix(b"h/") {
            let (k, v) = item?;
            let id = std::str::from_utf8(&k[2..]).map_err(|e| StoreError(e.to_string()))?;
            out.push((id.to_string(), serde_json::from_slice(&v)?));
        }
        Ok(out)
    }

    fn put_endpoint_health(&self, id: &str, health: &EndpointHealth) -> Result<(), StoreError> {
        let open = self.instance()?;
        open.tree
            .insert(key(b'h', id), serde_json::to_vec(health)?)?;
        open.db.flush()?;
        Ok(())
    }

    fn paused_jobs(&self, subscription_id: &str) -> Result<Vec<Job>, StoreError> {
        let mut out = Vec::new();
        for item in self.instance()?.tree.scan_prefix(b"j/") {
            let (k, v) = item?;
            let job = record::decode_job(record_id(&k)?, &v)?;
            if job.status == JobStatus::Paused && job.subscription_id == subscription_id {
                out.push(job);
            }
        }
        Ok(out)
    }
}

impl IdempotencyStore for SledStore {
    fn remember(&self, answer: &Remembered) -> Result<(), StoreError> {
        self.instance()?
            .tree
            .insert(key(b'i', &answer.key), serde_json::to_vec(answer)?)?;
        Ok(())
    }

    fn remembered(&self, id: &str) -> Result<Option<Remembered>, StoreError> {
        Ok(self
            .instance()?
            .tree
            .get(key(b'i', id))?
            .map(|v| serde_json::from_slice(&v))
            .transpose()?)
    }

    fn forget_answers(&self, before_ms: u64) -> Result<usize, StoreError> {
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for item in self.instance()?.tree.scan_prefix(b"i/") {
            let (k, v) = item?;
            let r: Remembered = serde_json::from_slice(&v)?;
            if r.at_ms < before_ms {
                batch.remove(k);
                n += 1;
            }
        }
        self.instance()?.tree.apply_batch(batch)?;
        Ok(n)
    }
}

/// One [`RetentionStore::expire`] call's removals, applied as one batch.
struct Removal<'o> {
    open: &'o Open,
    what: Expiring,
    batch: sled::Batch,
    /// Events already removed in this batch (a pipeline re-run after a
    /// crash puts an event in a second marker).
    events_gone: std::collections::HashSet<String>,
    done: Expired,
    change: Counts,
}

impl Removal<'_> {
    /// Removes the record of a marker's entry if it is still what the entry
    /// says: a job settled again since is covered by a newer marker.
    fn record(&mut self, id: &str, at: u64) -> Result<(), StoreError> {
        let tree = &self.open.tree;
        if self.what == Expiring::Events {
            if !self.events_gone.contains(id) && tree.contains_key(key(b'e', id))? {
                self.batch.remove(key(b'e', id));
                self.events_gone.insert(id.to_string());
                self.done.removed += 1;
                self.change.events -= 1;
            }
            return Ok(());
        }
        let Some(bytes) = tree.get(key(b'j', id))? else {
            return Ok(());
        };
        let job = record::decode_job(id, &bytes)?;
        if Expiring::of(job.status) != Some(self.what) || job.settled_at_ms() != at {
            return Ok(());
        }
        // Only the state read: a job re-sent meanwhile stays.
        let removed = tree
            .compare_and_swap(key(b'j', id), Some(bytes), None::<&[u8]>)?
            .is_ok();
        if removed {
            if tree.contains_key(key(b'd', id))? {
                self.batch.remove(key(b'd', id));
                self.change.dead_letters -= 1;
            }
            if tree.contains_key(listing_key(&job))? {
                self.batch.remove(listing_key(&job));
                self.change.deliveries -= 1;
            }
            self.done.removed += 1;
        }
        Ok(())
    }
}

impl RetentionStore for SledStore {
    fn expire(&self, what: Expiring, before_ms: u64, max: usize) -> Result<Expired, StoreError> {
        let open = self.instance()?;
        let code = retention_code(what) as char;
        let mut removal = Removal {
            open: &open,
            what,
            batch: sled::Batch::default(),
            events_gone: std::collections::HashSet::new(),
            done: Expired::default(),
            change: Counts::default(),
        };
        let mut budget = max;
        // Per-record markers (earlier versions, the one-time index) first.
        let start = format!("r/{code}/").into_bytes();
        let end = format!("r/{code}/{before_ms:016x}").into_bytes();
        for item in open.tree.range(start..end).keys() {
            if budget == 0 {
                removal.done.more = true;
                break;
            }
            budget -= 1;
            let k = item?;
            let (at, id) = parse_retention_key(&k)?;
            removal.batch.remove(k.as_ref());
            removal.record(id, at)?;
        }
        // A marker's key holds its oldest time: below `end`, some of it is due.
        let start = format!("R/{code}/").into_bytes();
        let end = format!("R/{code}/{before_ms:016x}").into_bytes();
        for item in open.tree.range(start..end) {
            if budget == 0 {
                removal.done.more = true;
                break;
            }
            let (k, v) = item?;
            let (_, unique, _) = parse_marker_key(&k)?;
            let entries: Vec<MarkerEntry> = serde_json::from_slice(&v)?;
            let mut rest = Vec::new();
            for (id, at) in entries {
                if at < before_ms && budget > 0 {
                    budget -= 1;
                    removal.record(&id, at)?;
                } else {
                    rest.push((id, at));
                }
            }
            removal.batch.remove(k.as_ref());
            // Not due yet, or cut short by the budget: kept, under its oldest.
            if let Some(oldest) = rest.iter().map(|e| e.1).min() {
                if oldest < before_ms {
                    removal.done.more = true;
                }
                removal.batch.insert(
                    marker_key(what, oldest, unique, rest.len()),
                    serde_json::to_vec(&rest)?,
                );
            }
        }
        let Removal {
            batch,
            done,
            change,
            ..
        } = removal;
        self.apply_counted(&open, batch, change)?;
        Ok(done)
    }

    fn index_for_retention(&self) -> Result<usize, StoreError> {
        let open = self.instance()?;
        let flag = key(b'm', "retention_indexed");
        if open.tree.contains_key(&flag)? {
            return Ok(0);
        }
        // Records written from now on are indexed as they are written; this
        // covers those of a store made before the index.
        let mut n = 0;
        let mut batch = sled::Batch::default();
        let mut in_batch = 0;
        for item in open.tree.scan_prefix(b"e/") {
            let (k, v) = item?;
            let event = record::decode_event(record_id(&k)?, &v)?;
            batch.insert(
                retention_key(Expiring::Events, event.received_at_ms, &event.id),
                &[][..],
            );
            in_batch += 1;
            if in_batch == 10_000 {
                open.tree.apply_batch(std::mem::take(&mut batch))?;
                n += in_batch;
                in_batch = 0;
            }
        }
        for item in open.tree.scan_prefix(b"j/") {
            let (k, v) = item?;
            let job = record::decode_job(record_id(&k)?, &v)?;
            if Expiring::of(job.status).is_some() {
                index_job(&mut batch, &job);
                in_batch += 1;
            }
            if in_batch == 10_000 {
                open.tree.apply_batch(std::mem::take(&mut batch))?;
                n += in_batch;
                in_batch = 0;
            }
        }
        batch.insert(flag, &[][..]);
        open.tree.apply_batch(batch)?;
        open.db.flush()?;
        Ok(n + in_batch)
    }

    fn stats_are_cheap(&self) -> bool {
        self.tally.get().is_some()
    }

    /// From the running totals (`store::tally`), not a scan.
    fn stats(&self) -> Result<StoreStats, StoreError> {
        let counts = self.totals()?;
        let n = |v: i64| v.max(0) as u64;
        Ok(StoreStats {
            events: n(counts.events),
            deliveries: n(counts.deliveries),
            pending: n(counts.pending),
            dead_letters: n(counts.dead_letters),
            bytes: self.instance()?.db.size_on_disk()?,
        })
    }
}

impl Store for SledStore {
    /// Durable on power loss too (the intake then retires its journal's
    /// segments): sled's own flush alone is not (`flush_durably`).
    fn flush(&self) -> Result<(), StoreError> {
        self.instance()?.db.flush_durably()?;
        Ok(())
    }

    /// Saves the tally with the last flush, so the next open need not
    /// count by scanning.
    fn close(&self) -> Result<(), StoreError> {
        {
            let _no_counted_writes = self.tally.exclusive();
            if let Some(counts) = self.tally.get() {
                self.instance()?.tree.insert(TALLY_KEY, counts.encode())?;
                self.tally.mark_saved();
            }
        }
        self.flush()
    }

    /// sled's flush: it answers with the I/O error that stopped it, if any
    /// (cheap when nothing is dirty; no `fdatasync`, this is a probe).
    fn health(&self) -> Result<(), StoreError> {
        self.instance()?.db.flush()?;
        Ok(())
    }

    fn recover(&self) -> Result<(), StoreError> {
        let _one_at_a_time = self.reopening.lock().unwrap_or_else(|p| p.into_inner());
        if self.health().is_ok() {
            return Ok(());
        }
        // Let go of the failed instance; it closes (and releases sled's file
        // lock) once calls still holding it return. Until then opening fails
        // and the caller tries again later.
        self.current.store(None);
        let open = Open::new(&self.dir, &self.settings)?;
        open.db.flush()?;
        // Writes counted but not flushed before the failure are gone.
        self.tally.forget();
        self.current.store(Some(Arc::new(open)));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Attempt;

    /// Runs `open` (something that opens a data folder) again while it
    /// fails on sled's file lock, for up to 5 s: sled's io threads may hold
    /// the lock a moment after the store that used the folder was dropped.
    pub(super) fn once_unlocked<T>(
        mut open: impl FnMut() -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut result = open();
        for _ in 0..500 {
            match &result {
                Err(e) if is_locked_elsewhere(e) => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                    result = open();
                }
                _ => break,
            }
        }
        result
    }

    fn event(id: &str, received_at_ms: u64) -> StoredEvent {
        StoredEvent {
            received_at_ms,
            ..StoredEvent::for_test(id)
        }
    }

    fn job(id: &str, status: JobStatus, attempt_at_ms: u64) -> Job {
        Job {
            attempts: vec![Attempt {
                at_ms: attempt_at_ms,
                status: Some(200),
                latency_ms: 1.0,
                error: None,
                sent_sha256: None,
            }],
            attempts_in_round: 1,
            ..Job::for_test(id, &format!("ev-{id}"), status)
        }
    }

    /// Opening deactivates the log segments recovery found (the vendored
    /// sled's `IoBufs::start`) and, with most of their records removed,
    /// frees or cleans them before the first write: what was kept before
    /// each reopening and what was written after it all reads back.
    #[test]
    fn records_survive_reopenings_after_churn_that_empties_log_segments() {
        let dir = tempfile::tempdir().unwrap();
        let mut kept: Vec<(String, String)> = Vec::new();
        for round in 0..4 {
            let store = once_unlocked(|| SledStore::open(dir.path())).unwrap();
            for (id, data) in &kept {
                let event = store.event(id).unwrap();
                assert_eq!(
                    event.map(|e| e.data).as_ref(),
                    Some(data),
                    "round {round}: {id}"
                );
            }
            // ~2 MB a round: several of sled's 512 KiB segments, nine
            // records in ten removed again.
            for i in 0..2_000 {
                let mut e = event(&format!("r{round}-{i:04}"), i);
                e.data = format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(1_000));
                store
                    .complete_pipeline(&[Processed::new(e.clone())])
                    .unwrap();
                if i % 10 == 0 {
                    kept.push((e.id, e.data));
                } else {
                    store
                        .instance()
                        .unwrap()
                        .tree
                        .remove(key(b'e', &e.id))
                        .unwrap();
                }
            }
            store.flush().unwrap();
            store.close().unwrap();
        }
        assert_eq!(kept.len(), 800);
    }

    #[test]
    fn a_data_folder_keeps_the_compression_it_was_first_written_with() {
        let plain = SledSettings::default();
        let compressed = SledSettings {
            compress: true,
            ..plain
        };
        for (first, then) in [(plain, compressed), (compressed, plain)] {
            let dir = tempfile::tempdir().unwrap();
            assert_eq!(written_compressed(dir.path()), None);
            {
                let store = SledStore::open_with(dir.path(), first).unwrap();
                store
                    .update_jobs(&[job("a", JobStatus::Pending, 1)])
                    .unwrap();
                store.close().unwrap();
            }
            assert_eq!(written_compressed(dir.path()), Some(first.compress));
            // Opened with the other setting (sled alone would refuse), the
            // folder reads and writes as it was written.
            let store = once_unlocked(|| SledStore::open_with(dir.path(), then))
                .expect("the closed store let go of its lock");
            assert_eq!(ids(store.pending_jobs().unwrap()), ["a"]);
            store
                .update_jobs(&[job("b", JobStatus::Pending, 1)])
                .unwrap();
            assert_eq!(ids(store.pending_jobs().unwrap()), ["a", "b"]);
            drop(store);
            assert_eq!(written_compressed(dir.path()), Some(first.compress));
        }
    }

    fn ids(jobs: Vec<Job>) -> Vec<String> {
        let mut ids: Vec<String> = jobs.into_iter().map(|j| j.id).collect();
        ids.sort();
        ids
    }

    #[test]
    fn expire_removes_what_settled_before_the_cutoff_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        store
            .update_jobs(&[
                job("old-ok", JobStatus::Delivered, 100),
                job("new-ok", JobStatus::Delivered, 900),
                job("old-dead", JobStatus::Dead, 100),
                job("waiting", JobStatus::Pending, 100),
            ])
            .unwrap();
        let done = store.expire(Expiring::Delivered, 500, 10).unwrap();
        assert_eq!(
            done,
            Expired {
                removed: 1,
                more: false
            }
        );
        assert_eq!(
            ids(store.jobs().unwrap()),
            ["new-ok", "old-dead", "waiting"]
        );
        // The dead letter has its own period.
        let done = store.expire(Expiring::DeadLetters, 500, 10).unwrap();
        assert_eq!(done.removed, 1);
        assert!(store.dead_letters().unwrap().is_empty());
        assert_eq!(ids(store.pending_jobs().unwrap()), ["waiting"]);
    }

    #[test]
    fn a_dead_letter_resent_and_delivered_later_is_kept_by_its_old_marker() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        store.update_job(&job("a", JobStatus::Dead, 100)).unwrap();
        let mut resent = job("a", JobStatus::Delivered, 100);
        resent.attempts.push(Attempt {
            at_ms: 800,
            status: Some(200),
            latency_ms: 1.0,
            error: None,
            sent_sha256: None,
        });
        store.update_job(&resent).unwrap();
        // The dead-letter marker is stale: dropped, the job stays.
        let done = store.expire(Expiring::DeadLetters, 500, 10).unwrap();
        assert_eq!(done.removed, 0);
        assert_eq!(store.job("a").unwrap(), Some(resent));
        assert_eq!(
            store.expire(Expiring::Delivered, 500, 10).unwrap().removed,
            0
        );
        assert_eq!(
            store.expire(Expiring::Delivered, 801, 10).unwrap().removed,
            1
        );
        assert_eq!(store.job("a").unwrap(), None);
        assert_eq!(
            store.count_prefix(b"r/").unwrap() + store.count_prefix(b"R/").unwrap(),
            0,
            "no marker left behind"
        );
    }

    #[test]
    fn expire_works_in_batches_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let processed: Vec<Processed> = (0..25u64)
            .map(|i| Processed::new(event(&format!("e{i:02}"), 1000 + i)))
            .collect();
        store.complete_pipeline(&processed).unwrap();
        let first = store.expire(Expiring::Events, 1020, 10).unwrap();
        assert_eq!(
            first,
            Expired {
                removed: 10,
                more: true
            }
        );
        assert!(!store.has_event("e00").unwrap());
        assert!(store.has_event("e10").unwrap(), "oldest go first");
        // e10..e19; e20 is not older than the cutoff.
        let second = store.expire(Expiring::Events, 1020, 10).unwrap();
        assert_eq!(
            second,
            Expired {
                removed: 10,
                more: false
            }
        );
        let third = store.expire(Expiring::Events, 1020, 10).unwrap();
        assert_eq!(
            third,
            Expired {
                removed: 0,
                more: false
            }
        );
        assert!(store.has_event("e20").unwrap());
        assert_eq!(store.stats().unwrap().events, 5);
    }

    #[test]
    fn one_marker_per_write_and_each_entry_ages_on_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        // 300 events in one write (three markers of at most 128), one of
        // them far older than the rest.
        let processed: Vec<Processed> = (0..300u64)
            .map(|i| Processed::new(event(&format!("e{i:03}"), if i == 150 { 100 } else { 900 })))
            .collect();
        store.complete_pipeline(&processed).unwrap();
        assert_eq!(store.count_prefix(b"R/e/").unwrap(), 3);
        assert_eq!(
            store.count_prefix(b"r/").unwrap(),
            0,
            "no per-record marker"
        );
        assert_eq!(store.stats().unwrap().events, 300);

        let done = store.expire(Expiring::Events, 500, 1000).unwrap();
        assert_eq!(
            done,
            Expired {
                removed: 1,
                more: false
            }
        );
        assert!(!store.has_event("e150").unwrap());
        assert!(store.has_event("e149").unwrap() && store.has_event("e151").unwrap());
        assert_eq!(
            store.stats().unwrap().events,
            299,
            "its marker shrank by one"
        );

        // The budget cuts into a marker: what is left stays due.
        let done = store.expire(Expiring::Events, 1000, 200).unwrap();
        assert_eq!(
            done,
            Expired {
                removed: 200,
                more: true
            }
        );
        assert_eq!(store.stats().unwrap().events, 99);
        let done = store.expire(Expiring::Events, 1000, 200).unwrap();
        assert_eq!(
            done,
            Expired {
                removed: 99,
                more: false
            }
        );
        assert_eq!(
            store.count_prefix(b"R/").unwrap(),
            0,
            "no marker left behind"
        );
        assert_eq!(store.stats().unwrap().events, 0);
    }

    #[test]
    fn records_of_a_store_made_before_the_index_are_indexed_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        // Written as an older version did: records, no markers.
        let tree = store.instance().unwrap().tree.clone();
        let old_event = event("e", 100);
        tree.insert(key(b'e', "e"), serde_json::to_vec(&old_event).unwrap())
            .unwrap();
        let old_job = job("j", JobStatus::Delivered, 100);
        tree.insert(key(b'j', "j"), serde_json::to_vec(&old_job).unwrap())
            .unwrap();
        let waiting = job("w", JobStatus::Pending, 100);
        tree.insert(key(b'j', "w"), serde_json::to_vec(&waiting).unwrap())
            .unwrap();
        assert_eq!(store.expire(Expiring::Events, 500, 10).unwrap().removed, 0);
        assert_eq!(store.index_for_retention().unwrap(), 2);
        assert_eq!(store.index_for_retention().unwrap(), 0, "done once");
        assert_eq!(store.expire(Expiring::Events, 500, 10).unwrap().removed, 1);
        assert_eq!(
            store.expire(Expiring::Delivered, 500, 10).unwrap().removed,
            1
        );
        assert_eq!(ids(store.jobs().unwrap()), ["w"]);
    }

    fn counts(events: i64, deliveries: i64, pending: i64, dead_letters: i64) -> Option<Counts> {
        Some(Counts {
            events,
            deliveries,
            pending,
            dead_letters,
        })
    }

    fn with_jobs(event_id: &str, at_ms: u64, jobs: &[&str]) -> Processed {
        let mut p = Processed::new(event(event_id, at_ms));
        p.jobs = jobs
            .iter()
            .map(|id| job(id, JobStatus::Pending, at_ms))
            .collect();
        p
    }

    #[test]
    fn the_tally_follows_every_write_and_agrees_with_a_scan() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(
            store.tally.get(),
            counts(0, 0, 0, 0),
            "a new store is known"
        );
        let processed = [
            with_jobs("e0", 100, &["a0", "b0"]),
            with_jobs("e1", 100, &["a1", "b1"]),
            with_jobs("e2", 900, &["a2", "b2"]),
        ];
        store.complete_pipeline(&processed).unwrap();
        assert_eq!(store.tally.get(), counts(3, 6, 6, 0));
        store
            .update_jobs(&[
                job("a0", JobStatus::Delivered, 200),
                job("b0", JobStatus::Dead, 200),
                job("a1", JobStatus::Dead, 200),
            ])
            .unwrap();
        assert_eq!(store.tally.get(), counts(3, 6, 3, 2));
        // A dead letter re-sent, and an update that changes nothing counted.
        store
            .update_jobs(&[
                job("a1", JobStatus::Pending, 200),
                job("b2", JobStatus::Pending, 900),
            ])
            .unwrap();
        assert_eq!(store.tally.get(), counts(3, 6, 4, 1));
        assert_eq!(store.count_by_scan().unwrap(), store.tally.get().unwrap());

        assert_eq!(
            store.expire(Expiring::Delivered, 500, 10).unwrap().removed,
            1
        );
        assert_eq!(
            store
                .expire(Expiring::DeadLetters, 500, 10)
                .unwrap()
                .removed,
            1
        );
        assert_eq!(store.expire(Expiring::Events, 500, 10).unwrap().removed, 2);
        assert_eq!(store.tally.get(), counts(1, 4, 4, 0));
        assert_eq!(store.count_by_scan().unwrap(), store.tally.get().unwrap());
        let stats = store.stats().unwrap();
        assert_eq!((stats.events, stats.deliveries, stats.pending), (1, 4, 4));
    }

    #[test]
    fn the_tally_is_saved_at_close_and_counted_again_after_an_unclean_stop() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SledStore::open(dir.path()).unwrap();
            store
                .complete_pipeline(&[with_jobs("e0", 100, &["a0", "b0"])])
                .unwrap();
            store.close().unwrap();
        }
        {
            let store = SledStore::open(dir.path()).unwrap();
            assert_eq!(store.tally.get(), counts(1, 2, 2, 0), "taken back");
            store
                .complete_pipeline(&[with_jobs("e1", 100, &["a1"])])
                .unwrap();
            store.flush().unwrap();
            // Dropped without close, as by kill -9.
        }
        {
            let store = SledStore::open(dir.path()).unwrap();
            assert_eq!(store.tally.get(), None, "the saved totals were taken");
            assert_eq!(store.pending_count().unwrap(), 3, "by the queue markers");
            assert_eq!(store.tally.get(), None);
            assert_eq!(store.stats().unwrap().deliveries, 3, "counted by a scan");
            assert_eq!(store.tally.get(), counts(2, 3, 3, 0));
            // Written after a close: the saved totals no longer hold.
            store.close().unwrap();
            store
                .update_jobs(&[job("a1", JobStatus::Delivered, 200)])
                .unwrap();
            store.flush().unwrap();
        }
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(store.tally.get(), None);
        assert_eq!(store.stats().unwrap().pending, 2);
    }

    fn listed(store: &SledStore, q: &JobQuery<'_>) -> (Vec<String>, JobPage) {
        let page = store.list_jobs(q).unwrap();
        (page.jobs.iter().map(|j| j.id.clone()).collect(), page)
    }

    fn query<'a>(limit: usize) -> JobQuery<'a> {
        JobQuery {
            subscription: None,
            since_ms: None,
            until_ms: None,
            after: None,
            limit,
            wanted: None,
            max_examined: usize::MAX,
        }
    }

    /// Jobs j0..j9 created at 10, 20, ... 100; even ones to `a`, odd ones
    /// to `b`; every third dead, the rest delivered.
    fn ten_jobs(store: &SledStore) {
        let jobs: Vec<Job> = (0..10)
            .map(|i| Job {
                subscription_id: if i % 2 == 0 { "a" } else { "b" }.into(),
                created_at_ms: 10 * (i + 1),
                ..job(
                    &format!("j{i}"),
                    if i % 3 == 0 {
                        JobStatus::Dead
                    } else {
                        JobStatus::Delivered
                    },
                    500,
                )
            })
            .collect();
        let made: Vec<Processed> = jobs
            .into_iter()
            .map(|j| Processed {
                jobs: vec![j.clone()],
                ..Processed::new(event(&j.event_id, j.created_at_ms))
            })
            .collect();
        store.complete_pipeline(&made).unwrap();
    }

    // Paging, filters and scan budgets are checked on both backends alike
    // in tests/tests/store.rs; here, what is sled's own: its index keys.
    #[test]
    fn retention_takes_jobs_out_of_listings_and_old_jobs_are_indexed_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        ten_jobs(&store);
        // Delivered ones settled at 500: all of them go.
        store.expire(Expiring::Delivered, 1000, 100).unwrap();
        let (left, page) = listed(&store, &query(100));
        assert_eq!(left, ["j9", "j6", "j3", "j0"]);
        assert_eq!(page.total, 4);
        let tree = store.instance().unwrap().tree.clone();
        assert_eq!(
            tree.scan_prefix(b"n/").count(),
            4,
            "per-subscription keys gone too"
        );

        // Written as an older version did: a job without listing keys.
        let old = job("old", JobStatus::Delivered, 100);
        tree.insert(key(b'j', "old"), serde_json::to_vec(&old).unwrap())
            .unwrap();
        assert!(!listed(&store, &query(100)).0.contains(&"old".to_string()));
        // An earlier version's key of the all-subscriptions listing.
        tree.insert(b"l/0000000000000064/old", &[][..]).unwrap();
        assert_eq!(store.index_for_listing().unwrap(), 5);
        assert_eq!(
            tree.scan_prefix(b"l/").count(),
            0,
            "old listing keys removed"
        );
        assert_eq!(store.index_for_listing().unwrap(), 0, "done once");
        assert_eq!(listed(&store, &query(100)).0.last().unwrap(), "old");
    }
}
