//! One group's snapshot, per Gateway API `GatewaySpec.listeners`
//! ("Implementations MAY merge separate Gateways onto a single set of
//! Addresses if all Listeners across all Gateways are compatible"; listeners
//! distinct only by hostname "MUST match from the most specific to least
//! specific Hostname", exact before wildcard before empty) and the
//! `.proto` contract: bound ports (by address and bind port) whose listeners
//! are ordered most specific hostname first, then by Gateway age and
//! name, then listener name; virtual hosts exact, then wildcard by length,
//! then ""; matches by `Precedence`; rules by route (namespace/name) then
//! index; clusters by name. The same objects always encode to the same
//! bytes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use gatehouse_snapshot::{
    Backend, Certificate, ClientValidation, Cluster, Listener, Origin, Port, Protocol, RouteMatch,
    Rule, Snapshot, VirtualHost, backend::Target,
};

use crate::compile::CompileOptions;
use crate::compile::attach::Attachment;
use crate::compile::backend::Backends;
use crate::compile::chain::{ChainTable, Chains};
use crate::compile::filter_objects::FilterObjects;
use crate::compile::gateway::GatewayModel;
use crate::compile::hostname::specificity;
use crate::compile::precedence::Precedence;
use crate::compile::route::RouteModel;

/// Everything one group's snapshot is built from.
pub struct GroupInput<'m, 'a> {
    pub group: &'m str,
    pub gateways: &'m [GatewayModel<'a>],
    /// Position of each gateway in (creationTimestamp, namespace, name) order.
    pub gateway_ranks: &'m [usize],
    pub routes: &'m [RouteModel<'a>],
    pub route_ranks: &'m [usize],
    /// Attachments to this group's Gateways.
    pub attachments: Vec<&'m Attachment>,
    pub backends: &'m Backends<'a>,
    pub options: &'m CompileOptions,
    pub chains: &'m Chains<'m, 'a>,
    pub filter_objects: &'m FilterObjects<'a>,
}

type PortKey = (IpAddr, u32);

struct ListenerBuild {
    sort: ((u8, std::cmp::Reverse<usize>, String), usize, String),
    origin: Origin,
    hostname: String,
    certificates: Vec<Certificate>,
    hosts: BTreeMap<String, Vec<(Precedence, RouteMatch)>>,
    chain: u32,
    claim_headers: BTreeSet<String>,
}

/// The (unsealed) snapshot of one group.
pub fn group_snapshot(input: &GroupInput<'_, '_>) -> Snapshot {
    let (rules, first_rule, clusters) = rule_table(input);
    let mut chain_table = ChainTable::default();
    /// (port, protocol, client validation, PROXY protocol, listeners);
    /// `sharing` lets only listeners that agree on all but the last share one.
    type PortBuild = (
        u32,
        Protocol,
        Option<ClientValidation>,
        bool,
        Vec<ListenerBuild>,
    );
    let mut ports: BTreeMap<PortKey, PortBuild> = BTreeMap::new();
    let mut slots: HashMap<(usize, usize), Vec<(PortKey, usize)>> = HashMap::new();
    for (gi, g) in input.gateways.iter().enumerate() {
        let Ok(addresses) = &g.addresses else {
            continue;
        };
        if !g.serves(input.group) {
            continue;
        }
        for (li, l) in g.listeners.iter().enumerate() {
            if !l.report.is_served() {
                continue;
            }
            let hostname = l.hostname.clone().unwrap_or_default();
            for address in addresses {
                let key = (
                    *address,
                    u32::from(l.port) + u32::from(input.options.port_offset),
                );
                // `sharing` keeps HTTP and HTTPS off one socket.
                // Gateways sharing an HTTPS port share its handshake, so
                // `sharing` lets only equal client validations share one.
                let (_, _, validation, _, listeners) = ports.entry(key).or_insert((
                    u32::from(l.port),
                    l.protocol,
                    None,
                    g.proxy_protocol,
                    Vec::new(),
                ));
                if validation.is_none() {
                    validation.clone_from(&l.client_validation);
                }
                let spec_key = specificity(&hostname);
                let sort = (
                    (spec_key.0, spec_key.1, hostname.clone()),
                    input.gateway_ranks[gi],
                    l.name.clone(),
                );
                let listener_origin = origin("Gateway", &g.namespace, &g.name, &l.name);
                let chain = chain_table.intern(&input.chains.for_listener(g, &l.name));
                let claim_headers = input.chains.claim_headers(g, &l.name);
                // Listeners of different Gateways with the same hostname on
                // one socket serve the union of their routes (a Gateway's own
                // duplicates are HostnameConflict and never get here); the
                // oldest Gateway's listener names the merged one.
                let index = match listeners.iter().position(|b| b.hostname == hostname) {
                    Some(existing) => {
                        let merged = &mut listeners[existing];
                        // The oldest Gateway's certificates come first.
                        if sort < merged.sort {
                            merged.sort = sort;
                            merged.origin = listener_origin;
                            merged.chain = chain;
                            let newer =
                                std::mem::replace(&mut merged.certificates, l.certificates.clone());
                            merged.certificates.extend(newer);
                        } else {
                            merged.certificates.extend(l.certificates.iter().cloned());
                        }
                        // Every Gateway's claim headers on the merged listener.
                        merged.claim_headers.extend(claim_headers);
                        let mut seen = BTreeSet::new();
                        merged.certificates.retain(|c| seen.insert(c.name.clone()));
                        existing
                    }
                    None => {
                        listeners.push(ListenerBuild {
                            sort,
                            origin: listener_origin,
                            hostname: hostname.clone(),
                            certificates: l.certificates.clone(),
                            hosts: BTreeMap::new(),
                            chain,
                            claim_headers: claim_headers.into_iter().collect(),
                        });
                        listeners.len() - 1
                    }
                };
                slots.entry((gi, li)).or_default().push((key, index));
            }
        }
    }
    // Gateway client certificates, by Secret, in Gateway order.
    let mut identities: Vec<Certificate> = Vec::new();
    let mut identity_of = |gateway: usize| -> u32 {
        let Some(Ok(certificate)) = &input.gateways[gateway].backend_identity else {
            return 0;
        };
        let index = match identities.iter().position(|c| c.name == certificate.name) {
            Some(index) => index,
            None => {
                identities.push(certificate.clone());
                identities.len() - 1
            }
        };
        index as u32 + 1
    };
    for a in &input.attachments {
        let route = &input.routes[a.route];
        let first = first_rule[&a.route];
        let identity = identity_of(a.gateway);
        let gateway = &input.gateways[a.gateway];
        let listener_name = &gateway.listeners[a.listener].name;
        let rule_chains: Vec<u32> = (0..route.rules.len())
            .map(|ri| {
                let steps = input
                    .chains
                    .for_rule(gateway, listener_name, route, ri, None);
                chain_table.intern(&steps)
            })
            .collect();
        for (key, index) in slots.get(&(a.gateway, a.listener)).into_iter().flatten() {
            let listener = &mut ports.get_mut(key).expect("slot of a known port").4[*index];
            for host in &a.hosts {
                let entries = listener.hosts.entry(host.clone()).or_default();
                for (ri, rule) in route.rules.iter().enumerate() {
                    for (mi, m) in rule.matches.iter().enumerate() {
                        let precedence = route.precedence(input.route_ranks[a.route], ri, mi);
                        let mut m = m.clone();
                        m.rule = first + ri as u32;
                        m.backend_identity = identity;
                        m.chain = rule_chains[ri];
                        entries.push((precedence, m));
                    }
                }
            }
        }
    }
    let ports = ports
        .into_iter()
        .map(
            |(
                (address, bind_port),
                (port, protocol, client_validation, proxy_protocol, listeners),
            )| {
                Port {
                    address: address.to_string(),
                    port,
                    bind_port,
                    protocol: protocol as i32,
                    client_validation,
                    listeners: finish_listeners(listeners),
                    proxy_protocol,
                }
            },
        )
        .collect();
    Snapshot {
        group: input.group.into(),
        version: String::new(),
        ports,
        rules,
        clusters,
        backend_identities: identities,
        filters: chain_table.snapshot_filters(input.filter_objects),
        chains: chain_table.chains,
        base_version: String::new(),
        endpoint_updates: Vec::new(),
    }
}

fn finish_listeners(mut listeners: Vec<ListenerBuild>) -> Vec<Listener> {
    listeners.sort_by(|a, b| a.sort.cmp(&b.sort));
    listeners
        .into_iter()
        .map(|l| {
            let mut hosts: Vec<VirtualHost> = l
                .hosts
                .into_iter()
                .map(|(hostname, mut matches)| {
                    matches.sort_by_key(|(p, _)| *p);
                    // A route attached twice to one listener (two parentRefs)
                    // yields the same matches twice: keep one.
                    matches.dedup_by_key(|(p, _)| *p);
                    VirtualHost {
                        hostname,
                        matches: matches.into_iter().map(|(_, m)| m).collect(),
                    }
                })
                .collect();
            hosts.sort_by(|a, b| specificity(&a.hostname).cmp(&specificity(&b.hostname)));
            Listener {
                origin: Some(l.origin),
                hostname: l.hostname,
                hosts,
                certificates: l.certificates,
                chain: l.chain,
                claim_headers: l.claim_headers.into_iter().collect(),
            }
        })
        .collect()
}

/// Rules of every route attached in the group (route key order, then rule
/// index), each route's first rule index, and the clusters they use.
fn rule_table(input: &GroupInput<'_, '_>) -> (Vec<Rule>, HashMap<usize, u32>, Vec<Cluster>) {
    let attached: BTreeSet<usize> = input.attachments.iter().map(|a| a.route).collect();
    let names: BTreeSet<&str> = attached
        .iter()
        .flat_map(|&r| input.routes[r].rules.iter())
        .flat_map(|rule| rule.clusters())
        .collect();
    let cluster_index: HashMap<&str, u32> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (*n, i as u32))
        .collect();
    let clusters = names
        .iter()
        .filter_map(|n| input.backends.get(n).cloned())
        .collect();
    let mut rules = Vec::new();
    let mut first_rule = HashMap::new();
    for &r in &attached {
        let route = &input.routes[r];
        first_rule.insert(r, rules.len() as u32);
        for rule in &route.rules {
            let index = |name: &str| cluster_index[name];
            let backends = rule
                .backends
                .iter()
                .map(|b| Backend {
                    weight: b.weight,
                    target: Some(match &b.target {
                        Ok(name) => Target::Cluster(index(name)),
                        Err(why) => Target::Invalid(why.clone()),
                    }),
                    filters: b.filters.to_snapshot(index),
                })
                .collect();
            rules.push(Rule {
                origin: Some(origin(
                    route.kind.as_str(),
                    &route.namespace,
                    &route.name,
                    &rule.section,
                )),
                backends,
                filters: rule.filters.to_snapshot(index),
                request_timeout_ms: rule.request_timeout_ms,
                backend_request_timeout_ms: rule.backend_request_timeout_ms,
                retry: rule.retry.clone(),
            });
        }
    }
    (rules, first_rule, clusters)
}

fn origin(kind: &str, namespace: &str, name: &str, section: &str) -> Origin {
    Origin {
        kind: kind.into(),
        namespace: namespace.into(),
        name: name.into(),
        section: section.into(),
    }
}
