//! New jobs attempted before they are stored, on a store shared by a
//! cluster. The leader's pipeline hands over a batch's outcomes unwritten,
//! its events still marked as in the pipeline; the batch is written once
//! each of its jobs' first attempts has left it a state (or after
//! [`FIRST_ATTEMPT_WAIT`]), every job in that state. A delivered job is
//! then one row version, not an insert and an update: about a third of
//! PostgreSQL's work per event (BENCHMARKS.md, "How much one fewer row
//! write would buy on PostgreSQL"). A crash before the write runs those
//! events' pipeline again, and their jobs go out again: at least once, as
//! for any batch not yet stored.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Deliverer, lock};
use crate::model::{Job, JobStatus, Processed};
use crate::store::JobLeases;

/// How long a batch waits for its jobs' first attempts before it is
/// written as it stands (an endpoint that hangs, a slot long in coming):
/// its jobs are then stored pending, as without this, and their later
/// states update them. Also bounds how long a job is missing from the API.
const FIRST_ATTEMPT_WAIT: Duration = Duration::from_millis(250);

/// Batches handed to delivery before they were stored, by job id.
#[derive(Default)]
pub(super) struct Unstored {
    by_job: Mutex<HashMap<String, Arc<Mutex<Batch>>>>,
}

struct Batch {
    /// Emptied when written.
    outcomes: Vec<Processed>,
    /// Where each job's latest state goes in `outcomes`.
    slots: HashMap<String, Slot>,
    /// Jobs whose first state is not in yet.
    unreported: usize,
    written: bool,
}

struct Slot {
    outcome: usize,
    job: usize,
    reported: bool,
}

/// Whether `outcome` may wait for its jobs' first attempts to be stored:
/// it writes nothing but its event and jobs (window members and outage
/// state are read by the ticks, which must find them), and each job is
/// unordered, due, and this node's to deliver.
fn attempts_first(leases: &dyn JobLeases, outcome: &Processed, now_ms: u64) -> bool {
    outcome.window_members.is_empty()
        && outcome.outage.is_none()
        && !outcome.jobs.is_empty()
        && outcome.jobs.iter().all(|j| {
            j.status == JobStatus::Pending
                && j.order.is_none()
                && j.next_attempt_at_ms <= now_ms
                && leases.would_keep(j)
        })
}

impl Deliverer {
    /// On a shared store: takes out of `outcomes` those whose jobs may be
    /// attempted before they are stored and starts their delivery; they
    /// are written by the job-state writer with their jobs' first states.
    /// The rest are left to be stored now. Within `max_jobs_in_memory`.
    pub(super) fn attempt_before_storing(self: &Arc<Self>, outcomes: &mut Vec<Processed>) {
        // Stopping: shutdown may have written the unstored batches already.
        let Some(leases) = self.leases.as_ref().filter(|_| !self.stop.is_cancelled()) else {
            return;
        };
        let now = self.clock.now_ms();
        let (first, rest): (Vec<Processed>, Vec<Processed>) = std::mem::take(outcomes)
            .into_iter()
            .partition(|o| attempts_first(&**leases, o, now));
        *outcomes = rest;
        if first.is_empty() {
            return;
        }
        let jobs: Vec<Job> = first.iter().flat_map(|o| &o.jobs).cloned().collect();
        if !self.reserve_live(&jobs) {
            outcomes.extend(first);
            return;
        }
        let slots: HashMap<String, Slot> = first
            .iter()
            .enumerate()
            .flat_map(|(outcome, o)| {
                o.jobs.iter().enumerate().map(move |(job, j)| {
                    let slot = Slot {
                        outcome,
                        job,
                        reported: false,
                    };
                    (j.id.clone(), slot)
                })
            })
            .collect();
        let batch = Arc::new(Mutex::new(Batch {
            outcomes: first,
            unreported: slots.len(),
            slots,
            written: false,
        }));
        {
            let mut by_job = lock(&self.unstored.by_job);
            for job in &jobs {
                by_job.insert(job.id.clone(), batch.clone());
            }
        }
        let this = self.clone();
        let timed = batch.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(FIRST_ATTEMPT_WAIT) => {}
                // Shutdown writes it too, once the attempts have stopped.
                _ = this.stop.cancelled() => return,
            }
            this.write_unstored(&mut lock(&timed));
        });
        for job in jobs {
            self.spawn_task(job, None, true);
        }
    }

    /// Takes `job`'s state into its batch while that is not written yet;
    /// false otherwise (the state is then recorded as any other, after the
    /// batch). The last job to report writes the batch.
    pub(super) fn hold_unstored_state(&self, job: &Job) -> bool {
        let Some(batch) = lock(&self.unstored.by_job).get(&job.id).cloned() else {
            return false;
        };
        let mut guard = lock(&batch);
        let batch = &mut *guard;
        if batch.written {
            return false;
        }
        if let Some(slot) = batch.slots.get_mut(&job.id) {
            batch.outcomes[slot.outcome].jobs[slot.job] = job.clone();
            if !std::mem::replace(&mut slot.reported, true) {
                batch.unreported -= 1;
            }
        }
        if batch.unreported == 0 {
            self.write_unstored(batch);
        }
        true
    }

    /// Hands `batch` to the job-state writer unless it is written already.
    /// Under its lock, so a state saved after this queues behind it.
    fn write_unstored(&self, batch: &mut Batch) {
        if std::mem::replace(&mut batch.written, true) {
            return;
        }
        let outcomes = std::mem::take(&mut batch.outcomes);
        {
            let mut by_job = lock(&self.unstored.by_job);
            for id in std::mem::take(&mut batch.slots).keys() {
                by_job.remove(id);
            }
        }
        self.states.save_outcomes(outcomes);
    }

    /// Hands every batch not yet written to the job-state writer (at
    /// shutdown, once the attempts have stopped).
    pub(super) fn write_all_unstored(&self) {
        let batches: Vec<Arc<Mutex<Batch>>> = {
            let by_job = lock(&self.unstored.by_job);
            let mut seen = HashSet::new();
            by_job
                .values()
                .filter(|b| seen.insert(Arc::as_ptr(b)))
                .cloned()
                .collect()
        };
        for batch in batches {
            self.write_unstored(&mut lock(&batch));
        }
    }
}
