//! Route lookup at 10 / 1,000 / 10,000 routes (hit, miss, wildcard host,
//! regex path) beside a linear scan over the same routes, table build at
//! 10,000 routes, and an endpoint change applied as an update beside a
//! rebuild. Inputs are prepared outside the timed closures.

use std::{hint::black_box, sync::Arc};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use gatehouse_dataplane::table::{Fields, Lookup, PortKey, RequestView, Table};
use gatehouse_snapshot as pb;
use http::{HeaderMap, Method};

const PATHS_PER_HOST: usize = 10;

fn route_match(kind: pb::PathMatchType, value: String, rule: u32) -> pb::RouteMatch {
    pb::RouteMatch {
        path: Some(pb::PathMatch {
            r#type: kind as i32,
            value,
        }),
        rule,
        ..Default::default()
    }
}

/// `routes` prefix routes over routes/10 exact hosts, one wildcard host and
/// one regex route (on the "" host).
fn snapshot(routes: usize) -> pb::Snapshot {
    let hosts = (routes / PATHS_PER_HOST).max(1);
    let mut vhosts: Vec<pb::VirtualHost> = (0..hosts)
        .map(|h| pb::VirtualHost {
            hostname: format!("host-{h}.example.com"),
            matches: (0..PATHS_PER_HOST)
                .map(|p| {
                    let rule = (h * PATHS_PER_HOST + p) as u32;
                    route_match(
                        pb::PathMatchType::PathMatchPathPrefix,
                        format!("/svc-{p}"),
                        rule,
                    )
                })
                .collect(),
        })
        .collect();
    vhosts.push(pb::VirtualHost {
        hostname: "*.wild.example.com".into(),
        matches: vec![route_match(
            pb::PathMatchType::PathMatchPathPrefix,
            "/".into(),
            0,
        )],
    });
    vhosts.push(pb::VirtualHost {
        hostname: String::new(),
        matches: vec![route_match(
            pb::PathMatchType::PathMatchRegularExpression,
            "/v[0-9]+/items/[a-z]+".into(),
            0,
        )],
    });
    let rules = (0..hosts * PATHS_PER_HOST)
        .map(|i| pb::Rule {
            origin: Some(pb::Origin {
                kind: "HTTPRoute".into(),
                namespace: "ns".into(),
                name: format!("r{i}"),
                section: "0".into(),
            }),
            backends: vec![pb::Backend {
                weight: 1,
                target: Some(pb::backend::Target::Cluster((i % hosts) as u32)),
                ..Default::default()
            }],
            ..Default::default()
        })
        .collect();
    pb::Snapshot {
        group: "bench".into(),
        version: "v".into(),
        ports: vec![pb::Port {
            address: "127.0.0.1".into(),
            port: 80,
            bind_port: 8080,
            protocol: pb::Protocol::Http as i32,
            listeners: vec![pb::Listener {
                origin: None,
                hostname: String::new(),
                hosts: vhosts,
                ..Default::default()
            }],
            ..Default::default()
        }],
        rules,
        backend_identities: vec![],
        clusters: (0..hosts).map(|c| cluster(c, 1)).collect(),
        ..Default::default()
    }
}

/// Cluster `c` of a snapshot: three endpoints, the last octet from `turn`.
fn cluster(c: usize, turn: u8) -> pb::Cluster {
    pb::Cluster {
        name: format!("ns/svc-{c}:80"),
        endpoints: (0..3)
            .map(|e| pb::Endpoint {
                address: format!("10.{}.{}.{}", c / 256, c % 256, turn + e),
                port: 8080,
            })
            .collect(),
        ..Default::default()
    }
}

/// The naive baseline: every (host, prefix) pair in one list, scanned in
/// order with plain string comparisons.
fn linear_scan<'a>(
    routes: &'a [(String, String)],
    host: &str,
    path: &str,
) -> Option<&'a (String, String)> {
    routes.iter().find(|(h, prefix)| {
        h == host
            && path
                .strip_prefix(prefix.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    })
}

fn lookups(c: &mut Criterion) {
    let key = PortKey {
        address: [127, 0, 0, 1].into(),
        bind_port: 8080,
    };
    let headers = HeaderMap::new();
    for routes in [10, 1_000, 10_000] {
        let table = Table::build(Arc::new(snapshot(routes))).unwrap();
        let flat: Vec<(String, String)> = (0..routes / PATHS_PER_HOST)
            .flat_map(|h| {
                (0..PATHS_PER_HOST)
                    .map(move |p| (format!("host-{h}.example.com"), format!("/svc-{p}")))
            })
            .collect();
        let last_host = format!("host-{}.example.com", routes / PATHS_PER_HOST - 1);
        let cases = [
            ("hit", last_host.as_str(), "/svc-9/x"),
            ("miss", "nowhere.example.org", "/none"),
            ("wildcard", "a.wild.example.com", "/x"),
            ("regex", "nowhere.example.org", "/v2/items/abc"),
        ];
        let mut group = c.benchmark_group(format!("lookup/{routes}"));
        for (name, host, path) in cases {
            let view = RequestView {
                host,
                method: &Method::GET,
                path,
                query: None,
                headers: Fields::Map(&headers),
            };
            group.bench_function(BenchmarkId::new("table", name), |b| {
                b.iter(|| {
                    matches!(
                        table.lookup(black_box(&key), black_box(&view)),
                        Lookup::Rule(_)
                    )
                })
            });
            group.bench_function(BenchmarkId::new("linear_scan", name), |b| {
                b.iter(|| linear_scan(black_box(&flat), black_box(host), black_box(path)).is_some())
            });
        }
        group.finish();
    }
}

fn build(c: &mut Criterion) {
    let snapshot = Arc::new(snapshot(10_000));
    c.bench_function("build/10000", |b| {
        b.iter(|| Table::build(snapshot.clone()).unwrap())
    });
}

/// One Service's endpoints changed, at 1,000 and 10,000 routes (100 and
/// 1,000 clusters): the endpoint update the controller sends, beside
/// rebuilding the table from the whole snapshot with those endpoints.
fn endpoint_update(c: &mut Criterion) {
    let mut group = c.benchmark_group("endpoint_change");
    for routes in [1_000, 10_000] {
        let mut base = snapshot(routes);
        pb::seal(&mut base);
        let table = Table::build(Arc::new(base.clone())).unwrap();
        let changed = cluster(7, 2);
        let update = pb::Snapshot {
            group: base.group.clone(),
            version: "next".into(),
            base_version: base.version.clone(),
            endpoint_updates: vec![pb::ClusterEndpoints {
                cluster: 7,
                endpoints: changed.endpoints.clone(),
            }],
            ..Default::default()
        };
        let mut whole = base.clone();
        whole.clusters[7] = changed;
        let whole = Arc::new(whole);
        group.bench_function(BenchmarkId::new("update", routes), |b| {
            b.iter(|| table.with_endpoint_update(black_box(&update)).unwrap())
        });
        group.bench_function(BenchmarkId::new("rebuild", routes), |b| {
            b.iter(|| Table::build(black_box(whole.clone())).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, lookups, build, endpoint_update);
criterion_main!(benches);
