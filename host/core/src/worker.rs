//! The task that takes accepted events through the pipeline and
//! aggregation, and on a tick closes ended windows and confirms outages.
//!
//! Every node runs one. The leader's closes windows and is the only writer
//! of location state. A standby's (on a shared store) stores the outcome of
//! its own events, window members included: the store keeps a member only
//! if its window has not closed, under a lock that closing takes too
//! ([`EventInbox::complete_own`]). Events of the tracked outage type, and
//! outcomes with a delivery in an ordered lane, it hands to the leader; it
//! never ticks.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::mpsc;

use crate::metrics::METRICS;

use crate::aggregate::Aggregator;
use crate::backlog::Backlog;
use crate::deliver::{Deliverer, StoredGate, goes_early};
use crate::model::{Job, JobStatus, OutageState, OutageUpdate, Processed, StoredEvent};
use crate::pipeline::Pipeline;
use crate::store::{EventInbox, Store, StoreError};

/// Events per store batch.
const STORE_CHUNK: usize = 512;

/// Events the worker takes from the ingest queue per round; the rest wait
/// for the next one, so ticks (windows, outages) are not held up behind a
/// deep queue.
const ROUND_EVENTS: usize = 16 * STORE_CHUNK;

/// How often a batch the store refused is tried again.
const STORE_RETRY: Duration = Duration::from_secs(1);

/// Told once a batch of accepted events has been through the pipeline:
/// `true` when they are in the store (the intake may then forget them),
/// `false` when storing failed until shutdown (the intake keeps them for the
/// next start).
pub type Ack = Box<dyn FnOnce(bool) + Send>;

/// Accepted events on their way to the pipeline. The worker does not know
/// what holds them durably until they are stored; it only acknowledges.
pub struct Accepted {
    pub events: Vec<StoredEvent>,
    pub ack: Option<Ack>,
}

/// The intake's way to the worker: what it queues counts in the ingest
/// backlog until the worker has stored its pipeline outcome.
pub struct ToPipeline {
    /// Taken at shutdown ([`ToPipeline::close`]), so that the worker sees
    /// the end of its queue.
    sender: std::sync::Mutex<Option<mpsc::UnboundedSender<Accepted>>>,
    backlog: Arc<Backlog>,
}

impl ToPipeline {
    pub fn new(sender: mpsc::UnboundedSender<Accepted>, backlog: Arc<Backlog>) -> ToPipeline {
        ToPipeline {
            sender: std::sync::Mutex::new(Some(sender)),
            backlog,
        }
    }

    /// Queues `accepted`; gives it back if the way is closed or the worker
    /// is gone.
    pub fn send(&self, accepted: Accepted) -> Result<(), Accepted> {
        let sender = self.sender.lock().unwrap_or_else(|p| p.into_inner());
        let Some(sender) = &*sender else {
            return Err(accepted);
        };
        // Counted first: the worker may take it off before `send` returns.
        let n = accepted.events.len();
        self.backlog.add(n);
        sender.send(accepted).map_err(|back| {
            self.backlog.remove(n);
            back.0
        })
    }

    /// Queues nothing more: the worker drains what it has and ends.
    pub fn close(&self) {
        self.sender.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}

pub struct Worker {
    pipeline: Arc<Pipeline>,
    aggregator: Arc<Aggregator>,
    store: Arc<dyn Store>,
    /// A shared store's inbox, where a standby stores its own outcomes.
    inbox: Option<Arc<dyn EventInbox>>,
    /// Outcomes are stored as the leader's (fenced by its epoch).
    leading: AtomicBool,
    /// Windows close and outages confirm on the tick.
    ticking: AtomicBool,
}

/// Why a standby leaves an outcome to the leader once the pipeline ran: a
/// delivery in an ordered lane (its slot is the leader's to give).
fn needs_leader(outcome: &Processed) -> bool {
    outcome.jobs.iter().any(|j| j.order.is_some())
}

/// Hands a batch's new jobs to the deliverer before the batch is stored
/// (see [`Deliverer::take_early`]): it may take outcomes out to store them
/// itself, and returns a gate when it took jobs of those left.
type Early<'a> = &'a dyn Fn(&mut Vec<Processed>) -> Option<StoredGate>;

/// An event as it was before the pipeline ran (to run again).
fn unrun(event: StoredEvent) -> StoredEvent {
    StoredEvent {
        errors: Vec::new(),
        plugin_decisions: Default::default(),
        ..event
    }
}

/// Counts plugin errors among stored outcomes; their pending jobs.
fn stored_jobs(outcomes: Vec<Processed>) -> Vec<Job> {
    let failed = outcomes
        .iter()
        .flat_map(|o| &o.jobs)
        .filter(|j| j.status == JobStatus::PluginError)
        .count();
    METRICS
        .plugin_errors
        .fetch_add(failed as u64, Ordering::Relaxed);
    METRICS
        .pipeline_events
        .fetch_add(outcomes.len() as u64, Ordering::Relaxed);
    outcomes
        .into_iter()
        .flat_map(|o| o.jobs)
        .filter(|j| j.status == JobStatus::Pending)
        .collect()
}

impl Worker {
    pub fn new(
        pipeline: Arc<Pipeline>,
        aggregator: Arc<Aggregator>,
        store: Arc<dyn Store>,
    ) -> Arc<Worker> {
        let inbox = store.clone().inbox();
        Arc::new(Worker {
            pipeline,
            aggregator,
            store,
            inbox,
            leading: AtomicBool::new(false),
            ticking: AtomicBool::new(false),
        })
    }

    /// This node leads: outcomes are stored as the leader's from now on.
    /// Call before queueing the events taken up on taking the lead.
    pub fn lead(&self) {
        self.leading.store(true, Ordering::SeqCst);
    }

    /// Windows and outage timers are this node's from now on: the events
    /// queued by then are placed before the first tick.
    pub fn start_ticking(&self) {
        self.ticking.store(true, Ordering::SeqCst);
    }

    /// Runs events through the pipeline and stores the outcome; returns the
    /// jobs to deliver now. Blocking (plugin calls, store writes).
    pub fn process(&self, events: Vec<StoredEvent>) -> Vec<Job> {
        let mut ready = Vec::new();
        self.process_all(events, |_, jobs| ready.extend(jobs), None);
        ready
    }

    /// [`Worker::process`], handing each chunk's jobs to `stored` (with
    /// the chunk's number of events) as soon as that chunk is in the store:
    /// a job need not wait for the chunks behind it. With `early`, a
    /// leader's (or a lone node's) chunk hands its jobs over before it is
    /// stored instead. Returns the events of chunks that could not be stored
    /// (to run again).
    fn process_all(
        &self,
        events: Vec<StoredEvent>,
        mut stored: impl FnMut(usize, Vec<Job>),
        early: Option<Early>,
    ) -> Vec<StoredEvent> {
        let mut failed = Vec::new();
        let mut events = events.into_iter().peekable();
        // A standby's own outcomes; a leader's (or a store of one node's
        // own) go the leader's way.
        let own_inbox = self
            .inbox
            .as_deref()
            .filter(|_| !self.leading.load(Ordering::SeqCst));
        while events.peek().is_some() {
            // One store batch per chunk: fewer, larger writes, bounded size.
            let chunk: Vec<StoredEvent> = events.by_ref().take(STORE_CHUNK).collect();
            let chunk_len = chunk.len();
            let outcome = match own_inbox {
                Some(inbox) => self.process_own_batch(inbox, chunk),
                None => self.process_batch(chunk.into_iter().map(|e| (e, None)).collect(), early),
            };
            match outcome {
                Ok(jobs) => stored(chunk_len, jobs),
                Err((e, events)) => {
                    tracing::error!(
                        error = %e,
                        events = events.len(),
                        "cannot record the pipeline outcome of a batch; it runs again when the store writes"
                    );
                    failed.extend(events);
                }
            }
        }
        failed
    }

    /// Runs each event (with, for derived events, the location state to store
    /// with it) and writes all outcomes in one atomic batch; returns the jobs
    /// to deliver (those `early` did not take before the write).
    /// On failure, the events are given back as they came (to run again).
    fn process_batch(
        &self,
        events: Vec<(StoredEvent, Option<OutageUpdate>)>,
        early: Option<Early>,
    ) -> Result<Vec<Job>, (StoreError, Vec<StoredEvent>)> {
        let mut outcomes: Vec<Processed> = Vec::with_capacity(events.len());
        // Location states decided in this batch, not yet in the store.
        let mut states: HashMap<String, OutageState> = HashMap::new();
        let mut events = events.into_iter();
        let mut failure = None;
        for (mut event, derived) in events.by_ref() {
            let jobs = self.pipeline.run(&mut event, self.aggregator.now_ms());
            let outage = match derived {
                Some(o) => Some(o),
                None => match self.aggregator.track_outage(&event, &states) {
                    Ok(o) => o,
                    Err(e) => {
                        failure = Some((e, Some(event)));
                        break;
                    }
                },
            };
            let mut out = self.aggregator.place(event, jobs);
            if let Some((state, _)) = &outage {
                states.insert(state.location.clone(), state.clone());
            }
            out.outage = outage;
            outcomes.push(out);
        }
        // Delivering while the store writes saves the write's time (~1 ms
        // at low rates) on every delivery's latency; on a shared store,
        // storing a job after its first attempt saves a row write.
        let before = outcomes.len();
        let gate = early
            .filter(|_| failure.is_none())
            .and_then(|early| early(&mut outcomes));
        // Taken to be stored with their first attempts' states.
        METRICS
            .pipeline_events
            .fetch_add((before - outcomes.len()) as u64, Ordering::Relaxed);
        // Until this batch lands (and is flushed) the intake keeps its
        // events: a crash re-runs it.
        let stored = match failure {
            Some(failed) => Err(failed),
            None => self
                .store
                .complete_pipeline(&outcomes)
                .map_err(|e| (e, None)),
        };
        let handed_early = gate.is_some();
        if let Some(gate) = gate {
            gate.open(stored.is_ok());
        }
        if let Err((e, current)) = stored {
            let back = outcomes
                .into_iter()
                .map(|o| unrun(o.event))
                .chain(current.map(unrun))
                .chain(events.map(|(event, _)| event))
                .collect();
            return Err((e, back));
        }
        let placed: usize = outcomes.iter().map(|o| o.window_members.len()).sum();
        METRICS
            .window_events
            .fetch_add(placed as i64, Ordering::Relaxed);
        let mut jobs = stored_jobs(outcomes);
        if handed_early {
            jobs.retain(|j| !goes_early(j));
        }
        Ok(jobs)
    }

    /// A standby's batch of its own events: runs each, stores the outcomes
    /// that touch no leader's state and hands the other events to the
    /// leader, in one transaction. An event the leader took meanwhile (this
    /// node's lease ran out) is the leader's: its outcome here is dropped.
    fn process_own_batch(
        &self,
        inbox: &dyn EventInbox,
        events: Vec<StoredEvent>,
    ) -> Result<Vec<Job>, (StoreError, Vec<StoredEvent>)> {
        let mut outcomes = Vec::with_capacity(events.len());
        let mut handed = Vec::new();
        for mut event in events {
            // Location state has one writer: plugins would run twice.
            if self.aggregator.tracks_outage(&event) {
                handed.push(event);
                continue;
            }
            let jobs = self.pipeline.run(&mut event, self.aggregator.now_ms());
            let outcome = self.aggregator.place(event, jobs);
            if needs_leader(&outcome) {
                handed.push(unrun(outcome.event));
            } else {
                outcomes.push(outcome);
            }
        }
        let handed_ids: Vec<&str> = handed.iter().map(|e| e.id.as_str()).collect();
        match inbox.complete_own(&outcomes, &handed_ids) {
            Ok(done) => {
                METRICS
                    .pipeline_handed_over
                    .fetch_add(done.handed, Ordering::Relaxed);
                if let Some(closed_through) = done.closed_through_ms {
                    self.aggregator.closed_through_at_least(closed_through);
                }
                if done.late_for_window > 0 {
                    tracing::debug!(
                        events = done.late_for_window,
                        "handed to the leader: a window they were placed in had closed"
                    );
                }
                let before = outcomes.len();
                outcomes.retain(|o| done.stored.contains(&o.event.id));
                let taken = before - outcomes.len() - done.late_for_window;
                if taken > 0 {
                    tracing::debug!(
                        events = taken,
                        "outcomes not stored: the leader took those events (this node's lease ran out)"
                    );
                }
                Ok(stored_jobs(outcomes))
            }
            Err(e) => Err((
                e,
                outcomes
                    .into_iter()
                    .map(|o| unrun(o.event))
                    .chain(handed)
                    .collect(),
            )),
        }
    }

    /// Emits confirmed outages and closes ended windows; returns the jobs to
    /// deliver. Blocking.
    pub fn tick(&self) -> Result<Vec<Job>, StoreError> {
        // Each derived event and its location's confirmed state land in one
        // batch: it is emitted once, or (after a crash) again with the same id.
        let confirmations = self.aggregator.due_confirmations()?;
        let mut ready = if confirmations.is_empty() {
            Vec::new()
        } else {
            self.process_batch(
                confirmations
                    .into_iter()
                    .map(|(event, state)| (event, Some(state)))
                    .collect(),
                None,
            )
            .map_err(|(e, _)| e)?
        };
        let closed = self.aggregator.close_due()?;
        if !closed.is_empty() && self.inbox.is_some() {
            // Standbys place members too: the gauge is the store's count.
            METRICS
                .window_events
                .store(self.store.window_member_count()? as i64, Ordering::Relaxed);
        }
        ready.extend(closed);
        Ok(ready)
    }

    /// Serves until the ingest side of `from_ingest` is dropped.
    pub async fn run(
        self: Arc<Self>,
        mut from_ingest: mpsc::UnboundedReceiver<Accepted>,
        deliverer: Arc<Deliverer>,
        tick_every: Duration,
    ) {
        let mut ticker = tokio::time::interval(tick_every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut tick_failing = false;
        // Whether this node ticks (it leads); until then the ticker only
        // wakes the loop to notice it.
        let mut ticks = false;
        let mut catching_up = false;
        loop {
            if !ticks && self.ticking.load(Ordering::SeqCst) {
                ticks = true;
                // Events queued before the first tick (left unfinished by a
                // crash or by an earlier leader) are placed first: their
                // windows may be due already, and closing one first would
                // push them into the next.
                catching_up = !from_ingest.is_empty();
            }
            let this = self.clone();
            let result = tokio::select! {
                received = from_ingest.recv() => {
                    let Some(first) = received else { break };
                    // Take more of what queued up, up to a round's worth:
                    // one blocking hop per round.
                    let mut events = first.events;
                    let mut acks: Vec<Ack> = first.ack.into_iter().collect();
                    while events.len() < ROUND_EVENTS
                        && let Ok(more) = from_ingest.try_recv()
                    {
                        events.extend(more.events);
                        acks.extend(more.ack);
                    }
                    catching_up = false;
                    let to_deliverer = deliverer.clone();
                    let backlog = deliverer.backlog();
                    let hand_over = move |events: usize, jobs: Vec<Job>| {
                        for job in jobs {
                            to_deliverer.take_new(job);
                        }
                        // Its jobs count on their own now (while they
                        // wait for a slot).
                        backlog.remove(events);
                    };
                    // One blocking hop runs a round's events, handing jobs
                    // early where the deliverer takes them.
                    let run = |events: Vec<StoredEvent>| {
                        let (this, handing, early_to) =
                            (self.clone(), hand_over.clone(), deliverer.clone());
                        tokio::task::spawn_blocking(move || {
                            let early =
                                |outcomes: &mut Vec<Processed>| early_to.take_early(outcomes);
                            this.process_all(events, handing, Some(&early))
                        })
                    };
                    let mut processed = run(events).await;
                    // Batches the store did not take run again (their ids
                    // stay claimed) once it writes: the intake recovers it.
                    // At shutdown they stay with the intake for next start.
                    while let Ok(failed) = &mut processed
                        && !failed.is_empty()
                        && !from_ingest.is_closed()
                    {
                        tokio::time::sleep(STORE_RETRY).await;
                        processed = run(std::mem::take(failed)).await;
                    }
                    if let Ok(failed) = &processed {
                        // Left for the next start.
                        deliverer.backlog().remove(failed.len());
                    }
                    let all_stored = matches!(&processed, Ok(failed) if failed.is_empty());
                    for ack in acks {
                        ack(all_stored);
                    }
                    processed.map(|_| Ok(Vec::new()))
                }
                _ = ticker.tick(), if !catching_up => {
                    if !ticks {
                        continue;
                    }
                    tokio::task::spawn_blocking(move || this.tick()).await
                }
            };
            match result {
                Ok(Ok(jobs)) => {
                    tick_failing = false;
                    for job in jobs {
                        deliverer.take_new(job);
                    }
                }
                Ok(Err(e)) => {
                    // Once per failure, not once per tick.
                    if !tick_failing {
                        tracing::error!(error = %e, "closing windows failed; retried every tick");
                    }
                    tick_failing = true;
                    continue;
                }
                Err(e) => {
                    tracing::error!(error = %e, "pipeline batch failed; its events resume at next start")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};
    use crate::config::Config;
    use crate::node::Node;
    use hookhost_plugin_runtime::{Registry, Runtime};
    use serde_json::{Value, json};

    const HOUR: Duration = Duration::from_secs(3600);
    /// 2025-12-15T10:30:00Z
    const T0: u64 = 1_765_794_600_000;

    struct Setup {
        worker: Arc<Worker>,
        clock: Arc<ManualClock>,
        // Dropped before the folder: the store lets go of its files first.
        _node: Node,
        _dir: tempfile::TempDir,
    }

    fn setup(
        config: &str,
        dir: Option<tempfile::TempDir>,
        clock: Option<Arc<ManualClock>>,
    ) -> Setup {
        let dir = dir.unwrap_or_else(|| tempfile::tempdir().unwrap());
        let mut config = Config::parse(config).unwrap();
        config.server.data_dir = dir.path().to_owned();
        let clock = clock.unwrap_or_else(|| Arc::new(ManualClock::new(T0)));
        let registry = Registry::new(Runtime::new(&config.plugins).unwrap());
        // The same assembly as the server's, on a clock moved by hand.
        let node = Node::open_with_clock(Arc::new(config), registry, clock.clone()).unwrap();
        Setup {
            worker: node.worker.clone(),
            clock,
            _node: node,
            _dir: dir,
        }
    }

    const SUBSCRIBED: &str = r#"
[[subscriptions]]
id = "acme"
url = "http://hooks.example.com/"
types = ["*"]
seed = "s"
"#;

    fn connection(clock: &ManualClock, location: &str, state: &str, device: &str) -> StoredEvent {
        let now = clock.now_ms();
        let timestamp = crate::clock::rfc3339_seconds(now);
        StoredEvent {
            id: crate::event_json::new_event_id(),
            event_type: "connection".into(),
            timestamp: timestamp.clone(),
            data: json!({
                "type": "connection_changed",
                "location_id": location,
                "location_name": "#1234 Office Building A",
                "connection": state,
                "timestamp": timestamp,
                "devices": [{"device_id": device, "device_nr": "1"}]
            })
            .to_string(),
            received_at_ms: now,
            errors: Vec::new(),
            plugin_decisions: Default::default(),
        }
    }

    /// Moves the clock in steps, ticking as the server would; returns the
    /// jobs that became deliverable.
    fn run_for(s: &Setup, total: Duration, step: Duration) -> Vec<Job> {
        let mut jobs = Vec::new();
        let mut passed = Duration::ZERO;
        while passed < total {
            s.clock.advance(step);
            passed += step;
            jobs.extend(s.worker.tick().unwrap());
        }
        jobs
    }

    fn of_type<'a>(jobs: &'a [Job], t: &str) -> Vec<&'a Job> {
        jobs.iter().filter(|j| j.event_type == t).collect()
    }

    #[test]
    fn two_hour_outage_is_confirmed_once() {
        let s = setup(SUBSCRIBED, None, None);
        s.worker
            .process(vec![connection(&s.clock, "L1", "offline", "d1")]);
        // Still offline after the connection window; a second offline event
        // for another device joins the same outage.
        let mut jobs = run_for(&s, Duration::from_secs(30 * 60), Duration::from_secs(60));
        s.worker
            .process(vec![connection(&s.clock, "L1", "offline", "d2")]);
        jobs.extend(run_for(&s, 4 * HOUR, Duration::from_secs(60)));
        let confirmed = of_type(&jobs, "connection_confirmed");
        assert_eq!(confirmed.len(), 1, "{jobs:#?}");
        let data: Value = serde_json::from_str(&confirmed[0].data).unwrap();
        assert_eq!(data["connection"], "offline");
        assert_eq!(data["location_id"], "L1");
        assert!(data.get("type").is_none(), "no v1 data.type: {data}");
        // Confirmed 2 h after hookhost learned of the outage.
        assert_eq!(
            data["timestamp"],
            crate::clock::rfc3339_seconds(T0 + 2 * 3_600_000)
        );
        let devices: Vec<&str> = data["devices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["device_id"].as_str().unwrap())
            .collect();
        assert_eq!(devices, ["d1", "d2"]);
        // The confirmed event itself went through a 15-minute window.
        assert_eq!(confirmed[0].merged_events.len(), 1);
        // Recovery is not announced, and a long outage is not re-confirmed.
        s.worker
            .process(vec![connection(&s.clock, "L1", "online", "d1")]);
        let later = run_for(&s, 4 * HOUR, Duration::from_secs(5 * 60));
        assert!(of_type(&later, "connection_confirmed").is_empty());
    }

    /// With `ordering`, a window's merged delivery takes its place in its
    /// key's order when the window closes: after the direct deliveries made
    /// before, before those made after.
    #[test]
    fn a_window_delivery_takes_its_place_in_the_key_order_when_it_closes() {
        let s = setup(
            &format!("{SUBSCRIBED}ordering = {{ key = \"/location_id\" }}\n"),
            None,
            None,
        );
        let report = |location: &str| StoredEvent {
            id: crate::event_json::new_event_id(),
            event_type: "report".into(),
            timestamp: crate::clock::rfc3339_seconds(s.clock.now_ms()),
            data: json!({"location_id": location}).to_string(),
            received_at_ms: s.clock.now_ms(),
            errors: Vec::new(),
            plugin_decisions: Default::default(),
        };
        let windowed = s
            .worker
            .process(vec![connection(&s.clock, "L1", "offline", "d1")]);
        assert!(windowed.is_empty(), "a connection waits in its window");
        let before = s.worker.process(vec![report("L1")]);
        let closed = of_type(&run_for(&s, HOUR, Duration::from_secs(60)), "connection")
            .into_iter()
            .cloned()
            .collect::<Vec<_>>();
        let after = s.worker.process(vec![report("L1")]);
        let slot = |jobs: &[Job]| {
            assert_eq!(jobs.len(), 1, "{jobs:#?}");
            jobs[0].order.clone().expect("ordered")
        };
        let (before, window, after) = (slot(&before), slot(&closed), slot(&after));
        assert!(before.seq < window.seq && window.seq < after.seq);
        assert!([&before, &window, &after].iter().all(|o| o.key == "L1"));
        // Without the key: not ordered.
        let keyless = s.worker.process(vec![StoredEvent {
            data: "{}".into(),
            ..report("L1")
        }]);
        assert_eq!(keyless[0].order, None);
    }

    #[test]
    fn outage_ending_within_two_hours_is_not_confirmed() {
        let s = setup(SUBSCRIBED, None, None);
        s.worker
            .process(vec![connection(&s.clock, "L1", "offline", "d1")]);
        let mut jobs = run_for(&s, HOUR, Duration::from_secs(60));
        s.worker
            .process(vec![connection(&s.clock, "L1", "online", "d1")]);
        jobs.extend(run_for(&s, 3 * HOUR, Duration::from_secs(60)));
        assert!(
            of_type(&jobs, "connection_confirmed").is_empty(),
            "{jobs:#?}"
        );
        // The connection events themselves were delivered (aggregated).
        assert_eq!(of_type(&jobs, "connection").len(), 2);
    }

    #[test]
    fn late_offline_event_does_not_undo_a_newer_online_state() {
        let s = setup(SUBSCRIBED, None, None);
        let stale = connection(&s.clock, "L1", "offline", "d1");
        s.clock.advance(Duration::from_secs(10));
        s.worker
            .process(vec![connection(&s.clock, "L1", "online", "d1")]);
        s.worker.process(vec![stale]);
        let jobs = run_for(&s, 3 * HOUR, Duration::from_secs(60));
        assert!(of_type(&jobs, "connection_confirmed").is_empty());
    }

    /// `event` with its timestamp (and `data.timestamp`) set to `at`.
    fn stamped(mut event: StoredEvent, at: &str) -> StoredEvent {
        event.timestamp = at.into();
        let mut data: Value = serde_json::from_str(&event.data).unwrap();
        data["timestamp"] = json!(at);
        event.data = data.to_string();
        event
    }

    #[test]
    fn timestamps_with_offsets_order_the_state_by_the_instant_they_name() {
        let s = setup(SUBSCRIBED, None, None);
        // Offline at 10:30:10Z, written in a producer's local time (-05:00);
        // then, delivered late, an online event from 10:30:05Z: older, so
        // ignored (as text it would sort after the offline one).
        let offline = stamped(
            connection(&s.clock, "L1", "offline", "d1"),
            "2025-12-15T05:30:10-05:00",
        );
        let online = stamped(
            connection(&s.clock, "L1", "online", "d1"),
            "2025-12-15T10:30:05Z",
        );
        s.worker.process(vec![offline]);
        s.worker.process(vec![online]);
        let jobs = run_for(&s, 3 * HOUR, Duration::from_secs(60));
        assert_eq!(of_type(&jobs, "connection_confirmed").len(), 1, "{jobs:#?}");
    }

    #[test]
    fn a_far_future_timestamp_does_not_freeze_a_locations_state() {
        let s = setup(SUBSCRIBED, None, None);
        let bogus = stamped(
            connection(&s.clock, "L1", "online", "d1"),
            "9999-12-31T23:59:59Z",
        );
        let bogus_id = bogus.id.clone();
        let jobs = s.worker.process(vec![bogus]);
        assert!(jobs.is_empty(), "connection is aggregated: {jobs:#?}");
        s.clock.advance(Duration::from_secs(10));
        s.worker
            .process(vec![connection(&s.clock, "L1", "offline", "d1")]);
        let jobs = run_for(&s, 3 * HOUR, Duration::from_secs(60));
        assert_eq!(of_type(&jobs, "connection_confirmed").len(), 1, "{jobs:#?}");
        // The bogus event itself was still delivered, in its window.
        assert!(
            of_type(&jobs, "connection")
                .iter()
                .any(|j| j.merged_events.contains(&bogus_id)),
            "{jobs:#?}"
        );
    }

    #[test]
    fn outage_timer_and_open_windows_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(T0));
        let first = setup(SUBSCRIBED, Some(dir), Some(clock.clone()));
        first
            .worker
            .process(vec![connection(&clock, "L1", "offline", "d1")]);
        let Setup {
            worker,
            _node: node,
            _dir: dir,
            ..
        } = first;
        // Closes sled (no flush needed: same process, same files).
        drop((worker, node));
        clock.advance(3 * HOUR); // the host was down past the window and the timer
        let second = setup(SUBSCRIBED, Some(dir), Some(clock.clone()));
        let mut jobs = second.worker.tick().unwrap();
        // The window that ended while down is delivered at once.
        assert_eq!(of_type(&jobs, "connection").len(), 1);
        jobs.extend(run_for(&second, HOUR, Duration::from_secs(60)));
        assert_eq!(of_type(&jobs, "connection_confirmed").len(), 1);
    }

    #[test]
    fn direct_types_and_direct_subscriptions_are_not_delayed() {
        let config = format!(
            "{SUBSCRIBED}\n[[subscriptions]]\nid = \"direct\"\nurl = \"http://hooks.example.com/\"\ntypes = [\"*\"]\nseed = \"s\"\nintervals = {{ \"*\" = \"direct\" }}\n"
        );
        let s = setup(&config, None, None);
        let mut report = connection(&s.clock, "L1", "offline", "d1");
        report.event_type = "report".into();
        let jobs = s
            .worker
            .process(vec![report, connection(&s.clock, "L1", "offline", "d1")]);
        let subs: Vec<(&str, &str)> = jobs
            .iter()
            .map(|j| (j.subscription_id.as_str(), j.event_type.as_str()))
            .collect();
        assert_eq!(
            subs,
            [
                ("acme", "report"),
                ("direct", "report"),
                ("direct", "connection")
            ]
        );
    }

    #[test]
    fn an_event_never_joins_a_window_that_closed() {
        let s = setup(SUBSCRIBED, None, None);
        // Received in the first minute's window but processed after it closed
        // (a pipeline lag): it must not reuse the closed window's delivery id.
        let early = connection(&s.clock, "L1", "offline", "d1");
        let mut late = early.clone();
        late.id = "evt_late".into();
        s.worker.process(vec![early]);
        let first = run_for(&s, Duration::from_secs(5 * 60), Duration::from_secs(1));
        s.worker.process(vec![late]);
        let second = run_for(&s, Duration::from_secs(5 * 60), Duration::from_secs(1));
        assert_eq!(first.len(), 1);
        assert_eq!(second.len(), 1);
        assert_ne!(first[0].id, second[0].id);
        assert_eq!(second[0].merged_events, ["evt_late"]);
    }
}
