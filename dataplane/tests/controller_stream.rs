//! The snapshot client against an in-test controller (a tonic server that
//! implements `SnapshotService`): Hello, Ack after serving, Nack keeping the
//! old table, and traffic following each applied snapshot.

mod common;

use std::{pin::Pin, time::Duration};

use common::*;
use gatehouse_dataplane::{
    Dataplane,
    client::{ClientConfig, run_client},
};
use gatehouse_snapshot::{
    self as pb, DataPlaneMessage, EncodedSnapshot,
    data_plane_message::Message,
    snapshot_service_server::{SnapshotService, SnapshotServiceServer},
};
use tokio::sync::mpsc;
use tokio_stream::{Stream, StreamExt, wrappers::ReceiverStream};
use tonic::{Request, Response, Status, Streaming};

/// Hands the test each subscription: the data plane's messages in, and a
/// sender for snapshots out.
type Session = (
    Streaming<DataPlaneMessage>,
    mpsc::Sender<Result<EncodedSnapshot, Status>>,
);

struct Controller {
    sessions: mpsc::Sender<Session>,
}

#[tonic::async_trait]
impl SnapshotService for Controller {
    type SubscribeStream = Pin<Box<dyn Stream<Item = Result<EncodedSnapshot, Status>> + Send>>;

    async fn subscribe(
        &self,
        request: Request<Streaming<DataPlaneMessage>>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let (snapshots, outbox) = mpsc::channel(4);
        self.sessions
            .send((request.into_inner(), snapshots))
            .await
            .map_err(|_| Status::unavailable("test over"))?;
        Ok(Response::new(Box::pin(ReceiverStream::new(outbox))))
    }
}

async fn next_message(inbox: &mut Streaming<DataPlaneMessage>) -> Message {
    let message = tokio::time::timeout(Duration::from_secs(10), inbox.next())
        .await
        .expect("data plane answers in time")
        .expect("stream open")
        .expect("valid message");
    message.message.expect("message set")
}

#[tokio::test]
async fn acks_after_serving_nacks_bad_snapshots_and_traffic_follows() {
    let (first, second) = (echo("first").await, echo("second").await);
    let bind = free_port();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (sessions, mut subscribed) = mpsc::channel(4);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(SnapshotServiceServer::new(Controller { sessions }))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    let dataplane = Dataplane::new();
    let config = ClientConfig {
        controller: format!("http://{address}"),
        group: "default".into(),
        node_id: "test-node".into(),
    };
    let client = tokio::spawn(run_client(dataplane.clone(), config));

    let (mut inbox, outbox) = subscribed.recv().await.expect("data plane subscribes");
    match next_message(&mut inbox).await {
        Message::Hello(hello) => {
            assert_eq!(
                (hello.group.as_str(), hello.node_id.as_str()),
                ("default", "test-node")
            );
            assert_eq!(hello.applied_version, "");
        }
        other => panic!("expected Hello, got {other:?}"),
    }

    let one = single_route(bind, "first", first);
    outbox.send(Ok(EncodedSnapshot::new(&one))).await.unwrap();
    match next_message(&mut inbox).await {
        Message::Ack(ack) => assert_eq!(ack.version, one.version),
        other => panic!("expected Ack, got {other:?}"),
    }
    // Acked means serving: no wait needed before the first request.
    let http = http1_client();
    assert_eq!(get(&http, bind, "x", "/", &[]).await.echo_name(), "first");

    let mut bad = single_route(bind, "second", second);
    bad.rules[0].backends[0].target = Some(pb::backend::Target::Cluster(7));
    pb::seal(&mut bad);
    outbox.send(Ok(EncodedSnapshot::new(&bad))).await.unwrap();
    match next_message(&mut inbox).await {
        Message::Nack(nack) => {
            assert_eq!(nack.version, bad.version);
            assert!(
                nack.reason.contains("rules[0].backends[0].cluster"),
                "{}",
                nack.reason
            );
        }
        other => panic!("expected Nack, got {other:?}"),
    }
    assert_eq!(get(&http, bind, "x", "/", &[]).await.echo_name(), "first");

    let two = single_route(bind, "second", second);
    outbox.send(Ok(EncodedSnapshot::new(&two))).await.unwrap();
    match next_message(&mut inbox).await {
        Message::Ack(ack) => assert_eq!(ack.version, two.version),
        other => panic!("expected Ack, got {other:?}"),
    }
    assert_eq!(get(&http, bind, "x", "/", &[]).await.echo_name(), "second");

    // The controller goes away: the data plane reconnects, says which
    // version it serves, and keeps serving meanwhile.
    drop(outbox);
    drop(inbox);
    let (mut inbox, _outbox) = subscribed.recv().await.expect("data plane reconnects");
    match next_message(&mut inbox).await {
        Message::Hello(hello) => assert_eq!(hello.applied_version, two.version),
        other => panic!("expected Hello, got {other:?}"),
    }
    assert_eq!(get(&http, bind, "x", "/", &[]).await.echo_name(), "second");
    client.abort();
}
