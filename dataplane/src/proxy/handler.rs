//! The request path: one table load, route lookup, backend and endpoint
//! choice, header rewriting (see `headers`), the upstream call, and the
//! status mapping of every failure. No locks; the table `Arc` is cloned once
//! before the first `.await`.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, Uri, Version, header, uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::{
    Connection, Dataplane,
    activity::{CountedBody, Finish},
    body::{ProxyBody, UpstreamBody},
    filters, headers,
    request_body::{ClientBody, RequestBody},
    upgrade,
    upstream::UpstreamError,
};
use crate::filters::{Chain, Local, Passed, RequestFacts};
use crate::table::{
    CorsDecision, Fields, Found, InFlight, Lookup, Mirror, RequestView, Table, Target, UpstreamTls,
    normalize_host,
};
use gatehouse_snapshot::UpstreamProtocol;
use std::sync::atomic::Ordering;

/// Why a request was answered by the proxy itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyError {
    BadRequest,
    NoRoute,
    NoBackend,
    InvalidBackend,
    NoEndpoints,
    Connect,
    Upstream,
    /// `timeouts.request` or `timeouts.backendRequest` expired.
    Timeout,
    /// The Host selects another listener than the TLS SNI name did.
    Misdirected,
    /// The backend's BackendTLSPolicy leaves nothing to trust: the request
    /// is not sent (and not retried: it would fail the same way).
    BackendTls,
    /// The client stopped sending its request body for
    /// `--client-body-timeout`.
    ClientTimeout,
}

/// How an upstream failure is answered, on every path.
impl From<UpstreamError> for ProxyError {
    fn from(error: UpstreamError) -> Self {
        match error {
            UpstreamError::Connect(..) => Self::Connect,
            UpstreamError::Request(_) => Self::Upstream,
            UpstreamError::Unusable(..) => Self::BackendTls,
            UpstreamError::TimedOut => Self::Timeout,
        }
    }
}

impl ProxyError {
    pub fn status(self) -> StatusCode {
        match self {
            Self::BadRequest => StatusCode::BAD_REQUEST,
            Self::NoRoute => StatusCode::NOT_FOUND,
            Self::NoBackend | Self::InvalidBackend => StatusCode::INTERNAL_SERVER_ERROR,
            Self::NoEndpoints => StatusCode::SERVICE_UNAVAILABLE,
            Self::Connect | Self::Upstream | Self::BackendTls => StatusCode::BAD_GATEWAY,
            Self::Timeout => StatusCode::GATEWAY_TIMEOUT,
            Self::Misdirected => StatusCode::MISDIRECTED_REQUEST,
            Self::ClientTimeout => StatusCode::REQUEST_TIMEOUT,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::NoRoute => "no_route",
            Self::NoBackend => "no_backend",
            Self::InvalidBackend => "invalid_backend",
            Self::NoEndpoints => "no_endpoints",
            Self::Connect => "connect",
            Self::Upstream => "upstream",
            Self::Timeout => "timeout",
            Self::Misdirected => "misdirected",
            Self::BackendTls => "backend_tls_unusable",
            Self::ClientTimeout => "client_body_timeout",
        }
    }

    /// The gRPC status code for a gRPC client (the gRPC HTTP mapping; no
    /// route is UNIMPLEMENTED, as GRPCRoute asks).
    pub fn grpc_code(self) -> u8 {
        match self {
            Self::NoRoute => 12,
            Self::Timeout | Self::ClientTimeout => 4,
            Self::NoEndpoints | Self::Connect | Self::Upstream | Self::BackendTls => 14,
            Self::BadRequest | Self::NoBackend | Self::InvalidBackend | Self::Misdirected => 13,
        }
    }

    /// A gRPC client gets a trailers-only gRPC answer, not an HTTP error
    /// page: status 200 with `grpc-status` and `grpc-message`.
    fn response_for(self, grpc: bool) -> Response<ProxyBody> {
        if !grpc {
            return self.response();
        }
        let mut response = Response::new(ProxyBody::Local(Bytes::new().into()));
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        headers.insert(
            "grpc-status",
            HeaderValue::from(u16::from(self.grpc_code())),
        );
        headers.insert("grpc-message", HeaderValue::from_static(self.label()));
        response
    }

    fn response(self) -> Response<ProxyBody> {
        let mut response = Response::new(ProxyBody::text(self.label()));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        // The rest of the body may still come, or never: the connection
        // cannot carry another request (RFC 9110 §15.5.9).
        if self == Self::ClientTimeout {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

impl Dataplane {
    /// Serves one request that arrived on the socket `port`. Never fails:
    /// errors are answered locally; the `Result` is hyper's service shape,
    /// returned as is so that no wrapping future copies this one.
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn keeps each argument twice in its future"
    )]
    pub(crate) fn handle(
        self: Arc<Self>,
        conn: Connection,
        finish: Finish,
        mut request: Request<Incoming>,
    ) -> impl Future<Output = Result<Response<CountedBody>, Infallible>> {
        // An async block rather than an async fn: it uses its captures in
        // place, where an async fn keeps each argument twice (as captured
        // and as a local), and this future is moved whole on every request.
        // The response's body carries `finish`; attached here rather than
        // by a future around this one, which would copy this one into it.
        async move {
            let response = 'answered: {
                let started = Instant::now();
                let table = self.table.load_full();
                let grpc = is_grpc(&request);
                strip_claim_headers(&table, &conn, &mut request);
                let mut found = find_route(&table, &conn, &request);
                let mut early = Passed::default();
                // Claims a Gateway's jwtAuth writes to headers are part of what
                // routes match on: the filters that do not depend on the route run
                // first, then the route is looked up again on the verified headers.
                let early_chain = match &found {
                    Ok(first) => first.chain,
                    Err((ProxyError::NoRoute, listener_chain)) => *listener_chain,
                    Err(_) => None,
                }
                .filter(|c| c.routes_on_claims);
                if let Some(chain) = early_chain
                    && preflight_method(&request).is_none()
                {
                    let facts = RequestFacts {
                        peer: conn.client.ip(),
                        rule: "",
                    };
                    // Boxed: a rare path, kept out of every request's future.
                    let phases = Box::pin(chain.run_gateway_phases(facts, request.headers_mut()));
                    match phases.await {
                        Ok(passed) => {
                            early = passed;
                            found = find_route(&table, &conn, &request);
                        }
                        Err(local) => {
                            let cors = match &found {
                                Ok(first) => {
                                    first.rule.filters.as_ref().and_then(|f| f.cors.as_ref())
                                }
                                Err(_) => None,
                            }
                            .and_then(|policy| {
                                match policy.decide(request.method(), request.headers()) {
                                    CorsDecision::Actual(headers) => Some(headers),
                                    _ => None,
                                }
                            });
                            let response = refusal(local, grpc, cors);
                            let stats = match &found {
                                Ok(first) => &first.rule.stats,
                                Err(_) => self.stats.no_route(),
                            };
                            stats.record(response.status().as_u16(), started.elapsed());
                            break 'answered response;
                        }
                    }
                }
                let (stats, result) = match found {
                    // A rule without filters, request timeout or retries is
                    // forwarded in this future; the others take the boxed path.
                    Ok(found) if found.is_plain() && early.ran.is_empty() => {
                        let (parts, body) = request.into_parts();
                        let (body, stalled) = self.client_body(body, grpc);
                        let request = Request::from_parts(parts, RequestBody::Client(body));
                        let result = self.forward(&table, found, &conn, request, 0).await;
                        (&found.rule.stats, self.unless_stalled(result, &stalled))
                    }
                    Ok(found) => (
                        &found.rule.stats,
                        Box::pin(self.serve(&table, found, &conn, request, early)).await,
                    ),
                    Err((error, Some(chain))) => (
                        self.stats.no_route(),
                        Box::pin(unrouted(chain, &conn, request, error, grpc, early)).await,
                    ),
                    Err((error, None)) => (self.stats.no_route(), Err(error)),
                };
                let response = result.unwrap_or_else(|error| {
                    let client = conn.client;
                    tracing::debug!(error = error.label(), %client, "answered locally");
                    error.response_for(grpc)
                });
                stats.record(response.status().as_u16(), started.elapsed());
                response
            };
            Ok(response.map(|body| finish.attach(body)))
        }
    }

    /// The client's body, its waits timed (`--client-body-timeout`) unless
    /// it has already ended or belongs to a gRPC call, whose client streams
    /// may pause for as long as their calls last; the flag says it stalled.
    fn client_body(
        &self,
        body: Incoming,
        grpc: bool,
    ) -> (ClientBody, Option<Arc<std::sync::atomic::AtomicBool>>) {
        let mut client_body = ClientBody::new(body);
        let stalled = (!grpc && !http_body::Body::is_end_stream(&client_body))
            .then(|| client_body.time_stalls(self.options.client_body_timeout));
        (client_body, stalled)
    }

    /// `result`, or a 408 when it failed because the client's body stalled,
    /// whatever error the upstream client made of that.
    fn unless_stalled<T>(
        &self,
        result: Result<T, ProxyError>,
        stalled: &Option<Arc<std::sync::atomic::AtomicBool>>,
    ) -> Result<T, ProxyError> {
        match stalled {
            Some(flag) if result.is_err() && flag.load(Ordering::Acquire) => {
                self.stats.client_timeouts().record_body();
                Err(ProxyError::ClientTimeout)
            }
            _ => result,
        }
    }

    /// A rule with filters, a request timeout or retries.
    async fn serve(
        self: &Arc<Self>,
        table: &Table,
        found: Found<'_>,
        conn: &Connection,
        request: Request<Incoming>,
        early: Passed,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        match found.rule.request_timeout {
            None => self.filtered(table, found, conn, request, early).await,
            // Dropping the future on expiry cancels the upstream request.
            Some(limit) => {
                tokio::time::timeout(limit, self.filtered(table, found, conn, request, early))
                    .await
                    .unwrap_or(Err(ProxyError::Timeout))
            }
        }
    }

    /// The rule's filters around `forward` (and its retries).
    async fn filtered(
        self: &Arc<Self>,
        table: &Table,
        found: Found<'_>,
        conn: &Connection,
        request: Request<Incoming>,
        early: Passed,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let filters = found.rule.filters.as_deref();
        let grpc = is_grpc(&request);
        let (parts, body) = request.into_parts();
        let (mut client_body, stalled) = self.client_body(body, grpc);
        let mut request = Request::from_parts(parts, ());
        let mut cors = None;
        // A preflight carries no credentials (Fetch standard), so it is
        // answered before any gatehouse.dev filter could refuse it.
        if let Some(policy) = filters.and_then(|f| f.cors.as_ref()) {
            match policy.decide(request.method(), request.headers()) {
                CorsDecision::Preflight(headers) => return Ok(filters::preflight(headers)),
                CorsDecision::RefusedPreflight => return Ok(filters::preflight(Vec::new())),
                CorsDecision::Actual(headers) => cors = Some(headers),
                CorsDecision::NotCors => {}
            }
        }
        let mut passed = early;
        if let Some(chain) = found.chain {
            let facts = RequestFacts {
                peer: conn.client.ip(),
                rule: &found.rule.object,
            };
            match chain.run(facts, request.headers_mut(), passed).await {
                Ok(ok) => passed = ok,
                Err(local) => return Ok(refusal(local, grpc, cors)),
            }
        }
        if passed.strip_authorization {
            request.headers_mut().remove(header::AUTHORIZATION);
        }
        let body_too_large = passed.body_limit.map(|max| client_body.limit(max));
        let request = request.map(|()| RequestBody::Client(client_body));
        let result = self.routed(table, found, conn, request, cors).await;
        let result = self
            .unless_stalled(result, &stalled)
            .or_else(|error| match &body_too_large {
                Some(exceeded) if exceeded.load(Ordering::Acquire) => {
                    let local =
                        Local::text(StatusCode::PAYLOAD_TOO_LARGE, "request body too large");
                    Ok(local_response(local, grpc))
                }
                _ => Err(error),
            });
        if passed.response_headers.is_empty() {
            return result;
        }
        // Rate-limit headers belong on every answer the limit let through,
        // the gateway's own (a redirect, a 503) as much as the backend's.
        let mut response = result.unwrap_or_else(|error| error.response_for(grpc));
        for (name, value) in passed.response_headers {
            response.headers_mut().insert(name, value);
        }
        Ok(response)
    }

    /// The rule's Gateway API filters around `forward` (and its retries).
    async fn routed(
        self: &Arc<Self>,
        table: &Table,
        found: Found<'_>,
        conn: &Connection,
        mut request: Request<RequestBody>,
        cors: Option<Vec<(http::HeaderName, HeaderValue)>>,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let filters = found.rule.filters.as_deref();
        if let Some(filters) = filters {
            if let Some(response) = filters::apply_request(filters, &found, &mut request)? {
                return Ok(response);
            }
            let identity = found.route_match.backend_identity;
            request = self.mirror(table, &filters.mirrors, conn, identity, request);
        }
        let mut response = self
            .forward_with_retries(table, found, conn, request)
            .await?;
        if let Some(modifier) = filters.and_then(|f| f.response_headers.as_ref()) {
            modifier.apply(response.headers_mut());
        }
        if let Some(headers) = cors {
            filters::add_cors(response.headers_mut(), headers);
        }
        Ok(response)
    }

    /// One upstream attempt (`attempt` 0 is the first; a retry's
    /// backendRef mirrors are not sent again).
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn keeps each argument twice in its future"
    )]
    pub(super) fn forward<'a>(
        self: &'a Arc<Self>,
        table: &'a Table,
        found: Found<'a>,
        conn: &'a Connection,
        mut request: Request<RequestBody>,
        attempt: u32,
    ) -> impl Future<Output = Result<Response<ProxyBody>, ProxyError>> + 'a {
        // An async block for the reason given in `handle`.
        async move {
            let rule = found.rule;
            let backend = rule
                .pick_backend(rand::random())
                .ok_or(ProxyError::NoBackend)?;
            let backend_filters = backend.filters.as_deref();
            if let Some(filters) = backend_filters {
                if let Some(response) = filters::apply_request(filters, &found, &mut request)? {
                    return Ok(response);
                }
                if attempt == 0 {
                    let identity = found.route_match.backend_identity;
                    request = self.mirror(table, &filters.mirrors, conn, identity, request);
                }
            }
            let cluster = match &backend.target {
                Target::Cluster(index) => table.cluster(*index),
                Target::Invalid(reason) => {
                    tracing::debug!(rule = %rule.object, %reason, "invalid backend share");
                    return Err(ProxyError::InvalidBackend);
                }
            };
            let endpoint = cluster
                .pick_endpoint(rand::random())
                .ok_or(ProxyError::NoEndpoints)?;
            let tls = cluster.tls_for(found.route_match.backend_identity);
            let in_flight = endpoint.begin();
            let upgrade = upgrade::requested(&request).map(|protocol| {
                let client_side = hyper::upgrade::on(&mut request);
                (protocol, client_side)
            });
            // An upgrade always travels over HTTP/1.1, whatever the cluster speaks.
            let protocol = match upgrade {
                Some(_) => UpstreamProtocol::Http1,
                None => cluster.protocol,
            };
            // Built in a block: a local borrowed while this future runs keeps a
            // slot in it until its scope ends, even once moved out.
            let upstream_request = {
                let mut prepared = upstream_request(request, conn, protocol, tls.is_some())?;
                if let Some((asked, _)) = &upgrade {
                    upgrade::restore(prepared.headers_mut(), asked);
                }
                prepared
            };
            let address = endpoint.address;
            let tls = tls.map(|t| &**t);
            // The plain HTTP/1.1 exchange is awaited in place; upgrades and
            // h2c, with their connection and handshake state, are boxed.
            // Every request's future is moved whole (into hyper's
            // dispatcher, and each level into the one above), so its size
            // is paid in copies on every request.
            let sent = if upgrade.is_some() || protocol == UpstreamProtocol::H2c {
                let other = self.send_other(address, tls, upgrade.is_some(), upstream_request);
                match rule.backend_timeout {
                    None => Box::pin(other).await,
                    Some(limit) => Box::pin(tokio::time::timeout(limit, other))
                        .await
                        .unwrap_or(Err(UpstreamError::TimedOut)),
                }
            } else {
                match rule.backend_timeout {
                    None => {
                        self.upstream
                            .send_http1(address, tls, upstream_request)
                            .await
                    }
                    Some(limit) => tokio::time::timeout(
                        limit,
                        self.upstream.send_http1(address, tls, upstream_request),
                    )
                    .await
                    .unwrap_or(Err(UpstreamError::TimedOut)),
                }
                .map(|response| response.map(UpstreamBody::Http1))
            };
            let mut response = sent.map_err(|error| {
                tracing::debug!(cluster = %cluster.name, %error, "upstream failed");
                ProxyError::from(error)
            })?;
            let switched = match upgrade {
                Some((asked, client_side))
                    if response.status() == StatusCode::SWITCHING_PROTOCOLS =>
                {
                    let upstream_side = hyper::upgrade::on(&mut response);
                    tokio::spawn(upgrade::tunnel(client_side, upstream_side));
                    Some(
                        response
                            .headers()
                            .get(header::UPGRADE)
                            .cloned()
                            .unwrap_or(asked),
                    )
                }
                _ => None,
            };
            let (mut parts, body) = response.into_parts();
            headers::remove_hop_by_hop(&mut parts.headers);
            if let Some(protocol) = &switched {
                upgrade::restore(&mut parts.headers, protocol);
            }
            if let Some(modifier) = backend_filters.and_then(|f| f.response_headers.as_ref()) {
                modifier.apply(&mut parts.headers);
            }
            Ok(Response::from_parts(
                parts,
                ProxyBody::Upstream {
                    body,
                    _in_flight: in_flight,
                },
            ))
        }
    }

    /// The exchanges `forward` keeps out of its own future: a protocol
    /// switch, over a connection of its own, and h2c.
    async fn send_other(
        &self,
        address: SocketAddr,
        tls: Option<&UpstreamTls>,
        upgrade: bool,
        request: Request<RequestBody>,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        if upgrade {
            self.upstream.send_upgrade(address, tls, request).await
        } else {
            self.upstream.send_h2c(address, tls, request).await
        }
        .map(|response| response.map(UpstreamBody::Hyper))
    }
}

impl Dataplane {
    /// Sends a copy of `request` to each selected mirror, fire and forget,
    /// and returns the request to forward (its body teed when it has one).
    fn mirror(
        self: &Arc<Self>,
        table: &Table,
        mirrors: &[Mirror],
        conn: &Connection,
        identity: usize,
        request: Request<RequestBody>,
    ) -> Request<RequestBody> {
        let selected: Vec<&Mirror> = mirrors
            .iter()
            .filter(|m| m.selects(rand::random()))
            .collect();
        if selected.is_empty() {
            return request;
        }
        let (parts, body) = request.into_parts();
        let (body, copies) = body.split(selected.len());
        for (mirror, copy) in selected.into_iter().zip(copies) {
            let cluster = table.cluster(mirror.cluster);
            let Some(slot) = MirrorSlot::take(&self.mirrors_in_flight) else {
                tracing::debug!(cluster = %cluster.name, "too many mirrored requests in flight; not mirrored");
                continue;
            };
            let Some(endpoint) = cluster.pick_endpoint(rand::random()) else {
                tracing::debug!(cluster = %cluster.name, "mirror has no endpoint");
                continue;
            };
            let mut head = Request::new(copy);
            *head.method_mut() = parts.method.clone();
            *head.uri_mut() = parts.uri.clone();
            *head.version_mut() = parts.version;
            *head.headers_mut() = parts.headers.clone();
            let tls = cluster.tls_for(identity);
            let Ok(copy) = upstream_request(head, conn, cluster.protocol, tls.is_some()) else {
                continue;
            };
            let target = MirrorTarget {
                _slot: slot,
                cluster: cluster.name.clone(),
                address: endpoint.address,
                tls: tls.cloned(),
                protocol: cluster.protocol,
                in_flight: endpoint.begin(),
            };
            tokio::spawn(send_mirror(self.clone(), target, copy));
        }
        Request::from_parts(parts, body)
    }
}

/// Longest a mirrored request may take; its response is read and dropped.
const MIRROR_TIMEOUT: Duration = Duration::from_secs(30);

/// Mirrored requests allowed in flight at once, per data plane.
const MAX_MIRRORS_IN_FLIGHT: usize = 1024;

/// One of the `MAX_MIRRORS_IN_FLIGHT` places, given back when dropped.
struct MirrorSlot(Arc<std::sync::atomic::AtomicUsize>);

impl MirrorSlot {
    fn take(count: &Arc<std::sync::atomic::AtomicUsize>) -> Option<Self> {
        use std::sync::atomic::Ordering::Relaxed;
        if count.fetch_add(1, Relaxed) >= MAX_MIRRORS_IN_FLIGHT {
            count.fetch_sub(1, Relaxed);
            return None;
        }
        Some(Self(count.clone()))
    }
}

impl Drop for MirrorSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Where one mirrored copy goes, and the counts it holds while it runs.
struct MirrorTarget {
    _slot: MirrorSlot,
    cluster: Arc<str>,
    address: SocketAddr,
    tls: Option<Arc<UpstreamTls>>,
    protocol: UpstreamProtocol,
    in_flight: InFlight,
}

async fn send_mirror(
    dataplane: Arc<Dataplane>,
    target: MirrorTarget,
    request: Request<RequestBody>,
) {
    let MirrorTarget {
        _slot,
        cluster,
        address,
        tls,
        protocol,
        in_flight,
    } = target;
    let exchange = async {
        let response = match protocol {
            UpstreamProtocol::Http1 => dataplane
                .upstream
                .send_http1(address, tls.as_deref(), request)
                .await?
                .map(UpstreamBody::Http1),
            UpstreamProtocol::H2c => dataplane
                .upstream
                .send_h2c(address, tls.as_deref(), request)
                .await?
                .map(UpstreamBody::Hyper),
        };
        let status = response.status();
        let body = ProxyBody::Upstream {
            body: response.into_body(),
            _in_flight: in_flight,
        };
        // Read to the end so that the connection goes back to its pool.
        let _ = body.collect().await;
        anyhow::Ok(status)
    };
    match tokio::time::timeout(MIRROR_TIMEOUT, exchange).await {
        Ok(Ok(status)) => tracing::debug!(%cluster, %status, "mirrored"),
        Ok(Err(error)) => tracing::debug!(%cluster, %error, "mirror failed"),
        Err(_) => tracing::debug!(%cluster, "mirror timed out"),
    }
}

/// A gRPC request (`content-type: application/grpc`, `+proto` and the like).
fn is_grpc<B>(request: &Request<B>) -> bool {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The rule for a request, or why there is none (with the listener's
/// gateway-phase filters, which run even then).
fn find_route<'t>(
    table: &'t Table,
    conn: &Connection,
    request: &Request<Incoming>,
) -> Result<Found<'t>, (ProxyError, Option<&'t Chain>)> {
    let authority = client_authority(request).map_err(|e| (e, None))?;
    let host = normalize_host(authority).map_err(|_| (ProxyError::BadRequest, None))?;
    if let Some(sni) = &conn.sni {
        check_sni(table, conn, sni, &host).map_err(|e| (e, None))?;
    }
    let view = RequestView {
        host: &host,
        method: request.method(),
        path: request.uri().path(),
        query: request.uri().query(),
        headers: Fields::Map(request.headers()),
    };
    // A CORS preflight asks on behalf of the request that would follow, so
    // it is answered by the CORS filter of the rule that request would
    // match (a rule matching `method: GET` answers the preflight of a GET);
    // without one there, it is routed as the OPTIONS request it is.
    if let Some(method) = preflight_method(request) {
        let asked = RequestView {
            method: &method,
            ..view
        };
        if let Lookup::Rule(found) = table.lookup(&conn.port, &asked)
            && found
                .rule
                .filters
                .as_ref()
                .is_some_and(|f| f.cors.is_some())
        {
            return Ok(found);
        }
    }
    match table.lookup(&conn.port, &view) {
        Lookup::Rule(found) => Ok(found),
        Lookup::NoRoute(chain) => Err((ProxyError::NoRoute, chain)),
        Lookup::NoPort | Lookup::NoListener => Err((ProxyError::NoRoute, None)),
    }
}

/// A request that matched no route still meets the listener's
/// gateway-phase filters: a refused client learns nothing about routes.
async fn unrouted(
    chain: &Chain,
    conn: &Connection,
    mut request: Request<Incoming>,
    error: ProxyError,
    grpc: bool,
    early: Passed,
) -> Result<Response<ProxyBody>, ProxyError> {
    let facts = RequestFacts {
        peer: conn.client.ip(),
        rule: "",
    };
    // `early` names what ran before a second lookup: not run again.
    match chain.run(facts, request.headers_mut(), early).await {
        Ok(_) => Err(error),
        Err(local) => Ok(local_response(local, grpc)),
    }
}

/// A filter's own answer. A gRPC client gets it as a gRPC status (the
/// gRPC HTTP mapping: 401 UNAUTHENTICATED, 403 PERMISSION_DENIED, 429 and
/// the size limits RESOURCE_EXHAUSTED), unless it is a success a
/// staticResponse chose to give.
fn local_response(local: Local, grpc: bool) -> Response<ProxyBody> {
    let code = match local.status.as_u16() {
        _ if !grpc || local.status.is_success() => None,
        401 => Some(16u16),
        403 => Some(7),
        413 | 429 | 431 => Some(8),
        _ => Some(13),
    };
    if let Some(code) = code {
        let mut response = Response::new(ProxyBody::Local(Bytes::new().into()));
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        headers.insert("grpc-status", HeaderValue::from(code));
        for (name, value) in local.headers {
            if name != header::CONTENT_TYPE {
                headers.append(name, value);
            }
        }
        return response;
    }
    let mut response = Response::new(ProxyBody::Local(local.body.into()));
    *response.status_mut() = local.status;
    let headers = response.headers_mut();
    for (name, value) in local.headers {
        headers.append(name, value);
    }
    response
}

/// A filter's refusal, with the rule's CORS headers for an actual CORS
/// request: a browser shows the page the refusal only with them.
fn refusal(
    local: Local,
    grpc: bool,
    cors: Option<Vec<(http::HeaderName, HeaderValue)>>,
) -> Response<ProxyBody> {
    let mut response = local_response(local, grpc);
    if let Some(headers) = cors {
        filters::add_cors(response.headers_mut(), headers);
    }
    response
}

/// Removes the client's copies of the headers the listener's jwtAuth
/// filters write claims to (see `Listener::claim_headers`).
fn strip_claim_headers(table: &Table, conn: &Connection, request: &mut Request<Incoming>) {
    if !table.strips_claim_headers() {
        return;
    }
    let Some(port) = table.port(&conn.port) else {
        return;
    };
    let listener = {
        let Ok(authority) = client_authority(request) else {
            return;
        };
        let Ok(host) = normalize_host(authority) else {
            return;
        };
        port.listener(&host)
    };
    for name in listener.iter().flat_map(|l| l.claim_headers.iter()) {
        request.headers_mut().remove(name);
    }
}

/// The method a CORS preflight (Fetch standard: an OPTIONS request with
/// `Origin` and `Access-Control-Request-Method`) asks about.
fn preflight_method<B>(request: &Request<B>) -> Option<http::Method> {
    if request.method() != http::Method::OPTIONS {
        return None;
    }
    let headers = request.headers();
    if !headers.contains_key(header::ORIGIN) {
        return None;
    }
    let asked = headers.get(header::ACCESS_CONTROL_REQUEST_METHOD)?;
    http::Method::from_bytes(asked.as_bytes()).ok()
}

/// Gateway API (`Listener.hostname` for HTTPS, and the conformance test
/// HTTPRouteHTTPSListenerDetectMisdirectedRequests): a request whose Host
/// selects another listener than the SNI name did is answered 421
/// Misdirected Request (RFC 9110 §15.5.20), so a certificate for one
/// hostname never fronts another listener's routes.
pub(super) fn check_sni(
    table: &Table,
    conn: &Connection,
    sni: &str,
    host: &str,
) -> Result<(), ProxyError> {
    let Some(port) = table.port(&conn.port) else {
        return Ok(());
    };
    let sni = normalize_host(sni).map_err(|_| ProxyError::BadRequest)?;
    match (port.listener_position(&sni), port.listener_position(host)) {
        (Some(by_sni), Some(by_host)) if by_sni != by_host => Err(ProxyError::Misdirected),
        _ => Ok(()),
    }
}

/// The authority the client addressed: the URI's (HTTP/2, or HTTP/1.1
/// absolute-form, RFC 9112 §3.2.2), else the one Host header.
pub(super) fn client_authority<B>(request: &Request<B>) -> Result<&str, ProxyError> {
    if let Some(authority) = request.uri().authority() {
        return Ok(authority.as_str());
    }
    let mut hosts = request.headers().get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(host), None) => host.to_str().map_err(|_| ProxyError::BadRequest),
        _ => Err(ProxyError::BadRequest),
    }
}

/// Rewrites the client request for the upstream hop. HTTP/1.1 upstreams get
/// an origin-form URI (the pool connects to the endpoint) and the client's
/// authority in Host; h2c upstreams get the client's authority in the URI
/// (`:authority`) and no Host.
fn upstream_request<B>(
    request: Request<B>,
    conn: &Connection,
    protocol: UpstreamProtocol,
    tls: bool,
) -> Result<Request<B>, ProxyError> {
    let uri_authority = request.uri().authority().cloned();
    let (mut parts, body) = request.into_parts();
    // Checked as an authority whichever header carries it, so that what an
    // upstream receives always parses as one.
    let authority = match uri_authority {
        Some(authority) => authority,
        None => host_authority(&parts.headers)?,
    };
    headers::remove_hop_by_hop(&mut parts.headers);
    headers::add_forwarding(
        &mut parts.headers,
        conn.client.ip().to_canonical(),
        if conn.tls { "https" } else { "http" },
        rand::random,
    );
    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| uri::PathAndQuery::from_static("/"));
    match protocol {
        UpstreamProtocol::Http1 => {
            // A Host header the client sent already holds the authority.
            if parts.uri.authority().is_some() || !parts.headers.contains_key(header::HOST) {
                let host = HeaderValue::from_maybe_shared(Bytes::copy_from_slice(
                    authority.as_str().as_bytes(),
                ))
                .map_err(|_| ProxyError::BadRequest)?;
                parts.headers.insert(header::HOST, host);
            }
            parts.version = Version::HTTP_11;
            parts.uri = Uri::from(path);
        }
        UpstreamProtocol::H2c => {
            parts.headers.remove(header::HOST);
            let mut uri_parts = uri::Parts::default();
            // RFC 9113 §8.3.1: the scheme of the hop, https over TLS.
            uri_parts.scheme = Some(if tls {
                uri::Scheme::HTTPS
            } else {
                uri::Scheme::HTTP
            });
            uri_parts.authority = Some(authority);
            uri_parts.path_and_query = Some(path);
            parts.version = Version::HTTP_2;
            parts.uri = Uri::from_parts(uri_parts).map_err(|_| ProxyError::BadRequest)?;
        }
    }
    Ok(Request::from_parts(parts, body))
}

/// The one Host header as an authority.
fn host_authority(headers: &http::HeaderMap) -> Result<uri::Authority, ProxyError> {
    let mut hosts = headers.get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(host), None) => {
            uri::Authority::try_from(host.as_bytes()).map_err(|_| ProxyError::BadRequest)
        }
        _ => Err(ProxyError::BadRequest),
    }
}
