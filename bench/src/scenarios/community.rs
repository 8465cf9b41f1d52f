//! Scenario 10: what a community costs. 10,000 gateways, each the bot API
//! and one webhook (a community of one network and its bots): start-up
//! (exec to the bot API accepting), idle RSS and idle CPU once started,
//! then one message through each gateway (10,000 posts, each to its own
//! webhook lane) with its latency. What grows with the number of gateways
//! is what makes a community cost what it costs.

use std::collections::HashSet;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use super::{spawn, stop, us_per, Ctx, Scenario};
use crate::hook::Hooks;
use crate::load::{self, Load, Route};
use crate::report::{mb, ms, Latency, Table};
use crate::server::{Backend, HookSpec, Setup, Spec, PRODUCER};

/// Scenario 10.
pub struct Community;

impl Scenario for Community {
    fn number(&self) -> u32 {
        10
    }

    fn title(&self) -> &'static str {
        "a community's cost: 10,000 gateways with a webhook each"
    }

    fn run<'a>(&'a self, ctx: &'a Ctx) -> BoxFuture<'a, anyhow::Result<Vec<Table>>> {
        async move {
            let g: usize = ctx.pick(10_000, 1_000);
            let idle = ctx.pick(Duration::from_secs(30), Duration::from_secs(5));
            let mut t = Table::new(
                format!("Scenario 10: {}", self.title()),
                &[
                    "gateways",
                    "start-up ms",
                    "idle RSS MB",
                    "idle CPU %",
                    "messages",
                    "delivered",
                    "lost",
                    "dup",
                    "p50 ms",
                    "p99 ms",
                    "CPU µs/msg",
                    "RSS peak MB",
                ],
            );
            let hooks = Hooks::start(g as u64).await?;
            let gateways: Vec<String> = (0..g).map(|i| format!("g{i}")).collect();
            let spec = Spec {
                gateways: gateways.clone(),
                hooks: (0..g)
                    .map(|gi| HookSpec {
                        name: format!("h{gi}"),
                        addr: hooks.addr,
                        gateways: Some(vec![format!("g{gi}")]),
                        batch: None,
                    })
                    .collect(),
                ..Spec::default()
            };
            let setup = Setup::new(&ctx.bin, &ctx.tmp, &Backend::Sqlite, &spec)?;
            let result = async {
                let mut server = spawn(&setup).await?;
                let startup = server.accepted;
                // Idle: what 10,000 gateways cost while nothing happens.
                tokio::time::sleep(ctx.settle()).await;
                let cpu0 = server.cpu()?;
                tokio::time::sleep(idle).await;
                let idle_cpu = server.cpu()? - cpu0;
                let rss = server.mem()?.rss_kb;
                // One message through each gateway.
                let cpu1 = server.cpu()?;
                let sent = load::produce(
                    server.api,
                    Load {
                        route: Route::Compat,
                        gateways,
                        total: g as u64,
                        conns: 8,
                        rate: None,
                        token: PRODUCER,
                    },
                )
                .await;
                hooks
                    .state
                    .progress
                    .wait_for(sent.ok, Duration::from_secs(60))
                    .await;
                let cpu = server.cpu()? - cpu1;
                let peak = server.mem()?;
                server.check_alive()?;
                stop(server).await;
                let failed: HashSet<u64> = sent.failed.iter().copied().collect();
                let trackers = hooks.take();
                let (mut delivered, mut lost, mut dup) = (0, 0, 0);
                let mut lat = Vec::new();
                for gi in 0..g {
                    let mine = std::iter::once(gi as u64).filter(|s| !failed.contains(s));
                    match trackers.get(&format!("h{gi}")) {
                        Some(tr) => {
                            delivered += tr.unique;
                            lost += tr.lost(mine);
                            dup += tr.dup;
                            lat.extend(tr.samples.iter().map(|(s, r)| r.saturating_sub(*s)));
                        }
                        None => lost += mine.count() as u64,
                    }
                }
                let lat = Latency::of(&mut lat);
                let idle_pct = idle_cpu.as_secs_f64() / idle.as_secs_f64() * 100.0;
                Ok::<_, anyhow::Error>((
                    startup, rss, idle_pct, sent.ok, delivered, lost, dup, lat, cpu, peak,
                ))
            }
            .await;
            hooks.stop().await;
            setup.cleanup();
            let (startup, rss, idle_pct, sent, delivered, lost, dup, lat, cpu, peak) = result?;
            t.row(vec![
                g.to_string(),
                format!("{:.0}", startup.as_secs_f64() * 1000.0),
                mb(rss),
                format!("{idle_pct:.2}"),
                sent.to_string(),
                delivered.to_string(),
                lost.to_string(),
                dup.to_string(),
                ms(lat.p50, lat.n),
                ms(lat.p99, lat.n),
                format!("{:.1}", us_per(cpu, delivered)),
                mb(peak.hwm_kb),
            ]);
            if g == 10_000 {
                ctx.check(
                    "s10: 10,000 gateways start in under 1 s",
                    format!("{:.0} ms", startup.as_secs_f64() * 1000.0),
                    Some(startup < Duration::from_secs(1)),
                );
                ctx.check(
                    "s10: idle RSS under 50 MB",
                    format!("{} MB", mb(rss)),
                    Some(rss < 50 * 1024),
                );
                ctx.check(
                    "s10: idle CPU under 0.5 % of a core",
                    format!("{idle_pct:.2} %"),
                    Some(idle_pct < 0.5),
                );
            }
            ctx.check(
                "s10: one message through each gateway, each once",
                format!("{delivered} of {sent}, {lost} lost, {dup} dup"),
                Some(lost == 0 && dup == 0 && delivered == sent),
            );
            t.notes.push(format!(
                "SQLite; {g} gateways, each the bot API and one webhook to the in-bench \
                 receiver. Start-up: exec to the bot API accepting a TCP connection (a fresh \
                 database). Idle: RSS after {:?} at rest, CPU over {idle:?} at rest. Then one \
                 POST /api/message per gateway (8 connections, unthrottled); latency post → \
                 webhook receipt; CPU: the switchboard process from the first post to the last \
                 delivery, per delivery.",
                ctx.settle() + idle
            ));
            Ok(vec![t])
        }
        .boxed()
    }
}
