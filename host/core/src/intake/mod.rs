//! Intake: what happens between a parsed ingest request and its `202`.
//! Events become durable before they are acknowledged, an event id is taken
//! once however many requests carry it, and an `Idempotency-Key` gets the
//! answer its first request got.
//!
//! [`DurableIntake`] is the seam a second backend implements;
//! [`JournalIntake`] (the append-only journal in front of the embedded
//! store) is the default; [`StoreIntake`] accepts straight into a store
//! that is its own queue (PostgreSQL), group-committing concurrent
//! requests. [`parse`] reads requests into events.

pub mod journal;
mod journal_intake;
pub mod parse;
mod store_intake;

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use crate::model::{Remembered, StoredEvent};

pub use journal_intake::JournalIntake;
pub use store_intake::{SWEEP_PAGE, StoreIntake};

/// A boxed future, so that [`DurableIntake`] can be used as a trait object.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why events were not accepted: the client may retry; nothing was acknowledged.
#[derive(Debug, Clone, thiserror::Error)]
pub enum IntakeError {
    /// The durable medium (disk, database) cannot take or answer it now.
    #[error("{0}")]
    Unavailable(String),
}

/// Accepting events durably.
///
/// Contract:
/// - [`DurableIntake::accept`] returns `Ok` only once every new event of the
///   request (and the key's answer, if any) survives a crash; after that the
///   event reaches the pipeline exactly once per process life, and after a
///   crash again at most until the store holds its outcome (so the pipeline
///   may run an event twice across a crash, never zero times).
/// - An event id already accepted (in flight or stored) is answered as
///   accepted and not stored again.
/// - The key's answer and the request's events are durable together or not
///   at all.
/// - On `Err` nothing of the request is acknowledged and its ids are free.
pub trait DurableIntake: Send + Sync {
    /// Why events cannot be accepted now (the disk is full, the database is
    /// gone), if so: ingest answers 503 without trying, `/readyz` says it.
    /// Cleared by the intake itself once it can write again.
    fn unavailable(&self) -> Option<String>;

    /// The answer remembered for `key`, if one was given less than
    /// [`parse::IDEMPOTENCY_WINDOW_MS`] before `now_ms`.
    fn remembered(
        &self,
        key: String,
        now_ms: u64,
    ) -> BoxFuture<'_, Result<Option<Remembered>, IntakeError>>;

    /// Makes the new ones among `events` durable and queues them for the
    /// pipeline; returns the `202` body. `id_given[i]` says whether the
    /// client named event `i`'s id (an id made here cannot be a duplicate).
    fn accept(
        &self,
        events: Vec<StoredEvent>,
        id_given: Vec<bool>,
        key: Option<String>,
        received_at_ms: u64,
    ) -> BoxFuture<'_, Result<String, IntakeError>>;
}

/// What a node does with its intake besides accepting: its upkeep while it
/// runs, and its end.
pub trait Intake: DurableIntake {
    /// No more events go to the pipeline (shutdown: the worker drains and ends).
    fn stop_queueing(&self);

    /// Runs until dropped, every `every`: watches the durable medium (503
    /// while it cannot write, cleared once it can; `recovered` is called
    /// then) and does the intake's housekeeping.
    fn maintain(
        self: Arc<Self>,
        every: std::time::Duration,
        recovered: Box<dyn Fn() + Send>,
    ) -> BoxFuture<'static, ()>;

    /// At shutdown, once the store is flushed: lets go of what the intake
    /// held for events now stored. Blocking.
    fn retire(&self) -> Result<(), String>;
}

/// Forgets expired `Idempotency-Key` answers (they are ignored when read;
/// this keeps them from piling up).
async fn forget_expired_answers(store: Arc<dyn crate::store::Store>) {
    let before = crate::clock::now_ms().saturating_sub(parse::IDEMPOTENCY_WINDOW_MS);
    match tokio::task::spawn_blocking(move || store.forget_answers(before)).await {
        Ok(Ok(n)) if n > 0 => tracing::info!(n, "expired Idempotency-Keys removed"),
        Ok(Err(e)) => tracing::warn!(error = %e, "cannot remove expired Idempotency-Keys"),
        _ => {}
    }
}

/// The answer remembered for `key` in `store`, if still within its window.
async fn remembered_in(
    store: Arc<dyn crate::store::Store>,
    key: String,
    now_ms: u64,
) -> Result<Option<Remembered>, IntakeError> {
    let found = tokio::task::spawn_blocking(move || store.remembered(&key))
        .await
        .map_err(|e| IntakeError::Unavailable(format!("ingest failed: {e}")))?
        .map_err(|e| IntakeError::Unavailable(e.to_string()))?;
    Ok(found.filter(|r| now_ms < r.at_ms + parse::IDEMPOTENCY_WINDOW_MS))
}

/// Counts clients' events as ingested (hookhost's own operational events
/// enter through the intake too, and are not counted).
fn count_ingested(events: &[StoredEvent]) {
    let from_clients = events
        .iter()
        .filter(|e| !crate::operational::is_operational(&e.event_type))
        .count();
    crate::metrics::METRICS
        .events_ingested
        .fetch_add(from_clients as u64, std::sync::atomic::Ordering::Relaxed);
}

/// `Idempotency-Key`s whose first request is still running: a second
/// request with one is told to wait (409) rather than run twice.
#[derive(Default, Clone)]
pub struct KeysInProgress(Arc<Mutex<HashSet<String>>>);

impl KeysInProgress {
    /// Marks `key` as in progress until the guard drops; `None` if it is already.
    pub fn claim(&self, key: &str) -> Option<KeyInProgress> {
        let mut set = self.0.lock().unwrap_or_else(|p| p.into_inner());
        set.insert(key.to_string()).then(|| KeyInProgress {
            keys: self.clone(),
            key: key.to_string(),
        })
    }
}

/// Holds an `Idempotency-Key` as in progress until dropped.
pub struct KeyInProgress {
    keys: KeysInProgress,
    key: String,
}

impl Drop for KeyInProgress {
    fn drop(&mut self) {
        let mut set = self.keys.0.lock().unwrap_or_else(|p| p.into_inner());
        set.remove(&self.key);
    }
}
