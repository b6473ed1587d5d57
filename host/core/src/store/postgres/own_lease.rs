//! This node's own lease as this process sees it. Other nodes free the
//! deliveries of a node whose lease ran out (by the database's clock) and
//! take them; a node must not start attempts of deliveries it may no
//! longer hold. A renewal's database time is later than the moment it was
//! sent, so "sent less than a lease ago and succeeded" by this process's
//! monotonic clock means the lease surely still runs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

const NEVER: u64 = u64::MAX;

pub(super) struct OwnLease {
    origin: Instant,
    /// When the last successful renewal was sent (ms since `origin`).
    renewed_at_ms: AtomicU64,
    /// Renewals that found the lease had already run out.
    lapses: AtomicU64,
}

impl OwnLease {
    pub(super) fn new() -> OwnLease {
        OwnLease {
            origin: Instant::now(),
            renewed_at_ms: AtomicU64::new(NEVER),
            lapses: AtomicU64::new(0),
        }
    }

    /// Now, on the clock renewals are timed by.
    pub(super) fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    /// A renewal sent at `sent_ms` succeeded; `had_run_out`: the lease it
    /// renewed had ended before it. Returns whether that is a lapse: not
    /// on this process's first renewal (an earlier process of this name
    /// left its lease behind; this one held nothing under it).
    pub(super) fn renewed(&self, sent_ms: u64, had_run_out: bool) -> bool {
        // The latest sent wins: a slow answer to an earlier one does not
        // move it back.
        let before = self
            .renewed_at_ms
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |at| {
                Some(if at == NEVER {
                    sent_ms
                } else {
                    at.max(sent_ms)
                })
            })
            .unwrap_or(NEVER);
        let lapsed = had_run_out && before != NEVER;
        if lapsed {
            self.lapses.fetch_add(1, Ordering::SeqCst);
        }
        lapsed
    }

    pub(super) fn current_at(&self, now_ms: u64, lease_ms: u64) -> bool {
        let renewed = self.renewed_at_ms.load(Ordering::SeqCst);
        renewed != NEVER && now_ms.saturating_sub(renewed) < lease_ms
    }

    pub(super) fn lapses(&self) -> u64 {
        self.lapses.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_only_within_a_lease_of_the_last_renewal_sent() {
        let lease = OwnLease::new();
        assert!(!lease.current_at(0, 5_000), "never renewed");
        let _ = lease.renewed(1_000, false);
        assert!(lease.current_at(5_999, 5_000));
        assert!(!lease.current_at(6_000, 5_000));
        // A slower renewal answered later but sent earlier does not extend it.
        let _ = lease.renewed(500, false);
        assert!(!lease.current_at(6_000, 5_000));
        let _ = lease.renewed(7_000, false);
        assert!(lease.current_at(6_000, 5_000) && lease.current_at(11_999, 5_000));
    }

    #[test]
    fn a_renewal_that_found_the_lease_run_out_counts_a_lapse() {
        let lease = OwnLease::new();
        assert!(!lease.renewed(10, true), "a first renewal is no lapse");
        assert_eq!(lease.lapses(), 0);
        assert!(lease.renewed(20, true));
        assert!(!lease.renewed(25, false));
        assert!(lease.renewed(30, true));
        assert_eq!(lease.lapses(), 2);
    }
}
