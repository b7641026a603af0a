//! Hostname intersection between listeners and routes, per Gateway API
//! `HTTPRouteSpec.hostnames` and `Listener.hostname`: a wildcard label
//! `*.` is a suffix match (`*.example.com` matches `a.example.com` and
//! `a.b.example.com`, not `example.com`); where both sides match, the more
//! specific of the two is what the data plane matches on.

use std::cmp::Reverse;

/// The hostname requests must carry to reach a route through a listener, or
/// `None` when the two never match the same request. `listener` is `None`
/// (any host) or a hostname; `route` is one of the route's hostnames.
pub fn intersect(listener: Option<&str>, route: &str) -> Option<String> {
    let route = route.to_ascii_lowercase();
    let Some(listener) = listener else {
        return Some(route);
    };
    let listener = listener.to_ascii_lowercase();
    if listener == route {
        return Some(route);
    }
    if matches_pattern(&route, &listener) {
        return Some(route);
    }
    if matches_pattern(&listener, &route) {
        return Some(listener);
    }
    None
}

/// Whether the wildcard `pattern` (`*.suffix`) covers every host `host`
/// (exact or wildcard) covers. Identical names are handled by the caller.
fn matches_pattern(host: &str, pattern: &str) -> bool {
    let Some(suffix) = pattern.strip_prefix('*') else {
        return false;
    };
    // `suffix` starts with '.', so a longer name ending with it has at least
    // one more label, which the spec requires ("not example.com").
    let host = host.strip_prefix('*').unwrap_or(host);
    host.len() > suffix.len() && host.ends_with(suffix)
}

/// Virtual hosts a route gets on a listener: one per hostname of the route
/// that intersects the listener's, or the listener's own hostname (`""` for
/// none) when the route names no hostname. Empty when nothing intersects.
pub fn route_hosts(listener: Option<&str>, route_hostnames: &[String]) -> Vec<String> {
    if route_hostnames.is_empty() {
        return vec![listener.unwrap_or("").to_ascii_lowercase()];
    }
    let mut hosts: Vec<String> = route_hostnames
        .iter()
        .filter_map(|h| intersect(listener, h))
        .collect();
    hosts.sort_by(|a, b| specificity(a).cmp(&specificity(b)));
    hosts.dedup();
    hosts
}

/// Sort key putting the most specific hostname first: exact names
/// (alphabetical), then wildcards by length (longest first), then `""`.
pub fn specificity(hostname: &str) -> (u8, Reverse<usize>, &str) {
    if hostname.is_empty() {
        (2, Reverse(0), hostname)
    } else if hostname.starts_with('*') {
        (1, Reverse(hostname.len()), hostname)
    } else {
        (0, Reverse(0), hostname)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intersection_table() {
        // (listener, route, expected), from the HTTPRouteSpec.hostnames doc
        // and the conformance manifest httproute-hostname-intersection.yaml.
        let cases: &[(Option<&str>, &str, Option<&str>)] = &[
            (None, "foo.com", Some("foo.com")),
            (None, "*.foo.com", Some("*.foo.com")),
            (Some("foo.com"), "foo.com", Some("foo.com")),
            (Some("foo.com"), "bar.com", None),
            (Some("Foo.COM"), "foo.com", Some("foo.com")),
            // "the Listener hostname must match the Route hostname when they
            // are both exact, or the wildcard must cover the exact one".
            (
                Some("*.example.com"),
                "test.example.com",
                Some("test.example.com"),
            ),
            (
                Some("*.example.com"),
                "a.b.example.com",
                Some("a.b.example.com"),
            ),
            (Some("*.example.com"), "example.com", None),
            (
                Some("test.example.com"),
                "*.example.com",
                Some("test.example.com"),
            ),
            (Some("example.com"), "*.example.com", None),
            (
                Some("*.example.com"),
                "*.example.com",
                Some("*.example.com"),
            ),
            (
                Some("*.example.com"),
                "*.foo.example.com",
                Some("*.foo.example.com"),
            ),
            (
                Some("*.foo.example.com"),
                "*.example.com",
                Some("*.foo.example.com"),
            ),
            (Some("*.example.com"), "*.example.net", None),
            (Some("*.bar.com"), "foo.com", None),
        ];
        for (listener, route, expected) in cases {
            assert_eq!(
                intersect(*listener, route).as_deref(),
                *expected,
                "listener {listener:?} route {route:?}"
            );
        }
    }

    #[test]
    fn a_route_without_hostnames_takes_the_listeners() {
        assert_eq!(route_hosts(Some("a.com"), &[]), ["a.com"]);
        assert_eq!(route_hosts(None, &[]), [""]);
    }

    #[test]
    fn route_hosts_are_deduplicated_most_specific_first() {
        let route = vec![
            "*.example.com".to_string(),
            "b.example.com".into(),
            "a.example.com".into(),
            "nope.org".into(),
        ];
        assert_eq!(
            route_hosts(Some("*.example.com"), &route),
            ["a.example.com", "b.example.com", "*.example.com"]
        );
    }

    #[test]
    fn specificity_orders_exact_then_longer_wildcards_then_any() {
        let mut hosts = vec!["", "*.a.com", "*.long.a.com", "z.com", "b.com"];
        hosts.sort_by_key(|h| specificity(h));
        assert_eq!(hosts, ["b.com", "z.com", "*.long.a.com", "*.a.com", ""]);
    }
}
