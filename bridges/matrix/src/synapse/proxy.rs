//! A proxy in front of a real [`Synapse`](super::Synapse) that passes every
//! request through unchanged, except those a test tells it to spoil: it can
//! answer `502 Bad Gateway` (what Synapse itself answers when a file's
//! origin server is unreachable), stall (a slow federated server: the
//! request is read and never answered), or pass a request on and withhold
//! the answer (the answer to a send lost on the way back). The homeserver
//! stays the authority on everything else; the proxy only decides whether
//! its answer arrives.
//!
//! Point the bridge's `homeserver` at [`Proxy::url`]; the test's real users
//! talk to Synapse directly. [`Proxy::seen`] lists every request with the
//! status it was answered with, so a test can count a file's tries or the
//! homeserver's rate-limit refusals.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// How the proxy spoils a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answer `502 Bad Gateway` without asking the homeserver.
    BadGateway,
    /// Read the request and never answer it (until the client gives up).
    Stall,
    /// Pass the request on to the homeserver, then never answer the client:
    /// the homeserver did it, the client does not know.
    Swallow,
}

/// One request the proxy handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// `GET`, `PUT`, ...
    pub method: String,
    /// The path and query.
    pub path: String,
    /// The status the client got; `None` when it got no answer.
    pub status: Option<u16>,
    /// The homeserver's status, when it was asked (also for a swallowed
    /// answer).
    pub upstream: Option<u16>,
    /// When the proxy finished with it (answered, or gave up).
    pub at: std::time::Instant,
    /// The wait a rate-limited answer (`M_LIMIT_EXCEEDED`) asked for.
    pub retry_after_ms: Option<u64>,
}

#[derive(Default)]
struct State {
    /// (a substring of the path, the fault); the first match applies.
    rules: Mutex<Vec<(String, Fault)>>,
    seen: Mutex<Vec<Seen>>,
    /// Every answer this late (a slow homeserver).
    delay: Mutex<std::time::Duration>,
}

/// A running proxy; stops (and drops every connection) when dropped.
pub struct Proxy {
    port: u16,
    state: Arc<State>,
    tasks: Arc<Mutex<JoinSet<()>>>,
}

impl Proxy {
    /// Starts a proxy on a free loopback port in front of `upstream`
    /// (`http://127.0.0.1:PORT`).
    ///
    /// # Panics
    /// When no loopback port can be bound.
    pub async fn start(upstream: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port for the proxy");
        let port = listener.local_addr().expect("its address").port();
        let state = Arc::new(State::default());
        let tasks = Arc::new(Mutex::new(JoinSet::new()));
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("an HTTP client");
        let upstream = upstream.trim_end_matches('/').to_owned();
        let accept = {
            let (state, tasks) = (state.clone(), tasks.clone());
            async move {
                loop {
                    let Ok((sock, _)) = listener.accept().await else {
                        return;
                    };
                    let (state, http, upstream) = (state.clone(), http.clone(), upstream.clone());
                    let svc = service_fn(move |req| {
                        handle(state.clone(), http.clone(), upstream.clone(), req)
                    });
                    tasks.lock().expect("proxy tasks").spawn(async move {
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(sock), svc)
                            .await;
                    });
                }
            }
        };
        tasks.lock().expect("proxy tasks").spawn(accept);
        Proxy { port, state, tasks }
    }

    /// `http://127.0.0.1:<port>`, no trailing slash.
    #[must_use]
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Spoils every request whose path holds `path_part` (a media id, or
    /// `/send/`), until [`Proxy::heal`].
    pub fn fail(&self, path_part: &str, fault: Fault) {
        self.state
            .rules
            .lock()
            .expect("proxy rules")
            .push((path_part.to_owned(), fault));
    }

    /// Passes the requests whose path holds `path_part` again.
    pub fn heal(&self, path_part: &str) {
        self.state
            .rules
            .lock()
            .expect("proxy rules")
            .retain(|(p, _)| p != path_part);
    }

    /// Answers every request `d` late from now on (`Duration::ZERO`: on
    /// time again), as a slow homeserver would.
    pub fn set_delay(&self, d: std::time::Duration) {
        *self.state.delay.lock().expect("proxy delay") = d;
    }

    /// Every request so far, in the order they were answered (or given up).
    #[must_use]
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().expect("proxy log").clone()
    }

    /// The requests whose path holds `path_part`.
    #[must_use]
    pub fn seen_for(&self, path_part: &str) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.path.contains(path_part))
            .collect()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.abort_all();
        }
    }
}

type Answer = Response<Full<Bytes>>;

async fn handle(
    state: Arc<State>,
    http: reqwest::Client,
    upstream: String,
    req: Request<Incoming>,
) -> Result<Answer, Infallible> {
    let method = req.method().as_str().to_owned();
    let path = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.uri().path().to_owned(), |p| p.as_str().to_owned());
    let fault = state
        .rules
        .lock()
        .expect("proxy rules")
        .iter()
        .find(|(p, _)| path.contains(p.as_str()))
        .map(|(_, f)| *f);
    let delay = *state.delay.lock().expect("proxy delay");
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let log_with = |status: Option<u16>, upstream: Option<u16>, retry_after_ms: Option<u64>| {
        state.seen.lock().expect("proxy log").push(Seen {
            method: method.clone(),
            path: path.clone(),
            status,
            upstream,
            at: std::time::Instant::now(),
            retry_after_ms,
        });
    };
    let log = |status: Option<u16>, upstream: Option<u16>| log_with(status, upstream, None);
    match fault {
        Some(Fault::BadGateway) => {
            log(Some(502), None);
            let body = r#"{"errcode":"M_UNKNOWN","error":"Bad Gateway (from the test proxy)"}"#;
            return Ok(Response::builder()
                .status(502)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from_static(body.as_bytes())))
                .expect("a response"));
        }
        Some(Fault::Stall) => {
            log(None, None);
            return std::future::pending().await;
        }
        Some(Fault::Swallow) | None => {}
    }
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(http_body_util::Collected::to_bytes)
        .unwrap_or_default();
    let mut out = http.request(parts.method, format!("{upstream}{path}"));
    for (name, value) in &parts.headers {
        if !matches!(name.as_str(), "host" | "content-length" | "connection") {
            out = out.header(name, value);
        }
    }
    let answer = match out.body(body).send().await {
        Ok(r) => r,
        Err(e) => {
            log(Some(502), None);
            return Ok(Response::builder()
                .status(502)
                .body(Full::new(Bytes::from(format!("upstream: {e}"))))
                .expect("a response"));
        }
    };
    let status = answer.status().as_u16();
    if fault == Some(Fault::Swallow) {
        // Read it all, so the homeserver finished the request.
        let _ = answer.bytes().await;
        log(None, Some(status));
        return std::future::pending().await;
    }
    let mut builder = Response::builder().status(status);
    for (name, value) in answer.headers() {
        if !matches!(
            name.as_str(),
            "content-length" | "transfer-encoding" | "connection"
        ) {
            builder = builder.header(name, value);
        }
    }
    let bytes = answer.bytes().await.unwrap_or_default();
    let retry_after_ms = (status == 429)
        .then(|| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .flatten()
        .and_then(|v| v["retry_after_ms"].as_u64());
    log_with(Some(status), Some(status), retry_after_ms);
    Ok(builder.body(Full::new(bytes)).expect("a response"))
}
