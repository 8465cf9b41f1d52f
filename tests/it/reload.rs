//! Live reload through the real binary: while two producers post, SIGHUP
//! puts in force a configuration that adds a gateway (with a token for it)
//! and removes a webhook. No message is lost or repeated for the reader
//! and the remaining webhook; the removed webhook's queue becomes dead
//! letters "removed from config". A configuration with an error, reloaded
//! with `switchboard reload`, changes nothing and says what is wrong. A
//! reload adds a bot API account (its listener, tokens and membership) and
//! removes it again; network accounts are in `telegram`.

use std::collections::HashSet;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::json;

use crate::harness::*;

const PER: usize = 150;

#[tokio::test]
async fn sighup_adds_a_gateway_and_removes_a_webhook_while_messages_flow() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::new(Backend::Sqlite, dir.path()).await;
    let (api, admin) = (free_port(), free_port());
    let mut keep = Receiver::new();
    keep.up().await;
    // The webhook to be removed is down: its rows queue up.
    let drop_hook = Receiver::new();
    let base = base_config(&db, dir.path(), api, admin)
        + &token("producer", r#"["write"]"#, r#"["g"]"#)
        + &token("reader", r#"["read"]"#, r#"["g"]"#)
        + &webhook("keep", keep.port, r#"["g"]"#);
    let before = base.clone() + &webhook("drop", drop_hook.port, r#"["g"]"#) + &gateway("g");
    let mut sb = Sb::start(dir.path(), &before, api, admin).await;
    let client = reqwest::Client::new();
    let reader = Inbox::default();
    let ws = sb.api.replace("http", "ws");
    ws_reader(&format!("{ws}/v1/ws?gateways=g"), "reader", reader.clone()).await;

    let posted = Arc::new(AtomicUsize::new(0));
    let producers: Vec<_> = (0..2)
        .map(|p| {
            let (client, api, posted) = (client.clone(), sb.api.clone(), posted.clone());
            tokio::spawn(async move {
                for i in 0..PER {
                    let key = format!("p{p}-{i}");
                    loop {
                        let r = post_native(
                            &client,
                            &api,
                            "producer",
                            "g",
                            json!({"text": format!("p{p} {i}")}),
                            Some(&key),
                        )
                        .await;
                        if matches!(r, Ok((200 | 201, _))) {
                            break;
                        }
                    }
                    posted.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    eventually("a third of the messages", || {
        posted.load(Ordering::SeqCst) >= PER * 2 / 3
    })
    .await;
    let after =
        base.clone() + &token("newbot", r#"["write"]"#, r#"["h"]"#) + &gateway("g") + &gateway("h");
    std::fs::write(&sb.config, &after).unwrap();
    let hup = Command::new("kill")
        .args(["-HUP", &sb.pid().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    until("the new gateway and its token to work", || async {
        matches!(
            post_native(
                &client,
                &sb.api,
                "newbot",
                "h",
                json!({"text": "in h"}),
                None
            )
            .await,
            Ok((201, _))
        )
    })
    .await;
    assert!(
        posted.load(Ordering::SeqCst) < PER * 2,
        "the reload must land while messages flow"
    );
    for p in producers {
        p.await.unwrap();
    }

    let total = PER * 2;
    reader.wait_len(total, "the reader's messages").await;
    eventually("the kept webhook's messages", || {
        keep.deliveries().len() >= total
    })
    .await;
    let read = texts(&reader.all());
    assert_eq!(read.len(), total, "the reader got nothing twice");
    assert_eq!(read.iter().collect::<HashSet<_>>().len(), total);
    let hooked: Vec<String> = keep
        .deliveries()
        .iter()
        .map(|d| d.body["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        hooked.iter().collect::<HashSet<_>>().len(),
        total,
        "the kept webhook got every message"
    );
    assert_eq!(hooked.len(), total, "and none twice");
    for p in 0..2 {
        let order: Vec<usize> = hooked
            .iter()
            .filter_map(|t| t.strip_prefix(&format!("p{p} ")))
            .map(|n| n.parse().unwrap())
            .collect();
        assert!(
            order.windows(2).all(|w| w[0] < w[1]),
            "producer {p} in order"
        );
    }
    // The removed webhook's queue: dead letters with the reason, nothing
    // left pending.
    sb.drained().await;
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .arg("--config")
        .arg(&sb.config)
        .arg("status")
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&out.stdout);
    let row = status.lines().find(|l| l.starts_with("api.bots")).unwrap();
    assert!(row.contains("removed from config"), "{status}");

    // A broken configuration changes nothing.
    std::fs::write(
        &sb.config,
        after.replace("[[gateway]]", "[[gateway]]\nnmae = 1\n"),
    )
    .unwrap();
    let cli = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .arg("--config")
            .arg(dir.path().join("good-copy.toml"))
            .args(args)
            .output()
            .unwrap()
    };
    // The CLI reads the admin address from a readable copy; the server
    // reloads its own (now broken) file.
    std::fs::write(dir.path().join("good-copy.toml"), &after).unwrap();
    let out = cli(&["reload"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("nmae"), "the error names the key: {stderr}");
    assert!(sb.log().contains("Reload refused"), "the log says why");
    let (status, body) = post_native(
        &client,
        &sb.api,
        "newbot",
        "h",
        json!({"text": "still"}),
        None,
    )
    .await
    .unwrap();
    assert_eq!(status, 201, "nothing changed: {body}");
    sb.stop().await;
}

#[tokio::test]
async fn a_reload_adds_and_removes_a_bot_api_account() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::new(Backend::Sqlite, dir.path()).await;
    let (api, admin, more) = (free_port(), free_port(), free_port());
    let base = base_config(&db, dir.path(), api, admin)
        + &token("reader", r#"["read"]"#, r#"["g"]"#)
        + &gateway("g");
    let sb = Sb::start(dir.path(), &base, api, admin).await;
    let reader = Inbox::default();
    let ws = sb.api.replace("http", "ws");
    ws_reader(&format!("{ws}/v1/ws?gateways=g"), "reader", reader.clone()).await;
    let reload = || sb.cli(&["reload"]);
    // A second bot API account on its own port, a member of gateway g.
    let with_more = base.clone()
        + &format!(
            "\n[api.more]\nbind = \"127.0.0.1:{more}\"\n[[api.more.tokens]]\nname = \"other\"\ntoken = \"{}\"\nscopes = [\"read\", \"write\"]\ngateways = [\"g\"]\n[[gateway.inout]]\naccount = \"api.more\"\nchannel = \"api\"\n",
            secret("other")
        );
    std::fs::write(&sb.config, &with_more).unwrap();
    let report = reload();
    assert!(report.contains("api.more"), "{report}");
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{more}");
    let (status, body) = post_native(
        &client,
        &url,
        "other",
        "g",
        json!({"text": "from the new account"}),
        None,
    )
    .await
    .unwrap();
    assert_eq!(status, 201, "{body}");
    reader.wait_len(1, "the new account's post").await;
    assert_eq!(reader.all()[0]["origin"]["account"], "api.more");
    // The first account was not disturbed: its stream is still open.
    let (status, _) = post_native(&client, &sb.api, "reader", "g", json!({"text": "x"}), None)
        .await
        .unwrap();
    assert_eq!(status, 403, "the reader token still reads only");

    // Removed: its port stops answering.
    std::fs::write(&sb.config, &base).unwrap();
    reload();
    eventually("the removed account's listener gone", || {
        std::net::TcpStream::connect(("127.0.0.1", more)).is_err()
    })
    .await;
}
