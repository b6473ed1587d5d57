//! Delivery shared by the nodes of a cluster (a store with
//! [`JobLeases`]): each node claims free jobs as it has room, the leader
//! keeps its share of new ones, and a node frees what it holds but has no
//! room for.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{Deliverer, lock};
use crate::model::Job;
use crate::store::{JobLeases, StoreError};

/// Most jobs claimed in one round trip: a burst is shared between the
/// nodes woken by it rather than taken whole by the first.
const CLAIM_CHUNK: usize = 256;

/// How soon a node whose room ran out looks for free jobs again.
const BACKLOG_CLAIM: Duration = Duration::from_millis(100);

/// How often an attempt waiting on an overdue lease renewal looks again.
const LEASE_RECHECK: Duration = Duration::from_millis(50);

impl Deliverer {
    /// Takes a job the pipeline or a window just stored. Shared delivery
    /// leaves an unordered one to whichever node claims it first (the
    /// store told them all) unless it was written as this node's share;
    /// this node holds the ordered ones.
    pub fn take_new(self: &Arc<Self>, job: Job) {
        if let Some(leases) = &self.leases
            && job.order.is_none()
            && !leases.kept(&job.id)
        {
            return;
        }
        self.submit_as(job, true);
    }

    /// Whether jobs are claimed from a store other nodes deliver from too.
    pub fn shares(&self) -> bool {
        self.leases.is_some()
    }

    /// On a shared store: claims free jobs (as this node has room for
    /// them) whenever the store says some became free, and every `poll`
    /// frees the jobs of nodes whose lease ran out and reads the
    /// subscriptions again (the leader may have changed them).
    pub fn share(self: &Arc<Self>, poll: Duration) {
        let Some(leases) = self.leases.clone() else {
            return;
        };
        let this = self.clone();
        let claimable = leases.claimable();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(poll);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut failing = false;
            // Free jobs were left for want of room: look again as tasks end.
            let mut backlog = false;
            loop {
                let polled = tokio::select! {
                    _ = this.stop.cancelled() => return,
                    () = claimable.notified() => false,
                    () = this.claim_now.notified() => false,
                    _ = ticker.tick() => true,
                    _ = tokio::time::sleep(BACKLOG_CLAIM), if backlog => false,
                };
                let (me, leases) = (this.clone(), leases.clone());
                let claimed =
                    tokio::task::spawn_blocking(move || me.claim_round(&*leases, polled)).await;
                match claimed {
                    Ok(Ok((jobs, want))) => {
                        if std::mem::take(&mut failing) {
                            tracing::info!("claiming deliveries again");
                        }
                        let full = jobs.len() == want;
                        this.submit_all(jobs);
                        backlog = full && want < CLAIM_CHUNK;
                        if full && want == CLAIM_CHUNK {
                            // More may wait: another round at once.
                            claimable.notify_one();
                        }
                    }
                    Ok(Err(e)) => {
                        if !failing {
                            tracing::warn!(error = %e, "cannot claim deliveries; retried");
                        }
                        failing = true;
                        // A claim may have committed without its answer.
                        this.resync.store(true, Ordering::SeqCst);
                    }
                    Err(_) => return,
                }
            }
        });
    }

    /// One round of the claim loop, on a blocking thread: frees what this
    /// node had no room for; on a `poll`, reads the subscriptions again and
    /// frees the jobs of nodes whose lease ran out; then claims up to its
    /// room (at most [`CLAIM_CHUNK`]). Returns the claimed jobs and how
    /// many it asked for.
    fn claim_round(
        &self,
        leases: &dyn JobLeases,
        polled: bool,
    ) -> Result<(Vec<Job>, usize), StoreError> {
        let unheld = std::mem::take(&mut *self.no_room.lock().unwrap_or_else(|p| p.into_inner()));
        if !unheld.is_empty()
            && let Err(e) = leases.release(&unheld)
        {
            self.no_room
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(unheld);
            return Err(e);
        }
        if polled && self.resync.swap(false, Ordering::SeqCst) {
            self.resync_holds(leases).inspect_err(|_| {
                self.resync.store(true, Ordering::SeqCst);
            })?;
        }
        if polled {
            self.subscriptions.reload()?;
            let freed = leases.free_expired()?;
            if freed > 0 {
                tracing::info!(
                    jobs = freed,
                    "deliveries of a node gone silent are free again"
                );
            }
        }
        let room = self.max_live.saturating_sub(lock(&self.live).len());
        // Nothing taken while the lease may have run out: others may free
        // at once what this node would take.
        let current = leases.lease_current();
        leases.keep_new(room > 0 && current);
        let want = room.min(CLAIM_CHUNK);
        if want == 0 || !current {
            return Ok((Vec::new(), want));
        }
        let known: Vec<String> = self
            .subscriptions
            .current()
            .iter()
            .map(|s| s.id.clone())
            .collect();
        let lapses = leases.lapses();
        let claimed = leases.claim(want, &known)?;
        if leases.lapses() != lapses {
            // Found run out meanwhile: these may be another node's already.
            self.no_room
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(claimed.into_iter().map(|job| job.id));
            self.claim_now.notify_one();
            return Ok((Vec::new(), want));
        }
        Ok((claimed, want))
    }

    /// Whether a job taken when this node's lease had lapsed `since` times
    /// may still be attempted: not once the lease was found run out since
    /// (other nodes may have freed and taken it). While the last renewal is
    /// older than a lease, waits for the next one.
    pub(super) async fn still_held(&self, since: u64) -> bool {
        let Some(leases) = &self.leases else {
            return true;
        };
        loop {
            if leases.lapses() != since {
                return false;
            }
            if leases.lease_current() {
                return true;
            }
            tokio::select! {
                _ = self.stop.cancelled() => return false,
                _ = tokio::time::sleep(LEASE_RECHECK) => {}
            }
        }
    }

    /// Frees the jobs the store says this node holds but it has not in
    /// memory (a claim that committed though its answer was lost): nobody
    /// would deliver them while this node lives.
    fn resync_holds(&self, leases: &dyn JobLeases) -> Result<(), StoreError> {
        let held = leases.held()?;
        let unknown: Vec<String> = {
            let live = lock(&self.live);
            held.into_iter().filter(|id| !live.contains(id)).collect()
        };
        if !unknown.is_empty() {
            let freed = leases.release(&unknown)?;
            tracing::info!(
                jobs = freed,
                "deliveries held in the store but not in memory are free again"
            );
        }
        Ok(())
    }

    /// Frees a job this node holds but has no room for (the claim loop
    /// does it, retried until the store takes it).
    pub(super) fn free_for_others(&self, job_id: String) {
        self.no_room
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(job_id);
        self.claim_now.notify_one();
    }
}
