//! A faithful in-process fake of the Telegram Bot API server (feature
//! `fake`), for the adapter's tests and the benchmark.
//!
//! [`FakeTelegram::start`] serves HTTP on `127.0.0.1` (any free port). Point
//! a client at [`FakeTelegram::api_url`] and call `/bot<token>/<method>` as on
//! `api.telegram.org`: GET or POST, parameters in the query string or a JSON,
//! urlencoded or multipart body, method names in any case. Files getFile
//! names download from `/file/bot<token>/<file_path>`.
//!
//! "Faithful" means the fake is never kinder than Telegram: the envelope,
//! status codes and error descriptions are the real server's (taken from the
//! open-source `telegram-bot-api` and TDLib), and it applies the rules a
//! careless client trips over: per-chat message ids, Unix-second dates,
//! UTF-16 entity offsets (refused in TDLib's words when they do not fit),
//! text trimming, offset confirmation, long polling, the `allowed_updates`
//! default, the 409 for a second poller, the `limit=1` and `timeout>=3`
//! answers to a hot poll loop, privacy mode, reactions for admin bots only,
//! the 48 h delete window, flood control with `retry_after`, group migration
//! with `migrate_to_chat_id`, a kicked, departed or restricted bot and a
//! missing chat, reply threads in supergroups without topics, `document`
//! beside every `animation`, the three sticker formats, and webhook delivery
//! one update per request, in order per chat.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use switchboard_telegram::fake::{FakeOptions, FakeTelegram, Fault};
//! use serde_json::json;
//!
//! let tg = FakeTelegram::start(FakeOptions::default()).await?;
//! tg.add_chat(-100_123, "supergroup", "Bridge test", false);
//! let alice = FakeTelegram::user(42, "Alice", Some("alice"));
//! tg.inject_message(-100_123, &alice, json!({ "text": "hello" }));
//! tg.fail("sendMessage", Fault::flood(3), 1);
//! // ... run the adapter against tg.api_url() with tg.token() ...
//! assert_eq!(tg.messages(-100_123).len(), 1);
//! tg.stop().await;
//! # Ok(()) }
//! ```
//!
//! # What it implements
//!
//! `getMe`, `getUpdates`, `setWebhook`, `deleteWebhook`, `getWebhookInfo`,
//! `sendMessage`, `sendPhoto`, `sendDocument`, `sendVideo`, `sendAudio`,
//! `sendVoice`, `sendAnimation`, `sendSticker`, `sendMediaGroup`, `getFile`,
//! `editMessageText`, `editMessageCaption`, `deleteMessage`,
//! `setMessageReaction`, `getChat`, `getChatMember`, `sendChatAction`,
//! `getUserProfilePhotos`; and webhook delivery (`webhook`). Other real
//! methods answer `501 Not Implemented`; unknown names answer `404 Not
//! Found: method not found`; a wrong token `401 Unauthorized`.
//!
//! # The control API
//!
//! Tests drive the fake through [`FakeTelegram`]'s methods, not over HTTP:
//!
//! - the world: [`add_chat`](FakeTelegram::add_chat),
//!   [`set_bot_admin`](FakeTelegram::set_bot_admin),
//!   [`set_bot_status`](FakeTelegram::set_bot_status) (with a
//!   [`BotStatus`]: kicked, left, restricted...),
//!   [`set_chat_missing`](FakeTelegram::set_chat_missing),
//!   [`add_topic`](FakeTelegram::add_topic),
//!   [`migrate`](FakeTelegram::migrate), [`user`](FakeTelegram::user),
//!   [`store_file`](FakeTelegram::store_file),
//!   [`store_photo`](FakeTelegram::store_photo) (with [`png`] for bytes),
//!   [`store_animation`](FakeTelegram::store_animation),
//!   [`store_sticker`](FakeTelegram::store_sticker) (a [`StickerFormat`]),
//!   [`set_avatar`](FakeTelegram::set_avatar),
//!   [`set_rate_limits`](FakeTelegram::set_rate_limits),
//!   [`forward_webhook_to`](FakeTelegram::forward_webhook_to) (where the
//!   webhook URL's requests arrive);
//! - what users do, which queues updates:
//!   [`inject_message`](FakeTelegram::inject_message),
//!   [`inject_edit`](FakeTelegram::inject_edit),
//!   [`inject_reaction`](FakeTelegram::inject_reaction),
//!   [`inject_update`](FakeTelegram::inject_update);
//! - trouble: [`fail`](FakeTelegram::fail) with a [`Fault`] for the next
//!   calls of a method (an error, a hang, a reset, or a success of another
//!   shape), [`set_outage`](FakeTelegram::set_outage) with an [`Outage`]
//!   for the whole server,
//!   [`answer_polls_at_once`](FakeTelegram::answer_polls_at_once) (a server
//!   that ignores `timeout`);
//! - time: [`age_message`](FakeTelegram::age_message),
//!   [`age_updates`](FakeTelegram::age_updates);
//! - what happened: [`calls`](FakeTelegram::calls) (every request, as a
//!   [`Call`]), [`messages`](FakeTelegram::messages),
//!   [`bot_reactions`](FakeTelegram::bot_reactions),
//!   [`file_bytes`](FakeTelegram::file_bytes),
//!   [`pending_updates`](FakeTelegram::pending_updates),
//!   [`webhook_url`](FakeTelegram::webhook_url).
//!
//! Rules worth knowing when writing a test: update ids start at a random
//! number; a bot only sees what privacy mode and its admin status let it see
//! (by default privacy mode is off, see [`FakeOptions`]); reaction updates
//! need an admin bot *and* `message_reaction` in `allowed_updates`; changing
//! the bot's standing in a chat queues a `my_chat_member` update; a
//! `getUpdates` with the same `offset` as the previous call within 3 s waits
//! at least 3 s when there is nothing to return, and within 0.5 s returns at
//! most one update; flood limits are on by default; a one-item
//! `sendMediaGroup` sends an ordinary message.
//!
//! # Timing and delivery
//!
//! A request that arrived is carried out even if its client gives up or its
//! connection dies before the answer, as on the real server (so a timed-out
//! `sendMessage` may well have been sent). Long polls and [`Fault::Hang`]
//! wait on tokio's clock (a paused test clock runs through them); flood
//! windows and the getUpdates throttles use the wall clock. Webhook
//! deliveries follow the server's `WebhookActor`: one update per request, a
//! chat's messages and edits one at a time in order (its reactions and
//! member updates are queues of their own), other queues in parallel up to
//! `max_connections` (default 40), a refused delivery retried after 1, 2,
//! 4... s before its queue goes on.
//!
//! # What it does not model
//!
//! - Downloads by URL (a file parameter that looks like a URL answers
//!   `failed to get HTTP URL content`), `parse_mode` (answers `unsupported
//!   parse_mode in this fake`: send entities), inline messages, replies into
//!   other chats, public `@username` chats (whose access rules differ).
//! - Media processing: photos are not recompressed or resized (every size
//!   serves the uploaded bytes), sticker thumbnails are generated WebP
//!   stills whatever the sticker, and content is not inspected beyond
//!   image headers and the sticker formats' magic bytes. `sendSticker`'s
//!   refusal of another format is worded by the fake.
//! - Mentions, URLs and hashtags are not re-detected in sent text.
//! - Forum topics are not created through the API: a topic exists once a
//!   message was injected into it or [`FakeTelegram::add_topic`] named it,
//!   and a topic's messages do not carry the implicit `reply_to_message`
//!   (the topic's creation message) the server adds.
//! - Webhooks: no TLS, certificates or IP address checks; updates queued
//!   before the first [`forward_webhook_to`](FakeTelegram::forward_webhook_to)
//!   wait for it; the answer timeout is 60 s.
//! - Rights are coarse: a restricted bot may send nothing at all; an admin
//!   bot has the usual admin rights and none can be taken away one by one.
//! - Discussion groups of channels, business connections, payments,
//!   games, polls and inline mode.
//!
//! # Layout
//! - this file: the public types and the control API tests drive.
//! - `server`: the accept loop, connection handling (resets, refusals,
//!   hangs), routing, token check, scripted faults, the envelope.
//! - `params`: reading a request (query, JSON, urlencoded, multipart).
//! - `methods`: one function per Bot API method.
//! - `updates`: the update queue and getUpdates (offsets, long poll, 409s)
//!   and the webhook delivery queues.
//! - `webhook`: the task that POSTs updates to a webhook.
//! - `state`: the shared state, privacy mode, files, flood control.
//! - `text`: entities, UTF-16 offsets, Telegram's text cleaning, the
//!   reaction emoji list.
//! - `media`: image headers, photo sizes, MIME types, sticker formats,
//!   [`png`], [`webp`], [`tgs`], [`webm`].
//! - `error`: the failure envelope.
//! - `tests`: the fake's own behaviour, over HTTP.

mod error;
mod media;
mod methods;
mod params;
pub mod peer;
mod server;
mod state;
mod text;
mod updates;
mod webhook;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

pub use media::{png, tgs, webm, webp, StickerFormat};
use server::Control;
use state::{
    now_unix, BotInfo, Chat, ChatKind, FaultRule, FileKind, Files, RateLimiter, Shared, State,
    Stored,
};
use updates::UpdateQueue;

/// How to start the fake.
#[derive(Debug, Clone)]
pub struct FakeOptions {
    /// The bot token clients must use. Real tokens start with the bot id.
    pub token: String,
    pub bot_id: i64,
    pub bot_username: String,
    pub bot_first_name: String,
    /// Privacy mode off. When false, in groups where the bot is not an admin
    /// it only gets commands, replies to its messages, mentions of it and
    /// service messages (see [`FakeTelegram::set_bot_admin`]).
    pub can_read_all_group_messages: bool,
    /// Messages per minute into one group, supergroup or channel (negative
    /// chat id); `None` switches the limit off.
    pub per_chat_per_minute: Option<u32>,
    /// Messages per second overall; `None` switches the limit off.
    pub per_bot_per_second: Option<u32>,
}

impl Default for FakeOptions {
    /// A bridge bot as deployed: privacy mode off, Telegram's flood limits
    /// (20 per minute per group, 30 per second overall).
    fn default() -> Self {
        FakeOptions {
            token: "123456:TEST-token".into(),
            bot_id: 123_456,
            bot_username: "switchboard_test_bot".into(),
            bot_first_name: "Switchboard".into(),
            can_read_all_group_messages: true,
            per_chat_per_minute: Some(20),
            per_bot_per_second: Some(30),
        }
    }
}

/// A scripted failure for the next calls of a method ([`FakeTelegram::fail`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer this error envelope (HTTP status = `code`). `retry_after`
    /// also sets the `Retry-After` header.
    Error {
        code: u16,
        description: String,
        retry_after: Option<u64>,
        migrate_to_chat_id: Option<i64>,
    },
    /// Wait this long, then handle the call normally (a slow server; a client
    /// that gives up first leaves the outcome unknown, as in real life).
    Hang(Duration),
    /// Close the connection without answering (the call has no effect).
    Reset,
    /// Carry the call out, then answer `{"ok":true,"result":<this>}`
    /// instead of its real result: a proxy, an older or local server, or an
    /// emulator that answers a success in another shape (`true` where a
    /// Message was documented, `null`).
    Result(Value),
}

impl Fault {
    /// An error with a description, e.g. `Fault::error(502, "Bad Gateway")`.
    pub fn error(code: u16, description: &str) -> Self {
        Fault::Error {
            code,
            description: description.to_string(),
            retry_after: None,
            migrate_to_chat_id: None,
        }
    }

    /// `429 Too Many Requests: retry after N`.
    pub fn flood(retry_after: u64) -> Self {
        Fault::Error {
            code: 429,
            description: format!("Too Many Requests: retry after {retry_after}"),
            retry_after: Some(retry_after),
            migrate_to_chat_id: None,
        }
    }

    /// `403 Forbidden: bot was blocked by the user`.
    pub fn blocked() -> Self {
        Fault::error(403, "Forbidden: bot was blocked by the user")
    }

    /// A 400 refusing a text's entities in TDLib's words, as the Bot API
    /// passes them on: `entity beginning at UTF-16 offset N ends after the
    /// end of the text at UTF-16 offset M`.
    pub fn entities(offset: usize, end: usize) -> Self {
        Fault::error(
            400,
            &format!(
                "Bad Request: entity beginning at UTF-16 offset {offset} ends after the end of \
                 the text at UTF-16 offset {end}"
            ),
        )
    }
}

/// The bot's standing in a chat ([`FakeTelegram::set_bot_status`]), as
/// getChatMember names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BotStatus {
    /// `administrator`: sees everything, gets reactions, deletes others'
    /// messages.
    Administrator,
    /// `member`: an ordinary member.
    Member,
    /// `restricted`: a member who may not send messages (`not enough rights
    /// to send text messages to the chat`).
    Restricted,
    /// `left`: not in the chat (`bot is not a member of the ... chat`).
    Left,
    /// `kicked`: removed and banned (`bot was kicked from the ... chat`).
    Kicked,
}

impl BotStatus {
    /// The `status` of a ChatMember.
    pub fn as_str(self) -> &'static str {
        match self {
            BotStatus::Administrator => "administrator",
            BotStatus::Member => "member",
            BotStatus::Restricted => "restricted",
            BotStatus::Left => "left",
            BotStatus::Kicked => "kicked",
        }
    }
}

/// The server's availability ([`FakeTelegram::set_outage`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outage {
    /// Serving normally.
    Up,
    /// Not listening: connects are refused and open connections are dropped.
    Refuse,
    /// Accepting and reading requests, never answering. When the outage
    /// ends, the held requests are dropped unanswered (they had no effect).
    Hang,
}

/// One Bot API request, as the fake saw it.
#[derive(Debug, Clone)]
pub struct Call {
    /// The method in its documented spelling (as sent, if unknown).
    pub method: String,
    /// The parameters as they came (JSON bodies keep their types, form
    /// values are strings); uploaded files as `{file_name, size, mime}`.
    pub params: Value,
    /// The HTTP status answered; `None` while pending or when the
    /// connection was dropped without an answer.
    pub status: Option<u16>,
    /// When the request had been read.
    pub at: Instant,
}

impl Call {
    /// A parameter as the server reads it: always a string.
    pub fn param(&self, name: &str) -> Option<String> {
        match self.params.get(name)? {
            Value::String(s) => Some(s.clone()),
            Value::Null => None,
            other => Some(other.to_string()),
        }
    }
}

/// The running fake. Dropping it stops the server; [`FakeTelegram::stop`]
/// also waits for it.
pub struct FakeTelegram {
    shared: Arc<Shared>,
    addr: SocketAddr,
    control: mpsc::UnboundedSender<Control>,
    task: Option<JoinHandle<()>>,
    /// Delivers updates to the webhook while one is set (`webhook`).
    deliveries: JoinHandle<()>,
}

impl Drop for FakeTelegram {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        self.deliveries.abort();
        self.end_long_poll();
    }
}

/// The id of the first update: Telegram starts each bot's queue at a random
/// number, so clients must not assume anything about it.
fn first_update_id() -> i64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::from(d.subsec_nanos()));
    2_000_001 + nanos % 500_000_000
}

/// Telegram's "GroupAnonymousBot", which signs service messages the fake
/// makes up (migrations).
fn anonymous_admin() -> Value {
    json!({
        "id": 1_087_968_824,
        "is_bot": true,
        "first_name": "Group",
        "username": "GroupAnonymousBot",
    })
}

impl FakeTelegram {
    /// Starts serving on `127.0.0.1` on a free port.
    pub async fn start(opts: FakeOptions) -> io::Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let user = json!({
            "id": opts.bot_id,
            "is_bot": true,
            "first_name": opts.bot_first_name,
            "username": opts.bot_username,
            "can_join_groups": true,
            "can_read_all_group_messages": opts.can_read_all_group_messages,
            "supports_inline_queries": false,
            "can_connect_to_business": false,
            "has_main_web_app": false,
        });
        // Messages carry the User without getMe's extra fields.
        let sender = json!({
            "id": opts.bot_id,
            "is_bot": true,
            "first_name": opts.bot_first_name,
            "username": opts.bot_username,
        });
        let state = State {
            bot: BotInfo {
                id: opts.bot_id,
                username: opts.bot_username.clone(),
                user,
                sender,
                can_read_all_group_messages: opts.can_read_all_group_messages,
            },
            chats: BTreeMap::new(),
            users: BTreeMap::new(),
            avatars: BTreeMap::new(),
            files: Files::default(),
            updates: UpdateQueue::new(first_update_id()),
            rate: RateLimiter::new(opts.per_chat_per_minute, opts.per_bot_per_second),
            webhook: None,
            webhook_target: None,
            polls_at_once: false,
            next_webhook_set: None,
            faults: Vec::new(),
            calls: Vec::new(),
            last_media_group: 0,
            commands: std::collections::BTreeMap::new(),
        };
        let shared = Arc::new(Shared::new(opts.token, state));
        let (control, orders) = mpsc::unbounded_channel();
        let task = tokio::spawn(server::run(shared.clone(), listener, addr, orders));
        let deliveries = tokio::spawn(webhook::run(shared.clone()));
        Ok(FakeTelegram {
            shared,
            addr,
            control,
            task: Some(task),
            deliveries,
        })
    }

    /// `http://127.0.0.1:PORT`; clients add `/bot<token>/<method>`.
    pub fn api_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The address served (the same across [`Outage::Refuse`] and back).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The token clients must use.
    pub fn token(&self) -> &str {
        &self.shared.token
    }

    /// The bot's User object, as getMe returns it.
    pub fn bot(&self) -> Value {
        self.shared.lock().bot.user.clone()
    }

    /// A (human) User object for injected messages.
    pub fn user(id: i64, first_name: &str, username: Option<&str>) -> Value {
        let mut user = json!({ "id": id, "is_bot": false, "first_name": first_name });
        if let Some(username) = username {
            user["username"] = username.into();
        }
        user
    }

    /// Adds a chat to the chat table (replacing one with the same id).
    /// `kind` is `private`, `group`, `supergroup` or `channel`; `title` is
    /// the user's first name for a private chat. `is_forum` only counts for
    /// supergroups. The bot is an admin only in channels until
    /// [`set_bot_admin`](Self::set_bot_admin).
    ///
    /// # Panics
    /// On any other `kind`.
    pub fn add_chat(&self, id: i64, kind: &str, title: &str, is_forum: bool) {
        let kind =
            ChatKind::parse(kind).unwrap_or_else(|| panic!("add_chat: unknown chat type {kind:?}"));
        let mut st = self.shared.lock();
        if kind == ChatKind::Private {
            st.users.insert(id, FakeTelegram::user(id, title, None));
        }
        st.chats.insert(id, Chat::new(id, kind, title, is_forum));
    }

    /// Makes the bot an admin of a chat, or an ordinary member. Admins see
    /// every group message despite privacy mode, get `message_reaction`
    /// updates (when they ask for them) and may delete others' messages.
    /// See [`set_bot_status`](Self::set_bot_status).
    ///
    /// # Panics
    /// If the chat is not in the table.
    pub fn set_bot_admin(&self, chat_id: i64, admin: bool) {
        let status = if admin {
            BotStatus::Administrator
        } else {
            BotStatus::Member
        };
        self.set_bot_status(chat_id, status);
    }

    /// Changes the bot's standing in a chat, as an admin of the chat would
    /// (promote, demote, restrict, remove, ban), and queues the
    /// `my_chat_member` update Telegram sends the bot about it. A bot that
    /// left or was kicked gets no more updates from the chat, and its calls
    /// are refused in the server's words: `Forbidden: bot was kicked from
    /// the supergroup chat`, `Forbidden: bot is not a member of the
    /// supergroup chat` (a basic group refuses only writes, and says `group
    /// chat`); a restricted bot's sends answer `Bad Request: not enough
    /// rights to send text messages to the chat` (or photos, documents...).
    ///
    /// # Panics
    /// If the chat is not in the table.
    pub fn set_bot_status(&self, chat_id: i64, status: BotStatus) {
        let mut st = self.shared.lock();
        let bot = st.bot.sender.clone();
        let chat = st
            .chats
            .get_mut(&chat_id)
            .unwrap_or_else(|| panic!("chat {chat_id} is not in the fake's chat table"));
        let old = chat.bot_status;
        chat.bot_status = status;
        if old == status || chat.kind == ChatKind::Private {
            return;
        }
        let payload = json!({
            "chat": chat.json(),
            "from": anonymous_admin(),
            "date": now_unix(),
            "old_chat_member": state::chat_member(&bot, old),
            "new_chat_member": state::chat_member(&bot, status),
        });
        st.updates
            .push("my_chat_member", payload, now_unix() + 86_400);
        drop(st);
        self.shared.wake.notify_waiters();
    }

    /// Sets a user's standing in a chat, as getChatMember will answer it:
    /// `creator`, `administrator`, `member`, `restricted`, `left` or
    /// `kicked` (the Bot API's ChatMember statuses). The user is one the
    /// bot has seen (a message from them, or a private chat).
    ///
    /// # Panics
    /// If the chat is not in the table, or on another status.
    pub fn set_member_status(&self, chat_id: i64, user: &Value, status: &str) {
        assert!(
            [
                "creator",
                "administrator",
                "member",
                "restricted",
                "left",
                "kicked"
            ]
            .contains(&status),
            "set_member_status: unknown status {status:?}"
        );
        let id = user["id"].as_i64().expect("a User object");
        let mut st = self.shared.lock();
        st.users.insert(id, user.clone());
        let chat = st
            .chats
            .get_mut(&chat_id)
            .unwrap_or_else(|| panic!("chat {chat_id} is not in the fake's chat table"));
        chat.member_status.insert(id, status.to_owned());
    }

    /// The bot's command list for a scope (`{"type":
    /// "all_chat_administrators"}`) and language (`""`: all), as
    /// setMyCommands left it; empty when none was set.
    pub fn bot_commands(&self, scope: &Value, language_code: &str) -> Vec<Value> {
        let st = self.shared.lock();
        st.commands
            .get(&(scope.to_string(), language_code.to_owned()))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    }

    /// Makes a chat unknown to the bot (deleted, or the bot never saw it):
    /// every call naming it answers `400 Bad Request: chat not found`, and
    /// it sends no updates, until `missing` is false again.
    ///
    /// # Panics
    /// If the chat is not in the table.
    pub fn set_chat_missing(&self, chat_id: i64, missing: bool) {
        self.with_chat(chat_id, |chat| chat.missing = missing);
    }

    /// Where the webhook's HTTPS URL reaches the client: Telegram POSTs each
    /// update there (the path of the URL kept), as a reverse proxy in front
    /// of it would forward them. Until this is set, a webhook's updates
    /// queue undelivered.
    pub fn forward_webhook_to(&self, addr: std::net::SocketAddr) {
        self.shared.lock().webhook_target = Some(addr);
        self.shared.wake.notify_waiters();
    }

    /// Answers every getUpdates at once, whatever its `timeout`, as a
    /// proxy with a short read timeout, a local Bot API server under load
    /// or an emulator do; `false` long-polls again.
    pub fn answer_polls_at_once(&self, at_once: bool) {
        self.shared.lock().polls_at_once = at_once;
        self.shared.wake.notify_waiters();
    }

    /// Declares a forum topic the bot may post into.
    ///
    /// # Panics
    /// If the chat is not a forum supergroup.
    pub fn add_topic(&self, chat_id: i64, message_thread_id: i64) {
        self.with_chat(chat_id, |chat| {
            assert!(chat.is_forum, "add_topic: chat {chat_id} is not a forum");
            chat.topics.insert(message_thread_id);
        });
    }

    /// Changes the flood limits (`None` switches one off).
    pub fn set_rate_limits(
        &self,
        per_chat_per_minute: Option<u32>,
        per_bot_per_second: Option<u32>,
    ) {
        let mut st = self.shared.lock();
        st.rate = RateLimiter::new(per_chat_per_minute, per_bot_per_second);
    }

    fn with_chat<T>(&self, chat_id: i64, f: impl FnOnce(&mut Chat) -> T) -> T {
        let mut st = self.shared.lock();
        let chat = st
            .chats
            .get_mut(&chat_id)
            .unwrap_or_else(|| panic!("chat {chat_id} is not in the fake's chat table"));
        f(chat)
    }

    /// Stores a file as a Document; returns the Document object
    /// (`file_id`, `file_unique_id`, `file_size`, `mime_type`, `file_name`)
    /// for building `document` fields of injected messages.
    pub fn store_file(&self, bytes: Vec<u8>, mime: &str, name: Option<&str>) -> Value {
        self.shared.lock().files.add_file(
            FileKind::Document,
            Arc::new(bytes),
            name.map(str::to_string),
            Some(mime.to_string()),
            Map::new(),
        )
    }

    /// Stores a sticker of `format` (with its bytes from
    /// [`StickerFormat::sample`]) and a WebP still as its thumbnail;
    /// returns the Sticker object as the server writes it (`type`,
    /// `width`, `height`, `emoji`, `set_name`, `is_animated` for TGS,
    /// `is_video` for WebM, `thumbnail`, the file fields; no `file_name`
    /// or `mime_type`, which stickers do not have), for the `sticker` field
    /// of injected messages.
    pub fn store_sticker(&self, format: StickerFormat, emoji: &str) -> Value {
        self.shared
            .lock()
            .files
            .add_sticker(Arc::new(format.sample()), emoji, "switchboard_test")
    }

    /// Stores a GIF as Telegram keeps them (an MPEG-4 video without
    /// sound); returns the Animation object for the `animation` field of
    /// injected messages. ([`inject_message`](Self::inject_message) adds the
    /// `document` the server sets beside it.)
    pub fn store_animation(&self, bytes: Vec<u8>, name: &str) -> Value {
        let mut extra = Map::new();
        extra.insert("duration".into(), 3.into());
        extra.insert("width".into(), 320.into());
        extra.insert("height".into(), 240.into());
        self.shared.lock().files.add_file(
            FileKind::Animation,
            Arc::new(bytes),
            Some(name.to_string()),
            Some("video/mp4".into()),
            extra,
        )
    }

    /// Stores an image as a photo; returns its PhotoSize array, for the
    /// `photo` field of injected messages.
    ///
    /// # Panics
    /// If the bytes are not an image the fake can read (see [`png`]).
    pub fn store_photo(&self, bytes: Vec<u8>) -> Value {
        let (width, height) = media::image_size(&bytes)
            .expect("store_photo: not a PNG, JPEG, GIF, WebP or BMP image (try fake::png)");
        self.shared
            .lock()
            .files
            .add_photo(Arc::new(bytes), width, height)
    }

    /// Gives a user a (new, current) profile photo, for getUserProfilePhotos.
    ///
    /// # Panics
    /// If the bytes are not an image the fake can read.
    pub fn set_avatar(&self, user_id: i64, bytes: Vec<u8>) {
        let photo = self.store_photo(bytes);
        let mut st = self.shared.lock();
        st.users
            .entry(user_id)
            .or_insert_with(|| FakeTelegram::user(user_id, "User", None));
        st.avatars.entry(user_id).or_default().insert(0, photo);
    }

    /// A user sends a message: `fields` (text, entities, caption, photo,
    /// document, media_group_id, message_thread_id, new_chat_members,
    /// left_chat_member...) are merged into a Message with the chat's next
    /// message id, the current date and the chat from the table.
    /// `reply_to_message_id` becomes `reply_to_message` (the stored message,
    /// one level deep). In a channel pass `Value::Null` as `from` (the post
    /// gets `sender_chat`). The message is stored, and a `message` (or
    /// `channel_post`) update is queued if privacy mode lets the bot see it.
    /// Returns the message id.
    ///
    /// # Panics
    /// If the chat is not in the table or `fields` is not an object.
    pub fn inject_message(&self, chat_id: i64, from: &Value, fields: Value) -> i64 {
        let mut fields = match fields {
            Value::Object(fields) => fields,
            Value::Null => Map::new(),
            other => panic!("inject_message: fields must be a JSON object, not {other}"),
        };
        let mut st = self.shared.lock();
        let bot_id = st.bot.id;
        let chat = st
            .chats
            .get_mut(&chat_id)
            .unwrap_or_else(|| panic!("chat {chat_id} is not in the fake's chat table"));
        let id = chat.next_message_id();
        let mut m = Map::new();
        m.insert("message_id".into(), id.into());
        if !from.is_null() {
            m.insert("from".into(), from.clone());
        } else if chat.kind == ChatKind::Channel {
            m.insert("sender_chat".into(), chat.json());
        }
        m.insert("chat".into(), chat.json());
        m.insert("date".into(), now_unix().into());
        let reply_to = fields.remove("reply_to_message_id");
        fields.remove("message_id");
        fields.remove("chat");
        // "For backward compatibility, when this field is set, the document
        // field will also be set" (Message.animation): the same file,
        // without the video's own fields.
        if let Some(Value::Object(animation)) = fields.get("animation") {
            if !fields.contains_key("document") {
                let mut document = animation.clone();
                for key in ["duration", "width", "height"] {
                    document.remove(key);
                }
                fields.insert("document".into(), Value::Object(document));
            }
        }
        m.extend(fields);
        if let Some(target) = reply_to
            .and_then(|r| r.as_i64())
            .and_then(|r| chat.messages.get(&r))
        {
            let mut target = target.message.clone();
            if let Some(t) = target.as_object_mut() {
                t.remove("reply_to_message");
            }
            if !m.contains_key("message_thread_id") {
                if let Some(thread) = state::reply_thread(chat, &target) {
                    m.insert("message_thread_id".into(), thread.into());
                }
            }
            m.insert("reply_to_message".into(), target);
        }
        if chat.is_forum {
            if let Some(thread) = m.get("message_thread_id").and_then(Value::as_i64) {
                chat.topics.insert(thread);
                m.entry("is_topic_message").or_insert(true.into());
            }
        }
        let message = Value::Object(m);
        let from_bot = from.get("id").and_then(Value::as_i64) == Some(bot_id);
        chat.messages.insert(
            id,
            Stored {
                message: message.clone(),
                from_bot,
                bot_reaction: Vec::new(),
            },
        );
        st.see_user(from);
        for member in message
            .get("new_chat_members")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .chain(message.get("left_chat_member"))
        {
            st.see_user(member);
        }
        // Bots get no updates about their own messages.
        if !from_bot {
            st.deliver(chat_id, &message, false);
        }
        drop(st);
        self.shared.wake.notify_waiters();
        id
    }

    /// A user edits a stored message: `fields` are merged into it (a `null`
    /// value removes a field), `edit_date` is set, and an `edited_message`
    /// (or `edited_channel_post`) update with the same message id is queued
    /// if the bot may see it. Returns the update id if one was queued.
    ///
    /// # Panics
    /// If the message does not exist or `fields` is not an object.
    pub fn inject_edit(&self, chat_id: i64, message_id: i64, fields: Value) -> Option<i64> {
        let Value::Object(fields) = fields else {
            panic!("inject_edit: fields must be a JSON object");
        };
        let mut st = self.shared.lock();
        let chat = st
            .chats
            .get_mut(&chat_id)
            .unwrap_or_else(|| panic!("chat {chat_id} is not in the fake's chat table"));
        let stored = chat
            .messages
            .get_mut(&message_id)
            .unwrap_or_else(|| panic!("message {message_id} is not in chat {chat_id}"));
        let explicit_date = fields.contains_key("edit_date");
        if let Some(m) = stored.message.as_object_mut() {
            for (key, value) in fields {
                if key == "message_id" || key == "chat" {
                    continue;
                }
                if value.is_null() {
                    m.remove(&key);
                } else {
                    m.insert(key, value);
                }
            }
            if !explicit_date {
                m.insert("edit_date".into(), now_unix().into());
            }
        }
        let (message, from_bot) = (stored.message.clone(), stored.from_bot);
        let update = if from_bot {
            None
        } else {
            st.deliver(chat_id, &message, true)
        };
        drop(st);
        self.shared.wake.notify_waiters();
        update
    }

    /// A user changes their reaction to a message: queues a
    /// `message_reaction` update, which the bot only gets if it is an admin
    /// of the chat (always, in private chats) and lists `message_reaction` in
    /// `allowed_updates`. Returns the update id if one was queued.
    ///
    /// # Panics
    /// If the chat is not in the table.
    pub fn inject_reaction(
        &self,
        chat_id: i64,
        message_id: i64,
        user: &Value,
        old: &[&str],
        new: &[&str],
    ) -> Option<i64> {
        let emoji = |list: &[&str]| -> Vec<Value> {
            list.iter()
                .map(|e| json!({ "type": "emoji", "emoji": e }))
                .collect()
        };
        let mut st = self.shared.lock();
        let chat = st
            .chats
            .get(&chat_id)
            .map(Chat::json)
            .unwrap_or_else(|| panic!("chat {chat_id} is not in the fake's chat table"));
        st.see_user(user);
        if !st.reaction_visible(chat_id) {
            return None;
        }
        let now = now_unix();
        let payload = json!({
            "chat": chat,
            "message_id": message_id,
            "user": user,
            "date": now,
            "old_reaction": emoji(old),
            "new_reaction": emoji(new),
        });
        let update = st.updates.push("message_reaction", payload, now + 86_400);
        drop(st);
        self.shared.wake.notify_waiters();
        update
    }

    /// Queues a raw update (for kinds the helpers do not cover, or malformed
    /// ones); its `update_id` is assigned. Returns it, or `None` when the
    /// bot's `allowed_updates` drops that kind (unknown kinds always pass).
    ///
    /// # Panics
    /// If `update` is not a JSON object.
    pub fn inject_update(&self, update: Value) -> Option<i64> {
        let Value::Object(update) = update else {
            panic!("inject_update: an update is a JSON object");
        };
        let id = self
            .shared
            .lock()
            .updates
            .push_raw(update, now_unix() + 86_400);
        self.shared.wake.notify_waiters();
        id
    }

    /// Upgrades basic group `old_id` to supergroup `new_id` (added to the
    /// table if missing, with the group's title and admin status): a
    /// `migrate_to_chat_id` service message in the group and a
    /// `migrate_from_chat_id` one in the supergroup, each queued as a
    /// `message` update. From then on every write to `old_id` answers 400
    /// `group chat was upgraded to a supergroup chat` with
    /// `parameters.migrate_to_chat_id`.
    ///
    /// # Panics
    /// If `old_id` is not a basic group in the table.
    pub fn migrate(&self, old_id: i64, new_id: i64) {
        self.upgrade(old_id, new_id, true);
    }

    /// As [`migrate`](Self::migrate), but the bot never hears the service
    /// messages (it was away longer than updates are kept): it learns of
    /// the move only when a call for the old id is refused with
    /// `migrate_to_chat_id`.
    pub fn migrate_unannounced(&self, old_id: i64, new_id: i64) {
        self.upgrade(old_id, new_id, false);
    }

    fn upgrade(&self, old_id: i64, new_id: i64, announce: bool) {
        let mut st = self.shared.lock();
        let (title, admin) = match st.chats.get(&old_id) {
            Some(chat) if chat.kind == ChatKind::Group => (chat.title.clone(), chat.bot_status),
            _ => panic!("migrate: chat {old_id} is not a basic group in the fake's table"),
        };
        let supergroup = st
            .chats
            .entry(new_id)
            .or_insert_with(|| Chat::new(new_id, ChatKind::Supergroup, &title, false));
        supergroup.bot_status = admin;
        let new_json = supergroup.json();
        let service = |st: &mut State, chat_id: i64, extra: Value| {
            let Some(chat) = st.chats.get_mut(&chat_id) else {
                return;
            };
            let mut message = json!({
                "message_id": chat.next_message_id(),
                "from": anonymous_admin(),
                "chat": chat.json(),
                "date": now_unix(),
            });
            if let (Some(m), Value::Object(extra)) = (message.as_object_mut(), extra) {
                m.extend(extra);
            }
            let id = message["message_id"].as_i64().unwrap_or(0);
            chat.messages.insert(
                id,
                Stored {
                    message: message.clone(),
                    from_bot: false,
                    bot_reaction: Vec::new(),
                },
            );
            if announce {
                st.deliver(chat_id, &message, false);
            }
        };
        service(&mut st, old_id, json!({ "migrate_to_chat_id": new_id }));
        service(
            &mut st,
            new_id,
            json!({ "sender_chat": new_json, "migrate_from_chat_id": old_id }),
        );
        if let Some(group) = st.chats.get_mut(&old_id) {
            group.migrated_to = Some(new_id);
        }
        drop(st);
        self.shared.wake.notify_waiters();
    }

    /// The next `times` calls of `method` (any case; `"*"` for every method,
    /// getUpdates included) get `fault` instead of being handled. Rules are
    /// used in the order they were added.
    pub fn fail(&self, method: &str, fault: Fault, times: usize) {
        if times == 0 {
            return;
        }
        self.shared.lock().faults.push(FaultRule {
            method: method.to_ascii_lowercase(),
            fault,
            remaining: times,
        });
    }

    /// Drops the scripted faults not used yet (a slow spell ends).
    pub fn clear_faults(&self) {
        self.shared.lock().faults.clear();
    }

    /// Changes availability; returns once the port really is closed (or
    /// open again, on the same address).
    ///
    /// # Panics
    /// If the port cannot be bound again (another process took it).
    pub async fn set_outage(&self, outage: Outage) {
        let (done, answer) = oneshot::channel();
        if self.control.send(Control::Outage(outage, done)).is_err() {
            return;
        }
        if let Ok(Err(e)) = answer.await {
            panic!("set_outage: could not listen on {} again: {e}", self.addr);
        }
    }

    /// Every Bot API request so far, oldest first.
    pub fn calls(&self) -> Vec<Call> {
        self.shared.lock().calls.clone()
    }

    /// The requests for one method (documented spelling).
    pub fn calls_to(&self, method: &str) -> Vec<Call> {
        self.shared
            .lock()
            .calls
            .iter()
            .filter(|c| c.method == method)
            .cloned()
            .collect()
    }

    /// Forgets the call log (long benchmarks).
    pub fn clear_calls(&self) {
        self.shared.lock().calls.clear();
    }

    /// A chat's current messages (injected and bot-sent, edits applied,
    /// deleted ones gone), in message id order.
    pub fn messages(&self, chat_id: i64) -> Vec<Value> {
        self.shared
            .lock()
            .chats
            .get(&chat_id)
            .map(|c| c.messages.values().map(|s| s.message.clone()).collect())
            .unwrap_or_default()
    }

    /// One stored message.
    pub fn message(&self, chat_id: i64, message_id: i64) -> Option<Value> {
        let st = self.shared.lock();
        let stored = st.chats.get(&chat_id)?.messages.get(&message_id)?;
        Some(stored.message.clone())
    }

    /// The bot's reaction on a message, as emoji.
    pub fn bot_reactions(&self, chat_id: i64, message_id: i64) -> Vec<String> {
        let st = self.shared.lock();
        st.chats
            .get(&chat_id)
            .and_then(|c| c.messages.get(&message_id))
            .map(|s| {
                s.bot_reaction
                    .iter()
                    .filter_map(|r| r.get("emoji").and_then(Value::as_str))
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The bytes behind a file id (any size of a photo).
    pub fn file_bytes(&self, file_id: &str) -> Option<Vec<u8>> {
        let st = self.shared.lock();
        st.files.get(file_id).map(|f| f.bytes.as_ref().clone())
    }

    /// Updates queued and not yet confirmed (nor expired).
    pub fn pending_updates(&self) -> usize {
        self.shared.lock().updates.pending(now_unix())
    }

    /// The webhook URL, while one is set.
    pub fn webhook_url(&self) -> Option<String> {
        let st = self.shared.lock();
        st.webhook.as_ref().map(|w| w.url.clone())
    }

    /// Makes a stored message older (its `date`, and `edit_date` if any),
    /// e.g. past deleteMessage's 48 hours.
    ///
    /// # Panics
    /// If the message does not exist.
    pub fn age_message(&self, chat_id: i64, message_id: i64, by: Duration) {
        let secs = by.as_secs() as i64;
        self.with_chat(chat_id, |chat| {
            let stored = chat
                .messages
                .get_mut(&message_id)
                .unwrap_or_else(|| panic!("message {message_id} is not in chat {chat_id}"));
            for key in ["date", "edit_date"] {
                if let Some(date) = stored.message.get(key).and_then(Value::as_i64) {
                    stored.message[key] = (date - secs).into();
                }
            }
        });
    }

    /// Makes every queued update older, e.g. past the 24 hour expiry.
    pub fn age_updates(&self, by: Duration) {
        self.shared.lock().updates.age(by.as_secs() as i64);
    }

    /// Ends a waiting long poll (its connection is gone by then), so its
    /// task does not linger until its timeout.
    fn end_long_poll(&self) {
        self.shared
            .lock()
            .updates
            .abort_long_poll(updates::SHUT_DOWN);
        self.shared.wake.notify_waiters();
    }

    /// Stops the server: the port closes and open connections are dropped.
    pub async fn stop(mut self) {
        self.end_long_poll();
        let (done, finished) = oneshot::channel();
        if self.control.send(Control::Stop(done)).is_ok() {
            let _ = finished.await;
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}
