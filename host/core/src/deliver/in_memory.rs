//! Which jobs have a task, and how a refill loads the others from the
//! store without starting one whose task just ended.
//!
//! A refill reads pending jobs, then starts them. A job read as pending may
//! meanwhile have been delivered by its task: its final state stored, its id
//! released. Starting the stale copy would deliver it twice. So while a
//! refill reads, releases are remembered, and what it read is claimed only
//! if its id neither has a task nor was released since the read began: a job
//! released before then had its final state stored before the read, so the
//! read did not see it pending.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::model::Job;

/// Shared by the deliverer, its refill and the state writer.
pub(super) type JobsInMemory = Arc<Mutex<InMemory>>;

/// Locks `m`, even if a panic poisoned it.
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Default)]
pub(super) struct InMemory {
    ids: HashSet<String>,
    /// While a refill reads the store: ids released since it began.
    released_during_read: Option<HashSet<String>>,
}

impl InMemory {
    pub(super) fn len(&self) -> usize {
        self.ids.len()
    }

    pub(super) fn contains(&self, id: &str) -> bool {
        self.ids.contains(id)
    }

    /// Takes `id` for a task; false if it has one.
    pub(super) fn insert(&mut self, id: &str) -> bool {
        !self.ids.contains(id) && self.ids.insert(id.to_string())
    }

    /// `id`'s task ended (its last state is stored) or never started.
    pub(super) fn remove(&mut self, id: &str) {
        if self.ids.remove(id)
            && let Some(released) = &mut self.released_during_read
        {
            released.insert(id.to_string());
        }
    }

    /// A refill starts reading pending jobs from the store.
    pub(super) fn begin_read(&mut self) {
        self.released_during_read = Some(HashSet::new());
    }

    /// Whether a refill reading now should pass over `id`.
    pub(super) fn passes_over(&self, id: &str) -> bool {
        self.ids.contains(id)
            || self
                .released_during_read
                .as_ref()
                .is_some_and(|released| released.contains(id))
    }

    /// The refill's read ended: takes the jobs read that may start (each
    /// now has its place here) and drops the others.
    pub(super) fn claim_read(&mut self, read: Vec<Job>) -> Vec<Job> {
        let claimed = read
            .into_iter()
            .filter(|job| !self.passes_over(&job.id) && self.ids.insert(job.id.clone()))
            .collect();
        self.released_during_read = None;
        claimed
    }

    /// The read failed: nothing to claim.
    pub(super) fn end_read(&mut self) {
        self.released_during_read = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::JobStatus;

    fn job(id: &str) -> Job {
        Job::for_test(id, "e", JobStatus::Pending)
    }

    #[test]
    fn a_job_released_while_a_refill_reads_is_not_started_from_the_stale_read() {
        let mut live = InMemory::default();
        assert!(live.insert("delivered"));
        live.begin_read();
        // Its task stores "delivered" and ends after the read saw it pending.
        live.remove("delivered");
        assert!(live.passes_over("delivered"));
        let read = vec![job("delivered"), job("waiting")];
        assert!(read.iter().all(|j| j.status == JobStatus::Pending));
        let claimed: Vec<String> = live.claim_read(read).into_iter().map(|j| j.id).collect();
        assert_eq!(claimed, ["waiting"]);
        assert!(live.contains("waiting") && !live.contains("delivered"));
        // The next read starts afresh: the released job is its store's word now.
        live.begin_read();
        assert!(!live.passes_over("delivered"));
    }

    #[test]
    fn a_job_started_while_a_refill_reads_is_not_claimed_twice() {
        let mut live = InMemory::default();
        live.begin_read();
        // Submitted (a test event, a re-send) after the read saw it.
        assert!(live.insert("new"));
        assert!(live.claim_read(vec![job("new")]).is_empty());
        assert_eq!(live.len(), 1);
    }
}
