//! The scenarios of the benchmark. Each is a [`Scenario`]; a new one is a
//! new type in this folder added to [`all`]. A network adapter against its
//! fake server (scenarios 7 and 8) is a [`network::Fake`], whose scenario
//! is a [`Network`] of it. Matrix (scenario 9) runs against a real
//! Synapse, one room, one direction: a scenario of its own. Scenario 11
//! runs 1, 2 and 3 instances of a cluster on one PostgreSQL; scenario 12
//! drains a webhook's backlog one per POST and in batches.

mod backlog;
mod cluster;
mod community;
mod fanout;
mod matrix;
mod network;
mod outage;
mod relay;
mod signal;
mod soak;
mod startup;
mod telegram;

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use futures_util::future::BoxFuture;

use self::network::Network;
use crate::report::{Check, Table};
use crate::server::{Backend, Server, Setup};

/// What every scenario gets.
pub struct Ctx {
    /// The switchboard binary under test.
    pub bin: PathBuf,
    /// Where temp dirs go.
    pub tmp: PathBuf,
    /// Smaller counts for a smoke run.
    pub quick: bool,
    /// SQLite, then PostgreSQL when a URL was given.
    pub backends: Vec<Backend>,
    /// Requests in flight in scenarios 1, 2, 7, 8 and 9.
    pub in_flight: usize,
    /// Where to write each run's latency samples, if anywhere.
    pub samples: Option<PathBuf>,
    /// Targets checked so far.
    pub checks: Mutex<Vec<Check>>,
    /// Minutes per rate in the soak (scenario 6).
    pub soak_minutes: f64,
}

impl Ctx {
    /// Records where a target stands.
    pub fn check(&self, target: impl Into<String>, measured: impl Into<String>, met: Option<bool>) {
        self.checks.lock().expect("checks").push(Check {
            target: target.into(),
            measured: measured.into(),
            met,
        });
    }

    /// `full` normally, `quick` with `--quick`.
    pub fn pick<T>(&self, full: T, quick: T) -> T {
        if self.quick {
            quick
        } else {
            full
        }
    }

    /// Writes a receiver's samples as `<samples>/<name>.csv` when asked to.
    pub fn save_samples(&self, name: &str, t: &crate::consume::Tracker) {
        if let Some(dir) = &self.samples {
            let _ = std::fs::create_dir_all(dir);
            if let Err(e) = t.write_samples(&dir.join(format!("{name}.csv"))) {
                eprintln!("  warning: {e:#}");
            }
        }
    }

    /// How long a fresh server is left alone before its idle RSS is read.
    pub fn settle(&self) -> Duration {
        self.pick(Duration::from_secs(1), Duration::from_millis(300))
    }
}

/// One scenario of the benchmark.
pub trait Scenario: Send + Sync {
    /// Its number on the command line (`--scenario N`).
    fn number(&self) -> u32;
    /// One line saying what it measures.
    fn title(&self) -> &'static str;
    /// True for a scenario that runs only when asked for by number (the
    /// soak takes an hour).
    fn on_request_only(&self) -> bool {
        false
    }
    /// Runs it; returns the tables to print and records targets in `ctx`.
    fn run<'a>(&'a self, ctx: &'a Ctx) -> BoxFuture<'a, anyhow::Result<Vec<Table>>>;
}

/// Every scenario, in order.
pub fn all() -> Vec<Box<dyn Scenario>> {
    vec![
        Box::new(relay::Relay::compat_ws()),
        Box::new(relay::Relay::native_sse()),
        Box::new(outage::Outage),
        Box::new(fanout::FanOut),
        Box::new(startup::Startup),
        Box::new(soak::Soak),
        Box::new(Network::<telegram::Telegram>::new()),
        Box::new(Network::<signal::Signal>::new()),
        Box::new(matrix::Matrix),
        Box::new(community::Community),
        Box::new(cluster::Cluster),
        Box::new(backlog::Backlog),
    ]
}

/// Starts a server without blocking the runtime's other tasks.
pub async fn spawn(setup: &Setup) -> anyhow::Result<Server> {
    tokio::task::block_in_place(|| setup.spawn())
}

/// Stops a server (SIGTERM and wait) without blocking other tasks.
pub async fn stop(server: Server) {
    tokio::task::block_in_place(|| server.stop());
}

/// CPU seconds per unit of work in microseconds, one decimal.
pub fn us_per(cpu: Duration, n: u64) -> f64 {
    if n == 0 {
        0.0
    } else {
        cpu.as_secs_f64() * 1e6 / n as f64
    }
}
