//! Scenario 11: several instances on one PostgreSQL (`[cluster]`, issue
//! 25). 300 gateways, each the bot API and one webhook of its own (its
//! lane: a community and the network it is bridged to), on 1, 2 and 3
//! instances sharing one database. The bench posts through every instance
//! (connection `c` to instance `c % n`, as a load balancer spreads them)
//! and receives every webhook.
//!
//! Per instance count: an unthrottled run (throughput end to end, post →
//! webhook latency, the CPU of all instances per message) and, with two or
//! three, a paced run in which the instance holding the most lanes is
//! killed with SIGKILL: the takeover time is from the kill until every
//! lease it held is held by a live instance (read from the lease table),
//! and nothing acknowledged may be lost. Order is judged per producer
//! connection (each waits for its answer before posting again); event ids
//! of concurrent posts to two instances need not follow delivery order.

use std::time::{Duration, Instant};

use anyhow::bail;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use super::{spawn, stop, us_per, Ctx, Scenario};
use crate::consume::Tracker;
use crate::hook::Hooks;
use crate::load::{self, Load, Route};
use crate::report::{ms, now_ns, Latency, Table};
use crate::server::{psql_rows, Backend, HookSpec, Server, Setup, Spec, PRODUCER};

/// Gateways, each with one webhook.
const GATEWAYS: usize = 300;

/// `[cluster] takeover_after`: the default.
const TAKEOVER_AFTER_S: u64 = 15;

/// Scenario 11.
pub struct Cluster;

/// One run's figures.
struct Run {
    row: Vec<String>,
    per_s: f64,
    lost: u64,
    reordered: u64,
    takeover: Option<Duration>,
}

impl Scenario for Cluster {
    fn number(&self) -> u32 {
        11
    }

    fn title(&self) -> &'static str {
        "cluster: 1, 2 and 3 instances on one PostgreSQL, 300 gateways, kill -9"
    }

    fn run<'a>(&'a self, ctx: &'a Ctx) -> BoxFuture<'a, anyhow::Result<Vec<Table>>> {
        async move {
            let mut t = Table::new(
                format!("Scenario 11: {}", self.title()),
                &[
                    "instances",
                    "run",
                    "messages",
                    "delivered",
                    "msg/s",
                    "p50 ms",
                    "p99 ms",
                    "CPU µs/msg (all)",
                    "lost",
                    "dup",
                    "reordered",
                    "takeover",
                ],
            );
            let Some(base) = ctx.backends.iter().find_map(|b| match b {
                Backend::Postgres(url) => Some(url.clone()),
                Backend::Sqlite => None,
            }) else {
                t.notes
                    .push("Skipped: a cluster needs PostgreSQL (--postgres URL).".into());
                return Ok(vec![t]);
            };
            let mut rates = Vec::new();
            let (mut lost, mut reordered) = (0, 0);
            let mut takeovers = Vec::new();
            for n in [1, 2, 3] {
                eprintln!("  {n} instance(s), unthrottled…");
                let run = once(ctx, &base, n, None).await?;
                rates.push((n, run.per_s));
                lost += run.lost;
                reordered += run.reordered;
                t.row(run.row);
                if n > 1 {
                    eprintln!("  {n} instances, paced, kill -9 of the busiest…");
                    let run = once(ctx, &base, n, Some(ctx.pick(300.0, 150.0))).await?;
                    lost += run.lost;
                    reordered += run.reordered;
                    takeovers.extend(run.takeover);
                    t.row(run.row);
                }
            }
            let one = rates[0].1.max(1e-9);
            let three = rates[2].1;
            ctx.check(
                "s11: 3 instances ≥ 1.8× one instance's msg/s",
                format!("{:.2}× ({three:.0} vs {one:.0} msg/s)", three / one),
                // A smoke run measures nothing.
                (!ctx.quick).then_some(three >= 1.8 * one),
            );
            ctx.check(
                "s11: nothing acknowledged lost, nothing reordered (every run)",
                format!("{lost} lost, {reordered} reordered"),
                Some(lost == 0 && reordered == 0),
            );
            let worst = takeovers.iter().max().copied().unwrap_or_default();
            ctx.check(
                format!("s11: takeover after kill -9 within {TAKEOVER_AFTER_S} s"),
                format!("{:.1} s at worst", worst.as_secs_f64()),
                Some(!takeovers.is_empty() && worst <= Duration::from_secs(TAKEOVER_AFTER_S)),
            );
            t.notes.push(format!(
                "PostgreSQL, one database shared by the instances ([cluster], takeover_after \
                 {TAKEOVER_AFTER_S} s); {GATEWAYS} gateways, each the bot API and one webhook to \
                 the in-bench receiver (its own lane). Native posts, {} connections spread over \
                 the instances. Unthrottled: as fast as answers come. kill -9: paced, the \
                 instance holding the most lanes killed at 40% of the run; posts in flight to it \
                 fail (counted failed, not expected), the rest move to the other instances; \
                 takeover: kill → every lease it held held by a live instance. CPU: all \
                 instances' processes from the first post to the last delivery (PostgreSQL's \
                 not included). Latency: post → webhook receipt. Order: per producer \
                 connection.",
                ctx.in_flight
            ));
            Ok(vec![t])
        }
        .boxed()
    }
}

/// One run on `n` fresh instances and a fresh database; with `kill_rate`
/// paced at that many msg/s with a kill -9.
async fn once(ctx: &Ctx, base: &str, n: usize, kill_rate: Option<f64>) -> anyhow::Result<Run> {
    let gateways: Vec<String> = (0..GATEWAYS).map(|k| format!("g{k}")).collect();
    let total = match kill_rate {
        None => ctx.pick(20_000, 3_000),
        Some(rate) => (rate * ctx.pick(30.0, 16.0)) as u64,
    };
    let hooks = Hooks::start(total).await?;
    hooks.per_connection();
    let spec = |instance: usize, database: Option<String>| {
        Spec {
        gateways: gateways.clone(),
        hooks: (0..GATEWAYS)
            .map(|k| HookSpec {
                name: format!("h{k}"),
                addr: hooks.addr,
                gateways: Some(vec![format!("g{k}")]),
                batch: None,
            })
            .collect(),
        extra: format!(
            "\n[cluster]\nenabled = true\ninstance = \"i{instance}\"\ntakeover_after = \"{TAKEOVER_AFTER_S}s\"\n"
        ),
        database,
        ..Spec::default()
    }
    };
    let first = Setup::new(
        &ctx.bin,
        &ctx.tmp,
        &Backend::Postgres(base.to_owned()),
        &spec(0, None),
    )?;
    let url = first.database_url().to_owned();
    let mut setups = vec![first];
    for i in 1..n {
        setups.push(Setup::new(
            &ctx.bin,
            &ctx.tmp,
            &Backend::Postgres(base.to_owned()),
            &spec(i, Some(url.clone())),
        )?);
    }
    let result = drive(ctx, &setups, &url, &hooks, n, total, kill_rate).await;
    hooks.stop().await;
    // The first made the database; it drops it last.
    let mut setups = setups;
    let first = setups.remove(0);
    for s in setups {
        s.cleanup();
    }
    first.cleanup();
    result
}

async fn drive(
    ctx: &Ctx,
    setups: &[Setup],
    url: &str,
    hooks: &Hooks,
    n: usize,
    total: u64,
    kill_rate: Option<f64>,
) -> anyhow::Result<Run> {
    let mut servers: Vec<Option<Server>> = Vec::new();
    for s in setups {
        servers.push(Some(spawn(s).await?));
    }
    settled(url, n, Duration::from_secs(60)).await?;
    let addrs: Vec<std::net::SocketAddr> = setups.iter().map(|s| s.api).collect();
    let cpu0: Vec<Duration> = servers
        .iter()
        .flatten()
        .map(Server::cpu)
        .collect::<anyhow::Result<_>>()?;
    let t0 = now_ns();
    let load = Load {
        route: Route::Native,
        gateways: (0..GATEWAYS).map(|k| format!("g{k}")).collect(),
        total,
        conns: ctx.in_flight,
        rate: kill_rate,
        token: PRODUCER,
    };
    let producing = tokio::spawn({
        let addrs = addrs.clone();
        async move { load::produce_spread(&addrs, load).await }
    });
    let mut takeover = None;
    let mut killed_cpu = Duration::ZERO;
    if let Some(rate) = kill_rate {
        tokio::time::sleep(Duration::from_secs_f64(total as f64 / rate * 0.4)).await;
        let victim = busiest(url)?;
        let i: usize = victim.trim_start_matches('i').parse()?;
        let server = servers[i].take().expect("running");
        killed_cpu = server.cpu()? - cpu0[i];
        let at = Instant::now();
        tokio::task::block_in_place(|| server.kill9());
        eprintln!("  killed {victim}");
        takeover = Some(taken_over(url, &victim, at).await?);
    }
    let sent = producing.await?;
    hooks
        .state
        .progress
        .wait_for(sent.ok, Duration::from_secs(30))
        .await;
    let mut cpu = killed_cpu;
    for (i, s) in servers.iter().enumerate() {
        if let Some(s) = s {
            cpu += s.cpu()? - cpu0[i];
        }
    }
    for s in servers.into_iter().flatten() {
        stop(s).await;
    }
    if let Some(e) = &sent.first_error {
        eprintln!("  {} failed posts; first: {e}", sent.failed.len());
    }
    let failed: std::collections::HashSet<u64> = sent.failed.iter().copied().collect();
    let trackers = hooks.take();
    let mut all = Tracker::new(total);
    let mut lost = 0;
    for k in 0..GATEWAYS {
        let mine = (0..total)
            .filter(|s| usize::try_from(*s).unwrap_or(0) % GATEWAYS == k && !failed.contains(s));
        match trackers.get(&format!("h{k}")) {
            Some(t) => lost += t.lost(mine),
            None => lost += mine.count() as u64,
        }
    }
    for (_, t) in trackers {
        all.merge(t);
    }
    let mut lat: Vec<u64> = all
        .samples
        .iter()
        .map(|(s, r)| r.saturating_sub(*s))
        .collect();
    let lat = Latency::of(&mut lat);
    let wall = (all.last_ns().max(t0) - t0) as f64 / 1e9;
    let per_s = all.unique as f64 / wall.max(1e-9);
    Ok(Run {
        row: vec![
            n.to_string(),
            match kill_rate {
                None => "unthrottled".into(),
                Some(r) => format!("{r:.0} msg/s, kill -9"),
            },
            sent.ok.to_string(),
            all.unique.to_string(),
            format!("{per_s:.0}"),
            ms(lat.p50, lat.n),
            ms(lat.p99, lat.n),
            format!("{:.1}", us_per(cpu, all.unique)),
            lost.to_string(),
            all.dup.to_string(),
            all.out_of_order.to_string(),
            takeover.map_or_else(|| "-".into(), |d| format!("{:.1} s", d.as_secs_f64())),
        ],
        per_s,
        lost,
        reordered: all.out_of_order,
        takeover,
    })
}

/// Waits until every lane is held by a live instance and each of the `n`
/// instances holds some.
async fn settled(url: &str, n: usize, within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        // The bot API accepts before the store is open (start-up is
        // measured to the first accept), so the tables may not exist yet.
        let rows = match tokio::task::block_in_place(|| {
            psql_rows(
                url,
                "SELECT holder, COUNT(*) FROM leases WHERE kind = 'lane' AND run_id IS NOT NULL \
                 AND expires_ms > CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT) \
                 GROUP BY holder",
            )
        }) {
            Ok(rows) => rows,
            Err(e) if Instant::now() < deadline && e.to_string().contains("does not exist") => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        let held: usize = rows
            .iter()
            .filter_map(|r| r.get(1)?.parse::<usize>().ok())
            .sum();
        if rows.len() == n && held >= GATEWAYS {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the lanes did not settle over {n} instances: {rows:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The instance holding the most lanes.
fn busiest(url: &str) -> anyhow::Result<String> {
    let rows = tokio::task::block_in_place(|| {
        psql_rows(
            url,
            "SELECT holder FROM leases WHERE kind = 'lane' AND run_id IS NOT NULL \
             GROUP BY holder ORDER BY COUNT(*) DESC LIMIT 1",
        )
    })?;
    rows.first()
        .and_then(|r| r.first())
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no instance holds lanes"))
}

/// Waits until no lease is held by `victim` any more and every lease of
/// an account or lane has a holder; returns the time since `killed`.
async fn taken_over(url: &str, victim: &str, killed: Instant) -> anyhow::Result<Duration> {
    let sql = format!(
        "SELECT COUNT(*) FROM leases WHERE kind <> 'task' AND (run_id IS NULL OR holder = '{victim}' \
         OR expires_ms < CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT))"
    );
    loop {
        let rows = tokio::task::block_in_place(|| psql_rows(url, &sql))?;
        if rows.first().and_then(|r| r.first()).map(String::as_str) == Some("0") {
            return Ok(killed.elapsed());
        }
        if killed.elapsed() > Duration::from_secs(120) {
            bail!("{victim}'s leases were not taken over within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
