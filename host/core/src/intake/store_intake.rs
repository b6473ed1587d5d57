//! The [`DurableIntake`] of a store that is its own queue (PostgreSQL): an
//! accepted event is a committed row before its `202`, so no journal is
//! kept on the node and any node sharing the database sees the id as taken.
//!
//! Group commit: requests go to one committer thread, which takes every
//! request that queued while the previous transaction ran and admits them
//! in one transaction. Under load a commit carries many requests; alone, a
//! request waits for exactly one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc as std_mpsc};
use std::time::Duration;

use tokio::sync::{Semaphore, oneshot};

use super::parse::answer;
use super::{
    BoxFuture, DurableIntake, Intake, IntakeError, count_ingested, forget_expired_answers,
    remembered_in,
};
use crate::model::{Remembered, StoredEvent};
use crate::store::{EventInbox, Store, StoreError};
use crate::worker::{Accepted, ToPipeline};

/// Events admitted in one transaction at most (a single larger request
/// still goes in one, alone).
const MAX_COMMIT_EVENTS: usize = 4096;

/// Unfinished events taken per sweep at most.
pub const SWEEP_PAGE: usize = 1000;

/// A request's events back from the committer, with which were new and
/// whether they are this node's pipeline's.
type Admission = (Vec<StoredEvent>, Result<(Vec<bool>, bool), StoreError>);

/// One request waiting for its commit.
struct Commit {
    events: Vec<StoredEvent>,
    answer: Option<Remembered>,
    reply: oneshot::Sender<Admission>,
}

pub struct StoreIntake {
    store: Arc<dyn Store>,
    inbox: Arc<dyn EventInbox>,
    commits: std_mpsc::Sender<Commit>,
    to_pipeline: ToPipeline,
    /// Room in the pipeline's queue, in events (`server.pipeline_backlog`).
    backlog: Arc<Semaphore>,
    backlog_limit: usize,
    /// Fast check for the ingest path, and why.
    failing: AtomicBool,
    problem: Mutex<Option<String>>,
}

impl StoreIntake {
    /// Starts the committer on `inbox`. Events admitted before and not
    /// through a pipeline (a crash, another node's) are not read here: the
    /// leading node takes them up with [`StoreIntake::sweep`].
    pub fn open(
        inbox: Arc<dyn EventInbox>,
        store: Arc<dyn Store>,
        backlog: usize,
        to_pipeline: ToPipeline,
    ) -> Result<Arc<StoreIntake>, IntakeError> {
        let (commits, queued) = std_mpsc::channel();
        std::thread::Builder::new()
            .name("hookhost-intake-commit".into())
            .spawn({
                let inbox = inbox.clone();
                move || commit_loop(&*inbox, queued)
            })
            .map_err(|e| IntakeError::Unavailable(format!("cannot start the committer: {e}")))?;
        let backlog_limit = backlog.max(1);
        let intake = StoreIntake {
            store,
            inbox,
            commits,
            to_pipeline,
            backlog: Arc::new(Semaphore::new(backlog_limit)),
            backlog_limit,
            failing: AtomicBool::new(false),
            problem: Mutex::new(None),
        };
        Ok(Arc::new(intake))
    }

    /// On taking the lead, before the worker starts: queues every event no
    /// pipeline took under this lead, so that they are placed before the
    /// worker's first tick closes due windows; how many. Blocking.
    pub fn take_up_all(&self) -> Result<usize, StoreError> {
        let mut taken = 0;
        loop {
            let page = self.inbox.take_unfinished(SWEEP_PAGE)?;
            if page.is_empty() {
                return Ok(taken);
            }
            taken += page.len();
            let _ = self.to_pipeline.send(Accepted {
                events: page,
                ack: None,
            });
        }
    }

    /// Takes up to a pipeline queue's room of events no pipeline took under
    /// the current lead (another node's, an earlier leader's, a crash's)
    /// and queues them for this node's pipeline; how many. Call while
    /// leading, and again at once when it returns a full page.
    pub async fn sweep(&self) -> Result<usize, StoreError> {
        let room = self.backlog.available_permits().min(SWEEP_PAGE);
        if room == 0 {
            return Ok(0);
        }
        let inbox = self.inbox.clone();
        let events = tokio::task::spawn_blocking(move || inbox.take_unfinished(room))
            .await
            .map_err(|e| StoreError(format!("sweep: {e}")))??;
        let taken = events.len();
        if taken == 0 {
            return Ok(0);
        }
        // Ingest may have taken some room meanwhile: wait for the worker.
        let permits = self
            .backlog
            .clone()
            .acquire_many_owned(taken as u32)
            .await
            .map_err(|e| StoreError(format!("sweep: {e}")))?;
        let queued = self.to_pipeline.send(Accepted {
            events,
            ack: Some(Box::new(move |_stored| drop(permits))),
        });
        // Not queued (stopping): they stay unfinished for the next leader.
        Ok(if queued.is_ok() { taken } else { 0 })
    }

    /// Sets or clears why the store cannot take events; true if that
    /// changed from none to some or back (for logging transitions only).
    fn set_problem(&self, to: Option<String>) -> bool {
        let mut problem = self.problem.lock().unwrap_or_else(|p| p.into_inner());
        let changed = problem.is_some() != to.is_some();
        self.failing.store(to.is_some(), Ordering::SeqCst);
        *problem = to;
        changed
    }

    async fn accept_events(
        &self,
        events: Vec<StoredEvent>,
        key: Option<String>,
        received_at_ms: u64,
    ) -> Result<String, IntakeError> {
        let body = answer(&events);
        let remembered = key.map(|key| Remembered {
            key,
            status: 202,
            body: body.clone(),
            at_ms: received_at_ms,
        });
        if events.is_empty() && remembered.is_none() {
            return Ok(body);
        }
        // Waits while the pipeline's queue is full: its room is taken
        // before the commit and given back once the worker is done.
        let wanted = events.len().min(self.backlog_limit) as u32;
        let room = self.backlog.clone().acquire_many_owned(wanted).await.ok();
        let (reply, replied) = oneshot::channel();
        let commit = Commit {
            events,
            answer: remembered,
            reply,
        };
        let gone = || IntakeError::Unavailable("the intake's committer has stopped".into());
        self.commits.send(commit).map_err(|_| gone())?;
        let (events, admitted) = replied.await.map_err(|_| gone())?;
        let (new, to_pipeline) = match admitted {
            Ok(admitted) => admitted,
            Err(e) => {
                if self.set_problem(Some(e.to_string())) {
                    tracing::error!(error = %e, "the database cannot take events; ingest answers 503 until it can");
                }
                return Err(IntakeError::Unavailable(format!(
                    "events not stored durably: {e}"
                )));
            }
        };
        let fresh: Vec<StoredEvent> = events
            .into_iter()
            .zip(new)
            .filter_map(|(event, new)| new.then_some(event))
            .collect();
        count_ingested(&fresh);
        // A standby's events wait in the database for the leader's sweep.
        if !fresh.is_empty() && to_pipeline {
            // Stored either way: `false` (not stored until shutdown) leaves
            // them marked unfinished in the database for the next start.
            let _ = self.to_pipeline.send(Accepted {
                events: fresh,
                ack: Some(Box::new(move |_stored| drop(room))),
            });
        }
        Ok(body)
    }

    /// Every `every`: is the database there? Clears or sets the 503.
    async fn run_upkeep(self: Arc<Self>, every: Duration, recovered: Box<dyn Fn() + Send>) {
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut hourly = tokio::time::interval(Duration::from_secs(3600));
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    let store = self.store.clone();
                    let health = tokio::task::spawn_blocking(move || store.health())
                        .await
                        .unwrap_or_else(|e| Err(StoreError(format!("health check: {e}"))));
                    match health {
                        Ok(()) => {
                            if self.set_problem(None) {
                                tracing::info!("the database takes events again");
                                recovered();
                            }
                        }
                        Err(e) => {
                            if self.set_problem(Some(e.to_string())) {
                                tracing::error!(error = %e, "the database cannot take events; ingest answers 503 until it can");
                            }
                        }
                    }
                }
                _ = hourly.tick() => forget_expired_answers(self.store.clone()).await,
            }
        }
    }
}

/// The committer: one transaction for every request queued meanwhile.
/// Ends when the intake is dropped.
fn commit_loop(inbox: &dyn EventInbox, queued: std_mpsc::Receiver<Commit>) {
    while let Ok(first) = queued.recv() {
        let mut size = first.events.len();
        let mut batch = vec![first];
        while size < MAX_COMMIT_EVENTS {
            match queued.try_recv() {
                Ok(next) => {
                    size += next.events.len();
                    batch.push(next);
                }
                Err(_) => break,
            }
        }
        let mut events = Vec::with_capacity(size);
        let mut answers = Vec::new();
        let mut shapes = Vec::with_capacity(batch.len());
        for commit in batch {
            shapes.push((commit.events.len(), commit.reply));
            events.extend(commit.events);
            answers.extend(commit.answer);
        }
        let admitted = inbox.admit(&events, &answers);
        tracing::trace!(
            requests = shapes.len(),
            events = events.len(),
            "intake commit"
        );
        let mut events = events.into_iter();
        let mut offset = 0;
        for (len, reply) in shapes {
            let mine: Vec<StoredEvent> = events.by_ref().take(len).collect();
            let result = match &admitted {
                Ok(admitted) => Ok((
                    admitted.new[offset..offset + len].to_vec(),
                    admitted.to_pipeline,
                )),
                Err(e) => Err(e.clone()),
            };
            offset += len;
            let _ = reply.send((mine, result));
        }
    }
}

impl DurableIntake for StoreIntake {
    fn unavailable(&self) -> Option<String> {
        if !self.failing.load(Ordering::SeqCst) {
            return None;
        }
        let problem = self.problem.lock().unwrap_or_else(|p| p.into_inner());
        problem
            .as_ref()
            .map(|e| format!("the database cannot take events: {e}"))
    }

    fn remembered(
        &self,
        key: String,
        now_ms: u64,
    ) -> BoxFuture<'_, Result<Option<Remembered>, IntakeError>> {
        Box::pin(remembered_in(self.store.clone(), key, now_ms))
    }

    /// Every id is checked by the database, named or not: it is the same
    /// one statement either way.
    fn accept(
        &self,
        events: Vec<StoredEvent>,
        _id_given: Vec<bool>,
        key: Option<String>,
        received_at_ms: u64,
    ) -> BoxFuture<'_, Result<String, IntakeError>> {
        Box::pin(self.accept_events(events, key, received_at_ms))
    }
}

impl Intake for StoreIntake {
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

    /// Each event was committed before its `202`: nothing is held here.
    fn retire(&self) -> Result<(), String> {
        Ok(())
    }
}
