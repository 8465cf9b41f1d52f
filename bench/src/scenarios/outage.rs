//! Scenario 3: one destination down. A webhook and a WebSocket consumer
//! read the same gateway at 200 msg/s; the webhook's receiver refuses
//! connections (second run: accepts and never answers) for the middle
//! third of the run. The consumer must not notice; the webhook must get
//! everything, in order, once it is back.

use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use super::{spawn, stop, Ctx, Scenario};
use crate::consume::{self, Stream};
use crate::hook::{Hooks, Mode};
use crate::load::{self, Load, Route};
use crate::report::{instant_at, ms, now_ns, Latency, Table};
use crate::server::{Backend, HookSpec, Setup, Spec, CONSUMER, PRODUCER};

/// Scenario 3.
pub struct Outage;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    None,
    Refused,
    Hung,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Self::None => "none (baseline)",
            Self::Refused => "refuses connections",
            Self::Hung => "accepts, never answers",
        }
    }
}

struct Outcome {
    row: Vec<String>,
    window: Latency,
    all: Latency,
    hook_lost: u64,
    hook_faults: u64,
}

const RATE: f64 = 200.0;

impl Outage {
    async fn once(&self, ctx: &Ctx, kind: Kind) -> anyhow::Result<Outcome> {
        let run = ctx.pick(Duration::from_secs(30), Duration::from_secs(6));
        let total = (run.as_secs_f64() * RATE) as u64;
        let mut hooks = Hooks::start(total).await?;
        let spec = Spec {
            gateways: vec!["g0".into()],
            hooks: vec![HookSpec {
                name: "hook".into(),
                addr: hooks.addr,
                gateways: None,
                batch: None,
            }],
            ..Spec::default()
        };
        let setup = Setup::new(&ctx.bin, &ctx.tmp, &Backend::Sqlite, &spec)?;
        let result = self.drive(ctx, &setup, &mut hooks, kind, run, total).await;
        hooks.stop().await;
        setup.cleanup();
        result
    }

    async fn drive(
        &self,
        ctx: &Ctx,
        setup: &Setup,
        hooks: &mut Hooks,
        kind: Kind,
        run: Duration,
        total: u64,
    ) -> anyhow::Result<Outcome> {
        let mut server = spawn(setup).await?;
        tokio::time::sleep(ctx.settle()).await;
        let consumer =
            consume::connect(Stream::WebSocket, server.api, CONSUMER, "g0", total).await?;
        let start = now_ns();
        let third = u64::try_from(run.as_nanos() / 3).unwrap_or(u64::MAX);
        let (down, up) = (start + third, start + 2 * third);
        let api = server.api;
        let producer = tokio::spawn(load::produce(
            api,
            Load {
                route: Route::Compat,
                gateways: vec!["g0".into()],
                total,
                conns: 4,
                rate: Some(RATE),
                token: PRODUCER,
            },
        ));
        tokio::time::sleep_until(instant_at(down).into()).await;
        match kind {
            Kind::None => {}
            Kind::Refused => hooks.refuse().await,
            Kind::Hung => hooks.set_mode(Mode::Hang),
        }
        tokio::time::sleep_until(instant_at(up).into()).await;
        let up = now_ns();
        match kind {
            Kind::None => {}
            Kind::Refused => hooks.resume().await?,
            Kind::Hung => hooks.set_mode(Mode::Up),
        }
        let sent = producer.await?;
        consumer
            .progress
            .wait_for(sent.ok, Duration::from_secs(10))
            .await;
        hooks
            .state
            .progress
            .wait_for(sent.ok, Duration::from_secs(15))
            .await;
        server.check_alive()?;
        let seen = consumer.finish().await?;
        stop(server).await;
        if let Some(e) = &sent.first_error {
            eprintln!("  {} failed posts; first: {e}", sent.failed.len());
        }
        let failed: std::collections::HashSet<u64> = sent.failed.iter().copied().collect();
        let expected = || (0..total).filter(|s| !failed.contains(s));
        let ws_lost = seen.lost(expected());
        let window = seen.latency_sent_between(down, up);
        let all = seen.latency();
        let mut trackers = hooks.take();
        let hook = trackers
            .remove("hook")
            .unwrap_or_else(|| consume::Tracker::new(total));
        let hook_lost = hook.lost(expected());
        let tag = format!("s3-{}", kind.name().split(' ').next().unwrap_or("x"));
        ctx.save_samples(&format!("{tag}-ws"), &seen);
        ctx.save_samples(&format!("{tag}-hook"), &hook);
        let after = hook.samples.iter().filter(|(_, r)| *r >= up).count();
        // Catch-up: from recovery until the last message sent before or
        // during the outage arrived.
        let caught_up = hook
            .samples
            .iter()
            .filter(|(s, _)| *s < up)
            .map(|(_, r)| *r)
            .max()
            .unwrap_or(0);
        let catch_up = if kind == Kind::None {
            "-".into()
        } else {
            format!("{:.2}", caught_up.saturating_sub(up) as f64 / 1e9)
        };
        let requests = hooks
            .state
            .requests
            .load(std::sync::atomic::Ordering::Relaxed);
        let row = vec![
            kind.name().into(),
            sent.ok.to_string(),
            ms(all.p50, all.n),
            ms(all.p99, all.n),
            ms(window.p99, window.n),
            ms(all.max, all.n),
            ws_lost.to_string(),
            hook.unique.to_string(),
            if kind == Kind::None {
                "-".into()
            } else {
                after.to_string()
            },
            catch_up,
            hook_lost.to_string(),
            hook.dup.to_string(),
            hook.out_of_order.to_string(),
            requests.to_string(),
            format!("{} / {}", seen.notices.0, seen.notices.1),
        ];
        Ok(Outcome {
            row,
            window,
            all,
            hook_lost,
            hook_faults: hook_lost + hook.dup + hook.out_of_order + ws_lost,
        })
    }
}

impl Scenario for Outage {
    fn number(&self) -> u32 {
        3
    }

    fn title(&self) -> &'static str {
        "one destination down: webhook out for the middle third of a 200 msg/s run"
    }

    fn run<'a>(&'a self, ctx: &'a Ctx) -> BoxFuture<'a, anyhow::Result<Vec<Table>>> {
        async move {
            let mut t = Table::new(
                format!("Scenario 3: {}", self.title()),
                &[
                    "webhook outage",
                    "sent",
                    "WS p50 ms",
                    "WS p99 ms",
                    "WS p99 in outage ms",
                    "WS max ms",
                    "WS lost",
                    "hook got",
                    "hook got after recovery",
                    "hook catch-up s",
                    "hook lost",
                    "hook dup",
                    "hook out of order",
                    "hook requests",
                    "WS notices (down / back)",
                ],
            );
            let mut base = None;
            for kind in [Kind::None, Kind::Refused, Kind::Hung] {
                eprintln!("  webhook outage: {}…", kind.name());
                let o = self.once(ctx, kind).await?;
                t.row(o.row.clone());
                match kind {
                    Kind::None => base = Some(o),
                    _ => {
                        let b = base.as_ref().expect("baseline first");
                        // Whole-run p99 of the baseline: more samples than
                        // its middle third, same load.
                        let limit = b.all.p99 as f64 * 1.2;
                        ctx.check(
                            format!(
                                "s3 webhook {}: healthy WS p99 during outage within 20% of no-outage p99",
                                kind.name()
                            ),
                            format!(
                                "{} ms vs {} ms ({:+.0}%)",
                                ms(o.window.p99, o.window.n),
                                ms(b.all.p99, b.all.n),
                                (o.window.p99 as f64 / b.all.p99.max(1) as f64 - 1.0) * 100.0
                            ),
                            Some((o.window.p99 as f64) <= limit),
                        );
                        ctx.check(
                            format!("s3 webhook {}: zero lost (webhook and WS)", kind.name()),
                            format!("{} lost, {} faults", o.hook_lost, o.hook_faults),
                            Some(o.hook_faults == 0),
                        );
                    }
                }
            }
            let run = ctx.pick(30, 6);
            t.notes.push(format!(
                "SQLite; {run} s at {RATE:.0} msg/s over 4 connections; the webhook is down from \
                 {} s to {} s. `WS p99 in outage`: messages sent while the webhook was down (for \
                 the baseline, the same window). `hook got after recovery`: first deliveries that \
                 arrived after it came back; `catch-up`: from recovery until the last message \
                 sent before recovery arrived. Outbox: backoff 100 ms → 1 s, send timeout 2 s, \
                 webhook timeout 2 s.",
                run / 3,
                2 * run / 3
            ));
            Ok(vec![t])
        }
        .boxed()
    }
}
