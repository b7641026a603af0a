//! Manifests from a directory, as a store.
//!
//! Every `.yaml`, `.yml` or `.json` file under the directory is read on each
//! scan. A file that fails to parse keeps the objects it had at its last good
//! read, so a half-saved edit never drops live configuration.
//!
//! `metadata.generation` comes from the file when given; otherwise it starts
//! at 1 and goes up by one whenever the object's spec changes while the
//! controller runs. `metadata.creationTimestamp` comes from the file when
//! given, otherwise it is the time the object was first seen.

use std::{
    collections::{BTreeMap, HashMap},
    fs,
    path::{Path, PathBuf},
};

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use tracing::warn;

use crate::{
    manifest::{ManifestError, parse_documents},
    store::{Object, ObjectKey, Store},
};

/// What the source remembers of an object between scans.
#[derive(Debug, Clone)]
struct Seen {
    spec: serde_json::Value,
    generation: i64,
    created: Time,
}

#[derive(Debug, Default)]
pub struct DirSource {
    dir: PathBuf,
    last_good: BTreeMap<PathBuf, Vec<Object>>,
    seen: HashMap<ObjectKey, Seen>,
}

impl DirSource {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            ..Default::default()
        }
    }

    /// Reads the directory again and returns the store it describes.
    pub fn scan(&mut self, now: Timestamp) -> std::io::Result<Store> {
        let files = manifest_files(&self.dir)?;
        let mut current = BTreeMap::new();
        for path in files {
            let objects = match fs::read_to_string(&path) {
                Ok(text) => self.parse_file(&path, &text),
                Err(error) => {
                    warn!(file = %path.display(), %error, "cannot read manifest file");
                    self.last_good.get(&path).cloned()
                }
            };
            if let Some(objects) = objects {
                current.insert(path, objects);
            }
        }
        self.last_good = current;

        let mut store = Store::default();
        let mut seen = HashMap::new();
        for (path, objects) in &self.last_good {
            for object in objects {
                let mut object = object.clone();
                let key = object.key();
                let stamp = stamp(self.seen.get(&key), &mut object, now);
                if store.insert(object).is_some() {
                    warn!(file = %path.display(), object = %key, "object defined twice; the later file wins");
                }
                seen.insert(key, stamp);
            }
        }
        self.seen = seen;
        Ok(store)
    }

    /// The objects of one file, or its last good objects when it does not
    /// parse. Unknown kinds are skipped with a warning.
    fn parse_file(&self, path: &Path, text: &str) -> Option<Vec<Object>> {
        let mut objects = Vec::new();
        for document in parse_documents(text) {
            match document {
                Ok(object) => objects.push(object),
                Err(error @ ManifestError::UnknownKind { .. }) => {
                    warn!(file = %path.display(), %error, "ignoring object of unknown kind");
                }
                Err(error) => {
                    warn!(file = %path.display(), %error, "manifest file does not parse; keeping its last good content");
                    return self.last_good.get(path).cloned();
                }
            }
        }
        Some(objects)
    }
}

/// Fills in generation and creation time, and says what to remember.
fn stamp(previous: Option<&Seen>, object: &mut Object, now: Timestamp) -> Seen {
    let spec = object.spec_value();
    let meta = object.meta_mut();
    let generation = match (meta.generation, previous) {
        (Some(given), _) => given,
        (None, Some(seen)) if seen.spec == spec => seen.generation,
        (None, Some(seen)) => seen.generation + 1,
        (None, None) => 1,
    };
    meta.generation = Some(generation);
    let created = match (&meta.creation_timestamp, previous) {
        (Some(given), _) => given.clone(),
        (None, Some(seen)) => seen.created.clone(),
        (None, None) => Time(now),
    };
    meta.creation_timestamp = Some(created.clone());
    Seen {
        spec,
        generation,
        created,
    }
}

/// Manifest files under `dir`, sorted, skipping hidden and editor files.
fn manifest_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') {
                continue;
            }
            if entry.file_type()?.is_dir() {
                pending.push(path);
            } else if is_manifest(&name) {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

fn is_manifest(name: &str) -> bool {
    [".yaml", ".yml", ".json"]
        .iter()
        .any(|ext| name.ends_with(ext))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTE: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: default}
spec:
  parentRefs: [{name: gw}]
  hostnames: [HOST]
"#;

    fn generation_of(store: &Store) -> i64 {
        let object = store.iter().next().expect("one object");
        object.meta().generation.unwrap()
    }

    #[test]
    fn generation_starts_at_one_and_follows_spec_changes() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("route.yaml");
        let mut source = DirSource::new(dir.path());
        let now = Timestamp::UNIX_EPOCH;

        fs::write(&file, ROUTE.replace("HOST", "a.example.com")).unwrap();
        assert_eq!(generation_of(&source.scan(now).unwrap()), 1);
        assert_eq!(generation_of(&source.scan(now).unwrap()), 1);
        fs::write(&file, ROUTE.replace("HOST", "b.example.com")).unwrap();
        assert_eq!(generation_of(&source.scan(now).unwrap()), 2);
    }

    #[test]
    fn a_broken_file_keeps_its_last_good_objects() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("route.yaml");
        let mut source = DirSource::new(dir.path());
        fs::write(&file, ROUTE.replace("HOST", "a.example.com")).unwrap();
        source.scan(Timestamp::UNIX_EPOCH).unwrap();
        fs::write(&file, "kind: HTTPRoute\nspec: [unterminated").unwrap();
        let store = source.scan(Timestamp::UNIX_EPOCH).unwrap();
        assert_eq!(store.iter().count(), 1);
        fs::remove_file(&file).unwrap();
        assert_eq!(
            source.scan(Timestamp::UNIX_EPOCH).unwrap().iter().count(),
            0
        );
    }

    #[test]
    fn generation_given_in_the_file_wins() {
        let dir = tempfile::tempdir().unwrap();
        let text = ROUTE
            .replace("HOST", "a.example.com")
            .replace("namespace: default}", "namespace: default, generation: 7}");
        fs::write(dir.path().join("r.yml"), text).unwrap();
        let store = DirSource::new(dir.path())
            .scan(Timestamp::UNIX_EPOCH)
            .unwrap();
        assert_eq!(generation_of(&store), 7);
    }
}
