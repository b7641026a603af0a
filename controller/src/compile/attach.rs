//! Route attachment, per Gateway API `ParentReference` and
//! `RouteParentStatus`: a parentRef (group and kind default to Gateway,
//! namespace to the route's) selects the listeners of one of our Gateways,
//! narrowed by `sectionName` and `port` (`NoMatchingParent` when none is
//! left); those that are usable and allow the route's namespace and kind
//! (`NotAllowedByListeners` otherwise) and whose hostname intersects the
//! route's (`NoMatchingListenerHostname` otherwise) take the route.
//!
//! A parentRef to a Gateway that does not exist, or to another controller's
//! Gateway, gets no status entry: the spec lets an implementation write only
//! the parents it is responsible for, and a missing Gateway has no class
//! that would make it ours.

use std::collections::{BTreeMap, HashMap};

use crate::compile::gateway::GatewayModel;
use crate::compile::hostname;
use crate::compile::route::RouteModel;
use crate::k8s::{GATEWAY_GROUP, ParentRef};
use crate::status::{ParentRefReport, RouteParentReport, RouteRejection};

/// A route bound to one listener, on these virtual hosts.
#[derive(Debug, Clone)]
pub struct Attachment {
    pub gateway: usize,
    pub listener: usize,
    pub route: usize,
    /// Index of the parentRef's entry in the route's status reports.
    pub parent: usize,
    pub hosts: Vec<String>,
    /// Whether the route is accepted (counted in `attachedRoutes`); a route
    /// whose every rule is invalid is emitted (500) but not accepted.
    pub accepted: bool,
}

/// Our Gateways and what attaching needs to look up.
pub struct Parents<'a, 'g> {
    pub gateways: &'g [GatewayModel<'a>],
    pub by_key: HashMap<(&'g str, &'g str), usize>,
    pub namespace_labels: &'g BTreeMap<String, BTreeMap<String, String>>,
}

impl<'a, 'g> Parents<'a, 'g> {
    pub fn new(
        gateways: &'g [GatewayModel<'a>],
        namespace_labels: &'g BTreeMap<String, BTreeMap<String, String>>,
    ) -> Self {
        let by_key = gateways
            .iter()
            .enumerate()
            .map(|(i, g)| ((g.namespace.as_str(), g.name.as_str()), i))
            .collect();
        Parents {
            gateways,
            by_key,
            namespace_labels,
        }
    }

    fn labels(&self, namespace: &str) -> BTreeMap<String, String> {
        let mut labels = self
            .namespace_labels
            .get(namespace)
            .cloned()
            .unwrap_or_default();
        // Kubernetes sets this label on every namespace; standalone
        // manifests often omit it.
        labels
            .entry("kubernetes.io/metadata.name".into())
            .or_insert_with(|| namespace.into());
        labels
    }

    /// Status entries for the route's parentRefs that are ours, and the
    /// attachments the accepted ones make.
    pub fn attach(
        &self,
        route_index: usize,
        route: &RouteModel<'_>,
        out: &mut Vec<Attachment>,
    ) -> Vec<RouteParentReport> {
        let mut reports = Vec::new();
        for parent in route.route.spec.parent_refs.iter().flatten() {
            let group = parent.group.as_deref().unwrap_or(GATEWAY_GROUP);
            let kind = parent.kind.as_deref().unwrap_or("Gateway");
            let namespace = parent.namespace.as_deref().unwrap_or(&route.namespace);
            if group != GATEWAY_GROUP || kind != "Gateway" {
                continue;
            }
            let Some(&gateway) = self.by_key.get(&(namespace, parent.name.as_str())) else {
                continue;
            };
            let parent_ref = ParentRefReport {
                group: group.into(),
                kind: kind.into(),
                namespace: namespace.into(),
                name: parent.name.clone(),
                section_name: parent.section_name.clone(),
                port: parent.port,
            };
            let at = (route_index, reports.len());
            let accepted = self.attach_to(gateway, parent, at, route, out);
            let partially_invalid = match (&accepted, &route.unsupported_rules) {
                (Ok(()), Some((message, false))) => Some(message.clone()),
                _ => None,
            };
            reports.push(RouteParentReport {
                parent_ref,
                accepted,
                resolved_refs: route.resolved_refs.clone(),
                partially_invalid,
            });
        }
        reports
    }

    fn attach_to(
        &self,
        gateway: usize,
        parent: &ParentRef,
        (route_index, report): (usize, usize),
        route: &RouteModel<'_>,
        out: &mut Vec<Attachment>,
    ) -> Result<(), RouteRejection> {
        let g = &self.gateways[gateway];
        let selected: Vec<usize> = (0..g.listeners.len())
            .filter(|&i| {
                let l = &g.listeners[i];
                parent.section_name.as_ref().is_none_or(|s| *s == l.name)
                    && parent.port.is_none_or(|p| i32::from(l.port) == p)
            })
            .collect();
        if selected.is_empty() {
            let mut wanted = Vec::new();
            if let Some(section) = &parent.section_name {
                wanted.push(format!("named {section:?}"));
            }
            if let Some(port) = parent.port {
                wanted.push(format!("on port {port}"));
            }
            return Err(RouteRejection::NoMatchingParent(format!(
                "Gateway {}/{} has no listener {}",
                g.namespace,
                g.name,
                wanted.join(" ")
            )));
        }
        if let Err(why) = &g.addresses {
            return Err(RouteRejection::NotAllowedByListeners(format!(
                "Gateway {}/{} is not accepted: {why}",
                g.namespace, g.name
            )));
        }
        let usable: Vec<usize> = selected
            .into_iter()
            .filter(|&i| g.listeners[i].report.is_usable())
            .collect();
        if usable.is_empty() {
            return Err(RouteRejection::NotAllowedByListeners(format!(
                "The selected listeners of Gateway {}/{} are not usable: see their conditions",
                g.namespace, g.name
            )));
        }
        let route_labels = |ns: &str| self.labels(ns);
        let allowed: Vec<usize> = usable
            .into_iter()
            .filter(|&i| {
                let l = &g.listeners[i];
                l.report
                    .supported_kinds
                    .iter()
                    .any(|k| k == route.kind.as_str())
                    && l.allows_namespace(&g.namespace, &route.namespace, route_labels)
            })
            .collect();
        if allowed.is_empty() {
            return Err(RouteRejection::NotAllowedByListeners(format!(
                "No listener of Gateway {}/{} allows {}s from namespace {:?}",
                g.namespace,
                g.name,
                route.kind.as_str(),
                route.namespace
            )));
        }
        let hosted: Vec<(usize, Vec<String>)> = allowed
            .into_iter()
            .map(|i| {
                (
                    i,
                    hostname::route_hosts(g.listeners[i].hostname.as_deref(), &route.hostnames),
                )
            })
            .filter(|(_, hosts)| !hosts.is_empty())
            .collect();
        if hosted.is_empty() {
            return Err(RouteRejection::NoMatchingListenerHostname(format!(
                "No listener of Gateway {}/{} has a hostname matching {:?}",
                g.namespace, g.name, route.hostnames
            )));
        }
        if let Some(message) = &route.invalid {
            return Err(RouteRejection::UnsupportedValue(message.clone()));
        }
        let every_rule_invalid = matches!(route.unsupported_rules, Some((_, true)));
        for (listener, hosts) in hosted {
            out.push(Attachment {
                gateway,
                listener,
                route: route_index,
                parent: report,
                hosts,
                accepted: !every_rule_invalid,
            });
        }
        match &route.unsupported_rules {
            Some((message, true)) => Err(RouteRejection::UnsupportedValue(message.clone())),
            _ => Ok(()),
        }
    }
}
