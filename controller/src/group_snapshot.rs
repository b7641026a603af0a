//! One cluster group's current snapshot: the last compile's, and the
//! endpoint changes made since.
//!
//! A compile costs time in proportion to the whole configuration; an
//! EndpointSlice change must cost time in proportion to itself. So the
//! compiled snapshot is kept as it was, and endpoints changed since are kept
//! beside it in a persistent map that each version shares with the one
//! before: a change costs O(changed clusters × log clusters), its version
//! comes from `VersionDigest` without hashing the rest, and a data plane
//! that serves a recent version receives only the clusters changed since.
//! The whole snapshot is put together only for whoever needs it (a data
//! plane that connects or fell behind, the debug views), once per version.

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    sync::{Arc, OnceLock},
};

use gatehouse_snapshot::{ClusterEndpoints, EncodedSnapshot, Endpoint, Snapshot, VersionDigest};

use crate::compile::cluster_source;

/// How many endpoint-only steps a version remembers: a data plane that
/// serves one of the versions they started from gets an endpoint update,
/// an older one the whole snapshot.
const REMEMBERED_STEPS: usize = 16;

/// Cluster indices and Service ports, by Service (namespace, name).
type ServiceClusters = BTreeMap<(String, String), Vec<(u32, i32)>>;

#[derive(Debug)]
pub struct GroupSnapshot {
    /// As compiled. The endpoints of clusters in `changed` are stale.
    compiled: Arc<Snapshot>,
    /// Endpoints changed since the compile, by cluster index.
    changed: imbl::OrdMap<u32, Arc<[Endpoint]>>,
    digest: VersionDigest,
    version: String,
    /// The latest endpoint-only steps that led here, oldest first.
    steps: Arc<VecDeque<Step>>,
    /// Which clusters each Service's endpoints feed, found once per compile.
    services: Arc<ServiceClusters>,
    whole: OnceLock<Arc<Snapshot>>,
    /// `whole` as sent: encoded once for every data plane of the group.
    encoded: OnceLock<EncodedSnapshot>,
}

#[derive(Debug, Clone)]
struct Step {
    /// The version the step started from.
    from: String,
    clusters: Vec<u32>,
}

impl GroupSnapshot {
    /// A compiled snapshot, sealed again: the digest that comes of it is
    /// what endpoint changes continue from.
    pub fn compiled(mut snapshot: Snapshot) -> Self {
        let digest = gatehouse_snapshot::seal(&mut snapshot);
        let mut services = ServiceClusters::new();
        for (index, cluster) in snapshot.clusters.iter().enumerate() {
            if let Some((ns, name, port)) = cluster_source(&cluster.name) {
                services
                    .entry((ns.to_owned(), name.to_owned()))
                    .or_default()
                    .push((cluster_index(index), port));
            }
        }
        Self {
            version: snapshot.version.clone(),
            compiled: Arc::new(snapshot),
            changed: imbl::OrdMap::new(),
            digest,
            steps: Arc::default(),
            services: Arc::new(services),
            whole: OnceLock::new(),
            encoded: OnceLock::new(),
        }
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn group(&self) -> &str {
        &self.compiled.group
    }

    /// The compiled snapshot, for what endpoints do not affect (features,
    /// routes, filters). Its endpoints and version may be out of date.
    pub fn compiled_part(&self) -> &Snapshot {
        &self.compiled
    }

    /// The clusters (index, Service port) fed by a Service's endpoints.
    pub fn clusters_of(&self, namespace: &str, name: &str) -> &[(u32, i32)] {
        self.services
            .get(&(namespace.to_owned(), name.to_owned()))
            .map_or(&[], Vec::as_slice)
    }

    /// The current endpoints of cluster `index`.
    pub fn endpoints(&self, index: u32) -> &[Endpoint] {
        match self.changed.get(&index) {
            Some(endpoints) => endpoints,
            None => self
                .compiled
                .clusters
                .get(index as usize)
                .map_or(&[], |c| &c.endpoints),
        }
    }

    /// The whole current snapshot, put together on first use.
    pub fn whole(&self) -> Arc<Snapshot> {
        self.whole
            .get_or_init(|| {
                if self.changed.is_empty() {
                    return self.compiled.clone();
                }
                let mut snapshot = Snapshot::clone(&self.compiled);
                for (index, endpoints) in &self.changed {
                    snapshot.clusters[*index as usize].endpoints = endpoints.to_vec();
                }
                snapshot.version.clone_from(&self.version);
                Arc::new(snapshot)
            })
            .clone()
    }

    /// The whole current snapshot, encoded on first use.
    pub fn encoded(&self) -> EncodedSnapshot {
        self.encoded
            .get_or_init(|| EncodedSnapshot::new(&self.whole()))
            .clone()
    }

    /// The next version, with `updates` (cluster index, endpoints) applied;
    /// `None` when they change nothing. Indices out of range are ignored.
    pub fn with_endpoints(&self, updates: Vec<(u32, Vec<Endpoint>)>) -> Option<Self> {
        let mut changed = self.changed.clone();
        let mut digest = self.digest;
        let mut clusters = BTreeSet::new();
        for (index, endpoints) in updates {
            if index as usize >= self.compiled.clusters.len() || clusters.contains(&index) {
                continue;
            }
            let old = self.endpoints(index);
            if old == endpoints.as_slice() {
                continue;
            }
            digest.replace_endpoints(index, old, &endpoints);
            changed.insert(index, endpoints.into());
            clusters.insert(index);
        }
        if clusters.is_empty() {
            return None;
        }
        let clusters: Vec<u32> = clusters.into_iter().collect();
        let mut steps = VecDeque::clone(&self.steps);
        if steps.len() == REMEMBERED_STEPS {
            steps.pop_front();
        }
        steps.push_back(Step {
            from: self.version.clone(),
            clusters,
        });
        Some(Self {
            compiled: self.compiled.clone(),
            changed,
            version: digest.version(),
            digest,
            steps: Arc::new(steps),
            services: self.services.clone(),
            whole: OnceLock::new(),
            encoded: OnceLock::new(),
        })
    }

    /// The endpoint update that takes a data plane serving `version` to
    /// this one, if only endpoints changed in between and this snapshot
    /// still remembers it.
    pub fn update_since(&self, version: &str) -> Option<Snapshot> {
        if version.is_empty() || version == self.version {
            return None;
        }
        let start = self.steps.iter().position(|s| s.from == version)?;
        let clusters: BTreeSet<u32> = self
            .steps
            .iter()
            .skip(start)
            .flat_map(|s| s.clusters.iter().copied())
            .collect();
        Some(Snapshot {
            group: self.compiled.group.clone(),
            version: self.version.clone(),
            base_version: version.to_owned(),
            endpoint_updates: clusters
                .into_iter()
                .map(|cluster| ClusterEndpoints {
                    cluster,
                    endpoints: self.endpoints(cluster).to_vec(),
                })
                .collect(),
            ..Default::default()
        })
    }
}

fn cluster_index(index: usize) -> u32 {
    u32::try_from(index).expect("a snapshot has fewer than 2^32 clusters")
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_snapshot::Cluster;

    fn endpoint(last: u8) -> Endpoint {
        Endpoint {
            address: format!("10.0.0.{last}"),
            port: 8080,
        }
    }

    fn compiled() -> GroupSnapshot {
        GroupSnapshot::compiled(Snapshot {
            group: "g".into(),
            clusters: ["a/one:80", "a/two:80", "b/one:443+h2c"]
                .iter()
                .map(|name| Cluster {
                    name: (*name).into(),
                    endpoints: vec![endpoint(1)],
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
    }

    #[test]
    fn every_version_is_the_content_version_of_its_whole_snapshot() {
        let first = compiled();
        let second = first.with_endpoints(vec![(1, vec![endpoint(2)])]).unwrap();
        let third = second
            .with_endpoints(vec![(2, vec![]), (0, vec![endpoint(3), endpoint(4)])])
            .unwrap();
        for snapshot in [&first, &second, &third] {
            let whole = snapshot.whole();
            assert_eq!(whole.version, snapshot.version());
            assert_eq!(gatehouse_snapshot::content_version(&whole), whole.version);
        }
        assert_eq!(third.whole().clusters[0].endpoints.len(), 2);
        assert!(third.whole().clusters[2].endpoints.is_empty());
        assert_eq!(first.whole().clusters[1].endpoints, vec![endpoint(1)]);
    }

    #[test]
    fn unchanged_endpoints_make_no_new_version() {
        let first = compiled();
        assert!(first.with_endpoints(vec![(0, vec![endpoint(1)])]).is_none());
        assert!(first.with_endpoints(vec![(9, vec![endpoint(2)])]).is_none());
    }

    #[test]
    fn an_update_covers_every_step_since_the_version_a_data_plane_serves() {
        let first = compiled();
        let second = first.with_endpoints(vec![(1, vec![endpoint(2)])]).unwrap();
        let third = second.with_endpoints(vec![(2, vec![endpoint(5)])]).unwrap();
        let update = third.update_since(first.version()).unwrap();
        assert_eq!(update.base_version, first.version());
        assert_eq!(update.version, third.version());
        let clusters: Vec<u32> = update.endpoint_updates.iter().map(|u| u.cluster).collect();
        assert_eq!(clusters, [1, 2]);
        assert_eq!(update.endpoint_updates[0].endpoints, vec![endpoint(2)]);
        assert!(update.ports.is_empty() && update.clusters.is_empty());
        let one_step = third.update_since(second.version()).unwrap();
        assert_eq!(one_step.endpoint_updates.len(), 1);
        assert!(third.update_since("unknown").is_none());
        assert!(third.update_since(third.version()).is_none());
    }

    #[test]
    fn only_the_latest_steps_are_remembered() {
        let first = compiled();
        let mut current = first
            .with_endpoints(vec![(0, vec![endpoint(100)])])
            .unwrap();
        // Never back to the first content, whose version would be a step's
        // start again.
        for last in 10..10 + REMEMBERED_STEPS as u8 {
            current = current
                .with_endpoints(vec![(0, vec![endpoint(last)])])
                .unwrap();
        }
        assert!(current.update_since(first.version()).is_none());
        assert_eq!(current.steps.len(), REMEMBERED_STEPS);
    }

    #[test]
    fn services_find_their_clusters_by_name_and_port() {
        let snapshot = compiled();
        assert_eq!(snapshot.clusters_of("a", "one"), [(0, 80)]);
        assert_eq!(snapshot.clusters_of("b", "one"), [(2, 443)]);
        assert!(snapshot.clusters_of("c", "one").is_empty());
    }
}
