//! The response body: read from the connection as the client's side asks
//! for it, in whichever framing the head chose.

use std::{
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::{Buf, Bytes};
use http::{HeaderMap, HeaderName, HeaderValue};
use http_body::{Body, Frame, SizeHint};
use tokio_util::io::poll_read_buf;

use bytes::BytesMut;

use super::{Connection, MAX_CHUNK_LINE, MAX_HEAD, MAX_HEADERS, MAX_READ, READ_CHUNK, invalid};
use crate::proxy::upstream::Http1Pool;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BodyFraming {
    /// This many bytes still to come.
    Length(u64),
    Chunked(ChunkState),
    /// Until the upstream closes the connection.
    Close,
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ChunkState {
    Size,
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    Trailers,
}

/// The body of an HTTP/1.1 upstream response. Once read to its end, its
/// connection goes back to the pool if the exchange left it reusable;
/// dropped before that, the connection closes.
pub struct Http1Body {
    pub(super) connection: Option<Connection>,
    pub(super) framing: BodyFraming,
    pub(super) reusable: bool,
    pub(super) pool: Arc<Http1Pool>,
    /// What the next read reserves (see `MAX_READ`).
    pub(super) read_size: usize,
}

impl std::fmt::Debug for Http1Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http1Body")
            .field("framing", &self.framing)
            .finish_non_exhaustive()
    }
}

impl Http1Body {
    pub(super) fn finish_if_done(&mut self) {
        if matches!(self.framing, BodyFraming::Length(0)) {
            self.framing = BodyFraming::Done;
        }
        if self.framing == BodyFraming::Done
            && let Some(connection) = self.connection.take()
            // Bytes past the end of the message would put the next
            // exchange out of step.
            && self.reusable
            && connection.read.is_empty()
        {
            let mut connection = connection;
            // An idle connection keeps no large buffer a big body grew.
            if connection.read.capacity() > READ_CHUNK {
                connection.read = BytesMut::new();
            }
            self.pool.checkin(connection);
        }
    }

    fn fail(&mut self, error: io::Error) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.connection = None;
        self.framing = BodyFraming::Done;
        Poll::Ready(Some(Err(error)))
    }

    /// The next frame from what has been read, if there is one yet.
    fn decode(&mut self) -> io::Result<Option<Frame<Bytes>>> {
        let Some(connection) = self.connection.as_mut() else {
            return Ok(None);
        };
        let read = &mut connection.read;
        loop {
            match self.framing {
                BodyFraming::Done => return Ok(None),
                BodyFraming::Length(remaining) => {
                    if read.is_empty() {
                        return Ok(None);
                    }
                    let n = remaining.min(read.len() as u64);
                    let data = read.split_to(n as usize).freeze();
                    self.framing = BodyFraming::Length(remaining - n);
                    return Ok(Some(Frame::data(data)));
                }
                BodyFraming::Close => {
                    if read.is_empty() {
                        return Ok(None);
                    }
                    return Ok(Some(Frame::data(read.split().freeze())));
                }
                BodyFraming::Chunked(ChunkState::Size) => {
                    let Some(line_end) = find_crlf(read) else {
                        if read.len() > MAX_CHUNK_LINE {
                            return Err(invalid("chunk size line too long"));
                        }
                        return Ok(None);
                    };
                    let size = chunk_size(&read[..line_end])?;
                    read.advance(line_end + 2);
                    self.framing = BodyFraming::Chunked(match size {
                        0 => ChunkState::Trailers,
                        n => ChunkState::Data(n),
                    });
                }
                BodyFraming::Chunked(ChunkState::Data(remaining)) => {
                    if read.is_empty() {
                        return Ok(None);
                    }
                    let n = remaining.min(read.len() as u64);
                    let data = read.split_to(n as usize).freeze();
                    self.framing = BodyFraming::Chunked(match remaining - n {
                        0 => ChunkState::DataEnd,
                        left => ChunkState::Data(left),
                    });
                    return Ok(Some(Frame::data(data)));
                }
                BodyFraming::Chunked(ChunkState::DataEnd) => {
                    if read.len() < 2 {
                        return Ok(None);
                    }
                    if &read[..2] != b"\r\n" {
                        return Err(invalid("chunk data not followed by CRLF"));
                    }
                    read.advance(2);
                    self.framing = BodyFraming::Chunked(ChunkState::Size);
                }
                BodyFraming::Chunked(ChunkState::Trailers) => {
                    if read.starts_with(b"\r\n") {
                        read.advance(2);
                        self.framing = BodyFraming::Done;
                        return Ok(None);
                    }
                    let Some(end) = find_double_crlf(read) else {
                        if read.len() > MAX_HEAD {
                            return Err(invalid("trailer section too large"));
                        }
                        return Ok(None);
                    };
                    let trailers = parse_trailers(&read[..end + 4])?;
                    read.advance(end + 4);
                    self.framing = BodyFraming::Done;
                    return Ok(Some(Frame::trailers(trailers)));
                }
            }
        }
    }
}

impl Body for Http1Body {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        loop {
            match this.decode() {
                Ok(Some(frame)) => {
                    this.finish_if_done();
                    return Poll::Ready(Some(Ok(frame)));
                }
                Ok(None) if this.framing == BodyFraming::Done => {
                    this.finish_if_done();
                    return Poll::Ready(None);
                }
                Ok(None) => {}
                Err(error) => return this.fail(error),
            }
            let Some(connection) = this.connection.as_mut() else {
                return Poll::Ready(None);
            };
            connection.read.reserve(this.read_size);
            let room = connection.read.capacity() - connection.read.len();
            match poll_read_buf(Pin::new(&mut connection.io), cx, &mut connection.read) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) if this.framing == BodyFraming::Close => {
                    this.connection = None;
                    this.framing = BodyFraming::Done;
                    return Poll::Ready(None);
                }
                Poll::Ready(Ok(0)) => {
                    return this.fail(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "upstream closed the connection mid-body",
                    ));
                }
                Poll::Ready(Ok(n)) if n == room => {
                    this.read_size = (this.read_size * 2).min(MAX_READ);
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(error)) => return this.fail(error),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.framing == BodyFraming::Done
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            BodyFraming::Length(n) => SizeHint::with_exact(n),
            BodyFraming::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

pub(super) fn find_crlf(bytes: &[u8]) -> Option<usize> {
    bytes.windows(2).position(|w| w == b"\r\n")
}

fn find_double_crlf(bytes: &[u8]) -> Option<usize> {
    bytes.windows(4).position(|w| w == b"\r\n\r\n")
}

/// A chunk-size line: hex digits, then optional extensions (ignored).
pub(super) fn chunk_size(line: &[u8]) -> io::Result<u64> {
    let digits = line
        .split(|b| *b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    if digits.is_empty() || digits.len() > 15 {
        return Err(invalid("bad chunk size"));
    }
    digits.iter().try_fold(0u64, |n, d| {
        let digit = (*d as char)
            .to_digit(16)
            .ok_or_else(|| invalid("bad chunk size"))?;
        Ok(n << 4 | u64::from(digit))
    })
}

fn parse_trailers(section: &[u8]) -> io::Result<HeaderMap> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    match httparse::parse_headers(section, &mut fields) {
        Ok(httparse::Status::Complete((_, parsed))) => {
            let mut trailers = HeaderMap::with_capacity(parsed.len());
            for field in parsed {
                let name = HeaderName::from_bytes(field.name.as_bytes())
                    .map_err(|_| invalid("bad trailer name"))?;
                let value = HeaderValue::from_bytes(field.value)
                    .map_err(|_| invalid("bad trailer value"))?;
                trailers.append(name, value);
            }
            Ok(trailers)
        }
        _ => Err(invalid("bad trailer section")),
    }
}
