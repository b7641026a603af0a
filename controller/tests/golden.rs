//! Golden compile cases: `golden/<case>/input.yaml` (and optional
//! `options.yaml` with `port_offset`, `listen_address`, `groups_share_host`,
//! `group_addresses` and `placements`) compile to
//! `snapshots.json` and `statuses.json`. Regenerate with
//! `GATEHOUSE_BLESS=1 cargo nextest run -p gatehouse-controller --test golden`
//! and review the diff.

mod support;

use std::fs;
use std::path::{Path, PathBuf};

use gatehouse_controller::compile::{CompileOptions, compile};

fn cases() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut dirs: Vec<PathBuf> = fs::read_dir(&root)
        .expect("tests/golden exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("input.yaml").is_file())
        .collect();
    dirs.sort();
    dirs
}

fn options(dir: &Path) -> CompileOptions {
    let mut options = CompileOptions {
        now: "2026-01-01T00:00:00Z".into(),
        ..Default::default()
    };
    if let Ok(text) = fs::read_to_string(dir.join("options.yaml")) {
        let value: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        if let Some(offset) = value.get("port_offset").and_then(|v| v.as_u64()) {
            options.port_offset = offset as u16;
        }
        if let Some(address) = value.get("listen_address").and_then(|v| v.as_str()) {
            options.listen_address = address.parse().unwrap();
        }
        if let Some(shared) = value.get("groups_share_host").and_then(|v| v.as_bool()) {
            options.groups_share_host = shared;
        }
        // {group: [[type, value], ...]}
        if let Some(groups) = value.get("group_addresses") {
            options.group_addresses = serde_yaml::from_value(groups.clone()).unwrap();
        }
        // {"namespace/name": {group: g, from: group, addresses_of_new_group: bool}}
        if let Some(moves) = value.get("placements").and_then(|v| v.as_mapping()) {
            for (key, placement) in moves {
                let (ns, name) = key.as_str().unwrap().split_once('/').unwrap();
                let handover = placement["from"].as_str().map(|from| {
                    gatehouse_controller::compile::Handover {
                        from: from.to_owned(),
                        addresses_of_new_group: placement["addresses_of_new_group"]
                            .as_bool()
                            .unwrap_or(false),
                    }
                });
                options.placements.insert(
                    (ns.to_owned(), name.to_owned()),
                    gatehouse_controller::compile::Placement {
                        group: placement["group"].as_str().unwrap().to_owned(),
                        handover,
                    },
                );
            }
        }
    }
    options
}

fn render(dir: &Path) -> (String, String) {
    let input = fs::read_to_string(dir.join("input.yaml")).unwrap();
    let store = support::store(support::objects(&input));
    let compiled = compile(&store, &options(dir));
    let snapshots = serde_json::to_string_pretty(&compiled.snapshots).unwrap() + "\n";
    let statuses: Vec<_> = compiled
        .statuses
        .iter()
        .map(|s| s.to_debug_json())
        .collect();
    let statuses = serde_json::to_string_pretty(&statuses).unwrap() + "\n";
    (snapshots, statuses)
}

/// The first differing line with some context, or None.
fn diff(expected: &str, actual: &str) -> Option<String> {
    let e: Vec<&str> = expected.lines().collect();
    let a: Vec<&str> = actual.lines().collect();
    let first = (0..e.len().max(a.len())).find(|&i| e.get(i) != a.get(i))?;
    let from = first.saturating_sub(4);
    let mut out = format!("first difference at line {}:\n", first + 1);
    for i in from..(first + 6) {
        if let Some(l) = e.get(i) {
            out += &format!("-{:5} {l}\n", i + 1);
        }
        if let Some(l) = a.get(i) {
            out += &format!("+{:5} {l}\n", i + 1);
        }
    }
    Some(out)
}

#[test]
fn golden_cases_match() {
    let bless = std::env::var_os("GATEHOUSE_BLESS").is_some();
    let mut failures = Vec::new();
    let all = cases();
    assert!(!all.is_empty(), "no golden cases found");
    for dir in all {
        let (snapshots, statuses) = render(&dir);
        for (file, actual) in [("snapshots.json", snapshots), ("statuses.json", statuses)] {
            let path = dir.join(file);
            if bless {
                fs::write(&path, &actual).unwrap();
                continue;
            }
            let expected = fs::read_to_string(&path).unwrap_or_default();
            if let Some(d) = diff(&expected, &actual) {
                failures.push(format!("{}:\n{d}", path.display()));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "golden files differ (rerun with GATEHOUSE_BLESS=1 to regenerate, then review):\n{}",
        failures.join("\n")
    );
}
