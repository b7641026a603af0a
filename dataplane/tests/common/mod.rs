//! Shared test helpers: in-test echo backends, snapshot builders, clients.
#![allow(dead_code)]

use std::{
    collections::BTreeMap,
    convert::Infallible,
    net::{SocketAddr, TcpListener as StdListener},
    sync::Arc,
};

use bytes::Bytes;
use gatehouse_snapshot as pb;
use http_body_util::{BodyExt, Empty, Full};
use hyper::{Request, Response, body::Incoming, service::service_fn};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use tokio::net::TcpListener;

/// Starts an echo backend on 127.0.0.1:0 (HTTP/1.1 and h2c). Each response
/// has `x-echo-name` and a JSON body describing the request, plus
/// connection-specific headers the proxy must strip.
pub async fn echo(name: &str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let name: Arc<str> = name.into();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let name = name.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| answer(name.clone(), request));
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    address
}

async fn answer(
    name: Arc<str>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (key, value) in request.headers() {
        headers
            .entry(key.as_str().to_owned())
            .or_default()
            .push(value.to_str().unwrap_or("").to_owned());
    }
    let host = request
        .uri()
        .authority()
        .map(|a| a.to_string())
        .or_else(|| headers.get("host").and_then(|h| h.first().cloned()))
        .unwrap_or_default();
    let body = serde_json::json!({
        "name": &*name,
        "method": request.method().as_str(),
        "path": request.uri().path(),
        "query": request.uri().query().unwrap_or(""),
        "host": host,
        "headers": headers,
        "version": format!("{:?}", request.version()),
    });
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    let h = response.headers_mut();
    h.insert("x-echo-name", name.parse().unwrap());
    if request.version() == http::Version::HTTP_11 {
        h.insert("connection", "x-hop".parse().unwrap());
        h.insert("x-hop", "1".parse().unwrap());
        h.insert("proxy-connection", "keep-alive".parse().unwrap());
    }
    Ok(response)
}

/// A port that was free a moment ago (the snapshot must name real ports).
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `N` distinct ports that were free a moment ago: every listener stays
/// open until all the ports are read, so no two are the same.
pub fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<StdListener> = (0..N)
        .map(|_| StdListener::bind("127.0.0.1:0").unwrap())
        .collect();
    std::array::from_fn(|i| listeners[i].local_addr().unwrap().port())
}

/// A loopback address that refuses connections while this lives: a socket
/// bound to it that never listens (and sets no SO_REUSEADDR, so nothing
/// else can take the port meanwhile).
pub struct ClosedPort {
    pub addr: SocketAddr,
    _socket: tokio::net::TcpSocket,
}

pub fn closed_port() -> ClosedPort {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
    ClosedPort {
        addr: socket.local_addr().unwrap(),
        _socket: socket,
    }
}

pub fn cluster(name: &str, endpoints: &[SocketAddr]) -> pb::Cluster {
    pb::Cluster {
        name: name.into(),
        endpoints: endpoints
            .iter()
            .map(|e| pb::Endpoint {
                address: e.ip().to_string(),
                port: u32::from(e.port()),
            })
            .collect(),
        ..Default::default()
    }
}

pub fn to_cluster(weight: u32, cluster: u32) -> pb::Backend {
    pb::Backend {
        weight,
        target: Some(pb::backend::Target::Cluster(cluster)),
        ..Default::default()
    }
}

pub fn invalid(weight: u32) -> pb::Backend {
    pb::Backend {
        weight,
        target: Some(pb::backend::Target::Invalid("BackendNotFound".into())),
        ..Default::default()
    }
}

pub fn rule(name: &str, backends: Vec<pb::Backend>) -> pb::Rule {
    pb::Rule {
        origin: Some(pb::Origin {
            kind: "HTTPRoute".into(),
            namespace: "ns".into(),
            name: name.into(),
            section: "0".into(),
        }),
        backends,
        ..Default::default()
    }
}

pub fn prefix(value: &str, rule: u32) -> pb::RouteMatch {
    pb::RouteMatch {
        path: Some(pb::PathMatch {
            r#type: pb::PathMatchType::PathMatchPathPrefix as i32,
            value: value.into(),
        }),
        rule,
        ..Default::default()
    }
}

pub fn listener(hostname: &str, hosts: Vec<pb::VirtualHost>) -> pb::Listener {
    pb::Listener {
        origin: Some(pb::Origin {
            kind: "Gateway".into(),
            namespace: "ns".into(),
            name: "gw".into(),
            section: format!("l-{hostname}"),
        }),
        hostname: hostname.into(),
        hosts,
        ..Default::default()
    }
}

pub fn vhost(hostname: &str, matches: Vec<pb::RouteMatch>) -> pb::VirtualHost {
    pb::VirtualHost {
        hostname: hostname.into(),
        matches,
    }
}

pub fn port(bind_port: u16, listeners: Vec<pb::Listener>) -> pb::Port {
    pb::Port {
        address: "127.0.0.1".into(),
        port: 80,
        bind_port: u32::from(bind_port),
        protocol: pb::Protocol::Http as i32,
        listeners,
        ..Default::default()
    }
}

/// A sealed snapshot.
pub fn snapshot(
    ports: Vec<pb::Port>,
    rules: Vec<pb::Rule>,
    clusters: Vec<pb::Cluster>,
) -> pb::Snapshot {
    let mut s = pb::Snapshot {
        group: "default".into(),
        version: String::new(),
        ports,
        rules,
        clusters,
        ..Default::default()
    };
    pb::seal(&mut s);
    s
}

/// One port, one "" listener and virtual host, `/` to one rule with one
/// cluster of `backend`.
pub fn single_route(bind_port: u16, route: &str, backend: SocketAddr) -> pb::Snapshot {
    snapshot(
        vec![port(
            bind_port,
            vec![listener("", vec![vhost("", vec![prefix("/", 0)])])],
        )],
        vec![rule(route, vec![to_cluster(1, 0)])],
        vec![cluster(&format!("ns/{route}:80"), &[backend])],
    )
}

pub type HttpClient = Client<HttpConnector, Empty<Bytes>>;

pub fn http1_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

pub fn h2c_client() -> HttpClient {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn echo_name(&self) -> &str {
        self.headers
            .get("x-echo-name")
            .map_or("", |v| v.to_str().unwrap())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {:?}", self.body))
    }
}

/// GET `http://127.0.0.1:{port}{path}` with Host `host` and extra headers.
pub async fn get(
    client: &HttpClient,
    port: u16,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Reply {
    let mut builder = Request::get(format!("http://127.0.0.1:{port}{path}")).header("host", host);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    send(client, builder.body(Empty::new()).unwrap()).await
}

pub async fn send(client: &HttpClient, request: Request<Empty<Bytes>>) -> Reply {
    let response = client
        .request(request)
        .await
        .expect("request reaches the data plane");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Reply {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    }
}
