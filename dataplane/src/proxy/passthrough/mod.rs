//! HTTP/1.1 requests for plain rules, passed through as bytes.
//!
//! Most requests a gateway sees are bodiless or small requests for rules
//! with nothing between client and backend but the proxying itself. For
//! those,
//! hyper's server and our client parse each head into a header map and
//! encode it again on the other side: under callgrind that was half of the
//! data plane's instructions per request. Here the request head is parsed
//! in place, routed on its raw fields, and written upstream as its own
//! bytes less the hop-by-hop fields and plus the forwarding ones, with its
//! body (up to 16 KiB, by Content-Length) in the same write; the
//! response head comes back the same way (see `http1_client::passthrough`)
//! and its body is copied in its own framing.
//!
//! Anything else goes to hyper, which then serves the rest of the
//! connection from that request on (the bytes already read are replayed):
//! a chunked or longer body, an upgrade, HTTP/1.0, an absolute-form or
//! unusual target, a rule with filters, timeouts or retries, a route miss,
//! and every head that fails to parse. The two paths send the same bytes
//! upstream, forward the same fields and answer the same failures with
//! the same statuses; the passthrough is only the cheaper of them.

use std::{
    io::Write as _,
    mem::MaybeUninit,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::{Buf, Bytes, BytesMut};
use http::{Method, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

mod rewind;
#[cfg(test)]
mod tests;

pub(super) use rewind::Rewind;

use super::{
    Connection, Dataplane, activity::Activity, date, handler::ProxyError, handler::check_sni,
    headers, http1_client, upstream::UpstreamError,
};
use crate::{
    stats::RouteStats,
    table::{Fields, InFlight, Lookup, RequestView, Table, Target, UpstreamTls, normalize_host},
};
use gatehouse_snapshot::UpstreamProtocol;

/// Most header fields a request head may have (hyper's default too).
const MAX_HEADERS: usize = 100;
/// Longest request head the passthrough serves; a longer one goes to
/// hyper, which has its own limit and answer.
const MAX_HEAD: usize = 16 * 1024;
/// Longest request body the passthrough serves, sent upstream with its
/// head in one write; a longer one, streamed, goes to hyper.
const MAX_BODY: usize = 16 * 1024;
/// Reserved before each read of a request head.
const READ_CHUNK: usize = 4 * 1024;
/// A response whose head and first body bytes fit in this goes to the
/// client in one write.
const COALESCE: usize = 16 * 1024;

/// How a connection's passthrough ended.
pub(super) enum Outcome<IO> {
    Closed,
    /// A request the passthrough does not serve: hyper serves it, and the
    /// rest of the connection, replaying these bytes (read, not served)
    /// first.
    HandOff(IO, Bytes),
}

/// Serves the connection's requests for as long as each is one the
/// passthrough serves.
pub(super) async fn serve<IO>(
    mut io: IO,
    dataplane: &Arc<Dataplane>,
    conn: &Connection,
    activity: &Arc<Activity>,
) -> Outcome<IO>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let mut read = BytesMut::with_capacity(READ_CHUNK);
    let mut out = Vec::with_capacity(READ_CHUNK);
    // What the request waits for, and whether it may have come: a head
    // ends with a line feed, so a client trickling one byte at a time gets
    // a parse per line, not per byte (and one for its first bytes).
    let mut awaited = Awaited::LineFeed;
    let mut may_be_complete = false;
    // The request whose body is still coming.
    let mut begun = None;
    loop {
        let plan = loop {
            if may_be_complete {
                out.clear();
                // The table serving when the request is complete: an idle
                // connection sees the swaps made while it waited.
                match plan(&dataplane.table.load(), conn, &read, &mut out) {
                    Planned::Ready(plan) => break plan,
                    Planned::Partial(more) => awaited = more,
                    Planned::HandOff => return Outcome::HandOff(io, read.freeze()),
                }
            }
            if awaited == Awaited::LineFeed && read.len() >= MAX_HEAD {
                return Outcome::HandOff(io, read.freeze());
            }
            read.reserve(READ_CHUNK);
            // Told to close while waiting for a head: idle too long, or
            // the port is closing. A body on its way is waited for, as on
            // hyper's path; its request counts as begun.
            if awaited != Awaited::LineFeed && begun.is_none() {
                begun = Some(activity.begin());
            }
            let more = if awaited == Awaited::LineFeed {
                tokio::select! {
                    biased;
                    () = activity.idle_close() => return Outcome::Closed,
                    more = io.read_buf(&mut read) => more,
                }
            } else {
                // A body that sends nothing for the body timeout is
                // answered 408, as on hyper's path (`ClientBody`).
                let timeout = dataplane.options.client_body_timeout;
                match tokio::time::timeout(timeout, io.read_buf(&mut read)).await {
                    Ok(more) => more,
                    Err(_) => {
                        tracing::debug!(client = %conn.client, "request body stalled");
                        dataplane.stats().client_timeouts().record_body();
                        answer_locally(&mut out, ProxyError::ClientTimeout, true, false);
                        let _ = write_all(&mut io, &out).await;
                        let _ = io.shutdown().await;
                        return Outcome::Closed;
                    }
                }
            };
            match more {
                Ok(0) | Err(_) => return Outcome::Closed,
                Ok(n) => {
                    may_be_complete = match awaited {
                        // The first bytes of a request are parsed at once,
                        // so that what is no HTTP (a TLS hello, say) gets
                        // its answer without waiting for a line feed.
                        Awaited::LineFeed => {
                            read.len() == n || read[read.len() - n..].contains(&b'\n')
                        }
                        Awaited::Length(length) => read.len() >= length,
                    }
                }
            }
        };
        awaited = Awaited::LineFeed;
        read.advance(plan.len);
        let _finish = begun.take().unwrap_or_else(|| activity.begin());
        let started = Instant::now();
        let close = plan.close;
        let answered = match plan.step {
            Step::Answer(error) => {
                answer_locally(&mut out, error, close, plan.head_only);
                plan.stats
                    .record(error.status().as_u16(), started.elapsed());
                write_all(&mut io, &out).await
            }
            Step::Forward(forward) => {
                let address = forward.to.address;
                // Counted until the response has been passed on, as on the
                // other path, where the response body holds it.
                let _in_flight = forward.in_flight;
                // The request head is in `out`; the response head replaces it.
                let exchange = exchange(dataplane, &forward.to, &mut out, plan.head_only, close);
                let timed = async {
                    match plan.backend_timeout {
                        None => exchange.await,
                        Some(limit) => tokio::time::timeout(limit, exchange)
                            .await
                            .unwrap_or(Err(UpstreamError::TimedOut)),
                    }
                };
                // A client that goes away cancels its upstream request,
                // which closes that upstream connection.
                let exchanged = tokio::select! {
                    biased;
                    exchanged = timed => exchanged,
                    () = until_gone(&mut io, &mut read) => {
                        tracing::debug!(%address, "client gone; upstream request cancelled");
                        return Outcome::Closed;
                    }
                };
                // A body whose first bytes already break its framing is
                // answered 502 while nothing has gone to the client yet.
                let exchanged = exchanged.and_then(|mut response| match response.body.ready() {
                    Ok(_) => Ok(response),
                    Err(error) => Err(UpstreamError::Request(error.to_string())),
                });
                match exchanged {
                    Ok(response) => {
                        plan.stats
                            .record(response.status.as_u16(), started.elapsed());
                        // A body that ends with its upstream connection
                        // ends the client's too.
                        let ends = response.body.close_delimited();
                        match pass_on(&mut io, &mut read, &mut out, response).await {
                            Ok(()) if ends => Err(()),
                            passed => passed,
                        }
                    }
                    Err(error) => {
                        tracing::debug!(%address, %error, "upstream failed");
                        let error = ProxyError::from(error);
                        answer_locally(&mut out, error, close, plan.head_only);
                        plan.stats
                            .record(error.status().as_u16(), started.elapsed());
                        write_all(&mut io, &out).await
                    }
                }
            }
        };
        if answered.is_err() || close {
            let _ = io.shutdown().await;
            return Outcome::Closed;
        }
        // A closing port serves no further request, even one already sent.
        if activity.is_closing() {
            let _ = io.shutdown().await;
            return Outcome::Closed;
        }
        // A pipelined request may have come with this one.
        may_be_complete = !read.is_empty();
    }
}

/// Resolves when the client closes the connection (or it fails) while
/// its request is out; what it sends meanwhile (pipelined requests) is
/// kept in `read`, up to one request's worth.
async fn until_gone<IO>(io: &mut IO, read: &mut BytesMut)
where
    IO: AsyncRead + Unpin,
{
    while read.len() < MAX_HEAD + MAX_BODY {
        read.reserve(READ_CHUNK);
        match io.read_buf(read).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
    std::future::pending().await
}

/// What a parsed request head asks of the passthrough. It owns what it
/// needs of the table, which may be swapped while the request runs.
struct Plan {
    /// Bytes of the request, head and body.
    len: usize,
    stats: Arc<RouteStats>,
    /// `timeouts.backendRequest`.
    backend_timeout: Option<Duration>,
    step: Step,
    head_only: bool,
    /// The client closes the connection after this request.
    close: bool,
}

enum Step {
    Forward(Forward),
    /// The rule's own failure (no backend, an invalid one, no endpoint).
    Answer(ProxyError),
}

/// The chosen endpoint of a request whose upstream head is encoded.
struct Forward {
    to: Destination,
    in_flight: InFlight,
}

/// Where and how the upstream head goes.
struct Destination {
    address: SocketAddr,
    tls: Option<Arc<UpstreamTls>>,
    idempotent: bool,
}

enum Planned {
    Ready(Plan),
    /// The request has not all arrived.
    Partial(Awaited),
    HandOff,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Awaited {
    /// The rest of the head.
    LineFeed,
    /// The rest of the body: the request is this long.
    Length(usize),
}

/// What the request fields tell the passthrough, from one pass over them.
#[derive(Default)]
struct Seen<'h> {
    host: Option<&'h [u8]>,
    hosts: usize,
    content_length: Option<usize>,
    close: bool,
    request_id: bool,
    /// A field the passthrough leaves to hyper: a chunked or long body, an
    /// upgrade, an expectation, connection options, gRPC.
    unsupported: bool,
}

/// Parses the request head at the front of `read` and, when the
/// passthrough serves it, routes it, picks its endpoint and encodes its
/// upstream head into `out`.
fn plan(table: &Table, conn: &Connection, read: &[u8], out: &mut Vec<u8>) -> Planned {
    let mut fields = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut []);
    let head_len = match httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut request,
        read,
        &mut fields,
    ) {
        Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD => len,
        Ok(httparse::Status::Partial) => return Planned::Partial(Awaited::LineFeed),
        Ok(httparse::Status::Complete(_)) => return Planned::HandOff,
        Err(_) => return Planned::HandOff,
    };
    let (Some(method), Some(target), Some(1)) = (request.method, request.path, request.version)
    else {
        return Planned::HandOff;
    };
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return Planned::HandOff;
    };
    // OPTIONS may be a CORS preflight, routed by the method it asks about.
    if method == Method::OPTIONS || method == Method::CONNECT || !is_plain_target(target) {
        return Planned::HandOff;
    }
    let seen = look_at(request.headers);
    if seen.unsupported || seen.hosts != 1 || table.strips_claim_headers() {
        return Planned::HandOff;
    }
    // The body, if any, goes upstream with the head, in one write.
    let body_len = seen.content_length.unwrap_or(0);
    let Some(body) = read.get(head_len..head_len + body_len) else {
        return Planned::Partial(Awaited::Length(head_len + body_len));
    };
    let Some(authority) = seen.host.filter(|h| is_plain_authority(h)) else {
        return Planned::HandOff;
    };
    // Plain ASCII, checked just above.
    let authority = std::str::from_utf8(authority).unwrap_or_default();
    let Ok(host) = normalize_host(authority) else {
        return Planned::HandOff;
    };
    if let Some(sni) = &conn.sni
        && check_sni(table, conn, sni, &host).is_err()
    {
        return Planned::HandOff;
    }
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    };
    let view = RequestView {
        host: &host,
        method: &method,
        path,
        query,
        headers: Fields::Raw(request.headers),
    };
    let Lookup::Rule(found) = table.lookup(&conn.port, &view) else {
        return Planned::HandOff;
    };
    let rule = found.rule;
    // Every backend, not only the one a roll would pick: a hand-off after
    // the pick would pick again, and skew the weights.
    let plain_backends = rule.backends.iter().all(|b| {
        b.filters.is_none()
            && match b.target {
                Target::Cluster(index) => table.cluster(index).protocol == UpstreamProtocol::Http1,
                Target::Invalid(_) => true,
            }
    });
    if !found.is_plain() || !plain_backends {
        return Planned::HandOff;
    }
    let plan = |step| {
        Planned::Ready(Plan {
            len: head_len + body_len,
            stats: rule.stats.clone(),
            backend_timeout: rule.backend_timeout,
            step,
            head_only: method == Method::HEAD,
            close: seen.close,
        })
    };
    let Some(backend) = rule.pick_backend(rand::random()) else {
        return plan(Step::Answer(ProxyError::NoBackend));
    };
    let cluster = match &backend.target {
        Target::Cluster(index) => table.cluster(*index),
        Target::Invalid(reason) => {
            tracing::debug!(rule = %rule.object, %reason, "invalid backend share");
            return plan(Step::Answer(ProxyError::InvalidBackend));
        }
    };
    let Some(endpoint) = cluster.pick_endpoint(rand::random()) else {
        return plan(Step::Answer(ProxyError::NoEndpoints));
    };
    encode_upstream_head(out, &method, target, request.headers, &seen, conn);
    out.extend_from_slice(body);
    plan(Step::Forward(Forward {
        to: Destination {
            address: endpoint.address,
            tls: cluster.tls_for(found.route_match.backend_identity).cloned(),
            idempotent: matches!(
                method,
                Method::GET | Method::HEAD | Method::TRACE | Method::PUT | Method::DELETE
            ),
        },
        in_flight: endpoint.begin(),
    }))
}

fn look_at<'h>(fields: &[httparse::Header<'h>]) -> Seen<'h> {
    let mut seen = Seen::default();
    for field in fields {
        let name = field.name;
        if name.eq_ignore_ascii_case("host") {
            seen.host = Some(field.value);
            seen.hosts += 1;
        } else if name.eq_ignore_ascii_case("content-length") {
            // A second length, or a body too long to send with its head,
            // is hyper's.
            let length = parse_length(field.value).filter(|l| *l <= MAX_BODY);
            seen.unsupported |= seen.content_length.is_some() || length.is_none();
            seen.content_length = length;
        } else if name.eq_ignore_ascii_case("connection") {
            for token in field.value.split(|b| *b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    seen.close = true;
                } else if !token.is_empty() && !token.eq_ignore_ascii_case(b"keep-alive") {
                    seen.unsupported = true;
                }
            }
        } else if name.eq_ignore_ascii_case("x-request-id") {
            seen.request_id = true;
        } else if name.eq_ignore_ascii_case("content-type") {
            seen.unsupported |= field.value.starts_with(b"application/grpc");
        } else {
            seen.unsupported |= ["transfer-encoding", "upgrade", "expect", "te"]
                .iter()
                .any(|n| name.eq_ignore_ascii_case(n));
        }
    }
    seen
}

/// A Content-Length value of plain digits, as hyper's parser takes it
/// (a list of lengths is hyper's).
fn parse_length(value: &[u8]) -> Option<usize> {
    if value.is_empty() || value.len() > 9 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        value
            .iter()
            .fold(0, |n, digit| n * 10 + usize::from(digit - b'0')),
    )
}

/// An origin-form target of RFC 3986 path and query characters only; any
/// other is left to hyper's URI parser, so that both paths accept the same
/// targets.
fn is_plain_target(target: &str) -> bool {
    target.starts_with('/')
        && target
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/%?".contains(&b))
}

/// A host name or IPv4 address, with an optional port: what every
/// authority parser takes. Others (IPv6, user info) are hyper's.
fn is_plain_authority(host: &[u8]) -> bool {
    let (name, port) = match host.iter().position(|b| *b == b':') {
        Some(colon) => (&host[..colon], Some(&host[colon + 1..])),
        None => (host, None),
    };
    !name.is_empty()
        && name
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'.')
        && port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.iter().all(u8::is_ascii_digit))
}

/// The upstream request: the client's request line and fields less the
/// hop-by-hop ones, with the forwarding fields `headers::add_forwarding`
/// writes on the other path.
fn encode_upstream_head(
    out: &mut Vec<u8>,
    method: &Method,
    target: &str,
    fields: &[httparse::Header<'_>],
    seen: &Seen<'_>,
    conn: &Connection,
) {
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    out.extend_from_slice(b"x-forwarded-for: ");
    for field in fields {
        let name = field.name;
        if name.eq_ignore_ascii_case("x-forwarded-for") && headers::is_text(field.value) {
            out.extend_from_slice(field.value);
            out.extend_from_slice(b", ");
        }
    }
    headers::write_ip(out, conn.client.ip().to_canonical());
    out.extend_from_slice(b"\r\n");
    for field in fields {
        let name = field.name;
        // A field named like a Connection option goes too (hyper's path
        // drops each field Connection names, "close" among them).
        let dropped = ["connection", "keep-alive", "proxy-connection", "trailer"]
            .iter()
            .chain(&["x-forwarded-for", "x-forwarded-proto"])
            .any(|n| name.eq_ignore_ascii_case(n))
            || (seen.close && name.eq_ignore_ascii_case("close"));
        if !dropped {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(field.value);
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(match conn.tls {
        true => b"x-forwarded-proto: https\r\n",
        false => b"x-forwarded-proto: http\r\n",
    });
    if !seen.request_id {
        out.extend_from_slice(b"x-request-id: ");
        headers::write_hex(out, rand::random());
        out.extend_from_slice(b"\r\n");
    }
    // RFC 9110 §8.6, as the other path's encoder says it.
    if seen.content_length.is_none()
        && matches!(*method, Method::POST | Method::PUT | Method::PATCH)
    {
        out.extend_from_slice(b"content-length: 0\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// A response head from upstream, in `out`, and its body.
struct Response {
    status: StatusCode,
    body: http1_client::RawBody,
}

/// Sends the request head in `out` and puts the response head there.
async fn exchange(
    dataplane: &Dataplane,
    to: &Destination,
    out: &mut Vec<u8>,
    head_only: bool,
    close: bool,
) -> Result<Response, UpstreamError> {
    let (connection, pool) = dataplane
        .upstream
        .send_head(to.address, to.tls.as_deref(), out, to.idempotent)
        .await?;
    out.clear();
    let (status, body) = connection
        .forward_head(out, head_only, close, pool)
        .await
        .map_err(|error| UpstreamError::Request(error.to_string()))?;
    Ok(Response { status, body })
}

/// Writes the response head in `out` and the body after it.
async fn pass_on<IO>(
    io: &mut IO,
    read: &mut BytesMut,
    out: &mut Vec<u8>,
    response: Response,
) -> Result<(), ()>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let mut body = response.body;
    let first = body.ready().map_err(|_| ())?;
    if out.len() + first.len() <= COALESCE {
        out.extend_from_slice(first);
        body.consume();
        write_all(io, out).await?;
    } else {
        write_all(io, out).await?;
        write_all(io, first).await?;
        body.consume();
    }
    while !body.is_done() {
        // A body may pause for long (server-sent events, long polls): a
        // client that goes away meanwhile ends the exchange.
        let more = tokio::select! {
            biased;
            more = body.read_more() => more,
            () = until_gone(io, read) => return Err(()),
        };
        more.map_err(|error| {
            tracing::debug!(%error, "upstream response body failed");
        })?;
        let more = body.ready().map_err(|_| ())?;
        if !more.is_empty() {
            write_all(io, more).await?;
        }
        body.consume();
    }
    Ok(())
}

async fn write_all<IO>(io: &mut IO, bytes: &[u8]) -> Result<(), ()>
where
    IO: AsyncWrite + Unpin,
{
    io.write_all(bytes).await.map_err(|_| ())?;
    io.flush().await.map_err(|_| ())
}

/// The answer `ProxyError::response` gives on the other path, as hyper
/// writes it.
fn answer_locally(out: &mut Vec<u8>, error: ProxyError, close: bool, head_only: bool) {
    out.clear();
    let status = error.status();
    let body = error.label().as_bytes();
    http1_client::push_status_line(out, status);
    out.extend_from_slice(b"content-type: text/plain\r\ncontent-length: ");
    let _ = write!(out, "{}", body.len());
    out.extend_from_slice(b"\r\n");
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"date: ");
    date::append(out);
    out.extend_from_slice(b"\r\n\r\n");
    // The answer to HEAD has the length its body would have, not the body.
    if !head_only {
        out.extend_from_slice(body);
    }
}
