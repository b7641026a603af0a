//! Manifests to objects: multi-document YAML (JSON is YAML), `kind: List`
//! included, as `kubectl apply -f` reads them. A document that cannot become
//! an object is an error value for that document; the others still load.

use serde::Deserialize;
use serde_json::Value;

use crate::k8s::GATEWAY_GROUP;
use crate::store::{Kind, Object};

/// Why one document did not become an object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// The caller logs this as a warning and goes on.
    #[error("document {document}: unknown kind {kind} ({api_version}) named {name:?}")]
    UnknownKind {
        document: usize,
        api_version: String,
        kind: String,
        name: String,
    },
    #[error("document {document}: not valid YAML: {message}")]
    Syntax { document: usize, message: String },
    #[error("document {document} ({kind} {name:?}): at `{path}`: {message}")]
    Invalid {
        document: usize,
        kind: String,
        name: String,
        path: String,
        message: String,
    },
}

/// Parses every document of `text`, in order. Empty documents are skipped;
/// namespaced objects without a namespace land in `default`.
pub fn parse_documents(text: &str) -> Vec<Result<Object, ManifestError>> {
    let mut out = Vec::new();
    for (document, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
        match Value::deserialize(de) {
            Ok(Value::Null) => {}
            Ok(value) => push_value(document, value, &mut out),
            Err(e) => {
                out.push(Err(ManifestError::Syntax {
                    document,
                    message: e.to_string(),
                }));
                // The YAML stream cannot be resynchronised after a syntax
                // error (the reader would repeat it forever): stop here.
                break;
            }
        }
    }
    out
}

fn push_value(document: usize, value: Value, out: &mut Vec<Result<Object, ManifestError>>) {
    if value.get("kind").and_then(Value::as_str) == Some("List") {
        if let Some(Value::Array(items)) = value.get("items") {
            for item in items {
                out.push(parse_object(document, item.clone()));
            }
        }
        return;
    }
    out.push(parse_object(document, value));
}

fn field<'a>(value: &'a Value, name: &str) -> &'a str {
    value.get(name).and_then(Value::as_str).unwrap_or("")
}

/// The kind for an apiVersion/kind pair we read.
fn known_kind(api_version: &str, kind: &str) -> Option<Kind> {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let gateway_version = group == GATEWAY_GROUP && (version == "v1" || version == "v1beta1");
    match (group, version, kind) {
        (_, _, "GatewayClass") if gateway_version => Some(Kind::GatewayClass),
        (_, _, "Gateway") if gateway_version => Some(Kind::Gateway),
        (_, _, "HTTPRoute") if gateway_version => Some(Kind::HttpRoute),
        (_, _, "GRPCRoute") if gateway_version => Some(Kind::GrpcRoute),
        (_, _, "BackendTLSPolicy") if gateway_version => Some(Kind::BackendTlsPolicy),
        (_, _, "ReferenceGrant") if gateway_version => Some(Kind::ReferenceGrant),
        ("", "v1", "Service") => Some(Kind::Service),
        ("", "v1", "Namespace") => Some(Kind::Namespace),
        ("", "v1", "Secret") => Some(Kind::Secret),
        ("", "v1", "ConfigMap") => Some(Kind::ConfigMap),
        ("discovery.k8s.io", "v1", "EndpointSlice") => Some(Kind::EndpointSlice),
        (crate::api::GROUP, "v1alpha1", "Filter") => Some(Kind::Filter),
        _ => None,
    }
}

fn parse_object(document: usize, mut value: Value) -> Result<Object, ManifestError> {
    let api_version = field(&value, "apiVersion").to_owned();
    let kind_name = field(&value, "kind").to_owned();
    let name = value
        .get("metadata")
        .map(|m| field(m, "name").to_owned())
        .unwrap_or_default();
    let Some(kind) = known_kind(&api_version, &kind_name) else {
        return Err(ManifestError::UnknownKind {
            document,
            api_version,
            kind: kind_name,
            name,
        });
    };
    if let Value::Object(map) = &mut value {
        // v1beta1 objects share the v1 schema for the fields we read.
        if api_version.starts_with(GATEWAY_GROUP) {
            map.insert("apiVersion".into(), format!("{GATEWAY_GROUP}/v1").into());
        }
        if kind.is_namespaced() {
            let meta = map
                .entry("metadata")
                .or_insert_with(|| Value::Object(Default::default()));
            if let Value::Object(meta) = meta {
                let ns = meta.entry("namespace").or_insert(Value::Null);
                if ns.is_null() {
                    *ns = "default".into();
                }
            }
        }
    }
    typed(kind, value).map_err(|e| ManifestError::Invalid {
        document,
        kind: kind_name,
        name,
        path: e.path().to_string(),
        message: e.inner().to_string(),
    })
}

type TypedResult = Result<Object, serde_path_to_error::Error<serde_json::Error>>;

fn typed(kind: Kind, value: Value) -> TypedResult {
    fn de<T: serde::de::DeserializeOwned>(
        value: Value,
    ) -> Result<Box<T>, serde_path_to_error::Error<serde_json::Error>> {
        serde_path_to_error::deserialize(value).map(Box::new)
    }
    Ok(match kind {
        Kind::GatewayClass => Object::GatewayClass(de(value)?),
        Kind::Gateway => Object::Gateway(de(value)?),
        Kind::HttpRoute => Object::HttpRoute(de(value)?),
        Kind::GrpcRoute => Object::GrpcRoute(de(value)?),
        Kind::BackendTlsPolicy => Object::BackendTlsPolicy(de(value)?),
        Kind::ReferenceGrant => Object::ReferenceGrant(de(value)?),
        Kind::Service => Object::Service(de(value)?),
        Kind::EndpointSlice => Object::EndpointSlice(de(value)?),
        Kind::Namespace => Object::Namespace(de(value)?),
        Kind::Secret => Object::Secret(de(value)?),
        Kind::ConfigMap => Object::ConfigMap(de(value)?),
        Kind::Filter => Object::Filter(de(value)?),
        // Manifests never name this kind: every Secret loads as a Secret.
        Kind::JwksSecret => Object::JwksSecret(de(value)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_several_documents_and_skips_empty_ones() {
        let text = "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\n---\n{\"apiVersion\": \"v1\", \"kind\": \"Service\", \"metadata\": {\"name\": \"s\"}}\n";
        let objects: Vec<_> = parse_documents(text)
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(objects.len(), 2);
        assert_eq!(objects[1].key().to_string(), "Service default/s");
    }

    #[test]
    fn unknown_kind_is_reported_and_the_rest_loads() {
        let text = "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: x}\n";
        let results = parse_documents(text);
        assert_eq!(
            results[0],
            Err(ManifestError::UnknownKind {
                document: 0,
                api_version: "example.com/v1".into(),
                kind: "Widget".into(),
                name: "w".into()
            })
        );
        assert_eq!(
            results[1].as_ref().unwrap().key().to_string(),
            "ConfigMap x/c"
        );
    }

    #[test]
    fn syntax_error_is_reported_with_its_document_index() {
        let text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\nkind: [unclosed\n";
        let results = parse_documents(text);
        assert!(results[0].is_ok());
        assert!(
            matches!(
                results.get(1),
                Some(Err(ManifestError::Syntax { document: 1, .. }))
            ),
            "{results:?}"
        );
    }

    #[test]
    fn list_items_become_objects() {
        let text = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Namespace\n  metadata: {name: a}\n- apiVersion: gateway.networking.k8s.io/v1beta1\n  kind: ReferenceGrant\n  metadata: {name: g, namespace: b}\n  spec: {from: [], to: []}\n";
        let keys: Vec<_> = parse_documents(text)
            .into_iter()
            .map(|r| r.unwrap().key().to_string())
            .collect();
        assert_eq!(keys, ["Namespace a", "ReferenceGrant b/g"]);
    }

    #[test]
    fn malformed_document_names_its_index_and_field_path() {
        let text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: g}\nspec:\n  gatewayClassName: c\n  listeners:\n  - name: l\n    port: eighty\n    protocol: HTTP\n";
        let results = parse_documents(text);
        match &results[1] {
            Err(ManifestError::Invalid { document, path, .. }) => {
                assert_eq!(*document, 1);
                assert_eq!(path, "spec.listeners[0].port");
            }
            other => panic!("expected an Invalid error, got {other:?}"),
        }
    }
}
