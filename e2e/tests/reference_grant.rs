//! Cross-namespace backendRefs: refused without a ReferenceGrant in the
//! Service's namespace, served once one allows it (applied live).

use std::time::Duration;

use anyhow::ensure;
use gatehouse_e2e::{Echo, HttpClient, Standalone, eventually, manifests};

const ROUTE: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: cross, namespace: app}
spec:
  parentRefs: [{name: gw, namespace: default}]
  hostnames: [cross.test]
  rules:
  - backendRefs: [{name: svc-a, namespace: backends, port: 80}]
"#;

const GRANT: &str = r#"
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: allow-app, namespace: backends}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: app}]
  to: [{group: "", kind: Service}]
"#;

fn resolved_refs(status: &serde_json::Value) -> (String, String) {
    let condition = status["status"]["parents"][0]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "ResolvedRefs")
        .cloned()
        .unwrap_or_default();
    (
        condition["status"].as_str().unwrap_or_default().to_string(),
        condition["reason"].as_str().unwrap_or_default().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_namespace_backend_needs_a_reference_grant() {
    let a = Echo::start("a");
    let gateway = Standalone::start(&[
        ("gateway.yaml", manifests::gateway()),
        (
            "a.yaml",
            manifests::service("backends", "svc-a", &[a.port()]),
        ),
        ("route.yaml", ROUTE.to_string()),
    ])
    .await;
    let client = HttpClient::new();
    let url = gateway.url(80, "/");
    let reply = client.get(&url, Some("cross.test")).await.unwrap();
    assert_eq!(reply.status, 500, "served without a ReferenceGrant");
    let status = gateway.status_of("HTTPRoute", "app/cross").await.unwrap();
    assert_eq!(
        resolved_refs(&status),
        ("False".into(), "RefNotPermitted".into())
    );

    gateway.write("grant.yaml", GRANT);
    eventually(Duration::from_secs(20), || async {
        let reply = client.get(&url, Some("cross.test")).await?;
        ensure!(reply.backend() == Some("a"), "status {}", reply.status);
        Ok(())
    })
    .await;
    let status = gateway.status_of("HTTPRoute", "app/cross").await.unwrap();
    assert_eq!(
        resolved_refs(&status),
        ("True".into(), "ResolvedRefs".into())
    );
}
