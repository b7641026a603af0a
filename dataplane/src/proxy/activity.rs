//! What a client connection is doing, for closing the ones that keep a
//! connection without using it: idle between requests, or sending a request
//! head too slowly to ever finish it.
//!
//! hyper can time each request head itself, but it arms a timer for every
//! request: a boxed sleep registered in tokio's timer wheel, behind the
//! wheel's lock. Under callgrind that added about 1,500 instructions per
//! proxied request (6% of the data plane's); this adds about 400. A
//! connection counts the requests it started and the responses it
//! finished (their bodies' ends), and one task per connection looks at the
//! counts twice per timeout.

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::body::{BoxError, ProxyBody};

#[derive(Debug, Default)]
pub struct Activity {
    started: AtomicU64,
    finished: AtomicU64,
}

impl Activity {
    /// Counts a request from its head to the end of its response's body
    /// (or until either is dropped): the returned guard goes into the
    /// response body (`Finish::attach`).
    pub fn begin(self: &Arc<Self>) -> Finish {
        self.started.fetch_add(1, Relaxed);
        Finish(self.clone())
    }

    /// Resolves once the connection has waited for a request head, with no
    /// request in flight, for at least `timeout` (and less than one and a
    /// half times it). Watched from a task of its own: a future polled
    /// beside the connection would be polled at each of its wake-ups, that
    /// is several times per request, where this one wakes twice per
    /// timeout. Dropping what this returns stops the watch.
    pub fn watch(self: &Arc<Self>, timeout: Duration) -> IdleWatch {
        let (idle, expired) = tokio::sync::oneshot::channel();
        let activity = self.clone();
        let task = tokio::spawn(async move {
            activity.waited(timeout).await;
            let _ = idle.send(());
        });
        IdleWatch { expired, task }
    }

    async fn waited(&self, timeout: Duration) {
        let period = timeout / 2;
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_started = self.started.load(Relaxed);
        let mut quiet = 0;
        loop {
            ticks.tick().await;
            let started = self.started.load(Relaxed);
            let waiting = started == self.finished.load(Relaxed);
            // Waiting at three ticks in a row with no request begun in
            // between: waiting for at least two periods.
            if waiting && started == last_started {
                quiet += 1;
                if quiet == 3 {
                    return;
                }
            } else {
                quiet = 0;
            }
            last_started = started;
        }
    }
}

/// Resolves when its connection has waited too long for a request.
pub struct IdleWatch {
    expired: tokio::sync::oneshot::Receiver<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Future for IdleWatch {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // An error is the watching task gone without a word, which only
        // happens as the runtime shuts down: the connection goes too.
        Pin::new(&mut self.get_mut().expired).poll(cx).map(|_| ())
    }
}

impl Drop for IdleWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub struct Finish(Arc<Activity>);

impl Finish {
    pub fn attach(self, body: ProxyBody) -> CountedBody {
        CountedBody {
            body,
            _finish: self,
        }
    }
}

impl Drop for Finish {
    fn drop(&mut self) {
        self.0.finished.fetch_add(1, Relaxed);
    }
}

/// A response body that counts its response finished when dropped: hyper
/// drops it once it has taken its last frame, or when the exchange fails.
pub struct CountedBody {
    body: ProxyBody,
    _finish: Finish,
}

impl Body for CountedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
