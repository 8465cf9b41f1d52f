//! Scenario 9: Matrix, bot API → one room on a real Synapse through the
//! application service (`mode = "appservice"`). Nothing is faked: Synapse
//! is started by `switchboard_matrix::synapse` (feature `synapse`, the
//! launcher the Matrix tests use) with the registration the release binary
//! wrote (`switchboard matrix registration`); one gateway holds the bot
//! API and the room. The producer posts natively with the usual requests
//! in flight; a real user of the room reads it with `/sync` long polls and
//! sees each message when its sync answer arrives. Afterwards the room's
//! whole timeline is read back (`/messages`): lost and dup per message,
//! order per producer connection.
//!
//! Not a [`super::network::Fake`]: that shape is 50 groups, both
//! directions and 10,000 messages at up to 1,000 msg/s against an
//! in-process fake; a single Synapse process on the same two CPUs sends far
//! fewer. The figures are the same ([`RelayOutcome`]), plus Synapse's own
//! CPU and how long Synapse took to create each event.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context};
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use reqwest::Method;
use serde_json::{json, Value};
use switchboard_matrix::synapse::{enc, MxUser, Synapse};
use tokio::task::JoinHandle;

use super::relay::{Measured, RelayOutcome, COLUMNS};
use super::{spawn, stop, us_per, Ctx, Scenario};
use crate::consume::{Progress, Tracker};
use crate::load::{self, parse_marker, Load, Route};
use crate::report::{ms, now_ns, Latency, Table};
use crate::server::{free_port, proc_cpu, Backend, Meter, Setup, Spec, Used, PRODUCER};

/// The Matrix account in the generated config.
const ACCOUNT: &str = "matrix.main";

/// The bridge bot's localpart (the config's default `bot`).
const BOT: &str = "switchboard";

/// How long nothing new may arrive before a run gives up waiting.
const IDLE: Duration = Duration::from_secs(30);

/// How long one `/sync` long poll of the reader waits for news.
const SYNC_TIMEOUT_MS: u64 = 10_000;

/// The paced run's rate, msg/s: well below what Synapse sends on this
/// machine, so that its latency is the path's and not a backlog's.
const PACED: f64 = 10.0;

/// The extra columns after [`COLUMNS`].
const EXTRA_COLUMNS: [&str; 3] = ["Synapse CPU µs/msg", "created p50 ms", "created p99 ms"];

/// Scenario 9.
pub struct Matrix;

impl Scenario for Matrix {
    fn number(&self) -> u32 {
        9
    }

    fn title(&self) -> &'static str {
        "Matrix: bot API → a room on a real Synapse through the application service"
    }

    fn run<'a>(&'a self, ctx: &'a Ctx) -> BoxFuture<'a, anyhow::Result<Vec<Table>>> {
        async move {
            let total = ctx.pick(2_000, 500);
            let paced = ctx.pick(300, 100);
            let mut columns: Vec<&str> = COLUMNS.to_vec();
            columns[1] = "load";
            columns.extend(EXTRA_COLUMNS);
            let mut t = Table::new(format!("Scenario 9: {}", self.title()), &columns);
            // Synapse comes from PyPI (the first run installs it); without
            // Python the other scenarios still run.
            let venv = tokio::task::block_in_place(switchboard_matrix::synapse::try_synapse_venv);
            if let Err(e) = venv {
                eprintln!("  skipped: {e}");
                t.notes
                    .push(format!("Skipped: Synapse is not available ({e})."));
                ctx.check("s9: Synapse installed", "no", None);
                return Ok(vec![t]);
            }
            let mut gaps = 0;
            for backend in &ctx.backends {
                let store = backend.name();
                let mut faults = 0;
                for (n, rate) in [(total, None), (paced, Some(PACED))] {
                    let pace =
                        rate.map_or_else(|| "unthrottled".into(), |r| format!("{r:.0} msg/s"));
                    eprintln!("  {store}, {pace}, {n} messages…");
                    let run = once(ctx, backend, n, rate).await?;
                    faults += run.outcome.faults;
                    gaps += run.gaps;
                    t.row(run.row);
                }
                ctx.check(
                    format!("s9 {store}: nothing lost, duplicated or reordered"),
                    format!("{faults} faults"),
                    Some(faults == 0),
                );
            }
            t.notes.push(notes(ctx, (total, paced), gaps));
            Ok(vec![t])
        }
        .boxed()
    }
}

fn notes(ctx: &Ctx, (total, paced): (u64, u64), gaps: u64) -> String {
    let gaps = if gaps == 0 {
        String::new()
    } else {
        format!(
            " WARNING: {gaps} of the reader's syncs were `limited` (events skipped); those \
             messages count as received when the timeline was read back, so their latency \
             is too high."
        )
    };
    format!(
        "{total} messages unthrottled, {paced} at {PACED:.0} msg/s; a fresh Synapse ({version}, SQLite, rate limits off, started \
         by `switchboard_matrix::synapse`), server and database per run. One gateway: the bot \
         API and one invite-only room of account `{ACCOUNT}` in `mode = \"appservice\"`, its \
         registration written by `switchboard matrix registration`; each message is posted \
         by the author's ghost (one ghost here). Load: native posts \
         (`POST /v1/gateways/g0/messages`, {in_flight} in flight); unthrottled, as fast as \
         they are answered: they are committed at the bot API's pace, so the room drains a \
         backlog and the latency is mostly the wait in it; paced, below what Synapse \
         sends, so the latency is the path's. Latency: post sent → the room's member \
         `@reader:localhost` receives the event in a `/sync` long poll (one clock, the bench \
         process). `created`: post sent → the event's `origin_server_ts` (Synapse's \
         wall clock, ms). Lost and dup per message, order per producer connection, from \
         the room's whole timeline read back with `/messages` afterwards. CPU µs/msg: the \
         switchboard process from the first post to the last receipt (it also takes in the \
         transactions Synapse pushes back with the ghost's own events); `Synapse CPU`: the \
         Synapse process over the same span (its reader's syncs included). `other load` \
         leaves Synapse out; `bench CPU` includes the reader.{gaps}",
        version = switchboard_matrix::synapse::SYNAPSE_VERSION,
        in_flight = ctx.in_flight,
    )
}

/// One run's row and what only this scenario reports.
struct Run {
    row: Vec<String>,
    outcome: RelayOutcome,
    gaps: u64,
}

/// One run on a fresh Synapse, server and database: `total` messages,
/// unthrottled or paced at `rate` msg/s.
async fn once(ctx: &Ctx, backend: &Backend, total: u64, rate: Option<f64>) -> anyhow::Result<Run> {
    let dir = tempfile::Builder::new()
        .prefix("switchboard-bench-matrix.")
        .tempdir_in(&ctx.tmp)
        .with_context(|| format!("creating a temp dir in {}", ctx.tmp.display()))?;
    let listen = free_port()?;
    let reg = dir.path().join("registration.yaml");
    let section = |homeserver: &str| {
        format!(
            "[{ACCOUNT}]\nmode = \"appservice\"\nhomeserver = \"{homeserver}\"\n\
             server_name = \"localhost\"\nlisten = \"{listen}\"\nregistration = {:?}\n",
            reg.display().to_string()
        )
    };
    // The admin's steps: the registration first (the homeserver reads it
    // at start), then the homeserver.
    tokio::task::block_in_place(|| {
        registration(&ctx.bin, dir.path(), &section("http://127.0.0.1:1"))
    })?;
    let mut hs =
        Synapse::try_start_with(&dir.path().join("synapse"), std::slice::from_ref(&reg), "")
            .await
            .map_err(|e| anyhow!("{e}"))?;
    let reader = hs.register("reader", false).await;
    let bot = hs.user_id(BOT);
    let room = reader
        .create_room_with(&json!({
            "preset": "private_chat", "name": "bench", "invite": [bot],
        }))
        .await;
    let spec = Spec {
        gateways: vec!["g0".into()],
        members: vec![("g0".into(), ACCOUNT.into(), room.clone())],
        extra: section(&hs.url()),
        ..Spec::default()
    };
    let setup = Setup::new(&ctx.bin, &ctx.tmp, backend, &spec)?;
    let result = drive(ctx, &setup, &hs, (&reader, &room, &bot), (total, rate)).await;
    let warnings: Vec<String> = setup
        .log()
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .map(str::to_owned)
        .collect();
    if let Some(first) = warnings.first() {
        eprintln!(
            "  the server logged {} warnings or errors; the first:\n    {first}",
            warnings.len()
        );
    }
    setup.cleanup();
    let synapse_log = hs.log_tail(20);
    hs.kill9();
    drop(dir);
    let (m, synapse_cpu, created, gaps, log) = result?;
    let rate_tag = rate.map_or_else(|| "unthrottled".into(), |r| format!("{r:.0}"));
    ctx.save_samples(&format!("s9-{}-{rate_tag}", backend.name()), &m.seen);
    let load = match rate {
        None => "bot API → Matrix room".into(),
        Some(r) => format!("bot API → Matrix room, {r:.0} msg/s"),
    };
    let outcome = RelayOutcome::of(backend.name(), load, &m);
    if outcome.faults > 0 {
        eprintln!(
            "  faults in this run; the server's log ended with:\n{log}\n  Synapse's with:\n{synapse_log}"
        );
    }
    let mut row = outcome.row.clone();
    row.push(format!("{:.1}", us_per(synapse_cpu, m.seen.unique)));
    row.push(ms(created.p50, created.n));
    row.push(ms(created.p99, created.n));
    Ok(Run { row, outcome, gaps })
}

/// Writes the registration with the release binary, as an admin would,
/// from a config holding only the account's section.
fn registration(bin: &Path, dir: &Path, section: &str) -> anyhow::Result<()> {
    let config = dir.join("registration.toml");
    std::fs::write(&config, section)?;
    let out = Command::new(bin)
        .arg("--config")
        .arg(&config)
        .args(["matrix", "registration", "--account", ACCOUNT])
        .env_remove("RUST_LOG")
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    if !out.status.success() {
        bail!(
            "`switchboard matrix registration` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

type Driven = (Measured, Duration, Latency, u64, String);

/// One run on a started Synapse and a written setup.
async fn drive(
    ctx: &Ctx,
    setup: &Setup,
    hs: &Synapse,
    (reader, room, bot): (&MxUser, &str, &str),
    (total, rate): (u64, Option<f64>),
) -> anyhow::Result<Driven> {
    let mut server = spawn(setup).await?;
    // Ready when the bridge bot has accepted its invite (at start).
    let deadline = Instant::now() + Duration::from_secs(60);
    while !reader.members(room).await.iter().any(|m| m == bot) {
        server.check_alive()?;
        if Instant::now() > deadline {
            bail!(
                "the bridge did not join the room within 60 s; its log ended with:\n{}",
                server.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(ctx.settle()).await;
    let idle = server.mem()?;
    let sync = Reader::start(reader.clone(), room.to_owned()).await?;
    let synapse = hs.pid().to_string();
    let meter = Meter::start(&server)?;
    let synapse0 = proc_cpu(&synapse)?;
    let wall0 = Instant::now();
    let sent = load::produce(
        server.api,
        Load {
            route: Route::Native,
            gateways: vec!["g0".into()],
            total,
            conns: ctx.in_flight,
            rate,
            token: PRODUCER,
        },
    )
    .await;
    eprintln!(
        "  posted in {:.0} ms",
        sent.last_ns.saturating_sub(sent.first_ns) as f64 / 1e6
    );
    sync.progress.wait_for(sent.ok, IDLE).await;
    let used = meter.read(&server)?;
    let synapse_cpu = proc_cpu(&synapse)?.saturating_sub(synapse0);
    // Synapse is not "other load" here: it is the other half of the run.
    let others = (used.others - synapse_cpu.as_secs_f64() / wall0.elapsed().as_secs_f64()).max(0.0);
    let used = Used { others, ..used };
    let (seen_at, gaps) = sync.stop().await;
    let peak = server.mem()?;
    server.check_alive()?;
    let log = server.log_tail();
    stop(server).await;
    let timeline = reader.messages(room).await;
    let (seen, created) = judge(total, &timeline, &seen_at);
    let m = Measured {
        total,
        sent,
        seen,
        used,
        idle,
        peak,
    };
    Ok((m, synapse_cpu, created, gaps, log))
}

/// Judges the room's timeline (oldest first): each message timed by when
/// the reader's sync brought it (now, for one it never saw), and the
/// latency to its `origin_server_ts`.
fn judge(total: u64, timeline: &[Value], seen_at: &HashMap<u64, u64>) -> (Tracker, Latency) {
    // The bench clock in wall-clock ns, for `origin_server_ts`.
    let wall_now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    let offset = wall_now.saturating_sub(now_ns());
    let mut tracker = Tracker::new(total);
    let mut created = Vec::new();
    for e in timeline.iter().filter(|e| e["type"] == "m.room.message") {
        let body = e["content"]["body"].as_str().unwrap_or_default();
        let marker = parse_marker(body);
        let at = marker
            .and_then(|(_, seq, _)| seen_at.get(&seq).copied())
            .unwrap_or_else(now_ns);
        if tracker.record(body, None, at) {
            if let (Some((_, _, sent)), Some(ts)) = (marker, e["origin_server_ts"].as_u64()) {
                created.push((ts * 1_000_000).saturating_sub(offset + sent));
            }
        }
    }
    (tracker, Latency::of(&mut created))
}

/// A member of the room following it with `/sync` long polls, as a client
/// does: when each bench message first came in a sync answer.
struct Reader {
    progress: Arc<Progress>,
    seen: Arc<Mutex<HashMap<u64, u64>>>,
    gaps: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Reader {
    /// Syncs once (what the room held before is not counted), then follows
    /// in the background.
    async fn start(user: MxUser, room: String) -> anyhow::Result<Self> {
        let filter = json!({
            "room": {
                "rooms": [room],
                "timeline": { "limit": 1000, "types": ["m.room.message"] },
                "state": { "types": [] },
                "ephemeral": { "types": [] },
                "account_data": { "types": [] },
            },
            "presence": { "types": [] },
            "account_data": { "types": [] },
        });
        let base = format!(
            "/_matrix/client/v3/sync?filter={}",
            enc(&filter.to_string())
        );
        let (status, first) = user
            .request(Method::GET, &format!("{base}&timeout=0"), None)
            .await;
        let Some(mut since) = first["next_batch"].as_str().map(str::to_owned) else {
            bail!("the reader's first /sync failed: {status} {first}");
        };
        let progress = Arc::new(Progress::default());
        let seen = Arc::new(Mutex::new(HashMap::new()));
        let gaps = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn({
            let (progress, seen, gaps) = (progress.clone(), seen.clone(), gaps.clone());
            async move {
                loop {
                    let path = format!("{base}&timeout={SYNC_TIMEOUT_MS}&since={}", enc(&since));
                    let (status, v) = user.request(Method::GET, &path, None).await;
                    let at = now_ns();
                    let Some(next) = v["next_batch"].as_str() else {
                        eprintln!("  the reader's /sync failed: {status} {v}");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    };
                    let timeline = &v["rooms"]["join"][&room]["timeline"];
                    if timeline["limited"] == true {
                        gaps.fetch_add(1, Ordering::Relaxed);
                    }
                    let mut seen = seen.lock().expect("seen");
                    for e in timeline["events"].as_array().into_iter().flatten() {
                        let body = e["content"]["body"].as_str().unwrap_or_default();
                        if let Some((_, seq, _)) = parse_marker(body) {
                            seen.entry(seq).or_insert(at);
                        }
                    }
                    progress.unique.store(seen.len() as u64, Ordering::Relaxed);
                    since = next.to_owned();
                }
            }
        });
        Ok(Self {
            progress,
            seen,
            gaps,
            task,
        })
    }

    /// Stops following; what it saw and how many syncs skipped events.
    async fn stop(self) -> (HashMap<u64, u64>, u64) {
        self.task.abort();
        let _ = self.task.await;
        let seen = std::mem::take(&mut *self.seen.lock().expect("seen"));
        (seen, self.gaps.load(Ordering::Relaxed))
    }
}
