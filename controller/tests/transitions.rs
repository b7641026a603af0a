//! Between two compiles, a condition that keeps its status keeps its
//! `lastTransitionTime` once carried over; one that changes takes the new
//! time.

mod support;

use std::fs;
use std::path::Path;

use gatehouse_controller::compile::{CompileOptions, compile};
use gatehouse_controller::status::carry_transition_times;
use gatehouse_controller::store::{Kind, Object, ObjectKey};

fn options(now: &str) -> CompileOptions {
    CompileOptions {
        now: now.into(),
        ..Default::default()
    }
}

#[test]
fn broken_backend_changes_resolved_refs_time_but_not_accepted_time() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/basic/input.yaml");
    let mut store = support::store(support::objects(&fs::read_to_string(path).unwrap()));
    let before = compile(&store, &options("2026-01-01T00:00:00Z"));

    let key = ObjectKey::new(Kind::HttpRoute, Some("app"), "web");
    let Some(Object::HttpRoute(mut route)) = store.get(&key).cloned() else {
        panic!("route app/web is in the basic case");
    };
    let rules = route.spec.rules.as_mut().unwrap();
    rules[0].backend_refs.as_mut().unwrap()[0].name = "gone".into();
    store.insert(Object::HttpRoute(route));
    let mut after = compile(&store, &options("2026-02-02T00:00:00Z"));

    let find = |entries: &[gatehouse_controller::status::StatusEntry]| {
        entries
            .iter()
            .position(|s| s.kind == "HTTPRoute" && s.name == "web")
            .unwrap()
    };
    let previous = &before.statuses[find(&before.statuses)];
    let index = find(&after.statuses);
    carry_transition_times(previous, &mut after.statuses[index]);
    let conditions = &after.statuses[index].status["parents"][0]["conditions"];
    assert_eq!(conditions[0]["type"], "Accepted");
    assert_eq!(conditions[0]["lastTransitionTime"], "2026-01-01T00:00:00Z");
    assert_eq!(conditions[1]["type"], "ResolvedRefs");
    assert_eq!(conditions[1]["status"], "False");
    assert_eq!(conditions[1]["lastTransitionTime"], "2026-02-02T00:00:00Z");
    assert_ne!(
        before.snapshots["default"].version, after.snapshots["default"].version,
        "a changed backend changes the snapshot version"
    );
}
