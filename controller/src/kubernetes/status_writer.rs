//! Writes compiled statuses through the status subresource.
//!
//! - A write is a read-modify-write carrying the object's resourceVersion;
//!   a conflict (409) re-reads and retries, so a concurrent writer is never
//!   overwritten blindly.
//! - An HTTPRoute's `status.parents` is shared with other controllers: only
//!   entries whose `controllerName` is ours are replaced; a route we no
//!   longer parent loses only our entries.
//! - `lastTransitionTime` is carried over from the cluster's copy while a
//!   condition keeps its status, so an unchanged status compares equal and
//!   is not written (no write when nothing changed).
//! - What was last written is remembered; an unchanged entry costs no
//!   request at all.

use std::collections::{BTreeMap, BTreeSet};

use kube::{Api, Client, Resource, api::PostParams};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;
use tracing::{debug, warn};

use crate::compile::CONTROLLER_NAME;
use crate::k8s::{BackendTlsPolicy, Gateway, GatewayClass, GrpcRoute, HttpRoute};
use crate::status::{StatusEntry, carry_transition_times};

type Key = (String, Option<String>, String);

/// Attempts per object when writes conflict.
const ATTEMPTS: usize = 5;

/// How soon statuses are written again when nothing new came.
const RETRY: std::time::Duration = std::time::Duration::from_secs(5);

pub struct StatusWriter {
    client: Client,
    /// Our part of each status as last written (times included).
    written: BTreeMap<Key, Value>,
    /// Whether this replica leads; checked before every request, so that
    /// one that lost the Lease mid-batch stops writing at once.
    leader: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

/// What the compile loop wants written: the statuses, and how many times
/// this replica has become leader (a new term forgets what was written).
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    pub statuses: Vec<StatusEntry>,
    pub term: u64,
}

impl StatusWriter {
    pub fn new(client: Client) -> Self {
        Self {
            client,
            written: BTreeMap::new(),
            leader: None,
        }
    }

    /// Runs the writer on its own task, so that a slow or hung API call
    /// never holds up compiles and snapshot pushes: the loop hands over the
    /// latest statuses (a newer set replaces one not yet written) and the
    /// writer writes them while `leader` holds.
    pub fn spawn(
        mut self,
        leader: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) -> tokio::sync::watch::Sender<Option<Desired>> {
        self.leader = Some(leader.clone());
        let (tx, mut rx) = tokio::sync::watch::channel::<Option<Desired>>(None);
        tokio::spawn(async move {
            let mut term = 0;
            let mut desired: Option<Desired> = None;
            loop {
                // A write that failed is tried again after a while, even
                // when nothing new comes (entries already written cost no
                // request).
                match tokio::time::timeout(RETRY, rx.changed()).await {
                    Ok(Err(_)) => return,
                    Ok(Ok(())) => desired = rx.borrow_and_update().clone(),
                    Err(_) => {}
                }
                let Some(desired) = &desired else { continue };
                if !leader.load(std::sync::atomic::Ordering::SeqCst) {
                    continue;
                }
                if desired.term != term {
                    self.forget();
                    term = desired.term;
                }
                self.write(&desired.statuses).await;
            }
        });
        tx
    }

    /// Forgets what was written, e.g. after leadership was regained: another
    /// leader may have written since.
    pub fn forget(&mut self) {
        self.written.clear();
    }

    /// Writes every entry that differs from what was last written, and takes
    /// our parents off routes that no longer have an entry.
    pub async fn write(&mut self, entries: &[StatusEntry]) {
        let wanted: BTreeSet<Key> = entries.iter().map(key).collect();
        let gone: Vec<Key> = self
            .written
            .keys()
            .filter(|k| !wanted.contains(*k))
            .cloned()
            .collect();
        // Objects we no longer report on: forget them (one recreated later
        // is written again), and take our entries off shared lists.
        let mut stale = Vec::new();
        for k in gone {
            match shared_list(&k.0) {
                Some(_) => stale.push(k),
                None => {
                    self.written.remove(&k);
                }
            }
        }
        for k in stale {
            let entry = StatusEntry {
                api_version: String::new(),
                kind: k.0.clone(),
                namespace: k.1.clone(),
                name: k.2.clone(),
                generation: 0,
                status: serde_json::json!({ shared_list(&k.0).unwrap_or("parents"): [] }),
            };
            if self.write_one(&entry).await {
                self.written.remove(&k);
            }
        }
        for entry in entries {
            let unchanged = self
                .written
                .get(&key(entry))
                .is_some_and(|last| same_ignoring_times(last, &entry.status));
            if unchanged {
                continue;
            }
            if self.write_one(entry).await {
                self.written.insert(key(entry), entry.status.clone());
            }
        }
    }

    /// True when the cluster now holds the entry.
    async fn write_one(&self, entry: &StatusEntry) -> bool {
        let leading = self
            .leader
            .as_ref()
            .is_none_or(|l| l.load(std::sync::atomic::Ordering::SeqCst));
        if !leading {
            return false;
        }
        let ns = entry.namespace.as_deref();
        let result = match entry.kind.as_str() {
            "GatewayClass" => {
                write::<GatewayClass>(Api::all(self.client.clone()), entry, false).await
            }
            "Gateway" => write::<Gateway>(namespaced(&self.client, ns), entry, false).await,
            "HTTPRoute" => write::<HttpRoute>(namespaced(&self.client, ns), entry, true).await,
            "GRPCRoute" => write::<GrpcRoute>(namespaced(&self.client, ns), entry, true).await,
            "BackendTLSPolicy" => {
                write::<BackendTlsPolicy>(namespaced(&self.client, ns), entry, true).await
            }
            "Filter" => {
                write::<crate::api::Filter>(namespaced(&self.client, ns), entry, false).await
            }
            other => {
                debug!(kind = other, "no status writer for this kind");
                return true;
            }
        };
        match result {
            Ok(()) => true,
            Err(error) => {
                warn!(kind = %entry.kind, name = %entry.name, %error, "status not written");
                false
            }
        }
    }
}

fn namespaced<K: Resource<Scope = k8s_openapi::NamespaceResourceScope>>(
    client: &Client,
    ns: Option<&str>,
) -> Api<K>
where
    K::DynamicType: Default,
{
    Api::namespaced(client.clone(), ns.unwrap_or("default"))
}

fn key(entry: &StatusEntry) -> Key {
    crate::runtime::status_key(entry)
}

/// Read, merge, compare, replace; again on a conflict.
async fn write<K>(api: Api<K>, entry: &StatusEntry, shared_parents: bool) -> anyhow::Result<()>
where
    K: Resource + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
{
    for _ in 0..ATTEMPTS {
        let current = match api.get_status(&entry.name).await {
            Ok(current) => current,
            // Deleted meanwhile: nothing to write.
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let mut object = serde_json::to_value(&current)?;
        let cluster_status = object.get("status").cloned().unwrap_or(Value::Null);
        let mut desired = entry.clone();
        if shared_parents {
            let list = shared_list(&entry.kind).unwrap_or("parents");
            desired.status = merge_ours(&cluster_status, &entry.status, list);
        }
        let previous = StatusEntry {
            status: cluster_status.clone(),
            ..entry.clone()
        };
        carry_transition_times(&previous, &mut desired);
        if desired.status == cluster_status {
            return Ok(());
        }
        object["status"] = desired.status;
        let updated: K = serde_json::from_value(object)?;
        match api
            .replace_status(&entry.name, &PostParams::default(), &updated)
            .await
        {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
    anyhow::bail!("gave up after {ATTEMPTS} conflicting writes")
}

/// The status list a kind shares with other controllers, if any: a
/// route's `parents`, a policy's `ancestors`.
fn shared_list(kind: &str) -> Option<&'static str> {
    match kind {
        "HTTPRoute" | "GRPCRoute" => Some("parents"),
        "BackendTLSPolicy" => Some("ancestors"),
        _ => None,
    }
}

/// The cluster's `list` entries of other controllers, then ours.
fn merge_ours(cluster: &Value, ours: &Value, list: &str) -> Value {
    let foreign = cluster[list]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["controllerName"] != CONTROLLER_NAME)
        .cloned();
    let mine = ours[list].as_array().into_iter().flatten().cloned();
    let mut merged = match cluster {
        Value::Object(map) => Value::Object(map.clone()),
        _ => serde_json::json!({}),
    };
    merged[list] = Value::Array(foreign.chain(mine).collect());
    merged
}

/// Equal once every `lastTransitionTime` is set aside.
fn same_ignoring_times(a: &Value, b: &Value) -> bool {
    fn strip(v: &Value) -> Value {
        match v {
            Value::Object(map) => Value::Object(
                map.iter()
                    .filter(|(k, _)| *k != "lastTransitionTime")
                    .map(|(k, v)| (k.clone(), strip(v)))
                    .collect(),
            ),
            Value::Array(items) => Value::Array(items.iter().map(strip).collect()),
            other => other.clone(),
        }
    }
    strip(a) == strip(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_our_route_parents_are_replaced() {
        let cluster = json!({"parents": [
            {"controllerName": "example.com/other", "parentRef": {"name": "theirs"}},
            {"controllerName": CONTROLLER_NAME, "parentRef": {"name": "old"}},
        ]});
        let ours = json!({"parents": [
            {"controllerName": CONTROLLER_NAME, "parentRef": {"name": "gw"}},
        ]});
        let merged = merge_ours(&cluster, &ours, "parents");
        let names: Vec<&str> = merged["parents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["parentRef"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["theirs", "gw"]);
    }

    #[test]
    fn transition_times_do_not_make_a_status_differ() {
        let a = json!({"conditions": [{"type": "Accepted", "lastTransitionTime": "1"}]});
        let b = json!({"conditions": [{"type": "Accepted", "lastTransitionTime": "2"}]});
        let c = json!({"conditions": [{"type": "Accepted", "status": "False"}]});
        assert!(same_ignoring_times(&a, &b));
        assert!(!same_ignoring_times(&a, &c));
    }
}
