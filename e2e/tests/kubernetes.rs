//! Kubernetes mode against a real API server (kube-lite, with the upstream
//! Gateway API CRDs): the controller watches, compiles, writes status with
//! optimistic concurrency beside other controllers, serves snapshots to a
//! data plane process, hands status writing over to another replica when
//! its leader dies, and moves a Gateway between cluster groups under load
//! without a failed request.

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
    admin: SocketAddr,
}

fn controller(kube: &KubeLite, identity: &str, address: std::net::IpAddr) -> Controller {
    controller_with(kube, identity, address, &[])
}

fn controller_with(
    kube: &KubeLite,
    identity: &str,
    address: std::net::IpAddr,
    extra: &[&str],
) -> Controller {
    let mut command = Command::new(bin("gatehouse-controller"));
    command
        .env("KUBECONFIG", kube.kubeconfig())
        .arg("kubernetes")
        .args(["--grpc", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .args(["--port-offset", &PORT_OFFSET.to_string()])
        .args(["--listen-address", &address.to_string()])
        .args(["--lease-namespace", "default", "--identity", identity])
        // Renewed every 2 s: a loaded machine does not let a second replica
        // take the lease while its holder lives.
        .args(["--lease-duration-seconds", "6"])
        .args(extra);
    let (process, found) = Process::start(
        command,
        &["admin listening on", "snapshot server listening on"],
    )
    .expect("controller in Kubernetes mode");
    Controller {
        process,
        grpc: found[1].parse().expect("gRPC address"),
        admin: found[0].parse().expect("admin address"),
    }
}

fn dataplane(grpc: SocketAddr, node: &str) -> Process {
    dataplane_of(grpc, "default", node, &[])
}

/// A data plane and its admin address.
fn dataplane_with_admin(grpc: SocketAddr, node: &str) -> (Process, SocketAddr) {
    let mut command = Command::new(bin("gatehouse-dataplane"));
    command
        .args(["--controller", &format!("http://{grpc}")])
        .args(["--group", "default", "--node-id", node])
        .args(["--admin", "127.0.0.1:0"]);
    let (process, found) = Process::start(command, &["admin listening on"]).expect("data plane");
    (process, found[0].parse().expect("admin address"))
}

/// The data plane's count of endpoint updates applied.
async fn endpoint_updates(admin: SocketAddr) -> u64 {
    let metrics = HttpClient::new()
        .get(&format!("http://{admin}/metrics"), None)
        .await
        .expect("data plane metrics")
        .text();
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("gatehouse_endpoint_updates_applied_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no endpoint update counter in {metrics}"))
}

fn dataplane_of(grpc: SocketAddr, group: &str, node: &str, extra: &[&str]) -> Process {
    let mut command = Command::new(bin("gatehouse-dataplane"));
    command
        .args(["--controller", &format!("http://{grpc}")])
        .args(["--group", group, "--node-id", node])
        .args(["--admin", "127.0.0.1:0"])
        .args(extra);
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
    let (kube, echo) = started();
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
    let (_dp, dp_admin) = dataplane_with_admin(c.grpc, "dp-1");

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

    // An EndpointSlice update moves traffic to the new endpoint, and
    // reaches the data plane as an endpoint update, not a whole snapshot.
    let updates_before = endpoint_updates(dp_admin).await;
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
    assert!(
        endpoint_updates(dp_admin).await > updates_before,
        "the endpoint change came as a whole snapshot"
    );
    // What it serves is what the controller holds, version for version.
    let json = |reply: gatehouse_e2e::Reply| -> Value {
        serde_json::from_str(&reply.text()).expect("JSON")
    };
    let served = json(
        client
            .get(&format!("http://{dp_admin}/debug/snapshot"), None)
            .await
            .unwrap(),
    );
    let snapshots = json(
        client
            .get(&format!("http://{}/debug/snapshots", c.admin), None)
            .await
            .unwrap(),
    );
    assert_eq!(served, snapshots["default"]);

    // A burst of endpoint changes, as in a rollout: whatever the data plane
    // is sent of it (updates from the version it serves, or the whole
    // snapshot), it ends serving the controller's last version.
    let ports = [echo.port(), moved.port()];
    for round in 0..6 {
        kube.apply_str(&service(ports[round % 2])).unwrap();
    }
    eventually(Duration::from_secs(30), || async {
        let served = json(
            client
                .get(&format!("http://{dp_admin}/debug/snapshot"), None)
                .await?,
        );
        let held = json(
            client
                .get(&format!("http://{}/debug/snapshots", c.admin), None)
                .await?,
        );
        anyhow::ensure!(
            served == held["default"],
            "serving {} while the controller holds {}",
            served["version"],
            held["default"]["version"]
        );
        let reply = client.get(&url, Some("web.test")).await?;
        anyhow::ensure!(reply.backend() == Some("k8s-b"), "{:?}", reply.backend());
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
    eventually(Duration::from_secs(60), || async {
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
    // The lease lasts 6 s, renewed every 2 s.
    assert!(took < Duration::from_secs(30), "failover took {took:?}");
}

/// The data plane Service of `group`, a load balancer whose ingress is
/// `address` (written to its status, as a cloud controller would).
fn group_service(kube: &KubeLite, group: &str, address: std::net::IpAddr) {
    let name = format!("gatehouse-dataplane-{group}");
    kube.apply_str(&format!(
        r#"
apiVersion: v1
kind: Service
metadata:
  name: {name}
  namespace: default
  labels: {{app.kubernetes.io/component: dataplane, gatehouse.dev/cluster-group: {group}}}
spec:
  type: LoadBalancer
  ports: [{{name: http, port: 80, targetPort: 20080}}]
"#
    ))
    .expect("group service");
    let patch = format!(r#"{{"status":{{"loadBalancer":{{"ingress":[{{"ip":"{address}"}}]}}}}}}"#);
    kube.run_kubectl(
        &[
            "patch",
            "service",
            &name,
            "--namespace",
            "default",
            "--subresource",
            "status",
            "--type",
            "merge",
            "--patch",
            &patch,
        ],
        None,
    )
    .expect("load balancer status");
}

/// The first address in the Gateway's status, if any.
fn gateway_address(kube: &KubeLite) -> Option<std::net::IpAddr> {
    let gw = kube
        .get_json(&["gateway", "gw", "--namespace", "default"])
        .ok()?;
    gw["status"]["addresses"][0]["value"].as_str()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_moves_between_groups_under_load_without_a_failed_request() {
    use std::sync::{Arc, Mutex, atomic::AtomicBool, atomic::Ordering};

    let (kube, _echo) = started();
    let (old, new) = (unique_loopback(), unique_loopback());
    assert_ne!(old, new);
    group_service(&kube, "default", old);
    group_service(&kube, "b", new);
    // Two controller replicas; the new group's data plane is connected to
    // the one that does not lead, so the leader must learn from the other
    // replica that the new group is ready.
    let drain = ["--group-move-drain-seconds", "3"];
    let leader = controller_with(&kube, "leader", "0.0.0.0".parse().unwrap(), &drain);
    eventually(Duration::from_secs(30), || async {
        let lease = kube.get_json(&["lease", "gatehouse-controller", "--namespace", "default"])?;
        anyhow::ensure!(lease["spec"]["holderIdentity"] == "leader", "{lease}");
        Ok(())
    })
    .await;
    let follower = controller_with(&kube, "follower", "0.0.0.0".parse().unwrap(), &drain);
    // One data plane per group, each on its own address as if in its own
    // pod.
    let _a = dataplane_of(
        leader.grpc,
        "default",
        "dp-a",
        &["--listen-address", &old.to_string()],
    );
    let _b = dataplane_of(
        follower.grpc,
        "b",
        "dp-b",
        &["--listen-address", &new.to_string()],
    );

    let url = |address: std::net::IpAddr| format!("http://{address}:{}/", 80 + PORT_OFFSET);
    let client = HttpClient::new();
    eventually(Duration::from_secs(30), || async {
        anyhow::ensure!(
            gateway_address(&kube) == Some(old),
            "not on the old group yet"
        );
        let reply = client.get(&url(old), Some("web.test")).await?;
        anyhow::ensure!(reply.status == 200, "status {}", reply.status);
        Ok(())
    })
    .await;

    // Clients follow the Gateway's status address, as DNS or a load
    // balancer would, checking it every 200 ms.
    let target = Arc::new(Mutex::new(old));
    let stop = Arc::new(AtomicBool::new(false));
    let follower = {
        let (target, stop) = (target.clone(), stop.clone());
        let kubeconfig = kube.kubeconfig().to_owned();
        let cache = kube.workdir().join("kubectl-cache");
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let out = Command::new(gatehouse_e2e::kube_lite::kubectl_program())
                    .env("KUBECONFIG", &kubeconfig)
                    .env("KUBECACHEDIR", &cache)
                    .args(["get", "gateway", "gw", "--namespace", "default"])
                    .args(["-o", "jsonpath={.status.addresses[0].value}"])
                    .output();
                if let Some(address) = out
                    .ok()
                    .and_then(|o| String::from_utf8(o.stdout).ok())
                    .and_then(|s| s.trim().parse().ok())
                {
                    *target.lock().unwrap() = address;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    let loops: Vec<_> = (0..2)
        .map(|_| {
            let (target, stop) = (target.clone(), stop.clone());
            tokio::spawn(async move {
                let client = HttpClient::new();
                let mut served = std::collections::BTreeMap::<std::net::IpAddr, u32>::new();
                let mut failures = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let address = *target.lock().unwrap();
                    let url = format!("http://{address}:{}/", 80 + PORT_OFFSET);
                    match client.get(&url, Some("web.test")).await {
                        Ok(reply) if reply.status == 200 => {
                            *served.entry(address).or_default() += 1
                        }
                        Ok(reply) => failures.push(format!("{address}: status {}", reply.status)),
                        Err(error) => failures.push(format!("{address}: {error:#}")),
                    }
                }
                (served, failures)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;

    kube.run_kubectl(
        &[
            "label",
            "gateway",
            "gw",
            "--namespace",
            "default",
            "--overwrite",
            "gatehouse.dev/cluster-group=b",
        ],
        None,
    )
    .expect("moving the Gateway");
    // The new group takes the address once its data plane serves the
    // Gateway; the old group stops serving it after the drain.
    eventually(Duration::from_secs(30), || async {
        anyhow::ensure!(
            gateway_address(&kube) == Some(new),
            "still on the old group"
        );
        Ok(())
    })
    .await;
    // The placement the leader wrote on the Gateway says where it is served.
    let gw = kube
        .get_json(&["gateway", "gw", "--namespace", "default"])
        .unwrap();
    let served = gw["metadata"]["annotations"]["gatehouse.dev/served-by"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(served.contains(r#""group":"b""#), "{served}");
    eventually(Duration::from_secs(30), || async {
        match client.get(&url(old), Some("web.test")).await {
            Ok(reply) if reply.status == 200 => anyhow::bail!("the old group still serves it"),
            _ => Ok(()),
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    follower.join().unwrap();
    let mut served = std::collections::BTreeMap::<std::net::IpAddr, u32>::new();
    for handle in loops {
        let (counts, failures) = handle.await.unwrap();
        assert!(
            failures.is_empty(),
            "{} failed requests, the first: {:?}",
            failures.len(),
            &failures[..failures.len().min(3)]
        );
        for (address, n) in counts {
            *served.entry(address).or_default() += n;
        }
    }
    assert!(
        served.get(&old).copied().unwrap_or(0) > 0 && served.get(&new).copied().unwrap_or(0) > 0,
        "both groups must have served: {served:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejection_seen_by_a_replica_that_does_not_lead_reaches_the_gateway_status() {
    let (kube, _echo) = started();
    let address = unique_loopback();
    // The listener's port is taken on the Gateway's address: the data plane
    // cannot bind it and rejects the snapshot.
    let _taken = std::net::TcpListener::bind((address, 80 + PORT_OFFSET)).unwrap();
    let _leader = controller(&kube, "leader", address);
    eventually(Duration::from_secs(30), || async {
        let lease = kube.get_json(&["lease", "gatehouse-controller", "--namespace", "default"])?;
        anyhow::ensure!(lease["spec"]["holderIdentity"] == "leader", "{lease}");
        Ok(())
    })
    .await;
    let follower = controller(&kube, "follower", address);
    let _dp = dataplane(follower.grpc, "dp-on-follower");
    let programmed = eventually(Duration::from_secs(30), || async {
        let gw = kube.get_json(&["gateway", "gw", "--namespace", "default"])?;
        let programmed = condition(&gw["status"]["conditions"], "Programmed")
            .cloned()
            .unwrap_or_default();
        anyhow::ensure!(programmed["status"] == "False", "{programmed}");
        Ok(programmed)
    })
    .await;
    assert_eq!(programmed["reason"], "Invalid");
    let message = programmed["message"].as_str().unwrap();
    assert!(
        message.contains("dp-on-follower") && message.contains("binding"),
        "{message}"
    );
    let lease = kube
        .get_json(&["lease", "gatehouse-controller", "--namespace", "default"])
        .unwrap();
    assert_eq!(
        lease["spec"]["holderIdentity"], "leader",
        "the leader wrote it"
    );
}

/// Our CRDs, from the repository's `crds/`, installed as the chart does.
fn apply_our_crds(kube: &KubeLite) {
    kube.apply_file(&gatehouse_e2e::kube_lite::repo_root().join("crds"))
        .expect("gatehouse.dev CRDs");
    kube.wait_crds_established(Duration::from_secs(60))
        .expect("CRDs established");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gatehouse_filters_are_checked_by_the_api_server_and_applied_with_status() {
    let (kube, _echo) = started();
    apply_our_crds(&kube);
    // The CRD's CEL rules refuse obvious mistakes before any controller
    // sees them: two filters in one object, a type naming another field, a
    // targetRef outside the Gateway API group.
    for (bad, expected) in [
        (
            "type: StaticResponse\n  staticResponse: {statusCode: 200}\n  rateLimit: {requests: 1, period: 1s}",
            "exactly one of",
        ),
        (
            "type: RateLimit\n  staticResponse: {statusCode: 200}",
            "type must name",
        ),
        (
            "type: StaticResponse\n  targetRefs: [{group: apps, kind: Deployment, name: x}]\n  staticResponse: {statusCode: 200}",
            "kind must be Gateway or HTTPRoute",
        ),
        (
            "type: RateLimit\n  rateLimit: {requests: 1, period: 1s, key: {type: Header}}",
            "name is required",
        ),
        (
            "type: StaticResponse\n  enforce: true\n  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: x}]\n  staticResponse: {statusCode: 200}",
            "enforce needs targetRefs",
        ),
    ] {
        let manifest = format!(
            "apiVersion: gatehouse.dev/v1alpha1\nkind: Filter\nmetadata: {{name: bad, namespace: default}}\nspec:\n  {bad}\n"
        );
        let error = kube
            .apply_str(&manifest)
            .expect_err("the API server refuses an invalid Filter");
        assert!(error.to_string().contains(expected), "{error}");
    }
    kube.apply_str(
        r#"
apiVersion: gatehouse.dev/v1alpha1
kind: Filter
metadata: {name: teapot, namespace: default}
spec:
  type: StaticResponse
  staticResponse: {statusCode: 418, body: "short and stout"}
---
apiVersion: gatehouse.dev/v1alpha1
kind: Filter
metadata: {name: gateway-deny, namespace: default}
spec:
  type: IPAccess
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: gw}]
  ipAccess: {deny: ["192.0.2.0/24"]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: tea, namespace: default}
spec:
  parentRefs: [{name: gw}]
  hostnames: [tea.test]
  rules:
  - filters:
    - type: ExtensionRef
      extensionRef: {group: gatehouse.dev, kind: Filter, name: teapot}
---
# A JWKS Secret is read only when labelled as one; the unlabelled one is
# never seen, so its Filter is invalid.
apiVersion: v1
kind: Secret
metadata:
  name: jwks
  namespace: default
  labels: {gatehouse.dev/jwks: "true"}
stringData:
  jwks.json: '{"keys":[{"kty":"oct","kid":"s1","alg":"HS256","k":"c2hhcmVkLXNlY3JldC1vZi1hdC1sZWFzdC0zMi1ieXRlcw"}]}'
---
apiVersion: v1
kind: Secret
metadata: {name: unlabelled, namespace: default}
stringData:
  jwks.json: '{"keys":[{"kty":"oct","kid":"s1","alg":"HS256","k":"c2hhcmVkLXNlY3JldC1vZi1hdC1sZWFzdC0zMi1ieXRlcw"}]}'
---
apiVersion: gatehouse.dev/v1alpha1
kind: Filter
metadata: {name: members, namespace: default}
spec:
  type: JWTAuth
  jwtAuth:
    jwks: {secretRef: {name: jwks}}
    algorithms: [HS256]
    claimsToHeaders: [{claim: sub, header: x-user}]
---
apiVersion: gatehouse.dev/v1alpha1
kind: Filter
metadata: {name: hidden-keys, namespace: default}
spec:
  type: JWTAuth
  jwtAuth:
    jwks: {secretRef: {name: unlabelled}}
    algorithms: [HS256]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: members, namespace: default}
spec:
  parentRefs: [{name: gw}]
  hostnames: [members.test]
  rules:
  - filters:
    - type: ExtensionRef
      extensionRef: {group: gatehouse.dev, kind: Filter, name: members}
    backendRefs: [{name: echo, port: 80}]
"#,
    )
    .expect("valid filters and a route using one");
    let address = unique_loopback();
    let c = controller(&kube, "only", address);
    let _dp = dataplane(c.grpc, "dp-1");

    let client = HttpClient::new();
    let url = format!("http://{address}:{}/", 80 + PORT_OFFSET);
    let reply = eventually(Duration::from_secs(30), || async {
        let reply = client.get(&url, Some("tea.test")).await?;
        anyhow::ensure!(reply.status == 418, "status {}", reply.status);
        Ok(reply)
    })
    .await;
    assert_eq!(reply.text(), "short and stout");

    // HS256 with the key from the labelled Secret.
    let token = {
        let claims = serde_json::json!({"sub": "kim", "exp": 4_102_444_800u64});
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = Some("s1".into());
        let key = jsonwebtoken::EncodingKey::from_secret(b"shared-secret-of-at-least-32-bytes");
        jsonwebtoken::encode(&header, &claims, &key).expect("token")
    };
    let members = format!("http://{address}:{}/", 80 + PORT_OFFSET);
    let reply = eventually(Duration::from_secs(30), || async {
        let reply = client
            .send(
                gatehouse_e2e::Request::get(&members)
                    .host(Some("members.test"))
                    .header("authorization", &format!("Bearer {token}")),
            )
            .await?;
        anyhow::ensure!(reply.status == 200, "status {}", reply.status);
        Ok(reply)
    })
    .await;
    assert_eq!(reply.echo()["headers"]["x-user"][0], "kim");
    let refused = client.get(&members, Some("members.test")).await.unwrap();
    assert_eq!(refused.status, 401);
    let hidden = eventually(Duration::from_secs(30), || async {
        let f = kube.get_json(&["filter", "hidden-keys", "--namespace", "default"])?;
        let accepted = state(&f["status"]["conditions"], "Accepted");
        anyhow::ensure!(accepted.is_some(), "no status yet: {}", f["status"]);
        Ok(f)
    })
    .await;
    let accepted = condition(&hidden["status"]["conditions"], "Accepted").unwrap();
    assert_eq!(accepted["reason"], "Invalid", "{accepted}");
    assert!(
        accepted["message"]
            .as_str()
            .unwrap()
            .contains("gatehouse.dev/jwks"),
        "the message says which label is missing: {accepted}"
    );

    let filter = eventually(Duration::from_secs(30), || async {
        let f = kube.get_json(&["filter", "gateway-deny", "--namespace", "default"])?;
        anyhow::ensure!(
            state(&f["status"]["conditions"], "Accepted")
                == Some(("True".into(), "Accepted".into(), 1)),
            "not accepted yet: {}",
            f["status"]
        );
        Ok(f)
    })
    .await;
    let ancestor = &filter["status"]["ancestors"][0];
    assert_eq!(ancestor["ancestorRef"]["kind"], "Gateway", "{ancestor}");
    assert_eq!(ancestor["ancestorRef"]["name"], "gw");
    assert_eq!(
        ancestor["controllerName"],
        "gatehouse.dev/gateway-controller"
    );
    assert_eq!(
        state(&ancestor["conditions"], "Accepted").map(|s| s.0),
        Some("True".into())
    );
}
