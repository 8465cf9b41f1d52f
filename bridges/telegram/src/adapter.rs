//! [`TelegramAdapter`]: receives with `getUpdates` long polling and sends
//! with the Bot API's send, edit, delete and reaction methods.
//!
//! # Receiving
//! The offset moves past an update only in the same commit as the events
//! it gave (the `offset` cursor), so a crash re-reads it and the hub drops
//! what it already has. An album arrives as several updates sharing a
//! `media_group_id`; when a poll ends inside one, its updates are left
//! unconfirmed and polled again after a short wait, so the album is
//! committed as ONE message.
//!
//! # Sending
//! One Bot API call per attempt (two or more for several files). Failures
//! are classified from Telegram's own answer: 429 waits exactly
//! `retry_after`; `migrate_to_chat_id` moves the channel; 401 or a refused
//! connection marks the account down; other 4xx are permanent with
//! Telegram's description; 5xx and timeouts are retried.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};
use switchboard_core::{
    AccountId, Adapter, Attachment, AttachmentKind, Batch, BlobRef, Capabilities, ChannelId,
    Cursor, DeliverError, Delivered, EventKind, Host, Outbound, Pacing, Reactions, Receipt,
    ReceiveHealth, RemoteId, RichText, RunError, SendError, Shutdown, TextLimit, TextUnit,
    DEFAULT_NICK_FORMAT,
};

use crate::client::{CallError, Client};
use crate::config::{Receive, TelegramConfig};
use crate::convert::{self, Channels, Draft, PendingFile};
use crate::wire::{File, Update, User};

/// The reactions a bot may set (the Bot API's `ReactionTypeEmoji` list).
pub const REACTIONS: &[&str] = &[
    "👍",
    "👎",
    "❤",
    "🔥",
    "🥰",
    "👏",
    "😁",
    "🤔",
    "🤯",
    "😱",
    "🤬",
    "😢",
    "🎉",
    "🤩",
    "🤮",
    "💩",
    "🙏",
    "👌",
    "🕊",
    "🤡",
    "🥱",
    "🥴",
    "😍",
    "🐳",
    "❤\u{200d}🔥",
    "🌚",
    "🌭",
    "💯",
    "🤣",
    "⚡",
    "🍌",
    "🏆",
    "💔",
    "🤨",
    "😐",
    "🍓",
    "🍾",
    "💋",
    "🖕",
    "😈",
    "😴",
    "😭",
    "🤓",
    "👻",
    "👨\u{200d}💻",
    "👀",
    "🎃",
    "🙈",
    "😇",
    "😨",
    "🤝",
    "✍",
    "🤗",
    "🫡",
    "🎅",
    "🎄",
    "☃",
    "💅",
    "🤪",
    "🗿",
    "🆒",
    "💘",
    "🙉",
    "🦄",
    "😘",
    "💊",
    "🙊",
    "😎",
    "👾",
    "🤷\u{200d}♂",
    "🤷",
    "🤷\u{200d}♀",
    "😡",
];

/// Updates asked for; `message_reaction` must be named to be delivered.
const ALLOWED_UPDATES: &[&str] = &[
    "message",
    "edited_message",
    "channel_post",
    "edited_channel_post",
    "message_reaction",
];

/// Room kept for the author prefix in each message: the hub splits texts
/// at the limit minus this, and a prefix is cut to fit in it.
const NICK_BUDGET: usize = 96;
/// Telegram's limits, in UTF-16 code units.
const TEXT_MAX: usize = 4096;
const CAPTION_MAX: usize = 1024;
/// Bots upload up to 50 MB.
const UPLOAD_MAX: u64 = 50 * 1024 * 1024;
/// Longest wait for a poll beyond its own timeout.
const POLL_GRACE: Duration = Duration::from_secs(15);
/// How long a fetched avatar is used before it is fetched again.
const AVATAR_TTL: Duration = Duration::from_secs(3600);
/// How long a call other than a poll or an upload may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// One Telegram bot account.
pub struct TelegramAdapter {
    cfg: TelegramConfig,
    client: Client,
    /// The hub, kept from `run` for reading blobs when sending.
    /// Cleared when `run` ends: the host holds the hub, which holds this
    /// adapter, and the cycle would keep the hub alive past shutdown.
    host: Mutex<Option<Arc<dyn Host>>>,
    /// The bot itself, from `getMe`: its own updates are ignored.
    me: OnceLock<User>,
    /// Forum topics that are channels of their own (`<chat>/<thread>`).
    topics: HashSet<String>,
    /// Avatars fetched this run, by user id (`None`: the user has none).
    /// Each entry is fetched again after [`AVATAR_TTL`]: a changed photo
    /// shows, and storing it again keeps the blob from retention.
    avatars: Mutex<HashMap<String, (Option<BlobRef>, std::time::Instant)>>,
    /// Chats no gateway lists that were named in the log once already.
    unlisted: Mutex<HashSet<ChannelId>>,
    /// Itself, for the webhook's ingress handler.
    this: Weak<TelegramAdapter>,
}

impl TelegramAdapter {
    /// An adapter for `cfg`; `channels` are the account's channels in the
    /// gateways (a forum topic listed as `<chat>/<thread>` gets its own).
    #[must_use]
    pub fn new(cfg: TelegramConfig, channels: impl IntoIterator<Item = ChannelId>) -> Arc<Self> {
        let client = Client::new(&cfg.api_url, &cfg.token);
        let topics = channels
            .into_iter()
            .map(|c| c.as_str().to_owned())
            .filter(|c| c.contains('/'))
            .collect();
        Arc::new_cyclic(|this| Self {
            this: this.clone(),
            cfg,
            client,
            host: Mutex::new(None),
            me: OnceLock::new(),
            topics,
            avatars: Mutex::new(HashMap::new()),
            unlisted: Mutex::new(HashSet::new()),
        })
    }

    /// The Bot API client (for tools and tests).
    #[must_use]
    pub fn client(&self) -> &Client {
        &self.client
    }
}

impl Channels for TelegramAdapter {
    fn channel_for(&self, chat: i64, thread: Option<i64>) -> (ChannelId, Option<String>) {
        if let Some(t) = thread {
            let topic = format!("{chat}/{t}");
            if self.topics.contains(&topic) {
                return (ChannelId::new(topic).expect("digits and a slash"), None);
            }
        }
        (
            ChannelId::new(chat.to_string()).expect("digits"),
            thread.map(|t| t.to_string()),
        )
    }
}

fn nonzero(d: Duration) -> Option<Duration> {
    (!d.is_zero()).then_some(d)
}

/// Sleeps `d`, or returns false when `shutdown` came first.
async fn nap(d: Duration, shutdown: &mut Shutdown) -> bool {
    tokio::select! {
        () = tokio::time::sleep(d) => true,
        () = shutdown => false,
    }
}

#[async_trait]
impl Adapter for TelegramAdapter {
    fn account(&self) -> &AccountId {
        &self.cfg.account
    }

    fn ingress(&self) -> Option<(std::net::SocketAddr, Arc<dyn switchboard_core::Ingress>)> {
        match &self.cfg.receive {
            Receive::Poll => None,
            Receive::Webhook { bind, secret, .. } => Some((
                *bind,
                Arc::new(Webhook {
                    adapter: self.this.clone(),
                    secret: secret.clone(),
                }),
            )),
        }
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            sticker_formats: None,
            edits: true,
            edit_window: None,
            deletes: true,
            // Telegram deletes a message for everyone only within 48 h.
            delete_window: Some(Duration::from_secs(48 * 3600)),
            reactions: Reactions::OneOf(REACTIONS.iter().map(|s| (*s).to_owned()).collect()),
            replies: true,
            threads: true,
            formatting: true,
            text: TextLimit {
                max: TEXT_MAX - NICK_BUDGET,
                unit: TextUnit::Utf16,
            },
            caption: TextLimit {
                max: CAPTION_MAX - NICK_BUDGET,
                unit: TextUnit::Utf16,
            },
            max_upload_bytes: UPLOAD_MAX,
            renders_time: false,
            pacing: Pacing {
                per_channel: nonzero(self.cfg.pace_per_chat),
                per_account: nonzero(self.cfg.pace_per_bot),
            },
            min_upload_rate: 256 * 1024,
        }
    }

    async fn run(self: Arc<Self>, host: Arc<dyn Host>, shutdown: Shutdown) -> Result<(), RunError> {
        *self.host.lock().expect("host lock") = Some(host.clone());
        let result = self.clone().receive(host.as_ref(), shutdown).await;
        self.host.lock().expect("host lock").take();
        result
    }

    async fn send(&self, op: &Outbound, _idempotency_key: &str) -> Result<Receipt, SendError> {
        let (chat, thread) = split_channel(&op.channel)?;
        let template = op.nick_format.as_deref().unwrap_or(DEFAULT_NICK_FORMAT);
        let same_network = op.event.origin.account.network() == crate::NETWORK;
        let with_nick = |body: &RichText| -> RichText {
            switchboard_core::with_nick_within(template, op, body, NICK_BUDGET, TextUnit::Utf16)
        };
        let first_target = op.target.as_ref().map(|t| t.first().as_str().to_owned());
        match &op.event.kind {
            EventKind::Message {
                body,
                attachments,
                reply_to,
            } => {
                let text = with_nick(body);
                let reply = reply_to.as_ref().and(first_target.as_deref());
                if attachments.is_empty() {
                    let id = self
                        .send_text(chat, thread, &text, same_network, reply)
                        .await?;
                    return Ok(Receipt::one(id));
                }
                self.send_files(chat, thread, &text, same_network, reply, attachments)
                    .await
            }
            EventKind::Notice { body } => {
                let id = self.send_text(chat, thread, body, false, None).await?;
                Ok(Receipt::one(id))
            }
            EventKind::Edit { body, .. } => {
                let Some(target) = &op.target else {
                    // The hub turns such an edit into a copy; nothing to do.
                    return Ok(Receipt::none());
                };
                let text = with_nick(body);
                let entities = convert::rich_to_entities(&text, same_network);
                let media = matches!(&target.event.kind, EventKind::Message { attachments, .. } if !attachments.is_empty());
                let (method, params) = if media {
                    (
                        "editMessageCaption",
                        json!({"chat_id": chat, "message_id": num(target.first()), "caption": text.text, "caption_entities": entities}),
                    )
                } else {
                    (
                        "editMessageText",
                        json!({"chat_id": chat, "message_id": num(target.first()), "text": text.text, "entities": entities}),
                    )
                };
                match self
                    .client
                    .call::<Value>(method, &params, CALL_TIMEOUT)
                    .await
                {
                    Ok(_) => Ok(Receipt::none()),
                    // The same edit again (a retry whose answer was lost).
                    Err(CallError::Api {
                        code: 400,
                        description,
                        ..
                    }) if description.contains("message is not modified") => Ok(Receipt::none()),
                    Err(e) => Err(classify(e, &op.channel, thread)),
                }
            }
            EventKind::Delete { .. } => {
                let Some(target) = &op.target else {
                    return Ok(Receipt::none());
                };
                for id in &target.ids {
                    let params = json!({"chat_id": chat, "message_id": num(id)});
                    match self
                        .client
                        .call::<Value>("deleteMessage", &params, CALL_TIMEOUT)
                        .await
                    {
                        Ok(_) => {}
                        // Gone already (a retry, or deleted on Telegram).
                        Err(CallError::Api {
                            code: 400,
                            description,
                            ..
                        }) if description.contains("message to delete not found") => {}
                        Err(e) => return Err(classify(e, &op.channel, thread)),
                    }
                }
                Ok(Receipt::none())
            }
            EventKind::Reaction { emoji, removed, .. } => {
                let Some(target) = &op.target else {
                    return Ok(Receipt::none());
                };
                // A bot holds one reaction per message: the latest wins,
                // and taking one back clears it.
                let reaction = if *removed {
                    json!([])
                } else {
                    json!([{"type": "emoji", "emoji": telegram_emoji(emoji)}])
                };
                let params = json!({"chat_id": chat, "message_id": num(target.first()), "reaction": reaction});
                self.client
                    .call::<Value>("setMessageReaction", &params, CALL_TIMEOUT)
                    .await
                    .map_err(|e| classify(e, &op.channel, thread))?;
                Ok(Receipt::none())
            }
            // Joins and leaves are not posted into Telegram chats.
            _ => Ok(Receipt::none()),
        }
    }
}

impl TelegramAdapter {
    /// The receive loop: long polling, or the webhook registered and
    /// served by the ingress.
    async fn receive(
        self: Arc<Self>,
        host: &dyn Host,
        mut shutdown: Shutdown,
    ) -> Result<(), RunError> {
        let Some(me) = self.hello(host, &mut shutdown).await else {
            return Ok(());
        };
        let _ = self.me.set(me);
        if let Receive::Webhook { url, secret, .. } = &self.cfg.receive {
            return self.register_webhook(host, url, secret, shutdown).await;
        }
        // Polling takes the place of a webhook set earlier (Telegram
        // refuses getUpdates while one is set); its queued updates stay.
        if let Err(e) = self
            .client
            .call::<Value>(
                "deleteWebhook",
                &json!({"drop_pending_updates": false}),
                CALL_TIMEOUT,
            )
            .await
        {
            tracing::debug!(account = %self.cfg.account, error = %e, "deleteWebhook failed; polling will say why.");
        }
        let mut offset: i64 = loop {
            match host.cursor("offset").await {
                Ok(v) => break v.and_then(|v| v.parse().ok()).unwrap_or(0),
                Err(DeliverError::Stopping) => return Ok(()),
                Err(e) => {
                    tracing::warn!(account = %self.cfg.account, error = %e, "Cannot read the update offset; retrying.");
                    if !nap(Duration::from_secs(1), &mut shutdown).await {
                        return Ok(());
                    }
                }
            }
        };
        let mut backoff = Duration::from_secs(1);
        // The album whose updates were left unconfirmed by the last poll.
        let mut held: Option<String> = None;
        loop {
            let wait = if held.is_some() {
                1
            } else {
                self.cfg.poll_timeout.as_secs()
            };
            let params = json!({
                "offset": offset,
                "limit": 100,
                "timeout": wait,
                "allowed_updates": ALLOWED_UPDATES,
            });
            let polled = tokio::select! {
                r = self.client.call::<Vec<Value>>("getUpdates", &params, Duration::from_secs(wait) + POLL_GRACE) => r,
                () = &mut shutdown => return Ok(()),
            };
            let raw = match polled {
                Ok(raw) => {
                    backoff = Duration::from_secs(1);
                    host.health(ReceiveHealth::Connected);
                    raw
                }
                Err(e) => {
                    let wait = self.report_poll_error(host, &e, backoff);
                    if !nap(wait, &mut shutdown).await {
                        return Ok(());
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    continue;
                }
            };
            let (updates, next) = decode_updates(&self.cfg.account, raw, offset);
            // An album still arriving: confirm what comes before it only.
            let (take, next, hold) = match trailing_album(&updates) {
                Some((first, group)) if held.as_deref() != Some(group.as_str()) => {
                    (first, updates[first].update_id, Some(group))
                }
                _ => (updates.len(), next, None),
            };
            held = hold;
            if next == offset && take == 0 {
                continue;
            }
            let batch = match self.translate(host, &updates[..take], &mut shutdown).await {
                Some(b) => b,
                None => return Ok(()),
            };
            let Some(()) = self.commit(host, batch, next, &mut shutdown).await else {
                return Ok(());
            };
            offset = next;
        }
    }

    /// `getMe` until it answers; warns when privacy mode hides messages.
    async fn hello(&self, host: &dyn Host, shutdown: &mut Shutdown) -> Option<User> {
        let mut backoff = Duration::from_secs(1);
        let none = json!({});
        loop {
            let r = tokio::select! {
                r = self.client.call::<User>("getMe", &none, CALL_TIMEOUT) => r,
                () = &mut *shutdown => return None,
            };
            match r {
                Ok(me) => {
                    if me.can_read_all_group_messages == Some(false) {
                        tracing::warn!(
                            account = %self.cfg.account,
                            bot = me.username.as_deref().unwrap_or_default(),
                            "Privacy mode is on: in groups this bot sees only commands and replies to it. \
                             Turn it off in @BotFather (/setprivacy, Disable), then remove the bot from each group and add it again."
                        );
                    }
                    tracing::info!(account = %self.cfg.account, bot = me.username.as_deref().unwrap_or_default(), "Connected to Telegram.");
                    return Some(me);
                }
                Err(e) => {
                    let wait = self.report_poll_error(host, &e, backoff);
                    if !nap(wait, shutdown).await {
                        return None;
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    /// Webhook mode: points Telegram at `url` (retrying until it agrees),
    /// then waits; the updates arrive through the ingress listener. The
    /// webhook stays set at shutdown, so Telegram keeps updates (for 24 h)
    /// while switchboard is away.
    async fn register_webhook(
        &self,
        host: &dyn Host,
        url: &str,
        secret: &str,
        mut shutdown: Shutdown,
    ) -> Result<(), RunError> {
        let params = json!({
            "url": url,
            "secret_token": secret,
            "allowed_updates": ALLOWED_UPDATES,
            "drop_pending_updates": false,
        });
        let mut backoff = Duration::from_secs(1);
        loop {
            let r = tokio::select! {
                r = self.client.call::<Value>("setWebhook", &params, CALL_TIMEOUT) => r,
                () = &mut shutdown => return Ok(()),
            };
            match r {
                Ok(_) => break,
                Err(e) => {
                    let wait = self.report_poll_error(host, &e, backoff);
                    if !nap(wait, &mut shutdown).await {
                        return Ok(());
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
        tracing::info!(account = %self.cfg.account, %url, "Telegram delivers updates to the webhook.");
        host.health(ReceiveHealth::Connected);
        shutdown.await;
        Ok(())
    }

    /// Reports a failed poll to the health board and says how long to wait.
    fn report_poll_error(&self, host: &dyn Host, e: &CallError, backoff: Duration) -> Duration {
        let account = &self.cfg.account;
        match e {
            CallError::Api {
                code: 401 | 404,
                description,
                ..
            } => {
                let what = format!(
                    "Telegram refused the bot token ({description}); check the token from @BotFather in [{account}]"
                );
                tracing::error!(%account, "{what}");
                host.health(ReceiveHealth::NeedsAction { what });
                backoff.max(Duration::from_secs(30))
            }
            CallError::Api {
                code: 409,
                description,
                ..
            } => {
                let what = format!(
                    "another client receives this bot's updates ({description}): stop the other switchboard or bot instance, or delete its webhook"
                );
                tracing::error!(%account, "{what}");
                host.health(ReceiveHealth::NeedsAction { what });
                backoff.max(Duration::from_secs(5))
            }
            CallError::Api {
                code: 429,
                retry_after,
                ..
            } => {
                let wait = Duration::from_secs(retry_after.unwrap_or(1));
                host.health(ReceiveHealth::Reconnecting {
                    error: e.to_string(),
                });
                tracing::warn!(%account, error = %e, "Polling rate-limited.");
                wait
            }
            _ => {
                tracing::warn!(%account, error = %e, "Polling Telegram failed; retrying.");
                host.health(ReceiveHealth::Reconnecting {
                    error: e.to_string(),
                });
                backoff
            }
        }
    }

    /// Events for decoded updates: albums merged into one message, files
    /// fetched into the blob store. `None` on shutdown.
    async fn translate(
        &self,
        host: &dyn Host,
        updates: &[Decoded],
        shutdown: &mut Shutdown,
    ) -> Option<Vec<switchboard_core::NewEvent>> {
        let account = &self.cfg.account;
        let me = self.me.get().map(|u| u.id);
        let mut drafts: Vec<Draft> = Vec::new();
        let mut albums: HashMap<(i64, String), usize> = HashMap::new();
        for d in updates {
            let Some(u) = &d.update else { continue };
            if let Some(m) = u.message.as_ref().or(u.channel_post.as_ref()) {
                if m.from.as_ref().map(|f| f.id) == me {
                    continue;
                }
                if let Some(to) = m.migrate_to_chat_id {
                    self.follow_migration(host, m.chat.id, to, shutdown).await?;
                    continue;
                }
                let Some(draft) = convert::message_draft(account, self, m, false) else {
                    tracing::debug!(%account, update = u.update_id, "Update of a kind not bridged; skipped.");
                    continue;
                };
                if let Some(group) = &m.media_group_id {
                    if let Some(&i) = albums.get(&(m.chat.id, group.clone())) {
                        merge_album_part(&mut drafts[i], draft);
                        continue;
                    }
                    albums.insert((m.chat.id, group.clone()), drafts.len());
                }
                drafts.push(draft);
            } else if let Some(m) = u.edited_message.as_ref().or(u.edited_channel_post.as_ref()) {
                if m.from.as_ref().map(|f| f.id) == me {
                    continue;
                }
                if let Some(draft) = convert::message_draft(account, self, m, true) {
                    drafts.push(draft);
                }
            } else if let Some(r) = &u.message_reaction {
                if r.user.as_ref().map(|f| f.id) == me {
                    continue;
                }
                drafts.extend(convert::reaction_events(account, self, r).into_iter().map(
                    |event| Draft {
                        event,
                        files: Vec::new(),
                    },
                ));
            } else {
                tracing::debug!(%account, update = u.update_id, "Update of a kind not bridged; skipped.");
            }
        }
        let mut events = Vec::with_capacity(drafts.len());
        for mut d in drafts {
            if !d.files.is_empty() {
                let mut fetched = Vec::new();
                let mut notes = Vec::new();
                for f in &d.files {
                    match self.fetch(host, f, shutdown).await? {
                        Ok(a) => fetched.push(a),
                        Err(note) => notes.push(note),
                    }
                }
                if let EventKind::Message {
                    body, attachments, ..
                } = &mut d.event.kind
                {
                    *attachments = fetched;
                    for note in notes {
                        if !body.text.is_empty() {
                            body.text.push('\n');
                        }
                        body.text.push_str(&note);
                    }
                }
            }
            if d.event.author.avatar.is_none() && matches!(d.event.kind, EventKind::Message { .. })
            {
                d.event.author.avatar = self.avatar(host, &d.event.author.remote_id).await;
            }
            events.push(d.event);
        }
        Some(events)
    }

    /// Commits events and the offset after them; `None` on shutdown.
    async fn commit(
        &self,
        host: &dyn Host,
        events: Vec<switchboard_core::NewEvent>,
        next: i64,
        shutdown: &mut Shutdown,
    ) -> Option<()> {
        let channels: Vec<ChannelId> = events.iter().map(|e| e.origin.channel.clone()).collect();
        let batch = Batch {
            events,
            cursor: Some(Cursor {
                name: "offset".into(),
                value: next.to_string(),
            }),
        };
        loop {
            match host.deliver(batch.clone()).await {
                Ok(answers) => {
                    for (a, channel) in answers.into_iter().zip(&channels) {
                        match a {
                            Delivered::Rejected(reason) => {
                                tracing::warn!(account = %self.cfg.account, %channel, %reason, "Telegram update rejected by the hub; skipped.");
                            }
                            // How an admin finds a group's id: write there.
                            Delivered::Ignored
                                if self
                                    .unlisted
                                    .lock()
                                    .expect("unlisted lock")
                                    .insert(channel.clone()) =>
                            {
                                tracing::info!(account = %self.cfg.account, %channel, "A message from a chat no gateway lists; add it as a gateway member (channel = \"{channel}\") to bridge it.");
                            }
                            _ => {}
                        }
                    }
                    return Some(());
                }
                Err(DeliverError::Stopping) => return None,
                Err(e) => {
                    // Not confirmed to Telegram: the updates stay there.
                    tracing::warn!(account = %self.cfg.account, error = %e, "Cannot commit updates; holding the offset.");
                    if !nap(Duration::from_secs(1), shutdown).await {
                        return None;
                    }
                }
            }
        }
    }

    /// A group became a supergroup: its messages now come from `to`.
    async fn follow_migration(
        &self,
        host: &dyn Host,
        from: i64,
        to: i64,
        shutdown: &mut Shutdown,
    ) -> Option<()> {
        let (Ok(from), Ok(to)) = (
            ChannelId::new(from.to_string()),
            ChannelId::new(to.to_string()),
        ) else {
            return Some(());
        };
        loop {
            match host.moved(&from, &to).await {
                Ok(()) => return Some(()),
                Err(DeliverError::Stopping) => return None,
                Err(e) => {
                    tracing::warn!(account = %self.cfg.account, error = %e, "Cannot record the chat's migration; retrying.");
                    if !nap(Duration::from_secs(1), shutdown).await {
                        return None;
                    }
                }
            }
        }
    }

    /// Downloads one file into the blob store. `Ok(Err(note))` when it
    /// cannot be had (too large, gone): the message says so instead.
    /// `None` on shutdown.
    async fn fetch(
        &self,
        host: &dyn Host,
        f: &PendingFile,
        shutdown: &mut Shutdown,
    ) -> Option<Result<Attachment, String>> {
        let max = self.cfg.max_download;
        let too_big = || match f.size {
            Some(size) => format!(
                "[file not bridged: {} ({}) is over the {} download limit]",
                f.name,
                human_size(size),
                human_size(max)
            ),
            None => format!(
                "[file not bridged: {} is over the {} download limit]",
                f.name,
                human_size(max)
            ),
        };
        if f.size.is_some_and(|s| s > max) {
            return Some(Err(too_big()));
        }
        let mut attempt = 0;
        let bytes = loop {
            attempt += 1;
            let r = async {
                let file: File = self
                    .client
                    .call("getFile", &json!({"file_id": f.file_id}), CALL_TIMEOUT)
                    .await?;
                let path = file
                    .file_path
                    .ok_or_else(|| CallError::Decode("no file_path".into()))?;
                self.client
                    .download(&path, max, Duration::from_secs(300))
                    .await
            };
            let r = tokio::select! {
                r = r => r,
                () = &mut *shutdown => return None,
            };
            match r {
                Ok(b) => break b,
                Err(CallError::Api {
                    code: 400 | 413,
                    description,
                    ..
                }) if description.contains("too big") || description.contains("larger than") => {
                    return Some(Err(too_big()));
                }
                Err(e) if attempt < 3 => {
                    tracing::warn!(account = %self.cfg.account, error = %e, "Fetching a file failed; retrying.");
                    if !nap(Duration::from_secs(1), shutdown).await {
                        return None;
                    }
                }
                Err(e) => {
                    tracing::warn!(account = %self.cfg.account, error = %e, "A file could not be fetched; the message says so.");
                    return Some(Err(format!(
                        "[file not bridged: {} could not be fetched from Telegram]",
                        f.name
                    )));
                }
            }
        };
        let size = bytes.len() as u64;
        let content = loop {
            match host.put_blob(&f.mime, bytes.clone()).await {
                Ok(b) => break b,
                Err(DeliverError::Stopping) => return None,
                Err(e) => {
                    tracing::warn!(account = %self.cfg.account, error = %e, "Cannot store a file; retrying.");
                    if !nap(Duration::from_secs(1), shutdown).await {
                        return None;
                    }
                }
            }
        };
        Some(Ok(Attachment {
            alt: None,
            kind: f.kind,
            name: f.name.clone(),
            mime: f.mime.clone(),
            size,
            content,
        }))
    }

    /// A user's profile photo, fetched once per user and [`AVATAR_TTL`],
    /// kept as a blob. Best effort: a failure leaves the author without one.
    async fn avatar(&self, host: &dyn Host, user: &str) -> Option<switchboard_core::Avatar> {
        if let Some((known, at)) = self.avatars.lock().expect("avatars lock").get(user) {
            if at.elapsed() < AVATAR_TTL {
                return known.clone().map(switchboard_core::Avatar::Blob);
            }
        }
        let id: i64 = user.parse().ok().filter(|id| *id > 0)?;
        let got = async {
            let photos: crate::wire::ProfilePhotos = self
                .client
                .call(
                    "getUserProfilePhotos",
                    &json!({"user_id": id, "limit": 1}),
                    CALL_TIMEOUT,
                )
                .await
                .ok()?;
            let Some(photo) = photos.photos.first().and_then(|sizes| sizes.last()) else {
                return Some(None);
            };
            let file: File = self
                .client
                .call("getFile", &json!({"file_id": photo.file_id}), CALL_TIMEOUT)
                .await
                .ok()?;
            let bytes = self
                .client
                .download(
                    file.file_path.as_deref()?,
                    self.cfg.max_download,
                    CALL_TIMEOUT,
                )
                .await
                .ok()?;
            Some(host.put_blob("image/jpeg", bytes).await.ok())
        }
        .await;
        // A failed lookup is tried again with the author's next message.
        let found = got?;
        self.avatars
            .lock()
            .expect("avatars lock")
            .insert(user.to_owned(), (found.clone(), std::time::Instant::now()));
        found.map(switchboard_core::Avatar::Blob)
    }

    async fn send_text(
        &self,
        chat: i64,
        thread: Option<i64>,
        text: &RichText,
        same_network: bool,
        reply: Option<&str>,
    ) -> Result<RemoteId, SendError> {
        let mut params = json!({
            "chat_id": chat,
            "text": text.text,
            "entities": convert::rich_to_entities(text, same_network),
            "link_preview_options": {"is_disabled": true},
        });
        if let Some(t) = thread {
            params["message_thread_id"] = json!(t);
        }
        if let Some(r) = reply.and_then(|r| r.parse::<i64>().ok()) {
            params["reply_parameters"] =
                json!({"message_id": r, "allow_sending_without_reply": true});
        }
        let sent: Value = self
            .client
            .call("sendMessage", &params, CALL_TIMEOUT)
            .await
            .map_err(|e| classify(e, &channel_of(chat, thread), thread))?;
        Ok(message_id_of(&sent))
    }

    /// Sends files: photos and videos together as albums, documents with
    /// documents, audio with audio (what `sendMediaGroup` allows), voice
    /// notes and stickers one by one. The caption goes with the first.
    async fn send_files(
        &self,
        chat: i64,
        thread: Option<i64>,
        caption: &RichText,
        same_network: bool,
        reply: Option<&str>,
        attachments: &[Attachment],
    ) -> Result<Receipt, SendError> {
        let host = self
            .host
            .lock()
            .expect("host lock")
            .clone()
            .ok_or_else(|| SendError::transient("the adapter is not running", None))?;
        let mut groups: Vec<Vec<(&Attachment, &'static str)>> = Vec::new();
        let mut by_kind: HashMap<&'static str, usize> = HashMap::new();
        for a in attachments {
            let (method_kind, group) = media_kind(a);
            match group {
                Some(g) => {
                    let i = *by_kind.entry(g).or_insert_with(|| {
                        groups.push(Vec::new());
                        groups.len() - 1
                    });
                    groups[i].push((a, method_kind));
                }
                None => groups.push(vec![(a, method_kind)]),
            }
        }
        let channel = channel_of(chat, thread);
        let mut ids = Vec::new();
        let mut first = true;
        for group in groups {
            for chunk in group.chunks(10) {
                let mut form = reqwest::multipart::Form::new().text("chat_id", chat.to_string());
                if let Some(t) = thread {
                    form = form.text("message_thread_id", t.to_string());
                }
                if first {
                    if let Some(r) = reply {
                        form = form.text(
                            "reply_parameters",
                            json!({"message_id": r.parse::<i64>().unwrap_or(0), "allow_sending_without_reply": true}).to_string(),
                        );
                    }
                }
                let caption = first.then_some(caption).filter(|c| !c.text.is_empty());
                let entities = caption.map(|c| convert::rich_to_entities(c, same_network));
                let mut parts = Vec::with_capacity(chunk.len());
                for (a, _) in chunk {
                    let bytes = host
                        .blob(&a.content)
                        .await
                        .map_err(|e| SendError::transient(e.to_string(), None))?
                        .ok_or_else(|| {
                            SendError::permanent(format!("the file {} is no longer stored", a.name))
                        })?;
                    let part = reqwest::multipart::Part::bytes(bytes)
                        .file_name(a.name.clone())
                        .mime_str(&a.mime)
                        .unwrap_or_else(|_| reqwest::multipart::Part::bytes(Vec::new()));
                    parts.push(part);
                }
                let result: Value = if chunk.len() == 1 {
                    let kind = chunk[0].1;
                    form = form.part(kind.to_owned(), parts.pop().expect("one part"));
                    if let (Some(c), Some(e)) = (caption, &entities) {
                        form = form
                            .text("caption", c.text.clone())
                            .text("caption_entities", json!(e).to_string());
                    }
                    let method = match kind {
                        "photo" => "sendPhoto",
                        "video" => "sendVideo",
                        "audio" => "sendAudio",
                        "voice" => "sendVoice",
                        _ => "sendDocument",
                    };
                    self.client
                        .call_multipart(method, form, upload_timeout(chunk))
                        .await
                        .map_err(|e| classify(e, &channel, thread))?
                } else {
                    let media: Vec<Value> = chunk
                        .iter()
                        .enumerate()
                        .map(|(i, (_, kind))| {
                            let mut m = json!({"type": kind, "media": format!("attach://f{i}")});
                            if i == 0 {
                                if let (Some(c), Some(e)) = (caption, &entities) {
                                    m["caption"] = json!(c.text);
                                    m["caption_entities"] = json!(e);
                                }
                            }
                            m
                        })
                        .collect();
                    form = form.text("media", Value::Array(media).to_string());
                    for (i, part) in parts.into_iter().enumerate() {
                        form = form.part(format!("f{i}"), part);
                    }
                    self.client
                        .call_multipart("sendMediaGroup", form, upload_timeout(chunk))
                        .await
                        .map_err(|e| classify(e, &channel, thread))?
                };
                match result {
                    Value::Array(list) => ids.extend(list.iter().map(message_id_of)),
                    one => ids.push(message_id_of(&one)),
                }
                first = false;
            }
        }
        Ok(Receipt { ids })
    }
}

/// The webhook receiver: Telegram POSTs one update per request and retries
/// until it gets a 2xx, so a 200 is answered only after the commit.
struct Webhook {
    adapter: Weak<TelegramAdapter>,
    secret: String,
}

/// Equal, in time that does not depend on where they differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[async_trait]
impl switchboard_core::Ingress for Webhook {
    async fn handle(
        &self,
        host: &dyn Host,
        req: switchboard_core::IngressRequest,
    ) -> switchboard_core::IngressResponse {
        use switchboard_core::IngressResponse;
        let given = req.header("x-telegram-bot-api-secret-token").unwrap_or("");
        if !same_secret(given.as_bytes(), self.secret.as_bytes()) {
            return IngressResponse::json(401, &json!({"error": "wrong or missing secret token"}));
        }
        if req.method != "POST" {
            return IngressResponse::json(405, &json!({"error": "Telegram POSTs updates"}));
        }
        let Some(adapter) = self.adapter.upgrade() else {
            return IngressResponse::json(503, &json!({"error": "shutting down"}));
        };
        let update: Value = match serde_json::from_slice(&req.body) {
            Ok(v) => v,
            Err(e) => {
                // Telegram would send it again forever: acknowledge it.
                tracing::warn!(account = %adapter.cfg.account, error = %e, "A webhook call that is not JSON; skipped.");
                return IngressResponse::json(200, &json!({}));
            }
        };
        let (updates, _) = decode_updates(&adapter.cfg.account, vec![update], 0);
        let mut forever: Shutdown = Box::pin(std::future::pending());
        let Some(events) = adapter.translate(host, &updates, &mut forever).await else {
            return IngressResponse::json(503, &json!({"error": "shutting down"}));
        };
        if events.is_empty() {
            return IngressResponse::json(200, &json!({}));
        }
        match host
            .deliver(Batch {
                events,
                cursor: None,
            })
            .await
        {
            Ok(_) => IngressResponse::json(200, &json!({})),
            // Not committed: Telegram sends it again.
            Err(e) => IngressResponse::json(503, &json!({"error": e.to_string()})),
        }
    }
}

/// An update as polled: decoded, or `None` when malformed (logged, and
/// confirmed like any other so it never blocks the poller).
pub struct Decoded {
    update_id: i64,
    update: Option<Update>,
}

/// Decodes polled updates one by one; returns them and the offset after
/// them.
fn decode_updates(account: &AccountId, raw: Vec<Value>, offset: i64) -> (Vec<Decoded>, i64) {
    let mut next = offset;
    let mut out = Vec::with_capacity(raw.len());
    for v in raw {
        let Some(id) = v.get("update_id").and_then(Value::as_i64) else {
            tracing::warn!(%account, "An update without an update_id; skipped.");
            continue;
        };
        next = next.max(id.saturating_add(1));
        match serde_json::from_value::<Update>(v) {
            Ok(u) => out.push(Decoded {
                update_id: id,
                update: Some(u),
            }),
            Err(e) => {
                tracing::warn!(%account, update = id, error = %e, "Malformed update; skipped.");
                out.push(Decoded {
                    update_id: id,
                    update: None,
                });
            }
        }
    }
    (out, next)
}

/// When the poll ended inside an album (its last update is an album part),
/// the index of the album's first update in this poll and its group id.
fn trailing_album(updates: &[Decoded]) -> Option<(usize, String)> {
    let album = |d: &Decoded| {
        d.update
            .as_ref()
            .and_then(|u| u.message.as_ref().or(u.channel_post.as_ref()))
            .and_then(|m| m.media_group_id.clone())
    };
    let group = album(updates.last()?)?;
    let first = updates
        .iter()
        .position(|d| album(d).as_deref() == Some(group.as_str()))?;
    Some((first, group))
}

fn merge_album_part(into: &mut Draft, part: Draft) {
    into.files.extend(part.files);
    if let (
        EventKind::Message { body, .. },
        EventKind::Message {
            body: part_body, ..
        },
    ) = (&mut into.event.kind, part.event.kind)
    {
        if body.text.is_empty() {
            *body = part_body;
        }
    }
}

/// What to send a file as: the multipart field / InputMedia type, and
/// which album it may share (`None`: sent alone).
fn media_kind(a: &Attachment) -> (&'static str, Option<&'static str>) {
    let photo_ok = matches!(a.mime.as_str(), "image/jpeg" | "image/png" | "image/webp")
        && a.size <= 10 * 1024 * 1024;
    match a.kind {
        AttachmentKind::Image if photo_ok => ("photo", Some("visual")),
        AttachmentKind::Video => ("video", Some("visual")),
        AttachmentKind::Audio => ("audio", Some("audio")),
        AttachmentKind::Voice if a.mime == "audio/ogg" => ("voice", None),
        AttachmentKind::Voice => ("audio", Some("audio")),
        _ => ("document", Some("document")),
    }
}

fn upload_timeout(chunk: &[(&Attachment, &str)]) -> Duration {
    let bytes: u64 = chunk.iter().map(|(a, _)| a.size).sum();
    CALL_TIMEOUT + Duration::from_secs(bytes / (64 * 1024))
}

/// "20 MB", "2 KiB", "300 bytes": sizes in notes people read.
fn human_size(n: u64) -> String {
    const MIB: u64 = 1024 * 1024;
    if n >= MIB {
        format!("{} MB", n.div_ceil(MIB))
    } else if n >= 1024 {
        format!("{} KiB", n.div_ceil(1024))
    } else {
        format!("{n} bytes")
    }
}

/// Telegram writes its reactions without U+FE0F ("❤", not "❤️").
fn telegram_emoji(e: &str) -> String {
    let bare = e.replace('\u{FE0F}', "");
    REACTIONS
        .iter()
        .find(|r| **r == bare)
        .map_or_else(|| e.to_owned(), |r| (*r).to_owned())
}

fn message_id_of(v: &Value) -> RemoteId {
    let id = v.get("message_id").and_then(Value::as_i64).unwrap_or(0);
    RemoteId::new(id.to_string()).expect("digits")
}

fn num(id: &RemoteId) -> i64 {
    id.as_str().parse().unwrap_or(0)
}

fn channel_of(chat: i64, thread: Option<i64>) -> ChannelId {
    let s = match thread {
        Some(t) => format!("{chat}/{t}"),
        None => chat.to_string(),
    };
    ChannelId::new(s).expect("digits")
}

/// `-100123` or `-100123/7` as chat and forum topic.
fn split_channel(channel: &ChannelId) -> Result<(i64, Option<i64>), SendError> {
    let bad = || SendError::permanent(format!("`{channel}` is not a Telegram chat id"));
    match channel.as_str().split_once('/') {
        Some((c, t)) => Ok((
            c.parse().map_err(|_| bad())?,
            Some(t.parse().map_err(|_| bad())?),
        )),
        None => Ok((channel.as_str().parse().map_err(|_| bad())?, None)),
    }
}

/// What the outbox should do after a failed call.
fn classify(e: CallError, channel: &ChannelId, thread: Option<i64>) -> SendError {
    let text = e.to_string();
    match e {
        CallError::Api {
            code: 429,
            retry_after,
            ..
        } => SendError::rate_limited(text, Some(Duration::from_secs(retry_after.unwrap_or(1)))),
        CallError::Api {
            migrate_to: Some(to),
            ..
        } => match ChannelId::new(match thread {
            Some(t) => format!("{to}/{t}"),
            None => to.to_string(),
        }) {
            Ok(to) => SendError::moved(text, to),
            Err(_) => SendError::permanent(text),
        },
        // The token is wrong or revoked, or this is not a Bot API server:
        // every call fails alike.
        CallError::Api {
            code: 401 | 404, ..
        }
        | CallError::Connect(_) => {
            SendError::account_down(format!("{text} (sending to {channel})"), None)
        }
        CallError::Api { code, .. } if (400..500).contains(&code) => SendError::permanent(text),
        CallError::Api { .. } | CallError::Timeout(_) | CallError::Decode(_) => {
            SendError::transient(text, None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ch(s: &str) -> ChannelId {
        ChannelId::new(s).unwrap()
    }

    fn api(code: u16, retry_after: Option<u64>, migrate_to: Option<i64>) -> CallError {
        CallError::Api {
            code,
            description: "Bad Request: x".into(),
            retry_after,
            migrate_to,
        }
    }

    #[test]
    fn failures_are_classified_from_telegrams_answer() {
        use switchboard_core::RetryKind;
        let k = |e| classify(e, &ch("-5"), None).retry_kind();
        assert_eq!(
            k(api(429, Some(7), None)),
            RetryKind::Transient {
                retry_after: Some(Duration::from_secs(7))
            }
        );
        assert_eq!(
            k(api(400, None, Some(-1009))),
            RetryKind::Moved { to: ch("-1009") }
        );
        assert_eq!(
            classify(api(400, None, Some(-1009)), &ch("-5/3"), Some(3)).retry_kind(),
            RetryKind::Moved { to: ch("-1009/3") }
        );
        assert_eq!(
            k(api(401, None, None)),
            RetryKind::AccountDown { retry_after: None }
        );
        assert_eq!(
            k(CallError::Connect("refused".into())),
            RetryKind::AccountDown { retry_after: None }
        );
        assert_eq!(k(api(403, None, None)), RetryKind::Permanent);
        assert_eq!(k(api(400, None, None)), RetryKind::Permanent);
        assert_eq!(
            k(api(502, None, None)),
            RetryKind::Transient { retry_after: None }
        );
        assert_eq!(
            k(CallError::Timeout("t".into())),
            RetryKind::Transient { retry_after: None }
        );
    }

    #[test]
    fn reactions_are_written_the_way_telegram_lists_them() {
        assert_eq!(telegram_emoji("❤\u{FE0F}"), "❤");
        assert_eq!(telegram_emoji("👍"), "👍");
    }

    #[test]
    fn albums_still_arriving_are_held() {
        let acct: AccountId = "telegram.t".parse().unwrap();
        let msg = |id: i64, g: Option<&str>| {
            json!({"update_id": id, "message": {"message_id": id, "date": 1, "chat": {"id": -1, "type": "group"},
                "media_group_id": g, "photo": [{"file_id": "f", "file_unique_id": "u"}]}})
        };
        let (u, next) = decode_updates(
            &acct,
            vec![msg(1, None), msg(2, Some("g")), msg(3, Some("g"))],
            0,
        );
        assert_eq!(next, 4);
        assert_eq!(trailing_album(&u), Some((1, "g".to_owned())));
        let (u, _) = decode_updates(&acct, vec![msg(2, Some("g")), msg(3, None)], 0);
        assert_eq!(trailing_album(&u), None);
        let (u, next) = decode_updates(
            &acct,
            vec![json!({"update_id": 9, "message": 5}), json!({"x": 1})],
            3,
        );
        assert_eq!(next, 10, "a malformed update is confirmed too");
        assert!(u[0].update.is_none());
    }
}
