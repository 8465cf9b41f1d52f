//! Bad configuration and bad API input each get a clear error and change
//! nothing.

use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};

use crate::harness::*;

fn run_cli(dir: &Path, text: &str, cmd: &str) -> (i32, String) {
    let path = dir.join("bad.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["--config", path.to_str().unwrap(), cmd])
        .env_remove("SWITCHBOARD_CONFIG")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const API: &str = "[api.bots]\nbind = \"127.0.0.1:1\"\n";
const GOOD_TOKEN: &str = "[[api.bots.tokens]]\nname = \"a\"\ntoken = \"0123456789abcdef\"\n";

#[test]
fn bad_config_names_file_and_key_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let head = format!("[general]\ndata_dir = \"{}\"\n", data.display());
    let cases: Vec<(&str, String, &str, &str)> = vec![
        ("typo'd key", format!("{head}{API}bnid = 3\n"), "api.bots", "bnid"),
        ("typo'd section", format!("{head}{API}[outbx]\n"), "outbx", "unknown field"),
        (
            "unknown durability",
            format!("{head}[database]\ndurability = \"sometimes\"\n{API}"),
            "database.durability",
            "sometimes",
        ),
        (
            "missing token",
            format!("{head}{API}[[api.bots.tokens]]\nname = \"a\"\n"),
            "api.bots.tokens[0].token",
            "missing",
        ),
        (
            "token from an unset environment variable",
            format!("{head}{API}[[api.bots.tokens]]\nname = \"a\"\ntoken_env = \"SB_TEST_SURELY_UNSET\"\n"),
            "api.bots.tokens[0].token_env",
            "SB_TEST_SURELY_UNSET",
        ),
        (
            "gateway naming an unknown account",
            format!("{head}{API}{GOOD_TOKEN}[[gateway]]\nname = \"g\"\n[[gateway.inout]]\naccount = \"api.ghost\"\n"),
            "gateway[0].inout[0].account",
            "api.ghost",
        ),
        (
            "duplicate gateway names",
            format!("{head}{API}{GOOD_TOKEN}[[gateway]]\nname = \"g\"\n[[gateway]]\nname = \"g\"\n"),
            "gateway[1].name",
            "duplicate",
        ),
        (
            "duplicate token names",
            format!("{head}{API}{GOOD_TOKEN}{GOOD_TOKEN}"),
            "api.bots.tokens[1].name",
            "duplicate",
        ),
        (
            "bad duration",
            format!("{head}[outbox]\nsend_timeout = \"10 parsecs\"\n"),
            "outbox.send_timeout",
            "10 parsecs",
        ),
        (
            "webhook batch out of range",
            format!("{head}{API}{GOOD_TOKEN}[[api.bots.webhooks]]\nname = \"w\"\nurl = \"http://127.0.0.1:9/\"\nsecret = \"s\"\nbatch = 0\n"),
            "api.bots.webhooks[0].batch",
            "between 1 and 1000",
        ),
        (
            "webhook batch not a number",
            format!("{head}{API}{GOOD_TOKEN}[[api.bots.webhooks]]\nname = \"w\"\nurl = \"http://127.0.0.1:9/\"\nsecret = \"s\"\nbatch = \"lots\"\n"),
            "api.bots",
            "batch",
        ),
        ("syntax error", format!("{head}[api.bots\n"), "(syntax)", "line"),
    ];
    for (what, text, key, detail) in cases {
        for cmd in ["check", "run"] {
            let (code, stderr) = run_cli(dir.path(), &text, cmd);
            assert_eq!(
                code, 2,
                "{what} ({cmd}) must fail with exit code 2: {stderr}"
            );
            assert!(
                stderr.contains("bad.toml"),
                "{what}: names the file: {stderr}"
            );
            assert!(
                stderr.contains(key),
                "{what}: names the key `{key}`: {stderr}"
            );
            assert!(stderr.contains(detail), "{what}: says `{detail}`: {stderr}");
            assert!(!data.exists(), "{what} ({cmd}) created the data directory");
        }
    }
}

#[tokio::test]
async fn bad_api_input_gets_json_errors_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::new(Backend::Sqlite, dir.path()).await;
    let (api, admin) = (free_port(), free_port());
    let cfg = base_config(&db, dir.path(), api, admin).replace(
        &format!("bind = \"127.0.0.1:{api}\"\n"),
        &format!("bind = \"127.0.0.1:{api}\"\nmax_body_bytes = 1024\n"),
    ) + &token("rw", r#"["read", "write"]"#, r#"["g"]"#)
        + &token("ro", r#"["read"]"#, r#"["g"]"#)
        + &token("other", r#"["read", "write"]"#, r#"["h"]"#)
        + &gateway("g")
        + &gateway("h");
    let sb = Sb::start(dir.path(), &cfg, api, admin).await;
    let client = reqwest::Client::new();
    let url = format!("{}/v1/gateways/g/messages", sb.api);

    let send = |req: reqwest::RequestBuilder| async move {
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let body: Value = r.json().await.expect("error bodies are JSON");
        (status, body)
    };
    let cases = vec![
        (
            "no token",
            client.post(&url).json(&json!({"text": "x"})),
            401,
        ),
        (
            "unknown token",
            client
                .post(&url)
                .header("authorization", "Bearer nope")
                .json(&json!({"text": "x"})),
            401,
        ),
        (
            "read-only token posting",
            client
                .post(&url)
                .header("authorization", bearer("ro"))
                .json(&json!({"text": "x"})),
            403,
        ),
        (
            "token scoped to another gateway",
            client
                .post(&url)
                .header("authorization", bearer("other"))
                .json(&json!({"text": "x"})),
            403,
        ),
        (
            "malformed JSON",
            client
                .post(&url)
                .header("authorization", bearer("rw"))
                .header("content-type", "application/json")
                .body("{\"text\": "),
            422,
        ),
        (
            "unknown field",
            client
                .post(&url)
                .header("authorization", bearer("rw"))
                .json(&json!({"txt": "x"})),
            422,
        ),
        (
            "empty message",
            client
                .post(&url)
                .header("authorization", bearer("rw"))
                .json(&json!({"text": " "})),
            422,
        ),
        (
            "oversize body",
            client
                .post(&url)
                .header("authorization", bearer("rw"))
                .json(&json!({"text": "x".repeat(4000)})),
            413,
        ),
        (
            "unknown gateway",
            client
                .post(format!("{}/v1/gateways/nope/messages", sb.api))
                .header("authorization", bearer("rw"))
                .json(&json!({"text": "x"})),
            404,
        ),
        (
            "reply to an unknown message",
            client
                .post(&url)
                .header("authorization", bearer("rw"))
                .json(&json!({"text": "x", "reply_to": "999"})),
            404,
        ),
        (
            "edit of an unknown message",
            client
                .patch(format!("{url}/999"))
                .header("authorization", bearer("rw"))
                .json(&json!({"text": "x"})),
            404,
        ),
        (
            "bad base64 attachment",
            client
                .post(&url)
                .header("authorization", bearer("rw"))
                .json(&json!({"text": "x", "attachments": [{"name": "a", "data": "!!"}]})),
            422,
        ),
        (
            "matterbridge post without gateway",
            client
                .post(format!("{}/api/message", sb.api))
                .header("authorization", bearer("rw"))
                .json(&json!({"text": "x"})),
            422,
        ),
        (
            "matterbridge health without token",
            client.get(format!("{}/api/health", sb.api)),
            401,
        ),
        (
            "unknown route",
            client
                .get(format!("{}/v2/nothing", sb.api))
                .header("authorization", bearer("rw")),
            404,
        ),
        (
            "SSE on a gateway out of scope",
            client
                .get(format!("{}/v1/gateways/h/events", sb.api))
                .header("authorization", bearer("rw")),
            403,
        ),
        (
            "bad cursor",
            client
                .get(format!("{}/v1/gateways/g/events?cursor=abc", sb.api))
                .header("authorization", bearer("rw")),
            422,
        ),
        (
            // PostgreSQL's TEXT cannot hold NUL: refused at the edge, the
            // same on both backends, instead of failing a group commit.
            "NUL byte in consumer",
            client
                .get(format!("{}/v1/gateways/g/events?consumer=a%00b", sb.api))
                .header("authorization", bearer("rw")),
            422,
        ),
    ];
    for (what, req, want) in cases {
        let (status, body) = send(req).await;
        assert_eq!(status, want, "{what}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{what}: {body}"
        );
        assert!(body["error"]["code"].is_string(), "{what}: {body}");
    }

    // Nothing was created: the first real post gets event id 1 and a
    // reader sees exactly that one.
    let (status, body) = post_native(
        &client,
        &sb.api,
        "rw",
        "g",
        json!({"text": "the only one"}),
        None,
    )
    .await
    .unwrap();
    assert_eq!(status, 201);
    assert_eq!(body["id"], "1", "rejected requests must not create events");
    let got: Vec<Value> = poll_mb(&client, &sb.api, "ro").await;
    assert_eq!(texts(&got), vec!["the only one".to_owned()]);
}

/// Slow and idle clients cannot take the API down: 300 connections that
/// never send a byte, against a listener that holds 100, while a normal
/// client keeps posting and checking health. The idle ones are dropped after
/// the header timeout; the normal client is served throughout.
#[tokio::test]
async fn idle_connections_cannot_starve_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::new(Backend::Sqlite, dir.path()).await;
    let (api, admin) = (free_port(), free_port());
    let cfg = base_config(&db, dir.path(), api, admin).replace(
        &format!("bind = \"127.0.0.1:{api}\"\n"),
        &format!("bind = \"127.0.0.1:{api}\"\nmax_connections = 100\nheader_timeout = \"1s\"\n"),
    ) + &token("rw", r#"["read", "write"]"#, r#"["g"]"#)
        + &gateway("g");
    let sb = Sb::start(dir.path(), &cfg, api, admin).await;
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(
            tokio::net::TcpStream::connect(("127.0.0.1", api))
                .await
                .unwrap(),
        );
    }
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(20))
        .build()
        .unwrap();
    for i in 0..20 {
        let (status, body) = post_native(
            &client,
            &sb.api,
            "rw",
            "g",
            json!({"text": format!("m{i}")}),
            None,
        )
        .await
        .unwrap_or_else(|e| panic!("post {i} while 300 idle connections are open: {e}"));
        assert_eq!(status, 201, "{body}");
        let health = client
            .get(format!("{}/api/health", sb.api))
            .header("authorization", bearer("rw"))
            .send()
            .await
            .unwrap();
        assert_eq!(health.status(), 200);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // The idle ones were disconnected: reading one ends (EOF or reset).
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 1];
    let first = tokio::time::timeout(std::time::Duration::from_secs(30), idle[0].read(&mut buf))
        .await
        .expect("the server closes an idle connection");
    assert!(matches!(first, Ok(0) | Err(_)), "{first:?}");
    assert!(
        sb.log().contains("Connection limit reached"),
        "the log says so"
    );
}

/// A seeded, repeatable fuzz of the config loader and the bot API's JSON
/// bodies on the stable toolchain: thousands of mutations of valid inputs
/// (bytes flipped, inserted, deleted, cut) must each end in Ok or a clear
/// error, never a panic.
#[test]
fn mutated_config_files_and_api_bodies_never_panic() {
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        // xorshift64*
        seed ^= seed >> 12;
        seed ^= seed << 25;
        seed ^= seed >> 27;
        seed.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let config = include_str!("../../config/switchboard.example.toml").replace(
        "token_env = \"RELAY_BOT_TOKEN\"",
        "token = \"0123456789abcdef0123\"",
    );
    let body = r#"{"text":"héllo 😀","spans":[{"start":0,"end":2,"style":"bold"},{"start":3,"end":7,"style":"link","url":"https://x"}],"username":"ann","reply_to":"3","attachments":[{"name":"a.txt","mime":"text/plain","data":"aGk="}]}"#;
    let mutate = |input: &str, next: &mut dyn FnMut() -> u64| -> String {
        let mut bytes = input.as_bytes().to_vec();
        for _ in 0..1 + next() % 4 {
            if bytes.is_empty() {
                break;
            }
            let at = (next() as usize) % bytes.len();
            match next() % 4 {
                0 => bytes[at] = (next() % 256) as u8,
                1 => bytes.insert(at, b"\"[]{}=,.\n\\0x9"[(next() % 13) as usize]),
                2 => {
                    bytes.remove(at);
                }
                _ => bytes.truncate(at),
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    };
    for _ in 0..3000 {
        let text = mutate(&config, &mut next);
        let _ = switchboard::config::from_text("fuzz.toml", &text);
    }
    for _ in 0..20000 {
        let text = mutate(body, &mut next);
        if let Ok(b) =
            switchboard::api::native::parse::<switchboard::api::native::PostBody>(text.as_bytes())
        {
            let _ = b.validate_spans();
        }
    }
}

/// `SWITCHBOARD__<SECTION>__<KEY>` overrides the file's value (and a bad
/// one is named like a bad key in the file); without such a variable the
/// file alone is read, by a path that skips the layering.
#[test]
fn environment_variables_override_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let path = dir.path().join("env.toml");
    std::fs::write(
        &path,
        format!(
            "[general]\ndata_dir = \"{}\"\n{API}{GOOD_TOKEN}",
            data.display()
        ),
    )
    .unwrap();
    let check = |env: &[(&str, &str)]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchboard"));
        cmd.args(["--config", path.to_str().unwrap(), "check"])
            .env_remove("SWITCHBOARD_CONFIG");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (code, out) = check(&[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("127.0.0.1:1 "), "the file's bind: {out}");
    let (code, out) = check(&[("SWITCHBOARD__API__BOTS__BIND", "127.0.0.1:2")]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("127.0.0.1:2 "), "the variable's bind: {out}");
    assert!(!out.contains("127.0.0.1:1 "), "{out}");
    let (code, out) = check(&[("SWITCHBOARD__OUTBOX__SEND_TIMEOUT", "10 parsecs")]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("outbox.send_timeout") && out.contains("10 parsecs"),
        "{out}"
    );
}
