//! HTTPRoute retries (Gateway API `HTTPRouteRetry`, GEP-1731) end to end:
//! the echo backend fails the first requests of a `uuid` with a chosen
//! status (the conformance suite's `responseCode`/`succeedAfter` knobs) and
//! counts the requests it saw, so each test asserts both what the client got
//! and how many times the gateway asked.

use std::time::{Duration, Instant};

use gatehouse_e2e::{ClosedPort, Echo, HttpClient, Reply, Request, Standalone, manifests};

/// The retry routes of the conformance test HTTPRouteRetry, plus our own.
const RULES: &str = r#"  - matches: [{path: {type: PathPrefix, value: /retry/code-500-attempts-3}}]
    retry: {codes: [500], attempts: 3, backoff: 1ms}
    backendRefs: [{name: svc, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /retry/code-all-attempts-2}}]
    retry: {codes: [500, 502, 503, 504], attempts: 2, backoff: 1ms}
    backendRefs: [{name: svc, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /retry/slow-backoff}}]
    retry: {codes: [503], attempts: 2, backoff: 200ms}
    backendRefs: [{name: svc, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /retry/request-timeout}}]
    retry: {codes: [503], attempts: 5, backoff: 400ms}
    timeouts: {request: 1s}
    backendRefs: [{name: svc, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /retry/invalid}}]
    retry: {codes: [200]}
    backendRefs: [{name: svc, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /retry/budget}}]
    retry: {codes: [503], attempts: 10, backoff: 1ms}
    backendRefs: [{name: svc, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /no-retry}}]
    backendRefs: [{name: svc, port: 80}]
"#;

async fn start(service: String, rules: &str) -> Standalone {
    let manifests = [
        manifests::gateway(),
        service,
        manifests::route_with_rules("retries", "retry.test", rules),
    ];
    Standalone::start(&[("all.yaml", manifests.join("---\n"))]).await
}

/// One request through the gateway for `path` whose first `fail` requests
/// (per fresh uuid) the backend answers `code`. Returns the reply and the
/// uuid, so that [`seen`] can ask how many requests the backend got.
async fn simulate(gw: &Standalone, path: &str, code: u16, fail: u32) -> (Reply, String) {
    let uuid = format!("{:032x}", rand_id());
    let url = gw.url(
        80,
        &format!("{path}?responseCode={code}&succeedAfter={fail}&uuid={uuid}"),
    );
    let reply = HttpClient::new()
        .send(Request::get(&url).host(Some("retry.test")))
        .await
        .expect("a reply");
    (reply, uuid)
}

/// Requests the backend has seen for `uuid` so far (this probe excluded).
async fn seen(gw: &Standalone, uuid: &str) -> u64 {
    let url = gw.url(80, &format!("/no-retry?uuid={uuid}"));
    let reply = HttpClient::new()
        .send(Request::get(&url).host(Some("retry.test")))
        .await
        .expect("a reply");
    reply.echo()["attempt"].as_u64().expect("attempt") - 1
}

fn rand_id() -> u128 {
    use std::hash::{BuildHasher, RandomState};
    let state = RandomState::new();
    u128::from(state.hash_one(Instant::now())) << 64 | u128::from(state.hash_one(1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_follow_the_codes_and_attempts_of_the_rule() {
    let echo = Echo::start("v3");
    let gw = start(manifests::service("default", "svc", &[echo.port()]), RULES).await;
    // (path, failing status, failures before success, client status, requests)
    let cases = [
        ("/retry/code-500-attempts-3", 500, 2, 200, 3),
        ("/retry/code-500-attempts-3", 500, 3, 200, 4),
        ("/retry/code-500-attempts-3", 500, 4, 500, 4),
        ("/retry/code-500-attempts-3", 503, 2, 503, 1),
        ("/retry/code-all-attempts-2", 500, 1, 200, 2),
        ("/retry/code-all-attempts-2", 500, 3, 500, 3),
        ("/retry/code-all-attempts-2", 502, 1, 200, 2),
        ("/retry/code-all-attempts-2", 502, 3, 502, 3),
        ("/retry/code-all-attempts-2", 503, 1, 200, 2),
        ("/retry/code-all-attempts-2", 503, 3, 503, 3),
        ("/retry/code-all-attempts-2", 504, 1, 200, 2),
        ("/retry/code-all-attempts-2", 504, 3, 504, 3),
        ("/retry/code-all-attempts-2", 429, 1, 429, 1),
        ("/no-retry", 500, 1, 500, 1),
    ];
    for (path, code, fail, want, requests) in cases {
        let (reply, uuid) = simulate(&gw, path, code, fail).await;
        let case = format!("{path} failing {fail} times with {code}");
        assert_eq!(reply.status, want, "{case}: {}", reply.text());
        assert_eq!(seen(&gw, &uuid).await, requests, "{case}: requests sent");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_retry_answers_500_and_says_why() {
    let echo = Echo::start("v3");
    let gw = start(manifests::service("default", "svc", &[echo.port()]), RULES).await;
    let (reply, uuid) = simulate(&gw, "/retry/invalid", 500, 0).await;
    assert_eq!(reply.status, 500);
    assert_eq!(
        seen(&gw, &uuid).await,
        0,
        "the rule must not reach a backend"
    );
    let status = gw.status_of("HTTPRoute", "default/retries").await.unwrap();
    let conditions = status["status"]["parents"][0]["conditions"]
        .as_array()
        .unwrap()
        .clone();
    let partially = conditions
        .iter()
        .find(|c| c["type"] == "PartiallyInvalid")
        .unwrap_or_else(|| panic!("no PartiallyInvalid in {conditions:?}"));
    let message = partially["message"].as_str().unwrap();
    assert!(
        message.contains("spec.rules[4].retry.codes[0]: 200"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_wait_the_backoff_and_stop_at_the_request_timeout() {
    let echo = Echo::start("v3");
    let gw = start(manifests::service("default", "svc", &[echo.port()]), RULES).await;

    // Two retries: at least 200 ms, then at least 400 ms (doubled).
    let started = Instant::now();
    let (reply, uuid) = simulate(&gw, "/retry/slow-backoff", 503, 2).await;
    let took = started.elapsed();
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(seen(&gw, &uuid).await, 3);
    assert!(
        took >= Duration::from_millis(600),
        "answered after {took:?}"
    );

    // Retries at about 0, 400 and 1,200 ms against a 1 s request timeout:
    // the third never happens, and the client gets 504 at the timeout.
    let started = Instant::now();
    let (reply, uuid) = simulate(&gw, "/retry/request-timeout", 503, 100).await;
    let took = started.elapsed();
    assert_eq!(reply.status, 504, "{}", reply.text());
    assert!(
        took >= Duration::from_millis(1_000) && took < Duration::from_millis(2_500),
        "answered after {took:?}"
    );
    assert_eq!(seen(&gw, &uuid).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_is_retried_on_another_endpoint() {
    let echo = Echo::start("alive");
    // A port bound but never listening: connections to it are refused.
    let dead = ClosedPort::new();
    let rules = r#"  - matches: [{path: {type: PathPrefix, value: /retried}}]
    retry: {attempts: 1, backoff: 1ms}
    backendRefs: [{name: svc, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /once}}]
    backendRefs: [{name: svc, port: 80}]
"#;
    let gw = start(
        manifests::service("default", "svc", &[dead.port, echo.port()]),
        rules,
    )
    .await;
    let client = HttpClient::new();
    let mut statuses = std::collections::BTreeMap::<(&str, u16), usize>::new();
    for path in ["/once", "/retried"] {
        for _ in 0..40 {
            let reply = client
                .send(Request::get(&gw.url(80, path)).host(Some("retry.test")))
                .await
                .unwrap();
            *statuses.entry((path, reply.status)).or_default() += 1;
        }
    }
    // Round robin over the two endpoints: without retries every other
    // request meets the refused port; with one retry, the next endpoint
    // answers.
    assert_eq!(statuses.get(&("/retried", 200)), Some(&40), "{statuses:?}");
    assert!(
        statuses.get(&("/once", 502)).copied().unwrap_or(0) >= 10,
        "{statuses:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_body_is_sent_again_only_when_it_was_held_whole() {
    let echo = Echo::start("v3");
    let gw = start(manifests::service("default", "svc", &[echo.port()]), RULES).await;
    let client = HttpClient::new();
    let post = |size: usize, uuid: &str| {
        let url = gw.url(
            80,
            &format!("/retry/code-500-attempts-3?responseCode=500&succeedAfter=1&uuid={uuid}"),
        );
        let mut request = Request::method("POST", &url).host(Some("retry.test"));
        request.body = vec![b'x'; size];
        request
    };

    // A small body is held and sent whole on the retry.
    let uuid = format!("{:032x}", rand_id());
    let reply = client.send(post(10_000, &uuid)).await.unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.echo()["body_len"], 10_000);
    assert_eq!(reply.echo()["attempt"], 2);

    // A body larger than the retry buffer is streamed once, never retried.
    let uuid = format!("{:032x}", rand_id());
    let reply = client.send(post(300_000, &uuid)).await.unwrap();
    assert_eq!(reply.status, 500, "{}", reply.text());
    assert_eq!(seen(&gw, &uuid).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_stay_within_the_routes_retry_budget() {
    let echo = Echo::start("v3");
    let gw = start(manifests::service("default", "svc", &[echo.port()]), RULES).await;
    // 30 requests at once to a backend that always fails after 200 ms,
    // with up to 10 retries each: without a budget the backend would get
    // 330 requests. All carry one uuid, so the backend counts them all.
    let uuid = format!("{:032x}", rand_id());
    let url = gw.url(
        80,
        &format!("/retry/budget?responseCode=503&succeedAfter=100000&uuid={uuid}"),
    );
    let requests: Vec<_> = (0..30)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let request = Request::get(&url)
                    .host(Some("retry.test"))
                    .header("x-echo-delay-ms", "200");
                HttpClient::new()
                    .send(request)
                    .await
                    .expect("a reply")
                    .status
            })
        })
        .collect();
    for request in requests {
        assert_eq!(request.await.unwrap(), 503);
    }
    let sent = seen(&gw, &uuid).await;
    // A fifth of the requests in flight may retry at once (at least 3):
    // about 30 + 6 + 3 × 9 here.
    assert!(
        (33..=120).contains(&sent),
        "{sent} backend requests for 30 client requests"
    );
}
