//! Never acknowledge what was not committed: when the database refuses
//! writes (SQLite's disk full, PostgreSQL's connections dropped mid-commit),
//! posts answer 503, every post answered 201 is in the feed after a restart
//! under the id it was given, no id is handed out twice, and the server
//! recovers by itself once the database takes writes again.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use sqlx::Connection;

use crate::harness::*;

/// What the producers were told: id → text for every 201, and how many
/// posts got 503.
#[derive(Default)]
struct Told {
    created: Vec<(i64, String)>,
    unavailable: usize,
    other: Vec<String>,
}

/// `n` producers post `per` messages each, as fast as they get answers.
async fn produce(api: String, tag: &'static str, n: usize, per: usize, told: Arc<Mutex<Told>>) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let tasks: Vec<_> = (0..n)
        .map(|p| {
            let (client, api, told) = (client.clone(), api.clone(), told.clone());
            tokio::spawn(async move {
                for i in 0..per {
                    // Some bulk per message so the database fills quickly.
                    let text = format!("{tag} p{p} {i} {}", "x".repeat(400));
                    let r =
                        post_native(&client, &api, "producer", "g", json!({"text": text}), None)
                            .await;
                    let mut t = told.lock().unwrap();
                    match r {
                        Ok((201, body)) => {
                            let id = body["id"].as_str().unwrap().parse().unwrap();
                            t.created.push((id, text));
                        }
                        Ok((503, body)) => {
                            assert_eq!(body["error"]["code"], "service_unavailable", "{body}");
                            t.unavailable += 1;
                        }
                        Ok((status, body)) => t.other.push(format!("{status} {body}")),
                        Err(e) => t.other.push(e.to_string()),
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

/// Every message event of gateway `g` from the start of the feed, read over
/// SSE up to a marker posted last (the feed is in commit order, so once the
/// marker arrives everything committed before it has been read).
async fn whole_feed(api: &str) -> Vec<Value> {
    let client = reqwest::Client::new();
    let (status, body) = post_native(
        &client,
        api,
        "producer",
        "g",
        json!({"text": "end-of-feed marker"}),
        None,
    )
    .await
    .unwrap();
    assert_eq!(status, 201, "{body}");
    let resp = client
        .get(format!("{api}/v1/gateways/g/events?cursor=0"))
        .header("authorization", bearer("reader"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut out = Vec::new();
    let mut resp = resp;
    let mut buf = Vec::new();
    let read = async {
        while let Ok(Some(chunk)) = resp.chunk().await {
            buf.extend_from_slice(&chunk);
            while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=pos).collect();
                let line = String::from_utf8_lossy(&line);
                let Some(data) = line.trim().strip_prefix("data:") else {
                    continue;
                };
                let v: Value = serde_json::from_str(data.trim()).unwrap();
                if v["text"] == "end-of-feed marker" {
                    return;
                }
                out.push(v);
            }
        }
        panic!("the feed ended before the marker");
    };
    tokio::time::timeout(PATIENCE, read)
        .await
        .expect("the marker within PATIENCE");
    out
}

/// Checks the guarantee: ids unique among the 201s, and each 201 in the
/// feed under its id with its text.
fn assert_all_acknowledged_committed(told: &Told, feed: &[Value]) {
    let mut ids = HashSet::new();
    for (id, _) in &told.created {
        assert!(ids.insert(*id), "event id {id} was handed out twice");
    }
    let stored: HashMap<i64, &str> = feed
        .iter()
        .map(|e| {
            (
                e["id"].as_str().unwrap().parse().unwrap(),
                e["text"].as_str().unwrap(),
            )
        })
        .collect();
    let missing: Vec<i64> = told
        .created
        .iter()
        .filter(|(id, text)| stored.get(id) != Some(&text.as_str()))
        .map(|(id, _)| *id)
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged posts are not in the feed after a restart (first ids: {:?})",
        missing.len(),
        told.created.len(),
        &missing[..missing.len().min(10)]
    );
}

fn config(db: &Db, dir: &std::path::Path, api: u16, admin: u16, extra_db: &str) -> String {
    base_config(db, dir, api, admin).replacen("[database]\n", &format!("[database]\n{extra_db}"), 1)
        + &token("producer", r#"["write"]"#, r#"["g"]"#)
        + &token("reader", r#"["read"]"#, r#"["g"]"#)
        + &gateway("g")
}

/// SQLite answers "database or disk is full" once the file reaches
/// `database.max_size`; a ballast blob deleted by the admin frees space.
#[tokio::test]
async fn disk_full_never_acknowledges_what_was_not_committed_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::new(Backend::Sqlite, dir.path()).await;
    let (api, admin) = (free_port(), free_port());
    let cfg = config(&db, dir.path(), api, admin, "max_size = \"2MiB\"\n");
    let mut sb = Sb::start(dir.path(), &cfg, api, admin).await;
    let client = reqwest::Client::new();

    // Ballast the admin will delete later to make room.
    let ballast: String = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        vec![7u8; 600_000],
    );
    let (status, body) = post_native(
        &client,
        &sb.api,
        "producer",
        "g",
        json!({"text": "ballast", "attachments": [{"name": "ballast.bin", "data": ballast}]}),
        None,
    )
    .await
    .unwrap();
    assert_eq!(status, 201, "{body}");

    // Two consumers keep saving their cursors meanwhile: more kinds of
    // statement hit the full disk.
    let ws = sb.api.replace("http", "ws");
    for consumer in ["c1", "c2"] {
        let url = format!("{ws}/v1/ws?gateways=g&consumer={consumer}");
        ws_reader(&url, "reader", Inbox::default()).await;
    }
    // Fill the file: many posts get 503, and the ones that got 201 must be real.
    let told = Arc::new(Mutex::new(Told::default()));
    produce(sb.api.clone(), "full", 8, 1500, told.clone()).await;
    {
        let t = told.lock().unwrap();
        assert!(
            t.other.is_empty(),
            "unexpected answers: {:?}",
            &t.other[..t.other.len().min(5)]
        );
        assert!(
            t.unavailable > 100,
            "the database must have filled up ({} posts got 503, {} got 201)",
            t.unavailable,
            t.created.len()
        );
    }

    // The admin frees space behind the server's back; posting resumes
    // without a restart.
    // Then another process holds the write lock past the server's busy
    // timeout while posts keep coming: those fail as well (a statement-level
    // failure, where the full disk rolled whole transactions back).
    let url = format!("sqlite://{}/sb.db", dir.path().display());
    let mut admin_conn = sqlx::sqlite::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("PRAGMA busy_timeout = 10000")
        .execute(&mut admin_conn)
        .await
        .unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut admin_conn)
        .await
        .unwrap();
    let locked = tokio::spawn(produce(sb.api.clone(), "locked", 4, 3, told.clone()));
    tokio::time::sleep(Duration::from_secs(12)).await;
    sqlx::query("ROLLBACK")
        .execute(&mut admin_conn)
        .await
        .unwrap();
    locked.await.unwrap();

    // The admin frees space; posting resumes without a restart. A server
    // connection left holding a failed transaction open would keep the write
    // lock, and the space could never be freed.
    let free = async {
        sqlx::query("DELETE FROM blobs")
            .execute(&mut admin_conn)
            .await?;
        admin_conn.close().await
    };
    tokio::time::timeout(Duration::from_secs(30), free)
        .await
        .expect("freeing space must not wait on a lock the server never releases")
        .expect("freeing space");
    let resumed = Arc::new(Mutex::new(Told::default()));
    until("posting to resume after space was freed", || async {
        produce(sb.api.clone(), "probe", 1, 1, resumed.clone()).await;
        !resumed.lock().unwrap().created.is_empty()
    })
    .await;
    let after = Arc::new(Mutex::new(Told::default()));
    produce(sb.api.clone(), "after", 4, 25, after.clone()).await;
    {
        let a = after.lock().unwrap();
        assert!(a.other.is_empty(), "{:?}", a.other);
        assert_eq!(
            (a.created.len(), a.unavailable),
            (100, 0),
            "with space again, every post is taken"
        );
        let mut t = told.lock().unwrap();
        t.created
            .extend(resumed.lock().unwrap().created.iter().cloned());
        t.created.extend(a.created.iter().cloned());
    }

    sb.kill9();
    sb.restart().await;
    let feed = whole_feed(&sb.api).await;
    assert_all_acknowledged_committed(&told.lock().unwrap(), &feed);
    drop(sb);
}

/// PostgreSQL stopped hard for 15 s under a steady stream of posts: posts
/// answer 503 with Retry-After instead of hanging (a client gives up after
/// 10 s), nothing acknowledged is lost, and posting resumes without a
/// restart of switchboard once the server is back.
#[tokio::test]
async fn postgres_down_for_15s_answers_503_and_recovers_by_itself() {
    let pg = PgServer::start().expect(
        "PostgreSQL's server binaries (/usr/lib/postgresql/*/bin) are needed: run the tests with `bash .ci/run`",
    );
    let dir = tempfile::tempdir().unwrap();
    let db = Db { url: pg.url() };
    let (api, admin) = (free_port(), free_port());
    let cfg = config(&db, dir.path(), api, admin, "");
    let mut sb = Sb::start(dir.path(), &cfg, api, admin).await;

    let told = Arc::new(Mutex::new(Told::default()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let retry_after_seen = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let producers: Vec<_> = (0..4)
        .map(|p| {
            let (client, api, told, stop) =
                (client.clone(), sb.api.clone(), told.clone(), stop.clone());
            let retry_after_seen = retry_after_seen.clone();
            tokio::spawn(async move {
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    i += 1;
                    let text = format!("pg p{p} {i}");
                    let r = client
                        .post(format!("{api}/v1/gateways/g/messages"))
                        .header("authorization", bearer("producer"))
                        .json(&json!({"text": text}))
                        .send()
                        .await;
                    match r {
                        Ok(r) if r.status() == 201 => {
                            let body: Value = r.json().await.unwrap();
                            let id = body["id"].as_str().unwrap().parse().unwrap();
                            told.lock().unwrap().created.push((id, text));
                        }
                        Ok(r) if r.status() == 503 => {
                            told.lock().unwrap().unavailable += 1;
                            if r.headers().get("retry-after").is_none() {
                                retry_after_seen.store(false, std::sync::atomic::Ordering::SeqCst);
                            }
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        Ok(r) => told
                            .lock()
                            .unwrap()
                            .other
                            .push(format!("HTTP {}", r.status())),
                        Err(e) => told.lock().unwrap().other.push(format!("{e:?}")),
                    }
                }
            })
        })
        .collect();

    until("some posts before the outage", || async {
        told.lock().unwrap().created.len() >= 50
    })
    .await;
    pg.down();
    tokio::time::sleep(Duration::from_secs(15)).await;
    let during = told.lock().unwrap().unavailable;
    assert!(during > 0, "posts during the outage must get 503");
    pg.up();
    let before = told.lock().unwrap().created.len();
    until("posting to resume after PostgreSQL is back", || async {
        told.lock().unwrap().created.len() >= before + 50
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for p in producers {
        p.await.unwrap();
    }
    {
        let t = told.lock().unwrap();
        assert!(
            t.other.is_empty(),
            "every post is answered 201 or 503, none hangs: {:?}",
            &t.other[..t.other.len().min(5)]
        );
        assert!(
            retry_after_seen.load(std::sync::atomic::Ordering::SeqCst),
            "a 503 carries Retry-After"
        );
    }

    sb.kill9();
    sb.restart().await;
    let feed = whole_feed(&sb.api).await;
    assert_all_acknowledged_committed(&told.lock().unwrap(), &feed);
    drop(sb);
    drop(pg);
}
