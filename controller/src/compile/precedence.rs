//! Match precedence, per Gateway API `HTTPRouteRule` ("Proxy or Load
//! Balancer routing configuration generated from HTTPRoutes MUST prioritize
//! matches based on the following criteria, continuing on ties"):
//!
//! 1. "Exact path match", then regular expressions (implementation-specific
//!    in the spec; we put them between exact and prefix), then "Prefix path
//!    match with largest number of characters"; longer values first within
//!    exact and regex too.
//! 2. "Method match."
//! 3. "Largest number of header matches."
//! 4. "Largest number of query param matches."
//!
//! GRPCRoute matches (`GRPCRouteRule.matches`) go by "Characters in a
//! matching service. Characters in a matching method. Header matches."
//! instead: see [`Precedence::grpc`]. The two never share a virtual host (see
//! `kinds`), so the two orders are never mixed.
//!
//! then, across Routes, "the oldest Route based on creation timestamp" and
//! "the Route appearing first in alphabetical order by {namespace}/{name}"
//! (folded into `route_rank`), and within a Route "the first matching rule
//! (in list order) with a match meeting the above criteria".

use std::cmp::Reverse;

use gatehouse_snapshot::{PathMatchType, RouteMatch};

/// Sort key of one match; smaller sorts first, and wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Precedence {
    path_kind: u8,
    /// Path characters; for gRPC, service characters.
    path_len: Reverse<usize>,
    /// gRPC method characters; 0 for HTTP.
    method_len: Reverse<usize>,
    without_method: bool,
    headers: Reverse<usize>,
    query_params: Reverse<usize>,
    /// Position of the route in (creationTimestamp, namespace, name) order.
    route_rank: usize,
    rule: usize,
    match_index: usize,
}

impl Precedence {
    pub fn new(m: &RouteMatch, route_rank: usize, rule: usize, match_index: usize) -> Self {
        let (path_kind, path_len) = match &m.path {
            Some(p) => {
                let kind = match p.r#type() {
                    PathMatchType::PathMatchExact => 0,
                    PathMatchType::PathMatchRegularExpression => 1,
                    PathMatchType::PathMatchPathPrefix => 2,
                };
                (kind, p.value.len())
            }
            None => (2, 1),
        };
        Precedence {
            path_kind,
            path_len: Reverse(path_len),
            method_len: Reverse(0),
            without_method: m.method.is_empty(),
            headers: Reverse(m.headers.len()),
            query_params: Reverse(m.query_params.len()),
            route_rank,
            rule,
            match_index,
        }
    }

    /// A GRPCRoute match of `service` and `method` characters (as given in
    /// its `GRPCMethodMatch`; 0 when unset).
    pub fn grpc(
        m: &RouteMatch,
        (service, method): (usize, usize),
        route_rank: usize,
        rule: usize,
        match_index: usize,
    ) -> Self {
        Precedence {
            // After every HTTP path tier: should an HTTPRoute and a
            // GRPCRoute ever share a virtual host (see `kinds`), a gRPC
            // catch-all never takes the HTTP routes' requests.
            path_kind: 3,
            path_len: Reverse(service),
            method_len: Reverse(method),
            without_method: false,
            headers: Reverse(m.headers.len()),
            query_params: Reverse(0),
            route_rank,
            rule,
            match_index,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_snapshot::{HeaderMatch, PathMatch, QueryParamMatch};

    fn path(kind: PathMatchType, value: &str) -> RouteMatch {
        RouteMatch {
            path: Some(PathMatch {
                r#type: kind as i32,
                value: value.into(),
            }),
            ..Default::default()
        }
    }

    fn with(mut m: RouteMatch, method: &str, headers: usize, query: usize) -> RouteMatch {
        m.method = method.into();
        m.headers = vec![HeaderMatch::default(); headers];
        m.query_params = vec![QueryParamMatch::default(); query];
        m
    }

    use PathMatchType::PathMatchRegularExpression as Regex;
    use PathMatchType::{PathMatchExact as Exact, PathMatchPathPrefix as Prefix};

    #[test]
    fn precedence_table() {
        // (spec sentence, winner, loser), each as (match, route rank, rule, match index)
        type Case = (
            &'static str,
            (RouteMatch, usize, usize),
            (RouteMatch, usize, usize),
        );
        let cases: Vec<Case> = vec![
            (
                "Exact path match",
                (path(Exact, "/a"), 9, 9),
                (path(Prefix, "/a/b/c"), 0, 0),
            ),
            (
                "regex after exact",
                (path(Exact, "/"), 9, 9),
                (path(Regex, "/.*"), 0, 0),
            ),
            (
                "regex before prefix",
                (path(Regex, "/a"), 9, 9),
                (path(Prefix, "/abcdef"), 0, 0),
            ),
            (
                "Prefix path match with largest number of characters",
                (path(Prefix, "/abc"), 9, 9),
                (path(Prefix, "/ab"), 0, 0),
            ),
            (
                "Method match",
                (with(path(Prefix, "/a"), "GET", 0, 0), 9, 9),
                (with(path(Prefix, "/a"), "", 5, 5), 0, 0),
            ),
            (
                "Largest number of header matches",
                (with(path(Prefix, "/a"), "", 2, 0), 9, 9),
                (with(path(Prefix, "/a"), "", 1, 9), 0, 0),
            ),
            (
                "Largest number of query param matches",
                (with(path(Prefix, "/a"), "", 1, 2), 9, 9),
                (with(path(Prefix, "/a"), "", 1, 1), 0, 0),
            ),
            (
                "The oldest Route based on creation timestamp, then {namespace}/{name}",
                (path(Prefix, "/a"), 0, 9),
                (path(Prefix, "/a"), 1, 0),
            ),
            (
                "the first matching rule (in list order)",
                (path(Prefix, "/a"), 3, 0),
                (path(Prefix, "/a"), 3, 1),
            ),
        ];
        for (sentence, (wm, wrank, wrule), (lm, lrank, lrule)) in cases {
            let winner = Precedence::new(&wm, wrank, wrule, 0);
            let loser = Precedence::new(&lm, lrank, lrule, 0);
            assert!(winner < loser, "{sentence}");
        }
    }

    #[test]
    fn grpc_precedence_table() {
        // (spec sentence, winner, loser), each as ((service, method), headers, route rank)
        type Case = (
            &'static str,
            ((usize, usize), usize, usize),
            ((usize, usize), usize, usize),
        );
        let cases: Vec<Case> = vec![
            (
                "Characters in a matching service",
                ((8, 0), 0, 9),
                ((0, 3), 5, 0),
            ),
            ("longer service first", ((9, 0), 0, 9), ((8, 9), 5, 0)),
            (
                "Characters in a matching method",
                ((8, 3), 0, 9),
                ((8, 0), 5, 0),
            ),
            ("Header matches", ((8, 3), 2, 9), ((8, 3), 1, 0)),
            ("then the oldest Route", ((8, 3), 1, 0), ((8, 3), 1, 1)),
        ];
        for (sentence, (wc, wh, wrank), (lc, lh, lrank)) in cases {
            let winner = Precedence::grpc(&with(path(Exact, "/"), "", wh, 0), wc, wrank, 0, 0);
            let loser = Precedence::grpc(&with(path(Exact, "/"), "", lh, 0), lc, lrank, 0, 0);
            assert!(winner < loser, "{sentence}");
        }
    }
}
