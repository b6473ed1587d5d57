//! Retention: removes finished work older than its period (`[retention]`)
//! in the background, and counts what is stored for `/metrics`.
//!
//! A pass walks the store's index by time from the oldest record, one
//! bounded batch per blocking call, pausing between batches so ingest and
//! delivery keep the disk; its cost follows what it removes, not what is
//! stored. Periods are read on the node's clock, so tests move time by hand.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use crate::clock::Clock;
use crate::config::RetentionConfig;
use crate::metrics::METRICS;
use crate::store::{Expiring, Store};

/// Between two batches of one pass: the disk is shared with ingest.
const PAUSE_BETWEEN_BATCHES: Duration = Duration::from_millis(20);

pub struct Retention {
    store: Arc<dyn Store>,
    config: RetentionConfig,
    clock: Arc<dyn Clock>,
}

impl Retention {
    pub fn new(store: Arc<dyn Store>, config: RetentionConfig, clock: Arc<dyn Clock>) -> Retention {
        Retention {
            store,
            config,
            clock,
        }
    }

    /// Runs until dropped: indexes a store made before retention existed,
    /// then a pass every `retention.every` (the first at once) and a count
    /// every `retention.count_every`. A count reads sled's running totals,
    /// at once when they are known; after a stop that was not clean (and
    /// on PostgreSQL, which counts rows) the first waits one period: it
    /// scans every index key once, holding off the store's writes
    /// meanwhile, and at start, on a store with millions of records, that
    /// held up the first deliveries and doubled the memory (BENCHMARKS.md,
    /// "History").
    pub async fn run(self) {
        if self.config.enabled {
            let store = self.store.clone();
            match tokio::task::spawn_blocking(move || store.index_for_retention()).await {
                Ok(Ok(n)) if n > 0 => {
                    tracing::info!(records = n, "older records put under retention")
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "cannot index older records for retention; retried at next start")
                }
                _ => {}
            }
        }
        let mut passes = tokio::time::interval(self.config.every);
        passes.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let first_count = if self.store.stats_are_cheap() {
            tokio::time::Instant::now()
        } else {
            tokio::time::Instant::now() + self.config.count_every
        };
        let mut counts = tokio::time::interval_at(first_count, self.config.count_every);
        counts.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = passes.tick(), if self.config.enabled => {
                    self.pass().await;
                }
                _ = counts.tick() => self.count().await,
            }
        }
    }

    /// Removes, of each kind, everything older than its period; returns how
    /// many records it removed.
    pub async fn pass(&self) -> usize {
        let mut total = 0;
        for (slot, what) in Expiring::ALL.into_iter().enumerate() {
            let period = self.config.period(what).as_millis() as u64;
            let before = self.clock.now_ms().saturating_sub(period);
            loop {
                let (store, batch) = (self.store.clone(), self.config.batch);
                let done = match tokio::task::spawn_blocking(move || {
                    store.expire(what, before, batch)
                })
                .await
                {
                    Ok(Ok(done)) => done,
                    Ok(Err(e)) => {
                        tracing::warn!(kind = what.name(), error = %e, "retention pass failed; retried at the next");
                        break;
                    }
                    Err(_) => break,
                };
                METRICS.retention_removed[slot].fetch_add(done.removed as u64, Relaxed);
                total += done.removed;
                if !done.more {
                    break;
                }
                tokio::time::sleep(PAUSE_BETWEEN_BATCHES).await;
            }
        }
        if total > 0 {
            tracing::info!(removed = total, "retention removed old records");
        }
        total
    }

    async fn count(&self) {
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || store.stats()).await {
            Ok(Ok(stats)) => {
                let values = [
                    stats.events,
                    stats.deliveries,
                    stats.pending,
                    stats.dead_letters,
                    stats.bytes,
                ];
                for (gauge, value) in METRICS.stored.iter().zip(values) {
                    gauge.store(value, Relaxed);
                }
                METRICS.stored_counted.store(true, Relaxed);
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot count stored records"),
            Err(_) => {}
        }
    }
}
