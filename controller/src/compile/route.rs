//! HTTPRoutes, per Gateway API `HTTPRouteSpec` and `HTTPRouteRule`: rules,
//! their matches and backends, and what the route reports.
//!
//! Filters (rule or backendRef level) are not supported yet. Spec
//! (`HTTPRouteRule.filters`): "To reject an invalid combination or order of
//! filters, implementations SHOULD consider the Route Rules with this
//! configuration invalid. If all Route Rules in a Route are invalid, the
//! entire Route would be considered invalid. If only a portion of Route Rules
//! are invalid, implementations MUST set the "PartiallyInvalid" condition";
//! and (`HTTPRouteFilter.type`) a filter that cannot be applied "MUST NOT be
//! skipped. Instead, requests that would have been processed by that filter
//! MUST receive a HTTP error response". So a rule with a filter is emitted
//! with no backends (500); a route where only some rules have filters stays
//! `Accepted` True with `PartiallyInvalid` True (reason `UnsupportedValue`,
//! message starting "Dropped Rule" as `RouteConditionPartiallyInvalid`
//! asks); a route where every rule has one is `Accepted` False with
//! `UnsupportedValue`, its rules still answering 500 rather than falling
//! through to another route.
//!
//! An invalid value in a match (a regular expression that does not compile)
//! makes the whole route `Accepted` False with `UnsupportedValue`: it is not
//! attached and contributes nothing to the snapshot.

use gatehouse_snapshot::RouteMatch;

use crate::compile::backend::Backends;
use crate::compile::matches;
use crate::k8s::{HttpRoute, Rule, Time};
use crate::status::BackendFailure;

/// A backend of a rule: weight, and cluster name or why it is invalid.
pub type RuleBackend = (u32, Result<String, String>);

/// One rule, ready for the snapshot.
#[derive(Debug, Clone)]
pub struct RuleModel {
    /// Rule name, or its index.
    pub section: String,
    pub matches: Vec<RouteMatch>,
    /// Empty when the rule answers 500 (unsupported filters).
    pub backends: Vec<RuleBackend>,
}

/// What compile knows about one HTTPRoute.
#[derive(Debug, Clone)]
pub struct RouteModel<'a> {
    pub route: &'a HttpRoute,
    pub namespace: String,
    pub name: String,
    pub created: Option<&'a Time>,
    pub hostnames: Vec<String>,
    pub rules: Vec<RuleModel>,
    /// An invalid value: the route is not accepted anywhere.
    pub invalid: Option<String>,
    /// Rules answering 500 for unsupported filters: message, and whether
    /// that is every rule.
    pub unsupported_rules: Option<(String, bool)>,
    pub resolved_refs: Result<(), BackendFailure>,
}

impl<'a> RouteModel<'a> {
    pub fn new(route: &'a HttpRoute, backends: &mut Backends<'_>) -> Self {
        let meta = &route.metadata;
        let namespace = meta.namespace.clone().unwrap_or_else(|| "default".into());
        let spec_rules = route.spec.rules.as_deref().unwrap_or_default();
        let mut rules = Vec::with_capacity(spec_rules.len());
        let mut invalid = None;
        let mut resolved_refs = Ok(());
        let mut unsupported = Vec::new();
        for (index, rule) in spec_rules.iter().enumerate() {
            let rule_matches = match matches::rule_matches(index, rule.matches.as_deref()) {
                Ok(m) => m,
                Err(message) => {
                    invalid.get_or_insert(message);
                    Vec::new()
                }
            };
            let resolved = rule_backends(&namespace, index, rule, backends);
            if let (Ok(()), Some(failure)) = (&resolved_refs, resolved.1) {
                resolved_refs = Err(failure);
            }
            let filter = unsupported_filter(index, rule);
            if let Some(f) = &filter {
                unsupported.push(f.clone());
            }
            rules.push(RuleModel {
                section: rule.name.clone().unwrap_or_else(|| index.to_string()),
                matches: rule_matches,
                backends: if filter.is_some() {
                    Vec::new()
                } else {
                    resolved.0
                },
            });
        }
        for (i, hostname) in route.spec.hostnames.iter().flatten().enumerate() {
            if !is_hostname(hostname) {
                invalid.get_or_insert(format!(
                    "spec.hostnames[{i}]: {hostname:?} is not a hostname or a *.wildcard"
                ));
            }
        }
        for (index, rule) in spec_rules.iter().enumerate() {
            for (i, r) in rule.backend_refs.iter().flatten().enumerate() {
                let weight = r.weight.unwrap_or(1);
                if !(0..=MAX_WEIGHT).contains(&weight) {
                    invalid.get_or_insert(format!(
                        "spec.rules[{index}].backendRefs[{i}].weight: {weight} is outside 0..={MAX_WEIGHT}"
                    ));
                }
            }
        }
        let unsupported_rules = (!unsupported.is_empty()).then(|| {
            let every = unsupported.len() == rules.len();
            let message = format!(
                "Dropped Rule(s), answered with 500: {}",
                unsupported.join("; ")
            );
            (message, every)
        });
        RouteModel {
            route,
            namespace,
            name: meta.name.clone().unwrap_or_default(),
            created: meta.creation_timestamp.as_ref(),
            hostnames: route.spec.hostnames.clone().unwrap_or_default(),
            rules,
            invalid,
            unsupported_rules,
            resolved_refs,
        }
    }

    pub fn generation(&self) -> i64 {
        self.route.metadata.generation.unwrap_or(0)
    }
}

/// The Gateway API's bound on a backendRef weight.
const MAX_WEIGHT: i32 = 1_000_000;

/// RFC 1123 labels, optionally behind one leading `*.` wildcard label.
fn is_hostname(hostname: &str) -> bool {
    let name = hostname.strip_prefix("*.").unwrap_or(hostname);
    !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Backends of a rule, and the first failure among them. Weight defaults to 1.
fn rule_backends(
    route_ns: &str,
    index: usize,
    rule: &Rule,
    backends: &mut Backends<'_>,
) -> (Vec<RuleBackend>, Option<BackendFailure>) {
    let mut out = Vec::new();
    let mut first_failure = None;
    for (i, r) in rule.backend_refs.iter().flatten().enumerate() {
        let field = || format!("spec.rules[{index}].backendRefs[{i}]");
        let weight = u32::try_from(r.weight.unwrap_or(1)).unwrap_or(0);
        match backends.resolve(route_ns, field, r) {
            Ok(cluster) => out.push((weight, Ok(cluster))),
            Err(failure) => {
                out.push((weight, Err(failure.message().to_owned())));
                first_failure.get_or_insert(failure);
            }
        }
    }
    (out, first_failure)
}

/// Names the first filter of a rule (or of one of its backendRefs).
fn unsupported_filter(index: usize, rule: &Rule) -> Option<String> {
    let filter_type = |t: serde_json::Result<serde_json::Value>| {
        t.ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    };
    if let Some(f) = rule.filters.iter().flatten().next() {
        let t = filter_type(serde_json::to_value(&f.r#type));
        return Some(format!(
            "spec.rules[{index}].filters[0]: filter {t} is not supported yet"
        ));
    }
    for (i, r) in rule.backend_refs.iter().flatten().enumerate() {
        if let Some(f) = r.filters.iter().flatten().next() {
            let t = filter_type(serde_json::to_value(&f.r#type));
            return Some(format!(
                "spec.rules[{index}].backendRefs[{i}].filters[0]: filter {t} is not supported yet"
            ));
        }
    }
    None
}
