//! The load generator: N keep-alive connections, each with one request in
//! flight, optionally paced to a fixed rate.
//!
//! It speaks just enough HTTP/1.1 itself (one write per request, a
//! Content-Length response) so that the bench, which shares the CPUs with
//! the server, spends as little as possible per message.

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::report::{instant_at, now_ns};

/// Which posting route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `POST /api/message` (matterbridge), answers 200.
    Compat,
    /// `POST /v1/gateways/{gw}/messages`, answers 201.
    Native,
}

impl Route {
    /// As shown in tables.
    pub fn name(self) -> &'static str {
        match self {
            Self::Compat => "POST /api/message",
            Self::Native => "POST /v1/…/messages",
        }
    }
}

/// What to send.
#[derive(Debug, Clone)]
pub struct Load {
    /// Route.
    pub route: Route,
    /// Messages go round-robin over these gateways (seq % len).
    pub gateways: Vec<String>,
    /// How many messages.
    pub total: u64,
    /// Requests in flight (one per connection).
    pub conns: usize,
    /// Messages per second, or as fast as answers come.
    pub rate: Option<f64>,
    /// Bearer token.
    pub token: &'static str,
}

/// What the producer did.
#[derive(Debug, Default)]
pub struct Sent {
    /// Messages acknowledged with 2xx.
    pub ok: u64,
    /// Sequence numbers that failed (not expected downstream).
    pub failed: Vec<u64>,
    /// First error, for the report.
    pub first_error: Option<String>,
    /// Request → response times, ns.
    pub acks: Vec<u64>,
    /// Bench clock at the first send.
    pub first_ns: u64,
    /// Bench clock at the last response.
    pub last_ns: u64,
    /// Worst lag behind the pacing schedule, ns.
    pub behind_ns: u64,
}

/// The text of message `seq` from connection `conn`, sent at `t` (bench ns).
/// Consumers find it with [`parse_marker`].
pub fn marker(conn: usize, seq: u64, t: u64) -> String {
    format!("sbb c={conn} s={seq} t={t}")
}

/// Finds `sbb c=.. s=.. t=..` in a frame: (conn, seq, sent ns).
pub fn parse_marker(frame: &str) -> Option<(u32, u64, u64)> {
    let at = frame.find("sbb c=")?;
    let mut it = frame[at + 4..].split(' ');
    let mut num = |prefix: &str| -> Option<u64> {
        let f = it.next()?.strip_prefix(prefix)?;
        let end = f.find(|c: char| !c.is_ascii_digit()).unwrap_or(f.len());
        f[..end].parse().ok()
    };
    let c = num("c=")?;
    let s = num("s=")?;
    let t = num("t=")?;
    Some((u32::try_from(c).ok()?, s, t))
}

/// Runs the load to completion.
pub async fn produce(addr: SocketAddr, load: Load) -> Sent {
    produce_spread(&[addr], load).await
}

/// Runs the load to completion over several servers (the instances of a
/// cluster), as a load balancer would: connection `c` goes to
/// `addrs[c % n]`, and one whose server stops answering moves on to the
/// next (its failed message is counted failed, not sent again).
pub async fn produce_spread(addrs: &[SocketAddr], load: Load) -> Sent {
    let next = Arc::new(AtomicU64::new(0));
    let load = Arc::new(load);
    let addrs: Arc<[SocketAddr]> = addrs.into();
    let start = now_ns();
    let mut tasks = Vec::new();
    for c in 0..load.conns {
        let (next, load, addrs) = (next.clone(), load.clone(), addrs.clone());
        tasks.push(tokio::spawn(async move {
            worker(&addrs, c, &next, &load, start).await
        }));
    }
    let mut total = Sent {
        first_ns: u64::MAX,
        ..Sent::default()
    };
    for t in tasks {
        let Ok(s) = t.await else { continue };
        total.ok += s.ok;
        total.failed.extend(s.failed);
        if total.first_error.is_none() {
            total.first_error = s.first_error;
        }
        total.acks.extend(s.acks);
        total.first_ns = total.first_ns.min(s.first_ns);
        total.last_ns = total.last_ns.max(s.last_ns);
        total.behind_ns = total.behind_ns.max(s.behind_ns);
    }
    if total.first_ns == u64::MAX {
        total.first_ns = start;
    }
    total
}

/// Waits until message `seq` is due, at `rate` msg/s from `start` (bench
/// ns); returns how far behind that schedule it already was, ns.
pub async fn pace(start: u64, seq: u64, rate: f64) -> u64 {
    let due = start + (seq as f64 * 1e9 / rate) as u64;
    let now = now_ns();
    if due > now {
        tokio::time::sleep_until(instant_at(due).into()).await;
        0
    } else {
        now - due
    }
}

async fn worker(addrs: &[SocketAddr], c: usize, next: &AtomicU64, load: &Load, start: u64) -> Sent {
    let mut at = c % addrs.len();
    let mut conn = HttpConn::new(addrs[at]);
    let mut sent = Sent {
        first_ns: u64::MAX,
        acks: Vec::with_capacity(usize::try_from(load.total).unwrap_or(0) / load.conns + 1),
        ..Sent::default()
    };
    let mut body = Vec::with_capacity(256);
    let mut path = String::new();
    loop {
        let seq = next.fetch_add(1, Ordering::Relaxed);
        if seq >= load.total {
            break;
        }
        if let Some(rate) = load.rate {
            sent.behind_ns = sent.behind_ns.max(pace(start, seq, rate).await);
        }
        let gw = &load.gateways[usize::try_from(seq).unwrap_or(0) % load.gateways.len()];
        let t = now_ns();
        let text = marker(c, seq, t);
        body.clear();
        path.clear();
        match load.route {
            Route::Compat => {
                let _ = write!(
                    body,
                    r#"{{"text":"{text}","username":"bench","gateway":"{gw}"}}"#
                );
                path.push_str("/api/message");
            }
            Route::Native => {
                let _ = write!(body, r#"{{"text":"{text}"}}"#);
                path.push_str("/v1/gateways/");
                path.push_str(gw);
                path.push_str("/messages");
            }
        }
        sent.first_ns = sent.first_ns.min(t);
        let result =
            tokio::time::timeout(Duration::from_secs(30), conn.post(&path, load.token, &body))
                .await
                .unwrap_or_else(|_| Err(anyhow::anyhow!("no answer within 30 s")));
        let done = now_ns();
        match result {
            Ok(status) if (200..300).contains(&status) => {
                sent.ok += 1;
                sent.acks.push(done - t);
            }
            Ok(status) => {
                sent.failed.push(seq);
                sent.first_error
                    .get_or_insert_with(|| format!("HTTP {status}: {}", conn.last_body()));
            }
            Err(e) => {
                conn.reset();
                if addrs.len() > 1 {
                    at = (at + 1) % addrs.len();
                    conn = HttpConn::new(addrs[at]);
                }
                sent.failed.push(seq);
                sent.first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
        sent.last_ns = done;
    }
    sent
}

/// A keep-alive HTTP/1.1 connection with one request at a time.
pub struct HttpConn {
    addr: SocketAddr,
    stream: Option<TcpStream>,
    wbuf: Vec<u8>,
    rbuf: Vec<u8>,
    body: (usize, usize),
}

impl HttpConn {
    /// Not connected yet; the first request connects.
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            stream: None,
            wbuf: Vec::with_capacity(512),
            rbuf: Vec::with_capacity(4096),
            body: (0, 0),
        }
    }

    /// Drops the connection; the next request reconnects.
    pub fn reset(&mut self) {
        self.stream = None;
    }

    /// The body of the last response, lossy.
    pub fn last_body(&self) -> String {
        let (a, b) = self.body;
        String::from_utf8_lossy(self.rbuf.get(a..b).unwrap_or_default()).into_owned()
    }

    /// POSTs a JSON body; returns the status.
    pub async fn post(&mut self, path: &str, token: &str, body: &[u8]) -> anyhow::Result<u16> {
        if self.stream.is_none() {
            let s = TcpStream::connect(self.addr)
                .await
                .with_context(|| format!("connecting to {}", self.addr))?;
            s.set_nodelay(true)?;
            self.stream = Some(s);
        }
        self.wbuf.clear();
        write!(
            self.wbuf,
            "POST {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.addr,
            body.len()
        )?;
        self.wbuf.extend_from_slice(body);
        let stream = self.stream.as_mut().expect("connected");
        stream.write_all(&self.wbuf).await?;
        self.rbuf.clear();
        let head_end = loop {
            if let Some(i) = find(&self.rbuf, b"\r\n\r\n") {
                break i + 4;
            }
            self.rbuf.reserve(4096);
            if stream.read_buf(&mut self.rbuf).await? == 0 {
                self.stream = None;
                bail!("connection closed by the server");
            }
        };
        let head = std::str::from_utf8(&self.rbuf[..head_end]).context("response head")?;
        let status: u16 = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .context("response status line")?;
        let mut length = 0usize;
        let mut close = false;
        for line in head.lines().skip(1) {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            let v = v.trim();
            if k.eq_ignore_ascii_case("content-length") {
                length = v.parse().context("content-length")?;
            } else if k.eq_ignore_ascii_case("transfer-encoding") {
                bail!("chunked responses are not supported by the bench client");
            } else if k.eq_ignore_ascii_case("connection") && v.eq_ignore_ascii_case("close") {
                close = true;
            }
        }
        while self.rbuf.len() < head_end + length {
            self.rbuf.reserve(head_end + length - self.rbuf.len());
            if stream.read_buf(&mut self.rbuf).await? == 0 {
                self.stream = None;
                bail!("connection closed mid-body");
            }
        }
        self.body = (head_end, head_end + length);
        if close {
            self.stream = None;
        }
        Ok(status)
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_round_trips_inside_json() {
        let m = marker(3, 12345, 987654321);
        let frame = format!(r#"{{"cursor":9,"text":"{m}","type":"message"}}"#);
        assert_eq!(parse_marker(&frame), Some((3, 12345, 987654321)));
        assert_eq!(parse_marker("nothing"), None);
    }
}
