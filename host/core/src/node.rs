//! A [`Node`]: the core assembled from a config — store, intake, subscriptions,
//! pipeline, aggregation, worker and deliverer — the one place that wiring is
//! written. The server, the tests and the benches build on it.
//!
//! Lifecycle: [`Node::open`] opens the store and the intake (reading back
//! what a crash left) without starting anything; [`Node::start`] spawns the
//! worker, the intake's upkeep and delivery and returns a [`Running`] node;
//! [`Running::shutdown`] finishes the pipeline queue, lets attempts in flight
//! finish (up to the grace period), flushes and retires the intake's journal.

use std::sync::Arc;
use std::time::Duration;

use hookhost_plugin_runtime::Registry;
use tokio::sync::mpsc;

use crate::aggregate::Aggregator;
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::config::StoreBackend;
use crate::deliver::Deliverer;
use crate::intake::{Intake, IntakeError, JournalIntake, StoreIntake};
use crate::pipeline::Pipeline;
use crate::retention::Retention;
use crate::store::postgres::{PgSettings, PgStore};
use crate::store::sled::SledStore;
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
    clock: Arc<dyn Clock>,
    from_intake: mpsc::UnboundedReceiver<Accepted>,
    resumed_events: usize,
}

/// The store `[store]` names for a node: sled files in `server.data_dir`
/// (locked by sled), or a PostgreSQL schema (migrated on open, claimed by
/// this node).
pub fn open_store(config: &Config) -> Result<Arc<dyn Store>, NodeError> {
    Ok(match config.store.backend {
        StoreBackend::Sled => Arc::new(SledStore::open_with_cache(
            &config.server.data_dir,
            config.server.cache_mib,
        )?),
        StoreBackend::Postgres => {
            let store = PgStore::open(&PgSettings {
                url: config.store.url.clone().unwrap_or_default(),
                schema: config.store.schema.clone(),
                pool_size: config.store.pool_size,
            })?;
            store.claim_schema()?;
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
        let worker = Worker::new(pipeline.clone(), aggregator, store.clone());
        let (to_worker, from_intake) = mpsc::unbounded_channel();
        // A store that is its own queue (PostgreSQL) takes events straight
        // in; the embedded one has the journal in front of it.
        let (intake, resumed_events): (Arc<dyn Intake>, usize) = match store.clone().inbox() {
            Some(inbox) => {
                let (intake, resumed) = StoreIntake::open(
                    inbox,
                    store.clone(),
                    config.server.pipeline_backlog,
                    to_worker,
                )?;
                (intake, resumed)
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
            clock,
            from_intake,
            resumed_events,
        })
    }

    /// Starts the worker, the intake's checkpoints and delivery (pending
    /// jobs load from the store as room allows). Needs a Tokio runtime.
    pub fn start(self) -> Result<Running, NodeError> {
        let resumed_jobs = self.store.pending_count()?;
        tracing::info!(
            jobs = resumed_jobs,
            events = self.resumed_events,
            "resuming unfinished work"
        );
        self.deliverer.resume();
        let worker = tokio::spawn(self.worker.clone().run(
            self.from_intake,
            self.deliverer.clone(),
            Duration::from_millis(self.config.aggregation.tick_ms),
        ));
        let upkeep = tokio::spawn(self.intake.clone().maintain(
            Duration::from_millis(self.config.server.checkpoint_ms),
            {
                // A reopened store may hold pending jobs the deliverer
                // does not know of (states lost with the failure).
                let deliverer = self.deliverer.clone();
                Box::new(move || deliverer.reload())
            },
        ));
        let retention = tokio::spawn(
            Retention::new(
                self.store.clone(),
                self.config.retention.clone(),
                self.clock.clone(),
            )
            .run(),
        );
        Ok(Running {
            config: self.config,
            registry: self.registry,
            store: self.store,
            intake: self.intake,
            subscriptions: self.subscriptions,
            deliverer: self.deliverer,
            pipeline: self.pipeline,
            worker,
            upkeep,
            retention,
        })
    }
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
    worker: tokio::task::JoinHandle<()>,
    upkeep: tokio::task::JoinHandle<()>,
    retention: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Call once nothing accepts events any more: the worker drains its
    /// queue and ends, attempts in flight get `server.shutdown_grace_ms`,
    /// the store is flushed and the journal retired.
    pub async fn shutdown(self) -> Result<(), StoreError> {
        tracing::info!("stopped taking requests; finishing the pipeline queue");
        self.intake.stop_queueing();
        let _ = self.worker.await;
        let grace = Duration::from_millis(self.config.server.shutdown_grace_ms);
        if !self.deliverer.shutdown(grace).await {
            tracing::warn!(
                grace_ms = grace.as_millis() as u64,
                "attempts still in flight at the deadline; they resume at next start"
            );
        }
        self.upkeep.abort();
        let _ = self.upkeep.await;
        self.retention.abort();
        let _ = self.retention.await;
        self.store.flush()?;
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
