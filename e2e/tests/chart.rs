//! The Helm chart (`charts/gatehouse`), rendered by a real Helm engine and
//! applied to a real API server.
//!
//! Helm: the PyPI package `helm-python-sdk` embeds Helm v4's Go SDK as a
//! shared library; a short Python program (below) runs the same install
//! action `helm template` runs (client-only dry run: schema validation,
//! templates, NOTES) and `helm lint --strict`. Install it with
//! `python3 -m pip install helm-python-sdk==0.2.2`.
//!
//! API server: kube-lite (see `gatehouse_e2e::kube_lite`), where the
//! rendered objects are applied with server-side apply and strict field
//! validation, so a misplaced or misspelled field fails here as it would on
//! a cluster.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use gatehouse_e2e::kube_lite::{KubeLite, repo_root};
use serde::Deserialize;
use serde_json::{Value, json};

/// Runs one Helm action from a JSON request on stdin; prints a JSON result.
/// Exit 2: Helm refused (message on stderr); exit 3: the SDK is missing.
const HELM_PY: &str = r#"
import json, sys
try:
    import helm_python as helm
except ImportError as error:
    print(f"{error}: python3 -m pip install helm-python-sdk==0.2.2", file=sys.stderr)
    sys.exit(3)

def merge(base, over):
    # helm's -f layering: maps merge key by key, anything else replaces.
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out

request = json.load(sys.stdin)
values = {}
for path in request["values_files"]:
    with open(path) as file:
        values = merge(values, helm.values_from_yaml(file.read()))
values = merge(values, request["values"])
try:
    if request["action"] == "lint":
        result = helm.lint(request["chart"], values, strict=True, namespace=request["namespace"])
    else:
        with helm.Chart.load(request["chart"]) as chart:
            config = helm.Config(storage_driver="memory", namespace=request["namespace"])
            release = config.install(chart, request["release"], values,
                                     dry_run="client", namespace=request["namespace"])
            result = {"manifest": release["manifest"], "notes": release.get("notes") or "",
                      "crds": chart.crds}
except helm.HelmError as error:
    print(error, file=sys.stderr)
    sys.exit(2)
json.dump(result, sys.stdout)
"#;

const CONTROLLER_NAME: &str = "gatehouse.dev/gateway-controller";

fn chart_dir() -> PathBuf {
    repo_root().join("charts/gatehouse")
}

fn multi_group_example() -> PathBuf {
    repo_root().join("examples/helm/multi-group.yaml")
}

/// Runs `HELM_PY`; `Err` is Helm's message when it refuses the chart or
/// the values.
fn helm(action: &str, release: &str, files: &[&Path], values: Value) -> Result<Value, String> {
    let request = json!({
        "action": action,
        "chart": chart_dir(),
        "release": release,
        "namespace": release_namespace(release),
        "values_files": files,
        "values": values,
    });
    let python = std::env::var("GATEHOUSE_PYTHON").unwrap_or_else(|_| "python3".into());
    let mut child = Command::new(&python)
        .args(["-c", HELM_PY])
        .env_remove("KUBECONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {python}: {e}"));
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(request.to_string().as_bytes())
        .expect("writing the request");
    let output = child.wait_with_output().expect("waiting for python");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    match output.status.code() {
        Some(0) => Ok(serde_json::from_slice(&output.stdout).expect("helm result is JSON")),
        Some(2) => Err(stderr),
        Some(3) => panic!("helm-python-sdk is not installed: {stderr}"),
        _ => panic!("{python} failed ({}): {stderr}", output.status),
    }
}

/// Each test release installs into a namespace of its own name.
fn release_namespace(release: &str) -> String {
    format!("{release}-system")
}

/// A chart rendered as `helm template` would.
struct Rendered {
    manifest: String,
    objects: Vec<Value>,
    notes: String,
    crds: Vec<Value>,
}

fn template(release: &str, files: &[&Path], values: Value) -> Result<Rendered, String> {
    let result = helm("template", release, files, values)?;
    let manifest = result["manifest"].as_str().expect("manifest").to_string();
    Ok(Rendered {
        objects: parse_documents(&manifest),
        manifest,
        notes: result["notes"].as_str().unwrap_or_default().to_string(),
        crds: result["crds"].as_array().cloned().unwrap_or_default(),
    })
}

fn render(release: &str, files: &[&Path], values: Value) -> Rendered {
    template(release, files, values).unwrap_or_else(|error| panic!("helm template: {error}"))
}

fn render_defaults() -> Rendered {
    render("gatehouse", &[], json!({}))
}

fn render_multi_group() -> Rendered {
    render("edge", &[&multi_group_example()], json!({}))
}

fn parse_documents(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|document| Value::deserialize(document).expect("rendered YAML parses"))
        .filter(|object| !object.is_null())
        .collect()
}

impl Rendered {
    fn kinds_and_names(&self) -> Vec<(String, String)> {
        let mut all: Vec<_> = self
            .objects
            .iter()
            .map(|o| (text(&o["kind"]), text(&o["metadata"]["name"])))
            .collect();
        all.sort();
        all
    }

    fn get(&self, kind: &str, name: &str) -> &Value {
        self.objects
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name} in {:?}", self.kinds_and_names()))
    }

    fn of_kind(&self, kind: &str) -> Vec<&Value> {
        self.objects.iter().filter(|o| o["kind"] == kind).collect()
    }
}

fn text(value: &Value) -> String {
    value.as_str().unwrap_or_default().to_string()
}

fn names(list: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut all: Vec<_> = list
        .iter()
        .map(|(kind, name)| (kind.to_string(), name.to_string()))
        .collect();
    all.sort();
    all
}

fn container(deployment: &Value) -> &Value {
    &deployment["spec"]["template"]["spec"]["containers"][0]
}

fn args(deployment: &Value) -> Vec<String> {
    container(deployment)["args"]
        .as_array()
        .expect("container args")
        .iter()
        .map(text)
        .collect()
}

/// `(name, port, targetPort)` of a Service.
fn service_ports(service: &Value) -> Vec<(String, u64, u64)> {
    service["spec"]["ports"]
        .as_array()
        .expect("service ports")
        .iter()
        .map(|p| {
            (
                text(&p["name"]),
                p["port"].as_u64().unwrap(),
                p["targetPort"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

fn container_ports(deployment: &Value) -> Vec<(String, u64)> {
    container(deployment)["ports"]
        .as_array()
        .expect("container ports")
        .iter()
        .map(|p| (text(&p["name"]), p["containerPort"].as_u64().unwrap()))
        .collect()
}

#[test]
fn chart_lints_clean_with_default_and_example_values() {
    let example = multi_group_example();
    for (label, files) in [
        ("defaults", vec![]),
        ("multi-group", vec![example.as_path()]),
    ] {
        let report = helm("lint", "gatehouse", &files, json!({})).expect("lint runs");
        assert_eq!(report["total_charts_linted"], 1, "{label}: {report}");
        let problems: Vec<_> = report["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["severity"].as_u64().unwrap_or(3) >= 2)
            .collect();
        assert!(
            problems.is_empty(),
            "{label}: lint warnings or errors: {problems:?}"
        );
    }
}

#[test]
fn default_install_renders_controller_one_group_and_gateway_class() {
    let rendered = render_defaults();
    assert_eq!(
        rendered.kinds_and_names(),
        names(&[
            ("ClusterRole", "gatehouse-controller"),
            ("ClusterRoleBinding", "gatehouse-controller"),
            ("Deployment", "gatehouse-controller"),
            ("Deployment", "gatehouse-dataplane-default"),
            ("GatewayClass", "gatehouse"),
            ("Role", "gatehouse-controller"),
            ("RoleBinding", "gatehouse-controller"),
            ("Service", "gatehouse-controller"),
            ("Service", "gatehouse-dataplane-default"),
            ("ServiceAccount", "gatehouse-controller"),
            ("ServiceAccount", "gatehouse-dataplane"),
        ])
    );
    let cluster_scoped = ["ClusterRole", "ClusterRoleBinding", "GatewayClass"];
    for object in &rendered.objects {
        let expected = match cluster_scoped.contains(&object["kind"].as_str().unwrap()) {
            true => Value::Null,
            false => json!("gatehouse-system"),
        };
        assert_eq!(object["metadata"]["namespace"], expected, "{object}");
        assert_eq!(
            object["metadata"]["labels"]["app.kubernetes.io/instance"],
            "gatehouse"
        );
    }
    let class = rendered.get("GatewayClass", "gatehouse");
    assert_eq!(class["apiVersion"], "gateway.networking.k8s.io/v1");
    assert_eq!(class["spec"]["controllerName"], CONTROLLER_NAME);
    assert!(
        rendered.notes.contains("gatehouse-dataplane-default"),
        "{}",
        rendered.notes
    );
    let crd_names: Vec<String> = rendered
        .crds
        .iter()
        .map(|c| {
            let crd: Value =
                serde_yaml::from_str(c["data"].as_str().expect("CRD text")).expect("CRD YAML");
            crd["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert_eq!(crd_names, ["filters.gatehouse.dev"]);
}

#[test]
fn controller_runs_kubernetes_mode_with_leader_election_and_probes() {
    let rendered = render_defaults();
    let deployment = rendered.get("Deployment", "gatehouse-controller");
    assert_eq!(deployment["spec"]["replicas"], 2);
    assert_eq!(
        args(deployment),
        [
            "kubernetes",
            "--grpc",
            "0.0.0.0:18000",
            "--admin",
            "0.0.0.0:9901",
            "--port-offset",
            "10000",
            "--lease-name",
            "gatehouse-controller",
        ]
    );
    let c = container(deployment);
    assert_eq!(c["command"], json!(["/usr/local/bin/gatehouse-controller"]));
    assert_eq!(c["image"], "gatehouse:0.1.0");
    let env = c["env"].as_array().unwrap();
    let field_of = |name: &str| {
        env.iter().find(|e| e["name"] == name).unwrap()["valueFrom"]["fieldRef"]["fieldPath"]
            .clone()
    };
    assert_eq!(field_of("POD_NAME"), "metadata.name", "default --identity");
    assert_eq!(
        field_of("POD_NAMESPACE"),
        "metadata.namespace",
        "default --lease-namespace"
    );
    assert_eq!(
        container_ports(deployment),
        [("grpc".to_string(), 18000), ("admin".to_string(), 9901)]
    );
    assert_eq!(
        c["readinessProbe"]["httpGet"],
        json!({"path": "/readyz", "port": "admin"})
    );
    assert_eq!(
        c["livenessProbe"]["httpGet"],
        json!({"path": "/healthz", "port": "admin"})
    );
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "gatehouse-controller");
    assert_eq!(pod["automountServiceAccountToken"], true);

    let service = rendered.get("Service", "gatehouse-controller");
    assert_eq!(service["spec"]["type"], "ClusterIP");
    assert_eq!(
        service["spec"]["selector"]["app.kubernetes.io/component"],
        "controller"
    );
    let ports: Vec<_> = service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                text(&p["name"]),
                p["port"].as_u64().unwrap(),
                text(&p["targetPort"]),
            )
        })
        .collect();
    assert_eq!(
        ports,
        [
            ("grpc".to_string(), 18000, "grpc".to_string()),
            ("admin".to_string(), 9901, "admin".to_string())
        ]
    );
}

#[test]
fn dataplane_follows_the_controller_service_without_api_access() {
    let rendered = render_defaults();
    let deployment = rendered.get("Deployment", "gatehouse-dataplane-default");
    assert_eq!(deployment["spec"]["replicas"], 2);
    assert_eq!(
        args(deployment),
        [
            "--controller",
            "http://gatehouse-controller:18000",
            "--group",
            "default",
            "--node-id",
            "$(POD_NAME)",
            "--admin",
            "0.0.0.0:9902",
            "--client-header-timeout",
            "60",
            "--client-send-timeout",
            "60",
            "--client-body-timeout",
            "60",
        ]
    );
    let c = container(deployment);
    assert_eq!(c["command"], json!(["/usr/local/bin/gatehouse-dataplane"]));
    assert_eq!(
        c["readinessProbe"]["httpGet"],
        json!({"path": "/readyz", "port": "admin"})
    );
    assert_eq!(
        container_ports(deployment),
        [("admin".to_string(), 9902), ("http".to_string(), 10080)]
    );
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "gatehouse-dataplane");
    assert_eq!(pod["automountServiceAccountToken"], false);
    let account = rendered.get("ServiceAccount", "gatehouse-dataplane");
    assert_eq!(account["automountServiceAccountToken"], false);
    let bound: Vec<_> = rendered
        .of_kind("ClusterRoleBinding")
        .into_iter()
        .chain(rendered.of_kind("RoleBinding"))
        .flat_map(|b| b["subjects"].as_array().unwrap().clone())
        .map(|s| text(&s["name"]))
        .collect();
    assert!(
        !bound.contains(&"gatehouse-dataplane".to_string()),
        "{bound:?}"
    );

    let service = rendered.get("Service", "gatehouse-dataplane-default");
    assert_eq!(service["spec"]["type"], "LoadBalancer");
    assert_eq!(service_ports(service), [("http".to_string(), 80, 10080)]);
    let labels = &service["metadata"]["labels"];
    assert_eq!(labels["gatehouse.dev/cluster-group"], "default");
    assert_eq!(labels["app.kubernetes.io/component"], "dataplane");
    assert_eq!(
        service["spec"]["selector"],
        deployment["spec"]["selector"]["matchLabels"]
    );
}

#[test]
fn every_pod_runs_non_root_with_read_only_root_and_no_capabilities() {
    for rendered in [render_defaults(), render_multi_group()] {
        let deployments = rendered.of_kind("Deployment");
        assert!(deployments.len() >= 2);
        for deployment in deployments {
            let name = text(&deployment["metadata"]["name"]);
            let pod = &deployment["spec"]["template"]["spec"];
            assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{name}");
            assert_eq!(pod["securityContext"]["runAsUser"], 65532, "{name}");
            assert_eq!(
                pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
                "{name}"
            );
            for c in pod["containers"].as_array().unwrap() {
                let security = &c["securityContext"];
                assert_eq!(security["runAsNonRoot"], true, "{name}");
                assert_eq!(security["allowPrivilegeEscalation"], false, "{name}");
                assert_eq!(security["readOnlyRootFilesystem"], true, "{name}");
                assert_eq!(security["capabilities"]["drop"], json!(["ALL"]), "{name}");
                assert!(security["capabilities"]["add"].is_null(), "{name}");
            }
        }
    }
}

/// `(apiGroups, resources, verbs)` of each rule, as listed.
fn rules(role: &Value) -> Vec<(Vec<String>, Vec<String>, Vec<String>)> {
    let strings = |v: &Value| v.as_array().unwrap().iter().map(text).collect::<Vec<_>>();
    role["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                strings(&r["apiGroups"]),
                strings(&r["resources"]),
                strings(&r["verbs"]),
            )
        })
        .collect()
}

fn rule(
    groups: &[&str],
    resources: &[&str],
    verbs: &[&str],
) -> (Vec<String>, Vec<String>, Vec<String>) {
    let owned = |list: &[&str]| list.iter().map(|s| s.to_string()).collect();
    (owned(groups), owned(resources), owned(verbs))
}

#[test]
fn rbac_grants_the_listed_permissions_only() {
    let rendered = render_defaults();
    let read = ["get", "list", "watch"];
    assert_eq!(
        rules(rendered.get("ClusterRole", "gatehouse-controller")),
        [
            rule(
                &["gateway.networking.k8s.io"],
                &[
                    "gatewayclasses",
                    "gateways",
                    "httproutes",
                    "grpcroutes",
                    "referencegrants",
                    "backendtlspolicies"
                ],
                &read
            ),
            rule(
                &["gateway.networking.k8s.io"],
                &[
                    "gatewayclasses/status",
                    "gateways/status",
                    "httproutes/status",
                    "grpcroutes/status",
                    "backendtlspolicies/status"
                ],
                &["update", "patch"]
            ),
            rule(&["gateway.networking.k8s.io"], &["gateways"], &["patch"]),
            rule(&["gatehouse.dev"], &["filters"], &read),
            rule(
                &["gatehouse.dev"],
                &["filters/status"],
                &["update", "patch"]
            ),
            rule(
                &["apiextensions.k8s.io"],
                &["customresourcedefinitions"],
                &["get"]
            ),
            rule(
                &[""],
                &["services", "secrets", "configmaps", "namespaces"],
                &read
            ),
            rule(&["discovery.k8s.io"], &["endpointslices"], &read),
            rule(&["", "events.k8s.io"], &["events"], &["create", "patch"]),
        ]
    );
    let crd_rule = rendered.get("ClusterRole", "gatehouse-controller")["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["apiGroups"][0] == "apiextensions.k8s.io")
        .cloned()
        .unwrap();
    assert_eq!(
        crd_rule["resourceNames"],
        json!(["filters.gatehouse.dev"]),
        "only our own CRD can be read"
    );
    let role = rendered.get("Role", "gatehouse-controller");
    assert_eq!(role["metadata"]["namespace"], "gatehouse-system");
    assert_eq!(
        rules(role),
        [rule(
            &["coordination.k8s.io"],
            &["leases"],
            &[
                "get", "list", "watch", "create", "update", "patch", "delete"
            ]
        )]
    );
    for (kind, role_kind) in [
        ("ClusterRoleBinding", "ClusterRole"),
        ("RoleBinding", "Role"),
    ] {
        let binding = rendered.get(kind, "gatehouse-controller");
        assert_eq!(binding["roleRef"]["kind"], role_kind);
        assert_eq!(binding["roleRef"]["name"], "gatehouse-controller");
        assert_eq!(
            binding["subjects"],
            json!([{"kind": "ServiceAccount", "name": "gatehouse-controller", "namespace": "gatehouse-system"}])
        );
    }
    let without = render("gatehouse", &[], json!({"rbac": {"create": false}}));
    assert!(without.of_kind("ClusterRole").is_empty());
    assert!(without.of_kind("Role").is_empty());
}

#[test]
fn multi_group_example_renders_a_deployment_and_service_per_group() {
    let rendered = render_multi_group();
    for group in ["default", "noisy"] {
        let name = format!("edge-dataplane-{group}");
        let deployment = rendered.get("Deployment", &name);
        let service = rendered.get("Service", &name);
        assert_eq!(
            service_ports(service),
            [
                ("http".to_string(), 80, 10080),
                ("https".to_string(), 443, 10443)
            ],
            "{group}"
        );
        assert_eq!(
            container_ports(deployment),
            [
                ("admin".to_string(), 9902),
                ("http".to_string(), 10080),
                ("https".to_string(), 10443)
            ],
            "{group}"
        );
        let a = args(deployment);
        assert_eq!(
            a[..4],
            [
                "--controller",
                "http://edge-controller:18000",
                "--group",
                group
            ]
        );
        for object in [deployment, service] {
            assert_eq!(
                object["metadata"]["labels"]["gatehouse.dev/cluster-group"],
                group
            );
            assert_eq!(
                object["metadata"]["labels"]["app.kubernetes.io/component"],
                "dataplane"
            );
        }
        let selector = &deployment["spec"]["selector"]["matchLabels"];
        assert_eq!(selector["gatehouse.dev/cluster-group"], group);
        assert_eq!(service["spec"]["selector"], *selector);
        let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
        for (key, value) in selector.as_object().unwrap() {
            assert_eq!(
                pod_labels[key], *value,
                "{group}: pod labels match the selector"
            );
        }
        assert_eq!(
            container(deployment)["image"],
            "registry.example.com/gatehouse:0.1.0"
        );
    }
    assert_eq!(
        rendered.get("Deployment", "edge-dataplane-default")["spec"]["replicas"],
        3
    );
    let noisy = rendered.get("Deployment", "edge-dataplane-noisy");
    let pod = &noisy["spec"]["template"]["spec"];
    assert_eq!(pod["nodeSelector"], json!({"gatehouse.dev/pool": "noisy"}));
    assert_eq!(pod["tolerations"][0]["key"], "gatehouse.dev/noisy");
    assert_eq!(container(noisy)["resources"]["requests"]["cpu"], "500m");
    let noisy_service = rendered.get("Service", "edge-dataplane-noisy");
    assert_eq!(noisy_service["spec"]["externalTrafficPolicy"], "Local");
    assert_eq!(
        noisy_service["metadata"]["annotations"]["service.beta.kubernetes.io/aws-load-balancer-type"],
        "nlb"
    );
    // The default group keeps the defaults the noisy one overrides.
    let default = rendered.get("Deployment", "edge-dataplane-default");
    assert!(default["spec"]["template"]["spec"]["nodeSelector"].is_null());
    assert_eq!(container(default)["resources"]["requests"]["cpu"], "100m");
}

#[test]
fn hpa_owns_the_replica_count_and_pdbs_follow_each_group() {
    let rendered = render_multi_group();
    let noisy = rendered.get("Deployment", "edge-dataplane-noisy");
    assert!(
        noisy["spec"]["replicas"].is_null(),
        "the HPA sets the replicas"
    );
    let hpas = rendered.of_kind("HorizontalPodAutoscaler");
    assert_eq!(hpas.len(), 1);
    let hpa = hpas[0];
    assert_eq!(hpa["apiVersion"], "autoscaling/v2");
    assert_eq!(hpa["metadata"]["name"], "edge-dataplane-noisy");
    assert_eq!(
        hpa["spec"]["scaleTargetRef"],
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": "edge-dataplane-noisy"})
    );
    assert_eq!(
        (
            hpa["spec"]["minReplicas"].clone(),
            hpa["spec"]["maxReplicas"].clone()
        ),
        (json!(2), json!(8))
    );
    assert_eq!(
        hpa["spec"]["metrics"],
        json!([{"type": "Resource", "resource": {"name": "cpu",
            "target": {"type": "Utilization", "averageUtilization": 60}}}])
    );

    let pdb = rendered.get("PodDisruptionBudget", "edge-dataplane-default");
    assert_eq!(pdb["spec"]["minAvailable"], 2);
    assert!(pdb["spec"]["maxUnavailable"].is_null());
    let pdb = rendered.get("PodDisruptionBudget", "edge-dataplane-noisy");
    assert_eq!(
        pdb["spec"]["maxUnavailable"], 1,
        "maxUnavailable wins over the default minAvailable"
    );
    assert!(pdb["spec"]["minAvailable"].is_null());
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"],
        noisy["spec"]["selector"]["matchLabels"]
    );
}

#[test]
fn group_entries_override_defaults_even_with_false() {
    let values = json!({
        "dataplane": {"portOffset": 20000, "defaults": {
            "hpa": {"enabled": true, "maxReplicas": 4},
            "ports": [{"port": 8080}],
        }},
        "groups": [
            {"name": "a", "hpa": {"enabled": false}, "replicas": 1},
            {"name": "b", "pdb": {"enabled": true, "minAvailable": "50%"}},
        ],
    });
    let rendered = render("gatehouse", &[], values);
    let a = rendered.get("Deployment", "gatehouse-dataplane-a");
    assert_eq!(
        a["spec"]["replicas"], 1,
        "group a turned the default HPA off"
    );
    let hpas = rendered.of_kind("HorizontalPodAutoscaler");
    assert_eq!(hpas.len(), 1);
    assert_eq!(hpas[0]["metadata"]["name"], "gatehouse-dataplane-b");
    assert_eq!(hpas[0]["spec"]["maxReplicas"], 4);
    assert_eq!(
        hpas[0]["spec"]["minReplicas"], 2,
        "other HPA keys keep their defaults"
    );
    let pdb = rendered.get("PodDisruptionBudget", "gatehouse-dataplane-b");
    assert_eq!(pdb["spec"]["minAvailable"], "50%");
    // A port without a name gets one; the offset moves target ports and the
    // controller's flag together.
    let service = rendered.get("Service", "gatehouse-dataplane-a");
    assert_eq!(
        service_ports(service),
        [("port-8080".to_string(), 8080, 28080)]
    );
    let controller = args(rendered.get("Deployment", "gatehouse-controller"));
    let offset = controller
        .iter()
        .position(|a| a == "--port-offset")
        .unwrap();
    assert_eq!(controller[offset + 1], "20000");
}

#[test]
fn bad_values_fail_template_with_a_schema_error() {
    struct Case {
        name: &'static str,
        values: Value,
        message: &'static str,
    }
    let cases = [
        Case {
            name: "replicas of the wrong type",
            values: json!({"groups": [{"name": "default", "replicas": "two"}]}),
            message: "at '/groups/0/replicas': got string, want integer",
        },
        Case {
            name: "unknown key in a group",
            values: json!({"groups": [{"name": "default", "replica": 2}]}),
            message: "additional properties 'replica' not allowed",
        },
        Case {
            name: "group name that is not a DNS label",
            values: json!({"groups": [{"name": "Noisy_Group"}]}),
            message: "at '/groups/0/name': 'Noisy_Group' does not match pattern",
        },
        Case {
            name: "group without a name",
            values: json!({"groups": [{"replicas": 2}]}),
            message: "missing property 'name'",
        },
        Case {
            name: "misspelled top-level key",
            values: json!({"group": [{"name": "default"}]}),
            message: "additional properties 'group' not allowed",
        },
        Case {
            name: "listener port out of range",
            values: json!({"groups": [{"name": "a", "ports": [{"port": 70000}]}]}),
            message: "at '/groups/0/ports/0/port'",
        },
        Case {
            name: "unknown Service type",
            values: json!({"groups": [{"name": "a", "service": {"type": "Ingress"}}]}),
            message: "at '/groups/0/service/type'",
        },
        Case {
            name: "PDB budget that is neither a count nor a percentage",
            values: json!({"groups": [{"name": "a", "pdb": {"enabled": true, "minAvailable": "half"}}]}),
            message: "at '/groups/0/pdb/minAvailable'",
        },
        Case {
            name: "unknown key in the defaults",
            values: json!({"dataplane": {"defaults": {"replicaCount": 2}}}),
            message: "additional properties 'replicaCount' not allowed",
        },
    ];
    for case in cases {
        let error = template("gatehouse", &[], case.values)
            .err()
            .unwrap_or_else(|| panic!("{}: template succeeded", case.name));
        assert!(
            error.contains("values don't meet the specifications of the schema"),
            "{}: not a schema error: {error}",
            case.name
        );
        assert!(error.contains(case.message), "{}: {error}", case.name);
    }
}

#[test]
fn template_rejects_group_mistakes_the_schema_cannot_see() {
    let cases = [
        (
            json!({"groups": [{"name": "a"}, {"name": "a"}]}),
            "groups: \"a\" is listed twice",
        ),
        (
            json!({"dataplane": {"portOffset": 60000}, "groups": [{"name": "a", "ports": [{"port": 8443}]}]}),
            "port 8443 + dataplane.portOffset 60000 is above 65535",
        ),
        (
            json!({"groups": [{"name": "a", "ports": [{"port": 80}, {"port": 80, "name": "again"}]}]}),
            "port 80 is listed twice",
        ),
        (
            json!({"groups": [{"name": "a".repeat(50)}]}),
            "is longer than 63 characters",
        ),
        (
            json!({"groups": [{"name": "a", "hpa": {"enabled": true, "minReplicas": 5, "maxReplicas": 2}}]}),
            "hpa.minReplicas is above hpa.maxReplicas",
        ),
    ];
    for (values, message) in cases {
        let error = template("gatehouse", &[], values.clone())
            .err()
            .unwrap_or_else(|| panic!("{values}: template succeeded"));
        assert!(error.contains(message), "{values}: {error}");
    }
}

#[test]
fn monitoring_objects_render_only_when_enabled() {
    let rendered = render_defaults();
    assert!(rendered.of_kind("ServiceMonitor").is_empty());
    assert!(rendered.of_kind("PodMonitor").is_empty());
    assert!(!rendered.manifest.contains("monitoring.coreos.com"));

    let values = json!({"metrics": {
        "serviceMonitor": {"enabled": true, "labels": {"release": "prometheus"}},
        "podMonitor": {"enabled": true, "interval": "15s"},
    }});
    let rendered = render("gatehouse", &[], values);
    let monitor = rendered.get("ServiceMonitor", "gatehouse-controller");
    assert_eq!(monitor["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(monitor["metadata"]["labels"]["release"], "prometheus");
    assert_eq!(
        monitor["spec"]["selector"]["matchLabels"],
        rendered.get("Service", "gatehouse-controller")["spec"]["selector"],
        "selects the controller Service (whose labels include its selector)"
    );
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "admin");
    assert_eq!(monitor["spec"]["endpoints"][0]["path"], "/metrics");
    let pods = rendered.get("PodMonitor", "gatehouse-dataplane");
    assert_eq!(pods["spec"]["podMetricsEndpoints"][0]["port"], "admin");
    assert_eq!(pods["spec"]["podMetricsEndpoints"][0]["interval"], "15s");
    assert_eq!(
        pods["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"],
        "dataplane"
    );
}

#[test]
fn chart_crds_are_copies_of_the_generated_crds() {
    let manifest_files = |dir: &Path| -> Vec<(String, String)> {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .map(|entries| entries.flatten().collect())
            .unwrap_or_else(|_| Vec::new())
            .into_iter()
            .map(|e| e.path())
            .filter(|p| {
                matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("yaml" | "yml" | "json")
                )
            })
            .map(|p| {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                (name, std::fs::read_to_string(&p).unwrap())
            })
            .collect();
        files.sort();
        files
    };
    let generated = manifest_files(&repo_root().join("crds"));
    let shipped = manifest_files(&chart_dir().join("crds"));
    let names = |files: &[(String, String)]| files.iter().map(|f| f.0.clone()).collect::<Vec<_>>();
    assert_eq!(
        names(&shipped),
        names(&generated),
        "charts/gatehouse/crds/ must hold exactly the files of crds/: copy them over"
    );
    for ((name, chart), (_, top)) in shipped.iter().zip(&generated) {
        assert!(
            chart == top,
            "charts/gatehouse/crds/{name} differs from crds/{name}: copy it over"
        );
    }
    assert_eq!(
        render_defaults().crds.len(),
        shipped.len(),
        "Helm loads every shipped CRD"
    );
}

#[test]
fn container_commands_are_where_the_dockerfile_installs_the_binaries() {
    let dockerfile = std::fs::read_to_string(repo_root().join("Dockerfile")).expect("Dockerfile");
    let rendered = render_defaults();
    for deployment in rendered.of_kind("Deployment") {
        let command = text(&container(deployment)["command"][0]);
        let binary = command.rsplit('/').next().unwrap();
        let directory = command.strip_suffix(binary).unwrap();
        assert!(
            dockerfile.contains(&format!("target/release/{binary}")),
            "the Dockerfile builds no {binary}"
        );
        assert!(
            dockerfile
                .lines()
                .any(|l| l.starts_with("COPY") && l.contains(binary) && l.contains(directory)),
            "the Dockerfile does not copy {binary} into {directory}"
        );
    }
    assert!(dockerfile.contains("gcr.io/distroless/cc-debian12:nonroot"));
}

/// `(kind, name)` of the objects of `release` (by its instance label) that
/// the server holds, of every kind the chart renders.
fn stored_objects(kube: &KubeLite, release: &str) -> Vec<(String, String)> {
    let selector = format!("app.kubernetes.io/instance={release}");
    let namespaced = "serviceaccounts,services,deployments,roles,rolebindings,\
                      horizontalpodautoscalers,poddisruptionbudgets";
    let cluster = "clusterroles,clusterrolebindings,gatewayclasses";
    let namespace = release_namespace(release);
    let mut all = Vec::new();
    for args in [
        vec![
            namespaced,
            "--namespace",
            &namespace,
            "--selector",
            &selector,
        ],
        vec![cluster, "--selector", &selector],
    ] {
        let list = kube.get_json(&args).expect("listing the release's objects");
        for item in list["items"].as_array().unwrap() {
            all.push((text(&item["kind"]), text(&item["metadata"]["name"])));
        }
    }
    all.sort();
    all
}

#[test]
fn rendered_chart_applies_to_an_api_server_with_strict_validation() {
    // Render while the server starts.
    let rendering = std::thread::spawn(|| (render_defaults(), render_multi_group()));
    let kube = KubeLite::start();
    kube.apply_gateway_api_crds()
        .expect("Gateway API CRDs apply");

    // Strict validation is on: a misspelled field is refused, so a chart
    // mistake would be too.
    let typo = "apiVersion: v1\nkind: Service\nmetadata: {name: typo, namespace: default}\n\
                spec: {ports: [{port: 80, targetPortt: 8080}]}\n";
    let refused = kube
        .apply_str(typo)
        .expect_err("a misspelled field is refused");
    assert!(refused.to_string().contains("targetPortt"), "{refused:#}");

    let (defaults, multi_group) = rendering.join().expect("rendering the chart");
    for (release, rendered) in [("gatehouse", &defaults), ("edge", &multi_group)] {
        let namespace = release_namespace(release);
        kube.run_kubectl(&["create", "namespace", &namespace], None)
            .expect("namespace");
        // As `helm install` does: the chart's crds/ first, then templates.
        for crd in &rendered.crds {
            kube.apply_str(crd["data"].as_str().expect("CRD text"))
                .unwrap_or_else(|e| panic!("{release}: CRD {crd}: {e:#}"));
        }
        kube.wait_crds_established(Duration::from_secs(30))
            .expect("the chart's CRDs are established");
        kube.apply_str(&rendered.manifest)
            .unwrap_or_else(|e| panic!("{release}: the rendered chart does not apply: {e:#}"));
        assert_eq!(
            stored_objects(&kube, release),
            rendered.kinds_and_names(),
            "{release}: every rendered object is stored"
        );
    }

    let class = kube.get_json(&["gatewayclass", "gatehouse"]).unwrap();
    assert_eq!(class["spec"]["controllerName"], CONTROLLER_NAME);
    let service = kube
        .get_json(&[
            "service",
            "edge-dataplane-noisy",
            "--namespace",
            "edge-system",
        ])
        .unwrap();
    assert_eq!(
        service_ports(&service),
        [("http".into(), 80, 10080), ("https".into(), 443, 10443)]
    );
    // The data plane Services, found the way the controller finds them.
    let found = kube
        .get_json(&[
            "services",
            "--namespace",
            "edge-system",
            "--selector",
            "app.kubernetes.io/component=dataplane,gatehouse.dev/cluster-group=noisy",
        ])
        .unwrap();
    let found: Vec<_> = found["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| text(&s["metadata"]["name"]))
        .collect();
    assert_eq!(found, ["edge-dataplane-noisy"]);
    let hpa = kube
        .get_json(&["hpa", "edge-dataplane-noisy", "--namespace", "edge-system"])
        .unwrap();
    assert_eq!(hpa["spec"]["maxReplicas"], 8);
}
