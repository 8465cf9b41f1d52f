//! Test harness: databases, the real `switchboard` binary, HTTP, WebSocket,
//! SSE and NDJSON clients, and a webhook receiver whose faults the test
//! controls (refuse, hang, 429).

#![allow(dead_code)]

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// How long any wait in a test may take before it fails.
pub const PATIENCE: Duration = Duration::from_secs(120);

pub use switchboard_core::testkit::free_port;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A fresh database for one test.
pub struct Db {
    pub url: String,
}

impl Db {
    pub async fn new(backend: Backend, dir: &Path) -> Self {
        match backend {
            Backend::Sqlite => Self {
                url: format!("sqlite://{}/sb.db", dir.display()),
            },
            Backend::Postgres => {
                use sqlx::Connection;
                let admin = std::env::var("SWITCHBOARD_TEST_POSTGRES_URL").expect(
                    "SWITCHBOARD_TEST_POSTGRES_URL is not set: run the tests with `bash .ci/run`, \
                     which starts a PostgreSQL server for them",
                );
                let name = format!("sb_test_{:016x}", rand::random::<u64>());
                let mut conn = sqlx::postgres::PgConnection::connect(&admin)
                    .await
                    .expect("connect to the test PostgreSQL");
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut conn)
                    .await
                    .unwrap();
                let base = admin.rsplit_once('/').unwrap().0;
                Self {
                    url: format!("{base}/{name}"),
                }
            }
        }
    }
}

/// The TOML every test starts from: the database, an API account `api.bots`
/// on `api_port`, and the admin listener. Append tokens, webhooks, gateways.
pub fn base_config(db: &Db, dir: &Path, api_port: u16, admin_port: u16) -> String {
    format!(
        r#"
[general]
data_dir = "{dir}/data"
admin_bind = "127.0.0.1:{admin_port}"
admin_token = "{admin_token}"

[database]
url = "{url}"

[outbox]
backoff_initial = "50ms"
backoff_max = "500ms"
send_timeout = "2s"
breaker_probe = "200ms"
"#,
        dir = dir.display(),
        url = db.url,
        admin_token = ADMIN_TOKEN,
    ) + &format!("\n[api.bots]\nbind = \"127.0.0.1:{api_port}\"\n")
}

/// The admin token [`base_config`] configures.
pub const ADMIN_TOKEN: &str = "admin-token-of-the-tests-0123456789";

/// `GET` on the admin listener with the admin token.
pub async fn admin_get(admin: &str, path: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(format!("{admin}{path}"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
}

/// `[[api.bots.tokens]]` with a secret derived from the name.
pub fn token(name: &str, scopes: &str, gateways: &str) -> String {
    format!(
        "\n[[api.bots.tokens]]\nname = \"{name}\"\ntoken = \"{}\"\nscopes = {scopes}\ngateways = {gateways}\n",
        secret(name)
    )
}

pub fn secret(name: &str) -> String {
    format!("secret-of-{name}-0123456789")
}

/// `[[api.bots.webhooks]]`.
pub fn webhook(name: &str, port: u16, gateways: &str) -> String {
    format!(
        "\n[[api.bots.webhooks]]\nname = \"{name}\"\nurl = \"http://127.0.0.1:{port}/hook\"\nsecret = \"{}\"\ngateways = {gateways}\ntimeout = \"1s\"\n",
        hook_secret(name)
    )
}

pub fn hook_secret(name: &str) -> String {
    format!("hook-secret-{name}")
}

/// A gateway with `api.bots` as an inout member.
pub fn gateway(name: &str) -> String {
    format!("\n[[gateway]]\nname = \"{name}\"\n[[gateway.inout]]\naccount = \"api.bots\"\nchannel = \"api\"\n")
}

/// A running `switchboard run`.
pub struct Sb {
    child: Option<Child>,
    pub dir: PathBuf,
    pub api: String,
    pub admin: String,
    pub config: PathBuf,
    starts: usize,
}

impl Sb {
    pub async fn start(dir: &Path, config: &str, api_port: u16, admin_port: u16) -> Self {
        let path = dir.join("sb.toml");
        std::fs::write(&path, config).unwrap();
        let mut sb = Self {
            child: None,
            dir: dir.to_path_buf(),
            api: format!("http://127.0.0.1:{api_port}"),
            admin: format!("http://127.0.0.1:{admin_port}"),
            config: path,
            starts: 0,
        };
        sb.restart().await;
        sb
    }

    /// Starts the process again (after `kill9` or `stop`).
    pub async fn restart(&mut self) {
        self.starts += 1;
        let log = std::fs::File::create(self.dir.join(format!("sb.{}.log", self.starts))).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .arg("--config")
            .arg(&self.config)
            .arg("run")
            .env("RUST_LOG", "info,sqlx=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let client = reqwest::Client::new();
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok(r) = client.get(format!("{}/healthz", self.api)).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("switchboard exited with {status} at start:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "switchboard did not start:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Runs `switchboard --config <this config> <args>` (a CLI command
    /// beside the running process, e.g. `reload`), which must succeed;
    /// its stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "switchboard {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The running process's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join(format!("sb.{}.log", self.starts)))
            .unwrap_or_default()
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub async fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status()
                .unwrap();
            let deadline = Instant::now() + PATIENCE;
            loop {
                if let Some(status) = c.try_wait().unwrap() {
                    assert!(
                        status.success(),
                        "switchboard exited with {status}:\n{}",
                        self.log()
                    );
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "switchboard did not stop on SIGTERM"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

impl Drop for Sb {
    fn drop(&mut self) {
        self.kill9();
    }
}

impl Sb {
    /// The admin listener's `/metrics` text.
    pub async fn metrics(&self) -> String {
        reqwest::get(format!("{}/metrics", self.admin))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Outbox rows waiting for `api.bots`, from `/metrics`.
    pub async fn queue_depth(&self) -> i64 {
        let text = self.metrics().await;
        text.lines()
            .find_map(|l| l.strip_prefix("switchboard_queue_depth{account=\"api.bots\"} "))
            .map_or(0, |v| v.trim().parse().unwrap())
    }

    /// Waits until every outbox row of `api.bots` is sent or dead.
    pub async fn drained(&self) {
        until("the outbox to drain", || async {
            self.queue_depth().await == 0
        })
        .await;
    }
}

/// Waits until `count()` reaches `target`, failing the test only when it
/// made no progress for PATIENCE: a bulk delivery on a loaded machine may
/// take longer than PATIENCE in all, but never stalls that long.
pub async fn until_count(what: &str, target: usize, mut count: impl FnMut() -> usize) {
    let mut last = count();
    let mut since = Instant::now();
    while last < target {
        assert!(
            since.elapsed() < PATIENCE,
            "no progress towards {what} for {PATIENCE:?}: {last} of {target}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = count();
        if now > last {
            last = now;
            since = Instant::now();
        }
    }
}

/// Waits until `f` is true, failing the test after PATIENCE.
pub async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    until(what, || std::future::ready(f())).await;
}

/// Waits until the future that `f()` returns resolves to true, failing the test
/// after PATIENCE.
pub async fn until<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + PATIENCE;
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn bearer(name: &str) -> String {
    format!("Bearer {}", secret(name))
}

/// `POST /v1/gateways/{gw}/messages`.
pub async fn post_native(
    client: &reqwest::Client,
    api: &str,
    tok: &str,
    gw: &str,
    body: Value,
    idem: Option<&str>,
) -> reqwest::Result<(u16, Value)> {
    let mut req = client
        .post(format!("{api}/v1/gateways/{gw}/messages"))
        .header("authorization", bearer(tok))
        .json(&body);
    if let Some(k) = idem {
        req = req.header("idempotency-key", k);
    }
    let r = req.send().await?;
    let status = r.status().as_u16();
    Ok((status, r.json().await.unwrap_or(Value::Null)))
}

/// `POST /api/message` (matterbridge).
pub async fn post_mb(
    client: &reqwest::Client,
    api: &str,
    tok: &str,
    body: Value,
) -> reqwest::Result<(u16, Value)> {
    let r = client
        .post(format!("{api}/api/message"))
        .header("authorization", bearer(tok))
        .json(&body)
        .send()
        .await?;
    let status = r.status().as_u16();
    Ok((status, r.json().await.unwrap_or(Value::Null)))
}

/// `GET /api/messages` (matterbridge polling): what arrived since `tok`'s
/// last poll.
pub async fn poll_mb(client: &reqwest::Client, api: &str, tok: &str) -> Vec<Value> {
    client
        .get(format!("{api}/api/messages"))
        .header("authorization", bearer(tok))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Everything a streaming reader received, shared with the test.
#[derive(Clone, Default)]
pub struct Inbox(pub Arc<Mutex<Vec<Value>>>);

impl Inbox {
    pub fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
    pub fn all(&self) -> Vec<Value> {
        self.0.lock().unwrap().clone()
    }
    pub fn push(&self, v: Value) {
        self.0.lock().unwrap().push(v);
    }
    pub async fn wait_len(&self, n: usize, what: &str) {
        until_count(what, n, || self.len()).await;
    }
}

/// A WebSocket reader (native `/v1/ws` or matterbridge `/api/websocket`)
/// collecting every JSON text frame. Ends when the server closes.
pub async fn ws_reader(url: &str, tok: &str, inbox: Inbox) -> JoinHandle<()> {
    let (ws, _) = ws_connect(url, tok).await;
    let (_tx, mut rx) = ws.split();
    tokio::spawn(async move {
        let _keep = _tx;
        while let Some(Ok(msg)) = rx.next().await {
            if let Message::Text(t) = msg {
                inbox.push(serde_json::from_str(&t).unwrap());
            }
        }
    })
}

pub type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

pub async fn ws_connect(url: &str, tok: &str) -> (Ws, ()) {
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", bearer(tok).parse().unwrap());
    let (ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("WebSocket connect");
    (ws, ())
}

pub async fn ws_send(ws: &mut Ws, v: &Value) {
    ws.send(Message::Text(v.to_string().into())).await.unwrap();
}

/// Reads a line-oriented HTTP stream: SSE (`data:` lines) or NDJSON.
pub async fn line_reader(
    client: &reqwest::Client,
    url: &str,
    tok: &str,
    sse: bool,
    inbox: Inbox,
) -> JoinHandle<()> {
    let resp = client
        .get(url)
        .header("authorization", bearer(tok))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{url}");
    tokio::spawn(async move {
        let mut resp = resp;
        let mut buf = Vec::new();
        while let Ok(Some(chunk)) = resp.chunk().await {
            buf.extend_from_slice(&chunk);
            while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=pos).collect();
                let line = String::from_utf8_lossy(&line).trim().to_owned();
                let json = if sse {
                    line.strip_prefix("data:").map(str::trim)
                } else {
                    Some(line.as_str())
                };
                if let Some(j) = json.filter(|j| !j.is_empty()) {
                    inbox.push(serde_json::from_str(j).unwrap());
                }
            }
        }
    })
}

/// What the receiver does with the next request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// 200 and record.
    Accept,
    /// Read the request, never answer.
    Hang,
    /// 429 with `Retry-After: n` (recorded as a refusal).
    TooMany(u64),
    /// 503 with `Retry-After: n` (down for a while; recorded as a refusal).
    Unavailable(u64),
    /// Answer with this status and record nothing.
    Status(u16),
    /// Record, then answer 200 this many milliseconds later: a sender
    /// killed meanwhile delivered without hearing so (a lost answer).
    Slow(u64),
}

/// One request the receiver answered 200 to.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub body: Value,
    pub raw: Vec<u8>,
    pub signature: String,
    pub delivery_id: String,
    /// `x-switchboard-batch`: the count a batched POST says it carries.
    pub batch: Option<String>,
    pub at: Instant,
}

impl Delivery {
    /// The deliveries one POST carried: the elements of a batch's array,
    /// or the one object.
    pub fn items(&self) -> Vec<Value> {
        match &self.body {
            Value::Array(items) => items.clone(),
            one => vec![one.clone()],
        }
    }

    /// Whether the signature header is the HMAC-SHA256 of the webhook's
    /// secret over `<t>.<exact body>`.
    pub fn signed_with(&self, secret: &str) -> bool {
        use hmac::Mac;
        let Some((t, v1)) = self
            .signature
            .strip_prefix("t=")
            .and_then(|s| s.split_once(",v1="))
        else {
            return false;
        };
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{t}.").as_bytes());
        mac.update(&self.raw);
        v1 == hex::encode(mac.finalize().into_bytes())
    }
}

/// Requests a [`Receiver`] in `Mode::Accept` refuses all the same
/// (recorded as refusals), to fail some deliveries and not others.
#[derive(Debug, Clone)]
pub enum Refusal {
    /// A body holding this text gets this status.
    Containing(String, u16),
    /// A body that is a JSON array of more than one gets this status.
    Batches(u16),
}

/// A webhook receiver speaking just enough HTTP/1.1, so a test can make it
/// refuse connections (stopped), hang, or answer 429.
pub struct Receiver {
    pub port: u16,
    pub mode: Arc<Mutex<Mode>>,
    pub got: Arc<Mutex<Vec<Delivery>>>,
    /// When requests were refused with 429 or left hanging.
    pub refused_at: Arc<Mutex<VecDeque<Instant>>>,
    /// Refused while accepting (see [`Refusal`]).
    pub refuse: Arc<Mutex<Option<Refusal>>>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: Option<JoinHandle<()>>,
}

impl Receiver {
    pub fn new() -> Self {
        Self {
            port: free_port(),
            mode: Arc::new(Mutex::new(Mode::Accept)),
            got: Arc::default(),
            refused_at: Arc::default(),
            refuse: Arc::default(),
            tasks: Arc::default(),
            accept: None,
        }
    }

    pub fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    pub fn deliveries(&self) -> Vec<Delivery> {
        self.got.lock().unwrap().clone()
    }

    /// Starts listening (again).
    pub async fn up(&mut self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port)).await.unwrap();
        let (mode, got, refused, tasks) = (
            self.mode.clone(),
            self.got.clone(),
            self.refused_at.clone(),
            self.tasks.clone(),
        );
        let refuse = self.refuse.clone();
        self.accept = Some(tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                let (mode, got, refused) = (mode.clone(), got.clone(), refused.clone());
                let t = tokio::spawn(serve(sock, mode, got, refused, refuse.clone()));
                tasks.lock().unwrap().push(t);
            }
        }));
    }

    /// Stops listening and drops every open connection: connections are
    /// refused until `up` again.
    pub fn down(&mut self) {
        if let Some(a) = self.accept.take() {
            a.abort();
        }
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.down();
    }
}

async fn serve(
    sock: TcpStream,
    mode: Arc<Mutex<Mode>>,
    got: Arc<Mutex<Vec<Delivery>>>,
    refused: Arc<Mutex<VecDeque<Instant>>>,
    refuse: Arc<Mutex<Option<Refusal>>>,
) {
    let mut r = BufReader::new(sock);
    loop {
        let mut len = 0usize;
        let mut signature = String::new();
        let mut delivery = String::new();
        let mut batch = None;
        let mut line = String::new();
        let mut first = true;
        loop {
            line.clear();
            if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                return;
            }
            let l = line.trim_end();
            if l.is_empty() && !first {
                break;
            }
            first = false;
            if let Some((k, v)) = l.split_once(':') {
                match k.to_ascii_lowercase().as_str() {
                    "content-length" => len = v.trim().parse().unwrap(),
                    "x-switchboard-signature" => signature = v.trim().to_owned(),
                    "x-switchboard-delivery" => delivery = v.trim().to_owned(),
                    "x-switchboard-batch" => batch = Some(v.trim().to_owned()),
                    _ => {}
                }
            }
        }
        let mut raw = vec![0; len];
        if r.read_exact(&mut raw).await.is_err() {
            return;
        }
        let mut m = *mode.lock().unwrap();
        if matches!(m, Mode::Accept | Mode::Slow(_)) {
            let refusal = refuse.lock().unwrap().clone();
            let refused_code = match refusal {
                Some(Refusal::Containing(text, code))
                    if String::from_utf8_lossy(&raw).contains(&text) =>
                {
                    Some(code)
                }
                Some(Refusal::Batches(code))
                    if serde_json::from_slice::<Value>(&raw)
                        .ok()
                        .and_then(|v| v.as_array().map(Vec::len))
                        .is_some_and(|n| n > 1) =>
                {
                    Some(code)
                }
                _ => None,
            };
            if let Some(code) = refused_code {
                m = Mode::Status(code);
            }
        }
        let reply: &[u8] = match m {
            Mode::Hang => {
                refused.lock().unwrap().push_back(Instant::now());
                std::future::pending::<()>().await;
                return;
            }
            Mode::TooMany(secs) | Mode::Unavailable(secs) => {
                refused.lock().unwrap().push_back(Instant::now());
                let status = if m == Mode::TooMany(secs) {
                    "429 Too Many Requests"
                } else {
                    "503 Service Unavailable"
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\nRetry-After: {secs}\r\nContent-Length: 0\r\n\r\n"
                );
                if r.get_mut().write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                continue;
            }
            Mode::Status(code) => {
                refused.lock().unwrap().push_back(Instant::now());
                let head = format!("HTTP/1.1 {code} Nope\r\nContent-Length: 0\r\n\r\n");
                if r.get_mut().write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                continue;
            }
            Mode::Accept | Mode::Slow(_) => b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        };
        got.lock().unwrap().push(Delivery {
            body: serde_json::from_slice(&raw).unwrap(),
            raw,
            signature,
            delivery_id: delivery,
            batch,
            at: Instant::now(),
        });
        if let Mode::Slow(ms) = m {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        if r.get_mut().write_all(reply).await.is_err() {
            return;
        }
    }
}

/// Texts of message events, in arrival order.
/// The events of one kind that came from `account`.
pub fn events_from(inbox: &Inbox, account: &str, kind: &str) -> Vec<Value> {
    inbox
        .all()
        .into_iter()
        .filter(|e| e["type"] == kind && e["origin"]["account"] == account)
        .collect()
}

pub fn texts(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["type"] == "message" || e.get("protocol").is_some())
        .filter_map(|e| e["text"].as_str().map(str::to_owned))
        .collect()
}

/// A PostgreSQL server of a test's own (initdb in a temp dir, loopback, a
/// free port), for tests that stop and start the database under a running
/// switchboard without disturbing the shared server other tests use.
pub struct PgServer {
    bin: PathBuf,
    pub dir: tempfile::TempDir,
    pub port: u16,
}

impl PgServer {
    /// `None` when PostgreSQL's server binaries are not installed.
    pub fn start() -> Option<Self> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .flatten()
            .map(|e| e.path().join("bin"))
            .filter(|p| p.join("postgres").is_file())
            .max()?;
        let dir = tempfile::tempdir().unwrap();
        let pg = Self {
            bin,
            dir,
            port: free_port(),
        };
        if is_root() {
            let status = Command::new("chown")
                .arg("-R")
                .arg("postgres:")
                .arg(pg.dir.path())
                .status()
                .unwrap();
            assert!(status.success());
        }
        let data = pg.dir.path().join("data");
        let status = pg
            .as_pg(&pg.bin.join("initdb"))
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "-D"])
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "initdb failed");
        pg.up();
        Some(pg)
    }

    fn as_pg(&self, program: &Path) -> Command {
        if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        }
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the server and waits until it accepts connections.
    pub fn up(&self) {
        let status = self
            .as_pg(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .arg("-l")
            .arg(self.dir.path().join("log"))
            .arg("-w")
            .arg("-o")
            .arg(format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1",
                self.port,
                self.dir.path().display()
            ))
            .arg("start")
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "pg_ctl start failed");
    }

    /// Stops it the hard way (`immediate`: connections drop mid-query, as
    /// when the server crashes or its host goes away).
    pub fn down(&self) {
        let _ = self
            .as_pg(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.down();
    }
}

fn is_root() -> bool {
    // Without libc: the owner of /proc/self is who we run as.
    std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap()) == 0
}
