//! The upstream side of HTTP/1.1 (RFC 9112), driven by the request's own
//! task.
//!
//! A client connection of hyper runs as a task of its own: each request
//! travels to it through a channel and its response comes back through
//! another, which costs two task switches and a move of each message per
//! exchange. A proxy holds a pooled connection for exactly one exchange at a
//! time, so here the request's future writes the request and reads the
//! response head, and the response body reads the rest and gives the
//! connection back to its pool once the message has ended.
//!
//! Upgrades and h2c still go through hyper (see `upstream`). The
//! passthrough's requests use the same connections and pools, with heads
//! passed on as bytes (see `passthrough`).

use std::{
    future::poll_fn,
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::{Bytes, BytesMut};
use futures::FutureExt;
use http::{Method, Request, Response, StatusCode, header};
use http_body::Frame;
use http_body_util::BodyExt;
use tokio::io::AsyncWriteExt;
use tokio_util::io::poll_read_buf;

use super::{
    request_body::{BodyError, RequestBody},
    upstream::{Http1Pool, UpstreamIo},
};

mod body;
mod passthrough;
mod request;
mod response;
#[cfg(test)]
mod tests;

pub use body::Http1Body;
pub use passthrough::{RawBody, SendError};
use request::declared_length;
use request::{BodyWriter, encode_head};
pub use response::push_status_line;
use response::{BodyFacts, Early, Parsed, ResponseHead, early_answer, ends_chunked, parse_head};

/// Most header fields a response head may have (hyper's default too).
const MAX_HEADERS: usize = 100;
/// Longest response head, or trailer section, accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Longest chunk-size line (with extensions) accepted.
const MAX_CHUNK_LINE: usize = 4096;
/// Read buffer reserved before each read of a head, and the first of a
/// body's.
const READ_CHUNK: usize = 8 * 1024;
/// Largest read of a body: each read that fills its buffer doubles the
/// next, so a large body takes few system calls.
const MAX_READ: usize = 256 * 1024;

/// One HTTP/1.1 connection to an endpoint, between exchanges.
pub struct Connection {
    io: UpstreamIo,
    read: BytesMut,
}

/// Why an exchange failed.
#[derive(Debug)]
pub enum ExchangeError {
    /// Nothing was written: the request, whole, may go over another
    /// connection.
    Unsent(Box<Outgoing>, io::Error),
    /// The whole request went out in its first write, and the connection
    /// closed without a byte of answer. An idempotent request may go again
    /// over another connection (RFC 9112 §9.3.1): on a pooled connection
    /// this is the upstream closing it, idle, just as the request arrived.
    Unanswered(Box<Outgoing>, io::Error),
    /// The request was (perhaps partly) sent; no usable response came.
    Failed(io::Error),
}

/// A request ready for a connection: its head encoded (with the body's
/// first frame, when that was already there, for one write), and the rest
/// of its body. Encoded before any connection is awaited, so that the
/// futures an exchange runs in carry these bytes rather than the request.
#[derive(Debug)]
pub struct Outgoing {
    out: Vec<u8>,
    body: RequestBody,
    writer: BodyWriter,
    head_only: bool,
    /// Idempotent (RFC 9110 §9.2.2), and whole in `out`: it may be sent
    /// again.
    resendable: bool,
}

impl Outgoing {
    /// Encodes `request` (origin-form URI, Host set).
    pub fn new(request: Request<RequestBody>) -> io::Result<Self> {
        let head_only = request.method() == Method::HEAD;
        let idempotent = matches!(
            *request.method(),
            Method::GET
                | Method::HEAD
                | Method::OPTIONS
                | Method::TRACE
                | Method::PUT
                | Method::DELETE
        );
        let (parts, mut body) = request.into_parts();
        let (mut out, framing) = encode_head(&parts, &body)?;
        let mut writer = BodyWriter::new(framing);
        if !writer.done {
            match body.frame().now_or_never() {
                Some(frame) => {
                    writer.encode(frame, &mut out)?;
                }
                // Looked for, not waited on: the client's time starts when
                // a connection is ready to take the body.
                None => body.forget_wait(),
            }
        }
        Ok(Self {
            resendable: idempotent && writer.done,
            out,
            body,
            writer,
            head_only,
        })
    }
}

impl Connection {
    pub fn new(io: UpstreamIo) -> Self {
        Self {
            io,
            read: BytesMut::new(),
        }
    }

    /// Whether an idle connection can carry a request: the upstream has not
    /// closed it, and sent nothing unasked (which would be out of step).
    /// Costs no system call while the socket has nothing to read.
    pub fn is_usable(&mut self) -> bool {
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        matches!(
            poll_read_buf(Pin::new(&mut self.io), &mut cx, &mut self.read),
            Poll::Pending
        )
    }

    /// Sends `outgoing` and reads the response head; the body reads the
    /// rest and then gives the connection to `pool`.
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn keeps each argument twice in its future"
    )]
    pub fn exchange(
        mut self,
        mut outgoing: Outgoing,
        pool: Arc<Http1Pool>,
    ) -> impl Future<Output = Result<Response<Http1Body>, ExchangeError>> {
        // An async block, not an async fn (see `Dataplane::handle`); it uses
        // `outgoing`'s fields in place for the same reason.
        async move {
            match self.write_first(&outgoing.out).await {
                Ok(()) => {}
                // Nothing reached the upstream: the request can go whole
                // over another connection.
                Err((0, error)) => return Err(ExchangeError::Unsent(Box::new(outgoing), error)),
                Err((_, error)) => return Err(ExchangeError::Failed(error)),
            }
            let (out, writer, body) = (&mut outgoing.out, &mut outgoing.writer, &mut outgoing.body);
            let mut early = None;
            while !writer.done {
                // The upstream may answer before the body is all sent (a
                // 413, say): watch for that while waiting for the client's
                // next frame. Interim answers (100 Continue) are passed over.
                self.read.reserve(READ_CHUNK);
                let event = tokio::select! {
                    biased;
                    read = poll_fn(|cx| poll_read_buf(Pin::new(&mut self.io), cx, &mut self.read)) => Event::Read(read),
                    frame = body.frame() => Event::Frame(frame),
                };
                match event {
                    Event::Read(Ok(0)) => break,
                    Event::Read(Ok(_)) => {
                        match early_answer(&mut self.read).map_err(ExchangeError::Failed)? {
                            Early::Nothing => {}
                            Early::Begun => break,
                            Early::Final(head) => {
                                early = Some(head);
                                break;
                            }
                        }
                    }
                    Event::Read(Err(error)) => return Err(ExchangeError::Failed(error)),
                    Event::Frame(frame) => {
                        out.clear();
                        writer.encode(frame, out).map_err(ExchangeError::Failed)?;
                        self.write(out).await.map_err(ExchangeError::Failed)?;
                    }
                }
            }
            let complete = writer.done;
            // The client's body is let go of before the answer is awaited.
            outgoing.body = RequestBody::Empty;
            if early.is_none() && self.read.is_empty() {
                match self.read_more().await {
                    Ok(()) => {}
                    Err(error) if outgoing.resendable => {
                        return Err(ExchangeError::Unanswered(Box::new(outgoing), error));
                    }
                    Err(error) => return Err(ExchangeError::Failed(error)),
                }
            }
            // An answer that came before the request was all sent leaves the
            // connection mid-message: it closes after this response.
            self.read_response(early, outgoing.head_only, complete, pool)
                .await
                .map_err(ExchangeError::Failed)
        }
    }

    async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.io.write_all(bytes).await?;
        self.io.flush().await
    }

    /// Reads more of the response head; an error if the connection ended,
    /// or was reset, first.
    async fn read_more(&mut self) -> io::Result<()> {
        self.read.reserve(READ_CHUNK);
        match poll_fn(|cx| poll_read_buf(Pin::new(&mut self.io), cx, &mut self.read)).await? {
            0 => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before a response",
            )),
            _ => Ok(()),
        }
    }

    /// Writes a request's first bytes; on failure, says how many went out.
    async fn write_first(&mut self, bytes: &[u8]) -> Result<(), (usize, io::Error)> {
        let mut written = 0;
        while written < bytes.len() {
            match self.io.write(&bytes[written..]).await {
                Ok(0) => return Err((written, io::ErrorKind::WriteZero.into())),
                Ok(n) => written += n,
                Err(error) => return Err((written, error)),
            }
        }
        self.io.flush().await.map_err(|error| (written, error))
    }

    /// Reads the final response head, unless it came while the request
    /// body was being sent (`early`).
    async fn read_response(
        mut self,
        early: Option<ResponseHead>,
        head_only: bool,
        reusable: bool,
        pool: Arc<Http1Pool>,
    ) -> io::Result<Response<Http1Body>> {
        if let Some(head) = early {
            return self.into_response(head, head_only, reusable, pool);
        }
        loop {
            match parse_head(&mut self.read)? {
                Some(Parsed::Interim) => continue,
                Some(Parsed::Final(head)) => {
                    return self.into_response(head, head_only, reusable, pool);
                }
                None => {}
            }
            self.read_more().await?;
        }
    }

    fn into_response(
        self,
        head: ResponseHead,
        head_only: bool,
        reusable: bool,
        pool: Arc<Http1Pool>,
    ) -> io::Result<Response<Http1Body>> {
        let ResponseHead {
            status,
            mut headers,
            keep_alive,
        } = head;
        let facts = BodyFacts {
            bodiless: head_only
                || status == StatusCode::NO_CONTENT
                || status == StatusCode::NOT_MODIFIED,
            transfer_encoding: headers
                .get_all(header::TRANSFER_ENCODING)
                .iter()
                .next_back()
                .map(|value| ends_chunked(value.as_bytes())),
            length: declared_length(&headers).transpose(),
            keep_alive,
        };
        // Content-Length must not be forwarded beside Transfer-Encoding.
        if !facts.bodiless && facts.transfer_encoding.is_some() {
            headers.remove(header::CONTENT_LENGTH);
        }
        let (framing, reusable_after) = facts.framing()?;
        let reusable = reusable && reusable_after;
        let mut body = Http1Body {
            connection: Some(self),
            framing,
            reusable,
            pool,
            read_size: READ_CHUNK,
        };
        body.finish_if_done();
        let mut response = Response::new(body);
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        Ok(response)
    }
}

enum Event {
    Read(io::Result<usize>),
    Frame(Option<Result<Frame<Bytes>, BodyError>>),
}

fn invalid(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

fn invalid_owned(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}
