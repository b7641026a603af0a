//! The request side: its head, and its body in Content-Length or chunked
//! framing.

use std::io::{self, Write as _};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, header};
use http_body::{Body, Frame};

use super::invalid;
use crate::proxy::request_body::{BodyError, RequestBody};

/// How the request body is framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RequestFraming {
    None,
    Length(u64),
    Chunked,
}

/// The request head, and how its body goes. Hop-by-hop fields are already
/// gone (see `headers`), Transfer-Encoding among them, so the framing is
/// chosen here: the client's Content-Length when it sent one, else the
/// body's exact size when known, else chunked.
pub(super) fn encode_head(
    parts: &http::request::Parts,
    body: &RequestBody,
) -> io::Result<(Vec<u8>, RequestFraming)> {
    let declared = declared_length(&parts.headers)?;
    let framing = match declared {
        Some(length) => RequestFraming::Length(length),
        None if body.is_end_stream() => RequestFraming::None,
        None => match body.size_hint().exact() {
            Some(length) => RequestFraming::Length(length),
            None => RequestFraming::Chunked,
        },
    };
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let fields: usize = parts
        .headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    let mut out = Vec::with_capacity(parts.method.as_str().len() + path.len() + fields + 64);
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in &parts.headers {
        push_field(&mut out, name, value);
    }
    match framing {
        RequestFraming::Length(length) if declared.is_none() => {
            let _ = write!(out, "content-length: {length}\r\n");
        }
        // RFC 9110 §8.6: a method that gives content a meaning says when
        // there is none.
        RequestFraming::None
            if matches!(parts.method, Method::POST | Method::PUT | Method::PATCH) =>
        {
            out.extend_from_slice(b"content-length: 0\r\n");
        }
        RequestFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        _ => {}
    }
    out.extend_from_slice(b"\r\n");
    Ok((out, framing))
}

fn push_field(out: &mut Vec<u8>, name: &HeaderName, value: &HeaderValue) {
    out.extend_from_slice(name.as_str().as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// The one Content-Length a message declares, if any.
pub(super) fn declared_length(headers: &HeaderMap) -> io::Result<Option<u64>> {
    headers
        .get_all(header::CONTENT_LENGTH)
        .iter()
        .try_fold(None, |found, value| add_length(found, value.as_bytes()))
}

/// The length found so far with one more Content-Length field's value (a
/// list of lengths, all the same): an error for one that does not parse,
/// or disagrees.
pub(super) fn add_length(mut found: Option<u64>, value: &[u8]) -> io::Result<Option<u64>> {
    for item in value.split(|b| *b == b',') {
        let length =
            parse_decimal(item.trim_ascii()).ok_or_else(|| invalid("bad Content-Length"))?;
        if found.is_some_and(|f| f != length) {
            return Err(invalid("conflicting Content-Length values"));
        }
        found = Some(length);
    }
    Ok(found)
}

pub(super) fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    digits.iter().try_fold(0u64, |n, d| {
        d.is_ascii_digit().then(|| n * 10 + u64::from(d - b'0'))
    })
}

/// Frames the request body as it is written.
#[derive(Debug)]
pub(super) struct BodyWriter {
    pub(super) framing: RequestFraming,
    /// Bytes still owed under Content-Length.
    pub(super) remaining: u64,
    pub(super) started: bool,
    pub(super) done: bool,
}

impl BodyWriter {
    pub(super) fn new(framing: RequestFraming) -> Self {
        let remaining = match framing {
            RequestFraming::Length(n) => n,
            _ => 0,
        };
        Self {
            framing,
            remaining,
            started: false,
            done: matches!(framing, RequestFraming::None | RequestFraming::Length(0)),
        }
    }

    /// Appends `frame` to `out` in the request's framing; `true` once the
    /// body has ended.
    pub(super) fn encode(
        &mut self,
        frame: Option<Result<Frame<Bytes>, BodyError>>,
        out: &mut Vec<u8>,
    ) -> io::Result<bool> {
        self.started = true;
        let frame = match frame {
            None => return self.end(out),
            Some(Err(error)) => return Err(io::Error::other(error)),
            Some(Ok(frame)) => frame,
        };
        match frame.into_data() {
            Ok(data) => match self.framing {
                RequestFraming::Length(_) | RequestFraming::None => {
                    if data.len() as u64 > self.remaining {
                        return Err(invalid("request body longer than its Content-Length"));
                    }
                    self.remaining -= data.len() as u64;
                    out.extend_from_slice(&data);
                    if self.remaining == 0 {
                        self.done = true;
                    }
                }
                RequestFraming::Chunked if data.is_empty() => {}
                RequestFraming::Chunked => {
                    let _ = write!(out, "{:x}\r\n", data.len());
                    out.extend_from_slice(&data);
                    out.extend_from_slice(b"\r\n");
                }
            },
            Err(frame) => {
                // Trailers end the body; only chunked framing can carry them.
                if let (RequestFraming::Chunked, Ok(trailers)) =
                    (self.framing, frame.into_trailers())
                {
                    out.extend_from_slice(b"0\r\n");
                    for (name, value) in &trailers {
                        push_field(out, name, value);
                    }
                    out.extend_from_slice(b"\r\n");
                    self.done = true;
                    return Ok(true);
                }
                return self.end(out);
            }
        }
        Ok(self.done)
    }

    fn end(&mut self, out: &mut Vec<u8>) -> io::Result<bool> {
        match self.framing {
            RequestFraming::Chunked => out.extend_from_slice(b"0\r\n\r\n"),
            _ if self.remaining > 0 => {
                return Err(invalid("request body shorter than its Content-Length"));
            }
            _ => {}
        }
        self.done = true;
        Ok(true)
    }
}
