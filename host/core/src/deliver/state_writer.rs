//! The job-state writer: delivery tasks hand it each job's new state and
//! go on; one thread writes them to the store in order, many per batch.

use std::sync::Arc;

use crate::model::{EndpointHealth, Job, Processed};
use crate::store::{JobLeases, Store, StoreError};

use super::in_memory::{JobsInMemory, lock};

/// Records job states on its own thread, in order, many per store batch:
/// delivery tasks never wait on the store (whose writes can stall for
/// 100 ms and more) and never block the async threads.
pub(super) struct StateWriter {
    to_thread: std::sync::mpsc::Sender<StateWrite>,
    /// Joined on drop, so the store is released (sled's file lock with it)
    /// by the time a dropped deliverer is gone.
    thread: Option<std::thread::JoinHandle<()>>,
}

enum StateWrite {
    Save(Job),
    /// A job's task ended: once its last state is stored, it may be loaded
    /// again from the store (by a refill).
    Release(String),
    /// An endpoint's health changed (stored in order with job states).
    Health(String, EndpointHealth),
    /// Answered once every earlier write is applied.
    Sync(tokio::sync::oneshot::Sender<()>),
    /// Pipeline outcomes whose jobs were attempted before they were stored
    /// (on a shared store; see [`super::first_states`]): written before
    /// the states that follow them, which are of those jobs' later attempts.
    Outcomes(Vec<Processed>),
    /// Later writes wait until the pipeline batch this stands for is in the
    /// store (or failed): they may be states of its jobs, which must not
    /// land before the jobs themselves.
    After(std::sync::mpsc::Receiver<bool>),
}

/// Held by the pipeline while it stores a batch whose jobs are already
/// being delivered; tells the state writer when the batch is in the store.
/// Dropped unopened, it counts as a failed write.
pub struct StoredGate(std::sync::mpsc::SyncSender<bool>);

impl StoredGate {
    /// The batch is stored (`true`) or the store refused it (`false`).
    pub fn open(self, stored: bool) {
        let _ = self.0.send(stored);
    }
}

/// Most job states per store batch.
const STATE_BATCH: usize = 1024;

/// How often states the store refused are tried again.
const RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// How long the writer waits for more states after the first of a batch
/// when they trickle in. On sled every store batch rolls its io buffer
/// and costs two synchronous disk writes: at 1,000 deliveries/s, with one
/// state per batch, sled's io threads took a third of the server's CPU
/// (BENCHMARKS.md, "At 1,000 events/s"). A state recorded this much later
/// only widens the window in which a crash leads to a delivery sent again
/// (at least once). Not on a store shared by a cluster: there a state held
/// back is one the other nodes cannot see, and PostgreSQL showed no gain.
const LINGER: std::time::Duration = std::time::Duration::from_millis(5);

/// Each job's last state only (the later state wins in the store anyway):
/// what waits for a failed store is bounded by the jobs, not the attempts.
fn latest_only(jobs: Vec<Job>) -> Vec<Job> {
    let mut seen = std::collections::HashSet::new();
    let mut latest: Vec<Job> = jobs
        .into_iter()
        .rev()
        .filter(|job| seen.insert(job.id.clone()))
        .collect();
    latest.reverse();
    latest
}

/// Jobs whose final state is stored may be loaded again by a refill: after
/// the states they follow, so a refill never loads a job whose final state
/// is still on its way.
fn release(live: &JobsInMemory, released: &[String]) {
    let mut live = lock(live);
    for id in released {
        live.remove(id);
    }
}

/// Stores job states: as they are, or, on a shared store, those of jobs
/// this node still holds (one another node took over is that node's now).
fn record(
    store: &dyn Store,
    leases: Option<&dyn JobLeases>,
    jobs: &[Job],
) -> Result<(), StoreError> {
    let Some(leases) = leases else {
        return store.update_jobs(jobs);
    };
    let lost = leases.record(jobs)?;
    if lost > 0 {
        tracing::info!(
            jobs = lost,
            "deliveries another node took over meanwhile; their states here are not recorded"
        );
    }
    Ok(())
}

/// Puts each of `jobs`' states whose job is one of `outcomes`' into that
/// outcome in its job's place (the states are later ones: a batch's jobs
/// report to the batch until it is handed to the writer, and after it
/// they queue behind it); returns the others, `jobs` itself (no copy) in
/// the usual round where none is folded.
fn fold_later_states<'a>(
    outcomes: &mut [Processed],
    jobs: &'a [Job],
) -> std::borrow::Cow<'a, [Job]> {
    let places: Vec<Option<(usize, usize)>> = {
        let mut by_id = std::collections::HashMap::new();
        for (o, outcome) in outcomes.iter().enumerate() {
            for (j, job) in outcome.jobs.iter().enumerate() {
                by_id.insert(job.id.as_str(), (o, j));
            }
        }
        jobs.iter()
            .map(|job| by_id.get(job.id.as_str()).copied())
            .collect()
    };
    if places.iter().all(Option::is_none) {
        return std::borrow::Cow::Borrowed(jobs);
    }
    let mut others = Vec::new();
    for (job, place) in jobs.iter().zip(places) {
        match place {
            Some((o, j)) => outcomes[o].jobs[j] = job.clone(),
            None => others.push(job.clone()),
        }
    }
    std::borrow::Cow::Owned(others)
}

/// Stores outcomes whose jobs were attempted first, then job states.
/// On failure, gives back the outcomes still to write: all of them when
/// their own write failed, and the states then wait with them (a later
/// state of a job not yet stored would find no row to update).
fn write_all(
    store: &dyn Store,
    leases: Option<&dyn JobLeases>,
    live: &JobsInMemory,
    mut outcomes: Vec<Processed>,
    jobs: &[Job],
    released: &[String],
) -> Result<(), (StoreError, Vec<Processed>)> {
    let mut states = std::borrow::Cow::Borrowed(jobs);
    if let Some(leases) = leases
        && !outcomes.is_empty()
    {
        // A job that reported again after its batch was handed over is
        // written in that later state. Otherwise one delivered meanwhile,
        // its task ended, was written pending and free to claim (below),
        // its delivered state then refused as no longer this node's: it
        // went out again.
        states = fold_later_states(&mut outcomes, jobs);
        // A pending job whose task has ended is left free to claim: this
        // node no longer delivers it.
        let ended: std::collections::HashSet<&str> = released.iter().map(String::as_str).collect();
        let held = |job: &Job| lock(live).contains(&job.id) && !ended.contains(job.id.as_str());
        leases
            .complete_pipeline_attempted(&outcomes, &held)
            .map_err(|e| (e, outcomes))?;
    }
    if states.is_empty() {
        return Ok(());
    }
    record(store, leases, &states).map_err(|e| (e, Vec::new()))
}

impl StateWriter {
    /// With `leases` (a store shared by a cluster) only states of jobs this
    /// node still holds are recorded: one another node took over (this
    /// node's lease ran out) is that node's now.
    pub(super) fn start(
        store: Arc<dyn Store>,
        leases: Option<Arc<dyn JobLeases>>,
        live: JobsInMemory,
    ) -> StateWriter {
        let (to_thread, writes) = std::sync::mpsc::channel::<StateWrite>();
        let spawned = std::thread::Builder::new()
            .name("job-states".into())
            .spawn(move || {
                // States the store refused (disk full): written before any
                // newer ones once it takes writes again, and the jobs they
                // release stay held until then.
                let mut unwritten: Vec<Job> = Vec::new();
                let mut unwritten_outcomes: Vec<Processed> = Vec::new();
                let mut held: Vec<String> = Vec::new();
                let mut failing = false;
                let linger = if leases.is_none() {
                    LINGER
                } else {
                    std::time::Duration::ZERO
                };
                loop {
                    let first = if unwritten.is_empty() && unwritten_outcomes.is_empty() {
                        match writes.recv() {
                            Ok(write) => Some(write),
                            Err(_) => break,
                        }
                    } else {
                        match writes.recv_timeout(RETRY) {
                            Ok(write) => Some(write),
                            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => None,
                            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                        }
                    };
                    let mut jobs = std::mem::take(&mut unwritten);
                    let mut outcomes = std::mem::take(&mut unwritten_outcomes);
                    let mut released = std::mem::take(&mut held);
                    let mut synced = Vec::new();
                    let mut health = Vec::new();
                    let mut next = first;
                    let linger_until = std::time::Instant::now() + linger;
                    while let Some(write) = next {
                        match write {
                            // The states gathered so far wait too (a
                            // store write at most): simpler than splitting.
                            StateWrite::After(stored) => {
                                if !matches!(stored.recv(), Ok(true)) {
                                    // Its events run again, and their jobs
                                    // are delivered again: at least once.
                                    tracing::debug!(
                                        "a pipeline batch delivered early was not stored"
                                    );
                                }
                            }
                            StateWrite::Save(job) => jobs.push(job),
                            StateWrite::Outcomes(o) => outcomes.extend(o),
                            StateWrite::Release(id) => released.push(id),
                            StateWrite::Health(id, h) => health.push((id, h)),
                            StateWrite::Sync(done) => synced.push(done),
                        }
                        next = if jobs.len() >= STATE_BATCH || outcomes.len() >= STATE_BATCH {
                            None
                        } else {
                            match writes.try_recv() {
                                Ok(write) => Some(write),
                                // Nobody waits for these (no `Sync`):
                                // give more states a moment to join them.
                                Err(_) if !jobs.is_empty() && synced.is_empty() => {
                                    let left = linger_until
                                        .saturating_duration_since(std::time::Instant::now());
                                    writes.recv_timeout(left).ok()
                                }
                                Err(_) => None,
                            }
                        };
                    }
                    let outcomes_written = outcomes.len();
                    if let Err((e, back)) =
                        write_all(&*store, leases.as_deref(), &live, outcomes, &jobs, &released)
                    {
                        unwritten_outcomes = back;
                        if !failing {
                            tracing::error!(error = %e, jobs = jobs.len(), events = unwritten_outcomes.len(), "cannot record delivery states; retried until the store writes");
                        }
                        failing = true;
                        unwritten = latest_only(jobs);
                        held = released;
                    } else if std::mem::take(&mut failing) {
                        tracing::info!(
                            jobs = jobs.len(),
                            events = outcomes_written,
                            "delivery states recorded again"
                        );
                        release(&live, &released);
                    } else if !released.is_empty() {
                        release(&live, &released);
                    }
                    for (id, h) in health {
                        if let Err(e) = store.put_endpoint_health(&id, &h) {
                            tracing::error!(error = %e, subscription = %id, "cannot record endpoint health");
                        }
                    }
                    // Answered even when the store failed: shutdown must not
                    // wait forever on a dead disk (the journal and the
                    // pending markers cover what was not written).
                    for done in synced {
                        let _ = done.send(());
                    }
                }
            });
        let thread = spawned
            .inspect_err(|e| tracing::error!(error = %e, "cannot start the job-state writer"))
            .ok();
        StateWriter { to_thread, thread }
    }

    pub(super) fn save(&self, job: Job) {
        if self.to_thread.send(StateWrite::Save(job)).is_err() {
            tracing::error!("the job-state writer stopped; a delivery state is not recorded");
        }
    }

    /// Stores pipeline outcomes whose jobs were attempted first, before
    /// any state saved after this call.
    pub(super) fn save_outcomes(&self, outcomes: Vec<Processed>) {
        if self.to_thread.send(StateWrite::Outcomes(outcomes)).is_err() {
            tracing::error!(
                "the job-state writer stopped; pipeline outcomes are not recorded (their events run again at next start)"
            );
        }
    }

    pub(super) fn save_health(&self, subscription: String, health: EndpointHealth) {
        let _ = self
            .to_thread
            .send(StateWrite::Health(subscription, health));
    }

    /// States saved from now on are written only once the returned gate
    /// is opened (or dropped).
    pub(super) fn gate(&self) -> StoredGate {
        let (open, opened) = std::sync::mpsc::sync_channel(1);
        let _ = self.to_thread.send(StateWrite::After(opened));
        StoredGate(open)
    }

    pub(super) fn release(&self, job_id: String) {
        let _ = self.to_thread.send(StateWrite::Release(job_id));
    }

    /// [`StateWriter::sync`] for a blocking thread.
    pub(super) fn sync_blocking(&self) {
        let (done, applied) = tokio::sync::oneshot::channel();
        if self.to_thread.send(StateWrite::Sync(done)).is_ok() {
            let _ = applied.blocking_recv();
        }
    }

    /// Returns once every state saved before the call is in the store.
    pub(super) async fn sync(&self) {
        let (done, applied) = tokio::sync::oneshot::channel();
        if self.to_thread.send(StateWrite::Sync(done)).is_ok() {
            let _ = applied.await;
        }
    }
}

impl Drop for StateWriter {
    fn drop(&mut self) {
        // The thread ends when its channel closes: close ours first.
        let (closed, _) = std::sync::mpsc::channel();
        drop(std::mem::replace(&mut self.to_thread, closed));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Attempt, JobStatus, Processed, StoredEvent};
    use crate::store::sled::SledStore;

    fn job(status: JobStatus) -> Job {
        Job::for_test("j1", "e1", status)
    }

    fn batch_with(job: Job) -> Processed {
        let mut p = Processed::new(StoredEvent::for_test("e1"));
        p.jobs = vec![job];
        p
    }

    /// A batch handed to the writer with a job still pending, and that
    /// job's delivered state in the same round: the batch writes it
    /// delivered, and only the other job's state is left to record.
    #[test]
    fn a_later_state_in_the_same_round_goes_into_its_batch() {
        let mut outcomes = vec![batch_with(job(JobStatus::Pending))];
        let other = Job::for_test("j2", "e2", JobStatus::Delivered);
        let later = vec![job(JobStatus::Pending), job(JobStatus::Delivered), other];
        let rest = fold_later_states(&mut outcomes, &later);
        assert_eq!(outcomes[0].jobs[0].status, JobStatus::Delivered);
        assert_eq!(outcomes[0].jobs.len(), 1);
        assert_eq!(
            rest.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(),
            ["j2"]
        );
        // A round whose states follow no batch's jobs: they are recorded
        // as they came, not copied.
        let unrelated = [Job::for_test("j3", "e3", JobStatus::Delivered)];
        assert!(matches!(
            fold_later_states(&mut outcomes, &unrelated),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    /// A job delivered while its pipeline batch is being stored: its
    /// delivered state lands after the batch, not under it.
    #[test]
    fn a_state_behind_a_gate_lands_after_the_batch_it_waits_for() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).unwrap());
        let writer = StateWriter::start(store.clone(), None, JobsInMemory::default());
        let gate = writer.gate();
        let mut delivered = job(JobStatus::Delivered);
        delivered.attempts.push(Attempt {
            at_ms: 2,
            status: Some(204),
            latency_ms: 1.0,
            error: None,
            sent_sha256: None,
        });
        writer.save(delivered);
        // Without the gate the writer would store it within moments; give
        // it the chance to (a working gate never takes it).
        for _ in 0..50 {
            assert!(
                store.job("j1").unwrap().is_none(),
                "a state landed before its job's batch"
            );
            std::thread::sleep(std::time::Duration::from_millis(4));
        }
        store
            .complete_pipeline(&[batch_with(job(JobStatus::Pending))])
            .unwrap();
        gate.open(true);
        writer.sync_blocking();
        let stored = store.job("j1").unwrap().unwrap();
        assert_eq!(stored.status, JobStatus::Delivered);
        assert_eq!(store.pending_count().unwrap(), 0);
    }

    /// A pipeline that dies with its gate shut does not stop the writer.
    #[test]
    fn a_gate_dropped_unopened_lets_later_states_through() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).unwrap());
        store
            .complete_pipeline(&[batch_with(job(JobStatus::Pending))])
            .unwrap();
        let writer = StateWriter::start(store.clone(), None, JobsInMemory::default());
        drop(writer.gate());
        writer.save(job(JobStatus::Dead));
        writer.sync_blocking();
        assert_eq!(store.job("j1").unwrap().unwrap().status, JobStatus::Dead);
    }
}
