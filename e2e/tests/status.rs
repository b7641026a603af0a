//! Status as the Gateway API asks for it, read from `/debug/status`: the
//! same conditions the controller writes in Kubernetes.

use gatehouse_e2e::{Echo, Standalone, manifests};
use serde_json::Value;

fn condition<'a>(conditions: &'a Value, kind: &str) -> &'a Value {
    conditions
        .as_array()
        .and_then(|all| all.iter().find(|c| c["type"] == kind))
        .unwrap_or_else(|| panic!("no {kind} condition in {conditions}"))
}

fn assert_condition(conditions: &Value, kind: &str, status: &str, reason: &str) {
    let found = condition(conditions, kind);
    assert_eq!(
        (found["status"].as_str(), found["reason"].as_str()),
        (Some(status), Some(reason)),
        "{kind}: {found}"
    );
}

const GATEWAY: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: gatehouse}
spec: {controllerName: gatehouse.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  gatewayClassName: gatehouse
  listeners:
  - name: web
    port: 80
    protocol: HTTP
    hostname: "*.example.com"
"#;

fn route(name: &str, namespace: &str, parent: &str, hostnames: &str) -> String {
    format!(
        r#"---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  parentRefs: [{parent}]
  hostnames: {hostnames}
  rules:
  - backendRefs: [{{name: svc-a, namespace: default, port: 80}}]
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_listener_and_route_conditions() {
    let a = Echo::start("a");
    let routes = [
        route("good", "default", "{name: gw}", "[app.example.com]"),
        route(
            "wrong-section",
            "default",
            "{name: gw, sectionName: nope}",
            "[app.example.com]",
        ),
        route("wrong-host", "default", "{name: gw}", "[app.other.org]"),
        route(
            "other-ns",
            "elsewhere",
            "{name: gw, namespace: default}",
            "[app.example.com]",
        ),
    ]
    .concat();
    let gateway = Standalone::start(&[
        ("gateway.yaml", GATEWAY.to_string()),
        (
            "a.yaml",
            manifests::service("default", "svc-a", &[a.port()]),
        ),
        ("routes.yaml", routes),
    ])
    .await;

    let class = gateway
        .status_of("GatewayClass", "gatehouse")
        .await
        .unwrap();
    assert_condition(
        &class["status"]["conditions"],
        "Accepted",
        "True",
        "Accepted",
    );

    let gw = gateway.status_of("Gateway", "default/gw").await.unwrap();
    let conditions = &gw["status"]["conditions"];
    assert_condition(conditions, "Accepted", "True", "Accepted");
    assert_condition(conditions, "Programmed", "True", "Programmed");
    assert_eq!(condition(conditions, "Accepted")["observedGeneration"], 1);
    let listener = &gw["status"]["listeners"][0];
    assert_eq!(listener["name"], "web");
    assert_eq!(listener["attachedRoutes"], 1, "{listener}");
    assert_condition(&listener["conditions"], "Accepted", "True", "Accepted");
    assert_condition(
        &listener["conditions"],
        "ResolvedRefs",
        "True",
        "ResolvedRefs",
    );
    assert_condition(
        &listener["conditions"],
        "Conflicted",
        "False",
        "NoConflicts",
    );
    assert_eq!(listener["supportedKinds"][0]["kind"], "HTTPRoute");
    assert_eq!(gw["status"]["addresses"][0]["type"], "IPAddress");
    assert_eq!(
        gw["status"]["addresses"][0]["value"],
        gateway.address.to_string()
    );

    let parent_of = |status: Value| status["status"]["parents"][0].clone();
    let good = parent_of(
        gateway
            .status_of("HTTPRoute", "default/good")
            .await
            .unwrap(),
    );
    assert_eq!(good["controllerName"], "gatehouse.dev/gateway-controller");
    assert_eq!(good["parentRef"]["group"], "gateway.networking.k8s.io");
    assert_eq!(good["parentRef"]["kind"], "Gateway");
    assert_eq!(good["parentRef"]["namespace"], "default");
    assert_condition(&good["conditions"], "Accepted", "True", "Accepted");
    assert_condition(&good["conditions"], "ResolvedRefs", "True", "ResolvedRefs");

    let section = parent_of(
        gateway
            .status_of("HTTPRoute", "default/wrong-section")
            .await
            .unwrap(),
    );
    assert_condition(
        &section["conditions"],
        "Accepted",
        "False",
        "NoMatchingParent",
    );
    let host = parent_of(
        gateway
            .status_of("HTTPRoute", "default/wrong-host")
            .await
            .unwrap(),
    );
    assert_condition(
        &host["conditions"],
        "Accepted",
        "False",
        "NoMatchingListenerHostname",
    );
    let namespace = parent_of(
        gateway
            .status_of("HTTPRoute", "elsewhere/other-ns")
            .await
            .unwrap(),
    );
    assert_condition(
        &namespace["conditions"],
        "Accepted",
        "False",
        "NotAllowedByListeners",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_snapshot_turns_the_gateway_not_programmed_with_the_reason() {
    use std::time::Duration;
    let a = Echo::start("a");
    let address = gatehouse_e2e::unique_loopback();
    // Another process holds the Gateway's port: the data plane cannot bind
    // it and rejects the snapshot.
    let squatter = std::net::TcpListener::bind((address, 80 + gatehouse_e2e::PORT_OFFSET)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let files = [
        ("gateway.yaml", GATEWAY.to_string()),
        (
            "service.yaml",
            manifests::service("default", "svc-a", &[a.port()]),
        ),
        (
            "route.yaml",
            route("web", "default", "{name: gw}", "[app.example.com]"),
        ),
    ];
    for (name, content) in &files {
        std::fs::write(dir.path().join(name), content).unwrap();
    }
    let gw = Standalone::start_in(
        dir,
        gatehouse_e2e::StandaloneOptions {
            no_dataplanes: false,
            grpc: None,
            address: Some(address),
        },
    );
    let programmed =
        |status: &Value| condition(&status["status"]["conditions"], "Programmed").clone();
    let rejected = gatehouse_e2e::eventually(Duration::from_secs(30), || async {
        let status = gw.status_of("Gateway", "default/gw").await;
        let found = status.as_ref().map(programmed);
        match found {
            Some(c) if c["status"] == "False" => Ok(c),
            other => anyhow::bail!("not rejected yet: {other:?}"),
        }
    })
    .await;
    assert_eq!(rejected["reason"], "Invalid");
    let message = rejected["message"].as_str().unwrap();
    assert!(
        message.contains("rejected the configuration") && message.contains("binding"),
        "{message}"
    );
    // The port is free again and the next change applies.
    drop(squatter);
    gw.write(
        "route.yaml",
        &route(
            "web",
            "default",
            "{name: gw}",
            "[app.example.com, www.example.com]",
        ),
    );
    gw.wait_ready().await;
    let status = gw.status_of("Gateway", "default/gw").await.unwrap();
    let now = programmed(&status);
    assert_eq!(
        (now["status"].as_str(), now["reason"].as_str()),
        (Some("True"), Some("Programmed"))
    );
    assert!(
        now["message"]
            .as_str()
            .unwrap()
            .contains("cluster group \"default\"")
    );
}
