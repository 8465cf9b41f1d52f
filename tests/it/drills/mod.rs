//! Outage drills (issue 10), through the real binary: one gateway with a
//! Telegram group (the Bot API fake), a Signal group (the signal-cli
//! fake), a Matrix room (a real Synapse, relay-bot mode), a WebSocket bot
//! and a webhook, carrying a conversation from every side while networks
//! fail. Every destination gets every message once, in order per sender,
//! and the people on the healthy networks get exactly one "down" and one
//! "back" notice per outage.
//!
//! This file is the kit every scenario uses ([`Drill`]); the scenarios are
//! in `refusals` (1: refused connections), `faults` (2–4: hangs, slow
//! answers, rate-limit storms), `restarts` (5 and 7: kill -9 at seeded
//! points, a network down across a restart and a reload) and `database`
//! (6: the database failing mid-drill). Time is compressed through
//! configuration (`notice_after = 5s`, short backoff), never with fake
//! clocks in the binary.
//!
//! Latency is measured, not asserted (no timing asserts in tests): each
//! scenario prints the healthy destinations' p50/p99 during the fault next
//! to a fault-free phase of the same run, for docs/outages.md.

// A kit, like the harness: parts of it (the proxy, hangs) serve scenarios
// still to be written.

/// Prints one line of a drill's report (latency, repeats, retry-after
/// waits), and appends it to the file `SWITCHBOARD_DRILL_REPORT` names, if
/// any: nextest shows a passing test's output only with `--no-capture`,
/// which runs the tests one at a time.
macro_rules! report {
    ($($arg:tt)*) => {
        $crate::drills::report_line(&format!($($arg)*))
    };
}

mod database;
mod faults;
mod proxy;
mod refusals;
mod restarts;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use switchboard_signal::fake::{
    DaemonVersion, FakeOptions as SignalOptions, FakeSignal, Outage as SignalOutage, ReceiveMode,
};
use switchboard_telegram::fake::{FakeTelegram, Outage as TelegramOutage};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use crate::harness::*;
use crate::synapse::{MxUser, Synapse};

pub(crate) use proxy::Proxy;

pub(crate) const GROUP: i64 = -1_001_000_000_777;
pub(crate) const SAM: &str = "+15550000002";

/// The senders, by the prefix of what they write.
pub(crate) const SENDERS: [&str; 4] = ["tg", "sig", "mx", "api"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Net {
    Telegram,
    Signal,
    Matrix,
}

impl Net {
    pub(crate) const ALL: [Net; 3] = [Net::Telegram, Net::Signal, Net::Matrix];

    /// The sender prefix of this network's people.
    pub(crate) fn sender(self) -> &'static str {
        match self {
            Net::Telegram => "tg",
            Net::Signal => "sig",
            Net::Matrix => "mx",
        }
    }

    /// The destination name in [`Drill::received`].
    pub(crate) fn dest(self) -> &'static str {
        match self {
            Net::Telegram => "telegram",
            Net::Signal => "signal",
            Net::Matrix => "matrix",
        }
    }

    /// The account name in notices.
    pub(crate) fn account(self) -> &'static str {
        match self {
            Net::Telegram => "telegram.main",
            Net::Signal => "signal.main",
            Net::Matrix => "matrix.main",
        }
    }
}

/// What a scenario changes in the drill's world.
#[derive(Default)]
pub(crate) struct Options {
    /// A database URL of the scenario's own (a private PostgreSQL it
    /// restarts); otherwise a fresh database on `backend`.
    pub db_url: Option<String>,
    /// Extra `homeserver.yaml` for Synapse (rate limits).
    pub synapse_yaml: String,
    /// Switchboard reaches Synapse through a [`Proxy`] the scenario can
    /// slow down (the people in the room talk to Synapse directly).
    pub matrix_proxy: bool,
    /// The Telegram fake enforces its documented flood limits.
    pub telegram_limits: bool,
    /// Extra TOML inside `[telegram.main]`.
    pub telegram_extra: String,
}

pub(crate) struct Drill {
    pub dir: tempfile::TempDir,
    pub tg: FakeTelegram,
    pub signal: FakeSignal,
    pub group: String,
    pub synapse: Synapse,
    pub proxy: Option<Proxy>,
    pub mia: MxUser,
    pub room: String,
    pub sb: Sb,
    pub ws: Inbox,
    ws_task: JoinHandle<()>,
    pub hook: Receiver,
    pub client: reqwest::Client,
    /// What each sender wrote, in order.
    pub wrote: BTreeMap<&'static str, Vec<String>>,
    /// When each text was written (ms since the epoch).
    pub wrote_at: HashMap<String, u64>,
    /// Rounds written so far (texts are numbered by round).
    pub n: usize,
}

/// Milliseconds since the epoch, now.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// An `Instant` from the past as milliseconds since the epoch.
fn instant_ms(at: Instant) -> u64 {
    now_ms().saturating_sub(at.elapsed().as_millis() as u64)
}

impl Drill {
    pub(crate) async fn start(backend: Backend) -> Self {
        Self::start_with(backend, Options::default()).await
    }

    pub(crate) async fn start_with(backend: Backend, opts: Options) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = match opts.db_url {
            Some(url) => Db { url },
            None => Db::new(backend, dir.path()).await,
        };
        let (api, admin) = (free_port(), free_port());
        let tg = crate::telegram::fake(opts.telegram_limits).await;
        tg.add_chat(GROUP, "supergroup", "Lobby", false);
        let signal = FakeSignal::start(SignalOptions {
            receive_mode: ReceiveMode::Manual,
            // The current daemon, which says how long a rate limit lasts.
            version: DaemonVersion::V0_14_6,
            ..SignalOptions::default()
        })
        .await
        .expect("fake signal-cli");
        signal.add_contact(SAM, "0b8c1a52-8a3e-4f6a-9d41-6f1f3c2b7a10", Some("Sam"));
        let group = signal.add_group("Lobby", &[SAM]);
        std::fs::create_dir_all(dir.path().join("synapse")).unwrap();
        let synapse =
            Synapse::start_with(&dir.path().join("synapse"), &[], &opts.synapse_yaml).await;
        let mia = synapse.register("mia", false).await;
        mia.set_displayname("Mia").await;
        synapse.register("bridge", false).await;
        let bridge = synapse.user_id("bridge");
        let room = mia
            .create_room(None, &[bridge.as_str()], Some("private_chat"))
            .await;
        let proxy = if opts.matrix_proxy {
            Some(Proxy::start(synapse.port()).await)
        } else {
            None
        };
        let homeserver = proxy.as_ref().map_or(synapse.url(), Proxy::url);
        let mut hook = Receiver::new();
        hook.up().await;
        // Sends get the default 10 s, not the harness's 2 s: a drill's slow
        // network answers in 2 s, and a timeout there would be a retry (and,
        // on Telegram and Signal, a lost-answer duplicate) the scenario did
        // not ask for.
        let cfg = base_config(&db, dir.path(), api, admin)
            .replace("send_timeout = \"2s\"", "send_timeout = \"10s\"")
            + &token("ann", r#"["read", "write"]"#, r#"["g"]"#)
            + &webhook("hook", hook.port, r#"["g"]"#)
            + &crate::telegram::telegram_config(&tg, &opts.telegram_extra)
            + &format!(
                "\n[signal.main]\naccount = \"+15550000001\"\ndaemon = \"tcp://{}\"\nrequest_timeout = \"10s\"\n",
                signal.tcp_addr()
            )
            + &format!(
                "\n[matrix.main]\nhomeserver = \"{homeserver}\"\nuser = \"{bridge}\"\npassword = \"pw-bridge\"\nsync_timeout = \"5s\"\n",
            )
            // Time compressed through configuration: notices after 5 s.
            + "\n[[gateway]]\nname = \"g\"\nnotice_after = \"5s\"\n[[gateway.inout]]\naccount = \"api.bots\"\nchannel = \"api\"\n"
            + &format!("\n[[gateway.inout]]\naccount = \"telegram.main\"\nchannel = \"{GROUP}\"\n")
            + &format!("\n[[gateway.inout]]\naccount = \"signal.main\"\nchannel = \"{group}\"\n")
            + &format!("\n[[gateway.inout]]\naccount = \"matrix.main\"\nchannel = \"{room}\"\n");
        let sb = Sb::start(dir.path(), &cfg, api, admin).await;
        let ws = Inbox::default();
        let ws_task = bot_reader(&sb.api, ws.clone());
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
            dir,
            tg,
            signal,
            group,
            synapse,
            proxy,
            mia,
            room,
            sb,
            ws,
            ws_task,
            hook,
            client: reqwest::Client::new(),
            wrote: BTreeMap::new(),
            wrote_at: HashMap::new(),
            n: 0,
        }
    }

    /// One message from each sender whose network lets them write: people
    /// on a homeserver that is down or hung cannot write (`matrix_up`
    /// false); Telegram and Signal keep what their users write for the
    /// bridge to fetch later. Returns the round's number.
    pub(crate) async fn round(&mut self, matrix_up: bool) -> usize {
        self.n += 1;
        let n = self.n;
        for who in SENDERS {
            if who == "mx" && !matrix_up {
                continue;
            }
            let text = format!("{who}-{n:03}");
            // Stamped before it is written: latency includes the writing.
            let at = now_ms();
            if who == "api" {
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
            } else {
                self.write_as_person(who, &text).await;
            }
            self.wrote_at.insert(text.clone(), at);
            self.wrote.entry(who).or_default().push(text);
        }
        n
    }

    /// `text` written by the person on the network of sender `who` (`tg`,
    /// `sig` or `mx`).
    pub(crate) async fn write_as_person(&self, who: &str, text: &str) {
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
                self.mia.send_text(&self.room, text).await;
            }
            other => panic!("{other} is not a person's network"),
        }
    }

    /// Rounds every `every` for `total` (the first at once).
    pub(crate) async fn rounds_for(&mut self, total: Duration, every: Duration, matrix_up: bool) {
        let started = Instant::now();
        while started.elapsed() < total {
            let next = Instant::now() + every;
            self.round(matrix_up).await;
            tokio::time::sleep_until(next.into()).await;
        }
    }

    /// The fault-free phase latency is compared with: two rounds to warm
    /// up (logins, first syncs), then a round every 2 s for 20 s, all
    /// delivered. Returns its rounds.
    pub(crate) async fn baseline(&mut self) -> std::ops::RangeInclusive<usize> {
        self.round(true).await;
        self.round(true).await;
        self.until_caught_up("the warm-up rounds everywhere").await;
        let first = self.n + 1;
        self.rounds_for(Duration::from_secs(20), Duration::from_secs(2), true)
            .await;
        self.until_caught_up("the baseline rounds everywhere").await;
        first..=self.n
    }

    /// What each destination has received: the sender prefixes' texts in
    /// arrival order, with when they arrived (ms since the epoch).
    pub(crate) async fn arrivals(&self) -> BTreeMap<&'static str, Vec<(String, u64)>> {
        // "Name: tg-001" (networks the bridge posts to as one account) or
        // "tg-001" (the bot API, which carries the author separately).
        let strip = |s: &str| s.rsplit(": ").next().unwrap_or(s).to_owned();
        let mut out = BTreeMap::new();
        let bot = self.tg.bot()["id"].as_i64();
        // The fake stamps messages in whole seconds; the answered
        // sendMessage calls say to the millisecond when they were read.
        let mut sent_at: HashMap<String, u64> = HashMap::new();
        for c in self.tg.calls_to("sendMessage") {
            if let (Some(200), Some(text)) = (c.status, c.param("text")) {
                sent_at.entry(strip(&text)).or_insert(instant_ms(c.at));
            }
        }
        out.insert(
            "telegram",
            self.tg
                .messages(GROUP)
                .into_iter()
                .filter(|m| m["from"]["id"].as_i64() == bot)
                .filter_map(|m| {
                    let text = strip(m["text"].as_str()?);
                    let at = sent_at
                        .get(&text)
                        .copied()
                        .unwrap_or(m["date"].as_u64().unwrap_or(0) * 1000);
                    Some((text, at))
                })
                .collect(),
        );
        out.insert(
            "signal",
            self.signal
                .sent()
                .into_iter()
                .filter(|s| s.method == "send" && s.error.is_none())
                .filter_map(|s| Some((strip(s.params["message"].as_str()?), s.timestamp as u64)))
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
                .filter_map(|e| {
                    Some((
                        strip(e["content"]["body"].as_str()?),
                        e["origin_server_ts"].as_u64()?,
                    ))
                })
                .collect(),
        );
        out.insert(
            "bot API (WebSocket)",
            self.ws
                .all()
                .iter()
                .filter(|e| e["type"] == "message")
                .filter_map(|e| Some((e["text"].as_str()?.to_owned(), e["_at_ms"].as_u64()?)))
                .collect(),
        );
        out.insert(
            "webhook",
            self.hook
                .deliveries()
                .into_iter()
                .filter(|d| d.body["type"] == "message")
                .filter_map(|d| Some((d.body["text"].as_str()?.to_owned(), instant_ms(d.at))))
                .collect(),
        );
        out
    }

    /// What each destination has received, as texts in arrival order.
    pub(crate) async fn received(&self) -> BTreeMap<&'static str, Vec<String>> {
        self.arrivals()
            .await
            .into_iter()
            .map(|(dest, got)| (dest, got.into_iter().map(|(t, _)| t).collect()))
            .collect()
    }

    /// Whether every destination has everything the other senders wrote.
    pub(crate) async fn caught_up(&self) -> bool {
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

    /// Waits until every destination has everything written so far.
    pub(crate) async fn until_caught_up(&self, what: &str) {
        until(what, || self.caught_up()).await;
    }

    /// Every destination: each other sender's messages exactly once, in the
    /// order they were written.
    pub(crate) async fn assert_each_once_in_order(&self) {
        self.assert_delivered(&[]).await;
    }

    /// Every destination: each other sender's messages, in the order they
    /// were written, none missing. A destination in `lossy` (Telegram and
    /// Signal, which have no idempotency key) may show a message twice when
    /// the network performed a send whose answer was lost; such repeats are
    /// counted, and returned per destination. Anywhere else a repeat fails.
    pub(crate) async fn assert_delivered(&self, lossy: &[&str]) -> BTreeMap<&'static str, usize> {
        let got = self.received().await;
        let mut repeats = BTreeMap::new();
        for (dest, texts) in &got {
            for s in SENDERS.iter().filter(|s| !own(dest, s)) {
                let from_s: Vec<&String> = texts
                    .iter()
                    .filter(|t| t.starts_with(&format!("{s}-")))
                    .collect();
                let mut firsts: Vec<&String> = Vec::new();
                for t in &from_s {
                    if !firsts.contains(t) {
                        firsts.push(t);
                    }
                }
                let wrote: Vec<&String> = self.wrote.get(s).into_iter().flatten().collect();
                assert_eq!(firsts, wrote, "{s} at {dest}: every one, in order");
                let extra = from_s.len() - firsts.len();
                assert!(
                    extra == 0 || lossy.contains(dest),
                    "{s} at {dest}: {extra} repeated: {from_s:?}"
                );
                *repeats.entry(*dest).or_insert(0) += extra;
            }
        }
        repeats
    }

    /// The notices the WebSocket bot (on a network that never fails) got.
    pub(crate) fn bot_notices(&self) -> Vec<String> {
        notices(&self.ws.all())
    }

    /// The notices the bridge posted on `net`, as its people see them.
    pub(crate) async fn notices_on(&self, net: Net) -> Vec<String> {
        let is_notice = |t: &str| t.contains("⚠️") || t.contains("✅");
        match net {
            Net::Telegram => {
                let bot = self.tg.bot()["id"].as_i64();
                self.tg
                    .messages(GROUP)
                    .into_iter()
                    .filter(|m| m["from"]["id"].as_i64() == bot)
                    .filter_map(|m| m["text"].as_str().map(str::to_owned))
                    .filter(|t| is_notice(t))
                    .collect()
            }
            Net::Signal => self
                .signal
                .sent()
                .into_iter()
                .filter(|s| s.method == "send" && s.error.is_none())
                .filter_map(|s| s.params["message"].as_str().map(str::to_owned))
                .filter(|t| is_notice(t))
                .collect(),
            Net::Matrix => self
                .mia
                .messages(&self.room)
                .await
                .into_iter()
                .filter(|e| e["sender"] != self.mia.user_id.as_str())
                .filter(|e| e["type"] == "m.room.message")
                .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
                .filter(|t| is_notice(t))
                .collect(),
        }
    }

    /// Delivery latencies (write to arrival, ms) of the messages written in
    /// rounds `rounds` from `senders` to `dests`, slowest first, each with
    /// its text and destination.
    pub(crate) async fn latencies(
        &self,
        rounds: std::ops::RangeInclusive<usize>,
        senders: &[&str],
        dests: &[&str],
    ) -> Vec<(u64, String, &'static str)> {
        let arrivals = self.arrivals().await;
        let mut ms = Vec::new();
        for (dest, got) in arrivals {
            if !dests.contains(&dest) {
                continue;
            }
            for (text, at) in got {
                let Some((who, n)) = text.split_once('-') else {
                    continue;
                };
                let in_rounds = n.parse::<usize>().is_ok_and(|n| rounds.contains(&n));
                if !in_rounds || !senders.contains(&who) || own(dest, who) {
                    continue;
                }
                if let Some(w) = self.wrote_at.get(&text) {
                    ms.push((at.saturating_sub(*w), text, dest));
                }
            }
        }
        ms.sort_unstable_by(|a, b| b.cmp(a));
        ms
    }

    /// Prints one line of the latency report: the healthy side during a
    /// fault next to the same side in a fault-free phase of this run.
    pub(crate) async fn report_latency(
        &self,
        what: &str,
        baseline: std::ops::RangeInclusive<usize>,
        during: std::ops::RangeInclusive<usize>,
        healthy: &[Net],
    ) {
        let mut senders: Vec<&str> = healthy.iter().map(|n| n.sender()).collect();
        senders.push("api");
        let mut dests: Vec<&str> = healthy.iter().map(|n| n.dest()).collect();
        dests.extend(["bot API (WebSocket)", "webhook"]);
        self.report_latency_of(what, baseline, during, &senders, &dests)
            .await;
    }

    /// [`Drill::report_latency`] for messages from `senders` to `dests`.
    pub(crate) async fn report_latency_of(
        &self,
        what: &str,
        baseline: std::ops::RangeInclusive<usize>,
        during: std::ops::RangeInclusive<usize>,
        senders: &[&str],
        dests: &[&str],
    ) {
        let base = self.latencies(baseline, senders, dests).await;
        let during = self.latencies(during, senders, dests).await;
        // Nearest-rank percentiles of a list sorted slowest first.
        let pct = |v: &[(u64, String, &str)], p: f64| {
            let rank = ((v.len() as f64 * p).ceil() as usize).max(1);
            v.get(v.len().saturating_sub(rank)).map_or(0, |x| x.0)
        };
        let (b99, d99) = (pct(&base, 0.99), pct(&during, 0.99));
        let ratio = if b99 == 0 {
            0.0
        } else {
            d99 as f64 / b99 as f64
        };
        let slowest: Vec<String> = during
            .iter()
            .take(3)
            .map(|(ms, text, dest)| format!("{text}→{dest} {ms} ms"))
            .collect();
        report!(
            "drill latency | {what} | healthy: {dests:?} | without fault: n={} p50={} ms p99={b99} ms \
             | during: n={} p50={} ms p99={d99} ms | p99 ratio {ratio:.2} | slowest: {slowest:?}",
            base.len(),
            pct(&base, 0.5),
            during.len(),
            pct(&during, 0.5),
        );
    }

    /// Makes `nets` refuse connections (Synapse stopped).
    pub(crate) async fn refuse(&mut self, nets: &[Net]) {
        for net in nets {
            match net {
                Net::Telegram => self.tg.set_outage(TelegramOutage::Refuse).await,
                Net::Signal => self.signal.set_outage(SignalOutage::Refuse).await,
                Net::Matrix => self.synapse.stop().await,
            }
        }
    }

    /// Makes `nets` accept connections and never answer (Synapse
    /// SIGSTOPped, as a hung host).
    pub(crate) async fn hang(&mut self, nets: &[Net]) {
        for net in nets {
            match net {
                Net::Telegram => self.tg.set_outage(TelegramOutage::Hang).await,
                Net::Signal => self.signal.set_outage(SignalOutage::Hang).await,
                Net::Matrix => self.synapse.pause(),
            }
        }
    }

    /// Ends a refusal or a hang of `nets`.
    pub(crate) async fn restore(&mut self, nets: &[Net]) {
        for net in nets {
            match net {
                Net::Telegram => self.tg.set_outage(TelegramOutage::Up).await,
                Net::Signal => self.signal.set_outage(SignalOutage::Up).await,
                Net::Matrix => {
                    if self.synapse.is_running() {
                        self.synapse.resume();
                    } else {
                        self.synapse.start_again().await;
                    }
                }
            }
        }
    }

    /// Kills switchboard with SIGKILL and starts it again.
    pub(crate) async fn kill9_and_restart(&mut self) {
        self.sb.kill9();
        self.sb.restart().await;
    }

    pub(crate) async fn stop(mut self) {
        self.sb.stop().await;
        self.ws_task.abort();
    }
}

/// The drill's WebSocket bot: reads `/v1/ws` with its own cursor, stamps
/// each event's arrival (`_at_ms`), and reconnects after the cursor it
/// last saw when switchboard restarts, so it gets every event exactly once.
fn bot_reader(api: &str, inbox: Inbox) -> JoinHandle<()> {
    let base = format!("{}/v1/ws?gateways=g", api.replace("http", "ws"));
    tokio::spawn(async move {
        let cursor = Arc::new(Mutex::new(0u64));
        loop {
            let url = format!("{base}&cursor={}", cursor.lock().unwrap());
            let mut req =
                tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
                    url.as_str(),
                )
                .unwrap();
            req.headers_mut()
                .insert("authorization", bearer("ann").parse().unwrap());
            let Ok((ws, _)) = tokio_tungstenite::connect_async(req).await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let (mut tx, mut rx) = ws.split();
            while let Some(Ok(msg)) = rx.next().await {
                match msg {
                    Message::Text(t) => {
                        let mut v: Value = serde_json::from_str(&t).unwrap();
                        if let Some(c) = v["cursor"].as_u64() {
                            *cursor.lock().unwrap() = c;
                        }
                        v["_at_ms"] = json!(now_ms());
                        inbox.push(v);
                    }
                    Message::Ping(p) => {
                        let _ = tx.send(Message::Pong(p)).await;
                    }
                    _ => {}
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

/// See [`report!`].
pub(crate) fn report_line(line: &str) {
    use std::io::Write;
    println!("{line}");
    if let Some(path) = std::env::var_os("SWITCHBOARD_DRILL_REPORT") {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("the drill report file");
        writeln!(f, "{line}").expect("write the drill report");
    }
}

/// Whether `dest` is where `sender` writes (nothing is echoed back).
pub(crate) fn own(dest: &str, sender: &str) -> bool {
    matches!(
        (dest, sender),
        ("telegram", "tg")
            | ("signal", "sig")
            | ("matrix", "mx")
            | ("bot API (WebSocket)", "api")
            | ("webhook", "api")
    )
}

pub(crate) fn notices(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["type"] == "notice")
        .filter_map(|e| e["text"].as_str().map(str::to_owned))
        .collect()
}
