//! The admin page in a real headless Chromium (Debian's `chromium`, which
//! `.ci/run` installs), driven through the DevTools protocol by the small
//! client below: sign in, watch a network go down and come back without
//! reloading, requeue a dead letter and see it delivered, pause and
//! resume, and an accessibility check (axe-core from npm, injected into
//! the page) with no serious or critical violation on the admin page, the
//! sign-in page and a public status page. Screenshots of the key states go
//! to `docs/screenshots/` (the README shows them).
//!
//! SQLite only: the same routes and stores are proven on PostgreSQL by the
//! API-level tests in `admin`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::harness::*;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A headless Chromium with one page, and a DevTools connection to it.
struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    ws: Socket,
    next: u64,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Browser {
    async fn start() -> Self {
        let profile = tempfile::tempdir().unwrap();
        let child = Command::new(chromium())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-port=0",
                "--window-size=1280,900",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromium (Debian package `chromium`; .ci/run installs it)");
        // Chromium writes its DevTools port here once it listens.
        let file = profile.path().join("DevToolsActivePort");
        let deadline = Instant::now() + Duration::from_secs(60);
        let port = loop {
            if let Some(p) = std::fs::read_to_string(&file)
                .ok()
                .and_then(|t| t.lines().next().map(str::to_owned))
                .and_then(|l| l.trim().parse::<u16>().ok())
            {
                break p;
            }
            assert!(Instant::now() < deadline, "chromium did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let targets: Vec<Value> = reqwest::get(format!("http://127.0.0.1:{port}/json/list"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let page = targets
            .iter()
            .find(|t| t["type"] == "page")
            .expect("a page target");
        let url = page["webSocketDebuggerUrl"].as_str().unwrap().to_owned();
        let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        let mut b = Self {
            child,
            _profile: profile,
            ws,
            next: 0,
        };
        b.call("Page.enable", json!({})).await;
        b.call("Runtime.enable", json!({})).await;
        // axe-core is injected by the test, not served by the page.
        b.call("Page.setBypassCSP", json!({"enabled": true})).await;
        b.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": false}),
        )
        .await;
        b
    }

    /// One DevTools command; its result (events in between are skipped).
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        self.ws
            .send(Message::Text(
                json!({"id": id, "method": method, "params": params})
                    .to_string()
                    .into(),
            ))
            .await
            .unwrap();
        loop {
            let msg = tokio::time::timeout(PATIENCE, self.ws.next())
                .await
                .expect("a DevTools answer")
                .unwrap()
                .unwrap();
            let Message::Text(text) = msg else { continue };
            let v: Value = serde_json::from_str(&text).unwrap();
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    /// Evaluates `expr` in the page (awaiting a promise); its value.
    async fn eval(&mut self, expr: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        assert!(
            r.get("exceptionDetails").is_none(),
            "{expr}: {}",
            r["exceptionDetails"]
        );
        r["result"]["value"].clone()
    }

    /// Waits until `expr` is true in the page.
    async fn wait(&mut self, what: &str, expr: &str) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            // A page being replaced (a form's redirect) has no context for
            // a moment; that is "not yet".
            let r = self
                .call(
                    "Runtime.evaluate",
                    json!({"expression": format!("!!({expr})"), "returnByValue": true}),
                )
                .await;
            if r["result"]["value"] == true {
                return;
            }
            assert!(Instant::now() < deadline, "the page never showed {what}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn goto(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url})).await;
        self.wait(
            "the page loaded",
            "document.readyState === 'complete' && location.href !== 'about:blank'",
        )
        .await;
    }

    async fn screenshot(&mut self, path: &Path) {
        let r = self
            .call(
                "Page.captureScreenshot",
                json!({"format": "png", "captureBeyondViewport": true}),
            )
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().unwrap())
            .unwrap();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
    }

    /// Runs axe-core on the page; the serious and critical violations.
    async fn axe(&mut self, axe: &str) -> Vec<String> {
        if self.eval("typeof window.axe").await != "object" {
            let r = self
                .call(
                    "Runtime.evaluate",
                    json!({"expression": axe, "returnByValue": true}),
                )
                .await;
            assert!(r.get("exceptionDetails").is_none(), "axe-core did not load");
        }
        let v = self
            .eval(
                "axe.run(document, {runOnly: {type: 'tag', values: \
                 ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice']}}) \
                 .then(r => r.violations.map(v => ({id: v.id, impact: v.impact, \
                 nodes: v.nodes.map(n => n.target.join(' ')).slice(0, 3)})))",
            )
            .await;
        v.as_array()
            .unwrap()
            .iter()
            .filter(|x| matches!(x["impact"].as_str(), Some("serious" | "critical")))
            .map(ToString::to_string)
            .collect()
    }
}

/// The Chromium binary: `SWITCHBOARD_CHROMIUM`, or Debian's.
fn chromium() -> String {
    std::env::var("SWITCHBOARD_CHROMIUM").unwrap_or_else(|_| "chromium".into())
}

/// axe-core's script, installed by `tests/support/axe-core.sh`.
fn axe_script() -> String {
    let out = Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/support/axe-core.sh"
        ))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "axe-core: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap()
        .trim()
        .to_owned();
    std::fs::read_to_string(path).unwrap()
}

fn shots() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots")
}

#[tokio::test]
async fn the_admin_page_in_a_real_browser() {
    let axe = axe_script();
    let dir = tempfile::tempdir().unwrap();
    let db = Db::new(Backend::Sqlite, dir.path()).await;
    let (api, admin) = (free_port(), free_port());
    let mut hook = Receiver::new();
    hook.up().await;
    let cfg = base_config(&db, dir.path(), api, admin)
        + &token("producer", r#"["write"]"#, r#"["lobby"]"#)
        + &webhook("archive", hook.port, r#"["lobby"]"#)
        + "\n[[gateway]]\nname = \"lobby\"\nnotice_after = \"1s\"\nstatus_page = true\n\
           [[gateway.inout]]\naccount = \"api.bots\"\nchannel = \"api\"\n\
           invite = \"https://chat.example.org/join/lobby\"\n";
    let sb = Sb::start(dir.path(), &cfg, api, admin).await;
    let client = reqwest::Client::new();
    let say = |text: String| {
        let (client, api) = (client.clone(), sb.api.clone());
        async move {
            let (s, b) = post_native(
                &client,
                &api,
                "producer",
                "lobby",
                json!({"text": text}),
                None,
            )
            .await
            .unwrap();
            assert_eq!(s, 201, "{b}");
        }
    };
    say("hello".into()).await;
    eventually("the first delivery", || hook.deliveries().len() == 1).await;

    let mut b = Browser::start().await;
    // Signing in: the page sends a person without a session to the form.
    b.goto(&format!("{}/admin", sb.admin)).await;
    b.wait("the sign-in form", "location.pathname === '/admin/login'")
        .await;
    assert_eq!(b.axe(&axe).await, Vec::<String>::new(), "sign-in page");
    b.eval("document.getElementById('token').focus()").await;
    b.call("Input.insertText", json!({"text": ADMIN_TOKEN}))
        .await;
    b.eval("document.getElementById('sign-in').click()").await;
    b.wait(
        "the admin page",
        "location.pathname === '/admin' && document.getElementById('live')",
    )
    .await;
    b.wait(
        "live updates connected",
        "document.body.dataset.live === 'on'",
    )
    .await;
    let member =
        "document.querySelector('[data-member=\"api.bots webhook:archive\"] [data-state]')";
    b.wait(
        "the webhook up",
        &format!("{member}.dataset.state === 'up'"),
    )
    .await;
    b.screenshot(&shots().join("admin-all-up.png")).await;
    assert_eq!(b.axe(&axe).await, Vec::<String>::new(), "admin page");

    // A network goes down and comes back, seen without reloading.
    b.eval("window.notReloaded = true").await;
    hook.down();
    say("while down".into()).await;
    b.wait(
        "the webhook down",
        &format!("{member}.dataset.state === 'down'"),
    )
    .await;
    b.wait(
        "its queue",
        "document.querySelector('#live').textContent.includes('webhook:archive')",
    )
    .await;
    b.screenshot(&shots().join("admin-network-down.png")).await;
    assert_eq!(b.eval("window.notReloaded === true").await, true);
    hook.up().await;
    eventually("the backlog", || hook.deliveries().len() == 2).await;
    b.wait(
        "the webhook up again",
        &format!("{member}.dataset.state === 'up'"),
    )
    .await;
    assert_eq!(
        b.eval("window.notReloaded === true").await,
        true,
        "live, not reloaded"
    );

    // A dead letter appears live; requeued, it is delivered.
    hook.set(Mode::Status(400));
    say("refused once".into()).await;
    b.wait(
        "a dead letter",
        "document.querySelector('#dead-letters tr[data-dead]')",
    )
    .await;
    b.screenshot(&shots().join("admin-dead-letters.png")).await;
    assert_eq!(
        b.axe(&axe).await,
        Vec::<String>::new(),
        "admin page with dead letters"
    );
    hook.set(Mode::Accept);
    let id = b
        .eval("document.querySelector('#dead-letters tr[data-dead]').dataset.dead")
        .await;
    let id = id.as_str().unwrap().to_owned();
    b.eval(&format!("document.getElementById('requeue-{id}').click()"))
        .await;
    b.wait("the requeue's report", "document.querySelector('.flash.ok') && document.querySelector('.flash.ok').textContent.includes('requeued')")
        .await;
    eventually("the requeued message delivered", || {
        texts(
            &hook
                .deliveries()
                .into_iter()
                .map(|d| d.body)
                .collect::<Vec<_>>(),
        )
        .contains(&"refused once".to_owned())
    })
    .await;
    b.wait("no dead letters", "document.getElementById('dead-empty')")
        .await;

    // Pause and resume.
    let row = "document.querySelector('tr[data-account=\"api.bots\"] [data-state]')";
    b.eval("document.getElementById('pause-api-bots').click()")
        .await;
    b.wait(
        "paused",
        &format!("{row} && {row}.dataset.state === 'paused'"),
    )
    .await;
    say("held".into()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!texts(
        &hook
            .deliveries()
            .into_iter()
            .map(|d| d.body)
            .collect::<Vec<_>>()
    )
    .contains(&"held".to_owned()));
    b.wait(
        "resume button",
        "document.getElementById('resume-api-bots')",
    )
    .await;
    b.eval("document.getElementById('resume-api-bots').click()")
        .await;
    b.wait(
        "up again",
        &format!("{row} && {row}.dataset.state === 'up'"),
    )
    .await;
    eventually("the held message", || {
        texts(
            &hook
                .deliveries()
                .into_iter()
                .map(|d| d.body)
                .collect::<Vec<_>>(),
        )
        .contains(&"held".to_owned())
    })
    .await;

    // The public status page: no session needed, accessible too.
    b.goto(&format!("{}/status/lobby", sb.admin)).await;
    b.wait("the status page", "document.getElementById('summary')")
        .await;
    b.screenshot(&shots().join("status-page.png")).await;
    assert_eq!(b.axe(&axe).await, Vec::<String>::new(), "status page");
    drop(b);
    drop(sb);
}
