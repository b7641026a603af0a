//! Gateway API HTTPRoute filters in their runtime form, and the pure parts
//! of applying them: header modification, path rewriting and the redirect
//! `Location`. Everything a request needs is parsed when the table is built,
//! so applying a filter never parses or validates.

use std::fmt::Write as _;

use gatehouse_snapshot as pb;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, uri::Authority};

use super::matching::PathMatch;

/// Filters of a rule or of one backend.
#[derive(Debug, Default)]
pub struct Filters {
    pub request_headers: Option<HeaderModifier>,
    pub response_headers: Option<HeaderModifier>,
    pub redirect: Option<Redirect>,
    pub rewrite: Option<Rewrite>,
    pub mirrors: Box<[Mirror]>,
    pub cors: Option<Cors>,
}

/// `HTTPCORSFilter`, with its response header values prepared.
#[derive(Debug)]
pub struct Cors {
    origins: Box<[OriginPattern]>,
    credentials: bool,
    methods: Allowed,
    headers: Allowed,
    expose: Option<HeaderValue>,
    max_age: HeaderValue,
}

/// The allowed methods or headers of a preflight answer.
#[derive(Debug)]
enum Allowed {
    /// Not listed: no header.
    Nothing,
    /// "*": whatever the preflight asks for.
    Requested,
    /// The list, joined.
    These(HeaderValue),
}

impl Allowed {
    fn value(&self, requested: Option<&HeaderValue>) -> Option<HeaderValue> {
        match self {
            Self::Nothing => None,
            Self::Requested => requested.cloned(),
            Self::These(value) => Some(value.clone()),
        }
    }
}

#[derive(Debug)]
enum OriginPattern {
    Any,
    Exact(Box<str>),
    /// One `*` in the host: what precedes and what follows it.
    Glob(Box<str>, Box<str>),
}

impl OriginPattern {
    fn matches(&self, origin: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(exact) => exact.eq_ignore_ascii_case(origin),
            Self::Glob(head, tail) => {
                origin.len() > head.len() + tail.len()
                    && origin
                        .get(..head.len())
                        .is_some_and(|h| h.eq_ignore_ascii_case(head))
                    && origin
                        .get(origin.len() - tail.len()..)
                        .is_some_and(|t| t.eq_ignore_ascii_case(tail))
            }
        }
    }
}

/// What a CORS filter answers.
#[derive(Debug, PartialEq, Eq)]
pub enum CorsDecision {
    /// No Origin, or one not allowed: no CORS headers.
    NotCors,
    /// A preflight from an allowed origin: answer it with these headers.
    Preflight(Vec<(HeaderName, HeaderValue)>),
    /// A preflight from an origin that is not allowed: answer it, without
    /// CORS headers, and never forward it.
    RefusedPreflight,
    /// An actual request from an allowed origin: forward it, then add these
    /// headers to the response.
    Actual(Vec<(HeaderName, HeaderValue)>),
}

impl Cors {
    /// Fetch standard §3.2: a preflight is an OPTIONS request carrying
    /// Origin and Access-Control-Request-Method. The allowed origin is
    /// echoed (never "*", which credentials forbid and which hides which
    /// origin was judged).
    pub fn decide(&self, method: &http::Method, headers: &HeaderMap) -> CorsDecision {
        use http::header::{
            ACCESS_CONTROL_ALLOW_CREDENTIALS as CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS,
            ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
            ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_HEADERS,
            ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
        };
        let Some(origin) = headers.get(ORIGIN) else {
            return CorsDecision::NotCors;
        };
        let preflight =
            method == http::Method::OPTIONS && headers.contains_key(ACCESS_CONTROL_REQUEST_METHOD);
        let allowed = origin
            .to_str()
            .is_ok_and(|o| self.origins.iter().any(|p| p.matches(o)));
        if !allowed {
            return match preflight {
                true => CorsDecision::RefusedPreflight,
                false => CorsDecision::NotCors,
            };
        }
        let mut out = vec![
            (ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone()),
            (VARY, HeaderValue::from_static("Origin")),
        ];
        if self.credentials {
            out.push((CREDENTIALS, HeaderValue::from_static("true")));
        }
        if let Some(expose) = &self.expose {
            out.push((ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone()));
        }
        if !preflight {
            return CorsDecision::Actual(out);
        }
        if let Some(methods) = self
            .methods
            .value(headers.get(ACCESS_CONTROL_REQUEST_METHOD))
        {
            out.push((ACCESS_CONTROL_ALLOW_METHODS, methods));
        }
        if let Some(allowed) = self
            .headers
            .value(headers.get(ACCESS_CONTROL_REQUEST_HEADERS))
        {
            out.push((ACCESS_CONTROL_ALLOW_HEADERS, allowed));
        }
        out.push((ACCESS_CONTROL_MAX_AGE, self.max_age.clone()));
        CorsDecision::Preflight(out)
    }
}

/// `HTTPHeaderFilter`: set, then add, then remove.
#[derive(Debug, Default)]
pub struct HeaderModifier {
    set: Box<[(HeaderName, HeaderValue)]>,
    add: Box<[(HeaderName, HeaderValue)]>,
    remove: Box<[HeaderName]>,
}

impl HeaderModifier {
    /// Spec: `set` overwrites every value of the header, `add` appends one
    /// (a header sent several times keeps each line), `remove` drops it;
    /// names compare case-insensitively (`HeaderName` is lower-case).
    pub fn apply(&self, headers: &mut HeaderMap) {
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.add {
            headers.append(name.clone(), value.clone());
        }
        for name in &self.remove {
            headers.remove(name);
        }
    }
}

/// `HTTPPathModifier`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathRewrite {
    Full(Box<str>),
    Prefix(Box<str>),
}

impl PathRewrite {
    /// The new path for `path`, which `matched` matched. A prefix
    /// replacement needs the matched prefix: with any other match (which
    /// compile never pairs with it) the path is replaced whole.
    ///
    /// Spec (`HTTPPathModifier.replacePrefixMatch`): the matched prefix is
    /// replaced, "/foo/bar" with prefix "/foo" and "/xyz" gives "/xyz/bar";
    /// trailing slashes of the prefix and the replacement do not double up,
    /// and an empty result is "/".
    pub fn apply(&self, path: &str, matched: &PathMatch) -> String {
        match (self, matched) {
            (Self::Full(full), _) => full.to_string(),
            (Self::Prefix(replacement), PathMatch::Prefix(prefix)) => {
                let rest = path.get(prefix.len()..).unwrap_or("");
                let head = replacement.trim_end_matches('/');
                let mut out = String::with_capacity(head.len() + rest.len() + 1);
                out.push_str(head);
                out.push_str(rest);
                if !out.starts_with('/') {
                    out.insert(0, '/');
                }
                out
            }
            (Self::Prefix(replacement), _) => replacement.to_string(),
        }
    }
}

/// `HTTPRequestRedirectFilter`.
#[derive(Debug)]
pub struct Redirect {
    pub scheme: Option<Scheme>,
    pub hostname: Option<Box<str>>,
    pub port: Option<u16>,
    pub path: Option<PathRewrite>,
    pub status: StatusCode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Https => "https",
        }
    }

    pub fn default_port(self) -> u16 {
        match self {
            Self::Http => 80,
            Self::Https => 443,
        }
    }
}

/// What a redirect needs to know about the request.
#[derive(Debug, Clone, Copy)]
pub struct RedirectRequest<'a> {
    pub scheme: Scheme,
    /// Normalized host (no port; IPv6 in brackets).
    pub host: &'a str,
    /// The listener's port as clients see it.
    pub listener_port: u16,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub matched: &'a PathMatch,
}

impl Redirect {
    /// The `Location` of the redirect. Spec (`HTTPRequestRedirectFilter`):
    /// an unset scheme or hostname keeps the request's; an unset port is the
    /// well-known port of `scheme` when scheme is set, else the listener's
    /// port; the port is left out when it is the scheme's well-known one. The
    /// query string is kept.
    pub fn location(&self, request: &RedirectRequest<'_>) -> String {
        let scheme = self.scheme.unwrap_or(request.scheme);
        let host = self.hostname.as_deref().unwrap_or(request.host);
        let port = self.port.unwrap_or(match self.scheme {
            Some(s) => s.default_port(),
            None => request.listener_port,
        });
        let path = match &self.path {
            Some(rewrite) => rewrite.apply(request.path, request.matched),
            None => request.path.to_owned(),
        };
        let mut location =
            String::with_capacity(scheme.as_str().len() + host.len() + path.len() + 16);
        location.push_str(scheme.as_str());
        location.push_str("://");
        location.push_str(host);
        if port != scheme.default_port() {
            let _ = write!(location, ":{port}");
        }
        location.push_str(&path);
        if let Some(query) = request.query {
            location.push('?');
            location.push_str(query);
        }
        location
    }
}

/// `HTTPURLRewriteFilter`.
#[derive(Debug)]
pub struct Rewrite {
    /// Sent upstream as Host (HTTP/1.1) or `:authority` (h2c).
    pub hostname: Option<Authority>,
    pub path: Option<PathRewrite>,
}

/// `HTTPRequestMirrorFilter`.
#[derive(Debug)]
pub struct Mirror {
    /// Index into the table's clusters.
    pub cluster: usize,
    pub numerator: u32,
    pub denominator: u32,
}

impl Mirror {
    /// Whether this request is mirrored, for `roll` (any u64).
    pub fn selects(&self, roll: u64) -> bool {
        self.numerator >= self.denominator
            || roll % u64::from(self.denominator) < u64::from(self.numerator)
    }
}

/// Builds filters; `Err` is (field below `filters`, problem).
pub fn build(filters: &pb::Filters, cluster_count: usize) -> Result<Filters, (String, String)> {
    let request_headers = filters
        .request_headers
        .as_ref()
        .map(|h| header_modifier(h).map_err(|(f, p)| (format!("request_headers.{f}"), p)))
        .transpose()?;
    let response_headers = filters
        .response_headers
        .as_ref()
        .map(|h| header_modifier(h).map_err(|(f, p)| (format!("response_headers.{f}"), p)))
        .transpose()?;
    let redirect = filters
        .redirect
        .as_ref()
        .map(|r| redirect(r).map_err(|(f, p)| (format!("redirect.{f}"), p)))
        .transpose()?;
    let rewrite = filters
        .rewrite
        .as_ref()
        .map(|r| rewrite(r).map_err(|(f, p)| (format!("rewrite.{f}"), p)))
        .transpose()?;
    let mirrors = filters
        .mirrors
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let cluster = usize::try_from(m.cluster)
                .ok()
                .filter(|c| *c < cluster_count)
                .ok_or_else(|| {
                    (
                        format!("mirrors[{i}].cluster"),
                        format!(
                            "index {} out of range ({cluster_count} clusters)",
                            m.cluster
                        ),
                    )
                })?;
            if m.denominator == 0 || m.numerator > m.denominator {
                return Err((
                    format!("mirrors[{i}]"),
                    format!(
                        "fraction {}/{} is not within 0..=1",
                        m.numerator, m.denominator
                    ),
                ));
            }
            Ok(Mirror {
                cluster,
                numerator: m.numerator,
                denominator: m.denominator,
            })
        })
        .collect::<Result<_, _>>()?;
    if redirect.is_some() && rewrite.is_some() {
        return Err((
            "redirect".into(),
            "a redirect cannot be combined with a rewrite".into(),
        ));
    }
    let cors = filters
        .cors
        .as_ref()
        .map(|c| cors(c).map_err(|(f, p)| (format!("cors.{f}"), p)))
        .transpose()?;
    Ok(Filters {
        request_headers,
        response_headers,
        redirect,
        rewrite,
        mirrors,
        cors,
    })
}

fn cors(c: &pb::Cors) -> Result<Cors, FieldError> {
    let origins = c
        .allow_origins
        .iter()
        .map(|o| match o.split_once('*') {
            _ if o == "*" => OriginPattern::Any,
            Some((head, tail)) => OriginPattern::Glob(head.into(), tail.into()),
            None => OriginPattern::Exact(o.as_str().into()),
        })
        .collect();
    let allowed = |key: &str, list: &[String], none: Allowed| -> Result<Allowed, FieldError> {
        if list.is_empty() {
            return Ok(none);
        }
        if list.iter().any(|v| v == "*") {
            return Ok(Allowed::Requested);
        }
        HeaderValue::from_str(&list.join(", "))
            .map(Allowed::These)
            .map_err(|e| (key.to_owned(), e.to_string()))
    };
    Ok(Cors {
        origins,
        credentials: c.allow_credentials,
        // No methods listed: the CORS-safelisted ones (Fetch §2.2.1).
        methods: allowed(
            "allow_methods",
            &c.allow_methods,
            Allowed::These(HeaderValue::from_static("GET, HEAD, POST")),
        )?,
        headers: allowed("allow_headers", &c.allow_headers, Allowed::Nothing)?,
        expose: match allowed("expose_headers", &c.expose_headers, Allowed::Nothing)? {
            Allowed::These(value) => Some(value),
            // "*" exposes every header of a request without credentials;
            // with credentials it would name a header "*" (Fetch §3.2.3).
            Allowed::Requested if !c.allow_credentials => Some(HeaderValue::from_static("*")),
            Allowed::Requested | Allowed::Nothing => None,
        },
        max_age: HeaderValue::from(c.max_age_seconds),
    })
}

type FieldError = (String, String);

fn header_modifier(h: &pb::HeaderModifier) -> Result<HeaderModifier, FieldError> {
    let pairs = |key: &str, list: &[pb::Header]| {
        list.iter()
            .enumerate()
            .map(|(i, header)| {
                let name = HeaderName::from_bytes(header.name.as_bytes())
                    .map_err(|e| (format!("{key}[{i}].name"), e.to_string()))?;
                let value = HeaderValue::from_str(&header.value)
                    .map_err(|e| (format!("{key}[{i}].value"), e.to_string()))?;
                Ok((name, value))
            })
            .collect::<Result<Box<[_]>, FieldError>>()
    };
    let remove = h
        .remove
        .iter()
        .enumerate()
        .map(|(i, name)| {
            HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| (format!("remove[{i}]"), e.to_string()))
        })
        .collect::<Result<_, _>>()?;
    Ok(HeaderModifier {
        set: pairs("set", &h.set)?,
        add: pairs("add", &h.add)?,
        remove,
    })
}

fn path_rewrite(p: Option<&pb::PathModifier>) -> Result<Option<PathRewrite>, FieldError> {
    use pb::path_modifier::Path;
    let Some(p) = p else {
        return Ok(None);
    };
    let (rewrite, value) = match &p.path {
        Some(Path::Full(v)) => (PathRewrite::Full(v.as_str().into()), v),
        Some(Path::Prefix(v)) => (PathRewrite::Prefix(v.as_str().into()), v),
        None => return Err(("path".into(), "neither full nor prefix".into())),
    };
    // Must stay a valid origin-form path once placed in a URI.
    if !value.starts_with('/') || http::uri::PathAndQuery::try_from(value.as_str()).is_err() {
        return Err(("path".into(), format!("{value:?} is not an absolute path")));
    }
    Ok(Some(rewrite))
}

fn hostname(value: &str) -> Result<Option<Authority>, FieldError> {
    if value.is_empty() {
        return Ok(None);
    }
    let valid = value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    match Authority::try_from(value) {
        Ok(authority) if valid => Ok(Some(authority)),
        _ => Err(("hostname".into(), format!("{value:?} is not a hostname"))),
    }
}

fn redirect(r: &pb::Redirect) -> Result<Redirect, FieldError> {
    let scheme = match r.scheme.as_str() {
        "" => None,
        "http" => Some(Scheme::Http),
        "https" => Some(Scheme::Https),
        other => return Err(("scheme".into(), format!("{other:?} is not http or https"))),
    };
    let port = match r.port {
        0 => None,
        p => Some(u16::try_from(p).map_err(|_| ("port".into(), format!("{p} is out of range")))?),
    };
    let status = match r.status {
        301 | 302 | 303 | 307 | 308 => StatusCode::from_u16(r.status as u16)
            .map_err(|e| ("status".to_owned(), e.to_string()))?,
        other => return Err(("status".into(), format!("{other} is not a redirect status"))),
    };
    Ok(Redirect {
        scheme,
        hostname: hostname(&r.hostname)?.map(|a| a.as_str().into()),
        port,
        path: path_rewrite(r.path.as_ref())?,
        status,
    })
}

fn rewrite(r: &pb::Rewrite) -> Result<Rewrite, FieldError> {
    Ok(Rewrite {
        hostname: hostname(&r.hostname)?,
        path: path_rewrite(r.path.as_ref())?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(p: &str) -> PathMatch {
        PathMatch::Prefix(p.trim_end_matches('/').into())
    }

    /// The table of `HTTPPathModifier.replacePrefixMatch` in the Gateway API
    /// spec: request path, prefix match, replacement, modified path.
    #[test]
    fn replace_prefix_match_follows_the_spec_table() {
        let cases = [
            ("/foo/bar", "/foo", "/xyz", "/xyz/bar"),
            ("/foo/bar", "/foo", "/xyz/", "/xyz/bar"),
            ("/foo/bar", "/foo/", "/xyz", "/xyz/bar"),
            ("/foo/bar", "/foo/", "/xyz/", "/xyz/bar"),
            ("/foo", "/foo", "/xyz", "/xyz"),
            ("/foo/", "/foo", "/xyz", "/xyz/"),
            ("/foo/bar", "/foo", "", "/bar"),
            ("/foo/", "/foo", "", "/"),
            ("/foo", "/foo", "", "/"),
            ("/foo/", "/foo", "/", "/"),
            ("/foo", "/foo", "/", "/"),
            // The conformance suite's cases (httproute-rewrite-path).
            ("/prefix/one/two", "/prefix/one", "/one", "/one/two"),
            ("/strip-prefix/three", "/strip-prefix", "/", "/three"),
            ("/strip-prefix", "/strip-prefix", "/", "/"),
            // The prefix "/" matches every path.
            ("/a/b", "/", "/x", "/x/a/b"),
        ];
        for (path, matched, replacement, expected) in cases {
            let rewrite = PathRewrite::Prefix(replacement.into());
            assert_eq!(
                rewrite.apply(path, &prefix(matched)),
                expected,
                "{path} with {matched} -> {replacement}"
            );
        }
    }

    #[test]
    fn replace_full_path_ignores_the_match() {
        let rewrite = PathRewrite::Full("/one".into());
        assert_eq!(rewrite.apply("/full/one/two", &prefix("/full/one")), "/one");
    }

    fn redirect(scheme: Option<Scheme>, port: Option<u16>) -> Redirect {
        Redirect {
            scheme,
            hostname: Some("example.org".into()),
            port,
            path: None,
            status: StatusCode::FOUND,
        }
    }

    fn location(r: &Redirect, scheme: Scheme, listener_port: u16) -> String {
        let matched = prefix("/");
        r.location(&RedirectRequest {
            scheme,
            host: "gw.test",
            listener_port,
            path: "/p",
            query: None,
            matched: &matched,
        })
    }

    /// The conformance suite's HTTPRouteRedirectPortAndScheme expectations.
    #[test]
    fn redirect_ports_follow_the_spec_defaults() {
        use Scheme::{Http, Https};
        let cases = [
            // HTTP listener on 80.
            (Http, 80, None, None, "http://example.org/p"),
            (Http, 80, None, Some(80), "http://example.org/p"),
            (Http, 80, None, Some(8080), "http://example.org:8080/p"),
            (Http, 80, Some(Https), None, "https://example.org/p"),
            (Http, 80, Some(Https), Some(443), "https://example.org/p"),
            (
                Http,
                80,
                Some(Https),
                Some(8443),
                "https://example.org:8443/p",
            ),
            // HTTP listener on 8080.
            (Http, 8080, None, None, "http://example.org:8080/p"),
            (Http, 8080, None, Some(80), "http://example.org/p"),
            (Http, 8080, Some(Https), None, "https://example.org/p"),
            // HTTPS listener on 443.
            (Https, 443, None, None, "https://example.org/p"),
            (Https, 443, None, Some(443), "https://example.org/p"),
            (Https, 443, None, Some(8443), "https://example.org:8443/p"),
            (Https, 443, Some(Http), None, "http://example.org/p"),
            (Https, 443, Some(Http), Some(80), "http://example.org/p"),
            (
                Https,
                443,
                Some(Http),
                Some(8080),
                "http://example.org:8080/p",
            ),
        ];
        for (listener_scheme, listener_port, scheme, port, expected) in cases {
            assert_eq!(
                location(&redirect(scheme, port), listener_scheme, listener_port),
                expected,
                "{listener_scheme:?}:{listener_port} scheme {scheme:?} port {port:?}"
            );
        }
    }

    #[test]
    fn redirect_keeps_host_path_and_query_unless_told() {
        let r = Redirect {
            scheme: None,
            hostname: None,
            port: None,
            path: Some(PathRewrite::Prefix("/new".into())),
            status: StatusCode::MOVED_PERMANENTLY,
        };
        let matched = prefix("/old");
        let location = r.location(&RedirectRequest {
            scheme: Scheme::Http,
            host: "[::1]",
            listener_port: 8080,
            path: "/old/page",
            query: Some("a=1&b=2"),
            matched: &matched,
        });
        assert_eq!(location, "http://[::1]:8080/new/page?a=1&b=2");
    }

    #[test]
    fn header_modifier_sets_adds_and_removes_case_insensitively() {
        let modifier = header_modifier(&pb::HeaderModifier {
            set: vec![pb::Header {
                name: "x-set".into(),
                value: "new".into(),
            }],
            add: vec![pb::Header {
                name: "x-add".into(),
                value: "second".into(),
            }],
            remove: vec!["x-remove".into()],
        })
        .unwrap();
        let mut headers = HeaderMap::new();
        headers.append("X-Set", HeaderValue::from_static("old-1"));
        headers.append("X-Set", HeaderValue::from_static("old-2"));
        headers.append("X-Add", HeaderValue::from_static("first"));
        headers.append("X-Remove", HeaderValue::from_static("gone"));
        headers.append("X-Keep", HeaderValue::from_static("kept"));
        modifier.apply(&mut headers);
        let all = |name: &str| -> Vec<&str> {
            headers
                .get_all(name)
                .iter()
                .map(|v| v.to_str().unwrap())
                .collect()
        };
        assert_eq!(all("x-set"), ["new"]);
        assert_eq!(all("x-add"), ["first", "second"]);
        assert!(all("x-remove").is_empty());
        assert_eq!(all("x-keep"), ["kept"]);
    }

    #[test]
    fn mirror_fraction_selects_its_share() {
        let mirror = Mirror {
            cluster: 0,
            numerator: 25,
            denominator: 100,
        };
        let selected = (0..10_000u64).filter(|roll| mirror.selects(*roll)).count();
        assert_eq!(selected, 2_500);
        let all = Mirror {
            cluster: 0,
            numerator: 1,
            denominator: 1,
        };
        assert!((0..100u64).all(|roll| all.selects(roll)));
        let none = Mirror {
            cluster: 0,
            numerator: 0,
            denominator: 100,
        };
        assert!(!(0..1000u64).any(|roll| none.selects(roll)));
    }
}
