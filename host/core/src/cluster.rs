//! Cluster mode: several nodes on one shared store (PostgreSQL).
//!
//! Every node takes events in (each is a committed row before its `202`,
//! whichever node answered). One node leads: it runs the pipeline, closes
//! windows, confirms outages and delivers; the others stand by. A standby
//! tries to take the lead every `cluster.takeover_ms`; the lead is a session
//! lock in the database, so it ends when the leader's process or connection
//! does, and taking it raises an epoch that fences the old leader's writes
//! (see [`ClusterStore`]). The leader sweeps up, every `cluster.sweep_ms`,
//! the events other nodes admitted and those an earlier leader left.
//!
//! On sled (one process owns the files) a node always leads: [`Membership::single`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::config::Config;
use crate::intake::StoreIntake;
use crate::store::{ClusterStore, NodeRecord, StoreError};

/// This node's place in the cluster, as the HTTP layer and the node see it.
pub struct Membership {
    id: String,
    address: Mutex<String>,
    /// `cluster.advertise` was set: the listening address does not replace it.
    advertised: bool,
    started_at_ms: u64,
    cluster: Option<Arc<dyn ClusterStore>>,
    leading: AtomicBool,
    /// The leader's address, from the last heartbeat round.
    leader: Mutex<Option<String>>,
    /// Set once another node took the lead from this one.
    deposed: watch::Sender<bool>,
}

/// What the node does when it takes the lead (starts the worker and
/// delivery), called once.
pub type OnLead = Box<dyn FnOnce() + Send>;

impl Membership {
    /// A node alone with its store: it leads from the start.
    pub fn single(config: &Config) -> Arc<Membership> {
        let membership = Membership::new(config, None);
        membership.leading.store(true, Ordering::SeqCst);
        Arc::new(membership)
    }

    /// A node of a cluster sharing `cluster`; it leads once
    /// [`Membership::run`] takes the lead.
    pub fn shared(config: &Config, cluster: Arc<dyn ClusterStore>) -> Arc<Membership> {
        Arc::new(Membership::new(config, Some(cluster)))
    }

    fn new(config: &Config, cluster: Option<Arc<dyn ClusterStore>>) -> Membership {
        let id = config.cluster.node_id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "node".into());
            format!("{host}-{}", std::process::id())
        });
        let address = config
            .cluster
            .advertise
            .clone()
            .unwrap_or_else(|| format!("http://{}", config.server.listen));
        Membership {
            id,
            address: Mutex::new(address),
            advertised: config.cluster.advertise.is_some(),
            started_at_ms: crate::clock::now_ms(),
            cluster,
            leading: AtomicBool::new(false),
            leader: Mutex::new(None),
            deposed: watch::channel(false).0,
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Where the HTTP API listens once bound (a `:0` port is known only
    /// then); `cluster.advertise`, if set, stays this node's address.
    pub fn listening_on(&self, local: std::net::SocketAddr) {
        if !self.advertised {
            *self.address.lock().unwrap_or_else(|p| p.into_inner()) = format!("http://{local}");
        }
    }

    fn address(&self) -> String {
        self.address
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether this node runs the pipeline and delivery (and so serves the
    /// management API).
    pub fn leads(&self) -> bool {
        self.leading.load(Ordering::SeqCst)
    }

    /// The leader's address, when another node leads and it is known.
    pub fn leader_address(&self) -> Option<String> {
        if self.leads() {
            return Some(self.address());
        }
        self.leader
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn record(&self) -> NodeRecord {
        NodeRecord {
            id: self.id.clone(),
            address: self.address(),
            started_at_ms: self.started_at_ms,
            seen_at_ms: crate::clock::now_ms(),
            leading: self.leads(),
        }
    }

    /// Every node of the cluster (this one alone on sled). Blocking.
    pub fn nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        match &self.cluster {
            Some(cluster) => cluster.nodes(),
            None => Ok(vec![self.record()]),
        }
    }

    /// Resolves once another node has taken the lead from this one: the
    /// node must stop (its writes are fenced) and be started again, to
    /// stand by.
    pub async fn deposed(&self) {
        let mut seen = self.deposed.subscribe();
        let _ = seen.wait_for(|deposed| *deposed).await;
    }

    /// Tries once to take the lead (blocking: at start, so that a node
    /// alone on its database leads before it serves); whether it leads.
    pub fn try_lead_now(&self) -> bool {
        let Some(cluster) = &self.cluster else {
            return self.leads();
        };
        match cluster.try_lead(&self.id) {
            Ok(leads) => {
                self.leading.store(leads, Ordering::SeqCst);
                if leads {
                    tracing::info!(node = %self.id, "this node leads: running the pipeline, windows and delivery");
                } else {
                    tracing::info!(node = %self.id, "another node leads: this one takes events in and stands by");
                }
                leads
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot take the lead now; retried");
                false
            }
        }
    }

    /// Until dropped: heartbeats, taking the lead when it is free (then
    /// `on_lead`, unless it led already), sweeping up other nodes' events while leading, and
    /// noticing a lost lead.
    pub async fn run(
        self: Arc<Self>,
        config: Arc<Config>,
        intake: Arc<StoreIntake>,
        mut on_lead: Option<OnLead>,
    ) {
        let Some(cluster) = self.cluster.clone() else {
            return;
        };
        let mut beat = tokio::time::interval(Duration::from_millis(config.cluster.takeover_ms));
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sweep = tokio::time::interval(Duration::from_millis(config.cluster.sweep_ms));
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sweep_failing = false;
        loop {
            tokio::select! {
                _ = beat.tick() => {
                    if !self.clone().beat(&cluster, &mut on_lead).await {
                        return;
                    }
                }
                _ = sweep.tick(), if self.leads() => {
                    // Full pages follow each other at once.
                    loop {
                        match intake.sweep().await {
                            Ok(taken) if taken >= 1000 => continue,
                            Ok(_) => {
                                sweep_failing = false;
                                break;
                            }
                            Err(e) => {
                                if !sweep_failing {
                                    tracing::warn!(error = %e, "cannot take up other nodes' events; retried");
                                }
                                sweep_failing = true;
                                break;
                            }
                        }
                    }
                }
            }
        }
    }

    /// One heartbeat round; false once this node was deposed.
    async fn beat(
        self: Arc<Self>,
        cluster: &Arc<dyn ClusterStore>,
        on_lead: &mut Option<OnLead>,
    ) -> bool {
        let (this, store) = (self.clone(), cluster.clone());
        let round = tokio::task::spawn_blocking(move || {
            let leads = if this.leads() {
                store.still_leading(&this.id)?
            } else {
                store.try_lead(&this.id)?
            };
            let was = this.leading.swap(leads, Ordering::SeqCst);
            store.heartbeat(&this.record())?;
            let leader = store
                .nodes()?
                .into_iter()
                .filter(|n| n.leading && n.id != this.id)
                .max_by_key(|n| n.seen_at_ms)
                .map(|n| n.address);
            *this.leader.lock().unwrap_or_else(|p| p.into_inner()) = leader;
            Ok::<_, StoreError>((was, leads))
        })
        .await;
        match round {
            Ok(Ok((false, true))) => {
                tracing::info!(node = %self.id, "this node leads: running the pipeline, windows and delivery");
                // It reads the store before starting anything: a blocking hop.
                if let Some(on_lead) = on_lead.take()
                    && let Err(e) = tokio::task::spawn_blocking(on_lead).await
                {
                    tracing::error!(error = %e, "starting the pipeline and delivery failed");
                }
                true
            }
            Ok(Ok((true, false))) => {
                tracing::error!(node = %self.id, "another node took the lead (this node's connection to the database was lost); stopping: start this node again to stand by");
                let _ = self.deposed.send(true);
                false
            }
            Ok(Ok(_)) => true,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "cluster heartbeat failed; retried");
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "cluster heartbeat task failed; retried");
                true
            }
        }
    }
}
