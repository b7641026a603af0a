//! HTTPRoute filters and timeouts end to end: what the echo backend saw
//! (path, host, headers) and what the client got (status, headers,
//! `Location`), through a standalone controller and its data plane.

use std::time::{Duration, Instant};

use gatehouse_e2e::{ClosedPort, Echo, HttpClient, Request, Standalone, echoed_header, manifests};

fn route(name: &str, host: &str, rules: &str) -> String {
    manifests::route_with_rules(name, host, rules)
}

async fn start(backends: &[(&str, &Echo)], routes: &[String]) -> Standalone {
    let mut manifests = vec![manifests::gateway()];
    for (service, echo) in backends {
        manifests.push(manifests::service("default", service, &[echo.port()]));
    }
    manifests.extend(routes.iter().cloned());
    Standalone::start(&[("all.yaml", manifests.join("---\n"))]).await
}

fn header<'a>(reply: &'a gatehouse_e2e::Reply, name: &str) -> Vec<&'a str> {
    reply
        .headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap_or_default())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_and_response_headers_are_modified() {
    let a = Echo::start("a");
    let rules = r#"  - filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{name: X-Header-Set, value: set-overwrites-values}]
        add: [{name: X-Header-Add, value: add-appends-values}]
        remove: [X-Header-Remove]
    - type: ResponseHeaderModifier
      responseHeaderModifier:
        set: [{name: Content-Type, value: text/x-gatehouse}]
        add: [{name: X-Response-Add, value: added}]
        remove: [X-Echo-Name]
    backendRefs: [{name: svc-a, port: 80}]
"#;
    let gw = start(&[("svc-a", &a)], &[route("headers", "headers.test", rules)]).await;
    let client = HttpClient::new();
    let reply = client
        .send(
            Request::get(&gw.url(80, "/"))
                .host(Some("headers.test"))
                // Header names in any case: the filter's are case-insensitive.
                .header("x-header-set", "original")
                .header("X-HEADER-ADD", "header-val")
                .header("x-header-remove", "secret")
                .header("x-other", "kept"),
        )
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    let echo = reply.echo();
    assert_eq!(
        echoed_header(&echo, "x-header-set"),
        ["set-overwrites-values"]
    );
    assert_eq!(
        echoed_header(&echo, "x-header-add"),
        ["header-val", "add-appends-values"]
    );
    assert!(echoed_header(&echo, "x-header-remove").is_empty(), "{echo}");
    assert_eq!(echoed_header(&echo, "x-other"), ["kept"]);
    assert_eq!(header(&reply, "content-type"), ["text/x-gatehouse"]);
    assert_eq!(header(&reply, "x-response-add"), ["added"]);
    assert!(header(&reply, "x-echo-name").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_filters_apply_only_to_their_backend() {
    let (a, b) = (Echo::start("a"), Echo::start("b"));
    let rules = r#"  - backendRefs:
    - name: svc-a
      port: 80
      filters:
      - type: RequestHeaderModifier
        requestHeaderModifier: {set: [{name: X-Backend, value: a}]}
      - type: ResponseHeaderModifier
        responseHeaderModifier: {add: [{name: X-Served-By, value: a}]}
    - name: svc-b
      port: 80
      filters:
      - type: RequestHeaderModifier
        requestHeaderModifier: {set: [{name: X-Backend, value: b}]}
"#;
    let gw = start(
        &[("svc-a", &a), ("svc-b", &b)],
        &[route("per-backend", "backends.test", rules)],
    )
    .await;
    let client = HttpClient::new();
    let mut served = std::collections::BTreeSet::new();
    for _ in 0..40 {
        let reply = client
            .get(&gw.url(80, "/"), Some("backends.test"))
            .await
            .unwrap();
        let backend = reply.backend().unwrap().to_owned();
        assert_eq!(
            echoed_header(&reply.echo(), "x-backend"),
            [backend.as_str()]
        );
        let expected: &[&str] = if backend == "a" { &["a"] } else { &[] };
        assert_eq!(header(&reply, "x-served-by"), expected);
        served.insert(backend);
    }
    assert_eq!(served.len(), 2, "both backends served: {served:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_build_location_from_the_spec_rules() {
    let redirect = |prefix: &str, spec: &str| {
        format!(
            "  - matches: [{{path: {{type: PathPrefix, value: {prefix}}}}}]\n    filters:\n    - type: RequestRedirect\n      requestRedirect: {spec}\n"
        )
    };
    let rules = [
        redirect("/original-prefix", "{path: {type: ReplacePrefixMatch, replacePrefixMatch: /replacement-prefix}}"),
        redirect("/full", "{path: {type: ReplaceFullPath, replaceFullPath: /full-path-replacement}, statusCode: 301}"),
        redirect("/host", "{hostname: example.org}"),
        redirect("/port-8080", "{hostname: example.org, port: 8080}"),
        redirect("/https", "{scheme: https, hostname: example.org}"),
        redirect("/https-8443", "{scheme: https, port: 8443, hostname: example.org, statusCode: 308}"),
        redirect("/see-other", "{statusCode: 303}"),
        redirect("/temporary", "{statusCode: 307}"),
    ]
    .concat();
    let gw = start(&[], &[route("redirects", "redirect.test", &rules)]).await;
    let client = HttpClient::new();
    let cases = [
        (
            "/original-prefix/lemon?x=1",
            302,
            "http://redirect.test/replacement-prefix/lemon?x=1",
        ),
        (
            "/original-prefix",
            302,
            "http://redirect.test/replacement-prefix",
        ),
        (
            "/full/path/original",
            301,
            "http://redirect.test/full-path-replacement",
        ),
        ("/host/a", 302, "http://example.org/host/a"),
        ("/port-8080", 302, "http://example.org:8080/port-8080"),
        ("/https", 302, "https://example.org/https"),
        ("/https-8443", 308, "https://example.org:8443/https-8443"),
        ("/see-other", 303, "http://redirect.test/see-other"),
        ("/temporary", 307, "http://redirect.test/temporary"),
    ];
    for (path, status, location) in cases {
        // The Host's port (the bound one) never leaks: the listener's
        // logical port 80 is the default for http and is left out.
        let reply = client
            .get(&gw.url(80, path), Some("Redirect.Test:20080"))
            .await
            .unwrap();
        assert_eq!(reply.status, status, "{path}: {}", reply.text());
        assert_eq!(header(&reply, "location"), [location], "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_rewrite_changes_what_the_backend_sees() {
    let a = Echo::start("a");
    let rewrite = |prefix: &str, spec: &str| {
        format!(
            "  - matches: [{{path: {{type: PathPrefix, value: {prefix}}}}}]\n    filters:\n    - type: URLRewrite\n      urlRewrite: {spec}\n    backendRefs: [{{name: svc-a, port: 80}}]\n"
        )
    };
    let rules = [
        rewrite(
            "/prefix/one",
            "{path: {type: ReplacePrefixMatch, replacePrefixMatch: /one}}",
        ),
        rewrite(
            "/strip-prefix",
            "{path: {type: ReplacePrefixMatch, replacePrefixMatch: /}}",
        ),
        rewrite(
            "/full/one",
            "{path: {type: ReplaceFullPath, replaceFullPath: /one}}",
        ),
        rewrite("/host", "{hostname: rewritten.example}"),
        rewrite(
            "/both",
            "{hostname: both.example, path: {type: ReplacePrefixMatch, replacePrefixMatch: /new/}}",
        ),
    ]
    .concat();
    let gw = start(
        &[("svc-a", &a)],
        &[route("rewrites", "rewrite.test", &rules)],
    )
    .await;
    let client = HttpClient::new();
    let cases = [
        ("/prefix/one/two", "/one/two", "", "rewrite.test"),
        ("/strip-prefix/three", "/three", "", "rewrite.test"),
        ("/strip-prefix", "/", "", "rewrite.test"),
        ("/full/one/two?q=1", "/one", "q=1", "rewrite.test"),
        ("/host/x", "/host/x", "", "rewritten.example"),
        ("/both/", "/new/", "", "both.example"),
        (
            "/both/deeper/path?a=b",
            "/new/deeper/path",
            "a=b",
            "both.example",
        ),
    ];
    for (path, backend_path, query, host) in cases {
        let reply = client
            .get(&gw.url(80, path), Some("rewrite.test"))
            .await
            .unwrap();
        assert_eq!(reply.status, 200, "{path}: {}", reply.text());
        let echo = reply.echo();
        assert_eq!(echo["path"], backend_path, "{path}");
        assert_eq!(echo["query"], query, "{path}");
        assert_eq!(echo["host"], host, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_answer_504_in_time() {
    let a = Echo::start("a");
    let rules = r#"  - matches: [{path: {type: PathPrefix, value: /request}}]
    timeouts: {request: 300ms}
    backendRefs: [{name: svc-a, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /backend}}]
    timeouts: {request: 5s, backendRequest: 300ms}
    backendRefs: [{name: svc-a, port: 80}]
"#;
    let gw = start(
        &[("svc-a", &a)],
        &[route("timeouts", "timeouts.test", rules)],
    )
    .await;
    let client = HttpClient::new();
    for path in ["/request", "/backend"] {
        let slow = Request::get(&gw.url(80, path))
            .host(Some("timeouts.test"))
            .header("x-echo-delay-ms", "3000");
        let started = Instant::now();
        let reply = client.send(slow).await.unwrap();
        let took = started.elapsed();
        assert_eq!(reply.status, 504, "{path}: {}", reply.text());
        assert!(
            took >= Duration::from_millis(300) && took < Duration::from_millis(2500),
            "{path}: answered after {took:?}"
        );
        let fast = Request::get(&gw.url(80, path))
            .host(Some("timeouts.test"))
            .header("x-echo-delay-ms", "20");
        assert_eq!(client.send(fast).await.unwrap().status, 200, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_filter_answers_500_and_says_why() {
    let a = Echo::start("a");
    let rules = r#"  - matches: [{path: {type: Exact, value: /bad}}]
    filters:
    - type: URLRewrite
      urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /x}}
    backendRefs: [{name: svc-a, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /good}}]
    backendRefs: [{name: svc-a, port: 80}]
"#;
    let gw = start(&[("svc-a", &a)], &[route("partly", "invalid.test", rules)]).await;
    let client = HttpClient::new();
    let bad = client
        .get(&gw.url(80, "/bad"), Some("invalid.test"))
        .await
        .unwrap();
    assert_eq!(bad.status, 500);
    let good = client
        .get(&gw.url(80, "/good"), Some("invalid.test"))
        .await
        .unwrap();
    assert_eq!(good.status, 200);
    let status = gw.status_of("HTTPRoute", "default/partly").await.unwrap();
    let conditions = &status["status"]["parents"][0]["conditions"];
    let partially = conditions
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "PartiallyInvalid")
        .unwrap_or_else(|| panic!("no PartiallyInvalid in {conditions}"));
    assert_eq!(partially["status"], "True");
    let message = partially["message"].as_str().unwrap();
    assert!(
        message.contains("spec.rules[0].filters[0].urlRewrite.path")
            && message.contains("ReplacePrefixMatch"),
        "{message}"
    );
}

fn mirror_rules(mirrors: &str) -> String {
    format!("  - filters:\n{mirrors}    backendRefs: [{{name: svc-a, port: 80}}]\n")
}

fn mirror_to(service: &str, extra: &str) -> String {
    format!(
        "    - type: RequestMirror\n      requestMirror: {{backendRef: {{name: {service}, port: 80}}{extra}}}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirrors_receive_a_copy_with_its_body() {
    let a = Echo::start("a");
    let m1 = Echo::start_with("m1", "127.0.0.1:0".parse().unwrap(), &["--record"]);
    let m2 = Echo::start_with("m2", "127.0.0.1:0".parse().unwrap(), &["--record"]);
    let rules = mirror_rules(&[mirror_to("svc-m1", ""), mirror_to("svc-m2", "")].concat());
    let gw = start(
        &[("svc-a", &a), ("svc-m1", &m1), ("svc-m2", &m2)],
        &[route("mirrored", "mirror.test", &rules)],
    )
    .await;
    let client = HttpClient::new();
    let body = vec![b'x'; 300_000];
    let mut post = Request::method("POST", &gw.url(80, "/upload?id=7"))
        .host(Some("mirror.test"))
        .header("x-trace", "t-1");
    post.body = body.clone();
    let reply = client.send(post).await.unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.backend(),
        Some("a"),
        "the client gets the backend's answer"
    );
    assert_eq!(reply.echo()["body_len"], body.len());
    for mirror in [&m1, &m2] {
        let seen = gatehouse_e2e::eventually(Duration::from_secs(10), || async {
            match mirror.recorded().await.as_slice() {
                [one] => Ok(one.clone()),
                other => anyhow::bail!("mirror saw {} requests", other.len()),
            }
        })
        .await;
        assert_eq!(seen["method"], "POST");
        assert_eq!(seen["path"], "/upload");
        assert_eq!(seen["query"], "id=7");
        assert_eq!(seen["host"], "mirror.test");
        assert_eq!(seen["body_len"], body.len());
        assert_eq!(seen["headers"]["x-trace"][0], "t-1");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_or_failing_mirror_never_slows_or_fails_the_client() {
    let a = Echo::start("a");
    let slow = Echo::start_with(
        "slow",
        "127.0.0.1:0".parse().unwrap(),
        &["--delay-ms", "5000", "--record"],
    );
    // Nothing listens on the failing mirror's port.
    let closed = ClosedPort::new();
    let mut manifests = vec![
        manifests::gateway(),
        manifests::service("default", "svc-a", &[a.port()]),
        manifests::service("default", "svc-slow", &[slow.port()]),
        manifests::service("default", "svc-down", &[closed.port]),
    ];
    let rules = mirror_rules(&[mirror_to("svc-slow", ""), mirror_to("svc-down", "")].concat());
    manifests.push(route("mirrored", "mirror.test", &rules));
    let gw = Standalone::start(&[("all.yaml", manifests.join("---\n"))]).await;
    let client = HttpClient::new();
    let started = Instant::now();
    for i in 0..20 {
        let mut post = Request::method("POST", &gw.url(80, "/")).host(Some("mirror.test"));
        post.body = vec![b'y'; 64 * 1024];
        let reply = client.send(post).await.unwrap();
        assert_eq!((i, reply.status, reply.backend()), (i, 200, Some("a")));
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "20 requests took {took:?} beside a mirror answering after 5 s"
    );
    // The slow mirror did receive them.
    let seen = gatehouse_e2e::eventually(Duration::from_secs(10), || async {
        let n = slow.recorded().await.len();
        if n == 20 {
            Ok(n)
        } else {
            anyhow::bail!("slow mirror saw {n}")
        }
    })
    .await;
    assert_eq!(seen, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_percentage_mirrors_its_share() {
    let a = Echo::start("a");
    let m = Echo::start_with("m", "127.0.0.1:0".parse().unwrap(), &["--record"]);
    let rules = mirror_rules(&mirror_to("svc-m", ", percent: 50"));
    let gw = start(
        &[("svc-a", &a), ("svc-m", &m)],
        &[route("half", "mirror.test", &rules)],
    )
    .await;
    let client = HttpClient::new();
    const N: usize = 400;
    for _ in 0..N {
        let reply = client
            .get(&gw.url(80, "/"), Some("mirror.test"))
            .await
            .unwrap();
        assert_eq!(reply.status, 200);
    }
    // Binomial(400, 0.5): mean 200, sd 10; 6 sd either side.
    let seen = gatehouse_e2e::eventually(Duration::from_secs(5), || async {
        let n = m.recorded().await.len();
        // Mirrors finish after the client's answer: wait until the count
        // stops moving.
        tokio::time::sleep(Duration::from_millis(200)).await;
        if m.recorded().await.len() == n {
            Ok(n)
        } else {
            anyhow::bail!("still arriving")
        }
    })
    .await;
    assert!((140..=260).contains(&seen), "mirrored {seen} of {N} at 50%");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_answers_preflights_and_decorates_allowed_requests() {
    let a = Echo::start("a");
    let cors = |prefix: &str, spec: &str| {
        format!(
            "  - matches: [{{path: {{type: PathPrefix, value: {prefix}}}}}]\n    filters:\n    - type: CORS\n      cors: {spec}\n    backendRefs: [{{name: svc-a, port: 80}}]\n"
        )
    };
    let rules = [
        // Only GET requests match this rule: its CORS filter still answers
        // their preflights (OPTIONS asking about GET).
        "  - matches: [{path: {type: PathPrefix, value: /get-only}, method: GET}]\n    filters:\n    - type: CORS\n      cors: {allowOrigins: [\"https://www.foo.com\"], allowMethods: [GET]}\n    backendRefs: [{name: svc-a, port: 80}]\n".to_owned(),
        cors(
            "/listed",
            r#"{allowOrigins: ["https://www.foo.com", "https://*.bar.com"], allowMethods: [GET, OPTIONS], allowHeaders: [x-header-1, x-header-2], exposeHeaders: [x-header-3], allowCredentials: true, maxAge: 3600}"#,
        ),
        cors(
            "/wildcards",
            r#"{allowOrigins: ["*"], allowMethods: ["*"], allowHeaders: ["*"]}"#,
        ),
    ]
    .concat();
    let gw = start(&[("svc-a", &a)], &[route("cors", "cors.test", &rules)]).await;
    let client = HttpClient::new();
    let send = |method: &str, path: &str, headers: &[(&str, &str)]| {
        let mut request = Request::method(method, &gw.url(80, path)).host(Some("cors.test"));
        for (name, value) in headers {
            request = request.header(name, value);
        }
        client.send(request)
    };
    let preflight = [
        ("access-control-request-method", "GET"),
        ("access-control-request-headers", "x-header-1"),
    ];
    for origin in [
        "https://www.foo.com",
        "https://www.bar.com",
        "https://a.b.bar.com",
    ] {
        let headers = [&[("origin", origin)][..], &preflight[..]].concat();
        let reply = send("OPTIONS", "/listed", &headers).await.unwrap();
        assert_eq!(reply.status, 200, "{origin}");
        assert!(reply.backend().is_none(), "a preflight is not forwarded");
        assert_eq!(header(&reply, "access-control-allow-origin"), [origin]);
        assert_eq!(
            header(&reply, "access-control-allow-methods"),
            ["GET, OPTIONS"]
        );
        assert_eq!(
            header(&reply, "access-control-allow-headers"),
            ["x-header-1, x-header-2"]
        );
        assert_eq!(
            header(&reply, "access-control-expose-headers"),
            ["x-header-3"]
        );
        assert_eq!(header(&reply, "access-control-max-age"), ["3600"]);
        assert_eq!(header(&reply, "access-control-allow-credentials"), ["true"]);
    }
    // An origin that is not allowed: answered, without CORS headers.
    let headers = [&[("origin", "https://foobar.com")][..], &preflight[..]].concat();
    let refused = send("OPTIONS", "/listed", &headers).await.unwrap();
    assert!(refused.backend().is_none());
    assert!(header(&refused, "access-control-allow-origin").is_empty());
    // Actual requests reach the backend; only allowed origins get headers.
    let allowed = send("GET", "/listed", &[("origin", "https://www.foo.com")])
        .await
        .unwrap();
    assert_eq!(allowed.backend(), Some("a"));
    assert_eq!(
        header(&allowed, "access-control-allow-origin"),
        ["https://www.foo.com"]
    );
    assert_eq!(
        header(&allowed, "access-control-allow-credentials"),
        ["true"]
    );
    assert_eq!(
        header(&allowed, "access-control-expose-headers"),
        ["x-header-3"]
    );
    let other = send("GET", "/listed", &[("origin", "https://foobar.com")])
        .await
        .unwrap();
    assert_eq!(other.backend(), Some("a"));
    assert!(header(&other, "access-control-allow-origin").is_empty());
    // Wildcards: the requested method and headers are allowed, the origin is
    // echoed, and there are no credentials.
    let reply = send(
        "OPTIONS",
        "/wildcards",
        &[
            ("origin", "https://foobar.com:12345"),
            ("access-control-request-method", "PUT"),
            ("access-control-request-headers", "x-a, x-b"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(
        header(&reply, "access-control-allow-origin"),
        ["https://foobar.com:12345"]
    );
    assert_eq!(header(&reply, "access-control-allow-methods"), ["PUT"]);
    assert_eq!(header(&reply, "access-control-allow-headers"), ["x-a, x-b"]);
    assert!(header(&reply, "access-control-allow-credentials").is_empty());
    // A plain OPTIONS without CORS headers is an ordinary request.
    let plain = send("OPTIONS", "/wildcards", &[]).await.unwrap();
    assert_eq!(plain.backend(), Some("a"));

    // The preflight of a GET to a GET-only rule is answered by its filter...
    let origin = ("origin", "https://www.foo.com");
    let asks = |method| [origin, ("access-control-request-method", method)];
    let reply = send("OPTIONS", "/get-only", &asks("GET")).await.unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(reply.backend().is_none(), "a preflight is not forwarded");
    assert_eq!(
        header(&reply, "access-control-allow-origin"),
        ["https://www.foo.com"]
    );
    assert_eq!(header(&reply, "access-control-allow-methods"), ["GET"]);
    // ...the GET itself is served with CORS headers...
    let get = send("GET", "/get-only", &[origin]).await.unwrap();
    assert_eq!(get.backend(), Some("a"));
    assert_eq!(
        header(&get, "access-control-allow-origin"),
        ["https://www.foo.com"]
    );
    // ...and a preflight for a method no rule takes finds no route.
    let reply = send("OPTIONS", "/get-only", &asks("DELETE")).await.unwrap();
    assert_eq!(reply.status, 404, "{}", reply.text());
}
