//! Scenarios 1 and 2: bot API to bot API through one gateway. A producer
//! posts with 32 requests in flight, a consumer with another token reads
//! the gateway's feed; once as fast as it goes, once paced at 1,000 msg/s.

use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use super::{spawn, stop, us_per, Ctx, Scenario};
use crate::consume::{self, Stream, Tracker};
use crate::load::{self, Load, Route, Sent};
use crate::report::{mb, ms, Latency, Table};
use crate::server::{Backend, Mem, Meter, Setup, Spec, Used, CONSUMER, PRODUCER};

/// Posting route × consumer kind.
pub struct Relay {
    number: u32,
    route: Route,
    stream: Stream,
}

impl Relay {
    /// Scenario 1: matterbridge POST, WebSocket consumer.
    pub fn compat_ws() -> Self {
        Self {
            number: 1,
            route: Route::Compat,
            stream: Stream::WebSocket,
        }
    }

    /// Scenario 2: native POST, SSE consumer.
    pub fn native_sse() -> Self {
        Self {
            number: 2,
            route: Route::Native,
            stream: Stream::Sse,
        }
    }
}

/// The columns of a relay table (scenarios 1, 2, 7 and 8; 9 adds three).
pub const COLUMNS: [&str; 18] = [
    "store",
    "load",
    "sent",
    "received",
    "msg/s",
    "p50 ms",
    "p99 ms",
    "max ms",
    "lost",
    "dup",
    "out of order",
    "CPU µs/msg",
    "switches/msg",
    "RSS idle MB",
    "RSS peak MB",
    "ack p99 ms",
    "bench CPU µs/msg",
    "other load (CPUs)",
];

/// What one run measured, for [`RelayOutcome::of`].
pub struct Measured {
    /// Sequence numbers `0..total` were sent.
    pub total: u64,
    /// What the sender did.
    pub sent: Sent,
    /// What the receiver saw.
    pub seen: Tracker,
    /// CPU from the first send to the last receipt.
    pub used: Used,
    /// Memory before the load.
    pub idle: Mem,
    /// Memory at the end.
    pub peak: Mem,
}

/// The outcome of one relay run.
pub struct RelayOutcome {
    /// Row for the table ([`COLUMNS`]).
    pub row: Vec<String>,
    /// Messages per second end to end.
    pub throughput: f64,
    /// p99 one-way latency, ns.
    pub p99: u64,
    /// Lost + dup + out of order.
    pub faults: u64,
    /// Server CPU per message, µs.
    pub cpu_us: f64,
    /// Idle RSS, kB.
    pub idle_kb: u64,
    /// Peak RSS, kB.
    pub peak_kb: u64,
}

impl RelayOutcome {
    /// The figures of a run, in a row labelled `store` and `load`.
    pub fn of(store: &str, load: String, m: &Measured) -> Self {
        let (sent, seen) = (&m.sent, &m.seen);
        if let Some(e) = &sent.first_error {
            eprintln!("  {} failed posts; first: {e}", sent.failed.len());
        }
        let failed: std::collections::HashSet<u64> = sent.failed.iter().copied().collect();
        let lost = seen.lost((0..m.total).filter(|s| !failed.contains(s)));
        let lat = seen.latency();
        let mut acks = sent.acks.clone();
        let ack = Latency::of(&mut acks);
        let secs = (seen.last_ns().saturating_sub(sent.first_ns)) as f64 / 1e9;
        let throughput = if secs > 0.0 {
            seen.unique as f64 / secs
        } else {
            0.0
        };
        let cpu_us = us_per(m.used.cpu, seen.unique);
        let row = vec![
            store.into(),
            load,
            sent.ok.to_string(),
            seen.unique.to_string(),
            format!("{throughput:.0}"),
            ms(lat.p50, lat.n),
            ms(lat.p99, lat.n),
            ms(lat.max, lat.n),
            lost.to_string(),
            seen.dup.to_string(),
            seen.out_of_order.to_string(),
            format!("{cpu_us:.1}"),
            format!("{:.1}", m.used.switches as f64 / seen.unique.max(1) as f64),
            mb(m.idle.rss_kb),
            mb(m.peak.hwm_kb),
            ms(ack.p99, ack.n),
            format!("{:.1}", us_per(m.used.own, seen.unique)),
            format!("{:.2}", m.used.others),
        ];
        Self {
            row,
            throughput,
            p99: lat.p99,
            faults: lost + seen.dup + seen.out_of_order + sent.failed.len() as u64,
            cpu_us,
            idle_kb: m.idle.rss_kb,
            peak_kb: m.peak.hwm_kb,
        }
    }
}

impl Relay {
    /// One run on a fresh server and database: `total` messages,
    /// unthrottled or paced at `rate` msg/s.
    pub async fn once(
        &self,
        ctx: &Ctx,
        backend: &Backend,
        total: u64,
        rate: Option<f64>,
    ) -> anyhow::Result<RelayOutcome> {
        let setup = Setup::new(&ctx.bin, &ctx.tmp, backend, &Spec::simple())?;
        let result = self.drive(ctx, &setup, backend, total, rate).await;
        setup.cleanup();
        result
    }

    async fn drive(
        &self,
        ctx: &Ctx,
        setup: &Setup,
        backend: &Backend,
        total: u64,
        rate: Option<f64>,
    ) -> anyhow::Result<RelayOutcome> {
        let mut server = spawn(setup).await?;
        tokio::time::sleep(ctx.settle()).await;
        let idle = server.mem()?;
        let consumer = consume::connect(self.stream, server.api, CONSUMER, "g0", total).await?;
        let meter = Meter::start(&server)?;
        let sent = load::produce(
            server.api,
            Load {
                route: self.route,
                gateways: vec!["g0".into()],
                total,
                conns: ctx.in_flight,
                rate,
                token: PRODUCER,
            },
        )
        .await;
        consumer
            .progress
            .wait_for(sent.ok, Duration::from_secs(10))
            .await;
        let used = meter.read(&server)?;
        let peak = server.mem()?;
        let seen = consumer.finish().await;
        server.check_alive()?;
        stop(server).await;
        let seen = seen?;
        let load = rate.map_or_else(|| "unthrottled".into(), |r| format!("{r:.0} msg/s"));
        ctx.save_samples(
            &format!(
                "s{}-{}-{}",
                self.number,
                backend.name(),
                rate.map_or_else(|| "unthrottled".into(), |r| format!("{r:.0}"))
            ),
            &seen,
        );
        Ok(RelayOutcome::of(
            backend.name(),
            load,
            &Measured {
                total,
                sent,
                seen,
                used,
                idle,
                peak,
            },
        ))
    }
}

impl Scenario for Relay {
    fn number(&self) -> u32 {
        self.number
    }

    fn title(&self) -> &'static str {
        match self.number {
            1 => "bot API to bot API, matterbridge POST -> WebSocket consumer",
            _ => "bot API to bot API, native POST -> SSE consumer",
        }
    }

    fn run<'a>(&'a self, ctx: &'a Ctx) -> BoxFuture<'a, anyhow::Result<Vec<Table>>> {
        async move {
            let total = ctx.pick(20_000, 2_000);
            let mut t = Table::new(
                format!("Scenario {}: {}", self.number, self.title()),
                &COLUMNS,
            );
            for backend in &ctx.backends {
                let store = backend.name();
                eprintln!("  {store}, unthrottled, {total} messages…");
                let fast = self.once(ctx, backend, total, None).await?;
                t.row(fast.row.clone());
                eprintln!("  {store}, 1000 msg/s, {total} messages…");
                let paced = self.once(ctx, backend, total, Some(1000.0)).await?;
                t.row(paced.row.clone());
                let tag = format!("s{} {store}", self.number);
                let main = self.number == 1 && matches!(backend, Backend::Sqlite);
                let judge = |met: bool| if main { Some(met) } else { None };
                ctx.check(
                    format!("{tag}: ≥ 18,000 msg/s unthrottled"),
                    format!("{:.0} msg/s", fast.throughput),
                    judge(fast.throughput >= 18_000.0),
                );
                ctx.check(
                    format!("{tag}: p99 < 2 ms at 1,000 msg/s"),
                    format!("{} ms", ms(paced.p99, 1)),
                    judge(paced.p99 < 2_000_000),
                );
                ctx.check(
                    format!("{tag}: < 100 µs CPU per message (unthrottled / 1,000 msg/s)"),
                    format!("{:.1} / {:.1} µs", fast.cpu_us, paced.cpu_us),
                    judge(fast.cpu_us < 100.0 && paced.cpu_us < 100.0),
                );
                ctx.check(
                    format!("{tag}: idle RSS < 15 MB"),
                    format!("{} MB", mb(fast.idle_kb.max(paced.idle_kb))),
                    judge(fast.idle_kb.max(paced.idle_kb) < 15 * 1024),
                );
                ctx.check(
                    format!("{tag}: peak RSS < 40 MB at 1,000 msg/s"),
                    format!("{} MB (unthrottled: {} MB)", mb(paced.peak_kb), mb(fast.peak_kb)),
                    judge(paced.peak_kb < 40 * 1024),
                );
                ctx.check(
                    format!("{tag}: nothing lost, duplicated or reordered"),
                    format!("{} faults", fast.faults + paced.faults),
                    Some(fast.faults + paced.faults == 0),
                );
            }
            t.notes.push(format!(
                "{} → {}. {} messages per run, {} requests in flight, a fresh server and database per run. \
                 Latency: producer's send → consumer's receipt (one clock). CPU: the switchboard \
                 process only (/proc/<pid>/stat), from the first post to the last receipt, per \
                 message received. RSS idle: VmRSS {:?} after start; peak: VmHWM at the end. \
                 `bench CPU`: this load generator and consumer, on the same CPUs. \
                 `other load`: CPUs busy with anything else meanwhile (PostgreSQL's server \
                 included); above ~0.1 the run was disturbed.",
                self.route.name(),
                self.stream.name(),
                total,
                ctx.in_flight,
                ctx.settle()
            ));
            Ok(vec![t])
        }
        .boxed()
    }
}
