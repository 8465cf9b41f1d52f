//! The receive side of the adapter contract, through the whole hub in this
//! process with the scripted FakeAdapter as a network account: batches
//! committed with their cursor (and a crash between batches), rejected
//! events skipped while the next ones flow, adapters that fail or panic
//! restarted and shown in `status`, blobs both ways.

use std::sync::Arc;

use serde_json::Value;
use switchboard::config::{Direction, Member};
use switchboard_core::fake::{FakeAdapter, RunStep};
use switchboard_core::{
    Attachment, AttachmentKind, Author, Batch, BlobRef, Capabilities, ChannelId, Cursor, Delivered,
    EventKind, NewEvent, Origin, RemoteId, RichText, Span, Style, TargetRef,
};
use tokio::sync::oneshot;

use crate::harness::*;

/// The hub running in a thread of its own, so a test can end it the hard
/// way: its runtime dropped mid-flight, nothing flushed (as close to kill -9
/// as one process gets; what was committed is on disk, nothing else).
struct InProc {
    api: String,
    admin: String,
    stop: Option<oneshot::Sender<bool>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl InProc {
    async fn start(dir: &std::path::Path, db: &Db, fake: Arc<FakeAdapter>) -> Self {
        let cfg = token("reader", r#"["read", "write"]"#, r#"["g"]"#) + &gateway("g");
        Self::start_with(dir, db, fake, &cfg).await
    }

    /// With `cfg` (tokens, webhooks, gateways) after the base; the fake's
    /// chat1 joins every gateway.
    async fn start_with(dir: &std::path::Path, db: &Db, fake: Arc<FakeAdapter>, cfg: &str) -> Self {
        let (api_port, admin_port) = (free_port(), free_port());
        let cfg = base_config(db, dir, api_port, admin_port) + cfg;
        let path = dir.join("inproc.toml");
        std::fs::write(&path, cfg).unwrap();
        let mut settings = switchboard::config::load(Some(&path)).unwrap();
        for g in &mut settings.gateways {
            g.members.push(Member {
                account: "telegram.fake".parse().unwrap(),
                channel: ChannelId::new("chat1").unwrap(),
                direction: Direction::InOut,
                invite: None,
            });
        }
        let (stop, stopped) = oneshot::channel::<bool>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            let graceful = rt.block_on(async move {
                let (tx, rx) = oneshot::channel::<()>();
                let run = switchboard::run_with(settings, vec![fake], async move {
                    let _ = rx.await;
                });
                tokio::pin!(run);
                tokio::select! {
                    r = &mut run => { r.unwrap(); true }
                    graceful = stopped => {
                        if graceful.unwrap_or(false) {
                            let _ = tx.send(());
                            run.await.unwrap();
                            true
                        } else {
                            false
                        }
                    }
                }
            });
            if !graceful {
                // Abandon every task where it stands.
                rt.shutdown_background();
            }
        });
        let me = Self {
            api: format!("http://127.0.0.1:{api_port}"),
            admin: format!("http://127.0.0.1:{admin_port}"),
            stop: Some(stop),
            thread: Some(thread),
        };
        until("the in-process hub to listen", || async {
            reqwest::get(format!("{}/healthz", me.api)).await.is_ok()
        })
        .await;
        me
    }

    /// Ends the hub without letting it finish anything.
    fn crash(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(false);
        }
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }

    /// Waits until no outbox row of any account is waiting (what was sent
    /// is committed as sent, so a crash does not send it again).
    async fn drained(&self) {
        until("every queue to drain", || async {
            let text = reqwest::get(format!("{}/metrics", self.admin))
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            text.lines()
                .filter_map(|l| l.strip_prefix("switchboard_queue_depth{"))
                .filter_map(|l| l.rsplit_once(' '))
                .all(|(_, v)| v.trim() == "0")
        })
        .await;
    }

    async fn status(&self) -> Value {
        admin_get(&self.admin, "/v1/status")
            .await
            .json()
            .await
            .unwrap()
    }
}

impl Drop for InProc {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(true);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn event(remote: &str, text: &str) -> NewEvent {
    NewEvent {
        origin: Origin {
            account: "telegram.fake".parse().unwrap(),
            channel: ChannelId::new("chat1").unwrap(),
            remote_id: RemoteId::new(remote).unwrap(),
            thread: None,
        },
        key: None,
        author: Author {
            remote_id: "u1".into(),
            display_name: "Ann".into(),
            ..Author::default()
        },
        at: time::OffsetDateTime::now_utc(),
        kind: EventKind::Message {
            body: RichText::plain(text),
            attachments: Vec::new(),
            reply_to: None,
        },
    }
}

fn batch(events: &[(&str, &str)], cursor: &str) -> Batch {
    Batch {
        events: events.iter().map(|(r, t)| event(r, t)).collect(),
        cursor: Some(Cursor {
            name: "offset".into(),
            value: cursor.into(),
        }),
    }
}

/// Texts of the gateway's feed, from the start, as a bot reads them.
async fn feed_texts(api: &str) -> Vec<String> {
    let client = reqwest::Client::new();
    let mut all = Vec::new();
    loop {
        // matterbridge polling: each call returns what came after the last.
        let got = poll_mb(&client, api, "reader").await;
        if got.is_empty() {
            return texts(&all);
        }
        all.extend(got);
    }
}

fn fake() -> Arc<FakeAdapter> {
    FakeAdapter::new("telegram.fake".parse().unwrap(), Capabilities::everything())
}

on_both_backends!(batches_commit_with_their_cursor_across_a_crash => |backend| batches_and_cursor(backend));

async fn batches_and_cursor(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::new(backend, dir.path()).await;
    let first = fake();
    first.script([
        RunStep::Deliver(batch(&[("1", "one"), ("2", "two"), ("3", "three")], "4")),
        RunStep::Deliver(batch(&[("4", "four"), ("5", "five")], "6")),
    ]);
    let hub = InProc::start(dir.path(), &db, first.clone()).await;
    eventually("both batches committed", || {
        first.runs().first().is_some_and(|r| r.delivered.len() == 2)
    })
    .await;
    hub.crash();
    let run = &first.runs()[0];
    assert_eq!(run.cursor_at_start, None);
    assert!(run
        .delivered
        .iter()
        .flatten()
        .all(|d| matches!(d, Delivered::New(_))));

    // After the crash the network redelivers from the saved cursor; the
    // second batch's acknowledgement was (say) lost, so it comes again.
    let second = fake();
    second.script([
        RunStep::Deliver(batch(&[("4", "four"), ("5", "five")], "6")),
        RunStep::Deliver(batch(&[("6", "six")], "7")),
    ]);
    let hub = InProc::start(dir.path(), &db, second.clone()).await;
    eventually("the batches after the restart", || {
        second
            .runs()
            .first()
            .is_some_and(|r| r.delivered.len() == 2)
    })
    .await;
    let run = &second.runs()[0];
    assert_eq!(
        run.cursor_at_start.as_deref(),
        Some("6"),
        "the cursor came back"
    );
    assert!(matches!(
        run.delivered[0][..],
        [Delivered::Duplicate(_), Delivered::Duplicate(_)]
    ));
    assert!(matches!(run.delivered[1][..], [Delivered::New(_)]));
    assert_eq!(
        feed_texts(&hub.api).await,
        ["one", "two", "three", "four", "five", "six"],
        "every event once, in order"
    );
}

#[tokio::test]
async fn a_rejected_event_is_skipped_while_the_next_ones_flow() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::new(Backend::Sqlite, dir.path()).await;
    let f = fake();
    let mut bad = event("2", "é");
    bad.kind = EventKind::Message {
        body: RichText {
            text: "é".into(),
            // Inside the two bytes of "é": no store or network can take it.
            spans: vec![Span {
                start: 0,
                end: 1,
                style: Style::Bold,
            }],
        },
        attachments: Vec::new(),
        reply_to: None,
    };
    // Year -249: RFC 3339 (and so the store) cannot write it down.
    let mut far = event("3", "from before the epoch");
    far.at = time::OffsetDateTime::from_unix_timestamp(-70_000_000_000).unwrap();
    f.script([
        RunStep::Deliver(Batch {
            events: vec![event("1", "before"), bad, far, event("4", "after")],
            cursor: None,
        }),
        RunStep::Deliver(batch(&[("5", "next batch")], "6")),
    ]);
    let hub = InProc::start(dir.path(), &db, f.clone()).await;
    eventually("both batches answered", || {
        f.runs().first().is_some_and(|r| r.delivered.len() == 2)
    })
    .await;
    let answers = &f.runs()[0].delivered[0];
    assert!(matches!(answers[0], Delivered::New(_)));
    assert!(
        matches!(&answers[1], Delivered::Rejected(r) if r.contains("boundaries")),
        "{answers:?}"
    );
    assert!(
        matches!(&answers[2], Delivered::Rejected(r) if r.contains("year")),
        "{answers:?}"
    );
    assert!(matches!(answers[3], Delivered::New(_)));
    assert_eq!(
        feed_texts(&hub.api).await,
        ["before", "after", "next batch"]
    );
}

#[tokio::test]
async fn an_adapter_that_fails_or_panics_is_restarted_and_shows_in_status() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::new(Backend::Sqlite, dir.path()).await;
    let f = fake();
    f.script([
        RunStep::Fail("the network said no".into()),
        RunStep::Panic,
        RunStep::Deliver(batch(&[("1", "after two restarts")], "2")),
    ]);
    let hub = InProc::start(dir.path(), &db, f.clone()).await;
    eventually("the third start to deliver", || {
        f.runs().len() == 3 && f.runs()[2].delivered.len() == 1
    })
    .await;
    assert_eq!(feed_texts(&hub.api).await, ["after two restarts"]);
    let status = hub.status().await;
    let fake_status = status["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["account"] == "telegram.fake")
        .cloned()
        .unwrap_or_else(|| panic!("telegram.fake in {status}"));
    assert_eq!(fake_status["restarts"], 2, "{fake_status}");
    let last = fake_status["last_error"].as_str().unwrap();
    assert!(last.contains("panicked"), "{fake_status}");
    let metrics = reqwest::get(format!("{}/metrics", hub.admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("switchboard_adapter_restarts_total{account=\"telegram.fake\"} 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn blobs_go_both_ways_through_the_host() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::new(Backend::Sqlite, dir.path()).await;
    let client = reqwest::Client::new();
    // Send: a bot posts a file; the fake reads its bytes through its host
    // when it sends the message on.
    let f = fake();
    let hub = InProc::start(dir.path(), &db, f.clone()).await;
    let bytes: Vec<u8> = (0u8..=255).cycle().take(5000).collect();
    let form = reqwest::multipart::Form::new()
        .text("payload", serde_json::json!({"text": "a file"}).to_string())
        .part(
            "file",
            reqwest::multipart::Part::bytes(bytes.clone())
                .file_name("f.bin")
                .mime_str("application/octet-stream")
                .unwrap(),
        );
    let r = client
        .post(format!("{}/v1/gateways/g/messages", hub.api))
        .header("authorization", bearer("reader"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    eventually("the fake to send the file", || f.sent().len() == 1).await;
    assert_eq!(f.sent()[0].files, vec![bytes], "the bytes the bot posted");

    // And the other way: bytes the network gave, stored by the adapter
    // through put_blob, reach a bot through the blob route.
    drop(hub);
    let g = fake();
    let picture = b"\x89PNG not really".to_vec();
    let sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&picture))
    };
    let mut with_file = event("9", "a picture from the network");
    with_file.kind = EventKind::Message {
        body: RichText::plain("a picture from the network"),
        attachments: vec![Attachment {
            alt: None,
            kind: AttachmentKind::Image,
            name: "p.png".into(),
            mime: "image/png".into(),
            size: picture.len() as u64,
            content: BlobRef {
                sha256: sha.clone(),
            },
        }],
        reply_to: None,
    };
    g.script([
        RunStep::PutBlob("image/png".into(), picture.clone()),
        RunStep::Deliver(Batch {
            events: vec![with_file],
            cursor: None,
        }),
    ]);
    let hub = InProc::start(dir.path(), &db, g.clone()).await;
    eventually("the picture delivered", || {
        g.runs().first().is_some_and(|r| r.delivered.len() == 1)
    })
    .await;
    assert_eq!(
        g.runs()[0].blobs,
        vec![BlobRef {
            sha256: sha.clone()
        }]
    );
    let got = client
        .get(format!("{}/v1/blobs/{sha}", hub.api))
        .header("authorization", bearer("reader"))
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.bytes().await.unwrap().to_vec(), picture);
}

/// An adapter serves routes on a listener the hub runs (as an appservice
/// or a network's webhook would): its handler checks its token and answers
/// only after the hub committed what the request carried.
#[tokio::test]
async fn an_adapters_ingress_is_served_and_its_pushes_committed() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::new(Backend::Sqlite, dir.path()).await;
    let f = fake();
    let port = free_port();
    f.serve_ingress(format!("127.0.0.1:{port}").parse().unwrap());
    let hub = InProc::start(dir.path(), &db, f.clone()).await;
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/push");
    let push = |token: &'static str, remote: &'static str| {
        client
            .post(&url)
            .header("authorization", format!("Bearer {token}"))
            .json(&serde_json::json!({"remote": remote, "text": format!("pushed {remote}")}))
            .send()
    };
    assert_eq!(push("wrong", "1").await.unwrap().status(), 401);
    assert_eq!(push("fake-ingress-token", "1").await.unwrap().status(), 200);
    // Pushed again (the sender did not see the answer): not a second event.
    assert_eq!(push("fake-ingress-token", "1").await.unwrap().status(), 200);
    assert_eq!(push("fake-ingress-token", "2").await.unwrap().status(), 200);
    assert_eq!(feed_texts(&hub.api).await, ["pushed 1", "pushed 2"]);
}

/// A network answers a send with "this chat is now X" (Telegram upgrading
/// a group): the queue, the message map and the routes move to X, also
/// across a restart, and what X says reaches the gateway.
#[tokio::test]
async fn a_moved_channel_takes_its_queue_map_and_routes_along() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::new(Backend::Sqlite, dir.path()).await;
    let client = reqwest::Client::new();
    let f = fake();
    let new_chat = ChannelId::new("chat9").unwrap();
    f.fail_next([switchboard_core::SendError::moved(
        "Bad Request: group chat was upgraded to a supergroup chat",
        new_chat.clone(),
    )]);
    let hub = InProc::start(dir.path(), &db, f.clone()).await;
    let (status, body) = post_native(
        &client,
        &hub.api,
        "reader",
        "g",
        serde_json::json!({"text": "m1"}),
        None,
    )
    .await
    .unwrap();
    assert_eq!(status, 201);
    let m1 = body["id"].as_str().unwrap().to_owned();
    eventually("m1 sent to the new chat", || f.sent().len() == 1).await;
    let (status, _) = post_native(
        &client,
        &hub.api,
        "reader",
        "g",
        serde_json::json!({"text": "m2"}),
        None,
    )
    .await
    .unwrap();
    assert_eq!(status, 201);
    eventually("m2", || f.sent().len() == 2).await;
    assert_eq!(f.attempts(), ["chat1", "chat9", "chat9"]);
    assert!(f.sent().iter().all(|s| s.op.channel == new_chat));
    // Sent and committed as sent: otherwise the restart sends m2 again and
    // that resend is taken for the edit below.
    hub.drained().await;
    hub.crash();

    // After a restart the move holds; an edit of m1 finds it in the moved
    // map; the new chat's own messages reach the gateway.
    let g = fake();
    let mut from_new = event("70", "said in the new chat");
    from_new.origin.channel = new_chat.clone();
    g.script([RunStep::Deliver(Batch {
        events: vec![from_new],
        cursor: None,
    })]);
    let hub = InProc::start(dir.path(), &db, g.clone()).await;
    let r = client
        .patch(format!("{}/v1/gateways/g/messages/{m1}", hub.api))
        .header("authorization", bearer("reader"))
        .json(&serde_json::json!({"text": "m1, edited"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    eventually("the edit", || g.sent().len() == 1).await;
    let edit = &g.sent()[0];
    assert_eq!(edit.op.channel, new_chat);
    assert_eq!(
        edit.op
            .target
            .as_ref()
            .map(|t| t.first().as_str().to_owned()),
        Some("r1".to_owned()),
        "the first fake's id for m1, found through the moved map"
    );
    eventually("the new chat's message delivered", || {
        g.runs().first().is_some_and(|r| r.delivered.len() == 1)
    })
    .await;
    assert!(matches!(g.runs()[0].delivered[0][..], [Delivered::New(_)]));
    let seen = feed_texts(&hub.api).await;
    assert!(
        seen.contains(&"said in the new chat".to_owned()),
        "{seen:?}"
    );
}

/// A channel in two gateways, and a webhook and a reader of both: each
/// gets an event once, not once per gateway.
#[tokio::test]
async fn a_channel_in_two_gateways_gets_each_event_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::new(Backend::Sqlite, dir.path()).await;
    let mut hook = Receiver::new();
    hook.up().await;
    let f = fake();
    f.script([RunStep::Deliver(batch(&[("1", "to both gateways")], "2"))]);
    let cfg = token("reader", r#"["read", "write"]"#, r#"["g", "h"]"#)
        + &format!(
            "\n[[api.bots.webhooks]]\nname = \"all\"\nurl = \"http://127.0.0.1:{}/hook\"\nsecret = \"s\"\n",
            hook.port
        )
        + &gateway("g")
        + &gateway("h");
    let hub = InProc::start_with(dir.path(), &db, f.clone(), &cfg).await;
    let reader = Inbox::default();
    let ws = hub.api.replace("http", "ws");
    ws_reader(
        &format!("{ws}/v1/ws?gateways=g,h&cursor=0"),
        "reader",
        reader.clone(),
    )
    .await;
    eventually("the webhook's delivery", || !hook.deliveries().is_empty()).await;
    reader.wait_len(1, "the reader").await;
    // A second event as a marker: everything before it has arrived.
    let client = reqwest::Client::new();
    let (status, _) = post_native(
        &client,
        &hub.api,
        "reader",
        "g",
        serde_json::json!({"text": "marker"}),
        None,
    )
    .await
    .unwrap();
    assert_eq!(status, 201);
    eventually("the marker on the webhook", || {
        texts(
            &hook
                .deliveries()
                .into_iter()
                .map(|d| d.body)
                .collect::<Vec<_>>(),
        )
        .contains(&"marker".to_owned())
    })
    .await;
    let hooked = texts(
        &hook
            .deliveries()
            .into_iter()
            .map(|d| d.body)
            .collect::<Vec<_>>(),
    );
    assert_eq!(hooked, ["to both gateways", "marker"], "once each");
    let ws_reader_post = Inbox::default();
    ws_reader(
        &format!("{ws}/v1/ws?gateways=g,h&cursor=0&consumer=again"),
        "reader",
        ws_reader_post.clone(),
    )
    .await;
    ws_reader_post
        .wait_len(1, "a fresh reader of both gateways")
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        texts(&ws_reader_post.all()),
        ["to both gateways"],
        "once, even read from the start"
    );
    assert_eq!(texts(&reader.all()), ["to both gateways"]);
}

/// An event of `author` changing message `target` (a remote id on chat1),
/// keyed `key`.
fn change(key: &str, author: &str, target: &str, kind: fn(TargetRef) -> EventKind) -> NewEvent {
    let mut e = event(target, "");
    e.key = Some(key.into());
    e.author = Author {
        remote_id: author.into(),
        display_name: author.to_uppercase(),
        ..Author::default()
    };
    e.kind = kind(TargetRef::Remote(RemoteId::new(target).unwrap()));
    e
}

#[tokio::test]
async fn only_the_author_edits_and_only_who_added_a_reaction_takes_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::new(Backend::Sqlite, dir.path()).await;
    let f = fake();
    let edit = |body: &'static str| -> fn(TargetRef) -> EventKind {
        match body {
            "by u1" => |t| EventKind::Edit {
                target: t,
                body: RichText::plain("fixed by u1"),
            },
            _ => |t| EventKind::Edit {
                target: t,
                body: RichText::plain("rewritten by u2"),
            },
        }
    };
    let react: fn(TargetRef) -> EventKind = |t| EventKind::Reaction {
        target: t,
        emoji: "👍".into(),
        removed: false,
    };
    let unreact: fn(TargetRef) -> EventKind = |t| EventKind::Reaction {
        target: t,
        emoji: "👍\u{FE0F}".into(),
        removed: true,
    };
    let delete: fn(TargetRef) -> EventKind = |t| EventKind::Delete {
        target: t,
        by_moderator: false,
    };
    let moderate: fn(TargetRef) -> EventKind = |t| EventKind::Delete {
        target: t,
        by_moderator: true,
    };
    // Message "1" by u1 (the `event` helper's author), "2" by u1 too.
    f.script([
        RunStep::Deliver(batch(&[("1", "hello"), ("2", "second")], "3")),
        RunStep::Deliver(Batch {
            events: vec![
                change("e1", "u2", "1", edit("by u2")),
                change("e2", "u1", "1", edit("by u1")),
                change("r1", "u2", "1", react),
                change("r2", "u3", "1", unreact),
                change("r3", "u2", "1", unreact),
                change("d1", "u2", "1", delete),
                change("d2", "u1", "2", delete),
                change("d3", "u9", "1", moderate),
            ],
            cursor: None,
        }),
    ]);
    let hub = InProc::start(dir.path(), &db, f.clone()).await;
    eventually("both batches answered", || {
        f.runs().first().is_some_and(|r| r.delivered.len() == 2)
    })
    .await;
    let answers = &f.runs()[0].delivered[1];
    let verdict: Vec<&str> = answers
        .iter()
        .map(|d| match d {
            Delivered::New(_) => "new",
            Delivered::Rejected(_) => "refused",
            _ => "other",
        })
        .collect();
    assert_eq!(
        verdict,
        [
            "refused", // u2 edits u1's message
            "new",     // u1 edits their own
            "new",     // u2 reacts
            "refused", // u3 takes back u2's reaction
            "new",     // u2 takes back their own (U+FE0F does not count)
            "refused", // u2 deletes u1's message
            "new",     // u1 deletes their own
            "new",     // a moderator deletes
        ],
        "{answers:?}"
    );
    assert!(
        matches!(&answers[0], Delivered::Rejected(r) if r.contains("may not edit") && r.contains("u2")),
        "the reason names who tried: {answers:?}"
    );
    // A refused event is not committed, so nothing routes it anywhere: the
    // bots' feed (matterbridge's shape: messages and edits) has the
    // messages and the author's own edit only.
    assert_eq!(
        feed_texts(&hub.api).await,
        ["hello", "second", "fixed by u1"]
    );
}
