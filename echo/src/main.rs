//! An echo backend for the quickstart, the end-to-end tests and the
//! benchmarks.
//!
//! Serves HTTP/1.1 and HTTP/2 with prior knowledge (h2c) on one socket. Each
//! response carries `x-echo-name` and, unless `--body` fixes the body, a JSON
//! description of the request as the backend saw it, so tests can assert what
//! the gateway forwarded. Once the socket is bound it prints exactly one line,
//! `listening on IP:PORT`, which callers use as the readiness signal.
//!
//! Test knobs, sent by the client as request headers: `x-echo-delay-ms: N`
//! answers after N milliseconds; `x-echo-status: N` answers with status N.
//! Retries are simulated with the query parameters the Gateway API
//! conformance backend reads: `responseCode=N&succeedAfter=K&uuid=ID`
//! answers N to the first K requests carrying that `uuid`, then as usual;
//! the JSON echo's `attempt` counts the requests seen for the `uuid`.
//! `--minimal` with `--body` is the benchmarks' upstream (see `minimal.rs`).
//! `--grpc` serves the gRPC health service instead; `--tls-cert` and
//! `--tls-key` serve HTTPS, `--tls-client-ca` requires client certificates
//! of that CA. `--delay-ms` delays
//! every answer; `--record` keeps the description of
//! every request and serves them as a JSON array at `GET /__echo/recorded`,
//! for backends (mirrors) whose answers nobody sees.
//!
//! A WebSocket upgrade (RFC 6455) is accepted; every text or binary message
//! is sent back prefixed with the backend's name and ": ".

use std::{collections::BTreeMap, convert::Infallible, io::Write, net::SocketAddr, sync::Arc};

use anyhow::Context;
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use tokio::net::TcpListener;

mod minimal;

#[derive(Parser, Debug)]
#[command(name = "gatehouse-echo", about = "Echo backend for Gatehouse")]
struct Args {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Name reported in `x-echo-name` and in the JSON body.
    #[arg(long, default_value = "echo")]
    name: String,
    /// Fixed response body instead of the JSON echo (for benchmarks).
    #[arg(long)]
    body: Option<String>,
    /// Delay before every answer, in milliseconds.
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
    /// Record every request, served at `GET /__echo/recorded`.
    #[arg(long)]
    record: bool,
    /// Serve HTTPS with this PEM certificate chain (and `--tls-key`).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// PEM private key of `--tls-cert`.
    #[arg(long)]
    tls_key: Option<std::path::PathBuf>,
    /// With `--tls-cert`: require a client certificate issued by this PEM
    /// CA; the JSON echo reports its SHA-256 as `client_cert_sha256`.
    #[arg(long, requires = "tls_cert")]
    tls_client_ca: Option<std::path::PathBuf>,
    /// Serve gRPC instead (HTTP/2 cleartext): the standard health service
    /// (grpc.health.v1.Health), reporting SERVING for a service named like
    /// this backend, so a caller can tell which backend answered.
    #[arg(long)]
    grpc: bool,
    /// With `--body`: the cheapest upstream for benchmarks, HTTP/1.1 only,
    /// on one thread; answers every request with the body and ignores the
    /// other options (see `minimal.rs`).
    #[arg(long, requires = "body", conflicts_with_all = ["grpc", "tls_cert", "record", "delay_ms"])]
    minimal: bool,
}

const RECORDED_PATH: &str = "/__echo/recorded";

struct Echo {
    name: Arc<str>,
    fixed_body: Option<Bytes>,
    delay: std::time::Duration,
    /// `Some` with `--record`. A test backend: a lock is fine here.
    recorded: Option<std::sync::Mutex<Vec<serde_json::Value>>>,
    /// Serving HTTPS (reported in the JSON echo).
    tls: bool,
    /// Requests seen per retry-simulation `uuid`. A test backend: a lock is
    /// fine here.
    attempts: std::sync::Mutex<std::collections::HashMap<String, u64>>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.minimal {
        return tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(serve_minimal(args));
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(serve(args))
}

async fn serve_minimal(args: Args) -> anyhow::Result<()> {
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    print_listening(listener.local_addr()?)?;
    let body = args.body.unwrap_or_default();
    minimal::serve(listener, &args.name, body.as_bytes()).await
}

/// The readiness line callers wait for.
fn print_listening(local: SocketAddr) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on {local}")?;
    out.flush()?;
    Ok(())
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let echo = Arc::new(Echo {
        name: args.name.into(),
        fixed_body: args.body.map(Bytes::from),
        delay: std::time::Duration::from_millis(args.delay_ms),
        recorded: args.record.then(Default::default),
        tls: args.tls_cert.is_some(),
        attempts: Default::default(),
    });
    let acceptor = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(tls_acceptor(cert, key, args.tls_client_ca.as_deref())?),
        _ => None,
    };
    let local = listener.local_addr()?;
    if args.grpc {
        return serve_grpc(listener, &echo.name).await;
    }
    print_listening(local)?;
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let echo = echo.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let service = |client_cert: Option<Arc<str>>| {
                        service_fn(move |req| {
                            let (echo, client_cert) = (echo.clone(), client_cert.clone());
                            async move { Ok::<_, Infallible>(echo.respond(req, client_cert).await) }
                        })
                    };
                    let builder = auto::Builder::new(TokioExecutor::new());
                    let _ = match acceptor {
                        None => builder
                            .serve_connection_with_upgrades(TokioIo::new(stream), service(None))
                            .await,
                        Some(acceptor) => match acceptor.accept(stream).await {
                            Ok(tls) => {
                                let client_cert = tls
                                    .get_ref()
                                    .1
                                    .peer_certificates()
                                    .and_then(|c| c.first())
                                    .map(|c| {
                                        use sha2::Digest;
                                        Arc::from(hex::encode(sha2::Sha256::digest(c)))
                                    });
                                builder
                                    .serve_connection_with_upgrades(
                                        TokioIo::new(tls),
                                        service(client_cert),
                                    )
                                    .await
                            }
                            Err(_) => return,
                        },
                    };
                });
            }
            _ = &mut shutdown => return Ok(()),
        }
    }
}

impl Echo {
    async fn respond(
        &self,
        mut req: Request<Incoming>,
        client_cert: Option<Arc<str>>,
    ) -> Response<Full<Bytes>> {
        if let Some(accept) = websocket_accept(&req) {
            let upgrade = hyper::upgrade::on(&mut req);
            let name = self.name.clone();
            tokio::spawn(async move {
                if let Ok(upgraded) = upgrade.await {
                    echo_websocket(name, upgraded).await;
                }
            });
            return Response::builder()
                .status(hyper::StatusCode::SWITCHING_PROTOCOLS)
                .header("connection", "upgrade")
                .header("upgrade", "websocket")
                .header("sec-websocket-accept", accept)
                .header("x-echo-name", &*self.name)
                .body(Full::new(Bytes::new()))
                .expect("static response parts are valid");
        }
        if let Some(recorded) = &self.recorded
            && req.uri().path() == RECORDED_PATH
        {
            let all = serde_json::Value::from(recorded.lock().expect("not poisoned").clone());
            return Response::builder()
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(all.to_string())))
                .expect("static response parts are valid");
        }
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        let knob = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
        };
        if let Some(delay) = knob("x-echo-delay-ms") {
            tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
        }
        let (simulated, attempt) = self.retry_simulation(req.uri().query().unwrap_or(""));
        let status = simulated
            .or(knob("x-echo-status"))
            .and_then(|s| u16::try_from(s).ok())
            .and_then(|s| hyper::StatusCode::from_u16(s).ok())
            .unwrap_or(hyper::StatusCode::OK);
        let builder = Response::builder()
            .status(status)
            .header("x-echo-name", &*self.name);
        if let Some(body) = &self.fixed_body {
            return builder
                .header("content-type", "text/plain")
                .body(Full::new(body.clone()))
                .expect("static response parts are valid");
        }
        let (parts, body) = req.into_parts();
        let body_len = match body.collect().await {
            Ok(collected) => collected.to_bytes().len(),
            Err(_) => 0,
        };
        let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, value) in &parts.headers {
            headers
                .entry(name.as_str().to_owned())
                .or_default()
                .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
        }
        let host = parts
            .uri
            .authority()
            .map(|a| a.to_string())
            .or_else(|| headers.get("host").and_then(|v| v.first().cloned()))
            .unwrap_or_default();
        let description = serde_json::json!({
            "name": &*self.name,
            "method": parts.method.as_str(),
            "path": parts.uri.path(),
            "query": parts.uri.query().unwrap_or(""),
            "host": host,
            "headers": headers,
            "body_len": body_len,
            "version": format!("{:?}", parts.version),
            "tls": self.tls,
            "attempt": attempt,
            "client_cert_sha256": client_cert.as_deref(),
        });
        if let Some(recorded) = &self.recorded {
            recorded
                .lock()
                .expect("not poisoned")
                .push(description.clone());
        }
        builder
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(description.to_string())))
            .expect("static response parts are valid")
    }
}

impl Echo {
    /// The status to fail with, if this request is one of the first
    /// `succeedAfter` of its `uuid`, and which request of the `uuid` it is
    /// (1 for the first; 0 without a `uuid`).
    fn retry_simulation(&self, query: &str) -> (Option<u64>, u64) {
        let param = |key: &str| {
            query
                .split('&')
                .filter_map(|pair| pair.split_once('='))
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v)
        };
        let Some(uuid) = param("uuid") else {
            return (None, 0);
        };
        let attempt = {
            let mut attempts = self.attempts.lock().expect("not poisoned");
            let seen = attempts.entry(uuid.to_owned()).or_default();
            *seen += 1;
            *seen
        };
        let code = param("responseCode").and_then(|v| v.parse().ok());
        let succeed_after: u64 = param("succeedAfter")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        (code.filter(|_| attempt <= succeed_after), attempt)
    }
}

/// The `Sec-WebSocket-Accept` answer to a WebSocket upgrade request.
fn websocket_accept<B>(req: &Request<B>) -> Option<String> {
    let headers = req.headers();
    let upgrade = headers.get("upgrade")?.to_str().ok()?;
    if !upgrade.eq_ignore_ascii_case("websocket") {
        return None;
    }
    let key = headers.get("sec-websocket-key")?;
    Some(tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes()))
}

async fn echo_websocket(name: Arc<str>, upgraded: hyper::upgrade::Upgraded) {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::{Message, protocol::Role};
    let mut socket = tokio_tungstenite::WebSocketStream::from_raw_socket(
        TokioIo::new(upgraded),
        Role::Server,
        None,
    )
    .await;
    while let Some(Ok(message)) = socket.next().await {
        let reply = match message {
            Message::Text(text) => Message::text(format!("{name}: {text}")),
            Message::Binary(data) => {
                Message::binary([format!("{name}: ").as_bytes(), &data].concat())
            }
            Message::Close(_) => break,
            _ => continue,
        };
        if socket.send(reply).await.is_err() {
            break;
        }
    }
}

fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
    client_ca: Option<&std::path::Path>,
) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let chain = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()?;
    let key =
        PrivateKeyDer::from_pem_file(key).with_context(|| format!("reading {}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(ca)
                .with_context(|| format!("reading {}", ca.display()))?
            {
                roots.add(cert?)?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

async fn serve_grpc(listener: TcpListener, name: &str) -> anyhow::Result<()> {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status(name, tonic_health::ServingStatus::Serving)
        .await;
    print_listening(listener.local_addr()?)?;
    tonic::transport::Server::builder()
        .add_service(health)
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            shutdown_signal(),
        )
        .await?;
    Ok(())
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
