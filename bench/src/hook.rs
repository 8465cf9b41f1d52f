//! The in-bench webhook receiver: `POST /hook/{name}`, one [`Tracker`] per
//! webhook (a batched webhook's JSON array counts each delivery in it). It
//! can go down in two ways: refuse connections (nothing listens) or accept
//! and never answer.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::consume::{Progress, Tracker};
use crate::report::now_ns;

/// How the receiver behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Answers 200 at once.
    Up,
    /// Accepts requests and never answers them (until the mode changes,
    /// long after the sender timed out; then 503).
    Hang,
}

/// What the receiver saw.
pub struct HookState {
    mode: watch::Sender<Mode>,
    trackers: Mutex<HashMap<String, Tracker>>,
    total: u64,
    /// Distinct messages over all webhooks.
    pub progress: Progress,
    /// Requests that arrived, answered or not.
    pub requests: AtomicU64,
    /// Judge order per producer connection only, not by event id: with
    /// several instances committing, event ids of concurrent posts are not
    /// in commit order (see [`Hooks::per_connection`]).
    per_connection: std::sync::atomic::AtomicBool,
}

/// A running (or refusing) receiver.
pub struct Hooks {
    /// Where it listens.
    pub addr: SocketAddr,
    /// What it saw.
    pub state: Arc<HookState>,
    server: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

impl Hooks {
    /// Listens on a free loopback port; `total` bounds sequence numbers.
    pub async fn start(total: u64) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(HookState {
            mode: watch::Sender::new(Mode::Up),
            trackers: Mutex::new(HashMap::new()),
            total,
            progress: Progress::default(),
            requests: AtomicU64::new(0),
            per_connection: std::sync::atomic::AtomicBool::new(false),
        });
        let mut hooks = Self {
            addr,
            state,
            server: None,
        };
        hooks.serve(listener);
        Ok(hooks)
    }

    fn serve(&mut self, listener: TcpListener) {
        let app = axum::Router::new()
            .route("/hook/{name}", post(receive))
            .with_state(self.state.clone());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        self.server = Some((tx, task));
    }

    /// Stops listening: connections are refused until [`Hooks::resume`].
    pub async fn refuse(&mut self) {
        if let Some((tx, mut task)) = self.server.take() {
            let _ = tx.send(());
            if tokio::time::timeout(Duration::from_secs(3), &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
    }

    /// Listens again on the same address.
    pub async fn resume(&mut self) -> anyhow::Result<()> {
        let listener = TcpListener::bind(self.addr)
            .await
            .with_context(|| format!("rebinding {}", self.addr))?;
        self.serve(listener);
        Ok(())
    }

    /// Judges order per producer connection only: several instances
    /// commit concurrent posts, whose event ids need not follow the order
    /// their lane delivers them in; one connection's posts (each waiting
    /// for the answer to the one before) must still arrive in order.
    pub fn per_connection(&self) {
        self.state.per_connection.store(true, Ordering::Relaxed);
    }

    /// Switches between answering and hanging.
    pub fn set_mode(&self, mode: Mode) {
        self.state.mode.send_replace(mode);
    }

    /// Takes every webhook's tracker.
    pub fn take(&self) -> HashMap<String, Tracker> {
        std::mem::take(&mut *self.state.trackers.lock().expect("trackers"))
    }

    /// Stops the receiver.
    pub async fn stop(mut self) {
        self.set_mode(Mode::Up);
        self.refuse().await;
    }
}

async fn receive(
    State(st): State<Arc<HookState>>,
    Path(name): Path<String>,
    body: Bytes,
) -> StatusCode {
    st.requests.fetch_add(1, Ordering::Relaxed);
    if *st.mode.borrow() == Mode::Hang {
        let mut rx = st.mode.subscribe();
        let _ = rx.wait_for(|m| *m != Mode::Hang).await;
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let now = now_ns();
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    // A batched webhook's body is an array of deliveries, in order.
    let items = match v {
        serde_json::Value::Array(items) => items,
        one => vec![one],
    };
    let mut trackers = st.trackers.lock().expect("trackers");
    let tracker = trackers
        .entry(name)
        .or_insert_with(|| Tracker::new(st.total));
    for v in &items {
        let text = v["text"].as_str().unwrap_or_default();
        let id = v["id"]
            .as_str()
            .and_then(|s| s.parse::<i64>().ok())
            .filter(|_| !st.per_connection.load(Ordering::Relaxed));
        if tracker.record(text, id, now) {
            st.progress.unique.fetch_add(1, Ordering::Relaxed);
        }
    }
    StatusCode::OK
}
