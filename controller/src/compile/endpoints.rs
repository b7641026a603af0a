//! EndpointSlice changes without a compile. Endpoints are the most frequent
//! change in a cluster (every rollout, every scale) and touch nothing but
//! the `endpoints` of the clusters of their Service: no route, listener or
//! status depends on them. So when only EndpointSlices changed, the
//! previous compile is kept and those clusters get their endpoints again,
//! through the same function compile uses (`backend::service_endpoints`).
//!
//! The work is proportional to the change: each changed Service's slices,
//! and the clusters it feeds, found through the index each
//! `GroupSnapshot` keeps; versions come from the per-cluster digests, so
//! nothing else is hashed or copied (see `group_snapshot`).

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::compile::backend::service_endpoints;
use crate::k8s::Service;
use crate::serve::Snapshots;
use crate::store::{Kind, Object, ObjectKey, Store};

/// Gives the clusters of `services` (namespace, name) in `snapshots` their
/// current endpoints from `store`. Returns the groups with a new version;
/// the others are untouched.
pub fn refresh(
    store: &Store,
    snapshots: &mut Snapshots,
    services: &BTreeSet<(String, String)>,
) -> Vec<String> {
    let mut changed_groups = Vec::new();
    for (group, snapshot) in snapshots.iter_mut() {
        let mut updates = Vec::new();
        for (ns, name) in services {
            let clusters = snapshot.clusters_of(ns, name);
            if clusters.is_empty() {
                continue;
            }
            let Some(ports) = service(store, ns, name)
                .and_then(|s| s.spec.as_ref())
                .and_then(|spec| spec.ports.as_ref())
            else {
                continue;
            };
            for &(index, port) in clusters {
                if let Some(service_port) = ports.iter().find(|p| p.port == port) {
                    updates.push((index, service_endpoints(store, ns, name, service_port)));
                }
            }
        }
        if let Some(next) = snapshot.with_endpoints(updates) {
            *snapshot = Arc::new(next);
            changed_groups.push(group.clone());
        }
    }
    changed_groups
}

fn service<'s>(store: &'s Store, ns: &str, name: &str) -> Option<&'s Service> {
    match store.get(&ObjectKey::new(Kind::Service, Some(ns), name)) {
        Some(Object::Service(service)) => Some(service),
        _ => None,
    }
}
