//! What happens to a request, told from the compiled snapshots: every
//! route rule's effective filter chain (`/debug/chains`), and for one
//! request, offline, the listener, route, rule and chain it meets
//! (`gatehouse-controller explain`). The lookup is the data plane's own
//! table code, so the answer is what traffic gets.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use gatehouse_dataplane::table::{Fields, Lookup, RequestView, Table, normalize_host};
use gatehouse_snapshot as pb;
use serde_json::{Value, json};

/// Per group, per listener and rule, the chain in run order.
pub fn chains(snapshots: &BTreeMap<String, Arc<pb::Snapshot>>) -> Value {
    let mut out = serde_json::Map::new();
    for (group, snapshot) in snapshots {
        let mut entries = BTreeMap::new();
        for port in &snapshot.ports {
            for listener in &port.listeners {
                let listener_name = origin_text(listener.origin.as_ref());
                let at = format!("{}:{} {listener_name}", port.address, port.port);
                if listener.chain != 0 {
                    entries.insert(
                        (at.clone(), "(no matching route)".to_owned()),
                        chain_json(snapshot, listener.chain),
                    );
                }
                for host in &listener.hosts {
                    for m in &host.matches {
                        let rule = snapshot
                            .rules
                            .get(m.rule as usize)
                            .map(|r| origin_text(r.origin.as_ref()))
                            .unwrap_or_default();
                        entries
                            .entry((at.clone(), rule))
                            .or_insert_with(|| chain_json(snapshot, m.chain));
                    }
                }
            }
        }
        let list: Vec<Value> = entries
            .into_iter()
            .map(|((listener, rule), chain)| {
                json!({"listener": listener, "rule": rule, "chain": chain})
            })
            .collect();
        out.insert(group.clone(), Value::Array(list));
    }
    Value::Object(out)
}

/// The steps of chain `1 + index`, as `{phase, filter, type}`.
fn chain_json(snapshot: &pb::Snapshot, one_based: u32) -> Value {
    let Some(chain) = one_based
        .checked_sub(1)
        .and_then(|i| snapshot.chains.get(i as usize))
    else {
        return Value::Array(Vec::new());
    };
    Value::Array(
        chain
            .steps
            .iter()
            .map(|s| {
                let filter = snapshot.filters.get(s.filter as usize);
                json!({
                    "phase": phase_name(s.phase),
                    "filter": filter.map(|f| origin_text(f.origin.as_ref())).unwrap_or_default(),
                    "type": filter.map(filter_type).unwrap_or("?"),
                })
            })
            .collect(),
    )
}

fn phase_name(phase: i32) -> &'static str {
    match pb::FilterPhase::try_from(phase) {
        Ok(pb::FilterPhase::RequestLimits) => "request-limits",
        Ok(pb::FilterPhase::IpAccess) => "ip-access",
        Ok(pb::FilterPhase::GatewayAuthentication) => "gateway-authentication",
        Ok(pb::FilterPhase::RouteAuthentication) => "route-authentication",
        Ok(pb::FilterPhase::RateLimit) => "rate-limit",
        Ok(pb::FilterPhase::StaticResponse) => "static-response",
        _ => "unknown",
    }
}

fn filter_type(filter: &pb::GatehouseFilter) -> &'static str {
    use pb::gatehouse_filter::Filter as Content;
    match &filter.filter {
        Some(Content::StaticResponse(_)) => "StaticResponse",
        Some(Content::IpAccess(_)) => "IPAccess",
        Some(Content::RequestLimits(_)) => "RequestLimits",
        Some(Content::RateLimit(_)) => "RateLimit",
        Some(Content::JwtAuth(_)) => "JWTAuth",
        Some(Content::Invalid(_)) => "Invalid (answers 500)",
        None => "?",
    }
}

/// The data plane's spelling of an origin, so that `/debug/chains`, the
/// `explain` command and the data plane's logs name objects alike.
fn origin_text(origin: Option<&pb::Origin>) -> String {
    match origin {
        None => String::new(),
        some => gatehouse_dataplane::table::describe(some),
    }
}

/// A request to explain: `METHOD URL` and headers.
pub struct Question {
    pub method: http::Method,
    pub uri: http::Uri,
    pub headers: http::HeaderMap,
}

impl Question {
    /// Parses `"GET https://host/path?query"` and `"Name: value"` headers.
    pub fn parse(request: &str, headers: &[String]) -> anyhow::Result<Self> {
        let (method, url) = request.trim().split_once(' ').ok_or_else(|| {
            anyhow::anyhow!("--request must be 'METHOD URL', e.g. 'GET http://example.com/'")
        })?;
        let method = http::Method::from_bytes(method.as_bytes())?;
        let uri: http::Uri = url.trim().parse()?;
        if uri.authority().is_none() {
            anyhow::bail!("the URL must be absolute, with scheme and host: {url}");
        }
        let mut map = http::HeaderMap::new();
        for h in headers {
            let (name, value) = h
                .split_once(':')
                .ok_or_else(|| anyhow::anyhow!("header {h:?} must be 'Name: value'"))?;
            map.append(
                http::HeaderName::from_bytes(name.trim().as_bytes())?,
                http::HeaderValue::from_str(value.trim())?,
            );
        }
        Ok(Question {
            method,
            uri,
            headers: map,
        })
    }
}

/// What the request meets, as text: one line per fact.
pub fn explain(snapshots: &BTreeMap<String, Arc<pb::Snapshot>>, question: &Question) -> String {
    let https = question.uri.scheme_str() == Some("https");
    let port = question
        .uri
        .port_u16()
        .unwrap_or(if https { 443 } else { 80 });
    let authority = question.uri.authority().map_or("", |a| a.as_str());
    let Ok(host) = normalize_host(authority) else {
        return format!("{authority:?} is not a valid host: the gateway answers 400\n");
    };
    let path = question.uri.path();
    let mut out = String::new();
    let mut served = false;
    for (group, snapshot) in snapshots {
        let table = match Table::build(snapshot.clone()) {
            Ok(table) => table,
            Err(error) => {
                let _ = writeln!(out, "group {group}: the snapshot does not build: {error}");
                continue;
            }
        };
        for key in table.port_keys() {
            let Some(bound) = table.port(key) else {
                continue;
            };
            let scheme_matches = matches!(
                (bound.scheme, https),
                (gatehouse_dataplane::table::Scheme::Https, true)
                    | (gatehouse_dataplane::table::Scheme::Http, false)
            );
            if bound.port != port || !scheme_matches {
                continue;
            }
            served = true;
            let _ = writeln!(out, "group:    {group}");
            let _ = writeln!(out, "port:     {port}, bound at {key}");
            let view = RequestView {
                host: &host,
                method: &question.method,
                path,
                query: question.uri.query(),
                headers: Fields::Map(&question.headers),
            };
            match bound.listener(&host) {
                Some(listener) => {
                    let _ = writeln!(out, "listener: {}", listener.object);
                }
                None => {
                    let _ = writeln!(out, "listener: none matches host {host:?}: 404");
                    continue;
                }
            }
            match table.lookup(key, &view) {
                Lookup::Rule(found) => {
                    let _ = writeln!(out, "rule:     {}", found.rule.object);
                    let _ = writeln!(out, "match:    {}", describe_match(found.route_match));
                    write_chain(&mut out, found.chain);
                    let _ = writeln!(
                        out,
                        "then:     the rule's Gateway API filters, then one of {} backend(s)",
                        found.rule.backends.len()
                    );
                }
                Lookup::NoRoute(chain) => {
                    let _ = writeln!(out, "rule:     none matches: 404");
                    write_chain(&mut out, chain);
                }
                Lookup::NoPort | Lookup::NoListener => {
                    let _ = writeln!(out, "rule:     none: 404");
                }
            }
        }
    }
    if !served {
        let _ = writeln!(
            out,
            "no {} listener on port {port}: the connection is refused",
            if https { "HTTPS" } else { "HTTP" }
        );
    }
    out
}

fn describe_match(m: &gatehouse_dataplane::table::RouteMatch) -> String {
    let mut parts = vec![format!("path {:?}", m.path)];
    if let Some(method) = &m.method {
        parts.push(format!("method {method}"));
    }
    if !m.headers.is_empty() {
        parts.push(format!("{} header match(es)", m.headers.len()));
    }
    if !m.query_params.is_empty() {
        parts.push(format!("{} query match(es)", m.query_params.len()));
    }
    parts.join(", ")
}

fn write_chain(out: &mut String, chain: Option<&gatehouse_dataplane::filters::Chain>) {
    let Some(chain) = chain else {
        let _ = writeln!(out, "chain:    (no gatehouse.dev filters)");
        return;
    };
    if chain.routes_on_claims {
        let _ = writeln!(
            out,
            "note:     a Gateway jwtAuth writes claim headers: traffic is routed again on the verified headers (give them with -H to see that route)"
        );
    }
    let _ = writeln!(out, "chain:");
    for (i, step) in chain.steps.iter().enumerate() {
        let phase = phase_name(step.phase as i32);
        let kind = match &step.filter.kind {
            gatehouse_dataplane::filters::Kind::StaticResponse(_) => "StaticResponse",
            gatehouse_dataplane::filters::Kind::IpAccess(_) => "IPAccess",
            gatehouse_dataplane::filters::Kind::RequestLimits(_) => "RequestLimits",
            gatehouse_dataplane::filters::Kind::RateLimit(_) => "RateLimit",
            gatehouse_dataplane::filters::Kind::JwtAuth(_) => "JWTAuth",
            gatehouse_dataplane::filters::Kind::Invalid(_) => "Invalid (answers 500)",
        };
        let _ = writeln!(out, "  {}. [{phase}] {} ({kind})", i + 1, step.filter.name);
    }
}
