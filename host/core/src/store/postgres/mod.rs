//! The PostgreSQL store: every storage seam on tables of one schema
//! (`[store] backend = "postgres"`).
//!
//! The seams are synchronous (sled's calls return at once); here each call
//! borrows one pooled connection and waits for PostgreSQL on the calling
//! thread, which drives the connection itself meanwhile (see [`conn`]). So
//! a call works from a blocking thread or a multi-threaded runtime's
//! worker, and never needs the caller's runtime. A small runtime of the
//! store's own drives the connections that live between calls (the lead
//! lock's, the listeners').
//!
//! Every write is one transaction, committed (and so durable, with
//! PostgreSQL's default `synchronous_commit`) before the call returns:
//! [`Store::flush`] has nothing left to do. Batches are sent as one
//! statement per table (`unnest` of arrays), not one per row.
//!
//! The schema is made and migrated here ([`migrate`]): numbered SQL files
//! in `migrations/`, applied in order under an advisory lock, each in its
//! own transaction, the versions applied kept in `schema_migrations`.

mod conn;
mod own_lease;
mod tls;

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio_postgres::Client;

use conn::{Conn, Pooled, Sql, set_search_path};

use super::{
    Admitted, Backlog, ClosedWindows, ClusterStore, DeliveryQueue, EventInbox, EventStore, Expired,
    Expiring, IdempotencyStore, JobLeases, JobPage, JobQuery, NodeRecord, OwnCompleted,
    QueuePosition, RetentionStore, SharedPlugin, Store, StoreError, StoreStats, SubscriptionStore,
    WindowStore,
};
use crate::model::{
    EndpointHealth, Job, JobStatus, OutageState, Processed, Remembered, StoredEvent, Subscription,
    WindowMember,
};

/// [`PgStore::epoch`] of a store no node runs on (tools, `hookhost migrate`).
const TOOL: i64 = -1;
/// [`PgStore::epoch`] of a node's store while another node leads.
const STANDBY: i64 = 0;

/// Nodes not seen for this long leave the node list.
const NODE_FORGOTTEN_MS: u64 = 3_600_000;

/// Fails the transaction `tx` unless `epoch` is the lead's current one
/// ([`TOOL`]: no check). `FOR SHARE` holds the leader row until `tx` ends,
/// so a new leader's epoch raise waits for it: nothing fenced commits after
/// another node took the lead.
///
/// A fence that does not hold is a statement error (a division by the
/// zero rows found), not an empty answer: the database then rolls the
/// transaction back by itself, so the fence can go out with the writes it
/// guards and their `COMMIT` ([`Conn::at_once`]).
async fn fence(tx: &impl Sql, epoch: i64) -> Result<(), StoreError> {
    if epoch == TOOL {
        return Ok(());
    }
    if epoch == STANDBY {
        return Err(StoreError(
            "this node does not lead: the pipeline and delivery run on the leader".into(),
        ));
    }
    match tx.query_db(FENCE, &[&epoch]).await? {
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::DIVISION_BY_ZERO) => Err(
            StoreError("another node leads now: this node's lead has ended (fenced)".into()),
        ),
        Err(e) => Err(e.into()),
        Ok(_) => Ok(()),
    }
}

/// Reads `closed_through`, locked with `lock` (`FOR SHARE`, `FOR UPDATE`,
/// or nothing: a plain read).
macro_rules! closed_through_sql {
    ($lock:literal) => {
        concat!(
            "SELECT value FROM markers WHERE name = 'closed_through' ",
            $lock
        )
    };
}

/// A standby's batch of its own events still marked as its own, locked.
const OWN_EVENTS: &str = "SELECT id FROM events WHERE id = ANY($1) AND in_pipeline \
     AND (pipeline_node = $2 OR pipeline_epoch = $3) ORDER BY id FOR UPDATE";

const FENCE: &str = "SELECT 1 / count(*) FROM \
     (SELECT 1 FROM leader WHERE id = 1 AND epoch = $1 FOR SHARE) AS held";

/// Keeps a connection listening on `channel`, waking `wake` on each
/// notification, and once per (re)connection (what was sent while it was
/// not listening is then swept up). Runs until the store's runtime stops.
async fn listen(
    config: tokio_postgres::Config,
    tls: tls::PgTls,
    channel: String,
    wake: std::sync::Arc<tokio::sync::Notify>,
) {
    loop {
        if let Ok((client, mut connection)) = config.connect(tls.clone()).await {
            let woken = wake.clone();
            // Polling for messages also drives the client's own requests.
            let driver = tokio::spawn(async move {
                while let Some(message) =
                    std::future::poll_fn(|cx| connection.poll_message(cx)).await
                {
                    match message {
                        Ok(tokio_postgres::AsyncMessage::Notification(_)) => woken.notify_one(),
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
            });
            let escaped = channel.replace('"', "\"\"");
            if client
                .batch_execute(&format!("LISTEN \"{escaped}\""))
                .await
                .is_ok()
            {
                wake.notify_one();
                let _ = driver.await;
            } else {
                driver.abort();
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The schema versions this build knows, in order.
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "initial tables",
        include_str!("migrations/0001_initial.sql"),
    ),
    (
        2,
        "events accepted before the pipeline",
        include_str!("migrations/0002_inbox.sql"),
    ),
    (
        3,
        "cluster: leader epoch, pipeline claims, nodes",
        include_str!("migrations/0003_cluster.sql"),
    ),
    (
        4,
        "cluster: job leases, work shared between nodes",
        include_str!("migrations/0004_job_leases.sql"),
    ),
    (
        5,
        "cluster: every node runs the pipeline of its own events",
        include_str!("migrations/0005_pipeline_node.sql"),
    ),
    (
        6,
        "cluster: a standby places window members of its own events",
        include_str!("migrations/0006_standby_windows.sql"),
    ),
];

/// The database's clock in ms: leases are compared with one clock,
/// whatever the nodes' own say.
const DB_NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

/// Rows read per round trip where a scan filters in Rust.
const CHUNK: i64 = 1000;

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        // The database's own message (e.g. "relation ... does not exist")
        // is in the source; `Display` alone says only "db error".
        match e.as_db_error() {
            Some(db) => StoreError(format!("database: {}: {}", db.code().code(), db.message())),
            None => match std::error::Error::source(&e) {
                Some(cause) => StoreError(format!("database: {e}: {cause}")),
                None => StoreError(format!("database: {e}")),
            },
        }
    }
}

/// Where and how to connect.
#[derive(Clone)]
pub struct PgSettings {
    /// A `postgres://` URL or `key=value` words (secret: not logged).
    pub url: String,
    pub schema: String,
    pub pool_size: usize,
    /// Authorities to verify the server's certificate with (see [`tls`]).
    pub tls_ca_file: Option<std::path::PathBuf>,
}

pub struct PgStore {
    config: tokio_postgres::Config,
    tls: tls::PgTls,
    schema: String,
    /// Drives the connections that live between calls (the lead lock's,
    /// the listeners'); `None` only while dropping. The pool's are driven
    /// by their callers ([`Pooled`]).
    runtime: Option<tokio::runtime::Runtime>,
    pool: Vec<Mutex<Option<Pooled>>>,
    next: AtomicUsize,
    applied_at_open: Vec<i32>,
    /// This store's part in leading: [`TOOL`] (not a node's: nothing is
    /// fenced), [`STANDBY`] (a node's, not leading: fenced writes refused),
    /// or the epoch it leads in.
    epoch: AtomicI64,
    /// The connection holding the schema's lead lock while this node leads.
    owner: Mutex<Option<Client>>,
    /// Woken by other nodes' admissions (see [`ClusterStore::admissions`]).
    admissions: std::sync::OnceLock<std::sync::Arc<tokio::sync::Notify>>,
    /// Woken when jobs become free to claim (see [`JobLeases::claimable`]).
    claimable: std::sync::OnceLock<std::sync::Arc<tokio::sync::Notify>>,
    /// The node this store is part of, and how long its leases last (ms),
    /// once it joined.
    node: std::sync::OnceLock<(String, i64)>,
    /// Nodes alive at the last heartbeat: the leader keeps one in this many
    /// of its new jobs for itself.
    alive_nodes: std::sync::atomic::AtomicU32,
    /// Whether this node's delivery has room for new jobs of its own.
    keeping: std::sync::atomic::AtomicBool,
    /// New jobs written as held by this node, until its delivery takes them.
    kept: Mutex<std::collections::HashSet<String>>,
    /// That connection's server process id (0: none).
    owner_pid: std::sync::atomic::AtomicI32,
    /// This node's lease as this process sees it (renewed by heartbeats).
    own_lease: own_lease::OwnLease,
}

impl Drop for PgStore {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which tokio refuses inside another
        // runtime: the store may well be dropped on one.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

fn ms(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A `count(*)` as a count (never negative).
fn as_count(v: i64) -> usize {
    usize::try_from(v).unwrap_or(0)
}

fn unms(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn status_name(status: JobStatus) -> &'static str {
    match status {
        JobStatus::Pending => "pending",
        JobStatus::Delivered => "delivered",
        JobStatus::Dead => "dead",
        JobStatus::PluginError => "plugin_error",
        JobStatus::Filtered => "filtered",
        JobStatus::Paused => "paused",
    }
}

/// Keeps the last of items with the same key, in first-seen order: one
/// statement may not touch a row twice, and in a batch the later state wins.
fn last_wins<'a, T>(
    items: impl IntoIterator<Item = &'a T>,
    key: impl Fn(&T) -> &str,
) -> Vec<&'a T> {
    let mut at: HashMap<&str, usize> = HashMap::new();
    let mut out: Vec<&T> = Vec::new();
    for item in items {
        match at.get(key(item)) {
            Some(&i) => out[i] = item,
            None => {
                at.insert(key(item), out.len());
                out.push(item);
            }
        }
    }
    out
}

/// A page cursor: `<created, 16 hex>/<job id>`, as the sled store writes it.
fn parse_cursor(cursor: &str) -> Result<(i64, &str), StoreError> {
    let bad = || StoreError(format!("invalid cursor {cursor:?}"));
    let (at, id) = cursor.split_once('/').ok_or_else(bad)?;
    let at = u64::from_str_radix(at, 16).map_err(|_| bad())?;
    Ok((ms(at), id))
}

fn cursor(at: i64, id: &str) -> String {
    format!("{:016x}/{id}", unms(at))
}

const UPSERT_JOBS: &str = "INSERT INTO jobs \
     (id, subscription_id, created_at_ms, status, expiring, settled_at_ms, body, lease_node, \
      ordered) \
     SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], \
                          $6::bigint[], $7::text[], $8::text[], $9::bool[]) \
     ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, \
     expiring = EXCLUDED.expiring, settled_at_ms = EXCLUDED.settled_at_ms, body = EXCLUDED.body, \
     lease_node = EXCLUDED.lease_node, ordered = EXCLUDED.ordered";

/// Wakes the listeners of `$1` when the transaction commits.
const NOTIFY: &str = "SELECT pg_notify($1, '')";

/// A pipeline batch's events, done with the pipeline.
const UPSERT_EVENTS: &str = "INSERT INTO events (id, received_at_ms, body) \
     SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[]) \
     ON CONFLICT (id) DO UPDATE SET received_at_ms = EXCLUDED.received_at_ms, \
     body = EXCLUDED.body, in_pipeline = false";

const UPSERT_MEMBERS: &str = "INSERT INTO window_members \
     (window_end_ms, group_hash, event_id, body) \
     SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[]) \
     ON CONFLICT (window_end_ms, group_hash, event_id) DO UPDATE SET body = EXCLUDED.body";

const UPSERT_OUTAGES: &str = "INSERT INTO outages (location, timer_ms, body) \
     SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[]) \
     ON CONFLICT (location) DO UPDATE SET timer_ms = EXCLUDED.timer_ms, body = EXCLUDED.body";

/// Every statement of a leader's pipeline batch ([`write_processed`]
/// after a [`fence`]), prepared before it is sent at once.
const PIPELINE_BATCH: [&str; 6] = [
    FENCE,
    UPSERT_EVENTS,
    UPSERT_JOBS,
    NOTIFY,
    UPSERT_MEMBERS,
    UPSERT_OUTAGES,
];

/// Who holds jobs written with [`UPSERT_JOBS`] (pending ones; a settled job
/// is held by nobody).
#[derive(Clone, Copy)]
enum Holder<'a> {
    /// New jobs of the leader `node`: it holds the ordered ones (they wait
    /// in its lanes) and those `keeps` picks (its share, delivered without
    /// a claim); the rest are free to claim.
    New(Option<&'a str>, &'a dyn Fn(&Job) -> bool),
    /// All of them: `node` delivers them itself (a re-send on the leader).
    All(Option<&'a str>),
}

/// Jobs as the columns of [`UPSERT_JOBS`].
#[derive(Default)]
struct JobRows {
    id: Vec<String>,
    subscription: Vec<String>,
    created: Vec<i64>,
    status: Vec<&'static str>,
    expiring: Vec<Option<&'static str>>,
    settled: Vec<Option<i64>>,
    body: Vec<String>,
    lease: Vec<Option<String>>,
    ordered: Vec<bool>,
}

impl JobRows {
    fn of<'a>(
        jobs: impl IntoIterator<Item = &'a Job>,
        holder: Holder<'_>,
    ) -> Result<JobRows, StoreError> {
        let mut rows = JobRows::default();
        for job in last_wins(jobs, |j| &j.id) {
            let ordered = job.order.is_some();
            let lease = match holder {
                _ if job.status != JobStatus::Pending => None,
                Holder::New(node, keeps) => node.filter(|_| ordered || keeps(job)),
                Holder::All(node) => node,
            };
            rows.lease.push(lease.map(str::to_string));
            rows.ordered.push(ordered);
            let expiring = Expiring::of(job.status);
            rows.id.push(job.id.clone());
            rows.subscription.push(job.subscription_id.clone());
            rows.created.push(ms(job.created_at_ms));
            rows.status.push(status_name(job.status));
            rows.expiring.push(expiring.map(Expiring::name));
            rows.settled.push(expiring.map(|_| ms(job.settled_at_ms())));
            rows.body.push(serde_json::to_string(job)?);
        }
        Ok(rows)
    }

    async fn upsert(&self, tx: &impl Sql) -> Result<(), StoreError> {
        if !self.id.is_empty() {
            tx.execute(
                UPSERT_JOBS,
                &[
                    &self.id,
                    &self.subscription,
                    &self.created,
                    &self.status,
                    &self.expiring,
                    &self.settled,
                    &self.body,
                    &self.lease,
                    &self.ordered,
                ],
            )
            .await?;
        }
        Ok(())
    }

    /// The unordered ones written as held (by the node writing them).
    fn held_unordered(&self) -> impl Iterator<Item = &String> {
        (0..self.id.len())
            .filter(|&i| self.lease[i].is_some() && !self.ordered[i])
            .map(|i| &self.id[i])
    }

    /// Whether any of them is free to claim.
    fn any_claimable(&self) -> bool {
        (0..self.id.len())
            .any(|i| self.status[i] == "pending" && self.lease[i].is_none() && !self.ordered[i])
    }
}

/// Applies the migrations this build knows that the schema lacks; refuses a
/// schema newer than this build. Returns the versions applied. Safe to run
/// from several nodes at once (an advisory lock orders them).
async fn migrate(client: &mut Client, schema: &str) -> Result<Vec<i32>, StoreError> {
    // One lock per schema name, held for the whole migration.
    let lock_key = i64::from_be_bytes(sha2_prefix(format!("hookhost migrate {schema}").as_bytes()));
    client
        .execute("SELECT pg_advisory_lock($1)", &[&lock_key])
        .await?;
    let result = migrate_locked(client, schema).await;
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&lock_key])
        .await;
    let applied = result?;
    unlocked?;
    Ok(applied)
}

fn sha2_prefix(bytes: &[u8]) -> [u8; 8] {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(bytes);
    let mut out = [0; 8];
    out.copy_from_slice(&digest[..8]);
    out
}

async fn migrate_locked(client: &mut Client, schema: &str) -> Result<Vec<i32>, StoreError> {
    client
        .batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {schema}; SET search_path TO {schema}; \
             CREATE TABLE IF NOT EXISTS schema_migrations ( \
                 version integer PRIMARY KEY, name text NOT NULL, \
                 applied_at timestamptz NOT NULL DEFAULT now())"
        ))
        .await?;
    let have: Vec<i32> = client
        .query(
            "SELECT version FROM schema_migrations ORDER BY version",
            &[],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let newest_known = MIGRATIONS.last().map_or(0, |m| m.0);
    if let Some(&newest) = have.last()
        && newest > newest_known
    {
        return Err(StoreError(format!(
            "schema {schema} is at version {newest}, newer than this hookhost knows \
             ({newest_known}): upgrade hookhost"
        )));
    }
    let mut applied = Vec::new();
    for &(version, name, sql) in MIGRATIONS {
        if have.contains(&version) {
            continue;
        }
        let tx = client.transaction().await?;
        tx.batch_execute(sql).await.map_err(|e| {
            let e = StoreError::from(e);
            StoreError(format!("migration {version} ({name}): {}", e.0))
        })?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            &[&version, &name],
        )
        .await?;
        tx.commit().await?;
        applied.push(version);
    }
    Ok(applied)
}

impl PgStore {
    /// Connects, makes or migrates the schema, and keeps up to
    /// `settings.pool_size` connections (opened as they are needed).
    pub fn open(settings: &PgSettings) -> Result<PgStore, StoreError> {
        let mut config = tokio_postgres::Config::from_str(&settings.url)
            .map_err(|e| StoreError(format!("store.url: {e}")))?;
        config.application_name("hookhost");
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        // A peer gone without a word (a host down, a network cut) ends the
        // connection within ~8 s rather than the system's two hours, so a
        // leader cut off notices it lost its lock. (When the database frees
        // that lock is up to the server's own `tcp_keepalives_*` settings.)
        config
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(5))
            .keepalives_interval(Duration::from_secs(1))
            .keepalives_retries(3);
        let tls = tls::PgTls::choose(&mut config, settings.tls_ca_file.as_deref())?;
        if !tls.enabled() && tls::leaves_the_machine(&config) {
            tracing::warn!(
                "connections to the database are not encrypted: add sslmode=require to store.url or set store.tls_ca_file"
            );
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("hookhost-postgres")
            .enable_all()
            .build()
            .map_err(|e| StoreError(format!("cannot start the database runtime: {e}")))?;
        let mut store = PgStore {
            config,
            tls,
            schema: settings.schema.clone(),
            runtime: Some(runtime),
            pool: (0..settings.pool_size.max(1))
                .map(|_| Mutex::new(None))
                .collect(),
            next: AtomicUsize::new(0),
            applied_at_open: Vec::new(),
            epoch: AtomicI64::new(TOOL),
            owner_pid: std::sync::atomic::AtomicI32::new(0),
            own_lease: own_lease::OwnLease::new(),
            admissions: std::sync::OnceLock::new(),
            claimable: std::sync::OnceLock::new(),
            node: std::sync::OnceLock::new(),
            alive_nodes: std::sync::atomic::AtomicU32::new(1),
            keeping: std::sync::atomic::AtomicBool::new(true),
            kept: Mutex::new(Default::default()),
            owner: Mutex::new(None),
        };
        let applied = store.run(async |c| migrate(c.client(), &settings.schema).await)?;
        if !applied.is_empty() {
            tracing::info!(schema = %settings.schema, versions = ?applied, "database schema migrated");
        }
        store.applied_at_open = applied;
        Ok(store)
    }

    /// Drops this store's schema and everything in it: the load tool's
    /// schema of one run, which nothing reads afterwards.
    pub fn drop_schema(self) -> Result<(), StoreError> {
        let sql = format!("DROP SCHEMA {} CASCADE", self.schema);
        self.run(async |c| Ok(c.client().batch_execute(&sql).await?))
    }

    /// Makes this store a running node's: from now on the pipeline's,
    /// windows' and delivery states' writes need the lead
    /// ([`ClusterStore::try_lead`]). `hookhost migrate` and tools do not join.
    pub fn join_cluster(&self) {
        let _ = self
            .epoch
            .compare_exchange(TOOL, STANDBY, Ordering::SeqCst, Ordering::SeqCst);
    }

    /// The advisory lock whose session holds the lead of this schema.
    fn lead_key(&self) -> i64 {
        i64::from_be_bytes(sha2_prefix(
            format!("hookhost node {}", self.schema).as_bytes(),
        ))
    }

    /// Takes the lead on `owner` (a connection of its own, kept while
    /// leading): the lock, then a new epoch, which waits for the previous
    /// leader's fenced transactions to end and fails every later one.
    fn take_lead(&self, owner: &mut Option<Client>, node: &str) -> Result<bool, StoreError> {
        if owner.as_ref().is_none_or(Client::is_closed) {
            *owner = Some(self.connect()?);
        }
        let Some(client) = owner.as_ref() else {
            return Err(StoreError("no database connection".into()));
        };
        let key = self.lead_key();
        let taken = futures_executor::block_on(async {
            let row = client
                .query_one("SELECT pg_try_advisory_lock($1), pg_backend_pid()", &[&key])
                .await?;
            if !row.get::<_, bool>(0) {
                return Ok::<_, tokio_postgres::Error>(None);
            }
            self.owner_pid.store(row.get(1), Ordering::SeqCst);
            let row = client
                .query_one(
                    "UPDATE leader SET epoch = epoch + 1, node = $1, since_ms = $2 \
                     WHERE id = 1 RETURNING epoch",
                    &[&node, &ms(crate::clock::now_ms())],
                )
                .await?;
            Ok(Some(row.get::<_, i64>(0)))
        });
        match taken {
            Ok(Some(epoch)) => {
                self.epoch.store(epoch, Ordering::SeqCst);
                Ok(true)
            }
            Ok(None) => {
                // Keep no idle connection while standing by.
                *owner = None;
                Ok(false)
            }
            Err(e) => {
                *owner = None;
                Err(e.into())
            }
        }
    }

    /// Whether this node keeps `job`, one of its new ones, for itself: its
    /// share (one in as many as nodes are alive, by id) while it has room.
    fn keeps(&self, job: &Job) -> bool {
        if !self.keeping.load(Ordering::SeqCst) {
            return false;
        }
        let nodes = self.alive_nodes.load(Ordering::SeqCst).max(1);
        // FNV-1a: spreads ids evenly, the same on every build.
        let hash = job.id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        hash % u64::from(nodes) == 0
    }

    /// Notes the new jobs written as this node's, for its delivery to take.
    fn note_kept(&self, rows: &JobRows) {
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        kept.extend(rows.held_unordered().cloned());
    }

    /// Runs `sql`, an `UPDATE` that frees jobs, and tells every node (at
    /// commit) when it freed any. Returns how many.
    fn free_jobs(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<usize, StoreError> {
        self.update_notifying(sql, params, &self.jobs_channel())
    }

    /// Runs `sql`, an `UPDATE`, and notifies `channel` at commit when it
    /// changed any row. Returns how many.
    fn update_notifying(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
        channel: &str,
    ) -> Result<usize, StoreError> {
        let changed = self.run(async |c| {
            let tx = c.transaction().await?;
            let changed = tx.execute(sql, params).await?;
            if changed > 0 {
                tx.execute(NOTIFY, &[&channel]).await?;
            }
            tx.commit().await?;
            Ok(changed)
        })?;
        Ok(changed as usize)
    }

    /// The node this store joined as, if it did.
    fn node_name(&self) -> Option<&str> {
        self.node.get().map(|(name, _)| name.as_str())
    }

    /// The `NOTIFY` channel of jobs becoming free to claim.
    fn jobs_channel(&self) -> String {
        format!("hookhost_jobs_{}", self.schema)
    }

    /// A `Notify` woken by `channel`'s notifications (one listening
    /// connection per channel, made again when lost).
    fn listener(
        &self,
        cell: &std::sync::OnceLock<std::sync::Arc<tokio::sync::Notify>>,
        channel: String,
    ) -> std::sync::Arc<tokio::sync::Notify> {
        cell.get_or_init(|| {
            let wake = std::sync::Arc::new(tokio::sync::Notify::new());
            if let Some(runtime) = &self.runtime {
                runtime.spawn(listen(
                    self.config.clone(),
                    self.tls.clone(),
                    channel,
                    wake.clone(),
                ));
            }
            wake
        })
        .clone()
    }

    /// The `NOTIFY` channel of this schema's admissions.
    fn admission_channel(&self) -> String {
        format!("hookhost_admitted_{}", self.schema)
    }

    /// The database server process holding this node's lead, if it leads
    /// (for operators: `pg_terminate_backend` of it hands the lead over).
    pub fn lead_session(&self) -> Option<i32> {
        let pid = self.owner_pid.load(Ordering::SeqCst);
        (self.epoch.load(Ordering::SeqCst) > STANDBY && pid != 0).then_some(pid)
    }

    /// The migrations [`PgStore::open`] applied (none if the schema was current).
    pub fn applied_at_open(&self) -> &[i32] {
        &self.applied_at_open
    }

    /// The newest migration the schema has.
    pub fn schema_version(&self) -> Result<i32, StoreError> {
        let row = self.row(
            "SELECT coalesce(max(version), 0) FROM schema_migrations",
            &[],
        )?;
        Ok(row.get(0))
    }

    /// Opens a connection on the store's runtime, in the store's schema
    /// (the lead lock's: its connection lives between calls; pooled ones
    /// are [`Pooled::connect`]'s).
    fn connect(&self) -> Result<Client, StoreError> {
        let runtime = self
            .runtime
            .as_ref()
            .ok_or_else(|| StoreError("the store is closed".into()))?;
        let (config, tls) = (self.config.clone(), self.tls.clone());
        let sql = set_search_path(&self.schema);
        let task = runtime.spawn(async move {
            let (client, connection) = config.connect(tls).await?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::warn!(error = %StoreError::from(e), "database connection ended");
                }
            });
            client.batch_execute(&sql).await?;
            Ok::<_, tokio_postgres::Error>(client)
        });
        futures_executor::block_on(task)
            .map_err(|e| StoreError(format!("database connect task: {e}")))?
            .map_err(StoreError::from)
    }

    /// The first free pooled connection slot, or, when every one is busy,
    /// the next one in turn to wait for. First free, not in turn: the few
    /// connections that a steady load keeps busy are the same ones each
    /// time, so the server processes behind them stay warm, and the
    /// others stay idle (or unopened). Taken in turn, every call went to
    /// another of the eight, at about a tenth more PostgreSQL CPU per
    /// event (BENCHMARKS, "Pooled connections taken first free").
    fn checkout(&self) -> MutexGuard<'_, Option<Pooled>> {
        for slot in &self.pool {
            if let Ok(slot) = slot.try_lock() {
                return slot;
            }
        }
        let turn = self.next.fetch_add(1, Ordering::Relaxed) % self.pool.len();
        self.pool[turn].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on a pooled connection (connecting first if need be) and
    /// waits for it on this thread. A connection that broke is dropped, so
    /// the next call connects again: recovery from a lost database is the
    /// next call that finds it back.
    fn run<T>(
        &self,
        f: impl AsyncFnOnce(&mut Conn) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut slot = self.checkout();
        if slot.as_ref().is_none_or(|p| p.conn().is_closed()) {
            *slot = None;
            *slot = Some(Pooled::connect(&self.config, &self.tls, &self.schema)?);
        }
        let Some(pooled) = slot.as_mut() else {
            return Err(StoreError("no database connection".into()));
        };
        let out = pooled.run(f);
        if out.is_err() {
            if pooled.conn().is_closed() {
                *slot = None;
                drop(slot);
                self.drop_idle_connections();
            } else {
                pooled.conn().forget_statements();
            }
        }
        out
    }

    /// Drops the pool's idle connections (the next calls connect anew).
    /// Called when a call found its connection closed: the server most
    /// likely closed the others too (a restart), and nothing notices that
    /// on an idle connection, which nobody drives between calls. Taken
    /// first free, the idle ones are otherwise found broken one by one
    /// after the server is back, each failing a call (an ingest's 503).
    fn drop_idle_connections(&self) {
        for slot in &self.pool {
            if let Ok(mut slot) = slot.try_lock() {
                *slot = None;
            }
        }
    }

    fn bodies<T: serde::de::DeserializeOwned>(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<T>, StoreError> {
        let rows = self.run(async |c| Ok(c.query(sql, params).await?))?;
        rows.iter()
            .map(|row| Ok(serde_json::from_str(row.get::<_, &str>(0))?))
            .collect()
    }

    fn body<T: serde::de::DeserializeOwned>(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Option<T>, StoreError> {
        Ok(self.bodies(sql, params)?.into_iter().next())
    }

    /// The one row `sql` answers (an aggregate).
    fn row(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<tokio_postgres::Row, StoreError> {
        self.run(async |c| Ok(c.query_one(sql, params).await?))
    }

    fn count(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<usize, StoreError> {
        Ok(as_count(self.row(sql, params)?.get(0)))
    }
}

/// Tells every node (at commit) that `jobs` holds some to claim.
async fn notify_if_claimable(
    tx: &impl Sql,
    jobs: &JobRows,
    channel: &str,
) -> Result<(), StoreError> {
    if jobs.any_claimable() {
        tx.execute(NOTIFY, &[&channel]).await?;
    }
    Ok(())
}

/// Rows as the columns of an `unnest` insert: keys, times, JSON bodies.
type UnnestColumns<'a> = (Vec<&'a str>, Vec<i64>, Vec<String>);

/// `key_and_time` picks a row's key and time (an event's id and arrival, an
/// idempotency answer's key and time).
fn unnest_columns<'a, T: serde::Serialize>(
    rows: Vec<&'a T>,
    key_and_time: impl Fn(&'a T) -> (&'a str, u64),
) -> Result<UnnestColumns<'a>, StoreError> {
    let mut keys = Vec::with_capacity(rows.len());
    let mut times = Vec::with_capacity(rows.len());
    let mut bodies = Vec::with_capacity(rows.len());
    for row in rows {
        let (key, at_ms) = key_and_time(row);
        keys.push(key);
        times.push(ms(at_ms));
        bodies.push(serde_json::to_string(row)?);
    }
    Ok((keys, times, bodies))
}

fn event_key_and_time(event: &StoredEvent) -> (&str, u64) {
    (&event.id, event.received_at_ms)
}

/// Writes one pipeline batch's rows in `tx`. The statements are sent
/// together and answered together (tokio-postgres pipelines requests that
/// are awaited at once): one round trip for all of them, not one each.
async fn write_processed(
    tx: &impl Sql,
    processed: &[&Processed],
    jobs: &JobRows,
    jobs_channel: &str,
) -> Result<(), StoreError> {
    let (event_ids, received, event_bodies) = unnest_columns(
        last_wins(processed.iter().map(|p| &p.event), |e| &e.id),
        event_key_and_time,
    )?;
    let mut by_key: HashMap<(i64, String, &str), String> = HashMap::new();
    for m in processed.iter().flat_map(|p| &p.window_members) {
        by_key.insert(
            (ms(m.window_end_ms), m.group_hash(), &m.event_id),
            serde_json::to_string(m)?,
        );
    }
    let (mut ends, mut groups, mut member_ids, mut member_bodies) =
        (vec![], vec![], vec![], vec![]);
    for ((end, group, id), body) in by_key {
        ends.push(end);
        groups.push(group);
        member_ids.push(id);
        member_bodies.push(body);
    }
    let outages = last_wins(
        processed
            .iter()
            .filter_map(|p| p.outage.as_ref().map(|(s, _)| s)),
        |s| &s.location,
    );
    let (mut locations, mut timers, mut outage_bodies) = (vec![], vec![], vec![]);
    for state in outages {
        locations.push(state.location.as_str());
        timers.push(state.deadline_ms.filter(|_| !state.confirmed).map(ms));
        outage_bodies.push(serde_json::to_string(state)?);
    }
    let events = async {
        if !event_ids.is_empty() {
            tx.execute(UPSERT_EVENTS, &[&event_ids, &received, &event_bodies])
                .await?;
        }
        Ok::<_, StoreError>(())
    };
    let members = async {
        if !ends.is_empty() {
            tx.execute(
                UPSERT_MEMBERS,
                &[&ends, &groups, &member_ids, &member_bodies],
            )
            .await?;
        }
        Ok(())
    };
    let outages = async {
        if !locations.is_empty() {
            tx.execute(UPSERT_OUTAGES, &[&locations, &timers, &outage_bodies])
                .await?;
        }
        Ok(())
    };
    tokio::try_join!(
        biased;
        events,
        jobs.upsert(tx),
        notify_if_claimable(tx, jobs, jobs_channel),
        members,
        outages,
    )?;
    Ok(())
}

impl PgStore {
    /// Writes a leader's pipeline batch, its new jobs held as `holder`
    /// says, fenced by the lead; returns the jobs' rows as written.
    fn write_pipeline(
        &self,
        processed: &[Processed],
        holder: Holder<'_>,
    ) -> Result<JobRows, StoreError> {
        let epoch = self.epoch.load(Ordering::SeqCst);
        let jobs = JobRows::of(processed.iter().flat_map(|p| &p.jobs), holder)?;
        let channel = self.jobs_channel();
        let processed: Vec<&Processed> = processed.iter().collect();
        // One round trip: the fence first (its lock before the writes'),
        // the writes, the commit, which the fence fails if it does not hold.
        self.run(async |c| {
            c.at_once(&PIPELINE_BATCH, async {
                tokio::try_join!(
                    biased;
                    fence(c, epoch),
                    write_processed(c, &processed, &jobs, &channel),
                )
            })
            .await
        })?;
        Ok(jobs)
    }
}

impl EventStore for PgStore {
    fn complete_pipeline(&self, processed: &[Processed]) -> Result<(), StoreError> {
        if processed.is_empty() {
            return Ok(());
        }
        let keeps = |job: &Job| self.keeps(job);
        let jobs = self.write_pipeline(processed, Holder::New(self.node_name(), &keeps))?;
        self.note_kept(&jobs);
        Ok(())
    }

    fn event(&self, id: &str) -> Result<Option<StoredEvent>, StoreError> {
        self.body("SELECT body FROM events WHERE id = $1", &[&id])
    }

    fn has_event(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.count("SELECT count(*) FROM events WHERE id = $1", &[&id])? > 0)
    }
}

impl EventInbox for PgStore {
    fn admit(
        &self,
        events: &[StoredEvent],
        answers: &[Remembered],
    ) -> Result<Admitted, StoreError> {
        // The first of each id, sorted: concurrent admissions then take the
        // rows' locks in one order and cannot deadlock each other.
        let mut first: HashMap<&str, &StoredEvent> = HashMap::new();
        for event in events {
            first.entry(&event.id).or_insert(event);
        }
        let mut rows: Vec<&StoredEvent> = first.into_values().collect();
        rows.sort_by(|a, b| a.id.cmp(&b.id));
        let (ids, received, bodies) = unnest_columns(rows, event_key_and_time)?;
        let (keys, answered, answer_bodies) =
            unnest_columns(last_wins(answers, |a| &a.key), |a| (&a.key, a.at_ms))?;
        // Every node's own events go straight into its pipeline: a leader's
        // marked with its epoch, a standby's with its name (the leader's
        // sweep leaves them alone while it lives). A store that joined no
        // cluster as a node leaves them to the leader's sweep.
        let epoch = self.epoch.load(Ordering::SeqCst);
        let standby_node = self.node_name().filter(|_| epoch == STANDBY);
        let to_pipeline = epoch != STANDBY || standby_node.is_some();
        let taken_in = (epoch > STANDBY).then_some(epoch);
        let channel = self.admission_channel();
        const INSERT: &str = "INSERT INTO events (id, received_at_ms, body, in_pipeline, \
             pipeline_epoch, pipeline_node) SELECT id, at, body, true, $4, $5 \
             FROM unnest($1::text[], $2::bigint[], $3::text[]) AS a(id, at, body) \
             ON CONFLICT (id) DO NOTHING RETURNING id";
        let ids_of = |rows: Vec<tokio_postgres::Row>| rows.iter().map(|row| row.get(0)).collect();
        let new: std::collections::HashSet<String> = self.run(async |c| {
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 5] =
                [&ids, &received, &bodies, &taken_in, &standby_node];
            if to_pipeline && keys.is_empty() {
                // One statement is its own transaction: one round trip.
                // tokio-postgres returns once the server is ready for the
                // next query, which is after the commit.
                return Ok(ids_of(c.query(INSERT, &params).await?));
            }
            let tx = c.transaction().await?;
            let answers = async {
                if !keys.is_empty() {
                    tx.execute(
                        "INSERT INTO idempotency (key, at_ms, body) \
                         SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[]) \
                         ON CONFLICT (key) DO UPDATE SET at_ms = EXCLUDED.at_ms, body = EXCLUDED.body",
                        &[&keys, &answered, &answer_bodies],
                    )
                    .await?;
                }
                Ok::<_, StoreError>(())
            };
            let inserted = async { tx.query(INSERT, &params).await };
            let (inserted, ()) = tokio::try_join!(biased; inserted, answers)?;
            if !to_pipeline && !inserted.is_empty() {
                // Sent at commit: wakes the leader's sweep.
                tx.execute(NOTIFY, &[&channel]).await?;
            }
            tx.commit().await?;
            Ok(ids_of(inserted))
        })?;
        // Only an id's first place in `events` counts as new.
        let mut seen = std::collections::HashSet::new();
        Ok(Admitted {
            new: events
                .iter()
                .map(|e| seen.insert(e.id.as_str()) && new.contains(&e.id))
                .collect(),
            to_pipeline,
        })
    }

    fn backlog(&self) -> Result<Backlog, StoreError> {
        let row = self.row(
            "SELECT count(*), min(received_at_ms) FROM events WHERE in_pipeline",
            &[],
        )?;
        Ok(Backlog {
            events: as_count(row.get(0)),
            oldest_received_ms: row.get::<_, Option<i64>>(1).map(unms),
        })
    }

    fn complete_own(
        &self,
        processed: &[Processed],
        handed: &[&str],
    ) -> Result<OwnCompleted, StoreError> {
        let Some(node) = self.node_name() else {
            return Err(StoreError(
                "only a cluster node stores outcomes of its own events".into(),
            ));
        };
        let ids: Vec<&str> = processed.iter().map(|p| p.event.id.as_str()).collect();
        // The node may have taken the lead since its worker took the
        // events: those it admitted since are marked with its epoch.
        let epoch = self.epoch.load(Ordering::SeqCst);
        let epoch = (epoch > STANDBY).then_some(epoch);
        let keeps = |job: &Job| self.keeps(job);
        let (jobs_channel, admissions) = (self.jobs_channel(), self.admission_channel());
        let places = processed.iter().any(|p| !p.window_members.is_empty());
        let (mine, late, moved, jobs, closed_through) = self.run(async |c| {
            let tx = c.transaction().await?;
            const CLOSED_THROUGH: &str = closed_through_sql!("FOR SHARE");
            tx.prepare(&[CLOSED_THROUGH, OWN_EVENTS]).await?;
            // Both reads go out together, `closed_through` first, as
            // closing takes it first: a window cannot close between this
            // read and the commit, and one that closed before it takes none
            // of these members. The events are locked in one order (no
            // deadlock between two batches); one the leader's sweep took
            // meanwhile is no longer marked as this node's and is left to it.
            let closed_through = async {
                Ok::<_, StoreError>(if places {
                    Some(locked_closed_through(&tx, CLOSED_THROUGH).await?)
                } else {
                    None
                })
            };
            let (closed_through, mine) = tokio::try_join!(
                biased;
                closed_through,
                async { tx.query(OWN_EVENTS, &[&ids, &node, &epoch]).await },
            )?;
            let mut mine: std::collections::HashSet<String> =
                mine.iter().map(|row| row.get(0)).collect();
            // Placed by a standby that did not know the window had closed
            // (it learns where windows are closed through from here): the
            // leader places them again.
            let late: Vec<&str> = processed
                .iter()
                .filter(|p| {
                    mine.contains(&p.event.id)
                        && p.window_members
                            .iter()
                            .any(|m| Some(m.window_end_ms) <= closed_through)
                })
                .map(|p| p.event.id.as_str())
                .collect();
            for id in &late {
                mine.remove(*id);
            }
            let kept: Vec<&Processed> = processed
                .iter()
                .filter(|p| mine.contains(&p.event.id))
                .collect();
            let jobs = JobRows::of(
                kept.iter().flat_map(|p| &p.jobs),
                Holder::New(Some(node), &keeps),
            )?;
            let all: Vec<&str> = handed.iter().copied().chain(late.iter().copied()).collect();
            // Unmarked either way, so that the leader's sweep takes them
            // (this node's own too, if it leads now); sent with the writes.
            let unmark = async {
                if all.is_empty() {
                    return Ok(0);
                }
                let (moved, ()) = tokio::try_join!(
                    biased;
                    async {
                        tx.execute(
                            "UPDATE events SET pipeline_node = NULL, pipeline_epoch = NULL \
                             WHERE id = ANY($1) AND in_pipeline \
                             AND (pipeline_node = $2 OR pipeline_epoch = $3)",
                            &[&all, &node, &epoch],
                        )
                        .await
                    },
                    // Wakes the sweep; for nothing if none was still marked.
                    async { tx.execute(NOTIFY, &[&admissions]).await.map(drop) },
                )?;
                Ok::<_, StoreError>(moved)
            };
            let ((), moved) = tokio::try_join!(
                biased;
                write_processed(&tx, &kept, &jobs, &jobs_channel),
                unmark,
            )?;
            tx.commit().await?;
            Ok((mine, late.len(), moved, jobs, closed_through))
        })?;
        self.note_kept(&jobs);
        Ok(OwnCompleted {
            stored: mine,
            handed: moved,
            late_for_window: late,
            closed_through_ms: closed_through,
        })
    }

    fn take_unfinished(&self, max: usize) -> Result<Vec<StoredEvent>, StoreError> {
        let epoch = self.epoch.load(Ordering::SeqCst);
        let rows = self.run(async |c| {
            let tx = c.transaction().await?;
            fence(&tx, epoch).await?;
            // SKIP LOCKED: rows a standby is still inserting or completing
            // are not waited for. A live standby's own events are its own;
            // taking one from a node whose lease ran out unmarks it, so
            // that node can no longer store an outcome for it.
            let rows = tx
                .query(
                    &format!(
                        "UPDATE events SET pipeline_epoch = $1, pipeline_node = NULL \
                         WHERE id IN ( \
                             SELECT id FROM events \
                             WHERE in_pipeline AND pipeline_epoch IS DISTINCT FROM $1 \
                             AND (pipeline_node IS NULL OR pipeline_node NOT IN \
                                 (SELECT id FROM nodes WHERE lease_until_ms >= {DB_NOW_MS})) \
                             ORDER BY received_at_ms, id LIMIT $2 FOR UPDATE SKIP LOCKED) \
                         RETURNING body"
                    ),
                    &[&epoch.max(STANDBY), &ms(max as u64)],
                )
                .await?;
            tx.commit().await?;
            Ok(rows)
        })?;
        let mut events = rows
            .iter()
            .map(|row| Ok(serde_json::from_str(row.get::<_, &str>(0))?))
            .collect::<Result<Vec<StoredEvent>, StoreError>>()?;
        events.sort_by(|a, b| (a.received_at_ms, &a.id).cmp(&(b.received_at_ms, &b.id)));
        Ok(events)
    }
}

impl PgStore {
    /// Hands this node's unfinished events back to the leader (an earlier
    /// process of the same name admitted them; nothing runs them now).
    fn hand_back_mine(&self) -> Result<usize, StoreError> {
        let Some(node) = self.node_name() else {
            return Ok(0);
        };
        self.update_notifying(
            "UPDATE events SET pipeline_node = NULL WHERE in_pipeline AND pipeline_node = $1",
            &[&node],
            &self.admission_channel(),
        )
    }
}

impl ClusterStore for PgStore {
    fn join(&self, node: &str, lease_ms: u64) -> Result<(), StoreError> {
        self.join_cluster();
        let lease_ms = ms(lease_ms);
        let _ = self.node.set((node.to_string(), lease_ms));
        // A process of the same name that ended without a clean stop left
        // its jobs held: nothing delivers them now.
        let freed = self.release_mine()?;
        if freed > 0 {
            tracing::info!(node = %node, jobs = freed, "deliveries an earlier process of this node held are free again");
        }
        let handed = self.hand_back_mine()?;
        if handed > 0 {
            tracing::info!(node = %node, events = handed, "events an earlier process of this node admitted go to the leader's pipeline");
        }
        Ok(())
    }

    fn try_lead(&self, node: &str) -> Result<bool, StoreError> {
        let mut owner = self.owner.lock().unwrap_or_else(|p| p.into_inner());
        if self.epoch.load(Ordering::SeqCst) > STANDBY
            && owner.as_ref().is_some_and(|c| !c.is_closed())
        {
            return Ok(true);
        }
        self.take_lead(&mut owner, node)
    }

    fn still_leading(&self, node: &str) -> Result<bool, StoreError> {
        let mut owner = self.owner.lock().unwrap_or_else(|p| p.into_inner());
        let epoch = self.epoch.load(Ordering::SeqCst);
        if epoch <= STANDBY {
            return Ok(false);
        }
        // A round trip on the lock's own connection: a connection that only
        // looks open (a half-open socket) fails here, and the epoch says
        // whether another node took the lead meanwhile.
        if let Some(client) = owner.as_ref().filter(|c| !c.is_closed()) {
            match futures_executor::block_on(
                client.query_one("SELECT epoch FROM leader WHERE id = 1", &[]),
            ) {
                Ok(row) if row.get::<_, i64>(0) == epoch => return Ok(true),
                Ok(_) => {
                    *owner = None;
                    self.epoch.store(STANDBY, Ordering::SeqCst);
                    return Ok(false);
                }
                Err(_) => *owner = None,
            }
        }
        // The session holding the lock is gone (the database restarted, the
        // network broke): the lock went with it. Take it again unless
        // another node did; its epoch is a new one either way.
        match self.take_lead(&mut owner, node) {
            Ok(true) => Ok(true),
            Ok(false) => {
                self.epoch.store(STANDBY, Ordering::SeqCst);
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    fn admissions(&self) -> std::sync::Arc<tokio::sync::Notify> {
        self.listener(&self.admissions, self.admission_channel())
    }

    fn heartbeat(&self, node: &NodeRecord) -> Result<(), StoreError> {
        let lease_ms = self.node.get().map_or(0, |(_, lease)| *lease);
        let sent_ms = self.own_lease.now_ms();
        self.run(async |c| {
            // The old row is read in the statement's snapshot: whether the
            // lease this renews had ended already (NULL: a new node).
            let renewed = c.query_one(
                &format!(
                    "WITH old AS (SELECT lease_until_ms FROM nodes WHERE id = $1) \
                     INSERT INTO nodes (id, address, started_at_ms, seen_at_ms, is_leader, \
                     lease_until_ms) VALUES ($1, $2, $3, $4, $5, {DB_NOW_MS} + $6) \
                     ON CONFLICT (id) DO UPDATE SET address = EXCLUDED.address, \
                     seen_at_ms = EXCLUDED.seen_at_ms, is_leader = EXCLUDED.is_leader, \
                     lease_until_ms = EXCLUDED.lease_until_ms \
                     RETURNING (SELECT lease_until_ms < {DB_NOW_MS} FROM old)"
                ),
                &[
                    &node.id,
                    &node.address,
                    &ms(node.started_at_ms),
                    &ms(node.seen_at_ms),
                    &node.leading,
                    &lease_ms,
                ],
            )
            .await?;
            let had_run_out: Option<bool> = renewed.get(0);
            if self
                .own_lease
                .renewed(sent_ms, had_run_out.unwrap_or(false))
            {
                tracing::warn!(node = %node.id, "this node's lease had run out before this heartbeat: deliveries it held may be other nodes' now, and it leaves them");
            }
            if node.leading {
                // Rows of nodes that led before and died say so no more.
                c.execute(
                    "UPDATE nodes SET is_leader = false WHERE is_leader AND id <> $1",
                    &[&node.id],
                )
                .await?;
            }
            let alive = c
                .query_one(
                    &format!("SELECT count(*) FROM nodes WHERE lease_until_ms > {DB_NOW_MS}"),
                    &[],
                )
                .await?;
            let alive = u32::try_from(alive.get::<_, i64>(0)).unwrap_or(1).max(1);
            if self.alive_nodes.swap(alive, Ordering::SeqCst) != alive {
                tracing::info!(nodes = alive, "nodes delivering");
            }
            c.execute(
                "DELETE FROM nodes WHERE seen_at_ms < $1 AND NOT EXISTS ( \
                     SELECT 1 FROM jobs WHERE lease_node = nodes.id AND status = 'pending')",
                &[&ms(node.seen_at_ms.saturating_sub(NODE_FORGOTTEN_MS))],
            )
            .await?;
            Ok(())
        })
    }

    fn publish_plugin(
        &self,
        name: &str,
        candidate: bool,
        bytes: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        use sha2::{Digest, Sha256};
        let sha256 = bytes.map(|b| hex::encode(Sha256::digest(b)));
        let at = ms(crate::clock::now_ms());
        self.run(async |c| {
            c.execute(
                "INSERT INTO plugins (name, candidate, sha256, bytes, uploaded_at_ms) \
                 VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (name, candidate) DO UPDATE SET sha256 = EXCLUDED.sha256, \
                 bytes = EXCLUDED.bytes, uploaded_at_ms = EXCLUDED.uploaded_at_ms",
                &[&name, &candidate, &sha256, &bytes, &at],
            )
            .await?;
            Ok(())
        })
    }

    fn agreed_config(&self) -> Result<Option<String>, StoreError> {
        let row = self.run(async |c| {
            c.query_opt("SELECT subscriptions FROM agreed_config WHERE id = 1", &[])
                .await
        })?;
        Ok(row.map(|row| row.get(0)))
    }

    fn record_config(&self, node: &str, subscriptions: &str) -> Result<(), StoreError> {
        let at = ms(crate::clock::now_ms());
        self.run(async |c| {
            c.execute(
                "INSERT INTO agreed_config (id, subscriptions, node, at_ms) VALUES (1, $1, $2, $3) \
                 ON CONFLICT (id) DO UPDATE SET subscriptions = EXCLUDED.subscriptions, \
                 node = EXCLUDED.node, at_ms = EXCLUDED.at_ms",
                &[&subscriptions, &node, &at],
            )
            .await?;
            Ok(())
        })
    }

    fn shared_plugins(&self) -> Result<Vec<SharedPlugin>, StoreError> {
        let rows = self.run(async |c| {
            c.query(
                "SELECT name, candidate, sha256 FROM plugins ORDER BY name, candidate",
                &[],
            )
            .await
        })?;
        Ok(rows
            .iter()
            .map(|row| SharedPlugin {
                name: row.get(0),
                candidate: row.get(1),
                sha256: row.get(2),
            })
            .collect())
    }

    fn shared_plugin_bytes(
        &self,
        name: &str,
        candidate: bool,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let row = self.run(async |c| {
            c.query_opt(
                "SELECT bytes FROM plugins WHERE name = $1 AND candidate = $2",
                &[&name, &candidate],
            )
            .await
        })?;
        Ok(row.and_then(|row| row.get::<_, Option<Vec<u8>>>(0)))
    }

    fn leave(&self, node: &str) -> Result<(), StoreError> {
        self.run(async |c| {
            c.execute(
                "UPDATE nodes SET seen_at_ms = 0, lease_until_ms = 0, is_leader = false \
                 WHERE id = $1",
                &[&node],
            )
            .await?;
            Ok(())
        })
    }

    fn nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        let rows = self.run(async |c| {
            c.query(
                "SELECT id, address, started_at_ms, seen_at_ms, is_leader, \
                     (SELECT count(*) FROM jobs WHERE lease_node = nodes.id AND status = 'pending') \
                 FROM nodes ORDER BY id",
                &[],
            )
            .await
        })?;
        Ok(rows
            .iter()
            .map(|row| NodeRecord {
                id: row.get(0),
                address: row.get(1),
                started_at_ms: unms(row.get(2)),
                seen_at_ms: unms(row.get(3)),
                leading: row.get(4),
                deliveries_held: u64::try_from(row.get::<_, i64>(5)).unwrap_or(0),
            })
            .collect())
    }
}

impl JobLeases for PgStore {
    fn claim(&self, max: usize, known: &[String]) -> Result<Vec<Job>, StoreError> {
        let Some(node) = self.node_name() else {
            return Ok(Vec::new());
        };
        let rows = self.run(async |c| {
            c.query(
                "UPDATE jobs SET lease_node = $1 WHERE id IN ( \
                     SELECT id FROM jobs \
                     WHERE status = 'pending' AND lease_node IS NULL AND NOT ordered \
                       AND subscription_id = ANY($3) \
                     LIMIT $2 FOR UPDATE SKIP LOCKED) \
                 RETURNING body",
                &[&node, &ms(max as u64), &known],
            )
            .await
        })?;
        rows.iter()
            .map(|row| Ok(serde_json::from_str(row.get::<_, &str>(0))?))
            .collect()
    }

    fn record(&self, jobs: &[Job]) -> Result<usize, StoreError> {
        let Some(node) = self.node_name() else {
            return Err(StoreError("this store is not a node's".into()));
        };
        if jobs.is_empty() {
            return Ok(0);
        }
        let rows = JobRows::of(jobs, Holder::All(None))?;
        let written = self.run(async |c| {
            c.execute(
                "UPDATE jobs SET status = u.status, expiring = u.expiring, \
                     settled_at_ms = u.settled, body = u.body, \
                     lease_node = CASE WHEN u.status = 'pending' THEN jobs.lease_node END \
                 FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[]) \
                     AS u(id, status, expiring, settled, body) \
                 WHERE jobs.id = u.id AND jobs.lease_node = $6",
                &[
                    &rows.id,
                    &rows.status,
                    &rows.expiring,
                    &rows.settled,
                    &rows.body,
                    &node,
                ],
            )
            .await
        })?;
        Ok(rows.id.len().saturating_sub(written as usize))
    }

    fn free_expired(&self) -> Result<usize, StoreError> {
        self.free_jobs(
            &format!(
                "UPDATE jobs SET lease_node = NULL WHERE status = 'pending' \
                 AND lease_node IN (SELECT id FROM nodes WHERE lease_until_ms < {DB_NOW_MS})"
            ),
            &[],
        )
    }

    fn release_mine(&self) -> Result<usize, StoreError> {
        let Some(node) = self.node_name() else {
            return Ok(0);
        };
        self.free_jobs(
            "UPDATE jobs SET lease_node = NULL WHERE status = 'pending' AND lease_node = $1",
            &[&node],
        )
    }

    fn release(&self, ids: &[String]) -> Result<usize, StoreError> {
        let Some(node) = self.node_name() else {
            return Ok(0);
        };
        self.free_jobs(
            "UPDATE jobs SET lease_node = NULL \
             WHERE id = ANY($1) AND lease_node = $2 AND status = 'pending'",
            &[&ids, &node],
        )
    }

    fn held(&self) -> Result<Vec<String>, StoreError> {
        let Some(node) = self.node_name() else {
            return Ok(Vec::new());
        };
        let rows = self.run(async |c| {
            c.query(
                "SELECT id FROM jobs WHERE lease_node = $1 AND status = 'pending' AND NOT ordered",
                &[&node],
            )
            .await
        })?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }

    fn adopt_ordered(&self) -> Result<usize, StoreError> {
        let Some(node) = self.node_name() else {
            return Ok(0);
        };
        let adopted = self.run(async |c| {
            c.execute(
                "UPDATE jobs SET lease_node = $1 WHERE status = 'pending' AND ordered",
                &[&node],
            )
            .await
        })?;
        Ok(adopted as usize)
    }

    fn claimable(&self) -> std::sync::Arc<tokio::sync::Notify> {
        self.listener(&self.claimable, self.jobs_channel())
    }

    fn keep_new(&self, room: bool) {
        self.keeping.store(room, Ordering::SeqCst);
    }

    fn kept(&self, job_id: &str) -> bool {
        self.kept
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(job_id)
    }

    fn would_keep(&self, job: &Job) -> bool {
        self.keeps(job)
    }

    fn complete_pipeline_attempted(
        &self,
        processed: &[Processed],
        held: &dyn Fn(&Job) -> bool,
    ) -> Result<(), StoreError> {
        if processed.is_empty() {
            return Ok(());
        }
        // Not noted as kept: these jobs are in this node's delivery already.
        self.write_pipeline(processed, Holder::New(self.node_name(), held))
            .map(drop)
    }

    fn lease_current(&self) -> bool {
        let lease_ms = self.node.get().map_or(0, |(_, lease)| *lease);
        self.own_lease.current_at(
            self.own_lease.now_ms(),
            u64::try_from(lease_ms).unwrap_or(0),
        )
    }

    fn lapses(&self) -> u64 {
        self.own_lease.lapses()
    }
}

impl DeliveryQueue for PgStore {
    fn update_jobs(&self, jobs: &[Job]) -> Result<(), StoreError> {
        if jobs.is_empty() {
            return Ok(());
        }
        // Written on the leader (a re-send, an endpoint enabled again),
        // which delivers them itself.
        let rows = JobRows::of(jobs, Holder::All(self.node_name()))?;
        let epoch = self.epoch.load(Ordering::SeqCst);
        self.run(async |c| {
            c.at_once(&[FENCE, UPSERT_JOBS], async {
                tokio::try_join!(biased; fence(c, epoch), rows.upsert(c)).map(drop)
            })
            .await
        })
    }

    fn job(&self, id: &str) -> Result<Option<Job>, StoreError> {
        self.body("SELECT body FROM jobs WHERE id = $1", &[&id])
    }

    fn jobs_by_id(&self, ids: &[String]) -> Result<Vec<Option<Job>>, StoreError> {
        // One query, not one per id.
        let found: Vec<Job> = self.bodies("SELECT body FROM jobs WHERE id = ANY($1)", &[&ids])?;
        let mut by_id: HashMap<String, Job> =
            found.into_iter().map(|job| (job.id.clone(), job)).collect();
        Ok(ids.iter().map(|id| by_id.remove(id)).collect())
    }

    fn pending_jobs(&self) -> Result<Vec<Job>, StoreError> {
        self.bodies(
            "SELECT body FROM jobs WHERE status = 'pending' ORDER BY id",
            &[],
        )
    }

    /// The position is the id of the job the last read stopped at. Ids
    /// are read first and only the records of jobs not skipped (not in
    /// memory already) are fetched, no more at a time than can still be
    /// taken: a refill beside 100,000 jobs in memory does not carry their
    /// bodies over the wire.
    fn pending_jobs_from(
        &self,
        from: &QueuePosition,
        max: usize,
        skip: &dyn Fn(&str) -> bool,
        wanted: &dyn Fn(&Job) -> bool,
    ) -> Result<(Vec<Job>, Option<QueuePosition>), StoreError> {
        let mut out = Vec::new();
        // From the position on, then past the last id read.
        let (mut bound, mut query) = (
            String::from_utf8_lossy(&from.0).into_owned(),
            "SELECT id FROM jobs WHERE status = 'pending' AND id >= $1 ORDER BY id LIMIT $2",
        );
        loop {
            let ids: Vec<String> = self
                .run(async |c| c.query(query, &[&bound, &CHUNK]).await)?
                .iter()
                .map(|row| row.get(0))
                .collect();
            let unseen: Vec<&String> = ids.iter().filter(|id| !skip(id)).collect();
            let mut rest = &unseen[..];
            while !rest.is_empty() {
                // One more than can be taken: the first left over is the
                // position to go on from (`max` may be `usize::MAX`: all).
                let room = (max - out.len()).saturating_add(1);
                let (now, later) = rest.split_at(rest.len().min(room));
                rest = later;
                let found: Vec<Job> = self.bodies(
                    "SELECT body FROM jobs WHERE id = ANY($1) AND status = 'pending' ORDER BY id",
                    &[&now],
                )?;
                for job in found {
                    if out.len() == max {
                        return Ok((out, Some(QueuePosition(job.id.into_bytes()))));
                    }
                    if wanted(&job) {
                        out.push(job);
                    }
                }
            }
            match ids.last() {
                Some(last) if ids.len() as i64 == CHUNK => {
                    bound = last.clone();
                    query = "SELECT id FROM jobs WHERE status = 'pending' AND id > $1 \
                             ORDER BY id LIMIT $2";
                }
                _ => return Ok((out, None)),
            }
        }
    }

    fn pending_count(&self) -> Result<usize, StoreError> {
        self.count("SELECT count(*) FROM jobs WHERE status = 'pending'", &[])
    }

    fn dead_letters(&self) -> Result<Vec<Job>, StoreError> {
        self.bodies(
            "SELECT body FROM jobs WHERE status = 'dead' ORDER BY id",
            &[],
        )
    }

    fn jobs(&self) -> Result<Vec<Job>, StoreError> {
        self.bodies("SELECT body FROM jobs ORDER BY id", &[])
    }

    fn list_jobs(&self, q: &JobQuery<'_>) -> Result<JobPage, StoreError> {
        let mut page = JobPage {
            total_exact: true,
            ..JobPage::default()
        };
        let since = q.since_ms.map_or(0, ms);
        let until = q.until_ms.map_or(i64::MAX, ms);
        // Newest first: (created, id) below the cursor. No cursor: below
        // every id at `until` (the empty id sorts first).
        let (mut at, mut below) = match q.after {
            Some(c) => {
                let (at, id) = parse_cursor(c)?;
                (at, id.to_string())
            }
            None => (i64::MAX, String::new()),
        };
        let mut examined = 0usize;
        let (mut last_shown, mut last_examined) = (None, None);
        'scan: loop {
            if page.jobs.len() == q.limit && q.wanted.is_none() {
                // The page is full: only count the rest, within the budget.
                let left = ms(q.max_examined.saturating_sub(examined) as u64);
                let n = self.count(
                    "SELECT count(*) FROM (SELECT 1 FROM jobs \
                     WHERE ($1::text IS NULL OR subscription_id = $1) \
                     AND created_at_ms >= $2 AND created_at_ms < $3 \
                     AND (created_at_ms < $4 OR (created_at_ms = $4 AND id < $5)) \
                     LIMIT $6) t",
                    &[
                        &q.subscription,
                        &since,
                        &until,
                        &at,
                        &below,
                        &left.saturating_add(1),
                    ],
                )?;
                if n as i64 > left {
                    page.total += left as usize;
                    page.total_exact = false;
                } else {
                    page.total += n;
                }
                break;
            }
            let chunk =
                CHUNK.min(ms(q.max_examined.saturating_sub(examined) as u64).saturating_add(1));
            let rows = self.run(async |c| {
                c.query(
                    "SELECT created_at_ms, id, body FROM jobs \
                     WHERE ($1::text IS NULL OR subscription_id = $1) \
                     AND created_at_ms >= $2 AND created_at_ms < $3 \
                     AND (created_at_ms < $4 OR (created_at_ms = $4 AND id < $5)) \
                     ORDER BY created_at_ms DESC, id DESC LIMIT $6",
                    &[&q.subscription, &since, &until, &at, &below, &chunk],
                )
                .await
            })?;
            for row in &rows {
                if examined == q.max_examined {
                    page.total_exact = false;
                    break 'scan;
                }
                examined += 1;
                let (row_at, id): (i64, &str) = (row.get(0), row.get(1));
                at = row_at;
                below = id.to_string();
                last_examined = Some(cursor(row_at, id));
                let counting_only = page.jobs.len() == q.limit;
                if counting_only && q.wanted.is_none() {
                    page.total += 1;
                    continue;
                }
                let job: Job = serde_json::from_str(row.get(2))?;
                if q.wanted.is_some_and(|wanted| !wanted(&job)) {
                    continue;
                }
                page.total += 1;
                if !counting_only {
                    page.jobs.push(job);
                    last_shown = Some(cursor(row_at, id));
                }
            }
            if (rows.len() as i64) < chunk {
                break;
            }
        }
        let resume = if page.jobs.len() == q.limit {
            last_shown
        } else {
            last_examined
        };
        if page.total > page.jobs.len() || !page.total_exact {
            page.next = resume;
        }
        Ok(page)
    }

    /// The SQL indexes cover every row from the start.
    fn index_for_listing(&self) -> Result<usize, StoreError> {
        Ok(0)
    }
}

/// Members of windows ending at or before `up_to_ms`, whole groups in
/// order, stopping after the group that reaches `max_members`.
async fn due_members(
    c: &impl Sql,
    up_to_ms: u64,
    max_members: usize,
) -> Result<Vec<WindowMember>, StoreError> {
    let limit = ms(max_members as u64);
    let rows = c
        .query(
            "SELECT window_end_ms, group_hash, event_id, body FROM window_members \
             WHERE window_end_ms <= $1 \
             ORDER BY window_end_ms, group_hash, event_id LIMIT $2",
            &[&ms(up_to_ms), &limit],
        )
        .await?;
    let mut out: Vec<WindowMember> = rows
        .iter()
        .map(|row| serde_json::from_str(row.get(3)))
        .collect::<Result<_, _>>()?;
    // Whole groups: the rest of the group the limit cut into.
    if let Some(last) = rows.last()
        && rows.len() as i64 == limit
    {
        let (end, group, id): (i64, &str, &str) = (last.get(0), last.get(1), last.get(2));
        for row in c
            .query(
                "SELECT body FROM window_members \
                 WHERE window_end_ms = $1 AND group_hash = $2 AND event_id > $3 \
                 ORDER BY event_id",
                &[&end, &group, &id],
            )
            .await?
        {
            out.push(serde_json::from_str(row.get(0))?);
        }
    }
    Ok(out)
}

/// Replaces closed windows' members by their jobs and records where
/// windows are closed through, in `tx`.
async fn write_closed(
    tx: &impl Sql,
    members: &[WindowMember],
    rows: &JobRows,
    jobs_channel: &str,
    closed_through_ms: u64,
) -> Result<(), StoreError> {
    let (mut ends, mut groups, mut ids) = (vec![], vec![], vec![]);
    for m in members {
        ends.push(ms(m.window_end_ms));
        groups.push(m.group_hash());
        ids.push(m.event_id.as_str());
    }
    notify_if_claimable(tx, rows, jobs_channel).await?;
    if !ids.is_empty() {
        tx.execute(
            "DELETE FROM window_members w \
             USING unnest($1::bigint[], $2::text[], $3::text[]) AS d(e, g, id) \
             WHERE w.window_end_ms = d.e AND w.group_hash = d.g AND w.event_id = d.id",
            &[&ends, &groups, &ids],
        )
        .await?;
    }
    rows.upsert(tx).await?;
    tx.execute(
        "INSERT INTO markers (name, value) VALUES ('closed_through', $1) \
         ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
        &[&ms(closed_through_ms)],
    )
    .await?;
    Ok(())
}

/// Where windows are closed through, read in `tx` by `sql` (a
/// `closed_through_sql!` with its lock) with the marker's row locked:
/// `FOR UPDATE` by the node closing windows, `FOR SHARE` by a standby
/// placing members, so neither reads it while the other may still change
/// what it guards; with no lock, a plain read
/// ([`WindowStore::closed_through`]). The row exists from migration 6 on.
async fn locked_closed_through(tx: &impl Sql, sql: &str) -> Result<u64, StoreError> {
    let rows = tx.query(sql, &[]).await?;
    Ok(rows.first().map_or(0, |r| unms(r.get(0))))
}

impl WindowStore for PgStore {
    fn due_window_members(
        &self,
        up_to_ms: u64,
        max_members: usize,
    ) -> Result<Vec<WindowMember>, StoreError> {
        self.run(async |c| due_members(c, up_to_ms, max_members).await)
    }

    fn close_windows(
        &self,
        members: &[WindowMember],
        jobs: &[Job],
        closed_through_ms: u64,
    ) -> Result<(), StoreError> {
        let keeps = |job: &Job| self.keeps(job);
        let rows = JobRows::of(jobs, Holder::New(self.node_name(), &keeps))?;
        let epoch = self.epoch.load(Ordering::SeqCst);
        let channel = self.jobs_channel();
        self.run(async |c| {
            let tx = c.transaction().await?;
            fence(&tx, epoch).await?;
            write_closed(&tx, members, &rows, &channel, closed_through_ms).await?;
            tx.commit().await?;
            Ok(())
        })?;
        self.note_kept(&rows);
        Ok(())
    }

    fn close_due_windows(
        &self,
        up_to_ms: u64,
        max_members: usize,
        merge: &(dyn Fn(&[WindowMember]) -> Vec<Job> + Sync),
    ) -> Result<ClosedWindows, StoreError> {
        let keeps = |job: &Job| self.keeps(job);
        let epoch = self.epoch.load(Ordering::SeqCst);
        let channel = self.jobs_channel();
        let (closed, rows) = self.run(async |c| {
            let tx = c.transaction().await?;
            fence(&tx, epoch).await?;
            // Before the read: a standby's members committed after it would
            // otherwise land in a window this close marks as closed.
            locked_closed_through(&tx, closed_through_sql!("FOR UPDATE")).await?;
            let members = due_members(&tx, up_to_ms, max_members).await?;
            if members.is_empty() {
                return Ok((ClosedWindows::default(), None));
            }
            let jobs = merge(&members);
            let rows = JobRows::of(&jobs, Holder::New(self.node_name(), &keeps))?;
            write_closed(&tx, &members, &rows, &channel, up_to_ms).await?;
            tx.commit().await?;
            Ok((
                ClosedWindows {
                    members: members.len(),
                    jobs,
                },
                Some(rows),
            ))
        })?;
        if let Some(rows) = rows {
            self.note_kept(&rows);
        }
        Ok(closed)
    }

    fn window_member_count(&self) -> Result<usize, StoreError> {
        self.count("SELECT count(*) FROM window_members", &[])
    }

    fn closed_through(&self) -> Result<u64, StoreError> {
        self.run(async |c| locked_closed_through(c, closed_through_sql!("")).await)
    }

    fn outage(&self, location: &str) -> Result<Option<OutageState>, StoreError> {
        self.body("SELECT body FROM outages WHERE location = $1", &[&location])
    }

    fn due_outages(&self, up_to_ms: u64) -> Result<Vec<OutageState>, StoreError> {
        self.bodies(
            "SELECT body FROM outages WHERE timer_ms <= $1 ORDER BY timer_ms, location",
            &[&ms(up_to_ms)],
        )
    }
}

impl SubscriptionStore for PgStore {
    fn stored_subscriptions(&self) -> Result<Vec<Subscription>, StoreError> {
        self.bodies("SELECT body FROM subscriptions ORDER BY id", &[])
    }

    fn put_subscription(&self, sub: &Subscription) -> Result<(), StoreError> {
        let body = serde_json::to_string(sub)?;
        self.run(async |c| {
            c.execute(
                "INSERT INTO subscriptions (id, body) VALUES ($1, $2) \
                 ON CONFLICT (id) DO UPDATE SET body = EXCLUDED.body",
                &[&sub.id, &body],
            )
            .await?;
            Ok(())
        })
    }

    fn delete_subscription(&self, id: &str) -> Result<(), StoreError> {
        self.run(async |c| {
            c.execute("DELETE FROM subscriptions WHERE id = $1", &[&id])
                .await?;
            Ok(())
        })
    }

    fn endpoint_health(&self) -> Result<Vec<(String, EndpointHealth)>, StoreError> {
        let rows = self.run(async |c| {
            c.query(
                "SELECT subscription_id, body FROM endpoint_health ORDER BY subscription_id",
                &[],
            )
            .await
        })?;
        rows.iter()
            .map(|row| Ok((row.get::<_, String>(0), serde_json::from_str(row.get(1))?)))
            .collect()
    }

    fn put_endpoint_health(&self, id: &str, health: &EndpointHealth) -> Result<(), StoreError> {
        let body = serde_json::to_string(health)?;
        self.run(async |c| {
            c.execute(
                "INSERT INTO endpoint_health (subscription_id, body) VALUES ($1, $2) \
                 ON CONFLICT (subscription_id) DO UPDATE SET body = EXCLUDED.body",
                &[&id, &body],
            )
            .await?;
            Ok(())
        })
    }

    fn paused_jobs(&self, subscription_id: &str) -> Result<Vec<Job>, StoreError> {
        self.bodies(
            "SELECT body FROM jobs WHERE status = 'paused' AND subscription_id = $1 ORDER BY id",
            &[&subscription_id],
        )
    }
}

impl IdempotencyStore for PgStore {
    fn remember(&self, answer: &Remembered) -> Result<(), StoreError> {
        let body = serde_json::to_string(answer)?;
        self.run(async |c| {
            c.execute(
                "INSERT INTO idempotency (key, at_ms, body) VALUES ($1, $2, $3) \
                 ON CONFLICT (key) DO UPDATE SET at_ms = EXCLUDED.at_ms, body = EXCLUDED.body",
                &[&answer.key, &ms(answer.at_ms), &body],
            )
            .await?;
            Ok(())
        })
    }

    fn remembered(&self, key: &str) -> Result<Option<Remembered>, StoreError> {
        self.body("SELECT body FROM idempotency WHERE key = $1", &[&key])
    }

    fn forget_answers(&self, before_ms: u64) -> Result<usize, StoreError> {
        let n = self.run(async |c| {
            c.execute(
                "DELETE FROM idempotency WHERE at_ms < $1",
                &[&ms(before_ms)],
            )
            .await
        })?;
        Ok(n as usize)
    }
}

impl RetentionStore for PgStore {
    fn expire(&self, what: Expiring, before_ms: u64, max: usize) -> Result<Expired, StoreError> {
        let limit = ms(max as u64);
        let before = ms(before_ms);
        let removed = self.run(async |c| {
            Ok(match what {
                Expiring::Events => {
                    c.execute(
                        "DELETE FROM events WHERE received_at_ms < $1 AND NOT in_pipeline \
                         AND id IN (SELECT id FROM events \
                         WHERE received_at_ms < $1 AND NOT in_pipeline \
                         ORDER BY received_at_ms LIMIT $2)",
                        &[&before, &limit],
                    )
                    .await?
                }
                // The conditions stand outside the subquery too: a job
                // re-sent between the two is checked again and stays.
                Expiring::Delivered | Expiring::DeadLetters => {
                    c.execute(
                        "DELETE FROM jobs WHERE expiring = $1 AND settled_at_ms < $2 AND id IN ( \
                         SELECT id FROM jobs WHERE expiring = $1 AND settled_at_ms < $2 \
                         ORDER BY settled_at_ms LIMIT $3)",
                        &[&what.name(), &before, &limit],
                    )
                    .await?
                }
            })
        })? as usize;
        Ok(Expired {
            removed,
            more: removed == max,
        })
    }

    /// Rows are indexed by time as they are written.
    fn index_for_retention(&self) -> Result<usize, StoreError> {
        Ok(0)
    }

    fn stats(&self) -> Result<StoreStats, StoreError> {
        let row = self.row(
            "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM jobs), \
             (SELECT count(*) FROM jobs WHERE status = 'pending'), \
             (SELECT count(*) FROM jobs WHERE status = 'dead'), \
             (SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint \
              FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
              WHERE n.nspname = current_schema() AND c.relkind = 'r')",
            &[],
        )?;
        let n = |i: usize| unms(row.get::<_, i64>(i));
        Ok(StoreStats {
            events: n(0),
            deliveries: n(1),
            pending: n(2),
            dead_letters: n(3),
            bytes: n(4),
        })
    }
}

impl Store for PgStore {
    /// Every write committed before it returned.
    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// One round trip: a lost database is an error here.
    fn health(&self) -> Result<(), StoreError> {
        self.run(async |c| {
            c.batch_execute("SELECT 1").await?;
            Ok(())
        })
    }

    /// Reconnects (the pool drops broken connections as it finds them).
    fn recover(&self) -> Result<(), StoreError> {
        self.health()
    }

    /// Events are accepted straight into the database: no journal.
    fn inbox(self: std::sync::Arc<Self>) -> Option<std::sync::Arc<dyn EventInbox>> {
        Some(self)
    }

    fn leases(self: std::sync::Arc<Self>) -> Option<std::sync::Arc<dyn JobLeases>> {
        self.node.get().is_some().then_some(self)
    }

    fn cluster(self: std::sync::Arc<Self>) -> Option<std::sync::Arc<dyn ClusterStore>> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_entries_win_and_keep_their_first_place() {
        let items = [("a", 1), ("b", 2), ("a", 3)];
        let kept = last_wins(&items, |i| i.0);
        assert_eq!(kept, [&("a", 3), &("b", 2)]);
    }

    #[test]
    fn cursors_read_back_what_they_write() {
        let c = cursor(0x1234, "job-1/x");
        assert_eq!(c, "0000000000001234/job-1/x");
        assert_eq!(parse_cursor(&c).unwrap(), (0x1234, "job-1/x"));
        assert!(parse_cursor("nonsense").is_err());
    }
}
