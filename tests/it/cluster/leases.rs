//! The lease table and fencing, against the real PostgreSQL (the store's
//! SQL in `store::postgres`, the writer's fence check): no timing is
//! asserted, leases are made to run out by waiting for it.

use std::time::Duration;

use switchboard::store::postgres::{self as pg, Fence, Holder, LeaseKey, LeaseKind};
use switchboard::store::writer;
use switchboard::store::writer::exec::Tx;
use switchboard::store::{IngestBatch, OpenOptions, Store, StoreError};
use switchboard_core::Cursor;

use super::{message, pool, sink};
use crate::harness::*;

fn holder(name: &str, run_id: i64) -> Holder {
    Holder {
        name: name.into(),
        run_id,
    }
}

/// Tries `who`'s acquire until it takes something (the lease runs out).
async fn take_once_run_out(
    pool: &sqlx::AnyPool,
    who: &Holder,
    ttl: i64,
    kind: LeaseKind,
    accounts: &[String],
) -> Vec<pg::Taken> {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let got = pg::acquire(pool, who, ttl, kind, accounts, 10)
            .await
            .unwrap();
        if !got.is_empty() {
            return got;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the lease never ran out"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_account_lease_moves_only_once_run_out_and_its_old_holder_cannot_commit() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::new(Backend::Postgres, dir.path()).await;
    let store = Store::open_with(
        &db.url,
        &OpenOptions {
            cluster: Some("a".into()),
            ..OpenOptions::new(4)
        },
    )
    .await
    .unwrap();
    let pool = pool(&db.url).await;
    let (a, b) = (holder("a", 11), holder("b", 22));
    let accounts = vec!["telegram.main".to_owned()];
    let key = LeaseKey::account("telegram.main");
    pg::ensure(&pool, std::slice::from_ref(&key)).await.unwrap();
    // Short leases: this test waits for them to run out.
    let ttl = 300;

    let first = pg::acquire(&pool, &a, ttl, LeaseKind::Account, &accounts, 1)
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].held.token, 1);
    assert_eq!(first[0].from, None, "nobody held it before");
    let renewed = pg::renew(&pool, &a, 60_000).await.unwrap();
    assert_eq!(renewed.len(), 1);
    assert!(
        pg::acquire(&pool, &b, ttl, LeaseKind::Account, &accounts, 1)
            .await
            .unwrap()
            .is_empty(),
        "a lease that runs is not taken"
    );

    // `a` stops renewing (paused, or cut off): once its lease ran out, `b`
    // takes it, with a new token.
    pg::renew(&pool, &a, ttl).await.unwrap();
    let taken = take_once_run_out(&pool, &b, ttl, LeaseKind::Account, &accounts).await;
    assert_eq!(taken[0].held.token, 2);
    assert_eq!(taken[0].from.as_deref(), Some("a"));
    assert!(taken[0].idle_ms >= 0);
    assert!(
        pg::renew(&pool, &a, ttl).await.unwrap().is_empty(),
        "a's renewal finds it lost the lease"
    );

    // What `a` still had in flight (events and the cursor they bring it
    // to) is refused as a whole; nothing of it is in the store.
    let batch = |text: &str, offset: &str| IngestBatch {
        items: vec![message("-100", text, text)],
        cursor: Some((
            "telegram.main".parse().unwrap(),
            Cursor {
                name: "offset".into(),
                value: offset.into(),
            },
        )),
        ..IngestBatch::default()
    };
    let old = Fence {
        account: "telegram.main".into(),
        run_id: a.run_id,
        token: 1,
    };
    let (wa, ta) = writer::spawn(store.clone(), sink(Some(old)));
    match wa.ingest_batch(batch("late", "7")).await {
        Err(StoreError::Fenced(account)) => assert_eq!(account, "telegram.main"),
        other => panic!("the old holder's batch must be refused: {other:?}"),
    }
    // A batch without a cursor (a bot's post) is not the lease's business.
    wa.ingest(message("-100", "post", "post")).await.unwrap();
    // Not holding the lease at all: refused too.
    let (wn, tn) = writer::spawn(store.clone(), sink(None));
    assert!(matches!(
        wn.ingest_batch(batch("nobody", "8")).await,
        Err(StoreError::Fenced(_))
    ));
    let account = "telegram.main".parse().unwrap();
    assert_eq!(store.net_cursor(&account, "offset").await.unwrap(), None);

    // The new holder commits with its token.
    let new = Fence {
        account: "telegram.main".into(),
        run_id: b.run_id,
        token: 2,
    };
    let (wb, tb) = writer::spawn(store.clone(), sink(Some(new)));
    wb.ingest_batch(batch("on time", "9")).await.unwrap();
    assert_eq!(
        store
            .net_cursor(&account, "offset")
            .await
            .unwrap()
            .as_deref(),
        Some("9")
    );
    let feed = store
        .feed_after(0, &[switchboard_core::GatewayName::new("g").unwrap()], 10)
        .await
        .unwrap();
    let texts: Vec<String> = feed
        .iter()
        .filter_map(|f| match &f.event.kind {
            switchboard_core::EventKind::Message { body, .. } => Some(body.text.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(texts, ["post", "on time"], "nothing of the refused batches");

    // Given back: free at once, with a new token, for anyone.
    pg::release(&pool, &b, std::slice::from_ref(&key))
        .await
        .unwrap();
    let again = pg::acquire(&pool, &a, ttl, LeaseKind::Account, &accounts, 1)
        .await
        .unwrap();
    assert_eq!(
        again[0].held.token, 4,
        "taken, given back, taken: a new token each time"
    );
    assert_eq!(again[0].from, None, "given back, not run out");
    drop((wa, wb, wn));
    for t in [ta, tb, tn] {
        t.await.unwrap();
    }
}

#[tokio::test]
async fn a_write_in_progress_keeps_its_lease_until_it_commits() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::new(Backend::Postgres, dir.path()).await;
    let _store = Store::open(&db.url, 2).await.unwrap();
    let pool = pool(&db.url).await;
    let (a, b) = (holder("a", 1), holder("b", 2));
    let accounts = vec!["signal.main".to_owned()];
    pg::ensure(&pool, &[LeaseKey::account("signal.main")])
        .await
        .unwrap();
    let taken = pg::acquire(&pool, &a, 200, LeaseKind::Account, &accounts, 1)
        .await
        .unwrap();
    let fence = Fence {
        account: "signal.main".into(),
        run_id: a.run_id,
        token: taken[0].held.token,
    };
    // `a`'s writer checks its fence; its transaction is still open when the
    // lease runs out.
    let mut tx = pool.begin().await.unwrap();
    assert_eq!(
        pg::check_fences(&mut Tx::Any(&mut tx), &[&fence])
            .await
            .unwrap(),
        [true]
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    // Run out, but locked by the write: skipped, not waited for.
    assert!(
        pg::acquire(&pool, &b, 200, LeaseKind::Account, &accounts, 1)
            .await
            .unwrap()
            .is_empty(),
        "a lease whose holder is committing is not taken under it"
    );
    tx.commit().await.unwrap();
    let taken = take_once_run_out(&pool, &b, 200, LeaseKind::Account, &accounts).await;
    assert_eq!(taken[0].from.as_deref(), Some("a"));
    let mut tx = pool.begin().await.unwrap();
    assert_eq!(
        pg::check_fences(&mut Tx::Any(&mut tx), &[&fence])
            .await
            .unwrap(),
        [false],
        "after the commit, the old fence fails"
    );
    tx.rollback().await.unwrap();
}

#[tokio::test]
async fn lanes_spread_over_instances_and_move_when_one_dies() {
    use switchboard::cluster::balance::{plan, Plan};
    let dir = tempfile::tempdir().unwrap();
    let db = Db::new(Backend::Postgres, dir.path()).await;
    let _store = Store::open(&db.url, 2).await.unwrap();
    let pool = pool(&db.url).await;
    let accounts = vec!["api.bots".to_owned()];
    let lanes: Vec<LeaseKey> = (0..30)
        .map(|k| LeaseKey::lane("api.bots", format!("webhook:h{k}")))
        .collect();
    pg::ensure(&pool, &lanes).await.unwrap();
    let who: Vec<Holder> = ["a", "b", "c"]
        .iter()
        .enumerate()
        .map(|(i, n)| holder(n, i as i64 + 1))
        .collect();
    // Each takes its share, as the lease round does; together they hold
    // every lane once.
    let mut held = vec![0i64; 3];
    for (i, h) in who.iter().enumerate() {
        if let Plan::Take(n) = plan(30, 3, held[i]) {
            held[i] += pg::acquire(&pool, h, 60_000, LeaseKind::Lane, &accounts, n)
                .await
                .unwrap()
                .len() as i64;
        }
    }
    assert_eq!(held, [10, 10, 10]);
    // `c` dies: once its leases ran out, the two left take 5 each.
    pg::renew(&pool, &who[2], 100).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in 0..2 {
        if let Plan::Take(n) = plan(30, 2, held[i]) {
            held[i] += pg::acquire(&pool, &who[i], 60_000, LeaseKind::Lane, &accounts, n)
                .await
                .unwrap()
                .len() as i64;
        }
    }
    assert_eq!(&held[..2], [15, 15]);
    let rows = pg::leases(&pool).await.unwrap();
    for l in rows.iter().filter(|l| l.kind == "lane") {
        assert!(
            matches!(l.holder.as_deref(), Some("a" | "b")),
            "every lane has a live holder: {l:?}"
        );
    }
}
