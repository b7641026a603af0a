//! GRPCRoute end to end with real gRPC backends (the standard health
//! service, each backend SERVING under its own name): service/method and
//! header matches, HTTP/2 to backends that do not declare it, gRPC status
//! codes for what the gateway answers itself, and the route's status.

use std::time::Duration;

use gatehouse_e2e::{Echo, Standalone, manifests};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

const ROUTE: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: health, namespace: default}
spec:
  parentRefs: [{name: gw}]
  hostnames: [grpc.test]
  rules:
  - matches:
    - method: {service: grpc.health.v1.Health, method: Check}
      headers: [{name: x-backend, value: b}]
    backendRefs: [{name: svc-b, port: 80}]
  - matches:
    - method: {service: grpc.health.v1.Health}
    backendRefs: [{name: svc-a, port: 80}]
"#;

async fn client(gw: &Standalone, authority: &str) -> HealthClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", gw.socket(80)))
        .unwrap()
        .origin(format!("http://{authority}").parse().unwrap())
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .expect("h2c connection to the gateway");
    HealthClient::new(channel)
}

fn check(service: &str, backend_header: Option<&str>) -> tonic::Request<HealthCheckRequest> {
    let mut request = tonic::Request::new(HealthCheckRequest {
        service: service.into(),
    });
    if let Some(value) = backend_header {
        request
            .metadata_mut()
            .insert("x-backend", value.parse().unwrap());
    }
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_are_routed_by_method_and_header_over_http2() {
    let grpc = |name| Echo::start_with(name, "127.0.0.1:0".parse().unwrap(), &["--grpc"]);
    let (a, b) = (grpc("backend-a"), grpc("backend-b"));
    // No appProtocol on these Services: a GRPCRoute still speaks HTTP/2.
    let gw = Standalone::start(&[(
        "all.yaml",
        [
            manifests::gateway(),
            manifests::service("default", "svc-a", &[a.port()]),
            manifests::service("default", "svc-b", &[b.port()]),
            ROUTE.to_string(),
        ]
        .join("---\n"),
    )])
    .await;
    let mut health = client(&gw, "grpc.test").await;

    let status = |r: tonic::Response<tonic_health::pb::HealthCheckResponse>| r.into_inner().status;
    // Service match only: backend a, which knows itself...
    let reply = health.check(check("backend-a", None)).await.unwrap();
    assert_eq!(status(reply), ServingStatus::Serving as i32);
    // ...and not backend b: the call did reach a.
    let error = health.check(check("backend-b", None)).await.unwrap_err();
    assert_eq!(error.code(), tonic::Code::NotFound, "{error}");
    // Method and header match: backend b.
    let reply = health.check(check("backend-b", Some("b"))).await.unwrap();
    assert_eq!(status(reply), ServingStatus::Serving as i32);

    // No route for this host: the gateway answers UNIMPLEMENTED itself.
    let mut elsewhere = client(&gw, "unknown.test").await;
    let error = elsewhere.check(check("backend-a", None)).await.unwrap_err();
    assert_eq!(error.code(), tonic::Code::Unimplemented, "{error}");

    let route = gw.status_of("GRPCRoute", "default/health").await.unwrap();
    let conditions = &route["status"]["parents"][0]["conditions"];
    let accepted = conditions
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Accepted")
        .unwrap();
    assert_eq!(accepted["status"], "True", "{route}");
    let gateway = gw.status_of("Gateway", "default/gw").await.unwrap();
    assert_eq!(gateway["status"]["listeners"][0]["attachedRoutes"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_precedence_is_service_then_method_and_an_http_route_cannot_share_its_host() {
    let grpc = |name| Echo::start_with(name, "127.0.0.1:0".parse().unwrap(), &["--grpc"]);
    let (a, b) = (grpc("backend-a"), grpc("backend-b"));
    let web = Echo::start("web");
    // Rule order would send Check to b; GRPCRoute precedence ("Characters
    // in a matching service" before "in a matching method") sends it to a.
    let grpc_route = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: health, namespace: default, creationTimestamp: "2025-01-01T00:00:00Z"}
spec:
  parentRefs: [{name: gw}]
  hostnames: [grpc.test]
  rules:
  - matches: [{method: {method: Check}}]
    backendRefs: [{name: svc-b, port: 80}]
  - matches: [{method: {service: grpc.health.v1.Health}}]
    backendRefs: [{name: svc-a, port: 80}]
"#;
    let http_routes = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: same-host, namespace: default, creationTimestamp: "2025-06-01T00:00:00Z"}
spec:
  parentRefs: [{name: gw}]
  hostnames: [grpc.test]
  rules:
  - backendRefs: [{name: web, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: other-host, namespace: default, creationTimestamp: "2025-06-01T00:00:00Z"}
spec:
  parentRefs: [{name: gw}]
  hostnames: [web.test]
  rules:
  - backendRefs: [{name: web, port: 80}]
"#;
    let gw = Standalone::start(&[(
        "all.yaml",
        [
            manifests::gateway(),
            manifests::service("default", "svc-a", &[a.port()]),
            manifests::service("default", "svc-b", &[b.port()]),
            manifests::service("default", "web", &[web.port()]),
            grpc_route.to_string(),
            http_routes.to_string(),
        ]
        .join("---\n"),
    )])
    .await;

    let mut health = client(&gw, "grpc.test").await;
    let reply = health.check(check("backend-a", None)).await.unwrap();
    assert_eq!(
        reply.into_inner().status,
        ServingStatus::Serving as i32,
        "Check must reach backend-a"
    );

    let accepted = |status: &serde_json::Value| {
        status["status"]["parents"][0]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Accepted")
            .cloned()
            .unwrap()
    };
    let loser = gw
        .status_of("HTTPRoute", "default/same-host")
        .await
        .unwrap();
    let condition = accepted(&loser);
    assert_eq!(condition["status"], "False", "{loser}");
    assert_eq!(condition["reason"], "Conflicted", "{loser}");
    assert!(
        condition["message"]
            .as_str()
            .unwrap()
            .contains("GRPCRoute default/health"),
        "{loser}"
    );
    let other = gw
        .status_of("HTTPRoute", "default/other-host")
        .await
        .unwrap();
    assert_eq!(accepted(&other)["status"], "True", "{other}");
    let reply = gatehouse_e2e::HttpClient::new()
        .get(&gw.url(80, "/"), Some("web.test"))
        .await
        .unwrap();
    assert_eq!(reply.backend(), Some("web"));
    let gateway = gw.status_of("Gateway", "default/gw").await.unwrap();
    assert_eq!(gateway["status"]["listeners"][0]["attachedRoutes"], 2);
}
