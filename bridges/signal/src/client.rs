//! One JSON-RPC connection to the signal-cli daemon: TCP or a UNIX socket
//! (one JSON document per line; a reader task matches answers to requests
//! by id, as the daemon answers out of order, and hands `receive`
//! notifications on), or HTTP (`POST /api/v1/rpc` per request, and the
//! `GET /api/v1/events` Server-Sent Events stream for messages). Ids are
//! never reused, also across connections. When the connection (or the
//! event stream) drops, every request waiting on it fails with
//! [`RpcError::Closed`] and the notification stream ends.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot};

use crate::config::Daemon;

/// Request ids, unique for the life of the process.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RpcError {
    /// The daemon answered with a JSON-RPC error.
    #[error("signal-cli answered {code}: {message}")]
    Remote {
        /// The error code (-1 user error, -3 IO, -4 identity, -5 rate limit, ...).
        code: i64,
        /// The message.
        message: String,
        /// `data` (for sends, `{"response": {timestamp, results}}`).
        data: Value,
    },
    /// The connection is gone (or never was).
    #[error("no connection to signal-cli: {0}")]
    Closed(String),
    /// No answer in time.
    #[error("signal-cli did not answer within {0:?}")]
    Timeout(Duration),
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Value, RpcError>>>>>;
type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// A live connection.
pub struct Conn {
    /// The socket's write half; `None` over HTTP.
    writer: Option<tokio::sync::Mutex<Writer>>,
    pending: Pending,
    /// Over HTTP: the client and `<base>/api/v1/rpc`.
    http: Option<(reqwest::Client, String)>,
}

impl Conn {
    /// Connects; returns the connection and its `receive` notifications
    /// (each the notification's `params`).
    ///
    /// # Errors
    /// When the daemon cannot be reached.
    pub async fn connect(
        daemon: &Daemon,
    ) -> std::io::Result<(Arc<Self>, mpsc::UnboundedReceiver<Value>)> {
        if let Daemon::Http(base) = daemon {
            return Self::connect_http(base).await;
        }
        let (reader, writer): (Box<dyn tokio::io::AsyncRead + Send + Unpin>, Writer) = match daemon
        {
            Daemon::Http(_) => unreachable!("handled above"),
            Daemon::Tcp(addr) => {
                let s = tokio::net::TcpStream::connect(addr).await?;
                s.set_nodelay(true)?;
                let (r, w) = s.into_split();
                (Box::new(r), Box::new(w))
            }
            #[cfg(unix)]
            Daemon::Unix(path) => {
                let s = tokio::net::UnixStream::connect(path).await?;
                let (r, w) = s.into_split();
                (Box::new(r), Box::new(w))
            }
            #[cfg(not(unix))]
            Daemon::Unix(_) => {
                return Err(std::io::Error::other("UNIX sockets need a UNIX system"));
            }
        };
        let pending: Pending = Arc::default();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(read_loop(BufReader::new(reader), pending.clone(), tx));
        Ok((
            Arc::new(Self {
                writer: Some(tokio::sync::Mutex::new(writer)),
                pending,
                http: None,
            }),
            rx,
        ))
    }

    /// Opens the event stream; requests are posted one by one.
    async fn connect_http(
        base: &str,
    ) -> std::io::Result<(Arc<Self>, mpsc::UnboundedReceiver<Value>)> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(std::io::Error::other)?;
        // signal-cli 0.13 sends the stream's headers only with its first
        // event or keep-alive (15 s): no short header timeout here.
        let resp = client
            .get(format!("{base}/api/v1/events"))
            .send()
            .await
            .map_err(|e| std::io::Error::other(e.without_url()))?;
        if !resp.status().is_success() {
            return Err(std::io::Error::other(format!(
                "the event stream answered {}",
                resp.status()
            )));
        }
        let pending: Pending = Arc::default();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(sse_loop(resp, pending.clone(), tx));
        Ok((
            Arc::new(Self {
                writer: None,
                pending,
                http: Some((client, format!("{base}/api/v1/rpc"))),
            }),
            rx,
        ))
    }

    async fn call_http(
        client: &reqwest::Client,
        url: &str,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> Result<Value, RpcError> {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let body = json!({"jsonrpc": "2.0", "method": method, "params": params, "id": id});
        let resp = client
            .post(url)
            .timeout(timeout)
            .json(&body)
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    RpcError::Timeout(timeout)
                } else {
                    RpcError::Closed(e.without_url().to_string())
                }
            })?;
        let v: Value = resp
            .json()
            .await
            .map_err(|e| RpcError::Closed(e.without_url().to_string()))?;
        answer_of(&v)
    }

    /// Calls `method` and waits for its answer.
    ///
    /// # Errors
    /// An [`RpcError`].
    pub async fn call(
        &self,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> Result<Value, RpcError> {
        let Some(writer) = &self.writer else {
            let (client, url) = self.http.as_ref().expect("HTTP when no socket");
            return Self::call_http(client, url, method, params, timeout).await;
        };
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().expect("pending lock").insert(id, tx);
        let mut line =
            json!({"jsonrpc": "2.0", "method": method, "params": params, "id": id}).to_string();
        line.push('\n');
        let written = {
            let mut w = writer.lock().await;
            match w.write_all(line.as_bytes()).await {
                Ok(()) => w.flush().await,
                Err(e) => Err(e),
            }
        };
        if let Err(e) = written {
            self.pending.lock().expect("pending lock").remove(&id);
            return Err(RpcError::Closed(e.to_string()));
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(RpcError::Closed("the connection closed".into())),
            Err(_) => {
                self.pending.lock().expect("pending lock").remove(&id);
                Err(RpcError::Timeout(timeout))
            }
        }
    }

    /// Whether the reader still runs (the reader task holds the other
    /// handle on the pending map, and drops it when the connection ends).
    #[must_use]
    pub fn is_open(&self) -> bool {
        Arc::strong_count(&self.pending) > 1
    }
}

async fn read_loop(
    mut reader: BufReader<Box<dyn tokio::io::AsyncRead + Send + Unpin>>,
    pending: Pending,
    notifications: mpsc::UnboundedSender<Value>,
) {
    let mut line = String::new();
    let reason = loop {
        line.clear();
        match reader.read_line(&mut line).await {
            Ok(0) => break "the daemon closed the connection".to_owned(),
            Ok(_) => {}
            Err(e) => break e.to_string(),
        }
        let v: Value = match serde_json::from_str(line.trim_end()) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "A line from signal-cli that is not JSON; skipped.");
                continue;
            }
        };
        if v.get("method").and_then(Value::as_str) == Some("receive") {
            let _ = notifications.send(v.get("params").cloned().unwrap_or(Value::Null));
            continue;
        }
        let Some(id) = v.get("id").and_then(Value::as_u64) else {
            if let Some(e) = v.get("error") {
                tracing::warn!(error = %e, "signal-cli reported an error without a request id.");
            }
            continue;
        };
        let Some(tx) = pending.lock().expect("pending lock").remove(&id) else {
            continue;
        };
        let _ = tx.send(answer_of(&v));
    };
    // Requests in flight fail now, not at their timeout.
    for (_, tx) in pending.lock().expect("pending lock").drain() {
        let _ = tx.send(Err(RpcError::Closed(reason.clone())));
    }
}

/// A JSON-RPC answer as a result.
fn answer_of(v: &Value) -> Result<Value, RpcError> {
    match v.get("error") {
        Some(e) => Err(RpcError::Remote {
            code: e.get("code").and_then(Value::as_i64).unwrap_or(0),
            message: e
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            data: e.get("data").cloned().unwrap_or(Value::Null),
        }),
        None => Ok(v.get("result").cloned().unwrap_or(Value::Null)),
    }
}

/// Reads `event:receive` / `data:{envelope,account}` events until the
/// stream ends; keep-alive comments are skipped.
async fn sse_loop(
    mut resp: reqwest::Response,
    pending: Pending,
    notifications: mpsc::UnboundedSender<Value>,
) {
    let mut buf: Vec<u8> = Vec::new();
    let mut data = String::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        buf.extend_from_slice(&chunk);
        while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
            let raw: Vec<u8> = buf.drain(..=nl).collect();
            let text = String::from_utf8_lossy(&raw);
            let line = text.trim_end_matches(['\r', '\n']);
            if line.is_empty() {
                if !data.is_empty() {
                    match serde_json::from_str::<Value>(&data) {
                        Ok(v) => {
                            let _ = notifications.send(v);
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "An event from signal-cli that is not JSON; skipped.");
                        }
                    }
                    data.clear();
                }
            } else if let Some(d) = line.strip_prefix("data:") {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(d.strip_prefix(' ').unwrap_or(d));
            }
        }
    }
    // The stream is the connection: `is_open` turns false with it.
    drop(pending);
}
