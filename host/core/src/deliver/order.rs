//! Ordered delivery (`ordering` on a subscription): per (subscription, key)
//! a lane of pending deliveries by sequence number, of which only the head
//! has a task. The others are ids here, their jobs in the store (loaded
//! when their turn comes), so a long lane costs memory per id, not per
//! payload, and never fills `max_jobs_in_memory`.
//!
//! Nothing starts until [`Lanes::open`] is called, once every pending
//! ordered job in the store is in its lane (after a restart, a lane's head
//! may be any of them).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use crate::model::{Job, JobStatus, OnDead};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct LaneId {
    subscription: String,
    key: String,
}

impl LaneId {
    pub(super) fn subscription(&self) -> &str {
        &self.subscription
    }

    pub(super) fn of(job: &Job) -> Option<(LaneId, u64)> {
        let slot = job.order.as_ref()?;
        Some((
            LaneId {
                subscription: job.subscription_id.clone(),
                key: slot.key.clone(),
            },
            slot.seq,
        ))
    }
}

#[derive(Default)]
struct Lane {
    /// Pending, not started: sequence → job id.
    waiting: BTreeMap<u64, String>,
    /// The head with a task.
    running: Option<u64>,
    /// A dead delivery the lane waits for (`on_dead = "hold"`).
    held: Option<u64>,
}

#[derive(Default)]
pub(super) struct Lanes {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    lanes: HashMap<LaneId, Lane>,
    /// Whether the store's pending ordered jobs are all in their lanes.
    open: bool,
}

impl Lanes {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Puts a pending job in its lane (again: a re-sent one keeps its place).
    pub(super) fn enqueue(&self, lane: &LaneId, seq: u64, id: &str) {
        let mut inner = self.inner();
        let entry = inner.lanes.entry(lane.clone()).or_default();
        if entry.running != Some(seq) {
            entry.waiting.insert(seq, id.to_string());
        }
    }

    /// A dead delivery that holds its lane (found at start).
    pub(super) fn hold(&self, lane: &LaneId, seq: u64) {
        let mut inner = self.inner();
        let entry = inner.lanes.entry(lane.clone()).or_default();
        entry.held = Some(entry.held.map_or(seq, |h| h.min(seq)));
    }

    /// A held delivery was re-sent: the lane waits for it no longer (it is
    /// back in the lane, at its own place).
    pub(super) fn release(&self, lane: &LaneId, seq: u64) {
        if let Some(entry) = self.inner().lanes.get_mut(lane)
            && entry.held == Some(seq)
        {
            entry.held = None;
        }
    }

    /// Every lane's head may start from now on; returns the lanes.
    pub(super) fn open(&self) -> Vec<LaneId> {
        let mut inner = self.inner();
        inner.open = true;
        inner.lanes.keys().cloned().collect()
    }

    /// The job to start in `lane`, if its head may start: nothing running,
    /// nothing held, lanes open. It counts as running from here.
    pub(super) fn next(&self, lane: &LaneId) -> Option<(u64, String)> {
        let mut inner = self.inner();
        if !inner.open {
            return None;
        }
        let entry = inner.lanes.get_mut(lane)?;
        if entry.running.is_some() || entry.held.is_some() {
            return None;
        }
        let (seq, id) = entry.waiting.pop_first()?;
        entry.running = Some(seq);
        Some((seq, id))
    }

    /// The running job of `lane` ended as `status` (`None`: not started
    /// after all, e.g. gone from the store). Empty lanes are forgotten.
    pub(super) fn finished(
        &self,
        lane: &LaneId,
        seq: u64,
        status: Option<JobStatus>,
        on_dead: OnDead,
    ) {
        let mut inner = self.inner();
        let Some(entry) = inner.lanes.get_mut(lane) else {
            return;
        };
        if entry.running == Some(seq) {
            entry.running = None;
        }
        if status == Some(JobStatus::Dead) && on_dead == OnDead::Hold {
            entry.held = Some(seq);
        }
        if entry.running.is_none() && entry.held.is_none() && entry.waiting.is_empty() {
            inner.lanes.remove(lane);
        }
    }

    /// Deliveries waiting in lanes (not started).
    pub(super) fn waiting(&self) -> usize {
        self.inner().lanes.values().map(|l| l.waiting.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lane(key: &str) -> LaneId {
        LaneId {
            subscription: "s".into(),
            key: key.into(),
        }
    }

    #[test]
    fn one_at_a_time_in_sequence_order_once_open() {
        let lanes = Lanes::default();
        let a = lane("a");
        lanes.enqueue(&a, 20, "second");
        lanes.enqueue(&a, 10, "first");
        assert_eq!(lanes.next(&a), None, "closed until every pending job is in");
        lanes.open();
        assert_eq!(lanes.next(&a), Some((10, "first".into())));
        assert_eq!(lanes.next(&a), None, "the head is running");
        lanes.finished(&a, 10, Some(JobStatus::Delivered), OnDead::Continue);
        assert_eq!(lanes.next(&a), Some((20, "second".into())));
        lanes.finished(&a, 20, Some(JobStatus::Dead), OnDead::Continue);
        assert_eq!(lanes.waiting(), 0);
        assert!(lanes.inner().lanes.is_empty(), "empty lanes are forgotten");
    }

    #[test]
    fn a_dead_head_holds_its_lane_until_re_sent() {
        let lanes = Lanes::default();
        lanes.open();
        let (a, b) = (lane("a"), lane("b"));
        lanes.enqueue(&a, 1, "a1");
        lanes.enqueue(&a, 2, "a2");
        lanes.enqueue(&b, 3, "b1");
        assert_eq!(lanes.next(&a), Some((1, "a1".into())));
        lanes.finished(&a, 1, Some(JobStatus::Dead), OnDead::Hold);
        assert_eq!(lanes.next(&a), None, "held");
        assert_eq!(lanes.next(&b), Some((3, "b1".into())), "other keys flow");
        // Re-sent: released and back at its place, before a2.
        lanes.release(&a, 1);
        lanes.enqueue(&a, 1, "a1");
        assert_eq!(lanes.next(&a), Some((1, "a1".into())));
        lanes.finished(&a, 1, Some(JobStatus::Delivered), OnDead::Hold);
        assert_eq!(lanes.next(&a), Some((2, "a2".into())));
    }
}
