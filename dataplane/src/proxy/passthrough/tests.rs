//! The passthrough with raw clients and a raw upstream, beside hyper's
//! path for the same requests: a connection whose first request has a body
//! is handed to hyper, and every request after it goes that way.
//!
//! Which path served a request shows in the field names: the passthrough
//! passes them on as they came ("X-Custom"), hyper's path in lower case.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::mpsc,
};

use crate::proxy::test_io::{proxy_to, proxy_with, proxy_with_options, read_until};

/// What the upstream answers to a request for each path.
fn reply(method: &str, path: &str) -> (Vec<&'static [u8]>, bool) {
    let path = path.split('?').next().unwrap_or_default();
    match (method, path) {
        ("HEAD", "/bad-length") => (
            vec![b"HTTP/1.1 200 OK\r\nContent-Length: five\r\n\r\n"],
            false,
        ),
        ("HEAD", _) => (vec![b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"], false),
        // Connection names the field that frames the body.
        (_, "/named-length") => (
            vec![b"HTTP/1.1 200 OK\r\nConnection: content-length\r\nContent-Length: 5\r\n\r\nhello"],
            false,
        ),
        // A bare LF inside a chunk extension.
        (_, "/bad-chunk") => (
            vec![b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x\n0\r\nhello\r\n0\r\n\r\n"],
            false,
        ),
        (_, "/length") => (
            vec![
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Kept: yes\r\nConnection: x-private\r\n\
                  X-Private: secret\r\nKeep-Alive: timeout=5\r\n\r\nhello",
            ],
            false,
        ),
        // In small pieces, split inside the size lines, the data and the
        // trailer section.
        (_, "/chunked") => (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nDate: Sat, 05 Dec 2026 07:00:00 GMT\r\n\r\n\
              5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Sum: 11\r\n\r\n"
                .chunks(7)
                .collect(),
            false,
        ),
        (_, "/close") => (
            vec![b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end"],
            true,
        ),
        // The rest of its body waits for `RELEASE`.
        (_, "/slow") => (
            vec![b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello", b"world"],
            false,
        ),
        (_, "/many-options") => (
            vec![
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: a, b, c, d, e, f, g, h,\
                  keep-alive, x-private, i\r\nX-Private: secret\r\nI: i\r\nX-Kept: yes\r\n\r\nok",
            ],
            false,
        ),
        (_, "/no-content") => (vec![b"HTTP/1.1 204 No Content\r\nX-Kept: yes\r\n\r\n"], false),
        (_, "/interim") => (
            vec![
                b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n",
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            ],
            false,
        ),
        _ => (vec![b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"], false),
    }
}

/// An upstream answering as `reply` says; sends each request it gets
/// (head and body) and counts its connections.
async fn upstream() -> (
    SocketAddr,
    mpsc::UnboundedReceiver<String>,
    Arc<AtomicUsize>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (seen_tx, seen) = mpsc::unbounded_channel();
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::Relaxed);
            let seen_tx = seen_tx.clone();
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                while let Some(end) = read_until(&mut stream, &mut buffer, b"\r\n\r\n").await {
                    let head = String::from_utf8(buffer[..end].to_vec()).unwrap();
                    let length = content_length(&head);
                    while buffer.len() < end + length {
                        let mut chunk = [0u8; 4096];
                        let n = stream.read(&mut chunk).await.unwrap();
                        assert!(n > 0, "request body cut short");
                        buffer.extend_from_slice(&chunk[..n]);
                    }
                    let request: Vec<u8> = buffer.drain(..end + length).collect();
                    seen_tx.send(String::from_utf8(request).unwrap()).unwrap();
                    let mut line = head.split(' ');
                    let (method, path) = (line.next().unwrap(), line.next().unwrap());
                    if path == "/pause" {
                        // Half a body, then nothing until the proxy lets go.
                        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello";
                        stream.write_all(head).await.unwrap();
                    }
                    if path == "/hang" || path == "/pause" {
                        // No answer: tells when the proxy lets go.
                        while stream.read(&mut [0u8; 64]).await.is_ok_and(|n| n > 0) {}
                        seen_tx.send("<closed>".into()).unwrap();
                        return;
                    }
                    let (pieces, close) = reply(method, path);
                    for (i, piece) in pieces.into_iter().enumerate() {
                        if path == "/slow" && i == 1 {
                            RELEASE.notified().await;
                        }
                        stream.write_all(piece).await.unwrap();
                        stream.flush().await.unwrap();
                        tokio::task::yield_now().await;
                    }
                    if close {
                        return;
                    }
                }
            });
        }
    });
    (address, seen, connections)
}

/// Lets the upstream send the rest of "/slow".
static RELEASE: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// Whether the proxy closed its connection to the upstream of a request
/// that gets no answer ("/hang", "/pause") within 10 s.
async fn upstream_let_go(seen: &mut mpsc::UnboundedReceiver<String>) -> bool {
    let closed = tokio::time::timeout(Duration::from_secs(10), seen.recv()).await;
    closed.is_ok_and(|message| message.as_deref() == Some("<closed>"))
}

fn content_length(head: &str) -> usize {
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .map_or(0, |(_, v)| v.trim().parse().unwrap())
}

/// One response as the client read it.
#[derive(Debug, PartialEq, Eq)]
struct Reply {
    status: u16,
    /// (lower-case name, value), in order.
    fields: Vec<(String, String)>,
    /// As received, with any chunked framing.
    raw_body: Vec<u8>,
    body: Vec<u8>,
    trailers: Vec<String>,
}

impl Reply {
    fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// What both paths must agree on: the status, the fields but those
    /// that carry the framing and the Date's value, and the body.
    fn semantics(&self) -> (u16, Vec<(String, String)>, Vec<u8>) {
        let mut fields: Vec<(String, String)> = self
            .fields
            .iter()
            .filter(|(n, _)| n != "transfer-encoding" && n != "connection")
            .map(|(n, v)| match n.as_str() {
                "date" => (n.clone(), "<date>".into()),
                _ => (n.clone(), v.clone()),
            })
            .collect();
        fields.sort();
        (self.status, fields, self.body.clone())
    }
}

/// A raw client connection; `buffer` holds what was read past the last
/// response.
struct Client {
    stream: TcpStream,
    buffer: Vec<u8>,
}

impl Client {
    async fn connect(proxy: SocketAddr) -> Self {
        Self {
            stream: TcpStream::connect(proxy).await.unwrap(),
            buffer: Vec::new(),
        }
    }

    /// A connection the first request of which has handed to hyper.
    async fn handed_to_hyper(
        proxy: SocketAddr,
        seen: &mut mpsc::UnboundedReceiver<String>,
    ) -> Self {
        let mut client = Self::connect(proxy).await;
        client.send(HAND_OFF).await;
        assert_eq!(client.read_reply(false).await.status, 200);
        let received = seen.recv().await.unwrap();
        assert!(
            received.starts_with("GET /length HTTP/1.1\r\n"),
            "{received}"
        );
        client
    }

    /// A connection the passthrough serves, or (`hand_off`) one hyper does.
    async fn on_either_path(
        proxy: SocketAddr,
        hand_off: bool,
        seen: &mut mpsc::UnboundedReceiver<String>,
    ) -> Self {
        match hand_off {
            false => Self::connect(proxy).await,
            true => Self::handed_to_hyper(proxy, seen).await,
        }
    }

    async fn send(&mut self, request: &str) {
        self.stream.write_all(request.as_bytes()).await.unwrap();
    }

    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), self.stream.read(&mut chunk))
            .await
            .expect("no answer")
            .unwrap_or(0);
        self.buffer.extend_from_slice(&chunk[..n]);
        n > 0
    }

    async fn read_reply(&mut self, head_only: bool) -> Reply {
        let (status, fields, head_len) = loop {
            let mut parsed = [httparse::EMPTY_HEADER; 64];
            let mut response = httparse::Response::new(&mut parsed);
            if let httparse::Status::Complete(len) = response.parse(&self.buffer).unwrap() {
                let fields = response
                    .headers
                    .iter()
                    .map(|f| {
                        let value = String::from_utf8(f.value.to_vec()).unwrap();
                        (f.name.to_ascii_lowercase(), value)
                    })
                    .collect::<Vec<_>>();
                break (response.code.unwrap(), fields, len);
            }
            assert!(self.fill().await, "closed before a response head");
        };
        self.buffer.drain(..head_len);
        let field = |name: &str| fields.iter().find(|(n, _)| n == name).map(|(_, v)| v);
        let mut reply = Reply {
            status,
            raw_body: Vec::new(),
            body: Vec::new(),
            trailers: Vec::new(),
            fields: fields.clone(),
        };
        if head_only || status == 204 || status == 304 || status < 200 {
            return reply;
        }
        if field("transfer-encoding").is_some() {
            self.read_chunked(&mut reply).await;
        } else if let Some(length) = field("content-length") {
            let length: usize = length.parse().unwrap();
            while self.buffer.len() < length {
                assert!(self.fill().await, "closed mid-body");
            }
            reply.body = self.buffer.drain(..length).collect();
            reply.raw_body = reply.body.clone();
        } else {
            while self.fill().await {}
            reply.body = std::mem::take(&mut self.buffer);
            reply.raw_body = reply.body.clone();
        }
        reply
    }

    async fn read_line(&mut self, raw: &mut Vec<u8>) -> String {
        loop {
            if let Some(end) = self.buffer.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = self.buffer.drain(..end + 2).collect();
                raw.extend_from_slice(&line);
                return String::from_utf8(line[..end].to_vec()).unwrap();
            }
            assert!(self.fill().await, "closed mid-body");
        }
    }

    async fn read_chunked(&mut self, reply: &mut Reply) {
        loop {
            let line = self.read_line(&mut reply.raw_body).await;
            let size = usize::from_str_radix(line.split(';').next().unwrap(), 16).unwrap();
            if size == 0 {
                break;
            }
            while self.buffer.len() < size + 2 {
                assert!(self.fill().await, "closed mid-body");
            }
            let data: Vec<u8> = self.buffer.drain(..size + 2).collect();
            reply.raw_body.extend_from_slice(&data);
            reply.body.extend_from_slice(&data[..size]);
        }
        loop {
            let line = self.read_line(&mut reply.raw_body).await;
            if line.is_empty() {
                return;
            }
            reply.trailers.push(line);
        }
    }

    /// Whether the proxy closed the connection (with nothing more sent).
    async fn closed(&mut self) -> bool {
        !self.fill().await && self.buffer.is_empty()
    }
}

fn request(method: &str, path: &str, fields: &[&str]) -> String {
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: svc.example:8080\r\n");
    for field in fields {
        request.push_str(field);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    request
}

/// A request the passthrough leaves to hyper: an absolute-form target.
const HAND_OFF: &str = "GET http://svc.example/length HTTP/1.1\r\nHost: svc.example\r\n\r\n";

fn with_body(method: &str, path: &str, fields: &[&str], body: &str) -> String {
    let length = format!("Content-Length: {}", body.len());
    let fields: Vec<&str> = fields.iter().copied().chain([length.as_str()]).collect();
    request(method, path, &fields) + body
}

/// A request as the upstream got it, comparable across the paths: names
/// in lower case, the generated request id masked, fields sorted.
fn comparable(request: &str) -> (String, Vec<String>, String) {
    let (head, body) = request.split_once("\r\n\r\n").unwrap();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap().to_owned();
    let mut fields: Vec<String> = lines
        .map(|line| {
            let (name, value) = line.split_once(':').unwrap();
            let name = name.to_ascii_lowercase();
            let value = value.trim();
            match name.as_str() {
                "x-request-id" if value.len() == 32 => format!("{name}: <id>"),
                _ => format!("{name}: {value}"),
            }
        })
        .collect();
    fields.sort();
    (request_line, fields, body.to_owned())
}

const FIELDS: &[&str] = &[
    "X-Custom: Kept",
    "Connection: keep-alive",
    "Keep-Alive: timeout=5",
    "Proxy-Connection: keep-alive",
    "Trailer: x-sum",
    "X-Forwarded-For: 203.0.113.9",
    "X-Forwarded-Proto: ftp",
];

#[tokio::test]
async fn the_passthrough_and_hypers_path_send_and_answer_the_same() {
    let (backend, mut seen, _) = upstream().await;
    let (_dataplane, proxy) = proxy_to(backend).await;
    let cases = [
        ("GET", "/length?q=1&r=%20", None),
        ("GET", "/chunked", None),
        ("HEAD", "/length", None),
        ("GET", "/no-content", None),
        ("GET", "/interim", None),
        ("GET", "/many-options", None),
        ("GET", "/named-length", None),
        ("HEAD", "/bad-length", None),
        ("DELETE", "/length", None),
        ("POST", "/length", None),
        ("POST", "/length", Some("{\"a\": 1}")),
        ("PUT", "/length", Some("")),
        ("GET", "/close", None),
    ];
    for (method, path, body) in cases {
        let case = format!("{method} {path} {body:?}");
        let head_only = method == "HEAD";
        let request = match body {
            None => request(method, path, FIELDS),
            Some(body) => with_body(method, path, FIELDS, body),
        };
        let mut passthrough = Client::connect(proxy).await;
        passthrough.send(&request).await;
        let passed = passthrough.read_reply(head_only).await;
        let passed_upstream = seen.recv().await.unwrap();
        let mut hyper = Client::handed_to_hyper(proxy, &mut seen).await;
        hyper.send(&request).await;
        let through_hyper = hyper.read_reply(head_only).await;
        let hyper_upstream = seen.recv().await.unwrap();

        assert!(
            passed_upstream.contains("\r\nX-Custom: Kept\r\n"),
            "{case}: {passed_upstream}"
        );
        assert!(
            hyper_upstream.contains("\r\nx-custom: Kept\r\n"),
            "{case}: {hyper_upstream}"
        );
        assert_eq!(
            comparable(&passed_upstream),
            comparable(&hyper_upstream),
            "{case}"
        );
        let (request_line, fields, sent_body) = comparable(&passed_upstream);
        assert_eq!(sent_body, body.unwrap_or_default(), "{case}");
        assert_eq!(request_line, format!("{method} {path} HTTP/1.1"));
        for expected in [
            "x-forwarded-for: 203.0.113.9, 127.0.0.1",
            "x-forwarded-proto: http",
            "x-request-id: <id>",
            "host: svc.example:8080",
        ] {
            assert!(fields.iter().any(|f| f == expected), "{case}: {fields:?}");
        }
        for gone in ["connection", "keep-alive", "proxy-connection", "trailer"] {
            assert!(
                !fields.iter().any(|f| f.starts_with(&format!("{gone}:"))),
                "{case}: {fields:?}"
            );
        }
        assert_eq!(passed.semantics(), through_hyper.semantics(), "{case}");
        assert!(passed.field("date").is_some(), "{case}");
        for gone in ["x-private", "keep-alive", "i"] {
            assert!(passed.field(gone).is_none(), "{case}: {passed:?}");
        }
    }
}

#[tokio::test]
async fn a_chunked_response_passes_through_as_sent_and_its_connection_is_reused() {
    let (backend, mut seen, connections) = upstream().await;
    let (_dataplane, proxy) = proxy_to(backend).await;
    let mut client = Client::connect(proxy).await;
    for _ in 0..2 {
        client.send(&request("GET", "/chunked", &[])).await;
        let reply = client.read_reply(false).await;
        seen.recv().await.unwrap();
        assert_eq!(reply.field("transfer-encoding"), Some("chunked"));
        assert_eq!(
            reply.raw_body,
            b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Sum: 11\r\n\r\n"
        );
        assert_eq!(reply.body, b"hello world");
        assert_eq!(reply.trailers, ["X-Sum: 11"]);
        assert_eq!(reply.field("date"), Some("Sat, 05 Dec 2026 07:00:00 GMT"));
    }
    assert_eq!(connections.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_across_a_hand_off() {
    let (backend, mut seen, _) = upstream().await;
    let (_dataplane, proxy) = proxy_to(backend).await;
    let mut client = Client::connect(proxy).await;
    let pipelined = [
        request("GET", "/length", &["X-Order: 1"]),
        with_body("POST", "/interim", &["X-Order: 2"], "abc"),
        HAND_OFF.into(),
        request("GET", "/length", &["X-Order: 4"]),
    ]
    .concat();
    client.send(&pipelined).await;
    let mut bodies = Vec::new();
    for _ in 0..4 {
        bodies.push(String::from_utf8(client.read_reply(false).await.body).unwrap());
    }
    assert_eq!(bodies, ["hello", "ok", "hello", "hello"]);
    let heads: Vec<String> = [(); 4].map(|()| seen.try_recv().unwrap()).into();
    assert!(heads[0].contains("X-Order: 1"), "{}", heads[0]);
    assert!(heads[1].contains("X-Order: 2"), "{}", heads[1]);
    assert!(heads[1].ends_with("\r\n\r\nabc"), "{}", heads[1]);
    assert!(heads[2].starts_with("GET /length "), "{}", heads[2]);
    // After the hand-off, hyper's path: field names in lower case.
    assert!(heads[3].contains("x-order: 4"), "{}", heads[3]);
}

#[tokio::test]
async fn a_response_that_ends_with_its_connection_ends_the_clients() {
    let (backend, _seen, _) = upstream().await;
    let (_dataplane, proxy) = proxy_to(backend).await;
    let mut client = Client::connect(proxy).await;
    client.send(&request("GET", "/close", &[])).await;
    let reply = client.read_reply(false).await;
    assert_eq!(reply.field("connection"), Some("close"));
    assert_eq!(reply.body, b"until the end");
    assert!(client.buffer.is_empty() && client.closed().await);
}

#[tokio::test]
async fn a_client_asking_to_close_is_answered_then_closed() {
    let (backend, _seen, _) = upstream().await;
    let (_dataplane, proxy) = proxy_to(backend).await;
    let mut client = Client::connect(proxy).await;
    client
        .send(&request("GET", "/length", &["Connection: close"]))
        .await;
    let reply = client.read_reply(false).await;
    assert_eq!(reply.body, b"hello");
    assert_eq!(reply.field("connection"), Some("close"));
    assert!(client.closed().await);
}

#[tokio::test]
async fn an_unreachable_upstream_is_answered_as_on_hypers_path_and_the_connection_kept() {
    let unreachable = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let (_dataplane, proxy) = proxy_to(unreachable).await;
    let mut passthrough = Client::connect(proxy).await;
    let mut answers = Vec::new();
    for _ in 0..2 {
        passthrough.send(&request("GET", "/", &[])).await;
        answers.push(passthrough.read_reply(false).await);
    }
    // The answer to HEAD: the length of the body, no body; the next answer
    // on the connection starts where it should.
    passthrough.send(&request("HEAD", "/", &[])).await;
    let head = passthrough.read_reply(true).await;
    assert_eq!(
        (head.status, head.field("content-length")),
        (502, Some("7"))
    );
    passthrough.send(&request("GET", "/", &[])).await;
    assert_eq!(passthrough.read_reply(false).await.body, b"connect");
    // hyper's path.
    let mut hyper = Client::connect(proxy).await;
    hyper.send(HAND_OFF).await;
    answers.push(hyper.read_reply(false).await);
    for answer in &answers {
        assert_eq!(answer.status, 502);
        assert_eq!(answer.body, b"connect");
        assert_eq!(answer.field("content-type"), Some("text/plain"));
    }
    assert_eq!(answers[0].semantics(), answers[2].semantics());
}

#[tokio::test]
async fn shutdown_closes_an_idle_connection_the_passthrough_serves() {
    let (backend, _seen, _) = upstream().await;
    let (dataplane, proxy) = proxy_to(backend).await;
    let mut client = Client::connect(proxy).await;
    client.send(&request("GET", "/length", &[])).await;
    assert_eq!(client.read_reply(false).await.body, b"hello");
    tokio::time::timeout(Duration::from_secs(10), dataplane.shutdown())
        .await
        .expect("shutdown waited on an idle connection");
    assert!(client.closed().await);
}

#[tokio::test]
async fn an_endpoint_counts_a_request_in_flight_until_its_body_has_been_passed_on() {
    let (backend, _seen, _) = upstream().await;
    let (dataplane, proxy) = proxy_to(backend).await;
    let in_flight = || {
        let table = dataplane.table();
        table.clusters()[0].endpoints[0]
            .in_flight
            .load(Ordering::Relaxed)
    };
    let mut client = Client::connect(proxy).await;
    client.send(&request("GET", "/slow", &[])).await;
    while !client.buffer.ends_with(b"hello") {
        assert!(client.fill().await, "closed mid-response");
    }
    assert_eq!(in_flight(), 1);
    RELEASE.notify_one();
    client.buffer.clear();
    client.send(&request("GET", "/length", &[])).await;
    // The second response comes after the first's body has ended.
    while !client.buffer.ends_with(b"hello") {
        assert!(client.fill().await, "closed mid-response");
    }
    assert!(client.buffer.starts_with(b"world"));
    assert_eq!(in_flight(), 0);
}

#[tokio::test]
async fn a_head_sent_a_byte_at_a_time_is_served_and_a_long_one_goes_to_hyper() {
    let (backend, mut seen, _) = upstream().await;
    let (_dataplane, proxy) = proxy_to(backend).await;
    let mut client = Client::connect(proxy).await;
    client.stream.set_nodelay(true).unwrap();
    for byte in request("GET", "/length", &["X-Slow: Yes"]).bytes() {
        client.stream.write_all(&[byte]).await.unwrap();
    }
    assert_eq!(client.read_reply(false).await.body, b"hello");
    let received = seen.recv().await.unwrap();
    assert!(received.contains("\r\nX-Slow: Yes\r\n"), "{received}");

    // Past the passthrough's 16 KiB, within hyper's limit.
    let long = format!("X-Long: {}", "a".repeat(20 * 1024));
    client.send(&request("GET", "/length", &[&long])).await;
    assert_eq!(client.read_reply(false).await.body, b"hello");
    let received = seen.recv().await.unwrap();
    assert!(received.contains("\r\nx-long: aaa"), "went to hyper");
}

#[tokio::test]
async fn a_body_goes_with_its_head_and_a_long_one_goes_to_hyper() {
    let (backend, mut seen, _) = upstream().await;
    let (_dataplane, proxy) = proxy_to(backend).await;
    let mut client = Client::connect(proxy).await;
    // The head first, the body a moment later: the passthrough waits for it.
    let request = with_body("POST", "/length", &["X-Body: Late"], "later");
    let (head, body) = request.split_at(request.len() - 5);
    client.send(head).await;
    tokio::task::yield_now().await;
    client.send(body).await;
    assert_eq!(client.read_reply(false).await.body, b"hello");
    let received = seen.recv().await.unwrap();
    assert!(received.contains("\r\nX-Body: Late\r\n"), "{received}");
    assert!(received.ends_with("\r\n\r\nlater"), "{received}");

    // Past the 16 KiB the passthrough sends with a head.
    let long = "b".repeat(16 * 1024 + 1);
    client
        .send(&with_body("POST", "/length", &["X-Body: Long"], &long))
        .await;
    assert_eq!(client.read_reply(false).await.body, b"hello");
    let received = seen.recv().await.unwrap();
    assert!(received.contains("\r\nx-body: Long\r\n"), "went to hyper");
    assert!(received.ends_with(&long));
}

#[tokio::test]
async fn a_client_that_goes_away_cancels_its_upstream_request_on_both_paths() {
    let (backend, mut seen, _) = upstream().await;
    let (_dataplane, proxy) = proxy_to(backend).await;
    for hand_off in [false, true] {
        let mut client = Client::on_either_path(proxy, hand_off, &mut seen).await;
        client.send(&request("GET", "/hang", &[])).await;
        let received = seen.recv().await.unwrap();
        assert!(received.starts_with("GET /hang "), "{received}");
        drop(client);
        assert!(upstream_let_go(&mut seen).await, "hand-off: {hand_off}");
    }
}

#[tokio::test]
async fn a_backend_request_timeout_is_answered_504_on_both_paths() {
    let (backend, mut seen, _) = upstream().await;
    let (_dataplane, proxy) = proxy_with(
        backend,
        "UPSTREAM_PROTOCOL_HTTP1",
        r#""backendRequestTimeoutMs":200,"#,
    )
    .await;
    let mut answers = Vec::new();
    for hand_off in [false, true] {
        let mut client = Client::on_either_path(proxy, hand_off, &mut seen).await;
        client
            .send(&request("GET", "/hang", &["X-Path: Which"]))
            .await;
        let answer = client.read_reply(false).await;
        let received = seen.recv().await.unwrap();
        let expected = if hand_off {
            "x-path: Which"
        } else {
            "X-Path: Which"
        };
        assert!(received.contains(expected), "{received}");
        // The timed-out request's upstream connection is closed.
        assert!(upstream_let_go(&mut seen).await, "hand-off: {hand_off}");
        assert_eq!(answer.status, 504, "hand-off: {hand_off}");
        assert_eq!(answer.body, b"timeout");
        answers.push(answer.semantics());
    }
    assert_eq!(answers[0], answers[1]);
}

#[tokio::test]
async fn malformed_and_ambiguous_requests_get_a_4xx_or_a_close_and_nothing_reaches_the_upstream() {
    let (backend, mut seen, _) = upstream().await;
    let (_dataplane, proxy) = proxy_to(backend).await;
    let hostile: &[&[u8]] = &[
        b"GET / HTTP/1.1\r\nHost: a\r\nNo Colon Here\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nBad\x01Name: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: bad\x00value\r\n\r\n",
        b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\n folded: value\r\n\r\n",
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",
        b"GET / HTTP/9.9\r\nHost: a\r\n\r\n",
    ];
    for request in hostile {
        let mut client = Client::connect(proxy).await;
        client.stream.write_all(request).await.unwrap();
        // The proxy closes the connection, or answers a 4xx (and may keep
        // a connection whose framing was sound).
        let shown = String::from_utf8_lossy(request);
        let answered = loop {
            if client.buffer.windows(4).any(|w| w == b"\r\n\r\n") {
                break true;
            }
            if !client.fill().await {
                break false;
            }
        };
        if answered {
            let reply = client.read_reply(false).await;
            assert!((400..500).contains(&reply.status), "{shown:?}: {reply:?}");
        }
    }
    assert!(
        seen.try_recv().is_err(),
        "a hostile request reached the upstream"
    );
    // And the proxy still serves.
    let mut client = Client::connect(proxy).await;
    client.send(&request("GET", "/length", &[])).await;
    assert_eq!(client.read_reply(false).await.body, b"hello");
}

#[tokio::test]
async fn a_client_that_goes_away_mid_body_ends_the_upstream_exchange_on_both_paths() {
    let (backend, mut seen, _) = upstream().await;
    let (_dataplane, proxy) = proxy_to(backend).await;
    for hand_off in [false, true] {
        let mut client = Client::on_either_path(proxy, hand_off, &mut seen).await;
        client.send(&request("GET", "/pause", &[])).await;
        while !client.buffer.ends_with(b"hello") {
            assert!(client.fill().await, "closed mid-response");
        }
        seen.recv().await.unwrap();
        drop(client);
        assert!(upstream_let_go(&mut seen).await, "hand-off: {hand_off}");
    }
}

#[tokio::test]
async fn a_chunk_size_line_with_a_control_byte_is_not_passed_on() {
    let (backend, _seen, _) = upstream().await;
    let (_dataplane, proxy) = proxy_to(backend).await;
    let mut client = Client::connect(proxy).await;
    client.send(&request("GET", "/bad-chunk", &[])).await;
    let reply = client.read_reply(false).await;
    assert_eq!(reply.status, 502);
    assert!(!reply.raw_body.windows(2).any(|w| w == b";x"), "{reply:?}");
}

#[tokio::test]
async fn a_body_slower_than_the_header_timeout_is_waited_for() {
    const TIMEOUT: Duration = Duration::from_secs(1);
    let (backend, mut seen, _) = upstream().await;
    let options = crate::Options {
        client_header_timeout: TIMEOUT,
        ..Default::default()
    };
    let (_dataplane, proxy) =
        proxy_with_options(backend, "UPSTREAM_PROTOCOL_HTTP1", "", options).await;
    let mut client = Client::connect(proxy).await;
    let request = with_body("POST", "/length", &["X-Body: Slow"], "slow!");
    let (head, body) = request.split_at(request.len() - 5);
    client.send(head).await;
    // Past the longest wait the reaper allows a head (one and a half
    // timeouts): the request began with its head, as on hyper's path.
    tokio::time::sleep(TIMEOUT * 2 + TIMEOUT / 2).await;
    client.send(body).await;
    assert_eq!(client.read_reply(false).await.body, b"hello");
    let received = seen.recv().await.unwrap();
    assert!(received.contains("\r\nX-Body: Slow\r\n"), "{received}");
    assert!(received.ends_with("slow!"), "{received}");
}
