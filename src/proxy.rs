//! The order of the stages, and the only place that knows it: receive -> strip reserved
//! headers -> is this a launch? -> read the token -> verify -> set trusted headers ->
//! forward. `handle` never fails; `handle_inner` uses `?` at each step and every error
//! becomes a response in `respond::error`.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use crate::config::{LaunchConfig, path};
use crate::error::{ErrorFormat, Fault, Reason, Rejection};
use crate::headers;
use crate::launch::{self, Kind, Route, Routes};
use crate::metrics::{Metrics, SessionEvent};
use crate::module_keys::ModuleKeys;
use crate::respond;
use crate::session::{self, SessionState, Sessions};
use crate::upstream::{Outgoing, Upstream, UpstreamBody};
use crate::verify::{VerifiedLaunch, Verifier};

/// The body of every response the guard returns: the upstream's, passed through, or one
/// the guard made.
pub type Body = Either<UpstreamBody, Full<Bytes>>;

/// Where a request came from.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub addr: std::net::SocketAddr,
    pub tls: bool,
}

/// The request handler of the public listener. Clones share everything, the upstream
/// connection pool included; [`Proxy::with_own_pool`] gives a worker thread its own pool.
#[derive(Clone)]
pub struct Proxy {
    module: Arc<ModuleKeys>,
    sessions: Option<Arc<Sessions>>,
    launch: LaunchConfig,
    routes: Arc<Routes>,
    allow: String,
    verifier: Arc<Verifier>,
    upstream: Upstream,
    metrics: Arc<Metrics>,
}

impl Proxy {
    pub fn new(
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
            upstream,
            metrics,
        }
    }

    /// This proxy with an upstream connection pool of its own.
    pub fn with_own_pool(&self) -> Proxy {
        Proxy {
            upstream: self.upstream.with_own_pool(),
            ..self.clone()
        }
    }

    /// Answer one request; never fails.
    pub async fn handle(&self, mut request: Request<Incoming>, peer: Peer) -> Response<Body> {
        let started = Instant::now();
        let request_id = headers::request_id(request.headers());
        let format = ErrorFormat::from_accept(request.headers().get(header::ACCEPT));
        let upgrade = match self.receive(&mut request, &request_id) {
            Ok(upgrade) => upgrade,
            Err(rejection) => {
                // The only 405 here is CONNECT's, on any path: every other method is proxied.
                let response = self.reject_allowing(&rejection, &request_id, format, ANY_METHOD);
                self.metrics
                    .request(response.status().as_u16(), started.elapsed().as_secs_f64());
                return response;
            }
        };
        let session = match &self.sessions {
            Some(sessions) => {
                sessions.read(request.headers_mut(), SystemTime::now(), &self.metrics)
            }
            None => SessionState::Disabled,
        };
        let mut response = match self
            .handle_inner(request, peer, &request_id, &session, upgrade)
            .await
        {
            Ok(response) => response,
            Err(rejection) => self.reject(&rejection, &request_id, format),
        };
        self.finish_session(&session, &mut response);
        self.metrics
            .request(response.status().as_u16(), started.elapsed().as_secs_f64());
        response
    }

    /// The first stage, before anything is matched or added: the reserved headers go, the
    /// hop-by-hop headers go (so that a client's `Connection:` list can never name a header
    /// the guard sets later), and the path is normalised, so that every match below and the
    /// upstream see the same path. Returns the websocket switch asked for, if any.
    fn receive(
        &self,
        request: &mut Request<Incoming>,
        request_id: &str,
    ) -> Result<Option<HeaderValue>, Rejection> {
        let stripped = headers::strip_reserved(request.headers_mut());
        if stripped > 0 {
            self.metrics.spoofed_stripped(stripped);
            tracing::debug!(reference = %request_id, stripped, "reserved headers removed");
        }
        let upgrade = match request.version() {
            Version::HTTP_11 => headers::upgrade_protocol(request.headers()),
            _ => None,
        };
        headers::strip_hop_by_hop(request.headers_mut(), upgrade.clone());
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
            *request.uri_mut() = origin_form
                .parse()
                .map_err(|_| Rejection::new(Reason::InvalidPath, "normalised path is not a URI"))?;
        }
        if let Some(host) = host {
            request.headers_mut().insert(header::HOST, host);
        }
        Ok(upgrade)
    }

    /// Renew or clear the session cookie on the way out, unless the response already sets
    /// it (a new launch, a logout).
    fn finish_session(&self, session: &SessionState, response: &mut Response<Body>) {
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

    /// The route `match`: every request goes one of four ways, then upstream or back.
    async fn handle_inner(
        &self,
        request: Request<Incoming>,
        peer: Peer,
        request_id: &str,
        session: &SessionState,
        upgrade: Option<HeaderValue>,
    ) -> Result<Response<Body>, Rejection> {
        let request = match self.routes.route(request.method(), request.uri().path()) {
            Route::ModuleJwks => {
                return Ok(made(respond::jwks(
                    self.module.jwks().clone(),
                    self.module.jwks_cache_control().clone(),
                )));
            }
            Route::Logout => return self.logout(&request, session),
            Route::Passthrough => self.admit(request, session)?,
            Route::Launch(kind) => {
                // Boxed: the launch's state is large, and the passthrough future that hyper
                // holds for every request stays small without it.
                match Box::pin(self.launch(request, kind, request_id)).await? {
                    Launched::Forward(request) => request,
                    Launched::Session(response) => return Ok(response),
                }
            }
        };
        self.forward(request, peer, request_id, upgrade).await
    }

    /// Logout: refused from another site, else the session cookie cleared.
    fn logout(
        &self,
        request: &Request<Incoming>,
        session: &SessionState,
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
        if matches!(session, SessionState::Valid { .. }) {
            self.metrics.session(SessionEvent::Logout);
        }
        Ok(made(respond::logged_out(
            sessions.logged_out(),
            sessions.clear_cookie(),
        )))
    }

    /// A passthrough request: the session's headers set when there is one, refused on a
    /// protected path when there is none.
    fn admit(
        &self,
        request: Request<Incoming>,
        session: &SessionState,
    ) -> Result<Request<Outgoing>, Rejection> {
        let mut request = request.map(|body| self.upstream.outgoing(body));
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
        Ok(request)
    }

    /// A launch: verified, counted and logged; then forwarded, or (with sessions) turned
    /// into a session and a 303 to the landing page.
    async fn launch(
        &self,
        request: Request<Incoming>,
        kind: Kind,
        request_id: &str,
    ) -> Result<Launched, Rejection> {
        let mut result = self.receive_launch(request, kind).await;
        let mut session_cookie = None;
        if let (Ok((launch, _)), Some(sessions)) = (&result, &self.sessions) {
            match sessions.create(launch, SystemTime::now()) {
                Ok(created) => session_cookie = Some(created),
                Err(rejection) => result = Err(rejection.with_issuer_label(launch.issuer.clone())),
            }
        }
        match &result {
            Ok((launch, _)) => {
                self.metrics.launch_accepted(launch.issuer.as_deref());
                tracing::info!(
                    reference = %request_id,
                    issuer = %launch.claims.iss,
                    jti = %launch.claims.jti,
                    "launch accepted"
                );
            }
            Err(r) => self.metrics.launch_rejected(r.issuer.as_deref(), r.reason),
        }
        let request = result?.1;
        Ok(match session_cookie {
            // With sessions the launch is not forwarded: the browser goes to the landing
            // page with its session, so a reload is a plain GET.
            Some((cookie, landing)) => {
                self.metrics.session(SessionEvent::Created);
                Launched::Session(made(respond::see_other(&landing, cookie)))
            }
            None => Launched::Forward(request),
        })
    }

    /// Read the token, verify it, and build the request that goes upstream: the token
    /// fields removed, the trusted headers set.
    async fn receive_launch(
        &self,
        request: Request<Incoming>,
        kind: Kind,
    ) -> Result<(VerifiedLaunch, Request<Outgoing>), Rejection> {
        let (mut parts, body) = request.into_parts();
        let fields = &self.launch.token_fields;
        let extracted = match kind {
            Kind::Query => launch::extract(parts.uri.query().unwrap_or("").as_bytes(), fields)?,
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
                let form = self.read_body(&parts.headers, body).await?;
                launch::extract(&form, fields)?
            }
            Kind::MethodNotAllowed | Kind::Passthrough => {
                return Err(Rejection::new(
                    Reason::MethodNotAllowed,
                    "method not accepted on a launch path",
                ));
            }
        };
        let started = Instant::now();
        let verified = self
            .verifier
            .verify(&extracted.token, SystemTime::now())
            .await;
        self.metrics.observe_verify(started.elapsed().as_secs_f64());
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

    /// Send a request to the upstream and pass its response back, a websocket switch
    /// included. The request's hop-by-hop headers went in [`Proxy::receive`].
    async fn forward(
        &self,
        mut request: Request<Outgoing>,
        peer: Peer,
        request_id: &str,
        upgrade: Option<HeaderValue>,
    ) -> Result<Response<Body>, Rejection> {
        let client_upgrade: Option<OnUpgrade> =
            upgrade.as_ref().map(|_| hyper::upgrade::on(&mut request));
        let host = request.headers().get(header::HOST).cloned();
        *request.uri_mut() = self.upstream.uri_for(request.uri().path_and_query())?;
        *request.version_mut() = Version::HTTP_11;
        let headers = request.headers_mut();
        headers::set_forwarded(headers, peer.addr.ip(), peer.tls, host);
        if let Ok(id) = HeaderValue::from_str(request_id) {
            headers.insert(headers::X_REQUEST_ID, id);
        }

        let started = Instant::now();
        let mut response = self.upstream.send(request).await?;
        self.metrics
            .observe_upstream(started.elapsed().as_secs_f64());

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

    fn reject(
        &self,
        rejection: &Rejection,
        reference: &str,
        format: ErrorFormat,
    ) -> Response<Body> {
        self.reject_allowing(rejection, reference, format, &self.allow)
    }

    /// [`Proxy::reject`] with the `Allow` list of a 405 given.
    fn reject_allowing(
        &self,
        rejection: &Rejection,
        reference: &str,
        format: ErrorFormat,
        allow: &str,
    ) -> Response<Body> {
        let reason = rejection.reason;
        let issuer = rejection.issuer.as_deref().unwrap_or("unknown");
        match reason.fault() {
            Fault::Client => tracing::info!(
                reference, reason = reason.as_str(), issuer, detail = %rejection.detail, "request rejected"
            ),
            Fault::Dependency => tracing::warn!(
                reference, reason = reason.as_str(), issuer, detail = %rejection.detail, "request failed"
            ),
        }
        let allow = (reason == Reason::MethodNotAllowed).then_some(allow);
        made(respond::error(reason, reference, format, allow))
    }
}

/// The methods proxied on a path that is not a launch path: all but CONNECT.
const ANY_METHOD: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, TRACE";

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

/// A request URI (origin form) of `path` and `query` ("" for none).
fn with_query(path: &str, query: &str) -> Result<http::Uri, Rejection> {
    let pq = if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{query}")
    };
    pq.parse()
        .map_err(|_| Rejection::new(Reason::MalformedToken, "query cannot be rebuilt"))
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
