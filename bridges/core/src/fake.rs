//! A scripted [`Adapter`] for tests (feature `test-util`): it records what
//! it is asked to send and fails the way its script says, so hub tests can
//! drive the outbox through outages and narrow capabilities without a
//! network; and its `run` plays a receive script (deliver batches, fail,
//! panic) so tests can drive the hub's receive side and supervisor.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::adapter::{Adapter, Batch, Delivered, Host, Outbound, Receipt, RunError, Shutdown};
use crate::caps::Capabilities;
use crate::error::SendError;
use crate::ids::{AccountId, RemoteId};

/// One accepted send.
#[derive(Debug, Clone)]
pub struct Sent {
    /// What was sent.
    pub op: Outbound,
    /// The idempotency key it came with.
    pub key: String,
    /// The id the fake gave it.
    pub remote: RemoteId,
    /// The bytes of its attachments, read from the hub's blob store as a
    /// real adapter does before an upload (empty before `run` started).
    pub files: Vec<Vec<u8>>,
}

/// One step of the fake's receive script; the script carries on across
/// restarts of `run`.
#[derive(Debug, Clone)]
pub enum RunStep {
    /// Deliver a batch, retrying while the store is unavailable, as a real
    /// adapter does.
    Deliver(Batch),
    /// Return this error from `run`.
    Fail(String),
    /// Panic inside `run`.
    Panic,
    /// Store bytes the "network" gave (MIME type, bytes) in the hub's blob
    /// store; the reference lands in [`RunRecord::blobs`].
    PutBlob(String, Vec<u8>),
}

/// What one (re)start of `run` saw and did.
#[derive(Debug, Clone, Default)]
pub struct RunRecord {
    /// The `"offset"` cursor it read at start.
    pub cursor_at_start: Option<String>,
    /// What each delivered batch answered.
    pub delivered: Vec<Vec<Delivered>>,
    /// What each stored blob got as its reference.
    pub blobs: Vec<crate::model::BlobRef>,
}

/// A fake network account.
pub struct FakeAdapter {
    account: AccountId,
    caps: Capabilities,
    /// Failures to return, in order, before sends succeed again.
    script: Mutex<VecDeque<SendError>>,
    /// Every attempt, failed or not: (channel, text) for ordering checks.
    attempts: Mutex<Vec<String>>,
    sent: Mutex<Vec<Sent>>,
    /// The receive script, consumed across restarts.
    steps: Mutex<VecDeque<RunStep>>,
    /// One record per start of `run`.
    runs: Mutex<Vec<RunRecord>>,
    /// How long each send takes.
    delay: Mutex<std::time::Duration>,
    /// Where its ingress listens, if it has one.
    ingress: Mutex<Option<std::net::SocketAddr>>,
}

impl std::fmt::Debug for FakeAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeAdapter")
            .field("account", &self.account)
            .finish_non_exhaustive()
    }
}

impl FakeAdapter {
    /// A fake for `account` rendering `caps`.
    #[must_use]
    pub fn new(account: AccountId, caps: Capabilities) -> Arc<Self> {
        Arc::new(Self {
            account,
            caps,
            script: Mutex::new(VecDeque::new()),
            attempts: Mutex::new(Vec::new()),
            sent: Mutex::new(Vec::new()),
            steps: Mutex::new(VecDeque::new()),
            runs: Mutex::new(Vec::new()),
            delay: Mutex::new(std::time::Duration::ZERO),
            ingress: Mutex::new(None),
        })
    }

    /// Serves ingress on `addr`: `POST /push` with `Authorization: Bearer
    /// fake-ingress-token` and a JSON body `{"remote": .., "text": ..}`
    /// delivers one message from channel `chat1`, answering 200 once it
    /// is committed, 503 when it is not, 401 without the token.
    pub fn serve_ingress(&self, addr: std::net::SocketAddr) {
        *self.ingress.lock().expect("fake lock") = Some(addr);
    }

    /// Makes every send take `d` (a slow network, a large upload).
    pub fn delay_sends(&self, d: std::time::Duration) {
        *self.delay.lock().expect("fake lock") = d;
    }

    /// Appends steps to the receive script.
    pub fn script(&self, steps: impl IntoIterator<Item = RunStep>) {
        self.steps.lock().expect("fake lock").extend(steps);
    }

    /// One record per start of `run` so far.
    #[must_use]
    pub fn runs(&self) -> Vec<RunRecord> {
        self.runs.lock().expect("fake lock").clone()
    }

    /// Steps of the receive script not played yet.
    #[must_use]
    pub fn steps_left(&self) -> usize {
        self.steps.lock().expect("fake lock").len()
    }

    /// Queues failures for the next attempts.
    pub fn fail_next(&self, errors: impl IntoIterator<Item = SendError>) {
        self.script.lock().expect("fake lock").extend(errors);
    }

    /// The accepted sends so far.
    #[must_use]
    pub fn sent(&self) -> Vec<Sent> {
        self.sent.lock().expect("fake lock").clone()
    }

    /// Every attempt so far, as `channel` names, in order.
    #[must_use]
    pub fn attempts(&self) -> Vec<String> {
        self.attempts.lock().expect("fake lock").clone()
    }
}

#[async_trait]
impl Adapter for FakeAdapter {
    fn account(&self) -> &AccountId {
        &self.account
    }

    fn capabilities(&self) -> Capabilities {
        self.caps.clone()
    }

    fn ingress(&self) -> Option<(std::net::SocketAddr, Arc<dyn crate::ingress::Ingress>)> {
        let addr = (*self.ingress.lock().expect("fake lock"))?;
        Some((
            addr,
            Arc::new(FakeIngress {
                account: self.account.clone(),
            }),
        ))
    }

    async fn run(self: Arc<Self>, host: Arc<dyn Host>, shutdown: Shutdown) -> Result<(), RunError> {
        let cursor = loop {
            match host.cursor("offset").await {
                Ok(c) => break c,
                Err(_) => tokio_free_sleep().await,
            }
        };
        let run = {
            let mut runs = self.runs.lock().expect("fake lock");
            runs.push(RunRecord {
                cursor_at_start: cursor,
                delivered: Vec::new(),
                blobs: Vec::new(),
            });
            runs.len() - 1
        };
        loop {
            let step = self.steps.lock().expect("fake lock").pop_front();
            match step {
                None => break,
                Some(RunStep::Fail(e)) => return Err(RunError(e)),
                Some(RunStep::Panic) => panic!("the fake adapter panics, as scripted"),
                Some(RunStep::PutBlob(mime, bytes)) => {
                    let blob = loop {
                        match host.put_blob(&mime, bytes.clone()).await {
                            Ok(b) => break b,
                            Err(_) => tokio_free_sleep().await,
                        }
                    };
                    self.runs.lock().expect("fake lock")[run].blobs.push(blob);
                }
                Some(RunStep::Deliver(batch)) => {
                    let answer = loop {
                        match host.deliver(batch.clone()).await {
                            Ok(a) => break a,
                            Err(_) => {
                                // Not acknowledged: wait and deliver again.
                                tokio_free_sleep().await;
                            }
                        }
                    };
                    self.runs.lock().expect("fake lock")[run]
                        .delivered
                        .push(answer);
                }
            }
        }
        shutdown.await;
        Ok(())
    }

    async fn send(&self, host: &dyn Host, op: &Outbound, key: &str) -> Result<Receipt, SendError> {
        self.attempts
            .lock()
            .expect("fake lock")
            .push(op.channel.to_string());
        let delay = *self.delay.lock().expect("fake lock");
        if !delay.is_zero() {
            ThreadSleep::new(delay).await;
        }
        if let Some(e) = self.script.lock().expect("fake lock").pop_front() {
            return Err(e);
        }
        let mut files = Vec::new();
        if let crate::model::EventKind::Message { attachments, .. } = &op.event.kind {
            for a in attachments {
                match host.blob(&a.content).await {
                    Ok(Some(bytes)) => files.push(bytes),
                    Ok(None) => return Err(SendError::permanent("attachment missing")),
                    Err(e) => return Err(SendError::transient(e.to_string(), None)),
                }
            }
        }
        let mut sent = self.sent.lock().expect("fake lock");
        let remote = RemoteId::new(format!("r{}", sent.len() + 1)).expect("valid");
        sent.push(Sent {
            op: op.clone(),
            key: key.to_owned(),
            remote: remote.clone(),
            files,
        });
        // Like a network: messages get an id, the rest creates nothing.
        Ok(
            if matches!(
                op.event.kind,
                crate::model::EventKind::Message { .. } | crate::model::EventKind::Notice { .. }
            ) {
                Receipt::one(remote)
            } else {
                Receipt::none()
            },
        )
    }
}

/// A short pause without depending on a runtime's timer (this crate does no
/// I/O and has no tokio): yields a few times.
async fn tokio_free_sleep() {
    for _ in 0..100 {
        YieldNow(false).await;
    }
}

struct YieldNow(bool);

impl std::future::Future for YieldNow {
    type Output = ();
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if self.0 {
            return std::task::Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}

/// Sleeps on a thread of its own and wakes the task (no runtime timer here).
struct ThreadSleep {
    done: Arc<std::sync::atomic::AtomicBool>,
    started: Option<std::time::Duration>,
}

impl ThreadSleep {
    fn new(d: std::time::Duration) -> Self {
        Self {
            done: Arc::default(),
            started: Some(d),
        }
    }
}

impl std::future::Future for ThreadSleep {
    type Output = ();
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if self.done.load(std::sync::atomic::Ordering::SeqCst) {
            return std::task::Poll::Ready(());
        }
        if let Some(d) = self.started.take() {
            let (done, waker) = (self.done.clone(), cx.waker().clone());
            std::thread::spawn(move || {
                std::thread::sleep(d);
                done.store(true, std::sync::atomic::Ordering::SeqCst);
                waker.wake();
            });
        }
        std::task::Poll::Pending
    }
}

/// The fake's pushed receive path.
struct FakeIngress {
    account: AccountId,
}

#[async_trait]
impl crate::ingress::Ingress for FakeIngress {
    async fn handle(
        &self,
        host: &dyn Host,
        req: crate::ingress::IngressRequest,
    ) -> crate::ingress::IngressResponse {
        use crate::ingress::IngressResponse;
        if req.header("authorization") != Some("Bearer fake-ingress-token") {
            return IngressResponse::json(401, &serde_json::json!({"error": "unknown token"}));
        }
        if (req.method.as_str(), req.path.as_str()) != ("POST", "/push") {
            return IngressResponse::json(404, &serde_json::json!({"error": "no such route"}));
        }
        let Ok(body) = serde_json::from_slice::<serde_json::Value>(&req.body) else {
            return IngressResponse::json(400, &serde_json::json!({"error": "not JSON"}));
        };
        let (Some(remote), Some(text)) = (body["remote"].as_str(), body["text"].as_str()) else {
            return IngressResponse::json(400, &serde_json::json!({"error": "remote and text"}));
        };
        let Ok(remote) = RemoteId::new(remote) else {
            return IngressResponse::json(400, &serde_json::json!({"error": "bad remote id"}));
        };
        let event = crate::model::NewEvent {
            origin: crate::model::Origin {
                account: self.account.clone(),
                channel: crate::ids::ChannelId::new("chat1").expect("valid"),
                remote_id: remote,
                thread: None,
            },
            key: None,
            author: crate::model::Author {
                remote_id: "pusher".into(),
                display_name: "Pusher".into(),
                ..crate::model::Author::default()
            },
            at: time::OffsetDateTime::now_utc(),
            kind: crate::model::EventKind::Message {
                body: crate::richtext::RichText::plain(text),
                attachments: Vec::new(),
                reply_to: None,
            },
        };
        match host
            .deliver(Batch {
                events: vec![event],
                cursor: None,
            })
            .await
        {
            Ok(_) => IngressResponse::json(200, &serde_json::json!({})),
            Err(e) => IngressResponse::json(503, &serde_json::json!({"error": e.to_string()})),
        }
    }
}
