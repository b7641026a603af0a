//! The standalone admin listener: readiness and the debug views.
//!
//! - `GET /readyz`: 200 once every data plane has applied the latest snapshot
//!   of its group (and the directory has been compiled at least once).
//! - `GET /debug/status`: the Gateway API status of every object, as the
//!   controller would write it in Kubernetes.
//! - `GET /debug/snapshots`: the current snapshot of every group.
//! - `GET /debug/nodes`: what each data plane has applied or rejected.

use std::sync::{Arc, RwLock};

use axum::{Json, Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use serde_json::Value;

use crate::serve::SnapshotHub;

/// What the admin views read; written by the compile loop.
#[derive(Default)]
pub struct View {
    pub statuses: Vec<Value>,
    pub snapshots: Value,
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
        .route("/readyz", get(readyz))
        .route("/debug/status", get(debug_status))
        .route("/debug/snapshots", get(debug_snapshots))
        .route("/debug/nodes", get(debug_nodes))
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

async fn debug_status(State(state): State<AdminState>) -> Json<Value> {
    let view = state.view.read().expect("view lock");
    Json(Value::Array(view.statuses.clone()))
}

async fn debug_snapshots(State(state): State<AdminState>) -> Json<Value> {
    Json(state.view.read().expect("view lock").snapshots.clone())
}

async fn debug_nodes(State(state): State<AdminState>) -> Json<Value> {
    Json(serde_json::to_value(state.hub.nodes()).unwrap_or(Value::Null))
}
