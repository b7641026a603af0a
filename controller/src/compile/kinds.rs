//! HTTPRoutes and GRPCRoutes on one listener. Gateway API (`GRPCRouteSpec`
//! hostnames): "If a Route (A) of type HTTPRoute or GRPCRoute is attached to
//! a Listener and that listener already has another Route (B) of the other
//! type attached and the intersection of the hostnames of A and B is
//! non-empty, then the implementation MUST accept exactly one of these two
//! routes, determined by the following criteria, in order: the oldest Route
//! based on creation timestamp; the Route appearing first in alphabetical
//! order by "{namespace}/{name}". The rejected Route MUST raise an
//! 'Accepted' condition with a status of 'False' in the corresponding
//! RouteParentStatus."
//!
//! Per listener, routes are taken oldest first; one that overlaps a route
//! of the other kind already taken loses its attachment there. A parentRef
//! left with no attachment is `Accepted` False, reason `Conflicted`, naming
//! the route that holds the hostname. Routes of one kind never conflict:
//! their rules are merged by precedence.

use std::collections::BTreeMap;

use crate::compile::attach::Attachment;
use crate::compile::hostname;
use crate::compile::route::RouteModel;
use crate::status::{RouteParentReport, RouteRejection};

/// Removes the attachments that lose a cross-kind conflict and marks the
/// parentRefs they leave empty.
pub fn resolve(
    routes: &[RouteModel<'_>],
    route_ranks: &[usize],
    attachments: &mut Vec<Attachment>,
    reports: &mut [Vec<RouteParentReport>],
) {
    let mut by_listener: BTreeMap<(usize, usize), Vec<usize>> = BTreeMap::new();
    // Every emitted attachment takes part, accepted or not: a route whose
    // rules all answer 500 still holds its virtual hosts.
    for (i, a) in attachments.iter().enumerate() {
        by_listener
            .entry((a.gateway, a.listener))
            .or_default()
            .push(i);
    }
    // (attachment, the route it lost to)
    let mut lost: BTreeMap<usize, usize> = BTreeMap::new();
    for mut contenders in by_listener.into_values() {
        let kinds = |i: &usize| routes[attachments[*i].route].kind;
        if contenders.iter().all(|i| kinds(i) == kinds(&contenders[0])) {
            continue;
        }
        contenders.sort_by_key(|&i| route_ranks[attachments[i].route]);
        let mut taken: Vec<usize> = Vec::new();
        for i in contenders {
            let a = &attachments[i];
            let holder = taken.iter().find(|&&t| {
                let b = &attachments[t];
                routes[b.route].kind != routes[a.route].kind && overlap(&a.hosts, &b.hosts)
            });
            match holder {
                Some(&t) => {
                    lost.insert(i, attachments[t].route);
                }
                None => taken.push(i),
            }
        }
    }
    if lost.is_empty() {
        return;
    }
    let mut emptied = BTreeMap::new();
    for (&i, &winner) in &lost {
        let a = &attachments[i];
        emptied.insert((a.route, a.parent), winner);
    }
    let mut index = 0;
    attachments.retain(|_| {
        index += 1;
        !lost.contains_key(&(index - 1))
    });
    for a in attachments.iter() {
        emptied.remove(&(a.route, a.parent));
    }
    for ((route, parent), winner) in emptied {
        let w = &routes[winner];
        let report = &mut reports[route][parent];
        report.accepted = Err(RouteRejection::Conflicted(format!(
            "{} {}/{} holds an overlapping hostname on the listener, and only one kind of \
             route may serve a hostname there",
            w.kind.as_str(),
            w.namespace,
            w.name
        )));
        report.partially_invalid = None;
    }
}

/// Whether two lists of virtual hosts (`""` for any host) share a host.
fn overlap(a: &[String], b: &[String]) -> bool {
    a.iter().any(|x| {
        b.iter()
            .any(|y| x.is_empty() || y.is_empty() || hostname::intersect(Some(x), y).is_some())
    })
}

#[cfg(test)]
mod tests {
    use super::overlap;

    #[test]
    fn hosts_overlap_when_one_covers_a_name_of_the_other() {
        let v = |hosts: &[&str]| hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>();
        assert!(overlap(&v(&["a.example.com"]), &v(&["a.example.com"])));
        assert!(overlap(&v(&["*.example.com"]), &v(&["a.example.com"])));
        assert!(overlap(&v(&["a.example.com"]), &v(&["*.example.com"])));
        assert!(overlap(&v(&[""]), &v(&["a.example.com"])));
        assert!(overlap(&v(&["b.test", "a.test"]), &v(&["a.test"])));
        assert!(!overlap(&v(&["a.example.com"]), &v(&["b.example.com"])));
        assert!(!overlap(&v(&["*.example.com"]), &v(&["example.com"])));
    }
}
