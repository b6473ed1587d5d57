//! hookhost's core: everything between an accepted request and a delivered
//! webhook, with no HTTP server in it.
//!
//! Modules, from the top of the data flow down (a module imports only the
//! ones below it; `.ci/check-layers` enforces the order):
//! - [`node`]: assembles the store, intake, pipeline, aggregation, worker
//!   and deliverer from a [`config::Config`], starts and stops them.
//! - [`intake`]: making accepted events durable before the `202` (the
//!   journal with group commit, claims on event ids, idempotency keys) and
//!   reading ingest requests.
//! - [`worker`]: the single task running pipeline and aggregation.
//! - [`pipeline`]: router plugins, subscription matching, filter/transform chains.
//! - [`aggregate`]: aggregation windows and the derived outage event.
//! - [`deliver`]: HTTP delivery, retries, dead letters.
//! - [`backlog`]: acknowledged work not yet started, and ingest's wait
//!   while it is at its bound (delivery keeps pace at saturation).
//! - [`retention`]: removing finished work after its period; stored counts.
//! - [`subscriptions`]: the live set of subscriptions (config file + API).
//! - [`verify`]: checking a delivery as a receiver would.
//! - [`config`]: the TOML configuration, its defaults and checks.
//! - [`operational`]: hookhost's own events (`hookhost.*`) and their catalog.
//! - [`sign`]: delivery bodies (envelopes), the seed's hash, Standard Webhooks.
//! - [`catalog`]: event catalogs (types, tiers, delivery modes, samples).
//! - [`store`]: the storage seams (traits) and their sled implementation.
//! - [`ssrf`]: which endpoint addresses deliveries may reach.
//! - [`event_json`]: reading an event from JSON as clients and plugin authors write it.
//! - [`metrics`]: counters for `GET /metrics` (Prometheus text).
//! - [`clock`]: wall clock and the injectable clock.
//! - [`model`]: the domain types every other module shares.

pub mod aggregate;
pub mod backlog;
pub mod catalog;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod deliver;
pub mod event_json;
pub mod intake;
pub mod metrics;
pub mod model;
pub mod node;
pub mod operational;
pub mod pipeline;
pub mod process_stats;
pub mod retention;
pub mod sign;
pub mod ssrf;
pub mod store;
pub mod subscriptions;
pub mod verify;
pub mod worker;
