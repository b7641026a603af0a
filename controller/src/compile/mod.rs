//! The pure compile step: a store of objects in, one snapshot per cluster
//! group and a status per object out (Gateway API v1.x, standard channel:
//! GatewayClass, Gateway, HTTPRoute, ReferenceGrant; Services and
//! EndpointSlices as backends). No I/O, no clock, no randomness: the same
//! store and options always give the same bytes.
//!
//! Flow: our GatewayClasses → their Gateways (`gateway`, `listener`) → every
//! HTTPRoute (`route`, `matches`, `backend`) → attachment to listeners
//! (`attach`, `hostname`) → per group, ports and precedence-ordered matches
//! (`ports`, `precedence`) → statuses (`crate::status`).

mod attach;
mod attached_invalid;
mod backend;
mod backend_tls;
mod chain;
mod endpoints;
mod filter_objects;
mod filters;
mod gateway;
mod grants;
mod grpc;
mod hostname;
mod kinds;
mod listener;
mod matches;
mod ports;
mod precedence;
mod retry;
mod route;
mod sharing;
mod timeouts;
mod tls;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use gatehouse_snapshot::Snapshot;

pub use backend::{LOAD_BALANCING_ANNOTATION, cluster_source};
pub use endpoints::refresh as refresh_endpoints;
pub use hostname::{intersect as intersect_hostnames, specificity as hostname_specificity};
pub use matches::normalize_prefix;

use crate::k8s::Time;
use crate::status::{self, ConditionContext, GatewayReport, StatusEntry};
use crate::store::Store;

/// `spec.controllerName` of the GatewayClasses Gatehouse handles.
pub const CONTROLLER_NAME: &str = "gatehouse.dev/gateway-controller";
/// Gateway label naming its cluster group.
pub const CLUSTER_GROUP_LABEL: &str = "gatehouse.dev/cluster-group";
/// Group of a Gateway without the label.
pub const DEFAULT_CLUSTER_GROUP: &str = "default";

/// What compile needs besides the objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileOptions {
    /// Added to every listener port to get the port actually bound.
    pub port_offset: u16,
    /// Address bound by Gateways without `spec.addresses`.
    pub listen_address: IpAddr,
    /// RFC 3339 time stamped on conditions as `lastTransitionTime`.
    pub now: String,
    /// Per cluster group, the (type, value) addresses clients reach its data
    /// planes at (Kubernetes: the group's Service). A group missing here
    /// reports the addresses its Gateways bind.
    pub group_addresses: BTreeMap<String, Vec<(String, String)>>,
    /// Whether every group's data planes run on one host (standalone), so
    /// that one port on overlapping addresses can serve one group only. In
    /// Kubernetes each group has its own pods and Service.
    pub groups_share_host: bool,
    /// Where Gateways are served when the controller decided it rather than
    /// their label (Kubernetes: see `crate::handover`), by (namespace, name).
    pub placements: BTreeMap<(String, String), Placement>,
}

/// The group serving a Gateway, and a move from another group in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub group: String,
    pub handover: Option<Handover>,
}

/// A Gateway moving from group `from` to its placement's group: both
/// groups serve it; its addresses are the old group's until the new one is
/// ready, then the new one's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handover {
    pub from: String,
    pub addresses_of_new_group: bool,
}

impl Default for CompileOptions {
    fn default() -> Self {
        CompileOptions {
            port_offset: 0,
            listen_address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            now: "1970-01-01T00:00:00Z".into(),
            group_addresses: BTreeMap::new(),
            groups_share_host: true,
            placements: BTreeMap::new(),
        }
    }
}

/// The names of the GatewayClasses whose controller is ours.
fn our_classes(store: &Store) -> BTreeSet<&str> {
    store
        .gateway_classes()
        .filter(|c| c.spec.controller_name == CONTROLLER_NAME)
        .filter_map(|c| c.metadata.name.as_deref())
        .collect()
}

/// The Gateways of our GatewayClasses.
pub fn our_gateways(store: &Store) -> impl Iterator<Item = &crate::k8s::Gateway> {
    let classes = our_classes(store);
    store
        .gateways()
        .filter(move |g| classes.contains(g.spec.gateway_class_name.as_str()))
}

/// (namespace, name) of a Gateway, as compile and status key it.
pub fn gateway_key(gateway: &crate::k8s::Gateway) -> (String, String) {
    (
        gateway
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into()),
        gateway.metadata.name.clone().unwrap_or_default(),
    )
}

/// The cluster group a Gateway's label puts it in.
pub fn gateway_group(gateway: &crate::k8s::Gateway) -> String {
    gateway
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(CLUSTER_GROUP_LABEL))
        .cloned()
        .unwrap_or_else(|| DEFAULT_CLUSTER_GROUP.into())
}

/// The result of one compile.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Compiled {
    /// By cluster group; each sealed with its content version.
    pub snapshots: BTreeMap<String, Snapshot>,
    /// Sorted by (kind, namespace, name).
    pub statuses: Vec<StatusEntry>,
    /// The cluster groups serving each of our Gateways (two while it moves
    /// between groups), by (namespace, name).
    pub gateway_groups: BTreeMap<(String, String), Vec<String>>,
}

/// Compiles a store into snapshots and statuses.
pub fn compile(store: &Store, options: &CompileOptions) -> Compiled {
    let classes = our_classes(store);
    let secrets = tls::Secrets::new(store);
    let mut gateways: Vec<gateway::GatewayModel<'_>> = our_gateways(store)
        .map(|g| gateway::GatewayModel::new(g, options, &secrets))
        .collect();
    let gateway_ranks = ranks(
        gateways
            .iter()
            .map(|g| (g.created, g.namespace.as_str(), g.name.as_str())),
    );
    for g in &mut gateways {
        if let Some(placement) = options
            .placements
            .get(&(g.namespace.clone(), g.name.clone()))
        {
            g.group = placement.group.clone();
            g.moving_from = placement
                .handover
                .clone()
                .filter(|h| h.from != placement.group);
        }
    }
    sharing::mark_shared_port_conflicts(&mut gateways, &gateway_ranks, options);
    let namespace_labels: BTreeMap<String, BTreeMap<String, String>> = store
        .namespaces()
        .map(|n| {
            let name = n.metadata.name.clone().unwrap_or_default();
            (name, n.metadata.labels.clone().unwrap_or_default())
        })
        .collect();
    let mut backends = backend::Backends::new(store);
    let filter_objects = filter_objects::FilterObjects::new(store);
    // GRPCRoutes route as the HTTPRoutes they are on the wire; one that
    // cannot be read as one is reported and left out.
    let grpc_as_http: Vec<_> = store
        .grpc_routes()
        .filter_map(|r| match grpc::as_http_route(r) {
            Ok(translated) => Some(translated),
            Err(error) => {
                tracing::warn!(route = ?r.metadata.name, %error, "GRPCRoute not compiled");
                None
            }
        })
        .collect();
    let mut routes: Vec<route::RouteModel<'_>> = store
        .http_routes()
        .map(|r| route::RouteModel::new(r, route::RouteKind::Http, &mut backends, &filter_objects))
        .collect();
    routes.extend(grpc_as_http.iter().map(|t| route::RouteModel {
        grpc_match_chars: t.match_chars.clone(),
        ..route::RouteModel::new(
            &t.route,
            route::RouteKind::Grpc,
            &mut backends,
            &filter_objects,
        )
    }));

    let parents = attach::Parents::new(&gateways, &namespace_labels);
    let mut attachments = Vec::new();
    let mut route_reports: Vec<_> = routes
        .iter()
        .enumerate()
        .map(|(i, r)| parents.attach(i, r, &mut attachments))
        .collect();

    let route_ranks = ranks(
        routes
            .iter()
            .map(|r| (r.created, r.namespace.as_str(), r.name.as_str())),
    );
    kinds::resolve(&routes, &route_ranks, &mut attachments, &mut route_reports);
    let chains = chain::Chains::new(&filter_objects);
    attached_invalid::report(
        &chains,
        &filter_objects,
        (&gateways, &routes, &attachments),
        &mut route_reports,
    );
    let groups: BTreeSet<&str> = gateways.iter().flat_map(|g| g.groups()).collect();
    let snapshots = groups
        .into_iter()
        .map(|group| {
            let input = ports::GroupInput {
                group,
                gateways: &gateways,
                gateway_ranks: &gateway_ranks,
                routes: &routes,
                route_ranks: &route_ranks,
                attachments: attachments
                    .iter()
                    .filter(|a| gateways[a.gateway].serves(group))
                    .collect(),
                backends: &backends,
                options,
                chains: &chains,
                filter_objects: &filter_objects,
            };
            let mut snapshot = ports::group_snapshot(&input);
            gatehouse_snapshot::seal(&mut snapshot);
            (group.to_owned(), snapshot)
        })
        .collect();

    let mut statuses = Vec::new();
    for class in &classes {
        let generation = store
            .gateway_classes()
            .find(|c| c.metadata.name.as_deref() == Some(class))
            .and_then(|c| c.metadata.generation)
            .unwrap_or(0);
        let ctx = ConditionContext {
            generation,
            now: &options.now,
        };
        statuses.push(status::conditions::gateway_class(class, ctx));
    }
    let attached = attached_routes(&attachments);
    for (gi, g) in gateways.iter().enumerate() {
        let report = GatewayReport {
            group: g.group.clone(),
            moving_from: g.moving_from.clone(),
            backend_identity: g
                .backend_identity
                .as_ref()
                .map(|r| r.as_ref().err().cloned()),
            addresses: match (
                options.group_addresses.get(g.reported_group()),
                &g.addresses,
            ) {
                (_, Err(_)) => Vec::new(),
                (Some(service), Ok(_)) => service.clone(),
                (None, Ok(bound)) => bound
                    .iter()
                    .map(|a| ("IPAddress".to_owned(), a.to_string()))
                    .collect(),
            },
            address_error: g.addresses.as_ref().err().cloned(),
            listeners: g
                .listeners
                .iter()
                .enumerate()
                .map(|(li, l)| {
                    let mut r = l.report.clone();
                    r.attached_routes = attached.get(&(gi, li)).copied().unwrap_or(0);
                    r
                })
                .collect(),
        };
        let ctx = ConditionContext {
            generation: g.generation(),
            now: &options.now,
        };
        statuses.push(status::conditions::gateway(
            &g.namespace,
            &g.name,
            &report,
            ctx,
        ));
    }
    for (route, reports) in routes.iter().zip(&route_reports) {
        let ctx = ConditionContext {
            generation: route.generation(),
            now: &options.now,
        };
        statuses.push(status::conditions::route(
            route.kind.as_str(),
            &route.namespace,
            &route.name,
            reports,
            ctx,
        ));
    }
    statuses.extend(backend_tls_statuses(
        &backends,
        &gateways,
        &routes,
        &attachments,
        options,
    ));
    statuses.extend(filter_statuses(
        &filter_objects,
        &chains,
        &gateways,
        &routes,
        &attachments,
        options,
    ));
    statuses
        .sort_by(|a, b| (&a.kind, &a.namespace, &a.name).cmp(&(&b.kind, &b.namespace, &b.name)));
    let gateway_groups = gateways
        .iter()
        .map(|g| {
            let groups = g.groups().map(str::to_owned).collect();
            ((g.namespace.clone(), g.name.clone()), groups)
        })
        .collect();
    Compiled {
        snapshots,
        statuses,
        gateway_groups,
    }
}

/// The status of every BackendTLSPolicy, with the Gateways whose accepted
/// routes send to a Service it targets as its ancestors.
fn backend_tls_statuses(
    backends: &backend::Backends<'_>,
    gateways: &[gateway::GatewayModel<'_>],
    routes: &[route::RouteModel<'_>],
    attachments: &[attach::Attachment],
    options: &CompileOptions,
) -> Vec<StatusEntry> {
    let mut users: BTreeMap<(String, String), BTreeSet<(String, String)>> = BTreeMap::new();
    for a in attachments.iter().filter(|a| a.accepted) {
        let g = &gateways[a.gateway];
        for rule in &routes[a.route].rules {
            for cluster in rule.clusters() {
                let Some((ns, service, _)) = backend::cluster_source(cluster) else {
                    continue;
                };
                users
                    .entry((ns.to_owned(), service.to_owned()))
                    .or_default()
                    .insert((g.namespace.clone(), g.name.clone()));
            }
        }
    }
    backends
        .tls_policies()
        .all()
        .into_iter()
        .map(|report| {
            let policy = report.policy;
            let ns = policy
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into());
            let mut ancestors = BTreeSet::new();
            for target in &policy.spec.target_refs {
                if let Some(gs) = users.get(&(ns.clone(), target.name.clone())) {
                    ancestors.extend(gs.iter().cloned());
                }
            }
            let ancestors: Vec<_> = ancestors.into_iter().collect();
            let trusts_something = report.tls.system_roots || !report.tls.ca_pem.is_empty();
            let ctx = ConditionContext {
                generation: policy.metadata.generation.unwrap_or(0),
                now: &options.now,
            };
            status::conditions::backend_tls_policy(
                &ns,
                policy.metadata.name.as_deref().unwrap_or(""),
                &ancestors,
                report
                    .failure
                    .as_ref()
                    .map(|f| (f.reason, f.message.as_str())),
                trusts_something,
                report.conflicted_with.as_deref(),
                ctx,
            )
        })
        .collect()
}

/// The status of every gatehouse.dev Filter: valid or not, whether each
/// target exists, and where a more specific filter overrides it.
fn filter_statuses(
    filters: &filter_objects::FilterObjects<'_>,
    chains: &chain::Chains<'_, '_>,
    gateways: &[gateway::GatewayModel<'_>],
    routes: &[route::RouteModel<'_>],
    attachments: &[attach::Attachment],
    options: &CompileOptions,
) -> Vec<StatusEntry> {
    use filter_objects::Target;
    if filters.is_empty() {
        return Vec::new();
    }
    let mut overrides = BTreeSet::new();
    for a in attachments.iter().filter(|a| a.accepted) {
        let g = &gateways[a.gateway];
        let listener = &g.listeners[a.listener].name;
        let route = &routes[a.route];
        for rule in 0..route.rules.len() {
            chains.for_rule(g, listener, route, rule, Some(&mut overrides));
        }
    }
    let messages = chain::override_messages(&overrides, filters);
    let exists = |target: &Target| match target {
        Target::Gateway { namespace, name } => gateways
            .iter()
            .any(|g| &g.namespace == namespace && &g.name == name),
        Target::Listener {
            namespace,
            name,
            section,
        } => gateways.iter().any(|g| {
            &g.namespace == namespace
                && &g.name == name
                && g.listeners.iter().any(|l| &l.name == section)
        }),
        Target::Route { namespace, name } => routes.iter().any(|r| {
            r.kind == route::RouteKind::Http && &r.namespace == namespace && &r.name == name
        }),
        Target::Rule {
            namespace,
            name,
            section,
        } => routes.iter().any(|r| {
            r.kind == route::RouteKind::Http
                && &r.namespace == namespace
                && &r.name == name
                && r.rules.iter().any(|rule| &rule.section == section)
        }),
    };
    filters
        .filters
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let report = status::conditions::FilterReport {
                invalid: f.content.as_ref().err().cloned(),
                targets: f
                    .object
                    .spec
                    .target_refs
                    .iter()
                    .zip(&f.targets)
                    .map(|(t, target)| status::conditions::FilterTarget {
                        group: t.group.clone(),
                        kind: t.kind.clone(),
                        name: t.name.clone(),
                        section: t.section_name.clone(),
                        exists: target.as_ref().is_some_and(exists),
                        overridden: target
                            .as_ref()
                            .and_then(|t| messages.get(&(i, Some(t.clone()))).cloned()),
                    })
                    .collect(),
                overridden: messages.get(&(i, None)).cloned(),
            };
            let ctx = ConditionContext {
                generation: f.generation(),
                now: &options.now,
            };
            status::conditions::filter(&f.namespace, &f.name, &report, ctx)
        })
        .collect()
}

/// Number of distinct accepted routes per (gateway, listener).
fn attached_routes(attachments: &[attach::Attachment]) -> BTreeMap<(usize, usize), u32> {
    let distinct: BTreeSet<(usize, usize, usize)> = attachments
        .iter()
        .filter(|a| a.accepted)
        .map(|a| (a.gateway, a.listener, a.route))
        .collect();
    let mut counts = BTreeMap::new();
    for (g, l, _) in distinct {
        *counts.entry((g, l)).or_insert(0) += 1;
    }
    counts
}

/// Position of each item in (creation time, namespace, name) order; objects
/// without a creation time come after those with one.
fn ranks<'a>(items: impl Iterator<Item = (Option<&'a Time>, &'a str, &'a str)>) -> Vec<usize> {
    let keys: Vec<_> = items.map(|(t, ns, n)| (t.is_none(), t, ns, n)).collect();
    let mut order: Vec<usize> = (0..keys.len()).collect();
    order.sort_by(|&a, &b| keys[a].cmp(&keys[b]));
    let mut ranks = vec![0; keys.len()];
    for (rank, index) in order.into_iter().enumerate() {
        ranks[index] = rank;
    }
    ranks
}
