//! Scenario 4: fan-out. G gateways × D webhook destinations per gateway,
//! messages posted round-robin over the gateways at a rate that keeps the
//! deliveries per second the same for every D. CPU per delivered message
//! should not grow with the number of gateways.

use std::collections::HashSet;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use super::{spawn, stop, us_per, Ctx, Scenario};
use crate::hook::Hooks;
use crate::load::{self, Load, Route};
use crate::report::{mb, ms, now_ns, Latency, Table};
use crate::server::{Backend, HookSpec, Setup, Spec, PRODUCER};

/// Scenario 4.
pub struct FanOut;

/// Deliveries per second asked of the server in every cell.
const DELIVERIES_PER_S: f64 = 2000.0;

struct Cell {
    row: Vec<String>,
    cpu_per_delivery: f64,
    faults: u64,
}

impl FanOut {
    async fn once(&self, ctx: &Ctx, g: usize, d: usize) -> anyhow::Result<Cell> {
        let secs = ctx.pick(5.0, 1.5);
        let rate = DELIVERIES_PER_S / d as f64;
        let total = (secs * rate) as u64;
        let hooks = Hooks::start(total).await?;
        let gateways: Vec<String> = (0..g).map(|i| format!("g{i}")).collect();
        let spec = Spec {
            gateways: gateways.clone(),
            hooks: (0..g)
                .flat_map(|gi| (0..d).map(move |di| (gi, di)))
                .map(|(gi, di)| HookSpec {
                    name: format!("h{gi}_{di}"),
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
            tokio::time::sleep(ctx.settle()).await;
            let cpu0 = server.cpu()?;
            let t0 = now_ns();
            let sent = load::produce(
                server.api,
                Load {
                    route: Route::Compat,
                    gateways,
                    total,
                    conns: 8,
                    rate: Some(rate),
                    token: PRODUCER,
                },
            )
            .await;
            let expected = sent.ok * d as u64;
            hooks
                .state
                .progress
                .wait_for(expected, Duration::from_secs(15))
                .await;
            let cpu = server.cpu()? - cpu0;
            let peak = server.mem()?;
            server.check_alive()?;
            stop(server).await;
            if let Some(e) = &sent.first_error {
                eprintln!("  {} failed posts; first: {e}", sent.failed.len());
            }
            let failed: HashSet<u64> = sent.failed.iter().copied().collect();
            let trackers = hooks.take();
            let (mut delivered, mut lost, mut dup, mut ooo, mut last) = (0, 0, 0, 0, t0);
            let mut lat = Vec::new();
            for gi in 0..g {
                for di in 0..d {
                    let name = format!("h{gi}_{di}");
                    let mine = (0..total).filter(|s| {
                        usize::try_from(*s).unwrap_or(0) % g == gi && !failed.contains(s)
                    });
                    match trackers.get(&name) {
                        Some(t) => {
                            delivered += t.unique;
                            lost += t.lost(mine);
                            dup += t.dup;
                            ooo += t.out_of_order;
                            last = last.max(t.last_ns());
                            lat.extend(t.samples.iter().map(|(s, r)| r.saturating_sub(*s)));
                        }
                        None => lost += mine.count() as u64,
                    }
                }
            }
            let lat = Latency::of(&mut lat);
            let wall = (last - t0) as f64 / 1e9;
            let per = us_per(cpu, delivered);
            Ok::<_, anyhow::Error>(Cell {
                row: vec![
                    g.to_string(),
                    d.to_string(),
                    (g * d).to_string(),
                    sent.ok.to_string(),
                    delivered.to_string(),
                    format!("{:.0}", delivered as f64 / wall.max(1e-9)),
                    format!("{per:.1}"),
                    format!("{:.1}", us_per(cpu, sent.ok)),
                    ms(lat.p50, lat.n),
                    ms(lat.p99, lat.n),
                    lost.to_string(),
                    dup.to_string(),
                    ooo.to_string(),
                    mb(peak.hwm_kb),
                ],
                cpu_per_delivery: per,
                faults: lost + dup + ooo,
            })
        }
        .await;
        hooks.stop().await;
        setup.cleanup();
        result
    }
}

impl Scenario for FanOut {
    fn number(&self) -> u32 {
        4
    }

    fn title(&self) -> &'static str {
        "fan-out: gateways × webhook destinations per gateway"
    }

    fn run<'a>(&'a self, ctx: &'a Ctx) -> BoxFuture<'a, anyhow::Result<Vec<Table>>> {
        async move {
            let mut t = Table::new(
                format!("Scenario 4: {}", self.title()),
                &[
                    "gateways",
                    "dests/gateway",
                    "webhooks",
                    "messages",
                    "deliveries",
                    "deliveries/s",
                    "CPU µs/delivery",
                    "CPU µs/msg",
                    "p50 ms",
                    "p99 ms",
                    "lost",
                    "dup",
                    "out of order",
                    "RSS peak MB",
                ],
            );
            let mut faults = 0;
            for d in [1, 3, 10] {
                let mut per = Vec::new();
                for g in [1, 10, 100] {
                    eprintln!("  {g} gateways × {d} destinations…");
                    let cell = self.once(ctx, g, d).await?;
                    t.row(cell.row);
                    per.push((g, cell.cpu_per_delivery));
                    faults += cell.faults;
                }
                let lo = per.iter().map(|p| p.1).fold(f64::MAX, f64::min);
                let hi = per.iter().map(|p| p.1).fold(0.0, f64::max);
                let list: Vec<String> = per.iter().map(|(g, c)| format!("{g}: {c:.0}")).collect();
                ctx.check(
                    format!(
                        "s4 {d} dest/gw: CPU per delivery flat within 20% from 1 to 100 gateways"
                    ),
                    format!(
                        "{} µs (spread {:+.0}%)",
                        list.join(", "),
                        (hi / lo.max(1e-9) - 1.0) * 100.0
                    ),
                    Some(hi <= lo * 1.2),
                );
            }
            ctx.check(
                "s4: every webhook got its gateway's messages once, in order",
                format!("{faults} faults"),
                Some(faults == 0),
            );
            t.notes.push(format!(
                "SQLite; each destination is a webhook (its own outbox lane) to the in-bench \
                 receiver, filtered to one gateway; messages go round-robin over the gateways \
                 (POST /api/message, 8 connections) at {DELIVERIES_PER_S:.0}/D msg/s for {} s, so \
                 every cell asks for {DELIVERIES_PER_S:.0} deliveries/s. CPU: the switchboard \
                 process from the first post to the last delivery. Latency: post → webhook \
                 receipt.",
                ctx.pick(5.0, 1.5)
            ));
            Ok(vec![t])
        }
        .boxed()
    }
}
