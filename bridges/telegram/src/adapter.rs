//! [`TelegramAdapter`]: receives with `getUpdates` long polling (or a
//! webhook) and sends with the Bot API's send, edit, delete and reaction
//! methods.
//!
//! # Receiving (`receive`, `webhook`)
//! The offset moves past an update only in the same commit as the events
//! it gave (the `offset` cursor), so a crash re-reads it and the hub drops
//! what it already has. An album arrives as several updates sharing a
//! `media_group_id`; when a poll ends inside one, its updates are left
//! unconfirmed and polled again once no new part came for a moment (never
//! sooner than 0.5 s after the last poll began: telegram-bot-api answers a
//! repeated offset within 0.5 s with one update), so the album is committed
//! as ONE message. In webhook mode each POST carries one update: album
//! parts are kept (in the `webhook_albums` cursor, so a restart loses none)
//! until their album is complete, and `max_connections = 1` keeps a chat's
//! reactions behind its messages. A reaction names the chat, not the forum
//! topic: the hub says which of the chat's channels holds the message.
//!
//! # Commands
//! With `links = true` on the account, a message that is one of the hub's
//! commands (`/link`, `/link@thisbot`) is delivered as a command, with
//! whether its sender administers the chat (`commands`); the commands are
//! in the menu of group administrators.
//!
//! # Health
//! Besides connected or not: `degraded` while the bot cannot see reactions
//! somewhere (not an admin there; getChatMember at start, `my_chat_member`
//! after), or while the server answers long polls at once (then it is
//! polled once a second, not in a loop). Each is logged once.
//!
//! # Sending (`send`)
//! One Bot API call per attempt (two or more for several files or a split
//! text). Failures are classified from Telegram's own answer: 429 waits
//! exactly `retry_after`; `migrate_to_chat_id` moves the channel; the bot
//! removed, the chat gone or no right to write is the channel being down
//! (the lane waits, people are told); 401 or a refused connection marks
//! the account down; other 4xx are permanent with Telegram's description;
//! 5xx and timeouts are retried. Formatting Telegram refuses is sent again
//! once as plain text; a text or caption over Telegram's limits is split,
//! never refused; a success is a success whatever its `result` looks like.

mod commands;
mod receive;
mod send;
mod webhook;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use switchboard_core::{
    AccountId, Adapter, BlobRef, Capabilities, ChannelId, CommandForm, EventKind, Host, Outbound,
    Pacing, Reactions, Receipt, RemoteId, RunError, SendError, Shutdown, TextLimit, TextUnit,
};

use crate::client::Client;
use crate::config::{Receive, TelegramConfig};
use crate::convert::{self, Channels, Draft};
use crate::wire::{Update, User};

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

/// Updates asked for; `message_reaction` must be named to be delivered,
/// and `my_chat_member` says when the bot's rights in a chat change.
const ALLOWED_UPDATES: &[&str] = &[
    "message",
    "edited_message",
    "channel_post",
    "edited_channel_post",
    "message_reaction",
    "my_chat_member",
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
/// The sticker formats Telegram shows as stickers (sent with sendSticker).
const STICKER_FORMATS: &[&str] = &[
    convert::STICKER_WEBP,
    convert::STICKER_TGS,
    convert::STICKER_WEBM,
];

/// One Telegram bot account.
pub struct TelegramAdapter {
    cfg: TelegramConfig,
    client: Client,
    /// The bot itself, from `getMe`: its own updates are ignored.
    me: OnceLock<User>,
    /// Forum topics that are channels of their own (`<chat>/<thread>`).
    topics: HashSet<String>,
    /// Every chat a gateway lists (a topic's chat too), for the admin check.
    chats: BTreeSet<i64>,
    /// How commands are written here, when the account takes them.
    commands: Option<CommandForm>,
    /// Avatars fetched this run, by user id (`None`: the user has none).
    /// Each entry is fetched again after [`AVATAR_TTL`]: a changed photo
    /// shows, and storing it again keeps the blob from retention.
    avatars: Mutex<HashMap<String, (Option<BlobRef>, std::time::Instant)>>,
    /// Chats no gateway lists that were named in the log once already.
    unlisted: Mutex<HashSet<ChannelId>>,
    /// What works only in part, shown as `degraded` (see `receive`). A std
    /// mutex: a few field updates, never held across an await.
    degraded: Mutex<Degradations>,
    /// Webhook mode: album parts acknowledged to Telegram but not yet
    /// committed as their album (see `webhook`). An async mutex: it is held
    /// while an update is translated and committed, which serialises the
    /// webhook's requests as Telegram's one connection does anyway.
    held: tokio::sync::Mutex<webhook::HeldAlbums>,
    /// Itself, for the webhook's ingress handler.
    this: Weak<TelegramAdapter>,
}

/// Why the account shows `degraded`, and what was logged already.
#[derive(Default)]
struct Degradations {
    /// Chats where Telegram sends the bot no reactions, and why (its
    /// standing there, or Telegram's refusal).
    no_reactions: BTreeMap<i64, String>,
    /// Chats named in the log for it already: each is named once.
    told_reactions: BTreeSet<i64>,
    /// The server answers long polls at once: the reason shown.
    hasty_polls: Option<String>,
    /// That was logged already.
    told_hasty: bool,
}

impl TelegramAdapter {
    /// An adapter for `cfg`; `channels` are the account's channels in the
    /// gateways (a forum topic listed as `<chat>/<thread>` gets its own);
    /// `commands`: it takes the hub's commands (`/link`).
    #[must_use]
    pub fn new(
        cfg: TelegramConfig,
        channels: impl IntoIterator<Item = ChannelId>,
        commands: Option<CommandForm>,
    ) -> Arc<Self> {
        let client = Client::new(&cfg.api_url, &cfg.token);
        let channels: Vec<String> = channels
            .into_iter()
            .map(|c| c.as_str().to_owned())
            .collect();
        let chats = channels
            .iter()
            .filter_map(|c| c.split('/').next()?.parse().ok())
            .collect();
        let topics = channels.into_iter().filter(|c| c.contains('/')).collect();
        Arc::new_cyclic(|this| Self {
            this: this.clone(),
            cfg,
            client,
            me: OnceLock::new(),
            topics,
            chats,
            commands,
            avatars: Mutex::new(HashMap::new()),
            unlisted: Mutex::new(HashSet::new()),
            degraded: Mutex::new(Degradations::default()),
            held: tokio::sync::Mutex::new(webhook::HeldAlbums::default()),
        })
    }

    /// The Bot API client (for tools and tests).
    #[must_use]
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The forum topics of `chat` that are channels of their own.
    fn topics_of(&self, chat: i64) -> Vec<ChannelId> {
        let prefix = format!("{chat}/");
        let mut topics: Vec<ChannelId> = self
            .topics
            .iter()
            .filter(|t| t.starts_with(&prefix))
            .filter_map(|t| ChannelId::new(t.clone()).ok())
            .collect();
        topics.sort();
        topics
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

use switchboard_core::kit::nap;

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
                Arc::new(webhook::Webhook::new(self.this.clone(), secret.clone())),
            )),
        }
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            sticker_formats: Some(STICKER_FORMATS),
            edits: true,
            edit_window: None,
            deletes: true,
            // Telegram deletes a message for everyone only within 48 h.
            delete_window: Some(Duration::from_secs(48 * 3600)),
            reactions: Reactions::OneOf(REACTIONS),
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
        self.clone().receive(host.as_ref(), shutdown).await
    }

    /// Sending needs nothing of `run`: nothing is polled, no webhook is
    /// set.
    fn sends_without_receiving(&self) -> bool {
        true
    }

    async fn serve_sends(
        self: Arc<Self>,
        host: Arc<dyn Host>,
        shutdown: Shutdown,
    ) -> Result<(), RunError> {
        host.health(switchboard_core::ReceiveHealth::Connected);
        shutdown.await;
        Ok(())
    }

    async fn send(
        &self,
        host: &dyn Host,
        op: &Outbound,
        _idempotency_key: &str,
    ) -> Result<Receipt, SendError> {
        self.send_op(host, op).await
    }
}

/// An update as received: decoded, or `None` when malformed (logged, and
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

/// The album an update is a part of: its chat and `media_group_id`.
fn album_of(d: &Decoded) -> Option<(i64, String)> {
    let m = d
        .update
        .as_ref()
        .and_then(|u| u.message.as_ref().or(u.channel_post.as_ref()))?;
    Some((m.chat.id, m.media_group_id.clone()?))
}

/// When the poll ended inside an album (its last update is an album part),
/// the index of the album's first update in this poll and its group id.
fn trailing_album(updates: &[Decoded]) -> Option<(usize, String)> {
    let group = |d: &Decoded| album_of(d).map(|(_, g)| g);
    let last = group(updates.last()?)?;
    let first = updates
        .iter()
        .position(|d| group(d).as_deref() == Some(last.as_str()))?;
    Some((first, last))
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

fn remote(id: i64) -> RemoteId {
    RemoteId::new(id.to_string()).expect("digits")
}

fn num(id: &RemoteId) -> i64 {
    id.as_str().parse().unwrap_or(0)
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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

    #[test]
    fn a_topics_chat_and_its_topics_are_known() {
        let cfg = crate::config::TelegramConfig {
            account: "telegram.t".parse().unwrap(),
            token: "1:a".into(),
            api_url: "http://127.0.0.1:9".into(),
            poll_timeout: Duration::from_secs(1),
            pace_per_chat: Duration::ZERO,
            pace_per_bot: Duration::ZERO,
            max_download: 1,
            receive: Receive::Poll,
        };
        let ch = |s: &str| ChannelId::new(s).unwrap();
        let a = TelegramAdapter::new(cfg, [ch("-100"), ch("-200/3"), ch("-200/4"), ch("5")], None);
        assert_eq!(a.chats, BTreeSet::from([-200, -100, 5]));
        assert_eq!(a.topics_of(-200), [ch("-200/3"), ch("-200/4")]);
        assert!(a.topics_of(-100).is_empty());
        assert_eq!(
            a.capabilities().sticker_formats,
            Some(STICKER_FORMATS),
            "Telegram shows its three sticker formats"
        );
    }
}
