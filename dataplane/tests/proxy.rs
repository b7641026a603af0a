//! The data plane in-process, fed snapshots, with real sockets and real
//! echo backends.

mod common;

use std::{
    net::TcpListener as StdListener,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use common::*;
use gatehouse_dataplane::{ApplyError, Dataplane, Options};
use gatehouse_snapshot as pb;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

async fn serve(snapshot: pb::Snapshot) -> Arc<Dataplane> {
    serve_with(Options::default(), snapshot).await
}

async fn serve_with(options: Options, snapshot: pb::Snapshot) -> Arc<Dataplane> {
    let dataplane = Dataplane::with_options(options);
    dataplane.apply(snapshot).await.expect("snapshot applies");
    dataplane
}

/// One port for any host, and a rule for each (path prefix, backend), in
/// that order: rule and cluster `i` for the `i`th.
fn by_prefix(bind: u16, routes: &[(&str, std::net::SocketAddr)]) -> pb::Snapshot {
    let index = |i: usize| u32::try_from(i).unwrap();
    let matches = (routes.iter().enumerate())
        .map(|(i, (path, _))| prefix(path, index(i)))
        .collect();
    snapshot(
        vec![port(bind, vec![listener("", vec![vhost("", matches)])])],
        (0..routes.len())
            .map(|i| rule(&format!("r{i}"), vec![to_cluster(1, index(i))]))
            .collect(),
        (routes.iter().enumerate())
            .map(|(i, (_, backend))| cluster(&format!("ns/r{i}:80"), &[*backend]))
            .collect(),
    )
}

/// What an HTTP/2 client with prior knowledge sends first: the preface and
/// its (empty) SETTINGS.
const H2C_OPENING: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";

/// An HTTP/2 client connection with prior knowledge to `bind`, and the task
/// that drives it.
async fn h2c_client<B>(
    bind: u16,
) -> (
    hyper::client::conn::http2::SendRequest<B>,
    tokio::task::JoinHandle<hyper::Result<()>>,
)
where
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = TcpStream::connect(("127.0.0.1", bind)).await.unwrap();
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    (sender, tokio::spawn(connection))
}

fn header_match(name: &str, value: &str) -> pb::HeaderMatch {
    pb::HeaderMatch {
        r#type: pb::ValueMatchType::ValueMatchExact as i32,
        name: name.into(),
        value: value.into(),
    }
}

/// (host, path, extra headers, expected backend name).
type RouteCase = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
    &'static str,
);

#[tokio::test]
async fn routes_by_host_path_header_query_and_method() {
    let names = [
        "exact-host",
        "wildcard",
        "path",
        "header",
        "query",
        "method",
        "fallback",
    ];
    let mut backends = Vec::new();
    for name in names {
        backends.push(echo(name).await);
    }
    let bind = free_port();
    let mut by_header = prefix("/", 3);
    by_header.headers = vec![header_match("x-tier", "gold")];
    let mut by_query = prefix("/", 4);
    by_query.query_params = vec![pb::QueryParamMatch {
        r#type: pb::ValueMatchType::ValueMatchRegularExpression as i32,
        name: "v".into(),
        value: "[0-9]+".into(),
    }];
    let mut by_method = prefix("/", 5);
    by_method.method = "DELETE".into();
    let any_host = vhost(
        "",
        vec![
            prefix("/api", 2),
            by_header,
            by_query,
            by_method,
            prefix("/", 6),
        ],
    );
    let snap = snapshot(
        vec![port(
            bind,
            vec![listener(
                "",
                vec![
                    vhost("a.example.com", vec![prefix("/", 0)]),
                    vhost("*.example.com", vec![prefix("/", 1)]),
                    any_host,
                ],
            )],
        )],
        names
            .iter()
            .enumerate()
            .map(|(i, n)| rule(n, vec![to_cluster(1, i as u32)]))
            .collect(),
        names
            .iter()
            .zip(&backends)
            .map(|(n, b)| cluster(&format!("ns/{n}:80"), &[*b]))
            .collect(),
    );
    let _dp = serve(snap).await;
    let client = http1_client();
    let cases: [RouteCase; 7] = [
        ("A.Example.com:80", "/", &[], "exact-host"),
        ("b.example.com", "/", &[], "wildcard"),
        ("other", "/api/x", &[], "path"),
        ("other", "/", &[("X-Tier", "gold")], "header"),
        ("other", "/?v=42", &[], "query"),
        ("other", "/?v=4x", &[], "fallback"),
        ("other", "/apix", &[], "fallback"),
    ];
    for (host, path, headers, expected) in cases {
        let reply = get(&client, bind, host, path, headers).await;
        assert_eq!(reply.status, 200, "{host}{path}");
        assert_eq!(reply.echo_name(), expected, "{host}{path} {headers:?}");
    }
    let delete = Request::delete(format!("http://127.0.0.1:{bind}/"))
        .header("host", "other")
        .body(Empty::new())
        .unwrap();
    assert_eq!(send(&client, delete).await.echo_name(), "method");
}

#[tokio::test]
async fn weighted_split_follows_weights_over_2000_requests() {
    let (light, heavy) = (echo("light").await, echo("heavy").await);
    let bind = free_port();
    let snap = snapshot(
        vec![port(
            bind,
            vec![listener("", vec![vhost("", vec![prefix("/", 0)])])],
        )],
        vec![rule(
            "split",
            vec![to_cluster(1, 0), to_cluster(0, 2), to_cluster(3, 1)],
        )],
        vec![
            cluster("ns/light:80", &[light]),
            cluster("ns/heavy:80", &[heavy]),
            cluster("ns/zero:80", &[light]),
        ],
    );
    let _dp = serve(snap).await;
    let client = http1_client();
    let total = 2000;
    let mut heavy_count = 0;
    for _ in 0..total {
        let reply = get(&client, bind, "x", "/", &[]).await;
        assert_eq!(reply.status, 200);
        heavy_count += usize::from(reply.echo_name() == "heavy");
    }
    // Expected 0.75; one standard deviation is about 0.0097, so ±0.05 is
    // beyond five of them.
    let share = heavy_count as f64 / total as f64;
    assert!((share - 0.75).abs() < 0.05, "heavy share {share}");
}

#[tokio::test]
async fn local_answers_404_500_503_502() {
    let backend = echo("ok").await;
    let closed = closed_port();
    let bind = free_port();
    let snap = snapshot(
        vec![port(
            bind,
            vec![listener(
                "known.example",
                vec![vhost(
                    "",
                    vec![
                        prefix("/invalid", 0),
                        prefix("/empty", 1),
                        prefix("/zero", 2),
                        prefix("/no-endpoints", 3),
                        prefix("/closed", 4),
                        prefix("/ok", 5),
                    ],
                )],
            )],
        )],
        vec![
            rule("invalid", vec![invalid(1)]),
            rule("empty", vec![]),
            rule("zero", vec![to_cluster(0, 0)]),
            rule("no-endpoints", vec![to_cluster(1, 1)]),
            rule("closed", vec![to_cluster(1, 2)]),
            rule("ok", vec![to_cluster(1, 0)]),
        ],
        vec![
            cluster("ns/ok:80", &[backend]),
            cluster("ns/none:80", &[]),
            cluster("ns/closed:80", &[closed.addr]),
        ],
    );
    let _dp = serve(snap).await;
    let client = http1_client();
    let cases = [
        ("known.example", "/ok", 200),
        ("known.example", "/nothing", 404),
        ("other.example", "/ok", 404),
        ("known.example", "/invalid", 500),
        ("known.example", "/empty", 500),
        ("known.example", "/zero", 500),
        ("known.example", "/no-endpoints", 503),
        ("known.example", "/closed", 502),
    ];
    for (host, path, status) in cases {
        assert_eq!(
            get(&client, bind, host, path, &[]).await.status,
            status,
            "{host}{path}"
        );
    }
}

#[tokio::test]
async fn missing_host_is_400_not_a_panic() {
    let bind = free_port();
    let _dp = serve(single_route(bind, "r", echo("e").await)).await;
    let mut stream = TcpStream::connect(("127.0.0.1", bind)).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).await.unwrap();
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
}

#[tokio::test]
async fn hop_by_hop_removed_and_forwarding_headers_set() {
    let bind = free_port();
    let _dp = serve(single_route(bind, "r", echo("e").await)).await;
    let client = http1_client();
    let reply = get(
        &client,
        bind,
        "svc.example:8080",
        "/p?q=1",
        &[
            ("connection", "x-secret"),
            ("x-secret", "s"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers, gzip"),
            ("trailer", "x-sum"),
            ("x-forwarded-for", "203.0.113.9"),
        ],
    )
    .await;
    assert_eq!(reply.status, 200);
    for name in ["x-hop", "connection", "proxy-connection"] {
        assert!(!reply.headers.contains_key(name), "response kept {name}");
    }
    let echo = reply.json();
    let headers = &echo["headers"];
    for name in [
        "connection",
        "x-secret",
        "keep-alive",
        "proxy-connection",
        "trailer",
        "upgrade",
    ] {
        assert!(
            headers.get(name).is_none(),
            "request kept {name}: {headers}"
        );
    }
    assert_eq!(headers["te"][0], "trailers");
    assert_eq!(headers["x-forwarded-for"][0], "203.0.113.9, 127.0.0.1");
    assert_eq!(headers["x-forwarded-proto"][0], "http");
    let id = headers["x-request-id"][0].as_str().unwrap();
    assert!(
        id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );
    assert_eq!(echo["host"], "svc.example:8080");
    assert_eq!(echo["path"], "/p");
    assert_eq!(echo["query"], "q=1");

    let kept = get(
        &client,
        bind,
        "svc.example",
        "/",
        &[("x-request-id", "mine")],
    )
    .await
    .json();
    assert_eq!(kept["headers"]["x-request-id"][0], "mine");
}

/// Sends one HTTP/2 prior-knowledge request with `:authority` `authority`.
async fn h2_get(bind: u16, authority: &str, path: &str) -> (u16, serde_json::Value) {
    let (mut sender, _) = h2c_client(bind).await;
    let request = Request::get(format!("http://{authority}{path}"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap())
}

#[tokio::test]
async fn h2c_clients_reach_http1_and_h2c_upstreams_with_their_authority() {
    let (one, two) = (echo("http1").await, echo("h2c").await);
    let bind = free_port();
    let mut h2_cluster = cluster("ns/h2:80", &[two]);
    h2_cluster.protocol = pb::UpstreamProtocol::H2c as i32;
    let snap = snapshot(
        vec![port(
            bind,
            vec![listener(
                "",
                vec![vhost("", vec![prefix("/h2", 1), prefix("/", 0)])],
            )],
        )],
        vec![
            rule("one", vec![to_cluster(1, 0)]),
            rule("two", vec![to_cluster(1, 1)]),
        ],
        vec![cluster("ns/one:80", &[one]), h2_cluster],
    );
    let _dp = serve(snap).await;
    let (status, echo) = h2_get(bind, "app.example", "/x").await;
    assert_eq!(status, 200);
    assert_eq!(
        (echo["name"].as_str(), echo["version"].as_str()),
        (Some("http1"), Some("HTTP/1.1"))
    );
    assert_eq!(echo["host"], "app.example");
    let (status, echo) = h2_get(bind, "app.example", "/h2").await;
    assert_eq!(status, 200);
    assert_eq!(
        (echo["name"].as_str(), echo["version"].as_str()),
        (Some("h2c"), Some("HTTP/2.0"))
    );
    assert_eq!(echo["host"], "app.example");
    // HTTP/1.1 client to an h2c upstream.
    let reply = get(&http1_client(), bind, "app.example", "/h2", &[]).await;
    assert_eq!(reply.json()["version"], "HTTP/2.0");
}

#[tokio::test]
async fn least_request_cluster_serves_from_all_endpoints() {
    let (a, b) = (echo("a").await, echo("b").await);
    let bind = free_port();
    let mut lr = cluster("ns/lr:80", &[a, b]);
    lr.load_balancing = pb::LoadBalancing::LeastRequest as i32;
    let snap = snapshot(
        vec![port(
            bind,
            vec![listener("", vec![vhost("", vec![prefix("/", 0)])])],
        )],
        vec![rule("lr", vec![to_cluster(1, 0)])],
        vec![lr],
    );
    let _dp = serve(snap).await;
    let client = http1_client();
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..200 {
        seen.insert(
            get(&client, bind, "x", "/", &[])
                .await
                .echo_name()
                .to_owned(),
        );
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), ["a", "b"]);
}

#[tokio::test]
async fn swap_under_load_has_zero_failures_and_keeps_open_connections() {
    let (blue, green) = (echo("blue").await, echo("green").await);
    let bind = free_port();
    let dp = serve(single_route(bind, "blue", blue)).await;

    // A keep-alive connection opened before any swap.
    let stream = TcpStream::connect(("127.0.0.1", bind)).await.unwrap();
    let (mut kept, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    let kept_alive = Arc::new(AtomicBool::new(true));
    let flag = kept_alive.clone();
    tokio::spawn(async move {
        let _ = connection.await;
        flag.store(false, Ordering::SeqCst);
    });
    let first = Request::get("/")
        .header("host", "x")
        .body(Empty::<Bytes>::new())
        .unwrap();
    assert_eq!(
        kept.send_request(first).await.unwrap().headers()["x-echo-name"],
        "blue"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (stop, served) = (stop.clone(), served.clone());
        load.push(tokio::spawn(async move {
            let client = http1_client();
            while !stop.load(Ordering::Relaxed) {
                let reply = get(&client, bind, "x", "/", &[]).await;
                assert_eq!(reply.status, 200, "request failed during swaps");
                served.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for i in 0..20 {
        let (route, backend) = if i % 2 == 0 {
            ("green", green)
        } else {
            ("blue", blue)
        };
        dp.apply(single_route(bind, route, backend))
            .await
            .expect("swap applies");
        tokio::task::yield_now().await;
    }
    dp.apply(single_route(bind, "green", green)).await.unwrap();
    let target = served.load(Ordering::Relaxed) + 50;
    while served.load(Ordering::Relaxed) < target {
        tokio::task::yield_now().await;
    }
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.expect("no request failed");
    }
    assert!(
        kept_alive.load(Ordering::SeqCst),
        "the keep-alive connection was closed"
    );
    let after = Request::get("/")
        .header("host", "x")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = kept
        .send_request(after)
        .await
        .expect("old connection still serves");
    assert_eq!(response.headers()["x-echo-name"], "green");
}

#[tokio::test]
async fn nack_keeps_the_old_table_and_closes_newly_bound_ports() {
    let backend = echo("old").await;
    let bind = free_port();
    let dp = serve(single_route(bind, "old", backend)).await;
    let version = dp.applied_version();

    let mut bad = single_route(bind, "new", backend);
    bad.ports[0].listeners[0].hosts[0].matches[0].path = Some(pb::PathMatch {
        r#type: pb::PathMatchType::PathMatchRegularExpression as i32,
        value: "/(".into(),
    });
    pb::seal(&mut bad);
    assert!(matches!(dp.apply(bad).await, Err(ApplyError::Invalid(_))));

    // Two new ports, the second one taken: the first must be released.
    let (free, taken) = {
        let [a, b] = free_ports();
        (a.min(b), a.max(b))
    };
    let _occupant = StdListener::bind(("127.0.0.1", taken)).unwrap();
    let mut busy = single_route(bind, "new", backend);
    busy.ports.push(port(free, vec![]));
    busy.ports.push(port(taken, vec![]));
    pb::seal(&mut busy);
    match dp.apply(busy).await {
        Err(ApplyError::Bind(e)) => assert_eq!(e.port.bind_port, taken),
        other => panic!("expected a bind error, got {other:?}"),
    }
    StdListener::bind(("127.0.0.1", free)).expect("newly bound port was released");

    assert_eq!(dp.applied_version(), version);
    assert_eq!(
        get(&http1_client(), bind, "x", "/", &[]).await.echo_name(),
        "old"
    );
    assert_eq!(dp.apply_counts(), (1, 2));
}

#[tokio::test]
async fn removed_port_stops_accepting_and_new_port_serves() {
    let backend = echo("e").await;
    let [first, second] = free_ports();
    let dp = serve(single_route(first, "r", backend)).await;
    dp.apply(single_route(second, "r", backend)).await.unwrap();
    assert_eq!(
        get(&http1_client(), second, "x", "/", &[]).await.status,
        200
    );
    // The accept loop stops asynchronously; poll with a bound.
    let mut refused = false;
    for _ in 0..200 {
        if TcpStream::connect(("127.0.0.1", first)).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "removed port still accepts connections");
}

#[tokio::test]
async fn same_version_is_not_rebuilt() {
    let bind = free_port();
    let snap = single_route(bind, "r", echo("e").await);
    let dp = serve(snap.clone()).await;
    let before = dp.table();
    assert_eq!(
        dp.apply(snap).await.unwrap(),
        gatehouse_dataplane::Applied::Unchanged
    );
    assert!(Arc::ptr_eq(&before, &dp.table()));
}

/// Reads until the peer closes (or resets) the connection; returns what
/// came and how long the close took.
async fn read_until_closed(stream: &mut TcpStream) -> (Vec<u8>, Duration) {
    let started = std::time::Instant::now();
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await
    .expect("the connection was not closed");
    (received, started.elapsed())
}

#[tokio::test]
async fn connections_without_a_complete_head_in_time_are_closed_and_busy_ones_kept() {
    // Long beside the gaps between the busy connection's requests (a
    // quarter of it), so that a loaded machine cannot make them look idle.
    const TIMEOUT: Duration = Duration::from_secs(1);
    let bind = free_port();
    let dataplane = serve_with(
        Options {
            client_header_timeout: TIMEOUT,
            ..Options::default()
        },
        single_route(bind, "r", echo("e").await),
    )
    .await;
    let connect = || TcpStream::connect(("127.0.0.1", bind));

    // Says nothing at all.
    let mut silent = connect().await.unwrap();
    // Sends its head a few bytes at a time, never finishing it.
    let mut slow = connect().await.unwrap();
    let (mut slow_reader, mut slow_writer) = slow.split();
    // Gets an answer, then stays idle.
    let mut idle = connect().await.unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n")
        .await
        .unwrap();

    let trickle = async {
        let head = b"GET / HTTP/1.1\r\nhost: a\r\nx-slow: ";
        let _ = slow_writer.write_all(head).await;
        for _ in 0..100 {
            tokio::time::sleep(TIMEOUT / 8).await;
            if slow_writer.write_all(b"z").await.is_err() {
                break;
            }
        }
    };
    let slow_closed = async {
        let started = std::time::Instant::now();
        let mut chunk = [0u8; 64];
        loop {
            match slow_reader.read(&mut chunk).await {
                Ok(0) | Err(_) => break started.elapsed(),
                Ok(_) => {}
            }
        }
    };
    let (((silent_bytes, silent_after), (idle_bytes, idle_after)), slow_after) = tokio::join!(
        async { tokio::join!(read_until_closed(&mut silent), read_until_closed(&mut idle)) },
        async {
            tokio::select! {
                after = slow_closed => after,
                () = trickle => panic!("the slow client was never cut off"),
            }
        },
    );
    assert!(silent_bytes.is_empty());
    assert!(silent_after >= TIMEOUT, "closed after {silent_after:?}");
    assert!(slow_after >= TIMEOUT, "closed after {slow_after:?}");
    assert!(slow_after < TIMEOUT * 5, "closed after {slow_after:?}");
    let idle_text = String::from_utf8_lossy(&idle_bytes);
    assert!(idle_text.starts_with("HTTP/1.1 200"), "{idle_text}");
    assert!(idle_after >= TIMEOUT, "closed after {idle_after:?}");
    let (header_timeouts, _) = dataplane.stats().client_timeouts().counts();
    assert_eq!(header_timeouts, 3, "silent, slow and idle");

    // A connection whose requests come within the timeout of each other
    // stays open well past it.
    let stream = connect().await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    let driven = tokio::spawn(connection);
    for _ in 0..6 {
        tokio::time::sleep(TIMEOUT / 4).await;
        sender
            .ready()
            .await
            .expect("the busy connection was closed");
        let request = Request::get("/")
            .header("host", "a")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), 200);
        response.into_body().collect().await.unwrap();
    }
    assert!(!driven.is_finished());
}

/// An HTTP/1.1 backend that answers each request's head after `delay`,
/// and its four-byte body, `done`, after `delay` again.
async fn slow_upstream(delay: Duration) -> std::net::SocketAddr {
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = upstream.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = upstream.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                tokio::time::sleep(delay).await;
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\n")
                    .await;
                tokio::time::sleep(delay).await;
                let _ = stream.write_all(b"done").await;
            });
        }
    });
    backend
}

#[tokio::test]
async fn a_request_in_flight_longer_than_the_header_timeout_is_not_cut() {
    const TIMEOUT: Duration = Duration::from_millis(300);
    let backend = slow_upstream(TIMEOUT * 3).await;
    let bind = free_port();
    let _dataplane = serve_with(
        Options {
            client_header_timeout: TIMEOUT,
            ..Options::default()
        },
        single_route(bind, "r", backend),
    )
    .await;
    let mut client = TcpStream::connect(("127.0.0.1", bind)).await.unwrap();
    client
        .write_all(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n")
        .await
        .unwrap();
    let (received, after) = read_until_closed(&mut client).await;
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("\r\n\r\ndone"), "{text}");
    // Then idle: closed a timeout after the response, not before.
    assert!(after >= TIMEOUT * 7, "closed after {after:?}");
}

/// The frame types of the HTTP/2 frames in `bytes`, which a server sent
/// (RFC 9113 §4.1: a 24-bit length, then the type).
fn h2_frame_types(bytes: &[u8]) -> Vec<u8> {
    let mut types = Vec::new();
    let mut rest = bytes;
    while rest.len() >= 9 {
        let length = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
        types.push(rest[3]);
        rest = &rest[(9 + length).min(rest.len())..];
    }
    types
}

#[tokio::test]
async fn h2_connections_without_a_stream_in_time_get_a_goaway_and_busy_ones_are_kept() {
    const TIMEOUT: Duration = Duration::from_secs(1);
    const GOAWAY: u8 = 0x7;
    let bind = free_port();
    // "/slow" answers after two timeouts, and ends its body two more later.
    let routes = [
        ("/slow", slow_upstream(TIMEOUT * 2).await),
        ("/", echo("e").await),
    ];
    let dataplane = serve_with(
        Options {
            client_header_timeout: TIMEOUT,
            ..Options::default()
        },
        by_prefix(bind, &routes),
    )
    .await;
    let h2_connect = || h2c_client(bind);
    let get = |path: &str| {
        Request::get(format!("http://a{path}"))
            .body(Empty::<Bytes>::new())
            .unwrap()
    };

    // Opens with the preface and its SETTINGS, then sends no stream.
    let silent = async {
        let mut stream = TcpStream::connect(("127.0.0.1", bind)).await.unwrap();
        stream.write_all(H2C_OPENING).await.unwrap();
        read_until_closed(&mut stream).await
    };
    // One stream open for four timeouts.
    let in_flight = async {
        let (mut sender, driven) = h2_connect().await;
        let started = std::time::Instant::now();
        let response = sender.send_request(get("/slow")).await.unwrap();
        assert_eq!(response.status(), 200);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"done");
        assert!(started.elapsed() >= TIMEOUT * 4);
        assert!(!driven.is_finished(), "closed with a stream open");
    };
    // A request every quarter timeout, for three timeouts.
    let busy = async {
        let (mut sender, driven) = h2_connect().await;
        for _ in 0..12 {
            tokio::time::sleep(TIMEOUT / 4).await;
            sender
                .ready()
                .await
                .expect("the busy connection was closed");
            let response = sender.send_request(get("/")).await.unwrap();
            assert_eq!(response.status(), 200);
            response.into_body().collect().await.unwrap();
        }
        assert!(!driven.is_finished());
    };
    let ((silent_bytes, silent_after), (), ()) = tokio::join!(silent, in_flight, busy);
    assert!(silent_after >= TIMEOUT, "closed after {silent_after:?}");
    let types = h2_frame_types(&silent_bytes);
    assert!(types.contains(&GOAWAY), "frames sent: {types:?}");
    // The silent one; the others only once idle, which may be by now.
    let (header_timeouts, _) = dataplane.stats().client_timeouts().counts();
    assert!(header_timeouts >= 1);
}

/// A backend that answers its first connection's request with a chunked
/// body it writes without end; the handle ends when the connection fails
/// (the proxy closed it).
async fn endless_upstream() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = upstream.local_addr().unwrap();
    let serving = tokio::spawn(async move {
        let (mut stream, _) = upstream.accept().await.unwrap();
        let mut head = Vec::new();
        let mut chunk = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed before its request");
            head.extend_from_slice(&chunk[..n]);
        }
        let mut body = b"4000\r\n".to_vec();
        body.extend_from_slice(&[b'x'; 0x4000]);
        body.extend_from_slice(b"\r\n");
        let mut written = stream
            .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
            .await;
        while written.is_ok() {
            written = stream.write_all(&body).await;
        }
    });
    (backend, serving)
}

#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_after_the_send_timeout_and_a_slow_one_is_not() {
    const TIMEOUT: Duration = Duration::from_secs(1);
    let (backend, upstream) = endless_upstream().await;
    let bind = free_port();
    let _dataplane = serve_with(
        Options {
            client_send_timeout: TIMEOUT,
            ..Options::default()
        },
        single_route(bind, "r", backend),
    )
    .await;
    // A small receive buffer, so that its window closes soon after it
    // stops reading.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(64 * 1024).unwrap();
    let mut client = socket.connect(([127, 0, 0, 1], bind).into()).await.unwrap();
    client
        .write_all(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n")
        .await
        .unwrap();

    // Takes what has come every quarter timeout, for three timeouts: slow,
    // but never stopped for a whole timeout.
    let mut chunk = vec![0u8; 64 * 1024];
    for round in 0..12 {
        tokio::time::sleep(TIMEOUT / 4).await;
        let mut drained = 0;
        loop {
            match client.try_read(&mut chunk) {
                Ok(0) => panic!("closed in round {round}"),
                Ok(n) => drained += n,
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(error) => panic!("failed in round {round}: {error}"),
            }
        }
        assert!(drained > 0, "nothing came in round {round}");
    }
    assert!(!upstream.is_finished(), "a client reading slowly was cut");

    // Stops reading: its window closes, and stays closed.
    let stopped = std::time::Instant::now();
    tokio::time::timeout(TIMEOUT * 8, upstream)
        .await
        .expect("the upstream connection stayed open")
        .unwrap();
    let after = stopped.elapsed();
    assert!(after >= TIMEOUT, "dropped after {after:?}");
    let client_port = client.local_addr().unwrap().port();
    assert!(
        !established_sockets()
            .iter()
            .any(|(local, remote, _)| (*local, *remote) == (bind, client_port)),
        "the data plane's side of the client connection is still open"
    );
}

/// A backend (HTTP/1.1 and h2c) that reads each request's whole body
/// before it answers, with `Ok(` the body's length `)`.
async fn body_reading_upstream() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    |request: Request<hyper::body::Incoming>| async move {
                        let length = request
                            .into_body()
                            .collect()
                            .await
                            .map(|body| body.to_bytes().len());
                        let answer = Bytes::from(format!("{:?}", length.map_err(|_| ())));
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(
                            http_body_util::Full::new(answer),
                        ))
                    },
                );
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    address
}

type BodyFrame = Result<hyper::body::Frame<Bytes>, std::convert::Infallible>;
type StreamedBody = http_body_util::StreamBody<futures::channel::mpsc::Receiver<BodyFrame>>;

/// An HTTP/2 request whose body is sent through the returned channel.
fn h2_streamed(
    grpc: bool,
) -> (
    futures::channel::mpsc::Sender<BodyFrame>,
    Request<StreamedBody>,
) {
    let (frames, body) = futures::channel::mpsc::channel(4);
    let mut request = Request::post("http://a/").header("content-length", "6");
    if grpc {
        request = request.header("content-type", "application/grpc");
    }
    let request = request.body(http_body_util::StreamBody::new(body)).unwrap();
    (frames, request)
}

#[tokio::test]
async fn a_request_body_that_stops_is_answered_408_on_every_path_and_slow_ones_are_served() {
    use futures::SinkExt;
    const TIMEOUT: Duration = Duration::from_millis(500);
    let bind = free_port();
    let dataplane = serve_with(
        Options {
            client_body_timeout: TIMEOUT,
            ..Options::default()
        },
        single_route(bind, "r", body_reading_upstream().await),
    )
    .await;
    let connect = || TcpStream::connect(("127.0.0.1", bind));
    let data = |bytes: &'static [u8]| Ok(hyper::body::Frame::data(Bytes::from_static(bytes)));

    // Stop part way: a Content-Length body (the passthrough waits for it)
    // and a chunked one (hyper's path streams it).
    let stops = |start: &'static [u8]| async move {
        let mut stream = connect().await.unwrap();
        stream.write_all(start).await.unwrap();
        let (answer, after) = read_until_closed(&mut stream).await;
        (String::from_utf8_lossy(&answer).into_owned(), after)
    };
    let length = stops(b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 10\r\n\r\nabc");
    let chunked =
        stops(b"POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n");
    // Send a byte every quarter timeout, for three timeouts.
    let trickles = |head: &'static [u8], byte: &'static [u8], end: &'static [u8]| async move {
        let mut stream = connect().await.unwrap();
        stream.write_all(head).await.unwrap();
        for _ in 0..12 {
            tokio::time::sleep(TIMEOUT / 4).await;
            stream.write_all(byte).await.unwrap();
        }
        stream.write_all(end).await.unwrap();
        let (answer, _) = read_until_closed(&mut stream).await;
        String::from_utf8_lossy(&answer).into_owned()
    };
    let slow_length = trickles(
        b"POST / HTTP/1.1\r\nhost: a\r\nconnection: close\r\ncontent-length: 12\r\n\r\n",
        b"x",
        b"",
    );
    let slow_chunked = trickles(
        b"POST / HTTP/1.1\r\nhost: a\r\nconnection: close\r\ntransfer-encoding: chunked\r\n\r\n",
        b"1\r\nx\r\n",
        b"0\r\n\r\n",
    );
    // HTTP/2: a stream whose body stops answers 408; a gRPC one pausing for
    // two timeouts is not timed.
    let h2 = async {
        let (sender, _) = h2c_client(bind).await;
        let stopped = async {
            let (mut frames, request) = h2_streamed(false);
            frames.send(data(b"abc")).await.unwrap();
            let response = sender.clone().send_request(request).await.unwrap();
            let status = response.status();
            drop(frames);
            status
        };
        let grpc = async {
            let (mut frames, request) = h2_streamed(true);
            let pauses = async {
                frames.send(data(b"abc")).await.unwrap();
                tokio::time::sleep(TIMEOUT * 2).await;
                frames.send(data(b"def")).await.unwrap();
                drop(frames);
            };
            let (response, ()) = tokio::join!(sender.clone().send_request(request), pauses);
            let response = response.unwrap();
            let status = response.status();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (status, body)
        };
        tokio::join!(stopped, grpc)
    };

    let ((length, length_after), (chunked, chunked_after), slow_length, slow_chunked, h2) =
        tokio::join!(length, chunked, slow_length, slow_chunked, h2);
    for (answer, after) in [(&length, length_after), (&chunked, chunked_after)] {
        assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
        assert!(answer.contains("connection: close\r\n"), "{answer}");
        assert!(answer.ends_with("client_body_timeout"), "{answer}");
        assert!(after >= TIMEOUT, "answered after {after:?}");
    }
    for answer in [&slow_length, &slow_chunked] {
        assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
        assert!(answer.ends_with("Ok(12)"), "{answer}");
    }
    let (stopped, (grpc_status, grpc_body)) = h2;
    assert_eq!(stopped, 408);
    assert_eq!(grpc_status, 200);
    assert_eq!(&grpc_body[..], b"Ok(6)");
    assert_eq!(
        dataplane.stats().client_timeouts().counts(),
        (0, 3),
        "the Content-Length, chunked and HTTP/2 bodies"
    );
}

#[tokio::test]
async fn a_stalled_body_is_408_to_h2c_upstreams_and_on_retried_and_timed_routes() {
    const TIMEOUT: Duration = Duration::from_millis(500);
    let backend = body_reading_upstream().await;
    let bind = free_port();
    // "/timed" has a request timeout, "/h2c" goes to the backend over h2c,
    // whose client resets the stream with an error of its own when the
    // body fails, and "/" retries 502s (its bodies are held for that).
    let mut snapshot = by_prefix(
        bind,
        &[("/timed", backend), ("/h2c", backend), ("/", backend)],
    );
    snapshot.rules[0].request_timeout_ms = 10_000;
    snapshot.clusters[1].protocol = pb::UpstreamProtocol::H2c as i32;
    snapshot.rules[2].retry = Some(pb::Retry {
        codes: vec![502],
        attempts: 2,
        backoff_ms: 1,
    });
    let dataplane = serve_with(
        Options {
            client_body_timeout: TIMEOUT,
            ..Options::default()
        },
        snapshot,
    )
    .await;
    let post =
        |path: &str, rest: &str| format!("POST {path} HTTP/1.1\r\nhost: a\r\n{rest}").into_bytes();
    let chunked = "transfer-encoding: chunked\r\n\r\n3\r\nabc\r\n";
    // Served whole first, so that a 408 below is the stall's doing.
    let mut whole = TcpStream::connect(("127.0.0.1", bind)).await.unwrap();
    whole
        .write_all(&post(
            "/h2c",
            "connection: close\r\ncontent-length: 3\r\n\r\nabc",
        ))
        .await
        .unwrap();
    let (answer, _) = read_until_closed(&mut whole).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.ends_with("Ok(3)"), "{answer}");

    let stalls = [
        post("/", chunked),
        post("/timed", chunked),
        post("/h2c", chunked),
    ];
    let answers = futures::future::join_all(stalls.iter().map(|request| async move {
        let mut stream = TcpStream::connect(("127.0.0.1", bind)).await.unwrap();
        stream.write_all(request).await.unwrap();
        let (answer, after) = read_until_closed(&mut stream).await;
        (String::from_utf8_lossy(&answer).into_owned(), after)
    }))
    .await;
    for (answer, after) in &answers {
        assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
        assert!(*after >= TIMEOUT, "answered after {after:?}");
    }
    assert_eq!(dataplane.stats().client_timeouts().counts(), (0, 3));
}

/// An HTTP/2 frame (RFC 9113 §4.1).
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let length = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut frame = vec![length[1], length[2], length[3], kind, flags];
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

#[tokio::test]
async fn an_h2_stream_sent_as_the_idle_goaway_goes_out_is_served() {
    const TIMEOUT: Duration = Duration::from_secs(1);
    // Frame types and flags (RFC 9113 §6).
    const DATA: u8 = 0;
    const HEADERS: u8 = 1;
    const SETTINGS: u8 = 4;
    const PING: u8 = 6;
    const GOAWAY: u8 = 7;
    const ACK: u8 = 1;
    const END_STREAM: u8 = 1;
    const END_HEADERS: u8 = 4;
    let bind = free_port();
    // Longer than the grace the data plane gives a GOAWAY.
    let backend = slow_upstream(TIMEOUT).await;
    let _dataplane = serve_with(
        Options {
            client_header_timeout: TIMEOUT,
            ..Options::default()
        },
        single_route(bind, "slow", backend),
    )
    .await;
    // A client that answers SETTINGS and PINGs, idles until the GOAWAY,
    // and sends a request the moment it arrives, before the GOAWAY's PING
    // is answered: the server has taken it (last stream id 1).
    let mut stream = TcpStream::connect(("127.0.0.1", bind)).await.unwrap();
    stream.write_all(H2C_OPENING).await.unwrap();
    let (mut read, mut chunk) = (Vec::new(), [0u8; 4096]);
    let (mut requested, mut answered) = (false, false);
    while !answered {
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed before the stream was answered");
        read.extend_from_slice(&chunk[..n]);
        while read.len() >= 9 {
            let length = u32::from_be_bytes([0, read[0], read[1], read[2]]) as usize;
            if read.len() < 9 + length {
                break;
            }
            let (kind, flags) = (read[3], read[4]);
            let id = u32::from_be_bytes([read[5], read[6], read[7], read[8]]) & 0x7fff_ffff;
            let payload = read[9..9 + length].to_vec();
            read.drain(..9 + length);
            match kind {
                SETTINGS if flags & ACK == 0 => {
                    stream
                        .write_all(&h2_frame(SETTINGS, ACK, 0, &[]))
                        .await
                        .unwrap();
                }
                PING if flags & ACK == 0 => {
                    stream
                        .write_all(&h2_frame(PING, ACK, 0, &payload))
                        .await
                        .unwrap();
                }
                GOAWAY if !requested => {
                    requested = true;
                    // :method GET, :scheme http, :path /slow, :authority a
                    // (HPACK static indexes and literals).
                    let mut block = vec![0x82, 0x86, 0x04, 5];
                    block.extend_from_slice(b"/slow");
                    block.extend_from_slice(&[0x01, 1, b'a']);
                    let flags = END_STREAM | END_HEADERS;
                    stream
                        .write_all(&h2_frame(HEADERS, flags, 1, &block))
                        .await
                        .unwrap();
                }
                DATA if id == 1 && flags & END_STREAM != 0 => answered = true,
                _ => {}
            }
        }
    }
    assert!(requested);
}

/// Accepts connections and never reads from them.
async fn sink_upstream() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    address
}

#[tokio::test]
async fn an_h2_body_held_up_by_another_streams_upload_is_not_answered_408() {
    use futures::SinkExt;
    const TIMEOUT: Duration = Duration::from_millis(500);
    let bind = free_port();
    // "/stuck" goes to an upstream that never reads.
    let routes = [
        ("/stuck", sink_upstream().await),
        ("/", body_reading_upstream().await),
    ];
    let _dataplane = serve_with(
        Options {
            client_body_timeout: TIMEOUT,
            ..Options::default()
        },
        by_prefix(bind, &routes),
    )
    .await;
    let (sender, _) = h2c_client(bind).await;
    // An upload of 64 MiB that its upstream does not take: it fills its
    // stream's window, and no more.
    let (mut frames, body) = futures::channel::mpsc::channel::<BodyFrame>(4);
    tokio::spawn(async move {
        for _ in 0..64 {
            let megabyte = hyper::body::Frame::data(Bytes::from(vec![b'x'; 1 << 20]));
            if frames.send(Ok(megabyte)).await.is_err() {
                return;
            }
        }
        std::future::pending::<()>().await;
    });
    let upload = Request::post("http://a/stuck")
        .body(http_body_util::StreamBody::new(body))
        .unwrap();
    let mut uploading = sender.clone();
    tokio::spawn(async move { uploading.send_request(upload).await });
    tokio::time::sleep(TIMEOUT * 4).await;
    // A second stream whose client has its whole body ready.
    let (mut frames, request) = h2_streamed(false);
    frames
        .send(Ok(hyper::body::Frame::data(Bytes::from_static(b"abcdef"))))
        .await
        .unwrap();
    let response = sender.clone().send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"Ok(6)");
}

#[tokio::test]
async fn a_closing_port_is_not_held_by_an_h2_client_that_ignores_its_goaway() {
    const TIMEOUT: Duration = Duration::from_secs(1);
    let [bind, other] = free_ports::<2>();
    let backend = echo("e").await;
    let dataplane = serve_with(
        Options {
            client_header_timeout: TIMEOUT,
            ..Options::default()
        },
        single_route(bind, "r", backend),
    )
    .await;
    // Sends the preface, then never answers a PING.
    let mut stream = TcpStream::connect(("127.0.0.1", bind)).await.unwrap();
    stream.write_all(H2C_OPENING).await.unwrap();
    // Served as HTTP/2 once the server's SETTINGS come.
    let mut settings = [0u8; 9];
    stream.read_exact(&mut settings).await.unwrap();
    assert_eq!(settings[3], 4, "not a SETTINGS frame");
    let length = u32::from_be_bytes([0, settings[0], settings[1], settings[2]]) as usize;
    stream.read_exact(&mut vec![0u8; length]).await.unwrap();
    // The port goes away while the connection idles on it.
    dataplane
        .apply(single_route(other, "r", backend))
        .await
        .expect("snapshot applies");
    let (received, after) = read_until_closed(&mut stream).await;
    let types = h2_frame_types(&received);
    assert!(types.contains(&7), "no GOAWAY in {types:?}");
    // The reaper's timeout (at most one and a half), then two looks half a
    // timeout apart that find it idle; the rest is slack for a loaded machine.
    assert!(after <= TIMEOUT * 4, "closed after {after:?}");
}

/// The established IPv4 sockets of this host, from /proc/net/tcp: local
/// port, remote port, and the kernel's active timer on each (`tr`: 0 none,
/// 1 retransmit, 2 keep-alive).
fn established_sockets() -> Vec<(u16, u16, u8)> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let port = |address: &str| u16::from_str_radix(address.rsplit(':').next()?, 16).ok();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // State 01: ESTABLISHED (not the TIME_WAIT leftovers of other
            // tests, which may name the same ports).
            (fields[3] == "01").then_some(())?;
            let timer = u8::from_str_radix(fields[5].split(':').next()?, 16).ok()?;
            Some((port(fields[1])?, port(fields[2])?, timer))
        })
        .collect()
}

#[tokio::test]
async fn client_and_upstream_connections_carry_kernel_keepalive_probes() {
    let bind = free_port();
    let backend = echo("e").await;
    let _dp = serve(single_route(bind, "r", backend)).await;
    let mut client = TcpStream::connect(("127.0.0.1", bind)).await.unwrap();
    client
        .write_all(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 12];
    client.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    let client_port = client.local_addr().unwrap().port();
    // The data plane's side of the client connection, and its pooled
    // connection to the backend: the only connection to the backend's port.
    let mut seen = (None, None);
    for _ in 0..200 {
        let sockets = established_sockets();
        let timer = |local: Option<u16>, remote: u16| {
            sockets
                .iter()
                .find(|(l, r, _)| local.is_none_or(|local| local == *l) && *r == remote)
                .map(|(_, _, timer)| *timer)
        };
        seen = (timer(Some(bind), client_port), timer(None, backend.port()));
        if seen == (Some(2), Some(2)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timers (client side, upstream side): {seen:?}, want keep-alive (2) on both");
}
