//! hookhost: a self-hosted webhook delivery server whose routing is
//! scriptable with WebAssembly component plugins.
//!
//! # Layout
//! - [`config`]: the TOML configuration, its defaults and checks.
//! - [`catalog`]: event catalogs (types, tiers, delivery modes, samples).
//! - [`event`]: reading an event from JSON as clients and plugin authors write it.
//! - [`ingest`]: reading ingest requests (events, strict types, idempotency keys).
//! - [`server`]: the HTTP API and the wiring from ingest to delivery.
//! - [`journal`]: the append-only log that makes accepted events durable (group commit).
//! - [`store`]: events, jobs and attempts, windows (sled).
//! - [`subscriptions`]: the live set of subscriptions (config file + API).
//! - [`pipeline`]: router plugins, subscription matching, filter/transform chains.
//! - [`aggregate`]: aggregation windows and the derived outage event.
//! - [`worker`]: the single task running pipeline and aggregation.
//! - [`sign`]: delivery bodies (envelopes), the seed's hash, Standard Webhooks.
//! - [`deliver`]: HTTP delivery, retries, dead letters.
//! - [`ssrf`]: which endpoint addresses deliveries may reach.
//! - [`metrics`]: counters for `GET /metrics` (Prometheus text).
//! - [`verify`], [`receive`]: checking deliveries as a receiver would, and
//!   the `hookhost receive` receiver.

pub mod aggregate;
mod api;
pub mod catalog;
pub mod config;
pub mod deliver;
pub mod event;
pub mod ingest;
pub mod journal;
pub mod metrics;
mod openapi;
pub mod pipeline;
pub mod receive;
pub mod server;
pub mod sign;
pub mod ssrf;
pub mod store;
pub mod subscriptions;
pub mod verify;
pub mod worker;
