//! Invalid Filters attached by `targetRefs`, told on the routes they break.
//!
//! An invalid Filter never reaches a data plane: the rules it would run for
//! answer 500. One named in a rule's ExtensionRef already makes the route
//! say so (`route.rs`); one attached to the Gateway, a listener, the route or
//! one of its rules is not in the route's spec, so without this the route
//! would look healthy while its rules answer 500. Each parent the route is
//! accepted by gets `PartiallyInvalid` naming the rule and the Filter, for
//! the listeners of that parent the rule is reached through.

use std::collections::{BTreeMap, BTreeSet};

use crate::compile::attach::Attachment;
use crate::compile::chain::Chains;
use crate::compile::filter_objects::FilterObjects;
use crate::compile::gateway::GatewayModel;
use crate::compile::route::RouteModel;
use crate::status::RouteParentReport;

/// Adds, to each accepted parent report, the rules an invalid attached
/// Filter makes answer 500.
pub fn report(
    chains: &Chains<'_, '_>,
    filters: &FilterObjects<'_>,
    (gateways, routes, attachments): (&[GatewayModel<'_>], &[RouteModel<'_>], &[Attachment]),
    route_reports: &mut [Vec<RouteParentReport>],
) {
    if filters.filters.iter().all(|f| f.content.is_ok()) {
        return;
    }
    let mut found: BTreeMap<(usize, usize), BTreeSet<String>> = BTreeMap::new();
    for a in attachments {
        let gateway = &gateways[a.gateway];
        let listener = &gateway.listeners[a.listener].name;
        let route = &routes[a.route];
        for (ri, rule) in route.rules.iter().enumerate() {
            for (fi, _, _) in chains.for_rule(gateway, listener, route, ri, None) {
                let filter = &filters.filters[fi];
                let Err(why) = &filter.content else { continue };
                if rule.filters.extension_refs.contains(&fi) {
                    continue;
                }
                found.entry((a.route, a.parent)).or_default().insert(format!(
                    "Dropped Rule {}, answered with 500: Filter {}/{}, attached by targetRefs, is invalid: {why}",
                    rule.section, filter.namespace, filter.name
                ));
            }
        }
    }
    for ((route, parent), messages) in found {
        let report = &mut route_reports[route][parent];
        if report.accepted.is_err() {
            continue;
        }
        let told: Vec<String> = report.partially_invalid.take().into_iter().collect();
        report.partially_invalid = Some(
            told.into_iter()
                .chain(messages)
                .collect::<Vec<_>>()
                .join("; "),
        );
    }
}
