//! The domain model: what hookhost knows about subscriptions, delivery
//! policy, event tiers and modes, and the records it stores. Plain data with
//! the rules that need nothing else (type matching, a window group's hash);
//! every other module may import it, and it imports no other module.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One plugin in a chain: its name (file stem) and its config for this place.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PluginStep {
    pub plugin: String,
    /// Any TOML (or, over the API, JSON) value; handed to the plugin as JSON text.
    #[schemars(with = "serde_json::Value")]
    #[serde(
        default,
        deserialize_with = "any_to_json_text",
        serialize_with = "json_text_as_value"
    )]
    pub config: String,
}

fn any_to_json_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let value = serde_json::Value::deserialize(d)?;
    serde_json::to_string(&value).map_err(serde::de::Error::custom)
}

fn json_text_as_value<S: serde::Serializer>(text: &str, s: S) -> Result<S::Ok, S::Error> {
    if text.is_empty() {
        return s.serialize_none();
    }
    serde_json::from_str::<serde_json::Value>(text)
        .map_err(serde::ser::Error::custom)?
        .serialize(s)
}

/// A customer endpoint and what it receives.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Subscription {
    pub id: String,
    pub url: String,
    /// Event types: exact names, prefix wildcards (`billing.*`) or `*`.
    pub types: Vec<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    /// Receive events only when a router plugin names this subscription
    /// (by id or tag), in addition to the type match.
    #[serde(default)]
    pub route_only: bool,
    #[serde(default)]
    pub tier: Tier,
    #[serde(default)]
    pub envelope: Envelope,
    /// The bike-parking seed's shared secret: `hash = SHA256(JSON(data) + seed)`.
    #[serde(default)]
    pub seed: Option<String>,
    /// Standard Webhooks secrets (`whsec_…`); two during a rotation.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// Secrets a rotation replaced, still signing until their time, so
    /// receivers can switch over (set by `rotate-secret`, not by hand).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retiring_secrets: Vec<RetiringSecret>,
    /// Filter/transform plugins, in order.
    #[serde(default)]
    pub plugins: Vec<PluginStep>,
    #[serde(default)]
    pub retry: RetryPolicy,
    /// Attempts in flight at once to this subscription's endpoint.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Delivery mode per event type for this subscription, over
    /// `[aggregation.types]`: `{ alarm = "5m", status = "direct" }`; the key
    /// `"*"` applies to every type not named.
    #[serde(default)]
    pub intervals: BTreeMap<String, Mode>,
    /// A disabled subscription receives nothing new.
    #[serde(default = "enabled_default")]
    pub enabled: bool,
    /// When hookhost disables the endpoint by itself.
    #[serde(default)]
    pub health: HealthPolicy,
    /// At most this many attempts per second to the endpoint (with a burst),
    /// beside `max_in_flight`. Unset: no rate limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// Static headers sent with every attempt (an API key the receiver
    /// wants, say; `"env:NAME"` reads a value from the environment). Values
    /// are never logged nor shown by the API.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Deliveries of one key in the order they were made (opt-in).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordering: Option<DeliveryOrder>,
    /// Defined in the config file (read-only over the API).
    #[serde(skip)]
    pub from_config: bool,
}

/// A signing secret replaced by a rotation, still signing until `until_ms`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetiringSecret {
    pub secret: String,
    pub until_ms: u64,
}

fn enabled_default() -> bool {
    true
}

/// `ordering = { key = "/location_id", on_dead = "continue" }`: the
/// deliveries of one key (a JSON pointer into the data as the
/// subscription's plugins left it) go one at a time, in the order they were
/// made; other keys flow in parallel. A delivery without the key is not
/// ordered.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeliveryOrder {
    pub key: String,
    #[serde(default)]
    pub on_dead: OnDead,
}

/// What the next delivery of a key does when the one before it is dead.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum OnDead {
    /// Goes on: the dead one stays in the dead letters.
    #[default]
    Continue,
    /// Waits until the dead one is re-sent and delivered (or dead again).
    Hold,
}

impl DeliveryOrder {
    /// The key of a delivery whose data is `data`; `None`: not ordered.
    pub fn key_of(&self, data: &str) -> Option<String> {
        let value: serde_json::Value = serde_json::from_str(data).ok()?;
        match value.pointer(&self.key)? {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Null => None,
            other => Some(other.to_string()),
        }
    }
}

/// A delivery's place among those of its key (see [`DeliveryOrder`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize, Serialize, schemars::JsonSchema)]
pub struct OrderSlot {
    pub key: String,
    /// Rises in the order deliveries are made (see `clock::next_sequence`).
    pub seq: u64,
}

/// `rate_limit = { per_second = 10, burst = 10 }`: a token bucket.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub per_second: f64,
    /// Attempts that may start at once after a quiet spell (default 1).
    #[serde(default = "default_burst")]
    pub burst: u32,
}

fn default_burst() -> u32 {
    1
}

/// `[subscriptions.health]`: when an endpoint is disabled by hookhost, and
/// what happens to its deliveries then.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct HealthPolicy {
    /// A `410 Gone` answer (the receiver says "stop sending") disables it.
    pub disable_on_gone: bool,
    /// Only failures for this long (and at least `min_failures` of them)
    /// disable it; 5 days by default, as Svix does.
    pub disable_after_ms: u64,
    pub min_failures: u32,
    /// New deliveries of a disabled endpoint: kept `paused` (sent once it is
    /// enabled again) or `dropped` (dead at once, with the reason).
    pub when_disabled: WhenDisabled,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        HealthPolicy {
            disable_on_gone: true,
            disable_after_ms: 5 * 24 * 3_600_000,
            min_failures: 10,
            when_disabled: WhenDisabled::Pause,
        }
    }
}

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum WhenDisabled {
    #[default]
    Pause,
    Drop,
}

/// What hookhost knows of an endpoint's health; stored when it changes
/// between failing and not, or is disabled or enabled.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
pub struct EndpointHealth {
    /// Start of the current run of failed attempts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_since_ms: Option<u64>,
    /// Failed attempts in the current run.
    #[serde(default)]
    pub failures: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<Disabled>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
pub struct Disabled {
    pub at_ms: u64,
    pub reason: String,
}

fn default_max_in_flight() -> usize {
    16
}

/// Who may receive a type: everyone with access (`public`) or partners only.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Tier {
    #[default]
    Public,
    Partner,
}

/// The body format of a delivery.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Envelope {
    /// `{"type", "data", "version": 2, "hash"}` (the bike-parking seed, v2).
    #[default]
    BikeepV2,
    /// The seed's version 1: `{"data", "version": 1, "hash"}`, v1 names in `data.type`.
    BikeepV1,
    /// The event itself: `{"type": ..., <data fields>}` (billing-seed style).
    Plain,
}

/// When and how often a delivery is retried.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RetryPolicy {
    /// Per-attempt timeout.
    pub timeout_ms: u64,
    /// Retries after the first attempt, on 5xx, connection errors and timeouts.
    pub max_retries: u32,
    pub backoff: Backoff,
    /// Wait before a retry (`fixed`), or the first wait (`exponential`).
    pub backoff_ms: u64,
    /// Cap on an exponential wait.
    pub max_backoff_ms: u64,
    /// Answers retried besides network errors and timeouts: classes
    /// (`"5xx"`) and single statuses (`429`). Unset: `["5xx"]` for the
    /// bike-parking envelopes (the seed's policy), else `["5xx", 429, 408]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_statuses: Option<Vec<StatusMatch>>,
    /// Longest wait an endpoint's `Retry-After` may ask for; the next
    /// attempt (and every other of the subscription) waits that long.
    pub max_retry_after_ms: u64,
}

/// A status or a class of statuses in `retry_statuses`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum StatusMatch {
    Status(u16),
    /// `"4xx"`, `"5xx"`, ...
    Class(String),
}

impl StatusMatch {
    pub fn matches(&self, status: u16) -> bool {
        match self {
            StatusMatch::Status(s) => *s == status,
            StatusMatch::Class(c) => c
                .strip_suffix("xx")
                .and_then(|d| d.parse::<u16>().ok())
                .is_some_and(|d| status / 100 == d),
        }
    }

    /// `Err` naming what is wrong with it.
    pub fn check(&self) -> Result<(), String> {
        match self {
            StatusMatch::Status(s) if (100..=599).contains(s) => Ok(()),
            StatusMatch::Class(c)
                if matches!(c.as_str(), "1xx" | "2xx" | "3xx" | "4xx" | "5xx") =>
            {
                Ok(())
            }
            other => Err(format!(
                "{other:?} is not an HTTP status (100..599) or a class like \"5xx\""
            )),
        }
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            timeout_ms: 5_000,
            max_retries: 3,
            backoff: Backoff::Fixed,
            backoff_ms: 100,
            max_backoff_ms: 6 * 3_600_000,
            retry_statuses: None,
            max_retry_after_ms: 3_600_000,
        }
    }
}

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Backoff {
    #[default]
    Fixed,
    /// `backoff_ms * 2^(retry-1)`, capped, with ±25 % jitter.
    Exponential,
}

/// Does `pattern` (exact, `prefix.*` or `*`) match `event_type`?
/// hookhost's own operational event types start with this; a wildcard
/// matches them only when its prefix names them (`hookhost.*`), never `*`.
pub const OPERATIONAL_PREFIX: &str = "hookhost.";

pub fn type_matches(pattern: &str, event_type: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => {
            event_type.starts_with(prefix)
                && (!event_type.starts_with(OPERATIONAL_PREFIX)
                    || prefix.starts_with(OPERATIONAL_PREFIX))
        }
        None => pattern == event_type,
    }
}

impl Subscription {
    pub fn wants(&self, event_type: &str) -> bool {
        self.types.iter().any(|p| type_matches(p, event_type))
    }

    /// This subscription's own choice of mode for `event_type`, if it makes one.
    pub fn mode_override(&self, event_type: &str) -> Option<Mode> {
        self.intervals
            .get(event_type)
            .or_else(|| self.intervals.get("*"))
            .copied()
    }
}

/// How events of a type reach a subscription: at once, or merged per
/// window. Written `"direct"` or as a duration (`"1m"`, `"5min"`, `"1day"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Direct,
    Every(Duration),
}

/// In schemas: `"direct"` or a duration text.
impl schemars::JsonSchema for Mode {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Mode".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "\"direct\", or a window length of at least 100ms such as \"5m\", \"1h\", \"1day\""
        })
    }
}

impl Serialize for Mode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Mode::Direct => s.serialize_str("direct"),
            Mode::Every(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for Mode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Mode, D::Error> {
        let text = String::deserialize(d)?;
        if text == "direct" {
            return Ok(Mode::Direct);
        }
        match humantime::parse_duration(&text) {
            Ok(interval) if interval >= Duration::from_millis(100) => Ok(Mode::Every(interval)),
            Ok(_) => Err(serde::de::Error::custom(format!(
                "interval {text:?} is shorter than 100ms"
            ))),
            Err(e) => Err(serde::de::Error::custom(format!(
                "{text:?} is neither \"direct\" nor a duration such as \"5m\": {e}"
            ))),
        }
    }
}

/// How one array field of the merged event is built from a window's events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MergeRule {
    /// Every element of every event, oldest event first.
    Concat,
    /// One element per value of `key` (e.g. `device_id`), the newest event's
    /// element winning, in order of first appearance.
    Union { key: String },
    /// Only the newest event's value (what scalars get anyway).
    Latest,
}

impl<'de> Deserialize<'de> for MergeRule {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<MergeRule, D::Error> {
        let text = String::deserialize(d)?;
        match text.as_str() {
            "concat" => Ok(MergeRule::Concat),
            "latest" => Ok(MergeRule::Latest),
            _ => match text.strip_prefix("union:") {
                Some(key) if !key.is_empty() => Ok(MergeRule::Union { key: key.into() }),
                _ => Err(serde::de::Error::custom(format!(
                    "{text:?} is not a merge rule: use \"concat\", \"latest\" or \"union:<key field>\""
                ))),
            },
        }
    }
}

/// An accepted event.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct StoredEvent {
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub timestamp: String,
    /// `data` as JSON text, keys in ingest order (the API shows it as the
    /// JSON value, which is what its schema says).
    #[schemars(with = "serde_json::Value")]
    pub data: String,
    pub received_at_ms: u64,
    /// Plugin errors met in the pipeline, if any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    /// Which plugins dropped or routed it: why a subscription did or did
    /// not get it.
    #[serde(default, skip_serializing_if = "PluginDecisions::is_empty")]
    pub plugin_decisions: PluginDecisions,
}

/// What plugins decided about one event in the pipeline.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct PluginDecisions {
    /// Subscriptions whose filter chain dropped it, and the filter that did.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dropped: Vec<DroppedBy>,
    /// Routers that sent it somewhere (routers answering "nowhere" are left out).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routed: Vec<RoutedBy>,
}

impl PluginDecisions {
    pub fn is_empty(&self) -> bool {
        self.dropped.is_empty() && self.routed.is_empty()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct DroppedBy {
    pub subscription: String,
    pub plugin: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct RoutedBy {
    pub plugin: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subscriptions: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Waiting for its next attempt.
    Pending,
    Delivered,
    /// Out of retries or refused (4xx): in the dead letters.
    Dead,
    /// A plugin failed on this event for this subscription; not sent.
    /// Re-sending it runs the subscription's current plugins again.
    PluginError,
    /// A `plugin_error` delivery re-run through the subscription's plugins,
    /// which then dropped it: nothing to send.
    Filtered,
    /// Its endpoint is disabled (410 Gone, or failing for days): sent when
    /// the subscription is enabled again.
    Paused,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct Attempt {
    pub at_ms: u64,
    /// HTTP status, if a response came.
    pub status: Option<u16>,
    pub latency_ms: f64,
    pub error: Option<String>,
    /// 16 hex digits of SHA-256 of the URL and body sent (see
    /// `deliver::shown_request`); absent in records made before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_sha256: Option<String>,
}

/// One (event, subscription) delivery. Its id is the `webhook-id` receivers
/// see, stable across retries, restarts and re-sends.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct Job {
    pub id: String,
    pub event_id: String,
    pub subscription_id: String,
    /// Type and data after the subscription's plugins.
    #[serde(rename = "type")]
    pub event_type: String,
    /// JSON text here and in the store; the API shows it as the JSON value
    /// (what its schema says: only the API's answers use it).
    #[schemars(with = "serde_json::Value")]
    pub data: String,
    pub status: JobStatus,
    pub attempts: Vec<Attempt>,
    /// Attempts since the job was last (re)started: counts against retries.
    #[serde(default)]
    pub attempts_in_round: u32,
    pub next_attempt_at_ms: u64,
    pub created_at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// For a window's merged delivery: the events merged into it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub merged_events: Vec<String>,
    /// Its place in its key's order, if its subscription orders deliveries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<OrderSlot>,
}

impl Job {
    /// When the job reached its present status: its last attempt, or its
    /// creation if it was never attempted (filtered, plugin error). What
    /// retention counts a finished delivery's age from.
    pub fn settled_at_ms(&self) -> u64 {
        self.attempts.last().map_or(self.created_at_ms, |a| a.at_ms)
    }
}

#[cfg(test)]
impl StoredEvent {
    /// A `report` with `{}` as its data, received at 1 ms: what the
    /// crate's store and delivery unit tests start from.
    pub(crate) fn for_test(id: &str) -> StoredEvent {
        StoredEvent {
            id: id.into(),
            event_type: "report".into(),
            timestamp: "2026-01-01T00:00:00Z".into(),
            data: "{}".into(),
            received_at_ms: 1,
            errors: Vec::new(),
            plugin_decisions: Default::default(),
        }
    }
}

#[cfg(test)]
impl Job {
    /// A never-attempted job of a `report` with `{}` as its data to
    /// subscription `s`: what the crate's unit tests start from.
    pub(crate) fn for_test(id: &str, event_id: &str, status: JobStatus) -> Job {
        Job {
            id: id.into(),
            event_id: event_id.into(),
            subscription_id: "s".into(),
            event_type: "report".into(),
            data: "{}".into(),
            status,
            attempts: Vec::new(),
            attempts_in_round: 0,
            next_attempt_at_ms: 0,
            created_at_ms: 1,
            error: None,
            merged_events: Vec::new(),
            order: None,
        }
    }
}

/// The id of the delivery of `event_id` to `subscription_id`: derived, so a
/// pipeline re-run after a crash writes the same jobs instead of duplicates.
///
/// The job id begins with 12 hex digits of time: new jobs then sort after
/// old ones, so the store writes them at the end of its index, in pages it
/// holds in memory, rather than at random places in a large history
/// (BENCHMARKS.md: "History"). For an id hookhost made (`evt_` and a
/// UUIDv7) that is the id's own time; for a producer's id, the event's
/// arrival (`received_at_ms`, stored with the event, so a re-run on any
/// node makes the same id). A hash of both ids follows.
pub fn job_id(event_id: &str, received_at_ms: u64, subscription_id: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(event_id.as_bytes());
    h.update([0]);
    h.update(subscription_id.as_bytes());
    let hash = hex::encode(h.finalize());
    match time_prefix(event_id) {
        Some(time) => format!("msg_{time}{}", &hash[..20]),
        // 48 bits of milliseconds last until the year 10889.
        None => format!(
            "msg_{:012x}{}",
            received_at_ms & 0xffff_ffff_ffff,
            &hash[..20]
        ),
    }
}

/// The 12 hex digits of time that begin a UUIDv7 in an `evt_` id.
fn time_prefix(event_id: &str) -> Option<&str> {
    let uuid = event_id.strip_prefix("evt_")?;
    let version_7 = uuid.len() == 32
        && uuid.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        && uuid.as_bytes()[12] == b'7';
    version_7.then(|| &uuid[..12])
}

/// An event, as a subscription's plugins left it, waiting in a window.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WindowMember {
    pub window_end_ms: u64,
    pub subscription_id: String,
    /// The event's type as ingested (what the mode is chosen by).
    pub window_type: String,
    /// The group key's value (`data.location_id` by default), as text.
    pub group: String,
    pub event_id: String,
    pub timestamp: String,
    pub received_at_ms: u64,
    /// Type and data after the subscription's plugins.
    pub event_type: String,
    pub data: String,
}

impl WindowMember {
    /// Identifies the (window, subscription, type, group) this member is in.
    pub fn group_hash(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for part in [&self.subscription_id, &self.window_type, &self.group] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        h.update(self.window_end_ms.to_be_bytes());
        hex::encode(&h.finalize()[..16])
    }
}

/// The latest known connection state of one location.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OutageState {
    pub location: String,
    pub offline: bool,
    /// Timestamp of the event that set the state (older events are ignored).
    pub last_timestamp: String,
    /// When hookhost learned of the outage.
    pub since_ms: u64,
    /// When it is confirmed, if still offline then; `None` when online.
    pub deadline_ms: Option<u64>,
    pub confirmed: bool,
    /// `data` of the offline event(s), devices united.
    pub data: String,
}

/// A location's new connection state, and the outage timer (deadline) it
/// replaces, if any.
pub type OutageUpdate = (OutageState, Option<u64>);

/// What the pipeline made of one event; a worker batch of them is written
/// atomically, with the events themselves.
#[derive(Debug)]
pub struct Processed {
    pub event: StoredEvent,
    pub jobs: Vec<Job>,
    pub window_members: Vec<WindowMember>,
    pub outage: Option<OutageUpdate>,
}

impl Processed {
    pub fn new(event: StoredEvent) -> Processed {
        Processed {
            event,
            jobs: Vec::new(),
            window_members: Vec::new(),
            outage: None,
        }
    }
}

/// The answer given to a request with an `Idempotency-Key`, kept to be
/// given again.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Remembered {
    pub key: String,
    pub status: u16,
    pub body: String,
    pub at_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::job_id;

    #[test]
    fn job_ids_of_hookhost_event_ids_sort_by_time() {
        // UUIDv7s 1 ms apart, the later one with a smaller random part.
        let earlier = "evt_0193000000017fffbfffffffffffffff";
        let later = "evt_01930000000270008000000000000000";
        // Arrival times in reverse: the id's own time counts.
        let (a, b) = (job_id(earlier, 9, "sink"), job_id(later, 1, "sink"));
        assert!(a < b, "{a} !< {b}");
        assert_eq!(a.len(), "msg_".len() + 32);
        assert_eq!(&a[4..16], &earlier[4..16]);
        // What ingest makes qualifies.
        let made = crate::event_json::new_event_id();
        assert_eq!(&job_id(&made, 1, "sink")[4..16], &made[4..16]);
        // Derived: the same event and subscription, the same id; another
        // subscription, another id.
        assert_eq!(job_id(earlier, 9, "sink"), a);
        assert_ne!(job_id(earlier, 9, "other"), a);
    }

    #[test]
    fn job_ids_of_producer_event_ids_sort_by_arrival() {
        // Ids that sort the other way round, arriving 1 ms apart.
        let at = 1_733_300_000_000;
        let (a, b) = (
            job_id("order-18", at, "sink"),
            job_id("order-17", at + 1, "sink"),
        );
        assert!(a < b, "{a} !< {b}");
        assert_eq!(a.len(), "msg_".len() + 32);
        assert!(a[4..].bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(&a[4..16], &format!("{at:012x}"));
        assert_eq!(job_id("order-18", at, "sink"), a, "derived");
        assert_ne!(job_id("order-18", at, "other"), a);
        assert_ne!(job_id("order-17", at, "sink"), a);
        // An `evt_` id that is not a UUIDv7 (version digit 4) is a
        // producer's: its arrival counts, not its digits.
        let v4 = "evt_0123456789ab4def8123456789abcdef";
        assert_eq!(&job_id(v4, at, "sink")[4..16], &format!("{at:012x}"));
    }
}
