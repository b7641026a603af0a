//! Snapshot to table: validates every index, hostname, regular expression,
//! address and weight of the snapshot contract (`snapshot.proto`), and
//! pre-digests them for matching. Any error rejects the whole snapshot.

use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use gatehouse_snapshot as pb;
use http::{HeaderName, Method, uri::Authority};

use super::{
    BuildError, Cluster, Endpoint, HostPattern, Listener, Port, PortKey, RetryPolicy, Routing,
    Rule, Scheme, Snapshot, Table, Target, VirtualHost,
    backend::Backend,
    error::describe,
    filters::{self, Filters},
    matching::{
        HeaderMatch, PathMatch, QueryParamMatch, RouteMatch, ValueMatch, whole_value_regex,
    },
    tls,
};
use crate::stats::StatsRegistry;

/// How many rules and backend identities the snapshot has, for the
/// indices that refer to them.
#[derive(Debug, Clone, Copy)]
struct Counts {
    rules: usize,
    identities: usize,
    chains: usize,
}

/// Gateway API caps `BackendRef.weight` at 1,000,000.
const MAX_WEIGHT: u32 = 1_000_000;

impl Table {
    /// Builds a table with fresh balancing and statistics state.
    pub fn build(snapshot: Arc<Snapshot>) -> Result<Table, BuildError> {
        Self::build_with(snapshot, None, &StatsRegistry::default())
    }

    /// Builds a table, carrying round-robin positions and in-flight counts
    /// over from `previous` (by cluster name and endpoint address) and
    /// taking per-route statistics handles from `stats`.
    pub fn build_with(
        snapshot: Arc<Snapshot>,
        previous: Option<&Table>,
        stats: &StatsRegistry,
    ) -> Result<Table, BuildError> {
        let clusters = build_clusters(&snapshot.clusters, &snapshot.backend_identities, previous)?;
        let rules = build_rules(&snapshot.rules, clusters.len(), stats)?;
        let filters = crate::filters::build_filters(
            &snapshot.filters,
            previous.map_or(&[][..], |p| p.filters()),
        )
        .map_err(|(i, problem)| {
            let object = snapshot.filters[i].origin.as_ref().map_or_else(
                || "Filter".to_owned(),
                |o| format!("Filter {}/{}", o.namespace, o.name),
            );
            BuildError::new(object, format!("filters[{i}]"), problem)
        })?;
        let chains =
            crate::filters::build_chains(&snapshot.chains, &filters).map_err(|(i, problem)| {
                BuildError::new("Snapshot".to_owned(), format!("chains[{i}]"), problem)
            })?;
        let counts = Counts {
            rules: rules.len(),
            identities: snapshot.backend_identities.len(),
            chains: chains.len(),
        };
        let mut ports = HashMap::with_capacity(snapshot.ports.len());
        let mut port_keys = Vec::with_capacity(snapshot.ports.len());
        for (i, port) in snapshot.ports.iter().enumerate() {
            let (key, built) = build_port(port, i, counts)?;
            if ports.insert(key, built).is_some() {
                return Err(BuildError::new(
                    format!("Port {key}"),
                    format!("ports[{i}]"),
                    "duplicate (address, bind_port)",
                ));
            }
            port_keys.push(key);
        }
        let strips_claim_headers = snapshot
            .ports
            .iter()
            .flat_map(|p| &p.listeners)
            .any(|l| !l.claim_headers.is_empty());
        Ok(Table {
            version: snapshot.version.as_str().into(),
            clusters: clusters.into_iter().map(Arc::new).collect(),
            routing: Arc::new(Routing {
                snapshot,
                ports,
                port_keys: port_keys.into(),
                rules: rules.into(),
                filters: filters.into(),
                chains: chains.into(),
                strips_claim_headers,
            }),
        })
    }
}

fn build_port(port: &pb::Port, i: usize, counts: Counts) -> Result<(PortKey, Port), BuildError> {
    let object = format!("Port {}:{}", port.address, port.bind_port);
    let err = |field: &str, problem: String| {
        BuildError::new(object.clone(), format!("ports[{i}].{field}"), problem)
    };
    let address: IpAddr = port.address.parse().map_err(|_| {
        err(
            "address",
            format!("{:?} is not an IP address", port.address),
        )
    })?;
    let bind_port =
        nonzero_port(port.bind_port).ok_or_else(|| err("bind_port", "out of range".into()))?;
    let logical = nonzero_port(port.port).ok_or_else(|| err("port", "out of range".into()))?;
    let (scheme, tls) = match pb::Protocol::try_from(port.protocol) {
        Ok(pb::Protocol::Http | pb::Protocol::Unspecified) => (Scheme::Http, None),
        Ok(pb::Protocol::Https) => {
            let config = tls::server_config(port, &format!("ports[{i}]"))
                .map_err(|(field, problem)| BuildError::new(object.clone(), field, problem))?;
            (Scheme::Https, Some(config))
        }
        Err(_) => return Err(err("protocol", format!("unknown value {}", port.protocol))),
    };
    let listeners = port
        .listeners
        .iter()
        .enumerate()
        .map(|(l, listener)| {
            build_listener(listener, &format!("ports[{i}].listeners[{l}]"), counts)
        })
        .collect::<Result<_, _>>()?;
    let key = PortKey { address, bind_port };
    Ok((
        key,
        Port {
            port: logical,
            scheme,
            tls,
            proxy_protocol: port.proxy_protocol,
            listeners,
        },
    ))
}

fn nonzero_port(port: u32) -> Option<u16> {
    u16::try_from(port).ok().filter(|p| *p != 0)
}

fn build_listener(
    listener: &pb::Listener,
    field: &str,
    counts: Counts,
) -> Result<Listener, BuildError> {
    let object = describe(listener.origin.as_ref());
    let hostname = HostPattern::parse(&listener.hostname).ok_or_else(|| {
        BuildError::new(
            object.clone(),
            format!("{field}.hostname"),
            format!("{:?} is not a hostname", listener.hostname),
        )
    })?;
    let mut exact = HashMap::new();
    let mut wildcards = Vec::new();
    let mut any = None;
    for (h, vhost) in listener.hosts.iter().enumerate() {
        let field = format!("{field}.hosts[{h}]");
        let err =
            |problem: String| BuildError::new(object.clone(), format!("{field}.hostname"), problem);
        let pattern = HostPattern::parse(&vhost.hostname)
            .ok_or_else(|| err(format!("{:?} is not a hostname", vhost.hostname)))?;
        let built = build_virtual_host(vhost, &field, &object, counts)?;
        let duplicate = match pattern {
            HostPattern::Exact(name) => exact.insert(name, built).is_some(),
            HostPattern::Wildcard(suffix) => {
                let seen = wildcards.iter().any(|(s, _): &(Box<str>, _)| *s == suffix);
                wildcards.push((suffix, built));
                seen
            }
            HostPattern::Any => any.replace(built).is_some(),
        };
        if duplicate {
            return Err(err(format!("duplicate virtual host {:?}", vhost.hostname)));
        }
    }
    // Stable: equal lengths keep snapshot order.
    wildcards.sort_by_key(|(suffix, _)| std::cmp::Reverse(suffix.len()));
    let chain = listener.chain as usize;
    if chain > counts.chains {
        return Err(BuildError::new(
            object,
            format!("{field}.chain"),
            format!("chain {chain} out of range"),
        ));
    }
    let claim_headers = listener
        .claim_headers
        .iter()
        .map(|h| {
            http::HeaderName::from_bytes(h.as_bytes()).map_err(|_| {
                BuildError::new(
                    object.clone(),
                    format!("{field}.claim_headers"),
                    format!("{h:?} is not a header name"),
                )
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(Listener {
        object: object.into(),
        hostname,
        exact,
        wildcards: wildcards.into(),
        any,
        chain,
        claim_headers,
    })
}

fn build_virtual_host(
    vhost: &pb::VirtualHost,
    field: &str,
    object: &str,
    counts: Counts,
) -> Result<VirtualHost, BuildError> {
    let matches = vhost
        .matches
        .iter()
        .enumerate()
        .map(|(m, route_match)| {
            build_match(
                route_match,
                &format!("{field}.matches[{m}]"),
                object,
                counts,
            )
        })
        .collect::<Result<_, _>>()?;
    Ok(VirtualHost { matches })
}

fn build_match(
    m: &pb::RouteMatch,
    field: &str,
    object: &str,
    counts: Counts,
) -> Result<RouteMatch, BuildError> {
    let err = |sub: &str, problem: String| {
        BuildError::new(object.to_owned(), format!("{field}.{sub}"), problem)
    };
    let rule = usize::try_from(m.rule)
        .ok()
        .filter(|r| *r < counts.rules)
        .ok_or_else(|| {
            err(
                "rule",
                format!("index {} out of range ({} rules)", m.rule, counts.rules),
            )
        })?;
    let backend_identity = usize::try_from(m.backend_identity)
        .ok()
        .filter(|i| *i <= counts.identities)
        .ok_or_else(|| {
            err(
                "backend_identity",
                format!(
                    "{} is beyond the {} backend identities",
                    m.backend_identity, counts.identities
                ),
            )
        })?;
    let path = build_path(m.path.as_ref()).map_err(|problem| err("path", problem))?;
    let method = match m.method.as_str() {
        "" => None,
        name if name.bytes().all(|b| b.is_ascii_uppercase()) => {
            Some(Method::from_bytes(name.as_bytes()).map_err(|e| err("method", e.to_string()))?)
        }
        name => {
            return Err(err(
                "method",
                format!("{name:?} is not an upper-case method"),
            ));
        }
    };
    let headers = m
        .headers
        .iter()
        .enumerate()
        .map(|(h, header)| {
            let name = HeaderName::from_bytes(header.name.to_ascii_lowercase().as_bytes())
                .map_err(|e| err(&format!("headers[{h}].name"), e.to_string()))?;
            let value = build_value(header.r#type, &header.value)
                .map_err(|problem| err(&format!("headers[{h}].value"), problem))?;
            Ok(HeaderMatch { name, value })
        })
        .collect::<Result<_, _>>()?;
    let query_params = m
        .query_params
        .iter()
        .enumerate()
        .map(|(q, param)| {
            if param.name.is_empty() {
                return Err(err(&format!("query_params[{q}].name"), "empty".into()));
            }
            let value = build_value(param.r#type, &param.value)
                .map_err(|problem| err(&format!("query_params[{q}].value"), problem))?;
            Ok(QueryParamMatch {
                name: param.name.as_str().into(),
                value,
            })
        })
        .collect::<Result<_, _>>()?;
    let chain = m.chain as usize;
    if chain > counts.chains {
        return Err(err("chain", format!("{chain} out of range")));
    }
    Ok(RouteMatch {
        path,
        method,
        headers,
        query_params,
        rule,
        backend_identity,
        chain,
    })
}

fn build_path(path: Option<&pb::PathMatch>) -> Result<PathMatch, String> {
    let Some(path) = path else {
        return Ok(PathMatch::Prefix("".into()));
    };
    let value = path.value.as_str();
    match pb::PathMatchType::try_from(path.r#type) {
        Ok(pb::PathMatchType::PathMatchRegularExpression) => whole_value_regex(value)
            .map(PathMatch::Regex)
            .map_err(|e| format!("regular expression {value:?} does not compile: {e}")),
        _ if !value.starts_with('/') => Err(format!("{value:?} does not start with \"/\"")),
        Ok(pb::PathMatchType::PathMatchExact) => Ok(PathMatch::Exact(value.into())),
        Ok(pb::PathMatchType::PathMatchPathPrefix) => {
            Ok(PathMatch::Prefix(value.trim_end_matches('/').into()))
        }
        Err(_) => Err(format!("unknown path match type {}", path.r#type)),
    }
}

fn build_value(kind: i32, value: &str) -> Result<ValueMatch, String> {
    match pb::ValueMatchType::try_from(kind) {
        Ok(pb::ValueMatchType::ValueMatchExact) => Ok(ValueMatch::Exact(value.into())),
        Ok(pb::ValueMatchType::ValueMatchRegularExpression) => whole_value_regex(value)
            .map(ValueMatch::Regex)
            .map_err(|e| format!("regular expression {value:?} does not compile: {e}")),
        Err(_) => Err(format!("unknown value match type {kind}")),
    }
}

fn build_rules(
    rules: &[pb::Rule],
    cluster_count: usize,
    stats: &StatsRegistry,
) -> Result<Vec<Rule>, BuildError> {
    rules
        .iter()
        .enumerate()
        .map(|(i, rule)| build_rule(rule, i, cluster_count, stats))
        .collect()
}

fn build_rule(
    rule: &pb::Rule,
    i: usize,
    cluster_count: usize,
    stats: &StatsRegistry,
) -> Result<Rule, BuildError> {
    let object = describe(rule.origin.as_ref());
    let route = rule
        .origin
        .as_ref()
        .map(|o| format!("{}/{}", o.namespace, o.name))
        .unwrap_or_default();
    let mut backends = Vec::with_capacity(rule.backends.len());
    let mut total_weight = 0u64;
    for (b, backend) in rule.backends.iter().enumerate() {
        let err = |sub: &str, problem: String| {
            BuildError::new(
                object.clone(),
                format!("rules[{i}].backends[{b}].{sub}"),
                problem,
            )
        };
        if backend.weight > MAX_WEIGHT {
            return Err(err(
                "weight",
                format!("{} exceeds {MAX_WEIGHT}", backend.weight),
            ));
        }
        let target = match &backend.target {
            Some(pb::backend::Target::Cluster(c)) => usize::try_from(*c)
                .ok()
                .filter(|c| *c < cluster_count)
                .map(Target::Cluster)
                .ok_or_else(|| {
                    err(
                        "cluster",
                        format!("index {c} out of range ({cluster_count} clusters)"),
                    )
                })?,
            Some(pb::backend::Target::Invalid(reason)) => Target::Invalid(reason.as_str().into()),
            None => return Err(err("target", "missing".into())),
        };
        total_weight += u64::from(backend.weight);
        backends.push(Backend {
            weight: backend.weight,
            target,
            filters: build_filters(backend.filters.as_ref(), cluster_count)
                .map_err(|(f, p)| err(&format!("filters.{f}"), p))?,
        });
    }
    let filters = build_filters(rule.filters.as_ref(), cluster_count)
        .map_err(|(f, p)| BuildError::new(object.clone(), format!("rules[{i}].filters.{f}"), p))?;
    let millis = |ms: u32| (ms > 0).then(|| Duration::from_millis(u64::from(ms)));
    let retry = rule
        .retry
        .as_ref()
        .map(|r| RetryPolicy::build(r).map(Box::new))
        .transpose()
        .map_err(|p| BuildError::new(object.clone(), format!("rules[{i}].retry"), p))?;
    Ok(Rule {
        stats: stats.route(&route),
        route: route.into(),
        object: object.into(),
        backends: backends.into(),
        total_weight,
        filters,
        request_timeout: millis(rule.request_timeout_ms),
        backend_timeout: millis(rule.backend_request_timeout_ms),
        retry,
    })
}

/// Runtime filters; `None` when there are none, so that the request path
/// pays one branch for a rule without filters.
fn build_filters(
    filters: Option<&pb::Filters>,
    cluster_count: usize,
) -> Result<Option<Box<Filters>>, (String, String)> {
    match filters {
        Some(f) if *f != pb::Filters::default() => {
            filters::build(f, cluster_count).map(|f| Some(Box::new(f)))
        }
        _ => Ok(None),
    }
}

fn build_clusters(
    clusters: &[pb::Cluster],
    identities: &[pb::Certificate],
    previous: Option<&Table>,
) -> Result<Vec<Cluster>, BuildError> {
    let previous: HashMap<&str, &Cluster> = previous
        .map(|t| t.clusters.iter().map(|c| (&*c.name, &**c)).collect())
        .unwrap_or_default();
    let mut names = HashSet::with_capacity(clusters.len());
    clusters
        .iter()
        .enumerate()
        .map(|(i, cluster)| {
            if !names.insert(cluster.name.as_str()) {
                return Err(BuildError::new(
                    format!("Cluster {}", cluster.name),
                    format!("clusters[{i}].name"),
                    "duplicate cluster name",
                ));
            }
            build_cluster(
                cluster,
                i,
                identities,
                previous.get(cluster.name.as_str()).copied(),
            )
        })
        .collect()
}

fn build_cluster(
    cluster: &pb::Cluster,
    i: usize,
    identities: &[pb::Certificate],
    previous: Option<&Cluster>,
) -> Result<Cluster, BuildError> {
    let err = |field: String, problem: String| {
        BuildError::new(format!("Cluster {}", cluster.name), field, problem)
    };
    let load_balancing = pb::LoadBalancing::try_from(cluster.load_balancing).map_err(|_| {
        err(
            format!("clusters[{i}].load_balancing"),
            format!("unknown value {}", cluster.load_balancing),
        )
    })?;
    let protocol = pb::UpstreamProtocol::try_from(cluster.protocol).map_err(|_| {
        err(
            format!("clusters[{i}].protocol"),
            format!("unknown value {}", cluster.protocol),
        )
    })?;
    let endpoints = build_endpoints(&cluster.endpoints, i, &cluster.name, previous)?;
    let h2 = protocol == pb::UpstreamProtocol::H2c;
    let secure = |identity: Option<&pb::Certificate>| {
        cluster
            .tls
            .as_ref()
            .map(|tls| {
                super::upstream_tls::build(tls, h2, identity)
                    .map(Arc::new)
                    .map_err(|problem| err(format!("clusters[{i}].tls"), problem))
            })
            .transpose()
    };
    let tls = secure(None)?;
    // One client config per Gateway client certificate, for the requests
    // that come through that Gateway.
    let tls_with_identity = match &tls {
        None => Box::default(),
        Some(_) => identities
            .iter()
            .map(|identity| secure(Some(identity)).map(|t| t.expect("the cluster has TLS")))
            .collect::<Result<_, _>>()?,
    };
    Ok(Cluster {
        name: cluster.name.as_str().into(),
        endpoints,
        load_balancing,
        protocol,
        tls,
        tls_with_identity,
        next: previous.map(|p| p.next.clone()).unwrap_or_default(),
    })
}

/// A cluster's endpoints, each keeping the in-flight count of the endpoint
/// of `previous` with the same address.
pub(super) fn build_endpoints(
    endpoints: &[pb::Endpoint],
    i: usize,
    name: &str,
    previous: Option<&Cluster>,
) -> Result<Box<[Endpoint]>, BuildError> {
    let err =
        |field: String, problem: String| BuildError::new(format!("Cluster {name}"), field, problem);
    // Linear search is cheapest for the usual few endpoints; a Service with
    // hundreds must not cost a quadratic rebuild.
    let indexed: Option<HashMap<SocketAddr, &Arc<std::sync::atomic::AtomicUsize>>> =
        previous.filter(|p| p.endpoints.len() > 16).map(|p| {
            p.endpoints
                .iter()
                .map(|e| (e.address, &e.in_flight))
                .collect()
        });
    let previous_in_flight = |address: SocketAddr| match &indexed {
        Some(map) => map.get(&address).map(|c| Arc::clone(c)),
        None => previous
            .and_then(|p| p.endpoints.iter().find(|old| old.address == address))
            .map(|old| old.in_flight.clone()),
    };
    endpoints
        .iter()
        .enumerate()
        .map(|(e, endpoint)| {
            let field = format!("clusters[{i}].endpoints[{e}]");
            let ip: IpAddr = endpoint.address.parse().map_err(|_| {
                err(
                    format!("{field}.address"),
                    format!("{:?} is not an IP address", endpoint.address),
                )
            })?;
            let port = nonzero_port(endpoint.port)
                .ok_or_else(|| err(format!("{field}.port"), "out of range".into()))?;
            let address = SocketAddr::new(ip, port);
            let authority = Authority::try_from(address.to_string())
                .map_err(|e| err(format!("{field}.address"), e.to_string()))?;
            Ok(Endpoint {
                address,
                authority,
                in_flight: previous_in_flight(address).unwrap_or_default(),
            })
        })
        .collect()
}
