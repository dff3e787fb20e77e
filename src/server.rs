//! Accept loops: the public listener (HTTP/1.1 and h2c on one port, or TLS with ALPN) and
//! the admin listener, each stopping on a signal and draining in-flight requests.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio_rustls::TlsAcceptor;

use crate::proxy::{Body, Peer, Proxy};

/// Settings of the public listener.
pub struct PublicOptions {
    pub tls: Option<TlsAcceptor>,
    pub header_timeout: Duration,
    pub grace: Duration,
}

fn builder(header_timeout: Duration) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)));
    builder
}

/// The worker threads of the public listener. Each runs a single-threaded runtime that
/// carries its connections from accept to close, with its own upstream connection pool, so
/// that a request and the upstream connection serving it wake each other on one thread
/// (nginx's worker model; measured in BENCHMARKS.md). New connections go to the worker
/// with the fewest open ones.
pub struct Workers {
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
    pub fn start(count: usize) -> std::io::Result<Workers> {
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

    pub fn len(&self) -> usize {
        self.workers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
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
    pub async fn stop(self) {
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

/// Serve the proxy until `stop` turns true, then drain for at most `grace`. Connections
/// run on `workers`, each worker with its own copy of `proxy` and its upstream pool.
pub async fn serve_public(
    listener: TcpListener,
    proxy: &Proxy,
    workers: &Workers,
    options: PublicOptions,
    stop: watch::Receiver<bool>,
) {
    let proxies: Arc<[Arc<Proxy>]> = (0..workers.len())
        .map(|_| Arc::new(proxy.with_own_pool()))
        .collect();
    let builder = Arc::new(builder(options.header_timeout));
    let header_timeout = options.header_timeout;
    let tls = options.tls.clone();
    let on_connection = move |index: usize, stream: TcpStream, addr, stop| {
        let proxy = proxies[index].clone();
        let builder = builder.clone();
        let tls = tls.clone();
        async move {
            let peer = Peer {
                addr,
                tls: tls.is_some(),
            };
            let service = service_fn(move |request: Request<Incoming>| {
                let proxy = proxy.clone();
                async move { Ok::<_, Infallible>(proxy.handle(request, peer).await) }
            });
            match tls {
                None => {
                    let conn =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    drive(conn, stop, |c| c.graceful_shutdown()).await;
                }
                Some(acceptor) => {
                    let stream =
                        match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await {
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
                    let conn =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    drive(conn, stop, |c| c.graceful_shutdown()).await;
                }
            }
        }
    };
    serve(listener, stop, options.grace, Some(workers), on_connection).await;
}

/// A plain HTTP/1.1 server for small internal endpoints (the admin listener, the demo
/// parts), until `stop` turns true.
pub async fn serve_plain<F, Fut>(listener: TcpListener, handler: F, stop: watch::Receiver<bool>)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let builder = Arc::new(builder(Duration::from_secs(10)));
    serve(
        listener,
        stop,
        Duration::from_secs(1),
        None,
        move |_worker, stream, _addr, stop| {
            let handler = handler.clone();
            let builder = builder.clone();
            async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let handler = handler.clone();
                    async move { Ok::<_, Infallible>(handler(request).await) }
                });
                let conn = builder.serve_connection(TokioIo::new(stream), service);
                drive(conn, stop, |c| c.graceful_shutdown()).await;
            }
        },
    )
    .await;
}

/// Resolves once `stop` turns true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Run a connection to its end; when `stop` turns true, `drain` asks it to finish what is
/// in flight and close.
async fn drive<C, E>(
    conn: C,
    mut stop: watch::Receiver<bool>,
    drain: impl FnOnce(std::pin::Pin<&mut C>),
) where
    C: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let mut conn = std::pin::pin!(conn);
    // Biased: the connection first, and no random draw for the branch order on every
    // wake-up of a connection.
    let result = tokio::select! {
        biased;
        result = conn.as_mut() => result,
        _ = stopped(&mut stop) => {
            drain(conn.as_mut());
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "connection ended with an error");
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
    on_connection: F,
) where
    F: Fn(usize, TcpStream, SocketAddr, watch::Receiver<bool>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let on_connection = Arc::new(on_connection);
    let (alive, mut all_done) = tokio::sync::mpsc::channel::<()>(1);
    let conn_stop = stop.clone();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, addr)) => {
                    let _ = stream.set_nodelay(true);
                    let alive = alive.clone();
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
                    // Out of file descriptors and the like: wait a moment, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
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
}
