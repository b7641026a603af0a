//! HTTPRoute filters (Gateway API `HTTPRouteFilter`) of a rule or of one
//! backendRef, checked and turned into the snapshot's `Filters`.
//!
//! The checks are the ones the CRD's CEL rules make in a cluster, made here
//! too because standalone manifests never pass an API server: each type at
//! most once (RequestMirror excepted), RequestRedirect never beside
//! URLRewrite nor beside backendRefs, `replacePrefixMatch` only when every
//! match of the rule is a PathPrefix, header names that are HTTP tokens and
//! values that are HTTP field values, hostnames that are DNS names, paths
//! that start with "/", redirect status codes 301/302/303/307/308, a mirror
//! fraction with `numerator <= denominator`. A failed check names the field;
//! the caller makes the rule answer 500 (spec, `HTTPRouteFilter.type`:
//! requests a filter cannot handle "MUST receive a HTTP error response").
//!
//! Rule-level and backendRef-level filters have distinct generated types of
//! the same JSON shape, so both are read through one serde view.

use gatehouse_snapshot as pb;
use serde::Deserialize;

use crate::compile::backend::Backends;
use crate::compile::filter_objects::FilterObjects;
use crate::k8s::BackendRef;
use crate::status::BackendFailure;

/// A rule's or backendRef's filters, with mirrors still naming clusters.
#[derive(Debug, Clone, Default)]
pub struct FiltersModel {
    /// Everything but the mirrors.
    pub filters: pb::Filters,
    pub mirrors: Vec<MirrorModel>,
    /// gatehouse.dev Filters named by ExtensionRef, by index into
    /// `FilterObjects`, in spec order.
    pub extension_refs: Vec<usize>,
}

#[derive(Debug, Clone)]
pub struct MirrorModel {
    pub cluster: String,
    pub numerator: u32,
    pub denominator: u32,
}

impl FiltersModel {
    pub fn is_empty(&self) -> bool {
        self.filters == pb::Filters::default() && self.mirrors.is_empty()
    }

    /// The snapshot form; `cluster` maps a cluster name to its index.
    pub fn to_snapshot(&self, cluster: impl Fn(&str) -> u32) -> Option<pb::Filters> {
        if self.is_empty() {
            return None;
        }
        let mut filters = self.filters.clone();
        filters.mirrors = self
            .mirrors
            .iter()
            .map(|m| pb::Mirror {
                cluster: cluster(&m.cluster),
                numerator: m.numerator,
                denominator: m.denominator,
            })
            .collect();
        Some(filters)
    }
}

/// What compiling one filter list found wrong, beyond a rejected filter.
#[derive(Debug, Default)]
pub struct FilterOutcome {
    /// A mirror whose backendRef did not resolve: the mirror is dropped (the
    /// client's request is unaffected) and the route's ResolvedRefs says so.
    pub mirror_failure: Option<BackendFailure>,
}

/// Context a filter list is checked in.
pub struct FilterContext<'s> {
    /// e.g. `spec.rules[0].filters` or `spec.rules[0].backendRefs[1].filters`;
    /// spelled only when a message needs it.
    pub field: &'s dyn Fn() -> String,
    pub route_ns: &'s str,
    /// Every match of the rule is a PathPrefix (or has no path).
    pub prefix_matches_only: bool,
    /// The rule has backendRefs (which RequestRedirect forbids).
    pub has_backends: bool,
    /// Rule level (CORS is accepted there only).
    pub rule_level: bool,
    /// "HTTPRoute" or "GRPCRoute", for mirror backendRefs.
    pub route_kind: &'s str,
    /// gatehouse.dev Filters, for ExtensionRefs.
    pub gatehouse: &'s FilterObjects<'s>,
}

/// Checks a filter list and builds its model. `Err` is a message naming the
/// offending field; the rule must then answer 500.
pub fn compile<T: serde::Serialize>(
    ctx: &FilterContext<'_>,
    filters: &[T],
    backends: &mut Backends<'_>,
    outcome: &mut FilterOutcome,
) -> Result<FiltersModel, String> {
    let mut model = FiltersModel::default();
    for (i, filter) in filters.iter().enumerate() {
        let field = format!("{}[{i}]", (ctx.field)());
        let spec: FilterSpec = serde_json::to_value(filter)
            .and_then(serde_json::from_value)
            .map_err(|e| format!("{field}: {e}"))?;
        let once = |taken: bool| {
            if taken {
                Err(format!("{field}: filter {} cannot be repeated", spec.kind))
            } else {
                Ok(())
            }
        };
        let missing = |key: &str| format!("{field}.{key}: required for filter {}", spec.kind);
        match spec.kind.as_str() {
            "RequestHeaderModifier" => {
                once(model.filters.request_headers.is_some())?;
                let spec = spec
                    .request_header_modifier
                    .as_ref()
                    .ok_or_else(|| missing("requestHeaderModifier"))?;
                model.filters.request_headers = Some(header_modifier(
                    &format!("{field}.requestHeaderModifier"),
                    spec,
                )?);
            }
            "ResponseHeaderModifier" => {
                once(model.filters.response_headers.is_some())?;
                let spec = spec
                    .response_header_modifier
                    .as_ref()
                    .ok_or_else(|| missing("responseHeaderModifier"))?;
                model.filters.response_headers = Some(header_modifier(
                    &format!("{field}.responseHeaderModifier"),
                    spec,
                )?);
            }
            "RequestRedirect" => {
                once(model.filters.redirect.is_some())?;
                let spec = spec
                    .request_redirect
                    .as_ref()
                    .ok_or_else(|| missing("requestRedirect"))?;
                if ctx.has_backends {
                    return Err(format!(
                        "{field}: RequestRedirect must not be used together with backendRefs"
                    ));
                }
                model.filters.redirect = Some(redirect(
                    &format!("{field}.requestRedirect"),
                    spec,
                    ctx.prefix_matches_only,
                )?);
            }
            "URLRewrite" => {
                once(model.filters.rewrite.is_some())?;
                let spec = spec
                    .url_rewrite
                    .as_ref()
                    .ok_or_else(|| missing("urlRewrite"))?;
                model.filters.rewrite = Some(rewrite(
                    &format!("{field}.urlRewrite"),
                    spec,
                    ctx.prefix_matches_only,
                )?);
            }
            "RequestMirror" => {
                let spec = spec
                    .request_mirror
                    .as_ref()
                    .ok_or_else(|| missing("requestMirror"))?;
                let field = format!("{field}.requestMirror");
                let (numerator, denominator) = mirror_fraction(&field, spec)?;
                let reference = field.clone() + ".backendRef";
                match backends.resolve(
                    ctx.route_ns,
                    || reference.clone(),
                    &spec.backend_ref,
                    ctx.route_kind,
                ) {
                    Ok(cluster) => model.mirrors.push(MirrorModel {
                        cluster,
                        numerator,
                        denominator,
                    }),
                    Err(failure) => {
                        outcome.mirror_failure.get_or_insert(failure);
                    }
                }
            }
            "CORS" if ctx.rule_level => {
                once(model.filters.cors.is_some())?;
                let spec = spec.cors.as_ref().ok_or_else(|| missing("cors"))?;
                model.filters.cors = Some(cors(&format!("{field}.cors"), spec)?);
            }
            "CORS" => {
                return Err(format!(
                    "{field}: filter CORS is supported on rules, not on backendRefs"
                ));
            }
            "ExtensionRef" => {
                let spec = spec
                    .extension_ref
                    .as_ref()
                    .ok_or_else(|| missing("extensionRef"))?;
                let index = extension_ref(ctx, &format!("{field}.extensionRef"), spec)?;
                if model.extension_refs.contains(&index) {
                    return Err(format!(
                        "{field}.extensionRef: Filter {} is named twice",
                        spec.name
                    ));
                }
                model.extension_refs.push(index);
            }
            other => {
                return Err(format!("{field}: filter {other} is not supported yet"));
            }
        }
    }
    if model.filters.redirect.is_some() && model.filters.rewrite.is_some() {
        return Err(format!(
            "{}: RequestRedirect and URLRewrite cannot be used together",
            (ctx.field)()
        ));
    }
    Ok(model)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FilterSpec {
    #[serde(rename = "type")]
    kind: String,
    request_header_modifier: Option<HeaderSpec>,
    response_header_modifier: Option<HeaderSpec>,
    request_redirect: Option<RedirectSpec>,
    url_rewrite: Option<RewriteSpec>,
    request_mirror: Option<MirrorSpec>,
    cors: Option<CorsSpec>,
    extension_ref: Option<ExtensionRefSpec>,
}

#[derive(Deserialize)]
struct ExtensionRefSpec {
    group: String,
    kind: String,
    name: String,
}

/// A rule's ExtensionRef to a gatehouse.dev Filter in the route's
/// namespace: its index, or why the rule must answer 500 (unknown kind, no
/// such Filter, or a Filter that is itself invalid).
fn extension_ref(
    ctx: &FilterContext<'_>,
    field: &str,
    spec: &ExtensionRefSpec,
) -> Result<usize, String> {
    if spec.group != crate::api::GROUP || spec.kind != "Filter" {
        return Err(format!(
            "{field}: {}/{} is not a filter kind Gatehouse knows (gatehouse.dev/Filter)",
            spec.group, spec.kind
        ));
    }
    if !ctx.rule_level {
        return Err(format!(
            "{field}: gatehouse.dev Filters apply to rules, not to backendRefs"
        ));
    }
    let index = ctx
        .gatehouse
        .find(ctx.route_ns, &spec.name)
        .ok_or_else(|| format!("{field}: Filter {}/{} not found", ctx.route_ns, spec.name))?;
    if let Err(why) = &ctx.gatehouse.filters[index].content {
        return Err(format!(
            "{field}: Filter {}/{} is invalid: {why}",
            ctx.route_ns, spec.name
        ));
    }
    Ok(index)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CorsSpec {
    #[serde(default)]
    allow_origins: Vec<String>,
    allow_credentials: Option<bool>,
    #[serde(default)]
    allow_methods: Vec<String>,
    #[serde(default)]
    allow_headers: Vec<String>,
    #[serde(default)]
    expose_headers: Vec<String>,
    max_age: Option<i64>,
}

#[derive(Deserialize)]
struct HeaderSpec {
    #[serde(default)]
    set: Vec<NameValue>,
    #[serde(default)]
    add: Vec<NameValue>,
    #[serde(default)]
    remove: Vec<String>,
}

#[derive(Deserialize)]
struct NameValue {
    name: String,
    value: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RedirectSpec {
    scheme: Option<String>,
    hostname: Option<String>,
    path: Option<PathSpec>,
    port: Option<i64>,
    status_code: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PathSpec {
    #[serde(rename = "type")]
    kind: String,
    replace_full_path: Option<String>,
    replace_prefix_match: Option<String>,
}

#[derive(Deserialize)]
struct RewriteSpec {
    hostname: Option<String>,
    path: Option<PathSpec>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MirrorSpec {
    backend_ref: BackendRef,
    percent: Option<i64>,
    fraction: Option<FractionSpec>,
}

#[derive(Deserialize)]
struct FractionSpec {
    numerator: i64,
    denominator: Option<i64>,
}

fn header_modifier(field: &str, spec: &HeaderSpec) -> Result<pb::HeaderModifier, String> {
    let pairs = |key: &str, list: &[NameValue]| -> Result<Vec<pb::Header>, String> {
        let mut seen = Vec::<String>::new();
        list.iter()
            .enumerate()
            .map(|(i, h)| {
                let name = header_name(&format!("{field}.{key}[{i}].name"), &h.name)?;
                if seen.contains(&name) {
                    return Err(format!(
                        "{field}.{key}[{i}].name: header {:?} is listed twice",
                        h.name
                    ));
                }
                seen.push(name.clone());
                if !is_field_value(&h.value) {
                    return Err(format!(
                        "{field}.{key}[{i}].value: {:?} is not a valid header value",
                        h.value
                    ));
                }
                Ok(pb::Header {
                    name,
                    value: h.value.clone(),
                })
            })
            .collect()
    };
    let remove = spec
        .remove
        .iter()
        .enumerate()
        .map(|(i, name)| header_name(&format!("{field}.remove[{i}]"), name))
        .collect::<Result<_, _>>()?;
    Ok(pb::HeaderModifier {
        set: pairs("set", &spec.set)?,
        add: pairs("add", &spec.add)?,
        remove,
    })
}

/// A lower-cased header name, if it is an RFC 9110 token.
pub(crate) fn header_name(field: &str, name: &str) -> Result<String, String> {
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(token) {
        return Err(format!("{field}: {name:?} is not a valid header name"));
    }
    Ok(name.to_ascii_lowercase())
}

/// RFC 9110 §5.5: visible characters, spaces and tabs (obs-text allowed).
pub(crate) fn is_field_value(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80)
}

fn redirect(
    field: &str,
    spec: &RedirectSpec,
    prefix_matches_only: bool,
) -> Result<pb::Redirect, String> {
    let scheme = match spec.scheme.as_deref() {
        None => String::new(),
        Some(s @ ("http" | "https")) => s.to_owned(),
        Some(other) => {
            return Err(format!(
                "{field}.scheme: {other:?} is not supported; supported: http, https"
            ));
        }
    };
    let port = match spec.port {
        None => 0,
        Some(p) => u32::try_from(p)
            .ok()
            .filter(|p| (1..=65535).contains(p))
            .ok_or_else(|| format!("{field}.port: {p} is outside 1..=65535"))?,
    };
    let status = match spec.status_code.unwrap_or(302) {
        s @ (301 | 302 | 303 | 307 | 308) => s as u32,
        other => {
            return Err(format!(
                "{field}.statusCode: {other} is not supported; supported: 301, 302, 303, 307, 308"
            ));
        }
    };
    Ok(pb::Redirect {
        scheme,
        hostname: precise_hostname(&format!("{field}.hostname"), spec.hostname.as_deref())?,
        port,
        path: path_modifier(
            &format!("{field}.path"),
            spec.path.as_ref(),
            prefix_matches_only,
        )?,
        status,
    })
}

fn rewrite(
    field: &str,
    spec: &RewriteSpec,
    prefix_matches_only: bool,
) -> Result<pb::Rewrite, String> {
    Ok(pb::Rewrite {
        hostname: precise_hostname(&format!("{field}.hostname"), spec.hostname.as_deref())?,
        path: path_modifier(
            &format!("{field}.path"),
            spec.path.as_ref(),
            prefix_matches_only,
        )?,
    })
}

fn precise_hostname(field: &str, hostname: Option<&str>) -> Result<String, String> {
    match hostname {
        None => Ok(String::new()),
        Some(h) if super::route::is_hostname(h) && !h.starts_with("*.") => {
            Ok(h.to_ascii_lowercase())
        }
        Some(h) => Err(format!("{field}: {h:?} is not a hostname")),
    }
}

fn path_modifier(
    field: &str,
    spec: Option<&PathSpec>,
    prefix_matches_only: bool,
) -> Result<Option<pb::PathModifier>, String> {
    use pb::path_modifier::Path;
    let Some(spec) = spec else {
        return Ok(None);
    };
    let path = match spec.kind.as_str() {
        "ReplaceFullPath" => Path::Full(
            spec.replace_full_path
                .clone()
                .ok_or_else(|| format!("{field}.replaceFullPath: required for ReplaceFullPath"))?,
        ),
        "ReplacePrefixMatch" => {
            if !prefix_matches_only {
                return Err(format!(
                    "{field}: ReplacePrefixMatch needs every match of the rule to be a PathPrefix match"
                ));
            }
            Path::Prefix(spec.replace_prefix_match.clone().ok_or_else(|| {
                format!("{field}.replacePrefixMatch: required for ReplacePrefixMatch")
            })?)
        }
        other => {
            return Err(format!(
                "{field}.type: {other:?} is not supported; supported: ReplaceFullPath, ReplacePrefixMatch"
            ));
        }
    };
    let (Path::Full(value) | Path::Prefix(value)) = &path;
    // The data plane places the value in a URI: the same parse decides here,
    // so a value it would refuse never reaches a snapshot.
    if !value.starts_with('/')
        || value.contains(['?', '#'])
        || http::uri::PathAndQuery::try_from(value.as_str()).is_err()
    {
        return Err(format!(
            "{field}: {value:?} is not an absolute URI path (no spaces, quotes, '<', '>', '?' or '#')"
        ));
    }
    Ok(Some(pb::PathModifier { path: Some(path) }))
}

/// HTTPCORSFilter: origins as the CRD's pattern allows (`*`, or
/// `scheme://host[:port]` with at most one `*`), "*" never beside other
/// entries, method names or "*", header names, `maxAge` >= 0 (default 5).
fn cors(field: &str, spec: &CorsSpec) -> Result<pb::Cors, String> {
    let alone = |key: &str, list: &[String]| {
        if list.len() > 1 && list.iter().any(|v| v == "*") {
            Err(format!(
                "{field}.{key}: \"*\" cannot be listed with other values"
            ))
        } else {
            Ok(())
        }
    };
    alone("allowOrigins", &spec.allow_origins)?;
    alone("allowMethods", &spec.allow_methods)?;
    alone("allowHeaders", &spec.allow_headers)?;
    for (i, origin) in spec.allow_origins.iter().enumerate() {
        let valid = origin == "*"
            || origin.split_once("://").is_some_and(|(scheme, host)| {
                !scheme.is_empty()
                    && scheme
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
                    && !host.is_empty()
                    && host.matches('*').count() <= 1
                    && host
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-.:*[]".contains(&b))
            });
        if !valid {
            return Err(format!(
                "{field}.allowOrigins[{i}]: {origin:?} is not \"*\" or scheme://host[:port]"
            ));
        }
    }
    for (i, method) in spec.allow_methods.iter().enumerate() {
        if method != "*" && (method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase())) {
            return Err(format!(
                "{field}.allowMethods[{i}]: {method:?} is not an upper-case method or \"*\""
            ));
        }
    }
    let names = |key: &str, list: &[String]| -> Result<Vec<String>, String> {
        list.iter()
            .enumerate()
            .map(|(i, name)| match name.as_str() {
                "*" => Ok(name.clone()),
                _ => header_name(&format!("{field}.{key}[{i}]"), name),
            })
            .collect()
    };
    let max_age = match spec.max_age {
        None => 5,
        Some(age) => u32::try_from(age)
            .map_err(|_| format!("{field}.maxAge: {age} is not a number of seconds"))?,
    };
    Ok(pb::Cors {
        allow_origins: spec
            .allow_origins
            .iter()
            .map(|o| o.to_ascii_lowercase())
            .collect(),
        allow_credentials: spec.allow_credentials.unwrap_or(false),
        allow_methods: spec.allow_methods.clone(),
        allow_headers: names("allowHeaders", &spec.allow_headers)?,
        expose_headers: names("exposeHeaders", &spec.expose_headers)?,
        max_age_seconds: max_age,
    })
}

fn mirror_fraction(field: &str, spec: &MirrorSpec) -> Result<(u32, u32), String> {
    let (numerator, denominator) = match (spec.percent, &spec.fraction) {
        (Some(_), Some(_)) => {
            return Err(format!(
                "{field}: only one of percent or fraction may be specified"
            ));
        }
        (Some(percent), None) => (percent, 100),
        (None, Some(f)) => (f.numerator, f.denominator.unwrap_or(100)),
        (None, None) => (1, 1),
    };
    if numerator < 0 || denominator < 1 || numerator > denominator || denominator > 1_000_000 {
        return Err(format!(
            "{field}: fraction {numerator}/{denominator} must satisfy 0 <= numerator <= denominator, 1 <= denominator <= 1000000"
        ));
    }
    Ok((numerator as u32, denominator as u32))
}
