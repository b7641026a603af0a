//! The order gatehouse.dev filters run in, end to end: ipAccess refuses
//! before jwtAuth is consulted, a rateLimit sees only requests (and claims)
//! that jwtAuth let through, a rule's own jwtAuth replaces the Gateway's,
//! and `gatehouse-controller explain` and `/debug/chains` describe the chain
//! that real traffic meets.
//!
//! Tokens are minted here with keys generated per run. Requests that must
//! come from a given client address leave from a chosen loopback address
//! (the socket is bound before it connects).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use bytes::Bytes;
use gatehouse_e2e::manifests::extension_refs;
use gatehouse_e2e::tokens::{JwksServer, Mode, Signer, jwks, now};
use gatehouse_e2e::{Echo, HttpClient, Reply, Request, Standalone, manifests};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpSocket;

const ISSUER: &str = "https://issuer.example";

// ---------------------------------------------------------------------------
// Keys and tokens

/// Claims that pass every check of the filters below for `issuer`.
fn claims_from(issuer: &str, sub: &str) -> Value {
    let now = now();
    json!({"sub": sub, "iss": issuer, "iat": now - 10, "exp": now + 600})
}

fn claims(sub: &str) -> Value {
    claims_from(ISSUER, sub)
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

// ---------------------------------------------------------------------------
// Manifests

/// A Filter `name` in `default` of `kind`, with `spec` merged into its spec
/// (JSON is YAML too).
fn filter(name: &str, kind: &str, spec: Value) -> String {
    let mut full = json!({"type": kind});
    if let Value::Object(fields) = spec {
        for (k, v) in fields {
            full[k] = v;
        }
    }
    json!({
        "apiVersion": "gatehouse.dev/v1alpha1",
        "kind": "Filter",
        "metadata": {"name": name, "namespace": "default"},
        "spec": full,
    })
    .to_string()
}

fn target_gateway(section: Option<&str>) -> Value {
    let mut target = json!({"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw"});
    if let Some(section) = section {
        target["sectionName"] = json!(section);
    }
    target
}

fn target_route(route: &str, rule: Option<&str>) -> Value {
    let mut target =
        json!({"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": route});
    if let Some(rule) = rule {
        target["sectionName"] = json!(rule);
    }
    target
}

/// jwtAuth settings for an inline JWKS and `issuer`, copying `sub` to
/// `x-user`; `extra` fields are merged in.
fn jwt_auth(issuer: &str, jwks: &str, extra: Value) -> Value {
    let mut spec = json!({
        "issuer": issuer,
        "jwks": {"inline": jwks},
        "claimsToHeaders": [{"claim": "sub", "header": "x-user"}],
    });
    if let Value::Object(fields) = extra {
        for (k, v) in fields {
            spec[k] = v;
        }
    }
    spec
}

/// One named rule: an optional path prefix, optional ExtensionRef filters,
/// to Service `service` on port 80.
fn rule(name: &str, prefix: Option<&str>, filters: &[&str], service: &str) -> String {
    let mut out = format!("  - name: {name}\n");
    if let Some(prefix) = prefix {
        out.push_str(&format!(
            "    matches: [{{path: {{type: PathPrefix, value: {prefix}}}}}]\n"
        ));
    }
    if !filters.is_empty() {
        out.push_str(&extension_refs(filters));
    }
    out.push_str(&format!(
        "    backendRefs: [{{name: {service}, port: 80}}]\n"
    ));
    out
}

async fn start(documents: &[String]) -> Standalone {
    Standalone::start(&[("all.yaml", documents.join("\n---\n"))]).await
}

fn record(name: &str) -> Echo {
    Echo::start_with(name, "127.0.0.1:0".parse().unwrap(), &["--record"])
}

// ---------------------------------------------------------------------------
// Requests

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

/// One GET over a fresh connection from the address `from` to logical port
/// 80 of the Gateway, for `host`, with `headers`.
async fn get_from(
    gw: &Standalone,
    from: IpAddr,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Reply {
    let attempt = async {
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(from, 0))?;
        let stream = socket.connect(gw.socket(80)).await?;
        stream.set_nodelay(true)?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        let mut request = http::Request::get(path).header(http::header::HOST, host);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = sender
            .send_request(request.body(Full::new(Bytes::new()))?)
            .await?;
        Reply::read(response).await
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), attempt)
        .await
        .unwrap_or_else(|_| panic!("GET {host}{path} from {from}: timed out"))
        .unwrap_or_else(|e: anyhow::Error| panic!("GET {host}{path} from {from}: {e:#}"))
}

/// One GET through the pooled client (from 127.0.0.1).
async fn get(
    client: &HttpClient,
    gw: &Standalone,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Reply {
    let mut request = Request::get(&gw.url(80, path)).host(Some(host));
    for (name, value) in headers {
        request = request.header(name, value);
    }
    client
        .send(request)
        .await
        .unwrap_or_else(|e| panic!("GET {host}{path}: {e:#}"))
}

fn assert_forbidden(reply: &Reply, case: &str) {
    assert_eq!(reply.status, 403, "{case}: {}", reply.text());
    assert_eq!(
        reply.header("www-authenticate"),
        None,
        "{case}: jwtAuth answered"
    );
    assert_eq!(reply.backend(), None, "{case}: reached the backend");
}

/// 401 from jwtAuth: a Bearer challenge, no backend.
fn assert_unauthorized(reply: &Reply, case: &str) {
    assert_eq!(reply.status, 401, "{case}: {}", reply.text());
    let challenge = reply.header("www-authenticate").unwrap_or_default();
    assert!(challenge.starts_with("Bearer"), "{case}: {challenge:?}");
    assert_eq!(reply.backend(), None, "{case}: reached the backend");
}

fn assert_passed(reply: &Reply, backend: &str, case: &str) {
    assert_eq!(reply.status, 200, "{case}: {}", reply.text());
    assert_eq!(reply.backend(), Some(backend), "{case}");
}

// ---------------------------------------------------------------------------
// Statuses

fn condition<'a>(conditions: &'a Value, kind: &str) -> &'a Value {
    conditions
        .as_array()
        .and_then(|all| all.iter().find(|c| c["type"] == kind))
        .unwrap_or_else(|| panic!("no {kind} condition in {conditions}"))
}

async fn filter_status(gw: &Standalone, name: &str) -> Value {
    let found = gw
        .status_of("Filter", &format!("default/{name}"))
        .await
        .unwrap_or_else(|| panic!("no status for Filter {name}"));
    found["status"].clone()
}

// ---------------------------------------------------------------------------
// 1. ipAccess before jwtAuth

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_access_refuses_before_jwt_auth_runs() {
    let key = Signer::es256();
    let server = JwksServer::start(jwks(&[key.jwk("k1")]), Mode::Serve).await;
    let echo = record("app");
    let denied = v4(127, 221, 0, 9);
    let allowed = v4(127, 221, 0, 10);
    // jwtAuth on the whole Gateway, ipAccess on its listener; `order` only
    // sorts within a phase, so it cannot put jwtAuth first.
    let remote =
        json!({"jwks": {"remote": {"url": server.url, "refreshInterval": "5m", "timeout": "1s"}}});
    let documents = [
        manifests::gateway(),
        manifests::service("default", "svc", &[echo.port()]),
        manifests::route_with_rules("app", "app.test", &rule("all", None, &[], "svc")),
        filter(
            "gw-jwt",
            "JWTAuth",
            json!({
                "order": -1000,
                "targetRefs": [target_gateway(None)],
                "jwtAuth": jwt_auth(ISSUER, "", remote),
            }),
        ),
        filter(
            "listener-deny",
            "IPAccess",
            json!({
                "order": 1000,
                "targetRefs": [target_gateway(Some("http"))],
                "ipAccess": {"deny": ["127.221.0.9/32"]},
            }),
        ),
    ];
    let gw = start(&documents).await;

    let valid = key.token(Some("k1"), &claims("alice"));
    let unknown_kid = Signer::es256().token(Some("no-such-kid"), &claims("mallory"));

    // The denied client is refused whatever it sends, before any token is
    // looked at: the remote key set is fetched lazily, on the first token
    // jwtAuth verifies, and an unknown kid asks for an early fetch.
    assert_forbidden(
        &get_from(&gw, denied, "app.test", "/", &[]).await,
        "denied, no token",
    );
    assert_forbidden(
        &get_from(
            &gw,
            denied,
            "app.test",
            "/",
            &[("authorization", &bearer(&unknown_kid))],
        )
        .await,
        "denied, unknown kid",
    );
    assert_forbidden(
        &get_from(
            &gw,
            denied,
            "app.test",
            "/",
            &[("authorization", &bearer(&valid))],
        )
        .await,
        "denied, valid token",
    );
    assert_eq!(
        server.hits(),
        0,
        "a denied client's token made jwtAuth fetch the key set"
    );

    // The allowed client meets jwtAuth.
    assert_unauthorized(
        &get_from(&gw, allowed, "app.test", "/", &[]).await,
        "allowed, no token",
    );
    let reply = get_from(
        &gw,
        allowed,
        "app.test",
        "/",
        &[("authorization", &bearer(&valid))],
    )
    .await;
    assert_passed(&reply, "app", "allowed, valid token");
    assert_eq!(reply.echoed("x-user"), ["alice"]);
    let fetched = server.hits();
    assert_eq!(fetched, 1, "the first verified token fetches the set once");

    // Once the set is there, a denied client's unknown kid still fetches
    // nothing, while the same token from an allowed client does (the early
    // refresh), which shows the denied one never reached jwtAuth.
    assert_forbidden(
        &get_from(
            &gw,
            denied,
            "app.test",
            "/",
            &[("authorization", &bearer(&unknown_kid))],
        )
        .await,
        "denied, unknown kid, keys loaded",
    );
    assert_eq!(
        server.hits(),
        fetched,
        "a denied client's kid was looked up"
    );
    assert_unauthorized(
        &get_from(
            &gw,
            allowed,
            "app.test",
            "/",
            &[("authorization", &bearer(&unknown_kid))],
        )
        .await,
        "allowed, unknown kid",
    );
    assert_eq!(
        server.hits(),
        fetched + 1,
        "an allowed client's unknown kid triggers one early refresh"
    );

    assert_eq!(
        echo.recorded().await.len(),
        1,
        "only the allowed, authenticated request reached the backend"
    );
}

// ---------------------------------------------------------------------------
// 2. rateLimit keyed by a verified claim

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_keyed_by_a_claim_sees_the_verified_claim() {
    let key = Signer::es256();
    let echo = record("api");
    let documents = [
        manifests::gateway(),
        manifests::service("default", "svc", &[echo.port()]),
        manifests::route_with_rules("api", "api.test", &rule("all", None, &["per-user"], "svc")),
        // jwtAuth on the route by targetRef, rateLimit on its rule by
        // ExtensionRef: the rule level does not make the limit run first.
        filter(
            "route-jwt",
            "JWTAuth",
            json!({
                "targetRefs": [target_route("api", None)],
                "jwtAuth": jwt_auth(ISSUER, &jwks(&[key.jwk("k1")]), json!({})),
            }),
        ),
        filter(
            "per-user",
            "RateLimit",
            json!({
                "order": -1000,
                "rateLimit": {"requests": 1, "period": "1m", "burst": 2, "key": {"type": "Claim", "name": "sub"}},
            }),
        ),
    ];
    let gw = start(&documents).await;
    let client = HttpClient::new();
    let token = |sub: &str| bearer(&key.token(Some("k1"), &claims(sub)));
    let statuses = |sub: &'static str, extra: &'static [(&'static str, &'static str)]| {
        let (client, gw, auth) = (&client, &gw, token(sub));
        async move {
            let mut headers = vec![("authorization", auth.as_str())];
            headers.extend_from_slice(extra);
            let mut out = Vec::new();
            for _ in 0..3 {
                out.push(get(client, gw, "api.test", "/", &headers).await.status);
            }
            out
        }
    };

    assert_eq!(statuses("alice", &[]).await, [200, 200, 429], "alice");
    assert_eq!(statuses("bob", &[]).await, [200, 200, 429], "bob");

    // A forged token claiming carol is refused before the limit sees it:
    // carol's bucket stays full.
    let forged = bearer(&Signer::es256().token(Some("k1"), &claims("carol")));
    for i in 0..4 {
        let reply = get(&client, &gw, "api.test", "/", &[("authorization", &forged)]).await;
        assert_unauthorized(&reply, &format!("forged carol #{i}"));
        assert_eq!(
            reply.header("ratelimit-remaining"),
            None,
            "the limit ran for a forged token"
        );
    }
    assert_eq!(statuses("carol", &[]).await, [200, 200, 429], "carol");

    // Without a token: 401, never the shared "no claim" bucket.
    for _ in 0..3 {
        let reply = get(&client, &gw, "api.test", "/", &[("x-user", "dave")]).await;
        assert_unauthorized(&reply, "no token");
    }

    // Headers the client sends cannot choose the bucket: dave spoofing
    // alice (whose bucket is empty) is still counted as dave, and alice
    // spoofing a fresh name is still alice.
    let spoof: &[(&str, &str)] = &[("x-user", "alice"), ("x-sub", "alice"), ("sub", "alice")];
    let reply = get(
        &client,
        &gw,
        "api.test",
        "/",
        &[
            [("authorization", token("dave").as_str())].as_slice(),
            spoof,
        ]
        .concat(),
    )
    .await;
    assert_passed(&reply, "api", "dave posing as alice");
    assert_eq!(reply.echoed("x-user"), ["dave"], "{}", reply.text());
    assert_eq!(reply.header("ratelimit-remaining"), Some("1"));
    assert_eq!(
        statuses("dave", &[("x-user", "zed")]).await,
        [200, 429, 429],
        "dave's second and third requests"
    );
    assert_eq!(
        statuses("alice", &[("x-user", "fresh"), ("x-sub", "fresh")]).await,
        [429, 429, 429],
        "alice posing as someone new"
    );
    assert_eq!(
        statuses("erin", &[("x-user", "alice")]).await,
        [200, 200, 429]
    );
}

// ---------------------------------------------------------------------------
// 3. rateLimit by client address after authentication

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_keyed_by_client_ip_runs_after_authentication() {
    let key = Signer::es256();
    let echo = record("app");
    // The limit is on the whole Gateway, jwtAuth only on the rule: the
    // phases, not the levels, set the order.
    let documents = [
        manifests::gateway(),
        manifests::service("default", "svc", &[echo.port()]),
        manifests::route_with_rules("app", "app.test", &rule("all", None, &["rule-jwt"], "svc")),
        filter(
            "rule-jwt",
            "JWTAuth",
            json!({"order": 1000, "jwtAuth": jwt_auth(ISSUER, &jwks(&[key.jwk("k1")]), json!({}))}),
        ),
        filter(
            "gw-per-ip",
            "RateLimit",
            json!({
                "order": -1000,
                "targetRefs": [target_gateway(None)],
                "rateLimit": {"requests": 1, "period": "1m", "burst": 2, "key": {"type": "ClientIP"}},
            }),
        ),
    ];
    let gw = start(&documents).await;
    let client_a = v4(127, 223, 0, 1);
    let client_b = v4(127, 223, 0, 2);
    let valid = bearer(&key.token(Some("k1"), &claims("alice")));
    let forged = bearer(&Signer::es256().token(Some("k1"), &claims("alice")));

    for i in 0..5 {
        let reply = get_from(&gw, client_a, "app.test", "/", &[]).await;
        assert_unauthorized(&reply, &format!("no token #{i}"));
        assert_eq!(
            reply.header("ratelimit-remaining"),
            None,
            "the limit ran for an unauthenticated request"
        );
    }
    for i in 0..2 {
        let reply = get_from(
            &gw,
            client_a,
            "app.test",
            "/",
            &[("authorization", &forged)],
        )
        .await;
        assert_unauthorized(&reply, &format!("forged token #{i}"));
    }

    let mut statuses = Vec::new();
    for _ in 0..3 {
        let reply = get_from(&gw, client_a, "app.test", "/", &[("authorization", &valid)]).await;
        statuses.push(reply.status);
        if reply.status == 200 {
            assert_eq!(reply.backend(), Some("app"));
            assert_eq!(reply.header("ratelimit-limit"), Some("2"));
        }
    }
    assert_eq!(
        statuses,
        [200, 200, 429],
        "unauthenticated requests consumed the bucket"
    );

    // An exhausted client without a token still meets jwtAuth first.
    assert_unauthorized(
        &get_from(&gw, client_a, "app.test", "/", &[]).await,
        "no token, bucket empty",
    );
    // Another address has its own bucket.
    let reply = get_from(&gw, client_b, "app.test", "/", &[("authorization", &valid)]).await;
    assert_passed(&reply, "app", "second client");
    assert_eq!(echo.recorded().await.len(), 3);
}

// ---------------------------------------------------------------------------
// 4. A rule's jwtAuth replaces the Gateway's

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_level_jwt_auth_overrides_the_gateways() {
    const ISSUER_A: &str = "https://a.example";
    const ISSUER_B: &str = "https://b.example";
    let (key_a, key_b) = (Signer::es256(), Signer::es256());
    let (open, guarded, other) = (record("open"), record("guarded"), record("other"));
    let mixed_rules = format!(
        "{}{}",
        rule("optional", Some("/optional"), &["issuer-b"], "svc-open"),
        rule("rest", None, &[], "svc-guarded"),
    );
    let documents = [
        manifests::gateway(),
        manifests::service("default", "svc-open", &[open.port()]),
        manifests::service("default", "svc-guarded", &[guarded.port()]),
        manifests::service("default", "svc-other", &[other.port()]),
        manifests::route_with_rules("mixed", "mixed.test", &mixed_rules),
        manifests::route_with_rules("plain", "plain.test", &rule("all", None, &[], "svc-other")),
        filter(
            "issuer-a",
            "JWTAuth",
            json!({
                "targetRefs": [target_gateway(None)],
                "jwtAuth": jwt_auth(ISSUER_A, &jwks(&[key_a.jwk("a1")]), json!({})),
            }),
        ),
        filter(
            "issuer-b",
            "JWTAuth",
            json!({"jwtAuth": jwt_auth(ISSUER_B, &jwks(&[key_b.jwk("b1")]), json!({"required": false}))}),
        ),
    ];
    let gw = start(&documents).await;
    let client = HttpClient::new();
    let from_a = bearer(&key_a.token(Some("a1"), &claims_from(ISSUER_A, "alice")));
    let from_b = bearer(&key_b.token(Some("b1"), &claims_from(ISSUER_B, "bob")));
    let send = |host: &'static str, path: &'static str, auth: Option<&str>| {
        let (client, gw) = (&client, &gw);
        let auth = auth.map(str::to_owned);
        async move {
            let headers: Vec<(&str, &str)> = auth
                .as_deref()
                .map(|a| vec![("authorization", a)])
                .unwrap_or_default();
            get(client, gw, host, path, &headers).await
        }
    };

    // The rule with its own, optional, jwtAuth for issuer B.
    let reply = send("mixed.test", "/optional", None).await;
    assert_passed(&reply, "open", "rule B, no token");
    assert!(reply.echoed("x-user").is_empty(), "{}", reply.text());
    let reply = send("mixed.test", "/optional/x", Some(&from_b)).await;
    assert_passed(&reply, "open", "rule B, B's token");
    assert_eq!(reply.echoed("x-user"), ["bob"]);
    assert_unauthorized(
        &send("mixed.test", "/optional", Some(&from_a)).await,
        "rule B, A's token",
    );

    // The route's other rule and another route keep the Gateway's.
    for (host, path, backend) in [
        ("mixed.test", "/", "guarded"),
        ("plain.test", "/optional", "other"),
    ] {
        assert_unauthorized(
            &send(host, path, None).await,
            &format!("{host}{path}, no token"),
        );
        assert_unauthorized(
            &send(host, path, Some(&from_b)).await,
            &format!("{host}{path}, B's token"),
        );
        let reply = send(host, path, Some(&from_a)).await;
        assert_passed(&reply, backend, &format!("{host}{path}, A's token"));
        assert_eq!(reply.echoed("x-user"), ["alice"]);
    }

    let status = filter_status(&gw, "issuer-a").await;
    let accepted = condition(&status["conditions"], "Accepted");
    assert_eq!(accepted["status"], "True", "{status}");
    let overridden = condition(&status["conditions"], "Overridden");
    assert_eq!(
        (overridden["status"].as_str(), overridden["reason"].as_str()),
        (Some("True"), Some("MoreSpecificFilter")),
        "{status}"
    );
    let message = overridden["message"].as_str().unwrap_or_default();
    assert!(message.contains("default/issuer-b"), "{message}");

    let status = filter_status(&gw, "issuer-b").await;
    let overridden = condition(&status["conditions"], "Overridden");
    assert_eq!(overridden["status"], "False", "{status}");
}

// ---------------------------------------------------------------------------
// 5. explain and /debug/chains against traffic

/// One step of a chain: (phase, filter, type).
type Step = (String, String, String);

/// What `gatehouse-controller explain` says about one request.
#[derive(Debug)]
struct Explained {
    listener: String,
    rule: String,
    /// (phase, filter, type) in run order.
    chain: Vec<Step>,
}

impl Explained {
    fn parse(text: &str) -> Explained {
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|rest| rest.trim().to_owned())
                .unwrap_or_else(|| panic!("no {name:?} line in:\n{text}"))
        };
        let mut chain = Vec::new();
        let mut lines = text.lines().skip_while(|l| *l != "chain:");
        if lines.next().is_some() {
            for line in lines.take_while(|l| l.starts_with("  ")) {
                chain.push(parse_step(line).unwrap_or_else(|| panic!("chain line {line:?}")));
            }
        }
        Explained {
            listener: field("listener:"),
            rule: field("rule:"),
            chain,
        }
    }

    /// The rule's name: the section of "HTTPRoute ns/name section rule".
    fn rule_name(&self) -> Option<&str> {
        self.rule.split_once(" section ").map(|(_, rule)| rule)
    }

    fn last_type(&self) -> Option<&str> {
        self.chain.last().map(|(_, _, kind)| kind.as_str())
    }
}

/// `  N. [phase] Filter ns/name (Type)`.
fn parse_step(line: &str) -> Option<Step> {
    let (_, rest) = line.trim().split_once(". [")?;
    let (phase, rest) = rest.split_once("] ")?;
    let (filter, kind) = rest.rsplit_once(" (")?;
    Some((
        phase.to_owned(),
        filter.to_owned(),
        kind.strip_suffix(')')?.to_owned(),
    ))
}

async fn explain(dir: &std::path::Path, request: &str, headers: &[&str]) -> Explained {
    let mut command = tokio::process::Command::new(gatehouse_e2e::bin("gatehouse-controller"));
    command
        .arg("explain")
        .arg("--dir")
        .arg(dir)
        .args(["--request", request]);
    for h in headers {
        command.args(["-H", h]);
    }
    let output = command.output().await.expect("running explain");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "explain {request}: {}\n{text}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Explained::parse(&text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_matches_what_traffic_gets() {
    let backends: Vec<(&str, Echo)> = ["api", "beta", "admin", "old", "main"]
        .into_iter()
        .map(|name| (name, Echo::start(name)))
        .collect();
    let shop_rules = [
        rule("api", Some("/api"), &["api-limit"], "svc-api"),
        // Same path, plus a header: more specific, so it wins when the
        // header is there.
        String::from(
            "  - name: beta\n    matches: [{path: {type: PathPrefix, value: /api}, headers: [{name: x-beta, value: \"1\"}]}]\n    backendRefs: [{name: svc-beta, port: 80}]\n",
        ),
        rule("admin", Some("/admin"), &[], "svc-admin"),
        rule("old", Some("/old"), &[], "svc-old"),
        rule("main", None, &[], "svc-main"),
    ]
    .concat();
    let admin_ok = v4(127, 225, 0, 10);
    let admin_denied = v4(127, 225, 0, 9);
    let mut documents = vec![manifests::gateway()];
    for (name, echo) in &backends {
        documents.push(manifests::service(
            "default",
            &format!("svc-{name}"),
            &[echo.port()],
        ));
    }
    documents.extend([
        manifests::route_with_rules("shop", "shop.test", &shop_rules),
        filter(
            "limits",
            "RequestLimits",
            json!({"targetRefs": [target_gateway(None)], "requestLimits": {"maxHeaderCount": 50}}),
        ),
        filter(
            "api-limit",
            "RateLimit",
            json!({"rateLimit": {"requests": 1000, "period": "1m", "key": {"type": "Route"}}}),
        ),
        filter(
            "admins-only",
            "IPAccess",
            json!({
                "targetRefs": [target_route("shop", Some("admin"))],
                "ipAccess": {"allow": ["127.225.0.10/32"]},
            }),
        ),
        filter(
            "gone",
            "StaticResponse",
            json!({
                "targetRefs": [target_route("shop", Some("old"))],
                "staticResponse": {"statusCode": 410, "body": "gone"},
            }),
        ),
    ]);
    let gw = start(&documents).await;
    let dir = gw.dir.path().to_path_buf();

    let step = |phase: &str, name: &str, kind: &str| {
        (
            phase.to_owned(),
            format!("Filter default/{name}"),
            kind.to_owned(),
        )
    };
    let limits = step("request-limits", "limits", "RequestLimits");
    // (path, explain headers, expected rule, expected chain)
    type Case<'a> = (&'a str, &'a [&'a str], &'a str, Vec<Step>);
    let cases: Vec<Case> = vec![
        (
            "/api/items",
            &[],
            "api",
            vec![limits.clone(), step("rate-limit", "api-limit", "RateLimit")],
        ),
        ("/api/items", &["x-beta: 1"], "beta", vec![limits.clone()]),
        (
            "/admin/users",
            &[],
            "admin",
            vec![limits.clone(), step("ip-access", "admins-only", "IPAccess")],
        ),
        (
            "/old/page",
            &[],
            "old",
            vec![
                limits.clone(),
                step("static-response", "gone", "StaticResponse"),
            ],
        ),
        ("/", &[], "main", vec![limits.clone()]),
    ];

    let chains_url = format!("http://{}/debug/chains", gw.admin);
    let chains = HttpClient::new()
        .get(&chains_url, None)
        .await
        .expect("debug/chains");
    assert_eq!(chains.status, 200, "{}", chains.text());
    let chains: Value = serde_json::from_slice(&chains.body).expect("debug/chains is JSON");
    let entries: Vec<&Value> = chains
        .as_object()
        .expect("debug/chains is an object of groups")
        .values()
        .flat_map(|group| group.as_array().expect("a group is an array"))
        .collect();

    for (path, headers, rule, chain) in &cases {
        let request = format!("GET http://shop.test:80{path}");
        let explained = explain(&dir, &request, headers).await;
        let case = format!("{request} {headers:?}");
        assert_eq!(
            explained.listener, "Gateway default/gw section http",
            "{case}"
        );
        assert!(
            explained.rule.starts_with("HTTPRoute default/shop"),
            "{case}: {explained:?}"
        );
        assert_eq!(explained.rule_name(), Some(*rule), "{case}: {explained:?}");
        assert_eq!(&explained.chain, chain, "{case}");

        // What traffic gets, from an address the admin rule does not allow
        // and then from one it does.
        let header_pairs: Vec<(&str, &str)> = headers
            .iter()
            .map(|h| {
                h.split_once(':')
                    .map(|(n, v)| (n.trim(), v.trim()))
                    .unwrap()
            })
            .collect();
        let refused = get_from(&gw, admin_denied, "shop.test", path, &header_pairs).await;
        let allowed = get_from(&gw, admin_ok, "shop.test", path, &header_pairs).await;
        let rule_name = explained.rule_name().expect("a rule");
        let has_ip_access = explained.chain.iter().any(|(_, _, t)| t == "IPAccess");
        match explained.last_type() {
            Some("StaticResponse") => {
                for reply in [&refused, &allowed] {
                    assert_eq!(
                        (reply.status, reply.text().as_str()),
                        (410, "gone"),
                        "{case}"
                    );
                    assert_eq!(reply.backend(), None, "{case}");
                }
            }
            _ if has_ip_access => {
                assert_eq!(refused.status, 403, "{case}: {}", refused.text());
                assert_eq!(refused.backend(), None, "{case}");
                assert_passed(&allowed, rule_name, &case);
            }
            _ => {
                // Distinct backends per rule: the answering backend names
                // the rule that took the request.
                assert_passed(&refused, rule_name, &case);
                assert_passed(&allowed, rule_name, &case);
            }
        }

        // /debug/chains lists the same chain for that rule.
        let rule_text = format!("HTTPRoute default/shop section {rule_name}");
        let listed = entries
            .iter()
            .filter(|e| e["rule"] == rule_text.as_str())
            .collect::<Vec<_>>();
        assert!(!listed.is_empty(), "{rule_text} not in {chains}");
        for entry in listed {
            let steps: Vec<Step> = entry["chain"]
                .as_array()
                .unwrap_or_else(|| panic!("no chain in {entry}"))
                .iter()
                .map(|s| {
                    (
                        s["phase"].as_str().unwrap_or_default().to_owned(),
                        s["filter"].as_str().unwrap_or_default().to_owned(),
                        s["type"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect();
            assert_eq!(&steps, chain, "/debug/chains for {rule_text}");
        }
    }

    // A host no route serves: 404 after the listener's own chain.
    let explained = explain(&dir, "GET http://nowhere.test:80/", &[]).await;
    assert_eq!(explained.rule, "none matches: 404", "{explained:?}");
    assert_eq!(explained.chain, [limits]);
    let reply = get_from(&gw, admin_ok, "nowhere.test", "/", &[]).await;
    assert_eq!(reply.status, 404, "{}", reply.text());
    let unrouted: Vec<&&Value> = entries
        .iter()
        .filter(|e| e["rule"] == "(no matching route)")
        .collect();
    assert_eq!(unrouted.len(), 1, "{chains}");
    assert_eq!(unrouted[0]["chain"][0]["filter"], "Filter default/limits");

    // The request limit is real: over 50 headers gets 431 on every rule.
    let many: Vec<(String, String)> = (0..60).map(|i| (format!("x-h{i}"), "v".into())).collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    let reply = get_from(&gw, admin_ok, "shop.test", "/old", &many).await;
    assert_eq!(reply.status, 431, "{}", reply.text());
}
