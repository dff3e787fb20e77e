//! The pooled client to the module application (http, or https through rustls with the
//! system's roots), with the connect and response timeouts and their two failure kinds.

use std::sync::Arc;
use std::time::Duration;

use http::uri::PathAndQuery;
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::config::{Timeouts, UpstreamConfig};
use crate::error::{Reason, Rejection, StartupError};
use crate::proxy::Body;

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

/// The module application behind the guard. A clone shares the connection pool;
/// [`Upstream::with_own_pool`] makes one that does not.
#[derive(Clone)]
pub struct Upstream {
    client: Client<Connector, Body>,
    connector: Connector,
    config: UpstreamConfig,
    response_timeout: Duration,
}

fn pooled_client(connector: Connector) -> Client<Connector, Body> {
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_timer(TokioTimer::new())
        .build(connector)
}

impl Upstream {
    pub fn new(config: &UpstreamConfig, timeouts: &Timeouts) -> Result<Self, StartupError> {
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
        Ok(Upstream {
            client: pooled_client(connector.clone()),
            connector,
            config: config.clone(),
            response_timeout: timeouts.upstream_response,
        })
    }

    /// The same upstream with a connection pool of its own: each worker thread has one, so
    /// that a request and the upstream connection it uses live on the same thread.
    pub fn with_own_pool(&self) -> Upstream {
        Upstream {
            client: pooled_client(self.connector.clone()),
            ..self.clone()
        }
    }

    /// The upstream URI for a request's path and query.
    pub fn uri_for(&self, path_and_query: Option<&PathAndQuery>) -> Result<Uri, Rejection> {
        let pq = path_and_query.map(PathAndQuery::as_str).unwrap_or("/");
        let pq = if self.config.path_prefix.is_empty() {
            PathAndQuery::try_from(pq)
        } else {
            PathAndQuery::try_from(format!("{}{pq}", self.config.path_prefix))
        }
        .map_err(|_| {
            Rejection::new(
                Reason::UpstreamUnavailable,
                "request path cannot be forwarded",
            )
        })?;
        Uri::builder()
            .scheme(self.config.scheme.clone())
            .authority(self.config.authority.clone())
            .path_and_query(pq)
            .build()
            .map_err(|_| {
                Rejection::new(Reason::UpstreamUnavailable, "upstream URI cannot be built")
            })
    }

    /// Send a request and wait for the response headers, at most `upstream_response`.
    pub async fn send(&self, request: Request<Body>) -> Result<Response<Incoming>, Rejection> {
        match tokio::time::timeout(self.response_timeout, self.client.request(request)).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) => {
                let kind = if e.is_connect() { "connect" } else { "request" };
                Err(Rejection::new(
                    Reason::UpstreamUnavailable,
                    format!("upstream {kind} failed: {}", error_chain(&e)),
                ))
            }
            Err(_) => Err(Rejection::new(
                Reason::UpstreamTimeout,
                format!("no response within {:?}", self.response_timeout),
            )),
        }
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
