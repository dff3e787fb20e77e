//! A mock JWKS endpoint: counts hits, serves a swappable key set with a configurable
//! `Cache-Control`, and can be switched to fail in several ways.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use super::host::{accept_each, loopback};
use super::mint::SigningKey;

/// How the endpoint answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// 200 with the current key set.
    Serve,
    /// 500 with a short text body.
    Error500,
    /// Accepts the connection and closes it without a response.
    Close,
    /// 200 with a body that is not JSON.
    NotJson,
    /// Accepts the connection and never answers (held open for a minute).
    Hang,
}

struct State {
    hits: AtomicUsize,
    document: Mutex<Value>,
    mode: Mutex<Mode>,
    cache_control: Mutex<Option<String>>,
}

/// The mock JWKS server. Every connection serves one request (no keep-alive), so each
/// fetch is a fresh connection and [`Mode::Close`] applies to it.
pub struct JwksServer {
    addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl JwksServer {
    /// Serves `{"keys": [jwk...]}` for these keys with `Cache-Control: max-age=3600`.
    pub async fn start(keys: &[&SigningKey]) -> JwksServer {
        let document = json!({"keys": keys.iter().map(|key| key.jwk()).collect::<Vec<_>>()});
        JwksServer::start_document(document).await
    }

    /// Serves an arbitrary JSON document.
    pub async fn start_document(document: Value) -> JwksServer {
        let (listener, addr) = loopback("JWKS").await;
        let state = Arc::new(State {
            hits: AtomicUsize::new(0),
            document: Mutex::new(document),
            mode: Mutex::new(Mode::Serve),
            cache_control: Mutex::new(Some("max-age=3600".to_string())),
        });
        let accept_state = state.clone();
        let task = accept_each(listener, move |stream| {
            let state = accept_state.clone();
            let mode = *state.mode.lock().unwrap();
            match mode {
                Mode::Close => {
                    state.hits.fetch_add(1, Ordering::SeqCst);
                    drop(stream);
                }
                Mode::Hang => {
                    state.hits.fetch_add(1, Ordering::SeqCst);
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_secs(60)).await;
                        drop(stream);
                    });
                }
                Mode::Serve | Mode::Error500 | Mode::NotJson => {
                    let service = service_fn(move |request| handle(state.clone(), request));
                    let connection = http1::Builder::new()
                        .keep_alive(false)
                        .serve_connection(TokioIo::new(stream), service);
                    tokio::spawn(connection);
                }
            }
        });
        JwksServer { addr, state, task }
    }

    /// The JWKS URL.
    pub fn url(&self) -> String {
        format!("http://{}/jwks", self.addr)
    }

    pub fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }

    /// Replaces the served key set.
    pub fn set_keys(&self, keys: &[&SigningKey]) {
        self.set_document(json!({"keys": keys.iter().map(|key| key.jwk()).collect::<Vec<_>>()}));
    }

    /// Replaces the served document.
    pub fn set_document(&self, document: Value) {
        *self.state.document.lock().unwrap() = document;
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.state.mode.lock().unwrap() = mode;
    }

    /// The `Cache-Control` header of successful responses (`None`: no header).
    pub fn set_cache_control(&self, value: Option<&str>) {
        *self.state.cache_control.lock().unwrap() = value.map(str::to_string);
    }

    /// Waits for `count` more hits than there are now; panics after `limit`.
    pub async fn wait_for_more_hits(&self, count: usize, limit: Duration) {
        self.wait_for_hits(self.hits() + count, limit).await;
    }

    /// Waits until the hit count reaches `count`; panics after `limit`.
    pub async fn wait_for_hits(&self, count: usize, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while self.hits() < count {
            assert!(
                tokio::time::Instant::now() < deadline,
                "JWKS reached {} hits, expected {count} within {limit:?}",
                self.hits()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(
    state: Arc<State>,
    _request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    state.hits.fetch_add(1, Ordering::SeqCst);
    let mode = *state.mode.lock().unwrap();
    let response = match mode {
        Mode::Serve | Mode::Close | Mode::Hang => {
            let body = state.document.lock().unwrap().to_string();
            let mut response = Response::new(Full::new(Bytes::from(body)));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            if let Some(value) = state.cache_control.lock().unwrap().as_deref() {
                response.headers_mut().insert(
                    CACHE_CONTROL,
                    HeaderValue::from_str(value).expect("Cache-Control value"),
                );
            }
            response
        }
        Mode::Error500 => {
            let mut response = Response::new(Full::new(Bytes::from("internal error")));
            *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            response
        }
        Mode::NotJson => {
            let mut response = Response::new(Full::new(Bytes::from("<html>not a key set</html>")));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("text/html"));
            response
        }
    };
    Ok(response)
}
