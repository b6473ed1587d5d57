//! The default [`DurableIntake`]: the journal (group-committed appends)
//! holds accepted events until the pipeline worker has put them, with their
//! outcome, in the store; a checkpoint then retires the journal's segments.
//! Store lookups run on blocking threads, never on the async ones.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::journal::{Journal, JournalError, Recovered};
use super::parse::answer;
use super::{
    BoxFuture, DurableIntake, Intake, IntakeError, count_ingested, forget_expired_answers,
    remembered_in,
};
use crate::model::{Remembered, StoredEvent};
use crate::store::{Store, StoreError};
use crate::worker::{Accepted, Ack, ToPipeline};
use std::sync::atomic::Ordering;

pub struct JournalIntake {
    journal: Arc<Journal>,
    store: Arc<dyn Store>,
    to_pipeline: ToPipeline,
    health: Health,
    /// Checkpoints and store recovery exclude each other: a checkpoint must
    /// not retire a segment between a store's reopening and the journal's
    /// events being run again.
    upkeep: Mutex<()>,
}

/// What keeps ingest from accepting, if anything: while the store or the
/// journal cannot write, ingest answers 503 at once and `/readyz` says why.
#[derive(Default)]
struct Health {
    /// Fast check for the ingest path: is anything below set?
    degraded: std::sync::atomic::AtomicBool,
    problems: Mutex<Problems>,
}

#[derive(Default)]
struct Problems {
    store: Option<String>,
    journal: Option<String>,
}

impl Health {
    fn problems(&self) -> std::sync::MutexGuard<'_, Problems> {
        self.problems.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets or clears one problem; returns whether it changed from none to
    /// some or back (for logging transitions only).
    fn set(
        &self,
        which: impl FnOnce(&mut Problems) -> &mut Option<String>,
        to: Option<String>,
    ) -> bool {
        let mut problems = self.problems();
        let slot = which(&mut problems);
        let changed = slot.is_some() != to.is_some();
        *slot = to;
        let degraded = problems.store.is_some() || problems.journal.is_some();
        self.degraded.store(degraded, Ordering::SeqCst);
        changed
    }

    fn summary(&self) -> Option<String> {
        if !self.degraded.load(Ordering::SeqCst) {
            return None;
        }
        let problems = self.problems();
        let text: Vec<String> = [
            problems
                .store
                .as_ref()
                .map(|e| format!("store cannot write: {e}")),
            problems
                .journal
                .as_ref()
                .map(|e| format!("journal cannot write: {e}")),
        ]
        .into_iter()
        .flatten()
        .collect();
        (!text.is_empty()).then(|| text.join("; "))
    }
}

impl JournalIntake {
    /// Opens the journal in `dir`, restores what it holds that `store` does
    /// not, and queues those events on `to_pipeline` first. Returns the
    /// intake and how many events were resumed.
    pub fn open(
        dir: &Path,
        backlog: usize,
        store: Arc<dyn Store>,
        to_pipeline: ToPipeline,
    ) -> Result<(Arc<JournalIntake>, usize), IntakeError> {
        let unavailable = |e: JournalError| IntakeError::Unavailable(e.to_string());
        let (journal, recovered) = Journal::open(dir, backlog).map_err(unavailable)?;
        let batches = recover(&journal, recovered, &*store)
            .map_err(|e| IntakeError::Unavailable(e.to_string()))?;
        let resumed = batches.iter().map(|b| b.events.len()).sum();
        for batch in batches {
            let _ = to_pipeline.send(batch);
        }
        let intake = JournalIntake {
            journal,
            store,
            to_pipeline,
            health: Health::default(),
            upkeep: Mutex::new(()),
        };
        Ok((Arc::new(intake), resumed))
    }

    /// Retires journal segments whose events are all in the store; with
    /// `close_current` (at shutdown) the segment being written too. Not
    /// while the store is failing. Blocking.
    pub fn checkpoint(&self, close_current: bool) -> Result<usize, JournalError> {
        let _upkeep = self.upkeep.lock().unwrap_or_else(|p| p.into_inner());
        if self.health.problems().store.is_some() {
            return Ok(0);
        }
        self.journal.checkpoint(&*self.store, close_current)
    }

    /// Checks the store; if it cannot write, tries to recover it and, once
    /// it has, runs again every event the journal holds that the store lost
    /// (writes not flushed before the failure). Returns whether the store
    /// recovered now. Blocking.
    fn check_store(&self) -> bool {
        let _upkeep = self.upkeep.lock().unwrap_or_else(|p| p.into_inner());
        let failing = self.health.problems().store.is_some();
        match self.store.health() {
            Ok(()) if !failing => return false,
            // Reopened on an earlier tick, but the journal was not read back.
            Ok(()) => {}
            Err(e) => {
                if self.health.set(|p| &mut p.store, Some(e.to_string())) {
                    tracing::error!(error = %e, "the store cannot write; ingest answers 503 until it recovers");
                }
                if let Err(e) = self.store.recover() {
                    tracing::debug!(error = %e, "store not recovered yet");
                    return false;
                }
            }
        }
        let resumed = self
            .journal
            .read_back()
            .map_err(|e| e.to_string())
            .and_then(|held| recover(&self.journal, held, &*self.store).map_err(|e| e.to_string()));
        match resumed {
            Ok(batches) => {
                let events: usize = batches.iter().map(|b| b.events.len()).sum();
                for batch in batches {
                    self.queue(batch);
                }
                self.health.set(|p| &mut p.store, None);
                tracing::info!(events_run_again = events, "the store writes again");
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "store reopened but the journal could not be read back; retried");
                false
            }
        }
    }

    /// Runs until dropped: every `every` checks the store (recovering it if
    /// it failed; `recovered` is called then), probes a failed journal and
    /// checkpoints; hourly removes expired `Idempotency-Key` answers (they
    /// are ignored when read, this keeps them from piling up).
    async fn run_upkeep(self: Arc<Self>, every: Duration, recovered: Box<dyn Fn() + Send>) {
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut hourly = tokio::time::interval(Duration::from_secs(3600));
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    let this = self.clone();
                    if let Ok(true) = tokio::task::spawn_blocking(move || this.check_store()).await {
                        recovered();
                    }
                    if self.health.problems().journal.is_some()
                        && self.journal.probe().await.is_ok()
                        && self.health.set(|p| &mut p.journal, None)
                    {
                        tracing::info!("the journal writes again");
                    }
                    let this = self.clone();
                    match tokio::task::spawn_blocking(move || this.checkpoint(false)).await {
                        Ok(Ok(n)) if n > 0 => tracing::debug!(segments = n, "journal checkpoint"),
                        Ok(Err(e)) => tracing::warn!(error = %e, "journal checkpoint failed; retried"),
                        _ => {}
                    }
                }
                _ = hourly.tick() => forget_expired_answers(self.store.clone()).await,
            }
        }
    }

    async fn accept_events(
        &self,
        events: Vec<StoredEvent>,
        id_given: Vec<bool>,
        key: Option<String>,
        received_at_ms: u64,
    ) -> Result<String, IntakeError> {
        let body = answer(&events);
        // An id accepted before (in the journal or in the store) is answered
        // with, and stored nothing for; an id made here is new.
        let (events, new) = if id_given.iter().any(|&given| given) {
            // Client-named ids are looked up in the store: a blocking thread.
            let (journal, store) = (self.journal.clone(), self.store.clone());
            tokio::task::spawn_blocking(move || {
                let new = claim_unseen(&journal, &*store, &events, id_given.into_iter());
                (events, new)
            })
            .await
            .map_err(|e| IntakeError::Unavailable(format!("ingest failed: {e}")))?
        } else {
            // Ids made here are new: claiming them touches only the journal's
            // in-memory set, no hop to another thread.
            let new = claim_unseen(&self.journal, &*self.store, &events, id_given.into_iter());
            (events, new)
        };
        let new = new.map_err(|e| IntakeError::Unavailable(e.to_string()))?;
        let fresh: Vec<StoredEvent> = events
            .into_iter()
            .zip(new)
            .filter_map(|(event, new)| new.then_some(event))
            .collect();
        // The key's answer goes in the same journal frame as the events: both
        // or neither.
        let remembered = key.map(|key| Remembered {
            key,
            status: 202,
            body: body.clone(),
            at_ms: received_at_ms,
        });
        if fresh.is_empty() && remembered.is_none() {
            return Ok(body);
        }
        let room = self.journal.reserve(fresh.len()).await;
        let segment = match self.journal.append(&fresh, remembered.as_ref()).await {
            Ok(segment) => segment,
            Err(e) => {
                if self.health.set(|p| &mut p.journal, Some(e.to_string())) {
                    tracing::error!(error = %e, "the journal cannot write; ingest answers 503 until it recovers");
                }
                self.journal.unreserve(room);
                self.journal.release(fresh.iter().map(|e| e.id.as_str()));
                return Err(IntakeError::Unavailable(format!(
                    "events not stored durably: {e}"
                )));
            }
        };
        if let Some(r) = remembered {
            let (journal, store) = (self.journal.clone(), self.store.clone());
            // Off the async threads: a store write may wait on its disk.
            let _ = tokio::task::spawn_blocking(move || match store.remember(&r) {
                Ok(()) => journal.answer_stored(segment),
                // The journal keeps it (and its segment); restored at next start.
                Err(e) => tracing::warn!(error = %e, "cannot store an Idempotency-Key answer"),
            })
            .await;
        }
        count_ingested(&fresh);
        if !fresh.is_empty() {
            let ack = ack(&self.journal, Some(segment), &fresh, room);
            self.queue(Accepted {
                events: fresh,
                ack: Some(ack),
            });
        }
        Ok(body)
    }

    fn queue(&self, accepted: Accepted) {
        let _ = self.to_pipeline.send(accepted);
    }
}

impl DurableIntake for JournalIntake {
    fn unavailable(&self) -> Option<String> {
        self.health.summary()
    }

    fn remembered(
        &self,
        key: String,
        now_ms: u64,
    ) -> BoxFuture<'_, Result<Option<Remembered>, IntakeError>> {
        Box::pin(remembered_in(self.store.clone(), key, now_ms))
    }

    fn accept(
        &self,
        events: Vec<StoredEvent>,
        id_given: Vec<bool>,
        key: Option<String>,
        received_at_ms: u64,
    ) -> BoxFuture<'_, Result<String, IntakeError>> {
        Box::pin(self.accept_events(events, id_given, key, received_at_ms))
    }
}

impl Intake for JournalIntake {
    fn stop_queueing(&self) {
        self.to_pipeline.close();
    }

    fn maintain(
        self: Arc<Self>,
        every: Duration,
        recovered: Box<dyn Fn() + Send>,
    ) -> BoxFuture<'static, ()> {
        Box::pin(self.run_upkeep(every, recovered))
    }

    /// Everything the worker stored is flushed: the journal can go.
    fn retire(&self) -> Result<(), String> {
        self.checkpoint(true).map(|_| ()).map_err(|e| e.to_string())
    }
}

/// The acknowledgement the worker gives for `events` (appended to `segment`):
/// their backlog room comes back either way; once stored, their ids are free
/// and the segment may go.
fn ack(journal: &Arc<Journal>, segment: Option<u64>, events: &[StoredEvent], room: u32) -> Ack {
    let journal = journal.clone();
    let ids: Vec<String> = events.iter().map(|e| e.id.clone()).collect();
    Box::new(move |stored: bool| {
        journal.unreserve(room);
        if stored {
            journal.stored(segment, ids.iter().map(String::as_str));
        }
    })
}

/// Events the journal holds that the store does not: the ones whose worker
/// batch did not land before a crash. Their `Idempotency-Key` answers are
/// restored first.
fn recover(
    journal: &Arc<Journal>,
    recovered: Recovered,
    store: &dyn Store,
) -> Result<Vec<Accepted>, StoreError> {
    if recovered.torn_frames > 0 {
        tracing::warn!(
            frames = recovered.torn_frames,
            "journal: a torn frame at the end of a segment was dropped (its request was never acknowledged)"
        );
    }
    for answer in &recovered.answers {
        if store.remembered(&answer.key)?.is_none() {
            store.remember(answer)?;
        }
    }
    let new = claim_unseen(journal, store, &recovered.events, std::iter::repeat(true))?;
    // One batch per segment read: each segment stays until its own events
    // are in the store.
    let mut batches: Vec<(u64, Vec<StoredEvent>)> = Vec::new();
    for ((event, new), segment) in recovered
        .events
        .into_iter()
        .zip(new)
        .zip(recovered.segments)
    {
        if !new {
            continue; // in the store already, or twice in the journal
        }
        match batches.last_mut() {
            Some((s, events)) if *s == segment => events.push(event),
            _ => batches.push((segment, vec![event])),
        }
    }
    Ok(batches
        .into_iter()
        .map(|(segment, events)| {
            journal.replaying(segment, events.len() as u64);
            Accepted {
                ack: Some(ack(journal, Some(segment), &events, 0)),
                events,
            }
        })
        .collect())
}

/// Claims the ids of `events` and tells, per event, whether it is new: not
/// claimed already (in flight, or earlier in `events`) and not in the store.
/// Claims come first, then the store: the worker stores an event before it
/// releases the claim. Where `look_up` says false (an id made here) the
/// store is not asked. On a store error every claim made here is released.
fn claim_unseen(
    journal: &Journal,
    store: &dyn Store,
    events: &[StoredEvent],
    look_up: impl Iterator<Item = bool>,
) -> Result<Vec<bool>, StoreError> {
    let mut new = journal.claim(events.iter().map(|e| e.id.as_str()));
    for (i, (event, look_up)) in events.iter().zip(look_up).enumerate() {
        if !new[i] || !look_up {
            continue;
        }
        match store.has_event(&event.id) {
            Ok(false) => {}
            Ok(true) => {
                journal.release([event.id.as_str()]);
                new[i] = false;
            }
            Err(e) => {
                let claimed = events.iter().zip(&new).filter(|(_, n)| **n);
                journal.release(claimed.map(|(e, _)| e.id.as_str()));
                return Err(e);
            }
        }
    }
    Ok(new)
}
