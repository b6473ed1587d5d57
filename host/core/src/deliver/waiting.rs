//! Jobs waiting a while for their next attempt, held without a task: one
//! map sorted by due time and one timer (the deliverer's), so a hundred
//! thousand retries waiting an hour cost about their ids each instead of a
//! task (~0.9 KB) and a record (~0.6 KB). A job's record is read again
//! from the store when it is due.

use std::collections::BTreeMap;
use std::sync::Mutex;

use tokio::sync::Notify;

/// Waiting jobs by due time (ms on the deliverer's clock); the sequence
/// number keeps jobs due at the same millisecond apart, in arrival order.
pub(super) struct WaitingRoom<T> {
    waiting: Mutex<Waiting<T>>,
    /// Told when a job due earlier than all others comes in.
    pub(super) earlier: Notify,
}

struct Waiting<T> {
    by_due: BTreeMap<(u64, u64), T>,
    last_seq: u64,
}

impl<T> Default for WaitingRoom<T> {
    fn default() -> Self {
        WaitingRoom {
            waiting: Mutex::new(Waiting {
                by_due: BTreeMap::new(),
                last_seq: 0,
            }),
            earlier: Notify::new(),
        }
    }
}

impl<T> WaitingRoom<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Waiting<T>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Lets `waiter` wait until `due_ms`.
    pub(super) fn put(&self, due_ms: u64, waiter: T) {
        let first = {
            let mut waiting = self.lock();
            waiting.last_seq += 1;
            let seq = waiting.last_seq;
            let first = waiting
                .by_due
                .first_key_value()
                .is_none_or(|(&(d, _), _)| due_ms < d);
            waiting.by_due.insert((due_ms, seq), waiter);
            first
        };
        if first {
            // A permit is kept if the timer is not waiting right now.
            self.earlier.notify_one();
        }
    }

    /// When the first waiter is due.
    pub(super) fn next_due(&self) -> Option<u64> {
        self.lock()
            .by_due
            .first_key_value()
            .map(|(&(due, _), _)| due)
    }

    pub(super) fn len(&self) -> usize {
        self.lock().by_due.len()
    }

    /// Takes out every waiter due by `now_ms`, earliest first.
    pub(super) fn take_due(&self, now_ms: u64) -> Vec<T> {
        let mut waiting = self.lock();
        let later = waiting.by_due.split_off(&(now_ms.saturating_add(1), 0));
        std::mem::replace(&mut waiting.by_due, later)
            .into_values()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiters_come_out_when_due_earliest_first_and_in_arrival_order() {
        let room = WaitingRoom::default();
        room.put(300, "c");
        room.put(100, "a");
        room.put(200, "b1");
        room.put(200, "b2");
        assert_eq!(room.next_due(), Some(100));
        assert!(room.take_due(99).is_empty());
        assert_eq!(room.take_due(200), ["a", "b1", "b2"]);
        assert_eq!((room.len(), room.next_due()), (1, Some(300)));
        assert_eq!(room.take_due(u64::MAX), ["c"]);
        assert_eq!(room.next_due(), None);
    }

    /// Whether a notification is there now (without waiting for one).
    async fn told<T>(room: &WaitingRoom<T>) -> bool {
        tokio::select! {
            biased;
            _ = room.earlier.notified() => true,
            _ = std::future::ready(()) => false,
        }
    }

    #[tokio::test]
    async fn the_timer_is_told_only_of_a_waiter_due_before_all_others() {
        let room = WaitingRoom::default();
        room.put(200, ());
        // Kept for the timer even though it was not waiting.
        assert!(told(&room).await);
        room.put(300, ());
        assert!(!told(&room).await, "a later waiter needs no new timer");
        room.put(100, ());
        assert!(told(&room).await);
    }
}
