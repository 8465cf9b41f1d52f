//! A webhook that refuses connections, hangs, or answers 429 delays only its
//! own queue: the healthy consumer and the healthy webhook keep flowing; the
//! backlog drains in order when it recovers, also across a restart.

use std::time::Duration;

use serde_json::json;

use crate::harness::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Refuse,
    Hang,
    TooMany,
}

on_both_backends!(refusing_webhook_delays_only_its_queue_and_survives_restart => |backend| outage(backend, Fault::Refuse));

on_both_backends!(hanging_webhook_delays_only_its_queue => |backend| outage(backend, Fault::Hang));

on_both_backends!(rate_limited_webhook_is_retried_after_retry_after => |backend| outage(backend, Fault::TooMany));

async fn post_all(client: &reqwest::Client, api: &str, prefix: &str, n: usize) -> Vec<String> {
    let mut texts = Vec::new();
    for i in 0..n {
        let text = format!("{prefix} {i}");
        let (status, body) = post_native(client, api, "producer", "g", json!({"text": text}), None)
            .await
            .unwrap();
        assert_eq!(status, 201, "{body}");
        texts.push(text);
    }
    texts
}

fn hook_texts(r: &Receiver) -> Vec<String> {
    r.deliveries()
        .iter()
        .map(|d| d.body["text"].as_str().unwrap().to_owned())
        .collect()
}

async fn outage(backend: Backend, fault: Fault) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::new(backend, dir.path()).await;
    let (api, admin) = (free_port(), free_port());
    let (mut bad, mut good) = (Receiver::new(), Receiver::new());
    bad.up().await;
    good.up().await;
    let cfg = base_config(&db, dir.path(), api, admin)
        + &token("producer", r#"["write"]"#, r#"["g"]"#)
        + &token("reader", r#"["read"]"#, r#"["g"]"#)
        + &webhook("bad", bad.port, r#"["g"]"#)
        + &webhook("good", good.port, r#"["g"]"#)
        + &gateway("g");
    let mut sb = Sb::start(dir.path(), &cfg, api, admin).await;
    let client = reqwest::Client::new();
    let ws = sb.api.replace("http", "ws");
    let reader = Inbox::default();
    ws_reader(&format!("{ws}/v1/ws?gateways=g"), "reader", reader.clone()).await;

    let mut expected = post_all(&client, &sb.api, "before", 5).await;
    eventually("first deliveries", || {
        hook_texts(&bad).len() == 5 && hook_texts(&good).len() == 5
    })
    .await;

    match fault {
        Fault::Refuse => bad.down(),
        Fault::Hang => bad.set(Mode::Hang),
        Fault::TooMany => bad.set(Mode::TooMany(1)),
    }
    expected.extend(post_all(&client, &sb.api, "during", 20).await);
    // Everyone else gets the messages while the bad webhook is still down.
    reader.wait_len(25, "the reader during the outage").await;
    eventually("the good webhook during the outage", || {
        hook_texts(&good).len() == 25
    })
    .await;
    assert_eq!(hook_texts(&bad).len(), 5);
    assert!(
        sb.queue_depth().await >= 20,
        "the bad webhook's messages wait in its queue"
    );
    assert_eq!(texts(&reader.all()), expected);

    if fault == Fault::Refuse {
        // The good webhook's rows are marked sent (the receiver records a
        // delivery just before answering); only the bad one's 20 wait.
        until("the queue to settle at 20", || async {
            sb.queue_depth().await == 20
        })
        .await;
        // The backlog survives a restart in between, and status shows it.
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args(["--config", sb.config.to_str().unwrap(), "status"])
            .output()
            .unwrap();
        let status = String::from_utf8_lossy(&out.stdout);
        let row = status
            .lines()
            .find(|l| l.starts_with("api.bots"))
            .unwrap_or_default()
            .to_owned();
        assert!(
            row.contains("webhook bad"),
            "status shows the last error: {status}"
        );
        sb.kill9();
        sb.restart().await;
        let resumed = Inbox::default();
        let last = reader.all().last().unwrap()["cursor"].as_i64().unwrap();
        ws_reader(
            &format!("{ws}/v1/ws?gateways=g&cursor={last}"),
            "reader",
            resumed.clone(),
        )
        .await;
        expected.extend(post_all(&client, &sb.api, "after-restart", 5).await);
        resumed.wait_len(5, "the reader after the restart").await;
        eventually("the good webhook after the restart", || {
            hook_texts(&good).len() == 30
        })
        .await;
        assert_eq!(hook_texts(&bad).len(), 5);
    }

    if fault != Fault::Refuse {
        // Let the fault bite more than once: timeouts or 429s, then retries.
        let refused = bad.refused_at.clone();
        eventually("repeated failed attempts", || {
            refused.lock().unwrap().len() >= 3
        })
        .await;
    }
    match fault {
        Fault::Refuse => bad.up().await,
        Fault::Hang | Fault::TooMany => bad.set(Mode::Accept),
    }
    eventually("the backlog to drain", || {
        hook_texts(&bad).len() >= expected.len()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        hook_texts(&bad),
        expected,
        "the backlog drains in order, exactly once"
    );
    assert_eq!(hook_texts(&good), expected);
    let ids: Vec<String> = bad
        .deliveries()
        .iter()
        .map(|d| d.delivery_id.clone())
        .collect();
    let unique: std::collections::HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len());

    if fault == Fault::TooMany {
        let refused: Vec<_> = bad.refused_at.lock().unwrap().iter().copied().collect();
        assert!(refused.len() >= 2, "the 429s were retried");
        for w in refused.windows(2) {
            let gap = w[1] - w[0];
            assert!(
                gap >= Duration::from_millis(990),
                "retried {gap:?} after a Retry-After of 1 s"
            );
        }
    }
    // Every delivery is signed with the webhook's secret over its send
    // time and the exact body.
    for d in bad.deliveries() {
        use hmac::Mac;
        let (t, v1) = d
            .signature
            .strip_prefix("t=")
            .and_then(|s| s.split_once(",v1="))
            .expect("t=<unix>,v1=<hex>");
        let mut mac =
            hmac::Hmac::<sha2::Sha256>::new_from_slice(hook_secret("bad").as_bytes()).unwrap();
        mac.update(format!("{t}.").as_bytes());
        mac.update(&d.raw);
        assert_eq!(v1, hex::encode(mac.finalize().into_bytes()));
        assert_eq!(d.body["delivery_id"], d.delivery_id);
    }
    sb.stop().await;
}
