//! Endpoint updates: the table the controller's `Snapshot.endpoint_updates`
//! lead to, built from the serving one. The routing and every cluster not
//! named are shared, not rebuilt, so the cost follows the update, not the
//! size of the configuration. Changed clusters keep their balancing state
//! and TLS settings; their endpoints keep in-flight counts by address.

use std::{collections::HashSet, net::SocketAddr, sync::Arc};

use super::{BuildError, Cluster, Snapshot, Table, build::build_endpoints};

/// A table after an endpoint update.
#[derive(Debug)]
pub struct Updated {
    pub table: Table,
    /// Addresses the changed clusters no longer have (other clusters may
    /// still have them).
    pub removed: Vec<SocketAddr>,
}

impl Table {
    /// The table `update` (an endpoint update, `Snapshot::is_endpoint_update`)
    /// leads to from this one. Refused, changing nothing, when this table
    /// does not serve its base version or when the update is malformed.
    pub fn with_endpoint_update(&self, update: &Snapshot) -> Result<Updated, BuildError> {
        let err = |field: &str, problem: String| {
            BuildError::new("Endpoint update".to_owned(), field, problem)
        };
        if update.base_version != *self.version {
            return Err(err(
                "base_version",
                format!(
                    "applies to version {:?}, this data plane serves {:?}",
                    update.base_version,
                    self.version()
                ),
            ));
        }
        if update.version.is_empty() {
            return Err(err("version", "missing".into()));
        }
        // Anything besides endpoints would be silently ignored below.
        let whole_fields = !update.ports.is_empty()
            || !update.rules.is_empty()
            || !update.clusters.is_empty()
            || !update.backend_identities.is_empty()
            || !update.filters.is_empty()
            || !update.chains.is_empty();
        if whole_fields {
            return Err(err(
                "endpoint_updates",
                "an endpoint update carries no other part of a snapshot".into(),
            ));
        }
        let mut clusters = self.clusters.to_vec();
        let mut seen = HashSet::with_capacity(update.endpoint_updates.len());
        let mut removed = Vec::new();
        for (u, change) in update.endpoint_updates.iter().enumerate() {
            let index = change.cluster as usize;
            let Some(old) = self.clusters.get(index) else {
                return Err(err(
                    &format!("endpoint_updates[{u}].cluster"),
                    format!("cluster {index} out of range"),
                ));
            };
            if !seen.insert(index) {
                return Err(err(
                    &format!("endpoint_updates[{u}].cluster"),
                    format!("cluster {index} listed twice"),
                ));
            }
            let endpoints = build_endpoints(&change.endpoints, index, &old.name, Some(old))?;
            let kept: HashSet<SocketAddr> = endpoints.iter().map(|e| e.address).collect();
            removed.extend(
                old.endpoints
                    .iter()
                    .map(|e| e.address)
                    .filter(|a| !kept.contains(a)),
            );
            clusters[index] = Arc::new(Cluster {
                name: old.name.clone(),
                endpoints,
                load_balancing: old.load_balancing,
                protocol: old.protocol,
                tls: old.tls.clone(),
                tls_with_identity: old.tls_with_identity.clone(),
                next: old.next.clone(),
            });
        }
        Ok(Updated {
            table: Table {
                version: update.version.as_str().into(),
                routing: self.routing.clone(),
                clusters: clusters.into(),
            },
            removed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_snapshot as pb;

    fn endpoint(address: &str) -> pb::Endpoint {
        pb::Endpoint {
            address: address.into(),
            port: 8080,
        }
    }

    fn base() -> pb::Snapshot {
        let mut snapshot = pb::Snapshot {
            group: "default".into(),
            clusters: ["ns/a:80", "ns/b:80", "ns/c:80"]
                .iter()
                .map(|name| pb::Cluster {
                    name: (*name).into(),
                    endpoints: vec![endpoint("10.0.0.1"), endpoint("10.0.0.2")],
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        pb::seal(&mut snapshot);
        snapshot
    }

    /// The update to `endpoints` for cluster 1, as the controller makes it,
    /// and the whole snapshot it stands for.
    fn update(base: &pb::Snapshot, endpoints: Vec<pb::Endpoint>) -> (pb::Snapshot, pb::Snapshot) {
        let mut whole = base.clone();
        whole.clusters[1].endpoints = endpoints.clone();
        pb::seal(&mut whole);
        let update = pb::Snapshot {
            group: base.group.clone(),
            version: whole.version.clone(),
            base_version: base.version.clone(),
            endpoint_updates: vec![pb::ClusterEndpoints {
                cluster: 1,
                endpoints,
            }],
            ..Default::default()
        };
        (update, whole)
    }

    #[test]
    fn only_the_named_clusters_change_and_state_carries_over() {
        let base = base();
        let old = Table::build(Arc::new(base.clone())).unwrap();
        let (update, whole) = update(&base, vec![endpoint("10.0.0.2"), endpoint("10.0.0.3")]);
        let Updated { table, removed } = old.with_endpoint_update(&update).unwrap();
        assert_eq!(table.version(), update.version);
        assert!(Arc::ptr_eq(&old.routing, &table.routing));
        assert!(Arc::ptr_eq(&old.clusters[0], &table.clusters[0]));
        assert!(Arc::ptr_eq(&old.clusters[2], &table.clusters[2]));
        let (before, after) = (old.cluster(1), table.cluster(1));
        assert!(Arc::ptr_eq(&before.next, &after.next));
        assert!(Arc::ptr_eq(
            &before.endpoints[1].in_flight,
            &after.endpoints[0].in_flight
        ));
        assert_eq!(removed, ["10.0.0.1:8080".parse().unwrap()]);
        // What the data plane serves is exactly the whole snapshot the
        // update stands for, version included.
        assert_eq!(table.snapshot(), whole);
    }

    #[test]
    fn an_update_to_another_version_is_refused() {
        let base = base();
        let old = Table::build(Arc::new(base.clone())).unwrap();
        let (mut update, _) = update(&base, vec![endpoint("10.0.0.9")]);
        update.base_version = "0123".into();
        let error = old.with_endpoint_update(&update).unwrap_err();
        assert_eq!(error.field, "base_version");
        assert!(error.problem.contains("0123"), "{error}");
    }

    #[test]
    fn malformed_updates_are_refused_with_the_field_at_fault() {
        let base = base();
        let old = Table::build(Arc::new(base.clone())).unwrap();
        let (good, _) = update(&base, vec![endpoint("10.0.0.9")]);
        type Breakage = fn(&mut pb::Snapshot);
        let cases: [(&str, Breakage); 5] = [
            ("endpoint_updates[0].cluster", |u| {
                u.endpoint_updates[0].cluster = 3
            }),
            ("endpoint_updates[1].cluster", |u| {
                u.endpoint_updates.push(u.endpoint_updates[0].clone())
            }),
            ("clusters[1].endpoints[0].address", |u| {
                u.endpoint_updates[0].endpoints[0].address = "not-an-ip".into()
            }),
            ("endpoint_updates", |u| u.ports.push(pb::Port::default())),
            ("version", |u| u.version.clear()),
        ];
        for (field, break_it) in cases {
            let mut update = good.clone();
            break_it(&mut update);
            let error = old.with_endpoint_update(&update).unwrap_err();
            assert_eq!(error.field, field, "{error}");
        }
    }
}
