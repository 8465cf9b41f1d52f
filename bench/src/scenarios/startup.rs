//! Scenario 5: start-up. Time from exec to the bot API accepting TCP
//! connections, and to the first message relayed (WebSocket consumer
//! connects, producer posts, consumer receives). Cold: a new database
//! (migrations run); warm: a restart over an existing one.

use std::time::Duration;

use anyhow::bail;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use super::{spawn, stop, Ctx, Scenario};
use crate::consume::{self, Stream};
use crate::load::{marker, HttpConn};
use crate::report::{mb, now_ns, percentile, Table};
use crate::server::{Backend, Setup, Spec, CONSUMER, PRODUCER};

/// Scenario 5.
pub struct Startup;

struct Sample {
    accept_ns: u64,
    first_ns: u64,
    rss_kb: u64,
}

async fn one(setup: &Setup) -> anyhow::Result<Sample> {
    let mut server = spawn(setup).await?;
    let accept_ns = u64::try_from(server.accepted.as_nanos()).unwrap_or(u64::MAX);
    let relayed = async {
        let consumer = consume::connect(Stream::WebSocket, server.api, CONSUMER, "g0", 1).await?;
        let mut conn = HttpConn::new(server.api);
        let body = format!(
            r#"{{"text":"{}","username":"bench","gateway":"g0"}}"#,
            marker(0, 0, now_ns())
        );
        let status = conn.post("/api/message", PRODUCER, body.as_bytes()).await?;
        if status != 200 {
            bail!("first post answered {status}: {}", conn.last_body());
        }
        consumer.progress.wait_for(1, Duration::from_secs(10)).await;
        let seen = consumer.finish().await?;
        let Some((_, recv)) = seen.samples.first() else {
            bail!("the first message never arrived");
        };
        Ok(*recv)
    }
    .await;
    let rss_kb = server.mem().map(|m| m.rss_kb).unwrap_or(0);
    let started = server.started_ns;
    let alive = server.check_alive();
    stop(server).await;
    alive?;
    Ok(Sample {
        accept_ns,
        first_ns: relayed?.saturating_sub(started),
        rss_kb,
    })
}

fn median(v: &mut [u64]) -> u64 {
    v.sort_unstable();
    percentile(v, 50.0)
}

impl Scenario for Startup {
    fn number(&self) -> u32 {
        5
    }

    fn title(&self) -> &'static str {
        "start-up: exec -> API accepting connections -> first message relayed"
    }

    fn run<'a>(&'a self, ctx: &'a Ctx) -> BoxFuture<'a, anyhow::Result<Vec<Table>>> {
        async move {
            let reps = ctx.pick(5, 2);
            let mut t = Table::new(
                format!("Scenario 5: {}", self.title()),
                &[
                    "store",
                    "start",
                    "runs",
                    "accepting ms (median)",
                    "accepting ms (max)",
                    "first relayed ms (median)",
                    "first relayed ms (max)",
                    "RSS after first message MB",
                ],
            );
            for backend in &ctx.backends {
                for warm in [false, true] {
                    let label = if warm {
                        "warm (restart)"
                    } else {
                        "cold (new database)"
                    };
                    eprintln!("  {} {label}, {reps} runs…", backend.name());
                    let mut samples = Vec::new();
                    if warm {
                        let setup = Setup::new(&ctx.bin, &ctx.tmp, backend, &Spec::simple())?;
                        let primed = one(&setup).await;
                        for _ in 0..reps {
                            if primed.is_err() {
                                break;
                            }
                            samples.push(one(&setup).await);
                        }
                        setup.cleanup();
                        primed?;
                    } else {
                        for _ in 0..reps {
                            let setup = Setup::new(&ctx.bin, &ctx.tmp, backend, &Spec::simple())?;
                            samples.push(one(&setup).await);
                            setup.cleanup();
                        }
                    }
                    let samples: Vec<Sample> = samples.into_iter().collect::<Result<_, _>>()?;
                    let mut acc: Vec<u64> = samples.iter().map(|s| s.accept_ns).collect();
                    let mut first: Vec<u64> = samples.iter().map(|s| s.first_ns).collect();
                    let rss = samples.iter().map(|s| s.rss_kb).max().unwrap_or(0);
                    let (am, fm) = (median(&mut acc), median(&mut first));
                    let f = |ns: u64| format!("{:.1}", ns as f64 / 1e6);
                    t.row(vec![
                        backend.name().into(),
                        label.into(),
                        samples.len().to_string(),
                        f(am),
                        f(acc.last().copied().unwrap_or(0)),
                        f(fm),
                        f(first.last().copied().unwrap_or(0)),
                        mb(rss),
                    ]);
                    ctx.check(
                        format!(
                            "s5 {} {label}: < 20 ms to accepting connections",
                            backend.name()
                        ),
                        format!(
                            "{} ms median, {} ms max",
                            f(am),
                            f(acc.last().copied().unwrap_or(0))
                        ),
                        if matches!(backend, Backend::Sqlite) {
                            Some(am < 20_000_000)
                        } else {
                            None
                        },
                    );
                }
            }
            t.notes.push(
                "Accepting: the bench polls connect() every 0.2 ms from exec. First relayed: \
                 exec → a WebSocket consumer connected, one POST /api/message committed and \
                 received by the consumer."
                    .into(),
            );
            Ok(vec![t])
        }
        .boxed()
    }
}
