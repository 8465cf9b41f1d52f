//! `switchboard-bench`: starts the release switchboard binary with a
//! generated configuration in a temp dir, drives it over loopback and
//! prints Markdown tables (docs/performance.md shows a run).
//!
//! ```text
//! cargo build --release -p switchboard
//! cargo run --release -p switchboard-bench -- [--quick] [--postgres URL] [--scenario N]
//! ```

mod consume;
mod hook;
mod load;
mod report;
mod scenarios;
mod server;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::{Instant, SystemTime};

use anyhow::bail;
use clap::Parser;

use crate::scenarios::Ctx;
use crate::server::Backend;

/// Benchmarks the release switchboard binary over loopback.
#[derive(Debug, Parser)]
#[command(name = "switchboard-bench", version, about)]
struct Args {
    /// Smaller counts and shorter runs: a smoke test, not a measurement.
    #[arg(long)]
    quick: bool,
    /// Also run scenarios 1, 2, 5, 7 and 8 on PostgreSQL. The URL names an
    /// existing database the bench connects to (with psql) to create and
    /// drop a fresh database per run, e.g. postgres://postgres@127.0.0.1:5432/postgres.
    #[arg(long, value_name = "URL")]
    postgres: Option<String>,
    /// Run only these scenarios (repeatable): 1 compat+WebSocket, 2
    /// native+SSE, 3 destination down, 4 fan-out, 5 start-up, 6 soak (only
    /// when named), 7 Telegram against the fake Bot API, 8 Signal against
    /// the fake signal-cli daemon, 9 Matrix (a real Synapse), 10 a
    /// community's cost (10,000 gateways), 11 1, 2 and 3 instances of a
    /// cluster (PostgreSQL only), 12 a webhook's backlog drained one per
    /// POST and in batches.
    #[arg(long, value_name = "N")]
    scenario: Vec<u32>,
    /// `database.durability` of the servers: `fsync` (the default: every
    /// commit on disk before it is acknowledged) or `process` (survives a
    /// crash of switchboard, not a power loss).
    #[arg(long, value_name = "MODE", default_value = "fsync", value_parser = ["fsync", "process"])]
    durability: String,
    /// The switchboard binary [default: target/release/switchboard].
    #[arg(long, value_name = "PATH")]
    binary: Option<PathBuf>,
    /// Requests in flight in scenarios 1, 2, 7, 8 and 9 (the issue asks for 32).
    #[arg(long, value_name = "N", default_value_t = 32)]
    in_flight: usize,
    /// Write every run's (sent, received) latency samples as CSV files here.
    #[arg(long, value_name = "DIR")]
    samples: Option<PathBuf>,
    /// Minutes per rate in the soak, scenario 6 (which runs only when asked
    /// for with `--scenario 6`).
    #[arg(long, value_name = "MINUTES", default_value_t = 30.0)]
    soak_minutes: f64,
    /// Where the per-run temp dirs (config, SQLite database, log) go.
    #[arg(long, value_name = "DIR", default_value_os_t = std::env::temp_dir())]
    tmpdir: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    report::start_clock();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            server::kill_all();
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: Args) -> anyhow::Result<bool> {
    let bin = find_binary(args.binary.as_deref())?;
    let _ = server::DURABILITY.set(args.durability.clone());
    tokio::spawn(async {
        if tokio::signal::ctrl_c().await.is_ok() {
            server::kill_all();
            eprintln!("interrupted");
            std::process::exit(130);
        }
    });
    let mut backends = vec![Backend::Sqlite];
    if let Some(url) = &args.postgres {
        backends.push(Backend::Postgres(url.clone()));
    }
    let all = scenarios::all();
    for n in &args.scenario {
        if !all.iter().any(|s| s.number() == *n) {
            bail!("no scenario {n}; there are 1 to {}", all.len());
        }
    }
    if cfg!(debug_assertions) {
        eprintln!(
            "warning: this is a debug build of the bench; the load it generates is slow. \
             Use `cargo run --release -p switchboard-bench`."
        );
    }
    let ctx = Ctx {
        bin: bin.clone(),
        tmp: args.tmpdir.clone(),
        quick: args.quick,
        backends,
        in_flight: args.in_flight.max(1),
        samples: args.samples.clone(),
        checks: Mutex::new(Vec::new()),
        soak_minutes: args.soak_minutes,
    };
    println!("{}", machine(&args, &bin));
    let started = Instant::now();
    let (busy0, own0) = (server::machine_busy(), server::own_and_children_cpu());
    for s in all.iter().filter(|s| {
        if args.scenario.is_empty() {
            !s.on_request_only()
        } else {
            args.scenario.contains(&s.number())
        }
    }) {
        eprintln!("scenario {}: {}", s.number(), s.title());
        let t0 = Instant::now();
        let tables = s.run(&ctx).await?;
        for t in tables {
            println!("{}", t.render());
        }
        eprintln!("  done in {:.0?}", t0.elapsed());
    }
    let checks = ctx.checks.lock().expect("checks").clone();
    println!("{}", report::checks_table(&checks).render());
    let others = server::machine_busy()
        .saturating_sub(busy0)
        .saturating_sub(server::own_and_children_cpu().saturating_sub(own0))
        .as_secs_f64()
        / started.elapsed().as_secs_f64();
    println!(
        "Other processes kept {others:.2} CPUs busy on average during this run{}.\n",
        if ctx.backends.len() > 1 {
            " (the PostgreSQL server included)"
        } else {
            ""
        }
    );
    if others > 0.1 {
        eprintln!("warning: the machine was not idle ({others:.2} CPUs used by other processes); figures are disturbed.");
    }
    eprintln!("total {:.0?}", started.elapsed());
    Ok(checks.iter().all(|c| c.met != Some(false)))
}

/// `--binary`, else `switchboard` next to this executable (same target
/// dir and profile), else `target/release/switchboard` of the workspace.
fn find_binary(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = given {
        if !p.is_file() {
            bail!("--binary {}: no such file", p.display());
        }
        // Built from other sources, maybe: no staleness check.
        return Ok(p.to_path_buf());
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let mut candidates = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            if dir.ends_with("release") {
                candidates.push(dir.join("switchboard"));
            }
        }
    }
    candidates.push(workspace.join("target/release/switchboard"));
    let Some(bin) = candidates.into_iter().find(|p| p.is_file()) else {
        bail!(
            "the release switchboard binary is missing (looked for target/release/switchboard).\n\
             Build it first:\n\n    cargo build --release -p switchboard\n\n\
             or point the bench at a binary with --binary PATH."
        );
    };
    // A binary older than the sources measures old code.
    let built = mtime(&bin);
    if let Some(newer) = [
        "src",
        "bridges/core/src",
        "bridges/telegram/src",
        "bridges/signal/src",
        "bridges/matrix/src",
    ]
    .iter()
    .filter_map(|d| newest(&workspace.join(d)))
    .find(|(t, _)| Some(*t) > built)
    {
        eprintln!(
            "warning: {} is older than {}; rebuild with `cargo build --release -p switchboard`.",
            bin.display(),
            newer.1.display()
        );
    }
    Ok(bin)
}

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

fn newest(dir: &Path) -> Option<(SystemTime, PathBuf)> {
    let mut best: Option<(SystemTime, PathBuf)> = None;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Some(t) = mtime(&p) {
                if best.as_ref().is_none_or(|(b, _)| t > *b) {
                    best = Some((t, p));
                }
            }
        }
    }
    best
}

/// The header: command, machine, binary.
fn machine(args: &Args, bin: &Path) -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown", |(_, v)| v.trim())
        .to_owned();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kb: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let mut cmd = String::from("cargo run --release -p switchboard-bench --");
    if args.quick {
        cmd.push_str(" --quick");
    }
    if args.postgres.is_some() {
        cmd.push_str(" --postgres URL");
    }
    for n in &args.scenario {
        cmd.push_str(&format!(" --scenario {n}"));
    }
    if let Some(b) = &args.binary {
        cmd.push_str(&format!(" --binary {}", b.display()));
    }
    if args.soak_minutes != 30.0 {
        cmd.push_str(&format!(" --soak-minutes {}", args.soak_minutes));
    }
    if args.in_flight != 32 {
        cmd.push_str(&format!(" --in-flight {}", args.in_flight));
    }
    format!(
        "## switchboard-bench{}\n\n\
         - command: `{cmd}`\n\
         - machine: {cpus} CPUs ({model}), {:.1} GiB RAM, Linux {}\n\
         - binary: {}\n\
         - temp dirs in: {}\n",
        if args.quick {
            " (--quick: smoke run, not a measurement)"
        } else {
            ""
        },
        mem_kb as f64 / 1024.0 / 1024.0,
        kernel.trim(),
        bin.display(),
        args.tmpdir.display(),
    )
}
