//! HTTPRoute matches to snapshot matches, per Gateway API `HTTPRouteMatch`:
//! path (Exact, PathPrefix, RegularExpression; default PathPrefix "/"),
//! headers and query params (Exact, RegularExpression; "only the first entry
//! with an equivalent name MUST be considered"; header names compare
//! case-insensitively, query param names case-sensitively), and method.
//! Regular expressions must compile with the `regex` crate anchored to the
//! whole value; one that does not is reported with its field path.

use gatehouse_snapshot::{
    HeaderMatch, PathMatch, PathMatchType, QueryParamMatch, RouteMatch, ValueMatchType,
};

use crate::k8s::{
    HeaderMatchType, Method, PathMatchType as K8sPath, QueryParamMatchType, RouteMatch as K8sMatch,
};

/// The snapshot matches of one rule; a rule without matches matches every
/// request ("/" prefix). `Err` names the field holding an invalid value.
pub fn rule_matches(
    rule_index: usize,
    matches: Option<&[K8sMatch]>,
) -> Result<Vec<RouteMatch>, String> {
    let matches = matches.unwrap_or_default();
    if matches.is_empty() {
        return Ok(vec![RouteMatch {
            path: Some(prefix("/")),
            ..Default::default()
        }]);
    }
    matches
        .iter()
        .enumerate()
        .map(|(i, m)| route_match(m, &|| format!("spec.rules[{rule_index}].matches[{i}]")))
        .collect()
}

/// True when every match of a rule matches on a path prefix (no path counts
/// as the prefix "/"), which `ReplacePrefixMatch` needs.
pub fn prefix_matches_only(matches: Option<&[K8sMatch]>) -> bool {
    matches.unwrap_or_default().iter().all(|m| {
        m.path
            .as_ref()
            .and_then(|p| p.r#type.as_ref())
            .is_none_or(|t| matches!(t, K8sPath::PathPrefix))
    })
}

fn prefix(value: &str) -> PathMatch {
    PathMatch {
        r#type: PathMatchType::PathMatchPathPrefix as i32,
        value: value.into(),
    }
}

/// `field` spells the match's path, only when a message needs it.
fn route_match(m: &K8sMatch, field: &dyn Fn() -> String) -> Result<RouteMatch, String> {
    let path = match &m.path {
        None => prefix("/"),
        Some(p) => {
            let value = p.value.as_deref().unwrap_or("/");
            let kind = p.r#type.as_ref().unwrap_or(&K8sPath::PathPrefix);
            if !matches!(kind, K8sPath::RegularExpression) && !value.starts_with('/') {
                return Err(format!(
                    "{}.path.value: {value:?} must start with \"/\"",
                    field()
                ));
            }
            match kind {
                K8sPath::PathPrefix => prefix(&normalize_prefix(value)),
                K8sPath::Exact => PathMatch {
                    r#type: PathMatchType::PathMatchExact as i32,
                    value: value.into(),
                },
                K8sPath::RegularExpression => {
                    check_regex(value, || format!("{}.path.value", field()))?;
                    PathMatch {
                        r#type: PathMatchType::PathMatchRegularExpression as i32,
                        value: value.into(),
                    }
                }
            }
        }
    };
    let mut headers: Vec<HeaderMatch> = Vec::new();
    for (i, h) in m.headers.iter().flatten().enumerate() {
        let name = h.name.to_ascii_lowercase();
        if !is_header_name(&name) {
            return Err(format!(
                "{}.headers[{i}].name: {:?} is not a valid header name",
                field(),
                h.name
            ));
        }
        if headers.iter().any(|seen| seen.name == name) {
            continue;
        }
        let regex = matches!(h.r#type, Some(HeaderMatchType::RegularExpression));
        if regex {
            check_regex(&h.value, || format!("{}.headers[{i}].value", field()))?;
        }
        headers.push(HeaderMatch {
            r#type: value_type(regex) as i32,
            name,
            value: h.value.clone(),
        });
    }
    let mut query_params: Vec<QueryParamMatch> = Vec::new();
    for (i, q) in m.query_params.iter().flatten().enumerate() {
        if query_params.iter().any(|seen| seen.name == q.name) {
            continue;
        }
        let regex = matches!(q.r#type, Some(QueryParamMatchType::RegularExpression));
        if regex {
            check_regex(&q.value, || format!("{}.queryParams[{i}].value", field()))?;
        }
        query_params.push(QueryParamMatch {
            r#type: value_type(regex) as i32,
            name: q.name.clone(),
            value: q.value.clone(),
        });
    }
    Ok(RouteMatch {
        path: Some(path),
        method: m
            .method
            .as_ref()
            .map(method_name)
            .unwrap_or_default()
            .into(),
        headers,
        query_params,
        rule: 0,
        backend_identity: 0,
        chain: 0,
    })
}

/// RFC 9110 §5.1: a field name is a token.
fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn value_type(regex: bool) -> ValueMatchType {
    if regex {
        ValueMatchType::ValueMatchRegularExpression
    } else {
        ValueMatchType::ValueMatchExact
    }
}

fn method_name(method: &Method) -> &'static str {
    match method {
        Method::Get => "GET",
        Method::Head => "HEAD",
        Method::Post => "POST",
        Method::Put => "PUT",
        Method::Delete => "DELETE",
        Method::Connect => "CONNECT",
        Method::Options => "OPTIONS",
        Method::Trace => "TRACE",
        Method::Patch => "PATCH",
    }
}

/// Spec (`PathMatchPathPrefix`): "/foo/" matches "/foo" and "/foo/bar" but
/// not "/foobar", the same as "/foo": the data plane matches whole segments,
/// so the value loses its trailing slashes ("/" stays "/").
pub fn normalize_prefix(value: &str) -> String {
    let trimmed = value.trim_end_matches('/');
    if trimmed.is_empty() {
        "/".into()
    } else {
        trimmed.into()
    }
}

fn check_regex(value: &str, field: impl Fn() -> String) -> Result<(), String> {
    regex::Regex::new(&format!("^(?:{value})$"))
        .map(|_| ())
        .map_err(|e| {
            // The regex error spans lines (pattern, caret, reason): keep
            // its last line, the reason.
            let text = e.to_string();
            let reason = text.lines().last().unwrap_or_default().trim().to_owned();
            format!(
                "{}: invalid regular expression {value:?}: {reason}",
                field()
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Vec<K8sMatch> {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn prefix_values_lose_trailing_slashes_but_root_stays() {
        assert_eq!(normalize_prefix("/foo/"), "/foo");
        assert_eq!(normalize_prefix("/foo"), "/foo");
        assert_eq!(normalize_prefix("/"), "/");
        assert_eq!(normalize_prefix("//"), "/");
    }

    #[test]
    fn a_rule_without_matches_matches_every_path() {
        let m = rule_matches(0, None).unwrap();
        assert_eq!(m[0].path.as_ref().unwrap().value, "/");
    }

    #[test]
    fn only_the_first_of_equivalent_header_names_counts() {
        let m = parse(
            "- headers:\n  - {name: X-Foo, value: a}\n  - {name: x-foo, value: b}\n  queryParams:\n  - {name: q, value: 1}\n  - {name: Q, value: 2}\n  - {name: q, value: 3}\n  method: GET\n",
        );
        let out = rule_matches(0, Some(&m)).unwrap();
        assert_eq!(out[0].headers.len(), 1);
        assert_eq!(out[0].headers[0].name, "x-foo");
        assert_eq!(out[0].headers[0].value, "a");
        let names: Vec<_> = out[0]
            .query_params
            .iter()
            .map(|q| q.name.as_str())
            .collect();
        assert_eq!(names, ["q", "Q"]);
        assert_eq!(out[0].method, "GET");
    }

    #[test]
    fn paths_without_a_leading_slash_and_bad_header_names_are_rejected() {
        let bad_path = parse("- path: {type: Exact, value: foo}\n");
        let error = rule_matches(0, Some(&bad_path)).unwrap_err();
        assert!(
            error.contains("spec.rules[0].matches[0].path.value"),
            "{error}"
        );
        let bad_header = parse("- headers: [{name: \"x y\", value: v}]\n");
        let error = rule_matches(0, Some(&bad_header)).unwrap_err();
        assert!(error.contains("headers[0].name"), "{error}");
    }

    #[test]
    fn invalid_regex_names_its_field() {
        let m = parse("- path: {type: RegularExpression, value: '/(unclosed'}\n");
        let err = rule_matches(2, Some(&m)).unwrap_err();
        assert!(
            err.starts_with("spec.rules[2].matches[0].path.value"),
            "{err}"
        );
    }
}
