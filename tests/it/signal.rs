//! Signal through the real binary against the in-repo signal-cli daemon
//! fake (manual receive mode over TCP): a group and a bot exchange styled
//! text, files, replies, edits, deletes and reactions both ways; what the
//! account itself sent from its phone, receipts and typing are not
//! bridged; a rate limit and a dropped connection lose nothing.

use std::time::Duration;

use serde_json::{json, Value};
use switchboard_signal::fake::{FakeOptions, FakeSignal, Fault, ReceiveMode};

use crate::harness::*;

pub(crate) const ALICE: &str = "+15550000002";

pub(crate) async fn fake() -> (FakeSignal, String) {
    let signal = FakeSignal::start(FakeOptions {
        receive_mode: ReceiveMode::Manual,
        ..FakeOptions::default()
    })
    .await
    .expect("fake signal-cli");
    signal.add_contact(ALICE, "6a1f7c1e-4c57-4e64-9a3c-2a6f6f0b1c11", Some("Alice"));
    let group = signal.add_group("Bridge Test", &[ALICE]);
    (signal, group)
}

/// `[signal.main]` for the fake's daemon address.
pub(crate) fn signal_section(daemon: &str, request_timeout: Option<&str>) -> String {
    let timeout =
        request_timeout.map_or_else(String::new, |t| format!("request_timeout = \"{t}\"\n"));
    format!("\n[signal.main]\naccount = \"+15550000001\"\ndaemon = \"{daemon}\"\n{timeout}")
}

/// The account's channel as a member of the gateway above it.
pub(crate) fn signal_member(channel: &str) -> String {
    format!("\n[[gateway.inout]]\naccount = \"signal.main\"\nchannel = \"{channel}\"\n")
}

pub(crate) fn sends(signal: &FakeSignal, method: &str) -> Vec<Value> {
    signal
        .sent()
        .into_iter()
        .filter(|s| s.method == method && s.error.is_none())
        .map(|s| {
            let mut p = s.params.clone();
            p["_timestamp"] = json!(s.timestamp);
            p
        })
        .collect()
}

#[tokio::test]
async fn a_group_and_a_bot_exchange_everything_both_ways_over_tcp() {
    exchange(|s| format!("tcp://{}", s.tcp_addr())).await;
}

#[tokio::test]
async fn a_group_and_a_bot_exchange_everything_both_ways_over_http() {
    exchange(|s| s.http_url()).await;
}

async fn exchange(daemon: fn(&FakeSignal) -> String) {
    let dir = tempfile::tempdir().unwrap();
    let (signal, group) = fake().await;
    let db = Db::new(Backend::Sqlite, dir.path()).await;
    let (api, admin) = (free_port(), free_port());
    let cfg = base_config(&db, dir.path(), api, admin)
        + &token("ann", r#"["read", "write"]"#, r#"["g"]"#)
        + &signal_section(&daemon(&signal), Some("2s"))
        + &gateway("g")
        + &signal_member(&group);
    let mut sb = Sb::start(dir.path(), &cfg, api, admin).await;
    let inbox = Inbox::default();
    let ws = sb.api.replace("http", "ws");
    ws_reader(&format!("{ws}/v1/ws?gateways=g"), "ann", inbox.clone()).await;
    let client = reqwest::Client::new();
    assert!(signal.wait_receivers(1, PATIENCE).await, "subscribed");

    // Signal → bots: styled text with a mention, a file, a reply.
    let hello = signal.inject_message(
        ALICE,
        Some(&group),
        json!({"message": "hi \u{FFFC} 😀 bold", "textStyles": [{"style": "BOLD", "start": 8, "length": 4}],
               "mentions": [{"number": "+15550000001", "start": 3, "length": 1}]}),
    );
    signal.inject_message(
        ALICE,
        Some(&group),
        json!({"message": "a file", "attachments": [{"contentType": "text/plain", "filename": "notes.txt", "text": "some notes"}]}),
    );
    signal.inject_message(
        ALICE,
        Some(&group),
        json!({"message": "re", "quote": {"id": hello, "author": ALICE, "text": "hi"}}),
    );
    // Not bridged: typing, receipts, what the owner sent from the phone.
    signal.inject_typing(ALICE, Some(&group), true);
    signal.inject_sync_sent(None, Some(&group), json!({"message": "from my phone"}));
    inbox.wait_len(3, "three Signal messages at the bot").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let msgs = events_from(&inbox, "signal.main", "message");
    assert_eq!(msgs.len(), 3, "{msgs:#?}");
    assert_eq!(msgs[0]["author"]["name"], "Alice");
    let text = msgs[0]["text"].as_str().unwrap().to_owned();
    assert!(
        text.starts_with("hi @") && text.ends_with(" 😀 bold"),
        "{text}"
    );
    let bold = msgs[0]["spans"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["style"] == "bold")
        .unwrap()
        .clone();
    assert_eq!(
        &text[bold["start"].as_u64().unwrap() as usize..bold["end"].as_u64().unwrap() as usize],
        "bold"
    );
    let hello_id = msgs[0]["id"].as_str().unwrap().to_owned();
    let file = &msgs[1]["attachments"][0];
    assert_eq!(file["name"], "notes.txt");
    let r = client
        .get(format!("{}{}", sb.api, file["url"].as_str().unwrap()))
        .header("authorization", bearer("ann"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"some notes");
    assert_eq!(msgs[2]["reply_to"], hello_id.as_str());

    // Bots → Signal: a reply with a style, as a quote; a file.
    let (s, posted) = post_native(
        &client,
        &sb.api,
        "ann",
        "g",
        json!({"text": "hello group", "username": "Ann", "spans": [{"start": 6, "end": 11, "style": "italic"}], "reply_to": hello_id}),
        None,
    )
    .await
    .unwrap();
    assert_eq!(s, 201, "{posted}");
    let ann_id = posted["id"].as_str().unwrap().to_owned();
    until("the post sent to the group", || {
        let n = sends(&signal, "send").len();
        async move { n == 1 }
    })
    .await;
    let sent = &sends(&signal, "send")[0];
    assert_eq!(sent["groupId"], group.as_str());
    assert_eq!(sent["message"], "Ann: hello group");
    assert_eq!(sent["textStyle"], json!(["0:3:BOLD", "11:5:ITALIC"]));
    assert_eq!(sent["quoteTimestamp"], hello);
    assert_eq!(sent["quoteAuthor"], "6a1f7c1e-4c57-4e64-9a3c-2a6f6f0b1c11");
    let copy_ts = sent["_timestamp"].as_i64().unwrap();

    // Alice reacts to the bridged copy, edits and deletes her own message.
    signal.inject_reaction(ALICE, Some(&group), "🔥", "+15550000001", copy_ts, false);
    signal.inject_edit(ALICE, Some(&group), hello, json!({"message": "hi all"}));
    signal.inject_remote_delete(ALICE, Some(&group), hello);
    until("the reaction, the edit and the delete at the bot", || {
        let n = events_from(&inbox, "signal.main", "reaction").len()
            + events_from(&inbox, "signal.main", "edit").len()
            + events_from(&inbox, "signal.main", "delete").len();
        async move { n == 3 }
    })
    .await;
    assert_eq!(
        events_from(&inbox, "signal.main", "reaction")[0]["target"],
        ann_id.as_str()
    );
    assert_eq!(
        events_from(&inbox, "signal.main", "edit")[0]["target"],
        hello_id.as_str()
    );
    assert_eq!(
        events_from(&inbox, "signal.main", "delete")[0]["target"],
        hello_id.as_str()
    );

    // After a restart, the bot's edit, reaction and delete find the copy
    // and Alice's message; a rate limit on the way is waited out.
    sb.drained().await;
    sb.kill9();
    sb.restart().await;
    assert!(signal.wait_receivers(1, PATIENCE).await, "subscribed again");
    signal.fail(
        "send",
        Fault::RateLimit {
            retry_after_seconds: 1,
        },
        1,
    );
    let url = format!("{}/v1/gateways/g/messages/{ann_id}", sb.api);
    let r = client
        .patch(&url)
        .header("authorization", bearer("ann"))
        .json(&json!({"text": "hello all"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let alice_url = format!(
        "{}/v1/gateways/g/messages/{}",
        sb.api,
        msgs[2]["id"].as_str().unwrap()
    );
    let r = client
        .post(format!("{alice_url}/reactions"))
        .header("authorization", bearer("ann"))
        .json(&json!({"emoji": "👍"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = client
        .delete(&url)
        .header("authorization", bearer("ann"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    until("the edit, the reaction and the delete at Signal", || {
        let n = sends(&signal, "send").len()
            + sends(&signal, "sendReaction").len()
            + sends(&signal, "remoteDelete").len();
        async move { n == 4 }
    })
    .await;
    let edit = &sends(&signal, "send")[1];
    assert_eq!(edit["editTimestamp"], copy_ts);
    assert_eq!(edit["message"], "Ann: hello all");
    let reaction = &sends(&signal, "sendReaction")[0];
    assert_eq!(reaction["emoji"], "👍");
    assert_eq!(
        reaction["targetAuthor"],
        "6a1f7c1e-4c57-4e64-9a3c-2a6f6f0b1c11"
    );
    assert_eq!(
        sends(&signal, "remoteDelete")[0]["targetTimestamp"],
        copy_ts
    );
    assert!(
        signal.sent().iter().any(|s| s.error.is_some()),
        "the rate limit was answered"
    );

    // A dropped connection: the adapter reconnects and nothing is lost.
    signal.drop_connections().await;
    let after = Inbox::default();
    ws_reader(&format!("{ws}/v1/ws?gateways=g"), "ann", after.clone()).await;
    signal.inject_message(ALICE, Some(&group), json!({"message": "after the drop"}));
    until("the message after the drop", || {
        let ok = events_from(&after, "signal.main", "message")
            .iter()
            .any(|e| e["text"] == "after the drop");
        async move { ok }
    })
    .await;
    sb.stop().await;
    assert!(!sb.log().contains("did not finish in time"), "{}", sb.log());
    signal.stop().await;
}

#[tokio::test]
async fn captchas_partial_sends_and_unregistered_recipients() {
    use switchboard_signal::fake::RecipientFailure;
    let dir = tempfile::tempdir().unwrap();
    let (signal, group) = fake().await;
    const BOB: &str = "+15550000004";
    const NOBODY: &str = "+15550000009";
    signal.add_contact(BOB, "7b2e8d2f-5d68-4f75-8b4d-3b7f7f1c2d22", Some("Bob"));
    signal.set_member(&group, BOB, true);
    let db = Db::new(Backend::Sqlite, dir.path()).await;
    let (api, admin) = (free_port(), free_port());
    let cfg = base_config(&db, dir.path(), api, admin)
        + &token("ann", r#"["read", "write"]"#, r#"["g", "d"]"#)
        + &signal_section(&format!("tcp://{}", signal.tcp_addr()), Some("2s"))
        + &gateway("g")
        + &signal_member(&group)
        + &gateway("d")
        + &signal_member(NOBODY);
    let sb = Sb::start(dir.path(), &cfg, api, admin).await;
    assert!(signal.wait_receivers(1, PATIENCE).await);
    let client = reqwest::Client::new();
    let status = || {
        let client = client.clone();
        let url = format!("{}/v1/status", sb.admin);
        async move {
            let v: Value = client
                .get(url)
                .bearer_auth(ADMIN_TOKEN)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v["accounts"]
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["account"] == "signal.main")
                .cloned()
                .unwrap_or_default()
        }
    };

    // A captcha challenge: the account needs an admin, the status says
    // what to run; once a send gets through, it is up again.
    signal.fail(
        "send",
        Fault::CaptchaRequired {
            token: "tok-1".into(),
            retry_after_seconds: 1,
        },
        1,
    );
    post_native(
        &client,
        &sb.api,
        "ann",
        "g",
        json!({"text": "one", "username": "Ann"}),
        None,
    )
    .await
    .unwrap();
    until("needs_action naming the captcha command", || {
        let s = status();
        async move {
            let s = s.await;
            s["state"] == "needs_action"
                && s["last_error"]
                    .as_str()
                    .is_some_and(|e| e.contains("submitRateLimitChallenge"))
        }
    })
    .await;
    until("the message sent after the challenge", || {
        let n = sends(&signal, "send").len();
        async move { n == 1 }
    })
    .await;
    until("up again", || {
        let s = status();
        async move { s.await["state"] == "up" }
    })
    .await;

    // A group send that reaches only some members is a success.
    signal.fail_recipient(BOB, RecipientFailure::Unregistered, 1);
    post_native(
        &client,
        &sb.api,
        "ann",
        "g",
        json!({"text": "two", "username": "Ann"}),
        None,
    )
    .await
    .unwrap();
    until("the partial send", || {
        let n = sends(&signal, "send").len();
        async move { n == 2 }
    })
    .await;
    eventually("the partial send logged", || {
        sb.log().contains("did not reach every recipient")
    })
    .await;

    // A direct chat with someone not on Signal: a dead letter with the
    // daemon's reason, not endless retries.
    post_native(
        &client,
        &sb.api,
        "ann",
        "d",
        json!({"text": "hello?", "username": "Ann"}),
        None,
    )
    .await
    .unwrap();
    // Dead at once (not retried), with the daemon's reason.
    until("the direct message dead-lettered", || async {
        sb.metrics()
            .await
            .contains("switchboard_dead_letters_total{account=\"signal.main\"} 1")
    })
    .await;
    let pool = sqlx::sqlite::SqlitePool::connect(&db.url).await.unwrap();
    let (attempts, error): (i64, String) = sqlx::query_as(
        "SELECT attempts, last_error FROM outbox WHERE account = 'signal.main' AND state = 'dead'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(attempts, 0, "never retried");
    assert!(
        error.contains("Failed to send message") || error.contains("not registered"),
        "{error}"
    );
    pool.close().await;
    signal.stop().await;
}

#[tokio::test]
async fn a_sender_without_a_name_in_the_envelope_gets_the_contacts_profile_name() {
    let dir = tempfile::tempdir().unwrap();
    let (signal, group) = fake().await;
    let db = Db::new(Backend::Sqlite, dir.path()).await;
    let (api, admin) = (free_port(), free_port());
    let cfg = base_config(&db, dir.path(), api, admin)
        + &token("ann", r#"["read", "write"]"#, r#"["g"]"#)
        + &signal_section(&format!("tcp://{}", signal.tcp_addr()), None)
        + &gateway("g")
        + &signal_member(&group);
    let sb = Sb::start(dir.path(), &cfg, api, admin).await;
    let inbox = Inbox::default();
    let ws = sb.api.replace("http", "ws");
    ws_reader(&format!("{ws}/v1/ws?gateways=g"), "ann", inbox.clone()).await;
    assert!(signal.wait_receivers(1, PATIENCE).await);
    signal.inject_envelope(json!({
        "source": ALICE, "sourceNumber": ALICE, "sourceUuid": "6a1f7c1e-4c57-4e64-9a3c-2a6f6f0b1c11",
        "sourceName": null, "sourceDevice": 1, "timestamp": 1_764_000_000_000_i64,
        "serverReceivedTimestamp": 1_764_000_000_100_i64, "serverDeliveredTimestamp": 1_764_000_000_150_i64,
        "dataMessage": {"timestamp": 1_764_000_000_000_i64, "message": "no name given", "expiresInSeconds": 0, "viewOnce": false,
            "groupInfo": {"groupId": group, "groupName": "Bridge Test", "revision": 1, "type": "DELIVER"}}
    }));
    inbox.wait_len(1, "the message").await;
    assert_eq!(inbox.all()[0]["author"]["name"], "Alice");
    signal.stop().await;
}

#[tokio::test]
async fn outages_rate_limits_garbage_and_kill9_lose_nothing_and_keep_order() {
    use switchboard_signal::fake::Outage;
    let dir = tempfile::tempdir().unwrap();
    let (signal, group) = fake().await;
    let db = Db::new(Backend::Sqlite, dir.path()).await;
    let (api, admin) = (free_port(), free_port());
    let cfg = base_config(&db, dir.path(), api, admin)
        + &token("ann", r#"["read", "write"]"#, r#"["g"]"#)
        + &signal_section(&format!("tcp://{}", signal.tcp_addr()), Some("10s"))
        + &gateway("g")
        + &signal_member(&group);
    // A send answered after the outbox gave up is sent again (the
    // lost-answer window, which the lost-answer tests count); on a loaded
    // machine 2 s can pass, so this test gives sends time.
    let cfg = cfg.replace("send_timeout = \"2s\"", "send_timeout = \"15s\"");
    let mut sb = Sb::start(dir.path(), &cfg, api, admin).await;
    let client = reqwest::Client::new();
    assert!(signal.wait_receivers(1, PATIENCE).await);
    let post = |i: usize| {
        let (client, api) = (client.clone(), sb.api.clone());
        async move {
            let (s, _) = post_native(
                &client,
                &api,
                "ann",
                "g",
                json!({"text": format!("out {i}"), "username": "Ann"}),
                None,
            )
            .await
            .unwrap();
            assert_eq!(s, 201);
        }
    };

    // A rate-limit burst, garbage on the wire, a method the adapter never
    // sends, an envelope with fields nobody knows.
    signal.fail(
        "send",
        Fault::RateLimit {
            retry_after_seconds: 1,
        },
        3,
    );
    for i in 0..5 {
        post(i).await;
        signal.inject_message(ALICE, Some(&group), json!({"message": format!("in {i}")}));
    }
    signal.inject_raw_line("{not json");
    signal.inject_raw_line("{\"jsonrpc\":\"2.0\",\"method\":\"callEvent\",\"params\":{}}");
    signal.inject_message(
        ALICE,
        Some(&group),
        json!({"message": "in 5", "pollCreate": {"question": "?"}, "brandNewField": [1, 2]}),
    );

    // The daemon gone for 60 s, with traffic both ways meanwhile: what
    // people write stays on Signal's server, posts queue.
    signal.set_outage(Outage::Refuse).await;
    for i in 5..10 {
        post(i).await;
    }
    for i in 6..10 {
        signal.inject_message(ALICE, Some(&group), json!({"message": format!("in {i}")}));
    }
    tokio::time::sleep(Duration::from_secs(60)).await;
    signal.set_outage(Outage::Up).await;
    until("ten posts at Signal", || {
        let n = sends(&signal, "send").len();
        async move { n >= 10 }
    })
    .await;

    // kill -9 with messages waiting on the server: each arrives once.
    // (Messages the daemon hands over in the instant between the crash and
    // its noticing are the loss window the README states; wait it out.)
    // The posts' rows are settled first: a kill between the daemon's send
    // and its row marked sent is the lost-answer window (counted by the
    // drills), not what this asserts.
    sb.drained().await;
    sb.kill9();
    eventually("the daemon noticed", || signal.receivers() == 0).await;
    for i in 10..15 {
        signal.inject_message(ALICE, Some(&group), json!({"message": format!("in {i}")}));
    }
    sb.restart().await;
    let inbox = Inbox::default();
    let ws = sb.api.replace("http", "ws");
    ws_reader(
        &format!("{ws}/v1/ws?gateways=g&cursor=0"),
        "ann",
        inbox.clone(),
    )
    .await;
    until("fifteen Signal messages, from the start", || {
        let n = events_from(&inbox, "signal.main", "message").len();
        async move { n >= 15 }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got: Vec<String> = events_from(&inbox, "signal.main", "message")
        .iter()
        .map(|e| e["text"].as_str().unwrap().to_owned())
        .collect();
    let want: Vec<String> = (0..15).map(|i| format!("in {i}")).collect();
    assert_eq!(got, want, "every Signal message once, in order");
    let out: Vec<String> = sends(&signal, "send")
        .iter()
        .map(|s| s["message"].as_str().unwrap().to_owned())
        .collect();
    let want: Vec<String> = (0..10).map(|i| format!("Ann: out {i}")).collect();
    assert_eq!(out, want, "every post once, in order");
    assert_eq!(signal.lost_envelopes(), 0);
    sb.stop().await;
    signal.stop().await;
}

/// A Signal group, a Telegram group and a bot in one gateway: what each
/// side does reaches the other two with ids mapped both ways, also after a
/// restart.
#[tokio::test]
async fn signal_telegram_and_a_bot_mirror_each_other() {
    use switchboard_telegram::fake::{FakeOptions as TgOptions, FakeTelegram};
    const TG_GROUP: i64 = -1_005_000_000_001;
    let dir = tempfile::tempdir().unwrap();
    let (signal, group) = fake().await;
    let tg = FakeTelegram::start(TgOptions {
        per_chat_per_minute: None,
        per_bot_per_second: None,
        ..TgOptions::default()
    })
    .await
    .unwrap();
    tg.add_chat(TG_GROUP, "supergroup", "Lobby", false);
    tg.set_bot_admin(TG_GROUP, true);
    let db = Db::new(Backend::Sqlite, dir.path()).await;
    let (api, admin) = (free_port(), free_port());
    let cfg = base_config(&db, dir.path(), api, admin)
        + &token("ann", r#"["read", "write"]"#, r#"["g"]"#)
        + &signal_section(&format!("tcp://{}", signal.tcp_addr()), None)
        + &format!(
            "\n[telegram.main]\ntoken = \"{}\"\napi_url = \"{}\"\npoll_timeout = \"2s\"\npace_per_chat = \"0s\"\npace_per_bot = \"0s\"\n",
            tg.token(),
            tg.api_url()
        )
        + &gateway("g")
        + &signal_member(&group)
        + &format!("\n[[gateway.inout]]\naccount = \"telegram.main\"\nchannel = \"{TG_GROUP}\"\n");
    let mut sb = Sb::start(dir.path(), &cfg, api, admin).await;
    let inbox = Inbox::default();
    let ws = sb.api.replace("http", "ws");
    ws_reader(&format!("{ws}/v1/ws?gateways=g"), "ann", inbox.clone()).await;
    assert!(signal.wait_receivers(1, PATIENCE).await);
    let bot_id = tg.bot()["id"].as_i64().unwrap();
    let tg_copies = || -> Vec<Value> {
        tg.messages(TG_GROUP)
            .into_iter()
            .filter(|m| m["from"]["id"].as_i64() == Some(bot_id))
            .collect()
    };

    // Alice on Signal: styled text with a mention and a file.
    let hello = signal.inject_message(
        ALICE,
        Some(&group),
        json!({"message": "look \u{FFFC} here", "textStyles": [{"style": "ITALIC", "start": 7, "length": 4}],
               "mentions": [{"number": "+15550000001", "start": 5, "length": 1}],
               "attachments": [{"contentType": "text/plain", "filename": "plan.txt", "text": "the plan"}]}),
    );
    until("Alice's message in Telegram and at the bot", || {
        let ok =
            !tg_copies().is_empty() && !events_from(&inbox, "signal.main", "message").is_empty();
        async move { ok }
    })
    .await;
    let copy = tg_copies()[0].clone();
    let caption = copy["caption"].as_str().unwrap_or_default().to_owned();
    assert!(
        caption.starts_with("Alice: look @") && caption.ends_with(" here"),
        "{copy}"
    );
    let doc = copy["document"]["file_id"]
        .as_str()
        .expect("the file, as a document");
    assert_eq!(tg.file_bytes(doc).unwrap(), b"the plan");
    let ents = copy["caption_entities"].as_array().unwrap();
    assert!(ents.iter().any(|e| e["type"] == "italic"), "{ents:?}");
    let copy_id = copy["message_id"].as_i64().unwrap();
    let alice_event = events_from(&inbox, "signal.main", "message")[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Bob on Telegram answers the copy: Signal quotes Alice's message, the
    // bot sees a reply to it.
    let bob = FakeTelegram::user(7, "Bob", None);
    let bob_msg = tg.inject_message(
        TG_GROUP,
        &bob,
        json!({"text": "agreed", "reply_to_message_id": copy_id}),
    );
    until("Bob's answer at Signal", || {
        let n = sends(&signal, "send").len();
        async move { n == 1 }
    })
    .await;
    let to_signal = &sends(&signal, "send")[0];
    assert_eq!(to_signal["message"], "Bob: agreed");
    assert_eq!(to_signal["quoteTimestamp"], hello);
    assert_eq!(
        to_signal["quoteAuthor"],
        "6a1f7c1e-4c57-4e64-9a3c-2a6f6f0b1c11"
    );
    let bob_on_signal = to_signal["_timestamp"].as_i64().unwrap();
    until("Bob's answer at the bot", || {
        let ok = inbox
            .all()
            .iter()
            .any(|e| e["text"] == "agreed" && e["reply_to"] == alice_event.as_str());
        async move { ok }
    })
    .await;

    // Alice reacts to Bob's copy on Signal, edits and deletes her message.
    signal.inject_reaction(
        ALICE,
        Some(&group),
        "👍",
        "+15550000001",
        bob_on_signal,
        false,
    );
    signal.inject_edit(ALICE, Some(&group), hello, json!({"message": "look there"}));
    until(
        "the reaction on Bob's own message and the edit in Telegram",
        || {
            let reacted = tg.bot_reactions(TG_GROUP, bob_msg) == ["👍"];
            let edited = tg
                .messages(TG_GROUP)
                .iter()
                .any(|m| m["message_id"] == copy_id && m["caption"] == "Alice: look there");
            async move { reacted && edited }
        },
    )
    .await;

    // After a restart: Bob edits on Telegram, Signal edits its copy;
    // Alice deletes on Signal, Telegram deletes its copy.
    sb.drained().await;
    sb.kill9();
    sb.restart().await;
    assert!(signal.wait_receivers(1, PATIENCE).await);
    tg.inject_edit(TG_GROUP, bob_msg, json!({"text": "agreed, mostly"}));
    signal.inject_remote_delete(ALICE, Some(&group), hello);
    until("the edit at Signal and the delete in Telegram", || {
        let edited = sends(&signal, "send")
            .iter()
            .any(|s| s["editTimestamp"] == bob_on_signal && s["message"] == "Bob: agreed, mostly");
        let deleted = !tg
            .messages(TG_GROUP)
            .iter()
            .any(|m| m["message_id"] == copy_id);
        async move { edited && deleted }
    })
    .await;
    sb.stop().await;
    tg.stop().await;
    signal.stop().await;
}
