//! The snapshot contract between the Gatehouse controller and its data
//! planes: the protobuf types, the gRPC service, and the version seal.
//!
//! The `.proto` file documents every field. Prost types are meant to be used
//! in two places only: the controller's encoder and the data plane's decoder.

#[allow(clippy::all, clippy::pedantic)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/gatehouse.snapshot.v1.rs"));
    include!(concat!(env!("OUT_DIR"), "/gatehouse.snapshot.v1.serde.rs"));
}

pub use generated::*;

/// The gRPC server, sending [`EncodedSnapshot`]s.
#[allow(clippy::all, clippy::pedantic)]
mod server {
    include!(concat!(env!("OUT_DIR"), "/server/gatehouse.snapshot.v1.rs"));
}

pub use encoded::EncodedSnapshot;
pub use server::snapshot_service_server;

pub mod encoded;

pub mod tls;
mod version;

pub use version::VersionDigest;

/// Most retries one request may cause (`Retry.attempts`): the controller
/// holds larger values to it, a data plane refuses a snapshot above it.
pub const MAX_RETRY_ATTEMPTS: u32 = 10;

/// Longest wait before a retry (`Retry.backoff_ms`), however it grows: the
/// controller holds larger values to it, a data plane refuses a snapshot
/// above it.
pub const MAX_RETRY_BACKOFF_MS: u32 = 10_000;

use prost::Message;

/// `Hello.features` entry of a data plane that runs gatehouse.dev filters.
pub const FEATURE_FILTERS: &str = "gatehouse-filters";

/// `Hello.features` entry of a data plane that applies endpoint updates
/// (`Snapshot.base_version`, `Snapshot.endpoint_updates`).
pub const FEATURE_ENDPOINT_UPDATES: &str = "endpoint-updates";

impl Snapshot {
    /// Whether this message is an endpoint update rather than a whole
    /// snapshot.
    pub fn is_endpoint_update(&self) -> bool {
        !self.base_version.is_empty()
    }
}

/// `Hello.features` entry of a data plane that reads PROXY protocol
/// headers (`Port.proxy_protocol`).
pub const FEATURE_PROXY_PROTOCOL: &str = "proxy-protocol";

/// The features a data plane must name to be sent `snapshot`.
pub fn required_features(snapshot: &Snapshot) -> Vec<&'static str> {
    let mut features = Vec::new();
    if !snapshot.filters.is_empty() || !snapshot.chains.is_empty() {
        features.push(FEATURE_FILTERS);
    }
    if snapshot.ports.iter().any(|p| p.proxy_protocol) {
        features.push(FEATURE_PROXY_PROTOCOL);
    }
    features
}

/// The version a snapshot's content hashes to (see [`VersionDigest`]).
pub fn content_version(snapshot: &Snapshot) -> String {
    VersionDigest::of(&mut snapshot.clone()).version()
}

/// Sets `version` to the content version; returns the digest it came from,
/// for endpoint updates to continue from.
pub fn seal(snapshot: &mut Snapshot) -> VersionDigest {
    let digest = VersionDigest::of(snapshot);
    snapshot.version = digest.version();
    digest
}

/// Reads a snapshot from protobuf bytes or from its JSON form (proto3 JSON
/// mapping), whichever the bytes look like.
pub fn decode_any(bytes: &[u8]) -> Result<Snapshot, DecodeError> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first == Some(&b'{') {
        serde_json::from_slice(bytes).map_err(|e| DecodeError(e.to_string()))
    } else {
        Snapshot::decode(bytes).map_err(|e| DecodeError(e.to_string()))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "snapshot does not decode: {}", self.0)
    }
}

impl std::error::Error for DecodeError {}

/// The JSON form of a snapshot for debug output: every private key
/// (`Certificate.key_pem`) and every JWKS from a Secret (which may hold
/// HMAC keys: `JwtAuth.static_jwks` with `symmetric_keys`) replaced by
/// `"<redacted>"`, so that a debug endpoint never hands out what the
/// gateway holds secret.
pub fn debug_json<T: serde::Serialize>(value: &T) -> serde_json::Value {
    fn redact(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::Object(map) => {
                let secret_jwks = map.get("symmetricKeys") == Some(&serde_json::Value::Bool(true));
                for (key, inner) in map.iter_mut() {
                    if key == "keyPem" || (secret_jwks && key == "staticJwks") {
                        *inner = "<redacted>".into();
                    } else {
                        redact(inner);
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(redact),
            _ => {}
        }
    }
    let mut json = serde_json::to_value(value).unwrap_or_default();
    redact(&mut json);
    json
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_json_hides_jwks_from_secrets_but_not_inline_public_keys() {
        let jwt = |jwks: &[u8], symmetric_keys: bool| GatehouseFilter {
            origin: None,
            filter: Some(gatehouse_filter::Filter::JwtAuth(JwtAuth {
                jwks: Some(jwt_auth::Jwks::StaticJwks(jwks.to_vec())),
                symmetric_keys,
                ..Default::default()
            })),
        };
        let snapshot = Snapshot {
            filters: vec![jwt(b"hmac-key-material", true), jwt(b"public-keys", false)],
            ..Default::default()
        };
        let json = debug_json(&snapshot).to_string();
        assert!(json.contains("<redacted>"), "{json}");
        let secret = base64_of(b"hmac-key-material");
        assert!(!json.contains(&secret), "{json}");
        assert!(json.contains(&base64_of(b"public-keys")), "{json}");
    }

    fn base64_of(bytes: &[u8]) -> String {
        serde_json::to_value(JwtAuth {
            jwks: Some(jwt_auth::Jwks::StaticJwks(bytes.to_vec())),
            ..Default::default()
        })
        .unwrap()["staticJwks"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    fn sample() -> Snapshot {
        Snapshot {
            group: "default".into(),
            clusters: vec![Cluster {
                name: "ns/svc:80".into(),
                endpoints: vec![Endpoint {
                    address: "127.0.0.1".into(),
                    port: 8080,
                }],
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn version_ignores_previous_version_and_follows_content() {
        let mut a = sample();
        seal(&mut a);
        let mut b = sample();
        b.version = "stale".into();
        seal(&mut b);
        assert_eq!(a.version, b.version);
        b.clusters[0].endpoints[0].port = 8081;
        seal(&mut b);
        assert_ne!(a.version, b.version);
    }

    #[test]
    fn json_and_protobuf_decode_to_the_same_snapshot() {
        let mut s = sample();
        seal(&mut s);
        let json = serde_json::to_vec(&s).unwrap();
        assert_eq!(decode_any(&json).unwrap(), s);
        assert_eq!(decode_any(&s.encode_to_vec()).unwrap(), s);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decode_any(b"{ not json").is_err());
        assert!(decode_any(&[0xff, 0xff, 0xff, 0x0f]).is_err());
    }
}
