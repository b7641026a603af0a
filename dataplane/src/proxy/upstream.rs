//! Pooled upstream connections, per endpoint address.
//!
//! HTTP/1.1: a bounded lock-free queue of idle keep-alive connections per
//! endpoint. A request takes one (or connects) and drives the exchange
//! itself (see `http1_client`); the response body hands the connection back
//! once the response has been read to its end. A connection whose response
//! was not read to its end is dropped, as its byte stream is no longer at a
//! message boundary.
//!
//! h2c: one multiplexed HTTP/2 connection per endpoint, so the request can
//! carry the client's `:authority` while the socket goes to the endpoint
//! (RFC 9113 §8.3.1).
//!
//! The per-endpoint state is keyed by address and outlives table swaps; an
//! apply drops the state of addresses no table endpoint has any more.

use std::{
    collections::{HashMap, HashSet},
    hash::{BuildHasherDefault, Hasher},
    net::SocketAddr,
    sync::Arc,
};

use arc_swap::{ArcSwap, ArcSwapOption};
use crossbeam_queue::ArrayQueue;
use hyper::{
    Request, Response,
    body::Incoming,
    client::conn::{http1, http2},
};

use super::{
    http1_client::{self, ExchangeError, Http1Body, Outgoing, SendError},
    request_body::RequestBody,
};
use crate::table::UpstreamTls;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio_util::either::Either;

/// Idle HTTP/1.1 connections kept per endpoint; more are closed when their
/// response ends. Above the connection counts a proxy in front of one
/// upstream sees in practice, without letting a burst pin sockets forever.
const MAX_IDLE_PER_ENDPOINT: usize = 512;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connecting to {0} failed: {1}")]
    Connect(SocketAddr, String),
    #[error("upstream request failed: {0}")]
    Request(String),
    /// BackendTLSPolicy leaves nothing to verify the backend with: no
    /// connection is attempted (never clear text), and none would succeed.
    #[error("no TLS to {0}: {1}")]
    Unusable(SocketAddr, String),
    /// `timeouts.backendRequest` expired before the response head.
    #[error("no response within the backend request timeout")]
    TimedOut,
}

/// Socket addresses are already well spread in their low bits (port, last
/// address byte); SipHash's DoS resistance buys nothing for keys that come
/// from the table rather than from clients, and costs on every request.
#[derive(Default)]
struct AddrHasher(u64);

impl Hasher for AddrHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.write_u64(u64::from(*byte));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.write_u64(u64::from(n));
    }

    fn write_u16(&mut self, n: u16) {
        self.write_u64(u64::from(n));
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

/// What a pooled connection is to: an endpoint, and the TLS settings it was
/// made with (0: clear text), so that clusters verifying the same endpoint
/// differently never share a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct PoolKey {
    address: SocketAddr,
    tls: u64,
}

impl PoolKey {
    fn new(address: SocketAddr, tls: Option<&UpstreamTls>) -> Self {
        Self {
            address,
            tls: tls.map_or(0, UpstreamTls::fingerprint),
        }
    }
}

type AddrMap<V> = HashMap<PoolKey, Arc<V>, BuildHasherDefault<AddrHasher>>;

#[derive(Default)]
pub struct Upstream {
    http1: ArcSwap<AddrMap<Http1Pool>>,
    h2: ArcSwap<AddrMap<H2Slot>>,
}

/// A connection to an endpoint, in clear text or over TLS (boxed: the TLS
/// state is over a kilobyte, and a pooled connection travels by value).
pub(super) type UpstreamIo = Either<TcpStream, Box<tokio_rustls::client::TlsStream<TcpStream>>>;

pub struct Http1Pool {
    idle: ArrayQueue<http1_client::Connection>,
}

impl Default for Http1Pool {
    fn default() -> Self {
        Self {
            idle: ArrayQueue::new(MAX_IDLE_PER_ENDPOINT),
        }
    }
}

impl Http1Pool {
    /// Keeps a connection whose exchange has ended for the next request;
    /// a full pool closes it instead.
    pub fn checkin(&self, connection: http1_client::Connection) {
        let _ = self.idle.push(connection);
    }

    /// An idle connection the upstream has not closed.
    pub(super) fn checkout(&self) -> Option<http1_client::Connection> {
        while let Some(mut connection) = self.idle.pop() {
            if connection.is_usable() {
                return Some(connection);
            }
        }
        None
    }
}

#[derive(Default)]
struct H2Slot {
    sender: ArcSwapOption<http2::SendRequest<RequestBody>>,
    /// Taken only when no live connection exists, so one request connects
    /// and the others wait for it instead of opening their own.
    connecting: tokio::sync::Mutex<()>,
}

impl H2Slot {
    fn live(&self) -> Option<http2::SendRequest<RequestBody>> {
        self.sender
            .load()
            .as_ref()
            .filter(|s| !s.is_closed())
            .map(|s| (**s).clone())
    }
}

impl Upstream {
    /// Sends an HTTP/1.1 request (origin-form URI, Host set) to `address`
    /// over a pooled connection or a new one. The response body gives the
    /// connection back once it has been read to its end.
    pub fn send_http1<'a>(
        &'a self,
        address: SocketAddr,
        tls: Option<&'a UpstreamTls>,
        request: Request<RequestBody>,
    ) -> impl Future<Output = Result<Response<Http1Body>, UpstreamError>> + 'a {
        // Encoded now, so that the futures below carry its bytes rather
        // than the request.
        let outgoing = Outgoing::new(request);
        // An async block, not an async fn: an async fn keeps each argument
        // twice (see `Dataplane::handle`).
        async move {
            let mut outgoing =
                outgoing.map_err(|error| UpstreamError::Request(error.to_string()))?;
            let pool = slot(&self.http1, PoolKey::new(address, tls));
            // After a resend, only a new connection: an idle one might have
            // been closed as well, and the request goes again only once.
            let mut resent = false;
            loop {
                let pooled = if resent { None } else { pool.checkout() };
                let (connection, reused) = match pooled {
                    Some(connection) => (connection, true),
                    // Boxed: the connect and handshake state would otherwise
                    // widen every request's future, which is moved whole on
                    // each request, for a path taken once per connection.
                    None => (Box::pin(connect_http1(address, tls)).await?, false),
                };
                match connection.exchange(outgoing, pool.clone()).await {
                    Ok(response) => return Ok(response),
                    // The pooled connection was closed by the upstream (its
                    // keep-alive timeout, say) as the request went out:
                    // nothing reached the upstream, so another connection
                    // may carry it.
                    Err(ExchangeError::Unsent(unsent, _)) if reused => outgoing = *unsent,
                    // A fresh connection that failed before the request
                    // went out: a connection failure (retried as one).
                    Err(ExchangeError::Unsent(_, error)) => {
                        return Err(UpstreamError::Connect(address, error.to_string()));
                    }
                    // The upstream closed a pooled connection just as the
                    // request arrived, and answered nothing: an idempotent
                    // request goes again, over a new connection.
                    Err(ExchangeError::Unanswered(unanswered, error)) if reused => {
                        tracing::debug!(%address, %error, "resending over a new connection");
                        outgoing = *unanswered;
                        resent = true;
                    }
                    Err(ExchangeError::Unanswered(_, error)) => {
                        return Err(UpstreamError::Request(error.to_string()));
                    }
                    Err(ExchangeError::Failed(error)) => {
                        return Err(UpstreamError::Request(error.to_string()));
                    }
                }
            }
        }
    }

    /// Sends a bodiless HTTP/1.1 request already encoded as `head` (see
    /// `passthrough`) over a pooled connection or a new one, with the
    /// resend rules of `send_http1`; returns the connection once the answer
    /// has begun, and the pool it goes back to.
    pub async fn send_head(
        &self,
        address: SocketAddr,
        tls: Option<&UpstreamTls>,
        head: &[u8],
        idempotent: bool,
    ) -> Result<(http1_client::Connection, Arc<Http1Pool>), UpstreamError> {
        let pool = slot(&self.http1, PoolKey::new(address, tls));
        let mut resent = false;
        loop {
            let pooled = if resent { None } else { pool.checkout() };
            let (mut connection, reused) = match pooled {
                Some(connection) => (connection, true),
                None => (Box::pin(connect_http1(address, tls)).await?, false),
            };
            match connection.send_head(head, idempotent).await {
                Ok(()) => return Ok((connection, pool)),
                Err(SendError::Unsent(_)) if reused => {}
                Err(SendError::Unsent(error)) => {
                    return Err(UpstreamError::Connect(address, error.to_string()));
                }
                Err(SendError::Unanswered(error)) if reused => {
                    tracing::debug!(%address, %error, "resending over a new connection");
                    resent = true;
                }
                Err(SendError::Unanswered(error) | SendError::Failed(error)) => {
                    return Err(UpstreamError::Request(error.to_string()));
                }
            }
        }
    }

    /// Sends an HTTP/2 request to `address` over its shared connection.
    pub async fn send_h2c(
        &self,
        address: SocketAddr,
        tls: Option<&UpstreamTls>,
        request: Request<RequestBody>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let mut sender = self.h2_sender(address, tls).await?;
        // Not ready (the connection is gone or refuses new streams):
        // nothing was sent, a connection failure.
        sender
            .ready()
            .await
            .map_err(|e| UpstreamError::Connect(address, e.to_string()))?;
        sender
            .send_request(request)
            .await
            .map_err(|e| UpstreamError::Request(e.to_string()))
    }

    /// Sends a request that asks to switch protocols (a WebSocket upgrade)
    /// over a connection of its own: once switched, the connection belongs
    /// to the tunnel, never to the pool.
    pub async fn send_upgrade(
        &self,
        address: SocketAddr,
        tls: Option<&UpstreamTls>,
        request: Request<RequestBody>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let stream = connect_io(address, tls).await?;
        let (mut sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| UpstreamError::Connect(address, e.to_string()))?;
        tokio::spawn(async move {
            if let Err(error) = connection.with_upgrades().await {
                tracing::debug!(%address, %error, "upgraded upstream connection ended");
            }
        });
        sender
            .send_request(request)
            .await
            .map_err(|e| UpstreamError::Request(error_detail(&e)))
    }

    /// Closes the idle HTTP/1.1 connections their upstreams have closed.
    /// Checkout passes over such a connection anyway; this frees it when no
    /// request comes to do that. Each connection is out of its queue only
    /// while it is checked, so requests meanwhile find the others.
    pub fn close_idle_closed(&self) {
        for pool in self.http1.load().values() {
            for _ in 0..pool.idle.len() {
                let Some(mut connection) = pool.idle.pop() else {
                    break;
                };
                if connection.is_usable() {
                    pool.checkin(connection);
                }
            }
        }
    }

    /// Forgets the connections of endpoints no longer in `kept`. In-flight
    /// requests keep theirs until they end.
    pub fn retain(&self, kept: &HashSet<SocketAddr>) {
        fn prune<V>(map: &ArcSwap<AddrMap<V>>, kept: &HashSet<SocketAddr>) {
            if map.load().keys().all(|k| kept.contains(&k.address)) {
                return;
            }
            map.rcu(|slots| {
                let mut slots = AddrMap::clone(slots);
                slots.retain(|k, _| kept.contains(&k.address));
                slots
            });
        }
        prune(&self.http1, kept);
        prune(&self.h2, kept);
    }

    async fn h2_sender(
        &self,
        address: SocketAddr,
        tls: Option<&UpstreamTls>,
    ) -> Result<http2::SendRequest<RequestBody>, UpstreamError> {
        let slot = slot(&self.h2, PoolKey::new(address, tls));
        match slot.live() {
            Some(sender) => Ok(sender),
            // Boxed for the reason given in `send_http1`.
            None => Box::pin(h2_connect(address, tls, &slot)).await,
        }
    }
}

/// Connects the h2c connection of `slot`, unless another request just did.
async fn h2_connect(
    address: SocketAddr,
    tls: Option<&UpstreamTls>,
    slot: &H2Slot,
) -> Result<http2::SendRequest<RequestBody>, UpstreamError> {
    let _connecting = slot.connecting.lock().await;
    if let Some(sender) = slot.live() {
        return Ok(sender);
    }
    let stream = connect_io(address, tls).await?;
    let (sender, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .map_err(|e| UpstreamError::Connect(address, e.to_string()))?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%address, %error, "h2c upstream connection ended");
        }
    });
    slot.sender.store(Some(Arc::new(sender.clone())));
    Ok(sender)
}

/// Longest a TCP connect to an endpoint may take (then 502).
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

async fn connect_http1(
    address: SocketAddr,
    tls: Option<&UpstreamTls>,
) -> Result<http1_client::Connection, UpstreamError> {
    Ok(http1_client::Connection::new(
        connect_io(address, tls).await?,
    ))
}

/// A TCP connection, with a TLS handshake on top when the cluster asks.
async fn connect_io(
    address: SocketAddr,
    tls: Option<&UpstreamTls>,
) -> Result<UpstreamIo, UpstreamError> {
    let stream = connect_tcp(address).await?;
    match tls {
        None => Ok(Either::Left(stream)),
        Some(UpstreamTls::Unusable(why)) => Err(UpstreamError::Unusable(address, why.clone())),
        Some(UpstreamTls::Ready {
            config,
            server_name,
            ..
        }) => tokio_rustls::TlsConnector::from(config.clone())
            .connect(server_name.clone(), stream)
            .await
            .map(|stream| Either::Right(Box::new(stream)))
            .map_err(|e| UpstreamError::Connect(address, format!("TLS: {e}"))),
    }
}

async fn connect_tcp(address: SocketAddr) -> Result<TcpStream, UpstreamError> {
    let connect_error = |e: std::io::Error| UpstreamError::Connect(address, e.to_string());
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address))
        .await
        .map_err(|_| UpstreamError::Connect(address, "timed out".into()))?
        .map_err(connect_error)?;
    super::tcp::tune(&stream).map_err(connect_error)?;
    Ok(stream)
}

/// The state for `address`, created on first use.
fn slot<V: Default>(map: &ArcSwap<AddrMap<V>>, key: PoolKey) -> Arc<V> {
    if let Some(slot) = map.load().get(&key) {
        return slot.clone();
    }
    map.rcu(|slots| {
        let mut slots = AddrMap::clone(slots);
        slots.entry(key).or_default();
        slots
    });
    map.load().get(&key).cloned().unwrap_or_default()
}

/// The innermost cause, which names what went wrong ("connection reset")
/// rather than hyper's summary of it.
fn error_detail(error: &hyper::Error) -> String {
    std::error::Error::source(error).map_or_else(|| error.to_string(), |s| s.to_string())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpListener,
    };

    use super::*;
    use crate::proxy::test_io::{proxy_over, proxy_to, read_until};

    /// A raw HTTP/1.1 upstream answering each request with `reply`, counting
    /// the connections it accepted.
    async fn upstream(reply: &'static [u8]) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(async move {
                    let mut buffer = vec![0u8; 4096];
                    let mut seen = Vec::new();
                    loop {
                        let Ok(n @ 1..) = stream.read(&mut buffer).await else {
                            return;
                        };
                        seen.extend_from_slice(&buffer[..n]);
                        while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                            seen.drain(..end + 4);
                            if stream.write_all(reply).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        (address, accepted)
    }

    /// Sends `count` requests one after the other over one client
    /// connection; returns their bodies.
    async fn get_sequentially(proxy: std::net::SocketAddr, count: usize) -> Vec<String> {
        let stream = TcpStream::connect(proxy).await.unwrap();
        let (mut sender, connection) = http1::handshake(TokioIo::new(stream)).await.unwrap();
        tokio::spawn(connection);
        let mut bodies = Vec::new();
        for _ in 0..count {
            sender.ready().await.unwrap();
            let request = Request::get("/")
                .header("host", "example.com")
                .body(http_body_util::Empty::<bytes::Bytes>::new())
                .unwrap();
            let response = sender.send_request(request).await.unwrap();
            assert_eq!(response.status(), 200);
            let body = http_body_util::BodyExt::collect(response.into_body())
                .await
                .unwrap()
                .to_bytes();
            bodies.push(String::from_utf8(body.to_vec()).unwrap());
        }
        bodies
    }

    #[tokio::test]
    async fn a_finished_response_returns_its_connection_for_reuse() {
        let (backend, accepted) = upstream(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
        let (_dataplane, proxy) = proxy_to(backend).await;
        assert_eq!(get_sequentially(proxy, 5).await, ["ok"; 5]);
        assert_eq!(accepted.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn a_connection_the_upstream_closes_is_not_reused() {
        let (backend, accepted) =
            upstream(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok").await;
        let (_dataplane, proxy) = proxy_to(backend).await;
        assert_eq!(get_sequentially(proxy, 3).await, ["ok"; 3]);
        assert_eq!(accepted.load(Ordering::Relaxed), 3);
    }

    #[tokio::test]
    async fn shutdown_closes_a_connection_that_sent_nothing_yet() {
        let (backend, _) = upstream(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
        let (dataplane, proxy) = proxy_to(backend).await;
        let mut silent = TcpStream::connect(proxy).await.unwrap();
        // A served request proves the accept loop has taken connections
        // accepted before it (the kernel queues them in order).
        assert_eq!(get_sequentially(proxy, 1).await, ["ok"]);
        tokio::time::timeout(std::time::Duration::from_secs(5), dataplane.shutdown())
            .await
            .expect("shutdown waited for a connection that never sent a request");
        let mut byte = [0u8; 1];
        assert_eq!(silent.read(&mut byte).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_request_body_of_unknown_length_is_streamed_chunked() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let backend = listener.local_addr().unwrap();
        let (first_chunk_seen, mut first_chunk) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut seen = Vec::new();
            let head = read_until(&mut stream, &mut seen, b"\r\n\r\n")
                .await
                .expect("closed early");
            let head_text = String::from_utf8_lossy(&seen[..head]).to_lowercase();
            assert!(
                head_text.contains("transfer-encoding: chunked"),
                "{head_text}"
            );
            read_until(&mut stream, &mut seen, b"hello\r\n")
                .await
                .expect("closed early");
            // The first chunk arrived before the client sent the rest.
            first_chunk_seen.send(()).await.unwrap();
            let end = read_until(&mut stream, &mut seen, b"0\r\n\r\n")
                .await
                .expect("closed early");
            let body = String::from_utf8_lossy(&seen[head..end]).into_owned();
            let reply = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(reply.as_bytes()).await.unwrap();
        });
        let (_dataplane, proxy) = proxy_to(backend).await;
        let mut client = TcpStream::connect(proxy).await.unwrap();
        client
            .write_all(b"POST / HTTP/1.1\r\nhost: example.com\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
            .await
            .unwrap();
        first_chunk
            .recv()
            .await
            .expect("the upstream saw the first chunk");
        client.write_all(b"6\r\n world\r\n0\r\n\r\n").await.unwrap();
        let mut answer = Vec::new();
        let head = read_until(&mut client, &mut answer, b"\r\n\r\n")
            .await
            .expect("closed early");
        let expected = "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
        while answer.len() < head + expected.len() {
            let mut chunk = [0u8; 4096];
            let n = client.read(&mut chunk).await.unwrap();
            assert!(n > 0);
            answer.extend_from_slice(&chunk[..n]);
        }
        assert!(answer.starts_with(b"HTTP/1.1 200 OK\r\n"));
        assert_eq!(String::from_utf8_lossy(&answer[head..]), expected);
    }

    #[tokio::test]
    async fn an_answer_before_the_request_body_ends_reaches_the_client() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let backend = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(async move {
                    let mut seen = Vec::new();
                    read_until(&mut stream, &mut seen, b"\r\n\r\n")
                        .await
                        .expect("closed early");
                    // Refuses the upload at its head, as a size check would.
                    let _ = stream
                        .write_all(
                            b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 3\r\n\r\nbig",
                        )
                        .await;
                    // Holds the connection open without reading further.
                    let _ = stream.read(&mut [0u8; 1]).await;
                    std::future::pending::<()>().await;
                });
            }
        });
        let (_dataplane, proxy) = proxy_to(backend).await;
        let mut client = TcpStream::connect(proxy).await.unwrap();
        client
            .write_all(b"POST / HTTP/1.1\r\nhost: example.com\r\ncontent-length: 1000000\r\n\r\nfirst bytes")
            .await
            .unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(std::time::Duration::from_secs(10), async {
            let head = read_until(&mut client, &mut answer, b"\r\n\r\n")
                .await
                .expect("closed early");
            assert!(
                answer.starts_with(b"HTTP/1.1 413 "),
                "{:?}",
                String::from_utf8_lossy(&answer)
            );
            read_until(&mut client, &mut answer, b"big")
                .await
                .expect("closed early");
            head
        })
        .await
        .expect("the early answer did not reach the client");
        // The connection stopped mid-request: the next request gets another.
        let mut next = TcpStream::connect(proxy).await.unwrap();
        next.write_all(b"GET / HTTP/1.1\r\nhost: example.com\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        read_until(&mut next, &mut answer, b"big")
            .await
            .expect("closed early");
        assert_eq!(accepted.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn a_client_expecting_100_continue_gets_it_and_its_body_through() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let backend = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut seen = Vec::new();
            let head = read_until(&mut stream, &mut seen, b"\r\n\r\n")
                .await
                .expect("closed early");
            // An upstream that honours the expectation answers 100 too.
            stream
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await
                .unwrap();
            let end = read_until(&mut stream, &mut seen, b"hello")
                .await
                .expect("closed early");
            let reply = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{}",
                end - head,
                String::from_utf8_lossy(&seen[head..end])
            );
            stream.write_all(reply.as_bytes()).await.unwrap();
        });
        let (_dataplane, proxy) = proxy_to(backend).await;
        let mut client = TcpStream::connect(proxy).await.unwrap();
        client
            .write_all(b"POST / HTTP/1.1\r\nhost: example.com\r\ncontent-length: 5\r\nexpect: 100-continue\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(std::time::Duration::from_secs(10), async {
            read_until(&mut client, &mut answer, b"\r\n\r\n")
                .await
                .expect("closed early");
            assert!(
                answer.starts_with(b"HTTP/1.1 100 Continue\r\n"),
                "{:?}",
                String::from_utf8_lossy(&answer)
            );
            client.write_all(b"hello").await.unwrap();
            read_until(&mut client, &mut answer, b"hello")
                .await
                .expect("closed early");
        })
        .await
        .expect("the body did not get through");
        let text = String::from_utf8_lossy(&answer);
        assert!(text.contains("HTTP/1.1 200 OK\r\n"), "{text}");
        assert_eq!(text.matches("100 Continue").count(), 1, "{text}");
    }

    /// An upstream whose first connection answers one request and is then
    /// closed as the next request arrives, before any answer: after reading
    /// it, or (`unread`) without, which resets the connection. Later
    /// connections answer every request. Counts connections and requests.
    async fn drops_its_first_connection_after_one_answer(
        unread: bool,
    ) -> (std::net::SocketAddr, Arc<AtomicUsize>, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (connections, requests) =
            (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (counted_connections, counted_requests) = (connections.clone(), requests.clone());
        tokio::spawn(async move {
            let (mut first, _) = listener.accept().await.unwrap();
            counted_connections.fetch_add(1, Ordering::Relaxed);
            let mut buffer = Vec::new();
            let end = read_until(&mut first, &mut buffer, b"\r\n\r\n")
                .await
                .unwrap();
            buffer.drain(..end);
            counted_requests.fetch_add(1, Ordering::Relaxed);
            first
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfirst")
                .await
                .unwrap();
            if unread {
                first.readable().await.unwrap();
            } else {
                read_until(&mut first, &mut buffer, b"\r\n\r\n")
                    .await
                    .unwrap();
            }
            counted_requests.fetch_add(1, Ordering::Relaxed);
            drop(first);
            while let Ok((mut stream, _)) = listener.accept().await {
                counted_connections.fetch_add(1, Ordering::Relaxed);
                let counted_requests = counted_requests.clone();
                tokio::spawn(async move {
                    let mut buffer = Vec::new();
                    while let Some(end) = read_until(&mut stream, &mut buffer, b"\r\n\r\n").await {
                        buffer.drain(..end);
                        counted_requests.fetch_add(1, Ordering::Relaxed);
                        let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nagain";
                        if stream.write_all(reply).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (address, connections, requests)
    }

    #[tokio::test]
    async fn an_idempotent_request_a_pooled_connection_drops_unanswered_goes_again_on_a_new_one() {
        for unread in [false, true] {
            let (backend, connections, requests) =
                drops_its_first_connection_after_one_answer(unread).await;
            let (_dataplane, proxy) = proxy_to(backend).await;
            assert_eq!(
                get_sequentially(proxy, 2).await,
                ["first", "again"],
                "unread: {unread}"
            );
            assert_eq!(connections.load(Ordering::Relaxed), 2, "unread: {unread}");
            assert_eq!(requests.load(Ordering::Relaxed), 3, "unread: {unread}");
        }
    }

    #[tokio::test]
    async fn a_post_a_pooled_connection_drops_unanswered_is_not_sent_again() {
        let (backend, connections, requests) =
            drops_its_first_connection_after_one_answer(false).await;
        let (_dataplane, proxy) = proxy_to(backend).await;
        assert_eq!(get_sequentially(proxy, 1).await, ["first"]);
        let stream = TcpStream::connect(proxy).await.unwrap();
        let (mut sender, connection) = http1::handshake(TokioIo::new(stream)).await.unwrap();
        tokio::spawn(connection);
        let post = Request::post("/orders")
            .header("host", "example.com")
            .body(http_body_util::Full::new(bytes::Bytes::from_static(
                b"order",
            )))
            .unwrap();
        let response = sender.send_request(post).await.unwrap();
        assert_eq!(response.status(), 502);
        assert_eq!(
            connections.load(Ordering::Relaxed),
            1,
            "the POST went again"
        );
        assert_eq!(requests.load(Ordering::Relaxed), 2);
    }

    /// An h2c upstream that answers each request with the number of its
    /// connection, and shuts its first connection down gracefully (GOAWAY)
    /// after the first answer, as a server being replaced does.
    async fn h2c_upstream_going_away() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = connections.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let number = counted.fetch_add(1, Ordering::Relaxed) + 1;
                tokio::spawn(async move {
                    let answered = Arc::new(tokio::sync::Notify::new());
                    let notify = answered.clone();
                    let service = hyper::service::service_fn(move |_request| {
                        notify.notify_one();
                        async move {
                            Ok::<_, std::convert::Infallible>(Response::new(
                                http_body_util::Full::new(bytes::Bytes::from(format!(
                                    "connection {number}"
                                ))),
                            ))
                        }
                    });
                    let connection = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service);
                    tokio::pin!(connection);
                    if number == 1 {
                        tokio::select! {
                            _ = connection.as_mut() => return,
                            _ = answered.notified() => {}
                        }
                        connection.as_mut().graceful_shutdown();
                    }
                    let _ = connection.await;
                });
            }
        });
        (address, connections)
    }

    #[tokio::test]
    async fn requests_after_an_h2c_upstream_goes_away_take_a_new_connection() {
        let (backend, connections) = h2c_upstream_going_away().await;
        let (_dataplane, proxy) = proxy_over(backend, "UPSTREAM_PROTOCOL_H2C").await;
        let bodies = get_sequentially(proxy, 4).await;
        assert_eq!(bodies[0], "connection 1");
        assert_eq!(bodies[3], "connection 2", "{bodies:?}");
        assert_eq!(connections.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn idle_connections_their_upstream_closed_are_closed_without_a_request() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (close_tx, mut close) = tokio::sync::mpsc::unbounded_channel::<()>();
        tokio::spawn(async move {
            // The first connection is closed on a signal, as an upstream's
            // keep-alive timeout would; the second stays open.
            let (first, _) = listener.accept().await.unwrap();
            let (_second, _) = listener.accept().await.unwrap();
            close.recv().await;
            drop(first);
            std::future::pending::<()>().await;
        });
        let upstream = Upstream::default();
        let pool = slot(&upstream.http1, PoolKey::new(address, None));
        for _ in 0..2 {
            pool.checkin(connect_http1(address, None).await.unwrap());
        }
        upstream.close_idle_closed();
        assert_eq!(pool.idle.len(), 2, "open connections were closed");
        close_tx.send(()).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(10), async {
            while pool.idle.len() > 1 {
                tokio::task::yield_now().await;
                upstream.close_idle_closed();
            }
        })
        .await
        .expect("the closed connection stayed in the pool");
        assert_eq!(pool.idle.len(), 1);
        assert!(
            pool.checkout().is_some(),
            "the open connection is still usable"
        );
    }
}
