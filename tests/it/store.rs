//! The store's contract, on SQLite and PostgreSQL alike: redeliveries are
//! recognised, echoes of what the hub sent are dropped, and references given
//! by a network's own ids resolve through the message map, both ways.

use std::sync::Arc;

use switchboard::store::writer::{self, CommitSink, MapEntry};
use switchboard::store::{
    Dest, IngestBatch, IngestItem, IngestOutcome, RowUpdate, StateChange, Store,
};
use switchboard_core::{
    AccountId, Author, ChannelId, Delivered, EventId, EventKind, GatewayName, NewEvent, Origin,
    RemoteId, RichText, TargetRef,
};

use crate::harness::*;

struct NoSink;

impl CommitSink for NoSink {
    fn committed(&self, _: &[IngestOutcome]) {}
    fn batch(&self, _: usize, _: std::time::Duration) {}
}

on_both_backends!(store_contract => |backend| store_contract(backend));

fn from_chat(chat: &str, remote: &str, kind: EventKind) -> IngestItem {
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

fn hello() -> EventKind {
    EventKind::Message {
        body: RichText::plain("hello"),
        attachments: Vec::new(),
        reply_to: None,
    }
}

fn edit_of(remote: &str) -> EventKind {
    EventKind::Edit {
        target: TargetRef::Remote(RemoteId::new(remote).unwrap()),
        body: RichText::plain("fixed"),
    }
}

async fn store_contract(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::new(backend, dir.path()).await;
    let store = Store::open(&db.url, 4).await.unwrap();
    let (w, task) = writer::spawn(store.clone(), Arc::new(NoSink));
    let hello = hello();

    let first = w
        .ingest(from_chat("1", "100", hello.clone()))
        .await
        .unwrap();
    let Delivered::New(id) = first.delivered else {
        panic!("{first:?}")
    };
    assert_eq!(first.feed.len(), 1);
    assert_eq!(first.lanes.len(), 1);
    let again = w
        .ingest(from_chat("1", "100", hello.clone()))
        .await
        .unwrap();
    assert_eq!(again.delivered, Delivered::Duplicate(id));
    assert!(
        again.feed.is_empty() && again.lanes.is_empty(),
        "a redelivery adds nothing"
    );

    let hook: AccountId = "api.bots".parse().unwrap();
    let lane = ChannelId::new("webhook:x").unwrap();
    let rows: Vec<_> = store
        .pending(&hook, &lane, 0, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.expect("decodable"))
        .collect();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].event.id, id);

    // Say the hub delivered event `id` to chat 2, where it became "200".
    let tg: AccountId = "telegram.main".parse().unwrap();
    let chat2 = ChannelId::new("2").unwrap();
    // In two parts (an album, a split text): "200", then "200b".
    let part = |n: i64, remote: &str| MapEntry {
        event_id: id,
        account: tg.clone(),
        channel: chat2.clone(),
        part: n,
        remote_id: RemoteId::new(remote).unwrap(),
    };
    w.row(
        rows[0].id,
        RowUpdate::Sent {
            maps: vec![part(0, "200"), part(64, "200b")],
        },
    )
    .await
    .unwrap();
    assert!(store.pending(&hook, &lane, 0, 10).await.unwrap().is_empty());
    let ids = |v: Vec<RemoteId>| v.iter().map(|r| r.as_str().to_owned()).collect::<Vec<_>>();
    assert_eq!(
        ids(store.remote_ids_at(id, &tg, &chat2).await.unwrap()),
        ["200", "200b"],
        "every part, first first"
    );
    assert_eq!(
        ids(store
            .remote_ids_at(id, &tg, &ChannelId::new("1").unwrap())
            .await
            .unwrap()),
        ["100"],
        "the origin knows it by its own id"
    );
    assert!(store
        .remote_ids_at(id, &tg, &ChannelId::new("3").unwrap())
        .await
        .unwrap()
        .is_empty());
    // An echo of the second part is ours too.
    let echo = w
        .ingest(from_chat("2", "200b", hello.clone()))
        .await
        .unwrap();
    assert_eq!(echo.delivered, Delivered::Ignored);

    // Chat 2 echoing our own message back is dropped.
    let echo = w
        .ingest(from_chat("2", "200", hello.clone()))
        .await
        .unwrap();
    assert_eq!(echo.delivered, Delivered::Ignored);

    // Also when the send's outcome and the echo land in one group commit.
    let second = w
        .ingest(from_chat("1", "110", hello.clone()))
        .await
        .unwrap();
    let Delivered::New(id2) = second.delivered else {
        panic!("{second:?}")
    };
    let row = store
        .pending(&hook, &lane, 0, 10)
        .await
        .unwrap()
        .pop()
        .unwrap()
        .expect("decodable");
    assert_eq!(row.event.id, id2);
    let map = MapEntry {
        event_id: id2,
        account: tg.clone(),
        channel: chat2.clone(),
        part: 0,
        remote_id: RemoteId::new("210").unwrap(),
    };
    let (sent, echo) = tokio::join!(
        w.row(row.id, RowUpdate::Sent { maps: vec![map] }),
        w.ingest(from_chat("2", "210", hello.clone()))
    );
    sent.unwrap();
    assert_eq!(echo.unwrap().delivered, Delivered::Ignored);

    // Edits naming the message by either network's id resolve to `id`.
    // (An edit is an event of its own: adapters give it its own remote id.)
    for (chat, remote) in [("1", "100-edit-1"), ("2", "201")] {
        let o = w
            .ingest(from_chat(
                chat,
                remote,
                edit_of(if chat == "1" { "100" } else { "200" }),
            ))
            .await
            .unwrap();
        let Delivered::New(edit) = o.delivered else {
            panic!("{o:?}")
        };
        let stored = store.event(edit).await.unwrap().unwrap();
        assert_eq!(
            stored.kind.target(),
            Some(&TargetRef::Event(id)),
            "edit from chat {chat}"
        );
    }
    // A reference to a message the hub never saw stays as the network said.
    let o = w
        .ingest(from_chat("1", "101", edit_of("999")))
        .await
        .unwrap();
    let Delivered::New(edit) = o.delivered else {
        panic!("{o:?}")
    };
    let stored = store.event(edit).await.unwrap().unwrap();
    assert!(matches!(stored.kind.target(), Some(TargetRef::Remote(r)) if r.as_str() == "999"));
    assert_eq!(store.event(EventId(id.0 + 1000)).await.unwrap(), None);

    // A consumer's stored cursor only moves forward.
    for seq in [10, 5, 12] {
        w.cursor("api.bots/t".into(), "c".into(), seq, true).await;
    }
    assert_eq!(store.api_cursor("api.bots/t", "c").await.unwrap(), Some(12));
    w.cursor("api.bots/t".into(), "c".into(), 3, true).await;
    assert_eq!(store.api_cursor("api.bots/t", "c").await.unwrap(), Some(12));

    // Key-value changes commit with the events of their batch (an outage
    // notice and the outage it records), found again by their key's prefix.
    let tg: AccountId = "telegram.main".parse().unwrap();
    let change = |key: &str, value: Option<&str>| StateChange {
        account: tg.clone(),
        key: key.to_owned(),
        value: value.map(str::to_owned),
    };
    let batch = |items, state| IngestBatch {
        items,
        cursor: None,
        state,
    };
    w.ingest_batch(batch(
        vec![from_chat("1", "200", edit_of("100"))],
        vec![
            change("outage/-1", Some("a")),
            change("outage/-2", Some("b")),
            // Not under the prefix on either backend (SQLite's LIKE would
            // have taken it: it ignores case).
            change("Outage/-3", Some("c")),
        ],
    ))
    .await
    .unwrap();
    w.ingest_batch(batch(Vec::new(), vec![change("outage/-1", None)]))
        .await
        .unwrap();
    assert_eq!(
        store.adapter_states("outage/").await.unwrap(),
        vec![("telegram.main".into(), "outage/-2".into(), "b".into())],
        "set, then removed by a later batch"
    );

    // A network's messages arriving together: the echoes among them are
    // found (one query for a run, not one per message), the rest inserted
    // in order, a redelivery recognised, and an edit in their midst sees
    // the message it names, which came just before it in the same batch.
    let got: Vec<Delivered> = w
        .ingest_batch(batch(
            vec![
                from_chat("2", "300", hello.clone()),
                from_chat("2", "200", hello.clone()),
                from_chat("2", "301", hello.clone()),
                from_chat("2", "302", edit_of("300")),
                from_chat("2", "200b", hello.clone()),
                from_chat("2", "300", hello.clone()),
                from_chat("1", "100", hello),
            ],
            Vec::new(),
        ))
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.delivered)
        .collect();
    let [Delivered::New(a), Delivered::Ignored, Delivered::New(b), Delivered::New(edit), Delivered::Ignored, Delivered::Duplicate(again), Delivered::Duplicate(first)] =
        got[..]
    else {
        panic!("{got:?}")
    };
    assert!(a.0 < b.0 && b.0 < edit.0, "queue order: {got:?}");
    assert_eq!((again, first), (a, id));
    let stored = store.event(edit).await.unwrap().unwrap();
    assert_eq!(stored.kind.target(), Some(&TargetRef::Event(a)));

    drop(w);
    task.await.unwrap();
    store.close().await;
}

on_both_backends!(a_writer_given_up_on_stops => |backend| a_writer_given_up_on_stops(backend));

/// Shutting down gives the writer 5 s and then aborts its handle. On a
/// SQLite file the writer runs on a thread of its own; it must stop then
/// too (after the batch in hand), not write on while the next instance
/// takes the file.
async fn a_writer_given_up_on_stops(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::new(backend, dir.path()).await;
    let store = Store::open(&db.url, 4).await.unwrap();
    let (w, task) = writer::spawn(store.clone(), Arc::new(NoSink));
    let hello = hello();
    w.ingest(from_chat("1", "100", hello.clone()))
        .await
        .unwrap();
    task.abort();
    // It stops: a command is refused, not committed. Bounded: a writer
    // that runs on never refuses, and the loop gives up.
    let mut n = 0;
    let stopped = loop {
        n += 1;
        match w
            .ingest(from_chat("1", &format!("x{n}"), hello.clone()))
            .await
        {
            Err(e) => break Some(e),
            Ok(_) if n >= 200 => break None,
            Ok(_) => tokio::time::sleep(std::time::Duration::from_millis(25)).await,
        }
    };
    assert!(
        matches!(stopped, Some(switchboard::store::StoreError::WriterGone)),
        "the writer wrote on after its handle was aborted: {stopped:?}"
    );
}
