//! Running totals of what the embedded store holds, kept with its writes,
//! so `/metrics` reads counters instead of scanning keys. A scan pulls every
//! index page into sled's cache: it was the soak's one RSS step
//! (BENCHMARKS.md, "Soak with the default retention").
//!
//! While known, the totals are exact: each write adds what it changed once
//! it is applied. They are saved at a clean close and taken back at open. A
//! store that was not closed cleanly (kill -9, reopened after a failed
//! disk, written by an earlier version) is counted once by a key scan, with
//! counted writes held off meanwhile so the scan and the totals agree.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering::Relaxed};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Records by kind, or a write's change to them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub events: i64,
    pub deliveries: i64,
    pub pending: i64,
    pub dead_letters: i64,
}

impl Counts {
    fn fields(&self) -> [i64; 4] {
        [
            self.events,
            self.deliveries,
            self.pending,
            self.dead_letters,
        ]
    }

    fn from_fields([events, deliveries, pending, dead_letters]: [i64; 4]) -> Counts {
        Counts {
            events,
            deliveries,
            pending,
            dead_letters,
        }
    }

    /// Four big-endian integers.
    pub fn encode(&self) -> Vec<u8> {
        self.fields().iter().flat_map(|n| n.to_be_bytes()).collect()
    }

    pub fn decode(bytes: &[u8]) -> Option<Counts> {
        if bytes.len() != 32 {
            return None;
        }
        let mut fields = [0i64; 4];
        for (field, chunk) in fields.iter_mut().zip(bytes.chunks_exact(8)) {
            *field = i64::from_be_bytes(chunk.try_into().ok()?);
        }
        Some(Counts::from_fields(fields))
    }
}

#[derive(Default)]
pub struct Tally {
    counts: [AtomicI64; 4],
    known: AtomicBool,
    /// Set once the totals were saved: a counted write after that must
    /// drop the saved copy in its batch, or the next open would trust it.
    saved: AtomicBool,
    /// Counted writes hold it shared; saving and recounting exclusively,
    /// so what they read is exactly what the totals say.
    gate: RwLock<()>,
}

impl Tally {
    /// Held by a counted write from before its batch is applied until its
    /// change is added.
    pub fn writing(&self) -> RwLockReadGuard<'_, ()> {
        self.gate.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Held to save or recount: no counted write is under way meanwhile.
    pub fn exclusive(&self) -> RwLockWriteGuard<'_, ()> {
        self.gate.write().unwrap_or_else(|p| p.into_inner())
    }

    pub fn add(&self, change: Counts) {
        for (total, n) in self.counts.iter().zip(change.fields()) {
            if n != 0 {
                total.fetch_add(n, Relaxed);
            }
        }
    }

    /// The totals, if known.
    pub fn get(&self) -> Option<Counts> {
        self.known
            .load(Relaxed)
            .then(|| Counts::from_fields(self.counts.each_ref().map(|n| n.load(Relaxed))))
    }

    /// Takes `counts` as the totals (under [`Tally::exclusive`] unless no
    /// write can run yet).
    pub fn set(&self, counts: Counts) {
        for (total, n) in self.counts.iter().zip(counts.fields()) {
            total.store(n, Relaxed);
        }
        self.known.store(true, Relaxed);
    }

    /// The totals no longer match the store (writes lost in a reopen).
    pub fn forget(&self) {
        self.known.store(false, Relaxed);
    }

    pub fn mark_saved(&self) {
        self.saved.store(true, Relaxed);
    }

    pub fn saved(&self) -> bool {
        self.saved.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_round_trip_and_refuse_other_lengths() {
        let c = Counts {
            events: 5,
            deliveries: 1 << 40,
            pending: 0,
            dead_letters: 7,
        };
        assert_eq!(Counts::decode(&c.encode()), Some(c));
        assert_eq!(Counts::decode(&c.encode()[..31]), None);
        assert_eq!(Counts::decode(&[]), None);
    }

    #[test]
    fn changes_count_only_once_known() {
        let tally = Tally::default();
        tally.add(Counts {
            events: 3,
            ..Counts::default()
        });
        assert_eq!(tally.get(), None);
        tally.set(Counts {
            events: 10,
            pending: 2,
            ..Counts::default()
        });
        tally.add(Counts {
            events: 1,
            pending: -1,
            ..Counts::default()
        });
        let now = tally.get().unwrap();
        assert_eq!((now.events, now.pending), (11, 1));
        tally.forget();
        assert_eq!(tally.get(), None);
    }
}
