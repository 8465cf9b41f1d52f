//! Consumers (WebSocket, SSE) and what they saw.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use futures_util::StreamExt;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::load::parse_marker;
use crate::report::{now_ns, Latency};

/// Everything one receiver (a consumer, or one webhook) saw.
#[derive(Debug, Default)]
pub struct Tracker {
    seen: Vec<u8>,
    /// Distinct messages received.
    pub unique: u64,
    /// Messages received more than once.
    pub dup: u64,
    /// First receipts that came after a later message: a smaller cursor or
    /// event id than one already seen (both follow commit order), or a
    /// smaller sequence number than one already seen from the same
    /// producer connection (which waits for each answer before sending on).
    pub out_of_order: u64,
    /// Frames without a bench marker.
    pub foreign: u64,
    /// Outage notices received: (down, back).
    pub notices: (u64, u64),
    last_by_conn: Vec<Option<u64>>,
    last_key: Option<i64>,
    /// (sent, received) bench-clock ns of each first receipt.
    pub samples: Vec<(u64, u64)>,
}

impl Tracker {
    /// A tracker for sequence numbers below `total`.
    pub fn new(total: u64) -> Self {
        Self {
            seen: vec![0; usize::try_from(total).unwrap_or(0)],
            samples: Vec::with_capacity(usize::try_from(total).unwrap_or(0)),
            ..Self::default()
        }
    }

    /// Records one received frame. `key` is its cursor or event id, which
    /// must increase from frame to frame. True for a first receipt.
    pub fn record(&mut self, frame: &str, key: Option<i64>, recv_ns: u64) -> bool {
        if frame.contains("\"type\":\"notice\"") {
            if frame.contains("unreachable") {
                self.notices.0 += 1;
            } else if frame.contains("is back") {
                self.notices.1 += 1;
            }
        }
        let Some((conn, seq, sent)) = parse_marker(frame) else {
            self.foreign += 1;
            return false;
        };
        let Some(slot) = usize::try_from(seq).ok().and_then(|s| self.seen.get_mut(s)) else {
            self.foreign += 1;
            return false;
        };
        *slot = slot.saturating_add(1);
        if *slot > 1 {
            self.dup += 1;
            return false;
        }
        // Order is judged on first receipts only: a redelivery is a dup,
        // not a reordering.
        let conn = conn as usize;
        if self.last_by_conn.len() <= conn {
            self.last_by_conn.resize(conn + 1, None);
        }
        let conn_back = self.last_by_conn[conn].is_some_and(|l| seq < l);
        let key_back = key.is_some_and(|k| self.last_key.is_some_and(|l| k <= l));
        if conn_back || key_back {
            self.out_of_order += 1;
        }
        self.last_by_conn[conn] = Some(self.last_by_conn[conn].map_or(seq, |l| l.max(seq)));
        if let Some(k) = key {
            self.last_key = Some(self.last_key.map_or(k, |l| l.max(k)));
        }
        self.unique += 1;
        self.samples.push((sent, recv_ns));
        true
    }

    /// Adds what a receiver of other sequence numbers saw (one tracker per
    /// chat, say): counts add up and samples join; order stays judged per
    /// receiver.
    pub fn merge(&mut self, other: Tracker) {
        if self.seen.len() < other.seen.len() {
            self.seen.resize(other.seen.len(), 0);
        }
        for (mine, theirs) in self.seen.iter_mut().zip(&other.seen) {
            *mine = mine.saturating_add(*theirs);
        }
        self.unique += other.unique;
        self.dup += other.dup;
        self.out_of_order += other.out_of_order;
        self.foreign += other.foreign;
        self.notices.0 += other.notices.0;
        self.notices.1 += other.notices.1;
        self.samples.extend(other.samples);
    }

    /// How many of the sequence numbers in `expected` never arrived.
    pub fn lost(&self, expected: impl Iterator<Item = u64>) -> u64 {
        expected
            .filter(|s| {
                usize::try_from(*s)
                    .ok()
                    .and_then(|s| self.seen.get(s))
                    .is_none_or(|c| *c == 0)
            })
            .count() as u64
    }

    /// Latency of the messages sent within `[from, to)` bench ns.
    pub fn latency_sent_between(&self, from: u64, to: u64) -> Latency {
        let mut v: Vec<u64> = self
            .samples
            .iter()
            .filter(|(s, _)| *s >= from && *s < to)
            .map(|(s, r)| r.saturating_sub(*s))
            .collect();
        Latency::of(&mut v)
    }

    /// Latency of everything received.
    pub fn latency(&self) -> Latency {
        self.latency_sent_between(0, u64::MAX)
    }

    /// Writes `sent_ns,recv_ns` of every first receipt (bench clock).
    pub fn write_samples(&self, path: &std::path::Path) -> anyhow::Result<()> {
        use std::fmt::Write as _;
        let mut out = String::from("sent_ns,recv_ns\n");
        for (s, r) in &self.samples {
            let _ = writeln!(out, "{s},{r}");
        }
        std::fs::write(path, out).with_context(|| format!("writing {}", path.display()))
    }

    /// Bench clock of the last first-receipt.
    pub fn last_ns(&self) -> u64 {
        self.samples.iter().map(|(_, r)| *r).max().unwrap_or(0)
    }
}

/// Shared progress of a receiver, for waiting.
#[derive(Debug, Default)]
pub struct Progress {
    /// Distinct messages so far.
    pub unique: AtomicU64,
}

impl Progress {
    /// Waits until `n` distinct messages arrived, or nothing new arrived
    /// for `idle`. True when all arrived.
    pub async fn wait_for(&self, n: u64, idle: Duration) -> bool {
        let mut last = self.unique.load(Ordering::Relaxed);
        let mut last_change = tokio::time::Instant::now();
        loop {
            let now = self.unique.load(Ordering::Relaxed);
            if now >= n {
                return true;
            }
            if now != last {
                last = now;
                last_change = tokio::time::Instant::now();
            } else if last_change.elapsed() > idle {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// A consumer reading in the background.
pub struct Consumer {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<Tracker>>,
    /// Its progress.
    pub progress: Arc<Progress>,
}

impl Consumer {
    /// Stops reading and returns what it saw.
    pub async fn finish(mut self) -> anyhow::Result<Tracker> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.task.await.context("consumer task")?
    }
}

/// Which streaming route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// `GET /v1/ws`.
    WebSocket,
    /// `GET /v1/gateways/{gw}/events`.
    Sse,
}

impl Stream {
    /// As shown in tables.
    pub fn name(self) -> &'static str {
        match self {
            Self::WebSocket => "WebSocket /v1/ws",
            Self::Sse => "SSE /v1/…/events",
        }
    }
}

/// The integer after `"<key>":` (optionally quoted).
pub fn json_int(frame: &str, key: &str) -> Option<i64> {
    let pat = format!("\"{key}\":");
    let at = frame.find(&pat)? + pat.len();
    let rest = frame[at..].trim_start_matches('"');
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// Connects a consumer from `cursor=latest` and returns once the server
/// has opened its subscription (so nothing posted afterwards is missed).
pub async fn connect(
    kind: Stream,
    addr: SocketAddr,
    token: &str,
    gateway: &str,
    total: u64,
) -> anyhow::Result<Consumer> {
    let progress = Arc::new(Progress::default());
    let (stop_tx, stop_rx) = oneshot::channel();
    let tracker = Tracker::new(total);
    let task = match kind {
        Stream::WebSocket => {
            let mut req = format!("ws://{addr}/v1/ws?gateways={gateway}&cursor=latest")
                .into_client_request()?;
            req.headers_mut()
                .insert("authorization", format!("Bearer {token}").parse()?);
            // tungstenite zero-fills its whole read buffer (128 KiB by
            // default) before every read; keep the bench's own cost small.
            let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
                .read_buffer_size(16 * 1024);
            let (ws, _) = tokio_tungstenite::connect_async_with_config(req, Some(config), true)
                .await
                .context("WebSocket connect")?;
            tokio::spawn(ws_loop(ws, tracker, progress.clone(), stop_rx))
        }
        Stream::Sse => {
            let client = reqwest::Client::new();
            let resp = client
                .get(format!(
                    "http://{addr}/v1/gateways/{gateway}/events?cursor=latest"
                ))
                .bearer_auth(token)
                .send()
                .await
                .context("SSE connect")?;
            if !resp.status().is_success() {
                bail!("SSE answered {}", resp.status());
            }
            tokio::spawn(sse_loop(resp, tracker, progress.clone(), stop_rx))
        }
    };
    Ok(Consumer {
        stop: Some(stop_tx),
        task,
        progress,
    })
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn ws_loop(
    mut ws: Ws,
    mut t: Tracker,
    progress: Arc<Progress>,
    mut stop: oneshot::Receiver<()>,
) -> anyhow::Result<Tracker> {
    loop {
        tokio::select! {
            _ = &mut stop => break,
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(text))) => {
                    let now = now_ns();
                    let s = text.as_str();
                    if t.record(s, json_int(s, "cursor"), now) {
                        progress.unique.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Some(Ok(Message::Close(_))) | None => bail!("the server closed the WebSocket"),
                Some(Ok(_)) => {}
                Some(Err(e)) => bail!("WebSocket: {e}"),
            }
        }
    }
    let _ = ws.close(None).await;
    Ok(t)
}

async fn sse_loop(
    mut resp: reqwest::Response,
    mut t: Tracker,
    progress: Arc<Progress>,
    mut stop: oneshot::Receiver<()>,
) -> anyhow::Result<Tracker> {
    let mut buf = String::new();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            chunk = resp.chunk() => {
                let Some(chunk) = chunk? else { bail!("the server ended the SSE stream") };
                let now = now_ns();
                buf.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = buf.find("\n\n") {
                    for line in buf[..end].lines() {
                        if let Some(data) = line.strip_prefix("data:") {
                            if t.record(data, json_int(data, "cursor"), now) {
                                progress.unique.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    buf.drain(..end + 2);
                }
            }
        }
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::marker;

    #[test]
    fn tracker_counts_dups_order_and_loss() {
        let mut t = Tracker::new(10);
        let f = |c, s| format!("{{\"text\":\"{}\"}}", marker(c, s, 5));
        assert!(t.record(&f(0, 2), Some(1), 10));
        assert!(t.record(&f(0, 1), Some(2), 11));
        assert!(!t.record(&f(0, 1), Some(2), 12));
        assert!(t.record(&f(1, 0), Some(2), 13));
        assert!(t.record(&f(1, 3), Some(4), 14));
        assert_eq!((t.unique, t.dup, t.out_of_order), (4, 1, 2));
        assert_eq!(t.lost(0..5), 1);
        let mut other = Tracker::new(10);
        assert!(other.record(&f(2, 4), Some(1), 15));
        t.merge(other);
        assert_eq!((t.unique, t.dup, t.out_of_order), (5, 1, 2));
        assert_eq!(t.lost(0..5), 0);
        assert_eq!(t.last_ns(), 15);
        assert_eq!(json_int(r#"{"cursor":42,"id":"7"}"#, "id"), Some(7));
        assert_eq!(json_int(r#"{"cursor":42,"id":"7"}"#, "cursor"), Some(42));
    }
}
