//! Links made from the chats (issue 23), through the real binary on both
//! backends: a Telegram group (the Bot API fake) and a Matrix room (a real
//! Synapse, real users) linked by a pairing code, messages both ways, a
//! Signal group (the signal-cli fake) joined to the same gateway by a
//! second code, then the Matrix room unlinked from the room itself; a
//! non-admin's attempt, an expired code and a reused code refused; links
//! kept across kill -9 and a reload; `status`, `help`, `check`. And,
//! without Synapse: wrong codes limited per chat, the admin API (list,
//! link two channels, remove), a configured gateway that takes linked
//! chats (`linkable = true`), and the configuration winning over a link.

use std::time::Duration;

use serde_json::{json, Value};
use switchboard_signal::fake::{FakeOptions as SignalOptions, FakeSignal, ReceiveMode};
use switchboard_telegram::fake::FakeTelegram;

use crate::harness::*;
use crate::synapse::{MxUser, Options as SynapseOptions, RateLimits, Synapse};

const TG_CHAT: i64 = -1_002_300_000_001;
const TG_OTHER: i64 = -1_002_300_000_002;
const SIGNAL_ADMIN: &str = "+15550000002";
const SIGNAL_MEMBER: &str = "+15550000003";
const SIGNAL_DM: &str = "+15550000004";

/// Waits until `f` finds something; returns it.
async fn wait_some<F, Fut, T>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        if let Some(t) = f().await {
            return t;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The bot's messages in a Telegram chat.
fn tg_texts(tg: &FakeTelegram, chat: i64) -> Vec<String> {
    crate::telegram::bot_texts(tg, chat)
        .into_iter()
        .map(|(_, t)| t)
        .collect()
}

/// The `nth` (from 0) message of the bot in a Telegram chat that contains
/// `needle`, once there.
async fn tg_says(tg: &FakeTelegram, chat: i64, needle: &str, nth: usize) -> String {
    wait_some(&format!("{needle:?} in Telegram chat {chat}"), || {
        let hit = tg_texts(tg, chat)
            .into_iter()
            .filter(|t| t.contains(needle))
            .nth(nth);
        async move { hit }
    })
    .await
}

/// What the bridge sent to a Signal group or number.
fn signal_texts(signal: &FakeSignal, to: &str) -> Vec<String> {
    crate::signal::sends(signal, "send")
        .into_iter()
        .filter(|p| {
            p["groupId"] == json!(to) || p["recipient"].as_array().is_some_and(|r| r[0] == to)
        })
        .filter_map(|p| p["message"].as_str().map(str::to_owned))
        .collect()
}

async fn signal_says(signal: &FakeSignal, to: &str, needle: &str, nth: usize) -> String {
    wait_some(&format!("{needle:?} to Signal {to}"), || {
        let hit = signal_texts(signal, to)
            .into_iter()
            .filter(|t| t.contains(needle))
            .nth(nth);
        async move { hit }
    })
    .await
}

/// The bridge's messages in a Matrix room, bodies only.
async fn mx_texts(user: &MxUser, room: &str, bridge: &str) -> Vec<String> {
    user.messages(room)
        .await
        .into_iter()
        .filter(|e| e["type"] == "m.room.message" && e["sender"] == bridge)
        .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
        .collect()
}

async fn mx_says(user: &MxUser, room: &str, bridge: &str, needle: &str, nth: usize) -> String {
    wait_some(
        &format!("{needle:?} in Matrix room {room}"),
        || async move {
            mx_texts(user, room, bridge)
                .await
                .into_iter()
                .filter(|t| t.contains(needle))
                .nth(nth)
        },
    )
    .await
}

/// The pairing code in an answer.
fn code_in(text: &str) -> String {
    let at = text
        .find("sb-")
        .unwrap_or_else(|| panic!("no code in {text:?}"));
    text[at..at + 12].to_owned()
}

/// A Signal fake in manual receive mode with a group whose admin is
/// `SIGNAL_ADMIN` (besides the account), and a member who is not.
async fn signal_fake() -> (FakeSignal, String) {
    let signal = FakeSignal::start(SignalOptions {
        receive_mode: ReceiveMode::Manual,
        ..SignalOptions::default()
    })
    .await
    .expect("fake signal-cli");
    signal.add_contact(
        SIGNAL_ADMIN,
        "6a1f7c1e-4c57-4e64-9a3c-2a6f6f0b1c11",
        Some("Sam"),
    );
    signal.add_contact(
        SIGNAL_MEMBER,
        "7b2f7c1e-4c57-4e64-9a3c-2a6f6f0b1c12",
        Some("Mo"),
    );
    signal.add_contact(
        SIGNAL_DM,
        "8c3f7c1e-4c57-4e64-9a3c-2a6f6f0b1c13",
        Some("Dee"),
    );
    let group = signal.add_group("Friends", &[SIGNAL_ADMIN, SIGNAL_MEMBER]);
    signal.set_admin(&group, SIGNAL_ADMIN, true);
    (signal, group)
}

fn sections(tg: &FakeTelegram, signal: &FakeSignal) -> String {
    crate::telegram::telegram_config(tg, "links = true")
        + &crate::signal::signal_section(&format!("tcp://{}", signal.tcp_addr()), Some("2s"))
        + "links = true\n"
}

on_both_backends!(telegram_matrix_and_signal_linked_from_the_chats => |backend| linked_from_the_chats(backend));

async fn linked_from_the_chats(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let tg = crate::telegram::fake(false).await;
    tg.add_chat(TG_CHAT, "supergroup", "Lobby", false);
    let tg_admin = FakeTelegram::user(7, "Ada", Some("ada"));
    let tg_member = FakeTelegram::user(8, "Max", None);
    tg.set_member_status(TG_CHAT, &tg_admin, "administrator");
    tg.set_member_status(TG_CHAT, &tg_member, "member");
    let bot_name = tg.bot()["username"].as_str().unwrap().to_owned();
    let (signal, group) = signal_fake().await;

    std::fs::create_dir_all(dir.path().join("synapse")).unwrap();
    let synapse = Synapse::start_opts(
        &dir.path().join("synapse"),
        &SynapseOptions {
            rate_limits: RateLimits::Relaxed,
            ..SynapseOptions::default()
        },
    )
    .await;
    let alice = synapse.register("alice", false).await;
    alice.set_displayname("Alice").await;
    let bob = synapse.register("bob", false).await;
    synapse.register("bridge", false).await;
    let bridge = synapse.user_id("bridge");
    // A room no configuration names: its creator (power level 100) links
    // it; bob (0) may not. The bridge is invited, as a community would.
    let room = alice
        .create_room_with(&json!({"preset": "private_chat", "name": "Garden",
            "invite": [bridge, bob.user_id]}))
        .await;
    bob.join(&room).await;

    let db = Db::new(backend, dir.path()).await;
    let (api, admin) = (free_port(), free_port());
    let matrix = format!(
        "\n[matrix.main]\nhomeserver = \"{}\"\nuser = \"{bridge}\"\npassword = \"pw-bridge\"\nsync_timeout = \"5s\"\nlinks = true\n",
        synapse.url()
    );
    let cfg = base_config(&db, dir.path(), api, admin) + &sections(&tg, &signal) + &matrix;
    let mut sb = Sb::start(dir.path(), &cfg, api, admin).await;
    assert!(signal.wait_receivers(1, PATIENCE).await, "subscribed");
    until("the bridge in the room", || {
        let (alice, room, bridge) = (alice.clone(), room.clone(), bridge.clone());
        async move { alice.members(&room).await.contains(&bridge) }
    })
    .await;
    // The commands are in the menu of Telegram's group admins.
    until("the command menu", || {
        let got = tg.bot_commands(&json!({"type": "all_chat_administrators"}), "");
        async move { got.iter().any(|c| c["command"] == "link") }
    })
    .await;

    // Not an admin: refused, in words; nothing bridged anywhere.
    tg.inject_message(TG_CHAT, &tg_member, json!({"text": "/link"}));
    tg_says(&tg, TG_CHAT, "Only an admin of this chat", 0).await;
    // help, in Telegram's form.
    tg.inject_message(TG_CHAT, &tg_member, json!({"text": "/help"}));
    let help = tg_says(&tg, TG_CHAT, "mirrors this chat", 0).await;
    assert!(
        help.contains("/link CODE") && help.contains("/status"),
        "{help}"
    );

    // An admin asks for a code, addressed to this bot by name.
    tg.inject_message(
        TG_CHAT,
        &tg_admin,
        json!({"text": format!("/link@{bot_name}")}),
    );
    let offer = tg_says(&tg, TG_CHAT, "Pairing code", 0).await;
    let code = code_in(&offer);
    assert!(offer.contains(&format!("!sb link {code}")), "{offer}");
    assert!(
        offer.contains("Matrix, Signal") || offer.contains("Signal, Matrix"),
        "{offer}"
    );

    // In the room: bob (power level 0) may not; alice may.
    bob.send_text(&room, &format!("!sb link {code}")).await;
    mx_says(&alice, &room, &bridge, "Only an admin of this chat", 0).await;
    alice
        .send_text(&room, &format!("!sb link {}", code.to_lowercase()))
        .await;
    let linked = mx_says(&alice, &room, &bridge, "Linked: this chat now mirrors", 0).await;
    assert!(linked.contains("«Lobby» on Telegram"), "{linked}");
    let told = tg_says(&tg, TG_CHAT, "is now linked with this chat", 0).await;
    assert!(told.contains("«Garden» on Matrix"), "{told}");

    // Messages both ways; the commands and answers went nowhere else.
    tg.inject_message(TG_CHAT, &tg_admin, json!({"text": "hello garden"}));
    mx_says(&alice, &room, &bridge, "hello garden", 0).await;
    alice.send_text(&room, "hello lobby").await;
    tg_says(&tg, TG_CHAT, "hello lobby", 0).await;
    let in_room = mx_texts(&alice, &room, &bridge).await;
    assert!(
        !in_room
            .iter()
            .any(|t| t.contains("/link") || t.contains("Pairing code")),
        "{in_room:?}"
    );
    // (alice typed the code in lower case: it appears nowhere.)
    assert!(
        !tg_texts(&tg, TG_CHAT)
            .iter()
            .any(|t| t.contains(&code.to_lowercase()) || t.contains("Bob")),
        "{:?}",
        tg_texts(&tg, TG_CHAT)
    );

    // The same code again, in Signal: used.
    signal.inject_message(
        SIGNAL_ADMIN,
        Some(&group),
        json!({"message": format!("!sb link {code}")}),
    );
    signal_says(&signal, &group, "was used already", 0).await;

    // A second code joins the Signal group to the same gateway.
    tg.inject_message(TG_CHAT, &tg_admin, json!({"text": "/link"}));
    let code2 = code_in(&tg_says(&tg, TG_CHAT, "Pairing code", 1).await);
    assert_ne!(code, code2);
    let offer2 = tg_says(&tg, TG_CHAT, "Pairing code", 1).await;
    assert!(
        offer2.contains("the 1 chat linked with this one"),
        "{offer2}"
    );
    // A member who is not an admin of the group: refused.
    signal.inject_message(
        SIGNAL_MEMBER,
        Some(&group),
        json!({"message": format!("!sb link {code2}")}),
    );
    signal_says(&signal, &group, "Only an admin of this chat", 0).await;
    signal.inject_message(
        SIGNAL_ADMIN,
        Some(&group),
        json!({"message": format!("!sb link {code2}")}),
    );
    let joined = signal_says(&signal, &group, "Linked: this chat now mirrors", 0).await;
    assert!(
        joined.contains("«Lobby» on Telegram") && joined.contains("«Garden» on Matrix"),
        "{joined}"
    );
    tg_says(&tg, TG_CHAT, "«Friends» on Signal is now linked", 0).await;
    mx_says(
        &alice,
        &room,
        &bridge,
        "«Friends» on Signal is now linked",
        0,
    )
    .await;
    signal.inject_message(SIGNAL_ADMIN, Some(&group), json!({"message": "hi all"}));
    tg_says(&tg, TG_CHAT, "hi all", 0).await;
    mx_says(&alice, &room, &bridge, "hi all", 0).await;

    // kill -9: the links are rows in the database.
    sb.kill9();
    sb.restart().await;
    tg.inject_message(TG_CHAT, &tg_admin, json!({"text": "after the kill"}));
    signal_says(&signal, &group, "after the kill", 0).await;
    mx_says(&alice, &room, &bridge, "after the kill", 0).await;
    // status and check show them.
    let status = sb.cli(&["status"]);
    assert!(
        status.contains("Links made from chats") && status.contains("Garden"),
        "{status}"
    );
    let check = sb.cli(&["check"]);
    assert!(
        check.contains("link-") && check.contains("(linked from the chat)"),
        "{check}"
    );

    // A reload (shorter codes from now on) keeps them too.
    let cfg = cfg + "\n[links]\ncode_ttl = \"10s\"\n";
    std::fs::write(&sb.config, &cfg).unwrap();
    sb.cli(&["reload"]);
    alice.send_text(&room, "after the reload").await;
    tg_says(&tg, TG_CHAT, "after the reload", 0).await;
    signal_says(&signal, &group, "after the reload", 0).await;

    // status in a chat: every network of the gateway, up, nothing waits.
    tg.inject_message(TG_CHAT, &tg_member, json!({"text": "/status"}));
    let st = tg_says(&tg, TG_CHAT, "This chat is in gateway", 0).await;
    for part in [
        "«Garden» on Matrix: up",
        "«Friends» on Signal: up",
        "this chat",
    ] {
        assert!(st.contains(part), "{st}");
    }

    // An expired code, sent in a direct chat with the Signal account.
    tg.inject_message(TG_CHAT, &tg_admin, json!({"text": "/link"}));
    let code3 = code_in(&tg_says(&tg, TG_CHAT, "Pairing code", 2).await);
    tokio::time::sleep(Duration::from_secs(11)).await;
    signal.inject_message(
        SIGNAL_DM,
        None,
        json!({"message": format!("!sb link {code3}")}),
    );
    signal_says(&signal, SIGNAL_DM, "has expired", 0).await;

    // Unlinked from the Matrix side: the others are told, and go on.
    bob.send_text(&room, "!sb unlink").await;
    mx_says(&alice, &room, &bridge, "Only an admin of this chat", 1).await;
    alice.send_text(&room, "!sb unlink").await;
    let gone = mx_says(
        &alice,
        &room,
        &bridge,
        "Unlinked: this chat no longer mirrors",
        0,
    )
    .await;
    assert!(
        gone.contains("«Lobby» on Telegram") && gone.contains("«Friends» on Signal"),
        "{gone}"
    );
    tg_says(&tg, TG_CHAT, "«Garden» on Matrix was unlinked", 0).await;
    signal_says(&signal, &group, "«Garden» on Matrix was unlinked", 0).await;
    tg.inject_message(TG_CHAT, &tg_admin, json!({"text": "without the garden"}));
    signal_says(&signal, &group, "without the garden", 0).await;
    alice.send_text(&room, "anyone there?").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !mx_texts(&alice, &room, &bridge)
            .await
            .iter()
            .any(|t| t.contains("without the garden")),
        "the room left the gateway"
    );
    assert!(
        !tg_texts(&tg, TG_CHAT)
            .iter()
            .any(|t| t.contains("anyone there?")),
        "the room left the gateway"
    );
    sb.stop().await;
}

on_both_backends!(links_through_the_admin_api_and_the_configuration => |backend| admin_api_and_configuration(backend));

async fn admin_api_and_configuration(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let tg = crate::telegram::fake(false).await;
    tg.add_chat(TG_CHAT, "supergroup", "Lobby", false);
    tg.add_chat(TG_OTHER, "supergroup", "Porch", false);
    let tg_admin = FakeTelegram::user(7, "Ada", Some("ada"));
    tg.set_member_status(TG_CHAT, &tg_admin, "creator");
    tg.set_member_status(TG_OTHER, &tg_admin, "administrator");
    let (signal, group) = signal_fake().await;
    let db = Db::new(backend, dir.path()).await;
    let (api, admin) = (free_port(), free_port());
    // A configured gateway with the bot API that takes linked chats.
    let base = base_config(&db, dir.path(), api, admin)
        + &token("ann", r#"["read", "write"]"#, r#"["g"]"#)
        + &sections(&tg, &signal)
        + "\n[links]\nattempts = 3\n"
        + "\n[[gateway]]\nname = \"g\"\nlinkable = true\n[[gateway.inout]]\naccount = \"api.bots\"\nchannel = \"api\"\n"
        + &crate::telegram::member(&TG_CHAT.to_string());
    let mut sb = Sb::start(dir.path(), &base, api, admin).await;
    assert!(signal.wait_receivers(1, PATIENCE).await, "subscribed");
    let inbox = Inbox::default();
    let ws = sb.api.replace("http", "ws");
    ws_reader(&format!("{ws}/v1/ws?gateways=g"), "ann", inbox.clone()).await;
    let http = reqwest::Client::new();

    // Wrong codes are limited per chat: the fourth is not even checked.
    for i in 0..3 {
        tg.inject_message(
            TG_OTHER,
            &tg_admin,
            json!({"text": format!("/link sb-AAAA-AAA{}", 2 + i)}),
        );
        tg_says(&tg, TG_OTHER, "No pairing code like that", i).await;
    }
    tg.inject_message(TG_OTHER, &tg_admin, json!({"text": "/link nonsense"}));
    tg_says(&tg, TG_OTHER, "Too many wrong codes", 0).await;

    // An anonymous administrator writes as the group itself (Telegram's
    // GroupAnonymousBot with `sender_chat`): an admin.
    let anonymous = FakeTelegram::user(1_087_968_824, "Group", Some("GroupAnonymousBot"));
    tg.inject_message(
        TG_OTHER,
        &anonymous,
        json!({"text": "/link", "sender_chat": {"id": TG_OTHER, "type": "supergroup", "title": "Porch"}}),
    );
    tg_says(&tg, TG_OTHER, "Pairing code", 0).await;

    // The configured gateway takes a chat with its code: the Signal group
    // joins `g`, beside the bot API.
    tg.inject_message(TG_CHAT, &tg_admin, json!({"text": "/link"}));
    let code = code_in(&tg_says(&tg, TG_CHAT, "Pairing code", 0).await);
    signal.inject_message(
        SIGNAL_ADMIN,
        Some(&group),
        json!({"message": format!("!sb link {code}")}),
    );
    signal_says(&signal, &group, "Linked: this chat now mirrors", 0).await;
    signal.inject_message(SIGNAL_ADMIN, Some(&group), json!({"message": "to g"}));
    inbox
        .wait_len(1, "the Signal group's message at the bot")
        .await;
    tg_says(&tg, TG_CHAT, "to g", 0).await;
    // The command itself never reached the bot API.
    assert!(
        !inbox
            .all()
            .iter()
            .any(|e| e["text"].as_str().is_some_and(|t| t.contains("!sb"))),
        "{:?}",
        inbox.all()
    );

    // The admin API: behind the admin token; list, link two channels,
    // remove.
    let r = http
        .get(format!("{}/v1/links", sb.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let links: Value = http
        .get(format!("{}/v1/links", sb.admin))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let rows = links["links"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{links}");
    assert_eq!(rows[0]["gateway"], "g");
    assert_eq!(rows[0]["in_force"], true);
    let r = http
        .post(format!("{}/v1/links", sb.admin))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"first": {"account": "telegram.main", "channel": TG_OTHER.to_string(), "name": "Porch"},
                      "second": {"account": "signal.main", "channel": SIGNAL_DM}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let made: Value = r.json().await.unwrap();
    let gw = made["gateway"].as_str().unwrap().to_owned();
    assert!(gw.starts_with("link-"), "{made}");
    assert_eq!(made["links"].as_array().unwrap().len(), 2);
    tg_says(
        &tg,
        TG_OTHER,
        "is now linked with this chat by the server's operator",
        0,
    )
    .await;
    signal_says(
        &signal,
        SIGNAL_DM,
        "The server's operator linked this chat with «Porch» on Telegram",
        0,
    )
    .await;
    signal.inject_message(SIGNAL_DM, None, json!({"message": "from the porch dm"}));
    tg_says(&tg, TG_OTHER, "from the porch dm", 0).await;
    // The admin page's data shows the gateway made from chats, and who
    // linked each of its chats.
    let overview: Value = http
        .get(format!("{}/v1/overview", sb.admin))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let shown = overview["gateways"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == gw.as_str())
        .unwrap_or_else(|| panic!("{gw} not on the admin page: {overview}"));
    assert_eq!(shown["source"], "chats", "{shown}");
    let members = shown["members"].as_array().unwrap();
    assert_eq!(members.len(), 2, "{shown}");
    assert!(
        members.iter().all(|m| m["linked"]["by"] == "the admin API"),
        "{shown}"
    );
    // Refused: a chat linked already; an account without links; garbage.
    for (body, status) in [
        (
            json!({"first": {"account": "telegram.main", "channel": TG_OTHER.to_string()},
                "second": {"account": "signal.main", "channel": group}}),
            409,
        ),
        (
            json!({"first": {"account": "telegram.nope", "channel": "-1"},
                "second": {"account": "signal.main", "channel": SIGNAL_MEMBER}}),
            422,
        ),
        (json!({"first": "x"}), 400),
    ] {
        let r = http
            .post(format!("{}/v1/links", sb.admin))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{body}");
        let err: Value = r.json().await.unwrap();
        assert!(err["error"]["message"].is_string(), "{err}");
    }
    let id = made["links"][1]["id"].as_i64().unwrap();
    let r = http
        .delete(format!("{}/v1/links/{id}", sb.admin))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let removed: Value = r.json().await.unwrap();
    assert_eq!(
        removed["removed"].as_array().unwrap().len(),
        2,
        "the gateway of two goes: {removed}"
    );
    tg_says(
        &tg,
        TG_OTHER,
        "This chat is not linked with any other now",
        0,
    )
    .await;
    let r = http
        .delete(format!("{}/v1/links/{id}", sb.admin))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // The configuration wins: once it names the Signal group itself, the
    // link is not in force (and says why), and nothing is sent twice.
    let cfg = base.clone() + &crate::signal::signal_member(&group);
    std::fs::write(&sb.config, &cfg).unwrap();
    sb.cli(&["reload"]);
    let check = sb.cli(&["check"]);
    assert!(
        check.contains(
            "is not in force: the configuration lists this chat in gateway `g`, which wins"
        ),
        "{check}"
    );
    let links: Value = http
        .get(format!("{}/v1/links", sb.admin))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(links["links"][0]["in_force"], false, "{links}");
    tg.inject_message(TG_CHAT, &tg_admin, json!({"text": "once"}));
    signal_says(&signal, &group, "once", 0).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        signal_texts(&signal, &group)
            .iter()
            .filter(|t| t.contains("once"))
            .count(),
        1
    );
    // A chat the configuration lists is the operator's to take out.
    signal.inject_message(SIGNAL_ADMIN, Some(&group), json!({"message": "!sb unlink"}));
    signal_says(&signal, &group, "by the server's configuration", 0).await;
    sb.stop().await;
}

/// Two instances of a cluster: a link made through one instance's admin
/// API is in force on the other, which receives for Telegram (it is told
/// through PostgreSQL's notifications), and so is its removal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_made_on_one_instance_routes_on_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let tg = crate::telegram::fake(false).await;
    tg.add_chat(TG_CHAT, "supergroup", "Lobby", false);
    let ann = FakeTelegram::user(9, "Ann", None);
    let (signal, group) = signal_fake().await;
    let db = Db::new(Backend::Postgres, dir.path()).await;
    let pool = crate::cluster::pool(&db.url).await;
    let mut sbs = Vec::new();
    for name in ["a", "b"] {
        let sub = dir.path().join(name);
        std::fs::create_dir_all(&sub).unwrap();
        let (api, admin) = (free_port(), free_port());
        let cfg = base_config(&db, &sub, api, admin)
            + &format!(
                "\n[cluster]\nenabled = true\ninstance = \"{name}\"\ntakeover_after = \"6s\"\n"
            )
            + &sections(&tg, &signal);
        sbs.push(Sb::start(&sub, &cfg, api, admin).await);
    }
    let holder = wait_some("an instance receiving for Telegram", || {
        let pool = pool.clone();
        async move {
            switchboard::store::postgres::leases(&pool)
                .await
                .unwrap()
                .into_iter()
                .find(|l| {
                    l.kind == "account" && l.account == "telegram.main" && l.expires_in_ms > 0
                })
                .and_then(|l| l.holder)
        }
    })
    .await;
    let (receiving, other) = if holder == "a" {
        (&sbs[0], &sbs[1])
    } else {
        (&sbs[1], &sbs[0])
    };
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/v1/links", other.admin))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"first": {"account": "telegram.main", "channel": TG_CHAT.to_string(), "name": "Lobby"},
                      "second": {"account": "signal.main", "channel": group}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let made: Value = r.json().await.unwrap();
    let id = made["links"][0]["id"].as_i64().unwrap();
    // The instance that receives for Telegram has the link in force.
    let links_on = |sb: &Sb| {
        let url = format!("{}/v1/links", sb.admin);
        let http = http.clone();
        async move {
            let v: Value = http
                .get(url)
                .bearer_auth(ADMIN_TOKEN)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v["links"].as_array().unwrap().len()
        }
    };
    wait_some("the link on the receiving instance", || async {
        (links_on(receiving).await == 2).then_some(())
    })
    .await;
    tg.inject_message(TG_CHAT, &ann, json!({"text": "hello across instances"}));
    signal_says(&signal, &group, "hello across instances", 0).await;

    // Removed on the other instance: gone on the receiving one too.
    let r = http
        .delete(format!("{}/v1/links/{id}", other.admin))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    wait_some("the link gone on the receiving instance", || async {
        (links_on(receiving).await == 0).then_some(())
    })
    .await;
    for sb in &mut sbs {
        sb.stop().await;
    }
}
