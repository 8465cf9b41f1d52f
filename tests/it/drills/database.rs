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
    for net in d.nets() {
        let who = d.peer(net).sender();
        let text = format!("{who}-{n:03}");
        let at = now_ms();
        d.peer(net).write(&text).await;
        d.wrote_at.insert(text.clone(), at);
        d.wrote.entry(who).or_default().push(text);
    }
    let text = format!("{API}-{n:03}");
    d.wrote_at.insert(text.clone(), now_ms());
    poster.tx.send(text.clone()).unwrap();
    d.wrote.entry(API).or_default().push(text);
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
    let mut d = Drill::start_with(backend, Options { db_url }).await;
    d.rounds_for(Duration::from_secs(3), Duration::from_secs(1))
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
    // On PostgreSQL, where a store write fails at once, the first message
    // from each network is a file: its blob is what cannot be stored, and
    // an adapter whose service hands messages over (signal-cli) stops
    // taking them there too. (SQLite's lock makes the write wait out its
    // busy timeout instead.)
    let files: Vec<(Net, String)> = d
        .nets()
        .into_iter()
        .map(|n| (n, format!("a file from {}", d.dest(n))))
        .collect();
    if pg.is_some() {
        for (net, text) in &files {
            d.peer(*net).write_file(text, "plan.txt", "the plan").await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let held_before: Vec<Option<usize>> = d
        .nets()
        .iter()
        .map(|n| d.peer(*n).unacknowledged())
        .collect();
    let poster = Poster::start(d.sb.api.clone());
    let first = d.n + 1;
    while failed.elapsed() + Duration::from_secs(1) < FAILURE {
        let next = Instant::now() + Duration::from_secs(1);
        round_through(&mut d, &poster).await;
        tokio::time::sleep_until(next.into()).await;
    }
    let during = first..=d.n;
    // What the networks hold for the bridge: a service that keeps
    // everything until the bridge acknowledges it after its commit
    // (Telegram's offset) still has all of it; one that hands messages over
    // as it sends them (signal-cli) keeps what came after the adapter
    // stopped asking, at least half.
    let written = during.clone().count();
    for (i, net) in d.nets().into_iter().enumerate() {
        let peer = d.peer(net);
        let (Some(before), Some(held)) = (held_before[i], peer.unacknowledged()) else {
            continue;
        };
        if peer.holds_until_acknowledged() {
            assert!(
                held >= before + written,
                "{}: acknowledged while the database failed: {held} held, {before} before and \
                 {written} written since",
                d.dest(net)
            );
        } else {
            assert!(
                held * 2 >= written,
                "{}: taken off the service while the database failed: {held} of {written} left",
                d.dest(net)
            );
        }
        report!(
            "drill database | {backend:?} | while failing, of {written} written on {}: {held} \
             still held by the service",
            d.dest(net)
        );
    }
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
    d.round().await;
    d.until_caught_up("every destination after the database is back")
        .await;
    d.sb.drained().await;
    for net in d.nets() {
        if d.peer(net).unacknowledged().is_some() {
            until(
                &format!("everything acknowledged on {}", d.dest(net)),
                || async { d.peer(net).unacknowledged() == Some(0) },
            )
            .await;
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(d.sb.pid(), pid, "recovered by itself, without a restart");
    if pg.is_some() {
        for (_, text) in &files {
            eventually(&format!("{text} at the bot"), || {
                d.ws.all().iter().any(|e| {
                    e["text"] == text.as_str() && e["attachments"][0]["name"] == "plan.txt"
                })
            })
            .await;
        }
    }
    d.assert_each_once_in_order().await;
    // No network was down: nobody is told anything.
    assert!(d.bot_notices().is_empty(), "{:#?}", d.bot_notices());
    for net in d.nets() {
        let seen = d.notices_on(net).await;
        assert!(seen.is_empty(), "notices on {}: {seen:#?}", d.dest(net));
    }
    let all = d.nets();
    d.report_latency(
        &format!("{backend:?}: the database failing {FAILURE:?}"),
        baseline,
        during,
        &all,
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
