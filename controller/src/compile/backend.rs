//! backendRefs to clusters, per Gateway API `HTTPBackendRef` and
//! `ReferenceGrant`: only core Services (`InvalidKind` otherwise); a Service
//! in another namespace needs a ReferenceGrant there from HTTPRoutes of the
//! route's namespace (`RefNotPermitted`); a missing Service, a missing port
//! or a port the Service does not have is `BackendNotFound`. A resolved
//! reference becomes a cluster `namespace/service:port` whose endpoints are
//! the ready addresses of the Service's EndpointSlices for that port.

use std::collections::{BTreeMap, HashMap};

use gatehouse_snapshot::{Cluster, Endpoint, LoadBalancing, UpstreamProtocol};

use crate::compile::backend_tls::BackendTlsPolicies;
use crate::compile::grants::{Reference, ReferenceGrants};
use crate::k8s::{BackendRef, EndpointSlice, Service, ServicePort};
use crate::status::BackendFailure;
use crate::store::Store;

/// Service annotation choosing the load-balancing policy.
pub const LOAD_BALANCING_ANNOTATION: &str = "gatehouse.dev/load-balancing";
const H2C_APP_PROTOCOL: &str = "kubernetes.io/h2c";

type NsName<'a> = (&'a str, &'a str);

/// Services, EndpointSlices and ReferenceGrants indexed for lookups, and the
/// clusters built so far.
pub struct Backends<'a> {
    store: &'a Store,
    services: HashMap<NsName<'a>, &'a Service>,
    grants: ReferenceGrants<'a>,
    tls: BackendTlsPolicies<'a>,
    clusters: BTreeMap<String, Cluster>,
}

fn ns_name(meta: &crate::k8s::ObjectMeta) -> NsName<'_> {
    (
        meta.namespace.as_deref().unwrap_or("default"),
        meta.name.as_deref().unwrap_or(""),
    )
}

impl<'a> Backends<'a> {
    pub fn new(store: &'a Store) -> Self {
        let services = store
            .services()
            .map(|s| (ns_name(&s.metadata), s))
            .collect();
        Backends {
            store,
            services,
            grants: ReferenceGrants::new(store),
            tls: BackendTlsPolicies::new(store),
            clusters: BTreeMap::new(),
        }
    }

    /// Resolves one backendRef of a route in `route_ns` to a cluster name;
    /// `field` spells its path (e.g. `spec.rules[0].backendRefs[1]`), for
    /// messages only.
    pub fn resolve(
        &mut self,
        route_ns: &str,
        field: impl Fn() -> String,
        r: &BackendRef,
        route_kind: &str,
    ) -> Result<String, BackendFailure> {
        // gRPC needs HTTP/2 to the backend, whatever the port's appProtocol.
        let force_h2c = route_kind == "GRPCRoute";
        let group = r.group.as_deref().unwrap_or("");
        let kind = r.kind.as_deref().unwrap_or("Service");
        if !group.is_empty() || kind != "Service" {
            return Err(BackendFailure::InvalidKind(format!(
                "{}: kind {kind:?} of group {group:?} is not supported; supported: Service",
                field()
            )));
        }
        let ns = r.namespace.as_deref().unwrap_or(route_ns);
        let reference = Reference {
            from_kind: route_kind,
            from_namespace: route_ns,
            to_kind: "Service",
            to_namespace: ns,
            to_name: &r.name,
        };
        if ns != route_ns && !self.grants.allow(&reference) {
            return Err(BackendFailure::RefNotPermitted(format!(
                "{}: Service \"{}\" in namespace {ns:?} is not allowed by any ReferenceGrant in that namespace",
                field(),
                r.name
            )));
        }
        let Some(service) = self.services.get(&(ns, r.name.as_str())).copied() else {
            return Err(BackendFailure::BackendNotFound(format!(
                "{}: Service \"{}\" not found in namespace {ns:?}",
                field(),
                r.name
            )));
        };
        let Some(port) = r.port else {
            return Err(BackendFailure::BackendNotFound(format!(
                "{}: port is required for a Service backend",
                field()
            )));
        };
        let ports = service
            .spec
            .as_ref()
            .and_then(|s| s.ports.as_deref())
            .unwrap_or_default();
        let Some(service_port) = ports.iter().find(|p| p.port == port) else {
            return Err(BackendFailure::BackendNotFound(format!(
                "{}: Service \"{}\" in namespace {ns:?} has no port {port}",
                field(),
                r.name
            )));
        };
        // gRPC forces HTTP/2 on a port that does not declare it: that is
        // another cluster than the HTTP/1.1 one of the same port.
        let h2c = force_h2c && service_port.app_protocol.as_deref() != Some(H2C_APP_PROTOCOL);
        let name = cluster_name(ns, &r.name, port, h2c);
        if !self.clusters.contains_key(&name) {
            let mut cluster = self.cluster(name.clone(), ns, service, service_port);
            if h2c {
                cluster.protocol = UpstreamProtocol::H2c as i32;
            }
            self.clusters.insert(name.clone(), cluster);
        }
        Ok(name)
    }

    /// The BackendTLSPolicies, for their status.
    pub fn tls_policies(&self) -> &BackendTlsPolicies<'a> {
        &self.tls
    }

    /// A built cluster, by name.
    pub fn get(&self, name: &str) -> Option<&Cluster> {
        self.clusters.get(name)
    }

    fn cluster(&self, name: String, ns: &str, service: &Service, port: &ServicePort) -> Cluster {
        let service_name = service.metadata.name.as_deref().unwrap_or("");
        let endpoints = service_endpoints(self.store, ns, service_name, port);
        let least_request = service
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(LOAD_BALANCING_ANNOTATION))
            .is_some_and(|v| v == "least-request");
        let h2c = port.app_protocol.as_deref() == Some(H2C_APP_PROTOCOL);
        let tls = self
            .tls
            .for_port(ns, service_name, port.name.as_deref().unwrap_or(""))
            .map(|(_, tls, _)| tls);
        Cluster {
            name,
            endpoints,
            load_balancing: if least_request {
                LoadBalancing::LeastRequest
            } else {
                LoadBalancing::RoundRobin
            } as i32,
            protocol: if h2c {
                UpstreamProtocol::H2c
            } else {
                UpstreamProtocol::Http1
            } as i32,
            tls,
        }
    }
}

/// The cluster of a Service port: `namespace/service:port`, with `+h2c`
/// for the HTTP/2 variant a GRPCRoute forces on a port that does not
/// declare it.
fn cluster_name(ns: &str, service: &str, port: i32, h2c: bool) -> String {
    match h2c {
        true => format!("{ns}/{service}:{port}+h2c"),
        false => format!("{ns}/{service}:{port}"),
    }
}

/// The (namespace, Service, port) a cluster name was made from.
pub fn cluster_source(name: &str) -> Option<(&str, &str, i32)> {
    let (ns, rest) = name.split_once('/')?;
    let rest = rest.strip_suffix("+h2c").unwrap_or(rest);
    let (service, port) = rest.rsplit_once(':')?;
    Some((ns, service, port.parse().ok()?))
}

/// The ready endpoints of a Service port over all of the Service's
/// EndpointSlices, sorted, without repeats.
pub fn service_endpoints(
    store: &Store,
    ns: &str,
    service: &str,
    port: &ServicePort,
) -> Vec<Endpoint> {
    let mut endpoints: Vec<Endpoint> = store
        .endpoint_slices_of(ns, service)
        .flat_map(|s| ready_endpoints(s, port))
        .collect();
    endpoints.sort_by(|a, b| (&a.address, a.port).cmp(&(&b.address, b.port)));
    endpoints.dedup();
    endpoints
}

/// Endpoints of one slice for a Service port: the slice port with the same
/// name (both may be empty), ready (absent counts as ready) and not
/// terminating, every address of each.
fn ready_endpoints(slice: &EndpointSlice, service_port: &ServicePort) -> Vec<Endpoint> {
    if slice.address_type == "FQDN" {
        return Vec::new();
    }
    let wanted = service_port.name.as_deref().unwrap_or("");
    let port = slice
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref().unwrap_or("") == wanted)
        .and_then(|p| p.port)
        .and_then(|p| u32::try_from(p).ok());
    let Some(port) = port else {
        return Vec::new();
    };
    slice
        .endpoints
        .iter()
        .filter(|e| {
            let c = e.conditions.as_ref();
            c.and_then(|c| c.ready) != Some(false) && c.and_then(|c| c.terminating) != Some(true)
        })
        .flat_map(|e| e.addresses.iter())
        .map(|address| Endpoint {
            address: address.clone(),
            port,
        })
        .collect()
}
