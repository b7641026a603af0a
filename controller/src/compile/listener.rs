//! Listener validation, per Gateway API `Listener` and `ListenerStatus`:
//! supported protocols (HTTP, and HTTPS terminating TLS; its certificates are
//! resolved by `tls`), `allowedRoutes.kinds` (HTTPRoute only, else
//! `InvalidRouteKinds` with `supportedKinds` keeping the valid ones),
//! conflicts within a Gateway (same port with different protocols:
//! `ProtocolConflict`; same port, protocol and hostname: `HostnameConflict`;
//! every listener involved is marked), and `allowedRoutes.namespaces`
//! (Same by default, All, or Selector over Namespace labels).

use std::collections::BTreeMap;

use gatehouse_snapshot::{Certificate, Protocol};

use crate::compile::tls;
use crate::k8s::{FromNamespaces, GATEWAY_GROUP, Listener, NamespaceSelector};
use crate::status::{Conflict, ListenerReport};

/// Which namespaces may attach routes to a listener.
#[derive(Debug, Clone, PartialEq)]
pub enum AllowedNamespaces {
    Same,
    All,
    Selector(NamespaceSelector),
}

/// A listener as compile uses it.
#[derive(Debug, Clone)]
pub struct ListenerModel {
    pub name: String,
    pub port: u16,
    pub protocol: Protocol,
    pub hostname: Option<String>,
    /// HTTPS: the certificates that resolved (see `tls`).
    pub certificates: Vec<Certificate>,
    /// HTTPS: client certificate validation (Gateway `spec.tls.frontend`).
    pub client_validation: Option<gatehouse_snapshot::ClientValidation>,
    pub allowed: AllowedNamespaces,
    pub report: ListenerReport,
}

impl ListenerModel {
    /// Whether a route in `route_ns` may attach, for a Gateway in
    /// `gateway_ns`. `labels` gives a namespace's labels.
    pub fn allows_namespace(
        &self,
        gateway_ns: &str,
        route_ns: &str,
        labels: impl Fn(&str) -> BTreeMap<String, String>,
    ) -> bool {
        match &self.allowed {
            AllowedNamespaces::Same => gateway_ns == route_ns,
            AllowedNamespaces::All => true,
            AllowedNamespaces::Selector(selector) => selects(selector, &labels(route_ns)),
        }
    }
}

/// Label selector semantics (matchLabels AND matchExpressions; operators In,
/// NotIn, Exists, DoesNotExist). An unknown operator selects nothing.
pub fn selects(selector: &NamespaceSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_ok = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let expressions_ok = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        let value = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    labels_ok && expressions_ok
}

/// Validates the listeners of one Gateway, in spec order. `port_offset` is
/// the standalone offset every listener port is bound at.
pub fn listeners(spec: &[Listener], port_offset: u16) -> Vec<ListenerModel> {
    let mut out: Vec<ListenerModel> = spec.iter().map(listener).collect();
    for (l, given) in out.iter_mut().zip(spec) {
        let bound = u32::from(l.port) + u32::from(port_offset);
        if l.port == 0 {
            l.report.port_unavailable = Some(format!("port {} is outside 1..=65535", given.port));
        } else if bound > u32::from(u16::MAX) {
            l.report.port_unavailable = Some(format!(
                "port {} plus the port offset {port_offset} is {bound}, beyond 65535",
                l.port
            ));
        }
    }
    for (i, l) in spec.iter().enumerate() {
        for (j, other) in spec.iter().enumerate() {
            if i == j || l.port != other.port {
                continue;
            }
            let conflict = if l.protocol != other.protocol {
                Some(Conflict::Protocol)
            } else if hostname(l) == hostname(other) {
                Some(Conflict::Hostname)
            } else {
                None
            };
            if let Some(c) = conflict {
                // A protocol conflict is the stronger statement; keep it.
                if out[i].report.conflict != Some(Conflict::Protocol) {
                    out[i].report.conflict = Some(c);
                }
            }
        }
    }
    out
}

fn hostname(l: &Listener) -> Option<String> {
    l.hostname
        .as_deref()
        .filter(|h| !h.is_empty())
        .map(str::to_ascii_lowercase)
}

fn listener(l: &Listener) -> ListenerModel {
    let mut report = ListenerReport {
        name: l.name.clone(),
        ..Default::default()
    };
    let protocol = match l.protocol.as_str() {
        "HTTP" => Protocol::Http,
        "HTTPS" => Protocol::Https,
        _ => Protocol::Unspecified,
    };
    if protocol == Protocol::Unspecified {
        report.unsupported_protocol = Some(format!(
            "Protocol {:?} is not supported; supported: HTTP, HTTPS",
            l.protocol
        ));
    } else if protocol == Protocol::Https && tls::is_passthrough(l.tls.as_ref()) {
        report.unsupported_protocol = Some(
            "HTTPS with tls.mode Passthrough is not supported: HTTPS listeners terminate TLS (mode Terminate)"
                .into(),
        );
    } else {
        let (kinds, invalid) = route_kinds(l);
        report.supported_kinds = kinds;
        report.invalid_route_kinds = invalid;
    }
    let namespaces = l
        .allowed_routes
        .as_ref()
        .and_then(|a| a.namespaces.as_ref());
    let allowed = match namespaces.and_then(|n| n.from.as_ref()) {
        None | Some(FromNamespaces::Same) => AllowedNamespaces::Same,
        Some(FromNamespaces::All) => AllowedNamespaces::All,
        Some(FromNamespaces::Selector) => AllowedNamespaces::Selector(
            namespaces
                .and_then(|n| n.selector.clone())
                .unwrap_or_default(),
        ),
    };
    ListenerModel {
        name: l.name.clone(),
        port: u16::try_from(l.port).unwrap_or(0),
        protocol,
        hostname: hostname(l),
        certificates: Vec::new(),
        client_validation: None,
        allowed,
        report,
    }
}

/// Supported kinds and, when some requested kind is not supported, a
/// message naming it.
fn route_kinds(l: &Listener) -> (Vec<String>, Option<String>) {
    let Some(kinds) = l.allowed_routes.as_ref().and_then(|a| a.kinds.as_ref()) else {
        return (vec!["HTTPRoute".into(), "GRPCRoute".into()], None);
    };
    let mut supported = Vec::new();
    let mut invalid = Vec::new();
    for k in kinds {
        let group = k.group.as_deref().unwrap_or(GATEWAY_GROUP);
        if group == GATEWAY_GROUP && matches!(k.kind.as_str(), "HTTPRoute" | "GRPCRoute") {
            if !supported.contains(&k.kind) {
                supported.push(k.kind.clone());
            }
        } else {
            invalid.push(format!("{group}/{}", k.kind));
        }
    }
    let message = (!invalid.is_empty()).then(|| {
        format!(
            "Unsupported route kinds: {}; supported: HTTPRoute",
            invalid.join(", ")
        )
    });
    (supported, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Vec<Listener> {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn same_port_different_protocol_is_a_protocol_conflict() {
        let ls = listeners(
            &parse(
                "- {name: a, port: 80, protocol: HTTP}\n- {name: b, port: 80, protocol: HTTPS}\n- {name: c, port: 81, protocol: HTTP}\n- {name: d, port: 82, protocol: TCP}\n",
            ),
            0,
        );
        assert_eq!(ls[0].report.conflict, Some(Conflict::Protocol));
        assert_eq!(ls[1].report.conflict, Some(Conflict::Protocol));
        assert_eq!(ls[2].report.conflict, None);
        assert!(ls[1].report.unsupported_protocol.is_none());
        assert!(ls[3].report.unsupported_protocol.is_some());
    }

    #[test]
    fn a_port_beyond_65535_after_the_offset_is_unavailable() {
        let ls = listeners(
            &parse(
                "- {name: a, port: 80, protocol: HTTP}\n- {name: b, port: 65000, protocol: HTTP}\n",
            ),
            1000,
        );
        assert!(ls[0].report.is_usable());
        assert!(ls[1].report.port_unavailable.is_some());
        assert!(!ls[1].report.is_usable());
    }

    #[test]
    fn same_port_protocol_and_hostname_is_a_hostname_conflict() {
        let ls = listeners(
            &parse(
                "- {name: a, port: 80, protocol: HTTP, hostname: x.com}\n- {name: b, port: 80, protocol: HTTP, hostname: X.com}\n- {name: c, port: 80, protocol: HTTP, hostname: y.com}\n",
            ),
            0,
        );
        assert_eq!(ls[0].report.conflict, Some(Conflict::Hostname));
        assert_eq!(ls[1].report.conflict, Some(Conflict::Hostname));
        assert_eq!(ls[2].report.conflict, None);
    }

    #[test]
    fn unsupported_route_kinds_are_reported_and_valid_ones_kept() {
        let ls = listeners(
            &parse(
                "- name: a\n  port: 80\n  protocol: HTTP\n  allowedRoutes:\n    kinds: [{kind: HTTPRoute}, {kind: TCPRoute}]\n- name: b\n  port: 81\n  protocol: HTTP\n  allowedRoutes:\n    kinds: [{group: example.com, kind: HTTPRoute}]\n",
            ),
            0,
        );
        assert_eq!(ls[0].report.supported_kinds, ["HTTPRoute"]);
        assert!(ls[0].report.invalid_route_kinds.is_some());
        assert!(ls[1].report.supported_kinds.is_empty());
        assert!(!ls[1].report.is_usable());
    }

    #[test]
    fn selector_uses_labels_and_expressions() {
        let selector: NamespaceSelector = serde_yaml::from_str(
            "matchLabels: {team: a}\nmatchExpressions:\n- {key: env, operator: In, values: [prod, staging]}\n- {key: legacy, operator: DoesNotExist}\n",
        )
        .unwrap();
        let labels = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        assert!(selects(
            &selector,
            &labels(&[("team", "a"), ("env", "prod")])
        ));
        assert!(!selects(
            &selector,
            &labels(&[("team", "a"), ("env", "dev")])
        ));
        assert!(!selects(
            &selector,
            &labels(&[("team", "a"), ("env", "prod"), ("legacy", "1")])
        ));
        assert!(!selects(&selector, &labels(&[("env", "prod")])));
    }
}
