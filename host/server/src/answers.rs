//! The API's JSON answers as Rust types. The handlers serialize these, and
//! `/openapi.json` describes them from the same types (schemars), so the
//! document cannot say one thing while a route answers another (checked
//! against real answers by the end-to-end tests). A field an answer may
//! leave out carries `#[serde(default)]`: schemas describe what a client
//! reads (serde's deserializing view), where such a field is optional.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Serialize;
use serde_json::Value;

use hookhost_core::model::{
    DeliveryOrder, EndpointHealth, Envelope, HealthPolicy, Job, Mode, PluginStep, RateLimit,
    RetryPolicy, Subscription, Tier,
};

/// Every refusal: a 4xx naming the problem, or 503.
#[derive(Serialize, JsonSchema)]
#[schemars(rename = "Error")]
pub(crate) struct ErrorAnswer {
    pub error: String,
}

/// `GET /readyz`.
#[derive(Serialize, JsonSchema)]
pub(crate) struct Readiness {
    pub ready: bool,
    /// Whether this node leads (runs windows, outage timers and ordered
    /// lanes and serves the management API); a standby takes events in,
    /// runs their pipeline and delivers.
    pub leading: bool,
    /// What keeps it from being ready (absent when ready).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

/// `GET /v1/cluster`.
#[derive(Serialize, JsonSchema)]
#[schemars(rename = "Cluster")]
pub(crate) struct ClusterView {
    /// The node that answered.
    pub this_node: String,
    /// Whether the node that answered leads.
    pub leading: bool,
    /// The leading node's address, when known.
    pub leader: Option<String>,
    /// Deliveries still to send, cluster-wide.
    pub pending_deliveries: u64,
    /// Events acknowledged but not yet through the pipeline, cluster-wide:
    /// how far the pipeline is behind ingest.
    pub unfinished_events: u64,
    /// How long the oldest of those has waited, in ms (absent when none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pipeline_lag_ms: Option<u64>,
    /// Nodes seen in the last hour.
    pub nodes: Vec<ClusterNode>,
}

/// One node of [`ClusterView`].
#[derive(Serialize, JsonSchema)]
pub(crate) struct ClusterNode {
    #[serde(flatten)]
    pub node: hookhost_core::store::NodeRecord,
    /// Since its last heartbeat.
    pub seen_ago_ms: u64,
    /// Whether its heartbeat is recent (three `cluster.takeover_ms`).
    pub alive: bool,
}

/// A delivery as the API shows it: the job with every attempt, `data` as
/// the JSON value.
#[derive(Serialize, JsonSchema)]
#[schemars(with = "Job")]
pub(crate) struct Delivery(pub Value);

impl Delivery {
    pub(crate) fn of(job: &Job) -> Delivery {
        Delivery(with_data_as_json(job, &job.data))
    }
}

/// `record` as JSON with its `data` (JSON text) shown as the JSON value it
/// holds (kept as text if it does not parse).
fn with_data_as_json(record: &impl Serialize, data: &str) -> Value {
    let mut v = serde_json::to_value(record).unwrap_or_default();
    if let Ok(data) = serde_json::from_str::<Value>(data) {
        v["data"] = data;
    }
    v
}

/// One delivery with the request its last attempt sent (or the next will),
/// secrets masked.
#[derive(Serialize, JsonSchema)]
pub(crate) struct DeliveryDetail {
    #[serde(flatten)]
    pub delivery: Delivery,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<hookhost_core::deliver::ShownRequest>,
}

/// A page of deliveries, newest first.
#[derive(Serialize, JsonSchema)]
pub(crate) struct DeliveryPage {
    /// Matching deliveries counted; all of them when `total_exact`, else a
    /// lower bound (the scan stopped at its budget).
    pub total: usize,
    pub total_exact: bool,
    pub deliveries: Vec<Delivery>,
    /// The `after` cursor of the next page, when there may be one.
    pub next: Option<String>,
}

#[derive(Serialize, JsonSchema)]
pub(crate) struct DeadLetters {
    pub dead_letters: Vec<Delivery>,
}

/// Where a subscription was made.
#[derive(Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Source {
    /// The config file: read-only over the API.
    Config,
    Api,
}

/// A rotated-out signing secret, without the secret.
#[derive(Serialize, JsonSchema)]
pub(crate) struct RetiringView {
    /// It signs beside the new one until then.
    pub until_ms: u64,
}

/// A subscription as the API shows it: never a secret, a seed or a header
/// value; with its endpoint's health.
#[derive(Serialize, JsonSchema)]
pub(crate) struct SubscriptionView {
    pub id: String,
    pub url: String,
    pub types: Vec<String>,
    pub tags: Vec<String>,
    pub route_only: bool,
    pub tier: Tier,
    pub envelope: Envelope,
    pub plugins: Vec<PluginStep>,
    pub retry: RetryPolicy,
    pub max_in_flight: usize,
    pub intervals: BTreeMap<String, Mode>,
    pub enabled: bool,
    pub health: HealthPolicy,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// Header names; every value shows as `"(set)"`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ordering: Option<DeliveryOrder>,
    pub retiring_secrets: Vec<RetiringView>,
    pub endpoint: EndpointHealth,
    pub seed_set: bool,
    pub secrets_count: usize,
    pub source: Source,
}

impl SubscriptionView {
    pub(crate) fn of(sub: &Subscription, endpoint: EndpointHealth) -> SubscriptionView {
        // Every field named: a field added to `Subscription` does not build
        // here until it is decided whether the API shows it.
        let Subscription {
            id,
            url,
            types,
            tags,
            route_only,
            tier,
            envelope,
            seed,
            secrets,
            retiring_secrets,
            plugins,
            retry,
            max_in_flight,
            intervals,
            enabled,
            health,
            rate_limit,
            headers,
            ordering,
            from_config,
        } = sub.clone();
        SubscriptionView {
            id,
            url,
            types,
            tags,
            route_only,
            tier,
            envelope,
            plugins,
            retry,
            max_in_flight,
            intervals,
            enabled,
            health,
            rate_limit,
            headers: headers
                .into_keys()
                .map(|name| (name, "(set)".to_string()))
                .collect(),
            ordering,
            retiring_secrets: retiring_view(&retiring_secrets),
            endpoint,
            seed_set: seed.is_some(),
            secrets_count: secrets.len(),
            source: if from_config {
                Source::Config
            } else {
                Source::Api
            },
        }
    }
}

/// Until when each rotated-out secret keeps signing; never the secrets.
pub(crate) fn retiring_view(
    retiring: &[hookhost_core::model::RetiringSecret],
) -> Vec<RetiringView> {
    retiring
        .iter()
        .map(|r| RetiringView {
            until_ms: r.until_ms,
        })
        .collect()
}

#[derive(Serialize, JsonSchema)]
pub(crate) struct SubscriptionList {
    pub subscriptions: Vec<SubscriptionView>,
}

/// `GET /v1/stats/history`: a point every `every_s` seconds, oldest first.
#[derive(Serialize, JsonSchema)]
pub(crate) struct History {
    pub every_s: u64,
    pub points: Vec<crate::history::Point>,
}

#[derive(Serialize, JsonSchema)]
pub(crate) struct PluginList {
    pub plugins: Vec<hookhost_plugin_runtime::PluginStatus>,
}

#[derive(Serialize, JsonSchema)]
pub(crate) struct Promoted {
    pub promoted: hookhost_plugin_runtime::PluginInfo,
}

/// What a plugin decided about the event given, role by role.
#[derive(Serialize, JsonSchema)]
pub(crate) struct Tried {
    pub decision: hookhost_plugin_runtime::Decision,
}

#[derive(Serialize, JsonSchema)]
pub(crate) struct Installed {
    pub installed: hookhost_plugin_runtime::PluginInfo,
    /// The file it was written to, in the plugins folder.
    pub file: Option<String>,
    /// Installed as the candidate (`NAME.next.wasm`, in shadow).
    pub candidate: bool,
}

/// A customer portal link: `path` on this server, with the token after `#`.
#[derive(Serialize, JsonSchema)]
pub(crate) struct PortalLink {
    pub path: String,
    pub token: String,
    /// RFC 3339.
    pub expires_at: String,
}

/// What a portal link shows of its subscription.
#[derive(Serialize, JsonSchema)]
pub(crate) struct PortalSubscription {
    pub id: String,
    pub url: String,
    pub types: Vec<String>,
    pub enabled: bool,
    pub endpoint: EndpointHealth,
    pub secrets_count: usize,
    pub retiring_secrets: Vec<RetiringView>,
}

#[derive(Serialize, JsonSchema)]
pub(crate) struct PortalOverview {
    pub subscription: PortalSubscription,
    /// When the link stops working (RFC 3339).
    pub expires_at: String,
}

/// A new signing secret, shown this once.
#[derive(Serialize, JsonSchema)]
pub(crate) struct RotatedSecret {
    pub secret: String,
    pub retiring_secrets: Vec<RetiringView>,
}

/// A catalog's event type, with the catalog's name.
#[derive(Serialize, JsonSchema)]
pub(crate) struct EventTypeEntry {
    pub catalog: String,
    #[serde(flatten)]
    pub event_type: hookhost_core::catalog::EventType,
}

#[derive(Serialize, JsonSchema)]
pub(crate) struct EventTypes {
    /// Whether ingest refuses types no catalog lists (admin listing only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
    pub event_types: Vec<EventTypeEntry>,
}

/// An accepted event as stored, `data` as the JSON value.
#[derive(Serialize, JsonSchema)]
#[schemars(with = "hookhost_core::model::StoredEvent")]
pub(crate) struct Event(pub Value);

impl Event {
    pub(crate) fn of(event: &hookhost_core::model::StoredEvent) -> Event {
        Event(with_data_as_json(event, &event.data))
    }
}

/// A test event: sent (202, with its delivery) or dropped by the
/// subscription's plugins (200, with the reason).
#[derive(Serialize, JsonSchema)]
pub(crate) struct TestSent {
    pub sent: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What a recovery re-sent, what the plugins now drop and what still fails.
#[derive(Serialize, JsonSchema)]
pub(crate) struct Recovery {
    pub resent: usize,
    pub ids: Vec<String>,
    pub filtered: Vec<String>,
    pub still_failing: Vec<StillFailing>,
}

#[derive(Serialize, JsonSchema)]
pub(crate) struct StillFailing {
    pub id: String,
    pub error: String,
}
