//! The order of the stages, and the only place that knows it: `receive` (strip reserved and
//! hop-by-hop headers, normalise the path, read the session) -> one `match` on the route
//! (module JWKS | logout | SHOF `callback` | `admit` | `login`: a SHOF launch, the redirect
//! to the auth server | `launch`: read the token, verify, set trusted headers)
//! -> `forward` -> `finish`. The stages use `?` and record what they decide in an
//! [`Exchange`]; `finish` alone writes it out: the error response (`respond::error`), the
//! session cookie, the metrics and the log lines, and each launch and login decision's
//! audit event (`audit`, on the target `hti_guard::audit`). `handle` never fails.

use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use crate::audit::{Auditor, Decision, Origin};
use crate::config::{Cidr, LaunchConfig, PagesConfig, path};
use crate::error::{ErrorFormat, Fault, Reason, Rejection};
use crate::headers;
use crate::launch::{self, Kind, Route, Routes};
use crate::metrics::{Metrics, SessionEvent};
use crate::module_keys::ModuleKeys;
use crate::pages;
use crate::respond;
use crate::session::{self, SessionState, Sessions};
use crate::shof::Shof;
use crate::timed::InFlight;
use crate::upstream::{Outgoing, Upstream, UpstreamBody};
use crate::verify::{VerifiedLaunch, Verifier};

/// The body of every response the guard returns: the upstream's, passed through, or one
/// the guard made.
pub(crate) type Body = Either<UpstreamBody, Full<Bytes>>;

/// Log a rejection on `target` at the level of its fault: the client's `info`, a
/// dependency's `warn`, ours `error`.
macro_rules! log_rejection {
    ($target:expr, $rejection:expr, $reference:expr) => {{
        let rejection: &Rejection = $rejection;
        let reference: &str = $reference;
        let reason = rejection.reason.as_str();
        let issuer = rejection.issuer.as_deref().unwrap_or("unknown");
        let detail = &rejection.detail;
        match rejection.fault() {
            Fault::Client => tracing::info!(
                target: $target, reference, reason, issuer, detail = %detail, "request rejected"
            ),
            Fault::Dependency => tracing::warn!(
                target: $target, reference, reason, issuer, detail = %detail, "request failed"
            ),
            Fault::Internal => tracing::error!(
                target: $target, reference, reason, issuer, detail = %detail, "internal error"
            ),
        }
    }};
}

/// Where a request came from.
#[derive(Debug, Clone)]
pub(crate) struct Peer {
    pub addr: std::net::SocketAddr,
    pub tls: bool,
    /// `addr`'s IP as `X-Forwarded-For` gets it ([`headers::client_address`]).
    pub address: HeaderValue,
}

impl Peer {
    pub(crate) fn new(addr: std::net::SocketAddr, tls: bool) -> Peer {
        Peer {
            addr,
            tls,
            address: headers::client_address(addr.ip()),
        }
    }
}

/// The request handler of the public listener. Clones share everything, the upstream
/// connection pool included; [`Proxy::with_own_pool`] gives a worker thread its own pool.
#[derive(Clone)]
pub(crate) struct Proxy {
    module: Arc<ModuleKeys>,
    pub(crate) sessions: Option<Arc<Sessions>>,
    launch: LaunchConfig,
    routes: Arc<Routes>,
    allow: String,
    verifier: Arc<Verifier>,
    /// With `[shof]` on: launches become SHOF logins, and the callback is served here.
    shof: Option<Arc<Shof>>,
    pub(crate) upstream: Upstream,
    metrics: Arc<Metrics>,
    /// Peers whose forwarding headers are kept and extended (`trusted_proxies`).
    trusted_proxies: Arc<[Cidr]>,
    /// Writes each launch and login decision's audit event.
    audit: Arc<Auditor>,
    /// `[pages]`: the portal link and the operator's templates.
    pages: Arc<PagesConfig>,
}

impl Proxy {
    pub(crate) fn new(
        module: Arc<ModuleKeys>,
        sessions: Option<Sessions>,
        launch: LaunchConfig,
        verifier: Verifier,
        upstream: Upstream,
        metrics: Arc<Metrics>,
    ) -> Self {
        let routes = Routes::new(
            launch.clone(),
            module.jwks_path().map(str::to_owned),
            sessions.as_ref().map(|s| s.logout_route()),
        );
        Proxy {
            module,
            sessions: sessions.map(Arc::new),
            allow: routes.allow(),
            routes: Arc::new(routes),
            launch,
            verifier: Arc::new(verifier),
            shof: None,
            upstream,
            metrics,
            trusted_proxies: Arc::new([]),
            audit: Arc::new(Auditor::default()),
            pages: Arc::new(PagesConfig::default()),
        }
    }

    /// This proxy's pages with `pages.portal_url` and the templates of `pages.dir`.
    pub(crate) fn with_pages(mut self, pages: PagesConfig) -> Self {
        self.pages = Arc::new(pages);
        self
    }

    /// This proxy writing audit events with `audit` (`[audit]`).
    pub(crate) fn with_audit(mut self, audit: Auditor) -> Self {
        self.audit = Arc::new(audit);
        self
    }

    /// This proxy keeping and extending the forwarding headers of peers in `cidrs`.
    pub(crate) fn with_trusted_proxies(mut self, cidrs: Vec<Cidr>) -> Self {
        self.trusted_proxies = cidrs.into();
        self
    }

    /// This proxy with SHOF logins (`[shof]`): launches become logins at the auth server,
    /// and its callback path is routed to the guard.
    pub(crate) fn with_shof(mut self, shof: Option<Arc<Shof>>) -> Self {
        let callback = shof.as_ref().map(|s| s.callback_path().to_owned());
        self.routes = Arc::new((*self.routes).clone().with_callback(callback));
        self.shof = shof;
        self
    }

    /// This proxy with an upstream connection pool of its own.
    pub(crate) fn with_own_pool(&self) -> Proxy {
        Proxy {
            upstream: self.upstream.with_own_pool(),
            ..self.clone()
        }
    }

    /// Answer one request; never fails. The request's life: [`Proxy::receive`], one
    /// `match` on its route (module JWKS, logout, [`Proxy::admit`], [`Proxy::launch`]),
    /// [`Proxy::outgoing`], the upstream, [`Proxy::returned`], then [`Proxy::finish`], which
    /// writes what the stages recorded.
    ///
    /// A plain function that runs every stage before the upstream at once and returns the
    /// service future, [`Handling`]: for a passthrough request that is the upstream's
    /// answer and what `finish` needs, nothing else. An `async fn` here would hold the
    /// request, each stage's state and the upstream's future side by side, and copy them
    /// as it created and moved each (hyper moves the service future too). The rare, large
    /// routes (launch, login, callback) are one boxed future. `overloaded` requests get
    /// their 503 here (see [`Proxy::overloaded`]), and the response body is wrapped for the
    /// connection's [`InFlight`] count.
    pub(crate) fn handle(
        self: Arc<Self>,
        mut request: Request<Incoming>,
        peer: &Peer,
        in_flight: InFlight,
        overloaded: bool,
    ) -> Handling<impl Future<Output = Result<Response<UpstreamBody>, Rejection>> + Send + use<>>
    {
        if overloaded {
            let response = self.overloaded(&request);
            return Handling::answered(response, in_flight);
        }
        let mut exchange = Exchange::new(request.headers());
        match self.run(&mut request, peer, &mut exchange) {
            Next::Forward(upgrade) => {
                let mut request = request.map(|body| self.upstream.outgoing(body));
                match self.outgoing(&mut request, peer, &upgrade, &exchange) {
                    Ok(client_upgrade) => {
                        let started = Instant::now();
                        let sending = self.upstream.send(request);
                        Handling::Upstream {
                            sending,
                            after: Some(After {
                                held: Held {
                                    proxy: self,
                                    exchange,
                                },
                                client_upgrade,
                                started,
                                in_flight,
                            }),
                        }
                    }
                    Err(rejection) => {
                        let response = self.finish(&mut exchange, Err(rejection));
                        Handling::answered(response, in_flight)
                    }
                }
            }
            Next::Done(outcome) => {
                let response = self.finish(&mut exchange, outcome);
                Handling::answered(response, in_flight)
            }
            Next::Slow(route, upgrade) => {
                let held = Held {
                    proxy: self,
                    exchange,
                };
                Handling::Slow {
                    future: Box::pin(held.slow(request, route, upgrade, peer.clone(), in_flight)),
                }
            }
        }
    }

    /// 503 `overloaded` for a request that arrives while memory is near
    /// `limits.max_memory`, with `Connection: close` so that HTTP/1 clients free their
    /// connection too (Envoy's overload actions: stop accepting requests, disable
    /// keep-alive). Built in, before any stage: no portal link, no operator template.
    fn overloaded(&self, request: &Request<Incoming>) -> Response<Body> {
        let reference = headers::request_id(request.headers());
        let format = ErrorFormat::from_accept(request.headers().get(header::ACCEPT));
        let lang = crate::pages::lang(request.headers().get(header::ACCEPT_LANGUAGE));
        let pages = crate::config::PagesConfig::default();
        let mut response = made(respond::error(
            &pages,
            Reason::Overloaded,
            &reference,
            format,
            lang,
            None,
        ));
        if request.version() < Version::HTTP_2 {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        self.metrics.refused(Reason::Overloaded);
        self.metrics.request(response.status().as_u16(), 0.0);
        response
    }

    /// The stages up to the upstream, each using `?`; what they decide goes into
    /// `exchange`.
    fn run(&self, request: &mut Request<Incoming>, peer: &Peer, exchange: &mut Exchange) -> Next {
        let upgrade = match self.receive(request, exchange) {
            Ok(upgrade) => upgrade,
            Err(rejection) => return Next::Done(Err(rejection)),
        };
        let route = self.routes.route(request.method(), request.uri().path());
        exchange.route = Some(route);
        if matches!(route, Route::Launch(_) | Route::Callback) {
            let ip = peer.addr.ip();
            exchange.origin = Origin::read(request.headers(), ip, &self.trusted_proxies);
        }
        match route {
            Route::ModuleJwks => Next::Done(Ok(made(respond::jwks(
                self.module.jwks().clone(),
                self.module.jwks_cache_control().clone(),
            )))),
            Route::Logout => Next::Done(self.logout(request, exchange)),
            Route::Passthrough => match self.admit(request, &exchange.session) {
                Ok(()) => Next::Forward(upgrade),
                Err(rejection) => Next::Done(Err(rejection)),
            },
            Route::Callback | Route::Launch(_) => Next::Slow(route, upgrade),
        }
    }

    /// The routes that wait on something other than the upstream: the SHOF callback, a
    /// SHOF login's start, a launch's verification.
    async fn slow(
        &self,
        request: Request<Incoming>,
        route: Route,
        exchange: &mut Exchange,
    ) -> Result<Launched, Rejection> {
        match route {
            Route::Callback => self
                .callback(request, exchange)
                .await
                .map(Launched::Session),
            Route::Launch(kind) if self.shof.is_some() => self
                .login(request, kind, exchange)
                .await
                .map(Launched::Session),
            Route::Launch(kind) => self.launch(request, kind, exchange).await,
            _ => Err(Rejection::internal(
                Reason::UpstreamUnavailable,
                "a fast route taken for a slow one",
            )),
        }
    }

    /// The first stage, before anything is matched or added: the reserved headers go, the
    /// hop-by-hop headers go (so that a client's `Connection:` list can never name a header
    /// the guard sets later), the path is normalised, so that every match below and the
    /// upstream see the same path, and the session cookie is read (and taken out). Returns
    /// the websocket switch asked for, if any.
    fn receive(
        &self,
        request: &mut Request<Incoming>,
        exchange: &mut Exchange,
    ) -> Result<Option<HeaderValue>, Rejection> {
        exchange.stripped = headers::strip_reserved(request.headers_mut());
        let http11 = request.version() == Version::HTTP_11;
        let upgrade = headers::strip_request_hop_by_hop(request.headers_mut(), http11);
        if request.method() == http::Method::CONNECT {
            return Err(Rejection::new(
                Reason::MethodNotAllowed,
                "CONNECT is not proxied",
            ));
        }
        let uri = request.uri();
        let normal = path::normalize(uri.path())
            .map_err(|e| Rejection::new(Reason::InvalidPath, e.detail()))?;
        // Absolute-form targets (and HTTP/2's :authority) name the host: RFC 9112 3.2.2 says
        // it wins over `Host`. The request goes on in origin form.
        let host = match uri.authority() {
            Some(authority) => {
                let host = authority.as_str().rsplit('@').next().unwrap_or_default();
                Some(HeaderValue::from_str(host).map_err(|_| {
                    Rejection::new(Reason::InvalidPath, "request authority is not a host")
                })?)
            }
            None => None,
        };
        let origin_form =
            (matches!(normal, Cow::Owned(_)) || host.is_some()).then(|| match uri.query() {
                Some(query) => format!("{normal}?{query}"),
                None => normal.into_owned(),
            });
        if let Some(origin_form) = origin_form {
            // Built from a parsed URI and a normalised path: a failure is a bug of ours.
            *request.uri_mut() = origin_form.parse().map_err(|_| {
                Rejection::internal(Reason::UpstreamUnavailable, "normalised path is not a URI")
            })?;
        }
        if let Some(host) = host {
            request.headers_mut().insert(header::HOST, host);
        }
        exchange.session = match &self.sessions {
            Some(sessions) => sessions.read(request.headers_mut(), SystemTime::now()),
            None => SessionState::Disabled,
        };
        Ok(upgrade)
    }

    /// Logout: refused from another site, else the session cookie cleared.
    fn logout(
        &self,
        request: &Request<Incoming>,
        exchange: &mut Exchange,
    ) -> Result<Response<Body>, Rejection> {
        let Some(sessions) = &self.sessions else {
            return Err(Rejection::new(Reason::NoSession, "logout without sessions"));
        };
        if session::is_cross_site(request.headers()) {
            return Err(Rejection::new(
                Reason::CrossSiteRequest,
                "logout from another site",
            ));
        }
        if matches!(exchange.session, SessionState::Valid { .. }) {
            exchange.session_change = Some(SessionEvent::Logout);
        }
        Ok(made(respond::logged_out(
            &self.pages,
            pages::lang(request.headers().get(header::ACCEPT_LANGUAGE)),
            exchange.reference(),
            sessions.logged_out(),
            sessions.clear_cookie(),
        )))
    }

    /// A SHOF launch: the login starts (the 302 to the auth server with its login cookie);
    /// nothing reaches the upstream.
    async fn login(
        &self,
        request: Request<Incoming>,
        kind: Kind,
        exchange: &mut Exchange,
    ) -> Result<Response<Body>, Rejection> {
        let started = self.begin_login(request, kind).await;
        exchange.login = Some(match started {
            Ok(_) => LoginDecision::Started,
            Err(_) => LoginDecision::Rejected,
        });
        started
    }

    async fn begin_login(
        &self,
        request: Request<Incoming>,
        kind: Kind,
    ) -> Result<Response<Body>, Rejection> {
        let (Some(shof), Some(sessions)) = (&self.shof, &self.sessions) else {
            return Err(Rejection::internal(
                Reason::LoginUnavailable,
                "a SHOF login without shof or sessions",
            ));
        };
        let (parts, body) = request.into_parts();
        let params = self.launch_params(kind, &parts, body).await?;
        Ok(made(shof.begin(&params, sessions, SystemTime::now())?))
    }

    /// The SHOF callback (GET only): the auth server's answer becomes a session and a 303
    /// to the landing page; the login cookie is cleared whatever the outcome.
    async fn callback(
        &self,
        mut request: Request<Incoming>,
        exchange: &mut Exchange,
    ) -> Result<Response<Body>, Rejection> {
        if request.method() != http::Method::GET {
            return Err(Rejection::new(
                Reason::MethodNotAllowed,
                "the login callback takes GET only",
            ));
        }
        let (Some(shof), Some(sessions)) = (&self.shof, &self.sessions) else {
            return Err(Rejection::internal(
                Reason::LoginUnavailable,
                "a SHOF callback without shof or sessions",
            ));
        };
        let query = request.uri().query().unwrap_or("").to_owned();
        let now = SystemTime::now();
        let outcome = shof
            .callback(&query, request.headers_mut(), sessions, now)
            .await;
        exchange.cookies.extend(outcome.clear);
        exchange.login_time = outcome.exchange_time;
        let decided = outcome.result.and_then(|launch| {
            let (cookie, landing) = sessions.create(&launch, now)?;
            Ok((launch, made(respond::see_other(&landing, cookie))))
        });
        match decided {
            Ok((launch, response)) => {
                exchange.session_change = Some(SessionEvent::Created);
                exchange.login = Some(LoginDecision::Accepted {
                    claims: Box::new(launch.claims),
                });
                Ok(response)
            }
            Err(rejection) => {
                exchange.login = Some(LoginDecision::Rejected);
                Err(rejection)
            }
        }
    }

    /// A passthrough request: the session's headers set when there is one, refused on a
    /// protected path when there is none.
    fn admit(
        &self,
        request: &mut Request<Incoming>,
        session: &SessionState,
    ) -> Result<(), Rejection> {
        match (session, &self.sessions) {
            (SessionState::Valid { launch, .. }, _) => {
                headers::set_trusted(request.headers_mut(), launch)?;
            }
            (_, Some(sessions)) if sessions.protects(request.uri().path()) => {
                return Err(Rejection::new(
                    Reason::NoSession,
                    "no valid session for a protected path",
                ));
            }
            _ => {}
        }
        Ok(())
    }

    /// A launch: verified (the decision recorded for `finish` to count and log); then
    /// forwarded, or (with sessions) turned into a session and a 303 to the landing page.
    async fn launch(
        &self,
        request: Request<Incoming>,
        kind: Kind,
        exchange: &mut Exchange,
    ) -> Result<Launched, Rejection> {
        let decided = match self.receive_launch(request, kind, exchange).await {
            Ok((launch, request)) => self.land(&launch, request).map(|to| (launch, to)),
            Err(rejection) => Err(rejection),
        };
        match decided {
            Ok((launch, launched)) => {
                if matches!(launched, Launched::Session(_)) {
                    exchange.session_change = Some(SessionEvent::Created);
                }
                exchange.launch = Some(LaunchDecision::Accepted {
                    issuer: launch.issuer,
                    claims: Box::new(launch.claims),
                });
                Ok(launched)
            }
            Err(rejection) => {
                exchange.launch = Some(LaunchDecision::Rejected);
                Err(rejection)
            }
        }
    }

    /// Where an accepted launch goes: upstream, or with sessions to the landing page with
    /// its session (so that a reload is a plain GET), not upstream.
    fn land(
        &self,
        launch: &VerifiedLaunch,
        request: Request<Outgoing>,
    ) -> Result<Launched, Rejection> {
        let Some(sessions) = &self.sessions else {
            return Ok(Launched::Forward(request));
        };
        let (cookie, landing) = sessions
            .create(launch, SystemTime::now())
            .map_err(|r| r.with_issuer_label(launch.issuer.clone()))?;
        Ok(Launched::Session(made(respond::see_other(
            &landing, cookie,
        ))))
    }

    /// Read the token, verify it, and build the request that goes upstream: the token
    /// fields removed, the trusted headers set.
    async fn receive_launch(
        &self,
        request: Request<Incoming>,
        kind: Kind,
        exchange: &mut Exchange,
    ) -> Result<(VerifiedLaunch, Request<Outgoing>), Rejection> {
        let (mut parts, body) = request.into_parts();
        let fields = &self.launch.token_fields;
        let params = self.launch_params(kind, &parts, body).await?;
        let extracted = launch::extract(&params, fields)?;
        let started = Instant::now();
        let verified = self
            .verifier
            .verify(&extracted.token, SystemTime::now())
            .await;
        exchange.verify_time = Some(started.elapsed());
        let verified = verified?;

        let body = match kind {
            Kind::Query => {
                parts.uri = with_query(parts.uri.path(), &extracted.rest)?;
                Bytes::new()
            }
            _ => {
                if let Some(query) = parts
                    .uri
                    .query()
                    .and_then(|q| launch::strip_token_fields(q, fields))
                {
                    parts.uri = with_query(parts.uri.path(), &query)?;
                }
                parts.headers.insert(
                    header::CONTENT_LENGTH,
                    HeaderValue::from(extracted.rest.len()),
                );
                Bytes::from(extracted.rest)
            }
        };
        headers::set_trusted(&mut parts.headers, &verified)
            .map_err(|r| r.with_issuer_label(verified.issuer.clone()))?;
        Ok((
            verified,
            Request::from_parts(parts, Either::Right(Full::new(body))),
        ))
    }

    /// A launch's parameters, urlencoded: the query of a GET launch (its body, if any, is
    /// dropped), the form body of a POST one.
    async fn launch_params(
        &self,
        kind: Kind,
        parts: &http::request::Parts,
        body: Incoming,
    ) -> Result<Bytes, Rejection> {
        match kind {
            Kind::Query => Ok(Bytes::copy_from_slice(
                parts.uri.query().unwrap_or("").as_bytes(),
            )),
            Kind::FormPost => {
                let content_type = parts
                    .headers
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok());
                if !launch::is_form(content_type) {
                    return Err(Rejection::new(
                        Reason::MissingToken,
                        "launch body is not application/x-www-form-urlencoded",
                    ));
                }
                self.read_body(&parts.headers, body).await
            }
            Kind::MethodNotAllowed | Kind::Passthrough => Err(Rejection::new(
                Reason::MethodNotAllowed,
                "method not accepted on a launch path",
            )),
        }
    }

    /// Read a launch body, at most `launch.max_body` bytes.
    async fn read_body(
        &self,
        headers: &http::HeaderMap,
        body: Incoming,
    ) -> Result<Bytes, Rejection> {
        let max = self.launch.max_body;
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max as u64) {
            return Err(Rejection::new(
                Reason::BodyTooLarge,
                "Content-Length over launch.max_body",
            ));
        }
        match Limited::new(self.upstream.timed(body), max).collect().await {
            Ok(collected) => Ok(collected.to_bytes()),
            Err(e) if crate::timed::is_body_timeout(&*e) => Err(Rejection::new(
                Reason::RequestTimeout,
                "launch body stalled",
            )),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(Rejection::new(
                Reason::BodyTooLarge,
                "body over launch.max_body",
            )),
            Err(_) => Err(Rejection::new(
                Reason::MissingToken,
                "launch body could not be read",
            )),
        }
    }

    /// The request as it goes upstream: its URI, version and forwarding headers. The
    /// request's hop-by-hop headers went in [`Proxy::receive`]. Returns the client's side of
    /// the websocket switch it asked for, if any.
    fn outgoing(
        &self,
        request: &mut Request<Outgoing>,
        peer: &Peer,
        upgrade: &Option<HeaderValue>,
        exchange: &Exchange,
    ) -> Result<Option<OnUpgrade>, Rejection> {
        let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut *request));
        let host = request.headers().get(header::HOST).cloned();
        if host.is_none() {
            request
                .headers_mut()
                .insert(header::HOST, self.upstream.host().clone());
        }
        if let Some(uri) = self.upstream.uri_for(request.uri())? {
            *request.uri_mut() = uri;
        }
        *request.version_mut() = Version::HTTP_11;
        let headers = request.headers_mut();
        let ip = peer.addr.ip();
        let trusted = self.trusted_proxies.iter().any(|c| c.contains(ip));
        headers::set_forwarded(headers, &peer.address, peer.tls, host, trusted);
        headers.insert(headers::X_REQUEST_ID, exchange.reference.clone());
        Ok(client_upgrade)
    }

    /// The upstream's response as it goes back, a websocket switch included.
    fn returned(
        &self,
        mut response: Response<UpstreamBody>,
        client_upgrade: Option<OnUpgrade>,
    ) -> Result<Response<Body>, Rejection> {
        let mut switched = None;
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            // Only the websocket switch the client asked for is passed on: a 101 to anything
            // else would open a tunnel past the header rules.
            let upgrade = response.headers().get(header::UPGRADE);
            let Some(client) = client_upgrade.filter(|_| headers::is_websocket(upgrade)) else {
                return Err(Rejection::new(
                    Reason::UpstreamUnavailable,
                    "upstream switched protocols without a websocket upgrade asked for",
                ));
            };
            switched = upgrade.cloned();
            let upstream = hyper::upgrade::on(&mut response);
            tokio::spawn(tunnel(client, upstream));
        }
        headers::strip_hop_by_hop(response.headers_mut(), switched);
        Ok(response.map(Either::Left))
    }

    /// The last stage, for every request: the error response of a rejection, the session
    /// cookie, the metrics and the log lines, audit line included, from what the stages
    /// recorded in `exchange`.
    fn finish(
        &self,
        exchange: &mut Exchange,
        outcome: Result<Response<Body>, Rejection>,
    ) -> Response<Body> {
        let mut response = match outcome {
            Ok(response) => response,
            Err(rejection) => {
                let reference = exchange.reference();
                // The only 405 before routing is CONNECT's, on any path: every other method
                // is proxied.
                let allow = match exchange.route {
                    Some(Route::Callback) => "GET",
                    Some(_) => self.allow.as_str(),
                    None => ANY_METHOD,
                };
                let allow = (rejection.reason == Reason::MethodNotAllowed).then_some(allow);
                let lang = pages::lang(exchange.accept_language.as_ref());
                let response = made(respond::error(
                    &self.pages,
                    rejection.reason,
                    reference,
                    exchange.format,
                    lang,
                    allow,
                ));
                let status = Some(response.status().as_u16());
                if let Some(LaunchDecision::Rejected) = exchange.launch {
                    self.metrics
                        .launch_rejected(rejection.issuer.as_deref(), rejection.reason);
                    exchange.audit(
                        &self.audit,
                        Decision::Launch,
                        None,
                        Some(&rejection),
                        status,
                    );
                } else if let Some(LoginDecision::Rejected) = exchange.login {
                    self.metrics.login_rejected(rejection.reason);
                    let decision = match exchange.route {
                        Some(Route::Callback) => Decision::LoginCallback,
                        _ => Decision::LoginStart,
                    };
                    exchange.audit(&self.audit, decision, None, Some(&rejection), status);
                } else {
                    log_rejection!(module_path!(), &rejection, reference);
                }
                response
            }
        };
        exchange.settle(&self.metrics, &self.audit, Some(response.status().as_u16()));
        self.set_session_cookie(&exchange.session, &mut response);
        for cookie in exchange.cookies.drain(..) {
            response.headers_mut().append(header::SET_COOKIE, cookie);
        }
        if let Some(upstream) = exchange.upstream_time {
            self.metrics.observe_upstream(upstream.as_secs_f64());
        }
        let ended = exchange.ended.unwrap_or_else(Instant::now);
        self.metrics.request(
            response.status().as_u16(),
            ended
                .saturating_duration_since(exchange.started)
                .as_secs_f64(),
        );
        response
    }

    /// Renew or clear the session cookie on the way out, unless the response already sets
    /// it (a new launch, a logout).
    fn set_session_cookie(&self, session: &SessionState, response: &mut Response<Body>) {
        let Some(sessions) = &self.sessions else {
            return;
        };
        let prefix = format!("{}=", sessions.cookie_name());
        let sets_ours = response
            .headers()
            .get_all(header::SET_COOKIE)
            .iter()
            .any(|v| v.as_bytes().starts_with(prefix.as_bytes()));
        if sets_ours {
            return;
        }
        let cookie = match session {
            SessionState::Valid {
                renew: Some(fresh), ..
            } => fresh.clone(),
            SessionState::Invalid | SessionState::Expired => sessions.clear_cookie(),
            _ => return,
        };
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
}

/// The methods proxied on a path that is not a launch path: all but CONNECT.
const ANY_METHOD: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, TRACE";

/// Where [`Proxy::run`] leaves a request (which stays with the caller, so that it is not
/// moved through each stage and back).
enum Next {
    /// Answered (or refused) without the upstream.
    Done(Result<Response<Body>, Rejection>),
    /// A passthrough request for the upstream, with the websocket switch it asked for.
    Forward(Option<HeaderValue>),
    /// A launch, a SHOF login or the SHOF callback: [`Proxy::slow`].
    Slow(Route, Option<HeaderValue>),
}

/// What an accepted launch becomes.
enum Launched {
    /// The request to forward, token fields removed and trusted headers set.
    Forward(Request<Outgoing>),
    /// With sessions: the 303 to the landing page with the session cookie.
    Session(Response<Body>),
}

/// A response the guard made, as the proxy's body.
fn made(response: respond::Made) -> Response<Body> {
    response.map(Either::Right)
}

/// A request URI (origin form) of `path` (normalised) and `query` ("" for none; re-encoded
/// by the form serializer), so a failure is a bug of ours.
fn with_query(path: &str, query: &str) -> Result<http::Uri, Rejection> {
    let pq = if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{query}")
    };
    pq.parse()
        .map_err(|_| Rejection::internal(Reason::UpstreamUnavailable, "query cannot be rebuilt"))
}

/// Copy bytes both ways once both sides have switched protocols.
async fn tunnel(client: OnUpgrade, upstream: OnUpgrade) {
    match tokio::try_join!(client, upstream) {
        Ok((client, upstream)) => {
            let mut client = TokioIo::new(client);
            let mut upstream = TokioIo::new(upstream);
            if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
                tracing::debug!(error = %e, "upgraded connection ended");
            }
        }
        Err(e) => tracing::debug!(error = %e, "protocol switch failed"),
    }
}

mod exchange;
mod handling;

use exchange::{Exchange, LaunchDecision, LoginDecision};
pub(crate) use handling::Handling;
use handling::{After, Held};

#[cfg(test)]
#[path = "proxy_tests.rs"]
mod tests;
