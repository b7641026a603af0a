//! Typed objects from any source (Kubernetes watches, manifest files), keyed
//! and iterated in a deterministic order so that compile never depends on
//! insertion order.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::api::Filter;
use crate::k8s::{
    BackendTlsPolicy, ConfigMap, EndpointSlice, Gateway, GatewayClass, GrpcRoute, HttpRoute,
    Namespace, ObjectMeta, ReferenceGrant, Secret, Service,
};

/// The kinds the controller knows. The order is the store's iteration order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    GatewayClass,
    Gateway,
    HttpRoute,
    GrpcRoute,
    ReferenceGrant,
    Service,
    EndpointSlice,
    Namespace,
    Secret,
    ConfigMap,
    BackendTlsPolicy,
    Filter,
    /// A Secret holding a JWKS for jwtAuth filters, watched apart from TLS
    /// Secrets in Kubernetes mode (by its label); manifests load every
    /// Secret as `Secret`.
    JwksSecret,
}

impl Kind {
    /// The Kubernetes spelling of the kind.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::GatewayClass => "GatewayClass",
            Kind::Gateway => "Gateway",
            Kind::HttpRoute => "HTTPRoute",
            Kind::GrpcRoute => "GRPCRoute",
            Kind::ReferenceGrant => "ReferenceGrant",
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Namespace => "Namespace",
            Kind::Secret => "Secret",
            Kind::ConfigMap => "ConfigMap",
            Kind::BackendTlsPolicy => "BackendTLSPolicy",
            Kind::Filter => "Filter",
            Kind::JwksSecret => "Secret",
        }
    }

    /// Cluster-scoped kinds have no namespace.
    pub fn is_namespaced(self) -> bool {
        !matches!(self, Kind::GatewayClass | Kind::Namespace)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Identity of a stored object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    pub kind: Kind,
    pub namespace: Option<String>,
    pub name: String,
}

impl ObjectKey {
    pub fn new(kind: Kind, namespace: Option<&str>, name: &str) -> Self {
        ObjectKey {
            kind,
            namespace: namespace.map(str::to_owned),
            name: name.to_owned(),
        }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {}/{}", self.kind, ns, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

/// One object of a kind the controller knows.
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    GatewayClass(Box<GatewayClass>),
    Gateway(Box<Gateway>),
    HttpRoute(Box<HttpRoute>),
    GrpcRoute(Box<GrpcRoute>),
    ReferenceGrant(Box<ReferenceGrant>),
    Service(Box<Service>),
    EndpointSlice(Box<EndpointSlice>),
    Namespace(Box<Namespace>),
    Secret(Box<Secret>),
    ConfigMap(Box<ConfigMap>),
    BackendTlsPolicy(Box<BackendTlsPolicy>),
    Filter(Box<Filter>),
    JwksSecret(Box<Secret>),
}

impl Object {
    pub fn kind(&self) -> Kind {
        match self {
            Object::GatewayClass(_) => Kind::GatewayClass,
            Object::Gateway(_) => Kind::Gateway,
            Object::HttpRoute(_) => Kind::HttpRoute,
            Object::GrpcRoute(_) => Kind::GrpcRoute,
            Object::ReferenceGrant(_) => Kind::ReferenceGrant,
            Object::Service(_) => Kind::Service,
            Object::EndpointSlice(_) => Kind::EndpointSlice,
            Object::Namespace(_) => Kind::Namespace,
            Object::Secret(_) => Kind::Secret,
            Object::ConfigMap(_) => Kind::ConfigMap,
            Object::BackendTlsPolicy(_) => Kind::BackendTlsPolicy,
            Object::Filter(_) => Kind::Filter,
            Object::JwksSecret(_) => Kind::JwksSecret,
        }
    }

    pub fn key(&self) -> ObjectKey {
        let meta = self.meta();
        let namespace = if self.kind().is_namespaced() {
            Some(meta.namespace.clone().unwrap_or_else(|| "default".into()))
        } else {
            None
        };
        ObjectKey {
            kind: self.kind(),
            namespace,
            name: meta.name.clone().unwrap_or_default(),
        }
    }

    pub fn meta(&self) -> &ObjectMeta {
        match self {
            Object::GatewayClass(o) => &o.metadata,
            Object::Gateway(o) => &o.metadata,
            Object::HttpRoute(o) => &o.metadata,
            Object::GrpcRoute(o) => &o.metadata,
            Object::ReferenceGrant(o) => &o.metadata,
            Object::Service(o) => &o.metadata,
            Object::EndpointSlice(o) => &o.metadata,
            Object::Namespace(o) => &o.metadata,
            Object::Secret(o) => &o.metadata,
            Object::ConfigMap(o) => &o.metadata,
            Object::BackendTlsPolicy(o) => &o.metadata,
            Object::Filter(o) => &o.metadata,
            Object::JwksSecret(o) => &o.metadata,
        }
    }

    pub fn meta_mut(&mut self) -> &mut ObjectMeta {
        match self {
            Object::GatewayClass(o) => &mut o.metadata,
            Object::Gateway(o) => &mut o.metadata,
            Object::HttpRoute(o) => &mut o.metadata,
            Object::GrpcRoute(o) => &mut o.metadata,
            Object::ReferenceGrant(o) => &mut o.metadata,
            Object::Service(o) => &mut o.metadata,
            Object::EndpointSlice(o) => &mut o.metadata,
            Object::Namespace(o) => &mut o.metadata,
            Object::Secret(o) => &mut o.metadata,
            Object::ConfigMap(o) => &mut o.metadata,
            Object::BackendTlsPolicy(o) => &mut o.metadata,
            Object::Filter(o) => &mut o.metadata,
            Object::JwksSecret(o) => &mut o.metadata,
        }
    }

    /// The part whose change bumps `metadata.generation`: `spec` for the
    /// Gateway API kinds, the whole object minus metadata and status for
    /// core kinds (Secrets and ConfigMaps have data, not a spec).
    pub fn spec_value(&self) -> serde_json::Value {
        let value = match self {
            Object::GatewayClass(o) => serde_json::to_value(&o.spec),
            Object::Gateway(o) => serde_json::to_value(&o.spec),
            Object::HttpRoute(o) => serde_json::to_value(&o.spec),
            Object::GrpcRoute(o) => serde_json::to_value(&o.spec),
            Object::ReferenceGrant(o) => serde_json::to_value(&o.spec),
            Object::Service(o) => serde_json::to_value(o),
            Object::EndpointSlice(o) => serde_json::to_value(o),
            Object::Namespace(o) => serde_json::to_value(o),
            Object::Secret(o) => serde_json::to_value(o),
            Object::ConfigMap(o) => serde_json::to_value(o),
            Object::BackendTlsPolicy(o) => serde_json::to_value(&o.spec),
            Object::Filter(o) => serde_json::to_value(&o.spec),
            Object::JwksSecret(o) => serde_json::to_value(o),
        };
        let mut value = value.unwrap_or(serde_json::Value::Null);
        if let serde_json::Value::Object(map) = &mut value {
            for field in ["metadata", "status", "apiVersion", "kind"] {
                map.remove(field);
            }
        }
        value
    }
}

/// Objects by key. Cloning is cheap enough for a source to hand a copy to
/// compile; every iteration is in key order.
#[derive(Debug, Clone, Default)]
pub struct Store {
    objects: BTreeMap<ObjectKey, Object>,
    /// EndpointSlice names by the (namespace, Service) they belong to, so
    /// that a Service's endpoints are found without a scan of every slice.
    slices_by_service: BTreeMap<(String, String), BTreeSet<String>>,
}

/// The (namespace, Service) an EndpointSlice belongs to, by its label.
pub fn slice_service(object: &Object) -> Option<(String, String)> {
    let Object::EndpointSlice(slice) = object else {
        return None;
    };
    let service = slice
        .metadata
        .labels
        .as_ref()?
        .get(crate::k8s::SERVICE_NAME_LABEL)?;
    let namespace = slice
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    Some((namespace, service.clone()))
}

impl Store {
    pub fn new() -> Self {
        Self::default()
    }

    /// Inserts or replaces; returns the object previously under that key.
    pub fn insert(&mut self, object: Object) -> Option<Object> {
        let key = object.key();
        if let Some(service) = slice_service(&object) {
            self.slices_by_service
                .entry(service)
                .or_default()
                .insert(key.name.clone());
        }
        let previous = self.objects.insert(key, object);
        if let Some(old) = &previous {
            self.unindex_if_moved(old);
        }
        previous
    }

    pub fn remove(&mut self, key: &ObjectKey) -> Option<Object> {
        let removed = self.objects.remove(key)?;
        if let Some(service) = slice_service(&removed) {
            self.unindex(&service, &key.name);
        }
        Some(removed)
    }

    fn unindex(&mut self, service: &(String, String), name: &str) {
        if let Some(names) = self.slices_by_service.get_mut(service) {
            names.remove(name);
            if names.is_empty() {
                self.slices_by_service.remove(service);
            }
        }
    }

    /// Drops the index entry of a replaced slice whose Service label
    /// changed.
    fn unindex_if_moved(&mut self, old: &Object) {
        let Some(service) = slice_service(old) else {
            return;
        };
        let key = old.key();
        let still = self.objects.get(&key).and_then(slice_service);
        if still.as_ref() != Some(&service) {
            self.unindex(&service, &key.name);
        }
    }

    /// The EndpointSlices of one Service, by name.
    pub fn endpoint_slices_of<'s>(
        &'s self,
        namespace: &str,
        service: &str,
    ) -> impl Iterator<Item = &'s EndpointSlice> + 's {
        let names = self
            .slices_by_service
            .get(&(namespace.to_owned(), service.to_owned()));
        let namespace = namespace.to_owned();
        names.into_iter().flatten().filter_map(move |name| {
            let key = ObjectKey::new(Kind::EndpointSlice, Some(&namespace), name);
            match self.objects.get(&key) {
                Some(Object::EndpointSlice(slice)) => Some(&**slice),
                _ => None,
            }
        })
    }

    pub fn get(&self, key: &ObjectKey) -> Option<&Object> {
        self.objects.get(key)
    }

    pub fn len(&self) -> usize {
        self.objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// All objects, in key order.
    pub fn iter(&self) -> impl Iterator<Item = &Object> {
        self.objects.values()
    }

    /// Objects of one kind, in (namespace, name) order.
    pub fn of_kind(&self, kind: Kind) -> impl Iterator<Item = &Object> {
        let start = ObjectKey {
            kind,
            namespace: None,
            name: String::new(),
        };
        self.objects
            .range(start..)
            .take_while(move |(key, _)| key.kind == kind)
            .map(|(_, object)| object)
    }

    pub fn gateway_classes(&self) -> impl Iterator<Item = &GatewayClass> {
        self.of_kind(Kind::GatewayClass).filter_map(|o| match o {
            Object::GatewayClass(x) => Some(&**x),
            _ => None,
        })
    }

    pub fn gateways(&self) -> impl Iterator<Item = &Gateway> {
        self.of_kind(Kind::Gateway).filter_map(|o| match o {
            Object::Gateway(x) => Some(&**x),
            _ => None,
        })
    }

    pub fn http_routes(&self) -> impl Iterator<Item = &HttpRoute> {
        self.of_kind(Kind::HttpRoute).filter_map(|o| match o {
            Object::HttpRoute(x) => Some(&**x),
            _ => None,
        })
    }

    pub fn grpc_routes(&self) -> impl Iterator<Item = &GrpcRoute> {
        self.of_kind(Kind::GrpcRoute).filter_map(|o| match o {
            Object::GrpcRoute(x) => Some(&**x),
            _ => None,
        })
    }

    pub fn reference_grants(&self) -> impl Iterator<Item = &ReferenceGrant> {
        self.of_kind(Kind::ReferenceGrant).filter_map(|o| match o {
            Object::ReferenceGrant(x) => Some(&**x),
            _ => None,
        })
    }

    pub fn services(&self) -> impl Iterator<Item = &Service> {
        self.of_kind(Kind::Service).filter_map(|o| match o {
            Object::Service(x) => Some(&**x),
            _ => None,
        })
    }

    pub fn endpoint_slices(&self) -> impl Iterator<Item = &EndpointSlice> {
        self.of_kind(Kind::EndpointSlice).filter_map(|o| match o {
            Object::EndpointSlice(x) => Some(&**x),
            _ => None,
        })
    }

    pub fn secrets(&self) -> impl Iterator<Item = &Secret> {
        self.of_kind(Kind::Secret).filter_map(|o| match o {
            Object::Secret(x) => Some(&**x),
            _ => None,
        })
    }

    pub fn backend_tls_policies(&self) -> impl Iterator<Item = &BackendTlsPolicy> {
        self.of_kind(Kind::BackendTlsPolicy)
            .filter_map(|o| match o {
                Object::BackendTlsPolicy(x) => Some(&**x),
                _ => None,
            })
    }

    /// Secrets that may hold a JWKS: every Secret loaded from manifests,
    /// and in Kubernetes mode the ones labelled as JWKS.
    pub fn jwks_secrets(&self) -> impl Iterator<Item = &Secret> {
        let labelled = self.of_kind(Kind::JwksSecret).filter_map(|o| match o {
            Object::JwksSecret(x) => Some(&**x),
            _ => None,
        });
        self.secrets().chain(labelled)
    }

    pub fn filters(&self) -> impl Iterator<Item = &Filter> {
        self.of_kind(Kind::Filter).filter_map(|o| match o {
            Object::Filter(x) => Some(&**x),
            _ => None,
        })
    }

    pub fn config_maps(&self) -> impl Iterator<Item = &ConfigMap> {
        self.of_kind(Kind::ConfigMap).filter_map(|o| match o {
            Object::ConfigMap(x) => Some(&**x),
            _ => None,
        })
    }

    pub fn namespaces(&self) -> impl Iterator<Item = &Namespace> {
        self.of_kind(Kind::Namespace).filter_map(|o| match o {
            Object::Namespace(x) => Some(&**x),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(ns: &str, name: &str) -> Object {
        let mut s = Service::default();
        s.metadata.namespace = Some(ns.into());
        s.metadata.name = Some(name.into());
        Object::Service(Box::new(s))
    }

    fn slice(name: &str, service: &str) -> Object {
        let mut s = EndpointSlice::default();
        s.metadata.namespace = Some("ns".into());
        s.metadata.name = Some(name.into());
        s.metadata.labels = Some(
            [(
                crate::k8s::SERVICE_NAME_LABEL.to_owned(),
                service.to_owned(),
            )]
            .into_iter()
            .collect(),
        );
        Object::EndpointSlice(Box::new(s))
    }

    fn slices_of(store: &Store, service: &str) -> Vec<String> {
        store
            .endpoint_slices_of("ns", service)
            .map(|s| s.metadata.name.clone().unwrap())
            .collect()
    }

    #[test]
    fn endpoint_slices_are_found_by_their_service_label() {
        let mut store = Store::new();
        store.insert(slice("web-b", "web"));
        store.insert(slice("web-a", "web"));
        store.insert(slice("api-a", "api"));
        assert_eq!(slices_of(&store, "web"), ["web-a", "web-b"]);
        // Relabelled: it moves to the other Service.
        store.insert(slice("web-a", "api"));
        assert_eq!(slices_of(&store, "web"), ["web-b"]);
        assert_eq!(slices_of(&store, "api"), ["api-a", "web-a"]);
        store.remove(&ObjectKey::new(Kind::EndpointSlice, Some("ns"), "web-b"));
        assert!(slices_of(&store, "web").is_empty());
        assert!(store.endpoint_slices_of("other", "api").next().is_none());
    }

    #[test]
    fn iteration_per_kind_is_in_key_order_whatever_the_insertion_order() {
        let mut store = Store::new();
        store.insert(service("b", "x"));
        store.insert(service("a", "y"));
        let mut ns = Namespace::default();
        ns.metadata.name = Some("a".into());
        store.insert(Object::Namespace(Box::new(ns)));
        let names: Vec<_> = store
            .services()
            .map(|s| s.metadata.namespace.clone().unwrap())
            .collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(store.namespaces().count(), 1);
    }

    #[test]
    fn insert_replaces_and_remove_returns_the_object() {
        let mut store = Store::new();
        assert!(store.insert(service("a", "x")).is_none());
        assert!(store.insert(service("a", "x")).is_some());
        let key = ObjectKey::new(Kind::Service, Some("a"), "x");
        assert_eq!(key.to_string(), "Service a/x");
        assert!(store.remove(&key).is_some());
        assert!(store.is_empty());
    }

    #[test]
    fn spec_value_of_a_core_kind_drops_metadata() {
        let object = service("a", "x");
        let value = object.spec_value();
        assert!(value.get("metadata").is_none());
    }
}
