//! Applying a rule's or backend's filters to a request in flight: a redirect
//! answers at once; otherwise request headers are modified and the URL
//! rewritten in place, before the upstream request is built from it.

use bytes::Bytes;
use http::{HeaderValue, Request, Response, header, uri};

use super::{ProxyError, body::ProxyBody};
use crate::table::{Filters, Found, PathRewrite, RedirectRequest, Rewrite, normalize_host};

/// Applies the request side of `filters`. `Some` is the response to send
/// instead of forwarding (a redirect).
pub fn apply_request<B>(
    filters: &Filters,
    found: &Found<'_>,
    request: &mut Request<B>,
) -> Result<Option<Response<ProxyBody>>, ProxyError> {
    if let Some(redirect) = &filters.redirect {
        let authority = super::handler::client_authority(request)?;
        let host = normalize_host(authority).map_err(|_| ProxyError::BadRequest)?;
        let location = redirect.location(&RedirectRequest {
            scheme: found.port.scheme,
            host: &host,
            listener_port: found.port.port,
            path: request.uri().path(),
            query: request.uri().query(),
            matched: &found.route_match.path,
        });
        let location = HeaderValue::try_from(location).map_err(|_| ProxyError::BadRequest)?;
        let mut response = Response::new(ProxyBody::Local(Bytes::new().into()));
        *response.status_mut() = redirect.status;
        response.headers_mut().insert(header::LOCATION, location);
        if let Some(modifier) = &filters.response_headers {
            modifier.apply(response.headers_mut());
        }
        return Ok(Some(response));
    }
    if let Some(modifier) = &filters.request_headers {
        modifier.apply(request.headers_mut());
    }
    if let Some(rewrite) = &filters.rewrite {
        apply_rewrite(rewrite, found, request)?;
    }
    Ok(None)
}

/// The gateway's answer to a CORS preflight: 200, no body, `headers`
/// (none for an origin that is not allowed).
pub fn preflight(headers: Vec<(http::HeaderName, HeaderValue)>) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::Local(Bytes::new().into()));
    add_cors(response.headers_mut(), headers);
    response
}

/// Adds CORS response headers; `Vary` is appended to the upstream's.
pub fn add_cors(target: &mut http::HeaderMap, headers: Vec<(http::HeaderName, HeaderValue)>) {
    for (name, value) in headers {
        if name == header::VARY {
            target.append(name, value);
        } else {
            target.insert(name, value);
        }
    }
}

/// Spec (`HTTPURLRewriteFilter`): `hostname` replaces the Host header value
/// during forwarding; `path` replaces the path (the query is kept).
fn apply_rewrite<B>(
    rewrite: &Rewrite,
    found: &Found<'_>,
    request: &mut Request<B>,
) -> Result<(), ProxyError> {
    let mut parts = std::mem::take(request.uri_mut()).into_parts();
    if let Some(hostname) = &rewrite.hostname {
        if parts.authority.is_some() {
            parts.authority = Some(hostname.clone());
        }
        let host = HeaderValue::from_str(hostname.as_str()).map_err(|_| ProxyError::BadRequest)?;
        request.headers_mut().insert(header::HOST, host);
    }
    if let Some(path) = &rewrite.path {
        let old = parts.path_and_query.take();
        parts.path_and_query = Some(rewritten(path, found, old.as_ref())?);
    }
    *request.uri_mut() = uri::Uri::from_parts(parts).map_err(|_| ProxyError::BadRequest)?;
    Ok(())
}

fn rewritten(
    path: &PathRewrite,
    found: &Found<'_>,
    old: Option<&uri::PathAndQuery>,
) -> Result<uri::PathAndQuery, ProxyError> {
    let old_path = old.map_or("/", |p| p.path());
    let mut new = path.apply(old_path, &found.route_match.path);
    if let Some(query) = old.and_then(|p| p.query()) {
        new.push('?');
        new.push_str(query);
    }
    uri::PathAndQuery::try_from(new).map_err(|_| ProxyError::BadRequest)
}
