//! gatehouse.dev `Filter` objects end to end: staticResponse, ipAccess,
//! requestLimits and rateLimit through a standalone controller and its data
//! plane; how filters of several levels and phases combine; and what the
//! statuses say about filters that are overridden, invalid or attached to
//! nothing.
//!
//! Client addresses matter here, so some requests leave from a chosen
//! loopback address (the socket is bound before it connects) and are written
//! by hand, which also lets a test send headers byte for byte and a chunked
//! body at its own pace.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use gatehouse_e2e::manifests::extension_refs;
use gatehouse_e2e::{
    Echo, HttpClient, Reply, Request, Standalone, echoed_header, eventually, manifests,
};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket};

// ---------------------------------------------------------------------------
// Manifests

/// A Filter `name` in `default` of `kind`; `spec` holds the rest of the
/// spec, each line indented by two spaces.
fn filter(name: &str, kind: &str, spec: &str) -> String {
    format!(
        "---\napiVersion: gatehouse.dev/v1alpha1\nkind: Filter\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  type: {kind}\n{spec}"
    )
}

/// One rule matching everything, through `filters` to `backend` (a Service
/// on port 80), or to no backend at all.
fn rule(filters: &[&str], backend: Option<&str>) -> String {
    let mut out = String::from("  - matches: [{path: {type: PathPrefix, value: /}}]\n");
    if !filters.is_empty() {
        out.push_str(&extension_refs(filters));
    }
    if let Some(service) = backend {
        out.push_str(&format!(
            "    backendRefs: [{{name: {service}, port: 80}}]\n"
        ));
    }
    out
}

fn route(name: &str, host: &str, rules: &str) -> String {
    manifests::route_with_rules(name, host, rules)
}

async fn start(documents: &[String]) -> Standalone {
    Standalone::start(&[("all.yaml", documents.join("---\n"))]).await
}

// ---------------------------------------------------------------------------
// Clients

/// A response read off the wire by hand.
#[derive(Debug)]
struct Raw {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A request head: request line, `host`, then `headers` exactly as given.
fn head(method: &str, path: &str, host: &str, headers: &[(String, String)]) -> Vec<u8> {
    let mut out = format!("{method} {path} HTTP/1.1\r\nhost: {host}\r\n");
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    out.into_bytes()
}

/// One chunk of a chunked body, framed.
fn chunk(data: &[u8]) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

/// Connects to `to` from `from` (port chosen by the system), writes each of
/// `writes` with `gap` between them, and reads one response. A write the
/// gateway refuses (it answered and closed early) ends the writing; the
/// answer is read all the same.
async fn exchange(
    from: IpAddr,
    to: SocketAddr,
    writes: &[Vec<u8>],
    gap: Duration,
) -> anyhow::Result<Raw> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    let mut stream = socket.connect(to).await?;
    stream.set_nodelay(true)?;
    for (i, bytes) in writes.iter().enumerate() {
        if i > 0 && !gap.is_zero() {
            tokio::time::sleep(gap).await;
        }
        if stream.write_all(bytes).await.is_err() {
            break;
        }
    }
    tokio::time::timeout(Duration::from_secs(10), read_response(&mut stream))
        .await
        .context("no answer in 10 s")?
}

async fn read_response(stream: &mut tokio::net::TcpStream) -> anyhow::Result<Raw> {
    let mut buf = Vec::new();
    let mut scratch = [0u8; 8192];
    let end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        let n = stream.read(&mut scratch).await?;
        if n == 0 {
            bail!(
                "connection closed before a response head: {:?}",
                String::from_utf8_lossy(&buf)
            );
        }
        buf.extend_from_slice(&scratch[..n]);
    };
    let head_text = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head_text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut rest = buf[end + 4..].to_vec();
    let find = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v);
    let body = if let Some(length) = find("content-length") {
        let length: usize = length.parse()?;
        while rest.len() < length {
            let n = stream.read(&mut scratch).await?;
            if n == 0 {
                bail!("body cut short at {} of {length} bytes", rest.len());
            }
            rest.extend_from_slice(&scratch[..n]);
        }
        rest.truncate(length);
        rest
    } else if find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        let mut body = Vec::new();
        loop {
            let Some(line_end) = rest.windows(2).position(|w| w == b"\r\n") else {
                let n = stream.read(&mut scratch).await?;
                if n == 0 {
                    bail!("chunked body cut short");
                }
                rest.extend_from_slice(&scratch[..n]);
                continue;
            };
            let size_text = String::from_utf8_lossy(&rest[..line_end]).into_owned();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)?;
            while rest.len() < line_end + 2 + size + 2 {
                let n = stream.read(&mut scratch).await?;
                if n == 0 {
                    bail!("chunked body cut short");
                }
                rest.extend_from_slice(&scratch[..n]);
            }
            if size == 0 {
                break body;
            }
            body.extend_from_slice(&rest[line_end + 2..line_end + 2 + size]);
            rest.drain(..line_end + 2 + size + 2);
        }
    } else {
        rest
    };
    Ok(Raw {
        status,
        headers,
        body,
    })
}

/// A GET for `host` from the address `from`, with `headers`.
async fn get_from(
    gw: &Standalone,
    from: IpAddr,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Raw {
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect();
    exchange(
        from,
        gw.socket(80),
        &[head("GET", path, host, &headers)],
        Duration::ZERO,
    )
    .await
    .unwrap_or_else(|e| panic!("GET {host}{path} from {from}: {e:#}"))
}

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

async fn get(client: &HttpClient, gw: &Standalone, host: &str, path: &str) -> Reply {
    client
        .get(&gw.url(80, path), Some(host))
        .await
        .unwrap_or_else(|e| panic!("GET {host}{path}: {e:#}"))
}

fn number(reply: &Reply, name: &str) -> u64 {
    reply
        .header(name)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no numeric {name} in {:?}", reply.headers))
}

// ---------------------------------------------------------------------------
// A backend that answers with the body it received

/// Answers every request 200 with the body it received, and its length and
/// SHA-256 in `x-body-len` and `x-body-sha256`; counts the requests that
/// reached it.
struct BodyBackend {
    port: u16,
    hits: Arc<AtomicUsize>,
}

impl BodyBackend {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let counter = counter.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |request: http::Request<hyper::body::Incoming>| {
                            counter.fetch_add(1, Ordering::SeqCst);
                            async move {
                                let body = request.into_body().collect().await?.to_bytes();
                                let digest = hex::encode(Sha256::digest(&body));
                                let response = http::Response::builder()
                                    .header("x-body-len", body.len())
                                    .header("x-body-sha256", digest)
                                    .body(Full::new(body))
                                    .expect("a valid response");
                                Ok::<_, hyper::Error>(response)
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        BodyBackend { port, hits }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// A body of `len` bytes that is not all one byte.
fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

// ---------------------------------------------------------------------------
// Statuses

fn condition<'a>(conditions: &'a Value, kind: &str) -> &'a Value {
    conditions
        .as_array()
        .and_then(|all| all.iter().find(|c| c["type"] == kind))
        .unwrap_or_else(|| panic!("no {kind} condition in {conditions}"))
}

/// Asserts a condition's status and reason; returns its message.
fn assert_condition<'a>(conditions: &'a Value, kind: &str, status: &str, reason: &str) -> &'a str {
    let found = condition(conditions, kind);
    assert_eq!(
        (found["status"].as_str(), found["reason"].as_str()),
        (Some(status), Some(reason)),
        "{kind}: {found}"
    );
    found["message"].as_str().unwrap_or_default()
}

async fn filter_status(gw: &Standalone, name: &str) -> Value {
    let found = gw
        .status_of("Filter", &format!("default/{name}"))
        .await
        .unwrap_or_else(|| panic!("no status for Filter {name}"));
    found["status"].clone()
}

/// The status entry for the ancestor `kind`/`name` of a Filter's status.
fn ancestor<'a>(status: &'a Value, kind: &str, name: &str) -> &'a Value {
    status["ancestors"]
        .as_array()
        .and_then(|all| {
            all.iter()
                .find(|a| a["ancestorRef"]["kind"] == kind && a["ancestorRef"]["name"] == name)
        })
        .unwrap_or_else(|| panic!("no ancestor {kind} {name} in {status}"))
}

// ---------------------------------------------------------------------------
// staticResponse

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_response_answers_with_its_status_headers_and_body_without_a_backend() {
    let echo = Echo::start_with("never", "127.0.0.1:0".parse().unwrap(), &["--record"]);
    let documents = [
        manifests::gateway(),
        manifests::service("default", "svc", &[echo.port()]),
        filter(
            "teapot",
            "StaticResponse",
            "  staticResponse:\n    statusCode: 418\n    headers:\n    - {name: x-a, value: b}\n    - {name: Content-Type, value: application/json}\n    body: '{\"tea\": true}'\n",
        ),
        filter(
            "plain",
            "StaticResponse",
            "  staticResponse: {body: hello}\n",
        ),
        // A backend is named: the static answer must not reach it.
        route("tea", "tea.test", &rule(&["teapot"], Some("svc"))),
        // No backend at all.
        route("hello", "hello.test", &rule(&["plain"], None)),
    ];
    let gw = start(&documents).await;
    let client = HttpClient::new();

    let reply = get(&client, &gw, "tea.test", "/any/path?x=1").await;
    assert_eq!(reply.status, 418, "{}", reply.text());
    assert_eq!(reply.header("x-a"), Some("b"));
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.text(), r#"{"tea": true}"#);
    assert_eq!(reply.header("content-length"), Some("13"));
    assert!(reply.backend().is_none());

    // Defaults: 200 and text/plain.
    let reply = get(&client, &gw, "hello.test", "/").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.text(), "hello");
    assert_eq!(reply.header("content-type"), Some("text/plain"));

    // A POST with a body gets the same answer.
    let reply = client
        .send(Request {
            body: b"ignored".to_vec(),
            ..Request::method("POST", &gw.url(80, "/")).host(Some("tea.test"))
        })
        .await
        .unwrap();
    assert_eq!(reply.status, 418);

    assert!(
        echo.recorded().await.is_empty(),
        "the backend was contacted"
    );
}

// ---------------------------------------------------------------------------
// ipAccess

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_access_allows_and_denies_by_client_address_and_forwarded_for() {
    let echo = Echo::start("ok");
    // Clients: the Gateway's own ipAccess denies one address; routes bring
    // their own lists, which replace the Gateway's for their rules.
    let gateway_denied = v4(127, 201, 0, 9);
    let gateway_allowed = v4(127, 201, 0, 10);
    let documents = [
        manifests::gateway(),
        manifests::service("default", "svc", &[echo.port()]),
        filter(
            "gw-deny",
            "IPAccess",
            "  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: gw}]\n  ipAccess: {deny: [127.201.0.9/32]}\n",
        ),
        filter(
            "allow-list",
            "IPAccess",
            "  ipAccess: {allow: [127.202.0.0/16, 127.201.0.9], deny: [127.202.0.66/32]}\n",
        ),
        filter(
            "xff-one",
            "IPAccess",
            "  ipAccess: {deny: [198.51.100.7/32, 127.204.0.9/32], clientAddress: {trustedHops: 1}}\n",
        ),
        filter(
            "xff-zero",
            "IPAccess",
            "  ipAccess: {deny: [198.51.100.7/32, 127.204.0.9/32], clientAddress: {trustedHops: 0}}\n",
        ),
        route("open", "open.test", &rule(&[], Some("svc"))),
        route("allow", "allow.test", &rule(&["allow-list"], Some("svc"))),
        route("xff1", "xff1.test", &rule(&["xff-one"], Some("svc"))),
        route("xff0", "xff0.test", &rule(&["xff-zero"], Some("svc"))),
    ];
    let gw = start(&documents).await;

    // Deny list on the Gateway.
    let ok = get_from(&gw, gateway_allowed, "open.test", "/", &[]).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(ok.header("x-echo-name"), Some("ok"));
    let refused = get_from(&gw, gateway_denied, "open.test", "/", &[]).await;
    assert_eq!(refused.status, 403, "{}", refused.text());
    assert_eq!(refused.text(), "forbidden");
    assert!(refused.header("x-echo-name").is_none());

    // A request that matches no route still meets the Gateway's ipAccess:
    // the denied client learns nothing about routes.
    let unrouted = get_from(&gw, gateway_denied, "nothing.test", "/", &[]).await;
    assert_eq!(unrouted.status, 403, "{}", unrouted.text());
    let unrouted = get_from(&gw, gateway_allowed, "nothing.test", "/", &[]).await;
    assert_eq!(unrouted.status, 404, "{}", unrouted.text());

    // Allow list: inside it passes, outside it is refused, and the deny
    // list wins inside it. The route's own ipAccess replaces the Gateway's,
    // so the address the Gateway denies passes here: it is allowed.
    for (from, status) in [
        (v4(127, 202, 3, 4), 200),
        (v4(127, 202, 0, 65), 200),
        (v4(127, 202, 0, 66), 403),
        (v4(127, 203, 0, 1), 403),
        (gateway_allowed, 403),
        (gateway_denied, 200),
    ] {
        let reply = get_from(&gw, from, "allow.test", "/", &[]).await;
        assert_eq!(
            reply.status,
            status,
            "allow.test from {from}: {}",
            reply.text()
        );
    }

    // One trusted hop: the last X-Forwarded-For entry is the client; the
    // peer is the trusted proxy. Too few entries fall back to the peer.
    let peer = v4(127, 204, 0, 1);
    let denied_peer = v4(127, 204, 0, 9);
    let cases: [(IpAddr, &[&str], u16); 7] = [
        (peer, &[], 200),
        (peer, &["198.51.100.7"], 403),
        (peer, &["203.0.113.1, 198.51.100.7"], 403),
        (peer, &["198.51.100.7, 203.0.113.1"], 200),
        (peer, &["198.51.100.7", "203.0.113.1"], 200),
        (denied_peer, &["203.0.113.1"], 200),
        (denied_peer, &[], 403),
    ];
    for (from, xff, status) in cases {
        let headers: Vec<(&str, &str)> = xff.iter().map(|v| ("x-forwarded-for", *v)).collect();
        let reply = get_from(&gw, from, "xff1.test", "/", &headers).await;
        assert_eq!(
            reply.status,
            status,
            "trustedHops 1 from {from} with X-Forwarded-For {xff:?}: {}",
            reply.text()
        );
    }
    // No trusted hops: X-Forwarded-For is the client's word, and ignored.
    let cases: [(IpAddr, &[&str], u16); 3] = [
        (peer, &["198.51.100.7"], 200),
        (denied_peer, &["203.0.113.1"], 403),
        (denied_peer, &[], 403),
    ];
    for (from, xff, status) in cases {
        let headers: Vec<(&str, &str)> = xff.iter().map(|v| ("x-forwarded-for", *v)).collect();
        let reply = get_from(&gw, from, "xff0.test", "/", &headers).await;
        assert_eq!(
            reply.status,
            status,
            "trustedHops 0 from {from} with X-Forwarded-For {xff:?}: {}",
            reply.text()
        );
    }
}

// ---------------------------------------------------------------------------
// requestLimits

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_limits_refuse_large_headers_and_bodies_and_pass_the_rest_intact() {
    let backend = BodyBackend::start().await;
    let documents = [
        manifests::gateway(),
        manifests::service("default", "body", &[backend.port]),
        filter(
            "limits",
            "RequestLimits",
            "  requestLimits: {maxHeaderBytes: 2048, maxHeaderCount: 20, maxBodyBytes: 1024}\n",
        ),
        // Looser limits on the Gateway: the route's own replace them for
        // its rule, and they meet requests that match no route.
        filter(
            "gateway-limits",
            "RequestLimits",
            "  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: gw}]\n  requestLimits: {maxHeaderCount: 30}\n",
        ),
        route("limits", "limits.test", &rule(&["limits"], Some("body"))),
    ];
    let gw = start(&documents).await;
    let from = v4(127, 0, 0, 1);
    let to = gw.socket(80);
    let send = |writes: Vec<Vec<u8>>, gap: Duration| async move {
        exchange(from, to, &writes, gap).await.expect("an answer")
    };
    let named = |count: usize| -> Vec<(String, String)> {
        (0..count)
            .map(|i| (format!("x-h{i:02}"), "v".to_owned()))
            .collect()
    };

    // Header count: host plus 19 is the limit of 20; one more is refused.
    let reply = send(
        vec![head("GET", "/", "limits.test", &named(19))],
        Duration::ZERO,
    )
    .await;
    assert_eq!(reply.status, 200, "20 headers: {}", reply.text());
    let before = backend.hits();
    let reply = send(
        vec![head("GET", "/", "limits.test", &named(20))],
        Duration::ZERO,
    )
    .await;
    assert_eq!(reply.status, 431, "21 headers: {}", reply.text());
    assert_eq!(reply.text(), "request headers too large");
    let reply = send(
        vec![head("GET", "/", "limits.test", &named(40))],
        Duration::ZERO,
    )
    .await;
    assert_eq!(reply.status, 431, "41 headers: {}", reply.text());
    assert_eq!(
        backend.hits(),
        before,
        "refused requests reached the backend"
    );
    // No route: the Gateway's limit of 30 applies.
    let reply = send(
        vec![head("GET", "/", "nothing.test", &named(29))],
        Duration::ZERO,
    )
    .await;
    assert_eq!(reply.status, 404, "30 headers, no route: {}", reply.text());
    let reply = send(
        vec![head("GET", "/", "nothing.test", &named(30))],
        Duration::ZERO,
    )
    .await;
    assert_eq!(reply.status, 431, "31 headers, no route: {}", reply.text());

    // Header bytes: name + value + 4 per header. "host: limits.test" is
    // 4 + 11 + 4 = 19, "x-pad: N bytes" is 5 + N + 4: 2048 at N = 2020.
    let pad = |n: usize| vec![("x-pad".to_owned(), "p".repeat(n))];
    let reply = send(
        vec![head("GET", "/", "limits.test", &pad(2020))],
        Duration::ZERO,
    )
    .await;
    assert_eq!(reply.status, 200, "2048 header bytes: {}", reply.text());
    let before = backend.hits();
    let reply = send(
        vec![head("GET", "/", "limits.test", &pad(2021))],
        Duration::ZERO,
    )
    .await;
    assert_eq!(reply.status, 431, "2049 header bytes: {}", reply.text());
    let reply = send(
        vec![head("GET", "/", "limits.test", &pad(6000))],
        Duration::ZERO,
    )
    .await;
    assert_eq!(reply.status, 431, "6028 header bytes: {}", reply.text());
    assert_eq!(
        backend.hits(),
        before,
        "refused requests reached the backend"
    );

    // Content-Length: at the limit the body arrives intact; past it the
    // answer is 413 at once and the backend never hears of the request.
    let client = HttpClient::new();
    for len in [0, 1, 1000, 1024] {
        let body = payload(len);
        let reply = client
            .send(Request {
                body: body.clone(),
                ..Request::method("POST", &gw.url(80, "/upload")).host(Some("limits.test"))
            })
            .await
            .unwrap();
        assert_eq!(reply.status, 200, "{len} bytes: {}", reply.text());
        assert_eq!(reply.body.as_ref(), body.as_slice(), "{len} bytes");
        assert_eq!(number(&reply, "x-body-len"), len as u64);
    }
    let before = backend.hits();
    for len in [1025, 5000] {
        let reply = client
            .send(Request {
                body: payload(len),
                ..Request::method("POST", &gw.url(80, "/upload")).host(Some("limits.test"))
            })
            .await
            .unwrap();
        assert_eq!(reply.status, 413, "{len} bytes: {}", reply.text());
    }
    // Only the Content-Length is sent: the gateway must answer on it alone.
    let declared = vec![(String::from("content-length"), String::from("100000"))];
    let reply = send(
        vec![head("POST", "/upload", "limits.test", &declared)],
        Duration::ZERO,
    )
    .await;
    assert_eq!(reply.status, 413, "declared 100000: {}", reply.text());
    assert_eq!(reply.text(), "request body too large");
    assert_eq!(
        backend.hits(),
        before,
        "a 413 by Content-Length reached the backend"
    );

    // Chunked up to the limit: passes intact.
    let chunked = vec![(String::from("transfer-encoding"), String::from("chunked"))];
    let body = payload(1024);
    let mut writes = vec![head("POST", "/upload", "limits.test", &chunked)];
    writes.extend(body.chunks(256).map(chunk));
    writes.push(b"0\r\n\r\n".to_vec());
    let reply = send(writes, Duration::from_millis(20)).await;
    assert_eq!(reply.status, 200, "chunked 1024: {}", reply.text());
    assert_eq!(reply.header("x-body-len"), Some("1024"));
    assert_eq!(
        reply.header("x-body-sha256"),
        Some(hex::encode(Sha256::digest(&body)).as_str())
    );
    assert_eq!(reply.body, body);

    // Chunked past the limit, and never finished: 413 while it streams.
    let started = Instant::now();
    let mut writes = vec![head("POST", "/upload", "limits.test", &chunked)];
    writes.extend(payload(1200).chunks(200).map(chunk));
    let reply = send(writes, Duration::from_millis(30)).await;
    assert_eq!(reply.status, 413, "chunked 1200: {}", reply.text());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "413 came only after {:?}",
        started.elapsed()
    );
}

/// A PROXY protocol version 1 header from `client` (port 41000).
fn proxy_v1(client: &str) -> Vec<u8> {
    format!("PROXY TCP4 {client} 192.0.2.1 41000 80\r\n").into_bytes()
}

/// A PROXY protocol version 2 header (PROXY, TCP over IPv4) from `client`
/// (port 41000), with one TLV after the addresses.
fn proxy_v2(client: Ipv4Addr) -> Vec<u8> {
    let mut out = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x10".to_vec();
    out.extend_from_slice(&client.octets());
    out.extend_from_slice(&[192, 0, 2, 1]);
    out.extend_from_slice(&41000u16.to_be_bytes());
    out.extend_from_slice(&80u16.to_be_bytes());
    out.extend_from_slice(&[0x04, 0x00, 0x01, 0x2a]);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_protocol_headers_name_the_client_where_a_gateway_expects_them() {
    let echo = Echo::start("ok");
    let annotated = |name: &str, value: &str, port: u16| {
        format!(
            "---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  name: {name}\n  namespace: default\n  annotations: {{gatehouse.dev/proxy-protocol: {value:?}}}\nspec:\n  gatewayClassName: gatehouse\n  listeners: [{{name: http, port: {port}, protocol: HTTP}}]\n"
        )
    };
    let documents = [
        manifests::gateway(),
        annotated("behind-lb", "true", 81),
        annotated("typo", "yes", 82),
        manifests::service("default", "svc", &[echo.port()]),
        filter(
            "lb-deny",
            "IPAccess",
            "  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: behind-lb}]\n  ipAccess: {deny: [203.0.113.0/24]}\n",
        ),
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: pp, namespace: default}\nspec:\n  parentRefs: [{name: behind-lb}, {name: gw}]\n  hostnames: [pp.test]\n  rules:\n  - backendRefs: [{name: svc, port: 80}]\n".to_owned(),
    ];
    let gw = start(&documents).await;
    let lb = gw.socket(81);
    let from = v4(127, 0, 0, 1);
    let get = head("GET", "/", "pp.test", &[]);
    let forwarded_for = |reply: &Raw| -> Vec<String> {
        let echo: serde_json::Value = serde_json::from_slice(&reply.body).expect("the echo's JSON");
        echoed_header(&echo, "x-forwarded-for")
    };

    // Both versions name the client: it is the address the backend is told
    // of, and the one the Gateway's ipAccess judges.
    for (header, client, status) in [
        (proxy_v1("198.51.100.9"), "198.51.100.9", 200),
        (proxy_v1("203.0.113.7"), "203.0.113.7", 403),
        (
            proxy_v2(Ipv4Addr::new(198, 51, 100, 10)),
            "198.51.100.10",
            200,
        ),
        (proxy_v2(Ipv4Addr::new(203, 0, 113, 8)), "203.0.113.8", 403),
    ] {
        let reply = exchange(from, lb, &[[header, get.clone()].concat()], Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(reply.status, status, "{client}: {}", reply.text());
        if status == 200 {
            assert_eq!(forwarded_for(&reply), [client]);
        }
    }
    // A header split across segments is waited for.
    let header = proxy_v1("198.51.100.11");
    let (first, rest) = header.split_at(20);
    let split = exchange(
        from,
        lb,
        &[first.to_vec(), [rest, &get].concat()],
        Duration::from_millis(50),
    )
    .await
    .unwrap();
    assert_eq!(split.status, 200, "{}", split.text());
    assert_eq!(forwarded_for(&split), ["198.51.100.11"]);

    // Without a valid header the connection is refused with a 400 saying
    // why, and the port keeps serving.
    let forged = [
        proxy_v1("198.51.100.12"),
        proxy_v1("203.0.113.9"),
        get.clone(),
    ]
    .concat();
    for (writes, why) in [
        (get.clone(), "no PROXY protocol header"),
        (
            [b"PROXY TCP4 nonsense\r\n".to_vec(), get.clone()].concat(),
            "malformed PROXY protocol header",
        ),
    ] {
        let refused = exchange(from, lb, &[writes], Duration::ZERO).await.unwrap();
        assert_eq!(refused.status, 400, "{}", refused.text());
        assert!(refused.text().contains(why), "{}", refused.text());
    }
    // Only the first header counts: a second one is the request's problem.
    let doubled = exchange(from, lb, &[forged], Duration::ZERO).await.unwrap();
    assert_eq!(doubled.status, 400, "{}", doubled.text());
    let again = exchange(
        from,
        lb,
        &[[proxy_v1("198.51.100.13"), get.clone()].concat()],
        Duration::ZERO,
    )
    .await
    .unwrap();
    assert_eq!(again.status, 200, "{}", again.text());

    // Where no Gateway asks for it, a header is not believed: it is not
    // HTTP, and the client address stays the socket's.
    let plain = exchange(
        from,
        gw.socket(80),
        &[[proxy_v1("198.51.100.14"), get.clone()].concat()],
        Duration::ZERO,
    )
    .await
    .unwrap();
    assert_eq!(plain.status, 400, "{}", plain.text());
    let direct = exchange(
        from,
        gw.socket(80),
        std::slice::from_ref(&get),
        Duration::ZERO,
    )
    .await
    .unwrap();
    assert_eq!(direct.status, 200);
    assert_eq!(forwarded_for(&direct), ["127.0.0.1"]);

    // A value other than "true" or "false" serves nothing, and says why.
    let typo = gw
        .status_of("Gateway", "typo")
        .await
        .expect("typo's status");
    let accepted = &typo["status"]["listeners"][0]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Accepted")
        .cloned()
        .unwrap();
    assert_eq!(accepted["status"], "False", "{accepted}");
    assert_eq!(accepted["reason"], "UnsupportedProtocol");
    assert!(
        accepted["message"]
            .as_str()
            .unwrap()
            .contains("gatehouse.dev/proxy-protocol"),
        "{accepted}"
    );
}

// ---------------------------------------------------------------------------
// rateLimit

/// One request of the accuracy measurement.
struct Sample {
    sent: Instant,
    answered: Instant,
    status: u16,
}

/// What `hammer` saw: every sample, and one admitted and one refused reply.
struct Hammered {
    samples: Vec<Sample>,
    admitted: Option<Reply>,
    refused: Option<Reply>,
}

/// `clients` tasks, each with its own keep-alive connection, send GET
/// `url` for `host` back to back for `window`. Each connection is opened
/// first with a request to `warm_url` (not limited, same backend), so that
/// no timed request pays for a connect.
async fn hammer(
    (url, warm_url): (&str, &str),
    host: &'static str,
    clients: usize,
    window: Duration,
) -> Hammered {
    let mut warmed = Vec::new();
    for _ in 0..clients {
        let client = HttpClient::new();
        let reply = client
            .send(Request::get(warm_url).host(Some(host)))
            .await
            .expect("a warm-up reply");
        assert_eq!(reply.status, 200, "warm-up");
        warmed.push(client);
    }
    let deadline = Instant::now() + window;
    let mut tasks = Vec::new();
    for client in warmed {
        let url = url.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut seen = Hammered {
                samples: Vec::new(),
                admitted: None,
                refused: None,
            };
            while Instant::now() < deadline {
                let sent = Instant::now();
                let reply = client
                    .send(Request::get(&url).host(Some(host)))
                    .await
                    .expect("a reply");
                seen.samples.push(Sample {
                    sent,
                    answered: Instant::now(),
                    status: reply.status,
                });
                match reply.status {
                    200 if seen.admitted.is_none() => seen.admitted = Some(reply),
                    429 if seen.refused.is_none() => seen.refused = Some(reply),
                    _ => {}
                }
            }
            seen
        }));
    }
    let mut all = Hammered {
        samples: Vec::new(),
        admitted: None,
        refused: None,
    };
    for task in tasks {
        let seen = task.await.unwrap();
        all.samples.extend(seen.samples);
        all.admitted = all.admitted.or(seen.admitted);
        all.refused = all.refused.or(seen.refused);
    }
    all.samples.sort_by_key(|s| s.sent);
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_admits_rate_times_time_plus_burst() {
    const RATE: f64 = 100.0;
    const BURST: f64 = 20.0;
    const CLIENTS: usize = 8;
    const WINDOW: Duration = Duration::from_secs(3);
    // A pause in the traffic longer than this lets the bucket fill up and
    // overflow (BURST / RATE is 200 ms): tokens are then rightly lost, and
    // the measurement says nothing about accuracy. It is taken again on
    // the next rule, whose bucket is untouched (the key is the rule).
    const MAX_PAUSE: Duration = Duration::from_millis(150);
    const ATTEMPTS: usize = 4;
    let echo = Echo::start("limited");
    let rules: String = (0..ATTEMPTS)
        .map(|i| {
            format!(
                "  - matches: [{{path: {{type: PathPrefix, value: /attempt-{i}}}}}]\n{}    backendRefs: [{{name: svc, port: 80}}]\n",
                extension_refs(&["hundred"])
            )
        })
        .chain(std::iter::once(
            "  - matches: [{path: {type: PathPrefix, value: /warm}}]\n    backendRefs: [{name: svc, port: 80}]\n".to_owned(),
        ))
        .collect();
    let documents = [
        manifests::gateway(),
        manifests::service("default", "svc", &[echo.port()]),
        filter(
            "hundred",
            "RateLimit",
            "  rateLimit: {requests: 100, period: 1s, burst: 20, key: {type: Route}}\n",
        ),
        route("rate", "rate.test", &rules),
    ];
    let gw = start(&documents).await;

    let mut pauses = Vec::new();
    let mut measured = None;
    for attempt in 0..ATTEMPTS {
        let url = gw.url(80, &format!("/attempt-{attempt}"));
        let warm = gw.url(80, "/warm");
        let run = hammer((&url, &warm), "rate.test", CLIENTS, WINDOW).await;
        let pause = run
            .samples
            .windows(2)
            .map(|w| w[1].sent - w[0].sent)
            .max()
            .unwrap_or_default();
        println!("rate limit: attempt {attempt}: longest pause between requests {pause:?}");
        if pause <= MAX_PAUSE {
            measured = Some(run);
            break;
        }
        pauses.push(pause);
    }
    let Hammered {
        samples,
        admitted: admitted_reply,
        refused: refused_reply,
    } = measured.unwrap_or_else(|| {
        panic!("the traffic paused for longer than {MAX_PAUSE:?} in every attempt: {pauses:?}")
    });

    let admitted = samples.iter().filter(|s| s.status == 200).count();
    let refused = samples.iter().filter(|s| s.status == 429).count();
    let other: Vec<u16> = samples
        .iter()
        .map(|s| s.status)
        .filter(|s| *s != 200 && *s != 429)
        .collect();
    assert!(other.is_empty(), "unexpected statuses: {other:?}");

    // The gateway saw the first and the last request somewhere between
    // their sending and their answer: the window is measured between the
    // midpoints, and bracketed by the narrowest and widest it can be.
    let (first, last) = (&samples[0], &samples[samples.len() - 1]);
    let midpoint = |s: &Sample| s.sent + (s.answered - s.sent) / 2;
    let window = (midpoint(last) - midpoint(first)).as_secs_f64();
    let narrowest = (last.sent - first.answered).as_secs_f64();
    let widest = (last.answered - first.sent).as_secs_f64();
    let expected = RATE * window + BURST;
    // 1%, plus what the window's measurement cannot know: when, within the
    // round trips of the first and last requests, the gateway saw them.
    let uncertainty =
        RATE * ((first.answered - first.sent) + (last.answered - last.sent)).as_secs_f64() / 2.0;
    let tolerance = expected * 0.01 + uncertainty;
    // A full bucket of BURST, then one token per 1/RATE s after the first.
    let lowest = (RATE * narrowest).floor() + BURST - 1.0;
    let highest = (RATE * widest).floor() + BURST + 1.0;
    let error = admitted as f64 - expected;
    println!(
        "rate limit: {admitted} admitted, {refused} refused of {} requests from {CLIENTS} clients; \
         window {window:.4} s (between {narrowest:.4} and {widest:.4} s); \
         expected {RATE} x {window:.4} + {BURST} = {expected:.2} +- {tolerance:.2} \
         (1% and {uncertainty:.2} for the first and last round trips); \
         admissible [{lowest}, {highest}]; error {error:+.2} ({:+.3}%)",
        samples.len(),
        error / expected * 100.0,
    );
    assert!(
        refused > admitted,
        "the clients did not press the limit hard enough: {refused} refused"
    );
    assert!(
        error.abs() <= tolerance,
        "{admitted} admitted, expected {expected:.2} +- {tolerance:.2}"
    );
    assert!(
        (lowest..=highest).contains(&(admitted as f64)),
        "{admitted} admitted, outside [{lowest}, {highest}]"
    );

    let ok = admitted_reply.expect("a 200");
    assert_eq!(number(&ok, "ratelimit-limit"), 20);
    assert!(number(&ok, "ratelimit-remaining") <= 19);
    assert!(number(&ok, "ratelimit-reset") <= 1);
    let refused = refused_reply.expect("a 429");
    assert!(number(&refused, "retry-after") >= 1);
    assert_eq!(number(&refused, "ratelimit-limit"), 20);
    assert_eq!(number(&refused, "ratelimit-remaining"), 0);
    assert!(number(&refused, "ratelimit-reset") <= 1);
    assert!(refused.backend().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_keys_give_each_client_ip_header_value_and_forwarded_client_a_bucket() {
    let echo = Echo::start("limited");
    let per_minute =
        |key: &str| format!("  rateLimit: {{requests: 1, period: 1m, burst: 2, key: {key}}}\n");
    let documents = [
        manifests::gateway(),
        manifests::service("default", "svc", &[echo.port()]),
        filter("by-ip", "RateLimit", &per_minute("{type: ClientIP}")),
        filter(
            "by-header",
            "RateLimit",
            &per_minute("{type: Header, name: X-Tenant}"),
        ),
        filter(
            "by-forwarded",
            "RateLimit",
            "  rateLimit: {requests: 1, period: 1m, burst: 2, clientAddress: {trustedHops: 1}}\n",
        ),
        route("ip", "ip.test", &rule(&["by-ip"], Some("svc"))),
        route("hdr", "hdr.test", &rule(&["by-header"], Some("svc"))),
        route("fwd", "fwd.test", &rule(&["by-forwarded"], Some("svc"))),
        filter("by-route", "RateLimit", &per_minute("{type: Route}")),
        route("first", "first.test", &rule(&["by-route"], Some("svc"))),
        route(
            "second",
            "second.test",
            &format!(
                "  - matches: [{{path: {{type: PathPrefix, value: /other-rule}}}}]\n{}    backendRefs: [{{name: svc, port: 80}}]\n{}",
                extension_refs(&["by-route"]),
                rule(&["by-route"], Some("svc"))
            ),
        ),
    ];
    let gw = start(&documents).await;

    // Per client address: each gets its own burst of 2.
    let (a, b) = (v4(127, 205, 0, 1), v4(127, 205, 0, 2));
    for from in [a, b] {
        let mut statuses = Vec::new();
        for _ in 0..3 {
            statuses.push(get_from(&gw, from, "ip.test", "/", &[]).await.status);
        }
        assert_eq!(statuses, [200, 200, 429], "from {from}");
    }
    let again = get_from(&gw, a, "ip.test", "/", &[]).await;
    assert_eq!(again.status, 429);
    let retry_after: u64 = again.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "Retry-After {retry_after}");
    assert_eq!(again.header("ratelimit-limit"), Some("2"));
    assert_eq!(again.header("ratelimit-remaining"), Some("0"));

    // Per header value; requests without the header share one bucket.
    let client = HttpClient::new();
    let tenant = |value: Option<&'static str>| {
        let client = client.clone();
        let url = gw.url(80, "/");
        async move {
            let mut request = Request::get(&url).host(Some("hdr.test"));
            if let Some(v) = value {
                request = request.header("x-tenant", v);
            }
            client.send(request).await.unwrap()
        }
    };
    for value in [Some("a"), Some("b"), None] {
        let mut statuses = Vec::new();
        for i in 0..3u64 {
            let reply = tenant(value).await;
            statuses.push(reply.status);
            if reply.status == 200 {
                assert_eq!(number(&reply, "ratelimit-limit"), 2);
                assert_eq!(number(&reply, "ratelimit-remaining"), 1 - i);
                assert!((1..=120).contains(&number(&reply, "ratelimit-reset")));
            }
        }
        assert_eq!(statuses, [200, 200, 429], "X-Tenant {value:?}");
    }
    assert_eq!(tenant(Some("a")).await.status, 429);
    assert_eq!(tenant(Some("c")).await.status, 200);

    // Client address from X-Forwarded-For behind one trusted hop: one peer,
    // several clients.
    let forwarded = |xff: &'static str| {
        let client = client.clone();
        let url = gw.url(80, "/");
        async move {
            client
                .send(
                    Request::get(&url)
                        .host(Some("fwd.test"))
                        .header("x-forwarded-for", xff),
                )
                .await
                .unwrap()
                .status
        }
    };
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(forwarded("203.0.113.1").await);
    }
    assert_eq!(statuses, [200, 200, 429]);
    assert_eq!(forwarded("198.51.100.1, 203.0.113.2").await, 200);
    assert_eq!(forwarded("203.0.113.2, 203.0.113.1").await, 429);

    // A Route key: one bucket per rule, even for rules sharing the Filter,
    // in one route or in two.
    for (host, path) in [
        ("first.test", "/"),
        ("second.test", "/"),
        ("second.test", "/other-rule"),
    ] {
        let mut statuses = Vec::new();
        for _ in 0..3 {
            statuses.push(get(&client, &gw, host, path).await.status);
        }
        assert_eq!(statuses, [200, 200, 429], "{host}{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_state_survives_a_reload_that_keeps_the_limit() {
    let echo = Echo::start("e");
    let base = |burst: u32| {
        [
            manifests::gateway(),
            manifests::service("default", "svc", &[echo.port()]),
            filter(
                "slow",
                "RateLimit",
                &format!(
                    "  rateLimit: {{requests: 1, period: 1m, burst: {burst}, key: {{type: Route}}}}\n"
                ),
            ),
            route("limited", "limited.test", &rule(&["slow"], Some("svc"))),
        ]
        .join("---\n")
    };
    let other = |hosts: &str| manifests::route_with_rules("other", hosts, &rule(&[], Some("svc")));
    let gw =
        Standalone::start(&[("base.yaml", base(3)), ("other.yaml", other("other.test"))]).await;
    let client = HttpClient::new();
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(get(&client, &gw, "limited.test", "/").await.status);
    }
    assert_eq!(statuses, [200, 200, 200, 429]);

    // An unrelated route changes; once it serves, the new configuration is
    // in place, and the limited route's bucket is still empty.
    gw.write("other.yaml", &other("\"*.fresh.test\""));
    let probe = client.clone();
    let url = gw.url(80, "/");
    eventually(Duration::from_secs(20), || {
        let (client, url) = (probe.clone(), url.clone());
        async move {
            let reply = client.get(&url, Some("new.fresh.test")).await?;
            match reply.status {
                200 => Ok(()),
                s => bail!("new route answers {s}"),
            }
        }
    })
    .await;
    assert_eq!(get(&client, &gw, "other.test", "/").await.status, 404);
    let reply = get(&client, &gw, "limited.test", "/").await;
    assert_eq!(reply.status, 429, "the bucket was refilled by the reload");
    assert!(number(&reply, "retry-after") > 30);

    // Changing the limit itself starts over with a full bucket.
    gw.write("base.yaml", &base(4));
    eventually(Duration::from_secs(20), || {
        let (client, url) = (probe.clone(), url.clone());
        async move {
            let reply = client.get(&url, Some("limited.test")).await?;
            match reply.status {
                200 => Ok(reply),
                s => bail!("limited route answers {s}"),
            }
        }
    })
    .await;
    assert_eq!(
        get(&client, &gw, "limited.test", "/").await.status,
        200,
        "the new limiter has a burst of 4"
    );
}

// ---------------------------------------------------------------------------
// Precedence and order

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_most_specific_filter_of_a_type_wins_and_the_others_say_so() {
    let echo = Echo::start_with("never", "127.0.0.1:0".parse().unwrap(), &["--record"]);
    let listeners = "  - name: http\n    port: 80\n    protocol: HTTP\n    allowedRoutes:\n      namespaces:\n        from: All\n  - name: other\n    port: 81\n    protocol: HTTP\n    allowedRoutes:\n      namespaces:\n        from: All\n";
    let answer = |code: u16, body: &str, targets: &str| {
        format!(
            "  targetRefs: [{targets}]\n  staticResponse: {{statusCode: {code}, body: {body}}}\n"
        )
    };
    let gateway = "{group: gateway.networking.k8s.io, kind: Gateway, name: gw}";
    let listener =
        "{group: gateway.networking.k8s.io, kind: Gateway, name: gw, sectionName: other}";
    let route_a = "{group: gateway.networking.k8s.io, kind: HTTPRoute, name: a}";
    let rule_special =
        "{group: gateway.networking.k8s.io, kind: HTTPRoute, name: a, sectionName: special}";
    let a_rules = format!(
        "  - name: special\n    matches: [{{path: {{type: PathPrefix, value: /special}}}}]\n  - name: ext\n    matches: [{{path: {{type: PathPrefix, value: /ext}}}}]\n{}  - name: main\n    backendRefs: [{{name: svc, port: 80}}]\n",
        extension_refs(&["ext-203"])
    );
    let documents = [
        manifests::gateway_with(listeners),
        manifests::service("default", "svc", &[echo.port()]),
        filter("gw-418", "StaticResponse", &answer(418, "gateway", gateway)),
        filter(
            "listener-409",
            "StaticResponse",
            &answer(409, "listener", listener),
        ),
        filter(
            "route-201",
            "StaticResponse",
            &answer(201, "route", route_a),
        ),
        filter(
            "rule-202",
            "StaticResponse",
            &answer(202, "rule", rule_special),
        ),
        filter(
            "ext-203",
            "StaticResponse",
            "  staticResponse: {statusCode: 203, body: extref}\n",
        ),
        route("a", "a.test", &a_rules),
        route("b", "b.test", &rule(&[], Some("svc"))),
    ];
    let gw = start(&documents).await;
    let client = HttpClient::new();
    let cases = [
        (80, "a.test", "/", 201, "route"),
        (80, "a.test", "/special/x", 202, "rule"),
        (80, "a.test", "/ext", 203, "extref"),
        (80, "b.test", "/", 418, "gateway"),
        (81, "a.test", "/", 201, "route"),
        (81, "a.test", "/special", 202, "rule"),
        (81, "b.test", "/", 409, "listener"),
    ];
    for (port, host, path, status, body) in cases {
        let reply = client.get(&gw.url(port, path), Some(host)).await.unwrap();
        assert_eq!(
            (reply.status, reply.text().as_str()),
            (status, body),
            "port {port} {host}{path}"
        );
    }
    assert!(echo.recorded().await.is_empty(), "a backend was contacted");

    let gw_418 = filter_status(&gw, "gw-418").await;
    assert_condition(&gw_418["conditions"], "Accepted", "True", "Accepted");
    let message = assert_condition(
        &gw_418["conditions"],
        "Overridden",
        "True",
        "MoreSpecificFilter",
    );
    assert!(
        message.contains("default/route-201") && message.contains("default/listener-409"),
        "{message}"
    );
    let ancestor_entry = ancestor(&gw_418, "Gateway", "gw");
    assert_condition(
        &ancestor_entry["conditions"],
        "Accepted",
        "True",
        "Accepted",
    );
    assert_condition(
        &ancestor_entry["conditions"],
        "Overridden",
        "True",
        "MoreSpecificFilter",
    );

    let listener_409 = filter_status(&gw, "listener-409").await;
    let message = assert_condition(
        &listener_409["conditions"],
        "Overridden",
        "True",
        "MoreSpecificFilter",
    );
    assert!(message.contains("default/route-201"), "{message}");
    assert_eq!(
        ancestor(&listener_409, "Gateway", "gw")["ancestorRef"]["sectionName"],
        "other"
    );

    let route_201 = filter_status(&gw, "route-201").await;
    let message = assert_condition(
        &route_201["conditions"],
        "Overridden",
        "True",
        "MoreSpecificFilter",
    );
    assert!(
        message.contains("default/rule-202") && message.contains("default/ext-203"),
        "{message}"
    );
    assert_condition(
        &ancestor(&route_201, "HTTPRoute", "a")["conditions"],
        "Accepted",
        "True",
        "Accepted",
    );

    for winner in ["rule-202", "ext-203"] {
        let status = filter_status(&gw, winner).await;
        assert_condition(&status["conditions"], "Accepted", "True", "Accepted");
        assert_condition(
            &status["conditions"],
            "Overridden",
            "False",
            "NotOverridden",
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phases_run_in_their_order_whatever_order_says_and_every_rate_limit_applies() {
    let echo = Echo::start("e");
    let denied = v4(127, 206, 0, 9);
    let allowed = v4(127, 206, 0, 10);
    let documents = [
        manifests::gateway(),
        manifests::service("default", "svc", &[echo.port()]),
        filter(
            "static-first",
            "StaticResponse",
            "  order: -100\n  staticResponse: {statusCode: 203, body: static}\n",
        ),
        filter(
            "deny-one",
            "IPAccess",
            "  order: 100\n  ipAccess: {deny: [127.206.0.9/32]}\n",
        ),
        filter(
            "few-headers",
            "RequestLimits",
            "  order: 200\n  requestLimits: {maxHeaderCount: 6}\n",
        ),
        filter(
            "loose",
            "RateLimit",
            "  order: -5\n  rateLimit: {requests: 1, period: 1m, burst: 10, key: {type: Route}}\n",
        ),
        filter(
            "tight",
            "RateLimit",
            "  order: 5\n  rateLimit: {requests: 1, period: 1m, burst: 2, key: {type: Route}}\n",
        ),
        // Listed in the reverse of the phase order on purpose.
        route(
            "order",
            "order.test",
            &rule(&["static-first", "deny-one", "few-headers"], Some("svc")),
        ),
        route("two", "two.test", &rule(&["loose", "tight"], Some("svc"))),
        route(
            "limited-static",
            "limited-static.test",
            &rule(&["static-first", "tight"], None),
        ),
    ];
    let gw = start(&documents).await;

    // requestLimits, then ipAccess, then staticResponse.
    let many: Vec<(String, String)> = (0..8).map(|i| (format!("x-h{i}"), "v".into())).collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    type Case<'a> = (IpAddr, &'a [(&'a str, &'a str)], u16);
    let cases: [Case; 4] = [
        (denied, &[], 403),
        (allowed, &[], 203),
        (denied, &many, 431),
        (allowed, &many, 431),
    ];
    for (from, headers, status) in cases {
        let reply = get_from(&gw, from, "order.test", "/", headers).await;
        assert_eq!(
            reply.status,
            status,
            "from {from} with {} headers: {}",
            headers.len() + 1,
            reply.text()
        );
    }

    // Two rate limits at one level: both run, the tighter refuses first,
    // and the answers report the tighter one.
    let client = HttpClient::new();
    for remaining in [1, 0] {
        let reply = get(&client, &gw, "two.test", "/").await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(number(&reply, "ratelimit-limit"), 2);
        assert_eq!(number(&reply, "ratelimit-remaining"), remaining);
    }
    let reply = get(&client, &gw, "two.test", "/").await;
    assert_eq!(reply.status, 429);
    assert_eq!(number(&reply, "ratelimit-limit"), 2);

    // rateLimit runs before staticResponse, whose answers carry its headers.
    for remaining in [1, 0] {
        let reply = get(&client, &gw, "limited-static.test", "/").await;
        assert_eq!((reply.status, reply.text().as_str()), (203, "static"));
        assert_eq!(number(&reply, "ratelimit-limit"), 2);
        assert_eq!(number(&reply, "ratelimit-remaining"), remaining);
        assert!(reply.header("ratelimit-reset").is_some());
    }
    let reply = get(&client, &gw, "limited-static.test", "/").await;
    assert_eq!(reply.status, 429, "{}", reply.text());
    assert!(number(&reply, "retry-after") >= 1);
}

// ---------------------------------------------------------------------------
// Invalid filters and statuses

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_or_missing_filters_fail_closed_and_statuses_say_why() {
    let echo = Echo::start("e");
    let gw2 = r#"---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw2, namespace: default}
spec:
  gatewayClassName: gatehouse
  listeners:
  - {name: http, port: 82, protocol: HTTP}
"#;
    let locked = r#"---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: locked, namespace: default}
spec:
  parentRefs: [{name: gw2}]
  hostnames: [locked.test]
  rules:
  - backendRefs: [{name: svc, port: 80}]
"#;
    let mixed_rules = format!(
        "  - matches: [{{path: {{type: PathPrefix, value: /missing}}}}]\n{}    backendRefs: [{{name: svc, port: 80}}]\n  - backendRefs: [{{name: svc, port: 80}}]\n",
        extension_refs(&["nope"])
    );
    let documents = [
        manifests::gateway(),
        gw2.to_owned(),
        manifests::service("default", "svc", &[echo.port()]),
        filter(
            "bad-cidr",
            "IPAccess",
            "  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: gw2}]\n  ipAccess: {deny: [not-a-cidr]}\n",
        ),
        filter(
            "orphan",
            "StaticResponse",
            "  targetRefs:\n  - {group: gateway.networking.k8s.io, kind: Gateway, name: ghost}\n  - {group: gateway.networking.k8s.io, kind: HTTPRoute, name: no-such-route}\n  staticResponse: {statusCode: 418}\n",
        ),
        route("mixed", "mixed.test", &mixed_rules),
        route("all-bad", "all-bad.test", &rule(&["bad-cidr"], Some("svc"))),
        locked.to_owned(),
    ];
    let gw = start(&documents).await;
    let client = HttpClient::new();

    // A missing Filter: its rule answers 500, the route's other rules serve.
    let reply = get(&client, &gw, "mixed.test", "/missing/x").await;
    assert_eq!(reply.status, 500, "{}", reply.text());
    assert!(reply.backend().is_none());
    let reply = get(&client, &gw, "mixed.test", "/fine").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let mixed = gw.status_of("HTTPRoute", "default/mixed").await.unwrap();
    let parent = &mixed["status"]["parents"][0];
    assert_condition(&parent["conditions"], "Accepted", "True", "Accepted");
    let message = assert_condition(
        &parent["conditions"],
        "PartiallyInvalid",
        "True",
        "UnsupportedValue",
    );
    assert!(
        message.contains("Filter default/nope not found"),
        "{message}"
    );

    // A route whose one rule names an invalid Filter answers 500 and is
    // not accepted, saying which Filter and why.
    let reply = get(&client, &gw, "all-bad.test", "/").await;
    assert_eq!(reply.status, 500, "{}", reply.text());
    let all_bad = gw.status_of("HTTPRoute", "default/all-bad").await.unwrap();
    let message = assert_condition(
        &all_bad["status"]["parents"][0]["conditions"],
        "Accepted",
        "False",
        "UnsupportedValue",
    );
    assert!(
        message.contains("bad-cidr") && message.contains("invalid"),
        "{message}"
    );

    // An invalid Filter attached to a Gateway: its routes answer 500 (fail
    // closed), and so do requests matching no route, since the ipAccess
    // phase runs for those too. The other Gateway is untouched.
    let locked_url = format!("http://{}/", gw.socket(82));
    let reply = client.get(&locked_url, Some("locked.test")).await.unwrap();
    assert_eq!(reply.status, 500, "{}", reply.text());
    assert!(reply.backend().is_none());
    let reply = client.get(&locked_url, Some("nothing.test")).await.unwrap();
    assert_eq!(reply.status, 500, "{}", reply.text());
    let bad = filter_status(&gw, "bad-cidr").await;
    let message = assert_condition(&bad["conditions"], "Accepted", "False", "Invalid");
    assert!(message.contains("not-a-cidr"), "{message}");
    assert_condition(
        &ancestor(&bad, "Gateway", "gw2")["conditions"],
        "Accepted",
        "False",
        "Invalid",
    );

    // Targets that do not exist.
    let orphan = filter_status(&gw, "orphan").await;
    assert_condition(&orphan["conditions"], "Accepted", "True", "Accepted");
    for (kind, name) in [("Gateway", "ghost"), ("HTTPRoute", "no-such-route")] {
        let message = assert_condition(
            &ancestor(&orphan, kind, name)["conditions"],
            "Accepted",
            "False",
            "TargetNotFound",
        );
        assert!(message.contains(name), "{message}");
    }
    // Nothing it targets exists, so nothing answers 418.
    let reply = get(&client, &gw, "mixed.test", "/").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
}

// ---------------------------------------------------------------------------
// Rate-limit headers on every answer

/// Every answer through a rate limit carries RateLimit-Limit,
/// RateLimit-Remaining and RateLimit-Reset: a redirect and the gateway's
/// own 500 and 503 as much as a backend's answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_headers_come_with_every_answer() {
    let documents = [
        manifests::gateway(),
        // A Service without endpoints: the gateway answers 503 itself.
        manifests::service("default", "empty", &[]),
        filter(
            "limit",
            "RateLimit",
            "  rateLimit: {requests: 1, period: 1m, burst: 5, key: {type: Route}}\n",
        ),
        route(
            "moved",
            "moved.test",
            "  - filters:\n    - {type: ExtensionRef, extensionRef: {group: gatehouse.dev, kind: Filter, name: limit}}\n    - {type: RequestRedirect, requestRedirect: {hostname: elsewhere.test}}\n",
        ),
        route("no-backend", "no-backend.test", &rule(&["limit"], None)),
        route(
            "no-endpoints",
            "no-endpoints.test",
            &rule(&["limit"], Some("empty")),
        ),
    ];
    let gw = start(&documents).await;
    let client = HttpClient::new();
    let mut missing = Vec::new();
    for (host, status) in [
        ("moved.test", 302),
        ("no-backend.test", 500),
        ("no-endpoints.test", 503),
    ] {
        let reply = get(&client, &gw, host, "/x").await;
        assert_eq!(reply.status, status, "{host}: {}", reply.text());
        for name in ["ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"] {
            if reply.header(name).is_none() {
                missing.push(format!("{host} ({status}) lacks {name}"));
            }
        }
    }
    assert!(missing.is_empty(), "{missing:#?}");
}

/// A Gateway owner's enforced Filter is a floor: a route's own filter of
/// the same type does not replace it, and says so in its status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enforced_gateway_filter_cannot_be_replaced_by_a_route() {
    let echo = Echo::start("ok");
    let denied = v4(127, 205, 0, 9);
    let allowed = v4(127, 205, 0, 10);
    let documents = [
        manifests::gateway(),
        manifests::service("default", "svc", &[echo.port()]),
        filter(
            "platform-deny",
            "IPAccess",
            "  enforce: true\n  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: gw}]\n  ipAccess: {deny: [127.205.0.9/32]}\n",
        ),
        // A route owner's attempt to open everything up.
        filter(
            "open-to-all",
            "IPAccess",
            "  ipAccess: {allow: [0.0.0.0/0, \"::/0\"]}\n",
        ),
        route(
            "tenant",
            "tenant.test",
            &rule(&["open-to-all"], Some("svc")),
        ),
    ];
    let gw = start(&documents).await;
    let refused = get_from(&gw, denied, "tenant.test", "/", &[]).await;
    assert_eq!(refused.status, 403, "the enforced deny list still applies");
    let served = get_from(&gw, allowed, "tenant.test", "/", &[]).await;
    assert_eq!(served.status, 200);

    let status = gw.status_of("Filter", "default/open-to-all").await.unwrap();
    let overridden = status["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Overridden"))
        .cloned()
        .unwrap_or_else(|| panic!("no Overridden in {status}"));
    assert_eq!(overridden["status"], "True", "{overridden}");
    assert!(
        overridden["message"]
            .as_str()
            .unwrap()
            .contains("default/platform-deny"),
        "{overridden}"
    );
}
