//! A data plane that does not say it runs gatehouse.dev filters is never
//! sent a snapshot that has some: it would drop them and serve the routes
//! unguarded. It keeps its previous snapshot, and its node state carries
//! the reason, which reaches the Gateway's Programmed condition.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use gatehouse_controller::{group_snapshot::GroupSnapshot, runtime, serve::SnapshotHub};
use gatehouse_snapshot as pb;
use gatehouse_snapshot::snapshot_service_client::SnapshotServiceClient;

fn guarded_snapshot() -> pb::Snapshot {
    let mut snapshot = pb::Snapshot {
        group: "default".into(),
        filters: vec![pb::GatehouseFilter {
            origin: None,
            filter: Some(pb::gatehouse_filter::Filter::IpAccess(pb::IpAccess {
                deny: vec!["192.0.2.0/24".into()],
                ..Default::default()
            })),
        }],
        chains: vec![pb::Chain {
            steps: vec![pb::ChainStep {
                filter: 0,
                phase: pb::FilterPhase::IpAccess as i32,
                gateway_scope: true,
            }],
        }],
        ..Default::default()
    };
    pb::seal(&mut snapshot);
    snapshot
}

async fn subscribe(
    addr: std::net::SocketAddr,
    node: &str,
    features: Vec<String>,
) -> tonic::Streaming<pb::Snapshot> {
    let mut client = SnapshotServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");
    let hello = pb::DataPlaneMessage {
        message: Some(pb::data_plane_message::Message::Hello(pb::Hello {
            group: "default".into(),
            node_id: node.into(),
            applied_version: String::new(),
            features,
        })),
    };
    // The outbound stream stays open for as long as the test runs.
    let outbound = futures::stream::iter([hello]).chain(futures::stream::pending());
    client
        .subscribe(outbound)
        .await
        .expect("subscribe")
        .into_inner()
}

#[tokio::test]
async fn a_data_plane_without_the_filters_feature_is_not_sent_filters() {
    let hub = SnapshotHub::new();
    let addr = runtime::start_grpc("127.0.0.1:0".parse().unwrap(), hub.clone())
        .await
        .expect("snapshot server");
    let snapshot = Arc::new(GroupSnapshot::compiled(guarded_snapshot()));
    hub.publish(&BTreeMap::from([("default".to_owned(), snapshot.clone())]));

    let mut current = subscribe(addr, "current", vec![pb::FEATURE_FILTERS.into()]).await;
    let received = tokio::time::timeout(Duration::from_secs(10), current.next())
        .await
        .expect("a snapshot in time")
        .expect("a message")
        .expect("a snapshot");
    assert_eq!(received.version, snapshot.version());
    assert_eq!(received.filters.len(), 1);

    let mut old = subscribe(addr, "old", Vec::new()).await;
    let (version, reason) = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(nack) = hub.node("old").and_then(|n| n.last_nack) {
                break nack;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the old node is told why in time");
    assert_eq!(version, snapshot.version());
    assert!(reason.contains(pb::FEATURE_FILTERS), "{reason}");
    // The decision is made before anything would be sent: nothing is
    // waiting on the old node's stream.
    assert!(
        futures::FutureExt::now_or_never(old.next()).is_none(),
        "an old data plane was sent a snapshot with filters"
    );
}
