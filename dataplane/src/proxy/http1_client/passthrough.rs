//! The upstream side of the HTTP/1.1 passthrough (`proxy::passthrough`): a
//! bodiless request whose head is already encoded goes out as it is; the
//! response head comes back as the bytes the client gets (hop-by-hop
//! fields taken out, a Date added when missing), and the body is copied in
//! its own framing, scanned only to find where the message ends. No header
//! map is built on either side.

use std::{io, mem::MaybeUninit, pin::Pin, sync::Arc};

use bytes::Buf;
use http::StatusCode;
use tokio_util::io::poll_read_buf;

use super::{
    Connection, MAX_CHUNK_LINE, MAX_HEAD, MAX_HEADERS, MAX_READ, READ_CHUNK,
    body::{BodyFraming, ChunkState, chunk_size, find_crlf},
    invalid,
    request::add_length,
    response::{BodyFacts, InPlace, ends_chunked, keeps_alive, parse_in_place, push_status_line},
};
use crate::proxy::{headers::is_text, upstream::Http1Pool};

/// Why a passthrough request got no response head.
#[derive(Debug)]
pub enum SendError {
    /// Nothing was written: another connection may carry the request.
    Unsent(io::Error),
    /// The whole request was written and the connection ended without a
    /// byte of answer (see `ExchangeError::Unanswered`).
    Unanswered(io::Error),
    Failed(io::Error),
}

impl Connection {
    /// Writes a bodiless request, `head`, and waits for the first bytes of
    /// its answer. `resendable`: the request is idempotent, so a connection
    /// that ends unanswered is `Unanswered` rather than `Failed`.
    pub async fn send_head(&mut self, head: &[u8], resendable: bool) -> Result<(), SendError> {
        match self.write_first(head).await {
            Ok(()) => {}
            Err((0, error)) => return Err(SendError::Unsent(error)),
            Err((_, error)) => return Err(SendError::Failed(error)),
        }
        if self.read.is_empty() {
            self.read_more().await.map_err(|error| match resendable {
                true => SendError::Unanswered(error),
                false => SendError::Failed(error),
            })?;
        }
        Ok(())
    }

    /// Reads the final response head and appends it to `out` as the
    /// client gets it. `head_only`: the request was HEAD, so the response
    /// has no body whatever it declares. `close`: the client connection
    /// closes after this response, which the head then says.
    pub async fn forward_head(
        mut self,
        out: &mut Vec<u8>,
        head_only: bool,
        close: bool,
        pool: Arc<Http1Pool>,
    ) -> io::Result<(StatusCode, RawBody)> {
        loop {
            match forward_head(&mut self.read, out, head_only, close)? {
                Some(Head::Interim) => continue,
                Some(Head::Final {
                    status,
                    framing,
                    reusable,
                }) => {
                    let body = RawBody {
                        connection: Some(self),
                        framing,
                        reusable,
                        pool,
                        read_size: READ_CHUNK,
                        scanned: 0,
                        close_delimited: framing == BodyFraming::Close,
                        trailers: (0, 0),
                    };
                    return Ok((status, body));
                }
                None => self.read_more().await?,
            }
        }
    }
}

enum Head {
    /// A 1xx answer other than 101, consumed.
    Interim,
    Final {
        status: StatusCode,
        framing: BodyFraming,
        /// The upstream connection can carry another exchange once this
        /// body has ended.
        reusable: bool,
    },
}

/// What the fields of a response head say about its connection and body.
#[derive(Default)]
struct Framing<'h> {
    close: bool,
    keep_alive: bool,
    /// Whether the last Transfer-Encoding field's last coding is chunked.
    transfer_encoding: Option<bool>,
    /// The Content-Length fields: an error only when they frame the body.
    length: Option<io::Result<u64>>,
    date: bool,
    /// Fields Connection names, which go no further than this hop (empty,
    /// so not allocated, for nearly every response).
    listed: Vec<&'h [u8]>,
}

/// Parses one response head at the front of `read`; a final one is
/// appended to `out` and consumed.
fn forward_head(
    read: &mut bytes::BytesMut,
    out: &mut Vec<u8>,
    head_only: bool,
    close: bool,
) -> io::Result<Option<Head>> {
    let mut fields = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let (len, status, response) = match parse_in_place(read, &mut fields)? {
        None => return Ok(None),
        Some(InPlace::Interim(len)) => {
            read.advance(len);
            return Ok(Some(Head::Interim));
        }
        Some(InPlace::Final(len, status, response)) => (len, status, response),
    };
    let mut seen = Framing::default();
    for field in response.headers.iter() {
        let name = field.name;
        if name.eq_ignore_ascii_case("connection") {
            // As the other path: a value that is not text still says
            // close or keep-alive, but names no field to drop.
            let text = is_text(field.value);
            for token in field.value.split(|b| *b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    seen.close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    seen.keep_alive = true;
                } else if text && !token.is_empty() {
                    seen.listed.push(token);
                }
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            seen.transfer_encoding = Some(ends_chunked(field.value));
        } else if name.eq_ignore_ascii_case("content-length") {
            seen.length = Some(match seen.length.take() {
                Some(Err(error)) => Err(error),
                found => add_length(found.and_then(Result::ok), field.value)
                    .map(|length| length.unwrap_or_default()),
            });
        } else if name.eq_ignore_ascii_case("date") {
            seen.date = true;
        }
    }
    let transfer_encoding = seen.transfer_encoding.is_some();
    let (framing, reusable) = BodyFacts {
        bodiless: head_only
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED,
        transfer_encoding: seen.transfer_encoding,
        length: seen.length,
        keep_alive: keeps_alive(seen.close, seen.keep_alive, response.version == Some(0)),
    }
    .framing()?;

    push_status_line(out, status);
    for field in response.headers.iter() {
        let name = field.name;
        // Transfer-Encoding stays: the body goes on in the framing it
        // names. Content-Length beside it must not (§6.3.3). Neither goes
        // for being named by Connection: the client needs the framing the
        // body keeps (the other path frames the body anew).
        let framing_field = name.eq_ignore_ascii_case("content-length")
            || name.eq_ignore_ascii_case("transfer-encoding");
        let dropped = HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
            || (transfer_encoding && name.eq_ignore_ascii_case("content-length"))
            || (!framing_field
                && seen
                    .listed
                    .iter()
                    .any(|l| name.as_bytes().eq_ignore_ascii_case(l)));
        if !dropped {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(field.value);
            out.extend_from_slice(b"\r\n");
        }
    }
    // A body that ends when the connection does ends the client's too.
    if close || framing == BodyFraming::Close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    if !seen.date {
        // RFC 9110 §6.6.1: a recipient with a clock adds the Date a
        // response it forwards lacks.
        out.extend_from_slice(b"date: ");
        super::super::date::append(out);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    read.advance(len);
    Ok(Some(Head::Final {
        status,
        framing,
        reusable,
    }))
}

/// Response fields that belong to one hop (see `proxy::headers`), but for
/// Transfer-Encoding, which the passthrough keeps with the body's framing.
const HOP_BY_HOP: [&str; 6] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "upgrade",
    "trailer",
    "te",
];

/// The body of a passthrough response, copied in its own framing. Once
/// its end has been passed on, the connection goes back to its pool when
/// reusable; dropped before that, the connection closes.
pub struct RawBody {
    connection: Option<Connection>,
    framing: BodyFraming,
    reusable: bool,
    pool: Arc<Http1Pool>,
    read_size: usize,
    /// Bytes at the front of the read buffer found to belong to the body.
    scanned: usize,
    close_delimited: bool,
    /// Bytes and lines of the trailer section passed on so far.
    trailers: (usize, usize),
}

impl RawBody {
    /// The body ends when the upstream closes the connection, so the
    /// client's connection ends after it too.
    pub fn close_delimited(&self) -> bool {
        self.close_delimited
    }

    /// Whether the whole body has been passed on.
    pub fn is_done(&self) -> bool {
        self.framing == BodyFraming::Done && self.scanned == 0
    }

    /// The body bytes read so far, to pass on before `consume`.
    pub fn ready(&mut self) -> io::Result<&[u8]> {
        self.scan()?;
        Ok(match &self.connection {
            Some(connection) => &connection.read[..self.scanned],
            None => &[],
        })
    }

    /// Drops the bytes `ready` returned, passed on; at the body's end, the
    /// connection goes back to its pool.
    pub fn consume(&mut self) {
        let Some(connection) = self.connection.as_mut() else {
            return;
        };
        connection.read.advance(self.scanned);
        self.scanned = 0;
        if self.framing == BodyFraming::Done
            && let Some(mut connection) = self.connection.take()
            // Bytes past the end of the message would put the next
            // exchange out of step.
            && self.reusable
            && connection.read.is_empty()
        {
            if connection.read.capacity() > READ_CHUNK {
                connection.read = bytes::BytesMut::new();
            }
            self.pool.checkin(connection);
        }
    }

    /// Reads more of the body; an error if the connection ends before
    /// the body does.
    pub async fn read_more(&mut self) -> io::Result<()> {
        let Some(connection) = self.connection.as_mut() else {
            return Ok(());
        };
        connection.read.reserve(self.read_size);
        let room = connection.read.capacity() - connection.read.len();
        let read = std::future::poll_fn(|cx| {
            poll_read_buf(Pin::new(&mut connection.io), cx, &mut connection.read)
        })
        .await?;
        match read {
            0 if self.framing == BodyFraming::Close => {
                self.framing = BodyFraming::Done;
                self.reusable = false;
                Ok(())
            }
            0 => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "upstream closed the connection mid-body",
            )),
            n => {
                if n == room {
                    self.read_size = (self.read_size * 2).min(MAX_READ);
                }
                Ok(())
            }
        }
    }

    /// Extends `scanned` over what the read buffer holds of the body.
    fn scan(&mut self) -> io::Result<()> {
        let Some(connection) = self.connection.as_ref() else {
            return Ok(());
        };
        let read = &connection.read[..];
        loop {
            let rest = &read[self.scanned..];
            match self.framing {
                BodyFraming::Done => return Ok(()),
                BodyFraming::Length(0) => self.framing = BodyFraming::Done,
                BodyFraming::Length(remaining) => {
                    let n = remaining.min(rest.len() as u64);
                    self.scanned += n as usize;
                    self.framing = BodyFraming::Length(remaining - n);
                    if remaining > n {
                        return Ok(());
                    }
                }
                BodyFraming::Close => {
                    self.scanned = read.len();
                    return Ok(());
                }
                BodyFraming::Chunked(state) => {
                    let Some((taken, next)) = scan_chunked(state, rest)? else {
                        return Ok(());
                    };
                    // The trailer section has the limits of a head, as on
                    // the other path.
                    if state == ChunkState::Trailers {
                        self.trailers.0 += taken;
                        self.trailers.1 += 1;
                        if self.trailers.0 > MAX_HEAD || self.trailers.1 > MAX_HEADERS + 1 {
                            return Err(invalid("trailer section too large"));
                        }
                    }
                    self.scanned += taken;
                    self.framing = next;
                }
            }
        }
    }
}

/// One step of a chunked body at the front of `rest`: how many bytes it
/// takes and the framing after them; `None` until more has been read.
fn scan_chunked(state: ChunkState, rest: &[u8]) -> io::Result<Option<(usize, BodyFraming)>> {
    Ok(Some(match state {
        ChunkState::Size => {
            let Some(end) = find_crlf(rest) else {
                return too_long(rest, MAX_CHUNK_LINE, "chunk size line too long");
            };
            // The line goes on as it came: no control byte (a bare LF or
            // CR) that a client might take for its end.
            if rest[..end]
                .iter()
                .any(|b| *b != b'\t' && (*b < 0x20 || *b == 0x7f))
            {
                return Err(invalid("control byte in a chunk size line"));
            }
            let next = match chunk_size(&rest[..end])? {
                0 => ChunkState::Trailers,
                n => ChunkState::Data(n),
            };
            (end + 2, BodyFraming::Chunked(next))
        }
        ChunkState::Data(_) if rest.is_empty() => return Ok(None),
        ChunkState::Data(remaining) => {
            let n = remaining.min(rest.len() as u64);
            let next = match remaining - n {
                0 => ChunkState::DataEnd,
                left => ChunkState::Data(left),
            };
            (n as usize, BodyFraming::Chunked(next))
        }
        ChunkState::DataEnd if rest.len() < 2 => return Ok(None),
        ChunkState::DataEnd if rest.starts_with(b"\r\n") => {
            (2, BodyFraming::Chunked(ChunkState::Size))
        }
        ChunkState::DataEnd => return Err(invalid("chunk data not followed by CRLF")),
        // One trailer field per line, up to the empty line that ends the
        // message; each checked as a field line before it is passed on.
        ChunkState::Trailers => {
            let Some(end) = find_crlf(rest) else {
                return too_long(rest, MAX_HEAD, "trailer section too large");
            };
            if end == 0 {
                (2, BodyFraming::Done)
            } else {
                let mut field = [httparse::EMPTY_HEADER; 1];
                match httparse::parse_headers(&rest[..end + 2], &mut field) {
                    Ok(httparse::Status::Partial) => {}
                    _ => return Err(invalid("bad trailer field")),
                }
                (end + 2, BodyFraming::Chunked(ChunkState::Trailers))
            }
        }
    }))
}

fn too_long<T>(rest: &[u8], max: usize, what: &'static str) -> io::Result<Option<T>> {
    match rest.len() > max {
        true => Err(invalid(what)),
        false => Ok(None),
    }
}
