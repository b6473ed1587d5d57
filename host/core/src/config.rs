//! Configuration: the TOML file `hookhost serve --config FILE` reads.
//!
//! Every key has a default, so an empty file (or no file) is a valid config.
//! Errors name the file, the line and the key.

use crate::model::Envelope;
use crate::model::MergeRule;
use crate::model::Mode;
use crate::model::PluginStep;
use crate::model::Subscription;
pub use hookhost_plugin_runtime::{
    Allocator, Isolation, PluginOverride, PluginSettings, PluginsConfig,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::catalog::Catalogs;

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub plugins: PluginsConfig,
    /// Global router plugins, run on every event in order.
    pub routes: Vec<PluginStep>,
    pub subscriptions: Vec<Subscription>,
    pub aggregation: AggregationConfig,
    pub catalog: CatalogConfig,
    pub delivery: DeliveryConfig,
    pub retention: RetentionConfig,
    pub store: StoreConfig,
    pub cluster: ClusterConfig,
    /// The catalogs `catalog.files` name, loaded by [`Config::load`].
    #[serde(skip)]
    pub catalogs: Catalogs,
}

/// `[delivery]`: settings of all deliveries.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// Networks endpoints may be in although they are not public internet
    /// addresses (loopback, private, link-local, ...): IPs or CIDR ranges,
    /// e.g. `["127.0.0.1", "10.20.0.0/16"]`. Empty: only public addresses.
    pub allowed_networks: Vec<String>,
    /// Attempts in flight to one host (scheme, host and port) over all
    /// subscriptions; each subscription's `max_in_flight` applies as well.
    pub max_in_flight_per_host: usize,
    /// Deliveries held in memory (waiting or in flight); more wait in the
    /// store and are loaded as these finish.
    pub max_jobs_in_memory: usize,
    /// After this many failed attempts in a row a delivery emits the
    /// operational event `hookhost.delivery.failing` (once).
    pub failing_after_attempts: u32,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            allowed_networks: Vec::new(),
            max_in_flight_per_host: 64,
            max_jobs_in_memory: 100_000,
            failing_after_attempts: 4,
        }
    }
}

impl DeliveryConfig {
    pub fn target_policy(&self) -> Result<crate::ssrf::TargetPolicy, String> {
        crate::ssrf::TargetPolicy::new(&self.allowed_networks)
            .map_err(|e| format!("delivery.allowed_networks: {e}"))
    }
}

/// `[retention]`: how long finished work is kept. Records older than their
/// period are removed in the background, oldest first, in batches; pending
/// and paused deliveries and open windows are never removed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// `false`: keep everything for ever.
    pub enabled: bool,
    /// Delivered (and filtered) deliveries with their attempts, counted
    /// from their last attempt.
    #[serde(with = "humantime_serde")]
    pub delivered: Duration,
    /// Dead letters (dead and plugin-error deliveries), likewise.
    #[serde(with = "humantime_serde")]
    pub dead_letters: Duration,
    /// Accepted events, from their arrival. A client's event id is known
    /// as a duplicate for this long; re-sending a plugin-error delivery
    /// needs its event.
    #[serde(with = "humantime_serde")]
    pub events: Duration,
    /// How often a removal pass starts.
    #[serde(with = "humantime_serde")]
    pub every: Duration,
    /// Records removed per store write; passes pause between batches so
    /// ingest and delivery keep the disk.
    pub batch: usize,
    /// How often the stored counts and bytes of `/metrics` are counted
    /// (a key scan of the store).
    #[serde(with = "humantime_serde")]
    pub count_every: Duration,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        const DAY: u64 = 24 * 3600;
        RetentionConfig {
            enabled: true,
            delivered: Duration::from_secs(30 * DAY),
            dead_letters: Duration::from_secs(90 * DAY),
            events: Duration::from_secs(30 * DAY),
            every: Duration::from_secs(60),
            batch: 1000,
            count_every: Duration::from_secs(300),
        }
    }
}

impl RetentionConfig {
    fn validate(&self) -> Result<(), String> {
        if self.batch == 0 {
            return Err("retention.batch must be at least 1".into());
        }
        if self.every.is_zero() || self.count_every.is_zero() {
            return Err("retention.every and retention.count_every must be above 0".into());
        }
        Ok(())
    }

    /// The period of `what`.
    pub fn period(&self, what: crate::store::Expiring) -> Duration {
        use crate::store::Expiring;
        match what {
            Expiring::Delivered => self.delivered,
            Expiring::DeadLetters => self.dead_letters,
            Expiring::Events => self.events,
        }
    }
}

/// `[catalog]`: which event catalogs describe the types this server carries.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CatalogConfig {
    /// Catalog files (JSON), relative to the config file.
    pub files: Vec<PathBuf>,
    /// Refuse (422) events whose type is in no catalog, or only announced.
    pub strict: bool,
}

/// `[store]`: where deliveries, windows and subscriptions are kept.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    pub backend: StoreBackend,
    /// PostgreSQL connection string (a `postgres://` URL or `key=value`
    /// words), or `env:NAME`. Never logged: it may hold a password.
    pub url: Option<String>,
    /// Connections to PostgreSQL this node keeps open.
    pub pool_size: usize,
    /// The PostgreSQL schema hookhost's tables live in (made if missing).
    pub schema: String,
    /// PEM certificates of the authorities the database's certificate is
    /// checked against (relative to the config file). Given, or with
    /// `sslmode=require` in `url` (then Mozilla's roots), connections use
    /// TLS and verify the server's certificate and host name.
    pub tls_ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    /// The embedded sled files in `server.data_dir`.
    Sled,
    /// A PostgreSQL database (`store.url`).
    Postgres,
}

/// `[cluster]`: several nodes on one PostgreSQL schema (`[store]`). Every
/// node takes events in, runs their pipeline and delivers; one leads and
/// runs windows, outage timers and ordered lanes; the others stand by for
/// that and take the lead when it ends.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// This node's name in the node list (or `env:NAME`); unset:
    /// `<hostname>-<pid>`. Unique per running process.
    pub node_id: Option<String>,
    /// The URL other nodes' clients are sent to for this node's management
    /// API when it leads (or `env:NAME`); unset: `http://<server.listen>`.
    pub advertise: Option<String>,
    /// How often a standby tries to take the lead (and every node records
    /// its heartbeat).
    pub takeover_ms: u64,
    /// How often the leader looks for events other nodes admitted, besides
    /// being woken by their `NOTIFY` (a safety net, not the usual path).
    pub sweep_ms: u64,
    /// How long a node's hold on the deliveries it claimed lasts without a
    /// heartbeat: after a node dies, others take its deliveries this long
    /// after its last heartbeat (or at once after a clean stop).
    pub lease_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            node_id: None,
            advertise: None,
            takeover_ms: 1000,
            sweep_ms: 1000,
            lease_ms: 5000,
        }
    }
}

/// The URL may hold a password: shown as set or not, never as written.
impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("backend", &self.backend)
            .field("url", &self.url.as_ref().map(|_| "(set)"))
            .field("pool_size", &self.pool_size)
            .field("schema", &self.schema)
            .finish()
    }
}

impl StoreConfig {
    /// What the PostgreSQL store is opened with, as `[store]` says.
    pub fn postgres_settings(&self) -> crate::store::postgres::PgSettings {
        crate::store::postgres::PgSettings {
            url: self.url.clone().unwrap_or_default(),
            schema: self.schema.clone(),
            pool_size: self.pool_size,
            tls_ca_file: self.tls_ca_file.clone(),
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            backend: StoreBackend::Sled,
            url: None,
            pool_size: 8,
            schema: "hookhost".into(),
            tls_ca_file: None,
        }
    }
}

impl StoreConfig {
    fn validate(&mut self) -> Result<(), String> {
        if let Some(url) = &mut self.url {
            from_env(url, "store.url")?;
        }
        if self.backend == StoreBackend::Postgres && self.url.is_none() {
            return Err("store.url is required with store.backend = \"postgres\"".into());
        }
        if !(1..=256).contains(&self.pool_size) {
            return Err("store.pool_size must be 1 to 256".into());
        }
        let name_ok = self.schema.len() <= 63
            && self
                .schema
                .starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && self
                .schema
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !name_ok {
            return Err(format!(
                "store.schema {:?}: use 1 to 63 of a-z, 0-9 and _, not starting with a digit",
                self.schema
            ));
        }
        Ok(())
    }
}

/// `[server]`: where hookhost listens and keeps its data.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address of the HTTP API.
    pub listen: String,
    /// Folder of the embedded sled database.
    pub data_dir: PathBuf,
    /// Folder of the ingest journal; unset: `<data_dir>/journal`. On a disk
    /// of its own, ingest's syncs do not queue behind the store's writes.
    pub journal_dir: Option<PathBuf>,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// On SIGTERM/SIGINT, how long in-flight delivery attempts may finish.
    pub shutdown_grace_ms: u64,
    /// Bearer token of the management API (`HOOKHOST_ADMIN_TOKEN` overrides).
    /// Unset: the management API is disabled.
    pub admin_token: Option<String>,
    /// Bearer token `POST /v1/events` requires (`HOOKHOST_INGEST_TOKEN`
    /// overrides). Unset: ingest is open (keep `listen` on loopback then).
    pub ingest_token: Option<String>,
    /// sled's page cache: bounds the memory stored state takes.
    pub cache_mib: u64,
    /// zstd-compress a new sled data folder's log: a quarter of the disk,
    /// at the cost of memory during fast ingest and latency at saturation
    /// (BENCHMARKS.md). A folder keeps the way it was first written.
    pub compress_store: bool,
    /// How often journal segments whose events are all in the store are
    /// retired (after a store flush).
    pub checkpoint_ms: u64,
    /// Acknowledged events that may wait for the pipeline; beyond it, ingest
    /// answers only as the pipeline catches up. The worker takes 10,000
    /// events in under a second: more queue buys no throughput,
    /// only memory (~0.4 KB an event) when large batches outrun it.
    pub pipeline_backlog: usize,
    /// Acknowledged work not yet started (events queued for the pipeline,
    /// new deliveries due and waiting for a slot of an endpoint that keeps
    /// pace) at which ingest waits before accepting more: at saturation an
    /// event waits at the door instead of in a queue. 0: never waits.
    pub ingest_backlog: usize,
    /// The longest a request waits at that door (then it goes on): what a
    /// misjudged endpoint can cost ingest at most.
    pub ingest_wait_ms: u64,
    /// A connection must send a complete request head within this long of
    /// opening, or of its previous answer: the bound on slow headers and the
    /// keep-alive idle timeout in one.
    pub header_timeout_ms: u64,
    /// How long reading a request body may take.
    pub body_timeout_ms: u64,
    /// Open API connections at most; unset: half the process's file limit
    /// (raised to its hard limit at start), at most 16,384. At the cap the
    /// longest-idle connection is closed for a new one; when none is idle,
    /// the new one gets 503.
    pub max_connections: Option<usize>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8080".into(),
            data_dir: PathBuf::from("data/db"),
            journal_dir: None,
            max_body_bytes: 1 << 20,
            shutdown_grace_ms: 10_000,
            admin_token: None,
            ingest_token: None,
            cache_mib: crate::store::sled::DEFAULT_CACHE_MIB,
            compress_store: false,
            checkpoint_ms: 1000,
            pipeline_backlog: 10_000,
            ingest_backlog: 64,
            ingest_wait_ms: 100,
            header_timeout_ms: 20_000,
            body_timeout_ms: 30_000,
            max_connections: None,
        }
    }
}

/// Checks on a subscription, from the config file or the API: here, not in
/// the model, because they need signing (`whsec_` secrets) and URL rules.
impl Subscription {
    fn validate(&self, i: usize) -> Result<(), String> {
        if self.id.is_empty() {
            return Err(format!("subscriptions[{i}].id must not be empty"));
        }
        self.validate_as(&format!("subscriptions[{i}] (id {:?})", self.id))
    }

    /// Checks the subscription on its own; errors start with `key`.
    pub fn validate_as(&self, key: &str) -> Result<(), String> {
        if self.id.is_empty() || self.id.len() > 128 || self.id.contains(['/', '\0']) {
            return Err(format!("{key}.id must be 1 to 128 characters, without `/`"));
        }
        let url = self
            .url
            .parse::<http::Uri>()
            .map_err(|e| format!("{key}.url: {e}"))?;
        match url.scheme_str() {
            Some("http") | Some("https") if url.host().is_some() => {}
            _ => {
                return Err(format!(
                    "{key}.url must be an http:// or https:// URL with a host"
                ));
            }
        }
        if self.types.is_empty() {
            return Err(format!(
                "{key}.types must list at least one type (or \"*\")"
            ));
        }
        for t in &self.types {
            if t.is_empty() || t[..t.len() - 1].contains('*') {
                return Err(format!(
                    "{key}.types: {t:?} is not a type, a `prefix.*` or `*`"
                ));
            }
        }
        if matches!(self.envelope, Envelope::BikeepV1 | Envelope::BikeepV2) && self.seed.is_none() {
            return Err(format!(
                "{key}.seed is required for the {:?} envelope",
                self.envelope
            ));
        }
        if self.secrets.len() > 2 {
            return Err(format!(
                "{key}.secrets: at most two (the old and the new during rotation)"
            ));
        }
        for (name, value) in &self.headers {
            subscription_header(name, value).map_err(|e| format!("{key}.headers.{name}: {e}"))?;
        }
        if let Some(limit) = &self.rate_limit
            && (!(limit.per_second > 0.0 && limit.per_second.is_finite()) || limit.burst == 0)
        {
            return Err(format!(
                "{key}.rate_limit: per_second must be above 0 and burst at least 1"
            ));
        }
        for s in &self.secrets {
            crate::sign::whsec_key(s).map_err(|e| format!("{key}.secrets: {e}"))?;
        }
        if self.retiring_secrets.len() > 4 {
            return Err(format!("{key}.retiring_secrets: at most four"));
        }
        for s in &self.retiring_secrets {
            crate::sign::whsec_key(&s.secret)
                .map_err(|e| format!("{key}.retiring_secrets: {e}"))?;
        }
        if let Some(order) = &self.ordering
            && !order.key.starts_with('/')
        {
            return Err(format!(
                "{key}.ordering.key: {:?} is not a JSON pointer such as \"/location_id\"",
                order.key
            ));
        }
        if self.max_in_flight == 0 {
            return Err(format!("{key}.max_in_flight must be at least 1"));
        }
        for status in self.retry.retry_statuses.iter().flatten() {
            status
                .check()
                .map_err(|e| format!("{key}.retry.retry_statuses: {e}"))?;
        }
        if self.retry.timeout_ms == 0 {
            return Err(format!("{key}.retry.timeout_ms must be at least 1"));
        }
        Ok(())
    }
}

/// `[aggregation]`: which event types are merged per window, and the
/// derived outage event.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AggregationConfig {
    /// Per type: `[aggregation.types.alarm]`, over the built-in defaults
    /// (the bike-parking seed's table, see [`AggregationConfig::for_type`]).
    pub types: BTreeMap<String, TypeAggregation>,
    /// How often ended windows and outage timers are looked for.
    pub tick_ms: u64,
    pub outage: OutageConfig,
}

impl Default for AggregationConfig {
    fn default() -> Self {
        AggregationConfig {
            types: BTreeMap::new(),
            tick_ms: 100,
            outage: OutageConfig::default(),
        }
    }
}

/// `[aggregation.types.NAME]`; unset keys keep the built-in default.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TypeAggregation {
    pub interval: Option<Mode>,
    /// JSON pointer into `data` whose value groups a window's events.
    pub group_by: Option<String>,
    /// Array fields and how they merge: `{ devices = "union:device_id" }`.
    pub merge: Option<BTreeMap<String, MergeRule>>,
}

/// How one event type is aggregated, defaults and overrides resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct TypeSettings {
    pub mode: Mode,
    pub group_by: String,
    pub merge: BTreeMap<String, MergeRule>,
}

/// The bike-parking seed's "Aggregation intervals" table.
const SEED_INTERVALS: [(&str, u64); 5] = [
    ("alarm", 60),
    ("connection", 5 * 60),
    ("connection_confirmed", 15 * 60),
    ("status", 5 * 60),
    ("parking_reminder", 24 * 3600),
];

impl AggregationConfig {
    /// Mode, group key and merge rules of `event_type`: `[aggregation.types]`
    /// over the seed's table (types not in it are direct); grouped by
    /// `/location_id`; `devices` united by `device_id`, `parking_details`
    /// concatenated.
    pub fn for_type(&self, event_type: &str) -> TypeSettings {
        let mode = SEED_INTERVALS
            .iter()
            .find(|(t, _)| *t == event_type)
            .map_or(Mode::Direct, |(_, secs)| {
                Mode::Every(Duration::from_secs(*secs))
            });
        let mut settings = TypeSettings {
            mode,
            group_by: "/location_id".into(),
            merge: BTreeMap::from([
                (
                    "devices".to_string(),
                    MergeRule::Union {
                        key: "device_id".into(),
                    },
                ),
                ("parking_details".to_string(), MergeRule::Concat),
            ]),
        };
        if let Some(o) = self.types.get(event_type) {
            if let Some(mode) = o.interval {
                settings.mode = mode;
            }
            if let Some(g) = &o.group_by {
                settings.group_by = g.clone();
            }
            if let Some(m) = &o.merge {
                settings.merge = m.clone();
            }
        }
        settings
    }

    /// Every type with settings of its own: the seed's table and `types`.
    pub fn named_types(&self) -> Vec<String> {
        SEED_INTERVALS
            .iter()
            .map(|(t, _)| t.to_string())
            .chain(self.types.keys().cloned())
            .collect()
    }

    fn validate(&self) -> Result<(), String> {
        if self.tick_ms == 0 {
            return Err("aggregation.tick_ms must be at least 1".into());
        }
        for (name, t) in &self.types {
            if let Some(g) = &t.group_by
                && !(g.is_empty() || g.starts_with('/'))
            {
                return Err(format!(
                    "aggregation.types.{name}.group_by: {g:?} is not a JSON pointer (\"/field\" or \"\" for one group)"
                ));
            }
        }
        let o = &self.outage;
        if o.enabled && !(o.group_by.starts_with('/')) {
            return Err(format!(
                "aggregation.outage.group_by: {:?} is not a JSON pointer such as \"/location_id\"",
                o.group_by
            ));
        }
        Ok(())
    }
}

/// `[aggregation.outage]`: the seed's `connection_confirmed`, emitted once
/// when a location's latest `connection` state stays `offline` for `after`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutageConfig {
    pub enabled: bool,
    /// How long a location must stay offline.
    #[serde(with = "humantime_serde")]
    pub after: Duration,
    /// The type whose `data.connection` (`"offline"` or `"online"`) is tracked.
    pub event_type: String,
    /// The type of the derived event.
    pub confirmed_type: String,
    /// JSON pointer to the location a state belongs to.
    pub group_by: String,
    /// How far after its arrival an event's `timestamp` may lie and still
    /// move the state (producers' clocks drift; beyond it, the event is
    /// delivered but ignored for the outage state).
    #[serde(with = "humantime_serde")]
    pub max_future_skew: Duration,
}

impl Default for OutageConfig {
    fn default() -> Self {
        OutageConfig {
            enabled: true,
            after: Duration::from_secs(2 * 3600),
            event_type: "connection".into(),
            confirmed_type: "connection_confirmed".into(),
            group_by: "/location_id".into(),
            max_future_skew: Duration::from_secs(300),
        }
    }
}

mod humantime_serde {
    use serde::Deserialize;
    use std::time::Duration;

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!("{text:?} is not a duration such as \"2h\": {e}"))
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}: {message}")]
    Invalid { file: PathBuf, message: String },
    #[error(transparent)]
    Catalog(#[from] crate::catalog::CatalogError),
}

impl Config {
    /// Reads and checks a config file. Relative paths in it are taken
    /// relative to the file's folder, so a config works from any directory.
    pub fn load(file: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
            file: file.to_owned(),
            source,
        })?;
        let mut config = Config::parse(&text).map_err(|message| ConfigError::Invalid {
            file: file.to_owned(),
            message,
        })?;
        for (var, slot) in [
            ("HOOKHOST_ADMIN_TOKEN", &mut config.server.admin_token),
            ("HOOKHOST_INGEST_TOKEN", &mut config.server.ingest_token),
        ] {
            if let Ok(token) = std::env::var(var)
                && !token.is_empty()
            {
                *slot = Some(token);
            }
        }
        if config.server.admin_token.is_some()
            && config.server.admin_token == config.server.ingest_token
        {
            return Err(ConfigError::Invalid {
                file: file.to_owned(),
                message: "server.admin_token and server.ingest_token must differ".into(),
            });
        }
        let base = file.parent().unwrap_or(Path::new("."));
        config.plugins.dir = base.join(&config.plugins.dir);
        config.server.data_dir = base.join(&config.server.data_dir);
        if let Some(journal) = &mut config.server.journal_dir {
            *journal = base.join(&*journal);
        }
        if let Some(cache) = &mut config.plugins.cache_dir {
            *cache = base.join(&*cache);
        }
        if let Some(ca) = &mut config.store.tls_ca_file {
            *ca = base.join(&*ca);
        }
        for catalog in &mut config.catalog.files {
            *catalog = base.join(&*catalog);
        }
        let mut catalogs = Catalogs::load(&config.catalog.files)?;
        catalogs.add_built_in(crate::operational::catalog())?;
        config
            .with_catalogs(catalogs)
            .map_err(|message| ConfigError::Invalid {
                file: file.to_owned(),
                message,
            })
    }

    /// Applies loaded catalogs: checks each subscription's types against its
    /// tier, and takes each type's delivery mode unless `[aggregation.types]`
    /// sets one.
    /// Checks a subscription made over the API as the config file's are
    /// checked: fields, endpoint address, tiers against the catalogs.
    pub fn check_subscription(&self, sub: &Subscription) -> Result<(), String> {
        sub.validate_as("subscription")?;
        let url: http::Uri = sub
            .url
            .parse()
            .map_err(|e| format!("subscription.url: {e}"))?;
        self.delivery
            .target_policy()?
            .check_url(&url)
            .map_err(|e| format!("subscription.url: {e}"))?;
        if let Some(t) = sub
            .types
            .iter()
            .find(|t| !self.catalogs.allows(sub.tier, t))
        {
            return Err(format!(
                "subscription.types: {t:?} is a partner type; a public subscription cannot receive it (set tier = \"partner\")"
            ));
        }
        Ok(())
    }

    pub fn with_catalogs(mut self, catalogs: Catalogs) -> Result<Config, String> {
        for (i, sub) in self.subscriptions.iter().enumerate() {
            for t in &sub.types {
                if !catalogs.allows(sub.tier, t) {
                    return Err(format!(
                        "subscriptions[{i}] (id {:?}).types: {t:?} is a partner type; a public subscription cannot receive it (set tier = \"partner\")",
                        sub.id
                    ));
                }
            }
        }
        for (_, event_type) in catalogs.types() {
            if let Some(delivery) = &event_type.delivery {
                let entry = self
                    .aggregation
                    .types
                    .entry(event_type.name.clone())
                    .or_default();
                if entry.interval.is_none() {
                    entry.interval = Some(delivery.mode);
                }
            }
        }
        if self.catalog.strict && self.catalog.files.is_empty() {
            return Err("catalog.strict needs at least one file in catalog.files".into());
        }
        self.catalogs = catalogs;
        Ok(self)
    }

    /// Parses config text; the error says where (line and column) and what.
    pub fn parse(text: &str) -> Result<Config, String> {
        let mut config: Config = toml::from_str(text).map_err(|e| {
            let place = e.span().map(|span| {
                let line = text[..span.start].matches('\n').count() + 1;
                let column = span.start - text[..span.start].rfind('\n').map_or(0, |i| i + 1) + 1;
                format!("line {line}, column {column}: ")
            });
            format!("{}{}", place.unwrap_or_default(), e.message())
        })?;
        for (i, sub) in config.subscriptions.iter_mut().enumerate() {
            sub.from_config = true;
            let key = format!("subscriptions[{i}] (id {:?})", sub.id);
            if let Some(seed) = &mut sub.seed {
                from_env(seed, &format!("{key}.seed"))?;
            }
            for secret in &mut sub.secrets {
                from_env(secret, &format!("{key}.secrets"))?;
            }
            for (name, value) in &mut sub.headers {
                from_env(value, &format!("{key}.headers.{name}"))?;
            }
        }
        config.plugins.validate()?;
        config.aggregation.validate()?;
        config.retention.validate()?;
        config.store.validate()?;
        // Per-node values in a config file every node shares (containers).
        if let Some(id) = &mut config.cluster.node_id {
            from_env(id, "cluster.node_id")?;
        }
        if let Some(address) = &mut config.cluster.advertise {
            from_env(address, "cluster.advertise")?;
        }
        let targets = config.delivery.target_policy()?;
        let mut ids = std::collections::HashSet::new();
        for (i, sub) in config.subscriptions.iter().enumerate() {
            sub.validate(i)?;
            if let Ok(url) = sub.url.parse::<http::Uri>() {
                targets
                    .check_url(&url)
                    .map_err(|e| format!("subscriptions[{i}] (id {:?}).url: {e}", sub.id))?;
            }
            if !ids.insert(sub.id.as_str()) {
                return Err(format!("subscriptions[{i}].id {:?} is used twice", sub.id));
            }
        }
        if config.server.cache_mib == 0 {
            return Err("server.cache_mib must be at least 1".into());
        }
        if config.delivery.max_jobs_in_memory == 0 {
            return Err("delivery.max_jobs_in_memory must be at least 1".into());
        }
        if config.delivery.max_in_flight_per_host == 0 {
            return Err("delivery.max_in_flight_per_host must be at least 1".into());
        }
        if config.server.pipeline_backlog == 0 {
            return Err("server.pipeline_backlog must be at least 1".into());
        }
        if config.cluster.takeover_ms == 0 || config.cluster.sweep_ms == 0 {
            return Err("cluster.takeover_ms and cluster.sweep_ms must be at least 1".into());
        }
        if config.cluster.lease_ms < 2 * config.cluster.takeover_ms {
            // Renewed every heartbeat: one missed beat must not lose it.
            return Err(format!(
                "cluster.lease_ms ({}) must be at least twice cluster.takeover_ms ({})",
                config.cluster.lease_ms, config.cluster.takeover_ms
            ));
        }
        if config.server.checkpoint_ms == 0 {
            return Err("server.checkpoint_ms must be at least 1".into());
        }
        if config.server.max_body_bytes == 0 {
            return Err("server.max_body_bytes must be at least 1".into());
        }
        if config.server.header_timeout_ms == 0 || config.server.body_timeout_ms == 0 {
            return Err(
                "server.header_timeout_ms and server.body_timeout_ms must be at least 1".into(),
            );
        }
        if config.server.max_connections == Some(0) {
            return Err("server.max_connections must be at least 1".into());
        }
        Ok(config)
    }
}

/// Headers hookhost sets itself, or that HTTP/1 framing owns: a
/// subscription cannot replace them.
const RESERVED_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "transfer-encoding",
    "connection",
    "host",
    "user-agent",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
];

/// One of a subscription's own headers, as sent: checked (a valid name that
/// hookhost does not set itself, a value a header can carry) and marked
/// sensitive, so it never shows in debug output.
pub fn subscription_header(
    name: &str,
    value: &str,
) -> Result<(http::HeaderName, http::HeaderValue), String> {
    let name = http::HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| "not a valid header name".to_string())?;
    if RESERVED_HEADERS.contains(&name.as_str()) {
        return Err("hookhost sets this header itself".into());
    }
    let mut value = http::HeaderValue::from_str(value)
        .map_err(|_| "the value has characters a header cannot carry".to_string())?;
    value.set_sensitive(true);
    Ok((name, value))
}

/// Replaces `"env:NAME"` by the value of environment variable `NAME`, so
/// secrets need not be written in the config file.
fn from_env(value: &mut String, key: &str) -> Result<(), String> {
    if let Some(name) = value.strip_prefix("env:") {
        *value = std::env::var(name)
            .ok()
            .filter(|v| !v.is_empty())
            .ok_or_else(|| format!("{key}: environment variable {name} is not set"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_and_secrets_can_come_from_the_environment() {
        let config = |seed: &str, secret: &str| {
            format!(
                "[[subscriptions]]\nid = \"a\"\nurl = \"https://hooks.example.com/\"\ntypes = [\"*\"]\nseed = \"{seed}\"\nsecrets = [\"{secret}\"]\n"
            )
        };
        // PATH is set in any test environment (setting variables here would
        // race other tests reading the environment).
        let c = Config::parse(&config(
            "env:PATH",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        ))
        .unwrap();
        assert_eq!(c.subscriptions[0].seed, std::env::var("PATH").ok());
        let err = Config::parse(&config("env:HOOKHOST_TEST_UNSET_SEED", "whsec_x")).unwrap_err();
        assert!(
            err.contains("subscriptions[0] (id \"a\").seed")
                && err.contains("HOOKHOST_TEST_UNSET_SEED is not set"),
            "{err}"
        );
        let c =
            Config::parse("[cluster]\nnode_id = \"env:PATH\"\nadvertise = \"env:PATH\"\n").unwrap();
        assert_eq!(c.cluster.node_id, std::env::var("PATH").ok());
        assert_eq!(c.cluster.advertise, std::env::var("PATH").ok());
        let err = Config::parse(&config("s", "env:HOOKHOST_TEST_UNSET_SECRET")).unwrap_err();
        assert!(
            err.contains(".secrets: environment variable HOOKHOST_TEST_UNSET_SECRET"),
            "{err}"
        );
    }

    #[test]
    fn empty_config_has_documented_defaults() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.plugins.dir, PathBuf::from("plugins"));
        assert_eq!(c.plugins.isolation, Isolation::Reuse);
        assert_eq!(c.plugins.cpu_limit_ms, 10);
        assert_eq!(c.plugins.memory_limit_mib, 16);
        assert_eq!(c.plugins.allocator, Allocator::Pooling);
    }

    #[test]
    fn per_plugin_overrides_apply_over_defaults() {
        let c = Config::parse(
            "[plugins]\ncpu_limit_ms = 20\n[plugins.settings.alarm-filter]\nisolation = \"fresh\"\nmemory_limit_mib = 64\n",
        )
        .unwrap();
        let s = c.plugins.settings_for("alarm-filter");
        assert_eq!(s.isolation, Isolation::Fresh);
        assert_eq!(s.cpu_limit_ms, 20);
        assert_eq!(s.memory_limit_mib, 64);
        assert_eq!(c.plugins.settings_for("other").memory_limit_mib, 16);
        assert_eq!(c.plugins.max_memory_limit_mib(), 64);
    }

    #[test]
    fn unknown_key_is_reported_with_its_line() {
        let err = Config::parse("[plugins]\ndir = \"p\"\ncpu_limit = 5\n").unwrap_err();
        assert!(err.starts_with("line 3, column 1: "), "{err}");
        assert!(err.contains("cpu_limit"), "{err}");
    }

    #[test]
    fn bad_value_names_the_key() {
        let err = Config::parse("[plugins]\nisolation = \"shared\"\n").unwrap_err();
        assert!(err.starts_with("line 2"), "{err}");
        let err = Config::parse("[plugins]\ncpu_limit_ms = 0\n").unwrap_err();
        assert!(err.contains("plugins.cpu_limit_ms"), "{err}");
    }

    #[test]
    fn subscriptions_parse_with_defaults_and_plugin_config_as_json() {
        let c = Config::parse(
            r#"
[[subscriptions]]
id = "acme"
url = "https://hooks.example.com/in"
types = ["alarm", "billing.*"]
seed = "s"
[[subscriptions.plugins]]
plugin = "alarm-filter"
config = { categories = ["security"] }
"#,
        )
        .unwrap();
        let s = &c.subscriptions[0];
        assert_eq!(s.envelope, Envelope::BikeepV2);
        assert_eq!(s.retry.max_retries, 3);
        assert_eq!(s.retry.backoff_ms, 100);
        assert_eq!(s.retry.timeout_ms, 5000);
        assert_eq!(s.plugins[0].config, r#"{"categories":["security"]}"#);
        assert!(s.wants("alarm") && s.wants("billing.invoice.paid") && !s.wants("billing"));
        assert!(!s.wants("status"));
    }

    #[test]
    fn subscription_errors_name_the_key() {
        let err = Config::parse(
            "[[subscriptions]]\nid = \"a\"\nurl = \"ftp://x\"\ntypes = [\"*\"]\nenvelope = \"plain\"\n",
        )
        .unwrap_err();
        assert!(
            err.contains("subscriptions[0]") && err.contains("url"),
            "{err}"
        );
        let err =
            Config::parse("[[subscriptions]]\nid = \"a\"\nurl = \"http://x\"\ntypes = [\"*\"]\n")
                .unwrap_err();
        assert!(err.contains("seed is required"), "{err}");
        let err = Config::parse(
            "[[subscriptions]]\nid = \"a\"\nurl = \"http://x\"\ntypes = [\"*\"]\nenvelope = \"smoke\"\n",
        )
        .unwrap_err();
        assert!(err.starts_with("line 5"), "{err}");
    }

    #[test]
    fn load_names_the_file_and_resolves_paths_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hookhost.toml");
        std::fs::write(&file, "[plugins]\ndir = \"p\"\ncache_dir = \"c\"\n").unwrap();
        let c = Config::load(&file).unwrap();
        assert_eq!(c.plugins.dir, dir.path().join("p"));
        assert_eq!(c.plugins.cache_dir, Some(dir.path().join("c")));
        std::fs::write(&file, "[plugins\n").unwrap();
        let err = Config::load(&file).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("{}: line 1", file.display())),
            "{err}"
        );
    }
}
