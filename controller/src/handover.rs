//! Moving a Gateway from one cluster group to another without failing a
//! request (Kubernetes mode).
//!
//! Changing a Gateway's `gatehouse.dev/cluster-group` label asks for a move,
//! but clients keep reaching the old group's data planes (its Service
//! address) until they follow the Gateway's `status.addresses`. So a move
//! has two phases:
//!
//! 1. **Warming**: both groups serve the Gateway; its addresses are still
//!    the old group's. It ends when the new group has at least one data
//!    plane connected (to any controller replica) and every one of them has
//!    applied the new group's current snapshot. A group without data planes
//!    never takes a Gateway over.
//! 2. **Draining**: the addresses are the new group's; the old group keeps
//!    serving the Gateway until the drain ends, for clients still on the old
//!    address.
//!
//! The Lease holder alone decides, and writes where each Gateway is served
//! on the Gateway itself (annotation [`ANNOTATION`]). Every replica compiles
//! from that annotation ([`placements`]), so all of them serve the same
//! snapshots, and a move survives a controller restart or a new leader.
//! The label is the request; the annotation is what is served. Moving a
//! Gateway back to the old group while the new one warms up ends the move at
//! once; any other move mid-move starts a new move from the group whose
//! addresses it reports (a group left draining then stops serving it).

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::compile::{Handover, Placement};
use crate::k8s::Gateway;
use crate::store::Store;

/// Where a Gateway is served, as the leader last decided.
pub const ANNOTATION: &str = "gatehouse.dev/served-by";

type GatewayKey = (String, String);

/// The annotation's value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Served {
    /// The group serving the Gateway (the new one during a move).
    pub group: String,
    /// A move in progress: the group it comes from, which serves it too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Once the new group is ready: when the old group stops serving it
    /// (RFC 3339). The addresses are the new group's from then on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_until: Option<String>,
}

impl Served {
    fn settled(group: &str) -> Self {
        Self {
            group: group.to_owned(),
            from: None,
            drain_until: None,
        }
    }

    fn moving(from: &str, to: &str) -> Self {
        Self {
            group: to.to_owned(),
            from: Some(from.to_owned()),
            drain_until: None,
        }
    }
}

/// A Gateway's annotation, if it has a readable one.
pub fn served(gateway: &Gateway) -> Option<Served> {
    let value = gateway.metadata.annotations.as_ref()?.get(ANNOTATION)?;
    serde_json::from_str(value).ok()
}

/// Where our Gateways are served, from their annotations, for compile.
pub fn placements(store: &Store) -> BTreeMap<GatewayKey, Placement> {
    crate::compile::our_gateways(store)
        .filter_map(|g| {
            let served = served(g)?;
            let handover = served.from.map(|from| Handover {
                from,
                addresses_of_new_group: served.drain_until.is_some(),
            });
            let placement = Placement {
                group: served.group,
                handover,
            };
            Some((crate::compile::gateway_key(g), placement))
        })
        .collect()
}

/// The leader's decision for one Gateway labelled `label` whose annotation
/// is `current`: the annotation to write, or `None` to leave it.
pub fn next(
    label: &str,
    current: Option<&Served>,
    now: Timestamp,
    drain: Duration,
    ready: impl Fn(&str) -> bool,
) -> Option<Served> {
    let Some(current) = current else {
        // First sight (a new Gateway, or one from before annotations): it is
        // served where its label says, as it already was.
        return Some(Served::settled(label));
    };
    match (&current.from, &current.drain_until) {
        (None, _) if current.group == label => None,
        (None, _) => Some(Served::moving(&current.group, label)),
        (Some(from), None) => {
            if label == from {
                Some(Served::settled(label))
            } else if label != current.group {
                Some(Served::moving(from, label))
            } else if ready(&current.group) {
                let until = now
                    .checked_add(k8s_openapi::jiff::SignedDuration::try_from(drain).ok()?)
                    .ok()?;
                Some(Served {
                    drain_until: Some(crate::runtime::rfc3339(until)),
                    ..current.clone()
                })
            } else {
                None
            }
        }
        (Some(_), Some(until)) => {
            if label != current.group {
                Some(Served::moving(&current.group, label))
            } else if until.parse::<Timestamp>().is_ok_and(|until| now >= until) {
                Some(Served::settled(label))
            } else {
                None
            }
        }
    }
}

/// The leader's decisions for every Gateway of ours, by (namespace, name).
pub fn decide(
    store: &Store,
    now: Timestamp,
    drain: Duration,
    ready: impl Fn(&str) -> bool,
) -> BTreeMap<GatewayKey, Served> {
    crate::compile::our_gateways(store)
        .filter_map(|g| {
            let label = crate::compile::gateway_group(g);
            let decided = next(&label, served(g).as_ref(), now, drain, &ready)?;
            Some((crate::compile::gateway_key(g), decided))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DRAIN: Duration = Duration::from_secs(30);

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap()
    }

    #[test]
    fn a_move_warms_then_drains_then_settles() {
        let t0 = at(0);
        // First sight: settled where the label says.
        assert_eq!(
            next("a", None, t0, DRAIN, |_| false),
            Some(Served::settled("a"))
        );
        let settled = Served::settled("a");
        assert_eq!(next("a", Some(&settled), t0, DRAIN, |_| true), None);
        // Relabelled: a move from a.
        let warming = next("b", Some(&settled), t0, DRAIN, |_| true).unwrap();
        assert_eq!(warming, Served::moving("a", "b"));
        // b not ready: nothing changes.
        assert_eq!(next("b", Some(&warming), t0, DRAIN, |_| false), None);
        // Ready: draining for 30 s.
        let draining = next("b", Some(&warming), t0, DRAIN, |g| g == "b").unwrap();
        assert_eq!(draining.from.as_deref(), Some("a"));
        assert_eq!(
            draining.drain_until.as_deref(),
            Some("2027-01-15T08:00:30Z")
        );
        assert_eq!(next("b", Some(&draining), at(29), DRAIN, |_| true), None);
        assert_eq!(
            next("b", Some(&draining), at(30), DRAIN, |_| true),
            Some(Served::settled("b"))
        );
    }

    #[test]
    fn moves_during_moves() {
        let t0 = at(0);
        let warming = Served::moving("a", "b");
        // Back to a while b warms up: a never stopped serving.
        assert_eq!(
            next("a", Some(&warming), t0, DRAIN, |_| true),
            Some(Served::settled("a"))
        );
        // On to c while b warms up: a still reports the addresses.
        assert_eq!(
            next("c", Some(&warming), t0, DRAIN, |_| true),
            Some(Served::moving("a", "c"))
        );
        let draining = Served {
            drain_until: Some("2027-01-15T08:00:30Z".into()),
            ..warming
        };
        // Back to a, or on to c, while draining: b reports the addresses.
        assert_eq!(
            next("a", Some(&draining), t0, DRAIN, |_| true),
            Some(Served::moving("b", "a"))
        );
        assert_eq!(
            next("c", Some(&draining), t0, DRAIN, |_| true),
            Some(Served::moving("b", "c"))
        );
    }

    #[test]
    fn the_annotation_reads_back() {
        let served = Served {
            group: "b".into(),
            from: Some("a".into()),
            drain_until: Some("2027-01-15T08:00:30Z".into()),
        };
        let json = serde_json::to_string(&served).unwrap();
        assert_eq!(
            json,
            r#"{"group":"b","from":"a","drainUntil":"2027-01-15T08:00:30Z"}"#
        );
        assert_eq!(serde_json::from_str::<Served>(&json).unwrap(), served);
    }
}
