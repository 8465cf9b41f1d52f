//! Telegram through the real binary against the in-repo Bot API fake: a
//! group and bots exchange formatted text, albums, replies, edits, deletes
//! and reactions both ways, across restarts; 429 storms, an outage and a
//! kill -9 mid-poll lose nothing; a group upgraded to a supergroup keeps
//! going. SQLite only: the store's behaviour on both backends is proven
//! by `store`, `references` and `durability`.

use std::time::Duration;

use serde_json::{json, Value};
use switchboard_telegram::fake::{FakeOptions, FakeTelegram, Fault, Outage};

use crate::harness::*;

pub(crate) const GROUP: i64 = -1_001_000_000_001;

pub(crate) async fn fake(limits: bool) -> FakeTelegram {
    let mut opts = FakeOptions::default();
    if !limits {
        opts.per_chat_per_minute = None;
        opts.per_bot_per_second = None;
    }
    let tg = FakeTelegram::start(opts).await.expect("fake Telegram");
    tg.add_chat(GROUP, "supergroup", "Lobby", false);
    // Reactions reach only a bot that is an admin of the group.
    tg.set_bot_admin(GROUP, true);
    tg
}

/// `[telegram.main]` for the fake, in gateway `g` with the bot API.
pub(crate) fn telegram_config(tg: &FakeTelegram, extra: &str) -> String {
    format!(
        "\n[telegram.main]\ntoken = \"{}\"\napi_url = \"{}\"\npoll_timeout = \"2s\"\npace_per_chat = \"0s\"\npace_per_bot = \"0s\"\n{extra}\n",
        tg.token(),
        tg.api_url()
    )
}

pub(crate) fn member(channel: &str) -> String {
    format!("\n[[gateway.inout]]\naccount = \"telegram.main\"\nchannel = \"{channel}\"\n")
}

/// The bot's messages in the group, as (message_id, text).
pub(crate) fn bot_texts(tg: &FakeTelegram, chat: i64) -> Vec<(i64, String)> {
    let bot = tg.bot()["id"].as_i64().unwrap();
    tg.messages(chat)
        .into_iter()
        .filter(|m| m["from"]["id"].as_i64() == Some(bot))
        .map(|m| {
            let text = m["text"]
                .as_str()
                .or(m["caption"].as_str())
                .unwrap_or_default()
                .to_owned();
            (m["message_id"].as_i64().unwrap(), text)
        })
        .collect()
}

pub(crate) async fn start(dir: &std::path::Path, tg: &FakeTelegram, extra: &str) -> (Sb, Inbox) {
    start_in(dir, tg, extra, GROUP).await
}

/// switchboard with gateway `g` of the bot API and Telegram chat `chat`,
/// and a WebSocket reader of `g`.
pub(crate) async fn start_in(
    dir: &std::path::Path,
    tg: &FakeTelegram,
    extra: &str,
    chat: i64,
) -> (Sb, Inbox) {
    let db = Db::new(Backend::Sqlite, dir).await;
    let (api, admin) = (free_port(), free_port());
    let cfg = base_config(&db, dir, api, admin)
        + &token("ann", r#"["read", "write"]"#, r#"["g"]"#)
        + &telegram_config(tg, extra)
        + &gateway("g")
        + &member(&chat.to_string());
    let sb = Sb::start(dir, &cfg, api, admin).await;
    let inbox = Inbox::default();
    let ws = sb.api.replace("http", "ws");
    ws_reader(&format!("{ws}/v1/ws?gateways=g"), "ann", inbox.clone()).await;
    (sb, inbox)
}

#[tokio::test]
async fn a_group_and_a_bot_exchange_everything_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let tg = fake(true).await;
    let (mut sb, inbox) = start(dir.path(), &tg, "").await;
    let client = reqwest::Client::new();
    let alice = FakeTelegram::user(42, "Alice", Some("alice"));
    let face = switchboard_telegram::fake::png(4, 4);
    tg.set_avatar(42, face.clone());

    // Telegram → bots: styled text with an emoji before the styled part
    // (UTF-16 offsets), an album, a reply, an edit, a reaction.
    let hello = tg.inject_message(
        GROUP,
        &alice,
        json!({"text": "😀 hi *all*", "entities": [{"type": "bold", "offset": 6, "length": 5}]}),
    );
    inbox.wait_len(1, "the Telegram message at the bot").await;
    let ev = &events_from(&inbox, "telegram.main", "message")[0];
    assert_eq!(ev["text"], "😀 hi *all*");
    assert_eq!(ev["author"]["name"], "Alice");
    assert_eq!(ev["author"]["username"], "alice");
    let span = &ev["spans"][0];
    assert_eq!(span["style"], "bold");
    assert_eq!(
        &"😀 hi *all*"
            [span["start"].as_u64().unwrap() as usize..span["end"].as_u64().unwrap() as usize],
        "*all*"
    );
    let hello_id = ev["id"].as_str().unwrap().to_owned();
    // The avatar was fetched once and is served as a blob.
    let avatar = ev["author"]["avatar"]
        .as_str()
        .expect("an avatar")
        .to_owned();
    let r = client
        .get(format!("{}{avatar}", sb.api))
        .header("authorization", bearer("ann"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().as_ref(), face.as_slice());

    let (one, two) = (
        switchboard_telegram::fake::png(3, 2),
        switchboard_telegram::fake::png(2, 3),
    );
    let p1 = tg.store_photo(one.clone());
    let p2 = tg.store_photo(two.clone());
    tg.inject_message(
        GROUP,
        &alice,
        json!({"media_group_id": "alb1", "photo": p1, "caption": "trip"}),
    );
    tg.inject_message(
        GROUP,
        &alice,
        json!({"media_group_id": "alb1", "photo": p2}),
    );
    tg.inject_message(
        GROUP,
        &alice,
        json!({"text": "re", "reply_to_message_id": hello}),
    );
    tg.inject_edit(GROUP, hello, json!({"text": "😀 hi everyone"}));
    until("the album, the reply and the edit at the bot", || {
        let n = events_from(&inbox, "telegram.main", "message").len()
            + events_from(&inbox, "telegram.main", "edit").len();
        async move { n == 4 }
    })
    .await;
    let msgs = events_from(&inbox, "telegram.main", "message");
    assert_eq!(msgs.len(), 3, "the album is one message: {msgs:#?}");
    let album = &msgs[1];
    assert_eq!(album["text"], "trip");
    let files = album["attachments"].as_array().unwrap();
    assert_eq!(files.len(), 2);
    for (f, want) in files.iter().zip([&one, &two]) {
        let r = client
            .get(format!("{}{}", sb.api, f["url"].as_str().unwrap()))
            .header("authorization", bearer("ann"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.bytes().await.unwrap().as_ref(), want.as_slice());
    }
    assert_eq!(msgs[2]["reply_to"], hello_id.as_str());
    let edit = &events_from(&inbox, "telegram.main", "edit")[0];
    assert_eq!(edit["target"], hello_id.as_str());
    assert_eq!(edit["text"], "😀 hi everyone");

    // Bots → Telegram: styled text with the author in bold.
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
    until("the post in the group", || {
        let n = bot_texts(&tg, GROUP).len();
        async move { n == 1 }
    })
    .await;
    let sent = tg
        .messages(GROUP)
        .into_iter()
        .find(|m| m["text"] == "Ann: hello group")
        .expect("the post, with its author");
    let ents = sent["entities"].as_array().unwrap();
    assert!(
        ents.contains(&json!({"type": "bold", "offset": 0, "length": 3})),
        "{ents:?}"
    );
    assert!(
        ents.contains(&json!({"type": "italic", "offset": 11, "length": 5})),
        "{ents:?}"
    );
    assert_eq!(sent["reply_to_message"]["message_id"], hello);
    let copy = sent["message_id"].as_i64().unwrap();

    // A Telegram user reacts to the bridged copy: the bot sees it on the
    // original.
    tg.inject_reaction(GROUP, copy, &alice, &[], &["🔥"]);
    until("the reaction at the bot", || {
        let n = events_from(&inbox, "telegram.main", "reaction").len();
        async move { n == 1 }
    })
    .await;
    let reaction = &events_from(&inbox, "telegram.main", "reaction")[0];
    assert_eq!(reaction["target"], ann_id.as_str());
    assert_eq!(reaction["emoji"], "🔥");

    // An album from a bot.
    use base64::Engine;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let (s, _) = post_native(
        &client,
        &sb.api,
        "ann",
        "g",
        json!({"text": "two pics", "username": "Ann", "attachments": [
            {"name": "a.png", "mime": "image/png", "data": b64(&one)},
            {"name": "b.png", "mime": "image/png", "data": b64(&two)}]}),
        None,
    )
    .await
    .unwrap();
    assert_eq!(s, 201);
    until("the album in the group", || {
        let n = bot_texts(&tg, GROUP).len();
        async move { n == 3 }
    })
    .await;
    let album: Vec<Value> = tg
        .messages(GROUP)
        .into_iter()
        .filter(|m| m["media_group_id"].is_string() && m["from"]["is_bot"] == true)
        .collect();
    assert_eq!(album.len(), 2);
    assert_eq!(album[0]["caption"], "Ann: two pics");
    assert_eq!(album[0]["media_group_id"], album[1]["media_group_id"]);
    let photo = album[1]["photo"].as_array().unwrap().last().unwrap()["file_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(tg.file_bytes(&photo).unwrap(), two);

    // After a restart, an edit, a reaction and a delete still find the copy.
    sb.drained().await;
    sb.kill9();
    sb.restart().await;
    let url = format!("{}/v1/gateways/g/messages/{ann_id}", sb.api);
    let r = client
        .patch(&url)
        .header("authorization", bearer("ann"))
        .json(&json!({"text": "hello all"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = client
        .post(format!("{url}/reactions"))
        .header("authorization", bearer("ann"))
        .json(&json!({"emoji": "👍"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    until("the edit and the reaction in the group", || {
        let edited = tg
            .messages(GROUP)
            .iter()
            .any(|m| m["message_id"] == copy && m["text"] == "Ann: hello all");
        let reacted = tg.bot_reactions(GROUP, copy) == ["👍"];
        async move { edited && reacted }
    })
    .await;
    let r = client
        .delete(&url)
        .header("authorization", bearer("ann"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    until("the copy deleted", || {
        let gone = !tg.messages(GROUP).iter().any(|m| m["message_id"] == copy);
        async move { gone }
    })
    .await;
    // And from Telegram after the restart: the edit of an old message
    // finds its original.
    let after = Inbox::default();
    let ws = sb.api.replace("http", "ws");
    ws_reader(&format!("{ws}/v1/ws?gateways=g"), "ann", after.clone()).await;
    tg.inject_edit(GROUP, hello, json!({"text": "edited after restart"}));
    until("the second edit at the bot", || {
        let n = events_from(&after, "telegram.main", "edit").len();
        async move { n >= 1 }
    })
    .await;
    assert_eq!(
        events_from(&after, "telegram.main", "edit").last().unwrap()["target"],
        hello_id.as_str()
    );
    // Nothing reached the bot twice.
    for inbox in [&inbox, &after] {
        let ids: Vec<String> = inbox.all().iter().map(|e| e["id"].to_string()).collect();
        let mut dedup = ids.clone();
        dedup.sort();
        dedup.dedup();
        assert_eq!(ids.len(), dedup.len(), "no event twice: {ids:?}");
    }
    sb.stop().await;
    // Nothing kept the hub alive past shutdown (an adapter holding its
    // host did, once).
    assert!(!sb.log().contains("did not finish in time"), "{}", sb.log());
    tg.stop().await;
}

#[tokio::test]
async fn storms_outages_and_kill9_lose_nothing_and_keep_order() {
    let dir = tempfile::tempdir().unwrap();
    let tg = fake(false).await;
    let (mut sb, inbox) = start(dir.path(), &tg, "").await;
    let client = reqwest::Client::new();
    let bob = FakeTelegram::user(7, "Bob", None);

    // Bots → Telegram through a 429 storm: every retry_after honoured,
    // nothing lost, order kept.
    tg.fail(
        "sendMessage",
        Fault::Error {
            code: 429,
            description: "Too Many Requests: retry after 1".into(),
            retry_after: Some(1),
            migrate_to_chat_id: None,
        },
        3,
    );
    for i in 0..10 {
        let (s, _) = post_native(
            &client,
            &sb.api,
            "ann",
            "g",
            json!({"text": format!("out {i}"), "username": "Ann"}),
            None,
        )
        .await
        .unwrap();
        assert_eq!(s, 201);
    }
    // Telegram → bots while polling fails: 5xx, then a hang, then a reset.
    tg.fail(
        "getUpdates",
        Fault::Error {
            code: 502,
            description: "Bad Gateway".into(),
            retry_after: None,
            migrate_to_chat_id: None,
        },
        2,
    );
    for i in 0..5 {
        tg.inject_message(GROUP, &bob, json!({"text": format!("in {i}")}));
        // Between them, what is skipped without stalling anything: a
        // malformed update, a kind nobody maps, a message with nothing
        // bridgeable in it.
        match i {
            1 => {
                tg.inject_update(json!({"message": {"message_id": "not a number", "chat": 5}}));
            }
            2 => {
                tg.inject_update(json!({"poll": {"id": "1", "question": "?", "options": []}}));
            }
            3 => {
                tg.inject_message(GROUP, &bob, json!({"dice": {"emoji": "🎲", "value": 4}}));
            }
            _ => {}
        }
    }
    tg.fail("getUpdates", Fault::Reset, 1);
    until("ten posts in the group", || {
        let n = bot_texts(&tg, GROUP).len();
        async move { n >= 10 }
    })
    .await;
    inbox.wait_len(5, "five Telegram messages at the bot").await;

    // A 60-second outage of the whole Bot API (connections refused), with traffic
    // both ways queued meanwhile.
    tg.set_outage(Outage::Refuse).await;
    for i in 10..15 {
        post_native(
            &client,
            &sb.api,
            "ann",
            "g",
            json!({"text": format!("out {i}"), "username": "Ann"}),
            None,
        )
        .await
        .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(60)).await;
    for i in 5..10 {
        tg.inject_message(GROUP, &bob, json!({"text": format!("in {i}")}));
    }
    tg.set_outage(Outage::Up).await;
    until("the queued posts after the outage", || {
        let n = bot_texts(&tg, GROUP).len();
        async move { n >= 15 }
    })
    .await;
    inbox.wait_len(10, "ten Telegram messages at the bot").await;

    // kill -9 with updates waiting to be polled: each arrives once.
    sb.kill9();
    for i in 10..20 {
        tg.inject_message(GROUP, &bob, json!({"text": format!("in {i}")}));
    }
    sb.restart().await;
    let inbox2 = Inbox::default();
    let ws = sb.api.replace("http", "ws");
    ws_reader(
        &format!("{ws}/v1/ws?gateways=g&cursor=0"),
        "ann",
        inbox2.clone(),
    )
    .await;
    until("twenty Telegram messages, from the start", || {
        let n = events_from(&inbox2, "telegram.main", "message").len();
        async move { n >= 20 }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got: Vec<String> = events_from(&inbox2, "telegram.main", "message")
        .iter()
        .map(|e| e["text"].as_str().unwrap().to_owned())
        .collect();
    let want: Vec<String> = (0..20).map(|i| format!("in {i}")).collect();
    assert_eq!(got, want, "every Telegram message once, in order");
    let out: Vec<String> = bot_texts(&tg, GROUP).into_iter().map(|(_, t)| t).collect();
    let want: Vec<String> = (0..15).map(|i| format!("Ann: out {i}")).collect();
    // Telegram has no idempotency: a send whose answer was lost may repeat;
    // here no answer was lost, so none repeats.
    assert_eq!(out, want, "every post once, in order");
    let refused = tg
        .calls()
        .iter()
        .filter(|c| c.method == "sendMessage" && c.status == Some(429))
        .count();
    assert_eq!(refused, 3, "the storm was answered, then honoured");
    sb.stop().await;
    tg.stop().await;
}

#[tokio::test]
async fn a_group_upgraded_to_a_supergroup_keeps_going() {
    let dir = tempfile::tempdir().unwrap();
    let tg = fake(false).await;
    const OLD: i64 = -4_000_000_001;
    const NEW: i64 = -1_004_000_000_001;
    tg.add_chat(OLD, "group", "Small group", false);
    tg.add_chat(NEW, "supergroup", "Small group", false);
    let (sb, inbox) = start_in(dir.path(), &tg, "", OLD).await;
    let client = reqwest::Client::new();
    let bob = FakeTelegram::user(7, "Bob", None);

    post_native(
        &client,
        &sb.api,
        "ann",
        "g",
        json!({"text": "before", "username": "Ann"}),
        None,
    )
    .await
    .unwrap();
    until("the first post in the old group", || {
        let n = bot_texts(&tg, OLD).len();
        async move { n == 1 }
    })
    .await;
    // Upgraded without switchboard hearing of it first: the next send is
    // answered with migrate_to_chat_id and goes to the new id.
    tg.migrate_unannounced(OLD, NEW);
    post_native(
        &client,
        &sb.api,
        "ann",
        "g",
        json!({"text": "after", "username": "Ann"}),
        None,
    )
    .await
    .unwrap();
    until("the second post in the supergroup", || {
        let n = bot_texts(&tg, NEW).len();
        async move { n == 1 }
    })
    .await;
    assert_eq!(bot_texts(&tg, NEW)[0].1, "Ann: after");
    // And people in the supergroup reach the bot.
    tg.inject_message(NEW, &bob, json!({"text": "hi from the supergroup"}));
    until("the supergroup's message at the bot", || {
        let ok = events_from(&inbox, "telegram.main", "message")
            .iter()
            .any(|e| e["text"] == "hi from the supergroup");
        async move { ok }
    })
    .await;
    tg.stop().await;
}

#[tokio::test]
async fn a_migration_announced_while_receiving_moves_the_channel() {
    let dir = tempfile::tempdir().unwrap();
    let tg = fake(false).await;
    const OLD: i64 = -4_000_000_002;
    const NEW: i64 = -1_004_000_000_002;
    tg.add_chat(OLD, "group", "Small group", false);
    tg.add_chat(NEW, "supergroup", "Small group", false);
    let (sb, inbox) = start_in(dir.path(), &tg, "", OLD).await;
    let client = reqwest::Client::new();
    let bob = FakeTelegram::user(7, "Bob", None);
    // The service messages come first; then people write in the new chat
    // before anything was sent there.
    tg.migrate(OLD, NEW);
    tg.inject_message(NEW, &bob, json!({"text": "first in the supergroup"}));
    until("the supergroup's message at the bot", || {
        let ok = events_from(&inbox, "telegram.main", "message")
            .iter()
            .any(|e| e["text"] == "first in the supergroup");
        async move { ok }
    })
    .await;
    post_native(
        &client,
        &sb.api,
        "ann",
        "g",
        json!({"text": "answer", "username": "Ann"}),
        None,
    )
    .await
    .unwrap();
    until("the answer in the supergroup", || {
        let n = bot_texts(&tg, NEW).len();
        async move { n == 1 }
    })
    .await;
    assert!(bot_texts(&tg, OLD).is_empty());
    tg.stop().await;
}

#[tokio::test]
async fn forum_topics_long_texts_large_files_and_unlisted_chats() {
    const FORUM: i64 = -1_002_000_000_001;
    const ELSEWHERE: i64 = -1_003_000_000_001;
    let dir = tempfile::tempdir().unwrap();
    let tg = fake(false).await;
    tg.add_chat(FORUM, "supergroup", "Forum", true);
    tg.add_chat(ELSEWHERE, "supergroup", "Elsewhere", false);
    tg.add_topic(FORUM, 3);
    tg.add_topic(FORUM, 4);
    let db = Db::new(Backend::Sqlite, dir.path()).await;
    let (api, admin) = (free_port(), free_port());
    // Gateway g: the forum as a whole (topic 4 arrives as a thread of it);
    // gateway t: topic 3 on its own.
    let cfg = base_config(&db, dir.path(), api, admin)
        + &token("ann", r#"["read", "write"]"#, r#"["g", "t"]"#)
        + &telegram_config(&tg, "max_download = \"1KiB\"")
        + &gateway("g")
        + &member(&FORUM.to_string())
        + &gateway("t")
        + &member(&format!("{FORUM}/3"));
    let sb = Sb::start(dir.path(), &cfg, api, admin).await;
    let (g, t) = (Inbox::default(), Inbox::default());
    let ws = sb.api.replace("http", "ws");
    ws_reader(&format!("{ws}/v1/ws?gateways=g"), "ann", g.clone()).await;
    ws_reader(
        &format!("{ws}/v1/ws?gateways=t&consumer=t"),
        "ann",
        t.clone(),
    )
    .await;
    let client = reqwest::Client::new();
    let bob = FakeTelegram::user(7, "Bob", None);

    tg.inject_message(
        FORUM,
        &bob,
        json!({"text": "in topic 3", "message_thread_id": 3, "is_topic_message": true}),
    );
    tg.inject_message(
        FORUM,
        &bob,
        json!({"text": "in topic 4", "message_thread_id": 4, "is_topic_message": true}),
    );
    let big = tg.store_file(vec![7; 2048], "application/pdf", Some("big.pdf"));
    tg.inject_message(
        FORUM,
        &bob,
        json!({"document": big, "caption": "the report"}),
    );
    tg.inject_message(ELSEWHERE, &bob, json!({"text": "nobody bridges this"}));
    t.wait_len(1, "the topic's message in its own gateway")
        .await;
    g.wait_len(2, "the rest of the forum in the other gateway")
        .await;
    assert_eq!(t.all()[0]["text"], "in topic 3");
    let rest = g.all();
    assert_eq!(rest[0]["text"], "in topic 4");
    assert_eq!(rest[0]["origin"]["thread"], "4");
    assert_eq!(
        rest[1]["text"],
        "the report\n[file not bridged: big.pdf (2 KiB): over the 1 KiB download limit]"
    );
    assert_eq!(rest[1]["attachments"].as_array().map(Vec::len), Some(0));
    eventually("the unlisted chat named in the log", || {
        sb.log().contains(&format!("channel = \"{ELSEWHERE}\""))
    })
    .await;

    // A post into the topic's gateway goes into the topic; a long one is
    // split at Telegram's limit, in UTF-16 units, on word boundaries.
    let long: String = (0..1200).map(|i| format!("w{i}😀 ")).collect();
    let (s, _) = post_native(
        &client,
        &sb.api,
        "ann",
        "t",
        json!({"text": long, "username": "Ann"}),
        None,
    )
    .await
    .unwrap();
    assert_eq!(s, 201);
    until("the long post in the topic", || {
        let n = bot_texts(&tg, FORUM).len();
        async move { n >= 2 }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent: Vec<Value> = tg
        .messages(FORUM)
        .into_iter()
        .filter(|m| m["from"]["is_bot"] == true)
        .collect();
    assert!(sent.len() >= 2);
    let mut joined = String::new();
    for m in &sent {
        assert_eq!(m["message_thread_id"], 3);
        let text = m["text"].as_str().unwrap();
        assert!(text.encode_utf16().count() <= 4096);
        let body = text
            .strip_prefix("Ann: ")
            .expect("each part names its author");
        joined.push_str(body);
        if !body.ends_with(' ') {
            joined.push(' ');
        }
    }
    assert_eq!(
        joined.split_whitespace().collect::<Vec<_>>(),
        long.split_whitespace().collect::<Vec<_>>()
    );
    tg.stop().await;
}

#[tokio::test]
async fn webhook_mode_checks_the_secret_and_answers_after_the_commit() {
    let dir = tempfile::tempdir().unwrap();
    let tg = fake(false).await;
    let hook = free_port();
    let (sb, inbox) = start(
        dir.path(),
        &tg,
        &format!("receive = \"webhook\"\nwebhook_bind = \"127.0.0.1:{hook}\"\nwebhook_url = \"https://bridge.example.org/tg\"\nwebhook_secret = \"s3cret-Token_1\""),
    )
    .await;
    eventually("the webhook set at Telegram", || {
        tg.calls().iter().any(|c| {
            c.method == "setWebhook"
                && c.param("url").as_deref() == Some("https://bridge.example.org/tg")
                && c.param("secret_token").as_deref() == Some("s3cret-Token_1")
        })
    })
    .await;
    assert_eq!(
        tg.webhook_url().as_deref(),
        Some("https://bridge.example.org/tg")
    );
    let update = json!({"update_id": 900, "message": {
        "message_id": 77, "date": 1_764_000_000,
        "from": {"id": 7, "is_bot": false, "first_name": "Bob"},
        "chat": {"id": GROUP, "type": "supergroup", "title": "Lobby"},
        "text": "via webhook"}});
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{hook}/");
    let post = |secret: &'static str, body: String| {
        client
            .post(&url)
            .header("x-telegram-bot-api-secret-token", secret)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    assert_eq!(
        post("wrong", update.to_string()).await.unwrap().status(),
        401
    );
    assert_eq!(post("", update.to_string()).await.unwrap().status(), 401);
    // Answered 200 only once committed: the event is there when it answers.
    assert_eq!(
        post("s3cret-Token_1", update.to_string())
            .await
            .unwrap()
            .status(),
        200
    );
    let polled = poll_mb(&client, &sb.api, "ann").await;
    assert_eq!(texts(&polled), ["via webhook"], "committed before the 200");
    inbox.wait_len(1, "the webhook's message at the bot").await;
    // Telegram retries what it thinks failed: the repeat is acknowledged
    // and dropped; something malformed is acknowledged and skipped.
    assert_eq!(
        post("s3cret-Token_1", update.to_string())
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        post("s3cret-Token_1", "{not json".into())
            .await
            .unwrap()
            .status(),
        200
    );
    let next = json!({"update_id": 901, "message": {
        "message_id": 78, "date": 1_764_000_001,
        "from": {"id": 7, "is_bot": false, "first_name": "Bob"},
        "chat": {"id": GROUP, "type": "supergroup"},
        "text": "second"}});
    assert_eq!(
        post("s3cret-Token_1", next.to_string())
            .await
            .unwrap()
            .status(),
        200
    );
    inbox.wait_len(2, "the second webhook message").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let texts: Vec<Value> = inbox.all().iter().map(|e| e["text"].clone()).collect();
    assert_eq!(texts, [json!("via webhook"), json!("second")]);
    tg.stop().await;
}

#[tokio::test]
async fn pacing_spreads_a_burst_instead_of_drawing_429s() {
    let dir = tempfile::tempdir().unwrap();
    let tg = fake(false).await;
    // A bot allowed 5 messages a second, paced at one per 250 ms: room for
    // a loaded machine delaying one request more than the next.
    tg.set_rate_limits(None, Some(5));
    let db = Db::new(Backend::Sqlite, dir.path()).await;
    let (api, admin) = (free_port(), free_port());
    let cfg = base_config(&db, dir.path(), api, admin)
        + &token("ann", r#"["read", "write"]"#, r#"["g"]"#)
        + &format!(
            "\n[telegram.main]\ntoken = \"{}\"\napi_url = \"{}\"\npoll_timeout = \"2s\"\npace_per_chat = \"0s\"\npace_per_bot = \"250ms\"\n",
            tg.token(),
            tg.api_url()
        )
        + &gateway("g")
        + &member(&GROUP.to_string());
    let sb = Sb::start(dir.path(), &cfg, api, admin).await;
    let client = reqwest::Client::new();
    for i in 0..12 {
        post_native(
            &client,
            &sb.api,
            "ann",
            "g",
            json!({"text": format!("burst {i}"), "username": "Ann"}),
            None,
        )
        .await
        .unwrap();
    }
    until("the burst in the group", || {
        let n = bot_texts(&tg, GROUP).len();
        async move { n == 12 }
    })
    .await;
    let refused = tg.calls().iter().filter(|c| c.status == Some(429)).count();
    assert_eq!(refused, 0, "paced sends are never refused");
    let texts: Vec<String> = bot_texts(&tg, GROUP).into_iter().map(|(_, t)| t).collect();
    let want: Vec<String> = (0..12).map(|i| format!("Ann: burst {i}")).collect();
    assert_eq!(texts, want);
    tg.stop().await;
}

#[tokio::test]
async fn privacy_mode_is_named_with_its_fix_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let tg = FakeTelegram::start(FakeOptions {
        can_read_all_group_messages: false,
        ..FakeOptions::default()
    })
    .await
    .unwrap();
    tg.add_chat(GROUP, "supergroup", "Lobby", false);
    let (sb, _inbox) = start(dir.path(), &tg, "").await;
    eventually("the privacy warning", || {
        let log = sb.log();
        log.contains("Privacy mode is on") && log.contains("/setprivacy")
    })
    .await;
    tg.stop().await;
}

#[tokio::test]
async fn a_second_poller_is_a_health_error_that_names_the_cause() {
    let dir = tempfile::tempdir().unwrap();
    let tg = fake(false).await;
    let (sb, _inbox) = start(dir.path(), &tg, "").await;
    let client = reqwest::Client::new();
    // switchboard has read what was waiting (the bot's promotion in
    // `fake`): a poll from offset 0 would get it at once, not wait.
    eventually("the queue read", || tg.pending_updates() == 0).await;
    // Another program polls the same bot: Telegram ends one of the two
    // polls with 409.
    let rival = {
        let url = format!("{}/bot{}/getUpdates", tg.api_url(), tg.token());
        let client = client.clone();
        tokio::spawn(async move {
            for _ in 0..20 {
                let _ = client.post(&url).json(&json!({"timeout": 2})).send().await;
            }
        })
    };
    until("needs_action in the status", || {
        let client = client.clone();
        let url = format!("{}/v1/status", sb.admin);
        async move {
            let Ok(r) = client.get(&url).bearer_auth(ADMIN_TOKEN).send().await else {
                return false;
            };
            let v: Value = r.json().await.unwrap_or_default();
            v["accounts"].as_array().into_iter().flatten().any(|a| {
                a["account"] == "telegram.main"
                    && a["state"] == "needs_action"
                    && a["last_error"]
                        .as_str()
                        .is_some_and(|e| e.contains("another client receives this bot's updates"))
            })
        }
    })
    .await;
    rival.abort();
    tg.stop().await;
}

#[tokio::test]
async fn a_lost_answer_is_the_only_way_to_a_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let tg = fake(false).await;
    let (sb, _inbox) = start(dir.path(), &tg, "").await;
    let client = reqwest::Client::new();
    // Telegram takes the message but answers after the outbox gave up
    // (send_timeout is 2 s here): the outbox cannot know it arrived, and
    // Telegram has no idempotency key, so the retry makes a second copy.
    tg.fail("sendMessage", Fault::Hang(Duration::from_secs(3)), 1);
    for i in 0..3 {
        post_native(
            &client,
            &sb.api,
            "ann",
            "g",
            json!({"text": format!("m{i}"), "username": "Ann"}),
            None,
        )
        .await
        .unwrap();
    }
    until("three messages and the one duplicate", || {
        let n = bot_texts(&tg, GROUP).len();
        async move { n == 4 }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let texts: Vec<String> = bot_texts(&tg, GROUP).into_iter().map(|(_, t)| t).collect();
    let dups = texts.len() - {
        let mut d = texts.clone();
        d.sort();
        d.dedup();
        d.len()
    };
    assert_eq!(dups, 1, "one lost answer, one duplicate: {texts:?}");
    assert!(texts.iter().filter(|t| *t == "Ann: m0").count() == 2);
    tg.stop().await;
}

#[tokio::test]
async fn a_reload_adds_changes_and_removes_a_telegram_account() {
    let dir = tempfile::tempdir().unwrap();
    let tg = fake(false).await;
    let db = Db::new(Backend::Sqlite, dir.path()).await;
    let (api, admin) = (free_port(), free_port());
    let base = base_config(&db, dir.path(), api, admin)
        + &token("ann", r#"["read", "write"]"#, r#"["g"]"#)
        + &gateway("g");
    let mut sb = Sb::start(dir.path(), &base, api, admin).await;
    let inbox = Inbox::default();
    let ws = sb.api.replace("http", "ws");
    ws_reader(&format!("{ws}/v1/ws?gateways=g"), "ann", inbox.clone()).await;
    let client = reqwest::Client::new();
    let bob = FakeTelegram::user(7, "Bob", None);
    let reload = |sb: &Sb| sb.cli(&["reload"]);

    // Added: the account starts and the group joins the conversation.
    let with_tg = base.clone() + &telegram_config(&tg, "") + &member(&GROUP.to_string());
    std::fs::write(&sb.config, &with_tg).unwrap();
    let report = reload(&sb);
    assert!(report.contains("telegram.main"), "{report}");
    tg.inject_message(GROUP, &bob, json!({"text": "hello after the reload"}));
    inbox.wait_len(1, "the new group's message").await;
    post_native(
        &client,
        &sb.api,
        "ann",
        "g",
        json!({"text": "welcome", "username": "Ann"}),
        None,
    )
    .await
    .unwrap();
    until("the welcome in the group", || {
        let n = bot_texts(&tg, GROUP).len();
        async move { n == 1 }
    })
    .await;

    // Changed (another poll timeout): restarted, nothing lost or repeated
    // across the switch.
    let changed = with_tg.replace("poll_timeout = \"2s\"", "poll_timeout = \"3s\"");
    std::fs::write(&sb.config, &changed).unwrap();
    for i in 0..3 {
        tg.inject_message(GROUP, &bob, json!({"text": format!("during {i}")}));
    }
    reload(&sb);
    for i in 3..6 {
        tg.inject_message(GROUP, &bob, json!({"text": format!("during {i}")}));
    }
    inbox
        .wait_len(7, "every message across the restart of the account")
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got: Vec<String> = inbox
        .all()
        .iter()
        .filter_map(|e| e["text"].as_str().map(str::to_owned))
        .collect();
    let mut want = vec!["hello after the reload".to_owned()];
    want.extend((0..6).map(|i| format!("during {i}")));
    assert_eq!(got, want);
    assert!(
        !sb.log().contains("Conflict"),
        "the old poller was gone before the new one polled"
    );

    // Removed: the poller stops, and the account leaves the status.
    std::fs::write(&sb.config, &base).unwrap();
    reload(&sb);
    let polls = tg.calls_to("getUpdates").len();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        tg.calls_to("getUpdates").len(),
        polls,
        "no poll after the account was removed"
    );
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .arg("--config")
        .arg(&sb.config)
        .arg("status")
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&status.stdout);
    let row = status
        .lines()
        .find(|l| l.starts_with("telegram.main"))
        .expect("its past rows");
    assert!(row.contains("not configured"), "{status}");
    sb.stop().await;
    tg.stop().await;
}
