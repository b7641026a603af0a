//! Backend and endpoint choice. Gateway API v1 `BackendRef.weight`:
//! "Weight specifies the proportion of requests forwarded to the referenced
//! backend. This is computed as weight/(sum of all weights in this
//! BackendRefs list)." and "If all entries in BackendRefs are invalid, and
//! there are also no filters specified in this route rule, all traffic which
//! matches this rule MUST receive a 500 status code."
//!
//! Random numbers come from the caller, so these choices stay pure.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use gatehouse_snapshot::{LoadBalancing, UpstreamProtocol};
use http::uri::Authority;

use super::filters::Filters;
use crate::stats::RouteStats;

/// One route rule: where its matches send traffic.
#[derive(Debug)]
pub struct Rule {
    /// "namespace/name" of the route, the metrics label.
    pub route: Arc<str>,
    /// Readable origin, for logs.
    pub object: Arc<str>,
    pub backends: Box<[Backend]>,
    pub total_weight: u64,
    pub stats: Arc<RouteStats>,
    /// None when the rule has no filters: the common case costs one branch.
    pub filters: Option<Box<Filters>>,
    /// `timeouts.request`: until the response starts.
    pub request_timeout: Option<Duration>,
    /// `timeouts.backendRequest`: per upstream attempt.
    pub backend_timeout: Option<Duration>,
    /// `retry`: None without one, so the common case costs one branch.
    pub retry: Option<Box<super::RetryPolicy>>,
}

#[derive(Debug)]
pub struct Backend {
    pub weight: u32,
    pub target: Target,
    pub filters: Option<Box<Filters>>,
}

#[derive(Debug, Clone)]
pub enum Target {
    /// Index into the table's clusters.
    Cluster(usize),
    /// Unresolvable backendRef; its share is answered with 500.
    Invalid(Arc<str>),
}

impl Rule {
    /// The backend for `roll` (any u64): weight/(sum of weights). `None`
    /// when no backend has weight.
    pub fn pick_backend(&self, roll: u64) -> Option<&Backend> {
        if self.total_weight == 0 {
            return None;
        }
        let mut point = roll % self.total_weight;
        for backend in &self.backends {
            let weight = u64::from(backend.weight);
            if point < weight {
                return Some(backend);
            }
            point -= weight;
        }
        None
    }
}

/// An upstream cluster with its carried-over balancing state.
#[derive(Debug)]
pub struct Cluster {
    pub name: Arc<str>,
    pub endpoints: Box<[Endpoint]>,
    pub load_balancing: LoadBalancing,
    pub protocol: UpstreamProtocol,
    /// BackendTLSPolicy: connections to the endpoints use TLS.
    pub tls: Option<Arc<super::UpstreamTls>>,
    /// The same TLS presenting each of the snapshot's Gateway client
    /// certificates (empty without TLS).
    pub tls_with_identity: Box<[Arc<super::UpstreamTls>]>,
    /// Round-robin position, shared with the previous table's cluster of the
    /// same name.
    pub next: Arc<AtomicUsize>,
}

#[derive(Debug)]
pub struct Endpoint {
    pub address: SocketAddr,
    pub authority: Authority,
    /// Requests in flight, shared with the previous table's endpoint of the
    /// same cluster and address.
    pub in_flight: Arc<AtomicUsize>,
}

impl Cluster {
    /// The TLS settings for a request that came through a Gateway with
    /// client certificate `identity` (1 + index; 0 for none).
    pub fn tls_for(&self, identity: usize) -> Option<&Arc<super::UpstreamTls>> {
        match identity.checked_sub(1) {
            None => self.tls.as_ref(),
            Some(index) => self.tls_with_identity.get(index).or(self.tls.as_ref()),
        }
    }

    /// Round robin takes the next position; least request compares two
    /// random endpoints' in-flight counts (power of two choices).
    pub fn pick_endpoint(&self, roll: u64) -> Option<&Endpoint> {
        let count = self.endpoints.len();
        match (count, self.load_balancing) {
            (0, _) => None,
            (1, _) => self.endpoints.first(),
            (_, LoadBalancing::RoundRobin) => {
                let position = self.next.fetch_add(1, Ordering::Relaxed);
                self.endpoints.get(position % count)
            }
            (_, LoadBalancing::LeastRequest) => {
                let count64 = count as u64;
                let first = (roll % count64) as usize;
                // A second index distinct from the first.
                let offset = ((roll >> 32) % (count64 - 1)) as usize + 1;
                let second = (first + offset) % count;
                let (a, b) = (&self.endpoints[first], &self.endpoints[second]);
                let load = |e: &Endpoint| e.in_flight.load(Ordering::Relaxed);
                Some(if load(b) < load(a) { b } else { a })
            }
        }
    }
}

/// Counts a request in flight on an endpoint until dropped.
#[derive(Debug)]
pub struct InFlight(Arc<AtomicUsize>);

impl Endpoint {
    pub fn begin(&self) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.in_flight.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(port: u16) -> Endpoint {
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        Endpoint {
            address,
            authority: Authority::try_from(address.to_string()).unwrap(),
            in_flight: Arc::default(),
        }
    }

    fn cluster(load_balancing: LoadBalancing, ports: &[u16]) -> Cluster {
        Cluster {
            name: "ns/svc:80".into(),
            endpoints: ports.iter().map(|p| endpoint(*p)).collect(),
            load_balancing,
            protocol: UpstreamProtocol::Http1,
            tls: None,
            tls_with_identity: Box::default(),
            next: Arc::default(),
        }
    }

    #[test]
    fn weights_split_proportionally_and_zero_never_wins() {
        let rule = Rule {
            route: "ns/r".into(),
            object: "HTTPRoute ns/r".into(),
            backends: vec![
                Backend {
                    weight: 1,
                    target: Target::Cluster(0),
                    filters: None,
                },
                Backend {
                    weight: 0,
                    target: Target::Cluster(1),
                    filters: None,
                },
                Backend {
                    weight: 3,
                    target: Target::Invalid("gone".into()),
                    filters: None,
                },
            ]
            .into(),
            total_weight: 4,
            stats: Arc::new(RouteStats::new("ns/r".into())),
            filters: None,
            request_timeout: None,
            backend_timeout: None,
            retry: None,
        };
        let picks: Vec<_> = (0..4)
            .map(|roll| rule.pick_backend(roll).unwrap().weight)
            .collect();
        assert_eq!(picks, [1, 3, 3, 3]);
    }

    #[test]
    fn round_robin_cycles() {
        let c = cluster(LoadBalancing::RoundRobin, &[1, 2, 3]);
        let ports: Vec<_> = (0..6)
            .map(|_| c.pick_endpoint(0).unwrap().address.port())
            .collect();
        assert_eq!(ports, [1, 2, 3, 1, 2, 3]);
    }

    #[test]
    fn least_request_prefers_the_idle_of_two() {
        let c = cluster(LoadBalancing::LeastRequest, &[1, 2]);
        let _busy = c.endpoints[0].begin();
        for roll in 0..16 {
            assert_eq!(c.pick_endpoint(roll).unwrap().address.port(), 2);
        }
        drop(_busy);
        assert_eq!(c.endpoints[0].in_flight.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn no_endpoints_is_none() {
        assert!(
            cluster(LoadBalancing::RoundRobin, &[])
                .pick_endpoint(0)
                .is_none()
        );
    }
}
