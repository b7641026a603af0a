//! Matching precedence, each test quoting the Gateway API v1 sentence it
//! checks. The controller sorts; these tests pin that lookup honours the
//! snapshot order and the host fall-through described in `snapshot.proto`.

use std::sync::Arc;

use gatehouse_snapshot as pb;
use http::{HeaderMap, HeaderValue, Method};

use super::*;

fn origin(kind: &str, name: &str, section: &str) -> Option<pb::Origin> {
    Some(pb::Origin {
        kind: kind.into(),
        namespace: "ns".into(),
        name: name.into(),
        section: section.into(),
    })
}

fn prefix(value: &str, rule: u32) -> pb::RouteMatch {
    path(pb::PathMatchType::PathMatchPathPrefix, value, rule)
}

fn path(kind: pb::PathMatchType, value: &str, rule: u32) -> pb::RouteMatch {
    pb::RouteMatch {
        path: Some(pb::PathMatch {
            r#type: kind as i32,
            value: value.into(),
        }),
        rule,
        ..Default::default()
    }
}

fn vhost(hostname: &str, matches: Vec<pb::RouteMatch>) -> pb::VirtualHost {
    pb::VirtualHost {
        hostname: hostname.into(),
        matches,
    }
}

fn listener(hostname: &str, hosts: Vec<pb::VirtualHost>) -> pb::Listener {
    pb::Listener {
        origin: origin("Gateway", "gw", hostname),
        hostname: hostname.into(),
        hosts,
        ..Default::default()
    }
}

/// One port 127.0.0.1:8080 with `listeners`, and `rules` rules named r0..rN.
fn snapshot(listeners: Vec<pb::Listener>, rules: usize) -> pb::Snapshot {
    pb::Snapshot {
        group: "default".into(),
        version: "v1".into(),
        ports: vec![pb::Port {
            address: "127.0.0.1".into(),
            port: 80,
            bind_port: 8080,
            protocol: pb::Protocol::Http as i32,
            listeners,
            ..Default::default()
        }],
        rules: (0..rules)
            .map(|i| pb::Rule {
                origin: origin("HTTPRoute", &format!("r{i}"), "0"),
                backends: vec![],
                ..Default::default()
            })
            .collect(),
        clusters: vec![],
        backend_identities: vec![],
        ..Default::default()
    }
}

fn key() -> PortKey {
    PortKey {
        address: [127, 0, 0, 1].into(),
        bind_port: 8080,
    }
}

struct Req {
    host: &'static str,
    method: Method,
    path: &'static str,
    query: Option<&'static str>,
    headers: HeaderMap,
}

fn get(host: &'static str, path: &'static str) -> Req {
    Req {
        host,
        method: Method::GET,
        path,
        query: None,
        headers: HeaderMap::new(),
    }
}

/// The route name the request lands on, or the miss as text.
fn route_of(table: &Table, req: &Req) -> String {
    let view = RequestView {
        host: req.host,
        method: &req.method,
        path: req.path,
        query: req.query,
        headers: Fields::Map(&req.headers),
    };
    match table.lookup(&key(), &view) {
        Lookup::Rule(found) => found.rule.route.to_string(),
        Lookup::NoRoute(_) => "NoRoute".into(),
        other => format!("{other:?}"),
    }
}

fn table(s: pb::Snapshot) -> Table {
    Table::build(Arc::new(s)).expect("table builds")
}

#[test]
fn exact_path_and_longest_prefix_follow_snapshot_order() {
    // "precedence must be given to the match having: "Exact" path match.
    // "Prefix" path match with largest number of characters." The
    // controller emits that order; lookup takes the first match.
    let t = table(snapshot(
        vec![listener(
            "",
            vec![vhost(
                "",
                vec![
                    path(pb::PathMatchType::PathMatchExact, "/a/b", 0),
                    prefix("/a/b", 1),
                    prefix("/a", 2),
                    prefix("/", 3),
                ],
            )],
        )],
        4,
    ));
    assert_eq!(route_of(&t, &get("x", "/a/b")), "ns/r0");
    assert_eq!(route_of(&t, &get("x", "/a/b/c")), "ns/r1");
    assert_eq!(route_of(&t, &get("x", "/a/bc")), "ns/r2");
    assert_eq!(route_of(&t, &get("x", "/ab")), "ns/r3");
}

#[test]
fn first_matching_entry_wins_on_ties() {
    // "If ties still exist within an HTTPRoute, matching precedence MUST be
    // granted to the FIRST matching rule (in list order) with a match meeting
    // the above criteria."
    let t = table(snapshot(
        vec![listener(
            "",
            vec![vhost("", vec![prefix("/a", 1), prefix("/a", 0)])],
        )],
        2,
    ));
    assert_eq!(route_of(&t, &get("x", "/a")), "ns/r1");
}

#[test]
fn all_conditions_of_a_match_are_anded() {
    // "Multiple match types are ANDed together, i.e. the match will evaluate
    // to true only if all conditions are satisfied."
    let mut strict = prefix("/", 0);
    strict.method = "POST".into();
    strict.headers = vec![pb::HeaderMatch {
        r#type: pb::ValueMatchType::ValueMatchRegularExpression as i32,
        name: "x-version".into(),
        value: "v[0-9]".into(),
    }];
    strict.query_params = vec![pb::QueryParamMatch {
        r#type: pb::ValueMatchType::ValueMatchExact as i32,
        name: "debug".into(),
        value: "1".into(),
    }];
    let t = table(snapshot(
        vec![listener("", vec![vhost("", vec![strict, prefix("/", 1)])])],
        2,
    ));
    let mut req = get("x", "/");
    req.method = Method::POST;
    req.query = Some("debug=1");
    req.headers
        .insert("X-Version", HeaderValue::from_static("v2"));
    assert_eq!(route_of(&t, &req), "ns/r0");
    req.headers
        .insert("x-version", HeaderValue::from_static("v22"));
    assert_eq!(
        route_of(&t, &req),
        "ns/r1",
        "header regex must match the whole value"
    );
    req.headers
        .insert("x-version", HeaderValue::from_static("v2"));
    req.query = Some("Debug=1");
    assert_eq!(
        route_of(&t, &req),
        "ns/r1",
        "query names are case-sensitive"
    );
    req.query = Some("debug=1");
    req.method = Method::GET;
    assert_eq!(route_of(&t, &req), "ns/r1", "method must match");
}

#[test]
fn exact_host_then_wildcards_longest_first_then_any() {
    // "precedence must be given to rules from the HTTPRoute with the largest
    // number of: Characters in a matching non-wildcard hostname. Characters
    // in a matching hostname." A host without a matching rule falls through
    // to the next less specific virtual host.
    let t = table(snapshot(
        vec![listener(
            "",
            vec![
                vhost("a.b.example.com", vec![prefix("/exact", 0)]),
                vhost(
                    "*.example.com",
                    vec![prefix("/short", 2), prefix("/both", 2)],
                ),
                vhost(
                    "*.b.example.com",
                    vec![prefix("/long", 1), prefix("/both", 1)],
                ),
                vhost("", vec![prefix("/", 3)]),
            ],
        )],
        4,
    ));
    assert_eq!(route_of(&t, &get("a.b.example.com", "/exact")), "ns/r0");
    assert_eq!(route_of(&t, &get("a.b.example.com", "/both")), "ns/r1");
    assert_eq!(route_of(&t, &get("a.b.example.com", "/short")), "ns/r2");
    assert_eq!(route_of(&t, &get("a.b.example.com", "/other")), "ns/r3");
    assert_eq!(route_of(&t, &get("c.example.com", "/both")), "ns/r2");
    assert_eq!(route_of(&t, &get("example.com", "/short")), "ns/r3");
}

#[test]
fn wildcard_matches_one_or_more_labels_but_not_the_bare_domain() {
    // "a match for `*.example.com` would match both `test.example.com`, and
    // `foo.test.example.com`, but not `example.com`."
    let t = table(snapshot(
        vec![listener(
            "*.example.com",
            vec![vhost("*.example.com", vec![prefix("/", 0)])],
        )],
        1,
    ));
    assert_eq!(route_of(&t, &get("test.example.com", "/")), "ns/r0");
    assert_eq!(route_of(&t, &get("foo.test.example.com", "/")), "ns/r0");
    assert_eq!(route_of(&t, &get("example.com", "/")), "NoListener");
}

#[test]
fn first_matching_listener_owns_the_request() {
    // Listener hostname: "Implementations MUST apply the most specific
    // matching listener hostname"; the snapshot lists the most specific
    // first, and a request is served only by that listener's routes.
    let t = table(snapshot(
        vec![
            listener(
                "a.example.com",
                vec![vhost("a.example.com", vec![prefix("/only-a", 0)])],
            ),
            listener("", vec![vhost("", vec![prefix("/", 1)])]),
        ],
        2,
    ));
    assert_eq!(route_of(&t, &get("a.example.com", "/only-a")), "ns/r0");
    assert_eq!(route_of(&t, &get("a.example.com", "/else")), "NoRoute");
    assert_eq!(route_of(&t, &get("b.example.com", "/else")), "ns/r1");
}

#[test]
fn regular_expression_path_matches_whole_path() {
    // HTTPPathMatch RegularExpression; anchored so "/v1" does not match
    // "/api/v1/x".
    let t = table(snapshot(
        vec![listener(
            "",
            vec![vhost(
                "",
                vec![
                    path(pb::PathMatchType::PathMatchRegularExpression, "/v[0-9]+", 0),
                    prefix("/", 1),
                ],
            )],
        )],
        2,
    ));
    assert_eq!(route_of(&t, &get("x", "/v12")), "ns/r0");
    assert_eq!(route_of(&t, &get("x", "/api/v12")), "ns/r1");
}

#[test]
fn unknown_port_is_reported() {
    let t = table(snapshot(vec![], 0));
    let req = get("x", "/");
    let view = RequestView {
        host: req.host,
        method: &req.method,
        path: req.path,
        query: None,
        headers: Fields::Map(&req.headers),
    };
    let other = PortKey {
        address: [127, 0, 0, 1].into(),
        bind_port: 9,
    };
    assert!(matches!(t.lookup(&other, &view), Lookup::NoPort));
}

fn build_error(s: pb::Snapshot) -> BuildError {
    Table::build(Arc::new(s)).expect_err("snapshot must be rejected")
}

#[test]
fn invalid_regex_names_object_and_field() {
    let bad = path(pb::PathMatchType::PathMatchRegularExpression, "/(", 0);
    let e = build_error(snapshot(vec![listener("", vec![vhost("", vec![bad])])], 1));
    assert_eq!(e.object, "Gateway ns/gw");
    assert_eq!(e.field, "ports[0].listeners[0].hosts[0].matches[0].path");
    assert!(e.problem.contains("does not compile"), "{e}");
}

#[test]
fn out_of_range_indexes_and_bad_values_are_rejected() {
    let e = build_error(snapshot(
        vec![listener("", vec![vhost("", vec![prefix("/", 5)])])],
        1,
    ));
    assert_eq!(e.field, "ports[0].listeners[0].hosts[0].matches[0].rule");

    let mut s = snapshot(vec![], 1);
    s.rules[0].backends = vec![pb::Backend {
        weight: 1,
        target: Some(pb::backend::Target::Cluster(0)),
        ..Default::default()
    }];
    let e = build_error(s.clone());
    assert_eq!(
        (e.object.as_str(), e.field.as_str()),
        ("HTTPRoute ns/r0 section 0", "rules[0].backends[0].cluster")
    );

    s.rules[0].backends[0] = pb::Backend {
        weight: 2_000_000,
        target: Some(pb::backend::Target::Invalid("x".into())),
        ..Default::default()
    };
    assert_eq!(build_error(s).field, "rules[0].backends[0].weight");

    let mut s = snapshot(vec![], 0);
    s.ports.push(s.ports[0].clone());
    assert!(build_error(s.clone()).problem.contains("duplicate"));
    s.ports.truncate(1);
    s.ports[0].address = "localhost".into();
    assert_eq!(build_error(s).field, "ports[0].address");

    let mut s = snapshot(vec![], 0);
    s.clusters = vec![pb::Cluster {
        name: "ns/svc:80".into(),
        endpoints: vec![pb::Endpoint {
            address: "10.0.0.300".into(),
            port: 80,
        }],
        ..Default::default()
    }];
    assert_eq!(build_error(s).field, "clusters[0].endpoints[0].address");
}

#[test]
fn cluster_state_carries_over_by_name_and_endpoint() {
    let mut s = snapshot(vec![], 0);
    s.clusters = vec![pb::Cluster {
        name: "ns/svc:80".into(),
        endpoints: vec![
            pb::Endpoint {
                address: "10.0.0.1".into(),
                port: 80,
            },
            pb::Endpoint {
                address: "10.0.0.2".into(),
                port: 80,
            },
        ],
        ..Default::default()
    }];
    let stats = crate::stats::StatsRegistry::default();
    let old = Table::build_with(Arc::new(s.clone()), None, &stats).unwrap();
    s.clusters[0].endpoints.remove(0);
    let new = Table::build_with(Arc::new(s), Some(&old), &stats).unwrap();
    assert!(Arc::ptr_eq(&old.cluster(0).next, &new.cluster(0).next));
    assert!(Arc::ptr_eq(
        &old.cluster(0).endpoints[1].in_flight,
        &new.cluster(0).endpoints[0].in_flight
    ));
}

fn certificate(names: &[&str]) -> pb::Certificate {
    let key = rcgen::KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let cert = rcgen::CertificateParams::new(names)
        .unwrap()
        .self_signed(&key)
        .unwrap();
    pb::Certificate {
        name: "ns/cert".into(),
        chain_pem: cert.pem().into_bytes(),
        key_pem: key.serialize_pem().into_bytes(),
    }
}

fn https(certificates: Vec<pb::Certificate>) -> pb::Snapshot {
    let mut s = snapshot(vec![listener("a.test", vec![])], 0);
    s.ports[0].protocol = pb::Protocol::Https as i32;
    s.ports[0].listeners[0].certificates = certificates;
    s
}

#[test]
fn an_https_port_builds_a_tls_config_from_its_listeners_certificates() {
    let table = Table::build(Arc::new(https(vec![certificate(&["a.test"])]))).unwrap();
    let port = table.port(&key()).unwrap();
    assert_eq!(port.scheme, Scheme::Https);
    let config = port.tls.as_ref().expect("a TLS config");
    assert_eq!(
        config.alpn_protocols,
        [b"h2".to_vec(), b"http/1.1".to_vec()]
    );
}

#[test]
fn an_https_listener_without_a_usable_certificate_rejects_the_snapshot() {
    let e = build_error(https(vec![]));
    assert_eq!(e.field, "ports[0].listeners[0].certificates");
    let mut broken = certificate(&["a.test"]);
    broken.key_pem = certificate(&["a.test"]).key_pem;
    let e = build_error(https(vec![broken]));
    assert_eq!(e.field, "ports[0].listeners[0].certificates[0]");
    assert!(e.problem.contains("not usable together"), "{}", e.problem);
}
