//! Guarantee 4 through the real binary: a webhook unreachable for longer
//! than `notice_after` gives the gateway's other members exactly one
//! notice that it is down (naming where else the conversation goes on),
//! and, once its backlog has drained, exactly one that it is back, with
//! how many queued messages were delivered.

use serde_json::{json, Value};

use crate::harness::*;

fn notices(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["type"] == "notice")
        .map(|e| e["text"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// A gateway `g` (`notice_after = 1s`) with a producer, a reader, and two
/// webhooks: `bad`, the one the test makes fail, and `good`, which hears
/// the notices.
struct TwoHooks {
    _dir: tempfile::TempDir,
    sb: Sb,
    bad: Receiver,
    good: Receiver,
}

impl TwoHooks {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::new(Backend::Sqlite, dir.path()).await;
        let (api, admin) = (free_port(), free_port());
        let (mut bad, mut good) = (Receiver::new(), Receiver::new());
        bad.up().await;
        good.up().await;
        let cfg = base_config(&db, dir.path(), api, admin)
            + &token("producer", r#"["write"]"#, r#"["g"]"#)
            + &token("reader", r#"["read"]"#, r#"["g"]"#)
            + &webhook("bad", bad.port, r#"["g"]"#)
            + &webhook("good", good.port, r#"["g"]"#)
            + "\n[[gateway]]\nname = \"g\"\nnotice_after = \"1s\"\n[[gateway.inout]]\naccount = \"api.bots\"\nchannel = \"api\"\ninvite = \"https://chat.example.org/join/g\"\n";
        let sb = Sb::start(dir.path(), &cfg, api, admin).await;
        Self {
            _dir: dir,
            sb,
            bad,
            good,
        }
    }
}

/// Posts `text` as the producer; it must be taken.
async fn post(sb: &Sb, text: &str) {
    let (status, body) = post_native(
        &reqwest::Client::new(),
        &sb.api,
        "producer",
        "g",
        json!({"text": text}),
        None,
    )
    .await
    .unwrap();
    assert_eq!(status, 201, "{body}");
}

#[tokio::test]
async fn a_webhook_down_longer_than_notice_after_gives_one_down_and_one_back_notice() {
    let TwoHooks {
        _dir,
        sb,
        mut bad,
        good,
    } = TwoHooks::start().await;
    let reader = Inbox::default();
    let ws = sb.api.replace("http", "ws");
    ws_reader(&format!("{ws}/v1/ws?gateways=g"), "reader", reader.clone()).await;
    for i in 0..3 {
        post(&sb, &format!("before {i}")).await;
    }
    let bodies =
        |r: &Receiver| -> Vec<Value> { r.deliveries().into_iter().map(|d| d.body).collect() };
    eventually("the first messages everywhere", || {
        bad.deliveries().len() == 3 && good.deliveries().len() == 3
    })
    .await;

    bad.down();
    for i in 0..5 {
        post(&sb, &format!("during {i}")).await;
    }
    eventually("a down notice on the good webhook", || {
        !notices(&bodies(&good)).is_empty()
    })
    .await;
    eventually("the down notice on the reader's WebSocket", || {
        !notices(&reader.all()).is_empty()
    })
    .await;
    let down = notices(&bodies(&good)).remove(0);
    assert!(down.contains("webhook `bad`"), "{down}");
    assert!(down.contains("unreachable"), "{down}");
    assert!(
        down.contains("https://chat.example.org/join/g"),
        "the notice says where else to go: {down}"
    );
    // Well past notice_after again: still one notice for one outage.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(
        notices(&bodies(&good)).len(),
        1,
        "{:?}",
        notices(&bodies(&good))
    );

    bad.up().await;
    eventually("the backlog on the bad webhook", || {
        bad.deliveries().len() == 8
    })
    .await;
    eventually("a back notice", || notices(&bodies(&good)).len() == 2).await;
    let back = notices(&bodies(&good)).remove(1);
    assert!(back.contains("is back after"), "{back}");
    assert!(back.contains("5 queued messages were delivered"), "{back}");
    eventually("both notices on the reader's WebSocket", || {
        notices(&reader.all()).len() == 2
    })
    .await;
    // The notices never went to the webhook they are about, and the
    // backlog arrived in order.
    assert!(notices(&bodies(&bad)).is_empty());
    assert_eq!(
        texts(&bodies(&bad)),
        [
            "before 0", "before 1", "before 2", "during 0", "during 1", "during 2", "during 3",
            "during 4"
        ]
    );
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(notices(&bodies(&good)).len(), 2, "one down, one back");
    drop(sb);
}

/// A webhook pacing us (429 with `Retry-After`) for longer than
/// `notice_after` is waited out and not announced; one answering 503 with
/// `Retry-After` is down, and announced.
#[tokio::test]
async fn a_rate_limit_is_not_an_outage_but_a_503_with_retry_after_is() {
    let TwoHooks {
        _dir,
        sb,
        bad,
        good,
    } = TwoHooks::start().await;
    let good_notices = || {
        notices(
            &good
                .deliveries()
                .into_iter()
                .map(|d| d.body)
                .collect::<Vec<_>>(),
        )
    };
    // Paced: twice 2 s, each longer than notice_after.
    bad.set(Mode::TooMany(2));
    post(&sb, "paced").await;
    eventually("two 429s", || bad.refused_at.lock().unwrap().len() >= 2).await;
    bad.set(Mode::Accept);
    eventually("the paced message", || bad.deliveries().len() == 1).await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert!(good_notices().is_empty(), "{:?}", good_notices());
    // Down: 503 with Retry-After.
    bad.set(Mode::Unavailable(1));
    post(&sb, "while down").await;
    eventually("a down notice", || good_notices().len() == 1).await;
    assert!(
        good_notices()[0].contains("unreachable"),
        "{:?}",
        good_notices()
    );
    bad.set(Mode::Accept);
    eventually("a back notice", || good_notices().len() == 2).await;
    assert_eq!(
        texts(
            &bad.deliveries()
                .into_iter()
                .map(|d| d.body)
                .collect::<Vec<_>>()
        ),
        ["paced", "while down"]
    );
    drop(sb);
}
