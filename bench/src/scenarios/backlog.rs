//! Scenario 12: a webhook backlog drains. The webhook's receiver refuses
//! connections while 10,000 messages are posted through the bot API; then
//! it comes up and the backlog drains, once one delivery per POST (as
//! before issue 26) and once with `batch` set. Measured: the drain rate
//! from the first delivery to the last, the POSTs it took, the CPU of
//! switchboard per delivery, and that every message came once, in order.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use super::{spawn, stop, us_per, Ctx, Scenario};
use crate::hook::Hooks;
use crate::load::{self, Load, Route};
use crate::report::{now_ns, Table};
use crate::server::{Backend, HookSpec, Setup, Spec, PRODUCER};

/// Scenario 12.
pub struct Backlog;

/// One drain's figures.
struct Drain {
    sent: u64,
    delivered: u64,
    lost: u64,
    dup: u64,
    out_of_order: u64,
    requests: u64,
    /// From the receiver coming up to the first delivery (the lane's
    /// backoff while it was down).
    first_after: Duration,
    /// From the first delivery to the last.
    drain: Duration,
    cpu: Duration,
    /// Store transactions committed during the drain, and the writer
    /// commands they held (`switchboard_commit_batch` on `/metrics`).
    commits: f64,
    commands: f64,
}

impl Drain {
    fn rate(&self) -> f64 {
        // n deliveries span n - 1 gaps from the first to the last.
        self.delivered.saturating_sub(1) as f64 / self.drain.as_secs_f64().max(1e-9)
    }
}

impl Backlog {
    /// `total` messages posted while `lanes` webhooks (each its own lane,
    /// each getting every message) are down, then drained.
    async fn once(
        &self,
        ctx: &Ctx,
        total: u64,
        lanes: usize,
        batch: Option<usize>,
    ) -> anyhow::Result<Drain> {
        let mut hooks = Hooks::start(total).await?;
        let spec = Spec {
            gateways: vec!["g0".into()],
            hooks: (0..lanes)
                .map(|i| HookSpec {
                    name: format!("hook{i}"),
                    addr: hooks.addr,
                    gateways: None,
                    batch,
                })
                .collect(),
            ..Spec::default()
        };
        let setup = Setup::new(&ctx.bin, &ctx.tmp, &Backend::Sqlite, &spec)?;
        let result = async {
            let mut server = spawn(&setup).await?;
            tokio::time::sleep(ctx.settle()).await;
            hooks.refuse().await;
            let sent = load::produce(
                server.api,
                Load {
                    route: Route::Native,
                    gateways: vec!["g0".into()],
                    total,
                    conns: 8,
                    rate: None,
                    token: PRODUCER,
                },
            )
            .await;
            if let Some(e) = &sent.first_error {
                eprintln!("  {} failed posts; first: {e}", sent.failed.len());
            }
            // Every acknowledged post is a committed outbox row: the
            // backlog is all there before the receiver comes up.
            let expected = sent.ok * lanes as u64;
            let before = commits(setup.admin).await?;
            let cpu0 = server.cpu()?;
            let up = now_ns();
            hooks.resume().await?;
            hooks
                .state
                .progress
                .wait_for(expected, Duration::from_secs(30))
                .await;
            let cpu = server.cpu()? - cpu0;
            // The last rows' sent-marking commits just after their
            // delivery: let it land before reading the counters.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let after = commits(setup.admin).await?;
            server.check_alive()?;
            stop(server).await;
            let failed: HashSet<u64> = sent.failed.iter().copied().collect();
            let trackers = hooks.take();
            let mut d = Drain {
                sent: expected,
                delivered: 0,
                lost: 0,
                dup: 0,
                out_of_order: 0,
                requests: hooks.state.requests.load(Ordering::Relaxed),
                first_after: Duration::ZERO,
                drain: Duration::ZERO,
                cpu,
                commits: after.0 - before.0,
                commands: after.1 - before.1,
            };
            let (mut first, mut last) = (u64::MAX, 0);
            for i in 0..lanes {
                let expected = (0..total).filter(|s| !failed.contains(s));
                let Some(hook) = trackers.get(&format!("hook{i}")) else {
                    d.lost += expected.count() as u64;
                    continue;
                };
                d.delivered += hook.unique;
                d.lost += hook.lost(expected);
                d.dup += hook.dup;
                d.out_of_order += hook.out_of_order;
                for (_, r) in &hook.samples {
                    first = first.min(*r);
                    last = last.max(*r);
                }
            }
            if first <= last {
                d.first_after = Duration::from_nanos(first.saturating_sub(up));
                d.drain = Duration::from_nanos(last - first);
            }
            Ok::<_, anyhow::Error>(d)
        }
        .await;
        hooks.stop().await;
        setup.cleanup();
        result
    }
}

/// `switchboard_commit_batch`'s count and sum: store transactions so far,
/// and the writer commands they held.
async fn commits(admin: std::net::SocketAddr) -> anyhow::Result<(f64, f64)> {
    let text = reqwest::get(format!("http://{admin}/metrics"))
        .await?
        .text()
        .await?;
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or(0.0)
    };
    Ok((
        value("switchboard_commit_batch_count"),
        value("switchboard_commit_batch_sum"),
    ))
}

impl Scenario for Backlog {
    fn number(&self) -> u32 {
        12
    }

    fn title(&self) -> &'static str {
        "webhook backlog drain: 10,000 messages waiting, one per POST and in batches"
    }

    fn run<'a>(&'a self, ctx: &'a Ctx) -> BoxFuture<'a, anyhow::Result<Vec<Table>>> {
        async move {
            let total: u64 = ctx.pick(10_000, 2_000);
            let lanes = 20;
            let mut t = Table::new(
                format!("Scenario 12: {}", self.title()),
                &[
                    "webhooks",
                    "batch",
                    "backlog",
                    "delivered",
                    "lost",
                    "dup",
                    "out of order",
                    "POSTs",
                    "first delivery after up ms",
                    "drain s",
                    "drain msg/s",
                    "CPU µs/msg",
                    "commits",
                    "writer commands / commit",
                ],
            );
            let runs = [
                (1, None, total),
                (1, Some(100), total),
                (1, Some(1000), total),
                // The same deliveries over 20 lanes, one per POST: do the
                // lanes' sent-markings share commits?
                (lanes, None, total / lanes as u64),
            ];
            for (hooks, batch, total) in runs {
                let name = batch.map_or_else(|| "off".to_owned(), |n| n.to_string());
                eprintln!("  {hooks} webhook(s), batch {name}…");
                let d = self.once(ctx, total, hooks, batch).await?;
                t.row(vec![
                    hooks.to_string(),
                    name.clone(),
                    d.sent.to_string(),
                    d.delivered.to_string(),
                    d.lost.to_string(),
                    d.dup.to_string(),
                    d.out_of_order.to_string(),
                    d.requests.to_string(),
                    format!("{:.0}", d.first_after.as_secs_f64() * 1000.0),
                    format!("{:.3}", d.drain.as_secs_f64()),
                    format!("{:.0}", d.rate()),
                    format!("{:.1}", us_per(d.cpu, d.delivered)),
                    format!("{:.0}", d.commits),
                    format!("{:.1}", d.commands / d.commits.max(1.0)),
                ]);
                ctx.check(
                    format!("s12 {hooks} webhook(s), batch {name}: every message once, in order"),
                    format!(
                        "{} of {}, {} lost, {} dup, {} out of order",
                        d.delivered, d.sent, d.lost, d.dup, d.out_of_order
                    ),
                    Some(d.delivered == d.sent && d.lost == 0 && d.dup == 0 && d.out_of_order == 0),
                );
                if batch.is_some() && d.sent == 10_000 {
                    ctx.check(
                        format!(
                            "s12 batch {name}: a 10,000-message backlog drains at >= 10,000 msg/s"
                        ),
                        format!("{:.0} msg/s in {} POSTs", d.rate(), d.requests),
                        Some(d.rate() >= 10_000.0),
                    );
                }
            }
            t.notes.push(format!(
                "SQLite; one gateway, the bot API and one webhook to the in-bench receiver. The \
                 receiver refuses connections while {total} messages are posted (POST \
                 /v1/…/messages, 8 connections, unthrottled), then comes up. `first delivery \
                 after up`: the lane's backoff (100 ms → 1 s) while the receiver was down. \
                 `drain`: from the first delivery to the last; msg/s over it. `POSTs`: requests \
                 the receiver got. CPU: the switchboard process from the receiver coming up to \
                 the last delivery, per delivery. `commits`: store transactions during the drain \
                 (`switchboard_commit_batch_count`), and the writer commands they held (a lane's \
                 sent-marking of one row, or of a whole batch, is one command). The last row: \
                 {lanes} webhooks, one per POST, {} messages each: the same deliveries over \
                 {lanes} lanes.",
                total / lanes as u64
            ));
            Ok(vec![t])
        }
        .boxed()
    }
}
