//! Helpers shared by the integration tests: manifests to a store.

#![allow(dead_code)]

use gatehouse_controller::manifest::{ManifestError, parse_documents};
use gatehouse_controller::store::{Object, Store};

/// Objects of a manifest text; unknown kinds are skipped, anything else
/// that does not parse fails the test.
pub fn objects(text: &str) -> Vec<Object> {
    parse_documents(text)
        .into_iter()
        .filter_map(|r| match r {
            Ok(o) => Some(o),
            Err(ManifestError::UnknownKind { .. }) => None,
            Err(e) => panic!("manifest does not parse: {e}"),
        })
        .collect()
}

pub fn store(objects: impl IntoIterator<Item = Object>) -> Store {
    let mut store = Store::new();
    for o in objects {
        store.insert(o);
    }
    store
}
