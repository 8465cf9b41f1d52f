//! The fake's behaviour, checked over real sockets (TCP, the UNIX socket,
//! HTTP with reqwest) as the adapter will see it. Each test starts its own
//! fake; every wait is bounded.

use std::collections::VecDeque;
use std::future::Future;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpStream, UnixStream};

use super::*;

const ALICE: &str = "+15550000002";
const ALICE_UUID: &str = "6a1f7c1e-4c57-4e64-9a3c-2a6f6f0b1c11";
const BOB: &str = "+15550000003";
const BOB_UUID: &str = "7b2e8d2f-5d68-4f75-8b4d-3b7a7a1c2d22";
const STRANGER: &str = "+15550000009";
/// A realistic millisecond timestamp (small ones are Integers to Java).
const TS: i64 = 1_732_480_000_000;

async fn within<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .expect("step timed out")
}

async fn fake(opts: FakeOptions) -> FakeSignal {
    let signal = FakeSignal::start(opts).await.expect("the fake starts");
    signal.add_contact(ALICE, ALICE_UUID, Some("Alice"));
    signal.add_contact(BOB, BOB_UUID, Some("Bob"));
    signal
}

fn manual() -> FakeOptions {
    FakeOptions {
        receive_mode: ReceiveMode::Manual,
        ..FakeOptions::default()
    }
}

type Reader = BufReader<Box<dyn AsyncRead + Unpin + Send>>;
type Writer = Box<dyn AsyncWrite + Unpin + Send>;

/// A JSON-RPC client over a line transport.
struct Line {
    reader: Reader,
    writer: Writer,
    /// Lines read while waiting for something else.
    stash: VecDeque<Value>,
    next_id: i64,
}

impl Line {
    async fn tcp(signal: &FakeSignal) -> Line {
        let stream = within(TcpStream::connect(signal.tcp_addr()))
            .await
            .expect("connects over TCP");
        let (r, w) = stream.into_split();
        Line::new(Box::new(r), Box::new(w))
    }

    async fn unix(signal: &FakeSignal) -> Line {
        let stream = within(UnixStream::connect(signal.socket_path()))
            .await
            .expect("connects to the socket");
        let (r, w) = stream.into_split();
        Line::new(Box::new(r), Box::new(w))
    }

    fn new(r: Box<dyn AsyncRead + Unpin + Send>, w: Writer) -> Line {
        Line {
            reader: BufReader::new(r),
            writer: w,
            stash: VecDeque::new(),
            next_id: 100,
        }
    }

    async fn send(&mut self, text: &str) {
        within(self.writer.write_all(format!("{text}\n").as_bytes()))
            .await
            .expect("writes");
    }

    /// The next raw line, `None` at EOF.
    async fn raw(&mut self) -> Option<String> {
        let mut line = String::new();
        let n = within(self.reader.read_line(&mut line)).await.ok()?;
        (n > 0).then(|| line.trim_end_matches('\n').to_string())
    }

    async fn value(&mut self) -> Value {
        if let Some(v) = self.stash.pop_front() {
            return v;
        }
        let line = self.raw().await.expect("a line, not EOF");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    }

    /// Sends a request and returns its whole response; other lines are
    /// kept for later.
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let request = json!({ "jsonrpc": "2.0", "method": method, "params": params, "id": id });
        self.send(&request.to_string()).await;
        self.response(id).await
    }

    async fn response(&mut self, id: i64) -> Value {
        loop {
            let line = self.raw().await.expect("a response, not EOF");
            let v: Value = serde_json::from_str(&line).expect("JSON");
            if v["id"] == id {
                return v;
            }
            self.stash.push_back(v);
        }
    }

    async fn ok(&mut self, method: &str, params: Value) -> Value {
        let v = self.call(method, params).await;
        assert!(v.get("error").is_none(), "{method} failed: {v}");
        v["result"].clone()
    }

    async fn err(&mut self, method: &str, params: Value) -> Value {
        let v = self.call(method, params).await;
        assert!(v.get("result").is_none(), "{method} should fail: {v}");
        assert!(
            v["error"].get("data").is_some(),
            "data is always present: {v}"
        );
        v["error"].clone()
    }

    /// The next `receive` notification.
    async fn notification(&mut self) -> Value {
        let v = self.value().await;
        assert_eq!(v["method"], "receive", "not a notification: {v}");
        assert!(v.get("id").is_none(), "notifications have no id: {v}");
        v
    }

    /// True if nothing arrives for `d`.
    async fn silent(&mut self, d: Duration) -> bool {
        if !self.stash.is_empty() {
            return false;
        }
        let mut line = String::new();
        tokio::time::timeout(d, self.reader.read_line(&mut line))
            .await
            .is_err()
    }
}

/// The envelope of the next wrapped notification.
async fn wrapped_envelope(c: &mut Line) -> Value {
    c.notification().await["params"]["result"]["envelope"].clone()
}

async fn http_rpc(signal: &FakeSignal, body: &str) -> (u16, String) {
    let response = within(
        reqwest::Client::new()
            .post(format!("{}/api/v1/rpc", signal.http_url()))
            .header("Content-Type", "application/json")
            .body(body.to_string())
            .send(),
    )
    .await
    .expect("HTTP answers");
    let status = response.status().as_u16();
    (status, within(response.text()).await.expect("a body"))
}

/// Reads SSE chunks until `needle` shows up; returns all text read.
async fn sse_until(response: &mut reqwest::Response, needle: &str) -> String {
    let mut text = String::new();
    while !text.contains(needle) {
        let chunk = within(response.chunk())
            .await
            .expect("the stream goes on")
            .expect("a chunk");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    text
}

// ---- transports, framing, ids ------------------------------------------------

#[tokio::test]
async fn tcp_framing_keeps_id_types() {
    let signal = fake(FakeOptions::default()).await;
    let mut c = Line::tcp(&signal).await;
    c.send(r#"{"jsonrpc":"2.0","method":"version","id":1}"#)
        .await;
    assert_eq!(
        c.raw().await.as_deref(),
        Some(r#"{"jsonrpc":"2.0","result":{"version":"0.13.19"},"id":1}"#)
    );
    c.send(r#"{"jsonrpc":"2.0","method":"version","id":"abc"}"#)
        .await;
    assert_eq!(
        c.raw().await.as_deref(),
        Some(r#"{"jsonrpc":"2.0","result":{"version":"0.13.19"},"id":"abc"}"#)
    );
    // "params": null is missing params; CRLF is fine; a notification (no
    // id) is carried out without an answer.
    c.send("{\"jsonrpc\":\"2.0\",\"method\":\"version\",\"params\":null,\"id\":2}\r")
        .await;
    assert_eq!(c.value().await["id"], 2);
    c.send(r#"{"jsonrpc":"2.0","method":"listGroups"}"#).await;
    assert!(c.silent(Duration::from_millis(150)).await);
    assert_eq!(
        signal.requests().last().map(|r| r.0.clone()),
        Some("listGroups".into())
    );
    signal.stop().await;
}

#[tokio::test]
async fn socket_sessions_are_independent_and_half_close_still_answers() {
    let signal = fake(FakeOptions::default()).await;
    let mut a = Line::unix(&signal).await;
    let mut b = Line::unix(&signal).await;
    // Two requests in one write on one session.
    a.send("{\"jsonrpc\":\"2.0\",\"method\":\"version\",\"id\":1}\n{\"jsonrpc\":\"2.0\",\"method\":\"version\",\"id\":2}")
        .await;
    let mut ids = vec![a.value().await["id"].clone(), a.value().await["id"].clone()];
    ids.sort_by_key(|v| v.as_i64());
    assert_eq!(ids, vec![json!(1), json!(2)]);
    assert!(
        b.silent(Duration::from_millis(100)).await,
        "answers go to their own session"
    );
    // A client that stops writing still gets its answers, then EOF.
    b.send(r#"{"jsonrpc":"2.0","method":"version","id":7}"#)
        .await;
    within(b.writer.shutdown()).await.expect("half-close");
    assert_eq!(b.value().await["id"], 7);
    assert_eq!(b.raw().await, None);
    signal.stop().await;
}

#[tokio::test]
async fn http_transport_routes_and_statuses() {
    let signal = fake(FakeOptions::default()).await;
    let http = reqwest::Client::new();
    let url = signal.http_url();
    let (status, body) =
        http_rpc(&signal, r#"{"jsonrpc":"2.0","method":"version","id":"x"}"#).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        r#"{"jsonrpc":"2.0","result":{"version":"0.13.19"},"id":"x"}"#
    );
    // A notification: 201, no body.
    let (status, body) = http_rpc(&signal, r#"{"jsonrpc":"2.0","method":"version"}"#).await;
    assert_eq!((status, body.as_str()), (201, ""));
    // Errors are 200 too.
    let (status, body) = http_rpc(&signal, r#"{"jsonrpc":"2.0","method":"nope","id":3}"#).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        r#"{"jsonrpc":"2.0","error":{"code":-32601,"message":"Method not implemented","data":null},"id":3}"#
    );
    // subscribeReceive does not exist over HTTP.
    let (_, body) = http_rpc(
        &signal,
        r#"{"jsonrpc":"2.0","method":"subscribeReceive","id":4}"#,
    )
    .await;
    assert!(body.contains("-32601"), "{body}");
    let status = |r: reqwest::Response| r.status().as_u16();
    let wrong_type = http
        .post(format!("{url}/api/v1/rpc"))
        .header("Content-Type", "text/plain")
        .body("{}")
        .send();
    assert_eq!(status(within(wrong_type).await.expect("answers")), 415);
    assert_eq!(
        status(
            within(http.get(format!("{url}/api/v1/rpc")).send())
                .await
                .expect("answers")
        ),
        405
    );
    assert_eq!(
        status(
            within(http.get(format!("{url}/api/v1/rpc/x")).send())
                .await
                .expect("answers")
        ),
        404
    );
    assert_eq!(
        status(
            within(http.get(format!("{url}/elsewhere")).send())
                .await
                .expect("answers")
        ),
        404
    );
    let check = within(http.get(format!("{url}/api/v1/check")).send())
        .await
        .expect("answers");
    assert_eq!(check.status().as_u16(), 200);
    assert_eq!(within(check.text()).await.expect("body"), "");
    assert_eq!(
        status(
            within(http.post(format!("{url}/api/v1/check")).send())
                .await
                .expect("answers")
        ),
        405
    );
    signal.stop().await;
}

#[tokio::test]
async fn host_header_is_checked_from_0_14() {
    let signal = fake(FakeOptions {
        version: DaemonVersion::V0_14_6,
        ..FakeOptions::default()
    })
    .await;
    let http = reqwest::Client::new();
    let evil = http
        .post(format!("{}/api/v1/rpc", signal.http_url()))
        .header("Content-Type", "application/json")
        .header("Host", "evil.example")
        .body(r#"{"jsonrpc":"2.0","method":"version","id":1}"#)
        .send();
    assert_eq!(within(evil).await.expect("answers").status().as_u16(), 421);
    let (status, body) = http_rpc(&signal, r#"{"jsonrpc":"2.0","method":"version","id":1}"#).await;
    assert_eq!(status, 200);
    assert!(body.contains("0.14.6"));
    signal.stop().await;
}

#[tokio::test]
async fn answers_overtake_each_other_when_shuffled() {
    let signal = fake(FakeOptions {
        shuffle_responses: true,
        ..FakeOptions::default()
    })
    .await;
    let mut c = Line::tcp(&signal).await;
    let batch: String = (0..30)
        .map(|i| format!("{{\"jsonrpc\":\"2.0\",\"method\":\"version\",\"id\":{i}}}\n"))
        .collect();
    within(c.writer.write_all(batch.as_bytes()))
        .await
        .expect("writes");
    let mut ids = Vec::new();
    for _ in 0..30 {
        ids.push(c.value().await["id"].as_i64().expect("numeric id"));
    }
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        (0..30).collect::<Vec<_>>(),
        "every request answered once"
    );
    assert_ne!(ids, sorted, "some answers came out of order");
    signal.stop().await;
}

// ---- exact error objects --------------------------------------------------------

#[tokio::test]
async fn envelope_errors_are_exact() {
    let signal = fake(FakeOptions::default()).await;
    let mut c = Line::tcp(&signal).await;
    let error_line = |code: i64, message: &str, id: &str| {
        format!(
            "{{\"jsonrpc\":\"2.0\",\"error\":{{\"code\":{code},\"message\":{},\"data\":null}},\"id\":{id}}}",
            Value::String(message.into())
        )
    };
    c.send("").await;
    assert_eq!(
        c.raw().await.unwrap(),
        error_line(-32700, "Empty input line", "null")
    );
    c.send("not json").await;
    let line = c.raw().await.unwrap();
    assert!(
        line.starts_with(r#"{"jsonrpc":"2.0","error":{"code":-32700,"message":"Unrecognized token 'not': was expecting (JSON String, Number, Array, Object or token 'null', 'true' or 'false')\n at [Source: REDACTED"#),
        "{line}"
    );
    assert!(line.ends_with(r#""data":null},"id":null}"#), "{line}");
    c.send(r#"{"jsonrpc":"2.0","method":"nope","id":5}"#).await;
    assert_eq!(
        c.raw().await.unwrap(),
        error_line(-32601, "Method not implemented", "5")
    );
    // CLI-only commands are not methods either.
    c.send(r#"{"jsonrpc":"2.0","method":"daemon","id":6}"#)
        .await;
    assert_eq!(
        c.raw().await.unwrap(),
        error_line(-32601, "Method not implemented", "6")
    );
    c.send(r#"{"jsonrpc":"2.0","id":8}"#).await;
    assert_eq!(
        c.raw().await.unwrap(),
        error_line(-32600, "method field must be set", "8")
    );
    c.send(r#"{"jsonrpc":"1.0","method":"version","id":9}"#)
        .await;
    assert_eq!(
        c.raw().await.unwrap(),
        error_line(-32600, "only jsonrpc version 2.0 is supported", "9")
    );
    // Errors of the envelope are answered even for notifications.
    c.send(r#"{"method":"version"}"#).await;
    assert_eq!(
        c.raw().await.unwrap(),
        error_line(-32600, "only jsonrpc version 2.0 is supported", "null")
    );
    c.send("[]").await;
    assert_eq!(
        c.raw().await.unwrap(),
        error_line(-32600, "invalid request", "null")
    );
    c.send("42").await;
    assert_eq!(
        c.raw().await.unwrap(),
        error_line(-32600, "unexpected type: NUMBER", "null")
    );
    // A response from the client is ignored.
    c.send(r#"{"jsonrpc":"2.0","result":1,"id":3}"#).await;
    assert!(c.silent(Duration::from_millis(100)).await);
    // params as an array: Jackson cannot make a Map of it.
    let e = c.err("listGroups", json!([1, 2])).await;
    assert_eq!(e["code"], -32600);
    assert!(e["message"]
        .as_str()
        .unwrap()
        .starts_with("Cannot deserialize value of type `java.util.LinkedHashMap"));
    signal.stop().await;
}

#[tokio::test]
async fn batches_answer_in_one_array() {
    let signal = fake(FakeOptions::default()).await;
    let mut c = Line::tcp(&signal).await;
    c.send(r#"[{"jsonrpc":"2.0","method":"version","id":8},{"jsonrpc":"2.0","method":"nope","id":9},{"method":"version","id":10},{"jsonrpc":"2.0","method":"version"}]"#).await;
    let answers = c.value().await;
    let answers = answers.as_array().expect("an array");
    assert_eq!(
        answers.len(),
        3,
        "the notification gets no answer: {answers:?}"
    );
    let mut ids: Vec<i64> = answers.iter().map(|a| a["id"].as_i64().unwrap()).collect();
    ids.sort_unstable();
    assert_eq!(ids, vec![8, 9, 10]);
    signal.stop().await;
}

#[tokio::test]
async fn parameter_quirks_are_javas() {
    let signal = fake(FakeOptions::default()).await;
    let group = signal.add_group("G", &[ALICE]);
    let mut c = Line::tcp(&signal).await;
    // A timestamp that fits in 32 bits is an Integer, not a Long.
    let e = c
        .err(
            "remoteDelete",
            json!({ "recipient": ALICE, "targetTimestamp": 999 }),
        )
        .await;
    assert_eq!(e["code"], -32603);
    assert_eq!(
        e["message"],
        "class java.lang.Integer cannot be cast to class java.lang.Long (java.lang.Integer and java.lang.Long are in module java.base of loader 'bootstrap') (ClassCastException)"
    );
    let e = c
        .err(
            "remoteDelete",
            json!({ "recipient": ALICE, "targetTimestamp": TS.to_string() }),
        )
        .await;
    assert_eq!(e["code"], -32603);
    // A plural key with a scalar.
    let e = c
        .err("send", json!({ "recipients": ALICE, "message": "x" }))
        .await;
    assert_eq!(e["code"], -32603);
    assert!(e["message"]
        .as_str()
        .unwrap()
        .starts_with("class java.lang.String cannot be cast to class java.util.List"));
    // Singular keys take a value or an array; plural keys an array.
    c.ok("send", json!({ "recipient": [ALICE], "message": "a" }))
        .await;
    c.ok("send", json!({ "recipients": [ALICE], "message": "b" }))
        .await;
    c.ok("send", json!({ "groupIds": [group], "message": "c" }))
        .await;
    let e = c.err("send", json!({ "message": "x" })).await;
    assert_eq!(
        (e["code"].clone(), e["message"].clone()),
        (json!(-1), json!("No recipients given"))
    );
    let e = c.err("send", json!({ "recipient": ALICE })).await;
    assert_eq!(
        e["message"],
        "Sending empty message is not allowed, either a message, attachment or sticker must be given."
    );
    let e = c
        .err(
            "send",
            json!({ "recipient": ALICE, "message": "x", "quoteTimestamp": TS }),
        )
        .await;
    assert_eq!(
        (e["code"].clone(), e["message"].clone()),
        (json!(-1), json!("Quote author parameter is missing"))
    );
    let e = c
        .err(
            "send",
            json!({ "recipient": ALICE, "message": "x", "textStyle": "0:1:LOUD" }),
        )
        .await;
    assert_eq!(e["message"], "Invalid style: LOUD");
    let e = c
        .err("send", json!({ "groupId": "abc-def", "message": "x" }))
        .await;
    assert_eq!(e["code"], -1);
    assert!(e["message"]
        .as_str()
        .unwrap()
        .starts_with("Invalid group id: "));
    let missing = base64::engine::general_purpose::STANDARD.encode([1u8; 32]);
    let e = c
        .err("send", json!({ "groupId": missing, "message": "x" }))
        .await;
    assert_eq!(e["message"], format!("Group not found: {missing}"));
    let e = c
        .err("send", json!({ "recipient": ALICE, "message": "\u{fffc}", "mention": format!("0:1:{STRANGER}") }))
        .await;
    assert_eq!(
        e["message"],
        format!("The user {STRANGER} is not registered.")
    );
    let e = c
        .err("send", json!({ "recipient": "a@b", "message": "x" }))
        .await;
    assert_eq!(
        e["message"],
        "Invalid phone number 'a@b': Possible attempt to use email address."
    );
    // `receive` takes a typed record: unknown keys are refused.
    let e = c
        .err("receive", json!({ "timeout": 1, "bogus": true }))
        .await;
    assert_eq!(e["code"], -32600);
    // A number without + is normalized against the account's country code.
    let r = c
        .ok("send", json!({ "recipient": "5550000002", "message": "n" }))
        .await;
    assert_eq!(r["results"][0]["recipientAddress"]["number"], ALICE);
    signal.stop().await;
}

#[tokio::test]
async fn multi_account_selection() {
    let signal = fake(FakeOptions {
        multi_account: true,
        ..FakeOptions::default()
    })
    .await;
    let mut c = Line::tcp(&signal).await;
    assert_eq!(
        c.ok("listAccounts", json!({})).await,
        json!([{ "number": "+15550000001" }])
    );
    // One account loaded: `account` may be left out.
    c.ok("listGroups", json!({})).await;
    c.ok("listGroups", json!({ "account": "+15550000001" }))
        .await;
    let e = c
        .err("listGroups", json!({ "account": "+19999999999" }))
        .await;
    assert_eq!(
        (e["code"].clone(), e["message"].clone()),
        (json!(-32602), json!("Specified account does not exist"))
    );
    // Across the daemon, unsubscribe needs an id.
    c.send(r#"{"jsonrpc":"2.0","method":"unsubscribeReceive","id":1}"#)
        .await;
    assert_eq!(
        c.response(1).await["error"]["message"],
        "Missing subscription parameter with subscription id"
    );
    // SSE with an unknown account: 400.
    let r = within(reqwest::get(format!(
        "{}/api/v1/events?account=%2B1999",
        signal.http_url()
    )))
    .await
    .expect("answers");
    assert_eq!(r.status().as_u16(), 400);
    signal.stop().await;

    let single = fake(FakeOptions::default()).await;
    let mut c = Line::tcp(&single).await;
    // With -a, listAccounts is not a method, and `account` is ignored.
    assert_eq!(c.err("listAccounts", json!({})).await["code"], -32601);
    c.ok("listGroups", json!({ "account": "+19999999999" }))
        .await;
    single.stop().await;
}

/// Several accounts loaded (a daemon started without `-a`, as documented):
/// per-account methods need `account`; a subscription without it gets
/// every account's messages, one with it only that account's (the
/// notification names the account either way).
#[tokio::test]
async fn several_accounts_need_the_account_parameter() {
    const OTHER: &str = "+15550000077";
    let signal = fake(FakeOptions {
        multi_account: true,
        other_accounts: vec![OTHER.into()],
        receive_mode: ReceiveMode::Manual,
        ..FakeOptions::default()
    })
    .await;
    let mut c = Line::tcp(&signal).await;
    assert_eq!(
        c.ok("listAccounts", json!({})).await,
        json!([{ "number": "+15550000001" }, { "number": OTHER }])
    );
    let e = c.err("getUserStatus", json!({"recipient": [ALICE]})).await;
    assert_eq!(
        (e["code"].clone(), e["message"].clone()),
        (
            json!(-32602),
            json!("Method requires valid account parameter")
        )
    );
    c.ok(
        "getUserStatus",
        json!({"recipient": [ALICE], "account": "+15550000001"}),
    )
    .await;
    let mut all = Line::tcp(&signal).await;
    all.ok("subscribeReceive", json!({})).await;
    c.ok("subscribeReceive", json!({"account": "+15550000001"}))
        .await;
    signal.inject_envelope_for(OTHER, json!({"source": ALICE, "timestamp": TS, "dataMessage": {"timestamp": TS, "message": "for the other"}}));
    signal.inject_message(ALICE, None, json!({"message": "for us"}));
    let first = all.notification().await;
    assert_eq!(first["params"]["result"]["account"], OTHER);
    assert_eq!(
        all.notification().await["params"]["result"]["account"],
        "+15550000001"
    );
    let ours = c.notification().await;
    assert_eq!(
        ours["params"]["result"]["envelope"]["dataMessage"]["message"],
        "for us"
    );
    assert!(
        c.silent(Duration::from_millis(200)).await,
        "nothing of the other account"
    );
    signal.stop().await;
}

/// signal-cli reads no JSON string over 20,000,000 characters: over TCP the
/// connection closes without an answer, over HTTP it answers -32603 (both
/// measured on 0.13.19; `tests/it/signal_real.rs` checks them side by side).
#[tokio::test]
async fn strings_over_twenty_million_characters_are_refused() {
    let signal = fake(FakeOptions {
        shuffle_responses: false,
        ..FakeOptions::default()
    })
    .await;
    let line = |n: usize| {
        let prefix = "data:application/octet-stream;filename=a.bin;base64,";
        let uri = format!("{prefix}{}", "A".repeat(n - prefix.len()));
        json!({"jsonrpc": "2.0", "method": "send", "params": {"recipient": [ALICE], "attachments": [uri]}, "id": 1}).to_string()
    };
    let mut c = Line::tcp(&signal).await;
    c.send(&line(20_000_000)).await;
    assert!(c.response(1).await.get("result").is_some());
    c.send(&line(20_000_001)).await;
    assert_eq!(c.raw().await, None, "closed without an answer");
    let (status, body) = http_rpc(&signal, &line(20_000_001)).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        r#"{"jsonrpc":"2.0","error":{"code":-32603,"message":"An internal server error has occurred.","data":null},"id":null}"#
    );
    signal.stop().await;
}

/// A body over 2,000 bytes arrives with a `text/x-signal-plain` attachment
/// holding the whole text: 0.13 shows the first 2,000 bytes as the
/// message, 0.14 the whole text; `listContacts` with `allRecipients` lists
/// the account itself (its ACI, a local read).
#[tokio::test]
async fn long_texts_and_the_account_itself() {
    for version in [DaemonVersion::V0_13_19, DaemonVersion::V0_14_6] {
        let signal = fake(FakeOptions {
            version,
            receive_mode: ReceiveMode::Manual,
            ..FakeOptions::default()
        })
        .await;
        let mut c = Line::tcp(&signal).await;
        c.ok("subscribeReceive", json!({})).await;
        let full = "é".repeat(1500);
        signal.inject_message(ALICE, None, json!({"message": full}));
        let data = wrapped_envelope(&mut c).await["dataMessage"].clone();
        let attachment = &data["attachments"][0];
        assert_eq!(attachment["contentType"], "text/x-signal-plain");
        assert_eq!(attachment["filename"], Value::Null);
        let got = c.ok("getAttachment", json!({"id": attachment["id"]})).await;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(got["data"].as_str().unwrap())
            .unwrap();
        assert_eq!(String::from_utf8(bytes).unwrap(), full);
        let inline = data["message"].as_str().unwrap();
        match version {
            DaemonVersion::V0_13_19 => assert_eq!(inline, &full[..2000]),
            DaemonVersion::V0_14_6 => assert_eq!(inline, full),
        }
        let me = c
            .ok(
                "listContacts",
                json!({"recipient": ["+15550000001"], "allRecipients": true}),
            )
            .await;
        assert_eq!(me[0]["uuid"], signal.account_uuid());
        assert_eq!(me[0]["profile"]["givenName"], "Bridge Bot");
        let contacts = c.ok("listContacts", json!({})).await;
        assert!(contacts
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["number"] != "+15550000001"));
        signal.stop().await;
    }
}

// ---- receive modes ----------------------------------------------------------------

#[tokio::test]
async fn on_start_loses_messages_while_nobody_listens() {
    let signal = fake(FakeOptions::default()).await;
    signal.inject_message(ALICE, None, json!({ "message": "into the void" }));
    assert_eq!(
        (signal.pending_envelopes(), signal.lost_envelopes()),
        (0, 1)
    );

    let mut c = Line::tcp(&signal).await;
    assert!(signal.wait_receivers(1, Duration::from_secs(5)).await);
    assert!(
        c.silent(Duration::from_millis(100)).await,
        "the lost one never comes"
    );
    let ts = signal.inject_message(ALICE, None, json!({ "message": "hello" }));
    let n = c.notification().await;
    // Unwrapped: params is {envelope, account}.
    assert_eq!(n["params"]["account"], "+15550000001");
    assert!(n["params"].get("subscription").is_none());
    let env = &n["params"]["envelope"];
    assert_eq!(env["timestamp"], ts);
    assert_eq!(env["sourceName"], "Alice");
    assert_eq!(env["dataMessage"]["message"], "hello");
    assert!(
        env["serverDeliveredTimestamp"].as_i64().unwrap()
            >= env["serverReceivedTimestamp"].as_i64().unwrap()
    );

    // subscribeReceive on top: ids share one counter (the automatic one is
    // 0), and every message now comes twice.
    assert_eq!(c.ok("subscribeReceive", json!({})).await, json!(1));
    signal.inject_message(ALICE, None, json!({ "message": "twice" }));
    let (a, b) = (c.notification().await, c.notification().await);
    let wrapped = if a["params"].get("subscription").is_some() {
        &a
    } else {
        &b
    };
    assert_eq!(wrapped["params"]["subscription"], 1);
    assert_eq!(
        wrapped["params"]["result"]["envelope"]["dataMessage"]["message"],
        "twice"
    );
    // The one-shot receive is refused while the daemon receives.
    let e = c.err("receive", json!({})).await;
    assert_eq!(
        e["message"],
        "Receive command cannot be used if messages are already being received."
    );
    signal.stop().await;
}

#[tokio::test]
async fn on_connection_keeps_messages_on_the_server() {
    let signal = fake(FakeOptions {
        receive_mode: ReceiveMode::OnConnection,
        ..FakeOptions::default()
    })
    .await;
    let ts = signal.inject_message(ALICE, None, json!({ "message": "early" }));
    assert_eq!(
        (signal.pending_envelopes(), signal.lost_envelopes()),
        (1, 0)
    );
    let mut c = Line::unix(&signal).await;
    let n = c.notification().await;
    assert_eq!(n["params"]["envelope"]["timestamp"], ts);
    assert_eq!(signal.pending_envelopes(), 0);
    drop(c);
    let waited = within(async {
        while signal.receivers() > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    waited.await;
    signal.inject_message(ALICE, None, json!({ "message": "while away" }));
    assert_eq!(
        (signal.pending_envelopes(), signal.lost_envelopes()),
        (1, 0)
    );
    let mut c = Line::tcp(&signal).await;
    assert_eq!(
        c.notification().await["params"]["envelope"]["dataMessage"]["message"],
        "while away"
    );
    signal.stop().await;
}

#[tokio::test]
async fn manual_mode_needs_subscribe_and_wraps() {
    let signal = fake(manual()).await;
    let mut c = Line::tcp(&signal).await;
    signal.inject_message(ALICE, None, json!({ "message": "one" }));
    assert!(
        c.silent(Duration::from_millis(100)).await,
        "nothing before subscribeReceive"
    );
    assert_eq!(signal.pending_envelopes(), 1);
    let id = c.ok("subscribeReceive", json!({})).await;
    assert_eq!(id, json!(0));
    let n = c.notification().await;
    assert_eq!(n["params"]["subscription"], 0);
    assert_eq!(n["params"]["result"]["account"], "+15550000001");
    assert_eq!(
        n["params"]["result"]["envelope"]["dataMessage"]["message"],
        "one"
    );
    assert_eq!(
        c.ok("unsubscribeReceive", json!({ "subscription": 0 }))
            .await,
        json!({})
    );
    let e = c
        .err("unsubscribeReceive", json!({ "subscription": 0 }))
        .await;
    assert_eq!(
        (e["code"].clone(), e["message"].clone()),
        (json!(-1), json!("Unknown subscription id"))
    );
    signal.inject_message(ALICE, None, json!({ "message": "two" }));
    assert_eq!(signal.pending_envelopes(), 1);
    // Nothing else receives, so the one-shot receive may take it.
    let got = c.ok("receive", json!({ "timeout": 0.2 })).await;
    assert_eq!(got.as_array().map(Vec::len), Some(1));
    assert_eq!(got[0]["envelope"]["dataMessage"]["message"], "two");
    assert_eq!(got[0]["account"], "+15550000001");
    assert_eq!(signal.pending_envelopes(), 0);
    // maxMessages leaves the rest on the server.
    for i in 0..3 {
        signal.inject_message(BOB, None, json!({ "message": format!("m{i}") }));
    }
    let got = c
        .ok("receive", json!({ "timeout": 0.2, "maxMessages": 2 }))
        .await;
    assert_eq!(got.as_array().map(Vec::len), Some(2));
    assert_eq!(signal.pending_envelopes(), 1);
    signal.stop().await;
}

#[tokio::test]
async fn sse_streams_events_and_keepalives() {
    let signal = fake(FakeOptions {
        version: DaemonVersion::V0_14_6,
        receive_mode: ReceiveMode::Manual,
        sse_keepalive: Duration::from_millis(200),
        ..FakeOptions::default()
    })
    .await;
    let pending = signal.inject_message(ALICE, None, json!({ "message": "queued" }));
    let mut r = within(reqwest::get(format!("{}/api/v1/events", signal.http_url())))
        .await
        .expect("headers at once with 0.14");
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    // An SSE stream is a receiver in every mode, so the queued one comes.
    let text = sse_until(&mut r, "\n\n").await;
    let data = text
        .strip_prefix("event:receive\ndata:")
        .and_then(|t| t.split_once('\n'))
        .map(|(d, _)| d)
        .unwrap_or_else(|| panic!("an event: {text:?}"));
    let event: Value = serde_json::from_str(data).expect("one-line JSON");
    assert_eq!(event["envelope"]["timestamp"], pending);
    assert_eq!(event["account"], "+15550000001");
    assert!(event.get("jsonrpc").is_none());
    let text = sse_until(&mut r, ":\n").await;
    assert!(text.contains(":\n"), "a keep-alive: {text:?}");
    signal.stop().await;
}

#[tokio::test]
async fn sse_headers_wait_for_the_first_write_in_0_13() {
    let signal = fake(FakeOptions {
        sse_keepalive: Duration::from_millis(300),
        ..FakeOptions::default()
    })
    .await;
    let started = Instant::now();
    let mut r = within(reqwest::get(format!("{}/api/v1/events", signal.http_url())))
        .await
        .expect("headers eventually");
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "headers came with the keep-alive"
    );
    assert!(
        sse_until(&mut r, ":\n").await.starts_with(":\n"),
        "the keep-alive came first"
    );
    signal.inject_message(BOB, None, json!({ "message": "hi" }));
    let text = sse_until(&mut r, "\n\n").await;
    assert!(text.starts_with("event:receive\ndata:{"), "{text:?}");
    signal.stop().await;
}

// ---- sends --------------------------------------------------------------------------

#[tokio::test]
async fn send_results_group_direct_and_partial() {
    let signal = fake(FakeOptions::default()).await;
    let group = signal.add_group("Bridge Test", &[ALICE, BOB]);
    let mut c = Line::tcp(&signal).await;

    let r = c
        .ok("send", json!({ "groupId": group, "message": "to all" }))
        .await;
    let ts = r["timestamp"].as_i64().unwrap();
    let results = r["results"].as_array().unwrap();
    assert_eq!(results.len(), 2, "one per member but the account: {r}");
    for res in results {
        assert_eq!(res["type"], "SUCCESS");
        assert_eq!(res["groupId"], group);
        assert_eq!(res["recipientAddress"]["username"], Value::Null);
    }
    let numbers: Vec<&str> = results
        .iter()
        .map(|r| r["recipientAddress"]["number"].as_str().unwrap())
        .collect();
    assert!(numbers.contains(&ALICE) && numbers.contains(&BOB));

    let r = c
        .ok("send", json!({ "recipient": ALICE, "message": "direct" }))
        .await;
    assert!(
        r["timestamp"].as_i64().unwrap() > ts,
        "timestamps strictly increase"
    );
    assert_eq!(
        r["results"],
        json!([{ "recipientAddress": { "uuid": ALICE_UUID, "number": ALICE, "username": null }, "type": "SUCCESS" }])
    );
    assert!(r["results"][0].get("groupId").is_none());

    // One member rate-limited: still a success overall.
    signal.fail_recipient(
        BOB,
        RecipientFailure::RateLimit {
            retry_after_seconds: 9,
        },
        1,
    );
    let r = c
        .ok("send", json!({ "groupId": group, "message": "partial" }))
        .await;
    let mut types: Vec<&str> = r["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["type"].as_str().unwrap())
        .collect();
    types.sort_unstable();
    assert_eq!(types, vec!["RATE_LIMIT_FAILURE", "SUCCESS"]);

    // An unregistered recipient: every recipient failed → -1 with data.
    let e = c
        .err("send", json!({ "recipient": STRANGER, "message": "x" }))
        .await;
    assert_eq!(
        (e["code"].clone(), e["message"].clone()),
        (json!(-1), json!("Failed to send message"))
    );
    assert_eq!(
        e["data"]["response"]["results"][0]["type"],
        "UNREGISTERED_FAILURE"
    );
    assert_eq!(
        e["data"]["response"]["results"][0]["recipientAddress"],
        json!({ "uuid": null, "number": STRANGER, "username": null })
    );

    // An untrusted identity persists until `trust`.
    signal.set_untrusted(ALICE, true);
    let e = c
        .err("send", json!({ "recipient": ALICE, "message": "x" }))
        .await;
    assert_eq!(
        (e["code"].clone(), e["message"].clone()),
        (
            json!(-4),
            json!("Failed to send message due to untrusted identities")
        )
    );
    assert_eq!(
        e["data"]["response"]["results"][0]["type"],
        "IDENTITY_FAILURE"
    );
    assert_eq!(
        c.ok(
            "trust",
            json!({ "recipient": ALICE, "trustAllKnownKeys": true })
        )
        .await,
        json!({})
    );
    c.ok(
        "send",
        json!({ "recipient": ALICE, "message": "trusted again" }),
    )
    .await;

    // A group of one: no results, and that is a success.
    let alone = signal.add_group("Alone", &[]);
    let r = c
        .ok("send", json!({ "groupId": alone, "message": "echo" }))
        .await;
    assert_eq!(r["results"], json!([]));
    // Left the group: refused before sending.
    signal.set_member(&group, "+15550000001", false);
    let e = c
        .err("send", json!({ "groupId": group, "message": "x" }))
        .await;
    assert_eq!(
        e["message"],
        format!("User is not a member in group: Bridge Test ({group})")
    );

    let sent = signal.sent();
    assert_eq!(sent[0].params["message"], "to all");
    assert_eq!(sent[0].timestamp, ts);
    assert!(sent[0].ok());
    assert!(sent
        .iter()
        .any(|s| !s.ok() && s.error.as_ref().unwrap()["code"] == -4));
    signal.stop().await;
}

#[tokio::test]
async fn reactions_deletes_typing_receipts_and_edits_are_sends() {
    let signal = fake(FakeOptions::default()).await;
    let group = signal.add_group("G", &[ALICE]);
    let mut c = Line::tcp(&signal).await;
    let sent = c
        .ok("send", json!({ "groupId": group, "message": "orig" }))
        .await["timestamp"]
        .clone();
    let edit = c
        .ok(
            "send",
            json!({ "groupId": group, "message": "fixed", "editTimestamp": sent }),
        )
        .await;
    assert_ne!(edit["timestamp"], sent, "an edit has its own timestamp");
    c.ok(
        "sendReaction",
        json!({ "groupId": group, "emoji": "👍", "targetAuthor": ALICE, "targetTimestamp": TS }),
    )
    .await;
    c.ok("sendReaction", json!({ "groupId": group, "emoji": "👍", "targetAuthor": ALICE, "targetTimestamp": TS, "remove": true }))
        .await;
    // 1:1: the target author defaults to the recipient.
    c.ok(
        "sendReaction",
        json!({ "recipient": ALICE, "emoji": "❤", "targetTimestamp": TS }),
    )
    .await;
    let e = c
        .err("sendReaction", json!({ "recipient": ALICE, "emoji": "x" }))
        .await;
    assert_eq!(e["code"], -32603);
    c.ok(
        "remoteDelete",
        json!({ "groupId": group, "targetTimestamp": sent }),
    )
    .await;
    let e = c.err("remoteDelete", json!({ "groupId": group })).await;
    assert_eq!(e["code"], -32603);
    c.ok("sendTyping", json!({ "groupId": group })).await;
    c.ok("sendTyping", json!({ "recipient": ALICE, "stop": true }))
        .await;
    assert_eq!(
        c.err("sendTyping", json!({})).await["message"],
        "No recipients given"
    );
    c.ok(
        "sendReceipt",
        json!({ "recipient": ALICE, "targetTimestamp": [TS], "type": "read" }),
    )
    .await;
    let methods: Vec<String> = signal.sent().iter().map(|s| s.method.clone()).collect();
    assert_eq!(
        methods,
        [
            "send",
            "send",
            "sendReaction",
            "sendReaction",
            "sendReaction",
            "remoteDelete",
            "sendTyping",
            "sendTyping",
            "sendReceipt"
        ]
    );
    signal.stop().await;
}

// ---- faults ---------------------------------------------------------------------------

#[tokio::test]
async fn send_faults_have_the_real_shapes() {
    let signal = fake(FakeOptions::default()).await;
    let mut c = Line::tcp(&signal).await;
    let send = json!({ "recipient": ALICE, "message": "x" });

    signal.fail(
        "send",
        Fault::RateLimit {
            retry_after_seconds: 30,
        },
        1,
    );
    let e = c.err("send", send.clone()).await;
    assert_eq!(
        (e["code"].clone(), e["message"].clone()),
        (
            json!(-5),
            json!("Failed to send message due to rate limiting")
        )
    );
    let result = &e["data"]["response"]["results"][0];
    assert_eq!(result["type"], "RATE_LIMIT_FAILURE");
    assert!(
        result.get("retryAfterSeconds").is_none(),
        "0.13.19 only reports it with proof-required"
    );

    signal.fail(
        "send",
        Fault::CaptchaRequired {
            token: "tok-1".into(),
            retry_after_seconds: 3600,
        },
        1,
    );
    let e = c.err("send", send.clone()).await;
    assert_eq!(e["code"], -5);
    let result = &e["data"]["response"]["results"][0];
    assert_eq!(
        (result["token"].clone(), result["retryAfterSeconds"].clone()),
        (json!("tok-1"), json!(3600))
    );

    signal.fail("send", Fault::Io, 1);
    let e = c.err("send", send.clone()).await;
    assert_eq!(e["code"], -32603);
    assert_eq!(
        e["message"],
        "Failed to send message: Connection reset (IOException) (UnexpectedErrorException)"
    );
    assert_eq!(e["data"], Value::Null);

    signal.fail("*", Fault::UntrustedIdentity, 1);
    assert_eq!(c.err("send", send.clone()).await["code"], -4);
    signal.fail("send", Fault::Unregistered, 1);
    let e = c.err("send", send.clone()).await;
    assert_eq!(
        (
            e["code"].clone(),
            e["data"]["response"]["results"][0]["type"].clone()
        ),
        (json!(-1), json!("UNREGISTERED_FAILURE"))
    );
    signal.fail("send", Fault::NetworkFailure, 1);
    assert_eq!(
        c.err("send", send.clone()).await["message"],
        "Failed to send message"
    );
    // Used up: the next send works.
    c.ok("send", send.clone()).await;

    signal.fail(
        "getUserStatus",
        Fault::RateLimit {
            retry_after_seconds: 60,
        },
        1,
    );
    let e = c.err("getUserStatus", json!({ "recipient": ALICE })).await;
    assert_eq!(e["code"], -5);
    assert!(e["message"]
        .as_str()
        .unwrap()
        .starts_with("Rate limit reached\nNext attempt may be tried at "));
    signal.fail("getUserStatus", Fault::Io, 1);
    assert_eq!(
        c.err("getUserStatus", json!({ "recipient": ALICE })).await["code"],
        -3
    );
    signal.fail("sendTyping", Fault::Io, 1);
    assert_eq!(
        c.err("sendTyping", json!({ "recipient": ALICE })).await["code"],
        -1
    );
    signal.fail("updateProfile", Fault::Io, 1);
    assert_eq!(
        c.err("updateProfile", json!({ "givenName": "X" })).await["code"],
        -3
    );
    signal.stop().await;
}

#[tokio::test]
async fn rate_limits_report_retry_after_from_0_14() {
    let signal = fake(FakeOptions {
        version: DaemonVersion::V0_14_6,
        ..FakeOptions::default()
    })
    .await;
    let mut c = Line::tcp(&signal).await;
    signal.fail(
        "send",
        Fault::RateLimit {
            retry_after_seconds: 30,
        },
        1,
    );
    let e = c
        .err("send", json!({ "recipient": ALICE, "message": "x" }))
        .await;
    assert_eq!(e["data"]["response"]["results"][0]["retryAfterSeconds"], 30);
    signal.stop().await;
}

#[tokio::test]
async fn transport_faults() {
    let signal = fake(FakeOptions::default()).await;
    let send = json!({ "recipient": ALICE, "message": "x" });

    // Hang: the answer is late, but it comes.
    let mut c = Line::tcp(&signal).await;
    signal.fail("version", Fault::Hang(Duration::from_millis(300)), 1);
    let started = Instant::now();
    c.ok("version", json!({})).await;
    assert!(started.elapsed() >= Duration::from_millis(280));

    // MalformedLine: garbage first, then the answer.
    signal.fail("version", Fault::MalformedLine, 1);
    c.send(r#"{"jsonrpc":"2.0","method":"version","id":1}"#)
        .await;
    let garbage = c.raw().await.unwrap();
    assert!(
        serde_json::from_str::<Value>(&garbage).is_err(),
        "{garbage}"
    );
    assert_eq!(c.value().await["id"], 1);

    // DropConnection: closed, no answer, nothing sent.
    signal.fail("send", Fault::DropConnection, 1);
    c.send(&json!({ "jsonrpc": "2.0", "method": "send", "params": send, "id": 2 }).to_string())
        .await;
    assert_eq!(c.raw().await, None);
    assert!(signal.sent().is_empty());

    // DropAnswer: closed, no answer, but it was sent.
    let mut c = Line::unix(&signal).await;
    signal.fail("send", Fault::DropAnswer, 1);
    c.send(&json!({ "jsonrpc": "2.0", "method": "send", "params": send, "id": 3 }).to_string())
        .await;
    assert_eq!(c.raw().await, None);
    assert_eq!(signal.sent().len(), 1);

    // Over HTTP, a dropped request is a connection error.
    signal.fail("version", Fault::DropConnection, 1);
    let dropped = reqwest::Client::new()
        .post(format!("{}/api/v1/rpc", signal.http_url()))
        .header("Content-Type", "application/json")
        .body(r#"{"jsonrpc":"2.0","method":"version","id":1}"#)
        .send();
    assert!(within(dropped).await.is_err());
    signal.stop().await;
}

#[tokio::test]
async fn outages_refuse_and_hang() {
    let signal = fake(FakeOptions {
        receive_mode: ReceiveMode::OnConnection,
        ..FakeOptions::default()
    })
    .await;
    let mut c = Line::tcp(&signal).await;
    signal.set_outage(Outage::Refuse).await;
    assert_eq!(c.raw().await, None, "open connections are dropped");
    assert!(
        TcpStream::connect(signal.tcp_addr()).await.is_err(),
        "TCP refused"
    );
    assert!(
        UnixStream::connect(signal.socket_path()).await.is_err(),
        "socket refused"
    );
    signal.inject_message(ALICE, None, json!({ "message": "while down" }));
    assert_eq!(signal.pending_envelopes(), 1, "it waits on Signal's server");
    signal.set_outage(Outage::Up).await;
    let mut c = Line::tcp(&signal).await;
    assert_eq!(
        c.notification().await["params"]["envelope"]["dataMessage"]["message"],
        "while down"
    );

    // Hang: requests and notifications are held until the daemon thaws.
    signal.set_outage(Outage::Hang).await;
    c.send(r#"{"jsonrpc":"2.0","method":"version","id":5}"#)
        .await;
    signal.inject_message(ALICE, None, json!({ "message": "held" }));
    assert!(c.silent(Duration::from_millis(200)).await);
    signal.set_outage(Outage::Up).await;
    let mut got = [c.value().await, c.value().await];
    got.sort_by_key(|v| v.get("id").is_some());
    assert_eq!(
        got[0]["params"]["envelope"]["dataMessage"]["message"],
        "held"
    );
    assert_eq!(got[1]["id"], 5);
    signal.stop().await;
}

#[tokio::test]
async fn dropped_connections_end_subscriptions() {
    let signal = fake(FakeOptions {
        receive_mode: ReceiveMode::OnConnection,
        ..FakeOptions::default()
    })
    .await;
    let mut c = Line::tcp(&signal).await;
    assert!(signal.wait_receivers(1, Duration::from_secs(5)).await);
    signal.drop_connections().await;
    assert_eq!(c.raw().await, None);
    assert_eq!(signal.receivers(), 0);
    signal.inject_message(ALICE, None, json!({ "message": "later" }));
    assert_eq!(signal.pending_envelopes(), 1);
    // Raw garbage reaches whoever is connected.
    let mut c = Line::tcp(&signal).await;
    c.notification().await;
    signal.inject_raw_line("}{ garbage");
    assert_eq!(c.raw().await.as_deref(), Some("}{ garbage"));
    signal.stop().await;
}

// ---- attachments, envelopes, lists -------------------------------------------------------

#[tokio::test]
async fn attachments_are_stored_and_served() {
    let signal = fake(FakeOptions::default()).await;
    let mut c = Line::tcp(&signal).await;
    assert!(signal.wait_receivers(1, Duration::from_secs(5)).await);
    let png = vec![0x89, b'P', b'N', b'G', 1, 2, 3];
    let b64 = base64::engine::general_purpose::STANDARD.encode(&png);
    signal.inject_message(
        ALICE,
        None,
        json!({ "attachments": [{ "contentType": "image/png", "filename": "cat.png", "base64": b64 }] }),
    );
    let n = c.notification().await;
    let data = &n["params"]["envelope"]["dataMessage"];
    assert_eq!(
        data["message"],
        Value::Null,
        "attachment-only: message is null"
    );
    let a = &data["attachments"][0];
    for key in [
        "contentType",
        "filename",
        "id",
        "size",
        "width",
        "height",
        "caption",
        "uploadTimestamp",
    ] {
        assert!(a.get(key).is_some(), "{key} always present: {a}");
    }
    assert_eq!(
        (a["contentType"].clone(), a["size"].clone()),
        (json!("image/png"), json!(png.len()))
    );
    let id = a["id"].as_str().unwrap();
    assert!(id.ends_with(".png"));
    assert_eq!(
        std::fs::read(signal.attachments_dir().join(id)).unwrap(),
        png
    );
    assert_eq!(
        c.ok("getAttachment", json!({ "id": id })).await,
        json!({ "data": b64 })
    );
    let e = c.err("getAttachment", json!({ "id": "nope.png" })).await;
    assert_eq!(
        (e["code"].clone(), e["message"].clone()),
        (
            json!(-1),
            json!("Could not find attachment with ID: nope.png")
        )
    );

    // Sending: a data URI and a readable file.
    let file = signal.data_dir().join("outgoing.txt");
    std::fs::write(&file, b"file body").unwrap();
    c.ok(
        "send",
        json!({ "recipient": ALICE, "attachments": [format!("data:image/png;filename=a%20b.png;base64,{b64}"), file.to_string_lossy()] }),
    )
    .await;
    let sent = signal.sent().pop().unwrap();
    assert_eq!(
        sent.attachments[0],
        SentAttachment {
            content_type: "image/png".into(),
            filename: Some("a b.png".into()),
            bytes: png
        }
    );
    assert_eq!(sent.attachments[1].bytes, b"file body");
    let e = c
        .err(
            "send",
            json!({ "recipient": ALICE, "attachment": "/no/such/file" }),
        )
        .await;
    assert_eq!(e["code"], -32603);
    assert_eq!(
        e["message"],
        "Failed to send message: /no/such/file: /no/such/file (No such file or directory) (AttachmentInvalidException) (UnexpectedErrorException)"
    );
    signal.stop().await;
}

#[tokio::test]
async fn envelope_shapes() {
    let signal = fake(manual()).await;
    let group = signal.add_group("Bridge Test", &[ALICE, BOB]);
    let mut c = Line::tcp(&signal).await;
    c.ok("subscribeReceive", json!({})).await;

    let orig = signal.inject_message(
        ALICE,
        Some(&group),
        json!({
            "message": "hey \u{fffc} look",
            "mentions": [{ "number": "+15550000001", "start": 4, "length": 1 }],
            "textStyles": [{ "style": "BOLD", "start": 0, "length": 3 }],
            "quote": { "id": TS, "author": "+15550000001", "text": "earlier" },
        }),
    );
    let env = wrapped_envelope(&mut c).await;
    let data = &env["dataMessage"];
    assert_eq!(env["sourceUuid"], ALICE_UUID);
    assert_eq!(
        data["groupInfo"],
        json!({ "groupId": group, "groupName": "Bridge Test", "revision": 0, "type": "DELIVER" })
    );
    assert_eq!(
        data["mentions"][0]["uuid"],
        "0b7d5f7e-1111-4222-8333-944455556666"
    );
    assert_eq!(data["mentions"][0]["name"], "+15550000001");
    assert_eq!(data["quote"]["authorNumber"], "+15550000001");
    assert_eq!(data["quote"]["attachments"], json!([]));
    assert_eq!(
        (data["expiresInSeconds"].clone(), data["viewOnce"].clone()),
        (json!(0), json!(false))
    );
    assert!(
        data.get("attachments").is_none(),
        "empty lists are left out"
    );

    signal.inject_reaction(BOB, Some(&group), "👍", ALICE, orig, false);
    let data = wrapped_envelope(&mut c).await["dataMessage"].clone();
    assert_eq!(data["message"], Value::Null);
    assert_eq!(data["reaction"]["targetAuthorUuid"], ALICE_UUID);
    assert_eq!(data["reaction"]["targetSentTimestamp"], orig);
    assert_eq!(data["reaction"]["isRemove"], false);

    signal.inject_remote_delete(ALICE, Some(&group), orig);
    assert_eq!(
        wrapped_envelope(&mut c).await["dataMessage"]["remoteDelete"],
        json!({ "timestamp": orig })
    );

    let edit = signal.inject_edit(ALICE, Some(&group), orig, json!({ "message": "edited" }));
    let env = wrapped_envelope(&mut c).await;
    assert_eq!(env["editMessage"]["targetSentTimestamp"], orig);
    assert_eq!(env["editMessage"]["dataMessage"]["timestamp"], edit);
    assert_eq!(
        env["editMessage"]["dataMessage"]["groupInfo"]["groupId"],
        group
    );
    assert!(env.get("dataMessage").is_none());

    signal.inject_typing(ALICE, Some(&group), true);
    let typing = wrapped_envelope(&mut c).await["typingMessage"].clone();
    assert_eq!(
        (typing["action"].clone(), typing["groupId"].clone()),
        (json!("STARTED"), json!(group))
    );

    signal.inject_receipt(ALICE, Receipt::Read, &[TS]);
    let receipt = wrapped_envelope(&mut c).await["receiptMessage"].clone();
    assert_eq!(
        (
            receipt["isRead"].clone(),
            receipt["isDelivery"].clone(),
            receipt["timestamps"].clone()
        ),
        (json!(true), json!(false), json!([TS]))
    );

    // What the owner typed on their phone: a sync message from the account.
    let synced = signal.inject_sync_sent(
        None,
        Some(&group),
        json!({ "message": "sent from my phone" }),
    );
    let env = wrapped_envelope(&mut c).await;
    assert_eq!(env["source"], "+15550000001");
    assert_eq!(env["sourceName"], "Bridge Bot");
    assert!(env.get("dataMessage").is_none());
    let sent = &env["syncMessage"]["sentMessage"];
    assert_eq!(sent["destination"], Value::Null);
    assert_eq!(sent["destinationNumber"], Value::Null);
    assert_eq!(sent["timestamp"], synced);
    assert_eq!(sent["message"], "sent from my phone");
    assert_eq!(sent["groupInfo"]["groupId"], group);
    signal.inject_sync_sent(Some(ALICE), None, json!({ "message": "dm from phone" }));
    let sent = wrapped_envelope(&mut c).await["syncMessage"]["sentMessage"].clone();
    assert_eq!(
        (
            sent["destinationNumber"].clone(),
            sent["destinationUuid"].clone()
        ),
        (json!(ALICE), json!(ALICE_UUID))
    );

    signal.inject_failure(
        ALICE,
        "UntrustedIdentityException",
        "Untrusted identity key!",
    );
    let n = c.notification().await;
    assert_eq!(
        n["params"]["result"]["exception"]["type"],
        "UntrustedIdentityException"
    );
    assert_eq!(n["params"]["result"]["envelope"]["sourceNumber"], ALICE);
    signal.stop().await;
}

#[tokio::test]
async fn lists_and_status() {
    let signal = fake(FakeOptions::default()).await;
    let group = signal.add_group("Bridge Test", &[ALICE]);
    let mut c = Line::tcp(&signal).await;
    let groups = c.ok("listGroups", json!({})).await;
    let g = &groups[0];
    assert_eq!(
        (g["id"].clone(), g["name"].clone(), g["isMember"].clone()),
        (json!(group), json!("Bridge Test"), json!(true))
    );
    assert_eq!(g["members"].as_array().unwrap().len(), 2);
    assert!(
        g["members"][0].get("isAdmin").is_none(),
        "0.13.19 members are {{number, uuid}}"
    );
    assert_eq!(g["admins"][0]["number"], "+15550000001");
    signal.set_admin(&group, ALICE, true);
    let groups = c.ok("listGroups", json!({ "groupId": [group] })).await;
    let admins: Vec<&str> = groups[0]["admins"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["number"].as_str())
        .collect();
    assert_eq!(admins, ["+15550000001", ALICE]);
    assert_eq!(groups[0]["admins"][1]["uuid"], json!(signal.uuid_of(ALICE)));
    signal.set_admin(&group, ALICE, false);
    assert_eq!(
        c.ok("listGroups", json!({ "groupId": group }))
            .await
            .as_array()
            .unwrap()
            .len(),
        1
    );

    let contacts = c.ok("listContacts", json!({})).await;
    assert_eq!(contacts.as_array().unwrap().len(), 2);
    let alice = contacts
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["number"] == ALICE)
        .unwrap();
    assert_eq!(alice["uuid"], ALICE_UUID);
    assert_eq!(alice["profile"]["givenName"], "Alice");
    assert_eq!(alice["unregistered"], false);

    let status = c
        .ok("getUserStatus", json!({ "recipient": [ALICE, STRANGER] }))
        .await;
    let by = |n: &str| {
        status
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["recipient"] == n)
            .unwrap()
            .clone()
    };
    assert_eq!(
        by(ALICE),
        json!({ "recipient": ALICE, "number": ALICE, "uuid": ALICE_UUID, "isRegistered": true })
    );
    assert_eq!(
        by(STRANGER),
        json!({ "recipient": STRANGER, "number": STRANGER, "uuid": null, "isRegistered": false })
    );

    assert_eq!(
        c.ok(
            "updateProfile",
            json!({ "givenName": "Relay", "about": "bridging" })
        )
        .await,
        json!({})
    );
    assert_eq!(signal.profile()["givenName"], "Relay");
    signal.stop().await;
}
