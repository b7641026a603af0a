//! gatehouse.dev `Filter` objects, checked and turned into the snapshot's
//! `GatehouseFilter`, and indexed by what their `targetRefs` name.
//!
//! Every check the CRD's schema and CEL rules make in a cluster is made
//! again here (standalone manifests never pass an API server), plus the
//! ones a schema cannot make: CIDR syntax, that a JWKS parses and holds
//! keys for the listed algorithms, that a Secret exists. A Filter that
//! fails one is kept with its message: the rules it applies to answer 500
//! and its status says why, so a broken filter never opens a route.

use std::collections::HashMap;

use gatehouse_snapshot as pb;
use gatehouse_snapshot::gatehouse_filter::Filter as Content;
use ipnet::IpNet;

use crate::api::filter::{
    ClientAddress, Filter, FilterSpec, FilterType, IpAccess, JwtAuth, RateLimit, RateLimitKeyType,
    RequestLimits, StaticResponse,
};
use crate::compile::filters::{header_name, is_field_value};
use crate::compile::timeouts::parse_duration;
use crate::compile::tls::secret_value;
use crate::k8s::GATEWAY_GROUP;
use crate::store::Store;

/// What a targetRef names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    Gateway {
        namespace: String,
        name: String,
    },
    Listener {
        namespace: String,
        name: String,
        section: String,
    },
    Route {
        namespace: String,
        name: String,
    },
    Rule {
        namespace: String,
        name: String,
        section: String,
    },
}

/// One Filter object.
#[derive(Debug)]
pub struct FilterModel<'a> {
    pub object: &'a Filter,
    pub namespace: String,
    pub name: String,
    pub kind: FilterType,
    pub order: i32,
    /// Wins over more specific filters of its type (Gateway and listener
    /// attachments only).
    pub enforce: bool,
    /// The snapshot form, or why the Filter is invalid.
    pub content: Result<Content, String>,
    /// Per targetRef, in spec order; `None` for a kind we do not attach to.
    pub targets: Vec<Option<Target>>,
}

impl FilterModel<'_> {
    pub fn generation(&self) -> i64 {
        self.object.metadata.generation.unwrap_or(0)
    }

    /// The snapshot message: the content, or `invalid` with the reason.
    pub fn to_snapshot(&self) -> pb::GatehouseFilter {
        pb::GatehouseFilter {
            origin: Some(pb::Origin {
                kind: "Filter".into(),
                namespace: self.namespace.clone(),
                name: self.name.clone(),
                section: String::new(),
            }),
            filter: Some(match &self.content {
                Ok(content) => content.clone(),
                Err(why) => Content::Invalid(why.clone()),
            }),
        }
    }
}

/// Every Filter of the store, by name and by target.
#[derive(Debug, Default)]
pub struct FilterObjects<'a> {
    pub filters: Vec<FilterModel<'a>>,
    by_name: HashMap<(String, String), usize>,
    by_target: HashMap<Target, Vec<usize>>,
}

impl<'a> FilterObjects<'a> {
    pub fn new(store: &'a Store) -> Self {
        let mut objects = FilterObjects::default();
        for object in store.filters() {
            let namespace = object
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into());
            let name = object.metadata.name.clone().unwrap_or_default();
            let targets: Vec<Option<Target>> = object
                .spec
                .target_refs
                .iter()
                .map(|t| target(&namespace, t))
                .collect();
            let index = objects.filters.len();
            for t in targets.iter().flatten() {
                let entry = objects.by_target.entry(t.clone()).or_default();
                if !entry.contains(&index) {
                    entry.push(index);
                }
            }
            objects
                .by_name
                .insert((namespace.clone(), name.clone()), index);
            objects.filters.push(FilterModel {
                object,
                content: content(store, &namespace, &object.spec),
                kind: object.spec.kind,
                order: object.spec.order,
                enforce: object.spec.enforce,
                namespace,
                name,
                targets,
            });
        }
        objects
    }

    pub fn is_empty(&self) -> bool {
        self.filters.is_empty()
    }

    /// The Filter `namespace/name`, by index.
    pub fn find(&self, namespace: &str, name: &str) -> Option<usize> {
        self.by_name
            .get(&(namespace.to_owned(), name.to_owned()))
            .copied()
    }

    /// Filters whose targetRefs name `target`.
    pub fn targeting(&self, target: &Target) -> &[usize] {
        self.by_target.get(target).map_or(&[], Vec::as_slice)
    }
}

fn target(namespace: &str, t: &crate::api::filter::TargetRef) -> Option<Target> {
    if t.group != GATEWAY_GROUP {
        return None;
    }
    let (namespace, name) = (namespace.to_owned(), t.name.clone());
    Some(match (t.kind.as_str(), t.section_name.clone()) {
        ("Gateway", None) => Target::Gateway { namespace, name },
        ("Gateway", Some(section)) => Target::Listener {
            namespace,
            name,
            section,
        },
        ("HTTPRoute", None) => Target::Route { namespace, name },
        ("HTTPRoute", Some(section)) => Target::Rule {
            namespace,
            name,
            section,
        },
        _ => return None,
    })
}

/// Checks a Filter's spec and builds its snapshot content.
fn content(store: &Store, namespace: &str, spec: &FilterSpec) -> Result<Content, String> {
    let set = [
        spec.static_response.is_some(),
        spec.ip_access.is_some(),
        spec.request_limits.is_some(),
        spec.rate_limit.is_some(),
        spec.jwt_auth.is_some(),
    ]
    .iter()
    .filter(|s| **s)
    .count();
    if set != 1 {
        return Err(
            "spec: exactly one of staticResponse, ipAccess, requestLimits, rateLimit or jwtAuth must be set"
                .into(),
        );
    }
    if spec.enforce && spec.target_refs.iter().any(|t| t.kind != "Gateway") {
        return Err(
            "spec.enforce: only a Filter whose targetRefs are all Gateways (or their listeners) can be enforced"
                .into(),
        );
    }
    for (i, t) in spec.target_refs.iter().enumerate() {
        if t.group != GATEWAY_GROUP || !matches!(t.kind.as_str(), "Gateway" | "HTTPRoute") {
            return Err(format!(
                "spec.targetRefs[{i}]: only {GATEWAY_GROUP} Gateway and HTTPRoute can be targeted, not {}/{}",
                t.group, t.kind
            ));
        }
    }
    let mismatch = || {
        Err(format!(
            "spec.type: {:?} does not name the filter that is set",
            spec.kind
        ))
    };
    match spec.kind {
        FilterType::StaticResponse => match &spec.static_response {
            Some(s) => static_response(s).map(Content::StaticResponse),
            None => mismatch(),
        },
        FilterType::IpAccess => match &spec.ip_access {
            Some(s) => ip_access(s).map(Content::IpAccess),
            None => mismatch(),
        },
        FilterType::RequestLimits => match &spec.request_limits {
            Some(s) => request_limits(s).map(Content::RequestLimits),
            None => mismatch(),
        },
        FilterType::RateLimit => match &spec.rate_limit {
            Some(s) => rate_limit(s).map(Content::RateLimit),
            None => mismatch(),
        },
        FilterType::JwtAuth => match &spec.jwt_auth {
            Some(s) => jwt_auth(store, namespace, s).map(Content::JwtAuth),
            None => mismatch(),
        },
    }
}

fn static_response(spec: &StaticResponse) -> Result<pb::StaticResponse, String> {
    let status = spec.status_code.unwrap_or(200);
    if !(200..=599).contains(&status) {
        return Err(format!(
            "spec.staticResponse.statusCode: {status} is outside 200..=599"
        ));
    }
    let mut headers = Vec::with_capacity(spec.headers.len());
    for (i, h) in spec.headers.iter().enumerate() {
        let field = format!("spec.staticResponse.headers[{i}]");
        let name = header_name(&format!("{field}.name"), &h.name)?;
        if matches!(
            name.as_str(),
            "content-length" | "transfer-encoding" | "connection"
        ) {
            return Err(format!(
                "{field}.name: {name} is set by the gateway, not by a filter"
            ));
        }
        if !is_field_value(&h.value) {
            return Err(format!(
                "{field}.value: {:?} is not a valid header value",
                h.value
            ));
        }
        headers.push(pb::Header {
            name,
            value: h.value.clone(),
        });
    }
    Ok(pb::StaticResponse {
        status: u32::from(status),
        headers,
        body: spec.body.clone().unwrap_or_default().into_bytes(),
    })
}

fn client_address(
    field: &str,
    spec: Option<&ClientAddress>,
) -> Result<Option<pb::ClientAddress>, String> {
    match spec {
        None => Ok(None),
        Some(c) if c.trusted_hops > 16 => Err(format!(
            "{field}.clientAddress.trustedHops: {} is more than 16",
            c.trusted_hops
        )),
        Some(c) => Ok(Some(pb::ClientAddress {
            trusted_hops: c.trusted_hops,
        })),
    }
}

fn cidrs(field: &str, values: &[String]) -> Result<Vec<String>, String> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let net = v
                .parse::<IpNet>()
                .or_else(|_| v.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| format!("{field}[{i}]: {v:?} is not an IP address or CIDR block"))?;
            // The network address: "10.1.2.3/8" means 10.0.0.0/8. An
            // IPv4-mapped IPv6 block is the IPv4 block it maps: clients
            // are compared in their IPv4 form.
            let net = match net {
                IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
                    Some(v4) => ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96)
                        .map(IpNet::V4)
                        .unwrap_or(net),
                    None => net,
                },
                other => other,
            };
            Ok(net.trunc().to_string())
        })
        .collect()
}

fn ip_access(spec: &IpAccess) -> Result<pb::IpAccess, String> {
    if spec.allow.is_empty() && spec.deny.is_empty() {
        return Err("spec.ipAccess: allow or deny must list at least one address".into());
    }
    Ok(pb::IpAccess {
        allow: cidrs("spec.ipAccess.allow", &spec.allow)?,
        deny: cidrs("spec.ipAccess.deny", &spec.deny)?,
        client_address: client_address("spec.ipAccess", spec.client_address.as_ref())?,
    })
}

fn request_limits(spec: &RequestLimits) -> Result<pb::RequestLimits, String> {
    if spec.max_header_bytes.is_none()
        && spec.max_header_count.is_none()
        && spec.max_body_bytes.is_none()
    {
        return Err("spec.requestLimits: set at least one limit".into());
    }
    for (field, value) in [
        ("maxHeaderBytes", spec.max_header_bytes),
        ("maxHeaderCount", spec.max_header_count),
    ] {
        if value == Some(0) {
            return Err(format!("spec.requestLimits.{field}: must be at least 1"));
        }
    }
    Ok(pb::RequestLimits {
        max_header_bytes: spec.max_header_bytes.unwrap_or(0),
        max_header_count: spec.max_header_count.unwrap_or(0),
        max_body_bytes: spec.max_body_bytes,
    })
}

fn rate_limit(spec: &RateLimit) -> Result<pb::RateLimit, String> {
    if spec.requests == 0 {
        return Err("spec.rateLimit.requests: must be at least 1".into());
    }
    let period_ms = parse_duration(&spec.period)
        .filter(|ms| *ms > 0)
        .ok_or_else(|| {
            format!(
                "spec.rateLimit.period: {:?} is not a duration like 1s, 1m or 500ms",
                spec.period
            )
        })?;
    let burst = spec.burst.unwrap_or(spec.requests);
    if burst == 0 {
        return Err("spec.rateLimit.burst: must be at least 1".into());
    }
    // A full bucket refills in burst × period / requests; data planes count
    // time in 64-bit nanoseconds, so anything near their range would
    // quietly shrink the burst.
    const TEN_YEARS_MS: u128 = 10 * 365 * 24 * 3_600_000;
    let refill_ms = u128::from(burst) * u128::from(period_ms) / u128::from(spec.requests);
    if refill_ms > TEN_YEARS_MS {
        return Err(format!(
            "spec.rateLimit: a full bucket would take longer than ten years to refill ({burst} × {} / {})",
            spec.period, spec.requests
        ));
    }
    let (key, key_name) = match &spec.key {
        None => (pb::RateLimitKey::ClientIp, String::new()),
        Some(k) => {
            let name = k.name.clone().unwrap_or_default();
            match (k.kind, name.is_empty()) {
                (RateLimitKeyType::ClientIp, true) => (pb::RateLimitKey::ClientIp, name),
                (RateLimitKeyType::Route, true) => (pb::RateLimitKey::Route, name),
                (RateLimitKeyType::Header, false) => (
                    pb::RateLimitKey::Header,
                    header_name("spec.rateLimit.key.name", &name)?,
                ),
                (RateLimitKeyType::Claim, false) => (pb::RateLimitKey::Claim, name),
                (kind, true) => {
                    return Err(format!(
                        "spec.rateLimit.key.name: required for key type {kind:?}"
                    ));
                }
                (kind, false) => {
                    return Err(format!(
                        "spec.rateLimit.key.name: not used by key type {kind:?}"
                    ));
                }
            }
        }
    };
    Ok(pb::RateLimit {
        requests: spec.requests,
        period_ms: u64::from(period_ms),
        burst,
        key: key as i32,
        key_name,
        client_address: client_address("spec.rateLimit", spec.client_address.as_ref())?,
    })
}

/// Request headers a claim must never overwrite: they frame the request or
/// carry the gateway's own forwarding facts.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "trailer",
    "authorization",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-request-id",
];

const DEFAULT_ALGORITHMS: &[&str] = &["RS256", "ES256"];

fn jwt_auth(store: &Store, namespace: &str, spec: &JwtAuth) -> Result<pb::JwtAuth, String> {
    let field = "spec.jwtAuth";
    let algorithms: Vec<String> = if spec.algorithms.is_empty() {
        DEFAULT_ALGORITHMS.iter().map(|a| (*a).to_owned()).collect()
    } else {
        let mut names: Vec<String> = spec
            .algorithms
            .iter()
            .map(|a| {
                serde_json::to_value(a)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default()
            })
            .collect();
        names.sort();
        names.dedup();
        names
    };
    let parsed: Vec<gatehouse_jwt::Algorithm> = algorithms
        .iter()
        .map(|a| {
            a.parse()
                .map_err(|_| format!("{field}.algorithms: {a:?} is not supported"))
        })
        .collect::<Result<_, _>>()?;
    let symmetric = parsed.iter().any(|a| a.is_symmetric());
    let sources = [
        spec.jwks.inline.is_some(),
        spec.jwks.secret_ref.is_some(),
        spec.jwks.remote.is_some(),
    ]
    .iter()
    .filter(|s| **s)
    .count();
    if sources != 1 {
        return Err(format!(
            "{field}.jwks: exactly one of inline, secretRef or remote must be set"
        ));
    }
    let mut symmetric_keys = false;
    let jwks = if let Some(inline) = &spec.jwks.inline {
        if symmetric {
            return Err(format!(
                "{field}.algorithms: HS256 needs keys from a Secret (jwks.secretRef), never inline"
            ));
        }
        let keys = gatehouse_jwt::KeySet::from_jwks(inline.as_bytes(), false)
            .map_err(|e| format!("{field}.jwks.inline: {e}"))?;
        usable_for(&keys, &parsed, &format!("{field}.jwks.inline"))?;
        pb::jwt_auth::Jwks::StaticJwks(inline.clone().into_bytes())
    } else if let Some(secret_ref) = &spec.jwks.secret_ref {
        let key = secret_ref.key.as_deref().unwrap_or("jwks.json");
        // Only Secrets labelled as JWKS, in both modes: in a cluster they
        // are the only ones the controller sees, and manifests keep to the
        // same contract.
        let secret = store
            .jwks_secrets()
            .find(|s| {
                s.metadata.namespace.as_deref().unwrap_or("default") == namespace
                    && s.metadata.name.as_deref() == Some(secret_ref.name.as_str())
                    && s.metadata
                        .labels
                        .as_ref()
                        .is_some_and(|l| l.contains_key(crate::api::JWKS_SECRET_LABEL))
            })
            .ok_or_else(|| {
                format!(
                    "{field}.jwks.secretRef: Secret {namespace}/{} not found, or without the label {}",
                    secret_ref.name,
                    crate::api::JWKS_SECRET_LABEL
                )
            })?;
        let bytes = secret_value(secret, key).ok_or_else(|| {
            format!(
                "{field}.jwks.secretRef: Secret {namespace}/{} has no key {key:?}",
                secret_ref.name
            )
        })?;
        let keys = gatehouse_jwt::KeySet::from_jwks(&bytes, true).map_err(|e| {
            format!(
                "{field}.jwks.secretRef: Secret {namespace}/{}: {e}",
                secret_ref.name
            )
        })?;
        usable_for(&keys, &parsed, &format!("{field}.jwks.secretRef"))?;
        symmetric_keys = true;
        pb::jwt_auth::Jwks::StaticJwks(bytes)
    } else {
        let remote = spec.jwks.remote.as_ref().expect("one source is set");
        if symmetric {
            return Err(format!(
                "{field}.algorithms: HS256 needs keys from a Secret (jwks.secretRef), never a remote JWKS"
            ));
        }
        gatehouse_jwt::validate_jwks_url(&remote.url)
            .map_err(|e| format!("{field}.jwks.remote.url: {e}"))?;
        let duration = |name: &str, value: Option<&String>, default: u32| match value {
            None => Ok(default),
            Some(v) => parse_duration(v).filter(|ms| *ms > 0).ok_or_else(|| {
                format!("{field}.jwks.remote.{name}: {v:?} is not a duration like 30s or 5m")
            }),
        };
        pb::jwt_auth::Jwks::RemoteJwks(pb::RemoteJwks {
            url: remote.url.clone(),
            refresh_ms: duration("refreshInterval", remote.refresh_interval.as_ref(), 300_000)?,
            timeout_ms: duration("timeout", remote.timeout.as_ref(), 5_000)?,
        })
    };
    let clock_skew_ms = match &spec.clock_skew {
        None => 60_000,
        Some(v) => parse_duration(v)
            .ok_or_else(|| format!("{field}.clockSkew: {v:?} is not a duration like 60s"))?,
    };
    let max_token_bytes = spec.max_token_bytes.unwrap_or(16 * 1024);
    if !(256..=262_144).contains(&max_token_bytes) {
        return Err(format!(
            "{field}.maxTokenBytes: {max_token_bytes} is outside 256..=262144"
        ));
    }
    let mut claims_to_headers = Vec::with_capacity(spec.claims_to_headers.len());
    for (i, c) in spec.claims_to_headers.iter().enumerate() {
        let header = header_name(&format!("{field}.claimsToHeaders[{i}].header"), &c.header)?;
        if RESERVED_HEADERS.contains(&header.as_str()) {
            return Err(format!(
                "{field}.claimsToHeaders[{i}].header: {header} cannot carry a claim"
            ));
        }
        if c.claim.is_empty() {
            return Err(format!(
                "{field}.claimsToHeaders[{i}].claim: must not be empty"
            ));
        }
        claims_to_headers.push(pb::ClaimHeader {
            claim: c.claim.clone(),
            header,
        });
    }
    Ok(pb::JwtAuth {
        issuer: spec.issuer.clone().unwrap_or_default(),
        audiences: spec.audiences.clone(),
        algorithms,
        clock_skew_ms,
        require_expiration: spec.require_expiration.unwrap_or(true),
        max_token_bytes,
        required: spec.required.unwrap_or(true),
        claims_to_headers,
        strip_authorization: spec.strip_authorization.unwrap_or(false),
        jwks: Some(jwks),
        symmetric_keys,
    })
}

/// A key set that cannot verify any listed algorithm would refuse every
/// token: better said at once than found in production.
fn usable_for(
    keys: &gatehouse_jwt::KeySet,
    algorithms: &[gatehouse_jwt::Algorithm],
    field: &str,
) -> Result<(), String> {
    if algorithms.iter().any(|a| keys.supports(*a)) {
        Ok(())
    } else {
        let names: Vec<&str> = algorithms.iter().map(|a| a.as_str()).collect();
        Err(format!(
            "{field}: no key can verify any of the algorithms {}",
            names.join(", ")
        ))
    }
}
