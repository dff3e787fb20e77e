//! Timeouts hyper's server does not have: a request body that stalls
//! (`timeouts.request_body`), a client that stops reading what the guard writes, and a
//! connection with no request in progress (`timeouts.idle`, also one that never sent a
//! byte), and an HTTP/2 client that withholds flow-control credit (`timeouts.idle`). Each timer is armed only while something waits, so a connection that is busy
//! or a body that flows costs no timer work per byte.

use std::error::Error;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use crate::wheel::{self, Sleep};

/// The error of a request body that sent nothing for `timeouts.request_body`.
#[derive(Debug, thiserror::Error)]
#[error("request body stalled: no data for {0:?}")]
pub(crate) struct BodyTimeout(pub Duration);

/// Whether `error` or one of its sources is a [`BodyTimeout`].
pub(crate) fn is_body_timeout(error: &(dyn Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.is::<BodyTimeout>() {
            return true;
        }
        current = e.source();
    }
    false
}

/// A timer created on first need and reused: a connection or body that never waits never
/// allocates one. Boxed, so that it costs the body that holds it one pointer: a request
/// body is kept by value in each slot of the upstream connection's queue (blocks of 32).
struct Deadline {
    sleep: Option<Box<Sleep>>,
    armed: bool,
}

impl Deadline {
    const fn new() -> Deadline {
        Deadline {
            sleep: None,
            armed: false,
        }
    }

    /// Arm the timer for `limit` from now unless it already runs, then poll it: ready once
    /// `limit` has passed since arming.
    fn poll_expired(&mut self, limit: Duration, cx: &mut Context<'_>) -> Poll<()> {
        if !self.armed {
            let at = Instant::now() + limit;
            match &mut self.sleep {
                Some(sleep) => sleep.reset(at),
                None => self.sleep = Some(Box::new(wheel::sleep_until(at))),
            }
            self.armed = true;
        }
        match &mut self.sleep {
            Some(sleep) => Pin::new(&mut **sleep).poll(cx),
            None => Poll::Pending,
        }
    }

    /// Progress was made: the next wait starts a fresh timer.
    fn disarm(&mut self) {
        self.armed = false;
    }
}

/// A client's request body that fails with [`BodyTimeout`] when no frame comes for
/// `limit` while it is being read.
pub(crate) struct TimedBody {
    body: Incoming,
    limit: Duration,
    deadline: Deadline,
}

impl TimedBody {
    pub(crate) fn new(body: Incoming, limit: Duration) -> TimedBody {
        TimedBody {
            body,
            limit,
            deadline: Deadline::new(),
        }
    }
}

impl Body for TimedBody {
    type Data = Bytes;
    type Error = Box<dyn Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.deadline.disarm();
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                ready!(this.deadline.poll_expired(this.limit, cx));
                Poll::Ready(Some(Err(Box::new(BodyTimeout(this.limit)))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A client connection whose writes fail with `TimedOut` when the client reads nothing
/// for `limit` (nginx's `send_timeout`): hyper's HTTP/1 server would otherwise wait on a
/// full socket buffer for ever.
pub(crate) struct TimedIo<T> {
    inner: T,
    limit: Duration,
    deadline: Deadline,
}

impl<T> TimedIo<T> {
    pub(crate) fn new(inner: T, limit: Duration) -> TimedIo<T> {
        TimedIo {
            inner,
            limit,
            deadline: Deadline::new(),
        }
    }

    pub(crate) fn get_ref(&self) -> &T {
        &self.inner
    }

    /// Pass a write's outcome on; a write that waits counts against the limit.
    fn timed<R>(
        &mut self,
        polled: Poll<io::Result<R>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<R>> {
        match polled {
            Poll::Ready(result) => {
                self.deadline.disarm();
                Poll::Ready(result)
            }
            Poll::Pending => {
                ready!(self.deadline.poll_expired(self.limit, cx));
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "client read nothing within timeouts.idle",
                )))
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for TimedIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for TimedIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.timed(polled, cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.timed(polled, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_flush(cx);
        this.timed(polled, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.timed(polled, cx)
    }
}

/// The requests in progress on one connection, and since when it has had none: what
/// `timeouts.idle` measures. HTTP/1 has at most one, HTTP/2 one per open stream.
///
/// It also knows the HTTP/2 response bodies of the connection, so that a client that stops
/// reading is found: an HTTP/2 client that grants no flow-control credit leaves hyper with
/// data it cannot send, and then hyper neither writes (which [`TimedIo`] would time) nor
/// asks the response body for its next frame. A body whose last frame was handed to hyper
/// longer than `timeouts.idle` ago, and that hyper has not asked again since, is stalled
/// by its client (Envoy's `stream_idle_timeout`). A body waiting on its upstream is not
/// stalled: hyper has asked, and the body answered `Pending`.
pub(crate) struct Activity {
    started: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds after `started` when the last request ended.
    idle_since: AtomicU64,
    /// The delivery marks of the connection's HTTP/2 response bodies (one per request,
    /// registered when it begins); marks of ended requests are pruned as the list grows.
    deliveries: Mutex<Vec<Arc<Delivery>>>,
}

/// What the connection's watchdog found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// No request in progress for the limit: close gracefully.
    Idle,
    /// A response body handed hyper a frame more than the limit ago and hyper has not
    /// asked for the next: the client reads nothing (HTTP/2 flow control); close.
    Stalled,
}

/// One response body's mark: 0 while hyper is asking for frames (or nothing was sent yet,
/// or the body ended), else 1 + the milliseconds after `Activity::started` when the body
/// last handed hyper a data frame. One atomic store per frame; no timer, no allocation.
#[derive(Default)]
struct Delivery(AtomicU64);

impl Delivery {
    fn delivered(&self, started: Instant) {
        let at = started.elapsed().as_millis() as u64;
        self.0.store(at.saturating_add(1), Ordering::Relaxed);
    }

    fn asked(&self) {
        self.0.store(0, Ordering::Relaxed);
    }

    /// When the frame hyper has not asked past was delivered.
    fn waiting_since(&self, started: Instant) -> Option<Instant> {
        match self.0.load(Ordering::Relaxed) {
            0 => None,
            at => Some(started + Duration::from_millis(at - 1)),
        }
    }
}

impl Activity {
    pub(crate) fn new() -> Arc<Activity> {
        Arc::new(Activity {
            started: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            deliveries: Mutex::new(Vec::new()),
        })
    }

    /// A request begins; it is in progress until the returned guard is dropped (hyper
    /// drops the response body once it is written, or the connection closes). With
    /// `watch_delivery` (HTTP/2) its response body is watched for a client that stops
    /// reading; HTTP/1 needs no watch, as its writes wait and [`TimedIo`] times them.
    pub(crate) fn begin(self: &Arc<Self>, watch_delivery: bool) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let delivery = watch_delivery.then(|| {
            let delivery = Arc::new(Delivery::default());
            let mut deliveries = self.deliveries();
            if deliveries.len() == deliveries.capacity() {
                // Amortised: drop the marks of bodies that are gone before growing.
                deliveries.retain(|d| Arc::strong_count(d) > 1);
            }
            deliveries.push(delivery.clone());
            delivery
        });
        InFlight {
            activity: self.clone(),
            delivery,
        }
    }

    fn deliveries(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Delivery>>> {
        self.deliveries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The oldest delivery hyper has not asked past, among live bodies.
    fn oldest_waiting(&self) -> Option<Instant> {
        self.deliveries()
            .iter()
            .filter(|d| Arc::strong_count(d) > 1)
            .filter_map(|d| d.waiting_since(self.started))
            .min()
    }

    /// Resolves once the connection has had no request in progress for `limit`
    /// ([`Verdict::Idle`]), or a response body has waited for hyper to ask for its next
    /// frame for `limit` ([`Verdict::Stalled`]). While busy it looks every `limit` (or at
    /// the moment a waiting body would be over it): a stall is found within twice the
    /// limit, and a flowing body costs the watchdog nothing.
    pub(crate) async fn watch(&self, limit: Duration) -> Verdict {
        loop {
            let now = Instant::now();
            let wake = if self.in_flight.load(Ordering::Relaxed) > 0 {
                match self.oldest_waiting() {
                    Some(since) if since + limit <= now => return Verdict::Stalled,
                    Some(since) => since + limit,
                    // Busy and every body asked for: a request in progress has timeouts
                    // of its own.
                    None => now + limit,
                }
            } else {
                let since = Duration::from_millis(self.idle_since.load(Ordering::Relaxed));
                let at = self.started + since + limit;
                if at <= now {
                    return Verdict::Idle;
                }
                at
            };
            wheel::sleep_until(wake).await;
        }
    }
}

/// One request in progress on a connection.
pub(crate) struct InFlight {
    activity: Arc<Activity>,
    /// The response body's mark, for HTTP/2.
    delivery: Option<Arc<Delivery>>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(delivery) = &self.delivery {
            delivery.asked();
        }
        let activity = &self.activity;
        let since = activity.started.elapsed().as_millis() as u64;
        activity.idle_since.store(since, Ordering::Relaxed);
        activity.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that keeps its request counted as in progress until it is dropped, and
/// marks (for HTTP/2) when it handed hyper a frame that hyper has not asked past.
pub(crate) struct Tracked<B> {
    body: B,
    in_flight: InFlight,
}

impl<B> Tracked<B> {
    pub(crate) fn new(body: B, in_flight: InFlight) -> Tracked<B> {
        Tracked { body, in_flight }
    }
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.get_mut();
        let Some(delivery) = &this.in_flight.delivery else {
            return Pin::new(&mut this.body).poll_frame(cx);
        };
        // hyper asks: whatever the body answers, the client has taken what came before.
        delivery.asked();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        // A data frame: hyper holds it until the stream has credit, sends it, then asks
        // again (or, after the last one, drops the body): until then the client owes
        // credit. After trailers hyper needs no credit and drops the body.
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && frame.is_data()
        {
            delivery.delivered(this.in_flight.activity.started);
        }
        polled
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
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_counts_from_the_end_of_the_last_request() {
        let activity = Activity::new();
        let limit = Duration::from_secs(60);
        let request = activity.begin(true);
        // Busy for longer than the limit: not idle.
        let busy = tokio::time::timeout(limit * 2, activity.watch(limit)).await;
        assert!(
            busy.is_err(),
            "a connection with a request in progress is not idle"
        );
        drop(request);
        let ended = Instant::now();
        assert_eq!(activity.watch(limit).await, Verdict::Idle);
        assert!(Instant::now() - ended >= limit);
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_never_sends_is_idle_after_the_limit() {
        let activity = Activity::new();
        let begun = Instant::now();
        assert_eq!(activity.watch(Duration::from_secs(5)).await, Verdict::Idle);
        assert_eq!(Instant::now() - begun, Duration::from_secs(5));
    }

    /// A response body that answers each poll with the next scripted step (`None` in the
    /// script: `Pending`), then `Pending` for ever.
    struct Script(std::collections::VecDeque<Option<Option<&'static str>>>);

    impl Body for Script {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            match self.get_mut().0.pop_front().flatten() {
                Some(Some(data)) => Poll::Ready(Some(Ok(Frame::data(Bytes::from(data))))),
                Some(None) => Poll::Ready(None),
                None => Poll::Pending,
            }
        }

        fn is_end_stream(&self) -> bool {
            self.0.is_empty()
        }
    }

    /// A watched (HTTP/2) response body on `activity`, polled as hyper would `polls` times.
    fn polled(
        activity: &Arc<Activity>,
        watch: bool,
        script: &[Option<Option<&'static str>>],
        polls: usize,
    ) -> Tracked<Script> {
        let mut body = Tracked::new(
            Script(script.iter().copied().collect()),
            activity.begin(watch),
        );
        let mut cx = Context::from_waker(std::task::Waker::noop());
        for _ in 0..polls {
            let _ = Pin::new(&mut body).poll_frame(&mut cx);
        }
        body
    }

    const LIMIT: Duration = Duration::from_secs(60);

    async fn verdict_within(activity: &Activity, within: Duration) -> Option<Verdict> {
        tokio::time::timeout(within, activity.watch(LIMIT))
            .await
            .ok()
    }

    #[tokio::test(start_paused = true)]
    async fn a_frame_hyper_does_not_ask_past_is_a_stall_after_the_limit() {
        let activity = Activity::new();
        let _body = polled(&activity, true, &[Some(Some("a")), Some(Some("b"))], 1);
        let begun = Instant::now();
        assert_eq!(activity.watch(LIMIT).await, Verdict::Stalled);
        assert_eq!(Instant::now() - begun, LIMIT);
    }

    #[tokio::test(start_paused = true)]
    async fn a_last_frame_hyper_cannot_send_is_a_stall() {
        let activity = Activity::new();
        // The body is at its end after this frame; hyper holds it (and the body) until the
        // stream has credit, and drops it once sent.
        let body = polled(&activity, true, &[Some(Some("last"))], 1);
        assert!(body.is_end_stream());
        assert_eq!(
            verdict_within(&activity, LIMIT * 2).await,
            Some(Verdict::Stalled)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_waiting_on_its_upstream_is_no_stall() {
        let activity = Activity::new();
        // Delivered, asked again, and Pending: a quiet upstream.
        let _body = polled(&activity, true, &[Some(Some("a")), None], 2);
        assert_eq!(verdict_within(&activity, LIMIT * 5).await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_at_its_end_or_dropped_is_no_stall() {
        let activity = Activity::new();
        // The last frame, then hyper's last ask (None): the body is held but finished.
        let ended = polled(&activity, true, &[Some(Some("a")), Some(None)], 2);
        assert_eq!(verdict_within(&activity, LIMIT * 5).await, None);
        drop(ended);
        // Dropped right after a frame (the connection let it go): the request is over.
        let dropped = polled(&activity, true, &[Some(Some("a"))], 1);
        drop(dropped);
        assert_eq!(
            verdict_within(&activity, LIMIT * 2).await,
            Some(Verdict::Idle)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn one_stalled_stream_among_flowing_ones_is_found() {
        let activity = Activity::new();
        let _flowing = polled(&activity, true, &[Some(Some("a")), None], 2);
        let _stalled = polled(&activity, true, &[Some(Some("a")), Some(Some("b"))], 1);
        let _ended = polled(&activity, true, &[Some(None)], 1);
        assert_eq!(
            verdict_within(&activity, LIMIT * 2).await,
            Some(Verdict::Stalled)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn http1_bodies_are_not_watched() {
        let activity = Activity::new();
        // HTTP/1: the write timeout covers a client that stops reading.
        let _body = polled(&activity, false, &[Some(Some("a")), Some(Some("b"))], 1);
        assert_eq!(verdict_within(&activity, LIMIT * 5).await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_that_waits_too_long_fails() {
        // A duplex pipe of 16 bytes that nobody reads: the second write waits.
        let (ours, _theirs) = tokio::io::duplex(16);
        let mut io = TimedIo::new(ours, Duration::from_secs(10));
        use tokio::io::AsyncWriteExt;
        io.write_all(&[0; 16]).await.unwrap();
        let begun = Instant::now();
        let e = io.write_all(&[0; 16]).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert_eq!(Instant::now() - begun, Duration::from_secs(10));
    }
}
