//! `crds/` is generated from the Rust types of `gatehouse_controller::api`;
//! this fails when someone changes one without the other.

use std::path::Path;

#[test]
fn crds_directory_matches_the_rust_types() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds");
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .expect("crds/ exists")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    on_disk.sort();
    let generated = gatehouse_controller::api::crds();
    let mut names: Vec<String> = generated.iter().map(|(n, _)| n.clone()).collect();
    names.sort();
    assert_eq!(
        on_disk, names,
        "run `gatehouse-controller crds --out crds` and copy crds/ to charts/gatehouse/crds/"
    );
    for (name, yaml) in generated {
        let file = std::fs::read_to_string(dir.join(&name)).unwrap();
        assert!(
            file == yaml,
            "crds/{name} is stale: run `gatehouse-controller crds --out crds` and copy it to charts/gatehouse/crds/"
        );
    }
}

#[test]
fn filter_crd_carries_its_cel_rules() {
    let (_, yaml) = &gatehouse_controller::api::crds()[0];
    let crd: serde_yaml::Value = serde_yaml::from_str(yaml).unwrap();
    let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    let rules: Vec<&str> = spec["x-kubernetes-validations"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|r| r["rule"].as_str().unwrap())
        .collect();
    assert!(
        rules.iter().any(|r| r.contains("size() == 1")),
        "exactly-one rule missing: {rules:?}"
    );
    assert_eq!(
        crd["spec"]["versions"][0]["subresources"]["status"],
        serde_yaml::Value::Mapping(Default::default())
    );
}
