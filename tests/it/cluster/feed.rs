//! Feeds that cannot skip: with several writers, a feed row whose number
//! was taken early may commit after a larger one; a consumer reading
//! `seq > cursor` in between would pass it for good. In a cluster the
//! writer takes the feed's numbers under a lock held to the commit, so a
//! reader never sees a number before every smaller one is committed.

use std::sync::Arc;
use std::time::Duration;

use sqlx::Row;
use switchboard::store::postgres as pg;
use switchboard::store::writer;
use switchboard::store::writer::exec::Tx;
use switchboard::store::{OpenOptions, Store};
use switchboard_core::{Delivered, GatewayName};

use super::{message, pool, sink};
use crate::harness::*;

fn g() -> Vec<GatewayName> {
    vec![GatewayName::new("g").unwrap()]
}

/// Every feed row's number, in order.
async fn all_seqs(store: &Store) -> Vec<i64> {
    let mut seqs = Vec::new();
    let mut after = 0;
    loop {
        let page = store.feed_after(after, &g(), 500).await.unwrap();
        let Some(last) = page.last() else {
            return seqs;
        };
        after = last.seq;
        seqs.extend(page.iter().map(|f| f.seq));
    }
}

/// A consumer: reads after its cursor, as the API's subscriptions do.
#[derive(Default)]
struct Reader {
    cursor: i64,
    seen: Vec<i64>,
}

impl Reader {
    async fn read(&mut self, store: &Store) {
        loop {
            let page = store.feed_after(self.cursor, &g(), 500).await.unwrap();
            let Some(last) = page.last() else {
                return;
            };
            self.cursor = last.seq;
            self.seen.extend(page.iter().map(|f| f.seq));
        }
    }
}

/// Another instance's transaction holds feed number `n` (taken under the
/// cluster's ordering lock when `ordered`) while this instance's writer
/// commits a row; a reader reads in between, then once more at the end.
/// Returns (the held number, the writer's number, what the reader saw,
/// every number in the table).
async fn race(ordered: bool) -> (i64, i64, Vec<i64>, Vec<i64>) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::new(Backend::Postgres, dir.path()).await;
    let store = Store::open_with(
        &db.url,
        &OpenOptions {
            cluster: ordered.then(|| "b".to_owned()),
            ..OpenOptions::new(4)
        },
    )
    .await
    .unwrap();
    let (w, task) = writer::spawn(store.clone(), sink(None));
    let pool = pool(&db.url).await;
    // The other instance's event, committed; its feed row is not yet.
    let mut first = message("-100", "a1", "a1");
    first.feed.clear();
    let Delivered::New(id) = w.ingest(first).await.unwrap().delivered else {
        panic!("a new event")
    };
    let mut held = pool.begin().await.unwrap();
    if ordered {
        pg::lock_feed_order(&mut Tx::Any(&mut held)).await.unwrap();
    }
    let held_seq: i64 = sqlx::query(
        "INSERT INTO feed (gateway, event_id, origin_token) VALUES ('g', $1, NULL) RETURNING seq",
    )
    .bind(id.0)
    .fetch_one(&mut *held)
    .await
    .unwrap()
    .try_get(0)
    .unwrap();
    // This instance's writer commits a row meanwhile.
    let w2 = w.clone();
    let mine = tokio::spawn(async move { w2.ingest(message("-100", "b1", "b1")).await.unwrap() });
    if ordered {
        // It waits for the lock (not asserted by time: found in pg_locks).
        until("the writer to wait for the feed's ordering lock", || {
            let pool = pool.clone();
            async move {
                let n: i64 = sqlx::query(
                    "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted \
                     AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                )
                .fetch_one(&pool)
                .await
                .unwrap()
                .try_get(0)
                .unwrap();
                n > 0
            }
        })
        .await;
    } else {
        until("the writer's row to commit", || {
            let store = store.clone();
            async move { !all_seqs(&store).await.is_empty() }
        })
        .await;
    }
    let mut reader = Reader::default();
    reader.read(&store).await;
    held.commit().await.unwrap();
    let mine = mine.await.unwrap();
    reader.read(&store).await;
    drop(w);
    task.await.unwrap();
    (
        held_seq,
        mine.feed[0].seq,
        reader.seen,
        all_seqs(&store).await,
    )
}

#[tokio::test]
async fn a_reader_never_passes_a_row_another_instance_commits_later() {
    let (held, mine, seen, all) = race(true).await;
    assert!(
        mine > held,
        "numbers are handed out in commit order: {held} then {mine}"
    );
    assert_eq!(seen, all, "the reader saw every row, in order");
    assert_eq!(all, [held, mine]);
}

#[tokio::test]
async fn without_the_ordering_lock_a_reader_would_skip() {
    // The control: numbers taken outside the lock (as by a single writer,
    // which is alone) commit out of order, and the reader passes one.
    let (held, mine, seen, all) = race(false).await;
    assert!(mine > held);
    assert_eq!(all, [held, mine]);
    assert_eq!(seen, [mine], "row {held} was passed for good");
}

#[tokio::test]
async fn three_writers_committing_at_once_leave_no_gap_behind_a_reader() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::new(Backend::Postgres, dir.path()).await;
    let mut writers = Vec::new();
    let mut stores = Vec::new();
    for name in ["a", "b", "c"] {
        let store = Store::open_with(
            &db.url,
            &OpenOptions {
                cluster: Some(name.into()),
                ..OpenOptions::new(4)
            },
        )
        .await
        .unwrap();
        writers.push(writer::spawn(store.clone(), sink(None)));
        stores.push(store);
    }
    let reader_store = stores[0].clone();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reading = {
        let done = done.clone();
        tokio::spawn(async move {
            let mut r = Reader::default();
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                r.read(&reader_store).await;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            r.read(&reader_store).await;
            r
        })
    };
    let mut posts = Vec::new();
    for (i, (w, _)) in writers.iter().enumerate() {
        for n in 0..150 {
            let w = w.clone();
            posts.push(tokio::spawn(async move {
                let remote = format!("{i}-{n}");
                w.ingest(message("-100", &remote, &remote)).await.unwrap();
            }));
        }
    }
    for p in posts {
        p.await.unwrap();
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let reader = reading.await.unwrap();
    let all = all_seqs(&stores[1]).await;
    assert_eq!(all.len(), 450);
    assert_eq!(reader.seen, all, "the reader passed no row");
    for (w, t) in writers {
        drop(w);
        t.await.unwrap();
    }
}
