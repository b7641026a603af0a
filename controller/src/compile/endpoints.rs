//! EndpointSlice changes without a compile. Endpoints are the most frequent
//! change in a cluster (every rollout, every scale) and touch nothing but
//! the `endpoints` of the clusters of their Service: no route, listener or
//! status depends on them. So when only EndpointSlices changed, the
//! previous compile is kept and those clusters get their endpoints again,
//! through the same function compile uses (`backend::service_endpoints`);
//! only a group whose snapshot changed is sealed again, and so pushed.
//!
//! The work is proportional to the changed Services' slices and to the
//! number of clusters, plus one encode of each changed group's snapshot for
//! its version; not to the number of routes.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::compile::backend::{cluster_source, service_endpoints};
use crate::k8s::Service;
use crate::serve::Snapshots;
use crate::store::{Kind, Object, ObjectKey, Store};

/// Gives the clusters of `services` (namespace, name) in `snapshots` their
/// current endpoints from `store`. Returns the groups whose snapshot
/// changed (copied if shared, and sealed again); the others are untouched.
pub fn refresh(
    store: &Store,
    snapshots: &mut Snapshots,
    services: &BTreeSet<(String, String)>,
) -> Vec<String> {
    let mut changed_groups = Vec::new();
    for (group, snapshot) in snapshots.iter_mut() {
        let mut updates = Vec::new();
        for (index, cluster) in snapshot.clusters.iter().enumerate() {
            let Some((ns, name, port)) = cluster_source(&cluster.name) else {
                continue;
            };
            if !services.contains(&(ns.to_owned(), name.to_owned())) {
                continue;
            }
            let Some(service_port) = service(store, ns, name).and_then(|s| {
                s.spec
                    .as_ref()?
                    .ports
                    .as_ref()?
                    .iter()
                    .find(|p| p.port == port)
            }) else {
                continue;
            };
            let endpoints = service_endpoints(store, ns, name, service_port);
            if endpoints != cluster.endpoints {
                updates.push((index, endpoints));
            }
        }
        if updates.is_empty() {
            continue;
        }
        let snapshot = Arc::make_mut(snapshot);
        for (index, endpoints) in updates {
            snapshot.clusters[index].endpoints = endpoints;
        }
        gatehouse_snapshot::seal(snapshot);
        changed_groups.push(group.clone());
    }
    changed_groups
}

fn service<'s>(store: &'s Store, ns: &str, name: &str) -> Option<&'s Service> {
    match store.get(&ObjectKey::new(Kind::Service, Some(ns), name)) {
        Some(Object::Service(service)) => Some(service),
        _ => None,
    }
}
