//! WebSocket through the gateway (RFC 6455 over an HTTP/1.1 upgrade): the
//! echo backend answers each message, and an open WebSocket keeps working
//! while the configuration changes under it.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use gatehouse_e2e::{Echo, HttpClient, Standalone, eventually, manifests};
use tokio_tungstenite::tungstenite::Message;

fn route(extra_rule: &str) -> String {
    format!(
        r#"---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: ws, namespace: default}}
spec:
  parentRefs: [{{name: gw}}]
  hostnames: [ws.test]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /chat}}}}]
    backendRefs: [{{name: svc-ws, port: 80}}]
{extra_rule}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_is_proxied_and_survives_a_configuration_swap() {
    let backend = Echo::start("ws-backend");
    let mut service = manifests::service("default", "svc-ws", &[backend.port()]);
    // The Gateway API's WebSocket appProtocol.
    service = service.replace(
        "  - name: http\n",
        "  - name: http\n    appProtocol: kubernetes.io/ws\n",
    );
    assert!(service.contains("kubernetes.io/ws"));
    let gw = Standalone::start(&[
        ("gateway.yaml", manifests::gateway()),
        ("service.yaml", service),
        ("route.yaml", route("")),
    ])
    .await;
    let stream = tokio::net::TcpStream::connect(gw.socket(80)).await.unwrap();
    let (mut socket, response) = tokio_tungstenite::client_async("ws://ws.test/chat", stream)
        .await
        .expect("WebSocket handshake through the gateway");
    assert_eq!(response.status(), 101);
    socket.send(Message::text("hello")).await.unwrap();
    let reply = socket.next().await.unwrap().unwrap();
    assert_eq!(reply, Message::text("ws-backend: hello"));

    // A new rule: the snapshot changes while the WebSocket is open.
    let extra = "  - matches: [{path: {type: PathPrefix, value: /new}}]\n    backendRefs: [{name: svc-ws, port: 80}]\n";
    gw.write("route.yaml", &route(extra));
    let client = HttpClient::new();
    let url = gw.url(80, "/new");
    eventually(Duration::from_secs(15), || async {
        let reply = client.get(&url, Some("ws.test")).await?;
        anyhow::ensure!(
            reply.status == 200,
            "new rule not served yet: {}",
            reply.status
        );
        Ok(())
    })
    .await;
    for i in 0..5 {
        socket
            .send(Message::text(format!("after swap {i}")))
            .await
            .unwrap();
        let reply = socket.next().await.unwrap().unwrap();
        assert_eq!(reply, Message::text(format!("ws-backend: after swap {i}")));
    }
    socket.send(Message::binary(vec![0u8, 1, 2])).await.unwrap();
    let reply = socket.next().await.unwrap().unwrap();
    assert_eq!(
        reply,
        Message::binary([b"ws-backend: ".as_slice(), &[0, 1, 2]].concat())
    );
    socket.close(None).await.unwrap();
}
