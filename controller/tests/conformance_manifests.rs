//! Every manifest of the upstream conformance suite parses (unknown kinds
//! aside) and compiles without panicking, with the suite's GatewayClass
//! placeholder pointed at a class of ours.

mod support;

use std::fs;
use std::path::{Path, PathBuf};

use gatehouse_controller::compile::{CompileOptions, compile};
use gatehouse_controller::manifest::{ManifestError, parse_documents};

const CONFORMANCE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/gateway-api/v1.6.1/conformance"
);

const OUR_CLASS: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: gatehouse}
spec: {controllerName: gatehouse.dev/gateway-controller}
";

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
}

#[test]
fn conformance_manifests_parse_and_compile() {
    let mut files = Vec::new();
    yaml_files(Path::new(CONFORMANCE), &mut files);
    files.sort();
    assert!(
        files.len() > 50,
        "conformance manifests not found under {CONFORMANCE}"
    );
    let base =
        fs::read_to_string(Path::new(CONFORMANCE).join("base/manifests.yaml")).unwrap_or_default();
    let mut parsed = 0;
    let mut invalid = Vec::new();
    let mut routes_compiled = 0;
    let mut accepted_parents = 0;
    let mut snapshots = 0;
    let mut reasons = std::collections::BTreeMap::new();
    for file in &files {
        let text = fs::read_to_string(file).unwrap();
        let text = text.replace("{GATEWAY_CLASS_NAME}", "gatehouse");
        let mut objects = support::objects(OUR_CLASS);
        for result in parse_documents(&base.replace("{GATEWAY_CLASS_NAME}", "gatehouse"))
            .into_iter()
            .chain(parse_documents(&text))
        {
            match result {
                Ok(object) => {
                    parsed += 1;
                    objects.push(object);
                }
                Err(ManifestError::UnknownKind { .. }) => {}
                Err(e) => invalid.push(format!("{}: {e}", file.display())),
            }
        }
        let store = support::store(objects);
        let compiled = compile(&store, &CompileOptions::default());
        let routes = compiled.statuses.iter().filter(|s| s.kind == "HTTPRoute");
        routes_compiled += routes.clone().count();
        accepted_parents += routes
            .flat_map(|s| s.status["parents"].as_array().cloned().unwrap_or_default())
            .filter(|p| p["conditions"][0]["status"] == "True")
            .count();
        snapshots += compiled.snapshots.len();
        for s in compiled.statuses.iter().filter(|s| s.kind == "HTTPRoute") {
            for p in s.status["parents"].as_array().into_iter().flatten() {
                for c in p["conditions"].as_array().into_iter().flatten() {
                    if c["status"] == "False" {
                        let key = format!(
                            "{}/{}",
                            c["type"].as_str().unwrap_or(""),
                            c["reason"].as_str().unwrap_or("")
                        );
                        *reasons.entry(key).or_insert(0) += 1;
                    }
                }
            }
        }
    }
    eprintln!("route conditions that are False, by reason: {reasons:?}");
    eprintln!(
        "{} files, {parsed} objects, {} invalid documents, {routes_compiled} routes, \
         {accepted_parents} accepted parents, {snapshots} snapshots",
        files.len(),
        invalid.len()
    );
    for i in &invalid {
        eprintln!("  {i}");
    }
    assert!(parsed > 1000, "only {parsed} objects parsed");
    assert!(
        routes_compiled > 50,
        "only {routes_compiled} route statuses"
    );
    // Most suite routes attach to the base manifests' Gateways.
    assert!(
        accepted_parents > routes_compiled / 2,
        "only {accepted_parents} route parents accepted"
    );
    assert!(snapshots >= files.len(), "a file compiled to no snapshot");
    // Manifests using experimental-channel values may not fit the standard
    // types; they must be reported, not panic, and stay a small minority.
    assert!(
        invalid.len() < files.len() / 4,
        "too many invalid documents:\n{}",
        invalid.join("\n")
    );
}
