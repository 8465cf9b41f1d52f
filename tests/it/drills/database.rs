//! Scenario 6: the database failing for 10 s mid-drill while everyone
//! keeps writing. PostgreSQL: a private server stopped hard and started
//! again. SQLite: the test holds an exclusive lock on the database file
//! (the tests run as root, so a read-only directory would not stop
//! switchboard), so every write fails as SQLITE_BUSY. Nothing written is
//! lost or doubled, nothing received is acknowledged upstream before it is
//! committed, and the same process recovers by itself.

use std::time::Duration;

use sqlx::Connection;
use tokio::sync::mpsc;

use super::*;

/// How long the database fails.
const FAILURE: Duration = Duration::from_secs(10);

/// The bot API sender while the database fails: posts in the order given,
/// each retried until 201 as a bot does with a 503.
struct Poster {
    tx: mpsc::UnboundedSender<String>,
    task: JoinHandle<Answers>,
}

/// What the poster was answered.
#[derive(Debug, Default)]
struct Answers {
    unavailable: usize,
    /// Every 503 said when to come back.
    retry_after: bool,
}

impl Poster {
    fn start(api: String) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<String>();
        let task = tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap();
            let mut answers = Answers {
                retry_after: true,
                ..Answers::default()
            };
            while let Some(text) = rx.recv().await {
                loop {
                    let r = client
                        .post(format!("{api}/v1/gateways/g/messages"))
                        .header("authorization", bearer("ann"))
                        .json(&json!({"text": text, "username": "Ann"}))
                        .send()
                        .await
                        .expect("the API answers while the database fails");
                    match r.status().as_u16() {
                        201 => break,
                        503 => {
                            answers.unavailable += 1;
                            answers.retry_after &= r.headers().contains_key("retry-after");
                            tokio::time::sleep(Duration::from_millis(250)).await;
                        }
                        s => panic!("{text}: HTTP {s}: {}", r.text().await.unwrap_or_default()),
                    }
                }
            }
            answers
        });
        Self { tx, task }
    }

    /// Waits for every post to be taken.
    async fn finish(self) -> Answers {
        drop(self.tx);
        self.task.await.unwrap()
    }
}

/// One message from each sender, the bot API's through `poster` (so the
/// others keep writing while a post waits for the database).
async fn round_through(d: &mut Drill, poster: &Poster) {
    d.n += 1;
    let n = d.n;
    for who in SENDERS {
        let text = format!("{who}-{n:03}");
        let at = now_ms();
        if who == "api" {
            poster.tx.send(text.clone()).unwrap();
        } else {
            d.write_as_person(who, &text).await;
        }
        d.wrote_at.insert(text.clone(), at);
        d.wrote.entry(who).or_default().push(text);
    }
}

/// A fresh database on a private server.
async fn fresh_database(pg: &PgServer) -> String {
    let mut conn = sqlx::postgres::PgConnection::connect(&pg.url())
        .await
        .expect("connect to the private PostgreSQL");
    sqlx::query("CREATE DATABASE sb_drill")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    format!("postgres://postgres@127.0.0.1:{}/sb_drill", pg.port)
}

async fn database_fails(backend: Backend) {
    let started = Instant::now();
    let pg = (backend == Backend::Postgres).then(|| {
        PgServer::start().expect(
            "PostgreSQL's server binaries (/usr/lib/postgresql/*/bin) are needed: run the tests with `bash .ci/run`",
        )
    });
    let db_url = match &pg {
        Some(pg) => Some(fresh_database(pg).await),
        None => None,
    };
    let mut d = Drill::start_with(
        backend,
        Options {
            db_url,
            ..Options::default()
        },
    )
    .await;
    d.rounds_for(Duration::from_secs(3), Duration::from_secs(1), true)
        .await;
    d.until_caught_up("the first rounds everywhere").await;
    let baseline = 1..=d.n;
    let pid = d.sb.pid();

    // The failure: PostgreSQL stopped hard, or SQLite's file locked.
    let mut lock = None;
    match &pg {
        Some(pg) => pg.down(),
        None => {
            let url = format!("sqlite://{}/sb.db", d.dir.path().display());
            let mut conn = sqlx::sqlite::SqliteConnection::connect(&url).await.unwrap();
            // Waits for a commit of switchboard's in progress.
            sqlx::query("PRAGMA busy_timeout = 10000")
                .execute(&mut conn)
                .await
                .unwrap();
            sqlx::query("BEGIN EXCLUSIVE")
                .execute(&mut conn)
                .await
                .unwrap();
            lock = Some(conn);
        }
    }
    let failed = Instant::now();
    // On PostgreSQL, where a store write fails at once, the first message is
    // a file: its blob is what cannot be stored, and the adapter stops
    // taking messages off Signal there too. (SQLite's lock makes the write
    // wait out its busy timeout instead.)
    let file = "a file from Sam";
    if pg.is_some() {
        d.signal.inject_message(
            SAM,
            Some(&d.group),
            json!({"message": file, "attachments": [{"contentType": "text/plain",
                "filename": "plan.txt", "text": "the plan"}]}),
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let pending_before = d.tg.pending_updates();
    let poster = Poster::start(d.sb.api.clone());
    let first = d.n + 1;
    while failed.elapsed() + Duration::from_secs(1) < FAILURE {
        let next = Instant::now() + Duration::from_secs(1);
        round_through(&mut d, &poster).await;
        tokio::time::sleep_until(next.into()).await;
    }
    let during = first..=d.n;
    // Telegram's updates are not confirmed while they cannot be committed.
    // signal-cli acknowledges what it hands over, so the adapter stops
    // taking messages once a commit fails: the rest stay on Signal's server
    // (those handed over before wait in the adapter).
    let unconfirmed = d.tg.pending_updates();
    let on_signal = d.signal.pending_envelopes();
    let written = during.clone().count();
    assert!(
        unconfirmed >= pending_before + written,
        "Telegram updates confirmed while the database failed: {unconfirmed} pending, \
         {pending_before} before and {written} written since"
    );
    // Only what arrived before the first commit failed was handed over
    // (one of nine in the runs so far; without the unsubscribe, none stay).
    assert!(
        on_signal * 2 >= written,
        "Signal messages taken off the server while the database failed: \
         {on_signal} of {written} left there"
    );
    report!(
        "drill database | {backend:?} | while failing, of {written} per network: Telegram updates \
         unconfirmed {unconfirmed}, Signal envelopes left on the server {on_signal}"
    );
    tokio::time::sleep(FAILURE.saturating_sub(failed.elapsed())).await;
    match &pg {
        Some(pg) => pg.up(),
        None => {
            let mut conn = lock.take().expect("the lock");
            sqlx::query("ROLLBACK").execute(&mut conn).await.unwrap();
            conn.close().await.unwrap();
        }
    }
    let healed = Instant::now();

    let answers = poster.finish().await;
    report!(
        "drill database | {backend:?} | failed {FAILURE:?}; bot API posts answered 503: {}; \
         every post taken {:?} after the database was back",
        answers.unavailable,
        healed.elapsed()
    );
    assert!(answers.retry_after, "every 503 carries Retry-After");
    d.round(true).await;
    d.until_caught_up("every destination after the database is back")
        .await;
    d.sb.drained().await;
    until("every Telegram update confirmed", || async {
        d.tg.pending_updates() == 0
    })
    .await;
    assert_eq!(d.signal.pending_envelopes(), 0, "taken again off Signal");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(d.sb.pid(), pid, "recovered by itself, without a restart");
    if pg.is_some() {
        eventually("Sam's file at the bot", || {
            d.ws.all()
                .iter()
                .any(|e| e["text"] == file && e["attachments"][0]["name"] == "plan.txt")
        })
        .await;
    }
    d.assert_each_once_in_order().await;
    // No network was down: nobody is told anything.
    assert!(d.bot_notices().is_empty(), "{:#?}", d.bot_notices());
    for net in Net::ALL {
        let seen = d.notices_on(net).await;
        assert!(seen.is_empty(), "notices on {net:?}: {seen:#?}");
    }
    d.report_latency(
        &format!("{backend:?}: the database failing {FAILURE:?}"),
        baseline,
        during,
        &Net::ALL,
    )
    .await;
    d.stop().await;
    drop(pg);
    report!(
        "drill wall time | drill_database_failing_{backend:?} | {:?}",
        started.elapsed()
    );
}

on_both_backends!(drill_database_failing_for_10s_loses_nothing_and_recovers_by_itself => |backend| database_fails(backend));
