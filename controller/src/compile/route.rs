//! HTTPRoutes, per Gateway API `HTTPRouteSpec` and `HTTPRouteRule`: rules,
//! their matches, filters, timeouts, retries and backends, and what the route
//! reports.
//!
//! A rule whose filters cannot be applied (see `filters`) or whose timeouts
//! or retry are invalid is emitted with no backends and no filters, so it answers
//! 500. Spec (`HTTPRouteRule.filters`): "To reject an invalid combination or
//! order of filters, implementations SHOULD consider the Route Rules with
//! this configuration invalid. If all Route Rules in a Route are invalid, the
//! entire Route would be considered invalid. If only a portion of Route Rules
//! are invalid, implementations MUST set the "PartiallyInvalid" condition";
//! and (`HTTPRouteFilter.type`) a filter that cannot be applied "MUST NOT be
//! skipped. Instead, requests that would have been processed by that filter
//! MUST receive a HTTP error response". So a route where only some rules are
//! dropped stays `Accepted` True with `PartiallyInvalid` True (reason
//! `UnsupportedValue`, message starting "Dropped Rule" as
//! `RouteConditionPartiallyInvalid` asks); a route where every rule is
//! dropped is `Accepted` False with `UnsupportedValue`, its rules still
//! answering 500 rather than falling through to another route.
//!
//! An invalid value in a match (a regular expression that does not compile)
//! makes the whole route `Accepted` False with `UnsupportedValue`: it is not
//! attached and contributes nothing to the snapshot.

use gatehouse_snapshot::{Retry, RouteMatch};

use crate::compile::backend::Backends;
use crate::compile::filter_objects::FilterObjects;
use crate::compile::filters::{self, FilterContext, FilterOutcome, FiltersModel};
use crate::compile::precedence::Precedence;
use crate::compile::{matches, retry, timeouts};
use crate::k8s::{HttpRoute, Rule, Time};
use crate::status::BackendFailure;

/// A backend of a rule.
#[derive(Debug, Clone)]
pub struct RuleBackend {
    pub weight: u32,
    /// Cluster name, or why the backendRef is invalid.
    pub target: Result<String, String>,
    pub filters: FiltersModel,
}

/// One rule, ready for the snapshot.
#[derive(Debug, Clone, Default)]
pub struct RuleModel {
    /// Rule name, or its index.
    pub section: String,
    pub matches: Vec<RouteMatch>,
    /// Empty when the rule answers 500 (a rejected filter or timeout).
    pub backends: Vec<RuleBackend>,
    pub filters: FiltersModel,
    pub request_timeout_ms: u32,
    pub backend_request_timeout_ms: u32,
    pub retry: Option<Retry>,
}

impl RuleModel {
    /// Every cluster the rule sends to or mirrors to.
    pub fn clusters(&self) -> impl Iterator<Item = &str> {
        let mirrors = std::iter::once(&self.filters)
            .chain(self.backends.iter().map(|b| &b.filters))
            .flat_map(|f| f.mirrors.iter().map(|m| m.cluster.as_str()));
        self.backends
            .iter()
            .filter_map(|b| b.target.as_deref().ok())
            .chain(mirrors)
    }
}

/// What compile knows about one HTTPRoute.
#[derive(Debug, Clone)]
pub struct RouteModel<'a> {
    /// The route; a GRPCRoute as the HTTPRoute it routes as (see `grpc`).
    pub route: &'a HttpRoute,
    pub kind: RouteKind,
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
    /// GRPCRoute: per rule, per match, characters in its service and
    /// method, for gRPC precedence. Empty for HTTPRoutes.
    pub grpc_match_chars: Vec<Vec<(usize, usize)>>,
}

/// Which Gateway API route kind a model came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKind {
    Http,
    Grpc,
}

impl RouteKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RouteKind::Http => "HTTPRoute",
            RouteKind::Grpc => "GRPCRoute",
        }
    }
}

impl<'a> RouteModel<'a> {
    pub fn new(
        route: &'a HttpRoute,
        kind: RouteKind,
        backends: &mut Backends<'_>,
        gatehouse: &FilterObjects<'_>,
    ) -> Self {
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
            let mut outcome = FilterOutcome::default();
            let built = rule_model(
                &namespace,
                kind,
                index,
                rule,
                backends,
                gatehouse,
                &mut outcome,
            );
            for failure in [built.1, outcome.mirror_failure].into_iter().flatten() {
                if resolved_refs.is_ok() {
                    resolved_refs = Err(failure);
                }
            }
            let section = rule.name.clone().unwrap_or_else(|| index.to_string());
            rules.push(match built.0 {
                Ok(model) => RuleModel {
                    section,
                    matches: rule_matches,
                    ..model
                },
                Err(message) => {
                    unsupported.push(message);
                    RuleModel {
                        section,
                        matches: rule_matches,
                        ..RuleModel::default()
                    }
                }
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
            kind,
            namespace,
            name: meta.name.clone().unwrap_or_default(),
            created: meta.creation_timestamp.as_ref(),
            hostnames: route.spec.hostnames.clone().unwrap_or_default(),
            rules,
            invalid,
            unsupported_rules,
            resolved_refs,
            grpc_match_chars: Vec::new(),
        }
    }

    /// The match's precedence sort key, by the rules of the route's kind.
    pub fn precedence(&self, route_rank: usize, rule: usize, index: usize) -> Precedence {
        let m = &self.rules[rule].matches[index];
        match self.kind {
            RouteKind::Http => Precedence::new(m, route_rank, rule, index),
            RouteKind::Grpc => {
                let chars = self
                    .grpc_match_chars
                    .get(rule)
                    .and_then(|r| r.get(index))
                    .copied()
                    .unwrap_or((0, 0));
                Precedence::grpc(m, chars, route_rank, rule, index)
            }
        }
    }

    pub fn generation(&self) -> i64 {
        self.route.metadata.generation.unwrap_or(0)
    }
}

/// The Gateway API's bound on a backendRef weight.
const MAX_WEIGHT: i32 = 1_000_000;

/// RFC 1123 labels, optionally behind one leading `*.` wildcard label.
pub(super) fn is_hostname(hostname: &str) -> bool {
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

/// A rule's backends, filters and timeouts, and the first backendRef that
/// did not resolve. `Err` (a message naming the field) when the rule must
/// answer 500 instead.
fn rule_model(
    route_ns: &str,
    kind: RouteKind,
    index: usize,
    rule: &Rule,
    backends: &mut Backends<'_>,
    gatehouse: &FilterObjects<'_>,
    outcome: &mut FilterOutcome,
) -> (Result<RuleModel, String>, Option<BackendFailure>) {
    let mut out = Vec::new();
    let mut first_failure = None;
    let prefix_matches_only = matches::prefix_matches_only(rule.matches.as_deref());
    let refs = rule.backend_refs.as_deref().unwrap_or_default();
    let mut rejected = None;
    for (i, r) in refs.iter().enumerate() {
        let field = || format!("spec.rules[{index}].backendRefs[{i}]");
        let weight = u32::try_from(r.weight.unwrap_or(1)).unwrap_or(0);
        let target = backends
            .resolve(route_ns, field, r, kind.as_str())
            .map_err(|failure| {
                let message = failure.message().to_owned();
                first_failure.get_or_insert(failure);
                message
            });
        let ctx = FilterContext {
            field: &|| format!("{}.filters", field()),
            route_ns,
            prefix_matches_only,
            has_backends: false,
            rule_level: false,
            route_kind: kind.as_str(),
            gatehouse,
        };
        let filters = filters::compile(
            &ctx,
            r.filters.as_deref().unwrap_or_default(),
            backends,
            outcome,
        )
        .unwrap_or_else(|message| {
            rejected.get_or_insert(message);
            FiltersModel::default()
        });
        out.push(RuleBackend {
            weight,
            target,
            filters,
        });
    }
    let ctx = FilterContext {
        field: &|| format!("spec.rules[{index}].filters"),
        route_ns,
        prefix_matches_only,
        has_backends: !refs.is_empty(),
        rule_level: true,
        route_kind: kind.as_str(),
        gatehouse,
    };
    let model = filters::compile(
        &ctx,
        rule.filters.as_deref().unwrap_or_default(),
        backends,
        outcome,
    )
    .and_then(|filters| match rejected {
        Some(message) => Err(message),
        None => Ok(filters),
    })
    .and_then(|filters| {
        let (request, backend_request) = timeouts::rule_timeouts(index, rule.timeouts.as_ref())?;
        let retry = retry::rule_retry(index, rule.retry.as_ref())?;
        Ok(RuleModel {
            backends: out,
            filters,
            request_timeout_ms: request,
            backend_request_timeout_ms: backend_request,
            retry,
            ..RuleModel::default()
        })
    });
    (model, first_failure)
}
