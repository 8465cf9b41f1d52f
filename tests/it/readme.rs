//! The README's run command works on the embedded default: no config, no
//! credentials, a token printed at start, messages relayed.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

#[tokio::test]
async fn embedded_default_runs_relays_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let check = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .arg("check")
        .current_dir(dir.path())
        .env_remove("SWITCHBOARD_CONFIG")
        .output()
        .unwrap();
    assert!(check.status.success());
    let table = String::from_utf8_lossy(&check.stdout);
    assert!(
        table.contains("lobby") && table.contains("api.default"),
        "{table}"
    );

    let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .arg("run")
        .current_dir(dir.path())
        .env_remove("SWITCHBOARD_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let token = loop {
        let line = lines.next().expect("a token line").unwrap();
        if let Some(t) = line.trim().strip_prefix("Authorization: Bearer ") {
            break t.to_owned();
        }
    };
    assert!(dir.path().join("data/switchboard.db").exists() || dir.path().join("data").exists());
    let client = reqwest::Client::new();
    let api = "http://127.0.0.1:4242";
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.get(format!("{api}/healthz")).send().await.is_err() {
        assert!(Instant::now() < deadline, "the default API did not come up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = client
        .post(format!("{api}/v1/gateways/lobby/messages"))
        .bearer_auth(&token)
        .json(&json!({"text": "hello from the README"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // A second consumer name of the same token, with echo, sees it.
    let mut resp = client
        .get(format!(
            "{api}/v1/gateways/lobby/events?echo=true&consumer=tour"
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let mut text = String::new();
    while !text.contains("hello from the README") {
        let chunk = tokio::time::timeout(Duration::from_secs(30), resp.chunk())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let data = text.lines().find_map(|l| l.strip_prefix("data:")).unwrap();
    let event: Value = serde_json::from_str(data.trim()).unwrap();
    assert_eq!(event["gateway"], "lobby");
    let metrics = client
        .get("http://127.0.0.1:4240/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("switchboard_events_in_total{account=\"api.default\"} 1"),
        "{metrics}"
    );
    drop(resp);

    Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "clean exit on SIGTERM: {status}");
            break;
        }
        assert!(Instant::now() < deadline, "no exit on SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The token survives restarts.
    let kept = std::fs::read_to_string(dir.path().join("data/api.default.token")).unwrap();
    assert_eq!(kept.trim(), token);
    // And is printed only when it is created: stdout ends up in journals.
    let again = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .arg("run")
        .current_dir(dir.path())
        .env_remove("SWITCHBOARD_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.get(format!("{api}/healthz")).send().await.is_err() {
        assert!(
            Instant::now() < deadline,
            "the default API did not come up again"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Command::new("kill")
        .arg("-TERM")
        .arg(again.id().to_string())
        .status()
        .unwrap();
    let out = again.wait_with_output().unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        !printed.contains(&token),
        "the second start must not print the token: {printed}"
    );
}

#[test]
fn example_config_documents_a_valid_configuration() {
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args([
            "--config",
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/config/switchboard.example.toml"
            ),
            "check",
        ])
        .env("RELAY_BOT_TOKEN", "0123456789abcdef0123")
        .env("MODERATION_HOOK_SECRET", "s3cret")
        .env("TELEGRAM_TOKEN", "123456:ABC-example_token")
        .env("MATRIX_PASSWORD", "correct horse")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("webhook:moderation"), "{table}");
    assert!(table.contains("telegram.main"), "{table}");
}
