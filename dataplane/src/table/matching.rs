//! HTTPRoute rule matches, Gateway API v1 `HTTPRouteMatch`: "Multiple match
//! types are ANDed together, i.e. the match will evaluate to true only if all
//! conditions are satisfied." Path (`HTTPPathMatch`: Exact, PathPrefix,
//! RegularExpression), method, headers (`HTTPHeaderMatch`, names compared
//! case-insensitively) and query parameters (`HTTPQueryParamMatch`, names
//! compared exactly). Regular expressions must match the whole value.

use std::borrow::Cow;

use http::{HeaderMap, HeaderName, Method};
use regex::Regex;

/// The parts of a request that matching looks at; `host` is normalized.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    pub host: &'a str,
    pub method: &'a Method,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: Fields<'a>,
}

/// A request's header fields: parsed into a map, or as the parser found
/// them in the head (the HTTP/1.1 passthrough, which builds no map).
#[derive(Debug, Clone, Copy)]
pub enum Fields<'a> {
    Map(&'a HeaderMap),
    Raw(&'a [httparse::Header<'a>]),
}

impl Fields<'_> {
    /// Whether any value of the field `name` (lower case) that is visible
    /// ASCII satisfies `test`.
    fn any_value(&self, name: &HeaderName, test: impl Fn(&str) -> bool) -> bool {
        match self {
            Self::Map(map) => map
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .any(test),
            Self::Raw(fields) => fields
                .iter()
                .filter(|f| f.name.eq_ignore_ascii_case(name.as_str()))
                .filter_map(|f| visible_ascii(f.value))
                .any(test),
        }
    }
}

/// The value as text when it is what `HeaderValue::to_str` accepts: tab and
/// visible ASCII.
fn visible_ascii(value: &[u8]) -> Option<&str> {
    value
        .iter()
        .all(|b| *b == b'\t' || (0x20..0x7f).contains(b))
        .then(|| std::str::from_utf8(value).ok())
        .flatten()
}

#[derive(Debug)]
pub enum PathMatch {
    Exact(Box<str>),
    /// Prefix without trailing "/"; "" for the prefix "/" (matches all).
    Prefix(Box<str>),
    Regex(Regex),
}

impl PathMatch {
    pub fn matches(&self, path: &str) -> bool {
        match self {
            Self::Exact(exact) => **exact == *path,
            // PathPrefix: "/foo" matches "/foo" and "/foo/bar", not "/foobar".
            Self::Prefix(prefix) => match path.strip_prefix(&**prefix) {
                Some(rest) => prefix.is_empty() || rest.is_empty() || rest.starts_with('/'),
                None => false,
            },
            Self::Regex(regex) => regex.is_match(path),
        }
    }
}

#[derive(Debug)]
pub enum ValueMatch {
    Exact(Box<str>),
    Regex(Regex),
}

impl ValueMatch {
    pub fn matches(&self, value: &str) -> bool {
        match self {
            Self::Exact(exact) => **exact == *value,
            Self::Regex(regex) => regex.is_match(value),
        }
    }
}

#[derive(Debug)]
pub struct HeaderMatch {
    pub name: HeaderName,
    pub value: ValueMatch,
}

impl HeaderMatch {
    /// A header sent several times matches when any of its values does.
    fn matches(&self, headers: &Fields<'_>) -> bool {
        headers.any_value(&self.name, |v| self.value.matches(v))
    }
}

#[derive(Debug)]
pub struct QueryParamMatch {
    pub name: Box<str>,
    pub value: ValueMatch,
}

impl QueryParamMatch {
    /// The spec leaves repeated parameters undefined; the first one counts.
    fn matches(&self, query: Option<&str>) -> bool {
        let Some(query) = query else { return false };
        query
            .split('&')
            .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
            .find(|(name, _)| percent_decode(name) == *self.name)
            .is_some_and(|(_, value)| self.value.matches(&percent_decode(value)))
    }
}

/// One compiled `RouteMatch`, pointing at its rule.
#[derive(Debug)]
pub struct RouteMatch {
    pub path: PathMatch,
    pub method: Option<Method>,
    pub headers: Box<[HeaderMatch]>,
    pub query_params: Box<[QueryParamMatch]>,
    pub rule: usize,
    /// 1 + index of the client certificate of the Gateway this match came
    /// through (see `Cluster::tls_for`); 0 for none.
    pub backend_identity: usize,
    /// 1 + index of its gatehouse.dev filter chain; 0 for none.
    pub chain: usize,
}

impl RouteMatch {
    pub fn matches(&self, request: &RequestView<'_>) -> bool {
        self.path.matches(request.path)
            && self.method.as_ref().is_none_or(|m| m == request.method)
            && self.headers.iter().all(|h| h.matches(&request.headers))
            && self.query_params.iter().all(|q| q.matches(request.query))
    }
}

/// Compiles `pattern` so that it must match the whole value.
pub fn whole_value_regex(pattern: &str) -> Result<Regex, regex::Error> {
    Regex::new(&format!("^(?:{pattern})$"))
}

/// RFC 3986 §2.1 percent-decoding; invalid escapes stay as they are.
fn percent_decode(text: &str) -> Cow<'_, str> {
    if !text.contains('%') {
        return Cow::Borrowed(text);
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                let value = hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0);
                out.push(u8::try_from(value).unwrap_or(b'?'));
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_fields_match_as_a_header_map_does() {
        let head = b"GET / HTTP/1.1\r\nX-Env: prod\r\nx-env: canary\r\nX-Bin: caf\xc3\xa9\r\nX-Tab: a\tb\r\n\r\n";
        let mut fields = [httparse::EMPTY_HEADER; 8];
        let mut request = httparse::Request::new(&mut fields);
        request.parse(head).unwrap();
        let mut map = HeaderMap::new();
        for field in request.headers.iter() {
            map.append(
                HeaderName::from_bytes(field.name.as_bytes()).unwrap(),
                http::HeaderValue::from_bytes(field.value).unwrap(),
            );
        }
        let cases = [
            ("x-env", ValueMatch::Exact("prod".into()), true),
            ("x-env", ValueMatch::Exact("canary".into()), true),
            ("x-env", ValueMatch::Exact("Prod".into()), false),
            (
                "x-env",
                ValueMatch::Regex(whole_value_regex("can.*").unwrap()),
                true,
            ),
            ("x-tab", ValueMatch::Exact("a\tb".into()), true),
            // Not visible ASCII: no value to match, in either form.
            (
                "x-bin",
                ValueMatch::Regex(whole_value_regex(".*").unwrap()),
                false,
            ),
            (
                "x-none",
                ValueMatch::Regex(whole_value_regex(".*").unwrap()),
                false,
            ),
        ];
        for (name, value, expected) in cases {
            let rule = HeaderMatch {
                name: HeaderName::from_static(name),
                value,
            };
            assert_eq!(
                rule.matches(&Fields::Raw(request.headers)),
                expected,
                "{name}"
            );
            assert_eq!(rule.matches(&Fields::Map(&map)), expected, "{name}");
        }
    }

    #[test]
    fn prefix_matches_whole_segments() {
        let p = PathMatch::Prefix("/foo".into());
        assert!(p.matches("/foo"));
        assert!(p.matches("/foo/"));
        assert!(p.matches("/foo/bar"));
        assert!(!p.matches("/foobar"));
        assert!(PathMatch::Prefix("".into()).matches("/anything"));
    }

    #[test]
    fn regex_must_match_the_whole_value() {
        let r = whole_value_regex("/v[0-9]+").unwrap();
        assert!(r.is_match("/v12"));
        assert!(!r.is_match("/v12/x"));
        assert!(!r.is_match("/api/v12"));
        let alt = whole_value_regex("a|b").unwrap();
        assert!(!alt.is_match("ab"));
    }

    #[test]
    fn query_param_uses_first_and_decodes() {
        let q = QueryParamMatch {
            name: "a b".into(),
            value: ValueMatch::Exact("1/2".into()),
        };
        assert!(q.matches(Some("x=1&a%20b=1%2F2&a%20b=3")));
        assert!(!q.matches(Some("a%20b=3&a%20b=1%2F2")));
        assert!(!q.matches(None));
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }
}
