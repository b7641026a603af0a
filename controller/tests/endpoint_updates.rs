//! The snapshot stream sends an endpoint change as an endpoint update (the
//! changed clusters only) to a data plane that names "endpoint-updates" and
//! serves the version it starts from, and the whole snapshot to any other;
//! an update the data plane refuses is followed by the whole snapshot,
//! without reporting a rejection.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use gatehouse_controller::{group_snapshot::GroupSnapshot, runtime, serve::SnapshotHub};
use gatehouse_snapshot as pb;
use gatehouse_snapshot::data_plane_message::Message;
use gatehouse_snapshot::snapshot_service_client::SnapshotServiceClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

fn endpoint(last: u8) -> pb::Endpoint {
    pb::Endpoint {
        address: format!("10.0.0.{last}"),
        port: 8080,
    }
}

fn compiled() -> GroupSnapshot {
    GroupSnapshot::compiled(pb::Snapshot {
        group: "default".into(),
        clusters: (0..100)
            .map(|i| pb::Cluster {
                name: format!("ns/svc-{i}:80"),
                endpoints: vec![endpoint(1)],
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    })
}

struct Node {
    replies: mpsc::Sender<pb::DataPlaneMessage>,
    snapshots: tonic::Streaming<pb::Snapshot>,
}

impl Node {
    async fn connect(
        addr: std::net::SocketAddr,
        node: &str,
        applied: &str,
        features: &[&str],
    ) -> Self {
        let mut client = SnapshotServiceClient::connect(format!("http://{addr}"))
            .await
            .expect("connect");
        let (replies, outbound) = mpsc::channel(8);
        let hello = Message::Hello(pb::Hello {
            group: "default".into(),
            node_id: node.into(),
            applied_version: applied.into(),
            features: features.iter().map(|f| f.to_string()).collect(),
        });
        replies
            .send(pb::DataPlaneMessage {
                message: Some(hello),
            })
            .await
            .expect("hello queued");
        let snapshots = client
            .subscribe(ReceiverStream::new(outbound))
            .await
            .expect("subscribe")
            .into_inner();
        Self { replies, snapshots }
    }

    async fn next(&mut self) -> pb::Snapshot {
        tokio::time::timeout(Duration::from_secs(10), self.snapshots.message())
            .await
            .expect("a snapshot in time")
            .expect("stream open")
            .expect("a snapshot")
    }

    async fn reply(&self, message: Message) {
        self.replies
            .send(pb::DataPlaneMessage {
                message: Some(message),
            })
            .await
            .expect("reply queued");
    }
}

fn publish(hub: &SnapshotHub, snapshot: &Arc<GroupSnapshot>) {
    hub.publish(&BTreeMap::from([("default".to_owned(), snapshot.clone())]));
}

#[tokio::test]
async fn an_endpoint_change_reaches_data_planes_as_an_update_or_whole() {
    let hub = SnapshotHub::new();
    let addr = runtime::start_grpc("127.0.0.1:0".parse().unwrap(), hub.clone())
        .await
        .expect("snapshot server");
    let first = Arc::new(compiled());
    publish(&hub, &first);

    let mut current = Node::connect(addr, "current", "", &[pb::FEATURE_ENDPOINT_UPDATES]).await;
    let mut old = Node::connect(addr, "old", "", &[]).await;
    for node in [&mut current, &mut old] {
        let whole = node.next().await;
        assert_eq!(whole.version, first.version());
        assert!(!whole.is_endpoint_update());
        assert_eq!(whole.clusters.len(), 100);
    }

    let second = Arc::new(
        first
            .with_endpoints(vec![(42, vec![endpoint(2), endpoint(3)])])
            .expect("a change"),
    );
    publish(&hub, &second);
    let update = current.next().await;
    assert_eq!(update.base_version, first.version());
    assert_eq!(update.version, second.version());
    assert!(update.clusters.is_empty() && update.ports.is_empty());
    assert_eq!(
        update.endpoint_updates,
        [pb::ClusterEndpoints {
            cluster: 42,
            endpoints: vec![endpoint(2), endpoint(3)],
        }]
    );
    let whole = old.next().await;
    assert_eq!(whole.version, second.version());
    assert_eq!(whole.clusters[42].endpoints.len(), 2);
    assert_eq!(pb::content_version(&whole), second.version());

    // A data plane that cannot apply the update (it serves something
    // else) refuses it, and gets the whole snapshot next; no rejection is
    // reported for it.
    current
        .reply(Message::Nack(pb::Nack {
            version: update.version.clone(),
            reason: "endpoint update applies to another version".into(),
        }))
        .await;
    let resent = current.next().await;
    assert!(!resent.is_endpoint_update());
    assert_eq!(resent.version, second.version());
    assert_eq!(*second.whole(), resent);
    assert!(hub.node("current").expect("known node").last_nack.is_none());
}

#[tokio::test]
async fn a_reconnecting_data_plane_gets_the_update_from_the_version_it_serves() {
    let hub = SnapshotHub::new();
    let addr = runtime::start_grpc("127.0.0.1:0".parse().unwrap(), hub.clone())
        .await
        .expect("snapshot server");
    let first = compiled();
    let second = first.with_endpoints(vec![(7, vec![])]).expect("a change");
    let third = Arc::new(
        second
            .with_endpoints(vec![(9, vec![endpoint(9)])])
            .expect("a change"),
    );
    publish(&hub, &third);
    let mut node = Node::connect(
        addr,
        "back",
        first.version(),
        &[pb::FEATURE_ENDPOINT_UPDATES],
    )
    .await;
    let update = node.next().await;
    assert_eq!(update.base_version, first.version());
    assert_eq!(update.version, third.version());
    let clusters: Vec<u32> = update.endpoint_updates.iter().map(|u| u.cluster).collect();
    assert_eq!(clusters, [7, 9]);

    // A version it no longer remembers: the whole snapshot.
    let mut stranger = Node::connect(
        addr,
        "stranger",
        "feedface",
        &[pb::FEATURE_ENDPOINT_UPDATES],
    )
    .await;
    let whole = stranger.next().await;
    assert!(!whole.is_endpoint_update());
    assert_eq!(whole.version, third.version());
}
