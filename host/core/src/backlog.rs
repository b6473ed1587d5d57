//! Ingest keeps pace with delivery: a bound on the work acknowledged but not
//! yet started, so that at saturation an event waits at the door (its
//! `202` comes later) rather than in a queue behind thousands of others.
//!
//! What counts: events queued for the pipeline, and new deliveries that are
//! due and wait for a slot of an endpoint that *keeps pace* — one whose
//! attempts end within [`QUICK_MS`] (a local or nearby receiver, where the
//! CPU is what limits delivery). A slow or stalled endpoint's queue does not
//! count: one customer's slow endpoint must not hold up everyone's ingest.
//! An endpoint is judged by its attempts (a moving average of their
//! durations), unknown ones not counted until an attempt ends; one whose
//! queue made no progress for [`STALL_MS`] stops counting at the next
//! admission that had to wait.
//!
//! Admission waits in arrival order while the count is at the limit, for at
//! most the configured time: a misjudged endpoint costs ingest that delay,
//! never a stop. Retries and deliveries read back from the store (a refill
//! after a restart) do not count: only work this process acknowledged.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::metrics::METRICS;

/// An endpoint whose attempts take at most this long on average keeps pace:
/// its waiting deliveries count.
pub const QUICK_MS: f64 = 20.0;

/// A counted endpoint with deliveries waiting and none of its attempts
/// ending for this long has stalled: its queue stops counting.
pub const STALL_MS: u64 = 100;

/// Weight of the newest attempt in an endpoint's moving average.
const NEWEST_WEIGHT: f64 = 0.2;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The node's count of acknowledged work not yet started, and the door
/// ingest waits at.
pub struct Backlog {
    /// At this count ingest waits; 0: never.
    limit: usize,
    max_wait: Duration,
    count: AtomicUsize,
    /// Admissions waiting, first come first served.
    waiters: Mutex<VecDeque<oneshot::Sender<()>>>,
    /// Every endpoint's load, to look for stalled ones.
    loads: Mutex<Vec<Weak<EndpointLoad>>>,
    epoch: Instant,
}

impl Backlog {
    /// `limit` 0 turns the door off (counting goes on, for `/metrics`).
    pub fn new(limit: usize, max_wait: Duration) -> Arc<Backlog> {
        Backlog::since(Instant::now(), limit, max_wait)
    }

    fn since(epoch: Instant, limit: usize, max_wait: Duration) -> Arc<Backlog> {
        Arc::new(Backlog {
            limit,
            max_wait,
            count: AtomicUsize::new(0),
            waiters: Mutex::new(VecDeque::new()),
            loads: Mutex::new(Vec::new()),
            epoch,
        })
    }

    /// Acknowledged work not yet started, as counted now.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    pub fn add(&self, n: usize) {
        if n > 0 {
            self.count.fetch_add(n, Ordering::SeqCst);
        }
    }

    pub fn remove(&self, n: usize) {
        if n == 0 {
            return;
        }
        let before = self
            .count
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| {
                Some(c.saturating_sub(n))
            })
            .unwrap_or(0);
        let now = before.saturating_sub(n);
        if self.limit > 0 && now < self.limit {
            self.open_for(self.limit - now);
        }
    }

    /// Lets up to `room` waiting admissions in, oldest first.
    fn open_for(&self, room: usize) {
        let mut waiters = lock(&self.waiters);
        let mut let_in = 0;
        while let_in < room {
            let Some(waiter) = waiters.pop_front() else {
                break;
            };
            // A waiter that gave up (its wait ran out) takes no room.
            if waiter.send(()).is_ok() {
                let_in += 1;
            }
        }
    }

    /// Waits, in arrival order, until the count is below the limit or the
    /// longest wait has passed.
    pub async fn admit(&self) {
        if self.limit == 0 {
            return;
        }
        let receiver = {
            let mut waiters = lock(&self.waiters);
            if waiters.is_empty() && self.count() < self.limit {
                return;
            }
            let (sender, receiver) = oneshot::channel();
            waiters.push_back(sender);
            receiver
        };
        // The room may have come between the count and the queueing.
        let count = self.count();
        if count < self.limit {
            self.open_for(self.limit - count);
        }
        if tokio::time::timeout(self.max_wait, receiver).await.is_ok() {
            METRICS.ingest_backlog_waits.fetch_add(1, Ordering::Relaxed);
        } else {
            METRICS
                .ingest_backlog_waits_out
                .fetch_add(1, Ordering::Relaxed);
            self.uncount_stalled();
        }
    }

    /// Stops counting the queues of endpoints that made no progress for
    /// [`STALL_MS`].
    fn uncount_stalled(&self) {
        let now = self.now_ms();
        let loads: Vec<Arc<EndpointLoad>> = {
            let mut loads = lock(&self.loads);
            loads.retain(|l| l.strong_count() > 0);
            loads.iter().filter_map(Weak::upgrade).collect()
        };
        for load in loads {
            load.uncount_if_stalled(now);
        }
    }

    /// A new endpoint's load (a subscription's, per version).
    pub fn endpoint(self: &Arc<Self>) -> Arc<EndpointLoad> {
        let load = Arc::new(EndpointLoad {
            backlog: self.clone(),
            state: Mutex::new(LoadState::default()),
        });
        lock(&self.loads).push(Arc::downgrade(&load));
        load
    }
}

#[derive(Default)]
struct LoadState {
    /// New deliveries due and waiting for a slot.
    waiting: usize,
    /// Whether they count: the endpoint keeps pace.
    counted: bool,
    /// Moving average of attempt durations; `None` before the first.
    average_ms: Option<f64>,
    /// When an attempt last ended, or the queue last began (ms since
    /// the backlog's start).
    progress_ms: u64,
}

/// One endpoint's new deliveries waiting for a slot, and how fast its
/// attempts end.
pub struct EndpointLoad {
    backlog: Arc<Backlog>,
    state: Mutex<LoadState>,
}

impl EndpointLoad {
    /// A new delivery due now waits for a slot until the guard drops.
    pub fn waits(self: &Arc<Self>) -> SlotWait {
        let mut s = lock(&self.state);
        if s.waiting == 0 {
            s.progress_ms = self.backlog.now_ms();
        }
        s.waiting += 1;
        if s.counted {
            self.backlog.add(1);
        }
        SlotWait { load: self.clone() }
    }

    fn leave(&self) {
        let mut s = lock(&self.state);
        s.waiting = s.waiting.saturating_sub(1);
        let counted = s.counted;
        drop(s);
        if counted {
            self.backlog.remove(1);
        }
    }

    /// An attempt ended after `duration_ms`.
    pub fn attempt_ended(&self, duration_ms: f64) {
        let mut s = lock(&self.state);
        let average = match s.average_ms {
            Some(a) => a + NEWEST_WEIGHT * (duration_ms - a),
            None => duration_ms,
        };
        s.average_ms = Some(average);
        s.progress_ms = self.backlog.now_ms();
        self.set_counted(&mut s, average <= QUICK_MS);
    }

    fn uncount_if_stalled(&self, now_ms: u64) {
        let mut s = lock(&self.state);
        let stalled_for = now_ms.saturating_sub(s.progress_ms);
        if s.counted && s.waiting > 0 && stalled_for >= STALL_MS {
            // Judged slow until its attempts say otherwise.
            s.average_ms = Some(s.average_ms.unwrap_or(0.0).max(stalled_for as f64));
            self.set_counted(&mut s, false);
        }
    }

    fn set_counted(&self, s: &mut LoadState, counted: bool) {
        if s.counted == counted {
            return;
        }
        s.counted = counted;
        if counted {
            self.backlog.add(s.waiting);
        } else {
            self.backlog.remove(s.waiting);
        }
    }
}

/// A new delivery waiting for its endpoint's slot.
pub struct SlotWait {
    load: Arc<EndpointLoad>,
}

impl Drop for SlotWait {
    fn drop(&mut self) {
        self.load.leave();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_counts_once_its_attempts_show_it_keeps_pace() {
        let backlog = Backlog::new(10, Duration::from_millis(50));
        let load = backlog.endpoint();
        let waits: Vec<SlotWait> = (0..3).map(|_| load.waits()).collect();
        assert_eq!(backlog.count(), 0, "unknown endpoints do not count");
        load.attempt_ended(2.0);
        assert_eq!(backlog.count(), 3);
        drop(waits);
        assert_eq!(backlog.count(), 0);
    }

    #[test]
    fn a_slow_endpoint_stops_counting() {
        let backlog = Backlog::new(10, Duration::from_millis(50));
        let load = backlog.endpoint();
        load.attempt_ended(1.0);
        let _waits: Vec<SlotWait> = (0..4).map(|_| load.waits()).collect();
        assert_eq!(backlog.count(), 4);
        // One very slow attempt moves the average past the bound.
        load.attempt_ended(1_000.0);
        assert!(!lock(&load.state).counted);
        assert_eq!(backlog.count(), 0);
        // Quick again for long enough: counted again.
        for _ in 0..40 {
            load.attempt_ended(1.0);
        }
        assert!(lock(&load.state).counted);
        assert_eq!(backlog.count(), 4);
    }

    #[test]
    fn pipeline_work_counts_until_removed() {
        let backlog = Backlog::new(10, Duration::from_millis(50));
        backlog.add(7);
        backlog.remove(3);
        assert_eq!(backlog.count(), 4);
        backlog.remove(10);
        assert_eq!(backlog.count(), 0, "never below zero");
    }

    #[tokio::test]
    async fn admission_waits_for_room_in_arrival_order() {
        let backlog = Backlog::new(2, Duration::from_secs(3600));
        backlog.add(2);
        let (first, second) = (backlog.clone(), backlog.clone());
        let (done_tx, mut done) = tokio::sync::mpsc::unbounded_channel();
        let tx = done_tx.clone();
        tokio::spawn(async move {
            first.admit().await;
            let _ = tx.send(1);
        });
        // The first is queued before the second starts.
        while lock(&backlog.waiters).is_empty() {
            tokio::task::yield_now().await;
        }
        tokio::spawn(async move {
            second.admit().await;
            let _ = done_tx.send(2);
        });
        while lock(&backlog.waiters).len() < 2 {
            tokio::task::yield_now().await;
        }
        assert!(done.try_recv().is_err(), "both wait at the limit");
        backlog.remove(1);
        assert_eq!(done.recv().await, Some(1));
        backlog.remove(1);
        assert_eq!(done.recv().await, Some(2));
    }

    #[tokio::test]
    async fn admission_waits_at_most_the_longest_wait_and_then_drops_a_stalled_queue() {
        // Its clock began a second ago, and the endpoint's queue has not
        // moved since then.
        let epoch = Instant::now()
            .checked_sub(Duration::from_secs(1))
            .expect("a second since boot");
        let backlog = Backlog::since(epoch, 2, Duration::from_millis(1));
        let load = backlog.endpoint();
        load.attempt_ended(1.0);
        let _waits: Vec<SlotWait> = (0..5).map(|_| load.waits()).collect();
        assert_eq!(backlog.count(), 5);
        lock(&load.state).progress_ms = 0;
        backlog.admit().await; // nothing lets it in: its wait runs out
        assert!(
            !lock(&load.state).counted,
            "a stalled endpoint stops counting"
        );
        assert_eq!(backlog.count(), 0);
        backlog.admit().await; // and the door is open again
        assert!(lock(&backlog.waiters).iter().all(|w| w.is_closed()));
    }

    #[tokio::test]
    async fn an_open_door_never_waits() {
        let backlog = Backlog::new(0, Duration::ZERO);
        backlog.add(1_000_000);
        backlog.admit().await;
    }
}
