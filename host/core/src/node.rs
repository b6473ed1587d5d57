//! A [`Node`]: the core assembled from a config — store, intake, subscriptions,
//! pipeline, aggregation, worker and deliverer — the one place that wiring is
//! written. The server, the tests and the benches build on it.
//!
//! Lifecycle: [`Node::open`] opens the store and the intake (reading back
//! what a crash left) without starting anything; [`Node::start`] spawns the
//! worker, the intake's upkeep and delivery and returns a [`Running`] node;
//! [`Running::shutdown`] finishes the pipeline queue, lets attempts in flight
//! finish (up to the grace period), flushes and retires the intake's journal.
//!
//! On a shared store (`cluster`) every node runs the pipeline of the events
//! it admits and delivers; windows, outage timers, ordered lanes and
//! retention start when the node takes the lead, which may be at once or
//! later (see [`Worker`]).

use std::sync::Arc;
use std::time::Duration;

use hookhost_plugin_runtime::Registry;
use tokio::sync::mpsc;

use crate::aggregate::Aggregator;
use crate::clock::{Clock, SystemClock};
use crate::cluster::Membership;
use crate::config::Config;
use crate::config::StoreBackend;
use crate::deliver::Deliverer;
use crate::intake::{Intake, IntakeError, JournalIntake, StoreIntake};
use crate::pipeline::Pipeline;
use crate::retention::Retention;
use crate::store::postgres::PgStore;
use crate::store::sled::{SledSettings, SledStore};
use crate::store::{Store, StoreError};
use crate::subscriptions::Subscriptions;
use crate::worker::{Accepted, Worker};

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("cannot create {path}: {source}")]
    DataDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("intake: {0}")]
    Intake(#[from] IntakeError),
    #[error("cluster: {0}")]
    Cluster(String),
}

/// The core's parts, opened and not yet running.
pub struct Node {
    pub config: Arc<Config>,
    pub registry: Arc<Registry>,
    pub store: Arc<dyn Store>,
    pub intake: Arc<dyn Intake>,
    pub subscriptions: Arc<Subscriptions>,
    pub deliverer: Arc<Deliverer>,
    pub pipeline: Arc<Pipeline>,
    pub worker: Arc<Worker>,
    pub membership: Arc<Membership>,
    aggregator: Arc<Aggregator>,
    /// The intake when the store is its own queue (its sweep runs while leading).
    store_intake: Option<Arc<StoreIntake>>,
    clock: Arc<dyn Clock>,
    from_intake: mpsc::UnboundedReceiver<Accepted>,
    resumed_events: usize,
}

/// The store `[store]` names: sled files in `server.data_dir` (locked by
/// sled), or a PostgreSQL schema (migrated on open). A node joins it to
/// the cluster sharing that schema ([`Node::open`]); opened here alone it
/// is a tool's (nothing fenced).
pub fn open_store(config: &Config) -> Result<Arc<dyn Store>, NodeError> {
    Ok(match config.store.backend {
        StoreBackend::Sled => Arc::new(SledStore::open_with(
            &config.server.data_dir,
            SledSettings {
                cache_mib: config.server.cache_mib,
                compress: config.server.compress_store,
            },
        )?),
        StoreBackend::Postgres => {
            let store = PgStore::open(&config.store.postgres_settings())?;
            Arc::new(store)
        }
    })
}

impl Node {
    /// Opens the node's data folder (`server.data_dir`) on the system clock.
    pub fn open(config: Arc<Config>, registry: Arc<Registry>) -> Result<Node, NodeError> {
        Node::open_with_clock(config, registry, Arc::new(SystemClock))
    }

    /// [`Node::open`] with windows and outage timers on `clock`.
    pub fn open_with_clock(
        config: Arc<Config>,
        registry: Arc<Registry>,
        clock: Arc<dyn Clock>,
    ) -> Result<Node, NodeError> {
        let data_dir = &config.server.data_dir;
        std::fs::create_dir_all(data_dir).map_err(|source| NodeError::DataDir {
            path: data_dir.clone(),
            source,
        })?;
        let store = open_store(&config)?;
        if let Some(cluster) = store.clone().cluster() {
            cluster.join(&crate::cluster::node_id(&config), config.cluster.lease_ms)?;
        }
        // Once, for a store made before deliveries were indexed for listing.
        match store.index_for_listing() {
            Ok(0) => {}
            Ok(n) => tracing::info!(deliveries = n, "older deliveries indexed for listing"),
            Err(e) => {
                tracing::warn!(error = %e, "cannot index older deliveries for listing; retried at next start")
            }
        }
        let subscriptions = Subscriptions::open(config.clone(), store.clone())?;
        let deliverer =
            Deliverer::new(store.clone(), &config, subscriptions.clone(), clock.clone());
        let pipeline = Arc::new(Pipeline::new(
            registry.clone(),
            config.clone(),
            subscriptions.clone(),
        ));
        let aggregator = Arc::new(Aggregator::new(
            config.clone(),
            subscriptions.clone(),
            store.clone(),
            clock.clone(),
        )?);
        let worker = Worker::new(pipeline.clone(), aggregator.clone(), store.clone());
        let (to_worker, from_intake) = mpsc::unbounded_channel();
        let to_worker = crate::worker::ToPipeline::new(to_worker, deliverer.backlog());
        // A store that is its own queue (PostgreSQL) takes events straight
        // in; the embedded one has the journal in front of it.
        let mut store_intake = None;
        let (intake, resumed_events): (Arc<dyn Intake>, usize) = match store.clone().inbox() {
            Some(inbox) => {
                let intake = StoreIntake::open(
                    inbox,
                    store.clone(),
                    config.server.pipeline_backlog,
                    to_worker,
                )?;
                store_intake = Some(intake.clone());
                // Its unfinished events are taken up by the leader's sweep.
                (intake, 0)
            }
            None => {
                let (intake, resumed) = JournalIntake::open(
                    &config
                        .server
                        .journal_dir
                        .clone()
                        .unwrap_or_else(|| data_dir.join("journal")),
                    config.server.pipeline_backlog,
                    store.clone(),
                    to_worker,
                )?;
                (intake, resumed)
            }
        };
        let membership = match (store.clone().cluster(), &store_intake) {
            (Some(cluster), Some(_)) => Membership::shared(&config, cluster, registry.clone()),
            _ => Membership::single(&config),
        };
        membership
            .agree_on_config(&config)
            .map_err(NodeError::Cluster)?;
        // hookhost's own events enter like ingested ones: durable first. They
        // may come from any thread (the plugin watcher's too): the runtime
        // the node was opened on runs them.
        // A weak handle: the registry (and its hook) may outlive the node,
        // and must not keep the intake, and with it the store's files, open.
        let operational: Arc<dyn Fn(crate::model::StoredEvent) + Send + Sync> = {
            let intake = Arc::downgrade(&intake);
            let runtime = tokio::runtime::Handle::try_current().ok();
            Arc::new(move |event: crate::model::StoredEvent| {
                let (Some(runtime), Some(intake)) = (&runtime, intake.upgrade()) else {
                    return;
                };
                runtime.spawn(async move {
                    let id = event.id.clone();
                    let at = event.received_at_ms;
                    if let Err(e) = intake.accept(vec![event], vec![true], None, at).await {
                        tracing::warn!(event_id = %id, error = %e, "operational event not accepted");
                    }
                });
            })
        };
        deliverer.on_operational({
            let operational = operational.clone();
            move |event| operational(event)
        });
        registry.on_refused(move |plugin, failure, serving| {
            operational(crate::operational::event(
                crate::operational::PLUGIN_REFUSED,
                &format!("{plugin}_{}", failure.at_unix_ms),
                failure.at_unix_ms,
                serde_json::json!({
                    "plugin": plugin,
                    "error": failure.error,
                    "previous_version_serving": serving,
                }),
            ));
        });
        Ok(Node {
            config,
            registry,
            store,
            intake,
            subscriptions,
            deliverer,
            pipeline,
            worker,
            membership,
            aggregator,
            store_intake,
            clock,
            from_intake,
            resumed_events,
        })
    }

    /// Starts the intake's checkpoints, the worker and, once this node leads
    /// (at once unless another node of a cluster does), the worker's ticks,
    /// delivery (pending jobs load from the store as room allows) and
    /// retention. Needs a Tokio runtime.
    pub fn start(self) -> Result<Running, NodeError> {
        let leader_tasks: Arc<std::sync::Mutex<Option<LeaderTasks>>> = Default::default();
        let upkeep = tokio::spawn(self.intake.clone().maintain(
            Duration::from_millis(self.config.server.checkpoint_ms),
            {
                // A reopened store may hold pending jobs the deliverer
                // does not know of (states lost with the failure).
                let (deliverer, membership) = (self.deliverer.clone(), self.membership.clone());
                Box::new(move || {
                    if membership.leads() {
                        deliverer.reload();
                    }
                })
            },
        ));
        let on_lead = {
            let (store, deliverer, worker) = (
                self.store.clone(),
                self.deliverer.clone(),
                self.worker.clone(),
            );
            let (subscriptions, aggregator) = (self.subscriptions.clone(), self.aggregator.clone());
            let (config, clock) = (self.config.clone(), self.clock.clone());
            let journal_events = self.resumed_events;
            let store_intake = self.store_intake.clone();
            let tasks = leader_tasks.clone();
            let runtime = tokio::runtime::Handle::current();
            move || {
                // What an earlier leader changed since this node opened.
                if let Err(e) = subscriptions
                    .reload()
                    .and_then(|()| aggregator.reload())
                    .and_then(|()| deliverer.reload_health())
                {
                    tracing::error!(error = %e, "cannot read the store's state on taking the lead; using what was read at start");
                }
                let resumed_jobs = store
                    .pending_count()
                    .inspect_err(|e| {
                        tracing::warn!(error = %e, "cannot count pending deliveries; reading the queue");
                    })
                    .ok();
                // Events queued from now on are stored as the leader's.
                worker.lead();
                // On a shared store: every event still to run, queued for
                // the worker before it ticks (see `Worker::run`).
                let resumed_events = match &store_intake {
                    None => journal_events,
                    Some(intake) => intake.take_up_all().unwrap_or_else(|e| {
                        tracing::warn!(error = %e, "cannot take up unfinished events now; the sweep retries");
                        0
                    }),
                };
                tracing::info!(
                    jobs = resumed_jobs,
                    events = resumed_events,
                    "resuming unfinished work"
                );
                let _enter = runtime.enter();
                deliverer.resume(resumed_jobs);
                worker.start_ticking();
                let retention =
                    tokio::spawn(Retention::new(store, config.retention.clone(), clock).run());
                *tasks.lock().unwrap_or_else(|p| p.into_inner()) = Some(LeaderTasks { retention });
            }
        };
        // Leading from the start (sled, or the first node on a database):
        // the pipeline and delivery run before the first request.
        let on_lead: Option<crate::cluster::OnLead> = if self.membership.try_lead_now() {
            on_lead();
            None
        } else {
            Some(Box::new(on_lead))
        };
        // The pipeline and shared delivery run on every node, leading or not.
        let worker = tokio::spawn(self.worker.clone().run(
            self.from_intake,
            self.deliverer.clone(),
            Duration::from_millis(self.config.aggregation.tick_ms),
        ));
        self.deliverer
            .share(Duration::from_millis(self.config.cluster.sweep_ms));
        let cluster = self.store_intake.as_ref().map(|intake| {
            tokio::spawn(
                self.membership
                    .clone()
                    .run(self.config.clone(), intake.clone(), on_lead),
            )
        });
        Ok(Running {
            config: self.config,
            registry: self.registry,
            store: self.store,
            intake: self.intake,
            subscriptions: self.subscriptions,
            deliverer: self.deliverer,
            pipeline: self.pipeline,
            membership: self.membership,
            worker,
            leader_tasks,
            upkeep,
            cluster,
        })
    }
}

/// What runs only on the leading node.
struct LeaderTasks {
    retention: tokio::task::JoinHandle<()>,
}

/// A started node: what the HTTP layer serves from.
pub struct Running {
    pub config: Arc<Config>,
    pub registry: Arc<Registry>,
    pub store: Arc<dyn Store>,
    pub intake: Arc<dyn Intake>,
    pub subscriptions: Arc<Subscriptions>,
    pub deliverer: Arc<Deliverer>,
    pub pipeline: Arc<Pipeline>,
    pub membership: Arc<Membership>,
    worker: tokio::task::JoinHandle<()>,
    /// Set once this node leads.
    leader_tasks: Arc<std::sync::Mutex<Option<LeaderTasks>>>,
    upkeep: tokio::task::JoinHandle<()>,
    /// Heartbeats, taking the lead and sweeping (a shared store only).
    cluster: Option<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Call once nothing accepts events any more: the worker drains its
    /// queue and ends, attempts in flight get `server.shutdown_grace_ms`,
    /// the store is flushed and the journal retired.
    pub async fn shutdown(self) -> Result<(), StoreError> {
        tracing::info!("stopped taking requests; finishing the pipeline queue");
        if let Some(cluster) = &self.cluster {
            cluster.abort();
        }
        self.intake.stop_queueing();
        let leader_tasks = self
            .leader_tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let delivering = leader_tasks.is_some() || self.deliverer.shares();
        // The worker's last jobs first: they go to delivery.
        let _ = self.worker.await;
        let retention = leader_tasks.map(|tasks| tasks.retention);
        if delivering {
            let grace = Duration::from_millis(self.config.server.shutdown_grace_ms);
            if !self.deliverer.shutdown(grace).await {
                tracing::warn!(
                    grace_ms = grace.as_millis() as u64,
                    "attempts still in flight at the deadline; they resume at next start"
                );
            }
        }
        if let Some(retention) = retention {
            retention.abort();
            let _ = retention.await;
        }
        self.upkeep.abort();
        let _ = self.upkeep.await;
        self.store.close()?;
        let membership = self.membership.clone();
        let _ = tokio::task::spawn_blocking(move || membership.leave()).await;
        // Everything the worker stored is flushed: the journal can go.
        let intake = self.intake.clone();
        match tokio::task::spawn_blocking(move || intake.retire()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "journal left in place; it is read at next start")
            }
            Err(e) => {
                tracing::warn!(error = %e, "journal left in place; it is read at next start")
            }
        }
        tracing::info!("store flushed; bye");
        Ok(())
    }
}
