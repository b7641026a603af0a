//! GRPCRoutes, compiled as the HTTP routes they are on the wire (a gRPC call
//! is an HTTP/2 POST to `/{service}/{method}`): each `GRPCRouteMatch` becomes
//! an `HTTPRouteMatch` and the rest of the route (parentRefs, hostnames,
//! filters, backendRefs, which share the HTTPRoute shapes) carries over, so
//! attachment, precedence, filters and status are one implementation.
//!
//! Method matches (Gateway API `GRPCMethodMatch`): Exact with service and
//! method is the exact path; with the service alone, every method of it
//! (path prefix `/{service}`); with the method alone, that method of any
//! service (a regular expression); RegularExpression builds
//! `/{service}/{method}` from the two expressions, an unset one matching
//! any single segment.
//!
//! Precedence is GRPCRoute's own ("Characters in a matching service.
//! Characters in a matching method. Header matches."), not HTTPRoute's, so
//! the translation keeps each match's (service, method) character counts
//! for the precedence sort (see `precedence::Precedence::grpc`).

use serde_json::{Value, json};

use crate::k8s::{GrpcRoute, HttpRoute};

/// A GRPCRoute as the HTTPRoute it routes as.
#[derive(Debug, Clone)]
pub struct Translated {
    pub route: HttpRoute,
    /// Per rule, per match: characters in its service and in its method.
    pub match_chars: Vec<Vec<(usize, usize)>>,
}

/// The HTTPRoute a GRPCRoute routes as, or why it cannot be read as one.
pub fn as_http_route(route: &GrpcRoute) -> Result<Translated, String> {
    let mut value = serde_json::to_value(route).map_err(|e| e.to_string())?;
    value["kind"] = "HTTPRoute".into();
    let mut match_chars = Vec::new();
    for rule in value["spec"]["rules"].as_array_mut().into_iter().flatten() {
        let matches = rule["matches"].take();
        let mut chars = Vec::new();
        if let Some(matches) = matches.as_array() {
            chars = matches.iter().map(method_chars).collect();
            rule["matches"] = Value::Array(matches.iter().map(http_match).collect());
        }
        match_chars.push(chars);
    }
    let route = serde_json::from_value(value).map_err(|e| format!("spec: {e}"))?;
    Ok(Translated { route, match_chars })
}

/// Characters in a match's service and method, as given.
fn method_chars(grpc: &Value) -> (usize, usize) {
    let chars = |key: &str| {
        grpc["method"][key]
            .as_str()
            .map_or(0, |s| s.chars().count())
    };
    (chars("service"), chars("method"))
}

fn http_match(grpc: &Value) -> Value {
    let method = &grpc["method"];
    let service = method["service"].as_str().filter(|s| !s.is_empty());
    let name = method["method"].as_str().filter(|s| !s.is_empty());
    let regex = method["type"] == "RegularExpression";
    let path = match (regex, service, name) {
        (_, None, None) => json!({"type": "PathPrefix", "value": "/"}),
        (false, Some(s), Some(m)) => json!({"type": "Exact", "value": format!("/{s}/{m}")}),
        (false, Some(s), None) => json!({"type": "PathPrefix", "value": format!("/{s}")}),
        (false, None, Some(m)) => json!({
            "type": "RegularExpression",
            "value": format!("/[^/]+/{}", regex::escape(m)),
        }),
        (true, s, m) => json!({
            "type": "RegularExpression",
            "value": format!("/({})/({})", s.unwrap_or("[^/]+"), m.unwrap_or("[^/]+")),
        }),
    };
    let mut out = json!({ "path": path });
    if let Some(headers) = grpc.get("headers").filter(|h| !h.is_null()) {
        out["headers"] = headers.clone();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(method: Value) -> Value {
        http_match(&json!({ "method": method }))["path"].clone()
    }

    #[test]
    fn method_matches_become_paths() {
        assert_eq!(
            path(json!({"service": "pkg.Echo", "method": "Say"})),
            json!({"type": "Exact", "value": "/pkg.Echo/Say"})
        );
        assert_eq!(
            path(json!({"type": "Exact", "service": "pkg.Echo"})),
            json!({"type": "PathPrefix", "value": "/pkg.Echo"})
        );
        assert_eq!(
            path(json!({"method": "Say.It"})),
            json!({"type": "RegularExpression", "value": "/[^/]+/Say\\.It"})
        );
        assert_eq!(
            path(json!({"type": "RegularExpression", "service": "pkg\\..*"})),
            json!({"type": "RegularExpression", "value": "/(pkg\\..*)/([^/]+)"})
        );
        assert_eq!(
            http_match(&json!({})),
            json!({"path": {"type": "PathPrefix", "value": "/"}})
        );
    }

    #[test]
    fn matches_keep_their_service_and_method_characters() {
        let grpc: GrpcRoute = serde_json::from_value(json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "GRPCRoute",
            "metadata": {"name": "r", "namespace": "default"},
            "spec": {"rules": [
                {"matches": [
                    {"method": {"service": "pkg.Echo", "method": "Say"}},
                    {"method": {"method": "Say"}},
                ]},
                {},
            ]},
        }))
        .unwrap();
        let translated = as_http_route(&grpc).unwrap();
        assert_eq!(translated.match_chars, vec![vec![(8, 3), (0, 3)], vec![]]);
    }
}
