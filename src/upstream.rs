//! The client to the module application (http, or https through rustls with the system's
//! roots): hyper's HTTP/1.1 connections kept in a pool of our own, with the connect and
//! response timeouts and their two failure kinds.
//!
//! The pool holds hyper's [`SendRequest`] handles (each connection is driven by its own
//! task, as in hyper-util's client) and is shaped for a proxy with one upstream: no pool
//! key to hash, no connector cloned per request, and a connection goes back to the pool
//! when the response body that uses it has been read to its end, not from a task spawned
//! per request to wait for that. A connection whose response was not read to the end
//! (the client went away) is closed, never reused.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::HeaderValue;
use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::body::{Body, Frame, SizeHint};
use hyper::client::conn::TrySendError;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::client::legacy::connect::HttpConnector;
use tower_service::Service;

use crate::config::{Timeouts, UpstreamConfig};
use crate::error::{Reason, Rejection, StartupError};
use crate::timed::{self, TimedBody};
use crate::wheel;

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

/// The body of a request sent upstream: the client's, passed through (ending when it stalls
/// for `timeouts.request_body`), or one the guard made.
pub(crate) type Outgoing = Either<TimedBody, Full<Bytes>>;

/// How long an unused connection stays in the pool.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// How often the pool drops connections that are closed or idle too long.
const SWEEP_EVERY: Duration = Duration::from_secs(15);

/// The module application behind the guard. A clone shares the connection pool;
/// [`Upstream::with_own_pool`] makes one that does not.
#[derive(Clone)]
pub(crate) struct Upstream {
    /// Shared with the requests in flight: a sending future owns a reference, so that it
    /// borrows nothing and can be the service future's own field.
    link: Arc<Link>,
}

#[derive(Clone)]
struct Link {
    pool: Arc<Pool>,
    connector: Connector,
    config: UpstreamConfig,
    /// `scheme://authority/`: where the connector connects.
    base: Uri,
    /// The Host header when the client's request had none.
    host: HeaderValue,
    response_timeout: Duration,
    body_timeout: Duration,
}

/// Idle connections, the most recently used last.
#[derive(Default)]
struct Pool {
    idle: Mutex<VecDeque<Idle>>,
    sweeping: AtomicBool,
}

struct Idle {
    sender: SendRequest<Outgoing>,
    since: Instant,
}

impl Pool {
    /// The most recently used connection that is still open and has not been idle for
    /// [`IDLE_TIMEOUT`] at `now`.
    fn checkout(&self, now: Instant) -> Option<SendRequest<Outgoing>> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(entry) = idle.pop_back() {
            let idle_for = now.saturating_duration_since(entry.since);
            if !entry.sender.is_closed() && idle_for < IDLE_TIMEOUT {
                return Some(entry.sender);
            }
        }
        None
    }

    fn give_back(&self, sender: SendRequest<Outgoing>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        // The start of the last request on this thread: the idle time measured from it
        // errs long, never short.
        idle.push_back(Idle {
            sender,
            since: wheel::recent(),
        });
    }

    /// Drop the connections that closed or were idle too long.
    fn sweep(&self) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let now = wheel::now();
        idle.retain(|entry| {
            !entry.sender.is_closed() && now.saturating_duration_since(entry.since) < IDLE_TIMEOUT
        });
    }
}

/// Sweep the pool every [`SWEEP_EVERY`] while it exists.
async fn sweep(pool: Weak<Pool>) {
    let mut every = tokio::time::interval(SWEEP_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every.tick().await;
    loop {
        every.tick().await;
        match pool.upgrade() {
            Some(pool) => pool.sweep(),
            None => return,
        }
    }
}

impl Upstream {
    pub(crate) fn new(config: &UpstreamConfig, timeouts: &Timeouts) -> Result<Self, StartupError> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(timeouts.upstream_connect));
        http.set_nodelay(true);
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let builder = match builder.with_provider_and_native_roots(provider.clone()) {
            Ok(builder) => builder,
            Err(e) if config.scheme == http::uri::Scheme::HTTPS => {
                return Err(StartupError::Config {
                    key: "upstream",
                    message: format!("https upstream, but no trusted root certificates: {e}"),
                });
            }
            Err(_) => {
                // A plain-http upstream needs no roots.
                let tls = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map_err(|e| StartupError::Client(e.to_string()))?
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth();
                hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls)
            }
        };
        let connector = builder.https_or_http().enable_http1().wrap_connector(http);
        let base = Uri::builder()
            .scheme(config.scheme.clone())
            .authority(config.authority.clone())
            .path_and_query("/")
            .build()
            .map_err(|e| StartupError::Config {
                key: "upstream",
                message: format!("cannot be used as a URL: {e}"),
            })?;
        let host =
            HeaderValue::from_str(config.authority.as_str()).map_err(|e| StartupError::Config {
                key: "upstream",
                message: format!("host cannot be a Host header: {e}"),
            })?;
        Ok(Upstream {
            link: Arc::new(Link {
                pool: Arc::default(),
                connector,
                config: config.clone(),
                base,
                host,
                response_timeout: timeouts.upstream_response,
                body_timeout: timeouts.request_body,
            }),
        })
    }

    /// The same upstream with a connection pool of its own: each worker thread has one, so
    /// that a request and the upstream connection it uses live on the same thread.
    pub(crate) fn with_own_pool(&self) -> Upstream {
        Upstream {
            link: Arc::new(Link {
                pool: Arc::default(),
                ..(*self.link).clone()
            }),
        }
    }

    /// A client's request body, ending with an error when it stalls for
    /// `timeouts.request_body`.
    pub(crate) fn timed(&self, body: Incoming) -> TimedBody {
        TimedBody::new(body, self.link.body_timeout)
    }

    /// A client's request body as it goes upstream.
    pub(crate) fn outgoing(&self, body: Incoming) -> Outgoing {
        Either::Left(self.timed(body))
    }

    /// The request target (origin form) upstream for a request's target; `None` when it is
    /// that already (an HTTP/1 request's path and query, no prefix to add), as most are.
    pub(crate) fn uri_for(&self, target: &Uri) -> Result<Option<Uri>, Rejection> {
        let no_prefix = self.link.config.path_prefix.is_empty();
        if no_prefix && target.scheme().is_none() && target.authority().is_none() {
            return Ok(None);
        }
        // The path was normalised and the prefix checked at load: a failure is a bug of ours.
        let cannot = || {
            Rejection::internal(
                Reason::UpstreamUnavailable,
                "request path cannot be forwarded",
            )
        };
        let pq = match (target.path_and_query(), no_prefix) {
            (Some(pq), true) => pq.clone(),
            (None, true) => PathAndQuery::from_static("/"),
            (pq, false) => {
                let pq = pq.map(PathAndQuery::as_str).unwrap_or("/");
                PathAndQuery::try_from(format!("{}{pq}", self.link.config.path_prefix))
                    .map_err(|_| cannot())?
            }
        };
        let mut parts = http::uri::Parts::default();
        parts.path_and_query = Some(pq);
        Uri::from_parts(parts).map(Some).map_err(|_| cannot())
    }

    /// The `Host` header of a request whose client sent none.
    pub(crate) fn host(&self) -> &HeaderValue {
        &self.link.host
    }

    /// Send a request (its URI from [`Upstream::uri_for`], its `Host` set) and wait for the response
    /// headers, connecting included, at most `upstream_response` (else
    /// [`Link::timed_out`]). A plain function: when the pool has a ready connection (the
    /// common case) the request goes into it here and now, and the future returned only
    /// waits for the answer, under a deadline kept beside it rather than a timeout future
    /// wrapped around it; each level of future state would be created and moved again for
    /// every request. Connecting, waiting for a busy connection and retrying on one that
    /// closed under us are boxed ([`Link::send_on_a_connection`]).
    pub(crate) fn send(
        &self,
        request: Request<Outgoing>,
    ) -> Sending<impl Future<Output = Answer> + Send + use<>> {
        let deadline = wheel::sleep(self.link.response_timeout);
        let link = self.link.clone();
        // The request began on this thread a moment ago: its clock reading will do.
        match self.link.pool.checkout(wheel::recent()) {
            Some(mut sender) if sender.is_ready() => {
                let answer = sender.try_send_request(request);
                Sending::Answer {
                    answer,
                    sender: Some(sender),
                    deadline: Some(deadline),
                    link,
                }
            }
            idle => Sending::Slow {
                future: Box::pin(link.send_on_a_connection(request, deadline, idle)),
            },
        }
    }
}

/// What a connection answers: the response, or why not, with the request if it was not
/// sent.
type Answer = Result<Response<Incoming>, TrySendError<Request<Outgoing>>>;

type Sent = Result<Response<UpstreamBody>, Rejection>;

pin_project_lite::pin_project! {
    /// The future of [`Upstream::send`].
    #[project = SendingProj]
    pub(crate) enum Sending<A> {
        /// The request is on a pooled connection: its answer, or the deadline.
        Answer {
            #[pin]
            answer: A,
            sender: Option<SendRequest<Outgoing>>,
            deadline: Option<wheel::Sleep>,
            link: Arc<Link>,
        },
        /// Connecting, waiting for a connection, or trying the next one.
        Slow { future: Pin<Box<dyn Future<Output = Sent> + Send>> },
    }
}

impl<A: Future<Output = Answer>> Future for Sending<A> {
    type Output = Sent;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Sent> {
        loop {
            let retry = match self.as_mut().project() {
                SendingProj::Slow { future } => return future.as_mut().poll(cx),
                SendingProj::Answer {
                    answer,
                    sender,
                    deadline,
                    link,
                } => {
                    let answered = match answer.poll(cx) {
                        Poll::Ready(answered) => answered,
                        Poll::Pending => {
                            return match deadline.as_mut().map(|d| Pin::new(d).poll(cx)) {
                                Some(Poll::Pending) => Poll::Pending,
                                _ => Poll::Ready(Err(link.timed_out())),
                            };
                        }
                    };
                    match (answered, sender.take()) {
                        (Ok(response), Some(sender)) => {
                            return Poll::Ready(Ok(link.pooled(response, sender)));
                        }
                        (Ok(_), None) => {
                            return Poll::Ready(Err(Rejection::internal(
                                Reason::UpstreamUnavailable,
                                "upstream answer polled after it was taken",
                            )));
                        }
                        (Err(mut e), _) => match (e.take_message(), deadline.take()) {
                            // Not sent: the pooled connection closed under us; the next one
                            // is tried, under what is left of the deadline.
                            (Some(unsent), Some(deadline)) => {
                                Box::pin(link.clone().send_on_a_connection(unsent, deadline, None))
                            }
                            _ => return Poll::Ready(Err(failed(e.error()))),
                        },
                    }
                }
            };
            self.set(Sending::Slow { future: retry });
        }
    }
}

/// The rejection of a request the upstream did not answer.
fn failed(e: &hyper::Error) -> Rejection {
    if timed::is_body_timeout(e) {
        // The client's body stalled: the upstream request is aborted (its connection
        // closed) and the client told why.
        Rejection::new(
            Reason::RequestTimeout,
            format!("upstream request aborted: {}", error_chain(e)),
        )
    } else {
        Rejection::new(
            Reason::UpstreamUnavailable,
            format!("upstream request failed: {}", error_chain(e)),
        )
    }
}

impl Link {
    /// The rejection of a response that did not come within `upstream_response`.
    fn timed_out(&self) -> Rejection {
        Rejection::new(
            Reason::UpstreamTimeout,
            format!("no response within {:?}", self.response_timeout),
        )
    }

    /// The request on a pooled connection (`first`, if given, before the pool's), or a new
    /// one; a pooled connection that closed under us is passed over for the next.
    async fn send_on_a_connection(
        self: Arc<Self>,
        mut request: Request<Outgoing>,
        mut deadline: wheel::Sleep,
        mut first: Option<SendRequest<Outgoing>>,
    ) -> Sent {
        loop {
            let (mut sender, reused) =
                match first.take().or_else(|| self.pool.checkout(wheel::now())) {
                    Some(sender) => (sender, true),
                    None => match wheel::within(&mut deadline, self.connect()).await {
                        Some(connected) => (connected?, false),
                        None => return Err(self.timed_out()),
                    },
                };
            if reused && !sender.is_ready() {
                match wheel::within(&mut deadline, sender.ready()).await {
                    Some(Ok(())) => {}
                    Some(Err(_)) => continue,
                    None => return Err(self.timed_out()),
                }
            }
            let sent = match wheel::within(&mut deadline, sender.try_send_request(request)).await {
                Some(sent) => sent,
                None => return Err(self.timed_out()),
            };
            match sent {
                Ok(response) => return Ok(self.pooled(response, sender)),
                Err(mut e) => match e.take_message() {
                    // Not sent: a pooled connection closed under us; try the next one.
                    Some(unsent) if reused => request = unsent,
                    _ => return Err(failed(e.error())),
                },
            }
        }
    }

    /// A new connection, its task spawned on the current runtime.
    async fn connect(&self) -> Result<SendRequest<Outgoing>, Rejection> {
        let failed = |e: &dyn std::error::Error| {
            Rejection::new(
                Reason::UpstreamUnavailable,
                format!("upstream connect failed: {}", error_chain(e)),
            )
        };
        let io = self
            .connector
            .clone()
            .call(self.base.clone())
            .await
            .map_err(|e| failed(&*e))?;
        let (sender, connection) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(|e| failed(&e))?;
        tokio::spawn(async move {
            if let Err(e) = connection.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended");
            }
        });
        if !self.pool.sweeping.swap(true, Ordering::Relaxed) {
            tokio::spawn(sweep(Arc::downgrade(&self.pool)));
        }
        Ok(sender)
    }

    /// The response with its connection, which goes back to the pool once the body has
    /// been read to its end (at once when there is none).
    fn pooled(
        &self,
        response: Response<Incoming>,
        sender: SendRequest<Outgoing>,
    ) -> Response<UpstreamBody> {
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            // The connection now belongs to the tunnel.
            return response.map(UpstreamBody::plain);
        }
        if response.body().is_end_stream() {
            self.pool.give_back(sender);
            return response.map(UpstreamBody::plain);
        }
        let pool = self.pool.clone();
        response.map(|body| UpstreamBody {
            body,
            back: Some((sender, pool)),
        })
    }
}

/// A response body from upstream; its connection returns to the pool when it ends.
pub(crate) struct UpstreamBody {
    body: Incoming,
    back: Option<(SendRequest<Outgoing>, Arc<Pool>)>,
}

impl UpstreamBody {
    fn plain(body: Incoming) -> UpstreamBody {
        UpstreamBody { body, back: None }
    }

    fn done(&mut self) {
        if let Some((sender, pool)) = self.back.take() {
            pool.give_back(sender);
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.done(),
            Poll::Ready(Some(Ok(_))) if this.body.is_end_stream() => this.done(),
            // A broken body: the connection is not reused.
            Poll::Ready(Some(Err(_))) => this.back = None,
            _ => {}
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

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
