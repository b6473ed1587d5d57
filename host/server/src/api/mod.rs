//! The management API (admin token, enforced by the router): plugins, event
//! types, accepted events, subscriptions, deliveries with their attempts, dead letters,
//! re-sending and recovering deliveries. One file per resource.

mod cluster;
mod deliveries;
mod event_types;
mod events;
mod plugins;
mod portal;
mod stats;
mod subscriptions;

use axum::http::StatusCode;
use axum::routing::{delete, get, patch, post, put};

use hookhost_core::model::Subscription;

use crate::answers::{
    ClusterView, DeadLetters, Delivery, DeliveryDetail, DeliveryPage, Event, EventTypes, History,
    Installed, PluginList, PortalLink, PortalOverview, Promoted, Recovery, RotatedSecret,
    SubscriptionList, SubscriptionView, TestSent, Tried,
};
use crate::auth::Access;
use crate::openapi::SubscriptionPatch;
use crate::reply::ApiError;
use crate::route::{BodyLimit, Route, schema};

/// The management API's routes, documented.
pub(crate) fn routes() -> Vec<Route> {
    use Access::{Admin, Portal};
    let route = |method, path, summary, handler| Route {
        method,
        path,
        summary,
        access: Admin,
        query: &[],
        body: None,
        answer: None,
        body_limit: BodyLimit::Server,
        responses: &[(200, "OK")],
        leader_only: true,
        handler,
    };
    vec![
        Route {
            answer: Some(schema::<ClusterView>),
            leader_only: false,
            ..route(
                "GET",
                "/v1/cluster",
                "The nodes sharing this store, which one leads (runs windows, outage timers and ordered lanes, serves this API) and pending deliveries; any node answers",
                get(cluster::cluster),
            )
        },
        Route {
            answer: Some(schema::<History>),
            ..route(
                "GET",
                "/v1/stats/history",
                "The last hour, a point per 10 s: events in, deliveries, failed attempts and dead letters per second, mean attempt latency, queue depth, events in windows",
                get(stats::history),
            )
        },
        Route {
            answer: Some(schema::<PluginList>),
            ..route(
                "GET",
                "/v1/plugins",
                "Plugins serving or refused, with load and call statistics",
                get(plugins::list_plugins),
            )
        },
        Route {
            answer: Some(schema::<Promoted>),
            responses: &[
                (200, "the promoted version now serving"),
                (404, "no candidate for that plugin"),
                (
                    422,
                    "the candidate could not be loaded as the serving version",
                ),
                (500, "the candidate's file could not be renamed"),
            ],
            ..route(
                "POST",
                "/v1/plugins/{name}/promote",
                "Make a plugin's candidate (NAME.next.wasm, in shadow) the serving version",
                post(plugins::promote_plugin),
            )
        },
        Route {
            answer: Some(schema::<Tried>),
            body: Some(schema::<plugins::Trial>),
            responses: &[
                (200, "{decision}: each exported role's answer, or its error"),
                (400, "malformed JSON"),
                (404, "no such plugin serving"),
                (422, "not an event"),
            ],
            ..route(
                "POST",
                "/v1/plugins/{name}/try",
                "Run a serving plugin on an event with a config and show its decision (nothing is stored or sent)",
                post(plugins::try_plugin),
            )
        },
        Route {
            answer: Some(schema::<Installed>),
            query: &[(
                "candidate",
                "true: install as NAME.next.wasm, a candidate in shadow beside NAME",
            )],
            body_limit: BodyLimit::PluginUpload,
            responses: &[
                (
                    200,
                    "installed and serving (or in shadow): the version's info",
                ),
                (400, "bad name, empty body or bad query"),
                (413, "larger than plugins.max_upload_mib"),
                (
                    422,
                    "not a component implementing the plugin contract; nothing changed",
                ),
                (503, "the plugins folder cannot be written (disk full)"),
            ],
            ..route(
                "PUT",
                "/v1/plugins/{name}",
                "Upload a plugin component (body: the .wasm bytes): checked, written into the plugins folder atomically, swapped in",
                put(plugins::upload_plugin),
            )
        },
        Route {
            query: &[("candidate", "true: remove NAME.next.wasm, ending the trial")],
            responses: &[
                (204, "removed; it no longer serves"),
                (404, "no such plugin file"),
            ],
            ..route(
                "DELETE",
                "/v1/plugins/{name}",
                "Remove a plugin's file from the plugins folder and stop serving it",
                delete(plugins::delete_plugin),
            )
        },
        Route {
            answer: Some(schema::<PortalLink>),
            responses: &[
                (
                    201,
                    "{path, token, expires_at}: the link is path on this server",
                ),
                (400, "malformed JSON"),
                (404, "no such subscription"),
                (422, "expires_in_s out of 1..=2592000"),
            ],
            ..route(
                "POST",
                "/v1/subscriptions/{id}/portal",
                "Make a customer portal link for one subscription (body optional: {\"expires_in_s\": 86400})",
                post(portal::create_link),
            )
        },
        Route {
            answer: Some(schema::<PortalOverview>),
            access: Portal,
            responses: &[(
                200,
                "the subscription: id, url, types, enabled, endpoint health; expires_at",
            )],
            ..route(
                "GET",
                "/v1/portal",
                "Portal: the link's subscription",
                get(portal::overview),
            )
        },
        Route {
            answer: Some(schema::<DeliveryPage>),
            access: Portal,
            query: &[
                (
                    "status",
                    "pending, delivered, dead, plugin_error, filtered or paused",
                ),
                ("type", "event type"),
                ("since", "created at or after (RFC 3339)"),
                ("until", "created before (RFC 3339)"),
                ("limit", "1..=1000, default 100"),
            ],
            responses: &[
                (200, "this subscription's deliveries, newest first"),
                (400, "bad query parameter"),
            ],
            ..route(
                "GET",
                "/v1/portal/deliveries",
                "Portal: the subscription's deliveries with their attempts",
                get(portal::deliveries),
            )
        },
        Route {
            answer: Some(schema::<DeliveryDetail>),
            access: Portal,
            responses: &[
                (200, "the delivery"),
                (404, "no such delivery of this subscription"),
            ],
            ..route(
                "GET",
                "/v1/portal/deliveries/{id}",
                "Portal: one of the subscription's deliveries",
                get(portal::delivery),
            )
        },
        Route {
            answer: Some(schema::<RotatedSecret>),
            access: Portal,
            responses: &[
                (
                    200,
                    "{secret, retiring_secrets}: the new secret, shown once",
                ),
                (404, "the subscription is gone"),
                (409, "from the config file"),
            ],
            ..route(
                "POST",
                "/v1/portal/rotate-secret",
                "Portal: a new whsec_ signing secret; the old one keeps signing for 24 h",
                post(portal::rotate_secret),
            )
        },
        Route {
            answer: Some(schema::<Delivery>),
            access: Portal,
            responses: &[
                (202, "queued again"),
                (404, "no such delivery of this subscription"),
                (409, "pending, or its plugins still fail"),
            ],
            ..route(
                "POST",
                "/v1/portal/deliveries/{id}/resend",
                "Portal: re-send one of the subscription's deliveries",
                post(portal::resend),
            )
        },
        Route {
            answer: Some(schema::<EventTypes>),
            access: Portal,
            ..route(
                "GET",
                "/v1/portal/event-types",
                "Portal: the catalog types the subscription receives, with samples",
                get(portal::event_types),
            )
        },
        Route {
            answer: Some(schema::<EventTypes>),
            ..route(
                "GET",
                "/v1/event-types",
                "Event types of the loaded catalogs",
                get(event_types::list_event_types),
            )
        },
        Route {
            answer: Some(schema::<DeliveryPage>),
            query: &[
                ("status", "pending, delivered, dead or plugin_error"),
                ("subscription", "subscription id"),
                ("type", "event type"),
                ("since", "created at or after (RFC 3339)"),
                ("until", "created before (RFC 3339)"),
                ("limit", "1..=1000, default 100"),
            ],
            responses: &[
                (200, "deliveries, newest first, with attempts"),
                (400, "bad query parameter"),
            ],
            ..route(
                "GET",
                "/v1/deliveries",
                "List deliveries with their attempts",
                get(deliveries::list_deliveries),
            )
        },
        Route {
            answer: Some(schema::<Event>),
            responses: &[
                (200, "the event"),
                (404, "no such event (or removed by retention)"),
            ],
            ..route(
                "GET",
                "/v1/events/{id}",
                "One accepted event as stored, once the pipeline has run on it",
                get(events::get_event),
            )
        },
        Route {
            answer: Some(schema::<DeliveryDetail>),
            responses: &[(200, "the delivery"), (404, "no such delivery")],
            ..route(
                "GET",
                "/v1/deliveries/{id}",
                "One delivery with its attempts",
                get(deliveries::get_delivery),
            )
        },
        Route {
            answer: Some(schema::<Delivery>),
            responses: &[
                (202, "queued again"),
                (404, "no such delivery"),
                (
                    409,
                    "pending, its subscription is gone, or its plugins still fail",
                ),
            ],
            ..route(
                "POST",
                "/v1/deliveries/{id}/resend",
                "Re-send a dead, delivered or plugin_error delivery (same webhook-id); a plugin_error one runs through the subscription's current plugins first",
                post(deliveries::resend_delivery),
            )
        },
        Route {
            answer: Some(schema::<DeadLetters>),
            ..route(
                "GET",
                "/v1/dead-letters",
                "Deliveries out of retries or refused",
                get(deliveries::dead_letters),
            )
        },
        Route {
            answer: Some(schema::<RotatedSecret>),
            responses: &[
                (
                    200,
                    "{secret, retiring_secrets}: the new secret, shown once",
                ),
                (404, "no such subscription"),
                (409, "from the config file"),
            ],
            ..route(
                "POST",
                "/v1/subscriptions/{id}/rotate-secret",
                "A new whsec_ signing secret; the old ones keep signing for 24 h",
                post(subscriptions::rotate_secret),
            )
        },
        Route {
            answer: Some(schema::<TestSent>),
            body: Some(schema::<subscriptions::TestEventBody>),
            responses: &[
                (202, "sent: {sent, delivery, event_id, type}"),
                (
                    200,
                    "dropped by the subscription's plugins: {sent: false, reason}",
                ),
                (400, "bad body"),
                (404, "no such subscription"),
                (409, "subscription disabled"),
                (
                    422,
                    "type not received, partner type to a public subscription, no sample",
                ),
            ],
            ..route(
                "POST",
                "/v1/subscriptions/{id}/test",
                "Send a test event (a catalog sample or given data) to this subscription only, at once",
                post(subscriptions::send_test_event),
            )
        },
        Route {
            answer: Some(schema::<Recovery>),
            body: Some(schema::<deliveries::RecoverBody>),
            responses: &[
                (202, "re-sent"),
                (400, "bad body"),
                (404, "no such subscription"),
            ],
            ..route(
                "POST",
                "/v1/subscriptions/{id}/recover",
                "Re-send a subscription's dead deliveries since a time and re-run its plugin_error ones",
                post(deliveries::recover),
            )
        },
        Route {
            answer: Some(schema::<SubscriptionList>),
            ..route(
                "GET",
                "/v1/subscriptions",
                "Every subscription (config file and API)",
                get(subscriptions::list_subscriptions),
            )
        },
        Route {
            answer: Some(schema::<SubscriptionView>),
            body: Some(schema::<Subscription>),
            responses: &[
                (201, "created"),
                (400, "malformed JSON or unknown field"),
                (409, "id taken"),
                (422, "invalid field, partner type or refused endpoint"),
            ],
            ..route(
                "POST",
                "/v1/subscriptions",
                "Create a subscription",
                post(subscriptions::create_subscription),
            )
        },
        Route {
            answer: Some(schema::<SubscriptionView>),
            responses: &[(200, "the subscription"), (404, "no such subscription")],
            ..route(
                "GET",
                "/v1/subscriptions/{id}",
                "One subscription",
                get(subscriptions::get_subscription),
            )
        },
        Route {
            answer: Some(schema::<SubscriptionView>),
            body: Some(schema::<Subscription>),
            responses: &[
                (200, "replaced"),
                (404, "no such subscription"),
                (409, "from the config file"),
                (422, "invalid"),
            ],
            ..route(
                "PUT",
                "/v1/subscriptions/{id}",
                "Replace a subscription made over the API",
                put(subscriptions::replace_subscription),
            )
        },
        Route {
            answer: Some(schema::<SubscriptionView>),
            body: Some(schema::<SubscriptionPatch>),
            responses: &[
                (200, "changed"),
                (400, "not JSON"),
                (404, "no such subscription"),
                (409, "from the config file"),
                (422, "invalid, named by field"),
            ],
            ..route(
                "PATCH",
                "/v1/subscriptions/{id}",
                "Change some fields of a subscription made over the API (JSON merge patch; seed and secrets kept unless named)",
                patch(subscriptions::patch_subscription),
            )
        },
        Route {
            responses: &[
                (204, "deleted"),
                (404, "no such subscription"),
                (409, "from the config file"),
            ],
            ..route(
                "DELETE",
                "/v1/subscriptions/{id}",
                "Delete a subscription made over the API",
                delete(subscriptions::delete_subscription),
            )
        },
        Route {
            answer: Some(schema::<SubscriptionView>),
            responses: &[
                (200, "enabled"),
                (404, "no such subscription"),
                (409, "from the config file"),
            ],
            ..route(
                "POST",
                "/v1/subscriptions/{id}/enable",
                "Enable a subscription",
                post(subscriptions::switch_subscription::<true>),
            )
        },
        Route {
            answer: Some(schema::<SubscriptionView>),
            responses: &[
                (200, "disabled"),
                (404, "no such subscription"),
                (409, "from the config file"),
            ],
            ..route(
                "POST",
                "/v1/subscriptions/{id}/disable",
                "Disable a subscription (no new deliveries)",
                post(subscriptions::switch_subscription::<false>),
            )
        },
    ]
}

/// Runs `f` (store reads and writes, which may wait on the disk) on a
/// blocking thread, never on the async ones.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}
