//! Signal as it really is (issue 20), through the real binary against the
//! fake daemon where the test needs a Signal account (the real daemon runs
//! without one: `signal_real`). The fake is as strict as signal-cli 0.13.19:
//! a daemon serving several accounts requires `account`, a string over
//! 20,000,000 characters closes the connection, a mention's `name` is the
//! number, a long text comes with its `text/x-signal-plain` attachment,
//! `getUserStatus` can be rate-limited.
//!
//! One test per item of the issue, each named for what it proves; each
//! asserts what arrived, in what order, how many times.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use switchboard_signal::fake::{
    DaemonVersion, FakeOptions, FakeSignal, Fault, Outage, ReceiveMode,
};
use tokio_tungstenite::tungstenite::Message;

use crate::harness::*;
use crate::signal::{fake, sends, signal_member, signal_section, ALICE};

const ME: &str = "+15550000001";
const OTHER: &str = "+15550000077";
const ALICE_UUID: &str = "6a1f7c1e-4c57-4e64-9a3c-2a6f6f0b1c11";

/// switchboard with a bot (`ann`) and the Signal channel in gateway `g`.
async fn bridge(
    dir: &std::path::Path,
    signal_cfg: &str,
    channel: &str,
    outbox: &[(&str, &str)],
) -> Sb {
    let db = Db::new(Backend::Sqlite, dir).await;
    let (api, admin) = (free_port(), free_port());
    let mut cfg = base_config(&db, dir, api, admin)
        + &token("ann", r#"["read", "write"]"#, r#"["g"]"#)
        + signal_cfg
        + &gateway("g")
        + &signal_member(channel);
    for (from, to) in outbox {
        cfg = cfg.replace(from, to);
    }
    Sb::start(dir, &cfg, api, admin).await
}

/// The fake's group bridged over TCP, with `extra` lines in the Signal
/// section.
async fn on_tcp(dir: &std::path::Path, extra: &str) -> (FakeSignal, String, Sb) {
    let (signal, group) = fake().await;
    let section = signal_section(&format!("tcp://{}", signal.tcp_addr()), Some("5s")) + extra;
    let sb = bridge(dir, &section, &group, &[]).await;
    (signal, group, sb)
}

async fn reader(sb: &Sb) -> Inbox {
    let inbox = Inbox::default();
    let ws = sb.api.replace("http", "ws");
    ws_reader(&format!("{ws}/v1/ws?gateways=g"), "ann", inbox.clone()).await;
    inbox
}

/// A reader that acknowledges each event (`ack=true`): what was in flight
/// when its connection closed comes again on the next one.
async fn acking_reader(sb: &Sb) -> Inbox {
    let inbox = Inbox::default();
    let ws = sb.api.replace("http", "ws");
    let (ws, ()) = ws_connect(&format!("{ws}/v1/ws?gateways=g&ack=true"), "ann").await;
    let (mut tx, mut rx) = ws.split();
    let got = inbox.clone();
    tokio::spawn(async move {
        while let Some(Ok(msg)) = rx.next().await {
            if let Message::Text(t) = msg {
                let v: Value = serde_json::from_str(&t).unwrap();
                let cursor = v["cursor"].as_i64();
                got.push(v);
                if let Some(cursor) = cursor {
                    let ack = json!({"type": "ack", "cursor": cursor}).to_string();
                    if tx.send(Message::Text(ack.into())).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    inbox
}

async fn post(sb: &Sb, text: &str) -> String {
    let (s, v) = post_native(
        &reqwest::Client::new(),
        &sb.api,
        "ann",
        "g",
        json!({"text": text, "username": "Ann"}),
        None,
    )
    .await
    .unwrap();
    assert_eq!(s, 201, "{v}");
    v["id"].as_str().unwrap().to_owned()
}

async fn post_file(sb: &Sb, text: &str, name: &str, bytes: Vec<u8>) {
    let form = reqwest::multipart::Form::new()
        .text(
            "payload",
            json!({"text": text, "username": "Ann"}).to_string(),
        )
        .part(
            "file",
            reqwest::multipart::Part::bytes(bytes)
                .file_name(name.to_owned())
                .mime_str("application/octet-stream")
                .unwrap(),
        );
    let r = reqwest::Client::new()
        .post(format!("{}/v1/gateways/g/messages", sb.api))
        .header("authorization", bearer("ann"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
}

/// Posts a file and waits until a `send` of it has succeeded at Signal:
/// that send.
async fn file_sent(
    sb: &Sb,
    signal: &FakeSignal,
    text: &str,
    name: &str,
    bytes: Vec<u8>,
) -> switchboard_signal::fake::Sent {
    post_file(sb, text, name, bytes).await;
    until("the file at Signal", || {
        let n = sends(signal, "send").len();
        async move { n == 1 }
    })
    .await;
    signal
        .sent()
        .into_iter()
        .find(|s| s.method == "send" && s.ok())
        .expect("the send that succeeded")
}

fn metric(text: &str, name: &str, account: &str) -> i64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}{{account=\"{account}\"}} ")))
        .map_or(0, |v| v.trim().parse().unwrap())
}

async fn account_status(sb: &Sb, account: &str) -> Value {
    let v: Value = admin_get(&sb.admin, "/v1/status")
        .await
        .json()
        .await
        .unwrap();
    v["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["account"] == account)
        .cloned()
        .unwrap_or_default()
}

fn texts_at_signal(signal: &FakeSignal) -> Vec<String> {
    sends(signal, "send")
        .iter()
        .map(|s| s["message"].as_str().unwrap_or_default().to_owned())
        .collect()
}

// ---- 1. several accounts on one daemon ----------------------------------------

#[tokio::test]
async fn a_daemon_serving_several_accounts_over_tcp_bridges_only_ours() {
    several_accounts(false).await;
}

#[tokio::test]
async fn a_daemon_serving_several_accounts_over_http_bridges_only_ours() {
    several_accounts(true).await;
}

/// A daemon started without `-a` with two accounts loaded: every call names
/// the account (else -32602), the subscription and the event stream are
/// for this account only, so the other account's messages are not bridged.
async fn several_accounts(http: bool) {
    let dir = tempfile::tempdir().unwrap();
    let signal = FakeSignal::start(FakeOptions {
        multi_account: true,
        other_accounts: vec![OTHER.into()],
        receive_mode: ReceiveMode::Manual,
        sse_keepalive: Duration::from_millis(500),
        ..FakeOptions::default()
    })
    .await
    .unwrap();
    signal.add_contact(ALICE, ALICE_UUID, Some("Alice"));
    let group = signal.add_group("Bridge Test", &[ALICE]);
    let daemon = if http {
        signal.http_url()
    } else {
        format!("tcp://{}", signal.tcp_addr())
    };
    let sb = bridge(
        dir.path(),
        &signal_section(&daemon, Some("5s")),
        &group,
        &[],
    )
    .await;
    let inbox = reader(&sb).await;
    assert!(signal.wait_receivers(1, PATIENCE).await);
    until("up", || async {
        account_status(&sb, "signal.main").await["state"] == "up"
    })
    .await;
    signal.inject_envelope_for(
        OTHER,
        json!({"source": ALICE, "sourceNumber": ALICE, "sourceUuid": ALICE_UUID, "sourceName": "Alice",
            "sourceDevice": 1, "timestamp": 1_764_000_000_000_i64,
            "dataMessage": {"timestamp": 1_764_000_000_000_i64, "message": "for the other account", "expiresInSeconds": 0, "viewOnce": false,
                "groupInfo": {"groupId": group, "groupName": "Bridge Test", "revision": 1, "type": "DELIVER"}}}),
    );
    signal.inject_message(ALICE, Some(&group), json!({"message": "for us"}));
    inbox.wait_len(1, "our account's message").await;
    post(&sb, "from the bot").await;
    until("the post at Signal", || {
        let n = sends(&signal, "send").len();
        async move { n == 1 }
    })
    .await;
    let got = texts(&events_from(&inbox, "signal.main", "message"));
    assert_eq!(got, ["for us"], "only this account's messages");
    assert_eq!(texts_at_signal(&signal), ["Ann: from the bot"]);
    // Every per-account call named the account.
    for (method, params) in signal.requests() {
        if matches!(method.as_str(), "version" | "listAccounts") {
            continue;
        }
        assert_eq!(params["account"], ME, "{method} {params}");
    }
    sb.stop_and_check().await;
    signal.stop().await;
}

// ---- 2. names, never numbers ------------------------------------------------------

/// A Signal author without a name and the people they mention reach the
/// other networks by profile or contact name, else a neutral label: no
/// phone number anywhere in the event.
#[tokio::test]
async fn mentions_and_authors_are_shown_by_name_never_by_number() {
    names_and_numbers(false).await;
}

/// An admin who wants numbers shown opts in per account (`show_numbers`):
/// then a person without a known name is shown by number, in mentions and
/// as the author; known names stay names.
#[tokio::test]
async fn numbers_are_shown_where_the_admin_opted_in() {
    names_and_numbers(true).await;
}

async fn names_and_numbers(show_numbers: bool) {
    const STRANGER: &str = "+15557654321";
    const UNKNOWN: &str = "+15557000000";
    let dir = tempfile::tempdir().unwrap();
    let extra = if show_numbers {
        "show_numbers = true\n"
    } else {
        ""
    };
    let (signal, group, sb) = on_tcp(dir.path(), extra).await;
    signal.set_member(&group, STRANGER, true);
    let inbox = reader(&sb).await;
    assert!(signal.wait_receivers(1, PATIENCE).await);
    signal.inject_message(
        STRANGER,
        Some(&group),
        json!({"message": "\u{FFFC} \u{FFFC} \u{FFFC} look",
               "mentions": [{"number": ALICE, "start": 0, "length": 1},
                            {"number": ME, "start": 2, "length": 1},
                            {"number": UNKNOWN, "start": 4, "length": 1}]}),
    );
    inbox.wait_len(1, "the stranger's message").await;
    let msg = &events_from(&inbox, "signal.main", "message")[0];
    let (label, unknown) = if show_numbers {
        (STRANGER.to_owned(), UNKNOWN.to_owned())
    } else {
        (
            format!("Signal user {}", &signal.uuid_of(STRANGER)[..4]),
            format!("Signal user {}", &signal.uuid_of(UNKNOWN)[..4]),
        )
    };
    assert_eq!(msg["author"]["name"], label.as_str());
    assert_eq!(msg["text"], format!("@Alice @Bridge Bot @{unknown} look"));
    let all = msg.to_string();
    assert_eq!(
        all.contains("+1555"),
        show_numbers,
        "numbers shown only where asked for: {all}"
    );
    sb.stop_and_check().await;
    signal.stop().await;
}

/// A burst larger than the adapter's notification queue and its overflow
/// together: while the queue is full the reader stops reading (the daemon
/// then stops writing), and every message still arrives once, in order.
#[tokio::test]
async fn a_burst_larger_than_the_notification_queue_arrives_whole_and_in_order() {
    use switchboard_signal::client::{NOTES_CAPACITY, NOTES_OVERFLOW};
    let dir = tempfile::tempdir().unwrap();
    let (signal, group, sb) = on_tcp(dir.path(), "").await;
    let inbox = reader(&sb).await;
    assert!(signal.wait_receivers(1, PATIENCE).await);
    let n = NOTES_CAPACITY + NOTES_OVERFLOW + 500;
    for k in 0..n {
        signal.inject_message(
            ALICE,
            Some(&group),
            json!({ "message": format!("burst {k}") }),
        );
    }
    inbox.wait_len(n, "the burst").await;
    let texts: Vec<String> = events_from(&inbox, "signal.main", "message")
        .iter()
        .map(|m| m["text"].as_str().unwrap_or_default().to_owned())
        .collect();
    let expected: Vec<String> = (0..n).map(|k| format!("burst {k}")).collect();
    assert_eq!(texts.len(), n, "each once");
    assert!(texts == expected, "in order");
    sb.stop_and_check().await;
    signal.stop().await;
}

/// Stopping in the middle of a burst (SIGTERM here; in a cluster, the
/// account's lease going to another instance stops it the same way):
/// signal-cli acknowledged to Signal what it handed over already, so that
/// is committed before the connection closes; what it had not handed over
/// yet stays on the server and comes after the restart. Each message
/// once (by event id, across both readers), in order.
#[tokio::test]
async fn stopping_in_the_middle_of_a_burst_loses_none_of_it() {
    use switchboard_signal::client::{NOTES_CAPACITY, NOTES_OVERFLOW};
    let dir = tempfile::tempdir().unwrap();
    let (signal, group, mut sb) = on_tcp(dir.path(), "").await;
    let before = acking_reader(&sb).await;
    assert!(signal.wait_receivers(1, PATIENCE).await);
    let n = 2 * (NOTES_CAPACITY + NOTES_OVERFLOW);
    for k in 0..n {
        signal.inject_message(
            ALICE,
            Some(&group),
            json!({ "message": format!("burst {k}") }),
        );
    }
    before.wait_len(200, "the start of the burst").await;
    sb.stop().await;
    let log = sb.log();
    assert!(!log.contains("did not finish in time"), "{log}");
    assert!(!log.contains("did not stop in time"), "{log}");
    assert!(
        !log.contains("Stopped before everything signal-cli handed over was committed"),
        "{log}"
    );
    sb.restart().await;
    let after = acking_reader(&sb).await;
    let unique = || {
        let mut seen = std::collections::HashSet::new();
        let mut texts = Vec::new();
        for inbox in [&before, &after] {
            for e in events_from(inbox, "signal.main", "message") {
                if seen.insert(e["id"].as_str().unwrap_or_default().to_owned()) {
                    texts.push(e["text"].as_str().unwrap_or_default().to_owned());
                }
            }
        }
        texts
    };
    until_count("every message of the burst", n, || unique().len()).await;
    let texts = unique();
    let expected: Vec<String> = (0..n).map(|k| format!("burst {k}")).collect();
    assert_eq!(texts.len(), n, "each once");
    assert!(texts == expected, "in order");
    sb.stop_and_check().await;
    signal.stop().await;
}

// ---- 3. large files --------------------------------------------------------------

/// 15.5 MiB: more than a data URI carries (14.3 MiB), less than Signal takes.
const BIG: usize = 31 << 19;

fn big_file() -> Vec<u8> {
    (0..BIG).map(|i| (i % 251) as u8).collect()
}

/// Files inside the request (no spool): a file too large for signal-cli's
/// JSON reader becomes a line with its name and size, and the group's next
/// message follows; nothing is retried or dead-lettered.
#[tokio::test]
async fn a_file_too_large_for_the_request_becomes_a_line_and_the_group_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let (signal, group) = fake().await;
    let section = signal_section(&format!("tcp://{}", signal.tcp_addr()), Some("20s"))
        + "spool_dir = \"off\"\n";
    let sb = bridge(
        dir.path(),
        &section,
        &group,
        &[("send_timeout = \"2s\"", "send_timeout = \"20s\"")],
    )
    .await;
    assert!(signal.wait_receivers(1, PATIENCE).await);
    post_file(&sb, "the video", "big.bin", big_file()).await;
    post(&sb, "after it").await;
    until("both messages at Signal", || {
        let n = sends(&signal, "send").len();
        async move { n >= 2 }
    })
    .await;
    sb.drained().await;
    let sent = sends(&signal, "send");
    assert_eq!(
        texts_at_signal(&signal),
        [
            "Ann: the video\n[file not bridged: big.bin (15.5 MiB): larger than this network takes (14.3 MiB)]",
            "Ann: after it"
        ]
    );
    assert!(sent[0].get("attachments").is_none(), "{}", sent[0]);
    let m = sb.metrics().await;
    assert_eq!(
        metric(&m, "switchboard_dead_letters_total", "signal.main"),
        0
    );
    sb.stop_and_check().await;
    signal.stop().await;
}

/// A daemon on this machine reads files by path from the spool: the same
/// 15.5 MiB arrive whole under their name, and the spool is emptied.
#[tokio::test]
async fn files_go_by_path_where_the_daemon_can_read_them() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let (signal, group) = fake().await;
    let section = signal_section(&format!("tcp://{}", signal.tcp_addr()), Some("20s"))
        + &format!("spool_dir = \"{}\"\n", spool.display());
    let sb = bridge(
        dir.path(),
        &section,
        &group,
        &[("send_timeout = \"2s\"", "send_timeout = \"20s\"")],
    )
    .await;
    assert!(signal.wait_receivers(1, PATIENCE).await);
    let sent = file_sent(&sb, &signal, "the video", "big.bin", big_file()).await;
    assert_eq!(sent.params["message"], "Ann: the video");
    let path = sent.params["attachments"][0].as_str().unwrap();
    assert!(path.starts_with(&spool.display().to_string()), "{path}");
    assert_eq!(sent.attachments.len(), 1);
    assert_eq!(sent.attachments[0].filename.as_deref(), Some("big.bin"));
    assert!(sent.attachments[0].bytes == big_file(), "the same bytes");
    sb.drained().await;
    eventually("the spool emptied", || {
        std::fs::read_dir(&spool).map_or(true, |d| d.count() == 0)
    })
    .await;
    sb.stop_and_check().await;
    signal.stop().await;
}

/// A spool the daemon cannot read (`daemon_spool_dir` names a directory
/// it does not have): signal-cli refuses the file by path, the adapter
/// says so in the status (`degraded`, naming the directory and the fix),
/// and the same file goes again inside the request: once, whole.
#[tokio::test]
async fn a_spool_the_daemon_cannot_read_falls_back_to_the_request() {
    const NOWHERE: &str = "/nonexistent-switchboard-spool";
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let (signal, _group, sb) = on_tcp(
        dir.path(),
        &format!(
            "spool_dir = \"{}\"\ndaemon_spool_dir = \"{NOWHERE}\"\n",
            spool.display()
        ),
    )
    .await;
    assert!(signal.wait_receivers(1, PATIENCE).await);
    let bytes: Vec<u8> = (0..4096_u32).map(|i| (i % 251) as u8).collect();
    let sent = file_sent(&sb, &signal, "the notes", "notes.bin", bytes.clone()).await;
    let refused = signal
        .requests()
        .into_iter()
        .filter(|(m, p)| {
            m == "send"
                && p["attachments"][0]
                    .as_str()
                    .is_some_and(|a| a.starts_with(NOWHERE))
        })
        .count();
    assert!(refused >= 1, "the path was tried first");
    let att = sent.params["attachments"][0].as_str().unwrap();
    assert!(
        att.starts_with("data:"),
        "inside the request: {}",
        &att[..att.len().min(40)]
    );
    assert_eq!(sent.attachments.len(), 1);
    assert!(sent.attachments[0].bytes == bytes, "the same bytes");
    let status = account_status(&sb, "signal.main").await;
    assert_eq!(status["state"], "degraded", "{status}");
    let error = status["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains(NOWHERE) && error.contains("daemon_spool_dir"),
        "{status}"
    );
    sb.drained().await;
    sb.stop_and_check().await;
    signal.stop().await;
}

// ---- 4. long messages ----------------------------------------------------------------

/// A message over 2,000 bytes (a `text/x-signal-plain` attachment on the
/// wire) arrives as its whole text, once, without a file, from 0.13 (which
/// cuts the inline text) and 0.14 (which inlines it all).
#[tokio::test]
async fn long_messages_arrive_whole_once_from_0_13_and_0_14() {
    for version in [DaemonVersion::V0_13_19, DaemonVersion::V0_14_6] {
        let dir = tempfile::tempdir().unwrap();
        let signal = FakeSignal::start(FakeOptions {
            receive_mode: ReceiveMode::Manual,
            version,
            ..FakeOptions::default()
        })
        .await
        .unwrap();
        signal.add_contact(ALICE, ALICE_UUID, Some("Alice"));
        let group = signal.add_group("Bridge Test", &[ALICE]);
        let sb = bridge(
            dir.path(),
            &signal_section(&format!("tcp://{}", signal.tcp_addr()), Some("5s")),
            &group,
            &[],
        )
        .await;
        let inbox = reader(&sb).await;
        assert!(signal.wait_receivers(1, PATIENCE).await);
        let full: String = (0..300).map(|i| format!("word{i:03} é ")).collect();
        assert!(full.len() > 2000);
        signal.inject_message(ALICE, Some(&group), json!({"message": full}));
        signal.inject_message(ALICE, Some(&group), json!({"message": "next"}));
        inbox.wait_len(2, "both messages").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let msgs = events_from(&inbox, "signal.main", "message");
        assert_eq!(texts(&msgs), [full.as_str(), "next"], "{version:?}");
        assert!(
            msgs[0]["attachments"].as_array().is_none_or(Vec::is_empty),
            "{version:?}: {}",
            msgs[0]
        );
        sb.stop_and_check().await;
        signal.stop().await;
    }
}

// ---- 5. permanent errors -------------------------------------------------------------

/// A failure retrying cannot fix (-32603 for a file signal-cli cannot
/// read) is dead-lettered at once with signal-cli's reason, and the next
/// message goes; removed from the group (-1 "User is not a member"), the
/// channel waits and shows why, and its message goes when the account is
/// back in the group.
#[tokio::test]
async fn what_a_retry_cannot_fix_is_dead_lettered_at_once_and_a_lost_group_waits() {
    let dir = tempfile::tempdir().unwrap();
    let (signal, group, sb) = on_tcp(dir.path(), "").await;
    assert!(signal.wait_receivers(1, PATIENCE).await);
    let reason = "Failed to send message: data:image/png;filename=a.png;base64,AAAA: Invalid data URI (AttachmentInvalidException) (UnexpectedErrorException)";
    signal.fail("send", Fault::Internal(reason.into()), 1);
    post(&sb, "one").await;
    post(&sb, "two").await;
    until("two at Signal", || {
        let n = sends(&signal, "send").len();
        async move { n == 1 }
    })
    .await;
    until("one dead-lettered", || async {
        metric(
            &sb.metrics().await,
            "switchboard_dead_letters_total",
            "signal.main",
        ) == 1
    })
    .await;
    assert_eq!(texts_at_signal(&signal), ["Ann: two"]);
    // Dead at the first attempt, with signal-cli's words.
    let pool =
        sqlx::sqlite::SqlitePool::connect(&format!("sqlite://{}/sb.db", dir.path().display()))
            .await
            .unwrap();
    let (attempts, error): (i64, String) = sqlx::query_as(
        "SELECT attempts, last_error FROM outbox WHERE account = 'signal.main' AND state = 'dead'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(attempts, 0, "never retried");
    assert!(error.contains("(AttachmentInvalidException)"), "{error}");
    pool.close().await;

    signal.set_member(&group, ME, false);
    post(&sb, "three").await;
    until("the channel needs action", || async {
        account_status(&sb, "signal.main").await["channels"]
            .as_array()
            .is_some_and(|c| {
                c.iter().any(|c| {
                    c["error"]
                        .as_str()
                        .is_some_and(|e| e.contains("not a member"))
                })
            })
    })
    .await;
    signal.set_member(&group, ME, true);
    until("three at Signal", || {
        let n = sends(&signal, "send").len();
        async move { n == 2 }
    })
    .await;
    assert_eq!(texts_at_signal(&signal), ["Ann: two", "Ann: three"]);
    assert_eq!(
        metric(
            &sb.metrics().await,
            "switchboard_dead_letters_total",
            "signal.main"
        ),
        1
    );
    sb.stop_and_check().await;
    signal.stop().await;
}

// ---- 6. the account's ACI --------------------------------------------------------------

/// The directory lookup rate-limited: the ACI comes from the daemon's own
/// store, so a Signal user's reaction to a bridged message (which names the
/// ACI) finds it; after a restart with the store failing too, the ACI kept
/// from before still does.
#[tokio::test]
async fn the_accounts_aci_is_learned_without_the_directory_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (signal, group) = fake().await;
    signal.fail(
        "getUserStatus",
        Fault::RateLimit {
            retry_after_seconds: 3600,
        },
        usize::MAX,
    );
    let mut sb = bridge(
        dir.path(),
        &signal_section(&format!("tcp://{}", signal.tcp_addr()), Some("5s")),
        &group,
        &[],
    )
    .await;
    let inbox = reader(&sb).await;
    assert!(signal.wait_receivers(1, PATIENCE).await);
    let react_to_copy = |posted: String, n: usize, inbox: Inbox| {
        let signal = &signal;
        let group = group.clone();
        async move {
            until("the post at Signal", || {
                let k = sends(signal, "send").len();
                async move { k == n }
            })
            .await;
            let copy = sends(signal, "send")[n - 1]["_timestamp"].as_i64().unwrap();
            signal.inject_reaction(ALICE, Some(&group), "👍", ME, copy, false);
            until("the reaction on the bot's own message", || {
                let hit = events_from(&inbox, "signal.main", "reaction")
                    .iter()
                    .any(|r| r["target"] == posted.as_str());
                async move { hit }
            })
            .await;
        }
    };
    let first = post(&sb, "hello").await;
    react_to_copy(first, 1, inbox.clone()).await;

    sb.drained().await;
    sb.kill9();
    signal.fail("listContacts", Fault::Io, usize::MAX);
    sb.restart().await;
    let inbox = reader(&sb).await;
    assert!(signal.wait_receivers(1, PATIENCE).await);
    let second = post(&sb, "again").await;
    react_to_copy(second, 2, inbox).await;
    sb.stop_and_check().await;
    signal.stop().await;
}

// ---- 7. a dead connection, and the way back ----------------------------------------------

/// The daemon gone: the account shows it at once and a message waits with
/// the breaker open (probing only every 10 minutes). The daemon back: the
/// adapter reconnects, which closes the breaker at once; the message goes,
/// once, and the status shows `up` without the old error.
#[tokio::test]
async fn a_reconnect_closes_the_breaker_and_clears_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let (signal, group) = fake().await;
    let sb = bridge(
        dir.path(),
        &signal_section(&format!("tcp://{}", signal.tcp_addr()), Some("5s")),
        &group,
        &[("breaker_probe = \"200ms\"", "breaker_probe = \"10m\"")],
    )
    .await;
    assert!(signal.wait_receivers(1, PATIENCE).await);
    until("up", || async {
        account_status(&sb, "signal.main").await["state"] == "up"
    })
    .await;
    signal.set_outage(Outage::Refuse).await;
    until("the account shows the daemon gone", || async {
        let s = account_status(&sb, "signal.main").await;
        s["state"] != "up"
            && s["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("signal-cli"))
    })
    .await;
    post(&sb, "while away").await;
    until("the breaker open", || async {
        account_status(&sb, "signal.main").await["state"] == "down"
    })
    .await;
    signal.set_outage(Outage::Up).await;
    until("the message sent", || {
        let n = sends(&signal, "send").len();
        async move { n >= 1 }
    })
    .await;
    until("up, the old error gone", || async {
        let s = account_status(&sb, "signal.main").await;
        s["state"] == "up" && s["last_error"].is_null()
    })
    .await;
    sb.drained().await;
    assert_eq!(texts_at_signal(&signal), ["Ann: while away"]);
    sb.stop_and_check().await;
    signal.stop().await;
}

/// A subscription that fails is retried with growing backoff and logged
/// once, not at every retry; the account comes up when it succeeds.
#[tokio::test]
async fn a_failing_subscription_backs_off_and_is_logged_once() {
    let dir = tempfile::tempdir().unwrap();
    let (signal, group) = fake().await;
    signal.fail(
        "subscribeReceive",
        Fault::Internal("no receive thread (IllegalStateException)".into()),
        3,
    );
    let sb = bridge(
        dir.path(),
        &signal_section(&format!("tcp://{}", signal.tcp_addr()), Some("5s")),
        &group,
        &[],
    )
    .await;
    let inbox = reader(&sb).await;
    assert!(
        signal.wait_receivers(1, PATIENCE).await,
        "subscribed at the fourth try"
    );
    until("up", || async {
        account_status(&sb, "signal.main").await["state"] == "up"
    })
    .await;
    let tries = signal
        .requests()
        .iter()
        .filter(|(m, _)| m == "subscribeReceive")
        .count();
    assert_eq!(tries, 4);
    let warned = sb.log().matches("cannot subscribe to messages").count();
    assert_eq!(
        warned,
        1,
        "one warning for one failure that repeats:\n{}",
        sb.log()
    );
    signal.inject_message(ALICE, Some(&group), json!({"message": "hi"}));
    inbox.wait_len(1, "the message").await;
    sb.stop_and_check().await;
    signal.stop().await;
}

// ---- 8. uploads -----------------------------------------------------------------------

/// signal-cli answers a send with a file only after uploading it: the
/// adapter waits as long as the upload may take at the outbox's slowest
/// expected rate, so a slow upload is not cut off and posted again.
#[tokio::test]
async fn a_slow_upload_is_waited_for_not_posted_twice() {
    let dir = tempfile::tempdir().unwrap();
    let (signal, group) = fake().await;
    let sb = bridge(
        dir.path(),
        &signal_section(&format!("tcp://{}", signal.tcp_addr()), Some("1s")),
        &group,
        &[],
    )
    .await;
    assert!(signal.wait_receivers(1, PATIENCE).await);
    // 4 MiB at 256 KiB/s: 16 s more than a text gets; the upload takes 3 s.
    signal.fail("send", Fault::Hang(Duration::from_secs(3)), 1);
    file_sent(&sb, &signal, "slides", "slides.pdf", vec![7; 4 << 20]).await;
    sb.drained().await;
    let attempts = signal
        .requests()
        .iter()
        .filter(|(m, _)| m == "send")
        .count();
    assert_eq!(attempts, 1, "one upload, not a second after a timeout");
    assert_eq!(texts_at_signal(&signal), ["Ann: slides"]);
    sb.stop_and_check().await;
    signal.stop().await;
}

// ---- 9. view-once and disappearing messages ----------------------------------------------

/// View-once media is not copied (a line says one was sent); in a group
/// with disappearing messages the other chats are told once, also across a
/// restart, that their copies do not disappear.
#[tokio::test]
async fn view_once_is_named_not_copied_and_disappearing_groups_are_told_once() {
    let dir = tempfile::tempdir().unwrap();
    let (signal, group) = fake().await;
    let mut sb = bridge(
        dir.path(),
        &signal_section(&format!("tcp://{}", signal.tcp_addr()), Some("5s")),
        &group,
        &[],
    )
    .await;
    let inbox = reader(&sb).await;
    assert!(signal.wait_receivers(1, PATIENCE).await);
    signal.inject_message(
        ALICE,
        Some(&group),
        json!({"viewOnce": true, "attachments": [{"contentType": "image/jpeg", "base64": "AAECAw=="}]}),
    );
    let week = json!(604_800);
    signal.inject_message(
        ALICE,
        Some(&group),
        json!({"message": "one", "expiresInSeconds": week}),
    );
    signal.inject_message(
        ALICE,
        Some(&group),
        json!({"message": "two", "expiresInSeconds": week}),
    );
    inbox.wait_len(3, "three messages").await;
    sb.drained().await;
    sb.kill9();
    sb.restart().await;
    let after = reader(&sb).await;
    assert!(signal.wait_receivers(1, PATIENCE).await);
    signal.inject_message(
        ALICE,
        Some(&group),
        json!({"message": "three", "expiresInSeconds": week}),
    );
    until("the message after the restart", || {
        let n = events_from(&after, "signal.main", "message")
            .iter()
            .filter(|m| m["text"].as_str().is_some_and(|t| t.starts_with("three")))
            .count();
        async move { n == 1 }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut msgs = events_from(&inbox, "signal.main", "message");
    msgs.extend(
        events_from(&after, "signal.main", "message")
            .into_iter()
            .filter(|m| m["text"].as_str().is_some_and(|t| t.starts_with("three"))),
    );
    assert_eq!(
        texts(&msgs),
        [
            "[file not bridged: photo (4 B): view-once media, shown only on Signal]",
            "one\n[messages in this Signal group disappear after 1 week; their copies on other networks do not]",
            "two",
            "three"
        ]
    );
    assert!(
        msgs[0]["attachments"].as_array().is_none_or(Vec::is_empty),
        "{}",
        msgs[0]
    );
    sb.stop_and_check().await;
    signal.stop().await;
}

// ---- 10. bounds ------------------------------------------------------------------------

/// A runaway line from the daemon (150 MiB, more than any answer can be)
/// ends the connection with an error instead of growing a buffer; the
/// adapter reconnects and what comes next arrives.
#[tokio::test]
async fn a_runaway_line_from_the_daemon_is_an_error_not_an_allocation() {
    let dir = tempfile::tempdir().unwrap();
    let (signal, group, sb) = on_tcp(dir.path(), "").await;
    let inbox = reader(&sb).await;
    assert!(signal.wait_receivers(1, PATIENCE).await);
    let subscribes = || {
        signal
            .requests()
            .iter()
            .filter(|(m, _)| m == "subscribeReceive")
            .count()
    };
    signal.inject_raw_line(&"x".repeat(150 << 20));
    eventually("the connection closed on the runaway line", || {
        sb.log().contains("longer than")
    })
    .await;
    // Subscribed anew on a new connection, the old one gone.
    eventually("subscribed again", || {
        subscribes() == 2 && signal.receivers() == 1
    })
    .await;
    signal.inject_message(ALICE, Some(&group), json!({"message": "after"}));
    inbox.wait_len(1, "the message after").await;
    assert_eq!(
        texts(&events_from(&inbox, "signal.main", "message")),
        ["after"]
    );
    sb.stop_and_check().await;
    signal.stop().await;
}

trait StopAndCheck {
    async fn stop_and_check(self);
}

impl StopAndCheck for Sb {
    /// Stops switchboard; it must finish in time and log no phone number
    /// of a Signal user.
    async fn stop_and_check(mut self) {
        self.stop().await;
        let log = self.log();
        assert!(!log.contains("did not finish in time"), "{log}");
        assert!(!log.contains(ALICE), "a user's number in the log:\n{log}");
    }
}
