//! Accept loops: the public listener (HTTP/1.1 and h2c on one port, or TLS with ALPN) and
//! the admin listener, each stopping on a signal and draining in-flight requests.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;
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

/// Serve the proxy until `stop` turns true, then drain for at most `grace`.
pub async fn serve_public(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    options: PublicOptions,
    stop: watch::Receiver<bool>,
) {
    let builder = Arc::new(builder(options.header_timeout));
    let header_timeout = options.header_timeout;
    let tls = options.tls.clone();
    serve(listener, stop, options.grace, move |stream, addr, stop| {
        let proxy = proxy.clone();
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
    })
    .await;
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
        move |stream, _addr, stop| {
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
    let result = tokio::select! {
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

/// The accept loop shared by both listeners. Each connection task holds a clone of
/// `alive`; draining ends when every clone is gone or `grace` is over.
async fn serve<F, Fut>(
    listener: TcpListener,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
    on_connection: F,
) where
    F: Fn(tokio::net::TcpStream, std::net::SocketAddr, watch::Receiver<bool>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (alive, mut all_done) = tokio::sync::mpsc::channel::<()>(1);
    let conn_stop = stop.clone();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, addr)) => {
                    let _ = stream.set_nodelay(true);
                    let task = on_connection(stream, addr, conn_stop.clone());
                    let alive = alive.clone();
                    tokio::spawn(async move {
                        task.await;
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
