//! Outage drills (issue 10), through the real binary: one gateway with one
//! conversation on every network of the build (each network's
//! [`TestPeer`]: the Telegram Bot API fake, the signal-cli fake, a real
//! Synapse), a WebSocket bot and a webhook, carrying a conversation from
//! every side while networks fail. Every destination gets every message
//! once, in order per sender, and the people on the healthy networks get
//! exactly one "down" and one "back" notice per outage.
//!
//! The drills are written once against [`TestPeer`]: the networks come from
//! the registry (`switchboard::adapters::CONNECTORS`, each connector's
//! `test_peer`), so a new network is drilled without a line here changing.
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
mod refusals;
mod restarts;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use switchboard_core::testkit::{Fault, TestPeer};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use crate::harness::*;

/// The bot API's sender prefix.
pub(crate) const API: &str = "api";

/// The bot API's destinations.
pub(crate) const BOT_DESTS: [&str; 2] = ["bot API (WebSocket)", "webhook"];

/// One network of the drill, by its place in [`Drill::peers`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Net(pub usize);

/// What a scenario changes in the drill's world.
#[derive(Default)]
pub(crate) struct Options {
    /// A database URL of the scenario's own (a private PostgreSQL it
    /// restarts); otherwise a fresh database on `backend`.
    pub db_url: Option<String>,
}

pub(crate) struct Drill {
    pub dir: tempfile::TempDir,
    /// Every network's conversation, in the registry's order.
    pub peers: Vec<Box<dyn TestPeer>>,
    pub sb: Sb,
    pub ws: Inbox,
    ws_task: JoinHandle<()>,
    pub hook: Receiver,
    pub client: reqwest::Client,
    /// The networks refusing or hanging now.
    down: HashSet<Net>,
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
        let mut peers = Vec::new();
        for c in switchboard::adapters::CONNECTORS {
            if let Some(factory) = c.test_peer() {
                peers.push(factory.start(dir.path()).await);
            }
        }
        assert!(peers.len() >= 2, "a drill needs networks to fail");
        let (api, admin) = (free_port(), free_port());
        let mut hook = Receiver::new();
        hook.up().await;
        // Sends get the default 10 s, not the harness's 2 s: a drill's slow
        // network answers in 2 s, and a timeout there would be a retry (and,
        // on a network without idempotency, a lost-answer duplicate) the
        // scenario did not ask for.
        let mut cfg = base_config(&db, dir.path(), api, admin)
            .replace("send_timeout = \"2s\"", "send_timeout = \"10s\"")
            + &token("ann", r#"["read", "write"]"#, r#"["g"]"#)
            + &webhook("hook", hook.port, r#"["g"]"#);
        for p in &peers {
            cfg += &p.section();
        }
        // Time compressed through configuration: notices after 5 s.
        cfg += "\n[[gateway]]\nname = \"g\"\nnotice_after = \"5s\"\n[[gateway.inout]]\naccount = \"api.bots\"\nchannel = \"api\"\n";
        for p in &peers {
            cfg += &format!(
                "\n[[gateway.inout]]\naccount = \"{}.main\"\nchannel = \"{}\"\n",
                p.network(),
                p.channel()
            );
        }
        let sb = Sb::start(dir.path(), &cfg, api, admin).await;
        let ws = Inbox::default();
        let ws_task = bot_reader(&sb.api, ws.clone());
        for p in &peers {
            p.ready().await;
        }
        Self {
            dir,
            peers,
            sb,
            ws,
            ws_task,
            hook,
            client: reqwest::Client::new(),
            down: HashSet::new(),
            wrote: BTreeMap::new(),
            wrote_at: HashMap::new(),
            n: 0,
        }
    }

    /// Every network of the drill.
    pub(crate) fn nets(&self) -> Vec<Net> {
        (0..self.peers.len()).map(Net).collect()
    }

    /// The peer of `net`.
    pub(crate) fn peer(&self, net: Net) -> &dyn TestPeer {
        self.peers[net.0].as_ref()
    }

    /// `net`'s destination name in [`Drill::received`]: its network's name.
    pub(crate) fn dest(&self, net: Net) -> &'static str {
        self.peer(net).network().as_str()
    }

    /// `net`'s account, as notices name it.
    pub(crate) fn account(&self, net: Net) -> String {
        format!("{}.main", self.peer(net).network())
    }

    /// Every sender prefix: each network's people's, then the bot API's.
    pub(crate) fn senders(&self) -> Vec<&'static str> {
        self.peers
            .iter()
            .map(|p| p.sender())
            .chain(std::iter::once(API))
            .collect()
    }

    /// Whether `dest` is where `sender` writes (nothing is echoed back).
    pub(crate) fn own(&self, dest: &str, sender: &str) -> bool {
        if sender == API {
            return BOT_DESTS.contains(&dest);
        }
        self.peers
            .iter()
            .any(|p| p.sender() == sender && p.network().as_str() == dest)
    }

    /// Whether the people of `net` can write now (their service is not the
    /// one that is down, or holds their messages for the bridge).
    fn can_write(&self, net: Net) -> bool {
        !self.down.contains(&net) || self.peer(net).people_write_while_down()
    }

    /// One message from each sender whose network lets them write now.
    /// Returns the round's number.
    pub(crate) async fn round(&mut self) -> usize {
        self.n += 1;
        let n = self.n;
        for net in self.nets() {
            if !self.can_write(net) {
                continue;
            }
            let who = self.peer(net).sender();
            let text = format!("{who}-{n:03}");
            // Stamped before it is written: latency includes the writing.
            let at = now_ms();
            self.peer(net).write(&text).await;
            self.wrote_at.insert(text.clone(), at);
            self.wrote.entry(who).or_default().push(text);
        }
        let text = format!("{API}-{n:03}");
        let at = now_ms();
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
        self.wrote_at.insert(text.clone(), at);
        self.wrote.entry(API).or_default().push(text);
        n
    }

    /// Rounds every `every` for `total` (the first at once).
    pub(crate) async fn rounds_for(&mut self, total: Duration, every: Duration) {
        let started = Instant::now();
        while started.elapsed() < total {
            let next = Instant::now() + every;
            self.round().await;
            tokio::time::sleep_until(next.into()).await;
        }
    }

    /// The fault-free phase latency is compared with: two rounds to warm
    /// up (logins, first syncs), then a round every 2 s for 20 s, all
    /// delivered. Returns its rounds.
    pub(crate) async fn baseline(&mut self) -> std::ops::RangeInclusive<usize> {
        self.round().await;
        self.round().await;
        self.until_caught_up("the warm-up rounds everywhere").await;
        let first = self.n + 1;
        self.rounds_for(Duration::from_secs(20), Duration::from_secs(2))
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
        for net in self.nets() {
            let posted = self.peer(net).posted().await;
            out.insert(
                self.dest(net),
                posted
                    .into_iter()
                    .map(|p| (strip(&p.text), p.at_ms))
                    .collect(),
            );
        }
        out.insert(
            BOT_DESTS[0],
            self.ws
                .all()
                .iter()
                .filter(|e| e["type"] == "message")
                .filter_map(|e| Some((e["text"].as_str()?.to_owned(), e["_at_ms"].as_u64()?)))
                .collect(),
        );
        out.insert(
            BOT_DESTS[1],
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
        let senders = self.senders();
        got.iter().all(|(dest, texts)| {
            senders.iter().filter(|s| !self.own(dest, s)).all(|s| {
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

    /// The destinations that may repeat a message whose answer was lost.
    pub(crate) fn lossy(&self) -> Vec<&'static str> {
        self.nets()
            .into_iter()
            .filter(|n| self.peer(*n).may_repeat())
            .map(|n| self.dest(n))
            .collect()
    }

    /// Every destination: each other sender's messages, in the order they
    /// were written, none missing. A destination in `lossy` (a network
    /// without an idempotency key) may show a message twice when the
    /// network performed a send whose answer was lost; such repeats are
    /// counted, and returned per destination. Anywhere else a repeat fails.
    pub(crate) async fn assert_delivered(&self, lossy: &[&str]) -> BTreeMap<&'static str, usize> {
        let got = self.received().await;
        let mut repeats = BTreeMap::new();
        for (dest, texts) in &got {
            for s in self.senders().iter().filter(|s| !self.own(dest, s)) {
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
        self.peer(net)
            .posted()
            .await
            .into_iter()
            .map(|p| p.text)
            .filter(|t| t.contains("⚠️") || t.contains("✅"))
            .collect()
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
                if !in_rounds || !senders.contains(&who) || self.own(dest, who) {
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
        let mut senders: Vec<&str> = healthy.iter().map(|n| self.peer(*n).sender()).collect();
        senders.push(API);
        let mut dests: Vec<&str> = healthy.iter().map(|n| self.dest(*n)).collect();
        dests.extend(BOT_DESTS);
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

    /// Puts `nets` in `fault`; refusing and hanging ones count as down
    /// (their people may not be able to write).
    pub(crate) async fn fault(&mut self, nets: &[Net], fault: Fault) {
        for net in nets {
            self.peer(*net).fault(fault).await;
            match fault {
                Fault::Refuse | Fault::Hang => {
                    self.down.insert(*net);
                }
                Fault::None => {
                    self.down.remove(net);
                }
                Fault::Slow(_) | Fault::RateLimit { .. } => {}
            }
        }
    }

    /// Makes `nets` refuse connections.
    pub(crate) async fn refuse(&mut self, nets: &[Net]) {
        self.fault(nets, Fault::Refuse).await;
    }

    /// Makes `nets` accept connections and never answer.
    pub(crate) async fn hang(&mut self, nets: &[Net]) {
        self.fault(nets, Fault::Hang).await;
    }

    /// Ends every fault of `nets`.
    pub(crate) async fn restore(&mut self, nets: &[Net]) {
        self.fault(nets, Fault::None).await;
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

pub(crate) fn notices(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["type"] == "notice")
        .filter_map(|e| e["text"].as_str().map(str::to_owned))
        .collect()
}
