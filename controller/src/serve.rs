//! The snapshot server: one gRPC stream per data plane.
//!
//! Each cluster group has a `watch` channel holding its newest snapshot, so a
//! slow data plane only ever receives the latest one, never a backlog. A data
//! plane says Hello (group, node id, what it already serves), then receives
//! the group's snapshot each time its version changes and answers each with
//! an Ack or a Nack. The hub records what every node has applied; the
//! standalone readiness check and the debug output read it.
//!
//! A data plane that names "endpoint-updates" and serves a version from
//! which only endpoints changed receives just those clusters (see
//! `GroupSnapshot::update_since`); any other receives the whole snapshot.

use std::{
    collections::{BTreeMap, HashMap},
    pin::Pin,
    sync::{Arc, Mutex},
};

use futures::Stream;
use gatehouse_snapshot::{
    DataPlaneMessage, EncodedSnapshot, Snapshot, data_plane_message::Message,
    snapshot_service_server::SnapshotService,
};
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio_stream::{StreamExt, wrappers::ReceiverStream};
use tonic::{Request, Response, Status, Streaming};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::group_snapshot::GroupSnapshot;

type GroupChannel = watch::Sender<Option<Arc<GroupSnapshot>>>;

/// Snapshots by cluster group, shared (not copied) between the compile
/// loop, the hub and the debug view.
pub type Snapshots = BTreeMap<String, Arc<GroupSnapshot>>;

/// What the controller knows of one data plane.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct NodeState {
    pub node_id: String,
    pub group: String,
    pub connected: bool,
    /// Last version the node acknowledged ("" if none).
    pub applied_version: String,
    /// Last rejection: version and the data plane's reason.
    pub last_nack: Option<(String, String)>,
    /// Which stream this state belongs to: a reconnect under the same node
    /// id starts a new session, and the old stream's late end must not mark
    /// the new one disconnected.
    pub session: u64,
}

/// Latest snapshot per group and the state of every data plane.
///
/// Guarantees: `publish` is cheap when nothing changed (same versions are not
/// re-sent); a node that connects late gets the current snapshot at once.
#[derive(Default)]
pub struct SnapshotHub {
    groups: Mutex<HashMap<String, GroupChannel>>,
    nodes: Mutex<BTreeMap<String, NodeState>>,
    changes: watch::Sender<u64>,
    sessions: std::sync::atomic::AtomicU64,
}

impl SnapshotHub {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Makes `snapshots` the current ones. A group that had a snapshot and is
    /// missing now gets an empty one, so its data planes stop listening.
    pub fn publish(&self, snapshots: &Snapshots) {
        let mut groups = self.groups.lock().expect("hub lock");
        for (group, channel) in groups.iter() {
            if !snapshots.contains_key(group) && channel.borrow().is_some() {
                channel.send_replace(Some(Arc::new(GroupSnapshot::compiled(Snapshot {
                    group: group.clone(),
                    ..Default::default()
                }))));
            }
        }
        for (group, snapshot) in snapshots {
            let channel = groups
                .entry(group.clone())
                .or_insert_with(|| watch::channel(None).0);
            let unchanged = channel
                .borrow()
                .as_ref()
                .is_some_and(|current| current.version() == snapshot.version());
            if !unchanged {
                channel.send_replace(Some(snapshot.clone()));
            }
        }
        drop(groups);
        self.changes.send_modify(|n| *n += 1);
    }

    /// The version currently published for `group`.
    pub fn current_version(&self, group: &str) -> Option<String> {
        let groups = self.groups.lock().expect("hub lock");
        groups
            .get(group)
            .and_then(|c| c.borrow().as_ref().map(|s| s.version().to_owned()))
    }

    pub fn nodes(&self) -> Vec<NodeState> {
        self.nodes
            .lock()
            .expect("hub lock")
            .values()
            .cloned()
            .collect()
    }

    /// Per group, the versions its connected data planes have applied (""
    /// for one that has applied none yet).
    pub fn applied_versions(&self) -> BTreeMap<String, std::collections::BTreeSet<String>> {
        let mut out: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
        for node in self.nodes().into_iter().filter(|n| n.connected) {
            out.entry(node.group)
                .or_default()
                .insert(node.applied_version);
        }
        out
    }

    /// Per group, a connected data plane that rejected the group's current
    /// snapshot: (node id, its reason).
    pub fn rejections(&self) -> BTreeMap<String, (String, String)> {
        self.rejected_versions()
            .into_iter()
            .map(|(group, (node, _, reason))| (group, (node, reason)))
            .collect()
    }

    /// [`Self::rejections`] with the version each one rejected.
    pub fn rejected_versions(&self) -> BTreeMap<String, (String, String, String)> {
        let mut out = BTreeMap::new();
        for node in self.nodes() {
            let current = self.current_version(&node.group);
            if let (true, Some((version, reason))) = (node.connected, &node.last_nack)
                && current.as_deref() == Some(version.as_str())
                && node.applied_version != *version
            {
                out.entry(node.group.clone())
                    .or_insert_with(|| (node.node_id.clone(), version.clone(), reason.clone()));
            }
        }
        out
    }

    pub fn node(&self, node_id: &str) -> Option<NodeState> {
        self.nodes.lock().expect("hub lock").get(node_id).cloned()
    }

    /// A receiver that changes whenever a snapshot is published or a node
    /// connects, acknowledges, rejects or leaves.
    pub fn watch_changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn group_receiver(&self, group: &str) -> watch::Receiver<Option<Arc<GroupSnapshot>>> {
        let mut groups = self.groups.lock().expect("hub lock");
        groups
            .entry(group.to_owned())
            .or_insert_with(|| watch::channel(None).0)
            .subscribe()
    }

    /// Applies `update` to the node's state if `session` is still its
    /// current one.
    fn update_node(&self, node_id: &str, session: u64, update: impl FnOnce(&mut NodeState)) {
        let mut nodes = self.nodes.lock().expect("hub lock");
        if let Some(node) = nodes.get_mut(node_id).filter(|n| n.session == session) {
            update(node);
        }
        drop(nodes);
        self.changes.send_modify(|n| *n += 1);
    }

    /// Records a new stream for `node_id`; returns its session.
    fn register_node(&self, node_id: &str, group: &str, applied_version: &str) -> u64 {
        let session = self
            .sessions
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        self.nodes.lock().expect("hub lock").insert(
            node_id.to_owned(),
            NodeState {
                node_id: node_id.to_owned(),
                group: group.to_owned(),
                connected: true,
                applied_version: applied_version.to_owned(),
                last_nack: None,
                session,
            },
        );
        self.changes.send_modify(|n| *n += 1);
        session
    }
}

/// The gRPC face of a hub.
#[derive(Clone)]
pub struct SnapshotServer {
    hub: Arc<SnapshotHub>,
}

impl SnapshotServer {
    pub fn new(hub: Arc<SnapshotHub>) -> Self {
        Self { hub }
    }
}

type SnapshotStream = Pin<Box<dyn Stream<Item = Result<EncodedSnapshot, Status>> + Send>>;

#[tonic::async_trait]
impl SnapshotService for SnapshotServer {
    type SubscribeStream = SnapshotStream;

    async fn subscribe(
        &self,
        request: Request<Streaming<DataPlaneMessage>>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let mut inbound = request.into_inner();
        let hello = match inbound.next().await {
            Some(Ok(DataPlaneMessage {
                message: Some(Message::Hello(hello)),
            })) => hello,
            Some(Err(status)) => return Err(status),
            _ => {
                return Err(Status::invalid_argument(
                    "the first message on a snapshot stream must be Hello",
                ));
            }
        };
        if hello.group.is_empty() || hello.node_id.is_empty() {
            return Err(Status::invalid_argument(
                "Hello needs a cluster group and a node id",
            ));
        }
        let session = self
            .hub
            .register_node(&hello.node_id, &hello.group, &hello.applied_version);
        let snapshots = self.hub.group_receiver(&hello.group);
        let (tx, rx) = mpsc::channel(4);
        let span = info_span!("snapshot_stream", group = %hello.group, node = %hello.node_id);
        tokio::spawn(
            stream_to_node(
                self.hub.clone(),
                (hello.node_id, session),
                hello.applied_version,
                hello.features,
                snapshots,
                inbound,
                tx,
            )
            .instrument(span),
        );
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Sends each new snapshot of the group and records the node's answers,
/// until either side goes away.
async fn stream_to_node(
    hub: Arc<SnapshotHub>,
    (node_id, session): (String, u64),
    serving: String,
    features: Vec<String>,
    mut snapshots: watch::Receiver<Option<Arc<GroupSnapshot>>>,
    mut inbound: Streaming<DataPlaneMessage>,
    tx: mpsc::Sender<Result<EncodedSnapshot, Status>>,
) {
    info!("data plane connected");
    let updates = features
        .iter()
        .any(|f| f == gatehouse_snapshot::FEATURE_ENDPOINT_UPDATES);
    let mut node = NodeVersions {
        sent: serving.clone(),
        serving: (!serving.is_empty()).then_some(serving),
        updates: Vec::new(),
    };
    snapshots.mark_changed();
    loop {
        tokio::select! {
            changed = snapshots.changed() => {
                if changed.is_err() {
                    break;
                }
                let current = snapshots.borrow_and_update().clone();
                let Some(snapshot) = current else { continue };
                if snapshot.version() == node.sent {
                    continue;
                }
                node.sent = snapshot.version().to_owned();
                let missing: Vec<&str> =
                    gatehouse_snapshot::required_features(snapshot.compiled_part())
                        .into_iter()
                        .filter(|f| !features.iter().any(|have| have == f))
                        .collect();
                if !missing.is_empty() {
                    // An older data plane would drop what it does not know
                    // and serve without it (no authentication, no IP rules):
                    // it keeps its previous snapshot, and the Gateway says why.
                    let reason = format!(
                        "this data plane does not support {}; upgrade it to serve this configuration",
                        missing.join(", ")
                    );
                    warn!(version = %snapshot.version(), %reason, "snapshot withheld");
                    hub.update_node(&node_id, session, |state| {
                        state.last_nack = Some((snapshot.version().to_owned(), reason));
                    });
                    node.serving = None;
                    continue;
                }
                let message = match node.serving.as_deref().filter(|_| updates) {
                    Some(serving) => snapshot.update_since(serving),
                    None => None,
                };
                let message = match message {
                    Some(update) => {
                        debug!(version = %update.version, base = %update.base_version, clusters = update.endpoint_updates.len(), "sending endpoint update");
                        node.remember_update(&update.version);
                        EncodedSnapshot::new(&update)
                    }
                    None => {
                        debug!(version = %snapshot.version(), "sending snapshot");
                        snapshot.encoded()
                    }
                };
                // Sent in order: the node serves this once it has applied
                // everything before it, or says otherwise with a Nack.
                node.serving = Some(node.sent.clone());
                if tx.send(Ok(message)).await.is_err() {
                    break;
                }
            }
            message = inbound.next() => match message {
                Some(Ok(DataPlaneMessage { message: Some(Message::Ack(ack)) })) => {
                    debug!(version = %ack.version, "snapshot applied");
                    hub.update_node(&node_id, session, |state| state.applied_version = ack.version);
                }
                Some(Ok(DataPlaneMessage { message: Some(Message::Nack(nack)) })) => {
                    // What the node serves is no longer known: what follows
                    // goes whole.
                    node.serving = None;
                    if node.updates.contains(&nack.version) {
                        // An endpoint update that did not fit what the node
                        // serves (it missed or refused an earlier snapshot):
                        // not a configuration problem, so not reported; the
                        // whole snapshot follows.
                        debug!(version = %nack.version, reason = %nack.reason, "endpoint update refused; sending the whole snapshot");
                        node.updates.retain(|v| *v != nack.version);
                        node.sent.clear();
                        snapshots.mark_changed();
                        continue;
                    }
                    warn!(version = %nack.version, reason = %nack.reason, "snapshot rejected");
                    hub.update_node(&node_id, session, |state| {
                        state.last_nack = Some((nack.version, nack.reason));
                    });
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break,
            },
        }
    }
    hub.update_node(&node_id, session, |state| state.connected = false);
    info!("data plane disconnected");
}

/// What the stream knows of the versions of its data plane.
struct NodeVersions {
    /// The last version sent (or reported in Hello).
    sent: String,
    /// The version the node serves once it applied all that was sent;
    /// `None` when unknown (after a Nack, or a snapshot withheld).
    serving: Option<String>,
    /// Versions sent as endpoint updates and not yet answered, the latest
    /// few.
    updates: Vec<String>,
}

impl NodeVersions {
    fn remember_update(&mut self, version: &str) {
        if self.updates.len() == 8 {
            self.updates.remove(0);
        }
        self.updates.push(version.to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(group: &str, port: u32) -> GroupSnapshot {
        GroupSnapshot::compiled(Snapshot {
            group: group.into(),
            ports: vec![gatehouse_snapshot::Port {
                port,
                ..Default::default()
            }],
            ..Default::default()
        })
    }

    #[test]
    fn publishing_the_same_version_does_not_wake_subscribers() {
        let hub = SnapshotHub::new();
        let first = BTreeMap::from([("a".to_string(), Arc::new(snapshot("a", 80)))]);
        hub.publish(&first);
        let mut rx = hub.group_receiver("a");
        rx.borrow_and_update();
        hub.publish(&first);
        assert!(!rx.has_changed().unwrap());
        hub.publish(&BTreeMap::from([(
            "a".to_string(),
            Arc::new(snapshot("a", 81)),
        )]));
        assert!(rx.has_changed().unwrap());
    }

    #[test]
    fn the_end_of_an_old_session_does_not_disconnect_a_reconnected_node() {
        let hub = SnapshotHub::new();
        let old = hub.register_node("n1", "a", "");
        let new = hub.register_node("n1", "a", "v1");
        hub.update_node("n1", old, |node| node.connected = false);
        let node = hub.node("n1").unwrap();
        assert!(node.connected);
        assert_eq!(node.applied_version, "v1");
        hub.update_node("n1", new, |node| node.connected = false);
        assert!(!hub.node("n1").unwrap().connected);
    }

    #[test]
    fn a_removed_group_receives_an_empty_snapshot() {
        let hub = SnapshotHub::new();
        hub.publish(&BTreeMap::from([(
            "a".to_string(),
            Arc::new(snapshot("a", 80)),
        )]));
        hub.publish(&BTreeMap::new());
        let rx = hub.group_receiver("a");
        let current = rx.borrow().clone().unwrap();
        assert!(current.whole().ports.is_empty());
        let empty = Snapshot {
            group: "a".into(),
            ..Default::default()
        };
        assert_eq!(
            hub.current_version("a").unwrap(),
            gatehouse_snapshot::content_version(&empty)
        );
    }
}
