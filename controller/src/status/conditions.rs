//! Condition builders for GatewayClass, Gateway (and its listeners) and
//! HTTPRoute parents, per the Gateway API v1.x status definitions
//! (`GatewayClassConditionType`, `GatewayConditionType`,
//! `ListenerConditionType`, `RouteConditionType` and their reasons). Compile
//! describes what it found in the report types below; only this module turns
//! that into condition types, reasons and their strings.

use serde_json::{Value, json};

use crate::compile::CONTROLLER_NAME;
use crate::k8s::GATEWAY_GROUP;
use crate::status::StatusEntry;

/// What every condition of one object shares.
#[derive(Debug, Clone, Copy)]
pub struct ConditionContext<'a> {
    pub generation: i64,
    /// RFC 3339; `carry_transition_times` keeps older times that still hold.
    pub now: &'a str,
}

impl ConditionContext<'_> {
    fn condition(&self, kind: &str, status: bool, reason: &str, message: &str) -> Value {
        object([
            ("type", kind.into()),
            ("status", if status { "True" } else { "False" }.into()),
            ("reason", reason.into()),
            ("message", message.into()),
            ("observedGeneration", self.generation.into()),
            ("lastTransitionTime", self.now.into()),
        ])
    }
}

/// An object from fields whose values are already built: `json!` would
/// copy each nested `Value` through its serializer, which dominated compile
/// time at 10,000 routes.
fn object<const N: usize>(fields: [(&str, Value); N]) -> Value {
    Value::Object(fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

fn entry(
    kind: &str,
    namespace: Option<&str>,
    name: &str,
    generation: i64,
    status: Value,
) -> StatusEntry {
    StatusEntry {
        api_version: format!("{GATEWAY_GROUP}/v1"),
        kind: kind.into(),
        namespace: namespace.map(str::to_owned),
        name: name.into(),
        generation,
        status,
    }
}

/// A GatewayClass of ours is accepted, and supports the bundled API version.
pub fn gateway_class(name: &str, ctx: ConditionContext<'_>) -> StatusEntry {
    let status = object([(
        "conditions",
        Value::Array(vec![
            ctx.condition("Accepted", true, "Accepted", "Handled by Gatehouse"),
            ctx.condition(
                "SupportedVersion",
                true,
                "SupportedVersion",
                "Gateway API v1.x is supported",
            ),
        ]),
    )]);
    entry("GatewayClass", None, name, ctx.generation, status)
}

/// Why two listeners of one Gateway cannot both be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conflict {
    /// Same port, different protocols.
    Protocol,
    /// Same port and protocol, same hostname.
    Hostname,
}

/// What compile found about one listener.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ListenerReport {
    pub name: String,
    /// Route kinds (group gateway.networking.k8s.io) the listener accepts.
    pub supported_kinds: Vec<String>,
    pub attached_routes: u32,
    /// Message when the protocol is not one we serve.
    pub unsupported_protocol: Option<String>,
    /// Message when the port cannot be bound (e.g. beyond 65535 once the
    /// standalone port offset is added).
    pub port_unavailable: Option<String>,
    pub conflict: Option<Conflict>,
    /// Message when `allowedRoutes.kinds` names a kind we do not support.
    pub invalid_route_kinds: Option<String>,
    /// HTTPS: the first certificateRef that did not resolve.
    pub certificate_failure: Option<CertificateFailure>,
    /// HTTPS without any usable certificate: routes attach, nothing is
    /// served.
    pub no_certificate: bool,
    /// Client validation whose every CA reference failed: not accepted.
    pub no_valid_ca: bool,
}

/// Why a listener's certificateRef does not resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertificateFailure {
    /// Missing Secret, unsupported kind, or a certificate and key that do
    /// not load together (`InvalidCertificateRef`).
    Invalid(String),
    /// Another namespace without a ReferenceGrant (`RefNotPermitted`).
    RefNotPermitted(String),
    /// A client CA reference to a missing or malformed ConfigMap
    /// (`InvalidCACertificateRef`).
    InvalidCa(String),
    /// A client CA reference to a kind other than ConfigMap
    /// (`InvalidCACertificateKind`).
    InvalidCaKind(String),
}

impl ListenerReport {
    /// A usable listener can carry routes and is bound.
    pub fn is_usable(&self) -> bool {
        self.unsupported_protocol.is_none()
            && self.port_unavailable.is_none()
            && self.conflict.is_none()
            && !self.supported_kinds.is_empty()
    }

    /// A usable listener the data plane can serve (HTTPS needs a
    /// certificate).
    pub fn is_served(&self) -> bool {
        self.is_usable() && !self.no_certificate && !self.no_valid_ca
    }

    fn to_status(&self, ctx: ConditionContext<'_>, gateway_ok: bool) -> Value {
        let accepted = match (&self.unsupported_protocol, &self.port_unavailable) {
            (Some(msg), _) => ctx.condition("Accepted", false, "UnsupportedProtocol", msg),
            (None, Some(msg)) => ctx.condition("Accepted", false, "PortUnavailable", msg),
            (None, None) if self.no_valid_ca => ctx.condition(
                "Accepted",
                false,
                "NoValidCACertificate",
                "No client CA certificate reference of spec.tls.frontend resolves",
            ),
            (None, None) => ctx.condition("Accepted", true, "Accepted", "Listener is valid"),
        };
        let programmed = if gateway_ok && self.is_served() {
            ctx.condition("Programmed", true, "Programmed", "Listener is bound")
        } else {
            ctx.condition(
                "Programmed",
                false,
                "Invalid",
                "Listener is not bound: see its other conditions",
            )
        };
        let resolved = match (&self.certificate_failure, &self.invalid_route_kinds) {
            (Some(CertificateFailure::Invalid(msg)), _) => {
                ctx.condition("ResolvedRefs", false, "InvalidCertificateRef", msg)
            }
            (Some(CertificateFailure::RefNotPermitted(msg)), _) => {
                ctx.condition("ResolvedRefs", false, "RefNotPermitted", msg)
            }
            (Some(CertificateFailure::InvalidCa(msg)), _) => {
                ctx.condition("ResolvedRefs", false, "InvalidCACertificateRef", msg)
            }
            (Some(CertificateFailure::InvalidCaKind(msg)), _) => {
                ctx.condition("ResolvedRefs", false, "InvalidCACertificateKind", msg)
            }
            (None, Some(msg)) => ctx.condition("ResolvedRefs", false, "InvalidRouteKinds", msg),
            (None, None) => ctx.condition(
                "ResolvedRefs",
                true,
                "ResolvedRefs",
                "All references resolved",
            ),
        };
        let conflicted = match self.conflict {
            Some(Conflict::Protocol) => ctx.condition(
                "Conflicted",
                true,
                "ProtocolConflict",
                "Another listener uses this port with a different protocol",
            ),
            Some(Conflict::Hostname) => ctx.condition(
                "Conflicted",
                true,
                "HostnameConflict",
                "Another listener uses this port, protocol and hostname",
            ),
            None => ctx.condition("Conflicted", false, "NoConflicts", "No conflicts"),
        };
        let kinds: Vec<Value> = self
            .supported_kinds
            .iter()
            .map(|kind| json!({"group": GATEWAY_GROUP, "kind": kind}))
            .collect();
        object([
            ("name", self.name.clone().into()),
            ("supportedKinds", Value::Array(kinds)),
            ("attachedRoutes", self.attached_routes.into()),
            (
                "conditions",
                Value::Array(vec![accepted, programmed, resolved, conflicted]),
            ),
        ])
    }
}

/// What compile found about one Gateway of ours.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GatewayReport {
    /// The cluster group whose data planes serve the Gateway.
    pub group: String,
    /// A move from another group in progress.
    pub moving_from: Option<crate::compile::Handover>,
    /// `spec.tls.backend.clientCertificateRef`, when set: `None` resolved,
    /// else why not.
    pub backend_identity: Option<Option<CertificateFailure>>,
    /// (type, value) as `status.addresses` reports them: the bound IP
    /// addresses, or in Kubernetes the group's data plane Service's.
    pub addresses: Vec<(String, String)>,
    /// Message when an address is of an unsupported type or unparsable.
    pub address_error: Option<String>,
    pub listeners: Vec<ListenerReport>,
}

/// Gateway `Accepted` and `Programmed`, listeners and addresses.
pub fn gateway(
    namespace: &str,
    name: &str,
    report: &GatewayReport,
    ctx: ConditionContext<'_>,
) -> StatusEntry {
    let usable = report.listeners.iter().filter(|l| l.is_usable()).count();
    let all_usable = usable == report.listeners.len();
    let accepted = match &report.address_error {
        Some(msg) => ctx.condition("Accepted", false, "UnsupportedAddress", msg),
        None if all_usable => ctx.condition("Accepted", true, "Accepted", "Gateway is valid"),
        // Spec: ListenersNotValid goes with True when the Gateway is still
        // served by its valid listeners, with False when none is left.
        None => ctx.condition(
            "Accepted",
            usable > 0,
            "ListenersNotValid",
            "Some listeners are invalid: see their conditions",
        ),
    };
    let gateway_ok = report.address_error.is_none();
    let served = report.listeners.iter().any(ListenerReport::is_served);
    let programmed = if gateway_ok && served {
        ctx.condition(
            "Programmed",
            true,
            "Programmed",
            &match &report.moving_from {
                None => format!("Gateway is programmed in cluster group {:?}", report.group),
                Some(h) if !h.addresses_of_new_group => format!(
                    "Gateway is programmed in cluster group {:?}, moving from {:?}: both serve it, and its addresses stay {:?}'s until {:?}'s data planes have applied it",
                    report.group, h.from, h.from, report.group
                ),
                Some(h) => format!(
                    "Gateway is programmed in cluster group {:?}, moving from {:?}, which serves it until the drain period ends",
                    report.group, h.from
                ),
            },
        )
    } else if !gateway_ok {
        ctx.condition("Programmed", false, "AddressNotUsable", "No usable address")
    } else {
        ctx.condition(
            "Programmed",
            false,
            "Invalid",
            &format!(
                "No listener can be bound (cluster group {:?})",
                report.group
            ),
        )
    };
    let addresses: Vec<Value> = report
        .addresses
        .iter()
        .map(|(kind, value)| json!({"type": kind, "value": value}))
        .collect();
    let listeners: Vec<Value> = report
        .listeners
        .iter()
        .map(|l| l.to_status(ctx, gateway_ok))
        .collect();
    let mut conditions = vec![accepted, programmed];
    // Gateway `ResolvedRefs`: the references of the Gateway itself (its
    // backend client certificate), reported when it has one.
    if let Some(identity) = &report.backend_identity {
        conditions.push(match identity {
            None => ctx.condition(
                "ResolvedRefs",
                true,
                "ResolvedRefs",
                "All references resolved",
            ),
            Some(CertificateFailure::RefNotPermitted(m)) => {
                ctx.condition("ResolvedRefs", false, "RefNotPermitted", m)
            }
            Some(
                CertificateFailure::Invalid(m)
                | CertificateFailure::InvalidCa(m)
                | CertificateFailure::InvalidCaKind(m),
            ) => ctx.condition("ResolvedRefs", false, "InvalidClientCertificateRef", m),
        });
    }
    let status = object([
        ("addresses", Value::Array(addresses)),
        ("conditions", Value::Array(conditions)),
        ("listeners", Value::Array(listeners)),
    ]);
    entry("Gateway", Some(namespace), name, ctx.generation, status)
}

/// Why a route is not accepted by one parent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteRejection {
    /// No listener of the parent (after sectionName/port) lets it attach.
    NotAllowedByListeners(String),
    /// Hostnames do not intersect with any allowed listener.
    NoMatchingListenerHostname(String),
    /// sectionName or port names no listener.
    NoMatchingParent(String),
    /// A value we do not support (invalid regex, unsupported filters).
    UnsupportedValue(String),
    /// An older route of the other kind (HTTPRoute or GRPCRoute) holds an
    /// overlapping hostname on the listener. The spec names no reason for
    /// this; `Conflicted` is the one implementations use.
    Conflicted(String),
}

/// Why a backendRef does not resolve (route `ResolvedRefs` False).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendFailure {
    BackendNotFound(String),
    InvalidKind(String),
    RefNotPermitted(String),
}

impl BackendFailure {
    pub fn message(&self) -> &str {
        match self {
            BackendFailure::BackendNotFound(m)
            | BackendFailure::InvalidKind(m)
            | BackendFailure::RefNotPermitted(m) => m,
        }
    }
}

/// A parentRef with its defaults spelled out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParentRefReport {
    pub group: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub section_name: Option<String>,
    pub port: Option<i32>,
}

/// One entry of a route's `status.parents`.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteParentReport {
    pub parent_ref: ParentRefReport,
    pub accepted: Result<(), RouteRejection>,
    pub resolved_refs: Result<(), BackendFailure>,
    /// Message naming the rules that answer 500 while the rest is served.
    pub partially_invalid: Option<String>,
}

impl RouteParentReport {
    fn to_status(&self, ctx: ConditionContext<'_>) -> Value {
        let accepted = match &self.accepted {
            Ok(()) => ctx.condition("Accepted", true, "Accepted", "Route is accepted"),
            Err(RouteRejection::NotAllowedByListeners(m)) => {
                ctx.condition("Accepted", false, "NotAllowedByListeners", m)
            }
            Err(RouteRejection::NoMatchingListenerHostname(m)) => {
                ctx.condition("Accepted", false, "NoMatchingListenerHostname", m)
            }
            Err(RouteRejection::NoMatchingParent(m)) => {
                ctx.condition("Accepted", false, "NoMatchingParent", m)
            }
            Err(RouteRejection::UnsupportedValue(m)) => {
                ctx.condition("Accepted", false, "UnsupportedValue", m)
            }
            Err(RouteRejection::Conflicted(m)) => ctx.condition("Accepted", false, "Conflicted", m),
        };
        let resolved = match &self.resolved_refs {
            Ok(()) => ctx.condition(
                "ResolvedRefs",
                true,
                "ResolvedRefs",
                "All references resolved",
            ),
            Err(BackendFailure::BackendNotFound(m)) => {
                ctx.condition("ResolvedRefs", false, "BackendNotFound", m)
            }
            Err(BackendFailure::InvalidKind(m)) => {
                ctx.condition("ResolvedRefs", false, "InvalidKind", m)
            }
            Err(BackendFailure::RefNotPermitted(m)) => {
                ctx.condition("ResolvedRefs", false, "RefNotPermitted", m)
            }
        };
        let mut conditions = vec![accepted, resolved];
        if let Some(m) = &self.partially_invalid {
            conditions.push(ctx.condition("PartiallyInvalid", true, "UnsupportedValue", m));
        }
        let p = &self.parent_ref;
        let mut parent_ref = serde_json::Map::new();
        parent_ref.insert("group".into(), p.group.clone().into());
        parent_ref.insert("kind".into(), p.kind.clone().into());
        parent_ref.insert("namespace".into(), p.namespace.clone().into());
        parent_ref.insert("name".into(), p.name.clone().into());
        if let Some(section) = &p.section_name {
            parent_ref.insert("sectionName".into(), section.clone().into());
        }
        if let Some(port) = p.port {
            parent_ref.insert("port".into(), port.into());
        }
        object([
            ("parentRef", Value::Object(parent_ref)),
            ("controllerName", CONTROLLER_NAME.into()),
            ("conditions", Value::Array(conditions)),
        ])
    }
}

/// HTTPRoute `status.parents`: our entries only (none when no parentRef
/// names one of our Gateways).
/// A BackendTLSPolicy's status: one entry per Gateway of ours whose routes
/// send to a Service the policy targets (policy attachment's ancestor
/// status). `failure` is the `ResolvedRefs` reason and message; with no
/// trust left the policy is not accepted (`NoValidCACertificate`).
pub fn backend_tls_policy(
    namespace: &str,
    name: &str,
    ancestors: &[(String, String)],
    failure: Option<(&str, &str)>,
    trusts_something: bool,
    conflicted_with: Option<&str>,
    ctx: ConditionContext<'_>,
) -> StatusEntry {
    let accepted = match (conflicted_with, trusts_something) {
        (Some(winner), _) => ctx.condition(
            "Accepted",
            false,
            "Conflicted",
            &format!("The older BackendTLSPolicy {winner} has the same target and applies"),
        ),
        (None, true) => ctx.condition("Accepted", true, "Accepted", "Policy is accepted"),
        (None, false) => ctx.condition(
            "Accepted",
            false,
            "NoValidCACertificate",
            "No CA certificate to verify the backend with: requests to it fail",
        ),
    };
    let resolved = match failure {
        None => ctx.condition(
            "ResolvedRefs",
            true,
            "ResolvedRefs",
            "All references resolved",
        ),
        Some((reason, message)) => ctx.condition("ResolvedRefs", false, reason, message),
    };
    let ancestors: Vec<Value> = ancestors
        .iter()
        .map(|(ns, gateway)| {
            object([
                (
                    "ancestorRef",
                    json!({"group": GATEWAY_GROUP, "kind": "Gateway", "namespace": ns, "name": gateway}),
                ),
                ("controllerName", CONTROLLER_NAME.into()),
                ("conditions", Value::Array(vec![accepted.clone(), resolved.clone()])),
            ])
        })
        .collect();
    entry(
        "BackendTLSPolicy",
        Some(namespace),
        name,
        ctx.generation,
        object([("ancestors", Value::Array(ancestors))]),
    )
}

/// An HTTPRoute's or GRPCRoute's status (the same shape).
pub fn route(
    kind: &str,
    namespace: &str,
    name: &str,
    parents: &[RouteParentReport],
    ctx: ConditionContext<'_>,
) -> StatusEntry {
    let parents: Vec<Value> = parents.iter().map(|p| p.to_status(ctx)).collect();
    entry(
        kind,
        Some(namespace),
        name,
        ctx.generation,
        object([("parents", Value::Array(parents))]),
    )
}

/// What compile found about one gatehouse.dev Filter.
#[derive(Debug, Clone, Default)]
pub struct FilterReport {
    /// Why the Filter's content is invalid.
    pub invalid: Option<String>,
    /// Per targetRef, in spec order.
    pub targets: Vec<FilterTarget>,
    /// Where another filter of the same type runs instead, any way the
    /// Filter reached a rule.
    pub overridden: Option<String>,
}

/// One targetRef of a Filter, as its ancestor status reports it.
#[derive(Debug, Clone, Default)]
pub struct FilterTarget {
    pub group: String,
    pub kind: String,
    pub name: String,
    pub section: Option<String>,
    pub exists: bool,
    /// Where another filter replaces what this target attached.
    pub overridden: Option<String>,
}

/// A Filter's status: `Accepted` for the object, and per targetRef an
/// ancestor entry (policy attachment) with `Accepted` (`TargetNotFound`
/// when the target does not exist) and, where it applies, `Overridden`.
pub fn filter(
    namespace: &str,
    name: &str,
    report: &FilterReport,
    ctx: ConditionContext<'_>,
) -> StatusEntry {
    let accepted = match &report.invalid {
        None => ctx.condition("Accepted", true, "Accepted", "Filter is valid"),
        Some(why) => ctx.condition(
            "Accepted",
            false,
            "Invalid",
            &format!("{why}; requests it applies to are answered 500"),
        ),
    };
    let overridden_condition = |overridden: Option<&String>| match overridden {
        Some(message) => ctx.condition("Overridden", true, "MoreSpecificFilter", message),
        None => ctx.condition(
            "Overridden",
            false,
            "NotOverridden",
            "No other filter of the same type replaces it",
        ),
    };
    let overridden = overridden_condition(report.overridden.as_ref());
    let ancestors: Vec<Value> = report
        .targets
        .iter()
        .map(|t| {
            let mut reference = serde_json::Map::new();
            reference.insert("group".into(), t.group.clone().into());
            reference.insert("kind".into(), t.kind.clone().into());
            reference.insert("namespace".into(), namespace.into());
            reference.insert("name".into(), t.name.clone().into());
            if let Some(section) = &t.section {
                reference.insert("sectionName".into(), section.clone().into());
            }
            let accepted = match (t.exists, &report.invalid) {
                (_, Some(_)) => accepted.clone(),
                (true, None) => ctx.condition("Accepted", true, "Accepted", "Filter is attached"),
                (false, None) => ctx.condition(
                    "Accepted",
                    false,
                    "TargetNotFound",
                    &format!("{} {namespace}/{} not found", t.kind, t.name),
                ),
            };
            let conditions = vec![accepted, overridden_condition(t.overridden.as_ref())];
            object([
                ("ancestorRef", Value::Object(reference)),
                ("controllerName", CONTROLLER_NAME.into()),
                ("conditions", Value::Array(conditions)),
            ])
        })
        .collect();
    StatusEntry {
        api_version: crate::api::API_VERSION.into(),
        kind: "Filter".into(),
        namespace: Some(namespace.into()),
        name: name.into(),
        generation: ctx.generation,
        status: object([
            ("conditions", Value::Array(vec![accepted, overridden])),
            ("ancestors", Value::Array(ancestors)),
        ]),
    }
}
