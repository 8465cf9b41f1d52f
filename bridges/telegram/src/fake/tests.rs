//! The fake's behaviour, checked over real HTTP with reqwest, as the
//! adapter will see it. Each test starts its own fake; every wait is bounded.

use std::future::Future;
use std::time::{Duration, Instant};

use reqwest::multipart::{Form, Part};
use serde_json::{json, Value};

use super::*;

const PRIVATE: i64 = 42;
const GROUP: i64 = -100_200;

async fn within<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(15), f)
        .await
        .expect("step timed out")
}

struct T {
    tg: FakeTelegram,
    http: reqwest::Client,
}

impl T {
    async fn new() -> T {
        T::with(FakeOptions::default()).await
    }

    async fn with(opts: FakeOptions) -> T {
        let tg = FakeTelegram::start(opts).await.expect("the fake starts");
        tg.add_chat(PRIVATE, "private", "Alice", false);
        tg.add_chat(GROUP, "supergroup", "Group", false);
        T {
            tg,
            http: reqwest::Client::new(),
        }
    }

    fn url(&self, method: &str) -> String {
        format!("{}/bot{}/{method}", self.tg.api_url(), self.tg.token())
    }

    async fn call(&self, method: &str, params: Value) -> (u16, Value) {
        let request = self.http.post(self.url(method)).json(&params);
        answer(request).await
    }

    async fn multipart(&self, method: &str, form: Form) -> (u16, Value) {
        answer(self.http.post(self.url(method)).multipart(form)).await
    }

    async fn ok(&self, method: &str, params: Value) -> Value {
        let (status, body) = self.call(method, params).await;
        assert_eq!(status, 200, "{method} failed: {body}");
        assert_eq!(body["ok"], true);
        body["result"].clone()
    }

    /// The status and description of a refused call, checking the envelope.
    async fn err(&self, method: &str, params: Value) -> (u16, String) {
        let (status, body) = self.call(method, params).await;
        refused(status, &body)
    }

    async fn updates(&self, params: Value) -> Vec<Value> {
        let result = self.ok("getUpdates", params).await;
        result.as_array().cloned().expect("an array of updates")
    }

    async fn send(&self, chat_id: i64, text: &str) -> Value {
        self.ok("sendMessage", json!({ "chat_id": chat_id, "text": text }))
            .await
    }
}

async fn answer(request: reqwest::RequestBuilder) -> (u16, Value) {
    within(async {
        let response = request.send().await.expect("the fake answers");
        let status = response.status().as_u16();
        (status, response.json().await.expect("a JSON body"))
    })
    .await
}

fn refused(status: u16, body: &Value) -> (u16, String) {
    assert_eq!(body["ok"], false, "expected a refusal: {body}");
    assert_eq!(body["error_code"], status);
    let description = body["description"].as_str().unwrap_or_default().to_string();
    (status, description)
}

fn bad(description: &str) -> (u16, String) {
    (400, format!("Bad Request: {description}"))
}

fn alice() -> Value {
    FakeTelegram::user(PRIVATE, "Alice", Some("alice"))
}

fn last_id(updates: &[Value]) -> i64 {
    updates
        .last()
        .and_then(|u| u["update_id"].as_i64())
        .expect("an update")
}

// --- envelope and routing -------------------------------------------------------

#[tokio::test]
async fn get_me_answers_the_bot_in_the_success_envelope() {
    let t = T::new().await;
    let me = t.ok("getMe", json!({})).await;
    assert_eq!(me["is_bot"], true);
    assert_eq!(me["id"], 123_456);
    assert_eq!(me["username"], "switchboard_test_bot");
    assert_eq!(me["can_read_all_group_messages"], true);
    assert_eq!(me, t.tg.bot());
}

#[tokio::test]
async fn tokens_methods_and_paths_are_checked_like_the_server() {
    let t = T::new().await;
    let get = |url: String| {
        let http = t.http.clone();
        async move { answer(http.get(url)).await }
    };
    let base = t.tg.api_url();
    let (s, b) = get(format!("{base}/botnonsense/getMe")).await;
    assert_eq!(
        refused(s, &b),
        (401, "Unauthorized: invalid token specified".into())
    );
    let (s, b) = get(format!("{base}/bot999:other/getMe")).await;
    assert_eq!(refused(s, &b), (401, "Unauthorized".into()));
    let (s, b) = get(t.url("noSuchMethod")).await;
    assert_eq!(refused(s, &b), (404, "Not Found: method not found".into()));
    let (s, b) = get(format!("{base}/elsewhere")).await;
    assert_eq!(refused(s, &b), (404, "Not Found".into()));
    let (s, b) = get(t.url("forwardMessage")).await;
    assert_eq!(refused(s, &b).0, 501);
    // Method names are case-insensitive; the log uses the documented case.
    let (s, _) = get(t.url("GETME")).await;
    assert_eq!(s, 200);
    let calls = t.tg.calls();
    assert_eq!(calls.last().map(|c| c.method.as_str()), Some("getMe"));
    assert_eq!(calls.last().and_then(|c| c.status), Some(200));
    assert_eq!(calls[0].status, Some(401));
}

#[tokio::test]
async fn parameters_arrive_in_every_encoding() {
    let t = T::new().await;
    let entities = r#"[{"type":"bold","offset":0,"length":3}]"#;
    // Query string.
    let (s, b) = answer(t.http.get(t.url("sendMessage")).query(&[
        ("chat_id", PRIVATE.to_string()),
        ("text", "one".into()),
        ("entities", entities.into()),
    ]))
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["result"]["entities"][0]["type"], "bold");
    // urlencoded.
    let (s, b) = answer(t.http.post(t.url("sendmessage")).form(&[
        ("chat_id", PRIVATE.to_string()),
        ("text", "two".into()),
        ("reply_parameters", r#"{"message_id":"1"}"#.into()),
    ]))
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["result"]["reply_to_message"]["text"], "one");
    // multipart text fields.
    let form = Form::new()
        .text("chat_id", PRIVATE.to_string())
        .text("text", "three")
        .text("entities", entities);
    let (s, b) = t.multipart("sendMessage", form).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["result"]["text"], "three");
    // JSON, with typed values.
    let four = t
        .ok(
            "sendMessage",
            json!({ "chat_id": PRIVATE, "text": "four", "entities": [{"type":"italic","offset":0,"length":4}] }),
        )
        .await;
    assert_eq!(four["entities"][0]["type"], "italic");
    let calls = t.tg.calls_to("sendMessage");
    assert_eq!(calls.len(), 4);
    assert_eq!(calls[1].params["chat_id"], PRIVATE.to_string());
    assert_eq!(calls[3].params["chat_id"], PRIVATE);
    assert_eq!(calls[3].param("chat_id"), Some(PRIVATE.to_string()));
}

// --- sending text -----------------------------------------------------------------

#[tokio::test]
async fn sent_messages_are_real_messages_with_per_chat_ids() {
    let t = T::new().await;
    let before = state::now_unix();
    let first =
        t.tg.inject_message(GROUP, &alice(), json!({ "text": "hi bot" }));
    assert_eq!(first, 1);
    let sent = t.send(GROUP, "hello group").await;
    assert_eq!(sent["message_id"], 2);
    assert_eq!(
        sent["from"],
        json!({"id": 123_456, "is_bot": true, "first_name": "Switchboard", "username": "switchboard_test_bot"})
    );
    assert_eq!(
        sent["chat"],
        json!({"id": GROUP, "type": "supergroup", "title": "Group"})
    );
    let date = sent["date"].as_i64().expect("a date");
    assert!(
        date >= before && date <= state::now_unix() + 1,
        "date in seconds"
    );
    // Another chat counts on its own.
    assert_eq!(t.send(PRIVATE, "hello Alice").await["message_id"], 1);
    assert_eq!(t.tg.messages(GROUP).len(), 2);

    // Replies show the replied message one level deep.
    let reply = t
        .ok(
            "sendMessage",
            json!({ "chat_id": GROUP, "text": "re", "reply_parameters": { "message_id": 2 } }),
        )
        .await;
    assert_eq!(reply["reply_to_message"]["message_id"], 2);
    let nested = t
        .ok(
            "sendMessage",
            json!({ "chat_id": GROUP, "text": "re re", "reply_parameters": { "message_id": reply["message_id"] } }),
        )
        .await;
    assert_eq!(nested["reply_to_message"]["text"], "re");
    assert!(nested["reply_to_message"].get("reply_to_message").is_none());
    assert_eq!(
        t.err(
            "sendMessage",
            json!({ "chat_id": GROUP, "text": "x", "reply_parameters": { "message_id": 99 } })
        )
        .await,
        bad("message to be replied not found")
    );
    let lenient = t
        .ok(
            "sendMessage",
            json!({ "chat_id": GROUP, "text": "x",
                    "reply_parameters": { "message_id": 99, "allow_sending_without_reply": true } }),
        )
        .await;
    assert!(lenient.get("reply_to_message").is_none());
}

#[tokio::test]
async fn forum_topics_are_echoed_and_checked() {
    let t = T::new().await;
    let forum = -100_300;
    t.tg.add_chat(forum, "supergroup", "Forum", true);
    t.tg.inject_message(
        forum,
        &alice(),
        json!({ "text": "in topic", "message_thread_id": 7 }),
    );
    let sent = t
        .ok(
            "sendMessage",
            json!({ "chat_id": forum, "text": "answer", "message_thread_id": 7 }),
        )
        .await;
    assert_eq!(sent["message_thread_id"], 7);
    assert_eq!(sent["is_topic_message"], true);
    assert_eq!(sent["chat"]["is_forum"], true);
    assert_eq!(
        t.err(
            "sendMessage",
            json!({ "chat_id": forum, "text": "x", "message_thread_id": 99 })
        )
        .await,
        bad("message thread not found")
    );
}

#[tokio::test]
async fn text_is_validated_in_utf16_units() {
    let t = T::new().await;
    let send = |text: Value, entities: Value| json!({ "chat_id": PRIVATE, "text": text, "entities": entities });
    assert_eq!(
        t.err("sendMessage", json!({ "chat_id": PRIVATE })).await,
        bad("message text is empty")
    );
    assert_eq!(
        t.err("sendMessage", send(" \n ".into(), json!([]))).await,
        bad("message must be non-empty")
    );
    assert_eq!(
        t.err("sendMessage", send("a".repeat(4097).into(), json!([])))
            .await,
        bad("message is too long")
    );
    // 2048 emoji are 4096 UTF-16 units: the limit exactly.
    t.ok("sendMessage", send("😀".repeat(2048).into(), json!([])))
        .await;
    assert_eq!(
        t.err("sendMessage", send("😀".repeat(2049).into(), json!([])))
            .await,
        bad("message is too long")
    );
    let (_, beyond) = t
        .err(
            "sendMessage",
            send("abc".into(), json!([{"type":"bold","offset":1,"length":3}])),
        )
        .await;
    // TDLib's wording (fix_formatted_text), as the Bot API passes it on.
    assert_eq!(
        beyond,
        "Bad Request: entity beginning at UTF-16 offset 1 ends after the end of the text at \
         UTF-16 offset 4"
    );
    let (_, split) = t
        .err(
            "sendMessage",
            send(
                "😀abc".into(),
                json!([{"type":"bold","offset":1,"length":2}]),
            ),
        )
        .await;
    assert_eq!(
        split,
        "Bad Request: entity begins in a middle of a UTF-16 symbol at byte offset 4"
    );
    // Offsets count UTF-16 units, and the text is trimmed.
    let ok = t
        .ok(
            "sendMessage",
            send(
                "  😀 bold ".into(),
                json!([{"type":"bold","offset":5,"length":4}]),
            ),
        )
        .await;
    assert_eq!(ok["text"], "😀 bold");
    assert_eq!(
        ok["entities"],
        json!([{"type":"bold","offset":3,"length":4}])
    );
    assert_eq!(
        t.err("sendMessage", json!({ "chat_id": 7, "text": "x" }))
            .await,
        bad("chat not found")
    );
    assert_eq!(
        t.err("sendMessage", json!({ "text": "x" })).await,
        bad("chat_id is empty")
    );
    let (_, mode) = t
        .err(
            "sendMessage",
            json!({ "chat_id": PRIVATE, "text": "<b>x</b>", "parse_mode": "HTML" }),
        )
        .await;
    assert!(mode.starts_with("Bad Request: unsupported parse_mode in this fake"));
}

// --- getUpdates -------------------------------------------------------------------

#[tokio::test]
async fn unconfirmed_updates_come_back_and_confirmed_ones_never_do() {
    let t = T::new().await;
    for text in ["a", "b", "c"] {
        t.tg.inject_message(PRIVATE, &alice(), json!({ "text": text }));
    }
    let all = t.updates(json!({})).await;
    assert_eq!(all.len(), 3);
    let first = all[0]["update_id"].as_i64().expect("an id");
    assert_eq!(all[2]["update_id"], first + 2);
    assert_eq!(all[1]["message"]["text"], "b");
    // Not confirmed: the same updates again.
    let again = t.updates(json!({ "offset": first })).await;
    assert_eq!(again, all);
    // Confirm the first two.
    let rest = t.updates(json!({ "offset": first + 2 })).await;
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0]["message"]["text"], "c");
    assert_eq!(t.tg.pending_updates(), 1);
    // Confirmed ones never come back, whatever the offset.
    let from_zero = t.updates(json!({ "offset": 0, "limit": 10 })).await;
    assert_eq!(from_zero, rest);
    assert!(t.updates(json!({ "offset": first + 3 })).await.is_empty());
    assert_eq!(t.tg.pending_updates(), 0);
}

#[tokio::test]
async fn limits_and_negative_offsets() {
    let t = T::new().await;
    for i in 0..5 {
        t.tg.inject_message(PRIVATE, &alice(), json!({ "text": i.to_string() }));
    }
    let two = t.updates(json!({ "limit": 2 })).await;
    assert_eq!(two.len(), 2);
    // -2: keep only the last two, forgetting the rest.
    let tail = t.updates(json!({ "offset": -2 })).await;
    assert_eq!(tail.len(), 2);
    assert_eq!(tail[1]["message"]["text"], "4");
    assert_eq!(t.tg.pending_updates(), 2);
}

#[tokio::test]
async fn updates_expire_after_a_day() {
    let t = T::new().await;
    t.tg.inject_message(PRIVATE, &alice(), json!({ "text": "old" }));
    t.tg.age_updates(Duration::from_secs(25 * 3600));
    assert_eq!(t.tg.pending_updates(), 0);
    assert!(t.updates(json!({})).await.is_empty());
}

#[tokio::test]
async fn a_long_poll_returns_as_soon_as_an_update_arrives() {
    let t = T::new().await;
    let http = t.http.clone();
    let url = t.url("getUpdates");
    let poll =
        tokio::spawn(async move { answer(http.post(url).json(&json!({ "timeout": 10 }))).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    t.tg.inject_message(PRIVATE, &alice(), json!({ "text": "wake up" }));
    let (status, body) = within(poll).await.expect("the poll task");
    assert_eq!(status, 200);
    assert_eq!(body["result"][0]["message"]["text"], "wake up");

    // Nothing new: the poll waits out its timeout and answers empty.
    let next = last_id(body["result"].as_array().expect("updates")) + 1;
    let started = Instant::now();
    let empty = t.updates(json!({ "offset": next, "timeout": 1 })).await;
    assert!(empty.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(900));
}

#[tokio::test]
async fn allowed_updates_default_drops_reactions_and_listing_keeps_them() {
    let t = T::new().await;
    let message =
        t.tg.inject_message(PRIVATE, &alice(), json!({ "text": "react" }));
    let seen = t.updates(json!({})).await;
    let next = last_id(&seen) + 1;
    // Default filter: the reaction is never queued.
    assert_eq!(
        t.tg.inject_reaction(PRIVATE, message, &alice(), &[], &["👍"]),
        None
    );
    // Only the (unconfirmed) message is queued.
    assert_eq!(t.tg.pending_updates(), 1);
    // Listed: kept from now on (the setting persists).
    let listed = json!(["message", "message_reaction"]);
    assert!(t
        .updates(json!({ "offset": next, "allowed_updates": listed }))
        .await
        .is_empty());
    let id =
        t.tg.inject_reaction(PRIVATE, message, &alice(), &[], &["👍"])
            .expect("queued");
    let got = t.updates(json!({ "offset": next, "limit": 5 })).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["update_id"], id);
    assert_eq!(got[0]["message_reaction"]["new_reaction"][0]["emoji"], "👍");
    assert_eq!(got[0]["message_reaction"]["message_id"], message);
    // In a group the bot must also be an admin.
    assert_eq!(t.tg.inject_reaction(GROUP, 1, &alice(), &[], &["🔥"]), None);
    t.tg.set_bot_admin(GROUP, true);
    assert!(t
        .tg
        .inject_reaction(GROUP, 1, &alice(), &[], &["🔥"])
        .is_some());
    // Only reactions listed: new messages are dropped, not queued.
    t.updates(json!({ "offset": id + 2, "allowed_updates": ["message_reaction"] }))
        .await;
    t.tg.inject_message(PRIVATE, &alice(), json!({ "text": "unseen" }));
    assert_eq!(t.tg.pending_updates(), 0);
}

#[tokio::test]
async fn a_second_poller_ends_the_first_with_409() {
    let t = T::new().await;
    let http = t.http.clone();
    let url = t.url("getUpdates");
    let first =
        tokio::spawn(async move { answer(http.post(url).json(&json!({ "timeout": 10 }))).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = t.updates(json!({ "offset": 1, "timeout": 1 }));
    let (second, first) = tokio::join!(second, async { within(first).await });
    assert!(second.is_empty());
    let (status, body) = first.expect("the first poll task");
    assert_eq!(
        refused(status, &body),
        (
            409,
            "Conflict: terminated by other getUpdates request; make sure that only one bot \
             instance is running"
                .into()
        )
    );
}

#[tokio::test]
async fn a_webhook_blocks_get_updates() {
    let t = T::new().await;
    assert_eq!(
        t.err("setWebhook", json!({ "url": "http://example.com/hook" }))
            .await,
        bad("bad webhook: An HTTPS URL must be provided for webhook")
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, body) = t
        .call("setWebhook", json!({ "url": "https://example.com/hook" }))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["result"], true);
    assert_eq!(body["description"], "Webhook was set");
    assert_eq!(
        t.tg.webhook_url().as_deref(),
        Some("https://example.com/hook")
    );
    assert_eq!(
        t.err("getUpdates", json!({})).await,
        (
            409,
            "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook \
             to delete the webhook first"
                .into()
        )
    );
    assert_eq!(t.ok("deleteWebhook", json!({})).await, true);
    assert!(t.updates(json!({})).await.is_empty());
}

#[tokio::test]
async fn privacy_mode_shows_only_what_is_addressed_to_the_bot() {
    let t = T::with(FakeOptions {
        can_read_all_group_messages: false,
        ..FakeOptions::default()
    })
    .await;
    let bot_message = t.send(GROUP, "I am the bot").await["message_id"].clone();
    let texts = |updates: Vec<Value>| -> Vec<String> {
        updates
            .iter()
            .filter_map(|u| u["message"]["text"].as_str().map(str::to_string))
            .collect()
    };
    t.tg.inject_message(GROUP, &alice(), json!({ "text": "chatter" }));
    t.tg.inject_message(GROUP, &alice(), json!({ "text": "/start" }));
    t.tg.inject_message(GROUP, &alice(), json!({ "text": "/start@other_bot" }));
    t.tg.inject_message(
        GROUP,
        &alice(),
        json!({ "text": "hey @Switchboard_Test_Bot" }),
    );
    t.tg.inject_message(
        GROUP,
        &alice(),
        json!({ "text": "a reply", "reply_to_message_id": bot_message }),
    );
    let got = t.updates(json!({})).await;
    assert_eq!(
        texts(got.clone()),
        vec!["/start", "hey @Switchboard_Test_Bot", "a reply"]
    );
    // An admin sees everything.
    t.tg.set_bot_admin(GROUP, true);
    t.tg.inject_message(GROUP, &alice(), json!({ "text": "chatter 2" }));
    let more = t.updates(json!({ "offset": last_id(&got) + 1 })).await;
    assert_eq!(texts(more), vec!["chatter 2"]);
}

// --- files ------------------------------------------------------------------------

#[tokio::test]
async fn uploads_round_trip_through_get_file_and_download() {
    let t = T::new().await;
    let bytes = b"hello, file".to_vec();
    let form = Form::new().text("chat_id", PRIVATE.to_string()).part(
        "document",
        Part::bytes(bytes.clone())
            .file_name("notes.txt")
            .mime_str("application/octet-stream")
            .expect("a mime type"),
    );
    let (status, body) = t.multipart("sendDocument", form).await;
    assert_eq!(status, 200, "{body}");
    let document = &body["result"]["document"];
    assert_eq!(document["file_name"], "notes.txt");
    assert_eq!(document["mime_type"], "text/plain");
    assert_eq!(document["file_size"], bytes.len());
    let file_id = document["file_id"].as_str().expect("a file_id");
    let file = t.ok("getFile", json!({ "file_id": file_id })).await;
    assert_eq!(file["file_unique_id"], document["file_unique_id"]);
    let path = file["file_path"].as_str().expect("a file_path");
    let url = format!("{}/file/bot{}/{path}", t.tg.api_url(), t.tg.token());
    let downloaded = within(async {
        t.http
            .get(url)
            .send()
            .await
            .expect("the download answers")
            .bytes()
            .await
            .expect("bytes")
    })
    .await;
    assert_eq!(downloaded.as_ref(), bytes.as_slice());
    assert_eq!(t.tg.file_bytes(file_id), Some(bytes));
    assert_eq!(
        t.err("getFile", json!({ "file_id": "nope" })).await,
        bad("invalid file_id")
    );
    let big =
        t.tg.store_file(vec![0; 21 << 20], "application/zip", Some("big.zip"));
    assert_eq!(
        t.err("getFile", json!({ "file_id": big["file_id"] })).await,
        bad("file is too big")
    );
}

#[tokio::test]
async fn photos_get_sizes_and_are_checked() {
    let t = T::new().await;
    let png = png(1600, 900);
    let form = Form::new()
        .text("chat_id", PRIVATE.to_string())
        .text("photo", "attach://pic")
        .text("caption", "a view")
        .part("pic", Part::bytes(png.clone()).file_name("view.png"));
    let (status, body) = t.multipart("sendPhoto", form).await;
    assert_eq!(status, 200, "{body}");
    let sizes = body["result"]["photo"].as_array().cloned().expect("sizes");
    assert!(sizes.len() >= 2);
    let largest = sizes.last().expect("a largest size");
    assert_eq!(
        (largest["width"].clone(), largest["height"].clone()),
        (json!(1280), json!(720))
    );
    for size in &sizes {
        for key in ["file_id", "file_unique_id", "width", "height", "file_size"] {
            assert!(size.get(key).is_some(), "{key} missing in {size}");
        }
    }
    assert_eq!(body["result"]["caption"], "a view");
    // Sent again by file_id: the same photo.
    let again = t
        .ok(
            "sendPhoto",
            json!({ "chat_id": PRIVATE, "photo": largest["file_id"] }),
        )
        .await;
    assert_eq!(again["photo"], body["result"]["photo"]);
    assert_eq!(
        t.err(
            "sendDocument",
            json!({ "chat_id": PRIVATE, "document": largest["file_id"] })
        )
        .await,
        bad("can't use file of type Photo as Document")
    );
    let garbage = Form::new().text("chat_id", PRIVATE.to_string()).part(
        "photo",
        Part::bytes(b"not an image".to_vec()).file_name("x.png"),
    );
    let (status, body) = t.multipart("sendPhoto", garbage).await;
    assert_eq!(refused(status, &body), bad("IMAGE_PROCESS_FAILED"));
    assert_eq!(
        t.err("sendPhoto", json!({ "chat_id": PRIVATE })).await,
        bad("there is no photo in the request")
    );
    assert_eq!(
        t.err(
            "sendPhoto",
            json!({ "chat_id": PRIVATE, "photo": "no-such-file-id" })
        )
        .await,
        bad("wrong file identifier/HTTP URL specified")
    );
    let long_caption = Form::new()
        .text("chat_id", PRIVATE.to_string())
        .text("caption", "c".repeat(1025))
        .part("photo", Part::bytes(png).file_name("p.png"));
    let (status, body) = t.multipart("sendPhoto", long_caption).await;
    assert_eq!(refused(status, &body), bad("message caption is too long"));
}

#[tokio::test]
async fn uploads_over_50_mib_are_too_large() {
    let t = T::new().await;
    let form = Form::new().text("chat_id", PRIVATE.to_string()).part(
        "document",
        Part::bytes(vec![7; (50 << 20) + 1]).file_name("huge.bin"),
    );
    let (status, body) = t.multipart("sendDocument", form).await;
    assert_eq!(
        refused(status, &body),
        (413, "Request Entity Too Large".into())
    );
}

#[tokio::test]
async fn a_media_group_shares_one_media_group_id() {
    let t = T::new().await;
    let media = json!([
        { "type": "photo", "media": "attach://one", "caption": "first" },
        { "type": "photo", "media": "attach://two" },
    ]);
    let form = Form::new()
        .text("chat_id", GROUP.to_string())
        .text("media", media.to_string())
        .part("one", Part::bytes(png(40, 30)).file_name("1.png"))
        .part("two", Part::bytes(png(30, 40)).file_name("2.png"));
    let (status, body) = t.multipart("sendMediaGroup", form).await;
    assert_eq!(status, 200, "{body}");
    let sent = body["result"].as_array().cloned().expect("messages");
    assert_eq!(sent.len(), 2);
    let group = sent[0]["media_group_id"]
        .as_str()
        .expect("a media_group_id");
    assert_eq!(sent[1]["media_group_id"], group);
    assert_eq!(sent[0]["caption"], "first");
    assert_eq!(
        sent[1]["message_id"].as_i64(),
        sent[0]["message_id"].as_i64().map(|id| id + 1)
    );
    let photo_id = sent[0]["photo"][0]["file_id"].clone();
    let doc =
        t.tg.store_file(b"pdf".to_vec(), "application/pdf", Some("a.pdf"));
    let mixed = json!([
        { "type": "photo", "media": photo_id },
        { "type": "document", "media": doc["file_id"] },
    ]);
    assert_eq!(
        t.err(
            "sendMediaGroup",
            json!({ "chat_id": GROUP, "media": mixed })
        )
        .await,
        bad("document can't be mixed with other media types")
    );
    let single = t
        .ok(
            "sendMediaGroup",
            json!({ "chat_id": GROUP, "media": [{ "type": "photo", "media": photo_id }] }),
        )
        .await;
    assert!(single[0].get("media_group_id").is_none());
    assert_eq!(
        t.err("sendMediaGroup", json!({ "chat_id": GROUP, "media": [] }))
            .await,
        bad("there are no messages to send")
    );
    let eleven: Vec<Value> = (0..11)
        .map(|_| json!({ "type": "photo", "media": photo_id }))
        .collect();
    assert_eq!(
        t.err(
            "sendMediaGroup",
            json!({ "chat_id": GROUP, "media": eleven })
        )
        .await,
        bad("too many messages to send as an album")
    );
    assert_eq!(
        t.err(
            "sendMediaGroup",
            json!({ "chat_id": GROUP, "media": [{ "type": "photo", "media": "attach://gone" }] })
        )
        .await,
        bad("can't parse InputMedia: media not found")
    );
}

// --- edits, deletes, reactions ------------------------------------------------------

#[tokio::test]
async fn edits_succeed_on_the_bots_text_and_refuse_the_rest() {
    let t = T::new().await;
    let sent = t.send(PRIVATE, "draft").await;
    let id = sent["message_id"].clone();
    let edited = t
        .ok(
            "editMessageText",
            json!({ "chat_id": PRIVATE, "message_id": id, "text": "final" }),
        )
        .await;
    assert_eq!(edited["message_id"], id);
    assert_eq!(edited["text"], "final");
    assert!(edited["edit_date"].as_i64().is_some());
    assert_eq!(t.tg.message(PRIVATE, 1).expect("stored")["text"], "final");
    let (_, same) = t
        .err(
            "editMessageText",
            json!({ "chat_id": PRIVATE, "message_id": id, "text": "final" }),
        )
        .await;
    assert!(same.starts_with("Bad Request: message is not modified: specified new message content"));
    assert_eq!(
        t.err(
            "editMessageText",
            json!({ "chat_id": PRIVATE, "message_id": 99, "text": "x" })
        )
        .await,
        bad("message to edit not found")
    );
    let theirs =
        t.tg.inject_message(PRIVATE, &alice(), json!({ "text": "mine" }));
    assert_eq!(
        t.err(
            "editMessageText",
            json!({ "chat_id": PRIVATE, "message_id": theirs, "text": "x" })
        )
        .await,
        bad("message can't be edited")
    );
    let photo = t.tg.store_photo(png(20, 20));
    let with_photo = t
        .ok(
            "sendPhoto",
            json!({ "chat_id": PRIVATE, "photo": photo[0]["file_id"], "caption": "old" }),
        )
        .await;
    let photo_id = with_photo["message_id"].clone();
    assert_eq!(
        t.err(
            "editMessageText",
            json!({ "chat_id": PRIVATE, "message_id": photo_id, "text": "x" })
        )
        .await,
        bad("there is no text in the message to edit")
    );
    let recaptioned = t
        .ok(
            "editMessageCaption",
            json!({ "chat_id": PRIVATE, "message_id": photo_id, "caption": "new" }),
        )
        .await;
    assert_eq!(recaptioned["caption"], "new");
    assert_eq!(
        t.err(
            "editMessageCaption",
            json!({ "chat_id": PRIVATE, "message_id": id, "caption": "x" })
        )
        .await,
        bad("there is no caption in the message to edit")
    );
}

#[tokio::test]
async fn deletes_follow_the_48_hour_and_ownership_rules() {
    let t = T::new().await;
    let own = t.send(PRIVATE, "oops").await["message_id"].clone();
    assert_eq!(
        t.ok(
            "deleteMessage",
            json!({ "chat_id": PRIVATE, "message_id": own })
        )
        .await,
        true
    );
    assert_eq!(
        t.err(
            "deleteMessage",
            json!({ "chat_id": PRIVATE, "message_id": own })
        )
        .await,
        bad("message to delete not found")
    );
    assert!(t.tg.messages(PRIVATE).is_empty());
    let old =
        t.tg.inject_message(PRIVATE, &alice(), json!({ "text": "old" }));
    t.tg.age_message(PRIVATE, old, Duration::from_secs(49 * 3600));
    assert_eq!(
        t.err(
            "deleteMessage",
            json!({ "chat_id": PRIVATE, "message_id": old })
        )
        .await,
        bad("message can't be deleted for everyone")
    );
    let fresh =
        t.tg.inject_message(PRIVATE, &alice(), json!({ "text": "fresh" }));
    t.ok(
        "deleteMessage",
        json!({ "chat_id": PRIVATE, "message_id": fresh }),
    )
    .await;
    let theirs =
        t.tg.inject_message(GROUP, &alice(), json!({ "text": "group" }));
    assert_eq!(
        t.err(
            "deleteMessage",
            json!({ "chat_id": GROUP, "message_id": theirs })
        )
        .await,
        bad("message can't be deleted")
    );
    t.tg.set_bot_admin(GROUP, true);
    t.ok(
        "deleteMessage",
        json!({ "chat_id": GROUP, "message_id": theirs }),
    )
    .await;
}

#[tokio::test]
async fn reactions_are_checked_against_telegrams_list() {
    let t = T::new().await;
    let id =
        t.tg.inject_message(PRIVATE, &alice(), json!({ "text": "nice" }));
    let react =
        |reaction: Value| json!({ "chat_id": PRIVATE, "message_id": id, "reaction": reaction });
    assert_eq!(
        t.ok(
            "setMessageReaction",
            react(json!([{ "type": "emoji", "emoji": "👍" }]))
        )
        .await,
        true
    );
    assert_eq!(t.tg.bot_reactions(PRIVATE, id), vec!["👍"]);
    assert_eq!(
        t.err(
            "setMessageReaction",
            react(json!([{ "type": "emoji", "emoji": "\u{2764}\u{FE0F}" }]))
        )
        .await,
        bad("REACTION_INVALID")
    );
    assert_eq!(
        t.err(
            "setMessageReaction",
            react(json!([{ "type": "custom_emoji", "custom_emoji_id": "5368324170671202286" }]))
        )
        .await,
        bad("REACTION_INVALID")
    );
    assert_eq!(
        t.err(
            "setMessageReaction",
            react(json!([{ "type": "emoji", "emoji": "👍" }, { "type": "emoji", "emoji": "🔥" }]))
        )
        .await,
        bad("REACTIONS_TOO_MANY")
    );
    assert_eq!(
        t.err("setMessageReaction", react(json!("[oops"))).await,
        bad("can't parse reaction types JSON object")
    );
    t.ok("setMessageReaction", react(json!([]))).await;
    assert!(t.tg.bot_reactions(PRIVATE, id).is_empty());
    assert_eq!(
        t.err(
            "setMessageReaction",
            json!({ "chat_id": PRIVATE, "message_id": 99, "reaction": [] })
        )
        .await,
        bad("message to react not found")
    );
}

// --- chats, users -------------------------------------------------------------------

#[tokio::test]
async fn a_migrated_group_answers_with_its_new_id() {
    let t = T::new().await;
    let (old, new) = (-300, -100_300);
    t.tg.add_chat(old, "group", "Old group", false);
    t.send(old, "before").await;
    t.tg.migrate(old, new);
    let updates = t.updates(json!({})).await;
    let migration: Vec<&Value> = updates.iter().map(|u| &u["message"]).collect();
    assert_eq!(migration[0]["migrate_to_chat_id"], new);
    assert_eq!(migration[0]["chat"]["id"], old);
    assert_eq!(migration[1]["migrate_from_chat_id"], old);
    assert_eq!(migration[1]["chat"]["type"], "supergroup");
    let (status, body) = t
        .call("sendMessage", json!({ "chat_id": old, "text": "after" }))
        .await;
    assert_eq!(
        refused(status, &body),
        bad("group chat was upgraded to a supergroup chat")
    );
    assert_eq!(body["parameters"]["migrate_to_chat_id"], new);
    t.send(new, "after").await;
    assert_eq!(
        t.ok("getChat", json!({ "chat_id": old })).await["type"],
        "group"
    );
}

#[tokio::test]
async fn chat_actions_chats_and_profile_photos() {
    let t = T::new().await;
    assert_eq!(
        t.ok(
            "sendChatAction",
            json!({ "chat_id": GROUP, "action": "typing" })
        )
        .await,
        true
    );
    assert_eq!(
        t.err(
            "sendChatAction",
            json!({ "chat_id": GROUP, "action": "dancing" })
        )
        .await,
        bad("wrong parameter action in request")
    );
    let chat = t.ok("getChat", json!({ "chat_id": GROUP })).await;
    assert_eq!(
        (chat["id"].clone(), chat["title"].clone()),
        (json!(GROUP), json!("Group"))
    );
    t.tg.set_avatar(PRIVATE, png(64, 64));
    let photos = t
        .ok("getUserProfilePhotos", json!({ "user_id": PRIVATE }))
        .await;
    assert_eq!(photos["total_count"], 1);
    assert_eq!(photos["photos"][0].as_array().map(Vec::len), Some(2));
    assert_eq!(
        t.err("getUserProfilePhotos", json!({ "user_id": 777 }))
            .await,
        bad("user not found")
    );
    assert_eq!(
        t.err("getUserProfilePhotos", json!({})).await,
        bad("invalid user_id specified")
    );
}

// --- flood control, faults, outages ---------------------------------------------------

#[tokio::test]
async fn the_21st_message_into_a_group_within_a_minute_is_flood_limited() {
    let t = T::new().await;
    for i in 0..20 {
        t.send(GROUP, &format!("message {i}")).await;
    }
    let (status, response) = answer(
        t.http
            .post(t.url("sendMessage"))
            .json(&json!({ "chat_id": GROUP, "text": "one too many" })),
    )
    .await;
    let (_, description) = refused(status, &response);
    assert_eq!(status, 429);
    let retry = response["parameters"]["retry_after"]
        .as_u64()
        .expect("retry_after");
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(
        description,
        format!("Too Many Requests: retry after {retry}")
    );
    // The header, too.
    let raw = within(
        t.http
            .post(t.url("sendMessage"))
            .json(&json!({ "chat_id": GROUP, "text": "again" }))
            .send(),
    )
    .await
    .expect("an answer");
    assert_eq!(raw.status().as_u16(), 429);
    let header = raw
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok());
    assert!(header.is_some_and(|h| h.parse::<u64>().is_ok()));
    // Private chats are not limited per minute, and limits can be lifted.
    t.send(PRIVATE, "still fine").await;
    t.tg.set_rate_limits(None, None);
    t.send(GROUP, "unlimited").await;
}

#[tokio::test]
async fn the_overall_limit_counts_every_message_of_an_album() {
    let t = T::with(FakeOptions {
        per_bot_per_second: Some(3),
        ..FakeOptions::default()
    })
    .await;
    let photo = t.tg.store_photo(png(10, 10));
    let item = json!({ "type": "photo", "media": photo[0]["file_id"] });
    let album = json!({ "chat_id": PRIVATE, "media": [item, item] });
    t.ok("sendMediaGroup", album.clone()).await;
    let (status, body) = t.call("sendMediaGroup", album).await;
    assert_eq!(refused(status, &body).0, 429);
    assert_eq!(body["parameters"]["retry_after"], 1);
}

#[tokio::test]
async fn scripted_faults_answer_reset_and_delay() {
    let t = T::new().await;
    t.tg.fail("sendMessage", Fault::flood(7), 1);
    let raw = within(
        t.http
            .post(t.url("sendMessage"))
            .json(&json!({ "chat_id": PRIVATE, "text": "x" }))
            .send(),
    )
    .await
    .expect("an answer");
    assert_eq!(raw.status().as_u16(), 429);
    assert_eq!(
        raw.headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("7")
    );
    let body: Value = raw.json().await.expect("json");
    assert_eq!(body["parameters"]["retry_after"], 7);
    // Only once; and a faulted call had no effect.
    assert_eq!(t.send(PRIVATE, "x").await["message_id"], 1);

    t.tg.fail("*", Fault::Reset, 1);
    let reset = within(t.http.post(t.url("getMe")).send()).await;
    assert!(reset.is_err(), "the connection was closed unanswered");
    assert_eq!(t.tg.calls().last().and_then(|c| c.status), None);

    t.tg.fail("getme", Fault::error(502, "Bad Gateway"), 1);
    assert_eq!(t.err("getMe", json!({})).await, (502, "Bad Gateway".into()));

    t.tg.fail("getMe", Fault::Hang(Duration::from_millis(200)), 1);
    let started = Instant::now();
    t.ok("getMe", json!({})).await;
    assert!(started.elapsed() >= Duration::from_millis(200));
}

#[tokio::test]
async fn a_refusing_server_comes_back_on_the_same_port() {
    let t = T::new().await;
    let before = t.tg.api_url();
    t.ok("getMe", json!({})).await;
    t.tg.set_outage(Outage::Refuse).await;
    let refused = within(t.http.post(t.url("getMe")).send()).await;
    assert!(refused.expect_err("refused").is_connect());
    t.tg.set_outage(Outage::Up).await;
    assert_eq!(t.tg.api_url(), before);
    t.ok("getMe", json!({})).await;
}

#[tokio::test]
async fn a_hanging_server_never_answers_until_it_is_up() {
    let t = T::new().await;
    t.tg.set_outage(Outage::Hang).await;
    let hung = within(
        t.http
            .post(t.url("sendMessage"))
            .json(&json!({ "chat_id": PRIVATE, "text": "lost" }))
            .timeout(Duration::from_millis(300))
            .send(),
    )
    .await;
    assert!(hung.expect_err("no answer").is_timeout());
    t.tg.set_outage(Outage::Up).await;
    // The held request had no effect.
    assert_eq!(t.send(PRIVATE, "after").await["message_id"], 1);
}

#[tokio::test]
async fn stop_closes_the_port() {
    let t = T::new().await;
    let url = t.url("getMe");
    t.tg.stop().await;
    let gone = within(t.http.post(url).send()).await;
    assert!(gone.is_err());
}

// --- the service as it really is (issue 19) --------------------------------------
//
// Each behaviour below was found in the Bot API documentation or the
// open-source server (tdlib/telegram-bot-api) after the adapter had passed
// every test against an earlier, kinder fake.

#[tokio::test]
async fn replies_in_a_supergroup_without_topics_carry_their_reply_thread() {
    // Client.cpp, JsonMessage: `message_thread_id` is written for a message
    // in any thread (get_forum_topic_id of messageTopicThread), while
    // `is_topic_message` only for a forum topic.
    let t = T::new().await;
    let root =
        t.tg.inject_message(GROUP, &alice(), json!({ "text": "root" }));
    let reply = t.tg.inject_message(
        GROUP,
        &alice(),
        json!({ "text": "re", "reply_to_message_id": root }),
    );
    let deeper = t.tg.inject_message(
        GROUP,
        &alice(),
        json!({ "text": "re re", "reply_to_message_id": reply }),
    );
    let got = t.updates(json!({})).await;
    let m = |i: usize| got[i]["message"].clone();
    assert!(m(0).get("message_thread_id").is_none(), "not a reply");
    assert_eq!(m(1)["message_thread_id"], root);
    assert_eq!(m(1)["reply_to_message"]["message_id"], root);
    assert!(m(1).get("is_topic_message").is_none());
    // The chain keeps the id of the message that started it.
    assert_eq!(m(2)["message_thread_id"], root);
    assert_eq!(m(2)["reply_to_message"]["message_id"], reply);
    assert_eq!(m(2)["message_id"], deeper);
    // The bot's own replies too.
    let sent = t
        .ok(
            "sendMessage",
            json!({ "chat_id": GROUP, "text": "bot", "reply_parameters": { "message_id": reply } }),
        )
        .await;
    assert_eq!(sent["message_thread_id"], root);
    assert!(sent.get("is_topic_message").is_none());
    // A basic group has no threads.
    let basic = -300;
    t.tg.add_chat(basic, "group", "Basic", false);
    let first = t.tg.inject_message(basic, &alice(), json!({ "text": "a" }));
    t.tg.inject_message(
        basic,
        &alice(),
        json!({ "text": "b", "reply_to_message_id": first }),
    );
    let got = t.updates(json!({ "offset": last_id(&got) + 1 })).await;
    assert!(got[1]["message"].get("message_thread_id").is_none());
}

#[tokio::test]
async fn an_animation_comes_with_a_document_of_the_same_file() {
    // Bot API, Message.animation: "For backward compatibility, when this
    // field is set, the document field will also be set" (Client.cpp
    // writes JsonAnimation twice, the second time as a document).
    let t = T::new().await;
    let gif = t.tg.store_animation(vec![1, 2, 3, 4], "party.gif.mp4");
    t.tg.inject_message(PRIVATE, &alice(), json!({ "animation": gif }));
    let got = t.updates(json!({})).await;
    let m = &got[0]["message"];
    assert_eq!(m["animation"]["file_id"], m["document"]["file_id"]);
    assert_eq!(m["animation"]["duration"], 3);
    assert!(m["document"].get("duration").is_none());
    assert_eq!(m["document"]["mime_type"], "video/mp4");
    // What the bot sends as an animation comes back the same way.
    let form = Form::new().text("chat_id", PRIVATE.to_string()).part(
        "animation",
        Part::bytes(vec![9; 64])
            .file_name("loop.mp4")
            .mime_str("video/mp4")
            .unwrap(),
    );
    let (status, body) = t.multipart("sendAnimation", form).await;
    assert_eq!(status, 200, "{body}");
    let sent = &body["result"];
    assert_eq!(sent["animation"]["file_id"], sent["document"]["file_id"]);
}

#[tokio::test]
async fn stickers_of_the_three_kinds_carry_their_real_fields() {
    // Bot API, Sticker: is_animated (TGS), is_video (WebM), thumbnail
    // ("in the .WEBP or .JPG format"); no file_name or mime_type.
    let t = T::new().await;
    for (format, animated, video, ext) in [
        (StickerFormat::Webp, false, false, "webp"),
        (StickerFormat::Tgs, true, false, "tgs"),
        (StickerFormat::Webm, false, true, "webm"),
    ] {
        let sticker = t.tg.store_sticker(format, "😺");
        assert_eq!(sticker["is_animated"], animated);
        assert_eq!(sticker["is_video"], video);
        assert_eq!(sticker["type"], "regular");
        assert_eq!(sticker["emoji"], "😺");
        assert!(sticker.get("mime_type").is_none() && sticker.get("file_name").is_none());
        let file = t
            .ok("getFile", json!({ "file_id": sticker["file_id"] }))
            .await;
        let path = file["file_path"].as_str().unwrap();
        assert!(
            path.starts_with("stickers/") && path.ends_with(ext),
            "{path}"
        );
        let bytes = t
            .http
            .get(format!(
                "{}/file/bot{}/{path}",
                t.tg.api_url(),
                t.tg.token()
            ))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(bytes.as_ref(), format.sample().as_slice());
        // The thumbnail is a still WebP, fetched like any file.
        let thumb = t
            .ok(
                "getFile",
                json!({ "file_id": sticker["thumbnail"]["file_id"] }),
            )
            .await;
        assert!(thumb["file_path"].as_str().unwrap().ends_with(".webp"));
    }
    // sendSticker takes the three formats, and only them.
    let form = |bytes: Vec<u8>| {
        Form::new()
            .text("chat_id", PRIVATE.to_string())
            .part("sticker", Part::bytes(bytes).file_name("s"))
    };
    let (status, body) = t.multipart("sendSticker", form(tgs())).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["sticker"]["is_animated"], true);
    let (status, _) = t.multipart("sendSticker", form(png(2, 2))).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn a_second_poll_of_the_same_offset_within_half_a_second_gets_one_update() {
    // Client.cpp, process_get_updates_query: `limit = 1` when the offset
    // is the previous call's and it started less than 0.5 s ago.
    let t = T::new().await;
    for text in ["a", "b", "c"] {
        t.tg.inject_message(PRIVATE, &alice(), json!({ "text": text }));
    }
    let first = t.updates(json!({})).await;
    assert_eq!(first.len(), 3);
    let offset = first[0]["update_id"].as_i64().unwrap();
    assert_eq!(t.updates(json!({ "offset": offset })).await.len(), 3);
    let again = t.updates(json!({ "offset": offset })).await;
    assert_eq!(again.len(), 1, "throttled to one");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(t.updates(json!({ "offset": offset })).await.len(), 3);
}

#[tokio::test]
async fn reactions_reach_only_a_bot_that_is_an_admin() {
    let t = T::new().await;
    t.updates(json!({ "allowed_updates": ["message", "message_reaction"] }))
        .await;
    let m = t.tg.inject_message(GROUP, &alice(), json!({ "text": "x" }));
    assert_eq!(t.tg.inject_reaction(GROUP, m, &alice(), &[], &["👍"]), None);
    t.tg.set_bot_admin(GROUP, true);
    assert!(t
        .tg
        .inject_reaction(GROUP, m, &alice(), &[], &["👍"])
        .is_some());
    t.tg.set_bot_status(GROUP, BotStatus::Kicked);
    assert_eq!(t.tg.inject_reaction(GROUP, m, &alice(), &[], &["🔥"]), None);
}

#[tokio::test]
async fn a_removed_bot_and_a_missing_chat_are_refused_in_telegrams_words() {
    // Client.cpp, check_chat_access; TDLib's "Not enough rights to send
    // text messages to the chat" (as bot libraries' issue trackers quote
    // it, e.g. python-telegram-bot #3956).
    let t = T::new().await;
    let basic = -300;
    t.tg.add_chat(basic, "group", "Basic", false);
    let send = |chat: i64| json!({ "chat_id": chat, "text": "hi" });
    let bot = t.tg.bot()["id"].as_i64().unwrap();
    let member = |chat: i64| json!({ "chat_id": chat, "user_id": bot });
    assert_eq!(
        t.ok("getChatMember", member(GROUP)).await["status"],
        "member"
    );

    t.tg.set_bot_status(GROUP, BotStatus::Restricted);
    assert_eq!(
        t.err("sendMessage", send(GROUP)).await,
        bad("not enough rights to send text messages to the chat")
    );
    let photo = Form::new()
        .text("chat_id", GROUP.to_string())
        .part("photo", Part::bytes(png(4, 4)).file_name("p.png"));
    let (status, body) = t.multipart("sendPhoto", photo).await;
    assert_eq!(
        refused(status, &body),
        bad("not enough rights to send photos to the chat")
    );

    t.tg.set_bot_status(GROUP, BotStatus::Kicked);
    let kicked = (
        403,
        "Forbidden: bot was kicked from the supergroup chat".to_string(),
    );
    assert_eq!(t.err("sendMessage", send(GROUP)).await, kicked);
    // A supergroup refuses even reads; a basic group only writes.
    assert_eq!(t.err("getChatMember", member(GROUP)).await, kicked);
    t.tg.set_bot_status(basic, BotStatus::Kicked);
    assert_eq!(
        t.err("sendMessage", send(basic)).await,
        (403, "Forbidden: bot was kicked from the group chat".into())
    );
    assert_eq!(
        t.ok("getChatMember", member(basic)).await["status"],
        "kicked"
    );
    t.tg.set_bot_status(GROUP, BotStatus::Left);
    assert_eq!(
        t.err("sendMessage", send(GROUP)).await,
        (
            403,
            "Forbidden: bot is not a member of the supergroup chat".into()
        )
    );
    // Nothing more arrives from a chat the bot is not in.
    t.tg.inject_message(GROUP, &alice(), json!({ "text": "unseen" }));

    t.tg.set_chat_missing(PRIVATE, true);
    assert_eq!(
        t.err("sendMessage", send(PRIVATE)).await,
        bad("chat not found")
    );
    t.tg.set_chat_missing(PRIVATE, false);
    t.send(PRIVATE, "back").await;

    // Each change of the bot's standing was a my_chat_member update.
    let got = t.updates(json!({})).await;
    let changes: Vec<(i64, String, String)> = got
        .iter()
        .filter_map(|u| u.get("my_chat_member"))
        .map(|c| {
            (
                c["chat"]["id"].as_i64().unwrap(),
                c["old_chat_member"]["status"].as_str().unwrap().to_owned(),
                c["new_chat_member"]["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        changes,
        [
            (GROUP, "member".into(), "restricted".into()),
            (GROUP, "restricted".into(), "kicked".into()),
            (basic, "member".into(), "kicked".into()),
            (GROUP, "kicked".into(), "left".into()),
        ]
    );
    assert!(got.iter().all(|u| u.get("message").is_none()));
    assert_eq!(got.len(), 4);
}

#[tokio::test]
async fn get_chat_member_names_an_admin_bots_rights() {
    let t = T::new().await;
    t.tg.set_bot_admin(GROUP, true);
    let bot = t.tg.bot()["id"].as_i64().unwrap();
    let me = t
        .ok("getChatMember", json!({ "chat_id": GROUP, "user_id": bot }))
        .await;
    assert_eq!(me["status"], "administrator");
    assert_eq!(me["user"]["id"], bot);
    assert_eq!(me["can_delete_messages"], true);
    assert_eq!(
        t.err("getChatMember", json!({ "chat_id": GROUP, "user_id": 999 }))
            .await,
        bad("user not found")
    );
}

#[tokio::test]
async fn a_server_that_answers_polls_at_once_ignores_their_timeout() {
    let t = T::new().await;
    t.tg.answer_polls_at_once(true);
    let started = Instant::now();
    assert!(t.updates(json!({ "timeout": 5 })).await.is_empty());
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn a_result_fault_does_the_work_and_answers_another_shape() {
    let t = T::new().await;
    let sent = t.send(PRIVATE, "x").await;
    t.tg.fail("deleteMessage", Fault::Result(Value::Null), 1);
    let (status, body) = t
        .call(
            "deleteMessage",
            json!({ "chat_id": PRIVATE, "message_id": sent["message_id"] }),
        )
        .await;
    assert_eq!(
        (status, &body["ok"], &body["result"]),
        (200, &json!(true), &Value::Null)
    );
    assert!(t.tg.messages(PRIVATE).is_empty(), "deleted all the same");
}

/// What a [`Hook`] received: each update with its secret header.
type Received = std::sync::Arc<std::sync::Mutex<Vec<(Value, Option<String>)>>>;

/// A webhook receiver: records each POST's update and secret header,
/// refuses the first `refuse` requests with 500, answers the rest after
/// `hold`, and tracks how many were open at once.
struct Hook {
    addr: std::net::SocketAddr,
    got: Received,
    most_at_once: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

async fn hook(hold: Duration, refuse: usize) -> Hook {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use http_body_util::{BodyExt, Full};
    use hyper::body::Bytes;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let got: Received = Arc::default();
    let most_at_once = Arc::new(AtomicUsize::new(0));
    let open = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let (g, m) = (got.clone(), most_at_once.clone());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (got, most, open, refused) = (g.clone(), m.clone(), open.clone(), refused.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let (got, most, open, refused) =
                            (got.clone(), most.clone(), open.clone(), refused.clone());
                        async move {
                            let now = open.fetch_add(1, Ordering::SeqCst) + 1;
                            most.fetch_max(now, Ordering::SeqCst);
                            let secret = req
                                .headers()
                                .get("x-telegram-bot-api-secret-token")
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_owned);
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let update: Value = serde_json::from_slice(&body).unwrap();
                            tokio::time::sleep(hold).await;
                            let status = if refused.fetch_add(1, Ordering::SeqCst) < refuse {
                                500
                            } else {
                                got.lock().unwrap().push((update, secret));
                                200
                            };
                            open.fetch_sub(1, Ordering::SeqCst);
                            let mut reply = hyper::Response::new(Full::new(Bytes::new()));
                            *reply.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                            Ok::<_, std::convert::Infallible>(reply)
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Hook {
        addr,
        got,
        most_at_once,
    }
}

impl Hook {
    fn updates(&self) -> Vec<Value> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .map(|(u, _)| u.clone())
            .collect()
    }
}

/// (chat, text) of the message updates a hook got, in arrival order.
fn chat_texts(updates: &[Value]) -> Vec<(i64, String)> {
    updates
        .iter()
        .filter_map(|u| u.get("message"))
        .map(|m| {
            (
                m["chat"]["id"].as_i64().unwrap(),
                m["text"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_webhook_gets_each_chat_in_order_and_chats_in_parallel() {
    // WebhookActor: one update in flight per queue (a chat's messages),
    // queues in parallel up to max_connections (default 40).
    let t = T::new().await;
    let other = -100_201;
    t.tg.add_chat(other, "supergroup", "Other", false);
    let hook = hook(Duration::from_millis(150), 1).await;
    t.tg.forward_webhook_to(hook.addr);
    assert_eq!(
        t.ok(
            "setWebhook",
            json!({ "url": "https://bridge.example.org/tg", "secret_token": "s3cret" })
        )
        .await,
        true
    );
    let info = t.ok("getWebhookInfo", json!({})).await;
    assert_eq!(info["max_connections"], 40);
    for i in 0..3 {
        t.tg.inject_message(GROUP, &alice(), json!({ "text": format!("g{i}") }));
        t.tg.inject_message(other, &alice(), json!({ "text": format!("o{i}") }));
    }
    within(async {
        while hook.updates().len() < 6 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let got = chat_texts(&hook.updates());
    for chat in [GROUP, other] {
        let texts: Vec<&str> = got
            .iter()
            .filter(|(c, _)| *c == chat)
            .map(|(_, t)| t.as_str())
            .collect();
        let p = if chat == GROUP { "g" } else { "o" };
        assert_eq!(texts, [format!("{p}0"), format!("{p}1"), format!("{p}2")]);
    }
    // The first delivery was refused once and retried before its chat's
    // next update; the two chats overlapped.
    assert_eq!(got.len(), 6, "each update delivered once: {got:?}");
    assert_eq!(
        hook.most_at_once.load(std::sync::atomic::Ordering::SeqCst),
        2
    );
    assert!(hook
        .got
        .lock()
        .unwrap()
        .iter()
        .all(|(_, s)| s.as_deref() == Some("s3cret")));
    // The hook records an update before it answers; the fake confirms it
    // once it read the answer.
    within(async {
        while t.tg.pending_updates() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn a_webhook_with_one_connection_gets_one_update_at_a_time() {
    let t = T::new().await;
    t.tg.set_bot_admin(GROUP, true);
    let hook = hook(Duration::from_millis(50), 0).await;
    t.tg.forward_webhook_to(hook.addr);
    t.ok(
        "setWebhook",
        json!({
            "url": "https://bridge.example.org/tg",
            "max_connections": 1,
            "allowed_updates": ["message", "message_reaction"],
        }),
    )
    .await;
    assert_eq!(
        t.ok("getWebhookInfo", json!({})).await["max_connections"],
        1
    );
    let m =
        t.tg.inject_message(GROUP, &alice(), json!({ "text": "first" }));
    t.tg.inject_reaction(GROUP, m, &alice(), &[], &["👍"]);
    t.tg.inject_message(PRIVATE, &alice(), json!({ "text": "elsewhere" }));
    within(async {
        while hook.updates().len() < 3 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(
        hook.most_at_once.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    // The reaction (a queue of its own) came after the message it is about.
    let got = hook.updates();
    let reaction = got.iter().position(|u| u.get("message_reaction").is_some());
    let first = got
        .iter()
        .position(|u| u.pointer("/message/text") == Some(&json!("first")));
    assert!(first.unwrap() < reaction.unwrap(), "{got:?}");
}

/// getChatMember answers other users' standing as a chat's admins set it;
/// setMyCommands checks commands as tdlib and Telegram do, per scope.
#[tokio::test]
async fn member_statuses_and_the_command_menu() {
    let t = T::new().await;
    let bob = FakeTelegram::user(7, "Bob", None);
    t.tg.inject_message(GROUP, &bob, json!({ "text": "hi" }));
    let member = |user: i64| json!({ "chat_id": GROUP, "user_id": user });
    assert_eq!(t.ok("getChatMember", member(7)).await["status"], "member");
    t.tg.set_member_status(GROUP, &bob, "creator");
    let owner = t.ok("getChatMember", member(7)).await;
    assert_eq!(owner["status"], "creator");
    assert_eq!(owner["user"]["first_name"], "Bob");
    t.tg.set_member_status(GROUP, &bob, "administrator");
    assert_eq!(
        t.ok("getChatMember", member(7)).await["status"],
        "administrator"
    );
    assert_eq!(
        t.err("getChatMember", member(99)).await,
        bad("user not found")
    );

    let admins = json!({"type": "all_chat_administrators"});
    let commands = json!([{"command": "/link", "description": " Link this chat "}]);
    assert_eq!(
        t.ok(
            "setMyCommands",
            json!({"commands": commands, "scope": admins})
        )
        .await,
        true
    );
    let set = json!([{"command": "link", "description": "Link this chat"}]);
    assert_eq!(
        t.ok("getMyCommands", json!({"scope": admins})).await,
        set,
        "trimmed, without the slash"
    );
    assert_eq!(
        t.tg.bot_commands(&admins, ""),
        set.as_array().unwrap().clone()
    );
    assert_eq!(t.ok("getMyCommands", json!({})).await, json!([]));
    for (commands, why) in [
        (
            json!([{"command": "Link", "description": "x"}]),
            "BOT_COMMAND_INVALID",
        ),
        (
            json!([{"command": "", "description": "x"}]),
            "command must be non-empty",
        ),
        (
            json!([{"command": "a".repeat(33), "description": "x"}]),
            "command length must not exceed 32",
        ),
        (
            json!([{"command": "ok", "description": " "}]),
            "command description must be non-empty",
        ),
        (
            json!([{"command": "ok", "description": "d".repeat(257)}]),
            "command description length must not exceed 256",
        ),
    ] {
        assert_eq!(
            t.err("setMyCommands", json!({"commands": commands})).await,
            bad(why)
        );
    }
    assert_eq!(
        t.err(
            "setMyCommands",
            json!({"commands": [], "scope": {"type": "everyone"}})
        )
        .await,
        bad("unsupported type specified")
    );
    assert_eq!(
        t.ok("deleteMyCommands", json!({"scope": admins})).await,
        true
    );
    assert!(t.tg.bot_commands(&admins, "").is_empty());
}
