//! A mock module application: echoes each request as JSON and counts them; can be slowed,
//! streams large bodies both ways, holds a response open, and echoes WebSocket messages; and
//! [`JtiCounter`], an upstream that counts the launches it received per `jti`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{CONNECTION, CONTENT_TYPE, HeaderValue, UPGRADE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::host::{accept_each, loopback};

type Body = BoxBody<Bytes, std::io::Error>;

/// The byte at `offset` of every large body in these tests.
pub fn pattern_byte(offset: u64) -> u8 {
    (offset % 251) as u8
}

/// `len` bytes of the pattern starting at `offset`.
pub fn pattern(offset: u64, len: usize) -> Vec<u8> {
    (0..len as u64).map(|i| pattern_byte(offset + i)).collect()
}

#[derive(Default)]
struct State {
    hits: AtomicUsize,
    delay_ms: AtomicU64,
    upload_progress: AtomicU64,
    release: Notify,
}

/// The mock upstream. Paths:
/// - `/ws` with `Upgrade: websocket`: WebSocket echo;
/// - `/upload`: reads the body as a stream, checks it against [`pattern`], answers
///   `{"bytes": n, "pattern_ok": bool, ...echo without body}`;
/// - `/download?bytes=N`: streams N pattern bytes;
/// - `/hold`: sends `first\n`, waits for [`Upstream::release`], then sends `second\n`;
/// - anything else: the echo (see [`Echo`]).
///
/// `?delay_ms=N` on any path (or [`Upstream::set_delay`]) delays the response head.
/// A request header `x-echo-hop: 1` makes the response carry hop-by-hop headers.
pub struct Upstream {
    addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl Upstream {
    pub async fn start() -> Upstream {
        let (listener, addr) = loopback("upstream").await;
        let state = Arc::new(State::default());
        let accept_state = state.clone();
        let task = accept_each(listener, move |stream| {
            let state = accept_state.clone();
            let service = service_fn(move |request| handle(state.clone(), request));
            let connection = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            tokio::spawn(connection);
        });
        Upstream { addr, state, task }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests received so far (any path).
    pub fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }

    /// Delays every response head by `delay`.
    pub fn set_delay(&self, delay: Duration) {
        self.state
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Bytes of the current `/upload` body received so far.
    pub fn upload_progress(&self) -> u64 {
        self.state.upload_progress.load(Ordering::SeqCst)
    }

    /// Lets a `/hold` response finish.
    pub fn release(&self) {
        self.state.release.notify_one();
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the upstream received, as echoed back in JSON.
#[derive(Debug, Clone, Deserialize)]
pub struct Echo {
    pub method: String,
    pub uri: String,
    pub version: String,
    pub headers: Vec<(String, String)>,
    #[serde(default)]
    pub body: String,
    #[serde(default)]
    pub bytes: u64,
    #[serde(default)]
    pub pattern_ok: bool,
}

impl Echo {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// All values of header `name`.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
            .collect()
    }

    /// Header names that read as reserved `x-hti-` names (lowercased, `_` and `.` as `-`).
    pub fn hti_headers(&self) -> Vec<(String, String)> {
        self.headers
            .iter()
            .filter(|(key, _)| {
                key.to_ascii_lowercase()
                    .replace(['_', '.'], "-")
                    .starts_with("x-hti-")
            })
            .cloned()
            .collect()
    }

    /// The body as form fields, in order.
    pub fn form(&self) -> Vec<(String, String)> {
        form_urlencoded::parse(self.body.as_bytes())
            .map(|(key, value)| (key.into_owned(), value.into_owned()))
            .collect()
    }

    /// The path of the uri.
    pub fn path(&self) -> &str {
        self.uri.split('?').next().unwrap_or_default()
    }

    /// The query parameters of the uri.
    pub fn query(&self) -> Vec<(String, String)> {
        let query = self.uri.split_once('?').map(|(_, q)| q).unwrap_or_default();
        form_urlencoded::parse(query.as_bytes())
            .map(|(key, value)| (key.into_owned(), value.into_owned()))
            .collect()
    }
}

fn query_map(request: &Request<Incoming>) -> HashMap<String, String> {
    form_urlencoded::parse(request.uri().query().unwrap_or_default().as_bytes())
        .map(|(key, value)| (key.into_owned(), value.into_owned()))
        .collect()
}

/// The whole body of `request` (empty when it breaks off).
pub async fn read_body(request: Request<Incoming>) -> Bytes {
    request
        .into_body()
        .collect()
        .await
        .map(|collected| collected.to_bytes())
        .unwrap_or_default()
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

fn echo_json(request: &Request<Incoming>) -> serde_json::Value {
    let headers: Vec<(String, String)> = request
        .headers()
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_string(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    serde_json::json!({
        "method": request.method().as_str(),
        "uri": request.uri().to_string(),
        "version": format!("{:?}", request.version()),
        "headers": headers,
    })
}

fn json_response(value: serde_json::Value) -> Response<Body> {
    let mut response = Response::new(full(value.to_string()));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

async fn handle(
    state: Arc<State>,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    state.hits.fetch_add(1, Ordering::SeqCst);
    let query = query_map(&request);
    let mut delay = state.delay_ms.load(Ordering::SeqCst);
    if let Some(ms) = query.get("delay_ms").and_then(|ms| ms.parse().ok()) {
        delay = ms;
    }
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }

    let is_websocket = request
        .headers()
        .get(UPGRADE)
        .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"websocket"));
    let mut response = match request.uri().path() {
        "/ws" if is_websocket => websocket(request),
        "/upload" => upload(&state, request).await,
        "/download" => {
            let len = query.get("bytes").and_then(|n| n.parse().ok()).unwrap_or(0);
            download(len)
        }
        "/hold" => hold(state.clone()),
        _ => {
            let hop = request.headers().contains_key("x-echo-hop");
            let mut echo = echo_json(&request);
            let body = read_body(request).await;
            echo["body"] = String::from_utf8_lossy(&body).into_owned().into();
            let mut response = json_response(echo);
            if hop {
                let headers = response.headers_mut();
                headers.insert(CONNECTION, HeaderValue::from_static("x-resp-hop"));
                headers.insert("x-resp-hop", HeaderValue::from_static("secret"));
                headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
                headers.insert("x-resp-normal", HeaderValue::from_static("kept"));
            }
            response
        }
    };
    response
        .headers_mut()
        .insert("x-upstream", HeaderValue::from_static("mock"));
    Ok(response)
}

fn websocket(mut request: Request<Incoming>) -> Response<Body> {
    let Some(key) = request.headers().get("sec-websocket-key").cloned() else {
        let mut response = Response::new(full("missing sec-websocket-key"));
        *response.status_mut() = StatusCode::BAD_REQUEST;
        return response;
    };
    let upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else {
            return;
        };
        let mut socket =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        while let Some(Ok(message)) = socket.next().await {
            if message.is_close() {
                break;
            }
            if (message.is_text() || message.is_binary()) && socket.send(message).await.is_err() {
                break;
            }
        }
    });
    let mut response = Response::new(full(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(
        "sec-websocket-accept",
        HeaderValue::from_str(&derive_accept_key(key.as_bytes())).expect("accept key"),
    );
    response
}

async fn upload(state: &State, request: Request<Incoming>) -> Response<Body> {
    state.upload_progress.store(0, Ordering::SeqCst);
    let mut echo = echo_json(&request);
    let mut body = request.into_body();
    let mut offset = 0u64;
    let mut pattern_ok = true;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            pattern_ok = false;
            break;
        };
        if let Ok(data) = frame.into_data() {
            for (i, byte) in data.iter().enumerate() {
                if *byte != pattern_byte(offset + i as u64) {
                    pattern_ok = false;
                }
            }
            offset += data.len() as u64;
            state.upload_progress.store(offset, Ordering::SeqCst);
        }
    }
    echo["bytes"] = offset.into();
    echo["pattern_ok"] = pattern_ok.into();
    json_response(echo)
}

fn download(len: u64) -> Response<Body> {
    const CHUNK: u64 = 64 * 1024;
    let chunks = futures_util::stream::unfold(0u64, move |offset| async move {
        if offset >= len {
            return None;
        }
        let size = CHUNK.min(len - offset);
        let frame = Frame::data(Bytes::from(pattern(offset, size as usize)));
        Some((Ok::<_, std::io::Error>(frame), offset + size))
    });
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(chunks)));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    response
}

fn hold(state: Arc<State>) -> Response<Body> {
    let chunks = futures_util::stream::unfold(0u8, move |step| {
        let state = state.clone();
        async move {
            match step {
                0 => Some((
                    Ok::<_, std::io::Error>(Frame::data(Bytes::from("first\n"))),
                    1,
                )),
                1 => {
                    state.release.notified().await;
                    Some((Ok(Frame::data(Bytes::from("second\n"))), 2))
                }
                _ => None,
            }
        }
    });
    Response::new(BodyExt::boxed(StreamBody::new(chunks)))
}

/// An upstream answering `200 ok` to everything and counting the requests that carry
/// `X-HTI-Jti`, per jti: what the guard let through.
pub struct JtiCounter {
    addr: SocketAddr,
    seen: Arc<Mutex<HashMap<String, usize>>>,
    task: JoinHandle<()>,
}

impl JtiCounter {
    pub async fn start() -> JtiCounter {
        let (listener, addr) = loopback("jti upstream").await;
        let seen: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let record = seen.clone();
        let task = accept_each(listener, move |stream| {
            let record = record.clone();
            let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                let record = record.clone();
                async move {
                    if let Some(jti) = request.headers().get("x-hti-jti") {
                        let jti = String::from_utf8_lossy(jti.as_bytes()).into_owned();
                        *record.lock().unwrap().entry(jti).or_default() += 1;
                    }
                    let _ = request.into_body().collect().await;
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                        Bytes::from_static(b"ok"),
                    )))
                }
            });
            tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
        });
        JtiCounter { addr, seen, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests received per jti.
    pub fn seen(&self) -> HashMap<String, usize> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for JtiCounter {
    fn drop(&mut self) {
        self.task.abort();
    }
}
