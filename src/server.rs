//! Accept loops: the public listener (HTTP/1.1 and h2c on one port, or TLS with ALPN) and
//! the admin listener, each stopping on a signal and draining in-flight requests. Here too
//! what keeps the public listener up: at most `limits.max_connections` open connections,
//! idle connections closed, writes to a client that reads nothing timed out, HTTP/1 and
//! HTTP/2 limits, and new requests refused while the memory limit is near.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio_rustls::TlsAcceptor;

use tokio::sync::Semaphore;

use crate::metrics::Metrics;
use crate::overload::Overload;
use crate::proxy::{Peer, Proxy};
use crate::timed::{Activity, TimedIo, Verdict};
use crate::wheel;

/// Settings of the public listener.
pub(crate) struct PublicOptions {
    pub tls: Option<TlsAcceptor>,
    pub header_timeout: Duration,
    /// `timeouts.idle`: no request in progress, or a client that reads nothing.
    pub idle_timeout: Duration,
    pub grace: Duration,
    /// `limits.max_connections`.
    pub max_connections: usize,
    /// Present when `limits.max_memory` is set.
    pub overload: Option<Arc<Overload>>,
    pub metrics: Arc<Metrics>,
}

/// The idle timeout of the admin listener (Prometheus scrapes keep connections alive).
const ADMIN_IDLE: Duration = Duration::from_secs(60);
/// The admin listener's bound on a request's head.
const ADMIN_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// HTTP/1 read buffer bound: request headers must fit in it (Envoy's 60 KiB header limit,
/// rounded up; hyper's default is about 400 KiB).
const H1_MAX_BUF: usize = 64 * 1024;
/// Request headers per request (Envoy's `max_request_headers_count`; hyper's default).
const MAX_HEADERS: usize = 100;
/// HTTP/2 limits as Envoy recommends for an edge proxy: 100 streams per connection, a
/// 64 KiB stream window and a 1 MiB connection window (what one connection may make the
/// guard buffer), a 60 KiB header list.
const H2_MAX_STREAMS: u32 = 100;
const H2_STREAM_WINDOW: u32 = 64 * 1024;
const H2_CONNECTION_WINDOW: u32 = 1024 * 1024;
const H2_MAX_HEADER_LIST: u32 = 60 * 1024;
/// Rapid reset (CVE-2023-44487): streams the client opened and reset before they were
/// accepted; beyond this the connection gets GOAWAY (the h2 crate's default, set here so
/// it stays so).
const H2_MAX_PENDING_RESETS: usize = 20;
/// Streams the guard itself had to reset because of the client's errors (the "MadeYouReset"
/// variant); beyond this the connection gets GOAWAY.
const H2_MAX_LOCAL_RESETS: usize = 1024;

/// The two protocol servers of a listener, configured once.
struct Protocols {
    h1: http1::Builder,
    h2: http2::Builder<TokioExecutor>,
}

impl Protocols {
    fn new(header_timeout: Duration) -> Protocols {
        let mut h1 = http1::Builder::new();
        h1.timer(wheel::Timer)
            .header_read_timeout(header_timeout)
            .max_buf_size(H1_MAX_BUF)
            .max_headers(MAX_HEADERS);
        let mut h2 = http2::Builder::new(TokioExecutor::new());
        h2.timer(wheel::Timer)
            .keep_alive_interval(Some(Duration::from_secs(30)))
            .max_concurrent_streams(H2_MAX_STREAMS)
            .initial_stream_window_size(H2_STREAM_WINDOW)
            .initial_connection_window_size(H2_CONNECTION_WINDOW)
            .max_header_list_size(H2_MAX_HEADER_LIST)
            .max_pending_accept_reset_streams(H2_MAX_PENDING_RESETS)
            .max_local_error_reset_streams(H2_MAX_LOCAL_RESETS);
        Protocols { h1, h2 }
    }

    /// Serve `io` in `speaks` until it ends; see [`drive`] for `stop` and `idle`.
    async fn serve<I, S, B>(
        &self,
        speaks: Speaks,
        io: I,
        service: S,
        stop: watch::Receiver<bool>,
        idle: Option<(Arc<Activity>, Duration)>,
    ) where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
        S: hyper::service::HttpService<Incoming, ResBody = B> + Send,
        S::Future: Send + 'static,
        S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        match speaks {
            Speaks::Http1 => {
                let conn = std::pin::pin!(self.h1.serve_connection(io, service).with_upgrades());
                drive(conn, stop, idle, |c| c.graceful_shutdown()).await;
            }
            Speaks::Http2 => {
                let conn = std::pin::pin!(self.h2.serve_connection(io, service));
                drive(conn, stop, idle, |c| c.graceful_shutdown()).await;
            }
        }
    }
}

/// What a connection speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Speaks {
    Http1,
    Http2,
}

/// The client connection preface of HTTP/2 (RFC 9113, section 3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What a plain connection's first bytes say it speaks: HTTP/2 with prior knowledge (h2c)
/// when they are the preface, else HTTP/1.x; `None` while they are only the preface's
/// beginning.
fn speaks(first: &[u8]) -> Option<Speaks> {
    let n = first.len().min(H2_PREFACE.len());
    if first[..n] != H2_PREFACE[..n] {
        Some(Speaks::Http1)
    } else if n == H2_PREFACE.len() {
        Some(Speaks::Http2)
    } else {
        None
    }
}

/// The protocol of a plain connection, from its first bytes, peeked: they stay in the
/// socket for hyper to read. (hyper-util's `auto` reads them and hands them back as a
/// first read of 24 bytes, after which hyper's HTTP/1 read buffer doubles to 16 KiB for
/// the connection's life: 1.6 MB at 200 connections.) A client that has sent part of the
/// preface and no more is peeked at again, backing off. `None` when nothing tells by
/// `limit` (the header read timeout), or at EOF or an error.
async fn sniff(stream: &TcpStream, limit: Duration) -> Option<Speaks> {
    let told = async {
        let mut first = [0u8; H2_PREFACE.len()];
        let mut pause = wheel::TICK;
        loop {
            let n = stream.peek(&mut first).await.ok().filter(|n| *n > 0)?;
            if let Some(speaks) = speaks(&first[..n]) {
                return Some(speaks);
            }
            wheel::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    };
    wheel::timeout(limit, told).await.ok().flatten()
}

/// The worker threads of the public listener. Each runs a single-threaded runtime that
/// carries its connections from accept to close, with its own upstream connection pool, so
/// that a request and the upstream connection serving it wake each other on one thread
/// (nginx's worker model; measured in BENCHMARKS.md). New connections go to the worker
/// with the fewest open ones.
pub(crate) struct Workers {
    workers: Vec<Worker>,
}

struct Worker {
    handle: tokio::runtime::Handle,
    open: Arc<AtomicUsize>,
    stop: oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

/// Counts a connection as open on its worker until dropped (also when a stopping runtime
/// drops the connection's task).
struct OpenConnection(Arc<AtomicUsize>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Workers {
    /// Start `count` worker threads (at least one).
    pub(crate) fn start(count: usize) -> std::io::Result<Workers> {
        let mut workers = Vec::with_capacity(count.max(1));
        for index in 0..count.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let handle = runtime.handle().clone();
            let (stop, stopped) = oneshot::channel::<()>();
            let thread = std::thread::Builder::new()
                .name(format!("hti-guard-worker-{index}"))
                .spawn(move || {
                    runtime.block_on(async {
                        let _ = stopped.await;
                    });
                })?;
            workers.push(Worker {
                handle,
                open: Arc::new(AtomicUsize::new(0)),
                stop,
                thread,
            });
        }
        Ok(Workers { workers })
    }

    pub(crate) fn len(&self) -> usize {
        self.workers.len()
    }

    /// Run `task(worker index)` on the worker with the fewest open connections.
    fn spawn<F, Fut>(&self, task: F)
    where
        F: FnOnce(usize) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (index, worker) = self
            .workers
            .iter()
            .enumerate()
            .min_by_key(|(_, w)| w.open.load(Ordering::Relaxed))
            .expect("at least one worker");
        worker.open.fetch_add(1, Ordering::Relaxed);
        let open = OpenConnection(worker.open.clone());
        worker.handle.spawn(async move {
            let _open = open;
            task(index).await;
        });
    }

    /// Stop every worker (dropping the connections they still hold) and wait for the
    /// threads to end.
    pub(crate) async fn stop(self) {
        let threads: Vec<_> = self
            .workers
            .into_iter()
            .map(|w| {
                let _ = w.stop.send(());
                w.thread
            })
            .collect();
        let _ = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        })
        .await;
    }
}

/// The proxy of each worker, replaced whole by a reload. A request loads its worker's once
/// and keeps it to its end, so it never mixes two configurations and one in flight finishes
/// on the old one; each worker keeps its own upstream pool across reloads.
pub(crate) struct Live {
    slots: Box<[ArcSwap<Proxy>]>,
}

impl Live {
    /// `proxy` for each of `workers`, each with an upstream pool of its own.
    pub(crate) fn new(proxy: &Proxy, workers: usize) -> Live {
        Live {
            slots: (0..workers.max(1))
                .map(|_| ArcSwap::from_pointee(proxy.with_own_pool()))
                .collect(),
        }
    }

    /// New requests go to `proxy`, through each worker's pool as before.
    pub(crate) fn replace(&self, proxy: &Proxy) {
        for slot in self.slots.iter() {
            let mut next = proxy.clone();
            next.upstream = slot.load().upstream.clone();
            slot.store(Arc::new(next));
        }
    }

    fn current(&self, worker: usize) -> Arc<Proxy> {
        self.slots[worker % self.slots.len()].load_full()
    }
}

/// Serve the proxy until `stop` turns true, then drain for at most `grace`. Connections
/// run on `workers`, each worker with its own copy of the proxy in `live`.
pub(crate) async fn serve_public(
    listener: TcpListener,
    live: Arc<Live>,
    workers: &Workers,
    options: PublicOptions,
    stop: watch::Receiver<bool>,
) {
    let protocols = Arc::new(Protocols::new(options.header_timeout));
    let header_timeout = options.header_timeout;
    let idle = options.idle_timeout;
    let tls = options.tls.clone();
    let overload = options.overload.clone();
    let on_connection = move |index: usize, stream: TcpStream, addr, stop| {
        let live = live.clone();
        let protocols = protocols.clone();
        let tls = tls.clone();
        let overload = overload.clone();
        async move {
            // Until its first byte a connection holds only this small future: the hyper
            // connection (several KiB) is built, boxed, once there is something to read.
            let mut stop = stop;
            tokio::select! {
                biased;
                readable = stream.readable() => if let Err(e) = readable {
                    tracing::debug!(peer = %addr, error = %e, "connection failed before a byte");
                    return;
                },
                _ = wheel::sleep(idle) => {
                    tracing::debug!(peer = %addr, "idle connection closed before its first byte");
                    return;
                }
                _ = stopped(&mut stop) => return,
            }
            let peer = Peer::new(addr, tls.is_some());
            let activity = Activity::new();
            let tracked = activity.clone();
            let service = service_fn(move |request: Request<Incoming>| {
                // HTTP/2 response bodies are watched for a client that withholds
                // flow-control credit; HTTP/1 ones have the write timeout.
                let in_flight = tracked.begin(request.version() == http::Version::HTTP_2);
                let refuse = overload.as_ref().is_some_and(|o| o.is_overloaded());
                live.current(index)
                    .handle(request, &peer, in_flight, refuse)
            });
            let stream = TimedIo::new(stream, idle);
            let idle = Some((activity, idle));
            // Boxed apart: a plain connection's future is not the size of a TLS one.
            match tls {
                None => {
                    Box::pin(async move {
                        let Some(speaks) = sniff(stream.get_ref(), header_timeout).await else {
                            tracing::debug!(peer = %addr, "no request began");
                            return;
                        };
                        let io = TokioIo::new(stream);
                        protocols.serve(speaks, io, service, stop, idle).await;
                    })
                    .await
                }
                Some(acceptor) => {
                    Box::pin(async move {
                        let accepted = wheel::timeout(header_timeout, acceptor.accept(stream));
                        let stream = match accepted.await {
                            Ok(Ok(stream)) => stream,
                            Ok(Err(e)) => {
                                tracing::debug!(peer = %addr, error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(peer = %addr, "TLS handshake timed out");
                                return;
                            }
                        };
                        // ALPN decides, as in nginx: HTTP/2 over TLS is "h2" (RFC 9113,
                        // section 3.2); without it, HTTP/1.1.
                        let speaks = match stream.get_ref().1.alpn_protocol() {
                            Some(b"h2") => Speaks::Http2,
                            _ => Speaks::Http1,
                        };
                        let io = TokioIo::new(stream);
                        protocols.serve(speaks, io, service, stop, idle).await;
                    })
                    .await
                }
            }
        }
    };
    let limit = Limit {
        permits: Arc::new(Semaphore::new(options.max_connections)),
        metrics: options.metrics.clone(),
    };
    serve(
        listener,
        stop,
        options.grace,
        Some(workers),
        Some(limit),
        on_connection,
    )
    .await;
}

/// At most this many open connections on a listener: the accept loop takes a permit before
/// it accepts, so beyond the limit new connections wait in the kernel's backlog while
/// established ones are served.
struct Limit {
    permits: Arc<Semaphore>,
    metrics: Arc<Metrics>,
}

/// An open connection's permit; counted in `hti_guard_open_connections` until dropped.
struct Permit {
    _permit: tokio::sync::OwnedSemaphorePermit,
    metrics: Arc<Metrics>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.metrics.connections(-1);
    }
}

/// A plain HTTP/1.1 server for small internal endpoints (the admin listener, the demo
/// parts), until `stop` turns true.
/// Generic over the response body: these endpoints pass bodies they made, never an
/// upstream's.
pub(crate) async fn serve_plain<F, Fut, B>(
    listener: TcpListener,
    handler: F,
    stop: watch::Receiver<bool>,
) where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let protocols = Arc::new(Protocols::new(ADMIN_HEADER_TIMEOUT));
    serve(
        listener,
        stop,
        Duration::from_secs(1),
        None,
        None,
        move |_worker, stream, _addr, stop| {
            let handler = handler.clone();
            let protocols = protocols.clone();
            async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let handler = handler.clone();
                    async move { Ok::<_, Infallible>(handler(request).await) }
                });
                let Some(speaks) = sniff(&stream, ADMIN_HEADER_TIMEOUT).await else {
                    return;
                };
                let io = TokioIo::new(TimedIo::new(stream, ADMIN_IDLE));
                protocols.serve(speaks, io, service, stop, None).await;
            }
        },
    )
    .await;
}

/// Resolves once `stop` turns true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Run a connection to its end; when `stop` turns true, or when `idle` says it has had no
/// request in progress for its timeout, `drain` asks it to finish what is in flight and
/// close. When `idle` finds a response body its client has stopped reading for the timeout
/// (HTTP/2 flow control), the connection is closed at once: draining would wait on that
/// very client.
async fn drive<C, E>(
    mut conn: std::pin::Pin<&mut C>,
    mut stop: watch::Receiver<bool>,
    idle: Option<(Arc<Activity>, Duration)>,
    drain: impl FnOnce(std::pin::Pin<&mut C>),
) where
    C: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let watchdog = async {
        match &idle {
            Some((activity, limit)) => activity.watch(*limit).await,
            None => std::future::pending().await,
        }
    };
    let mut stopping = std::pin::pin!(stopped(&mut stop));
    let mut watchdog = std::pin::pin!(watchdog);
    // The connection first; the stop signal and the watchdog only when one of them was
    // woken (`Beside`), not on each of the connection's few wake-ups per request.
    let mut beside = Beside::new();
    let event = std::future::poll_fn(|cx| {
        if let Poll::Ready(result) = conn.as_mut().poll(cx) {
            return Poll::Ready(Event::Ended(result));
        }
        if let Some(mut side) = beside.woken(cx) {
            if stopping.as_mut().poll(&mut side).is_ready() {
                return Poll::Ready(Event::Stop);
            }
            if let Poll::Ready(verdict) = watchdog.as_mut().poll(&mut side) {
                return Poll::Ready(Event::Watchdog(verdict));
            }
        }
        Poll::Pending
    })
    .await;
    let result = match event {
        Event::Ended(result) => result,
        Event::Stop => {
            drain(conn.as_mut());
            conn.await
        }
        Event::Watchdog(Verdict::Idle) => {
            tracing::debug!("idle connection closed");
            drain(conn.as_mut());
            // Closing an idle connection needs no more than a GOAWAY: bounded, so that
            // a peer that never reads cannot keep it.
            let limit = idle.as_ref().map_or(Duration::from_secs(1), |(_, d)| *d);
            match wheel::timeout(limit, conn.as_mut()).await {
                Ok(result) => result,
                Err(_) => Ok(()),
            }
        }
        Event::Watchdog(Verdict::Stalled) => {
            // Dropping the connection drops its streams' response bodies, and with
            // them the upstream requests behind them.
            tracing::debug!(
                "connection closed: its client read no response data within timeouts.idle"
            );
            Ok(())
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// What ended [`drive`]'s wait.
enum Event<E> {
    Ended(Result<(), E>),
    Stop,
    Watchdog(Verdict),
}

/// The futures that run beside a connection (its stop signal, its watchdog) are polled
/// with this waker, which notes that one of them was woken before it wakes the connection's
/// task: they are polled again only then, not on each of the task's wake-ups.
struct Beside {
    flag: Arc<BesideFlag>,
    waker: Waker,
    /// The task's waker as last given to `flag`.
    task: Option<Waker>,
}

struct BesideFlag {
    woken: AtomicBool,
    /// The connection task's waker, as of its last poll.
    task: Mutex<Option<Waker>>,
}

impl Wake for BesideFlag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        let task = self.task.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(task) = task.as_ref() {
            task.wake_by_ref();
        }
    }
}

impl Beside {
    fn new() -> Self {
        // Woken to begin with: the first poll registers the futures' wake-ups.
        let flag = Arc::new(BesideFlag {
            woken: AtomicBool::new(true),
            task: Mutex::new(None),
        });
        Beside {
            waker: Waker::from(flag.clone()),
            flag,
            task: None,
        }
    }

    /// A context to poll the futures beside with, when one of them was woken since they
    /// were last polled; keeps the task's waker current either way (the shared copy is
    /// locked only when it changed, which for a task's own waker is never).
    fn woken(&mut self, cx: &Context<'_>) -> Option<Context<'_>> {
        if !self.task.as_ref().is_some_and(|t| t.will_wake(cx.waker())) {
            self.task = Some(cx.waker().clone());
            *self
                .flag
                .task
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = self.task.clone();
        }
        // Cleared before they are polled: a wake-up while they run is not lost.
        self.flag
            .woken
            .swap(false, Ordering::AcqRel)
            .then(|| Context::from_waker(&self.waker))
    }
}

/// The accept loop shared by both listeners: each connection runs on one of `workers`, or
/// on the current runtime when there are none. Each connection task holds a clone of
/// `alive`; draining ends when every clone is gone or `grace` is over.
async fn serve<F, Fut>(
    listener: TcpListener,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
    workers: Option<&Workers>,
    limit: Option<Limit>,
    on_connection: F,
) where
    F: Fn(usize, TcpStream, SocketAddr, watch::Receiver<bool>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let on_connection = Arc::new(on_connection);
    let (alive, mut all_done) = tokio::sync::mpsc::channel::<()>(1);
    let conn_stop = stop.clone();
    let mut accept_failures = AcceptFailures::default();
    loop {
        // A permit first: at the limit the loop stops accepting, and new connections wait
        // in the kernel's backlog until an open one closes.
        let permit = match &limit {
            Some(limit) => tokio::select! {
                permit = limit.permits.clone().acquire_owned() => match permit {
                    Ok(permit) => Some(Permit { _permit: permit, metrics: limit.metrics.clone() }),
                    Err(_) => break,
                },
                _ = stopped(&mut stop) => break,
            },
            None => None,
        };
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, addr)) => {
                    accept_failures.reset();
                    if let Some(permit) = &permit {
                        permit.metrics.connections(1);
                    }
                    let _ = stream.set_nodelay(true);
                    let alive = (alive.clone(), permit);
                    let stop = conn_stop.clone();
                    let on_connection = on_connection.clone();
                    let Some(workers) = workers else {
                        tokio::spawn(async move {
                            on_connection(0, stream, addr, stop).await;
                            drop(alive);
                        });
                        continue;
                    };
                    // The socket moves to the worker's own I/O driver.
                    let stream = match stream.into_std() {
                        Ok(stream) => stream,
                        Err(e) => {
                            tracing::debug!(peer = %addr, error = %e, "connection not handed over");
                            continue;
                        }
                    };
                    workers.spawn(move |index| async move {
                        match TcpStream::from_std(stream) {
                            Ok(stream) => on_connection(index, stream, addr, stop).await,
                            Err(e) => tracing::debug!(peer = %addr, error = %e, "connection not registered"),
                        }
                        drop(alive);
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: established connections go on
                    // (they run on the workers); wait a moment and try again, neither
                    // spinning nor giving up.
                    accept_failures.failed(&e);
                    tokio::time::sleep(ACCEPT_RETRY).await;
                }
            },
            _ = stopped(&mut stop) => break,
        }
    }
    drop(listener);
    drop(alive);
    if tokio::time::timeout(grace, all_done.recv()).await.is_err() {
        tracing::warn!(?grace, "drain time over; closing remaining connections");
    }
}

/// The wait after a failed `accept` (EMFILE, ENFILE, ENOBUFS): short, so that new
/// connections are served soon after file descriptors free up.
const ACCEPT_RETRY: Duration = Duration::from_millis(50);

/// Logs accept failures at most once a second, with how many there were, rather than one
/// line per retry.
#[derive(Default)]
struct AcceptFailures {
    count: u64,
    logged: Option<std::time::Instant>,
}

impl AcceptFailures {
    fn failed(&mut self, e: &std::io::Error) {
        self.count += 1;
        if self
            .logged
            .is_none_or(|at| at.elapsed() >= Duration::from_secs(1))
        {
            tracing::warn!(error = %e, failures = self.count, "accept failed; retrying");
            self.logged = Some(std::time::Instant::now());
        }
    }

    fn reset(&mut self) {
        if self.count > 0 {
            tracing::info!(failures = self.count, "accepting again");
        }
        *self = AcceptFailures::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connections_go_to_the_worker_with_the_fewest() {
        let workers = Workers::start(3).unwrap();
        let (seen, mut seen_rx) = tokio::sync::mpsc::unbounded_channel();
        let (release, released) = watch::channel(false);
        for _ in 0..6 {
            let seen = seen.clone();
            let mut released = released.clone();
            workers.spawn(move |index| async move {
                let thread = std::thread::current().name().map(str::to_owned);
                seen.send((index, thread)).unwrap();
                let _ = released.wait_for(|r| *r).await;
            });
        }
        let mut per_worker = [0; 3];
        for _ in 0..6 {
            let (index, thread) = seen_rx.recv().await.unwrap();
            assert_eq!(thread, Some(format!("hti-guard-worker-{index}")));
            per_worker[index] += 1;
        }
        assert_eq!(per_worker, [2, 2, 2]);
        release.send(true).unwrap();
        workers.stop().await;
    }

    #[test]
    fn the_first_bytes_tell_http2_from_http1() {
        assert_eq!(speaks(b"GET / HTTP/1.1\r\n"), Some(Speaks::Http1));
        // "POST" shares the preface's first byte only.
        assert_eq!(speaks(b"POST /launch HTTP/1.1\r\n"), Some(Speaks::Http1));
        assert_eq!(speaks(b"PRI * HTTP/1.1\r\n"), Some(Speaks::Http1));
        assert_eq!(speaks(H2_PREFACE), Some(Speaks::Http2));
        // Part of the preface: not yet known.
        assert_eq!(speaks(b"P"), None);
        assert_eq!(speaks(&H2_PREFACE[..H2_PREFACE.len() - 1]), None);
    }
}
