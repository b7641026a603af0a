//! Compile at scale: 10,000 HTTPRoutes (1,000 hostnames × 10 paths) on one
//! Gateway, over 1,000 Services with an EndpointSlice each. The store is
//! built outside the timed closure; the baseline in the same group is a
//! plain clone of the store, to read compile time as a ratio. Then one
//! Service's EndpointSlice change, refreshed instead of compiled, at 1,000
//! and 10,000 routes: its time must not grow with the routes.

use std::collections::BTreeSet;
use std::fmt::Write;
use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use gatehouse_controller::compile::{CompileOptions, compile, refresh_endpoints};
use gatehouse_controller::group_snapshot::GroupSnapshot;
use gatehouse_controller::manifest::parse_documents;
use gatehouse_controller::serve::Snapshots;
use gatehouse_controller::store::Store;

const HOSTS: usize = 1_000;
const PATHS: usize = 10;
const SERVICES: usize = 1_000;

/// HOSTS × PATHS routes over SERVICES Services.
fn manifests() -> String {
    manifests_of(HOSTS, SERVICES)
}

fn manifests_of(hosts: usize, services: usize) -> String {
    let mut out = String::from(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: gatehouse}\nspec: {controllerName: gatehouse.dev/gateway-controller}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: bench}\nspec:\n  gatewayClassName: gatehouse\n  listeners: [{name: http, port: 80, protocol: HTTP}]\n",
    );
    for s in 0..services {
        write!(
            out,
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: svc-{s}, namespace: bench}}\nspec: {{ports: [{{name: http, port: 80}}]}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: svc-{s}-1, namespace: bench, labels: {{kubernetes.io/service-name: svc-{s}}}}}\naddressType: IPv4\nports: [{{name: http, port: 8080}}]\nendpoints: [{{addresses: [10.{}.{}.1]}}, {{addresses: [10.{}.{}.2]}}, {{addresses: [10.{}.{}.3]}}]\n",
            s / 256, s % 256, s / 256, s % 256, s / 256, s % 256
        )
        .unwrap();
    }
    for h in 0..hosts {
        for p in 0..PATHS {
            let svc = (h * PATHS + p) % services;
            write!(
                out,
                "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: r-{h}-{p}, namespace: bench}}\nspec:\n  parentRefs: [{{name: gw}}]\n  hostnames: [host-{h}.example.com]\n  rules:\n  - matches: [{{path: {{type: PathPrefix, value: /p{p}}}}}, {{path: {{type: Exact, value: /e{p}}}, headers: [{{name: x-v, value: '{p}'}}]}}]\n    backendRefs: [{{name: svc-{svc}, port: 80}}]\n"
            )
            .unwrap();
        }
    }
    out
}

fn store() -> Store {
    store_of(&manifests())
}

fn store_of(manifests: &str) -> Store {
    let mut store = Store::new();
    for object in parse_documents(manifests) {
        store.insert(object.expect("bench manifests parse"));
    }
    store
}

fn bench_compile(c: &mut Criterion) {
    let store = store();
    let options = CompileOptions::default();
    let compiled = compile(&store, &options);
    assert_eq!(compiled.statuses.len(), 2 + HOSTS * PATHS);
    let mut group = c.benchmark_group("compile");
    group.sample_size(10);
    group.bench_function("baseline_store_clone_10k_routes", |b| {
        b.iter(|| black_box(store.clone()))
    });
    group.bench_function("compile_10k_routes_1k_services", |b| {
        b.iter(|| black_box(compile(black_box(&store), &options)))
    });
    group.finish();
}

/// An EndpointSlice change: one Service's addresses alternate between two
/// sets, and the last snapshot is refreshed (as the Kubernetes loop does),
/// instead of compiled. The previous version stays alive, as it does in
/// the snapshot hub while data planes are sent the new one.
fn bench_endpoint_refresh(c: &mut Criterion) {
    let mut group = c.benchmark_group("compile");
    group.sample_size(20);
    for (hosts, services) in [(100, 100), (HOSTS, SERVICES)] {
        let mut store = store_of(&manifests_of(hosts, services));
        let mut snapshots: Snapshots = compile(&store, &CompileOptions::default())
            .snapshots
            .into_iter()
            .map(|(group, snapshot)| (group, Arc::new(GroupSnapshot::compiled(snapshot))))
            .collect();
        let slices: Vec<_> = ["10.250.0.1", "10.250.0.2"]
            .iter()
            .map(|address| {
                let text = format!(
                    "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: svc-7-1, namespace: bench, labels: {{kubernetes.io/service-name: svc-7}}}}\naddressType: IPv4\nports: [{{name: http, port: 8080}}]\nendpoints: [{{addresses: [{address}]}}]\n"
                );
                parse_documents(&text).remove(0).expect("slice parses")
            })
            .collect();
        let services = BTreeSet::from([("bench".to_owned(), "svc-7".to_owned())]);
        let mut turn = 0;
        let name = format!("endpoint_change_refresh_{}_routes", hosts * PATHS);
        group.bench_function(name, |b| {
            b.iter(|| {
                turn += 1;
                store.insert(slices[turn % 2].clone());
                let published = snapshots.clone();
                let changed = refresh_endpoints(&store, &mut snapshots, &services);
                assert_eq!(changed.len(), 1);
                black_box((changed, published))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_compile, bench_endpoint_refresh);
criterion_main!(benches);
