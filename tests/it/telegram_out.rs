//! Telegram as it really is, sending (issue 19): what the Bot API answers
//! when the bot was removed, the chat is gone, a text does not fit, or a
//! success comes in an unexpected shape; and how long an operation without
//! content may hold a chat. Nothing is dropped for its content, nothing is
//! dead-lettered that the next attempt would have delivered, and the lane
//! goes on. Each test names the issue's item it proves.

use std::time::Duration;

use serde_json::{json, Value};
use switchboard_telegram::fake::{BotStatus, FakeTelegram, Fault};

use crate::harness::*;
use crate::telegram::{bot_texts, fake, member, telegram_config, GROUP};

/// switchboard with gateway `g` (`notice_after = 1s`) of the bot API and the
/// Telegram group, a WebSocket reader of `g`, and `outbox` lines added to
/// the test's `[outbox]`.
async fn start(dir: &std::path::Path, tg: &FakeTelegram, outbox: &str) -> (Sb, Inbox) {
    let db = Db::new(Backend::Sqlite, dir).await;
    let (api, admin) = (free_port(), free_port());
    let cfg = base_config(&db, dir, api, admin).replace(
        "breaker_probe = \"200ms\"\n",
        &format!("breaker_probe = \"200ms\"\n{outbox}"),
    ) + &token("ann", r#"["read", "write"]"#, r#"["g"]"#)
        + &telegram_config(tg, "")
        + "\n[[gateway]]\nname = \"g\"\nnotice_after = \"1s\"\n[[gateway.inout]]\naccount = \"api.bots\"\nchannel = \"api\"\n"
        + &member(&GROUP.to_string());
    let sb = Sb::start(dir, &cfg, api, admin).await;
    let inbox = Inbox::default();
    let ws = sb.api.replace("http", "ws");
    ws_reader(&format!("{ws}/v1/ws?gateways=g"), "ann", inbox.clone()).await;
    (sb, inbox)
}

/// Posts `text` as Ann into `g`; its event id.
async fn post(sb: &Sb, body: Value) -> String {
    let (s, posted) = post_native(&reqwest::Client::new(), &sb.api, "ann", "g", body, None)
        .await
        .unwrap();
    assert_eq!(s, 201, "{posted}");
    posted["id"].as_str().unwrap().to_owned()
}

async fn say(sb: &Sb, text: &str) -> String {
    post(sb, json!({"text": text, "username": "Ann"})).await
}

/// Dead letters of the Telegram account, from `/metrics`.
async fn dead_letters(sb: &Sb) -> u64 {
    sb.metrics()
        .await
        .lines()
        .find_map(|l| l.strip_prefix("switchboard_dead_letters_total{account=\"telegram.main\"} "))
        .map_or(0, |v| v.trim().parse().unwrap())
}

/// The group's channel row in `/v1/status`, while it needs action.
async fn channel_needing_action(sb: &Sb) -> Option<Value> {
    let status: Value = reqwest::Client::new()
        .get(format!("{}/v1/status", sb.admin))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    status["accounts"]
        .as_array()?
        .iter()
        .find(|a| a["account"] == "telegram.main")?["channels"]
        .as_array()?
        .iter()
        .find(|c| c["channel"].as_str() == Some(&GROUP.to_string()) && c["state"] == "needs_action")
        .cloned()
}

fn notices(inbox: &Inbox) -> Vec<String> {
    inbox
        .all()
        .iter()
        .filter(|e| e["type"] == "notice")
        .map(|e| e["text"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// The bot's texts in the group, without the author prefix.
fn delivered(tg: &FakeTelegram) -> Vec<String> {
    bot_texts(tg, GROUP)
        .into_iter()
        .map(|(_, t)| t.strip_prefix("Ann: ").unwrap_or(&t).to_owned())
        .collect()
}

/// Item 6: the bot removed from the group, the chat gone, the right to
/// write taken away. The channel is down, not each message bad: the lane
/// waits, `status` shows the channel needing action in Telegram's words,
/// the other members are told (down, then back), and everything queued
/// arrives once, in order, when it is fixed.
#[tokio::test]
async fn a_removed_bot_a_missing_chat_or_no_right_to_write_hold_the_lane() {
    let dir = tempfile::tempdir().unwrap();
    let tg = fake(false).await;
    let (sb, inbox) = start(dir.path(), &tg, "").await;
    say(&sb, "before").await;
    eventually("the first message", || delivered(&tg) == ["before"]).await;

    let cases: [(&str, &dyn Fn(bool)); 3] = [
        (
            "Forbidden: bot was kicked from the supergroup chat",
            &|down| {
                let status = if down {
                    BotStatus::Kicked
                } else {
                    BotStatus::Administrator
                };
                tg.set_bot_status(GROUP, status);
            },
        ),
        ("Bad Request: chat not found", &|down| {
            tg.set_chat_missing(GROUP, down)
        }),
        (
            "Bad Request: not enough rights to send text messages to the chat",
            &|down| {
                let status = if down {
                    BotStatus::Restricted
                } else {
                    BotStatus::Administrator
                };
                tg.set_bot_status(GROUP, status);
            },
        ),
    ];
    let mut want = vec!["before".to_owned()];
    for (round, (words, set_down)) in cases.iter().enumerate() {
        set_down(true);
        for i in 0..3 {
            let text = format!("round {round} message {i}");
            say(&sb, &text).await;
            want.push(text);
        }
        until("the channel shown as needing action", || async {
            channel_needing_action(&sb)
                .await
                .is_some_and(|c| c["error"].as_str().unwrap_or_default().contains(words))
        })
        .await;
        until("the down notice at the other members", || {
            let n = notices(&inbox)
                .iter()
                .filter(|n| n.contains("unreachable"))
                .count();
            async move { n == round + 1 }
        })
        .await;
        assert_eq!(dead_letters(&sb).await, 0, "nothing dead-lettered");
        set_down(false);
        eventually("the queue delivered", || delivered(&tg) == want).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while notices(&inbox)
            .iter()
            .filter(|n| n.contains("is back after"))
            .count()
            != round + 1
        {
            assert!(
                std::time::Instant::now() < deadline,
                "no back notice: {:?}\n{}",
                notices(&inbox),
                sb.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        until("no longer needing action", || async {
            channel_needing_action(&sb).await.is_none()
        })
        .await;
    }
    let down = notices(&inbox);
    assert!(down[0].contains("Telegram"), "{down:?}");
    assert!(
        down.iter()
            .any(|n| n.contains("3 queued messages were delivered")),
        "{down:?}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(delivered(&tg), want, "each once, in order");
    assert_eq!(dead_letters(&sb).await, 0);
    drop(sb);
    tg.stop().await;
}

/// Item 7: never dropped for its content. Formatting Telegram refuses is
/// sent again as plain text; an edit longer than a message, or than a
/// caption, is split, the rest following as a message.
#[tokio::test]
async fn refused_formatting_and_overlong_edits_are_still_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let tg = fake(false).await;
    let (sb, _inbox) = start(dir.path(), &tg, "").await;
    let client = reqwest::Client::new();

    tg.fail("sendMessage", Fault::entities(0, 12), 1);
    post(
        &sb,
        json!({"text": "bold words", "username": "Ann", "spans": [{"start": 0, "end": 4, "style": "bold"}]}),
    )
    .await;
    eventually("the message, as plain text", || {
        delivered(&tg) == ["bold words"]
    })
    .await;
    let sent = tg.messages(GROUP).pop().unwrap();
    assert!(sent.get("entities").is_none(), "plain: {sent}");
    assert!(sb.log().contains("plain text"), "{}", sb.log());
    assert!(sb.metrics().await.contains(
        "switchboard_adapter_events_total{account=\"telegram.main\",event=\"plain_text_resend\"} 1"
    ));

    // An edit past Telegram's 4,096 UTF-16 units.
    let id = say(&sb, "short").await;
    eventually("the short message", || delivered(&tg).len() == 2).await;
    let long: String = (0..900).map(|i| format!("w{i:03}😀 ")).collect();
    let r = client
        .patch(format!("{}/v1/gateways/g/messages/{id}", sb.api))
        .header("authorization", bearer("ann"))
        .json(&json!({"text": long}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    eventually("the edit, and its rest as a message", || {
        delivered(&tg).len() == 3
    })
    .await;
    let parts = delivered(&tg);
    assert!(parts[1].encode_utf16().count() <= 4096);
    assert_eq!(
        format!("{} {}", parts[1], parts[2])
            .split_whitespace()
            .collect::<Vec<_>>(),
        long.split_whitespace().collect::<Vec<_>>()
    );

    // A caption edit past 1,024 units.
    use base64::Engine;
    let png =
        base64::engine::general_purpose::STANDARD.encode(switchboard_telegram::fake::png(4, 4));
    let pic = post(
        &sb,
        json!({"text": "pic", "username": "Ann", "attachments": [{"name": "a.png", "mime": "image/png", "data": png}]}),
    )
    .await;
    eventually("the photo", || delivered(&tg).len() == 4).await;
    let caption: String = (0..300).map(|i| format!("c{i:03} ")).collect();
    let r = client
        .patch(format!("{}/v1/gateways/g/messages/{pic}", sb.api))
        .header("authorization", bearer("ann"))
        .json(&json!({"text": caption}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    eventually("the caption edit and its rest", || {
        delivered(&tg).len() == 5
    })
    .await;
    let parts = delivered(&tg);
    assert!(parts[3].encode_utf16().count() <= 1024);
    assert_eq!(
        format!("{} {}", parts[3], parts[4])
            .split_whitespace()
            .collect::<Vec<_>>(),
        caption.split_whitespace().collect::<Vec<_>>()
    );
    assert_eq!(dead_letters(&sb).await, 0);
    drop(sb);
    tg.stop().await;
}

/// Item 12: a success is a success (`ok: true` with a `result` of another
/// shape, as a proxy, a local server or an emulator may answer), and a
/// retry that finds the work done is done.
#[tokio::test]
async fn a_success_of_another_shape_is_a_success_and_a_done_retry_is_done() {
    let dir = tempfile::tempdir().unwrap();
    let tg = fake(false).await;
    let (sb, _inbox) = start(dir.path(), &tg, "").await;
    let client = reqwest::Client::new();

    let id = say(&sb, "one").await;
    eventually("the first message", || delivered(&tg) == ["one"]).await;
    let first = bot_texts(&tg, GROUP)[0].0;

    // A new message answered `null`: it was sent; it is not sent again.
    tg.fail("sendMessage", Fault::Result(Value::Null), 1);
    say(&sb, "two").await;
    say(&sb, "three").await;
    eventually("both", || delivered(&tg).len() >= 3).await;

    // Every reaction answered `null` (documented: `true`): it is set, and
    // the message behind it goes on.
    tg.fail("setMessageReaction", Fault::Result(Value::Null), 10_000);
    let r = client
        .post(format!("{}/v1/gateways/g/messages/{id}/reactions", sb.api))
        .header("authorization", bearer("ann"))
        .json(&json!({"emoji": "👍"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    say(&sb, "four").await;
    eventually("the message after the reaction", || {
        delivered(&tg).len() >= 4
    })
    .await;
    assert_eq!(tg.bot_reactions(GROUP, first), ["👍"]);
    tg.clear_faults();

    // An edit answered `true` (the shape for inline messages).
    tg.fail("editMessageText", Fault::Result(json!(true)), 10_000);
    let r = client
        .patch(format!("{}/v1/gateways/g/messages/{id}", sb.api))
        .header("authorization", bearer("ann"))
        .json(&json!({"text": "one, edited"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    say(&sb, "five").await;
    eventually("the message after the edit", || delivered(&tg).len() >= 5).await;
    assert_eq!(delivered(&tg)[0], "one, edited");
    tg.clear_faults();

    // A delete whose answer is lost: the retry finds the message gone.
    tg.fail("deleteMessage", Fault::Hang(Duration::from_secs(3)), 1);
    let r = client
        .delete(format!("{}/v1/gateways/g/messages/{id}", sb.api))
        .header("authorization", bearer("ann"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    say(&sb, "six").await;
    eventually("the delete, then the next message", || {
        delivered(&tg).first().map(String::as_str) == Some("two")
            && delivered(&tg).last().map(String::as_str) == Some("six")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        delivered(&tg),
        ["two", "three", "four", "five", "six"],
        "each once, in order; the first deleted"
    );
    assert!(tg.message(GROUP, first).is_none());
    assert_eq!(dead_letters(&sb).await, 0, "nothing dead-lettered");
    drop(sb);
    tg.stop().await;
}

/// Item 13: a reaction that keeps failing (500s) is dead-lettered after
/// `no_content_budget`, with the reason, and the messages behind it go on.
#[tokio::test]
async fn a_failing_reaction_gives_up_after_its_budget_and_the_lane_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let tg = fake(false).await;
    let (sb, _inbox) = start(dir.path(), &tg, "no_content_budget = \"2s\"\n").await;
    let client = reqwest::Client::new();
    let id = say(&sb, "react to me").await;
    eventually("the message", || delivered(&tg).len() == 1).await;
    tg.fail(
        "setMessageReaction",
        Fault::error(500, "Internal Server Error: try again"),
        10_000,
    );
    let r = client
        .post(format!("{}/v1/gateways/g/messages/{id}/reactions", sb.api))
        .header("authorization", bearer("ann"))
        .json(&json!({"emoji": "👍"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    say(&sb, "behind it 1").await;
    say(&sb, "behind it 2").await;
    eventually("the messages behind the reaction", || {
        delivered(&tg) == ["react to me", "behind it 1", "behind it 2"]
    })
    .await;
    until("the reaction dead-lettered", || async {
        dead_letters(&sb).await == 1
    })
    .await;
    // The reason is the one logged with the dead letter.
    let log = sb.log();
    let line = log
        .lines()
        .find(|l| l.contains("Message dead-lettered"))
        .expect("the dead letter logged");
    assert!(line.contains("no_content_budget"), "{line}");
    assert!(line.contains("Internal Server Error"), "{line}");
    drop(sb);
    tg.stop().await;
}
