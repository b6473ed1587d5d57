//! hookhost's HTTP layer over the core: the ingest route, operations routes
//! and the management API. HTTP only: everything behind a handler is the
//! core's ([`hookhost_core::node`]).
//!
//! [`serve`] opens a node from a config and serves it on the configured
//! address; [`run`] serves an already running node on a given listener, so
//! tests and benches can start a server in-process on port 0.

mod answers;
mod api;
mod app;
mod auth;
mod body;
mod connections;
mod history;
mod ingest;
mod openapi;
mod ops;
mod reply;
mod route;
mod routes;
mod ui;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hookhost_core::config::Config;
use hookhost_core::node::{Node, Running};
use hookhost_plugin_runtime::Registry;
use tokio::net::TcpListener;

use crate::app::{App, AppState};
use crate::auth::Tokens;

/// Opens the node (store, intake; resuming unfinished work), listens on
/// `server.listen`, and serves until `shutdown` resolves; then shuts the
/// node down cleanly.
pub async fn serve(
    config: Config,
    registry: Arc<Registry>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let files = connections::raise_file_limit();
    tracing::debug!(?files, "open-file limit");
    let node = Node::open(Arc::new(config), registry)?;
    let listener = TcpListener::bind(&node.config.server.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", node.config.server.listen))?;
    run(listener, node.start()?, shutdown).await
}

/// Serves `node` on `listener` until `shutdown` resolves, then stops taking
/// requests and shuts the node down (pipeline queue finished, attempts in
/// flight given their grace period, store flushed).
pub async fn run(
    listener: TcpListener,
    node: Running,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let config = node.config.clone();
    let local = listener.local_addr()?;
    if config.server.ingest_token.is_none() && !local.ip().is_loopback() {
        tracing::warn!(listen = %local, "ingest is open to the network: set server.ingest_token");
    }
    node.membership.listening_on(local);
    let routes = routes::all();
    let app = App::new(AppState {
        config: config.clone(),
        registry: node.registry.clone(),
        tokens: Tokens {
            admin: config.server.admin_token.as_deref().map(Arc::from),
            ingest: config.server.ingest_token.as_deref().map(Arc::from),
        },
        store: node.store.clone(),
        intake: node.intake.clone(),
        deliverer: node.deliverer.clone(),
        pipeline: node.pipeline.clone(),
        subscriptions: node.subscriptions.clone(),
        keys_in_progress: Default::default(),
        openapi: Arc::new(openapi::document(&routes)),
        history: Default::default(),
        membership: node.membership.clone(),
    });
    let sampler = {
        let (history, deliverer) = (app.history.clone(), app.deliverer.clone());
        tokio::spawn(async move {
            let mut every = tokio::time::interval(history::EVERY);
            loop {
                every.tick().await;
                history.record(history::Sample::now(&deliverer));
            }
        })
    };
    let router = route::router(routes, &app).with_state(app);
    let limits = connections::Limits {
        header_timeout: Duration::from_millis(config.server.header_timeout_ms),
        max_connections: config
            .server
            .max_connections
            .unwrap_or_else(connections::default_max_connections),
    };
    tracing::info!(listen = %local, max_connections = limits.max_connections, "HTTP API listening");
    // A node another one took the lead from stops (its writes are fenced
    // anyway) and says so: started again, it stands by.
    let (deposed_tx, deposed_rx) = tokio::sync::oneshot::channel();
    let membership = node.membership.clone();
    let deposed = async move {
        tokio::select! {
            () = shutdown => {}
            () = membership.deposed() => {
                let _ = deposed_tx.send(());
            }
        }
    };
    connections::serve(listener, router, limits, deposed).await;
    sampler.abort();
    node.shutdown().await?;
    if deposed_rx.await.is_ok() {
        anyhow::bail!("another node took the lead from this one; start it again to stand by");
    }
    Ok(())
}
