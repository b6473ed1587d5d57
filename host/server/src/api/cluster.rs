//! `/v1/cluster`: the nodes sharing this node's store, which one leads and
//! how far behind the pipeline is. Served by every node (a standby too), so
//! that a client sent away from one finds the leader.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::blocking;
use crate::answers::{ClusterNode, ClusterView};
use crate::app::App;
use crate::reply::error;

/// A node is listed as alive while its heartbeat is younger than this many
/// `cluster.takeover_ms`.
const ALIVE_BEATS: u64 = 3;

/// `GET /v1/cluster`.
pub(super) async fn cluster(State(app): State<App>) -> Response {
    let membership = app.membership.clone();
    let store = app.store.clone();
    let read = blocking(move || {
        let nodes = membership.nodes()?;
        let pending = store.pending_count()?;
        let backlog = match store.clone().inbox() {
            Some(inbox) => inbox.backlog()?,
            None => Default::default(),
        };
        Ok::<_, hookhost_core::store::StoreError>((nodes, pending, backlog))
    })
    .await;
    let (nodes, pending, backlog) = match read {
        Ok(Ok(read)) => read,
        Ok(Err(e)) => return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        Err(e) => return e.into_response(),
    };
    let now = hookhost_core::clock::now_ms();
    let alive_ms = ALIVE_BEATS * app.config.cluster.takeover_ms;
    let nodes: Vec<ClusterNode> = nodes
        .into_iter()
        .map(|node| ClusterNode {
            seen_ago_ms: now.saturating_sub(node.seen_at_ms),
            alive: now.saturating_sub(node.seen_at_ms) <= alive_ms
                || node.id == app.membership.id(),
            node,
        })
        .collect();
    axum::Json(ClusterView {
        this_node: app.membership.id().to_string(),
        leading: app.membership.leads(),
        leader: app.membership.leader_address(),
        pending_deliveries: pending as u64,
        unfinished_events: backlog.events as u64,
        pipeline_lag_ms: backlog.oldest_received_ms.map(|at| now.saturating_sub(at)),
        nodes,
    })
    .into_response()
}
