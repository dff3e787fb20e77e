//! What the fault tests share beyond tests/common: outcomes and metrics in one call, an
//! upstream scripted by path at the byte level (resets, late answers, trickled and stalled
//! bodies), and reading a process's memory from /proc. (The upstream that counts launches
//! per `jti` and the `redis-server` processes are in tests/common.)

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::common::metrics;
use crate::common::*;

/// The bound on one step of a fault test (a fault is asserted to end well within it).
pub const LIMIT: Duration = Duration::from_secs(30);

/// One metric of `guard`, summed over the samples with these labels.
pub async fn metric(guard: &Guard, name: &str, labels: &[(&str, &str)]) -> f64 {
    metrics::value(&guard.metrics().await, name, labels)
}

/// A GET through the guard with `Accept: application/json`, bounded.
pub async fn get(client: &reqwest::Client, url: &str) -> reqwest::Response {
    within(
        LIMIT,
        url,
        client.get(url).header("accept", "application/json").send(),
    )
    .await
    .unwrap_or_else(|error| panic!("GET {url}: {error}"))
}

/// `VmRSS` and `VmHWM` of process `pid`, in KiB.
pub fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} in /proc/{pid}/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

// ---------------------------------------------------------------------------------------
// A scripted upstream.

/// The length of the body `/reset`, `/stall` and `/cut` declare.
pub const DECLARED: usize = 1_000_000;
/// What `/reset`, `/stall` and `/cut` send of it.
pub const SENT: usize = 64 * 1024;
/// The chunks `/trickle` sends, and the pause before each.
pub const TRICKLE: (usize, Duration) = (8, Duration::from_millis(300));
/// How long `/late` waits before its answer.
pub const LATE: Duration = Duration::from_secs(3);

/// An HTTP/1.1 upstream written at the byte level, keeping connections alive, answering by
/// path:
/// - `/reset`: a 200 head declaring [`DECLARED`] bytes, [`SENT`] of them, then a TCP reset;
/// - `/cut`: the same, then a clean close (FIN) short of the declared length;
/// - `/stall`: the same, then nothing for a minute;
/// - `/late`: after [`LATE`], `200` with the body `late` (on the same connection);
/// - `/trickle`: `TRICKLE.0` chunks of `chunk N\n`, each after `TRICKLE.1`;
/// - anything else: `200` with the body `ok <path>`.
pub struct Scripted {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Scripted {
    pub async fn start() -> Scripted {
        let (listener, addr) = loopback("scripted upstream").await;
        Scripted::serve(listener, addr)
    }

    /// On `addr` (a port the guard was already configured with).
    pub async fn start_on(addr: SocketAddr) -> Scripted {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .expect("bind the scripted upstream on its port");
        Scripted::serve(listener, addr)
    }

    fn serve(listener: tokio::net::TcpListener, addr: SocketAddr) -> Scripted {
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        let task = accept_each(listener, move |stream| {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(connection(stream));
        });
        Scripted {
            addr,
            accepted,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads one HTTP head (a request's or a response's), byte by byte so that nothing after it
/// is taken; `None` when the connection ends first.
pub async fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

fn answer(body: &str) -> String {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n\r\n{body}",
        body.len()
    )
}

async fn partial(stream: &mut TcpStream) -> std::io::Result<()> {
    let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {DECLARED}\r\n\r\n");
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(&vec![b'x'; SENT]).await?;
    stream.flush().await
}

/// Reads the Content-Length body of a request (launches forward theirs); chunked bodies are
/// not sent here.
async fn skip_body(stream: &mut TcpStream, head: &str) -> Option<()> {
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await.ok()?;
    Some(())
}

async fn connection(mut stream: TcpStream) {
    while let Some(head) = read_head(&mut stream).await {
        if skip_body(&mut stream, &head).await.is_none() {
            return;
        }
        let path = head.split(' ').nth(1).unwrap_or("/").to_string();
        let result = match path.as_str() {
            "/reset" => {
                let _ = partial(&mut stream).await;
                let _ = stream.set_zero_linger();
                return;
            }
            "/cut" => {
                let _ = partial(&mut stream).await;
                let _ = stream.shutdown().await;
                return;
            }
            "/stall" => {
                let _ = partial(&mut stream).await;
                tokio::time::sleep(Duration::from_secs(60)).await;
                return;
            }
            "/late" => {
                tokio::time::sleep(LATE).await;
                stream.write_all(answer("late").as_bytes()).await
            }
            "/trickle" => trickle(&mut stream).await,
            _ => {
                stream
                    .write_all(answer(&format!("ok {path}")).as_bytes())
                    .await
            }
        };
        if result.is_err() {
            return;
        }
    }
}

async fn trickle(stream: &mut TcpStream) -> std::io::Result<()> {
    let (chunks, pause) = TRICKLE;
    let body: Vec<String> = (0..chunks).map(|n| format!("chunk {n}\n")).collect();
    let length: usize = body.iter().map(String::len).sum();
    let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {length}\r\n\r\n");
    stream.write_all(head.as_bytes()).await?;
    for chunk in body {
        tokio::time::sleep(pause).await;
        stream.write_all(chunk.as_bytes()).await?;
        stream.flush().await?;
    }
    Ok(())
}
