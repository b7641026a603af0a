//! `Filter` (gatehouse.dev/v1alpha1): one cross-cutting filter, run by the
//! gateway for the routes it applies to.
//!
//! A Filter holds exactly one of `staticResponse`, `ipAccess`,
//! `requestLimits`, `rateLimit` or `jwtAuth`. It applies to a route rule
//! that names it in an `ExtensionRef` filter, or to whatever its
//! `targetRefs` name: a Gateway, one listener of it (`sectionName`), an
//! HTTPRoute, or one named rule of it. Where filters of the same type reach
//! a rule from several levels, only the most specific level's run (rule,
//! then route, then listener, then Gateway); the others are reported as
//! overridden in their status. Compile checks everything again, since
//! standalone manifests never pass an API server.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "gatehouse.dev",
    version = "v1alpha1",
    kind = "Filter",
    plural = "filters",
    shortname = "ghf",
    namespaced,
    doc = "A Gatehouse filter: static response, IP access, request limits, rate limit or JWT authentication, applied to route rules by ExtensionRef or to Gateways, listeners, HTTPRoutes and rules by targetRefs.",
    status = "FilterStatus",
    derive = "PartialEq",
    printcolumn = r#"{"name":"Type","type":"string","jsonPath":".spec.type"}"#,
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(
    validation = Rule::new("[has(self.staticResponse), has(self.ipAccess), has(self.requestLimits), has(self.rateLimit), has(self.jwtAuth)].filter(x, x).size() == 1").message("exactly one of staticResponse, ipAccess, requestLimits, rateLimit or jwtAuth must be set"),
    validation = Rule::new("!has(self.enforce) || !self.enforce || (has(self.targetRefs) && self.targetRefs.all(t, t.kind == 'Gateway'))").message("enforce needs targetRefs that are all Gateways or their listeners"),
    validation = Rule::new("has(self.staticResponse) == (self.type == 'StaticResponse') && has(self.ipAccess) == (self.type == 'IPAccess') && has(self.requestLimits) == (self.type == 'RequestLimits') && has(self.rateLimit) == (self.type == 'RateLimit') && has(self.jwtAuth) == (self.type == 'JWTAuth')").message("type must name the one filter that is set")
)]
#[serde(rename_all = "camelCase")]
pub struct FilterSpec {
    /// The filter's type; must name the field that is set.
    #[serde(rename = "type")]
    pub kind: FilterType,
    /// What the filter applies to, besides rules that name it in an
    /// ExtensionRef. Objects in the Filter's namespace only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub target_refs: Vec<TargetRef>,
    /// Position among filters of the same phase: lower runs first; the name
    /// breaks ties.
    #[serde(default, skip_serializing_if = "is_zero")]
    #[schemars(range(min = -1000, max = 1000))]
    pub order: i32,
    /// For a Filter attached to Gateways or listeners: it always runs for
    /// every route there, and filters of its type attached to routes or
    /// rules do not. Lets a Gateway's owner set a floor (a deny list,
    /// authentication) that route owners cannot switch off.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub enforce: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub static_response: Option<StaticResponse>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "ipAccess")]
    pub ip_access: Option<IpAccess>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_limits: Option<RequestLimits>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "jwtAuth")]
    pub jwt_auth: Option<JwtAuth>,
}

fn is_zero(value: &i32) -> bool {
    *value == 0
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum FilterType {
    StaticResponse,
    #[serde(rename = "IPAccess")]
    IpAccess,
    RequestLimits,
    RateLimit,
    #[serde(rename = "JWTAuth")]
    JwtAuth,
}

/// A Gateway, one of its listeners, an HTTPRoute or one of its named rules,
/// in the Filter's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[x_kube(
    validation = Rule::new("self.group == 'gateway.networking.k8s.io'").message("group must be gateway.networking.k8s.io"),
    validation = Rule::new("self.kind in ['Gateway', 'HTTPRoute']").message("kind must be Gateway or HTTPRoute")
)]
#[serde(rename_all = "camelCase")]
pub struct TargetRef {
    #[schemars(length(max = 253))]
    pub group: String,
    #[schemars(length(min = 1, max = 63))]
    pub kind: String,
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// A listener name (Gateway) or a rule name (HTTPRoute).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub section_name: Option<String>,
}

/// An answer the gateway gives itself, without a backend.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StaticResponse {
    /// Defaults to 200.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 200, max = 599))]
    pub status_code: Option<u16>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub headers: Vec<HeaderValue>,
    /// Sent as is; `text/plain` unless a Content-Type header is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 65536))]
    pub body: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct HeaderValue {
    #[schemars(
        length(min = 1, max = 256),
        regex(pattern = r"^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$")
    )]
    pub name: String,
    #[schemars(length(max = 4096))]
    pub value: String,
}

/// Allow and deny lists of client addresses. A client in `deny` is refused
/// (403); with `allow` set, so is every client not in it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[x_kube(validation = Rule::new("size(self.allow) + size(self.deny) > 0").message("allow or deny must list at least one address"))]
#[serde(rename_all = "camelCase")]
pub struct IpAccess {
    /// IPv4 or IPv6 addresses or CIDR blocks, e.g. `10.0.0.0/8`, `2001:db8::/32`.
    #[serde(default)]
    #[schemars(length(max = 1024))]
    pub allow: Vec<String>,
    #[serde(default)]
    #[schemars(length(max = 1024))]
    pub deny: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_address: Option<ClientAddress>,
}

/// Where the client's address comes from. By default the TCP peer; behind
/// `trustedHops` proxies that each append to `X-Forwarded-For`, the address
/// that many entries from its right end (the one the outermost trusted proxy
/// saw). A request with fewer entries falls back to the TCP peer.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClientAddress {
    #[schemars(range(min = 0, max = 16))]
    pub trusted_hops: u32,
}

/// Limits on the request, checked as it arrives: a body over `maxBodyBytes`
/// gets 413, headers over the others 431.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[x_kube(validation = Rule::new("has(self.maxHeaderBytes) || has(self.maxHeaderCount) || has(self.maxBodyBytes)").message("set at least one limit"))]
#[serde(rename_all = "camelCase")]
pub struct RequestLimits {
    /// Sum over headers of name and value lengths plus 4 per header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_header_bytes: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_header_count: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_body_bytes: Option<u64>,
}

/// A token bucket per key, held by each data plane: `burst` requests at
/// once, refilled at `requests` per `period`. Refused requests get 429 with
/// `Retry-After`; every answer carries `RateLimit-Limit`,
/// `RateLimit-Remaining` and `RateLimit-Reset`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateLimit {
    #[schemars(range(min = 1, max = 1_000_000_000))]
    pub requests: u32,
    /// e.g. `1s`, `1m`, `1h`.
    #[schemars(regex(pattern = r"^([0-9]{1,5}(h|m|s|ms)){1,4}$"))]
    pub period: String,
    /// Bucket size; defaults to `requests`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_000_000_000))]
    pub burst: Option<u32>,
    /// Defaults to the client address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<RateLimitKey>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_address: Option<ClientAddress>,
}

/// What a bucket belongs to.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[x_kube(validation = Rule::new("(self.type in ['Header', 'Claim']) == has(self.name)").message("name is required for Header and Claim keys, and only for them"))]
#[serde(rename_all = "camelCase")]
pub struct RateLimitKey {
    #[serde(rename = "type")]
    pub kind: RateLimitKeyType,
    /// Header name, or claim name (dotted for a nested claim) of the token a
    /// jwtAuth filter verified earlier in the chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub name: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RateLimitKeyType {
    /// One bucket per client address.
    #[serde(rename = "ClientIP")]
    ClientIp,
    /// One bucket per value of a request header; requests without it share one.
    Header,
    /// One bucket per value of a verified JWT claim; requests without it share one.
    Claim,
    /// One bucket for every request of the route rule.
    Route,
}

/// Verifies a JWT bearer token (RFC 7519, RFC 8725) from the Authorization
/// header. Failures get 401 with `WWW-Authenticate: Bearer`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JwtAuth {
    /// The `iss` tokens must carry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Tokens must name one of these in `aud`, when set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub audiences: Vec<String>,
    pub jwks: JwksSource,
    /// Accepted signature algorithms; defaults to RS256 and ES256. HS256
    /// needs keys from a Secret.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub algorithms: Vec<JwtAlgorithm>,
    /// Tolerance for exp, nbf and iat; defaults to 60s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]{1,5}(h|m|s|ms)){1,4}$"))]
    pub clock_skew: Option<String>,
    /// Tokens without `exp` are refused unless this is false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_expiration: Option<bool>,
    /// Longer tokens are refused unread; defaults to 16384.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 256, max = 262144))]
    pub max_token_bytes: Option<u32>,
    /// With false, a request without a token passes unauthenticated (a token
    /// that is present must still be valid). Defaults to true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required: Option<bool>,
    /// Claims copied to request headers. The client's own headers of these
    /// names are always removed first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub claims_to_headers: Vec<ClaimToHeader>,
    /// Remove the Authorization header before the request goes upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strip_authorization: Option<bool>,
}

/// Where the JSON Web Key Set comes from: exactly one of the three.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[x_kube(validation = Rule::new("[has(self.inline), has(self.secretRef), has(self.remote)].filter(x, x).size() == 1").message("exactly one of inline, secretRef or remote must be set"))]
#[serde(rename_all = "camelCase")]
pub struct JwksSource {
    /// A JWKS document (`{"keys": [...]}`); public keys only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 262144))]
    pub inline: Option<String>,
    /// A Secret in the Filter's namespace, labelled `gatehouse.dev/jwks`,
    /// holding a JWKS document; may hold symmetric (`oct`) keys for HS256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,
    /// Fetched and refreshed by each data plane.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<RemoteJwks>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct SecretKeyRef {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Data key; defaults to `jwks.json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[x_kube(validation = Rule::new("self.url.startsWith('https://') || self.url.startsWith('http://')").message("url must be http:// or https://"))]
#[serde(rename_all = "camelCase")]
pub struct RemoteJwks {
    #[schemars(length(min = 8, max = 2048))]
    pub url: String,
    /// Defaults to 5m. A key id the set lacks triggers an early refresh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]{1,5}(h|m|s|ms)){1,4}$"))]
    pub refresh_interval: Option<String>,
    /// Per fetch; defaults to 5s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]{1,5}(h|m|s|ms)){1,4}$"))]
    pub timeout: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum JwtAlgorithm {
    RS256,
    RS384,
    RS512,
    PS256,
    ES256,
    ES384,
    EdDSA,
    HS256,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct ClaimToHeader {
    /// Claim name; dotted for a nested claim (`realm.role`).
    #[schemars(length(min = 1, max = 256))]
    pub claim: String,
    #[schemars(
        length(min = 1, max = 256),
        regex(pattern = r"^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$")
    )]
    pub header: String,
}

/// Conditions of the Filter itself, and per object it is attached to.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FilterStatus {
    /// `Accepted`: whether the filter's content is valid.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Per targetRef, as Gateway API policy attachment reports ancestors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ancestors: Vec<AncestorStatus>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AncestorStatus {
    pub ancestor_ref: AncestorRef,
    pub controller_name: String,
    pub conditions: Vec<Condition>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AncestorRef {
    pub group: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
}
