//! Weighted backends, and the share of an unresolvable backendRef, which the
//! Gateway API says must keep its weight and be answered with 500.

use std::sync::Arc;

use gatehouse_e2e::{Echo, HttpClient, Reply, Standalone, manifests, tally};

fn weighted_route(backend_refs: &str) -> String {
    manifests::route("split", "gw", &["split.test"], backend_refs)
}

/// Sends `n` requests from 8 concurrent keep-alive clients.
async fn send_many(gateway: &Standalone, n: usize) -> Vec<Reply> {
    let url = Arc::new(gateway.url(80, "/"));
    let mut tasks = Vec::new();
    for worker in 0..8 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let client = HttpClient::new();
            let mut replies = Vec::new();
            for _ in (worker..n).step_by(8) {
                replies.push(client.get(&url, Some("split.test")).await.expect("request"));
            }
            replies
        }));
    }
    let mut replies = Vec::new();
    for task in tasks {
        replies.extend(task.await.unwrap());
    }
    replies
}

/// The share is within six standard deviations of the expected one, so a
/// correct split fails this check far less than once in a million runs.
fn assert_share(count: usize, n: usize, expected: f64) {
    let share = count as f64 / n as f64;
    let sigma = (expected * (1.0 - expected) / n as f64).sqrt();
    assert!(
        (share - expected).abs() <= 6.0 * sigma,
        "share {share:.3} over {n} requests, expected {expected} ± {:.3}",
        6.0 * sigma
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_splits_by_weight() {
    let (a, b) = (Echo::start("a"), Echo::start("b"));
    let gateway = Standalone::start(&[
        ("gateway.yaml", manifests::gateway()),
        (
            "a.yaml",
            manifests::service("default", "svc-a", &[a.port()]),
        ),
        (
            "b.yaml",
            manifests::service("default", "svc-b", &[b.port()]),
        ),
        (
            "route.yaml",
            weighted_route(
                "[{name: svc-a, port: 80, weight: 3}, {name: svc-b, port: 80, weight: 1}]",
            ),
        ),
    ])
    .await;
    let n = 1200;
    let counts = tally(&send_many(&gateway, n).await);
    assert_eq!(counts.values().sum::<usize>(), n);
    assert_eq!(
        counts.get("a").copied().unwrap_or(0) + counts.get("b").copied().unwrap_or(0),
        n,
        "{counts:?}"
    );
    assert_share(counts.get("a").copied().unwrap_or(0), n, 0.75);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unresolvable_backend_keeps_its_weight_and_answers_500() {
    let a = Echo::start("a");
    let gateway = Standalone::start(&[
        ("gateway.yaml", manifests::gateway()),
        (
            "a.yaml",
            manifests::service("default", "svc-a", &[a.port()]),
        ),
        (
            "route.yaml",
            weighted_route(
                "[{name: svc-a, port: 80, weight: 1}, {name: missing, port: 80, weight: 1}]",
            ),
        ),
    ])
    .await;
    let n = 1000;
    let counts = tally(&send_many(&gateway, n).await);
    let errors = counts.get("status 500").copied().unwrap_or(0);
    assert_eq!(
        errors + counts.get("a").copied().unwrap_or(0),
        n,
        "{counts:?}"
    );
    assert_share(errors, n, 0.5);

    let status = gateway
        .status_of("HTTPRoute", "default/split")
        .await
        .expect("route status");
    let conditions = &status["status"]["parents"][0]["conditions"];
    let resolved = conditions
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "ResolvedRefs")
        .expect("ResolvedRefs condition");
    assert_eq!(resolved["status"], "False");
    assert_eq!(resolved["reason"], "BackendNotFound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_without_ready_endpoints_answers_503() {
    let gateway = Standalone::start(&[
        ("gateway.yaml", manifests::gateway()),
        ("a.yaml", manifests::service("default", "svc-a", &[])),
        ("route.yaml", weighted_route("[{name: svc-a, port: 80}]")),
    ])
    .await;
    let reply = HttpClient::new()
        .get(&gateway.url(80, "/"), Some("split.test"))
        .await
        .unwrap();
    assert_eq!(reply.status, 503);
}
