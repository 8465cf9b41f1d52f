//! The outbox through a scripted adapter: capability fallbacks (split,
//! corrected copy pointing at the first piece through the message map) and
//! the circuit breaker (opens on an account outage, settles even when its
//! probe is dead-lettered, and the queue moves on).

use std::sync::Arc;
use std::time::Duration;

use switchboard::store::{Dest, IngestItem, Store};
use switchboard::Running;
use switchboard_core::fake::FakeAdapter;
use switchboard_core::{
    Author, Capabilities, ChannelId, Delivered, EventId, EventKind, GatewayName, NewEvent, Origin,
    RemoteId, RichText, SendError, TargetRef,
};

use crate::harness::*;

/// The whole hub in this process ([`Running`], as `switchboard run` starts
/// it) with the scripted fake as account `telegram.fake`; tests commit
/// events routed to its chats straight through the hub's writer.
struct Rig {
    running: Option<Running>,
    fake: Arc<FakeAdapter>,
    db: Db,
    n: std::sync::atomic::AtomicUsize,
}

const FAKE: &str = "telegram.fake";

/// The rig's configuration: quick retries, no jitter, a 200 ms breaker.
fn rig_config(db: &Db, dir: &std::path::Path, max_retry_after: Duration) -> String {
    format!(
        r#"
[general]
data_dir = "{dir}/data"

[database]
url = "{url}"

[outbox]
send_timeout = "2s"
backoff_initial = "10ms"
backoff_max = "50ms"
jitter = false
breaker_probe = "200ms"
max_age = "1h"
max_retry_after = "{max_retry_after}ms"
"#,
        dir = dir.display(),
        url = db.url,
        max_retry_after = max_retry_after.as_millis(),
    )
}

async fn rig(backend: Backend, dir: &std::path::Path, caps: Capabilities) -> Rig {
    rig_with(backend, dir, caps, Duration::from_secs(3600)).await
}

async fn rig_with(
    backend: Backend,
    dir: &std::path::Path,
    caps: Capabilities,
    max_retry_after: Duration,
) -> Rig {
    let db = Db::new(backend, dir).await;
    let fake = FakeAdapter::new(FAKE.parse().unwrap(), caps);
    let mut rig = Rig {
        running: None,
        fake,
        db,
        n: Default::default(),
    };
    rig.start(dir, max_retry_after).await;
    rig
}

impl Rig {
    async fn start(&mut self, dir: &std::path::Path, max_retry_after: Duration) {
        let path = dir.join("rig.toml");
        std::fs::write(&path, rig_config(&self.db, dir, max_retry_after)).unwrap();
        let settings = switchboard::config::load(Some(&path)).unwrap();
        let running = Running::start(settings, vec![self.fake.clone()])
            .await
            .unwrap();
        self.running = Some(running);
    }

    /// Stops the hub gracefully.
    async fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }

    fn hub(&self) -> &switchboard::hub::Hub {
        self.running.as_ref().expect("running").hub()
    }

    fn store(&self) -> &Store {
        &self.hub().store
    }

    /// Whether the fake account's breaker is open.
    fn breaker_open(&self) -> bool {
        self.hub().outbox.is_down(FAKE)
    }

    /// Waits until no row is pending: the fake records a send just before
    /// the row is marked sent.
    async fn settled(&self) {
        until("no pending rows", || async {
            let queues = self.store().queues().await.unwrap();
            queues.iter().all(|q| q.pending == 0)
        })
        .await;
    }

    /// Commits an event from a bot, routed to `chat` on the fake account.
    async fn post(&self, chat: &str, kind: EventKind) -> EventId {
        let n = self.n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let item = IngestItem {
            event: NewEvent {
                key: None,
                origin: Origin {
                    account: "api.bots".parse().unwrap(),
                    channel: ChannelId::new("api").unwrap(),
                    remote_id: RemoteId::new(format!("a{n}")).unwrap(),
                    thread: None,
                },
                author: Author {
                    display_name: "Ann".into(),
                    ..Author::default()
                },
                at: time::OffsetDateTime::now_utc(),
                kind,
            },
            origin_token: None,
            dests: vec![Dest {
                gateway: GatewayName::new("g").unwrap(),
                account: FAKE.parse().unwrap(),
                channel: ChannelId::new(chat).unwrap(),
            }],
            feed: Vec::new(),
            check_echo: false,
        };
        match self.hub().writer.ingest(item).await.unwrap().delivered {
            Delivered::New(id) => id,
            other => panic!("{other:?}"),
        }
    }
}

fn message(text: &str) -> EventKind {
    EventKind::Message {
        body: RichText::plain(text),
        attachments: Vec::new(),
        reply_to: None,
    }
}

fn text(op: &switchboard_core::Outbound) -> String {
    match &op.event.kind {
        EventKind::Message { body, .. } => body.text.clone(),
        other => panic!("expected a message, got {other:?}"),
    }
}

on_both_backends!(fallbacks_split_and_edit_as_a_corrected_copy => |backend| fallbacks(backend));

async fn fallbacks(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let caps = Capabilities {
        edits: false,
        text: switchboard_core::TextLimit {
            max: 6,
            unit: switchboard_core::TextUnit::Chars,
        },
        ..Capabilities::everything()
    };
    let r = rig(backend, dir.path(), caps).await;
    let id = r.post("c1", message("hello world again")).await;
    eventually("the pieces", || r.fake.sent().len() == 3).await;
    let sent = r.fake.sent();
    let pieces: Vec<String> = sent.iter().map(|s| text(&s.op)).collect();
    assert_eq!(pieces.concat(), "hello world again");
    assert!(pieces.iter().all(|p| p.chars().count() <= 6), "{pieces:?}");
    let keys: Vec<&str> = sent.iter().map(|s| s.key.as_str()).collect();
    let prefix = format!("sb-{}-", r.store().database_id());
    assert_eq!(r.store().database_id().len(), 8);
    assert_eq!(
        keys,
        [
            format!("{prefix}{id}-0.0"),
            format!("{prefix}{id}-0.1"),
            format!("{prefix}{id}-0.2")
        ]
    );

    // The network cannot edit: a corrected copy, replying to the first piece,
    // whose id the message map remembered.
    r.post(
        "c1",
        EventKind::Edit {
            target: TargetRef::Event(id),
            body: RichText::plain("hi"),
        },
    )
    .await;
    eventually("the corrected copy", || r.fake.sent().len() == 4).await;
    let copy = &r.fake.sent()[3];
    assert_eq!(text(&copy.op), "✏️ hi");
    let target = copy.op.target.as_ref().expect("a reference");
    assert_eq!(target.first().as_str(), "r1");
    assert_eq!(
        target.ids.iter().map(RemoteId::as_str).collect::<Vec<_>>(),
        ["r1", "r2", "r3"],
        "every piece's id, in order"
    );
    assert_eq!(target.event.id, id, "and the referenced event itself");
    // The fake records a send before the lane marks its row sent.
    r.settled().await;
    assert!(r
        .store()
        .queues()
        .await
        .unwrap()
        .iter()
        .all(|q| q.pending == 0 && q.dead == 0));
}

#[tokio::test]
async fn breaker_opens_on_an_outage_and_settles_when_its_probe_is_dead_lettered() {
    let dir = tempfile::tempdir().unwrap();
    let r = rig(Backend::Sqlite, dir.path(), Capabilities::everything()).await;
    r.fake.fail_next([
        SendError::account_down("connection refused", None),
        SendError::permanent("chat not found"),
    ]);
    r.post("c1", message("first")).await;
    let paused = || r.breaker_open();
    eventually("the breaker to open", paused).await;
    // Its probe is dead-lettered; the breaker must not wait for it forever.
    eventually("the breaker to settle", || !paused()).await;
    r.post("c2", message("second")).await;
    eventually("the next message", || r.fake.sent().len() == 1).await;
    assert_eq!(text(&r.fake.sent()[0].op), "second");
    assert_eq!(
        r.fake.attempts(),
        ["c1", "c1", "c2"],
        "one attempt, one probe, then the next lane"
    );
    r.settled().await;
    let q = r.store().queues().await.unwrap();
    let q = q.iter().find(|q| q.account == FAKE).unwrap();
    assert_eq!((q.pending, q.dead), (0, 1));
    assert_eq!(q.last_error.as_deref(), Some("chat not found"));
}

on_both_backends!(a_stored_row_made_undecodable_is_dead_lettered_and_the_lane_goes_on => |backend| poison_row(backend));

async fn poison_row(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let mut r = rig(backend, dir.path(), Capabilities::everything()).await;
    // Queued while the account is paused (an admin's pause outlives a
    // restart), then damaged as stored while the hub is stopped, so the
    // lane reads the damage when it starts.
    let account = FAKE.parse().unwrap();
    r.hub().outbox.set_paused(&account, true).await.unwrap();
    let bad = r.post("c1", message("damaged")).await;
    r.post("c1", message("behind it")).await;
    r.stop().await;
    let pool = sqlx::AnyPool::connect(&r.db.url).await.unwrap();
    sqlx::query("UPDATE events SET body = 'not json' WHERE id = $1")
        .bind(bad.0)
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    r.start(dir.path(), Duration::from_secs(3600)).await;
    r.hub().outbox.set_paused(&account, false).await.unwrap();
    eventually("the message behind the damaged row", || {
        r.fake.sent().len() == 1
    })
    .await;
    assert_eq!(text(&r.fake.sent()[0].op), "behind it");
    r.settled().await;
    let q = r.store().queues().await.unwrap();
    let q = q.iter().find(|q| q.account == "telegram.fake").unwrap();
    assert_eq!((q.pending, q.dead), (0, 1));
    assert!(
        q.last_error
            .as_deref()
            .is_some_and(|e| e.starts_with("undecodable row")),
        "{:?}",
        q.last_error
    );
}

/// While the account is down, the probe that goes out may be a delete of a
/// message the destination never got: it degrades to nothing, sends
/// nothing, and must not leave every lane of the account waiting.
#[tokio::test]
async fn a_probe_on_a_no_op_delete_does_not_stall_the_account() {
    let dir = tempfile::tempdir().unwrap();
    let r = rig(Backend::Sqlite, dir.path(), Capabilities::everything()).await;
    r.fake
        .fail_next([SendError::account_down("connection refused", None)]);
    r.post("c2", message("waits for the breaker")).await;
    eventually("the breaker to open", || r.breaker_open()).await;
    // A delete of an event the fake never received: nothing to send.
    r.post(
        "c1",
        EventKind::Delete {
            by_moderator: false,
            target: TargetRef::Event(EventId(999_999)),
        },
    )
    .await;
    eventually("the queued message after the no-op probe", || {
        r.fake.sent().len() == 1
    })
    .await;
    r.settled().await;
}

/// A network asking for a retry after 30 years is retried after the
/// configured cap instead (an hour by default; 1 s here), and the
/// breaker's arithmetic does not overflow.
#[tokio::test]
async fn an_absurd_retry_after_is_capped() {
    let dir = tempfile::tempdir().unwrap();
    let r = rig_with(
        Backend::Sqlite,
        dir.path(),
        Capabilities::everything(),
        Duration::from_secs(1),
    )
    .await;
    r.fake.fail_next([
        SendError::transient("429", Some(Duration::from_secs(999_999_999))),
        SendError::account_down("503", Some(Duration::from_secs(999_999_999))),
    ]);
    r.post("c1", message("patient")).await;
    eventually("the message after two capped retry-afters", || {
        r.fake.sent().len() == 1
    })
    .await;
    r.settled().await;
}

/// A send's timeout grows with its files: a large upload that takes longer
/// than the base timeout completes once, instead of being cut off and
/// uploaded again and again.
#[tokio::test]
async fn a_large_upload_gets_a_timeout_in_proportion_to_its_size() {
    let dir = tempfile::tempdir().unwrap();
    let caps = Capabilities {
        min_upload_rate: 1_000_000,
        ..Capabilities::everything()
    };
    let r = rig(Backend::Sqlite, dir.path(), caps).await;
    // The rig's base timeout is 2 s; this "upload" takes 3 s.
    r.fake.delay_sends(Duration::from_secs(3));
    // The fake reads the file from the hub, as an adapter would.
    let bytes = vec![7u8; 3_000_000];
    let sha256 = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&bytes))
    };
    r.hub()
        .writer
        .blob(sha256.clone(), "application/octet-stream".into(), bytes)
        .await
        .unwrap();
    r.post(
        "c1",
        EventKind::Message {
            body: RichText::plain("a big file"),
            attachments: vec![switchboard_core::Attachment {
                alt: None,
                kind: switchboard_core::AttachmentKind::File,
                name: "big.bin".into(),
                mime: "application/octet-stream".into(),
                size: 3_000_000,
                content: switchboard_core::BlobRef { sha256 },
            }],
            reply_to: None,
        },
    )
    .await;
    eventually("the upload", || r.fake.sent().len() == 1).await;
    r.settled().await;
    assert_eq!(r.fake.attempts().len(), 1, "uploaded once, not cut off");
}
