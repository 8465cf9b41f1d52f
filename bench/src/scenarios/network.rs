//! What scenarios 7 and 8 share: a network adapter with the hub around it,
//! both ways, against the network's fake running in the bench process. 50
//! gateways, each the bot API and one group of the fake. Out (bot API →
//! network): native posts with 32 in flight, round-robin over the
//! gateways, until every message reached the fake. In (network → bot API):
//! messages written by users into the fake's groups round-robin, read by
//! one WebSocket consumer of all 50 gateways. A network is a [`Fake`], and
//! its scenario a [`Network`] of it.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use super::relay::{Measured, Relay, RelayOutcome, COLUMNS};
use super::{spawn, stop, Ctx, Scenario};
use crate::consume::{self, Progress, Stream, Tracker};
use crate::hook::Hooks;
use crate::load::{self, marker, parse_marker, Load, Route, Sent};
use crate::report::{now_ns, Table};
use crate::server::{Backend, HookSpec, Meter, Setup, Spec, CONSUMER, PRODUCER};

/// Gateways, each with one group of the fake.
pub const GROUPS: usize = 50;

/// How long nothing new may arrive before a run gives up waiting.
const IDLE: Duration = Duration::from_secs(10);

/// A network's in-process fake, as [`Network`] drives it.
pub trait Fake: Send + Sync + Sized + 'static {
    /// The network as the rows name it ("Telegram").
    const NAME: &'static str;
    /// The scenario's number.
    const NUMBER: u32;
    /// The scenario's title.
    const TITLE: &'static str;
    /// The comparison rows the table has.
    const EXTRAS: Extras;

    /// The note under the table, for runs of `total` messages.
    fn notes(ctx: &Ctx, total: u64) -> String;

    /// Starts the fake with [`GROUPS`] groups.
    fn start() -> BoxFuture<'static, anyhow::Result<Self>>;

    /// The config: `gateways` with group `k` a member of gateway `k`, and
    /// the account's section.
    fn spec(&self, gateways: Vec<String>) -> Spec;

    /// Waits until the adapter receives from the fake.
    fn ready(&self) -> BoxFuture<'_, anyhow::Result<()>>;

    /// A user writes `text` into group `k`.
    fn inject(&self, k: usize, text: &str);

    /// Counts what reached the groups into `progress` every 5 ms, for
    /// [`Progress::wait_for`] (runs until aborted).
    fn watch(self: Arc<Self>, progress: Arc<Progress>) -> BoxFuture<'static, ()>;

    /// What the groups hold at the end, for [`judge`].
    fn collect(&self, total: u64) -> Tracker;

    /// Stops it.
    fn stop(self) -> BoxFuture<'static, ()>;
}

/// Which way the messages go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Posted through the bot API, sent into the fake's groups.
    Out,
    /// Injected into the fake's groups, read from the bot API.
    In,
    /// For comparison: posted through the bot API, delivered to one webhook
    /// per gateway instead of a group (the same outbox, another sender).
    ToWebhooks,
}

impl Direction {
    fn name(self, net: &str) -> String {
        match self {
            Self::Out => format!("bot API → {net}"),
            Self::In => format!("{net} → bot API"),
            Self::ToWebhooks => format!("bot API → {GROUPS} webhooks"),
        }
    }

    fn tag(self, net: &str) -> String {
        match self {
            Self::Out => format!("to-{}", net.to_lowercase()),
            Self::In => format!("from-{}", net.to_lowercase()),
            Self::ToWebhooks => "to-webhooks".into(),
        }
    }
}

/// What a table holds besides the network's two directions.
#[derive(Debug, Clone, Copy)]
pub struct Extras {
    /// Rows with one webhook per gateway instead of a group.
    pub webhooks: bool,
    /// Rows of scenario 2 with the same count.
    pub s2: bool,
}

/// The scenario of a network: per store, unthrottled then at 1,000 msg/s,
/// both directions (and the [`Extras`]); records the no-faults check of
/// the network's rows.
pub struct Network<F>(PhantomData<fn() -> F>);

impl<F> Network<F> {
    /// The scenario of `F`.
    pub fn new() -> Self {
        Self(PhantomData)
    }
}

impl<F: Fake> Scenario for Network<F> {
    fn number(&self) -> u32 {
        F::NUMBER
    }

    fn title(&self) -> &'static str {
        F::TITLE
    }

    fn run<'a>(&'a self, ctx: &'a Ctx) -> BoxFuture<'a, anyhow::Result<Vec<Table>>> {
        async move {
            let total = ctx.pick(10_000, 2_000);
            let mut t = table::<F>(ctx, total).await?;
            t.notes.push(F::notes(ctx, total));
            Ok(vec![t])
        }
        .boxed()
    }
}

async fn table<F: Fake>(ctx: &Ctx, total: u64) -> anyhow::Result<Table> {
    let number = F::NUMBER;
    let extras = F::EXTRAS;
    let mut columns = COLUMNS;
    columns[1] = "direction";
    let mut t = Table::new(format!("Scenario {number}: {}", F::TITLE), &columns);
    let mut dirs = vec![Direction::Out, Direction::In];
    if extras.webhooks {
        dirs.push(Direction::ToWebhooks);
    }
    for backend in &ctx.backends {
        let store = backend.name();
        let mut faults = 0;
        for rate in [None, Some(1000.0)] {
            let pace = rate.map_or_else(|| "unthrottled".into(), |r| format!("{r:.0} msg/s"));
            for &dir in &dirs {
                eprintln!(
                    "  {store}, {}, {pace}, {total} messages…",
                    dir.name(F::NAME)
                );
                let out = once::<F>(ctx, number, backend, dir, (total, rate)).await?;
                if dir != Direction::ToWebhooks {
                    faults += out.faults;
                }
                t.row(out.row);
            }
            if extras.s2 {
                eprintln!("  {store}, scenario 2 for comparison, {pace}, {total} messages…");
                let mut s2 = Relay::native_sse().once(ctx, backend, total, rate).await?;
                s2.row[1] = match rate {
                    None => "bot API → bot API (s2)".into(),
                    Some(r) => format!("bot API → bot API (s2), {r:.0} msg/s"),
                };
                t.row(s2.row);
            }
        }
        ctx.check(
            format!("s{number} {store}: nothing lost, duplicated or reordered (both directions)"),
            format!("{faults} faults"),
            Some(faults == 0),
        );
    }
    Ok(t)
}

/// One run on a fresh fake, server and database: `total` messages,
/// unthrottled or at `rate` msg/s.
async fn once<F: Fake>(
    ctx: &Ctx,
    number: u32,
    backend: &Backend,
    dir: Direction,
    (total, rate): (u64, Option<f64>),
) -> anyhow::Result<RelayOutcome> {
    let fake = Arc::new(F::start().await?);
    let gateways: Vec<String> = (0..GROUPS).map(|k| format!("g{k}")).collect();
    let (spec, hooks) = if dir == Direction::ToWebhooks {
        let hooks = Hooks::start(total).await?;
        let spec = Spec {
            hooks: (0..GROUPS)
                .map(|k| HookSpec {
                    name: format!("h{k}"),
                    addr: hooks.addr,
                    gateways: Some(vec![format!("g{k}")]),
                    batch: None,
                })
                .collect(),
            gateways,
            ..Spec::default()
        };
        (spec, Some(hooks))
    } else {
        (fake.spec(gateways), None)
    };
    let setup = Setup::new(&ctx.bin, &ctx.tmp, backend, &spec)?;
    let result = drive(
        ctx,
        &setup,
        &spec.gateways,
        (&fake, hooks.as_ref()),
        dir,
        (total, rate),
    )
    .await;
    setup.cleanup();
    if let Some(hooks) = hooks {
        hooks.stop().await;
    }
    if let Ok(fake) = Arc::try_unwrap(fake) {
        fake.stop().await;
    }
    let (m, log) = result?;
    let rate_tag = rate.map_or_else(|| "unthrottled".into(), |r| format!("{r:.0}"));
    ctx.save_samples(
        &format!(
            "s{number}-{}-{}-{rate_tag}",
            backend.name(),
            dir.tag(F::NAME)
        ),
        &m.seen,
    );
    let load = match rate {
        None => dir.name(F::NAME),
        Some(r) => format!("{}, {r:.0} msg/s", dir.name(F::NAME)),
    };
    let out = RelayOutcome::of(backend.name(), load, &m);
    if out.faults > 0 {
        eprintln!("  faults in this run; the server's log ended with:\n{log}");
    }
    Ok(out)
}

/// One run on a started setup. Returns the figures and the end of the
/// server's log.
async fn drive<F: Fake>(
    ctx: &Ctx,
    setup: &Setup,
    gateways: &[String],
    (fake, hooks): (&Arc<F>, Option<&Hooks>),
    dir: Direction,
    (total, rate): (u64, Option<f64>),
) -> anyhow::Result<(Measured, String)> {
    let mut server = spawn(setup).await?;
    if dir != Direction::ToWebhooks {
        fake.ready().await?;
    }
    tokio::time::sleep(ctx.settle()).await;
    let idle = server.mem()?;
    let (sent, seen, used) = if dir == Direction::In {
        let consumer = consume::connect(
            Stream::WebSocket,
            server.api,
            CONSUMER,
            &gateways.join(","),
            total,
        )
        .await?;
        let meter = Meter::start(&server)?;
        let sent = inject(&**fake, total, rate).await;
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
        let watcher =
            (dir == Direction::Out).then(|| tokio::spawn(fake.clone().watch(stored.clone())));
        let arrived = hooks.map_or(&*stored, |h| &h.state.progress);
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
            // Gone once awaited: the fake is ours alone again.
            let _ = w.await;
        }
        let seen = match hooks {
            Some(hooks) => hooks
                .take()
                .into_values()
                .fold(Tracker::new(total), |mut all, one| {
                    all.merge(one);
                    all
                }),
            None => fake.collect(total),
        };
        (sent, seen, used)
    };
    let m = Measured {
        total,
        peak: server.mem()?,
        sent,
        seen,
        used,
        idle,
    };
    server.check_alive()?;
    let log = server.log_tail();
    let stopping = Instant::now();
    stop(server).await;
    let took = stopping.elapsed();
    let late: Vec<String> = setup
        .log()
        .lines()
        .filter(|l| l.contains("did not finish in time"))
        .map(str::to_owned)
        .collect();
    if took > Duration::from_secs(1) || !late.is_empty() {
        eprintln!(
            "  the server took {took:.1?} to stop after SIGTERM{}",
            late.iter().fold(String::new(), |s, l| s + "\n    " + l)
        );
    }
    Ok((m, log))
}

/// Users post message `seq` into group `seq % 50`, as fast as the fake
/// takes them or paced at `rate` msg/s. The text carries the marker, with
/// the group as the "connection": each group's messages must arrive in
/// the order they were written.
async fn inject(fake: &impl Fake, total: u64, rate: Option<f64>) -> Sent {
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
        let k = group_of(seq);
        fake.inject(k, &marker(k, seq, now_ns()));
        sent.ok += 1;
        sent.last_ns = now_ns();
    }
    sent
}

/// The group message `seq` goes to, either way.
pub fn group_of(seq: u64) -> usize {
    usize::try_from(seq).unwrap_or(0) % GROUPS
}

/// Judges what the groups hold: `groups[k]` is group `k`'s messages in
/// their order there, as (text, id, arrival on the bench clock); an id,
/// when given, must increase. Lost and dup per message, order per group; a
/// message in another gateway's group is lost from its own.
pub fn judge(total: u64, groups: Vec<Vec<(String, Option<i64>, u64)>>) -> Tracker {
    let mut all = Tracker::new(total);
    let mut misrouted = 0;
    for (k, messages) in groups.into_iter().enumerate() {
        let mut group = Tracker::new(total);
        for (text, id, at) in messages {
            match parse_marker(&text) {
                Some((_, seq, _)) if group_of(seq) != k => misrouted += 1,
                _ => {
                    group.record(&text, id, at);
                }
            }
        }
        all.merge(group);
    }
    if misrouted > 0 {
        eprintln!("  {misrouted} messages landed in the wrong group");
    }
    all
}
