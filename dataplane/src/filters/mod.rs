//! gatehouse.dev filters at run time: each snapshot `GatehouseFilter` built
//! once per table, and the chains the controller resolved, run in order
//! for each request that takes them.
//!
//! A filter whose content did not change between two snapshots is the same
//! `Arc` in both tables, so rate-limit buckets and fetched keys live on
//! across swaps.

pub mod client_address;
mod ip_access;
mod jwt_auth;
mod rate_limit;
mod request_limits;
mod static_response;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use gatehouse_snapshot as pb;
use gatehouse_snapshot::FilterPhase;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use prost::Message;

pub use ip_access::IpAccess;
pub use jwt_auth::JwtAuth;
pub use rate_limit::{Decision, RateLimiter};
pub use request_limits::RequestLimits;
pub use static_response::StaticResponse;

/// One Filter, ready to run.
pub struct Filter {
    /// "Filter namespace/name", for logs.
    pub name: Box<str>,
    pub kind: Kind,
    /// The snapshot message it was built from, to recognise it next time.
    encoded: Box<[u8]>,
}

/// Names the filter only: its encoded form may hold key material.
impl std::fmt::Debug for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Filter")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
pub enum Kind {
    StaticResponse(StaticResponse),
    IpAccess(IpAccess),
    RequestLimits(RequestLimits),
    RateLimit(RateLimit),
    JwtAuth(JwtAuth),
    /// The controller found the Filter invalid: its requests get 500.
    Invalid(Box<str>),
}

#[derive(Debug)]
pub struct RateLimit {
    pub limiter: Arc<RateLimiter>,
    pub key: pb::RateLimitKey,
    pub key_name: Box<str>,
    pub trusted_hops: u32,
}

/// The filters of one chain, in run order.
#[derive(Debug)]
pub struct Chain {
    pub steps: Box<[Step]>,
    /// A gateway-phase jwtAuth writes claims to headers: route matching
    /// must see them, so the route is looked up again after the gateway
    /// phases (see `run_gateway_phases`).
    pub routes_on_claims: bool,
}

#[derive(Debug)]
pub struct Step {
    pub filter: Arc<Filter>,
    pub phase: FilterPhase,
    /// Attached to the Gateway or a listener.
    pub gateway_scope: bool,
}

/// An answer a filter gives in place of the backend's.
#[derive(Debug)]
pub struct Local {
    pub status: StatusCode,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
}

impl Local {
    pub fn text(status: StatusCode, text: &'static str) -> Self {
        Local {
            status,
            headers: vec![(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain"),
            )],
            body: Bytes::from_static(text.as_bytes()),
        }
    }
}

/// What a request that passed (part of) its chain carries on.
#[derive(Debug, Default)]
pub struct Passed {
    /// Added to the response (rate-limit headers).
    pub response_headers: Vec<(HeaderName, HeaderValue)>,
    /// The body must not exceed this many bytes (413).
    pub body_limit: Option<u64>,
    /// Who the token a jwtAuth verified says the client is.
    pub claims: Option<Arc<jwt_auth::Identity>>,
    /// Filters already run (the gateway phases, before a second route
    /// lookup): not run again.
    pub ran: Vec<Arc<Filter>>,
    /// A jwtAuth asked for Authorization to be removed before forwarding.
    pub strip_authorization: bool,
}

impl Step {
    /// Request limits, IP access and authentication attached to the
    /// Gateway or a listener: the same whatever route the request takes.
    fn runs_before_routing(&self) -> bool {
        self.gateway_scope
            && matches!(
                self.phase,
                FilterPhase::RequestLimits
                    | FilterPhase::IpAccess
                    | FilterPhase::GatewayAuthentication
            )
    }
}

/// Facts about a request a filter may use besides its headers.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    /// The TCP peer.
    pub peer: IpAddr,
    /// The route rule, for rate limits keyed by route.
    pub rule: &'a str,
}

impl Chain {
    /// Runs every step in order; the first that answers ends the request.
    pub async fn run(
        &self,
        facts: RequestFacts<'_>,
        headers: &mut HeaderMap,
        passed: Passed,
    ) -> Result<Passed, Local> {
        self.run_steps(facts, headers, passed, false).await
    }

    /// Runs only the steps that do not depend on the route (request limits,
    /// IP access and authentication attached to the Gateway or a
    /// listener): what must happen before routing when routing depends on
    /// what they write. The result goes to `run` of the chain of the route
    /// then found, which skips the filters already run.
    pub async fn run_gateway_phases(
        &self,
        facts: RequestFacts<'_>,
        headers: &mut HeaderMap,
    ) -> Result<Passed, Local> {
        self.run_steps(facts, headers, Passed::default(), true)
            .await
            .map(|mut passed| {
                passed.ran = self
                    .steps
                    .iter()
                    .filter(|s| s.runs_before_routing())
                    .map(|s| Arc::clone(&s.filter))
                    .collect();
                passed
            })
    }

    async fn run_steps(
        &self,
        facts: RequestFacts<'_>,
        headers: &mut HeaderMap,
        mut passed: Passed,
        gateway_phases_only: bool,
    ) -> Result<Passed, Local> {
        let mut claims = passed.claims.take();
        for step in self.steps.iter() {
            if gateway_phases_only && !step.runs_before_routing() {
                continue;
            }
            if passed.ran.iter().any(|f| Arc::ptr_eq(f, &step.filter)) {
                continue;
            }
            let filter = &*step.filter;
            match &filter.kind {
                Kind::RequestLimits(limits) => {
                    if let Some(status) = limits.check(headers) {
                        return Err(Local::text(
                            status,
                            if status == StatusCode::PAYLOAD_TOO_LARGE {
                                "request body too large"
                            } else {
                                "request headers too large"
                            },
                        ));
                    }
                    if let Some(limit) = limits.max_body_bytes {
                        passed.body_limit =
                            Some(passed.body_limit.map_or(limit, |l: u64| l.min(limit)));
                    }
                }
                Kind::IpAccess(access) => {
                    let client =
                        client_address::client_ip(facts.peer, headers, access.trusted_hops);
                    if !access.admits(client) {
                        tracing::debug!(filter = %filter.name, %client, "refused by ipAccess");
                        return Err(Local::text(StatusCode::FORBIDDEN, "forbidden"));
                    }
                }
                Kind::JwtAuth(auth) => {
                    if let Some(verified) = auth.apply(headers).await.inspect_err(|_| {
                        tracing::debug!(filter = %filter.name, "refused by jwtAuth");
                    })? {
                        claims = Some(verified);
                    }
                    passed.strip_authorization |= auth.strips_authorization();
                }
                Kind::RateLimit(limit) => {
                    let decision =
                        limit.check(facts, headers, claims.as_deref().map(|i| &i.claims));
                    let limit_headers = rate_limit_headers(limit.limiter.burst, &decision);
                    if !decision.admitted {
                        let mut local =
                            Local::text(StatusCode::TOO_MANY_REQUESTS, "too many requests");
                        local.headers.extend(limit_headers);
                        local.headers.push((
                            http::header::RETRY_AFTER,
                            HeaderValue::from(decision.retry_after_seconds),
                        ));
                        return Err(local);
                    }
                    // The most constraining limit is the one to report.
                    let tighter = passed
                        .response_headers
                        .iter()
                        .find(|(n, _)| n == "ratelimit-remaining")
                        .and_then(|(_, v)| v.to_str().ok()?.parse::<u32>().ok())
                        .is_none_or(|r| decision.remaining < r);
                    if tighter {
                        passed
                            .response_headers
                            .retain(|(n, _)| !n.as_str().starts_with("ratelimit-"));
                        passed.response_headers.extend(limit_headers);
                    }
                }
                Kind::StaticResponse(response) => {
                    let mut local = response.answer();
                    local.headers.append(&mut passed.response_headers);
                    return Err(local);
                }
                Kind::Invalid(why) => {
                    tracing::debug!(filter = %filter.name, %why, "invalid filter");
                    return Err(Local::text(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "invalid filter",
                    ));
                }
            }
        }
        passed.claims = claims;
        Ok(passed)
    }
}

impl RateLimit {
    fn check(
        &self,
        facts: RequestFacts<'_>,
        headers: &HeaderMap,
        claims: Option<&gatehouse_jwt::Claims>,
    ) -> Decision {
        match self.key {
            pb::RateLimitKey::ClientIp => {
                let ip = client_address::client_ip(facts.peer, headers, self.trusted_hops);
                match ip {
                    IpAddr::V4(v4) => self.limiter.check(&v4.octets()),
                    // IPv4 clients behind a NAT64 translator (64:ff9b::/96)
                    // are told apart by the address they embed.
                    IpAddr::V6(v6) if v6.segments()[..6] == [0x64, 0xff9b, 0, 0, 0, 0] => {
                        self.limiter.check(&v6.octets()[12..])
                    }
                    // A client holds a whole /64: keyed by single addresses,
                    // it would get a fresh bucket per address it picks.
                    IpAddr::V6(v6) => self.limiter.check(&v6.octets()[..8]),
                }
            }
            pb::RateLimitKey::Header => {
                let value = headers
                    .get(&*self.key_name)
                    .map_or(&b""[..], |v| v.as_bytes());
                self.limiter.check(value)
            }
            pb::RateLimitKey::Claim => {
                let value = claims
                    .and_then(|c| c.get(&self.key_name))
                    .unwrap_or_default();
                self.limiter.check(value.as_bytes())
            }
            pb::RateLimitKey::Route => self.limiter.check(facts.rule.as_bytes()),
        }
    }
}

/// `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset`
/// (draft-ietf-httpapi-ratelimit-headers, the field names clients parse).
fn rate_limit_headers(limit: u32, decision: &Decision) -> [(HeaderName, HeaderValue); 3] {
    [
        (
            HeaderName::from_static("ratelimit-limit"),
            HeaderValue::from(limit),
        ),
        (
            HeaderName::from_static("ratelimit-remaining"),
            HeaderValue::from(decision.remaining),
        ),
        (
            HeaderName::from_static("ratelimit-reset"),
            HeaderValue::from(decision.reset_seconds),
        ),
    ]
}

/// Builds a table's filters, reusing the previous table's filter wherever
/// the snapshot message is byte for byte the same.
pub fn build_filters(
    snapshot: &[pb::GatehouseFilter],
    previous: &[Arc<Filter>],
) -> Result<Vec<Arc<Filter>>, (usize, String)> {
    let earlier: HashMap<&[u8], &Arc<Filter>> = previous.iter().map(|f| (&*f.encoded, f)).collect();
    let remotes: HashMap<RemoteKey<'_>, &Arc<gatehouse_jwt::RemoteJwks>> = previous
        .iter()
        .filter_map(|f| match &f.kind {
            Kind::JwtAuth(auth) => auth.remote(),
            _ => None,
        })
        .map(|r| ((r.url(), r.options().refresh, r.options().timeout), r))
        .collect();
    snapshot
        .iter()
        .enumerate()
        .map(|(i, message)| {
            let encoded = message.encode_to_vec();
            if let Some(same) = earlier.get(encoded.as_slice()) {
                return Ok(Arc::clone(same));
            }
            build_filter(message, encoded, &remotes).map_err(|e| (i, e))
        })
        .collect()
}

/// A remote key set is reused for the same URL, refresh and timeout.
type RemoteKey<'a> = (&'a str, std::time::Duration, std::time::Duration);

fn build_filter(
    message: &pb::GatehouseFilter,
    encoded: Vec<u8>,
    remotes: &HashMap<RemoteKey<'_>, &Arc<gatehouse_jwt::RemoteJwks>>,
) -> Result<Arc<Filter>, String> {
    use pb::gatehouse_filter::Filter as Content;
    let name = match &message.origin {
        Some(o) => format!("Filter {}/{}", o.namespace, o.name),
        None => "Filter".to_owned(),
    };
    let kind = match &message.filter {
        None => return Err("no filter content".into()),
        Some(Content::StaticResponse(s)) => Kind::StaticResponse(StaticResponse::build(s)?),
        Some(Content::IpAccess(s)) => Kind::IpAccess(IpAccess::build(s)?),
        Some(Content::RequestLimits(s)) => Kind::RequestLimits(RequestLimits::build(s)),
        Some(Content::RateLimit(s)) => {
            if s.requests == 0 || s.period_ms == 0 || s.burst == 0 {
                return Err("rate limit with a zero rate, period or burst".into());
            }
            let key = pb::RateLimitKey::try_from(s.key)
                .map_err(|_| format!("unknown rate limit key {}", s.key))?;
            Kind::RateLimit(RateLimit {
                limiter: Arc::new(RateLimiter::new(
                    s.requests,
                    std::time::Duration::from_millis(s.period_ms),
                    s.burst,
                )),
                key,
                key_name: s.key_name.as_str().into(),
                trusted_hops: s.client_address.as_ref().map_or(0, |c| c.trusted_hops),
            })
        }
        Some(Content::JwtAuth(s)) => Kind::JwtAuth(JwtAuth::build(s, |r| {
            let (refresh, timeout) = jwt_auth::remote_timings(r);
            remotes
                .get(&(r.url.as_str(), refresh, timeout))
                .map(|r| Arc::clone(r))
        })?),
        Some(Content::Invalid(why)) => Kind::Invalid(why.as_str().into()),
    };
    Ok(Arc::new(Filter {
        name: name.into(),
        kind,
        encoded: encoded.into(),
    }))
}

/// Builds the snapshot's chains over the built filters.
pub fn build_chains(
    chains: &[pb::Chain],
    filters: &[Arc<Filter>],
) -> Result<Vec<Arc<Chain>>, (usize, String)> {
    chains
        .iter()
        .enumerate()
        .map(|(c, chain)| {
            let steps = chain
                .steps
                .iter()
                .map(|s| {
                    let filter = filters
                        .get(s.filter as usize)
                        .ok_or_else(|| (c, format!("filter {} out of range", s.filter)))?;
                    let phase = FilterPhase::try_from(s.phase)
                        .map_err(|_| (c, format!("unknown phase {}", s.phase)))?;
                    Ok(Step {
                        filter: Arc::clone(filter),
                        phase,
                        gateway_scope: s.gateway_scope,
                    })
                })
                .collect::<Result<Box<[Step]>, _>>()?;
            let routes_on_claims = steps.iter().any(|s| {
                s.phase == FilterPhase::GatewayAuthentication
                    && matches!(&s.filter.kind, Kind::JwtAuth(auth) if auth.writes_headers())
            });
            Ok(Arc::new(Chain {
                steps,
                routes_on_claims,
            }))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn per_client(burst: u32) -> RateLimit {
        RateLimit {
            limiter: Arc::new(RateLimiter::new(
                1,
                std::time::Duration::from_secs(60),
                burst,
            )),
            key: pb::RateLimitKey::ClientIp,
            key_name: "".into(),
            trusted_hops: 0,
        }
    }

    fn admitted(limit: &RateLimit, peer: &str) -> bool {
        let facts = RequestFacts {
            peer: peer.parse().unwrap(),
            rule: "",
        };
        limit.check(facts, &HeaderMap::new(), None).admitted
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_64_and_nat64_ones_by_the_ipv4_they_embed() {
        let limit = per_client(1);
        assert!(admitted(&limit, "2001:db8:1:2::1"));
        assert!(
            !admitted(&limit, "2001:db8:1:2::99"),
            "another address of the same /64 shares the bucket"
        );
        assert!(admitted(&limit, "2001:db8:1:3::1"), "another /64");
        assert!(admitted(&limit, "64:ff9b::c000:201"));
        assert!(
            admitted(&limit, "64:ff9b::c000:202"),
            "another IPv4 client behind the same translator"
        );
        assert!(!admitted(&limit, "64:ff9b::c000:201"));
    }
}
