//! The admin listener through the real binary, on SQLite and PostgreSQL:
//! locked behind the admin token (but `/healthz`, `/metrics` and public
//! status pages), browser sessions with CSRF, dead letters listed,
//! requeued (in place, or at the end when the lane moved on) and dropped
//! from the CLI and the API, the public status page and the outage
//! notices that link to it.

use std::process::Command;

use serde_json::{json, Value};

use crate::harness::*;

on_both_backends!(admin_routes_need_the_token => |backend| locked(backend));
on_both_backends!(dead_letters_requeue_in_place_or_at_the_end => |backend| requeue(backend));
on_both_backends!(public_status_page_and_notices_link => |backend| status_page(backend));

fn cli(sb: &Sb, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .arg("--config")
        .arg(&sb.config)
        .args(args)
        .env_remove("SWITCHBOARD_CONFIG")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

async fn post(client: &reqwest::Client, url: &str, token: Option<&str>) -> (u16, Value) {
    let mut req = client.post(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or_default())
}

/// A client that keeps cookies and does not follow redirects, as a test of
/// what the server answers.
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Signs in through the form; the session cookie and the page's CSRF token.
pub async fn sign_in(admin: &str, token: &str) -> (String, String) {
    let c = browser();
    let r = c
        .post(format!("{admin}/admin/login"))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let cookie = r
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Strict"), "{cookie}");
    let cookie = cookie.split(';').next().unwrap().to_owned();
    let page = c
        .get(format!("{admin}/admin"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a CSRF token in the page")
        .to_owned();
    (cookie, csrf)
}

async fn locked(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::new(backend, dir.path()).await;
    let (api, admin) = (free_port(), free_port());
    // No configured admin token: one is generated at first start.
    let cfg = base_config(&db, dir.path(), api, admin)
        .replace(&format!("admin_token = \"{ADMIN_TOKEN}\"\n"), "")
        + &token("producer", r#"["write"]"#, r#"["g"]"#)
        + &gateway("g");
    let sb = Sb::start(dir.path(), &cfg, api, admin).await;
    let generated = std::fs::read_to_string(dir.path().join("data/admin.token"))
        .unwrap()
        .trim()
        .to_owned();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("data/admin.token"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "the token file is its owner's only");
    }
    assert!(
        !sb.log().contains(&generated),
        "the admin token is never logged"
    );
    let c = reqwest::Client::new();
    // Open: health, metrics.
    for path in ["/healthz", "/metrics"] {
        let r = c.get(format!("{}{path}", sb.admin)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    // Locked: what the issue tried, and the rest.
    for path in [
        "/v1/accounts/api.bots/pause",
        "/v1/reload",
        "/v1/dead-letters/1/requeue",
    ] {
        let (status, body) = post(&c, &format!("{}{path}", sb.admin), None).await;
        assert_eq!(status, 401, "{path}: {body}");
        assert_eq!(body["error"]["code"], "unauthorized", "{body}");
        let (status, _) = post(&c, &format!("{}{path}", sb.admin), Some("wrong-token")).await;
        assert_eq!(status, 401, "{path} with a wrong token");
    }
    for path in ["/v1/status", "/v1/overview", "/v1/dead-letters"] {
        let r = c.get(format!("{}{path}", sb.admin)).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path}");
    }
    let r = browser()
        .get(format!("{}/admin", sb.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "a person is sent to sign in");
    assert_eq!(r.headers()["location"], "/admin/login");
    // With the token, as the CLI sends it.
    let (status, body) = post(
        &c,
        &format!("{}/v1/accounts/api.bots/pause", sb.admin),
        Some(&generated),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (ok, out) = cli(&sb, &["resume", "api.bots"]);
    assert!(ok, "{out}");
    let (ok, out) = cli(&sb, &["status"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("api.bots") && !out.contains("not running"),
        "{out}"
    );

    // A browser: a wrong token is refused, the right one gives a session.
    let r = browser()
        .post(format!("{}/admin/login", sb.admin))
        .form(&[("token", "nope")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let (cookie, csrf) = sign_in(&sb.admin, &generated).await;
    let b = browser();
    let page = b
        .get(format!("{}/admin", sb.admin))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("default-src 'none'"));
    // A POST with the session but no CSRF token, or a wrong one, or from
    // another origin, changes nothing.
    for (form, origin) in [
        (vec![], None),
        (vec![("csrf", "0000")], None),
        (vec![("csrf", csrf.as_str())], Some("http://evil.example")),
    ] {
        let mut req = b
            .post(format!("{}/admin/accounts/api.bots/pause", sb.admin))
            .header("cookie", &cookie)
            .form(&form);
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 403, "{form:?} {origin:?}");
    }
    let (ok, out) = cli(&sb, &["status"]);
    assert!(ok && !out.contains("paused"), "{out}");
    // With it, the form works and the page says so.
    let r = b
        .post(format!("{}/admin/accounts/api.bots/pause", sb.admin))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let page = b
        .get(format!("{}/admin", sb.admin))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("api.bots: delivery paused."), "{page}");
    let (ok, out) = cli(&sb, &["status"]);
    assert!(ok && out.contains("paused"), "{out}");
    // Signing out ends the session.
    let r = b
        .post(format!("{}/admin/logout", sb.admin))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let r = b
        .get(format!("{}/admin", sb.admin))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "signed out");

    // A listener others can reach needs a configured token.
    let open = cfg.replace(
        &format!("admin_bind = \"127.0.0.1:{admin}\""),
        "admin_bind = \"0.0.0.0:4240\"",
    );
    let path = dir.path().join("open.toml");
    std::fs::write(&path, &open).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .arg("--config")
        .arg(&path)
        .arg("check")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("general.admin_bind") && err.contains("not a loopback address"),
        "{err}"
    );
    let configured = open.replace(
        "admin_bind = \"0.0.0.0:4240\"",
        "admin_bind = \"0.0.0.0:4240\"\nadmin_token_env = \"SB_TEST_ADMIN_TOKEN\"",
    );
    std::fs::write(&path, &configured).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .arg("--config")
        .arg(&path)
        .arg("check")
        .env("SB_TEST_ADMIN_TOKEN", "a-long-enough-admin-token")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(sb);
}

async fn dead_letters(admin: &str) -> Vec<Value> {
    admin_get(admin, "/v1/dead-letters")
        .await
        .json::<Value>()
        .await
        .unwrap()["dead_letters"]
        .as_array()
        .unwrap()
        .clone()
}

/// Posts `text` as the producer into `g`.
async fn say(sb: &Sb, text: &str) {
    let (status, body) = post_native(
        &reqwest::Client::new(),
        &sb.api,
        "producer",
        "g",
        json!({"text": text}),
        None,
    )
    .await
    .unwrap();
    assert_eq!(status, 201, "{body}");
}

/// Where a requeued dead letter goes: in its old place (before the rows
/// still queued behind it) when the lane delivered nothing after it yet;
/// at the end when it did. The CLI and the API say which.
async fn requeue(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::new(backend, dir.path()).await;
    let (api, admin) = (free_port(), free_port());
    let mut hook = Receiver::new();
    hook.up().await;
    let cfg = base_config(&db, dir.path(), api, admin)
        + &token("producer", r#"["write"]"#, r#"["g"]"#)
        + &webhook("hook", hook.port, r#"["g"]"#)
        + &gateway("g");
    let sb = Sb::start(dir.path(), &cfg, api, admin).await;
    let delivered = |hook: &Receiver| -> Vec<String> {
        texts(
            &hook
                .deliveries()
                .into_iter()
                .map(|d| d.body)
                .collect::<Vec<_>>(),
        )
    };

    // In place: m1 dies (a permanent refusal); m2 and m3 queue behind it
    // while the webhook is down. m1 requeued goes before them.
    hook.set(Mode::Status(400));
    say(&sb, "m1").await;
    until("m1 to die", || async {
        dead_letters(&sb.admin).await.len() == 1
    })
    .await;
    let dead = dead_letters(&sb.admin).await;
    let m1 = dead[0]["id"].as_i64().unwrap();
    assert_eq!(dead[0]["account"], "api.bots");
    assert_eq!(dead[0]["channel"], "webhook:hook");
    assert!(
        dead[0]["reason"].as_str().unwrap().contains("400"),
        "{dead:?}"
    );
    let (ok, list) = cli(&sb, &["dead-letters"]);
    assert!(ok, "{list}");
    assert!(
        list.contains(&m1.to_string())
            && list.contains("api.bots webhook:hook")
            && list.contains("answered 400")
            && list.contains("ago"),
        "reason, destination and age: {list}"
    );
    hook.set(Mode::Unavailable(1));
    say(&sb, "m2").await;
    say(&sb, "m3").await;
    eventually("m2 to be tried", || {
        !hook.refused_at.lock().unwrap().is_empty()
    })
    .await;
    let (ok, out) = cli(&sb, &["dead-letters", "requeue", &m1.to_string()]);
    assert!(ok, "{out}");
    assert!(out.contains("requeued in its old place"), "{out}");
    assert!(dead_letters(&sb.admin).await.is_empty());
    hook.set(Mode::Accept);
    eventually("m1, m2, m3", || hook.deliveries().len() == 3).await;
    assert_eq!(delivered(&hook), ["m1", "m2", "m3"]);

    // At the end: m4 dies, m5 is delivered after it, m6 waits. m4 can no
    // longer go before m5, so it goes after m6.
    hook.set(Mode::Status(400));
    say(&sb, "m4").await;
    until("m4 to die", || async {
        dead_letters(&sb.admin).await.len() == 1
    })
    .await;
    let m4 = dead_letters(&sb.admin).await[0]["id"].as_i64().unwrap();
    hook.set(Mode::Accept);
    say(&sb, "m5").await;
    eventually("m5", || hook.deliveries().len() == 4).await;
    hook.set(Mode::Unavailable(1));
    let refused = hook.refused_at.lock().unwrap().len();
    say(&sb, "m6").await;
    eventually("m6 to be tried", || {
        hook.refused_at.lock().unwrap().len() > refused
    })
    .await;
    let (status, body) = post(
        &reqwest::Client::new(),
        &format!("{}/v1/dead-letters/{m4}/requeue", sb.admin),
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["requeued"][0]["placement"], "at_end", "{body}");
    assert!(body["requeued"][0]["new_id"].as_i64().unwrap() > m4);
    hook.set(Mode::Accept);
    eventually("m6 and m4", || hook.deliveries().len() == 6).await;
    assert_eq!(delivered(&hook), ["m1", "m2", "m3", "m5", "m6", "m4"]);

    // Drop: gone for good; all of an account at once.
    hook.set(Mode::Status(400));
    say(&sb, "m7").await;
    say(&sb, "m8").await;
    until("m7 and m8 to die", || async {
        dead_letters(&sb.admin).await.len() == 2
    })
    .await;
    let m7 = dead_letters(&sb.admin).await[0]["id"].as_i64().unwrap();
    let (ok, out) = cli(&sb, &["dead-letters", "drop", &m7.to_string()]);
    assert!(ok && out.contains("1 dead letter(s) dropped"), "{out}");
    assert_eq!(dead_letters(&sb.admin).await.len(), 1);
    let (ok, out) = cli(&sb, &["dead-letters", "drop", "--account", "api.bots"]);
    assert!(ok && out.contains("1 dead letter(s) dropped"), "{out}");
    assert!(dead_letters(&sb.admin).await.is_empty());
    let (status, body) = post(
        &reqwest::Client::new(),
        &format!("{}/v1/dead-letters/{m7}/requeue", sb.admin),
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(delivered(&hook).len(), 6, "nothing dropped was sent");
    drop(sb);
}

/// A gateway with `status_page = true` has a public page (no token) that
/// says which networks are up and where the conversation goes on; its
/// outage notices link to it. A gateway without one has none.
async fn status_page(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::new(backend, dir.path()).await;
    let (api, admin) = (free_port(), free_port());
    let (mut bad, mut good) = (Receiver::new(), Receiver::new());
    bad.up().await;
    good.up().await;
    let cfg = base_config(&db, dir.path(), api, admin).replace(
        "[general]\n",
        "[general]\npublic_url = \"https://status.example.org/\"\n",
    ) + &token("producer", r#"["write"]"#, r#"["g"]"#)
        + &webhook("bad", bad.port, r#"["g"]"#)
        + &webhook("good", good.port, r#"["g"]"#)
        + "\n[[gateway]]\nname = \"g\"\nnotice_after = \"1s\"\nstatus_page = true\n[[gateway.inout]]\naccount = \"api.bots\"\nchannel = \"api\"\ninvite = \"https://chat.example.org/join/g\"\n"
        + "\n[[gateway]]\nname = \"private\"\n[[gateway.inout]]\naccount = \"api.bots\"\nchannel = \"api\"\n";
    let sb = Sb::start(dir.path(), &cfg, api, admin).await;
    let c = reqwest::Client::new();
    let page = |c: reqwest::Client, url: String| async move {
        let r = c.get(url).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    };
    let (status, html) = page(c.clone(), format!("{}/status/g", sb.admin)).await;
    assert_eq!(status, 200, "{html}");
    assert!(
        html.contains("Every network of this conversation is up."),
        "{html}"
    );
    assert!(html.contains("https://chat.example.org/join/g"), "{html}");
    assert!(!html.contains("webhook"), "webhooks are not shown: {html}");
    assert!(
        !html.contains(ADMIN_TOKEN) && !html.contains("secret"),
        "{html}"
    );
    let (status, _) = page(c.clone(), format!("{}/status/private", sb.admin)).await;
    assert_eq!(status, 404, "opt-in");

    bad.down();
    let (s, b) = post_native(&c, &sb.api, "producer", "g", json!({"text": "hi"}), None)
        .await
        .unwrap();
    assert_eq!(s, 201, "{b}");
    let notices = |r: &Receiver| -> Vec<String> {
        r.deliveries()
            .into_iter()
            .filter(|d| d.body["type"] == "notice")
            .map(|d| d.body["text"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    eventually("a down notice", || notices(&good).len() == 1).await;
    assert!(
        notices(&good)[0].contains("Status: https://status.example.org/status/g"),
        "{:?}",
        notices(&good)
    );
    drop(sb);
}
