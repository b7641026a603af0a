//! Effective filter chains: which gatehouse.dev Filters run for a request,
//! and in what order, resolved once here so that the request path only
//! iterates.
//!
//! A rule's filters come from four levels, most specific first: the rule
//! (ExtensionRefs, and targetRefs naming the route with the rule's
//! `sectionName`), the route (targetRefs naming the HTTPRoute), the listener
//! (targetRefs naming the Gateway with the listener's `sectionName`) and the
//! Gateway. For each filter type, the most specific level that has one
//! wins: its filters of that type run, the less specific ones of that type
//! do not, for that rule, and their status says which Filter overrode them.
//! Nothing is merged. Several filters of one type at one level all run.
//! The one exception is the platform team's: a Filter attached to a Gateway
//! or listener with `enforce: true` always runs, and filters of its type
//! attached to the route or rule do not (those of the Gateway and listener
//! still follow the rule above), so routes cannot switch off a
//! Gateway-wide deny list or authentication.
//!
//! The chain is sorted by phase (see `Phase`), then `order`, then
//! namespace and name.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use gatehouse_snapshot as pb;
use gatehouse_snapshot::FilterPhase as Phase;

use crate::api::filter::FilterType;
use crate::compile::filter_objects::{FilterObjects, Target};
use crate::compile::gateway::GatewayModel;
use crate::compile::route::{RouteKind, RouteModel};

/// Where a filter reached a rule from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Rule,
    Route,
    Listener,
    Gateway,
}

impl Level {
    fn gateway_scope(self) -> bool {
        matches!(self, Level::Listener | Level::Gateway)
    }
}

const TYPES: [FilterType; 5] = [
    FilterType::RequestLimits,
    FilterType::IpAccess,
    FilterType::JwtAuth,
    FilterType::RateLimit,
    FilterType::StaticResponse,
];

/// The phase a filter of `kind` runs in when it reached the rule from `level`.
pub fn phase(kind: FilterType, level: Level) -> Phase {
    match kind {
        FilterType::RequestLimits => Phase::RequestLimits,
        FilterType::IpAccess => Phase::IpAccess,
        FilterType::JwtAuth if level.gateway_scope() => Phase::GatewayAuthentication,
        FilterType::JwtAuth => Phase::RouteAuthentication,
        FilterType::RateLimit => Phase::RateLimit,
        FilterType::StaticResponse => Phase::StaticResponse,
    }
}

/// One resolved chain: (filter index, phase, whether it reached the rule
/// from the Gateway or a listener), in run order.
pub type Steps = Vec<(usize, Phase, bool)>;

/// A Filter that did not run for a rule because a more specific one of the
/// same type did.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Override {
    pub overridden: usize,
    pub by: usize,
    /// "HTTPRoute ns/name rule section".
    pub rule: String,
    /// The targetRef that brought the overridden Filter to the rule (none
    /// for an ExtensionRef), so that its ancestor status can say so.
    pub at: Option<Target>,
}

/// Names what was overridden where, for one rule.
type OverrideContext<'c> = (
    &'c dyn Fn() -> String,
    &'c dyn Fn(Level) -> Target,
    &'c mut BTreeSet<Override>,
);

/// Resolves chains against one store's Filters.
pub struct Chains<'m, 'a> {
    filters: &'m FilterObjects<'a>,
}

impl<'m, 'a> Chains<'m, 'a> {
    pub fn new(filters: &'m FilterObjects<'a>) -> Self {
        Chains { filters }
    }

    /// The chain of rule `rule` of `route`, reached through listener
    /// `listener` of `gateway`; overrides are appended to `overrides`.
    pub fn for_rule(
        &self,
        gateway: &GatewayModel<'_>,
        listener: &str,
        route: &RouteModel<'_>,
        rule: usize,
        overrides: Option<&mut BTreeSet<Override>>,
    ) -> Steps {
        let extension_refs = &route.rules[rule].filters.extension_refs;
        if self.filters.is_empty() && extension_refs.is_empty() {
            return Steps::new();
        }
        let section = &route.rules[rule].section;
        // What a targetRef names to reach this rule from each level.
        let target = |level: Level| match level {
            Level::Rule => Target::Rule {
                namespace: route.namespace.clone(),
                name: route.name.clone(),
                section: section.clone(),
            },
            Level::Route => Target::Route {
                namespace: route.namespace.clone(),
                name: route.name.clone(),
            },
            Level::Listener => listener_target(gateway, listener),
            Level::Gateway => gateway_target(gateway),
        };
        let mut rule_level: Vec<usize> = extension_refs.clone();
        // Policies attach to HTTPRoutes only; a GRPCRoute's rules get the
        // Gateway's filters and their own ExtensionRefs.
        let route_level: Vec<usize> = if route.kind == RouteKind::Http {
            rule_level.extend_from_slice(self.filters.targeting(&target(Level::Rule)));
            self.filters.targeting(&target(Level::Route)).to_vec()
        } else {
            Vec::new()
        };
        let levels = [
            (Level::Rule, rule_level),
            (Level::Route, route_level),
            (Level::Listener, self.listener_level(gateway, listener)),
            (Level::Gateway, self.gateway_level(gateway)),
        ];
        let label = || {
            format!(
                "{} {}/{} rule {}",
                route.kind.as_str(),
                route.namespace,
                route.name,
                section
            )
        };
        self.pick(
            &levels,
            overrides.map(|o| {
                (
                    &label as &dyn Fn() -> String,
                    &target as &dyn Fn(Level) -> Target,
                    o,
                )
            }),
        )
    }

    /// The gateway-phase filters of a listener, for requests that match no
    /// route.
    pub fn for_listener(&self, gateway: &GatewayModel<'_>, listener: &str) -> Steps {
        if self.filters.is_empty() {
            return Steps::new();
        }
        let levels = [
            (Level::Listener, self.listener_level(gateway, listener)),
            (Level::Gateway, self.gateway_level(gateway)),
        ];
        self.pick(&levels, None)
            .into_iter()
            .filter(|(_, phase, _)| {
                matches!(
                    phase,
                    Phase::RequestLimits | Phase::IpAccess | Phase::GatewayAuthentication
                )
            })
            .collect()
    }

    /// The headers the jwtAuth filters attached to a listener or its
    /// Gateway write claims to, sorted; an invalid Filter's too, so that a
    /// broken filter never lets a client's copy through.
    pub fn claim_headers(&self, gateway: &GatewayModel<'_>, listener: &str) -> Vec<String> {
        if self.filters.is_empty() {
            return Vec::new();
        }
        let mut names: Vec<String> = self
            .listener_level(gateway, listener)
            .into_iter()
            .chain(self.gateway_level(gateway))
            .filter_map(|i| self.filters.filters[i].object.spec.jwt_auth.as_ref())
            .flat_map(|auth| auth.claims_to_headers.iter())
            .map(|c| c.header.to_ascii_lowercase())
            .filter(|h| http::HeaderName::from_bytes(h.as_bytes()).is_ok())
            .collect();
        names.sort();
        names.dedup();
        names
    }

    fn listener_level(&self, gateway: &GatewayModel<'_>, listener: &str) -> Vec<usize> {
        self.filters
            .targeting(&listener_target(gateway, listener))
            .to_vec()
    }

    fn gateway_level(&self, gateway: &GatewayModel<'_>) -> Vec<usize> {
        self.filters.targeting(&gateway_target(gateway)).to_vec()
    }

    /// Per type, the filters of the most specific level that has one; or,
    /// when the Gateway or listener enforces some, those plus the most
    /// specific ones of the Gateway and listener levels, and none of the
    /// route's or rule's.
    fn pick(
        &self,
        levels: &[(Level, Vec<usize>)],
        mut overrides: Option<OverrideContext<'_>>,
    ) -> Steps {
        let mut steps = Steps::new();
        for kind in TYPES {
            let enforced = self.enforced(levels, kind);
            if enforced.is_empty() {
                self.pick_kind(kind, levels, &mut steps, &mut overrides);
                continue;
            }
            for &(level, i) in &enforced {
                if !steps.iter().any(|(s, _, _)| *s == i) {
                    steps.push((i, phase(kind, level), true));
                }
            }
            let is_enforced = |i: usize| enforced.iter().any(|&(_, e)| e == i);
            let gateway_levels: Vec<(Level, Vec<usize>)> = levels
                .iter()
                .filter(|(level, _)| level.gateway_scope())
                .map(|(level, indices)| {
                    let rest = indices.iter().copied().filter(|&i| !is_enforced(i));
                    (*level, rest.collect())
                })
                .collect();
            self.pick_kind(kind, &gateway_levels, &mut steps, &mut overrides);
            if let Some((label, target, overrides)) = overrides.as_mut() {
                let route_levels = levels.iter().filter(|(level, _)| !level.gateway_scope());
                for (level, indices) in route_levels {
                    let of_kind = indices.iter().copied().filter(|&i| {
                        self.filters.filters[i].kind == kind
                            && !steps.iter().any(|(s, _, _)| *s == i)
                    });
                    for overridden in of_kind {
                        overrides.insert(Override {
                            overridden,
                            by: enforced[0].1,
                            rule: label(),
                            at: self.attached_by(overridden, target(*level)),
                        });
                    }
                }
            }
        }
        let key = |&(i, phase, _): &(usize, Phase, bool)| {
            let f = &self.filters.filters[i];
            (phase as i32, f.order, f.namespace.clone(), f.name.clone())
        };
        steps.sort_by_key(key);
        steps
    }

    /// The filters of `kind` of the most specific of `levels` that has
    /// one; the others of that kind are overridden.
    fn pick_kind(
        &self,
        kind: FilterType,
        levels: &[(Level, Vec<usize>)],
        steps: &mut Steps,
        overrides: &mut Option<OverrideContext<'_>>,
    ) {
        let mut winner: Option<usize> = None;
        for (level, indices) in levels {
            let of_kind = indices
                .iter()
                .copied()
                .filter(|&i| self.filters.filters[i].kind == kind);
            match winner {
                None => {
                    for i in of_kind {
                        winner.get_or_insert(i);
                        if !steps.iter().any(|(s, _, _)| *s == i) {
                            steps.push((i, phase(kind, *level), level.gateway_scope()));
                        }
                    }
                }
                Some(by) => {
                    if let Some((label, target, overrides)) = overrides.as_mut() {
                        // A Filter reaching the rule from two levels runs
                        // once, at the more specific one.
                        let ran = |i: usize| steps.iter().any(|(s, _, _)| *s == i);
                        for overridden in of_kind.filter(|&i| !ran(i)) {
                            overrides.insert(Override {
                                overridden,
                                by,
                                rule: label(),
                                at: self.attached_by(overridden, target(*level)),
                            });
                        }
                    }
                }
            }
        }
    }

    /// `target` if Filter `filter` names it in its targetRefs (a rule-level
    /// Filter may instead come from an ExtensionRef).
    fn attached_by(&self, filter: usize, target: Target) -> Option<Target> {
        self.filters.filters[filter]
            .targets
            .iter()
            .flatten()
            .any(|t| *t == target)
            .then_some(target)
    }

    /// The enforced filters of `kind` attached to the Gateway or the
    /// listener, with their level: floors set by the Gateway's owner, all
    /// of which run.
    fn enforced(&self, levels: &[(Level, Vec<usize>)], kind: FilterType) -> Vec<(Level, usize)> {
        levels
            .iter()
            .filter(|(level, _)| level.gateway_scope())
            .flat_map(|(level, indices)| indices.iter().map(move |&i| (*level, i)))
            .filter(|&(_, i)| {
                let f = &self.filters.filters[i];
                f.kind == kind && f.enforce
            })
            .collect()
    }
}

fn listener_target(gateway: &GatewayModel<'_>, listener: &str) -> Target {
    Target::Listener {
        namespace: gateway.namespace.clone(),
        name: gateway.name.clone(),
        section: listener.to_owned(),
    }
}

fn gateway_target(gateway: &GatewayModel<'_>) -> Target {
    Target::Gateway {
        namespace: gateway.namespace.clone(),
        name: gateway.name.clone(),
    }
}

/// A snapshot's filters and chains, each stored once.
#[derive(Debug, Default)]
pub struct ChainTable {
    filter_index: HashMap<usize, u32>,
    pub filters: Vec<usize>,
    chain_index: HashMap<Vec<(u32, i32, bool)>, u32>,
    pub chains: Vec<pb::Chain>,
}

impl ChainTable {
    /// 1 + the chain's index, or 0 for an empty chain.
    pub fn intern(&mut self, steps: &Steps) -> u32 {
        if steps.is_empty() {
            return 0;
        }
        let key: Vec<(u32, i32, bool)> = steps
            .iter()
            .map(|&(filter, phase, gateway_scope)| {
                let next = self.filters.len() as u32;
                let index = *self.filter_index.entry(filter).or_insert(next);
                if index == next {
                    self.filters.push(filter);
                }
                (index, phase as i32, gateway_scope)
            })
            .collect();
        let next = self.chains.len() as u32;
        let index = *self.chain_index.entry(key.clone()).or_insert(next);
        if index == next {
            self.chains.push(pb::Chain {
                steps: key
                    .into_iter()
                    .map(|(filter, phase, gateway_scope)| pb::ChainStep {
                        filter,
                        phase,
                        gateway_scope,
                    })
                    .collect(),
            });
        }
        index + 1
    }

    /// The snapshot's filter list.
    pub fn snapshot_filters(&self, objects: &FilterObjects<'_>) -> Vec<pb::GatehouseFilter> {
        self.filters
            .iter()
            .map(|&i| objects.filters[i].to_snapshot())
            .collect()
    }
}

/// Per overridden Filter and, when a targetRef brought it, per target (the
/// `None` entry covers every way), a readable list of what overrode it
/// where.
pub fn override_messages(
    overrides: &BTreeSet<Override>,
    filters: &FilterObjects<'_>,
) -> BTreeMap<(usize, Option<Target>), String> {
    let mut by_filter: BTreeMap<(usize, Option<Target>), BTreeSet<String>> = BTreeMap::new();
    for o in overrides {
        let by = &filters.filters[o.by];
        let place = format!("Filter {}/{} for {}", by.namespace, by.name, o.rule);
        if o.at.is_some() {
            by_filter
                .entry((o.overridden, o.at.clone()))
                .or_default()
                .insert(place.clone());
        }
        by_filter
            .entry((o.overridden, None))
            .or_default()
            .insert(place);
    }
    by_filter
        .into_iter()
        .map(|(i, places)| {
            const SHOWN: usize = 5;
            let more = places.len().saturating_sub(SHOWN);
            let shown: Vec<String> = places.into_iter().take(SHOWN).collect();
            let mut message = format!(
                "Another filter of the same type runs instead (a more specific one, or one its Gateway enforces): {}",
                shown.join("; ")
            );
            if more > 0 {
                message.push_str(&format!(" (and {more} more)"));
            }
            (i, message)
        })
        .collect()
}
