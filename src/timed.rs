//! Timeouts hyper's server does not have: a request body that stalls
//! (`timeouts.request_body`), a client that stops reading what the guard writes, and a
//! connection with no request in progress (`timeouts.idle`, also one that never sent a
//! byte). Each timer is armed only while something waits, so a connection that is busy
//! or a body that flows costs no timer work per byte.

use std::error::Error;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The error of a request body that sent nothing for `timeouts.request_body`.
#[derive(Debug, thiserror::Error)]
#[error("request body stalled: no data for {0:?}")]
pub struct BodyTimeout(pub Duration);

/// Whether `error` or one of its sources is a [`BodyTimeout`].
pub fn is_body_timeout(error: &(dyn Error + 'static)) -> bool {
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
/// allocates one.
struct Deadline {
    sleep: Option<Pin<Box<Sleep>>>,
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
                Some(sleep) => sleep.as_mut().reset(at),
                None => self.sleep = Some(Box::pin(tokio::time::sleep_until(at))),
            }
            self.armed = true;
        }
        match &mut self.sleep {
            Some(sleep) => sleep.as_mut().poll(cx),
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
pub struct TimedBody {
    body: Incoming,
    limit: Duration,
    deadline: Deadline,
}

impl TimedBody {
    pub fn new(body: Incoming, limit: Duration) -> TimedBody {
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
pub struct TimedIo<T> {
    inner: T,
    limit: Duration,
    deadline: Deadline,
}

impl<T> TimedIo<T> {
    pub fn new(inner: T, limit: Duration) -> TimedIo<T> {
        TimedIo {
            inner,
            limit,
            deadline: Deadline::new(),
        }
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
pub struct Activity {
    started: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds after `started` when the last request ended.
    idle_since: AtomicU64,
}

impl Activity {
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            started: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
        })
    }

    /// A request begins; it is in progress until the returned guard is dropped (hyper
    /// drops the response body once it is written, or the connection closes).
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// Resolves once the connection has had no request in progress for `limit`.
    pub async fn idle_for(&self, limit: Duration) {
        loop {
            let wake = if self.in_flight.load(Ordering::Relaxed) > 0 {
                // Busy: look again later; a request in progress has timeouts of its own.
                Instant::now() + limit
            } else {
                let since = Duration::from_millis(self.idle_since.load(Ordering::Relaxed));
                let at = self.started + since + limit;
                if at <= Instant::now() {
                    return;
                }
                at
            };
            tokio::time::sleep_until(wake).await;
        }
    }
}

/// One request in progress on a connection.
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        let since = activity.started.elapsed().as_millis() as u64;
        activity.idle_since.store(since, Ordering::Relaxed);
        activity.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that keeps its request counted as in progress until it is dropped.
pub struct Tracked<B> {
    body: B,
    _in_flight: InFlight,
}

impl<B> Tracked<B> {
    pub fn new(body: B, in_flight: InFlight) -> Tracked<B> {
        Tracked {
            body,
            _in_flight: in_flight,
        }
    }
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
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
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_counts_from_the_end_of_the_last_request() {
        let activity = Activity::new();
        let limit = Duration::from_secs(60);
        let request = activity.begin();
        // Busy for longer than the limit: not idle.
        let busy = tokio::time::timeout(limit * 2, activity.idle_for(limit)).await;
        assert!(
            busy.is_err(),
            "a connection with a request in progress is not idle"
        );
        drop(request);
        let ended = Instant::now();
        activity.idle_for(limit).await;
        assert!(Instant::now() - ended >= limit);
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_never_sends_is_idle_after_the_limit() {
        let activity = Activity::new();
        let begun = Instant::now();
        activity.idle_for(Duration::from_secs(5)).await;
        assert_eq!(Instant::now() - begun, Duration::from_secs(5));
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
