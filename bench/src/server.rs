//! The switchboard under test: its generated configuration, its process,
//! and what `/proc` says about it.

use std::fmt::Write as _;
use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// Token the load generator posts with.
pub const PRODUCER: &str = "producer-token-0123456789";
/// Token the consumers read with (a consumer never sees its own posts, so
/// it must differ from the producer's).
pub const CONSUMER: &str = "consumer-token-0123456789";
/// HMAC key of the generated webhooks.
pub const HOOK_SECRET: &str = "0123456789abcdef";

/// Child pids still running, killed on Ctrl-C.
static LIVE: Mutex<Vec<u32>> = Mutex::new(Vec::new());
/// Temp dirs in use, removed on Ctrl-C.
static DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Kills every switchboard this bench started and still runs, and removes
/// their temp dirs (for Ctrl-C and fatal errors).
pub fn kill_all() {
    let pids = std::mem::take(&mut *LIVE.lock().expect("pid list"));
    for pid in pids {
        signal(pid, "KILL");
    }
    for dir in std::mem::take(&mut *DIRS.lock().expect("dir list")) {
        let _ = fs::remove_dir_all(dir);
    }
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status();
}

/// Which store the server runs on.
#[derive(Debug, Clone)]
pub enum Backend {
    /// A fresh SQLite file in the run's temp dir.
    Sqlite,
    /// A fresh database created on this server (URL of an existing
    /// database, used to run `CREATE DATABASE`).
    Postgres(String),
}

impl Backend {
    /// `sqlite` or `postgres`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres(_) => "postgres",
        }
    }
}

/// One outbound webhook in the generated config.
#[derive(Debug, Clone)]
pub struct HookSpec {
    /// Its name (also the last path segment of its URL).
    pub name: String,
    /// Receiver address.
    pub addr: SocketAddr,
    /// Only these gateways, or all.
    pub gateways: Option<Vec<String>>,
    /// `batch`: up to this many deliveries per POST; `None`: one.
    pub batch: Option<usize>,
}

/// What the generated config contains beyond the fixed parts.
#[derive(Debug, Clone, Default)]
pub struct Spec {
    /// Gateway names; each has the API account as an `inout` member.
    pub gateways: Vec<String>,
    /// Webhooks of the API account.
    pub hooks: Vec<HookSpec>,
    /// More `inout` members, as (gateway, account, channel): e.g. a
    /// Telegram group of account `telegram.main`.
    pub members: Vec<(String, String, String)>,
    /// TOML appended to the config as is: the sections of the accounts
    /// `members` name (e.g. `[telegram.main]`).
    pub extra: String,
    /// The database URL of another setup (an instance of the same
    /// cluster): used as is, neither created nor dropped here.
    pub database: Option<String>,
}

impl Spec {
    /// One gateway `g0`, no webhooks.
    pub fn simple() -> Self {
        Self {
            gateways: vec!["g0".into()],
            ..Self::default()
        }
    }
}

/// `database.durability` for every server of this run (`--durability`).
pub static DURABILITY: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// A free loopback port (bound and released; good enough on loopback).
pub fn free_port() -> anyhow::Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0").context("binding a loopback port")?;
    Ok(l.local_addr()?)
}

/// A config and data dir, reusable across restarts.
pub struct Setup {
    bin: PathBuf,
    dir: tempfile::TempDir,
    config: PathBuf,
    /// The bot API listener.
    pub api: SocketAddr,
    /// The admin listener (`/metrics`).
    pub admin: SocketAddr,
    pg: Option<(String, String)>,
    url: String,
}

impl Setup {
    /// Creates the temp dir (and the PostgreSQL database) and writes the
    /// config.
    pub fn new(bin: &Path, tmp: &Path, backend: &Backend, spec: &Spec) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("switchboard-bench.")
            .tempdir_in(tmp)
            .with_context(|| format!("creating a temp dir in {}", tmp.display()))?;
        DIRS.lock()
            .expect("dir list")
            .push(dir.path().to_path_buf());
        let data = dir.path().join("data");
        fs::create_dir_all(&data)?;
        let api = free_port()?;
        let admin = free_port()?;
        let (url, pg) = match (backend, &spec.database) {
            (_, Some(url)) => (url.clone(), None),
            (Backend::Sqlite, None) => (format!("sqlite://{}", data.join("sb.db").display()), None),
            (Backend::Postgres(base), None) => {
                let (url, name) = create_database(base)?;
                (url, Some((base.clone(), name)))
            }
        };
        let mut c = String::new();
        let _ = writeln!(
            c,
            "# Generated by switchboard-bench.\n[general]\ndata_dir = {data:?}\nadmin_bind = \"{admin}\"\n"
        );
        let _ = writeln!(c, "[database]\nurl = {url:?}");
        // Written only when not the default, so a binary from before the
        // setting existed can still be measured with the default.
        if let Some(d) = DURABILITY.get().filter(|d| *d != "fsync") {
            let _ = writeln!(c, "durability = {d:?}");
        }
        c.push('\n');
        c.push_str(
            "[outbox]\nbackoff_initial = \"100ms\"\nbackoff_max = \"1s\"\nsend_timeout = \"2s\"\n\n",
        );
        let _ = writeln!(c, "[api.bench]\nbind = \"{api}\"\n");
        for (name, token) in [("producer", PRODUCER), ("consumer", CONSUMER)] {
            let _ = writeln!(
                c,
                "[[api.bench.tokens]]\nname = \"{name}\"\ntoken = \"{token}\"\n"
            );
        }
        for h in &spec.hooks {
            let _ = writeln!(
                c,
                "[[api.bench.webhooks]]\nname = \"{}\"\nurl = \"http://{}/hook/{}\"\nsecret = \"{HOOK_SECRET}\"\ntimeout = \"2s\"",
                h.name, h.addr, h.name
            );
            if let Some(g) = &h.gateways {
                let _ = writeln!(c, "gateways = {g:?}");
            }
            if let Some(n) = h.batch {
                let _ = writeln!(c, "batch = {n}");
            }
            c.push('\n');
        }
        for g in &spec.gateways {
            let _ = writeln!(
                c,
                "[[gateway]]\nname = \"{g}\"\nnotice_after = \"5s\"\n[[gateway.inout]]\naccount = \"api.bench\"\nchannel = \"api\"\n"
            );
            for (_, account, channel) in spec.members.iter().filter(|m| m.0 == *g) {
                let _ = writeln!(
                    c,
                    "[[gateway.inout]]\naccount = \"{account}\"\nchannel = \"{channel}\"\n"
                );
            }
        }
        c.push_str(&spec.extra);
        let config = dir.path().join("switchboard.toml");
        fs::write(&config, c)?;
        Ok(Self {
            bin: bin.to_path_buf(),
            dir,
            config,
            api,
            admin,
            pg,
            url,
        })
    }

    /// The database URL in the config.
    pub fn database_url(&self) -> &str {
        &self.url
    }

    /// The server's data directory (the SQLite file lives here).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The server's whole log so far (also after it stopped).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("switchboard.log")).unwrap_or_default()
    }

    /// Starts switchboard and waits until the bot API accepts connections.
    pub fn spawn(&self) -> anyhow::Result<Server> {
        let log_path = self.dir.path().join("switchboard.log");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--config")
            .arg(&self.config)
            .arg("run")
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("SWITCHBOARD") {
                cmd.env_remove(k);
            }
        }
        let started_ns = crate::report::now_ns();
        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        LIVE.lock().expect("pid list").push(child.id());
        // Poll with short sleeps so the figure is good to a fraction of a
        // millisecond without spinning against the starting server.
        let deadline = started + Duration::from_secs(60);
        let accepted = loop {
            if TcpStream::connect(self.api).is_ok() {
                break started.elapsed();
            }
            if let Some(status) = child.try_wait()? {
                let log = fs::read_to_string(&log_path).unwrap_or_default();
                bail!("switchboard exited with {status} before listening:\n{log}");
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("switchboard did not listen on {} within 60 s", self.api);
            }
            std::thread::sleep(Duration::from_micros(200));
        };
        Ok(Server {
            pid: child.id(),
            child: Some(child),
            started_ns,
            accepted,
            api: self.api,
            log: log_path,
        })
    }

    /// Drops the PostgreSQL database, if one was created, and the temp dir.
    pub fn cleanup(self) {
        DIRS.lock()
            .expect("dir list")
            .retain(|d| d != self.dir.path());
        if let Some((base, name)) = &self.pg {
            let _ = psql(
                base,
                &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            );
        }
    }
}

/// A running switchboard.
pub struct Server {
    /// Its pid.
    pub pid: u32,
    child: Option<Child>,
    /// When it was exec'd, on the bench clock.
    pub started_ns: u64,
    /// How long after exec the bot API accepted a TCP connection.
    pub accepted: Duration,
    /// The bot API address.
    pub api: SocketAddr,
    log: PathBuf,
}

/// Memory figures from `/proc/<pid>/status`, in kB.
#[derive(Debug, Clone, Copy, Default)]
pub struct Mem {
    /// Resident set now.
    pub rss_kb: u64,
    /// Peak resident set since start.
    pub hwm_kb: u64,
}

impl Server {
    /// CPU time (user + system, all threads) used so far.
    pub fn cpu(&self) -> anyhow::Result<Duration> {
        proc_cpu(&self.pid.to_string())
    }

    /// Context switches so far (voluntary and involuntary), summed over
    /// the threads alive now: each wake-up of a thread that waited (a
    /// hand-off to another thread and back is two) is one. Threads that
    /// already exited are not counted; switchboard's (the runtime's
    /// workers, sqlx's SQLite threads) live as long as it does.
    pub fn switches(&self) -> u64 {
        let Ok(tasks) = fs::read_dir(format!("/proc/{}/task", self.pid)) else {
            return 0;
        };
        tasks
            .flatten()
            .filter_map(|t| fs::read_to_string(t.path().join("status")).ok())
            .map(|status| {
                // `voluntary_ctxt_switches:` and `nonvoluntary_ctxt_switches:`.
                status
                    .lines()
                    .filter_map(|l| l.split_once(':'))
                    .filter(|(key, _)| key.ends_with("ctxt_switches"))
                    .filter_map(|(_, n)| n.trim().parse::<u64>().ok())
                    .sum::<u64>()
            })
            .sum()
    }

    /// Resident memory now and at peak.
    pub fn mem(&self) -> anyhow::Result<Mem> {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        Ok(Mem {
            rss_kb: field("VmRSS:"),
            hwm_kb: field("VmHWM:"),
        })
    }

    /// Fails with the log if the process has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(child) = &mut self.child {
            if let Some(status) = child.try_wait()? {
                bail!("switchboard exited with {status}:\n{}", self.log_tail());
            }
        }
        Ok(())
    }

    /// The last lines of its log.
    pub fn log_tail(&self) -> String {
        let log = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// SIGTERM, then SIGKILL after 10 s.
    pub fn stop(mut self) {
        self.terminate();
    }

    /// SIGKILL: no chance to finish anything.
    pub fn kill9(mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        LIVE.lock().expect("pid list").retain(|p| *p != self.pid);
    }

    fn terminate(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        signal(self.pid, "TERM");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() > deadline => {
                    eprintln!(
                        "  switchboard {} ignored SIGTERM for 10 s; killing",
                        self.pid
                    );
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        LIVE.lock().expect("pid list").retain(|p| *p != self.pid);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// CPU use over the measured stretch of a run, from [`Meter::start`] to
/// [`Meter::read`].
pub struct Meter {
    server0: Duration,
    switches0: u64,
    own0: Duration,
    busy0: Duration,
    wall0: Instant,
}

/// What a [`Meter`] read.
#[derive(Debug, Clone, Copy)]
pub struct Used {
    /// The server's CPU time.
    pub cpu: Duration,
    /// This bench's (load generator, consumers, in-process fakes).
    pub own: Duration,
    /// CPUs busy with anything else meanwhile, on average: should be ~0.
    pub others: f64,
    /// The server's context switches ([`Server::switches`]).
    pub switches: u64,
}

impl Meter {
    /// Starts measuring.
    pub fn start(server: &Server) -> anyhow::Result<Self> {
        Ok(Self {
            server0: server.cpu()?,
            switches0: server.switches(),
            own0: proc_cpu("self")?,
            busy0: machine_busy(),
            wall0: Instant::now(),
        })
    }

    /// What was used since [`Meter::start`].
    pub fn read(&self, server: &Server) -> anyhow::Result<Used> {
        let cpu = server.cpu()? - self.server0;
        let switches = server.switches().saturating_sub(self.switches0);
        let own = proc_cpu("self")? - self.own0;
        let others = machine_busy()
            .saturating_sub(self.busy0)
            .saturating_sub(cpu + own)
            .as_secs_f64()
            / self.wall0.elapsed().as_secs_f64();
        Ok(Used {
            cpu,
            own,
            others,
            switches,
        })
    }
}

/// CPU time (user + system, all threads) of `/proc/<pid>` (or `self`).
pub fn proc_cpu(pid: &str) -> anyhow::Result<Duration> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may hold spaces; fields resume after its ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("odd /proc/pid/stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] is field 3 (state): utime is field 14, stime field 15.
    let ticks: u64 = f[11].parse::<u64>()? + f[12].parse::<u64>()?;
    Ok(Duration::from_nanos(ticks * 1_000_000_000 / clk_tck()))
}

/// CPU time the whole machine spent busy (all CPUs, from `/proc/stat`).
pub fn machine_busy() -> Duration {
    let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: u64 = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .enumerate()
        // user nice system idle iowait irq softirq steal: idle and iowait
        // are not busy; guest time is already in user.
        .filter(|(i, _)| matches!(i, 0 | 1 | 2 | 5 | 6 | 7))
        .filter_map(|(_, v)| v.parse::<u64>().ok())
        .sum();
    Duration::from_nanos(ticks * 1_000_000_000 / clk_tck())
}

/// CPU time of this bench plus every child it has reaped.
pub fn own_and_children_cpu() -> Duration {
    let Ok(stat) = fs::read_to_string("/proc/self/stat") else {
        return Duration::ZERO;
    };
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return Duration::ZERO;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime, stime, cutime, cstime: fields 14 to 17.
    let ticks: u64 = f[11..15].iter().filter_map(|v| v.parse::<u64>().ok()).sum();
    Duration::from_nanos(ticks * 1_000_000_000 / clk_tck())
}

fn clk_tck() -> u64 {
    static TCK: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TCK.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100)
    })
}

/// Runs one query with psql; its rows, one per line, fields split by `|`.
pub fn psql_rows(url: &str, sql: &str) -> anyhow::Result<Vec<Vec<String>>> {
    let out = Command::new("psql")
        .arg(url)
        .args(["-v", "ON_ERROR_STOP=1", "-q", "-A", "-t", "-c", sql])
        .output()
        .context("running psql (install the PostgreSQL client to bench PostgreSQL)")?;
    if !out.status.success() {
        bail!(
            "psql {sql:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| l.split('|').map(str::to_owned).collect())
        .collect())
}

fn psql(url: &str, sql: &str) -> anyhow::Result<()> {
    let out = Command::new("psql")
        .arg(url)
        .args(["-v", "ON_ERROR_STOP=1", "-q", "-c", sql])
        .output()
        .context("running psql (install the PostgreSQL client to bench PostgreSQL)")?;
    if !out.status.success() {
        bail!(
            "psql {sql:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Creates a fresh database next to the one `base` names; returns its URL
/// and name.
fn create_database(base: &str) -> anyhow::Result<(String, String)> {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = format!("sbbench_{}_{n}", std::process::id());
    psql(base, &format!("CREATE DATABASE {name}"))?;
    Ok((with_database(base, &name)?, name))
}

/// `base` with its database path replaced by `name`, query kept.
fn with_database(base: &str, name: &str) -> anyhow::Result<String> {
    let scheme_end = base.find("://").context("postgres URL needs ://")? + 3;
    let (head, query) = match base.find('?') {
        Some(q) => (&base[..q], &base[q..]),
        None => (base, ""),
    };
    let authority_end = head[scheme_end..]
        .find('/')
        .map_or(head.len(), |i| scheme_end + i);
    Ok(format!("{}/{name}{query}", &head[..authority_end]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_swapped_in_url() {
        assert_eq!(
            with_database("postgres://u@h:5432/postgres?sslmode=disable", "x").unwrap(),
            "postgres://u@h:5432/x?sslmode=disable"
        );
        assert_eq!(
            with_database("postgresql://h", "x").unwrap(),
            "postgresql://h/x"
        );
    }
}
