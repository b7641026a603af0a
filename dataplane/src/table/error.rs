//! Why a snapshot cannot become a table: the object (its Origin) and the
//! field at fault, so a NACK reads as a path to the bad value.

use gatehouse_snapshot::Origin;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{object}: {field}: {problem}")]
pub struct BuildError {
    /// The object at fault, e.g. `HTTPRoute ns/name rule 0`.
    pub object: String,
    /// Path of the field inside the snapshot, e.g. `rules[3].backends[0].weight`.
    pub field: String,
    pub problem: String,
}

impl BuildError {
    pub fn new(object: String, field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            object,
            field: field.into(),
            problem: problem.into(),
        }
    }
}

/// Names an object by its origin: `Kind namespace/name section`.
pub fn describe(origin: Option<&Origin>) -> String {
    let Some(origin) = origin else {
        return "object without origin".to_owned();
    };
    let mut text = origin.kind.clone();
    if !text.is_empty() {
        text.push(' ');
    }
    if !origin.namespace.is_empty() {
        text.push_str(&origin.namespace);
        text.push('/');
    }
    text.push_str(&origin.name);
    if !origin.section.is_empty() {
        text.push_str(" section ");
        text.push_str(&origin.section);
    }
    text
}
