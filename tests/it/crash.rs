//! kill -9 while 5,000 messages are in flight, then restart: every message
//! reaches every consumer, none twice, in order per channel.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::harness::*;

const PRODUCERS: usize = 8;
const PER_PRODUCER: usize = 625;
const TOTAL: usize = PRODUCERS * PER_PRODUCER;

on_both_backends!(kill9_with_5000_in_flight_loses_and_duplicates_nothing => |backend| kill9(backend, "fsync"));
// `database.durability = "process"` leaves the fsync to the operating
// system: a kill -9 of switchboard must lose nothing all the same.
on_both_backends!(kill9_with_process_durability_loses_and_duplicates_nothing => |backend| kill9(backend, "process"));

/// A WebSocket consumer that reconnects from its last cursor until told
/// to stop, as a bot that wants exactly-once does.
fn resuming_reader(ws_base: String, inbox: Inbox) -> tokio::task::JoinHandle<()> {
    let cursor = Arc::new(AtomicI64::new(0));
    tokio::spawn(async move {
        loop {
            let url = format!(
                "{ws_base}/v1/ws?gateways=g&cursor={}",
                cursor.load(Ordering::SeqCst)
            );
            let mut req =
                tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
                    url.as_str(),
                )
                .unwrap();
            req.headers_mut()
                .insert("authorization", bearer("reader").parse().unwrap());
            let Ok((ws, _)) = tokio_tungstenite::connect_async(req).await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let (_tx, mut rx) = ws.split();
            while let Some(Ok(msg)) = rx.next().await {
                if let tokio_tungstenite::tungstenite::Message::Text(t) = msg {
                    let v: Value = serde_json::from_str(&t).unwrap();
                    cursor.store(v["cursor"].as_i64().unwrap(), Ordering::SeqCst);
                    inbox.push(v);
                }
            }
        }
    })
}

/// (producer, sequence) from "p3 17".
fn parse(text: &str) -> (usize, usize) {
    let (p, n) = text.trim_start_matches('p').split_once(' ').unwrap();
    (p.parse().unwrap(), n.parse().unwrap())
}

fn assert_per_producer_order(what: &str, items: &[(usize, usize)]) {
    let mut last: HashMap<usize, usize> = HashMap::new();
    for (p, n) in items {
        if let Some(prev) = last.insert(*p, *n) {
            assert!(
                *n > prev,
                "{what}: producer {p} sent {prev} before {n}, received in the other order"
            );
        }
    }
}

async fn kill9(backend: Backend, durability: &str) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::new(backend, dir.path()).await;
    let (api, admin) = (free_port(), free_port());
    let mut hook = Receiver::new();
    hook.up().await;
    // A send that times out is sent again (its answer was lost, as far as
    // switchboard knows): on a loaded machine the test's receiver can take
    // longer than the harness's 2 s to answer, which would repeat sends
    // the kill had nothing to do with.
    let cfg = base_config(&db, dir.path(), api, admin)
        .replace(
            "[database]\n",
            &format!("[database]\ndurability = \"{durability}\"\n"),
        )
        .replace("send_timeout = \"2s\"", "send_timeout = \"15s\"")
        + &token("producer", r#"["write"]"#, r#"["g"]"#)
        + &token("reader", r#"["read"]"#, r#"["g"]"#)
        + &webhook("hook", hook.port, r#"["g"]"#)
        + &gateway("g");
    let mut sb = Sb::start(dir.path(), &cfg, api, admin).await;
    let inbox = Inbox::default();
    let reader = resuming_reader(sb.api.replace("http", "ws"), inbox.clone());

    // Each producer posts its messages in order, retrying a failed post
    // with the same Idempotency-Key, as a careful bot does.
    let posted = Arc::new(AtomicUsize::new(0));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let (client, api, posted) = (client.clone(), sb.api.clone(), posted.clone());
            tokio::spawn(async move {
                for i in 0..PER_PRODUCER {
                    let body = json!({"text": format!("p{p} {i}")});
                    let key = format!("p{p}-{i}");
                    loop {
                        match post_native(&client, &api, "producer", "g", body.clone(), Some(&key))
                            .await
                        {
                            Ok((200 | 201, _)) => break,
                            _ => tokio::time::sleep(Duration::from_millis(50)).await,
                        }
                    }
                    posted.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();

    until_count("half the messages posted", TOTAL / 2, || {
        posted.load(Ordering::SeqCst)
    })
    .await;
    sb.kill9();
    let at_kill = posted.load(Ordering::SeqCst);
    assert!(
        at_kill < TOTAL,
        "the kill must land while messages are in flight"
    );
    sb.restart().await;
    for p in producers {
        p.await.unwrap();
    }

    inbox.wait_len(TOTAL, "the reader's 5,000 messages").await;
    until_count("the webhook's 5,000 deliveries", TOTAL, || {
        hook.deliveries()
            .iter()
            .map(|d| d.delivery_id.clone())
            .collect::<HashSet<_>>()
            .len()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    reader.abort();

    // The reader resumes from its cursor: exactly once, in commit order.
    let events = inbox.all();
    assert_eq!(events.len(), TOTAL, "reader got duplicates");
    let cursors: Vec<i64> = events
        .iter()
        .map(|e| e["cursor"].as_i64().unwrap())
        .collect();
    assert!(cursors.windows(2).all(|w| w[0] < w[1]));
    let items: Vec<(usize, usize)> = events
        .iter()
        .map(|e| parse(e["text"].as_str().unwrap()))
        .collect();
    assert_eq!(
        items.iter().collect::<HashSet<_>>().len(),
        TOTAL,
        "reader: every message once"
    );
    assert_per_producer_order("reader", &items);

    // The webhook: every message, in event order. A delivery whose answer
    // was lost to the kill may be repeated, with the same delivery id so
    // the receiver can tell; nothing else repeats.
    let deliveries = hook.deliveries();
    let mut seen = HashSet::new();
    let mut firsts = Vec::new();
    let mut repeats = 0;
    for d in &deliveries {
        if seen.insert(d.delivery_id.clone()) {
            firsts.push(d);
        } else {
            repeats += 1;
        }
    }
    assert!(
        repeats <= 1,
        "only the send in flight at the kill may repeat, got {repeats} repeats"
    );
    let ids: Vec<i64> = firsts
        .iter()
        .map(|d| d.body["id"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "webhook deliveries in event order"
    );
    let items: Vec<(usize, usize)> = firsts
        .iter()
        .map(|d| parse(d.body["text"].as_str().unwrap()))
        .collect();
    assert_eq!(
        items.iter().collect::<HashSet<_>>().len(),
        TOTAL,
        "webhook: every message"
    );
    assert_per_producer_order("webhook", &items);
    drop(sb);
}
