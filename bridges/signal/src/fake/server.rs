//! The transports: one accept loop owning the TCP, UNIX-socket and HTTP
//! listeners and every connection task, so that outages and
//! `drop_connections` can close them all like a dying daemon would.
//!
//! A line session (TCP or UNIX socket) reads `\n`-terminated lines (a
//! trailing `\r` is dropped, as Java's `readLine` does), answers parse
//! errors at once, and runs every request on its own task, as signal-cli
//! runs each on a virtual thread: answers go out in completion order, and a
//! request is carried out even if its connection dies meanwhile. One
//! writer per session keeps lines whole. When the client half-closes, the
//! session finishes the requests in flight, writes their answers and closes,
//! as the daemon does at the end of its input. In auto receive modes a
//! session is subscribed when it opens.
//!
//! HTTP follows signal-cli's `HttpServerHandler` on the JDK server: contexts
//! `/api/v1/rpc`, `/api/v1/events` and `/api/v1/check` matched by prefix
//! (anything else: 404 "No context found for request"), then exact path
//! (404), method (405), for RPC the `Content-Type` (415), and with 0.14.6
//! the `Host` header (421, not for `check`). An RPC answer is 200 with the
//! JSON body, 201 with none for notifications. `/api/v1/events` streams
//! `receive` events and keep-alives; an unknown `account` is 400.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::{BodyExt, Either, Full};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE, HOST};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinSet;

use super::jsonrpc::{self, Incoming as Parsed, Request as RpcRequest};
use super::methods::{self, url_decode, Effect, Transport, MALFORMED};
use super::state::{ConnKind, Shared};
use super::{DaemonVersion, Outage, ReceiveMode};

/// Orders from the control API to the accept loop.
pub(crate) enum Control {
    /// Change the outage; answered once the listeners are closed or open.
    Outage(Outage, oneshot::Sender<io::Result<()>>),
    /// Close every connection.
    DropAll(oneshot::Sender<()>),
    /// Close everything and end.
    Stop(oneshot::Sender<()>),
}

pub(crate) struct Listeners {
    pub tcp: Option<TcpListener>,
    pub unix: Option<UnixListener>,
    pub http: Option<TcpListener>,
}

/// The accept loop.
pub(crate) async fn run(
    shared: Arc<Shared>,
    mut listeners: Listeners,
    tcp_addr: SocketAddr,
    http_addr: SocketAddr,
    socket_path: PathBuf,
    mut control: mpsc::UnboundedReceiver<Control>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            order = control.recv() => match order {
                None => break,
                Some(Control::Stop(done)) => {
                    close_all(&shared, &mut conns).await;
                    drop(listeners);
                    let _ = done.send(());
                    return;
                }
                Some(Control::DropAll(done)) => {
                    close_all(&shared, &mut conns).await;
                    let _ = done.send(());
                }
                Some(Control::Outage(outage, done)) => {
                    shared.outage.send_replace(outage);
                    let result = match outage {
                        Outage::Refuse => {
                            listeners = Listeners { tcp: None, unix: None, http: None };
                            shared.lock().down = true;
                            close_all(&shared, &mut conns).await;
                            Ok(())
                        }
                        Outage::Up | Outage::Hang => {
                            let rebound = if listeners.tcp.is_none() {
                                rebind(tcp_addr, http_addr, &socket_path).await.map(|l| listeners = l)
                            } else {
                                Ok(())
                            };
                            let mut st = shared.lock();
                            st.down = false;
                            st.frozen = outage == Outage::Hang;
                            // A fresh or thawed daemon receives again (in
                            // on-start mode with nobody to hand it to).
                            st.pump();
                            rebound
                        }
                    };
                    let _ = done.send(result);
                }
            },
            accepted = accept_tcp(listeners.tcp.as_ref()) => {
                if let Ok((stream, _)) = accepted {
                    conns.spawn(serve_lines(shared.clone(), stream));
                }
            }
            accepted = accept_unix(listeners.unix.as_ref()) => {
                if let Ok((stream, _)) = accepted {
                    conns.spawn(serve_lines::<UnixStream>(shared.clone(), stream));
                }
            }
            accepted = accept_tcp(listeners.http.as_ref()) => {
                if let Ok((stream, _)) = accepted {
                    conns.spawn(serve_http(shared.clone(), stream));
                }
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    close_all(&shared, &mut conns).await;
}

/// Aborts every connection task (their guards forget the connections) and
/// ends the SSE pumps.
async fn close_all(shared: &Shared, conns: &mut JoinSet<()>) {
    for conn in shared.lock().conns.values() {
        conn.kill.notify_one();
    }
    conns.shutdown().await;
}

async fn accept_tcp(listener: Option<&TcpListener>) -> io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(listener) => {
            let accepted = listener.accept().await;
            if accepted.is_err() {
                // Out of file descriptors and the like: do not spin.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            accepted
        }
        None => std::future::pending().await,
    }
}

async fn accept_unix(
    listener: Option<&UnixListener>,
) -> io::Result<(UnixStream, tokio::net::unix::SocketAddr)> {
    match listener {
        Some(listener) => {
            let accepted = listener.accept().await;
            if accepted.is_err() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            accepted
        }
        None => std::future::pending().await,
    }
}

/// Binds the old addresses again (retrying briefly while the kernel still
/// holds a port); the stale socket file is replaced.
async fn rebind(tcp: SocketAddr, http: SocketAddr, socket: &PathBuf) -> io::Result<Listeners> {
    async fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
        let mut attempt = 0;
        loop {
            match TcpListener::bind(addr).await {
                Ok(listener) => return Ok(listener),
                Err(e) if attempt < 100 && e.kind() == io::ErrorKind::AddrInUse => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
    let _ = std::fs::remove_file(socket);
    Ok(Listeners {
        tcp: Some(bind(tcp).await?),
        unix: Some(UnixListener::bind(socket)?),
        http: Some(bind(http).await?),
    })
}

/// Forgets a connection (and its subscriptions) however its task ends,
/// abort included.
struct ConnGuard {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.shared.lock().remove_conn(self.id);
    }
}

// ---- line sessions ----------------------------------------------------------

async fn serve_lines<S>(shared: Arc<Shared>, stream: S)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let kill = Arc::new(Notify::new());
    let guard = {
        let mut st = shared.lock();
        let id = st.add_conn(ConnKind::Line, tx.clone(), kill.clone());
        if st.mode != ReceiveMode::Manual {
            // The automatic internal subscription (unwrapped).
            st.subscribe(id, false, None);
        }
        ConnGuard {
            shared: shared.clone(),
            id,
        }
    };
    let conn = guard.id;
    let (reader, mut writer) = tokio::io::split(stream);
    let mut reader = BufReader::new(reader);
    // Every request task holds a clone; when the client stops sending, the
    // session waits for all of them to drop theirs.
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    let mut done_tx = Some(done_tx);
    let mut outage = shared.outage.subscribe();
    let mut buf = Vec::new();
    loop {
        let frozen = *outage.borrow_and_update() == Outage::Hang;
        tokio::select! {
            _ = kill.notified() => return,
            changed = outage.changed() => if changed.is_err() { return },
            read = reader.read_until(b'\n', &mut buf), if done_tx.is_some() => match read {
                // End of input; a last line without `\n` still counts (it
                // may have been read by a call that select! cancelled).
                Ok(0) if buf.is_empty() => done_tx = None,
                Ok(_) => {
                    let mut line = String::from_utf8_lossy(&buf).into_owned();
                    buf.clear();
                    if line.ends_with('\n') {
                        line.pop();
                    }
                    if line.ends_with('\r') {
                        line.pop();
                    }
                    if let Some(done) = &done_tx {
                        handle_line(&shared, conn, &line, &tx, &kill, done.clone());
                    }
                }
                Err(_) => return,
            },
            chunk = rx.recv(), if !frozen => match chunk {
                Some(chunk) => {
                    if writer.write_all(chunk.as_bytes()).await.is_err() {
                        return;
                    }
                }
                None => return,
            },
            _ = done_rx.recv(), if done_tx.is_none() => {
                // End of input and every request answered: flush and close.
                while let Ok(chunk) = rx.try_recv() {
                    if writer.write_all(chunk.as_bytes()).await.is_err() {
                        return;
                    }
                }
                let _ = writer.shutdown().await;
                return;
            }
        }
    }
}

fn handle_line(
    shared: &Arc<Shared>,
    conn: u64,
    line: &str,
    tx: &mpsc::UnboundedSender<String>,
    kill: &Arc<Notify>,
    done: mpsc::Sender<()>,
) {
    let transport = Transport::Line { conn };
    let work: Pin<Box<dyn Future<Output = (Option<String>, Effect)> + Send>> =
        match jsonrpc::parse_line(line) {
            Parsed::Reply(reply) => {
                let _ = tx.send(reply + "\n");
                return;
            }
            Parsed::Ignore => return,
            // signal-cli's reader thread dies on Jackson's exception: the
            // connection closes, nothing is answered.
            Parsed::TooLong => {
                kill.notify_one();
                return;
            }
            Parsed::Request(request) => {
                let shared = shared.clone();
                Box::pin(async move { answer_one(&shared, transport, request).await })
            }
            Parsed::Batch(items) => {
                let shared = shared.clone();
                Box::pin(async move { answer_batch(&shared, transport, items).await })
            }
        };
    let tx = tx.clone();
    let kill = kill.clone();
    let task = tokio::spawn(async move {
        let _done = done;
        let (reply, effect) = work.await;
        match effect {
            Effect::DropBefore | Effect::DropAfter => kill.notify_one(),
            Effect::Malformed => {
                let _ = tx.send(format!("{MALFORMED}\n"));
                if let Some(reply) = reply {
                    let _ = tx.send(reply + "\n");
                }
            }
            Effect::None => {
                if let Some(reply) = reply {
                    let _ = tx.send(reply + "\n");
                }
            }
        }
    });
    shared.track(task.abort_handle());
}

/// One request; the answer is `None` for a notification.
async fn answer_one(
    shared: &Arc<Shared>,
    transport: Transport,
    request: RpcRequest,
) -> (Option<String>, Effect) {
    let (result, effect) =
        methods::dispatch(shared, transport, &request.method, request.params).await;
    (request.id.map(|id| jsonrpc::response(&result, &id)), effect)
}

/// A batch: invalid elements are answered at once, the others run
/// concurrently; the array lists answers in completion order and is left
/// out when there are none.
async fn answer_batch(
    shared: &Arc<Shared>,
    transport: Transport,
    items: Vec<Value>,
) -> (Option<String>, Effect) {
    let mut answers = Vec::new();
    let mut running = JoinSet::new();
    for item in items {
        match jsonrpc::parse_request(item) {
            Ok(request) => {
                let shared = shared.clone();
                running.spawn(async move { answer_one(&shared, transport, request).await });
            }
            Err((e, id)) => answers.push(jsonrpc::response(&Err(e), &id)),
        }
    }
    let mut effect = Effect::None;
    while let Some(joined) = running.join_next().await {
        let Ok((answer, e)) = joined else { continue };
        answers.extend(answer);
        // Dropping the connection wins over a malformed line.
        if e != Effect::None && effect != Effect::DropBefore && effect != Effect::DropAfter {
            effect = e;
        }
    }
    let text = (!answers.is_empty()).then(|| format!("[{}]", answers.join(",")));
    (text, effect)
}

// ---- HTTP -----------------------------------------------------------------------

/// The error that makes hyper close a connection without answering.
#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by the fake on purpose")
    }
}

impl std::error::Error for Dropped {}

/// A streaming body fed by a channel (the SSE stream).
pub(crate) struct SseBody {
    rx: mpsc::Receiver<Bytes>,
}

impl hyper::body::Body for SseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.get_mut()
            .rx
            .poll_recv(cx)
            .map(|chunk| chunk.map(|bytes| Ok(Frame::data(bytes))))
    }
}

type Body = Either<Full<Bytes>, SseBody>;
type Reply = Response<Body>;

async fn serve_http(shared: Arc<Shared>, stream: TcpStream) {
    let service = service_fn(move |request| {
        let shared = shared.clone();
        async move { route(shared, request).await }
    });
    // Errors here are clients going away, or a deliberate drop.
    let _ = http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

fn empty(status: StatusCode) -> Reply {
    let mut reply = Response::new(Either::Left(Full::new(Bytes::new())));
    *reply.status_mut() = status;
    reply
}

fn json_reply(status: StatusCode, body: String) -> Reply {
    let mut reply = Response::new(Either::Left(Full::new(Bytes::from(body))));
    *reply.status_mut() = status;
    reply
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    reply
}

async fn route(shared: Arc<Shared>, request: Request<Incoming>) -> Result<Reply, Dropped> {
    // A frozen daemon answers nothing, not even `check`.
    shared.wait_unfrozen().await;
    let path = request.uri().path().to_string();
    if path.starts_with("/api/v1/rpc") {
        rpc(shared, request, &path).await
    } else if path.starts_with("/api/v1/events") {
        Ok(events(shared, request, &path).await)
    } else if path.starts_with("/api/v1/check") {
        Ok(if path != "/api/v1/check" {
            empty(StatusCode::NOT_FOUND)
        } else if request.method() != Method::GET {
            empty(StatusCode::METHOD_NOT_ALLOWED)
        } else {
            empty(StatusCode::OK)
        })
    } else {
        let mut reply = Response::new(Either::Left(Full::new(Bytes::from_static(
            b"<h1>404 Not Found</h1>No context found for request",
        ))));
        *reply.status_mut() = StatusCode::NOT_FOUND;
        reply
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("text/html"));
        Ok(reply)
    }
}

/// 0.14.4+: unless bound to a wildcard address, `Host` must name the bind
/// host, `localhost`, `127.0.0.1` or `::1`, with the right port if any.
fn host_allowed(shared: &Shared, request: &Request<Incoming>) -> bool {
    if shared.opts.version != DaemonVersion::V0_14_6 {
        return true;
    }
    let Some(host) = request.headers().get(HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        match rest.split_once(']') {
            Some((name, tail)) => (name.to_string(), tail.strip_prefix(':').map(str::to_string)),
            None => return false,
        }
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => {
                (name.to_string(), Some(port.to_string()))
            }
            _ => (host.to_string(), None),
        }
    };
    let name = name.to_ascii_lowercase();
    if !matches!(name.as_str(), "127.0.0.1" | "localhost" | "::1") {
        return false;
    }
    match port {
        Some(port) => port.parse::<u16>().ok() == Some(shared.http_addr.port()),
        None => true,
    }
}

async fn rpc(
    shared: Arc<Shared>,
    request: Request<Incoming>,
    path: &str,
) -> Result<Reply, Dropped> {
    if !host_allowed(&shared, &request) {
        return Ok(empty(StatusCode::MISDIRECTED_REQUEST));
    }
    if path != "/api/v1/rpc" {
        return Ok(empty(StatusCode::NOT_FOUND));
    }
    if request.method() != Method::POST {
        return Ok(empty(StatusCode::METHOD_NOT_ALLOWED));
    }
    let json = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|c| c.to_str().ok())
        .is_some_and(|c| c.starts_with("application/json"));
    if !json {
        return Ok(empty(StatusCode::UNSUPPORTED_MEDIA_TYPE));
    }
    let body = match request.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => return Err(Dropped),
    };
    let text = match std::str::from_utf8(&body) {
        Ok(text) => text.to_string(),
        Err(e) => {
            let error = jsonrpc::RpcError::new(
                jsonrpc::PARSE_ERROR,
                format!(
                    "Invalid UTF-8 start byte 0x{:02x}\n at [Source: REDACTED (`StreamReadFeature.INCLUDE_SOURCE_IN_LOCATION` disabled); line: 1, column: {}]",
                    body.get(e.valid_up_to()).copied().unwrap_or(0),
                    e.valid_up_to() + 1
                ),
            );
            return Ok(json_reply(
                StatusCode::OK,
                jsonrpc::response(&Err(error), &Value::Null),
            ));
        }
    };
    let work: Pin<Box<dyn Future<Output = (Option<String>, Effect)> + Send>> =
        match jsonrpc::parse_document(&text) {
            Parsed::Reply(reply) => return Ok(json_reply(StatusCode::OK, reply)),
            Parsed::Ignore => return Ok(empty(StatusCode::CREATED)),
            // HttpServerHandler's catch-all.
            Parsed::TooLong => {
                let error = jsonrpc::RpcError::new(
                    jsonrpc::INTERNAL_ERROR,
                    "An internal server error has occurred.",
                );
                return Ok(json_reply(
                    StatusCode::OK,
                    jsonrpc::response(&Err(error), &Value::Null),
                ));
            }
            Parsed::Request(request) => {
                let shared = shared.clone();
                Box::pin(async move { answer_one(&shared, Transport::Http, request).await })
            }
            Parsed::Batch(items) => {
                let shared = shared.clone();
                Box::pin(async move { answer_batch(&shared, Transport::Http, items).await })
            }
        };
    // Carried out even if the client goes away before the answer.
    let task = tokio::spawn(work);
    shared.track(task.abort_handle());
    let (answer, effect) = match task.await {
        Ok(done) => done,
        Err(_) => {
            let error = jsonrpc::RpcError::new(
                jsonrpc::INTERNAL_ERROR,
                "An internal server error has occurred.",
            );
            return Ok(json_reply(
                StatusCode::OK,
                jsonrpc::response(&Err(error), &Value::Null),
            ));
        }
    };
    match effect {
        Effect::DropBefore | Effect::DropAfter => Err(Dropped),
        Effect::Malformed => Ok(json_reply(StatusCode::OK, MALFORMED.to_string())),
        Effect::None => Ok(match answer {
            Some(answer) => json_reply(StatusCode::OK, answer),
            None => empty(StatusCode::CREATED),
        }),
    }
}

/// `GET /api/v1/events[?account=…]`: Server-Sent Events.
async fn events(shared: Arc<Shared>, request: Request<Incoming>, path: &str) -> Reply {
    if !host_allowed(&shared, &request) {
        return empty(StatusCode::MISDIRECTED_REQUEST);
    }
    if path != "/api/v1/events" {
        return empty(StatusCode::NOT_FOUND);
    }
    if request.method() != Method::GET {
        return empty(StatusCode::METHOD_NOT_ALLOWED);
    }
    // `?account=` picks one account of a multi-account daemon (a daemon
    // started with `-a` ignores it).
    let mut only = None;
    if shared.opts.multi_account {
        let account = request.uri().query().and_then(|q| {
            q.split('&').find_map(|pair| {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                (url_decode(key) == "account").then(|| url_decode(value))
            })
        });
        if let Some(account) = account.filter(|a| !a.is_empty()) {
            let ours = account == shared.opts.account
                || (shared.opts.version == DaemonVersion::V0_14_6
                    && account.eq_ignore_ascii_case(&shared.opts.account_uuid));
            if ours {
                only = Some(shared.opts.account.clone());
            } else if shared.opts.other_accounts.contains(&account) {
                only = Some(account);
            } else {
                return empty(StatusCode::BAD_REQUEST);
            }
        }
    }
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let kill = Arc::new(Notify::new());
    let guard = {
        let mut st = shared.lock();
        let id = st.add_conn(ConnKind::Sse, tx, kill.clone());
        st.subscribe_sse(id, only);
        ConnGuard {
            shared: shared.clone(),
            id,
        }
    };
    let (body_tx, body_rx) = mpsc::channel::<Bytes>(64);
    let (first_tx, first_rx) = oneshot::channel::<()>();
    let keepalive = shared.opts.sse_keepalive.max(Duration::from_millis(1));
    let pump_shared = shared.clone();
    let pump = tokio::spawn(async move {
        let _guard = guard;
        let mut first = Some(first_tx);
        let start = tokio::time::Instant::now()
            .checked_add(keepalive)
            .unwrap_or_else(tokio::time::Instant::now);
        let mut ticks = tokio::time::interval_at(start, keepalive);
        loop {
            let chunk = tokio::select! {
                _ = kill.notified() => break,
                _ = body_tx.closed() => break,
                chunk = rx.recv() => match chunk {
                    Some(chunk) => chunk,
                    None => break,
                },
                _ = ticks.tick() => {
                    // A frozen daemon sends no keep-alives either.
                    if *pump_shared.outage.borrow() == Outage::Hang {
                        continue;
                    }
                    ":\n".to_string()
                }
            };
            if body_tx.send(Bytes::from(chunk)).await.is_err() {
                break;
            }
            if let Some(first) = first.take() {
                let _ = first.send(());
            }
        }
    });
    shared.track(pump.abort_handle());
    if shared.opts.version == DaemonVersion::V0_13_19 {
        // 0.13.19 flushes the headers only with the first write.
        let _ = first_rx.await;
    }
    let mut reply = Response::new(Either::Right(SseBody { rx: body_rx }));
    reply
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    reply
}
