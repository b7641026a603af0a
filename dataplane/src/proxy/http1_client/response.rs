//! The response head: interim answers, the final head, and how its body is
//! framed (RFC 9112 §6.3).

use std::{io, mem::MaybeUninit};

use bytes::{Buf, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};

use super::{
    MAX_HEAD, MAX_HEADERS,
    body::{BodyFraming, ChunkState},
    invalid, invalid_owned,
    request::declared_length,
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
        keep_alive: !close && (!http10 || keep_alive_token),
    })))
}

/// RFC 9112 §6.3 for a response that has content, and whether its framing
/// was unambiguous. Content-Length values that disagree or do not parse
/// make the response unusable (§6.3.5).
pub(super) fn response_framing(headers: &mut HeaderMap) -> io::Result<(BodyFraming, bool)> {
    if headers.contains_key(header::TRANSFER_ENCODING) {
        // Transfer-Encoding overrides Content-Length, which must not be
        // forwarded beside it; a message with both may be an attempt at
        // response splitting (§6.3.3), so its connection is not used again.
        let unambiguous = headers.remove(header::CONTENT_LENGTH).is_none();
        let chunked_last = headers
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .next_back()
            .and_then(|v| v.as_bytes().rsplit(|b| *b == b',').next())
            .is_some_and(|coding| coding.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        let framing = match chunked_last {
            true => BodyFraming::Chunked(ChunkState::Size),
            false => BodyFraming::Close,
        };
        return Ok((framing, unambiguous));
    }
    let framing = match declared_length(headers)? {
        Some(length) => BodyFraming::Length(length),
        None => BodyFraming::Close,
    };
    Ok((framing, true))
}
