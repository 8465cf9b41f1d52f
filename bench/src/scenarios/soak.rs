//! Scenario 6 (only on request, `--scenario 6`): a soak. Posts at a steady
//! 500 msg/s, then at 20 msg/s, each for `--soak-minutes` (default 30),
//! with a WebSocket consumer connected, and samples the SQLite database
//! file, its write-ahead log and the process's RSS as it goes. It shows
//! whether disk and memory use stay bounded under continuous writes.

use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use super::{spawn, stop, Ctx, Scenario};
use crate::consume::{self, Stream};
use crate::load::{self, Load, Route};
use crate::report::{mb, ms, Table};
use crate::server::{Backend, Setup, Spec, CONSUMER, PRODUCER};

/// The soak.
pub struct Soak;

/// Bytes of a file, 0 when it does not exist.
fn size(p: &Path) -> u64 {
    std::fs::metadata(p).map_or(0, |m| m.len())
}

impl Soak {
    async fn once(
        &self,
        ctx: &Ctx,
        rate: f64,
        minutes: f64,
    ) -> anyhow::Result<(Table, Vec<String>)> {
        let setup = Setup::new(&ctx.bin, &ctx.tmp, &Backend::Sqlite, &Spec::simple())?;
        let db = setup.data_dir().join("sb.db");
        let wal = setup.data_dir().join("sb.db-wal");
        let server = spawn(&setup).await?;
        let duration = Duration::from_secs_f64(minutes * 60.0);
        let total = (rate * duration.as_secs_f64()).ceil() as u64;
        let consumer =
            consume::connect(Stream::WebSocket, server.api, CONSUMER, "g0", total).await?;
        let mut t = Table::new(
            format!("Scenario 6: soak at {rate:.0} msg/s for {minutes} min, SQLite, one WebSocket consumer"),
            &[
                "minute",
                "messages",
                "database MB",
                "WAL MB",
                "WAL max MB",
                "RSS MB",
                "bytes/message (db)",
            ],
        );
        let producer = tokio::spawn(load::produce(
            server.api,
            Load {
                route: Route::Native,
                gateways: vec!["g0".into()],
                total,
                conns: 8,
                rate: Some(rate),
                token: PRODUCER,
            },
        ));
        let started = Instant::now();
        let samples = 10;
        let every = duration / samples;
        let mut wal_max = 0;
        let mut next = every;
        while !producer.is_finished() {
            tokio::time::sleep(Duration::from_millis(100)).await;
            wal_max = wal_max.max(size(&wal));
            if started.elapsed() < next {
                continue;
            }
            next += every;
            let n = consumer
                .progress
                .unique
                .load(std::sync::atomic::Ordering::Relaxed);
            let (d, w) = (size(&db), size(&wal));
            t.row(vec![
                format!("{:.1}", started.elapsed().as_secs_f64() / 60.0),
                n.to_string(),
                mb(d / 1024),
                mb(w / 1024),
                mb(wal_max / 1024),
                mb(server.mem()?.rss_kb),
                d.checked_div(n)
                    .map_or_else(|| "-".into(), |b| b.to_string()),
            ]);
        }
        let sent = producer.await?;
        consumer
            .progress
            .wait_for(sent.ok, Duration::from_secs(10))
            .await;
        let peak = server.mem()?;
        let seen = consumer.finish().await?;
        stop(server).await;
        let lat = seen.latency();
        let summary = vec![
            format!("{rate:.0} msg/s"),
            sent.ok.to_string(),
            seen.unique.to_string(),
            ms(lat.p99, lat.n),
            mb(wal_max / 1024),
            mb(size(&db) / 1024),
            mb(peak.hwm_kb),
        ];
        ctx.check(
            format!("soak {rate:.0} msg/s: WAL bounded (< 64 MB)"),
            format!("{} MB at most", mb(wal_max / 1024)),
            Some(wal_max < 64 << 20),
        );
        setup.cleanup();
        Ok((t, summary))
    }
}

impl Scenario for Soak {
    fn number(&self) -> u32 {
        6
    }

    fn title(&self) -> &'static str {
        "soak: disk and memory over time at 500 and 20 msg/s"
    }

    fn on_request_only(&self) -> bool {
        true
    }

    fn run<'a>(&'a self, ctx: &'a Ctx) -> BoxFuture<'a, anyhow::Result<Vec<Table>>> {
        async move {
            let minutes = ctx.pick(ctx.soak_minutes, 0.5);
            let mut tables = Vec::new();
            let mut summary = Table::new(
                "Scenario 6: soak summary",
                &[
                    "rate",
                    "sent",
                    "received",
                    "p99 ms",
                    "WAL max MB",
                    "database MB at end",
                    "RSS peak MB",
                ],
            );
            for rate in [500.0, 20.0] {
                let (t, row) = self.once(ctx, rate, minutes).await?;
                tables.push(t);
                summary.row(row);
            }
            tables.push(summary);
            Ok(tables)
        }
        .boxed()
    }
}
