//! `switchboard pause` / `resume` through the real binary: a paused
//! account's queue fills (also across a restart) and drains in order on
//! resume.

use std::process::Command;
use std::time::Duration;

use serde_json::json;

use crate::harness::*;

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

fn state_of(sb: &Sb, account: &str) -> String {
    let (ok, out) = cli(sb, &["status"]);
    assert!(ok, "{out}");
    out.lines()
        .find(|l| l.starts_with(account))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn pause_holds_a_queue_across_a_restart_and_resume_drains_it_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::new(Backend::Sqlite, dir.path()).await;
    let (api, admin) = (free_port(), free_port());
    let mut hook = Receiver::new();
    hook.up().await;
    let cfg = base_config(&db, dir.path(), api, admin)
        + &token("producer", r#"["write"]"#, r#"["g"]"#)
        + &webhook("hook", hook.port, r#"["g"]"#)
        + &gateway("g");
    let mut sb = Sb::start(dir.path(), &cfg, api, admin).await;
    let client = reqwest::Client::new();
    let post = |text: String| {
        let (client, api) = (client.clone(), sb.api.clone());
        async move {
            let (status, _) =
                post_native(&client, &api, "producer", "g", json!({"text": text}), None)
                    .await
                    .unwrap();
            assert_eq!(status, 201);
        }
    };
    post("before".into()).await;
    eventually("the first delivery", || hook.deliveries().len() == 1).await;

    let (ok, out) = cli(&sb, &["pause", "api.bots"]);
    assert!(ok, "{out}");
    assert_eq!(state_of(&sb, "api.bots"), "paused");
    for i in 0..5 {
        post(format!("held {i}")).await;
    }
    until("the held rows to be queued", || async {
        sb.queue_depth().await == 5
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(hook.deliveries().len(), 1, "nothing is sent while paused");

    // A pause is for maintenance: it holds across a restart.
    sb.stop().await;
    sb.restart().await;
    assert_eq!(state_of(&sb, "api.bots"), "paused");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(hook.deliveries().len(), 1, "still paused after the restart");

    let (ok, out) = cli(&sb, &["resume", "api.bots"]);
    assert!(ok, "{out}");
    eventually("the queue to drain", || hook.deliveries().len() == 6).await;
    let got: Vec<String> = hook
        .deliveries()
        .iter()
        .map(|d| d.body["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        got,
        ["before", "held 0", "held 1", "held 2", "held 3", "held 4"]
    );
    assert_eq!(state_of(&sb, "api.bots"), "up");

    // A name that is no account is a clear error.
    let (ok, out) = cli(&sb, &["pause", "telegram.nope"]);
    assert!(!ok);
    assert!(out.contains("no destination account"), "{out}");
}
