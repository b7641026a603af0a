//! Compile is deterministic: the same objects inserted in any order give
//! byte-identical snapshots (so the same versions) and the same statuses.

mod support;

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use gatehouse_controller::compile::{CompileOptions, compile};
use gatehouse_controller::store::Object;
use proptest::prelude::*;
use prost::Message;

/// Objects of the richest golden cases. Cases reuse names (the class, some
/// Gateways), and a store keeps one object per key, so only the first
/// object of each key is kept: otherwise the input itself would depend on
/// the order.
fn objects() -> Vec<Object> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut seen = BTreeSet::new();
    [
        "precedence",
        "listeners",
        "backends",
        "hostnames",
        "cross-namespace",
        "gatehouse-filters",
    ]
    .iter()
    .flat_map(|case| {
        let text = fs::read_to_string(root.join(case).join("input.yaml")).unwrap();
        support::objects(&text)
    })
    .filter(|o| seen.insert(o.key()))
    .collect()
}

fn encoded(objects: Vec<Object>) -> (Vec<(String, Vec<u8>)>, Vec<serde_json::Value>) {
    let compiled = compile(&support::store(objects), &CompileOptions::default());
    let snapshots = compiled
        .snapshots
        .iter()
        .map(|(group, s)| (format!("{group}@{}", s.version), s.encode_to_vec()))
        .collect();
    let statuses = compiled
        .statuses
        .iter()
        .map(|s| s.to_debug_json())
        .collect();
    (snapshots, statuses)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn shuffled_insertion_gives_identical_bytes_and_versions(
        shuffled in Just(objects()).prop_shuffle()
    ) {
        let baseline = encoded(objects());
        prop_assert!(!baseline.0.is_empty());
        let actual = encoded(shuffled);
        let versions = |e: &(Vec<(String, Vec<u8>)>, _)| e.0.iter().map(|(v, _)| v.clone()).collect::<Vec<_>>();
        prop_assert_eq!(versions(&actual), versions(&baseline));
        prop_assert!(actual == baseline, "same versions but different bytes or statuses");
    }
}
