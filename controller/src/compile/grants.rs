//! ReferenceGrants (Gateway API `ReferenceGrant`): a grant in the target's
//! namespace lets objects of a kind in a namespace (`from`) refer to
//! objects of a kind (`to`), by name or, without one, to all of them.

use std::collections::HashMap;

use crate::k8s::{GATEWAY_GROUP, ReferenceGrant};
use crate::store::Store;

/// ReferenceGrants by namespace.
pub struct ReferenceGrants<'a> {
    by_namespace: HashMap<&'a str, Vec<&'a ReferenceGrant>>,
}

/// One cross-namespace reference to check.
pub struct Reference<'r> {
    /// Kind of the referring Gateway API object ("HTTPRoute", "Gateway").
    pub from_kind: &'r str,
    pub from_namespace: &'r str,
    /// Core kind of the target ("Service", "Secret").
    pub to_kind: &'r str,
    pub to_namespace: &'r str,
    pub to_name: &'r str,
}

impl<'a> ReferenceGrants<'a> {
    pub fn new(store: &'a Store) -> Self {
        let mut by_namespace: HashMap<&str, Vec<&ReferenceGrant>> = HashMap::new();
        for grant in store.reference_grants() {
            let ns = grant.metadata.namespace.as_deref().unwrap_or("default");
            by_namespace.entry(ns).or_default().push(grant);
        }
        ReferenceGrants { by_namespace }
    }

    /// Whether a grant in the target's namespace allows `r`.
    pub fn allow(&self, r: &Reference<'_>) -> bool {
        let grants = self
            .by_namespace
            .get(r.to_namespace)
            .map(Vec::as_slice)
            .unwrap_or_default();
        grants.iter().any(|g| {
            let from = g.spec.from.iter().any(|f| {
                f.group == GATEWAY_GROUP && f.kind == r.from_kind && f.namespace == r.from_namespace
            });
            let to = g.spec.to.iter().any(|t| {
                t.group.is_empty()
                    && t.kind == r.to_kind
                    && t.name
                        .as_deref()
                        .is_none_or(|n| n.is_empty() || n == r.to_name)
            });
            from && to
        })
    }
}
