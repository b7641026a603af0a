//! The request path: one table load, route lookup, backend and endpoint
//! choice, header rewriting (see `headers`), the upstream call, and the
//! status mapping of every failure. No locks; the table `Arc` is cloned once
//! before the first `.await`.

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Instant};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, Uri, Version, header, uri};
use hyper::body::Incoming;

use super::{Dataplane, body::ProxyBody, headers};
use crate::table::{Lookup, PortKey, RequestView, Rule, Table, Target, normalize_host};
use gatehouse_snapshot::UpstreamProtocol;

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
}

impl ProxyError {
    pub fn status(self) -> StatusCode {
        match self {
            Self::BadRequest => StatusCode::BAD_REQUEST,
            Self::NoRoute => StatusCode::NOT_FOUND,
            Self::NoBackend | Self::InvalidBackend => StatusCode::INTERNAL_SERVER_ERROR,
            Self::NoEndpoints => StatusCode::SERVICE_UNAVAILABLE,
            Self::Connect | Self::Upstream => StatusCode::BAD_GATEWAY,
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
        }
    }

    fn response(self) -> Response<ProxyBody> {
        let mut response = Response::new(ProxyBody::text(self.label()));
        *response.status_mut() = self.status();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        response
    }
}

impl Dataplane {
    /// Serves one request that arrived on the socket `port`. Never fails:
    /// errors are answered locally; the `Result` is hyper's service shape,
    /// returned as is so that no wrapping future copies this one.
    pub(crate) async fn handle(
        self: Arc<Self>,
        port: PortKey,
        client: SocketAddr,
        request: Request<Incoming>,
    ) -> Result<Response<ProxyBody>, Infallible> {
        let started = Instant::now();
        let table = self.table.load_full();
        let found = find_rule(&table, &port, &request);
        let (stats, result) = match found {
            Ok(rule) => (
                &rule.stats,
                self.forward(&table, rule, client, request).await,
            ),
            Err(error) => (self.stats.no_route(), Err(error)),
        };
        let response = result.unwrap_or_else(|error| {
            tracing::debug!(error = error.label(), %client, "answered locally");
            error.response()
        });
        stats.record(response.status().as_u16(), started.elapsed());
        Ok(response)
    }

    async fn forward(
        &self,
        table: &Table,
        rule: &Rule,
        client: SocketAddr,
        request: Request<Incoming>,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let backend = rule
            .pick_backend(rand::random())
            .ok_or(ProxyError::NoBackend)?;
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
        let in_flight = endpoint.begin();
        let protocol = cluster.protocol;
        let upstream_request = upstream_request(request, client, protocol)?;
        let sent = match protocol {
            UpstreamProtocol::Http1 => self
                .upstream
                .send_http1(endpoint.address, upstream_request)
                .await
                .map(|(response, connection)| (response, Some(connection))),
            UpstreamProtocol::H2c => self
                .upstream
                .send_h2c(endpoint.address, upstream_request)
                .await
                .map(|response| (response, None)),
        };
        let (response, connection) = sent.map_err(|error| {
            tracing::debug!(cluster = %cluster.name, %error, "upstream failed");
            match error {
                super::upstream::UpstreamError::Connect(..) => ProxyError::Connect,
                super::upstream::UpstreamError::Request(_) => ProxyError::Upstream,
            }
        })?;
        let (mut parts, body) = response.into_parts();
        headers::remove_hop_by_hop(&mut parts.headers);
        Ok(Response::from_parts(
            parts,
            ProxyBody::Upstream {
                body,
                _in_flight: in_flight,
                connection,
            },
        ))
    }
}

/// The rule for a request, or why there is none.
fn find_rule<'t>(
    table: &'t Table,
    port: &PortKey,
    request: &Request<Incoming>,
) -> Result<&'t Rule, ProxyError> {
    let authority = client_authority(request)?;
    let host = normalize_host(authority).map_err(|_| ProxyError::BadRequest)?;
    let view = RequestView {
        host: &host,
        method: request.method(),
        path: request.uri().path(),
        query: request.uri().query(),
        headers: request.headers(),
    };
    match table.lookup(port, &view) {
        Lookup::Rule(rule) => Ok(rule),
        Lookup::NoPort | Lookup::NoListener | Lookup::NoRoute => Err(ProxyError::NoRoute),
    }
}

/// The authority the client addressed: the URI's (HTTP/2, or HTTP/1.1
/// absolute-form, RFC 9112 §3.2.2), else the one Host header.
fn client_authority<B>(request: &Request<B>) -> Result<&str, ProxyError> {
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
fn upstream_request(
    request: Request<Incoming>,
    client: SocketAddr,
    protocol: UpstreamProtocol,
) -> Result<Request<Incoming>, ProxyError> {
    let uri_authority = request.uri().authority().cloned();
    let (mut parts, body) = request.into_parts();
    // Checked as an authority whichever header carries it, so that what an
    // upstream receives always parses as one.
    let authority = match uri_authority {
        Some(authority) => authority,
        None => host_authority(&parts.headers)?,
    };
    headers::remove_hop_by_hop(&mut parts.headers);
    headers::add_forwarding(&mut parts.headers, client.ip().to_canonical(), rand::random);
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
            uri_parts.scheme = Some(uri::Scheme::HTTP);
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
