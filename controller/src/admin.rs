//! The admin listener of both modes: health, readiness, metrics and the
//! debug views.
//!
//! - `GET /healthz`: 200 while the process serves.
//! - `GET /readyz`: 200 once the configuration has been compiled at least
//!   once (standalone: from the directory; Kubernetes: after every watch has
//!   listed) and every expected data plane has applied its group's latest
//!   snapshot (standalone expects its children; Kubernetes expects none, as
//!   data planes scale on their own).
//! - `GET /metrics`: Prometheus text: connected data planes per group, and
//!   per data plane whether it serves its group's current version.
//! - `GET /debug/status`: the Gateway API status of every object, as the
//!   controller would write it in Kubernetes.
//! - `GET /debug/snapshots`: the current snapshot of every group.
//! - `GET /debug/nodes`: what each data plane has applied or rejected.
//! - `GET /debug/chains`: per group, listener and route rule, the
//!   gatehouse.dev filters a request runs through, in order.

use std::sync::{Arc, RwLock};

use axum::{Json, Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use serde_json::Value;

use crate::serve::SnapshotHub;

/// What the admin views read; written by the compile loop.
#[derive(Default)]
pub struct View {
    pub statuses: Vec<Value>,
    /// Rendered (keys redacted) only when asked for: a compile must not pay
    /// for a debug view nobody reads.
    pub snapshots: crate::serve::Snapshots,
    /// (group, node id) of every data plane that must be current to be ready.
    pub expected_nodes: Vec<(String, String)>,
    pub compiled: bool,
}

#[derive(Clone)]
pub struct AdminState {
    pub hub: Arc<SnapshotHub>,
    pub view: Arc<RwLock<View>>,
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/debug/status", get(debug_status))
        .route("/debug/snapshots", get(debug_snapshots))
        .route("/debug/nodes", get(debug_nodes))
        .route("/debug/chains", get(debug_chains))
        .with_state(state)
}

/// Ready when the first compile is done and every expected data plane has
/// acknowledged its group's current version.
pub fn is_ready(hub: &SnapshotHub, view: &View) -> Result<(), String> {
    if !view.compiled {
        return Err("manifests not compiled yet".into());
    }
    for (group, node_id) in &view.expected_nodes {
        let Some(current) = hub.current_version(group) else {
            return Err(format!("group {group}: no snapshot yet"));
        };
        match hub.node(node_id) {
            Some(node) if node.connected && node.applied_version == current => {}
            Some(node) => {
                return Err(format!(
                    "data plane {node_id}: applied {:?}, current {current:?}{}",
                    node.applied_version,
                    node.last_nack
                        .as_ref()
                        .map(|(v, reason)| format!(", rejected {v}: {reason}"))
                        .unwrap_or_default()
                ));
            }
            None => return Err(format!("data plane {node_id} not connected")),
        }
    }
    Ok(())
}

async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    let view = state.view.read().expect("view lock");
    match is_ready(&state.hub, &view) {
        Ok(()) => (StatusCode::OK, "ready\n".to_string()),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    use std::fmt::Write as _;
    let nodes = state.hub.nodes();
    let mut connected: std::collections::BTreeMap<&str, u64> = Default::default();
    let mut out = String::from(
        "# HELP gatehouse_dataplanes_connected Data planes with an open snapshot stream.\n\
         # TYPE gatehouse_dataplanes_connected gauge\n",
    );
    for node in nodes.iter().filter(|n| n.connected) {
        *connected.entry(&node.group).or_default() += 1;
    }
    for (group, count) in &connected {
        let _ = writeln!(
            out,
            "gatehouse_dataplanes_connected{{group=\"{group}\"}} {count}"
        );
    }
    out.push_str(
        "# HELP gatehouse_dataplane_current 1 when the data plane serves its group's current snapshot.\n\
         # TYPE gatehouse_dataplane_current gauge\n",
    );
    for node in nodes.iter().filter(|n| n.connected) {
        let current = state.hub.current_version(&node.group);
        let up = u8::from(current.as_deref() == Some(node.applied_version.as_str()));
        let _ = writeln!(
            out,
            "gatehouse_dataplane_current{{group=\"{}\",node=\"{}\",version=\"{}\"}} {up}",
            node.group, node.node_id, node.applied_version
        );
    }
    out.push_str(
        "# HELP gatehouse_dataplane_rejections Snapshots a data plane rejected (NACK), by last version.\n\
         # TYPE gatehouse_dataplane_rejections gauge\n",
    );
    for node in &nodes {
        if let Some((version, _)) = &node.last_nack {
            let _ = writeln!(
                out,
                "gatehouse_dataplane_rejections{{group=\"{}\",node=\"{}\",version=\"{version}\"}} 1",
                node.group, node.node_id
            );
        }
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        out,
    )
}

async fn debug_status(State(state): State<AdminState>) -> Json<Value> {
    let view = state.view.read().expect("view lock");
    Json(Value::Array(view.statuses.clone()))
}

async fn debug_snapshots(State(state): State<AdminState>) -> Json<Value> {
    let snapshots = state.view.read().expect("view lock").snapshots.clone();
    let whole = whole(&snapshots);
    let plain: std::collections::BTreeMap<&String, &gatehouse_snapshot::Snapshot> =
        whole.iter().map(|(group, s)| (group, &**s)).collect();
    Json(gatehouse_snapshot::debug_json(&plain))
}

async fn debug_chains(State(state): State<AdminState>) -> Json<Value> {
    let snapshots = state.view.read().expect("view lock").snapshots.clone();
    Json(crate::explain::chains(&whole(&snapshots)))
}

fn whole(
    snapshots: &crate::serve::Snapshots,
) -> std::collections::BTreeMap<String, Arc<gatehouse_snapshot::Snapshot>> {
    snapshots
        .iter()
        .map(|(group, s)| (group.clone(), s.whole()))
        .collect()
}

async fn debug_nodes(State(state): State<AdminState>) -> Json<Value> {
    Json(serde_json::to_value(state.hub.nodes()).unwrap_or(Value::Null))
}
