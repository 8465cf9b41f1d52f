//! Matrix as it really is (issue 21): the real binary against a real
//! Synapse that is as strict as the homeservers people run: Synapse's own
//! rate limits for the relay bot, a proxy in front of it that fails or
//! stalls a file or loses an answer, real users sending what real clients
//! send (edits with `m.new_content`, replies with and without fallbacks and
//! threads, stickers, a moderator's redaction).
//!
//! - Who may do what: an edit by someone other than the author, or a
//!   reaction taken back by someone else, is not bridged; a moderator's
//!   redaction is.
//! - A file that cannot be fetched (502, or stalled) costs its message the
//!   file, not the account its flow.
//! - The relay bot paces itself under Synapse's default limits.
//! - Stickers both ways.
//! - A login after a refused token keeps the device: a send retried across
//!   it is posted once. The upload limit is the homeserver's.
//! - A restart with a backlog delivers it at once, never `down`.
//! - A relayed message carries its author's per-message profile; another
//!   relay bot's profile names its author.
//! - A soft logout (an expired token) keeps the one device.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};
use switchboard_telegram::fake::FakeTelegram;

use crate::harness::*;
use crate::matrix::{bridged_bodies, member, setup_with, Mode, Opts, Setup};
use crate::synapse::proxy::{Fault, Proxy};
use crate::synapse::{MxUser, Options as SynapseOptions, RateLimits, Synapse};

/// A 1×1 PNG.
const PNG: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1f, 0x15, 0xc4,
    0x89, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0xf8, 0xcf, 0xc0, 0xf0,
    0x1f, 0x00, 0x05, 0x00, 0x01, 0xff, 0x89, 0x99, 0x3d, 0x1d, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45,
    0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
];

/// Posts `text` as `username` to gateway `g`.
async fn post(sb: &Sb, text: &str, username: &str) {
    let client = reqwest::Client::new();
    let (s, body) = post_native(
        &client,
        &sb.api,
        "ann",
        "g",
        json!({"text": text, "username": username}),
        None,
    )
    .await
    .unwrap();
    assert_eq!(s, 201, "{body}");
}

/// `matrix.main`'s entry in `/v1/status`.
async fn status(sb: &Sb) -> Value {
    let v: Value = admin_get(&sb.admin, "/v1/status")
        .await
        .json()
        .await
        .unwrap_or_default();
    v["accounts"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["account"] == "matrix.main")
        .cloned()
        .unwrap_or_default()
}

/// Every state `matrix.main` showed in `/v1/status`, polled until dropped.
struct StatusWatch {
    seen: Arc<Mutex<Vec<Value>>>,
    task: tokio::task::JoinHandle<()>,
}

impl StatusWatch {
    fn start(sb: &Sb) -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let url = format!("{}/v1/status", sb.admin);
        let task = {
            let seen = seen.clone();
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                loop {
                    if let Ok(r) = client.get(&url).bearer_auth(ADMIN_TOKEN).send().await {
                        let v: Value = r.json().await.unwrap_or_default();
                        if let Some(a) = v["accounts"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .find(|a| a["account"] == "matrix.main")
                        {
                            seen.lock().unwrap().push(a.clone());
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        };
        Self { seen, task }
    }

    fn states(&self) -> Vec<String> {
        let mut states: Vec<String> = Vec::new();
        for a in self.seen.lock().unwrap().iter() {
            let s = a["state"].as_str().unwrap_or("?").to_owned();
            if states.last() != Some(&s) {
                states.push(s);
            }
        }
        states
    }

    fn all(&self) -> Vec<Value> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for StatusWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The events of `kind` from `matrix.main` at the bot.
fn at_bot(inbox: &Inbox, kind: &str) -> Vec<Value> {
    events_from(inbox, "matrix.main", kind)
}

/// Waits until the bot has a message whose text is `text`; returns it.
async fn bot_message(inbox: &Inbox, text: &str) -> Value {
    until(&format!("{text:?} at the bot"), || {
        let ok = at_bot(inbox, "message").iter().any(|m| m["text"] == text);
        async move { ok }
    })
    .await;
    at_bot(inbox, "message")
        .into_iter()
        .find(|m| m["text"] == text)
        .unwrap()
}

/// Registers `name` and joins it to `room` (Alice invites).
async fn joined(synapse: &Synapse, alice: &MxUser, room: &str, name: &str) -> MxUser {
    let user = synapse.register(name, false).await;
    alice.invite(room, &user.user_id).await;
    user.join(room).await;
    user
}

// ---------------------------------------------------------------------
// Item 1: who may do what.

/// An edit by someone other than the message's author is not bridged (the
/// specification requires a replacement to come from the original's
/// sender); the author's is. A reaction taken back by someone else (a
/// moderator redacting it) is not bridged; taken back by who added it, it
/// is. A plain user cannot redact someone else's message (Synapse refuses
/// it); a moderator's redaction deletes, and so does the author's.
///
/// Needs the hub's rule that compares the author (issue 21, item 1).
#[tokio::test]
async fn only_the_author_edits_and_only_authors_and_moderators_delete() {
    let Setup {
        synapse,
        alice,
        room,
        inbox,
        _dir,
        sb,
        ..
    } = setup_with(Mode::Appservice, Backend::Sqlite, Opts::default()).await;
    let bob = joined(&synapse, &alice, &room, "bob").await;
    let carol = joined(&synapse, &alice, &room, "carol").await;
    alice.set_power_level(&room, &carol.user_id, 50).await;

    let original = alice.send_text(&room, "original").await;
    let hub_original = bot_message(&inbox, "original").await["id"].clone();
    // Bob rewrites what Alice said, as a real client shapes an edit.
    bob.edit(&room, &original, "bob's rewrite").await;
    alice.edit(&room, &original, "alice's fix").await;
    until("Alice's edit at the bot", || {
        let ok = at_bot(&inbox, "edit")
            .iter()
            .any(|e| e["text"] == "alice's fix");
        async move { ok }
    })
    .await;

    // Reactions: Carol (a moderator) takes Alice's back; Alice takes her
    // own back.
    let second = alice.send_text(&room, "second").await;
    let hub_second = bot_message(&inbox, "second").await["id"].clone();
    let thumbs = alice.react(&room, &second, "👍").await;
    let party = alice.react(&room, &second, "🎉").await;
    carol.redact(&room, &thumbs, None).await;
    alice.redact(&room, &party, None).await;
    until("Alice's own reaction taken back", || {
        let ok = at_bot(&inbox, "reaction")
            .iter()
            .any(|r| r["emoji"] == "🎉" && r["removed"] == true);
        async move { ok }
    })
    .await;

    // Deletes: Bob may not (the homeserver itself refuses him), Carol may
    // as a moderator, Alice may delete her own.
    let path = format!(
        "/_matrix/client/v3/rooms/{}/redact/{}/bob-tries",
        crate::synapse::enc(&room),
        crate::synapse::enc(&second)
    );
    let (refused, _) = bob
        .request_once(reqwest::Method::PUT, &path, Some(&json!({})))
        .await;
    assert_eq!(
        refused.as_u16(),
        403,
        "Synapse lets Bob redact Alice's message"
    );
    carol.redact(&room, &second, Some("moderation")).await;
    let third = alice.send_text(&room, "third").await;
    let hub_third = bot_message(&inbox, "third").await["id"].clone();
    alice.redact(&room, &third, None).await;
    until("Alice's own delete at the bot", || {
        let ok = at_bot(&inbox, "delete")
            .iter()
            .any(|d| d["target"] == hub_third);
        async move { ok }
    })
    .await;
    sb.drained().await;

    let edits: Vec<(Value, Value)> = at_bot(&inbox, "edit")
        .iter()
        .map(|e| (e["target"].clone(), e["text"].clone()))
        .collect();
    assert_eq!(
        edits,
        [(hub_original.clone(), json!("alice's fix"))],
        "only the author's edit is bridged"
    );
    let removed: Vec<Value> = at_bot(&inbox, "reaction")
        .iter()
        .filter(|r| r["removed"] == true)
        .map(|r| r["emoji"].clone())
        .collect();
    assert_eq!(removed, ["🎉"], "only who added a reaction takes it back");
    let deletes: Vec<Value> = at_bot(&inbox, "delete")
        .iter()
        .map(|d| d["target"].clone())
        .collect();
    assert_eq!(
        deletes,
        [hub_second, hub_third],
        "a moderator's and the author's"
    );
}

/// A redaction that reaches the bridge from someone who may not redact
/// others' messages (over federation; here pushed as the homeserver pushes
/// a transaction) is not bridged: the bridge asks the room's power levels.
///
/// Needs the hub's rule that compares the author (issue 21, item 1).
#[tokio::test]
async fn a_redaction_by_someone_who_may_not_redact_is_not_bridged() {
    let Setup {
        synapse,
        alice,
        room,
        inbox,
        _dir,
        sb,
        ..
    } = setup_with(Mode::Appservice, Backend::Sqlite, Opts::default()).await;
    let bob = joined(&synapse, &alice, &room, "bob").await;
    let target = alice.send_text(&room, "keep me").await;
    bot_message(&inbox, "keep me").await;
    let reg: Value = serde_json::from_str(
        &std::fs::read_to_string(_dir.path().join("registration.yaml")).unwrap(),
    )
    .unwrap();
    let url = reg["url"].as_str().unwrap();
    let hs = format!("Bearer {}", reg["hs_token"].as_str().unwrap());
    let r = reqwest::Client::new()
        .put(format!("{url}/_matrix/app/v1/transactions/fed-1"))
        .header("authorization", &hs)
        .json(
            &json!({"events": [{"type": "m.room.redaction", "room_id": room,
            "event_id": "$federated-redaction:elsewhere", "sender": bob.user_id,
            "origin_server_ts": 1_700_000_000_000u64, "redacts": target,
            "content": {"redacts": target}}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    alice.send_text(&room, "after").await;
    bot_message(&inbox, "after").await;
    sb.drained().await;
    assert!(
        at_bot(&inbox, "delete").is_empty(),
        "{:#?}",
        at_bot(&inbox, "delete")
    );
}

/// What real clients send for replies: a reply with the quoted fallback
/// of clients before Matrix 1.13, and a reply inside a thread, read as
/// replies without the quote.
#[tokio::test]
async fn replies_with_fallbacks_and_in_threads_read_as_replies() {
    let s = setup_with(Mode::Bot, Backend::Sqlite, Opts::default()).await;
    let root = s.alice.send_text(&s.room, "root").await;
    let hub_root = bot_message(&s.inbox, "root").await["id"].clone();
    s.alice
        .reply_with_fallback(&s.room, &root, &s.alice.user_id, "root", "quoted reply")
        .await;
    let in_thread = s
        .alice
        .send(
            &s.room,
            "m.room.message",
            &json!({"msgtype": "m.text", "body": "in the thread",
                "m.relates_to": {"rel_type": "m.thread", "event_id": root,
                    "is_falling_back": false, "m.in_reply_to": {"event_id": root}}}),
        )
        .await;
    let _ = in_thread;
    let quoted = bot_message(&s.inbox, "quoted reply").await;
    assert_eq!(quoted["reply_to"], hub_root);
    let threaded = bot_message(&s.inbox, "in the thread").await;
    assert_eq!(threaded["reply_to"], hub_root);
    assert_eq!(threaded["origin"]["thread"], root.as_str());
}

// ---------------------------------------------------------------------
// Item 2: a file that cannot be fetched.

/// `mxc://server/id` → `id`, what the proxy matches in the download path.
fn media_id(mxc: &str) -> String {
    mxc.rsplit('/').next().unwrap().to_owned()
}

async fn file_that_cannot_be_fetched(mode: Mode) {
    let s = setup_with(
        mode,
        Backend::Sqlite,
        Opts {
            proxy: true,
            section: "download_timeout = \"1s\"\n".into(),
            ..Opts::default()
        },
    )
    .await;
    let proxy = s.proxy.as_ref().unwrap();
    let send_file = |name: &'static str| {
        let (alice, room) = (s.alice.clone(), s.room.clone());
        async move {
            let mxc = alice.upload(PNG, "image/png", Some(name)).await;
            (mxc.clone(), alice, room, name)
        }
    };
    let line = |name: &str| {
        format!("[file not bridged: {name} (70 B): could not be fetched from the homeserver")
    };

    // The file's origin server is unreachable: Synapse answers 502.
    let (mxc, alice, room, name) = send_file("bad-gateway.png").await;
    proxy.fail(&media_id(&mxc), Fault::BadGateway);
    alice
        .send_media(&room, "m.image", name, &mxc, "image/png", PNG.len())
        .await;
    alice.send_text(&room, "after the 502").await;
    bot_message(&s.inbox, "after the 502").await;
    let msgs = at_bot(&s.inbox, "message");
    let first = &msgs[msgs.len() - 2];
    assert!(
        first["text"].as_str().unwrap().starts_with(&line(name)),
        "{first}"
    );
    assert_eq!(first["attachments"], json!([]), "{first}");
    assert_eq!(
        proxy.seen_for(&media_id(&mxc)).len(),
        3,
        "a few tries, then on: {:#?}",
        proxy.seen_for(&media_id(&mxc))
    );
    let st = status(&s.sb).await;
    assert_eq!(st["state"], "degraded", "{st}");
    assert!(
        st["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("files cannot be fetched")),
        "{st}"
    );

    // A slow federated server: the download stalls.
    let (mxc, alice, room, name) = send_file("stalled.png").await;
    proxy.fail(&media_id(&mxc), Fault::Stall);
    alice
        .send_media(&room, "m.image", name, &mxc, "image/png", PNG.len())
        .await;
    alice.send_text(&room, "after the stall").await;
    bot_message(&s.inbox, "after the stall").await;
    let msgs = at_bot(&s.inbox, "message");
    let stalled = &msgs[msgs.len() - 2];
    assert!(
        stalled["text"].as_str().unwrap().starts_with(&line(name)),
        "{stalled}"
    );
    // While files fail, one try each.
    assert_eq!(proxy.seen_for(&media_id(&mxc)).len(), 1);

    // A file that works: it arrives, and the account is up again.
    let (mxc, alice, room, name) = send_file("fine.png").await;
    alice
        .send_media(&room, "m.image", name, &mxc, "image/png", PNG.len())
        .await;
    until("the working file at the bot", || {
        let ok = at_bot(&s.inbox, "message")
            .iter()
            .any(|m| m["attachments"][0]["name"] == "fine.png");
        async move { ok }
    })
    .await;
    until("the account up again", || {
        let sb = &s.sb;
        async move {
            let st = status(sb).await;
            st["state"] == "up" && st["last_error"].is_null()
        }
    })
    .await;
    // Each message once, in order.
    let texts: Vec<String> = at_bot(&s.inbox, "message")
        .iter()
        .map(|m| {
            m["attachments"][0]["name"]
                .as_str()
                .map_or_else(|| m["text"].as_str().unwrap().to_owned(), str::to_owned)
        })
        .map(|t| t.split(" (").next().unwrap().to_owned())
        .collect();
    assert_eq!(
        texts,
        [
            "[file not bridged: bad-gateway.png",
            "after the 502",
            "[file not bridged: stalled.png",
            "after the stall",
            "fine.png"
        ]
    );
}

#[tokio::test]
async fn bot_mode_a_file_that_cannot_be_fetched_does_not_stall_the_account() {
    file_that_cannot_be_fetched(Mode::Bot).await;
}

#[tokio::test]
async fn appservice_mode_a_file_that_cannot_be_fetched_does_not_hold_the_transaction() {
    file_that_cannot_be_fetched(Mode::Appservice).await;
}

// ---------------------------------------------------------------------
// Item 3: the relay bot under Synapse's default rate limits.

/// Sixteen messages at once into a room whose homeserver keeps Synapse's
/// defaults (burst 10, then one per 5 s per user): all arrive once, in
/// order, at the cost of at most two refusals (not one per message); the
/// status says `rate_limited` with until when while Synapse paces the bot,
/// and `up` with no stale error after; the CLI agrees.
#[tokio::test]
async fn the_relay_bot_paces_itself_under_synapse_default_limits() {
    let s = setup_with(
        Mode::Bot,
        Backend::Sqlite,
        Opts {
            proxy: true,
            ..Opts::default()
        },
    )
    .await;
    let proxy = s.proxy.as_ref().unwrap();
    let watch = StatusWatch::start(&s.sb);
    for n in 1..=16 {
        post(&s.sb, &format!("burst {n:02}"), "Ann").await;
    }
    let want: Vec<String> = (1..=16).map(|n| format!("Ann: burst {n:02}")).collect();
    until("the burst in the room", || {
        let (alice, room) = (s.alice.clone(), s.room.clone());
        async move { bridged_bodies(&alice, &room).await.len() >= 16 }
    })
    .await;
    s.sb.drained().await;
    assert_eq!(bridged_bodies(&s.alice, &s.room).await, want);
    let refusals = proxy
        .seen_for("/send/")
        .iter()
        .filter(|r| r.status == Some(429))
        .count();
    assert!(
        (1..=2).contains(&refusals),
        "{refusals} refusals: the bot must follow the homeserver, not storm it"
    );
    // While refused: `rate_limited`, with until when.
    assert!(
        watch
            .all()
            .iter()
            .any(|a| a["state"] == "rate_limited" && a["rate_limited_until_ms"].as_i64().is_some()),
        "{:?}",
        watch.states()
    );
    assert!(
        !watch.states().contains(&"down".to_owned()),
        "{:?}",
        watch.states()
    );
    // Then up, and neither /v1/status nor the CLI shows a stale 429.
    until("the account up", || {
        let sb = &s.sb;
        async move { status(sb).await["state"] == "up" }
    })
    .await;
    assert!(status(&s.sb).await["last_error"].is_null());
    let cli = s.sb.cli(&["status"]);
    let row = cli
        .lines()
        .find(|l| l.starts_with("matrix.main"))
        .unwrap_or_else(|| panic!("{cli}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols[1], "up", "{cli}");
    assert_eq!(cols.last(), Some(&"-"), "{cli}");
}

// ---------------------------------------------------------------------
// Item 4: stickers.

/// A sticker sent from Element (`m.sticker`) reaches the bots as a
/// sticker, with its image.
#[tokio::test]
async fn a_matrix_sticker_reaches_the_bots_as_a_sticker() {
    let s = setup_with(Mode::Bot, Backend::Sqlite, Opts::default()).await;
    let mxc = s.alice.upload(PNG, "image/png", None).await;
    s.alice
        .send_sticker(&s.room, "😀", &mxc, "image/png", PNG.len(), (256, 256))
        .await;
    until("the sticker at the bot", || {
        let n = at_bot(&s.inbox, "message").len();
        async move { n >= 1 }
    })
    .await;
    let m = &at_bot(&s.inbox, "message")[0];
    let file = &m["attachments"][0];
    assert_eq!(file["kind"], "sticker", "{m}");
    assert_eq!(file["mime"], "image/png", "{m}");
    assert_eq!(file["name"], "😀.png", "{m}");
    let got = reqwest::Client::new()
        .get(format!("{}{}", s.sb.api, file["url"].as_str().unwrap()))
        .header("authorization", bearer("ann"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(got.as_ref(), PNG);
}

/// A Telegram group and a Matrix room in gateway `g`, with a relay bot on
/// a Synapse with its own rate limits, reached through a proxy.
struct TgRoom {
    _dir: tempfile::TempDir,
    tg: FakeTelegram,
    _synapse: Synapse,
    proxy: Proxy,
    alice: MxUser,
    room: String,
    bridge: String,
    _sb: Sb,
}

const TG_CHAT: i64 = -1_002_100_000_021;

async fn telegram_and_matrix() -> TgRoom {
    let dir = tempfile::tempdir().unwrap();
    let tg = crate::telegram::fake(false).await;
    tg.add_chat(TG_CHAT, "supergroup", "Lobby", false);
    std::fs::create_dir_all(dir.path().join("synapse")).unwrap();
    let strict = SynapseOptions {
        rate_limits: RateLimits::Default,
        ..SynapseOptions::default()
    };
    let synapse = Synapse::start_opts(&dir.path().join("synapse"), &strict).await;
    let proxy = Proxy::start(&synapse.url()).await;
    let alice = synapse.register("alice", false).await;
    synapse.register("bridge", false).await;
    let bridge = synapse.user_id("bridge");
    let room = alice
        .create_room(None, &[bridge.as_str()], Some("private_chat"))
        .await;
    let db = Db::new(Backend::Sqlite, dir.path()).await;
    let (api, admin) = (free_port(), free_port());
    let cfg = base_config(&db, dir.path(), api, admin)
        + &crate::telegram::telegram_config(&tg, "")
        + &format!(
            "\n[matrix.main]\nhomeserver = \"{}\"\nuser = \"{bridge}\"\npassword = \"pw-bridge\"\nsync_timeout = \"5s\"\n",
            proxy.url()
        )
        + "\n[[gateway]]\nname = \"g\"\n"
        + &format!("\n[[gateway.inout]]\naccount = \"telegram.main\"\nchannel = \"{TG_CHAT}\"\n")
        + &member(&room);
    let sb = Sb::start(dir.path(), &cfg, api, admin).await;
    until("the bridge in the room", || {
        let (alice, room, bridge) = (alice.clone(), room.clone(), bridge.clone());
        async move { alice.members(&room).await.contains(&bridge) }
    })
    .await;
    TgRoom {
        _dir: dir,
        tg,
        _synapse: synapse,
        proxy,
        alice,
        room,
        bridge,
        _sb: sb,
    }
}

/// A WebP header (VP8X, 512×512): enough for its size to be read.
fn webp_512() -> Vec<u8> {
    let mut b = b"RIFF\x1e\0\0\0WEBPVP8X\x0a\0\0\0\0\0\0\0".to_vec();
    b.extend_from_slice(&[0xff, 0x01, 0x00, 0xff, 0x01, 0x00]);
    b
}

/// A Telegram sticker in a format Element shows (WebP) becomes an
/// `m.sticker` at Element's sticker size; an animated one (Lottie) never
/// arrives as a file nobody can open: its still image as a sticker, or a
/// line saying it was not bridged.
#[tokio::test]
async fn a_telegram_sticker_becomes_a_matrix_sticker() {
    let t = telegram_and_matrix().await;
    let bob = FakeTelegram::user(7, "Bob", None);
    let webp = webp_512();
    let file = t.tg.store_file(webp.clone(), "image/webp", None);
    t.tg.inject_message(TG_CHAT, &bob, json!({"sticker": file}));
    let sticker = t
        .alice
        .wait_for(&t.room, "the sticker", |e| e["type"] == "m.sticker")
        .await;
    assert_eq!(sticker["sender"], t.bridge.as_str());
    let info = &sticker["content"]["info"];
    assert_eq!(info["mimetype"], "image/webp", "{sticker}");
    assert_eq!(
        (info["w"].as_u64(), info["h"].as_u64()),
        (Some(256), Some(256))
    );
    assert_eq!(
        t.alice
            .download(sticker["content"]["url"].as_str().unwrap())
            .await,
        webp
    );
    // No text came with it: its description names the author.
    assert_eq!(sticker["content"]["body"], "Bob: sticker", "{sticker}");
    let profile = &sticker["content"]["com.beeper.per_message_profile"];
    assert_eq!(profile["displayname"], "Bob", "{sticker}");
    assert_eq!(profile["has_fallback"], true, "{sticker}");

    let tgs = t.tg.store_file(
        b"{\"v\":\"5.5.2\"}".to_vec(),
        "application/x-tgsticker",
        None,
    );
    t.tg.inject_message(TG_CHAT, &bob, json!({"sticker": tgs}));
    t.tg.inject_message(TG_CHAT, &bob, json!({"text": "after the animated one"}));
    t.alice
        .wait_for(&t.room, "the text after", |e| {
            e["content"]["body"] == "Bob: after the animated one"
        })
        .await;
    let events = t.alice.messages(&t.room).await;
    let unopenable = events.iter().filter(|e| {
        e["content"]["info"]["mimetype"] == "application/x-tgsticker"
            || e["content"]["mimetype"] == "application/x-tgsticker"
    });
    assert_eq!(unopenable.count(), 0, "{events:#?}");
    let stickers = events.iter().filter(|e| e["type"] == "m.sticker").count();
    let lines = events
        .iter()
        .filter(|e| {
            e["content"]["body"]
                .as_str()
                .is_some_and(|b| b.contains("[file not bridged: sticker"))
        })
        .count();
    assert_eq!(stickers + lines, 2, "{events:#?}");
    let _ = &t.proxy;
}

// ---------------------------------------------------------------------
// Item 5: the same device across logins; the homeserver's upload limit.

/// Synapse posts a message but its answer is lost; before the bridge sends
/// it again, every session of the bridge's account is revoked. The bridge
/// logs in again as the same device, so the homeserver recognises the
/// retried transaction: the message is in the room once.
#[tokio::test]
async fn a_send_retried_across_a_new_login_is_posted_once() {
    let s = setup_with(
        Mode::Bot,
        Backend::Sqlite,
        Opts {
            proxy: true,
            ..Opts::default()
        },
    )
    .await;
    let proxy = s.proxy.as_ref().unwrap();
    post(&s.sb, "first", "Ann").await;
    s.alice.wait_for_text(&s.room, "Ann: first").await;
    proxy.fail("/send/m.room.message/", Fault::Swallow);
    post(&s.sb, "once", "Ann").await;
    until("Synapse took the message, its answer lost", || {
        let done = proxy
            .seen_for("/send/m.room.message/")
            .iter()
            .any(|r| r.upstream == Some(200) && r.status.is_none());
        async move { done }
    })
    .await;
    // Every session of the bridge's account is revoked.
    let client = reqwest::Client::new();
    let url = s.synapse.url();
    let login: Value = client
        .post(format!("{url}/_matrix/client/v3/login"))
        .json(&json!({"type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": "bridge"}, "password": "pw-bridge"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["access_token"]
        .as_str()
        .expect("logged in")
        .to_owned();
    let out = client
        .post(format!("{url}/_matrix/client/v3/logout/all"))
        .bearer_auth(&token)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert!(out.status().is_success());
    proxy.heal("/send/m.room.message/");
    post(&s.sb, "after", "Ann").await;
    s.alice.wait_for_text(&s.room, "Ann: after").await;
    s.sb.drained().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        bridged_bodies(&s.alice, &s.room).await,
        ["Ann: first", "Ann: once", "Ann: after"],
        "once each, in order"
    );
}

/// Synapse ends the bridge's session every few seconds (its access tokens
/// expire: a soft logout, `soft_logout: true`). The bridge logs in again
/// each time, as the same device: messages keep flowing both ways, once
/// each, and the account has one device, not one per login.
#[tokio::test]
async fn soft_logouts_keep_the_one_device() {
    let s = setup_with(
        Mode::Bot,
        Backend::Sqlite,
        Opts {
            // Logins every few seconds, the bridge's and Alice's, from one
            // address: more than Synapse's default login limit allows.
            extra_yaml: "nonrefreshable_access_token_lifetime: 4s\n\
                rc_login:\n  address: {per_second: 10, burst_count: 100}\n  \
                account: {per_second: 10, burst_count: 100}\n"
                .into(),
            ..Opts::default()
        },
    )
    .await;
    for n in 1..=3 {
        post(&s.sb, &format!("bot {n}"), "Ann").await;
        s.alice.send_text(&s.room, &format!("alice {n}")).await;
        s.alice
            .wait_for_text(&s.room, &format!("Ann: bot {n}"))
            .await;
        bot_message(&s.inbox, &format!("alice {n}")).await;
        // Past the token's lifetime.
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    s.sb.drained().await;
    assert_eq!(
        bridged_bodies(&s.alice, &s.room).await,
        ["Ann: bot 1", "Ann: bot 2", "Ann: bot 3"]
    );
    let texts = texts(&at_bot(&s.inbox, "message"));
    assert_eq!(texts, ["alice 1", "alice 2", "alice 3"]);
    assert!(s.sb.log().contains("logging in again"), "{}", s.sb.log());
    let admin = s.synapse.register("admin", true).await;
    let devices = admin
        .get(&format!(
            "/_synapse/admin/v2/users/{}/devices",
            crate::synapse::enc(&s.bridge)
        ))
        .await;
    // Registering the account made a device of its own; switchboard's
    // logins made one.
    let ours = devices["devices"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["display_name"] == "switchboard")
        .count();
    assert_eq!(ours, 1, "{devices}");
}

/// The homeserver takes uploads up to 1 MiB here: a larger file is a line
/// in the message, not a refused upload (a dead letter).
#[tokio::test]
async fn a_file_larger_than_the_homeserver_takes_is_a_line() {
    let s = setup_with(
        Mode::Bot,
        Backend::Sqlite,
        Opts {
            extra_yaml: "max_upload_size: 1M\n".into(),
            ..Opts::default()
        },
    )
    .await;
    let big = vec![0u8; 1536 * 1024];
    let (st, body) = post_native(
        &reqwest::Client::new(),
        &s.sb.api,
        "ann",
        "g",
        json!({"text": "see the file", "username": "Ann", "attachments": [{"name": "big.bin",
            "mime": "application/octet-stream",
            "data": base64::engine::general_purpose::STANDARD.encode(&big)}]}),
        None,
    )
    .await
    .unwrap();
    assert_eq!(st, 201, "{body}");
    s.alice
        .wait_for_text(
            &s.room,
            "Ann: see the file\n[file not bridged: big.bin (1.5 MiB): larger than this network takes (1 MiB)]",
        )
        .await;
}

// ---------------------------------------------------------------------
// Item 6: a restart with a backlog.

/// Messages queued while Synapse hung; switchboard restarted while it
/// still hangs. The outbox meets an account that is still signing in:
/// it waits for it (status `starting`, never `down`), and the backlog goes
/// as soon as the account is in. The breaker's probe is ten minutes away
/// here: a send that tripped it would not arrive within the test.
#[tokio::test]
async fn a_restart_with_a_backlog_delivers_it_without_a_stall() {
    let mut s = setup_with(
        Mode::Bot,
        Backend::Sqlite,
        Opts {
            config: Some(|c| c.replace("breaker_probe = \"200ms\"", "breaker_probe = \"10m\"")),
            // A room id: a send needs nothing from the homeserver before
            // it needs the sign-in.
            by_room_id: true,
            ..Opts::default()
        },
    )
    .await;
    post(&s.sb, "before", "Ann").await;
    s.alice.wait_for_text(&s.room, "Ann: before").await;
    s.synapse.pause();
    for n in 1..=5 {
        post(&s.sb, &format!("queued {n}"), "Ann").await;
    }
    s.sb.kill9();
    s.sb.restart().await;
    let watch = StatusWatch::start(&s.sb);
    // The outbox meets the backlog while the account cannot sign in yet.
    tokio::time::sleep(Duration::from_secs(3)).await;
    s.synapse.resume();
    let mut want = vec!["Ann: before".to_owned()];
    want.extend((1..=5).map(|n| format!("Ann: queued {n}")));
    until("the backlog in the room", || {
        let (alice, room) = (s.alice.clone(), s.room.clone());
        async move { bridged_bodies(&alice, &room).await.len() >= 6 }
    })
    .await;
    s.sb.drained().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(bridged_bodies(&s.alice, &s.room).await, want);
    let states = watch.states();
    assert!(!states.contains(&"down".to_owned()), "{states:?}");
    assert_eq!(
        states.first().map(String::as_str),
        Some("starting"),
        "{states:?}"
    );
    assert_eq!(status(&s.sb).await["state"], "up");
}

// ---------------------------------------------------------------------
// Item 7: per-message profiles.

/// A Telegram author's messages carry their per-message profile (MSC4144):
/// their name, their avatar (uploaded once), the name in front of the text
/// as the fallback for clients without profiles.
#[tokio::test]
async fn a_relayed_message_carries_its_authors_profile() {
    let t = telegram_and_matrix().await;
    let avatar = switchboard_telegram::fake::png(8, 8);
    t.tg.set_avatar(7, avatar.clone());
    let bob = FakeTelegram::user(7, "Bob", None);
    t.tg.inject_message(TG_CHAT, &bob, json!({"text": "one"}));
    t.tg.inject_message(TG_CHAT, &bob, json!({"text": "two"}));
    t.alice.wait_for_text(&t.room, "Bob: two").await;
    let events: Vec<Value> = t
        .alice
        .messages(&t.room)
        .await
        .into_iter()
        .filter(|e| e["type"] == "m.room.message" && e["sender"] == t.bridge.as_str())
        .collect();
    assert_eq!(events.len(), 2, "{events:#?}");
    let mut avatars = Vec::new();
    for (e, text) in events.iter().zip(["one", "two"]) {
        let c = &e["content"];
        assert_eq!(c["body"], format!("Bob: {text}"));
        assert_eq!(
            c["formatted_body"],
            format!("<strong data-mx-profile-fallback>Bob: </strong>{text}")
        );
        let p = &c["com.beeper.per_message_profile"];
        assert_eq!(p["id"], "telegram.main/7", "{e}");
        assert_eq!(p["displayname"], "Bob", "{e}");
        assert_eq!(p["has_fallback"], true, "{e}");
        avatars.push(p["avatar_url"].as_str().expect("an avatar").to_owned());
    }
    assert_eq!(avatars[0], avatars[1], "one avatar per author");
    assert_eq!(t.alice.download(&avatars[0]).await, avatar);
    let uploads = t.proxy.seen_for("/upload");
    assert_eq!(uploads.len(), 1, "uploaded once: {uploads:#?}");
}

/// Another relay bot in the room (a bridge of its own, with per-message
/// profiles): its message reaches the bots under the profile's name, the
/// fallback prefix taken off.
#[tokio::test]
async fn another_relay_bots_profile_names_the_author() {
    let s = setup_with(Mode::Bot, Backend::Sqlite, Opts::default()).await;
    s.alice
        .send(
            &s.room,
            "m.room.message",
            &json!({"msgtype": "m.text", "body": "Mia: hello from elsewhere",
                "format": "org.matrix.custom.html",
                "formatted_body": "<strong data-mx-profile-fallback>Mia: </strong>hello from <em>elsewhere</em>",
                "com.beeper.per_message_profile": {"id": "discord/42", "displayname": "Mia", "has_fallback": true}}),
        )
        .await;
    let m = bot_message(&s.inbox, "hello from elsewhere").await;
    assert_eq!(m["author"]["name"], "Mia", "{m}");
    assert_eq!(m["author"]["id"], s.alice.user_id.as_str(), "{m}");
}
