//! Telegram as it really is, receiving (issue 19): what the Bot API sends a
//! bot, and how the service paces it, reaches the bots exactly once, in
//! order, as it was meant. Each test names the issue's item it proves; all
//! run the real binary against the in-repo fake, whose behaviour here was
//! checked against the Bot API documentation and tdlib/telegram-bot-api.

use std::time::Duration;

use serde_json::{json, Value};
use sha2::Digest;
use switchboard_telegram::fake::{FakeTelegram, StickerFormat};

use crate::harness::*;
use crate::telegram::{fake, member, start, telegram_config, GROUP};

const FORUM: i64 = -1_002_000_000_001;
const OTHER: i64 = -1_003_000_000_001;

/// `GET /v1/status` on the admin listener.
async fn status(sb: &Sb) -> Value {
    admin_get(&sb.admin, "/v1/status")
        .await
        .json()
        .await
        .unwrap_or_default()
}

/// The Telegram account's row of the status.
async fn telegram_status(sb: &Sb) -> Value {
    status(sb).await["accounts"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["account"] == "telegram.main")
        .cloned()
        .unwrap_or_default()
}

fn texts_of(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["text"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Item 1: in a supergroup without topics, every reply carries
/// `message_thread_id` (the reply chain's first message) without
/// `is_topic_message`; the reply must still arrive as a reply.
#[tokio::test]
async fn replies_in_a_supergroup_without_topics_arrive_as_replies() {
    let dir = tempfile::tempdir().unwrap();
    let tg = fake(false).await;
    let (sb, inbox) = start(dir.path(), &tg, "").await;
    let bob = FakeTelegram::user(7, "Bob", None);
    let root = tg.inject_message(GROUP, &bob, json!({"text": "root"}));
    let reply = tg.inject_message(
        GROUP,
        &bob,
        json!({"text": "a reply", "reply_to_message_id": root}),
    );
    tg.inject_message(
        GROUP,
        &bob,
        json!({"text": "a reply to the reply", "reply_to_message_id": reply}),
    );
    inbox.wait_len(3, "the three messages").await;
    let got = events_from(&inbox, "telegram.main", "message");
    assert_eq!(texts_of(&got), ["root", "a reply", "a reply to the reply"]);
    assert_eq!(got[1]["reply_to"], got[0]["id"], "{:#?}", got[1]);
    assert_eq!(got[2]["reply_to"], got[1]["id"], "{:#?}", got[2]);
    // Not a topic: the group's own channel, no thread.
    for e in &got {
        assert_eq!(e["origin"]["channel"], GROUP.to_string());
        assert!(e["origin"]["thread"].is_null(), "{e:#?}");
    }
    drop(sb);
    tg.stop().await;
}

/// Item 2: a GIF comes as `animation` and, for old clients, as `document`
/// too; it is one file and one attachment.
#[tokio::test]
async fn a_gif_is_one_attachment() {
    let dir = tempfile::tempdir().unwrap();
    let tg = fake(false).await;
    let (sb, inbox) = start(dir.path(), &tg, "").await;
    let bob = FakeTelegram::user(7, "Bob", None);
    let gif = tg.store_animation(vec![0, 0, 0, 24, b'f', b't', b'y', b'p'], "party.gif.mp4");
    tg.inject_message(GROUP, &bob, json!({"animation": gif, "caption": "🎉"}));
    inbox.wait_len(1, "the GIF").await;
    let e = &events_from(&inbox, "telegram.main", "message")[0];
    let files = e["attachments"].as_array().unwrap();
    assert_eq!(files.len(), 1, "one file, one attachment: {files:#?}");
    assert_eq!(files[0]["name"], "party.gif.mp4");
    assert_eq!(files[0]["mime"], "video/mp4");
    assert_eq!(e["text"], "🎉");
    drop(sb);
    tg.stop().await;
}

/// Item 3: stickers keep their format (WebP, TGS, WebM) and carry their
/// still thumbnail for networks that cannot show it, with the emoji; to
/// another Telegram chat they go as stickers of the same kind.
#[tokio::test]
async fn stickers_keep_their_format_and_bring_a_still_image() {
    let dir = tempfile::tempdir().unwrap();
    let tg = fake(false).await;
    tg.add_chat(OTHER, "supergroup", "Other", false);
    let db = Db::new(Backend::Sqlite, dir.path()).await;
    let (api, admin) = (free_port(), free_port());
    let cfg = base_config(&db, dir.path(), api, admin)
        + &token("ann", r#"["read", "write"]"#, r#"["g"]"#)
        + &telegram_config(&tg, "")
        + &gateway("g")
        + &member(&GROUP.to_string())
        + &member(&OTHER.to_string());
    let sb = Sb::start(dir.path(), &cfg, api, admin).await;
    let inbox = Inbox::default();
    let ws = sb.api.replace("http", "ws");
    ws_reader(&format!("{ws}/v1/ws?gateways=g"), "ann", inbox.clone()).await;
    let bob = FakeTelegram::user(7, "Bob", None);
    let formats = [
        (StickerFormat::Webp, "sticker.webp", "image/webp"),
        (StickerFormat::Tgs, "sticker.tgs", "application/x-tgsticker"),
        (StickerFormat::Webm, "sticker.webm", "video/webm"),
    ];
    for (format, _, _) in formats {
        let sticker = tg.store_sticker(format, "😺");
        tg.inject_message(GROUP, &bob, json!({"sticker": sticker}));
    }
    inbox.wait_len(3, "the three stickers").await;
    let got = events_from(&inbox, "telegram.main", "message");
    let client = reqwest::Client::new();
    for (e, (format, name, mime)) in got.iter().zip(formats) {
        let files = e["attachments"].as_array().unwrap();
        assert_eq!(files.len(), 1, "{e:#?}");
        assert_eq!(files[0]["kind"], "sticker");
        assert_eq!(files[0]["name"], name);
        assert_eq!(files[0]["mime"], mime);
        assert_eq!(e["text"], "😺", "the sticker's emoji goes with it");
        let r = client
            .get(format!("{}{}", sb.api, files[0]["url"].as_str().unwrap()))
            .header("authorization", bearer("ann"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.bytes().await.unwrap().as_ref(),
            format.sample().as_slice()
        );
    }
    // The still (the thumbnail Telegram gives, a WebP) was fetched and
    // stored with each sticker: a network that cannot show the sticker gets
    // it instead (the degrade planner's part, unit-tested in bridges/core).
    let still = switchboard_telegram::fake::webp(128, 128);
    let sha = hex::encode(sha2::Sha256::digest(&still));
    let r = client
        .get(format!("{}/v1/blobs/{sha}", sb.api))
        .header("authorization", bearer("ann"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().as_ref(), still.as_slice());
    // Telegram shows all three: the other chat gets stickers of the same
    // kinds (sendSticker), after the line saying who sent them.
    let bot = tg.bot()["id"].as_i64().unwrap();
    let copies = || -> Vec<Value> {
        tg.messages(OTHER)
            .into_iter()
            .filter(|m| m["from"]["id"].as_i64() == Some(bot))
            .collect()
    };
    eventually("the stickers in the other chat", || copies().len() == 6).await;
    let copies = copies();
    for (pair, (animated, video)) in
        copies
            .chunks(2)
            .zip([(false, false), (true, false), (false, true)])
    {
        assert_eq!(pair[0]["text"], "Bob: 😺", "{pair:#?}");
        assert_eq!(pair[1]["sticker"]["is_animated"], animated, "{pair:#?}");
        assert_eq!(pair[1]["sticker"]["is_video"], video, "{pair:#?}");
    }
    drop(sb);
    tg.stop().await;
}

/// Item 4: a `message_reaction` names the chat, not the forum topic; a
/// topic bridged as `<chat>/<topic>` still gets the reactions to its
/// messages, the bot's copies included.
#[tokio::test]
async fn reactions_in_a_forum_topic_reach_the_topic() {
    let dir = tempfile::tempdir().unwrap();
    let tg = fake(false).await;
    tg.add_chat(FORUM, "supergroup", "Forum", true);
    tg.set_bot_admin(FORUM, true);
    tg.add_topic(FORUM, 3);
    let db = Db::new(Backend::Sqlite, dir.path()).await;
    let (api, admin) = (free_port(), free_port());
    let cfg = base_config(&db, dir.path(), api, admin)
        + &token("ann", r#"["read", "write"]"#, r#"["t"]"#)
        + &telegram_config(&tg, "")
        + &gateway("t")
        + &member(&format!("{FORUM}/3"));
    let sb = Sb::start(dir.path(), &cfg, api, admin).await;
    let inbox = Inbox::default();
    let ws = sb.api.replace("http", "ws");
    ws_reader(&format!("{ws}/v1/ws?gateways=t"), "ann", inbox.clone()).await;
    let bob = FakeTelegram::user(7, "Bob", None);

    let said = tg.inject_message(
        FORUM,
        &bob,
        json!({"text": "in topic 3", "message_thread_id": 3, "is_topic_message": true}),
    );
    inbox.wait_len(1, "the topic's message").await;
    let original = inbox.all()[0]["id"].clone();
    let (s, posted) = post_native(
        &reqwest::Client::new(),
        &sb.api,
        "ann",
        "t",
        json!({"text": "answer", "username": "Ann"}),
        None,
    )
    .await
    .unwrap();
    assert_eq!(s, 201, "{posted}");
    let copy = loop {
        let found = tg
            .messages(FORUM)
            .into_iter()
            .find(|m| m["text"] == "Ann: answer");
        if let Some(m) = found {
            break m["message_id"].as_i64().unwrap();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    tg.inject_reaction(FORUM, said, &bob, &[], &["👍"]);
    tg.inject_reaction(FORUM, copy, &bob, &[], &["🔥"]);
    until("both reactions in the topic's gateway", || {
        let n = events_from(&inbox, "telegram.main", "reaction").len();
        async move { n == 2 }
    })
    .await;
    let reactions = events_from(&inbox, "telegram.main", "reaction");
    assert_eq!(reactions[0]["target"], original);
    assert_eq!(reactions[0]["emoji"], "👍");
    assert_eq!(reactions[0]["origin"]["channel"], format!("{FORUM}/3"));
    assert_eq!(reactions[1]["target"], posted["id"]);
    assert_eq!(reactions[1]["emoji"], "🔥");
    drop(sb);
    tg.stop().await;
}

/// Item 5: Telegram sends reactions only to administrators; a bot that is
/// not one in a bridged group shows `degraded` with the reason, the log
/// names the fix once, and promoting the bot makes it `up` again.
#[tokio::test]
async fn a_bot_that_cannot_see_reactions_is_degraded_until_it_is_an_admin() {
    let dir = tempfile::tempdir().unwrap();
    let tg = fake(false).await;
    tg.set_bot_admin(GROUP, false);
    let (sb, inbox) = start(dir.path(), &tg, "").await;
    until("degraded, naming the group and admin rights", || async {
        let row = telegram_status(&sb).await;
        row["state"] == "degraded"
            && row["last_error"]
                .as_str()
                .is_some_and(|e| e.contains(&GROUP.to_string()) && e.contains("admin"))
    })
    .await;
    // Messages still flow meanwhile.
    let bob = FakeTelegram::user(7, "Bob", None);
    tg.inject_message(GROUP, &bob, json!({"text": "still here"}));
    inbox.wait_len(1, "a message while degraded").await;
    let fix = "make the bot an administrator";
    assert_eq!(sb.log().matches(fix).count(), 1, "{}", sb.log());

    // An admin promotes the bot: Telegram tells it (my_chat_member).
    tg.set_bot_admin(GROUP, true);
    until("up again", || async {
        telegram_status(&sb).await["state"] == "up"
    })
    .await;
    let said = tg.inject_message(GROUP, &bob, json!({"text": "react to me"}));
    tg.inject_reaction(GROUP, said, &bob, &[], &["👍"]);
    until("the reaction", || {
        let n = events_from(&inbox, "telegram.main", "reaction").len();
        async move { n == 1 }
    })
    .await;
    assert_eq!(sb.log().matches(fix).count(), 1, "named once");
    drop(sb);
    tg.stop().await;
}

/// Item 8 (the server's throttle): an album queued while switchboard was
/// away is answered at once by the first poll; polling the same offset again
/// within 0.5 s of it gets one update only (telegram-bot-api's hot-loop
/// throttle). It is still one message.
#[tokio::test]
async fn an_album_waiting_at_restart_is_one_message() {
    let dir = tempfile::tempdir().unwrap();
    let tg = fake(false).await;
    let (mut sb, inbox) = start(dir.path(), &tg, "").await;
    let bob = FakeTelegram::user(7, "Bob", None);
    tg.inject_message(GROUP, &bob, json!({"text": "before"}));
    inbox.wait_len(1, "the first message").await;
    sb.stop().await;
    for i in 0..3 {
        let photo = tg.store_photo(switchboard_telegram::fake::png(2 + i, 2));
        let mut fields = json!({"media_group_id": "alb", "photo": photo});
        if i == 0 {
            fields["caption"] = "three".into();
        }
        tg.inject_message(GROUP, &bob, fields);
    }
    sb.restart().await;
    let after = Inbox::default();
    let ws = sb.api.replace("http", "ws");
    ws_reader(
        &format!("{ws}/v1/ws?gateways=g&cursor=0"),
        "ann",
        after.clone(),
    )
    .await;
    after.wait_len(2, "the album").await;
    tg.inject_message(GROUP, &bob, json!({"text": "after"}));
    until("the text after the album", || {
        let last = after.all().last().map(|e| e["text"].clone());
        async move { last == Some(json!("after")) }
    })
    .await;
    let got = events_from(&after, "telegram.main", "message");
    assert_eq!(texts_of(&got), ["before", "three", "after"], "{got:#?}");
    assert_eq!(got[1]["attachments"].as_array().unwrap().len(), 3);
    drop(sb);
    tg.stop().await;
}

/// Item 8 (parts apart): the second part arrives a moment after a poll
/// returned the first. One message.
#[tokio::test]
async fn an_album_whose_parts_arrive_apart_is_one_message() {
    let dir = tempfile::tempdir().unwrap();
    let tg = fake(false).await;
    let (sb, inbox) = start(dir.path(), &tg, "").await;
    let bob = FakeTelegram::user(7, "Bob", None);
    // The poller is waiting: each part wakes it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in 0..3 {
        let photo = tg.store_photo(switchboard_telegram::fake::png(2 + i, 2));
        tg.inject_message(
            GROUP,
            &bob,
            json!({"media_group_id": "alb", "photo": photo}),
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tg.inject_message(GROUP, &bob, json!({"text": "after"}));
    inbox.wait_len(2, "the album and the text").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let got = events_from(&inbox, "telegram.main", "message");
    assert_eq!(got.len(), 2, "{got:#?}");
    assert_eq!(got[0]["attachments"].as_array().unwrap().len(), 3);
    assert_eq!(got[1]["text"], "after");
    drop(sb);
    tg.stop().await;
}

/// Item 9: in webhook mode Telegram POSTs one update per request (an
/// album is N requests) and, by default, up to 40 at once. The result is
/// the same as polling: one album, one message; each chat in order.
#[tokio::test]
async fn webhook_mode_keeps_albums_whole_and_each_chat_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let tg = fake(false).await;
    tg.add_chat(OTHER, "supergroup", "Other", false);
    let hook = free_port();
    let db = Db::new(Backend::Sqlite, dir.path()).await;
    let (api, admin) = (free_port(), free_port());
    let extra = format!(
        "receive = \"webhook\"\nwebhook_bind = \"127.0.0.1:{hook}\"\nwebhook_url = \"https://bridge.example.org/tg\"\nwebhook_secret = \"s3cret\""
    );
    let cfg = base_config(&db, dir.path(), api, admin)
        + &token("ann", r#"["read", "write"]"#, r#"["g"]"#)
        + &telegram_config(&tg, &extra)
        + &gateway("g")
        + &member(&GROUP.to_string())
        + &member(&OTHER.to_string());
    let sb = Sb::start(dir.path(), &cfg, api, admin).await;
    let inbox = Inbox::default();
    let ws = sb.api.replace("http", "ws");
    ws_reader(&format!("{ws}/v1/ws?gateways=g"), "ann", inbox.clone()).await;
    tg.forward_webhook_to(format!("127.0.0.1:{hook}").parse().unwrap());
    eventually("the webhook set", || tg.webhook_url().is_some()).await;
    let set = tg.calls_to("setWebhook");
    assert_eq!(
        set.last().unwrap().param("max_connections").as_deref(),
        Some("1"),
        "one delivery at a time, so a chat's reactions never overtake its messages"
    );

    let bob = FakeTelegram::user(7, "Bob", None);
    let mut first = 0;
    for i in 0..3 {
        let photo = tg.store_photo(switchboard_telegram::fake::png(2 + i, 2));
        let mut fields = json!({"media_group_id": "alb", "photo": photo});
        if i == 0 {
            fields["caption"] = "album".into();
        }
        let id = tg.inject_message(GROUP, &bob, fields);
        if i == 0 {
            first = id;
        }
        tg.inject_message(OTHER, &bob, json!({"text": format!("elsewhere {i}")}));
    }
    tg.inject_edit(GROUP, first, json!({"caption": "album, captioned"}));
    tg.inject_reaction(GROUP, first, &bob, &[], &["🔥"]);
    tg.inject_message(GROUP, &bob, json!({"text": "after"}));
    until("everything at the bot", || {
        let n = inbox
            .all()
            .iter()
            .filter(|e| e["origin"]["account"] == "telegram.main")
            .count();
        async move { n >= 7 }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (group_id, other_id) = (GROUP.to_string(), OTHER.to_string());
    let group: Vec<Value> = inbox
        .all()
        .into_iter()
        .filter(|e| e["origin"]["channel"].as_str() == Some(&group_id))
        .collect();
    let kinds: Vec<&str> = group.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["message", "edit", "reaction", "message"],
        "{group:#?}"
    );
    assert_eq!(group[0]["attachments"].as_array().unwrap().len(), 3);
    assert_eq!(group[1]["target"], group[0]["id"]);
    assert_eq!(group[1]["text"], "album, captioned");
    assert_eq!(group[2]["target"], group[0]["id"]);
    assert_eq!(group[3]["text"], "after");
    let other: Vec<String> = inbox
        .all()
        .iter()
        .filter(|e| e["origin"]["channel"].as_str() == Some(&other_id))
        .map(|e| e["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(other, ["elsewhere 0", "elsewhere 1", "elsewhere 2"]);
    assert_eq!(tg.pending_updates(), 0, "every delivery acknowledged");
    drop(sb);
    tg.stop().await;
}

/// Item 9, across a crash: album parts Telegram was told were received
/// are kept through a kill -9, and the album is still one message when the
/// rest arrives after the restart.
#[tokio::test]
async fn a_webhook_album_cut_by_a_crash_is_still_one_message() {
    let dir = tempfile::tempdir().unwrap();
    let tg = fake(false).await;
    let hook = free_port();
    let extra = format!(
        "receive = \"webhook\"\nwebhook_bind = \"127.0.0.1:{hook}\"\nwebhook_url = \"https://bridge.example.org/tg\"\nwebhook_secret = \"s3cret\""
    );
    let (mut sb, _inbox) = start(dir.path(), &tg, &extra).await;
    tg.forward_webhook_to(format!("127.0.0.1:{hook}").parse().unwrap());
    eventually("the webhook set", || tg.webhook_url().is_some()).await;
    let bob = FakeTelegram::user(7, "Bob", None);
    let part = |i: u32| {
        let photo = tg.store_photo(switchboard_telegram::fake::png(2 + i, 2));
        json!({"media_group_id": "alb", "photo": photo})
    };
    tg.inject_message(GROUP, &bob, part(0));
    eventually("the first part acknowledged", || tg.pending_updates() == 0).await;
    sb.kill9();
    tg.inject_message(GROUP, &bob, part(1));
    tg.inject_message(GROUP, &bob, part(2));
    sb.restart().await;
    let inbox = Inbox::default();
    let ws = sb.api.replace("http", "ws");
    ws_reader(
        &format!("{ws}/v1/ws?gateways=g&cursor=0"),
        "ann",
        inbox.clone(),
    )
    .await;
    inbox.wait_len(1, "the album").await;
    tg.inject_message(GROUP, &bob, json!({"text": "after"}));
    inbox.wait_len(2, "the text after it").await;
    let got = events_from(&inbox, "telegram.main", "message");
    assert_eq!(got.len(), 2, "{got:#?}");
    assert_eq!(got[0]["attachments"].as_array().unwrap().len(), 3);
    assert_eq!(got[1]["text"], "after");
    drop(sb);
    tg.stop().await;
}

/// Item 10: two edits within the same second (Telegram's `edit_date` has
/// one-second resolution) both arrive, and the latest wins.
#[tokio::test]
async fn two_edits_within_one_second_both_arrive_and_the_latest_wins() {
    let dir = tempfile::tempdir().unwrap();
    let tg = fake(false).await;
    let (sb, inbox) = start(dir.path(), &tg, "").await;
    let bob = FakeTelegram::user(7, "Bob", None);
    let said = tg.inject_message(GROUP, &bob, json!({"text": "first"}));
    inbox.wait_len(1, "the message").await;
    let second = tg.message(GROUP, said).unwrap()["date"].as_i64().unwrap() + 1;
    tg.inject_edit(GROUP, said, json!({"text": "second", "edit_date": second}));
    tg.inject_edit(GROUP, said, json!({"text": "third", "edit_date": second}));
    tg.inject_message(GROUP, &bob, json!({"text": "done"}));
    until("the marker after the edits", || {
        let n = events_from(&inbox, "telegram.main", "message").len();
        async move { n == 2 }
    })
    .await;
    let edits = events_from(&inbox, "telegram.main", "edit");
    assert_eq!(texts_of(&edits), ["second", "third"]);
    drop(sb);
    tg.stop().await;
}

/// Item 11: a server that answers a long poll at once (a proxy, a local
/// Bot API server under load, an emulator ignoring `timeout`) is not polled
/// in a loop: an early empty answer waits before the next poll, and the
/// status says what is happening.
#[tokio::test]
async fn a_server_answering_long_polls_at_once_is_polled_calmly() {
    let dir = tempfile::tempdir().unwrap();
    let tg = fake(false).await;
    tg.answer_polls_at_once(true);
    let (sb, inbox) = start(dir.path(), &tg, "").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = tg.calls_to("getUpdates").len();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let polls = tg.calls_to("getUpdates").len() - before;
    assert!(polls <= 10, "{polls} polls in 3 s of quiet");
    let row = telegram_status(&sb).await;
    assert_eq!(row["state"], "degraded", "{row}");
    assert!(
        row["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("at once")),
        "{row}"
    );
    assert_eq!(
        sb.log().matches("answers long polls at once").count(),
        1,
        "logged once"
    );
    // Messages still arrive, and a server that waits again is `up` again.
    let bob = FakeTelegram::user(7, "Bob", None);
    tg.inject_message(GROUP, &bob, json!({"text": "hello"}));
    inbox.wait_len(1, "a message").await;
    tg.answer_polls_at_once(false);
    until("up again", || async {
        telegram_status(&sb).await["state"] == "up"
    })
    .await;
    drop(sb);
    tg.stop().await;
}

/// Item 14: a `date` that cannot be a time (milliseconds, out of range) is
/// bridged with the time it was received, and a warning; not as 1970.
#[tokio::test]
async fn an_impossible_date_is_the_time_it_arrived() {
    let dir = tempfile::tempdir().unwrap();
    let tg = fake(false).await;
    let (sb, inbox) = start(dir.path(), &tg, "").await;
    // Raw updates: the fake's own messages always carry a real date (an
    // emulator or a proxy rewriting payloads is where these come from).
    for (id, text, date) in [
        (501, "in milliseconds", json!(1_764_100_000_000_i64)),
        (502, "before time", json!(-5)),
    ] {
        tg.inject_update(json!({"message": {
            "message_id": id, "date": date, "text": text,
            "from": {"id": 7, "is_bot": false, "first_name": "Bob"},
            "chat": {"id": GROUP, "type": "supergroup", "title": "Lobby"},
        }}));
    }
    inbox.wait_len(2, "both messages").await;
    let year = time::OffsetDateTime::now_utc().year().to_string();
    for e in events_from(&inbox, "telegram.main", "message") {
        let at = e["at"].as_str().unwrap();
        assert!(at.starts_with(&year), "{} at {at}", e["text"]);
    }
    assert!(
        sb.log().contains("not a plausible time"),
        "warned: {}",
        sb.log()
    );
    drop(sb);
    tg.stop().await;
}
