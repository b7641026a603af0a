//! Gateway API status, computed without I/O: the entries compile returns and
//! the rules that keep them stable between compiles. `conditions` is the one
//! place where condition types and reasons are spelled.

pub mod conditions;

use serde_json::Value;

pub use conditions::{
    BackendFailure, CertificateFailure, ConditionContext, Conflict, GatewayReport, ListenerReport,
    ParentRefReport, RouteParentReport, RouteRejection,
};

/// The status of one object, as the controller would write it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StatusEntry {
    pub api_version: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
    pub generation: i64,
    pub status: Value,
}

impl StatusEntry {
    /// `{apiVersion, kind, metadata: {namespace, name, generation}, status}`,
    /// the shape `/debug/status` serves; no namespace for cluster-scoped kinds.
    pub fn to_debug_json(&self) -> Value {
        let mut metadata = serde_json::Map::new();
        if let Some(ns) = &self.namespace {
            metadata.insert("namespace".into(), ns.clone().into());
        }
        metadata.insert("name".into(), self.name.clone().into());
        metadata.insert("generation".into(), self.generation.into());
        serde_json::json!({
            "apiVersion": self.api_version,
            "kind": self.kind,
            "metadata": metadata,
            "status": self.status,
        })
    }
}

/// Gateways whose group's data planes rejected the current snapshot: their
/// `Programmed` condition turns False with the data plane's reason (the
/// previous snapshot keeps serving, so what the Gateway says is not what
/// runs). `rejections` maps a group to (node id, reason); `groups` maps a
/// Gateway's (namespace, name) to its group; `now` stamps the change.
pub fn with_rejections(
    statuses: &[StatusEntry],
    groups: &std::collections::BTreeMap<(String, String), Vec<String>>,
    rejections: &std::collections::BTreeMap<String, (String, String)>,
    now: &str,
) -> Vec<StatusEntry> {
    let mut out = statuses.to_vec();
    if rejections.is_empty() {
        return out;
    }
    for entry in out.iter_mut().filter(|e| e.kind == "Gateway") {
        let key = (
            entry.namespace.clone().unwrap_or_default(),
            entry.name.clone(),
        );
        // Any group serving the Gateway (both, while it moves) that
        // rejected its snapshot makes the Gateway not programmed.
        let Some((node, reason)) = groups
            .get(&key)
            .into_iter()
            .flatten()
            .find_map(|g| rejections.get(g))
        else {
            continue;
        };
        let conditions = entry.status["conditions"].as_array_mut();
        for condition in conditions.into_iter().flatten() {
            if condition["type"] == "Programmed" {
                if condition["status"] != "False" {
                    condition["lastTransitionTime"] = now.into();
                }
                condition["status"] = "False".into();
                condition["reason"] = "Invalid".into();
                condition["message"] =
                    format!("Data plane {node} rejected the configuration: {reason}").into();
            }
        }
    }
    out
}

/// Keeps `lastTransitionTime` of every condition whose type keeps the same
/// status, as the Kubernetes condition conventions ask: the time says when the
/// status last changed, not when it was last computed. Listeners are matched
/// by `name`, route parents by `parentRef`, anything else by position.
pub fn carry_transition_times(previous: &StatusEntry, next: &mut StatusEntry) {
    carry(&previous.status, &mut next.status);
}

fn carry(previous: &Value, next: &mut Value) {
    match (previous, next) {
        (Value::Object(prev), Value::Object(next)) => {
            for (key, value) in next.iter_mut() {
                let Some(old) = prev.get(key) else { continue };
                if key == "conditions" {
                    carry_conditions(old, value);
                } else {
                    carry(old, value);
                }
            }
        }
        (Value::Array(prev), Value::Array(next)) => {
            for (index, item) in next.iter_mut().enumerate() {
                if let Some(old) = counterpart(prev, index, item) {
                    carry(old, item);
                }
            }
        }
        _ => {}
    }
}

fn counterpart<'a>(previous: &'a [Value], index: usize, item: &Value) -> Option<&'a Value> {
    for identity in ["name", "parentRef"] {
        if let Some(id) = item.get(identity) {
            return previous.iter().find(|old| old.get(identity) == Some(id));
        }
    }
    previous.get(index)
}

fn carry_conditions(previous: &Value, next: &mut Value) {
    let (Value::Array(prev), Value::Array(next)) = (previous, next) else {
        return;
    };
    for condition in next {
        let same = prev.iter().find(|old| {
            old.get("type") == condition.get("type") && old.get("status") == condition.get("status")
        });
        if let (Some(old), Value::Object(condition)) = (same, condition)
            && let Some(time) = old.get("lastTransitionTime")
        {
            condition.insert("lastTransitionTime".into(), time.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(status: Value) -> StatusEntry {
        StatusEntry {
            api_version: "gateway.networking.k8s.io/v1".into(),
            kind: "Gateway".into(),
            namespace: Some("ns".into()),
            name: "g".into(),
            generation: 2,
            status,
        }
    }

    fn cond(kind: &str, status: &str, time: &str) -> Value {
        json!({"type": kind, "status": status, "lastTransitionTime": time})
    }

    #[test]
    fn unchanged_condition_keeps_its_time_and_changed_one_takes_the_new_time() {
        let previous = entry(json!({
            "conditions": [cond("Accepted", "True", "t0"), cond("Programmed", "False", "t0")],
            "listeners": [{"name": "b", "conditions": [cond("Accepted", "True", "t0")]}],
        }));
        let mut next = entry(json!({
            "conditions": [cond("Accepted", "True", "t1"), cond("Programmed", "True", "t1")],
            "listeners": [
                {"name": "a", "conditions": [cond("Accepted", "True", "t1")]},
                {"name": "b", "conditions": [cond("Accepted", "True", "t1")]},
            ],
        }));
        carry_transition_times(&previous, &mut next);
        assert_eq!(next.status["conditions"][0]["lastTransitionTime"], "t0");
        assert_eq!(next.status["conditions"][1]["lastTransitionTime"], "t1");
        assert_eq!(
            next.status["listeners"][0]["conditions"][0]["lastTransitionTime"],
            "t1"
        );
        assert_eq!(
            next.status["listeners"][1]["conditions"][0]["lastTransitionTime"],
            "t0"
        );
    }

    #[test]
    fn debug_json_omits_namespace_for_cluster_scoped_kinds() {
        let mut e = entry(json!({}));
        e.namespace = None;
        let v = e.to_debug_json();
        assert!(v["metadata"].get("namespace").is_none());
        assert_eq!(v["metadata"]["generation"], 2);
    }
}
