//! The rest of the bot API's surface: attachments (multipart and base64)
//! through every shape, idempotent posts, tokens from files, dead letters,
//! and the OpenAPI document.

use base64::Engine;
use serde_json::{json, Value};

use crate::harness::*;

on_both_backends!(attachments_idempotency_and_openapi => |backend| attachments_idempotency_and_openapi(backend));

async fn attachments_idempotency_and_openapi(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::new(backend, dir.path()).await;
    let (api, admin) = (free_port(), free_port());
    let mut hook = Receiver::new();
    hook.up().await;
    std::fs::write(dir.path().join("writer.token"), "token-from-a-file-0123\n").unwrap();
    let cfg = base_config(&db, dir.path(), api, admin)
        + "\n[[api.bots.tokens]]\nname = \"writer\"\ntoken_file = \"writer.token\"\ngateways = [\"g\"]\n"
        + &token("reader", r#"["read"]"#, r#"["g"]"#)
        + &webhook("hook", hook.port, r#"["g"]"#)
        + &gateway("g");
    let sb = Sb::start(dir.path(), &cfg, api, admin).await;
    let client = reqwest::Client::new();
    let auth = "Bearer token-from-a-file-0123";
    let url = format!("{}/v1/gateways/g/messages", sb.api);

    // Multipart: a JSON payload and a file part.
    let png: Vec<u8> = (0u8..=255).cycle().take(3000).collect();
    let form = reqwest::multipart::Form::new()
        .text(
            "payload",
            json!({"text": "a picture", "username": "W"}).to_string(),
        )
        .part(
            "file",
            reqwest::multipart::Part::bytes(png.clone())
                .file_name("pic.png")
                .mime_str("image/png")
                .unwrap(),
        );
    let r = client
        .post(&url)
        .header("authorization", auth)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    // Base64 in JSON, posted twice with one Idempotency-Key.
    let body = json!({"text": "notes", "attachments": [{"name": "notes.txt", "mime": "text/plain", "data": base64::engine::general_purpose::STANDARD.encode("hello file")}]});
    let first: Value = client
        .post(&url)
        .header("authorization", auth)
        .header("idempotency-key", "k1")
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let r = client
        .post(&url)
        .header("authorization", auth)
        .header("idempotency-key", "k1")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "a repeated key is not a new message");
    let second: Value = r.json().await.unwrap();
    assert_eq!(first["id"], second["id"]);
    assert_eq!(second["duplicate"], true);
    // The same key for a different body is a mistake, not a repeat.
    let r = client
        .post(&url)
        .header("authorization", auth)
        .header("idempotency-key", "k1")
        .json(&json!({"text": "something else"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409, "a conflict with the first request");
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("different request"),
        "{body}"
    );

    // The native stream describes the files; the blob route serves them.
    let inbox = Inbox::default();
    line_reader(
        &client,
        &format!("{}/v1/gateways/g/events", sb.api),
        "reader",
        true,
        inbox.clone(),
    )
    .await;
    inbox.wait_len(2, "both messages").await;
    let events = inbox.all();
    assert_eq!(
        texts(&events),
        ["a picture", "notes"],
        "the repeated post is not delivered twice"
    );
    let pic = &events[0]["attachments"][0];
    assert_eq!(pic["name"], "pic.png");
    assert_eq!(pic["kind"], "image");
    assert_eq!(pic["size"], 3000);
    let bytes = client
        .get(format!("{}{}", sb.api, pic["url"].as_str().unwrap()))
        .header("authorization", bearer("reader"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(bytes.to_vec(), png);

    // matterbridge polling inlines the bytes in Extra.file[].Data.
    let polled: Vec<Value> = poll_mb(&client, &sb.api, "reader").await;
    let file = &polled[1]["Extra"]["file"][0];
    assert_eq!(file["Name"], "notes.txt");
    let data = base64::engine::general_purpose::STANDARD
        .decode(file["Data"].as_str().unwrap())
        .unwrap();
    assert_eq!(data, b"hello file");

    // Webhooks get the same description.
    eventually("webhook deliveries", || hook.deliveries().len() == 2).await;
    assert_eq!(
        hook.deliveries()[0].body["attachments"][0]["sha256"],
        pic["sha256"]
    );

    // The OpenAPI document is served without a token and names the routes.
    let doc: Value = client
        .get(format!("{}/v1/openapi.json", sb.api))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/v1/gateways/{gw}/messages",
        "/v1/gateways/{gw}/events",
        "/v1/ws",
        "/api/message",
        "/api/stream",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} documented");
    }
}

#[tokio::test]
async fn a_permanent_failure_is_dead_lettered_with_its_reason_and_the_queue_moves_on() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::new(Backend::Sqlite, dir.path()).await;
    let (api, admin) = (free_port(), free_port());
    let mut hook = Receiver::new();
    hook.up().await;
    hook.set(Mode::Status(410));
    let cfg = base_config(&db, dir.path(), api, admin)
        + &token("writer", r#"["write"]"#, r#"["g"]"#)
        + &webhook("hook", hook.port, r#"["g"]"#)
        + &gateway("g");
    let sb = Sb::start(dir.path(), &cfg, api, admin).await;
    let client = reqwest::Client::new();
    post_native(
        &client,
        &sb.api,
        "writer",
        "g",
        json!({"text": "lost cause"}),
        None,
    )
    .await
    .unwrap();
    until("a dead letter", || async {
        sb.metrics()
            .await
            .contains("switchboard_dead_letters_total{account=\"api.bots\"} 1")
    })
    .await;
    assert_eq!(
        hook.refused_at.lock().unwrap().len(),
        1,
        "a permanent failure is not retried"
    );
    hook.set(Mode::Accept);
    post_native(
        &client,
        &sb.api,
        "writer",
        "g",
        json!({"text": "next"}),
        None,
    )
    .await
    .unwrap();
    eventually("the next message", || hook.deliveries().len() == 1).await;
    assert_eq!(hook.deliveries()[0].body["text"], "next");

    // The receiver records a delivery just before it answers, so the row
    // may still be queued for a moment.
    let status = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args(["--config", sb.config.to_str().unwrap(), "status"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines()
            .find(|l| l.starts_with("api.bots"))
            .unwrap()
            .to_owned()
    };
    until("the row to leave the queue", || {
        std::future::ready(status().split_whitespace().nth(2) == Some("0"))
    })
    .await;
    let row = status();
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cols[..4], ["api.bots", "up", "0", "1"], "{row}");
    assert!(row.contains("410"), "the reason is kept: {row}");
}

#[tokio::test]
async fn sigterm_exits_even_with_a_client_that_stopped_reading() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::new(Backend::Sqlite, dir.path()).await;
    let (api, admin) = (free_port(), free_port());
    let cfg = base_config(&db, dir.path(), api, admin)
        + &token("writer", r#"["write"]"#, r#"["g"]"#)
        + &token("reader", r#"["read"]"#, r#"["g"]"#)
        + &gateway("g");
    let mut sb = Sb::start(dir.path(), &cfg, api, admin).await;
    // A WebSocket consumer that never reads: the server's writes to it
    // block once the socket buffers are full.
    let (stalled, ()) = ws_connect(
        &format!("{}/v1/ws?gateways=g", sb.api.replace("http", "ws")),
        "reader",
    )
    .await;
    let client = reqwest::Client::new();
    let text = "x".repeat(2000);
    for _ in 0..3000 {
        let (status, _) = post_native(&client, &sb.api, "writer", "g", json!({"text": text}), None)
            .await
            .unwrap();
        assert_eq!(status, 201);
    }
    let started = std::time::Instant::now();
    sb.stop().await;
    assert!(started.elapsed() < PATIENCE);
    drop(stalled);
}

/// Generated delivery ids carry the database's own random id: a receiver
/// that deduplicates by delivery id never takes a new database's first
/// messages for repeats of an old one's.
#[tokio::test]
async fn delivery_ids_differ_across_a_database_reset() {
    let mut ids = Vec::new();
    for _ in 0..2 {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::new(Backend::Sqlite, dir.path()).await;
        let (api, admin) = (free_port(), free_port());
        let mut hook = Receiver::new();
        hook.up().await;
        let cfg = base_config(&db, dir.path(), api, admin)
            + &token("producer", r#"["write"]"#, r#"["g"]"#)
            + &webhook("hook", hook.port, r#"["g"]"#)
            + &gateway("g");
        let sb = Sb::start(dir.path(), &cfg, api, admin).await;
        let client = reqwest::Client::new();
        let (status, _) = post_native(
            &client,
            &sb.api,
            "producer",
            "g",
            json!({"text": "first"}),
            None,
        )
        .await
        .unwrap();
        assert_eq!(status, 201);
        eventually("the delivery", || hook.deliveries().len() == 1).await;
        ids.push(hook.deliveries()[0].delivery_id.clone());
    }
    assert_ne!(ids[0], ids[1], "event 1 of two databases: {ids:?}");
}

/// matterbridge polling is at least once: the stored cursor moves past a
/// response only when the bot polls again, so a response lost to a crash
/// (kill -9 right after answering) is offered again after the restart.
#[tokio::test]
async fn a_poll_lost_to_a_crash_is_offered_again() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::new(Backend::Sqlite, dir.path()).await;
    let (api, admin) = (free_port(), free_port());
    let cfg = base_config(&db, dir.path(), api, admin)
        + &token("producer", r#"["write"]"#, r#"["g"]"#)
        + &token("poller", r#"["read"]"#, r#"["g"]"#)
        + &gateway("g");
    let mut sb = Sb::start(dir.path(), &cfg, api, admin).await;
    let client = reqwest::Client::new();
    for i in 0..3 {
        let (status, _) = post_native(
            &client,
            &sb.api,
            "producer",
            "g",
            json!({"text": format!("m{i}")}),
            None,
        )
        .await
        .unwrap();
        assert_eq!(status, 201);
    }
    let first = texts(&poll_mb(&client, &sb.api, "poller").await);
    assert_eq!(first, ["m0", "m1", "m2"]);
    // Say that answer never reached the bot: switchboard dies right after.
    sb.kill9();
    sb.restart().await;
    let again = texts(&poll_mb(&client, &sb.api, "poller").await);
    assert_eq!(again, ["m0", "m1", "m2"], "offered again, not lost");
    // Polling again confirms it: nothing is repeated from here on.
    assert!(poll_mb(&client, &sb.api, "poller").await.is_empty());
    let (status, _) = post_native(
        &client,
        &sb.api,
        "producer",
        "g",
        json!({"text": "m3"}),
        None,
    )
    .await
    .unwrap();
    assert_eq!(status, 201);
    assert_eq!(texts(&poll_mb(&client, &sb.api, "poller").await), ["m3"]);
    assert!(poll_mb(&client, &sb.api, "poller").await.is_empty());
}

/// A matterbridge bot new to this server gets at most `buffer` past
/// messages, as with matterbridge, not the whole history.
#[tokio::test]
async fn a_new_matterbridge_consumer_gets_at_most_buffer_past_messages() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::new(Backend::Sqlite, dir.path()).await;
    let (api, admin) = (free_port(), free_port());
    let cfg = base_config(&db, dir.path(), api, admin).replace(
        &format!("bind = \"127.0.0.1:{api}\"\n"),
        &format!("bind = \"127.0.0.1:{api}\"\nbuffer = 5\n"),
    ) + &token("producer", r#"["write"]"#, r#"["g"]"#)
        + &token("poller", r#"["read"]"#, r#"["g"]"#)
        + &gateway("g");
    let sb = Sb::start(dir.path(), &cfg, api, admin).await;
    let client = reqwest::Client::new();
    for i in 0..8 {
        let (status, _) = post_native(
            &client,
            &sb.api,
            "producer",
            "g",
            json!({"text": format!("m{i}")}),
            None,
        )
        .await
        .unwrap();
        assert_eq!(status, 201);
    }
    assert_eq!(
        texts(&poll_mb(&client, &sb.api, "poller").await),
        ["m3", "m4", "m5", "m6", "m7"]
    );
    let (status, _) = post_native(
        &client,
        &sb.api,
        "producer",
        "g",
        json!({"text": "m8"}),
        None,
    )
    .await
    .unwrap();
    assert_eq!(status, 201);
    assert_eq!(texts(&poll_mb(&client, &sb.api, "poller").await), ["m8"]);
}

/// With `?ack=true` the stored cursor of a WebSocket consumer moves only as
/// far as the client acknowledges: what was in flight when the connection
/// dropped comes again on the next one.
#[tokio::test]
async fn websocket_acks_move_the_stored_cursor() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let dir = tempfile::tempdir().unwrap();
    let db = Db::new(Backend::Sqlite, dir.path()).await;
    let (api, admin) = (free_port(), free_port());
    let cfg = base_config(&db, dir.path(), api, admin)
        + &token("producer", r#"["write"]"#, r#"["g"]"#)
        + &token("reader", r#"["read"]"#, r#"["g"]"#)
        + &gateway("g");
    let sb = Sb::start(dir.path(), &cfg, api, admin).await;
    let client = reqwest::Client::new();
    let ws = sb.api.replace("http", "ws");
    let url = format!("{ws}/v1/ws?gateways=g&ack=true&consumer=acker");
    let (mut conn, ()) = ws_connect(&url, "reader").await;
    for i in 0..3 {
        let (status, _) = post_native(
            &client,
            &sb.api,
            "producer",
            "g",
            json!({"text": format!("m{i}")}),
            None,
        )
        .await
        .unwrap();
        assert_eq!(status, 201);
    }
    let mut got = Vec::new();
    while got.len() < 3 {
        if let Some(Ok(Message::Text(t))) = conn.next().await {
            got.push(serde_json::from_str::<Value>(&t).unwrap());
        }
    }
    // Acknowledging more than was sent is refused.
    ws_send(&mut conn, &json!({"type": "ack", "cursor": 1_000_000})).await;
    let Some(Ok(Message::Text(t))) = conn.next().await else {
        panic!("an answer to a bad ack")
    };
    assert!(t.contains("acknowledge only what you received"), "{t}");
    // The client confirms the first two, then its connection drops.
    ws_send(
        &mut conn,
        &json!({"type": "ack", "cursor": got[1]["cursor"]}),
    )
    .await;
    conn.close(None).await.unwrap();
    drop(conn);
    // Reconnecting without a cursor resumes after the acknowledged one
    // (once the dropped connection's cursor is saved: it is written in the
    // background as the connection ends).
    until(
        "the unacknowledged message first on a new connection",
        || async {
            let (mut again, ()) = ws_connect(&url, "reader").await;
            let first = tokio::time::timeout(std::time::Duration::from_secs(2), async {
                loop {
                    match again.next().await {
                        Some(Ok(Message::Text(t))) => {
                            break Some(serde_json::from_str::<Value>(&t).unwrap())
                        }
                        Some(Ok(_)) => continue,
                        _ => break None,
                    }
                }
            })
            .await
            .ok()
            .flatten();
            let _ = again.close(None).await;
            first.is_some_and(|f| f["text"] == "m2")
        },
    )
    .await;
    // Without ?ack=true, an ack is a mistake the client is told about.
    let (mut plain, ()) =
        ws_connect(&format!("{ws}/v1/ws?gateways=g&cursor=latest"), "reader").await;
    ws_send(&mut plain, &json!({"type": "ack", "cursor": 1})).await;
    let Some(Ok(Message::Text(t))) = plain.next().await else {
        panic!("an answer")
    };
    assert!(t.contains("?ack=true"), "{t}");
}

/// `GET /api/messages` never builds a response past its byte cap: large
/// files are referenced by URL instead of inlined, and what does not fit
/// comes with the next poll, every message once and in order.
#[tokio::test]
async fn matterbridge_polls_stay_under_their_byte_cap() {
    use base64::Engine;
    let dir = tempfile::tempdir().unwrap();
    let db = Db::new(Backend::Sqlite, dir.path()).await;
    let (api, admin) = (free_port(), free_port());
    let cfg = base_config(&db, dir.path(), api, admin).replace(
        &format!("bind = \"127.0.0.1:{api}\"\n"),
        &format!("bind = \"127.0.0.1:{api}\"\nmax_response_bytes = \"3KiB\"\n"),
    ) + &token("producer", r#"["write"]"#, r#"["g"]"#)
        + &token("poller", r#"["read"]"#, r#"["g"]"#)
        + &gateway("g");
    let sb = Sb::start(dir.path(), &cfg, api, admin).await;
    let client = reqwest::Client::new();
    let big = base64::engine::general_purpose::STANDARD.encode(vec![1u8; 200_000]);
    let (status, _) = post_native(
        &client,
        &sb.api,
        "producer",
        "g",
        json!({"text": "a big file", "attachments": [{"name": "big.bin", "data": big}]}),
        None,
    )
    .await
    .unwrap();
    assert_eq!(status, 201);
    for i in 0..6 {
        let (status, _) = post_native(
            &client,
            &sb.api,
            "producer",
            "g",
            json!({"text": format!("m{i} {}", "x".repeat(600))}),
            None,
        )
        .await
        .unwrap();
        assert_eq!(status, 201);
    }
    let mut all = Vec::new();
    let mut polls = 0;
    loop {
        let r = client
            .get(format!("{}/api/messages", sb.api))
            .header("authorization", bearer("poller"))
            .send()
            .await
            .unwrap();
        let raw = r.bytes().await.unwrap();
        assert!(raw.len() <= 3 * 1024, "one response of {} bytes", raw.len());
        let got: Vec<Value> = serde_json::from_slice(&raw).unwrap();
        if got.is_empty() {
            break;
        }
        polls += 1;
        all.extend(got);
    }
    assert!(polls >= 2, "the messages came over several polls ({polls})");
    let file = &all[0]["Extra"]["file"][0];
    assert!(file["Data"].is_null(), "a 200 KB file is not inlined");
    assert_eq!(file["URL"].as_str().unwrap().len(), "/v1/blobs/".len() + 64);
    let texts: Vec<String> = all
        .iter()
        .map(|m| {
            m["text"]
                .as_str()
                .unwrap()
                .split(' ')
                .next()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(texts, ["a", "m0", "m1", "m2", "m3", "m4", "m5"]);
}

/// One SSE connection of `reader` (consumer `s`) on gateway `g`.
struct SseConn {
    resp: reqwest::Response,
    buf: Vec<u8>,
    id: Option<String>,
}

impl SseConn {
    /// Connects, sending `Last-Event-ID: last` when given.
    async fn open(client: &reqwest::Client, api: &str, last: Option<&str>) -> Self {
        let mut req = client
            .get(format!("{api}/v1/gateways/g/events?consumer=s"))
            .header("authorization", bearer("reader"));
        if let Some(last) = last {
            req = req.header("last-event-id", last);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 200);
        Self {
            resp,
            buf: Vec::new(),
            id: None,
        }
    }

    /// The next `n` events as (id, text): what the client processes.
    async fn take(&mut self, n: usize) -> Vec<(String, String)> {
        // One deadline for all: keep-alive comments arrive meanwhile.
        let deadline = tokio::time::Instant::now() + PATIENCE;
        let mut got = Vec::new();
        while got.len() < n {
            while let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                let line = String::from_utf8_lossy(&line).trim().to_owned();
                if let Some(v) = line.strip_prefix("id:") {
                    self.id = Some(v.trim().to_owned());
                } else if let Some(data) = line.strip_prefix("data:") {
                    let v: Value = serde_json::from_str(data.trim()).unwrap();
                    let text = v["text"].as_str().unwrap().to_owned();
                    got.push((self.id.take().expect("an id before the data"), text));
                    if got.len() == n {
                        return got;
                    }
                }
            }
            let chunk = tokio::time::timeout_at(deadline, self.resp.chunk())
                .await
                .expect("the next SSE event in time")
                .unwrap()
                .expect("the stream goes on");
            self.buf.extend_from_slice(&chunk);
        }
        got
    }
}

fn texts_of(got: &[(String, String)]) -> Vec<String> {
    got.iter().map(|g| g.1.clone()).collect()
}

/// An SSE consumer's stored cursor is at least once: events written to a
/// connection whose client never processed them (in its buffers when it
/// died) come again to a client reconnecting on its stored cursor; the
/// cursor moves only when a client reconnects with `Last-Event-ID: N` (it
/// has N), and never past the newest event.
#[tokio::test]
async fn sse_stored_cursors_move_only_on_last_event_id() {
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let db = Db::new(Backend::Sqlite, dir.path()).await;
    let (api, admin) = (free_port(), free_port());
    let cfg = base_config(&db, dir.path(), api, admin)
        + &token("producer", r#"["write"]"#, r#"["g"]"#)
        + &token("reader", r#"["read"]"#, r#"["g"]"#)
        + &gateway("g");
    let sb = Sb::start(dir.path(), &cfg, api, admin).await;
    let client = reqwest::Client::new();
    let post = |text: &str| {
        let (client, api, text) = (client.clone(), sb.api.clone(), text.to_owned());
        async move {
            let (status, _) =
                post_native(&client, &api, "producer", "g", json!({"text": text}), None)
                    .await
                    .unwrap();
            assert_eq!(status, 201);
        }
    };
    // A client processes two events, then hangs while events keep coming
    // for a while (the server writes them to its connection), and dies.
    let mut first = SseConn::open(&client, &sb.api, None).await;
    post("m0").await;
    post("m1").await;
    assert_eq!(texts_of(&first.take(2).await), ["m0", "m1"]);
    for i in 2..=5 {
        post(&format!("m{i}")).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    post("m6").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(first);
    tokio::time::sleep(Duration::from_millis(300)).await;
    post("m7").await;
    // Reconnecting on the stored cursor: nothing was acknowledged, so
    // everything comes again, none of it skipped.
    let mut again = SseConn::open(&client, &sb.api, None).await;
    post("m8").await;
    let mut got = again.take(1).await;
    assert_eq!(
        texts_of(&got),
        ["m0"],
        "the stored cursor did not move on what was only written"
    );
    got.extend(again.take(3).await);
    assert_eq!(texts_of(&got), ["m0", "m1", "m2", "m3"]);
    drop(again);
    // Reconnecting with Last-Event-ID of m2: the stream resumes after it,
    // and that is saved as what the client has.
    let mut resumed = SseConn::open(&client, &sb.api, Some(&got[2].0)).await;
    assert_eq!(texts_of(&resumed.take(1).await), ["m3"]);
    drop(resumed);
    let mut stored = SseConn::open(&client, &sb.api, None).await;
    assert_eq!(
        texts_of(&stored.take(1).await),
        ["m3"],
        "resumes after the Last-Event-ID"
    );
    drop(stored);
    // An id beyond the newest event is saved as the newest (before the
    // response starts), so nothing posted later is skipped.
    drop(SseConn::open(&client, &sb.api, Some("1000000000")).await);
    post("m9").await;
    let mut after = SseConn::open(&client, &sb.api, None).await;
    assert_eq!(texts_of(&after.take(1).await), ["m9"]);
}

on_both_backends!(large_uploads_are_stored_once_in_chunks_and_round_trip => |backend| large_uploads(backend));

/// A file of several megabytes, posted as multipart and as base64 JSON,
/// is stored once, in chunks of at most 1 MiB (written as it arrives, not
/// held whole), and comes back byte for byte; an upload cut off by the size
/// limit leaves nothing behind; and error bodies do not echo a large input.
async fn large_uploads(backend: Backend) {
    use sha2::Digest;
    use sqlx::Row;
    const MIB: usize = 1 << 20;
    let dir = tempfile::tempdir().unwrap();
    let db = Db::new(backend, dir.path()).await;
    let (api, admin) = (free_port(), free_port());
    let cfg = base_config(&db, dir.path(), api, admin).replace(
        &format!("bind = \"127.0.0.1:{api}\"\n"),
        &format!("bind = \"127.0.0.1:{api}\"\nmax_body_bytes = {}\n", 8 * MIB),
    ) + &token("bot", r#"["read", "write"]"#, r#"["g"]"#)
        + &gateway("g");
    let sb = Sb::start(dir.path(), &cfg, api, admin).await;
    let client = reqwest::Client::new();
    let url = format!("{}/v1/gateways/g/messages", sb.api);
    // Not a multiple of the chunk size, and no two chunks alike.
    let mut x = 0x2545_f491_u32;
    let file: Vec<u8> = (0..5 * MIB + 123_457)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x.to_le_bytes()[0]
        })
        .collect();
    let sha = hex::encode(sha2::Sha256::digest(&file));
    let multipart = |data: Vec<u8>| {
        reqwest::multipart::Form::new().text("text", "big").part(
            "file",
            reqwest::multipart::Part::bytes(data)
                .file_name("big.bin")
                .mime_str("application/x-big")
                .unwrap(),
        )
    };
    let r = client
        .post(&url)
        .header("authorization", bearer("bot"))
        .multipart(multipart(file.clone()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let b64 = base64::engine::general_purpose::STANDARD.encode(&file);
    let (status, body) = post_native(
        &client,
        &sb.api,
        "bot",
        "g",
        json!({"text": "again", "attachments": [{"name": "big.bin", "data": b64}]}),
        None,
    )
    .await
    .unwrap();
    assert_eq!(status, 201, "{body}");

    let r = client
        .get(format!("{}/v1/blobs/{sha}", sb.api))
        .header("authorization", bearer("bot"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/x-big");
    assert_eq!(r.content_length(), Some(file.len() as u64));
    let got = r.bytes().await.unwrap();
    assert!(
        got[..] == file[..],
        "the download is the upload, byte for byte"
    );

    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&db.url).await.unwrap();
    let count = |sql: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query(sql)
                .fetch_one(&pool)
                .await
                .unwrap()
                .try_get::<i64, _>(0)
                .unwrap()
        }
    };
    let chunks = file.len().div_ceil(MIB);
    assert_eq!(count("SELECT COUNT(*) FROM blobs").await, 1, "stored once");
    assert_eq!(
        count("SELECT COUNT(*) FROM blob_chunks").await,
        chunks as i64,
        "in chunks, once"
    );
    assert!(count("SELECT MAX(LENGTH(data)) FROM blob_chunks").await <= MIB as i64);

    // Over the limit: refused, and what was written of it is deleted.
    let r = client
        .post(&url)
        .header("authorization", bearer("bot"))
        .multipart(multipart(vec![7; 9 * MIB]))
        .send()
        .await;
    if let Ok(r) = r {
        assert_eq!(r.status(), 413);
    }
    until("the cut-off upload's chunks deleted", || async {
        count("SELECT COUNT(*) FROM blob_chunks").await == chunks as i64
    })
    .await;
    assert_eq!(count("SELECT COUNT(*) FROM blobs").await, 1);

    // Bad base64 past the first decoding step is found where it is.
    let mut bad = base64::engine::general_purpose::STANDARD.encode(&file[..400_000]);
    bad.replace_range(300_000..300_001, "!");
    let (status, body) = post_native(
        &client,
        &sb.api,
        "bot",
        "g",
        json!({"text": "bad", "attachments": [{"name": "bad.bin", "data": bad}]}),
        None,
    )
    .await
    .unwrap();
    assert_eq!(status, 422);
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("offset 300000"), "{message}");

    // Errors quote what was wrong, but not a megabyte of it.
    let huge = "x".repeat(MIB);
    for (what, body) in [
        (
            "a value of the wrong type",
            json!({"text": "t", "spans": huge}),
        ),
        (
            "an unknown field",
            Value::Object([(huge.clone(), json!(1))].into_iter().collect()),
        ),
        (
            "a file name",
            json!({"text": "t", "attachments": [{"name": huge, "data": "!"}]}),
        ),
    ] {
        let r = client
            .post(&url)
            .header("authorization", bearer("bot"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 422, "{what}");
        let text = r.text().await.unwrap();
        assert!(text.len() < 1024, "{what}: {} bytes of error", text.len());
        let v: Value = serde_json::from_str(&text).unwrap();
        assert!(
            v["error"]["message"].as_str().unwrap().ends_with('…'),
            "{what}: {v}"
        );
    }
    pool.close().await;
}
