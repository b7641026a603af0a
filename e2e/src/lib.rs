//! Harness for the end-to-end tests: real processes on real sockets.
//!
//! Every test gets its own loopback address (127.x.y.z, picked at random) for
//! its Gateways, so tests run in parallel without port clashes, and a port
//! offset so that logical ports such as 80 need no privileges. The binaries
//! come from the cargo target directory the tests were built in: build them
//! first with `cargo build --workspace --bins`.

use std::{
    collections::BTreeMap,
    future::Future,
    io::{BufRead, BufReader},
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use serde_json::Value;

pub mod kube_lite;
pub mod tls;
pub mod tokens;

/// Logical ports in test manifests are bound at port + this offset.
pub const PORT_OFFSET: u16 = 20000;

/// Directory holding the workspace binaries (`target/<profile>`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let deps = exe.parent().expect("deps directory");
    deps.parent().expect("profile directory").to_path_buf()
}

pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` before the tests",
        path.display()
    );
    path
}

/// A random loopback address, so parallel tests never share a socket.
pub fn unique_loopback() -> IpAddr {
    let seed = std::process::id() as u64 ^ nanos();
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 29;
    let [a, b, c, ..] = x.to_le_bytes();
    IpAddr::V4(Ipv4Addr::new(127, a.max(1), b, c.clamp(2, 254)))
}

fn nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// A loopback port that refuses connections for as long as this lives: a
/// socket bound to it that never listens. Connecting to it gets a reset
/// (connection refused), and, unlike a port that was free a moment ago, no
/// other process can take it meanwhile (the socket sets no SO_REUSEADDR).
pub struct ClosedPort {
    pub port: u16,
    _socket: tokio::net::TcpSocket,
}

impl ClosedPort {
    pub fn new() -> Self {
        let socket = tokio::net::TcpSocket::new_v4().expect("a TCP socket");
        socket
            .bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .expect("binding 127.0.0.1:0");
        let port = socket.local_addr().expect("bound address").port();
        Self {
            port,
            _socket: socket,
        }
    }
}

impl Default for ClosedPort {
    fn default() -> Self {
        Self::new()
    }
}

/// A child process killed when dropped.
pub struct Process {
    child: Child,
}

impl Process {
    /// Starts `command` and waits for a stdout line starting with each of
    /// `prefixes`, in order; returns the rest of those lines. The remaining
    /// output is drained in the background so the child never blocks on, or
    /// breaks, its stdout.
    pub fn start(mut command: Command, prefixes: &[&str]) -> anyhow::Result<(Self, Vec<String>)> {
        command.stdout(Stdio::piped()).stdin(Stdio::null());
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {command:?}"))?;
        let mut reader = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut found = Vec::new();
        let mut line = String::new();
        for prefix in prefixes {
            loop {
                line.clear();
                if reader.read_line(&mut line)? == 0 {
                    let status = child.wait()?;
                    bail!("{command:?} exited ({status}) before printing {prefix:?}");
                }
                if let Some(rest) = line.trim_end().strip_prefix(prefix) {
                    found.push(rest.trim().to_string());
                    break;
                }
            }
        }
        std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
        Ok((Self { child }, found))
    }

    /// Starts `command` without waiting for anything.
    pub fn spawn(mut command: Command) -> anyhow::Result<Self> {
        let child = command
            .spawn()
            .with_context(|| format!("starting {command:?}"))?;
        Ok(Self { child })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for the exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        // SAFETY: kill(2) on our own child with a valid signal.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        self.child.wait().expect("waiting for the child")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A running `gatehouse-echo`.
pub struct Echo {
    pub addr: SocketAddr,
    _process: Process,
}

impl Echo {
    pub fn start(name: &str) -> Self {
        Self::start_on(name, "127.0.0.1:0".parse().unwrap())
    }

    pub fn start_on(name: &str, listen: SocketAddr) -> Self {
        Self::start_with(name, listen, &[])
    }

    /// With extra `gatehouse-echo` arguments (`--record`, `--delay-ms N`).
    pub fn start_with(name: &str, listen: SocketAddr, args: &[&str]) -> Self {
        let mut command = Command::new(bin("gatehouse-echo"));
        command.args(["--listen", &listen.to_string(), "--name", name]);
        command.args(args);
        let (process, found) = Process::start(command, &["listening on"]).expect("echo backend");
        Self {
            addr: found[0].parse().expect("echo address"),
            _process: process,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The requests a `--record` echo has seen, oldest first.
    pub async fn recorded(&self) -> Vec<Value> {
        let url = format!("http://{}/__echo/recorded", self.addr);
        let reply = HttpClient::new()
            .get(&url, None)
            .await
            .expect("recorded requests");
        serde_json::from_slice(&reply.body).expect("a JSON array")
    }
}

/// A standalone controller with its data planes, on a manifest directory.
pub struct Standalone {
    pub dir: tempfile::TempDir,
    pub admin: SocketAddr,
    pub grpc: SocketAddr,
    pub address: IpAddr,
    pub process: Process,
    client: HttpClient,
}

pub struct StandaloneOptions {
    pub no_dataplanes: bool,
    pub grpc: Option<SocketAddr>,
    pub address: Option<IpAddr>,
}

impl Standalone {
    /// Starts on a fresh directory holding `files` (name, content) and waits
    /// until it is ready.
    pub async fn start(files: &[(&str, String)]) -> Self {
        let dir = tempfile::tempdir().expect("temporary manifest directory");
        for (name, content) in files {
            std::fs::write(dir.path().join(name), content).expect("writing a manifest");
        }
        let standalone = Self::start_in(
            dir,
            StandaloneOptions {
                no_dataplanes: false,
                grpc: None,
                address: None,
            },
        );
        standalone.wait_ready().await;
        standalone
    }

    /// Starts on an existing directory; does not wait for readiness.
    pub fn start_in(dir: tempfile::TempDir, options: StandaloneOptions) -> Self {
        let address = options.address.unwrap_or_else(unique_loopback);
        let grpc = options
            .grpc
            .unwrap_or_else(|| "127.0.0.1:0".parse().unwrap());
        let mut command = Command::new(bin("gatehouse-controller"));
        command
            .arg("standalone")
            .arg("--dir")
            .arg(dir.path())
            .args(["--admin", "127.0.0.1:0"])
            .args(["--port-offset", &PORT_OFFSET.to_string()])
            .args(["--listen-address", &address.to_string()])
            .args(["--grpc", &grpc.to_string()])
            .arg("--dataplane-bin")
            .arg(bin("gatehouse-dataplane"));
        if options.no_dataplanes {
            command.arg("--no-dataplanes");
        }
        let (process, found) = Process::start(
            command,
            &["admin listening on", "snapshot server listening on"],
        )
        .expect("standalone controller");
        Self {
            dir,
            admin: found[0].parse().expect("admin address"),
            grpc: found[1].parse().expect("snapshot server address"),
            address,
            process,
            client: HttpClient::new(),
        }
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    /// Replaces a manifest file atomically (write, then rename), as
    /// deployment tools do.
    pub fn write(&self, file: &str, content: &str) {
        write_atomically(&self.path(file), content);
    }

    pub fn remove(&self, file: &str) {
        std::fs::remove_file(self.path(file)).expect("removing a manifest");
    }

    /// Waits for `/readyz` to answer 200.
    pub async fn wait_ready(&self) {
        let url = format!("http://{}/readyz", self.admin);
        let client = &self.client;
        eventually(Duration::from_secs(60), || async {
            let response = client.get(&url, None).await?;
            match response.status {
                200 => Ok(()),
                _ => bail!("not ready: {}", response.text()),
            }
        })
        .await;
    }

    /// The `/debug/status` array.
    pub async fn statuses(&self) -> Vec<Value> {
        let url = format!("http://{}/debug/status", self.admin);
        let response = self.client.get(&url, None).await.expect("debug/status");
        serde_json::from_slice::<Vec<Value>>(&response.body).expect("debug/status is a JSON array")
    }

    /// The status of one object (`kind`, `namespace/name` or `name`).
    pub async fn status_of(&self, kind: &str, name: &str) -> Option<Value> {
        let (namespace, name) = match name.split_once('/') {
            Some((ns, n)) => (Some(ns), n),
            None => (None, name),
        };
        self.statuses().await.into_iter().find(|s| {
            s["kind"] == kind
                && s["metadata"]["name"] == name
                && namespace.is_none_or(|ns| s["metadata"]["namespace"] == ns)
        })
    }

    /// The socket logical port `port` is bound at.
    pub fn socket(&self, port: u16) -> SocketAddr {
        SocketAddr::new(self.address, port + PORT_OFFSET)
    }

    /// URL of logical port `port` on this controller's Gateway address.
    pub fn url(&self, port: u16, path: &str) -> String {
        format!("http://{}:{}{}", self.address, port + PORT_OFFSET, path)
    }
}

pub fn write_atomically(path: &Path, content: &str) {
    let tmp = path.with_extension("tmp-write");
    std::fs::write(&tmp, content).expect("writing a manifest");
    std::fs::rename(&tmp, path).expect("renaming a manifest");
}

/// Retries `check` until it succeeds or `timeout` passes, then panics with
/// the last error. For conditions that have no event to wait on.
pub async fn eventually<F, Fut, T>(timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(error) if Instant::now() >= deadline => {
                panic!("condition not met in {timeout:?}: {error:#}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(25)).await,
        }
    }
}

/// A response with its body read.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A response read to its end.
    pub async fn read(response: http::Response<hyper::body::Incoming>) -> anyhow::Result<Reply> {
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(Reply {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        })
    }

    /// The echo backend's description of the request it received.
    pub fn echo(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not an echo reply ({}): {}", self.status, self.text()))
    }

    /// Every value the echo backend received for header `name`.
    pub fn echoed(&self, name: &str) -> Vec<String> {
        echoed_header(&self.echo(), name)
    }

    /// Which echo backend answered.
    pub fn backend(&self) -> Option<&str> {
        self.header("x-echo-name")
    }

    /// The first value of response header `name`, if it is text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A pooled HTTP/1.1 client (keep-alive), the way real clients talk.
#[derive(Clone)]
pub struct HttpClient {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Default for HttpClient {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpClient {
    pub fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
        }
    }

    /// An HTTP/2 client with prior knowledge (h2c), as gRPC clients are.
    pub fn h2c() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Self {
            client: Client::builder(TokioExecutor::new())
                .http2_only(true)
                .build(connector),
        }
    }

    /// One HTTP/2 (h2c) request over a fresh connection to `addr`, with
    /// `authority` as `:authority`: what a browser or gRPC client sends for
    /// a name that resolves to `addr`.
    pub async fn h2c_request(
        addr: SocketAddr,
        authority: &str,
        path: &str,
    ) -> anyhow::Result<Reply> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        let (mut sender, connection) = hyper::client::conn::http2::handshake(
            TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(stream),
        )
        .await?;
        tokio::spawn(connection);
        let request = http::Request::get(format!("http://{authority}{path}"))
            .body(Full::new(Bytes::new()))?;
        let response = tokio::time::timeout(Duration::from_secs(10), sender.send_request(request))
            .await
            .context("h2c request timed out")??;
        Reply::read(response).await
    }

    pub async fn get(&self, url: &str, host: Option<&str>) -> anyhow::Result<Reply> {
        self.send(Request::get(url).host(host)).await
    }

    pub async fn send(&self, request: Request) -> anyhow::Result<Reply> {
        let mut builder = http::Request::builder()
            .method(request.method.as_str())
            .uri(&request.url);
        if let Some(host) = &request.host {
            builder = builder.header(http::header::HOST, host);
        }
        for (name, value) in &request.headers {
            builder = builder.header(name, value);
        }
        let req = builder.body(Full::new(Bytes::from(request.body)))?;
        let exchange = async { Reply::read(self.client.request(req).await?).await };
        tokio::time::timeout(Duration::from_secs(10), exchange)
            .await
            .with_context(|| format!("{} {} timed out", request.method, request.url))?
    }
}

/// A request to send through [`HttpClient::send`].
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub method: String,
    pub url: String,
    pub host: Option<String>,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn get(url: &str) -> Self {
        Self::method("GET", url)
    }

    pub fn method(method: &str, url: &str) -> Self {
        Self {
            method: method.into(),
            url: url.into(),
            ..Default::default()
        }
    }

    pub fn host(mut self, host: Option<&str>) -> Self {
        self.host = host.map(str::to_owned);
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// Counts of replies by backend name ("" for none) and status.
pub fn tally(replies: &[Reply]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for reply in replies {
        let key = match reply.backend() {
            Some(name) => name.to_string(),
            None => format!("status {}", reply.status),
        };
        *counts.entry(key).or_default() += 1;
    }
    counts
}

/// Manifests shared by most tests.
/// Every value of header `name` in an echo backend's description of a
/// request.
pub fn echoed_header(echo: &Value, name: &str) -> Vec<String> {
    echo["headers"][name]
        .as_array()
        .map(|values| {
            values
                .iter()
                .map(|v| v.as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

pub mod manifests {
    /// Our GatewayClass and a Gateway named `gw` in `default` with one HTTP
    /// listener on port 80 accepting routes from all namespaces.
    pub fn gateway() -> String {
        gateway_with(
            "  - name: http\n    port: 80\n    protocol: HTTP\n    allowedRoutes:\n      namespaces:\n        from: All\n",
        )
    }

    /// Our GatewayClass and a Gateway named `gw` in `default` with
    /// `listeners` (YAML list items indented by two spaces).
    pub fn gateway_with(listeners: &str) -> String {
        format!(
            r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata:
  name: gatehouse
spec:
  controllerName: gatehouse.dev/gateway-controller
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: gw
  namespace: default
spec:
  gatewayClassName: gatehouse
  listeners:
{listeners}"#
        )
    }

    /// An HTTPRoute `name` in `default` on Gateway `parent`, for
    /// `hostnames`, with one rule sending everything to `backend_refs`
    /// (a YAML flow list).
    pub fn route(name: &str, parent: &str, hostnames: &[&str], backend_refs: &str) -> String {
        format!(
            r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: default}}
spec:
  parentRefs: [{{name: {parent}}}]
  hostnames: {hostnames:?}
  rules:
  - backendRefs: {backend_refs}
"#
        )
    }

    /// A rule's `filters:` line (indented for `route_with_rules`) naming
    /// gatehouse.dev Filters by ExtensionRef.
    pub fn extension_refs(names: &[&str]) -> String {
        let refs: Vec<String> = names
            .iter()
            .map(|n| {
                format!("{{type: ExtensionRef, extensionRef: {{group: gatehouse.dev, kind: Filter, name: {n}}}}}")
            })
            .collect();
        format!("    filters: [{}]\n", refs.join(", "))
    }

    /// An HTTPRoute `name` in `default` on Gateway `gw` for `host`, with
    /// `rules` (YAML list items, each starting with "  - ").
    pub fn route_with_rules(name: &str, host: &str, rules: &str) -> String {
        format!(
            r#"---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: default}}
spec:
  parentRefs: [{{name: gw}}]
  hostnames: [{host}]
  rules:
{rules}"#
        )
    }

    /// A selector-less Service `name` in `namespace` on port 80 with an
    /// EndpointSlice pointing at the local ports given.
    pub fn service(namespace: &str, name: &str, ports: &[u16]) -> String {
        // One EndpointSlice per backend port: each echo listens on its own
        // port, and an EndpointSlice has one port list for all endpoints.
        let mut out = format!(
            r#"
apiVersion: v1
kind: Service
metadata:
  name: {name}
  namespace: {namespace}
spec:
  ports:
  - name: http
    port: 80
    targetPort: 8080
"#
        );
        for (i, port) in ports.iter().enumerate() {
            out.push_str(&format!(
                r#"---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-{i}
  namespace: {namespace}
  labels:
    kubernetes.io/service-name: {name}
addressType: IPv4
ports:
- name: http
  port: {port}
endpoints:
- addresses: ["127.0.0.1"]
  conditions:
    ready: true
"#
            ));
        }
        out
    }
}
