//! Outage drills (issue 10), through the real binary: one gateway with a
//! Telegram group (the Bot API fake), a Signal group (the signal-cli
//! fake), a Matrix room (a real Synapse, relay-bot mode), a WebSocket bot
//! and a webhook, carrying a conversation from every side while one
//! network, then two at once, refuse connections for 60 s. Every
//! destination gets every message once, in order per sender, and the
//! people on the healthy networks get exactly one "down" and one "back"
//! notice per outage.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};
use switchboard_signal::fake::{
    FakeOptions as SignalOptions, FakeSignal, Outage as SignalOutage, ReceiveMode,
};
use switchboard_telegram::fake::{FakeTelegram, Outage as TelegramOutage};

use crate::harness::*;
use crate::synapse::{MxUser, Synapse};

const GROUP: i64 = -1_001_000_000_777;
const SAM: &str = "+15550000002";

/// The senders, by the prefix of what they write.
const SENDERS: [&str; 4] = ["tg", "sig", "mx", "api"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Net {
    Telegram,
    Signal,
    Matrix,
}

struct Drill {
    _dir: tempfile::TempDir,
    tg: FakeTelegram,
    signal: FakeSignal,
    group: String,
    synapse: Synapse,
    mia: MxUser,
    room: String,
    sb: Sb,
    ws: Inbox,
    hook: Receiver,
    client: reqwest::Client,
    /// What each sender wrote, in order.
    wrote: BTreeMap<&'static str, Vec<String>>,
}

impl Drill {
    async fn start(backend: Backend) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::new(backend, dir.path()).await;
        let (api, admin) = (free_port(), free_port());
        let tg = crate::telegram::fake(false).await;
        tg.add_chat(GROUP, "supergroup", "Lobby", false);
        let signal = FakeSignal::start(SignalOptions {
            receive_mode: ReceiveMode::Manual,
            ..SignalOptions::default()
        })
        .await
        .expect("fake signal-cli");
        signal.add_contact(SAM, "0b8c1a52-8a3e-4f6a-9d41-6f1f3c2b7a10", Some("Sam"));
        let group = signal.add_group("Lobby", &[SAM]);
        std::fs::create_dir_all(dir.path().join("synapse")).unwrap();
        let synapse = Synapse::start(&dir.path().join("synapse"), &[]).await;
        let mia = synapse.register("mia", false).await;
        mia.set_displayname("Mia").await;
        synapse.register("bridge", false).await;
        let bridge = synapse.user_id("bridge");
        let room = mia
            .create_room(None, &[bridge.as_str()], Some("private_chat"))
            .await;
        let mut hook = Receiver::new();
        hook.up().await;
        let cfg = base_config(&db, dir.path(), api, admin)
            + &token("ann", r#"["read", "write"]"#, r#"["g"]"#)
            + &webhook("hook", hook.port, r#"["g"]"#)
            + &crate::telegram::telegram_config(&tg, "")
            + &format!(
                "\n[signal.main]\naccount = \"+15550000001\"\ndaemon = \"tcp://{}\"\nrequest_timeout = \"2s\"\n",
                signal.tcp_addr()
            )
            + &format!(
                "\n[matrix.main]\nhomeserver = \"{}\"\nuser = \"{bridge}\"\npassword = \"pw-bridge\"\nsync_timeout = \"5s\"\n",
                synapse.url()
            )
            // Time compressed through configuration: notices after 5 s.
            + "\n[[gateway]]\nname = \"g\"\nnotice_after = \"5s\"\n[[gateway.inout]]\naccount = \"api.bots\"\nchannel = \"api\"\n"
            + &format!("\n[[gateway.inout]]\naccount = \"telegram.main\"\nchannel = \"{GROUP}\"\n")
            + &format!("\n[[gateway.inout]]\naccount = \"signal.main\"\nchannel = \"{group}\"\n")
            + &format!("\n[[gateway.inout]]\naccount = \"matrix.main\"\nchannel = \"{room}\"\n");
        let sb = Sb::start(dir.path(), &cfg, api, admin).await;
        let ws = Inbox::default();
        ws_reader(
            &format!("{}/v1/ws?gateways=g", sb.api.replace("http", "ws")),
            "ann",
            ws.clone(),
        )
        .await;
        until("the bridge in the Matrix room", || {
            let (mia, room, bridge) = (mia.clone(), room.clone(), bridge.clone());
            async move { mia.members(&room).await.contains(&bridge) }
        })
        .await;
        assert!(
            signal.wait_receivers(1, PATIENCE).await,
            "subscribed to Signal"
        );
        Self {
            _dir: dir,
            tg,
            signal,
            group,
            synapse,
            mia,
            room,
            sb,
            ws,
            hook,
            client: reqwest::Client::new(),
            wrote: BTreeMap::new(),
        }
    }

    /// One message from each sender whose network can take it (people on
    /// a homeserver that is down cannot write; Telegram and Signal keep
    /// what their users write for the bridge to fetch later).
    async fn round(&mut self, n: usize, matrix_up: bool) {
        for who in SENDERS {
            if who == "mx" && !matrix_up {
                continue;
            }
            let text = format!("{who}-{n:03}");
            match who {
                "tg" => {
                    let tina = FakeTelegram::user(42, "Tina", Some("tina"));
                    self.tg.inject_message(GROUP, &tina, json!({"text": text}));
                }
                "sig" => {
                    self.signal
                        .inject_message(SAM, Some(&self.group), json!({"message": text}));
                }
                "mx" => {
                    self.mia.send_text(&self.room, &text).await;
                }
                _ => {
                    let (s, body) = post_native(
                        &self.client,
                        &self.sb.api,
                        "ann",
                        "g",
                        json!({"text": text, "username": "Ann"}),
                        None,
                    )
                    .await
                    .unwrap();
                    assert_eq!(s, 201, "{body}");
                }
            }
            self.wrote.entry(who).or_default().push(text);
        }
    }

    /// What each destination has received, as the sender prefixes' texts
    /// in arrival order.
    async fn received(&self) -> BTreeMap<&'static str, Vec<String>> {
        // "Name: tg-001" (networks the bridge posts to as one account) or
        // "tg-001" (the bot API, which carries the author separately).
        let strip = |s: &str| s.rsplit(": ").next().unwrap_or(s).to_owned();
        let mut out = BTreeMap::new();
        let bot = self.tg.bot()["id"].as_i64();
        out.insert(
            "telegram",
            self.tg
                .messages(GROUP)
                .into_iter()
                .filter(|m| m["from"]["id"].as_i64() == bot)
                .filter_map(|m| m["text"].as_str().map(strip))
                .collect(),
        );
        out.insert(
            "signal",
            self.signal
                .sent()
                .into_iter()
                .filter(|s| s.method == "send" && s.error.is_none())
                .filter_map(|s| s.params["message"].as_str().map(strip))
                .collect(),
        );
        out.insert(
            "matrix",
            self.mia
                .messages(&self.room)
                .await
                .into_iter()
                .filter(|e| {
                    e["type"] == "m.room.message" && e["sender"] != self.mia.user_id.as_str()
                })
                .filter(|e| e["content"]["msgtype"] == "m.text")
                .filter_map(|e| e["content"]["body"].as_str().map(strip))
                .collect(),
        );
        out.insert("bot API (WebSocket)", texts(&self.ws.all()));
        let hooked: Vec<Value> = self.hook.deliveries().into_iter().map(|d| d.body).collect();
        out.insert("webhook", texts(&hooked));
        out
    }

    /// Whether every destination has everything the other senders wrote.
    async fn caught_up(&self) -> bool {
        let got = self.received().await;
        got.iter().all(|(dest, texts)| {
            SENDERS.iter().filter(|s| !own(dest, s)).all(|s| {
                self.wrote.get(s).map_or(0, Vec::len)
                    <= texts
                        .iter()
                        .filter(|t| t.starts_with(&format!("{s}-")))
                        .count()
            })
        })
    }

    async fn outage(&mut self, nets: &[Net], mut n: usize) -> usize {
        for net in nets {
            match net {
                Net::Telegram => self.tg.set_outage(TelegramOutage::Refuse).await,
                Net::Signal => self.signal.set_outage(SignalOutage::Refuse).await,
                Net::Matrix => self.synapse.stop().await,
            }
        }
        let matrix_up = !nets.contains(&Net::Matrix);
        let started = std::time::Instant::now();
        for _ in 0..3 {
            n += 1;
            self.round(n, matrix_up).await;
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        tokio::time::sleep(Duration::from_secs(60).saturating_sub(started.elapsed())).await;
        for net in nets {
            match net {
                Net::Telegram => self.tg.set_outage(TelegramOutage::Up).await,
                Net::Signal => self.signal.set_outage(SignalOutage::Up).await,
                Net::Matrix => self.synapse.start_again().await,
            }
        }
        n += 1;
        self.round(n, true).await;
        until("every destination caught up after the outage", || {
            self.caught_up()
        })
        .await;
        n
    }
}

/// Whether `dest` is where `sender` writes (nothing is echoed back).
fn own(dest: &str, sender: &str) -> bool {
    matches!(
        (dest, sender),
        ("telegram", "tg")
            | ("signal", "sig")
            | ("matrix", "mx")
            | ("bot API (WebSocket)", "api")
            | ("webhook", "api")
    )
}

fn notices(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["type"] == "notice")
        .filter_map(|e| e["text"].as_str().map(str::to_owned))
        .collect()
}

async fn refusals(backend: Backend) {
    let mut d = Drill::start(backend).await;
    let mut n = 0;
    for _ in 0..2 {
        n += 1;
        d.round(n, true).await;
    }
    until("the first rounds everywhere", || d.caught_up()).await;
    let plan: [&[Net]; 4] = [
        &[Net::Telegram],
        &[Net::Signal],
        &[Net::Matrix],
        &[Net::Telegram, Net::Signal],
    ];
    for nets in plan {
        n = d.outage(nets, n).await;
    }
    d.sb.drained().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Every destination: each other sender's messages once, in order.
    let got = d.received().await;
    for (dest, texts) in &got {
        for s in SENDERS.iter().filter(|s| !own(dest, s)) {
            let from_s: Vec<&String> = texts
                .iter()
                .filter(|t| t.starts_with(&format!("{s}-")))
                .collect();
            let wrote: Vec<&String> = d.wrote[s].iter().collect();
            assert_eq!(from_s, wrote, "{s} at {dest}: once each, in order");
        }
    }
    // The bot, on a network that never went down, heard of each outage
    // once when it began and once when it ended: five outages (the last
    // is two at once).
    let at_bot = notices(&d.ws.all());
    assert_eq!(
        at_bot.len(),
        10,
        "one down and one back per outage: {at_bot:#?}"
    );
    for name in ["telegram.main", "signal.main", "matrix.main"] {
        let about: Vec<&String> = at_bot.iter().filter(|t| t.contains(name)).collect();
        let expected = if name == "matrix.main" { 2 } else { 4 };
        assert_eq!(about.len(), expected, "notices about {name}: {at_bot:#?}");
    }
    d.sb.stop().await;
}

#[tokio::test]
async fn drill_each_network_refusing_for_60s_then_two_at_once_sqlite() {
    refusals(Backend::Sqlite).await;
}

#[tokio::test]
async fn drill_each_network_refusing_for_60s_then_two_at_once_postgres() {
    refusals(Backend::Postgres).await;
}
