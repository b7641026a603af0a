//! The runtime table: a validated, pre-digested snapshot, and request
//! matching by Gateway API v1 HTTPRoute precedence (`HTTPRouteRule.matches`,
//! "Precedence" in the HTTPRoute spec). The controller sorts by precedence;
//! this module honours snapshot order: per port, the first listener whose
//! hostname matches; in it the exact virtual host, then each matching
//! wildcard longest first, then the "" one; the first matching RouteMatch.
//!
//! Pure: no sockets, clocks or spawns. Per-cluster and per-route state
//! (atomics) is carried over from the previous table by stable keys.
//!
//! A table is its routing (everything but endpoints) and its clusters, apart:
//! an endpoint update (`update.rs`) makes a new table that shares the
//! routing and every unchanged cluster with the one before.

mod backend;
mod build;
mod error;
mod filters;
mod host;
mod matching;
mod retry;
mod tls;
mod update;
mod upstream_tls;

use std::{collections::HashMap, net::IpAddr, sync::Arc};

pub use backend::{Backend, Cluster, Endpoint, InFlight, Rule, Target};
pub use error::{BuildError, describe};
pub use filters::{
    CorsDecision, Filters, HeaderModifier, Mirror, PathRewrite, Redirect, RedirectRequest, Rewrite,
    Scheme,
};
pub use gatehouse_snapshot::Snapshot;

use crate::filters::{Chain, Filter};
pub use host::{HostError, HostPattern, normalize_host};
pub use matching::{Fields, PathMatch, RequestView, RouteMatch};
pub use retry::RetryPolicy;
pub use update::Updated;
pub use upstream_tls::UpstreamTls;

/// A bound socket: the address and the port actually bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortKey {
    pub address: IpAddr,
    pub bind_port: u16,
}

impl PortKey {
    pub fn socket_addr(&self) -> std::net::SocketAddr {
        (self.address, self.bind_port).into()
    }
}

impl std::fmt::Display for PortKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.socket_addr().fmt(f)
    }
}

/// The immutable routing state built from one snapshot, and its clusters.
#[derive(Debug)]
pub struct Table {
    version: Box<str>,
    routing: Arc<Routing>,
    clusters: Box<[Arc<Cluster>]>,
}

/// Everything of a table that endpoint updates leave alone.
#[derive(Debug)]
struct Routing {
    /// The last whole snapshot; its endpoints are those it came with.
    snapshot: Arc<Snapshot>,
    ports: HashMap<PortKey, Port>,
    /// In snapshot order, for binding.
    port_keys: Box<[PortKey]>,
    rules: Box<[Rule]>,
    /// gatehouse.dev filters, and the chains over them.
    filters: Box<[Arc<Filter>]>,
    chains: Box<[Arc<Chain>]>,
    /// Some listener removes claim headers: without one, a request need not
    /// look for its listener before routing.
    strips_claim_headers: bool,
}

#[derive(Debug)]
pub struct Port {
    /// The port clients see.
    pub port: u16,
    pub scheme: Scheme,
    /// HTTPS: the handshake config, certificates picked by SNI.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Connections open with a PROXY protocol header naming the client.
    pub proxy_protocol: bool,
    pub listeners: Box<[Listener]>,
}

#[derive(Debug)]
pub struct Listener {
    pub object: Arc<str>,
    pub hostname: HostPattern,
    exact: HashMap<Box<str>, VirtualHost>,
    /// (suffix ".example.com", host), longest suffix first.
    wildcards: Box<[(Box<str>, VirtualHost)]>,
    any: Option<VirtualHost>,
    /// 1 + chain index of the gateway-phase filters, for requests that
    /// match no route; 0 for none.
    chain: usize,
    /// Headers the listener's and its Gateway's jwtAuth filters write
    /// claims to: removed from each client request before routing, so that
    /// no route, filter or backend takes a client's copy for a verified
    /// claim, whichever filters then run.
    pub claim_headers: Box<[http::HeaderName]>,
}

#[derive(Debug, Default)]
pub struct VirtualHost {
    pub matches: Box<[RouteMatch]>,
}

impl VirtualHost {
    /// The first RouteMatch in precedence (snapshot) order.
    pub fn find(&self, request: &RequestView<'_>) -> Option<&RouteMatch> {
        self.matches.iter().find(|m| m.matches(request))
    }
}

/// What a request found in the table.
#[derive(Debug)]
pub enum Lookup<'t> {
    /// No port in the table for the socket (it is being removed).
    NoPort,
    /// No listener of the port matches the host.
    NoListener,
    /// No route matched; the listener's gateway-phase filters still run.
    NoRoute(Option<&'t Chain>),
    Rule(Found<'t>),
}

/// The port, match and rule a request found.
#[derive(Debug, Clone, Copy)]
pub struct Found<'t> {
    pub port: &'t Port,
    pub route_match: &'t RouteMatch,
    pub rule: &'t Rule,
    /// The gatehouse.dev filters this request runs through.
    pub chain: Option<&'t Chain>,
}

impl Found<'_> {
    /// Nothing between the client and the backend but the proxying itself:
    /// no filters, gatehouse.dev chain, request timeout or retries.
    pub fn is_plain(&self) -> bool {
        let rule = self.rule;
        rule.filters.is_none()
            && rule.request_timeout.is_none()
            && rule.retry.is_none()
            && self.chain.is_none()
    }
}

impl Table {
    /// An empty table, served before the first snapshot.
    pub fn empty() -> Self {
        Self {
            version: Box::default(),
            routing: Arc::new(Routing {
                snapshot: Arc::default(),
                ports: HashMap::new(),
                port_keys: Box::default(),
                rules: Box::default(),
                filters: Box::default(),
                chains: Box::default(),
                strips_claim_headers: false,
            }),
            clusters: Box::default(),
        }
    }

    /// Whether any listener removes claim headers (`Listener::claim_headers`).
    pub fn strips_claim_headers(&self) -> bool {
        self.routing.strips_claim_headers
    }

    /// Chain `1 + index`, or none for 0.
    pub fn chain(&self, one_based: usize) -> Option<&Chain> {
        one_based
            .checked_sub(1)
            .and_then(|i| self.routing.chains.get(i))
            .map(|c| &**c)
    }

    pub fn filters(&self) -> &[Arc<Filter>] {
        &self.routing.filters
    }

    /// The snapshot this table serves, endpoint updates included (put
    /// together on each call: for debug output, not the request path).
    pub fn snapshot(&self) -> Snapshot {
        let mut snapshot = Snapshot::clone(&self.routing.snapshot);
        if snapshot.version.as_str() != &*self.version {
            snapshot.version = self.version.to_string();
            for (pb, cluster) in snapshot.clusters.iter_mut().zip(&self.clusters) {
                pb.endpoints = cluster
                    .endpoints
                    .iter()
                    .map(|e| gatehouse_snapshot::Endpoint {
                        address: e.address.ip().to_string(),
                        port: u32::from(e.address.port()),
                    })
                    .collect();
            }
        }
        snapshot
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn port_keys(&self) -> &[PortKey] {
        &self.routing.port_keys
    }

    pub fn port(&self, key: &PortKey) -> Option<&Port> {
        self.routing.ports.get(key)
    }

    pub fn rules(&self) -> &[Rule] {
        &self.routing.rules
    }

    pub fn clusters(&self) -> &[Arc<Cluster>] {
        &self.clusters
    }

    pub fn cluster(&self, index: usize) -> &Cluster {
        &self.clusters[index]
    }

    /// Port, listener, then route: the whole match for one request.
    pub fn lookup(&self, key: &PortKey, request: &RequestView<'_>) -> Lookup<'_> {
        let Some(port) = self.port(key) else {
            return Lookup::NoPort;
        };
        let Some(listener) = port.listener(request.host) else {
            return Lookup::NoListener;
        };
        match listener.find(request) {
            Some(route_match) => Lookup::Rule(Found {
                port,
                route_match,
                rule: &self.routing.rules[route_match.rule],
                chain: self.chain(route_match.chain),
            }),
            None => Lookup::NoRoute(self.chain(listener.chain)),
        }
    }
}

impl Port {
    /// The first listener, in snapshot order, whose hostname matches.
    pub fn listener(&self, host: &str) -> Option<&Listener> {
        self.listeners.iter().find(|l| l.hostname.matches(host))
    }

    /// Position of [`Port::listener`]'s answer.
    pub fn listener_position(&self, host: &str) -> Option<usize> {
        self.listeners.iter().position(|l| l.hostname.matches(host))
    }
}

impl Listener {
    /// The first matching RouteMatch of the exact virtual host, then of each
    /// matching wildcard (longest first), then of the "" virtual host.
    pub fn find(&self, request: &RequestView<'_>) -> Option<&RouteMatch> {
        if let Some(found) = self.exact.get(request.host).and_then(|v| v.find(request)) {
            return Some(found);
        }
        let wildcard = self
            .wildcards
            .iter()
            .filter(|(suffix, _)| host::wildcard_matches(suffix, request.host))
            .find_map(|(_, vhost)| vhost.find(request));
        wildcard.or_else(|| self.any.as_ref().and_then(|v| v.find(request)))
    }
}

#[cfg(test)]
mod tests;
