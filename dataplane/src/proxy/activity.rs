//! What a client connection is doing, for closing the ones that keep a
//! connection without using it: idle between requests, or sending a request
//! head too slowly to ever finish it (on HTTP/2: no stream open).
//!
//! hyper can time each request head itself, but it arms a timer for every
//! request: a boxed sleep registered in tokio's timer wheel, behind the
//! wheel's lock. Under callgrind that added about 1,500 instructions per
//! proxied request (6% of the data plane's); this adds about 130, and 80
//! per connection. A connection counts the requests it started and the
//! responses it finished (their bodies' ends); one `Reaper` per port looks
//! at the counts of all its connections twice per timeout, and tells a
//! connection that waited too long to close. A watching task per
//! connection cost 2,800 instructions per connection, which a client that
//! opens a connection for each request pays per request.

use std::{
    pin::Pin,
    sync::{
        Arc, Weak,
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed, Ordering::SeqCst},
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use crossbeam_queue::SegQueue;
use futures::task::AtomicWaker;
use http_body::{Body, Frame, SizeHint};

use super::body::{BoxError, ProxyBody};
use crate::stats::ClientTimeouts;

#[derive(Debug, Default)]
pub struct Activity {
    started: AtomicU64,
    finished: AtomicU64,
    /// Set by the reaper; `waker` wakes the connection to see it.
    expired: AtomicBool,
    /// Set when the port stops (`Reaper::close_all`): close once idle.
    closing: AtomicBool,
    waker: AtomicWaker,
}

impl Activity {
    /// Counts a request from its head to the end of its response's body
    /// (or until either is dropped): the returned guard goes into the
    /// response body (`Finish::attach`).
    pub fn begin(self: &Arc<Self>) -> Finish {
        self.started.fetch_add(1, Relaxed);
        Finish(self.clone())
    }

    /// Resolves once the reaper has found the connection waiting too long
    /// for a request head.
    pub fn expired(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(|cx| {
            if self.expired.load(SeqCst) {
                return Poll::Ready(());
            }
            self.waker.register(cx.waker());
            // Set after the first look but before the registration, it
            // woke nobody: look again.
            match self.expired.load(SeqCst) {
                true => Poll::Ready(()),
                false => Poll::Pending,
            }
        })
    }

    /// Resolves once the connection should close when it is next idle:
    /// it waited too long for a request head, or its port is closing. For
    /// a connection that waits on this only between requests, which costs
    /// an atomic load and a waker registration rather than a lock.
    pub fn idle_close(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(|cx| {
            let told = || self.expired.load(SeqCst) || self.closing.load(SeqCst);
            if told() {
                return Poll::Ready(());
            }
            self.waker.register(cx.waker());
            match told() {
                true => Poll::Ready(()),
                false => Poll::Pending,
            }
        })
    }

    /// With no request in flight (each begun one has finished), how many
    /// have begun: the same figure at two looks means idle in between.
    pub fn idle_after(&self) -> Option<u64> {
        let started = self.started.load(Relaxed);
        (started == self.finished.load(Relaxed)).then_some(started)
    }

    /// Whether the port has told this connection to close.
    pub fn is_closing(&self) -> bool {
        self.closing.load(SeqCst)
    }

    fn expire(&self) {
        self.expired.store(true, SeqCst);
        self.waker.wake();
    }

    fn close(&self) {
        self.closing.store(true, SeqCst);
        self.waker.wake();
    }
}

/// Watches the connections of one port: each connection registers once,
/// and is forgotten once it has ended (the reaper holds it weakly). A
/// lock-free queue: connections register while the reaper goes through
/// it.
pub struct Reaper {
    timeout: Duration,
    /// Counts the connections it expires.
    counts: Arc<ClientTimeouts>,
    watched: SegQueue<Watched>,
    /// The port is closing: every look tells its connection so too.
    closing: AtomicBool,
}

struct Watched {
    activity: Weak<Activity>,
    /// What the last look saw: requests started, and whether the
    /// connection was waiting for one.
    last_started: u64,
    was_waiting: bool,
    /// Looks in a row that found it still waiting since the look before.
    quiet: u8,
}

impl Reaper {
    pub fn new(timeout: Duration, counts: Arc<ClientTimeouts>) -> Arc<Self> {
        Arc::new(Self {
            timeout,
            counts,
            watched: SegQueue::new(),
            closing: AtomicBool::new(false),
        })
    }

    /// Closes `activity`'s connection (through `Activity::expired`) once it
    /// has waited for a request head, with no request in flight, for more
    /// than the timeout (and at most one and a half times it).
    pub fn watch(&self, activity: &Arc<Activity>) {
        let watched = Watched {
            activity: Arc::downgrade(activity),
            last_started: activity.started.load(Relaxed),
            // Not seen waiting yet: it may have begun only just now.
            was_waiting: false,
            quiet: 0,
        };
        self.watched.push(watched);
    }

    /// Looks at every watched connection twice per timeout, for as long as
    /// it is polled.
    pub async fn run(self: Arc<Self>) {
        let period = self.timeout / 2;
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            self.tick();
        }
    }

    /// Tells every watched connection to close once idle (see
    /// `Activity::idle_close`); they stay watched, so that one slow to send
    /// its head still expires. A connection a look of `run` holds out of the
    /// queue meanwhile is told by that look (see `tick`).
    pub fn close_all(&self) {
        self.closing.store(true, SeqCst);
        for _ in 0..self.watched.len() {
            let Some(watched) = self.watched.pop() else {
                break;
            };
            if let Some(activity) = watched.activity.upgrade() {
                activity.close();
                self.watched.push(watched);
            }
        }
    }

    /// Takes each connection registered so far out of the queue once, and
    /// puts back those still open and not expired.
    fn tick(&self) {
        for _ in 0..self.watched.len() {
            let Some(mut watched) = self.watched.pop() else {
                break;
            };
            let Some(activity) = watched.activity.upgrade() else {
                continue;
            };
            let started = activity.started.load(Relaxed);
            let waiting = started == activity.finished.load(Relaxed);
            // Waiting now, and already at the last look with no request
            // begun since: waiting for this whole period. The wait began
            // within the period before the first such look, so two of them
            // mean more than two periods (one timeout), and at most three.
            if waiting && watched.was_waiting && started == watched.last_started {
                watched.quiet += 1;
                if watched.quiet == 2 {
                    self.counts.record_header();
                    activity.expire();
                    continue;
                }
            } else {
                watched.quiet = 0;
            }
            watched.last_started = started;
            watched.was_waiting = waiting;
            self.watched.push(watched);
            // Looked at after the push: `close_all` sets the flag before it
            // goes through the queue, so either it finds this connection
            // back in the queue, or this sees the flag.
            if self.closing.load(SeqCst) {
                activity.close();
            }
        }
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

#[cfg(test)]
mod tests {
    use tokio::time::Instant;

    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(60);

    /// How long after `since` the reaper expired `activity`.
    async fn expired_after(activity: &Activity, since: Instant) -> Duration {
        activity.expired().await;
        since.elapsed()
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_expires_after_one_to_one_and_a_half_timeouts_of_waiting() {
        let reaper = Reaper::new(TIMEOUT, Arc::default());
        let _reaping = tokio::spawn(reaper.clone().run());
        let start = Instant::now();

        // Waiting from the start.
        let idle = Arc::new(Activity::default());
        reaper.watch(&idle);
        // A request in flight for ten timeouts, then waiting.
        let slow = Arc::new(Activity::default());
        reaper.watch(&slow);
        let in_flight = slow.begin();
        // A short request every third of a timeout, for ten timeouts.
        let busy = Arc::new(Activity::default());
        reaper.watch(&busy);
        let busy_until = start + TIMEOUT * 10;
        let requests = tokio::spawn({
            let busy = busy.clone();
            async move {
                while Instant::now() + TIMEOUT / 3 <= busy_until {
                    tokio::time::sleep(TIMEOUT / 3).await;
                    drop(busy.begin());
                }
            }
        });

        let waited = expired_after(&idle, start).await;
        assert!(waited > TIMEOUT && waited <= TIMEOUT * 3 / 2, "{waited:?}");

        requests.await.unwrap();
        assert_eq!(Instant::now(), busy_until);
        assert!(!busy.expired.load(SeqCst), "a busy connection expired");
        assert!(!slow.expired.load(SeqCst), "a request in flight was cut");

        drop(in_flight);
        let ended = Instant::now();
        let waited = expired_after(&slow, ended).await;
        assert!(waited > TIMEOUT && waited <= TIMEOUT * 3 / 2, "{waited:?}");
        let waited = expired_after(&busy, busy_until).await;
        assert!(waited > TIMEOUT && waited <= TIMEOUT * 3 / 2, "{waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn closing_the_port_tells_every_connection_and_still_expires_them() {
        let reaper = Reaper::new(TIMEOUT, Arc::default());
        let _reaping = tokio::spawn(reaper.clone().run());
        let start = Instant::now();
        let watched = Arc::new(Activity::default());
        reaper.watch(&watched);
        reaper.close_all();
        watched.idle_close().await;
        assert_eq!(Instant::now(), start, "told at once");
        // A connection that registers after the port closed is told at the
        // reaper's next look.
        let late = Arc::new(Activity::default());
        reaper.watch(&late);
        late.idle_close().await;
        assert!(Instant::now() - start <= TIMEOUT / 2);
        // Still watched: one that never sends a head expires all the same.
        let waited = expired_after(&watched, start).await;
        assert!(waited > TIMEOUT && waited <= TIMEOUT * 3 / 2, "{waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_closed_connection_is_forgotten() {
        let reaper = Reaper::new(TIMEOUT, Arc::default());
        let _reaping = tokio::spawn(reaper.clone().run());
        let closed = Arc::new(Activity::default());
        reaper.watch(&closed);
        let kept = Arc::new(Activity::default());
        reaper.watch(&kept);
        drop(closed);
        tokio::time::sleep(TIMEOUT / 2 + Duration::from_millis(1)).await;
        assert_eq!(reaper.watched.len(), 1);
    }
}
