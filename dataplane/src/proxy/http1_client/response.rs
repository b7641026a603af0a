//! The response head: interim answers, the final head, and how its body is
//! framed (RFC 9112 §6.3).

use std::{io, mem::MaybeUninit};

use bytes::{Buf, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};

use super::{
    MAX_HEAD, MAX_HEADERS,
    body::{BodyFraming, ChunkState},
    invalid, invalid_owned,
};

pub(super) struct ResponseHead {
    pub(super) status: StatusCode,
    pub(super) headers: HeaderMap,
    /// The upstream keeps the connection open after this response.
    pub(super) keep_alive: bool,
}

pub(super) enum Parsed {
    /// A 1xx answer other than 101, consumed.
    Interim,
    Final(ResponseHead),
}

/// What the front of `read` holds while the request body is still being
/// sent.
pub(super) enum Early {
    /// Nothing, or interim answers (passed over) and perhaps the beginning
    /// of another.
    Nothing,
    /// The beginning of a final response's head.
    Begun,
    Final(ResponseHead),
}

/// Passes over the interim answers at the front of `read`, and says
/// whether a final answer has begun.
pub(super) fn early_answer(read: &mut BytesMut) -> io::Result<Early> {
    loop {
        match parse_head(read)? {
            Some(Parsed::Interim) => {}
            Some(Parsed::Final(head)) => return Ok(Early::Final(head)),
            None if partial_is_final(read) => return Ok(Early::Begun),
            None => return Ok(Early::Nothing),
        }
    }
}

/// Whether a partial head is a final response's: its status code does not
/// begin with 1 ("HTTP/1.1 1xx"). Not known yet, it is not.
fn partial_is_final(read: &[u8]) -> bool {
    read.get(9).is_some_and(|digit| *digit != b'1')
}

/// A response head parsed in place.
pub(super) enum InPlace<'h, 'b> {
    /// A 1xx answer other than 101, this long.
    Interim(usize),
    /// The final head, this long.
    Final(usize, StatusCode, httparse::Response<'h, 'b>),
}

/// Appends `HTTP/1.1 <code> <reason>` and its line end: how the data plane
/// begins every response head it writes as bytes.
pub fn push_status_line(out: &mut Vec<u8>, status: StatusCode) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Parses the response head at the front of `read` into `fields`; `None`
/// until it is complete.
pub(super) fn parse_in_place<'h, 'b>(
    read: &'b [u8],
    fields: &'h mut [MaybeUninit<httparse::Header<'b>>],
) -> io::Result<Option<InPlace<'h, 'b>>> {
    let mut response = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        read,
        fields,
    ) {
        Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD => len,
        Ok(httparse::Status::Partial) if read.len() <= MAX_HEAD => return Ok(None),
        Ok(_) => return Err(invalid("response head too large")),
        Err(error) => return Err(invalid_owned(format!("bad response head: {error}"))),
    };
    match response.code.unwrap_or(0) {
        101 => Err(invalid("101 Switching Protocols without an upgrade")),
        100..=199 => Ok(Some(InPlace::Interim(len))),
        code => {
            let status = StatusCode::from_u16(code).map_err(|_| invalid("bad status code"))?;
            Ok(Some(InPlace::Final(len, status, response)))
        }
    }
}

/// Parses one response head at the front of `read`, consuming it.
pub(super) fn parse_head(read: &mut BytesMut) -> io::Result<Option<Parsed>> {
    let mut fields = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let (len, status, response) = match parse_in_place(read, &mut fields)? {
        None => return Ok(None),
        Some(InPlace::Interim(len)) => {
            read.advance(len);
            return Ok(Some(Parsed::Interim));
        }
        Some(InPlace::Final(len, status, response)) => (len, status, response),
    };
    let http10 = response.version == Some(0);
    // Offsets into the head, so that the values can share its buffer.
    let base = read.as_ptr() as usize;
    let mut spans = Vec::with_capacity(response.headers.len());
    for field in response.headers.iter() {
        let name = HeaderName::from_bytes(field.name.as_bytes())
            .map_err(|_| invalid("bad header name"))?;
        let start = field.value.as_ptr() as usize - base;
        spans.push((name, start, start + field.value.len()));
    }
    let head = read.split_to(len).freeze();
    let mut headers = HeaderMap::with_capacity(spans.len());
    let mut close = false;
    let mut keep_alive_token = false;
    for (name, start, end) in spans {
        let value = HeaderValue::from_maybe_shared(head.slice(start..end))
            .map_err(|_| invalid("bad header value"))?;
        if name == header::CONNECTION {
            for token in value.as_bytes().split(|b| *b == b',') {
                let token = token.trim_ascii();
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive_token |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        }
        headers.append(name, value);
    }
    Ok(Some(Parsed::Final(ResponseHead {
        status,
        headers,
        keep_alive: keeps_alive(close, keep_alive_token, http10),
    })))
}

/// What a response head says of its body and its connection, for
/// `BodyFacts::framing`.
pub(super) struct BodyFacts {
    /// The request was HEAD, or the status 204 or 304: no body.
    pub(super) bodiless: bool,
    /// Transfer-Encoding is present, and whether its last coding is chunked.
    pub(super) transfer_encoding: Option<bool>,
    /// The Content-Length fields, when there are any: their one length, or
    /// why they make none.
    pub(super) length: Option<io::Result<u64>>,
    /// The upstream keeps the connection open after this response.
    pub(super) keep_alive: bool,
}

impl BodyFacts {
    /// RFC 9112 §6.3: how the body is framed, and whether the connection
    /// can carry another exchange once it has ended. Content-Length values
    /// that disagree or do not parse make the response unusable (§6.3.5)
    /// when they are what frames it.
    pub(super) fn framing(self) -> io::Result<(BodyFraming, bool)> {
        let (framing, unambiguous) = match (self.bodiless, self.transfer_encoding, self.length) {
            (true, ..) => (BodyFraming::Length(0), true),
            // Transfer-Encoding overrides Content-Length; a message with both
            // may be an attempt at response splitting (§6.3.3), so its
            // connection is not used again.
            (false, Some(chunked), length) => {
                let framing = match chunked {
                    true => BodyFraming::Chunked(ChunkState::Size),
                    false => BodyFraming::Close,
                };
                (framing, length.is_none())
            }
            (false, None, Some(length)) => (BodyFraming::Length(length?), true),
            (false, None, None) => (BodyFraming::Close, true),
        };
        let reusable = self.keep_alive && unambiguous && framing != BodyFraming::Close;
        Ok((framing, reusable))
    }
}

/// Whether a response leaves its connection open: HTTP/1.1 unless it says
/// close, HTTP/1.0 only when it says keep-alive.
pub(super) fn keeps_alive(close: bool, keep_alive: bool, http10: bool) -> bool {
    !close && (!http10 || keep_alive)
}

/// Whether a Transfer-Encoding value's last coding is chunked.
pub(super) fn ends_chunked(value: &[u8]) -> bool {
    value
        .rsplit(|b| *b == b',')
        .next()
        .is_some_and(|coding| coding.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}
