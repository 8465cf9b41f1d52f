//! A real Synapse homeserver, and the "real user" side of Matrix: plain
//! client-server API calls, independent of the adapter. Nothing about
//! Matrix is mocked: this launches the real homeserver (Python, from PyPI)
//! as a child process. Behind the feature `synapse`; the workspace's Matrix
//! tests (`tests/it/matrix.rs`) and the benchmark (`bench`, scenario 9) use
//! it.
//!
//! Synapse lives in a cached virtualenv that `tests/support/synapse-venv.sh`
//! installs once (`.ci/run` runs it before the tests; [`synapse_venv`] runs
//! it too, and it returns at once when the install is there). The script is
//! found in the workspace this crate was built from, or where
//! `SWITCHBOARD_SYNAPSE_VENV_SCRIPT` says; `SWITCHBOARD_SYNAPSE_VENV` says
//! where the venv lives (see the script). Each [`Synapse`] is a process of
//! its own on a free loopback port with its SQLite database, media and log
//! in the directory the caller gives, so several run in parallel. A
//! watchdog kills it when the process that started it dies, even by
//! SIGKILL.
//!
//! By default every `rc_*` rate limit is raised out of reach; a relay-bot
//! test asks for Synapse's own ([`RateLimits::Default`], through
//! [`Synapse::start_opts`]), as the homeservers people run keep them. The
//! users' client waits out a rate limit as every real client does.
//! [`proxy::Proxy`] sits between the bridge and Synapse when a test needs
//! a file that fails (502) or stalls, or an answer that is lost.
//!
//! The helpers panic on what should not happen (a call refused, an answer
//! without the expected field), with the server's answer in the message:
//! they are for tests and benchmarks, not for the bridge.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine as _;

pub mod peer;
pub mod proxy;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use switchboard_core::testkit::free_port;

/// How long Synapse may take to start or stop, and how long `wait_for` polls.
pub const SYNAPSE_PATIENCE: Duration = Duration::from_secs(60);

const SERVER_NAME: &str = "localhost";

/// The version `tests/support/synapse-venv.sh` pins (its template database's
/// name carries it).
pub const SYNAPSE_VERSION: &str = "1.163.2";

/// The script that installs Synapse: `SWITCHBOARD_SYNAPSE_VENV_SCRIPT`, else
/// `tests/support/synapse-venv.sh` of the workspace this crate was built
/// from.
pub fn venv_script() -> PathBuf {
    match std::env::var_os("SWITCHBOARD_SYNAPSE_VENV_SCRIPT") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/support/synapse-venv.sh"),
    }
}

/// The venv with Synapse, installed by [`venv_script`] on first use in this
/// process; `Err` says why there is none.
pub fn try_synapse_venv() -> Result<&'static Path, String> {
    static VENV: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    VENV.get_or_init(|| {
        let script = venv_script();
        let shown = script.display();
        let out = Command::new("bash")
            .arg(&script)
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("cannot run {shown}: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "{shown} failed ({}): Synapse is not installed",
                out.status
            ));
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let venv = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
        if !venv.join("bin/python").exists() {
            return Err(format!("{shown} printed {venv:?}, which has no bin/python"));
        }
        Ok(venv)
    })
    .as_deref()
    .map_err(Clone::clone)
}

/// As [`try_synapse_venv`], panicking when Synapse cannot be installed.
pub fn synapse_venv() -> &'static Path {
    try_synapse_venv().unwrap_or_else(|e| panic!("{e}"))
}

/// A running Synapse homeserver (`server_name` "localhost").
pub struct Synapse {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
    watchdog: Option<Child>,
    paused: bool,
    starts: usize,
    shared_secret: String,
    http: reqwest::Client,
    /// How long the last start took, until `/_matrix/client/versions` answered.
    pub start_time: Duration,
}

/// How strictly a test homeserver rate-limits its users.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RateLimits {
    /// Every `rc_*` limit raised out of reach: for tests about something
    /// else, and for application services (whose registration exempts
    /// them anyway).
    #[default]
    Relaxed,
    /// Synapse's own defaults (`rc_message`: 0.2 per second, burst 10, per
    /// user), as on the homeservers people run: for relay-bot tests.
    Default,
}

/// How to start a [`Synapse`]: [`Synapse::start_opts`].
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Application service registration files to load.
    pub appservices: Vec<PathBuf>,
    /// Relaxed (the default) or Synapse's own limits.
    pub rate_limits: RateLimits,
    /// Appended to `hs.yaml`: a key given there replaces the harness's
    /// (the last occurrence wins).
    pub extra_yaml: String,
}

impl Synapse {
    /// Starts Synapse with its files in `dir` (created if missing), loading
    /// the given appservice registration files.
    pub async fn start(dir: &Path, appservice_registrations: &[PathBuf]) -> Synapse {
        Self::start_with(dir, appservice_registrations, "").await
    }

    /// As [`Synapse::start`], with `extra_yaml` appended to `hs.yaml`: a key
    /// given there replaces the harness's (the last occurrence wins), e.g.
    /// `"rc_message: {per_second: 0.5, burst_count: 2}\n"` for a test that
    /// wants to be rate-limited.
    pub async fn start_with(
        dir: &Path,
        appservice_registrations: &[PathBuf],
        extra_yaml: &str,
    ) -> Synapse {
        Self::try_start_with(dir, appservice_registrations, extra_yaml)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// As [`Synapse::start_with`]; `Err` (with the end of Synapse's log)
    /// instead of a panic when it cannot be installed or does not start.
    pub async fn try_start_with(
        dir: &Path,
        appservice_registrations: &[PathBuf],
        extra_yaml: &str,
    ) -> Result<Synapse, String> {
        let opts = Options {
            appservices: appservice_registrations.to_vec(),
            rate_limits: RateLimits::Relaxed,
            extra_yaml: extra_yaml.to_owned(),
        };
        Self::try_start_opts(dir, &opts).await
    }

    /// Starts Synapse as `opts` say; panics when it does not start.
    pub async fn start_opts(dir: &Path, opts: &Options) -> Synapse {
        Self::try_start_opts(dir, opts)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// As [`Synapse::start_opts`]; `Err` (with the end of Synapse's log)
    /// instead of a panic.
    pub async fn try_start_opts(dir: &Path, opts: &Options) -> Result<Synapse, String> {
        let venv = try_synapse_venv()?;
        let io = |what: &str, e: std::io::Error| format!("{what} in {}: {e}", dir.display());
        std::fs::create_dir_all(dir.join("media")).map_err(|e| io("creating media/", e))?;
        let dir = dir.canonicalize().map_err(|e| io("canonicalize", e))?;
        let template = venv.join(format!("switchboard-template-{SYNAPSE_VERSION}.db"));
        let db = dir.join("homeserver.db");
        if template.exists() && !db.exists() {
            std::fs::copy(&template, &db).map_err(|e| io("copying the template database", e))?;
        }
        let seed: [u8; 32] = rand::random();
        std::fs::write(
            dir.join("signing.key"),
            format!(
                "ed25519 a_sb {}\n",
                base64::engine::general_purpose::STANDARD_NO_PAD.encode(seed)
            ),
        )
        .map_err(|e| io("writing signing.key", e))?;
        std::fs::write(dir.join("log.yaml"), log_yaml(&dir))
            .map_err(|e| io("writing log.yaml", e))?;
        let mut hs = Synapse {
            dir,
            port: 0,
            child: None,
            watchdog: None,
            paused: false,
            starts: 0,
            shared_secret: hex::encode(rand::random::<[u8; 16]>()),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            start_time: Duration::ZERO,
        };
        // Another test may take the free port before Synapse binds it.
        for _ in 0..5 {
            hs.port = free_port();
            let yaml = hs.hs_yaml(opts);
            std::fs::write(hs.dir.join("hs.yaml"), yaml).map_err(|e| io("writing hs.yaml", e))?;
            match hs.spawn_and_wait().await {
                Ok(()) => return Ok(hs),
                Err(log) if log.contains("Address already in use") => continue,
                Err(log) => return Err(format!("Synapse did not start:\n{log}")),
            }
        }
        Err(format!("Synapse found no free port:\n{}", hs.log_tail(40)))
    }

    fn hs_yaml(&self, opts: &Options) -> String {
        let (registrations, extra) = (&opts.appservices, &opts.extra_yaml);
        let d = &self.dir;
        let q = |p: PathBuf| serde_json::to_string(p.to_str().unwrap()).unwrap();
        let regs: Vec<String> = registrations
            .iter()
            .map(|p| q(std::path::absolute(p).unwrap()))
            .collect();
        let limits = match opts.rate_limits {
            RateLimits::Default => String::new(),
            RateLimits::Relaxed => relaxed_limits(),
        };
        format!(
            r#"# Written by switchboard_matrix::synapse.
server_name: "{SERVER_NAME}"
public_baseurl: "http://127.0.0.1:{port}/"
listeners:
  - port: {port}
    bind_addresses: ["127.0.0.1"]
    type: http
    tls: false
    x_forwarded: false
    resources:
      - names: [client]
        compress: false
database:
  name: sqlite3
  args:
    database: {db}
log_config: {log}
media_store_path: {media}
signing_key_path: {key}
registration_shared_secret: "{secret}"
macaroon_secret_key: "{secret}-macaroon"
form_secret: "{secret}-form"
enable_registration: false
report_stats: false
trusted_key_servers: []
suppress_key_server_warning: true
url_preview_enabled: false
max_upload_size: 50M
enable_authenticated_media: true
bcrypt_rounds: 4
presence:
  enabled: false
room_list_publication_rules:
  - action: allow
app_service_config_files: [{regs}]
{limits}{extra}
"#,
            port = self.port,
            db = q(d.join("homeserver.db")),
            log = q(d.join("log.yaml")),
            media = q(d.join("media")),
            key = q(d.join("signing.key")),
            secret = self.shared_secret,
            regs = regs.join(", "),
        )
    }

    /// Spawns the process (and its watchdog) and waits for the client API.
    /// `Err` carries the log when the process exited or never answered.
    async fn spawn_and_wait(&mut self) -> Result<(), String> {
        assert!(self.child.is_none(), "Synapse is already running");
        self.starts += 1;
        let venv = try_synapse_venv()?;
        let stderr = std::fs::File::create(self.stderr_path())
            .map_err(|e| format!("creating {}: {e}", self.stderr_path().display()))?;
        let stdout = stderr
            .try_clone()
            .map_err(|e| format!("duplicating a file handle: {e}"))?;
        let started = Instant::now();
        let child = Command::new(venv.join("bin/python"))
            .args(["-m", "synapse.app.homeserver", "-c"])
            .arg(self.dir.join("hs.yaml"))
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("cannot spawn Synapse: {e}"))?;
        // Kills Synapse (even a paused one) once the process that started
        // it is gone.
        let watchdog = Command::new("sh")
            .arg("-c")
            .arg(
                "while kill -0 \"$1\" 2>/dev/null; do sleep 1; done; \
                 kill -KILL \"$2\" 2>/dev/null",
            )
            .arg("synapse-watchdog")
            .arg(std::process::id().to_string())
            .arg(child.id().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let watchdog = match watchdog {
            Ok(w) => w,
            Err(e) => {
                let mut child = child;
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("cannot spawn Synapse's watchdog: {e}"));
            }
        };
        self.child = Some(child);
        self.watchdog = Some(watchdog);
        self.paused = false;
        let probe = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        let url = format!("{}/_matrix/client/versions", self.url());
        loop {
            if let Ok(r) = probe.get(&url).send().await {
                if r.status().is_success() {
                    self.start_time = started.elapsed();
                    return Ok(());
                }
            }
            let exited = match self.child.as_mut().map(Child::try_wait) {
                Some(Ok(status)) => status.map(|s| s.to_string()),
                Some(Err(e)) => Some(format!("an error ({e})")),
                None => Some("no process".into()),
            };
            if let Some(status) = exited {
                self.child = None;
                self.kill_watchdog();
                return Err(format!(
                    "Synapse exited with {status}:\n{}",
                    self.log_tail(60)
                ));
            }
            if started.elapsed() > SYNAPSE_PATIENCE {
                let log = self.log_tail(60);
                self.kill9();
                return Err(format!(
                    "Synapse did not answer {url} within {SYNAPSE_PATIENCE:?}:\n{log}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `http://127.0.0.1:<port>`, no trailing slash.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn server_name(&self) -> &str {
        SERVER_NAME
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `@localpart:localhost`.
    pub fn user_id(&self, localpart: &str) -> String {
        format!("@{localpart}:{SERVER_NAME}")
    }

    /// The running process's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("Synapse is running").id()
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    fn stderr_path(&self) -> PathBuf {
        self.dir.join(format!("synapse.stderr.{}.log", self.starts))
    }

    /// Synapse's log (WARNING and above, every start) and the current start's
    /// stdout and stderr.
    pub fn log(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("homeserver.log")).unwrap_or_default();
        let stderr = std::fs::read_to_string(self.stderr_path()).unwrap_or_default();
        if stderr.trim().is_empty() {
            log
        } else {
            format!("{log}--- stdout/stderr ---\n{stderr}")
        }
    }

    /// The last `n` lines of [`Synapse::log`].
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{sig} Synapse failed");
    }

    /// SIGTERM, and waits for the process to exit (SIGKILL and a panic after
    /// [`SYNAPSE_PATIENCE`]).
    pub async fn stop(&mut self) {
        if self.child.is_none() {
            return;
        }
        self.signal("TERM");
        if self.paused {
            self.signal("CONT");
            self.paused = false;
        }
        let deadline = Instant::now() + SYNAPSE_PATIENCE;
        loop {
            if self.child.as_mut().unwrap().try_wait().unwrap().is_some() {
                self.child = None;
                self.kill_watchdog();
                return;
            }
            if Instant::now() > deadline {
                let log = self.log_tail(40);
                self.kill9();
                panic!("Synapse did not stop on SIGTERM within {SYNAPSE_PATIENCE:?}:\n{log}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL: a crash.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.paused = false;
        self.kill_watchdog();
    }

    fn kill_watchdog(&mut self) {
        if let Some(mut w) = self.watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
    }

    /// Starts it again after [`Synapse::stop`] or [`Synapse::kill9`]: same
    /// port, config and data.
    pub async fn start_again(&mut self) {
        if let Err(log) = self.spawn_and_wait().await {
            panic!("Synapse did not start again on port {}:\n{log}", self.port);
        }
    }

    /// SIGSTOP: connections stay open and nothing answers (a hung server).
    pub fn pause(&mut self) {
        self.signal("STOP");
        self.paused = true;
    }

    /// SIGCONT after [`Synapse::pause`].
    pub fn resume(&mut self) {
        self.signal("CONT");
        self.paused = false;
    }

    /// Registers a user through the shared-secret admin API
    /// (`/_synapse/admin/v1/register`) and returns it logged in.
    pub async fn register(&self, name: &str, admin: bool) -> MxUser {
        let url = format!("{}/_synapse/admin/v1/register", self.url());
        let nonce: Value = self
            .http
            .get(&url)
            .send()
            .await
            .expect("GET register nonce")
            .json()
            .await
            .unwrap();
        let nonce = nonce["nonce"].as_str().expect("a nonce").to_owned();
        let password = format!("pw-{name}");
        let msg = format!(
            "{nonce}\0{name}\0{password}\0{}",
            if admin { "admin" } else { "notadmin" }
        );
        let mac = hex::encode(hmac_sha1(self.shared_secret.as_bytes(), msg.as_bytes()));
        let r = self
            .http
            .post(&url)
            .json(&json!({
                "nonce": nonce, "username": name, "password": password,
                "admin": admin, "mac": mac,
            }))
            .send()
            .await
            .expect("POST register");
        let status = r.status();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "registering {name}: {status} {body}");
        MxUser {
            hs: self.url(),
            http: self.http.clone(),
            user_id: body["user_id"].as_str().unwrap().to_owned(),
            token: Arc::new(Mutex::new(
                body["access_token"].as_str().unwrap().to_owned(),
            )),
            login: Some(Login {
                user: name.to_owned(),
                password,
                device_id: body["device_id"].as_str().unwrap_or_default().to_owned(),
            }),
            masquerade: None,
        }
    }

    /// An appservice's client: `as_token`, acting as its sender, or as
    /// `user_id` (`?user_id=` masquerading) when given.
    pub fn appservice(&self, as_token: &str, user_id: Option<&str>) -> MxUser {
        MxUser {
            hs: self.url(),
            http: self.http.clone(),
            user_id: user_id.unwrap_or_default().to_owned(),
            token: Arc::new(Mutex::new(as_token.to_owned())),
            login: None,
            masquerade: user_id.map(str::to_owned),
        }
    }

    /// Registers `localpart` in an appservice's exclusive namespace
    /// (`m.login.application_service`) and returns the appservice's client
    /// masquerading as it.
    pub async fn appservice_register(&self, as_token: &str, localpart: &str) -> MxUser {
        let asc = self.appservice(as_token, None);
        let (status, body) = asc
            .request(
                Method::POST,
                "/_matrix/client/v3/register",
                Some(&json!({
                    "type": "m.login.application_service",
                    "username": localpart,
                    "inhibit_login": true,
                })),
            )
            .await;
        assert!(
            status.is_success() || body["errcode"] == "M_USER_IN_USE",
            "appservice registering {localpart}: {status} {body}"
        );
        self.appservice(as_token, Some(&self.user_id(localpart)))
    }
}

impl Drop for Synapse {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Every `rc_*` rate limit raised out of reach.
fn relaxed_limits() -> String {
    let rc = "{per_second: 100000, burst_count: 1000000}";
    format!(
        r#"rc_message: {rc}
rc_registration: {rc}
rc_registration_token_validity: {rc}
rc_login:
  address: {rc}
  account: {rc}
  failed_attempts: {rc}
rc_admin_redaction: {rc}
rc_joins:
  local: {rc}
  remote: {rc}
rc_joins_per_room: {rc}
rc_3pid_validation: {rc}
rc_invites:
  per_room: {rc}
  per_user: {rc}
  per_issuer: {rc}
rc_third_party_invite: {rc}
rc_media_create: {rc}
rc_key_requests: {rc}
rc_presence:
  per_user: {rc}
rc_delayed_event_mgmt: {rc}
rc_room_creation: {rc}
rc_reports: {rc}
rc_user_directory: {rc}
rc_profile: {rc}
rc_federation:
  window_size: 1000
  sleep_limit: 100000
  sleep_delay: 1
  reject_limit: 100000
  concurrent: 1000
"#
    )
}

fn log_yaml(dir: &Path) -> String {
    format!(
        r#"version: 1
formatters:
  precise:
    format: "%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(request)s - %(message)s"
filters:
  context:
    (): synapse.logging.context.LoggingContextFilter
    request: ""
handlers:
  file:
    class: logging.FileHandler
    filename: {}
    formatter: precise
    filters: [context]
root:
  level: WARNING
  handlers: [file]
disable_existing_loggers: false
"#,
        serde_json::to_string(dir.join("homeserver.log").to_str().unwrap()).unwrap()
    )
}

/// Writes an appservice registration file as Synapse reads it: the users
/// matching `user_regex` are the appservice's exclusively, and it is not
/// rate-limited.
pub fn write_registration(
    path: &Path,
    id: &str,
    url: &str,
    as_token: &str,
    hs_token: &str,
    sender_localpart: &str,
    user_regex: &str,
) {
    // JSON strings are YAML double-quoted scalars.
    let s = |v: &str| serde_json::to_string(v).unwrap();
    let yaml = format!(
        "id: {}\nurl: {}\nas_token: {}\nhs_token: {}\nsender_localpart: {}\n\
         rate_limited: false\nnamespaces:\n  users:\n    - exclusive: true\n      regex: {}\n  \
         aliases: []\n  rooms: []\n",
        s(id),
        s(url),
        s(as_token),
        s(hs_token),
        s(sender_localpart),
        s(user_regex),
    );
    std::fs::write(path, yaml).unwrap();
}

/// A Matrix client: a registered user, or an appservice (masquerading or not).
#[derive(Clone)]
pub struct MxUser {
    hs: String,
    http: reqwest::Client,
    pub user_id: String,
    /// The access token; replaced when the user logs in again after a soft
    /// logout (shared by the clones).
    token: Arc<Mutex<String>>,
    /// How a registered user logs in again.
    login: Option<Login>,
    /// `?user_id=` on every request (an appservice acting as one of its users).
    pub masquerade: Option<String>,
}

#[derive(Clone)]
struct Login {
    user: String,
    password: String,
    device_id: String,
}

/// Percent-encodes one path segment or query value.
pub fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn txn_id() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "sbtest.{}.{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

impl MxUser {
    fn url_for(&self, path: &str) -> String {
        let mut url = format!("{}{path}", self.hs);
        if let Some(u) = &self.masquerade {
            url.push(if path.contains('?') { '&' } else { '?' });
            url.push_str("user_id=");
            url.push_str(&enc(u));
        }
        url
    }

    /// One client-server API call; the status and the JSON body (`Null` when
    /// the body is not JSON). Never panics on an error status. A rate limit
    /// (`M_LIMIT_EXCEEDED`) is waited out and the same request made again,
    /// as every real client does; a homeserver with its default limits
    /// refuses a person typing fast, too.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        loop {
            let (status, v) = self.request_once(method.clone(), path, body).await;
            if status == StatusCode::UNAUTHORIZED && v["soft_logout"] == true {
                // The session ended (an expired token): log in again, as the
                // same device, and make the same request.
                if let Some(login) = &self.login {
                    self.log_in_again(login).await;
                    continue;
                }
            }
            if status != StatusCode::TOO_MANY_REQUESTS || v["errcode"] != "M_LIMIT_EXCEEDED" {
                return (status, v);
            }
            let wait = v["retry_after_ms"].as_u64().unwrap_or(1000).min(60_000);
            tokio::time::sleep(Duration::from_millis(wait)).await;
        }
    }

    /// The access token this user sends now.
    pub fn access_token(&self) -> String {
        self.token.lock().unwrap().clone()
    }

    async fn log_in_again(&self, login: &Login) {
        let r = self
            .http
            .post(format!("{}/_matrix/client/v3/login", self.hs))
            .json(&json!({"type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": login.user},
                "password": login.password, "device_id": login.device_id}))
            .send()
            .await
            .unwrap_or_else(|e| panic!("login as {}: {e}", self.user_id));
        let status = r.status();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        assert!(
            status.is_success(),
            "login as {}: {status} {v}",
            self.user_id
        );
        *self.token.lock().unwrap() = v["access_token"].as_str().unwrap().to_owned();
    }

    /// As [`MxUser::request`], without waiting out a rate limit.
    pub async fn request_once(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method.clone(), self.url_for(path))
            .bearer_auth(self.access_token());
        if let Some(b) = body {
            req = req.json(b);
        }
        let r = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path} as {}: {e}", self.user_id));
        let status = r.status();
        let text = r.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// As [`MxUser::request`], panicking unless the status is 2xx.
    pub async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Value {
        let (status, v) = self.request(method.clone(), path, body).await;
        assert!(
            status.is_success(),
            "{method} {path} as {}: {status} {v}",
            self.user_id
        );
        v
    }

    pub async fn get(&self, path: &str) -> Value {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Value {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Value {
        self.call(Method::PUT, path, Some(body)).await
    }

    /// `GET /account/whoami`: the user id the server sees.
    pub async fn whoami(&self) -> String {
        let v = self.get("/_matrix/client/v3/account/whoami").await;
        v["user_id"].as_str().unwrap().to_owned()
    }

    /// Creates a room; `alias` is a localpart (`lobby`) or a full alias
    /// (`#lobby:localhost`); `preset` defaults to `private_chat`. Returns the
    /// room id.
    pub async fn create_room(
        &self,
        alias: Option<&str>,
        invite: &[&str],
        preset: Option<&str>,
    ) -> String {
        let mut body = json!({
            "preset": preset.unwrap_or("private_chat"),
            "invite": invite,
        });
        if let Some(a) = alias {
            let local = a.trim_start_matches('#');
            let local = local.split(':').next().unwrap();
            body["room_alias_name"] = json!(local);
        }
        self.create_room_with(&body).await
    }

    /// `POST /createRoom` with the body as given; returns the room id.
    pub async fn create_room_with(&self, body: &Value) -> String {
        let v = self.post("/_matrix/client/v3/createRoom", body).await;
        v["room_id"].as_str().unwrap().to_owned()
    }

    pub async fn invite(&self, room: &str, user_id: &str) {
        self.post(
            &format!("/_matrix/client/v3/rooms/{}/invite", enc(room)),
            &json!({ "user_id": user_id }),
        )
        .await;
    }

    /// Joins a room by id or alias; returns the room id.
    pub async fn join(&self, room_or_alias: &str) -> String {
        let v = self
            .post(
                &format!("/_matrix/client/v3/join/{}", enc(room_or_alias)),
                &json!({}),
            )
            .await;
        v["room_id"].as_str().unwrap().to_owned()
    }

    pub async fn leave(&self, room: &str) {
        self.post(
            &format!("/_matrix/client/v3/rooms/{}/leave", enc(room)),
            &json!({}),
        )
        .await;
    }

    /// `GET /directory/room/{alias}`: the room id.
    pub async fn resolve_alias(&self, alias: &str) -> String {
        let v = self
            .get(&format!("/_matrix/client/v3/directory/room/{}", enc(alias)))
            .await;
        v["room_id"].as_str().unwrap().to_owned()
    }

    /// The joined members' user ids.
    pub async fn members(&self, room: &str) -> Vec<String> {
        let v = self
            .get(&format!(
                "/_matrix/client/v3/rooms/{}/joined_members",
                enc(room)
            ))
            .await;
        let mut ids: Vec<String> = v["joined"]
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        ids.sort();
        ids
    }

    pub async fn set_displayname(&self, name: &str) {
        self.put(
            &format!(
                "/_matrix/client/v3/profile/{}/displayname",
                enc(&self.user_id)
            ),
            &json!({ "displayname": name }),
        )
        .await;
    }

    /// Sends an event; returns its event id.
    pub async fn send(&self, room: &str, event_type: &str, content: &Value) -> String {
        let v = self
            .put(
                &format!(
                    "/_matrix/client/v3/rooms/{}/send/{}/{}",
                    enc(room),
                    enc(event_type),
                    txn_id()
                ),
                content,
            )
            .await;
        v["event_id"].as_str().unwrap().to_owned()
    }

    /// Sets a state event; returns its event id.
    pub async fn send_state(
        &self,
        room: &str,
        event_type: &str,
        state_key: &str,
        content: &Value,
    ) -> String {
        let v = self
            .put(
                &format!(
                    "/_matrix/client/v3/rooms/{}/state/{}/{}",
                    enc(room),
                    enc(event_type),
                    enc(state_key)
                ),
                content,
            )
            .await;
        v["event_id"].as_str().unwrap().to_owned()
    }

    /// An `m.text` message.
    pub async fn send_text(&self, room: &str, body: &str) -> String {
        self.send(
            room,
            "m.room.message",
            &json!({ "msgtype": "m.text", "body": body }),
        )
        .await
    }

    /// An `m.text` message with `org.matrix.custom.html` formatting.
    pub async fn send_html(&self, room: &str, body: &str, formatted: &str) -> String {
        self.send(
            room,
            "m.room.message",
            &json!({
                "msgtype": "m.text", "body": body,
                "format": "org.matrix.custom.html", "formatted_body": formatted,
            }),
        )
        .await
    }

    /// A media message (`m.image`, `m.file`, `m.video`, `m.audio`) for an
    /// uploaded `mxc` uri.
    pub async fn send_media(
        &self,
        room: &str,
        msgtype: &str,
        name: &str,
        mxc: &str,
        mime: &str,
        size: usize,
    ) -> String {
        self.send(
            room,
            "m.room.message",
            &json!({
                "msgtype": msgtype, "body": name, "filename": name, "url": mxc,
                "info": { "mimetype": mime, "size": size },
            }),
        )
        .await
    }

    /// A reply (`m.in_reply_to`) to `event_id`.
    pub async fn reply(&self, room: &str, event_id: &str, body: &str) -> String {
        self.send(
            room,
            "m.room.message",
            &json!({
                "msgtype": "m.text", "body": body,
                "m.relates_to": { "m.in_reply_to": { "event_id": event_id } },
            }),
        )
        .await
    }

    /// An edit (`m.replace`) of `event_id` to `new_body`, as Element
    /// sends it: the `* ` fallback, the new content in `m.new_content`.
    pub async fn edit(&self, room: &str, event_id: &str, new_body: &str) -> String {
        self.send(
            room,
            "m.room.message",
            &json!({
                "msgtype": "m.text", "body": format!("* {new_body}"),
                "m.new_content": { "msgtype": "m.text", "body": new_body, "m.mentions": {} },
                "m.mentions": {},
                "m.relates_to": { "rel_type": "m.replace", "event_id": event_id },
            }),
        )
        .await
    }

    /// A reply as clients before Matrix 1.13 sent it: the quoted original
    /// as a fallback in `body` (`> <@user> text`) and in `formatted_body`
    /// (`<mx-reply>`), then the reply itself.
    pub async fn reply_with_fallback(
        &self,
        room: &str,
        event_id: &str,
        quoted_sender: &str,
        quoted: &str,
        body: &str,
    ) -> String {
        let link = format!("https://matrix.to/#/{room}/{event_id}");
        let person = format!("https://matrix.to/#/{quoted_sender}");
        self.send(
            room,
            "m.room.message",
            &json!({
                "msgtype": "m.text",
                "body": format!("> <{quoted_sender}> {quoted}\n\n{body}"),
                "format": "org.matrix.custom.html",
                "formatted_body": format!(
                    "<mx-reply><blockquote><a href=\"{link}\">In reply to</a> \
                     <a href=\"{person}\">{quoted_sender}</a><br>{quoted}</blockquote></mx-reply>{body}"
                ),
                "m.relates_to": { "m.in_reply_to": { "event_id": event_id } },
            }),
        )
        .await
    }

    /// A sticker (`m.sticker`) as Element's sticker picker sends it: the
    /// description in `body`, the display size in `info.w`/`info.h`.
    pub async fn send_sticker(
        &self,
        room: &str,
        description: &str,
        mxc: &str,
        mime: &str,
        size: usize,
        (w, h): (u32, u32),
    ) -> String {
        self.send(
            room,
            "m.sticker",
            &json!({
                "body": description, "url": mxc,
                "info": { "mimetype": mime, "size": size, "w": w, "h": h },
            }),
        )
        .await
    }

    /// Sets `user`'s power level in `room` (the room's
    /// `m.room.power_levels`, read and written back).
    pub async fn set_power_level(&self, room: &str, user: &str, level: i64) {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/state/m.room.power_levels/",
            enc(room)
        );
        let mut levels = self.get(&path).await;
        levels["users"][user] = json!(level);
        self.put(&path, &levels).await;
    }

    /// A reaction (`m.annotation`) to `event_id`.
    pub async fn react(&self, room: &str, event_id: &str, key: &str) -> String {
        self.send(
            room,
            "m.reaction",
            &json!({
                "m.relates_to": { "rel_type": "m.annotation", "event_id": event_id, "key": key },
            }),
        )
        .await
    }

    /// Redacts `event_id`; returns the redaction's event id.
    pub async fn redact(&self, room: &str, event_id: &str, reason: Option<&str>) -> String {
        let body = match reason {
            Some(r) => json!({ "reason": r }),
            None => json!({}),
        };
        let v = self
            .put(
                &format!(
                    "/_matrix/client/v3/rooms/{}/redact/{}/{}",
                    enc(room),
                    enc(event_id),
                    txn_id()
                ),
                &body,
            )
            .await;
        v["event_id"].as_str().unwrap().to_owned()
    }

    /// Uploads bytes (`/_matrix/media/v3/upload`); returns the `mxc://` uri.
    pub async fn upload(&self, bytes: &[u8], mime: &str, filename: Option<&str>) -> String {
        let mut path = "/_matrix/media/v3/upload".to_owned();
        if let Some(f) = filename {
            path.push_str(&format!("?filename={}", enc(f)));
        }
        let r = self
            .http
            .post(self.url_for(&path))
            .bearer_auth(self.access_token())
            .header(reqwest::header::CONTENT_TYPE, mime)
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap_or_else(|e| panic!("upload as {}: {e}", self.user_id));
        let status = r.status();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        assert!(
            status.is_success(),
            "upload as {}: {status} {v}",
            self.user_id
        );
        v["content_uri"].as_str().unwrap().to_owned()
    }

    /// Downloads an `mxc://server/id` through authenticated media
    /// (`/_matrix/client/v1/media/download`); the content type and bytes.
    pub async fn download_typed(&self, mxc: &str) -> (String, Vec<u8>) {
        let rest = mxc
            .strip_prefix("mxc://")
            .unwrap_or_else(|| panic!("not an mxc uri: {mxc}"));
        let (server, id) = rest.split_once('/').expect("mxc://server/id");
        let path = format!(
            "/_matrix/client/v1/media/download/{}/{}",
            enc(server),
            enc(id)
        );
        let r = self
            .http
            .get(self.url_for(&path))
            .bearer_auth(self.access_token())
            .send()
            .await
            .unwrap_or_else(|e| panic!("download {mxc} as {}: {e}", self.user_id));
        let status = r.status();
        let ctype = r
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let bytes = r.bytes().await.unwrap().to_vec();
        assert!(
            status.is_success(),
            "download {mxc} as {}: {status} {}",
            self.user_id,
            String::from_utf8_lossy(&bytes)
        );
        (ctype, bytes)
    }

    /// As [`MxUser::download_typed`], the bytes only.
    pub async fn download(&self, mxc: &str) -> Vec<u8> {
        self.download_typed(mxc).await.1
    }

    /// One event (`GET /rooms/{id}/event/{eventId}`).
    pub async fn event(&self, room: &str, event_id: &str) -> Value {
        self.get(&format!(
            "/_matrix/client/v3/rooms/{}/event/{}",
            enc(room),
            enc(event_id)
        ))
        .await
    }

    /// The room's whole timeline as this user may see it, oldest first
    /// (`/messages?dir=f`, paginated).
    pub async fn messages(&self, room: &str) -> Vec<Value> {
        let mut events = Vec::new();
        let mut from: Option<String> = None;
        loop {
            let mut path = format!(
                "/_matrix/client/v3/rooms/{}/messages?dir=f&limit=100",
                enc(room)
            );
            if let Some(f) = &from {
                path.push_str(&format!("&from={}", enc(f)));
            }
            let v = self.get(&path).await;
            let chunk = v["chunk"].as_array().cloned().unwrap_or_default();
            if chunk.is_empty() {
                return events;
            }
            events.extend(chunk);
            match v["end"].as_str() {
                Some(end) if Some(end) != from.as_deref() => from = Some(end.to_owned()),
                _ => return events,
            }
        }
    }

    /// Polls the timeline until an event satisfies `pred` and returns it;
    /// panics naming `what` after [`SYNAPSE_PATIENCE`].
    pub async fn wait_for(&self, room: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + SYNAPSE_PATIENCE;
        loop {
            let events = self.messages(room).await;
            if let Some(e) = events.iter().find(|e| pred(e)) {
                return e.clone();
            }
            if Instant::now() > deadline {
                let last: Vec<String> = events
                    .iter()
                    .rev()
                    .take(15)
                    .rev()
                    .map(|e| format!("{} {} {}", e["type"], e["sender"], e["content"]))
                    .collect();
                panic!(
                    "timed out after {SYNAPSE_PATIENCE:?} waiting for {what} in {room} \
                     (as {}); last events:\n{}",
                    self.user_id,
                    last.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits for an `m.room.message` whose `body` is `body`.
    pub async fn wait_for_text(&self, room: &str, body: &str) -> Value {
        self.wait_for(room, &format!("a message {body:?}"), |e| {
            e["type"] == "m.room.message" && e["content"]["body"] == body
        })
        .await
    }
}

/// HMAC-SHA1 (RFC 2104), for Synapse's shared-secret registration; no SHA-1
/// crate is a dependency.
pub fn hmac_sha1(key: &[u8], msg: &[u8]) -> [u8; 20] {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..20].copy_from_slice(&sha1(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
    inner.extend_from_slice(msg);
    let mut outer: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
    outer.extend_from_slice(&sha1(&inner));
    sha1(&outer)
}

fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0];
    let mut msg = data.to_vec();
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&((data.len() as u64) * 8).to_be_bytes());
    for block in msg.chunks(64) {
        let mut w = [0u32; 80];
        for (i, word) in block.chunks(4).enumerate() {
            w[i] = u32::from_be_bytes(word.try_into().unwrap());
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (i, wi) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A827999),
                20..=39 => (b ^ c ^ d, 0x6ED9EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1BBCDC),
                _ => (b ^ c ^ d, 0xCA62C1D6),
            };
            let t = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(*wi);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = t;
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e]) {
            *x = x.wrapping_add(y);
        }
    }
    let mut out = [0u8; 20];
    for (i, x) in h.iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&x.to_be_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_sha1_known_answers() {
        assert_eq!(
            hex::encode(sha1(b"abc")),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert_eq!(
            hex::encode(sha1(&[b'a'; 1000])),
            "291e9a6c66994949b57ba5e650361e98fc36b1ba"
        );
        // RFC 2202, test cases 2 and 6.
        assert_eq!(
            hex::encode(hmac_sha1(b"Jefe", b"what do ya want for nothing?")),
            "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
        );
        assert_eq!(
            hex::encode(hmac_sha1(
                &[0xaa; 80],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "aa4ae5e15272d00e95705637ce8a3b55ed402112"
        );
    }
}
