//! The HTTP side: an accept loop that serves each connection with hyper's
//! HTTP/1 server, and the routing of one request.
//!
//! The fake serves connections itself rather than through a framework so it
//! can misbehave like a network: answer nothing and close
//! ([`Fault::Reset`]: the service returns an error, which makes hyper drop
//! the connection), stop listening so connects are refused
//! ([`Outage::Refuse`]: the listener and every open connection are dropped,
//! and the same port is bound again on [`Outage::Up`]), or read requests
//! and never answer ([`Outage::Hang`]).
//!
//! Routes: `/bot<token>/<method>` (any HTTP method) and
//! `GET /file/bot<token>/<file_path>`. Everything else is 404.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use super::error::{ApiError, ApiResult, Success};
use super::state::Shared;
use super::{methods, params, Call, Fault, Outage};

/// Orders from the control API to the accept loop.
pub(crate) enum Control {
    /// Change the outage; answered once the port really is closed or open.
    Outage(Outage, oneshot::Sender<io::Result<()>>),
    /// Close everything and end.
    Stop(oneshot::Sender<()>),
}

/// The error that makes hyper close a connection without answering.
#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by the fake on purpose")
    }
}

impl std::error::Error for Dropped {}

type Reply = Response<Full<Bytes>>;

/// The accept loop; owns the listener and every connection task, so that
/// dropping them refuses and resets clients like a dead server.
pub(crate) async fn run(
    shared: Arc<Shared>,
    listener: TcpListener,
    addr: SocketAddr,
    mut control: mpsc::UnboundedReceiver<Control>,
) {
    let mut listener = Some(listener);
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            order = control.recv() => match order {
                None => break,
                Some(Control::Stop(done)) => {
                    connections.shutdown().await;
                    let _ = done.send(());
                    return;
                }
                Some(Control::Outage(outage, done)) => {
                    shared.outage.send_replace(outage);
                    let result = match outage {
                        Outage::Refuse => {
                            listener = None;
                            connections.shutdown().await;
                            Ok(())
                        }
                        Outage::Up | Outage::Hang if listener.is_none() => {
                            rebind(addr).await.map(|l| listener = Some(l))
                        }
                        Outage::Up | Outage::Hang => Ok(()),
                    };
                    let _ = done.send(result);
                }
            },
            accepted = accept(listener.as_ref()) => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve(shared.clone(), stream));
                }
                // Out of file descriptors and the like: do not spin.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    connections.shutdown().await;
}

async fn accept(listener: Option<&TcpListener>) -> io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(listener) => listener.accept().await,
        None => std::future::pending().await,
    }
}

/// Binds the old address again, retrying briefly while the kernel still
/// holds it.
async fn rebind(addr: SocketAddr) -> io::Result<TcpListener> {
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

async fn serve(shared: Arc<Shared>, stream: TcpStream) {
    let service = service_fn(move |request| {
        let shared = shared.clone();
        async move { handle(&shared, request).await }
    });
    // Errors here are clients going away, or a deliberate drop.
    let _ = http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

/// While the outage is [`Outage::Hang`], holds the request; when it ends,
/// drops the connection unanswered.
async fn hold_if_hanging(shared: &Shared) -> Result<(), Dropped> {
    let mut outage = shared.outage.subscribe();
    if *outage.borrow_and_update() != Outage::Hang {
        return Ok(());
    }
    while *outage.borrow_and_update() == Outage::Hang {
        if outage.changed().await.is_err() {
            break;
        }
    }
    Err(Dropped)
}

async fn handle(shared: &Arc<Shared>, request: Request<Incoming>) -> Result<Reply, Dropped> {
    let (parts, body) = request.into_parts();
    // The whole request is read first, as the real server does (and as a
    // hanging server would).
    let params = params::read(&parts, body).await;
    hold_if_hanging(shared).await?;

    let path = parts.uri.path();
    if let Some(rest) = path.strip_prefix("/file/bot") {
        return Ok(download(shared, rest));
    }
    let Some((token, method)) = path.strip_prefix("/bot").and_then(|r| r.split_once('/')) else {
        return Ok(error_reply(&ApiError::new(404, "Not Found")));
    };
    let known = methods::lookup(method);
    let name = known.map_or_else(|| method.to_string(), |(m, _)| m.to_string());
    let logged = params
        .as_ref()
        .map_or(Value::Object(Default::default()), |p| p.to_json());
    let index = {
        let mut st = shared.lock();
        st.calls.push(Call {
            method: name.clone(),
            params: logged,
            status: None,
            at: Instant::now(),
        });
        st.calls.len() - 1
    };

    // A request that arrived is carried out even if its client goes away
    // meanwhile (its answer is then lost), as on the real server: so the
    // work runs in its own task, not in the connection's.
    let token = token.to_string();
    let worker = {
        let shared = shared.clone();
        tokio::spawn(async move {
            let outcome = answer(&shared, &token, known, params).await;
            let status = match &outcome {
                Ok(_) => Some(200),
                Err(Answer::Refused(e)) => Some(e.code),
                Err(Answer::Dropped) => None,
            };
            if let Some(call) = shared.lock().calls.get_mut(index) {
                call.status = status;
            }
            outcome
        })
    };
    let outcome = worker.await.unwrap_or_else(|_| {
        Err(Answer::Refused(ApiError::new(
            500,
            "Internal Server Error: the fake failed on this request",
        )))
    });
    match outcome {
        Ok(success) => Ok(json_reply(200, &success.body(), None)),
        Err(Answer::Refused(e)) => Ok(error_reply(&e)),
        Err(Answer::Dropped) => Err(Dropped),
    }
}

/// How a call ends when it does not succeed.
enum Answer {
    Refused(ApiError),
    Dropped,
}

impl From<ApiError> for Answer {
    fn from(e: ApiError) -> Self {
        Answer::Refused(e)
    }
}

async fn answer(
    shared: &Arc<Shared>,
    token: &str,
    known: Option<(&'static str, bool)>,
    params: ApiResult<params::Params>,
) -> Result<Success, Answer> {
    let params = params?;
    check_token(&shared.token, token)?;
    let (method, _) = known.ok_or_else(|| ApiError::new(404, "Not Found: method not found"))?;
    let fault = shared.lock().take_fault(method);
    let mut replace_result = None;
    match fault {
        Some(Fault::Error {
            code,
            description,
            retry_after,
            migrate_to_chat_id,
        }) => {
            return Err(Answer::Refused(ApiError {
                code,
                description,
                retry_after,
                migrate_to_chat_id,
            }))
        }
        Some(Fault::Reset) => return Err(Answer::Dropped),
        Some(Fault::Hang(delay)) => tokio::time::sleep(delay).await,
        Some(Fault::Result(value)) => replace_result = Some(value),
        None => {}
    }
    let mut success = methods::dispatch(shared, method, &params).await?;
    if let Some(value) = replace_result {
        success.result = value;
    }
    Ok(success)
}

/// The token checks of the server: a malformed token is "invalid", a
/// well-formed one that is not this bot's fails to log in.
fn check_token(expected: &str, token: &str) -> ApiResult<()> {
    let well_formed = !token.starts_with('0')
        && token.len() <= 80
        && token.split_once(':').is_some_and(|(id, _)| {
            id.parse::<i64>()
                .is_ok_and(|id| id > 0 && id < (1_i64 << 54))
        });
    if !well_formed {
        return Err(ApiError::new(401, "Unauthorized: invalid token specified"));
    }
    if token != expected {
        return Err(ApiError::new(401, "Unauthorized"));
    }
    Ok(())
}

/// `GET /file/bot<token>/<file_path>`: the bytes of a file getFile named.
fn download(shared: &Shared, rest: &str) -> Reply {
    let not_found = || error_reply(&ApiError::new(404, "Not Found"));
    let Some((token, path)) = rest.split_once('/') else {
        return not_found();
    };
    if token != shared.token {
        return not_found();
    }
    let bytes = match shared.lock().files.by_path(path) {
        Some(file) => file.bytes.as_ref().clone(),
        None => return not_found(),
    };
    let mut reply = Response::new(Full::new(Bytes::from(bytes)));
    reply.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    reply
}

fn error_reply(e: &ApiError) -> Reply {
    json_reply(e.code, &e.body(), e.retry_after)
}

fn json_reply(status: u16, body: &Value, retry_after: Option<u64>) -> Reply {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut reply = Response::new(Full::new(Bytes::from(bytes)));
    *reply.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    reply
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(secs) = retry_after {
        reply
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    reply
}
