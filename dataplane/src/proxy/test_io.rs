//! Socket helpers shared by the proxy's tests against raw peers.

use std::{net::SocketAddr, sync::Arc};

use tokio::{io::AsyncReadExt, net::TcpStream};

use crate::Dataplane;

/// Reads from `stream` until `buffer` holds `marker`; returns where the
/// marker ends, or `None` when the stream closes (or fails) first.
pub async fn read_until(
    stream: &mut TcpStream,
    buffer: &mut Vec<u8>,
    marker: &[u8],
) -> Option<usize> {
    loop {
        if let Some(at) = buffer.windows(marker.len()).position(|w| w == marker) {
            return Some(at + marker.len());
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Serves one route to `backend`; returns the proxy's address.
pub async fn proxy_to(backend: SocketAddr) -> (Arc<Dataplane>, SocketAddr) {
    proxy_over(backend, "UPSTREAM_PROTOCOL_HTTP1").await
}

/// Serves one route to `backend`, spoken to in `protocol`.
pub async fn proxy_over(backend: SocketAddr, protocol: &str) -> (Arc<Dataplane>, SocketAddr) {
    proxy_with(backend, protocol, "").await
}

/// Serves one route to `backend`, spoken to in `protocol`, its rule with
/// the snapshot fields `rule_fields` (JSON, each followed by a comma).
pub async fn proxy_with(
    backend: SocketAddr,
    protocol: &str,
    rule_fields: &str,
) -> (Arc<Dataplane>, SocketAddr) {
    proxy_with_options(backend, protocol, rule_fields, crate::Options::default()).await
}

/// As `proxy_with`, the data plane run with `options`.
pub async fn proxy_with_options(
    backend: SocketAddr,
    protocol: &str,
    rule_fields: &str,
    options: crate::Options,
) -> (Arc<Dataplane>, SocketAddr) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let json = format!(
        r#"{{"group":"default","ports":[{{"address":"127.0.0.1","port":8080,"bindPort":{port},
        "protocol":"PROTOCOL_HTTP","listeners":[{{"origin":{{"kind":"Gateway","namespace":"d",
        "name":"g","section":"http"}},"hostname":"","hosts":[{{"hostname":"","matches":[{{"path":
        {{"type":"PATH_MATCH_PATH_PREFIX","value":"/"}},"rule":0}}]}}]}}]}}],"rules":[{{"origin":
        {{"kind":"HTTPRoute","namespace":"d","name":"r","section":"0"}},{rule_fields}"backends":[{{"weight":1,
        "cluster":0}}]}}],"clusters":[{{"name":"d/b:80","protocol":"{protocol}","endpoints":[{{
        "address":"127.0.0.1","port":{}}}]}}]}}"#,
        backend.port()
    );
    let dataplane = Dataplane::with_options(options);
    let snapshot = gatehouse_snapshot::decode_any(json.as_bytes()).unwrap();
    dataplane.apply(snapshot).await.unwrap();
    (dataplane, ([127, 0, 0, 1], port).into())
}
