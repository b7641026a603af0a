//! Listening sockets, reconciled with each table.
//!
//! Guarantees: sockets for new ports are bound before the table is swapped
//! (a failure leaves everything as it was); a port present in both tables
//! keeps its accept loop, so its open connections survive the swap; a
//! removed port stops accepting at once and its connections close after
//! their in-flight requests finish.

use std::{collections::HashMap, io, net::SocketAddr, pin::Pin, sync::Arc, time::Duration};

use hyper::{
    server::conn::{http1, http2},
    service::service_fn,
};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::{
        conn::auto,
        graceful::{GracefulShutdown, Watcher},
    },
};
use tokio::{
    io::AsyncWriteExt,
    net::{TcpListener, TcpSocket, TcpStream},
    sync::{oneshot, watch},
    task::JoinHandle,
};

use super::{
    Connection, Dataplane,
    activity::{Activity, CountedBody, Reaper},
    passthrough::{self, Outcome, Rewind},
    proxy_protocol, tcp,
};
use crate::table::PortKey;

/// Longest a client may take to complete a TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Pending connections the kernel may queue per port.
const BACKLOG: u32 = 1024;

/// What an HTTP/2 client may send on one stream, then on the whole
/// connection, before the data plane has passed it on. hyper's default
/// makes them equal (1 MiB), so one stream whose upstream stops reading
/// would take the whole connection's window and hold up every other
/// stream's body, which `--client-body-timeout` would then blame on their
/// clients. Four streams' worth keeps the others moving, and bounds what a
/// connection buffers at 4 MiB.
const H2_STREAM_WINDOW: u32 = 1024 * 1024;
const H2_CONNECTION_WINDOW: u32 = 4 * H2_STREAM_WINDOW;

#[derive(Debug, thiserror::Error)]
#[error("binding {port} failed: {source}")]
pub struct BindError {
    pub port: PortKey,
    pub source: io::Error,
}

#[derive(Default)]
pub(crate) struct Listeners {
    running: HashMap<PortKey, Running>,
}

struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Listeners {
    /// Binds every port of `wanted` that is not running yet, its
    /// connections' sends limited to `send_timeout` (see
    /// `tcp::limit_sends`). On error the sockets bound so far are dropped,
    /// which closes them.
    pub async fn bind_missing(
        &self,
        wanted: &[PortKey],
        send_timeout: Duration,
    ) -> Result<Vec<(PortKey, TcpListener)>, BindError> {
        let mut bound = Vec::new();
        for port in wanted.iter().filter(|p| !self.running.contains_key(p)) {
            let listener = bind(port.socket_addr(), send_timeout).map_err(|source| BindError {
                port: *port,
                source,
            })?;
            bound.push((*port, listener));
        }
        Ok(bound)
    }

    pub fn start(&mut self, bound: Vec<(PortKey, TcpListener)>, dataplane: &Arc<Dataplane>) {
        for (port, listener) in bound {
            let (stop, stopped) = oneshot::channel();
            let task = tokio::spawn(accept_loop(listener, port, dataplane.clone(), stopped));
            tracing::info!(%port, "listening");
            self.running.insert(port, Running { stop, task });
        }
    }

    /// Stops accepting on ports not in `kept`; their connections drain in
    /// the background.
    pub fn stop_removed(&mut self, kept: &[PortKey]) {
        let removed: Vec<PortKey> = self
            .running
            .keys()
            .filter(|p| !kept.contains(p))
            .copied()
            .collect();
        for port in removed {
            if let Some(running) = self.running.remove(&port) {
                tracing::info!(%port, "no longer listening");
                let _ = running.stop.send(());
            }
        }
    }

    /// Stops every port and waits until their connections have drained.
    pub async fn stop_all(&mut self) {
        let running: Vec<Running> = self.running.drain().map(|(_, r)| r).collect();
        let mut tasks = Vec::with_capacity(running.len());
        for Running { stop, task } in running {
            let _ = stop.send(());
            tasks.push(task);
        }
        for task in tasks {
            let _ = task.await;
        }
    }
}

fn bind(address: SocketAddr, send_timeout: Duration) -> io::Result<TcpListener> {
    let socket = if address.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // Accepted connections inherit it: one system call per port rather
    // than per connection.
    tcp::limit_sends(&socket, send_timeout)?;
    // Lets a restarted data plane rebind while old connections sit in
    // TIME_WAIT; it does not allow two live listeners on one port.
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(BACKLOG)
}

/// How each connection is served; one per port, shared by its connections.
struct Builders {
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
    auto: auto::Builder<TokioExecutor>,
    /// Closes connections that wait too long for a request head.
    reaper: Arc<Reaper>,
    /// The reaper's timeout, which also bounds the wait for a clear-text
    /// connection's first bytes, before a builder is chosen.
    header_timeout: Duration,
}

async fn accept_loop(
    listener: TcpListener,
    port: PortKey,
    dataplane: Arc<Dataplane>,
    mut stop: oneshot::Receiver<()>,
) {
    let graceful = GracefulShutdown::new();
    // Connections still waiting for their first bytes are not watched by
    // `graceful` yet; this tells them to close.
    let (closing, closed) = watch::channel(false);
    let header_timeout = dataplane.options.client_header_timeout;
    let reaper = Reaper::new(header_timeout, dataplane.stats().client_timeouts().clone());
    let reaping = tokio::spawn(reaper.clone().run());
    let builders = Arc::new(Builders {
        http1: http1::Builder::new(),
        http2: {
            let mut http2 = http2::Builder::new(TokioExecutor::new());
            http2
                .initial_stream_window_size(H2_STREAM_WINDOW)
                .initial_connection_window_size(H2_CONNECTION_WINDOW);
            http2
        },
        auto: {
            let mut auto = auto::Builder::new(TokioExecutor::new());
            auto.http2()
                .initial_stream_window_size(H2_STREAM_WINDOW)
                .initial_connection_window_size(H2_CONNECTION_WINDOW);
            auto
        },
        reaper,
        header_timeout,
    });
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = &mut stop => break,
        };
        let (stream, client) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: back off a moment
                // rather than spin on the same error.
                tracing::warn!(%port, %error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if let Err(error) = tcp::tune(&stream) {
            tracing::debug!(%port, %error, "TCP options not set");
        }
        tokio::spawn(serve(
            stream,
            port,
            client,
            dataplane.clone(),
            builders.clone(),
            graceful.watcher(),
            closed.clone(),
        ));
    }
    drop(listener);
    let _ = closing.send(true);
    builders.reaper.close_all();
    // The reaper runs on while connections drain: one trickling its head
    // would otherwise hold the shutdown.
    graceful.shutdown().await;
    reaping.abort();
}

/// Serves one connection: over TLS when the port is HTTPS (the current
/// table's certificates, so a rotation applies to the next handshake), then
/// HTTP/2 or HTTP/1.1 by ALPN; in clear text HTTP/1.1 or, when it opens with
/// the HTTP/2 preface, h2c.
async fn serve(
    mut stream: TcpStream,
    port: PortKey,
    mut client: SocketAddr,
    dataplane: Arc<Dataplane>,
    builders: Arc<Builders>,
    watcher: Watcher,
    mut closing: watch::Receiver<bool>,
) {
    let (tls, proxy_protocol) = {
        let table = dataplane.table.load();
        let found = table.port(&port);
        (
            found.and_then(|p| p.tls.clone()),
            found.is_some_and(|p| p.proxy_protocol),
        )
    };
    if proxy_protocol {
        let header = tokio::select! {
            read = tokio::time::timeout(HANDSHAKE_TIMEOUT, proxy_protocol::read(&mut stream)) => read,
            _ = closing.wait_for(|closing| *closing) => return,
        };
        match header {
            Ok(Ok(named)) => client = named.unwrap_or(client),
            Ok(Err(error)) => return refuse(stream, tls.is_none(), &error, port, client).await,
            Err(_) => {
                tracing::debug!(%port, %client, "PROXY protocol header timed out");
                return;
            }
        }
    }
    let Some(config) = tls else {
        return serve_cleartext(stream, port, client, dataplane, builders, watcher, closing).await;
    };
    let handshake = tokio_rustls::TlsAcceptor::from(config).accept(stream);
    let stream = tokio::select! {
        done = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake) => match done {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => {
                tracing::debug!(%port, %client, %error, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%port, %client, "TLS handshake timed out");
                return;
            }
        },
        _ = closing.wait_for(|closing| *closing) => return,
    };
    let (_, session) = stream.get_ref();
    let h2 = session.alpn_protocol() == Some(b"h2");
    let connection = Connection {
        port,
        client,
        tls: true,
        sni: session.server_name().map(Arc::from),
    };
    let result = if h2 {
        serve_http2(stream, dataplane, connection, &builders, watcher, closing).await
    } else {
        serve_http1(stream, dataplane, connection, &builders, watcher, closing).await
    };
    if let Err(error) = result {
        tracing::debug!(%port, %client, %error, "TLS connection ended with an error");
    }
}

/// Closes a connection whose PROXY protocol header is missing or
/// malformed; in clear text with a 400 first, so that someone reaching the
/// port without the load balancer learns why.
async fn refuse(
    mut stream: TcpStream,
    cleartext: bool,
    error: &proxy_protocol::HeaderError,
    port: PortKey,
    client: SocketAddr,
) {
    tracing::debug!(%port, %client, %error, "connection refused");
    if cleartext && *error != proxy_protocol::HeaderError::Closed {
        let body = format!("{error}\n");
        let response = format!(
            "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let written = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
            stream.write_all(response.as_bytes()).await?;
            stream.shutdown().await
        })
        .await;
        if let Ok(Err(error)) = written {
            tracing::debug!(%port, %client, %error, "refusal not delivered");
        }
    }
}

/// The client connection preface of HTTP/2 (RFC 9113 §3.4), which prior
/// knowledge h2c clients send first.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// HTTP/1.1 or, when the connection opens with the HTTP/2 preface, h2c.
/// Peeking decides without consuming, so the chosen protocol reads the
/// socket directly instead of through a replay buffer.
async fn serve_cleartext(
    stream: TcpStream,
    port: PortKey,
    client: SocketAddr,
    dataplane: Arc<Dataplane>,
    builders: Arc<Builders>,
    watcher: Watcher,
    mut closing: watch::Receiver<bool>,
) {
    let connection = Connection {
        port,
        client,
        tls: false,
        sni: None,
    };
    let mut head = [0u8; H2_PREFACE.len()];
    let peeked = tokio::select! {
        peeked = tokio::time::timeout(builders.header_timeout, stream.peek(&mut head)) => match peeked {
            Ok(Ok(n)) => n,
            Ok(Err(error)) => {
                tracing::debug!(%port, %client, %error, "connection ended before a request");
                return;
            }
            Err(_) => {
                tracing::debug!(%port, %client, "no request within the header timeout");
                dataplane.stats().client_timeouts().record_header();
                return;
            }
        },
        _ = closing.wait_for(|closing| *closing) => return,
    };
    let result = if peeked == H2_PREFACE.len() && head == *H2_PREFACE {
        serve_http2(stream, dataplane, connection, &builders, watcher, closing).await
    } else if peeked > 0 && H2_PREFACE.starts_with(&head[..peeked]) {
        // Only part of what may be the preface has arrived; a peek would see
        // the same bytes again at once, so let the detecting builder read
        // the rest.
        let activity = Arc::new(Activity::default());
        builders.reaper.watch(&activity);
        let service = counted_service(dataplane, connection, activity.clone());
        let connection = builders
            .auto
            .serve_connection_with_upgrades(TokioIo::new(stream), service);
        until_done(
            connection,
            |c| c.graceful_shutdown(),
            watcher,
            closing,
            &activity,
            OnExpiry::Drop,
        )
        .await
    } else {
        serve_http1(stream, dataplane, connection, &builders, watcher, closing).await
    };
    if let Err(error) = result {
        tracing::debug!(%port, %client, %error, "connection ended with an error");
    }
}

/// An HTTP/2 connection (TLS with ALPN h2, or h2c with prior knowledge),
/// served by hyper. The reaper closes it once it has had no stream open
/// for the header timeout: an idle connection, or one whose client never
/// completes a request's headers, as it closes an HTTP/1 connection.
async fn serve_http2<IO>(
    io: IO,
    dataplane: Arc<Dataplane>,
    connection: Connection,
    builders: &Builders,
    watcher: Watcher,
    closing: watch::Receiver<bool>,
) -> Result<(), BoxError>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::default());
    builders.reaper.watch(&activity);
    let service = counted_service(dataplane, connection, activity.clone());
    let connection = builders.http2.serve_connection(TokioIo::new(io), service);
    until_done(
        connection,
        |c| c.graceful_shutdown(),
        watcher,
        closing,
        &activity,
        OnExpiry::GoAway(builders.header_timeout / 2),
    )
    .await
    .map_err(Into::into)
}

/// An HTTP/1.1 connection: the passthrough serves its requests for as long
/// as it can, then hyper the rest, from the first request the passthrough
/// leaves to it (see `passthrough`).
async fn serve_http1<IO>(
    io: IO,
    dataplane: Arc<Dataplane>,
    connection: Connection,
    builders: &Builders,
    watcher: Watcher,
    closing: watch::Receiver<bool>,
) -> Result<(), BoxError>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::default());
    builders.reaper.watch(&activity);
    // Registered first, so that a port closing from now on reaches this
    // connection through the reaper (`Reaper::close_all`).
    if *closing.borrow() {
        return Ok(());
    }
    let (io, replay) = match passthrough::serve(io, &dataplane, &connection, &activity).await {
        Outcome::Closed => return Ok(()),
        Outcome::HandOff(io, replay) => (io, replay),
    };
    let service = counted_service(dataplane, connection, activity.clone());
    let io = TokioIo::new(Rewind::new(replay, io));
    let connection = builders.http1.serve_connection(io, service).with_upgrades();
    until_done(
        connection,
        |c| c.graceful_shutdown(),
        watcher,
        closing,
        &activity,
        OnExpiry::Drop,
    )
    .await
    .map_err(Into::into)
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The data plane's service for one connection, counting its requests in
/// `activity`.
fn counted_service(
    dataplane: Arc<Dataplane>,
    connection: Connection,
    activity: Arc<Activity>,
) -> impl hyper::service::Service<
    http::Request<hyper::body::Incoming>,
    Response = http::Response<CountedBody>,
    Error = std::convert::Infallible,
    Future = impl Future<Output = Result<http::Response<CountedBody>, std::convert::Infallible>> + Send,
> + Clone
+ use<> {
    service_fn(move |request| {
        dataplane
            .clone()
            .handle(connection.clone(), activity.begin(), request)
    })
}

/// What `until_done` does with a connection the reaper found waiting too
/// long for a request.
enum OnExpiry {
    /// Close it at once: an HTTP/1 connection, idle or part way through a
    /// head (hyper's graceful shutdown would wait for the rest of it).
    Drop,
    /// Shut it down gracefully, which tells an HTTP/2 client with a GOAWAY
    /// that no further stream will be served, so that it does not send one
    /// into a closing connection. hyper closes it once the client has
    /// answered the GOAWAY's PING and no stream is open; a client that does
    /// not answer loses it once no stream has been open for this grace
    /// (one sent as the GOAWAY went out is still served, and its last
    /// frames have that long to go out).
    GoAway(Duration),
}

/// Drives a connection (HTTP/1.1 with upgrades, which hyper-util's graceful
/// watcher cannot hold, or HTTP/2): `closing` starts its graceful shutdown,
/// and holding `watcher` until it ends keeps the port's shutdown waiting
/// for it all the same. The port's reaper, which watches `activity` while
/// the port drains too, tells when it has waited too long for a request;
/// `on_expiry` says how it then ends, so that a connection never holds a
/// closing port beyond the reaper's timeout for lack of a request.
async fn until_done<C, E>(
    connection: C,
    shutdown: fn(Pin<&mut C>),
    watcher: Watcher,
    mut closing: watch::Receiver<bool>,
    activity: &Arc<Activity>,
    on_expiry: OnExpiry,
) -> Result<(), E>
where
    C: Future<Output = Result<(), E>>,
{
    let mut connection = std::pin::pin!(connection);
    let mut expired = std::pin::pin!(activity.expired());
    // The guard `wait_for` returns must not live across an await.
    let mut closed = std::pin::pin!(async {
        let _ = closing.wait_for(|closing| *closing).await;
    });
    let (mut shut, mut told) = (false, false);
    // When a connection told to go away is next looked at, and what the
    // look before saw: dropped once two looks in a row find it idle.
    let mut grace: Option<(Duration, tokio::time::Instant)> = None;
    let mut idle_at_last_look = None;
    let result = loop {
        tokio::select! {
            result = connection.as_mut() => break result,
            () = closed.as_mut(), if !shut => {
                shut = true;
                shutdown(connection.as_mut());
            }
            () = expired.as_mut(), if !told => {
                told = true;
                tracing::debug!("no request within the header timeout; closing");
                match on_expiry {
                    OnExpiry::Drop => break Ok(()),
                    OnExpiry::GoAway(period) => {
                        if !shut {
                            shut = true;
                            shutdown(connection.as_mut());
                        }
                        grace = Some((period, tokio::time::Instant::now() + period));
                    }
                }
            }
            () = tokio::time::sleep_until(grace.map_or_else(tokio::time::Instant::now, |g| g.1)), if grace.is_some() => {
                let idle = activity.idle_after();
                if idle.is_some() && idle == idle_at_last_look {
                    break Ok(());
                }
                idle_at_last_look = idle;
                grace = grace.map(|(period, _)| (period, tokio::time::Instant::now() + period));
            }
        }
    };
    drop(watcher);
    result
}
