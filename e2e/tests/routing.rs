//! Routing end to end: hostnames (exact and wildcard), path, header, query
//! and method matches, and precedence across routes, through a standalone
//! controller, its data plane and real echo backends.

use gatehouse_e2e::{Echo, HttpClient, Request, Standalone, manifests};

struct Backends {
    a: Echo,
    b: Echo,
    c: Echo,
    d: Echo,
}

impl Backends {
    fn start() -> Self {
        Self {
            a: Echo::start("a"),
            b: Echo::start("b"),
            c: Echo::start("c"),
            d: Echo::start("d"),
        }
    }

    fn services(&self) -> String {
        [
            manifests::service("default", "svc-a", &[self.a.port()]),
            manifests::service("default", "svc-b", &[self.b.port()]),
            manifests::service("default", "svc-c", &[self.c.port()]),
            manifests::service("default", "svc-d", &[self.d.port()]),
        ]
        .join("---\n")
    }
}

fn route(name: &str, created: &str, hostnames: &[&str], rules: &str) -> String {
    format!(
        r#"---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: {name}
  namespace: default
  creationTimestamp: "{created}"
spec:
  parentRefs: [{{name: gw}}]
  hostnames: {hostnames:?}
  rules:
{rules}
"#
    )
}

fn rule(matches: &str, service: &str) -> String {
    format!("  - matches: {matches}\n    backendRefs: [{{name: {service}, port: 80}}]\n")
}

const T0: &str = "2024-01-01T00:00:00Z";

fn routes() -> String {
    [
        route("exact-host", T0, &["foo.example.com"], &rule("[]", "svc-a")),
        route("wildcard-host", T0, &["*.example.com"], &rule("[]", "svc-b")),
        route(
            "paths",
            T0,
            &["paths.test"],
            &[
                rule("[{path: {type: Exact, value: /exact}}]", "svc-a"),
                rule("[{path: {type: PathPrefix, value: /prefix/}}]", "svc-b"),
                rule(
                    r#"[{path: {type: RegularExpression, value: "/regex/[0-9]+"}}]"#,
                    "svc-c",
                ),
                rule("[{path: {type: PathPrefix, value: /}}]", "svc-d"),
            ]
            .concat(),
        ),
        route(
            "matches",
            T0,
            &["match.test"],
            &[
                rule("[{headers: [{name: X-Env, value: canary}]}]", "svc-b"),
                rule("[{queryParams: [{name: v, value: \"2\"}]}]", "svc-c"),
                rule("[{method: POST}]", "svc-a"),
                rule("[]", "svc-d"),
            ]
            .concat(),
        ),
        route(
            "short-prefix",
            T0,
            &["prec.test"],
            &rule("[{path: {type: PathPrefix, value: /api}}]", "svc-a"),
        ),
        route(
            "long-prefix",
            "2025-01-01T00:00:00Z",
            &["prec.test"],
            &rule("[{path: {type: PathPrefix, value: /api/v1}}]", "svc-b"),
        ),
        route(
            "older",
            "2020-01-01T00:00:00Z",
            &["prec.test"],
            &rule("[{path: {type: Exact, value: /dup}}]", "svc-c"),
        ),
        route(
            "newer",
            "2021-01-01T00:00:00Z",
            &["prec.test"],
            &rule("[{path: {type: Exact, value: /dup}}]", "svc-d"),
        ),
        route(
            "tie-b",
            T0,
            &["prec.test"],
            &rule("[{path: {type: Exact, value: /tie}}]", "svc-b"),
        ),
        route(
            "tie-a",
            T0,
            &["prec.test"],
            &rule("[{path: {type: Exact, value: /tie}}]", "svc-a"),
        ),
        route(
            "headers-count",
            T0,
            &["prec.test"],
            &[
                rule("[{path: {type: PathPrefix, value: /h}, headers: [{name: x-a, value: \"1\"}]}]", "svc-c"),
                rule("[{path: {type: PathPrefix, value: /h}, headers: [{name: x-a, value: \"1\"}, {name: x-b, value: \"1\"}]}]", "svc-d"),
            ]
            .concat(),
        ),
    ]
    .concat()
}

async fn start() -> (Backends, Standalone) {
    let backends = Backends::start();
    let gateway = Standalone::start(&[
        ("gateway.yaml", manifests::gateway()),
        ("services.yaml", backends.services()),
        ("routes.yaml", routes()),
    ])
    .await;
    (backends, gateway)
}

/// (method, host, path, headers, expected backend or status).
type Case<'a> = (&'a str, &'a str, &'a str, &'a [(&'a str, &'a str)], &'a str);

/// Sends each case and checks which backend answered ("404" when none
/// should).
async fn check(gateway: &Standalone, cases: &[Case<'_>]) {
    let client = HttpClient::new();
    let mut failures = Vec::new();
    for (method, host, path, headers, expected) in cases {
        let mut request = Request::method(method, &gateway.url(80, path)).host(Some(host));
        for (name, value) in *headers {
            request = request.header(name, value);
        }
        let reply = client.send(request).await.expect("request");
        let got = match reply.backend() {
            Some(name) => name.to_string(),
            None => reply.status.to_string(),
        };
        if got != *expected {
            failures.push(format!(
                "{method} {host}{path} {headers:?}: want {expected}, got {got}"
            ));
        }
    }
    assert!(failures.is_empty(), "misrouted:\n{}", failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostnames_exact_wins_over_wildcard_and_wildcard_needs_a_label() {
    let (_backends, gateway) = start().await;
    check(
        &gateway,
        &[
            ("GET", "foo.example.com", "/", &[], "a"),
            ("GET", "FOO.Example.com", "/", &[], "a"),
            ("GET", "foo.example.com:80", "/", &[], "a"),
            ("GET", "bar.example.com", "/", &[], "b"),
            ("GET", "a.b.example.com", "/", &[], "b"),
            ("GET", "example.com", "/", &[], "404"),
            ("GET", "unknown.test", "/", &[], "404"),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_matches_exact_prefix_and_regex() {
    let (_backends, gateway) = start().await;
    check(
        &gateway,
        &[
            ("GET", "paths.test", "/exact", &[], "a"),
            ("GET", "paths.test", "/exact/", &[], "d"),
            ("GET", "paths.test", "/exactly", &[], "d"),
            // "/prefix/" matches "/prefix" and "/prefix/x" but not "/prefixes".
            ("GET", "paths.test", "/prefix", &[], "b"),
            ("GET", "paths.test", "/prefix/x/y", &[], "b"),
            ("GET", "paths.test", "/prefixes", &[], "d"),
            ("GET", "paths.test", "/regex/123", &[], "c"),
            ("GET", "paths.test", "/regex/12a", &[], "d"),
            ("GET", "paths.test", "/regex/123?q=1", &[], "c"),
            ("GET", "paths.test", "/anything", &[], "d"),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_query_and_method_matches() {
    let (_backends, gateway) = start().await;
    check(
        &gateway,
        &[
            ("GET", "match.test", "/", &[("x-env", "canary")], "b"),
            ("GET", "match.test", "/", &[("X-ENV", "canary")], "b"),
            ("GET", "match.test", "/", &[("x-env", "Canary")], "d"),
            ("GET", "match.test", "/?v=2", &[], "c"),
            ("GET", "match.test", "/?v=20", &[], "d"),
            ("GET", "match.test", "/?V=2", &[], "d"),
            ("POST", "match.test", "/", &[], "a"),
            ("GET", "match.test", "/", &[], "d"),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn precedence_across_routes() {
    let (_backends, gateway) = start().await;
    check(
        &gateway,
        &[
            // "Largest number of characters in a matching prefix path" beats age.
            ("GET", "prec.test", "/api/v1/x", &[], "b"),
            ("GET", "prec.test", "/api/v2", &[], "a"),
            // Ties: "The oldest Route based on creation timestamp."
            ("GET", "prec.test", "/dup", &[], "c"),
            // Then "alphabetical order by {namespace}/{name}".
            ("GET", "prec.test", "/tie", &[], "a"),
            // "Largest number of header matches."
            ("GET", "prec.test", "/h", &[("x-a", "1"), ("x-b", "1")], "d"),
            ("GET", "prec.test", "/h", &[("x-a", "1")], "c"),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_sees_the_request_with_forwarding_headers() {
    let (_backends, gateway) = start().await;
    let client = HttpClient::new();
    let reply = client
        .send(
            Request::get(&gateway.url(80, "/exact?x=1"))
                .host(Some("paths.test"))
                .header("connection", "x-hop")
                .header("x-hop", "secret")
                .header("x-request-id", "req-1"),
        )
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
    let seen = reply.echo();
    assert_eq!(seen["path"], "/exact");
    assert_eq!(seen["query"], "x=1");
    assert_eq!(seen["host"], "paths.test");
    let headers = &seen["headers"];
    assert!(
        headers.get("x-hop").is_none(),
        "hop-by-hop header forwarded: {headers}"
    );
    assert!(headers.get("connection").is_none_or(|v| v != "x-hop"));
    assert_eq!(headers["x-request-id"][0], "req-1");
    assert_eq!(headers["x-forwarded-proto"][0], "http");
    let forwarded_for = headers["x-forwarded-for"][0].as_str().unwrap_or_default();
    assert!(
        forwarded_for.starts_with("127."),
        "x-forwarded-for: {forwarded_for}"
    );

    let reply = client
        .get(&gateway.url(80, "/exact"), Some("paths.test"))
        .await
        .unwrap();
    let id = &reply.echo()["headers"]["x-request-id"][0];
    assert!(
        id.as_str().is_some_and(|id| !id.is_empty()),
        "no generated request id"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_clients_are_routed_by_authority() {
    let (_backends, gateway) = start().await;
    let addr = std::net::SocketAddr::new(gateway.address, 80 + gatehouse_e2e::PORT_OFFSET);
    let reply = HttpClient::h2c_request(addr, "foo.example.com", "/h2")
        .await
        .expect("h2c request");
    assert_eq!(reply.backend(), Some("a"), "status {}", reply.status);
    assert_eq!(reply.echo()["path"], "/h2");
    assert_eq!(reply.echo()["host"], "foo.example.com");
    let missed = HttpClient::h2c_request(addr, "nothing.test", "/")
        .await
        .unwrap();
    assert_eq!(missed.status, 404);
}
