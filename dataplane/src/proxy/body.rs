//! The response body the proxy returns: the upstream's, streamed, with the
//! endpoint's in-flight count held until it ends, or a small local one. An
//! HTTP/1.1 upstream's connection goes back to its pool as soon as the body
//! has been read to its end.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;

use super::upstream::Checkin;
use crate::table::InFlight;

#[derive(Debug)]
pub enum ProxyBody {
    Upstream {
        body: Incoming,
        _in_flight: InFlight,
        /// `Some` until released; `None` for h2c, whose connection is shared.
        connection: Option<Checkin>,
    },
    Local(Full<Bytes>),
}

impl ProxyBody {
    pub fn text(text: &'static str) -> Self {
        Self::Local(Full::new(Bytes::from_static(text.as_bytes())))
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            Self::Upstream {
                body, connection, ..
            } => {
                let frame = Pin::new(&mut *body).poll_frame(cx);
                let ended = match &frame {
                    Poll::Ready(None) => true,
                    Poll::Ready(Some(Ok(_))) => body.is_end_stream(),
                    Poll::Ready(Some(Err(_))) => {
                        connection.take();
                        false
                    }
                    Poll::Pending => false,
                };
                if ended && let Some(connection) = connection.take() {
                    connection.release();
                }
                frame
            }
            Self::Local(full) => Pin::new(full)
                .poll_frame(cx)
                .map_err(|never| match never {}),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Upstream { body, .. } => body.is_end_stream(),
            Self::Local(full) => full.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Upstream { body, .. } => body.size_hint(),
            Self::Local(full) => full.size_hint(),
        }
    }
}

impl Drop for ProxyBody {
    /// A body that is complete without being polled (a 204, a HEAD
    /// answer, `Content-Length: 0`) still frees its connection.
    fn drop(&mut self) {
        if let Self::Upstream {
            body,
            connection: connection @ Some(_),
            ..
        } = self
            && body.is_end_stream()
            && let Some(connection) = connection.take()
        {
            connection.release();
        }
    }
}
