//! Delivery: sends each job to its subscription's endpoint with hyper's
//! pooled client, under the subscription's retry policy, recording every
//! attempt in the store.
//!
//! Policy (defaults from the bike-parking seed, configurable per
//! subscription): 5 s per attempt; up to 3 retries on 5xx, connection errors
//! and timeouts; 100 ms between retries (or exponential with jitter); other
//! statuses (4xx, 3xx) are never retried; any 2xx is success. A job out of
//! retries, or refused, goes to the dead letters; [`Deliverer::resend`]
//! brings it back. The next attempt time is stored, so retries survive restarts.

use crate::clock::Clock;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Uri;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

mod attempt;
mod client;
mod first_states;
mod health;
mod in_memory;
mod order;
mod rate;
mod retry;
mod share;
mod shown;
mod state_writer;
mod test_event;
mod waiting;

pub use shown::{ShownRequest, sent_digest, shown_request};
pub use test_event::{TEST_EVENT_PREFIX, TestEventError};

use client::HttpsClient;
use in_memory::{JobsInMemory, lock};
use retry::{Outcome, backoff_ms};
use state_writer::StateWriter;
pub use state_writer::StoredGate;

use crate::backlog::{Backlog, EndpointLoad, SlotWait};
use crate::config::Config;
use crate::metrics::METRICS;
use crate::model::Subscription;
use crate::model::{EndpointHealth, Job, JobStatus, OnDead, Processed, StoredEvent, WhenDisabled};
use crate::operational;
use crate::sign;
use crate::ssrf::TargetPolicy;
use crate::store::{JobLeases, QueuePosition, Store, StoreError};
use crate::subscriptions::Subscriptions;
use hookhost_plugin_runtime::Event;
use std::sync::atomic::Ordering;

/// How one turn of a job's delivery ended ([`Deliverer::run`]): a
/// return value, moved once, so the job is not boxed.
#[allow(clippy::large_enum_variant)]
enum Turn {
    /// Settled (`Some`), or stopped or left to other nodes (`None`).
    Ended(Option<JobStatus>),
    /// Its retry is scheduled (`next_attempt_at_ms`) and stored.
    Retry(Job),
}

/// A job whose next attempt is this far off or farther waits in the
/// waiting room ([`waiting`]) rather than in a task of its own.
const WAITS_ASIDE_FROM_MS: u64 = 1_000;

/// Most pending jobs a refill reads from the store in one go (a few
/// megabytes of records; the next go follows at the next tick).
const REFILL_CHUNK: usize = 8_192;

/// Most waiting jobs whose records are read in one go when due.
const WAKE_CHUNK: usize = 512;

/// A job in the waiting room: what finds its record again, and what its
/// task had.
struct Waiter {
    id: String,
    /// How many attempts its stored record has (at least): a read that
    /// shows fewer saw a state since replaced.
    attempts: usize,
    held_under: Option<u64>,
}

/// How a job's task ended.
enum TaskEnd {
    /// Its delivery settled (`Some`), or stopped, was left to other nodes
    /// or was settled elsewhere (`None`).
    Ended(Option<JobStatus>),
    /// It waits in the waiting room, still counted in memory.
    WaitsAside,
}

/// A subscription as delivery needs it.
struct Endpoint {
    sub: Arc<Subscription>,
    uri: Uri,
    keys: Vec<Vec<u8>>,
    /// Keys a rotation replaced, each signing until its time (ms).
    retiring: Vec<(Vec<u8>, u64)>,
    /// The subscription's own headers, checked when it was configured.
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
    in_flight: Semaphore,
    /// Shared by every subscription on the same scheme, host and port.
    host_in_flight: Arc<Semaphore>,
    /// Its new deliveries waiting for a slot, for the ingest backlog.
    load: Arc<EndpointLoad>,
    /// No attempt starts before this (ms since the epoch): set by an
    /// endpoint's `Retry-After`.
    paused_until_ms: std::sync::atomic::AtomicU64,
    rate: Option<rate::TokenBucket>,
}

impl Endpoint {
    fn new(
        sub: Arc<Subscription>,
        policy: &TargetPolicy,
        host_in_flight: impl FnOnce(&Uri) -> Arc<Semaphore>,
        load: Arc<EndpointLoad>,
    ) -> Result<Endpoint, String> {
        let uri: Uri = sub.url.parse().map_err(|e| format!("url: {e}"))?;
        // Again here: the allowlist may have changed since the subscription
        // was made, and IP literals never reach the resolver's check.
        policy.check_url(&uri).map_err(|e| format!("url: {e}"))?;
        Ok(Endpoint {
            keys: sub
                .secrets
                .iter()
                .map(|s| sign::whsec_key(s).map_err(|e| e.to_string()))
                .collect::<Result<_, _>>()?,
            retiring: sub
                .retiring_secrets
                .iter()
                .map(|r| {
                    sign::whsec_key(&r.secret)
                        .map(|key| (key, r.until_ms))
                        .map_err(|e| e.to_string())
                })
                .collect::<Result<_, _>>()?,
            headers: sub
                .headers
                .iter()
                .map(|(name, value)| {
                    crate::config::subscription_header(name, value)
                        .map_err(|e| format!("headers.{name}: {e}"))
                })
                .collect::<Result<_, String>>()?,
            in_flight: Semaphore::new(sub.max_in_flight),
            host_in_flight: host_in_flight(&uri),
            load,
            paused_until_ms: std::sync::atomic::AtomicU64::new(0),
            rate: sub.rate_limit.as_ref().map(rate::TokenBucket::new),
            uri,
            sub,
        })
    }
}

pub struct Deliverer {
    client: HttpsClient,
    store: Arc<dyn Store>,
    subscriptions: Arc<Subscriptions>,
    policy: Arc<TargetPolicy>,
    /// Built on first use per subscription version: a changed subscription
    /// gets a new endpoint (attempts in flight finish on the old one).
    endpoints: std::sync::Mutex<HashMap<String, Arc<Endpoint>>>,
    /// In-flight limits per `scheme://host:port`.
    hosts: std::sync::Mutex<HashMap<String, Arc<Semaphore>>>,
    per_host: usize,
    tasks: TaskTracker,
    stop: CancellationToken,
    states: StateWriter,
    /// Jobs with a task; at most `max_live`. The others wait in the store
    /// and are loaded as room frees up.
    live: JobsInMemory,
    max_live: usize,
    /// Some pending jobs are only in the store.
    overflow: std::sync::atomic::AtomicBool,
    health: health::Health,
    /// Ordered subscriptions' lanes: only a lane's head has a task.
    lanes: order::Lanes,
    /// Where operational events go (the intake), once the node wires it.
    operational: std::sync::OnceLock<OperationalSink>,
    failing_after: u32,
    /// Attempt times, retry times and endpoint health run on it (tests move
    /// it to see a failure streak of days).
    clock: Arc<dyn Clock>,
    /// On a store shared by a cluster: jobs are claimed from it (every
    /// node delivers), and states recorded only for jobs still held.
    leases: Option<Arc<dyn JobLeases>>,
    /// Jobs held by this node that it had no room for, to free.
    no_room: std::sync::Mutex<Vec<String>>,
    /// Jobs waiting long for their next attempt, without a task.
    waiting: Arc<waiting::WaitingRoom<Waiter>>,
    /// The waiting room's timer runs (started on first use).
    waiting_timer: std::sync::atomic::AtomicBool,
    /// Wakes the claim loop ([`Deliverer::share`]).
    claim_now: Arc<tokio::sync::Notify>,
    /// After a store failure: compare what the store says this node holds
    /// with what it has in memory ([`Deliverer::share`]).
    resync: std::sync::atomic::AtomicBool,
    /// Acknowledged work not yet started: new deliveries waiting for a
    /// slot count in it (see [`crate::backlog`]).
    backlog: Arc<Backlog>,
    /// On a shared store: new jobs attempted before their pipeline batch
    /// is stored (see [`first_states`]).
    unstored: first_states::Unstored,
}

/// Whether a new job goes to delivery before its pipeline batch is stored
/// (on a store of the node's own): unordered pending ones (a lane reads its
/// next job from the store).
pub fn goes_early(job: &Job) -> bool {
    job.status == JobStatus::Pending && job.order.is_none()
}

/// Takes an operational event to accept like an ingested one.
type OperationalSink = Box<dyn Fn(StoredEvent) + Send + Sync>;

/// Runs a subscription's current plugin chain on an event: the type and
/// data to send, `None` if dropped (the pipeline's `rerun`).
pub type Rechain<'a> = &'a dyn Fn(&str, &Event) -> Result<Option<(String, String)>, String>;

#[derive(Debug, thiserror::Error)]
pub enum ResendError {
    #[error("no delivery with id {0}")]
    NotFound(String),
    #[error("delivery {0} is {1:?}; only dead, delivered or plugin_error ones can be re-sent")]
    NotResendable(String, JobStatus),
    #[error("delivery {0}: the subscription's plugins still fail: {1}")]
    PluginStillFails(String, String),
    #[error("delivery {0} is for subscription {1}, which is no longer configured")]
    NoSubscription(String, String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Deliverer {
    pub fn new(
        store: Arc<dyn Store>,
        config: &Config,
        subscriptions: Arc<Subscriptions>,
        clock: Arc<dyn Clock>,
    ) -> Arc<Deliverer> {
        // Host names are checked at every resolve (IP literals were checked
        // with the config): see `ssrf`.
        let policy = Arc::new(
            config
                .delivery
                .target_policy()
                .expect("validated with the config"),
        );
        let client = client::build(policy.clone(), config.delivery.max_in_flight_per_host);
        let live = JobsInMemory::default();
        let leases = store.clone().leases();
        Arc::new(Deliverer {
            client,
            subscriptions,
            policy,
            endpoints: Default::default(),
            hosts: Default::default(),
            per_host: config.delivery.max_in_flight_per_host,
            tasks: TaskTracker::new(),
            stop: CancellationToken::new(),
            states: StateWriter::start(store.clone(), leases.clone(), live.clone()),
            live,
            max_live: config.delivery.max_jobs_in_memory,
            overflow: Default::default(),
            health: health::Health::load(&*store),
            lanes: order::Lanes::default(),
            operational: std::sync::OnceLock::new(),
            failing_after: config.delivery.failing_after_attempts,
            clock,
            store,
            leases,
            no_room: Default::default(),
            claim_now: Default::default(),
            resync: Default::default(),
            waiting: Default::default(),
            waiting_timer: Default::default(),
            backlog: Backlog::new(
                config.server.ingest_backlog,
                Duration::from_millis(config.server.ingest_wait_ms),
            ),
            unstored: Default::default(),
        })
    }

    /// The node's ingest backlog: the intake and the pipeline count their
    /// part of it, ingest waits at its door.
    pub fn backlog(&self) -> Arc<Backlog> {
        self.backlog.clone()
    }

    /// The time attempts, retries and rotations run on.
    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// Sends operational events (`hookhost.*`) to `sink` from now on.
    pub fn on_operational(&self, sink: impl Fn(StoredEvent) + Send + Sync + 'static) {
        let _ = self.operational.set(Box::new(sink));
    }

    fn emit(&self, event: StoredEvent) {
        if let Some(sink) = self.operational.get() {
            sink(event);
        }
    }

    /// `hookhost.delivery.*` about `job`; never about an operational event's
    /// own delivery (that could loop).
    fn emit_about(&self, kind: &str, job: &Job, key: &str) {
        if operational::is_operational(&job.event_type) {
            return;
        }
        let last = job.attempts.last();
        self.emit(operational::event(
            kind,
            key,
            self.clock.now_ms(),
            serde_json::json!({
                "delivery_id": job.id,
                "subscription_id": job.subscription_id,
                "event_id": job.event_id,
                "event_type": job.event_type,
                "attempts": job.attempts.len(),
                "last_status": last.and_then(|a| a.status),
                "last_error": last.and_then(|a| a.error.clone()).or_else(|| job.error.clone()),
            }),
        ));
    }

    /// Subscriptions whose endpoint hookhost disabled.
    pub fn disabled_endpoints(&self) -> usize {
        self.health.disabled_count()
    }

    /// What hookhost knows of subscription `id`'s endpoint health.
    pub fn endpoint_health(&self, id: &str) -> EndpointHealth {
        self.health.get(id)
    }

    /// Enables a disabled endpoint again and sends its paused deliveries;
    /// returns how many. Blocking (store writes).
    pub fn enable_endpoint(self: &Arc<Self>, id: &str) -> Result<usize, StoreError> {
        if self.health.enable(&*self.store, id)? {
            tracing::info!(subscription = %id, "endpoint enabled again");
            let at = self.clock.now_ms();
            self.emit(operational::event(
                operational::SUBSCRIPTION_RECOVERED,
                &format!("{id}_{at}"),
                at,
                serde_json::json!({"subscription_id": id, "reason": "enabled over the API"}),
            ));
        }
        // Jobs paused just before: their state is in the store after this.
        self.states.sync_blocking();
        let mut paused = self.store.paused_jobs(id)?;
        let now = self.clock.now_ms();
        for job in &mut paused {
            job.status = JobStatus::Pending;
            job.attempts_in_round = 0;
            job.next_attempt_at_ms = now;
            job.error = None;
        }
        self.store.update_jobs(&paused)?;
        let resumed = paused.len();
        self.submit_all(paused);
        Ok(resumed)
    }

    /// The endpoint `job` is sent to now; `None` (and said so) once its
    /// subscription is no longer configured: the job stays pending.
    fn endpoint_for(&self, job: &Job) -> Option<Arc<Endpoint>> {
        let found = self.endpoint(&job.subscription_id);
        if found.is_none() {
            tracing::warn!(job_id = %job.id, subscription = %job.subscription_id, "subscription no longer configured; job left pending");
        }
        found
    }

    /// The endpoint of the current version of subscription `id`.
    fn endpoint(&self, id: &str) -> Option<Arc<Endpoint>> {
        let sub = self.subscriptions.get(id)?;
        let mut endpoints = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = endpoints.get(id)
            && Arc::ptr_eq(&e.sub, &sub)
        {
            return Some(e.clone());
        }
        let host_in_flight = |uri: &Uri| {
            let host = format!(
                "{}://{}",
                uri.scheme_str().unwrap_or("http"),
                uri.authority().map_or("", |a| a.as_str())
            );
            let mut hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
            hosts
                .entry(host)
                .or_insert_with(|| Arc::new(Semaphore::new(self.per_host)))
                .clone()
        };
        match Endpoint::new(sub, &self.policy, host_in_flight, self.backlog.endpoint()) {
            Ok(e) => {
                let e = Arc::new(e);
                endpoints.insert(id.to_string(), e.clone());
                Some(e)
            }
            Err(error) => {
                tracing::error!(subscription = %id, %error, "subscription unusable");
                None
            }
        }
    }

    /// Starts delivering a pending job (at its `next_attempt_at_ms`), or,
    /// when `max_jobs_in_memory` jobs have tasks already, leaves it to wait
    /// in the store (where it is pending) for a refill. An ordered job goes
    /// into its lane and starts when it is the lane's head.
    pub fn submit(self: &Arc<Self>, job: Job) {
        self.submit_as(job, false)
    }

    /// [`Deliverer::submit`]; a `fresh` job (new from the pipeline) counts
    /// in the ingest backlog while it is due and waits for a slot.
    fn submit_as(self: &Arc<Self>, job: Job, fresh: bool) {
        match self.lane_of(&job) {
            Some((lane, seq)) => {
                self.lanes.enqueue(&lane, seq, &job.id);
                self.advance(&lane, Some(job));
            }
            None => self.start(job, None, fresh),
        }
    }

    /// `job`'s lane and place, if it has one and its subscription orders
    /// deliveries still (one that stopped ordering sends them as they come).
    fn lane_of(&self, job: &Job) -> Option<(order::LaneId, u64)> {
        let found = order::LaneId::of(job)?;
        self.subscriptions
            .get(&job.subscription_id)
            .is_some_and(|sub| sub.ordering.is_some())
            .then_some(found)
    }

    /// [`Deliverer::submit`] for many at once: ordered ones all take their
    /// places before any of their lanes moves.
    pub fn submit_all(self: &Arc<Self>, jobs: Vec<Job>) {
        let mut lanes = Vec::new();
        for job in jobs {
            match self.lane_of(&job) {
                Some((lane, seq)) => {
                    self.lanes.enqueue(&lane, seq, &job.id);
                    lanes.push(lane);
                }
                None => self.start(job, None, false),
            }
        }
        for lane in lanes {
            self.advance(&lane, None);
        }
    }

    /// Starts the head of `lane` if it may start; `have` is a job at hand
    /// (saves reading it from the store when it is the head).
    fn advance(self: &Arc<Self>, lane: &order::LaneId, have: Option<Job>) {
        if self.stop.is_cancelled() {
            return;
        }
        let Some((seq, id)) = self.lanes.next(lane) else {
            return;
        };
        if let Some(job) = have.filter(|j| j.id == id) {
            self.start(job, Some((lane.clone(), seq)), false);
            return;
        }
        // Waiting jobs of a lane are ids only: read the head's job.
        let (this, lane) = (self.clone(), lane.clone());
        tokio::spawn(async move {
            loop {
                let store = this.store.clone();
                let lookup = id.clone();
                match tokio::task::spawn_blocking(move || store.job(&lookup)).await {
                    Ok(Ok(Some(job))) if job.status == JobStatus::Pending => {
                        this.start(job, Some((lane, seq)), false);
                        return;
                    }
                    Ok(Ok(_)) => {
                        // Gone or settled meanwhile: the next one's turn.
                        this.finished_in_lane(&lane, seq, None);
                        return;
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(job_id = %id, error = %e, "cannot read an ordered delivery; retried");
                        tokio::select! {
                            _ = this.stop.cancelled() => return,
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        }
                    }
                    Err(_) => return,
                }
            }
        });
    }

    /// The running job `seq` of `lane` is done (`status`: how it ended;
    /// `None`: it did not run): the lane's next may start.
    fn finished_in_lane(
        self: &Arc<Self>,
        lane: &order::LaneId,
        seq: u64,
        status: Option<JobStatus>,
    ) {
        let on_dead = self
            .subscriptions
            .get(lane.subscription())
            .and_then(|sub| sub.ordering.as_ref().map(|o| o.on_dead))
            .unwrap_or_default();
        self.lanes.finished(lane, seq, status, on_dead);
        self.advance(lane, None);
    }

    /// A pipeline batch's new jobs, handed over before the batch is stored
    /// where that saves time or writes: on a store of this node's own, the
    /// first attempts overlap the batch's write and their states wait for
    /// the returned gate; on a shared one, the outcomes whose jobs are
    /// attempted first are taken out of `outcomes` and stored with those
    /// jobs' first states (see [`first_states`]).
    ///
    /// On a store of this node's own, the jobs taken are the unordered
    /// pending ones (a lane reads its next job from the store), all of them
    /// within `max_jobs_in_memory`, or none (all are then handed over once
    /// stored). Their first attempts start now and their states wait for
    /// the gate (a state must not land before its job).
    pub fn take_early(self: &Arc<Self>, outcomes: &mut Vec<Processed>) -> Option<StoredGate> {
        if self.leases.is_some() {
            self.attempt_before_storing(outcomes);
            return None;
        }
        let jobs: Vec<Job> = outcomes
            .iter()
            .flat_map(|o| &o.jobs)
            .filter(|j| goes_early(j))
            .cloned()
            .collect();
        if jobs.is_empty() || !self.reserve_live(&jobs) {
            return None;
        }
        // Before any of them can save a state.
        let gate = self.states.gate();
        for job in jobs {
            self.spawn_task(job, None, true);
        }
        Some(gate)
    }

    /// Counts `jobs`, new ones handed over before they are stored, as in
    /// memory, if all of them fit within `max_jobs_in_memory` and none is
    /// there already; false (nothing counted) otherwise.
    fn reserve_live(&self, jobs: &[Job]) -> bool {
        let mut live = lock(&self.live);
        if live.len() + jobs.len() > self.max_live || jobs.iter().any(|j| live.contains(&j.id)) {
            return false;
        }
        for job in jobs {
            live.insert(&job.id);
        }
        true
    }

    /// Gives `job` a task. An unordered one waits in the store instead when
    /// `max_jobs_in_memory` is reached; an ordered one (its lane's head)
    /// always gets one: at most one per active key.
    fn start(self: &Arc<Self>, job: Job, lane: Option<(order::LaneId, u64)>, fresh: bool) {
        {
            let mut live = lock(&self.live);
            let full = lane.is_none() && live.len() >= self.max_live;
            if live.contains(&job.id) || full {
                drop(live);
                match lane {
                    // Re-sent while its earlier task ends: back in its
                    // place, tried again once that task is gone.
                    Some((lane, seq)) => {
                        self.lanes.finished(&lane, seq, None, Default::default());
                        self.lanes.enqueue(&lane, seq, &job.id);
                        let this = self.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            this.advance(&lane, None);
                        });
                    }
                    // Waits in the store: loaded again by a refill (a job
                    // with a task still, a re-send, once that task's state
                    // is stored).
                    None if self.leases.is_none() => self.overflow.store(true, Ordering::SeqCst),
                    // Held by this node (its share of new ones, a re-send):
                    // freed for whichever node has room.
                    None => self.free_for_others(job.id),
                }
                return;
            }
            live.insert(&job.id);
        }
        self.spawn_task(job, lane, fresh);
    }

    /// Runs `job`'s task; its id has its place in `live`.
    fn spawn_task(self: &Arc<Self>, job: Job, lane: Option<(order::LaneId, u64)>, fresh: bool) {
        let Some(endpoint) = self.endpoint_for(&job) else {
            lock(&self.live).remove(&job.id);
            if let Some((lane, seq)) = &lane {
                // Its lane stays until the next start.
                self.lanes.finished(lane, *seq, None, Default::default());
            }
            return;
        };
        // On a shared store an unordered job is held under this node's
        // lease as it stands now; ordered ones are the leader's.
        let held_under = self
            .leases
            .as_ref()
            .filter(|_| lane.is_none())
            .map(|l| l.lapses());
        self.spawn_turns(endpoint, job, held_under, lane, fresh);
    }

    /// Runs `job`'s turns in a task of its own (see [`Deliverer::turns`]).
    fn spawn_turns(
        self: &Arc<Self>,
        endpoint: Arc<Endpoint>,
        job: Job,
        held_under: Option<u64>,
        lane: Option<(order::LaneId, u64)>,
        fresh: bool,
    ) {
        // An ordered job keeps its task: its lane waits on it anyway.
        let may_wait_aside = lane.is_none();
        if may_wait_aside && self.waits_aside(&job, &endpoint) {
            // No task until it is due (a refill may load a hundred
            // thousand such jobs at once).
            self.wait_aside(job, held_under);
            return;
        }
        let slot_wait =
            (fresh && job.next_attempt_at_ms <= self.clock.now_ms()).then(|| endpoint.load.waits());
        let this = self.clone();
        // Boxed: a task's future keeps room for what it captured.
        let job = Box::new(job);
        self.tasks.spawn(async move {
            let id = job.id.clone();
            let end = this
                .turns(endpoint, job, held_under, may_wait_aside, slot_wait)
                .await;
            let TaskEnd::Ended(ended) = end else {
                return; // still in memory, in the waiting room
            };
            this.states.release(id);
            if let Some((lane, seq)) = lane
                && ended.is_some()
            {
                this.finished_in_lane(&lane, seq, ended);
            }
        });
    }

    /// A job's task from its first turn to its last. It waits for its
    /// time (first or next attempt) in a small future; a turn's own
    /// (~1.3 KB, and the signed body) is made only when due. With
    /// `may_wait_aside`, a wait of [`WAITS_ASIDE_FROM_MS`] or more ends the
    /// task and the job waits in the waiting room instead (the first turn's
    /// wait was judged by [`Self::spawn_turns`]). A disabled endpoint's job
    /// goes straight on (`run` settles it).
    async fn turns(
        self: &Arc<Self>,
        mut endpoint: Arc<Endpoint>,
        mut job: Box<Job>,
        held_under: Option<u64>,
        may_wait_aside: bool,
        mut slot_wait: Option<SlotWait>,
    ) -> TaskEnd {
        loop {
            let disabled = self.health.disabled(&endpoint.sub.id).is_some();
            let waits = !disabled && job.next_attempt_at_ms > self.clock.now_ms();
            if waits && !self.until_due(job.next_attempt_at_ms).await {
                return TaskEnd::Ended(None); // stopped: stays pending in the store
            }
            // A turn after a wait runs on the subscription as it is now: one
            // changed meanwhile (a new URL or secret) is what the attempt
            // uses. A turn due at once has an endpoint just looked up.
            if waits {
                match self.endpoint_for(&job) {
                    Some(current) => endpoint = current,
                    None => return TaskEnd::Ended(None),
                }
            }
            let turn =
                Box::pin(
                    self.clone()
                        .run(endpoint.clone(), *job, held_under, slot_wait.take()),
                );
            match turn.await {
                Turn::Ended(status) => return TaskEnd::Ended(status),
                Turn::Retry(next) => *job = next,
            }
            if may_wait_aside && self.waits_aside(&job, &endpoint) {
                self.wait_aside(*job, held_under);
                return TaskEnd::WaitsAside;
            }
        }
    }

    /// Whether `job` is due late enough to wait in the waiting room (a
    /// disabled endpoint's job goes straight on: `run` settles it).
    fn waits_aside(&self, job: &Job, endpoint: &Endpoint) -> bool {
        job.next_attempt_at_ms >= self.clock.now_ms().saturating_add(WAITS_ASIDE_FROM_MS)
            && self.health.disabled(&endpoint.sub.id).is_none()
    }

    /// Puts `job` in the waiting room (its latest state is stored or on
    /// its way); it keeps its place in memory.
    fn wait_aside(self: &Arc<Self>, job: Job, held_under: Option<u64>) {
        let waiter = Waiter {
            attempts: job.attempts.len(),
            id: job.id,
            held_under,
        };
        self.waiting.put(job.next_attempt_at_ms, waiter);
        if !self.waiting_timer.swap(true, Ordering::SeqCst) {
            tokio::spawn(Self::waiting_timer(
                Arc::downgrade(self),
                self.waiting.clone(),
            ));
        }
    }

    /// Gives each job of the waiting room a task again when it is due.
    /// Holds the deliverer only while it wakes some: one dropped without
    /// a shutdown is not kept alive (with its store) by its timer.
    async fn waiting_timer(
        deliverer: std::sync::Weak<Self>,
        room: Arc<waiting::WaitingRoom<Waiter>>,
    ) {
        loop {
            let Some(this) = deliverer.upgrade() else {
                return;
            };
            let now = this.clock.now_ms();
            let mut due = room.take_due(now).into_iter().peekable();
            while due.peek().is_some() && !this.stop.is_cancelled() {
                this.wake(due.by_ref().take(WAKE_CHUNK).collect()).await;
            }
            let stop = this.stop.clone();
            // From now, not from before the wakes (which may take a while).
            let now = this.clock.now_ms();
            drop(this);
            // Told of an earlier one (or of one put since the take).
            let wait = room.next_due().map(|due| due.saturating_sub(now));
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = room.earlier.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(wait.unwrap_or(0))), if wait.is_some() => {}
            }
        }
    }

    /// Gives due `waiters` their tasks again, from their records (read in
    /// one go). One whose record is settled or gone is done; one whose
    /// record lacks its last state (still on its way to the store) is read
    /// again once the states are written, and waits a second more if the
    /// store refuses writes.
    async fn wake(self: &Arc<Self>, waiters: Vec<Waiter>) {
        let mut waiters = waiters;
        for synced in [false, true] {
            let ids: Vec<String> = waiters.iter().map(|w| w.id.clone()).collect();
            let store = self.store.clone();
            let records = match tokio::task::spawn_blocking(move || store.jobs_by_id(&ids)).await {
                Ok(Ok(records)) => records,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, jobs = waiters.len(), "cannot read waiting deliveries; tried again in a second");
                    self.wait_again(waiters);
                    return;
                }
                Err(_) => return, // shutting down
            };
            if self.stop.is_cancelled() {
                return; // they stay pending in the store
            }
            let mut behind = Vec::new();
            for (waiter, record) in waiters.into_iter().zip(records) {
                match record {
                    Some(job) if job.attempts.len() < waiter.attempts => behind.push(waiter),
                    // On its subscription as it is now (it may have
                    // changed while the job waited).
                    Some(job) if job.status == JobStatus::Pending => {
                        match self.endpoint_for(&job) {
                            Some(endpoint) => {
                                self.spawn_turns(endpoint, job, waiter.held_under, None, false)
                            }
                            None => self.states.release(waiter.id),
                        }
                    }
                    _ => self.states.release(waiter.id),
                }
            }
            if behind.is_empty() {
                return;
            }
            if synced {
                tracing::warn!(
                    jobs = behind.len(),
                    "waiting deliveries' last states are not stored yet; read again in a second"
                );
                self.wait_again(behind);
                return;
            }
            self.states.sync().await;
            waiters = behind;
        }
    }

    fn wait_again(&self, waiters: Vec<Waiter>) {
        let due = self.clock.now_ms() + 1_000;
        for waiter in waiters {
            self.waiting.put(due, waiter);
        }
    }

    /// Sleeps until `due_ms` on the deliverer's clock; false when stopped
    /// first.
    async fn until_due(&self, due_ms: u64) -> bool {
        let wait = due_ms.saturating_sub(self.clock.now_ms());
        if wait == 0 {
            return true;
        }
        tokio::select! {
            _ = self.stop.cancelled() => false,
            _ = tokio::time::sleep(Duration::from_millis(wait)) => true,
        }
    }

    /// Looks in the store again for pending jobs not in memory (after the
    /// store recovered from a failure); the refill loop loads them.
    pub fn reload(&self) {
        self.overflow.store(true, Ordering::SeqCst);
        self.resync.store(true, Ordering::SeqCst);
    }

    /// Reads the endpoints' health again: a node taking the lead starts
    /// from what the previous leader recorded.
    pub fn reload_health(&self) -> Result<(), StoreError> {
        self.health.reload(&*self.store)
    }

    /// Loads the store's pending jobs (all of them, up to the memory bound;
    /// the rest as room frees up): at start, and when submits overflowed.
    /// On a shared store only the ordered jobs (the others are claimed:
    /// [`Deliverer::share`]). When `stored_pending` (the store's count, or
    /// an upper bound; `None`: not known) is 0 the queue is not read: on a
    /// large sled store its front may hold millions of entries of delivered
    /// jobs.
    pub fn resume(self: &Arc<Self>, stored_pending: Option<usize>) {
        if stored_pending != Some(0) {
            self.overflow.store(true, Ordering::SeqCst);
        }
        self.clone().open_lanes();
        if self.leases.is_some() {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_millis(100));
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // The last read stopped at REFILL_CHUNK with room left: the
            // refill goes on whatever the room.
            let mut filling = false;
            // Where the last read stopped: a deep queue is read on, not
            // from its front again each time (BENCHMARKS.md).
            let mut position = QueuePosition::default();
            loop {
                tokio::select! {
                    _ = this.stop.cancelled() => return,
                    _ = ticker.tick() => {}
                }
                let room = this.max_live.saturating_sub(lock(&this.live).len());
                // Refill in chunks, not one job at a time.
                let worth_it = filling && room > 0 || room >= (this.max_live / 4).max(1);
                if !this.overflow.load(Ordering::SeqCst) || !worth_it {
                    filling = false;
                    continue;
                }
                let chunk = room.min(REFILL_CHUNK);
                this.overflow.store(false, Ordering::SeqCst);
                let (store, live) = (this.store.clone(), this.live.clone());
                let subscriptions = this.subscriptions.clone();
                // Tasks that end while the store is read are remembered:
                // what was read of them is stale (see `in_memory`).
                lock(&this.live).begin_read();
                let from = position.clone();
                let loaded = tokio::task::spawn_blocking(move || {
                    // Jobs of a removed subscription stay pending, unloaded,
                    // until it is back.
                    // Ordered ones are in their lanes (`open_lanes`).
                    let skip = |id: &str| lock(&live).passes_over(id);
                    store.pending_jobs_from(&from, chunk, &skip, &|job| {
                        subscriptions
                            .get(&job.subscription_id)
                            .is_some_and(|sub| job.order.is_none() || sub.ordering.is_none())
                    })
                })
                .await;
                match loaded {
                    Ok(Ok((jobs, next))) => {
                        // A read that began further on and reached the last
                        // is followed by one from the front: jobs there may
                        // have left memory or become wanted since.
                        let more = next.is_some() || position != QueuePosition::default();
                        position = next.unwrap_or_default();
                        if more {
                            this.overflow.store(true, Ordering::SeqCst);
                        }
                        filling = more && chunk < room;
                        let claimed = lock(&this.live).claim_read(jobs);
                        for job in claimed {
                            if this.lane_of(&job).is_some() {
                                // Its subscription orders deliveries since the read.
                                lock(&this.live).remove(&job.id);
                                this.submit(job);
                            } else {
                                this.spawn_task(job, None, false);
                            }
                        }
                    }
                    Ok(Err(e)) => {
                        lock(&this.live).end_read();
                        tracing::error!(error = %e, "cannot load pending deliveries; retried");
                        this.overflow.store(true, Ordering::SeqCst);
                    }
                    Err(_) => {
                        lock(&this.live).end_read();
                        this.overflow.store(true, Ordering::SeqCst);
                    }
                }
            }
        });
    }

    /// Puts every pending ordered job of the store in its lane (and, for
    /// `on_dead = "hold"`, the dead ones that hold a lane), then lets the
    /// lanes' heads start: after a restart a lane's head may be any of them.
    fn open_lanes(self: Arc<Self>) {
        tokio::spawn(async move {
            loop {
                let this = self.clone();
                let registered = tokio::task::spawn_blocking(move || {
                    // A node taking the lead takes the lanes over: the
                    // previous leader's states of them are refused from now.
                    let adopted = match &this.leases {
                        Some(leases) => leases.adopt_ordered()?,
                        None => 0,
                    };
                    let subs = this.subscriptions.current();
                    if adopted == 0 && !subs.iter().any(|s| s.ordering.is_some()) {
                        return Ok(Vec::new());
                    }
                    // On a shared store, ordered jobs of a subscription that
                    // no longer orders become unordered ones, held by this
                    // node (nobody claims ordered ones); elsewhere the
                    // refill loads them.
                    let (mut unlaned, _) = this.store.pending_jobs_from(
                        &QueuePosition::default(),
                        usize::MAX,
                        &|_| false,
                        &|job| {
                            match this.lane_of(job) {
                                Some((lane, seq)) => {
                                    this.lanes.enqueue(&lane, seq, &job.id);
                                    false // ids only
                                }
                                None => this.leases.is_some() && job.order.is_some(),
                            }
                        },
                    )?;
                    for job in &mut unlaned {
                        job.order = None;
                    }
                    this.store.update_jobs(&unlaned)?;
                    let holds = |id: &str| {
                        subs.get(id).is_some_and(|s| {
                            s.ordering
                                .as_ref()
                                .is_some_and(|o| o.on_dead == OnDead::Hold)
                        })
                    };
                    if subs.iter().any(|s| holds(&s.id)) {
                        for job in this.store.dead_letters()? {
                            if let Some((lane, seq)) = order::LaneId::of(&job)
                                && holds(&job.subscription_id)
                            {
                                this.lanes.hold(&lane, seq);
                            }
                        }
                    }
                    Ok::<_, StoreError>(unlaned)
                })
                .await;
                match registered {
                    Ok(Ok(unlaned)) => {
                        for job in unlaned {
                            self.start(job, None, false);
                        }
                        break;
                    }
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "cannot load ordered deliveries; retried")
                    }
                    Err(_) => return,
                }
                tokio::select! {
                    _ = self.stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
            for lane in self.lanes.open() {
                self.advance(&lane, None);
            }
        });
    }

    /// Puts a dead letter (or a delivered job, to send it again) back in
    /// the queue for a new round of attempts, under the same id. A
    /// `plugin_error` delivery is first run through `rechain` (the
    /// subscription's current plugins, on the original event): it is sent as
    /// they shape it, becomes `filtered` if they drop it, and stays a
    /// `plugin_error` (with the new error) if they fail again.
    pub fn resend(
        self: &Arc<Self>,
        job_id: &str,
        rechain: Rechain<'_>,
    ) -> Result<Job, ResendError> {
        let mut job = self
            .store
            .job(job_id)?
            .ok_or_else(|| ResendError::NotFound(job_id.to_string()))?;
        if !matches!(
            job.status,
            JobStatus::Dead | JobStatus::Delivered | JobStatus::PluginError
        ) {
            return Err(ResendError::NotResendable(job.id, job.status));
        }
        if self.subscriptions.get(&job.subscription_id).is_none() {
            return Err(ResendError::NoSubscription(job.id, job.subscription_id));
        }
        if job.status == JobStatus::PluginError {
            // The job kept the event's type and data as they came in.
            let timestamp = match self.store.event(&job.event_id)? {
                Some(event) => event.timestamp,
                None => crate::clock::rfc3339_seconds(job.created_at_ms),
            };
            let event = Event {
                id: job.event_id.clone(),
                event_type: job.event_type.clone(),
                timestamp,
                data: job.data.clone(),
            };
            match rechain(&job.subscription_id, &event) {
                Ok(Some((event_type, data))) => {
                    job.event_type = event_type;
                    job.data = data;
                }
                Ok(None) => {
                    job.status = JobStatus::Filtered;
                    job.error = None;
                    self.store.update_job(&job)?;
                    return Ok(job);
                }
                Err(e) => {
                    job.error = Some(e.clone());
                    self.store.update_job(&job)?;
                    return Err(ResendError::PluginStillFails(job.id, e));
                }
            }
        }
        if let Some((lane, seq)) = self.lane_of(&job) {
            // A dead letter holding its lane does so no longer: it is back
            // at its place.
            self.lanes.release(&lane, seq);
        } else if job.status == JobStatus::PluginError
            && let Some(sub) = self.subscriptions.get(&job.subscription_id)
        {
            // First made now: its place in the order is now.
            job.order = crate::subscriptions::order_slot(&sub, &job.data);
        }
        job.status = JobStatus::Pending;
        job.attempts_in_round = 0;
        job.next_attempt_at_ms = self.clock.now_ms();
        job.error = None;
        self.store.update_job(&job)?;
        self.submit(job.clone());
        Ok(job)
    }

    /// Deliveries in memory, waiting for an attempt or in one, and ordered
    /// ones waiting for their turn (more may wait in the store).
    pub fn queued(&self) -> usize {
        lock(&self.live).len() + self.lanes.waiting()
    }

    /// Of [`Deliverer::queued`], those waiting in memory a second or more
    /// for their next attempt (retries, mostly).
    pub fn waiting_for_later(&self) -> usize {
        self.waiting.len()
    }

    /// Stops starting attempts and waits up to `grace` for those in flight;
    /// then every recorded state is in the store.
    pub async fn shutdown(&self, grace: Duration) -> bool {
        self.stop.cancel();
        self.tasks.close();
        let finished = tokio::time::timeout(grace, self.tasks.wait()).await.is_ok();
        self.write_all_unstored();
        self.states.sync().await;
        if let Some(leases) = self.leases.clone() {
            // The other nodes take what this one held now, not when its
            // lease would run out.
            match tokio::task::spawn_blocking(move || leases.release_mine()).await {
                Ok(Ok(n)) if n > 0 => {
                    tracing::info!(jobs = n, "deliveries left to the other nodes")
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "cannot hand deliveries over; others take them when this node's lease ends")
                }
                Err(_) => {}
            }
        }
        finished
    }

    /// One turn of `job`'s delivery: attempts it when due (later when
    /// its subscription is paused) and returns how it ended (`None`:
    /// stopped by shutdown, or left to other nodes: still pending), or
    /// with its retry scheduled, for its task to wait for in less memory.
    /// `held_under`: on a shared store, the count of this node's lease
    /// lapses when it took the job.
    async fn run(
        self: Arc<Self>,
        endpoint: Arc<Endpoint>,
        mut job: Job,
        held_under: Option<u64>,
        mut slot_wait: Option<SlotWait>,
    ) -> Turn {
        let body = match sign::body(
            endpoint.sub.envelope,
            &job.event_type,
            &job.data,
            endpoint.sub.seed.as_deref(),
        ) {
            Ok(body) => Bytes::from(body),
            Err(e) => {
                job.status = JobStatus::Dead;
                job.error = Some(e.to_string());
                self.save(&job);
                return Turn::Ended(Some(job.status));
            }
        };
        loop {
            if let Some(disabled) = self.health.disabled(&job.subscription_id) {
                match endpoint.sub.health.when_disabled {
                    WhenDisabled::Pause => {
                        job.status = JobStatus::Paused;
                        job.error = Some(format!("endpoint disabled: {}", disabled.reason));
                    }
                    WhenDisabled::Drop => {
                        job.status = JobStatus::Dead;
                        job.error =
                            Some(format!("endpoint disabled, dropped: {}", disabled.reason));
                        METRICS.dead.fetch_add(1, Ordering::Relaxed);
                    }
                }
                self.save(&job);
                return Turn::Ended(Some(job.status));
            }
            // Its own time, and the subscription's pause if an endpoint
            // asked for one (`Retry-After`).
            let due = job
                .next_attempt_at_ms
                .max(endpoint.paused_until_ms.load(Ordering::SeqCst));
            let wait = due.saturating_sub(self.clock.now_ms());
            let permits = tokio::select! {
                _ = self.stop.cancelled() => return Turn::Ended(None), // stays pending in the store
                permits = async {
                    // Not even a zero sleep when due: the timer fires on its
                    // next millisecond tick, a delay every delivery would pay.
                    // Waiting for a pause or a rate limit is the endpoint's
                    // pace, not the CPU's: it stops counting in the backlog.
                    if wait > 0 {
                        drop(slot_wait.take());
                        tokio::time::sleep(Duration::from_millis(wait)).await;
                    }
                    // Its turn under the rate limit before any slot is taken:
                    // a paced subscription holds no slot another (on the
                    // same host) could use.
                    if let Some(rate) = &endpoint.rate {
                        let turn = rate.take(std::time::Instant::now());
                        if !turn.is_zero() {
                            drop(slot_wait.take());
                            tokio::time::sleep(turn).await;
                        }
                    }
                    let mine = endpoint.in_flight.acquire().await?;
                    let host = endpoint.host_in_flight.acquire().await?;
                    Ok::<_, tokio::sync::AcquireError>((mine, host))
                } => permits,
            };
            let Ok(_permits) = permits else {
                return Turn::Ended(None);
            };
            // Started: no longer acknowledged work waiting.
            drop(slot_wait.take());
            if endpoint.paused_until_ms.load(Ordering::SeqCst) > self.clock.now_ms() {
                continue; // paused while it waited for a slot
            }
            if let Some(since) = held_under
                && !self.still_held(since).await
            {
                if !self.stop.is_cancelled() {
                    tracing::debug!(job_id = %job.id, "left to the other nodes: this node's lease ran out");
                    self.free_for_others(job.id.clone());
                }
                return Turn::Ended(None);
            }

            // The span and the HTTP exchange's state (boxed) live only
            // during an attempt and what follows it: a task that waits (a
            // million pending deliveries may) holds neither, about 1.6 KB
            // less each.
            // A debug span: at the default level it is off, and costs
            // nothing per attempt (an enabled one formats its fields every
            // time). The warnings below name their job themselves.
            let span = tracing::debug_span!("delivery", job_id = %job.id, event_id = %job.event_id, subscription = %job.subscription_id);
            let (attempt, outcome) = Box::pin(self.attempt(&endpoint, &job.id, body.clone()))
                .instrument(span.clone())
                .await;
            endpoint.load.attempt_ended(attempt.latency_ms);
            // Nothing below awaits until the next turn of the loop.
            let _in_span = span.enter();
            let succeeded = matches!(outcome, Outcome::Delivered);
            if let Some(change) =
                self.health
                    .record(&endpoint.sub, succeeded, attempt.status, attempt.at_ms)
            {
                if let Some(reason) = &change.disabled {
                    tracing::warn!(subscription = %change.subscription, reason = %reason, "endpoint disabled");
                    let at = attempt.at_ms;
                    self.emit(operational::event(
                        operational::SUBSCRIPTION_DISABLED,
                        &format!("{}_{at}", change.subscription),
                        at,
                        serde_json::json!({"subscription_id": change.subscription, "reason": reason}),
                    ));
                }
                self.states.save_health(change.subscription, change.health);
            }
            job.attempts.push(attempt);
            job.attempts_in_round += 1;
            let retries_used = job.attempts_in_round - 1;
            match outcome {
                Outcome::Delivered => {
                    job.status = JobStatus::Delivered;
                    job.error = None;
                    tracing::debug!(attempts = job.attempts_in_round, "delivered");
                    METRICS.delivered.fetch_add(1, Ordering::Relaxed);
                    self.save(&job);
                    return Turn::Ended(Some(job.status));
                }
                Outcome::Retry { after_ms } if retries_used < endpoint.sub.retry.max_retries => {
                    if job.attempts_in_round == self.failing_after {
                        self.emit_about(
                            operational::DELIVERY_FAILING,
                            &job,
                            &format!("{}_{}", job.id, job.attempts.len()),
                        );
                    }
                    job.next_attempt_at_ms = self.clock.now_ms()
                        + match after_ms {
                            Some(asked) => asked.min(endpoint.sub.retry.max_retry_after_ms),
                            None => backoff_ms(&endpoint.sub, retries_used + 1),
                        };
                    if after_ms.is_some() {
                        // The endpoint said when: that time (capped), for
                        // every delivery of the subscription.
                        endpoint
                            .paused_until_ms
                            .fetch_max(job.next_attempt_at_ms, Ordering::SeqCst);
                    }
                    self.save(&job);
                    return Turn::Retry(job);
                }
                Outcome::Retry { .. } | Outcome::Refused => {
                    job.status = JobStatus::Dead;
                    let last = job.attempts.last();
                    job.error = Some(match last.and_then(|a| a.status) {
                        Some(s) if matches!(outcome, Outcome::Refused) => {
                            format!("endpoint answered {s}; not retried")
                        }
                        _ => format!(
                            "gave up after {} attempts: {}",
                            job.attempts_in_round,
                            last.and_then(|a| a.error.clone())
                                .or_else(|| last
                                    .and_then(|a| a.status)
                                    .map(|s| format!("status {s}")))
                                .unwrap_or_default()
                        ),
                    });
                    tracing::warn!(
                        job_id = %job.id,
                        event_id = %job.event_id,
                        subscription = %job.subscription_id,
                        error = job.error.as_deref().unwrap_or(""),
                        "delivery moved to dead letters"
                    );
                    METRICS.dead.fetch_add(1, Ordering::Relaxed);
                    self.save(&job);
                    self.emit_about(
                        operational::DELIVERY_EXHAUSTED,
                        &job,
                        &format!("{}_{}", job.id, job.attempts.len()),
                    );
                    return Turn::Ended(Some(job.status));
                }
            }
        }
    }

    fn save(&self, job: &Job) {
        if self.leases.is_some() && self.hold_unstored_state(job) {
            return;
        }
        self.states.save(job.clone());
    }
}
