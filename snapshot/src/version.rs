//! Snapshot versions: a digest of the content in two parts, the endpoints
//! of each cluster and everything else.
//!
//! Endpoints change far more often than anything else (every rollout, every
//! scale), and a snapshot with 10,000 routes should not be hashed again
//! because one Service gained a pod. So each cluster's endpoints get their
//! own digest (which includes the cluster's index), and these are combined
//! by addition modulo 2^256, which does not depend on order: replacing one
//! cluster's endpoints subtracts its old digest and adds the new one. An
//! endpoint update costs the digests of the clusters it changes, and the
//! version it yields is exactly the one of the whole updated snapshot.
//!
//! A version detects change between snapshots the controller made; it is
//! not a signature, so the additive combination's weaker collision
//! resistance against chosen inputs does not matter here.

use prost::Message;
use sha2::{Digest, Sha256};

use crate::{Endpoint, Snapshot};

/// The parts a snapshot's version is computed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VersionDigest {
    /// Everything but `version` and the clusters' endpoints.
    rest: [u8; 32],
    /// Sum of the per-cluster endpoint digests.
    endpoints: Sum256,
}

impl VersionDigest {
    /// The digest of `snapshot`, whatever its `version` holds. Takes the
    /// snapshot mutably to hash it without a copy; leaves it as it was.
    pub fn of(snapshot: &mut Snapshot) -> Self {
        let version = std::mem::take(&mut snapshot.version);
        let mut endpoints = Sum256::default();
        let mut taken = Vec::with_capacity(snapshot.clusters.len());
        for (index, cluster) in snapshot.clusters.iter_mut().enumerate() {
            endpoints.add(&cluster_digest(index_u32(index), &cluster.endpoints));
            taken.push(std::mem::take(&mut cluster.endpoints));
        }
        let rest = Sha256::digest(snapshot.encode_to_vec()).into();
        for (cluster, list) in snapshot.clusters.iter_mut().zip(taken) {
            cluster.endpoints = list;
        }
        snapshot.version = version;
        Self { rest, endpoints }
    }

    /// The digest once cluster `index`'s endpoints are `new` instead of `old`.
    pub fn replace_endpoints(&mut self, index: u32, old: &[Endpoint], new: &[Endpoint]) {
        self.endpoints.sub(&cluster_digest(index, old));
        self.endpoints.add(&cluster_digest(index, new));
    }

    /// The version string: hex of the first 16 bytes of SHA-256 over both
    /// parts.
    pub fn version(&self) -> String {
        let mut hasher = Sha256::new();
        hasher.update(self.rest);
        hasher.update(self.endpoints.to_le_bytes());
        hex::encode(&hasher.finalize()[..16])
    }
}

fn index_u32(index: usize) -> u32 {
    u32::try_from(index).expect("a snapshot has fewer than 2^32 clusters")
}

fn cluster_digest(index: u32, endpoints: &[Endpoint]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(index.to_le_bytes());
    let mut buf = Vec::with_capacity(24 * endpoints.len());
    for endpoint in endpoints {
        endpoint
            .encode_length_delimited(&mut buf)
            .expect("a Vec grows as needed");
    }
    hasher.update(&buf);
    hasher.finalize().into()
}

/// A 256-bit number, little-endian limbs, with wrapping addition.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Sum256([u64; 4]);

impl Sum256 {
    fn limbs(bytes: &[u8; 32]) -> [u64; 4] {
        std::array::from_fn(|i| {
            u64::from_le_bytes(bytes[i * 8..i * 8 + 8].try_into().expect("8 bytes"))
        })
    }

    fn add(&mut self, bytes: &[u8; 32]) {
        let mut carry = false;
        for (limb, other) in self.0.iter_mut().zip(Self::limbs(bytes)) {
            let (sum, c1) = limb.overflowing_add(other);
            let (sum, c2) = sum.overflowing_add(u64::from(carry));
            *limb = sum;
            carry = c1 || c2;
        }
    }

    fn sub(&mut self, bytes: &[u8; 32]) {
        let mut borrow = false;
        for (limb, other) in self.0.iter_mut().zip(Self::limbs(bytes)) {
            let (diff, b1) = limb.overflowing_sub(other);
            let (diff, b2) = diff.overflowing_sub(u64::from(borrow));
            *limb = diff;
            borrow = b1 || b2;
        }
    }

    fn to_le_bytes(self) -> [u8; 32] {
        let mut out = [0; 32];
        for (chunk, limb) in out.chunks_exact_mut(8).zip(self.0) {
            chunk.copy_from_slice(&limb.to_le_bytes());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Cluster;

    fn endpoint(last: u8, port: u32) -> Endpoint {
        Endpoint {
            address: format!("10.0.0.{last}"),
            port,
        }
    }

    fn snapshot(endpoints: Vec<Vec<Endpoint>>) -> Snapshot {
        Snapshot {
            group: "default".into(),
            clusters: endpoints
                .into_iter()
                .enumerate()
                .map(|(i, endpoints)| Cluster {
                    name: format!("ns/svc-{i}:80"),
                    endpoints,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn addition_and_subtraction_carry_across_limbs() {
        let mut sum = Sum256([u64::MAX, u64::MAX, 0, 7]);
        let mut one = [0; 32];
        one[0] = 1;
        sum.add(&one);
        assert_eq!(sum, Sum256([0, 0, 1, 7]));
        sum.sub(&one);
        assert_eq!(sum, Sum256([u64::MAX, u64::MAX, 0, 7]));
        let mut top = Sum256([0, 0, 0, u64::MAX]);
        top.add(&Sum256([0, 0, 0, 1]).to_le_bytes());
        assert_eq!(top, Sum256::default(), "wraps modulo 2^256");
    }

    #[test]
    fn a_replaced_cluster_gives_the_version_of_the_whole_new_snapshot() {
        let old = vec![endpoint(1, 80), endpoint(2, 80)];
        let new = vec![endpoint(3, 80)];
        let mut before = snapshot(vec![old.clone(), vec![], old.clone()]);
        let mut after = snapshot(vec![old.clone(), vec![], new.clone()]);
        let mut digest = VersionDigest::of(&mut before);
        digest.replace_endpoints(2, &old, &new);
        assert_eq!(digest, VersionDigest::of(&mut after));
        assert_eq!(digest.version(), VersionDigest::of(&mut after).version());
    }

    #[test]
    fn endpoints_count_per_cluster_not_as_a_pool() {
        // The same endpoints moved to another cluster is another snapshot.
        let e = vec![endpoint(1, 80)];
        let mut a = snapshot(vec![e.clone(), vec![]]);
        let mut b = snapshot(vec![vec![], e]);
        b.clusters[0].name = a.clusters[0].name.clone();
        b.clusters[1].name = a.clusters[1].name.clone();
        assert_ne!(
            VersionDigest::of(&mut a).version(),
            VersionDigest::of(&mut b).version()
        );
    }

    #[test]
    fn hashing_leaves_the_snapshot_as_it_was() {
        let mut s = snapshot(vec![vec![endpoint(1, 80)], vec![endpoint(2, 81)]]);
        s.version = "v".into();
        let copy = s.clone();
        VersionDigest::of(&mut s);
        assert_eq!(s, copy);
    }
}
