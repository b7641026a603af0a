//! The body of a request sent upstream: the client's, streamed as it
//! arrives; the client's teed to mirrors; a mirror's copy; or a body held
//! whole so that a retry can send it again.
//!
//! A mirror must never slow or fail the client (Gateway API
//! `HTTPRequestMirrorFilter`: the mirror's response is ignored). So the tee
//! hands each chunk to each mirror through a small bounded channel with
//! `try_send`: a mirror that falls behind is cut off, and its copy of the
//! body ends with an error (its request is abandoned) rather than
//! arriving truncated but looking complete.

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::{
    sync::mpsc,
    time::{Instant, Sleep},
};

/// Chunks buffered per mirror before it is cut off.
const MIRROR_BUFFER: usize = 16;

#[derive(Debug)]
pub enum RequestBody {
    Client(ClientBody),
    Tee(Tee),
    Mirror(MirrorCopy),
    Buffered(Buffered),
    Empty,
}

/// A whole body in memory; each clone sends the same bytes again.
#[derive(Debug, Clone, Default)]
pub struct Buffered {
    data: Option<Bytes>,
    trailers: Option<http::HeaderMap>,
}

impl Buffered {
    pub fn new(data: Bytes, trailers: Option<http::HeaderMap>) -> Self {
        Self {
            data: (!data.is_empty()).then_some(data),
            trailers,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error(transparent)]
    Client(#[from] hyper::Error),
    #[error("the mirrored request's body was cut off")]
    MirrorCutOff,
    #[error("the request body is larger than the requestLimits filter allows")]
    TooLarge,
    #[error("the client sent none of its request body for {0:?}")]
    Stalled(Duration),
}

/// The client's body, counted against a `requestLimits` body limit when
/// one applies: past it, the body ends in an error (so the upstream
/// request is abandoned) and the flag tells the handler to answer 413. A
/// body the client stops sending ends in `BodyError::Stalled`, and its flag
/// tells the handler to answer 408: an upstream client may not pass the
/// error on (hyper's HTTP/2 client resets the stream with its own).
#[derive(Debug)]
pub struct ClientBody {
    body: Incoming,
    limit: Option<BodyLimit>,
    stall: Option<Stall>,
}

/// How long the body may keep the upstream waiting for its next bytes
/// (nginx's `client_body_timeout`): counted only while the body is asked
/// for and has nothing, so an upstream slow to take it never counts
/// against the client, and a body that comes with its head never arms a
/// timer.
#[derive(Debug)]
struct Stall {
    timeout: Duration,
    /// Made at the body's first wait, then reset at each later one.
    timer: Option<Pin<Box<Sleep>>>,
    /// The timer counts the current wait (no frame since it was set).
    armed: bool,
    /// Set once the timeout has passed.
    fired: Arc<AtomicBool>,
}

impl Stall {
    /// Called when the body has nothing yet: whether it has had nothing
    /// for the whole timeout.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.armed {
            let deadline = Instant::now() + self.timeout;
            match &mut self.timer {
                Some(timer) => timer.as_mut().reset(deadline),
                None => self.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
            self.armed = true;
        }
        self.timer
            .as_mut()
            .is_some_and(|timer| timer.as_mut().poll(cx).is_ready())
    }
}

#[derive(Debug)]
struct BodyLimit {
    remaining: u64,
    exceeded: Arc<AtomicBool>,
}

impl ClientBody {
    pub fn new(body: Incoming) -> Self {
        ClientBody {
            body,
            limit: None,
            stall: None,
        }
    }

    /// Ends the body in `BodyError::Stalled` once it has sent nothing for
    /// `timeout` while waited for (see `Stall`); the flag is set then.
    pub fn time_stalls(&mut self, timeout: Duration) -> Arc<AtomicBool> {
        let fired = Arc::new(AtomicBool::new(false));
        self.stall = Some(Stall {
            timeout,
            timer: None,
            armed: false,
            fired: fired.clone(),
        });
        fired
    }

    /// The wait so far was a look for a frame already there, before the
    /// upstream was ready for it: the next wait starts the clock anew.
    pub fn forget_wait(&mut self) {
        if let Some(stall) = &mut self.stall {
            stall.armed = false;
        }
    }

    /// Caps the body at `max` bytes; the flag is set when it goes past.
    pub fn limit(&mut self, max: u64) -> Arc<AtomicBool> {
        let exceeded = Arc::new(AtomicBool::new(false));
        self.limit = Some(BodyLimit {
            remaining: max,
            exceeded: exceeded.clone(),
        });
        exceeded
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        if let Some(stall) = &mut this.stall {
            match polled {
                Poll::Pending if stall.expired(cx) => {
                    stall.fired.store(true, Ordering::Release);
                    return Poll::Ready(Some(Err(BodyError::Stalled(stall.timeout))));
                }
                Poll::Pending => {}
                Poll::Ready(_) => stall.armed = false,
            }
        }
        if let (Some(limit), Poll::Ready(Some(Ok(frame)))) = (&mut this.limit, &polled)
            && let Some(data) = frame.data_ref()
        {
            let len = data.len() as u64;
            if len > limit.remaining {
                limit.exceeded.store(true, Ordering::Release);
                return Poll::Ready(Some(Err(BodyError::TooLarge)));
            }
            limit.remaining -= len;
        }
        polled.map_err(BodyError::from)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

enum Chunk {
    Data(Bytes),
    /// The client's body ended cleanly.
    End,
}

/// The client's body, copied to mirrors as it is read.
#[derive(Debug)]
pub struct Tee {
    body: ClientBody,
    mirrors: Vec<mpsc::Sender<Chunk>>,
}

/// A mirror's copy of the client's body.
#[derive(Debug)]
pub struct MirrorCopy {
    chunks: mpsc::Receiver<Chunk>,
    ended: bool,
    /// The client body's, so that a copy keeps its framing.
    hint: SizeHint,
}

impl std::fmt::Debug for Chunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Data(data) => write!(f, "Data({} bytes)", data.len()),
            Self::End => f.write_str("End"),
        }
    }
}

impl RequestBody {
    /// See `ClientBody::forget_wait`.
    pub fn forget_wait(&mut self) {
        match self {
            Self::Client(body) => body.forget_wait(),
            Self::Tee(tee) => tee.body.forget_wait(),
            Self::Mirror(_) | Self::Buffered(_) | Self::Empty => {}
        }
    }

    /// Splits this body into the one to forward and one copy per mirror. A
    /// body that is already complete (a GET) is not teed; a teed one gets
    /// more copies.
    pub fn split(self, mirrors: usize) -> (RequestBody, Vec<RequestBody>) {
        let (body, mut senders) = match self {
            Self::Client(body) if !body.is_end_stream() => (body, Vec::new()),
            Self::Tee(tee) => (tee.body, tee.mirrors),
            Self::Buffered(whole) => {
                let copies = (0..mirrors)
                    .map(|_| RequestBody::Buffered(whole.clone()))
                    .collect();
                return (RequestBody::Buffered(whole), copies);
            }
            done => {
                let copies = (0..mirrors).map(|_| RequestBody::Empty).collect();
                return (done, copies);
            }
        };
        let copies = (0..mirrors)
            .map(|_| {
                let (tx, rx) = mpsc::channel(MIRROR_BUFFER);
                senders.push(tx);
                RequestBody::Mirror(MirrorCopy {
                    chunks: rx,
                    ended: false,
                    hint: body.size_hint(),
                })
            })
            .collect();
        (
            RequestBody::Tee(Tee {
                body,
                mirrors: senders,
            }),
            copies,
        )
    }
}

impl Tee {
    fn copy(&mut self, chunk: impl Fn() -> Chunk) {
        // A full or closed channel drops its sender, which cuts the mirror
        // off without an End marker.
        self.mirrors.retain(|tx| tx.try_send(chunk()).is_ok());
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            Self::Client(body) => Pin::new(body).poll_frame(cx),
            Self::Tee(tee) => {
                let polled = Pin::new(&mut tee.body).poll_frame(cx);
                match &polled {
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Some(data) = frame.data_ref() {
                            let data = data.clone();
                            tee.copy(|| Chunk::Data(data.clone()));
                        }
                        if tee.body.is_end_stream() {
                            tee.copy(|| Chunk::End);
                            tee.mirrors.clear();
                        }
                    }
                    Poll::Ready(None) => {
                        tee.copy(|| Chunk::End);
                        tee.mirrors.clear();
                    }
                    // The client's body failed: the mirrors' copies end
                    // without End, so they fail too.
                    Poll::Ready(Some(Err(_))) => tee.mirrors.clear(),
                    Poll::Pending => {}
                }
                polled
            }
            Self::Mirror(copy) => {
                if copy.ended {
                    return Poll::Ready(None);
                }
                match copy.chunks.poll_recv(cx) {
                    Poll::Ready(Some(Chunk::Data(data))) => {
                        Poll::Ready(Some(Ok(Frame::data(data))))
                    }
                    Poll::Ready(Some(Chunk::End)) => {
                        copy.ended = true;
                        Poll::Ready(None)
                    }
                    Poll::Ready(None) => Poll::Ready(Some(Err(BodyError::MirrorCutOff))),
                    Poll::Pending => Poll::Pending,
                }
            }
            Self::Buffered(whole) => Poll::Ready(match whole.data.take() {
                Some(data) => Some(Ok(Frame::data(data))),
                None => whole.trailers.take().map(|t| Ok(Frame::trailers(t))),
            }),
            Self::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Client(body) => body.is_end_stream(),
            Self::Tee(tee) => tee.body.is_end_stream(),
            Self::Mirror(copy) => copy.ended,
            Self::Buffered(whole) => whole.data.is_none() && whole.trailers.is_none(),
            Self::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Client(body) => body.size_hint(),
            Self::Tee(tee) => tee.body.size_hint(),
            Self::Mirror(copy) => copy.hint,
            Self::Buffered(whole) => {
                SizeHint::with_exact(whole.data.as_ref().map_or(0, |d| d.len() as u64))
            }
            Self::Empty => SizeHint::with_exact(0),
        }
    }
}
