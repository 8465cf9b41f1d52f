//! Signal against the real signal-cli 0.13.19 daemon
//! (`switchboard_signal::real`, installed by `tests/support/signal-cli.sh`),
//! started the way signal-cli's docs run it: without `-a`, serving the
//! accounts of its data directory, here none (no Signal account can be
//! registered from here). It answers everything that needs no account, so
//! these tests check against it: the fake's answers, byte for byte where
//! both can answer (`the_fake_answers_as_the_real_daemon_does`), and
//! switchboard's own behaviour when the daemon does not serve the account
//! and when it is killed and comes back. A missing install fails the tests
//! with the script's reason; it never skips them.
//!
//! Each test starts one daemon (a JVM takes a few seconds) and proves as
//! much as it can with it.

use std::time::Duration;

use serde_json::{json, Value};
use switchboard_signal::fake::{FakeOptions, FakeSignal, ReceiveMode};
use switchboard_signal::real::RealSignalCli;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::harness::*;

const ME: &str = "+15550000001";
const NOBODY: &str = "+15550009999";

async fn real(dir: &std::path::Path) -> RealSignalCli {
    RealSignalCli::start(&dir.join("signal-cli"))
        .await
        .unwrap_or_else(|e| panic!("the real signal-cli daemon: {e}"))
}

/// One JSON-RPC session over TCP: the answers to `lines`, in request
/// order (each matched by id; `None` for a request the daemon answered
/// by closing the connection), ids as the test chose them.
async fn ask(addr: &str, lines: &[String]) -> Vec<Option<Value>> {
    let mut answers = Vec::new();
    for line in lines {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (r, mut w) = stream.into_split();
        w.write_all(format!("{line}\n").as_bytes()).await.unwrap();
        let mut r = BufReader::new(r);
        let mut got = String::new();
        let read = tokio::time::timeout(Duration::from_secs(60), r.read_line(&mut got))
            .await
            .expect("an answer or a closed connection");
        answers.push(match read {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(serde_json::from_str(got.trim_end()).unwrap()),
        });
    }
    answers
}

async fn http_ask(url: &str, body: &str) -> (u16, String) {
    let r = reqwest::Client::new()
        .post(format!("{url}/api/v1/rpc"))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

fn request(method: &str, params: Value, id: i64) -> String {
    json!({"jsonrpc": "2.0", "method": method, "params": params, "id": id}).to_string()
}

/// A send whose one attachment is a data URI of exactly `chars` characters.
fn big_send(chars: usize) -> String {
    let prefix = "data:application/octet-stream;filename=a.bin;base64,";
    let uri = format!("{prefix}{}", "A".repeat(chars - prefix.len()));
    request(
        "send",
        json!({"account": NOBODY, "recipient": ["+15550000002"], "attachments": [uri]}),
        9,
    )
}

/// The fake, started as a daemon serving several accounts, answers as the
/// real one does: framing and envelope errors, the codes and messages for a
/// missing or unknown account, the 20,000,000-character limit over TCP
/// (the connection closes) and HTTP (-32603), the event stream's 400.
#[tokio::test]
async fn the_fake_answers_as_the_real_daemon_does() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = real(dir.path()).await;
    let fake = FakeSignal::start(FakeOptions {
        multi_account: true,
        other_accounts: vec!["+15550000077".into()],
        receive_mode: ReceiveMode::Manual,
        shuffle_responses: false,
        ..FakeOptions::default()
    })
    .await
    .unwrap();

    let lines = vec![
        request("version", json!({}), 1),
        request("getUserStatus", json!({"recipient": ["+15550000002"]}), 2),
        request(
            "send",
            json!({"message": "x", "recipient": ["+15550000002"]}),
            3,
        ),
        request(
            "send",
            json!({"account": NOBODY, "message": "x", "recipient": ["+15550000002"]}),
            4,
        ),
        request("subscribeReceive", json!({"account": NOBODY}), 5),
        request("noSuchMethod", json!({}), 6),
        String::new(),
        r#"{"jsonrpc":"2.0","id":7}"#.to_owned(),
        r#"{"jsonrpc":"1.0","method":"version","id":8}"#.to_owned(),
        big_send(20_000_000),
        big_send(20_000_001),
    ];
    let want = ask(&daemon.tcp_addr(), &lines).await;
    let got = ask(&fake.tcp_addr().to_string(), &lines).await;
    for (i, (w, g)) in want.iter().zip(&got).enumerate() {
        assert_eq!(
            g,
            w,
            "request {i}: {}",
            &lines[i][..lines[i].len().min(120)]
        );
    }
    // What the real daemon said, for the record (and so a change of
    // signal-cli shows here first).
    assert_eq!(
        want[0],
        Some(json!({"jsonrpc": "2.0", "result": {"version": "0.13.19"}, "id": 1}))
    );
    assert_eq!(
        want[1].as_ref().unwrap()["error"],
        json!({"code": -32602, "message": "Method requires valid account parameter", "data": null})
    );
    assert_eq!(
        want[3].as_ref().unwrap()["error"]["message"],
        "Specified account does not exist"
    );
    assert_eq!(
        want[9].as_ref().unwrap()["error"]["code"],
        -32602,
        "20,000,000 characters are read"
    );
    assert_eq!(want[10], None, "20,000,001 close the connection unanswered");

    // listAccounts: the same shape (the real daemon has no account).
    let accounts = ask(&daemon.tcp_addr(), &[request("listAccounts", json!({}), 1)]).await;
    assert_eq!(accounts[0].as_ref().unwrap()["result"], json!([]));

    // HTTP: the same limit answers -32603 with no id; no subscribeReceive.
    for body in [
        big_send(20_000_001),
        request("subscribeReceive", json!({}), 3),
        big_send(20_000_000),
    ] {
        let want = http_ask(&daemon.http_url(), &body).await;
        let got = http_ask(&fake.http_url(), &body).await;
        assert_eq!(got, want, "{}", &body[..body.len().min(120)]);
    }
    let (_, limit) = http_ask(&daemon.http_url(), &big_send(20_000_001)).await;
    assert_eq!(
        limit,
        r#"{"jsonrpc":"2.0","error":{"code":-32603,"message":"An internal server error has occurred.","data":null},"id":null}"#
    );
    // The event stream for an account the daemon does not serve.
    let events = |base: String| async move {
        reqwest::get(format!("{base}/api/v1/events?account=%2B15550009999"))
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(events(daemon.http_url()).await, 400);
    assert_eq!(events(fake.http_url()).await, 400);
    fake.stop().await;
}

fn status_of(v: &Value, account: &str) -> Value {
    v["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["account"] == account)
        .cloned()
        .unwrap_or_default()
}

/// A daemon that does not serve the account (started without `-a`, the
/// account neither registered nor linked): over TCP and over HTTP the
/// account shows `needs_action` naming the fix, and a message for it waits
/// (not dead-lettered). The daemon killed: the account shows the daemon
/// unreachable at once; back: the account shows what it needs again, the
/// old error gone.
#[tokio::test]
async fn a_daemon_without_the_account_says_what_to_do_and_keeps_messages() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = real(dir.path()).await;
    let db = Db::new(Backend::Sqlite, dir.path()).await;
    let (api, admin) = (free_port(), free_port());
    let cfg = base_config(&db, dir.path(), api, admin)
        + &token("ann", r#"["read", "write"]"#, r#"["g"]"#)
        + &format!(
            "\n[signal.main]\naccount = \"{ME}\"\ndaemon = \"tcp://{}\"\nrequest_timeout = \"5s\"\n",
            daemon.tcp_addr()
        )
        + &format!(
            "\n[signal.web]\naccount = \"{ME}\"\ndaemon = \"{}\"\nrequest_timeout = \"5s\"\n",
            daemon.http_url()
        )
        + &gateway("g")
        + "\n[[gateway.inout]]\naccount = \"signal.main\"\nchannel = \"mJ8c0YQ4d3yq3bq1p8m2x1l2cYQ4d3yq3bq1p8m2x1k=\"\n"
        + "\n[[gateway.inout]]\naccount = \"signal.web\"\nchannel = \"+15550000002\"\n";
    let sb = Sb::start(dir.path(), &cfg, api, admin).await;
    let client = reqwest::Client::new();
    let status = || {
        let client = client.clone();
        let url = format!("{}/v1/status", sb.admin);
        async move {
            client
                .get(url)
                .bearer_auth(ADMIN_TOKEN)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let needs_action = |s: &Value, account: &str| {
        let a = status_of(s, account);
        a["state"] == "needs_action"
            && a["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("register") && e.contains("link") && e.contains(ME))
    };
    until("both accounts need an admin", || {
        let s = status();
        async move {
            let s = s.await;
            needs_action(&s, "signal.main") && needs_action(&s, "signal.web")
        }
    })
    .await;
    let (code, _) = post_native(
        &client,
        &sb.api,
        "ann",
        "g",
        json!({"text": "hello", "username": "Ann"}),
        None,
    )
    .await
    .unwrap();
    assert_eq!(code, 201);
    // The message waits for the account: queued for both, dead for neither.
    until("queued for both Signal accounts", || async {
        let m = sb.metrics().await;
        ["signal.main", "signal.web"].iter().all(|a| {
            m.lines()
                .any(|l| l == format!("switchboard_queue_depth{{account=\"{a}\"}} 1"))
        })
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let m = sb.metrics().await;
    assert!(
        !m.lines().any(
            |l| l.starts_with("switchboard_dead_letters_total{account=\"signal.")
                && !l.ends_with(" 0")
        ),
        "nothing dead-lettered:\n{m}"
    );

    // Killed: the account shows the daemon unreachable.
    daemon.kill9();
    until("signal.main shows the daemon gone", || {
        let s = status();
        async move {
            let a = status_of(&s.await, "signal.main");
            a["state"] != "needs_action"
                && a["last_error"]
                    .as_str()
                    .is_some_and(|e| e.contains("signal-cli"))
        }
    })
    .await;
    daemon
        .restart()
        .await
        .unwrap_or_else(|e| panic!("restarting signal-cli: {e}"));
    until("back: what the account needs, the old error gone", || {
        let s = status();
        async move { needs_action(&s.await, "signal.main") }
    })
    .await;
    drop(sb);
}
