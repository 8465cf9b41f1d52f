//! Scenario 7: Telegram, against the in-process fake of the Bot API
//! (`switchboard_telegram::fake`), with the adapter's pacing and the fake's
//! flood limits off. 50 gateways, each the bot API and one Telegram group.
//! Bot API → Telegram: native posts with 32 in flight, round-robin over the
//! gateways, until every message is stored in the fake. Telegram → bot API:
//! messages injected into the fake round-robin over the groups, read by one
//! WebSocket consumer of all 50 gateways. For comparison, the outbound load
//! also goes to one webhook per gateway instead of a group, and scenario
//! 2's relay runs with the same count.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use serde_json::{json, Value};
use switchboard_telegram::fake::{FakeOptions, FakeTelegram};

use super::relay::{Measured, Relay, RelayOutcome, COLUMNS};
use super::{spawn, stop, Ctx, Scenario};
use crate::consume::{self, Progress, Stream, Tracker};
use crate::hook::Hooks;
use crate::load::{self, marker, parse_marker, Load, Route, Sent};
use crate::report::{now_ns, ns_at, Table};
use crate::server::{Backend, HookSpec, Meter, Setup, Spec, CONSUMER, PRODUCER};

/// Scenario 7.
pub struct Telegram;

/// Gateways, each with one Telegram group.
const GROUPS: usize = 50;

/// How long nothing new may arrive before a run gives up waiting.
const IDLE: Duration = Duration::from_secs(10);

/// The Telegram account in the generated config.
const ACCOUNT: &str = "telegram.main";

/// The chat id of group `k` (supergroups: -100…).
fn chat_id(k: usize) -> i64 {
    -1_001_000_000_001 - k as i64
}

/// Which way the messages go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// Posted through the bot API, stored in the fake's groups.
    ToTelegram,
    /// Injected into the fake's groups, read from the bot API.
    FromTelegram,
    /// For comparison: posted through the bot API, delivered to one webhook
    /// per gateway instead of a group (the same outbox, another sender).
    ToWebhooks,
}

impl Direction {
    fn name(self) -> &'static str {
        match self {
            Self::ToTelegram => "bot API → Telegram",
            Self::FromTelegram => "Telegram → bot API",
            Self::ToWebhooks => "bot API → 50 webhooks",
        }
    }

    fn tag(self) -> &'static str {
        match self {
            Self::ToTelegram => "to-telegram",
            Self::FromTelegram => "from-telegram",
            Self::ToWebhooks => "to-webhooks",
        }
    }
}

/// What the server talks to in one run: the fake with its groups, and the
/// webhook receiver when the run is [`Direction::ToWebhooks`].
struct Peers {
    tg: Arc<FakeTelegram>,
    hooks: Option<Hooks>,
}

impl Telegram {
    async fn once(
        &self,
        ctx: &Ctx,
        backend: &Backend,
        dir: Direction,
        total: u64,
        rate: Option<f64>,
    ) -> anyhow::Result<RelayOutcome> {
        let tg = Arc::new(
            FakeTelegram::start(FakeOptions {
                per_chat_per_minute: None,
                per_bot_per_second: None,
                ..FakeOptions::default()
            })
            .await?,
        );
        for k in 0..GROUPS {
            tg.add_chat(chat_id(k), "supergroup", &format!("Group {k}"), false);
        }
        let gateways: Vec<String> = (0..GROUPS).map(|k| format!("g{k}")).collect();
        let (spec, hooks) = if dir == Direction::ToWebhooks {
            let hooks = Hooks::start(total).await?;
            let spec = Spec {
                hooks: (0..GROUPS)
                    .map(|k| HookSpec {
                        name: format!("h{k}"),
                        addr: hooks.addr,
                        gateways: Some(vec![format!("g{k}")]),
                    })
                    .collect(),
                gateways,
                ..Spec::default()
            };
            (spec, Some(hooks))
        } else {
            let spec = Spec {
                members: (0..GROUPS)
                    .map(|k| (format!("g{k}"), ACCOUNT.into(), chat_id(k).to_string()))
                    .collect(),
                extra: format!(
                    "[{ACCOUNT}]\ntoken = \"{}\"\napi_url = \"{}\"\npoll_timeout = \"2s\"\n\
                     pace_per_chat = \"0s\"\npace_per_bot = \"0s\"\n",
                    tg.token(),
                    tg.api_url()
                ),
                gateways,
                ..Spec::default()
            };
            (spec, None)
        };
        let setup = Setup::new(&ctx.bin, &ctx.tmp, backend, &spec)?;
        let peers = Peers { tg, hooks };
        let result = self
            .drive(ctx, &setup, &spec.gateways, &peers, dir, (total, rate))
            .await;
        setup.cleanup();
        if let Some(hooks) = peers.hooks {
            hooks.stop().await;
        }
        if let Ok(tg) = Arc::try_unwrap(peers.tg) {
            tg.stop().await;
        }
        let (m, log) = result?;
        ctx.save_samples(
            &format!(
                "s7-{}-{}-{}",
                backend.name(),
                dir.tag(),
                rate.map_or_else(|| "unthrottled".into(), |r| format!("{r:.0}"))
            ),
            &m.seen,
        );
        let load = match rate {
            None => dir.name().to_owned(),
            Some(r) => format!("{}, {r:.0} msg/s", dir.name()),
        };
        let out = RelayOutcome::of(backend.name(), load, &m);
        if out.faults > 0 {
            eprintln!("  faults in this run; the server's log ended with:\n{log}");
        }
        Ok(out)
    }

    /// One run on a started setup: `total` messages, unthrottled or at
    /// `rate` msg/s. Returns the figures and the end of the server's log.
    async fn drive(
        &self,
        ctx: &Ctx,
        setup: &Setup,
        gateways: &[String],
        peers: &Peers,
        dir: Direction,
        (total, rate): (u64, Option<f64>),
    ) -> anyhow::Result<(Measured, String)> {
        let tg = &peers.tg;
        let mut server = spawn(setup).await?;
        if dir != Direction::ToWebhooks {
            polling(tg).await?;
        }
        tokio::time::sleep(ctx.settle()).await;
        let idle = server.mem()?;
        let (sent, seen, used) = if dir == Direction::FromTelegram {
            let consumer = consume::connect(
                Stream::WebSocket,
                server.api,
                CONSUMER,
                &gateways.join(","),
                total,
            )
            .await?;
            let meter = Meter::start(&server)?;
            let sent = inject(tg, total, rate).await;
            if rate.is_none() {
                eprintln!(
                    "  injected in {:.0} ms",
                    sent.last_ns.saturating_sub(sent.first_ns) as f64 / 1e6
                );
            }
            consumer.progress.wait_for(sent.ok, IDLE).await;
            let used = meter.read(&server)?;
            (sent, consumer.finish().await?, used)
        } else {
            let stored = Arc::new(Progress::default());
            let watcher = (dir == Direction::ToTelegram)
                .then(|| tokio::spawn(count_stored(tg.clone(), stored.clone())));
            let arrived = peers.hooks.as_ref().map_or(&*stored, |h| &h.state.progress);
            let meter = Meter::start(&server)?;
            let sent = load::produce(
                server.api,
                Load {
                    route: Route::Native,
                    gateways: gateways.to_vec(),
                    total,
                    conns: ctx.in_flight,
                    rate,
                    token: PRODUCER,
                },
            )
            .await;
            arrived.wait_for(sent.ok, IDLE).await;
            let used = meter.read(&server)?;
            if let Some(w) = watcher {
                w.abort();
            }
            let seen = match &peers.hooks {
                Some(hooks) => {
                    hooks
                        .take()
                        .into_values()
                        .fold(Tracker::new(total), |mut all, one| {
                            all.merge(one);
                            all
                        })
                }
                None => stored_in(tg, total),
            };
            (sent, seen, used)
        };
        let peak = server.mem()?;
        server.check_alive()?;
        let log = server.log_tail();
        stop(server).await;
        let m = Measured {
            total,
            sent,
            seen,
            used,
            idle,
            peak,
        };
        Ok((m, log))
    }
}

/// Waits until the adapter polls the fake (it has said hello with getMe).
async fn polling(tg: &FakeTelegram) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while tg.calls_to("getUpdates").is_empty() {
        if Instant::now() > deadline {
            bail!("the Telegram adapter did not poll the fake within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// Counts the messages stored in the groups every 5 ms, for
/// [`Progress::wait_for`]. Message ids count up from 1 in each chat, so one
/// lookup per group and new message does.
async fn count_stored(tg: Arc<FakeTelegram>, progress: Arc<Progress>) {
    let mut next = [1_i64; GROUPS];
    loop {
        for (k, id) in next.iter_mut().enumerate() {
            while tg.message(chat_id(k), *id).is_some() {
                *id += 1;
            }
        }
        let stored = next.iter().map(|id| id.unsigned_abs() - 1).sum();
        progress.unique.store(stored, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// What the groups hold, judged group by group (order: message ids), each
/// message timed by when the fake had read its sendMessage request (it
/// stores the message right after).
fn stored_in(tg: &FakeTelegram, total: u64) -> Tracker {
    let mut read_at: HashMap<u64, u64> = HashMap::new();
    for call in tg.calls_to("sendMessage") {
        if call.status != Some(200) {
            continue;
        }
        if let Some((_, seq, _)) = call.param("text").as_deref().and_then(parse_marker) {
            read_at.entry(seq).or_insert(ns_at(call.at));
        }
    }
    let mut all = Tracker::new(total);
    let mut misrouted = 0;
    for k in 0..GROUPS {
        let mut group = Tracker::new(total);
        for m in tg.messages(chat_id(k)) {
            let text = m["text"].as_str().unwrap_or_default();
            let at = match parse_marker(text) {
                // In another gateway's group: lost from its own.
                Some((_, seq, _)) if usize::try_from(seq).unwrap_or(0) % GROUPS != k => {
                    misrouted += 1;
                    continue;
                }
                Some((_, seq, _)) => read_at.get(&seq).copied().unwrap_or_else(now_ns),
                None => now_ns(),
            };
            group.record(text, m["message_id"].as_i64(), at);
        }
        all.merge(group);
    }
    if misrouted > 0 {
        eprintln!("  {misrouted} messages landed in the wrong group");
    }
    all
}

/// Users post message `seq` into group `seq % 50`, as fast as the fake
/// takes them or paced at `rate` msg/s. The text carries the marker, with
/// the group as the "connection": each group's messages must arrive in
/// the order they were written.
async fn inject(tg: &FakeTelegram, total: u64, rate: Option<f64>) -> Sent {
    let users: Vec<Value> = (0..GROUPS)
        .map(|k| FakeTelegram::user(1_000 + k as i64, &format!("User {k}"), None))
        .collect();
    let start = now_ns();
    let mut sent = Sent {
        first_ns: start,
        ..Sent::default()
    };
    for seq in 0..total {
        match rate {
            Some(rate) => sent.behind_ns = sent.behind_ns.max(load::pace(start, seq, rate).await),
            // Let the fake's server run between bursts.
            None if seq % 100 == 0 => tokio::task::yield_now().await,
            None => {}
        }
        let k = usize::try_from(seq).unwrap_or(0) % GROUPS;
        let text = marker(k, seq, now_ns());
        tg.inject_message(chat_id(k), &users[k], json!({ "text": text }));
        sent.ok += 1;
        sent.last_ns = now_ns();
    }
    sent
}

impl Scenario for Telegram {
    fn number(&self) -> u32 {
        7
    }

    fn title(&self) -> &'static str {
        "Telegram: bot API ↔ 50 groups of the fake Bot API, pacing and flood limits off"
    }

    fn run<'a>(&'a self, ctx: &'a Ctx) -> BoxFuture<'a, anyhow::Result<Vec<Table>>> {
        async move {
            let total = ctx.pick(10_000, 2_000);
            let mut columns = COLUMNS;
            columns[1] = "direction";
            let mut t = Table::new(format!("Scenario 7: {}", self.title()), &columns);
            for backend in &ctx.backends {
                let store = backend.name();
                let mut faults = 0;
                for rate in [None, Some(1000.0)] {
                    let pace =
                        rate.map_or_else(|| "unthrottled".into(), |r| format!("{r:.0} msg/s"));
                    for dir in [
                        Direction::ToTelegram,
                        Direction::FromTelegram,
                        Direction::ToWebhooks,
                    ] {
                        eprintln!("  {store}, {}, {pace}, {total} messages…", dir.name());
                        let out = self.once(ctx, backend, dir, total, rate).await?;
                        if dir != Direction::ToWebhooks {
                            faults += out.faults;
                        }
                        t.row(out.row);
                    }
                    eprintln!("  {store}, scenario 2 for comparison, {pace}, {total} messages…");
                    let mut s2 = Relay::native_sse().once(ctx, backend, total, rate).await?;
                    s2.row[1] = match rate {
                        None => "bot API → bot API (s2)".into(),
                        Some(r) => format!("bot API → bot API (s2), {r:.0} msg/s"),
                    };
                    t.row(s2.row);
                }
                ctx.check(
                    format!("s7 {store}: nothing lost, duplicated or reordered (both directions)"),
                    format!("{faults} faults"),
                    Some(faults == 0),
                );
            }
            t.notes.push(format!(
                "{total} messages per run, a fresh server, database and fake per run; {GROUPS} \
                 gateways, each the bot API and one Telegram supergroup of the fake \
                 (`switchboard_telegram::fake`, in the bench process, flood limits off); the \
                 adapter's `pace_per_chat` and `pace_per_bot` are 0, `poll_timeout` 2 s. \
                 bot API → Telegram: native posts ({} in flight) round-robin over the gateways; \
                 a message arrives when the fake has read its sendMessage request (`Call::at`, \
                 exact: the fake stores the message right after); order is judged per group \
                 (message ids), lost/dup per message. Telegram → bot API: users write \
                 round-robin into the groups (`inject_message`; unthrottled: as fast as the \
                 fake takes them, the whole burst in a few tens of ms, so latency is the wait \
                 in the backlog), one WebSocket consumer of all {GROUPS} gateways; latency: \
                 injection → frame received; ack p99 is '-' (no request). bot API → 50 \
                 webhooks: the outbound load to one webhook per gateway (the bench's \
                 receiver) instead of a group. `bench CPU` includes the fake. The `(s2)` rows \
                 are scenario 2 (native POST → SSE, one gateway) with the same count, same \
                 session. The check counts the Telegram rows.",
                ctx.in_flight,
            ));
            Ok(vec![t])
        }
        .boxed()
    }
}
