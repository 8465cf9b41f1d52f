//! Two bots on the native API and two on the matterbridge routes, each
//! reading with a different transport, see each other's messages once, in
//! order, with authors and ids; consumers that come late get everything.

use std::collections::HashMap;

use serde_json::{json, Value};

use crate::harness::*;

const N: usize = 25;
const BOTS: [&str; 4] = ["ann", "bob", "cat", "dan"];

on_both_backends!(four_bots_see_each_other_once_in_order => |backend| four_bots(backend));

/// (sender, sequence) from texts like "ann 7".
fn parse(text: &str) -> (String, usize) {
    let (who, n) = text.split_once(' ').unwrap();
    (who.to_owned(), n.parse().unwrap())
}

fn assert_once_in_order(reader: &str, msgs: &[(String, usize)], expected_senders: &[&str]) {
    for s in expected_senders {
        let seq: Vec<usize> = msgs
            .iter()
            .filter(|(w, _)| w == s)
            .map(|(_, n)| *n)
            .collect();
        assert_eq!(
            seq,
            (0..N).collect::<Vec<_>>(),
            "{reader} got {s}'s messages out of order or not once"
        );
    }
    assert_eq!(
        msgs.len(),
        expected_senders.len() * N,
        "{reader} got extra messages"
    );
}

async fn four_bots(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::new(backend, dir.path()).await;
    let (api, admin) = (free_port(), free_port());
    let rw = r#"["read", "write"]"#;
    let mut cfg = base_config(&db, dir.path(), api, admin);
    for b in BOTS {
        cfg += &token(b, rw, r#"["g"]"#);
    }
    cfg += &token("eve", r#"["read"]"#, r#"["g"]"#);
    cfg += &token("fay", r#"["read"]"#, r#"["*"]"#);
    cfg += &gateway("g");
    let sb = Sb::start(dir.path(), &cfg, api, admin).await;
    let ws = sb.api.replace("http", "ws");
    let client = reqwest::Client::new();

    // ann: native WebSocket; bob: SSE; cat: matterbridge WebSocket (it also
    // posts through it); dan: matterbridge NDJSON stream.
    let inbox: HashMap<&str, Inbox> = BOTS.iter().map(|b| (*b, Inbox::default())).collect();
    ws_reader(
        &format!("{ws}/v1/ws?gateways=g"),
        "ann",
        inbox["ann"].clone(),
    )
    .await;
    line_reader(
        &client,
        &format!("{}/v1/gateways/g/events", sb.api),
        "bob",
        true,
        inbox["bob"].clone(),
    )
    .await;
    let (cat_ws, ()) = ws_connect(&format!("{ws}/api/websocket"), "cat").await;
    let (mut cat_tx, mut cat_rx) = futures_util::StreamExt::split(cat_ws);
    let cat_inbox = inbox["cat"].clone();
    tokio::spawn(async move {
        use futures_util::StreamExt;
        while let Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t))) = cat_rx.next().await {
            cat_inbox.push(serde_json::from_str(&t).unwrap());
        }
    });
    line_reader(
        &client,
        &format!("{}/api/stream", sb.api),
        "dan",
        false,
        inbox["dan"].clone(),
    )
    .await;
    // matterbridge clients start with the greeting.
    inbox["cat"].wait_len(1, "cat's greeting").await;
    inbox["dan"].wait_len(1, "dan's greeting").await;

    let post = |who: &'static str| {
        let (client, api) = (client.clone(), sb.api.clone());
        tokio::spawn(async move {
            for i in 0..N {
                let text = format!("{who} {i}");
                let (status, body) = match who {
                    "ann" | "bob" => post_native(
                        &client,
                        &api,
                        who,
                        "g",
                        json!({"text": text, "username": who.to_uppercase()}),
                        None,
                    )
                    .await
                    .unwrap(),
                    _ => post_mb(
                        &client,
                        &api,
                        who,
                        json!({"text": text, "username": who.to_uppercase(), "gateway": "g"}),
                    )
                    .await
                    .unwrap(),
                };
                assert!(status == 200 || status == 201, "{who}: {status} {body}");
                assert!(
                    !body["id"].as_str().unwrap().is_empty(),
                    "{who} got no id: {body}"
                );
            }
        })
    };
    let posters = [post("ann"), post("bob"), post("dan")];
    for i in 0..N {
        let frame = json!({"text": format!("cat {i}"), "username": "CAT", "gateway": "g"});
        use futures_util::SinkExt;
        cat_tx
            .send(tokio_tungstenite::tungstenite::Message::Text(
                frame.to_string().into(),
            ))
            .await
            .unwrap();
    }
    for p in posters {
        p.await.unwrap();
    }

    for b in BOTS {
        let greeting = usize::from(matches!(b, "cat" | "dan"));
        inbox[b]
            .wait_len(3 * N + greeting, &format!("{b}'s messages"))
            .await;
    }
    // Give duplicates, if any, a moment to show up before counting.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    let mut ids: HashMap<String, String> = HashMap::new();
    for b in BOTS {
        let events = inbox[b].all();
        if matches!(b, "cat" | "dan") {
            assert_eq!(events[0]["event"], "api_connected", "{b}: greeting first");
        }
        let msgs: Vec<&Value> = events
            .iter()
            .filter(|e| e["event"] != "api_connected")
            .collect();
        let parsed: Vec<(String, usize)> = msgs
            .iter()
            .map(|e| parse(e["text"].as_str().unwrap()))
            .collect();
        let others: Vec<&str> = BOTS.iter().copied().filter(|o| *o != b).collect();
        assert_once_in_order(b, &parsed, &others);
        for (e, (who, _)) in msgs.iter().zip(&parsed) {
            // Authors are kept, in each shape's own field.
            let author = e
                .get("author")
                .map_or_else(|| e["username"].clone(), |a| a["name"].clone());
            assert_eq!(author, json!(who.to_uppercase()), "{b}: author of {e}");
            // Every consumer sees the same stable id for the same message.
            let id = e["id"].as_str().unwrap().to_owned();
            let text = e["text"].as_str().unwrap().to_owned();
            assert_eq!(
                ids.entry(text.clone()).or_insert_with(|| id.clone()),
                &id,
                "{b}: id of {text}"
            );
        }
    }
    assert_eq!(ids.len(), 4 * N);

    // A consumer connecting late, with no cursor of its own, gets
    // everything, in the order the others saw it.
    let late = Inbox::default();
    line_reader(
        &client,
        &format!("{}/v1/gateways/g/events", sb.api),
        "eve",
        true,
        late.clone(),
    )
    .await;
    late.wait_len(4 * N, "eve's late catch-up").await;
    let cursors: Vec<i64> = late
        .all()
        .iter()
        .map(|e| e["cursor"].as_i64().unwrap())
        .collect();
    assert!(cursors.windows(2).all(|w| w[0] < w[1]), "cursors increase");
    let parsed: Vec<(String, usize)> = late
        .all()
        .iter()
        .map(|e| parse(e["text"].as_str().unwrap()))
        .collect();
    assert_once_in_order("eve", &parsed, &BOTS);

    // matterbridge polling: fay gets everything once; polling does not
    // drain anyone else (eve's and the others' streams are untouched).
    let first = poll_mb(&client, &sb.api, "fay").await;
    assert_eq!(first.len(), 4 * N);
    assert!(
        poll_mb(&client, &sb.api, "fay").await.is_empty(),
        "second poll returns nothing new"
    );
    let again = Inbox::default();
    line_reader(
        &client,
        &format!("{}/v1/gateways/g/events?consumer=second", sb.api),
        "eve",
        true,
        again.clone(),
    )
    .await;
    again
        .wait_len(4 * N, "a second consumer of eve's token")
        .await;
}
