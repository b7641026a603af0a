//! EndpointSlice changes applied to a previous compile (`refresh_endpoints`)
//! give exactly what a whole compile of the changed store gives: the same
//! snapshots, byte for byte and version for version, and only the groups
//! that hold the Service change version.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use gatehouse_controller::compile::{CompileOptions, compile, refresh_endpoints};
use gatehouse_controller::group_snapshot::GroupSnapshot;
use gatehouse_controller::serve::Snapshots;
use gatehouse_controller::store::{Kind, ObjectKey};
use gatehouse_snapshot::Snapshot;

const BASE: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: gatehouse}
spec: {controllerName: gatehouse.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: a, namespace: default, labels: {gatehouse.dev/cluster-group: a}}
spec:
  gatewayClassName: gatehouse
  listeners: [{name: http, port: 80, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: b, namespace: default, labels: {gatehouse.dev/cluster-group: b}}
spec:
  gatewayClassName: gatehouse
  listeners: [{name: http, port: 8080, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: default}
spec:
  parentRefs: [{name: a}]
  rules:
  - backendRefs: [{name: web, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: rpc, namespace: default}
spec:
  parentRefs: [{name: a}]
  hostnames: [rpc.test]
  rules:
  - backendRefs: [{name: web, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: other, namespace: default}
spec:
  parentRefs: [{name: b}]
  rules:
  - backendRefs: [{name: other, port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec: {ports: [{name: http, port: 80, targetPort: web}]}
---
apiVersion: v1
kind: Service
metadata: {name: other, namespace: default}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: default, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints: [{addresses: [10.0.0.1]}, {addresses: [10.0.0.2], conditions: {ready: false}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: other-1, namespace: default, labels: {kubernetes.io/service-name: other}}
addressType: IPv4
ports: [{name: http, port: 9090}]
endpoints: [{addresses: [10.0.1.1]}]
"#;

fn slice(name: &str, service: &str, addresses: &[&str]) -> String {
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}, namespace: default, labels: {{kubernetes.io/service-name: {service}}}}}\naddressType: IPv4\nports: [{{name: http, port: 8080}}]\nendpoints: [{}]\n",
        addresses
            .iter()
            .map(|a| format!("{{addresses: [{a}]}}"))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

#[test]
fn endpoint_changes_refresh_exactly_what_a_compile_gives() {
    let options = CompileOptions::default();
    type Change = Box<dyn Fn(&mut gatehouse_controller::store::Store)>;
    let insert = |text: String| -> Change {
        Box::new(move |store| {
            for object in support::objects(&text) {
                store.insert(object);
            }
        })
    };
    let cases: Vec<(&str, Change, &[&str], &[&str])> = vec![
        (
            "new addresses",
            insert(slice("web-1", "web", &["10.0.0.7", "10.0.0.3"])),
            &["web"],
            &["a"],
        ),
        (
            "a second slice",
            insert(slice("web-2", "web", &["10.0.0.9"])),
            &["web"],
            &["a"],
        ),
        (
            "a slice deleted",
            Box::new(|store| {
                store.remove(&ObjectKey::new(
                    Kind::EndpointSlice,
                    Some("default"),
                    "web-1",
                ));
            }),
            &["web"],
            &["a"],
        ),
        (
            "a slice moved to another Service",
            insert(slice("web-1", "other", &["10.0.0.1"])),
            &["web", "other"],
            &["a", "b"],
        ),
        (
            "the same addresses again",
            insert(slice("other-1", "other", &["10.0.1.1"]).replace("8080", "9090")),
            &["other"],
            &[],
        ),
    ];
    for (case, change, services, groups) in cases {
        let mut store = support::store(support::objects(BASE));
        let before = compile(&store, &options);
        let mut previous: Snapshots = before
            .snapshots
            .iter()
            .map(|(group, s)| (group.clone(), Arc::new(GroupSnapshot::compiled(s.clone()))))
            .collect();
        change(&mut store);
        let services: BTreeSet<(String, String)> = services
            .iter()
            .map(|s| ("default".to_owned(), s.to_string()))
            .collect();
        let changed = refresh_endpoints(&store, &mut previous, &services);
        let full = compile(&store, &options);
        let refreshed: BTreeMap<String, Snapshot> = previous
            .iter()
            .map(|(group, s)| (group.clone(), (*s.whole()).clone()))
            .collect();
        assert_eq!(refreshed, full.snapshots, "{case}");
        assert_eq!(
            before.statuses, full.statuses,
            "{case}: statuses do not depend on endpoints"
        );
        assert_eq!(changed, groups, "{case}: groups sealed again");
        for (group, snapshot) in &before.snapshots {
            let moved = snapshot.version != full.snapshots[group].version;
            assert_eq!(moved, groups.contains(&group.as_str()), "{case}: {group}");
        }
    }
}
