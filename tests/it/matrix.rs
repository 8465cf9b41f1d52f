//! Matrix through the real binary against a real Synapse (see `synapse`),
//! in both modes: a room and a bot-API consumer exchange formatted text,
//! an image, a reply, an edit, a redaction and a reaction, both ways; in
//! appservice mode each remote author is its own ghost with its name; a
//! transaction with a wrong token commits nothing; malicious HTML never
//! reaches the other side; a kill -9 loses and repeats nothing.

use std::path::Path;
use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};

use crate::harness::*;
use crate::synapse::proxy::Proxy;
use crate::synapse::{MxUser, Options as SynapseOptions, RateLimits, Synapse};

/// A 1×1 PNG.
const PNG: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1f, 0x15, 0xc4,
    0x89, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0xf8, 0xcf, 0xc0, 0xf0,
    0x1f, 0x00, 0x05, 0x00, 0x01, 0xff, 0x89, 0x99, 0x3d, 0x1d, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45,
    0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Mode {
    Bot,
    Appservice,
}

pub(crate) struct Setup {
    pub(crate) _dir: tempfile::TempDir,
    pub(crate) synapse: Synapse,
    pub(crate) sb: Sb,
    pub(crate) alice: MxUser,
    pub(crate) room: String,
    pub(crate) inbox: Inbox,
    /// The bridge's own user (the bot, or the appservice's bot user).
    pub(crate) bridge: String,
    /// The proxy the bridge reaches Synapse through, when asked for.
    pub(crate) proxy: Option<Proxy>,
}

/// How a test's homeserver and bridge are set up.
#[derive(Default)]
pub(crate) struct Opts {
    /// The room is end-to-end encrypted.
    pub(crate) encrypted: bool,
    /// Into Synapse's configuration (a stricter rate limit).
    pub(crate) extra_yaml: String,
    /// Lines added to `[matrix.main]`.
    pub(crate) section: String,
    /// The bridge reaches Synapse through a [`Proxy`] the test controls.
    pub(crate) proxy: bool,
    /// Rewrites the configuration before switchboard starts.
    pub(crate) config: Option<fn(String) -> String>,
    /// The gateway names the room by its id, not its alias (nothing to
    /// resolve before a send).
    pub(crate) by_room_id: bool,
}

pub(crate) fn member(channel: &str) -> String {
    format!("\n[[gateway.inout]]\naccount = \"matrix.main\"\nchannel = \"{channel}\"\n")
}

/// Runs `switchboard matrix registration` as an admin would.
fn registration(dir: &Path, config: &Path) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .current_dir(dir)
        .args([
            "--config",
            config.to_str().unwrap(),
            "matrix",
            "registration",
            "--account",
            "matrix.main",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let again = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args([
            "--config",
            config.to_str().unwrap(),
            "matrix",
            "registration",
            "--account",
            "matrix.main",
        ])
        .output()
        .unwrap();
    assert!(
        !again.status.success(),
        "an existing registration is never overwritten silently"
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn setup(mode: Mode, backend: Backend) -> Setup {
    setup_with(mode, backend, Opts::default()).await
}

/// A room on a real Synapse with Alice in it, bridged to the bot API's
/// gateway `g`. A relay bot's homeserver keeps Synapse's own rate limits,
/// as the homeservers people run do; an application service's is relaxed
/// (its registration exempts it anyway).
pub(crate) async fn setup_with(mode: Mode, backend: Backend, opts: Opts) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::new(backend, dir.path()).await;
    let (api, admin, listen) = (free_port(), free_port(), free_port());
    // The homeserver's address is needed in the config before it starts
    // (appservice mode: the registration must exist first), so the
    // section is completed once Synapse has its port.
    let mut registrations = Vec::new();
    let section_as = format!(
        "\n[matrix.main]\nmode = \"appservice\"\nhomeserver = \"HOMESERVER\"\nserver_name = \"localhost\"\nlisten = \"127.0.0.1:{listen}\"\nregistration = \"registration.yaml\"\n"
    );
    if mode == Mode::Appservice {
        let cfg_path = dir.path().join("pre.toml");
        std::fs::write(&cfg_path, &section_as).unwrap();
        let said = registration(dir.path(), &cfg_path);
        assert!(said.contains("app_service_config_files"), "{said}");
        registrations.push(dir.path().join("registration.yaml"));
        let reg = std::fs::read_to_string(&registrations[0]).unwrap();
        assert!(reg.contains("\"regex\": \"@sb_.*:localhost\""), "{reg}");
        // The homeserver's rate limits do not apply to the application
        // service and its ghosts.
        assert!(reg.contains("\"rate_limited\": false"), "{reg}");
    }
    std::fs::create_dir_all(dir.path().join("synapse")).unwrap();
    let synapse = Synapse::start_opts(
        &dir.path().join("synapse"),
        &SynapseOptions {
            appservices: registrations,
            rate_limits: match mode {
                Mode::Bot => RateLimits::Default,
                Mode::Appservice => RateLimits::Relaxed,
            },
            extra_yaml: opts.extra_yaml.clone(),
        },
    )
    .await;
    let proxy = if opts.proxy {
        Some(Proxy::start(&synapse.url()).await)
    } else {
        None
    };
    let homeserver = proxy.as_ref().map_or_else(|| synapse.url(), Proxy::url);
    let alice = synapse.register("alice", false).await;
    alice.set_displayname("Alice").await;
    let bridge = match mode {
        Mode::Bot => {
            synapse.register("bridge", false).await;
            synapse.user_id("bridge")
        }
        Mode::Appservice => synapse.user_id("switchboard"),
    };
    // An invite-only room: the bridge accepts its invite; in appservice
    // mode its bot invites each ghost.
    let mut create =
        json!({"preset": "private_chat", "room_alias_name": "bridged", "invite": [bridge]});
    if opts.encrypted {
        create["initial_state"] = json!([{"type": "m.room.encryption", "state_key": "",
            "content": {"algorithm": "m.megolm.v1.aes-sha2"}}]);
    }
    let room = alice.create_room_with(&create).await;
    let section = match mode {
        Mode::Bot => format!(
            "\n[matrix.main]\nhomeserver = \"{homeserver}\"\nuser = \"{bridge}\"\npassword = \"{}\"\nsync_timeout = \"5s\"\n",
            "pw-bridge"
        ),
        Mode::Appservice => section_as.replace("HOMESERVER", &homeserver),
    } + &opts.section;
    let mut cfg = base_config(&db, dir.path(), api, admin)
        + &token("ann", r#"["read", "write"]"#, r#"["g"]"#)
        + &section
        + &gateway("g")
        // The alias, resolved by the adapter (or the room id).
        + &member(if opts.by_room_id {
            &room
        } else {
            "#bridged:localhost"
        });
    if let Some(edit) = opts.config {
        cfg = edit(cfg);
    }
    let sb = Sb::start(dir.path(), &cfg, api, admin).await;
    let inbox = Inbox::default();
    let ws = sb.api.replace("http", "ws");
    ws_reader(&format!("{ws}/v1/ws?gateways=g"), "ann", inbox.clone()).await;
    until("the bridge joined the room", || {
        let alice = alice.clone();
        let (room, bridge) = (room.clone(), bridge.clone());
        async move { alice.members(&room).await.contains(&bridge) }
    })
    .await;
    Setup {
        _dir: dir,
        synapse,
        sb,
        alice,
        room,
        inbox,
        bridge,
        proxy,
    }
}

/// Matrix events from `sender`, in room order.
pub(crate) async fn from(alice: &MxUser, room: &str, sender: &str, ty: &str) -> Vec<Value> {
    alice
        .messages(room)
        .await
        .into_iter()
        .filter(|e| e["type"] == ty && e["sender"] == sender)
        .collect()
}

fn is_ghost(sender: &str) -> bool {
    sender.starts_with("@sb_")
}

async fn exchange(mode: Mode) {
    let Setup {
        synapse,
        mut sb,
        alice,
        room,
        inbox,
        bridge,
        _dir,
        ..
    } = setup(mode, Backend::Sqlite).await;
    let _ = &synapse;
    let client = reqwest::Client::new();
    let by_bridge = |s: &str| {
        if mode == Mode::Bot {
            s == bridge
        } else {
            is_ghost(s)
        }
    };

    // Matrix → bots: sanitized HTML, an image, a reply, an edit, a
    // reaction, a redaction.
    let hello = alice
        .send_html(
            &room,
            "hello bold",
            "hello <b>bold</b><script>alert(1)</script><img src=x onerror=alert(2)><a href=\"javascript:alert(3)\">x</a>",
        )
        .await;
    let mxc = alice.upload(PNG, "image/png", Some("dot.png")).await;
    alice
        .send_media(&room, "m.image", "dot.png", &mxc, "image/png", PNG.len())
        .await;
    let reply = alice.reply(&room, &hello, "a reply").await;
    alice.edit(&room, &hello, "hello again").await;
    alice.react(&room, &hello, "👍").await;
    // Redacted once the reply is across: a homeserver pushes an event
    // redacted before it went out in its redacted form, with nothing to
    // bridge.
    until("Alice's reply at the bot", || {
        let n = events_from(&inbox, "matrix.main", "message").len();
        async move { n >= 3 }
    })
    .await;
    alice.redact(&room, &reply, None).await;
    until("Alice's six events at the bot", || {
        let n = events_from(&inbox, "matrix.main", "message").len()
            + events_from(&inbox, "matrix.main", "edit").len()
            + events_from(&inbox, "matrix.main", "reaction").len()
            + events_from(&inbox, "matrix.main", "delete").len();
        async move { n >= 6 }
    })
    .await;
    let msgs = events_from(&inbox, "matrix.main", "message");
    assert_eq!(msgs.len(), 3, "{msgs:#?}");
    assert_eq!(msgs[0]["author"]["name"], "Alice");
    assert_eq!(msgs[0]["text"], "hello boldx");
    let dump = serde_json::to_string(&msgs).unwrap();
    for evil in ["script", "alert", "javascript", "onerror"] {
        assert!(!dump.contains(evil), "{evil} reached the bot: {dump}");
    }
    let bold = msgs[0]["spans"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["style"] == "bold")
        .unwrap()
        .clone();
    assert_eq!(
        (bold["start"].as_u64(), bold["end"].as_u64()),
        (Some(6), Some(10))
    );
    let hello_id = msgs[0]["id"].as_str().unwrap().to_owned();
    let file = &msgs[1]["attachments"][0];
    assert_eq!(file["name"], "dot.png");
    let got = client
        .get(format!("{}{}", sb.api, file["url"].as_str().unwrap()))
        .header("authorization", bearer("ann"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(got.as_ref(), PNG);
    assert_eq!(msgs[2]["reply_to"], hello_id.as_str());
    assert_eq!(msgs[2]["text"], "a reply");
    let edit = &events_from(&inbox, "matrix.main", "edit")[0];
    assert_eq!(
        (edit["target"].as_str(), edit["text"].as_str()),
        (Some(hello_id.as_str()), Some("hello again"))
    );
    let reaction = &events_from(&inbox, "matrix.main", "reaction")[0];
    assert_eq!(
        (reaction["target"].as_str(), reaction["emoji"].as_str()),
        (Some(hello_id.as_str()), Some("👍"))
    );
    assert_eq!(
        events_from(&inbox, "matrix.main", "delete")[0]["target"],
        msgs[2]["id"]
    );

    // Bots → Matrix: styled text replying to Alice, an image, from two
    // authors.
    let (s, posted) = post_native(
        &client,
        &sb.api,
        "ann",
        "g",
        json!({"text": "hello room", "username": "Ann", "spans": [{"start": 6, "end": 10, "style": "italic"}], "reply_to": hello_id}),
        None,
    )
    .await
    .unwrap();
    assert_eq!(s, 201, "{posted}");
    let ann_id = posted["id"].as_str().unwrap().to_owned();
    let (s, _) = post_native(
        &client,
        &sb.api,
        "ann",
        "g",
        json!({"text": "", "username": "Bob", "attachments": [{"name": "dot.png", "mime": "image/png",
               "data": base64::engine::general_purpose::STANDARD.encode(PNG)}]}),
        None,
    )
    .await
    .unwrap();
    assert_eq!(s, 201);
    let text = alice
        .wait_for(&room, "the bot's styled reply", |e| {
            e["type"] == "m.room.message"
                && e["content"]["body"]
                    .as_str()
                    .is_some_and(|b| b.ends_with("hello room"))
        })
        .await;
    assert!(by_bridge(text["sender"].as_str().unwrap()), "{text}");
    assert_eq!(
        text["content"]["m.relates_to"]["m.in_reply_to"]["event_id"],
        hello.as_str()
    );
    let image = alice
        .wait_for(&room, "the bot's image", |e| {
            e["type"] == "m.room.message"
                && e["content"]["msgtype"] == "m.image"
                && e["sender"] != alice.user_id.as_str()
        })
        .await;
    assert_eq!(
        alice
            .download(image["content"]["url"].as_str().unwrap())
            .await,
        PNG
    );
    assert_eq!(image["content"]["info"]["mimetype"], "image/png");
    let ann_sender = text["sender"].as_str().unwrap().to_owned();
    match mode {
        Mode::Bot => {
            // The author's name in front for clients without per-message
            // profiles, marked so that the others take it off and show
            // the profile instead.
            assert_eq!(text["content"]["body"], "Ann: hello room");
            assert_eq!(
                text["content"]["formatted_body"],
                "<strong data-mx-profile-fallback>Ann: </strong>hello <em>room</em>"
            );
            let profile = &text["content"]["com.beeper.per_message_profile"];
            assert_eq!(profile["displayname"], "Ann", "{text}");
            assert_eq!(profile["has_fallback"], true, "{text}");
            // Bob's image has no text: its caption names him.
            assert_eq!(image["content"]["body"], "Bob: ", "{image}");
            assert_eq!(image["content"]["filename"], "dot.png", "{image}");
            let profile = &image["content"]["com.beeper.per_message_profile"];
            assert_eq!(profile["displayname"], "Bob", "{image}");
        }
        Mode::Appservice => {
            // Each author is a ghost of its own, with the author's name.
            assert_eq!(text["content"]["body"], "hello room");
            assert_eq!(text["content"]["formatted_body"], "hello <em>room</em>");
            let bob_sender = image["sender"].as_str().unwrap();
            assert!(
                is_ghost(bob_sender) && bob_sender != ann_sender,
                "{bob_sender} vs {ann_sender}"
            );
            let name = alice
                .get(&format!(
                    "/_matrix/client/v3/profile/{}/displayname",
                    crate::synapse::enc(&ann_sender)
                ))
                .await;
            assert_eq!(name["displayname"], "Ann");
            let name = alice
                .get(&format!(
                    "/_matrix/client/v3/profile/{}/displayname",
                    crate::synapse::enc(bob_sender)
                ))
                .await;
            assert_eq!(name["displayname"], "Bob");
        }
    }

    // Alice reacts to the bridged copy: it reaches the original post; she
    // takes it back (a redaction of the reaction): a removed reaction.
    let party = alice
        .react(&room, text["event_id"].as_str().unwrap(), "🎉")
        .await;
    until("Alice's reaction to the copy", || {
        let ok = events_from(&inbox, "matrix.main", "reaction")
            .iter()
            .any(|r| r["emoji"] == "🎉" && r["target"] == ann_id.as_str());
        async move { ok }
    })
    .await;
    alice.redact(&room, &party, None).await;
    until("Alice's reaction taken back", || {
        let ok = events_from(&inbox, "matrix.main", "reaction")
            .iter()
            .any(|r| r["emoji"] == "🎉" && r["target"] == ann_id.as_str() && r["removed"] == true);
        async move { ok }
    })
    .await;

    // After a kill -9, the bot's edit, reaction and delete find the copy;
    // what Alice wrote meanwhile arrives once.
    sb.drained().await;
    sb.kill9();
    alice.send_text(&room, "while it was down").await;
    sb.restart().await;
    let ws = sb.api.replace("http", "ws");
    let after = Inbox::default();
    ws_reader(
        &format!("{ws}/v1/ws?gateways=g&cursor=0"),
        "ann",
        after.clone(),
    )
    .await;
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
        .post(format!(
            "{}/v1/gateways/g/messages/{hello_id}/reactions",
            sb.api
        ))
        .header("authorization", bearer("ann"))
        .json(&json!({"emoji": "❤️"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let edit = alice
        .wait_for(&room, "the bot's edit", |e| {
            e["type"] == "m.room.message"
                && e["content"]["m.relates_to"]["rel_type"] == "m.replace"
                && e["content"]["m.relates_to"]["event_id"] == text["event_id"]
        })
        .await;
    assert_eq!(
        edit["content"]["m.relates_to"]["event_id"],
        text["event_id"]
    );
    assert_eq!(
        edit["sender"].as_str(),
        Some(ann_sender.as_str()),
        "an edit comes from the original sender"
    );
    let new_body = edit["content"]["m.new_content"]["body"].as_str().unwrap();
    assert!(new_body.ends_with("hello all"), "{new_body}");
    assert!(edit["content"]["body"].as_str().unwrap().starts_with("* "));
    let heart = alice
        .wait_for(&room, "the bot's reaction", |e| {
            e["type"] == "m.reaction" && e["content"]["m.relates_to"]["key"] == "❤️"
        })
        .await;
    assert_eq!(heart["content"]["m.relates_to"]["event_id"], hello.as_str());
    // The bot takes its reaction back, then deletes its post.
    let r = client
        .delete(format!(
            "{}/v1/gateways/g/messages/{hello_id}/reactions/%E2%9D%A4%EF%B8%8F",
            sb.api
        ))
        .header("authorization", bearer("ann"))
        .send()
        .await
        .unwrap();
    let took_back = r.status() == 201;
    let r = client
        .delete(&url)
        .header("authorization", bearer("ann"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    alice
        .wait_for(&room, "the copy redacted", |e| {
            e["type"] == "m.room.redaction" && e["redacts"] == text["event_id"]
        })
        .await;
    if took_back {
        alice
            .wait_for(&room, "the reaction redacted", |e| {
                e["type"] == "m.room.redaction" && e["redacts"] == heart["event_id"]
            })
            .await;
    }
    until("the message from while it was down", || {
        let n = events_from(&after, "matrix.main", "message")
            .iter()
            .filter(|m| m["text"] == "while it was down")
            .count();
        async move { n >= 1 }
    })
    .await;
    sb.drained().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let down: Vec<Value> = events_from(&after, "matrix.main", "message")
        .into_iter()
        .filter(|m| m["text"] == "while it was down")
        .collect();
    assert_eq!(down.len(), 1, "exactly once: {down:#?}");
    // Nothing the bridge posted came back to the bot, and nothing was sent twice.
    let all = events_from(&after, "matrix.main", "message");
    assert!(
        all.iter()
            .all(|m| !m["text"].as_str().unwrap_or("").contains("hello room")),
        "{all:#?}"
    );
    let copies = from(&alice, &room, &ann_sender, "m.room.message").await;
    let plain: Vec<&Value> = copies
        .iter()
        .filter(|e| e["content"]["m.relates_to"]["rel_type"] != "m.replace")
        .collect();
    assert_eq!(
        plain.len(),
        // Bot mode: Ann's text and Bob's image (its caption names him);
        // appservice mode: Ann's ghost posted her text only.
        if mode == Mode::Bot { 2 } else { 1 },
        "no duplicate in the room: {copies:#?}"
    );
    sb.stop().await;
}

#[tokio::test]
async fn bot_mode_a_room_and_a_bot_exchange_everything_both_ways() {
    exchange(Mode::Bot).await;
}

#[tokio::test]
async fn appservice_mode_a_room_and_a_bot_exchange_everything_with_ghosts() {
    exchange(Mode::Appservice).await;
}

/// A transaction with a wrong token is refused and commits nothing; one
/// with the right token is committed once, even when pushed twice.
#[tokio::test]
async fn appservice_transactions_are_authenticated_and_committed_once() {
    let Setup {
        sb,
        alice,
        room,
        inbox,
        synapse,
        _dir,
        ..
    } = setup(Mode::Appservice, Backend::Sqlite).await;
    let _ = synapse;
    let reg: Value = serde_json::from_str(
        &std::fs::read_to_string(_dir.path().join("registration.yaml")).unwrap(),
    )
    .unwrap();
    let url = reg["url"].as_str().unwrap().to_owned();
    let client = reqwest::Client::new();
    let event = json!({"events": [{"type": "m.room.message", "room_id": room, "event_id": "$forged:localhost",
        "sender": alice.user_id, "origin_server_ts": 1_700_000_000_000u64, "content": {"msgtype": "m.text", "body": "forged"}}]});
    for (auth, status) in [(Some("Bearer wrong"), 403), (None, 401)] {
        let mut req = client
            .put(format!("{url}/_matrix/app/v1/transactions/t1"))
            .json(&event);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), status);
        let body: Value = r.json().await.unwrap();
        assert!(body["errcode"].as_str().is_some(), "{body}");
    }
    let hs = format!("Bearer {}", reg["hs_token"].as_str().unwrap());
    let r = client
        .post(format!("{url}/_matrix/app/v1/ping"))
        .header("authorization", &hs)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = client
        .get(format!("{url}/_matrix/app/v1/users/@sb_x:localhost"))
        .header("authorization", &hs)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // A real message after the refused ones: the refused event never shows.
    alice.send_text(&room, "real").await;
    inbox.wait_len(1, "the real message").await;
    for _ in 0..2 {
        let r = client
            .put(format!("{url}/_matrix/app/v1/transactions/sb-test-1"))
            .header("authorization", &hs)
            .json(&json!({"events": [{"type": "m.room.message", "room_id": room, "event_id": "$pushed:localhost",
                "sender": alice.user_id, "origin_server_ts": 1_700_000_000_000u64, "content": {"msgtype": "m.text", "body": "pushed twice"}}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    alice.send_text(&room, "last").await;
    until("the last message", || {
        let ok = events_from(&inbox, "matrix.main", "message")
            .iter()
            .any(|m| m["text"] == "last");
        async move { ok }
    })
    .await;
    let texts: Vec<String> = events_from(&inbox, "matrix.main", "message")
        .iter()
        .map(|m| m["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(texts, ["real", "pushed twice", "last"]);
    let _ = sb;
}

/// Bodies of the bridge's `m.room.message`s in room order (edits left out).
pub(crate) async fn bridged_bodies(alice: &MxUser, room: &str) -> Vec<String> {
    alice
        .messages(room)
        .await
        .into_iter()
        .filter(|e| e["type"] == "m.room.message" && e["sender"] != alice.user_id.as_str())
        .filter(|e| e["content"]["m.relates_to"]["rel_type"] != "m.replace")
        .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
        .collect()
}

/// Synapse stopped for 60 s mid-conversation, then started again: what
/// the bots posted meanwhile arrives once, in order, with no duplicate in
/// the room; what Alice wrote before and after arrives once, in order.
async fn homeserver_outage(mode: Mode) {
    let Setup {
        mut synapse,
        sb,
        alice,
        room,
        inbox,
        _dir,
        ..
    } = setup(mode, Backend::Sqlite).await;
    let client = reqwest::Client::new();
    let post = |n: usize| {
        let (client, api) = (client.clone(), sb.api.clone());
        async move {
            let (s, _) = post_native(
                &client,
                &api,
                "ann",
                "g",
                json!({"text": format!("bot {n:02}"), "username": "Ann"}),
                None,
            )
            .await
            .unwrap();
            assert_eq!(s, 201);
        }
    };
    let prefix = if mode == Mode::Bot { "Ann: " } else { "" };
    let expected = |upto: usize| {
        (1..=upto)
            .map(|n| format!("{prefix}bot {n:02}"))
            .collect::<Vec<_>>()
    };
    for n in 1..=5 {
        post(n).await;
        alice.send_text(&room, &format!("alice {n:02}")).await;
    }
    until("the first half across", || {
        let alice = alice.clone();
        let room = room.clone();
        let n = events_from(&inbox, "matrix.main", "message").len();
        async move { n == 5 && bridged_bodies(&alice, &room).await.len() == 5 }
    })
    .await;
    synapse.stop().await;
    for n in 6..=15 {
        post(n).await;
    }
    tokio::time::sleep(Duration::from_secs(60)).await;
    synapse.start_again().await;
    for n in 16..=20 {
        post(n).await;
        alice.send_text(&room, &format!("alice {n:02}")).await;
    }
    until("everything across after the outage", || {
        let alice = alice.clone();
        let room = room.clone();
        let n = events_from(&inbox, "matrix.main", "message").len();
        async move { n >= 10 && bridged_bodies(&alice, &room).await.len() >= 20 }
    })
    .await;
    sb.drained().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        bridged_bodies(&alice, &room).await,
        expected(20),
        "once each, in order"
    );
    let texts = texts(&events_from(&inbox, "matrix.main", "message"));
    let want: Vec<String> = (1..=5)
        .chain(16..=20)
        .map(|n| format!("alice {n:02}"))
        .collect();
    assert_eq!(texts, want);
}

#[tokio::test]
async fn bot_mode_a_60s_homeserver_outage_loses_and_repeats_nothing() {
    homeserver_outage(Mode::Bot).await;
}

#[tokio::test]
async fn appservice_mode_a_60s_homeserver_outage_loses_and_repeats_nothing() {
    homeserver_outage(Mode::Appservice).await;
}

/// kill -9 of switchboard while Synapse pushes transactions: every event
/// arrives once, in order (Synapse repeats the transaction it got no 200
/// for; one committed before the kill is not committed again).
#[tokio::test]
async fn appservice_kill9_while_the_homeserver_pushes_loses_and_repeats_nothing() {
    let Setup {
        mut sb,
        alice,
        room,
        _dir,
        synapse,
        ..
    } = setup(Mode::Appservice, Backend::Sqlite).await;
    let _ = &synapse;
    let sender = {
        let (alice, room) = (alice.clone(), room.clone());
        tokio::spawn(async move {
            for n in 1..=30 {
                alice.send_text(&room, &format!("m {n:02}")).await;
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    sb.kill9();
    tokio::time::sleep(Duration::from_millis(300)).await;
    sb.restart().await;
    sender.await.unwrap();
    let all = Inbox::default();
    let ws = sb.api.replace("http", "ws");
    ws_reader(
        &format!("{ws}/v1/ws?gateways=g&cursor=0"),
        "ann",
        all.clone(),
    )
    .await;
    until("all 30 messages", || {
        let n = events_from(&all, "matrix.main", "message").len();
        async move { n >= 30 }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let want: Vec<String> = (1..=30).map(|n| format!("m {n:02}")).collect();
    assert_eq!(texts(&events_from(&all, "matrix.main", "message")), want);
}

/// An encrypted room is not silently broken: switchboard says once, in the
/// room, that it is not bridged, and nothing crosses either way.
#[tokio::test]
async fn an_encrypted_room_gets_a_notice_and_nothing_crosses() {
    let Setup {
        sb,
        alice,
        room,
        inbox,
        bridge,
        _dir,
        synapse,
        ..
    } = setup_with(
        Mode::Bot,
        Backend::Sqlite,
        Opts {
            encrypted: true,
            ..Opts::default()
        },
    )
    .await;
    let _ = &synapse;
    let notice = alice
        .wait_for(&room, "the notice", |e| {
            e["sender"] == bridge.as_str() && e["content"]["msgtype"] == "m.notice"
        })
        .await;
    assert!(
        notice["content"]["body"]
            .as_str()
            .unwrap()
            .contains("encrypted"),
        "{notice}"
    );
    alice
        .send(
            &room,
            "m.room.encrypted",
            &json!({"algorithm": "m.megolm.v1.aes-sha2",
            "ciphertext": "AwgA", "device_id": "DEV", "sender_key": "key", "session_id": "sess"}),
        )
        .await;
    let client = reqwest::Client::new();
    let (s, _) = post_native(
        &client,
        &sb.api,
        "ann",
        "g",
        json!({"text": "secret?", "username": "Ann"}),
        None,
    )
    .await
    .unwrap();
    assert_eq!(s, 201);
    sb.drained().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(events_from(&inbox, "matrix.main", "message").is_empty());
    assert!(bridged_bodies(&alice, &room)
        .await
        .iter()
        .all(|b| !b.contains("secret?")));
    assert!(sb.log().contains("end-to-end encrypted"), "{}", sb.log());
}

/// A Telegram forum topic (a thread of the chat) becomes one Matrix
/// thread, rooted at its first message bridged into the room.
#[tokio::test]
async fn a_telegram_topic_becomes_a_matrix_thread() {
    use switchboard_telegram::fake::FakeTelegram;
    const FORUM: i64 = -1_002_000_000_009;
    let dir = tempfile::tempdir().unwrap();
    let tg = crate::telegram::fake(false).await;
    tg.add_chat(FORUM, "supergroup", "Forum", true);
    tg.add_topic(FORUM, 4);
    std::fs::create_dir_all(dir.path().join("synapse")).unwrap();
    let strict = SynapseOptions {
        rate_limits: RateLimits::Default,
        ..SynapseOptions::default()
    };
    let synapse = Synapse::start_opts(&dir.path().join("synapse"), &strict).await;
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
            synapse.url()
        )
        + "\n[[gateway]]\nname = \"g\"\n"
        + &format!("\n[[gateway.inout]]\naccount = \"telegram.main\"\nchannel = \"{FORUM}\"\n")
        + &member(&room);
    let sb = Sb::start(dir.path(), &cfg, api, admin).await;
    until("the bridge in the room", || {
        let (alice, room, bridge) = (alice.clone(), room.clone(), bridge.clone());
        async move { alice.members(&room).await.contains(&bridge) }
    })
    .await;
    let bob = FakeTelegram::user(7, "Bob", None);
    for text in ["topic start", "topic reply", "outside"] {
        let fields = if text == "outside" {
            json!({"text": text})
        } else {
            json!({"text": text, "message_thread_id": 4, "is_topic_message": true})
        };
        tg.inject_message(FORUM, &bob, fields);
        alice
            .wait_for(&room, text, |e| {
                e["content"]["body"]
                    .as_str()
                    .is_some_and(|b| b.ends_with(text))
            })
            .await;
    }
    let by_body = |events: &[Value], text: &str| -> Value {
        events
            .iter()
            .find(|e| {
                e["content"]["body"]
                    .as_str()
                    .is_some_and(|b| b.ends_with(text))
            })
            .cloned()
            .unwrap()
    };
    let events = alice.messages(&room).await;
    let start = by_body(&events, "topic start");
    let reply = by_body(&events, "topic reply");
    let outside = by_body(&events, "outside");
    assert!(start["content"]["m.relates_to"].is_null(), "{start}");
    assert_eq!(reply["content"]["m.relates_to"]["rel_type"], "m.thread");
    assert_eq!(
        reply["content"]["m.relates_to"]["event_id"],
        start["event_id"]
    );
    assert!(outside["content"]["m.relates_to"].is_null(), "{outside}");
    drop(sb);
}

/// Every session of the bridge's account revoked (a user who logs out
/// everywhere, or an admin): bot mode with a password logs in again by
/// itself, and nothing is lost either way.
#[tokio::test]
async fn bot_mode_logs_in_again_when_its_sessions_are_revoked() {
    let s = setup(Mode::Bot, Backend::Sqlite).await;
    let client = reqwest::Client::new();
    let post = |text: &'static str| {
        let (client, api) = (client.clone(), s.sb.api.clone());
        async move {
            let (st, body) = post_native(
                &client,
                &api,
                "ann",
                "g",
                json!({"text": text, "username": "Ann"}),
                None,
            )
            .await
            .unwrap();
            assert_eq!(st, 201, "{body}");
        }
    };
    post("before").await;
    s.alice.send_text(&s.room, "alice before").await;
    until("the first exchange", || {
        let (alice, room) = (s.alice.clone(), s.room.clone());
        let n = events_from(&s.inbox, "matrix.main", "message").len();
        async move { n == 1 && bridged_bodies(&alice, &room).await.len() == 1 }
    })
    .await;
    // A second session of the same account logs out all of them.
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
    assert!(out.status().is_success(), "{:?}", out.text().await);
    post("after").await;
    s.alice.send_text(&s.room, "alice after").await;
    until("the exchange after the sessions were revoked", || {
        let (alice, room) = (s.alice.clone(), s.room.clone());
        let n = events_from(&s.inbox, "matrix.main", "message").len();
        async move { n >= 2 && bridged_bodies(&alice, &room).await.len() >= 2 }
    })
    .await;
    s.sb.drained().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        bridged_bodies(&s.alice, &s.room).await,
        ["Ann: before", "Ann: after"],
        "once each, in order"
    );
    assert_eq!(
        texts(&events_from(&s.inbox, "matrix.main", "message")),
        ["alice before", "alice after"]
    );
    assert!(
        s.sb.log().contains("logging in again"),
        "the refused token was noticed: {}",
        s.sb.log()
    );
}

/// A Matrix thread reaches the bots as a thread: its messages carry the
/// root's id, the root and the room's other messages carry none.
#[tokio::test]
async fn a_matrix_thread_reaches_the_bots_as_a_thread() {
    let s = setup(Mode::Bot, Backend::Sqlite).await;
    let root = s.alice.send_text(&s.room, "root").await;
    s.alice
        .send(
            &s.room,
            "m.room.message",
            &json!({"msgtype": "m.text", "body": "in the thread",
                "m.relates_to": {"rel_type": "m.thread", "event_id": root,
                    "is_falling_back": true, "m.in_reply_to": {"event_id": root}}}),
        )
        .await;
    s.alice.send_text(&s.room, "outside").await;
    until("three messages at the bot", || {
        let n = events_from(&s.inbox, "matrix.main", "message").len();
        async move { n >= 3 }
    })
    .await;
    let msgs = events_from(&s.inbox, "matrix.main", "message");
    let thread_of = |i: usize| msgs[i]["origin"]["thread"].as_str().map(str::to_owned);
    assert_eq!(texts(&msgs), ["root", "in the thread", "outside"]);
    assert_eq!(thread_of(0), None, "{msgs:#?}");
    assert_eq!(thread_of(1).as_deref(), Some(root.as_str()), "{msgs:#?}");
    assert_eq!(thread_of(2), None, "{msgs:#?}");
}
