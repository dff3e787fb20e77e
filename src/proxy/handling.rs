//! The service future of [`Proxy::handle`] ([`Handling`]) and what a request holds while
//! it waits: its [`Exchange`] with the proxy that writes it out ([`Held`]).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http::header::HeaderValue;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;

use super::exchange::Exchange;
use super::{Body, Launched, Peer, Proxy};
use crate::error::Rejection;
use crate::launch::Route;
use crate::timed::{InFlight, Tracked};
use crate::upstream::UpstreamBody;

/// A request's [`Exchange`] with the proxy that writes it out. Dropped before
/// [`Proxy::finish`] (the client went away while the request was upstream or being
/// verified), it still settles what was decided: an accepted launch is counted and audited.
pub(super) struct Held {
    pub(super) proxy: Arc<Proxy>,
    pub(super) exchange: Exchange,
}

impl Drop for Held {
    fn drop(&mut self) {
        // A no-op once `finish` has settled it.
        let proxy = &*self.proxy;
        self.exchange.settle(&proxy.metrics, &proxy.audit, None);
    }
}

impl Held {
    /// A launch, a SHOF login or the SHOF callback ([`Proxy::slow`]), then upstream when
    /// it is forwarded, then [`Proxy::finish`].
    pub(super) async fn slow(
        mut self,
        request: Request<Incoming>,
        route: Route,
        upgrade: Option<HeaderValue>,
        peer: Peer,
        in_flight: InFlight,
    ) -> Result<Response<Tracked<Body>>, Infallible> {
        let proxy = &*self.proxy;
        let exchange = &mut self.exchange;
        let outcome = match proxy.slow(request, route, exchange).await {
            Ok(Launched::Forward(mut request)) => {
                match proxy.outgoing(&mut request, &peer, &upgrade, exchange) {
                    Ok(client_upgrade) => {
                        let started = Instant::now();
                        let sent = proxy.upstream.send(request).await;
                        let now = Instant::now();
                        exchange.upstream_time = Some(now - started);
                        exchange.ended = Some(now);
                        sent.and_then(|response| proxy.returned(response, client_upgrade))
                    }
                    Err(rejection) => Err(rejection),
                }
            }
            Ok(Launched::Session(response)) => Ok(response),
            Err(rejection) => Err(rejection),
        };
        let response = proxy.finish(exchange, outcome);
        Ok(response.map(|body| Tracked::new(body, in_flight)))
    }
}

/// What a passthrough request needs once the upstream has answered.
pub(super) struct After {
    pub(super) held: Held,
    pub(super) client_upgrade: Option<OnUpgrade>,
    pub(super) started: Instant,
    pub(super) in_flight: InFlight,
}

pin_project_lite::pin_project! {
    /// The service future of [`Proxy::handle`].
    #[project = HandlingProj]
    pub(crate) enum Handling<S> {
        /// Answered without waiting: refused, or answered by the guard.
        Answered { response: Option<Response<Tracked<Body>>> },
        /// A passthrough request upstream: the upstream's answer, then `finish`.
        Upstream {
            #[pin]
            sending: S,
            after: Option<After>,
        },
        /// A launch, a SHOF login or the SHOF callback ([`Held::slow`]).
        Slow {
            future: Pin<Box<dyn Future<Output = Result<Response<Tracked<Body>>, Infallible>> + Send>>,
        },
    }
}

impl<S> Handling<S> {
    pub(super) fn answered(response: Response<Body>, in_flight: InFlight) -> Self {
        Handling::Answered {
            response: Some(response.map(|body| Tracked::new(body, in_flight))),
        }
    }
}

impl<S> Future for Handling<S>
where
    S: Future<Output = Result<Response<UpstreamBody>, Rejection>>,
{
    type Output = Result<Response<Tracked<Body>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            HandlingProj::Slow { future } => future.as_mut().poll(cx),
            // Taken once; a future polled after it completed need not answer again.
            HandlingProj::Answered { response } => match response.take() {
                Some(response) => Poll::Ready(Ok(response)),
                None => Poll::Pending,
            },
            HandlingProj::Upstream { sending, after } => {
                let Poll::Ready(sent) = sending.poll(cx) else {
                    return Poll::Pending;
                };
                let Some(After {
                    mut held,
                    client_upgrade,
                    started,
                    in_flight,
                }) = after.take()
                else {
                    return Poll::Pending;
                };
                let now = Instant::now();
                let Held { proxy, exchange } = &mut held;
                exchange.upstream_time = Some(now - started);
                exchange.ended = Some(now);
                let outcome = sent.and_then(|response| proxy.returned(response, client_upgrade));
                let response = proxy.finish(exchange, outcome);
                Poll::Ready(Ok(response.map(|body| Tracked::new(body, in_flight))))
            }
        }
    }
}
