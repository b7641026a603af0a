//! The one facade over Kubernetes and Gateway API types: the rest of the
//! controller names these, never the upstream crates' module paths, so a
//! crate upgrade touches this file only.

pub use gateway_api::apis::standard::backendtlspolicies::BackendTlsPolicy;
pub use gateway_api::apis::standard::gatewayclasses::{GatewayClass, GatewayClassSpec};
pub use gateway_api::apis::standard::gateways::{
    Gateway, GatewayAddresses, GatewayListeners as Listener,
    GatewayListenersAllowedRoutes as AllowedRoutes,
    GatewayListenersAllowedRoutesKinds as RouteGroupKind,
    GatewayListenersAllowedRoutesNamespacesFrom as FromNamespaces,
    GatewayListenersAllowedRoutesNamespacesSelector as NamespaceSelector,
    GatewayListenersTls as ListenerTls, GatewayListenersTlsCertificateRefs as CertificateRef,
    GatewayListenersTlsMode as TlsMode, GatewaySpec, GatewayTls,
};
pub use gateway_api::apis::standard::grpcroutes::GrpcRoute;
// HTTPRoute from the experimental channel: a superset of the standard one
// (same group, version and kind) that also carries `rules[].retry`, which
// the standard types would drop on parsing. Objects from a cluster with the
// standard CRDs parse unchanged; the extra fields are then absent.
pub use gateway_api::apis::experimental::httproutes::{
    HttpRoute, HttpRouteParentRefs as ParentRef, HttpRouteRules as Rule,
    HttpRouteRulesBackendRefs as BackendRef, HttpRouteRulesMatches as RouteMatch,
    HttpRouteRulesMatchesHeadersType as HeaderMatchType, HttpRouteRulesMatchesMethod as Method,
    HttpRouteRulesMatchesPathType as PathMatchType,
    HttpRouteRulesMatchesQueryParamsType as QueryParamMatchType, HttpRouteRulesRetry as Retry,
    HttpRouteRulesTimeouts as Timeouts, HttpRouteSpec,
};
pub use gateway_api::apis::standard::referencegrants::{ReferenceGrant, ReferenceGrantSpec};
pub use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service, ServicePort};
pub use k8s_openapi::api::discovery::v1::EndpointSlice;
pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

/// API group of the Gateway API kinds.
pub const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";
/// Label EndpointSlices carry to name their Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
