//! One JSON-RPC connection to the signal-cli daemon: TCP or a UNIX socket
//! (one JSON document per line; a reader task matches answers to requests
//! by id, as the daemon answers out of order, and hands `receive`
//! notifications on), or HTTP (`POST /api/v1/rpc` per request, and the
//! `GET /api/v1/events` Server-Sent Events stream for messages). Ids are
//! never reused, also across connections.
//!
//! # The account
//! A daemon started without `-a` serves every account in its data
//! directory and needs `"account"` in the params of every per-account
//! method (with two or more accounts loaded it answers -32602 otherwise, and
//! `subscribeReceive` without it subscribes to all of them). A connection
//! made [`for_account`](Conn::connect) adds it to every call but the
//! daemon-wide ones ([`Conn::call_daemon`]); a daemon started with `-a`
//! ignores it. Over HTTP the event stream is asked for that account only
//! (`/api/v1/events?account=`).
//!
//! # Bounds
//! - A line (or an SSE event, or an HTTP answer) longer than
//!   [`MAX_LINE_BYTES`] ends the connection with an error instead of
//!   growing a buffer without end.
//! - Notifications wait in a queue of [`NOTES_CAPACITY`]. When it is full
//!   the reader stops reading, so the daemon stops writing and, in manual
//!   receive mode, stops taking messages off Signal's server. Only while a
//!   request waits for its answer (which may sit behind notifications in
//!   the stream) does the reader read on, keeping up to
//!   [`NOTES_OVERFLOW`] more, so the receive loop's own requests
//!   (`getAttachment`) never deadlock against it.
//! - A request's params must not hold a string over
//!   [`MAX_STRING_CHARS`]: signal-cli's JSON reader (Jackson's default
//!   limit) refuses one by closing the connection without an answer (TCP,
//!   socket) or with -32603 (HTTP). Such a call fails at once with
//!   [`RpcError::TooLarge`], before anything is written.
//!
//! When the connection (or the event stream) drops, every request waiting
//! on it fails with [`RpcError::Closed`] at once, a request made afterwards
//! fails at once too, and the notification stream ends.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot, Notify};

use crate::config::Daemon;

/// Request ids, unique for the life of the process.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// The longest line accepted from the daemon: a `getAttachment` answer for
/// Signal's largest file (100 MiB) is about 134 MiB of base64.
pub const MAX_LINE_BYTES: usize = 140 << 20;

/// Notifications queued for the receive loop before the reader stops
/// reading (backpressure).
pub const NOTES_CAPACITY: usize = 1024;

/// Notifications the reader keeps beyond [`NOTES_CAPACITY`] while a
/// request waits for its answer.
pub const NOTES_OVERFLOW: usize = 4096;

/// The longest JSON string signal-cli reads (Jackson's default
/// `maxStringLength`; measured on 0.13.19: 20,000,000 characters pass,
/// 20,000,001 close a TCP connection and answer -32603 over HTTP).
pub const MAX_STRING_CHARS: usize = 20_000_000;

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RpcError {
    /// The daemon answered with a JSON-RPC error.
    #[error("signal-cli answered {code}: {message}")]
    Remote {
        /// The error code (see [`crate::errors`]).
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
    /// Not sent: the daemon would refuse it (a string over
    /// [`MAX_STRING_CHARS`]).
    #[error("not sent to signal-cli: {0}")]
    TooLarge(String),
}

type Answer = oneshot::Sender<Result<Value, RpcError>>;

/// Requests waiting for their answers; `Err` (the reason) once the reader
/// has ended, so that later requests fail at once.
struct Pending {
    map: Mutex<Result<HashMap<u64, Answer>, String>>,
    /// Rung when a request is added (a reader waiting for queue space
    /// reads on, since the answer may be behind notifications).
    added: Notify,
}

impl Pending {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            map: Mutex::new(Ok(HashMap::new())),
            added: Notify::new(),
        })
    }

    fn insert(&self, id: u64, tx: Answer) -> Result<(), RpcError> {
        match &mut *self.map.lock().expect("pending lock") {
            Ok(map) => {
                map.insert(id, tx);
                self.added.notify_one();
                Ok(())
            }
            Err(reason) => Err(RpcError::Closed(reason.clone())),
        }
    }

    fn remove(&self, id: u64) -> Option<Answer> {
        match &mut *self.map.lock().expect("pending lock") {
            Ok(map) => map.remove(&id),
            Err(_) => None,
        }
    }

    fn waiting(&self) -> bool {
        matches!(&*self.map.lock().expect("pending lock"), Ok(m) if !m.is_empty())
    }

    fn is_open(&self) -> bool {
        self.map.lock().expect("pending lock").is_ok()
    }

    /// The connection ended: every waiting request fails now, later ones at
    /// once.
    fn close(&self, reason: &str) {
        let old = std::mem::replace(
            &mut *self.map.lock().expect("pending lock"),
            Err(reason.to_owned()),
        );
        for (_, tx) in old.into_iter().flatten() {
            let _ = tx.send(Err(RpcError::Closed(reason.to_owned())));
        }
    }
}

type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// A live connection.
pub struct Conn {
    /// The socket's write half; `None` over HTTP.
    writer: Option<tokio::sync::Mutex<Writer>>,
    pending: Arc<Pending>,
    /// Over HTTP: the client and `<base>/api/v1/rpc`.
    http: Option<(reqwest::Client, String)>,
    /// Added as `account` to every per-account call.
    account: Option<String>,
}

/// The `receive` notifications of a connection (each the notification's
/// `params`; over HTTP the event's `{envelope, account}`).
pub type Notes = mpsc::Receiver<Value>;

impl Conn {
    /// Connects for `account` (added to every per-account call; `None` for
    /// none); returns the connection and its `receive` notifications.
    ///
    /// # Errors
    /// When the daemon cannot be reached.
    pub async fn connect(
        daemon: &Daemon,
        account: Option<&str>,
    ) -> std::io::Result<(Arc<Self>, Notes)> {
        if let Daemon::Http(base) = daemon {
            return Self::connect_http(base, account).await;
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
        let pending = Pending::new();
        let (tx, rx) = mpsc::channel(NOTES_CAPACITY);
        tokio::spawn(read_loop(BufReader::new(reader), pending.clone(), tx));
        Ok((
            Arc::new(Self {
                writer: Some(tokio::sync::Mutex::new(writer)),
                pending,
                http: None,
                account: account.map(str::to_owned),
            }),
            rx,
        ))
    }

    /// Opens the event stream; requests are posted one by one.
    async fn connect_http(
        base: &str,
        account: Option<&str>,
    ) -> std::io::Result<(Arc<Self>, Notes)> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(std::io::Error::other)?;
        // signal-cli 0.13 sends the stream's headers only with its first
        // event or keep-alive (15 s): no short header timeout here.
        let mut events = format!("{base}/api/v1/events");
        if let Some(account) = account {
            events.push_str("?account=");
            events.push_str(&url_encode(account));
        }
        let resp = client
            .get(events)
            .send()
            .await
            .map_err(|e| std::io::Error::other(e.without_url()))?;
        if !resp.status().is_success() {
            // 400: the daemon has no such account.
            return Err(std::io::Error::other(format!(
                "the event stream answered {}",
                resp.status()
            )));
        }
        let pending = Pending::new();
        let (tx, rx) = mpsc::channel(NOTES_CAPACITY);
        tokio::spawn(sse_loop(resp, pending.clone(), tx));
        Ok((
            Arc::new(Self {
                writer: None,
                pending,
                http: Some((client, format!("{base}/api/v1/rpc"))),
                account: account.map(str::to_owned),
            }),
            rx,
        ))
    }

    async fn call_http(
        &self,
        client: &reqwest::Client,
        url: &str,
        body: Value,
        timeout: Duration,
    ) -> Result<Value, RpcError> {
        if !self.pending.is_open() {
            return Err(RpcError::Closed("the event stream ended".into()));
        }
        let mut resp = client
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
        let mut bytes = Vec::new();
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    if bytes.len() + chunk.len() > MAX_LINE_BYTES {
                        return Err(RpcError::Closed(format!(
                            "an answer longer than {MAX_LINE_BYTES} bytes"
                        )));
                    }
                    bytes.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) if e.is_timeout() => return Err(RpcError::Timeout(timeout)),
                Err(e) => return Err(RpcError::Closed(e.without_url().to_string())),
            }
        }
        let v: Value = serde_json::from_slice(&bytes)
            .map_err(|e| RpcError::Closed(format!("an answer that is not JSON: {e}")))?;
        answer_of(&v)
    }

    /// Calls a per-account `method` (with the connection's `account`) and
    /// waits for its answer.
    ///
    /// # Errors
    /// An [`RpcError`].
    pub async fn call(
        &self,
        method: &str,
        mut params: Value,
        timeout: Duration,
    ) -> Result<Value, RpcError> {
        if let Some(account) = &self.account {
            if !params.is_object() {
                params = json!({});
            }
            params["account"] = json!(account);
        }
        self.request(method, params, timeout).await
    }

    /// Calls a daemon-wide method (`version`, `listAccounts`), without
    /// `account`.
    ///
    /// # Errors
    /// An [`RpcError`].
    pub async fn call_daemon(&self, method: &str, timeout: Duration) -> Result<Value, RpcError> {
        self.request(method, Value::Null, timeout).await
    }

    async fn request(
        &self,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> Result<Value, RpcError> {
        if let Some(chars) = longest_string(&params).filter(|n| *n > MAX_STRING_CHARS) {
            return Err(RpcError::TooLarge(format!(
                "a parameter of {chars} characters; signal-cli reads at most {MAX_STRING_CHARS}"
            )));
        }
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let mut body = json!({"jsonrpc": "2.0", "method": method, "id": id});
        if !params.is_null() {
            body["params"] = params;
        }
        let Some(writer) = &self.writer else {
            let (client, url) = self.http.as_ref().expect("HTTP when no socket");
            return self.call_http(client, url, body, timeout).await;
        };
        let (tx, rx) = oneshot::channel();
        // A connection whose reader has ended fails here, not at the timeout.
        self.pending.insert(id, tx)?;
        let mut line = body.to_string();
        line.push('\n');
        let written = {
            let mut w = writer.lock().await;
            match w.write_all(line.as_bytes()).await {
                Ok(()) => w.flush().await,
                Err(e) => Err(e),
            }
        };
        if let Err(e) = written {
            self.pending.remove(id);
            return Err(RpcError::Closed(e.to_string()));
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(RpcError::Closed("the connection closed".into())),
            Err(_) => {
                self.pending.remove(id);
                Err(RpcError::Timeout(timeout))
            }
        }
    }

    /// Whether the reader (or the event stream) still runs.
    #[must_use]
    pub fn is_open(&self) -> bool {
        self.pending.is_open()
    }
}

/// The length in characters (UTF-16 units, as Java counts) of the longest
/// string in `v`, if any.
fn longest_string(v: &Value) -> Option<usize> {
    match v {
        // Only long strings are worth counting exactly.
        Value::String(s) if s.len() > MAX_STRING_CHARS => Some(s.encode_utf16().count()),
        Value::String(s) => Some(s.len().min(MAX_STRING_CHARS)),
        Value::Array(items) => items.iter().filter_map(longest_string).max(),
        Value::Object(map) => map.values().filter_map(longest_string).max(),
        _ => None,
    }
}

/// Percent-encodes a query value (an E.164 number's `+` above all).
fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Reads one `\n`-terminated line into `buf` (cleared first), at most
/// `max` bytes; `Ok(0)` at the end of the stream. A longer line is an
/// error, read no further.
async fn read_bounded_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<usize> {
    buf.clear();
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(buf.len());
        }
        let (take, done) = match available.iter().position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (available.len(), false),
        };
        if buf.len() + take > max {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("a line from signal-cli longer than {max} bytes"),
            ));
        }
        buf.extend_from_slice(&available[..take]);
        reader.consume(take);
        if done {
            return Ok(buf.len());
        }
    }
}

async fn read_loop(
    mut reader: BufReader<Box<dyn tokio::io::AsyncRead + Send + Unpin>>,
    pending: Arc<Pending>,
    notifications: mpsc::Sender<Value>,
) {
    let mut line = Vec::new();
    let mut overflow: VecDeque<Value> = VecDeque::new();
    let reason = loop {
        // Hand on what waits, as far as the queue takes it.
        while let Some(front) = overflow.pop_front() {
            match notifications.try_send(front) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(v)) => {
                    overflow.push_front(v);
                    break;
                }
                // Nobody listens any more: the connection is being dropped.
                Err(mpsc::error::TrySendError::Closed(_)) => overflow.clear(),
            }
        }
        // A full queue: stop reading (backpressure), unless a request waits
        // for an answer that may be behind the notifications.
        if !overflow.is_empty() && (overflow.len() >= NOTES_OVERFLOW || !pending.waiting()) {
            tokio::select! {
                permit = notifications.reserve() => match permit {
                    Ok(p) => p.send(overflow.pop_front().expect("not empty")),
                    Err(_) => overflow.clear(),
                },
                () = pending.added.notified() => {}
            }
            continue;
        }
        match read_bounded_line(&mut reader, &mut line, MAX_LINE_BYTES).await {
            Ok(0) => break "the daemon closed the connection".to_owned(),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "Closing the connection to signal-cli.");
                break e.to_string();
            }
        }
        let v: Value = match serde_json::from_slice(&line) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "A line from signal-cli that is not JSON; skipped.");
                continue;
            }
        };
        if v.get("method").and_then(Value::as_str) == Some("receive") {
            // Taken, not cloned: a message is read once.
            let params = match v {
                Value::Object(mut m) => m.remove("params"),
                _ => None,
            };
            overflow.push_back(params.unwrap_or(Value::Null));
            continue;
        }
        let Some(id) = v.get("id").and_then(Value::as_u64) else {
            if let Some(e) = v.get("error") {
                tracing::warn!(error = %e, "signal-cli reported an error without a request id.");
            }
            continue;
        };
        if let Some(tx) = pending.remove(id) {
            let _ = tx.send(answer_of(&v));
        }
    };
    // What was read is handed on before the stream ends.
    for v in overflow {
        if notifications.send(v).await.is_err() {
            break;
        }
    }
    pending.close(&reason);
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
/// stream ends; keep-alive comments are skipped. An event longer than
/// [`MAX_LINE_BYTES`] ends the stream.
async fn sse_loop(
    mut resp: reqwest::Response,
    pending: Arc<Pending>,
    notifications: mpsc::Sender<Value>,
) {
    let mut buf: Vec<u8> = Vec::new();
    let mut data = String::new();
    let reason = 'stream: loop {
        let chunk = match resp.chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break "the event stream ended".to_owned(),
            Err(e) => break e.without_url().to_string(),
        };
        buf.extend_from_slice(&chunk);
        while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
            let raw: Vec<u8> = buf.drain(..=nl).collect();
            let text = String::from_utf8_lossy(&raw);
            let line = text.trim_end_matches(['\r', '\n']);
            if line.is_empty() {
                if !data.is_empty() {
                    match serde_json::from_str::<Value>(&data) {
                        Ok(v) => {
                            // Backpressure: the stream waits for the queue.
                            if notifications.send(v).await.is_err() {
                                break 'stream "nobody reads the events".to_owned();
                            }
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
        if buf.len() + data.len() > MAX_LINE_BYTES {
            tracing::warn!("An event from signal-cli longer than the limit; closing the stream.");
            break format!("an event from signal-cli longer than {MAX_LINE_BYTES} bytes");
        }
    };
    // The stream is the connection: `is_open` turns false with it.
    pending.close(&reason);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_runaway_line_is_an_error_not_an_allocation() {
        let mut input: &[u8] = b"{\"a\":1}\nxxxxxxxxxxxxxxxxxxxx\n";
        let mut reader = BufReader::with_capacity(4, &mut input);
        let mut buf = Vec::new();
        assert_eq!(
            read_bounded_line(&mut reader, &mut buf, 10).await.unwrap(),
            8
        );
        let e = read_bounded_line(&mut reader, &mut buf, 10)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
        assert!(buf.len() <= 10);
    }

    /// A connection whose reader has ended fails a call at once (with the
    /// reason), instead of writing into it and waiting out the timeout.
    #[cfg(feature = "fake")]
    #[tokio::test]
    async fn a_call_on_a_dead_connection_fails_at_once() {
        use crate::fake::{FakeOptions, FakeSignal};
        let signal = FakeSignal::start(FakeOptions::default()).await.unwrap();
        let daemon = Daemon::Tcp(signal.tcp_addr().to_string());
        let (conn, _notes) = Conn::connect(&daemon, Some("+15550000001")).await.unwrap();
        let long = Duration::from_secs(3600);
        assert!(conn.call_daemon("version", long).await.is_ok());
        signal.drop_connections().await;
        while conn.is_open() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // An hour's timeout: only an immediate failure ends this in time.
        let answer =
            tokio::time::timeout(Duration::from_secs(30), conn.call_daemon("version", long))
                .await
                .expect("failed at once, not at the timeout");
        assert!(matches!(answer, Err(RpcError::Closed(_))), "{answer:?}");
        signal.stop().await;
    }

    /// Notifications nobody takes stop the reader (the daemon's writes
    /// then wait): the queue holds at most its capacity, however many the
    /// daemon has; all of them arrive, in order, once they are taken.
    #[cfg(feature = "fake")]
    #[tokio::test]
    async fn notifications_are_bounded_and_push_back() {
        use crate::fake::{FakeOptions, FakeSignal, ReceiveMode};
        let signal = FakeSignal::start(FakeOptions {
            receive_mode: ReceiveMode::Manual,
            ..FakeOptions::default()
        })
        .await
        .unwrap();
        let daemon = Daemon::Tcp(signal.tcp_addr().to_string());
        let (conn, mut notes) = Conn::connect(&daemon, Some("+15550000001")).await.unwrap();
        let t = Duration::from_secs(30);
        conn.call("subscribeReceive", json!({}), t).await.unwrap();
        // About 12 MB of notifications: far more than a socket buffers.
        let body = "y".repeat(3000);
        let n = NOTES_CAPACITY * 4;
        for i in 0..n {
            signal.inject_message(
                "+15550000002",
                None,
                json!({"message": format!("{i} {body}")}),
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(notes.len() <= NOTES_CAPACITY, "{} queued", notes.len());
        // A call still gets its answer while the queue is full.
        assert!(conn.call_daemon("version", t).await.is_ok());
        for i in 0..n {
            let v = tokio::time::timeout(t, notes.recv())
                .await
                .unwrap()
                .unwrap();
            let text = v["result"]["envelope"]["dataMessage"]["message"]
                .as_str()
                .unwrap()
                .to_owned();
            assert!(text.starts_with(&format!("{i} ")), "{i}: {}", &text[..10]);
        }
        signal.stop().await;
    }

    #[test]
    fn strings_are_measured_as_java_does() {
        assert_eq!(longest_string(&json!({"a": ["xy", "abc"]})), Some(3));
        assert_eq!(url_encode("+15550000001"), "%2B15550000001");
    }
}
