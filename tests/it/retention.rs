//! Retention: old history is deleted and the database stays bounded, while
//! what anything still needs survives: pending rows and what they refer
//! to, dead letters, the message map of kept events, blobs still used, and
//! consumer cursors (a cursor on a deleted row reads on from the oldest
//! row kept).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use sha2::{Digest, Sha256};
use sqlx::Row;
use switchboard::config::RetentionSettings;
use switchboard::store::writer::{self, CommitSink, MapEntry, WriterHandle};
use switchboard::store::{now_ms, retention, Dest, IngestItem, IngestOutcome, RowUpdate, Store};
use switchboard_core::{
    AccountId, Attachment, AttachmentKind, Author, Avatar, BlobRef, ChannelId, Delivered, EventId,
    EventKind, GatewayName, NewEvent, Origin, RemoteId, RichText, TargetRef,
};

use crate::harness::*;

const DAY: i64 = 86_400_000;
/// Messages per simulated day.
const PER_DAY: usize = 150;
/// Simulated days.
const DAYS: i64 = 14;

struct NoSink;

impl CommitSink for NoSink {
    fn committed(&self, _: &[IngestOutcome]) {}
    fn batch(&self, _: usize, _: Duration) {}
}

on_both_backends!(two_weeks_of_history_stay_bounded_to_one => |backend| two_weeks(backend));

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Stores a blob through the writer; returns its hash.
async fn put(w: &WriterHandle, bytes: &str) -> String {
    let sha = sha(bytes.as_bytes());
    w.blob(sha.clone(), "text/plain".into(), bytes.as_bytes().to_vec())
        .await
        .unwrap();
    sha
}

/// A message (or another kind) from Telegram chat `chat`, routed to the
/// webhook lane and the feed of gateway `g`.
fn item(chat: &str, remote: &str, kind: EventKind, avatar: &str) -> IngestItem {
    IngestItem {
        event: NewEvent {
            key: None,
            origin: Origin {
                account: "telegram.main".parse().unwrap(),
                channel: ChannelId::new(chat).unwrap(),
                remote_id: RemoteId::new(remote).unwrap(),
                thread: None,
            },
            author: Author {
                remote_id: "u1".into(),
                display_name: "Ann".into(),
                avatar: Some(Avatar::Blob(BlobRef {
                    sha256: avatar.to_owned(),
                })),
                ..Author::default()
            },
            at: time::OffsetDateTime::now_utc(),
            kind,
        },
        origin_token: None,
        dests: vec![Dest {
            gateway: GatewayName::new("g").unwrap(),
            account: "api.bots".parse().unwrap(),
            channel: ChannelId::new("webhook:x").unwrap(),
        }],
        feed: vec![GatewayName::new("g").unwrap()],
        check_echo: true,
    }
}

fn message(text: &str, files: &[&str]) -> EventKind {
    EventKind::Message {
        body: RichText::plain(text),
        attachments: files
            .iter()
            .map(|sha| Attachment {
                alt: None,
                kind: AttachmentKind::File,
                name: "f.txt".into(),
                mime: "text/plain".into(),
                size: 1,
                content: BlobRef {
                    sha256: (*sha).to_owned(),
                },
            })
            .collect(),
        reply_to: None,
    }
}

async fn count(pool: &sqlx::AnyPool, table: &str) -> i64 {
    sqlx::query(&format!("SELECT COUNT(*) FROM {table}"))
        .fetch_one(pool)
        .await
        .unwrap()
        .try_get(0)
        .unwrap()
}

/// Bytes of the SQLite database in use or free for reuse (its file size
/// once checkpointed); `None` on PostgreSQL, whose space comes back with
/// its own (auto)vacuum.
async fn sqlite_bytes(pool: &sqlx::AnyPool, backend: Backend) -> Option<i64> {
    if backend != Backend::Sqlite {
        return None;
    }
    let pages: i64 = sqlx::query("PRAGMA page_count")
        .fetch_one(pool)
        .await
        .unwrap()
        .try_get(0)
        .unwrap();
    let size: i64 = sqlx::query("PRAGMA page_size")
        .fetch_one(pool)
        .await
        .unwrap()
        .try_get(0)
        .unwrap();
    Some(pages * size)
}

/// Everything the writer stamped since `since` (real time) gets the
/// simulated time `at`: how a day of history is made old without waiting.
async fn backdate(pool: &sqlx::AnyPool, since: i64, at: i64) {
    for (table, column) in [
        ("events", "created_ms"),
        ("outbox", "created_ms"),
        ("outbox", "updated_ms"),
        ("blobs", "created_ms"),
    ] {
        sqlx::query(&format!(
            "UPDATE {table} SET {column} = $1 WHERE {column} >= $2"
        ))
        .bind(at)
        .bind(since)
        .execute(pool)
        .await
        .unwrap();
    }
}

/// Fourteen simulated days of traffic, one retention pass after each (with
/// the pass's clock, no sleeping): from the eighth day on the database
/// holds one week, while a pending row, a dead letter, the target of a
/// pending edit, blobs in use and a consumer's cursor survive, orphan blobs
/// go, and ids are never reused.
async fn two_weeks(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::new(backend, dir.path()).await;
    let store = Store::open(&db.url, 4).await.unwrap();
    let (w, task) = writer::spawn(store.clone(), Arc::new(NoSink));
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&db.url).await.unwrap();
    let policy = RetentionSettings {
        keep: Duration::from_secs(7 * 86_400),
        dead_letters: Duration::from_secs(30 * 86_400),
        blobs: Duration::from_secs(7 * 86_400),
        interval: Duration::from_secs(600),
    };
    let hook: AccountId = "api.bots".parse().unwrap();
    let lane = ChannelId::new("webhook:x").unwrap();
    let tg: AccountId = "telegram.main".parse().unwrap();
    let chat2 = ChannelId::new("2").unwrap();
    let g = [GatewayName::new("g").unwrap()];

    // Real time only moves forward: whatever the writer stamps from now on
    // is at least `real`, and every simulated time is well before it.
    let real = now_ms();
    let day0 = real - 30 * DAY;
    let avatar = put(&w, "the avatar every message uses").await;
    backdate(&pool, real, day0).await;

    let mut ids_by_day: BTreeMap<i64, Vec<EventId>> = BTreeMap::new();
    let (mut pending_event, mut pending_file, mut dead_event) = (None, None, None);
    let (mut target, mut pending_edit) = (None, None);
    let mut files_by_day = BTreeMap::new();
    let mut orphans = BTreeMap::new();
    let mut cursor = None;
    let mut sizes = BTreeMap::new();
    let mut pruned_events = 0;
    let mut max_id = 0;
    for day in 0..DAYS {
        orphans.insert(day, put(&w, &format!("orphan of day {day}")).await);
        if day == DAYS - 2 {
            // Stored again (a file sent once more): young again, so not
            // collected with the other orphans of its day.
            put(&w, "orphan of day 6").await;
        }
        let file = put(&w, &format!("attachment of day {day}")).await;
        files_by_day.insert(day, file.clone());
        let mut items = Vec::new();
        for i in 0..PER_DAY {
            let files: &[&str] = if i == 0 { &[&file] } else { &[] };
            items.push(item(
                "1",
                &format!("d{day}-{i}"),
                message(&format!("day {day} #{i}"), files),
                &avatar,
            ));
        }
        if day == 1 {
            let file = put(&w, "the file of a message still pending").await;
            pending_file = Some(file.clone());
            items.push(item("1", "pending", message("pending", &[&file]), &avatar));
        }
        if day == 11 {
            // An edit, in chat 2, of the message the hub delivered there
            // on day 5: resolved through the message map, then left pending.
            let edit = EventKind::Edit {
                target: TargetRef::Remote(RemoteId::new("m-d5-7").unwrap()),
                body: RichText::plain("fixed"),
            };
            items.push(item("2", "edit-of-d5-7", edit, &avatar));
        }
        let outcomes = w
            .ingest_batch(switchboard::store::IngestBatch {
                items,
                ..Default::default()
            })
            .await
            .unwrap();
        let ids: Vec<EventId> = outcomes
            .iter()
            .map(|o| match o.delivered {
                Delivered::New(id) => id,
                ref other => panic!("{other:?}"),
            })
            .collect();
        let first_seq = outcomes[0].feed[0].seq;
        if day == 0 {
            // A consumer stopped reading on day 0; its cursor will point
            // at a deleted row.
            w.cursor("api.bots/t".into(), "c".into(), first_seq + 10, true)
                .await;
            cursor = Some(first_seq + 10);
        }
        let lowest = ids.iter().map(|id| id.0).min().unwrap();
        assert!(lowest > max_id, "event ids are never reused");
        max_id = ids.iter().map(|id| id.0).max().unwrap();
        if day == 1 {
            pending_event = Some(ids[PER_DAY]);
        }
        if day == 2 {
            dead_event = Some(ids[3]);
        }
        if day == 5 {
            target = Some(ids[7]);
        }
        if day == 11 {
            let edit = store.event(ids[PER_DAY]).await.unwrap().unwrap();
            assert_eq!(edit.kind.target(), Some(&TargetRef::Event(target.unwrap())));
            pending_edit = Some(ids[PER_DAY]);
        }
        ids_by_day.insert(day, ids[..PER_DAY].to_vec());

        // Deliver the day's rows (the hub learns each one's id in chat 2),
        // except the pending ones; one becomes a dead letter.
        let rows = store.pending(&hook, &lane, 0, 10_000).await.unwrap();
        let sends = rows.into_iter().map(|r| r.expect("decodable")).map(|r| {
            let update = if Some(r.event.id) == dead_event {
                RowUpdate::Dead {
                    reason: "refused".into(),
                }
            } else if Some(r.event.id) == pending_event || Some(r.event.id) == pending_edit {
                RowUpdate::Retry {
                    attempts: r.attempts + 1,
                    error: "down".into(),
                }
            } else {
                let remote = match &r.event.kind {
                    EventKind::Message { body, .. } => {
                        // "day 5 #7" -> "m-d5-7"
                        let t = body.text.replace("day ", "d").replace(" #", "-");
                        format!("m-{t}")
                    }
                    _ => format!("m-{}", r.event.id),
                };
                RowUpdate::Sent {
                    maps: vec![MapEntry {
                        event_id: r.event.id,
                        account: tg.clone(),
                        channel: chat2.clone(),
                        part: 0,
                        remote_id: RemoteId::new(remote).unwrap(),
                    }],
                }
            };
            w.row(r.id, update)
        });
        for r in futures_util::future::join_all(sends).await {
            r.unwrap();
        }

        // The day happened at its noon; the pass runs at the next midnight.
        backdate(&pool, real, day0 + day * DAY + DAY / 2).await;
        let pruned = retention::prune(&w, &policy, day0 + (day + 1) * DAY)
            .await
            .unwrap();
        pruned_events += pruned.events;
        let events = count(&pool, "events").await;
        if day >= 7 {
            // Seven days of messages, plus what is kept for a reason: the
            // pending message, the dead letter, the edit's target (and the
            // edit itself, from day 11 on).
            let bound = 7 * PER_DAY as i64 + 4;
            assert!(
                events <= bound,
                "day {day}: {events} events, more than a week ({bound})"
            );
        }
        if let Some(bytes) = sqlite_bytes(&pool, backend).await {
            sizes.insert(day, bytes);
        }
    }

    // Exactly the last seven days are kept, and the four kept for a reason.
    let (pending_event, dead_event, target, pending_edit) = (
        pending_event.unwrap(),
        dead_event.unwrap(),
        target.unwrap(),
        pending_edit.unwrap(),
    );
    assert_eq!(count(&pool, "events").await, 7 * PER_DAY as i64 + 4);
    assert_eq!(
        pruned_events,
        7 * PER_DAY as u64 - 2,
        "the first week but the dead letter and the edit's target"
    );
    for (day, ids) in &ids_by_day {
        let kept = store.event(ids[1]).await.unwrap().is_some();
        assert_eq!(kept, *day >= DAYS - 7, "message 1 of day {day}");
    }
    // Feed and delivered rows of old events are gone; the map of kept
    // events is there.
    // The pending message keeps its feed row (its author may still edit
    // it or fetch its file).
    assert_eq!(count(&pool, "feed").await, 7 * PER_DAY as i64 + 2);
    assert_eq!(
        count(&pool, "outbox").await,
        7 * PER_DAY as i64 + 3,
        "a week of delivered rows, the pending one, the dead letter, the pending edit"
    );
    assert_eq!(count(&pool, "message_map").await, 7 * PER_DAY as i64 + 1);

    // The pending message is still pending, whole, with its file.
    let rows = store.pending(&hook, &lane, 0, 10).await.unwrap();
    let rows: Vec<_> = rows.into_iter().map(|r| r.unwrap().event.id).collect();
    assert_eq!(rows, [pending_event, pending_edit]);
    let pending_file = pending_file.unwrap();
    assert!(store.blob(&pending_file).await.unwrap().is_some());
    assert_eq!(store.blob_gateways(&pending_file).await.unwrap(), g);
    assert!(store.event(dead_event).await.unwrap().is_some());
    // The pending edit's target, with the id chat 2 knows it by.
    assert!(store.event(target).await.unwrap().is_some());
    let ids = store.remote_ids_at(target, &tg, &chat2).await.unwrap();
    assert_eq!(ids, [RemoteId::new("m-d5-7").unwrap()]);

    // Blobs: still used ones stay (the avatar is older than a week but
    // every kept message uses it), orphans and files of deleted messages go.
    assert!(store.blob(&avatar).await.unwrap().is_some());
    for day in 0..DAYS {
        let young = day >= DAYS - 7;
        let orphan = store.blob(&orphans[&day]).await.unwrap();
        assert_eq!(orphan.is_some(), young || day == 6, "orphan of day {day}");
        let file = &files_by_day[&day];
        assert_eq!(
            store.blob(file).await.unwrap().is_some(),
            young,
            "file of day {day}"
        );
        let gateways = store.blob_gateways(file).await.unwrap();
        assert_eq!(gateways.len(), usize::from(young), "gateways of day {day}");
    }

    // The consumer's cursor is kept and reads on from the oldest row kept.
    let cursor = cursor.unwrap();
    assert_eq!(
        store.api_cursor("api.bots/t", "c").await.unwrap(),
        Some(cursor)
    );
    let oldest: i64 = sqlx::query("SELECT MIN(seq) FROM feed")
        .fetch_one(&pool)
        .await
        .unwrap()
        .try_get(0)
        .unwrap();
    let next = store.feed_after(cursor, &g, 3).await.unwrap();
    assert_eq!(next[0].seq, oldest);
    assert_eq!(next[0].event.id, pending_event);
    assert_eq!(next[1].event.id, ids_by_day[&(DAYS - 7)][0]);

    // The database file stopped growing once it held a week: the second
    // week reused the pages the first one freed.
    if backend == Backend::Sqlite {
        let (week, fortnight) = (sizes[&7], sizes[&(DAYS - 1)]);
        assert!(
            fortnight * 4 <= week * 5,
            "the database grew from {week} bytes on day 7 to {fortnight} on day 13"
        );
    }

    // A database from before blob_refs: the pass at start fills them in
    // again, so nothing still used looks like an orphan.
    let refs = count(&pool, "blob_refs").await;
    sqlx::query("DELETE FROM blob_refs")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("UPDATE events SET target_id = NULL")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO cursors (account, name, value) VALUES ('switchboard', 'backfill_0003', '0')",
    )
    .execute(&pool)
    .await
    .unwrap();
    drop(w);
    task.await.unwrap();
    store.close().await;
    let store = Store::open(&db.url, 4).await.unwrap();
    let (w, task) = writer::spawn(store.clone(), Arc::new(NoSink));
    assert_eq!(count(&pool, "blob_refs").await, refs);
    let again = retention::prune(&w, &policy, day0 + DAYS * DAY)
        .await
        .unwrap();
    assert_eq!(again, retention::Pruned::default(), "nothing more to do");
    assert!(store.event(target).await.unwrap().is_some());
    assert!(store.blob(&avatar).await.unwrap().is_some());

    // New events never get an id a deleted one had.
    let o = w
        .ingest(item("1", "after", message("after", &[]), &avatar))
        .await
        .unwrap();
    assert!(matches!(o.delivered, Delivered::New(id) if id.0 > max_id));
    drop(w);
    task.await.unwrap();
    store.close().await;
    pool.close().await;
}

on_both_backends!(old_messages_are_pruned_while_pending_ones_and_cursors_survive => |backend| through_the_binary(backend));

/// `switchboard_pruned_rows_total{table="..."}` from `/metrics`.
async fn pruned(sb: &Sb, table: &str) -> u64 {
    let prefix = format!("switchboard_pruned_rows_total{{table=\"{table}\"}} ");
    sb.metrics()
        .await
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .map_or(0, |v| v.trim().parse().unwrap())
}

/// Through the real binary with a retention of seconds: old posts leave the
/// feed (a reader from cursor 1 starts after them), a post whose webhook is
/// down is still delivered when it comes back, a bot's stored cursor on a
/// deleted row reads on, and `/metrics` and the log count what went.
async fn through_the_binary(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::new(backend, dir.path()).await;
    let (api, admin) = (free_port(), free_port());
    let mut hook = Receiver::new();
    hook.set(Mode::Status(503));
    hook.up().await;
    let cfg = |retention: &str| {
        base_config(&db, dir.path(), api, admin)
            + retention
            + &token("bot", r#"["read", "write"]"#, r#"["g", "h"]"#)
            + &webhook("hook", hook.port, r#"["h"]"#)
            + &gateway("g")
            + &gateway("h")
    };
    let short = "\n[retention]\nkeep = \"1s\"\ninterval = \"1s\"\n";
    let mut sb = Sb::start(dir.path(), &cfg(short), api, admin).await;
    let client = reqwest::Client::new();
    // A bot reads gateway g from before the posts (they may be pruned a
    // second after they are made).
    let ws = sb.api.replace("http", "ws");
    let inbox = Inbox::default();
    let reader = ws_reader(
        &format!("{ws}/v1/ws?gateways=g&consumer=c&echo=true"),
        "bot",
        inbox.clone(),
    )
    .await;

    // Held back: the webhook of gateway h refuses everything for now.
    let (status, _) = post_native(&client, &sb.api, "bot", "h", json!({"text": "held"}), None)
        .await
        .unwrap();
    assert_eq!(status, 201);
    for i in 1..=5 {
        let (status, _) = post_native(
            &client,
            &sb.api,
            "bot",
            "g",
            json!({"text": format!("old {i}")}),
            None,
        )
        .await
        .unwrap();
        assert_eq!(status, 201);
    }
    // The bot got them and goes away; its cursor is saved.
    eventually("the old posts at the bot", || {
        texts(&inbox.all()).len() == 5
    })
    .await;
    assert_eq!(
        texts(&inbox.all()),
        ["old 1", "old 2", "old 3", "old 4", "old 5"]
    );
    let all = inbox.all();
    let last = all.iter().rev().find(|e| e["text"] == "old 5").unwrap()["cursor"]
        .as_i64()
        .unwrap();
    reader.abort();
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&db.url).await.unwrap();
    until("the bot's cursor saved", || async {
        let row = sqlx::query("SELECT seq FROM api_cursors WHERE consumer = 'c'")
            .fetch_optional(&pool)
            .await
            .unwrap();
        row.is_some_and(|r| r.try_get::<i64, _>(0).unwrap() == last)
    })
    .await;

    until("the old posts pruned", || async {
        pruned(&sb, "events").await >= 5 && pruned(&sb, "feed").await >= 5
    })
    .await;
    let log = sb.log();
    assert!(log.contains("Retention pass done"), "{log}");
    // The held post's event is kept for its delivery.
    let held: i64 = sqlx::query(
        "SELECT COUNT(*) FROM events e JOIN outbox o ON o.event_id = e.id WHERE o.state = 'pending'",
    )
    .fetch_one(&pool)
    .await
    .unwrap()
    .try_get(0)
    .unwrap();
    assert_eq!(held, 1);

    // Retention off from here (so what follows cannot age away while the
    // test looks at it); cursors and the held row survived the restart.
    sb.stop().await;
    std::fs::write(&sb.config, cfg("\n[retention]\nenabled = false\n")).unwrap();
    sb.restart().await;
    for i in 1..=3 {
        let (status, _) = post_native(
            &client,
            &sb.api,
            "bot",
            "g",
            json!({"text": format!("new {i}")}),
            None,
        )
        .await
        .unwrap();
        assert_eq!(status, 201);
    }
    // The bot comes back on its stored cursor, which points at a deleted
    // row: it gets the new posts, in order, and nothing twice.
    let inbox = Inbox::default();
    let _reader = ws_reader(
        &format!("{ws}/v1/ws?gateways=g&consumer=c&echo=true"),
        "bot",
        inbox.clone(),
    )
    .await;
    // A reader from cursor 1 (long deleted) starts at the oldest row kept.
    let sse = Inbox::default();
    let _sse = line_reader(
        &client,
        &format!("{}/v1/gateways/g/events?cursor=1&echo=true", sb.api),
        "bot",
        true,
        sse.clone(),
    )
    .await;
    // A last post marks the end: whatever came before it has arrived.
    let (status, _) = post_native(&client, &sb.api, "bot", "g", json!({"text": "end"}), None)
        .await
        .unwrap();
    assert_eq!(status, 201);
    let ended = |i: &Inbox| texts(&i.all()).last().is_some_and(|t| t == "end");
    eventually("the end marker at the bot", || ended(&inbox)).await;
    eventually("the end marker from cursor 1", || ended(&sse)).await;
    let expected = ["new 1", "new 2", "new 3", "end"];
    assert_eq!(texts(&inbox.all()), expected);
    assert_eq!(texts(&sse.all()), expected);

    // The webhook comes back: the held post, older than the retention,
    // is delivered.
    hook.set(Mode::Accept);
    eventually("the held post at the webhook", || {
        hook.deliveries().iter().any(|d| d.body["text"] == "held")
    })
    .await;
    pool.close().await;
}

on_both_backends!(a_bot_edits_and_fetches_its_pending_post_after_a_pass => |backend| pending_post_after_a_pass(backend));

/// A post older than `keep` that a destination has not taken yet is still
/// its author's: after retention passes, the bot can edit it and download
/// its file (both checked through the post's feed row), and the webhook
/// gets the post and then the edit when it comes back.
async fn pending_post_after_a_pass(backend: Backend) {
    use base64::Engine;
    let dir = tempfile::tempdir().unwrap();
    let db = Db::new(backend, dir.path()).await;
    let (api, admin) = (free_port(), free_port());
    let mut hook = Receiver::new();
    hook.set(Mode::Status(503));
    hook.up().await;
    let cfg = base_config(&db, dir.path(), api, admin)
        + "\n[retention]\nkeep = \"1s\"\ninterval = \"1s\"\n"
        + &token("bot", r#"["read", "write"]"#, r#"["g", "h"]"#)
        + &webhook("hook", hook.port, r#"["h"]"#)
        + &gateway("g")
        + &gateway("h");
    let sb = Sb::start(dir.path(), &cfg, api, admin).await;
    let client = reqwest::Client::new();
    let file: Vec<u8> = (0..50_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let (status, body) = post_native(
        &client,
        &sb.api,
        "bot",
        "h",
        json!({"text": "held", "attachments": [{"name": "f.bin",
            "data": base64::engine::general_purpose::STANDARD.encode(&file)}]}),
        None,
    )
    .await
    .unwrap();
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    // A post after it that nothing waits for: once it is pruned, a pass
    // has run with the held post older than `keep` too.
    let (status, _) = post_native(&client, &sb.api, "bot", "g", json!({"text": "gone"}), None)
        .await
        .unwrap();
    assert_eq!(status, 201);
    until("a pass that pruned the later post", || async {
        pruned(&sb, "events").await >= 1
    })
    .await;

    let edit = client
        .patch(format!("{}/v1/gateways/h/messages/{id}", sb.api))
        .header("authorization", bearer("bot"))
        .json(&json!({"text": "held, edited"}))
        .send()
        .await
        .unwrap();
    let status = edit.status().as_u16();
    assert_eq!(status, 201, "{}", edit.text().await.unwrap());
    let sha = hex::encode(Sha256::digest(&file));
    let blob = client
        .get(format!("{}/v1/blobs/{sha}", sb.api))
        .header("authorization", bearer("bot"))
        .send()
        .await
        .unwrap();
    assert_eq!(blob.status(), 200);
    assert_eq!(blob.bytes().await.unwrap().to_vec(), file);

    // The webhook comes back: the post, then its edit.
    hook.set(Mode::Accept);
    eventually("the post and its edit at the webhook", || {
        hook.deliveries().len() >= 2
    })
    .await;
    let got = hook.deliveries();
    assert_eq!(got[0].body["text"], "held");
    let edited = String::from_utf8_lossy(&got[1].raw).into_owned();
    assert!(edited.contains("held, edited"), "{edited}");
}

on_both_backends!(chunked_blobs_go_with_their_chunks_and_unfinished_uploads_are_collected => |backend| chunked_blobs(backend));

/// Large blobs are stored in chunks: a pass deletes an unused one with its
/// chunks, keeps one a pending message needs (whole), and collects the
/// chunks of an upload that never finished once they are old enough.
async fn chunked_blobs(backend: Backend) {
    use switchboard::store::blobs::{BlobUpload, CHUNK, UNFINISHED};
    use switchboard::store::writer::BlobPart;
    let dir = tempfile::tempdir().unwrap();
    let db = Db::new(backend, dir.path()).await;
    let store = Store::open(&db.url, 4).await.unwrap();
    let (w, task) = writer::spawn(store.clone(), Arc::new(NoSink));
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&db.url).await.unwrap();
    let bytes = |seed: u8, len: usize| -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect()
    };
    // Written in pieces of odd sizes, as a request body arrives.
    let upload = |data: Vec<u8>| {
        let w = w.clone();
        async move {
            let mut up = BlobUpload::new(w);
            for piece in data.chunks(100_003) {
                up.write(piece).await.unwrap();
            }
            up.finish("application/x-test".into()).await.unwrap()
        }
    };
    let (used, unused) = (bytes(1, 3 * CHUNK + 17), bytes(2, 2 * CHUNK));
    let used_blob = upload(used.clone()).await;
    let unused_blob = upload(unused.clone()).await;
    assert_eq!(used_blob.size, used.len() as u64);
    assert_eq!(used_blob.sha256, sha(&used));
    assert_eq!(count(&pool, "blob_chunks").await, 4 + 2);
    // The same bytes again: one blob, and no second set of chunks.
    assert_eq!(upload(used.clone()).await, used_blob);
    assert_eq!(count(&pool, "blobs").await, 2);
    assert_eq!(count(&pool, "blob_chunks").await, 4 + 2);
    // A message still pending uses the first.
    let avatar = put(&w, "an avatar").await;
    let o = w
        .ingest(item(
            "1",
            "m1",
            message("m1", &[&used_blob.sha256]),
            &avatar,
        ))
        .await
        .unwrap();
    assert!(matches!(o.delivered, Delivered::New(_)));
    // An upload whose process died: chunks, and no blob.
    for seq in 0..2 {
        w.blob_part(BlobPart::Chunk {
            upload: "died".into(),
            seq,
            data: vec![9; 1000],
        })
        .await
        .unwrap();
    }
    // A finish whose chunks are not all there is refused.
    let refused = w
        .blob_part(BlobPart::Finish {
            upload: "died".into(),
            sha256: "0".repeat(64),
            mime: "x/y".into(),
            size: 3000,
            chunks: 3,
        })
        .await;
    assert!(refused.is_err(), "{refused:?}");

    // A pass later than both retention ages.
    let policy = RetentionSettings {
        keep: Duration::from_secs(600),
        dead_letters: Duration::from_secs(600),
        blobs: Duration::from_secs(600),
        interval: Duration::from_secs(600),
    };
    let later = now_ms() + 2 * i64::try_from(UNFINISHED.as_millis()).unwrap();
    let pruned = retention::prune(&w, &policy, later).await.unwrap();
    assert_eq!(pruned.blobs, 1, "{pruned:?}");
    assert_eq!(pruned.blob_chunks, 2 + 2, "{pruned:?}");
    assert!(store.blob(&unused_blob.sha256).await.unwrap().is_none());
    let (mime, data) = store.blob(&used_blob.sha256).await.unwrap().unwrap();
    assert_eq!(mime, "application/x-test");
    assert!(data == used, "the kept blob is whole");
    assert_eq!(count(&pool, "blob_chunks").await, 4);
    drop(w);
    task.await.unwrap();
    store.close().await;
    pool.close().await;
}
