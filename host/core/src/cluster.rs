//! Cluster mode: several nodes on one shared store (PostgreSQL).
//!
//! Every node takes events in (each is a committed row before its `202`,
//! whichever node answered), runs their pipeline and delivers. One node
//! leads: it closes windows, confirms outages, runs the ordered lanes and
//! the pipeline of the events whose outcome touches them; the others stand
//! by for that (see [`crate::worker`]). A standby
//! tries to take the lead every `cluster.takeover_ms`; the lead is a session
//! lock in the database, so it ends when the leader's process or connection
//! does, and taking it raises an epoch that fences the old leader's writes
//! (see [`ClusterStore`]). The leader sweeps up, every `cluster.sweep_ms`
//! and when woken, the events other nodes handed over, those of nodes
//! whose lease ran out and those an earlier leader left.
//!
//! Plugins uploaded over the API are the cluster's: the leader records them
//! in the store and every node installs them into its own plugins folder
//! at its next heartbeat (compiled and checked, then renamed into place).
//!
//! On sled (one process owns the files) a node always leads: [`Membership::single`].

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hookhost_plugin_runtime::{CANDIDATE_SUFFIX, Registry};
use tokio::sync::watch;

use crate::config::Config;
use crate::intake::{SWEEP_PAGE, StoreIntake};
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
    /// Heartbeat rounds in a row that reached the database. A standby tries
    /// to lead only after two: when the database comes back after an
    /// outage, the node that led before takes its lead again at its first
    /// round, instead of being deposed by a standby that was quicker.
    rounds_ok: AtomicU32,
    /// Where uploaded plugins are installed on this node.
    plugins: Option<(Arc<Registry>, PathBuf)>,
    /// The version of each uploaded plugin this node has (hex SHA-256,
    /// `None`: removed), by (name, candidate).
    plugins_have: Mutex<HashMap<(String, bool), Option<String>>>,
}

/// How two lists of config-file subscriptions (JSON arrays) differ, by
/// subscription id and field name (never values: they hold secrets).
fn subscription_differences(ours: &serde_json::Value, theirs: &serde_json::Value) -> Vec<String> {
    let by_id =
        |list: &serde_json::Value| -> std::collections::BTreeMap<String, serde_json::Value> {
            list.as_array()
                .into_iter()
                .flatten()
                .map(|s| (s["id"].as_str().unwrap_or_default().to_string(), s.clone()))
                .collect()
        };
    let (ours, theirs) = (by_id(ours), by_id(theirs));
    let mut out = Vec::new();
    for (id, mine) in &ours {
        match theirs.get(id) {
            None => out.push(format!("subscription {id:?} is only in this node's file")),
            Some(other) if other != mine => {
                let empty = serde_json::Map::new();
                let (a, b) = (
                    mine.as_object().unwrap_or(&empty),
                    other.as_object().unwrap_or(&empty),
                );
                let fields: std::collections::BTreeSet<&String> = a
                    .keys()
                    .chain(b.keys())
                    .filter(|k| a.get(*k) != b.get(*k))
                    .collect();
                let fields: Vec<&str> = fields.into_iter().map(String::as_str).collect();
                out.push(format!(
                    "subscription {id:?} differs in {}",
                    fields.join(", ")
                ));
            }
            Some(_) => {}
        }
    }
    for id in theirs.keys().filter(|id| !ours.contains_key(*id)) {
        out.push(format!(
            "subscription {id:?} is only in the running nodes' files"
        ));
    }
    out
}

/// Good heartbeat rounds in a row a standby waits for before it tries to lead.
const STANDBY_ROUNDS: u32 = 2;

/// What the node does when it takes the lead (starts the worker and
/// delivery), called once.
pub type OnLead = Box<dyn FnOnce() + Send>;

/// This node's name: `cluster.node_id`, or `<hostname>-<pid>`.
pub fn node_id(config: &Config) -> String {
    config.cluster.node_id.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "node".into());
        format!("{host}-{}", std::process::id())
    })
}

impl Membership {
    /// A node alone with its store: it leads from the start.
    pub fn single(config: &Config) -> Arc<Membership> {
        let membership = Membership::new(config, None, None);
        membership.leading.store(true, Ordering::SeqCst);
        Arc::new(membership)
    }

    /// A node of a cluster sharing `cluster`; it leads once
    /// [`Membership::run`] takes the lead.
    /// Plugins uploaded to the cluster go into `registry` and `plugins.dir`.
    pub fn shared(
        config: &Config,
        cluster: Arc<dyn ClusterStore>,
        registry: Arc<Registry>,
    ) -> Arc<Membership> {
        Arc::new(Membership::new(
            config,
            Some(cluster),
            Some((registry, config.plugins.dir.clone())),
        ))
    }

    fn new(
        config: &Config,
        cluster: Option<Arc<dyn ClusterStore>>,
        plugins: Option<(Arc<Registry>, PathBuf)>,
    ) -> Membership {
        let id = node_id(config);
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
            rounds_ok: AtomicU32::new(STANDBY_ROUNDS),
            plugins,
            plugins_have: Mutex::new(HashMap::new()),
        }
    }

    /// At start: the config file's subscriptions must be those of the nodes
    /// running now (they deliver by them when they lead). Records this
    /// file's when no other node is alive. Blocking.
    pub fn agree_on_config(&self, config: &Config) -> Result<(), String> {
        let Some(cluster) = &self.cluster else {
            return Ok(());
        };
        let ours = serde_json::to_value(&config.subscriptions).map_err(|e| e.to_string())?;
        let failed = |e: StoreError| format!("cannot compare the config with the cluster's: {e}");
        let now = crate::clock::now_ms();
        let alive_ms = 3 * config.cluster.takeover_ms;
        let others: Vec<String> = cluster
            .nodes()
            .map_err(failed)?
            .into_iter()
            .filter(|n| n.id != self.id && now.saturating_sub(n.seen_at_ms) <= alive_ms)
            .map(|n| n.id)
            .collect();
        if !others.is_empty()
            && let Some(theirs) = cluster.agreed_config().map_err(failed)?
        {
            let theirs: serde_json::Value = serde_json::from_str(&theirs).unwrap_or_default();
            let differences = subscription_differences(&ours, &theirs);
            if !differences.is_empty() {
                return Err(format!(
                    "this node's config file does not agree with the running nodes' ({}): {}; \
                     give every node the same [[subscriptions]] (stop them all to change them)",
                    others.join(", "),
                    differences.join("; ")
                ));
            }
        }
        cluster
            .record_config(&self.id, &ours.to_string())
            .map_err(failed)
    }

    /// Whether this node shares its store with others.
    pub fn clustered(&self) -> bool {
        self.cluster.is_some()
    }

    /// Records a plugin uploaded to this node (or, `None`, removed) for
    /// every node to install; nothing to do alone. Blocking.
    pub fn share_plugin(
        &self,
        name: &str,
        candidate: bool,
        bytes: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        let Some(cluster) = &self.cluster else {
            return Ok(());
        };
        cluster.publish_plugin(name, candidate, bytes)?;
        // This node has it already.
        let sha256 = bytes.map(|b| {
            use sha2::{Digest, Sha256};
            hex::encode(Sha256::digest(b))
        });
        self.plugins_have
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((name.to_string(), candidate), sha256);
        Ok(())
    }

    /// Installs (or removes) the uploaded plugins whose version this node
    /// does not have. Blocking.
    fn sync_plugins(&self, cluster: &dyn ClusterStore) -> Result<(), StoreError> {
        let Some((registry, dir)) = &self.plugins else {
            return Ok(());
        };
        let mut have = self.plugins_have.lock().unwrap_or_else(|p| p.into_inner());
        for plugin in cluster.shared_plugins()? {
            let key = (plugin.name.clone(), plugin.candidate);
            if have.get(&key) == Some(&plugin.sha256) {
                continue;
            }
            let stem = if plugin.candidate {
                format!("{}{CANDIDATE_SUFFIX}", plugin.name)
            } else {
                plugin.name.clone()
            };
            let file = dir.join(format!("{stem}.wasm"));
            let done = match &plugin.sha256 {
                Some(sha256) => {
                    let local = std::fs::read(&file).ok().map(|b| {
                        use sha2::{Digest, Sha256};
                        hex::encode(Sha256::digest(b))
                    });
                    if local.as_ref() == Some(sha256) {
                        true
                    } else {
                        match cluster.shared_plugin_bytes(&plugin.name, plugin.candidate)? {
                            Some(bytes) => {
                                match registry.install(dir, &plugin.name, &bytes, plugin.candidate)
                                {
                                    Ok(_) => {
                                        tracing::info!(plugin = %plugin.name, candidate = plugin.candidate, sha256 = %&sha256[..16], "plugin installed from the cluster");
                                        true
                                    }
                                    Err(e) => {
                                        tracing::warn!(plugin = %plugin.name, error = %e, "cannot install a plugin uploaded to the cluster; retried");
                                        false
                                    }
                                }
                            }
                            // Changed meanwhile: the next round sees the new row.
                            None => false,
                        }
                    }
                }
                None => match registry.uninstall(dir, &plugin.name, plugin.candidate) {
                    Ok(removed) => {
                        if removed {
                            tracing::info!(plugin = %plugin.name, candidate = plugin.candidate, "plugin removed by the cluster");
                        }
                        true
                    }
                    Err(e) => {
                        tracing::warn!(plugin = %plugin.name, error = %e, "cannot remove a plugin removed from the cluster; retried");
                        false
                    }
                },
            };
            if done {
                have.insert(key, plugin.sha256);
            }
        }
        Ok(())
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// At a clean stop: this node is gone at once (a node starting next
    /// with another config file need not wait for its heartbeat to age).
    /// Blocking.
    pub fn leave(&self) {
        if let Some(cluster) = &self.cluster
            && let Err(e) = cluster.leave(&self.id)
        {
            tracing::warn!(error = %e, "cannot mark this node as gone; it ages out of the node list");
        }
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

    /// Whether this node leads: runs windows, outage timers and ordered
    /// lanes (and so serves the management API).
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
            // Counted by the store when listing.
            deliveries_held: 0,
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
                    tracing::info!(node = %self.id, "another node leads: this one takes events in, runs their pipeline and delivers, and stands by for windows and timers");
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
    /// `on_lead`, unless it led already), sweeping up other nodes' events
    /// while leading, installing uploaded plugins, and noticing a lost lead.
    pub async fn run(
        self: Arc<Self>,
        config: Arc<Config>,
        intake: Arc<StoreIntake>,
        mut on_lead: Option<OnLead>,
    ) {
        let Some(cluster) = self.cluster.clone() else {
            return;
        };
        // Heartbeats run on their own: a long sweep (pages of events while
        // the pipeline backlog is full) must never hold up the renewal of
        // this node's lease, or the others would free its deliveries.
        let beats = async {
            let mut beat = tokio::time::interval(Duration::from_millis(config.cluster.takeover_ms));
            beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                beat.tick().await;
                if !self.clone().beat(&cluster, &mut on_lead).await {
                    return;
                }
            }
        };
        // Other nodes' admissions wake the sweep; the ticker catches
        // anything a lost notification would leave waiting.
        let sweeps = async {
            let admitted = cluster.admissions();
            let mut sweep = tokio::time::interval(Duration::from_millis(config.cluster.sweep_ms));
            sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut sweep_failing = false;
            loop {
                tokio::select! {
                    _ = sweep.tick() => {}
                    () = admitted.notified() => {}
                }
                if !self.leads() {
                    continue;
                }
                // Full pages follow each other at once.
                loop {
                    match intake.sweep().await {
                        Ok(taken) if taken >= SWEEP_PAGE => continue,
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
        };
        tokio::select! {
            () = beats => {}
            () = sweeps => {}
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
            } else if this.rounds_ok.load(Ordering::SeqCst) >= STANDBY_ROUNDS {
                store.try_lead(&this.id)?
            } else {
                false
            };
            let was = this.leading.swap(leads, Ordering::SeqCst);
            store.heartbeat(&this.record())?;
            this.sync_plugins(&*store)?;
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
        if matches!(round, Ok(Ok(_))) {
            self.rounds_ok.fetch_add(1, Ordering::SeqCst);
        } else {
            self.rounds_ok.store(0, Ordering::SeqCst);
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn differences_name_subscriptions_and_fields_but_no_values() {
        let ours = json!([
            {"id": "a", "url": "https://a.example/1", "secret": "whsec_one"},
            {"id": "b", "url": "https://b.example"},
        ]);
        let theirs = json!([
            {"id": "a", "url": "https://a.example/2", "secret": "whsec_two"},
            {"id": "c", "url": "https://c.example"},
        ]);
        let said = subscription_differences(&ours, &theirs);
        assert_eq!(
            said,
            [
                "subscription \"a\" differs in secret, url",
                "subscription \"b\" is only in this node's file",
                "subscription \"c\" is only in the running nodes' files",
            ]
        );
        assert!(!said.join(" ").contains("whsec"));
        assert!(subscription_differences(&ours, &ours).is_empty());
    }
}
