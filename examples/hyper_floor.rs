//! The floor of the stack: the smallest reverse proxy hyper 1 makes, with the guard's
//! worker model (one current-thread runtime per core) and nothing else: no header work,
//! no timeouts unless asked, no metrics, no request ids. Measured next to nginx and the
//! guard by `benches/load/run.sh` (the `hyper-floor` and `floor-timers` rows) to tell the
//! cost of hyper itself from the cost of the guard.
//!
//! `cargo run --release --example hyper_floor -- LISTEN UPSTREAM [WORKERS]`, e.g.
//! `127.0.0.1:18110 127.0.0.1:18101 2`. Plain-http upstream only.

use std::cell::RefCell;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use http::{Request, Response, StatusCode, Uri};
use http_body_util::{Either, Empty};
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpSocket, TcpStream};

type Pool = Rc<RefCell<Vec<SendRequest<Incoming>>>>;
type Body = Either<Incoming, Empty<Bytes>>;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(listen), Some(upstream)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: hyper_floor LISTEN UPSTREAM [WORKERS]");
        std::process::exit(2);
    };
    let listen: SocketAddr = listen.parse().expect("LISTEN is host:port");
    let upstream: SocketAddr = upstream.parse().expect("UPSTREAM is host:port");
    let workers: usize = args.get(3).map_or(2, |w| w.parse().expect("WORKERS"));
    let threads: Vec<_> = (0..workers)
        .map(|_| std::thread::spawn(move || worker(listen, upstream)))
        .collect();
    for thread in threads {
        let _ = thread.join();
    }
}

/// One current-thread runtime with its own listening socket (SO_REUSEPORT) and pool.
fn worker(listen: SocketAddr, upstream: SocketAddr) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let socket = TcpSocket::new_v4().expect("socket");
        socket.set_reuseport(true).expect("SO_REUSEPORT");
        socket.bind(listen).expect("bind");
        let listener = socket.listen(1024).expect("listen");
        let pool: Pool = Rc::default();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let pool = pool.clone();
            tokio::task::spawn_local(async move {
                let service = service_fn(move |request| {
                    let pool = pool.clone();
                    async move { Ok::<_, Infallible>(forward(request, upstream, pool).await) }
                });
                let mut builder = hyper::server::conn::http1::Builder::new();
                if timeouts().0 {
                    builder
                        .timer(TokioTimer::new())
                        .header_read_timeout(REQUEST_HEADERS);
                }
                let _ = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}

async fn forward(
    mut request: Request<Incoming>,
    upstream: SocketAddr,
    pool: Pool,
) -> Response<Body> {
    let path = request.uri().path_and_query().cloned();
    let mut parts = http::uri::Parts::default();
    parts.path_and_query = path;
    *request.uri_mut() = Uri::from_parts(parts).unwrap_or_default();
    let sender = pool.borrow_mut().pop();
    let mut sender = match sender {
        Some(sender) => sender,
        None => match connect(upstream).await {
            Some(sender) => sender,
            None => return bad_gateway(),
        },
    };
    let sent = if timeouts().1 {
        tokio::time::timeout(UPSTREAM_RESPONSE, sender.send_request(request))
            .await
            .ok()
            .and_then(Result::ok)
    } else {
        sender.send_request(request).await.ok()
    };
    match sent {
        Some(response) => {
            tokio::task::spawn_local(async move {
                if sender.ready().await.is_ok() {
                    pool.borrow_mut().push(sender);
                }
            });
            response.map(Either::Left)
        }
        None => bad_gateway(),
    }
}

/// The guard's defaults of `timeouts.request_headers` and `timeouts.upstream_response`.
const REQUEST_HEADERS: Duration = Duration::from_secs(10);
const UPSTREAM_RESPONSE: Duration = Duration::from_secs(60);

/// With `HYPER_FLOOR_TIMEOUTS=1`, the two timers the guard keeps per request: a header read
/// timeout on the client connection and a response timeout on the upstream request
/// (`header` or `upstream`: only that one).
fn timeouts() -> (bool, bool) {
    static ON: std::sync::OnceLock<(bool, bool)> = std::sync::OnceLock::new();
    *ON.get_or_init(|| match std::env::var("HYPER_FLOOR_TIMEOUTS").as_deref() {
        Ok("1") => (true, true),
        Ok("header") => (true, false),
        Ok("upstream") => (false, true),
        _ => (false, false),
    })
}

async fn connect(upstream: SocketAddr) -> Option<SendRequest<Incoming>> {
    let stream = TcpStream::connect(upstream).await.ok()?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::task::spawn_local(connection);
    Some(sender)
}

fn bad_gateway() -> Response<Body> {
    let mut response = Response::new(Either::Right(Empty::new()));
    *response.status_mut() = StatusCode::BAD_GATEWAY;
    response
}
