//! The HTTP listeners' accept loop: axum's router on hyper, with what
//! `axum::serve` cannot be told. Slow and idle clients cannot take the API
//! down: each listener holds at most `max_connections` connections (more
//! wait in the kernel's backlog, and the log says so once), and a client
//! that does not send a complete request header within `header_timeout`
//! (also between requests on a kept-alive connection) is disconnected.
//! Streams already answered (SSE, WebSockets) are not affected.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tower_service::Service;

/// A listener's limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most connections held at once.
    pub max_connections: usize,
    /// Longest wait for a request's headers.
    pub header_timeout: Duration,
}

impl Limits {
    /// For listeners without settings of their own (an adapter's ingress,
    /// the admin listener): 1,024 connections, 10 s for a request header.
    #[must_use]
    pub fn internal() -> Self {
        Self {
            max_connections: 1024,
            header_timeout: Duration::from_secs(10),
        }
    }
}

/// Serves `app` on `listener` until `shutdown` is true, then lets requests
/// in flight finish (connections are closed after their response).
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let warned = Arc::new(AtomicBool::new(false));
    let (closing_tx, closing) = watch::channel(false);
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = shutdown.wait_for(|s| *s) => break,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.wait_for(|s| *s) => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors, say: wait a little instead of spinning.
                tracing::warn!(error = %e, "Cannot accept a connection.");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if permits.available_permits() == 0 && !warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                addr = ?listener.local_addr().ok(),
                max = limits.max_connections,
                "Connection limit reached; new connections wait until others close."
            );
        }
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let mut closing = closing.clone();
        let warned = warned.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let mut app = app.clone();
                async move { app.call(req.map(Body::new)).await }
            });
            // HTTP/1 only (as the API always was): protocol detection would
            // wait for a first byte with no timeout at all.
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            tokio::pin!(conn);
            let stop = async move {
                let _ = closing.wait_for(|c| *c).await;
            };
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "Connection ended with an error.");
                    }
                }
                () = stop => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
            drop(permit);
            warned.store(false, Ordering::Relaxed);
        });
    }
    let _ = closing_tx.send(true);
    // Every connection hands its permit back when it is done: wait for
    // them (the caller bounds this wait).
    let all = u32::try_from(limits.max_connections.max(1)).unwrap_or(u32::MAX);
    let _ = permits.acquire_many(all).await;
}
