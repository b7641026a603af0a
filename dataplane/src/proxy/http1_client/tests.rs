//! The client against raw upstream sockets that answer byte for byte what
//! each case needs, including what a well-behaved server would not send.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::mpsc,
};
use tokio_util::either::Either;

use super::{Connection, ExchangeError, Http1Body, Outgoing};
use crate::proxy::{
    request_body::{Buffered, RequestBody},
    test_io::read_until,
    upstream::Http1Pool,
};

/// What the upstream received on one connection: each request's head and
/// body bytes as they came.
type Received = mpsc::UnboundedReceiver<Vec<u8>>;

/// An upstream that, per connection, reads a request head (and `body_len`
/// bytes after it) and writes the next reply of `replies`, each in the
/// pieces given, closing the connection after it when its flag says so.
async fn upstream(
    replies: Vec<(usize, Vec<&'static [u8]>, bool)>,
) -> (std::net::SocketAddr, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (seen_tx, seen) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut replies = replies.into_iter();
        while let Ok((mut stream, _)) = listener.accept().await {
            stream.set_nodelay(true).unwrap();
            let mut buffer = Vec::new();
            loop {
                let Some((body_len, pieces, close)) = replies.next() else {
                    // Nothing more to answer: hold the connection open until
                    // the client lets go of it.
                    while stream.read(&mut [0u8; 64]).await.is_ok_and(|n| n > 0) {}
                    return;
                };
                let Some(head_end) = read_until(&mut stream, &mut buffer, b"\r\n\r\n").await else {
                    break;
                };
                while buffer.len() < head_end + body_len {
                    let mut chunk = [0u8; 4096];
                    let n = stream.read(&mut chunk).await.unwrap();
                    assert!(n > 0, "request body cut short");
                    buffer.extend_from_slice(&chunk[..n]);
                }
                let request: Vec<u8> = buffer.drain(..head_end + body_len).collect();
                seen_tx.send(request).unwrap();
                for piece in pieces {
                    stream.write_all(piece).await.unwrap();
                    stream.flush().await.unwrap();
                }
                if close {
                    stream.shutdown().await.unwrap();
                    break;
                }
            }
        }
    });
    (address, seen)
}

async fn connect(address: std::net::SocketAddr) -> Connection {
    let stream = TcpStream::connect(address).await.unwrap();
    stream.set_nodelay(true).unwrap();
    Connection::new(Either::Left(stream))
}

fn get(method: Method) -> Request<RequestBody> {
    Request::builder()
        .method(method)
        .uri("/path?q=1")
        .header("host", "example.com")
        .body(RequestBody::Empty)
        .unwrap()
}

async fn exchange(
    connection: Connection,
    request: Request<RequestBody>,
    pool: &Arc<Http1Pool>,
) -> Result<http::Response<Http1Body>, ExchangeError> {
    exchange_outgoing(connection, Outgoing::new(request).unwrap(), pool).await
}

async fn exchange_outgoing(
    connection: Connection,
    outgoing: Outgoing,
    pool: &Arc<Http1Pool>,
) -> Result<http::Response<Http1Body>, ExchangeError> {
    tokio::time::timeout(
        Duration::from_secs(10),
        connection.exchange(outgoing, pool.clone()),
    )
    .await
    .expect("exchange timed out")
}

/// A POST with a body of known length, held whole.
fn post(path: &str, body: &'static [u8]) -> Request<RequestBody> {
    Request::post(path)
        .header("host", "example.com")
        .body(RequestBody::Buffered(Buffered::new(
            Bytes::from_static(body),
            None,
        )))
        .unwrap()
}

/// Starts `upstream(replies)` and sends `request` over a new connection to
/// it; returns the outcome, the pool the connection goes back to, and what
/// the upstream received.
async fn send_to(
    replies: Vec<(usize, Vec<&'static [u8]>, bool)>,
    request: Request<RequestBody>,
) -> (
    Result<http::Response<Http1Body>, ExchangeError>,
    Arc<Http1Pool>,
    Received,
) {
    let (address, seen) = upstream(replies).await;
    let pool = Arc::new(Http1Pool::default());
    let outcome = exchange(connect(address).await, request, &pool).await;
    (outcome, pool, seen)
}

/// `send_to` for an exchange that must succeed.
async fn fetch(
    replies: Vec<(usize, Vec<&'static [u8]>, bool)>,
    request: Request<RequestBody>,
) -> (http::Response<Http1Body>, Arc<Http1Pool>, Received) {
    let (outcome, pool, seen) = send_to(replies, request).await;
    (outcome.expect("the exchange failed"), pool, seen)
}

async fn read_all(body: Http1Body) -> Result<(Bytes, Option<http::HeaderMap>), std::io::Error> {
    let collected = body.collect().await?;
    let trailers = collected.trailers().cloned();
    Ok((collected.to_bytes(), trailers))
}

#[tokio::test]
async fn a_content_length_response_is_read_and_its_connection_pooled() {
    let reply: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-a: 1\r\n\r\nhello";
    let (response, pool, mut seen) = fetch(
        vec![(0, vec![reply], false), (0, vec![reply], false)],
        get(Method::GET),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-a"], "1");
    let (body, _) = read_all(response.into_body()).await.unwrap();
    assert_eq!(body, "hello");
    let request = String::from_utf8(seen.recv().await.unwrap()).unwrap();
    assert!(
        request.starts_with("GET /path?q=1 HTTP/1.1\r\nhost: example.com\r\n"),
        "{request}"
    );
    assert!(
        !request.contains("content-length"),
        "a GET without a body: {request}"
    );
    // The same connection carries the next exchange.
    let again = pool.checkout().expect("connection back in the pool");
    let response = exchange(again, get(Method::GET), &pool).await.unwrap();
    assert_eq!(read_all(response.into_body()).await.unwrap().0, "hello");
}

#[tokio::test]
async fn a_chunked_response_arriving_byte_by_byte_keeps_its_data_and_trailers() {
    let reply: &[u8] = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;ext=\"x\"\r\nhello\r\n6\r\n world\r\n0\r\nx-checksum: abc\r\n\r\n";
    let pieces: Vec<&'static [u8]> = reply.chunks(1).collect();
    let (response, pool, _) = fetch(vec![(0, pieces, false)], get(Method::GET)).await;
    let (body, trailers) = read_all(response.into_body()).await.unwrap();
    assert_eq!(body, "hello world");
    assert_eq!(trailers.expect("trailers")["x-checksum"], "abc");
    assert!(
        pool.checkout().is_some(),
        "a complete chunked body frees its connection"
    );
}

#[tokio::test]
async fn a_close_delimited_response_is_read_to_the_end_and_not_pooled() {
    let (response, pool, _) = fetch(
        vec![(0, vec![b"HTTP/1.1 200 OK\r\n\r\nuntil ", b"close"], true)],
        get(Method::GET),
    )
    .await;
    assert_eq!(
        read_all(response.into_body()).await.unwrap().0,
        "until close"
    );
    assert!(pool.checkout().is_none());
}

#[tokio::test]
async fn interim_answers_are_passed_over() {
    let (response, _pool, _) = fetch(
        vec![(
            0,
            vec![
                b"HTTP/1.1 100 Continue\r\n\r\n",
                b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\nHTTP/1.1 201 Created\r\n",
                b"content-length: 2\r\n\r\nok",
            ],
            false,
        )],
        get(Method::GET),
    )
    .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert!(response.headers().get("link").is_none());
    assert_eq!(read_all(response.into_body()).await.unwrap().0, "ok");
}

#[tokio::test]
async fn head_and_no_content_answers_have_no_body_whatever_their_length_says() {
    let (address, _seen) = upstream(vec![
        (
            0,
            vec![b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n"],
            false,
        ),
        (0, vec![b"HTTP/1.1 204 No Content\r\n\r\n"], false),
        (
            0,
            vec![b"HTTP/1.1 304 Not Modified\r\ncontent-length: 7\r\n\r\n"],
            false,
        ),
    ])
    .await;
    let pool = Arc::new(Http1Pool::default());
    let mut connection = connect(address).await;
    for method in [Method::HEAD, Method::GET, Method::GET] {
        let response = exchange(connection, get(method), &pool).await.unwrap();
        // Complete at once: the connection is back before the body is read.
        assert!(http_body::Body::is_end_stream(response.body()));
        connection = pool.checkout().expect("connection back in the pool");
        assert_eq!(read_all(response.into_body()).await.unwrap().0, "");
    }
}

#[tokio::test]
async fn a_request_body_of_known_size_is_framed_by_its_length() {
    let request = post("/upload", b"hello world");
    let (response, _pool, mut seen) = fetch(
        vec![(
            11,
            vec![b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"],
            false,
        )],
        request,
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let request = String::from_utf8(seen.recv().await.unwrap()).unwrap();
    assert!(request.contains("\r\ncontent-length: 11\r\n"), "{request}");
    assert!(request.ends_with("\r\n\r\nhello world"), "{request}");
}

#[tokio::test]
async fn a_post_without_a_body_says_so() {
    let (response, _pool, mut seen) = fetch(
        vec![(
            0,
            vec![b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"],
            false,
        )],
        get(Method::POST),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let request = String::from_utf8(seen.recv().await.unwrap()).unwrap();
    assert!(request.contains("\r\ncontent-length: 0\r\n"), "{request}");
}

#[tokio::test]
async fn an_idle_connection_the_upstream_closed_is_not_taken_from_the_pool() {
    let (response, pool, _) = fetch(
        vec![(
            0,
            vec![b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"],
            true,
        )],
        get(Method::GET),
    )
    .await;
    read_all(response.into_body()).await.unwrap();
    // The upstream closes after its answer; once the close has reached
    // this side, the pooled connection is passed over.
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match pool.checkout() {
                None => return,
                Some(connection) => {
                    pool.checkin(connection);
                    tokio::task::yield_now().await;
                }
            }
        }
    })
    .await
    .expect("the closed connection stayed usable");
}

#[tokio::test]
async fn a_response_with_keep_alive_declined_is_not_pooled() {
    let (address, _seen) = upstream(vec![
        (
            0,
            vec![b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok"],
            true,
        ),
        (
            0,
            vec![b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok"],
            true,
        ),
    ])
    .await;
    let pool = Arc::new(Http1Pool::default());
    for _ in 0..2 {
        let response = exchange(connect(address).await, get(Method::GET), &pool)
            .await
            .unwrap();
        assert_eq!(read_all(response.into_body()).await.unwrap().0, "ok");
        assert!(pool.checkout().is_none());
    }
}

/// The exchange's error, or the body's: where a broken response shows.
async fn failure(reply: Vec<&'static [u8]>) -> String {
    match send_to(vec![(0, reply, true)], get(Method::GET)).await.0 {
        Err(ExchangeError::Failed(error)) => format!("exchange: {error}"),
        Err(ExchangeError::Unsent(_, error)) => panic!("unsent: {error}"),
        Err(ExchangeError::Unanswered(_, error)) => format!("unanswered: {error}"),
        Ok(response) => match read_all(response.into_body()).await {
            Err(error) => format!("body: {error}"),
            Ok((body, _)) => format!("read as a whole response: {body:?}"),
        },
    }
}

#[tokio::test]
async fn broken_responses_are_errors_not_responses() {
    let huge: &'static [u8] = Box::leak(
        format!(
            "HTTP/1.1 200 OK\r\nx-big: {}\r\n\r\n",
            "a".repeat(70 * 1024)
        )
        .into_bytes()
        .into_boxed_slice(),
    );
    let cases: Vec<(&str, Vec<&'static [u8]>, &str)> = vec![
        (
            "garbage",
            vec![b"hello\r\n\r\n"],
            "exchange: bad response head",
        ),
        (
            "bad field",
            vec![b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n"],
            "exchange: bad response head",
        ),
        (
            "conflicting lengths",
            vec![b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nok"],
            "exchange: conflicting Content-Length",
        ),
        (
            "bad length",
            vec![b"HTTP/1.1 200 OK\r\ncontent-length: 2x\r\n\r\nok"],
            "exchange: bad Content-Length",
        ),
        (
            "head too large",
            vec![huge],
            "exchange: response head too large",
        ),
        (
            "closed before",
            vec![b"HTTP/1.1 200"],
            "exchange: connection closed before a response",
        ),
        (
            "101 unasked",
            vec![b"HTTP/1.1 101 Switching Protocols\r\n\r\n"],
            "exchange: 101",
        ),
        (
            "short body",
            vec![b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello"],
            "body: upstream closed",
        ),
        (
            "bad chunk size",
            vec![b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n"],
            "body: bad chunk size",
        ),
        (
            "chunk without CRLF",
            vec![b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nokX\r\n0\r\n\r\n"],
            "body: chunk data not followed by CRLF",
        ),
        (
            "chunked cut short",
            vec![b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhel"],
            "body: upstream closed",
        ),
    ];
    for (name, reply, expected) in cases {
        let got = failure(reply).await;
        assert!(got.starts_with(expected), "{name}: {got}");
    }
}

#[tokio::test]
async fn an_idempotent_request_closed_on_unanswered_comes_back_whole_and_a_post_does_not() {
    // Each upstream reads the request, answers nothing and closes.
    let unanswered = match send_to(vec![(0, vec![], true)], get(Method::GET)).await.0 {
        Err(ExchangeError::Unanswered(unanswered, _)) => unanswered,
        other => panic!("expected the GET back, got {other:?}"),
    };
    let expected = Outgoing::new(get(Method::GET)).unwrap();
    assert_eq!(
        unanswered.out, expected.out,
        "the request came back changed"
    );

    let post = post("/orders", b"order");
    match send_to(vec![(5, vec![], true)], post).await.0 {
        Err(ExchangeError::Failed(error)) => {
            assert_eq!(error.to_string(), "connection closed before a response");
        }
        other => panic!("a POST must not come back to be sent again, got {other:?}"),
    }
}

#[tokio::test]
async fn a_request_whose_first_write_fails_comes_back_whole_for_another_connection() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (reset_tx, mut reset) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        // The first connection is reset at once, as an upstream that timed
        // it out would; the second answers with what it received.
        let (stream, _) = listener.accept().await.unwrap();
        stream.set_zero_linger().unwrap();
        drop(stream);
        reset_tx.send(()).unwrap();
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut buffer = Vec::new();
        let end = read_until(&mut stream, &mut buffer, b"\r\n\r\n")
            .await
            .unwrap();
        while buffer.len() < end + 11 {
            let mut chunk = [0u8; 64];
            let n = stream.read(&mut chunk).await.unwrap();
            buffer.extend_from_slice(&chunk[..n]);
        }
        let reply = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n",
            buffer.len()
        );
        stream.write_all(reply.as_bytes()).await.unwrap();
        stream.write_all(&buffer).await.unwrap();
    });
    let doomed = connect(address).await;
    reset.recv().await.unwrap();
    let pool = Arc::new(Http1Pool::default());
    let request = post("/upload", b"hello world");
    let outgoing = Outgoing::new(request).unwrap();
    let unsent = match doomed.exchange(outgoing, pool.clone()).await {
        Err(ExchangeError::Unsent(unsent, _)) => unsent,
        other => panic!("expected the request back, got {other:?}"),
    };
    let response = exchange_outgoing(connect(address).await, *unsent, &pool)
        .await
        .unwrap();
    let (echoed, _) = read_all(response.into_body()).await.unwrap();
    let echoed = String::from_utf8(echoed.to_vec()).unwrap();
    assert!(echoed.starts_with("POST /upload HTTP/1.1\r\n"), "{echoed}");
    assert!(echoed.ends_with("\r\n\r\nhello world"), "{echoed}");
}

#[tokio::test]
async fn a_response_framed_both_ways_is_read_chunked_and_its_connection_closed() {
    let (response, pool, _) = fetch(vec![(
        0,
        vec![b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"],
        false,
    )], get(Method::GET)).await;
    // Transfer-Encoding overrides Content-Length, which is not forwarded.
    assert!(response.headers().get("content-length").is_none());
    assert_eq!(read_all(response.into_body()).await.unwrap().0, "hello");
    assert!(
        pool.checkout().is_none(),
        "an ambiguous message's connection was kept"
    );
}

#[tokio::test]
async fn a_large_body_is_read_whole_and_its_connection_pooled_without_the_large_buffer() {
    let body: &'static [u8] = Box::leak(vec![b'x'; 1 << 20].into_boxed_slice());
    let (response, pool, _) = fetch(
        vec![(
            0,
            vec![b"HTTP/1.1 200 OK\r\ncontent-length: 1048576\r\n\r\n", body],
            false,
        )],
        get(Method::GET),
    )
    .await;
    let (read, _) = read_all(response.into_body()).await.unwrap();
    assert_eq!(read.len(), 1 << 20);
    assert!(read.iter().all(|b| *b == b'x'));
    let idle = pool.checkout().expect("connection back in the pool");
    assert!(
        idle.read.capacity() <= super::READ_CHUNK,
        "an idle connection kept a {}-byte buffer",
        idle.read.capacity()
    );
}
