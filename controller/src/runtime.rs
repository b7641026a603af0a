//! What both run modes share: the gRPC and admin listeners, signal
//! handling, event debouncing and the identity of a status entry.

use std::{
    net::SocketAddr,
    sync::{Arc, RwLock},
    time::Duration,
};

use anyhow::Context;
use tokio::{net::TcpListener, sync::mpsc};
use tracing::error;

use crate::{
    admin,
    serve::{SnapshotHub, SnapshotServer},
    status::StatusEntry,
};

/// Quiet time after the last change before a compile, and the longest a
/// burst of changes can hold a compile back.
const DEBOUNCE_QUIET: Duration = Duration::from_millis(50);
const DEBOUNCE_CAP: Duration = Duration::from_millis(500);

/// Waits until file events stop for `DEBOUNCE_QUIET`, at most `DEBOUNCE_CAP`.
/// Events carry no data: they only say "look again".
pub async fn debounce(events: &mut mpsc::UnboundedReceiver<()>) {
    let cap = tokio::time::sleep(DEBOUNCE_CAP);
    tokio::pin!(cap);
    loop {
        tokio::select! {
            _ = &mut cap => return,
            more = tokio::time::timeout(DEBOUNCE_QUIET, events.recv()) => match more {
                Ok(Some(())) => continue,
                Ok(None) | Err(_) => return,
            },
        }
    }
}

pub async fn start_grpc(addr: SocketAddr, hub: Arc<SnapshotHub>) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the snapshot server on {addr}"))?;
    let local = listener.local_addr()?;
    let service = gatehouse_snapshot::snapshot_service_server::SnapshotServiceServer::new(
        SnapshotServer::new(hub),
    );
    tokio::spawn(async move {
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        if let Err(error) = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(incoming)
            .await
        {
            error!(%error, "snapshot server stopped");
        }
    });
    Ok(local)
}

pub async fn start_admin(
    addr: SocketAddr,
    hub: Arc<SnapshotHub>,
    view: Arc<RwLock<admin::View>>,
) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the admin listener on {addr}"))?;
    let local = listener.local_addr()?;
    let app = admin::router(admin::AdminState { hub, view });
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            error!(%error, "admin listener stopped");
        }
    });
    Ok(local)
}

/// Now, to the second, as condition times are written.
pub fn now() -> k8s_openapi::jiff::Timestamp {
    use k8s_openapi::jiff::{Timestamp, Unit};
    Timestamp::now()
        .round(Unit::Second)
        .unwrap_or(Timestamp::now())
}

/// RFC 3339, as `lastTransitionTime` is written.
pub fn rfc3339(time: k8s_openapi::jiff::Timestamp) -> String {
    time.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The statuses of the last compile, so that a condition that still holds
/// keeps its `lastTransitionTime` (see `carry_transition_times`).
#[derive(Default)]
pub struct StatusHistory(std::collections::BTreeMap<(String, Option<String>, String), StatusEntry>);

impl StatusHistory {
    /// Carries the times of the previous compile into `statuses`, then
    /// remembers them for the next one.
    pub fn carry(&mut self, statuses: &mut [StatusEntry]) {
        for status in statuses.iter_mut() {
            if let Some(previous) = self.0.get(&status_key(status)) {
                crate::status::carry_transition_times(previous, status);
            }
        }
        self.0 = statuses
            .iter()
            .map(|s| (status_key(s), s.clone()))
            .collect();
    }
}

/// The key of a status entry: (kind, namespace, name).
pub fn status_key(status: &StatusEntry) -> (String, Option<String>, String) {
    (
        status.kind.clone(),
        status.namespace.clone(),
        status.name.clone(),
    )
}

pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
