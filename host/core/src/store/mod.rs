//! The storage seams: the few traits a backend implements so that the
//! embedded default ([`sled::SledStore`]) and a shared database are two
//! implementations of the same thing. No backend type appears outside its
//! own module; the rest of the core holds an `Arc<dyn Store>`.
//!
//! Events reach the store from the pipeline worker, in the same batch as
//! their outcome; until then the intake (`crate::intake`) holds them durably.
//! Writes here need not be flushed one by one: a lost tail of job updates
//! means a re-sent delivery (at-least-once), never a lost event. What must
//! be atomic is said per method below.

pub mod postgres;
pub mod sled;
mod tally;

use crate::model::{
    EndpointHealth, Job, JobStatus, OutageState, Processed, Remembered, StoredEvent, Subscription,
    WindowMember,
};

#[derive(Debug, Clone, thiserror::Error)]
#[error("storage: {0}")]
pub struct StoreError(pub String);

/// Where a read of pending jobs ([`DeliveryQueue::pending_jobs_from`])
/// goes on: a position of the backend's own (the default: the first).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueuePosition(Vec<u8>);

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        StoreError(format!("corrupt record: {e}"))
    }
}

/// Accepted events with their pipeline outcome.
pub trait EventStore {
    /// Atomically stores every event given with its jobs, window members and
    /// location state (all or nothing: the intake re-runs a batch that did
    /// not land, so a partial one would deliver twice or lose a window
    /// member). Later entries win where two touch the same state.
    fn complete_pipeline(&self, processed: &[Processed]) -> Result<(), StoreError>;
    fn event(&self, id: &str) -> Result<Option<StoredEvent>, StoreError>;
    /// Whether an event with this id was accepted (without reading it).
    fn has_event(&self, id: &str) -> Result<bool, StoreError>;
}

/// Delivery jobs: due jobs, attempts, reschedules, dead letters. A job's
/// status and its queue markers change together (one write per job); a job
/// update lost in a crash is redone by delivering again (at-least-once).
pub trait DeliveryQueue {
    /// Stores a job's new state, moving its markers to match its status.
    fn update_job(&self, job: &Job) -> Result<(), StoreError> {
        self.update_jobs(std::slice::from_ref(job))
    }
    /// [`DeliveryQueue::update_job`] for many, in one atomic batch; where a
    /// job appears twice the later state wins.
    fn update_jobs(&self, jobs: &[Job]) -> Result<(), StoreError>;
    fn job(&self, id: &str) -> Result<Option<Job>, StoreError>;
    /// The records of `ids` (`None` where there is none), in their order.
    fn jobs_by_id(&self, ids: &[String]) -> Result<Vec<Option<Job>>, StoreError> {
        ids.iter().map(|id| self.job(id)).collect()
    }
    /// Jobs still to deliver.
    fn pending_jobs(&self) -> Result<Vec<Job>, StoreError>;
    /// Up to `max` jobs still to deliver, oldest first from `from` on,
    /// whose ids `skip` does not name and that `wanted` accepts; and, if it
    /// stopped at `max`, where the next read goes on (`None`: it reached the
    /// last). Reading on from there, rather than from the first again, does
    /// not re-read what a deep queue holds in front (jobs in memory, or
    /// delivered ones whose sled queue entries the sweep has not reached).
    fn pending_jobs_from(
        &self,
        from: &QueuePosition,
        max: usize,
        skip: &dyn Fn(&str) -> bool,
        wanted: &dyn Fn(&Job) -> bool,
    ) -> Result<(Vec<Job>, Option<QueuePosition>), StoreError>;
    /// How many jobs are still to deliver.
    fn pending_count(&self) -> Result<usize, StoreError>;
    fn dead_letters(&self) -> Result<Vec<Job>, StoreError>;
    /// Every job (tests and small stores; listings use [`DeliveryQueue::list_jobs`]).
    fn jobs(&self) -> Result<Vec<Job>, StoreError>;
    /// One page of jobs, newest created first, by an index on creation time
    /// (per subscription too), so a page costs what it examines, not what
    /// is stored. Jobs enter the index where they are made
    /// ([`EventStore::complete_pipeline`], [`WindowStore::close_windows`]);
    /// state updates leave it alone.
    fn list_jobs(&self, query: &JobQuery<'_>) -> Result<JobPage, StoreError>;
    /// Puts jobs stored before the listing index existed into it; returns
    /// how many (0 once done).
    fn index_for_listing(&self) -> Result<usize, StoreError>;
}

/// What [`DeliveryQueue::list_jobs`] looks for.
pub struct JobQuery<'a> {
    pub subscription: Option<&'a str>,
    /// Created at or after.
    pub since_ms: Option<u64>,
    /// Created before.
    pub until_ms: Option<u64>,
    /// Continue after this cursor (a previous page's `next`).
    pub after: Option<&'a str>,
    pub limit: usize,
    /// Filters beyond subscription and time (status, type); `None`: all.
    pub wanted: Option<&'a (dyn Fn(&Job) -> bool + Sync)>,
    /// Index entries examined at most; past it the page ends early and
    /// `total_exact` is false.
    pub max_examined: usize,
}

/// A page of jobs and what the scan saw.
#[derive(Debug, Default)]
pub struct JobPage {
    pub jobs: Vec<Job>,
    /// Where the next page starts, when there may be more.
    pub next: Option<String>,
    /// Matching jobs counted (all of them when `total_exact`).
    pub total: usize,
    pub total_exact: bool,
}

/// Aggregation windows and outage timers. Closing is one atomic write that
/// removes the closed members, adds their merged jobs and advances
/// `closed_through`: a window is closed once, and a crash before the write
/// closes it again from the same members (same job ids).
pub trait WindowStore {
    /// Members of windows ending at or before `up_to_ms`, whole groups in
    /// order, stopping after the group that reaches `max_members`.
    fn due_window_members(
        &self,
        up_to_ms: u64,
        max_members: usize,
    ) -> Result<Vec<WindowMember>, StoreError>;
    /// Atomically replaces closed windows' members by their jobs and
    /// records that windows are closed through `closed_through_ms`.
    fn close_windows(
        &self,
        members: &[WindowMember],
        jobs: &[Job],
        closed_through_ms: u64,
    ) -> Result<(), StoreError>;
    /// Closes due windows in one step: reads the members of windows ending
    /// at or before `up_to_ms` ([`WindowStore::due_window_members`]), turns
    /// them into jobs with `merge`, and stores those in their place
    /// ([`WindowStore::close_windows`]). A shared store does it in one
    /// transaction that locks `closed_through` before the read, so that no
    /// other node can place a member in a window between its read and its
    /// close; this default, for a store with one writer, does not need to.
    fn close_due_windows(
        &self,
        up_to_ms: u64,
        max_members: usize,
        merge: &(dyn Fn(&[WindowMember]) -> Vec<Job> + Sync),
    ) -> Result<ClosedWindows, StoreError> {
        let members = self.due_window_members(up_to_ms, max_members)?;
        if members.is_empty() {
            return Ok(ClosedWindows::default());
        }
        let jobs = merge(&members);
        self.close_windows(&members, &jobs, up_to_ms)?;
        Ok(ClosedWindows {
            members: members.len(),
            jobs,
        })
    }
    /// Events waiting in windows (a key scan: for start-up, not per request).
    fn window_member_count(&self) -> Result<usize, StoreError>;
    /// The time up to which windows were closed (0 if never).
    fn closed_through(&self) -> Result<u64, StoreError>;
    fn outage(&self, location: &str) -> Result<Option<OutageState>, StoreError>;
    /// Locations whose outage timer ends at or before `up_to_ms`.
    fn due_outages(&self, up_to_ms: u64) -> Result<Vec<OutageState>, StoreError>;
}

/// Subscriptions made over the management API (each write durable on return).
pub trait SubscriptionStore {
    fn stored_subscriptions(&self) -> Result<Vec<Subscription>, StoreError>;
    fn put_subscription(&self, sub: &Subscription) -> Result<(), StoreError>;
    fn delete_subscription(&self, id: &str) -> Result<(), StoreError>;
    /// Every endpoint's health record, by subscription id.
    fn endpoint_health(&self) -> Result<Vec<(String, EndpointHealth)>, StoreError>;
    /// Durable on return (a disabled endpoint stays disabled after a crash).
    fn put_endpoint_health(&self, id: &str, health: &EndpointHealth) -> Result<(), StoreError>;
    /// Paused jobs of a subscription (to send once it is enabled again).
    fn paused_jobs(&self, subscription_id: &str) -> Result<Vec<Job>, StoreError>;
}

/// Answers given to `Idempotency-Key`s. The intake keeps an answer durable
/// itself until [`IdempotencyStore::remember`] has it, so a lost write here
/// is redone at the next start.
pub trait IdempotencyStore {
    /// Records the answer given to an `Idempotency-Key`.
    fn remember(&self, answer: &Remembered) -> Result<(), StoreError>;
    /// The answer remembered for an `Idempotency-Key`.
    fn remembered(&self, key: &str) -> Result<Option<Remembered>, StoreError>;
    /// Forgets answers given before `before_ms`; returns how many.
    fn forget_answers(&self, before_ms: u64) -> Result<usize, StoreError>;
}

/// What retention removes, each kind after its own period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiring {
    /// Delivered and filtered deliveries with their attempts, by the time
    /// they settled ([`Job::settled_at_ms`]).
    Delivered,
    /// Dead and plugin-error deliveries (the dead letters), likewise.
    DeadLetters,
    /// Accepted events, by the time they were received.
    Events,
}

impl Expiring {
    pub const ALL: [Expiring; 3] = [Expiring::Delivered, Expiring::DeadLetters, Expiring::Events];

    /// Which retention period a job in `status` is under; `None`: kept
    /// (pending, paused: still to send).
    pub fn of(status: JobStatus) -> Option<Expiring> {
        match status {
            JobStatus::Delivered | JobStatus::Filtered => Some(Expiring::Delivered),
            JobStatus::Dead | JobStatus::PluginError => Some(Expiring::DeadLetters),
            JobStatus::Pending | JobStatus::Paused => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Expiring::Delivered => "delivered",
            Expiring::DeadLetters => "dead_letters",
            Expiring::Events => "events",
        }
    }
}

/// What one [`RetentionStore::expire`] call did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Expired {
    /// Records removed.
    pub removed: usize,
    /// Whether older records may remain (the call stopped at its batch size).
    pub more: bool,
}

/// The pipeline's backlog on a shared store ([`EventInbox::backlog`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Backlog {
    pub events: usize,
    pub oldest_received_ms: Option<u64>,
}

/// What [`WindowStore::close_due_windows`] closed.
#[derive(Debug, Default)]
pub struct ClosedWindows {
    /// Members read and removed (0: nothing was due).
    pub members: usize,
    /// Their merged jobs, stored.
    pub jobs: Vec<Job>,
}

/// What [`EventInbox::complete_own`] did with a standby's batch.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct OwnCompleted {
    /// Ids of the events whose outcomes it stored.
    pub stored: std::collections::HashSet<String>,
    /// How many of the events to hand over were still this node's and
    /// now are the leader's (not those the leader had taken already).
    pub handed: u64,
    /// Outcomes not stored because a member's window had closed meanwhile;
    /// handed to the leader like `handed`, and counted there.
    pub late_for_window: usize,
    /// Where windows were closed through when the batch held window
    /// members (read under the lock that orders it with closing).
    pub closed_through_ms: Option<u64>,
}

/// Counts and size of what is stored, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub events: u64,
    /// Deliveries of every status (with their attempts).
    pub deliveries: u64,
    pub pending: u64,
    pub dead_letters: u64,
    /// Bytes the store takes on disk.
    pub bytes: u64,
}

/// Removing old records, oldest first, in bounded batches (a backend keeps
/// an index by time, so a batch costs what it removes, not what is stored).
pub trait RetentionStore {
    /// Removes up to `max` records of `what` that settled (jobs) or arrived
    /// (events) before `before_ms`. A job whose status changed since (a
    /// re-sent dead letter) is left alone.
    fn expire(&self, what: Expiring, before_ms: u64, max: usize) -> Result<Expired, StoreError>;
    /// Brings records stored before the backend indexed them by time under
    /// retention; returns how many it indexed (0 once done).
    fn index_for_retention(&self) -> Result<usize, StoreError>;
    /// Counts and size for a periodic gauge, not per request (sled keeps
    /// running totals; PostgreSQL counts rows).
    fn stats(&self) -> Result<StoreStats, StoreError>;
    /// Whether [`RetentionStore::stats`] costs next to nothing now (sled's
    /// totals are known), so it may run at once at start.
    fn stats_are_cheap(&self) -> bool {
        false
    }
}

/// A store that is its own intake queue (a shared database): an accepted
/// event is a stored row before its `202`, marked as still to run through
/// the pipeline until [`EventStore::complete_pipeline`] stores its outcome
/// (which clears the mark in the same write). The store then decides
/// whether an id is new, for every node that shares it.
pub trait EventInbox: Send + Sync {
    /// In one durable write: every event whose id the store never had, and
    /// the `Idempotency-Key` answers (a key already answered keeps its first
    /// answer). The new events are marked as taken by this node's pipeline:
    /// a leader's with its epoch (see [`ClusterStore`]), a standby's with
    /// its name (stored with [`EventInbox::complete_own`]).
    fn admit(&self, events: &[StoredEvent], answers: &[Remembered])
    -> Result<Admitted, StoreError>;
    /// Up to `max` admitted events whose outcome is not stored and which no
    /// pipeline took under the current lead (admitted by another node, or
    /// left by an earlier leader), oldest first, now marked as taken by
    /// this node's. Fenced like the pipeline's writes.
    fn take_unfinished(&self, max: usize) -> Result<Vec<StoredEvent>, StoreError>;
    /// Admitted events whose outcome is not stored: how many, and when
    /// the oldest arrived, in one read.
    fn backlog(&self) -> Result<Backlog, StoreError>;
    /// A standby's pipeline outcomes of events it admitted, and the ids of
    /// those it leaves to the leader, in one transaction: stores the
    /// outcomes of the events still this node's (marked with its name, or
    /// with its epoch if it took the lead since; no leader's sweep took
    /// them, as it does once this node's lease ran out) and says which; the
    /// `handed` ones still this node's become the leader's sweep's. Outcomes
    /// given here must touch no outage or ordering state. Window members
    /// are stored only into windows not closed yet (checked under a lock
    /// that [`WindowStore::close_due_windows`] takes too); an outcome with
    /// a member in a closed window is handed over instead.
    fn complete_own(
        &self,
        processed: &[Processed],
        handed: &[&str],
    ) -> Result<OwnCompleted, StoreError>;
}

/// What [`EventInbox::admit`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admitted {
    /// Per event, whether it was new (of two with the same id, the first).
    pub new: Vec<bool>,
    /// Whether the new events are this node's to run through its pipeline
    /// (it is a cluster node); otherwise the leader takes them up.
    pub to_pipeline: bool,
}

/// One node of a cluster, as its heartbeat records it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
pub struct NodeRecord {
    pub id: String,
    /// Where its HTTP API is reached (`cluster.advertise`).
    pub address: String,
    pub started_at_ms: u64,
    /// Its last heartbeat.
    pub seen_at_ms: u64,
    /// Whether it leads: runs windows, outage timers and ordered lanes.
    pub leading: bool,
    /// Deliveries it holds (claimed, pending); filled by [`ClusterStore::nodes`].
    pub deliveries_held: u64,
}

/// A store that several nodes share. One node leads at a time; taking the
/// lead raises an epoch that fences the previous leader's pipeline, window
/// and delivery-state writes (they fail once another node leads), so
/// windows close and outages confirm once across the cluster.
pub trait ClusterStore: Send + Sync {
    /// Makes this store node `node`'s: from now on its pipeline and window
    /// writes need the lead, and its delivery states a lease on each job
    /// ([`JobLeases`]), renewed by its heartbeat and lasting `lease_ms`.
    /// Jobs an earlier process of the same name held are freed. Tools that
    /// read or repair a store (tests, `hookhost migrate`) do not join.
    fn join(&self, node: &str, lease_ms: u64) -> Result<(), StoreError>;
    /// Takes the lead if no live node has it; whether this node leads now.
    fn try_lead(&self, node: &str) -> Result<bool, StoreError>;
    /// Whether this node still leads. After a lost connection it takes the
    /// lead again if nobody else did (a new epoch); `false` once another
    /// node has it. An error: the store cannot tell now.
    fn still_leading(&self, node: &str) -> Result<bool, StoreError>;
    /// Notified when another node admitted events for the leader to take
    /// up (PostgreSQL `LISTEN`/`NOTIFY`; a lost connection is made again,
    /// and notifies once made, so nothing admitted meanwhile waits).
    fn admissions(&self) -> std::sync::Arc<tokio::sync::Notify>;
    /// Records this node as alive and renews its leases (and forgets
    /// nodes gone for an hour that hold nothing).
    fn heartbeat(&self, node: &NodeRecord) -> Result<(), StoreError>;
    /// Every node seen in the last hour.
    fn nodes(&self) -> Result<Vec<NodeRecord>, StoreError>;
    /// Marks node `node` as gone (a clean stop): not alive, its lease over.
    fn leave(&self, node: &str) -> Result<(), StoreError>;
    /// Records an uploaded plugin's bytes (or, with `None`, its removal)
    /// for every node to install.
    fn publish_plugin(
        &self,
        name: &str,
        candidate: bool,
        bytes: Option<&[u8]>,
    ) -> Result<(), StoreError>;
    /// Every uploaded plugin's current version, without its bytes.
    fn shared_plugins(&self) -> Result<Vec<SharedPlugin>, StoreError>;
    /// The config-file subscriptions (JSON) the nodes last agreed on.
    fn agreed_config(&self) -> Result<Option<String>, StoreError>;
    /// Records the config-file subscriptions of the node starting now.
    fn record_config(&self, node: &str, subscriptions: &str) -> Result<(), StoreError>;
    /// An uploaded plugin's bytes (`None`: removed or never uploaded).
    fn shared_plugin_bytes(
        &self,
        name: &str,
        candidate: bool,
    ) -> Result<Option<Vec<u8>>, StoreError>;
}

/// Delivery shared by the nodes of a cluster: each node claims pending jobs
/// (never one another node holds), delivers them and records their states
/// only while it still holds them. A node's hold lasts while its heartbeat
/// renews it; the jobs of a node whose lease ran out are freed for the
/// others. Ordered jobs are never claimed: they wait in the leader's lanes.
pub trait JobLeases: Send + Sync {
    /// Claims up to `max` pending, unordered jobs that no node holds, of
    /// the subscriptions in `known`.
    fn claim(&self, max: usize, known: &[String]) -> Result<Vec<Job>, StoreError>;
    /// Records the states of jobs this node still holds (a settled job is
    /// held by nobody after this); returns how many it no longer held and
    /// so did not record.
    fn record(&self, jobs: &[Job]) -> Result<usize, StoreError>;
    /// Frees the jobs of nodes whose lease ran out; returns how many.
    fn free_expired(&self) -> Result<usize, StoreError>;
    /// Frees every job this node holds (a clean stop: others take them at once).
    fn release_mine(&self) -> Result<usize, StoreError>;
    /// Frees these jobs if this node holds them (it has no room for them).
    fn release(&self, ids: &[String]) -> Result<usize, StoreError>;
    /// The unordered pending jobs the store says this node holds (to find
    /// any it holds there but not in memory: a claim whose answer was lost).
    fn held(&self) -> Result<Vec<String>, StoreError>;
    /// Takes every pending ordered job (a node that took the lead).
    fn adopt_ordered(&self) -> Result<usize, StoreError>;
    /// Notified when jobs became free to claim (`LISTEN`/`NOTIFY`; also
    /// once per connection made, so nothing sent meanwhile is missed).
    fn claimable(&self) -> std::sync::Arc<tokio::sync::Notify>;
    /// Whether this node has room for new jobs of its own: while it does,
    /// the leader's pipeline and windows write its share of their new jobs
    /// (one in as many as nodes are alive) as held by it, no claim needed.
    fn keep_new(&self, room: bool);
    /// Whether `job_id`, a new job the pipeline or a window just wrote,
    /// was written as held by this node (asked once per job).
    fn kept(&self, job_id: &str) -> bool;
    /// Whether the pipeline's write would hold `job`, one of its new jobs,
    /// for this node (its share while it has room, as for [`JobLeases::kept`]).
    fn would_keep(&self, job: &Job) -> bool;
    /// Stores a pipeline batch whose new jobs this node began delivering
    /// before the write, each job in the state its first attempt left it
    /// in: one row version per job rather than an insert and an update.
    /// Pending ones are held by this node where `held` says it still has
    /// them in memory, free to claim otherwise. Fenced by the lead, as
    /// [`EventStore::complete_pipeline`] is.
    fn complete_pipeline_attempted(
        &self,
        processed: &[Processed],
        held: &dyn Fn(&Job) -> bool,
    ) -> Result<(), StoreError>;
    /// Whether this node's lease surely still runs: its last successful
    /// renewal was sent less than a lease ago. While it may not, no
    /// attempt of a held job starts (other nodes may have freed it).
    fn lease_current(&self) -> bool;
    /// How many times a heartbeat found this node's lease had run out:
    /// jobs it held before then may be other nodes' now.
    fn lapses(&self) -> u64;
}

/// A plugin uploaded to the cluster, as [`ClusterStore::shared_plugins`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedPlugin {
    pub name: String,
    /// Installed as `NAME.next.wasm` (a candidate in shadow).
    pub candidate: bool,
    /// Hex SHA-256 of its bytes; `None`: removed.
    pub sha256: Option<String>,
}

/// Everything the core stores, behind one handle.
pub trait Store:
    EventStore
    + DeliveryQueue
    + WindowStore
    + SubscriptionStore
    + IdempotencyStore
    + RetentionStore
    + Send
    + Sync
    + 'static
{
    /// Makes every write so far durable (the intake retires what it holds
    /// only after this).
    fn flush(&self) -> Result<(), StoreError>;

    /// The last flush of a clean stop: also saves what the store keeps in
    /// memory to start faster next time (sled's running totals).
    fn close(&self) -> Result<(), StoreError> {
        self.flush()
    }

    /// Whether the store can write now; the error that stopped it if not
    /// (a full disk, an I/O error, a lost database). Cheap: called every
    /// checkpoint tick.
    fn health(&self) -> Result<(), StoreError>;

    /// Tries to make a failed store write again (reopen, reconnect).
    /// `Ok` once it is healthy. Writes not flushed before the failure may be
    /// lost: the intake runs the events it still holds again afterwards.
    fn recover(&self) -> Result<(), StoreError>;

    /// The store as its own intake queue, if it is one (a shared database);
    /// `None`: events are held by a journal in front of it until stored.
    fn inbox(self: std::sync::Arc<Self>) -> Option<std::sync::Arc<dyn EventInbox>> {
        None
    }

    /// The store as several nodes' shared one, if it can be; `None`: one
    /// node owns it (sled's files are locked by their process).
    fn cluster(self: std::sync::Arc<Self>) -> Option<std::sync::Arc<dyn ClusterStore>> {
        None
    }

    /// The store's delivery shared between nodes, once a node joined it
    /// ([`ClusterStore::join`]); `None`: this node delivers every job.
    fn leases(self: std::sync::Arc<Self>) -> Option<std::sync::Arc<dyn JobLeases>> {
        None
    }
}
