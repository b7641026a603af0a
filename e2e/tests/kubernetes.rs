//! Kubernetes mode against a real API server (kube-lite, with the upstream
//! Gateway API CRDs): the controller watches, compiles, writes status with
//! optimistic concurrency beside other controllers, serves snapshots to a
//! data plane process, and hands status writing over to another replica when
//! its leader dies.

use std::{net::SocketAddr, process::Command, time::Duration};

use gatehouse_e2e::{
    Echo, HttpClient, PORT_OFFSET, Process, bin, eventually, kube_lite::KubeLite, manifests,
    unique_loopback,
};
use serde_json::Value;

fn service(port: u16) -> String {
    format!(
        r#"
apiVersion: v1
kind: Service
metadata: {{name: echo, namespace: default}}
spec:
  ports: [{{name: http, port: 80, targetPort: 8080}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: echo-1
  namespace: default
  labels: {{kubernetes.io/service-name: echo}}
addressType: IPv4
ports: [{{name: http, port: {port}}}]
endpoints: [{{addresses: ["127.0.0.1"], conditions: {{ready: true}}}}]
"#
    )
}

fn route(hostnames: &str) -> String {
    format!(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: web, namespace: default}}
spec:
  parentRefs: [{{name: gw}}]
  hostnames: {hostnames}
  rules:
  - backendRefs: [{{name: echo, port: 80}}]
"#
    )
}

struct Controller {
    process: Process,
    grpc: SocketAddr,
}

fn controller(kube: &KubeLite, identity: &str, address: std::net::IpAddr) -> Controller {
    let mut command = Command::new(bin("gatehouse-controller"));
    command
        .env("KUBECONFIG", kube.kubeconfig())
        .arg("kubernetes")
        .args(["--grpc", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .args(["--port-offset", &PORT_OFFSET.to_string()])
        .args(["--listen-address", &address.to_string()])
        .args(["--lease-namespace", "default", "--identity", identity])
        .args(["--lease-duration-seconds", "3"]);
    let (process, found) = Process::start(
        command,
        &["admin listening on", "snapshot server listening on"],
    )
    .expect("controller in Kubernetes mode");
    Controller {
        process,
        grpc: found[1].parse().expect("gRPC address"),
    }
}

fn dataplane(grpc: SocketAddr, node: &str) -> Process {
    let mut command = Command::new(bin("gatehouse-dataplane"));
    command
        .args(["--controller", &format!("http://{grpc}")])
        .args(["--group", "default", "--node-id", node])
        .args(["--admin", "127.0.0.1:0"]);
    Process::spawn(command).expect("data plane")
}

fn condition<'a>(conditions: &'a Value, kind: &str) -> Option<&'a Value> {
    conditions.as_array()?.iter().find(|c| c["type"] == kind)
}

/// (status, reason, observedGeneration) of condition `kind`.
fn state(conditions: &Value, kind: &str) -> Option<(String, String, i64)> {
    let c = condition(conditions, kind)?;
    Some((
        c["status"].as_str()?.to_owned(),
        c["reason"].as_str()?.to_owned(),
        c["observedGeneration"].as_i64()?,
    ))
}

fn started() -> (KubeLite, Echo) {
    let kube = KubeLite::start();
    kube.apply_gateway_api_crds().expect("Gateway API CRDs");
    let echo = Echo::start("k8s-a");
    kube.apply_str(&manifests::gateway())
        .expect("class and gateway");
    kube.apply_str(&service(echo.port())).expect("service");
    kube.apply_str(&route("[web.test]")).expect("route");
    (kube, echo)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_is_written_and_traffic_follows_the_cluster() {
    let (kube, _echo) = started();
    // Another controller's parent status on the route, which ours must keep.
    kube.run_kubectl(
        &[
            "patch", "httproute", "web", "--namespace", "default", "--subresource", "status",
            "--type", "merge", "--patch",
            r#"{"status":{"parents":[{"controllerName":"example.com/other","parentRef":{"name":"elsewhere"},"conditions":[{"type":"Accepted","status":"True","reason":"Accepted","message":"theirs","lastTransitionTime":"2024-01-01T00:00:00Z","observedGeneration":1}]}]}}"#,
        ],
        None,
    )
    .expect("foreign status");
    let address = unique_loopback();
    let c = controller(&kube, "only", address);
    let _dp = dataplane(c.grpc, "dp-1");

    let gateway = eventually(Duration::from_secs(30), || async {
        let gw = kube.get_json(&["gateway", "gw", "--namespace", "default"])?;
        let conditions = &gw["status"]["conditions"];
        anyhow::ensure!(
            state(conditions, "Programmed") == Some(("True".into(), "Programmed".into(), 1)),
            "gateway not programmed yet: {conditions}"
        );
        Ok(gw)
    })
    .await;
    let listener = &gateway["status"]["listeners"][0];
    assert_eq!(listener["attachedRoutes"], 1, "{listener}");
    assert_eq!(
        state(&gateway["status"]["conditions"], "Accepted"),
        Some(("True".into(), "Accepted".into(), 1))
    );
    let class = kube.get_json(&["gatewayclass", "gatehouse"]).unwrap();
    assert_eq!(
        state(&class["status"]["conditions"], "Accepted").map(|s| s.0),
        Some("True".into())
    );
    let written = eventually(Duration::from_secs(30), || async {
        let route = kube.get_json(&["httproute", "web", "--namespace", "default"])?;
        anyhow::ensure!(
            route["status"]["parents"].as_array().map(Vec::len) == Some(2),
            "parents: {}",
            route["status"]["parents"]
        );
        Ok(route)
    })
    .await;
    let parents = written["status"]["parents"].as_array().unwrap();
    assert_eq!(parents[0]["controllerName"], "example.com/other", "kept");
    assert_eq!(
        parents[1]["controllerName"],
        "gatehouse.dev/gateway-controller"
    );
    assert_eq!(
        state(&parents[1]["conditions"], "Accepted"),
        Some(("True".into(), "Accepted".into(), 1))
    );

    let client = HttpClient::new();
    let url = format!("http://{address}:{}/", 80 + PORT_OFFSET);
    let reply = eventually(Duration::from_secs(30), || async {
        client.get(&url, Some("web.test")).await
    })
    .await;
    assert_eq!(reply.backend(), Some("k8s-a"));

    // The group's data plane Service gives the Gateway its address.
    kube.apply_str(
        r#"
apiVersion: v1
kind: Service
metadata:
  name: gatehouse-dataplane-default
  namespace: default
  labels: {app.kubernetes.io/component: dataplane, gatehouse.dev/cluster-group: default}
spec:
  ports: [{name: http, port: 80, targetPort: 20080}]
"#,
    )
    .unwrap();
    let dataplane_service = kube
        .get_json(&[
            "service",
            "gatehouse-dataplane-default",
            "--namespace",
            "default",
        ])
        .unwrap();
    let cluster_ip = dataplane_service["spec"]["clusterIP"]
        .as_str()
        .unwrap()
        .to_owned();
    eventually(Duration::from_secs(30), || async {
        let gw = kube.get_json(&["gateway", "gw", "--namespace", "default"])?;
        let addresses = &gw["status"]["addresses"];
        anyhow::ensure!(
            *addresses == serde_json::json!([{"type": "IPAddress", "value": cluster_ip}]),
            "addresses {addresses}"
        );
        Ok(())
    })
    .await;

    // An EndpointSlice update moves traffic to the new endpoint.
    let moved = Echo::start("k8s-b");
    kube.apply_str(&service(moved.port())).unwrap();
    eventually(Duration::from_secs(30), || async {
        let reply = client.get(&url, Some("web.test")).await?;
        anyhow::ensure!(
            reply.backend() == Some("k8s-b"),
            "still {:?}",
            reply.backend()
        );
        Ok(())
    })
    .await;

    // A spec change: generation 2, reported as observed, ours alone changed.
    kube.apply_str(&route("[web.test, other.test]")).unwrap();
    eventually(Duration::from_secs(30), || async {
        let route = kube.get_json(&["httproute", "web", "--namespace", "default"])?;
        let parents = route["status"]["parents"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let ours = parents
            .iter()
            .find(|p| p["controllerName"] == "gatehouse.dev/gateway-controller");
        let observed = ours
            .and_then(|p| state(&p["conditions"], "Accepted"))
            .map(|s| s.2);
        anyhow::ensure!(observed == Some(2), "observedGeneration {observed:?}");
        anyhow::ensure!(parents.len() == 2, "foreign parent lost: {parents:?}");
        Ok(())
    })
    .await;
    let reply = client.get(&url, Some("other.test")).await.unwrap();
    assert_eq!(reply.backend(), Some("k8s-b"));
    drop(c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_replica_takes_over_status_when_the_leader_dies() {
    let (kube, _echo) = started();
    let address = unique_loopback();
    let first = controller(&kube, "first", address);
    let holder = || {
        kube.get_json(&["lease", "gatehouse-controller", "--namespace", "default"])
            .ok()
            .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_owned))
    };
    eventually(Duration::from_secs(30), || async {
        anyhow::ensure!(
            holder().as_deref() == Some("first"),
            "holder {:?}",
            holder()
        );
        Ok(())
    })
    .await;
    let second = controller(&kube, "second", address);
    // Both serve snapshots: a data plane on the second one works too.
    let _dp = dataplane(second.grpc, "dp-2");
    let client = HttpClient::new();
    let url = format!("http://{address}:{}/", 80 + PORT_OFFSET);
    eventually(Duration::from_secs(30), || async {
        client.get(&url, Some("web.test")).await
    })
    .await;
    assert_eq!(
        holder().as_deref(),
        Some("first"),
        "the leader keeps its lease"
    );

    let mut first = first;
    first.process.kill();
    // A spec change only the new leader can report.
    kube.apply_str(&route("[web.test, failover.test]")).unwrap();
    let started = std::time::Instant::now();
    eventually(Duration::from_secs(30), || async {
        let route = kube.get_json(&["httproute", "web", "--namespace", "default"])?;
        let observed = route["status"]["parents"]
            .as_array()
            .and_then(|p| {
                p.iter()
                    .find(|p| p["controllerName"] == "gatehouse.dev/gateway-controller")
            })
            .and_then(|p| state(&p["conditions"], "Accepted"))
            .map(|s| s.2);
        anyhow::ensure!(observed == Some(2), "observedGeneration {observed:?}");
        Ok(())
    })
    .await;
    assert_eq!(holder().as_deref(), Some("second"));
    let took = started.elapsed();
    assert!(took < Duration::from_secs(15), "failover took {took:?}");
}
