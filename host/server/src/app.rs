//! The state every handler gets.

use std::sync::Arc;

use hookhost_core::config::Config;
use hookhost_core::deliver::Deliverer;
use hookhost_core::intake::{DurableIntake, KeysInProgress};
use hookhost_core::pipeline::Pipeline;
use hookhost_core::store::Store;
use hookhost_core::subscriptions::Subscriptions;
use hookhost_plugin_runtime::Registry;
use serde_json::Value;

use crate::auth::Tokens;

/// Cloned for every request (axum hands each handler its own), so one
/// shared pointer rather than a dozen: their reference counts are atomics
/// that both cores would otherwise bounce for each request.
#[derive(Clone)]
pub(crate) struct App(Arc<AppState>);

impl App {
    pub(crate) fn new(state: AppState) -> App {
        App(Arc::new(state))
    }
}

impl std::ops::Deref for App {
    type Target = AppState;

    fn deref(&self) -> &AppState {
        &self.0
    }
}

pub(crate) struct AppState {
    pub(crate) config: Arc<Config>,
    pub(crate) registry: Arc<Registry>,
    pub(crate) tokens: Tokens,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) intake: Arc<dyn DurableIntake>,
    pub(crate) deliverer: Arc<Deliverer>,
    /// For re-running a `plugin_error` delivery's plugins when it is re-sent.
    pub(crate) pipeline: Arc<Pipeline>,
    pub(crate) subscriptions: Arc<Subscriptions>,
    /// `Idempotency-Key`s whose first request is still running.
    pub(crate) keys_in_progress: KeysInProgress,
    pub(crate) openapi: Arc<Value>,
    /// The last hour of counters, for the overview charts.
    pub(crate) history: Arc<crate::history::History>,
    /// Whether this node leads, and which does.
    pub(crate) membership: Arc<hookhost_core::cluster::Membership>,
}
