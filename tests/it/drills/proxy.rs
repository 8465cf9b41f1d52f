//! A loopback TCP proxy in front of Synapse that can make the homeserver
//! answer slowly for switchboard alone (the people in the room keep
//! talking to Synapse directly): each chunk a client sends waits the set
//! delay before it is forwarded, so every request takes that much longer.
//! It also notes when requests start and when 429s come back, so a test
//! can check that switchboard waited as long as the homeserver asked.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// What went through: `> METHOD /path` when a request starts, `< ` and
/// the start of the answer when it is a 429.
pub(crate) type Log = Arc<Mutex<Vec<(Instant, String)>>>;

pub(crate) struct Proxy {
    port: u16,
    delay_ms: Arc<AtomicU64>,
    log: Log,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `127.0.0.1:upstream`.
    pub(crate) async fn start(upstream: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let delay_ms = Arc::new(AtomicU64::new(0));
        let delay = delay_ms.clone();
        let log = Log::default();
        let noted = log.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (delay, up_log, down_log) = (delay.clone(), noted.clone(), noted.clone());
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                        return;
                    };
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    let up = async move {
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            let n = match cr.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            let chunk = String::from_utf8_lossy(&buf[..n.min(512)]).into_owned();
                            if let Some(line) =
                                chunk.lines().next().filter(|l| l.contains(" HTTP/1"))
                            {
                                up_log
                                    .lock()
                                    .unwrap()
                                    .push((Instant::now(), format!("> {line}")));
                            }
                            let ms = delay.load(Ordering::Relaxed);
                            if ms > 0 {
                                tokio::time::sleep(Duration::from_millis(ms)).await;
                            }
                            if sw.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                        let _ = sw.shutdown().await;
                    };
                    let down = async move {
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            let n = match sr.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            if buf[..n].starts_with(b"HTTP/1.1 429") {
                                let answer = String::from_utf8_lossy(&buf[..n.min(2048)]);
                                down_log
                                    .lock()
                                    .unwrap()
                                    .push((Instant::now(), format!("< {answer}")));
                            }
                            if cw.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                        let _ = cw.shutdown().await;
                    };
                    tokio::join!(up, down);
                });
            }
        });
        Self {
            port,
            delay_ms,
            log,
            accept,
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every request from now on waits `delay` (zero: none).
    pub(crate) fn set_delay(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::Relaxed);
    }
}

impl Proxy {
    /// Everything noted so far, oldest first.
    pub(crate) fn log(&self) -> Vec<(Instant, String)> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}
